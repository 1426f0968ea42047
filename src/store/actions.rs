//! Pre-call actions and the settings and keys of Webhook actions.

use sqlx::FromRow;

use super::{Db, StoreError, begin_write, constraint_of, now_ms};
use crate::auth::keys::{Secret, SecretHash, SecretKind};
use crate::auth::signing::SigningSecret;
use crate::domain::ids::WebhookSlug;

/// Default time a call waits for its webhook before falling back.
pub const DEFAULT_FALLBACK_WAIT_MS: i64 = 2_000;
/// Longest time a call may wait for its webhook.
pub const MAX_FALLBACK_WAIT_MS: i64 = 10_000;
/// Default lifetime of cached webhook data.
pub const DEFAULT_TTL_SECS: i64 = 600;
pub const MIN_TTL_SECS: i64 = 1;
pub const MAX_TTL_SECS: i64 = 7 * 24 * 3600;
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

/// Settings of a new Webhook action.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub name: String,
    pub fallback_wait_ms: i64,
    pub ttl_secs: i64,
}

/// The time wait before fallback must be 0 to 10 s.
pub fn check_fallback_wait(ms: i64) -> Result<(), String> {
    if (0..=MAX_FALLBACK_WAIT_MS).contains(&ms) {
        Ok(())
    } else {
        Err(format!(
            "time wait before fallback must be 0 to {MAX_FALLBACK_WAIT_MS} ms, got {ms}"
        ))
    }
}

/// Data lives from a second to a week.
pub fn check_ttl(secs: i64) -> Result<(), String> {
    if (MIN_TTL_SECS..=MAX_TTL_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(format!(
            "data TTL must be {MIN_TTL_SECS} to {MAX_TTL_SECS} seconds, got {secs}"
        ))
    }
}

impl NewWebhook {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.chars().count() > 100 {
            return Err("the action's name must be 1 to 100 characters".into());
        }
        check_fallback_wait(self.fallback_wait_ms)?;
        check_ttl(self.ttl_secs)
    }
}

/// A Webhook action just made: the key is here for its one showing.
#[derive(Debug)]
pub struct CreatedWebhook {
    pub action_id: i64,
    pub slug: WebhookSlug,
    pub key: Secret,
}

/// Adds a Webhook action at the end of the agent's pre-call actions, with a fresh key.
pub async fn create_webhook(
    db: &Db,
    agent_id: i64,
    new: &NewWebhook,
) -> Result<CreatedWebhook, StoreError> {
    new.validate().map_err(StoreError::Conflict)?;
    let now = now_ms();
    let slug = WebhookSlug::generate();
    let key = Secret::generate(SecretKind::WebhookKey);
    let mut tx = begin_write(db).await?;
    let action_id: i64 = sqlx::query_scalar(
        "INSERT INTO precall_actions (agent_id, position, kind, name, created_at)
         VALUES (?1, (SELECT coalesce(max(position), -1) + 1 FROM precall_actions WHERE agent_id = ?1),
                 'webhook', ?2, ?3)
         RETURNING id",
    )
    .bind(agent_id)
    .bind(new.name.trim())
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(needs_first_flow)?;
    sqlx::query(
        "INSERT INTO webhook_actions (action_id, slug, fallback_wait_ms, ttl_secs) VALUES (?, ?, ?, ?)",
    )
    .bind(action_id)
    .bind(slug.as_str())
    .bind(new.fallback_wait_ms)
    .bind(new.ttl_secs)
    .execute(&mut *tx)
    .await?;
    insert_key(&mut tx, action_id, &key, now).await?;
    tx.commit().await?;
    Ok(CreatedWebhook {
        action_id,
        slug,
        key,
    })
}

