use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Setup, assert_problem, example_payload, spawn_app, spawn_app_with};

#[tokio::test]
async fn documented_example_is_accepted_with_normalised_phone_fields_and_expiry() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    let res = app.ingest(&setup, &example_payload(&setup.agent_id)).await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["phoneNumber"], "+1234567890");
    assert_eq!(
        body["fields"],
        json!(["customer_name", "issue_type", "priority"])
    );
    let expires = body["expiresAt"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.len() >= 20, "{expires}");
}

#[tokio::test]
async fn example_fields_reach_a_call_from_the_same_number_written_differently() {
    let app = spawn_app().await;
    let setup = app.setup(2000);
    assert_eq!(
        app.ingest(&setup, &example_payload(&setup.agent_id))
            .await
            .status(),
        202
    );

    let call = app.start_call_json(&setup, "+1 234-567-890").await;
    assert_eq!(call["source"], "webhook");
    assert_eq!(call["from"], "+1234567890");
    let vars = &call["variables"];
    assert_eq!(vars["customer_name"], "Jane Doe");
    assert_eq!(vars["priority"], "high");
    assert_eq!(vars["issue_type"], "billing");
    assert_eq!(vars["caller_phone"], "+1234567890");
    assert_eq!(vars["called_number"], "+12125550199");
    assert_eq!(vars["call_id"], call["callId"]);
    assert_eq!(call["precall"][0]["outcome"], "cached");
}

#[tokio::test]
async fn fraud_example_comes_back_as_typed_variables() {
    let app = spawn_app().await;
    let setup = app.setup(2000);
    app.declare(&setup.agent_id, "risk_score", "number", Some("0"));
    app.declare(&setup.agent_id, "flagged", "boolean", Some("false"));
    let res = app
        .ingest(
            &setup,
            &json!({"agentId": setup.agent_id, "phoneNumber": "+1234567890",
                    "risk_score": 92, "flagged": true}),
        )
        .await;
    assert_eq!(res.status(), 202);

    let call = app.start_call_json(&setup, "+1 (234) 567-890").await;
    assert_eq!(call["variables"]["risk_score"], json!(92));
    assert_eq!(call["variables"]["flagged"], json!(true));
}

