//! Voice platforms' connections: their URL slug, the platform's verification secret (as
//! HMAC needs it, as a hash, or a public key) and the flow → platform-agent mapping.

use sqlx::FromRow;

use super::sql::sql;
use super::{Db, StoreError, begin_write, now_ms};
use crate::auth::keys::SecretHash;
use crate::connect::verify::{self, Verifier};
use crate::connect::{Mapping, Platform};
use crate::domain::ids::random_base62;

/// How a connection's requests are verified, and with what.
pub enum SecretInput {
    /// Kept as it is (HMAC needs it) or, for a public key, because it is none.
    Kept(String),
    /// Compared only: its hash is kept.
    Hashed(String),
}

impl std::fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretInput(…)")
    }
}

/// Checks a platform's secret and says how it is kept: Vapi's `scheme` is `secret` (sent as
/// is: hashed) or `hmac`; every other platform has one scheme.
pub fn secret_for(
    platform: Platform,
    scheme: Option<&str>,
    secret: &str,
) -> Result<(SecretInput, &'static str), String> {
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(format!("give the {}", platform.secret_word()));
    }
    if secret.len() > 1000 {
        return Err("the secret is over 1000 characters".into());
    }
    if platform != Platform::Vapi && scheme.is_some_and(|s| !s.is_empty()) {
        return Err(format!("{} has one scheme: leave it out", platform.label()));
    }
    Ok(match platform {
        Platform::Telnyx => {
            verify::telnyx_key(secret)?;
            (SecretInput::Kept(secret.to_owned()), "public_key")
        }
        Platform::Vapi => match scheme.unwrap_or("secret") {
            "secret" => (SecretInput::Hashed(secret.to_owned()), "hash"),
            "hmac" => (SecretInput::Kept(secret.to_owned()), "hmac"),
            other => {
                return Err(format!(
                    "Vapi's scheme is secret (X-Vapi-Secret) or hmac, not {other:?}"
                ));
            }
        },
        _ => (SecretInput::Kept(secret.to_owned()), "hmac"),
    })
}

/// A connection's row. Its `Debug` leaves out the secret.
#[derive(Clone, FromRow)]
pub struct ConnectionRow {
    pub id: i64,
    pub agent_id: i64,
    pub agent_public_id: String,
    pub platform: String,
    pub name: String,
    pub slug: String,
    pub secret_kind: String,
    pub secret: Option<String>,
    pub secret_hash: Option<Vec<u8>>,
    pub secret_last_chars: String,
    pub mapping: String,
    pub deadline_ms: i64,
    pub created_at: i64,
}

impl std::fmt::Debug for ConnectionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionRow")
            .field("id", &self.id)
            .field("platform", &self.platform)
            .field("slug", &self.slug)
            .finish_non_exhaustive()
    }
}

impl ConnectionRow {
    pub fn platform(&self) -> Platform {
        Platform::parse(&self.platform).unwrap_or(Platform::Retell)
    }

    pub fn mapping(&self) -> Mapping {
        serde_json::from_str(&self.mapping).unwrap_or_default()
    }

    /// Vapi's scheme as the API names it (`secret` or `hmac`); none for other platforms.
    pub fn scheme(&self) -> Option<&'static str> {
        (self.platform() == Platform::Vapi).then_some(if self.secret_kind == "hash" {
            "secret"
        } else {
            "hmac"
        })
    }

    /// What its requests are checked with.
    pub fn verifier(&self) -> Result<Verifier, String> {
        let kept = || self.secret.clone().ok_or("no secret kept".to_owned());
        Ok(match (self.platform(), self.secret_kind.as_str()) {
            (Platform::Retell, _) => Verifier::Retell { api_key: kept()? },
            (Platform::Synthflow, _) => Verifier::Synthflow { secret: kept()? },
            (Platform::Vapi, "hash") => Verifier::VapiSecret {
                hash: self
                    .secret_hash
                    .as_deref()
                    .and_then(SecretHash::from_stored)
                    .ok_or("no secret hash kept")?,
            },
            (Platform::Vapi, _) => Verifier::VapiHmac { secret: kept()? },
            (Platform::Telnyx, _) => Verifier::Telnyx {
                key: verify::telnyx_key(&kept()?)?,
            },
            (Platform::Twilio, _) => Verifier::Twilio {
                auth_token: kept()?,
            },
        })
    }
}

const SELECT: &str = "SELECT c.id, c.agent_id, g.public_id AS agent_public_id, c.platform, c.name,
        c.slug, c.secret_kind, c.secret, c.secret_hash, c.secret_last_chars, c.mapping,
        c.deadline_ms, c.created_at
   FROM connections c JOIN agents g ON g.id = c.agent_id";

/// The last characters of a secret, to tell secrets apart later.
fn last_chars(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return String::new();
    }
    chars[chars.len() - 4..].iter().collect()
}

