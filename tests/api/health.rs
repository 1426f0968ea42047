use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_answer_ok() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let res = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn front_page_and_problem_pages_link_to_each_other() {
    let app = spawn_app().await;
    let home = app.client.get(&app.address).send().await.unwrap();
    assert_eq!(home.status(), 200);
    let html = home.text().await.unwrap();
    assert!(html.contains("Precall is running"));
    assert!(html.contains(&format!("{}/webhooks/", app.address)));

    let list = app
        .client
        .get(format!("{}/problems", app.address))
        .send()
        .await
        .unwrap();
    let html = list.text().await.unwrap();
    for slug in ["validation-failed", "unauthorized", "payload-too-large"] {
        assert!(html.contains(&format!("/problems/{slug}")), "{slug} listed");
        let page = app
            .client
            .get(format!("{}/problems/{slug}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{slug} page");
    }
    let css = app
        .client
        .get(format!("{}/static/app.css", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

#[tokio::test]
async fn unknown_problem_type_is_404() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/problems/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}
