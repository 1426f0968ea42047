//! Smaller promises of the API contract: every 422 points into the body, nothing echoes
//! unbounded input, the Bearer scheme is case-insensitive, and an address that keeps naming
//! unknown URLs or tokens is limited before each costs a lookup.

use precall::http::rate::Rates;
use serde_json::json;

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn call_start_422s_point_at_the_field_at_fault() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    let cases = [
        (json!({"agentId": setup.agent_id}), "/from"),
        (json!({"from": "+12125550100"}), "/agentId"),
        (json!({"agentId": setup.agent_id, "from": 5}), "/from"),
        (
            json!({"agentId": setup.agent_id, "from": "+12125550100", "colour": "red"}),
            "/colour",
        ),
        (
            json!({"agentId": setup.agent_id, "from": "+12125550100", "to": []}),
            "/to",
        ),
    ];
    for (body, pointer) in cases {
        let res = app
            .client
            .post(format!("{}/api/v1/calls", app.address))
            .bearer_auth(&setup.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(res, 422, "validation-failed").await;
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
        assert!(
            !problem["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains(" at line "),
            "{problem}"
        );
    }
    let res = app
        .client
        .post(format!("{}/api/v1/calls/nope/input", app.address))
        .bearer_auth(&setup.token)
        .json(&json!({"answers": {"reason": "x"}, "extra": 1}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(res, 422, "validation-failed").await;
    assert_eq!(problem["errors"][0]["pointer"], "/extra");
}

#[tokio::test]
async fn answers_never_echo_more_than_an_excerpt_of_what_was_sent() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    let long = "A".repeat(10_000);
    let res = app
        .client
        .post(format!("{}/api/v1/calls", app.address))
        .bearer_auth(&setup.token)
        .json(&json!({"agentId": long, "from": "+12125550100"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(res, 404, "not-found").await.to_string();
    assert!(body.len() < 600, "{} bytes: {body}", body.len());
    let res = app
        .client
        .get(format!("{}/api/v1/calls/{long}", app.address))
        .bearer_auth(&setup.token)
        .send()
        .await
        .unwrap();
    let body = assert_problem(res, 404, "not-found").await.to_string();
    assert!(body.len() < 600, "{} bytes", body.len());
}

#[tokio::test]
async fn the_bearer_scheme_is_read_without_regard_to_case() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let res = app
            .client
            .post(format!("{}/api/v1/calls", app.address))
            .header("authorization", format!("{scheme} {}", setup.token))
            .json(&json!({"agentId": setup.agent_id, "from": "+12125550100"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "runtime token with {scheme}");
        let res = app
            .client
            .post(&setup.url)
            .header("authorization", format!("{scheme} {}", setup.key))
            .json(&json!({"agentId": setup.agent_id, "phoneNumber": "+12125550100"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202, "webhook key with {scheme}");
    }
}

#[tokio::test]
async fn an_address_naming_unknown_urls_or_tokens_is_limited_before_the_lookup() {
    let app = app_with_lookups(5).await;
    let setup = app.setup(0);
    let body = json!({"agentId": setup.agent_id, "phoneNumber": "+12125550100"});
    assert_eq!(app.ingest(&setup, &body).await.status(), 202);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let res = app
            .client
            .post(format!("{}/webhooks/no-such-webhook-{i:020}", app.address))
            .header("X-Authorization", &setup.key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            assert!(res.headers().contains_key("retry-after"));
            assert_problem(res, 429, "rate-limited").await;
        }
    }
    assert_eq!(&statuses[..5], [404; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");

    // Unknown runtime tokens from the same address: refused at once now.
    let res = app
        .client
        .get(format!("{}/api/v1/calls/x", app.address))
        .bearer_auth("pcrt_not_a_token")
        .send()
        .await
        .unwrap();
    assert_problem(res, 429, "rate-limited").await;
    // A URL the server already knows costs no lookup: its sender is not refused.
    assert_eq!(app.ingest(&setup, &body).await.status(), 202);
}

/// A server whose only limit is `n` failed lookups a second per address.
async fn app_with_lookups(n: u32) -> TestApp {
    spawn_app_with(|s| {
        s.rates = Rates {
            per_action: 0,
            per_source: 0,
            failed_lookups: n,
            burst_secs: 1,
        }
    })
    .await
}

#[tokio::test]
async fn unknown_voice_platform_urls_use_up_the_addresss_lookups() {
    let app = app_with_lookups(3).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let res = app
            .client
            .post(format!(
                "{}/connect/no-such-connection-{i:020}",
                app.address
            ))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [404, 404, 404, 429, 429]);
    // Unknown webhook URLs from the same address: refused at once now.
    let res = app
        .client
        .post(format!(
            "{}/webhooks/no-such-webhook-{:020}",
            app.address, 0
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 429, "rate-limited").await;
}

#[tokio::test]
async fn unknown_runtime_tokens_use_up_the_addresss_lookups() {
    let app = app_with_lookups(3).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = app
            .client
            .get(format!("{}/api/v1/calls/x", app.address))
            .bearer_auth("pcrt_not_a_token")
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
}
