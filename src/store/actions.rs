//! The endpoints of Webhook actions: their URL slugs, API keys and signing secrets, which
//! belong to the server and never to an agent's documents.

use sqlx::FromRow;

use super::sql::sql;
use super::{Db, StoreError, Tx, begin_write, now_ms};
use crate::auth::keys::{Secret, SecretHash, SecretKind};
use crate::auth::signing::SigningSecret;

/// Longest time a replaced API key may keep working.
pub const MAX_KEY_GRACE_SECS: i64 = 7 * 24 * 3600;

/// A replaced key keeps working from nothing to a week.
pub fn check_key_grace(secs: i64) -> Result<(), String> {
    if (0..=MAX_KEY_GRACE_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(format!(
            "the old key's grace period must be 0 to {MAX_KEY_GRACE_SECS} seconds (7 days), got {secs}"
        ))
    }
}

async fn insert_key(
    tx: &mut Tx,
    action_id: i64,
    key: &Secret,
    now: i64,
) -> Result<(), sqlx::Error> {
    sql!(tx.exec(), query(
        "INSERT INTO webhook_keys (action_id, key_hash, last_chars, created_at) VALUES (?, ?, ?, ?)",
    ).bind(action_id).bind(key.hash().as_bytes()).bind(key.last_chars()).bind(now).execute)?;
    Ok(())
}

/// Turns on or off the requirement that requests be signed. Turned on for the first time,
/// it makes the endpoint's signing secret, returned for its one showing.
pub async fn set_signing(
    db: &Db,
    action_id: i64,
    required: bool,
) -> Result<Option<SigningSecret>, StoreError> {
    let mut tx = begin_write(db).await?;
    let Some(existing): Option<Option<String>> = sql!(
        tx.exec(),
        query_scalar("SELECT signing_secret FROM webhook_actions WHERE action_id = ?")
            .bind(action_id)
            .fetch_optional
    )?
    else {
        return Err(StoreError::NotFound("no such webhook".into()));
    };
    let made = (required && existing.is_none()).then(SigningSecret::generate);
    sql!(
        tx.exec(),
        query(
            "UPDATE webhook_actions SET signing_required = ?,
                signing_secret = coalesce(?, signing_secret)
          WHERE action_id = ?",
        )
        .bind(required)
        .bind(made.as_ref().map(SigningSecret::expose))
        .bind(action_id)
        .execute
    )?;
    tx.commit().await?;
    Ok(made)
}

/// Makes a new signing secret for a Webhook action; the old one stops working at once.
pub async fn regenerate_signing_secret(
    db: &Db,
    action_id: i64,
) -> Result<SigningSecret, StoreError> {
    let secret = SigningSecret::generate();
    let mut tx = begin_write(db).await?;
    let n = sql!(
        tx.exec(),
        query("UPDATE webhook_actions SET signing_secret = ? WHERE action_id = ?")
            .bind(secret.expose())
            .bind(action_id)
            .execute
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!(
            "no webhook action {action_id}"
        )));
    }
    tx.commit().await?;
    Ok(secret)
}

/// What the ingest endpoint needs to know about a webhook URL. Its `Debug` leaves out the
/// signing secret.
#[derive(Clone, FromRow)]
pub struct IngestTarget {
    pub action_id: i64,
    pub action_key: String,
    pub agent_id: i64,
    pub agent_public_id: String,
    pub default_region: String,
    pub signing_secret: Option<String>,
    pub signing_required: bool,
}

impl std::fmt::Debug for IngestTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestTarget")
            .field("action_id", &self.action_id)
            .field("agent_id", &self.agent_id)
            .field("action_key", &self.action_key)
            .field("agent_public_id", &self.agent_public_id)
            .field("signing_required", &self.signing_required)
            .field("has_signing_secret", &self.signing_secret.is_some())
            .finish_non_exhaustive()
    }
}

pub async fn find_ingest_target(db: &Db, slug: &str) -> Result<Option<IngestTarget>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(
            "SELECT w.action_id, a.key AS action_key, a.agent_id, g.public_id AS agent_public_id,
                g.default_region, w.signing_secret, w.signing_required
           FROM webhook_actions w
           JOIN precall_actions a ON a.id = w.action_id
           JOIN agents g ON g.id = a.agent_id
          WHERE w.slug = ? AND a.key IS NOT NULL",
        )
        .bind(slug)
        .fetch_optional
    )
}

/// A key that opens a webhook: the current one (no expiry) or a replaced one in its grace
/// period. Whoever caches it checks `expires_at` on every request.
#[derive(Debug, Clone, Copy)]
pub struct ActiveKey {
    pub hash: SecretHash,
    pub expires_at: Option<i64>,
}

impl ActiveKey {
    /// Whether the key opens its webhook at `now` (Unix ms).
    pub fn valid_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }
}

/// The keys that open this webhook now (the current one and any in their grace period).
pub async fn active_keys(db: &Db, action_id: i64) -> Result<Vec<ActiveKey>, sqlx::Error> {
    let rows: Vec<(Vec<u8>, Option<i64>)> = sql!(
        db.read(),
        query_as(
            "SELECT key_hash, expires_at FROM webhook_keys
          WHERE action_id = ? AND (expires_at IS NULL OR expires_at > ?)",
        )
        .bind(action_id)
        .bind(now_ms())
        .fetch_all
    )?;
    Ok(rows
        .iter()
        .filter_map(|(b, expires_at)| {
            SecretHash::from_stored(b).map(|hash| ActiveKey {
                hash,
                expires_at: *expires_at,
            })
        })
        .collect())
}

