//! The one task that writes the hot path: ingest, refusals, calls and sweeping.
//!
//! Requests queue here and run in groups, in one transaction. A group of webhooks and calls
//! is answered once it is appended to the [ingest journal](super::journal) (a call as it
//! was stored: its record, the data it claimed, the steps it fell back on), which is as
//! durable as a commit (WAL, synchronous NORMAL: it survives the process being killed); its
//! transaction stays open for the next groups and commits within [`Pacing::commit_every`],
//! once the journal holds [`COMMIT_BYTES`], as soon as no request has come for
//! [`Pacing::commit_idle`], a configuration write waits for the database, or anything must
//! read it (see [`Writer::settle`]). A group with a refusal, refusal counts, a sweep or a
//! probe in it is committed before it is answered. Waiting calls are woken once their data
//! is durable. If a group fails, each request in it is retried alone, so one bad request
//! cannot fail its neighbours.
//!
//! The writer also keeps what its last writes came to, for readiness ([`Writer::readiness`]):
//! while the database or the journal refuses writes (a full disk), the server says it is
//! not ready, and when acknowledged writes wait in the journal because the database does
//! not take them (at start, or after a lost transaction), every other write is refused until
//! they are applied, which the writer tries before each group and every [`REPLAY_RETRY`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batch::{self, DeliveryRow, StartedCall};
use super::journal::{self, Group, Journal, Record};
use super::refusals::RefusalCount;
use super::{config_writer_waiting, now_ms};
use crate::metrics::{DbOp, Metrics};
use crate::wakeups::{WakeKey, Wakeups};

/// Most requests run as one group.
pub(in crate::store) const MAX_BATCH: usize = 256;
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
/// An open transaction commits once the journal holds this much: a commit writes each page
/// its rows changed, so one that carried 50 ms of calls at 14 000 a second (a call's entry
/// is 1-1.5 KiB) held the writer's queue for 3-4 ms, every 50 ms; commits of a few hundred
/// calls stay under the 3 ms that the writer logs as slow. A webhook's entry is a few
/// hundred bytes: at that rate, theirs still commit about every [`Pacing::commit_every`].
pub(in crate::store) const COMMIT_BYTES: u64 = 256 * 1024;
/// Why writes are refused while acknowledged ones wait in the journal.
const WAITING: &str = "acknowledged webhooks and calls wait in the ingest journal";
/// A group commit slower than this is logged.
const SLOW_GROUP: std::time::Duration = std::time::Duration::from_millis(3);
/// Requests that may queue before senders wait for room.
pub(in crate::store) const QUEUE: usize = 8192;
/// How long an Idempotency-Key is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// Most rows one sweep removes, so that sweeping never holds the lock for long.
pub(in crate::store) const SWEEP_LIMIT: i64 = 5_000;
/// Most deliveries, and most refusal counts, one sweep removes: each takes its row and two
/// index entries, so that a sweep stays a few milliseconds long; a backlog (a lowered
/// retention, a server that was stopped for weeks) goes in many sweeps, between which
/// webhooks and calls take their turns. With 2 000, sweeping a backlog of 1.6 million
/// deliveries took 3-7 ms a turn (up to 24 ms) on a 2-core machine.
pub(in crate::store) const DELIVERY_SWEEP_LIMIT: i64 = 1_000;
/// Most calls one sweep removes: a call's row holds its variables and trace, a few times
/// a delivery's size, and takes its fallbacks along.
pub(in crate::store) const CALL_SWEEP_LIMIT: i64 = 250;
/// Longest the writer stays out of the database, after committing early, while a
/// configuration write waits for it.
const YIELD_MAX: Duration = Duration::from_millis(20);
/// While acknowledged writes wait in the journal because the database does not take them
/// (a full disk), the writer tries to apply them before each group (which is refused if
/// they are not, as nothing may be written before them) and, when no group comes, this
/// often. The same as the `Retry-After` of a 503.
const REPLAY_RETRY: Duration = Duration::from_secs(1);
/// Readiness has the writer write a page (a probe) when it has written nothing for this
/// long: an idle server on a disk that filled up is not ready either.
const IDLE_PROBE_AFTER: Duration = Duration::from_secs(5);
/// While writes fail, readiness probes once the last failure is this old: a server that a
/// load balancer took out of service gets no writes to find out that there is room again.
const FAILING_PROBE_AFTER: Duration = Duration::from_secs(1);
/// At most one probe this often, however often readiness is asked.
const PROBE_GAP: Duration = Duration::from_secs(1);
/// How long readiness waits for a probe before answering with what it knew.
const PROBE_PATIENCE: Duration = Duration::from_secs(1);
/// A failure to apply the journal that goes on is logged again this often.
const REPLAY_LOG_EVERY: Duration = Duration::from_secs(60);

