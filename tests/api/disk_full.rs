//! The real binary on a disk that fills up (a file-size limit, RLIMIT_FSIZE, which the
//! server answers like a full disk): readiness says so, and a restart with acknowledged
//! webhooks in the ingest journal serves reads, refuses writes and keeps the journal until
//! there is room again.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::{Setup, assert_problem};
use crate::process::{cli_in, setup_in, signal, start_server, start_server_with};

/// A server set up in `dir` (an agent whose webhook waits 0 ms) and stopped again.
async fn set_up_and_stop(dir: &Path) -> Setup {
    let (mut child, address) = start_server(dir).await;
    let setup = setup_in(dir, &address, 0);
    signal(&child, "-TERM");
    child.wait().await.unwrap();
    setup
}

/// `setup` with its webhook URL on the server now at `address`.
fn served_at(setup: &Setup, address: &str) -> Setup {
    let (_, slug) = setup.url.split_once("/webhooks/").unwrap();
    Setup {
        url: format!("{address}/webhooks/{slug}"),
        ..setup.clone()
    }
}

/// The server's log goes to a file in `dir`, on the disk that fills up, as it would with
/// `2>> precall.log`: a log line that cannot be written must not stop anything.
fn log_to_file(dir: &Path, command: &mut Command) {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    command.stderr(Stdio::from(log));
}

