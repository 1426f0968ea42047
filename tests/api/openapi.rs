//! `GET /api/openapi.json`: the contract served by the code, and the documented examples
//! checked against it.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

async fn document() -> Value {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/api/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    res.json().await.expect("the document is JSON")
}

#[tokio::test]
async fn openapi_document_is_served_as_openapi_3_1_and_names_every_api_route() {
    let doc = document().await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "{version}");

    let agent = "/api/v1/agents/{agentId}";
    let hook = "/api/v1/agents/{agentId}/webhooks/{actionKey}";
    let operations = [
        ("/webhooks/{slug}".to_owned(), "post", "ingest", "202"),
        ("/api/v1/calls".to_owned(), "post", "startCall", "201"),
        ("/api/v1/calls/{id}".to_owned(), "get", "getCall", "200"),
        (
            "/api/v1/calls/{id}/input".to_owned(),
            "post",
            "answerCall",
            "200",
        ),
        ("/api/v1/agents".to_owned(), "get", "listAgents", "200"),
        ("/api/v1/agents".to_owned(), "post", "createAgent", "201"),
        (agent.to_owned(), "get", "getAgent", "200"),
        (agent.to_owned(), "patch", "updateAgent", "200"),
        (agent.to_owned(), "delete", "deleteAgent", "204"),
        (format!("{agent}/draft"), "get", "getDraft", "200"),
        (format!("{agent}/draft"), "put", "putDraft", "200"),
        (format!("{agent}/draft"), "delete", "discardDraft", "200"),
        (
            format!("{agent}/draft/validate"),
            "post",
            "validateDraft",
            "200",
        ),
        (
            format!("{agent}/draft/changes"),
            "get",
            "draftChanges",
            "200",
        ),
        (format!("{agent}/draft/layout"), "get", "draftLayout", "200"),
        (format!("{agent}/publish"), "post", "publish", "201"),
        (format!("{agent}/versions"), "get", "listVersions", "200"),
        (
            format!("{agent}/versions/{{number}}"),
            "get",
            "getVersion",
            "200",
        ),
        (
            format!("{agent}/versions/{{number}}/restore"),
            "post",
            "restoreVersion",
            "200",
        ),
        (format!("{agent}/webhooks"), "get", "listWebhooks", "200"),
        (format!("{hook}/keys"), "post", "newWebhookKey", "201"),
        (
            format!("{hook}/keys/{{keyId}}"),
            "delete",
            "revokeWebhookKey",
            "204",
        ),
        (format!("{hook}/signing"), "put", "setWebhookSigning", "200"),
        (
            format!("{hook}/signing-secret"),
            "post",
            "newWebhookSigningSecret",
            "201",
        ),
        (format!("{agent}/variables"), "get", "listVariables", "200"),
        (
            format!("{agent}/variables/{{name}}"),
            "put",
            "putVariable",
            "200",
        ),
        (
            format!("{agent}/variables/{{name}}"),
            "delete",
            "deleteVariable",
            "204",
        ),
        (
            format!("{agent}/runtime-tokens"),
            "get",
            "listRuntimeTokens",
            "200",
        ),
        (
            format!("{agent}/runtime-tokens"),
            "post",
            "createRuntimeToken",
            "201",
        ),
        (
            format!("{agent}/runtime-tokens/{{tokenId}}"),
            "delete",
            "revokeRuntimeToken",
            "204",
        ),
        (
            format!("{agent}/deliveries"),
            "get",
            "listDeliveries",
            "200",
        ),
        (format!("{agent}/calls"), "get", "listCalls", "200"),
        (
            format!("{agent}/connections"),
            "get",
            "listConnections",
            "200",
        ),
        (
            format!("{agent}/connections"),
            "post",
            "createConnection",
            "201",
        ),
        (
            format!("{agent}/connections/{{connectionId}}"),
            "patch",
            "updateConnection",
            "200",
        ),
        (
            format!("{agent}/connections/{{connectionId}}"),
            "delete",
            "deleteConnection",
            "204",
        ),
        ("/metrics".to_owned(), "get", "metrics", "200"),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, operations.len(), "{:?}", paths.keys());
    for (path, method, id, success) in &operations {
        let (path, method, id, success) = (path.as_str(), *method, *id, *success);
        let op = &doc["paths"][path][method];
        assert_eq!(op["operationId"], id, "{method} {path}");
        assert!(op["responses"][success].is_object(), "{id}: {success}");
        for status in ["401", "408", "429", "503"] {
            assert_eq!(
                op["responses"][status]["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/ProblemDetails",
                "{id}: {status}"
            );
        }
    }

    let ingest = &doc["paths"]["/webhooks/{slug}"]["post"];
    for status in ["400", "404", "409", "413", "415", "422"] {
        assert!(ingest["responses"][status].is_object(), "ingest: {status}");
    }
    assert_eq!(
        ingest["security"],
        json!([{ "webhookKey": [] }, { "webhookBearer": [] }])
    );
    let headers: Vec<&str> = ingest["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "header")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        headers,
        [
            "Idempotency-Key",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "svix-id",
            "svix-timestamp",
            "svix-signature"
        ]
    );

    let start = &doc["paths"]["/api/v1/calls"]["post"];
    assert_eq!(start["security"], json!([{ "runtimeToken": [] }]));
    assert!(start["responses"]["201"]["headers"]["Location"].is_object());
    for next in ["getCall", "answerCall"] {
        let link = &start["responses"]["201"]["links"][next];
        assert_eq!(link["operationId"], next);
        assert_eq!(link["parameters"]["id"], "$response.body#/callId");
    }

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["webhookKey"],
        json!({ "type": "apiKey", "in": "header", "name": "X-Authorization",
                "description": schemes["webhookKey"]["description"] })
    );
    assert_eq!(schemes["runtimeToken"]["scheme"], "bearer");
    assert_eq!(schemes["webhookBearer"]["scheme"], "bearer");
}

