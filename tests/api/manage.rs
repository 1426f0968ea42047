//! The management API, as automation drives it: agents and their configuration as one
//! versioned document (draft with an ETag, publish, versions, restore, discard), round trips
//! between servers, tokens with too few rights, webhooks' secrets, variables, deliveries and
//! calls.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::admin::Console;
use crate::helpers::{TestApp, assert_problem, spawn_app};

/// A server with an admin and an API token acting for it.
struct Api {
    app: TestApp,
    token: String,
}

impl Api {
    async fn new() -> Self {
        let app = spawn_app().await;
        Console::set_up(&app).await;
        let token = app.cli_json(&["api-token", "create", "--name", "ci"])["token"]
            .as_str()
            .unwrap()
            .to_owned();
        Self { app, token }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.app.address)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Response {
        let mut req = self
            .app
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(e) = etag {
            req = req.header("if-match", e);
        }
        req.send().await.unwrap()
    }

    async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let res = self.send(method.clone(), path, body, None).await;
        assert!(
            res.status().is_success(),
            "{method} {path}: {}",
            res.status()
        );
        res.json().await.unwrap()
    }

    /// Creates an agent; returns its id.
    async fn agent(&self, name: &str) -> String {
        let res = self
            .send(Method::POST, "/agents", Some(&json!({"name": name})), None)
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json::<Value>().await.unwrap()["agentId"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The draft and its ETag.
    async fn draft(&self, agent: &str) -> (Value, String) {
        let res = self
            .send(Method::GET, &format!("/agents/{agent}/draft"), None, None)
            .await;
        assert_eq!(res.status(), 200);
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        (res.json().await.unwrap(), etag)
    }

    /// Replaces the draft (reading its ETag first); returns the answer.
    async fn put_draft(&self, agent: &str, doc: &Value) -> Value {
        let (_, etag) = self.draft(agent).await;
        let res = self
            .send(
                Method::PUT,
                &format!("/agents/{agent}/draft"),
                Some(doc),
                Some(&etag),
            )
            .await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        res.json().await.unwrap()
    }

    async fn publish(&self, agent: &str, message: &str) -> Value {
        let res = self
            .send(
                Method::POST,
                &format!("/agents/{agent}/publish"),
                Some(&json!({"message": message})),
                None,
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap()
        );
        res.json().await.unwrap()
    }

    /// A runtime token for `agent`.
    async fn runtime_token(&self, agent: &str) -> String {
        let made = self
            .json(
                Method::POST,
                &format!("/agents/{agent}/runtime-tokens"),
                Some(&json!({"name": "runtime"})),
            )
            .await;
        made["token"].as_str().unwrap().to_owned()
    }

    async fn call(&self, token: &str, agent: &str, from: &str) -> Value {
        let res = self.app.start_call_as(token, agent, from).await;
        assert_eq!(res.status(), 201);
        res.json().await.unwrap()
    }
}

/// A document written by hand, not one of the repository's: a greeting by name, a Filter
/// on the budget, a transfer to a Sales flow, a webhook and the budget declared.
fn handwritten() -> Value {
    json!({
        "format": "precall-agent/1",
        "firstFlow": "main",
        "flows": [
            {"key": "main", "name": "Main", "blocks": [
                {"key": "hello", "kind": "greeting", "message": "Hi {{name|there}}.", "next": "route",
                 "position": {"x": 0, "y": 0}},
                {"key": "route", "kind": "filter", "cases": [
                    {"name": "Big", "join": "and", "conditions": [
                        {"variable": "budget", "op": "greater_than", "value": 1000}], "next": "sales"}],
                 "else": "bye"},
                {"key": "sales", "kind": "transfer_flow", "flow": "sales"},
                {"key": "bye", "kind": "end_call", "message": "Goodbye.", "outcome": "small"}
            ]},
            {"key": "sales", "name": "Sales", "blocks": [
                {"key": "start", "kind": "start", "message": "Sales here.", "next": "desk"},
                {"key": "desk", "kind": "transfer_call", "destination": "+12125550100",
                 "department": "", "message": "Connecting."}
            ]}
        ],
        "precall": [
            {"key": "crm", "kind": "webhook", "name": "CRM", "waitMs": 0, "ttlSecs": 600, "enabled": true}
        ],
        "variables": [
            {"name": "budget", "type": "number", "default": 0, "description": "", "source": {"action": "crm"}},
            {"name": "name", "type": "string", "default": null, "description": "", "source": null}
        ]
    })
}

#[tokio::test]
async fn a_document_round_trips_through_export_and_import_on_a_fresh_server() {
    let api = Api::new().await;
    let agent = api.agent("Sales line").await;
    let saved = api.put_draft(&agent, &handwritten()).await;
    assert_eq!(saved["problems"], json!([]), "{saved}");
    let webhooks = saved["webhooks"].as_array().unwrap();
    assert_eq!(
        webhooks.len(),
        1,
        "the new webhook's URL and key, once: {saved}"
    );
    assert!(webhooks[0]["apiKey"].as_str().unwrap().starts_with("pcwk_"));
    api.publish(&agent, "First from code").await;

    // Export with the CLI, import into a new agent of another server, export again.
    let exported = api.app.cli(&["agent", "export", &agent]);
    let other = Api::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.json");
    std::fs::write(&file, &exported).unwrap();
    let imported = other.app.cli_json(&[
        "agent",
        "import",
        "--new",
        "Copy",
        "--publish",
        "--message",
        "copied",
        file.to_str().unwrap(),
    ]);
    assert_eq!(imported["version"], 2, "{imported}");
    let copy = imported["agentId"].as_str().unwrap();
    let again = other.app.cli(&["agent", "export", copy]);
    assert_eq!(again, exported);
    // The same through the API: the draft and the published version are the document.
    let (draft, _) = other.draft(copy).await;
    assert_eq!(draft, serde_json::from_str::<Value>(&exported).unwrap());
    let v2 = other
        .json(Method::GET, &format!("/agents/{copy}/versions/2"), None)
        .await;
    assert_eq!(v2, draft);
}

#[tokio::test]
async fn an_agent_created_from_a_document_has_it_as_its_draft_and_a_refused_one_makes_nothing() {
    let api = Api::new().await;
    let res = api
        .send(
            Method::POST,
            "/agents",
            Some(&json!({"name": "From code", "document": handwritten()})),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let made: Value = res.json().await.unwrap();
    let agent = made["agentId"].as_str().unwrap();
    assert_eq!(made["name"], "From code", "{made}");
    assert_eq!(made["problems"], json!([]), "{made}");
    // The draft's Webhook action has its URL and key, shown this once; nothing is live yet.
    assert_eq!(made["webhooks"].as_array().unwrap().len(), 1, "{made}");
    assert!(
        made["webhooks"][0]["apiKey"]
            .as_str()
            .unwrap()
            .starts_with("pcwk_")
    );
    assert_eq!(made["publishedVersion"], 1, "{made}");
    assert_eq!(
        made["draftChanges"].as_u64().map(|n| n > 0),
        Some(true),
        "{made}"
    );
    // Its draft is what a PUT of the same document makes of another agent's.
    let other = api.agent("By hand").await;
    api.put_draft(&other, &handwritten()).await;
    let (from_create, _) = api.draft(agent).await;
    let (from_put, _) = api.draft(&other).await;
    assert_eq!(from_create, from_put);
    assert_eq!(api.publish(agent, "From code").await["version"], 2);

    // One that holds together but could not be published yet is made, and says what is left,
    // pointing into the request as a refusal does.
    let mut unfinished = handwritten();
    unfinished["flows"][0]["blocks"][0]["message"] = json!("Hi {{nmae}}.");
    let res = api
        .send(
            Method::POST,
            "/agents",
            Some(&json!({"name": "Unfinished", "document": unfinished})),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let made: Value = res.json().await.unwrap();
    assert_eq!(
        made["problems"][0]["pointer"], "/document/flows/0/blocks/0",
        "{made}"
    );

    // A document that does not hold together makes no agent, and says where, inside the
    // request, each problem is.
    let before = api.json(Method::GET, "/agents", None).await["agents"]
        .as_array()
        .unwrap()
        .len();
    let mut bad = handwritten();
    bad["precall"][0]["waitMs"] = json!(99999);
    let res = api
        .send(
            Method::POST,
            "/agents",
            Some(&json!({"name": "Broken", "document": bad})),
            None,
        )
        .await;
    let problem = assert_problem(res, 422, "validation-failed").await;
    assert_eq!(
        problem["errors"][0]["pointer"], "/document/precall/0/waitMs",
        "{problem}"
    );
    for body in [
        json!({"name": "Broken", "document": []}),
        json!({"name": "   ", "document": handwritten()}),
    ] {
        let res = api.send(Method::POST, "/agents", Some(&body), None).await;
        assert_problem(res, 422, "validation-failed").await;
    }
    let after = api.json(Method::GET, "/agents", None).await["agents"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, before);
}

#[tokio::test]
async fn a_draft_change_is_invisible_to_calls_until_it_is_published() {
    let api = Api::new().await;
    let agent = api.agent("Line").await;
    api.put_draft(&agent, &handwritten()).await;
    api.publish(&agent, "").await;
    let token = api.runtime_token(&agent).await;
    let before = api.call(&token, &agent, "+12125550101").await;
    assert_eq!(before["greeting"], "Hi there.");
    assert_eq!(before["version"], 2);

    let mut doc = handwritten();
    doc["flows"][0]["blocks"][0]["message"] = json!("Welcome back {{name|friend}}.");
    api.put_draft(&agent, &doc).await;
    let during = api.call(&token, &agent, "+12125550102").await;
    assert_eq!(during["greeting"], "Hi there.", "calls still run version 2");
    let changes = api
        .json(Method::GET, &format!("/agents/{agent}/draft/changes"), None)
        .await;
    assert_eq!(
        changes["changes"],
        json!(["\"Main\" #1 Greeting: message changed"]),
        "{changes}"
    );
    let v = api.publish(&agent, "New greeting").await;
    assert_eq!(v["version"], 3);
    let after = api.call(&token, &agent, "+12125550103").await;
    assert_eq!(after["greeting"], "Welcome back friend.");
    assert_eq!(after["version"], 3);
    let versions = api
        .json(Method::GET, &format!("/agents/{agent}/versions"), None)
        .await;
    let list = versions["versions"].as_array().unwrap();
    assert_eq!(list[0]["version"], 3);
    assert_eq!(list[0]["message"], "New greeting");
    assert_eq!(list[0]["live"], true);
    assert!(
        list[0]["publishedBy"]
            .as_str()
            .unwrap()
            .contains("admin@example.com")
    );
}

#[tokio::test]
async fn an_invalid_document_or_a_refused_publish_names_every_problem_by_pointer() {
    let api = Api::new().await;
    let agent = api.agent("Line").await;
    let (_, etag) = api.draft(&agent).await;
    let mut bad = handwritten();
    bad["flows"][0]["blocks"][1]["else"] = json!("nowhere");
    bad["precall"][0]["waitMs"] = json!(99999);
    bad["flows"][1]["blocks"][1]["colour"] = json!("blue");
    let res = api
        .send(
            Method::PUT,
            &format!("/agents/{agent}/draft"),
            Some(&bad),
            Some(&etag),
        )
        .await;
    let problem = assert_problem(res, 422, "validation-failed").await;
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    for p in ["/precall/0/waitMs", "/flows/1/blocks/1/colour"] {
        assert!(pointers.contains(&p), "{p} in {pointers:?}");
    }
    // A key given twice would lose its first value: refused, pointed at, wherever it is.
    let twice = handwritten().to_string().replacen(
        r#""message":"Hi {{name|there}}.""#,
        r#""message":"Hi.","message":"Hi {{name|there}}.""#,
        1,
    );
    assert!(twice.contains(r#""message":"Hi.","message""#));
    for (method, path, body, pointer) in [
        (
            Method::PUT,
            format!("/agents/{agent}/draft"),
            twice.clone(),
            "/flows/0/blocks/0/message",
        ),
        (
            Method::POST,
            format!("/agents/{agent}/draft/validate"),
            twice.clone(),
            "/flows/0/blocks/0/message",
        ),
        (
            Method::POST,
            "/agents".to_owned(),
            format!(r#"{{"name": "Twice", "document": {twice}}}"#),
            "/document/flows/0/blocks/0/message",
        ),
    ] {
        let res = api
            .app
            .client
            .request(method, api.url(&path))
            .bearer_auth(&api.token)
            .header("if-match", &etag)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(res, 422, "validation-failed").await;
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{path}: {problem}"
        );
        assert!(
            problem["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("\"message\" is given twice"),
            "{problem}"
        );
    }
    // The draft did not change.
    // The CLI's import refuses it the same way.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twice.json");
    std::fs::write(&file, &twice).unwrap();
    let error = api
        .app
        .cli_refused(&["agent", "import", &agent, file.to_str().unwrap()]);
    assert!(
        error.contains("/flows/0/blocks/0/message: \"message\" is given twice"),
        "{error}"
    );
    let (_, same) = api.draft(&agent).await;
    assert_eq!(same, etag);

    // A document that holds together but cannot be published: saved, and the publish is
    // refused with every problem pointing at its block.
    let mut unfinished = handwritten();
    unfinished["flows"][0]["blocks"][0]["message"] = json!("Hi {{nmae}}.");
    unfinished["flows"][1]["blocks"][1] =
        json!({"key": "desk", "kind": "transfer_flow", "flow": "main"});
    let saved = api.put_draft(&agent, &unfinished).await;
    assert_eq!(saved["problems"].as_array().unwrap().len(), 3, "{saved}");
    let res = api
        .send(
            Method::POST,
            &format!("/agents/{agent}/publish"),
            None,
            None,
        )
        .await;
    let problem = assert_problem(res, 422, "publish-refused").await;
    let errors = problem["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e["pointer"] == "/flows/0/blocks/0"
            && e["detail"].as_str().unwrap().contains("{{nmae}}")),
        "{problem}"
    );
    assert!(
        errors.iter().any(|e| e["detail"]
            .as_str()
            .unwrap()
            .contains("goes round in a cycle")),
        "{problem}"
    );
    // The same from validate, without saving.
    let verdict = api
        .json(
            Method::POST,
            &format!("/agents/{agent}/draft/validate"),
            Some(&unfinished),
        )
        .await;
    assert_eq!(verdict["valid"], false);
    assert_eq!(verdict["problems"], problem["errors"]);
    let verdict = api
        .json(
            Method::POST,
            &format!("/agents/{agent}/draft/validate"),
            Some(&bad),
        )
        .await;
    assert_eq!(verdict["valid"], false);
    assert!(verdict["problems"].as_array().unwrap().len() >= 2);
}

#[tokio::test]
async fn a_stale_if_match_is_refused_and_a_missing_one_is_asked_for() {
    let api = Api::new().await;
    let agent = api.agent("Line").await;
    let (doc, etag) = api.draft(&agent).await;
    // Someone else saves first.
    api.put_draft(&agent, &handwritten()).await;
    let res = api
        .send(
            Method::PUT,
            &format!("/agents/{agent}/draft"),
            Some(&doc),
            Some(&etag),
        )
        .await;
    let problem = assert_problem(res, 412, "precondition-failed").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("admin@example.com"),
        "{problem}"
    );
    let res = api
        .send(
            Method::PUT,
            &format!("/agents/{agent}/draft"),
            Some(&doc),
            None,
        )
        .await;
    assert_problem(res, 428, "precondition-required").await;
    // If-Match: * overwrites.
    let res = api
        .send(
            Method::PUT,
            &format!("/agents/{agent}/draft"),
            Some(&doc),
            Some("*"),
        )
        .await;
    assert_eq!(res.status(), 200);
    // Publishing a revision that is no longer the draft is refused too.
    let res = api
        .send(
            Method::POST,
            &format!("/agents/{agent}/publish"),
            None,
            Some(&etag),
        )
        .await;
    assert_problem(res, 412, "precondition-failed").await;
}

#[tokio::test]
async fn if_match_is_read_as_rfc_9110_says_malformed_weak_and_lists() {
    // https://www.rfc-editor.org/rfc/rfc9110#section-13.1.1: a list matches when one of its
    // tags does; If-Match compares strongly, so a weak tag never matches.
    let api = Api::new().await;
    let agent = api.agent("Line").await;
    let (doc, etag) = api.draft(&agent).await;
    let put = |tag: String| {
        let (api, agent, doc) = (&api, &agent, &doc);
        async move {
            api.send(
                Method::PUT,
                &format!("/agents/{agent}/draft"),
                Some(doc),
                Some(&tag),
            )
            .await
        }
    };
    for (tag, status, kind, says) in [
        ("r1".to_owned(), 400, "bad-request", "is not an entity tag"),
        ("**".to_owned(), 400, "bad-request", "is not an entity tag"),
        (format!("W/{etag}"), 412, "precondition-failed", "weak ETag"),
        (
            "\"r999999999999999999999999\"".to_owned(),
            412,
            "precondition-failed",
            "not an ETag this draft has had",
        ),
        (
            "\"abc\"".to_owned(),
            412,
            "precondition-failed",
            "not an ETag this draft has had",
        ),
    ] {
        let problem = assert_problem(put(tag.clone()).await, status, kind).await;
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{tag}: {problem}"
        );
    }
    // Nothing was saved: the draft's ETag is the same.
    assert_eq!(api.draft(&agent).await.1, etag);
    // A list with the draft's ETag among others matches it.
    let res = put(format!("\"r0\", {etag}, W/\"r7\"")).await;
    assert_eq!(res.status(), 200);
    let (_, next) = api.draft(&agent).await;
    assert_ne!(next, etag);
    // A list without it does not.
    assert_problem(
        put(format!("\"r0\", {etag}")).await,
        412,
        "precondition-failed",
    )
    .await;
}

#[tokio::test]
async fn an_earlier_version_is_restored_into_the_draft_and_the_draft_discarded() {
    let api = Api::new().await;
    let agent = api.agent("Line").await;
    let (first, _) = api.draft(&agent).await;
    api.put_draft(&agent, &handwritten()).await;
    api.publish(&agent, "").await;
    // Restore version 1 into the draft: the draft is it; calls still run version 2.
    let restored = api
        .json(
            Method::POST,
            &format!("/agents/{agent}/versions/1/restore"),
            None,
        )
        .await;
    assert!(restored["revision"].as_i64().unwrap() > 1);
    let (draft, _) = api.draft(&agent).await;
    assert_eq!(draft, first);
    let summary = api
        .json(Method::GET, &format!("/agents/{agent}"), None)
        .await;
    assert_eq!(summary["publishedVersion"], 2);
    assert!(summary["draftChanges"].as_u64().unwrap() > 0);
    // Discard: the draft is version 2 again.
    api.json(Method::DELETE, &format!("/agents/{agent}/draft"), None)
        .await;
    let (draft, _) = api.draft(&agent).await;
    let v2 = api
        .json(Method::GET, &format!("/agents/{agent}/versions/2"), None)
        .await;
    assert_eq!(draft, v2);
    let summary = api
        .json(Method::GET, &format!("/agents/{agent}"), None)
        .await;
    assert_eq!(summary["draftChanges"], 0);
    let res = api
        .send(
            Method::GET,
            &format!("/agents/{agent}/versions/9"),
            None,
            None,
        )
        .await;
    assert_problem(res, 404, "not-found").await;
}

#[tokio::test]
async fn tokens_with_too_few_rights_are_refused() {
    let api = Api::new().await;
    let agent = api.agent("Line").await;
    let read_only = api
        .app
        .cli_json(&["api-token", "create", "--name", "viewer", "--read-only"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_reader = |method: Method, path: &str| {
        api.app
            .client
            .request(method, api.url(path))
            .bearer_auth(&read_only)
            .json(&handwritten())
            .header("if-match", "*")
            .send()
    };
    assert_eq!(
        as_reader(Method::GET, &format!("/agents/{agent}/draft"))
            .await
            .unwrap()
            .status(),
        200
    );
    for (method, path) in [
        (Method::PUT, format!("/agents/{agent}/draft")),
        (Method::POST, format!("/agents/{agent}/publish")),
        (Method::DELETE, format!("/agents/{agent}")),
        (Method::POST, "/agents".to_owned()),
    ] {
        let res = as_reader(method.clone(), &path).await.unwrap();
        assert_problem(res, 403, "forbidden").await;
    }
    // No token, a runtime token, a revoked token: 401.
    let res = api.app.client.get(api.url("/agents")).send().await.unwrap();
    assert_problem(res, 401, "unauthorized").await;
    let runtime = api.runtime_token(&agent).await;
    let res = api
        .app
        .client
        .get(api.url("/agents"))
        .bearer_auth(&runtime)
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "unauthorized").await;
    let list = api.app.cli_json(&["api-token", "list"]);
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "viewer")
        .unwrap()["id"]
        .to_string();
    api.app.cli(&["api-token", "revoke", &id]);
    let res = as_reader(Method::GET, "/agents").await.unwrap();
    assert_problem(res, 401, "unauthorized").await;
    // Nothing changed.
    let (draft, _) = api.draft(&agent).await;
    assert_eq!(draft["precall"], json!([]));
}

#[tokio::test]
async fn a_new_webhook_takes_requests_before_publish_and_calls_wait_only_for_published_ones() {
    let api = Api::new().await;
    let agent = api.agent("Line").await;
    let mut doc = handwritten();
    doc["precall"][0]["waitMs"] = json!(1500);
    let saved = api.put_draft(&agent, &doc).await;
    let url = saved["webhooks"][0]["url"].as_str().unwrap().to_owned();
    let key = saved["webhooks"][0]["apiKey"].as_str().unwrap().to_owned();
    let send = |phone: &str, budget: Value| {
        api.app
            .client
            .post(&url)
            .header("X-Authorization", &key)
            .json(&json!({"agentId": agent, "phoneNumber": phone, "budget": budget}))
            .send()
    };
    // The URL works at once; the published version (1) has no budget declared, so ingest
    // takes any shape.
    assert_eq!(
        send("+12125550111", json!("lots")).await.unwrap().status(),
        202
    );
    let token = api.runtime_token(&agent).await;
    let started = std::time::Instant::now();
    let call = api.call(&token, &agent, "+12125550112").await;
    assert!(
        started.elapsed().as_millis() < 1000,
        "version 1 waits for no webhook"
    );
    assert_eq!(call["precall"], json!([]));
    api.publish(&agent, "").await;
    // Published: ingest checks budget as a number, and calls wait for the webhook.
    let res = send("+12125550113", json!("lots")).await.unwrap();
    assert_problem(res, 422, "validation-failed").await;
    assert_eq!(
        send("+12125550114", json!(5000)).await.unwrap().status(),
        202
    );
    let call = api.call(&token, &agent, "+12125550114").await;
    assert_eq!(call["source"], "webhook");
    assert_eq!(call["variables"]["budget"], 5000);
    let listed = api
        .json(Method::GET, &format!("/agents/{agent}/webhooks"), None)
        .await;
    assert_eq!(listed["webhooks"][0]["published"], true);
    assert!(!listed.to_string().contains(&key), "never a key");
}

#[tokio::test]
async fn the_four_examples_behave_the_same_after_a_round_trip() {
    let api = Api::new().await;
    let demo = api.app.cli_json(&["demo", "--wait-ms", "0"]);
    for example in demo["examples"].as_array().unwrap() {
        let agent = example["agentId"].as_str().unwrap();
        let payload = &example["payload"];
        // The example's agent, and a copy made from its exported document.
        let exported = api.app.cli(&["agent", "export", agent]);
        let doc: Value = serde_json::from_str(&exported).unwrap();
        let copy = api.agent("Copy").await;
        let saved = api.put_draft(&copy, &doc).await;
        assert_eq!(saved["problems"], json!([]), "{saved}");
        api.publish(&copy, "").await;
        let hook = &saved["webhooks"][0];
        let mut copy_payload = payload.clone();
        copy_payload["agentId"] = json!(copy);
        let res = api
            .app
            .client
            .post(hook["url"].as_str().unwrap())
            .header("X-Authorization", hook["apiKey"].as_str().unwrap())
            .json(&copy_payload)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        let res = api
            .app
            .client
            .post(example["url"].as_str().unwrap())
            .header("X-Authorization", example["apiKey"].as_str().unwrap())
            .json(payload)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        let from = payload["phoneNumber"].as_str().unwrap();
        let original = api
            .call(example["runtimeToken"].as_str().unwrap(), agent, from)
            .await;
        let token = api.runtime_token(&copy).await;
        let copied = api.call(&token, &copy, from).await;
        for field in [
            "greeting", "outcome", "transfer", "question", "source", "status",
        ] {
            assert_eq!(
                copied[field], original[field],
                "{}: {field}",
                example["name"]
            );
        }
        let kinds = |c: &Value| {
            c["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["kind"].clone(), s["case"].clone(), s["said"].clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&copied), kinds(&original), "{}", example["name"]);
    }
}

#[tokio::test]
async fn the_document_schema_in_the_openapi_document_accepts_the_examples_and_refuses_bad_ones() {
    let api = Api::new().await;
    let openapi: Value = api
        .app
        .client
        .get(format!("{}/api/openapi.json", api.app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = &openapi["components"]["schemas"]["AgentDocument"];
    let validator = jsonschema::validator_for(schema).expect("a valid JSON Schema");
    for name in [
        "call-transfer",
        "crm-personalisation",
        "lead-qualification",
        "fraud-detection",
    ] {
        let text = std::fs::read_to_string(format!("examples/{name}.json")).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    assert!(validator.is_valid(&handwritten()));
    for bad in [
        json!({"format": "precall-agent/2"}),
        json!({"format": "precall-agent/1", "flows": [{"key": "a b", "name": "x"}]}),
        json!({"format": "precall-agent/1", "precall": [{"key": "w", "kind": "webhook", "name": "W", "waitMs": 20000}]}),
        json!({"format": "precall-agent/1", "flows": [{"key": "f", "name": "F", "blocks": [{"key": "b", "kind": "dance"}]}]}),
    ] {
        assert!(!validator.is_valid(&bad), "{bad}");
        // The server refuses the same documents.
        let agent = api.agent("Schema").await;
        let verdict = api
            .json(
                Method::POST,
                &format!("/agents/{agent}/draft/validate"),
                Some(&bad),
            )
            .await;
        assert_eq!(verdict["valid"], false, "{bad}");
    }
}

#[tokio::test]
async fn variables_tokens_deliveries_and_calls_are_managed_and_paged() {
    let api = Api::new().await;
    let agent = api.agent("Line").await;
    let saved = api.put_draft(&agent, &handwritten()).await;
    let res = api
        .send(
            Method::PUT,
            &format!("/agents/{agent}/variables/plan"),
            Some(&json!({"type": "string", "default": "basic"})),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = api
        .send(
            Method::PUT,
            &format!("/agents/{agent}/variables/plan"),
            Some(&json!({"type": "number", "default": "basic"})),
            None,
        )
        .await;
    let problem = assert_problem(res, 422, "validation-failed").await;
    assert_eq!(problem["errors"][0]["pointer"], "/default");
    let vars = api
        .json(Method::GET, &format!("/agents/{agent}/variables"), None)
        .await;
    assert!(
        vars["variables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "plan")
    );
    api.publish(&agent, "").await;

    let url = saved["webhooks"][0]["url"].as_str().unwrap();
    let key = saved["webhooks"][0]["apiKey"].as_str().unwrap();
    for i in 0..5 {
        api.app
            .client
            .post(url)
            .header("X-Authorization", key)
            .json(&json!({"agentId": agent, "phoneNumber": format!("+1212555012{i}")}))
            .send()
            .await
            .unwrap();
    }
    let first = api
        .json(
            Method::GET,
            &format!("/agents/{agent}/deliveries?limit=3"),
            None,
        )
        .await;
    assert_eq!(first["deliveries"].as_array().unwrap().len(), 3);
    let next = first["next"].as_i64().expect("a next page");
    let second = api
        .json(
            Method::GET,
            &format!("/agents/{agent}/deliveries?limit=3&before={next}"),
            None,
        )
        .await;
    assert_eq!(second["deliveries"].as_array().unwrap().len(), 2);
    assert!(second["next"].is_null());
    let res = api
        .send(
            Method::GET,
            &format!("/agents/{agent}/deliveries?limit=0"),
            None,
            None,
        )
        .await;
    assert_problem(res, 400, "bad-request").await;

    let token = api.runtime_token(&agent).await;
    for i in 0..3 {
        api.call(&token, &agent, &format!("+1212555013{i}")).await;
    }
    let calls = api
        .json(
            Method::GET,
            &format!("/agents/{agent}/calls?limit=2&source=fallback"),
            None,
        )
        .await;
    assert_eq!(calls["calls"].as_array().unwrap().len(), 2);
    assert!(calls["next"].is_string());
    let tokens = api
        .json(
            Method::GET,
            &format!("/agents/{agent}/runtime-tokens"),
            None,
        )
        .await;
    let id = tokens["tokens"][0]["id"].as_i64().unwrap();
    assert!(!tokens.to_string().contains(&token), "never a token");
    let res = api
        .send(
            Method::DELETE,
            &format!("/agents/{agent}/runtime-tokens/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
    let res = api.app.start_call_as(&token, &agent, "+12125550140").await;
    assert_problem(res, 401, "unauthorized").await;
}

#[tokio::test]
async fn webhook_keys_rotate_and_signing_turns_on_through_the_api() {
    let api = Api::new().await;
    let agent = api.agent("Line").await;
    let saved = api.put_draft(&agent, &handwritten()).await;
    let url = saved["webhooks"][0]["url"].as_str().unwrap().to_owned();
    let old = saved["webhooks"][0]["apiKey"].as_str().unwrap().to_owned();
    let body = json!({"agentId": agent, "phoneNumber": "+12125550150"});
    let post = |key: &str| {
        api.app
            .client
            .post(&url)
            .header("X-Authorization", key)
            .json(&body)
            .send()
    };
    let made = api
        .json(
            Method::POST,
            &format!("/agents/{agent}/webhooks/crm/keys"),
            Some(&json!({"graceSecs": 0})),
        )
        .await;
    let new = made["apiKey"].as_str().unwrap();
    assert_eq!(
        post(&old).await.unwrap().status(),
        401,
        "the old key stopped at once"
    );
    assert_eq!(post(new).await.unwrap().status(), 202);
    let signing = api
        .json(
            Method::PUT,
            &format!("/agents/{agent}/webhooks/crm/signing"),
            Some(&json!({"required": true})),
        )
        .await;
    assert!(
        signing["signingSecret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    let res = post(new).await.unwrap();
    assert_problem(res, 401, "unauthorized").await;
    let res = api
        .send(
            Method::POST,
            &format!("/agents/{agent}/webhooks/nope/keys"),
            Some(&json!({})),
            None,
        )
        .await;
    assert_problem(res, 404, "not-found").await;
}

#[tokio::test]
async fn an_api_token_made_on_the_console_is_shown_once_works_and_is_revoked_after_a_confirmation()
{
    let app = spawn_app().await;
    let console = Console::set_up(&app).await;
    let res = console
        .submit(
            "/admin/api-tokens",
            "/admin/api-tokens",
            &[("name", "deploy script")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = console.page("/admin/api-tokens").await;
    let token: String = page[page.find("pcat_").expect("shown once")..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert!(
        !console.page("/admin/api-tokens").await.contains(&token),
        "shown once"
    );
    let list = |token: &str| {
        app.client
            .get(format!("{}/api/v1/agents", app.address))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(list(&token).await.unwrap().status(), 200);
    let page = console.page("/admin/api-tokens").await;
    assert!(page.contains("deploy script") && page.contains("read and write"));
    assert!(!page.contains(">never<"), "its last use is shown: {page}");
    let revoke = page[page.find("/admin/api-tokens/").unwrap()..]
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    // A page asks first (without JavaScript too); the POST revokes.
    let confirm = console.page(&revoke).await;
    assert!(confirm.contains("Revoke the API token"));
    let res = console.submit(&revoke, &revoke, &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = list(&token).await.unwrap();
    assert_problem(res, 401, "unauthorized").await;
}
