//! The servers running on this database and the configuration version each has applied.
//!
//! A server registers when it starts and leaves when it stops; its catalog watcher records
//! every configuration version it has applied. A configuration command of the CLI waits
//! until every running server has applied its change, so that when the command returns the
//! servers obey it (a revoked key no longer opens anything).

use std::time::{Duration, Instant};

use super::{Db, now_ms};

/// The configuration version: bumped by every configuration change (triggers).
pub async fn config_version(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM config_version")
        .fetch_one(&db.read)
        .await
}

/// Registers this process as a server that has applied `version`; returns its row.
pub async fn register(db: &Db, version: i64) -> Result<i64, sqlx::Error> {
    let now = now_ms();
    // Not `RETURNING id`: its row comes back before the statement's commit, whose failure
    // (a full disk) would then go unseen.
    let done = sqlx::query(
        "INSERT INTO servers (pid, started_at, seen_version, seen_at) VALUES (?, ?, ?, ?)",
    )
    .bind(i64::from(std::process::id()))
    .bind(now)
    .bind(version)
    .bind(now)
    .execute(&db.write)
    .await?;
    Ok(done.last_insert_rowid())
}

/// Records that the server `id` has applied `version`.
pub async fn applied(db: &Db, id: i64, version: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE servers SET seen_version = max(seen_version, ?), seen_at = ? WHERE id = ?")
        .bind(version)
        .bind(now_ms())
        .bind(id)
        .execute(&db.write)
        .await?;
    Ok(())
}

/// The server `id` stops.
pub async fn leave(db: &Db, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM servers WHERE id = ?")
        .bind(id)
        .execute(&db.write)
        .await?;
    Ok(())
}

/// A server that has not applied a change yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    pub pid: i64,
    pub seen_version: i64,
}

/// Waits until every running server has applied `version`, or `patience` has passed; returns
/// the servers still behind. Rows of processes that no longer run (killed) are removed.
pub async fn await_applied(
    db: &Db,
    version: i64,
    patience: Duration,
) -> Result<Vec<Behind>, sqlx::Error> {
    let deadline = Instant::now() + patience;
    loop {
        let rows: Vec<(i64, i64, i64)> =
            sqlx::query_as("SELECT id, pid, seen_version FROM servers WHERE seen_version < ?")
                .bind(version)
                .fetch_all(&db.read)
                .await?;
        let mut behind = Vec::new();
        for (id, pid, seen_version) in rows {
            if process_runs(pid) {
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
