//! The one task that writes the hot path: ingest, refusals, calls and sweeping.
//!
//! Requests queue here and are committed in groups: many in one transaction, each
//! answered only after its commit, so a 202 means the data is on disk (WAL, synchronous
//! NORMAL: it survives the process being killed). After the commit, waiting calls are
//! woken. If a group fails, each request in it is retried alone, so one bad request
//! cannot fail its neighbours.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batch::{self, DeliveryRow};
use crate::wakeups::{WakeKey, Wakeups};

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 256;
/// A group smaller than this waits [`GATHER_WAIT`] once for more requests, unless a call is
/// in it: a commit costs the same whatever its size, so under load larger groups leave more
/// of the machine to the request handlers. A caller is on the line while their call
/// starts (or is woken by its webhook), so a group with a call commits at once, taking
/// along whatever webhooks are queued; a webhook's sender only waits for its 202.
const GATHER: usize = 32;
/// Long enough that at moderate load a group gathers what arrives over a millisecond: each
/// commit rewrites the tail pages of every table and index it touches whatever its size, so
/// fewer, larger commits write less log for the kernel to write back and checkpoint. Under
/// heavy load groups reach [`GATHER`] without waiting. Against 300 µs, at 13 000 webhooks/s
/// in alternating runs, the open-loop p99 fell from 7.7-26.2 ms to 4.6-9.9 ms at the cost of
/// ~0.6 ms at the median (docs/performance.md has this and the earlier 100 and 500 µs runs).
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_millis(1);
/// A group commit slower than this is logged.
const SLOW_GROUP: std::time::Duration = std::time::Duration::from_millis(3);
/// Requests that may queue before senders wait for room.
const QUEUE: usize = 8192;
/// How long an Idempotency-Key is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// Most rows one sweep removes, so that sweeping never holds the lock for long.
const SWEEP_LIMIT: i64 = 5_000;

/// The store could not take the write; nothing of it was kept.
#[derive(Debug, thiserror::Error)]
#[error("the database did not take the write: {0}")]
pub struct WriteError(String);

type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

/// An accepted webhook request, ready to cache.
#[derive(Debug)]
pub struct IngestWrite {
    pub action_id: i64,
    pub agent_id: i64,
    pub phone: String,
    /// The validated fields as a JSON object.
    pub fields: String,
    /// The names of `fields` that are not null, sorted, as a JSON array
    /// ([`super::batch::field_names`]).
    pub field_names: String,
    pub ttl_ms: i64,
    pub idempotency: Option<Idempotency>,
    pub received_at: i64,
    pub started: Instant,
}

/// An `Idempotency-Key` (or `webhook-id`) and the hash of the body it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub body_hash: [u8; 32],
}

/// What became of an accepted webhook request.
#[derive(Debug)]
pub enum IngestCommitted {
    /// Cached; the answer as JSON.
    Accepted(String),
    /// The idempotency key was seen before with this body: the first answer, unchanged.
    Replayed(String),
    /// The idempotency key was seen before with a different body: nothing changed.
    KeyReused,
}

/// A refused request, recorded with its reasons.
#[derive(Debug)]
pub struct NewDelivery {
    pub action_id: i64,
    pub received_at: i64,
    pub status: u16,
    /// JSON list of problems.
    pub problems: String,
    pub body_excerpt: Option<String>,
    pub phone: Option<String>,
    pub idempotency_key: Option<String>,
    pub started: Instant,
}

/// One attempt to start a call: claim every Webhook action's data for the caller and, if
/// nothing is missing, record the call, all in one transaction.
pub struct CallAttempt {
    pub public_id: String,
    pub agent_id: i64,
    pub caller: String,
    pub called: Option<String>,
    pub started_at: i64,
    /// The agent's Webhook actions, in order.
    pub steps: Vec<StepAttempt>,
    /// Builds the call's record from what was claimed (one entry per step).
    pub finish: Finish,
}

impl std::fmt::Debug for CallAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallAttempt")
            .field("public_id", &self.public_id)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

/// A Webhook action as an attempt sees it.
#[derive(Debug, Clone, Copy)]
pub struct StepAttempt {
    pub action_id: i64,
    pub state: StepState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Its data is wanted: the attempt fails if it is not there.
    Wanted,
    /// Its wait ran out: the call goes on without it (and data landing soon is late).
    GaveUp,
    /// The action is disabled.
    Disabled,
}

/// Data a call claimed: the context's id and its fields as stored.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub context_id: i64,
    pub fields: String,
}

/// Builds a call's record from what each step claimed.
pub type Finish = Box<dyn Fn(&[Option<Claimed>]) -> CallRecord + Send + Sync>;

/// What is stored for a started call, and its answer.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub source: &'static str,
    pub waited_ms: i64,
    pub variables: String,
    pub trace: String,
    /// `active` while a Collect waits for an answer, else `ended`.
    pub status: &'static str,
    pub outcome: Option<String>,
    /// The API's answer, as JSON.
    pub response: String,
}

