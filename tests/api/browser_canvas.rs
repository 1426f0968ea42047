//! The flow canvas in a real headless Chromium, with the pointer and the keyboard: the
//! lead-qualification example built from an empty agent, published, called, broken (a
//! cycle, an unknown variable) with the problem shown on its block; a stale draft refused
//! without overwriting; a 200-block flow laid out; and the same flow without JavaScript.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use fantoccini::actions::{
    InputSource, KeyAction, KeyActions, MOUSE_BUTTON_LEFT, MouseActions, PointerAction,
};
use fantoccini::key::Key;
use serde_json::{Value, json};

use crate::browser::{Browser, full_shot, overflow, sign_up, unlabelled};
use crate::helpers::{TestApp, spawn_app};

/// Signs up and makes an agent from the Agents page; returns its id, with the browser on
/// its First Flow's canvas.
async fn new_agent(b: &Browser, app: &TestApp, name: &str) -> String {
    sign_up(b, app).await;
    b.fill("#agent-name", name).await;
    b.click("form[action='/admin/agents'] button[type=submit]")
        .await;
    let agent = b.text("#agent-id").await;
    let page = b.client.source().await.unwrap();
    let marker = format!("/admin/agents/{agent}/flows/");
    let at = page.find(&marker).expect("a link to the First Flow") + marker.len();
    let first = &page[at..at + page[at..].find('"').unwrap()];
    b.client
        .goto(&format!("{}{marker}{first}", app.address))
        .await
        .unwrap();
    ready(b).await;
    agent
}

/// Waits until the canvas has drawn the draft.
async fn ready(b: &Browser) {
    b.css("#flow-canvas.cv-ready").await;
    settled(b).await;
}

/// Waits until every save the canvas queued is done (its status says "Saved" or "Not").
async fn settled(b: &Browser) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = b
            .client
            .execute(
                "return document.getElementById('cv-live').textContent;",
                vec![],
            )
            .await
            .unwrap();
        let s = status.as_str().unwrap_or_default().to_owned();
        if !s.starts_with("Saving") {
            tokio::time::sleep(Duration::from_millis(150)).await;
            return;
        }
        assert!(Instant::now() < deadline, "still saving: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn js(b: &Browser, script: &str) -> Value {
    b.client.execute(script, vec![]).await.unwrap()
}

/// The draft, as the management API gives it (with the page's console token).
async fn draft(b: &Browser, app: &TestApp, agent: &str) -> Value {
    let token = js(
        b,
        "return document.getElementById('flow-canvas').dataset.token;",
    )
    .await;
    let url = format!("{}/api/v1/agents/{agent}/draft", app.address);
    app.get_json(&url, token.as_str().unwrap()).await
}

/// Presses `keys` one after the other on whatever has the focus.
async fn press(b: &Browser, keys: &[Key]) {
    let mut actions = KeyActions::new("keys".into());
    for k in keys {
        actions = actions
            .then(KeyAction::Down {
                value: char::from(*k),
            })
            .then(KeyAction::Up {
                value: char::from(*k),
            });
    }
    b.client.perform_actions(actions).await.unwrap();
}

async fn type_text(b: &Browser, text: &str) {
    let mut actions = KeyActions::new("typing".into());
    for c in text.chars() {
        actions = actions
            .then(KeyAction::Down { value: c })
            .then(KeyAction::Up { value: c });
    }
    b.client.perform_actions(actions).await.unwrap();
}

