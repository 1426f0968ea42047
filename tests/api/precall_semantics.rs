//! What a call does with its pre-call actions and its variables: unfinished actions never
//! run, no End Call can be bypassed by a Filter above it, every wait is counted from the
//! call's start, and one rule decides what a value is on every path that fills a variable.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::{Console, location};
use crate::examples::demo_waiting;
use crate::helpers::{Setup, TestApp, assert_problem, spawn_app};

/// An agent made through the console, with a webhook and a runtime token from the CLI.
async fn agent_with_console(app: &TestApp, wait_ms: u64) -> (Console, Setup) {
    let console = Console::set_up(app).await;
    let agent_id = console.create_agent("Support line").await;
    let (url, key) = app.create_webhook(&agent_id, wait_ms, 600);
    let token = app.create_token(&agent_id);
    (
        console,
        Setup {
            agent_id,
            url,
            key,
            token,
        },
    )
}

/// The First Flow editor's path (the agent page links to it).
async fn first_flow_path(console: &Console, agent: &str) -> String {
    let html = console.page(&format!("/admin/agents/{agent}")).await;
    let marker = format!("/admin/agents/{agent}/flows/");
    let at = html.find(&marker).unwrap();
    let id: String = html[at + marker.len()..]
        .chars()
        .take_while(|c: &char| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("{marker}{id}")
}

/// Clicks ➕ → `kind` above the First Flow; returns the new action's page.
async fn add_rule(console: &Console, agent: &str, kind: &str) -> String {
    let flow = first_flow_path(console, agent).await;
    let res = console
        .submit(
            &flow,
            &format!("/admin/agents/{agent}/rules"),
            &[("kind", kind)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    location(&res)
}

async fn save_rule(console: &Console, rule: &str, form: &[(&str, &str)]) -> String {
    let res = console.submit(rule, rule, form).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    console.page(&location(&res)).await
}

/// Adds a flow named `name` whose Start says `message`; returns its id.
async fn add_flow(console: &Console, agent: &str, name: &str) -> String {
    let res = console
        .submit(
            &format!("/admin/agents/{agent}"),
            &format!("/admin/agents/{agent}/flows"),
            &[("name", name)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let to = location(&res);
    let marker = format!("/admin/agents/{agent}/flows/");
    to[to.find(&marker).unwrap() + marker.len()..]
        .chars()
        .take_while(|c: &char| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

fn steps_of<'a>(call: &'a Value, kind: &str) -> Vec<&'a Value> {
    call["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == kind)
        .collect()
}

/// The Publish page's list of what to finish (empty when there is nothing).
async fn draft_problems(console: &Console, agent: &str) -> String {
    let page = console.page(&format!("/admin/agents/{agent}/draft")).await;
    match page.find(r#"id="problems-title""#) {
        Some(at) => page[at..].to_owned(),
        None => String::new(),
    }
}

#[tokio::test]
async fn an_end_call_just_added_with_the_plus_button_refuses_no_call() {
    let app = spawn_app().await;
    let (console, setup) = agent_with_console(&app, 0).await;
    add_rule(&console, &setup.agent_id, "end_call").await;

    // The click changed the draft only: calls run the published version as before.
    let call = app.start_call_json(&setup, "+12125550101").await;
    assert_eq!(call["outcome"], "completed", "{call:#}");
    assert!(call["greeting"].is_string());
    assert!(steps_of(&call, "precall_end_call").is_empty(), "{call:#}");
    // The editor lists it under "To finish" and marks it; publishing is refused until then.
    let page = console
        .page(&first_flow_path(&console, &setup.agent_id).await)
        .await;
    assert!(page.contains("To finish before calls can use this flow"));
    assert!(
        page.contains("Pre-call &#34;End Call&#34;: add at least one condition")
            || page.contains("Pre-call \"End Call\": add at least one condition"),
        "{page}"
    );
    assert!(page.contains(">to finish</span>"));
    assert!(
        draft_problems(&console, &setup.agent_id)
            .await
            .contains("add at least one condition")
    );
}

#[tokio::test]
async fn a_filter_just_added_with_the_plus_button_routes_no_call() {
    let app = spawn_app().await;
    let (console, setup) = agent_with_console(&app, 0).await;
    add_rule(&console, &setup.agent_id, "filter").await;

    let call = app.start_call_json(&setup, "+12125550102").await;
    assert_eq!(call["outcome"], "completed", "{call:#}");
    assert!(steps_of(&call, "precall_filter").is_empty(), "{call:#}");
    assert!(steps_of(&call, "error").is_empty(), "{call:#}");
    let problems = draft_problems(&console, &setup.agent_id).await;
    assert!(
        problems.contains("Case 1: add at least one condition"),
        "{problems}"
    );
    assert!(
        problems.contains("Case 1: choose the flow it leads to"),
        "{problems}"
    );
}

#[tokio::test]
async fn a_routing_filter_above_an_end_call_does_not_let_a_blocked_caller_through() {
    let app = spawn_app().await;
    let (console, setup) = agent_with_console(&app, 0).await;
    let agent = setup.agent_id.clone();
    app.declare(&agent, "risk", "number", Some("0"));
    app.declare(&agent, "blocked", "boolean", Some("false"));
    let verification = add_flow(&console, &agent, "Verification").await;

    let filter = add_rule(&console, &agent, "filter").await;
    let page = save_rule(
        &console,
        &filter,
        &[
            ("name", "Risky callers"),
            ("cases", "1"),
            ("case0_name", "Risky"),
            ("case0_join", "and"),
            ("case0_conditions", "risk greater than 80"),
            ("case0_flow", &verification),
        ],
    )
    .await;
    assert!(!page.contains("flash bad"), "{page}");
    let end = add_rule(&console, &agent, "end_call").await;
    let page = save_rule(
        &console,
        &end,
        &[
            ("name", "Blocked callers"),
            ("join", "and"),
            ("conditions", "blocked equals true"),
            ("message", "Sorry."),
            ("outcome", "blocked"),
        ],
    )
    .await;
    assert!(!page.contains("flash bad"), "{page}");
    console.publish(&agent).await;

    let res = app
        .ingest(
            &setup,
            &json!({"agentId": agent, "phoneNumber": "+12125550103", "risk": 95, "blocked": true}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let call = app.start_call_json(&setup, "+12125550103").await;
    assert_eq!(call["outcome"], "blocked", "{call:#}");
    let steps = call["steps"].as_array().unwrap();
    assert_eq!(steps[0]["kind"], "precall_filter");
    assert_eq!(steps[0]["case"], "Risky");
    assert_eq!(steps[1]["kind"], "precall_end_call");
    assert_eq!(steps[1]["said"], "Sorry.");
    assert_eq!(steps.len(), 2, "nothing ran after the End Call: {call:#}");

    // Risky but not blocked: the Filter's route is taken once every action has run.
    app.ingest(
        &setup,
        &json!({"agentId": agent, "phoneNumber": "+12125550104", "risk": 95}),
    )
    .await;
    let call = app.start_call_json(&setup, "+12125550104").await;
    let steps = call["steps"].as_array().unwrap();
    assert_eq!(steps[1]["kind"], "precall_end_call");
    assert_eq!(steps[1]["case"], "Continue");
    assert_eq!(steps[2]["kind"], "start");
    assert_eq!(steps[2]["flow"], "Verification");
}

#[tokio::test]
async fn every_webhook_wait_is_counted_from_the_calls_start() {
    let app = spawn_app().await;
    let setup = app.setup(1000);
    app.create_webhook(&setup.agent_id, 1000, 600);
    let started = std::time::Instant::now();
    let call = app.start_call_json(&setup, "+12125550105").await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1900),
        "the call waits once: {took:?}"
    );
    let precall = call["precall"].as_array().unwrap();
    assert_eq!(precall.len(), 2);
    for step in precall {
        assert_eq!(step["outcome"], "fallback", "{call:#}");
        let waited = step["waitedMs"].as_u64().unwrap();
        assert!(
            (950..1900).contains(&waited),
            "each action's wait is its own fallback from the start: {call:#}"
        );
    }
}

#[tokio::test]
async fn data_for_an_action_that_fell_back_is_used_while_the_call_still_waits_for_another() {
    let app = spawn_app().await;
    // Action 1 falls back after 300 ms; action 2 waits 1 500 ms.
    let first = app.setup(300);
    let (second_url, second_key) = app.create_webhook(&first.agent_id, 1500, 600);
    let second = Setup {
        url: second_url,
        key: second_key,
        ..first.clone()
    };
    let caller = "+12125550106";
    let call = {
        let app = &app;
        let first = first.clone();
        async move { app.start_call_json(&first, caller).await }
    };
    let late = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let res = app
            .ingest(
                &first,
                &json!({"agentId": first.agent_id, "phoneNumber": caller, "customer_name": "Ada"}),
            )
            .await;
        assert_eq!(res.status(), 202);
    };
    let (call, ()) = tokio::join!(call, late);
    let _ = second;
    let precall = call["precall"].as_array().unwrap();
    assert_eq!(precall[0]["outcome"], "arrived", "{call:#}");
    let waited = precall[0]["waitedMs"].as_u64().unwrap();
    assert!((650..1500).contains(&waited), "{call:#}");
    assert_eq!(precall[1]["outcome"], "fallback");
    assert_eq!(call["variables"]["customer_name"], "Ada", "{call:#}");
    assert_eq!(call["source"], "webhook");
    assert!(call["lateContext"].is_null(), "{call:#}");
}

#[tokio::test]
async fn answers_with_numbers_the_contract_refuses_get_422_like_webhooks() {
    let app = spawn_app().await;
    // The demo agent declares budget a number and asks for a reason.
    let (setup, _) = demo_waiting(&app, "0").await;
    let call = app.start_call_json(&setup, "+12125550107").await;
    assert_eq!(call["question"]["variable"], "reason", "{call:#}");
    let id = call["callId"].as_str().unwrap();
    for bad in [
        "1e300",
        "9007199254740993",
        "-1.7e308",
        "12345678901234567890",
    ] {
        let body = format!(r#"{{"answers": {{"reason": "billing", "budget": {bad}}}}}"#);
        let res = app
            .client
            .post(format!("{}/api/v1/calls/{id}/input", app.address))
            .bearer_auth(&setup.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(res, 422, "validation-failed").await;
        assert_eq!(problem["errors"][0]["pointer"], "/answers/budget", "{bad}");
        // The same number by webhook is refused too.
        let res = app
            .client
            .post(&setup.url)
            .header("X-Authorization", &setup.key)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"agentId": "{}", "phoneNumber": "+12125550107", "budget": {bad}}}"#,
                setup.agent_id
            ))
            .send()
            .await
            .unwrap();
        assert_problem(res, 422, "validation-failed").await;
    }
    // Nothing was stored: the question still waits.
    let read: Value = app
        .client
        .get(format!("{}/api/v1/calls/{id}", app.address))
        .bearer_auth(&setup.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "active");
    assert!(
        read["variables"]["budget"].is_null(),
        "nothing was kept: {read:#}"
    );
}

#[tokio::test]
async fn blank_text_is_no_value_in_greetings_questions_and_answers() {
    let app = spawn_app().await;
    let (setup, _) = demo_waiting(&app, "0").await;
    let caller = "+12125550108";
    let res = app
        .ingest(
            &setup,
            &json!({"agentId": setup.agent_id, "phoneNumber": caller,
                    "customer_name": "   ", "reason": " \t "}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let call = app.start_call_json(&setup, caller).await;
    assert_eq!(
        call["greeting"], "Hello there, thanks for calling Acme.",
        "the name's fallback is said: {call:#}"
    );
    assert_eq!(call["status"], "active", "the question is asked: {call:#}");
    assert_eq!(call["question"]["variable"], "reason");
    let id = call["callId"].as_str().unwrap();
    let res = app
        .client
        .post(format!("{}/api/v1/calls/{id}/input", app.address))
        .bearer_auth(&setup.token)
        .json(&json!({"answers": {"reason": "   "}}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(res, 422, "validation-failed").await;
    assert_eq!(problem["errors"][0]["pointer"], "/answers/reason");
}

#[tokio::test]
async fn transfer_flows_that_go_round_between_flows_are_said_on_save_and_refuse_the_publish() {
    let app = spawn_app().await;
    let (console, setup) = agent_with_console(&app, 0).await;
    let agent = setup.agent_id.clone();
    let a = add_flow(&console, &agent, "Billing").await;
    let b = add_flow(&console, &agent, "Support").await;
    let add_transfer = |from: String, to: String| {
        let console = &console;
        let agent = agent.clone();
        async move {
            let path = format!("/admin/agents/{agent}/flows/{from}");
            let res = console
                .submit(
                    &path,
                    &format!("{path}/blocks"),
                    &[("kind", "transfer_flow")],
                )
                .await;
            let to_block = location(&res);
            let block: String = to_block[to_block.find("block=").unwrap() + 6..]
                .chars()
                .take_while(|c: &char| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            let res = console
                .submit(&path, &format!("{path}/blocks/{block}"), &[("flow", &to)])
                .await;
            console.page(&location(&res)).await
        }
    };
    let page = add_transfer(a.clone(), b.clone()).await;
    assert!(
        !page.contains("goes round in a cycle"),
        "Billing → Support is fine"
    );
    let page = add_transfer(b.clone(), a.clone()).await;
    assert!(
        page.contains("Transfer Flow goes round in a cycle"),
        "Support → Billing closes a cycle: {page}"
    );
    let problems = draft_problems(&console, &agent).await;
    assert!(
        problems.contains("Transfer Flow goes round in a cycle")
            && (problems.contains("&#34;Billing&#34; → &#34;Support&#34; → &#34;Billing&#34;")
                || problems.contains("&#34;Support&#34; → &#34;Billing&#34; → &#34;Support&#34;")),
        "{problems}"
    );
}
