//! Signed webhooks (Standard Webhooks, and Svix's names for the same headers): signatures
//! checked over the raw body, replays and stale timestamps refused, `webhook-id` or `svix-id`
//! as the idempotency key, requests signed by the official svix and standardwebhooks
//! libraries, and the Configure step's signed samples run as a sender would run them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::admin::Console;
use crate::helpers::{Setup, TestApp, assert_problem, spawn_app};

/// A webhook set up through the CLI, with its action id.
pub struct Webhook {
    pub setup: Setup,
    pub action_id: String,
}

pub fn webhook(app: &TestApp) -> Webhook {
    let agent_id = app.create_agent("US");
    let created = app.cli_json(&[
        "action",
        "create-webhook",
        "--agent",
        &agent_id,
        "--wait-ms",
        "0",
        "--publish",
    ]);
    let token = app.create_token(&agent_id);
    Webhook {
        setup: Setup {
            agent_id,
            url: created["url"].as_str().unwrap().to_owned(),
            key: created["apiKey"].as_str().unwrap().to_owned(),
            token,
        },
        action_id: created["actionKey"].as_str().unwrap().to_owned(),
    }
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The `webhook-signature` a Standard Webhooks sender computes, written from the
/// specification rather than with Precall's code.
pub fn signature(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Posts `body` with the key and the three signing headers as given.
async fn post(
    app: &TestApp,
    s: &Setup,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(&s.url)
        .header("X-Authorization", &s.key)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// Posts `body` signed with `secret` as event `id`.
async fn post_signed(
    app: &TestApp,
    s: &Setup,
    secret: &str,
    id: &str,
    body: &Value,
) -> reqwest::Response {
    let ts = now_secs();
    let sig = signature(secret, id, ts, body.to_string().as_bytes());
    post(
        app,
        s,
        &[
            ("webhook-id", id),
            ("webhook-timestamp", &ts.to_string()),
            ("webhook-signature", &sig),
        ],
        body,
    )
    .await
}

/// Turns signing on or off from the CLI; returns the secret when one was made. The running
/// server notices within moments: waits until an unsigned probe (which caches nothing
/// either way: its body is refused) gets the expected answer.
pub async fn set_signing(app: &TestApp, w: &Webhook, on: bool) -> Option<String> {
    let out = app.cli_json(&[
        "action",
        "update-webhook",
        "--agent",
        &w.setup.agent_id,
        "--action",
        &w.action_id,
        "--signing",
        if on { "on" } else { "off" },
    ]);
    let expected = if on { 401 } else { 422 };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let probe = post(app, &w.setup, &[], &json!({})).await.status();
        if probe.as_u16() == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "signing still not {on} after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out["signingSecret"].as_str().map(str::to_owned)
}

fn body(agent_id: &str, phone: &str, priority: &str) -> Value {
    json!({"agentId": agent_id, "phoneNumber": phone, "priority": priority})
}

#[tokio::test]
async fn a_validly_signed_request_is_accepted_and_its_fields_reach_the_call() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let secret = set_signing(&app, &w, true).await.expect("a secret, once");
    assert!(secret.starts_with("whsec_"));
    assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 32);

    let res = post_signed(
        &app,
        &w.setup,
        &secret,
        "evt_1",
        &body(&w.setup.agent_id, "+12125551234", "high"),
    )
    .await;
    assert_eq!(res.status(), 202);
    let call = app.start_call_json(&w.setup, "+1 212 555 1234").await;
    assert_eq!(call["source"], "webhook");
    assert_eq!(call["variables"]["priority"], "high");

    // Turned on again, the secret is kept and not shown again.
    let again = app.cli_json(&[
        "action",
        "update-webhook",
        "--agent",
        &w.setup.agent_id,
        "--action",
        &w.action_id,
        "--signing",
        "on",
    ]);
    assert!(again["signingSecret"].is_null(), "{again}");
    // Never in the deliveries.
    let all = serde_json::to_string(&app.deliveries(&w.setup.agent_id)).unwrap();
    assert!(!all.contains(&secret[6..]));
}

#[tokio::test]
async fn unsigned_and_badly_signed_requests_get_401_naming_the_problem_and_cache_nothing() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let secret = set_signing(&app, &w, true).await.unwrap();
    let other_secret = format!("whsec_{}", STANDARD.encode([7u8; 32]));
    let victim = "+12125550100";
    let b = body(&s.agent_id, victim, "high");
    let raw = b.to_string();
    let now = now_secs();
    let ts = now.to_string();
    let good = signature(&secret, "evt_x", now, raw.as_bytes());
    // A minute past the 300 s tolerance either way, so that the clock ticking while the
    // cases run (one second more would put a future timestamp back within it) changes
    // nothing. The exact edges are unit-tested with a fixed clock.
    let stale = now - 360;
    let future = now + 360;
    let tampered = signature(
        &secret,
        "evt_x",
        now,
        body(&s.agent_id, victim, "low").to_string().as_bytes(),
    );
    let by_other = signature(&other_secret, "evt_x", now, raw.as_bytes());
    let stale_sig = signature(&secret, "evt_x", stale, raw.as_bytes());
    let future_sig = signature(&secret, "evt_x", future, raw.as_bytes());
    let (stale, future) = (stale.to_string(), future.to_string());

    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, Headers, &str)> = vec![
        ("unsigned", vec![], "webhook-id header is missing"),
        (
            "no signature",
            vec![("webhook-id", "evt_x"), ("webhook-timestamp", &ts)],
            "webhook-signature header is missing",
        ),
        (
            "no timestamp",
            vec![("webhook-id", "evt_x"), ("webhook-signature", &good)],
            "webhook-timestamp header is missing",
        ),
        (
            "no id",
            vec![("webhook-timestamp", &ts), ("webhook-signature", &good)],
            "webhook-id header is missing",
        ),
        (
            "body changed after signing",
            vec![
                ("webhook-id", "evt_x"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &tampered),
            ],
            "webhook-signature header does not match",
        ),
        (
            "signed by another secret",
            vec![
                ("webhook-id", "evt_x"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &by_other),
            ],
            "webhook-signature header does not match",
        ),
        (
            "signed for another id",
            vec![
                ("webhook-id", "evt_y"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &good),
            ],
            "webhook-signature header does not match",
        ),
        (
            "stale timestamp",
            vec![
                ("webhook-id", "evt_x"),
                ("webhook-timestamp", &stale),
                ("webhook-signature", &stale_sig),
            ],
            "refused as replays",
        ),
        (
            "future timestamp",
            vec![
                ("webhook-id", "evt_x"),
                ("webhook-timestamp", &future),
                ("webhook-signature", &future_sig),
            ],
            "in the future",
        ),
        (
            "timestamp not in seconds",
            vec![
                ("webhook-id", "evt_x"),
                ("webhook-timestamp", "2026-11-27T10:00:00Z"),
                ("webhook-signature", &good),
            ],
            "webhook-timestamp header is malformed",
        ),
        (
            "signature not v1",
            vec![
                ("webhook-id", "evt_x"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", "sha256=0123abcd"),
            ],
            "webhook-signature header is malformed",
        ),
        (
            "id with a space",
            vec![
                ("webhook-id", "evt x"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &good),
            ],
            "webhook-id header is malformed",
        ),
    ];
    let count = cases.len();
    for (name, headers, says) in cases {
        let res = post(&app, s, &headers, &b).await;
        let problem = assert_problem(res, 401, "unauthorized").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{name}: {detail}");
        assert!(!detail.contains(&secret[6..]), "{name}: {detail}");
    }

    // A valid signature for another body is refused too.
    let other_body = post(
        &app,
        s,
        &[
            ("webhook-id", "evt_x"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &good),
        ],
        &body(&s.agent_id, "+12125550199", "high"),
    )
    .await;
    assert_eq!(other_body.status(), 401);
    let call = app.start_call_json(s, victim).await;
    assert_eq!(call["source"], "fallback", "nothing was cached");

    let deliveries = app.deliveries(&s.agent_id);
    let refused: Vec<_> = deliveries
        .iter()
        .filter(|d| d["status"] == 401 && d["outcome"] == "refused")
        .collect();
    // The set_signing probe was refused too.
    assert!(refused.len() > count, "{deliveries:?}");
    let all = serde_json::to_string(&deliveries).unwrap();
    assert!(
        !all.contains(&secret[6..]),
        "the secret is on record: {all}"
    );
    assert!(!all.contains(&good[3..]), "a signature is on record: {all}");
}

