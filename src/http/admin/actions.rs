//! Pre-call actions: the Webhook wizard (Setup → Configure → Test), the live Test viewer,
//! deliveries, reordering and deleting.

use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{HtmlError, Page, PageResult, after, agent, first_flow_link, not_found, render};
use crate::auth::session::{Admin, AdminForm};
use crate::domain::variables::{VarType, VariableName};
use crate::http::{AppState, ingest};
use crate::store::actions::{self, ActionRow, NewWebhook, WebhookChanges};
use crate::store::admins;
use crate::store::agents::Agent;
use crate::store::deliveries::{self, DeliveryRow};
use crate::store::refusals;
use crate::store::variables::{self, NewVariable};
use crate::store::{StoreError, now_ms, rfc3339};

pub fn router() -> Router<AppState> {
    let base = "/admin/agents/{agent}/actions";
    Router::new()
        .route(&format!("{base}/new"), get(setup_step))
        .route(base, post(create))
        .route(&format!("{base}/{{action}}/configure"), get(configure_step))
        .route(&format!("{base}/{{action}}/settings"), post(save_settings))
        .route(&format!("{base}/{{action}}/key"), post(regenerate_key))
        .route(
            &format!("{base}/{{action}}/keys/{{key}}/revoke"),
            post(revoke_key),
        )
        .route(&format!("{base}/{{action}}/signing"), post(save_signing))
        .route(
            &format!("{base}/{{action}}/signing-secret"),
            post(regenerate_signing_secret),
        )
        .route(&format!("{base}/{{action}}/test"), get(test_step))
        .route(&format!("{base}/{{action}}/events"), get(events))
        .route(&format!("{base}/{{action}}/sample"), post(send_sample))
        .route(
            &format!("{base}/{{action}}/variables"),
            post(save_variables),
        )
        .route(
            &format!("{base}/{{action}}/deliveries"),
            get(deliveries_page),
        )
        .route(&format!("{base}/{{action}}/move"), post(move_action))
        .route(&format!("{base}/{{action}}/delete"), post(delete))
}

async fn action_of(app: &AppState, a: &Agent, action_id: i64) -> Result<ActionRow, HtmlError> {
    actions::find(&app.db, a.id, action_id)
        .await?
        .filter(|x| x.kind == "webhook")
        .ok_or_else(|| not_found("This pre-call action"))
}

#[derive(Template)]
#[template(path = "admin/wizard_setup.html")]
struct SetupStep {
    page: Page,
    agent_id: String,
    agent_name: String,
    back: String,
}

async fn setup_step(
    State(app): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let flash = app.flash.take(admin.session_id);
    Ok(render(SetupStep {
        page: Page::new(&admin, "Add a pre-call webhook", &flash),
        back: first_flow_link(&a),
        agent_id: a.public_id,
        agent_name: a.name,
    }))
}

#[derive(Deserialize)]
struct NewAction {
    kind: String,
    name: String,
}

async fn create(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<NewAction>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    if f.form.kind != "webhook" {
        return after(
            &app,
            &f.admin,
            &format!("/admin/agents/{id}/actions/new"),
            Err(StoreError::Conflict("choose an action".into())),
        );
    }
    let new = NewWebhook {
        name: f.form.name,
        fallback_wait_ms: actions::DEFAULT_FALLBACK_WAIT_MS,
        ttl_secs: actions::DEFAULT_TTL_SECS,
    };
    match actions::create_webhook(&app.db, a.id, &new).await {
        Ok(created) => {
            app.catalog.invalidate();
            app.flash.secret(
                f.admin.session_id,
                "webhook",
                created.action_id,
                &created.key,
            );
            Ok(Redirect::to(&format!(
                "/admin/agents/{id}/actions/{}/configure",
                created.action_id
            ))
            .into_response())
        }
        Err(e) => after(
            &app,
            &f.admin,
            &format!("/admin/agents/{id}/actions/new"),
            Err(e),
        ),
    }
}

