//! Publishing a large agent through the management API while calls start on it: how long a
//! publish takes, and whether every call ran one version completely.
//!
//! Each version says a mark (`mark-N;`) in every block; a call's answer carries the version it
//! runs and the ~50 things it said, so a call that mixed two versions shows two marks, or a
//! mark that is not its version's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

use crate::client::Conn;

/// The published agent: 20 flows of 50 blocks.
pub const FLOWS: usize = 20;
pub const BLOCKS: usize = 50;
/// Publishes measured.
const PUBLISHES: u64 = 40;
/// Connections starting calls during the publishes.
const CALLERS: usize = 2;

/// What the scenario measured.
pub struct Published {
    /// Each publish's latency (request sent → 201 read).
    pub publish: Vec<Duration>,
    /// Bytes of the document.
    pub document_bytes: usize,
    pub calls: u64,
    /// Calls whose answer mixed versions, or whose marks were not their version's.
    pub mixed: u64,
    /// Versions the calls ran.
    pub versions_seen: usize,
    /// Call starts refused or failed.
    pub call_errors: u64,
}

/// The agent's document, every block saying `mark-{mark};`. Each flow runs a start block,
/// 47 Talk blocks and a question, then passes the caller to the next flow; the last ends the
/// call. A call's first turn thus says 49 things from the First Flow.
pub fn document(mark: u64) -> Value {
    let key = |b: usize| format!("b{b:02}");
    let flow_key = |f: usize| format!("f{f:02}");
    let at = |b: usize| json!({"x": 0, "y": b * 120});
    let flows: Vec<Value> = (0..FLOWS)
        .map(|f| {
            let mut blocks = vec![json!({
                "key": key(0),
                "kind": if f == 0 { "greeting" } else { "start" },
                "message": format!("mark-{mark}; flow {f} starts"),
                "next": key(1),
                "position": at(0),
            })];
            for b in 1..BLOCKS - 2 {
                blocks.push(json!({
                    "key": key(b), "kind": "talk",
                    "message": format!("mark-{mark}; flow {f}, block {b}"),
                    "next": key(b + 1), "position": at(b),
                }));
            }
            blocks.push(json!({
                "key": key(BLOCKS - 2), "kind": "collect",
                "variable": format!("answer_{f}"),
                "prompt": format!("mark-{mark}; the question of flow {f}"),
                "next": key(BLOCKS - 1), "position": at(BLOCKS - 2),
            }));
            blocks.push(if f + 1 < FLOWS {
                json!({"key": key(BLOCKS - 1), "kind": "transfer_flow",
                       "flow": flow_key(f + 1), "position": at(BLOCKS - 1)})
            } else {
                json!({"key": key(BLOCKS - 1), "kind": "end_call",
                       "message": format!("mark-{mark}; goodbye"), "outcome": "completed",
                       "position": at(BLOCKS - 1)})
            });
            json!({"key": flow_key(f), "name": format!("Flow {f}"), "blocks": blocks})
        })
        .collect();
    let variables: Vec<Value> = (0..FLOWS)
        .map(|f| {
            json!({
                "name": format!("answer_{f}"), "type": "string", "default": null,
                "description": format!("The answer to flow {f}'s question"),
                "source": {"flow": flow_key(f), "block": key(BLOCKS - 2)},
            })
        })
        .collect();
    json!({
        "format": "precall-agent/1",
        "firstFlow": flow_key(0),
        "flows": flows,
        "precall": [],
        "variables": variables,
    })
}

fn request(method: &str, path: &str, token: &str, body: Option<String>) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    if method == "PUT" {
        b = b.header("if-match", "*");
    }
    b.body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("valid request")
}

async fn send(conn: &mut Conn, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Value)> {
    let res = conn.send_streaming(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

async fn expect(
    conn: &mut Conn,
    req: Request<Full<Bytes>>,
    want: StatusCode,
) -> anyhow::Result<Value> {
    let what = format!("{} {}", req.method(), req.uri());
    let (status, body) = send(conn, req).await?;
    anyhow::ensure!(status == want, "{what} answered {status}: {body}");
    Ok(body)
}

/// The marks a call's answer said, and the version it ran.
fn marks(answer: &[u8]) -> (Option<i64>, Vec<u64>) {
    let version = serde_json::from_slice::<Value>(answer)
        .ok()
        .and_then(|v| v["version"].as_i64());
    let text = String::from_utf8_lossy(answer);
    let marks = text
        .match_indices("mark-")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let digits = rest.split(';').next()?;
            digits.parse().ok()
        })
        .collect();
    (version, marks)
}

