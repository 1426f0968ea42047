//! Every SQL statement lives under this module.
//!
//! The store runs on one of two engines, chosen by the database URL: SQLite (the embedded
//! default) or PostgreSQL (a database shared by the servers of a cluster). [`Db`] says
//! which; each store function has an implementation per engine, and nothing outside this
//! module and the writer knows which one runs. The PostgreSQL implementations are in
//! [`pg`].
//!
//! On SQLite, reads go through a pool of read-only connections. Hot-path writes (ingest, calls,
//! sweeping) go through the single [`writer::Writer`] task, which commits them in groups.
//! Rare configuration writes (agents, actions, tokens) use a one-connection pool and
//! `BEGIN IMMEDIATE`, so a read-then-write never fails with SQLITE_BUSY.

pub mod actions;
pub mod admins;
pub mod agents;
pub mod api_tokens;
pub mod batch;
pub mod calls;
pub mod connections;
pub mod console_tokens;
pub mod contexts;
pub mod deliveries;
pub mod documents;
pub mod journal;
pub mod pg;
pub mod refusals;
pub mod servers;
pub mod setup_tokens;
pub mod sign_ins;
pub mod sql;
pub mod tokens;
pub mod writer;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use sql::{Exec, Tx};
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Milliseconds since the Unix epoch: the unit of every time column.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A time column as RFC 3339 (`2026-11-27T10:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    // Always three digits of milliseconds, so that every timestamp has the same width.
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

/// Errors of configuration writes that a caller may want to explain to a user.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// The draft changed since the writer read it: nothing was saved.
    #[error("the draft changed since it was read (it is at revision {current}); nothing was saved")]
    Stale { current: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The name of the trigger or constraint an error reports, if any: SQLite's message (a
/// trigger's `RAISE`), PostgreSQL's constraint name or else its message (a trigger's
/// `RAISE EXCEPTION`).
pub fn constraint_of(err: &sqlx::Error) -> Option<String> {
    let db = err.as_database_error()?;
    Some(db.constraint().unwrap_or(db.message()).to_owned())
}

/// The database, on either engine.
#[derive(Clone)]
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(pg::PgDb),
}

/// Which engine a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Sqlite,
    Postgres,
}

impl EngineKind {
    /// `postgres://` and `postgresql://` name PostgreSQL; anything else is an SQLite URL.
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

impl Db {
    /// Opens and migrates the database at `url`, on the engine its scheme names.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        match EngineKind::of_url(url) {
            EngineKind::Sqlite => Ok(Self::Sqlite(SqliteDb::open(url).await?)),
            EngineKind::Postgres => Ok(Self::Postgres(pg::PgDb::open(url).await?)),
        }
    }

    pub fn engine(&self) -> EngineKind {
        match self {
            Self::Sqlite(_) => EngineKind::Sqlite,
            Self::Postgres(_) => EngineKind::Postgres,
        }
    }

    /// Where the writer's ingest journal lives: beside an SQLite database file (none for a
    /// database in memory, nor on PostgreSQL, where a 202 follows the commit).
    pub fn journal_path(&self) -> Option<PathBuf> {
        match self {
            Self::Sqlite(db) => db.journal_path(),
            Self::Postgres(_) => None,
        }
    }

    /// Is the database reachable?
    pub async fn ping(&self) -> bool {
        match self {
            Self::Sqlite(db) => db.ping().await,
            Self::Postgres(db) => db.ping().await,
        }
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite(db) => db.close().await,
            Self::Postgres(db) => db.close().await,
        }
    }
}

/// An SQLite database: pools for reads and configuration writes, and how to reach it.
#[derive(Clone)]
pub struct SqliteDb {
    pub read: SqlitePool,
    pub write: SqlitePool,
    /// The background checkpoint's own connection: a checkpoint's copy and sync must not
    /// hold up configuration writes, which have the one `write` connection.
    checkpoints: SqlitePool,
    options: Arc<SqliteConnectOptions>,
    /// Descriptors of the WAL and the database file for [`SqliteDb::sync_files`], opened once.
    sync_files: Arc<std::sync::Mutex<Option<&'static [std::fs::File; 2]>>>,
}

