//! Agents, and the First Flow every new agent starts with.

use sqlx::FromRow;

use super::{Db, StoreError, begin_write, now_ms};
use crate::domain::ids::AgentId;
use crate::domain::phone::Region;

/// The message a new agent's greeting says until an admin changes it.
pub const DEFAULT_GREETING: &str = "Hello! Thanks for calling. How can I help you today?";

#[derive(Debug, Clone, FromRow)]
pub struct Agent {
    pub id: i64,
    pub public_id: String,
    pub name: String,
    pub default_region: String,
    pub first_flow_id: Option<i64>,
    pub created_at: i64,
}

impl Agent {
    pub fn region(&self) -> Region {
        Region::parse(&self.default_region).unwrap_or_else(|_| Region::parse("US").unwrap())
    }
}

/// Creates an agent with one flow, set as its First Flow, whose Greeting says hello, so
/// that pre-call actions can be added at once.
pub async fn create(db: &Db, name: &str, region: Region) -> Result<Agent, StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(StoreError::Conflict(
            "an agent's name must be 1 to 100 characters".into(),
        ));
    }
    let now = now_ms();
    let public_id = AgentId::generate();
    let mut tx = begin_write(db).await?;
    let agent: Agent = sqlx::query_as(
        "INSERT INTO agents (public_id, name, default_region, created_at) VALUES (?, ?, ?, ?)
         RETURNING id, public_id, name, default_region, first_flow_id, created_at",
    )
    .bind(public_id.as_str())
    .bind(name)
    .bind(region.code())
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let flow_id: i64 = sqlx::query_scalar(
        "INSERT INTO flows (agent_id, name, created_at) VALUES (?, 'Main flow', ?) RETURNING id",
    )
    .bind(agent.id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE agents SET first_flow_id = ? WHERE id = ?")
        .bind(flow_id)
        .bind(agent.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO blocks (flow_id, position, kind, config) VALUES (?, 0, 'greeting', ?)",
    )
    .bind(flow_id)
    .bind(serde_json::json!({ "message": DEFAULT_GREETING }).to_string())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Agent {
        first_flow_id: Some(flow_id),
        ..agent
    })
}

pub async fn find_by_public_id(db: &Db, public_id: &str) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, public_id, name, default_region, first_flow_id, created_at
           FROM agents WHERE public_id = ?",
    )
    .bind(public_id)
    .fetch_optional(&db.read)
    .await
}

pub async fn list(db: &Db) -> Result<Vec<Agent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, public_id, name, default_region, first_flow_id, created_at
           FROM agents ORDER BY created_at, id",
    )
    .fetch_all(&db.read)
    .await
}

pub async fn rename(db: &Db, agent_id: i64, name: &str) -> Result<(), StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(StoreError::Conflict(
            "an agent's name must be 1 to 100 characters".into(),
        ));
    }
    let mut tx = begin_write(db).await?;
    sqlx::query("UPDATE agents SET name = ? WHERE id = ?")
        .bind(name)
        .bind(agent_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes an agent and everything it owns (flows, actions, keys, data, calls, tokens).
pub async fn delete(db: &Db, agent_id: i64) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    sqlx::query("DELETE FROM agents WHERE id = ?")
        .bind(agent_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
