//! Voice platforms' connections under load: a Retell inbound-call webhook (signed with the
//! connection's API key, verified, the call started as `POST /api/v1/calls` starts it, answered
//! in Retell's format) whose caller's data is cached, and one that arrives before its webhook
//! and is woken by it. Retell stands for the JSON platforms: HMAC-SHA256 over the body, like
//! Synthflow's and Vapi's HMAC, and costlier than Vapi's plain secret.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::json;

use super::client::{Conn, Keep, Pace, Stats, drive, post};
use super::server::{Server, cli};
use super::stalls::StallProbe;
use super::{
    Agent, Make, OPEN_ATTEMPTS, OpenAttempts, Options, Row, account, best_of, contains,
    ingest_request, nearby_baseline, phone,
};

/// Callers of the connector scenarios, apart from every other scenario's (see `phone`: the
/// viewer's reach 72 million).
const CACHED: u64 = 72_000_000;
const WOKEN: u64 = 79_000_000;
/// The API key the benchmark's Retell connection verifies with.
const RETELL_KEY: &str = "key_benchmark_retell_0123456789";

/// A Retell connection for `agent`: the path of its URL.
fn connection(dir: &std::path::Path, url: &str, agent: &Agent) -> String {
    let made = cli(
        dir,
        url,
        &[
            "connection",
            "create",
            "--agent",
            &agent.id,
            "--platform",
            "retell",
            "--secret",
            RETELL_KEY,
            "--default-agent",
            "agent_benchmark",
        ],
    );
    made["url"].as_str().expect("a connection URL")[url.len()..].to_owned()
}

/// Retell's `call_inbound` for caller `i`, signed as Retell signs it (the timestamp is the
/// moment the request is made, so that none is stale and no two are the same).
fn retell_request(path: &str) -> Make {
    let path = path.to_owned();
    Arc::new(move |i| {
        let body = format!(
            r#"{{"event":"call_inbound","call_inbound":{{"agent_id":"agent_benchmark","from_number":"{}","to_number":"+12125550199"}}}}"#,
            phone(i)
        );
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64;
        let sig = precall::connect::verify::retell_signature(RETELL_KEY, body.as_bytes(), ts);
        post(&path, Some(("x-retell-signature", &sig)), body)
    })
}

/// The connector rows: throughput with cached data (against the echo baseline measured
/// around it), p99 with cached data at half that throughput (open loop), and the woken
/// request's answer after its webhook's 202.
#[allow(clippy::too_many_arguments)]
pub async fn rows(
    o: &Options,
    probe: &StallProbe,
    baseline: &Server,
    precall: &Server,
    echo: &Make,
    agent: &Agent,
    dir: &std::path::Path,
    ingest_rps: f64,
    rows: &mut Vec<Row>,
    acked: &mut HashSet<u64>,
    sent: &mut u64,
    refused: &mut u64,
) -> anyhow::Result<()> {
    let path = connection(dir, &precall.url(), agent);
    let request = retell_request(&path);
    let open_conns = o.levels.iter().copied().max().unwrap_or(o.connections);

    // Every caller has its data cached before the clock starts: as many as the closed loops
    // and the open loop can use at ingest's rate.
    let per_level = ((ingest_rps * o.duration.as_secs_f64() * 1.5) as u64).max(o.preload_min);
    // The closed loops' callers, then those of each open-loop attempt.
    let preload_n = per_level * (o.levels.len() as u64 + OPEN_ATTEMPTS);
    let preload = drive(
        precall.addr,
        o.connections,
        Duration::from_secs(600),
        Some(preload_n),
        CACHED,
        Pace::Closed,
        StatusCode::ACCEPTED,
        Keep::Number,
        ingest_request(agent),
    )
    .await;
    account(&preload, acked, sent, refused);

    // 1. Throughput, closed loop, each level with callers of its own.
    let before = nearby_baseline(baseline, o, echo).await;
    let (cpu0, gen0) = (precall.cpu_time(), super::own_cpu());
    let used = std::sync::atomic::AtomicU64::new(0);
    let max = best_of(&o.levels, |conns, _| {
        let (used, request) = (&used, request.clone());
        async move {
            let first = used.load(std::sync::atomic::Ordering::Relaxed);
            let s = drive(
                precall.addr,
                conns,
                o.duration,
                Some(per_level * o.levels.len() as u64 - first),
                CACHED + first,
                Pace::Closed,
                StatusCode::OK,
                Keep::Nothing,
                request,
            )
            .await;
            used.fetch_add(
                s.ok + s.refused + s.errors,
                std::sync::atomic::Ordering::Relaxed,
            );
            s
        }
    })
    .await;
    let cpu_us = super::per_request_us(precall.cpu_time() - cpu0, max.all_ok);
    let gen_us = super::per_request_us(super::own_cpu() - gen0, max.all_ok);
    let after = nearby_baseline(baseline, o, echo).await;
    let near = (before + after) / 2.0;
    let r = max.rps() / near;
    let max_rps = max.rps();
    rows.push(Row {
        name: "connector (Retell), context cached (closed loop)".into(),
        ratio: Some(r),
        figure: format!("{r:.3} of baseline ({} conns)", max.connections),
        target: "≥ 0.25".into(),
        pass: Some(r >= 0.25 && max.errors == 0 && max.refused == 0),
        extra: json!({ "server_cpu_us_per_request": cpu_us, "generator_cpu_us_per_request": gen_us,
                       "nearby_baseline_rps": near, "baseline_rps_before": before,
                       "baseline_rps_after": after }),
        stats: Some(max),
    });

    // 2. p99 at half that throughput, open loop, on callers not used above. The machine
    // itself may stop for tens of milliseconds (see `stalls`): as for ingest's open loop, an
    // attempt during which it did is measured again, and every attempt is reported.
    let rate = o.open_rate.map_or((max_rps / 2.0).max(1.0), |r| r as f64);
    let attempts = OpenAttempts::run("connector", probe, precall, async |attempt| {
        drive(
            precall.addr,
            open_conns,
            o.duration,
            Some(per_level),
            CACHED + per_level * (o.levels.len() as u64 + attempt),
            Pace::Open { rate },
            StatusCode::OK,
            Keep::Nothing,
            request.clone(),
        )
        .await
    })
    .await;
    let open = &attempts.open;
    if let Some(path) = &o.open_trace {
        // Beside ingest's trace.
        open.write_trace(&path.with_extension("connect"))?;
    }
    // Each answer must carry the cached data: a sample read back after the loops.
    let (sampled, not_cached) = sample(precall, &request, CACHED + preload_n - 100, 100).await?;
    let p99 = open.ms(0.99);
    let mut extra = attempts.extra(rate);
    extra["sampled"] = json!(sampled);
    extra["sampled_not_from_webhook"] = json!(not_cached);
    let (earlier_errors, earlier_refused) = attempts.earlier_failures;
    let served =
        open.errors + open.refused + earlier_errors + earlier_refused == 0 && not_cached == 0;
    let (name, target, pass) = match o.open_rate {
        None => (
            format!("connector (Retell): p99 at {rate:.0} req/s, context cached (open loop)"),
            "p99 ≤ 5 ms".to_owned(),
            Some(p99 <= 5.0 && served),
        ),
        // Not half the maximum: not the target's load.
        Some(_) => (
            format!(
                "connector (Retell): p99 at {rate:.0} req/s, as asked, context cached (open loop)"
            ),
            String::new(),
            None,
        ),
    };
    rows.push(Row {
        name,
        ratio: Some(open.rps() / near),
        figure: attempts.figure(),
        target,
        pass,
        extra,
        stats: Some(attempts.open),
    });

    // 3. Woken: the request waits, its webhook lands; from the 202 to the answer.
    let (woken, not_woken, woken_acked) = woken(precall, agent, &request, 1_000, 10).await?;
    *sent += woken_acked.len() as u64;
    acked.extend(woken_acked);
    let p99 = woken.ms(0.99);
    rows.push(Row {
        name: "connector (Retell) woken: 202 → answer (1000)".into(),
        ratio: None,
        figure: format!("p99 {p99:.2} ms"),
        target: "p99 ≤ 5 ms".into(),
        pass: Some(p99 <= 5.0 && woken.errors == 0 && not_woken == 0),
        extra: json!({ "not_woken": not_woken }),
        stats: Some(woken),
    });
    Ok(())
}