async fn insert_key(
    tx: &mut sqlx::SqliteConnection,
    action_id: i64,
    key: &Secret,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_keys (action_id, key_hash, last_chars, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(action_id)
    .bind(key.hash().as_bytes())
    .bind(key.last_chars())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Changes to a Webhook action's settings; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookChanges {
    pub enabled: Option<bool>,
    pub fallback_wait_ms: Option<i64>,
    pub ttl_secs: Option<i64>,
    /// Whether ingest requires signed requests.
    pub signing_required: Option<bool>,
}

/// Changes a Webhook action's settings. Requiring signatures for the first time makes the
/// action's signing secret, returned for its one showing.
pub async fn update_webhook(
    db: &Db,
    action_id: i64,
    changes: &WebhookChanges,
) -> Result<Option<SigningSecret>, StoreError> {
    if let Some(w) = changes.fallback_wait_ms {
        check_fallback_wait(w).map_err(StoreError::Conflict)?;
    }
    if let Some(t) = changes.ttl_secs {
        check_ttl(t).map_err(StoreError::Conflict)?;
    }
    let mut tx = begin_write(db).await?;
    let Some(existing): Option<Option<String>> =
        sqlx::query_scalar("SELECT signing_secret FROM webhook_actions WHERE action_id = ?")
            .bind(action_id)
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Err(StoreError::NotFound(format!(
            "no webhook action {action_id}"
        )));
    };
    let made = (changes.signing_required == Some(true) && existing.is_none())
        .then(SigningSecret::generate);
    sqlx::query(
        "UPDATE webhook_actions SET enabled = coalesce(?, enabled),
                fallback_wait_ms = coalesce(?, fallback_wait_ms), ttl_secs = coalesce(?, ttl_secs),
                signing_required = coalesce(?, signing_required),
                signing_secret = coalesce(?, signing_secret)
          WHERE action_id = ?",
    )
    .bind(changes.enabled)
    .bind(changes.fallback_wait_ms)
    .bind(changes.ttl_secs)
    .bind(changes.signing_required)
    .bind(made.as_ref().map(SigningSecret::expose))
    .bind(action_id)
    .execute(&mut *tx)
    .await?;
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
    let n = sqlx::query("UPDATE webhook_actions SET signing_secret = ? WHERE action_id = ?")
        .bind(secret.expose())
        .bind(action_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
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
    pub agent_id: i64,
    pub agent_public_id: String,
    pub default_region: String,
    pub enabled: bool,
    pub ttl_secs: i64,
    pub signing_secret: Option<String>,
    pub signing_required: bool,
}

impl std::fmt::Debug for IngestTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestTarget")
            .field("action_id", &self.action_id)
            .field("agent_id", &self.agent_id)
            .field("agent_public_id", &self.agent_public_id)
            .field("enabled", &self.enabled)
            .field("ttl_secs", &self.ttl_secs)
            .field("signing_required", &self.signing_required)
            .field("has_signing_secret", &self.signing_secret.is_some())
            .finish_non_exhaustive()
    }
}

pub async fn find_ingest_target(db: &Db, slug: &str) -> Result<Option<IngestTarget>, sqlx::Error> {
    sqlx::query_as(
        "SELECT w.action_id, a.agent_id, g.public_id AS agent_public_id, g.default_region,
                w.enabled, w.ttl_secs, w.signing_secret, w.signing_required
           FROM webhook_actions w
           JOIN precall_actions a ON a.id = w.action_id
           JOIN agents g ON g.id = a.agent_id
          WHERE w.slug = ?",
    )
    .bind(slug)
    .fetch_optional(&db.read)
    .await
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
    let rows: Vec<(Vec<u8>, Option<i64>)> = sqlx::query_as(
        "SELECT key_hash, expires_at FROM webhook_keys
          WHERE action_id = ? AND (expires_at IS NULL OR expires_at > ?)",
    )
    .bind(action_id)
    .bind(now_ms())
    .fetch_all(&db.read)
    .await?;
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
    sqlx::query_as(
        "SELECT id, last_chars, created_at, expires_at FROM webhook_keys
          WHERE action_id = ? AND (expires_at IS NULL OR expires_at > ?)
          ORDER BY expires_at IS NOT NULL, id DESC",
    )
    .bind(action_id)
    .bind(now_ms())
    .fetch_all(&db.read)
    .await
}

/// A Webhook action as the call runtime runs it.
#[derive(Debug, Clone, FromRow)]
pub struct WebhookStep {
    pub action_id: i64,
    pub name: String,
    pub fallback_wait_ms: i64,
    pub enabled: bool,
}

