//! An agent's draft and published versions (see [`crate::domain::document`]), and the
//! endpoints of its Webhook actions, which come and go with the documents.
//!
//! Every change to the draft is one transaction that checks the revision the writer saw
//! (optimistic concurrency: a stale revision changes nothing), stores the whole document,
//! and gives each new Webhook action its endpoint (URL slug and first key) at once, so that
//! its Test step receives requests before anything is published. Publishing freezes the
//! draft as the next numbered version, in the same transaction as its checks.

use std::collections::HashSet;

use super::sql::sql;
use super::{Db, StoreError, Tx, begin_write, now_ms};
use crate::auth::keys::{Secret, SecretKind};
use crate::domain::document::{self, Action, AgentDocument};
use crate::domain::ids::WebhookSlug;
use crate::domain::payload::Problem;
use serde_json::Value;

/// The draft as stored.
#[derive(Debug, Clone)]
pub struct Draft {
    pub document: AgentDocument,
    pub revision: i64,
    pub updated_at: i64,
    pub updated_by: String,
}

/// A published version's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    pub number: i64,
    pub published_at: i64,
    pub published_by: String,
    pub message: String,
}

/// A published version.
#[derive(Debug, Clone)]
pub struct Version {
    pub meta: VersionMeta,
    pub document: AgentDocument,
}

/// A Webhook action's endpoint, as the agent's documents find it by key.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: i64,
    pub key: String,
    pub slug: String,
}

/// An endpoint just made for a new Webhook action: its key is here for its one showing.
#[derive(Debug)]
pub struct NewEndpoint {
    pub id: i64,
    pub key: String,
    pub name: String,
    pub slug: WebhookSlug,
    pub api_key: Secret,
}

/// What a save of the draft did.
#[derive(Debug)]
pub struct Saved {
    pub revision: i64,
    /// Endpoints made for Webhook actions that had none.
    pub created: Vec<NewEndpoint>,
}