/// Drags with the mouse from the centre of `from` to the centre of `to`.
async fn drag(b: &Browser, from: &str, to: &str) {
    let a = b.css(from).await;
    let z = b.css(to).await;
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: a,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(100)),
            x: 10.0,
            y: 10.0,
        })
        .then(PointerAction::MoveToElement {
            element: z,
            duration: Some(Duration::from_millis(200)),
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    b.client.perform_actions(mouse).await.unwrap();
    b.client.release_actions().await.unwrap();
}

async fn focused(b: &Browser) -> String {
    js(
        b,
        "const e = document.activeElement; return (e.id || '') + '|' + (e.getAttribute('aria-label') || e.textContent || '').slice(0, 80);",
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

/// Chooses `value` in the `<select>` matching `selector` (as a keyboard user would, the
/// change event fires once).
async fn choose(b: &Browser, selector: &str, value: &str) {
    b.client
        .execute(
            "const s = document.querySelector(arguments[0]); s.focus(); s.value = arguments[1]; s.dispatchEvent(new Event('change', {bubbles: true}));",
            vec![selector.into(), value.into()],
        )
        .await
        .unwrap();
    settled(b).await;
}

/// The panel's field labelled `label`.
fn field(label: &str) -> String {
    format!(
        "//aside[@id='cv-panel']//div[@class='cv-field'][label[normalize-space()='{label}']]/*[self::input or self::textarea or self::select]"
    )
}

async fn fill_x(b: &Browser, xpath: &str, text: &str) {
    let e = b
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(xpath))
        .await
        .unwrap_or_else(|e| panic!("no {xpath}: {e}"));
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
    press(b, &[Key::Tab]).await;
    settled(b).await;
}

async fn choose_x(b: &Browser, xpath: &str, value: &str) {
    b.client
        .execute(
            "const s = document.evaluate(arguments[0], document, null, 9, null).singleNodeValue; s.focus(); s.value = arguments[1]; s.dispatchEvent(new Event('change', {bubbles: true}));",
            vec![xpath.into(), value.into()],
        )
        .await
        .unwrap();
    settled(b).await;
}

/// Selects the block `key` with the pointer.
async fn pick(b: &Browser, key: &str) {
    // Fit to screen first, as an admin would to find it.
    b.click("#cv-fit").await;
    b.click(&format!("#cv-node-{key}")).await;
    b.css(&format!("#cv-node-{key}.selected")).await;
}

/// Adds a block of `kind` after the selected one with the toolbar, names it `name`.
async fn add_after(b: &Browser, kind: &str, name: &str) {
    choose(b, "#cv-add-kind", kind).await;
    b.click("#cv-add").await;
    settled(b).await;
    fill_x(b, &field("Name"), name).await;
    b.css(&format!("#cv-node-{name}.selected")).await;
}

/// The connections of a flow of a document: (block, output target) in order.
fn shape(doc: &Value, flow: usize) -> Vec<(String, String, Vec<String>)> {
    doc["flows"][flow]["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let mut to = Vec::new();
            if let Some(cases) = b["cases"].as_array() {
                for c in cases {
                    to.push(c["next"].as_str().unwrap_or("-").to_owned());
                }
                to.push(b["else"].as_str().unwrap_or("-").to_owned());
            } else if let Some(n) = b.get("next") {
                to.push(n.as_str().unwrap_or("-").to_owned());
            }
            (
                b["key"].as_str().unwrap().to_owned(),
                b["kind"].as_str().unwrap().to_owned(),
                to,
            )
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn an_admin_builds_the_lead_qualification_flow_on_the_canvas_publishes_calls_and_breaks_it() {
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    // An agent with a CRM webhook (the wizard) and the variables it fills.
    let agent = crate::browser::new_webhook(&b, &app, "Acme leads", "CRM webhook").await;
    let url = b.text("#webhook-url").await;
    let key = b.text("#api-key").await;
    for (name, ty) in [
        ("budget", "number"),
        ("customer_name", "string"),
        ("interest", "string"),
        ("lead_source", "string"),
    ] {
        app.declare(&agent, name, ty, None);
    }
    b.client
        .goto(&format!("{}/admin/agents/{agent}", app.address))
        .await
        .unwrap();
    let page = b.client.source().await.unwrap();
    let marker = format!("/admin/agents/{agent}/flows/");
    let at = page.find(&marker).unwrap() + marker.len();
    let main = page[at..at + page[at..].find('"').unwrap()].to_owned();
    b.client
        .goto(&format!("{}{marker}{main}", app.address))
        .await
        .unwrap();
    ready(&b).await;
    b.shot("canvas-01-new-agent").await;
    assert!(
        b.text("#cv-svg").await.contains("CRM webhook"),
        "the pre-call lane"
    );

    // Main: the Greeting, then a Filter on whether the CRM knows the lead.
    pick(&b, "greeting").await;
    fill_x(
        &b,
        &field("Message"),
        "Hello {{customer_name|there}}, thanks for calling Acme.",
    )
    .await;
    add_after(&b, "filter", "route").await;
    fill_x(&b, "//fieldset[@class='cv-case']//input", "Known lead").await;
    b.click(".cv-case .cv-add-cond").await;
    settled(&b).await;
    choose(&b, ".cv-case .cv-var", "lead_source").await;
    // Only the operators a text variable takes are offered.
    let ops = js(
        &b,
        "return [...document.querySelectorAll('.cv-case .cv-op option')].map(o => o.value);",
    )
    .await;
    assert_eq!(
        ops,
        json!(["equals", "not_equals", "contains", "exists", "not_exists"])
    );
    choose(&b, ".cv-case .cv-op", "exists").await;
    b.shot("canvas-02-condition-builder").await;

    // A second flow, from the tabs.
    b.click("#cv-new-flow").await;
    b.fill("#cv-flow-name", "Sales qualification").await;
    b.click("#cv-create-flow").await;
    settled(&b).await;
    b.css("#cv-node-start").await;
    let sales = js(&b, "return location.pathname.split('/').pop();")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    pick(&b, "start").await;
    fill_x(&b, &field("Message"), "Thanks for your interest in Acme.").await;

    // With the keyboard: the Start has the focus; A → the kind → Add block.
    b.client
        .execute("document.getElementById('cv-node-start').focus();", vec![])
        .await
        .unwrap();
    type_text(&b, "a").await;
    assert!(
        focused(&b).await.starts_with("cv-add-kind"),
        "{}",
        focused(&b).await
    );
    choose(&b, "#cv-add-kind", "collect").await;
    press(&b, &[Key::Tab, Key::Enter]).await;
    settled(&b).await;
    fill_x(&b, &field("Name"), "ask_budget").await;
    fill_x(&b, &field("Variable to fill"), "budget").await;
    fill_x(
        &b,
        &field("Question"),
        "What budget do you have in mind, in dollars?",
    )
    .await;
    add_after(&b, "collect", "ask_interest").await;
    fill_x(&b, &field("Variable to fill"), "interest").await;
    fill_x(
        &b,
        &field("Question"),
        "Which of our products are you interested in?",
    )
    .await;
    add_after(&b, "filter", "qualify").await;
    fill_x(&b, "//fieldset[@class='cv-case']//input", "Large deal").await;
    b.click(".cv-case .cv-add-cond").await;
    settled(&b).await;
    choose(&b, ".cv-case .cv-var", "budget").await;
    let ops = js(
        &b,
        "return [...document.querySelectorAll('.cv-case .cv-op option')].map(o => o.value);",
    )
    .await;
    assert_eq!(
        ops,
        json!([
            "equals",
            "not_equals",
            "greater_than",
            "less_than",
            "exists",
            "not_exists"
        ])
    );
    choose(&b, ".cv-case .cv-op", "greater_than").await;
    let kind = js(
        &b,
        "return document.querySelector('.cv-case .cv-value').type;",
    )
    .await;
    assert_eq!(kind, "number", "a number's value is typed as a number");
    b.fill(".cv-case .cv-value", "10000").await;
    press(&b, &[Key::Tab]).await;
    settled(&b).await;
    // Its first output (the case) gets the enterprise pitch, the Else the standard one.
    add_after(&b, "talk", "pitch_enterprise").await;
    fill_x(
        &b,
        &field("Message"),
        "For {{interest}} at that scale, our enterprise team will put together a tailored offer.",
    )
    .await;
    add_after(&b, "transfer_call", "enterprise_sales").await;
    fill_x(&b, &field("or department"), "Enterprise sales").await;
    fill_x(
        &b,
        &field("Message before transferring"),
        "Connecting you now.",
    )
    .await;
    // The Else from the panel's Add after, naming the output.
    pick(&b, "qualify").await;
    choose(&b, "#cv-panel .cv-actions select", "talk").await;
    choose(&b, "#cv-add-on", "1").await;
    b.click("#cv-add-after").await;
    settled(&b).await;
    fill_x(&b, &field("Name"), "pitch").await;
    b.css("#cv-node-pitch.selected").await;
    fill_x(
        &b,
        &field("Message"),
        "Our {{interest}} plans start small and grow with you.",
    )
    .await;
    add_after(&b, "transfer_call", "sales_desk").await;
    fill_x(&b, &field("or department"), "Sales").await;
    b.click("#cv-fit").await;
    b.shot("canvas-03-sales-flow").await;

    // Back to Main by its tab: the Filter's case continues in Sales, its Else asks why.
    b.click(&format!("#cv-tabs a[href$='/flows/{main}']")).await;
    pick(&b, "route").await;
    add_after(&b, "transfer_flow", "to_sales").await;
    choose_x(&b, &field("Continue in"), &sales).await;
    pick(&b, "route").await;
    add_after(&b, "collect", "ask_reason").await;
    fill_x(&b, &field("Variable to fill"), "reason").await;
    fill_x(&b, &field("Question"), "How can I help you today?").await;
    add_after(&b, "transfer_call", "front_desk").await;
    fill_x(&b, &field("or department"), "Front desk").await;
    b.click("#cv-fit").await;
    b.shot("canvas-04-main-flow").await;

    // The draft has the example's shape.
    let doc = draft(&b, &app, &agent).await;
    let mut main_shape = shape(&doc, 0);
    main_shape.sort();
    assert_eq!(
        main_shape,
        vec![
            (
                "ask_reason".into(),
                "collect".into(),
                vec!["front_desk".into()]
            ),
            ("front_desk".into(), "transfer_call".into(), vec![]),
            ("greeting".into(), "greeting".into(), vec!["route".into()]),
            (
                "route".into(),
                "filter".into(),
                vec!["to_sales".into(), "ask_reason".into()]
            ),
            ("to_sales".into(), "transfer_flow".into(), vec![]),
        ]
    );
    let mut sales_shape = shape(&doc, 1);
    sales_shape.sort();
    assert_eq!(sales_shape.len(), 8);
    assert!(sales_shape.contains(&(
        "qualify".into(),
        "filter".into(),
        vec!["pitch_enterprise".into(), "pitch".into()]
    )));
    assert_eq!(
        doc["flows"][1]["blocks"][3]["cases"][0]["conditions"][0],
        json!({"variable": "budget", "op": "greater_than", "value": 10000})
    );
    assert!(b.text("#cv-problems").await.contains("Nothing to finish"));

    // Publish from the canvas: the badge counts the changes, lists them, takes a message.
    let badge = b.text("#cv-badge").await;
    assert!(badge.contains("change"), "{badge}");
    b.click("#cv-badge").await;
    let listed = b.text("#cv-draft-panel ul.changes").await;
    assert!(listed.contains("Sales qualification"), "{listed}");
    b.fill("#cv-message", "Lead qualification").await;
    b.shot("canvas-05-publish").await;
    b.click("#cv-publish").await;
    b.until("the published status", |s| {
        s.contains("Published as version")
    })
    .await;
    settled(&b).await;
    assert!(b.text("#cv-versions").await.contains("Lead qualification"));
    b.shot("canvas-06-published").await;

    // A call from a known lead: Sales, no question asked, the enterprise pitch.
    let res = app
        .client
        .post(&url)
        .header("X-Authorization", &key)
        .json(
            &json!({"agentId": agent, "phoneNumber": "+12125550150", "customer_name": "Ada",
            "lead_source": "ads", "budget": 25000, "interest": "voice analytics"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let token = app.create_token(&agent);
    let call: Value = app
        .start_call_as(&token, &agent, "+12125550150")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        call["greeting"], "Hello Ada, thanks for calling Acme.",
        "{call:#}"
    );
    let steps = call["steps"].as_array().unwrap();
    let route = steps.iter().find(|s| s["kind"] == "filter").unwrap();
    assert_eq!(route["case"], "Known lead", "{call:#}");
    assert!(
        steps
            .iter()
            .filter(|s| s["kind"] == "collect")
            .all(|s| s["skipped"] == true),
        "Collect skipped when known: {call:#}"
    );
    let qualify = steps.iter().rfind(|s| s["kind"] == "filter").unwrap();
    assert_eq!(qualify["case"], "Large deal", "{call:#}");
    assert_eq!(call["transfer"]["department"], "Enterprise sales");

    // Break it: a cycle (dragged from the pitch's output back to a question) and an
    // unknown variable; both show on their blocks and the publish is refused.
    b.click(&format!("#cv-tabs a[href$='/flows/{sales}']"))
        .await;
    b.css("#cv-node-pitch_enterprise").await;
    b.click("#cv-fit").await;
    drag(
        &b,
        "#cv-node-pitch_enterprise .port-g .port",
        "#cv-node-ask_interest .box",
    )
    .await;
    settled(&b).await;
    b.css("#cv-node-pitch_enterprise.unfinished, #cv-node-ask_interest.unfinished, #cv-node-qualify.unfinished").await;
    let problems = b.text("#cv-problems").await;
    assert!(problems.contains("cycle"), "{problems}");
    pick(&b, "pitch").await;
    fill_x(&b, &field("Message"), "Our {{interst}} plans start small.").await;
    b.css("#cv-node-pitch.unfinished").await;
    assert!(
        b.text("#cv-panel .cv-panel-problems")
            .await
            .contains("{{interst}}")
    );
    if b.client
        .find(Locator::Css("#cv-draft-panel"))
        .await
        .is_err()
    {
        b.click("#cv-badge").await;
    }
    b.click("#cv-publish").await;
    b.until("the refusal", |s| s.contains("Publish refused"))
        .await;
    b.shot("canvas-07-broken").await;

    // Undo twice puts both right (the message, then the arrow).
    b.client
        .execute("document.getElementById('cv-node-pitch').focus();", vec![])
        .await
        .unwrap();
    let mut undo = KeyActions::new("undo".into());
    for _ in 0..2 {
        undo = undo
            .then(KeyAction::Down {
                value: char::from(Key::Control),
            })
            .then(KeyAction::Down { value: 'z' })
            .then(KeyAction::Up { value: 'z' })
            .then(KeyAction::Up {
                value: char::from(Key::Control),
            })
            .then(KeyAction::Pause {
                duration: Duration::from_millis(400),
            });
    }
    b.client.perform_actions(undo).await.unwrap();
    settled(&b).await;
    b.until("nothing to finish", |s| {
        s.contains("Nothing to finish in this flow")
    })
    .await;
    let doc = draft(&b, &app, &agent).await;
    assert_eq!(doc["flows"][1]["blocks"][4]["next"], "enterprise_sales");

    // Someone else saves meanwhile: the next change is refused, not overwritten, and says who.
    let other = app.cli_json(&["api-token", "create", "--name", "robot"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut changed = doc.clone();
    changed["flows"][1]["blocks"][0]["message"] = json!("Changed by a robot.");
    let res = app
        .client
        .put(format!("{}/api/v1/agents/{agent}/draft", app.address))
        .bearer_auth(&other)
        .header("if-match", "*")
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    pick(&b, "start").await;
    fill_x(&b, &field("Message"), "Mine.").await;
    let stale = b.text("#cv-stale").await;
    assert!(
        stale.contains("robot") && stale.contains("not saved"),
        "{stale}"
    );
    b.shot("canvas-08-stale").await;
    assert_eq!(
        draft(&b, &app, &agent).await["flows"][1]["blocks"][0]["message"],
        "Changed by a robot."
    );
    b.click("#cv-stale button").await;
    b.until("the reloaded draft", |s| s.contains("Changed by a robot"))
        .await;

    // The same canvas in a phone's width.
    b.client.set_window_size(390, 844).await.unwrap();
    b.click("#cv-fit").await;
    assert!(overflow(&b).await <= 0, "the canvas page fits 390 px");
    assert_eq!(unlabelled(&b).await, json!([]));
    b.shot("canvas-09-narrow").await;
    pick(&b, "qualify").await;
    b.scroll_to("#cv-panel").await;
    b.shot("canvas-10-narrow-settings").await;
}

/// A flow of `n` blocks: a Greeting, then Talks in a chain with a Filter every tenth block
/// that either goes on or skips one, and an End Call.
fn long_flow(n: usize) -> Value {
    let key = |i: usize| format!("b{i}");
    let mut blocks =
        vec![json!({"key": "b0", "kind": "greeting", "message": "Hello.", "next": "b1"})];
    for i in 1..n - 1 {
        let next = key(i + 1);
        if i % 10 == 5 && i + 2 < n {
            blocks.push(json!({"key": key(i), "kind": "filter", "cases": [
                {"name": "Known", "join": "and", "conditions": [{"variable": "caller_phone", "op": "exists"}], "next": next}],
                "else": key(i + 2)}));
        } else {
            blocks.push(json!({"key": key(i), "kind": "talk", "message": format!("Step {i}."), "next": next}));
        }
    }
    blocks.push(
        json!({"key": key(n - 1), "kind": "end_call", "message": "Bye.", "outcome": "completed"}),
    );
    json!({"format": "precall-agent/1", "firstFlow": "main",
        "flows": [{"key": "main", "name": "Long", "blocks": blocks}],
        "precall": [], "variables": []})
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn a_200_block_flow_is_laid_out_and_drawn_and_the_editor_stays_light() {
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    let agent = new_agent(&b, &app, "Long flow").await;
    let token = js(
        &b,
        "return document.getElementById('flow-canvas').dataset.token;",
    )
    .await;
    let res = app
        .client
        .put(format!("{}/api/v1/agents/{agent}/draft", app.address))
        .bearer_auth(token.as_str().unwrap())
        .header("if-match", "*")
        .json(&long_flow(200))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let started = Instant::now();
    b.client
        .goto(&format!("{}/admin/agents/{agent}/flows/main", app.address))
        .await
        .unwrap();
    ready(&b).await;
    let page = started.elapsed();
    let drawn = js(
        &b,
        "return Number(document.getElementById('flow-canvas').dataset.rendered);",
    )
    .await;
    let nodes = js(
        &b,
        "return document.querySelectorAll('#cv-svg .node[data-key]').length;",
    )
    .await;
    assert_eq!(nodes, 200);
    println!(
        "200-block flow: the canvas read, laid out (server) and drew it in {drawn} ms after its script started; the whole page with its server-drawn graph took {} ms (debug build)",
        page.as_millis()
    );
    b.shot("canvas-11-200-blocks").await;

    // The editor's own JavaScript and CSS, compressed as a browser receives them.
    let sizes = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             Promise.all(['/static/canvas.js', '/static/canvas.css', '/static/app.js', '/static/app.css'].map(async (u) => {
               const body = await (await fetch(u)).blob();
               const gz = await new Response(body.stream().pipeThrough(new CompressionStream('gzip'))).arrayBuffer();
               return [u, body.size, gz.byteLength];
             })).then(done);",
            vec![],
        )
        .await
        .unwrap();
    let total: u64 = sizes
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[2].as_u64().unwrap())
        .sum();
    println!("editor page weight (raw, gzip bytes): {sizes}; total gzip {total} bytes");
    assert!(total < 200 * 1024, "{total}");
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn without_javascript_the_flow_is_a_server_drawn_graph_and_the_forms_edit_it() {
    let app = spawn_app().await;
    let b = Browser::start_without_scripts(1280, 900).await;
    sign_up(&b, &app).await;
    b.fill("#agent-name", "Leads").await;
    b.click("form[action='/admin/agents'] button[type=submit]")
        .await;
    let agent = b.text("#agent-id").await;
    let token = app.cli_json(&["api-token", "create", "--name", "import"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let example: Value =
        serde_json::from_str(include_str!("../../examples/lead-qualification.json")).unwrap();
    let res = app
        .client
        .put(format!("{}/api/v1/agents/{agent}/draft", app.address))
        .bearer_auth(&token)
        .header("if-match", "*")
        .json(&example)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    b.client
        .goto(&format!("{}/admin/agents/{agent}/flows/sales", app.address))
        .await
        .unwrap();
    b.css("svg.flow-graph").await;
    assert!(
        b.client
            .find(Locator::Css("#flow-canvas.cv-ready"))
            .await
            .is_err(),
        "no script ran"
    );
    full_shot(&b, "canvas-nojs-01-graph", 1280).await;

    // A block is a link to its settings; the form saves and the graph shows it.
    b.click("a#node-pitch").await;
    b.css("#f-message").await;
    b.fill("#f-message", "Our plans grow with you.").await;
    b.click("#settings form button.primary").await;
    b.until("the saved message in the graph", |s| {
        s.contains("Our plans grow with you.")
    })
    .await;
    // A block added at the end is not reached yet: dashed, and listed.
    b.click("#new-kind").await;
    let option = b.css("#new-kind option[value='talk']").await;
    option.click().await.unwrap();
    b.click("form[action$='/blocks'] button[type=submit]").await;
    let page = b
        .until("the new block", |s| {
            s.contains("Not reached from the entry")
        })
        .await;
    assert!(
        page.contains(" unreachable\" id=\"node-"),
        "dashed on the graph"
    );
    full_shot(&b, "canvas-nojs-02-edited", 1280).await;
    // The First Flow: its pre-call lane above the Greeting, each action a link to its page.
    b.client
        .goto(&format!("{}/admin/agents/{agent}/flows/main", app.address))
        .await
        .unwrap();
    let lane = b.css("svg.flow-graph a.node.action").await;
    assert!(
        lane.attr("href")
            .await
            .unwrap()
            .unwrap()
            .ends_with("/actions/crm/configure")
    );
    full_shot(&b, "canvas-nojs-04-first-flow", 1280).await;
    b.client.set_window_size(390, 844).await.unwrap();
    b.client.refresh().await.unwrap();
    b.css("svg.flow-graph").await;
    assert!(
        overflow(&b).await <= 0,
        "the page fits 390 px (the graph scrolls in its box)"
    );
    full_shot(&b, "canvas-nojs-03-narrow", 390).await;
}

/// Presses `key` with Control (and Shift) held.
async fn chord(b: &Browser, shift: bool, key: char) {
    let mut a = KeyActions::new("chord".into()).then(KeyAction::Down {
        value: char::from(Key::Control),
    });
    if shift {
        a = a.then(KeyAction::Down {
            value: char::from(Key::Shift),
        });
    }
    a = a
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    if shift {
        a = a.then(KeyAction::Up {
            value: char::from(Key::Shift),
        });
    }
    a = a.then(KeyAction::Up {
        value: char::from(Key::Control),
    });
    b.client.perform_actions(a).await.unwrap();
    settled(b).await;
}

fn block<'a>(doc: &'a Value, flow: usize, key: &str) -> Option<&'a Value> {
    doc["flows"][flow]["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["key"] == key)
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn an_admin_inserts_duplicates_moves_and_deletes_blocks_by_pointer_and_keyboard() {
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    let agent = new_agent(&b, &app, "Edits").await;
    let token = js(
        &b,
        "return document.getElementById('flow-canvas').dataset.token;",
    )
    .await;
    let example: Value =
        serde_json::from_str(include_str!("../../examples/lead-qualification.json")).unwrap();
    let res = app
        .client
        .put(format!("{}/api/v1/agents/{agent}/draft", app.address))
        .bearer_auth(token.as_str().unwrap())
        .header("if-match", "*")
        .json(&example)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    b.client
        .goto(&format!("{}/admin/agents/{agent}/flows/sales", app.address))
        .await
        .unwrap();
    ready(&b).await;
    b.shot("canvas-12-example").await;

    // Dragged with the pointer, a block keeps its new place (and the others theirs).
    let before = js(
        &b,
        "return document.querySelector('#cv-node-pitch .box').getAttribute('x');",
    )
    .await;
    let node = b.css("#cv-node-pitch .box").await;
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: node,
            duration: None,
            x: 0.0,
            y: -20.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(100)),
            x: 20.0,
            y: 0.0,
        })
        .then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(200)),
            x: 100.0,
            y: 0.0,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    b.client.perform_actions(mouse).await.unwrap();
    b.client.release_actions().await.unwrap();
    settled(&b).await;
    let after = js(
        &b,
        "return document.querySelector('#cv-node-pitch .box').getAttribute('x');",
    )
    .await;
    let x = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
    assert!(x(&after) > x(&before) + 50.0, "{before} → {after}");
    let doc = draft(&b, &app, &agent).await;
    assert_eq!(
        block(&doc, 1, "pitch").unwrap()["position"]["x"]
            .as_f64()
            .unwrap(),
        x(&after)
    );
    assert!(block(&doc, 1, "start").unwrap()["position"].is_object());

    // Insert a Talk on the arrow from the Filter's Else to the standard pitch.
    b.click(".edge-add[data-from='qualify'][data-out='1']")
        .await;
    b.click("#cv-insert button.kind-talk").await;
    settled(&b).await;
    b.css("#cv-node-talk_1.selected").await;
    let doc = draft(&b, &app, &agent).await;
    assert_eq!(block(&doc, 1, "qualify").unwrap()["else"], "talk_1");
    assert_eq!(block(&doc, 1, "talk_1").unwrap()["next"], "pitch");

    // The keyboard: Tab reaches the blocks, Enter opens one, D duplicates it.
    b.client
        .execute("document.getElementById('cv-node-start').focus();", vec![])
        .await
        .unwrap();
    press(&b, &[Key::Tab]).await;
    assert!(
        focused(&b).await.starts_with("cv-node-ask_budget"),
        "{}",
        focused(&b).await
    );
    b.client
        .execute("document.getElementById('cv-node-talk_1').focus();", vec![])
        .await
        .unwrap();
    press(&b, &[Key::Enter]).await;
    assert!(
        focused(&b).await.starts_with("cv-f-"),
        "Enter opens the settings: {}",
        focused(&b).await
    );
    press(&b, &[Key::Escape]).await;
    assert!(
        focused(&b).await.starts_with("cv-node-talk_1"),
        "Escape goes back: {}",
        focused(&b).await
    );
    b.shot("canvas-13-keyboard-focus").await;
    type_text(&b, "d").await;
    settled(&b).await;
    let doc = draft(&b, &app, &agent).await;
    assert_eq!(
        block(&doc, 1, "talk_2").unwrap()["next"],
        "pitch",
        "the copy keeps its Next"
    );

    // Shift+arrow moves the block; its place is saved with the others'.
    b.client
        .execute("document.getElementById('cv-node-talk_2').focus();", vec![])
        .await
        .unwrap();
    let before = block(&draft(&b, &app, &agent).await, 1, "talk_2").unwrap()["position"]["x"]
        .as_f64()
        .unwrap();
    let shifted = || {
        KeyActions::new("move".into())
            .then(KeyAction::Down {
                value: char::from(Key::Shift),
            })
            .then(KeyAction::Down {
                value: char::from(Key::Right),
            })
            .then(KeyAction::Up {
                value: char::from(Key::Right),
            })
            .then(KeyAction::Up {
                value: char::from(Key::Shift),
            })
    };
    // Shift+→ once, then the block's x as saved (the move is saved after a pause).
    let moved_x = || async {
        b.client.perform_actions(shifted()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        settled(&b).await;
        let doc = draft(&b, &app, &agent).await;
        block(&doc, 1, "talk_2").unwrap()["position"]["x"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(moved_x().await, before + 64.0);
    // The block keeps the focus through the save and the redraw after it, so it moves
    // again at once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        focused(&b).await.starts_with("cv-node-talk_2|"),
        "{}",
        focused(&b).await
    );
    assert_eq!(moved_x().await, before + 128.0);
    let doc = draft(&b, &app, &agent).await;
    assert!(
        block(&doc, 1, "start").unwrap()["position"].is_object(),
        "every place is kept"
    );

    // Delete asks what the predecessors connect to: by default, the block's own Next.
    b.client
        .execute("document.getElementById('cv-node-talk_1').focus();", vec![])
        .await
        .unwrap();
    press(&b, &[Key::Delete]).await;
    assert!(
        focused(&b).await.starts_with("cv-reconnect"),
        "{}",
        focused(&b).await
    );
    let said = b.text(".cv-confirm").await;
    assert!(said.contains("qualify leads to it"), "{said}");
    b.shot("canvas-14-delete").await;
    b.click("#cv-confirm-delete").await;
    settled(&b).await;
    let doc = draft(&b, &app, &agent).await;
    assert!(block(&doc, 1, "talk_1").is_none());
    assert_eq!(block(&doc, 1, "qualify").unwrap()["else"], "pitch");

    // Undo brings it back, redo deletes it again.
    b.client
        .execute(
            "document.getElementById('cv-node-qualify').focus();",
            vec![],
        )
        .await
        .unwrap();
    chord(&b, false, 'z').await;
    b.css("#cv-node-talk_1").await;
    assert_eq!(
        block(&draft(&b, &app, &agent).await, 1, "qualify").unwrap()["else"],
        "talk_1"
    );
    b.client
        .execute(
            "document.getElementById('cv-node-qualify').focus();",
            vec![],
        )
        .await
        .unwrap();
    chord(&b, true, 'z').await;
    assert!(block(&draft(&b, &app, &agent).await, 1, "talk_1").is_none());
    // The copy, which nothing reaches (dashed), goes too.
    b.css("#cv-node-talk_2.unreachable").await;
    b.client
        .execute("document.getElementById('cv-node-talk_2').focus();", vec![])
        .await
        .unwrap();
    press(&b, &[Key::Delete]).await;
    b.click("#cv-confirm-delete").await;
    settled(&b).await;
    assert!(block(&draft(&b, &app, &agent).await, 1, "talk_2").is_none());

    // Zoom and fit from the keyboard.
    b.client
        .execute(
            "document.getElementById('cv-node-qualify').focus();",
            vec![],
        )
        .await
        .unwrap();
    let zoom = |t: String| t.trim_end_matches('%').parse::<u32>().unwrap();
    let fitted = zoom(b.text("#cv-zoom").await);
    type_text(&b, "+").await;
    let zoomed = zoom(b.text("#cv-zoom").await);
    assert!(zoomed > fitted, "{zoomed} after {fitted}");
    type_text(&b, "0").await;
    assert!(zoom(b.text("#cv-zoom").await) < zoomed, "fitted again");
    b.shot("canvas-15-after-edits").await;

    // The First Flow's lane: a pre-call End Call whose condition is chosen, typed by its
    // variable (a number here).
    b.click("#cv-tabs a[href$='/flows/main']").await;
    b.css("#cv-action-crm").await;
    b.click(".lane-add").await;
    b.click("#cv-panel .cv-actions button:nth-of-type(2)").await;
    settled(&b).await;
    b.css("#cv-panel .cv-add-cond").await;
    b.click("#cv-panel .cv-add-cond").await;
    settled(&b).await;
    choose(&b, "#cv-panel .cv-var", "budget").await;
    choose(&b, "#cv-panel .cv-op", "less_than").await;
    b.fill("#cv-panel .cv-value", "100").await;
    press(&b, &[Key::Tab]).await;
    settled(&b).await;
    fill_x(
        &b,
        &field("Last message"),
        "Sorry, we only take larger projects.",
    )
    .await;
    b.shot("canvas-16-precall-end-call").await;
    let doc = draft(&b, &app, &agent).await;
    assert_eq!(doc["precall"][1]["kind"], "end_call");
    assert_eq!(
        doc["precall"][1]["conditions"][0],
        json!({"variable": "budget", "op": "less_than", "value": 100})
    );

    // Published, then the first version restored from the Draft badge: back in the draft.
    b.click("#cv-badge").await;
    b.click("#cv-publish").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = b.text("#cv-live").await;
        if status.contains("Published as version 2") {
            break;
        }
        assert!(Instant::now() < deadline, "not published: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    settled(&b).await;
    b.css("#cv-versions button").await;
    b.click("#cv-versions button").await;
    b.until("the restored draft", |s| s.contains("is the draft again"))
        .await;
    settled(&b).await;
    assert!(
        b.client.find(Locator::Css("#cv-node-route")).await.is_err(),
        "version 1 has no Filter"
    );
    b.shot("canvas-17-restored").await;

    // With no block selected, the panel holds the flow: renamed and made the First Flow
    // without leaving the canvas.
    b.client
        .execute("document.querySelector('#cv-new-flow').click();", vec![])
        .await
        .unwrap();
    b.fill("#cv-flow-name", "Callback").await;
    b.click("#cv-create-flow").await;
    settled(&b).await;
    b.css("#cv-flow-rename").await;
    b.fill("#cv-flow-rename", "Callbacks").await;
    press(&b, &[Key::Tab]).await;
    settled(&b).await;
    assert!(b.text("#cv-tabs").await.contains("Callbacks"));
    b.shot("canvas-18-flow-panel").await;
    b.click("#cv-set-first").await;
    settled(&b).await;
    b.until("the First Flow badge", |s| s.contains("calls start here"))
        .await;
    let doc = draft(&b, &app, &agent).await;
    let first = doc["firstFlow"].as_str().unwrap();
    let callbacks = doc["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Callbacks")
        .unwrap();
    assert_eq!(callbacks["key"], first);
    assert_eq!(callbacks["blocks"][0]["kind"], "greeting");
    assert_eq!(doc["flows"][0]["blocks"][0]["kind"], "start", "{doc}");
    assert!(
        b.css(".heading h1 .badge.first")
            .await
            .is_displayed()
            .await
            .unwrap()
    );
}