/// Makes an agent through the API with `token` (an admin API token), publishes the large
/// document `PUBLISHES` times with a new mark each time, and starts calls on the agent all
/// along.
pub async fn run(addr: SocketAddr, token: &str) -> anyhow::Result<Published> {
    let mut conn = Conn::open(addr).await?;
    let made = expect(
        &mut conn,
        request(
            "POST",
            "/api/v1/agents",
            token,
            Some(json!({"name": "Publish benchmark"}).to_string()),
        ),
        StatusCode::CREATED,
    )
    .await?;
    let agent = made["agentId"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no agentId in {made}"))?
        .to_owned();
    let runtime = expect(
        &mut conn,
        request(
            "POST",
            &format!("/api/v1/agents/{agent}/runtime-tokens"),
            token,
            Some(json!({"name": "bench"}).to_string()),
        ),
        StatusCode::CREATED,
    )
    .await?["token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no runtime token"))?
        .to_owned();

    // Which mark each version says.
    let mut mark_of: HashMap<i64, u64> = HashMap::new();
    let mut document_bytes = 0;
    let mut publish_once = async |conn: &mut Conn, mark: u64| -> anyhow::Result<(i64, Duration)> {
        let doc = document(mark).to_string();
        document_bytes = doc.len();
        expect(
            conn,
            request(
                "PUT",
                &format!("/api/v1/agents/{agent}/draft"),
                token,
                Some(doc),
            ),
            StatusCode::OK,
        )
        .await?;
        let started = Instant::now();
        let published = expect(
            conn,
            request(
                "POST",
                &format!("/api/v1/agents/{agent}/publish"),
                token,
                Some(json!({"message": format!("mark {mark}")}).to_string()),
            ),
            StatusCode::CREATED,
        )
        .await?;
        let took = started.elapsed();
        let version = published["version"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("no version in {published}"))?;
        Ok((version, took))
    };
    // The first publish of the large document, before any call.
    let (v, _) = publish_once(&mut conn, 0).await?;
    mark_of.insert(v, 0);

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (stop, agent, runtime) = (stop.clone(), agent.clone(), runtime.clone());
            tokio::spawn(async move {
                let mut answers: Vec<Bytes> = Vec::new();
                let mut errors = 0u64;
                let Ok(mut conn) = Conn::open(addr).await else {
                    return (answers, 1);
                };
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let from = format!("+1646555{:04}", (c as u64 * 5000 + i) % 10_000);
                    let body = json!({"agentId": agent, "from": from, "to": "+12125550199"});
                    let req = crate::client::post(
                        "/api/v1/calls",
                        Some(("authorization", &format!("Bearer {runtime}"))),
                        body.to_string(),
                    );
                    match conn.send(req).await {
                        Ok((StatusCode::CREATED, b)) => answers.push(b),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            match Conn::open(addr).await {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                        }
                    }
                }
                (answers, errors)
            })
        })
        .collect();

    let mut publish = Vec::new();
    for mark in 1..=PUBLISHES {
        let (v, took) = publish_once(&mut conn, mark).await?;
        mark_of.insert(v, mark);
        publish.push(took);
        // Calls between publishes, so that some run each version.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);

    let (mut calls, mut mixed, mut call_errors) = (0, 0, 0);
    let mut seen = std::collections::HashSet::new();
    for caller in callers {
        let (answers, errors) = caller.await?;
        call_errors += errors;
        for a in answers {
            calls += 1;
            let (version, said) = marks(&a);
            let whole = version
                .and_then(|v| mark_of.get(&v))
                .is_some_and(|m| said.len() >= BLOCKS - 1 && said.iter().all(|s| s == m));
            if whole {
                seen.insert(version);
            } else {
                mixed += 1;
            }
        }
    }
    Ok(Published {
        publish,
        document_bytes,
        calls,
        mixed,
        versions_seen: seen.len(),
        call_errors,
    })
}
