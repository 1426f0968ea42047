//! Webhook actions: the wizard (Setup → Configure → Test), the live Test viewer and the
//! deliveries. Their settings (name, time wait before fallback, data TTL, enabled) are in the
//! draft; their URL, keys and signing secret belong to their endpoint and change at once.

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

use super::confirm::Confirmation;
use super::{
    AgentDraft, DraftBar, HtmlError, Page, PageResult, after, agent, agent_draft, by, edited,
    first_flow_link, isolate, not_found, render,
};
use crate::auth::session::{Admin, AdminForm};
use crate::domain::document::{
    self, Action, ActionDoc, AgentDocument, DEFAULT_TTL_SECS, DEFAULT_WAIT_MS, Source, VariableDoc,
};
use crate::domain::variables::{VarType, VariableName};
use crate::drafts;
use crate::http::{AppState, ingest};
use crate::store::actions::{self, EndpointRow};
use crate::store::admins;
use crate::store::agents::Agent;
use crate::store::deliveries::{self, DeliveryRow};
use crate::store::refusals;
use crate::store::{StoreError, now_ms, rfc3339};

pub fn router() -> Router<AppState> {
    let base = "/admin/agents/{agent}/actions";
    Router::new()
        .route(&format!("{base}/new"), get(setup_step))
        .route(base, post(create))
        .route(&format!("{base}/{{action}}/configure"), get(configure_step))
        .route(&format!("{base}/{{action}}/settings"), post(save_settings))
        .route(
            &format!("{base}/{{action}}/key"),
            get(confirm_regenerate_key).post(regenerate_key),
        )
        .route(
            &format!("{base}/{{action}}/keys/{{key}}/revoke"),
            get(confirm_revoke_key).post(revoke_key),
        )
        .route(&format!("{base}/{{action}}/signing"), post(save_signing))
        .route(
            &format!("{base}/{{action}}/signing-secret"),
            get(confirm_signing_secret).post(regenerate_signing_secret),
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
}

/// A Webhook action of the draft, with its endpoint.
struct Hook {
    key: String,
    name: String,
    wait_ms: i64,
    ttl_secs: i64,
    enabled: bool,
    /// Whether calls wait for it now (it is in the published version).
    published: bool,
    endpoint: EndpointRow,
}

impl Hook {
    /// The endpoint's row: its deliveries, keys and cached data belong to it.
    fn id(&self) -> i64 {
        self.endpoint.id
    }
}

/// The Webhook action `key` of the agent's draft (or, removed from the draft, of the
/// published version, whose calls still wait for it).
async fn hook_of(app: &AppState, a: &Agent, key: &str) -> Result<(Hook, AgentDraft), HtmlError> {
    let d = agent_draft(app, a).await?;
    let published = d
        .published
        .as_ref()
        .and_then(|p| p.document.action(key))
        .cloned();
    let action = d
        .doc()
        .action(key)
        .cloned()
        .or_else(|| published.clone())
        .ok_or_else(|| not_found("This webhook"))?;
    let Action::Webhook {
        wait_ms,
        ttl_secs,
        enabled,
    } = action.settings
    else {
        return Err(not_found("This webhook"));
    };
    let endpoint = actions::endpoint(&app.db, a.id, key)
        .await?
        .ok_or_else(|| not_found("This webhook's URL"))?;
    Ok((
        Hook {
            key: action.key,
            name: action.name,
            wait_ms,
            ttl_secs,
            enabled,
            published: published.is_some(),
            endpoint,
        },
        d,
    ))
}

#[derive(Template)]
#[template(path = "admin/wizard_setup.html")]
struct SetupStep {
    page: Page,
    agent_id: String,
    agent_name: String,
    back: String,
    revision: i64,
}

async fn setup_step(
    State(app): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let d = agent_draft(&app, &a).await?;
    let flash = app.flash.take(admin.session_id);
    Ok(render(SetupStep {
        page: Page::new(&admin, "Add a pre-call webhook", &flash),
        back: first_flow_link(&id, d.doc()),
        revision: d.bar.revision,
        agent_id: a.public_id,
        agent_name: a.name,
    }))
}

#[derive(Deserialize)]
struct NewAction {
    kind: String,
    name: String,
    #[serde(default)]
    revision: Option<i64>,
}

/// Adds a Webhook action to the draft: its URL and first key are made at once (the key is
/// shown once), so that its Test step takes requests before anything is published.
async fn create(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<NewAction>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let setup = format!("/admin/agents/{id}/actions/new");
    if f.form.kind != "webhook" {
        return after(
            &app,
            &f.admin,
            &setup,
            Err(StoreError::Conflict("choose an action".into())),
        );
    }
    let name = f.form.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > document::MAX_NAME {
        return after(
            &app,
            &f.admin,
            &setup,
            Err(StoreError::Conflict(
                "a webhook's name is 1 to 100 characters".into(),
            )),
        );
    }
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        let key = AgentDocument::new_key("webhook-", doc.precall.iter().map(|x| x.key.as_str()));
        doc.precall.push(ActionDoc {
            key: key.clone(),
            name: name.clone(),
            settings: Action::Webhook {
                wait_ms: DEFAULT_WAIT_MS,
                ttl_secs: DEFAULT_TTL_SECS,
                enabled: true,
            },
        });
        Ok(key)
    })
    .await;
    match result {
        Ok((key, saved)) => edited(
            &app,
            &f.admin,
            &format!("/admin/agents/{id}/actions/{key}/configure"),
            Ok((
                "Webhook added to the draft: its URL takes requests now; calls wait for it once \
                 the draft is published."
                    .into(),
                saved,
            )),
        ),
        Err(e) => edited(&app, &f.admin, &setup, Err(e)),
    }
}