#[tokio::test]
async fn a_replayed_signed_request_returns_the_first_answer_and_changes_nothing() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let secret = set_signing(&app, &w, true).await.unwrap();
    let phone = "+12125551234";
    let first_body = body(&s.agent_id, phone, "high");
    let ts = now_secs();
    let sig = signature(&secret, "evt_1", ts, first_body.to_string().as_bytes());
    let ts = ts.to_string();
    let headers = [
        ("webhook-id", "evt_1"),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    let first = post(&app, s, &headers, &first_body).await;
    assert_eq!(first.status(), 202);
    let first_answer: Value = first.json().await.unwrap();

    // A later event changes the caller's priority.
    let later = post_signed(&app, s, &secret, "evt_2", &body(&s.agent_id, phone, "low")).await;
    assert_eq!(later.status(), 202);

    // The first request again, byte for byte: its first answer, and nothing changes.
    let replay = post(&app, s, &headers, &first_body).await;
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), first_answer);
    let call = app.start_call_json(s, phone).await;
    assert_eq!(call["variables"]["priority"], "low");

    // The signed webhook-id is the idempotency key, whatever Idempotency-Key says.
    let mut with_other_key = headers.to_vec();
    with_other_key.push(("Idempotency-Key", "something-else"));
    let again = post(&app, s, &with_other_key, &first_body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn turning_signing_off_accepts_unsigned_requests_again() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let b = body(&s.agent_id, "+12125551234", "high");
    assert_eq!(post(&app, s, &[], &b).await.status(), 202);
    set_signing(&app, &w, true).await.unwrap();
    let refused = post(&app, s, &[], &b).await;
    assert_problem(refused, 401, "unauthorized").await;
    assert!(set_signing(&app, &w, false).await.is_none());
    assert_eq!(post(&app, s, &[], &b).await.status(), 202);
}

