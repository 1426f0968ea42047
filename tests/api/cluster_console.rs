//! The console on two servers sharing one PostgreSQL database, as behind a proxy that sends
//! each request to either: the first-run link printed by one server opens the setup page on
//! the other, and failed sign-ins on one server count on the other. Runs on PostgreSQL only
//! (on SQLite a database has one server: its ingest journal is locked by it).

use reqwest::StatusCode;

use crate::admin::{Console, EMAIL, PASSWORD};
use crate::helpers::{TestApp, postgres_base, spawn_app, spawn_app_with};

/// Two servers on one PostgreSQL database, or `None` on SQLite (the test then returns).
async fn two_servers() -> Option<(TestApp, TestApp)> {
    if postgres_base().is_none() {
        eprintln!(
            "skipped on SQLite: two servers on one database need PostgreSQL ({})",
            crate::helpers::TEST_DATABASE_ENV
        );
        return None;
    }
    let a = spawn_app().await;
    let url = a.database_url.clone();
    let b = spawn_app_with(move |s| s.database_url = url.as_str().into()).await;
    Some((a, b))
}

fn token_of(link: &str) -> String {
    link.split("token=").nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn the_setup_link_one_server_printed_creates_the_first_admin_on_another() {
    let Some((a, b)) = two_servers().await else {
        return;
    };
    let link = a.setup_link.clone().expect("a fresh database has no admin");
    let on_b = Console::new(&b);
    let page = on_b.get(&format!("/setup?token={}", token_of(&link))).await;
    assert_eq!(page.status(), StatusCode::OK, "A's link opens setup on B");

    let res = on_b
        .post(
            "/setup",
            &[
                ("token", &token_of(&link)),
                ("email", EMAIL),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // The first admin exists: neither server's link sets up another.
    for (app, server) in [(&a, "A"), (&b, "B")] {
        let token = token_of(app.setup_link.as_deref().unwrap());
        let res = Console::new(&a)
            .post(
                "/setup",
                &[
                    ("token", &token),
                    ("email", "second@example.com"),
                    ("password", PASSWORD),
                    ("confirm", PASSWORD),
                ],
            )
            .await;
        assert_ne!(res.status(), StatusCode::SEE_OTHER, "{server}'s link");
    }
    let res = Console::new(&a)
        .post(
            "/login",
            &[("email", "second@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "no second admin");
    // A link no server printed opens nothing.
    let res = Console::new(&b).get("/setup?token=stp_not-a-token").await;
    assert_ne!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn failed_sign_ins_on_one_server_slow_down_sign_ins_on_the_other() {
    let Some((a, b)) = two_servers().await else {
        return;
    };
    Console::set_up(&a).await;
    let (on_a, on_b) = (Console::new(&a), Console::new(&b));
    let wrong = [("email", EMAIL), ("password", "wrong password!")];
    // Failures spread over both servers, as a proxy would spread them.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let console = if i % 2 == 0 { &on_a } else { &on_b };
        statuses.push(console.post("/login", &wrong).await.status().as_u16());
    }
    let first_wait = statuses
        .iter()
        .position(|s| *s == 429)
        .expect("repeated failures are slowed down");
    assert!(
        first_wait <= 5,
        "the sixth attempt waits, whichever server it reaches: {statuses:?}"
    );
    // Both servers make the right password wait too.
    for console in [&on_a, &on_b] {
        let res = console
            .post("/login", &[("email", EMAIL), ("password", PASSWORD)])
            .await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().contains_key("retry-after"));
    }
}