#[derive(Template)]
#[template(path = "admin/wizard_configure.html")]
struct ConfigureStep {
    page: Page,
    bar: DraftBar,
    agent_id: String,
    agent_name: String,
    action_id: String,
    name: String,
    /// Whether calls wait for it now (else: once the draft is published).
    published: bool,
    revision: i64,
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
    Path((id, key)): Path<(String, String)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (x, d) = hook_of(&app, &a, &key).await?;
    let flash = app.flash.take(admin.session_id);
    let shown = flash.secret_for("webhook", x.id());
    let signing_secret = flash.secret_for("signing", x.id());
    let signing_required = x.endpoint.signing_required;
    let url = ingest::url(&app.public_url, &x.endpoint.slug);
    let (shown_key, secret) = (shown.as_deref(), signing_secret.as_deref());
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
    let keys = actions::valid_keys(&app.db, x.id())
        .await?
        .into_iter()
        .map(|k| KeyView {
            id: k.id,
            last_chars: k.last_chars,
            valid_until: k.expires_at.map(rfc3339).unwrap_or_default(),
        })
        .collect();
    Ok(render(ConfigureStep {
        page: Page::new(&admin, format!("Configure · {}", isolate(&x.name)), &flash),
        revision: d.bar.revision,
        bar: d.bar,
        agent_id: a.public_id,
        agent_name: a.name,
        action_id: x.key.clone(),
        published: x.published,
        url,
        key: shown,
        keys,
        curl,
        wait_seconds: format_seconds(x.wait_ms),
        ttl_minutes: format_minutes(x.ttl_secs),
        enabled: x.enabled,
        signing_required,
        signing_secret,
        signing_last_chars: x.endpoint.signing_last_chars.clone().unwrap_or_default(),
        name: x.name,
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
    #[serde(default)]
    revision: Option<i64>,
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
    if !(1..=document::MAX_TTL_SECS).contains(&ttl_secs) {
        return Err("data TTL must be 1 second to 7 days (10 080 minutes)".to_owned());
    }
    Ok(((wait * 1000.0).round() as i64, ttl_secs))
}

async fn save_settings(
    State(app): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    f: AdminForm<SettingsForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let back = format!("/admin/agents/{id}/actions/{key}/configure");
    let (wait, ttl) = match parse_settings(&f.form) {
        Ok(v) => v,
        Err(e) => return after(&app, &f.admin, &back, Err(StoreError::Conflict(e))),
    };
    let name = f.form.name.trim().to_owned();
    let enabled = f.form.enabled.is_some();
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        if name.is_empty() || name.chars().count() > document::MAX_NAME {
            return Err("a webhook's name is 1 to 100 characters".into());
        }
        let x = doc
            .action_mut(&key)
            .ok_or("this webhook is no longer in the draft")?;
        x.name = name.clone();
        x.settings = Action::Webhook {
            wait_ms: wait,
            ttl_secs: ttl,
            enabled,
        };
        Ok("Settings saved to the draft; calls use them once it is published.".to_owned())
    })
    .await;
    edited(&app, &f.admin, &back, result)
}

#[derive(Deserialize)]
struct Nothing {}

#[derive(Deserialize)]
struct Regenerate {
    /// How long the replaced key keeps working, in seconds; one of [`KEY_GRACES`].
    #[serde(default)]
    grace_secs: String,
}

/// The grace period a form chose, with its words; empty means none.
fn grace_of(raw: &str) -> Result<(i64, &'static str), String> {
    let raw = raw.trim();
    let grace = if raw.is_empty() {
        Ok(0)
    } else {
        raw.parse::<i64>()
    };
    grace
        .ok()
        .and_then(|g| KEY_GRACES.iter().find(|(s, _)| *s == g))
        .copied()
        .ok_or_else(|| {
            format!(
                "grace period: {raw:?} is not one offered (none, 1 hour, 24 hours, 7 days); \
                 nothing changed"
            )
        })
}

/// The confirmation page of Regenerate key: what happens to the current key, and that the
/// new one is shown once.
async fn confirm_regenerate_key(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, action_id)): Path<(String, String)>,
    Query(f): Query<Regenerate>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (x, _) = hook_of(&app, &a, &action_id).await?;
    let back = format!("/admin/agents/{id}/actions/{action_id}/configure");
    let (grace, label) = match grace_of(&f.grace_secs) {
        Ok(g) => g,
        Err(problem) => return after(&app, &admin, &back, Err(StoreError::Conflict(problem))),
    };
    let current = actions::valid_keys(&app.db, x.id())
        .await?
        .into_iter()
        .find(|k| k.expires_at.is_none())
        .map_or_else(
            || "The current key".to_owned(),
            |k| format!("The current key (ending in {})", k.last_chars),
        );
    let flash = app.flash.take(admin.session_id);
    let page = Confirmation::new(
        Page::new(
            &admin,
            format!("Regenerate the key · {}", isolate(&x.name)),
            &flash,
        ),
        ("Make a new API key for ", &x.name, "?"),
        format!("/admin/agents/{id}/actions/{action_id}/key"),
        &back,
    )
    .crumb("/admin/agents", "Agents")
    .crumb(format!("/admin/agents/{id}"), &a.name)
    .crumb(&back, &x.name)
    .says(
        "The new key is shown once, on the Configure page: copy it into your sender's \
         configuration then. Precall keeps only a fingerprint of it.",
    )
    .says(if grace == 0 {
        format!(
            "{current} stops working at once: requests sent with it are refused (401) from \
             then on."
        )
    } else {
        format!(
            "{current} keeps working for {label} after you confirm, so that senders can \
             switch; then it stops. You can revoke it sooner from the Configure page."
        )
    })
    .field("grace_secs", grace)
    .buttons("Keep the current key", "Make a new key");
    Ok(render(page))
}