/// What became of an attempt.
#[derive(Debug)]
pub enum Attempted {
    /// Recorded; the API's answer.
    Started(String),
    /// The step at this position has no data yet; nothing was claimed or written.
    Missing(usize),
}

/// How long after a call fell back its caller's data still counts as late for it.
pub const LATE_WINDOW_MS: i64 = 60_000;

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct SweepReport {
    pub expired_contexts: u64,
    pub forgotten_idempotency_keys: u64,
}

enum Command {
    Ingest(IngestWrite, Reply<IngestCommitted>),
    Refusal(NewDelivery, Reply<()>),
    StartCall(CallAttempt, Reply<Attempted>),
    Sweep(i64, Reply<SweepReport>),
}

impl Command {
    fn is_call(&self) -> bool {
        matches!(self, Self::StartCall(..))
    }
}

enum Done {
    Ingest(IngestCommitted, Option<WakeKey>),
    Refusal,
    StartCall(Attempted),
    Sweep(SweepReport),
}

/// Why a group was not committed.
enum GroupError {
    /// One command's statement failed: the others may succeed on their own.
    Statement(rusqlite::Error),
    /// The transaction itself could not begin or commit: retrying would fail the same way.
    Transaction(rusqlite::Error),
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Statement(e) | Self::Transaction(e) => e.fmt(f),
        }
    }
}

/// A handle on the writer task. Cloning is cheap.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Command>,
    catch_up: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer on a thread of its own, which owns the connection: a group never
    /// waits behind request handlers for a turn on the server's threads, nor hands each
    /// statement to another thread. The returned handle finishes when every `Writer` is
    /// dropped and the queue is drained.
    pub fn spawn(conn: Connection, wakeups: Arc<dyn Wakeups>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (finished, done) = oneshot::channel::<()>();
        let catch_up = Arc::new(AtomicBool::new(false));
        let asked = catch_up.clone();
        let spawned = std::thread::Builder::new()
            .name("precall-writer".into())
            .spawn(move || {
                run(conn, rx, wakeups, &asked);
                let _ = finished.send(());
            });
        if let Err(e) = spawned {
            // Without its thread the writer answers every request with an error.
            tracing::error!(error = %e, "the writer's thread did not start");
        }
        let task = tokio::spawn(async move {
            let _ = done.await;
        });
        (Self { tx, catch_up }, task)
    }

    /// Asks the writer to checkpoint what is left of the WAL itself, after its current
    /// group, so that the WAL starts over from its beginning.
    ///
    /// The background checkpoint runs beside the writer and cannot copy what is committed
    /// while it runs, so under steady load the WAL is never all copied, never starts over,
    /// and grows without end (by 600 MiB in ten seconds of load). The writer's own
    /// checkpoint copies only that remainder, with no commit beside it; the next group then
    /// writes from the WAL's start, over blocks the file already has.
    pub fn catch_up_wal(&self) {
        self.catch_up.store(true, Ordering::Relaxed);
    }

    async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| WriteError("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| WriteError("the writer has stopped".into()))?
    }

    pub async fn ingest(&self, w: IngestWrite) -> Result<IngestCommitted, WriteError> {
        self.submit(|r| Command::Ingest(w, r)).await
    }

    pub async fn refusal(&self, d: NewDelivery) -> Result<(), WriteError> {
        self.submit(|r| Command::Refusal(d, r)).await
    }

    pub async fn start_call(&self, c: CallAttempt) -> Result<Attempted, WriteError> {
        self.submit(|r| Command::StartCall(c, r)).await
    }

    pub async fn sweep(&self, now: i64) -> Result<SweepReport, WriteError> {
        self.submit(|r| Command::Sweep(now, r)).await
    }
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    wakeups: Arc<dyn Wakeups>,
    catch_up: &AtomicBool,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        drain(&mut rx, &mut batch);
        if batch.len() < GATHER && !batch.iter().any(Command::is_call) {
            std::thread::sleep(GATHER_WAIT);
            drain(&mut rx, &mut batch);
        }
        let group_started = Instant::now();
        let results: Vec<Result<Done, WriteError>> = match execute_group(&conn, &batch) {
            Ok(done) => done.into_iter().map(Ok).collect(),
            Err(GroupError::Transaction(e)) => {
                tracing::error!(error = %e, size = batch.len(), "group not committed");
                batch
                    .iter()
                    .map(|_| Err(WriteError(e.to_string())))
                    .collect()
            }
            Err(GroupError::Statement(e)) => {
                tracing::warn!(error = %e, size = batch.len(), "group commit failed; retrying one by one");
                batch
                    .iter()
                    .map(|cmd| {
                        execute_group(&conn, std::slice::from_ref(cmd))
                            .map(|mut d| d.pop().expect("one result per command"))
                            .map_err(|e| {
                                tracing::error!(error = %e, "write failed");
                                WriteError(e.to_string())
                            })
                    })
                    .collect()
            }
        };
        let took = group_started.elapsed();
        if took > SLOW_GROUP {
            tracing::warn!(
                size = batch.len(),
                took_ms = took.as_millis() as u64,
                "slow group commit"
            );
        }
        for (cmd, result) in batch.drain(..).zip(results) {
            answer(cmd, result, wakeups.as_ref());
        }
        if catch_up.swap(false, Ordering::Relaxed) {
            checkpoint(&conn);
        }
    }
}

