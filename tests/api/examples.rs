//! The four examples of `precall demo`, end to end through the public API: each with its
//! webhook payload (the routed path, no question for what is known) and without it (the
//! call falls back to the schema's defaults and takes the default path). The traces say why.

use serde_json::{Value, json};

use crate::helpers::{Setup, TestApp, spawn_app};

const WAIT_MS: &str = "300";

/// The demo agents, one per example, created with the binary's own `demo` command from the
/// documents in `examples/`: each example's agent and the payload of its routed path.
async fn demo(app: &TestApp) -> Vec<(Setup, Value)> {
    demo_agents(app, WAIT_MS).await
}

/// The demo agents, their webhooks waiting `wait_ms`.
pub async fn demo_agents(app: &TestApp, wait_ms: &str) -> Vec<(Setup, Value)> {
    let out = app.cli_json(&["demo", "--wait-ms", wait_ms]);
    out["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap().to_owned();
            (
                Setup {
                    agent_id: text("agentId"),
                    url: text("url"),
                    key: text("apiKey"),
                    token: text("runtimeToken"),
                },
                e["payload"].clone(),
            )
        })
        .collect()
}

/// The lead qualification example's agent (budget is a number; a call without data is
/// asked why it calls), its webhook waiting `wait_ms`.
pub async fn demo_waiting(app: &TestApp, wait_ms: &str) -> (Setup, Vec<Value>) {
    let agents = demo_agents(app, wait_ms).await;
    let (setup, payload) = agents[2].clone();
    (setup, vec![payload])
}

/// Sends `payload`, then starts its caller's call.
async fn call_with(app: &TestApp, setup: &Setup, payload: &Value) -> Value {
    let res = app.ingest(setup, payload).await;
    assert_eq!(res.status(), 202);
    let call = app
        .start_call_json(setup, payload["phoneNumber"].as_str().unwrap())
        .await;
    assert_eq!(call["source"], "webhook", "{call:#}");
    call
}

fn steps(call: &Value) -> &[Value] {
    call["steps"].as_array().unwrap()
}

fn step<'a>(call: &'a Value, kind: &str) -> &'a Value {
    steps(call)
        .iter()
        .find(|s| s["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} step in {call:#}"))
}

/// No question was asked: every Collect on the way was skipped.
fn asked_nothing(call: &Value) {
    assert!(call["question"].is_null(), "{call:#}");
    for s in steps(call).iter().filter(|s| s["kind"] == "collect") {
        assert_eq!(s["skipped"], true, "a question was asked: {s}");
    }
}