async fn regenerate_key(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, String)>,
    f: AdminForm<Regenerate>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (x, _) = hook_of(&app, &a, &action_id).await?;
    let back = format!("/admin/agents/{id}/actions/{action_id}/configure");
    let (grace, label) = match grace_of(&f.form.grace_secs) {
        Ok(g) => g,
        Err(problem) => return after(&app, &f.admin, &back, Err(StoreError::Conflict(problem))),
    };
    let key = actions::regenerate_key(&app.db, x.id(), grace).await?;
    app.catalog.invalidate();
    app.flash
        .secret(f.admin.session_id, "webhook", x.id(), &key);
    let notice = if grace == 0 {
        "A new key was made; the old one stopped working.".to_owned()
    } else {
        format!("A new key was made; the old one keeps working for {label}.")
    };
    app.flash.notice(f.admin.session_id, notice);
    Ok(Redirect::to(&back).into_response())
}

/// The confirmation page of Revoke now: the old key stops before its grace is over.
async fn confirm_revoke_key(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, action_id, key_id)): Path<(String, String, i64)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (x, _) = hook_of(&app, &a, &action_id).await?;
    let back = format!("/admin/agents/{id}/actions/{action_id}/configure");
    let keys = actions::valid_keys(&app.db, x.id()).await?;
    let Some(key) = keys.iter().find(|k| k.id == key_id) else {
        let gone = "that key no longer works: nothing to revoke".to_owned();
        return after(&app, &admin, &back, Err(StoreError::NotFound(gone)));
    };
    let Some(until) = key.expires_at else {
        let current = "the current key cannot be revoked: regenerate it instead".to_owned();
        return after(&app, &admin, &back, Err(StoreError::Conflict(current)));
    };
    let flash = app.flash.take(admin.session_id);
    let mut page = Confirmation::new(
        Page::new(
            &admin,
            format!("Revoke a key · {}", isolate(&x.name)),
            &flash,
        ),
        (
            &format!("Stop the old key ending in {} of ", key.last_chars),
            &x.name,
            " now?",
        ),
        format!("/admin/agents/{id}/actions/{action_id}/keys/{key_id}/revoke"),
        &back,
    )
    .crumb("/admin/agents", "Agents")
    .crumb(format!("/admin/agents/{id}"), &a.name)
    .crumb(&back, &x.name)
    .says(format!(
        "It would work until {}. Revoked, it stops at once: requests sent with it are \
         refused (401).",
        super::time::utc_text(rfc3339(until))
    ));
    if let Some(current) = keys.iter().find(|k| k.expires_at.is_none()) {
        page = page.says(format!(
            "The current key (ending in {}) goes on working.",
            current.last_chars
        ));
    }
    Ok(render(page.buttons("Keep it until then", "Revoke now")))
}

