//! The first-run setup link of each running server, while no admin exists: kept here so
//! that a link one server printed opens the setup page on any server of a cluster (behind
//! a proxy, the link's request may reach another server than the one that printed it).
//! Only the token's SHA-256 is kept; a server's link ends with its row in `servers`.

use super::sql::sql;
use super::{Db, now_ms};
use crate::auth::keys::SecretHash;

/// Offers the link of server `server_id` (replacing the one it offered before).
pub async fn offer(db: &Db, server_id: i64, token: &SecretHash) -> Result<(), sqlx::Error> {
    sql!(
        db.write(),
        query(
            "INSERT INTO setup_tokens (server_id, token_hash, created_at) VALUES (?, ?, ?)
             ON CONFLICT (server_id) DO UPDATE
                SET token_hash = excluded.token_hash, created_at = excluded.created_at",
        )
        .bind(server_id)
        .bind(token.as_bytes())
        .bind(now_ms())
        .execute
    )?;
    Ok(())
}

/// Whether a running server offered the link with this token.
pub async fn offered(db: &Db, token: &SecretHash) -> Result<bool, sqlx::Error> {
    let n: i64 = sql!(
        db.read(),
        query_scalar("SELECT count(*) FROM setup_tokens WHERE token_hash = ?")
            .bind(token.as_bytes())
            .fetch_one
    )?;
    Ok(n > 0)
}

/// The first admin exists: no link opens the setup page any more.
pub async fn withdraw_all(db: &Db) -> Result<(), sqlx::Error> {
    sql!(db.write(), query("DELETE FROM setup_tokens").execute)?;
    Ok(())
}
