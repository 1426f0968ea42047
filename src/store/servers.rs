//! The servers running on this database and the configuration version each has applied.
//!
//! A server registers when it starts and leaves when it stops; its catalog watcher records
//! every configuration version it has applied. A configuration command of the CLI waits
//! until every running server has applied its change, so that when the command returns the
//! servers obey it (a revoked key no longer opens anything).

use std::time::{Duration, Instant};

use super::sql::sql;
use super::{Db, now_ms};

/// The configuration version: bumped by every configuration change (triggers).
pub async fn config_version(db: &Db) -> Result<i64, sqlx::Error> {
    sql!(
        db.read(),
        query_scalar("SELECT version FROM config_version").fetch_one
    )
}

/// Registers this process as a server that has applied `version`; returns its row.
pub async fn register(db: &Db, version: i64) -> Result<i64, sqlx::Error> {
    let now = now_ms();
    let pid = i64::from(std::process::id());
    match db {
        // Not `RETURNING id`: its row comes back before the statement's commit, whose
        // failure (a full disk) would then go unseen.
        Db::Sqlite(db) => Ok(sqlx::query(
            "INSERT INTO servers (pid, started_at, seen_version, seen_at) VALUES (?, ?, ?, ?)",
        )
        .bind(pid)
        .bind(now)
        .bind(version)
        .bind(now)
        .execute(&db.write)
        .await?
        .last_insert_rowid()),
        // PostgreSQL answers a statement once it has committed.
        Db::Postgres(db) => {
            sqlx::query_scalar(
                "INSERT INTO servers (pid, started_at, seen_version, seen_at)
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(pid)
            .bind(now)
            .bind(version)
            .bind(now)
            .fetch_one(&db.pool)
            .await
        }
    }
}

/// Records that the server `id` has applied `version`.
pub async fn applied(db: &Db, id: i64, version: i64) -> Result<(), sqlx::Error> {
    sql!(
        db.write(),
        query(
            sqlite =
                "UPDATE servers SET seen_version = max(seen_version, ?), seen_at = ? WHERE id = ?",
            pg = "UPDATE servers SET seen_version = greatest(seen_version, $1), seen_at = $2
               WHERE id = $3",
        )
        .bind(version)
        .bind(now_ms())
        .bind(id)
        .execute
    )?;
    Ok(())
}

/// The server `id` stops.
pub async fn leave(db: &Db, id: i64) -> Result<(), sqlx::Error> {
    sql!(
        db.write(),
        query("DELETE FROM servers WHERE id = ?").bind(id).execute
    )?;
    Ok(())
}

/// A server that has not applied a change yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    pub pid: i64,
    pub seen_version: i64,
}

/// How often a server on PostgreSQL says it still runs (its servers may run on other
/// machines, where its process id tells nothing).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A server on PostgreSQL that has not said so for this long no longer runs.
const STALE_AFTER: Duration = Duration::from_secs(5);

/// The server `id` still runs (on PostgreSQL; see [`HEARTBEAT`]).
pub async fn heartbeat(db: &Db, id: i64) -> Result<(), sqlx::Error> {
    sql!(
        db.write(),
        query("UPDATE servers SET seen_at = ? WHERE id = ?")
            .bind(now_ms())
            .bind(id)
            .execute
    )?;
    Ok(())
}

/// Waits until every running server has applied `version`, or `patience` has passed; returns
/// the servers still behind. Rows of servers that no longer run (killed) are removed: on
/// SQLite, whose servers share this machine, those of processes that do not exist; on
/// PostgreSQL, those whose last heartbeat is older than [`STALE_AFTER`].
pub async fn await_applied(
    db: &Db,
    version: i64,
    patience: Duration,
) -> Result<Vec<Behind>, sqlx::Error> {
    let deadline = Instant::now() + patience;
    loop {
        let rows: Vec<(i64, i64, i64, i64)> = sql!(
            db.read(),
            query_as("SELECT id, pid, seen_version, seen_at FROM servers WHERE seen_version < ?")
                .bind(version)
                .fetch_all
        )?;
        let stale_before = now_ms() - STALE_AFTER.as_millis() as i64;
        let mut behind = Vec::new();
        for (id, pid, seen_version, seen_at) in rows {
            let runs = match db {
                Db::Sqlite(_) => process_runs(pid),
                Db::Postgres(_) => seen_at >= stale_before,
            };
            if runs {
                behind.push(Behind { pid, seen_version });
            } else {
                leave(db, id).await?;
            }
        }
        if behind.is_empty() || Instant::now() >= deadline {
            return Ok(behind);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether a process with this id runs on this machine (the database is a local file, so
/// every server on it runs here).
fn process_runs(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