async fn revoke_key(
    State(app): State<AppState>,
    Path((id, action_id, key_id)): Path<(String, String, i64)>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (x, _) = hook_of(&app, &a, &action_id).await?;
    let result = actions::revoke_key(&app.db, x.id(), key_id)
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
    Path((id, action_id)): Path<(String, String)>,
    f: AdminForm<SigningForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (x, _) = hook_of(&app, &a, &action_id).await?;
    let back = format!("/admin/agents/{id}/actions/{action_id}/configure");
    let required = match f.form.required.as_deref() {
        None => false,
        Some("on") => true,
        Some(other) => {
            let problem = format!("require signed requests: {other:?} is neither on nor off");
            return after(&app, &f.admin, &back, Err(StoreError::Conflict(problem)));
        }
    };
    let result = actions::set_signing(&app.db, x.id(), required).await;
    app.catalog.invalidate();
    let result = result.map(|made| {
        if let Some(secret) = &made {
            app.flash.signing_secret(f.admin.session_id, x.id(), secret);
        }
        if required {
            "Signed requests are required: unsigned requests are refused.".to_owned()
        } else {
            "Signatures are no longer required.".to_owned()
        }
    });
    after(&app, &f.admin, &back, result)
}

/// The confirmation page of Regenerate secret: the current secret stops at once.
async fn confirm_signing_secret(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, action_id)): Path<(String, String)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (x, _) = hook_of(&app, &a, &action_id).await?;
    let back = format!("/admin/agents/{id}/actions/{action_id}/configure");
    let current = match &x.endpoint.signing_last_chars {
        Some(last) => format!("The current secret (ending in {last})"),
        None => "The current secret".to_owned(),
    };
    let flash = app.flash.take(admin.session_id);
    let page = Confirmation::new(
        Page::new(
            &admin,
            format!("Regenerate the signing secret · {}", isolate(&x.name)),
            &flash,
        ),
        ("Make a new signing secret for ", &x.name, "?"),
        format!("/admin/agents/{id}/actions/{action_id}/signing-secret"),
        &back,
    )
    .crumb("/admin/agents", "Agents")
    .crumb(format!("/admin/agents/{id}"), &a.name)
    .crumb(&back, &x.name)
    .says(format!(
        "{current} stops at once: {} signed with it are refused (401) until your sender \
         signs with the new one.",
        if x.endpoint.signing_required {
            "requests"
        } else {
            "once signatures are required, requests"
        }
    ))
    .says("The new secret is shown once, on the Configure page.")
    .buttons("Keep the current secret", "Make a new secret");
    Ok(render(page))
}

