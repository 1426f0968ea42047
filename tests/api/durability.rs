//! The real binary under concurrent ingest and call traffic: what it acknowledged is still
//! there after kill -9, and a disk that fills up is answered with 503 and nothing half-kept.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::helpers::Setup;
use crate::process::{cli_in, setup_in, signal, start_server, start_server_with};

/// A request of the load and what the server answered (`None`: no answer at all).
#[derive(Debug, Clone)]
pub struct Sent {
    pub kind: Kind,
    pub n: usize,
    pub phone: String,
    pub status: Option<u16>,
    pub body: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A webhook for a caller who does not call during the load.
    Webhook,
    /// A webhook for a caller whose call is announced at the same time.
    CallerWebhook,
    Call,
}

/// Webhook-only callers and calling callers have numbers in different exchanges.
fn phone(kind: Kind, n: usize) -> String {
    match kind {
        Kind::Webhook => format!("+1212{:07}", 2_000_000 + n),
        Kind::CallerWebhook | Kind::Call => format!("+1212{:07}", 3_000_000 + n),
    }
}

/// Concurrent ingest and call traffic against one server, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub in_flight: Arc<AtomicUsize>,
    sent: Arc<Mutex<Vec<Sent>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// `webhook_tasks` tasks post webhooks for callers who do not call; `call_tasks` tasks
    /// each announce a call and, shortly after, post its caller's webhook (which wakes it).
    pub fn start(address: &str, setup: &Setup, webhook_tasks: usize, call_tasks: usize) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let load = Self {
            stop: Arc::default(),
            in_flight: Arc::default(),
            sent: Arc::default(),
            tasks: Vec::new(),
        };
        let counter = Arc::new(AtomicUsize::new(0));
        let calls_url = format!("{address}/api/v1/calls");
        let mut tasks = Vec::new();
        for task in 0..webhook_tasks + call_tasks {
            let (client, setup, calls_url) = (client.clone(), setup.clone(), calls_url.clone());
            let (stop, in_flight, sent, counter) = (
                load.stop.clone(),
                load.in_flight.clone(),
                load.sent.clone(),
                counter.clone(),
            );
            let calling = task >= webhook_tasks;
            tasks.push(tokio::spawn(async move {
                let request = |kind: Kind, n: usize| {
                    let (client, setup, calls_url) = (&client, &setup, &calls_url);
                    let in_flight = &in_flight;
                    async move {
                        let phone = phone(kind, n);
                        let req = if kind == Kind::Call {
                            client
                                .post(calls_url)
                                .bearer_auth(&setup.token)
                                .json(&json!({"agentId": setup.agent_id, "from": phone}))
                        } else {
                            client
                                .post(&setup.url)
                                .header("X-Authorization", &setup.key)
                                .json(&json!({
                                    "agentId": setup.agent_id,
                                    "phoneNumber": phone,
                                    "n": n,
                                    "marker": format!("sent-{n}"),
                                }))
                        };
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let res = req.send().await;
                        let (status, body) = match res {
                            Ok(res) => {
                                let status = res.status().as_u16();
                                (Some(status), res.json().await.unwrap_or(Value::Null))
                            }
                            Err(_) => (None, Value::Null),
                        };
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        Sent {
                            kind,
                            n,
                            phone,
                            status,
                            body,
                        }
                    }
                };
                while !stop.load(Ordering::SeqCst) {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let done = if calling {
                        let webhook = async {
                            tokio::time::sleep(Duration::from_millis(20 * (n % 8) as u64)).await;
                            request(Kind::CallerWebhook, n).await
                        };
                        let (call, webhook) = tokio::join!(request(Kind::Call, n), webhook);
                        vec![call, webhook]
                    } else {
                        vec![request(Kind::Webhook, n).await]
                    };
                    sent.lock().unwrap().extend(done);
                }
            }));
        }
        Self { tasks, ..load }
    }

    /// Stops sending and waits for the answers (or failures) of what was sent.
    pub async fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.sent).unwrap().into_inner().unwrap()
    }
}

/// The phone of each accepted (202) delivery in the agent's history, newest first.
fn accepted_deliveries(dir: &Path, address: &str, setup: &Setup) -> Vec<String> {
    let list = cli_in(
        dir,
        address,
        &[
            "deliveries",
            "--agent",
            &setup.agent_id,
            "--limit",
            "10000000",
        ],
    );
    list.as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == 202)
        .filter_map(|d| d["phoneNumber"].as_str().map(str::to_owned))
        .collect()
}