/// The WAL after a checkpoint, in bytes of pages.
#[derive(Debug, Clone, Copy)]
pub struct WalState {
    /// Pages the WAL holds.
    pub size: u64,
    /// Pages the checkpoint could not copy because a reader still used an older snapshot.
    pub left: u64,
}

/// SQLite's page size: the default, which the database keeps.
const PAGE_SIZE: u64 = 4096;

/// How long a connection waits for SQLite's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// When a configuration write last found the database locked, in µs since [`clock`] began
/// (0: never). The writer may hold a transaction open for some milliseconds: seeing this, it
/// commits at once and stays out of the way until the write is in.
static CONFIG_WRITE_BLOCKED: AtomicU64 = AtomicU64::new(0);

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Whether a configuration write of this process is waiting for the write lock now.
pub fn config_writer_waiting() -> bool {
    let blocked = CONFIG_WRITE_BLOCKED.load(Ordering::Relaxed);
    blocked != 0 && clock().saturating_sub(blocked) < 2_000
}

/// The configuration connection's busy handler: SQLite's own (`busy_timeout`) sleeps ever
/// longer between tries, and would seldom try in the short moment between two of the
/// writer's transactions. This one tries every millisecond, up to [`BUSY_TIMEOUT`], and
/// tells the writer that it waits.
unsafe extern "C" fn config_write_busy(
    _: *mut std::ffi::c_void,
    tries: std::ffi::c_int,
) -> std::ffi::c_int {
    CONFIG_WRITE_BLOCKED.store(clock().max(1), Ordering::Relaxed);
    if u128::try_from(tries).unwrap_or(0) >= BUSY_TIMEOUT.as_millis() {
        return 0;
    }
    std::thread::sleep(Duration::from_millis(1));
    1
}

impl SqliteDb {
    /// Opens (creating if missing) and migrates the database at `url`.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode a commit survives a crash of the process (not of the machine).
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("temp_store", "memory")
            // No checkpoint inside a commit: a configuration write that pushed the log past
            // SQLite's threshold (a published version is a few hundred KB) would copy and
            // sync the whole log before answering. The background checkpoint copies it.
            .pragma("wal_autocheckpoint", "0")
            .disable_statement_logging();

        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let mut handle = conn.lock_handle().await?;
                    // SAFETY: the connection is locked, so nothing else uses it meanwhile, and
                    // the handler only touches a static and sleeps.
                    unsafe {
                        rusqlite::ffi::sqlite3_busy_handler(
                            handle.as_raw_handle().as_ptr(),
                            Some(config_write_busy),
                            std::ptr::null_mut(),
                        );
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&write).await?;
        let db_for_upgrade = Db::Sqlite(Self {
            read: write.clone(),
            write: write.clone(),
            checkpoints: write.clone(),
            options: Arc::new(options.clone()),
            sync_files: Arc::default(),
        });
        documents::upgrade(&db_for_upgrade).await?;

