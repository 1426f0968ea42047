//! The console through HTTP: accounts, CSRF, refusals of anonymous requests, the webhook
//! wizard and its one-time key, variables.

use std::time::Duration;

use reqwest::redirect::Policy;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

pub const EMAIL: &str = "admin@example.com";
pub const PASSWORD: &str = "correct horse battery";

/// A browser-like client: keeps cookies, does not follow redirects (tests look at them).
pub struct Console {
    pub client: Client,
    pub base: String,
}

/// The value of the first `name="csrf"` field of a page.
pub fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a CSRF field on the page");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

impl Console {
    pub fn new(app: &TestApp) -> Self {
        Self {
            client: Client::builder()
                .cookie_store(true)
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: app.address.clone(),
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn page(&self, path: &str) -> String {
        let res = self.get(path).await;
        assert_eq!(res.status(), 200, "GET {path}");
        res.text().await.unwrap()
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Posts a form with the CSRF token of the page at `from`.
    pub async fn submit(&self, from: &str, path: &str, form: &[(&str, &str)]) -> Response {
        let csrf = csrf_of(&self.page(from).await);
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend_from_slice(form);
        self.post(path, &fields).await
    }

    /// Creates the first admin through the setup link; the client is then signed in.
    pub async fn set_up(app: &TestApp) -> Self {
        let console = Self::new(app);
        let link = app
            .setup_link
            .clone()
            .expect("a fresh server has a setup link");
        let token = link.split("token=").nth(1).unwrap().to_owned();
        let res = console
            .post(
                "/setup",
                &[
                    ("token", &token),
                    ("email", EMAIL),
                    ("password", PASSWORD),
                    ("confirm", PASSWORD),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        console
    }

    /// Creates an agent through the console; returns its public id.
    pub async fn create_agent(&self, name: &str) -> String {
        let res = self
            .submit(
                "/admin/agents",
                "/admin/agents",
                &[("name", name), ("region", "US")],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let to = location(&res);
        to.trim_start_matches("/admin/agents/").to_owned()
    }

    /// Publishes the agent's draft from its Publish page; panics with the page if refused.
    pub async fn publish(&self, agent: &str) {
        let page = format!("/admin/agents/{agent}/draft");
        let res = self
            .submit(
                &page,
                &format!("/admin/agents/{agent}/publish"),
                &[("message", "")],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let to = location(&res);
        assert!(
            to.ends_with("/versions"),
            "not published: {}",
            self.page(&to).await
        );
    }

    /// Adds a webhook action named "CRM" through the wizard's Setup step; returns the
    /// Configure step's path, to which Setup leads.
    pub async fn create_webhook(&self, agent: &str) -> String {
        let res = self
            .submit(
                &format!("/admin/agents/{agent}/actions/new"),
                &format!("/admin/agents/{agent}/actions"),
                &[("kind", "webhook"), ("name", "CRM")],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        location(&res)
    }
}

pub fn location(res: &Response) -> String {
    res.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_setup_link_creates_the_first_admin_once() {
    let app = spawn_app().await;
    let link = app.setup_link.clone().unwrap();
    let console = Console::new(&app);
    let path = link.trim_start_matches(&app.address).to_owned();
    assert!(console.page(&path).await.contains("Create the first admin"));
    let wrong = console.get("/setup?token=pcsetup_guess").await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);

    let signed_in = Console::set_up(&app).await;
    assert!(signed_in.page("/admin/agents").await.contains(EMAIL));

    // The link is spent: it now leads to sign-in, and posting it again creates nothing.
    let again = Console::new(&app);
    assert_eq!(location(&again.get(&path).await), "/login");
    let token = link.split("token=").nth(1).unwrap();
    let res = again
        .post(
            "/setup",
            &[
                ("token", token),
                ("email", "second@example.com"),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn every_admin_page_and_action_refuses_an_anonymous_request() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    let anonymous = Console::new(&app);
    let pages = [
        "/admin".to_owned(),
        "/admin/agents".to_owned(),
        "/admin/admins".to_owned(),
        format!("/admin/agents/{agent}"),
        format!("/admin/agents/{agent}/variables"),
        format!("/admin/agents/{agent}/flows/1"),
        format!("/admin/agents/{agent}/actions/new"),
        format!("/admin/agents/{agent}/actions/1/configure"),
        format!("/admin/agents/{agent}/actions/1/test"),
        format!("/admin/agents/{agent}/actions/1/events"),
        format!("/admin/agents/{agent}/actions/1/deliveries"),
    ];
    for path in &pages {
        let res = anonymous.get(path).await;
        if path == "/admin" {
            // A plain redirect to the agents list, which itself refuses.
            continue;
        }
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "GET {path}");
        assert!(location(&res).starts_with("/login?next="), "GET {path}");
    }
    let actions = [
        "/admin/agents".to_owned(),
        "/admin/admins".to_owned(),
        "/admin/sessions/others/delete".to_owned(),
        "/admin/admins/1/sessions/delete".to_owned(),
        "/logout".to_owned(),
        format!("/admin/agents/{agent}/rename"),
        format!("/admin/agents/{agent}/delete"),
        format!("/admin/agents/{agent}/tokens"),
        format!("/admin/agents/{agent}/flows"),
        format!("/admin/agents/{agent}/flows/1/first"),
        format!("/admin/agents/{agent}/flows/1/blocks"),
        format!("/admin/agents/{agent}/actions"),
        format!("/admin/agents/{agent}/actions/1/settings"),
        format!("/admin/agents/{agent}/actions/1/key"),
        format!("/admin/agents/{agent}/actions/1/sample"),
        format!("/admin/agents/{agent}/actions/1/variables"),
        format!("/admin/agents/{agent}/actions/1/delete"),
        format!("/admin/agents/{agent}/variables"),
    ];
    for path in &actions {
        // A form is sent to sign in again; anything else is refused outright.
        let res = anonymous.post(path, &[("name", "x")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "POST {path}");
        assert!(location(&res).starts_with("/login"), "POST {path}");
        let res = anonymous
            .client
            .post(format!("{}{path}", anonymous.base))
            .json(&json!({ "name": "x" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "POST {path}");
    }
    // Nothing changed.
    assert!(
        admin
            .page(&format!("/admin/agents/{agent}"))
            .await
            .contains("Line")
    );
}

#[tokio::test]
async fn a_form_without_a_valid_csrf_token_changes_nothing() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Original").await;
    let path = format!("/admin/agents/{agent}/rename");
    for csrf in [None, Some("forged"), Some("")] {
        let mut form = vec![("name", "Renamed")];
        if let Some(c) = csrf {
            form.push(("csrf", c));
        }
        let res = admin.post(&path, &form).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "csrf {csrf:?}");
    }
    let page = admin.page(&format!("/admin/agents/{agent}")).await;
    assert!(page.contains("Original") && !page.contains("Renamed"));

    // With the page's token it works.
    let res = admin
        .submit(
            &format!("/admin/agents/{agent}"),
            &path,
            &[("name", "Renamed")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        admin
            .page(&format!("/admin/agents/{agent}"))
            .await
            .contains("Renamed")
    );
}

#[tokio::test]
async fn signing_in_checks_the_password_and_slows_repeated_failures() {
    let app = spawn_app().await;
    Console::set_up(&app).await;
    let visitor = Console::new(&app);
    let res = visitor
        .post(
            "/login",
            &[("email", EMAIL), ("password", "wrong password!")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = visitor
        .post(
            "/login",
            &[("email", "nobody@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // A sign-in form posted from another site is refused before the password is looked at.
    let res = visitor
        .client
        .post(format!("{}/login", visitor.base))
        .header("sec-fetch-site", "cross-site")
        .form(&[("email", EMAIL), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get("set-cookie").is_none());

    let mut throttled = false;
    for _ in 0..8 {
        let res = visitor
            .post(
                "/login",
                &[("email", EMAIL), ("password", "wrong password!")],
            )
            .await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers().contains_key("retry-after"));
            throttled = true;
            break;
        }
    }
    assert!(throttled, "repeated failures are slowed down");
    // While throttled, even the right password waits.
    let res = visitor
        .post("/login", &[("email", EMAIL), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another account from elsewhere is not affected; the session cookie is HttpOnly and SameSite.
    let other = Console::new(&app);
    let res = other
        .post(
            "/login",
            &[("email", "nobody@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address is throttled too"
    );
}

#[tokio::test]
async fn session_cookies_are_http_only_and_same_site_and_sign_out_ends_them() {
    let app = spawn_app().await;
    let console = Console::new(&app);
    let token = app
        .setup_link
        .clone()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap()
        .to_owned();
    let res = console
        .post(
            "/setup",
            &[
                ("token", &token),
                ("email", EMAIL),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ],
        )
        .await;
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains(PASSWORD));

    let res = console.submit("/admin/agents", "/logout", &[]).await;
    assert_eq!(location(&res), "/login");
    assert_eq!(
        console.get("/admin/agents").await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn console_pages_are_never_cached_nor_framed() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    for path in ["/login".to_owned(), format!("/admin/agents/{agent}")] {
        let res = admin.get(&path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(res.headers()["cache-control"], "no-store", "{path}");
        assert_eq!(res.headers()["x-frame-options"], "DENY", "{path}");
    }
}

#[tokio::test]
async fn renaming_or_deleting_what_does_not_exist_is_a_404() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    let from = format!("/admin/agents/{agent}");
    for path in [
        format!("/admin/agents/{agent}/flows/999999/rename"),
        format!("/admin/agents/{agent}/flows/999999/delete"),
    ] {
        let res = admin.submit(&from, &path, &[("name", "Other")]).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // A variable or token that is not there: the page says so instead of "deleted".
    let res = admin
        .submit(
            &from,
            &format!("/admin/agents/{agent}/variables/nothing/delete"),
            &[],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = admin
        .page(&format!("/admin/agents/{agent}/variables"))
        .await;
    assert!(page.contains("no variable"), "{page}");
}

#[tokio::test]
async fn the_live_viewer_stops_when_its_session_signs_out() {
    use futures_util::StreamExt;
    let app = spawn_app().await;
    let hook = Webhook::new(&app).await;
    let (admin, agent, action) = (&hook.admin, &hook.agent, &hook.action);
    let res = admin
        .get(&format!("/admin/agents/{agent}/actions/{action}/events"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("listening"));

    let res = admin.submit("/admin/agents", "/logout", &[]).await;
    assert_eq!(location(&res), "/login");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream went on after sign-out");
}

/// The events of an SSE body: (event name, data) for each complete block that has a name.
pub(crate) fn sse_events(text: &str) -> Vec<(String, Value)> {
    let complete = text.rfind("\n\n").map_or("", |end| &text[..end]);
    complete
        .split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            Some((
                field("event:")?,
                serde_json::from_str(&field("data:")?).unwrap(),
            ))
        })
        .collect()
}

/// Reads an SSE body until `done` holds for the events so far (or 10 s pass).
pub(crate) async fn read_events(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    done: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    use futures_util::StreamExt;
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if done(&sse_events(&text)) {
                break;
            }
        }
    })
    .await;
    let events = sse_events(&text);
    assert!(
        read.is_ok(),
        "the stream did not bring what was awaited: {events:?}"
    );
    events
}

/// A signed-in console with an agent and a webhook made through the wizard: the agent's
/// id, the action's id, and a sender that posts a webhook for the number `+1212555` and
/// four digits (1000 + i), expecting its 202.
pub(crate) struct Webhook {
    pub admin: Console,
    pub agent: String,
    pub action: String,
    pub url: String,
    pub key: String,
    client: Client,
}

impl Webhook {
    pub async fn new(app: &TestApp) -> Self {
        let admin = Console::set_up(app).await;
        let agent = admin.create_agent("Line").await;
        let configure = admin.create_webhook(&agent).await;
        let action: String = configure
            .split("/actions/")
            .nth(1)
            .unwrap()
            .chars()
            .take_while(|c: &char| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let page = admin.page(&configure).await;
        let key: String = page[page.find("pcwk_").unwrap()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let url_at = page.find(&format!("{}/webhooks/", app.address)).unwrap();
        let url: String = page[url_at..]
            .chars()
            .take_while(|c| *c != '<' && *c != '\'' && *c != '"')
            .collect();
        Self {
            admin,
            agent,
            action,
            url,
            key,
            client: app.client.clone(),
        }
    }

    pub async fn send(&self, i: u32) {
        let res = self
            .client
            .post(&self.url)
            .header("X-Authorization", &self.key)
            .json(&json!({ "agentId": self.agent, "phoneNumber": format!("+1212555{:04}", 1000 + i) }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
}

/// A writer that keeps acknowledged webhooks in its journal for ten minutes before it
/// commits them, unless something must read them or write beside them.
fn commit_rarely(settings: &mut precall::config::Settings) {
    settings.pacing = precall::store::writer::Pacing {
        commit_every: Duration::from_secs(600),
        commit_idle: Duration::from_secs(600),
    };
}

#[tokio::test]
async fn webhooks_awaiting_their_commit_leave_room_for_admin_changes_and_show_as_delivered() {
    let app = spawn_app_with(commit_rarely).await;
    let hook = Webhook::new(&app).await;
    for i in 0..3 {
        hook.send(i).await;
    }
    // The writer holds the three in an open transaction: an admin change still goes in
    // (it would wait for the database's lock, and fail after five seconds, otherwise).
    let second = hook.admin.create_agent("Second line").await;
    let agents = hook.admin.page("/admin/agents").await;
    assert!(agents.contains("Second line") && agents.contains(&second));
    hook.send(3).await;

    // Every acknowledged webhook is on the Deliveries page and in the Test viewer's backlog.
    let page = hook
        .admin
        .page(&format!(
            "/admin/agents/{}/actions/{}/deliveries",
            hook.agent, hook.action
        ))
        .await;
    for i in 0..4 {
        assert!(page.contains(&format!("+1212555{}", 1000 + i)), "{i}");
    }
    hook.send(4).await;
    let res = hook
        .admin
        .client
        .get(format!(
            "{}/admin/agents/{}/actions/{}/events",
            hook.admin.base, hook.agent, hook.action
        ))
        .send()
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    let events = read_events(&mut body, |e| {
        e.iter().filter(|(name, _)| name == "delivery").count() >= 5
    })
    .await;
    let phones: Vec<&str> = events
        .iter()
        .filter_map(|(_, d)| d["phoneNumber"].as_str())
        .collect();
    assert_eq!(
        phones,
        (1000..1005)
            .map(|i| format!("+1212555{i}"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_viewer_behind_a_flood_gets_the_newest_deliveries_and_a_count_of_the_rest() {
    let app = spawn_app().await;
    let hook = Webhook::new(&app).await;
    let (admin, agent, action) = (&hook.admin, &hook.agent, &hook.action);
    let send = |i: u32| hook.send(i);
    // 250 requests, one after another, while no viewer is open.
    for i in 0..250 {
        send(i).await;
    }

    // A browser reconnecting after having seen none of them (`Last-Event-ID: 0`).
    let res = admin
        .client
        .get(format!(
            "{}/admin/agents/{agent}/actions/{action}/events",
            admin.base
        ))
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.bytes_stream();
    let events = read_events(&mut body, |e| {
        e.iter().filter(|(name, _)| name == "delivery").count() >= 100
    })
    .await;
    // First how many are left out, then the newest 100, oldest first.
    assert_eq!(events[0].0, "skipped", "{events:?}");
    assert_eq!(events[0].1["count"], 150);
    let phones: Vec<&str> = events[1..]
        .iter()
        .map(|(name, d)| {
            assert_eq!(name, "delivery");
            d["phoneNumber"].as_str().unwrap()
        })
        .collect();
    let newest: Vec<String> = (150..250)
        .map(|i| format!("+1212555{:04}", 1000 + i))
        .collect();
    assert_eq!(phones, newest);

    // Once caught up, a new request comes on its own, with nothing skipped.
    send(250).await;
    let more = read_events(&mut body, |e| !e.is_empty()).await;
    assert_eq!(more.len(), 1, "{more:?}");
    assert_eq!(more[0].0, "delivery");
    assert_eq!(more[0].1["phoneNumber"], "+12125551250");
}

#[tokio::test]
async fn the_deliveries_page_pages_back_through_every_request() {
    let app = spawn_app().await;
    let hook = Webhook::new(&app).await;
    for i in 0..205 {
        hook.send(i).await;
    }
    let path = format!(
        "/admin/agents/{}/actions/{}/deliveries",
        hook.agent, hook.action
    );
    let first = hook.admin.page(&path).await;
    // The newest 200, newest first, and a link to the rest.
    assert!(first.contains("+12125551204") && first.contains("+12125551005"));
    assert!(!first.contains("+12125551004"));
    assert!(first.find("+12125551204").unwrap() < first.find("+12125551005").unwrap());
    let at = first.find("?before=").expect("a link to older deliveries");
    let before: String = first[at + "?before=".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(first.contains(r#"rel="next">Older deliveries"#));

    let older = hook.admin.page(&format!("{path}?before={before}")).await;
    for i in 1000..1005 {
        assert!(
            older.contains(&format!("+1212555{i}")),
            "{i} on the second page"
        );
    }
    assert!(!older.contains("+12125551005") && !older.contains("Older deliveries"));
    assert!(older.contains("Show the latest"));

    let bad = hook.admin.get(&format!("{path}?before=yesterday")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_wizard_shows_the_api_key_once_and_it_works() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    let setup = admin
        .page(&format!("/admin/agents/{agent}/actions/new"))
        .await;
    assert!(setup.contains("Custom Webhook") && setup.contains("Setup"));

    let configure = admin.create_webhook(&agent).await;
    let page = admin.page(&configure).await;
    let key_at = page
        .find("pcwk_")
        .expect("the key is shown right after it is made");
    let key: String = page[key_at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert_eq!(key.len(), 48);
    assert!(page.contains("will not be shown again") || page.contains("shown only now"));
    assert!(page.contains("Copy API Key") && page.contains("Copy cURL"));
    let url_at = page.find(&format!("{}/webhooks/", app.address)).unwrap();
    let url: String = page[url_at..]
        .chars()
        .take_while(|c| *c != '<' && *c != '\'')
        .collect();
    assert!(page.contains(&agent), "the cURL's body has the agent's id");

    // The key works from outside.
    let res = app
        .client
        .post(&url)
        .header("X-Authorization", &key)
        .json(&json!({"agentId": agent, "phoneNumber": "+12125551234", "plan": "gold"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    // Never again in a page.
    let again = admin.page(&configure).await;
    assert!(!again.contains(&key), "the key was shown twice");
    assert!(
        again.contains(&key[key.len() - 4..]),
        "its last characters identify it"
    );
    assert!(again.contains("Regenerate key"));
    let deliveries = admin
        .page(&configure.replace("/configure", "/deliveries"))
        .await;
    assert!(deliveries.contains("+12125551234") && !deliveries.contains(&key));
    let test = admin.page(&configure.replace("/configure", "/test")).await;
    assert!(!test.contains(&key));
}

#[tokio::test]
async fn advanced_settings_are_validated_on_the_server() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    let configure = admin.create_webhook(&agent).await;
    let settings = configure.replace("/configure", "/settings");
    for (wait, ttl) in [
        ("11", "10"),
        ("-1", "10"),
        ("abc", "10"),
        ("2", "0"),
        ("2", "99999"),
    ] {
        let res = admin
            .submit(
                &configure,
                &settings,
                &[
                    ("name", "CRM"),
                    ("wait_seconds", wait),
                    ("ttl_minutes", ttl),
                    ("enabled", "on"),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let page = admin.page(&configure).await;
        assert!(page.contains("flash bad"), "wait {wait} ttl {ttl} accepted");
    }
    let res = admin
        .submit(
            &configure,
            &settings,
            &[
                ("name", "CRM"),
                ("wait_seconds", "3.5"),
                ("ttl_minutes", "30"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = admin.page(&configure).await;
    assert!(
        page.contains("Settings saved")
            && page.contains(r#"value="3.5""#)
            && page.contains(r#"value="30""#)
    );
}

#[tokio::test]
async fn set_as_first_flow_moves_the_flag_and_the_add_control_follows_it() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    let overview = admin.page(&format!("/admin/agents/{agent}")).await;
    let first_link = overview.split("/flows/").nth(1).unwrap();
    let first: String = first_link
        .chars()
        .take_while(|c: &char| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();

    let res = admin
        .submit(
            &format!("/admin/agents/{agent}"),
            &format!("/admin/agents/{agent}/flows"),
            &[("name", "Verification")],
        )
        .await;
    let second_path = location(&res);
    let second_path = second_path.split('?').next().unwrap().to_owned();
    let page = admin.page(&second_path).await;
    assert!(page.contains("Set as First Flow"));
    assert!(
        !page.contains("Add a pre-call action"),
        "only above the First Flow"
    );
    let first_page = admin
        .page(&format!("/admin/agents/{agent}/flows/{first}"))
        .await;
    assert!(first_page.contains("Add a pre-call action"));

    let res = admin
        .submit(&second_path, &format!("{second_path}/first"), &[])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = admin.page(&second_path).await;
    assert!(page.contains("Add a pre-call action") && !page.contains(">Set as First Flow<"));
    let old = admin
        .page(&format!("/admin/agents/{agent}/flows/{first}"))
        .await;
    assert!(old.contains("Set as First Flow") && !old.contains("Add a pre-call action"));
}

#[tokio::test]
async fn sample_requests_can_be_saved_as_variables_and_appear_on_the_variables_page() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    let test = admin
        .create_webhook(&agent)
        .await
        .replace("/configure", "/test");
    let res = admin
        .submit(&test, &test.replace("/test", "/sample"), &[])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let deliveries = admin.page(&test.replace("/test", "/deliveries")).await;
    assert!(deliveries.contains("+12125550123") && deliveries.contains("customer_name"));

    let res = admin
        .submit(
            &test,
            &test.replace("/test", "/variables"),
            &[
                ("field", "customer_name:string"),
                ("field", "priority:string"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let variables = admin
        .page(&format!("/admin/agents/{agent}/variables"))
        .await;
    assert!(variables.contains("customer_name") && variables.contains("priority"));
    assert!(variables.contains("CRM"), "the source names the webhook");
}

#[tokio::test]
async fn declaring_a_variable_validates_its_name_type_and_default() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    let path = format!("/admin/agents/{agent}/variables");
    for (name, ty, default) in [
        ("1bad", "string", ""),
        ("risk", "number", "high"),
        ("call_id", "string", ""),
        ("ok", "colour", ""),
    ] {
        let res = admin
            .submit(
                &path,
                &path,
                &[("name", name), ("type", ty), ("default", default)],
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name} {ty} {default:?} accepted"
        );
        let page = res.text().await.unwrap();
        assert!(page.contains("Not saved:"), "{page}");
        // The form comes back as it was typed.
        assert!(page.contains(&format!(r#"value="{name}""#)), "{page}");
    }
    admin
        .submit(
            &path,
            &path,
            &[("name", "risk_score"), ("type", "number"), ("default", "0")],
        )
        .await;
    let page = admin.page(&path).await;
    assert!(page.contains("Saved risk_score") && page.contains("<code>risk_score</code>"));
}

#[tokio::test]
async fn a_throttled_account_refuses_even_the_right_password_until_its_wait_is_over() {
    let app = spawn_app().await;
    Console::set_up(&app).await;
    let visitor = Console::new(&app);
    let mut refusals = 0;
    let throttled = loop {
        let res = visitor
            .post(
                "/login",
                &[("email", EMAIL), ("password", "wrong password!")],
            )
            .await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            break res;
        }
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        refusals += 1;
        assert!(refusals <= 10, "repeated failures are throttled");
    };
    let wait: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    // The right password now is refused with the same clear message, and signs nobody in.
    let res = visitor
        .post("/login", &[("email", EMAIL), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get("set-cookie").is_none());
    let page = res.text().await.unwrap();
    assert!(page.contains("Too many failed attempts: wait"), "{page}");
    assert_eq!(
        visitor.get("/admin/agents").await.status(),
        StatusCode::SEE_OTHER
    );

    // Once the wait is over, the right password signs in.
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 500)).await;
    let res = visitor
        .post("/login", &[("email", EMAIL), ("password", PASSWORD)])
        .await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "signed in after the wait"
    );
    assert_eq!(visitor.get("/admin/agents").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_admin_session_ends_when_its_time_to_live_runs_out() {
    let app = spawn_app_with(|s| s.session_ttl = Duration::from_secs(2)).await;
    Console::set_up(&app).await;
    let res = Console::new(&app)
        .post("/login", &[("email", EMAIL), ("password", PASSWORD)])
        .await;
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("Max-Age=2"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    // Sent as a browser that kept the cookie would send it, past its expiry too.
    let with_cookie = || async {
        Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap()
            .get(format!("{}/admin/agents", app.address))
            .header("cookie", &session)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(with_cookie().await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let res = with_cookie().await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&res).starts_with("/login?next="),
        "{}",
        location(&res)
    );
}

/// Signs `email` in on a new client.
async fn sign_in(app: &TestApp, email: &str, password: &str) -> Console {
    let console = Console::new(app);
    let res = console
        .post("/login", &[("email", email), ("password", password)])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{email} signs in");
    console
}

/// The path of the form that signs `email` out everywhere, from the Admins page.
fn sign_out_form_of(page: &str, email: &str) -> String {
    let row = &page[page
        .find(&format!("<bdi>{email}</bdi>"))
        .expect("the admin's row")..];
    let at = row
        .find("action=\"/admin/admins/")
        .expect("a sign-out form");
    let rest = &row[at + "action=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn an_admin_can_end_their_other_sessions_and_anyones_sessions() {
    let app = spawn_app().await;
    let here = Console::set_up(&app).await;
    let elsewhere = sign_in(&app, EMAIL, PASSWORD).await;
    let other_email = "second@example.com";
    let res = here
        .submit(
            "/admin/admins",
            "/admin/admins",
            &[("email", other_email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let colleague = sign_in(&app, other_email, PASSWORD).await;
    let page = here.page("/admin/admins").await;
    assert!(page.contains("2 sessions"), "this admin is signed in twice");

    // Without the CSRF token, nothing ends.
    let res = here.post("/admin/sessions/others/delete", &[]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        elsewhere.get("/admin/agents").await.status(),
        StatusCode::OK
    );

    let res = here
        .submit("/admin/admins", "/admin/sessions/others/delete", &[])
        .await;
    assert_eq!(location(&res), "/admin/admins");
    assert!(
        here.page("/admin/admins")
            .await
            .contains("Signed out of 1 other session.")
    );
    let res = elsewhere.get("/admin/agents").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&res).starts_with("/login"),
        "the other session is sent to sign in"
    );
    assert_eq!(
        colleague.get("/admin/agents").await.status(),
        StatusCode::OK
    );

    // Another admin, signed out everywhere: their next page and their next form lead to
    // sign-in, and change nothing.
    let form = sign_out_form_of(&here.page("/admin/admins").await, other_email);
    let res = here.submit("/admin/admins", &form, &[]).await;
    assert_eq!(location(&res), "/admin/admins");
    assert!(
        here.page("/admin/admins")
            .await
            .contains("second@example.com is signed out of 1 session.")
    );
    let res = colleague.get("/admin/agents").await;
    assert!(location(&res).starts_with("/login"), "{}", location(&res));
    let res = colleague
        .post("/admin/agents", &[("name", "Sneaky"), ("region", "US")])
        .await;
    assert!(location(&res).starts_with("/login"), "{}", location(&res));
    assert!(!here.page("/admin/agents").await.contains("Sneaky"));

    // Signing oneself out everywhere ends this session too.
    let form = sign_out_form_of(&here.page("/admin/admins").await, EMAIL);
    let res = here.submit("/admin/admins", &form, &[]).await;
    assert_eq!(location(&res), "/login");
    assert!(location(&here.get("/admin/agents").await).starts_with("/login"));
}
