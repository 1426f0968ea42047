//! Every answer under `/api/` and `/webhooks/` is problem+json, including the ones no
//! handler writes (no route, a method the route does not take, a path that does not parse),
//! and the console answers its own bad addresses with its error page.

use reqwest::Method;

use crate::admin::Console;
use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn wrong_methods_on_api_and_webhook_routes_get_405_problems_with_allow() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    let call = app.start_call_json(&setup, "+12125550123").await;
    let call_url = format!(
        "{}/api/v1/calls/{}",
        app.address,
        call["callId"].as_str().unwrap()
    );
    let cases = [
        (Method::GET, setup.url.clone(), "POST"),
        (Method::PUT, setup.url.clone(), "POST"),
        (Method::DELETE, setup.url.clone(), "POST"),
        (Method::GET, format!("{}/api/v1/calls", app.address), "POST"),
        (Method::POST, call_url.clone(), "GET"),
        (Method::DELETE, format!("{call_url}/input"), "POST"),
    ];
    for (method, url, allowed) in cases {
        let res = app
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        let allow = res
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{method} {url}: no Allow header"));
        assert!(allow.contains(allowed), "{method} {url}: Allow {allow}");
        assert_problem(res, 405, "method-not-allowed").await;
    }
}

#[tokio::test]
async fn unknown_api_paths_get_404_problems() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    for (method, url) in [
        (Method::POST, format!("{}/api/v1/nope", app.address)),
        (Method::GET, format!("{}/api/v2/calls", app.address)),
        (Method::POST, format!("{}/x", setup.url)),
        (Method::POST, format!("{}/webhooks/", app.address)),
    ] {
        let res = app.client.request(method, &url).send().await.unwrap();
        assert_problem(res, 404, "not-found").await;
    }
}

#[tokio::test]
async fn paths_that_are_not_utf8_get_400_problems() {
    let app = spawn_app().await;
    let setup = app.setup(0);
    let res = app
        .client
        .post(format!("{}/webhooks/%ff", app.address))
        .header("X-Authorization", &setup.key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "bad-request").await;
    let res = app
        .client
        .get(format!("{}/api/v1/calls/%ff", app.address))
        .bearer_auth(&setup.token)
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "bad-request").await;
}

#[tokio::test]
async fn the_console_answers_bad_paths_and_queries_with_its_error_page() {
    let app = spawn_app().await;
    let console = Console::set_up(&app).await;
    let agent = console.create_agent("Support line").await;
    let configure = console.create_webhook(&agent).await;
    let deliveries = configure.replace("/configure", "/deliveries");
    for (path, status) in [
        (format!("/admin/agents/{agent}/flows/abc"), 404),
        (format!("{deliveries}?before=abc"), 400),
        ("/admin/nope".to_owned(), 404),
        ("/nope".to_owned(), 404),
    ] {
        let res = console.get(&path).await;
        assert_eq!(res.status().as_u16(), status, "{path}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        let html = res.text().await.unwrap();
        assert!(html.contains("<!doctype html>"), "{path}: {html}");
        assert!(html.contains(&format!("Error {status}")), "{path}: {html}");
    }
}
