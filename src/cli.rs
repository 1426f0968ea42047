//! Administration from the command line: agents and their versioned configuration (export,
//! import, publish, versions), webhooks' secrets, variables, runtime and API tokens.

use std::io::Read;

use serde_json::{Value, json};

use crate::config::{
    ActionCommand, AgentCommand, ApiTokenCommand, Command, ConnectionCommand, OnOff, TokenCommand,
    VariableCommand,
};
use crate::domain::document::{
    self, Action, ActionDoc, AgentDocument, MAX_TTL_SECS, MAX_WAIT_MS, VariableDoc,
};
use crate::domain::phone::Region;
use crate::domain::variables::{VarType, VariableName};
use crate::drafts;
use crate::store::agents::{self, Agent};
use crate::store::documents::{self, NewEndpoint, PublishError};
use crate::store::{
    Db, StoreError, actions, admins, api_tokens, deliveries, now_ms, rfc3339, servers, tokens,
};

/// `println!` for the commands' output: a reader that has gone (`precall … | head`) ends
/// the command quietly instead of a panic on the broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            panic!("writing to stdout: {e}");
        }
    }};
}

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

/// Who the command line is, in the draft's and versions' records.
fn by() -> String {
    match std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        Some(user) => format!("command line ({user})"),
        None => "command line".to_owned(),
    }
}

async fn dispatch(command: Command, db: &Db, public_url: &str) -> anyhow::Result<()> {
    match command {
        Command::Serve => unreachable!("serve is handled by main"),
        Command::Agent(c) => agent_command(c, db, public_url).await,
        Command::Action(c) => action_command(c, db, public_url).await,
        Command::Variable(VariableCommand::Set {
            agent,
            name,
            ty,
            default,
            description,
            publish,
        }) => {
            let agent = find_agent(db, &agent).await?;
            let name = VariableName::parse(&name).map_err(anyhow::Error::msg)?;
            let ty = VarType::parse(&ty).map_err(anyhow::Error::msg)?;
            // JSON when it parses as JSON, else plain text.
            let default = default
                .map(|d| serde_json::from_str(&d).unwrap_or(Value::String(d)))
                .unwrap_or(Value::Null);
            let default = if default.is_null() {
                default
            } else {
                ty.coerce(&default)
                    .map_err(|e| anyhow::anyhow!("default of {name}: {e}"))?
            };
            drafts::edit(db, agent.id, None, &by(), |doc| {
                let var = VariableDoc {
                    name: name.to_string(),
                    ty,
                    default,
                    description: description.trim().to_owned(),
                    source: None,
                };
                match doc.variables.iter_mut().find(|v| v.name == var.name) {
                    Some(v) => {
                        let source = v.source.take();
                        *v = VariableDoc { source, ..var };
                    }
                    None => doc.variables.push(var),
                }
                Ok(())
            })
            .await
            .map_err(explain_edit)?;
            out!(
                "Declared {name} ({ty}) in the draft of {}.",
                agent.public_id
            );
            if publish {
                let n = publish_now(db, &agent, &format!("Variable {name} declared")).await?;
                out!("Published as version {n}.");
            }
            Ok(())
        }
        Command::Token(TokenCommand::Create { agent, name, json }) => {
            let agent = find_agent(db, &agent).await?;
            let token = tokens::create(db, agent.id, &name).await.map_err(explain)?;
            let out = json!({ "agentId": agent.public_id, "token": token.expose() });
            print(json, &out, || {
                format!(
                    "Runtime token for {:?}: {}\nThe token is shown only now.",
                    agent.name,
                    token.expose()
                )
            });
            Ok(())
        }
        Command::ApiToken(c) => api_token_command(c, db).await,
        Command::Connection(c) => connection_command(c, db, public_url).await,
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
            Ok(())
        }
        Command::Demo { wait_ms, json } => {
            let made = crate::demo::create(db, public_url, wait_ms)
                .await
                .map_err(explain)?;
            let examples: Vec<Value> = made
                .iter()
                .map(|d| {
                    json!({
                        "name": d.example.name,
                        "file": d.example.file,
                        "agentId": d.agent.public_id,
                        "url": d.webhook_url,
                        "apiKey": d.api_key,
                        "runtimeToken": d.runtime_token,
                        "payload": d.example.payload(&d.agent.public_id),
                    })
                })
                .collect();
            let out = json!({ "examples": examples });
            print(json, &out, || demo_text(&made, public_url));
            Ok(())
        }
    }
}