/// What a new connection is made of.
pub struct NewConnection {
    pub agent_id: i64,
    pub platform: Platform,
    pub name: String,
    pub secret: SecretInput,
    pub secret_kind: &'static str,
    pub mapping: Mapping,
    pub deadline_ms: i64,
}

/// Makes a connection with an unguessable slug (22 base62 characters, ~131 bits).
pub async fn create(db: &Db, c: NewConnection) -> Result<ConnectionRow, StoreError> {
    let slug = random_base62(22);
    let (secret, hash, shown) = match &c.secret {
        SecretInput::Kept(s) => (Some(s.clone()), None, last_chars(s)),
        SecretInput::Hashed(s) => (
            None,
            Some(SecretHash::of(s).as_bytes().to_vec()),
            last_chars(s),
        ),
    };
    let mut tx = begin_write(db).await?;
    let id: i64 = sql!(tx.exec(), query_scalar(
        "INSERT INTO connections (agent_id, platform, name, slug, secret_kind, secret, secret_hash,
                                  secret_last_chars, mapping, deadline_ms, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    ).bind(c.agent_id).bind(c.platform.as_str()).bind(&c.name).bind(&slug).bind(c.secret_kind).bind(secret).bind(hash).bind(shown).bind(serde_json::to_string(&c.mapping).expect("mapping serialises")).bind(c.deadline_ms).bind(now_ms()).fetch_one)?;
    tx.commit().await?;
    find(db, id)
        .await?
        .ok_or_else(|| StoreError::NotFound("the connection just made is gone".into()))
}

pub async fn find(db: &Db, id: i64) -> Result<Option<ConnectionRow>, sqlx::Error> {
    sql!(
        db.write(),
        query_as(&format!("{SELECT} WHERE c.id = ?"))
            .bind(id)
            .fetch_optional
    )
}

pub async fn by_slug(db: &Db, slug: &str) -> Result<Option<ConnectionRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(&format!("{SELECT} WHERE c.slug = ?"))
            .bind(slug)
            .fetch_optional
    )
}

/// An agent's connections, oldest first.
pub async fn of_agent(db: &Db, agent_id: i64) -> Result<Vec<ConnectionRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(&format!("{SELECT} WHERE c.agent_id = ? ORDER BY c.id"))
            .bind(agent_id)
            .fetch_all
    )
}

/// Every connection, by agent, oldest first.
pub async fn all(db: &Db) -> Result<Vec<ConnectionRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(&format!("{SELECT} ORDER BY c.agent_id, c.id")).fetch_all
    )
}

/// What a change of a connection sets (`None`: unchanged).
#[derive(Default)]
pub struct Change {
    pub name: Option<String>,
    pub secret: Option<(SecretInput, &'static str)>,
    pub mapping: Option<Mapping>,
    pub deadline_ms: Option<i64>,
}

/// Changes a connection of the agent; its URL stays.
pub async fn update(db: &Db, agent_id: i64, id: i64, c: Change) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    let n = sql!(tx.exec(), query("UPDATE connections SET name = coalesce(?, name), mapping = coalesce(?, mapping), deadline_ms = coalesce(?, deadline_ms) WHERE id = ? AND agent_id = ?").bind(c.name).bind(c.mapping.map(|m| serde_json::to_string(&m).expect("mapping serialises"))).bind(c.deadline_ms).bind(id).bind(agent_id).execute)?;
    if n == 0 {
        return Err(StoreError::NotFound(
            "no such connection for this agent".into(),
        ));
    }
    if let Some((secret, kind)) = c.secret {
        let (kept, hash, shown) = match &secret {
            SecretInput::Kept(s) => (Some(s.clone()), None, last_chars(s)),
            SecretInput::Hashed(s) => (
                None,
                Some(SecretHash::of(s).as_bytes().to_vec()),
                last_chars(s),
            ),
        };
        sql!(tx.exec(), query("UPDATE connections SET secret_kind = ?, secret = ?, secret_hash = ?, secret_last_chars = ? WHERE id = ?").bind(kind).bind(kept).bind(hash).bind(shown).bind(id).execute)?;
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes a connection of the agent: its URL stops answering at once.
pub async fn delete(db: &Db, agent_id: i64, id: i64) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    let n = sql!(
        tx.exec(),
        query("DELETE FROM connections WHERE id = ? AND agent_id = ?")
            .bind(id)
            .bind(agent_id)
            .execute
    )?;
    tx.commit().await?;
    if n == 0 {
        return Err(StoreError::NotFound(
            "no such connection for this agent".into(),
        ));
    }
    Ok(())
}

/// Deletes a connection by id, whatever its agent (the command line).
pub async fn delete_any(db: &Db, id: i64) -> Result<(), StoreError> {
    let agent: Option<i64> = sql!(
        db.write(),
        query_scalar("SELECT agent_id FROM connections WHERE id = ?")
            .bind(id)
            .fetch_optional
    )?;
    match agent {
        Some(a) => delete(db, a, id).await,
        None => Err(StoreError::NotFound(format!("no connection {id}"))),
    }
}
