//! Reading cached webhook data for a caller. Writes go through the writer.

use serde_json::{Map, Value};

use super::Db;
use super::sql::sql;

/// Unused, unexpired data for one caller on one Webhook action.
#[derive(Debug, Clone)]
pub struct LiveContext {
    pub id: i64,
    pub fields: Map<String, Value>,
    /// The fields as stored, so that claiming can tell whether they changed since.
    pub raw: String,
    pub received_at: i64,
}

pub async fn find_live(
    db: &Db,
    action_id: i64,
    phone: &str,
    now: i64,
) -> Result<Option<LiveContext>, sqlx::Error> {
    let row: Option<(i64, String, i64)> = sql!(
        db.read(),
        query_as(
            "SELECT id, fields, received_at FROM contexts
          WHERE action_id = ? AND phone = ? AND call_id IS NULL AND expires_at > ?",
        )
        .bind(action_id)
        .bind(phone)
        .bind(now)
        .fetch_optional
    )?;
    Ok(row.map(|(id, raw, received_at)| LiveContext {
        id,
        fields: serde_json::from_str(&raw).unwrap_or_default(),
        raw,
        received_at,
    }))
}

/// How many contexts exist for a caller, used or not (for tests and diagnostics).
pub async fn count_for_phone(db: &Db, phone: &str) -> Result<i64, sqlx::Error> {
    sql!(
        db.read(),
        query_scalar("SELECT count(*) FROM contexts WHERE phone = ?")
            .bind(phone)
            .fetch_one
    )
}