#[tokio::test]
async fn a_new_signing_secret_replaces_the_old_one_at_once() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let old = set_signing(&app, &w, true).await.unwrap();
    let new = app.cli_json(&[
        "action",
        "update-webhook",
        "--agent",
        &w.setup.agent_id,
        "--action",
        &w.action_id,
        "--new-signing-secret",
    ])["signingSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(old, new);
    let b = body(&s.agent_id, "+12125551234", "high");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut n = 0;
    while post_signed(&app, s, &new, &format!("evt_{n}"), &b)
        .await
        .status()
        != 202
    {
        assert!(Instant::now() < deadline, "the new secret never worked");
        tokio::time::sleep(Duration::from_millis(50)).await;
        n += 1;
    }
    let res = post_signed(&app, s, &old, "evt_old", &b).await;
    assert_problem(res, 401, "unauthorized").await;
}

/// The text of the `<pre id="{id}">` on a page, as a browser's copy button would copy it.
pub fn pre_text(page: &str, id: &str) -> String {
    let open = format!("id=\"{id}\"");
    let at = page.find(&open).unwrap_or_else(|| panic!("no #{id}"));
    let start = at + page[at..].find('>').unwrap() + 1;
    let end = start + page[start..].find("</pre>").unwrap();
    unescape(&page[start..end])
}

