//! Three server processes on one PostgreSQL database: webhooks sent to them in turn, calls
//! started on other servers than their caller's webhook, one server killed with `kill -9`
//! midway (nothing it acknowledged is lost; calls cut off with it are started again on a
//! survivor and get their data). Runs on PostgreSQL only (`PRECALL_TEST_DATABASE_URL`).

use std::path::Path;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::process::Child;

use crate::helpers::{Setup, TestDatabase, postgres_base};
use crate::process::{cli_at, setup_at, signal, start_server_with};

/// A server process on the shared database.
async fn node(dir: &Path, database_url: &str) -> (Child, String) {
    let url = database_url.to_owned();
    start_server_with(dir, move |command| {
        command.env("PRECALL_DATABASE_URL", url);
    })
    .await
}

/// `n` servers on a database of their own, or `None` on SQLite, where the test is skipped.
async fn cluster(n: usize) -> Option<(tempfile::TempDir, TestDatabase, Vec<(Child, String)>)> {
    if postgres_base().is_none() {
        eprintln!(
            "skipped on SQLite: a cluster needs PostgreSQL ({})",
            crate::helpers::TEST_DATABASE_ENV
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let mut nodes = Vec::new();
    for i in 0..n {
        let sub = dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        nodes.push(node(&sub, &database.url).await);
    }
    Some((dir, database, nodes))
}

/// The webhook's URL on the server at `address`.
fn webhook_on(setup: &Setup, address: &str) -> String {
    let slug = setup.url.rsplit('/').next().unwrap();
    format!("{address}/webhooks/{slug}")
}

fn phone(n: usize) -> String {
    format!("+1212555{n:04}")
}

async fn post_webhook(
    client: &reqwest::Client,
    setup: &Setup,
    address: &str,
    n: usize,
) -> Result<u16, reqwest::Error> {
    let res = client
        .post(webhook_on(setup, address))
        .header("X-Authorization", &setup.key)
        .json(&json!({"agentId": setup.agent_id, "phoneNumber": phone(n), "order": n}))
        .send()
        .await?;
    Ok(res.status().as_u16())
}

async fn start_call(
    client: &reqwest::Client,
    setup: &Setup,
    address: &str,
    n: usize,
) -> Result<Value, reqwest::Error> {
    let res = client
        .post(format!("{address}/api/v1/calls"))
        .bearer_auth(&setup.token)
        .json(&json!({"agentId": setup.agent_id, "from": phone(n)}))
        .send()
        .await?;
    assert_eq!(res.status(), 201, "call start failed");
    res.json().await
}

/// The `order` the call received from its caller's webhook, if it did.
fn order_of(call: &Value) -> Option<i64> {
    (call["source"] == "webhook").then(|| call["variables"]["order"].as_i64())?
}

#[tokio::test]
async fn three_servers_share_webhooks_and_calls_and_a_killed_one_loses_nothing_acknowledged() {
    let Some((_dir, database, nodes)) = cluster(3).await else {
        return;
    };
    let url = database.url.clone();
    let addresses: Vec<String> = nodes.iter().map(|(_, a)| a.clone()).collect();
    let (mut setup, action_key) = setup_at(&url, &addresses[0], 5_000);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // 1. Calls wait on one server while their caller's webhook reaches another, and are
    //    woken by it: well before their 5 s wait runs out.
    let begun = std::time::Instant::now();
    let waiting = (0..30).map(|n| {
        let (client, setup, address) = (&client, &setup, &addresses[n % 3]);
        async move {
            let call = start_call(client, setup, address, n).await.unwrap();
            (call, std::time::Instant::now())
        }
    });
    let sending = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        join_all((0..30).map(|n| {
            let (client, setup, address) = (&client, &setup, &addresses[(n + 1) % 3]);
            async move {
                let status = post_webhook(client, setup, address, n).await.unwrap();
                (status, std::time::Instant::now())
            }
        }))
        .await
    };
    let (calls, sent) = tokio::join!(join_all(waiting), sending);
    let took = begun.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the calls were woken by webhooks on other servers, not by their deadline: {took:?}"
    );
    assert!(sent.iter().all(|(s, _)| *s == 202), "{sent:?}");
    for (n, (call, _)) in calls.iter().enumerate() {
        assert_eq!(order_of(call), Some(n as i64), "call {n}: {call}");
    }
    // From each 202 to its call's answer on another server (a figure, not a promise: the
    // client sees both answers through its own scheduling).
    let mut waits: Vec<Duration> = calls
        .iter()
        .zip(&sent)
        .map(|((_, answered), (_, accepted))| answered.saturating_duration_since(*accepted))
        .collect();
    waits.sort();
    eprintln!(
        "from the 202 on one server to the call's answer on another: median {:?}, max {:?}",
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );

    // 2. A key rotated with the command line: once the command returns, the old key opens
    //    the webhook on no server and the new one on every server.
    let old_key = setup.key.clone();
    let rotated = cli_at(
        &url,
        &addresses[0],
        &[
            "action",
            "rotate-key",
            "--agent",
            &setup.agent_id,
            "--action",
            &action_key,
            "--grace-secs",
            "0",
        ],
    );
    setup.key = rotated["apiKey"].as_str().unwrap().to_owned();
    let old = Setup {
        key: old_key,
        ..setup.clone()
    };
    for (i, address) in addresses.iter().enumerate() {
        assert_eq!(
            post_webhook(&client, &old, address, 50 + i).await.unwrap(),
            401,
            "old key on server {i}"
        );
        assert_eq!(
            post_webhook(&client, &setup, address, 50 + i)
                .await
                .unwrap(),
            202,
            "new key on server {i}"
        );
    }

    // 3. The use-once rule across servers: two calls for one caller on two servers, one
    //    gets the data.
    assert_eq!(
        post_webhook(&client, &setup, &addresses[0], 100)
            .await
            .unwrap(),
        202
    );
    let (a, b) = tokio::join!(
        start_call(&client, &setup, &addresses[1], 100),
        start_call(&client, &setup, &addresses[2], 100)
    );
    let got: Vec<Option<i64>> = [a.unwrap(), b.unwrap()].iter().map(order_of).collect();
    assert_eq!(
        got.iter().filter(|o| o.is_some()).count(),
        1,
        "exactly one call gets the data: {got:?}"
    );

    // 4. Webhooks sent to the three servers in turn; the second server is killed midway.
    let sent = (200..500).map(|n| {
        let (client, setup, address) = (&client, &setup, &addresses[n % 3]);
        async move {
            tokio::time::sleep(Duration::from_millis((n - 200) as u64 * 2)).await;
            (n, post_webhook(client, setup, address, n).await)
        }
    });
    // Calls waiting on the second server for webhooks that have not come yet.
    let cut_off = (600..610).map(|n| {
        let (client, setup, address) = (&client, &setup, &addresses[1]);
        async move {
            let res = client
                .post(format!("{address}/api/v1/calls"))
                .bearer_auth(&setup.token)
                .json(&json!({"agentId": setup.agent_id, "from": phone(n)}))
                .send()
                .await;
            (n, res.map(|r| r.status().as_u16()))
        }
    });
    let kill = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        signal(&nodes[1].0, "-KILL");
    };
    let (sent, cut_off, ()) = tokio::join!(join_all(sent), join_all(cut_off), kill);
    assert!(
        cut_off.iter().all(|(_, r)| r.is_err()),
        "the calls waiting on the killed server lost their connection: {cut_off:?}"
    );
    // The call runtime starts them again on a survivor; their webhooks reach the other.
    let retried_calls = cut_off.iter().map(|&(n, _)| {
        let (client, setup, address) = (&client, &setup, &addresses[2]);
        async move { (n, start_call(client, setup, address, n).await.unwrap()) }
    });
    let late_webhooks = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        join_all((600..610).map(|n| {
            let (client, setup, address) = (&client, &setup, &addresses[0]);
            async move { post_webhook(client, setup, address, n).await.unwrap() }
        }))
        .await
    };
    let (retried_calls, statuses) = tokio::join!(join_all(retried_calls), late_webhooks);
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    for (n, call) in &retried_calls {
        assert_eq!(
            order_of(call),
            Some(*n as i64),
            "call {n} started again: {call}"
        );
    }
    let acknowledged: Vec<usize> = sent
        .iter()
        .filter(|(_, r)| matches!(r, Ok(202)))
        .map(|(n, _)| *n)
        .collect();
    let lost_answers = sent.iter().filter(|(_, r)| r.is_err()).count();
    assert!(
        acknowledged.len() >= 200,
        "most webhooks reached a server: {} of 300",
        acknowledged.len()
    );
    assert!(lost_answers > 0, "the killed server was taking webhooks");
    eprintln!(
        "{} of 300 webhooks acknowledged, {lost_answers} cut off with the killed server",
        acknowledged.len()
    );
    // Every acknowledged webhook is there for a call started on a survivor.
    let survivors = [&addresses[0], &addresses[2]];
    let calls = join_all(acknowledged.iter().map(|&n| {
        let (client, setup, address) = (&client, &setup, survivors[n % 2]);
        async move { (n, start_call(client, setup, address, n).await.unwrap()) }
    }))
    .await;
    for (n, call) in &calls {
        assert_eq!(
            order_of(call),
            Some(*n as i64),
            "acknowledged webhook {n}: {call}"
        );
    }
    // A webhook whose answer was lost with the server is sent again to a survivor, and its
    // call gets it.
    let retried: Vec<usize> = sent
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| *n)
        .collect();
    for &n in &retried {
        assert_eq!(
            post_webhook(&client, &setup, &addresses[0], n)
                .await
                .unwrap(),
            202
        );
        let call = start_call(&client, &setup, &addresses[2], n).await.unwrap();
        assert_eq!(
            order_of(&call),
            Some(n as i64),
            "retried webhook {n}: {call}"
        );
    }

    for (child, _) in &nodes {
        if child.id().is_some() {
            let _ = std::process::Command::new("kill")
                .arg(child.id().unwrap().to_string())
                .status();
        }
    }
    for (mut child, _) in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
    database.drop().await;
}

