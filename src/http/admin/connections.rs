//! Voice platforms' connections in the console: a list per agent, and the Setup → Configure
//! → Test wizard (platform and secret; the URL to paste, where, the flow → platform-agent
//! mapping, the deadline and Precall's margin; the platform's requests live with their
//! verdicts). The Test viewer reads the requests from memory (see `connect::log`), as a
//! server-sent stream.

use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;

use super::confirm::Confirmation;
use super::{HtmlError, Page, PageResult, after, agent, agent_draft, isolate, not_found, render};
use crate::auth::session::{Admin, AdminForm};
use crate::connect::log::Entry;
use crate::connect::{Mapping, MappingPart, MappingProblem, Platform, wait_cap};
use crate::domain::document::Block;
use crate::http::AppState;
use crate::http::api::manage::connections::check_deadline;
use crate::store::admins;
use crate::store::connections::{self, Change, ConnectionRow, NewConnection};
use crate::store::{StoreError, rfc3339};

pub fn router() -> Router<AppState> {
    let base = "/admin/agents/{agent}/connections";
    Router::new()
        .route(base, get(list).post(create))
        .route(&format!("{base}/new"), get(setup_step))
        .route(&format!("{base}/{{id}}/configure"), get(configure_step))
        .route(&format!("{base}/{{id}}/secret"), post(save_secret))
        .route(&format!("{base}/{{id}}/mapping"), post(save_mapping))
        .route(
            &format!("{base}/{{id}}/delete"),
            get(confirm_delete).post(delete),
        )
        .route(&format!("{base}/{{id}}/test"), get(test_step))
        .route(&format!("{base}/{{id}}/events"), get(events))
}

struct PlatformChoice {
    value: &'static str,
    label: &'static str,
    secret: &'static str,
}

fn choices() -> Vec<PlatformChoice> {
    Platform::ALL
        .iter()
        .map(|p| PlatformChoice {
            value: p.as_str(),
            label: p.label(),
            secret: p.secret_word(),
        })
        .collect()
}

struct Line {
    id: i64,
    name: String,
    platform: &'static str,
    url: String,
}

#[derive(Template)]
#[template(path = "admin/connections.html")]
struct ListPage {
    page: Page,
    agent_id: String,
    agent_name: String,
    /// For the agent's tabs.
    first_flow: Option<String>,
    connections: Vec<Line>,
}

async fn list(State(app): State<AppState>, admin: Admin, Path(id): Path<String>) -> PageResult {
    let a = agent(&app, &id).await?;
    let first_flow = agent_draft(&app, &a).await?.doc().first_flow.clone();
    let flash = app.flash.take(admin.session_id);
    let connections = connections::of_agent(&app.db, a.id)
        .await?
        .iter()
        .map(|c| Line {
            id: c.id,
            name: c.name.clone(),
            platform: c.platform().label(),
            url: crate::http::connect::url(&app.public_url, &c.slug),
        })
        .collect();
    Ok(render(ListPage {
        page: Page::new(&admin, "Voice platforms", &flash),
        agent_id: a.public_id,
        agent_name: a.name,
        first_flow,
        connections,
    }))
}

#[derive(Template)]
#[template(path = "admin/connection_setup.html")]
struct SetupStep {
    page: Page,
    agent_id: String,
    agent_name: String,
    platforms: Vec<PlatformChoice>,
    /// What the form had when it was refused (all but the secret), chosen again.
    chosen: Chosen,
}

/// The Setup form's choices, carried back to it in the address after a refusal (never the
/// secret).
#[derive(Default, Deserialize, serde::Serialize)]
struct Chosen {
    #[serde(default)]
    platform: String,
    #[serde(default)]
    scheme: String,
    #[serde(default)]
    name: String,
}

async fn setup_step(
    State(app): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    axum::extract::Query(chosen): axum::extract::Query<Chosen>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let flash = app.flash.take(admin.session_id);
    Ok(render(SetupStep {
        page: Page::new(&admin, "Connect a voice platform", &flash),
        agent_id: a.public_id,
        agent_name: a.name,
        platforms: choices(),
        chosen,
    }))
}

#[derive(Deserialize)]
struct NewForm {
    platform: String,
    secret: String,
    #[serde(default)]
    scheme: String,
    #[serde(default)]
    name: String,
}

