//! Flows and pre-call actions are saved to the draft whatever they lack, and checked whole
//! when published: cycles, connections that lead out of the flow, unknown variables in
//! templates and Filters comparing a number with text are said when saved, marked in the
//! editor, and refuse a publish with the reason; calls run the published version meanwhile.

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
        .take_while(|c: &char| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
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
    to[at..]
        .chars()
        .take_while(|c: &char| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
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

/// What the notice of a save says is left to finish, if anything.
fn to_finish(html: &str) -> Option<String> {
    let at = html.find("To finish before publishing: ")?;
    let rest = &html[at..];
    Some(rest[..rest.find("</div>").unwrap()].to_owned())
}

/// Tries to publish the agent's draft from the console; returns the Publish page's problems
/// when it is refused, `None` when it was published.
async fn try_publish(console: &Console, agent: &str) -> Option<String> {
    let page = format!("/admin/agents/{agent}/draft");
    let res = console
        .submit(
            &page,
            &format!("/admin/agents/{agent}/publish"),
            &[("message", "")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let to = location(&res);
    if to.ends_with("/versions") {
        return None;
    }
    let html = console.page(&to).await;
    assert!(
        error_of(&html).unwrap().starts_with("Not published"),
        "{html}"
    );
    let at = html
        .find(r#"id="problems-title""#)
        .expect("the problems are listed");
    Some(html[at..].to_owned())
}

#[tokio::test]
async fn a_cycle_is_saved_to_the_draft_marked_and_refuses_the_publish_with_its_path() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    let greeting = first_block(&console, &f).await;
    let a = add_block(&console, &f, "talk").await;
    let b = add_block(&console, &f, "talk").await;
    save(&console, &f, &greeting, &[("message", "Hi"), ("next", &a)]).await;
    let page = save(&console, &f, &a, &[("message", "One"), ("next", &b)]).await;
    assert_eq!(error_of(&page), None, "a chain is fine");
    let page = save(&console, &f, &b, &[("message", "Two"), ("next", &a)]).await;
    assert_eq!(error_of(&page), None);
    let left = to_finish(&page).expect("what is left is said");
    assert!(
        left.contains("a cycle: #2 Talk → #3 Talk → #2 Talk"),
        "{left}"
    );
    // The editor marks it, and the publish is refused naming it.
    assert!(page.contains(r#"class="badge warn">to finish<"#));
    let problems = try_publish(&console, &f.agent).await.expect("refused");
    assert!(
        problems.contains("a cycle: #2 Talk → #3 Talk → #2 Talk"),
        "{problems}"
    );
    // Calls still run version 1: a greeting, then the end.
    let token = app.create_token(&f.agent);
    let call: serde_json::Value = app
        .start_call_as(&token, &f.agent, "+12125550100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(call["version"], 1);
    assert!(!call.to_string().contains("Two"), "{call:#}");
}

#[tokio::test]
async fn a_connection_to_another_flows_block_is_refused_and_the_form_kept() {
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
    // The form offers only this flow's blocks; one posted anyway is refused.
    let res = console
        .submit(
            &f.path(),
            &format!("{}/blocks/{talk}", f.path()),
            &[("message", "Hello from the form"), ("next", &elsewhere)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = res.text().await.unwrap();
    assert!(page.contains("no block of this flow has the key"), "{page}");
    assert!(
        page.contains("Hello from the form"),
        "the typed message is kept"
    );
}

#[tokio::test]
async fn an_unknown_variable_in_a_template_is_said_on_save_and_a_known_one_publishes() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    app.declare(&f.agent, "customer_name", "string", None);
    let greeting = first_block(&console, &f).await;
    let talk = add_block(&console, &f, "talk").await;
    save(
        &console,
        &f,
        &greeting,
        &[("message", "Hello"), ("next", &talk)],
    )
    .await;
    let page = save(&console, &f, &talk, &[("message", "Hi {{customer_nmae}}")]).await;
    let left = to_finish(&page).expect("said");
    assert!(left.contains("{{customer_nmae}}"), "{left}");
    assert!(
        try_publish(&console, &f.agent)
            .await
            .unwrap()
            .contains("{{customer_nmae}}")
    );
    let page = save(
        &console,
        &f,
        &talk,
        &[("message", "Hi {{customer_name|there}}")],
    )
    .await;
    assert_eq!(to_finish(&page), None);
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
    let page = save(
        &console,
        &f,
        &talk,
        &[("message", "About {{issue}}"), ("next", &collect)],
    )
    .await;
    assert_eq!(to_finish(&page), None);
    assert_eq!(try_publish(&console, &f.agent).await, None);
}

/// The key of the flow's first block (its entry).
async fn first_block(console: &Console, f: &Flow) -> String {
    let html = console.page(&f.path()).await;
    let at = html.find("?block=").unwrap() + "?block=".len();
    html[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test]
async fn a_filter_comparing_a_number_with_text_is_said_and_refuses_the_publish() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    app.declare(&f.agent, "risk_score", "number", Some("0"));
    let greeting = first_block(&console, &f).await;
    let filter = add_block(&console, &f, "filter").await;
    let end = add_block(&console, &f, "end_call").await;
    save(
        &console,
        &f,
        &greeting,
        &[("message", "Hello"), ("next", &filter)],
    )
    .await;
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
        let left = to_finish(&page).unwrap_or_else(|| panic!("{conditions}: nothing said"));
        assert!(left.contains(expected), "{conditions}: {left}");
        assert!(
            try_publish(&console, &f.agent)
                .await
                .unwrap()
                .contains(expected)
        );
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
            ("else", &end),
        ],
    )
    .await;
    assert_eq!(to_finish(&page), None, "{page}");
    assert!(page.contains("Risky</bdi> →"));
    assert_eq!(try_publish(&console, &f.agent).await, None);
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
    let left = to_finish(&console.page(&location(&res)).await).expect("said");
    assert!(left.contains("blocked is boolean"), "{left}");
    assert!(
        try_publish(&console, &f.agent)
            .await
            .unwrap()
            .contains("blocked is boolean")
    );
    let res = console
        .submit(&rule, &rule, &form("blocked equals true"))
        .await;
    assert_eq!(to_finish(&console.page(&location(&res)).await), None);
    // The flow editor lists it above the First Flow.
    assert!(console.page(&f.path()).await.contains("Blocked callers"));
    assert_eq!(try_publish(&console, &f.agent).await, None);

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
async fn deleting_a_block_reconnects_what_led_to_it_as_chosen_and_lists_what_is_cut_off() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    let greeting = first_block(&console, &f).await;
    let talk = add_block(&console, &f, "talk").await;
    let mid = add_block(&console, &f, "talk").await;
    let end = add_block(&console, &f, "end_call").await;
    save(
        &console,
        &f,
        &greeting,
        &[("message", "Hi"), ("next", &talk)],
    )
    .await;
    save(&console, &f, &talk, &[("message", "One"), ("next", &mid)]).await;
    let page = save(&console, &f, &mid, &[("message", "Two"), ("next", &end)]).await;
    assert!(!page.contains("To finish"), "{page}");
    // The delete form offers to reconnect to what the block led to.
    let page = console.page(&format!("{}?block={mid}", f.path())).await;
    assert!(
        page.contains(&format!(r#"<option value="{end}" selected>"#)),
        "{page}"
    );
    let res = console
        .submit(
            &f.path(),
            &format!("{}/blocks/{mid}/delete", f.path()),
            &[("reconnect", &end)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = console.page(&location(&res)).await;
    assert!(page.contains("now leads to the block after it"), "{page}");
    assert!(!page.contains("To finish"), "nothing is cut off: {page}");
    assert!(page.contains("Next</bdi> →</span> #3 End Call"), "{page}");

    // Deleted without reconnecting, what came after is listed as unreachable.
    let res = console
        .submit(
            &f.path(),
            &format!("{}/blocks/{talk}/delete", f.path()),
            &[("reconnect", "")],
        )
        .await;
    let page = console.page(&location(&res)).await;
    assert!(page.contains("not connected now"), "{page}");
    assert!(page.contains("To finish before calls can use this flow"));
    assert!(
        page.contains("#2 End Call: no path from the flow&#39;s entry reaches it")
            || page.contains("#2 End Call: no path from the flow's entry reaches it"),
        "{page}"
    );
}

/// Adds a pre-call Filter with the ➕; returns its page.
async fn new_filter(console: &Console, f: &Flow) -> String {
    let res = console
        .submit(
            &f.path(),
            &format!("/admin/agents/{}/rules", f.agent),
            &[("kind", "filter")],
        )
        .await;
    location(&res)
}

#[tokio::test]
async fn a_deleted_blocks_or_actions_address_never_names_a_new_one() {
    let app = spawn_app().await;
    let (console, f) = first_flow(&app).await;
    let first = add_block(&console, &f, "talk").await;
    console
        .submit(
            &f.path(),
            &format!("{}/blocks/{first}/delete", f.path()),
            &[],
        )
        .await;
    let second = add_block(&console, &f, "talk").await;
    assert_ne!(first, second, "a block's key is never reused");
    let a = new_filter(&console, &f).await;
    let key = a.rsplit('/').next().unwrap().to_owned();
    console
        .submit(
            &format!("/admin/agents/{}/actions/{key}/delete", f.agent),
            &format!("/admin/agents/{}/actions/{key}/delete", f.agent),
            &[],
        )
        .await;
    let b = new_filter(&console, &f).await;
    assert_ne!(a, b, "an action's address is never reused");
    assert_eq!(console.get(&a).await.status(), StatusCode::NOT_FOUND);
}
