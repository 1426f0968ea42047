//! Hostile connections: idle and half-sent HTTP/2 connections are closed, the number of
//! connections is capped (the rest wait their turn, idle ones make room), oversized headers
//! are refused, and a flood of them leaves no memory behind.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, assert_problem, spawn_app_with};
use crate::slow_clients::{Ending, read_answer};

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
/// A cut-off may come this much later than its timeout on a loaded machine.
const SLACK: Duration = Duration::from_secs(8);

async fn spawn_timed_app() -> TestApp {
    spawn_app_with(|s| {
        s.header_timeout = HEADER_TIMEOUT;
        s.body_timeout = BODY_TIMEOUT;
    })
    .await
}

fn host_port(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// An HPACK integer with a 7-bit prefix (the length of a plain, not Huffman-coded, string).
fn hpack_length(mut n: usize, out: &mut Vec<u8>) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A header block of literal fields (without indexing, plain strings).
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        hpack_length(name.len(), &mut out);
        out.extend(name.as_bytes());
        hpack_length(value.len(), &mut out);
        out.extend(value.as_bytes());
    }
    out
}

fn get_block(path: &str) -> Vec<u8> {
    header_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
    ])
}

/// An HTTP/2 client (prior knowledge) driven frame by frame, so that it can stop in the
/// middle of one, and that answers nothing but the server's SETTINGS (not even a PING).
struct RawH2 {
    stream: TcpStream,
}

impl RawH2 {
    async fn connect(app: &TestApp) -> Self {
        Self::connect_with(app, &[]).await
    }

    /// Connects with these SETTINGS (identifier, value).
    async fn connect_with(app: &TestApp, settings: &[(u16, u32)]) -> Self {
        let mut stream = TcpStream::connect(host_port(app)).await.unwrap();
        let payload: Vec<u8> = settings
            .iter()
            .flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()[..]].concat())
            .collect();
        stream.write_all(PREFACE).await.unwrap();
        stream
            .write_all(&frame(SETTINGS, 0, 0, &payload))
            .await
            .unwrap();
        Self { stream }
    }

    /// Sends `GET path` on stream `id`, and reads nothing.
    async fn send_get(&mut self, id: u32, path: &str) {
        self.send(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            id,
            &get_block(path),
        ))
        .await;
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends `GET path` on stream `id` and reads frames until its answer ends.
    async fn get(&mut self, id: u32, path: &str) {
        self.send_get(id, path).await;
        loop {
            let (kind, flags, stream) = self
                .next_frame()
                .await
                .expect("the connection stays open until the answer");
            if stream == id && (flags & END_STREAM != 0 || kind == RST_STREAM) {
                return;
            }
        }
    }

    /// Reads frames until the server closes the connection; whether it sent GOAWAY first.
    async fn closed(mut self) -> bool {
        let mut goaway = false;
        while let Some((kind, _, _)) = self.next_frame().await {
            goaway |= kind == GOAWAY;
        }
        goaway
    }

    /// The next frame's type, flags and stream; `None` once the connection is closed.
    async fn next_frame(&mut self) -> Option<(u8, u8, u32)> {
        let mut head = [0u8; 9];
        self.stream.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if kind == SETTINGS && flags & ACK == 0 {
            // A closing server may have stopped reading: an error here is its close.
            let _ = self.stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
        }
        Some((kind, flags, stream))
    }
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout_http2_ones_with_a_goaway() {
    let app = spawn_timed_app().await;
    let mut h2 = RawH2::connect(&app).await;
    h2.get(1, "/healthz").await;
    let mut h1 = TcpStream::connect(host_port(&app)).await.unwrap();
    h1.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(matches!(read_answer(&mut h1).await, Ending::Answer(200, _)));
    let answered = Instant::now();

    let goaway = tokio::time::timeout(HEADER_TIMEOUT + SLACK, h2.closed())
        .await
        .expect("the idle HTTP/2 connection is closed");
    assert!(goaway, "the server said GOAWAY before closing");
    assert!(
        closes_within(&mut h1, HEADER_TIMEOUT + SLACK).await,
        "the kept-alive HTTP/1.1 connection is closed"
    );
    assert!(
        answered.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(100),
        "closed {:?} after their answers",
        answered.elapsed()
    );
}

