//! The one task that writes the hot path: ingest, refusals, calls and sweeping.
//!
//! Requests queue here and run in groups, in one transaction. A group with a call, a
//! refusal, refusal counts or a sweep in it is committed before it is answered, so its answer means the
//! data is on disk (WAL, synchronous NORMAL: it survives the process being killed). A group
//! of webhooks alone is answered once it is appended to the [ingest journal](super::journal),
//! which is as durable; its transaction stays open for the next groups and commits within
//! [`Pacing::commit_every`], or as soon as no request has come for [`Pacing::commit_idle`],
//! a configuration write waits for the database, or anything must read it (see
//! [`Writer::settle`]). Waiting calls are woken once their data is durable. If a group
//! fails, each request in it is retried alone, so one bad request cannot fail its
//! neighbours.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batch::{self, DeliveryRow};
use super::journal::{self, Journal, Record};
use super::refusals::RefusalCount;
use super::{config_writer_waiting, now_ms};
use crate::wakeups::{WakeKey, Wakeups};

/// Most requests run as one group.
const MAX_BATCH: usize = 256;
/// Without a journal, a group smaller than this waits [`GATHER_WAIT`] once for more
/// requests, unless a call is in it: a commit costs the same whatever its size, so under
/// load larger groups leave more of the machine to the request handlers. A caller is on the
/// line while their call starts (or is woken by its webhook), so a group with a call commits
/// at once, taking along whatever webhooks are queued; a webhook's sender only waits for
/// its 202. With a journal, groups do not wait: commits are already few.
const GATHER: usize = 32;
/// Long enough that at moderate load a group gathers what arrives over a millisecond: each
/// commit rewrites the tail pages of every table and index it touches whatever its size, so
/// fewer, larger commits write less log for the kernel to write back and checkpoint. Under
/// heavy load groups reach [`GATHER`] without waiting. Against 300 µs, at 13 000 webhooks/s
/// in alternating runs, the open-loop p99 fell from 7.7-26.2 ms to 4.6-9.9 ms at the cost of
/// ~0.6 ms at the median (bench-results/2026-11-27-to-2026-12-05-experiments.json has this
/// and the earlier 100 and 500 µs runs).
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_millis(1);
/// A group commit slower than this is logged.
const SLOW_GROUP: std::time::Duration = std::time::Duration::from_millis(3);
/// Requests that may queue before senders wait for room.
const QUEUE: usize = 8192;
/// How long an Idempotency-Key is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// Most rows one sweep removes, so that sweeping never holds the lock for long.
const SWEEP_LIMIT: i64 = 5_000;
/// Most deliveries, and most refusal counts, one sweep removes: each takes its row and two
/// index entries, so that a sweep stays a few milliseconds long; a backlog (a lowered
/// retention, a server that was stopped for weeks) goes in many sweeps, between which
/// webhooks and calls take their turns. With 2 000, sweeping a backlog of 1.6 million
/// deliveries took 3-7 ms a turn (up to 24 ms) on a 2-core machine.
const DELIVERY_SWEEP_LIMIT: i64 = 1_000;
/// Most calls one sweep removes: a call's row holds its variables and trace, a few times
/// a delivery's size, and takes its fallbacks along.
const CALL_SWEEP_LIMIT: i64 = 250;
/// Longest the writer stays out of the database, after committing early, while a
/// configuration write waits for it.
const YIELD_MAX: Duration = Duration::from_millis(20);

/// When the writer commits webhooks that it has acknowledged from its journal.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Longest an open transaction holds acknowledged webhooks. Zero: no journal, and every
    /// group is committed before it is answered.
    pub commit_every: Duration,
    /// An open transaction commits once no request has come for this long.
    pub commit_idle: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            commit_every: Duration::from_millis(50),
            commit_idle: Duration::from_millis(2),
        }
    }
}

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
    /// The version of the agent's configuration it runs.
    pub version: i64,
    pub caller: String,
    pub called: Option<String>,
    pub started_at: i64,
    /// The agent's Webhook actions, in order.
    pub steps: Vec<StepAttempt>,
    /// Builds the call's record from what was claimed (one entry per step).
    pub finish: Finish,
    /// What each `Simulated` step received, given rather than claimed.
    pub preset: Vec<Option<Claimed>>,
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
    /// Its wait ran out: the call no longer waits for it, but takes its data if it landed
    /// while the call waited for another step (data landing after the call starts is late).
    GaveUp,
    /// The action is disabled.
    Disabled,
    /// A simulated call: what the step received is given with the attempt, nothing cached
    /// is claimed.
    Simulated,
}

