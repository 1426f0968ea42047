//! The call simulator: starts a call of the published version as the call runtime would,
//! with exactly the webhook payload typed in the form arriving through one of its Webhook
//! actions at the time given (or late, after the call fell back), never data cached for a
//! real call; answers its questions from the admin's list; then shows the call's timeline.

use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::calls::answer_call;
use super::{Page, PageResult, agent, agent_draft, isolate, render};
use crate::auth::session::{Admin, AdminForm};
use crate::calls::{Simulation, StartCall};
use crate::domain::document::MAX_WAIT_MS as MAX_FALLBACK_WAIT_MS;
use crate::domain::payload;
use crate::domain::runtime::Question;
use crate::domain::variables::{SYSTEM_VARIABLES, VariableName};
use crate::error::AppError;
use crate::http::AppState;
use crate::store::agents::Agent;
use crate::store::{calls as stored_calls, documents, rfc3339};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/agents/{agent}/simulate", get(form).post(simulate))
}

/// The caller number the form starts with.
const EXAMPLE_CALLER: &str = "+12125550123";

/// Questions one simulation answers at most, so that a flow going round cannot hold it.
const MAX_ANSWERS: usize = 50;

/// A Webhook action of the published version the payload can be sent through.
struct WebhookChoice {
    /// The endpoint's row.
    id: i64,
    name: String,
    wait_ms: i64,
    enabled: bool,
}

async fn webhooks(app: &AppState, a: &Agent) -> Result<Vec<WebhookChoice>, sqlx::Error> {
    let Some(published) = documents::published(&app.db, a.id).await? else {
        return Ok(Vec::new());
    };
    let endpoints = documents::endpoints(&app.db, a.id).await?;
    Ok(published
        .document
        .webhooks()
        .filter_map(|(x, wait_ms, _, enabled)| {
            let e = endpoints.iter().find(|e| e.key == x.key)?;
            Some(WebhookChoice {
                id: e.id,
                name: x.name.clone(),
                wait_ms,
                enabled,
            })
        })
        .collect())
}

/// The simulator's form, as typed (and as shown again when it has a mistake).
#[derive(Deserialize, Default)]
#[serde(default)]
struct SimulateForm {
    from: String,
    to: String,
    payload: String,
    action: String,
    delay_ms: String,
    answers: String,
}

#[derive(Template)]
#[template(path = "admin/simulate.html")]
struct SimulatePage {
    page: Page,
    agent_id: String,
    agent_name: String,
    first_flow: Option<String>,
    /// The version simulated calls run.
    version: Option<i64>,
    webhooks: Vec<WebhookChoice>,
    form: SimulateForm,
    max_delay: i64,
}

fn example_payload(agent_id: &str, caller: &str) -> String {
    serde_json::to_string_pretty(&json!({
        "agentId": agent_id,
        "phoneNumber": caller,
        "customer_name": "Jane Doe",
        "priority": "high",
        "issue_type": "billing"
    }))
    .expect("JSON")
}

async fn form(State(app): State<AppState>, admin: Admin, Path(id): Path<String>) -> PageResult {
    let a = agent(&app, &id).await?;
    let first_flow = agent_draft(&app, &a).await?.doc().first_flow.clone();
    let flash = app.flash.take(admin.session_id);
    let webhooks = webhooks(&app, &a).await?;
    let form = SimulateForm {
        from: EXAMPLE_CALLER.into(),
        payload: example_payload(&a.public_id, EXAMPLE_CALLER),
        action: webhooks
            .first()
            .map(|w| w.id.to_string())
            .unwrap_or_default(),
        delay_ms: "0".into(),
        ..SimulateForm::default()
    };
    let page = Page::new(
        &admin,
        format!("Simulate a call · {}", isolate(&a.name)),
        &flash,
    );
    Ok(render(simulate_page(page, a, first_flow, webhooks, form)))
}

fn simulate_page(
    page: Page,
    a: Agent,
    first_flow: Option<String>,
    webhooks: Vec<WebhookChoice>,
    form: SimulateForm,
) -> SimulatePage {
    SimulatePage {
        page,
        version: a.published_version,
        agent_id: a.public_id,
        agent_name: a.name,
        first_flow,
        webhooks,
        form,
        max_delay: MAX_FALLBACK_WAIT_MS,
    }
}

/// The JSON object to send, if one was typed.
fn parse_payload(text: &str) -> Result<Option<Map<String, Value>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err("Webhook payload: it must be one JSON object, { … }".into()),
        Err(e) => Err(format!("Webhook payload: not valid JSON ({e})")),
    }
}

/// How long after the call's start the payload is sent.
fn parse_delay(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    match text.parse::<u64>() {
        Ok(ms) if ms <= MAX_FALLBACK_WAIT_MS as u64 => Ok(ms),
        _ => Err(format!(
            "Send it after: {text:?} is not a whole number of milliseconds from 0 to {MAX_FALLBACK_WAIT_MS}"
        )),
    }
}