/// When the writer commits webhooks that it has acknowledged from its journal.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Longest an open transaction holds acknowledged webhooks and calls. Zero: no journal, and every
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
pub struct WriteError(pub(in crate::store) String);

pub(in crate::store) type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

/// Why the storage refused a write, in words safe to show to anyone (no path, no data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WriteFailure {
    DiskFull = 1,
    QuotaExceeded,
    /// A file reached the process's file-size limit (RLIMIT_FSIZE).
    FileTooLarge,
    ReadOnly,
    Io,
    Locked,
    Corrupt,
    Other,
}

impl WriteFailure {
    const ALL: [Self; 8] = [
        Self::DiskFull,
        Self::QuotaExceeded,
        Self::FileTooLarge,
        Self::ReadOnly,
        Self::Io,
        Self::Locked,
        Self::Corrupt,
        Self::Other,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Self::DiskFull => "disk full",
            Self::QuotaExceeded => "disk quota exceeded",
            Self::FileTooLarge => "file size limit reached",
            Self::ReadOnly => "storage is read-only",
            Self::Io => "I/O error",
            Self::Locked => "database locked",
            Self::Corrupt => "database corrupt",
            Self::Other => "storage error",
        }
    }

    fn of_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|f| *f as u8 == code)
    }

    fn of_errno(errno: i32) -> Option<Self> {
        match errno {
            libc::ENOSPC => Some(Self::DiskFull),
            libc::EDQUOT => Some(Self::QuotaExceeded),
            libc::EFBIG => Some(Self::FileTooLarge),
            libc::EROFS => Some(Self::ReadOnly),
            libc::EIO => Some(Self::Io),
            _ => None,
        }
    }

    fn of_io(e: &std::io::Error) -> Self {
        e.raw_os_error()
            .and_then(Self::of_errno)
            .unwrap_or(Self::Other)
    }

    /// What an error of the writer's connection `conn`, just returned, comes from.
    fn of_sqlite(conn: &Connection, e: &rusqlite::Error) -> Self {
        let rusqlite::Error::SqliteFailure(f, _) = e else {
            return Self::Other;
        };
        match f.extended_code & 0xff {
            13 => Self::DiskFull,
            // SQLITE_IOERR, SQLITE_CANTOPEN: the system's error says more (SQLite reports a
            // full disk as SQLITE_FULL, but a file-size limit or a quota as an I/O error).
            10 | 14 => {
                // SAFETY: `conn` is open and used by this thread alone; the call only reads
                // the system error SQLite recorded with its last I/O error.
                let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
                Self::of_errno(errno).unwrap_or(Self::Io)
            }
            8 => Self::ReadOnly,
            5 | 6 => Self::Locked,
            11 | 26 => Self::Corrupt,
            _ => Self::Other,
        }
    }
}

/// Where a write went.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) enum Target {
    Database,
    Journal,
}

/// What the writer's last writes came to, shared with readiness.
#[derive(Debug)]
pub(in crate::store) struct Health {
    epoch: Instant,
    /// The last outcome of a write to the database, and to the journal: 0 when it
    /// succeeded, else a [`WriteFailure`].
    database: AtomicU8,
    journal: AtomicU8,
    /// When a write last succeeded or failed, in ms since `epoch`, plus one (0: never).
    last_outcome: AtomicU64,
    /// Acknowledged webhooks wait in the journal for the database to take them.
    behind: AtomicBool,
    /// When readiness last had the writer probe, in ms since `epoch`, plus one (0: never).
    probed: AtomicU64,
}

