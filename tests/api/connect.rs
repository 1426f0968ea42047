//! Voice platforms' connections (`POST /connect/{slug}`): each platform's signed request,
//! answered in its format with the caller's cached data; a request before the CRM's webhook,
//! woken by it; the fallback before the deadline; forged and replayed signatures refused; a
//! routing Filter and an End Call mapped to each platform's means; Twilio's Gather loop.
//!
//! The request and answer shapes follow each platform's documentation:
//! - Retell: https://docs.retellai.com/features/inbound-call-webhook and
//!   https://docs.retellai.com/features/secure-webhook (x-retell-signature, as retell-sdk's
//!   `webhook_auth.py` signs)
//! - Synthflow: https://docs.synthflow.ai/inbound-webhook-api and
//!   https://docs.synthflow.ai/webhooks-security
//! - Vapi: https://docs.vapi.ai/server-url/events (assistant-request) and
//!   https://docs.vapi.ai/server-url/server-authentication
//! - Telnyx: https://developers.telnyx.com/docs/inference/ai-assistants/dynamic-variables and
//!   telnyx-python's `lib/webhook_verification.py` (Ed25519 over "{timestamp}|{body}")
//! - Twilio: https://www.twilio.com/docs/usage/security#validating-requests and
//!   https://www.twilio.com/docs/voice/twiml
//!
//! The official libraries sign and check the same requests in `connect_libs.rs`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use precall::connect::verify;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// An agent whose First Flow greets by name and asks why the caller calls, a pre-call
/// Filter that sends VIPs to a flow that transfers them, and an End Call for blocked callers;
/// its CRM webhook waits `wait_ms`.
pub fn connected_agent(app: &TestApp, wait_ms: u64) -> (String, String, String) {
    let agent = app.create_agent("US");
    let doc = json!({
        "format": "precall-agent/1", "firstFlow": "main",
        "flows": [
            {"key": "main", "name": "Main", "blocks": [
                {"key": "greeting", "kind": "greeting", "message": "Hello {{customer_name|there}}.", "next": "ask_reason"},
                {"key": "ask_reason", "kind": "collect", "variable": "reason", "prompt": "How can I help?", "next": "to_wrapup"},
                {"key": "to_wrapup", "kind": "transfer_flow", "flow": "wrapup"}
            ]},
            {"key": "wrapup", "name": "Wrap-up", "blocks": [
                {"key": "start", "kind": "start", "message": "One more thing.", "next": "ask_time"},
                {"key": "ask_time", "kind": "collect", "variable": "callback_time", "prompt": "When shall we call back?", "next": "bye"},
                {"key": "bye", "kind": "end_call", "message": "Thanks, we will call you back about {{reason}} at {{callback_time}}.", "outcome": "completed"}
            ]},
            {"key": "vip", "name": "VIP", "blocks": [
                {"key": "start", "kind": "start", "message": "Welcome back.", "next": "desk"},
                {"key": "desk", "kind": "transfer_call", "destination": "+12125550100", "department": "", "message": "Connecting you to your manager."}
            ]}
        ],
        "precall": [
            {"key": "crm", "kind": "webhook", "name": "CRM webhook", "waitMs": wait_ms, "ttlSecs": 600, "enabled": true},
            {"key": "route", "kind": "filter", "name": "VIP route", "cases": [
                {"name": "VIP", "join": "and", "conditions": [{"variable": "tier", "op": "equals", "value": "vip"}], "flow": "vip"}
            ]},
            {"key": "block", "kind": "end_call", "name": "Blocked", "join": "and",
             "conditions": [{"variable": "blocked", "op": "equals", "value": true}],
             "message": "Sorry, we cannot take your call.", "outcome": "refused"}
        ],
        "variables": [
            {"name": "customer_name", "type": "string", "default": null, "description": "", "source": {"action": "crm"}},
            {"name": "tier", "type": "string", "default": "", "description": "", "source": {"action": "crm"}},
            {"name": "blocked", "type": "boolean", "default": false, "description": "", "source": {"action": "crm"}},
            {"name": "budget", "type": "number", "default": 0, "description": "", "source": {"action": "crm"}},
            {"name": "reason", "type": "string", "default": null, "description": "", "source": {"flow": "main", "block": "ask_reason"}},
            {"name": "callback_time", "type": "string", "default": null, "description": "", "source": {"flow": "wrapup", "block": "ask_time"}}
        ]
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    let out = app.cli_json(&[
        "agent",
        "import",
        &agent,
        file.path().to_str().unwrap(),
        "--publish",
    ]);
    let hook = &out["webhooks"][0];
    (
        agent,
        hook["url"].as_str().unwrap().to_owned(),
        hook["apiKey"].as_str().unwrap().to_owned(),
    )
}

/// Connects `platform` to `agent`; returns the URL to paste.
pub fn connect(app: &TestApp, agent: &str, platform: &str, secret: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "connection",
        "create",
        "--agent",
        agent,
        "--platform",
        platform,
        "--secret",
        secret,
    ];
    // Retell, Synthflow and Vapi hand each flow to one of their agents; Twilio runs the flows
    // itself and Telnyx's assistant is told the flow.
    if !matches!(platform, "twilio" | "telnyx") {
        args.extend([
            "--default-agent",
            "agent_main",
            "--flow-agent",
            "vip=agent_vip",
        ]);
    }
    args.extend_from_slice(extra);
    app.cli_json(&args)["url"].as_str().unwrap().to_owned()
}

pub async fn crm(app: &TestApp, url: &str, key: &str, agent: &str, phone: &str, fields: Value) {
    let mut body = json!({"agentId": agent, "phoneNumber": phone});
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    let res = app
        .client
        .post(url)
        .header("X-Authorization", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The id of the agent's connection at `url`, as the command line lists it.
pub(crate) fn connection_id(app: &TestApp, agent: &str, url: &str) -> i64 {
    let list = app.cli_json(&["connection", "list", "--agent", agent]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["url"] == url)
        .map(|c| c["id"].as_i64().unwrap())
        .unwrap_or_else(|| panic!("{url} in {list}"))
}

pub(crate) const RETELL_KEY: &str = "key_retell_0123456789abcdef";

pub(crate) fn retell_body(from: &str) -> String {
    json!({"event": "call_inbound", "call_inbound": {"agent_id": "agent_main", "from_number": from, "to_number": "+12125550199"}}).to_string()
}

pub(crate) async fn post_retell(
    app: &TestApp,
    url: &str,
    body: &str,
    sig: &str,
) -> reqwest::Response {
    app.client
        .post(url)
        .header("content-type", "application/json")
        .header("x-retell-signature", sig)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn retell_gets_the_cached_data_as_string_dynamic_variables_at_once() {
    let app = spawn_app().await;
    let (agent, hook, key) = connected_agent(&app, 2000);
    let url = connect(&app, &agent, "retell", RETELL_KEY, &[]);
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550123",
        json!({"customer_name": "Ada", "budget": 12000}),
    )
    .await;
    let body = retell_body("+12125550123");
    let sig = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
    let t = Instant::now();
    let res = post_retell(&app, &url, &body, &sig).await;
    let waited = t.elapsed();
    assert_eq!(res.status(), 200);
    let a: Value = res.json().await.unwrap();
    let i = &a["call_inbound"];
    assert_eq!(i["dynamic_variables"]["customer_name"], "Ada");
    assert_eq!(i["dynamic_variables"]["budget"], "12000");
    assert_eq!(i["dynamic_variables"]["precall_greeting"], "Hello Ada.");
    assert!(
        i["dynamic_variables"]
            .as_object()
            .unwrap()
            .values()
            .all(Value::is_string),
        "{a}"
    );
    assert_eq!(i["override_agent_id"], "agent_main");
    assert_eq!(i["metadata"]["precall_source"], "webhook");
    assert!(
        waited < Duration::from_secs(1),
        "cached data is answered at once: {waited:?}"
    );
    // The call is recorded like any other, with the platform in its trace.
    let call = i["metadata"]["precall_call_id"].as_str().unwrap();
    let token = app.create_token(&agent);
    let read: Value = app
        .client
        .get(format!("{}/api/v1/calls/{call}", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["platform"]["platform"], "retell");
    assert_eq!(read["variables"]["customer_name"], "Ada");
}

#[tokio::test]
async fn a_request_before_the_crm_webhook_is_woken_by_it() {
    let app = spawn_app().await;
    let (agent, hook, key) = connected_agent(&app, 8000);
    let url = connect(&app, &agent, "retell", RETELL_KEY, &[]);
    let body = retell_body("+12125550124");
    let sig = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
    let t = Instant::now();
    let asked = tokio::spawn({
        let (client, url) = (app.client.clone(), url.clone());
        async move {
            client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-retell-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550124",
        json!({"customer_name": "Grace"}),
    )
    .await;
    let res = asked.await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "woken, not fallen back: {:?}",
        t.elapsed()
    );
    let a: Value = res.json().await.unwrap();
    assert_eq!(
        a["call_inbound"]["dynamic_variables"]["customer_name"],
        "Grace"
    );
    assert_eq!(a["call_inbound"]["metadata"]["precall_source"], "webhook");
}

#[tokio::test]
async fn the_fallback_comes_before_the_platforms_deadline() {
    let app = spawn_app().await;
    // The webhook would wait 10 s; Telnyx's deadline is 1.5 s by default, less 0.3 s.
    let (agent, _, _) = connected_agent(&app, 10_000);
    let signing = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let public = STANDARD.encode(signing.verifying_key().to_bytes());
    let url = connect(&app, &agent, "telnyx", &public, &[]);
    let body = json!({"data": {"event_type": "assistant.initialization", "payload": {
        "telnyx_end_user_target": "+12125550125", "telnyx_agent_target": "+12125550199",
        "call_control_id": "v3:abc", "telnyx_conversation_channel": "phone_call"}}})
    .to_string();
    let t = Instant::now();
    let res = telnyx_post(&app, &url, &signing, &body, now_ms() / 1000).await;
    let waited = t.elapsed();
    assert_eq!(res.status(), 200);
    assert!(
        waited < Duration::from_millis(1500),
        "answered before Telnyx's 1.5 s: {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(1100),
        "it waited for the data: {waited:?}"
    );
    let a: Value = res.json().await.unwrap();
    assert_eq!(a["dynamic_variables"]["precall_source"], "fallback");
    assert_eq!(a["dynamic_variables"]["customer_name"], "");
    assert_eq!(a["dynamic_variables"]["precall_refused"], "false");
}

async fn telnyx_post(
    app: &TestApp,
    url: &str,
    key: &ed25519_dalek::SigningKey,
    body: &str,
    ts: i64,
) -> reqwest::Response {
    use ed25519_dalek::Signer;
    let sig = STANDARD.encode(key.sign(format!("{ts}|{body}").as_bytes()).to_bytes());
    app.client
        .post(url)
        .header("content-type", "application/json")
        .header("telnyx-signature-ed25519", sig)
        .header("telnyx-timestamp", ts.to_string())
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn forged_old_and_replayed_signatures_are_refused_and_start_no_call() {
    let app = spawn_app().await;
    let (agent, _, _) = connected_agent(&app, 0);
    let url = connect(&app, &agent, "retell", RETELL_KEY, &[]);
    let body = retell_body("+12125550126");
    let forged = verify::retell_signature("not the key", body.as_bytes(), now_ms());
    let old = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms() - 400_000);
    for (sig, why) in [
        (forged.as_str(), "does not match"),
        (old.as_str(), "replay"),
        ("", "malformed"),
    ] {
        let res = post_retell(&app, &url, &body, sig).await;
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let p: Value = res.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains(why), "{p}");
    }
    let good = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
    assert_eq!(post_retell(&app, &url, &body, &good).await.status(), 200);
    let again = post_retell(&app, &url, &body, &good).await;
    assert_eq!(again.status(), 401);
    let p: Value = again.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("replay"), "{p}");
    // Only the one verified request made a call.
    assert_calls(&app, &agent, 1).await;
    // An unknown URL is not found.
    let res = post_retell(&app, &format!("{}/connect/nope", app.address), &body, &good).await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn signed_bodies_that_are_not_a_platforms_request_are_refused_by_name_and_start_no_call() {
    let app = spawn_app().await;
    let (agent, _, _) = connected_agent(&app, 0);
    let url = connect(&app, &agent, "retell", RETELL_KEY, &[]);
    let deep = |open: &str, close: &str| format!("{}{}", open.repeat(300), close.repeat(300));
    let cases = [
        (
            r#"{"call_inbound": {"from_number": "+1212"#.to_owned(),
            400,
            "not JSON",
        ),
        (deep("[", "]"), 422, "not a JSON object"),
        (
            format!(
                r#"{{"call_inbound": {{"from_number": {}}}}}"#,
                deep("[", "]")
            ),
            422,
            "call_inbound.from_number is a list, not text",
        ),
        (
            deep(r#"{"a":"#, "}").replacen("}", "1}", 1),
            422,
            "call_inbound.from_number is missing",
        ),
        (
            r#"{"call_inbound": {"from_number": 12125550126, "to_number": ["+1"]}}"#.to_owned(),
            422,
            "call_inbound.from_number is a number, not text",
        ),
        (
            r#"{"call_inbound": {"from_number": "  "}}"#.to_owned(),
            422,
            "call_inbound.from_number is blank",
        ),
        (
            r#"{"call_inbound": "+12125550126"}"#.to_owned(),
            422,
            "call_inbound.from_number is missing",
        ),
        (
            r#"{"call_inbound": {"from_number": "+12125550126", "from_number": "+12125550127"}}"#
                .to_owned(),
            422,
            "duplicate field `from_number`",
        ),
        // Retell's inbound chats come to the same webhook
        // (https://docs.retellai.com/features/inbound-call-webhook).
        (
            r#"{"event": "chat_inbound", "chat_inbound": {"from_number": "+12125550126"}}"#
                .to_owned(),
            422,
            "this URL answers call_inbound",
        ),
    ];
    for (body, status, why) in cases {
        let sig = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
        let res = post_retell(&app, &url, &body, &sig).await;
        let got = res.status();
        let p: Value = res.json().await.unwrap();
        assert_eq!(got, status, "{body:.80} {p}");
        assert!(p["detail"].as_str().unwrap().contains(why), "{p}");
    }
    // A caller that is no phone number is named where Retell's body has it.
    let body = retell_body("Anonymous");
    let sig = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
    let res = post_retell(&app, &url, &body, &sig).await;
    assert_eq!(res.status(), 422);
    let p: Value = res.json().await.unwrap();
    assert_eq!(
        p["detail"], "call_inbound.from_number: \"Anonymous\" has no digits",
        "{p}"
    );
    assert_eq!(
        p["errors"][0]["pointer"], "/call_inbound/from_number",
        "{p}"
    );
    assert_calls(&app, &agent, 0).await;
}

#[tokio::test]
async fn a_synthflow_body_that_is_not_json_and_json_nested_too_deep_are_refused_by_name() {
    let app = spawn_app().await;
    let (agent, _, _) = connected_agent(&app, 0);
    // Synthflow signs the call_id of its body: a cut-off body is said not to be JSON, not to
    // lack a call_id.
    let synthflow = connect(&app, &agent, "synthflow", "synthflow-secret", &[]);
    let res = app
        .client
        .post(&synthflow)
        .header(
            "HTTP_SYNTHFLOW_SIGNATURE",
            verify::synthflow_signature("synthflow-secret", "sf-cut"),
        )
        .header("content-type", "application/json")
        .body(r#"{"call_id":"sf-cut","call_inbound":{"from_number":"+12125550170""#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["detail"], "the body is not JSON", "{p}");

    // JSON deeper than the parser follows, in a part Precall reads, is named as such.
    let vapi = connect(&app, &agent, "vapi", "vapi-secret", &[]);
    let mut call = json!({"customer": {"number": "+12125550171"}});
    for _ in 0..200 {
        call = json!({"call": call});
    }
    let body = json!({"message": {"type": "assistant-request", "customer": {"number": "+12125550171"}, "call": call}})
        .to_string();
    let res = app
        .client
        .post(&vapi)
        .header("x-vapi-secret", "vapi-secret")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let p: Value = res.json().await.unwrap();
    assert_eq!(status, 422, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .starts_with("the body nests objects or lists more than 128 deep"),
        "{p}"
    );
    assert_calls(&app, &agent, 0).await;
}

/// Vapi sends an assistant's messages to the phone number's server URL when the assistant
/// has none of its own; only some want an answer
/// (https://docs.vapi.ai/api-reference/messages/server-message).
#[tokio::test]
async fn vapi_messages_that_want_no_answer_are_acknowledged_and_start_nothing() {
    let app = spawn_app().await;
    let agent = app.create_agent("US");
    let vapi = connect(&app, &agent, "vapi", "vapi-secret", &[]);
    let send = |secret: &'static str, kind: &str| {
        app.client
            .post(&vapi)
            .header("authorization", format!("Bearer {secret}"))
            .json(&json!({"message": {"type": kind, "timestamp": 1, "call": {"id": format!("c-{kind}"), "customer": {"number": "+12125550180"}}}}))
            .send()
    };
    for kind in [
        "status-update",
        "end-of-call-report",
        "conversation-update",
        "hang",
    ] {
        let res = send("vapi-secret", kind).await.unwrap();
        assert_eq!(res.status(), 200, "{kind}");
        assert_eq!(res.json::<Value>().await.unwrap(), json!({}), "{kind}");
    }
    // A long call's report is larger than a webhook's body limit (64 KiB).
    let said: Vec<Value> = (0..2_000)
        .map(|i| json!({"role": "user", "message": format!("turn {i}: I would like to talk about my order"), "time": i}))
        .collect();
    let report = json!({"message": {"type": "end-of-call-report", "call": {"id": "c-long"}, "artifact": {"messages": said}}});
    assert!(report.to_string().len() > 64 * 1024);
    let res = app
        .client
        .post(&vapi)
        .header("authorization", "Bearer vapi-secret")
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A message that wants an answer Precall does not give is refused, saying so, and so is
    // a type Vapi does not list as wanting none.
    for kind in [
        "tool-calls",
        "handoff-destination-request",
        "some-new-request",
    ] {
        let res = send("vapi-secret", kind).await.unwrap();
        assert_eq!(res.status(), 422, "{kind}");
        let p: Value = res.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains(kind), "{p}");
    }
    // Vapi's final transcripts have a type of their own.
    let res = send("vapi-secret", "transcript[transcriptType=\"final\"]")
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // What is not a message, or has a type that is not text, is named.
    for (body, says) in [
        (json!({"message": 5}), "message is missing or not an object"),
        (
            json!({"message": {"type": 5}}),
            "message.type is a number, not text",
        ),
    ] {
        let res = app
            .client
            .post(&vapi)
            .header("x-vapi-secret", "vapi-secret")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{body}");
        let p: Value = res.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains(says), "{p}");
    }
    // Either header may carry the secret; a wrong one is named as sent.
    let res = app
        .client
        .post(&vapi)
        .header("x-vapi-secret", "stale")
        .header("authorization", "Bearer vapi-secret")
        .json(&json!({"message": {"type": "hang", "timestamp": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = send("guess", "hang").await.unwrap();
    assert_eq!(res.status(), 401);
    let p: Value = res.json().await.unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .starts_with("the Authorization header does not match"),
        "{p}"
    );
    // Still verified first.
    assert_eq!(send("guess", "status-update").await.unwrap().status(), 401);
    assert_calls(&app, &agent, 0).await;
}

/// Asserts that the agent's call history holds `n` calls.
async fn assert_calls(app: &TestApp, agent: &str, n: usize) {
    let calls = agent_calls(app, agent).await;
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(n), "{calls}");
}

/// The agent's call history, through the management API.
async fn agent_calls(app: &TestApp, agent: &str) -> Value {
    calls_seen_with(app, agent, &api_token(app).await).await
}

/// The agent's call history, through the management API with `token`.
async fn calls_seen_with(app: &TestApp, agent: &str, token: &str) -> Value {
    let url = format!("{}/api/v1/agents/{agent}/calls", app.address);
    app.get_json(&url, token).await
}

/// An admin API token (the first admin is made through the setup link).
async fn api_token(app: &TestApp) -> String {
    crate::admin::Console::set_up(app).await;
    cli_api_token(app)
}

/// An API token made with the CLI, once an admin is set up.
fn cli_api_token(app: &TestApp) -> String {
    let out = app.cli_json(&["api-token", "create", "--name", "tests"]);
    out["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_routing_filter_and_an_end_call_map_to_each_platforms_means() {
    let app = spawn_app().await;
    let (agent, hook, key) = connected_agent(&app, 0);
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550130",
        json!({"tier": "vip", "customer_name": "Lin"}),
    )
    .await;
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550131",
        json!({"blocked": true}),
    )
    .await;
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550132",
        json!({"tier": "vip"}),
    )
    .await;
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550133",
        json!({"blocked": true}),
    )
    .await;
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550134",
        json!({"tier": "vip"}),
    )
    .await;
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550135",
        json!({"blocked": true}),
    )
    .await;

    // Retell: the routed flow's agent overrides; a refusal gives no agent.
    let retell = connect(&app, &agent, "retell", RETELL_KEY, &[]);
    let post = |from: &str| {
        let body = retell_body(from);
        let sig = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
        (body, sig)
    };
    let (b, s) = post("+12125550130");
    let a: Value = post_retell(&app, &retell, &b, &s)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["call_inbound"]["override_agent_id"], "agent_vip");
    assert_eq!(
        a["call_inbound"]["dynamic_variables"]["precall_flow"],
        "vip"
    );
    let (b, s) = post("+12125550131");
    let a: Value = post_retell(&app, &retell, &b, &s)
        .await
        .json()
        .await
        .unwrap();
    assert!(a["call_inbound"].get("override_agent_id").is_none(), "{a}");
    assert!(a["call_inbound"].get("dynamic_variables").is_none(), "{a}");

    // Vapi: the routed flow that transfers at once is a transfer destination; a refusal an
    // error spoken to the caller.
    let vapi = connect(&app, &agent, "vapi", "vapi-server-secret", &[]);
    let vapi_post = |from: &str| {
        app.client
            .post(&vapi)
            .header("x-vapi-secret", "vapi-server-secret")
            .json(&json!({"message": {"type": "assistant-request", "call": {"id": format!("call-{from}"), "customer": {"number": from}}, "phoneNumber": {"number": "+12125550199"}}}))
            .send()
    };
    let a: Value = vapi_post("+12125550132")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        a["destination"],
        json!({"type": "number", "number": "+12125550100", "message": "Connecting you to your manager."})
    );
    let a: Value = vapi_post("+12125550133")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a, json!({"error": "Sorry, we cannot take your call."}));
    let wrong = app
        .client
        .post(&vapi)
        .header("x-vapi-secret", "guess")
        .json(&json!({"message": {"type": "assistant-request"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // Synthflow: the routed flow's agent; a refusal is an empty call_inbound.
    let synthflow = connect(&app, &agent, "synthflow", "synthflow-secret", &[]);
    let sf_post = |from: &str, call: &str| {
        let sig = verify::synthflow_signature("synthflow-secret", call);
        app.client
            .post(&synthflow)
            .header("HTTP_SYNTHFLOW_SIGNATURE", sig)
            .json(&json!({"event": "call_inbound", "call_id": call, "call_inbound": {"model_id": "m", "from_number": from, "to_number": "+12125550199"}}))
            .send()
    };
    let a: Value = sf_post("+12125550134", "sf-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["call_inbound"]["override_model_id"], "agent_vip");
    assert!(
        a["call_inbound"]["custom_variables"]["tier"] == "vip",
        "{a}"
    );
    let a: Value = sf_post("+12125550135", "sf-2")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a, json!({"call_inbound": {}}));

    // Telnyx keeps its assistant: the route is told in precall_flow, and since its webhook
    // cannot decline a call, a refusal in precall_refused and precall_message.
    let telnyx = connect(&app, &agent, "telnyx", &secret_of("telnyx", "tx"), &[]);
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550136",
        json!({"tier": "vip"}),
    )
    .await;
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550137",
        json!({"blocked": true}),
    )
    .await;
    let a: Value = announce(&app, "telnyx", &telnyx, "+12125550136", "tx")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["dynamic_variables"]["precall_flow"], "vip", "{a}");
    assert_eq!(a["dynamic_variables"]["precall_refused"], "false", "{a}");
    let a: Value = announce(&app, "telnyx", &telnyx, "+12125550137", "tx")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["dynamic_variables"]["precall_refused"], "true", "{a}");
    assert_eq!(
        a["dynamic_variables"]["precall_message"],
        "Sorry, we cannot take your call."
    );
}

