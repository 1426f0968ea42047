//! Flows are checked when saved: cycles, connections that lead out of the flow, unknown
//! variables in templates and Filters comparing a number with text are refused with the
//! reason, and nothing changes. Pre-call Filter and End Call actions are checked the same
//! way, and run on the next call.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::{Console, location};
use crate::helpers::{TestApp, spawn_app};

struct Flow {
    agent: String,
    flow: String,
}

impl Flow {
    fn path(&self) -> String {
        format!("/admin/agents/{}/flows/{}", self.agent, self.flow)
    }
}

/// An agent made in the console, and its First Flow.
async fn first_flow(app: &TestApp) -> (Console, Flow) {
    let console = Console::set_up(app).await;
    let agent = console.create_agent("Support line").await;
    let html = console.page(&format!("/admin/agents/{agent}")).await;
    let marker = format!("/admin/agents/{agent}/flows/");
    let at = html.find(&marker).unwrap() + marker.len();
    let flow: String = html[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (console, Flow { agent, flow })
}

async fn add_block(console: &Console, f: &Flow, kind: &str) -> String {
    let res = console
        .submit(
            &f.path(),
            &format!("{}/blocks", f.path()),
            &[("kind", kind)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let to = location(&res);
    let at = to.find("block=").unwrap() + "block=".len();
    to[at..].chars().take_while(char::is_ascii_digit).collect()
}

/// Saves a block's form; returns the page it leads back to (with its notice or error).
async fn save(console: &Console, f: &Flow, block: &str, form: &[(&str, &str)]) -> String {
    let res = console
        .submit(&f.path(), &format!("{}/blocks/{block}", f.path()), form)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    console.page(&location(&res)).await
}

fn error_of(html: &str) -> Option<String> {
    let at = html.find(r#"class="flash bad" role="alert">"#)?;
    let rest = &html[at + r#"class="flash bad" role="alert">"#.len()..];
    Some(rest[..rest.find("</div>").unwrap()].to_owned())
}

#[tokio::test]
async fn a_cycle_is_refused_on_save_with_the_path_named() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    let a = add_block(&console, &f, "talk").await;
    let b = add_block(&console, &f, "talk").await;
    let page = save(&console, &f, &a, &[("message", "One"), ("next", &b)]).await;
    assert_eq!(error_of(&page), None, "a chain is fine");
    let page = save(&console, &f, &b, &[("message", "Two"), ("next", &a)]).await;
    let error = error_of(&page).expect("refused");
    assert!(
        error.contains("a cycle: #2 Talk → #3 Talk → #2 Talk"),
        "{error}"
    );
    // Nothing changed: Two was not saved.
    assert!(!page.contains("Two"), "the refused message was stored");
}

#[tokio::test]
async fn a_connection_to_another_flows_block_is_refused() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    let res = console
        .submit(
            &format!("/admin/agents/{}", f.agent),
            &format!("/admin/agents/{}/flows", f.agent),
            &[("name", "Other")],
        )
        .await;
    let other_path = location(&res);
    let other = Flow {
        agent: f.agent.clone(),
        flow: other_path.rsplit('/').next().unwrap().to_owned(),
    };
    let elsewhere = add_block(&console, &other, "talk").await;
    let talk = add_block(&console, &f, "talk").await;
    let page = save(
        &console,
        &f,
        &talk,
        &[("message", "Hi"), ("next", &elsewhere)],
    )
    .await;
    let error = error_of(&page).expect("refused");
    assert!(
        error.contains("leads to a block that is not in this flow"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unknown_variable_in_a_template_is_refused_and_a_known_one_saved() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    app.declare(&f.agent, "customer_name", "string", None);
    let talk = add_block(&console, &f, "talk").await;
    let page = save(&console, &f, &talk, &[("message", "Hi {{customer_nmae}}")]).await;
    let error = error_of(&page).expect("refused");
    assert!(error.contains("{{customer_nmae}}"), "{error}");
    let page = save(
        &console,
        &f,
        &talk,
        &[("message", "Hi {{customer_name|there}}")],
    )
    .await;
    assert_eq!(error_of(&page), None);
    assert!(page.contains("Hi {{customer_name|there}}"));
    // A variable a Collect fills is known too.
    let collect = add_block(&console, &f, "collect").await;
    save(
        &console,
        &f,
        &collect,
        &[("variable", "issue"), ("prompt", "What is it about?")],
    )
    .await;
    let page = save(&console, &f, &talk, &[("message", "About {{issue}}")]).await;
    assert_eq!(error_of(&page), None);
}

#[tokio::test]
async fn a_filter_comparing_a_number_with_text_is_refused() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    app.declare(&f.agent, "risk_score", "number", Some("0"));
    let filter = add_block(&console, &f, "filter").await;
    let end = add_block(&console, &f, "end_call").await;
    for (conditions, expected) in [
        ("risk_score equals \"80\"", "risk_score is number"),
        ("risk_score greater than high", "needs a number"),
        ("risk_scor exists", "risk_scor is not a variable"),
    ] {
        let page = save(
            &console,
            &f,
            &filter,
            &[
                ("cases", "1"),
                ("case0_name", "Risky"),
                ("case0_join", "and"),
                ("case0_conditions", conditions),
                ("case0_next", &end),
            ],
        )
        .await;
        let error = error_of(&page).unwrap_or_else(|| panic!("{conditions} was saved"));
        assert!(error.contains(expected), "{conditions}: {error}");
    }
    let page = save(
        &console,
        &f,
        &filter,
        &[
            ("cases", "1"),
            ("case0_name", "Risky"),
            ("case0_join", "and"),
            ("case0_conditions", "risk_score greater than 80"),
            ("case0_next", &end),
        ],
    )
    .await;
    assert_eq!(error_of(&page), None);
    assert!(page.contains("Risky →"));
}

#[tokio::test]
async fn a_precall_end_call_refuses_matching_calls_before_the_greeting() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    app.declare(&f.agent, "blocked", "boolean", Some("false"));
    let (url, key) = app.create_webhook(&f.agent, 200, 600);
    let token = app.create_token(&f.agent);
    let res = console
        .submit(
            &f.path(),
            &format!("/admin/agents/{}/rules", f.agent),
            &[("kind", "end_call")],
        )
        .await;
    let rule = location(&res);
    assert!(rule.contains("/rules/"), "{rule}");
    let form = |conditions: &'static str| {
        vec![
            ("name", "Blocked callers"),
            ("join", "and"),
            ("conditions", conditions),
            ("message", "Sorry, we cannot take your call."),
            ("outcome", "blocked"),
        ]
    };
    let res = console
        .submit(&rule, &rule, &form("blocked equals 3"))
        .await;
    let error = error_of(&console.page(&location(&res)).await).expect("refused");
    assert!(error.contains("blocked is boolean"), "{error}");
    let res = console
        .submit(&rule, &rule, &form("blocked equals true"))
        .await;
    assert_eq!(error_of(&console.page(&location(&res)).await), None);
    // The flow editor lists it above the First Flow.
    assert!(console.page(&f.path()).await.contains("Blocked callers"));

    let res = app
        .client
        .post(&url)
        .header("X-Authorization", &key)
        .json(&json!({ "agentId": f.agent, "phoneNumber": "+12125550142", "blocked": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let call = |from: &'static str| {
        app.client
            .post(format!("{}/api/v1/calls", app.address))
            .bearer_auth(&token)
            .json(&json!({ "agentId": f.agent, "from": from }))
            .send()
    };
    let refused: Value = call("+12125550142").await.unwrap().json().await.unwrap();
    assert_eq!(refused["status"], "ended");
    assert_eq!(refused["outcome"], "blocked");
    assert!(refused["greeting"].is_null());
    assert_eq!(refused["steps"][0]["kind"], "precall_end_call");
    assert_eq!(
        refused["steps"][0]["said"],
        "Sorry, we cannot take your call."
    );
    assert_eq!(
        refused["steps"][0]["why"],
        "blocked is \"true\", equals true"
    );
    // A caller the sender did not flag falls back to the default (false) and is greeted.
    let greeted: Value = call("+12125550143").await.unwrap().json().await.unwrap();
    assert_eq!(greeted["source"], "fallback");
    assert!(greeted["greeting"].is_string(), "{greeted:#}");
    assert_eq!(greeted["outcome"], "completed");
}

#[tokio::test]
async fn the_editor_lists_what_is_left_to_finish() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    assert!(!console.page(&f.path()).await.contains("To finish"));
    add_block(&console, &f, "transfer_flow").await;
    add_block(&console, &f, "collect").await;
    let page = console.page(&f.path()).await;
    assert!(page.contains("To finish before calls can use this flow"));
    assert!(page.contains("#2 Transfer Flow: choose the flow this Transfer Flow continues in"));
    assert!(page.contains("#3 Collect: choose the variable this Collect fills"));
}

#[tokio::test]
async fn deleting_a_block_disconnects_the_outputs_that_led_to_it() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    let talk = add_block(&console, &f, "talk").await;
    let end = add_block(&console, &f, "end_call").await;
    let page = save(&console, &f, &talk, &[("message", "One"), ("next", &end)]).await;
    assert_eq!(error_of(&page), None);
    let res = console
        .submit(&f.path(), &format!("{}/blocks/{end}/delete", f.path()), &[])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = console.page(&f.path()).await;
    assert!(!page.contains("To finish"), "no dangling output is left");
    assert!(page.contains("Next →</span> not connected"));
}
