//! Requests refused before their body is read: the sender gets the answer, never a reset.
//!
//! A server that answers and closes while the rest of a body is still arriving makes the
//! system reset the connection, which can destroy the answer before the sender reads it
//! (and a pooled client may send its next request on the closing connection). Each test
//! counts the senders that saw anything but the documented problem.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Setup, TestApp, spawn_app, spawn_app_with};

const LIMIT: usize = 64 * 1024;
/// Senders at once, in the concurrent rounds.
const CONCURRENCY: usize = 8;

fn host_port(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// What a sender that writes its whole request before reading saw.
enum Seen {
    Answer {
        status: u16,
        head: String,
        body: String,
        /// The server reset the connection (RST) rather than closing it (FIN).
        reset: bool,
    },
    /// The connection was reset or closed before a whole answer arrived.
    Lost(String),
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Lost(why) => write!(f, "no answer: {why}"),
            Seen::Answer {
                head, body, reset, ..
            } => {
                let then = if *reset { ", then a reset" } else { "" };
                write!(f, "{head:?} {body}{then}")
            }
        }
    }
}

impl Seen {
    /// No answer, or one followed by a reset.
    fn is_lost(&self) -> bool {
        matches!(self, Seen::Lost(_) | Seen::Answer { reset: true, .. })
    }
}

