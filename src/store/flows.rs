//! Flows and their blocks.

use serde_json::Value;
use sqlx::FromRow;

use super::{Db, StoreError, begin_write, now_ms};

#[derive(Debug, Clone, FromRow)]
pub struct FlowRow {
    pub id: i64,
    pub name: String,
    pub is_first: bool,
    pub blocks: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct BlockRow {
    pub id: i64,
    pub position: i64,
    pub kind: String,
    pub config: String,
}

impl BlockRow {
    pub fn config(&self) -> Value {
        serde_json::from_str(&self.config).unwrap_or(Value::Object(Default::default()))
    }
}

fn check_name(name: &str) -> Result<&str, StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(StoreError::Conflict(
            "a flow's name must be 1 to 100 characters".into(),
        ));
    }
    Ok(name)
}

fn unique_name(e: sqlx::Error, name: &str) -> StoreError {
    match super::constraint_of(&e) {
        Some(m) if m.contains("UNIQUE") => {
            StoreError::Conflict(format!("this agent already has a flow named {name:?}"))
        }
        _ => StoreError::Database(e),
    }
}

pub async fn list(db: &Db, agent_id: i64) -> Result<Vec<FlowRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT f.id, f.name, (a.first_flow_id = f.id) AS is_first,
                (SELECT count(*) FROM blocks b WHERE b.flow_id = f.id) AS blocks
           FROM flows f JOIN agents a ON a.id = f.agent_id
          WHERE f.agent_id = ? ORDER BY (a.first_flow_id = f.id) DESC, f.name",
    )
    .bind(agent_id)
    .fetch_all(&db.read)
    .await
}

pub async fn find(db: &Db, agent_id: i64, flow_id: i64) -> Result<Option<FlowRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT f.id, f.name, (a.first_flow_id = f.id) AS is_first,
                (SELECT count(*) FROM blocks b WHERE b.flow_id = f.id) AS blocks
           FROM flows f JOIN agents a ON a.id = f.agent_id
          WHERE f.agent_id = ? AND f.id = ?",
    )
    .bind(agent_id)
    .bind(flow_id)
    .fetch_optional(&db.read)
    .await
}

/// A new flow, entered at its Start block.
pub async fn create(db: &Db, agent_id: i64, name: &str) -> Result<i64, StoreError> {
    let name = check_name(name)?;
    let mut tx = begin_write(db).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO flows (agent_id, name, created_at) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(agent_id)
    .bind(name)
    .bind(now_ms())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| unique_name(e, name))?;
    sqlx::query("INSERT INTO blocks (flow_id, position, kind, config) VALUES (?, 0, 'start', ?)")
        .bind(id)
        .bind(serde_json::json!({ "message": "" }).to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn rename(db: &Db, agent_id: i64, flow_id: i64, name: &str) -> Result<(), StoreError> {
    let name = check_name(name)?;
    let mut tx = begin_write(db).await?;
    let done = sqlx::query("UPDATE flows SET name = ? WHERE id = ? AND agent_id = ?")
        .bind(name)
        .bind(flow_id)
        .bind(agent_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_name(e, name))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("this agent has no such flow".into()));
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes a flow that is not the First Flow.
pub async fn delete(db: &Db, agent_id: i64, flow_id: i64) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    let first: Option<i64> = sqlx::query_scalar("SELECT first_flow_id FROM agents WHERE id = ?")
        .bind(agent_id)
        .fetch_one(&mut *tx)
        .await?;
    if first == Some(flow_id) {
        return Err(StoreError::Conflict(
            "this is the First Flow: set another flow as First Flow before deleting it".into(),
        ));
    }
    let done = sqlx::query("DELETE FROM flows WHERE id = ? AND agent_id = ?")
        .bind(flow_id)
        .bind(agent_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("this agent has no such flow".into()));
    }
    tx.commit().await?;
    Ok(())
}

