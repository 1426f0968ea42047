use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{assert_problem, example_payload, spawn_app};

#[tokio::test]
async fn a_call_started_before_its_webhook_is_woken_by_it() {
    let app = spawn_app().await;
    let setup = app.setup(5000);
    let call = {
        let (app, setup) = (&app, &setup);
        async move { app.start_call_json(setup, "+1234567890").await }
    };
    let webhook = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let res = app.ingest(&setup, &example_payload(&setup.agent_id)).await;
        assert_eq!(res.status(), 202);
        Instant::now()
    };
    let started = Instant::now();
    let (call, acked_at) = tokio::join!(call, webhook);
    let answered = started.elapsed();

    assert_eq!(call["source"], "webhook");
    assert_eq!(call["precall"][0]["outcome"], "arrived");
    assert_eq!(call["variables"]["customer_name"], "Jane Doe");
    let waited = call["waitedMs"].as_i64().unwrap();
    assert!(
        waited >= 150,
        "the call waited for the webhook ({waited} ms)"
    );
    // Woken by the webhook, not by the 5 s fallback.
    assert!(
        answered < Duration::from_millis(2500),
        "answered after {answered:?}"
    );
    assert!(acked_at.duration_since(started) <= answered + Duration::from_millis(100));
}

#[tokio::test]
async fn a_call_without_webhook_falls_back_after_the_configured_wait_with_defaults() {
    let app = spawn_app().await;
    let setup = app.setup(400);
    app.declare(&setup.agent_id, "priority", "string", Some("normal"));
    app.declare(&setup.agent_id, "risk_score", "number", Some("0"));
    let started = Instant::now();
    let call = app.start_call_json(&setup, "+12125551234").await;
    let elapsed = started.elapsed();

    assert_eq!(call["source"], "fallback");
    assert_eq!(call["precall"][0]["outcome"], "fallback");
    let waited = call["waitedMs"].as_i64().unwrap();
    assert!(
        (400..900).contains(&waited),
        "waited {waited} ms for a 400 ms fallback"
    );
    assert!(elapsed >= Duration::from_millis(400));
    assert_eq!(call["variables"]["priority"], "normal");
    assert_eq!(call["variables"]["risk_score"], json!(0));
    assert_eq!(call["variables"]["caller_phone"], "+12125551234");
}

#[tokio::test]
async fn a_call_is_read_back_by_its_id() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    app.ingest(&setup, &example_payload(&setup.agent_id)).await;
    let res = app.start_call(&setup, "+1234567890").await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let started: Value = res.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/calls/{}", started["callId"].as_str().unwrap())
    );

    let read = app
        .get_json(&format!("{}{location}", app.address), &setup.token)
        .await;
    for field in [
        "callId",
        "agentId",
        "from",
        "to",
        "source",
        "waitedMs",
        "variables",
        "precall",
        "startedAt",
    ] {
        assert_eq!(read[field], started[field], "{field}");
    }
    assert_eq!(read["lateContext"], Value::Null);
}

#[tokio::test]
async fn runtime_tokens_are_required_and_scoped_to_their_agent() {
    let app = spawn_app().await;
    let mine = app.setup(0);
    let theirs = app.setup(0);
    let url = format!("{}/api/v1/calls", app.address);
    let body = json!({"agentId": mine.agent_id, "from": "+12125551234"});

    let res = app.client.post(&url).json(&body).send().await.unwrap();
    assert_problem(res, 401, "unauthorized").await;
    // An unknown token, a webhook key (not a runtime token), another agent's token.
    for (token, status, slug) in [
        ("pcrt_nope", 401, "unauthorized"),
        (mine.key.as_str(), 401, "unauthorized"),
        (theirs.token.as_str(), 403, "forbidden"),
    ] {
        let res = app
            .client
            .post(&url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(res, status, slug).await;
    }

    let call = app.start_call_json(&mine, "+12125551234").await;
    let read = app
        .client
        .get(format!("{url}/{}", call["callId"].as_str().unwrap()))
        .bearer_auth(&theirs.token)
        .send()
        .await
        .unwrap();
    assert_problem(read, 404, "not-found").await;
    // Answering it with another agent's token finds nothing either (with its own token,
    // the ended call refuses answers: the 404 is about whose call it is).
    let input = format!("{url}/{}/input", call["callId"].as_str().unwrap());
    let answers = json!({"answers": {"anything": "x"}});
    for (token, status, slug) in [
        (theirs.token.as_str(), 404, "not-found"),
        (mine.token.as_str(), 409, "call-conflict"),
    ] {
        let res = app
            .client
            .post(&input)
            .bearer_auth(token)
            .json(&answers)
            .send()
            .await
            .unwrap();
        assert_problem(res, status, slug).await;
    }
}

#[tokio::test]
async fn bad_call_requests_are_refused_with_problems() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    let url = format!("{}/api/v1/calls", app.address);
    let post = |body: String| {
        app.client
            .post(&url)
            .bearer_auth(&setup.token)
            .header("Content-Type", "application/json")
            .body(body)
    };
    let res = post("{".into()).send().await.unwrap();
    assert_problem(res, 400, "malformed-json").await;
    let res = post(json!({"agentId": setup.agent_id}).to_string())
        .send()
        .await
        .unwrap();
    assert_problem(res, 422, "validation-failed").await;
    let res =
        post(json!({"agentId": setup.agent_id, "from": "+12125551234", "extra": 1}).to_string())
            .send()
            .await
            .unwrap();
    assert_problem(res, 422, "validation-failed").await;
    let res = post(json!({"agentId": setup.agent_id, "from": "not a number"}).to_string())
        .send()
        .await
        .unwrap();
    let body = assert_problem(res, 422, "validation-failed").await;
    assert_eq!(body["errors"][0]["pointer"], "/from");
    let res = post(json!({"agentId": "AAAAAAAAAAAAAAAAAAAA", "from": "+12125551234"}).to_string())
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not-found").await;
    let res = app
        .client
        .post(&url)
        .bearer_auth(&setup.token)
        .body(json!({"agentId": setup.agent_id, "from": "+12125551234"}).to_string())
        .send()
        .await
        .unwrap();
    assert_problem(res, 415, "unsupported-media-type").await;
}

