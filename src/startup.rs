//! Open and migrate the database, build the router, serve, and shut down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::auth::keys::{Secret, SecretKind};
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::domain::phone::PhoneNumber;
use crate::http::rate::IngestLimits;
use crate::http::{self, AppState, Shared};
use crate::metrics::Metrics;
use crate::serve::{ConnectionLimits, ReadTimeouts};
use crate::store::journal::Journal;
use crate::store::refusals::spawn_flusher;
use crate::store::writer::{Sweep, SweepReport, Writer};
use crate::store::{Db, SqliteDb, now_ms};
use crate::wakeups::{InProcessWakeups, Wakeups};

/// A server bound to its address, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    writer_task: JoinHandle<()>,
    settings: Settings,
    /// This server's row in `servers`; 0 until it is registered.
    server: Arc<AtomicI64>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = Db::open(&settings.database_url).await?;
        PhoneNumber::warm_up();
        let wakeups: Arc<dyn Wakeups> = Arc::new(InProcessWakeups::new());
        let metrics = Arc::new(Metrics::new());
        let journal = match db.journal_path() {
            // Opened even when commits are not deferred, to apply what an earlier run left.
            Some(path) => {
                match Journal::open(&path) {
                    Ok(journal) => Some(journal),
                    // Another server on this database holds it; this one commits every
                    // group before answering it.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tracing::warn!(error = %e, "no ingest journal; committing every group");
                        None
                    }
                    // There is none, and none can be made (a full disk): nothing waits in
                    // it, and every group is committed before it is answered.
                    Err(e)
                        if std::fs::symlink_metadata(&path)
                            .is_err_and(|m| m.kind() == std::io::ErrorKind::NotFound) =>
                    {
                        tracing::warn!(error = %e, "no ingest journal; committing every group");
                        None
                    }
                    // It may hold acknowledged webhooks: do not start without them.
                    Err(e) => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("opening the ingest journal {}", path.display())));
                    }
                }
            }
            _ => None,
        };
        let (writer, writer_task) = match &db {
            Db::Sqlite(lite) => Writer::spawn(
                lite.writer_connection(settings.wal_restart_bytes.saturating_mul(2))?,
                journal,
                settings.pacing,
                wakeups.clone(),
                metrics.clone(),
            )?,
            Db::Postgres(pg) => {
                crate::store::pg::writer::spawn(pg.pool.clone(), wakeups.clone(), metrics.clone())
            }
        };
        let listener = listen(&settings.bind).await?;
        let addr = listener.local_addr()?;
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let catalog = Catalog::new(db.clone(), metrics.clone());
        // On a full disk the server still starts: it serves reads, and its writes wait for
        // room. It registers once it can.
        let server = match register(&db, &catalog).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "could not register this server; trying again every second");
                0
            }
        };
        let state = AppState::new(Shared {
            catalog,
            server,
            db,
            writer,
            wakeups,
            phones: Arc::default(),
            flash: Arc::default(),
            setup_token: Arc::default(),
            public_url: public_url.trim_end_matches('/').into(),
            body_limit: settings.body_limit,
            session_ttl: settings.session_ttl,
            ingest_limits: Arc::new(IngestLimits::new(settings.rates)),
            refusals: Arc::default(),
            delivery_retention: settings.delivery_retention,
            connect: Arc::default(),
            metrics,
        });
        Ok(Self {
            listener,
            state,
            writer_task,
            settings,
            server: Arc::new(AtomicI64::new(server)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn public_url(&self) -> &str {
        &self.state.public_url
    }

    /// A handle on the writer, for instance to [settle](Writer::settle) it before another
    /// process reads the database.
    pub fn writer(&self) -> Writer {
        self.state.writer.clone()
    }

    /// When no admin exists yet: a one-time link that creates the first one. Each call
    /// makes a new token (the previous link stops working).
    pub async fn first_run_link(&self) -> anyhow::Result<Option<String>> {
        if crate::store::admins::count(&self.state.db).await? > 0 {
            return Ok(None);
        }
        let token = Secret::generate(SecretKind::Setup);
        *self.state.setup_token.lock().expect("setup lock") = Some(token.hash());
        // Offered to every server on this database (a cluster's proxy may send the link's
        // request to another). Without a row in `servers` (its database was full at start),
        // the link works on this server only.
        let server = self.server.load(std::sync::atomic::Ordering::Relaxed);
        if server > 0
            && let Err(e) =
                crate::store::setup_tokens::offer(&self.state.db, server, &token.hash()).await
        {
            tracing::warn!(error = %e, "the setup link works on this server only");
        }
        Ok(Some(format!(
            "{}/setup?token={}",
            self.state.public_url,
            token.expose()
        )))
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish (up to the
    /// grace period) and flushes the writer.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            writer_task,
            settings,
            server,
        } = self;
        let db = state.db.clone();
        let registrar = (server.load(Ordering::Acquire) == 0)
            .then(|| spawn_registrar(db.clone(), state.catalog.clone(), server.clone()));
        let sweeper = spawn_sweeper(
            state.writer.clone(),
            settings.sweep_interval,
            Retention {
                deliveries: settings.delivery_retention,
                calls: settings.call_retention,
            },
        );
        let refusals = state.refusals.clone();
        let flusher = spawn_flusher(refusals.clone(), state.writer.clone());
        let writer = state.writer.clone();
        let watcher = state.catalog.spawn_watcher();
        let open_connections = state.metrics.open_connections.clone();
        // PostgreSQL checkpoints on its own.
        let checkpointer = match &db {
            Db::Sqlite(lite) => Some(spawn_checkpointer(
                lite.clone(),
                state.writer.clone(),
                settings.wal_restart_bytes,
            )),
            Db::Postgres(_) => None,
        };
        // On PostgreSQL, what other servers commit wakes the calls waiting here, and their
        // configuration changes are applied as soon as they are announced (the watcher
        // stays, in case an announcement is lost).
        let listening = match &db {
            Db::Postgres(pg) => {
                let changed = Arc::new(tokio::sync::Notify::new());
                let listener = crate::store::pg::listener::spawn(
                    pg.clone(),
                    state.wakeups.clone(),
                    changed.clone(),
                );
                let catalog = state.catalog.clone();
                let applier = tokio::spawn(async move {
                    loop {
                        changed.notified().await;
                        if let Err(e) = catalog.check_for_changes().await {
                            tracing::warn!(error = %e, "could not apply a configuration change");
                        }
                    }
                });
                let heart = {
                    let (db, server) = (db.clone(), server.clone());
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(crate::store::servers::HEARTBEAT);
                        loop {
                            tick.tick().await;
                            let id = server.load(Ordering::Acquire);
                            if id != 0
                                && let Err(e) = crate::store::servers::heartbeat(&db, id).await
                            {
                                tracing::debug!(error = %e, "heartbeat not recorded");
                            }
                        }
                    })
                };
                vec![listener, applier, heart]
            }
            Db::Sqlite(_) => Vec::new(),
        };
        let app = http::router(state);

        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stopping_tx.send(());
        };
        let grace = settings.shutdown_grace;
        let timeouts = ReadTimeouts {
            header: settings.header_timeout,
            body: settings.body_timeout,
        };
        let limits = ConnectionLimits {
            max_connections: settings
                .max_connections
                .unwrap_or_else(crate::serve::default_max_connections),
            max_header_bytes: settings.max_header_bytes as usize,
        };
        let cut_short = {
            let serve =
                crate::serve::serve(listener, app, timeouts, limits, open_connections, signal);
            tokio::select! {
                () = serve => false,
                _ = async {
                    let _ = stopping_rx.await;
                    tokio::time::sleep(grace).await;
                } => {
                    tracing::warn!("grace period over; closing remaining connections");
                    true
                }
            }
        };
        sweeper.abort();
        watcher.abort();
        if let Some(registrar) = registrar {
            registrar.abort();
        }
        if let Some(checkpointer) = checkpointer {
            checkpointer.abort();
        }
        for task in listening {
            task.abort();
        }
        flusher.abort();
        // The last refusals counted are written before the writer stops.
        let _ = tokio::time::timeout(Duration::from_secs(1), refusals.flush(&writer)).await;
        drop(writer);
        // The router (and its writer handles) is gone: the writer drains and stops. After
        // the grace period, connections still open (a call waiting for its data) hold
        // writer handles until the runtime ends: do not wait for them. Nothing is lost:
        // what was acknowledged is committed, and what was not is not.
        let drain = if cut_short {
            Duration::ZERO
        } else {
            Duration::from_secs(10)
        };
        let _ = tokio::time::timeout(drain, writer_task).await;
        let registered = server.load(Ordering::Acquire);
        if registered != 0
            && let Err(e) = crate::store::servers::leave(&db, registered).await
        {
            tracing::warn!(error = %e, "could not remove this server from the servers table");
        }
        db.close().await;
        Ok(())
    }
}