/// A server set up in `dir` (an agent whose webhook waits 0 ms) and stopped again.
async fn set_up_and_stop(dir: &Path) -> Setup {
    let (mut child, address) = start_server(dir).await;
    let setup = setup_in(dir, &address, 0);
    signal(&child, "-TERM");
    child.wait().await.unwrap();
    setup
}

/// `setup` with its webhook URL on the server now at `address`.
fn served_at(setup: Setup, address: &str) -> Setup {
    Setup {
        url: setup
            .url
            .replace(setup.url.split("/webhooks/").next().unwrap(), address),
        ..setup
    }
}

/// Starts a call from `phone` (the agent's wait is 0 or data is already there).
async fn call_from(client: &reqwest::Client, address: &str, setup: &Setup, phone: &str) -> Value {
    let res = client
        .post(format!("{address}/api/v1/calls"))
        .bearer_auth(&setup.token)
        .json(&json!({"agentId": setup.agent_id, "from": phone}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "call from {phone}");
    res.json().await.unwrap()
}

/// A server on `dir` whose writer holds acknowledged webhooks and calls for ten minutes
/// (up to 256 KiB of them) before committing them.
pub async fn start_holding(dir: &Path) -> (Child, String) {
    start_server_with(dir, |command| {
        command
            .env("PRECALL_COMMIT_EVERY_MS", "600000")
            .env("PRECALL_COMMIT_IDLE_MS", "600000");
    })
    .await
}

/// Kills `child` with SIGKILL and starts a server on `dir` twice: the journal is applied at
/// the first start, which empties it, and not again. The second server.
async fn kill_and_restart_twice(mut child: Child, dir: &Path) -> (Child, String) {
    signal(&child, "-KILL");
    child.wait().await.unwrap();
    let (mut child, _) = start_server(dir).await;
    signal(&child, "-TERM");
    child.wait().await.unwrap();
    let journal = dir.join("precall.db-ingest");
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    start_server(dir).await
}

/// Posts a webhook for `phone` carrying `n` and a marker; it must be accepted.
async fn post_marked(client: &reqwest::Client, setup: &Setup, phone: &str, n: usize) {
    let res = client
        .post(&setup.url)
        .header("X-Authorization", &setup.key)
        .json(&json!({"agentId": setup.agent_id, "phoneNumber": phone,
                      "n": n, "marker": format!("sent-{n}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}

/// Runs `f` over `items`, `width` at a time.
async fn in_chunks<T, F, Fut>(items: &[T], width: usize, f: F) -> Vec<Fut::Output>
where
    T: Clone,
    F: Fn(T) -> Fut,
    Fut: std::future::Future,
{
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(width) {
        out.extend(join_all(chunk.iter().cloned().map(&f)).await);
    }
    out
}

#[tokio::test]
async fn everything_acknowledged_under_load_survives_kill_9() {
    if crate::helpers::skip_on_postgres(
        "its servers are processes on SQLite files of their own, which the SQLite run covers",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = start_server(dir.path()).await;
    // Calls wait for their caller's webhook, which is posted up to 140 ms after them.
    let setup = setup_in(dir.path(), &address, 1000);

    let load = Load::start(&address, &setup, 160, 96);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let in_flight_at_kill = load.in_flight.load(Ordering::SeqCst);
    signal(&child, "-KILL");
    child.wait().await.unwrap();
    let sent = load.finish().await;

    let (_child, address) = start_server(dir.path()).await;
    let client = reqwest::Client::new();
    let delivered: HashSet<String> = accepted_deliveries(dir.path(), &address, &setup)
        .into_iter()
        .collect();

    let acked = |kinds: &[Kind], status: u16| -> Vec<Sent> {
        sent.iter()
            .filter(|s| kinds.contains(&s.kind) && s.status == Some(status))
            .cloned()
            .collect()
    };
    let count = |kinds: &[Kind]| sent.iter().filter(|s| kinds.contains(&s.kind)).count();

    // Every acknowledged webhook is in the delivery history...
    let webhooks = acked(&[Kind::Webhook, Kind::CallerWebhook], 202);
    let webhooks_found = webhooks
        .iter()
        .filter(|s| delivered.contains(&s.phone))
        .count();
    // ...and the data of callers who did not call during the load is used by their call now.
    let uncalled = acked(&[Kind::Webhook], 202);
    let uncalled_found = in_chunks(&uncalled, 32, |s| {
        let (client, address, setup) = (&client, &address, &setup);
        async move {
            let call = call_from(client, address, setup, &s.phone).await;
            call["source"] == "webhook"
                && call["variables"]["n"] == json!(s.n)
                && call["variables"]["marker"] == json!(format!("sent-{}", s.n))
        }
    })
    .await
    .into_iter()
    .filter(|found| *found)
    .count();
    // Every call answered 201 reads back as it was answered.
    let calls = acked(&[Kind::Call], 201);
    let calls_found = in_chunks(&calls, 32, |s| {
        let (client, address, setup) = (&client, &address, &setup);
        async move {
            let id = s.body["callId"].as_str().unwrap();
            let res = client
                .get(format!("{address}/api/v1/calls/{id}"))
                .bearer_auth(&setup.token)
                .send()
                .await
                .unwrap();
            if res.status() != 200 {
                return false;
            }
            let read: Value = res.json().await.unwrap();
            read["callId"] == s.body["callId"]
                && read["from"] == json!(s.phone)
                && read["source"] == s.body["source"]
                && read["variables"] == s.body["variables"]
        }
    })
    .await
    .into_iter()
    .filter(|found| *found)
    .count();

    let from_webhook = calls
        .iter()
        .filter(|c| c.body["source"] == "webhook")
        .count();
    println!(
        "kill -9 under load: {in_flight_at_kill} requests in flight at the kill; \
         webhooks sent {}, acknowledged {}, found {webhooks_found}; \
         of those for callers not calling, {} acknowledged, {uncalled_found} used by a call after restart; \
         calls sent {}, acknowledged {} ({from_webhook} with webhook data), found {calls_found}",
        count(&[Kind::Webhook, Kind::CallerWebhook]),
        webhooks.len(),
        uncalled.len(),
        count(&[Kind::Call]),
        calls.len(),
    );
    assert!(
        in_flight_at_kill > 0,
        "the kill landed while requests were in flight"
    );
    assert!(
        !webhooks.is_empty() && !calls.is_empty(),
        "the load was served before the kill"
    );
    assert_eq!(webhooks_found, webhooks.len(), "acknowledged webhooks lost");
    assert_eq!(
        uncalled_found,
        uncalled.len(),
        "acknowledged webhook data lost"
    );
    assert_eq!(calls_found, calls.len(), "acknowledged calls lost");
}

#[tokio::test]
async fn webhooks_acknowledged_before_their_commit_survive_kill_9_and_are_applied_once() {
    if crate::helpers::skip_on_postgres("the ingest journal is SQLite's") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let setup = set_up_and_stop(dir.path()).await;

    let (child, address) = start_holding(dir.path()).await;
    let setup = served_at(setup, &address);
    let client = reqwest::Client::new();
    let phones: Vec<String> = (0..40).map(|n| phone(Kind::Webhook, n)).collect();
    for (n, phone) in phones.iter().enumerate() {
        post_marked(&client, &setup, phone, n).await;
    }
    let journal = dir.path().join("precall.db-ingest");
    assert!(
        std::fs::metadata(&journal).unwrap().len() > 0,
        "the acknowledged webhooks wait in the journal"
    );
    let (_child, address) = kill_and_restart_twice(child, dir.path()).await;
    let mut delivered = accepted_deliveries(dir.path(), &address, &setup);
    delivered.sort();
    assert_eq!(
        delivered, phones,
        "each acknowledged webhook delivered once"
    );
    for (n, phone) in phones.iter().enumerate() {
        let call = call_from(&client, &address, &setup, phone).await;
        assert_eq!(call["source"], "webhook", "{phone}: {call}");
        assert_eq!(call["variables"]["n"], json!(n));
        assert_eq!(call["variables"]["marker"], json!(format!("sent-{n}")));
    }
}

#[tokio::test]
async fn calls_acknowledged_before_their_commit_survive_kill_9_with_their_claims_and_fallbacks() {
    if crate::helpers::skip_on_postgres("the ingest journal is SQLite's") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let setup = set_up_and_stop(dir.path()).await;

    let (child, address) = start_holding(dir.path()).await;
    let setup = served_at(setup, &address);
    let client = reqwest::Client::new();
    // Callers with data, whose calls take it, and callers without, whose calls fall back.
    let with_data: Vec<String> = (0..20).map(|n| phone(Kind::Call, n)).collect();
    let without: Vec<String> = (20..30).map(|n| phone(Kind::Call, n)).collect();
    for (n, phone) in with_data.iter().enumerate() {
        post_marked(&client, &setup, phone, n).await;
    }
    let journal = dir.path().join("precall.db-ingest");
    let webhooks_only = std::fs::metadata(&journal).unwrap().len();
    let mut answered = Vec::new();
    for phone in with_data.iter().chain(&without) {
        answered.push(call_from(&client, &address, &setup, phone).await);
    }
    for (call, n) in answered.iter().zip(0..) {
        let expected = if n < 20 { "webhook" } else { "fallback" };
        assert_eq!(call["source"], expected, "{call}");
    }
    assert!(
        std::fs::metadata(&journal).unwrap().len() > webhooks_only,
        "the acknowledged calls wait in the journal with the webhooks"
    );
    let (_child, address) = kill_and_restart_twice(child, dir.path()).await;
    let setup = served_at(setup, &address);

    // Every call reads back as it was answered.
    for call in &answered {
        read_back_as_answered(&client, &address, &setup.token, call).await;
    }
    // The data the calls took stays taken: a second call from the same caller falls back.
    let again = call_from(&client, &address, &setup, &with_data[3]).await;
    assert_eq!(again["source"], "fallback", "{again}");
    // A call that fell back still counts data landing soon after as late for it.
    let res = client
        .post(&setup.url)
        .header("X-Authorization", &setup.key)
        .json(&json!({"agentId": setup.agent_id, "phoneNumber": without[0], "tier": "gold"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let read = read_back_as_answered(&client, &address, &setup.token, &answered[20]).await;
    assert_eq!(read["lateContext"]["fields"]["tier"], "gold", "{read}");
}

#[tokio::test]
async fn a_journaled_call_whose_webhook_was_deleted_before_replay_is_kept_without_its_fallback() {
    if crate::helpers::skip_on_postgres("the ingest journal is SQLite's") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let setup = set_up_and_stop(dir.path()).await;
    let (mut child, address) = start_holding(dir.path()).await;
    let setup = served_at(setup, &address);
    let client = reqwest::Client::new();
    // No data for the caller: the call falls back on the agent's Webhook action.
    let call = call_from(&client, &address, &setup, &phone(Kind::Call, 0)).await;
    assert_eq!(call["source"], "fallback", "{call}");
    signal(&child, "-KILL");
    child.wait().await.unwrap();

    // While the call waits in the journal, the Webhook action is deleted and published.
    let exported = crate::helpers::run_cli(
        &crate::process::url_in(dir.path()),
        &address,
        &["agent", "export", &setup.agent_id],
    );
    let mut doc: Value = serde_json::from_str(&exported).unwrap();
    doc["precall"] = json!([]);
    let file = dir.path().join("without-webhook.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    cli_in(
        dir.path(),
        &address,
        &[
            "agent",
            "import",
            &setup.agent_id,
            file.to_str().unwrap(),
            "--publish",
            "--message",
            "no webhook",
        ],
    );

    // The call is applied all the same, as a commit before the deletion would have kept it.
    let (_child, address) = start_server(dir.path()).await;
    read_back_as_answered(&client, &address, &setup.token, &call).await;
}

/// Reads `call` back through the runtime's API (as the runtime token `token` may) and
/// asserts it is kept as it was answered: the same id, caller, source, variables, status
/// and outcome. Returns the call as read.
async fn read_back_as_answered(
    client: &reqwest::Client,
    address: &str,
    token: &str,
    call: &Value,
) -> Value {
    let id = call["callId"].as_str().unwrap();
    let res = client
        .get(format!("{address}/api/v1/calls/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "call {id} kept");
    let read: Value = res.json().await.unwrap();
    for field in ["callId", "from", "source", "variables", "status", "outcome"] {
        assert_eq!(read[field], call[field], "{field} of {id}");
    }
    read
}

/// Posts a webhook for `phone` carrying `n` and a few KiB of text, so that the database
/// grows quickly.
async fn post_bulky(
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
            "notes": "x".repeat(4000),
        }))
        .send()
        .await
        .expect("answered")
}

/// Sets the file-size limit (RLIMIT_FSIZE) of process `pid`, up to its hard limit: writes
/// that would make a file larger fail with EFBIG (and raise SIGXFSZ, which the server
/// ignores).
fn limit_file_size(pid: libc::pid_t, bytes: libc::rlim_t) {
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

#[tokio::test]
async fn a_full_disk_is_answered_503_keeps_nothing_unacknowledged_and_recovers() {
    if crate::helpers::skip_on_postgres(
        "a full disk under an SQLite database file and its ingest journal",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Set up with no limit, and stop: the write-ahead log is folded into the database file.
    let setup = set_up_and_stop(dir.path()).await;
    let db_size = std::fs::metadata(dir.path().join("precall.db"))
        .unwrap()
        .len();

    // Files may grow 512 KiB past the database's size: a hundred or so webhooks fill that.
    let room = db_size + 512 * 1024;
    let (child, address) = start_server_with(dir.path(), |command| {
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
                limit.rlim_cur = room.min(limit.rlim_max);
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
    .await;
    let pid = child.id().unwrap() as libc::pid_t;
    let setup = served_at(setup, &address);
    let client = reqwest::Client::new();

    let mut answered: Vec<(String, usize, u16)> = Vec::new();
    let mut n = 0;
    let mut full = None;
    for _ in 0..300 {
        let round: Vec<(String, usize)> =
            (n..n + 32).map(|i| (phone(Kind::Webhook, i), i)).collect();
        n += 32;
        let responses = join_all(
            round
                .iter()
                .map(|(phone, i)| post_bulky(&client, &setup, phone, *i)),
        )
        .await;
        let mut refused = 0;
        for ((phone, i), res) in round.into_iter().zip(responses) {
            let status = res.status().as_u16();
            assert!(
                matches!(status, 202 | 503),
                "{status}: {}",
                res.text().await.unwrap()
            );
            if status == 503 {
                refused += 1;
                if full.is_none() {
                    let retry = res.headers().get("retry-after").cloned();
                    full = Some((
                        retry,
                        crate::helpers::assert_problem(res, 503, "unavailable").await,
                    ));
                }
            }
            answered.push((phone, i, status));
        }
        if refused == 32 {
            break;
        }
    }
    let (retry_after, problem) = full.expect("the disk filled up");
    assert!(retry_after.is_some(), "a 503 says when to retry");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was kept"),
        "{problem}"
    );
    // A request that would be refused anyway still says why.
    let res = client
        .post(&setup.url)
        .header("X-Authorization", "pcwk_not-the-key")
        .json(&json!({"agentId": setup.agent_id, "phoneNumber": "+12125550100"}))
        .send()
        .await
        .unwrap();
    crate::helpers::assert_problem(res, 401, "unauthorized").await;
    // A call started meanwhile is refused the same way, or (when its small record still
    // fits) started in full: never half-started.
    let res = client
        .post(format!("{address}/api/v1/calls"))
        .bearer_auth(&setup.token)
        .json(&json!({"agentId": setup.agent_id, "from": phone(Kind::Call, 0)}))
        .send()
        .await
        .unwrap();
    let call_during = if res.status() == 201 {
        Some(res.json::<Value>().await.unwrap())
    } else {
        crate::helpers::assert_problem(res, 503, "unavailable").await;
        None
    };

    // Space returns: the very next webhooks are accepted.
    limit_file_size(pid, libc::RLIM_INFINITY);
    let round: Vec<(String, usize)> = (n..n + 32).map(|i| (phone(Kind::Webhook, i), i)).collect();
    for (phone, i) in round {
        let res = post_bulky(&client, &setup, &phone, i).await;
        assert_eq!(res.status(), 202, "accepted once there is room again");
        answered.push((phone, i, 202));
    }

    // Every 202 is there; nothing answered 503 was kept, not even as a delivery.
    let delivered = {
        let list = cli_in(
            dir.path(),
            &address,
            &[
                "deliveries",
                "--agent",
                &setup.agent_id,
                "--limit",
                "100000",
            ],
        );
        list.as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["phoneNumber"].as_str().map(str::to_owned))
            .collect::<HashSet<_>>()
    };
    let results = in_chunks(&answered, 16, |(phone, i, status)| {
        let (client, address, setup, delivered) = (&client, &address, &setup, &delivered);
        async move {
            let call = call_from(client, address, setup, &phone).await;
            let kept = call["source"] == "webhook" && call["variables"]["n"] == json!(i);
            (status, kept, delivered.contains(&phone))
        }
    })
    .await;
    if let Some(call) = call_during {
        let id = call["callId"].as_str().unwrap();
        let read: Value = client
            .get(format!("{address}/api/v1/calls/{id}"))
            .bearer_auth(&setup.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            read["variables"], call["variables"],
            "a call answered 201 is kept"
        );
    }
    let accepted: Vec<_> = results.iter().filter(|r| r.0 == 202).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    println!(
        "full disk: {} webhooks sent, {} accepted ({} found), {} answered 503 ({} found)",
        results.len(),
        accepted.len(),
        accepted.iter().filter(|r| r.1 && r.2).count(),
        refused.len(),
        refused.iter().filter(|r| r.1 || r.2).count(),
    );
    assert!(
        accepted.iter().all(|r| r.1 && r.2),
        "an accepted webhook was lost"
    );
    assert!(
        refused.iter().all(|r| !r.1 && !r.2),
        "a refused webhook was kept"
    );
}