/// Every route the document names is served: without credentials each answers 401 (the
/// webhook with the URL of a real webhook), not 404 or 405.
#[tokio::test]
async fn every_route_in_the_openapi_document_is_served() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    let slug = setup.url.rsplit('/').next().unwrap();
    let doc: Value = app
        .client
        .get(format!("{}/api/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!(
                "{}{}",
                app.address,
                path.replace("{slug}", slug)
                    .replace("{id}", "xshtt9tzoS6HWXz5Fs4r")
                    .replace("{agentId}", &setup.agent_id)
                    .replace("{actionKey}", "webhook-x")
                    .replace("{number}", "1")
                    .replace("{name}", "budget")
                    .replace("{keyId}", "1")
                    .replace("{tokenId}", "1")
                    .replace("{connectionId}", "1")
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = app
                .client
                .request(method.clone(), &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 401, "{method} {path}");
            checked += 1;
        }
    }
    assert_eq!(checked, 37);
}

/// The JSON examples of docs/api.md, each with the schema it shows.
fn documented_examples() -> Vec<(&'static str, Value)> {
    let text = include_str!("../../docs/api.md");
    let mut examples = Vec::new();
    for block in text.split("```json\n").skip(1) {
        let json = block.split("\n```").next().unwrap();
        let value: Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("docs/api.md example is not JSON ({e}):\n{json}"));
        let has = |k: &str| value.get(k).is_some();
        let schema = if has("callId") {
            "CallView"
        } else if has("answers") {
            "CallInput"
        } else if has("from") {
            "StartCall"
        } else if has("phoneNumber") && has("agentId") {
            "IngestBody"
        } else if has("expiresAt") {
            "IngestReceipt"
        } else if has("type") && has("status") {
            "ProblemDetails"
        } else {
            panic!("docs/api.md example of no known schema:\n{json}")
        };
        examples.push((schema, value));
    }
    examples
}

#[tokio::test]
async fn documented_examples_validate_against_the_openapi_schemas() {
    let doc = document().await;
    let examples = documented_examples();
    let mut shown: Vec<&str> = examples.iter().map(|(s, _)| *s).collect();
    shown.sort_unstable();
    shown.dedup();
    assert_eq!(
        shown,
        [
            "CallInput",
            "CallView",
            "IngestBody",
            "IngestReceipt",
            "ProblemDetails",
            "StartCall"
        ]
    );
    for (schema, example) in &examples {
        let validator = validator_for(&doc, schema);
        let errors: Vec<String> = validator
            .iter_errors(example)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{schema}: {errors:#?}\n{example:#}");
        // A documented field the schema does not name is drift too, though JSON Schema lets
        // unnamed fields through where the schema says nothing of additionalProperties.
        let component = &doc["components"]["schemas"][schema];
        if let (Some(properties), true) = (
            component["properties"].as_object(),
            component["additionalProperties"].is_null(),
        ) {
            for key in example.as_object().unwrap().keys() {
                assert!(properties.contains_key(key), "{schema} has no {key}");
            }
        }
    }
}

#[tokio::test]
async fn schemas_refuse_what_the_api_refuses() {
    let doc = document().await;
    let refused = [
        ("IngestBody", json!({ "phoneNumber": "+1234567890" })),
        (
            "IngestBody",
            json!({ "agentId": "a", "phoneNumber": "+1", "nested": { "x": 1 } }),
        ),
        (
            "IngestBody",
            json!({ "agentId": "a", "phoneNumber": "+1", "list": [[1]] }),
        ),
        (
            "StartCall",
            json!({ "agentId": "a", "from": "+1", "extra": 1 }),
        ),
        ("CallInput", json!({})),
        (
            "ProblemDetails",
            json!({ "type": "/problems/no-such-problem", "title": "t", "status": 400, "detail": "d" }),
        ),
    ];
    let (_, call) = documented_examples()
        .into_iter()
        .find(|(schema, _)| *schema == "CallView")
        .unwrap();
    let mut refused = refused.to_vec();
    for (field, word) in [("source", "sms"), ("status", "ringing")] {
        let mut changed = call.clone();
        changed[field] = json!(word);
        refused.push(("CallView", changed));
    }
    let mut changed = call.clone();
    changed["precall"][0]["outcome"] = json!("lost");
    refused.push(("CallView", changed));
    for (schema, value) in refused {
        assert!(
            !validator_for(&doc, schema).is_valid(&value),
            "{schema} allows {value}"
        );
    }
}

/// A validator for one component schema, its references resolved within the document.
fn validator_for(doc: &Value, schema: &str) -> jsonschema::Validator {
    let mut root = doc.clone();
    root["$ref"] = json!(format!("#/components/schemas/{schema}"));
    jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{schema}: {e}"))
}
