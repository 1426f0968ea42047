//! Ingest rates: per webhook and per source address, answered 429 with `Retry-After` and a
//! problem naming the limit; a refused request is recorded and caches nothing.

use std::time::Duration;

use precall::http::rate::Rates;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app_with};

async fn spawn_limited(per_action: u32, per_source: u32) -> TestApp {
    spawn_app_with(|s| {
        s.rates = Rates {
            per_action,
            per_source,
            failed_lookups: 0,
            burst_secs: 1,
        }
    })
    .await
}

fn body(agent_id: &str, phone: &str) -> Value {
    json!({"agentId": agent_id, "phoneNumber": phone, "priority": "high"})
}

/// `Retry-After` in seconds; panics unless present and sensible.
fn retry_after(res: &reqwest::Response) -> u64 {
    let secs: u64 = res
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    secs
}

#[tokio::test]
async fn a_webhook_over_its_rate_gets_429_naming_the_webhook_limit_and_caches_nothing() {
    let app = spawn_limited(5, 0).await;
    let s = app.setup(0);
    let other = app.setup(0);

    // Requests without the key do not use up the sender's allowance.
    for _ in 0..20 {
        let res = app
            .client
            .post(&s.url)
            .header(
                "X-Authorization",
                "pcwk_notthekeynotthekeynotthekeynotthekey1",
            )
            .json(&body(&s.agent_id, "+12125550100"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    for i in 0..5 {
        let res = app
            .ingest(&s, &body(&s.agent_id, &format!("+1212555020{i}")))
            .await;
        assert_eq!(res.status(), 202, "request {i} is within the burst");
    }
    let res = app.ingest(&s, &body(&s.agent_id, "+12125550100")).await;
    let wait = retry_after(&res);
    let problem = assert_problem(res, 429, "rate-limited").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("webhook") && detail.contains("5 requests a second"),
        "{detail}"
    );

    // Another webhook has its own allowance.
    let res = app
        .ingest(&other, &body(&other.agent_id, "+12125550100"))
        .await;
    assert_eq!(res.status(), 202);

    // The refused request cached nothing, and is on record as refused with 429.
    let call = app.start_call_json(&s, "+12125550100").await;
    assert_eq!(call["source"], "fallback");
    let deliveries = app.deliveries(&s.agent_id);
    let refused: Vec<_> = deliveries.iter().filter(|d| d["status"] == 429).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["outcome"], "refused");

    // Once Retry-After has passed, the sender is served again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let res = app.ingest(&s, &body(&s.agent_id, "+12125550100")).await;
    assert_eq!(res.status(), 202);
}

#[tokio::test]
async fn one_address_over_its_rate_gets_429_naming_the_address_limit_on_every_webhook() {
    let app = spawn_limited(0, 3).await;
    let s = app.setup(0);
    let other = app.setup(0);
    for i in 0..3 {
        let res = app
            .ingest(&s, &body(&s.agent_id, &format!("+1212555020{i}")))
            .await;
        assert_eq!(res.status(), 202, "request {i} is within the burst");
    }
    for (setup, phone) in [(&s, "+12125550100"), (&other, "+12125550100")] {
        // Checked before the key: a flood without keys is limited too.
        for key in [setup.key.as_str(), "pcwk_wrong"] {
            let res = app
                .client
                .post(&setup.url)
                .header("X-Authorization", key)
                .json(&body(&setup.agent_id, phone))
                .send()
                .await
                .unwrap();
            retry_after(&res);
            let problem = assert_problem(res, 429, "rate-limited").await;
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains("your address") && detail.contains("3 requests a second"),
                "{detail}"
            );
        }
    }
    let call = app.start_call_json(&other, "+12125550100").await;
    assert_eq!(call["source"], "fallback");
    // Refused before the key was looked at, they are counted, not recorded one by one.
    assert!(
        app.deliveries(&other.agent_id)
            .iter()
            .all(|d| d["status"] != 429)
    );
    // Calls are not ingest: the runtime is never throttled by these limits.
    for i in 0..10 {
        app.start_call_json(&s, &format!("+1646555010{i}")).await;
    }
}

#[tokio::test]
async fn a_sender_within_its_rate_is_never_refused() {
    let app = spawn_limited(20, 0).await;
    let s = app.setup(0);
    // 40 requests over at least 1.6 s: twice the burst of 20, within the rate as it refills.
    for i in 0..40 {
        let res = app
            .ingest(&s, &body(&s.agent_id, &format!("+121255503{i:02}")))
            .await;
        assert_eq!(res.status(), 202, "request {i}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}