/// Text of an HTML element: named and numeric character references decoded.
pub fn unescape(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "amp" => Some('&'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub async fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
#[ignore = "needs curl and openssl, like the browser tests need chromium"]
async fn the_configure_steps_signed_samples_work_when_run() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    let configure = admin.create_webhook(&agent).await;
    let page = admin.page(&configure).await;
    let key: String = page[page.find("pcwk_").expect("the key, shown once")..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let url: String = page[page.find(&format!("{}/webhooks/", app.address)).unwrap()..]
        .chars()
        .take_while(|c| *c != '<' && *c != '&')
        .collect();
    assert!(page.contains("Require signed requests"));

    // Require signatures: the secret is shown once, with samples that sign.
    let res = admin
        .submit(
            &configure,
            &configure.replace("/configure", "/signing"),
            &[("required", "on")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = admin.page(&configure).await;
    let secret_at = page.find("whsec_").expect("the secret, shown once");
    let secret: String = page[secret_at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "_+/=".contains(*c))
        .collect();
    assert_eq!(secret.len(), 6 + 44);
    let shell = pre_text(&page, "curl");
    let python = pre_text(&page, "python-sample");
    assert!(shell.contains(&secret) && shell.contains("openssl"));
    assert!(python.contains(&secret));

    // Unsigned requests are refused now.
    let unsigned = app
        .client
        .post(&url)
        .header("X-Authorization", &key)
        .json(&json!({"agentId": agent, "phoneNumber": "+12125550123"}))
        .send()
        .await
        .unwrap();
    assert_problem(unsigned, 401, "unauthorized").await;

    // As an admin would paste them: the key comes from the environment.
    let env = [("PRECALL_API_KEY", key.as_str())];
    let (ok, out) = run(
        "sh",
        &["-c", &format!("{shell} -s -w ' %{{http_code}}'")],
        &env,
    )
    .await;
    assert!(ok && out.ends_with(" 202"), "{shell}\n{out}");
    assert!(out.contains(r#""status":"accepted""#), "{out}");
    let (ok, out) = run("python3", &["-c", &python], &env).await;
    assert!(ok && out.starts_with("202 "), "{python}\n{out}");
    let node = pre_text(&page, "node-sample");
    assert!(node.contains(&secret));
    let (ok, out) = run("node", &["-e", &node], &env).await;
    assert!(ok && out.starts_with("202 "), "{node}\n{out}");

    // Both reached the webhook, signed.
    let viewer = admin
        .page(&configure.replace("/configure", "/deliveries"))
        .await;
    assert!(viewer.matches("+12125550123").count() >= 2);

    // Never shown again in full; Regenerate is offered.
    let again = admin.page(&configure).await;
    assert!(!again.contains(&secret), "the secret was shown twice");
    assert!(again.contains(&secret[secret.len() - 4..]));
    assert!(again.contains("Regenerate secret"));
    let shell_later = pre_text(&again, "curl");
    assert!(shell_later.contains("$PRECALL_SIGNING_SECRET"));
    let env = [
        ("PRECALL_API_KEY", key.as_str()),
        ("PRECALL_SIGNING_SECRET", secret.as_str()),
    ];
    let (ok, out) = run(
        "sh",
        &["-c", &format!("{shell_later} -s -w ' %{{http_code}}'")],
        &env,
    )
    .await;
    assert!(ok && out.ends_with(" 202"), "{shell_later}\n{out}");

    // Turned off from the page, the plain cURL is back.
    admin
        .submit(
            &configure,
            &configure.replace("/configure", "/signing"),
            &[],
        )
        .await;
    let off = admin.page(&configure).await;
    assert!(!pre_text(&off, "curl").contains("openssl"));
    for sample in ["python-sample", "node-sample"] {
        assert!(
            !pre_text(&off, sample).contains("webhook-signature"),
            "{sample}"
        );
    }
}

/// The three headers of a request signed with `secret` as event `id` at `ts`, under the
/// Standard Webhooks names (`"webhook"`) or Svix's (`"svix"`).
fn signed_as(prefix: &str, secret: &str, id: &str, ts: i64, body: &Value) -> Vec<(String, String)> {
    let sig = signature(secret, id, ts, body.to_string().as_bytes());
    vec![
        (format!("{prefix}-id"), id.to_owned()),
        (format!("{prefix}-timestamp"), ts.to_string()),
        (format!("{prefix}-signature"), sig),
    ]
}

fn as_refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

#[tokio::test]
async fn svix_signed_requests_are_accepted_and_svix_id_is_their_idempotency_key() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let secret = set_signing(&app, &w, true).await.unwrap();
    let phone = "+12125551234";
    let first_body = body(&s.agent_id, phone, "high");
    let first = signed_as("svix", &secret, "msg_1", now_secs(), &first_body);
    let res = post(&app, s, &as_refs(&first), &first_body).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let first_answer: Value = res.json().await.unwrap();
    let call = app.start_call_json(s, phone).await;
    assert_eq!(call["variables"]["priority"], "high");

    let later_body = body(&s.agent_id, phone, "low");
    let later = signed_as("svix", &secret, "msg_2", now_secs(), &later_body);
    assert_eq!(
        post(&app, s, &as_refs(&later), &later_body).await.status(),
        202
    );
    // Svix retries a message with the same svix-id: the first answer, nothing changes.
    let retried = post(&app, s, &as_refs(&first), &first_body).await;
    assert_eq!(retried.status(), 202);
    assert_eq!(retried.headers()["idempotent-replayed"], "true");
    assert_eq!(retried.json::<Value>().await.unwrap(), first_answer);
    let call = app.start_call_json(s, phone).await;
    assert_eq!(call["variables"]["priority"], "low");
}

#[tokio::test]
async fn svix_id_deduplicates_like_an_idempotency_key_on_an_unsigned_webhook() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let b = body(&s.agent_id, "+12125551234", "high");
    for _ in 0..2 {
        let res = post(
            &app,
            s,
            &[("svix-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")],
            &b,
        )
        .await;
        assert_eq!(res.status(), 202);
    }
    let outcomes: Vec<_> = app
        .deliveries(&s.agent_id)
        .iter()
        .map(|d| d["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["replayed", "cached"]);
    let res = post(&app, s, &[("svix-id", "msg 1")], &b).await;
    let problem = assert_problem(res, 400, "bad-request").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("svix-id must be"),
        "{problem}"
    );
}

#[tokio::test]
async fn badly_signed_svix_requests_get_401_naming_the_svix_header_and_cache_nothing() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let secret = set_signing(&app, &w, true).await.unwrap();
    let other_secret = format!("whsec_{}", STANDARD.encode([7u8; 32]));
    let victim = "+12125550100";
    let b = body(&s.agent_id, victim, "high");
    let now = now_secs();
    let mut no_timestamp = signed_as("svix", &secret, "msg_x", now, &b);
    no_timestamp.remove(1);
    let cases = [
        (
            "body changed after signing",
            signed_as(
                "svix",
                &secret,
                "msg_x",
                now,
                &body(&s.agent_id, victim, "low"),
            ),
            "the svix-signature header does not match: sign \"{svix-id}.{svix-timestamp}.{body}\"",
        ),
        (
            "signed by another secret",
            signed_as("svix", &other_secret, "msg_x", now, &b),
            "the svix-signature header does not match",
        ),
        (
            // A minute past the tolerance, as above.
            "signed 6 minutes ago",
            signed_as("svix", &secret, "msg_x", now - 360, &b),
            "refused as replays",
        ),
        (
            "no timestamp",
            no_timestamp,
            "the svix-timestamp header is missing",
        ),
        (
            "id with a space",
            signed_as("svix", &secret, "msg x", now, &b),
            "the svix-id header is malformed",
        ),
    ];
    for (name, headers, says) in cases {
        let res = post(&app, s, &as_refs(&headers), &b).await;
        let problem = assert_problem(res, 401, "unauthorized").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{name}: {detail}");
        assert!(!detail.contains("webhook-"), "{name}: {detail}");
    }
    let call = app.start_call_json(s, victim).await;
    assert_eq!(call["source"], "fallback", "nothing was cached");
}

#[tokio::test]
async fn both_header_sets_whole_are_read_as_webhook_ones_and_a_mix_of_parts_is_refused() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let secret = set_signing(&app, &w, true).await.unwrap();
    let phone = "+12125550111";
    let b = body(&s.agent_id, phone, "high");
    let now = now_secs();
    let standard = signed_as("webhook", &secret, "evt_std", now, &b);
    let svix = signed_as("svix", &secret, "msg_svix", now, &b);
    let wrong_svix = signed_as("svix", &secret, "msg_svix", now, &json!({}));
    let wrong_standard = signed_as("webhook", &secret, "evt_std", now, &json!({}));

    // The svix-* set signs something else: only the webhook-* one counts.
    let res = post(
        &app,
        s,
        &as_refs(&[standard.clone(), wrong_svix].concat()),
        &b,
    )
    .await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    // The webhook-* set is the one read, even when only the svix-* one would pass.
    let res = post(
        &app,
        s,
        &as_refs(&[wrong_standard, svix.clone()].concat()),
        &b,
    )
    .await;
    let problem = assert_problem(res, 401, "unauthorized").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("the webhook-signature header does not match"),
        "{problem}"
    );
    // The webhook-id was the idempotency key: the same event again is a replay.
    let again = post(&app, s, &as_refs(&standard), &b).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");

    // Neither set whole, parts of both: refused, even though svix-id and webhook-id agree and
    // the signature is right for them.
    let other_phone = "+12125550112";
    let b = body(&s.agent_id, other_phone, "high");
    let svix = signed_as("svix", &secret, "msg_mixed", now, &b);
    let mixed = [
        ("webhook-id", "msg_mixed"),
        ("svix-timestamp", svix[1].1.as_str()),
        ("svix-signature", svix[2].1.as_str()),
    ];
    let res = post(&app, s, &mixed, &b).await;
    let problem = assert_problem(res, 401, "unauthorized").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("mix webhook-* and svix-* names")
            && detail.contains("svix-id, svix-timestamp and svix-signature"),
        "{detail}"
    );
    let call = app.start_call_json(s, other_phone).await;
    assert_eq!(call["source"], "fallback", "nothing was cached");
}

/// The virtualenv with the official `svix` and `standardwebhooks` Python libraries, which
/// `.ci/run` installs under the target directory (`target/webhook-libs`).
fn webhook_libs_python() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/api-… → target
    let target = exe.ancestors().nth(3).unwrap();
    let python = target.join("webhook-libs/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: install the svix and standardwebhooks libraries as .ci/run does",
        python.display()
    );
    python
}