async fn regenerate_signing_secret(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, String)>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (x, _) = hook_of(&app, &a, &action_id).await?;
    let secret = actions::regenerate_signing_secret(&app.db, x.id()).await?;
    app.catalog.invalidate();
    app.flash
        .signing_secret(f.admin.session_id, x.id(), &secret);
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
    bar: DraftBar,
    agent_id: String,
    agent_name: String,
    action_id: String,
    /// Whether calls wait for it now (else: once the draft is published).
    published: bool,
    revision: i64,
    name: String,
    url: String,
    back: String,
    /// Requests refused without a valid key in the last hour, as a sentence.
    refused: String,
    /// The latest deliveries, newest first, as they were when the page was made: the page
    /// shows them without scripts, and its script goes on from the newest.
    deliveries: Vec<ViewerEntry>,
    /// When the page was made (RFC 3339): what a reader without scripts sees is as of then.
    as_of: String,
    /// The newest delivery shown (0 for none): the live stream sends what came after it.
    last: i64,
    /// The draft's variable names, as JSON: their fields show as saved.
    declared: String,
}

/// A delivery in the Test viewer.
struct ViewerEntry {
    id: i64,
    received_at: String,
    status: i64,
    accepted: bool,
    phone: String,
    problems: Vec<String>,
    fields: Vec<ViewerField>,
    /// Whether every field is already a variable of the draft (nothing left to save).
    all_saved: bool,
}

/// A field of a delivery, with whether the draft already declares it.
struct ViewerField {
    name: String,
    ty: String,
    value: String,
    saved: bool,
}