/// Data a call claimed: the context's id and its fields as stored.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub context_id: i64,
    pub fields: String,
    /// When the caller's data first arrived (Unix ms): before the call started, it was
    /// cached; after, the call waited for it.
    pub received_at: i64,
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

/// What a sweep removes: expired webhook data and old idempotency keys as of `now`, and
/// what is past its retention.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    pub now: i64,
    /// Deliveries received, and refusal counts of minutes that started, before this
    /// (Unix ms) are removed.
    pub deliveries_before: i64,
    /// Calls started before this (Unix ms) are removed, with the steps they fell back on.
    pub calls_before: i64,
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct SweepReport {
    pub expired_contexts: u64,
    pub forgotten_idempotency_keys: u64,
    pub old_deliveries: u64,
    pub old_refusal_counts: u64,
    pub old_calls: u64,
    /// Some table had more to remove than one sweep takes: sweep again soon.
    pub more: bool,
}

impl SweepReport {
    pub fn removed(&self) -> u64 {
        self.expired_contexts
            + self.forgotten_idempotency_keys
            + self.old_deliveries
            + self.old_refusal_counts
            + self.old_calls
    }
}

enum Command {
    Ingest(IngestWrite, Reply<IngestCommitted>),
    Refusal(NewDelivery, Reply<()>),
    StartCall(CallAttempt, Reply<Attempted>),
    /// Adds to the stored counts of refusals without a valid key.
    CountRefusals(Vec<RefusalCount>, Reply<()>),
    Sweep(Sweep, Reply<SweepReport>),
    /// Commit what is acknowledged, so that readers see it.
    Settle(Reply<()>),
}

impl Command {
    fn is_call(&self) -> bool {
        matches!(self, Self::StartCall(..))
    }

    fn ingest(&self) -> Option<&IngestWrite> {
        match self {
            Self::Ingest(w, _) => Some(w),
            _ => None,
        }
    }
}

enum Done {
    Ingest(IngestCommitted, Option<WakeKey>),
    Refusal,
    StartCall(Attempted),
    Counted,
    Sweep(SweepReport),
    Settle,
}

/// Why a group was not committed.
enum GroupError {
    /// One command's statement failed: the others may succeed on their own.
    Statement(rusqlite::Error),
    /// The transaction itself could not begin or commit: retrying would fail the same way.
    Transaction(rusqlite::Error),
}