fn twilio_sign(token: &str, url: &str, form: &[(&str, &str)]) -> String {
    let form: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    STANDARD.encode(verify::twilio_signature(token, url, &form))
}

async fn twilio_post(app: &TestApp, url: &str, form: &[(&str, &str)]) -> String {
    let sig = twilio_sign("twilio-auth-token", url, form);
    let res = app
        .client
        .post(url)
        .header("X-Twilio-Signature", sig)
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/xml");
    res.text().await.unwrap()
}

/// The `action` URL of the TwiML's Gather, unescaped.
fn gather_action(twiml: &str) -> String {
    let start = twiml.find("<Gather action=\"").expect("a Gather") + 16;
    let end = start + twiml[start..].find('"').unwrap();
    twiml[start..end].replace("&amp;", "&")
}

/// The Precall call a TwiML answer's `<Gather>` posts its answer for.
fn gathered_call(twiml: &str) -> String {
    let action = gather_action(twiml);
    let call = action.split("call=").nth(1).expect("a call in the action");
    call.split('&').next().unwrap().to_owned()
}

/// Call `id` as the agent's call history lists it.
fn listed_call(calls: &Value, id: &str) -> Value {
    calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["callId"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} in {calls}"))
}

#[tokio::test]
async fn twilio_runs_the_flow_greeting_gather_answer_and_end() {
    let app = spawn_app().await;
    let (agent, hook, key) = connected_agent(&app, 2000);
    let url = connect(&app, &agent, "twilio", "twilio-auth-token", &[]);
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550140",
        json!({"customer_name": "Ada"}),
    )
    .await;
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550141",
        json!({"blocked": true}),
    )
    .await;
    let first = twilio_post(
        &app,
        &url,
        &[
            ("CallSid", "CA123"),
            ("From", "+12125550140"),
            ("To", "+12125550199"),
            ("AccountSid", "AC1"),
        ],
    )
    .await;
    assert!(
        first.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Hello Ada.</Say><Gather "
        ),
        "{first}"
    );
    assert!(first.contains("input=\"speech dtmf\""), "{first}");
    assert!(
        first.contains("<Say>How can I help?</Say></Gather><Redirect"),
        "{first}"
    );
    let action = gather_action(&first);
    assert!(action.starts_with(&format!("{url}?call=")), "{action}");
    // Silence asks again; the answer continues the flow, through a Transfer Flow, to the
    // next Collect, then to its End Call. The same keypad answer twice is two turns, not a
    // replay.
    let again = twilio_post(
        &app,
        &format!("{action}&silence=1"),
        &[("CallSid", "CA123"), ("From", "+12125550140")],
    )
    .await;
    assert!(
        again.contains("<Say>How can I help?</Say></Gather>"),
        "{again}"
    );
    let answer = [
        ("CallSid", "CA123"),
        ("From", "+12125550140"),
        ("Digits", "1"),
    ];
    let next = twilio_post(&app, &action, &answer).await;
    assert!(
        next.contains("<Response><Say>One more thing.</Say><Gather "),
        "{next}"
    );
    assert!(
        next.contains("<Say>When shall we call back?</Say></Gather>"),
        "{next}"
    );
    let second = gather_action(&next);
    assert_ne!(second, action, "each turn has its own URL");
    let end = twilio_post(&app, &second, &answer).await;
    assert!(
        end.ends_with(
            "<Say>Thanks, we will call you back about 1 at 1.</Say><Hangup /></Response>"
        ),
        "{end}"
    );
    // A VIP is routed to the flow that transfers: said, then dialled.
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550142",
        json!({"tier": "vip"}),
    )
    .await;
    let vip = twilio_post(
        &app,
        &url,
        &[
            ("CallSid", "CA125"),
            ("From", "+12125550142"),
            ("To", "+12125550199"),
        ],
    )
    .await;
    assert!(
        vip.ends_with("<Response><Say>Welcome back.</Say><Say>Connecting you to your manager.</Say><Dial>+12125550100</Dial></Response>"),
        "{vip}"
    );
    // A pre-call End Call rejects the call.
    let rejected = twilio_post(
        &app,
        &url,
        &[
            ("CallSid", "CA124"),
            ("From", "+12125550141"),
            ("To", "+12125550199"),
        ],
    )
    .await;
    assert!(
        rejected.ends_with("<Response><Reject /></Response>"),
        "{rejected}"
    );
    // A forged Twilio request is refused.
    let res = app
        .client
        .post(&url)
        .header(
            "X-Twilio-Signature",
            twilio_sign("wrong", &url, &[("From", "+1")]),
        )
        .form(&[("From", "+1")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn connections_are_managed_through_the_api_and_the_cli() {
    let app = spawn_app().await;
    let agent = app.create_agent("US");
    let token = api_token(&app).await;
    let api = format!("{}/api/v1/agents/{agent}/connections", app.address);
    let res = app
        .client
        .post(&api)
        .bearer_auth(&token)
        .json(&json!({"platform": "telnyx", "secret": "not a key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    // Each refusal points at the field at fault (RFC 6901: `/secret`, not `/~1secret`).
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/secret", "{problem}");
    let res = app
        .client
        .post(&api)
        .bearer_auth(&token)
        .json(&json!({"platform": "retell", "secret": RETELL_KEY, "deadlineMs": 3000}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422, "only Telnyx's deadline can change");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/deadlineMs", "{problem}");
    let res = app
        .client
        .post(&api)
        .bearer_auth(&token)
        .json(&json!({"platform": "retell", "secret": RETELL_KEY, "mapping": {"defaultAgent": "a b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(
        problem["errors"][0]["pointer"], "/mapping/defaultAgent",
        "{problem}"
    );
    let res = app
        .client
        .post(&api)
        .bearer_auth(&token)
        .json(&json!({"platform": "vapi", "secret": "s", "scheme": "hmac", "mapping": {"defaultAgent": "asst_1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let made: Value = res.json().await.unwrap();
    assert_eq!(made["maxWaitMs"], 4000);
    assert!(
        made["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/connect/", app.address))
    );
    assert!(
        !made.to_string().contains("\"s\""),
        "the secret is never shown: {made}"
    );
    let list = app.cli_json(&["connection", "list", "--agent", &agent]);
    assert_eq!(list[0]["platform"], "vapi");
    let id = made["id"].as_i64().unwrap();
    let res = app
        .client
        .patch(format!("{api}/{id}"))
        .bearer_auth(&token)
        .json(&json!({"mapping": {"defaultAgent": "asst_2", "flowAgents": {"vip": "asst_3"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let changed: Value = res.json().await.unwrap();
    assert_eq!(changed["mapping"]["flowAgents"]["vip"], "asst_3");
    app.cli(&["connection", "delete", &id.to_string()]);
    let gone = app
        .client
        .post(made["url"].as_str().unwrap())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn the_connections_api_refuses_lists_for_objects_wrong_types_and_invisible_names() {
    let app = spawn_app().await;
    let agent = app.create_agent("US");
    let token = api_token(&app).await;
    let api = format!("{}/api/v1/agents/{agent}/connections", app.address);
    let send = |method: reqwest::Method, url: String, body: &'static str| {
        let req = app
            .client
            .request(method, url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let made = app.cli_json(&[
        "connection",
        "create",
        "--agent",
        &agent,
        "--platform",
        "vapi",
        "--secret",
        "tok",
        "--default-agent",
        "asst_1",
    ]);
    assert_eq!(made["agentId"], agent.as_str(), "{made}");
    let one = format!("{api}/{}", made["id"]);
    for (method, url, body, pointer, says) in [
        // serde would read a struct from a list of its fields, in order.
        (
            reqwest::Method::POST,
            api.clone(),
            r#"["twilio", "s3cret", null, "from-a-list", null, null]"#,
            None,
            "expected a JSON object",
        ),
        (
            reqwest::Method::PATCH,
            one.clone(),
            r#"[null, null, "renamed-by-a-list", null, null]"#,
            None,
            "expected a JSON object",
        ),
        (
            reqwest::Method::PATCH,
            one.clone(),
            r#"{"mapping": []}"#,
            Some("/mapping"),
            "expected a JSON object",
        ),
        (
            reqwest::Method::POST,
            api.clone(),
            r#"{"platform": "twilio", "secret": "s3cret", "mapping": ["a", {"main": "b"}]}"#,
            Some("/mapping"),
            "expected a JSON object",
        ),
        // A number where a platform's name belongs is a wrong type, not broken JSON.
        (
            reqwest::Method::POST,
            api.clone(),
            r#"{"platform": 1, "secret": "s3cret"}"#,
            Some("/platform"),
            "expected a string",
        ),
        (
            reqwest::Method::POST,
            api.clone(),
            r#"{"platform": ["retell"], "secret": "s3cret"}"#,
            Some("/platform"),
            "expected a string",
        ),
        // Names that draw nothing, or turn the text after them around.
        (
            reqwest::Method::POST,
            api.clone(),
            "{\"platform\": \"twilio\", \"secret\": \"s3cret\", \"name\": \"\\u200b\\u200b\"}",
            Some("/name"),
            "invisible",
        ),
        (
            reqwest::Method::PATCH,
            one.clone(),
            "{\"name\": \"\\u202e\\u2066\"}",
            Some("/name"),
            "invisible",
        ),
        (
            reqwest::Method::PATCH,
            one.clone(),
            "{\"name\": \"a\\u0000b\"}",
            Some("/name"),
            "control",
        ),
        // A scheme at fault is pointed at, not the secret beside it.
        (
            reqwest::Method::PATCH,
            one.clone(),
            r#"{"scheme": "md5", "secret": "x"}"#,
            Some("/scheme"),
            "scheme",
        ),
        // A name sent is a name: only a name left out is the platform's.
        (
            reqwest::Method::POST,
            api.clone(),
            r#"{"platform": "twilio", "secret": "s3cret", "name": "   "}"#,
            Some("/name"),
            "1 to 100 characters",
        ),
        // Twilio runs the flows itself: there is no agent of its to map a flow to.
        (
            reqwest::Method::POST,
            api.clone(),
            r#"{"platform": "twilio", "secret": "s3cret", "mapping": {"defaultAgent": "a"}}"#,
            Some("/mapping/defaultAgent"),
            "Twilio runs the flows itself",
        ),
        (
            reqwest::Method::POST,
            api.clone(),
            r#"{"platform": "twilio", "secret": "s3cret", "mapping": {"flowAgents": {"main": "a"}}}"#,
            Some("/mapping/flowAgents"),
            "Twilio runs the flows itself",
        ),
    ] {
        let (status, problem) = send(method, url, body).await;
        assert_eq!(status, 422, "{body}: {problem}");
        let entry = &problem["errors"][0];
        assert_eq!(entry["pointer"].as_str(), pointer, "{body}: {problem}");
        assert!(
            entry["detail"].as_str().unwrap().contains(says),
            "{body}: {problem}"
        );
    }
    // The CLI refuses the same.
    for (args, says) in [
        (["--name", "   "], "--name: a name is 1 to 100 characters"),
        (["--default-agent", "a"], "Twilio runs the flows itself"),
    ] {
        let mut all = vec![
            "connection",
            "create",
            "--agent",
            &agent,
            "--platform",
            "twilio",
            "--secret",
            "tok",
        ];
        all.extend(args);
        let error = app.cli_refused(&all);
        assert!(error.contains(says), "{error}");
    }
    // Nothing changed: one connection, its name and mapping as made.
    let list = app.cli_json(&["connection", "list", "--agent", &agent]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["name"], "Vapi", "{list}");
    // The API shows a connection as the CLI's --json does.
    let from_api = app.get_json(&api, &token).await;
    assert_eq!(from_api["connections"], list);
    assert_eq!(list[0]["mapping"]["defaultAgent"], "asst_1", "{list}");
}

#[tokio::test]
async fn the_console_sets_up_configures_and_shows_a_platforms_requests_live() {
    use futures_util::StreamExt;

    use crate::admin::{Console, location, read_events};
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let (agent, hook, key) = connected_agent(&app, 0);
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550150",
        json!({"tier": "vip"}),
    )
    .await;
    let base = format!("/admin/agents/{agent}/connections");

    // Setup: the platform and its secret.
    let setup = admin.page(&format!("{base}/new")).await;
    assert!(setup.contains("Retell API key"), "{setup}");
    let res = admin
        .submit(
            &format!("{base}/new"),
            &base,
            // A Vapi scheme chosen before the platform was changed to Retell is Vapi's only.
            &[
                ("platform", "retell"),
                ("secret", RETELL_KEY),
                ("scheme", "hmac"),
                ("name", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let configure = location(&res);
    assert!(configure.ends_with("/configure"), "{configure}");

    // Configure: the URL to paste, where, the deadline and margin, the mapping.
    let page = admin.page(&configure).await;
    let at = page.find("id=\"connection-url\">").unwrap() + "id=\"connection-url\">".len();
    let url = page[at..at + page[at..].find('<').unwrap()].to_owned();
    assert!(
        url.starts_with(&format!("{}/connect/", app.address)),
        "{url}"
    );
    assert!(page.contains("Inbound Webhook URL"), "{page}");
    assert!(page.contains("<strong>10000 ms</strong>"), "{page}");
    assert!(
        page.contains("<strong>1500 ms</strong>"),
        "the margin is shown: {page}"
    );
    assert!(
        page.contains("<strong>8500 ms</strong>"),
        "the longest wait is shown: {page}"
    );
    assert!(
        !page.contains(RETELL_KEY),
        "the secret is never shown again"
    );
    let cid = configure.split('/').rev().nth(1).unwrap().to_owned();
    let res = admin
        .submit(
            &configure,
            &format!("{base}/{cid}/mapping"),
            &[
                ("default_agent", "agent_main"),
                ("flow:vip", "agent_vip"),
                ("flow:main", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert!(admin.page(&configure).await.contains("value=\"agent_vip\""));

    // Test: the requests live, with their verdicts.
    let test_page = admin.page(&format!("{base}/{cid}/test")).await;
    assert!(
        test_page.contains("No request has reached this URL"),
        "{test_page}"
    );
    let res = admin.get(&format!("{base}/{cid}/events")).await;
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("listening"));
    let body = retell_body("+12125550150");
    let forged = verify::retell_signature("wrong key", body.as_bytes(), now_ms());
    assert_eq!(post_retell(&app, &url, &body, &forged).await.status(), 401);
    let good = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
    let answer: Value = post_retell(&app, &url, &body, &good)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["call_inbound"]["override_agent_id"], "agent_vip");
    let events = read_events(&mut stream, |e| e.len() >= 2).await;
    let (refused, answered) = (&events[0].1, &events[1].1);
    assert_eq!(refused["status"], 401);
    assert!(
        refused["verdict"]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{refused}"
    );
    assert_eq!(answered["status"], 200);
    assert_eq!(answered["caller"], "+12125550150");
    let verdict = answered["verdict"].as_str().unwrap();
    assert!(verdict.contains("flow vip → agent_vip"), "{verdict}");

    // The call page names the platform.
    let call = answered["callId"].as_str().unwrap();
    let call_page = admin
        .page(&format!("/admin/agents/{agent}/calls/{call}"))
        .await;
    assert!(
        call_page.contains("id=\"call-platform\">retell"),
        "{call_page}"
    );
    let listed = admin.page(&format!("{base}/{cid}/test")).await;
    assert!(
        listed.contains("Refused") && listed.contains("Answered"),
        "{listed}"
    );

    // A viewer that was away while more requests came than are kept (100): told how many
    // it missed, then given the newest.
    for _ in 0..120 {
        assert_eq!(post_retell(&app, &url, &body, &forged).await.status(), 401);
    }
    let res = admin.get(&format!("{base}/{cid}/events?after=2")).await;
    let mut stream = res.bytes_stream();
    let events = read_events(&mut stream, |e| e.len() >= 101).await;
    assert_eq!(events[0], ("skipped".to_owned(), json!({"count": 20})));
    assert_eq!(
        (&events[1].1["id"], &events[100].1["id"]),
        (&json!(23), &json!(122))
    );

    // An address with no connection's id in it is no connection: the console's 404.
    for path in [
        "abc/configure",
        "1.5/test",
        "99999999999999999999/configure",
    ] {
        let res = admin.get(&format!("{base}/{path}")).await;
        assert_eq!(res.status(), 404, "{path}");
        let page = res.text().await.unwrap();
        assert!(page.contains("This connection"), "{path}: {page}");
    }
}

/// A signed request of `platform` announcing a call from `from`, as the platform sends it
/// (signed with `secret`), at `url`.
fn announce(
    app: &TestApp,
    platform: &str,
    url: &str,
    from: &str,
    secret: &str,
) -> reqwest::RequestBuilder {
    let call_id = format!("call-{from}-{}", now_ms());
    announce_call(app, platform, url, from, secret, &call_id, 0)
}

/// [`announce`] for the platform's call `call_id`; a `variant` other than 0 adds a field the
/// platform may add when it asks again (signed anew, so not a replay).
fn announce_call(
    app: &TestApp,
    platform: &str,
    url: &str,
    from: &str,
    secret: &str,
    call_id: &str,
    variant: u32,
) -> reqwest::RequestBuilder {
    let call_id = call_id.to_owned();
    let attempt = variant.to_string();
    match platform {
        "retell" => {
            let body = retell_body(from);
            let sig = verify::retell_signature(secret, body.as_bytes(), now_ms());
            app.client
                .post(url)
                .header("content-type", "application/json")
                .header("x-retell-signature", sig)
                .body(body)
        }
        "synthflow" => app
            .client
            .post(url)
            .header(
                "HTTP_SYNTHFLOW_SIGNATURE",
                verify::synthflow_signature(secret, &call_id),
            )
            .json(
                &json!({"event": "call_inbound", "call_id": call_id, "call_inbound": {
                "model_id": "m", "from_number": from, "to_number": "+12125550199"}}),
            ),
        "vapi" => {
            let mut body = json!({
                "message": {"type": "assistant-request", "call": {"id": call_id, "customer": {"number": from}},
                            "phoneNumber": {"number": "+12125550199"}}});
            if variant > 0 {
                body["message"]["timestamp"] = json!(variant);
            }
            app.client
                .post(url)
                .header("x-vapi-secret", secret)
                .json(&body)
        }
        "telnyx" => {
            use ed25519_dalek::Signer;
            let key = telnyx_signing_key(secret);
            let mut body = json!({"data": {"event_type": "assistant.initialization", "payload": {
                "telnyx_end_user_target": from, "telnyx_agent_target": "+12125550199",
                "call_control_id": call_id, "telnyx_conversation_channel": "phone_call"}}});
            if variant > 0 {
                body["data"]["id"] = json!(attempt);
            }
            let body = body.to_string();
            let ts = (now_ms() / 1000).to_string();
            let sig = STANDARD.encode(key.sign(format!("{ts}|{body}").as_bytes()).to_bytes());
            app.client
                .post(url)
                .header("content-type", "application/json")
                .header("telnyx-signature-ed25519", sig)
                .header("telnyx-timestamp", ts)
                .body(body)
        }
        "twilio" => {
            let mut form = vec![
                ("CallSid", call_id.as_str()),
                ("From", from),
                ("To", "+12125550199"),
            ];
            if variant > 0 {
                form.push(("CallStatus", &attempt));
            }
            app.client
                .post(url)
                .header("X-Twilio-Signature", twilio_sign(secret, url, &form))
                .form(&form)
        }
        other => panic!("no platform {other}"),
    }
}

/// Telnyx signs with a private key; the connection holds its public key. The tests derive
/// both from a seed word.
fn telnyx_signing_key(seed: &str) -> ed25519_dalek::SigningKey {
    let mut bytes = [0u8; 32];
    for (b, s) in bytes.iter_mut().zip(seed.bytes().cycle()) {
        *b = s;
    }
    ed25519_dalek::SigningKey::from_bytes(&bytes)
}

/// What a connection of `platform` is given: the secret it verifies with (Telnyx's public
/// key for the seed word).
fn secret_of(platform: &str, word: &str) -> String {
    if platform == "telnyx" {
        STANDARD.encode(telnyx_signing_key(word).verifying_key().to_bytes())
    } else {
        word.to_owned()
    }
}

/// The caller's name as the platform's answer carries it.
fn name_in(platform: &str, answer: &str) -> Option<String> {
    if platform == "twilio" {
        let at = answer.find("<Say>Hello ")? + "<Say>Hello ".len();
        return Some(answer[at..at + answer[at..].find('.')?].to_owned());
    }
    let v: Value = serde_json::from_str(answer).ok()?;
    let vars = match platform {
        "retell" => &v["call_inbound"]["dynamic_variables"],
        "synthflow" => &v["call_inbound"]["custom_variables"],
        "vapi" => &v["assistantOverrides"]["variableValues"],
        _ => &v["dynamic_variables"],
    };
    vars["customer_name"].as_str().map(str::to_owned)
}

const PLATFORMS: [&str; 5] = ["retell", "synthflow", "vapi", "telnyx", "twilio"];

#[tokio::test]
async fn every_platform_answers_cached_data_and_refuses_forged_and_replayed_requests() {
    let app = spawn_app().await;
    let (agent, hook, key) = connected_agent(&app, 1000);
    for (i, platform) in PLATFORMS.into_iter().enumerate() {
        let url = connect(
            &app,
            &agent,
            platform,
            &secret_of(platform, "right-secret"),
            &[],
        );
        let from = format!("+1212555016{i}");
        crm(
            &app,
            &hook,
            &key,
            &agent,
            &from,
            json!({"customer_name": "Ada"}),
        )
        .await;
        // Forged: signed with another secret.
        let res = announce(&app, platform, &url, &from, "wrong-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{platform}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        // Signed: answered at once with the cached data.
        let req = announce(&app, platform, &url, &from, "right-secret");
        let replay = req.try_clone().unwrap();
        let t = Instant::now();
        let res = req.send().await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "{platform}: {:?}",
            t.elapsed()
        );
        assert_eq!(res.status(), 200, "{platform}");
        let answer = res.text().await.unwrap();
        assert_eq!(
            name_in(platform, &answer).as_deref(),
            Some("Ada"),
            "{platform}: {answer}"
        );
        // The same request again is a replay.
        let res = replay.send().await.unwrap();
        assert_eq!(res.status(), 401, "{platform}");
        let p: Value = res.json().await.unwrap();
        assert!(
            p["detail"].as_str().unwrap().contains("replay"),
            "{platform}: {p}"
        );
    }
    // Only the five verified requests made calls, each with its platform in the trace.
    assert_calls(&app, &agent, 5).await;
}

#[tokio::test]
async fn every_platforms_request_before_the_crm_webhook_is_woken_by_it() {
    let app = spawn_app().await;
    let (agent, hook, key) = connected_agent(&app, 10_000);
    let mut asked = Vec::new();
    for (i, platform) in PLATFORMS.into_iter().enumerate() {
        let url = connect(&app, &agent, platform, &secret_of(platform, "s3cret"), &[]);
        let from = format!("+1212555017{i}");
        let req = announce(&app, platform, &url, &from, "s3cret");
        asked.push((
            platform,
            from,
            tokio::spawn(async move {
                let res = req.send().await.unwrap();
                (res.status(), res.text().await.unwrap(), Instant::now())
            }),
        ));
    }
    // Telnyx's default deadline leaves 1.2 s: its caller's data lands first, well within it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut order: Vec<_> = asked
        .iter()
        .map(|(p, from, _)| (*p, from.clone()))
        .collect();
    order.sort_by_key(|(p, _)| *p != "telnyx");
    for (_, from) in &order {
        crm(
            &app,
            &hook,
            &key,
            &agent,
            from,
            json!({"customer_name": "Grace"}),
        )
        .await;
    }
    let landed = Instant::now();
    for (platform, _, task) in asked {
        let (status, answer, at) = task.await.unwrap();
        assert_eq!(status, 200, "{platform}: {answer}");
        assert_eq!(
            name_in(platform, &answer).as_deref(),
            Some("Grace"),
            "{platform}: {answer}"
        );
        assert!(
            at.saturating_duration_since(landed) < Duration::from_millis(900),
            "{platform} was woken, not left to fall back"
        );
    }
}

#[tokio::test]
async fn a_platform_asking_again_about_a_call_gets_the_first_answer_and_starts_nothing() {
    let app = spawn_app().await;
    let (agent, hook, key) = connected_agent(&app, 2_000);
    // The platforms whose requests name their call (Retell's does not; Synthflow signs only
    // its call id, so the same call again is the same signed request: a replay).
    for (i, platform) in ["vapi", "telnyx", "twilio"].into_iter().enumerate() {
        let url = connect(&app, &agent, platform, &secret_of(platform, "s3cret"), &[]);
        // Asked while the first request waits for the CRM, and again after its answer.
        let from = format!("+1212555018{i}");
        let call = format!("{platform}-call-{i}");
        let first = announce_call(&app, platform, &url, &from, "s3cret", &call, 0);
        let first = tokio::spawn(async move { first.send().await.unwrap().text().await.unwrap() });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let again = announce_call(&app, platform, &url, &from, "s3cret", &call, 1);
        let again = tokio::spawn(async move { again.send().await.unwrap().text().await.unwrap() });
        tokio::time::sleep(Duration::from_millis(200)).await;
        crm(
            &app,
            &hook,
            &key,
            &agent,
            &from,
            json!({"customer_name": "Ada"}),
        )
        .await;
        let (first, again) = (first.await.unwrap(), again.await.unwrap());
        assert_eq!(
            name_in(platform, &first).as_deref(),
            Some("Ada"),
            "{platform}: {first}"
        );
        assert_eq!(again, first, "{platform}");
        let later = announce_call(&app, platform, &url, &from, "s3cret", &call, 2);
        let replayed = later.try_clone().unwrap();
        let res = later.send().await.unwrap();
        assert_eq!(res.status(), 200, "{platform}");
        assert_eq!(res.text().await.unwrap(), first, "{platform}");
        // The same request sent again is still a replay.
        assert_eq!(replayed.send().await.unwrap().status(), 401, "{platform}");
        // Another of the platform's calls from the same caller is a call of its own.
        let other = announce_call(
            &app,
            platform,
            &url,
            &from,
            "s3cret",
            &format!("{call}-b"),
            0,
        );
        let other = other.send().await.unwrap().text().await.unwrap();
        assert!(
            other.contains("fallback") || name_in(platform, &other).as_deref() != Some("Ada"),
            "{platform}: {other}"
        );
    }
    // Data that never comes: the first request falls back at Telnyx's cap (1.2 s), and the
    // one asking again, which waits a little longer, gets that answer.
    let url = connect(&app, &agent, "telnyx", &secret_of("telnyx", "s3cret"), &[]);
    let send = |variant| {
        let req = announce_call(
            &app,
            "telnyx",
            &url,
            "+12125550189",
            "s3cret",
            "tx-none",
            variant,
        );
        tokio::spawn(async move { req.send().await.unwrap().text().await.unwrap() })
    };
    let first = send(0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = send(1);
    let (first, again) = (first.await.unwrap(), again.await.unwrap());
    assert!(first.contains(r#""precall_source":"fallback""#), "{first}");
    assert_eq!(again, first);
    // One call for each of the platform's calls: seven.
    assert_calls(&app, &agent, 7).await;
}

#[tokio::test]
async fn a_platform_that_goes_away_before_its_answer_still_has_it_made_kept_and_shown() {
    use crate::admin::Console;
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let (agent, hook, key) = connected_agent(&app, 2_000);
    let url = connect(&app, &agent, "vapi", &secret_of("vapi", "s3cret"), &[]);
    let from = "+12125550192";
    // Vapi gives up while the call waits for the CRM: its connection is dropped unanswered.
    let first = announce_call(&app, "vapi", &url, from, "s3cret", "vapi-gone", 0);
    let gave_up = tokio::time::timeout(Duration::from_millis(300), first.send()).await;
    assert!(gave_up.is_err(), "the call waits for the CRM's data");
    crm(
        &app,
        &hook,
        &key,
        &agent,
        from,
        json!({"customer_name": "Ada"}),
    )
    .await;
    // The first request's call went on and took the data: asking again gets its answer, and
    // no second call starts.
    let again = announce_call(&app, "vapi", &url, from, "s3cret", "vapi-gone", 1)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let again = again.text().await.unwrap();
    assert_eq!(name_in("vapi", &again).as_deref(), Some("Ada"), "{again}");
    let calls = calls_seen_with(&app, &agent, &cli_api_token(&app)).await;
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(1), "{calls}");
    // The Test step says the second request was given the first one's answer.
    let cid = app.cli_json(&["connection", "list", "--agent", &agent])[0]["id"]
        .as_i64()
        .unwrap();
    let page = admin
        .page(&format!("/admin/agents/{agent}/connections/{cid}/test"))
        .await;
    assert!(
        page.contains("asked again about Vapi call vapi-gone"),
        "{page}"
    );
}

/// The `<Redirect>` URL Twilio follows when the caller says nothing, unescaped.
fn silence_redirect(twiml: &str) -> String {
    let start = twiml.find("<Redirect").expect("a Redirect");
    let start = start + twiml[start..].find('>').unwrap() + 1;
    let end = start + twiml[start..].find("</Redirect>").unwrap();
    twiml[start..end].replace("&amp;", "&")
}

#[tokio::test]
async fn a_signed_request_sent_again_is_a_replay_however_its_headers_are_respelled() {
    let app = spawn_app().await;
    let (agent, _, _) = connected_agent(&app, 0);

    // Retell: the same body and timestamp, the signature in upper case, with a leading zero
    // in the timestamp, or beside another platform's headers.
    let url = connect(&app, &agent, "retell", RETELL_KEY, &[]);
    let body = retell_body("+12125550160");
    let ts = now_ms();
    let good = verify::retell_signature(RETELL_KEY, body.as_bytes(), ts);
    assert_eq!(post_retell(&app, &url, &body, &good).await.status(), 200);
    let (v, d) = good.split_once(",d=").unwrap();
    for (sig, extra) in [
        (format!("{v},d={}", d.to_uppercase()), None),
        (format!("v=0{ts},d={d}"), None),
        (good.clone(), Some(("x-timestamp", "1"))),
        (good.clone(), Some(("telnyx-timestamp", "2"))),
    ] {
        let mut req = app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-retell-signature", &sig)
            .body(body.clone());
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{sig} {extra:?}");
        let p: Value = res.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains("replay"), "{p}");
    }

    // Synthflow signs only the call id: a call id taken once is a replay with any body
    // (another caller's, whose CRM data it would read).
    let url = connect(&app, &agent, "synthflow", "synthflow-secret", &[]);
    let sig = verify::synthflow_signature("synthflow-secret", "call-once");
    let synthflow = |from: &str| {
        app.client
            .post(&url)
            .header("HTTP_SYNTHFLOW_SIGNATURE", &sig)
            .json(
                &json!({"event": "call_inbound", "call_id": "call-once", "call_inbound": {
                "model_id": "m", "from_number": from, "to_number": "+12125550199"}}),
            )
            .send()
    };
    assert_eq!(synthflow("+12125550161").await.unwrap().status(), 200);
    assert_eq!(synthflow("+12125550162").await.unwrap().status(), 401);

    // Twilio: the same fields in another order are the same signed request.
    let url = connect(&app, &agent, "twilio", "twilio-auth-token", &[]);
    let form = [
        ("CallSid", "CA900"),
        ("From", "+12125550163"),
        ("To", "+12125550199"),
    ];
    twilio_post(&app, &url, &form).await;
    let reversed: Vec<(&str, &str)> = form.iter().rev().copied().collect();
    let res = app
        .client
        .post(&url)
        .header(
            "X-Twilio-Signature",
            twilio_sign("twilio-auth-token", &url, &form),
        )
        .form(&reversed)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // One call each for Retell, Synthflow and Twilio.
    assert_calls(&app, &agent, 3).await;
}

#[tokio::test]
async fn twilio_asks_again_at_a_new_url_and_hangs_up_after_three_turns_without_an_answer() {
    let app = spawn_app().await;
    let (agent, _, _) = connected_agent(&app, 0);
    let url = connect(&app, &agent, "twilio", "twilio-auth-token", &[]);
    let caller = [("CallSid", "CA901"), ("From", "+12125550164")];
    let first = twilio_post(&app, &url, &caller).await;
    let action = gather_action(&first);
    let call = gathered_call(&first);

    // An empty answer twice: each is asked again at a URL of its own, so the second, the
    // same as the first, is not taken for a replay.
    let empty = [
        ("CallSid", "CA901"),
        ("From", "+12125550164"),
        ("Digits", ""),
    ];
    let again = twilio_post(&app, &action, &empty).await;
    assert!(
        again.contains("<Say>How can I help?</Say></Gather>"),
        "{again}"
    );
    let next = gather_action(&again);
    assert_ne!(next, action, "asked again at a new URL");
    let again = twilio_post(&app, &next, &empty).await;
    assert!(again.contains("<Gather "), "{again}");

    // Silence after them is the third turn in a row without an answer: the call is hung
    // up, and ends as unanswered.
    let hung = twilio_post(&app, &silence_redirect(&again), &caller).await;
    assert!(hung.ends_with("<Hangup /></Response>"), "{hung}");
    let view = listed_call(&agent_calls(&app, &agent).await, &call);
    assert_eq!(view["status"], "ended", "{view}");
    assert_eq!(view["outcome"], "no_answer", "{view}");
    // An answer that comes after is not taken: the call has ended.
    let late = [
        ("CallSid", "CA901"),
        ("From", "+12125550164"),
        ("Digits", "7"),
    ];
    let after = twilio_post(
        &app,
        &gather_action(&first).replace("turn=1", "turn=9"),
        &late,
    )
    .await;
    assert!(after.ends_with("<Hangup /></Response>"), "{after}");

    // Silence alone: three times in a row hangs up too.
    let caller = [("CallSid", "CA902"), ("From", "+12125550167")];
    let mut twiml = twilio_post(&app, &url, &caller).await;
    let call = gathered_call(&twiml);
    for n in 1..=3 {
        let redirect = silence_redirect(&twiml);
        twiml = twilio_post(&app, &redirect, &caller).await;
        if n < 3 {
            assert!(twiml.contains("<Gather "), "silence {n}: {twiml}");
        }
    }
    assert!(twiml.ends_with("<Hangup /></Response>"), "{twiml}");
    let runtime = app.create_token(&agent);
    let view = app
        .get_json(&format!("{}/api/v1/calls/{call}", app.address), &runtime)
        .await;
    assert_eq!(view["outcome"], "no_answer", "{view}");
}

#[tokio::test]
async fn a_twilio_turn_is_taken_only_through_the_connection_and_callsid_that_started_the_call() {
    let app = spawn_app().await;
    let (agent, _, _) = connected_agent(&app, 0);
    let ours = connect(&app, &agent, "twilio", "twilio-auth-token", &[]);
    // A second Twilio connection of the same agent, with another account's auth token.
    let theirs = connect(&app, &agent, "twilio", "other-auth-token", &[]);
    let retell = connect(&app, &agent, "retell", RETELL_KEY, &[]);
    let caller = [("CallSid", "CA910"), ("From", "+12125550165")];
    let call = gathered_call(&twilio_post(&app, &ours, &caller).await);
    let retell_call: Value = announce(&app, "retell", &retell, "+12125550166", RETELL_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let retell_call = retell_call["call_inbound"]["metadata"]["precall_call_id"]
        .as_str()
        .expect("Retell's answer names the call")
        .to_owned();
    let turn = |url: &str, token: &str, call: &str, sid: &str| {
        let url = format!("{url}?call={call}&turn=1");
        let form = [
            ("CallSid", sid.to_owned()),
            ("From", "+12125550165".to_owned()),
            ("SpeechResult", "billing".to_owned()),
        ];
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let sig = twilio_sign(token, &url, &pairs);
        let req = app
            .client
            .post(url)
            .header("X-Twilio-Signature", sig)
            .form(&form);
        async move { req.send().await.unwrap() }
    };
    // Validly signed, but for a call this connection did not start, or with another
    // call's CallSid: refused, and the call does not move on.
    for (url, token, call, sid, why) in [
        (
            &theirs,
            "other-auth-token",
            call.as_str(),
            "CA910",
            "another connection",
        ),
        (
            &ours,
            "twilio-auth-token",
            call.as_str(),
            "CA999",
            "another CallSid",
        ),
        (&ours, "twilio-auth-token", call.as_str(), "", "no CallSid"),
        (
            &ours,
            "twilio-auth-token",
            retell_call.as_str(),
            "CA910",
            "a Retell call",
        ),
    ] {
        let res = turn(url, token, call, sid).await;
        assert_eq!(res.status(), 404, "{why}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(
            problem["detail"], "no such call for this connection",
            "{why}"
        );
    }
    // The Twilio call still waits at its question; the Retell call was Retell's agent's from
    // its start.
    let calls = agent_calls(&app, &agent).await;
    let view = listed_call(&calls, &call);
    assert_eq!(view["status"], "active", "{view}");
    let view = listed_call(&calls, &retell_call);
    assert_eq!(
        (&view["status"], &view["outcome"]),
        (&json!("ended"), &json!("handed_over")),
        "{view}"
    );
    // The call's own connection and CallSid continue it, from the question it was at.
    let res = turn(&ours, "twilio-auth-token", &call, "CA910").await;
    assert_eq!(res.status(), 200);
    let next = res.text().await.unwrap();
    assert!(next.contains("<Say>One more thing.</Say>"), "{next}");
}

#[tokio::test]
async fn twilio_callers_without_a_phone_number_are_rejected_in_twiml() {
    let app = spawn_app().await;
    let (agent, _, _) = connected_agent(&app, 0);
    let url = connect(&app, &agent, "twilio", "twilio-auth-token", &[]);
    // Twilio's From is "the phone number or client identifier" of the caller
    // (https://www.twilio.com/docs/voice/twiml#request-parameters).
    for from in ["Anonymous", "client:alice", "sip:alice@example.com"] {
        let twiml = twilio_post(
            &app,
            &url,
            &[("CallSid", "CA902"), ("From", from), ("To", "+12125550199")],
        )
        .await;
        assert!(
            twiml.ends_with("<Response><Reject /></Response>"),
            "{from}: {twiml}"
        );
    }
    // The called side is not the caller: a SIP domain's address there turns no one away
    // (the one call below is the only one: the rejected callers made none).
    let twiml = twilio_post(
        &app,
        &url,
        &[
            ("CallSid", "CA903"),
            ("From", "+12125550191"),
            ("To", "sip:support@example.sip.twilio.com"),
        ],
    )
    .await;
    assert!(
        twiml.contains("<Say>") && !twiml.contains("<Reject"),
        "{twiml}"
    );
    assert_calls(&app, &agent, 1).await;
}

#[tokio::test]
async fn twilio_reads_spoken_numbers_and_yeses_and_warns_of_transfers_it_cannot_dial() {
    let app = spawn_app().await;
    let agent = app.create_agent("US");
    let doc = json!({
        "format": "precall-agent/1", "firstFlow": "main",
        "flows": [{"key": "main", "name": "Main", "blocks": [
            {"key": "greeting", "kind": "greeting", "message": "Hello.", "next": "ask_pin"},
            {"key": "ask_pin", "kind": "collect", "variable": "pin", "prompt": "Your PIN?", "next": "ask_ok"},
            {"key": "ask_ok", "kind": "collect", "variable": "agreed", "prompt": "Shall we go on?", "next": "sales"},
            {"key": "sales", "kind": "transfer_call", "destination": "", "department": "sales", "message": "Connecting you now."}
        ]}],
        "precall": [],
        "variables": [
            {"name": "pin", "type": "number", "default": null, "description": "", "source": {"flow": "main", "block": "ask_pin"}},
            {"name": "agreed", "type": "boolean", "default": null, "description": "", "source": {"flow": "main", "block": "ask_ok"}}
        ]
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    app.cli_json(&[
        "agent",
        "import",
        &agent,
        file.path().to_str().unwrap(),
        "--publish",
    ]);
    let url = connect(&app, &agent, "twilio", "twilio-auth-token", &[]);

    // The Configure page says which Transfer Calls Twilio has no number to dial for.
    let admin = crate::admin::Console::set_up(&app).await;
    let cid = connection_id(&app, &agent, &url);
    let page = admin
        .page(&format!(
            "/admin/agents/{agent}/connections/{cid}/configure"
        ))
        .await;
    assert!(
        page.contains("Twilio dials a Transfer Call's destination number"),
        "{page}"
    );
    assert!(page.contains("department <bdi>sales</bdi>"), "{page}");

    // Speech as Twilio writes it: a sentence. "1,234." is the number 1234, "Yes." is true.
    let form = |extra: (&'static str, &'static str)| {
        vec![("CallSid", "CA777"), ("From", "+12125550192"), extra]
    };
    let first = twilio_post(&app, &url, &form(("To", "+12125550199"))).await;
    let call = gathered_call(&first);
    let asked = twilio_post(
        &app,
        &gather_action(&first),
        &form(("SpeechResult", "1,234.")),
    )
    .await;
    assert!(asked.contains("Shall we go on?"), "{asked}");
    let said = twilio_post(
        &app,
        &gather_action(&asked),
        &form(("SpeechResult", "Yes.")),
    )
    .await;
    assert!(
        said.contains("<Say>Connecting you now.</Say><Hangup"),
        "{said}"
    );
    // The call as the runtime reads it.
    let runtime = app.create_token(&agent);
    let view = app
        .get_json(&format!("{}/api/v1/calls/{call}", app.address), &runtime)
        .await;
    assert_eq!(view["variables"]["pin"], 1234, "{view}");
    assert_eq!(view["variables"]["agreed"], true, "{view}");

    // Answers that do not fit count with silence: an answer taken starts the count again,
    // and the third turn in a row without one hangs up.
    let form = |extra: (&'static str, &'static str)| {
        vec![("CallSid", "CA778"), ("From", "+12125550193"), extra]
    };
    let first = twilio_post(&app, &url, &form(("To", "+12125550199"))).await;
    let call = gathered_call(&first);
    let banana = ("SpeechResult", "Banana.");
    let again = twilio_post(&app, &gather_action(&first), &form(banana)).await;
    assert!(again.contains("<Say>Your PIN?</Say></Gather>"), "{again}");
    let again = twilio_post(
        &app,
        &silence_redirect(&again),
        &form(("To", "+12125550199")),
    )
    .await;
    assert!(again.contains("<Say>Your PIN?</Say></Gather>"), "{again}");
    let asked = twilio_post(&app, &gather_action(&again), &form(("Digits", "42"))).await;
    assert!(asked.contains("Shall we go on?"), "{asked}");
    let mut twiml = asked;
    for n in 1..=3 {
        twiml = twilio_post(&app, &gather_action(&twiml), &form(banana)).await;
        if n < 3 {
            assert!(
                twiml.contains("<Say>Shall we go on?</Say></Gather>"),
                "wrong answer {n}: {twiml}"
            );
        }
    }
    assert!(twiml.ends_with("<Hangup /></Response>"), "{twiml}");
    let view = app
        .get_json(&format!("{}/api/v1/calls/{call}", app.address), &runtime)
        .await;
    assert_eq!(view["outcome"], "no_answer", "{view}");
    assert_eq!(view["variables"]["pin"], 42, "{view}");

    // Silence and answers that do not fit, mixed: the third in a row hangs up.
    let form = |extra: (&'static str, &'static str)| {
        vec![("CallSid", "CA779"), ("From", "+12125550194"), extra]
    };
    let first = twilio_post(&app, &url, &form(("To", "+12125550199"))).await;
    let wrong = twilio_post(&app, &gather_action(&first), &form(banana)).await;
    let silent = twilio_post(
        &app,
        &silence_redirect(&wrong),
        &form(("To", "+12125550199")),
    )
    .await;
    assert!(silent.contains("<Say>Your PIN?</Say></Gather>"), "{silent}");
    let hung = twilio_post(&app, &gather_action(&silent), &form(banana)).await;
    assert!(hung.ends_with("<Hangup /></Response>"), "{hung}");
}

#[tokio::test]
async fn a_telnyx_event_other_than_assistant_initialization_starts_no_call() {
    let app = spawn_app().await;
    let (agent, _, _) = connected_agent(&app, 0);
    let key = telnyx_signing_key("event-type");
    let public = STANDARD.encode(key.verifying_key().to_bytes());
    let url = connect(&app, &agent, "telnyx", &public, &[]);
    // https://developers.telnyx.com/docs/inference/ai-assistants/dynamic-variables
    let body = json!({"data": {"event_type": "call.hangup", "payload": {
        "telnyx_end_user_target": "+12125550165", "telnyx_agent_target": "+12125550199"}}})
    .to_string();
    let res = telnyx_post(&app, &url, &key, &body, now_ms() / 1000).await;
    assert_eq!(res.status(), 422);
    let p: Value = res.json().await.unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("assistant.initialization"),
        "{p}"
    );
    assert_calls(&app, &agent, 0).await;
}

#[tokio::test]
async fn the_console_asks_before_deleting_a_connection_and_keeps_a_refused_setups_choices() {
    use crate::admin::{Console, location};
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let (agent, _, _) = connected_agent(&app, 0);
    let base = format!("/admin/agents/{agent}/connections");

    // A refused Setup comes back with the platform, scheme and name chosen (not the secret).
    let res = admin
        .submit(
            &format!("{base}/new"),
            &base,
            &[
                ("platform", "telnyx"),
                ("secret", "not-a-key"),
                ("scheme", ""),
                ("name", "My Telnyx"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let back = location(&res);
    let page = admin.page(&back).await;
    assert!(page.contains("base64 of 32 bytes"), "{page}");
    assert!(
        page.contains("<option value=\"telnyx\" selected>"),
        "{page}"
    );
    assert!(page.contains("value=\"My Telnyx\""), "{page}");
    assert!(
        !page.contains("not-a-key"),
        "the secret is not carried back"
    );

    // A mapping for a flow the agent does not have is refused, and nothing is saved; the
    // mapping's own checks name the page's fields.
    let url = connect(&app, &agent, "retell", RETELL_KEY, &[]);
    let cid = connection_id(&app, &agent, &url);
    let configure = format!("{base}/{cid}/configure");
    admin
        .submit(
            &configure,
            &format!("{base}/{cid}/mapping"),
            &[("default_agent", "agent_x"), ("flow:ghost", "agent_ghost")],
        )
        .await;
    let page = admin.page(&configure).await;
    assert!(
        page.contains("the agent has no flow with the key ghost"),
        "{page}"
    );
    assert!(!page.contains("agent_x"), "nothing saved: {page}");
    // The refused form comes back with what was typed, not with what is saved.
    let res = admin
        .submit(
            &configure,
            &format!("{base}/{cid}/mapping"),
            &[("default_agent", "agent x")],
        )
        .await;
    assert_eq!(res.status(), 303);
    let page = admin.page(&location(&res)).await;
    assert!(
        page.contains("Default agent id: 1 to 200 characters"),
        "{page}"
    );
    assert!(
        page.contains("name=\"default_agent\" value=\"agent x\""),
        "{page}"
    );
    let page = admin.page(&configure).await;
    assert!(!page.contains("agent x"), "nothing saved: {page}");

    // Delete asks first (GET changes nothing), then deletes.
    assert!(
        page.contains(&format!(
            "<form method=\"get\" action=\"{base}/{cid}/delete\" class=\"inline\" data-confirm="
        )),
        "{page}"
    );
    let ask = admin.page(&format!("{base}/{cid}/delete")).await;
    assert!(ask.contains("Delete the connection"), "{ask}");
    assert!(ask.contains("name=\"csrf\""), "{ask}");
    let body = retell_body("+12125550166");
    let sig = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
    assert_eq!(
        post_retell(&app, &url, &body, &sig).await.status(),
        200,
        "the URL still answers after the question"
    );
    let res = admin
        .submit(
            &format!("{base}/{cid}/delete"),
            &format!("{base}/{cid}/delete"),
            &[],
        )
        .await;
    assert_eq!(res.status(), 303);
    let body = retell_body("+12125550167");
    let sig = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
    assert_eq!(post_retell(&app, &url, &body, &sig).await.status(), 404);
}

#[tokio::test]
async fn the_test_step_badges_a_refused_call_declined_and_a_form_without_its_token_is_refused() {
    use crate::admin::Console;
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let (agent, hook, key) = connected_agent(&app, 0);
    let base = format!("/admin/agents/{agent}/connections");
    let url = connect(&app, &agent, "retell", RETELL_KEY, &[]);
    // The agent's pre-call End Call refuses a blocked caller; another caller is answered.
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550170",
        json!({"blocked": true}),
    )
    .await;
    for from in ["+12125550170", "+12125550171"] {
        let body = retell_body(from);
        let sig = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
        assert_eq!(post_retell(&app, &url, &body, &sig).await.status(), 200);
    }
    let list = admin.page(&base).await;
    assert!(
        list.contains(&format!(
            "<a href=\"{base}\" aria-current=\"page\">Voice platforms</a>"
        )),
        "the agent's tabs: {list}"
    );
    let cid = app.cli_json(&["connection", "list", "--agent", &agent])[0]["id"]
        .as_i64()
        .unwrap();
    let test_page = admin.page(&format!("{base}/{cid}/test")).await;
    assert_eq!(
        test_page.matches(">Declined</span>").count(),
        1,
        "{test_page}"
    );
    assert_eq!(
        test_page.matches(">Answered</span>").count(),
        1,
        "{test_page}"
    );

    // A form posted without its CSRF token: refused, titled as such, nothing deleted.
    let res = admin.post(&format!("{base}/{cid}/delete"), &[]).await;
    assert_eq!(res.status(), 403);
    let page = res.text().await.unwrap();
    assert!(page.contains("<h1>This request was refused</h1>"), "{page}");
    let body = retell_body("+12125550172");
    let sig = verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
    assert_eq!(post_retell(&app, &url, &body, &sig).await.status(), 200);
}
