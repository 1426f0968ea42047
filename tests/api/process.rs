//! The real binary: start-up defaults, graceful shutdown, and durability when killed.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{BIN, Setup, run_cli};

/// Starts `precall` in `dir` on its default database, returning the child and its address.
pub async fn start_server(dir: &Path) -> (Child, String) {
    start_server_with(dir, |_| {}).await
}

/// Like [`start_server`], with `configure` adding flags or limits to the command first.
pub async fn start_server_with(
    dir: &Path,
    configure: impl FnOnce(&mut Command),
) -> (Child, String) {
    let mut command = Command::new(BIN);
    // These tests drive one webhook far beyond a real sender's rate to load the process;
    // the rate limits have tests of their own (rate_limits.rs).
    command
        .args(["--bind", "127.0.0.1:0"])
        .args(["--rate-per-action", "0", "--rate-per-source", "0"])
        .current_dir(dir)
        .env_remove("PRECALL_DATABASE_URL")
        .env_remove("PRECALL_PUBLIC_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    configure(&mut command);
    let mut child = command.spawn().expect("server starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("server prints its address")
        .unwrap()
        .unwrap();
    let address = first
        .strip_prefix("Precall listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address)
}

/// The database URL of a server started in `dir`.
pub fn url_in(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("precall.db").display())
}

pub fn cli_in(dir: &Path, address: &str, args: &[&str]) -> Value {
    cli_at(&url_in(dir), address, args)
}

/// The CLI's `--json` answer, on the database at `database_url`.
pub fn cli_at(database_url: &str, address: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&run_cli(database_url, address, &args)).unwrap()
}

pub fn setup_in(dir: &Path, address: &str, wait_ms: u64) -> Setup {
    setup_at(&url_in(dir), address, wait_ms).0
}

/// An agent whose calls wait up to `wait_ms` for one published Webhook action, its
/// runtime token, and the action's key in the agent's document.
pub fn setup_at(database_url: &str, address: &str, wait_ms: u64) -> (Setup, String) {
    let cli = |args: &[&str]| cli_at(database_url, address, args);
    let agent = cli(&["agent", "create", "--name", "Line"]);
    let agent_id = agent["agentId"].as_str().unwrap().to_owned();
    let hook = cli(&[
        "action",
        "create-webhook",
        "--agent",
        &agent_id,
        "--wait-ms",
        &wait_ms.to_string(),
        "--publish",
    ]);
    let token = cli(&["token", "create", "--agent", &agent_id]);
    let setup = Setup {
        agent_id,
        url: hook["url"].as_str().unwrap().to_owned(),
        key: hook["apiKey"].as_str().unwrap().to_owned(),
        token: token["token"].as_str().unwrap().to_owned(),
    };
    (setup, hook["actionKey"].as_str().unwrap().to_owned())
}

pub fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn the_binary_creates_its_database_in_the_working_directory_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = start_server(dir.path()).await;
    assert!(
        dir.path().join("precall.db").exists(),
        "database file created"
    );
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{address}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let setup = setup_in(dir.path(), &address, 1500);
    // A call in flight when SIGTERM arrives still gets its answer.
    let in_flight = {
        let client = client.clone();
        let url = format!("{address}/api/v1/calls");
        let setup = setup.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(&setup.token)
                .json(&json!({"agentId": setup.agent_id, "from": "+12125551234"}))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "-TERM");

    let res = in_flight.await.unwrap().expect("in-flight call answered");
    assert_eq!(res.status(), 201);
    let call: Value = res.json().await.unwrap();
    assert_eq!(call["source"], "fallback");

    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within the deadline")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        client
            .get(format!("{address}/healthz"))
            .send()
            .await
            .is_err(),
        "no longer serving"
    );
}