/// Starts the server in `dir` with files limited to `bytes` (the soft limit, so that the
/// test can lift it), its log in a file, and `env` set.
async fn start_limited(dir: &Path, bytes: u64, env: &[(&str, &str)]) -> (Child, String) {
    start_server_with(dir, |command| {
        log_to_file(dir, command);
        for (k, v) in env {
            command.env(k, v);
        }
        // SAFETY: the hook only makes system calls (async-signal-safe) on its own stack.
        unsafe {
            command.pre_exec(move || {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                limit.rlim_cur = bytes.min(limit.rlim_max);
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
    .await
}

/// Sets the file-size limit (RLIMIT_FSIZE) of the running `child`, up to its hard limit.
fn limit_file_size(child: &Child, bytes: libc::rlim_t) {
    let pid = child.id().expect("running") as libc::pid_t;
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on valid pointers.
    unsafe {
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut current),
            0
        );
        let new = libc::rlimit {
            rlim_cur: bytes.min(current.rlim_max),
            rlim_max: current.rlim_max,
        };
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

/// `GET /readyz`: its status and body.
async fn readyz(client: &reqwest::Client, address: &str) -> (u16, Value) {
    let res = client
        .get(format!("{address}/readyz"))
        .send()
        .await
        .expect("readyz answers");
    let status = res.status().as_u16();
    (status, res.json().await.expect("readyz answers JSON"))
}

/// Polls `/readyz` (nothing else reaches the server meanwhile) until it answers `status`,
/// for up to `patience`; returns the body.
async fn readyz_until(
    client: &reqwest::Client,
    address: &str,
    status: u16,
    patience: Duration,
) -> Value {
    let deadline = Instant::now() + patience;
    loop {
        let (got, body) = readyz(client, address).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still answers {got} {body} after {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_not_ready_because_writes_fail(body: &Value) {
    assert_eq!(body["status"], "not ready", "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("writes are failing: "), "{body}");
    assert!(!reason.contains('/'), "no path in the reason: {body}");
}

async fn post_webhook(
    client: &reqwest::Client,
    setup: &Setup,
    phone: &str,
    n: usize,
) -> reqwest::Response {
    client
        .post(&setup.url)
        .header("X-Authorization", &setup.key)
        .json(&json!({
            "agentId": setup.agent_id,
            "phoneNumber": phone,
            "n": n,
            // A few KiB, so that applying a hundred of them takes room.
            "notes": format!("{n}:{}", "x".repeat(3000)),
        }))
        .send()
        .await
        .expect("answered")
}

async fn start_call(
    client: &reqwest::Client,
    address: &str,
    setup: &Setup,
    phone: &str,
) -> reqwest::Response {
    client
        .post(format!("{address}/api/v1/calls"))
        .bearer_auth(&setup.token)
        .json(&json!({"agentId": setup.agent_id, "from": phone}))
        .send()
        .await
        .expect("answered")
}

async fn assert_unavailable(res: reqwest::Response) {
    assert!(
        res.headers().contains_key("retry-after"),
        "a 503 says when to retry"
    );
    assert_problem(res, 503, "unavailable").await;
}

fn phone(n: usize) -> String {
    format!("+1212{:07}", 4_000_000 + n)
}

#[tokio::test]
async fn readyz_is_not_ready_while_writes_fail_and_ready_again_once_they_succeed() {
    if crate::helpers::skip_on_postgres(
        "a full disk under an SQLite database file and its ingest journal",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let setup = set_up_and_stop(dir.path()).await;
    let (child, address) = start_limited(dir.path(), libc::RLIM_INFINITY, &[]).await;
    let setup = served_at(&setup, &address);
    let client = reqwest::Client::new();
    assert_eq!(readyz(&client, &address).await.0, 200);
    let res = post_webhook(&client, &setup, &phone(0), 0).await;
    assert_eq!(res.status(), 202);

    // The disk is full: no file may grow by a byte.
    limit_file_size(&child, 1);
    let res = post_webhook(&client, &setup, &phone(1), 1).await;
    assert_unavailable(res).await;
    let (status, body) = readyz(&client, &address).await;
    assert_eq!(status, 503, "{body}");
    assert_not_ready_because_writes_fail(&body);
    // Still alive, and still not ready with no write coming to find out otherwise.
    let health = client
        .get(format!("{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = readyz(&client, &address).await;
    assert_eq!(status, 503, "{body}");

    // Room again: ready without any other request, and writes succeed.
    limit_file_size(&child, libc::RLIM_INFINITY);
    readyz_until(&client, &address, 200, Duration::from_secs(10)).await;
    let res = post_webhook(&client, &setup, &phone(2), 2).await;
    assert_eq!(res.status(), 202);
    let call: Value = start_call(&client, &address, &setup, &phone(2))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(call["source"], "webhook", "{call}");
}

#[tokio::test]
async fn an_idle_server_whose_disk_fills_up_turns_not_ready_and_ready_again() {
    if crate::helpers::skip_on_postgres(
        "a full disk under an SQLite database file and its ingest journal",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let setup = set_up_and_stop(dir.path()).await;
    let (child, address) = start_limited(dir.path(), libc::RLIM_INFINITY, &[]).await;
    let setup = served_at(&setup, &address);
    let client = reqwest::Client::new();
    assert_eq!(readyz(&client, &address).await.0, 200);

    // Nothing is written while the disk fills up: readiness finds out by itself.
    limit_file_size(&child, 1);
    let body = readyz_until(&client, &address, 503, Duration::from_secs(15)).await;
    assert_not_ready_because_writes_fail(&body);

    limit_file_size(&child, libc::RLIM_INFINITY);
    readyz_until(&client, &address, 200, Duration::from_secs(10)).await;
    let res = post_webhook(&client, &setup, &phone(0), 0).await;
    assert_eq!(res.status(), 202);
}

#[tokio::test]
async fn a_restart_on_a_full_disk_serves_reads_refuses_writes_and_applies_the_journal_once_there_is_room()
 {
    if crate::helpers::skip_on_postgres(
        "a full disk under an SQLite database file and its ingest journal",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let setup = set_up_and_stop(dir.path()).await;

    let (mut child, address) = crate::durability::start_holding(dir.path()).await;
    let setup_now = served_at(&setup, &address);
    let client = reqwest::Client::new();
    // A call to read back later, committed: reading it back commits what the writer holds.
    let res = start_call(&client, &address, &setup_now, "+12125550100").await;
    assert_eq!(res.status(), 201);
    let call: Value = res.json().await.unwrap();
    let call_id = call["callId"].as_str().unwrap().to_owned();
    let res = client
        .get(format!("{address}/api/v1/calls/{call_id}"))
        .bearer_auth(&setup.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Fewer than the journal holds before a commit (256 KiB), more than fits below.
    let acknowledged: Vec<String> = (0..50).map(phone).collect();
    for (n, phone) in acknowledged.iter().enumerate() {
        let res = post_webhook(&client, &setup_now, phone, n).await;
        assert_eq!(res.status(), 202);
    }
    let journal = dir.path().join("precall.db-ingest");
    let journaled = std::fs::metadata(&journal).unwrap().len();
    assert!(journaled > 50 * 3000, "the webhooks wait in the journal");
    signal(&child, "-KILL");
    child.wait().await.unwrap();

    // Files may not grow past 64 KiB: applying the journal takes more than that.
    let limit = 64 * 1024;
    let (mut child, address) = start_limited(dir.path(), limit, &[]).await;
    let setup_now = served_at(&setup, &address);
    let (status, body) = readyz(&client, &address).await;
    assert_eq!(status, 503, "{body}");
    assert_not_ready_because_writes_fail(&body);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("acknowledged webhooks and calls wait"),
        "{body}"
    );
    // Reads are served.
    for path in ["/healthz", "/"] {
        let res = client.get(format!("{address}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let res = client
        .get(format!("{address}/api/v1/calls/{call_id}"))
        .bearer_auth(&setup.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let read: Value = res.json().await.unwrap();
    assert_eq!(read["callId"], json!(call_id), "{read}");
    // Writes are refused, and nothing of them is kept.
    assert_unavailable(post_webhook(&client, &setup_now, &phone(500), 500).await).await;
    assert_unavailable(start_call(&client, &address, &setup_now, &phone(0)).await).await;
    assert_eq!(
        std::fs::metadata(&journal).unwrap().len(),
        journaled,
        "the journal is kept whole"
    );

    // Killed in this state, and started again on the still full disk.
    signal(&child, "-KILL");
    child.wait().await.unwrap();
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), journaled);
    let (child, address) = start_limited(dir.path(), limit, &[]).await;
    let setup_now = served_at(&setup, &address);
    assert_eq!(readyz(&client, &address).await.0, 503);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(readyz(&client, &address).await.0, 503);

    // Room again: the journal is applied without any write coming, and the server is ready.
    limit_file_size(&child, libc::RLIM_INFINITY);
    readyz_until(&client, &address, 200, Duration::from_secs(10)).await;
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    let delivered = cli_in(
        dir.path(),
        &address,
        &["deliveries", "--agent", &setup.agent_id, "--limit", "1000"],
    );
    let mut delivered: Vec<String> = delivered
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == 202)
        .map(|d| d["phoneNumber"].as_str().unwrap().to_owned())
        .collect();
    delivered.sort();
    assert_eq!(
        delivered, acknowledged,
        "each acknowledged webhook delivered once, and no refused one"
    );
    for (n, phone) in acknowledged.iter().enumerate() {
        let res = start_call(&client, &address, &setup_now, phone).await;
        assert_eq!(res.status(), 201);
        let call: Value = res.json().await.unwrap();
        assert_eq!(call["source"], "webhook", "{phone}: {call}");
        assert_eq!(call["variables"]["n"], json!(n));
        let notes = call["variables"]["notes"].as_str().unwrap();
        assert!(notes.starts_with(&format!("{n}:x")), "{phone}");
    }
    drop(child);
}