/// Answers for Collect blocks, one `name=value` a line; values are text, converted to the
/// variable's declared type when the call takes them.
fn parse_answers(text: &str) -> Result<Map<String, Value>, String> {
    let mut answers = Map::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = format!("Answers, line {}", i + 1);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("{at}: write name=value, got {line:?}"));
        };
        let name = VariableName::parse(name.trim()).map_err(|e| format!("{at}: {e}"))?;
        if SYSTEM_VARIABLES.contains(&name.as_str()) {
            return Err(format!("{at}: {name} is a system variable"));
        }
        if answers
            .insert(name.to_string(), Value::String(value.trim().to_owned()))
            .is_some()
        {
            return Err(format!("{at}: {name} is answered twice"));
        }
    }
    Ok(answers)
}

/// A simulation whose input was checked: nothing of it has started yet.
struct Plan {
    call: StartCall,
    /// What the chosen webhook receives for the caller, and when; none when no payload was
    /// typed or it is for another caller.
    send: Option<Simulation>,
    /// What the page says about the payload.
    notes: Vec<String>,
    /// The endpoint whose cached data for the caller the simulation leaves alone.
    checked: Vec<(i64, String)>,
    answers: Map<String, Value>,
}

fn plan(
    app: &AppState,
    a: &Agent,
    webhooks: &[WebhookChoice],
    schema: &[crate::domain::variables::VariableDef],
    f: &SimulateForm,
) -> Result<Plan, String> {
    let region = a.region();
    let from = f.from.trim();
    if from.is_empty() {
        return Err("Caller number: it is required".into());
    }
    let caller = app
        .phones
        .parse(from, region)
        .map_err(|e| format!("Caller number: {e}"))?;
    let to = Some(f.to.trim()).filter(|t| !t.is_empty());
    if let Some(to) = to {
        app.phones
            .parse(to, region)
            .map_err(|e| format!("Called number: {e}"))?;
    }
    let payload = parse_payload(&f.payload)?;
    let delay = parse_delay(&f.delay_ms)?;
    let answers = parse_answers(&f.answers)?;
    let mut notes = Vec::new();
    let send = match payload {
        None => None,
        Some(body) => {
            let chosen = match webhooks {
                [] => {
                    return Err(
                        "Webhook payload: the published version has no Webhook action to send it \
                         through"
                            .into(),
                    );
                }
                [only] => only,
                several => several
                    .iter()
                    .find(|w| w.id.to_string() == f.action.trim())
                    .ok_or("Send it through: choose one of the agent's Webhook actions")?,
            };
            let text = Value::Object(body).to_string();
            let raw = payload::parse(text.as_bytes()).map_err(|e| match e {
                payload::PayloadError::Malformed(m) => format!("Webhook payload: {m}"),
                payload::PayloadError::Invalid(p) => format!("Webhook payload: {}", details(&p)),
            })?;
            let valid =
                payload::validate(raw, &a.public_id, schema, |p| app.phones.parse(p, region))
                    .map_err(|p| format!("Webhook payload: {}", details(&p)))?;
            let for_caller = valid.phone.as_str() == caller.as_str();
            let fields = Value::Object(valid.fields).to_string();
            let at = Duration::from_millis(delay);
            let name = &chosen.name;
            if !chosen.enabled {
                notes.push(format!(
                    "{name:?} is disabled: calls do not wait for it, and the payload was not used."
                ));
                None
            } else if !for_caller {
                notes.push(format!(
                    "The payload is for {}, not the caller: the call could not use it.",
                    valid.phone.as_str()
                ));
                None
            } else {
                if delay as i64 > chosen.wait_ms {
                    notes.push(format!(
                        "The payload came through {name:?} {delay} ms after the call started, \
                         after its {} ms wait: the call fell back, and the payload is recorded \
                         as late data.",
                        chosen.wait_ms
                    ));
                } else {
                    notes.push(format!(
                        "The payload came through {name:?} {delay} ms after the call started."
                    ));
                }
                Some(Simulation {
                    action_id: chosen.id,
                    fields,
                    at,
                })
            }
        }
    };
    Ok(Plan {
        call: StartCall {
            agent_id: a.public_id.clone(),
            from: caller.to_string(),
            to: to.map(str::to_owned),
        },
        checked: webhooks.iter().map(|w| (w.id, w.name.clone())).collect(),
        send,
        notes,
        answers,
    })
}

fn details(problems: &[payload::Problem]) -> String {
    problems
        .iter()
        .map(|p| p.detail.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Deserialize)]
struct Asked {
    question: Option<Question>,
}