/// Reads one HTTP/1.1 answer with a `content-length`, then closes and sees how the server
/// does. `reset`: a write of the request already failed (on a reset: the server had answered
/// and closed, so nothing else does that).
async fn read_answer(stream: &mut TcpStream, reset: bool) -> Seen {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                // As a client does once it has its answer with `connection: close`.
                let _ = stream.shutdown().await;
                // Once the server's FIN has arrived, a reset shows as the socket's error, not
                // as a failed read.
                let reset = reset
                    || loop {
                        match stream.read(&mut chunk).await {
                            Ok(0) => break false,
                            Ok(_) => {}
                            Err(_) => break true,
                        }
                    }
                    || stream.take_error().unwrap().is_some();
                return Seen::Answer {
                    status: head[9..12].parse().unwrap(),
                    body: String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into(),
                    head,
                    reset,
                };
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) => return Seen::Lost(format!("closed after {} bytes", buf.len())),
            Err(e) => return Seen::Lost(format!("{e} after {} bytes", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `head` and all of `body` (as a naive sender does, whatever the server says
/// meanwhile), then reads the answer.
async fn send_all_then_read(host: &str, head: &str, body: &[u8]) -> Seen {
    let mut stream = TcpStream::connect(host).await.unwrap();
    let mut request = head.as_bytes().to_vec();
    request.extend_from_slice(body);
    let reset = stream.write_all(&request).await.is_err();
    tokio::time::timeout(Duration::from_secs(30), read_answer(&mut stream, reset))
        .await
        .unwrap_or_else(|_| Seen::Lost("no answer within 30 s".into()))
}

/// `body` in chunks of `size` bytes, then the last chunk.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Whether `seen` is the `status` problem of type `slug`, and says the connection closes.
fn is_problem(seen: &Seen, status: u16, slug: &str) -> bool {
    let Seen::Answer {
        status: got,
        head,
        body,
        reset,
    } = seen
    else {
        return false;
    };
    let problem: Value = serde_json::from_str(body).unwrap_or_default();
    *got == status
        && !reset
        && head.contains("content-type: application/problem+json")
        && head.contains("connection: close")
        && problem["type"] == format!("/problems/{slug}")
}

/// Runs `n` senders, `CONCURRENCY` at a time; returns what those that did not get the
/// `status` problem saw.
async fn senders(
    n: usize,
    host: &str,
    head: String,
    body: Vec<u8>,
    status: u16,
    slug: &'static str,
) -> Vec<Seen> {
    let (head, body) = (Arc::new(head), Arc::new(body));
    let mut failed = Vec::new();
    for round in 0..n.div_ceil(CONCURRENCY) {
        let tasks: Vec<_> = (0..CONCURRENCY.min(n - round * CONCURRENCY))
            .map(|_| {
                let (host, head, body) = (host.to_owned(), head.clone(), body.clone());
                tokio::spawn(async move { send_all_then_read(&host, &head, &body).await })
            })
            .collect();
        for task in tasks {
            let seen = task.await.unwrap();
            if !is_problem(&seen, status, slug) {
                failed.push(seen);
            }
        }
    }
    failed
}

fn ingest_head(app: &TestApp, s: &Setup, key: &str, framing: &str) -> String {
    let path = &s.url[app.address.len()..];
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nx-authorization: {key}\r\ncontent-type: application/json\r\n{framing}\r\n"
    )
}

/// A valid body for a caller, padded with spaces to `len` bytes.
fn padded_body(s: &Setup, len: usize) -> Vec<u8> {
    let mut body = json!({"agentId": s.agent_id, "phoneNumber": "+12125550100"})
        .to_string()
        .into_bytes();
    body.resize(len, b' ');
    body
}

#[tokio::test]
async fn senders_that_send_a_whole_oversized_body_before_reading_get_the_413_problem() {
    let app = spawn_app().await;
    let s = app.setup(0);
    let host = host_port(&app);
    const N: usize = 50;
    let body = padded_body(&s, 3 * LIMIT);

    let mut report = Vec::new();
    let mut wrong = 0;
    let mut run = |what: &str, failed: Vec<Seen>| {
        let unanswered = failed.iter().filter(|f| matches!(f, Seen::Lost(_))).count();
        let resets = failed.iter().filter(|f| f.is_lost()).count() - unanswered;
        report.push(format!(
            "{what}: {} of {N} wrong ({unanswered} without an answer, {resets} reset after it)",
            failed.len()
        ));
        for seen in [Seen::is_lost, |s: &Seen| !s.is_lost()] {
            if let Some(first) = failed.iter().find(|s| seen(s)) {
                report.push(format!("  {first}"));
            }
        }
        wrong += failed.len();
    };
    // Refused on its announced length, before any of it is read.
    let head = ingest_head(
        &app,
        &s,
        &s.key,
        &format!("content-length: {}\r\n", body.len()),
    );
    run(
        "ingest, announced length",
        senders(N, &host, head, body.clone(), 413, "payload-too-large").await,
    );
    // Refused once the limit is passed, the rest still on its way.
    let head = ingest_head(&app, &s, &s.key, "transfer-encoding: chunked\r\n");
    run(
        "ingest, chunked",
        senders(
            N,
            &host,
            head,
            chunked(&body, 1024),
            413,
            "payload-too-large",
        )
        .await,
    );
    // Refused on its key, the body not read at all.
    let head = ingest_head(
        &app,
        &s,
        "pcwk_wrongwrongwrongwrongwrongwrongwrongwrong1",
        &format!("content-length: {}\r\n", body.len()),
    );
    run(
        "ingest, wrong key",
        senders(N, &host, head, body.clone(), 401, "unauthorized").await,
    );
    // The call API.
    let head = format!(
        "POST /api/v1/calls HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        s.token
    );
    run(
        "call API, chunked",
        senders(
            N,
            &host,
            head,
            chunked(&body, 1024),
            413,
            "payload-too-large",
        )
        .await,
    );
    // The management API, a document sent without a token.
    let head = format!(
        "PUT /api/v1/agents/{}/draft HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        s.agent_id,
        body.len()
    );
    run(
        "management API, no token",
        senders(N, &host, head, body.clone(), 401, "unauthorized").await,
    );
    assert_eq!(wrong, 0, "\n{}", report.join("\n"));
}

#[tokio::test]
async fn a_pooled_client_gets_every_413_and_its_next_request_goes_through() {
    let app = spawn_app().await;
    let s = app.setup(0);
    const ROUNDS: usize = 100;
    let oversized = |client: &reqwest::Client| {
        client
            .post(&s.url)
            .header("X-Authorization", &s.key)
            .header("Content-Type", "application/json")
            .body(reqwest::Body::wrap_stream(stream::iter(
                (0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])),
            )))
    };
    let truncated = |client: &reqwest::Client| {
        client
            .post(&s.url)
            .header("X-Authorization", &s.key)
            .header("Content-Type", "application/json")
            .body(r#"{"agentId": "#)
    };
    // One sender after the other on the test's client, then several at once on one pool.
    let mut failures = Vec::new();
    let mut check = |what: &str, res: reqwest::Result<reqwest::Response>, status: u16| match res {
        Ok(res) if res.status() == status => {}
        Ok(res) => failures.push(format!("{what}: {}", res.status())),
        Err(e) => failures.push(format!("{what}: {}", error_chain(&e.without_url()))),
    };
    for _ in 0..ROUNDS {
        check("413", oversized(&app.client).send().await, 413);
        check("400 after", truncated(&app.client).send().await, 400);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for _ in 0..ROUNDS / CONCURRENCY {
        let sends: Vec<_> = (0..CONCURRENCY)
            .map(|i| {
                if i % 2 == 0 {
                    (413, oversized(&client).send())
                } else {
                    (400, truncated(&client).send())
                }
            })
            .collect();
        let (statuses, sends): (Vec<_>, Vec<_>) = sends.into_iter().unzip();
        for (status, res) in statuses
            .into_iter()
            .zip(futures::future::join_all(sends).await)
        {
            check("at once", res, status);
        }
    }
    let mut kinds = std::collections::BTreeMap::new();
    for failure in &failures {
        *kinds.entry(failure.as_str()).or_insert(0) += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {kinds:#?}",
        failures.len(),
        2 * ROUNDS + ROUNDS / CONCURRENCY * CONCURRENCY,
    );
    // Every refusal is on record, none cached anything.
    let deliveries = app.deliveries(&s.agent_id);
    assert!(deliveries.iter().all(|d| d["outcome"] == "refused"));
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[tokio::test]
async fn a_sender_whose_body_stalls_past_the_timeout_gets_its_408_though_it_sends_the_rest() {
    const BODY_TIMEOUT: Duration = Duration::from_secs(1);
    let app = spawn_app_with(|s| s.body_timeout = BODY_TIMEOUT).await;
    let s = app.setup(0);
    let host = host_port(&app);
    let body = padded_body(&s, LIMIT / 2);
    let head = ingest_head(
        &app,
        &s,
        &s.key,
        &format!("content-length: {}\r\n", body.len()),
    );
    let tasks: Vec<_> = (0..CONCURRENCY * 2)
        .map(|_| {
            let (host, head, body) = (host.clone(), head.clone(), body.clone());
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(&host).await.unwrap();
                stream.write_all(head.as_bytes()).await.unwrap();
                stream.write_all(&body[..100]).await.unwrap();
                // The sender stalls past the body timeout, then sends the rest before it
                // reads.
                tokio::time::sleep(BODY_TIMEOUT * 2).await;
                let reset = stream.write_all(&body[100..]).await.is_err();
                tokio::time::timeout(Duration::from_secs(30), read_answer(&mut stream, reset))
                    .await
                    .unwrap_or_else(|_| Seen::Lost("no answer within 30 s".into()))
            })
        })
        .collect();
    let mut failed = Vec::new();
    for task in tasks {
        let seen = task.await.unwrap();
        if !is_problem(&seen, 408, "request-timeout") {
            failed.push(seen);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} lost; first: {}",
        failed.len(),
        CONCURRENCY * 2,
        failed[0]
    );
}

#[tokio::test]
async fn a_sender_that_never_stops_sending_after_its_refusal_is_cut_off() {
    // A body timeout longer than the test: only the bounds on reading after an answer cut
    // these senders off.
    let app = spawn_app_with(|s| s.body_timeout = Duration::from_secs(120)).await;
    let s = app.setup(0);
    let host = host_port(&app);
    let head = ingest_head(&app, &s, &s.key, "transfer-encoding: chunked\r\n");

    // Floods a body without end: the server reads a bounded amount past its refusal.
    let mut flood = TcpStream::connect(&host).await.unwrap();
    flood.write_all(head.as_bytes()).await.unwrap();
    let chunk = chunked(&[b' '; 16 * 1024], 16 * 1024);
    let chunk = &chunk[..chunk.len() - 5];
    let mut sent = 0usize;
    let cut_off = tokio::time::timeout(Duration::from_secs(30), async {
        while flood.write_all(chunk).await.is_ok() {
            sent += chunk.len();
        }
    })
    .await;
    assert!(cut_off.is_ok(), "still read after 30 s ({sent} bytes)");
    // What the server read, plus what the two sockets' buffers held.
    assert!(sent < 64 << 20, "{sent} bytes taken");

    // Trickles a body without end: cut off by time.
    let mut trickle = TcpStream::connect(&host).await.unwrap();
    trickle.write_all(head.as_bytes()).await.unwrap();
    trickle
        .write_all(&chunked(&vec![b' '; 2 * LIMIT], 2 * LIMIT)[..2 * LIMIT + 10])
        .await
        .unwrap();
    let started = Instant::now();
    let cut_off = tokio::time::timeout(Duration::from_secs(30), async {
        while trickle.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        cut_off.is_ok(),
        "a trickle after its 413 still read after {:?}",
        started.elapsed()
    );
}
