//! Runtime tokens: bearer tokens with which the call runtime speaks for one agent.

use super::sql::sql;
use super::{Db, StoreError, begin_write, now_ms};
use crate::auth::keys::{Secret, SecretHash, SecretKind};

/// Makes a token for `agent_id`; the returned secret is its one showing.
pub async fn create(db: &Db, agent_id: i64, name: &str) -> Result<Secret, StoreError> {
    create_with_id(db, agent_id, name)
        .await
        .map(|(_, token)| token)
}

/// Makes a token for `agent_id`; returns its id and the secret, for its one showing.
pub async fn create_with_id(
    db: &Db,
    agent_id: i64,
    name: &str,
) -> Result<(i64, Secret), StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 {
        return Err(StoreError::Conflict(
            "a token's name is 1 to 80 characters".into(),
        ));
    }
    let token = Secret::generate(SecretKind::RuntimeToken);
    let mut tx = begin_write(db).await?;
    let id: i64 = sql!(
        tx.exec(),
        query_scalar(
            "INSERT INTO runtime_tokens (agent_id, name, token_hash, last_chars, created_at)
         VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(agent_id)
        .bind(name)
        .bind(token.hash().as_bytes())
        .bind(token.last_chars())
        .bind(now_ms())
        .fetch_one
    )?;
    tx.commit().await?;
    Ok((id, token))
}

/// The agent a presented token speaks for, if it is a live token.
pub async fn agent_for(db: &Db, presented: &str) -> Result<Option<i64>, sqlx::Error> {
    let hash = SecretHash::of(presented);
    let row: Option<(i64, Vec<u8>)> = sql!(db.read(), query_as(
        "SELECT agent_id, token_hash FROM runtime_tokens WHERE token_hash = ? AND revoked_at IS NULL",
    ).bind(hash.as_bytes()).fetch_optional)?;
    // The index finds the row; the comparison that decides is constant-time.
    Ok(row.and_then(|(agent_id, stored)| {
        SecretHash::from_stored(&stored)
            .filter(|s| s.matches(&hash))
            .map(|_| agent_id)
    }))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub last_chars: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub async fn list(db: &Db, agent_id: i64) -> Result<Vec<TokenRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(
            "SELECT id, name, last_chars, created_at, revoked_at FROM runtime_tokens
          WHERE agent_id = ? ORDER BY id DESC",
        )
        .bind(agent_id)
        .fetch_all
    )
}

/// Stops a token from working, at once.
pub async fn revoke(db: &Db, agent_id: i64, token_id: i64) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    let done = sql!(tx.exec(), query(
        "UPDATE runtime_tokens SET revoked_at = ? WHERE id = ? AND agent_id = ? AND revoked_at IS NULL",
    ).bind(now_ms()).bind(token_id).bind(agent_id).execute)?;
    if done == 0 {
        return Err(StoreError::NotFound(
            "this agent has no such token, or it is already revoked".into(),
        ));
    }
    tx.commit().await?;
    Ok(())
}