/// Runs a simulation of the published version. The call waits for its Webhook actions as a
/// real one does, with the typed payload as the only data: arriving at its time it ends the
/// wait for its action; later, the call falls back and the payload is recorded as late
/// data. Data cached for the caller by real senders is neither used nor touched (the page
/// says so). Then the call's questions are answered from the list while it asks for a
/// variable that has an answer there.
async fn simulate(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<SimulateForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let first_flow = agent_draft(&app, &a).await?.doc().first_flow.clone();
    let AdminForm { admin, form } = f;
    let webhooks = webhooks(&app, &a).await?;
    let runtime = app
        .catalog
        .agent(&a.public_id)
        .await?
        .ok_or_else(|| super::not_found("This agent"))?;
    let plan = match plan(&app, &a, &webhooks, &runtime.schema, &form) {
        Ok(plan) => plan,
        Err(message) => {
            return Ok(refused(
                &app, &admin, a, first_flow, webhooks, form, message,
            ));
        }
    };
    let Plan {
        call,
        send,
        mut notes,
        checked,
        answers,
    } = plan;
    let caller = call.from.clone();
    // Webhooks already acknowledged may still be in the ingest journal: committed first, so
    // that a real caller's cached data is seen (and said to be left alone).
    app.writer.settle().await?;
    for (endpoint, name) in &checked {
        if let Some((fields, at)) = stored_calls::cached_for(&app.db, *endpoint, &caller).await? {
            let names: Vec<String> = serde_json::from_str::<Map<String, Value>>(&fields)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            notes.push(format!(
                "{name:?} holds data for this caller ({}, received {}): the simulation left it \
                 for the caller's next real call.",
                names.join(", "),
                rfc3339(at)
            ));
        }
    }
    let late = send.clone().filter(|s| {
        webhooks
            .iter()
            .any(|w| w.id == s.action_id && s.at.as_millis() as i64 > w.wait_ms)
    });
    let started_at = std::time::Instant::now();
    let started = match crate::calls::simulate(&app, a.id, call, send).await {
        Ok(s) => s,
        Err(AppError::Problem(p)) => {
            return Ok(refused(
                &app, &admin, a, first_flow, webhooks, form, p.detail,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(late) = late {
        tokio::time::sleep_until((started_at + late.at).into()).await;
        stored_calls::record_late(
            &app.db,
            &started.call_id,
            &late.fields,
            crate::store::now_ms(),
        )
        .await?;
    }
    let mut refusal = None;
    let mut question = serde_json::from_str::<Asked>(&started.json)
        .ok()
        .and_then(|asked| asked.question);
    for _ in 0..MAX_ANSWERS {
        let Some(q) = question.take() else { break };
        let Some(value) = answers.get(&q.variable) else {
            notes.push(format!(
                "The call waits for {}: answer it below.",
                q.variable
            ));
            break;
        };
        let mut answer = Map::new();
        answer.insert(q.variable.clone(), value.clone());
        match answer_call(&app, a.id, &started.call_id, answer).await? {
            Ok(view) => question = view.question,
            Err(e) => {
                refusal = Some(format!("{} ({})", e, q.variable));
                break;
            }
        }
    }
    let session = admin.session_id;
    if !notes.is_empty() {
        app.flash.notice(session, notes.join(" "));
    }
    if let Some(e) = refusal {
        app.flash.error(session, e);
    }
    Ok(Redirect::to(&format!("/admin/agents/{id}/calls/{}", started.call_id)).into_response())
}

/// The form again, as it was typed, with what is wrong with it; nothing was started.
fn refused(
    app: &AppState,
    admin: &Admin,
    a: Agent,
    first_flow: Option<String>,
    webhooks: Vec<WebhookChoice>,
    form: SimulateForm,
    message: String,
) -> axum::response::Response {
    let flash = app.flash.take(admin.session_id);
    let mut page = Page::new(
        admin,
        format!("Simulate a call · {}", isolate(&a.name)),
        &flash,
    );
    page.error = Some(message);
    let mut res = render(simulate_page(page, a, first_flow, webhooks, form));
    *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_one_name_value_a_line() {
        let answers = parse_answers("reason = billing\n\n  account=42 \nnote=a=b").unwrap();
        assert_eq!(answers["reason"], "billing");
        assert_eq!(answers["account"], "42");
        assert_eq!(answers["note"], "a=b");
    }

    #[test]
    fn answers_name_the_line_that_is_wrong() {
        let e = parse_answers("reason=x\njust text").unwrap_err();
        assert!(e.contains("line 2") && e.contains("name=value"), "{e}");
        let e = parse_answers("1st=x").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = parse_answers("caller_phone=+1").unwrap_err();
        assert!(e.contains("system variable"), "{e}");
        let e = parse_answers("a=1\na=2").unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn a_payload_must_be_one_json_object() {
        assert_eq!(parse_payload("  ").unwrap(), None);
        assert!(parse_payload(r#"{"agentId": "x"}"#).unwrap().is_some());
        let e = parse_payload("[1, 2]").unwrap_err();
        assert!(e.contains("JSON object"), "{e}");
        let e = parse_payload(r#"{"agentId": }"#).unwrap_err();
        assert!(e.contains("not valid JSON") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn the_delay_is_0_to_10000_ms() {
        assert_eq!(parse_delay("").unwrap(), 0);
        assert_eq!(parse_delay(" 2500 ").unwrap(), 2500);
        assert!(parse_delay("10001").is_err());
        assert!(parse_delay("-1").is_err());
        assert!(parse_delay("1.5").is_err());
    }
}