#[derive(Template)]
#[template(path = "admin/wizard_configure.html")]
struct ConfigureStep {
    page: Page,
    agent_id: String,
    agent_name: String,
    action_id: i64,
    name: String,
    url: String,
    /// The key, only right after it was made.
    key: Option<String>,
    /// The keys that open the URL now: the current one, then replaced ones in their grace.
    keys: Vec<KeyView>,
    /// A working command: plain, or signing its request when signatures are required.
    curl: String,
    wait_seconds: String,
    ttl_minutes: String,
    enabled: bool,
    signing_required: bool,
    /// The signing secret, only right after it was made.
    signing_secret: Option<String>,
    signing_last_chars: String,
    /// The same request in Python and in Node.js.
    python: String,
    node: String,
}

struct KeyView {
    id: i64,
    last_chars: String,
    /// Empty for the current key.
    valid_until: String,
}

/// Grace periods the Configure page offers for the key being replaced.
const KEY_GRACES: [(i64, &str); 4] = [
    (0, "none: the old key stops at once"),
    (3600, "1 hour"),
    (86_400, "24 hours"),
    (604_800, "7 days"),
];

/// A sample body with the agent's real `agentId`.
fn sample_body(agent_id: &str) -> Value {
    json!({
        "agentId": agent_id,
        "phoneNumber": "+12125550123",
        "customer_name": "Jane Doe",
        "priority": "high",
        "issue_type": "billing"
    })
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A shell script that signs the sample body as Standard Webhooks has it and posts it
/// (`sh`, `openssl`, `base64`, `od`, `curl`). The key and secret are written in when known,
/// else read from `$PRECALL_API_KEY` and `$PRECALL_SIGNING_SECRET`.
fn signed_curl(url: &str, key: Option<&str>, secret: Option<&str>, agent_id: &str) -> String {
    let body = sample_body(agent_id).to_string();
    let secret = secret.map_or("\"$PRECALL_SIGNING_SECRET\"".to_owned(), shell_quote);
    let auth = key.map_or("\"X-Authorization: $PRECALL_API_KEY\"".to_owned(), |k| {
        shell_quote(&format!("X-Authorization: {k}"))
    });
    [
        format!("secret={secret}"),
        format!("body={}", shell_quote(&body)),
        r#"id="evt_$(date +%s)_$$""#.to_owned(),
        "ts=$(date +%s)".to_owned(),
        r#"hexkey=$(printf '%s' "${secret#whsec_}" | base64 -d | od -An -v -tx1 | tr -d ' \n')"#
            .to_owned(),
        r#"sig=$(printf '%s' "$id.$ts.$body" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64)"#
            .to_owned(),
        format!("curl -X POST {} \\", shell_quote(url)),
        format!("  -H {auth} \\"),
        "  -H 'Content-Type: application/json' \\".to_owned(),
        r#"  -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig" \"#
            .to_owned(),
        r#"  -d "$body""#.to_owned(),
    ]
    .join("\n")
}

/// The same signed request in Python 3, standard library only.
fn signed_python(url: &str, key: Option<&str>, secret: Option<&str>, agent_id: &str) -> String {
    let literal = |v: &str| serde_json::to_string(v).expect("JSON");
    let secret = secret.map_or(
        r#"os.environ["PRECALL_SIGNING_SECRET"]"#.to_owned(),
        literal,
    );
    let key = key.map_or(r#"os.environ["PRECALL_API_KEY"]"#.to_owned(), literal);
    let body = literal(&sample_body(agent_id).to_string());
    let url = literal(url);
    format!(
        r#"import base64, hashlib, hmac, os, time, urllib.request, uuid

secret = {secret}
body = {body}.encode()
msg_id, ts = f"evt_{{uuid.uuid4().hex}}", str(int(time.time()))
key = base64.b64decode(secret.removeprefix("whsec_"))
mac = hmac.new(key, f"{{msg_id}}.{{ts}}.".encode() + body, hashlib.sha256)
req = urllib.request.Request({url}, data=body, method="POST", headers={{
    "X-Authorization": {key},
    "Content-Type": "application/json",
    "webhook-id": msg_id,
    "webhook-timestamp": ts,
    "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode(),
}})
with urllib.request.urlopen(req) as res:
    print(res.status, res.read().decode())"#
    )
}

/// A plain request with `curl`; the key written in when known, else read from
/// `$PRECALL_API_KEY` (in double quotes, so that the shell expands it).
fn curl(url: &str, key: Option<&str>, agent_id: &str) -> String {
    let body = serde_json::to_string_pretty(&sample_body(agent_id)).expect("JSON");
    let auth = key.map_or("\"X-Authorization: $PRECALL_API_KEY\"".to_owned(), |k| {
        shell_quote(&format!("X-Authorization: {k}"))
    });
    format!(
        "curl -X POST {} \\\n  -H {auth} \\\n  -H 'Content-Type: application/json' \\\n  -d {}",
        shell_quote(url),
        shell_quote(&body)
    )
}

/// The same plain request in Python 3, standard library only.
fn python(url: &str, key: Option<&str>, agent_id: &str) -> String {
    let literal = |v: &str| serde_json::to_string(v).expect("JSON");
    let key = key.map_or(r#"os.environ["PRECALL_API_KEY"]"#.to_owned(), literal);
    let body = literal(&sample_body(agent_id).to_string());
    let url = literal(url);
    format!(
        r#"import os, urllib.request

body = {body}.encode()
req = urllib.request.Request({url}, data=body, method="POST", headers={{
    "X-Authorization": {key},
    "Content-Type": "application/json",
}})
with urllib.request.urlopen(req) as res:
    print(res.status, res.read().decode())"#
    )
}

/// The request in Node.js (18 or newer: `fetch` is built in), plain or signed.
fn node(url: &str, key: Option<&str>, secret: Option<Option<&str>>, agent_id: &str) -> String {
    let literal = |v: &str| serde_json::to_string(v).expect("JSON");
    let key = key.map_or("process.env.PRECALL_API_KEY".to_owned(), literal);
    let body = literal(&sample_body(agent_id).to_string());
    let url = literal(url);
    match secret {
        None => format!(
            r#"const body = {body};
fetch({url}, {{
  method: "POST",
  headers: {{ "X-Authorization": {key}, "Content-Type": "application/json" }},
  body,
}}).then(async (res) => console.log(res.status, await res.text()));"#
        ),
        Some(secret) => {
            let secret = secret.map_or("process.env.PRECALL_SIGNING_SECRET".to_owned(), literal);
            format!(
                r#"const crypto = require("crypto");
const secret = {secret};
const body = {body};
const id = `evt_${{crypto.randomUUID()}}`;
const ts = Math.floor(Date.now() / 1000).toString();
const hmacKey = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
const sig = crypto.createHmac("sha256", hmacKey).update(`${{id}}.${{ts}}.${{body}}`).digest("base64");
fetch({url}, {{
  method: "POST",
  headers: {{
    "X-Authorization": {key},
    "Content-Type": "application/json",
    "webhook-id": id,
    "webhook-timestamp": ts,
    "webhook-signature": `v1,${{sig}}`,
  }},
  body,
}}).then(async (res) => console.log(res.status, await res.text()));"#
            )
        }
    }
}

async fn configure_step(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, action_id)): Path<(String, i64)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let x = action_of(&app, &a, action_id).await?;
    let flash = app.flash.take(admin.session_id);
    let key = flash.secret_for("webhook", x.id);
    let signing_secret = flash.secret_for("signing", x.id);
    let signing_required = x.signing_required.unwrap_or(false);
    let url = ingest::url(&app.public_url, x.slug.as_deref().unwrap_or_default());
    let (shown_key, secret) = (key.as_deref(), signing_secret.as_deref());
    let (curl, python, node) = if signing_required {
        (
            signed_curl(&url, shown_key, secret, &a.public_id),
            signed_python(&url, shown_key, secret, &a.public_id),
            node(&url, shown_key, Some(secret), &a.public_id),
        )
    } else {
        (
            curl(&url, shown_key, &a.public_id),
            python(&url, shown_key, &a.public_id),
            node(&url, shown_key, None, &a.public_id),
        )
    };
    let keys = actions::valid_keys(&app.db, x.id)
        .await?
        .into_iter()
        .map(|k| KeyView {
            id: k.id,
            last_chars: k.last_chars,
            valid_until: k.expires_at.map(rfc3339).unwrap_or_default(),
        })
        .collect();
    Ok(render(ConfigureStep {
        page: Page::new(&admin, format!("Configure · {}", x.name), &flash),
        agent_id: a.public_id,
        agent_name: a.name,
        action_id: x.id,
        name: x.name,
        url,
        key,
        keys,
        curl,
        wait_seconds: format_seconds(x.fallback_wait_ms.unwrap_or(0)),
        ttl_minutes: format_minutes(x.ttl_secs.unwrap_or(0)),
        enabled: x.enabled.unwrap_or(true),
        signing_required,
        signing_secret,
        signing_last_chars: x.signing_last_chars.unwrap_or_default(),
        python,
        node,
    }))
}

fn format_seconds(ms: i64) -> String {
    let s = format!("{:.3}", ms as f64 / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn format_minutes(secs: i64) -> String {
    let s = format!("{:.2}", secs as f64 / 60.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[derive(Deserialize)]
struct SettingsForm {
    name: String,
    wait_seconds: String,
    ttl_minutes: String,
    #[serde(default)]
    enabled: Option<String>,
}

/// Checks the Advanced Settings; values are validated here, whatever the browser allowed.
fn parse_settings(f: &SettingsForm) -> Result<(i64, i64), String> {
    let wait: f64 = f.wait_seconds.trim().parse().map_err(|_| {
        format!(
            "time wait before fallback: {:?} is not a number of seconds",
            f.wait_seconds
        )
    })?;
    if !(0.0..=10.0).contains(&wait) {
        return Err("time wait before fallback must be 0 to 10 seconds".into());
    }
    let ttl: f64 = f
        .ttl_minutes
        .trim()
        .parse()
        .map_err(|_| format!("data TTL: {:?} is not a number of minutes", f.ttl_minutes))?;
    let ttl_secs = (ttl * 60.0).round() as i64;
    actions::check_ttl(ttl_secs)
        .map_err(|_| "data TTL must be 1 second to 7 days (10 080 minutes)".to_owned())?;
    Ok(((wait * 1000.0).round() as i64, ttl_secs))
}

async fn save_settings(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, i64)>,
    f: AdminForm<SettingsForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let x = action_of(&app, &a, action_id).await?;
    let back = format!("/admin/agents/{id}/actions/{action_id}/configure");
    let result = match parse_settings(&f.form) {
        Err(e) => Err(StoreError::Conflict(e)),
        Ok((wait, ttl)) => {
            let changes = WebhookChanges {
                enabled: Some(f.form.enabled.is_some()),
                fallback_wait_ms: Some(wait),
                ttl_secs: Some(ttl),
                signing_required: None,
            };
            match actions::rename(&app.db, a.id, x.id, &f.form.name).await {
                Ok(()) => actions::update_webhook(&app.db, x.id, &changes)
                    .await
                    .map(|_| "Settings saved.".to_owned()),
                Err(e) => Err(e),
            }
        }
    };
    app.catalog.invalidate();
    after(&app, &f.admin, &back, result)
}

#[derive(Deserialize)]
struct Nothing {}

#[derive(Deserialize)]
struct Regenerate {
    /// How long the replaced key keeps working, in seconds; one of [`KEY_GRACES`].
    #[serde(default)]
    grace_secs: String,
}

async fn regenerate_key(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, i64)>,
    f: AdminForm<Regenerate>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let x = action_of(&app, &a, action_id).await?;
    let back = format!("/admin/agents/{id}/actions/{action_id}/configure");
    let raw = f.form.grace_secs.trim();
    let grace = if raw.is_empty() {
        Ok(0)
    } else {
        raw.parse::<i64>()
    };
    let Some(&(grace, label)) = grace
        .ok()
        .and_then(|g| KEY_GRACES.iter().find(|(s, _)| *s == g))
    else {
        let problem = format!(
            "grace period: {raw:?} is not one offered (none, 1 hour, 24 hours, 7 days); nothing changed"
        );
        return after(&app, &f.admin, &back, Err(StoreError::Conflict(problem)));
    };
    let key = actions::regenerate_key(&app.db, x.id, grace).await?;
    app.catalog.invalidate();
    app.flash.secret(f.admin.session_id, "webhook", x.id, &key);
    let notice = if grace == 0 {
        "A new key was made; the old one stopped working.".to_owned()
    } else {
        format!("A new key was made; the old one keeps working for {label}.")
    };
    app.flash.notice(f.admin.session_id, notice);
    Ok(Redirect::to(&back).into_response())
}

async fn revoke_key(
    State(app): State<AppState>,
    Path((id, action_id, key_id)): Path<(String, i64, i64)>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let x = action_of(&app, &a, action_id).await?;
    let result = actions::revoke_key(&app.db, x.id, key_id)
        .await
        .map(|_| "The old key stopped working.".to_owned());
    app.catalog.invalidate();
    let back = format!("/admin/agents/{id}/actions/{action_id}/configure");
    after(&app, &f.admin, &back, result)
}

#[derive(Deserialize)]
struct SigningForm {
    #[serde(default)]
    required: Option<String>,
}

async fn save_signing(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, i64)>,
    f: AdminForm<SigningForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let x = action_of(&app, &a, action_id).await?;
    let back = format!("/admin/agents/{id}/actions/{action_id}/configure");
    let required = match f.form.required.as_deref() {
        None => false,
        Some("on") => true,
        Some(other) => {
            let problem = format!("require signed requests: {other:?} is neither on nor off");
            return after(&app, &f.admin, &back, Err(StoreError::Conflict(problem)));
        }
    };
    let changes = WebhookChanges {
        signing_required: Some(required),
        ..WebhookChanges::default()
    };
    let result = actions::update_webhook(&app.db, x.id, &changes).await;
    app.catalog.invalidate();
    let result = result.map(|made| {
        if let Some(secret) = &made {
            app.flash.signing_secret(f.admin.session_id, x.id, secret);
        }
        if required {
            "Signed requests are required: unsigned requests are refused.".to_owned()
        } else {
            "Signatures are no longer required.".to_owned()
        }
    });
    after(&app, &f.admin, &back, result)
}

async fn regenerate_signing_secret(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, i64)>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let x = action_of(&app, &a, action_id).await?;
    let secret = actions::regenerate_signing_secret(&app.db, x.id).await?;
    app.catalog.invalidate();
    app.flash.signing_secret(f.admin.session_id, x.id, &secret);
    let back = format!("/admin/agents/{id}/actions/{action_id}/configure");
    after(
        &app,
        &f.admin,
        &back,
        Ok("A new signing secret was made; the old one stopped working.".to_owned()),
    )
}

#[derive(Template)]
#[template(path = "admin/wizard_test.html")]
struct TestStep {
    page: Page,
    agent_id: String,
    agent_name: String,
    action_id: i64,
    name: String,
    url: String,
    back: String,
    /// Requests refused without a valid key in the last hour, as a sentence.
    refused: String,
}

/// The span of the refusal counts the console shows.
const REFUSALS_SPAN_MS: i64 = 3600 * 1000;

/// Webhook `action_id`'s refusals without a valid key in the last hour, by minute.
async fn recent_refusals(
    app: &AppState,
    action_id: i64,
) -> Result<Vec<refusals::MinuteTally>, sqlx::Error> {
    refusals::by_minute(
        &app.db,
        &app.refusals,
        action_id,
        now_ms() - REFUSALS_SPAN_MS,
    )
    .await
}

async fn test_step(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, action_id)): Path<(String, i64)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let x = action_of(&app, &a, action_id).await?;
    let flash = app.flash.take(admin.session_id);
    let refused = refusals::total(&recent_refusals(&app, x.id).await?).describe();
    Ok(render(TestStep {
        page: Page::new(&admin, format!("Test · {}", x.name), &flash),
        back: first_flow_link(&a),
        url: ingest::url(&app.public_url, x.slug.as_deref().unwrap_or_default()),
        agent_id: a.public_id,
        agent_name: a.name,
        action_id: x.id,
        name: x.name,
        refused,
    }))
}