#[tokio::test]
async fn declared_types_are_coerced_losslessly_from_text() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    app.declare(&setup.agent_id, "budget", "number", None);
    app.declare(&setup.agent_id, "vip", "boolean", None);
    app.declare(&setup.agent_id, "interests", "list", None);
    app.declare(&setup.agent_id, "account", "string", None);
    let res = app
        .ingest(
            &setup,
            &json!({"agentId": setup.agent_id, "phoneNumber": "+12125551234",
                    "budget": "10000", "vip": "true", "interests": "solar", "account": 4417}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let vars = app.start_call_json(&setup, "+12125551234").await["variables"].clone();
    assert_eq!(vars["budget"], json!(10000));
    assert_eq!(vars["vip"], json!(true));
    assert_eq!(vars["interests"], json!(["solar"]));
    assert_eq!(vars["account"], json!("4417"));
}

#[tokio::test]
async fn a_second_webhook_merges_later_values_win_and_expiry_is_refreshed() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    let first: Value = app
        .ingest(
            &setup,
            &json!({"agentId": setup.agent_id, "phoneNumber": "12125551234",
                    "priority": "low", "customer_name": "Jane"}),
        )
        .await
        .json()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second: Value = app
        .ingest(
            &setup,
            &json!({"agentId": setup.agent_id, "phoneNumber": "+1 (212) 555-1234",
                    "priority": "high", "plan": "enterprise"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        second["fields"],
        json!(["customer_name", "plan", "priority"])
    );
    assert!(second["expiresAt"].as_str() > first["expiresAt"].as_str());

    let vars = app.start_call_json(&setup, "212-555-1234").await["variables"].clone();
    assert_eq!(vars["priority"], "high");
    assert_eq!(vars["customer_name"], "Jane");
    assert_eq!(vars["plan"], "enterprise");
}

#[tokio::test]
async fn null_clears_a_field_so_its_default_applies() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    app.declare(&setup.agent_id, "priority", "string", Some("normal"));
    let phone = "+12125551234";
    app.ingest(
        &setup,
        &json!({"agentId": setup.agent_id, "phoneNumber": phone, "priority": "high"}),
    )
    .await;
    let res: Value = app
        .ingest(
            &setup,
            &json!({"agentId": setup.agent_id, "phoneNumber": phone, "priority": null}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["fields"], json!([]));
    let vars = app.start_call_json(&setup, phone).await["variables"].clone();
    assert_eq!(vars["priority"], "normal");
}

async fn post_with_key_header(
    app: &crate::helpers::TestApp,
    setup: &Setup,
    header: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    app.client
        .post(&setup.url)
        .header("X-Authorization", &setup.key)
        .header(header, key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replayed_idempotency_key_returns_the_first_answer_and_changes_nothing() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    let phone = "+12125551234";
    let original = json!({"agentId": setup.agent_id, "phoneNumber": phone, "priority": "high"});
    let first = post_with_key_header(&app, &setup, "Idempotency-Key", "evt-1", &original).await;
    assert_eq!(first.status(), 202);
    let first_body = first.text().await.unwrap();

    // A later update, then a retry of the first request.
    app.ingest(
        &setup,
        &json!({"agentId": setup.agent_id, "phoneNumber": phone, "priority": "low"}),
    )
    .await;
    let replay = post_with_key_header(&app, &setup, "Idempotency-Key", "evt-1", &original).await;
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), first_body);

    let vars = app.start_call_json(&setup, phone).await["variables"].clone();
    assert_eq!(
        vars["priority"], "low",
        "the replay must not re-apply the first body"
    );
    let outcomes: Vec<_> = app
        .deliveries(&setup.agent_id)
        .iter()
        .map(|d| d["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["replayed", "used", "used"]);
}

#[tokio::test]
async fn webhook_id_header_deduplicates_like_an_idempotency_key() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    let body = json!({"agentId": setup.agent_id, "phoneNumber": "+12125551234", "n": 1});
    for _ in 0..3 {
        let res = post_with_key_header(
            &app,
            &setup,
            "webhook-id",
            "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
            &body,
        )
        .await;
        assert_eq!(res.status(), 202);
    }
    let statuses: Vec<_> = app
        .deliveries(&setup.agent_id)
        .iter()
        .map(|d| d["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["replayed", "replayed", "cached"]);
}

#[tokio::test]
async fn bearer_authorization_is_accepted_too() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    let res = app
        .client
        .post(&setup.url)
        .bearer_auth(&setup.key)
        .json(&example_payload(&setup.agent_id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}

#[tokio::test]
async fn numbers_without_country_code_use_the_agents_region() {
    let app = spawn_app().await;
    let agent_id = app.create_agent("GB");
    let (url, key) = app.create_webhook(&agent_id, 0, 600);
    let setup = Setup {
        token: app.create_token(&agent_id),
        agent_id,
        url,
        key,
    };
    let res: Value = app
        .ingest(
            &setup,
            &json!({"agentId": setup.agent_id, "phoneNumber": "020 7946 0018", "x": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["phoneNumber"], "+442079460018");
    let call = app.start_call_json(&setup, "+44 20 7946 0018").await;
    assert_eq!(call["source"], "webhook");
}

#[tokio::test]
async fn every_request_with_a_valid_key_is_recorded_as_a_delivery_without_its_key() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    app.ingest(&setup, &example_payload(&setup.agent_id)).await;
    let refused = app
        .client
        .post(&setup.url)
        .header("X-Authorization", format!("{}x", setup.key))
        .json(&example_payload(&setup.agent_id))
        .send()
        .await
        .unwrap();
    assert_problem(refused, 401, "unauthorized").await;
    let bad = app
        .ingest(
            &setup,
            &json!({"agentId": setup.agent_id, "phoneNumber": "nope"}),
        )
        .await;
    assert_problem(bad, 422, "validation-failed").await;

    let deliveries = app.deliveries(&setup.agent_id);
    let statuses: Vec<_> = deliveries
        .iter()
        .map(|d| d["status"].as_i64().unwrap())
        .collect();
    // The wrong key's request is counted, not recorded (see tests/api/retention.rs).
    assert_eq!(statuses, [422, 202]);
    assert_eq!(deliveries[1]["phoneNumber"], "+1234567890");
    assert_eq!(deliveries[1]["fields"]["customer_name"], "Jane Doe");
    assert_eq!(deliveries[0]["problems"][0]["pointer"], "/phoneNumber");
    assert!(
        deliveries[0]["bodyExcerpt"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    let everything = serde_json::to_string(&deliveries).unwrap();
    assert!(
        !everything.contains(&setup.key[5..]),
        "a delivery holds the key"
    );
}

#[tokio::test]
async fn expired_data_is_never_used_and_is_swept() {
    let app = spawn_app_with(|s| s.sweep_interval = Duration::from_millis(300)).await;
    let agent_id = app.create_agent("US");
    let (url, key) = app.create_webhook(&agent_id, 0, 1);
    let setup = Setup {
        token: app.create_token(&agent_id),
        agent_id,
        url,
        key,
    };
    app.ingest(&setup, &example_payload(&setup.agent_id)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let call = app.start_call_json(&setup, "+1234567890").await;
    assert_eq!(call["source"], "fallback");
    assert!(call["variables"].get("customer_name").is_none());

    tokio::time::sleep(Duration::from_millis(700)).await;
    let deliveries = app.deliveries(&setup.agent_id);
    assert_eq!(deliveries[0]["outcome"], "expired");
}

#[tokio::test]
async fn data_used_by_a_call_is_not_used_again() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    app.ingest(&setup, &example_payload(&setup.agent_id)).await;
    let first = app.start_call_json(&setup, "+1234567890").await;
    let second = app.start_call_json(&setup, "+1234567890").await;
    assert_eq!(first["source"], "webhook");
    assert_eq!(second["source"], "fallback");
    let delivery = &app.deliveries(&setup.agent_id)[0];
    assert_eq!(delivery["outcome"], "used");
    assert_eq!(delivery["callId"], first["callId"]);
}

#[tokio::test]
async fn data_arriving_after_its_call_fell_back_is_recorded_against_that_call() {
    let app = spawn_app().await;
    let setup = app.setup(100);
    let call = app.start_call_json(&setup, "+12125551234").await;
    assert_eq!(call["source"], "fallback");
    let call_id = call["callId"].as_str().unwrap();

    let res = app
        .ingest(
            &setup,
            &json!({"agentId": setup.agent_id, "phoneNumber": "+12125551234", "priority": "high"}),
        )
        .await;
    assert_eq!(res.status(), 202);

    let read: Value = app
        .client
        .get(format!("{}/api/v1/calls/{call_id}", app.address))
        .bearer_auth(&setup.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["lateContext"]["fields"]["priority"], "high");
    let delivery = &app.deliveries(&setup.agent_id)[0];
    assert_eq!(delivery["outcome"], "late");
    assert_eq!(delivery["callId"], call_id);
}