impl Health {
    pub(in crate::store) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            database: AtomicU8::new(0),
            journal: AtomicU8::new(0),
            last_outcome: AtomicU64::new(0),
            behind: AtomicBool::new(false),
            probed: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn slot(&self, target: Target) -> &AtomicU8 {
        match target {
            Target::Database => &self.database,
            Target::Journal => &self.journal,
        }
    }

    pub(in crate::store) fn succeeded(&self, target: Target) {
        self.slot(target).store(0, Ordering::Release);
        self.last_outcome.store(self.now(), Ordering::Release);
    }

    pub(in crate::store) fn failed(&self, target: Target, why: WriteFailure) {
        self.slot(target).store(why as u8, Ordering::Release);
        self.last_outcome.store(self.now(), Ordering::Release);
    }

    fn failure(&self) -> Option<WriteFailure> {
        [&self.database, &self.journal]
            .into_iter()
            .find_map(|slot| WriteFailure::of_code(slot.load(Ordering::Acquire)))
    }

    fn is_behind(&self) -> bool {
        self.behind.load(Ordering::Acquire)
    }

    /// Whether to probe now; if so, no other caller probes for [`PROBE_GAP`].
    fn probe_due(&self) -> bool {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let now = self.now();
        let last = self.last_outcome.load(Ordering::Acquire);
        let quiet_for = if self.failure().is_some() || self.is_behind() {
            FAILING_PROBE_AFTER
        } else {
            IDLE_PROBE_AFTER
        };
        if last != 0 && now.saturating_sub(last) < ms(quiet_for) {
            return false;
        }
        let probed = self.probed.load(Ordering::Acquire);
        if probed != 0 && now.saturating_sub(probed) < ms(PROBE_GAP) {
            return false;
        }
        self.probed
            .compare_exchange(probed, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// `Err` with the reason while writes fail or acknowledged writes wait.
    fn readiness(&self) -> Result<(), String> {
        match (self.failure(), self.is_behind()) {
            (None, false) => Ok(()),
            (None, true) => Err(WAITING.into()),
            (Some(f), false) => Err(format!("writes are failing: {}", f.describe())),
            (Some(f), true) => Err(format!("writes are failing: {}; {WAITING}", f.describe())),
        }
    }
}

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

/// What a started call came to and how long it waited for its data, for the call
/// counters of `GET /metrics`.
#[derive(Debug, Clone, Copy)]
pub struct CallTally {
    pub outcome: crate::metrics::CallOutcome,
    pub waited: Duration,
}

/// What is stored for a started call, and its answer.
#[derive(Debug)]
pub struct CallRecord {
    pub source: &'static str,
    pub waited_ms: i64,
    pub variables: Box<serde_json::value::RawValue>,
    pub trace: Box<serde_json::value::RawValue>,
    /// `active` while a Collect waits for an answer, else `ended`.
    pub status: &'static str,
    pub outcome: Option<String>,
    /// The API's answer, as JSON.
    pub response: String,
    /// Whatever the caller built beside the answer and wants handed back with it (a voice
    /// platform's connection takes the call's outcome as values, not as JSON to read again).
    pub attachment: Option<Attachment>,
    pub tally: CallTally,
}

/// Handed back untouched with a started call's answer.
pub struct Attachment(pub Box<dyn std::any::Any + Send>);

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attachment")
    }
}

/// What became of an attempt.
#[derive(Debug)]
pub enum Attempted {
    /// Recorded; the API's answer, what the call came to, and the record's attachment.
    Started(String, CallTally, Option<Attachment>),
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

pub(in crate::store) enum Command {
    Ingest(IngestWrite, Reply<IngestCommitted>),
    Refusal(NewDelivery, Reply<()>),
    StartCall(CallAttempt, Reply<Attempted>),
    /// Adds to the stored counts of refusals without a valid key.
    CountRefusals(Vec<RefusalCount>, Reply<()>),
    Sweep(Sweep, Reply<SweepReport>),
    /// Commit what is acknowledged, so that readers see it.
    Settle(Reply<()>),
    /// Write a page (and a block of the journal), to find out whether writes succeed.
    Probe(Reply<()>),
}

impl Command {
    fn is_call(&self) -> bool {
        matches!(self, Self::StartCall(..))
    }

