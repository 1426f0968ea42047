//! Console tokens: how the console's own scripts reach the management API without a cookie.
//!
//! The management API takes bearer tokens only (no cookie, no CSRF), so the flow canvas gets
//! one of its own, bound to the admin's session: derived from the session's secret with
//! HMAC-SHA256 (one per session, the same on every page of it, unguessable without the
//! cookie), stored only as a SHA-256, and gone with the session (sign-out, Sign out
//! everywhere, expiry, the admin removed: the row cascades with it). It is never listed
//! with the API tokens admins make, and it is handed to a page only in the canvas's HTML.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::api_tokens::TokenHolder;
use super::sql::sql;
use super::{Db, begin_write, now_ms};
use crate::auth::keys::SecretHash;

/// What a console token starts with.
pub const PREFIX: &str = "pcct_";

/// The console token of the session whose cookie holds `session_secret`.
pub fn derive(session_secret: &str) -> String {
    use base64::Engine;
    let mut mac = Hmac::<Sha256>::new_from_slice(session_secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"precall console token v1");
    let bytes = mac.finalize().into_bytes();
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Records the console token of `session_id` (once; later calls change nothing) and
/// returns it, for the canvas page.
pub async fn issue(db: &Db, session_id: i64, session_secret: &str) -> Result<String, sqlx::Error> {
    let token = derive(session_secret);
    let hash = SecretHash::of(&token);
    let known: Option<i64> = sql!(
        db.read(),
        query_scalar("SELECT session_id FROM console_tokens WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional
    )?;
    if known.is_none() {
        let mut tx = begin_write(db).await?;
        sql!(
            tx.exec(),
            query(
                sqlite = "INSERT OR IGNORE INTO console_tokens (session_id, token_hash, created_at)
             SELECT id, ?, ? FROM sessions WHERE id = ?",
                pg = "INSERT INTO console_tokens (session_id, token_hash, created_at)
             SELECT id, $1, $2 FROM sessions WHERE id = $3 ON CONFLICT DO NOTHING",
            )
            .bind(hash.as_bytes())
            .bind(now_ms())
            .bind(session_id)
            .execute
        )?;
        tx.commit().await?;
    }
    Ok(token)
}

/// Who a presented console token acts for: its session's admin, while the session lasts.
pub async fn holder(db: &Db, presented: &str) -> Result<Option<TokenHolder>, sqlx::Error> {
    let hash = SecretHash::of(presented);
    let row: Option<(i64, i64, String, Vec<u8>)> = sql!(
        db.read(),
        query_as(
            "SELECT s.id, s.admin_id, a.email, c.token_hash
           FROM console_tokens c
           JOIN sessions s ON s.id = c.session_id
           JOIN admins a ON a.id = s.admin_id
          WHERE c.token_hash = ? AND s.expires_at > ?",
        )
        .bind(hash.as_bytes())
        .bind(now_ms())
        .fetch_optional
    )?;
    let Some((session_id, admin_id, admin_email, stored)) = row else {
        return Ok(None);
    };
    if !SecretHash::from_stored(&stored).is_some_and(|s| s.matches(&hash)) {
        return Ok(None);
    }
    Ok(Some(TokenHolder {
        token_id: session_id,
        admin_id,
        admin_email,
        name: "console".into(),
        read_only: false,
        console: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_has_one_console_token_that_its_cookie_alone_gives() {
        let a = derive("pcs_one");
        assert_eq!(a, derive("pcs_one"));
        assert_ne!(a, derive("pcs_two"));
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 43);
        assert!(!a.contains("pcs_one"));
    }
}
