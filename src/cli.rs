//! Administration from the command line: what a newcomer and the tests need to set up
//! agents, webhooks, variables and runtime tokens.

use serde_json::{Value, json};

use crate::config::{ActionCommand, AgentCommand, Command, OnOff, TokenCommand, VariableCommand};
use crate::domain::phone::Region;
use crate::domain::variables::{VarType, VariableName};
use crate::store::actions::{self, NewWebhook, WebhookChanges};
use crate::store::agents::{self, Agent};
use crate::store::variables::{self, NewVariable};
use crate::store::{Db, StoreError, deliveries, now_ms, rfc3339, servers, tokens};

/// Runs one administrative command against the database at `database_url`.
pub async fn run(command: Command, database_url: &str, public_url: &str) -> anyhow::Result<()> {
    let db = Db::open(database_url).await?;
    let before = servers::config_version(&db).await?;
    let result = dispatch(command, &db, public_url.trim_end_matches('/')).await;
    if result.is_ok() {
        await_servers(&db, before).await?;
    }
    db.close().await;
    result
}

/// After a configuration change, waits until every running server obeys it, so that what
/// the command said is true when it returns (a key it revoked opens nothing any more).
async fn await_servers(db: &Db, before: i64) -> anyhow::Result<()> {
    let version = servers::config_version(db).await?;
    if version == before {
        return Ok(());
    }
    let behind = servers::await_applied(db, version, APPLY_PATIENCE).await?;
    for server in behind {
        eprintln!(
            "warning: the server with process id {} has not applied this change after {} s; \
             it applies changes within {} ms of reading them, once it can read the database",
            server.pid,
            APPLY_PATIENCE.as_secs(),
            crate::catalog::WATCH_INTERVAL.as_millis()
        );
    }
    Ok(())
}

/// How long a configuration command waits for the running servers to apply its change.
const APPLY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