/// A delivery as the viewer and the deliveries page show it.
fn delivery_json(d: &DeliveryRow) -> Value {
    let fields: Vec<Value> = d
        .fields
        .as_deref()
        .and_then(|f| serde_json::from_str::<serde_json::Map<String, Value>>(f).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| {
            json!({
                "name": name,
                "type": VarType::detect(&value).map_or("null", VarType::as_str),
                "value": match &value { Value::String(s) => s.clone(), v => v.to_string() },
            })
        })
        .collect();
    let problems: Vec<String> = d
        .problems
        .as_deref()
        .and_then(|p| serde_json::from_str::<Vec<Value>>(p).ok())
        .unwrap_or_default()
        .iter()
        .map(|p| p["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    json!({
        "id": d.id,
        "receivedAt": rfc3339(d.received_at),
        "status": d.status,
        "accepted": (200..300).contains(&d.status),
        "outcome": d.outcome,
        "phoneNumber": d.phone,
        "problems": problems,
        "fields": fields,
        "callId": d.call_id,
        "bodyExcerpt": d.body_excerpt,
    })
}

/// How often an open viewer looks for new deliveries.
const VIEWER_POLL: Duration = Duration::from_millis(250);
/// Every how many polls an open viewer checks that its session is still signed in.
const SESSION_CHECK_EVERY: u32 = 8;
/// Every how many polls an open viewer reads the last hour's refusals without a valid key
/// (they are written once a second).
const REFUSALS_EVERY: u32 = 4;
/// Deliveries a viewer starts with.
const VIEWER_BACKLOG: i64 = 20;
/// Most deliveries a viewer is sent at once. When more came in since its last look, it
/// gets the newest of them and a count of the rest: under a flood it keeps up with what
/// arrives now instead of falling further behind.
const VIEWER_BATCH: i64 = 100;