#[tokio::test]
async fn a_call_waiting_on_a_server_whose_notifications_were_cut_off_still_gets_its_data_at_once() {
    let Some((_dir, database, nodes)) = cluster(2).await else {
        return;
    };
    let base = postgres_base().expect("a cluster runs on PostgreSQL");
    let url = database.url.clone();
    let (a, b) = (nodes[0].1.clone(), nodes[1].1.clone());
    let (setup, _) = setup_at(&url, &a, 5_000);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let name = url.rsplit('/').next().unwrap().to_owned();

    for round in 0..3 {
        let n = 700 + round;
        let begun = std::time::Instant::now();
        let waiting = start_call(&client, &setup, &b, n);
        let cut_and_send = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Every server's listening connection is cut (PostgreSQL's own way to end a
            // session), and the caller's data is sent right away, maybe before they listen
            // again.
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
            // The listening sessions on this test's database only, found before any is
            // ended: in one statement, PostgreSQL may end sessions before it filters by
            // database (the name comes from a join), cutting off other tests' servers.
            let listening: Vec<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
            )
            .bind(&name)
            .fetch_all(&mut admin)
            .await
            .unwrap();
            assert!(!listening.is_empty(), "the servers were listening");
            sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int4[]) AS pid")
                .bind(&listening)
                .execute(&mut admin)
                .await
                .unwrap();
            post_webhook(&client, &setup, &a, n).await.unwrap()
        };
        let (call, status) = tokio::join!(waiting, cut_and_send);
        assert_eq!(status, 202);
        let took = begun.elapsed();
        assert_eq!(order_of(&call.unwrap()), Some(n as i64));
        assert!(
            took < Duration::from_secs(3),
            "round {round}: the call looked again once its server listened again, \
             rather than waiting out its 5 s: {took:?}"
        );
    }

    for (mut child, _) in nodes {
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
    database.drop().await;
}