async fn create(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<NewForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    // A refused form comes back with what was chosen (the secret must be given again).
    let chosen = Chosen {
        platform: f.form.platform.clone(),
        scheme: f.form.scheme.clone(),
        name: f.form.name.clone(),
    };
    let back = format!(
        "/admin/agents/{id}/connections/new?{}",
        serde_urlencoded::to_string(&chosen).unwrap_or_default()
    );
    let made = async {
        let platform = Platform::parse(&f.form.platform).map_err(StoreError::Conflict)?;
        // The form's scheme choice is Vapi's only: another platform's connection ignores it
        // (it may have been chosen before the platform was changed).
        let scheme =
            Some(f.form.scheme.trim()).filter(|s| !s.is_empty() && platform == Platform::Vapi);
        let (secret, kind) = connections::secret_for(platform, scheme, &f.form.secret)
            .map_err(StoreError::Conflict)?;
        let name = crate::domain::text::check_name(&f.form.name, 100)
            .map_err(StoreError::Conflict)?
            .unwrap_or_else(|| platform.label().to_owned());
        connections::create(
            &app.db,
            NewConnection {
                agent_id: a.id,
                platform,
                name,
                secret,
                secret_kind: kind,
                mapping: Mapping::default(),
                deadline_ms: platform.deadline_ms(),
            },
        )
        .await
    }
    .await;
    match made {
        Ok(c) => {
            app.catalog.invalidate();
            app.flash.notice(
                f.admin.session_id,
                "Connected: paste the URL below into the platform.",
            );
            Ok(Redirect::to(&format!(
                "/admin/agents/{id}/connections/{}/configure",
                c.id
            ))
            .into_response())
        }
        Err(e) => after(&app, &f.admin, &back, Err(e)),
    }
}

/// The agent's connection whose id is in the address (any other text there is no
/// connection either).
async fn connection_of(
    app: &AppState,
    agent_id: i64,
    id: &str,
) -> Result<ConnectionRow, HtmlError> {
    let Ok(id) = id.parse::<i64>() else {
        return Err(not_found("This connection"));
    };
    connections::find(&app.db, id)
        .await?
        .filter(|c| c.agent_id == agent_id)
        .ok_or_else(|| not_found("This connection"))
}

struct FlowRow {
    key: String,
    name: String,
    agent: String,
}

#[derive(Template)]
#[template(path = "admin/connection_configure.html")]
struct ConfigureStep {
    page: Page,
    agent_id: String,
    agent_name: String,
    id: i64,
    name: String,
    platform: &'static str,
    platform_key: &'static str,
    url: String,
    /// Where the URL and the secret go in the platform, in words.
    where_to_paste: &'static str,
    secret_word: &'static str,
    secret_last_chars: String,
    scheme: String,
    routes: bool,
    agent_word: &'static str,
    default_agent: String,
    flows: Vec<FlowRow>,
    deadline_ms: i64,
    /// The deadline field's value: the saved deadline, or what a refused form had.
    deadline_value: String,
    deadline_editable: bool,
    margin_ms: i64,
    max_wait_ms: i64,
    /// Twilio: the draft's Transfer Calls with no number to dial (flow name, department).
    undialable: Vec<(String, String)>,
}

/// The mapping form's fields that a refused form carries back in the address, so that
/// what was typed is shown again (agent ids and a deadline: nothing secret).
fn typed_fields(form: &[(String, String)]) -> Vec<(&str, &str)> {
    std::iter::once((TYPED, "1"))
        .chain(
            form.iter()
                .filter(|(k, _)| {
                    k == "default_agent" || k == "deadline_ms" || k.starts_with("flow:")
                })
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .collect()
}

/// Marks an address that carries a refused mapping form's fields.
const TYPED: &str = "typed";

/// Where each platform takes the URL and the secret.
fn where_to_paste(p: Platform) -> &'static str {
    match p {
        Platform::Retell => {
            "In Retell's dashboard, Phone Numbers → your number → Inbound Webhook URL. The secret is the API key that has the webhook badge (Settings → API Keys). To let Precall decline calls, leave the number's Inbound Call Agent unset and give the connection a default agent."
        }
        Platform::Synthflow => {
            "In Synthflow, the agent's inbound call webhook URL (inbound_call_webhook_url). The secret is the webhook secret from Settings → Security → Webhooks."
        }
        Platform::Vapi => {
            "In Vapi's dashboard, Phone Numbers → your number → Server URL, with no assistant on the number (so that Vapi sends assistant-request). The secret is the token of a Bearer Token credential with the header X-Vapi-Secret (scheme secret), or the secret key of an HMAC credential with SHA256, hex encoding and the default payload {timestamp}.{body} (scheme hmac)."
        }
        Platform::Telnyx => {
            "In Telnyx's portal, the AI Assistant → Dynamic Variables Webhook URL; set the same timeout here as there. The secret is your account's public key (Keys & Credentials → Public Key)."
        }
        Platform::Twilio => {
            "In Twilio's console, Phone Numbers → your number → Voice Configuration → A call comes in: Webhook, HTTP POST, this URL. The secret is the account's Auth Token. The server's --public-url must be the address Twilio calls, because Twilio signs the URL."
        }
    }
}