fn read_document(text: &str) -> Result<AgentDocument, sqlx::Error> {
    let value: Value = serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    AgentDocument::from_json(&value).map_err(|problems| {
        sqlx::Error::Decode(
            format!(
                "a stored document does not read: {}",
                problems
                    .iter()
                    .map(|p| p.detail.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
            .into(),
        )
    })
}

pub async fn draft(db: &Db, agent_id: i64) -> Result<Option<Draft>, sqlx::Error> {
    let row: Option<(String, i64, i64, String)> = sql!(
        db.read(),
        query_as(
            "SELECT document, revision, updated_at, updated_by FROM drafts WHERE agent_id = ?",
        )
        .bind(agent_id)
        .fetch_optional
    )?;
    row.map(|(text, revision, updated_at, updated_by)| {
        Ok(Draft {
            document: read_document(&text)?,
            revision,
            updated_at,
            updated_by,
        })
    })
    .transpose()
}

/// The version calls run now.
pub async fn published(db: &Db, agent_id: i64) -> Result<Option<Version>, sqlx::Error> {
    let number: Option<i64> = sql!(
        db.read(),
        query_scalar("SELECT published_version FROM agents WHERE id = ?")
            .bind(agent_id)
            .fetch_optional
    )?
    .flatten();
    match number {
        Some(n) => version(db, agent_id, n).await,
        None => Ok(None),
    }
}

pub async fn version(db: &Db, agent_id: i64, number: i64) -> Result<Option<Version>, sqlx::Error> {
    let row: Option<(String, i64, String, String)> = sql!(
        db.read(),
        query_as(
            "SELECT document, published_at, published_by, message FROM versions
          WHERE agent_id = ? AND number = ?",
        )
        .bind(agent_id)
        .bind(number)
        .fetch_optional
    )?;
    row.map(|(text, published_at, published_by, message)| {
        Ok(Version {
            meta: VersionMeta {
                number,
                published_at,
                published_by,
                message,
            },
            document: read_document(&text)?,
        })
    })
    .transpose()
}

/// The agent's versions, newest first.
pub async fn versions(db: &Db, agent_id: i64) -> Result<Vec<VersionMeta>, sqlx::Error> {
    let rows: Vec<(i64, i64, String, String)> = sql!(
        db.read(),
        query_as(
            "SELECT number, published_at, published_by, message FROM versions
          WHERE agent_id = ? ORDER BY number DESC",
        )
        .bind(agent_id)
        .fetch_all
    )?;
    Ok(rows
        .into_iter()
        .map(
            |(number, published_at, published_by, message)| VersionMeta {
                number,
                published_at,
                published_by,
                message,
            },
        )
        .collect())
}

/// The endpoints of the agent's Webhook actions.
pub async fn endpoints(db: &Db, agent_id: i64) -> Result<Vec<Endpoint>, sqlx::Error> {
    let rows: Vec<(i64, String, String)> = sql!(
        db.read(),
        query_as(
            "SELECT a.id, a.key, w.slug FROM precall_actions a
           JOIN webhook_actions w ON w.action_id = a.id
          WHERE a.agent_id = ? AND a.key IS NOT NULL",
        )
        .bind(agent_id)
        .fetch_all
    )?;
    Ok(rows
        .into_iter()
        .map(|(id, key, slug)| Endpoint { id, key, slug })
        .collect())
}

/// The endpoint of the agent's Webhook action `key`.
pub async fn endpoint(db: &Db, agent_id: i64, key: &str) -> Result<Option<Endpoint>, sqlx::Error> {
    Ok(endpoints(db, agent_id)
        .await?
        .into_iter()
        .find(|e| e.key == key))
}

/// Replaces the draft with `doc`, if the draft is still at `expected` (when given); returns
/// the new revision and the endpoints made for new Webhook actions.
pub async fn save_draft(
    db: &Db,
    agent_id: i64,
    doc: &AgentDocument,
    expected: Option<i64>,
    by: &str,
) -> Result<Saved, StoreError> {
    let mut tx = begin_write(db).await?;
    let saved = write_draft(&mut tx, agent_id, doc, expected, by).await?;
    tx.commit().await?;
    Ok(saved)
}

/// The draft's revision and the published version's document, read in `tx`.
async fn current(
    tx: &mut Tx,
    agent_id: i64,
) -> Result<(Option<(i64, String)>, Option<String>), StoreError> {
    let exists: Option<Option<i64>> = sql!(
        tx.exec(),
        query_scalar("SELECT published_version FROM agents WHERE id = ?")
            .bind(agent_id)
            .fetch_optional
    )?;
    let Some(published) = exists else {
        return Err(StoreError::NotFound("no such agent".into()));
    };
    let draft: Option<(i64, String)> = sql!(
        tx.exec(),
        query_as("SELECT revision, document FROM drafts WHERE agent_id = ?")
            .bind(agent_id)
            .fetch_optional
    )?;
    let published_doc: Option<String> = match published {
        Some(n) => sql!(
            tx.exec(),
            query_scalar("SELECT document FROM versions WHERE agent_id = ? AND number = ?")
                .bind(agent_id)
                .bind(n)
                .fetch_optional
        )?,
        None => None,
    };
    Ok((draft, published_doc))
}

async fn write_draft(
    tx: &mut Tx,
    agent_id: i64,
    doc: &AgentDocument,
    expected: Option<i64>,
    by: &str,
) -> Result<Saved, StoreError> {
    let (draft, published) = current(tx, agent_id).await?;
    let revision = draft.as_ref().map_or(0, |d| d.0);
    if let Some(expected) = expected
        && expected != revision
    {
        return Err(StoreError::Stale { current: revision });
    }
    let now = now_ms();
    sql!(
        tx.exec(),
        query(
            "INSERT INTO drafts (agent_id, document, revision, updated_at, updated_by)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (agent_id) DO UPDATE SET document = ?2, revision = ?3, updated_at = ?4,
                                              updated_by = ?5",
        )
        .bind(agent_id)
        .bind(doc.to_json().to_string())
        .bind(revision + 1)
        .bind(now)
        .bind(by)
        .execute
    )?;
    let published = published.map(|t| read_document(&t)).transpose()?;
    let created = reconcile(tx, agent_id, doc, published.as_ref()).await?;
    Ok(Saved {
        revision: revision + 1,
        created,
    })
}

/// Gives every Webhook action of the draft an endpoint, and removes the endpoints of
/// actions neither the draft nor the published version holds (their URLs stop at once).
async fn reconcile(
    tx: &mut Tx,
    agent_id: i64,
    draft: &AgentDocument,
    published: Option<&AgentDocument>,
) -> Result<Vec<NewEndpoint>, sqlx::Error> {
    let existing: Vec<(i64, String)> = sql!(
        tx.exec(),
        query_as(
            "SELECT id, key FROM precall_actions WHERE agent_id = ? AND kind = 'webhook'
            AND key IS NOT NULL",
        )
        .bind(agent_id)
        .fetch_all
    )?;
    let have: HashSet<&str> = existing.iter().map(|(_, k)| k.as_str()).collect();
    let mut keep: HashSet<&str> = draft.webhooks().map(|(a, ..)| a.key.as_str()).collect();
    if let Some(p) = published {
        keep.extend(p.webhooks().map(|(a, ..)| a.key.as_str()));
    }
    for (id, key) in &existing {
        if !keep.contains(key.as_str()) {
            sql!(
                tx.exec(),
                query("DELETE FROM precall_actions WHERE id = ?")
                    .bind(id)
                    .execute
            )?;
        }
    }
    let mut created = Vec::new();
    let now = now_ms();
    for (action, ..) in draft.webhooks() {
        if have.contains(action.key.as_str()) {
            sql!(
                tx.exec(),
                query("UPDATE precall_actions SET name = ? WHERE agent_id = ? AND key = ?")
                    .bind(&action.name)
                    .bind(agent_id)
                    .bind(&action.key)
                    .execute
            )?;
            continue;
        }
        let slug = WebhookSlug::generate();
        let api_key = Secret::generate(SecretKind::WebhookKey);
        let id: i64 = sql!(
            tx.exec(),
            query_scalar(
                "INSERT INTO precall_actions (agent_id, position, kind, name, key, created_at)
             VALUES (?, 0, 'webhook', ?, ?, ?) RETURNING id",
            )
            .bind(agent_id)
            .bind(&action.name)
            .bind(&action.key)
            .bind(now)
            .fetch_one
        )?;
        sql!(
            tx.exec(),
            query("INSERT INTO webhook_actions (action_id, slug) VALUES (?, ?)")
                .bind(id)
                .bind(slug.as_str())
                .execute
        )?;
        sql!(
            tx.exec(),
            query(
                "INSERT INTO webhook_keys (action_id, key_hash, last_chars, created_at)
             VALUES (?, ?, ?, ?)",
            )
            .bind(id)
            .bind(api_key.hash().as_bytes())
            .bind(api_key.last_chars())
            .bind(now)
            .execute
        )?;
        created.push(NewEndpoint {
            id,
            key: action.key.clone(),
            name: action.name.clone(),
            slug,
            api_key,
        });
    }
    Ok(created)
}

/// Why a publish was refused.
#[derive(Debug)]
pub enum PublishError {
    /// What the checks found, each pointing into the draft.
    Problems(Vec<Problem>),
    Store(StoreError),
}

impl<E: Into<StoreError>> From<E> for PublishError {
    fn from(e: E) -> Self {
        Self::Store(e.into())
    }
}

/// Publishes the draft (if still at `expected`, when given) as the next version, once it
/// passes every check; calls run it from the moment this returns.
pub async fn publish(
    db: &Db,
    agent_id: i64,
    expected: Option<i64>,
    by: &str,
    message: &str,
) -> Result<VersionMeta, PublishError> {
    let mut tx = begin_write(db).await?;
    let (draft, _) = current(&mut tx, agent_id).await?;
    let Some((revision, text)) = draft else {
        return Err(StoreError::NotFound("this agent has no draft".into()).into());
    };
    if let Some(expected) = expected
        && expected != revision
    {
        return Err(StoreError::Stale { current: revision }.into());
    }
    let doc = read_document(&text)?;
    let problems = document::check(&doc);
    if !problems.is_empty() {
        return Err(PublishError::Problems(problems));
    }
    let meta = insert_version(&mut tx, agent_id, &text, by, message).await?;
    reconcile(&mut tx, agent_id, &doc, Some(&doc)).await?;
    tx.commit().await?;
    Ok(meta)
}

async fn insert_version(
    tx: &mut Tx,
    agent_id: i64,
    text: &str,
    by: &str,
    message: &str,
) -> Result<VersionMeta, sqlx::Error> {
    let now = now_ms();
    let number: i64 =
        sql!(tx.exec(), query_scalar(
        "INSERT INTO versions (agent_id, number, document, published_at, published_by, message)
         VALUES (?1, (SELECT coalesce(max(number), 0) + 1 FROM versions WHERE agent_id = ?1),
                 ?2, ?3, ?4, ?5)
         RETURNING number",
    ).bind(agent_id).bind(text).bind(now).bind(by).bind(message).fetch_one)?;
    sql!(
        tx.exec(),
        query("UPDATE agents SET published_version = ? WHERE id = ?")
            .bind(number)
            .bind(agent_id)
            .execute
    )?;
    Ok(VersionMeta {
        number,
        published_at: now,
        published_by: by.to_owned(),
        message: message.to_owned(),
    })
}

/// Makes version `number`'s document the draft (if still at `expected`, when given).
pub async fn restore(
    db: &Db,
    agent_id: i64,
    number: i64,
    expected: Option<i64>,
    by: &str,
) -> Result<Saved, StoreError> {
    let Some(v) = version(db, agent_id, number).await? else {
        return Err(StoreError::NotFound(format!("no version {number}")));
    };
    save_draft(db, agent_id, &v.document, expected, by).await
}

/// Throws the draft's changes away: the draft becomes the published version again.
pub async fn discard(
    db: &Db,
    agent_id: i64,
    expected: Option<i64>,
    by: &str,
) -> Result<Saved, StoreError> {
    let Some(p) = published(db, agent_id).await? else {
        return Err(StoreError::NotFound(
            "nothing is published: there is nothing to go back to".into(),
        ));
    };
    save_draft(db, agent_id, &p.document, expected, by).await
}

/// A new agent's documents: `doc` as its draft and its version 1, published.
pub async fn start_agent(
    tx: &mut Tx,
    agent_id: i64,
    doc: &AgentDocument,
    by: &str,
) -> Result<Vec<NewEndpoint>, StoreError> {
    let saved = write_draft(tx, agent_id, doc, Some(0), by).await?;
    insert_version(
        tx,
        agent_id,
        &doc.to_json().to_string(),
        by,
        "First version",
    )
    .await?;
    Ok(saved.created)
}

/// Replaces a new agent's draft with `doc` in the transaction that made it: the endpoints
/// made for its Webhook actions.
pub async fn import_draft(
    tx: &mut Tx,
    agent_id: i64,
    doc: &AgentDocument,
    by: &str,
) -> Result<Vec<NewEndpoint>, StoreError> {
    Ok(write_draft(tx, agent_id, doc, None, by).await?.created)
}

/// Moves what the tables before versioned documents hold (flows, blocks, pre-call Filter and
/// End Call actions, variables) into each agent's draft and version 1, once, when the
/// server starts: keys are made from the old ids (`f12`, `b34`, `a5`).
pub async fn upgrade(db: &Db) -> Result<(), sqlx::Error> {
    let agents: Vec<(i64, Option<i64>)> =
        sql!(db.read(), query_as(
        "SELECT id, first_flow_id FROM agents WHERE id NOT IN (SELECT agent_id FROM drafts)",
    ).fetch_all)?;
    for (agent_id, first_flow) in agents {
        let mut tx = begin_write(db).await?;
        let doc = legacy::document(&mut tx, agent_id, first_flow).await?;
        let text = doc.to_json().to_string();
        sql!(
            tx.exec(),
            query(
                "INSERT INTO drafts (agent_id, document, revision, updated_at, updated_by)
             VALUES (?, ?, 1, ?, 'upgrade')",
            )
            .bind(agent_id)
            .bind(&text)
            .bind(now_ms())
            .execute
        )?;
        insert_version(
            &mut tx,
            agent_id,
            &text,
            "upgrade",
            "Made from the configuration before versions",
        )
        .await?;
        legacy::clear(&mut tx, agent_id).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Reading the tables that held configuration before versioned documents.
mod legacy {
    use std::collections::HashMap;

    use super::super::Tx;
    use super::super::sql::sql;

    use serde_json::Value;

    use crate::domain::conditions::Conditions;
    use crate::domain::document::{
        Action, ActionDoc, AgentDocument, Block, BlockDoc, Case, Condition, FlowDoc, Source,
        VariableDoc,
    };
    use crate::domain::variables::VarType;

    fn text(c: &Value, k: &str) -> String {
        c[k].as_str().unwrap_or_default().to_owned()
    }

    fn conditions(c: &Value) -> (bool, Vec<Condition>) {
        let read = Conditions::from_config(c).unwrap_or(Conditions {
            any: false,
            list: Vec::new(),
        });
        let list = read
            .list
            .into_iter()
            .map(|x| Condition {
                variable: x.variable,
                op: x.op,
                value: Some(x.value).filter(|v| !v.is_null()),
            })
            .collect();
        (read.any, list)
    }

    fn cases(c: &Value, target: &str, key: &dyn Fn(i64) -> Option<String>) -> Vec<Case> {
        c["cases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|case| {
                let (any, conditions) = conditions(case);
                Case {
                    name: text(case, "name"),
                    any,
                    conditions,
                    to: case[target].as_i64().and_then(key),
                }
            })
            .collect()
    }

    pub async fn document(
        tx: &mut Tx,
        agent_id: i64,
        first_flow: Option<i64>,
    ) -> Result<AgentDocument, sqlx::Error> {
        let flows: Vec<(i64, String)> = sql!(
            tx.exec(),
            query_as("SELECT id, name FROM flows WHERE agent_id = ? ORDER BY id")
                .bind(agent_id)
                .fetch_all
        )?;
        let blocks: Vec<(i64, i64, String, String)> = sql!(tx.exec(), query_as(
            "SELECT b.id, b.flow_id, b.kind, b.config FROM blocks b JOIN flows f ON f.id = b.flow_id
              WHERE f.agent_id = ? ORDER BY b.position, b.id",
        ).bind(agent_id).fetch_all)?;
        let flow_of: HashMap<i64, i64> = blocks.iter().map(|b| (b.0, b.1)).collect();
        let flow_key = |id: i64| flows.iter().any(|f| f.0 == id).then(|| format!("f{id}"));
        let mut doc = AgentDocument {
            first_flow: first_flow.and_then(flow_key),
            flows: Vec::new(),
            precall: Vec::new(),
            variables: Vec::new(),
        };
        for (flow_id, name) in &flows {
            let in_flow = |id: i64| (flow_of.get(&id) == Some(flow_id)).then(|| format!("b{id}"));
            let mut out = Vec::new();
            for (id, _, kind, config) in blocks.iter().filter(|b| b.1 == *flow_id) {
                let c: Value = serde_json::from_str(config).unwrap_or_default();
                let next = c["next"].as_i64().and_then(in_flow);
                let kind = match kind.as_str() {
                    "greeting" if Some(*flow_id) != first_flow => "start",
                    "start" if Some(*flow_id) == first_flow => "greeting",
                    k => k,
                };
                let settings = match kind {
                    "greeting" => Block::Greeting {
                        message: text(&c, "message"),
                        next,
                    },
                    "start" => Block::Start {
                        message: text(&c, "message"),
                        next,
                    },
                    "talk" => Block::Talk {
                        message: text(&c, "message"),
                        next,
                    },
                    "collect" => Block::Collect {
                        variable: text(&c, "variable"),
                        prompt: text(&c, "prompt"),
                        next,
                    },
                    "filter" => Block::Filter {
                        cases: cases(&c, "next", &in_flow),
                        otherwise: c["else"].as_i64().and_then(in_flow),
                    },
                    "transfer_call" => Block::TransferCall {
                        destination: text(&c, "destination"),
                        department: text(&c, "department"),
                        message: text(&c, "message"),
                    },
                    "transfer_flow" => Block::TransferFlow {
                        flow: c["flow"].as_i64().and_then(flow_key),
                    },
                    _ => Block::EndCall {
                        message: text(&c, "message"),
                        outcome: Some(text(&c, "outcome"))
                            .filter(|o| !o.is_empty())
                            .unwrap_or_else(|| "completed".into()),
                    },
                };
                out.push(BlockDoc {
                    key: format!("b{id}"),
                    position: None,
                    settings,
                });
            }
            doc.flows.push(FlowDoc {
                key: format!("f{flow_id}"),
                name: name.clone(),
                blocks: out,
            });
        }
        type ActionRow = (
            i64,
            String,
            String,
            String,
            Option<i64>,
            Option<i64>,
            Option<bool>,
        );
        let actions: Vec<ActionRow> =
            sql!(tx.exec(), query_as(
            "SELECT a.id, a.kind, a.name, a.config, w.fallback_wait_ms, w.ttl_secs, w.enabled
                   FROM precall_actions a LEFT JOIN webhook_actions w ON w.action_id = a.id
                  WHERE a.agent_id = ? ORDER BY a.position, a.id",
        ).bind(agent_id).fetch_all)?;
        for (id, kind, name, config, wait, ttl, enabled) in actions {
            let c: Value = serde_json::from_str(&config).unwrap_or_default();
            let settings = match kind.as_str() {
                "webhook" => Action::Webhook {
                    wait_ms: wait.unwrap_or(2000),
                    ttl_secs: ttl.unwrap_or(600),
                    enabled: enabled.unwrap_or(true),
                },
                "filter" => Action::Filter {
                    cases: cases(&c, "flow", &flow_key),
                },
                _ => {
                    let (any, conditions) = conditions(&c);
                    Action::EndCall {
                        any,
                        conditions,
                        message: text(&c, "message"),
                        outcome: Some(text(&c, "outcome"))
                            .filter(|o| !o.is_empty())
                            .unwrap_or_else(|| "refused".into()),
                    }
                }
            };
            let key = format!("a{id}");
            if kind == "webhook" {
                sql!(
                    tx.exec(),
                    query("UPDATE precall_actions SET key = ? WHERE id = ?")
                        .bind(&key)
                        .bind(id)
                        .execute
                )?;
            }
            doc.precall.push(ActionDoc {
                key,
                name,
                settings,
            });
        }
        type VariableRow = (
            String,
            String,
            Option<String>,
            String,
            Option<i64>,
            Option<i64>,
        );
        let variables: Vec<VariableRow> =
            sql!(tx.exec(), query_as(
            "SELECT name, type, default_value, description, source_action_id, source_block_id
                   FROM variables WHERE agent_id = ? ORDER BY name",
        ).bind(agent_id).fetch_all)?;
        for (name, ty, default, description, action, block) in variables {
            let source = match (action, block) {
                (Some(a), _) => Some(Source::Action(format!("a{a}"))),
                (_, Some(b)) => flow_of.get(&b).map(|f| Source::Block {
                    flow: format!("f{f}"),
                    block: format!("b{b}"),
                }),
                _ => None,
            };
            doc.variables.push(VariableDoc {
                name,
                ty: VarType::parse(&ty).unwrap_or(VarType::String),
                default: default
                    .and_then(|d| serde_json::from_str(&d).ok())
                    .unwrap_or(Value::Null),
                description,
                source,
            });
        }
        Ok(doc)
    }

    /// Removes what the document now holds from the old tables (Webhook endpoints stay).
    pub async fn clear(tx: &mut Tx, agent_id: i64) -> Result<(), sqlx::Error> {
        for sql in [
            "DELETE FROM variables WHERE agent_id = ?1",
            "DELETE FROM precall_actions WHERE agent_id = ?1 AND kind <> 'webhook'",
            "UPDATE agents SET first_flow_id = NULL WHERE id = ?1",
            "DELETE FROM flows WHERE agent_id = ?1",
        ] {
            sql!(tx.exec(), query(sql).bind(agent_id).execute)?;
        }
        Ok(())
    }
}

/// The webhooks of `doc` whose settings ingest uses: a published action's from the
/// published version, a new one's from the draft.
pub fn webhook_settings<'a>(
    key: &str,
    published: Option<&'a AgentDocument>,
    draft: Option<&'a AgentDocument>,
) -> Option<(&'a document::ActionDoc, i64, bool)> {
    let find = |doc: Option<&'a AgentDocument>| {
        doc.and_then(|d| d.action(key))
            .and_then(|a| match a.settings {
                Action::Webhook {
                    ttl_secs, enabled, ..
                } => Some((a, ttl_secs, enabled)),
                _ => None,
            })
    };
    find(published).or_else(|| find(draft))
}