/// A PASSIVE checkpoint from the writer's connection, between groups.
fn checkpoint(conn: &Connection) {
    let started = Instant::now();
    // The WAL's frames, and how many of them are now in the database file.
    let copied = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    });
    match copied {
        Ok((wal_frames, copied_frames)) => tracing::debug!(
            wal_frames,
            copied_frames,
            took_ms = started.elapsed().as_millis() as u64,
            "writer caught up the WAL"
        ),
        Err(e) => tracing::warn!(error = %e, "the writer's checkpoint failed"),
    }
}

/// Takes what is queued, up to a group's size.
fn drain(rx: &mut mpsc::Receiver<Command>, batch: &mut Vec<Command>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(cmd) => batch.push(cmd),
            Err(_) => break,
        }
    }
}

fn answer(cmd: Command, result: Result<Done, WriteError>, wakeups: &dyn Wakeups) {
    match (cmd, result) {
        (Command::Ingest(_, reply), Ok(Done::Ingest(committed, wake))) => {
            if let Some(key) = wake {
                wakeups.notify(&key);
            }
            let _ = reply.send(Ok(committed));
        }
        (Command::Refusal(_, reply), Ok(Done::Refusal)) => {
            let _ = reply.send(Ok(()));
        }
        (Command::StartCall(_, reply), Ok(Done::StartCall(attempted))) => {
            let _ = reply.send(Ok(attempted));
        }
        (Command::Sweep(_, reply), Ok(Done::Sweep(report))) => {
            let _ = reply.send(Ok(report));
        }
        (cmd, result) => {
            let err = match result {
                Err(e) => e,
                Ok(_) => WriteError("internal: mismatched result".into()),
            };
            match cmd {
                Command::Ingest(_, r) => drop(r.send(Err(err))),
                Command::Refusal(_, r) => drop(r.send(Err(err))),
                Command::StartCall(_, r) => drop(r.send(Err(err))),
                Command::Sweep(_, r) => drop(r.send(Err(err))),
            }
        }
    }
}

/// Runs the commands in one transaction; all of them are committed or none.
fn execute_group(conn: &Connection, cmds: &[Command]) -> Result<Vec<Done>, GroupError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(GroupError::Transaction)?;
    let done = match run_group(conn, cmds) {
        Ok(done) => done,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(classify(e));
        }
    };
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(GroupError::Transaction(e));
    }
    Ok(done)
}

/// Errors of the database as a whole (locked, full, read-only, failing) would fail every
/// request again: they are not retried one by one.
fn classify(e: rusqlite::Error) -> GroupError {
    let whole = match &e {
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT,
        // SQLITE_FULL, SQLITE_CANTOPEN
        rusqlite::Error::SqliteFailure(f, _) => {
            matches!(f.extended_code & 0xff, 5 | 6 | 8 | 10 | 11 | 13 | 14)
        }
        _ => false,
    };
    if whole {
        GroupError::Transaction(e)
    } else {
        GroupError::Statement(e)
    }
}

/// The group's statements: webhooks first, then every delivery at once, then calls.
fn run_group(conn: &Connection, cmds: &[Command]) -> rusqlite::Result<Vec<Done>> {
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
    let mut ingested = batch::ingest(conn, &ingests, refused)?.into_iter();
    let calls: Vec<&CallAttempt> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::StartCall(call, _) => Some(call),
            _ => None,
        })
        .collect();
    let mut started = batch::start_calls(conn, &calls)?.into_iter();

    let mut done = Vec::with_capacity(cmds.len());
    for c in cmds {
        done.push(match c {
            Command::Ingest(..) => {
                let d = ingested.next().expect("one outcome per webhook");
                Done::Ingest(d.committed, d.wake)
            }
            Command::Refusal(..) => Done::Refusal,
            Command::StartCall(..) => Done::StartCall(started.next().expect("one per call")),
            Command::Sweep(now, _) => Done::Sweep(sweep(conn, *now)?),
        });
    }
    Ok(done)
}

fn sweep(conn: &Connection, now: i64) -> rusqlite::Result<SweepReport> {
    // A trigger marks the deliveries of unused contexts as expired.
    let expired = conn
        .prepare_cached(
            "DELETE FROM contexts WHERE id IN (SELECT id FROM contexts WHERE expires_at <= ? LIMIT ?)",
        )?
        .execute((now, SWEEP_LIMIT))?;
    let forgotten = conn
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE (action_id, key) IN
                (SELECT action_id, key FROM idempotency_keys WHERE created_at <= ? LIMIT ?)",
        )?
        .execute((now - IDEMPOTENCY_WINDOW_MS, SWEEP_LIMIT))?;
    Ok(SweepReport {
        expired_contexts: expired as u64,
        forgotten_idempotency_keys: forgotten as u64,
    })
}