impl ViewerEntry {
    fn of(d: &DeliveryRow, declared: &[&str]) -> Self {
        let j = delivery_json(d);
        let fields: Vec<ViewerField> = j["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
                ViewerField {
                    saved: declared.contains(&s("name").as_str()),
                    name: s("name"),
                    ty: s("type"),
                    value: s("value"),
                }
            })
            .collect();
        Self {
            id: d.id,
            received_at: rfc3339(d.received_at),
            status: d.status,
            accepted: (200..300).contains(&d.status),
            phone: d.phone.clone().unwrap_or_default(),
            problems: j["problems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect(),
            all_saved: fields.iter().all(|f| f.saved),
            fields,
        }
    }
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
    Path((id, key)): Path<(String, String)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (x, d) = hook_of(&app, &a, &key).await?;
    let flash = app.flash.take(admin.session_id);
    let refused = refusals::total(&recent_refusals(&app, x.id()).await?).describe();
    // Webhooks acknowledged a moment ago may not be committed yet.
    app.writer.settle().await?;
    let as_of = rfc3339(now_ms());
    let rows = deliveries::recent(&app.db, x.id(), VIEWER_BACKLOG).await?;
    let declared: Vec<&str> = d.doc().variables.iter().map(|v| v.name.as_str()).collect();
    let deliveries: Vec<ViewerEntry> = rows.iter().map(|r| ViewerEntry::of(r, &declared)).collect();
    let declared = serde_json::to_string(&declared).expect("names serialise");
    Ok(render(TestStep {
        last: rows.first().map_or(0, |r| r.id),
        deliveries,
        as_of,
        declared,
        page: Page::new(&admin, format!("Test · {}", isolate(&x.name)), &flash),
        back: first_flow_link(&id, d.doc()),
        url: ingest::url(&app.public_url, &x.endpoint.slug),
        revision: d.bar.revision,
        bar: d.bar,
        agent_id: a.public_id,
        agent_name: a.name,
        action_id: x.key,
        published: x.published,
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

#[derive(Deserialize)]
struct EventsQuery {
    /// The newest delivery the page already shows, as `Last-Event-ID` would say it: the
    /// page's server-rendered list, before the stream has sent anything.
    #[serde(default)]
    after: Option<String>,
}

/// The Test viewer's stream: the latest deliveries, then each new one as it is recorded.
/// It reads the deliveries table (off the ingest path: publishing costs senders nothing)
/// and stays open as long as the page does.
///
/// A browser that reconnects sends the id of the last delivery it saw (`Last-Event-ID`)
/// and is sent what came after it; a page that already shows deliveries says the newest
/// with `?after=` (what `Last-Event-ID` says wins). Deliveries left out under a flood are announced by a
/// `skipped` event with their count; every delivery is still on the Deliveries page.
/// Requests refused without a valid key are not deliveries: a `refusals` event gives the
/// last hour's count of them whenever it changes.
async fn events(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, key)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, HtmlError> {
    let a = agent(&app, &id).await?;
    let (hook, _) = hook_of(&app, &a, &key).await?;
    let x = hook.endpoint;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(q.after.as_deref())
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
    Path((id, action_id)): Path<(String, String)>,
    Query(q): Query<FromScript>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (x, _) = hook_of(&app, &a, &action_id).await?;
    let target = app
        .catalog
        .webhook(&x.endpoint.slug)
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

#[derive(Deserialize, Default)]
#[serde(default)]
struct SaveVariables {
    /// `name:type` of each field ticked.
    field: Vec<String>,
    revision: Option<i64>,
}

/// Saves the ticked fields as variables of the draft (their source: this webhook); fields
/// already declared keep their declaration.
async fn save_variables(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, String)>,
    f: AdminForm<Vec<(String, String)>>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (x, _) = hook_of(&app, &a, &action_id).await?;
    let back = format!("/admin/agents/{id}/actions/{action_id}/test");
    let form = SaveVariables {
        field: f
            .form
            .iter()
            .filter(|(k, _)| k == "field")
            .map(|(_, v)| v.clone())
            .collect(),
        revision: f
            .form
            .iter()
            .find(|(k, _)| k == "revision")
            .and_then(|(_, v)| v.parse().ok()),
    };
    if form.field.is_empty() {
        return after(
            &app,
            &f.admin,
            &back,
            Err(StoreError::Conflict("choose at least one field".into())),
        );
    }
    let mut chosen = Vec::new();
    for item in &form.field {
        let (name, ty) = item.split_once(':').unwrap_or((item.as_str(), "string"));
        match VariableName::parse(name) {
            Ok(n) if !n.is_system() => {
                chosen.push((n.to_string(), VarType::parse(ty).unwrap_or(VarType::String)))
            }
            Ok(n) => {
                return after(
                    &app,
                    &f.admin,
                    &back,
                    Err(StoreError::Conflict(format!("{n} is a system variable"))),
                );
            }
            Err(e) => return after(&app, &f.admin, &back, Err(StoreError::Conflict(e))),
        }
    }
    let result = drafts::edit(&app.db, a.id, form.revision, &by(&f.admin), |doc| {
        let mut saved = Vec::new();
        for (name, ty) in chosen {
            if doc.variables.iter().any(|v| v.name == name) {
                continue;
            }
            doc.variables.push(VariableDoc {
                name: name.clone(),
                ty,
                default: serde_json::Value::Null,
                description: format!("From the webhook {:?}", x.name),
                source: Some(Source::Action(x.key.clone())),
            });
            saved.push(name);
        }
        Ok(if saved.is_empty() {
            "Those variables were already declared.".to_owned()
        } else {
            format!(
                "Saved to the draft as variables: {}. Publish the draft for calls and ingest \
                 to use them.",
                saved.join(", ")
            )
        })
    })
    .await;
    edited(&app, &f.admin, &back, result)
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
    action_id: String,
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
    Path((id, key)): Path<(String, String)>,
    Query(q): Query<DeliveriesQuery>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let (hook, _) = hook_of(&app, &a, &key).await?;
    let x = &hook.endpoint;
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
        page: Page::new(
            &admin,
            format!("Deliveries · {}", isolate(&hook.name)),
            &flash,
        ),
        agent_id: a.public_id,
        agent_name: a.name,
        action_id: hook.key.clone(),
        name: hook.name.clone(),
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
