//! A catalogue of bad requests: each gets its documented status and problem+json, and
//! none of them changes what is cached.

use futures::stream;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app};

/// The caller every bad request is about: nothing may be cached for them afterwards.
const VICTIM: &str = "+12125550100";

struct Case {
    name: &'static str,
    status: u16,
    slug: &'static str,
    /// The pointer of the first problem, when the answer lists problems.
    pointer: Option<&'static str>,
    request: reqwest::RequestBuilder,
}

fn good_body(agent_id: &str) -> Value {
    json!({"agentId": agent_id, "phoneNumber": VICTIM, "priority": "high"})
}

fn cases(
    app: &TestApp,
    s: &crate::helpers::Setup,
    other_key: &str,
    other_agent: &str,
) -> Vec<Case> {
    let post = || app.client.post(&s.url);
    let keyed = || post().header("X-Authorization", &s.key);
    let json_keyed = || keyed().header("Content-Type", "application/json");
    let raw = |body: Vec<u8>| json_keyed().body(body);
    let with = |extra: Value| {
        let mut body = good_body(&s.agent_id);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        json_keyed().body(body.to_string())
    };
    let a = s.agent_id.as_str();
    let big = "x".repeat(70 * 1024);
    let mut many_fields = good_body(a);
    for i in 0..201 {
        many_fields[format!("f{i}")] = json!(i);
    }

    let case = |name, status, slug, pointer, request| Case {
        name,
        status,
        slug,
        pointer,
        request,
    };
    vec![
        case(
            "unknown slug",
            404,
            "not-found",
            None,
            app.client
                .post(format!("{}/webhooks/AAAAAAAAAAAAAAAAAAAAAAAA", app.address))
                .header("X-Authorization", &s.key)
                .json(&good_body(a)),
        ),
        case(
            "no key",
            401,
            "unauthorized",
            None,
            post().json(&good_body(a)),
        ),
        case(
            "wrong key",
            401,
            "unauthorized",
            None,
            post()
                .header(
                    "X-Authorization",
                    "pcwk_wrongwrongwrongwrongwrongwrongwrongwrong1",
                )
                .json(&good_body(a)),
        ),
        case(
            "another action's key",
            401,
            "unauthorized",
            None,
            post()
                .header("X-Authorization", other_key)
                .json(&good_body(a)),
        ),
        case(
            "basic auth instead of a key",
            401,
            "unauthorized",
            None,
            post()
                .header("Authorization", "Basic dXNlcjpwYXNz")
                .json(&good_body(a)),
        ),
        case(
            "no content type",
            415,
            "unsupported-media-type",
            None,
            keyed().body(good_body(a).to_string()),
        ),
        case(
            "text/plain",
            415,
            "unsupported-media-type",
            None,
            keyed()
                .header("Content-Type", "text/plain")
                .body(good_body(a).to_string()),
        ),
        case(
            "form encoded",
            415,
            "unsupported-media-type",
            None,
            keyed()
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("agentId=x"),
        ),
        case(
            "json in latin-1",
            415,
            "unsupported-media-type",
            None,
            keyed()
                .header("Content-Type", "application/json; charset=iso-8859-1")
                .body(good_body(a).to_string()),
        ),
        case(
            "body over 64 KiB",
            413,
            "payload-too-large",
            None,
            with(json!({"notes": big})),
        ),
        case(
            "chunked body over 64 KiB",
            413,
            "payload-too-large",
            None,
            json_keyed().body(reqwest::Body::wrap_stream(stream::iter(
                (0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])),
            ))),
        ),
        case(
            "truncated JSON",
            400,
            "malformed-json",
            None,
            raw(br#"{"agentId": "#.to_vec()),
        ),
        case(
            "trailing garbage",
            400,
            "malformed-json",
            None,
            raw(format!("{} x", good_body(a)).into_bytes()),
        ),
        case("invalid UTF-8 bytes", 400, "malformed-json", None, {
            let mut body =
                format!(r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","name":""#).into_bytes();
            body.extend_from_slice(&[0xC3, 0x28, b'"', b'}']);
            raw(body)
        }),
        case(
            "lone surrogate",
            400,
            "malformed-json",
            None,
            raw(
                format!(r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","name":"\ud800"}}"#)
                    .into_bytes(),
            ),
        ),
        case("empty body", 400, "malformed-json", None, raw(Vec::new())),
        case(
            "number beyond any float",
            400,
            "malformed-json",
            None,
            raw(format!(r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","n":1e400}}"#).into_bytes()),
        ),
        case(
            "NaN",
            400,
            "malformed-json",
            None,
            raw(format!(r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","n":NaN}}"#).into_bytes()),
        ),
        case(
            "Infinity",
            400,
            "malformed-json",
            None,
            raw(format!(r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","n":Infinity}}"#)
                .into_bytes()),
        ),
        case(
            "-Infinity",
            400,
            "malformed-json",
            None,
            raw(format!(r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","n":-Infinity}}"#)
                .into_bytes()),
        ),
        case(
            "lone surrogate in a key",
            400,
            "malformed-json",
            None,
            raw(format!(r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","\udc00x":1}}"#)
                .into_bytes()),
        ),
        case("byte order mark", 400, "malformed-json", None, {
            let mut body = vec![0xEF, 0xBB, 0xBF];
            body.extend_from_slice(good_body(a).to_string().as_bytes());
            raw(body)
        }),
        case(
            "a second JSON value after the object",
            400,
            "malformed-json",
            None,
            raw(format!("{} {{}}", good_body(a)).into_bytes()),
        ),
        case(
            "deeply nested lists at the top",
            422,
            "validation-failed",
            None,
            raw(format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).into_bytes()),
        ),
        case(
            "deeply nested objects",
            422,
            "validation-failed",
            Some("/deep"),
            raw(format!(
                r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","deep":{}1{}}}"#,
                r#"{"a":"#.repeat(5000),
                "}".repeat(5000)
            )
            .into_bytes()),
        ),
        case(
            "huge negative number",
            422,
            "validation-failed",
            Some("/n"),
            raw(format!(
                r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","n":-123456789012345678901234567890}}"#
            )
            .into_bytes()),
        ),
        case(
            "float beyond 2^53",
            422,
            "validation-failed",
            Some("/n"),
            raw(format!(r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","n":1e300}}"#).into_bytes()),
        ),
        case(
            "duplicate phoneNumber",
            422,
            "validation-failed",
            Some("/phoneNumber"),
            raw(format!(
                r#"{{"agentId":"{a}","phoneNumber":"+12125550999","phoneNumber":"{VICTIM}"}}"#
            )
            .into_bytes()),
        ),
        case(
            "duplicate key spelled with an escape",
            422,
            "validation-failed",
            Some("/priority"),
            raw(format!(
                r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","priority":"low","pri\u006frity":"high"}}"#
            )
            .into_bytes()),
        ),
        case(
            "a list, not an object",
            422,
            "validation-failed",
            None,
            raw(b"[1,2,3]".to_vec()),
        ),
        case(
            "missing agentId",
            422,
            "validation-failed",
            Some("/agentId"),
            json_keyed().body(json!({"phoneNumber": VICTIM}).to_string()),
        ),
        case(
            "missing phoneNumber",
            422,
            "validation-failed",
            Some("/phoneNumber"),
            json_keyed().body(json!({"agentId": a}).to_string()),
        ),
        case(
            "another agent's agentId",
            422,
            "validation-failed",
            Some("/agentId"),
            with(json!({"agentId": other_agent})),
        ),
        case(
            "agentId not a string",
            422,
            "validation-failed",
            Some("/agentId"),
            with(json!({"agentId": 12345})),
        ),
        case(
            "unparseable phone",
            422,
            "validation-failed",
            Some("/phoneNumber"),
            with(json!({"phoneNumber": "call me maybe"})),
        ),
        case(
            "too short to be a phone",
            422,
            "validation-failed",
            Some("/phoneNumber"),
            with(json!({"phoneNumber": "+12"})),
        ),
        case(
            "phone as an object",
            422,
            "validation-failed",
            Some("/phoneNumber"),
            with(json!({"phoneNumber": {"number": VICTIM}})),
        ),
        case(
            "nested object",
            422,
            "validation-failed",
            Some("/customer"),
            with(json!({"customer": {"name": "Jane"}})),
        ),
        case(
            "object in a list",
            422,
            "validation-failed",
            Some("/tags"),
            with(json!({"tags": [{"a": 1}]})),
        ),
        case(
            "deep nesting",
            422,
            "validation-failed",
            Some("/deep"),
            raw(format!(
                r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","deep":{}{}}}"#,
                "[".repeat(5000),
                "]".repeat(5000)
            )
            .into_bytes()),
        ),
        case(
            "huge number",
            422,
            "validation-failed",
            Some("/n"),
            raw(format!(
                r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","n":123456789012345678901234567890}}"#
            )
            .into_bytes()),
        ),
        case(
            "declared number given words",
            422,
            "validation-failed",
            Some("/risk_score"),
            with(json!({"risk_score": "very high"})),
        ),
        case(
            "declared boolean given yes",
            422,
            "validation-failed",
            Some("/flagged"),
            with(json!({"flagged": "yes"})),
        ),
        case(
            "field name with a dash",
            422,
            "validation-failed",
            Some("/issue-type"),
            with(json!({"issue-type": "billing"})),
        ),
        case(
            "system variable as a field",
            422,
            "validation-failed",
            Some("/call_id"),
            with(json!({"call_id": "x"})),
        ),
        case(
            "duplicate keys",
            422,
            "validation-failed",
            Some("/priority"),
            raw(format!(
                r#"{{"agentId":"{a}","phoneNumber":"{VICTIM}","priority":"low","priority":"high"}}"#
            )
            .into_bytes()),
        ),
        case(
            "more than 200 fields",
            422,
            "validation-failed",
            None,
            json_keyed().body(many_fields.to_string()),
        ),
        case(
            "idempotency key reused with a different body",
            422,
            "idempotency-key-reused",
            None,
            with(json!({})).header("Idempotency-Key", "evt-once"),
        ),
        case(
            "idempotency key too long",
            400,
            "bad-request",
            None,
            with(json!({})).header("Idempotency-Key", "k".repeat(300)),
        ),
    ]
}

#[tokio::test]
async fn each_bad_request_gets_its_documented_problem_and_changes_nothing() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    app.declare(&setup.agent_id, "risk_score", "number", Some("0"));
    app.declare(&setup.agent_id, "flagged", "boolean", Some("false"));
    let other = app.setup(0);
    // A first use of the idempotency key, about another caller.
    let first = app
        .client
        .post(&setup.url)
        .header("X-Authorization", &setup.key)
        .header("Idempotency-Key", "evt-once")
        .json(&json!({"agentId": setup.agent_id, "phoneNumber": "+12125550111"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);

    let cases = cases(&app, &setup, &other.key, &other.agent_id);
    assert!(cases.len() >= 25);
    let mut recorded = 0;
    for case in cases {
        let res = case
            .request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(res.status().as_u16(), case.status, "{}", case.name);
        let body = assert_problem(res, case.status, case.slug).await;
        if let Some(pointer) = case.pointer {
            let pointers: Vec<_> = body["errors"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no errors in {body}", case.name))
                .iter()
                .map(|e| e["pointer"].as_str().unwrap_or_default().to_owned())
                .collect();
            assert!(
                pointers.iter().any(|p| p == pointer),
                "{}: {body}",
                case.name
            );
        }
        // Unknown URLs are not recorded; requests without a valid key are only counted.
        if case.status != 404 && case.status != 401 {
            recorded += 1;
        }
    }

    // Nothing was cached for the victim: a call from them falls back to defaults.
    let call = app.start_call_json(&setup, VICTIM).await;
    assert_eq!(call["source"], "fallback");
    assert_eq!(call["variables"]["risk_score"], json!(0));
    assert!(call["variables"].get("priority").is_none());

    // Every refusal past the key check is on record with its status; the first request too.
    let deliveries = app.deliveries(&setup.agent_id);
    assert_eq!(deliveries.len(), recorded + 1);
    assert!(
        deliveries[..recorded]
            .iter()
            .all(|d| d["outcome"] == "refused")
    );
    assert!(
        deliveries[..recorded]
            .iter()
            .all(|d| d["status"].as_i64().unwrap() >= 400)
    );
    let all = serde_json::to_string(&deliveries).unwrap();
    assert!(!all.contains(&setup.key[5..]) && !all.contains(&other.key[5..]));
    // The other agent's webhook saw nothing.
    assert!(app.deliveries(&other.agent_id).is_empty());
}

#[tokio::test]
async fn a_disabled_webhook_answers_409_and_stores_nothing() {
    let app = spawn_app().await;
    let agent_id = app.create_agent("US");
    let created = app.cli_json(&[
        "action",
        "create-webhook",
        "--agent",
        &agent_id,
        "--wait-ms",
        "0",
    ]);
    let id = created["actionKey"].as_str().unwrap().to_owned();
    app.cli(&[
        "action",
        "update-webhook",
        "--agent",
        &agent_id,
        "--action",
        &id,
        "--enabled",
        "false",
        "--publish",
    ]);
    let res = app
        .client
        .post(created["url"].as_str().unwrap())
        .header("X-Authorization", created["apiKey"].as_str().unwrap())
        .json(&good_body(&agent_id))
        .send()
        .await
        .unwrap();
    assert_problem(res, 409, "action-disabled").await;
    let deliveries = app.deliveries(&agent_id);
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["status"], 409);
}

#[tokio::test]
async fn a_disabled_webhook_with_a_wrong_key_says_401_not_409() {
    let app = spawn_app().await;
    let agent_id = app.create_agent("US");
    let created = app.cli_json(&["action", "create-webhook", "--agent", &agent_id]);
    let id = created["actionKey"].as_str().unwrap().to_owned();
    app.cli(&[
        "action",
        "update-webhook",
        "--agent",
        &agent_id,
        "--action",
        &id,
        "--enabled",
        "false",
        "--publish",
    ]);
    let res = app
        .client
        .post(created["url"].as_str().unwrap())
        .header("X-Authorization", "pcwk_guess")
        .json(&good_body(&agent_id))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "unauthorized").await;
}

#[tokio::test]
async fn disabling_a_webhook_from_the_cli_takes_effect_on_a_running_server() {
    let app = spawn_app().await;
    let agent_id = app.create_agent("US");
    let created = app.cli_json(&[
        "action",
        "create-webhook",
        "--agent",
        &agent_id,
        "--wait-ms",
        "0",
    ]);
    let send = || {
        app.client
            .post(created["url"].as_str().unwrap())
            .header("X-Authorization", created["apiKey"].as_str().unwrap())
            .json(&good_body(&agent_id))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 202);
    let id = created["actionKey"].as_str().unwrap().to_owned();
    app.cli(&[
        "action",
        "update-webhook",
        "--agent",
        &agent_id,
        "--action",
        &id,
        "--enabled",
        "false",
        "--publish",
    ]);
    // The server caches configuration and notices other processes' changes within moments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = send().await.unwrap().status();
        if status == 409 {
            break;
        }
        assert_eq!(status, 202);
        assert!(
            std::time::Instant::now() < deadline,
            "still enabled after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
