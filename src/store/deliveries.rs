//! Reading the record of requests that reached an ingest URL.

use sqlx::FromRow;

use super::Db;
use super::sql::sql;

#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub action_id: i64,
    pub received_at: i64,
    pub status: i64,
    pub outcome: String,
    pub phone: Option<String>,
    pub fields: Option<String>,
    pub problems: Option<String>,
    pub body_excerpt: Option<String>,
    pub idempotency_key: Option<String>,
    pub latency_us: i64,
    pub call_id: Option<String>,
}

/// A delivery with what became of it: data in a context a call has claimed was used by that
/// call, data in a context past its expiry expired (both are written into the delivery when
/// the context is swept).
const SELECT: &str = "
    SELECT d.id, d.action_id, d.received_at, d.status,
           CASE WHEN d.outcome IN ('cached', 'late') AND c.call_id IS NOT NULL THEN 'used'
                WHEN d.outcome = 'cached' AND c.expires_at <= ?1 THEN 'expired'
                ELSE d.outcome END AS outcome,
           d.phone, d.fields, d.problems, d.body_excerpt, d.idempotency_key, d.latency_us,
           CASE WHEN d.outcome IN ('cached', 'late') AND c.call_id IS NOT NULL THEN c.call_id
                ELSE d.call_id END AS call_id
      FROM deliveries d LEFT JOIN contexts c ON c.id = d.context_id";

/// The action's most recent deliveries, newest first.
pub async fn recent(db: &Db, action_id: i64, limit: i64) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    older_than(db, action_id, i64::MAX, limit).await
}

/// The action's deliveries recorded before delivery `before_id`, newest first: a page of
/// the history.
pub async fn older_than(
    db: &Db,
    action_id: i64,
    before_id: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(&format!(
            "{SELECT} WHERE d.action_id = ?2 AND d.id < ?4 ORDER BY d.id DESC LIMIT ?3"
        ))
        .bind(super::now_ms())
        .bind(action_id)
        .bind(limit)
        .bind(before_id)
        .fetch_all
    )
}

/// What a live viewer shows next: the newest `limit` of the action's deliveries recorded
/// after `last_id`, oldest first, and how many older ones after `last_id` it leaves out.
///
/// Under a flood a viewer cannot show every request; it keeps up with the newest instead of
/// falling further behind, and says how many it skipped.
pub async fn newest_after(
    db: &Db,
    action_id: i64,
    last_id: i64,
    limit: i64,
) -> Result<(Vec<DeliveryRow>, i64), sqlx::Error> {
    let mut rows: Vec<DeliveryRow> = sql!(
        db.read(),
        query_as(&format!(
            "{SELECT} WHERE d.action_id = ?2 AND d.id > ?3 ORDER BY d.id DESC LIMIT ?4"
        ))
        .bind(super::now_ms())
        .bind(action_id)
        .bind(last_id)
        .bind(limit)
        .fetch_all
    )?;
    rows.reverse();
    let skipped =
        match rows.first() {
            Some(oldest) if rows.len() as i64 == limit => {
                sql!(db.read(), query_scalar(
                "SELECT count(*) FROM deliveries WHERE action_id = ?1 AND id > ?2 AND id < ?3",
            ).bind(action_id).bind(last_id).bind(oldest.id).fetch_one)?
            }
            _ => 0,
        };
    Ok((rows, skipped))
}

/// The most recent deliveries to any of the agent's webhooks, newest first.
pub async fn recent_for_agent(
    db: &Db,
    agent_id: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(&format!(
            "{SELECT} JOIN precall_actions a ON a.id = d.action_id
          WHERE a.agent_id = ?2 ORDER BY d.id DESC LIMIT ?3"
        ))
        .bind(super::now_ms())
        .bind(agent_id)
        .bind(limit)
        .fetch_all
    )
}

impl DeliveryRow {
    /// The delivery as the CLI and API show it.
    pub fn to_json(&self) -> serde_json::Value {
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        };
        serde_json::json!({
            "id": self.id,
            "actionId": self.action_id,
            "receivedAt": super::rfc3339(self.received_at),
            "status": self.status,
            "outcome": self.outcome,
            "phoneNumber": self.phone,
            "fields": parse(&self.fields),
            "problems": parse(&self.problems),
            "bodyExcerpt": self.body_excerpt,
            "idempotencyKey": self.idempotency_key,
            "latencyUs": self.latency_us,
            "callId": self.call_id,
        })
    }
}

/// An agent's deliveries, newest first, at most `limit`: of one webhook endpoint (`action`)
/// and one outcome when given, and only those recorded before the delivery `before` (the
/// last of the previous page).
pub async fn for_agent(
    db: &Db,
    agent_id: i64,
    action: Option<i64>,
    outcome: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(&format!(
            "SELECT * FROM ({SELECT} JOIN precall_actions a ON a.id = d.action_id
                          WHERE a.agent_id = ?2 AND (?4 IS NULL OR d.action_id = ?4)
                            AND d.id < coalesce(?5, 9223372036854775807)
                          ORDER BY d.id DESC) AS page
          WHERE ?6 IS NULL OR outcome = ?6 ORDER BY id DESC LIMIT ?3"
        ))
        .bind(super::now_ms())
        .bind(agent_id)
        .bind(limit)
        .bind(action)
        .bind(before)
        .bind(outcome)
        .fetch_all
    )
}