/// Makes `flow_id` the agent's First Flow: its Start becomes the Greeting, and the previous
/// First Flow's Greeting becomes a Start.
pub async fn set_first(db: &Db, agent_id: i64, flow_id: i64) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    let previous: Option<i64> = sqlx::query_scalar("SELECT first_flow_id FROM agents WHERE id = ?")
        .bind(agent_id)
        .fetch_one(&mut *tx)
        .await?;
    let owned: Option<i64> =
        sqlx::query_scalar("SELECT id FROM flows WHERE id = ? AND agent_id = ?")
            .bind(flow_id)
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?;
    if owned.is_none() {
        return Err(StoreError::NotFound("no such flow".into()));
    }
    sqlx::query("UPDATE agents SET first_flow_id = ? WHERE id = ?")
        .bind(flow_id)
        .bind(agent_id)
        .execute(&mut *tx)
        .await?;
    if let Some(previous) = previous.filter(|p| *p != flow_id) {
        sqlx::query("UPDATE blocks SET kind = 'start' WHERE flow_id = ? AND kind = 'greeting'")
            .bind(previous)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE blocks SET kind = 'greeting' WHERE flow_id = ? AND kind = 'start'")
        .bind(flow_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn blocks(db: &Db, flow_id: i64) -> Result<Vec<BlockRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, position, kind, config FROM blocks WHERE flow_id = ? ORDER BY position, id",
    )
    .bind(flow_id)
    .fetch_all(&db.read)
    .await
}

/// Appends a block; returns its id.
pub async fn add_block(
    db: &Db,
    flow_id: i64,
    kind: &str,
    config: &Value,
) -> Result<i64, StoreError> {
    let mut tx = begin_write(db).await?;
    let id = sqlx::query_scalar(
        "INSERT INTO blocks (flow_id, position, kind, config)
         VALUES (?1, (SELECT coalesce(max(position), -1) + 1 FROM blocks WHERE flow_id = ?1), ?2, ?3)
         RETURNING id",
    )
    .bind(flow_id)
    .bind(kind)
    .bind(config.to_string())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn update_block(
    db: &Db,
    flow_id: i64,
    block_id: i64,
    config: &Value,
) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    let n = sqlx::query("UPDATE blocks SET config = ? WHERE id = ? AND flow_id = ?")
        .bind(config.to_string())
        .bind(block_id)
        .bind(flow_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::NotFound("no such block".into()));
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes a block other than the flow's entry; connections to it are cleared.
pub async fn delete_block(db: &Db, flow_id: i64, block_id: i64) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    let kind: Option<String> =
        sqlx::query_scalar("SELECT kind FROM blocks WHERE id = ? AND flow_id = ?")
            .bind(block_id)
            .bind(flow_id)
            .fetch_optional(&mut *tx)
            .await?;
    match kind.as_deref() {
        None => return Err(StoreError::NotFound("no such block".into())),
        Some("greeting" | "start") => {
            return Err(StoreError::Conflict(
                "a flow's entry block cannot be deleted".into(),
            ));
        }
        _ => {}
    }
    sqlx::query("DELETE FROM blocks WHERE id = ?")
        .bind(block_id)
        .execute(&mut *tx)
        .await?;
    // Outputs that led to it now lead nowhere (the flow ends there) rather than to a block
    // that is gone.
    let others: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, config FROM blocks WHERE flow_id = ?")
            .bind(flow_id)
            .fetch_all(&mut *tx)
            .await?;
    for (id, config) in others {
        let Ok(mut config) = serde_json::from_str::<Value>(&config) else {
            continue;
        };
        if disconnect(&mut config, block_id) {
            sqlx::query("UPDATE blocks SET config = ? WHERE id = ?")
                .bind(config.to_string())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Clears every output of a block's settings that leads to `target`; whether any did.
fn disconnect(config: &mut Value, target: i64) -> bool {
    let mut changed = false;
    let mut clear = |v: Option<&mut Value>| {
        if let Some(v) = v.filter(|v| v.as_i64() == Some(target)) {
            *v = Value::Null;
            changed = true;
        }
    };
    clear(config.get_mut("next"));
    clear(config.get_mut("else"));
    if let Some(cases) = config.get_mut("cases").and_then(Value::as_array_mut) {
        for case in cases {
            clear(case.get_mut("next"));
        }
    }
    changed
}

/// One block of an agent's flows, with its flow, for compiling the agent's program.
#[derive(Debug, Clone, FromRow)]
pub struct AgentBlockRow {
    pub flow_id: i64,
    pub flow_name: String,
    pub block_id: Option<i64>,
    pub kind: Option<String>,
    pub config: Option<String>,
}

/// Every flow of the agent with its blocks, flow by flow in position order (a flow without
/// blocks appears once with no block).
pub async fn agent_blocks(db: &Db, agent_id: i64) -> Result<Vec<AgentBlockRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT f.id AS flow_id, f.name AS flow_name, b.id AS block_id, b.kind, b.config
           FROM flows f LEFT JOIN blocks b ON b.flow_id = f.id
          WHERE f.agent_id = ?
          ORDER BY f.id, b.position, b.id",
    )
    .bind(agent_id)
    .fetch_all(&db.read)
    .await
}
