//! The one task that writes the hot path: ingest, refusals, calls and sweeping.
//!
//! Requests queue here and are committed in groups: many in one transaction, each
//! answered only after its commit, so a 202 means the data is on disk (WAL, synchronous
//! NORMAL: it survives the process being killed). After the commit, waiting calls are
//! woken. If a group fails, each request in it is retried alone, so one bad request
//! cannot fail its neighbours.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};
use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{now_ms, rfc3339};
use crate::wakeups::{WakeKey, Wakeups};

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 256;
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

/// The 202 answer to an accepted webhook, kept verbatim for idempotent replays.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub status: String,
    pub phone_number: String,
    /// Every field now cached for this caller (this request's and earlier ones').
    pub fields: Vec<String>,
    pub expires_at: String,
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

/// A call whose pre-call actions are done.
#[derive(Debug)]
pub struct NewCall {
    pub public_id: String,
    pub agent_id: i64,
    pub caller: String,
    pub called: Option<String>,
    pub started_at: i64,
    pub waited_ms: i64,
    pub source: &'static str,
    pub variables: String,
    pub trace: String,
    /// Contexts this call read: each is claimed for it, if unchanged since it was read.
    pub claims: Vec<Claim>,
    /// Webhook actions this call fell back on: data for them that lands soon after is late.
    pub fell_back_on: Vec<i64>,
}

/// A context a call read, and the fields it read, so the claim can tell if they changed.
#[derive(Debug, Clone)]
pub struct Claim {
    pub context_id: i64,
    pub fields: String,
}

/// Whether a call was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Yes,
    /// A context it read was used by another call or changed since: nothing was written;
    /// look again and retry.
    Stale,
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
    RecordCall(NewCall, Reply<Recorded>),
    Sweep(i64, Reply<SweepReport>),
}

enum Done {
    Ingest(IngestCommitted, Option<WakeKey>),
    Refusal,
    RecordCall(Recorded),
    Sweep(SweepReport),
}

/// Why a group was not committed.
enum GroupError {
    /// One command's statement failed: the others may succeed on their own.
    Statement(sqlx::Error),
    /// The transaction itself could not begin or commit: retrying would fail the same way.
    Transaction(sqlx::Error),
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
}

impl Writer {
    pub fn spawn(conn: SqliteConnection, wakeups: Arc<dyn Wakeups>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(conn, rx, wakeups));
        (Self { tx }, task)
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

    pub async fn record_call(&self, c: NewCall) -> Result<Recorded, WriteError> {
        self.submit(|r| Command::RecordCall(c, r)).await
    }

    pub async fn sweep(&self, now: i64) -> Result<SweepReport, WriteError> {
        self.submit(|r| Command::Sweep(now, r)).await
    }
}

async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Command>,
    wakeups: Arc<dyn Wakeups>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let results: Vec<Result<Done, WriteError>> = match execute_group(&mut conn, &batch).await {
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
                let mut results = Vec::with_capacity(batch.len());
                for cmd in &batch {
                    results.push(
                        execute_group(&mut conn, std::slice::from_ref(cmd))
                            .await
                            .map(|mut d| d.pop().expect("one result per command"))
                            .map_err(|e| {
                                tracing::error!(error = %e, "write failed");
                                WriteError(e.to_string())
                            }),
                    );
                }
                results
            }
        };
        for (cmd, result) in batch.drain(..).zip(results) {
            answer(cmd, result, wakeups.as_ref());
        }
    }
    let _ = sqlx::query("PRAGMA optimize").execute(&mut conn).await;
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
        (Command::RecordCall(_, reply), Ok(Done::RecordCall(recorded))) => {
            let _ = reply.send(Ok(recorded));
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
                Command::RecordCall(_, r) => drop(r.send(Err(err))),
                Command::Sweep(_, r) => drop(r.send(Err(err))),
            }
        }
    }
}

/// Runs the commands in one transaction; all of them are committed or none.
async fn execute_group(
    conn: &mut SqliteConnection,
    cmds: &[Command],
) -> Result<Vec<Done>, GroupError> {
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(GroupError::Transaction)?;
    let mut done = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        let step = match cmd {
            Command::Ingest(w, _) => ingest(conn, w).await.map(|(c, k)| Done::Ingest(c, k)),
            Command::Refusal(d, _) => refusal(conn, d).await.map(|_| Done::Refusal),
            Command::RecordCall(c, _) => record_call(conn, c).await.map(Done::RecordCall),
            Command::Sweep(now, _) => sweep(conn, *now).await.map(Done::Sweep),
        };
        match step {
            Ok(d) => done.push(d),
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(GroupError::Statement(e));
            }
        }
    }
    if let Err(e) = sqlx::query("COMMIT").execute(&mut *conn).await {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        return Err(GroupError::Transaction(e));
    }
    Ok(done)
}

