//! An agent's variable schema.

use serde_json::Value;

use super::{Db, StoreError, begin_write, now_ms};
use crate::domain::variables::{VarType, VariableDef, VariableName};

/// A variable to declare.
#[derive(Debug, Clone)]
pub struct NewVariable {
    pub name: VariableName,
    pub ty: VarType,
    pub default: Option<Value>,
    pub description: String,
    pub source_action_id: Option<i64>,
}

/// Declares a variable, or replaces the declaration of the same name.
pub async fn upsert(db: &Db, agent_id: i64, new: &NewVariable) -> Result<(), StoreError> {
    if new.name.is_system() {
        return Err(StoreError::Conflict(format!(
            "{} is a system variable and cannot be declared",
            new.name
        )));
    }
    let default = match &new.default {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            new.ty
                .coerce(v)
                .map_err(|e| StoreError::Conflict(format!("default of {}: {e}", new.name)))?
                .to_string(),
        ),
    };
    let mut tx = begin_write(db).await?;
    sqlx::query(
        "INSERT INTO variables (agent_id, name, type, default_value, description, source_action_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (agent_id, name) DO UPDATE SET
             type = excluded.type, default_value = excluded.default_value,
             description = excluded.description,
             source_action_id = coalesce(excluded.source_action_id, variables.source_action_id)",
    )
    .bind(agent_id)
    .bind(new.name.as_str())
    .bind(new.ty.as_str())
    .bind(default)
    .bind(&new.description)
    .bind(new.source_action_id)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The agent's declared variables, by name.
pub async fn schema(db: &Db, agent_id: i64) -> Result<Vec<VariableDef>, sqlx::Error> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT name, type, default_value FROM variables WHERE agent_id = ? ORDER BY name",
    )
    .bind(agent_id)
    .fetch_all(&db.read)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(name, ty, default)| {
            Some(VariableDef {
                name: VariableName::parse(&name).ok()?,
                ty: VarType::parse(&ty).ok()?,
                default: default.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })
        .collect())
}

/// A declared variable as the console shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VariableRow {
    pub name: String,
    pub ty: String,
    pub default_value: Option<String>,
    pub description: String,
    /// The action it came from, if any.
    pub source: Option<String>,
}

pub async fn list(db: &Db, agent_id: i64) -> Result<Vec<VariableRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT v.name, v.type AS ty, v.default_value, v.description, a.name AS source
           FROM variables v LEFT JOIN precall_actions a ON a.id = v.source_action_id
          WHERE v.agent_id = ? ORDER BY v.name",
    )
    .bind(agent_id)
    .fetch_all(&db.read)
    .await
}

pub async fn delete(db: &Db, agent_id: i64, name: &str) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    let done = sqlx::query("DELETE FROM variables WHERE agent_id = ? AND name = ?")
        .bind(agent_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!(
            "this agent has no variable {name:?}"
        )));
    }
    tx.commit().await?;
    Ok(())
}
