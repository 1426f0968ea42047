//! Drafts and versions in a real headless Chromium: a change waits in the draft (calls do not
//! see it), the admin reviews it in words and publishes it, reads the version it made, then
//! restores the earlier version into the draft and discards that again.

use serde_json::Value;

use crate::browser::{Browser, full_shot, new_webhook, overflow, unlabelled};
use crate::helpers::spawn_app;

async fn call_version(app: &crate::helpers::TestApp, token: &str, agent: &str) -> Value {
    let res = app.start_call_as(token, agent, "+12125550188").await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver (apt-get install chromium chromium-driver)"]
async fn an_admin_reviews_the_draft_publishes_it_reads_the_version_and_restores_the_one_before() {
    let app = spawn_app().await;
    let b = Browser::start(1280, 900).await;
    // A Webhook action added in the console lands in the draft; version 1 stays live.
    let agent = new_webhook(&b, &app, "Versioned line", "CRM webhook").await;
    let token = app.cli_json(&["token", "create", "--agent", &agent])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = call_version(&app, &token, &agent).await;
    assert_eq!(before["version"], 1);
    assert_eq!(
        before["precall"].as_array().unwrap().len(),
        0,
        "an unpublished webhook is not waited for: {before}"
    );

    // The draft bar says there is something to publish and leads to the review.
    b.client
        .goto(&format!("{}/admin/agents/{agent}", app.address))
        .await
        .unwrap();
    let bar = b.text("aside.draftbar.pending").await;
    assert!(bar.contains("not published"), "{bar}");
    assert!(bar.contains("admin@example.com"), "who saved it: {bar}");
    b.click("aside.draftbar a[href$='/draft']").await;
    let changes = b.text("ul.changes").await;
    assert!(
        changes.contains("CRM webhook") && changes.contains("added"),
        "the change in words: {changes}"
    );
    b.fill("#publish-message", "Wait for the CRM").await;
    b.shot("versions-01-review").await;
    b.click("form[action$='/publish'] button[type=submit]")
        .await;
    let page = b
        .until("the published notice", |s| {
            s.contains("Published as version 2")
        })
        .await;
    assert!(page.contains("Wait for the CRM"), "the message is listed");

    // Calls run the new version from now on.
    let after = call_version(&app, &token, &agent).await;
    assert_eq!(after["version"], 2);
    assert_eq!(after["precall"][0]["action"], "CRM webhook", "{after}");

    // The version's own page: what it changed and its document.
    b.click("a[href$='/versions/2']").await;
    let changed = b.text("ul.changes").await;
    assert!(changed.contains("CRM webhook"), "{changed}");
    let document: Value = serde_json::from_str(&b.text("pre.document").await).unwrap();
    assert_eq!(document["format"], "precall-agent/1");
    assert_eq!(document["precall"][0]["name"], "CRM webhook");
    full_shot(&b, "versions-02-version", 1280).await;
    assert_eq!(unlabelled(&b).await, Value::Array(vec![]));

    // Restoring version 1 makes it the draft again; the live version does not change.
    b.client
        .goto(&format!("{}/admin/agents/{agent}/versions", app.address))
        .await
        .unwrap();
    b.click("form[action$='/versions/1/restore'] button").await;
    b.until("the restore notice", |s| {
        s.contains("Version 1 is the draft again")
    })
    .await;
    let undo = b.text("ul.changes").await;
    assert!(
        undo.contains("CRM webhook") && undo.contains("removed"),
        "{undo}"
    );
    assert_eq!(call_version(&app, &token, &agent).await["version"], 2);

    // Discarding the draft brings it back to the published version.
    b.click("details.danger-zone summary").await;
    b.click("form[action$='/draft/discard'] button").await;
    b.until("the discard notice", |s| s.contains("discarded"))
        .await;
    let bar = b.text("aside.draftbar").await;
    assert!(bar.contains("Calls run version 2"), "{bar}");
    assert!(bar.contains("no changes"), "{bar}");

    // The pages of this workflow fit a phone's width.
    b.client.set_window_size(390, 844).await.unwrap();
    for path in ["draft", "versions", "versions/2"] {
        b.client
            .goto(&format!("{}/admin/agents/{agent}/{path}", app.address))
            .await
            .unwrap();
        b.css("main h1").await;
        let over = overflow(&b).await;
        assert!(over <= 0, "{path} overflows at 390 px by {over} px");
        full_shot(
            &b,
            &format!("versions-03-narrow-{}", path.replace('/', "-")),
            390,
        )
        .await;
    }
}
