//! Admin API tokens: what automation presents to the management API, acting for one admin.

use sqlx::FromRow;

use super::sql::sql;
use super::{Db, StoreError, begin_write, now_ms};
use crate::auth::keys::{Secret, SecretHash, SecretKind};

/// A token as listed: never the token, only its last characters.
#[derive(Debug, Clone, FromRow)]
pub struct ApiTokenRow {
    pub id: i64,
    pub admin_id: i64,
    pub admin_email: String,
    pub name: String,
    pub last_chars: String,
    pub read_only: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Who a presented token acts for.
#[derive(Debug, Clone)]
pub struct TokenHolder {
    pub token_id: i64,
    pub admin_id: i64,
    pub admin_email: String,
    pub name: String,
    pub read_only: bool,
    /// A console token (the canvas's, bound to a session) rather than one an admin made.
    pub console: bool,
}

/// Makes a token for `admin_id`; the returned secret is its one showing.
pub async fn create(
    db: &Db,
    admin_id: i64,
    name: &str,
    read_only: bool,
) -> Result<(i64, Secret), StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 {
        return Err(StoreError::Conflict(
            "a token's name is 1 to 80 characters".into(),
        ));
    }
    let token = Secret::generate(SecretKind::ApiToken);
    let mut tx = begin_write(db).await?;
    let id: i64 = sql!(
        tx.exec(),
        query_scalar(
            "INSERT INTO api_tokens (admin_id, name, token_hash, last_chars, read_only, created_at)
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(admin_id)
        .bind(name)
        .bind(token.hash().as_bytes())
        .bind(token.last_chars())
        .bind(read_only)
        .bind(now_ms())
        .fetch_one
    )?;
    tx.commit().await?;
    Ok((id, token))
}

const SELECT: &str = "SELECT t.id, t.admin_id, a.email AS admin_email, t.name, t.last_chars,
                             t.read_only, t.created_at, t.last_used_at, t.revoked_at
                        FROM api_tokens t JOIN admins a ON a.id = t.admin_id";

/// Every token, newest first; with `admin`, only that admin's.
pub async fn list(db: &Db, admin: Option<i64>) -> Result<Vec<ApiTokenRow>, sqlx::Error> {
    match admin {
        Some(a) => {
            sql!(
                db.read(),
                query_as(&format!("{SELECT} WHERE t.admin_id = ? ORDER BY t.id DESC"))
                    .bind(a)
                    .fetch_all
            )
        }
        None => {
            sql!(
                db.read(),
                query_as(&format!("{SELECT} ORDER BY t.id DESC")).fetch_all
            )
        }
    }
}

/// Revokes a token (of `admin`, when given): it stops working at once.
pub async fn revoke(db: &Db, id: i64, admin: Option<i64>) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    let n = sql!(
        tx.exec(),
        query(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?)
          WHERE id = ? AND (? IS NULL OR admin_id = ?)",
        )
        .bind(now_ms())
        .bind(id)
        .bind(admin)
        .bind(admin)
        .execute
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("no API token {id}")));
    }
    tx.commit().await?;
    Ok(())
}

/// Who a presented token acts for, if it is a live token; notes when it was used (at most
/// once a minute, so that reading with it does not write each time).
pub async fn holder(db: &Db, presented: &str) -> Result<Option<TokenHolder>, sqlx::Error> {
    let hash = SecretHash::of(presented);
    type Row = (i64, i64, String, String, bool, Vec<u8>, Option<i64>);
    let row: Option<Row> =
        sql!(db.read(), query_as(
        "SELECT t.id, t.admin_id, a.email, t.name, t.read_only, t.token_hash, t.last_used_at
           FROM api_tokens t JOIN admins a ON a.id = t.admin_id
          WHERE t.token_hash = ? AND t.revoked_at IS NULL",
    ).bind(hash.as_bytes()).fetch_optional)?;
    // The index finds the row; the comparison that decides is constant-time.
    let Some((token_id, admin_id, admin_email, name, read_only, stored, last_used)) = row else {
        return Ok(None);
    };
    if !SecretHash::from_stored(&stored).is_some_and(|s| s.matches(&hash)) {
        return Ok(None);
    }
    let now = now_ms();
    if last_used.is_none_or(|t| now - t > 60_000) {
        let mut tx = begin_write(db).await?;
        sql!(
            tx.exec(),
            query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
                .bind(now)
                .bind(token_id)
                .execute
        )?;
        tx.commit().await?;
    }
    Ok(Some(TokenHolder {
        token_id,
        admin_id,
        admin_email,
        name,
        read_only,
        console: false,
    }))
}