async fn configure_step(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, cid)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let c = connection_of(&app, a.id, &cid).await?;
    let d = agent_draft(&app, &a).await?;
    let flash = app.flash.take(admin.session_id);
    let p = c.platform();
    let mapping = c.mapping();
    // After a refusal, the form shows what was typed rather than what is saved.
    let typed = query.iter().any(|(k, v)| k == TYPED && v == "1");
    let given = |k: &str| {
        query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let flows = d
        .doc()
        .flows
        .iter()
        .map(|f| FlowRow {
            agent: if typed {
                given(&format!("flow:{}", f.key))
            } else {
                mapping.flow_agents.get(&f.key).cloned().unwrap_or_default()
            },
            key: f.key.clone(),
            name: f.name.clone(),
        })
        .collect();
    // Twilio dials a Transfer Call's destination: one with only a department has nothing to
    // dial, and the caller hears its message before the call ends.
    let undialable = if p == Platform::Twilio {
        d.doc()
            .flows
            .iter()
            .flat_map(|f| f.blocks.iter().map(move |b| (f, b)))
            .filter_map(|(f, b)| match &b.settings {
                Block::TransferCall {
                    destination,
                    department,
                    ..
                } if destination.trim().is_empty() => Some((f.name.clone(), department.clone())),
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(render(ConfigureStep {
        undialable,
        page: Page::new(&admin, format!("Configure · {}", isolate(&c.name)), &flash),
        agent_id: a.public_id,
        agent_name: a.name,
        id: c.id,
        platform: p.label(),
        platform_key: p.as_str(),
        url: crate::http::connect::url(&app.public_url, &c.slug),
        where_to_paste: where_to_paste(p),
        secret_word: p.secret_word(),
        secret_last_chars: c.secret_last_chars.clone(),
        scheme: c.scheme().unwrap_or_default().to_owned(),
        routes: p.routes_to_agents(),
        agent_word: p.agent_word(),
        default_agent: if typed {
            given("default_agent")
        } else {
            mapping.default_agent.clone().unwrap_or_default()
        },
        flows,
        deadline_ms: c.deadline_ms,
        deadline_value: if typed && query.iter().any(|(k, _)| k == "deadline_ms") {
            given("deadline_ms")
        } else {
            c.deadline_ms.to_string()
        },
        deadline_editable: p == Platform::Telnyx,
        margin_ms: p.margin_ms(),
        max_wait_ms: wait_cap(p, c.deadline_ms).as_millis() as i64,
        name: c.name,
    }))
}

#[derive(Deserialize)]
struct SecretForm {
    secret: String,
    #[serde(default)]
    scheme: String,
}

async fn save_secret(
    State(app): State<AppState>,
    Path((id, cid)): Path<(String, String)>,
    f: AdminForm<SecretForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let c = connection_of(&app, a.id, &cid).await?;
    let back = format!("/admin/agents/{id}/connections/{cid}/configure");
    // A form without a scheme keeps the connection's, as the API does.
    let scheme = Some(f.form.scheme.trim())
        .filter(|s| !s.is_empty())
        .or(c.scheme());
    let result = match connections::secret_for(c.platform(), scheme, &f.form.secret) {
        Ok(secret) => connections::update(
            &app.db,
            a.id,
            c.id,
            Change {
                secret: Some(secret),
                ..Change::default()
            },
        )
        .await
        .map(|()| "Secret saved: requests are checked with it from now on.".to_owned()),
        Err(e) => Err(StoreError::Conflict(e)),
    };
    app.catalog.invalidate();
    after(&app, &f.admin, &back, result)
}

async fn save_mapping(
    State(app): State<AppState>,
    Path((id, cid)): Path<(String, String)>,
    f: AdminForm<Vec<(String, String)>>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let c = connection_of(&app, a.id, &cid).await?;
    let d = agent_draft(&app, &a).await?;
    let configure = format!("/admin/agents/{id}/connections/{cid}/configure");
    // A refused form comes back with what was typed.
    let back = format!(
        "{configure}?{}",
        serde_urlencoded::to_string(typed_fields(&f.form)).unwrap_or_default()
    );
    let field = |k: &str| {
        f.form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
    };
    let mut mapping = Mapping {
        default_agent: field("default_agent").filter(|v| !v.is_empty()),
        ..Mapping::default()
    };
    for (k, v) in &f.form {
        if let Some(flow) = k.strip_prefix("flow:")
            && !v.trim().is_empty()
        {
            mapping
                .flow_agents
                .insert(flow.to_owned(), v.trim().to_owned());
        }
    }
    let deadline = match field("deadline_ms") {
        Some(d) if !d.is_empty() => match d.parse::<i64>() {
            Ok(ms) => Some(ms),
            Err(_) => {
                return after(
                    &app,
                    &f.admin,
                    &back,
                    Err(StoreError::Conflict(format!(
                        "deadline: {d:?} is not milliseconds"
                    ))),
                );
            }
        },
        _ => None,
    };
    let flow_name = |key: &str| {
        d.doc()
            .flows
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.name.clone())
    };
    let unknown = mapping
        .flow_agents
        .keys()
        .find(|k| flow_name(k).is_none())
        .map(|k| format!("the agent has no flow with the key {k}: nothing was saved"));
    // The page names each part by its label.
    let labelled = |e: MappingProblem| match e.part {
        MappingPart::DefaultAgent => format!("Default {}: {}", c.platform().agent_word(), e.what),
        MappingPart::Flows => format!("Flows: {}", e.what),
        MappingPart::Flow(key) => {
            format!("Flow {}: {}", flow_name(&key).unwrap_or(key), e.what)
        }
    };
    let checked = unknown.map_or(Ok(()), Err).and_then(|()| {
        mapping
            .check(c.platform())
            .map_err(labelled)
            .and_then(|()| deadline.map_or(Ok(()), |d| check_deadline(c.platform(), d)))
    });
    let result = match checked {
        Ok(()) => connections::update(
            &app.db,
            a.id,
            c.id,
            Change {
                mapping: Some(mapping),
                deadline_ms: deadline,
                ..Change::default()
            },
        )
        .await
        .map(|()| "Saved: calls use it at once.".to_owned()),
        Err(e) => Err(StoreError::Conflict(e)),
    };
    app.catalog.invalidate();
    let to = if result.is_ok() { &configure } else { &back };
    after(&app, &f.admin, to, result)
}

#[derive(Deserialize)]
struct Nothing {}

/// Asks before a connection is deleted (GET: changes nothing).
async fn confirm_delete(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, cid)): Path<(String, String)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let c = connection_of(&app, a.id, &cid).await?;
    let flash = app.flash.take(admin.session_id);
    let base = format!("/admin/agents/{id}/connections");
    let page = Confirmation::new(
        Page::new(&admin, format!("Delete {} · {}", isolate(&c.name), isolate(&a.name)), &flash),
        ("Delete the connection ", &c.name, "?"),
        format!("{base}/{cid}/delete"),
        format!("{base}/{cid}/configure"),
    )
    .crumb("/admin/agents", "Agents")
    .crumb(format!("/admin/agents/{id}"), &a.name)
    .crumb(&base, "Voice platforms")
    .says(format!(
        "Its URL stops answering at once: {} gets 404 for every call it asks about, until the number points elsewhere.",
        c.platform().label()
    ))
    .says("Calls it already started stay in the agent's call history.")
    .buttons("Keep it", "Delete");
    Ok(render(page))
}

