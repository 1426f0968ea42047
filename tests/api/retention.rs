//! What is kept and for how long: requests without a valid key are counted rather than
//! recorded, and deliveries and calls are swept once past their retention.

use std::future::Future;
use std::time::{Duration, Instant};

use precall::http::rate::Rates;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::Console;
use crate::helpers::{Setup, TestApp, example_payload, spawn_app, spawn_app_with};

/// Polls `probe` until it returns `Some`, for at most `deadline`.
async fn until<T, F: Future<Output = Option<T>>>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(started.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A signed-in console with an agent and a webhook made through the wizard.
struct Hook {
    admin: Console,
    agent: String,
    action: String,
    url: String,
    key: String,
}

impl Hook {
    async fn new(app: &TestApp) -> Self {
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
        }
    }

    fn path(&self, page: &str) -> String {
        format!(
            "/admin/agents/{}/actions/{}/{page}",
            self.agent, self.action
        )
    }

    fn setup(&self) -> Setup {
        Setup {
            agent_id: self.agent.clone(),
            url: self.url.clone(),
            key: self.key.clone(),
            token: String::new(),
        }
    }
}

/// How many requests were answered what, for the refusals without a valid key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Refused {
    wrong_key: usize,
    no_key: usize,
    rate_limited: usize,
}

impl Refused {
    fn total(&self) -> usize {
        self.wrong_key + self.no_key + self.rate_limited
    }