#[tokio::test]
async fn a_call_to_an_agent_without_webhooks_starts_at_once_from_defaults() {
    let app = spawn_app().await;
    let agent_id = app.create_agent("US");
    let token = app.create_token(&agent_id);
    app.declare(&agent_id, "priority", "string", Some("normal"));
    let res = app.start_call_as(&token, &agent_id, "+12125551234").await;
    assert_eq!(res.status(), 201);
    let call: Value = res.json().await.unwrap();
    assert_eq!(call["source"], "fallback");
    assert_eq!(call["precall"], json!([]));
    assert_eq!(call["variables"]["priority"], "normal");
}

#[tokio::test]
async fn two_calls_from_one_caller_waiting_together_share_no_data() {
    let app = spawn_app().await;
    let setup = app.setup(1500);
    let phone = "+12125551234";
    let hook = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let body = json!({"agentId": setup.agent_id, "phoneNumber": phone, "x": 1});
        assert_eq!(app.ingest(&setup, &body).await.status(), 202);
    };
    let (a, b, _) = tokio::join!(
        app.start_call_json(&setup, phone),
        app.start_call_json(&setup, phone),
        hook
    );
    let sources = [a["source"].as_str().unwrap(), b["source"].as_str().unwrap()];
    assert!(
        sources.contains(&"webhook") && sources.contains(&"fallback"),
        "{sources:?}"
    );
    let winner = if a["source"] == "webhook" { &a } else { &b };
    let delivery = &app.deliveries(&setup.agent_id)[0];
    assert_eq!(delivery["outcome"], "used");
    assert_eq!(delivery["callId"], winner["callId"]);
}

/// A webhook merging into data a call has just read is never lost: either the call gets it
/// or the data stays for the next call.
#[tokio::test]
async fn data_merged_while_a_call_starts_is_never_lost() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    for i in 0..60 {
        let phone = format!("+1212555{:04}", 2000 + i);
        let first = json!({"agentId": setup.agent_id, "phoneNumber": phone, "a": 1});
        assert_eq!(app.ingest(&setup, &first).await.status(), 202);
        let second = json!({"agentId": setup.agent_id, "phoneNumber": phone, "b": 2});
        let (call, res) = tokio::join!(
            app.start_call_json(&setup, &phone),
            app.ingest(&setup, &second)
        );
        assert_eq!(res.status(), 202);
        assert_eq!(call["variables"]["a"], json!(1), "{phone}");
        if call["variables"].get("b").is_none() {
            let next = app.start_call_json(&setup, &phone).await;
            assert_eq!(
                next["variables"]["b"],
                json!(2),
                "{phone}: acknowledged data lost"
            );
        }
    }
}

#[tokio::test]
async fn late_data_then_used_by_the_next_call_is_marked_used_by_it() {
    let app = spawn_app().await;
    let setup = app.setup(50);
    let phone = "+12125551234";
    let first = app.start_call_json(&setup, phone).await;
    assert_eq!(first["source"], "fallback");
    let body = json!({"agentId": setup.agent_id, "phoneNumber": phone, "x": 1});
    assert_eq!(app.ingest(&setup, &body).await.status(), 202);
    assert_eq!(app.deliveries(&setup.agent_id)[0]["outcome"], "late");

    let second = app.start_call_json(&setup, phone).await;
    assert_eq!(second["source"], "webhook");
    let delivery = &app.deliveries(&setup.agent_id)[0];
    assert_eq!(delivery["outcome"], "used");
    assert_eq!(delivery["callId"], second["callId"]);
}