async fn delete(
    State(app): State<AppState>,
    Path((id, cid)): Path<(String, String)>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let c = connection_of(&app, a.id, &cid).await?;
    let result = connections::delete(&app.db, a.id, c.id)
        .await
        .map(|()| "Connection deleted: its URL no longer answers.".to_owned());
    app.catalog.invalidate();
    app.connect.forget(c.id);
    after(
        &app,
        &f.admin,
        &format!("/admin/agents/{id}/connections"),
        result,
    )
}

struct EntryView {
    accepted: bool,
    declined: bool,
    status: u16,
    received_at: String,
    verdict: String,
    caller: String,
    call_id: String,
    answer: String,
}

impl EntryView {
    fn of(e: &Entry) -> Self {
        Self {
            accepted: e.accepted,
            declined: e.declined,
            status: e.status,
            received_at: rfc3339(e.received_at),
            verdict: e.verdict.clone(),
            caller: e.caller.clone().unwrap_or_default(),
            call_id: e.call_id.clone().unwrap_or_default(),
            answer: e.answer.text(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/connection_test.html")]
struct TestStep {
    page: Page,
    agent_id: String,
    agent_name: String,
    id: i64,
    name: String,
    url: String,
    last: u64,
    /// Requests kept per connection (and shown).
    kept: usize,
    entries: Vec<EntryView>,
}

async fn test_step(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, cid)): Path<(String, String)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let c = connection_of(&app, a.id, &cid).await?;
    let flash = app.flash.take(admin.session_id);
    let (mut all, _) = app.connect.since(c.id, 0);
    let last = all.last().map_or(0, |e| e.id);
    all.reverse();
    Ok(render(TestStep {
        page: Page::new(&admin, format!("Test · {}", isolate(&c.name)), &flash),
        agent_id: a.public_id,
        agent_name: a.name,
        id: c.id,
        url: crate::http::connect::url(&app.public_url, &c.slug),
        name: c.name,
        last,
        kept: crate::connect::log::KEPT_PER_CONNECTION,
        entries: all.iter().map(EntryView::of).collect(),
    }))
}

/// How often an open viewer looks for new requests.
const VIEWER_POLL: Duration = Duration::from_millis(250);
/// Every how many polls it checks that its session is still signed in.
const SESSION_CHECK_EVERY: u32 = 8;

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: Option<u64>,
}

/// The Test viewer's stream: each request after the page's newest, as it comes, with its
/// verdict (`event: request`, the entry as JSON). Under a flood, more than the viewer keeps
/// may come between two looks: `event: skipped` says how many were forgotten unseen. It ends
/// with the admin's session, or with `event: gone` when the connection is deleted.
async fn events(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, cid)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, HtmlError> {
    let a = agent(&app, &id).await?;
    let c = connection_of(&app, a.id, &cid).await?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(q.after)
        .unwrap_or(0);
    let session = admin.session_id;
    let first = stream::once(async { Ok(Event::default().comment("listening")) });
    let rest = stream::unfold(Some((last, 0u32)), move |state| {
        let app = app.clone();
        async move {
            let (last, mut polls) = state?;
            loop {
                tokio::time::sleep(VIEWER_POLL).await;
                polls = polls.wrapping_add(1);
                if polls % SESSION_CHECK_EVERY == 0 {
                    if !matches!(admins::session_alive(&app.db, session).await, Ok(true)) {
                        return None;
                    }
                    if matches!(connections::find(&app.db, c.id).await, Ok(None)) {
                        let gone = Event::default()
                            .event("gone")
                            .data(r#"{"connection":"deleted"}"#);
                        return Some((stream::iter(vec![Ok(gone)]), None));
                    }
                }
                let (new, forgotten) = app.connect.since(c.id, last);
                if let Some(newest) = new.last().map(|e| e.id) {
                    let skipped = (forgotten > 0).then(|| {
                        Ok(Event::default()
                            .event("skipped")
                            .data(format!(r#"{{"count":{forgotten}}}"#)))
                    });
                    let events: Vec<Result<Event, std::convert::Infallible>> = skipped
                        .into_iter()
                        .chain(new.iter().map(|e| {
                            Ok(Event::default()
                                .event("request")
                                .id(e.id.to_string())
                                .json_data(e)
                                .unwrap_or_default())
                        }))
                        .collect();
                    return Some((stream::iter(events), Some((newest, polls))));
                }
            }
        }
    })
    .flatten();
    Ok(Sse::new(first.chain(rest)).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}