/// A handle on the writer task. Cloning is cheap.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Command>,
    catch_up: Arc<AtomicBool>,
    /// Set while the writer holds acknowledged webhooks that are not committed yet.
    holding: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer on a thread of its own, which owns the connection: a group never
    /// waits behind request handlers for a turn on the server's threads, nor hands each
    /// statement to another thread. With a `journal`, first applies what it holds that the
    /// database does not (webhooks acknowledged before a crash). The returned handle
    /// finishes when every `Writer` is dropped and the queue is drained.
    pub fn spawn(
        conn: Connection,
        mut journal: Option<Journal>,
        pacing: Pacing,
        wakeups: Arc<dyn Wakeups>,
    ) -> anyhow::Result<(Self, JoinHandle<()>)> {
        if let Some(j) = journal.as_mut() {
            let applied = replay(&conn, j)?;
            if applied > 0 {
                tracing::info!(webhooks = applied, "applied the ingest journal");
            }
        }
        if pacing.commit_every.is_zero() {
            journal = None;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let (finished, done) = oneshot::channel::<()>();
        let catch_up = Arc::new(AtomicBool::new(false));
        let asked = catch_up.clone();
        let holding = Arc::new(AtomicBool::new(false));
        let held = holding.clone();
        let spawned = std::thread::Builder::new()
            .name("precall-writer".into())
            .spawn(move || {
                run(conn, rx, wakeups, &asked, journal, pacing, held);
                let _ = finished.send(());
            });
        if let Err(e) = spawned {
            // Without its thread the writer answers every request with an error.
            tracing::error!(error = %e, "the writer's thread did not start");
        }
        let task = tokio::spawn(async move {
            let _ = done.await;
        });
        Ok((
            Self {
                tx,
                catch_up,
                holding,
            },
            task,
        ))
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

    /// Adds `counts` to the stored counts of refusals without a valid key. Counts of a
    /// webhook deleted meanwhile are dropped.
    pub async fn count_refusals(&self, counts: Vec<RefusalCount>) -> Result<(), WriteError> {
        self.submit(|r| Command::CountRefusals(counts, r)).await
    }

    /// Removes one bounded portion of what is expired or past its retention; the report
    /// says whether more is left.
    pub async fn sweep(&self, at: Sweep) -> Result<SweepReport, WriteError> {
        self.submit(|r| Command::Sweep(at, r)).await
    }

    /// Commits every webhook acknowledged so far, so that what is read next includes them.
    /// Reads of what ingest writes (deliveries, late data on calls) call this first; it
    /// returns at once when nothing is held.
    pub async fn settle(&self) -> Result<(), WriteError> {
        if !self.holding.load(Ordering::Acquire) {
            return Ok(());
        }
        self.submit(Command::Settle).await
    }
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    wakeups: Arc<dyn Wakeups>,
    catch_up: &AtomicBool,
    journal: Option<Journal>,
    pacing: Pacing,
    holding: Arc<AtomicBool>,
) {
    // Only to wait for the queue with a deadline.
    let clock = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the writer could not start its clock");
            return;
        }
    };
    let mut w = Groups {
        conn: &conn,
        journal,
        pacing,
        open: None,
        behind: false,
        holding,
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut last_group = Instant::now();
    loop {
        let first = match w.open {
            // Acknowledged webhooks wait in the journal: try again every 100 ms.
            None if w.behind => {
                match clock.block_on(async {
                    tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
                }) {
                    Ok(cmd) => cmd,
                    Err(_) => {
                        if let Err(e) = w.reapply() {
                            tracing::error!(error = %e, "acknowledged webhooks wait in the ingest journal");
                        }
                        continue;
                    }
                }
            }
            None => clock.block_on(rx.recv()),
            Some(since) => {
                let due = (last_group + pacing.commit_idle).min(since + pacing.commit_every);
                // Wake at least every millisecond to see whether a configuration write waits.
                let wait = due
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(1));
                match clock.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                    Ok(cmd) => cmd,
                    Err(_) => {
                        if config_writer_waiting() {
                            w.let_config_writer_in();
                        } else if Instant::now() >= due {
                            w.commit_logged();
                        }
                        continue;
                    }
                }
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        drain(&mut rx, &mut batch);
        if w.journal.is_none() && batch.len() < GATHER && !batch.iter().any(Command::is_call) {
            std::thread::sleep(GATHER_WAIT);
            drain(&mut rx, &mut batch);
        }
        let group_started = Instant::now();
        let results = w.run(&batch);
        let took = group_started.elapsed();
        if took > SLOW_GROUP {
            tracing::warn!(
                size = batch.len(),
                took_ms = took.as_millis() as u64,
                "slow group"
            );
        }
        for (cmd, result) in batch.drain(..).zip(results) {
            answer(cmd, result, wakeups.as_ref());
        }
        last_group = Instant::now();
        if config_writer_waiting() {
            w.let_config_writer_in();
        }
        if catch_up.swap(false, Ordering::Relaxed) {
            w.commit_logged();
            checkpoint(&conn);
        }
    }
    w.commit_logged();
}

/// The writer's transaction and journal.
struct Groups<'c> {
    conn: &'c Connection,
    journal: Option<Journal>,
    pacing: Pacing,
    /// When the open transaction began; `None` when none is open.
    open: Option<Instant>,
    /// A transaction was lost with acknowledged webhooks in it: the journal holds them, and
    /// nothing else is written before they are applied again.
    behind: bool,
    /// Shared with [`Writer::settle`]: the open transaction holds acknowledged webhooks.
    holding: Arc<AtomicBool>,
}