/// The Test viewer's stream: the latest deliveries, then each new one as it is recorded.
/// It reads the deliveries table (off the ingest path: publishing costs senders nothing)
/// and stays open as long as the page does.
///
/// A browser that reconnects sends the id of the last delivery it saw (`Last-Event-ID`)
/// and is sent what came after it. Deliveries left out under a flood are announced by a
/// `skipped` event with their count; every delivery is still on the Deliveries page.
/// Requests refused without a valid key are not deliveries: a `refusals` event gives the
/// last hour's count of them whenever it changes.
async fn events(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, action_id)): Path<(String, i64)>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, HtmlError> {
    let a = agent(&app, &id).await?;
    let x = action_of(&app, &a, action_id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|id| *id >= 0);
    app.writer.settle().await?;
    let (first, skipped, last) = match resume {
        Some(after) => {
            let (rows, skipped) =
                deliveries::newest_after(&app.db, x.id, after, VIEWER_BATCH).await?;
            let last = rows.last().map_or(after, |d| d.id);
            (rows, skipped, last)
        }
        None => {
            let mut backlog = deliveries::recent(&app.db, x.id, VIEWER_BACKLOG).await?;
            backlog.reverse();
            let last = backlog.last().map_or(0, |d| d.id);
            (backlog, 0, last)
        }
    };
    // A first comment at once, so that the browser sees the stream open before any delivery.
    let initial: Vec<Event> = std::iter::once(Event::default().comment("listening"))
        .chain(skipped_event(skipped))
        .chain(first.iter().map(to_event))
        .collect();
    // The page shows the count as it was when it was made; the stream sends what changes.
    let refused = refusals::total(&recent_refusals(&app, x.id).await?);
    let writer = app.writer.clone();
    let session = admin.session_id;
    let viewer = Viewer {
        action: x.id,
        last,
        polls: 0,
        refused,
    };
    let stream = stream::iter(initial.into_iter().map(Ok)).chain(
        stream::unfold(viewer, move |mut v| {
            let writer = writer.clone();
            let app = app.clone();
            async move {
                loop {
                    tokio::time::sleep(VIEWER_POLL).await;
                    v.polls = v.polls.wrapping_add(1);
                    // The stream ends with the session: signed out or expired, it shows no more.
                    if v.polls % SESSION_CHECK_EVERY == 0
                        && !matches!(admins::session_alive(&app.db, session).await, Ok(true))
                    {
                        return None;
                    }
                    let mut events: Vec<Result<Event, std::convert::Infallible>> = Vec::new();
                    if v.polls % REFUSALS_EVERY == 0 {
                        match recent_refusals(&app, v.action).await {
                            Ok(minutes) => {
                                let now = refusals::total(&minutes);
                                if now != v.refused {
                                    v.refused = now;
                                    events.push(Ok(refusals_event(&now)));
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "viewer could not read refusals"),
                        }
                    }
                    if let Err(e) = writer.settle().await {
                        tracing::warn!(error = %e, "viewer could not settle the writer");
                    }
                    match deliveries::newest_after(&app.db, v.action, v.last, VIEWER_BATCH).await {
                        Ok((rows, skipped)) if !rows.is_empty() => {
                            v.last = rows.last().map_or(v.last, |d| d.id);
                            events.extend(
                                skipped_event(skipped)
                                    .into_iter()
                                    .chain(rows.iter().map(to_event))
                                    .map(Ok),
                            );
                            return Some((stream::iter(events), v));
                        }
                        Ok(_) if !events.is_empty() => return Some((stream::iter(events), v)),
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "viewer could not read deliveries");
                            if !events.is_empty() {
                                return Some((stream::iter(events), v));
                            }
                            continue;
                        }
                    }
                }
            }
        })
        .flatten(),
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

use futures_util::StreamExt;

/// Where an open viewer is.
struct Viewer {
    action: i64,
    /// The last delivery it was sent.
    last: i64,
    polls: u32,
    /// The refusals it last showed.
    refused: refusals::RefusalTally,
}

/// The last hour's refusals without a valid key, as counts and as the sentence shown.
fn refusals_event(tally: &refusals::RefusalTally) -> Event {
    Event::default()
        .event("refusals")
        .data(tally.to_json().to_string())
}

/// How many deliveries the viewer leaves out before the ones that follow, if any.
fn skipped_event(count: i64) -> Option<Event> {
    (count > 0).then(|| {
        Event::default()
            .event("skipped")
            .data(json!({ "count": count }).to_string())
    })
}

fn to_event(d: &DeliveryRow) -> Event {
    Event::default()
        .event("delivery")
        .id(d.id.to_string())
        .data(delivery_json(d).to_string())
}

#[derive(Deserialize)]
struct FromScript {
    #[serde(default)]
    js: bool,
}

/// Posts the sample body through the webhook's checks. From the page's script (`?js=true`)
/// the answer is empty: the viewer shows the delivery. Without scripts, back to the page.
async fn send_sample(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, i64)>,
    Query(q): Query<FromScript>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let x = action_of(&app, &a, action_id).await?;
    let target = app
        .catalog
        .webhook(x.slug.as_deref().unwrap_or_default())
        .await?
        .ok_or_else(|| not_found("This webhook"))?;
    let body = bytes::Bytes::from(sample_body(&a.public_id).to_string());
    let status = crate::http::ingest::sample(app.clone(), target, body)
        .await
        .status();
    if q.js {
        return Ok(axum::http::StatusCode::NO_CONTENT.into_response());
    }
    let notice = if status.is_success() {
        "Sample request sent: it is in the list below.".to_owned()
    } else {
        format!("Sample request refused ({status}): see the list below.")
    };
    after(
        &app,
        &f.admin,
        &format!("/admin/agents/{id}/actions/{action_id}/test"),
        Ok(notice),
    )
}

