//! End to end in a real headless Chromium (Debian's `chromium` and `chromium-driver`):
//! first-run setup, an agent and a flow, Set as First Flow, ➕ → Webhook → Setup →
//! Configure → Test, requests from outside appearing live, Save as variables.
//!
//! Run with `cargo test -- --include-ignored` once the browser is installed:
//! `apt-get install -y chromium chromium-driver`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver on a free port, in a process group of its own, which is killed on drop:
/// the Chromium it started goes with it even when a test fails before closing its session
/// (killing chromedriver alone leaves its Chromium running).
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (apt-get install chromium-driver)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, port }
}

pub struct Browser {
    pub client: Client,
    _driver: Driver,
    shots: PathBuf,
}

impl Browser {
    pub async fn start(width: u32, height: u32) -> Self {
        Self::start_with(width, height, true).await
    }

    /// A browser that runs no script: the console as it works without JavaScript.
    pub async fn start_without_scripts(width: u32, height: u32) -> Self {
        Self::start_with(width, height, false).await
    }

    async fn start_with(width: u32, height: u32, scripts: bool) -> Self {
        let driver = start_driver();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    format!("--window-size={width},{height}"),
                ],
                "prefs": {
                    "profile.managed_default_content_settings.javascript": if scripts { 1 } else { 2 },
                },
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a Chromium session");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            client,
            _driver: driver,
            shots,
        }
    }

    pub async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("no {selector}: {e}"))
    }

    pub async fn fill(&self, selector: &str, text: &str) {
        let field = self.css(selector).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, selector: &str) {
        self.css(selector).await.click().await.unwrap();
    }

    /// The text of the first element matching `selector`. An element replaced between being
    /// found and being read (the page navigated, or a script redrew it) is looked up again.
    pub async fn text(&self, selector: &str) -> String {
        let mut tries = 0;
        loop {
            match self.css(selector).await.text().await {
                Ok(text) => return text,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                        && tries < 5 =>
                {
                    tries += 1;
                }
                Err(e) => panic!("the text of {selector}: {e}"),
            }
        }
    }

    /// Scrolls the first element matching `selector` to the middle of the window.
    pub async fn scroll_to(&self, selector: &str) {
        self.client
            .execute(
                "document.querySelector(arguments[0]).scrollIntoView({block: 'center'});",
                vec![selector.into()],
            )
            .await
            .unwrap();
    }

    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Waits until `check` holds for the page's source.
    pub async fn until(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let source = self.client.source().await.unwrap();
            if check(&source) {
                return source;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub(crate) async fn sign_up(b: &Browser, app: &TestApp) {
    b.client
        .goto(app.setup_link.as_deref().unwrap())
        .await
        .unwrap();
    b.fill("#email", "admin@example.com").await;
    b.fill("#password", "correct horse battery").await;
    b.fill("#confirm", "correct horse battery").await;
    b.shot("01-setup").await;
    b.click("button[type=submit]").await;
    b.css("#agent-name").await;
}

/// Signs up, makes an agent named `agent` and a webhook named `webhook` through the
/// wizard's Setup step; returns the agent's id, with the browser on the Configure step.
pub(crate) async fn new_webhook(b: &Browser, app: &TestApp, agent: &str, webhook: &str) -> String {
    sign_up(b, app).await;
    b.fill("#agent-name", agent).await;
    b.click("form[action='/admin/agents'] button[type=submit]")
        .await;
    let agent_id = b.text("#agent-id").await;
    b.client
        .goto(&format!(
            "{}/admin/agents/{agent_id}/actions/new",
            app.address
        ))
        .await
        .unwrap();
    b.fill("#name", webhook).await;
    b.click("form button.primary").await;
    b.css("#webhook-url").await;
    agent_id
}

/// Publishes the agent's draft from its Publish page, as an admin would.
pub(crate) async fn publish(b: &Browser, app: &TestApp, agent_id: &str) {
    b.client
        .goto(&format!("{}/admin/agents/{agent_id}/draft", app.address))
        .await
        .unwrap();
    b.click("form[action$='/publish'] button[type=submit]")
        .await;
    b.until("the published notice", |s| {
        s.contains("Published as version")
    })
    .await;
}

/// Runs the copied cURL command (the browser's text, as an admin would paste it). Async:
/// the server under test runs on this test's runtime.
async fn run_curl(command: &str) -> (u16, Value) {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{command} -s -w '\\n%{{http_code}}'"))
        .output()
        .await
        .expect("sh and curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.trim().rsplit_once('\n').expect("a status line");
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn an_admin_sets_up_a_webhook_and_watches_requests_arrive_live() {
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    sign_up(&b, &app).await;

    // An agent, a second flow, which becomes the First Flow.
    b.fill("#agent-name", "Support line").await;
    b.shot("02-agents").await;
    b.click("form[action='/admin/agents'] button[type=submit]")
        .await;
    let agent_id = b.text("#agent-id").await;
    assert_eq!(agent_id.len(), 20);
    b.fill("#flow-name", "Main line").await;
    b.click("form[action$='/flows'] button[type=submit]").await;
    b.css(".editor").await;
    list_view(&b).await;
    let source = b.client.source().await.unwrap();
    assert!(source.contains("Set as First Flow") && !source.contains("Add a pre-call action"));
    b.click("form[action$='/first'] button").await;
    b.until("the First Flow badge", |s| {
        s.contains("badge first") && s.contains("Add a pre-call action")
    })
    .await;
    b.shot("03-flow-editor").await;

    // ➕ → Webhook → Setup, from the list view.
    list_view(&b).await;
    b.click("details.add-precall summary").await;
    b.click("details.add-precall .menu a").await;
    b.css(".steps li.current").await;
    assert!(b.text(".steps li.current").await.contains("Setup"));
    b.fill("#name", "CRM webhook").await;
    b.shot("04-wizard-setup").await;
    b.click("form button.primary").await;

    // Configure: the URL, the key (once) and a ready-to-run cURL.
    let url = b.text("#webhook-url").await;
    let key = b.text("#api-key").await;
    let curl = b.text("#curl").await;
    assert!(url.starts_with(&app.address) && url.contains("/webhooks/"));
    assert!(key.starts_with("pcwk_"));
    assert!(curl.contains(&url) && curl.contains(&key) && curl.contains(&agent_id));
    assert!(b.text(".steps li.current").await.contains("Configure"));
    b.click("details.advanced summary").await;
    b.shot("05-wizard-configure").await;
    b.click(".wizard > .actions a.primary").await;

    // Test: the viewer listens, requests from outside appear with their verdicts.
    b.until("the viewer to listen", |s| s.contains(">Listening<"))
        .await;
    assert!(b.text(".steps li.current").await.contains("Test"));
    let (status, body) = run_curl(&curl).await;
    assert_eq!(status, 202, "{body}");
    let bad = app
        .client
        .post(&url)
        .header("X-Authorization", &key)
        .json(
            &json!({"agentId": agent_id, "phoneNumber": "not a number", "customer": {"name": "x"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let source = b
        .until("both requests in the viewer", |s| {
            // The page's <template> holds one more `class="delivery"`, with no verdict.
            s.contains(">Accepted<") && s.contains(">Refused<")
        })
        .await;
    let accepted = source.find(">Accepted<").expect("an accepted entry");
    let refused = source.find(">Refused<").expect("a refused entry");
    assert!(refused < accepted, "newest first");
    assert!(
        source.contains("+12125550123"),
        "the normalised phone is shown"
    );
    assert!(source.contains("customer_name") && source.contains("Jane Doe"));
    assert!(
        source.contains("customer is an object"),
        "the reasons are shown"
    );
    assert!(!source.contains(&key), "the key is not on the Test page");
    b.shot("06-wizard-test").await;

    // Save two fields as variables (new fields start ticked: untick the third); they are on
    // the variables page.
    b.click(".delivery input[value='issue_type:string']").await;
    b.click(".delivery .fields-form button").await;
    b.until("the saved notice", |s| {
        s.contains("Saved to the draft as variables")
    })
    .await;
    b.client
        .goto(&format!(
            "{}/admin/agents/{agent_id}/variables",
            app.address
        ))
        .await
        .unwrap();
    let variables = b
        .until("the variables", |s| {
            s.contains("<code>customer_name</code>")
        })
        .await;
    assert!(variables.contains("<code>priority</code>") && variables.contains("CRM webhook"));
    assert!(
        !variables.contains("<code>issue_type</code>"),
        "unticked, not saved"
    );
    b.shot("07-variables").await;

    // The Configure page no longer shows the key.
    b.client.back().await.unwrap();
    b.client
        .goto(&format!("{}/admin/agents/{agent_id}", app.address))
        .await
        .unwrap();
    b.click("a[href$='/configure']").await;
    let configure = b
        .until("the configure page", |s| s.contains("Regenerate key"))
        .await;
    assert!(!configure.contains(&key));

    // Require signed requests: the secret once, and a cURL that signs, which works pasted
    // into a shell (with the key, no longer on the page, from the environment).
    b.click("#signing-required").await;
    b.click("#signing button[type=submit]").await;
    let secret = b.text("#signing-secret").await;
    assert!(secret.starts_with("whsec_"));
    let script = b.text("#curl").await;
    assert!(script.contains(&secret) && script.contains("webhook-signature"));
    assert!(b.text("#python-sample").await.contains(&secret));
    b.scroll_to("#signing").await;
    b.shot("07b-configure-signed").await;
    let (status, body) = run_curl(&format!("export PRECALL_API_KEY='{key}'\n{script}")).await;
    assert_eq!(status, 202, "{body}");
    // Unsigned, the first cURL is refused now.
    let (status, body) = run_curl(&curl).await;
    assert_eq!(status, 401, "{body}");
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn console_pages_are_usable_in_a_narrow_window_and_by_keyboard() {
    let app = spawn_app().await;
    let b = Browser::start(390, 844).await;
    sign_up(&b, &app).await;
    b.fill("#agent-name", "Narrow").await;
    b.click("form[action='/admin/agents'] button[type=submit]")
        .await;
    b.css("#agent-id").await;
    // Nothing wider than the window.
    let overflow = b
        .client
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap_or(0) <= 0,
        "the page scrolls sideways by {overflow}"
    );
    b.shot("08-narrow-agent").await;

    // Every form control has a label, and Tab reaches the skip link first.
    let unlabelled = b
        .client
        .execute(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                             && !e.getAttribute('aria-labelledby')).map(e => e.name);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, json!([]), "controls without a label");
    b.css("body").await.send_keys("\u{E004}").await.unwrap();
    let focused = b
        .client
        .execute("return document.activeElement.textContent;", vec![])
        .await
        .unwrap();
    assert_eq!(focused, json!("Skip to content"));
    b.client.clone().close().await.unwrap();
}

/// A screenshot of the whole page at `width`: the window grows to the page's height for it.
pub(crate) async fn full_shot(b: &Browser, name: &str, width: u32) {
    let height = b
        .client
        .execute("return document.documentElement.scrollHeight;", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap_or(900) as u32;
    b.client.set_window_size(width, height + 140).await.unwrap();
    b.shot(name).await;
    b.client.set_window_size(width, 900).await.unwrap();
}

/// How far the page scrolls sideways (0 when nothing is wider than the window).
pub(crate) async fn overflow(b: &Browser) -> i64 {
    b.client
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await
        .unwrap()
        .as_i64()
        .unwrap_or(0)
}

/// Names of the page's form controls that have no label.
pub(crate) async fn unlabelled(b: &Browser) -> Value {
    b.client
        .execute(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                             && !e.getAttribute('aria-labelledby')).map(e => e.name);",
            vec![],
        )
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn an_admin_simulates_calls_with_early_and_late_webhook_data_and_reads_their_history() {
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    // A webhook with the default time wait before fallback: 2000 ms, published.
    let agent_id = new_webhook(&b, &app, "Support line", "CRM").await;
    publish(&b, &app, &agent_id).await;
    b.client
        .goto(&format!("{}/admin/agents/{agent_id}", app.address))
        .await
        .unwrap();

    // The payload lands 100 ms after the call starts: the call waited for it.
    b.click("nav.tabs a[href$='/simulate']").await;
    let payload = b.css("#payload").await.prop("value").await.unwrap();
    let payload = payload.unwrap_or_default();
    assert!(payload.contains(&agent_id) && payload.contains("+12125550123"));
    assert_eq!(unlabelled(&b).await, json!([]), "controls without a label");
    b.fill("#delay_ms", "100").await;
    full_shot(&b, "09-simulator", 1280).await;
    b.click("#simulate button[type=submit]").await;
    assert_eq!(b.text("#call-source").await, "webhook");
    let early = b.client.current_url().await.unwrap().to_string();
    let source = b.client.source().await.unwrap();
    assert!(source.contains(">arrived<") && source.contains("Jane Doe"));
    let waited: i64 = b
        .text("#call-waited")
        .await
        .trim_end_matches(" ms")
        .parse()
        .unwrap();
    assert!((80..2000).contains(&waited), "waited {waited} ms");
    full_shot(&b, "10-call-webhook", 1280).await;

    // Sent 2500 ms after the start, beyond the 2000 ms wait: the call fell back, and the
    // data is shown as late.
    b.click("nav.tabs a[href$='/simulate']").await;
    b.fill("#from", "+12125550177").await;
    b.fill(
        "#payload",
        &json!({"agentId": agent_id, "phoneNumber": "+12125550177", "priority": "high"})
            .to_string(),
    )
    .await;
    b.fill("#delay_ms", "2500").await;
    b.click("#simulate button[type=submit]").await;
    b.css("#late").await;
    assert_eq!(b.text("#call-source").await, "fallback");
    let late = b.client.current_url().await.unwrap().to_string();
    assert!(b.text("#late").await.contains("priority"));
    full_shot(&b, "11-call-late", 1280).await;

    // Both in the history, newest first; filtered by source, one each.
    b.click("nav.tabs a[href$='/calls']").await;
    let id = |url: &str| url.rsplit('/').next().unwrap().to_owned();
    let (early_id, late_id) = (id(&early), id(&late));
    let history = b
        .until("both calls", |s| {
            s.contains(&early_id) && s.contains(&late_id)
        })
        .await;
    assert!(
        history.find(&late_id) < history.find(&early_id),
        "newest first"
    );
    full_shot(&b, "12-call-history", 1280).await;
    b.css("#f-source")
        .await
        .select_by_value("webhook")
        .await
        .unwrap();
    b.click(".filters button[type=submit]").await;
    let filtered = b
        .until("the filtered list", |s| !s.contains(&late_id))
        .await;
    assert!(filtered.contains(&early_id));
    assert!(
        b.client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("source=webhook")
    );

    // Readable in a narrow window: nothing wider than it.
    b.client.set_window_size(390, 844).await.unwrap();
    for (url, shot) in [
        (
            format!("{}/admin/agents/{agent_id}/calls", app.address),
            "13-narrow-call-history",
        ),
        (late.clone(), "14-narrow-call"),
        (
            format!("{}/admin/agents/{agent_id}/simulate", app.address),
            "15-narrow-simulator",
        ),
    ] {
        b.client.goto(&url).await.unwrap();
        b.css("nav.tabs").await;
        assert!(overflow(&b).await <= 0, "{url} scrolls sideways");
        full_shot(&b, shot, 390).await;
    }
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn an_admin_adds_a_precall_filter_from_the_plus_menu_and_a_simulated_call_takes_it() {
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    sign_up(&b, &app).await;
    // The fraud detection example's agent: its First Flow, a Verification flow, a CRM
    // webhook and a risk check.
    let demo = app.cli_json(&["demo", "--wait-ms", "500"]);
    let agent_id = demo["examples"][3]["agentId"].as_str().unwrap().to_owned();
    app.declare(&agent_id, "priority", "string", None);
    b.client
        .goto(&format!("{}/admin/agents/{agent_id}", app.address))
        .await
        .unwrap();
    b.click("nav.tabs a[href*='/flows/']").await;
    list_view(&b).await;
    b.click(".add-precall summary").await;
    full_shot(&b, "16-plus-menu", 1280).await;
    b.click(".add-precall input[value=filter] ~ button").await;
    b.css("#case0-conditions").await;
    assert_eq!(unlabelled(&b).await, json!([]), "controls without a label");
    b.fill("#r-name", "VIP line").await;
    b.fill("#case0-name", "VIP").await;
    // A typo in the variable is saved to the draft, said, and refuses the publish.
    b.fill("#case0-conditions", "priorty equals high").await;
    b.css("#case0-flow")
        .await
        .select_by_label("Verification")
        .await
        .unwrap();
    b.click("form .actions button.primary").await;
    let notice = b.text(".flash.ok").await;
    assert!(notice.contains("priorty is not a variable"), "{notice}");
    b.client
        .goto(&format!("{}/admin/agents/{agent_id}/draft", app.address))
        .await
        .unwrap();
    b.click("form[action$='/publish'] button[type=submit]")
        .await;
    let error = b.text(".flash.bad").await;
    assert!(error.starts_with("Not published"), "{error}");
    assert!(
        b.text("#problems-title + ul")
            .await
            .contains("priorty is not a variable")
    );
    full_shot(&b, "16b-publish-refused", 1280).await;
    b.click("#problems-title + ul a").await;
    b.fill("#case0-conditions", "priority equals high").await;
    b.click("form .actions button.primary").await;
    assert_eq!(b.text(".flash.ok").await, "Saved to the draft.");
    full_shot(&b, "17-precall-filter", 1280).await;
    publish(&b, &app, &agent_id).await;

    // A simulated call whose webhook says priority high starts in Verification.
    b.client
        .goto(&format!("{}/admin/agents/{agent_id}/simulate", app.address))
        .await
        .unwrap();
    b.fill(
        "#payload",
        &json!({"agentId": agent_id, "phoneNumber": "+12125550123", "priority": "high"})
            .to_string(),
    )
    .await;
    b.fill("#delay_ms", "50").await;
    b.click("#simulate button[type=submit]").await;
    let page = b
        .until("the call's timeline", |s| s.contains("Pre-call Filter"))
        .await;
    assert!(
        page.contains("VIP line") || page.contains("VIP"),
        "the case taken"
    );
    assert!(
        page.contains("For your security"),
        "Verification's Start was said"
    );
    full_shot(&b, "18-call-routed", 1280).await;
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn the_test_viewer_keeps_up_with_a_flood_and_says_how_many_it_left_out() {
    // A flood well past the default rate limits (they have tests of their own).
    let app = spawn_app_with(|s| {
        s.rates.per_action = 0;
        s.rates.per_source = 0;
    })
    .await;
    let b = Browser::start(1280, 900).await;
    let agent_id = new_webhook(&b, &app, "Flood line", "CRM webhook").await;
    let url = b.text("#webhook-url").await;
    let key = b.text("#api-key").await;
    b.click(".wizard > .actions a.primary").await;
    b.until("the viewer to listen", |s| s.contains(">Listening<"))
        .await;

    // Every note of requests left out, as it is shown: on a slow machine the flood goes on
    // after a note, and the 200 entries the viewer keeps can push it out of the list.
    b.client
        .execute(
            r"window.skippedNotes = [];
              new MutationObserver(changes => changes.forEach(c => c.addedNodes.forEach(n => {
                if (n.classList && n.classList.contains('skipped')) window.skippedNotes.push(n.textContent);
              }))).observe(document.getElementById('viewer'), { childList: true });",
            vec![],
        )
        .await
        .unwrap();

    // 3 000 requests from 50 senders at once: many more than the viewer lists per look.
    const SENDERS: u32 = 50;
    const EACH: u32 = 60;
    futures::future::join_all((0..SENDERS).map(|s| {
        let (client, url, key, agent) = (app.client.clone(), url.clone(), key.clone(), agent_id.clone());
        async move {
            for i in 0..EACH {
                let res = client
                    .post(&url)
                    .header("X-Authorization", &key)
                    .json(&json!({ "agentId": agent, "phoneNumber": format!("+1212{:07}", 1_000_000 + s * EACH + i) }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202);
            }
        }
    }))
    .await;
    // The last delivery recorded, as the Deliveries page lists it (newest first).
    let newest = b
        .client
        .execute(
            r"return fetch(document.getElementById('viewer').dataset.all)
                 .then(r => r.text())
                 .then(t => (t.match(/\+1212\d{7}/) || [''])[0]);",
            vec![],
        )
        .await
        .unwrap();
    let newest = newest.as_str().unwrap().to_owned();
    assert!(
        newest.starts_with("+1212"),
        "the Deliveries page lists {newest:?}"
    );

    // The viewer catches up: the newest request on top, a note for those it left out, and
    // no more entries than it keeps.
    let count = "return [document.querySelector('#viewer > li')?.textContent || '',
                         document.querySelectorAll('#viewer > li').length,
                         window.skippedNotes];";
    let deadline = Instant::now() + Duration::from_secs(15);
    let state = loop {
        let state = b.client.execute(count, vec![]).await.unwrap();
        if state[0].as_str().unwrap_or_default().contains(&newest) {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the viewer did not catch up: {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(state[1].as_u64().unwrap() <= 200, "{state}");
    let notes = state[2].as_array().unwrap();
    assert!(!notes.is_empty(), "no note of skipped requests: {state}");
    assert!(
        notes[0]
            .as_str()
            .unwrap()
            .contains("arrived too fast to list here"),
        "{state}"
    );
    let link = b
        .client
        .execute(
            "return document.querySelector('#viewer > li.skipped a').getAttribute('href');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        link,
        json!(format!(
            "/admin/agents/{agent_id}/actions/{}/deliveries",
            action_of(&b).await
        ))
    );
    b.scroll_to("#viewer > li.skipped").await;
    b.shot("12-viewer-flood").await;

    // The note's link leads to every delivery, a page at a time.
    b.click("#viewer > li.skipped a").await;
    b.until("the Deliveries page", |s| s.contains("Older deliveries"))
        .await;
    assert!(
        overflow(&b).await <= 0,
        "the Deliveries page scrolls sideways"
    );
    b.click("a[rel=next]").await;
    let older = b
        .until("the next page", |s| s.contains("Show the latest"))
        .await;
    assert!(older.contains("+1212"), "older deliveries are listed");
    b.shot("13-deliveries-older").await;
    b.client.clone().close().await.unwrap();
}

/// The action id in the current page's address (`…/actions/{id}/…`).
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn an_admin_watches_a_voice_platforms_requests_arrive_live_on_the_connection_test_page() {
    use crate::connect::{
        RETELL_KEY, connect, connected_agent, connection_id, now_ms, post_retell, retell_body,
    };
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    sign_up(&b, &app).await;
    let (agent, _, _) = connected_agent(&app, 0);
    let url = connect(&app, &agent, "retell", RETELL_KEY, &[]);
    let cid = connection_id(&app, &agent, &url);
    b.client
        .goto(&format!(
            "{}/admin/agents/{agent}/connections/{cid}/test",
            app.address
        ))
        .await
        .unwrap();
    b.until("the viewer to listen", |s| {
        s.contains("Live: new requests appear as they arrive.")
    })
    .await;

    // A request signed with the connection's key is answered; a forged one is refused.
    let body = retell_body("+12125550177");
    let sig = precall::connect::verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
    assert_eq!(post_retell(&app, &url, &body, &sig).await.status(), 200);
    let forged = retell_body("+12125550178");
    let wrong =
        precall::connect::verify::retell_signature("key_not_this_one", forged.as_bytes(), now_ms());
    assert_eq!(post_retell(&app, &url, &forged, &wrong).await.status(), 401);
    let source = b
        .until("both requests in the viewer", |s| {
            s.contains(">Answered<") && s.contains(">Refused<")
        })
        .await;
    let answered = source.find(">Answered<").unwrap();
    let refused = source.find(">Refused<").unwrap();
    assert!(refused < answered, "newest first");
    assert!(source.contains("+12125550177"), "the caller is shown");
    assert!(
        source.contains(&format!("/admin/agents/{agent}/calls/")),
        "the answered request links to its call"
    );
    assert!(
        source.contains("id=\"connect-empty\" class=\"empty\" hidden"),
        "the empty note is gone"
    );
    // Each request is listed once, however the stream delivered it.
    assert_eq!(source.matches("class=\"delivery\"").count(), 2, "{source}");
    b.shot("connection-test-live").await;

    // A flood of forged requests (they name no caller: refused before the body is read): the
    // page lists no more than the server keeps (100), the newest on top, and says how many
    // it could not list when some were forgotten unseen.
    let forged = (0..400).map(|i| {
        let body = retell_body(&format!("+1212555{:04}", 1000 + i));
        let sig = precall::connect::verify::retell_signature(
            "key_not_this_one",
            body.as_bytes(),
            now_ms(),
        );
        let (app, url) = (&app, &url);
        async move { post_retell(app, url, &body, &sig).await.status() }
    });
    let statuses = futures::future::join_all(forged).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    // Then one answered request, to know the newest.
    let body = retell_body("+12125551399");
    let sig = precall::connect::verify::retell_signature(RETELL_KEY, body.as_bytes(), now_ms());
    assert_eq!(post_retell(&app, &url, &body, &sig).await.status(), 200);
    let state = "const note = document.getElementById('connect-skipped');
                 return [document.querySelector('#connect-viewer > li.delivery')?.textContent || '',
                         document.querySelectorAll('#connect-viewer > li').length,
                         note.hidden ? [] : [note.textContent]];";
    let deadline = Instant::now() + Duration::from_secs(15);
    let state = loop {
        let state = b.client.execute(state, vec![]).await.unwrap();
        if state[0]
            .as_str()
            .unwrap_or_default()
            .contains("+12125551399")
        {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the viewer did not catch up: {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(state[1].as_u64().unwrap() <= 100, "{state}");
    for note in state[2].as_array().unwrap() {
        assert!(
            note.as_str()
                .unwrap()
                .ends_with("arrived too fast to list here since the page opened."),
            "{state}"
        );
    }
    let source = b.client.source().await.unwrap();
    assert!(
        source.contains("The newest 100 since the server started are kept"),
        "the page says what it keeps"
    );

    // The connection deleted elsewhere: the page stops saying it is live, and says why.
    app.cli(&["connection", "delete", &cid.to_string()]);
    let source = b
        .until("the page to say the connection is gone", |s| {
            s.contains("Not live: this connection was deleted")
        })
        .await;
    assert!(!source.contains("Live: new requests appear as they arrive."));
    b.shot("connection-test-deleted").await;
}

async fn action_of(b: &Browser) -> String {
    let url = b.client.current_url().await.unwrap();
    url.path()
        .split("/actions/")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The flow page's list view (the blocks in order with their forms, without the canvas).
pub(crate) async fn list_view(b: &Browser) {
    let url = b.client.current_url().await.unwrap();
    let mut url = url.clone();
    url.set_query(Some("view=list"));
    b.client.goto(url.as_str()).await.unwrap();
    b.css(".editor").await;
}
