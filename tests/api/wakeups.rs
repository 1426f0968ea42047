use std::time::Duration;

use futures::future::join_all;
use serde_json::json;

use crate::helpers::spawn_app;

/// Hundreds of calls wait at once, each on its own caller; each webhook wakes its own call
/// only, and callers whose webhook never comes fall back.
#[tokio::test]
async fn hundreds_of_waiting_calls_are_each_woken_by_their_own_webhook_only() {
    let app = spawn_app().await;
    let setup = app.setup(4000);
    const CALLERS: usize = 300;
    const SILENT_EVERY: usize = 10; // every 10th caller gets no webhook
    let phone = |i: usize| format!("+1212555{:04}", 1000 + i);

    let calls = join_all((0..CALLERS).map(|i| {
        let (app, setup, from) = (&app, &setup, phone(i));
        async move { app.start_call_json(setup, &from).await }
    }));
    let webhooks = async {
        // Let the calls park first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        join_all((0..CALLERS).filter(|i| i % SILENT_EVERY != 0).map(|i| {
            let (app, setup) = (&app, &setup);
            async move {
                let body = json!({"agentId": setup.agent_id, "phoneNumber": phone(i), "marker": i});
                let res = app.ingest(setup, &body).await;
                assert_eq!(res.status(), 202);
            }
        }))
        .await
    };
    let (calls, _) = tokio::join!(calls, webhooks);

    for (i, call) in calls.iter().enumerate() {
        assert_eq!(call["from"], phone(i));
        if i % SILENT_EVERY == 0 {
            assert_eq!(call["source"], "fallback", "caller {i}");
            assert!(
                call["variables"].get("marker").is_none(),
                "caller {i} got someone's data"
            );
            assert!(call["waitedMs"].as_i64().unwrap() >= 4000);
        } else {
            assert_eq!(call["source"], "webhook", "caller {i}");
            assert_eq!(
                call["variables"]["marker"],
                json!(i),
                "caller {i} got someone else's data"
            );
            assert!(
                call["waitedMs"].as_i64().unwrap() < 4000,
                "caller {i} was not woken"
            );
        }
    }
}