#[tokio::test]
async fn late_data_for_the_one_action_a_call_fell_back_on_is_recorded() {
    let app = spawn_app().await;
    let agent_id = app.create_agent("US");
    let (crm_url, crm_key) = app.create_webhook(&agent_id, 100, 600);
    let (risk_url, risk_key) = app.create_webhook(&agent_id, 100, 600);
    let token = app.create_token(&agent_id);
    let crm = crate::helpers::Setup {
        agent_id: agent_id.clone(),
        url: crm_url,
        key: crm_key,
        token: token.clone(),
    };
    let risk = crate::helpers::Setup {
        agent_id: agent_id.clone(),
        url: risk_url,
        key: risk_key,
        token,
    };
    let phone = "+12125551234";
    let body = json!({"agentId": agent_id, "phoneNumber": phone, "crm": 1});
    assert_eq!(app.ingest(&crm, &body).await.status(), 202);
    let call = app.start_call_json(&crm, phone).await;
    assert_eq!(call["source"], "webhook");
    assert_eq!(call["precall"][1]["outcome"], "fallback");

    let body = json!({"agentId": agent_id, "phoneNumber": phone, "risk": 92});
    assert_eq!(app.ingest(&risk, &body).await.status(), 202);
    let read: Value = app
        .client
        .get(format!(
            "{}/api/v1/calls/{}",
            app.address,
            call["callId"].as_str().unwrap()
        ))
        .bearer_auth(&crm.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["lateContext"]["fields"]["risk"], json!(92));
    assert_eq!(app.deliveries(&agent_id)[0]["outcome"], "late");
}

/// Answers may fill variables no schema declares, in the shapes a webhook field may have: a
/// list inside a list, an object in a list or a number beyond 2^53 − 1 is refused, pointing
/// at the answer, and the call still waits for its question.
#[tokio::test]
async fn answers_to_undeclared_variables_are_refused_in_shapes_a_webhook_could_not_send() {
    let app = spawn_app().await;
    let (setup, _) = crate::examples::demo_waiting(&app, "0").await;
    let call = app.start_call_json(&setup, "+12125550199").await;
    assert_eq!(call["question"]["variable"], "reason", "{call:#}");
    let input = format!(
        "{}/api/v1/calls/{}/input",
        app.address,
        call["callId"].as_str().unwrap()
    );
    let answer = |extra: Value| {
        app.client
            .post(&input)
            .bearer_auth(&setup.token)
            .json(&json!({ "answers": { "reason": "billing", "extra": extra } }))
            .send()
    };

    for refused in [json!([[1]]), json!([{ "a": 1 }]), json!(1e300)] {
        let problem = assert_problem(
            answer(refused.clone()).await.unwrap(),
            422,
            "validation-failed",
        )
        .await;
        assert_eq!(
            problem["errors"][0]["pointer"], "/answers/extra",
            "{refused}"
        );
    }

    let res = answer(json!(["a", 1, null])).await.unwrap();
    assert_eq!(res.status(), 200);
    let call: Value = res.json().await.unwrap();
    assert_eq!(call["variables"]["extra"], json!(["a", 1, null]));
}

#[tokio::test]
async fn a_caller_sent_in_international_form_with_a_trunk_zero_finds_its_data() {
    let app = spawn_app().await;
    let setup = app.setup(300);
    let mut payload = example_payload(&setup.agent_id);
    payload["phoneNumber"] = json!("+44 20 7946 0018");
    assert_eq!(app.ingest(&setup, &payload).await.status(), 202);

    // Shaped like a stored number, but not normal: the trunk zero must go.
    let call = app.start_call_json(&setup, "+4402079460018").await;
    assert_eq!(call["source"], "webhook");
    assert_eq!(call["precall"][0]["outcome"], "cached");
    assert_eq!(call["from"], "+442079460018");
    assert_eq!(call["variables"]["caller_phone"], "+442079460018");
    assert_eq!(call["variables"]["customer_name"], "Jane Doe");
}

#[tokio::test]
async fn a_caller_in_stored_form_is_normalised_when_no_data_waits_for_it() {
    let app = spawn_app().await;
    let setup = app.setup(200);
    let call = app.start_call_json(&setup, "+4402079460018").await;
    assert_eq!(call["source"], "fallback");
    assert_eq!(call["from"], "+442079460018");
    assert_eq!(call["variables"]["caller_phone"], "+442079460018");
}

#[tokio::test]
async fn a_caller_in_stored_form_to_an_agent_without_webhooks_is_normalised() {
    let app = spawn_app().await;
    let agent_id = app.create_agent("US");
    let token = app.create_token(&agent_id);
    let res = app.start_call_as(&token, &agent_id, "+4402079460018").await;
    assert_eq!(res.status(), 201);
    let call: Value = res.json().await.unwrap();
    assert_eq!(call["from"], "+442079460018");
}
