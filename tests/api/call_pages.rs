//! The call simulator, call history and call detail pages, through the console's forms.

use reqwest::StatusCode;
use serde_json::json;

use crate::admin::{Console, location};
use crate::helpers::{TestApp, spawn_app};

/// Between `after` and the next `"`, on a page.
fn attribute_after<'a>(html: &'a str, after: &str) -> &'a str {
    let at = html.find(after).unwrap_or_else(|| panic!("no {after:?}")) + after.len();
    &html[at..at + html[at..].find('"').unwrap()]
}

/// The number in `<… id="{id}">N ms<…`.
fn millis_in(html: &str, id: &str) -> i64 {
    let marker = format!(r#"id="{id}">"#);
    let at = html.find(&marker).unwrap_or_else(|| panic!("no #{id}")) + marker.len();
    let text = &html[at..];
    text[..text.find(' ').unwrap()].parse().unwrap()
}

impl Console {
    fn simulate_path(agent: &str) -> String {
        format!("/admin/agents/{agent}/simulate")
    }

    /// Runs the simulator with `form`; returns the call's page path.
    async fn simulate(&self, agent: &str, form: &[(&str, &str)]) -> String {
        let path = Self::simulate_path(agent);
        let res = self.submit(&path, &path, form).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "simulate {form:?}");
        let to = location(&res);
        assert!(
            to.starts_with(&format!("/admin/agents/{agent}/calls/")),
            "{to}"
        );
        to
    }

    /// The call's id in its page's path.
    fn call_id(path: &str) -> &str {
        path.rsplit('/').next().unwrap()
    }

    /// Sets the agent's one webhook's time wait before fallback.
    async fn set_wait(&self, configure: &str, seconds: &str) {
        let res = self
            .submit(
                configure,
                &configure.replace("/configure", "/settings"),
                &[
                    ("name", "CRM"),
                    ("wait_seconds", seconds),
                    ("ttl_minutes", "10"),
                    ("enabled", "on"),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert!(self.page(configure).await.contains("Settings saved"));
        let agent = configure.split('/').nth(3).unwrap();
        self.publish(agent).await;
    }

    /// Makes the First Flow ask for each of `variables` in turn after its Greeting, through
    /// the flow editor's forms.
    async fn ask_for(&self, agent: &str, variables: &[&str]) {
        let overview = self.page(&format!("/admin/agents/{agent}")).await;
        let flow = attribute_after(&overview, &format!("/admin/agents/{agent}/flows/")).to_owned();
        let editor = format!("/admin/agents/{agent}/flows/{flow}");
        let greeting = attribute_after(&self.page(&editor).await, "?block=")
            .trim_end_matches("#settings")
            .to_owned();
        let mut collects = Vec::new();
        for _ in variables {
            let res = self
                .submit(&editor, &format!("{editor}/blocks"), &[("kind", "collect")])
                .await;
            assert_eq!(res.status(), StatusCode::SEE_OTHER);
            let to = location(&res);
            let id = to
                .split("block=")
                .nth(1)
                .unwrap()
                .trim_end_matches("#settings");
            collects.push(id.to_owned());
        }
        for (i, variable) in variables.iter().enumerate() {
            let next = collects.get(i + 1).map_or("", String::as_str);
            let prompt = format!("What is your {variable}?");
            let res = self
                .submit(
                    &editor,
                    &format!("{editor}/blocks/{}", collects[i]),
                    &[("variable", variable), ("prompt", &prompt), ("next", next)],
                )
                .await;
            assert_eq!(res.status(), StatusCode::SEE_OTHER);
        }
        // A template may only name variables the agent knows: here, those collected.
        let greeting_text = if variables.contains(&"customer_name") {
            "Hello {{customer_name|there}}"
        } else {
            "Hello there"
        };
        let res = self
            .submit(
                &editor,
                &format!("{editor}/blocks/{greeting}"),
                &[("message", greeting_text), ("next", &collects[0])],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let page = self.page(&format!("{editor}?block={greeting}")).await;
        assert!(!page.contains("flash bad"), "the flow was saved");
        self.publish(agent).await;
    }
}

/// A signed-in console with an agent that has one webhook ("CRM") waiting `seconds`.
async fn agent_with_webhook(app: &TestApp, seconds: &str) -> (Console, String) {
    let admin = Console::set_up(app).await;
    let agent = admin.create_agent("Support line").await;
    let configure = admin.create_webhook(&agent).await;
    admin.set_wait(&configure, seconds).await;
    (admin, agent)
}

fn payload(agent: &str, phone: &str) -> String {
    json!({
        "agentId": agent,
        "phoneNumber": phone,
        "customer_name": "Jane Doe",
        "priority": "high"
    })
    .to_string()
}

#[tokio::test]
async fn a_payload_sent_before_the_fallback_time_ends_the_wait_with_webhook_data() {
    let app = spawn_app().await;
    let (admin, agent) = agent_with_webhook(&app, "2").await;
    let form = admin.page(&Console::simulate_path(&agent)).await;
    assert!(form.contains(&agent), "the example payload names the agent");

    let body = payload(&agent, "+12125550123");
    let call = admin
        .simulate(
            &agent,
            &[
                ("from", "+1 (212) 555-0123"),
                ("to", "+12125550199"),
                ("payload", &body),
                ("delay_ms", "150"),
            ],
        )
        .await;
    let page = admin.page(&call).await;
    assert!(page.contains(r#"id="call-source">webhook<"#), "{page}");
    let waited = millis_in(&page, "call-waited");
    assert!(
        (100..2000).contains(&waited),
        "waited {waited} ms: woken by the payload, not the 2000 ms fallback"
    );
    assert!(
        page.contains(">arrived<"),
        "the webhook step arrived while waiting"
    );
    assert!(page.contains("<code>customer_name</code>") && page.contains("Jane Doe"));
    assert!(page.contains(r#"<span class="step-kind">Greeting</span>"#));
    assert!(
        page.contains("The payload came through &#34;CRM&#34; 150 ms after")
            || page.contains("The payload came through \"CRM\" 150 ms after"),
        "{page}"
    );
    assert!(!page.contains(r#"id="late""#));
}

#[tokio::test]
async fn a_simulation_uses_the_typed_payload_and_leaves_a_real_callers_cached_data_alone() {
    let app = spawn_app().await;
    let (admin, agent) = agent_with_webhook(&app, "2").await;
    // A real sender cached data for the caller, with another name.
    let configure = admin.page(&format!("/admin/agents/{agent}")).await;
    let key_path = configure[configure.find("/actions/").unwrap()..]
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let rotated = admin
        .submit(
            &format!("/admin/agents/{agent}{key_path}"),
            &format!(
                "/admin/agents/{agent}{}",
                key_path.replace("/configure", "/key")
            ),
            &[("grace_secs", "0")],
        )
        .await;
    assert_eq!(rotated.status(), StatusCode::SEE_OTHER);
    let page = admin.page(&location(&rotated)).await;
    let key: String = page[page.find("pcwk_").unwrap()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let url: String = page[page.find(&format!("{}/webhooks/", app.address)).unwrap()..]
        .chars()
        .take_while(|c| *c != '<' && *c != '&')
        .collect();
    let res = app
        .client
        .post(&url)
        .header("X-Authorization", &key)
        .json(&json!({"agentId": agent, "phoneNumber": "+12125550123", "customer_name": "Real Caller"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    let body = payload(&agent, "+12125550123");
    let call = admin
        .simulate(
            &agent,
            &[
                ("from", "+12125550123"),
                ("payload", &body),
                ("delay_ms", "100"),
            ],
        )
        .await;
    let page = admin.page(&call).await;
    assert!(
        page.contains("Jane Doe"),
        "the typed payload was used: {page}"
    );
    assert!(
        !page.contains("Real Caller"),
        "the cached data was not used"
    );
    assert!(page.contains("holds data for this caller"), "{page}");
    assert!(page.contains("left it"), "{page}");
    // The real caller's data still waits for their call.
    let deliveries = admin
        .page(&format!(
            "/admin/agents/{agent}{}",
            key_path.replace("/configure", "/deliveries")
        ))
        .await;
    assert!(deliveries.contains("waiting for its call"), "{deliveries}");
}

#[tokio::test]
async fn a_payload_sent_after_the_fallback_time_is_shown_as_late_data() {
    let app = spawn_app().await;
    let (admin, agent) = agent_with_webhook(&app, "0.3").await;
    let body = payload(&agent, "+12125550123");
    let call = admin
        .simulate(
            &agent,
            &[
                ("from", "+12125550123"),
                ("payload", &body),
                ("delay_ms", "700"),
            ],
        )
        .await;
    let page = admin.page(&call).await;
    assert!(page.contains(r#"id="call-source">fallback<"#), "{page}");
    let waited = millis_in(&page, "call-waited");
    assert!((300..700).contains(&waited), "waited {waited} ms");
    assert!(page.contains(">fallback<") && page.contains("fell back to defaults"));
    let late = &page[page.find(r#"id="late""#).expect("a late data section")..];
    assert!(late.contains("<code>customer_name</code>") && late.contains("Jane Doe"));
}

#[tokio::test]
async fn the_simulator_answers_questions_from_its_list_and_the_detail_shows_each_step() {
    let app = spawn_app().await;
    let (admin, agent) = agent_with_webhook(&app, "1").await;
    admin.ask_for(&agent, &["customer_name", "reason"]).await;
    let body = payload(&agent, "+12125550123");
    let call = admin
        .simulate(
            &agent,
            &[
                ("from", "+12125550123"),
                ("payload", &body),
                ("delay_ms", "0"),
                ("answers", "reason = billing\n"),
            ],
        )
        .await;
    let page = admin.page(&call).await;
    // The pre-call webhook, then the flow: the greeting, a Collect skipped because the
    // webhook told it, one asked and answered, and the end.
    assert!(page.contains("Fields received") && page.contains("<code>priority</code>"));
    assert!(page.contains("Hello Jane Doe"));
    assert!(page.contains("Skipped: customer_name is known (<bdi>Jane Doe</bdi>)"));
    assert!(page.contains("Asked for reason") && page.contains("What is your reason?"));
    assert!(page.contains("reason = <bdi>billing</bdi>"));
    assert!(
        page.contains(r#"id="call-outcome" dir="auto">completed<"#),
        "{page}"
    );
    let order: Vec<usize> = [
        "Greeting",
        "Skipped: customer_name",
        "Asked for reason",
        "reason = <bdi>billing</bdi>",
    ]
    .iter()
    .map(|s| page.find(s).unwrap_or_else(|| panic!("no {s}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {order:?}");
    assert!(
        !page.contains(r#"/answer""#),
        "an ended call has no answer form"
    );
}

#[tokio::test]
async fn answering_an_active_calls_question_from_its_page_continues_it() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Support line").await;
    admin.ask_for(&agent, &["reason", "account"]).await;
    let call = admin
        .simulate(
            &agent,
            &[("from", "+12125550123"), ("answers", "reason=billing")],
        )
        .await;
    let answer = format!("{call}/answer");
    let page = admin.page(&call).await;
    assert!(page.contains("Waiting for an answer") && page.contains("What is your account?"));
    assert!(page.contains(&format!(r#"action="{answer}""#)));
    assert!(page.contains(">active<"));

    // An empty answer is refused, with the reason shown.
    let res = admin.submit(&call, &answer, &[("answer", " ")]).await;
    assert_eq!(location(&res), call);
    let page = admin.page(&call).await;
    assert!(
        page.contains("flash bad") && page.contains("waiting for account"),
        "{page}"
    );

    let res = admin.submit(&call, &answer, &[("answer", "A-42")]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), call);
    let page = admin.page(&call).await;
    assert!(page.contains("Answered account; the call ended (completed)."));
    assert!(
        page.contains("account = <bdi>A-42</bdi>")
            && page.contains(r#"id="call-outcome" dir="auto">completed<"#)
    );
    assert!(!page.contains(&format!(r#"action="{answer}""#)));

    // An ended call takes no more answers.
    let csrf = crate::admin::csrf_of(&page);
    let res = admin
        .post(&answer, &[("csrf", &csrf), ("answer", "again")])
        .await;
    assert_eq!(location(&res), call);
    assert!(admin.page(&call).await.contains("it takes no more answers"));
}

#[tokio::test]
async fn history_lists_calls_newest_first_and_filters_by_outcome_and_source() {
    let app = spawn_app().await;
    let (admin, agent) = agent_with_webhook(&app, "0.2").await;
    let history = format!("/admin/agents/{agent}/calls");
    assert!(admin.page(&history).await.contains("No calls yet"));

    let body = payload(&agent, "+12125550101");
    let from_webhook = admin
        .simulate(&agent, &[("from", "+12125550101"), ("payload", &body)])
        .await;
    let fell_back = admin.simulate(&agent, &[("from", "+12125550102")]).await;
    admin.ask_for(&agent, &["reason"]).await;
    let waiting = admin.simulate(&agent, &[("from", "+12125550103")]).await;
    let [webhook_id, fallback_id, active_id] =
        [&from_webhook, &fell_back, &waiting].map(|p| Console::call_id(p).to_owned());

    let all = admin.page(&history).await;
    let at = |page: &str, id: &str| page.find(id);
    let (w, f, a) = (
        at(&all, &webhook_id).unwrap(),
        at(&all, &fallback_id).unwrap(),
        at(&all, &active_id).unwrap(),
    );
    assert!(a < f && f < w, "newest first");
    assert!(all.contains("+12125550101") && all.contains(">active<"));
    assert!(
        all.contains(r#"<option value="completed" "#),
        "outcomes to filter by"
    );

    let only = |page: &str, ids: &[&str]| {
        for id in [&webhook_id, &fallback_id, &active_id] {
            assert_eq!(
                page.contains(id.as_str()),
                ids.contains(&id.as_str()),
                "{id} listed? {page}"
            );
        }
    };
    only(
        &admin.page(&format!("{history}?outcome=completed")).await,
        &[&webhook_id, &fallback_id],
    );
    only(
        &admin.page(&format!("{history}?outcome=active")).await,
        &[&active_id],
    );
    only(
        &admin.page(&format!("{history}?source=webhook")).await,
        &[&webhook_id],
    );
    let page = admin
        .page(&format!("{history}?outcome=completed&source=fallback"))
        .await;
    only(&page, &[&fallback_id]);
    assert!(page.contains(r#"<option value="fallback" selected>"#));
    let none = admin.page(&format!("{history}?outcome=transferred")).await;
    assert!(none.contains("No calls match"));
}

#[tokio::test]
async fn history_shows_fifty_calls_a_page_with_a_link_to_older_ones() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Busy line").await;
    let token = app.create_token(&agent);
    let mut ids = Vec::new();
    for i in 0..53 {
        let res = app
            .client
            .post(format!("{}/api/v1/calls", app.address))
            .bearer_auth(&token)
            .json(&json!({ "agentId": agent, "from": format!("+1212555{:04}", 1000 + i) }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let call: serde_json::Value = res.json().await.unwrap();
        ids.push(call["callId"].as_str().unwrap().to_owned());
    }
    let history = format!("/admin/agents/{agent}/calls");
    let first = admin.page(&history).await;
    let listed = |page: &str| ids.iter().filter(|id| page.contains(id.as_str())).count();
    assert_eq!(listed(&first), 50);
    assert!(first.contains(&ids[52]) && !first.contains(&ids[2]));
    let older = attribute_after(&first, &format!(r#"href="{history}?"#)).replace("&amp;", "&");
    assert_eq!(older, format!("before={}", ids[3]));
    let second = admin.page(&format!("{history}?{older}")).await;
    assert_eq!(listed(&second), 3);
    assert!(second.contains(&ids[0]) && !second.contains("Older calls"));
}

#[tokio::test]
async fn another_agents_call_or_an_unknown_call_is_a_404() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let mine = admin.create_agent("Mine").await;
    let other = admin.create_agent("Other").await;
    admin.ask_for(&mine, &["reason"]).await;
    let call = admin.simulate(&mine, &[("from", "+12125550123")]).await;
    let id = Console::call_id(&call);
    assert_eq!(admin.get(&call).await.status(), StatusCode::OK);

    let elsewhere = format!("/admin/agents/{other}/calls/{id}");
    assert_eq!(admin.get(&elsewhere).await.status(), StatusCode::NOT_FOUND);
    let res = admin
        .submit(&call, &format!("{elsewhere}/answer"), &[("answer", "x")])
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        admin.page(&call).await.contains(">active<"),
        "still waiting"
    );
    let unknown = format!("/admin/agents/{mine}/calls/nosuchcall");
    let res = admin.get(&unknown).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("This call does not exist")
    );
    assert!(
        !admin
            .page(&format!("/admin/agents/{other}/calls"))
            .await
            .contains(id)
    );
}

#[tokio::test]
async fn forms_without_the_csrf_token_start_and_answer_nothing() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Support line").await;
    admin.ask_for(&agent, &["reason"]).await;
    let simulate = Console::simulate_path(&agent);
    for csrf in [None, Some("forged")] {
        let mut form = vec![("from", "+12125550123")];
        if let Some(c) = csrf {
            form.push(("csrf", c));
        }
        assert_eq!(
            admin.post(&simulate, &form).await.status(),
            StatusCode::FORBIDDEN
        );
    }
    let history = format!("/admin/agents/{agent}/calls");
    assert!(admin.page(&history).await.contains("No calls yet"));

    let call = admin.simulate(&agent, &[("from", "+12125550123")]).await;
    let res = admin
        .post(
            &format!("{call}/answer"),
            &[("csrf", "forged"), ("answer", "x")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(admin.page(&call).await.contains(">active<"));
}

#[tokio::test]
async fn a_bad_payload_or_number_shows_the_form_again_and_starts_nothing() {
    let app = spawn_app().await;
    let (admin, agent) = agent_with_webhook(&app, "0.2").await;
    let simulate = Console::simulate_path(&agent);
    for (form, expected) in [
        (
            vec![("from", "+12125550123"), ("payload", r#"{"agentId": "#)],
            "Webhook payload: not valid JSON",
        ),
        (
            vec![("from", "+12125550123"), ("payload", "[1]")],
            "Webhook payload: it must be one JSON object",
        ),
        (vec![("from", "call me")], "Caller number:"),
        (vec![("from", "")], "Caller number: it is required"),
        (
            vec![("from", "+12125550123"), ("to", "nobody")],
            "Called number:",
        ),
        (
            vec![("from", "+12125550123"), ("delay_ms", "20000")],
            "Send it after",
        ),
        (
            vec![("from", "+12125550123"), ("answers", "no equals sign")],
            "Answers, line 1",
        ),
    ] {
        let res = admin.submit(&simulate, &simulate, &form).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{form:?}");
        let page = res.text().await.unwrap();
        assert!(
            page.contains("flash bad") && page.contains(expected),
            "{expected}: {page}"
        );
        // What was typed is kept.
        if let Some((_, from)) = form.iter().find(|(k, _)| *k == "from") {
            assert!(page.contains(&format!(r#"value="{from}""#)), "{from}");
        }
    }
    assert!(
        admin
            .page(&format!("/admin/agents/{agent}/calls"))
            .await
            .contains("No calls yet")
    );
}

#[tokio::test]
async fn the_agent_tabs_lead_to_the_simulator_and_the_history_and_anonymous_requests_are_refused() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Support line").await;
    let overview = admin.page(&format!("/admin/agents/{agent}")).await;
    assert!(overview.contains(&format!(r#"href="/admin/agents/{agent}/simulate""#)));
    assert!(overview.contains(&format!(r#"href="/admin/agents/{agent}/calls""#)));
    let simulator = admin.page(&Console::simulate_path(&agent)).await;
    assert!(simulator.contains("has no Webhook action"));
    assert!(!simulator.contains(r#"name="payload""#));

    let anonymous = Console::new(&app);
    for path in [
        format!("/admin/agents/{agent}/simulate"),
        format!("/admin/agents/{agent}/calls"),
        format!("/admin/agents/{agent}/calls/x"),
    ] {
        let res = anonymous.get(&path).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "GET {path}");
        assert!(location(&res).starts_with("/login?next="));
    }
    for path in [
        format!("/admin/agents/{agent}/simulate"),
        format!("/admin/agents/{agent}/calls/x/answer"),
    ] {
        let res = anonymous.post(&path, &[("from", "+12125550123")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "POST {path}");
    }
}