/// The agent's Webhook actions in pre-call order.
pub async fn webhook_steps(db: &Db, agent_id: i64) -> Result<Vec<WebhookStep>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.id AS action_id, a.name, w.fallback_wait_ms, w.enabled
           FROM precall_actions a JOIN webhook_actions w ON w.action_id = a.id
          WHERE a.agent_id = ?
          ORDER BY a.position, a.id",
    )
    .bind(agent_id)
    .fetch_all(&db.read)
    .await
}

/// A pre-call action as the console lists it.
#[derive(Debug, Clone, FromRow)]
pub struct ActionRow {
    pub id: i64,
    pub position: i64,
    pub kind: String,
    pub name: String,
    pub slug: Option<String>,
    pub fallback_wait_ms: Option<i64>,
    pub ttl_secs: Option<i64>,
    pub enabled: Option<bool>,
    /// Last characters of the current key.
    pub key_last_chars: Option<String>,
    pub signing_required: Option<bool>,
    /// Last characters of the signing secret, once there is one.
    pub signing_last_chars: Option<String>,
}

const ACTION_SELECT: &str = "
    SELECT a.id, a.position, a.kind, a.name, w.slug, w.fallback_wait_ms, w.ttl_secs, w.enabled,
           (SELECT k.last_chars FROM webhook_keys k
             WHERE k.action_id = a.id AND k.expires_at IS NULL
             ORDER BY k.id DESC LIMIT 1) AS key_last_chars,
           w.signing_required, substr(w.signing_secret, -4) AS signing_last_chars
      FROM precall_actions a LEFT JOIN webhook_actions w ON w.action_id = a.id";

/// The agent's pre-call actions, in order.
pub async fn list(db: &Db, agent_id: i64) -> Result<Vec<ActionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{ACTION_SELECT} WHERE a.agent_id = ? ORDER BY a.position, a.id"
    ))
    .bind(agent_id)
    .fetch_all(&db.read)
    .await
}

pub async fn find(
    db: &Db,
    agent_id: i64,
    action_id: i64,
) -> Result<Option<ActionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{ACTION_SELECT} WHERE a.agent_id = ? AND a.id = ?"
    ))
    .bind(agent_id)
    .bind(action_id)
    .fetch_optional(&db.read)
    .await
}

/// Swaps an action with its neighbour above (`up`) or below.
pub async fn move_action(
    db: &Db,
    agent_id: i64,
    action_id: i64,
    up: bool,
) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM precall_actions WHERE agent_id = ? ORDER BY position, id",
    )
    .bind(agent_id)
    .fetch_all(&mut *tx)
    .await?;
    let Some(at) = ids.iter().position(|id| *id == action_id) else {
        return Err(StoreError::NotFound("no such action".into()));
    };
    let mut order = ids.clone();
    let other = if up {
        at.checked_sub(1)
    } else {
        Some(at + 1).filter(|o| *o < ids.len())
    };
    if let Some(other) = other {
        order.swap(at, other);
    }
    for (position, id) in order.iter().enumerate() {
        sqlx::query("UPDATE precall_actions SET position = ? WHERE id = ?")
            .bind(position as i64)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes an action; its keys stop working at once.
pub async fn delete(db: &Db, agent_id: i64, action_id: i64) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    let n = sqlx::query("DELETE FROM precall_actions WHERE id = ? AND agent_id = ?")
        .bind(action_id)
        .bind(agent_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::NotFound("no such action".into()));
    }
    tx.commit().await?;
    Ok(())
}

pub async fn rename(db: &Db, agent_id: i64, action_id: i64, name: &str) -> Result<(), StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(StoreError::Conflict(
            "the action's name must be 1 to 100 characters".into(),
        ));
    }
    let mut tx = begin_write(db).await?;
    sqlx::query("UPDATE precall_actions SET name = ? WHERE id = ? AND agent_id = ?")
        .bind(name)
        .bind(action_id)
        .bind(agent_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
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
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT action_id FROM webhook_actions WHERE action_id = ?")
            .bind(action_id)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(StoreError::NotFound(format!(
            "no webhook action {action_id}"
        )));
    }
    sqlx::query(
        "UPDATE webhook_keys SET expires_at = min(coalesce(expires_at, ?1), ?1)
          WHERE action_id = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
    )
    .bind(until)
    .bind(action_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    insert_key(&mut tx, action_id, &key, now).await?;
    tx.commit().await?;
    Ok(key)
}