fn latency_us(started: Instant) -> i64 {
    started.elapsed().as_micros().min(i64::MAX as u128) as i64
}

async fn ingest(
    conn: &mut SqliteConnection,
    w: &IngestWrite,
) -> Result<(IngestCommitted, Option<WakeKey>), sqlx::Error> {
    let now = now_ms();
    if let Some(idem) = &w.idempotency {
        let seen: Option<(Vec<u8>, String)> = sqlx::query_as(
            "SELECT body_hash, response FROM idempotency_keys
              WHERE action_id = ? AND key = ? AND created_at > ?",
        )
        .bind(w.action_id)
        .bind(&idem.key)
        .bind(now - IDEMPOTENCY_WINDOW_MS)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((hash, response)) = seen {
            if hash == idem.body_hash {
                insert_delivery(conn, w, 202, "replayed", None, None).await?;
                return Ok((IngestCommitted::Replayed(response), None));
            }
            let problem = serde_json::json!([{
                "detail": format!("Idempotency-Key {:?} was already used with a different body", idem.key)
            }]);
            insert_delivery(conn, w, 422, "refused", None, Some(problem.to_string())).await?;
            return Ok((IngestCommitted::KeyReused, None));
        }
    }

    let expires_at = now + w.ttl_ms;
    let (context_id, merged): (i64, String) = sqlx::query_as(
        "INSERT INTO contexts (action_id, phone, fields, received_at, updated_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5)
         ON CONFLICT (action_id, phone) WHERE call_id IS NULL DO UPDATE SET
             fields = CASE WHEN contexts.expires_at <= excluded.updated_at
                           THEN excluded.fields ELSE json_patch(contexts.fields, excluded.fields) END,
             received_at = CASE WHEN contexts.expires_at <= excluded.updated_at
                           THEN excluded.received_at ELSE contexts.received_at END,
             updated_at = excluded.updated_at,
             expires_at = excluded.expires_at
         RETURNING id, fields",
    )
    .bind(w.action_id)
    .bind(&w.phone)
    .bind(&w.fields)
    .bind(now)
    .bind(expires_at)
    .fetch_one(&mut *conn)
    .await?;

    // Data for a caller whose call fell back on this action just before is recorded
    // against that call (and still cached, for the caller's next call).
    let late_call: Option<String> = sqlx::query_scalar(
        "UPDATE calls SET late_fields = json_patch(coalesce(late_fields, '{}'), ?1), late_at = ?2
          WHERE id = (SELECT call_id FROM call_fallbacks
                       WHERE action_id = ?3 AND phone = ?4 AND at >= ?5
                       ORDER BY at DESC LIMIT 1)
         RETURNING public_id",
    )
    .bind(&w.fields)
    .bind(now)
    .bind(w.action_id)
    .bind(&w.phone)
    .bind(now - LATE_WINDOW_MS)
    .fetch_optional(&mut *conn)
    .await?;

    let merged: Map<String, Value> = serde_json::from_str(&merged).unwrap_or_default();
    let receipt = Receipt {
        status: "accepted".into(),
        phone_number: w.phone.clone(),
        fields: merged
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k.clone())
            .collect(),
        expires_at: rfc3339(expires_at),
    };
    let response = serde_json::to_string(&receipt).expect("receipt serialises");

    let outcome = if late_call.is_some() {
        "late"
    } else {
        "cached"
    };
    sqlx::query(
        "INSERT INTO deliveries (action_id, received_at, status, outcome, phone, fields,
                                 idempotency_key, latency_us, context_id, call_id)
         VALUES (?, ?, 202, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(w.action_id)
    .bind(w.received_at)
    .bind(outcome)
    .bind(&w.phone)
    .bind(&w.fields)
    .bind(w.idempotency.as_ref().map(|i| &i.key))
    .bind(latency_us(w.started))
    .bind(context_id)
    .bind(&late_call)
    .execute(&mut *conn)
    .await?;

    if let Some(idem) = &w.idempotency {
        sqlx::query(
            "INSERT OR REPLACE INTO idempotency_keys (action_id, key, body_hash, response, created_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(w.action_id)
        .bind(&idem.key)
        .bind(&idem.body_hash[..])
        .bind(&response)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }

    let wake = WakeKey {
        action_id: w.action_id,
        phone: w.phone.clone(),
    };
    Ok((IngestCommitted::Accepted(response), Some(wake)))
}

/// Records a replayed or refused request that still passed authentication.
async fn insert_delivery(
    conn: &mut SqliteConnection,
    w: &IngestWrite,
    status: u16,
    outcome: &str,
    fields: Option<&str>,
    problems: Option<String>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO deliveries (action_id, received_at, status, outcome, phone, fields, problems,
                                 idempotency_key, latency_us)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(w.action_id)
    .bind(w.received_at)
    .bind(status)
    .bind(outcome)
    .bind(&w.phone)
    .bind(fields)
    .bind(problems)
    .bind(w.idempotency.as_ref().map(|i| &i.key))
    .bind(latency_us(w.started))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn refusal(conn: &mut SqliteConnection, d: &NewDelivery) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO deliveries (action_id, received_at, status, outcome, phone, problems,
                                 body_excerpt, idempotency_key, latency_us)
         VALUES (?, ?, ?, 'refused', ?, ?, ?, ?, ?)",
    )
    .bind(d.action_id)
    .bind(d.received_at)
    .bind(d.status)
    .bind(&d.phone)
    .bind(&d.problems)
    .bind(&d.body_excerpt)
    .bind(&d.idempotency_key)
    .bind(latency_us(d.started))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn record_call(conn: &mut SqliteConnection, c: &NewCall) -> Result<Recorded, sqlx::Error> {
    // Claim what the call read, atomically: if another call took it, or a webhook changed
    // it since, undo the claims made so far and let the call look again.
    for (n, claim) in c.claims.iter().enumerate() {
        let claimed: Option<String> = sqlx::query_scalar(
            "UPDATE contexts SET call_id = ? WHERE id = ? AND call_id IS NULL RETURNING fields",
        )
        .bind(&c.public_id)
        .bind(claim.context_id)
        .fetch_optional(&mut *conn)
        .await?;
        if claimed.as_deref() != Some(claim.fields.as_str()) {
            let taken = if claimed.is_some() { n + 1 } else { n };
            for undo in &c.claims[..taken] {
                sqlx::query("UPDATE contexts SET call_id = NULL WHERE id = ? AND call_id = ?")
                    .bind(undo.context_id)
                    .bind(&c.public_id)
                    .execute(&mut *conn)
                    .await?;
            }
            return Ok(Recorded::Stale);
        }
    }

    let call_id: i64 = sqlx::query_scalar(
        "INSERT INTO calls (public_id, agent_id, caller, called, started_at, waited_ms, source,
                            variables, trace)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&c.public_id)
    .bind(c.agent_id)
    .bind(&c.caller)
    .bind(&c.called)
    .bind(c.started_at)
    .bind(c.waited_ms)
    .bind(c.source)
    .bind(&c.variables)
    .bind(&c.trace)
    .fetch_one(&mut *conn)
    .await?;
    for claim in &c.claims {
        sqlx::query(
            "UPDATE deliveries SET outcome = 'used', call_id = ?
              WHERE context_id = ? AND outcome IN ('cached', 'late')",
        )
        .bind(&c.public_id)
        .bind(claim.context_id)
        .execute(&mut *conn)
        .await?;
    }

    let now = now_ms();
    for action_id in &c.fell_back_on {
        sqlx::query(
            "INSERT INTO call_fallbacks (call_id, action_id, phone, at) VALUES (?, ?, ?, ?)",
        )
        .bind(call_id)
        .bind(action_id)
        .bind(&c.caller)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        // Data that landed between the call's last look and now arrived after it fell back.
        let late: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, fields FROM contexts
              WHERE action_id = ? AND phone = ? AND call_id IS NULL AND expires_at > ?
                AND updated_at >= ?",
        )
        .bind(action_id)
        .bind(&c.caller)
        .bind(now)
        .bind(c.started_at)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((context_id, fields)) = late {
            sqlx::query(
                "UPDATE calls SET late_fields = json_patch(coalesce(late_fields, '{}'), ?), late_at = ?
                  WHERE id = ?",
            )
            .bind(&fields)
            .bind(now)
            .bind(call_id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE deliveries SET outcome = 'late', call_id = ?
                  WHERE context_id = ? AND outcome = 'cached'",
            )
            .bind(&c.public_id)
            .bind(context_id)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(Recorded::Yes)
}

async fn sweep(conn: &mut SqliteConnection, now: i64) -> Result<SweepReport, sqlx::Error> {
    // A trigger marks the deliveries of unused contexts as expired.
    let expired = sqlx::query(
        "DELETE FROM contexts WHERE id IN (SELECT id FROM contexts WHERE expires_at <= ? LIMIT ?)",
    )
    .bind(now)
    .bind(SWEEP_LIMIT)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let forgotten = sqlx::query(
        "DELETE FROM idempotency_keys WHERE (action_id, key) IN
            (SELECT action_id, key FROM idempotency_keys WHERE created_at <= ? LIMIT ?)",
    )
    .bind(now - IDEMPOTENCY_WINDOW_MS)
    .bind(SWEEP_LIMIT)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(SweepReport {
        expired_contexts: expired,
        forgotten_idempotency_keys: forgotten,
    })
}