async fn save_variables(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, i64)>,
    f: AdminForm<Vec<(String, String)>>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let x = action_of(&app, &a, action_id).await?;
    let back = format!("/admin/agents/{id}/actions/{action_id}/test");
    let chosen: Vec<&str> = f
        .form
        .iter()
        .filter(|(k, _)| k == "field")
        .map(|(_, v)| v.as_str())
        .collect();
    if chosen.is_empty() {
        return after(
            &app,
            &f.admin,
            &back,
            Err(StoreError::Conflict("choose at least one field".into())),
        );
    }
    let existing: Vec<String> = variables::list(&app.db, a.id)
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    let mut saved = Vec::new();
    for item in chosen {
        let (name, ty) = item.split_once(':').unwrap_or((item, "string"));
        let result = async {
            let name = VariableName::parse(name).map_err(StoreError::Conflict)?;
            let ty = VarType::parse(ty).unwrap_or(VarType::String);
            if existing.iter().any(|e| e == name.as_str()) {
                return Ok(());
            }
            variables::upsert(
                &app.db,
                a.id,
                &NewVariable {
                    name: name.clone(),
                    ty,
                    default: None,
                    description: format!("From the webhook {:?}", x.name),
                    source_action_id: Some(x.id),
                },
            )
            .await?;
            saved.push(name.to_string());
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = result {
            return after(&app, &f.admin, &back, Err(e));
        }
    }
    app.catalog.invalidate();
    let notice = if saved.is_empty() {
        "Those variables were already declared.".to_owned()
    } else {
        format!("Saved as variables: {}.", saved.join(", "))
    };
    after(&app, &f.admin, &back, Ok(notice))
}