    fn is_probe(&self) -> bool {
        matches!(self, Self::Probe(..))
    }

    fn ingest(&self) -> Option<&IngestWrite> {
        match self {
            Self::Ingest(w, _) => Some(w),
            _ => None,
        }
    }
}

pub(in crate::store) enum Done {
    Ingest(IngestCommitted, Option<WakeKey>),
    Refusal,
    StartCall(Attempted),
    Counted,
    Sweep(SweepReport),
    Settle,
    Probe,
}

/// Each command's result, in the group's order.
type Results = Vec<Result<Done, WriteError>>;

/// What one run of statements kept that the journal must hold until it is committed: the
/// webhooks (by position in the group) and the calls it started.
struct Kept {
    ingests: Vec<usize>,
    calls: Vec<StartedCall>,
}

impl Kept {
    fn is_empty(&self) -> bool {
        self.ingests.is_empty() && self.calls.is_empty()
    }
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
    /// Set while the writer holds acknowledged webhooks or calls that are not committed yet.
    holding: Arc<AtomicBool>,
    health: Arc<Health>,
}

impl Writer {
    /// Starts the writer on a thread of its own, which owns the connection: a group never
    /// waits behind request handlers for a turn on the server's threads, nor hands each
    /// statement to another thread. With a `journal`, first applies what it holds that the
    /// database does not (webhooks acknowledged before a crash); if the database does not
    /// take them now (a full disk), the writer starts anyway, keeps them in the journal and
    /// refuses every other write until it has applied them (trying before each write, and
    /// every [`REPLAY_RETRY`] without one). The returned handle finishes when every
    /// `Writer` is dropped and the queue is drained.
    pub fn spawn(
        conn: Connection,
        mut journal: Option<Journal>,
        pacing: Pacing,
        wakeups: Arc<dyn Wakeups>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Self, JoinHandle<()>)> {
        let health = Arc::new(Health::new());
        let mut behind = false;
        if let Some(j) = journal.as_mut() {
            match replay(&conn, j) {
                Ok(replayed) => {
                    if replayed.committed {
                        health.succeeded(Target::Database);
                    }
                    if replayed.webhooks + replayed.calls > 0 {
                        tracing::info!(
                            webhooks = replayed.webhooks,
                            calls = replayed.calls,
                            "applied the ingest journal"
                        );
                    }
                }
                Err(f) => {
                    tracing::error!(
                        error = %f.error,
                        "the ingest journal could not be applied: its acknowledged webhooks \
                         and calls stay in it, and writes are refused until the database takes them"
                    );
                    health.failed(Target::Database, f.why);
                    behind = true;
                }
            }
        }
        if pacing.commit_every.is_zero() && !behind {
            journal = None;
        }
        health.behind.store(behind, Ordering::Release);
        let (tx, rx) = mpsc::channel(QUEUE);
        let (finished, done) = oneshot::channel::<()>();
        let catch_up = Arc::new(AtomicBool::new(false));
        let asked = catch_up.clone();
        let holding = Arc::new(AtomicBool::new(false));
        let signals = Signals {
            holding: holding.clone(),
            health: health.clone(),
            metrics,
        };
        let spawned = std::thread::Builder::new()
            .name("precall-writer".into())
            .spawn(move || {
                run(conn, rx, wakeups, &asked, journal, pacing, signals);
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
                health,
            },
            task,
        ))
    }

    /// A handle on a writer whose loop runs elsewhere: PostgreSQL's (see
    /// [`super::pg::writer`]), which holds nothing uncommitted and has no WAL to catch up.
    pub(in crate::store) fn with_queue(tx: mpsc::Sender<Command>, health: Arc<Health>) -> Self {
        Self {
            tx,
            catch_up: Arc::default(),
            holding: Arc::default(),
            health,
        }
    }