async fn dispatch(command: Command, db: &Db, public_url: &str) -> anyhow::Result<()> {
    match command {
        Command::Serve => unreachable!("serve is handled by main"),
        Command::Agent(AgentCommand::Create { name, region, json }) => {
            let region = Region::parse(&region).map_err(anyhow::Error::msg)?;
            let agent = agents::create(db, &name, region).await.map_err(explain)?;
            let out = agent_json(&agent);
            print(json, &out, || {
                format!(
                    "Created agent {:?} ({}), region {}, with a First Flow that greets callers.",
                    agent.name, agent.public_id, agent.default_region
                )
            });
        }
        Command::Agent(AgentCommand::List { json }) => {
            let list = agents::list(db).await?;
            let out = Value::Array(list.iter().map(agent_json).collect());
            print(json, &out, || {
                list.iter()
                    .map(|a| format!("{}  {}  ({})", a.public_id, a.name, a.default_region))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Action(ActionCommand::CreateWebhook {
            agent,
            name,
            wait_ms,
            ttl_secs,
            json,
        }) => {
            let agent = find_agent(db, &agent).await?;
            let created = actions::create_webhook(
                db,
                agent.id,
                &NewWebhook {
                    name,
                    fallback_wait_ms: wait_ms,
                    ttl_secs,
                },
            )
            .await
            .map_err(explain)?;
            let url = crate::http::ingest::url(public_url, created.slug.as_str());
            let out = json!({
                "actionId": created.action_id,
                "url": url,
                "apiKey": created.key.expose(),
                "agentId": agent.public_id,
            });
            print(json, &out, || {
                format!(
                    "Webhook added above the First Flow of {:?}.\n\
                     URL:     {url}\n\
                     API key: {}\n\
                     The key is shown only now: store it where the sender keeps secrets.",
                    agent.name,
                    created.key.expose()
                )
            });
        }
        Command::Action(ActionCommand::UpdateWebhook {
            id,
            enabled,
            wait_ms,
            ttl_secs,
            signing,
            new_signing_secret,
            json,
        }) => {
            let made = actions::update_webhook(
                db,
                id,
                &WebhookChanges {
                    enabled,
                    fallback_wait_ms: wait_ms,
                    ttl_secs,
                    signing_required: signing.map(|s| s == OnOff::On),
                },
            )
            .await
            .map_err(explain)?;
            let secret = match made {
                Some(s) => Some(s),
                None if new_signing_secret => Some(
                    actions::regenerate_signing_secret(db, id)
                        .await
                        .map_err(explain)?,
                ),
                None => None,
            };
            let out = json!({
                "actionId": id,
                "signingSecret": secret.as_ref().map(|s| s.expose()),
            });
            print(json, &out, || match &secret {
                Some(s) => format!(
                    "Updated webhook action {id}.\n\
                     Signing secret: {}\n\
                     The secret is shown only now: store it where the sender keeps secrets.",
                    s.expose()
                ),
                None => format!("Updated webhook action {id}."),
            });
        }
        Command::Action(ActionCommand::RotateKey {
            id,
            grace_secs,
            json,
        }) => {
            let key = actions::regenerate_key(db, id, grace_secs)
                .await
                .map_err(explain)?;
            let old_until = (grace_secs > 0).then(|| rfc3339(now_ms() + grace_secs * 1000));
            let out = json!({
                "actionId": id,
                "apiKey": key.expose(),
                "oldKeysValidUntil": old_until,
            });
            print(json, &out, || {
                let old = match &old_until {
                    Some(t) => format!("The old key keeps working until {t}."),
                    None => "The old key stopped working.".to_owned(),
                };
                format!(
                    "New API key for webhook action {id}: {}\n{old}\n\
                     The key is shown only now: store it where the sender keeps secrets.",
                    key.expose()
                )
            });
        }
        Command::Variable(VariableCommand::Set {
            agent,
            name,
            ty,
            default,
            description,
        }) => {
            let agent = find_agent(db, &agent).await?;
            let name = VariableName::parse(&name).map_err(anyhow::Error::msg)?;
            let ty = VarType::parse(&ty).map_err(anyhow::Error::msg)?;
            // JSON when it parses as JSON, else plain text.
            let default = default.map(|d| serde_json::from_str(&d).unwrap_or(Value::String(d)));
            variables::upsert(
                db,
                agent.id,
                &NewVariable {
                    name: name.clone(),
                    ty,
                    default,
                    description,
                    source_action_id: None,
                },
            )
            .await
            .map_err(explain)?;
            println!("Declared {name} ({ty}) for {}.", agent.public_id);
        }
        Command::Deliveries { agent, limit, json } => {
            let agent = find_agent(db, &agent).await?;
            let rows =
                deliveries::recent_for_agent(db, agent.id, limit.clamp(1, 1_000_000)).await?;
            let out = Value::Array(rows.iter().map(|d| d.to_json()).collect());
            print(json, &out, || {
                rows.iter()
                    .map(|d| {
                        format!(
                            "{}  {}  {:<8}  {}  {}",
                            rfc3339(d.received_at),
                            d.status,
                            d.outcome,
                            d.phone.as_deref().unwrap_or("-"),
                            d.call_id.as_deref().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Demo { wait_ms, json } => {
            let demo = crate::demo::create(db, public_url, wait_ms)
                .await
                .map_err(explain)?;
            let id = &demo.agent.public_id;
            let examples: Vec<Value> = crate::demo::payloads(id)
                .into_iter()
                .map(|(name, body)| json!({ "name": name, "payload": body }))
                .collect();
            let out = json!({
                "agentId": id,
                "url": demo.webhook_url,
                "apiKey": demo.api_key,
                "runtimeToken": demo.runtime_token,
                "examples": examples,
            });
            print(json, &out, || demo_text(&demo, public_url, &examples));
        }
        Command::Token(TokenCommand::Create { agent, name, json }) => {
            let agent = find_agent(db, &agent).await?;
            let token = tokens::create(db, agent.id, &name).await.map_err(explain)?;
            let out = json!({ "token": token.expose(), "agentId": agent.public_id });
            print(json, &out, || {
                format!(
                    "Runtime token for {:?}: {}\nShown only now: give it to the call runtime.",
                    agent.name,
                    token.expose()
                )
            });
        }
    }
    Ok(())
}

/// How to try the demo: one webhook and one call per example, as cURL commands.
fn demo_text(demo: &crate::demo::Demo, public_url: &str, examples: &[Value]) -> String {
    let mut out = format!(
        "Created the demo agent {:?} ({}).\n\
         Webhook URL:   {}\n\
         API key:       {}\n\
         Runtime token: {}\n\
         The key and token are shown only now.\n",
        demo.agent.name, demo.agent.public_id, demo.webhook_url, demo.api_key, demo.runtime_token
    );
    for e in examples {
        let payload = &e["payload"];
        out.push_str(&format!(
            "\n# {}\ncurl -X POST '{}' -H 'Content-Type: application/json' -H 'X-Authorization: {}' -d '{}'\n\
             curl -X POST '{public_url}/api/v1/calls' -H 'Content-Type: application/json' -H 'Authorization: Bearer {}' -d '{}'\n",
            e["name"].as_str().unwrap_or_default(),
            demo.webhook_url,
            demo.api_key,
            payload,
            demo.runtime_token,
            json!({ "agentId": demo.agent.public_id, "from": payload["phoneNumber"] }),
        ));
    }
    out.push_str(
        "\nA call from any other number takes the default path (it falls back after the wait).",
    );
    out
}

fn agent_json(a: &Agent) -> Value {
    json!({
        "agentId": a.public_id,
        "name": a.name,
        "region": a.default_region,
        "createdAt": rfc3339(a.created_at),
    })
}

fn print(as_json: bool, value: &Value, text: impl FnOnce() -> String) {
    if as_json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

async fn find_agent(db: &Db, public_id: &str) -> anyhow::Result<Agent> {
    agents::find_by_public_id(db, public_id)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!("no agent with id {public_id:?}; `precall agent list` shows them")
        })
}

fn explain(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::Conflict(m) | StoreError::NotFound(m) => anyhow::Error::msg(m),
        StoreError::Database(e) => e.into(),
    }
}