struct DeliveryView {
    received_at: String,
    status: i64,
    accepted: bool,
    outcome: String,
    phone: String,
    problems: Vec<String>,
    fields: Vec<(String, String, String)>,
    call_id: String,
}

#[derive(Template)]
#[template(path = "admin/deliveries.html")]
struct DeliveriesPage {
    page: Page,
    agent_id: String,
    agent_name: String,
    action_id: i64,
    name: String,
    deliveries: Vec<DeliveryView>,
    /// Whether this is a later page (older deliveries).
    paged: bool,
    /// The `before` of the next page, when there are older deliveries.
    older: Option<i64>,
    /// Requests refused without a valid key in the last hour, as a sentence.
    refused: String,
    /// The same by minute, newest first: the minute (`10:41` UTC), wrong key, no key,
    /// rate limited.
    refused_by_minute: Vec<(String, String, String, String)>,
    /// How long deliveries are kept, in words.
    kept_for: String,
}

/// A retention in words: "7 days", "1 day", "12 hours", "30 seconds".
fn span(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// `HH:MM` (UTC) of a minute's start.
fn clock_minute(ms: i64) -> String {
    let t = rfc3339(ms);
    t.get(11..16).unwrap_or_default().to_owned()
}

/// Deliveries on one page of a webhook's history.
const DELIVERIES_PAGE: i64 = 200;

#[derive(Deserialize)]
struct DeliveriesQuery {
    /// Show the deliveries recorded before this one (the next page).
    before: Option<i64>,
}

async fn deliveries_page(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, action_id)): Path<(String, i64)>,
    Query(q): Query<DeliveriesQuery>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let x = action_of(&app, &a, action_id).await?;
    let flash = app.flash.take(admin.session_id);
    let before = q.before.unwrap_or(i64::MAX);
    // Webhooks acknowledged a moment ago may not be committed yet.
    app.writer.settle().await?;
    let mut rows = deliveries::older_than(&app.db, x.id, before, DELIVERIES_PAGE + 1).await?;
    let more = rows.len() as i64 > DELIVERIES_PAGE;
    rows.truncate(DELIVERIES_PAGE as usize);
    let older = rows.last().filter(|_| more).map(|d| d.id);
    let deliveries = rows
        .iter()
        .map(|d| {
            let j = delivery_json(d);
            DeliveryView {
                received_at: rfc3339(d.received_at),
                status: d.status,
                accepted: (200..300).contains(&d.status),
                outcome: d.outcome.clone(),
                phone: d.phone.clone().unwrap_or_default(),
                problems: j["problems"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect(),
                fields: j["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| {
                        let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
                        (s("name"), s("type"), s("value"))
                    })
                    .collect(),
                call_id: d.call_id.clone().unwrap_or_default(),
            }
        })
        .collect();
    let minutes = recent_refusals(&app, x.id).await?;
    let count = |n: i64| {
        if n == 0 {
            String::new()
        } else {
            refusals::thousands(n)
        }
    };
    Ok(render(DeliveriesPage {
        page: Page::new(&admin, format!("Deliveries · {}", x.name), &flash),
        agent_id: a.public_id,
        agent_name: a.name,
        action_id: x.id,
        name: x.name,
        deliveries,
        paged: q.before.is_some(),
        older,
        refused: refusals::total(&minutes).describe(),
        refused_by_minute: minutes
            .iter()
            .map(|m| {
                (
                    clock_minute(m.minute),
                    count(m.tally.wrong_key),
                    count(m.tally.missing_key),
                    count(m.tally.rate_limited),
                )
            })
            .collect(),
        kept_for: span(app.delivery_retention),
    }))
}

#[derive(Deserialize)]
struct Move {
    direction: String,
}

async fn move_action(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, i64)>,
    f: AdminForm<Move>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let result = actions::move_action(&app.db, a.id, action_id, f.form.direction == "up")
        .await
        .map(|_| "Moved.".to_owned());
    app.catalog.invalidate();
    after(&app, &f.admin, &first_flow_link(&a), result)
}

async fn delete(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, i64)>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let result = actions::delete(&app.db, a.id, action_id)
        .await
        .map(|_| "Pre-call action deleted.".to_owned());
    app.catalog.invalidate();
    after(&app, &f.admin, &first_flow_link(&a), result)
}
