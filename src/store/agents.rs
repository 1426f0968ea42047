//! Agents: their names and phone regions; their behaviour is in their documents.

use sqlx::FromRow;

use super::documents::NewEndpoint;
use super::sql::sql;
use super::{Db, StoreError, begin_write, now_ms};
use crate::domain::document::AgentDocument;
use crate::domain::ids::AgentId;
use crate::domain::phone::Region;

#[derive(Debug, Clone, FromRow)]
pub struct Agent {
    pub id: i64,
    pub public_id: String,
    pub name: String,
    pub default_region: String,
    /// The version calls run.
    pub published_version: Option<i64>,
    pub created_at: i64,
}

impl Agent {
    pub fn region(&self) -> Region {
        Region::parse(&self.default_region).unwrap_or_else(|_| Region::parse("US").unwrap())
    }
}

fn check_name(name: &str) -> Result<String, StoreError> {
    match crate::domain::text::check_name(name, 100) {
        Ok(Some(name)) => Ok(name),
        Ok(None) => Err(StoreError::Conflict(
            "an agent's name must be 1 to 100 characters".into(),
        )),
        Err(e) => Err(StoreError::Conflict(format!("an agent's name: {e}"))),
    }
}

/// Creates an agent whose draft and version 1 (published) are `doc`: by default a First
/// Flow that greets callers. Returns the endpoints made for the document's Webhook actions.
pub async fn create(
    db: &Db,
    name: &str,
    region: Region,
    doc: Option<&AgentDocument>,
    by: &str,
) -> Result<(Agent, Vec<NewEndpoint>), StoreError> {
    create_with(db, name, region, doc, None, by).await
}

/// Creates an agent whose version 1 (published) greets callers and whose draft is `draft`,
/// in one transaction: an import that is refused leaves no agent. Returns the endpoints made
/// for the draft's Webhook actions.
pub async fn create_importing(
    db: &Db,
    name: &str,
    region: Region,
    draft: &AgentDocument,
    by: &str,
) -> Result<(Agent, Vec<NewEndpoint>), StoreError> {
    create_with(db, name, region, None, Some(draft), by).await
}

async fn create_with(
    db: &Db,
    name: &str,
    region: Region,
    doc: Option<&AgentDocument>,
    draft: Option<&AgentDocument>,
    by: &str,
) -> Result<(Agent, Vec<NewEndpoint>), StoreError> {
    let name = check_name(name)?;
    let now = now_ms();
    let public_id = AgentId::generate();
    let mut tx = begin_write(db).await?;
    let agent: Agent =
        sql!(tx.exec(), query_as(
        "INSERT INTO agents (public_id, name, default_region, created_at) VALUES (?, ?, ?, ?)
         RETURNING id, public_id, name, default_region, published_version, created_at",
    ).bind(public_id.as_str()).bind(name).bind(region.code()).bind(now).fetch_one)?;
    let fresh = AgentDocument::new_agent();
    let mut created =
        super::documents::start_agent(&mut tx, agent.id, doc.unwrap_or(&fresh), by).await?;
    if let Some(draft) = draft {
        created = super::documents::import_draft(&mut tx, agent.id, draft, by).await?;
    }
    tx.commit().await?;
    Ok((
        Agent {
            published_version: Some(1),
            ..agent
        },
        created,
    ))
}

/// Changes an agent's default phone region.
pub async fn set_region(db: &Db, agent_id: i64, region: Region) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    sql!(
        tx.exec(),
        query("UPDATE agents SET default_region = ? WHERE id = ?")
            .bind(region.code())
            .bind(agent_id)
            .execute
    )?;
    tx.commit().await?;
    Ok(())
}

pub async fn find_by_public_id(db: &Db, public_id: &str) -> Result<Option<Agent>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(
            "SELECT id, public_id, name, default_region, published_version, created_at
           FROM agents WHERE public_id = ?",
        )
        .bind(public_id)
        .fetch_optional
    )
}

pub async fn list(db: &Db) -> Result<Vec<Agent>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(
            "SELECT id, public_id, name, default_region, published_version, created_at
           FROM agents ORDER BY created_at, id",
        )
        .fetch_all
    )
}

pub async fn rename(db: &Db, agent_id: i64, name: &str) -> Result<(), StoreError> {
    let name = check_name(name)?;
    let mut tx = begin_write(db).await?;
    sql!(
        tx.exec(),
        query("UPDATE agents SET name = ? WHERE id = ?")
            .bind(name)
            .bind(agent_id)
            .execute
    )?;
    tx.commit().await?;
    Ok(())
}

/// Deletes an agent and everything it owns (flows, actions, keys, data, calls, tokens).
pub async fn delete(db: &Db, agent_id: i64) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
    sql!(
        tx.exec(),
        query("DELETE FROM agents WHERE id = ?")
            .bind(agent_id)
            .execute
    )?;
    tx.commit().await?;
    Ok(())
}