    /// Whether writes succeed: `Err` with a reason fit to show while the last write to the
    /// database or the journal failed and none has succeeded since, or while acknowledged
    /// webhooks wait in the journal. When the writer has written nothing for a while (or
    /// nothing since a failure), it is first asked to write a page, at most once per
    /// [`PROBE_GAP`] and waiting at most [`PROBE_PATIENCE`] for it.
    pub async fn readiness(&self) -> Result<(), String> {
        if self.health.probe_due() {
            let (reply, rx) = oneshot::channel();
            // A full queue is a busy writer, whose own writes tell soon enough.
            if self.tx.try_send(Command::Probe(reply)).is_ok() {
                let _ = tokio::time::timeout(PROBE_PATIENCE, rx).await;
            }
        }
        self.health.readiness()
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

    /// Requests waiting in the writer's queue now.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Commits every webhook and call acknowledged so far, so that what is read next
    /// includes them. Reads of what the writer writes (calls, deliveries, late data on calls)
    /// call this first; it returns at once when nothing is held. While the database does not
    /// take what this server acknowledged (a full disk), it waits in the journal and this
    /// fails: a call answered moments ago must not read as unknown. (At start, what an
    /// earlier run left in the journal is not held: reads go on with what is committed.)
    pub async fn settle(&self) -> Result<(), WriteError> {
        if !self.holding.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.health.is_behind() {
            return Err(WriteError(WAITING.into()));
        }
        self.submit(Command::Settle).await
    }
}

/// What the writer's thread shares with its handles.
struct Signals {
    holding: Arc<AtomicBool>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    wakeups: Arc<dyn Wakeups>,
    catch_up: &AtomicBool,
    journal: Option<Journal>,
    pacing: Pacing,
    signals: Signals,
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
    let behind = signals.health.is_behind();
    let mut w = Groups {
        conn: &conn,
        journal,
        pacing,
        open: None,
        changes_at_begin: 0,
        behind,
        retry_at: Instant::now() + REPLAY_RETRY,
        replay_failed_logged: behind.then(Instant::now),
        holding: signals.holding,
        health: signals.health,
        metrics: signals.metrics,
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut last_group = Instant::now();
    loop {
        let first = match w.open {
            // Acknowledged webhooks wait in the journal: try again when it is time.
            None if w.behind => {
                let wait = w.retry_at.saturating_duration_since(Instant::now());
                match clock.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                    Ok(cmd) => cmd,
                    Err(_) => {
                        w.reapply();
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
        w.metrics.groups.observe(batch.len() as u64);
        w.metrics.db(DbOp::WriteGroup, took);
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
    /// The connection's count of changed rows when the open transaction began: a commit
    /// with no change writes nothing, and tells nothing of whether writes succeed.
    changes_at_begin: u64,
    /// The journal holds acknowledged writes that the database does not (a transaction
    /// was lost with them, or they could not be applied at start), and nothing else is
    /// written before they are applied again.
    behind: bool,
    /// When to try applying them again.
    retry_at: Instant,
    /// When a failure to apply them was last logged as an error.
    replay_failed_logged: Option<Instant>,
    /// Shared with [`Writer::settle`]: the open transaction holds acknowledged webhooks or
    /// calls.
    holding: Arc<AtomicBool>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
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
        if self.behind {
            // Each group tries: the first write once there is room is accepted.
            self.reapply();
            if self.behind {
                let why = self
                    .health
                    .readiness()
                    .err()
                    .unwrap_or_else(|| WAITING.into());
                return fail_all(&why);
            }
        }
        if self.open.is_none() {
            if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
                tracing::error!(error = %e, size = cmds.len(), "group not run");
                self.failed(&e);
                return fail_all(&e);
            }
            self.open = Some(Instant::now());
            self.changes_at_begin = self.conn.total_changes();
        }
        let now = now_ms();
        let (results, journaled) = match self.statements(cmds, now) {
            Ok(ran) => ran,
            Err(e) => {
                tracing::error!(error = %e, size = cmds.len(), "transaction lost");
                self.failed(&e);
                self.abandon();
                return fail_all(&e);
            }
        };
        let defer = self
            .journal
            .as_ref()
            .is_some_and(|j| !j.is_broken() && j.len() < COMMIT_BYTES)
            && cmds.iter().all(|c| c.ingest().is_some() || c.is_call())
            && self
                .open
                .is_some_and(|since| since.elapsed() < self.pacing.commit_every);
        if defer && let Some(journal) = self.journal.as_mut() {
            let groups: Vec<Group<'_, '_>> = journaled
                .iter()
                .map(|kept| Group {
                    writes: kept
                        .ingests
                        .iter()
                        .filter_map(|&i| cmds[i].ingest())
                        .map(|w| Record::of(w, micros_since(w.started)))
                        .collect(),
                    calls: &kept.calls,
                })
                .collect();
            let mark = journal.mark();
            if let Err(e) = journal.append(now, &groups) {
                // Not acknowledged: undo the group, and commit what is.
                tracing::error!(error = %e, "the ingest journal did not take a group");
                self.health.failed(Target::Journal, WriteFailure::of_io(&e));
                match rollback_to(self.conn, "grp").and_then(|()| release(self.conn, "grp")) {
                    Ok(()) => self.commit_logged(),
                    Err(_) => self.abandon(),
                }
                return fail_all(&e);
            }
            self.health.succeeded(Target::Journal);
            if let Err(e) = release(self.conn, "grp") {
                tracing::error!(error = %e, "group not kept");
                self.failed(&e);
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
            self.failed(&e);
            self.abandon();
            return fail_all(&e);
        }
        if let Err(e) = self.commit() {
            tracing::error!(error = %e, size = cmds.len(), "group not committed");
            return fail_all(&e);
        }
        if cmds.iter().any(Command::is_probe) {
            self.probe_journal();
        }
        results
    }

    /// Records that a write to the database failed with `e`, just returned.
    fn failed(&self, e: &rusqlite::Error) {
        self.health
            .failed(Target::Database, WriteFailure::of_sqlite(self.conn, e));
    }

    /// Whether the journal can grow now; it is empty, as the probe's group committed.
    fn probe_journal(&mut self) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        match j.probe() {
            Ok(()) => self.health.succeeded(Target::Journal),
            Err(e) => {
                tracing::warn!(error = %e, "the ingest journal cannot grow");
                self.health.failed(Target::Journal, WriteFailure::of_io(&e));
            }
        }
    }

    /// The group's statements inside savepoint `grp`, which is left open. If the group
    /// fails, each command is retried alone. `Err` only when the transaction as a whole
    /// failed. With the results, what was kept, as it ran: the whole group at once, or
    /// command by command (see [`Kept`]).
    fn statements(&self, cmds: &[Command], now: i64) -> rusqlite::Result<(Results, Vec<Kept>)> {
        let conn = self.conn;
        savepoint(conn, "grp")?;
        let e = match run_group(conn, cmds, now) {
            Ok((done, calls)) => {
                let ingests: Vec<usize> = (0..cmds.len())
                    .filter(|&i| cmds[i].ingest().is_some())
                    .collect();
                let kept = Kept { ingests, calls };
                let journaled = if kept.is_empty() { vec![] } else { vec![kept] };
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
                Ok((mut done, calls)) => {
                    release(conn, "one")?;
                    let ingests = if cmd.ingest().is_some() {
                        vec![i]
                    } else {
                        vec![]
                    };
                    let kept = Kept { ingests, calls };
                    if !kept.is_empty() {
                        journaled.push(kept);
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
        let asked = Instant::now();
        let committed = journaled
            .map_or(Ok(0), |seq| {
                self.conn
                    .prepare_cached("UPDATE ingest_journal SET applied_seq = ?")?
                    .execute([seq])
            })
            .and_then(|_| self.conn.execute_batch("COMMIT"));
        self.metrics.db(DbOp::Commit, asked.elapsed());
        if let Err(e) = committed {
            self.failed(&e);
            self.abandon();
            return Err(e);
        }
        self.open = None;
        if self.conn.total_changes() > self.changes_at_begin {
            self.health.succeeded(Target::Database);
        }
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
            // `holding` stays set until they are applied.
            self.behind = true;
            self.health.behind.store(true, Ordering::Release);
            self.reapply();
        } else {
            self.holding.store(false, Ordering::Release);
        }
    }

    /// Tries to apply what the journal holds that the database does not; until it
    /// succeeds, the writer's loop tries again after [`REPLAY_RETRY`] without a group.
    fn reapply(&mut self) {
        self.retry_at = Instant::now() + REPLAY_RETRY;
        if let Some(j) = self.journal.as_mut() {
            match replay(self.conn, j) {
                Ok(replayed) => {
                    if replayed.committed {
                        self.health.succeeded(Target::Database);
                    }
                    if self.replay_failed_logged.take().is_some() {
                        tracing::info!(
                            webhooks = replayed.webhooks,
                            calls = replayed.calls,
                            "applied the ingest journal: writes succeed again"
                        );
                    }
                }
                Err(f) => {
                    self.health.failed(Target::Database, f.why);
                    let log_again = self
                        .replay_failed_logged
                        .is_none_or(|at| at.elapsed() >= REPLAY_LOG_EVERY);
                    if log_again {
                        tracing::error!(
                            error = %f.error,
                            "acknowledged webhooks and calls wait in the ingest journal; writes are \
                             refused until the database takes them"
                        );
                        self.replay_failed_logged = Some(Instant::now());
                    } else {
                        tracing::debug!(error = %f.error, "the ingest journal is still not applied");
                    }
                    return;
                }
            }
        }
        self.behind = false;
        self.health.behind.store(false, Ordering::Release);
        self.holding.store(false, Ordering::Release);
        if self.pacing.commit_every.is_zero() {
            // Kept only to apply what an earlier run left.
            self.journal = None;
        }
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

/// What [`replay`] did.
#[derive(Debug, Clone, Copy)]
pub struct Replayed {
    /// Webhooks applied.
    pub webhooks: usize,
    /// Calls applied.
    pub calls: usize,
    /// Whether it committed a transaction (it had entries to apply).
    pub committed: bool,
}

/// Why [`replay`] failed: nothing of it was kept, and the journal is as it was.
#[derive(Debug)]
pub struct ReplayFailed {
    pub why: WriteFailure,
    pub error: String,
}

/// Applies, in one transaction, the journal's entries that the database does not hold
/// yet, and empties the journal. A webhook or call that can no longer be applied (its
/// webhook or agent was deleted since) is skipped, as it would have been deleted with it.
pub fn replay(conn: &Connection, journal: &mut Journal) -> Result<Replayed, ReplayFailed> {
    let database = |e: rusqlite::Error| ReplayFailed {
        why: WriteFailure::of_sqlite(conn, &e),
        error: e.to_string(),
    };
    let bytes = journal.contents().map_err(|e| ReplayFailed {
        why: WriteFailure::of_io(&e),
        error: format!("reading the ingest journal: {e}"),
    })?;
    let entries = journal::frames(&bytes);
    let applied: i64 = conn
        .query_row("SELECT applied_seq FROM ingest_journal", [], |r| r.get(0))
        .map_err(database)?;
    let last = entries.iter().map(|e| e.seq).fold(applied, i64::max);
    journal.continue_after(last);
    let pending: Vec<&journal::Entry<'_>> = entries
        .iter()
        .filter(|e| e.seq > applied && journal.acknowledged(e.seq))
        .collect();
    if pending.is_empty() {
        if !journal.is_empty()
            && let Err(e) = journal.clear()
        {
            // Harmless: what it holds is applied, and replay skips it.
            tracing::warn!(error = %e, "the ingest journal could not be emptied");
        }
        return Ok(Replayed {
            webhooks: 0,
            calls: 0,
            committed: false,
        });
    }
    let replayed = conn.execute_batch("BEGIN IMMEDIATE").and_then(|()| {
        let n = replay_entries(conn, &pending)?;
        conn.execute("UPDATE ingest_journal SET applied_seq = ?", [last])?;
        conn.execute_batch("COMMIT")?;
        Ok(n)
    });
    match replayed {
        Ok((webhooks, calls)) => {
            if let Err(e) = journal.clear() {
                tracing::warn!(error = %e, "the ingest journal could not be emptied");
            }
            Ok(Replayed {
                webhooks,
                calls,
                committed: true,
            })
        }
        Err(e) => {
            let failed = database(e);
            let _ = conn.execute_batch("ROLLBACK");
            Err(failed)
        }
    }
}

/// Applies each entry's webhooks, then its calls, as the group first ran them; an entry
/// that fails is applied one webhook and one call at a time, skipping those that can no
/// longer be. Returns the webhooks and the calls applied.
fn replay_entries(
    conn: &Connection,
    entries: &[&journal::Entry<'_>],
) -> rusqlite::Result<(usize, usize)> {
    let (mut webhooks, mut calls) = (0, 0);
    for entry in entries {
        let writes: Vec<IngestWrite> = entry.writes.iter().map(Record::to_write).collect();
        let all: Vec<&IngestWrite> = writes.iter().collect();
        savepoint(conn, "entry")?;
        let whole = batch::ingest(conn, &all, Vec::new(), entry.now)
            .and_then(|done| batch::replay_calls(conn, &entry.calls, entry.now).map(|()| done));
        match whole {
            Ok(done) => {
                release(conn, "entry")?;
                webhooks += done.len();
                calls += entry.calls.len();
                continue;
            }
            Err(e) if violates_a_constraint(&e) => rollback_to(conn, "entry")?,
            Err(e) => return Err(e),
        }
        for w in &all {
            if apply_one(conn, entry.seq, "webhook", || {
                batch::ingest(conn, std::slice::from_ref(w), Vec::new(), entry.now).map(drop)
            })? {
                webhooks += 1;
            }
        }
        // As the group ran: every call's claims before any call's record, so that data one
        // call took is not late for another that fell back on the same step.
        for c in &entry.calls {
            apply_one(conn, entry.seq, "call's claims", || {
                batch::claim_again(conn, std::slice::from_ref(c))
            })?;
        }
        for c in &entry.calls {
            if apply_one(conn, entry.seq, "call", || {
                batch::record_calls(conn, std::slice::from_ref(c), entry.now)
            })? {
                calls += 1;
            }
        }
        release(conn, "entry")?;
    }
    Ok((webhooks, calls))
}

/// Applies one journaled `what` with `apply`, skipping it if it can no longer be (its
/// webhook or agent was deleted since). Whether it was applied.
fn apply_one(
    conn: &Connection,
    seq: i64,
    what: &str,
    apply: impl FnOnce() -> rusqlite::Result<()>,
) -> rusqlite::Result<bool> {
    savepoint(conn, "one")?;
    match apply() {
        Ok(()) => {
            release(conn, "one")?;
            Ok(true)
        }
        Err(e) if violates_a_constraint(&e) => {
            tracing::warn!(error = %e, seq, what, "a journaled write could not be applied");
            rollback_to(conn, "one")?;
            release(conn, "one")?;
            Ok(false)
        }
        Err(e) => Err(e),
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
pub(in crate::store) fn drain(rx: &mut mpsc::Receiver<Command>, batch: &mut Vec<Command>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(cmd) => batch.push(cmd),
            Err(_) => break,
        }
    }
}

pub(in crate::store) fn answer(
    cmd: Command,
    result: Result<Done, WriteError>,
    wakeups: &dyn Wakeups,
) {
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
        // What could not be committed waits in the journal; reads go on with what is.
        (Command::Settle(reply), Err(e)) => {
            tracing::debug!(error = %e, "reading without the webhooks still to commit");
            let _ = reply.send(Ok(()));
        }
        (Command::Probe(reply), Ok(Done::Probe)) => {
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
                Command::Probe(r) => drop(r.send(Err(err))),
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

/// The group's statements: webhooks first, then every delivery at once, then calls. With
/// the results, the calls it started as stored.
fn run_group(
    conn: &Connection,
    cmds: &[Command],
    now: i64,
) -> rusqlite::Result<(Vec<Done>, Vec<StartedCall>)> {
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
    let (attempted, stored) = batch::start_calls(conn, &calls, now)?;
    let mut started = attempted.into_iter();

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
            Command::Probe(_) => {
                probe(conn)?;
                Done::Probe
            }
        });
    }
    Ok((done, stored))
}

/// Changes the one row of `ingest_journal` and changes it back: SQLite does not write a
/// page that an update leaves as it was, but one changed twice in a transaction is written
/// at its commit, one page, which is all it takes to know whether the disk takes writes.
fn probe(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE ingest_journal SET applied_seq = applied_seq + 1")?
        .execute([])?;
    conn.prepare_cached("UPDATE ingest_journal SET applied_seq = applied_seq - 1")?
        .execute([])?;
    Ok(())
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