/// Registers this server in `servers` at the configuration version it applies; returns
/// its row.
async fn register(db: &Db, catalog: &Catalog) -> Result<i64, sqlx::Error> {
    let version = crate::store::servers::config_version(db).await?;
    let id = crate::store::servers::register(db, version).await?;
    catalog.registered_as(id, version);
    Ok(id)
}

/// Tries every second to register a server that could not register at start (a full
/// disk), so that configuration commands wait for it once it is.
fn spawn_registrar(db: Db, catalog: Catalog, server: Arc<AtomicI64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match register(&db, &catalog).await {
                Ok(id) => {
                    server.store(id, Ordering::Release);
                    tracing::info!("registered this server");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "still could not register this server"),
            }
        }
    })
}

/// How long what ingest and calls write is kept.
#[derive(Debug, Clone, Copy)]
struct Retention {
    deliveries: Duration,
    calls: Duration,
}

/// Pause between two sweeps while a backlog is worked off: each sweep is one short turn of
/// the writer, and webhooks and calls queued meanwhile go first.
const SWEEP_AGAIN_AFTER: Duration = Duration::from_millis(20);

/// Every `interval`, removes expired webhook data, old idempotency keys, and deliveries,
/// refusal counts and calls past their retention, in bounded portions until none is left.
fn spawn_sweeper(writer: Writer, interval: Duration, keep: Retention) -> JoinHandle<()> {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut total = SweepReport::default();
            let started = Instant::now();
            loop {
                let now = now_ms();
                let swept = writer
                    .sweep(Sweep {
                        now,
                        deliveries_before: now.saturating_sub(ms(keep.deliveries)),
                        calls_before: now.saturating_sub(ms(keep.calls)),
                    })
                    .await;
                match swept {
                    Ok(r) => {
                        total.expired_contexts += r.expired_contexts;
                        total.forgotten_idempotency_keys += r.forgotten_idempotency_keys;
                        total.old_deliveries += r.old_deliveries;
                        total.old_refusal_counts += r.old_refusal_counts;
                        total.old_calls += r.old_calls;
                        if !r.more {
                            break;
                        }
                        tokio::time::sleep(SWEEP_AGAIN_AFTER).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sweep failed");
                        break;
                    }
                }
            }
            tracing::debug!(took_us = started.elapsed().as_micros() as u64, "sweep");
            if total.removed() > 0 {
                tracing::info!(
                    expired_contexts = total.expired_contexts,
                    forgotten_idempotency_keys = total.forgotten_idempotency_keys,
                    old_deliveries = total.old_deliveries,
                    old_refusal_counts = total.old_refusal_counts,
                    old_calls = total.old_calls,
                    "swept"
                );
            }
        }
    })
}

