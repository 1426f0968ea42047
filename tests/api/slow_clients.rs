//! Slow clients: requests whose headers or body trickle in are cut off with 408 after the
//! read timeouts, while normal ingests and calls (which may wait for their data far longer
//! than those timeouts) are served all along.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Setup, TestApp, example_payload, spawn_app_with};

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
/// A cut-off may come this much later than its timeout on a loaded machine.
const SLACK: Duration = Duration::from_secs(8);

async fn spawn_timed_app() -> TestApp {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    spawn_app_with(|s| {
        s.header_timeout = HEADER_TIMEOUT;
        s.body_timeout = BODY_TIMEOUT;
    })
    .await
}

fn host_port(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// `host:port` and path of a webhook URL.
fn path_of(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    rest[rest.find('/').unwrap()..].to_owned()
}

/// What a slow client saw.
#[derive(Debug)]
pub(crate) enum Ending {
    /// An answer with this status and body.
    Answer(u16, String),
    /// The connection closed without an answer.
    Closed,
}

/// Reads one HTTP/1.1 answer (or the close) from `read`.
pub(crate) async fn read_answer(read: &mut (impl AsyncReadExt + Unpin)) -> Ending {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let status = head[9..12].parse().unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into();
                return Ending::Answer(status, body);
            }
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                return if buf.is_empty() {
                    Ending::Closed
                } else {
                    Ending::Answer(0, String::from_utf8_lossy(&buf).into())
                };
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `prefix` at once, then `trickle` one byte a second, until the server answers or
/// closes. Returns what it saw and how long after the trickle started.
async fn trickle(host: &str, prefix: Vec<u8>, trickle: Vec<u8>) -> (Ending, Duration) {
    let stream = TcpStream::connect(host).await.expect("connects");
    let (mut read, mut write) = stream.into_split();
    write.write_all(&prefix).await.unwrap();
    let started = Instant::now();
    let writer = async move {
        for byte in trickle {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Everything sent, and still no answer: keep the socket open.
        std::future::pending::<()>().await;
    };
    let ending = tokio::select! {
        ending = read_answer(&mut read) => ending,
        () = writer => unreachable!(),
    };
    (ending, started.elapsed())
}

/// A complete ingest request for `setup`, then the start of a second one trickled in.
async fn trickle_after_a_request(host: &str, setup: &Setup) -> (Ending, Duration) {
    let stream = TcpStream::connect(host).await.expect("connects");
    let (mut read, mut write) = stream.into_split();
    let body = example_payload(&setup.agent_id).to_string();
    let first = format!(
        "POST {} HTTP/1.1\r\nhost: {host}\r\nx-authorization: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        path_of(&setup.url),
        setup.key,
        body.len()
    );
    write.write_all(first.as_bytes()).await.unwrap();
    match read_answer(&mut read).await {
        Ending::Answer(202, _) => {}
        other => panic!("the first request on the connection was not accepted: {other:?}"),
    }
    let started = Instant::now();
    let writer = async move {
        for byte in b"POST /webhooks/x HTTP/1.1\r\nhost: slow\r\n".iter() {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<()>().await;
    };
    let ending = tokio::select! {
        ending = read_answer(&mut read) => ending,
        () = writer => unreachable!(),
    };
    (ending, started.elapsed())
}

fn ingest_head(host: &str, setup: &Setup, length: usize) -> Vec<u8> {
    format!(
        "POST {} HTTP/1.1\r\nhost: {host}\r\nx-authorization: {}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n",
        path_of(&setup.url),
        setup.key
    )
    .into_bytes()
}

fn call_head(host: &str, setup: &Setup, length: usize) -> Vec<u8> {
    format!(
        "POST /api/v1/calls HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n",
        setup.token
    )
    .into_bytes()
}

fn assert_408(ending: &Ending, what: &str) {
    match ending {
        Ending::Answer(408, body) => {
            let problem: Value = serde_json::from_str(body).expect("408 body is JSON");
            assert_eq!(
                problem["type"], "/problems/request-timeout",
                "{what}: {body}"
            );
            assert_eq!(problem["status"], 408, "{what}");
        }
        other => panic!("{what}: expected a 408 problem, got {other:?}"),
    }
}

#[tokio::test]
async fn hundreds_of_slow_clients_are_cut_off_with_408_while_normal_traffic_is_served() {
    let app = spawn_timed_app().await;
    let host = host_port(&app);
    let fast = app.setup(0);
    // Calls of this agent wait 3 s for their data: longer than either read timeout.
    let waiting = app.setup(3000);

    const FRESH_SLOW_HEADERS: usize = 250;
    const KEPT_ALIVE_SLOW_HEADERS: usize = 50;
    const SLOW_INGEST_BODIES: usize = 40;
    const SLOW_CALL_BODIES: usize = 10;

    let slow_body = example_payload(&fast.agent_id).to_string().into_bytes();
    let call_body = json!({"agentId": fast.agent_id, "from": "+12125550142"})
        .to_string()
        .into_bytes();
    let mut slow = Vec::new();
    for _ in 0..FRESH_SLOW_HEADERS {
        let request = b"POST /webhooks/whatever HTTP/1.1\r\nhost: slow\r\n".to_vec();
        slow.push(tokio::spawn({
            let host = host.clone();
            async move { ("header", trickle(&host, Vec::new(), request).await) }
        }));
    }
    for _ in 0..KEPT_ALIVE_SLOW_HEADERS {
        let (host, setup) = (host.clone(), fast.clone());
        slow.push(tokio::spawn(async move {
            (
                "header after a request",
                trickle_after_a_request(&host, &setup).await,
            )
        }));
    }
    for _ in 0..SLOW_INGEST_BODIES {
        let head = ingest_head(&host, &fast, slow_body.len());
        let (host, body) = (host.clone(), slow_body.clone());
        slow.push(tokio::spawn(async move {
            ("ingest body", trickle(&host, head, body).await)
        }));
    }
    for _ in 0..SLOW_CALL_BODIES {
        let head = call_head(&host, &fast, call_body.len());
        let (host, body) = (host.clone(), call_body.clone());
        slow.push(tokio::spawn(async move {
            ("call body", trickle(&host, head, body).await)
        }));
    }

    // Normal traffic, meanwhile: ingests and calls, one after the other, plus calls that
    // wait for data longer than the read timeouts.
    let done = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let normal = {
        let (app_client, fast, done, served) = (
            app.client.clone(),
            fast.clone(),
            done.clone(),
            served.clone(),
        );
        let address = app.address.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let phone = format!("+1212555{:04}", n % 10_000);
                let mut body = example_payload(&fast.agent_id);
                body["phoneNumber"] = json!(phone);
                let res = app_client
                    .post(&fast.url)
                    .header("X-Authorization", &fast.key)
                    .json(&body)
                    .send()
                    .await
                    .expect("ingest during the slow traffic");
                assert_eq!(
                    res.status(),
                    202,
                    "ingest during the slow traffic: {}",
                    res.text().await.unwrap()
                );
                let res = app_client
                    .post(format!("{address}/api/v1/calls"))
                    .bearer_auth(&fast.token)
                    .json(&json!({"agentId": fast.agent_id, "from": phone}))
                    .send()
                    .await
                    .expect("call during the slow traffic");
                assert_eq!(res.status(), 201, "call during the slow traffic");
                let call: Value = res.json().await.unwrap();
                assert_eq!(call["source"], "webhook");
                served.fetch_add(2, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let long_waits: Vec<_> = (0..3)
        .map(|i| {
            let (app_client, waiting, address) =
                (app.client.clone(), waiting.clone(), app.address.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let res = app_client
                    .post(format!("{address}/api/v1/calls"))
                    .bearer_auth(&waiting.token)
                    .json(&json!({"agentId": waiting.agent_id, "from": format!("+1646555{i:04}")}))
                    .send()
                    .await
                    .expect("a waiting call is answered");
                assert_eq!(res.status(), 201, "{:?}", started.elapsed());
                let call: Value = res.json().await.unwrap();
                assert_eq!(call["source"], "fallback");
                started.elapsed()
            })
        })
        .collect();

    let endings = join_all(slow).await;
    done.store(true, Ordering::Relaxed);
    normal.await.expect("normal traffic kept succeeding");
    for waited in join_all(long_waits).await {
        let waited = waited.expect("waiting call");
        assert!(
            waited >= Duration::from_millis(2900),
            "the call answered before its fallback time: {waited:?}"
        );
    }

    let mut cut_off = 0;
    for ending in endings {
        let (what, (ending, after)) = ending.expect("slow client task");
        assert_408(&ending, what);
        let timeout = if what.contains("body") {
            BODY_TIMEOUT
        } else {
            HEADER_TIMEOUT
        };
        assert!(
            after >= timeout - Duration::from_millis(100) && after <= timeout + SLACK,
            "{what} cut off after {after:?}"
        );
        cut_off += 1;
    }
    let served = served.load(Ordering::Relaxed);
    assert_eq!(
        cut_off,
        FRESH_SLOW_HEADERS + KEPT_ALIVE_SLOW_HEADERS + SLOW_INGEST_BODIES + SLOW_CALL_BODIES
    );
    assert!(served >= 20, "only {served} normal requests were served");
    println!(
        "{cut_off} slow connections cut off with 408 while {served} normal requests and 3 waiting calls succeeded"
    );

    // The slow ingest bodies are on record as refused with 408; nothing was cached by them.
    let deliveries = app.cli_json(&["deliveries", "--agent", &fast.agent_id, "--limit", "100000"]);
    let timed_out = deliveries
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == 408)
        .count();
    assert_eq!(timed_out, SLOW_INGEST_BODIES);
}

#[tokio::test]
async fn an_idle_connection_is_closed_without_an_answer_after_the_header_timeout() {
    let app = spawn_timed_app().await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    let ending = tokio::time::timeout(HEADER_TIMEOUT + SLACK, read_answer(&mut stream))
        .await
        .expect("the idle connection is closed");
    assert!(matches!(ending, Ending::Closed), "{ending:?}");
    assert!(started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(100));
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_gets_408_and_changes_nothing() {
    let app = spawn_timed_app().await;
    let setup = app.setup(0);
    let host = host_port(&app);
    let body =
        json!({"agentId": setup.agent_id, "phoneNumber": "+12125550100", "priority": "high"})
            .to_string();
    // Announces 100 bytes more than it sends, then waits.
    let (ending, after) = trickle(
        &host,
        [
            ingest_head(&host, &setup, body.len() + 100),
            body.into_bytes(),
        ]
        .concat(),
        Vec::new(),
    )
    .await;
    assert_408(&ending, "short body");
    assert!(after <= BODY_TIMEOUT + SLACK);
    let call = app.start_call_json(&setup, "+12125550100").await;
    assert_eq!(call["source"], "fallback");
    let deliveries = app.deliveries(&setup.agent_id);
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["status"], 408);
}

/// An HTTP/2 (prior knowledge, h2c) connection to the app.
async fn h2(
    app: &TestApp,
) -> hyper::client::conn::http2::SendRequest<
    http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
> {
    let stream = TcpStream::connect(host_port(app)).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn http2_clients_are_served_and_their_slow_bodies_get_408() {
    let app = spawn_timed_app().await;
    let setup = app.setup(0);
    let mut sender = h2(&app).await;
    let request = |body: http_body_util::combinators::BoxBody<Bytes, std::io::Error>| {
        hyper::Request::post(&setup.url)
            .header("x-authorization", &setup.key)
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    };

    let body = example_payload(&setup.agent_id).to_string();
    let res = sender
        .send_request(request(
            Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed(),
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    // A body that starts and never finishes, on the same connection.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    tx.send(Ok(Frame::data(Bytes::from_static(b"{\"agentId\":"))))
        .await
        .unwrap();
    let started = Instant::now();
    let res = sender
        .send_request(request(StreamBody::new(tokio_stream_of(rx)).boxed()))
        .await
        .unwrap();
    assert_eq!(res.status(), 408);
    assert!(started.elapsed() <= BODY_TIMEOUT + SLACK);
    let problem: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(problem["type"], "/problems/request-timeout");
    drop(tx);

    // The connection still serves the call that uses the first request's data.
    let res = sender
        .send_request(
            hyper::Request::post(format!("{}/api/v1/calls", app.address))
                .header("authorization", format!("Bearer {}", setup.token))
                .header("content-type", "application/json")
                .body(
                    Full::new(Bytes::from(
                        json!({"agentId": setup.agent_id, "from": "+1234567890"}).to_string(),
                    ))
                    .map_err(|e| match e {})
                    .boxed(),
                )
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let call: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(call["source"], "webhook");
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[test]
fn the_read_timeouts_are_flags_with_environment_twins() {
    let out = std::process::Command::new(crate::helpers::BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for name in [
        "--header-timeout-secs",
        "PRECALL_HEADER_TIMEOUT_SECS",
        "--body-timeout-secs",
        "PRECALL_BODY_TIMEOUT_SECS",
    ] {
        assert!(help.contains(name), "{name} missing from --help");
    }
}
