//! Admins and their sessions.

use sqlx::FromRow;

use super::sql::sql;
use super::{Db, StoreError, begin_write, now_ms};
use crate::auth::keys::SecretHash;

#[derive(Clone, FromRow)]
pub struct AdminRow {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub created_at: i64,
}

pub async fn count(db: &Db) -> Result<i64, sqlx::Error> {
    sql!(
        db.read(),
        query_scalar("SELECT count(*) FROM admins").fetch_one
    )
}

pub async fn find_by_email(db: &Db, email: &str) -> Result<Option<AdminRow>, sqlx::Error> {
    // Emails compare whatever their case (SQLite: the column's NOCASE collation).
    sql!(
        db.read(),
        query_as(
            sqlite = "SELECT id, email, password_hash, created_at FROM admins WHERE email = ?",
            pg = "SELECT id, email, password_hash, created_at FROM admins
                   WHERE lower(email) = lower($1)",
        )
        .bind(email)
        .fetch_optional
    )
}

pub async fn list(db: &Db) -> Result<Vec<AdminRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(
            sqlite = "SELECT id, email, password_hash, created_at FROM admins ORDER BY email",
            pg = "SELECT id, email, password_hash, created_at FROM admins ORDER BY lower(email)",
        )
        .fetch_all
    )
}

/// Adds an admin. `only_if_none` makes it the first admin or nothing (first-run setup).
pub async fn create(
    db: &Db,
    email: &str,
    password_hash: &str,
    created_by: Option<i64>,
    only_if_none: bool,
) -> Result<i64, StoreError> {
    let mut tx = begin_write(db).await?;
    if only_if_none {
        let n: i64 = sql!(
            tx.exec(),
            query_scalar("SELECT count(*) FROM admins").fetch_one
        )?;
        if n > 0 {
            return Err(StoreError::Conflict("an admin already exists".into()));
        }
    }
    let id =
        sql!(tx.exec(), query_scalar(
        "INSERT INTO admins (email, password_hash, created_at, created_by) VALUES (?, ?, ?, ?)
         RETURNING id",
    ).bind(email).bind(password_hash).bind(now_ms()).bind(created_by).fetch_one)
        .map_err(|e| match e.as_database_error() {
            Some(d) if d.is_unique_violation() => {
                StoreError::Conflict(format!("an admin with the email {email} already exists"))
            }
            _ => StoreError::Database(e),
        })?;
    tx.commit().await?;
    Ok(id)
}

impl std::fmt::Debug for AdminRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminRow")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("password_hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A signed-in admin, found from their session cookie.
#[derive(Clone, FromRow)]
pub struct SessionRow {
    pub session_id: i64,
    pub admin_id: i64,
    pub email: String,
    pub csrf_token: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for SessionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRow")
            .field("session_id", &self.session_id)
            .field("admin_id", &self.admin_id)
            .field("email", &self.email)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Whether a session is still signed in (not expired, not signed out).
pub async fn session_alive(db: &Db, session_id: i64) -> Result<bool, sqlx::Error> {
    let n: i64 = sql!(
        db.read(),
        query_scalar("SELECT count(*) FROM sessions WHERE id = ? AND expires_at > ?")
            .bind(session_id)
            .bind(now_ms())
            .fetch_one
    )?;
    Ok(n > 0)
}

pub async fn create_session(
    db: &Db,
    admin_id: i64,
    token: &SecretHash,
    csrf_token: &str,
    lifetime_ms: i64,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut tx = begin_write(db).await?;
    sql!(
        tx.exec(),
        query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now)
            .execute
    )?;
    sql!(
        tx.exec(),
        query(
            "INSERT INTO sessions (token_hash, admin_id, csrf_token, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?)",
        )
        .bind(token.as_bytes())
        .bind(admin_id)
        .bind(csrf_token)
        .bind(now)
        .bind(now + lifetime_ms)
        .execute
    )?;
    tx.commit().await?;
    Ok(())
}

pub async fn find_session(db: &Db, token: &SecretHash) -> Result<Option<SessionRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(
            "SELECT s.id AS session_id, s.admin_id, a.email, s.csrf_token, s.expires_at
           FROM sessions s JOIN admins a ON a.id = s.admin_id
          WHERE s.token_hash = ? AND s.expires_at > ?",
        )
        .bind(token.as_bytes())
        .bind(now_ms())
        .fetch_optional
    )
}

pub async fn delete_session(db: &Db, session_id: i64) -> Result<(), sqlx::Error> {
    let mut tx = begin_write(db).await?;
    sql!(
        tx.exec(),
        query("DELETE FROM sessions WHERE id = ?")
            .bind(session_id)
            .execute
    )?;
    tx.commit().await?;
    Ok(())
}

/// Signs an admin out everywhere, or everywhere but `keep` (the session asking); returns
/// how many sessions ended.
pub async fn delete_sessions_of(
    db: &Db,
    admin_id: i64,
    keep: Option<i64>,
) -> Result<u64, StoreError> {
    let mut tx = begin_write(db).await?;
    let exists: i64 = sql!(
        tx.exec(),
        query_scalar("SELECT count(*) FROM admins WHERE id = ?")
            .bind(admin_id)
            .fetch_one
    )?;
    if exists == 0 {
        return Err(StoreError::NotFound("This admin no longer exists.".into()));
    }
    let ended = sql!(
        tx.exec(),
        query(
            sqlite = "DELETE FROM sessions WHERE admin_id = ? AND id IS NOT ?",
            pg = "DELETE FROM sessions WHERE admin_id = $1 AND id IS DISTINCT FROM $2",
        )
        .bind(admin_id)
        .bind(keep)
        .execute
    )?;
    tx.commit().await?;
    Ok(ended)
}

/// How many live sessions each admin has, by admin id.
pub async fn live_sessions(db: &Db) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    sql!(
        db.read(),
        query_as("SELECT admin_id, count(*) FROM sessions WHERE expires_at > ? GROUP BY admin_id")
            .bind(now_ms())
            .fetch_all
    )
}