impl Groups<'_> {
    /// Runs one group in the open transaction (beginning one if needed), then either
    /// journals it, leaving the transaction open, or commits.
    fn run(&mut self, cmds: &[Command]) -> Vec<Result<Done, WriteError>> {
        let fail_all = |e: &dyn std::fmt::Display| -> Vec<Result<Done, WriteError>> {
            cmds.iter()
                .map(|_| Err(WriteError(e.to_string())))
                .collect()
        };
        if self.behind
            && let Err(e) = self.reapply()
        {
            return fail_all(&e);
        }
        if self.open.is_none() {
            if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
                tracing::error!(error = %e, size = cmds.len(), "group not run");
                return fail_all(&e);
            }
            self.open = Some(Instant::now());
        }
        let now = now_ms();
        let (results, journaled) = match self.statements(cmds, now) {
            Ok(ran) => ran,
            Err(e) => {
                tracing::error!(error = %e, size = cmds.len(), "transaction lost");
                self.abandon();
                return fail_all(&e);
            }
        };
        let defer = self.journal.as_ref().is_some_and(|j| !j.is_broken())
            && cmds.iter().all(|c| c.ingest().is_some())
            && self
                .open
                .is_some_and(|since| since.elapsed() < self.pacing.commit_every);
        if defer && let Some(journal) = self.journal.as_mut() {
            let groups: Vec<Vec<Record<'_>>> = journaled
                .iter()
                .map(|g| {
                    g.iter()
                        .filter_map(|&i| cmds[i].ingest())
                        .map(|w| Record::of(w, micros_since(w.started)))
                        .collect()
                })
                .collect();
            let mark = journal.mark();
            if let Err(e) = journal.append(now, &groups) {
                // Not acknowledged: undo the group, and commit what is.
                tracing::error!(error = %e, "the ingest journal did not take a group");
                match rollback_to(self.conn, "grp").and_then(|()| release(self.conn, "grp")) {
                    Ok(()) => self.commit_logged(),
                    Err(_) => self.abandon(),
                }
                return fail_all(&e);
            }
            if let Err(e) = release(self.conn, "grp") {
                tracing::error!(error = %e, "group not kept");
                if let Some(j) = self.journal.as_mut() {
                    j.retract(mark);
                }
                self.abandon();
                return fail_all(&e);
            }
            if !groups.is_empty() {
                self.holding.store(true, Ordering::Release);
            }
            return results;
        }
        if let Err(e) = release(self.conn, "grp") {
            tracing::error!(error = %e, size = cmds.len(), "group not kept");
            self.abandon();
            return fail_all(&e);
        }
        if let Err(e) = self.commit() {
            tracing::error!(error = %e, size = cmds.len(), "group not committed");
            return fail_all(&e);
        }
        results
    }

    /// The group's statements inside savepoint `grp`, which is left open. If the group
    /// fails, each command is retried alone. `Err` only when the transaction as a whole
    /// failed. With the results, the commands whose webhooks were kept, as they ran: the
    /// whole group's at once, or one by one.
    #[allow(clippy::type_complexity)]
    fn statements(
        &self,
        cmds: &[Command],
        now: i64,
    ) -> rusqlite::Result<(Vec<Result<Done, WriteError>>, Vec<Vec<usize>>)> {
        let conn = self.conn;
        savepoint(conn, "grp")?;
        let e = match run_group(conn, cmds, now) {
            Ok(done) => {
                let ingests: Vec<usize> = (0..cmds.len())
                    .filter(|&i| cmds[i].ingest().is_some())
                    .collect();
                let journaled = if ingests.is_empty() {
                    vec![]
                } else {
                    vec![ingests]
                };
                return Ok((done.into_iter().map(Ok).collect(), journaled));
            }
            Err(e) => match classify(e) {
                GroupError::Transaction(e) => return Err(e),
                GroupError::Statement(e) => e,
            },
        };
        tracing::warn!(error = %e, size = cmds.len(), "group failed; retrying one by one");
        rollback_to(conn, "grp")?;
        let mut results = Vec::with_capacity(cmds.len());
        let mut journaled = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            savepoint(conn, "one")?;
            match run_group(conn, std::slice::from_ref(cmd), now) {
                Ok(mut done) => {
                    release(conn, "one")?;
                    if cmd.ingest().is_some() {
                        journaled.push(vec![i]);
                    }
                    results.push(Ok(done.pop().expect("one result per command")));
                }
                Err(e) => match classify(e) {
                    GroupError::Transaction(e) => return Err(e),
                    GroupError::Statement(e) => {
                        tracing::error!(error = %e, "write failed");
                        rollback_to(conn, "one")?;
                        release(conn, "one")?;
                        results.push(Err(WriteError(e.to_string())));
                    }
                },
            }
        }
        Ok((results, journaled))
    }

    /// Commits the open transaction, recording the last journal entry it holds, and empties
    /// the journal.
    fn commit(&mut self) -> rusqlite::Result<()> {
        if self.open.is_none() {
            return Ok(());
        }
        // A journal that failed an append may hold frames of unacknowledged webhooks: they
        // are numbered up to `last_seq` too, so replay skips them once this commits.
        let journaled = self
            .journal
            .as_ref()
            .filter(|j| !j.is_empty() || j.is_broken())
            .map(Journal::last_seq);
        let committed = journaled
            .map_or(Ok(0), |seq| {
                self.conn
                    .prepare_cached("UPDATE ingest_journal SET applied_seq = ?")?
                    .execute([seq])
            })
            .and_then(|_| self.conn.execute_batch("COMMIT"));
        if let Err(e) = committed {
            self.abandon();
            return Err(e);
        }
        self.open = None;
        self.holding.store(false, Ordering::Release);
        if let (Some(_), Some(j)) = (journaled, self.journal.as_mut())
            && let Err(e) = j.clear()
        {
            // Harmless: what it holds is applied, and replay skips it.
            tracing::warn!(error = %e, "the ingest journal could not be emptied");
        }
        Ok(())
    }

    /// A configuration write waits for the database: commits, and stays out of its way
    /// until it is in (or for [`YIELD_MAX`] at most).
    fn let_config_writer_in(&mut self) {
        self.commit_logged();
        let since = Instant::now();
        while config_writer_waiting() && since.elapsed() < YIELD_MAX {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn commit_logged(&mut self) {
        let started = Instant::now();
        if let Err(e) = self.commit() {
            tracing::error!(error = %e, "commit failed");
        }
        let took = started.elapsed();
        if took > SLOW_GROUP {
            tracing::warn!(took_ms = took.as_millis() as u64, "slow commit");
        }
    }

    /// Rolls the open transaction back. Acknowledged webhooks it held are still in the
    /// journal: they are applied again now, or before anything else is written.
    fn abandon(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
        self.open = None;
        if self.journal.as_ref().is_some_and(|j| !j.is_empty()) {
            // `holding` stays set: readers wait for the journal to be applied again.
            self.behind = true;
            if let Err(e) = self.reapply() {
                tracing::error!(error = %e, "acknowledged webhooks wait in the ingest journal");
            }
        } else {
            self.holding.store(false, Ordering::Release);
        }
    }

    fn reapply(&mut self) -> anyhow::Result<()> {
        if let Some(j) = self.journal.as_mut() {
            replay(self.conn, j)?;
        }
        self.behind = false;
        self.holding.store(false, Ordering::Release);
        Ok(())
    }
}

fn micros_since(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX)
}