/// Sends `n` connector requests one by one from caller `first` on (callers whose data was
/// cached and not used): how many were answered with the webhook's data.
async fn sample(server: &Server, request: &Make, first: u64, n: u64) -> anyhow::Result<(u64, u64)> {
    let mut conn = Conn::open(server.addr).await?;
    let mut not_cached = 0;
    for i in first..first + n {
        let (status, body) = conn.send(request(i)).await?;
        if status != StatusCode::OK || !contains(&body, br#""precall_source":"webhook""#) {
            not_cached += 1;
        }
    }
    Ok((n, not_cached))
}

/// `n` connector requests in `lanes` parallel lanes: each is sent, given 5 ms to park, then
/// its caller's webhook is sent; records the time from the webhook's 202 to the answer.
async fn woken(
    server: &Server,
    agent: &Agent,
    request: &Make,
    n: u64,
    lanes: u64,
) -> anyhow::Result<(Stats, u64, Vec<u64>)> {
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let (addr, ingest, ask) = (server.addr, ingest_request(agent), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::new();
            let mut not_woken = 0u64;
            let mut acked = Vec::new();
            let mut ask_conn = Conn::open(addr).await?;
            let mut hook_conn = Conn::open(addr).await?;
            for k in 0..n / lanes {
                let i = WOKEN + lane * (n / lanes) + k;
                let ask_fut = async {
                    let r = ask_conn.send(ask(i)).await;
                    (r, Instant::now())
                };
                let hook_fut = async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let r = hook_conn.send(ingest(i)).await;
                    (r, Instant::now())
                };
                let ((ask_res, answered), (hook_res, acked_at)) = tokio::join!(ask_fut, hook_fut);
                match (ask_res, hook_res) {
                    (Ok((StatusCode::OK, body)), Ok((StatusCode::ACCEPTED, _))) => {
                        acked.push(i);
                        stats.ok += 1;
                        stats.record(answered.saturating_duration_since(acked_at));
                        if !contains(&body, br#""precall_source":"webhook""#) {
                            not_woken += 1;
                        }
                    }
                    _ => stats.errors += 1,
                }
            }
            anyhow::Ok((stats, not_woken, acked))
        }));
    }
    let mut total = Stats::new();
    let mut not_woken = 0;
    let mut acked = Vec::new();
    for t in tasks {
        let (s, nw, ak) = t.await??;
        total.merge(s);
        not_woken += nw;
        acked.extend(ak);
    }
    Ok((total, not_woken, acked))
}