/// A key of a webhook as the console lists it: never the key, only its last characters.
#[derive(Debug, Clone, FromRow)]
pub struct KeyRow {
    pub id: i64,
    pub last_chars: String,
    pub created_at: i64,
    /// `None` for the current key.
    pub expires_at: Option<i64>,
}

/// The keys that open this webhook now, the current one first.
pub async fn valid_keys(db: &Db, action_id: i64) -> Result<Vec<KeyRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(
            "SELECT id, last_chars, created_at, expires_at FROM webhook_keys
          WHERE action_id = ? AND (expires_at IS NULL OR expires_at > ?)
          ORDER BY expires_at IS NOT NULL, id DESC",
        )
        .bind(action_id)
        .bind(now_ms())
        .fetch_all
    )
}

/// A Webhook action's endpoint as the console shows it: never a secret, only the last
/// characters of its current key and signing secret.
#[derive(Debug, Clone, FromRow)]
pub struct EndpointRow {
    pub id: i64,
    pub key: String,
    pub slug: String,
    /// Last characters of the current key.
    pub key_last_chars: Option<String>,
    pub signing_required: bool,
    /// Last characters of the signing secret, once there is one.
    pub signing_last_chars: Option<String>,
}

/// The endpoint of the agent's Webhook action `key`.
pub async fn endpoint(
    db: &Db,
    agent_id: i64,
    key: &str,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(
            sqlite = "SELECT a.id, a.key, w.slug,
                (SELECT k.last_chars FROM webhook_keys k
                  WHERE k.action_id = a.id AND k.expires_at IS NULL
                  ORDER BY k.id DESC LIMIT 1) AS key_last_chars,
                w.signing_required, substr(w.signing_secret, -4) AS signing_last_chars
           FROM precall_actions a JOIN webhook_actions w ON w.action_id = a.id
          WHERE a.agent_id = ? AND a.key = ?",
            pg = "SELECT a.id, a.key, w.slug,
                (SELECT k.last_chars FROM webhook_keys k
                  WHERE k.action_id = a.id AND k.expires_at IS NULL
                  ORDER BY k.id DESC LIMIT 1) AS key_last_chars,
                w.signing_required, right(w.signing_secret, 4) AS signing_last_chars
           FROM precall_actions a JOIN webhook_actions w ON w.action_id = a.id
          WHERE a.agent_id = $1 AND a.key = $2",
        )
        .bind(agent_id)
        .bind(key)
        .fetch_optional
    )
}

/// Makes a new key for a Webhook action. The keys that worked until now keep working for
/// `grace_secs` more (0: they stop at once); a grace never extends an earlier one.
pub async fn regenerate_key(
    db: &Db,
    action_id: i64,
    grace_secs: i64,
) -> Result<Secret, StoreError> {
    check_key_grace(grace_secs).map_err(StoreError::Conflict)?;
    let key = Secret::generate(SecretKind::WebhookKey);
    let now = now_ms();
    let until = now + grace_secs * 1000;
    let mut tx = begin_write(db).await?;
    let exists: Option<i64> = sql!(
        tx.exec(),
        query_scalar("SELECT action_id FROM webhook_actions WHERE action_id = ?")
            .bind(action_id)
            .fetch_optional
    )?;
    if exists.is_none() {
        return Err(StoreError::NotFound(format!(
            "no webhook action {action_id}"
        )));
    }
    sql!(
        tx.exec(),
        query(
            sqlite = "UPDATE webhook_keys SET expires_at = min(coalesce(expires_at, ?1), ?1)
          WHERE action_id = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
            pg = "UPDATE webhook_keys SET expires_at = least(coalesce(expires_at, $1), $1)
          WHERE action_id = $2 AND (expires_at IS NULL OR expires_at > $3)",
        )
        .bind(until)
        .bind(action_id)
        .bind(now)
        .execute
    )?;
    insert_key(&mut tx, action_id, &key, now).await?;
    tx.commit().await?;
    Ok(key)
}

/// Ends a replaced key's grace period now. The current key is replaced, not revoked, so that
/// a webhook always has a key.
pub async fn revoke_key(db: &Db, action_id: i64, key_id: i64) -> Result<(), StoreError> {
    let now = now_ms();
    let mut tx = begin_write(db).await?;
    let expires: Option<Option<i64>> = sql!(
        tx.exec(),
        query_scalar("SELECT expires_at FROM webhook_keys WHERE id = ? AND action_id = ?")
            .bind(key_id)
            .bind(action_id)
            .fetch_optional
    )?;
    match expires {
        None => return Err(StoreError::NotFound("no such key for this webhook".into())),
        Some(None) => {
            return Err(StoreError::Conflict(
                "the current key cannot be revoked: regenerate it (with no grace period) instead"
                    .into(),
            ));
        }
        Some(Some(_)) => {}
    }
    sql!(
        tx.exec(),
        query(
            sqlite = "UPDATE webhook_keys SET expires_at = min(expires_at, ?) WHERE id = ?",
            pg = "UPDATE webhook_keys SET expires_at = least(expires_at, $1) WHERE id = $2",
        )
        .bind(now)
        .bind(key_id)
        .execute
    )?;
    tx.commit().await?;
    Ok(())
}
