//! API keys: rotated with an overlap, revoked, bound to one webhook, gone with their action.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::{Console, location};
use crate::helpers::{BIN, Setup, TestApp, assert_problem, spawn_app};
use crate::signing::webhook;

async fn send(app: &TestApp, url: &str, key: &str, agent_id: &str, phone: &str) -> StatusCode {
    app.client
        .post(url)
        .header("X-Authorization", key)
        .json(&json!({"agentId": agent_id, "phoneNumber": phone, "plan": "gold"}))
        .send()
        .await
        .unwrap()
        .status()
}

/// Waits until `key` opens `s`'s URL: the server notices the CLI's changes within moments.
async fn until_key_works(app: &TestApp, s: &Setup, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while send(app, &s.url, key, &s.agent_id, "+12125550150").await != 202 {
        assert!(Instant::now() < deadline, "the new key never worked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rotate(app: &TestApp, w: &crate::signing::Webhook, grace_secs: &str) -> Value {
    app.cli_json(&[
        "action",
        "rotate-key",
        "--agent",
        &w.setup.agent_id,
        "--action",
        &w.action_id,
        "--grace-secs",
        grace_secs,
    ])
}

#[tokio::test]
async fn an_old_key_works_during_its_grace_period_and_stops_after_it() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let old = s.key.clone();
    // The server has the webhook cached before the rotation.
    assert_eq!(
        send(&app, &s.url, &old, &s.agent_id, "+12125550101").await,
        202
    );

    let rotated = rotate(&app, &w, "2");
    let new = rotated["apiKey"].as_str().unwrap().to_owned();
    assert!(new.starts_with("pcwk_") && new != old);
    assert!(rotated["oldKeysValidUntil"].is_string(), "{rotated}");
    until_key_works(&app, s, &new).await;
    // Past the server's next look at the configuration, so that what follows is served
    // from one cached entry that nothing invalidates.
    tokio::time::sleep(precall::catalog::WATCH_INTERVAL * 2).await;
    assert_eq!(
        send(&app, &s.url, &old, &s.agent_id, "+12125550102").await,
        202,
        "the old key works during its grace period"
    );

    // Nothing changes in the configuration when the grace runs out: the cached entry
    // itself must stop the old key.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let res = app
        .client
        .post(&s.url)
        .header("X-Authorization", &old)
        .json(&json!({"agentId": s.agent_id, "phoneNumber": "+12125550103"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "unauthorized").await;
    assert_eq!(
        send(&app, &s.url, &new, &s.agent_id, "+12125550104").await,
        202
    );
    // The late request with the old key cached nothing.
    let call = app.start_call_json(s, "+12125550103").await;
    assert_eq!(call["source"], "fallback");
}

#[tokio::test]
async fn rotating_without_a_grace_period_stops_the_old_key_at_once() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let rotated = rotate(&app, &w, "0");
    assert!(rotated["oldKeysValidUntil"].is_null());
    let new = rotated["apiKey"].as_str().unwrap();
    until_key_works(&app, s, new).await;
    assert_eq!(
        send(&app, &s.url, &s.key, &s.agent_id, "+12125550101").await,
        401
    );
}

#[tokio::test]
async fn when_a_key_command_returns_the_server_already_obeys_it() {
    let app = spawn_app().await;
    let w = webhook(&app);
    let s = &w.setup;
    let mut key = s.key.clone();
    for round in 0..10 {
        // The server has the webhook cached with the current key.
        assert_eq!(
            send(&app, &s.url, &key, &s.agent_id, "+12125550101").await,
            202,
            "round {round}"
        );
        let rotated = rotate(&app, &w, "0");
        let new = rotated["apiKey"].as_str().unwrap().to_owned();
        // No waiting: the command returned, so the old key is refused and the new one opens.
        assert_eq!(
            send(&app, &s.url, &key, &s.agent_id, "+12125550101").await,
            401,
            "round {round}: the revoked key still worked"
        );
        assert_eq!(
            send(&app, &s.url, &new, &s.agent_id, "+12125550101").await,
            202,
            "round {round}: the new key did not work yet"
        );
        key = new;
    }
}

#[tokio::test]
async fn a_grace_period_outside_0_to_7_days_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let w = webhook(&app);
    for grace in ["604801", "-1"] {
        let out = Command::new(BIN)
            .args(["action", "rotate-key", "--agent", &w.setup.agent_id])
            .args(["--action", &w.action_id])
            .arg(format!("--grace-secs={grace}"))
            .env("PRECALL_DATABASE_URL", &app.database_url)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("grace period must be 0 to 604800"),
            "{stderr}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("pcwk_"));
    }
    let s = &w.setup;
    assert_eq!(
        send(&app, &s.url, &s.key, &s.agent_id, "+12125550101").await,
        202
    );
}

/// The key shown on a Configure page right after it was made.
fn shown_key(page: &str) -> String {
    page[page.find("pcwk_").expect("a key shown once")..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[tokio::test]
async fn the_configure_page_lists_old_keys_until_they_end_and_revoke_now_stops_one() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    let configure = admin.create_webhook(&agent).await;
    let page = admin.page(&configure).await;
    let old = shown_key(&page);
    let url: String = page[page.find(&format!("{}/webhooks/", app.address)).unwrap()..]
        .chars()
        .take_while(|c| *c != '<' && *c != '&')
        .collect();
    let key_path = configure.replace("/configure", "/key");

    // A grace the page does not offer is refused; nothing changes.
    let res = admin
        .submit(&configure, &key_path, &[("grace_secs", "12")])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = admin.page(&configure).await;
    assert!(page.contains("is not one offered") && !page.contains("pcwk_"));

    // Regenerate, keeping the old key for 24 hours.
    admin
        .submit(&configure, &key_path, &[("grace_secs", "86400")])
        .await;
    let page = admin.page(&configure).await;
    let new = shown_key(&page);
    assert_ne!(new, old);
    assert!(
        page.contains("keeps working for 24 hours"),
        "the notice says so"
    );
    assert!(page.contains(&old[old.len() - 4..]) && page.contains("until "));
    assert!(page.contains("Revoke now"));
    assert_eq!(send(&app, &url, &old, &agent, "+12125550101").await, 202);
    assert_eq!(send(&app, &url, &new, &agent, "+12125550102").await, 202);

    // Revoke the old key: it stops at once, the new one goes on.
    let at = page.find("/revoke\"").expect("a revoke form");
    let action = &page[page[..at].rfind("action=\"").unwrap() + 8..at + 7];
    let res = admin.submit(&configure, action, &[]).await;
    assert_eq!(location(&res), configure);
    assert_eq!(send(&app, &url, &old, &agent, "+12125550103").await, 401);
    assert_eq!(send(&app, &url, &new, &agent, "+12125550104").await, 202);
    let page = admin.page(&configure).await;
    assert!(page.contains("The old key stopped working"));
    assert!(!page.contains("Revoke now") && !page.contains(&old[old.len() - 4..]));

    // The current key cannot be revoked (a webhook always has one).
    let (prefix, rest) = action.split_once("/keys/").unwrap();
    let old_id: i64 = rest.trim_end_matches("/revoke").parse().unwrap();
    let current = format!("{prefix}/keys/{}/revoke", old_id + 1);
    admin.submit(&configure, &current, &[]).await;
    let page = admin.page(&configure).await;
    assert!(page.contains("cannot be revoked"), "{current}");
    assert_eq!(send(&app, &url, &new, &agent, "+12125550105").await, 202);
}

#[tokio::test]
async fn a_key_never_opens_another_webhooks_url_even_in_its_grace_period() {
    let app = spawn_app().await;
    let a = webhook(&app);
    // A second webhook on the same agent, and one on another agent.
    let second = app.cli_json(&[
        "action",
        "create-webhook",
        "--agent",
        &a.setup.agent_id,
        "--name",
        "Second",
    ]);
    let b_url = second["url"].as_str().unwrap();
    let b_key = second["apiKey"].as_str().unwrap();
    let other = webhook(&app);
    let rotated = rotate(&app, &a, "3600");
    let a_new = rotated["apiKey"].as_str().unwrap();
    until_key_works(&app, &a.setup, a_new).await;

    let agent = &a.setup.agent_id;
    for key in [a.setup.key.as_str(), a_new] {
        assert_eq!(send(&app, b_url, key, agent, "+12125550101").await, 401);
        let o = &other.setup;
        assert_eq!(
            send(&app, &o.url, key, &o.agent_id, "+12125550101").await,
            401
        );
    }
    assert_eq!(
        send(&app, &a.setup.url, b_key, agent, "+12125550101").await,
        401
    );
    assert_eq!(send(&app, b_url, b_key, agent, "+12125550101").await, 202);
}

#[tokio::test]
async fn deleting_an_action_makes_its_keys_fail_at_once() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    let configure = admin.create_webhook(&agent).await;
    let page = admin.page(&configure).await;
    let old = shown_key(&page);
    let url: String = page[page.find(&format!("{}/webhooks/", app.address)).unwrap()..]
        .chars()
        .take_while(|c| *c != '<' && *c != '&')
        .collect();
    admin
        .submit(
            &configure,
            &configure.replace("/configure", "/key"),
            &[("grace_secs", "604800")],
        )
        .await;
    let new = shown_key(&admin.page(&configure).await);
    // Both keys work, and the server has the webhook cached.
    assert_eq!(send(&app, &url, &old, &agent, "+12125550101").await, 202);
    assert_eq!(send(&app, &url, &new, &agent, "+12125550102").await, 202);

    let res = admin
        .submit(&configure, &configure.replace("/configure", "/delete"), &[])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    for key in [&old, &new] {
        let res = app
            .client
            .post(&url)
            .header("X-Authorization", key)
            .json(&json!({"agentId": agent, "phoneNumber": "+12125550103"}))
            .send()
            .await
            .unwrap();
        assert_problem(res, 404, "not-found").await;
    }
}