    /// The console's sentence for these counts (each under 1 000).
    fn sentence(&self) -> String {
        let parts: Vec<String> = [
            (self.wrong_key, "wrong key"),
            (self.no_key, "no key"),
            (self.rate_limited, "rate limited"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        format!(
            "{} refused without a valid key — {}",
            self.total(),
            parts.join(", ")
        )
    }
}

/// Sends `n` requests, four in five with a wrong key and the rest with none, 16 at a
/// time; tallies what each was answered (401 or 429).
async fn flood(app: &TestApp, url: &str, agent: &str, n: usize) -> Refused {
    use futures::StreamExt;
    let body = example_payload(agent);
    let answers: Vec<(bool, StatusCode)> = futures::stream::iter(0..n)
        .map(|i| {
            let mut req = app.client.post(url).json(&body);
            let keyed = i % 5 != 0;
            if keyed {
                req = req.header(
                    "X-Authorization",
                    format!("pcwk_wrongwrongwrongwrongwrongwrongwrong{i:05}"),
                );
            }
            async move { (keyed, req.send().await.expect("ingest request").status()) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut r = Refused::default();
    for (keyed, status) in answers {
        match (status, keyed) {
            (StatusCode::UNAUTHORIZED, true) => r.wrong_key += 1,
            (StatusCode::UNAUTHORIZED, false) => r.no_key += 1,
            (StatusCode::TOO_MANY_REQUESTS, _) => r.rate_limited += 1,
            other => panic!("a request without a valid key was answered {other:?}"),
        }
    }
    r
}

/// The sum of the Deliveries page's refusals by minute.
fn by_minute(page: &str) -> Refused {
    let table = &page[page.find("By minute").expect("refusals by minute")..];
    let table = &table[..table.find("</table>").unwrap()];
    let mut sum = Refused::default();
    for row in table.split("<tr><td><time>").skip(1) {
        let cells: Vec<usize> = row
            .split("<td>")
            .skip(1)
            .map(|c| c[..c.find("</td>").unwrap()].parse().unwrap_or(0))
            .collect();
        sum.wrong_key += cells[0];
        sum.no_key += cells[1];
        sum.rate_limited += cells[2];
    }
    sum
}

/// The sentence inside `<span id="refusals">` of a console page.
fn refusals_on(page: &str) -> String {
    let start = r#"<span id="refusals">"#;
    let at = page.find(start).expect("the refusals on the page") + start.len();
    page[at..at + page[at..].find("</span>").unwrap()].replace('\u{202F}', " ")
}

#[tokio::test]
async fn a_wrong_key_flood_adds_no_deliveries_and_is_counted_by_reason_on_the_deliveries_page() {
    // A low rate per address, so that the flood is partly refused for its rate.
    let app = spawn_app_with(|s| {
        s.rates = Rates {
            per_action: 0,
            per_source: 200,
            failed_lookups: 0,
            burst_secs: 1,
        }
    })
    .await;
    let hook = Hook::new(&app).await;
    let setup = hook.setup();
    assert_eq!(
        app.ingest(&setup, &example_payload(&hook.agent))
            .await
            .status(),
        202
    );

    let refused = flood(&app, &hook.url, &hook.agent, 750).await;
    assert!(refused.wrong_key > 0 && refused.no_key > 0, "{refused:?}");
    assert!(refused.rate_limited > 0, "{refused:?}");

    // Only the one request with the key is a delivery.
    let deliveries = app.deliveries(&hook.agent);
    let statuses: Vec<&Value> = deliveries.iter().map(|d| &d["status"]).collect();
    assert_eq!(statuses, [&json!(202)], "one delivery, the accepted one");

    // The page counts each refusal under its reason.
    let expected = refused.sentence();
    let page = until(
        "the counts on the Deliveries page",
        Duration::from_secs(10),
        || {
            let (admin, path, expected) = (&hook.admin, hook.path("deliveries"), &expected);
            async move {
                let page = admin.page(&path).await;
                (refusals_on(&page) == *expected).then_some(page)
            }
        },
    )
    .await;
    // With each minute's detail.
    assert_eq!(by_minute(&page), refused, "{page}");
    // Still right once written to the database (they are written once a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let page = hook.admin.page(&hook.path("deliveries")).await;
    assert_eq!(refusals_on(&page), expected);
}

#[tokio::test]
async fn refusals_without_a_valid_key_show_in_the_test_viewer() {
    let app = spawn_app().await;
    let hook = Hook::new(&app).await;
    let page = hook.admin.page(&hook.path("test")).await;
    assert_eq!(refusals_on(&page), "no request refused without a valid key");

    // The live viewer is told as they change.
    let res = hook.admin.get(&hook.path("events")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.bytes_stream();
    let refused = flood(&app, &hook.url, &hook.agent, 40).await;
    assert_eq!(refused.rate_limited, 0);
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt;
        let mut text = String::new();
        loop {
            let chunk = body.next().await.expect("the stream goes on").unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
            // The last complete `refusals` event so far.
            let last = text
                .split("\n\n")
                .filter(|block| {
                    block.contains("event: refusals") || block.contains("event:refusals")
                })
                .filter_map(|block| {
                    let data = block.lines().find_map(|l| l.strip_prefix("data:"))?;
                    serde_json::from_str::<Value>(data.trim()).ok()
                })
                .last();
            if let Some(e) = last
                && e["total"] == json!(refused.total())
            {
                return e;
            }
        }
    })
    .await
    .expect("a refusals event with every refusal");
    assert_eq!(event["wrongKey"], json!(refused.wrong_key));
    assert_eq!(event["missingKey"], json!(refused.no_key));
    assert_eq!(event["rateLimited"], json!(0));
    assert_eq!(
        event["text"].as_str().unwrap().replace('\u{202F}', " "),
        refused.sentence()
    );

    // The page as served says the same.
    let page = hook.admin.page(&hook.path("test")).await;
    assert_eq!(refusals_on(&page), refused.sentence());
    // Nothing of them is listed as a delivery.
    assert!(app.deliveries(&hook.agent).is_empty());
}

#[tokio::test]
async fn deliveries_older_than_their_retention_are_swept() {
    let app = spawn_app_with(|s| {
        s.delivery_retention = Duration::from_secs(4);
        s.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let setup = app.setup(0);
    let send = |phone: &'static str| {
        let setup = setup.clone();
        let app = &app;
        async move {
            let mut body = example_payload(&setup.agent_id);
            body["phoneNumber"] = json!(phone);
            assert_eq!(app.ingest(&setup, &body).await.status(), 202);
        }
    };
    send("+12125550101").await;
    let bad = app
        .ingest(
            &setup,
            &json!({"agentId": setup.agent_id, "phoneNumber": "nope"}),
        )
        .await;
    assert_eq!(bad.status(), 422);
    assert_eq!(app.deliveries(&setup.agent_id).len(), 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    send("+12125550102").await;

    // The first two go once they are 4 s old (they may go in two sweeps, a few milliseconds
    // apart); the younger one stays.
    let left = until("the old deliveries to go", Duration::from_secs(10), || {
        let left = app.deliveries(&setup.agent_id);
        async move { (left.len() <= 1).then_some(left) }
    })
    .await;
    let phones: Vec<&str> = left
        .iter()
        .map(|d| d["phoneNumber"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(phones, ["+12125550102"], "{left:?}");
}

#[tokio::test]
async fn calls_older_than_their_retention_are_swept_with_what_they_fell_back_on() {
    let app = spawn_app_with(|s| {
        s.call_retention = Duration::from_secs(4);
        s.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let setup = app.setup(0);
    let read = |id: String| {
        let (app, token) = (&app, setup.token.clone());
        async move {
            app.client
                .get(format!("{}/api/v1/calls/{id}", app.address))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Without webhook data, the call falls back on the webhook.
    let old = app.start_call_json(&setup, "+12125550101").await;
    assert_eq!(old["source"], "fallback");
    let old = old["callId"].as_str().unwrap().to_owned();
    assert_eq!(read(old.clone()).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let young = app.start_call_json(&setup, "+12125550102").await;
    let young = young["callId"].as_str().unwrap().to_owned();

    until("the old call to go", Duration::from_secs(10), || {
        let status = read(old.clone());
        async move { (status.await == StatusCode::NOT_FOUND).then_some(()) }
    })
    .await;
    assert_eq!(read(young).await, StatusCode::OK);
}

#[tokio::test]
async fn the_deliveries_page_says_how_long_deliveries_are_kept() {
    let app = spawn_app().await;
    let hook = Hook::new(&app).await;
    let page = hook.admin.page(&hook.path("deliveries")).await;
    assert!(page.contains("kept for 7 days"), "{page}");
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn the_test_viewer_counts_refusals_without_a_valid_key_as_they_come() {
    use crate::browser::{Browser, new_webhook};
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    let agent_id = new_webhook(&b, &app, "Line", "CRM webhook").await;
    let url = b.text("#webhook-url").await;
    b.click(".wizard > .actions a.primary").await;
    b.until("the viewer to listen", |s| s.contains(">Listening<"))
        .await;
    assert_eq!(
        b.text("#refusals").await,
        "no request refused without a valid key"
    );

    let refused = flood(&app, &url, &agent_id, 25).await;
    let expected = refused.sentence();
    until("the live count", Duration::from_secs(10), || {
        let (b, expected) = (&b, &expected);
        async move { (b.text("#refusals").await.replace('\u{202F}', " ") == *expected).then_some(()) }
    })
    .await;
    // They are counted, not listed.
    let listed = b
        .client
        .execute(
            "return document.querySelectorAll('#viewer > li').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(listed, json!(0));
    b.shot("retention-01-test-viewer").await;

    // The Deliveries page says the same, by minute too.
    b.click("a[href$='/deliveries']").await;
    b.css("#refusals").await;
    assert_eq!(b.text("#refusals").await.replace('\u{202F}', " "), expected);
    b.click("details summary").await;
    b.shot("retention-02-deliveries").await;
}
