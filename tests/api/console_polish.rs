//! The console as a user walks it, with and without JavaScript: the Test step's deliveries
//! in the page itself, a confirmation page before what cannot be undone, Save as variables
//! starting from what the draft declares, deliveries linked to their calls, readable times,
//! one figure per wait on a call's page, a way in from the front page, user text isolated
//! from the page's direction, and pages that fit a phone.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::{Console, PASSWORD, Webhook, location, read_events};
use crate::browser::{Browser, full_shot, new_webhook, overflow, publish, unlabelled};
use crate::helpers::{TestApp, spawn_app};

/// The right-to-left override: everything after it reads backwards until its paragraph
/// ends, unless the text around it is isolated.
const RLO: char = '\u{202E}';

/// The opening tag of the first form that posts or leads to `action`.
fn form_tag<'a>(html: &'a str, action: &str) -> &'a str {
    let marker = format!(r#"action="{action}""#);
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no form for {action}"));
    let start = html[..at].rfind("<form").expect("a form tag");
    &html[start..at + html[at..].find('>').unwrap() + 1]
}

/// The whole first form for `action`, up to its `</form>`.
fn form_of<'a>(html: &'a str, action: &str) -> &'a str {
    let tag = form_tag(html, action);
    let start = html.find(tag).unwrap();
    &html[start..start + html[start..].find("</form>").unwrap()]
}

/// The `<tr>` of a page that shows the field `name` (`<code>name</code>`), from `from` on.
fn row_of<'a>(html: &'a str, name: &str) -> &'a str {
    let at = html
        .find(&format!("<code>{name}</code>"))
        .unwrap_or_else(|| panic!("no row for {name}"));
    let start = html[..at].rfind("<tr>").unwrap();
    &html[start..at + html[at..].find("</tr>").unwrap()]
}