/// Runs `script` with the official libraries' Python; its standard output, or a panic with
/// what it printed.
async fn with_webhook_libs(script: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(webhook_libs_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script}\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Signs with the libraries' own code: `svix.webhooks.Webhook(secret).sign(msg_id,
/// timestamp, payload)` (https://github.com/svix/svix-webhooks/blob/main/python/svix/webhooks.py,
/// https://docs.svix.com/receiving/verifying-payloads/how) and `standardwebhooks.Webhook(secret)
/// .sign(msg_id, timestamp, data)` (https://github.com/standard-webhooks/standard-webhooks/blob/main/libraries/python/standardwebhooks/webhooks.py).
/// Each line of standard input is `library secret id timestamp body`; each output line the
/// signature header's value.
const SIGN_WITH_LIBRARIES: &str = r#"
import sys
from datetime import datetime, timezone
import standardwebhooks
import svix.webhooks

libraries = {"svix": svix.webhooks.Webhook, "standardwebhooks": standardwebhooks.Webhook}
for line in sys.argv[1:]:
    library, secret, msg_id, ts, body = line.split(" ", 4)
    at = datetime.fromtimestamp(int(ts), tz=timezone.utc)
    print(libraries[library](secret).sign(msg_id, at, body))
"#;

#[tokio::test]
#[ignore = "needs the svix and standardwebhooks Python libraries, which .ci/run installs"]
async fn requests_signed_by_the_official_svix_and_standard_webhooks_libraries_are_accepted() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let secret = set_signing(&app, &w, true).await.unwrap();
    let other_secret = format!("whsec_{}", STANDARD.encode([7u8; 32]));
    let phone = "+12125550123";
    let b = body(&s.agent_id, phone, "high");
    let raw = b.to_string();
    let now = now_secs();
    let stale = now - 360;
    let requests = [
        ("svix", secret.as_str(), "msg_svix", now),
        ("standardwebhooks", &secret, "msg_standard", now),
        ("svix", &other_secret, "msg_other", now),
        ("standardwebhooks", &other_secret, "msg_other", now),
        ("svix", &secret, "msg_stale", stale),
        ("standardwebhooks", &secret, "msg_stale", stale),
    ]
    .map(|(library, secret, id, ts)| format!("{library} {secret} {id} {ts} {raw}"));
    let args: Vec<&str> = requests.iter().map(String::as_str).collect();
    let signatures = with_webhook_libs(SIGN_WITH_LIBRARIES, &args).await;
    let sig: Vec<&str> = signatures.lines().collect();
    assert_eq!(sig.len(), 6, "{signatures}");
    let (now, stale) = (now.to_string(), stale.to_string());
    // Each library's signature, under its library's header names.
    let svix = |id, ts, sig| {
        [
            ("svix-id", id),
            ("svix-timestamp", ts),
            ("svix-signature", sig),
        ]
    };
    let standard = |id, ts, sig| {
        [
            ("webhook-id", id),
            ("webhook-timestamp", ts),
            ("webhook-signature", sig),
        ]
    };

    for (name, headers) in [
        ("svix", svix("msg_svix", &now, sig[0])),
        ("standardwebhooks", standard("msg_standard", &now, sig[1])),
    ] {
        let res = post(&app, s, &headers, &b).await;
        assert_eq!(res.status(), 202, "{name}: {}", res.text().await.unwrap());
        // Sent again (a retry, or a captured request replayed within the window): the
        // first answer, and nothing changes.
        let again = post(&app, s, &headers, &b).await;
        assert_eq!(again.status(), 202, "{name}");
        assert_eq!(again.headers()["idempotent-replayed"], "true", "{name}");
    }
    let call = app.start_call_json(s, phone).await;
    assert_eq!(call["variables"]["priority"], "high");

    let victim = "+12125550124";
    let tampered = body(&s.agent_id, victim, "high");
    for (name, headers, sent, says) in [
        (
            "svix, body changed",
            svix("msg_svix_2", &now, sig[0]),
            &tampered,
            "the svix-signature header does not match",
        ),
        (
            "standardwebhooks, body changed",
            standard("msg_standard_2", &now, sig[1]),
            &tampered,
            "the webhook-signature header does not match",
        ),
        (
            "svix, another secret",
            svix("msg_other", &now, sig[2]),
            &b,
            "the svix-signature header does not match",
        ),
        (
            "standardwebhooks, another secret",
            standard("msg_other", &now, sig[3]),
            &b,
            "the webhook-signature header does not match",
        ),
        (
            "svix, signed 6 minutes ago",
            svix("msg_stale", &stale, sig[4]),
            &b,
            "svix-timestamp is 36",
        ),
        (
            "standardwebhooks, signed 6 minutes ago",
            standard("msg_stale", &stale, sig[5]),
            &b,
            "webhook-timestamp is 36",
        ),
    ] {
        let res = post(&app, s, &headers, sent).await;
        let problem = assert_problem(res, 401, "unauthorized").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{name}: {detail}");
    }
    let call = app.start_call_json(s, victim).await;
    assert_eq!(call["source"], "fallback", "nothing was cached");
}