/// Connections the kernel may queue before the server accepts them. A burst of calls opens
/// many connections at once; with the usual 128, the rest would wait a second to retry.
const ACCEPT_BACKLOG: u32 = 4096;

/// Binds `addr` (a `host:port`, resolved) with a deep accept queue.
async fn listen(addr: &str) -> anyhow::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr) {
            Ok(()) => return Ok(socket.listen(ACCEPT_BACKLOG)?),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.map_or_else(
        || anyhow::anyhow!("{addr} resolves to no address"),
        Into::into,
    ))
}

/// How often the WAL is checkpointed into the database file. Often, so that each checkpoint
/// is small: a checkpoint's burst of writes and its fsync hold up the writer's next commits
/// (under load, checkpoints every 2 s put the open-loop ingest p99 at 15-22 ms, every 10 s
/// at 54 ms, every 250 ms at 7 ms).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// A checkpoint that goes on failing is logged again this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Most background checkpoints run back to back before the writer copies the rest of the
/// WAL; they stop at the first that copies all it saw in less than [`QUICK_PASS`].
const CATCH_UP_PASSES: usize = 6;
const QUICK_PASS: Duration = Duration::from_millis(5);

/// Syncs the WAL and the database file, off the writer's path: neither needs it for
/// SQLite's guarantees (`synchronous = NORMAL`), but the writer's checkpoint that follows
/// then syncs only what it copies itself.
async fn flush_files(db: &SqliteDb) {
    let started = Instant::now();
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.sync_files()).await {
        Ok(Ok(())) => tracing::debug!(
            took_us = started.elapsed().as_micros() as u64,
            "synced the files before the writer's checkpoint"
        ),
        Ok(Err(e)) => tracing::debug!(error = %e, "could not sync the files"),
        Err(e) => tracing::debug!(error = %e, "could not sync the files"),
    }
}