/// Without webhook data: fallback after the wait, defaults, the generic greeting, the Else
/// of the routing Filter, and one question; its answer goes to the front desk.
async fn takes_the_default_path(app: &TestApp, setup: &Setup, from: &str) {
    let call = app.start_call_json(setup, from).await;
    assert_eq!(call["source"], "fallback");
    assert!(call["waitedMs"].as_i64().unwrap() >= 290, "{call:#}");
    assert_eq!(call["greeting"], "Hello there, thanks for calling Acme.");
    for s in steps(&call)
        .iter()
        .filter(|s| s["kind"] == "filter" || s["kind"] == "precall_filter")
    {
        assert!(s["case"] == "Else" || s["case"] == "Continue", "{call:#}");
    }
    assert_eq!(call["status"], "active");
    assert_eq!(call["question"]["variable"], "reason");
    assert_eq!(call["question"]["prompt"], "How can I help you today?");

    let id = call["callId"].as_str().unwrap();
    let res = app
        .client
        .post(format!("{}/api/v1/calls/{id}/input", app.address))
        .bearer_auth(&setup.token)
        .json(&json!({ "answers": { "reason": "a billing question" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let next: Value = res.json().await.unwrap();
    assert_eq!(next["status"], "ended");
    assert_eq!(next["outcome"], "transferred");
    assert_eq!(next["transfer"]["department"], "Front desk");
    assert_eq!(
        next["transfer"]["message"],
        "Thanks. Connecting you to someone who can help with a billing question."
    );
}

#[tokio::test]
async fn call_transfer_with_context_routes_a_priority_caller_at_once() {
    let app = spawn_app().await;
    let (setup, payload) = demo(&app).await.swap_remove(0);
    let call = call_with(&app, &setup, &payload).await;
    assert_eq!(call["greeting"], "Hello Maria, thanks for calling Acme.");
    let route = step(&call, "filter");
    assert_eq!(route["case"], "Priority caller");
    assert_eq!(route["why"], "priority is \"high\", equals high");
    assert_eq!(call["status"], "ended");
    assert_eq!(call["outcome"], "transferred");
    assert_eq!(call["transfer"]["department"], "Priority support");
    asked_nothing(&call);
    takes_the_default_path(&app, &setup, "+12125550190").await;
}

#[tokio::test]
async fn crm_personalisation_greets_by_name_and_routes_enterprise_to_the_account_manager() {
    let app = spawn_app().await;
    let (setup, payload) = demo(&app).await.swap_remove(1);
    let call = call_with(&app, &setup, &payload).await;
    assert_eq!(call["greeting"], "Hello Ada, thanks for calling Acme.");
    assert_eq!(step(&call, "filter")["case"], "Enterprise plan");
    assert_eq!(call["transfer"]["department"], "Account management");
    assert!(
        call["transfer"]["message"]
            .as_str()
            .unwrap()
            .ends_with("connecting you to Grace."),
        "{call:#}"
    );
    asked_nothing(&call);
    takes_the_default_path(&app, &setup, "+12125550191").await;
}

#[tokio::test]
async fn lead_qualification_skips_known_answers_and_tailors_the_pitch() {
    let app = spawn_app().await;
    let (setup, payload) = demo(&app).await.swap_remove(2);
    let call = call_with(&app, &setup, &payload).await;
    assert_eq!(call["greeting"], "Hello there, thanks for calling Acme.");
    assert_eq!(step(&call, "filter")["case"], "Known lead");
    assert_eq!(
        step(&call, "transfer_flow")["why"],
        "continues in \"Sales qualification\""
    );
    let skipped: Vec<&Value> = steps(&call)
        .iter()
        .filter(|s| s["kind"] == "collect")
        .map(|s| &s["variable"])
        .collect();
    assert_eq!(skipped, [&json!("budget"), &json!("interest")]);
    asked_nothing(&call);
    let qualify = steps(&call)
        .iter()
        .rfind(|s| s["kind"] == "filter")
        .unwrap();
    assert_eq!(qualify["case"], "Large deal");
    assert_eq!(qualify["why"], "budget is \"25000\", greater than 10000");
    assert_eq!(
        step(&call, "talk")["said"],
        "For voice analytics at that scale, our enterprise team will put together a tailored offer."
    );
    assert_eq!(call["transfer"]["department"], "Enterprise sales");
    takes_the_default_path(&app, &setup, "+12125550192").await;
}

#[tokio::test]
async fn fraud_detection_sends_risky_callers_to_verification_before_the_greeting() {
    let app = spawn_app().await;
    let (setup, payload) = demo(&app).await.swap_remove(3);
    let call = call_with(&app, &setup, &payload).await;
    let risk = &steps(&call)[0];
    assert_eq!(risk["kind"], "precall_filter");
    assert_eq!(risk["case"], "Risky caller");
    assert_eq!(
        risk["why"],
        "risk_score is \"92\", greater than 80 or flagged is \"true\", equals true"
    );
    assert!(
        call["greeting"].is_null(),
        "no greeting before verification"
    );
    assert_eq!(steps(&call)[1]["flow"], "Verification");
    assert_eq!(call["question"]["variable"], "verification_code");

    let id = call["callId"].as_str().unwrap();
    let answer = |body: Value| {
        app.client
            .post(format!("{}/api/v1/calls/{id}/input", app.address))
            .bearer_auth(&setup.token)
            .json(&body)
            .send()
    };
    // The waiting question must be answered.
    let res = answer(json!({ "answers": { "reason": "x" } }))
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = answer(json!({ "answers": { "verification_code": "123456" } }))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let next: Value = res.json().await.unwrap();
    assert_eq!(next["steps"][0]["kind"], "answer");
    assert_eq!(next["transfer"]["department"], "Fraud prevention");
    // An ended call takes no more answers, and reading it back shows the whole trace.
    let res = answer(json!({ "answers": { "verification_code": "1" } }))
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let read = app
        .get_json(&format!("{}/api/v1/calls/{id}", app.address), &setup.token)
        .await;
    assert_eq!(read["outcome"], "transferred");
    assert_eq!(read["variables"]["verification_code"], "123456");
    let kinds: Vec<&str> = steps(&read)
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "precall_filter",
            "start",
            "collect",
            "answer",
            "transfer_call"
        ]
    );
    takes_the_default_path(&app, &setup, "+12125550193").await;
}

#[tokio::test]
async fn answers_are_checked_against_the_schema() {
    let app = spawn_app().await;
    let (setup, mut lead) = demo(&app).await.swap_remove(2);
    lead.as_object_mut().unwrap().remove("budget");
    let call = call_with(&app, &setup, &lead).await;
    assert_eq!(call["question"]["variable"], "budget");
    let id = call["callId"].as_str().unwrap();
    let res = app
        .client
        .post(format!("{}/api/v1/calls/{id}/input", app.address))
        .bearer_auth(&setup.token)
        .json(&json!({ "answers": { "budget": "lots" } }))
        .send()
        .await
        .unwrap();
    let problem = crate::helpers::assert_problem(res, 422, "validation-failed").await;
    assert!(problem.to_string().contains("budget"), "{problem}");
    let res = app
        .client
        .post(format!("{}/api/v1/calls/{id}/input", app.address))
        .bearer_auth(&setup.token)
        .json(&json!({ "answers": { "budget": "5000" } }))
        .send()
        .await
        .unwrap();
    let next: Value = res.json().await.unwrap();
    assert_eq!(next["variables"]["budget"], 5000);
    assert_eq!(
        next["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "filter")
            .unwrap()["case"],
        "Else"
    );
    assert_eq!(next["transfer"]["department"], "Sales");
}