/// Ends a replaced key's grace period now. The current key is replaced, not revoked, so that
/// a webhook always has a key.
pub async fn revoke_key(db: &Db, action_id: i64, key_id: i64) -> Result<(), StoreError> {
    let now = now_ms();
    let mut tx = begin_write(db).await?;
    let expires: Option<Option<i64>> =
        sqlx::query_scalar("SELECT expires_at FROM webhook_keys WHERE id = ? AND action_id = ?")
            .bind(key_id)
            .bind(action_id)
            .fetch_optional(&mut *tx)
            .await?;
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
    sqlx::query("UPDATE webhook_keys SET expires_at = min(expires_at, ?) WHERE id = ?")
        .bind(now)
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A pre-call action inserted for an agent without a First Flow: say what to do first.
fn needs_first_flow(e: sqlx::Error) -> StoreError {
    match constraint_of(&e).as_deref() {
        Some("precall_actions_need_a_first_flow") => StoreError::Conflict(
            "pre-call actions sit above the First Flow: set a First Flow for this agent first"
                .into(),
        ),
        _ => StoreError::Database(e),
    }
}

const RULE_SELECT: &str = "SELECT id AS action_id, name, kind, config FROM precall_actions";

/// A pre-call Filter or End Call action, as the call runtime runs it.
#[derive(Debug, Clone, FromRow)]
pub struct RuleRow {
    pub action_id: i64,
    pub name: String,
    pub kind: String,
    pub config: String,
}

/// The agent's pre-call actions other than Webhooks, in order.
pub async fn rules(db: &Db, agent_id: i64) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{RULE_SELECT} WHERE agent_id = ? AND kind <> 'webhook' ORDER BY position, id"
    ))
    .bind(agent_id)
    .fetch_all(&db.read)
    .await
}

fn check_rule_name(name: &str) -> Result<&str, StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(StoreError::Conflict(
            "a pre-call action's name must be 1 to 100 characters".into(),
        ));
    }
    Ok(name)
}

/// Appends a pre-call Filter or End Call action; returns its id.
pub async fn create_rule(
    db: &Db,
    agent_id: i64,
    kind: &str,
    name: &str,
    config: &serde_json::Value,
) -> Result<i64, StoreError> {
    let name = check_rule_name(name)?;
    let mut tx = begin_write(db).await?;
    let id = sqlx::query_scalar(
        "INSERT INTO precall_actions (agent_id, position, kind, name, config, created_at)
         VALUES (?1, (SELECT coalesce(max(position), -1) + 1 FROM precall_actions WHERE agent_id = ?1),
                 ?2, ?3, ?4, ?5)
         RETURNING id",
    )
    .bind(agent_id)
    .bind(kind)
    .bind(name)
    .bind(config.to_string())
    .bind(now_ms())
    .fetch_one(&mut *tx)
    .await
    .map_err(needs_first_flow)?;
    tx.commit().await?;
    Ok(id)
}

/// A pre-call Filter or End Call action of the agent.
pub async fn rule(db: &Db, agent_id: i64, action_id: i64) -> Result<Option<RuleRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{RULE_SELECT} WHERE agent_id = ? AND id = ? AND kind <> 'webhook'"
    ))
    .bind(agent_id)
    .bind(action_id)
    .fetch_optional(&db.read)
    .await
}

pub async fn update_rule(
    db: &Db,
    agent_id: i64,
    action_id: i64,
    name: &str,
    config: &serde_json::Value,
) -> Result<(), StoreError> {
    let name = check_rule_name(name)?;
    let mut tx = begin_write(db).await?;
    let n = sqlx::query(
        "UPDATE precall_actions SET name = ?, config = ?
          WHERE id = ? AND agent_id = ? AND kind <> 'webhook'",
    )
    .bind(name)
    .bind(config.to_string())
    .bind(action_id)
    .bind(agent_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(StoreError::NotFound("no such pre-call action".into()));
    }
    tx.commit().await?;
    Ok(())
}
