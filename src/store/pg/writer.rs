//! The group-commit writer on PostgreSQL.
//!
//! Requests queue as they do for SQLite's writer (see [`crate::store::writer`]); while one
//! group's transaction commits, the next group gathers. Every group is committed before any
//! request in it is answered: a 202 means committed, with PostgreSQL's own durability
//! settings (there is no ingest journal). If a group fails, each request in it is retried
//! alone, so one bad request cannot fail its neighbours. Callers whose data a group
//! committed are announced to every server by `NOTIFY`, sent when the group commits (see
//! [`super::listener`]); the callers waiting on this server are woken at once, as on SQLite.

use std::sync::Arc;
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Connection, Postgres};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::batch;
use crate::metrics::{DbOp, Metrics};
use crate::store::batch::DeliveryRow;
use crate::store::now_ms;
use crate::store::writer::{
    self, CallAttempt, Command, Done, Health, IngestWrite, MAX_BATCH, QUEUE, Target, WriteError,
    WriteFailure, Writer,
};
use crate::wakeups::Wakeups;

/// A group slower than this is logged: a commit waits for PostgreSQL to flush its log, a
/// few milliseconds on an ordinary disk.
const SLOW_GROUP: std::time::Duration = std::time::Duration::from_millis(20);

/// Starts the writer as a task on `pool`. The returned handle finishes when every `Writer`
/// is dropped and the queue is drained.
pub fn spawn(
    pool: PgPool,
    wakeups: Arc<dyn Wakeups>,
    metrics: Arc<Metrics>,
) -> (Writer, JoinHandle<()>) {
    let health = Arc::new(Health::new());
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(pool, rx, wakeups, health.clone(), metrics));
    (Writer::with_queue(tx, health), task)
}

async fn run(
    pool: PgPool,
    mut rx: mpsc::Receiver<Command>,
    wakeups: Arc<dyn Wakeups>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The writer's own connection, kept between groups (its prepared statements with it).
    let mut conn: Option<PoolConnection<Postgres>> = None;
    while let Some(first) = rx.recv().await {
        batch.push(first);
        writer::drain(&mut rx, &mut batch);
        let started = Instant::now();
        let results = group(&pool, &mut conn, &batch, &health, &metrics).await;
        let took = started.elapsed();
        metrics.groups.observe(batch.len() as u64);
        metrics.db(DbOp::WriteGroup, took);
        if took > SLOW_GROUP {
            tracing::warn!(
                size = batch.len(),
                took_ms = took.as_millis() as u64,
                "slow group"
            );
        }
        for (cmd, result) in batch.drain(..).zip(results) {
            writer::answer(cmd, result, wakeups.as_ref());
        }
    }
}

/// Runs and commits one group; each request's outcome.
async fn group(
    pool: &PgPool,
    slot: &mut Option<PoolConnection<Postgres>>,
    cmds: &[Command],
    health: &Health,
    metrics: &Metrics,
) -> Vec<Result<Done, WriteError>> {
    let fail_all = |e: &sqlx::Error| -> Vec<Result<Done, WriteError>> {
        cmds.iter()
            .map(|_| Err(WriteError(e.to_string())))
            .collect()
    };
    let conn = match slot {
        Some(conn) => conn,
        None => match pool.acquire().await {
            Ok(conn) => slot.insert(conn),
            Err(e) => {
                tracing::error!(error = %e, size = cmds.len(), "group not run");
                health.failed(Target::Database, failure_of(&e));
                return fail_all(&e);
            }
        },
    };
    match attempt(conn, cmds, metrics).await {
        Ok(results) => {
            health.succeeded(Target::Database);
            results
        }
        Err(e) => {
            tracing::error!(error = %e, size = cmds.len(), "group not committed");
            health.failed(Target::Database, failure_of(&e));
            // The connection may be broken: the next group takes another.
            *slot = None;
            fail_all(&e)
        }
    }
}