async fn agent_command(c: AgentCommand, db: &Db, public_url: &str) -> anyhow::Result<()> {
    match c {
        AgentCommand::Create { name, region, json } => {
            let region = Region::parse(&region).map_err(anyhow::Error::msg)?;
            let (agent, _) = agents::create(db, &name, region, None, &by())
                .await
                .map_err(explain)?;
            let out = agent_json(&agent);
            print(json, &out, || {
                format!(
                    "Created agent {:?} ({}), region {}, with a First Flow that greets callers \
                     (version 1, published).",
                    agent.name, agent.public_id, agent.default_region
                )
            });
        }
        AgentCommand::List { json } => {
            let list = agents::list(db).await?;
            let out = Value::Array(list.iter().map(agent_json).collect());
            print(json, &out, || {
                list.iter()
                    .map(|a| {
                        format!(
                            "{}  {}  ({}, version {})",
                            a.public_id,
                            a.name,
                            a.default_region,
                            a.published_version.unwrap_or(0)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AgentCommand::Export {
            agent,
            version,
            draft,
        } => {
            let agent = find_agent(db, &agent).await?;
            let doc = if draft {
                drafts::current(db, agent.id)
                    .await
                    .map_err(explain_edit)?
                    .document
            } else {
                let number = version.or(agent.published_version).ok_or_else(|| {
                    anyhow::anyhow!("{} has no published version", agent.public_id)
                })?;
                documents::version(db, agent.id, number)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("{} has no version {number}", agent.public_id))?
                    .document
            };
            out!("{}", doc.to_text());
        }
        AgentCommand::Import {
            args,
            new,
            region,
            publish,
            message,
            json,
        } => {
            let (agent, file) = match (new.is_some(), args.as_slice()) {
                (true, [file]) => (None, file.clone()),
                (false, [agent, file]) => (Some(agent.clone()), file.clone()),
                (true, _) => anyhow::bail!("with --new, give only the document's file"),
                (false, _) => anyhow::bail!("give the agent's id and the document's file"),
            };
            let text = read_input(&file)?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("the document is not JSON: {e}"))?;
            if let Some(p) = crate::domain::duplicates::repeated_key(text.as_bytes()) {
                anyhow::bail!(
                    "the document is not valid:\n  {}: {}",
                    p.pointer.as_deref().unwrap_or("(document)"),
                    p.detail
                );
            }
            let doc = AgentDocument::from_json(&value).map_err(|problems| {
                anyhow::anyhow!(
                    "the document is not valid:\n{}",
                    problems
                        .iter()
                        .map(|p| format!(
                            "  {}: {}",
                            p.pointer.as_deref().unwrap_or("(document)"),
                            p.detail
                        ))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
            let (agent, created) = match (agent, new) {
                (_, Some(name)) => {
                    let region = Region::parse(&region).map_err(anyhow::Error::msg)?;
                    agents::create_importing(db, &name, region, &doc, &by())
                        .await
                        .map_err(explain)?
                }
                (Some(id), None) => {
                    let agent = find_agent(db, &id).await?;
                    let saved = drafts::replace(db, agent.id, &doc, None, &by())
                        .await
                        .map_err(explain_edit)?;
                    (agent, saved.created)
                }
                (None, None) => anyhow::bail!("name the agent, or --new NAME"),
            };
            let problems = document::check(&doc);
            let mut version = None;
            if publish {
                let msg = if message.is_empty() {
                    "Imported"
                } else {
                    &message
                };
                version = Some(publish_now(db, &agent, msg).await?);
            }
            let out = json!({
                "agentId": agent.public_id,
                "webhooks": endpoints_json(&created, public_url),
                "problems": problems,
                "version": version,
            });
            print(json, &out, || {
                let mut text = format!(
                    "Imported into the draft of {:?} ({}).",
                    agent.name, agent.public_id
                );
                text.push_str(&endpoints_text(&created, public_url));
                if !problems.is_empty() && version.is_none() {
                    text.push_str(&format!(
                        "\nTo finish before it can be published:\n{}",
                        problems_text(&problems)
                    ));
                }
                if let Some(v) = version {
                    text.push_str(&format!("\nPublished as version {v}."));
                }
                text
            });
        }
        AgentCommand::Publish {
            agent,
            message,
            json,
        } => {
            let agent = find_agent(db, &agent).await?;
            let v = publish_now(db, &agent, &message).await?;
            print(
                json,
                &json!({ "agentId": agent.public_id, "version": v }),
                || format!("Published {} as version {v}.", agent.public_id),
            );
        }
        AgentCommand::Versions { agent, json } => {
            let agent = find_agent(db, &agent).await?;
            let list = documents::versions(db, agent.id).await?;
            let out = Value::Array(
                list.iter()
                    .map(|v| {
                        json!({
                            "version": v.number,
                            "publishedAt": rfc3339(v.published_at),
                            "publishedBy": v.published_by,
                            "message": v.message,
                            "live": Some(v.number) == agent.published_version,
                        })
                    })
                    .collect(),
            );
            print(json, &out, || {
                list.iter()
                    .map(|v| {
                        format!(
                            "{:>4}{}  {}  {}  {}",
                            v.number,
                            if Some(v.number) == agent.published_version {
                                " (live)"
                            } else {
                                ""
                            },
                            rfc3339(v.published_at),
                            v.published_by,
                            v.message
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AgentCommand::Restore { agent, version } => {
            let agent = find_agent(db, &agent).await?;
            let saved = documents::restore(db, agent.id, version, None, &by())
                .await
                .map_err(explain)?;
            out!(
                "Version {version} is the draft of {} again; publish it to run it.{}",
                agent.public_id,
                endpoints_text(&saved.created, public_url)
            );
        }
        AgentCommand::Discard { agent } => {
            let agent = find_agent(db, &agent).await?;
            documents::discard(db, agent.id, None, &by())
                .await
                .map_err(explain)?;
            out!(
                "The draft of {} is the published version again.",
                agent.public_id
            );
        }
        AgentCommand::Diff { agent, json } => {
            let agent = find_agent(db, &agent).await?;
            let draft = drafts::current(db, agent.id).await.map_err(explain_edit)?;
            let published = documents::published(db, agent.id).await?;
            let changes = match &published {
                Some(p) => document::changes(&p.document, &draft.document),
                None => vec!["Nothing is published yet".into()],
            };
            let problems = document::check(&draft.document);
            let out = json!({ "changes": changes, "problems": problems });
            print(json, &out, || {
                let mut text = if changes.is_empty() {
                    "The draft is the published version.".to_owned()
                } else {
                    format!("The draft changes:\n  {}", changes.join("\n  "))
                };
                if !problems.is_empty() {
                    text.push_str(&format!(
                        "\nTo finish before it can be published:\n{}",
                        problems_text(&problems)
                    ));
                }
                text
            });
        }
    }
    Ok(())
}

async fn action_command(c: ActionCommand, db: &Db, public_url: &str) -> anyhow::Result<()> {
    match c {
        ActionCommand::CreateWebhook {
            agent,
            name,
            wait_ms,
            ttl_secs,
            publish,
            json,
        } => {
            let agent = find_agent(db, &agent).await?;
            check_webhook_settings(Some(wait_ms), Some(ttl_secs))?;
            let name = name.trim().to_owned();
            let (key, saved) = drafts::edit(db, agent.id, None, &by(), |doc| {
                let key =
                    AgentDocument::new_key("webhook-", doc.precall.iter().map(|a| a.key.as_str()));
                doc.precall.push(ActionDoc {
                    key: key.clone(),
                    name: name.clone(),
                    settings: Action::Webhook {
                        wait_ms,
                        ttl_secs,
                        enabled: true,
                    },
                });
                Ok(key)
            })
            .await
            .map_err(explain_edit)?;
            let endpoint = saved
                .created
                .iter()
                .find(|e| e.key == key)
                .ok_or_else(|| anyhow::anyhow!("the webhook's URL was not made"))?;
            let url = crate::http::ingest::url(public_url, endpoint.slug.as_str());
            let mut version = None;
            if publish {
                version = Some(publish_now(db, &agent, &format!("Webhook {name:?} added")).await?);
            }
            let out = json!({
                "actionKey": key,
                "url": url,
                "apiKey": endpoint.api_key.expose(),
                "agentId": agent.public_id,
                "version": version,
            });
            print(json, &out, || {
                format!(
                    "Webhook {key} added to the draft of {:?}{}.\n\
                     URL:     {url}\n\
                     API key: {}\n\
                     The key is shown only now: store it where the sender keeps secrets.{}",
                    agent.name,
                    if publish { " and published" } else { "" },
                    endpoint.api_key.expose(),
                    if publish {
                        ""
                    } else {
                        "\nThe URL takes requests now; calls wait for it once the draft is \
                         published (precall agent publish)."
                    }
                )
            });
        }
        ActionCommand::UpdateWebhook {
            agent,
            action,
            enabled,
            wait_ms,
            ttl_secs,
            signing,
            new_signing_secret,
            publish,
            json,
        } => {
            let agent = find_agent(db, &agent).await?;
            check_webhook_settings(wait_ms, ttl_secs)?;
            let endpoint = actions::endpoint(db, agent.id, &action)
                .await?
                .ok_or_else(|| anyhow::anyhow!("{} has no webhook {action:?}", agent.public_id))?;
            if enabled.is_some() || wait_ms.is_some() || ttl_secs.is_some() {
                drafts::edit(db, agent.id, None, &by(), |doc| {
                    let a = doc
                        .action_mut(&action)
                        .ok_or("the draft no longer has this webhook")?;
                    if let Action::Webhook {
                        wait_ms: w,
                        ttl_secs: t,
                        enabled: e,
                    } = &mut a.settings
                    {
                        *w = wait_ms.unwrap_or(*w);
                        *t = ttl_secs.unwrap_or(*t);
                        *e = enabled.unwrap_or(*e);
                    }
                    Ok(())
                })
                .await
                .map_err(explain_edit)?;
            }
            let mut secret = match signing {
                Some(s) => actions::set_signing(db, endpoint.id, s == OnOff::On)
                    .await
                    .map_err(explain)?,
                None => None,
            };
            if secret.is_none() && new_signing_secret {
                secret = Some(
                    actions::regenerate_signing_secret(db, endpoint.id)
                        .await
                        .map_err(explain)?,
                );
            }
            if publish {
                publish_now(db, &agent, &format!("Webhook {action} changed")).await?;
            }
            let out = json!({
                "actionKey": action,
                "signingSecret": secret.as_ref().map(|s| s.expose()),
            });
            print(json, &out, || match &secret {
                Some(s) => format!(
                    "Updated webhook {action}.\n\
                     Signing secret: {}\n\
                     The secret is shown only now: store it where the sender keeps secrets.",
                    s.expose()
                ),
                None => format!("Updated webhook {action}."),
            });
        }
        ActionCommand::RotateKey {
            agent,
            action,
            grace_secs,
            json,
        } => {
            let agent = find_agent(db, &agent).await?;
            let endpoint = actions::endpoint(db, agent.id, &action)
                .await?
                .ok_or_else(|| anyhow::anyhow!("{} has no webhook {action:?}", agent.public_id))?;
            let key = actions::regenerate_key(db, endpoint.id, grace_secs)
                .await
                .map_err(explain)?;
            let old_until = (grace_secs > 0).then(|| rfc3339(now_ms() + grace_secs * 1000));
            let out = json!({
                "actionKey": action,
                "apiKey": key.expose(),
                "oldKeysValidUntil": old_until,
            });
            print(json, &out, || {
                let old = match &old_until {
                    Some(t) => format!("The old key keeps working until {t}."),
                    None => "The old key stopped working.".to_owned(),
                };
                format!(
                    "New API key for webhook {action}: {}\n{old}\n\
                     The key is shown only now: store it where the sender keeps secrets.",
                    key.expose()
                )
            });
        }
    }
    Ok(())
}

async fn api_token_command(c: ApiTokenCommand, db: &Db) -> anyhow::Result<()> {
    match c {
        ApiTokenCommand::Create {
            admin,
            name,
            read_only,
            json,
        } => {
            let admins = admins::list(db).await?;
            let holder = match admin {
                Some(email) => admins
                    .iter()
                    .find(|a| a.email.eq_ignore_ascii_case(email.trim()))
                    .ok_or_else(|| anyhow::anyhow!("no admin {email:?}"))?,
                None => match admins.as_slice() {
                    [only] => only,
                    [] => anyhow::bail!(
                        "there is no admin yet: create the first one with the link the server prints"
                    ),
                    _ => anyhow::bail!("name the admin the token acts for: --admin EMAIL"),
                },
            };
            let (id, token) = api_tokens::create(db, holder.id, &name, read_only)
                .await
                .map_err(explain)?;
            let out = json!({
                "id": id,
                "token": token.expose(),
                "admin": holder.email,
                "readOnly": read_only,
            });
            print(json, &out, || {
                format!(
                    "API token {id} ({}) for {}: {}\nThe token is shown only now.",
                    if read_only {
                        "read only"
                    } else {
                        "read and write"
                    },
                    holder.email,
                    token.expose()
                )
            });
        }
        ApiTokenCommand::List { json } => {
            let list = api_tokens::list(db, None).await?;
            let out = Value::Array(
                list.iter()
                    .map(|t| {
                        json!({
                            "id": t.id,
                            "name": t.name,
                            "admin": t.admin_email,
                            "readOnly": t.read_only,
                            "lastChars": t.last_chars,
                            "createdAt": rfc3339(t.created_at),
                            "lastUsedAt": t.last_used_at.map(rfc3339),
                            "revokedAt": t.revoked_at.map(rfc3339),
                        })
                    })
                    .collect(),
            );
            print(json, &out, || {
                list.iter()
                    .map(|t| {
                        format!(
                            "{:>4}  {}  …{}  {}  {}{}",
                            t.id,
                            t.name,
                            t.last_chars,
                            t.admin_email,
                            if t.read_only {
                                "read only"
                            } else {
                                "read and write"
                            },
                            if t.revoked_at.is_some() {
                                "  (revoked)"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ApiTokenCommand::Revoke { id } => {
            api_tokens::revoke(db, id, None).await.map_err(explain)?;
            out!("API token {id} revoked.");
        }
    }
    Ok(())
}

/// Publishes the agent's draft; refused with its problems listed.
async fn publish_now(db: &Db, agent: &Agent, message: &str) -> anyhow::Result<i64> {
    match documents::publish(db, agent.id, None, &by(), message).await {
        Ok(meta) => Ok(meta.number),
        Err(PublishError::Problems(problems)) => Err(anyhow::anyhow!(
            "not published: the draft has problems to finish first:\n{}",
            problems_text(&problems)
        )),
        Err(PublishError::Store(e)) => Err(explain(e)),
    }
}

fn problems_text(problems: &[crate::domain::payload::Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {} ({})", p.detail, p.pointer.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn endpoints_json(created: &[NewEndpoint], public_url: &str) -> Value {
    Value::Array(
        created
            .iter()
            .map(|e| {
                json!({
                    "actionKey": e.key,
                    "name": e.name,
                    "url": crate::http::ingest::url(public_url, e.slug.as_str()),
                    "apiKey": e.api_key.expose(),
                })
            })
            .collect(),
    )
}

fn endpoints_text(created: &[NewEndpoint], public_url: &str) -> String {
    created
        .iter()
        .map(|e| {
            format!(
                "\nWebhook {:?} ({}): {}\n  API key: {} (shown only now)",
                e.name,
                e.key,
                crate::http::ingest::url(public_url, e.slug.as_str()),
                e.api_key.expose()
            )
        })
        .collect()
}

fn check_webhook_settings(wait_ms: Option<i64>, ttl_secs: Option<i64>) -> anyhow::Result<()> {
    if let Some(w) = wait_ms
        && !(0..=MAX_WAIT_MS).contains(&w)
    {
        anyhow::bail!("time wait before fallback must be 0 to {MAX_WAIT_MS} ms, got {w}");
    }
    if let Some(t) = ttl_secs
        && !(1..=MAX_TTL_SECS).contains(&t)
    {
        anyhow::bail!("data TTL must be 1 to {MAX_TTL_SECS} seconds, got {t}");
    }
    Ok(())
}

/// A file's text, or standard input's for `-`.
fn read_input(path: &str) -> anyhow::Result<String> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))
}

/// How to try the demo: one webhook and one call per example, as cURL commands.
fn demo_text(made: &[crate::demo::DemoAgent], public_url: &str) -> String {
    let mut out = String::from(
        "One agent per pre-call example, each imported from its document in examples/.\n\
         Every key and token is shown only now.\n",
    );
    for d in made {
        let payload = d.example.payload(&d.agent.public_id);
        out.push_str(&format!(
            "\n# {} ({}, agent {})\n\
             curl -X POST '{}' -H 'Content-Type: application/json' -H 'X-Authorization: {}' -d '{}'\n\
             curl -X POST '{public_url}/api/v1/calls' -H 'Content-Type: application/json' -H 'Authorization: Bearer {}' -d '{}'\n",
            d.example.name,
            d.example.file,
            d.agent.public_id,
            d.webhook_url,
            d.api_key,
            payload,
            d.runtime_token,
            json!({ "agentId": d.agent.public_id, "from": payload["phoneNumber"] }),
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
        "version": a.published_version,
        "createdAt": rfc3339(a.created_at),
    })
}

fn print(as_json: bool, value: &Value, text: impl FnOnce() -> String) {
    if as_json {
        out!("{value}");
    } else {
        out!("{}", text());
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
        e @ StoreError::Stale { .. } => anyhow::Error::msg(e.to_string()),
        StoreError::Database(e) => e.into(),
    }
}

fn explain_edit(e: drafts::EditError) -> anyhow::Error {
    match e {
        drafts::EditError::Database(e) => e.into(),
        other => anyhow::Error::msg(other.to_string()),
    }
}

async fn connection_command(c: ConnectionCommand, db: &Db, public_url: &str) -> anyhow::Result<()> {
    use crate::connect::{Mapping, Platform};
    use crate::store::connections::{self, NewConnection};
    let shown = |c: &connections::ConnectionRow| {
        serde_json::to_value(crate::http::api::manage::connections::view(public_url, c))
            .expect("a connection serialises")
    };
    match c {
        ConnectionCommand::Create {
            agent,
            platform,
            secret,
            scheme,
            name,
            default_agent,
            flow_agents,
            deadline_ms,
            json,
        } => {
            let agent = find_agent(db, &agent).await?;
            let platform = Platform::parse(&platform).map_err(anyhow::Error::msg)?;
            let (secret, kind) = connections::secret_for(platform, scheme.as_deref(), &secret)
                .map_err(anyhow::Error::msg)?;
            let mut mapping = Mapping {
                default_agent,
                ..Mapping::default()
            };
            for pair in flow_agents {
                let (flow, id) = pair.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("--flow-agent takes FLOW_KEY=AGENT_ID, got {pair:?}")
                })?;
                mapping
                    .flow_agents
                    .insert(flow.trim().to_owned(), id.trim().to_owned());
            }
            mapping.check(platform)?;
            // Left out, the name is the platform's; given, it must be a name.
            let name = crate::domain::text::given_name(name.as_deref(), 100)
                .map_err(|e| anyhow::anyhow!("--name: {e}"))?
                .unwrap_or_else(|| platform.label().to_owned());
            let deadline_ms = deadline_ms.unwrap_or(platform.deadline_ms());
            crate::http::api::manage::connections::check_deadline(platform, deadline_ms)
                .map_err(anyhow::Error::msg)?;
            let row = connections::create(
                db,
                NewConnection {
                    agent_id: agent.id,
                    platform,
                    name,
                    secret,
                    secret_kind: kind,
                    mapping,
                    deadline_ms,
                },
            )
            .await
            .map_err(explain)?;
            let out = shown(&row);
            print(json, &out, || {
                format!(
                    "{} connection {} for {:?}.\nPaste this URL into {}: {}\nA call waits for its data at most {} ms (the {} ms deadline less {} ms).",
                    platform.label(),
                    row.id,
                    agent.name,
                    platform.label(),
                    out["url"].as_str().unwrap_or_default(),
                    out["maxWaitMs"],
                    row.deadline_ms,
                    platform.margin_ms()
                )
            });
            Ok(())
        }
        ConnectionCommand::List { agent, json } => {
            let rows = match agent {
                Some(a) => {
                    let agent = find_agent(db, &a).await?;
                    connections::of_agent(db, agent.id).await?
                }
                None => connections::all(db).await?,
            };
            let out = Value::Array(rows.iter().map(shown).collect());
            print(json, &out, || {
                if rows.is_empty() {
                    return "No connections.".to_owned();
                }
                rows.iter()
                    .map(|c| {
                        format!(
                            "{}\t{}\t{}\t{}",
                            c.id,
                            c.agent_public_id,
                            c.platform,
                            crate::http::connect::url(public_url, &c.slug)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        ConnectionCommand::Delete { id } => {
            connections::delete_any(db, id).await.map_err(explain)?;
            out!("Connection {id} deleted: its URL no longer answers.");
            Ok(())
        }
    }
}