/// Checkpoints the WAL in the background, off the writer's path; when the WAL has grown
/// past `restart_bytes`, asks the writer to copy the rest (see [`Writer::catch_up_wal`]).
///
/// The writer's checkpoint holds up its queue, and it syncs the database file. Right after
/// one background pass it took 4-11 ms (past 32 MiB, every 750 ms under load: its backlogs
/// put the open-loop ingest p99 over 10 ms) or 17-46 ms (past 256 MiB). After more passes
/// (see [`CATCH_UP_PASSES`]) it still took 25-69 ms under heavy writes, every few seconds:
/// SQLite syncs the database file only after a pass that copied the whole log, which under
/// steady writes only the writer's does, so its sync wrote out all the background passes
/// had copied. So the files are synced here first (see [`flush_files`]) and one more pass
/// copies what was committed meanwhile; the writer's checkpoint then took 1-5 ms.
fn spawn_checkpointer(db: SqliteDb, writer: Writer, restart_bytes: u64) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed_logged = None;
        loop {
            tick.tick().await;
            match db.checkpoint().await {
                Ok(wal) if wal.size > restart_bytes => {
                    // Each pass copies what was committed during the one before, which
                    // took less time: once a pass is quick and copied all it saw, the
                    // writer is left with a few milliseconds' worth. Else (readers held
                    // it back) the writer is not asked this time.
                    tracing::debug!(wal_bytes = wal.size, "the WAL is past its limit");
                    let mut flushed = false;
                    for _ in 0..CATCH_UP_PASSES {
                        let pass = Instant::now();
                        let copied = db.checkpoint().await;
                        if let Ok(wal) = &copied {
                            tracing::debug!(
                                left_bytes = wal.left,
                                took_us = pass.elapsed().as_micros() as u64,
                                "catch-up pass"
                            );
                        }
                        match copied {
                            // The files are synced here, off the writer's path, then a
                            // last pass copies what was committed meanwhile.
                            Ok(wal) if wal.left == 0 && !flushed => {
                                flush_files(&db).await;
                                flushed = true;
                            }
                            Ok(wal) if wal.left == 0 && pass.elapsed() < QUICK_PASS => {
                                writer.catch_up_wal();
                                break;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "checkpoint failed");
                                break;
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // Four times a second while the disk is full: said once a minute.
                    if failed_logged.is_none_or(|at: Instant| at.elapsed() >= FAILURE_LOG_EVERY) {
                        tracing::warn!(error = %e, "checkpoint failed");
                        failed_logged = Some(Instant::now());
                    } else {
                        tracing::debug!(error = %e, "checkpoint failed");
                    }
                    continue;
                }
            }
            if failed_logged.take().is_some() {
                tracing::info!("checkpoints succeed again");
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