/// The server-rendered entries of a Test page, newest first.
fn entries(html: &str) -> Vec<&str> {
    html.split(r#"<li class="delivery" data-id=""#)
        .skip(1)
        .map(|e| &e[..e.find("</li>").unwrap_or(e.len())])
        .collect()
}

/// A page's `data-last` (the newest delivery it shows).
fn data_last(html: &str) -> i64 {
    let at = html.find(r#"data-last=""#).expect("data-last") + r#"data-last=""#.len();
    html[at..at + html[at..].find('"').unwrap()]
        .parse()
        .unwrap()
}

async fn post_json(app: &TestApp, url: &str, key: &str, body: &Value) -> StatusCode {
    app.client
        .post(url)
        .header("X-Authorization", key)
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
}

impl Webhook {
    fn path(&self, step: &str) -> String {
        format!(
            "/admin/agents/{}/actions/{}/{step}",
            self.agent, self.action
        )
    }

    /// Posts `fields` for `phone` with the webhook's key; returns the status.
    async fn post(&self, app: &TestApp, phone: &str, fields: Value) -> StatusCode {
        let mut body = json!({ "agentId": self.agent, "phoneNumber": phone });
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        post_json(app, &self.url, &self.key, &body).await
    }

    /// Declares `name` in the draft through the Variables page.
    async fn declare(&self, name: &str, ty: &str, description: &str) {
        let path = format!("/admin/agents/{}/variables", self.agent);
        let res = self
            .admin
            .submit(
                &path,
                &path,
                &[
                    ("name", name),
                    ("type", ty),
                    ("default", ""),
                    ("description", description),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "declare {name}");
    }
}

#[tokio::test]
async fn without_javascript_the_test_step_lists_the_latest_deliveries_and_claims_no_connection() {
    let app = spawn_app().await;
    let hook = Webhook::new(&app).await;
    let test = hook.path("test");
    let page = hook.admin.page(&test).await;
    assert!(
        page.contains("No request with a valid key has reached this URL yet"),
        "{page}"
    );

    for i in 0..21 {
        hook.send(i).await;
    }
    let refused = hook
        .post(&app, "+12125550123", json!({ "customer": { "name": "x" } }))
        .await;
    assert_eq!(refused, StatusCode::UNPROCESSABLE_ENTITY);
    let accepted = hook
        .post(
            &app,
            "+1 (212) 555-0124",
            json!({ "customer_name": "Jane Doe", "priority": "high", "vip": true }),
        )
        .await;
    assert_eq!(accepted, StatusCode::ACCEPTED);

    let page = hook.admin.page(&test).await;
    // What a reader without scripts sees is the page as it was made: it says so, with a
    // way to look again, and claims no live connection.
    for claim in ["Connecting", "Listening", "Reconnecting"] {
        assert!(!page.contains(claim), "the page claims {claim:?}");
    }
    assert!(page.contains(&format!(r#"<a href="{test}">Refresh</a>"#)));
    let list = entries(&page);
    assert_eq!(list.len(), 20, "the newest 20 of 23");
    let newest = list[0];
    assert!(newest.contains(">Accepted<") && newest.contains(">202<"));
    assert!(newest.contains("+12125550124"), "the normalised phone");
    assert!(newest.contains("<time datetime="), "its time");
    for (name, ty, value) in [
        ("customer_name", "string", "Jane Doe"),
        ("priority", "string", "high"),
        ("vip", "boolean", "true"),
    ] {
        let row = row_of(newest, name);
        assert!(row.contains(&format!("<td>{ty}</td>")), "{row}");
        assert!(row.contains(value), "{row}");
    }
    // Its fields can be saved as variables with an ordinary form.
    let save = hook.path("variables");
    let form = form_of(newest, &save);
    assert!(form.contains(r#"method="post""#) && form.contains(r#"name="csrf""#));
    assert!(form.contains("Save as variables"));
    // The refused one says why, and offers nothing to save.
    let refused = list[1];
    assert!(refused.contains(">Refused<") && refused.contains(">422<"));
    assert!(refused.contains("customer is an object"), "{refused}");
    assert!(!refused.contains("Save as variables"));
    // The script goes on from the newest delivery the page shows.
    let id: i64 = newest[..newest.find('"').unwrap()].parse().unwrap();
    assert_eq!(data_last(&page), id);

    // Saving from the page, as a browser without scripts posts it: every new field ticked.
    let ticked: Vec<(&str, String)> = form
        .split(r#"name="field" value=""#)
        .skip(1)
        .map(|v| ("field", v[..v.find('"').unwrap()].to_owned()))
        .collect();
    assert_eq!(ticked.len(), 3, "{form}");
    let fields: Vec<(&str, &str)> = ticked.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = hook.admin.submit(&test, &save, &fields).await;
    assert_eq!(location(&res), test);
    let page = hook.admin.page(&test).await;
    assert!(page.contains("Saved to the draft as variables: customer_name, priority, vip"));
}

#[tokio::test]
async fn the_live_stream_goes_on_after_the_newest_delivery_the_page_shows() {
    let app = spawn_app().await;
    let hook = Webhook::new(&app).await;
    for i in 0..3 {
        hook.send(i).await;
    }
    let last = data_last(&hook.admin.page(&hook.path("test")).await);
    assert!(last > 0);
    let res = hook
        .admin
        .get(&format!("{}?after={last}", hook.path("events")))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.bytes_stream();
    hook.send(9).await;
    let events = read_events(&mut body, |e| e.iter().any(|(name, _)| name == "delivery")).await;
    let sent: Vec<&Value> = events
        .iter()
        .filter(|(name, _)| name == "delivery")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(sent.len(), 1, "only what came after the page: {events:?}");
    assert_eq!(sent[0]["phoneNumber"], "+12125551009");
    assert!(sent[0]["id"].as_i64().unwrap() > last);
}

#[tokio::test]
async fn save_as_variables_starts_with_new_fields_ticked_and_shows_those_already_saved() {
    let app = spawn_app().await;
    let hook = Webhook::new(&app).await;
    hook.declare("customer_name", "string", "").await;
    let status = hook
        .post(
            &app,
            "+12125550123",
            json!({ "customer_name": "Jane Doe", "priority": "high" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let page = hook.admin.page(&hook.path("test")).await;
    let entry = entries(&page)[0];
    let saved = row_of(entry, "customer_name");
    assert!(saved.contains("saved as variable"), "{saved}");
    assert!(saved.contains("checked disabled"), "{saved}");
    assert!(!saved.contains(r#"name="field""#), "{saved}");
    let new = row_of(entry, "priority");
    assert!(
        new.contains(r#"name="field" value="priority:string""#) && new.contains("checked"),
        "{new}"
    );
    assert!(!new.contains("disabled") && !new.contains("saved as variable"));
    // The script marks fields the same way: it is told what the draft declares.
    assert!(
        page.contains(r#"data-declared="[&#34;customer_name&#34;]""#)
            || page.contains(r#"data-declared="[&quot;customer_name&quot;]""#),
        "{page}"
    );

    // Once every field is saved, there is nothing left to tick.
    let test = hook.path("test");
    hook.admin
        .submit(
            &test,
            &hook.path("variables"),
            &[("field", "priority:string")],
        )
        .await;
    let page = hook.admin.page(&test).await;
    let entry = entries(&page)[0];
    assert!(
        entry.contains("Every field is saved as a variable"),
        "{entry}"
    );
    assert!(!entry.contains(r#"name="field""#));
}

/// The page's form for `action` leads to a confirmation page: a GET that carries no
/// CSRF token (it changes nothing), asking in a dialog first when scripts run.
fn leads_to_confirmation(page: &str, action: &str) {
    let form = form_of(page, action);
    assert!(form.contains(r#"method="get""#), "{form}");
    assert!(
        !form.contains("csrf"),
        "a GET form carries no CSRF token: {form}"
    );
    assert!(form.contains("data-confirm="), "{form}");
}

/// The confirmation page at `path`: it asks, says what happens, and its button posts to
/// `action` with the CSRF token and `fields`.
async fn confirmation(admin: &Console, path: &str, action: &str, says: &[&str]) -> String {
    let res = admin.get(path).await;
    assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    let page = res.text().await.unwrap();
    for s in says {
        assert!(page.contains(s), "{path} does not say {s:?}: {page}");
    }
    let form = form_of(&page, action);
    assert!(form.contains(r#"method="post""#), "{form}");
    assert!(form.contains(r#"name="csrf""#), "{form}");
    page
}

#[tokio::test]
async fn destructive_buttons_ask_on_a_confirmation_page_before_they_act() {
    let app = spawn_app().await;
    let hook = Webhook::new(&app).await;
    let admin = &hook.admin;
    let configure = hook.path("configure");

    // Regenerate key: the page says what becomes of the current key; asking changes nothing.
    let key = hook.path("key");
    leads_to_confirmation(&admin.page(&configure).await, &key);
    let page = confirmation(
        admin,
        &format!("{key}?grace_secs=3600"),
        &key,
        &[
            "Make a new API key for",
            "shown once",
            "keeps working for 1 hour",
        ],
    )
    .await;
    assert!(form_of(&page, &key).contains(r#"name="grace_secs" value="3600""#));
    assert_eq!(
        hook.post(&app, "+12125550101", json!({})).await,
        StatusCode::ACCEPTED
    );
    let immediate = admin.get(&format!("{key}?grace_secs=0")).await;
    assert!(
        immediate
            .text()
            .await
            .unwrap()
            .contains("stops working at once")
    );
    // Confirmed, it is done.
    let res = admin
        .submit(
            &format!("{key}?grace_secs=3600"),
            &key,
            &[("grace_secs", "3600")],
        )
        .await;
    assert_eq!(location(&res), configure);
    let page = admin.page(&configure).await;
    assert!(page.contains("keeps working for 1 hour"));

    // Revoke now: the old key works until it is confirmed.
    let revoke_at = page.find("/revoke\"").expect("a Revoke now form");
    let revoke = page[page[..revoke_at].rfind("action=\"").unwrap() + 8..revoke_at + 7].to_owned();
    leads_to_confirmation(&page, &revoke);
    confirmation(
        admin,
        &revoke,
        &revoke,
        &[
            "Stop the old key ending in",
            "refused (401)",
            "goes on working",
        ],
    )
    .await;
    assert_eq!(
        hook.post(&app, "+12125550102", json!({})).await,
        StatusCode::ACCEPTED
    );
    admin.submit(&revoke, &revoke, &[]).await;
    assert_eq!(
        hook.post(&app, "+12125550103", json!({})).await,
        StatusCode::UNAUTHORIZED
    );

    // Regenerate secret.
    admin
        .submit(&configure, &hook.path("signing"), &[("required", "on")])
        .await;
    let secret = hook.path("signing-secret");
    assert!(
        admin.page(&configure).await.contains("whsec_"),
        "the secret, once"
    );
    leads_to_confirmation(&admin.page(&configure).await, &secret);
    confirmation(
        admin,
        &secret,
        &secret,
        &["Make a new signing secret for", "stops at once"],
    )
    .await;
    admin.submit(&secret, &secret, &[]).await;
    assert!(
        admin
            .page(&configure)
            .await
            .contains("A new signing secret was made")
    );

    // Delete a variable.
    hook.declare("customer_name", "string", "").await;
    let variables = format!("/admin/agents/{}/variables", hook.agent);
    let delete = format!("{variables}/customer_name/delete");
    leads_to_confirmation(&admin.page(&variables).await, &delete);
    confirmation(
        admin,
        &delete,
        &delete,
        &["Delete the variable", "customer_name", "never published"],
    )
    .await;
    assert!(
        admin
            .page(&variables)
            .await
            .contains("<code>customer_name</code>")
    );
    admin.submit(&delete, &delete, &[]).await;
    assert!(
        !admin
            .page(&variables)
            .await
            .contains("<code>customer_name</code>")
    );

    // Revoke a runtime token.
    let overview = format!("/admin/agents/{}", hook.agent);
    let res = admin
        .submit(
            &overview,
            &format!("{overview}/tokens"),
            &[("name", "telephony")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = admin.page(&overview).await;
    let token: String = page[page.find("pcrt_").expect("the token, once")..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let revoke_at = page.find("/revoke\"").expect("a Revoke form");
    let revoke = page[page[..revoke_at].rfind("action=\"").unwrap() + 8..revoke_at + 7].to_owned();
    leads_to_confirmation(&page, &revoke);
    confirmation(
        admin,
        &revoke,
        &revoke,
        &["Revoke the runtime token", "telephony", "refused"],
    )
    .await;
    assert_eq!(
        app.start_call_as(&token, &hook.agent, "+12125550104")
            .await
            .status(),
        StatusCode::CREATED
    );
    admin.submit(&revoke, &revoke, &[]).await;
    assert_eq!(
        app.start_call_as(&token, &hook.agent, "+12125550105")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Sign another admin out everywhere.
    let res = admin
        .submit(
            "/admin/admins",
            "/admin/admins",
            &[("email", "second@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let second = Console::new(&app);
    let res = second
        .post(
            "/login",
            &[("email", "second@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = admin.page("/admin/admins").await;
    let at = page
        .find(r#"aria-label="Sign out second@example.com everywhere""#)
        .unwrap();
    let action_at = page[..at].rfind("action=\"").unwrap() + 8;
    let sign_out = page[action_at..action_at + page[action_at..].find('"').unwrap()].to_owned();
    assert!(sign_out.ends_with("/sessions/delete"), "{sign_out}");
    leads_to_confirmation(&page, &sign_out);
    confirmation(
        admin,
        &sign_out,
        &sign_out,
        &["second@example.com", "out everywhere?", "1 session ends"],
    )
    .await;
    assert_eq!(second.get("/admin/agents").await.status(), StatusCode::OK);
    admin.submit(&sign_out, &sign_out, &[]).await;
    let res = second.get("/admin/agents").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(location(&res).starts_with("/login"));
}

#[tokio::test]
async fn call_ids_on_the_deliveries_page_lead_to_their_calls() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let s = app.setup(300);
    // Data first, then its call: the delivery was used by the call.
    let body = json!({ "agentId": s.agent_id, "phoneNumber": "+12125550123" });
    assert_eq!(app.ingest(&s, &body).await.status(), StatusCode::ACCEPTED);
    let used = app.start_call_json(&s, "+12125550123").await;
    // A call that fell back, then its data: the delivery arrived late.
    let fell_back = app.start_call_json(&s, "+12125550177").await;
    assert_eq!(fell_back["source"], "fallback");
    let body = json!({ "agentId": s.agent_id, "phoneNumber": "+12125550177" });
    assert_eq!(app.ingest(&s, &body).await.status(), StatusCode::ACCEPTED);

    let overview = admin.page(&format!("/admin/agents/{}", s.agent_id)).await;
    let at = overview.find("/deliveries\"").expect("a Deliveries link");
    let deliveries = &overview[overview[..at].rfind("href=\"").unwrap() + 6..at + 11];
    let page = admin.page(deliveries).await;
    for call in [&used, &fell_back] {
        let link = format!(
            r#"<a href="/admin/agents/{}/calls/{}">"#,
            s.agent_id,
            call["callId"].as_str().unwrap()
        );
        assert!(page.contains(&link), "no {link} in {page}");
        let href = &link[9..link.len() - 2];
        assert!(
            admin
                .page(href)
                .await
                .contains("Before the call was answered")
        );
    }
    assert!(page.contains("arrived after call"));
}

/// Every time on a page: readable UTC, the exact time in `datetime`, and on hover.
fn times_are_readable(path: &str, page: &str) -> usize {
    let mut seen = 0;
    for tag in page.split("<time").skip(1) {
        let open = &tag[..tag.find('>').unwrap()];
        let text = &tag[tag.find('>').unwrap() + 1..tag.find("</time>").unwrap()];
        if text.is_empty() && open.is_empty() {
            // The Test step's template for entries its script adds.
            continue;
        }
        if !open.contains("datetime=") {
            // The refusals by minute: clock minutes in a column that says UTC.
            assert!(
                text.len() == 5 && text.as_bytes()[2] == b':',
                "{path}: <time{open}>{text}"
            );
            continue;
        }
        seen += 1;
        let iso = &open[open.find(r#"datetime=""#).unwrap() + 10..];
        let iso = &iso[..iso.find('"').unwrap()];
        assert!(iso.len() >= 20 && iso.ends_with('Z'), "{path}: {iso}");
        assert!(text.ends_with(" UTC"), "{path}: {text:?}");
        let day: String = text.chars().take_while(char::is_ascii_digit).collect();
        assert_eq!(
            day.parse::<u32>().ok(),
            iso[8..10].parse().ok(),
            "{path}: {text}"
        );
        assert!(
            text.contains(&format!(" {}, {} UTC", &iso[..4], &iso[11..19])),
            "{path}: {text}"
        );
        assert!(
            open.contains(&format!(r#"title="{text}""#)),
            "{path}: {open}"
        );
    }
    // Nothing shows a raw RFC 3339 time.
    let bytes = page.as_bytes();
    for i in 0..bytes.len().saturating_sub(11) {
        let raw = bytes[i..i + 4].iter().all(u8::is_ascii_digit)
            && bytes[i + 4] == b'-'
            && bytes[i + 7] == b'-'
            && bytes[i + 10] == b'T';
        if raw {
            let before = &page[i.saturating_sub(10)..i];
            assert!(
                before.ends_with("datetime=\""),
                "{path}: raw time at {}",
                &page[i.saturating_sub(40)..(i + 40).min(page.len())]
            );
        }
    }
    seen
}

#[tokio::test]
async fn times_are_readable_utc_with_the_exact_time_in_the_page() {
    let app = spawn_app().await;
    let hook = Webhook::new(&app).await;
    let admin = &hook.admin;
    let agent = hook.agent.clone();
    admin.publish(&agent).await;
    hook.send(1).await;
    let overview = format!("/admin/agents/{agent}");
    admin
        .submit(
            &overview,
            &format!("{overview}/tokens"),
            &[("name", "runtime")],
        )
        .await;
    let page = admin.page(&overview).await;
    let token: String = page[page.find("pcrt_").unwrap()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let call = app.start_call_as(&token, &agent, "+12125551001").await;
    assert_eq!(call.status(), StatusCode::CREATED);
    let call: Value = call.json().await.unwrap();
    // A key in its grace period (a time it stops), and a change in the draft (when it was
    // saved).
    admin
        .submit(
            &hook.path("configure"),
            &hook.path("key"),
            &[("grace_secs", "3600")],
        )
        .await;
    hook.declare("customer_name", "string", "").await;

    for (path, at_least) in [
        (hook.path("deliveries"), 1),
        (hook.path("test"), 3),
        (hook.path("configure"), 2),
        (format!("/admin/agents/{agent}/calls"), 1),
        (
            format!(
                "/admin/agents/{agent}/calls/{}",
                call["callId"].as_str().unwrap()
            ),
            1,
        ),
        (format!("/admin/agents/{agent}/versions"), 3),
        (overview.clone(), 2),
        ("/admin/admins".to_owned(), 1),
    ] {
        let page = admin.page(&path).await;
        let seen = times_are_readable(&path, &page);
        assert!(
            seen >= at_least,
            "{path}: {seen} times, expected {at_least}"
        );
    }
}

#[tokio::test]
async fn a_call_page_gives_each_wait_its_own_figure_and_says_what_it_counts() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let s = app.setup(300);
    let read = |id: String| {
        let (app, token) = (&app, s.token.clone());
        async move {
            app.client
                .get(format!("{}/api/v1/calls/{id}", app.address))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };

    // No data: the webhook's wait ran out, then the call went on.
    let call = app.start_call_json(&s, "+12125550123").await;
    let call = read(call["callId"].as_str().unwrap().to_owned()).await;
    let (total, step) = (
        call["waitedMs"].as_i64().unwrap(),
        call["precall"][0]["waitedMs"].as_i64().unwrap(),
    );
    let page = admin
        .page(&format!(
            "/admin/agents/{}/calls/{}",
            s.agent_id,
            call["callId"].as_str().unwrap()
        ))
        .await;
    assert!(
        page.contains(&format!(r#"id="call-waited">{total} ms<"#)),
        "{page}"
    );
    assert!(page.contains("from the call's start until its variables were ready"));
    assert!(
        page.contains(&format!(
            "fell back to defaults after waiting {step} ms for it"
        )),
        "{page}"
    );
    // One "Waited", the call's: the webhook's figure is said as what it is.
    assert_eq!(page.matches("Waited").count(), 1, "{page}");

    // Data that arrives while the call waits: when it arrived.
    let call = {
        let (app, s2) = (&app, s.clone());
        let started = app.start_call(&s2, "+12125550124");
        let sent = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let body = json!({ "agentId": s2.agent_id, "phoneNumber": "+12125550124" });
            app.ingest(&s2, &body).await.status()
        };
        let (call, sent) = tokio::join!(started, sent);
        assert_eq!(sent, StatusCode::ACCEPTED);
        call.json::<Value>().await.unwrap()
    };
    assert_eq!(call["precall"][0]["outcome"], "arrived", "{call}");
    let step = call["precall"][0]["waitedMs"].as_i64().unwrap();
    let page = admin
        .page(&format!(
            "/admin/agents/{}/calls/{}",
            s.agent_id,
            call["callId"].as_str().unwrap()
        ))
        .await;
    assert!(
        page.contains(&format!("arrived {step} ms after the call started")),
        "{page}"
    );
    assert_eq!(page.matches("Waited").count(), 1);
}

#[tokio::test]
async fn the_front_page_leads_to_the_console_and_to_sign_in() {
    let app = spawn_app().await;
    let home = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        home.contains("setup link"),
        "before the first admin: {home}"
    );
    assert!(home.contains(r#"href="/login""#) && home.contains(r#"href="/admin""#));
    Console::set_up(&app).await;
    let home = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains(r#"<a class="button primary" href="/admin">Open the console</a>"#));
    assert!(home.contains(r#"href="/login">Sign in</a>"#));
}

/// Where U+202E shows in a page's text (or an input's value) outside an element that
/// isolates it: a `<bdi>`, or any element with a `dir` attribute. A few characters of
/// context for each. The `<title>` cannot hold markup: there each name must be isolated
/// with FSI … PDI of its own, inside the isolate around the whole title.
fn unisolated(html: &str) -> Vec<String> {
    const VOID: [&str; 13] = [
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr",
    ];
    let context = |at: usize| {
        let mut from = at.saturating_sub(80);
        while !html.is_char_boundary(from) {
            from -= 1;
        }
        let mut to = (at + 40).min(html.len());
        while !html.is_char_boundary(to) {
            to += 1;
        }
        html[from..to].to_owned()
    };
    let mut stack: Vec<(String, bool)> = Vec::new();
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(lt) = html[at..].find('<').map(|i| at + i) {
        let text = &html[at..lt];
        let isolated = stack.iter().any(|(_, iso)| *iso);
        let in_title = stack.last().is_some_and(|(n, _)| n == "title");
        if text.contains(RLO) && !isolated && !in_title {
            found.push(context(at + text.find(RLO).unwrap()));
        }
        if in_title {
            // Between the override and the end of the isolate around it: no more of the title.
            for (i, _) in text.match_indices(RLO) {
                let rest = &text[i..];
                let pdi = |p: &str| rest.find(p).unwrap_or(rest.len());
                let end = pdi("\u{2069}").min(pdi("&#x2069;"));
                if rest[..end].contains(" · ") {
                    found.push(context(at + i));
                }
            }
        }
        if html[lt..].starts_with("<!--") {
            at = lt + html[lt..].find("-->").unwrap() + 3;
            continue;
        }
        let gt = lt + html[lt..].find('>').unwrap();
        let tag = &html[lt + 1..gt];
        at = gt + 1;
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim().to_ascii_lowercase();
            if let Some(i) = stack.iter().rposition(|(n, _)| *n == name) {
                stack.truncate(i);
            }
            continue;
        }
        if tag.starts_with('!') {
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let isolates = name == "bdi" || tag.contains(" dir=\"");
        if name == "input" && tag.contains(RLO) && !isolates && !stack.iter().any(|(_, i)| *i) {
            found.push(context(lt));
        }
        if !VOID.contains(&name.as_str()) && !tag.ends_with('/') {
            stack.push((name, isolates));
        }
    }
    found
}

#[test]
fn the_isolation_check_finds_raw_text_and_accepts_isolated_text() {
    let raw = format!("<p>Hello <b>x{RLO}y</b></p>");
    assert_eq!(unisolated(&raw).len(), 1);
    let input = format!(r#"<p><input name="n" value="x{RLO}"></p>"#);
    assert_eq!(unisolated(&input).len(), 1);
    for ok in [
        format!("<p>Hello <bdi>x{RLO}y</bdi> and on</p>"),
        format!(r#"<td dir="auto"><code>x{RLO}</code></td>"#),
        format!(r#"<input name="n" value="x{RLO}" dir="auto">"#),
        format!(
            "<title>\u{2068}\u{2068}x{RLO}\u{2069} · Agent\u{2069} · Precall</title><!-- {RLO} -->"
        ),
    ] {
        assert!(unisolated(&ok).is_empty(), "{ok}");
    }
    let title = format!("<title>\u{2068}Delete x{RLO} · Agent\u{2069} · Precall</title>");
    assert_eq!(unisolated(&title).len(), 1);
}

#[tokio::test]
async fn user_text_with_a_right_to_left_override_is_isolated_on_console_pages() {
    let app = spawn_app().await;
    // The first admin's address, an agent, a webhook, a flow, a variable, a token and a
    // version message, each with the override in it.
    let email = format!("ad{RLO}min@example.com");
    let admin = Console::new(&app);
    let token = app.setup_link.clone().unwrap();
    let token = token.split("token=").nth(1).unwrap();
    let res = admin
        .post(
            "/setup",
            &[
                ("token", token),
                ("email", &email),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let agent = admin.create_agent(&format!("Support {RLO}enil")).await;
    let overview = format!("/admin/agents/{agent}");
    let res = admin
        .submit(
            &format!("{overview}/actions/new"),
            &format!("{overview}/actions"),
            &[("kind", "webhook"), ("name", &format!("CRM {RLO}koobhew"))],
        )
        .await;
    let configure = location(&res);
    let page = admin.page(&configure).await;
    let key: String = page[page.find("pcwk_").unwrap()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let url: String = page[page.find(&format!("{}/webhooks/", app.address)).unwrap()..]
        .chars()
        .take_while(|c| *c != '<')
        .collect();
    let variables = format!("{overview}/variables");
    for (name, ty, default, description) in [
        ("risk_score", "number", "0", format!("Risk {RLO}ksir")),
        (
            "customer_name",
            "string",
            &*format!("there{RLO}"),
            format!("Who {RLO}ohw"),
        ),
    ] {
        let res = admin
            .submit(
                &variables,
                &variables,
                &[
                    ("name", name),
                    ("type", ty),
                    ("default", default),
                    ("description", &description),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
    }
    let res = admin
        .submit(
            &overview,
            &format!("{overview}/flows"),
            &[("name", &format!("Main {RLO}wolf"))],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let flow = location(&res);
    admin
        .submit(
            &overview,
            &format!("{overview}/tokens"),
            &[("name", &format!("tel{RLO}ynohp"))],
        )
        .await;
    let draft = format!("{overview}/draft");
    let res = admin
        .submit(
            &draft,
            &format!("{overview}/publish"),
            &[("message", &format!("First {RLO}noisrev"))],
        )
        .await;
    assert!(location(&res).ends_with("/versions"));

    // Deliveries with the override in a value, and in what a refusal says.
    for (body, status) in [
        (
            json!({ "agentId": agent, "phoneNumber": "+12125550123",
                    "customer_name": format!("Jane {RLO}eoD"), "note": format!("{RLO}ton") }),
            StatusCode::ACCEPTED,
        ),
        (
            json!({ "agentId": agent, "phoneNumber": "+12125550124",
                    "risk_score": format!("{RLO}hgih") }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        assert_eq!(post_json(&app, &url, &key, &body).await, status);
    }
    // A simulated call whose webhook sends them.
    let simulate = format!("{overview}/simulate");
    let payload = json!({ "agentId": agent, "phoneNumber": "+12125550123",
                          "customer_name": format!("Jane {RLO}eoD"), "note": format!("{RLO}ton") });
    let res = admin
        .submit(
            &simulate,
            &simulate,
            &[
                ("from", "+12125550123"),
                ("payload", &payload.to_string()),
                ("delay_ms", "0"),
                ("answers", ""),
            ],
        )
        .await;
    let call = location(&res);
    assert!(call.contains("/calls/"), "{call}");
    assert!(admin.page(&call).await.contains(&format!("Jane {RLO}eoD")));
    // Another admin.
    admin
        .submit(
            "/admin/admins",
            "/admin/admins",
            &[
                ("email", &format!("se{RLO}cond@example.com")),
                ("password", PASSWORD),
            ],
        )
        .await;

    // A voice platform connection.
    let res = admin
        .submit(
            &format!("{overview}/connections/new"),
            &format!("{overview}/connections"),
            &[
                ("platform", "retell"),
                ("secret", "key_retell_0123456789"),
                ("scheme", ""),
                ("name", &format!("Front {RLO}kseD")),
            ],
        )
        .await;
    let connection = location(&res);
    assert!(connection.ends_with("/configure"), "{connection}");

    let test = configure.replace("/configure", "/test");
    let overview_page = admin.page(&overview).await;
    let revoke_at = overview_page.find("/revoke\"").unwrap();
    let revoke = overview_page
        [overview_page[..revoke_at].rfind("action=\"").unwrap() + 8..revoke_at + 7]
        .to_owned();
    let mut pages = vec![
        "/admin/agents".to_owned(),
        overview.clone(),
        format!("{overview}/actions/new"),
        configure.clone(),
        test.clone(),
        configure.replace("/configure", "/deliveries"),
        format!("{}?grace_secs=0", configure.replace("/configure", "/key")),
        revoke,
        variables.clone(),
        format!("{variables}/customer_name/delete"),
        format!("{overview}/calls"),
        call.clone(),
        simulate.clone(),
        format!("{overview}/versions"),
        draft.clone(),
        flow.clone(),
        "/admin/admins".to_owned(),
        format!("{overview}/connections"),
        connection.clone(),
        connection.replace("/configure", "/test"),
        connection.replace("/configure", "/delete"),
    ];
    let admins = admin.page("/admin/admins").await;
    let at = admins.find("/sessions/delete\"").unwrap();
    pages.push(admins[admins[..at].rfind("action=\"").unwrap() + 8..at + 16].to_owned());
    let mut problems = Vec::new();
    for path in &pages {
        let page = admin.page(path).await;
        assert!(page.contains(RLO), "{path} shows none of the text");
        for raw in unisolated(&page) {
            problems.push(format!("{path}: …{raw}…"));
        }
        // A title cannot hold markup: its names sit between U+2068 and U+2069 (first
        // strong isolate, pop directional isolate), so an override stops before "· Precall".
        let title = &page[page.find("<title>").unwrap() + 7..page.find("</title>").unwrap()];
        if !(title.starts_with("&#x2068;") && title.ends_with("&#x2069; · Precall")) {
            problems.push(format!("{path}: title {title:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "not isolated:\n{}",
        problems.join("\n")
    );
}

/// Screenshots of a page at 1280 and 390 px wide; how far it scrolls sideways at 390.
async fn both_widths(b: &Browser, name: &str) -> i64 {
    b.client.set_window_size(1280, 900).await.unwrap();
    full_shot(b, &format!("{name}-1280"), 1280).await;
    b.client.set_window_size(390, 844).await.unwrap();
    let wider = overflow(b).await;
    if wider > 0 {
        // The outermost elements past the window's edge, to say what to fix.
        let past = b
            .client
            .execute(
                "return [...document.querySelectorAll('body *')]
                    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                    .filter(e => !e.parentElement.closest('*') ||
                                 e.parentElement.getBoundingClientRect().right <= window.innerWidth + 1)
                    .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));",
                vec![],
            )
            .await
            .unwrap();
        eprintln!("{name}: {wider} px wider than the window: {past}");
    }
    full_shot(b, &format!("{name}-390"), 390).await;
    b.client.set_window_size(1280, 900).await.unwrap();
    wider
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn without_javascript_the_test_step_lists_requests_and_regenerating_a_key_asks_first() {
    let app = spawn_app().await;
    let b = Browser::start_without_scripts(1280, 900).await;
    let agent_id = new_webhook(&b, &app, "Quiet line", "CRM webhook").await;
    let url = b.text("#webhook-url").await;
    let key = b.text("#api-key").await;
    let configure = b.client.current_url().await.unwrap().to_string();
    let body = json!({ "agentId": agent_id, "phoneNumber": "+12125550123",
                       "customer_name": "Jane Doe", "priority": "high" });
    assert_eq!(
        post_json(&app, &url, &key, &body).await,
        StatusCode::ACCEPTED
    );

    b.click(".wizard > .actions a.primary").await;
    let live = b.text("#live").await;
    assert!(
        live.starts_with("As of ") && live.ends_with("Refresh"),
        "{live:?}"
    );
    assert!(live.contains(" UTC"), "no script made it local: {live:?}");
    let source = b.client.source().await.unwrap();
    assert!(!source.contains("Connecting") && !source.contains("Listening"));
    assert_eq!(b.text("#viewer > li .verdict").await, "Accepted");
    assert!(b.text("#viewer > li").await.contains("+12125550123"));
    assert_eq!(unlabelled(&b).await, json!([]), "controls without a label");
    assert!(both_widths(&b, "polish-01-test-without-scripts").await <= 0);

    // Save as variables: the new fields are ticked; saved, they show as such.
    b.click("#viewer .fields-form button[type=submit]").await;
    let notice = b.text(".flash.ok").await;
    assert!(
        notice.contains("Saved to the draft as variables: customer_name, priority"),
        "{notice}"
    );
    assert!(b.text("#viewer > li").await.contains("saved as variable"));
    assert!(both_widths(&b, "polish-02-test-saved").await <= 0);

    // Regenerate key asks first, on a page of its own.
    b.client.goto(&configure).await.unwrap();
    b.click("form[action$='/key'] button").await;
    // The confirmation is a page of its own: wait for it, not the Configure page's heading.
    b.until("the confirmation page", |s| s.contains("confirm-form"))
        .await;
    let question = b.text("h1").await;
    assert_eq!(question, "Make a new API key for CRM webhook?");
    assert!(b.text(".confirm").await.contains("stops working at once"));
    assert!(both_widths(&b, "polish-03-confirm-regenerate").await <= 0);
    assert_eq!(
        post_json(&app, &url, &key, &body).await,
        StatusCode::ACCEPTED
    );
    b.click(".confirm-form button.danger").await;
    let new_key = b.text("#api-key").await;
    assert_ne!(new_key, key);
    assert_eq!(
        post_json(&app, &url, &key, &body).await,
        StatusCode::UNAUTHORIZED
    );
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn with_javascript_the_viewer_goes_on_from_the_listed_requests_without_repeating_them() {
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    let agent_id = new_webhook(&b, &app, "Live line", "CRM webhook").await;
    let url = b.text("#webhook-url").await;
    let key = b.text("#api-key").await;
    let test = b
        .client
        .current_url()
        .await
        .unwrap()
        .to_string()
        .replace("/configure", "/test");
    // customer_name is already a variable of the draft.
    b.client
        .goto(&format!(
            "{}/admin/agents/{agent_id}/variables",
            app.address
        ))
        .await
        .unwrap();
    b.fill("#v-name", "customer_name").await;
    b.click("#variable-form button[type=submit]").await;
    b.until("the declared variable", |s| {
        s.contains("<code>customer_name</code>")
    })
    .await;
    for phone in ["+12125550101", "+12125550102"] {
        let body = json!({ "agentId": agent_id, "phoneNumber": phone, "priority": "low" });
        assert_eq!(
            post_json(&app, &url, &key, &body).await,
            StatusCode::ACCEPTED
        );
    }

    b.client.goto(&test).await.unwrap();
    b.until("the viewer to listen", |s| s.contains(">Listening<"))
        .await;
    let ids = "return [...document.querySelectorAll('#viewer > li')].map(li => li.dataset.id);";
    // Give the stream time to send anything it would repeat.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let listed = b.client.execute(ids, vec![]).await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let body = json!({ "agentId": agent_id, "phoneNumber": "+12125550103",
                       "customer_name": format!("Jane {RLO}eoD"), "priority": "high" });
    assert_eq!(
        post_json(&app, &url, &key, &body).await,
        StatusCode::ACCEPTED
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = b.client.execute(ids, vec![]).await.unwrap();
        if listed.as_array().unwrap().len() >= 3 {
            break listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new entry: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let listed: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed.windows(2).all(|w| w[0] > w[1]),
        "newest first, once each: {listed:?}"
    );
    let newest = b.text("#viewer > li:first-child").await;
    assert!(newest.contains("+12125550103"), "{newest}");

    // Its fields as the server shows them: the declared one saved, the new one ticked.
    let boxes = b
        .client
        .execute(
            "return [...document.querySelectorAll('#viewer > li:first-child input[type=checkbox]')]
                .map(i => [i.closest('tr').querySelector('code').textContent, i.checked, i.disabled]);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        boxes,
        json!([["customer_name", true, true], ["priority", true, false]])
    );
    assert!(newest.contains("saved as variable"));
    assert_eq!(unlabelled(&b).await, json!([]), "controls without a label");
    // User text in entries the script made is isolated too.
    let raw = b
        .client
        .execute(
            "const walk = document.createTreeWalker(document.getElementById('viewer'), NodeFilter.SHOW_TEXT);
             const raw = [];
             while (walk.nextNode()) {
               const n = walk.currentNode;
               if (n.data.includes('\\u202E') && !n.parentElement.closest('bdi, [dir]')) raw.push(n.data);
             }
             return raw;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(raw, json!([]));
    // Times are local and relative, with the exact time on hover.
    let time = b.css("#viewer > li:first-child time").await;
    let text = time.text().await.unwrap();
    let title = time.attr("title").await.unwrap().unwrap_or_default();
    assert!(
        text.ends_with(" ago)") || text.ends_with("(now)"),
        "{text:?}"
    );
    assert!(title.ends_with(" UTC"), "{title:?}");
    let server = b.text("#viewer > li:last-child time").await;
    assert!(
        !server.ends_with(" UTC"),
        "the server's times are made local too: {server:?}"
    );
    assert!(both_widths(&b, "polish-04-test-live").await <= 0);

    // With scripts the confirmation is a dialog, and accepting it does it at once.
    b.client
        .goto(&test.replace("/test", "/configure"))
        .await
        .unwrap();
    b.click("form[action$='/key'] button").await;
    let asked = b.client.get_alert_text().await.unwrap();
    assert!(asked.starts_with("Make a new key?"), "{asked}");
    b.client.accept_alert().await.unwrap();
    let new_key = b.text("#api-key").await;
    assert_ne!(new_key, key);
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn console_pages_fit_a_390_px_window() {
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    let agent_id = new_webhook(
        &b,
        &app,
        "Support line for the whole of the north-east region",
        "CRM webhook",
    )
    .await;
    let url = b.text("#webhook-url").await;
    let key = b.text("#api-key").await;
    let configure = b.client.current_url().await.unwrap().to_string();
    let base = format!("{}/admin/agents/{agent_id}", app.address);
    // A few variables with long descriptions and defaults.
    b.client.goto(&format!("{base}/variables")).await.unwrap();
    for (name, default, description) in [
        (
            "customer_name",
            "there",
            "The caller's full name as the CRM knows it, used in the greeting and when the call is transferred to an agent who should know who is calling",
        ),
        (
            "account_manager",
            "the front desk",
            "Who looks after this customer's account: the Transfer Call block sends enterprise callers straight to them, skipping every question",
        ),
        (
            "crm_record_url",
            "https://crm.example.com/records/0000000000000000000000000000000000",
            "https://crm.example.com/records/a-very-long-identifier-without-any-space-in-it-at-all-0123456789",
        ),
    ] {
        b.fill("#v-name", name).await;
        b.fill("#v-default", default).await;
        b.fill("#v-description", description).await;
        b.click("#variable-form button[type=submit]").await;
        b.until("the variable", |s| {
            s.contains(&format!("<code>{name}</code>"))
        })
        .await;
    }
    let body = json!({ "agentId": agent_id, "phoneNumber": "+12125550123",
                       "customer_name": "Jane Doe", "crm_record_url": "https://crm.example.com/records/a-very-long-identifier-without-any-space-in-it-at-all-0123456789" });
    assert_eq!(
        post_json(&app, &url, &key, &body).await,
        StatusCode::ACCEPTED
    );
    publish(&b, &app, &agent_id).await;
    // A call, so that the history and a call's page have something to show.
    b.client.goto(&format!("{base}/simulate")).await.unwrap();
    b.fill("#delay_ms", "50").await;
    b.click("#simulate button[type=submit]").await;
    b.css("#call-source").await;
    let call = b.client.current_url().await.unwrap().to_string();
    // A runtime token, for the overview's table and its Revoke confirmation.
    b.client.goto(&base).await.unwrap();
    b.fill(
        "#token-name",
        "telephony platform in the Dublin data centre",
    )
    .await;
    b.click("form[action$='/tokens'] button[type=submit]").await;
    b.css("#new-token").await;
    let revoke = b
        .css("form[action$='/revoke']")
        .await
        .attr("action")
        .await
        .unwrap()
        .unwrap();

    // A voice platform's connection, for its list and its wizard's steps.
    let connection = app.cli_json(&[
        "connection",
        "create",
        "--agent",
        &agent_id,
        "--platform",
        "vapi",
        "--secret",
        "a-vapi-server-secret-for-the-north-east-line",
        "--default-agent",
        "asst_0123456789abcdef0123456789abcdef01234567",
    ])["id"]
        .as_i64()
        .unwrap();

    let mut wide = Vec::new();
    for (name, path) in [
        ("home", format!("{}/", app.address)),
        ("connections", format!("{base}/connections")),
        ("connection-setup", format!("{base}/connections/new")),
        (
            "connection-configure",
            format!("{base}/connections/{connection}/configure"),
        ),
        (
            "connection-test",
            format!("{base}/connections/{connection}/test"),
        ),
        ("agents", format!("{}/admin/agents", app.address)),
        ("agent", base.clone()),
        ("variables", format!("{base}/variables")),
        (
            "variable-delete",
            format!("{base}/variables/crm_record_url/delete"),
        ),
        ("configure", configure.clone()),
        (
            "regenerate-key",
            format!(
                "{}?grace_secs=3600",
                configure.replace("/configure", "/key")
            ),
        ),
        ("test", configure.replace("/configure", "/test")),
        ("deliveries", configure.replace("/configure", "/deliveries")),
        ("calls", format!("{base}/calls")),
        ("call", call.clone()),
        ("simulate", format!("{base}/simulate")),
        ("versions", format!("{base}/versions")),
        ("draft", format!("{base}/draft")),
        ("admins", format!("{}/admin/admins", app.address)),
        ("token-revoke", format!("{}{revoke}", app.address)),
        (
            "sign-out",
            format!("{}/admin/admins/1/sessions/delete", app.address),
        ),
    ] {
        b.client.goto(&path).await.unwrap();
        b.css("main").await;
        let by = both_widths(&b, &format!("polish-narrow-{name}")).await;
        if by > 0 {
            wide.push(format!("{name} ({path}) by {by} px"));
        }
    }
    assert!(wide.is_empty(), "wider than 390 px: {wide:?}");
    b.client.clone().close().await.unwrap();
}