fn savepoint(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!("SAVEPOINT {name}"))?
        .execute([])
        .map(drop)
}

fn release(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!("RELEASE {name}"))?
        .execute([])
        .map(drop)
}

fn rollback_to(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!("ROLLBACK TO {name}"))?
        .execute([])
        .map(drop)
}

/// Applies, in one transaction, the journal's entries that the database does not hold
/// yet, and empties the journal. An entry that can no longer be applied (its webhook was
/// deleted since) is skipped, as its data would have been deleted with it. Returns how
/// many webhooks were applied.
pub fn replay(conn: &Connection, journal: &mut Journal) -> anyhow::Result<usize> {
    let bytes = journal.contents()?;
    let entries = journal::frames(&bytes);
    let applied: i64 =
        conn.query_row("SELECT applied_seq FROM ingest_journal", [], |r| r.get(0))?;
    let last = entries.iter().map(|e| e.seq).fold(applied, i64::max);
    journal.continue_after(last);
    let pending: Vec<&journal::Entry<'_>> = entries.iter().filter(|e| e.seq > applied).collect();
    if pending.is_empty() {
        if !journal.is_empty() {
            journal.clear()?;
        }
        return Ok(0);
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let replayed = replay_entries(conn, &pending).and_then(|n| {
        conn.execute("UPDATE ingest_journal SET applied_seq = ?", [last])?;
        conn.execute_batch("COMMIT")?;
        Ok(n)
    });
    match replayed {
        Ok(n) => {
            if let Err(e) = journal.clear() {
                tracing::warn!(error = %e, "the ingest journal could not be emptied");
            }
            Ok(n)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e.into())
        }
    }
}