        let readers = std::thread::available_parallelism().map_or(4, |n| n.get() * 2) as u32;
        let read = SqlitePoolOptions::new()
            .max_connections(readers.max(4))
            .min_connections(1)
            .connect_with(options.clone().read_only(true))
            .await?;
        let checkpoints = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .connect_with(options.clone())
            .await?;
        Ok(Self {
            read,
            write,
            checkpoints,
            options: Arc::new(options),
            sync_files: Arc::default(),
        })
    }

    /// A dedicated connection for the group-commit writer, reached through SQLite's C API
    /// from the writer's own thread. It does not checkpoint the WAL on its own (a
    /// checkpoint's fsync would stall every request waiting on the group): [`Db::checkpoint`]
    /// does, from another connection, and the writer only copies what that left when asked
    /// (see `Writer::catch_up_wal`). After the WAL starts over, a file grown past
    /// `wal_limit` bytes is cut back to it.
    pub fn writer_connection(&self, wal_limit: u64) -> anyhow::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(self.options.get_filename())?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Each group size of each statement is prepared once (see `batch`).
        conn.set_prepared_statement_cache_capacity(256);
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             -- In WAL mode a commit survives a crash of the process (not of the machine).
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = 0;
             -- 4 MiB of page cache: SQLite walks the writer's cache at the end of every
             -- commit, so a larger one (24 MiB was tried) costs more than its hits save.
             PRAGMA cache_size = -4096;",
        )?;
        conn.pragma_update(None, "journal_size_limit", i64::try_from(wal_limit)?)?;
        Ok(conn)
    }

    /// Where the writer's ingest journal lives: beside the database file (none for a
    /// database in memory).
    pub fn journal_path(&self) -> Option<PathBuf> {
        self.beside("-ingest")
    }

    /// Syncs the write-ahead log and the database file (blocking), through descriptors of
    /// its own. They are opened once and never closed: closing any descriptor of a file
    /// drops every POSIX lock the process holds on it, SQLite's own included, and a
    /// connection that then believes itself the last one checkpoints and deletes the WAL
    /// under the others (<https://www.sqlite.org/howtocorrupt.html>, section 2.2).
    pub fn sync_files(&self) -> std::io::Result<()> {
        let files = {
            let mut opened = self.sync_files.lock().unwrap_or_else(|e| e.into_inner());
            match *opened {
                Some(files) => files,
                None => {
                    let Some(wal) = self.beside("-wal") else {
                        return Ok(());
                    };
                    let files = [
                        std::fs::File::open(wal)?,
                        std::fs::File::open(self.options.get_filename())?,
                    ];
                    let files: &'static [std::fs::File; 2] = Box::leak(Box::new(files));
                    *opened = Some(files);
                    files
                }
            }
        };
        files[0].sync_data()?;
        files[1].sync_data()
    }

    /// A file named after the database file with `suffix`.
    fn beside(&self, suffix: &str) -> Option<PathBuf> {
        let file = self.options.get_filename();
        let name = file.to_str()?;
        if name.is_empty() || name.contains(":memory:") || name.starts_with("file:") {
            return None;
        }
        let mut path = file.as_os_str().to_owned();
        path.push(suffix);
        Some(PathBuf::from(path))
    }

    /// Copies committed pages from the WAL into the database file without blocking the
    /// writer or readers (a PASSIVE checkpoint).
    pub async fn checkpoint(&self) -> Result<WalState, sqlx::Error> {
        let (_busy, frames, copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&self.checkpoints)
                .await?;
        let bytes = |frames: i64| u64::try_from(frames).unwrap_or(0) * PAGE_SIZE;
        Ok(WalState {
            size: bytes(frames),
            left: bytes(frames - copied),
        })
    }

    /// `SELECT 1` on a read connection: is the database reachable?
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.read).await.is_ok()
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.checkpoints.close().await;
        self.write.close().await;
    }
}

/// Starts a configuration write that has the database's configuration to itself until it
/// commits: on SQLite it holds the write lock from its first statement; on PostgreSQL it
/// takes a lock that every configuration write takes (ingest and calls do not), so that a
/// read-then-write (a draft's revision check, the first admin) is as safe as on SQLite,
/// whichever server or command makes it.
pub async fn begin_write(db: &Db) -> Result<Tx, sqlx::Error> {
    match db {
        Db::Sqlite(db) => Ok(Tx::Sqlite(db.write.begin_with("BEGIN IMMEDIATE").await?)),
        Db::Postgres(db) => {
            let mut tx = db.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(pg::CONFIG_WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
            Ok(Tx::Postgres(tx))
        }
    }
}