/// The group in one transaction: all of it in a savepoint, or, when a statement fails,
/// each request in a savepoint of its own. `Err` only when the transaction as a whole
/// failed.
async fn attempt(
    conn: &mut PgConnection,
    cmds: &[Command],
    metrics: &Metrics,
) -> Result<Vec<Result<Done, WriteError>>, sqlx::Error> {
    let now = now_ms();
    let mut tx = conn.begin().await?;
    let mut whole = Connection::begin(&mut *tx).await?;
    let results = match run_group(&mut whole, cmds, now).await {
        Ok(done) => {
            whole.commit().await?;
            done.into_iter().map(Ok).collect()
        }
        Err(e) if is_statement_error(&e) => {
            whole.rollback().await?;
            tracing::warn!(error = %e, size = cmds.len(), "group failed; retrying one by one");
            let mut results = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                let mut one = Connection::begin(&mut *tx).await?;
                match run_group(&mut one, std::slice::from_ref(cmd), now).await {
                    Ok(mut done) => {
                        one.commit().await?;
                        results.push(Ok(done.pop().ok_or(sqlx::Error::RowNotFound)?));
                    }
                    Err(e) if is_statement_error(&e) => {
                        tracing::error!(error = %e, "write failed");
                        one.rollback().await?;
                        results.push(Err(WriteError(e.to_string())));
                    }
                    Err(e) => return Err(e),
                }
            }
            results
        }
        Err(e) => return Err(e),
    };
    let asked = Instant::now();
    let committed = tx.commit().await;
    metrics.db(DbOp::Commit, asked.elapsed());
    committed?;
    Ok(results)
}

/// Whether an error is one statement's (the transaction goes on after a rollback to its
/// savepoint) rather than the connection's.
fn is_statement_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(_) | sqlx::Error::RowNotFound)
}

/// Why PostgreSQL refused a write, as readiness tells it.
fn failure_of(e: &sqlx::Error) -> WriteFailure {
    match e {
        sqlx::Error::Database(d) => match d.code().as_deref() {
            Some("53100") => WriteFailure::DiskFull,
            Some("25006") => WriteFailure::ReadOnly,
            Some(code) if code.starts_with("58") => WriteFailure::Io,
            Some("55P03" | "40P01") => WriteFailure::Locked,
            Some("XX001" | "XX002") => WriteFailure::Corrupt,
            _ => WriteFailure::Other,
        },
        sqlx::Error::Io(_) => WriteFailure::Io,
        _ => WriteFailure::Other,
    }
}

async fn run_group(
    conn: &mut PgConnection,
    cmds: &[Command],
    now: i64,
) -> Result<Vec<Done>, sqlx::Error> {
    let ingests: Vec<&IngestWrite> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Ingest(w, _) => Some(w),
            _ => None,
        })
        .collect();
    let refused: Vec<DeliveryRow> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Refusal(d, _) => Some(DeliveryRow::refused(d)),
            _ => None,
        })
        .collect();
    let ingested = if ingests.is_empty() && refused.is_empty() {
        Vec::new()
    } else {
        batch::ingest(conn, &ingests, refused, now).await?
    };
    let woken: Vec<_> = ingested.iter().filter_map(|d| d.wake.as_ref()).collect();
    batch::announce(conn, &woken).await?;
    let mut ingested = ingested.into_iter();
    let calls: Vec<&CallAttempt> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::StartCall(call, _) => Some(call),
            _ => None,
        })
        .collect();
    let mut started = batch::start_calls(conn, &calls).await?.into_iter();

    let mut done = Vec::with_capacity(cmds.len());
    for c in cmds {
        done.push(match c {
            Command::Ingest(..) => {
                let d = ingested.next().ok_or(sqlx::Error::RowNotFound)?;
                Done::Ingest(d.committed, d.wake)
            }
            Command::Refusal(..) => Done::Refusal,
            Command::StartCall(..) => {
                Done::StartCall(started.next().ok_or(sqlx::Error::RowNotFound)?)
            }
            Command::CountRefusals(counts, _) => {
                batch::count_refusals(conn, counts).await?;
                Done::Counted
            }
            Command::Sweep(at, _) => Done::Sweep(batch::sweep(conn, at).await?),
            Command::Settle(_) => Done::Settle,
            Command::Probe(_) => {
                // A transaction id is assigned, so the commit writes a record.
                sqlx::query("SELECT pg_current_xact_id()::text")
                    .execute(&mut *conn)
                    .await?;
                Done::Probe
            }
        });
    }
    Ok(done)
}