#[tokio::test]
async fn a_stopped_server_leaves_no_planner_statistics_behind() {
    // Statistics gathered while the tables were nearly empty once made SQLite scan every
    // cached context for each delivery the Test viewer showed; plans follow the indexes.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = start_server(dir.path()).await;
    let setup = setup_in(dir.path(), &address, 100);
    let res = reqwest::Client::new()
        .post(&setup.url)
        .header("X-Authorization", &setup.key)
        .json(&json!({"agentId": setup.agent_id, "phoneNumber": "+12125551234", "plan": "gold"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within the deadline")
        .unwrap();
    assert!(status.success(), "{status:?}");

    let url = url_in(dir.path());
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name LIKE 'sqlite_stat%'")
            .fetch_all(&db)
            .await
            .unwrap();
    assert!(kept.is_empty(), "statistics kept: {kept:?}");
    let contexts: i64 = sqlx::query_scalar("SELECT count(*) FROM contexts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(contexts, 1, "the webhook's data is there");
}

#[tokio::test]
async fn the_write_ahead_log_starts_over_under_steady_webhooks() {
    // Under steady writes the background checkpoint never copies the whole log (commits
    // land while it runs), so the log could never start over and grew for as long as the
    // webhooks kept coming. Past --wal-restart-mib the writer copies the rest itself.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = start_server_with(dir.path(), |c| {
        c.args(["--wal-restart-mib", "1"]);
    })
    .await;
    let setup = setup_in(dir.path(), &address, 0);
    let wal = dir.path().join("precall.db-wal");
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());

    let client = reqwest::Client::new();
    let done = std::sync::atomic::AtomicBool::new(false);
    // 8 000 webhooks from 16 senders: a log that never starts over reaches about 100 MiB.
    let senders = async {
        join_all((0..16).map(|s| {
            let (client, setup) = (&client, &setup);
            async move {
                for i in 0..500 {
                    let res = client
                        .post(&setup.url)
                        .header("X-Authorization", &setup.key)
                        .json(&json!({
                            "agentId": setup.agent_id,
                            "phoneNumber": format!("+1212{:07}", s * 100_000 + i),
                            "note": "x".repeat(200),
                        }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 202);
                }
            }
        }))
        .await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let watch = async {
        let mut largest = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            largest = largest.max(wal_size());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        largest
    };
    let ((), largest) = tokio::join!(senders, watch);
    assert!(
        largest < 32 << 20,
        "the log reached {} MiB for 8 000 webhooks",
        largest >> 20
    );

    // The restarts left the database whole, with every webhook in it, while the server's
    // connections came and went beside them.
    signal(&child, "-TERM");
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within the deadline")
        .unwrap();
    let url = url_in(dir.path());
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let contexts: i64 = sqlx::query_scalar("SELECT count(*) FROM contexts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(contexts, 8_000, "every webhook's data is there");
}

#[tokio::test]
async fn every_acknowledged_webhook_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = start_server(dir.path()).await;
    let setup = setup_in(dir.path(), &address, 0);
    let client = reqwest::Client::new();
    let phone = |i: usize| format!("+1212555{:04}", 2000 + i);

    let acked: Vec<usize> = join_all((0..200).map(|i| {
        let (client, setup) = (&client, &setup);
        async move {
            let res = client
                .post(&setup.url)
                .header("X-Authorization", &setup.key)
                .json(&json!({"agentId": setup.agent_id, "phoneNumber": phone(i), "n": i}))
                .send()
                .await
                .ok()?;
            (res.status() == 202).then_some(i)
        }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(acked.len(), 200);
    signal(&child, "-KILL");
    child.wait().await.unwrap();

    let (_child, address) = start_server(dir.path()).await;
    for i in acked {
        let call: Value = client
            .post(format!("{address}/api/v1/calls"))
            .bearer_auth(&setup.token)
            .json(&json!({"agentId": setup.agent_id, "from": phone(i)}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(call["source"], "webhook", "acknowledged webhook {i} lost");
        assert_eq!(call["variables"]["n"], json!(i));
    }
}

#[tokio::test]
async fn sigterm_under_load_finishes_in_flight_calls_and_refuses_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = start_server_with(dir.path(), |command| {
        command.args(["--shutdown-grace-secs", "8"]);
    })
    .await;
    // Calls wait up to 4 s for their webhook, which never comes.
    let setup = setup_in(dir.path(), &address, 4000);
    let load = crate::durability::Load::start(&address, &setup, 32, 0);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let waiting: Vec<_> = (0..100)
        .map(|i| {
            let (client, setup) = (client.clone(), setup.clone());
            let url = format!("{address}/api/v1/calls");
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(&setup.token)
                    .json(&json!({"agentId": setup.agent_id, "from": format!("+1212555{:04}", 3000 + i)}))
                    .send()
                    .await
            })
        })
        .collect();
    // The calls have reached the server and wait there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&child, "-TERM");
    let signalled = tokio::time::Instant::now();

    // The listener closes soon after the signal (a connection caught in its queue at that
    // moment may be reset); from then on new connections are refused outright.
    let host = address.trim_start_matches("http://").to_owned();
    tokio::time::timeout(Duration::from_secs(5), async {
        while tokio::net::TcpStream::connect(&host).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the listener closes soon after the signal");
    let refused = tokio::net::TcpStream::connect(&host)
        .await
        .expect_err("the listener is closed");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let res = reqwest::Client::new()
        .post(format!("{address}/api/v1/calls"))
        .bearer_auth(&setup.token)
        .json(&json!({"agentId": setup.agent_id, "from": "+12125559999"}))
        .send()
        .await
        .expect_err("no new requests after the signal");
    assert!(res.is_connect(), "{res:?}");

    let sent = load.finish().await;
    for call in waiting {
        let res = call.await.unwrap().expect("a waiting call is answered");
        assert_eq!(res.status(), 201);
        let call: Value = res.json().await.unwrap();
        assert_eq!(call["source"], "fallback");
    }
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits once in-flight requests are done")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let exited_after = signalled.elapsed();

    // Every webhook answered 202 before the exit is there after a restart; none got a 5xx.
    let acked: Vec<_> = sent.iter().filter(|s| s.status == Some(202)).collect();
    assert!(
        sent.iter().all(|s| s.status.is_none_or(|st| st == 202)),
        "{:?}",
        sent.iter().find(|s| s.status.is_some_and(|st| st != 202))
    );
    let (_child, address) = start_server(dir.path()).await;
    let kept = cli_in(
        dir.path(),
        &address,
        &[
            "deliveries",
            "--agent",
            &setup.agent_id,
            "--limit",
            "1000000",
        ],
    );
    let kept: std::collections::HashSet<&str> = kept
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == 202)
        .filter_map(|d| d["phoneNumber"].as_str())
        .collect();
    let found = acked
        .iter()
        .filter(|s| kept.contains(s.phone.as_str()))
        .count();
    println!(
        "SIGTERM under load: 100 waiting calls answered; webhooks sent {}, acknowledged {}, found {found}; exited {} ms after the signal",
        sent.len(),
        acked.len(),
        exited_after.as_millis()
    );
    assert_eq!(found, acked.len());
}

#[tokio::test]
async fn sigterm_exits_at_the_grace_deadline_even_while_a_call_still_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = start_server_with(dir.path(), |command| {
        command.args(["--shutdown-grace-secs", "1"]);
    })
    .await;
    let setup = setup_in(dir.path(), &address, 10_000);
    let call = tokio::spawn({
        let url = format!("{address}/api/v1/calls");
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(&setup.token)
                .json(&json!({"agentId": setup.agent_id, "from": "+12125551234"}))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(6), child.wait())
        .await
        .expect("exits at the grace deadline, not when the 10 s wait ends")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(call.await.unwrap().is_err(), "the call was cut off");
}