fn replay_entries(conn: &Connection, entries: &[&journal::Entry<'_>]) -> rusqlite::Result<usize> {
    let mut applied = 0;
    for entry in entries {
        let writes: Vec<IngestWrite> = entry.writes.iter().map(Record::to_write).collect();
        let all: Vec<&IngestWrite> = writes.iter().collect();
        savepoint(conn, "entry")?;
        match batch::ingest(conn, &all, Vec::new(), entry.now) {
            Ok(done) => {
                release(conn, "entry")?;
                applied += done.len();
                continue;
            }
            Err(e) if violates_a_constraint(&e) => rollback_to(conn, "entry")?,
            Err(e) => return Err(e),
        }
        for w in &all {
            savepoint(conn, "one")?;
            match batch::ingest(conn, std::slice::from_ref(w), Vec::new(), entry.now) {
                Ok(_) => {
                    release(conn, "one")?;
                    applied += 1;
                }
                Err(e) if violates_a_constraint(&e) => {
                    tracing::warn!(error = %e, seq = entry.seq, "a journaled webhook could not be applied");
                    rollback_to(conn, "one")?;
                    release(conn, "one")?;
                }
                Err(e) => return Err(e),
            }
        }
        release(conn, "entry")?;
    }
    Ok(applied)
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
        (Command::CountRefusals(_, reply), Ok(Done::Counted)) => {
            let _ = reply.send(Ok(()));
        }
        (Command::Sweep(_, reply), Ok(Done::Sweep(report))) => {
            let _ = reply.send(Ok(report));
        }
        (Command::Settle(reply), Ok(Done::Settle)) => {
            let _ = reply.send(Ok(()));
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
                Command::CountRefusals(_, r) => drop(r.send(Err(err))),
                Command::Sweep(_, r) => drop(r.send(Err(err))),
                Command::Settle(r) => drop(r.send(Err(err))),
            }
        }
    }
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

/// SQLITE_CONSTRAINT: the statement can never succeed (a journaled webhook's action was
/// deleted since); any other error may pass on a later try.
fn violates_a_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code & 0xff == 19)
}

/// The group's statements: webhooks first, then every delivery at once, then calls.
fn run_group(conn: &Connection, cmds: &[Command], now: i64) -> rusqlite::Result<Vec<Done>> {
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
    let mut ingested = batch::ingest(conn, &ingests, refused, now)?.into_iter();
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
            Command::CountRefusals(counts, _) => {
                batch::count_refusals(conn, counts)?;
                Done::Counted
            }
            Command::Sweep(at, _) => Done::Sweep(sweep(conn, at)?),
            Command::Settle(_) => Done::Settle,
        });
    }
    Ok(done)
}

fn sweep(conn: &Connection, at: &Sweep) -> rusqlite::Result<SweepReport> {
    let now = at.now;
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
    // Deliveries and calls are numbered in the order they are written, which is the order
    // of their times but for moments, so the oldest are the first rows: each sweep looks at
    // the first rows only (no index on time to keep up on every insert, and no scan of a
    // table with nothing old in it) and removes those past the retention.
    let deliveries = conn
        .prepare_cached(
            "DELETE FROM deliveries WHERE id IN
                (SELECT id FROM (SELECT id, received_at FROM deliveries ORDER BY id LIMIT ?)
                  WHERE received_at < ?)",
        )?
        .execute((DELIVERY_SWEEP_LIMIT, at.deliveries_before))?;
    let counts = conn
        .prepare_cached(
            "DELETE FROM refusal_counts WHERE (action_id, minute, reason) IN
                (SELECT action_id, minute, reason FROM refusal_counts WHERE minute < ? LIMIT ?)",
        )?
        .execute((at.deliveries_before, DELIVERY_SWEEP_LIMIT))?;
    // Their fallbacks go with them (ON DELETE CASCADE).
    let calls = conn
        .prepare_cached(
            "DELETE FROM calls WHERE id IN
                (SELECT id FROM (SELECT id, started_at FROM calls ORDER BY id LIMIT ?)
                  WHERE started_at < ?)",
        )?
        .execute((CALL_SWEEP_LIMIT, at.calls_before))?;
    let full = |n: usize, limit: i64| n as i64 >= limit;
    // A window may keep a few rows written a moment out of order: half full is full enough
    // to look again.
    let half_full = |n: usize, limit: i64| n as i64 * 2 >= limit;
    Ok(SweepReport {
        expired_contexts: expired as u64,
        forgotten_idempotency_keys: forgotten as u64,
        old_deliveries: deliveries as u64,
        old_refusal_counts: counts as u64,
        old_calls: calls as u64,
        more: full(expired, SWEEP_LIMIT)
            || full(forgotten, SWEEP_LIMIT)
            || half_full(deliveries, DELIVERY_SWEEP_LIMIT)
            || full(counts, DELIVERY_SWEEP_LIMIT)
            || half_full(calls, CALL_SWEEP_LIMIT),
    })
}