#[tokio::test]
async fn half_sent_http2_headers_are_cut_off_at_the_header_timeout() {
    let app = spawn_timed_app().await;
    let block = get_block("/healthz");

    // A HEADERS frame that announces more bytes than it sends.
    let mut truncated = RawH2::connect(&app).await;
    truncated.get(1, "/healthz").await;
    let whole = frame(HEADERS, END_STREAM | END_HEADERS, 3, &block);
    truncated.send(&whole[..whole.len() - 5]).await;

    // A header block that is never ended (no CONTINUATION follows).
    let mut unended = RawH2::connect(&app).await;
    unended.get(1, "/healthz").await;
    unended
        .send(&frame(HEADERS, END_STREAM, 3, &block[..block.len() / 2]))
        .await;

    let started = Instant::now();
    for (what, h2) in [("truncated frame", truncated), ("unended block", unended)] {
        tokio::time::timeout(HEADER_TIMEOUT + SLACK, h2.closed())
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection is cut off"));
    }
    assert!(started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(100));
}

#[tokio::test]
async fn an_http2_client_that_never_lets_its_answer_through_is_cut_off() {
    let app = spawn_timed_app().await;
    // SETTINGS_INITIAL_WINDOW_SIZE 0: no byte of any answer's body may be sent.
    let mut h2 = RawH2::connect_with(&app, &[(0x4, 0)]).await;
    h2.send_get(1, "/healthz").await;
    tokio::time::timeout(HEADER_TIMEOUT + BODY_TIMEOUT + SLACK, h2.closed())
        .await
        .expect("the connection is cut off");
}

