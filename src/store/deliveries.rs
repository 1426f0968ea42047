//! Reading the record of requests that reached an ingest URL.

use sqlx::FromRow;

use super::Db;

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

/// The action's most recent deliveries, newest first.
pub async fn recent(db: &Db, action_id: i64, limit: i64) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, action_id, received_at, status, outcome, phone, fields, problems, body_excerpt,
                idempotency_key, latency_us, call_id
           FROM deliveries WHERE action_id = ? ORDER BY id DESC LIMIT ?",
    )
    .bind(action_id)
    .bind(limit)
    .fetch_all(&db.read)
    .await
}

/// The most recent deliveries to any of the agent's webhooks, newest first.
pub async fn recent_for_agent(
    db: &Db,
    agent_id: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, d.action_id, d.received_at, d.status, d.outcome, d.phone, d.fields, d.problems,
                d.body_excerpt, d.idempotency_key, d.latency_us, d.call_id
           FROM deliveries d JOIN precall_actions a ON a.id = d.action_id
          WHERE a.agent_id = ? ORDER BY d.id DESC LIMIT ?",
    )
    .bind(agent_id)
    .bind(limit)
    .fetch_all(&db.read)
    .await
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