/// Verifies with both libraries' `verify` (under each one's header names) that argv's
/// `secret id timestamp body signature` is a valid signed request, and that the same
/// signature over another body is not.
const VERIFY_WITH_LIBRARIES: &str = r#"
import sys
import standardwebhooks
import svix.webhooks

secret, msg_id, ts, body, sig = sys.argv[1:]
checks = [
    (svix.webhooks.Webhook, "svix"),
    (standardwebhooks.Webhook, "webhook"),
]
for library, prefix in checks:
    headers = {f"{prefix}-id": msg_id, f"{prefix}-timestamp": ts, f"{prefix}-signature": sig}
    library(secret).verify(body, headers)
    try:
        library(secret).verify(body + " ", headers)
    except standardwebhooks.WebhookVerificationError:
        pass
    else:
        sys.exit(f"{library.__module__} accepted a changed body")
print("verified")
"#;

#[tokio::test]
#[ignore = "needs openssl and the svix and standardwebhooks Python libraries, which .ci/run installs"]
async fn the_documented_shell_signature_verifies_with_the_official_libraries() {
    // The contract's shell sender (docs/api.md, "Signed requests"), its signing lines as
    // written: everything but the curl that sends.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    let sample = &doc[doc.find("A shell sender:").expect("the shell sender")..];
    let sample = &sample[sample.find("```sh\n").unwrap() + 6..];
    let sample = &sample[..sample.find("```").unwrap()];
    let signing: Vec<&str> = sample
        .lines()
        .filter(|l| l.starts_with("hexkey=") || l.starts_with("sig="))
        .collect();
    assert_eq!(signing.len(), 2, "{sample}");
    let script = format!("{}\nprintf 'v1,%s' \"$sig\"", signing.join("\n"));

    let secret = format!("whsec_{}", STANDARD.encode([42u8; 32]));
    let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    let ts = now_secs().to_string();
    let body = r#"{"agentId":"oJvfgs3Eg8DEMOGnQES7","phoneNumber":"+1 (212) 555-1234","customer_name":"Jane Doe"}"#;
    let env = [
        ("secret", secret.as_str()),
        ("id", id),
        ("ts", ts.as_str()),
        ("body", body),
    ];
    let (ok, sig) = run("sh", &["-c", &script], &env).await;
    assert!(ok && sig.starts_with("v1,"), "{script}\n{sig}");
    assert_eq!(
        sig,
        signature(&secret, id, ts.parse().unwrap(), body.as_bytes())
    );

    let out = with_webhook_libs(VERIFY_WITH_LIBRARIES, &[&secret, id, &ts, body, &sig]).await;
    assert_eq!(out.trim(), "verified");
}