/// Whether the server closes `read` (end of stream or reset) within `within`.
async fn closes_within(read: &mut (impl AsyncReadExt + Unpin), within: Duration) -> bool {
    let mut sink = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match read.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn assert_408(ending: &Ending, what: &str) {
    match ending {
        Ending::Answer(408, body) => {
            let problem: Value = serde_json::from_str(body).expect("408 body is JSON");
            assert_eq!(problem["type"], "/problems/request-timeout", "{what}");
        }
        other => panic!("{what}: expected a 408 problem, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_answered_408_is_closed() {
    let app = spawn_timed_app().await;
    let setup = app.setup(0);
    let host = host_port(&app);
    let path = setup.url.trim_start_matches(&app.address).to_owned();

    // HTTP/1.1, headers cut off.
    let mut headers = TcpStream::connect(&host).await.unwrap();
    headers
        .write_all(b"POST /webhooks/x HTTP/1.1\r\nhost: slow\r\n")
        .await
        .unwrap();
    // HTTP/1.1, body cut off.
    let mut body = TcpStream::connect(&host).await.unwrap();
    body.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\nx-authorization: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"agentId\":",
            setup.key
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    for (what, stream) in [("headers", &mut headers), ("body", &mut body)] {
        let ending = tokio::time::timeout(HEADER_TIMEOUT + SLACK, read_answer(stream))
            .await
            .expect("answered");
        assert_408(&ending, what);
        assert!(
            closes_within(stream, SLACK).await,
            "HTTP/1.1 {what}: the connection stays open after its 408"
        );
    }

    // HTTP/2, body cut off: the stream gets 408, then the connection, idle, is closed.
    let stream = TcpStream::connect(&host).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    tx.send(Ok(Frame::data(Bytes::from_static(b"{\"agentId\":"))))
        .await
        .unwrap();
    let mut rx = rx;
    let res = sender
        .send_request(
            hyper::Request::post(&setup.url)
                .header("x-authorization", &setup.key)
                .header("content-type", "application/json")
                .body(StreamBody::new(futures::stream::poll_fn(move |cx| {
                    rx.poll_recv(cx)
                })))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 408);
    drop(tx);
    let answered = Instant::now();
    tokio::time::timeout(HEADER_TIMEOUT + SLACK, conn)
        .await
        .expect("HTTP/2: the connection is closed once idle after its 408")
        .unwrap()
        .ok();
    assert!(answered.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(100));
    drop(sender);
}

fn call_request(host: &str, token: &str, agent_id: &str, from: &str) -> Vec<u8> {
    let body = json!({"agentId": agent_id, "from": from}).to_string();
    format!(
        "POST /api/v1/calls HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_their_turn_and_busy_ones_are_not_cut() {
    let app = spawn_app_with(|s| {
        s.max_connections = Some(4);
        s.header_timeout = Duration::from_secs(30);
    })
    .await;
    let setup = app.setup(3000);
    let host = host_port(&app);

    // Four connections, each with a call waiting 3 s for its webhook data.
    let mut calls = Vec::new();
    for i in 0..4 {
        let mut stream = TcpStream::connect(&host).await.unwrap();
        stream
            .write_all(&call_request(
                &host,
                &setup.token,
                &setup.agent_id,
                &format!("+1212555010{i}"),
            ))
            .await
            .unwrap();
        calls.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A fifth waits in the listen queue while the four are busy.
    let mut fifth = TcpStream::connect(&host).await.unwrap();
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_secs(1), read_answer(&mut fifth)).await;
    assert!(
        early.is_err(),
        "a fifth connection was served beyond the cap of 4: {early:?}"
    );

    // The calls are answered in full; their connections, now idle, make room.
    for mut stream in calls {
        match tokio::time::timeout(SLACK, read_answer(&mut stream))
            .await
            .expect("the waiting call is answered")
        {
            Ending::Answer(201, body) => {
                let call: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(call["source"], "fallback");
            }
            other => panic!("a waiting call was cut: {other:?}"),
        }
    }
    match tokio::time::timeout(SLACK, read_answer(&mut fifth))
        .await
        .expect("the fifth connection is served once the calls are answered")
    {
        Ending::Answer(200, _) => {}
        other => panic!("healthz: {other:?}"),
    }
}

#[tokio::test]
async fn idle_http2_connections_make_room_when_the_cap_is_reached() {
    let app = spawn_app_with(|s| {
        s.max_connections = Some(4);
        s.header_timeout = Duration::from_secs(30);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut h2 = RawH2::connect(&app).await;
        h2.get(1, "/healthz").await;
        idle.push(tokio::spawn(h2.closed()));
    }

    let res = app
        .client
        .get(format!("{}/healthz", app.address))
        .timeout(SLACK)
        .send()
        .await
        .expect("healthz is answered while idle connections fill the cap");
    assert_eq!(res.status(), 200);

    let deadline = tokio::time::Instant::now() + SLACK;
    let mut closed = 0;
    for h2 in idle {
        if let Ok(goaway) = tokio::time::timeout_at(deadline, h2).await {
            assert!(goaway.unwrap(), "an idle connection closed without GOAWAY");
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection was closed to make room");
}

#[tokio::test]
async fn a_100_kb_header_gets_431_over_http1_and_is_refused_over_http2() {
    let app = spawn_timed_app().await;
    let big = "a".repeat(100 * 1024);

    let res = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-big", &big)
        .send()
        .await
        .expect("an answer, not a reset");
    let problem = assert_problem(res, 431, "headers-too-large").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("16 KiB"),
        "{problem}"
    );
    // Headers under the limit are served.
    let res = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-fair", "a".repeat(12 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let stream = TcpStream::connect(host_port(&app)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let request = |name: &str, size: usize| {
        hyper::Request::get(format!("{}/healthz", app.address))
            .header(name, "a".repeat(size))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // Over the limit by a little: the stream gets a bare 431 (HTTP/2 sends no body with it).
    let res = sender
        .send_request(request("x-over", 20 * 1024))
        .await
        .expect("a 431 answer");
    assert_eq!(res.status(), 431);
    // Far over it: the stream or the connection is refused.
    if let Ok(res) = sender.send_request(request("x-big", 100 * 1024)).await {
        assert_eq!(res.status(), 431);
    }
    let res = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// `VmRSS` or `VmHWM` of process `pid`, in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

#[tokio::test]
async fn a_flood_of_oversized_headers_uses_bounded_memory_and_gives_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (child, address) = crate::process::start_server(dir.path()).await;
    let pid = child.id().unwrap();
    let host = address.trim_start_matches("http://").to_owned();
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{address}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let before = memory_kib(pid, "VmRSS:");

    // 300 connections each send 390 KiB of headers that never end (117 MB in all).
    const CONNECTIONS: usize = 300;
    let chunk = Bytes::from(vec![b'a'; 390 * 1024]);
    let floods: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (host, chunk) = (host.clone(), chunk.clone());
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(&host).await.unwrap();
                let _ = stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
                    .await;
                let _ = stream.write_all(&chunk).await;
                // Hold the connection until the server lets go of it.
                closes_within(&mut stream, Duration::from_secs(30)).await
            })
        })
        .collect();
    for flood in futures::future::join_all(floods).await {
        assert!(flood.unwrap(), "an oversized request was not let go");
    }
    let peak = memory_kib(pid, "VmHWM:");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        client
            .get(format!("{address}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let after = memory_kib(pid, "VmRSS:");
    println!("RSS before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert!(
        peak.saturating_sub(before) < 48 * 1024,
        "the flood took the server from {before} KiB to a peak of {peak} KiB"
    );
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "after the flood the server still holds {after} KiB (from {before} KiB)"
    );
    drop(child);
}

#[test]
fn the_connection_limits_are_flags_with_environment_twins() {
    let out = std::process::Command::new(crate::helpers::BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for name in [
        "--max-connections",
        "PRECALL_MAX_CONNECTIONS",
        "--max-header-bytes",
        "PRECALL_MAX_HEADER_BYTES",
    ] {
        assert!(help.contains(name), "{name} missing from --help");
    }
    // hyper cannot read headers with less than 8 KiB.
    let out = std::process::Command::new(crate::helpers::BIN)
        .args(["--max-header-bytes", "4096", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--max-header-bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
