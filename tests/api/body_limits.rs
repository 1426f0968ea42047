//! The body limit: 413 and never truncation, however the length is (or is not) announced.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{Setup, TestApp, spawn_app_with};
use crate::slow_clients::{Ending, read_answer};

const VICTIM: &str = "+12125550100";
const LIMIT: usize = 64 * 1024;

/// A server whose body timeout is far longer than any answer below should take.
async fn spawn() -> TestApp {
    spawn_app_with(|s| s.body_timeout = Duration::from_secs(60)).await
}

/// Sends `head` then `body` on a fresh connection and reads the first answer.
async fn exchange(app: &TestApp, head: String, body: &[u8]) -> Ending {
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and stop reading) before the body is all sent.
    let _ = stream.write_all(body).await;
    tokio::time::timeout(Duration::from_secs(20), read_answer(&mut stream))
        .await
        .expect("answered long before the body timeout")
}

fn head(app: &TestApp, s: &Setup, framing: &str) -> String {
    let path = &s.url[app.address.len()..];
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nx-authorization: {}\r\ncontent-type: application/json\r\n{framing}\r\n",
        s.key
    )
}

/// A valid body for the victim, padded with spaces to exactly `len` bytes.
fn body_of_len(s: &Setup, len: usize) -> Vec<u8> {
    let mut body = json!({"agentId": s.agent_id, "phoneNumber": VICTIM, "priority": "high"})
        .to_string()
        .into_bytes();
    body.resize(len, b' ');
    body
}

fn status(ending: &Ending) -> u16 {
    match ending {
        Ending::Answer(status, _) => *status,
        Ending::Closed => panic!("closed without an answer"),
    }
}

async fn nothing_cached(app: &TestApp, s: &Setup) {
    let call = app.start_call_json(s, VICTIM).await;
    assert_eq!(call["source"], "fallback", "something was cached");
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_taken_and_one_byte_more_is_refused_with_413() {
    let app = spawn().await;
    let s = app.setup(0);
    let over = body_of_len(&s, LIMIT + 1);
    let res = exchange(
        &app,
        head(&app, &s, &format!("content-length: {}\r\n", over.len())),
        &over,
    )
    .await;
    assert_eq!(status(&res), 413);
    let res = exchange(
        &app,
        head(&app, &s, "transfer-encoding: chunked\r\n"),
        &chunked(&over, 1000),
    )
    .await;
    assert_eq!(status(&res), 413, "chunked, without a length");
    nothing_cached(&app, &s).await;

    let exact = body_of_len(&s, LIMIT);
    let res = exchange(
        &app,
        head(&app, &s, &format!("content-length: {LIMIT}\r\n")),
        &exact,
    )
    .await;
    assert_eq!(status(&res), 202);
    let res = exchange(
        &app,
        head(&app, &s, "transfer-encoding: chunked\r\n"),
        &chunked(&exact, 1000),
    )
    .await;
    assert_eq!(status(&res), 202, "chunked, without a length");
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

#[tokio::test]
async fn a_content_length_over_the_limit_is_refused_before_the_body_is_sent() {
    let app = spawn().await;
    let s = app.setup(0);
    // Announces 10 MB and sends nothing: answered at once, not after the body timeout.
    let res = exchange(&app, head(&app, &s, "content-length: 10000000\r\n"), b"").await;
    assert_eq!(status(&res), 413);
    let deliveries = app.deliveries(&s.agent_id);
    assert_eq!(deliveries[0]["status"], 413);
}

#[tokio::test]
async fn a_single_chunk_claiming_more_than_the_limit_is_refused_with_413() {
    let app = spawn().await;
    let s = app.setup(0);
    let body = body_of_len(&s, 2 * LIMIT);
    let mut framed = format!("{:x}\r\n", body.len()).into_bytes();
    framed.extend_from_slice(&body);
    framed.extend_from_slice(b"\r\n0\r\n\r\n");
    let res = exchange(
        &app,
        head(&app, &s, "transfer-encoding: chunked\r\n"),
        &framed,
    )
    .await;
    assert_eq!(status(&res), 413);
    nothing_cached(&app, &s).await;
}

#[tokio::test]
async fn a_content_length_shorter_than_the_body_is_never_taken_as_a_truncated_body() {
    let app = spawn().await;
    let s = app.setup(0);
    // The announced 100 bytes are the start of a valid body: refused as JSON that stops
    // short, and the rest is not read as the same request.
    let body = json!({"agentId": s.agent_id, "phoneNumber": VICTIM, "notes": "x".repeat(LIMIT)})
        .to_string();
    let res = exchange(
        &app,
        head(&app, &s, "content-length: 100\r\n"),
        body.as_bytes(),
    )
    .await;
    match &res {
        Ending::Answer(400, problem) => {
            assert!(problem.contains("/problems/malformed-json"), "{problem}")
        }
        other => panic!("expected 400 malformed-json, got {other:?}"),
    }
    nothing_cached(&app, &s).await;
}

#[tokio::test]
async fn a_body_cut_short_by_the_client_closing_is_refused_and_changes_nothing() {
    let app = spawn().await;
    let s = app.setup(0);
    let body = body_of_len(&s, 300);
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(head(&app, &s, "content-length: 300\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(&body[..150]).await.unwrap();
    stream.shutdown().await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), read_answer(&mut stream))
        .await
        .expect("answered or closed at once");
    // The server may answer 400 or just close: either way nothing is taken.
    if let Ending::Answer(status, _) = &res {
        assert_eq!(*status, 400, "{res:?}");
    }
    nothing_cached(&app, &s).await;
}
