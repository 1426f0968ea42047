//! Precall's load benchmark: `cargo bench --bench load`.
//!
//! Starts a bare axum echo server (the baseline: the most any handler can get on this
//! machine) and the real server on a fresh database, drives both with the same load
//! generator, and reports each scenario as a ratio to the baseline measured in the same
//! run. Prints a table and writes `bench-results/load-<time>.json`.
//!
//! Options (after `--`): `--duration <secs>` per throughput scenario (default 5),
//! `--connections <n,m,…>`: the concurrency levels at which each throughput is measured,
//! the best of them counting, for the baseline and the server alike (default 64,256);
//! `--parked <n>` (default 10000); `--only <scenario,…>`; `--open-trace <file>`: the open
//! loop's requests, one line each (due µs from its start, latency µs, generator's lateness µs);
//! `--open-rate <req/s>`: the open loops (ingest's and the connector's) at this rate instead
//! of half the measured maximum, to compare two builds at the same load (their rows then
//! have no target).
//!
//! `--engine postgres`: SQLite's single-server ingest and call-start rows (unless `--only`
//! says otherwise), then a cluster of two servers on one PostgreSQL: ingest and call start
//! over both (connections to each in turn; ratios to the same baseline), a call waiting on
//! one server woken by its webhook on the other (from the 202 to the answer), and
//! integrity (see `cluster`). The database is `PRECALL_BENCH_DATABASE_URL` (empty) if
//! given, else one the run starts from Debian's PostgreSQL.
//!
//! `--quick`: a smoke test of every scenario run end to end, its figures meaningless: 1 s
//! per scenario at 16 connections, fewer callers preloaded, 100 wake-ups, 500 parked calls
//! (`--duration`, `--connections`, `--parked` still apply).

mod client;
mod cluster;
mod connect;
mod publish;
mod server;
mod stalls;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{Value, json};

use client::{Conn, H2Conn, Keep, Pace, Stats, drive, drive_over, post, string_field};
use server::{Server, cli, process_cpu};
use stalls::StallProbe;

struct Options {
    duration: Duration,
    /// Closed-loop concurrency levels; each throughput is the best over them.
    levels: Vec<usize>,
    /// Connections of the open-loop and other scenarios.
    connections: usize,
    parked: usize,
    /// Park calls over HTTP/1.1 (a connection each) instead of HTTP/2.
    parked_http1: bool,
    /// Scenarios to run (`ingest`, `open`, `echo-open`, `viewer`, `calls`, `wake`, `fallback`,
    /// `parked`, `publish`, `connect`); all if empty.
    only: Vec<String>,
    /// Where to write the open loop's requests, one line each: when it was due (µs from
    /// the start), its latency and how late the generator sent it (µs).
    open_trace: Option<std::path::PathBuf>,
    /// Runs the open loop at this rate rather than at half the measured maximum, to compare
    /// two builds' latency at the same load (its row then says so and has no target).
    open_rate: Option<u64>,
    /// `postgres`: the cluster's rows (two servers on one PostgreSQL) after SQLite's ingest
    /// and call-start rows.
    engine: Engine,
    /// Callers whose data is cached before a call-start scenario, at least.
    preload_min: u64,
    /// Calls of the wake-up scenarios.
    wake_calls: u64,
    /// A smoke run (`--quick`): every scenario end to end, its figures meaningless.
    quick: bool,
}

/// The store the run measures besides SQLite's single server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

impl Options {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let text = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
        };
        // A smoke run: every scenario end to end, its figures meaningless.
        let quick = args.iter().any(|a| a == "--quick");
        let engine = match text("--engine").map(String::as_str) {
            None | Some("sqlite") => Engine::Sqlite,
            Some("postgres") => Engine::Postgres,
            Some(other) => {
                eprintln!("--engine is sqlite or postgres, not {other:?}");
                std::process::exit(2);
            }
        };
        let mut only: Vec<String> = text("--only")
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        if engine == Engine::Postgres && only.is_empty() {
            // SQLite's figures to set the cluster's beside.
            only = vec!["ingest".into(), "calls".into()];
        }
        Self {
            duration: Duration::from_secs(value("--duration").unwrap_or(if quick { 1 } else { 5 })),
            levels: text("--connections")
                .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
                .filter(|l: &Vec<usize>| !l.is_empty())
                .unwrap_or_else(|| if quick { vec![16] } else { vec![64, 256] }),
            connections: if quick { 16 } else { 64 },
            parked_http1: args.iter().any(|a| a == "--parked-http1"),
            parked: value("--parked").unwrap_or(if quick { 500 } else { 10_000 }) as usize,
            only,
            open_trace: args
                .iter()
                .position(|a| a == "--open-trace")
                .and_then(|i| args.get(i + 1))
                .map(Into::into),
            open_rate: value("--open-rate"),
            engine,
            preload_min: if quick { 1_000 } else { 20_000 },
            wake_calls: if quick { 100 } else { 1_000 },
            quick,
        }
    }

    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--baseline-server") {
        return server::run_baseline();
    }
    // Ten thousand parked calls are ten thousand sockets.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let options = Options::from_args();
    tokio::runtime::Runtime::new()?.block_on(run(options))
}

/// A distinct, valid US number for each index.
fn phone(i: u64) -> String {
    const AREAS: [u32; 10] = [212, 213, 312, 415, 617, 646, 718, 917, 305, 404];
    let area = AREAS[((i / 8_000_000) % 10) as usize];
    let exchange = 200 + (i / 10_000) % 800;
    format!("+1{area}{exchange}{:04}", i % 10_000)
}

/// Concurrent calls per HTTP/2 connection when parking.
const PARKED_STREAMS: usize = 100;

/// Index ranges, so that every scenario's callers are distinct (`phone` has 80 million),
/// even at `--duration 40` on a fast machine: each concurrency level of a throughput
/// scenario has [`LEVEL_SPAN`] indices.
const WARMUP: u64 = 0;
const INGEST: u64 = 8_000_000;
const OPEN_LOOP: u64 = 16_000_000;
const PRELOAD: u64 = 24_000_000;
const WAKE: u64 = 32_000_000;
const FALLBACK: u64 = 36_000_000;
const PARKED: u64 = 40_000_000;
const VIEWER: u64 = 48_000_000;
const LEVEL_SPAN: u64 = 4_000_000;
/// Each attempt of the ingest open loop has its own callers: 2.5 million, enough for
/// 62 500 requests a second at `--duration 40`.
const OPEN_ATTEMPT_SPAN: u64 = 2_500_000;
/// Attempts of the ingest open loop at most (see `stalls`).
const OPEN_ATTEMPTS: u64 = 3;
/// A stall of the machine this long, during an open loop, is as long as the latency target:
/// on its own it can put requests past 10 ms, whatever the server.
const DISTURBING: Duration = Duration::from_millis(10);
/// Segments with and without the Test viewer, each, alternating.
const VIEWER_ROUNDS: u64 = 3;

struct Agent {
    id: String,
    path: String,
    key: String,
    token: String,
}

/// The fraud-detection agent of `precall demo`: its calls run a pre-call Filter on the
/// webhook's `risk_score` and `flagged`, then its flows, so that call start is measured with
/// the flow interpreter in the path.
fn make_agent(dir: &Path, url: &str, wait_ms: u64) -> Agent {
    let demo = cli(dir, url, &["demo", "--wait-ms", &wait_ms.to_string()]);
    agent_of_demo(&demo, url)
}

/// The fraud-detection agent in `precall demo`'s output, whose server is at `url`.
fn agent_of_demo(demo: &Value, url: &str) -> Agent {
    let fraud = demo["examples"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|e| e["file"] == "examples/fraud-detection.json")
        })
        .expect("`precall demo` makes the fraud-detection agent")
        .clone();
    let text = |k: &str| fraud[k].as_str().unwrap().to_owned();
    Agent {
        path: text("url")[url.len()..].to_owned(),
        key: text("apiKey"),
        token: text("runtimeToken"),
        id: text("agentId"),
    }
}

fn ingest_body(agent: &str, i: u64) -> String {
    format!(
        r#"{{"agentId":"{agent}","phoneNumber":"{}","customer_name":"Jane Doe","priority":"high","issue_type":"billing","risk_score":92,"flagged":true,"marker":{i}}}"#,
        phone(i)
    )
}

fn call_body(agent: &str, i: u64) -> String {
    format!(
        r#"{{"agentId":"{agent}","from":"{}","to":"+12125550199"}}"#,
        phone(i)
    )
}

type Make = Arc<dyn Fn(u64) -> hyper::Request<http_body_util::Full<bytes::Bytes>> + Send + Sync>;

fn ingest_request(a: &Agent) -> Make {
    let (path, key, id) = (a.path.clone(), a.key.clone(), a.id.clone());
    Arc::new(move |i| post(&path, Some(("x-authorization", &key)), ingest_body(&id, i)))
}

fn call_request(a: &Agent) -> Make {
    let (token, id) = (format!("Bearer {}", a.token), a.id.clone());
    Arc::new(move |i| {
        post(
            "/api/v1/calls",
            Some(("authorization", &token)),
            call_body(&id, i),
        )
    })
}

/// One line of the report.
struct Row {
    name: String,
    stats: Option<Stats>,
    ratio: Option<f64>,
    figure: String,
    target: String,
    pass: Option<bool>,
    extra: Value,
}

impl Row {
    fn json(&self) -> Value {
        let mut v = json!({
            "scenario": self.name,
            "figure": self.figure,
            "target": self.target,
            "pass": self.pass,
            "ratio": self.ratio,
            "extra": self.extra,
        });
        if let Some(s) = &self.stats {
            v["requests_per_sec"] = json!(s.throughput());
            v["p50_ms"] = json!(s.ms(0.5));
            v["p99_ms"] = json!(s.ms(0.99));
            v["p999_ms"] = json!(s.ms(0.999));
            v["ok"] = json!(s.ok);
            v["refused"] = json!(s.refused);
            v["errors"] = json!(s.errors);
        }
        v
    }
}

fn mark(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "",
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<42} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7}  {:<22} {:<14} result",
        "scenario", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "ratio", "figure", "target",
    );
    println!("{}", "-".repeat(150));
    for r in rows {
        let (rps, p50, p99, p999, errors) = match &r.stats {
            Some(s) => (
                s.throughput()
                    .map_or_else(String::new, |r| format!("{r:.0}")),
                format!("{:.2}", s.ms(0.5)),
                format!("{:.2}", s.ms(0.99)),
                format!("{:.2}", s.ms(0.999)),
                format!("{}", s.errors + s.refused),
            ),
            None => Default::default(),
        };
        let ratio = r.ratio.map(|x| format!("{x:.3}")).unwrap_or_default();
        println!(
            "{:<42} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7}  {:<22} {:<14} {}",
            r.name,
            rps,
            p50,
            p99,
            p999,
            errors,
            ratio,
            r.figure,
            r.target,
            mark(r.pass)
        );
    }
    println!();
}

async fn run(o: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let probe = StallProbe::start();
    println!(
        "Precall load benchmark: {} cores, {:?} per throughput scenario, at {:?} connections",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        o.duration,
        o.levels
    );
    if probe.real_time {
        println!(
            "machine stalls: watched by a real-time thread; an open loop during which the machine stopped for {} ms or more is marked, and ingest's is measured again (up to {OPEN_ATTEMPTS} attempts)",
            DISTURBING.as_millis()
        );
    } else {
        println!(
            "machine stalls: not watched (no permission for a real-time thread); open loops are measured once"
        );
    }
    let baseline = Server::baseline(dir.path()).await?;
    let precall = Server::precall(dir.path()).await?;
    let url = precall.url();
    let main_agent = make_agent(dir.path(), &url, 5_000);
    let fallback_agent = make_agent(dir.path(), &url, 250);
    let parked_agent = make_agent(dir.path(), &url, 10_000);

    let mut rows = Vec::new();
    let mut acked: HashSet<u64> = HashSet::new();
    let mut calls: Vec<String> = Vec::new();
    let mut sent: u64 = 0;
    let mut refused: u64 = 0;
    // Whether the benchmark's admin exists (first-run setup happens once).
    let mut admin_made = false;

    // Until measured, a guess at ingest's maximum rate.
    let mut ingest_rps = 10_000.0;
    // The concurrency at which ingest peaked, once measured.
    let mut ingest_conns: Option<usize> = None;

    // Warm both up.
    let echo: Make = {
        let id = main_agent.id.clone();
        Arc::new(move |i| post("/echo", None, ingest_body(&id, i)))
    };
    let short = Duration::from_secs(1);
    drive(
        baseline.addr,
        o.connections,
        short,
        None,
        0,
        Pace::Closed,
        StatusCode::OK,
        Keep::Nothing,
        echo.clone(),
    )
    .await;
    let warm = drive(
        precall.addr,
        o.connections,
        short,
        None,
        WARMUP,
        Pace::Closed,
        StatusCode::ACCEPTED,
        Keep::Number,
        ingest_request(&main_agent),
    )
    .await;
    account(&warm, &mut acked, &mut sent, &mut refused);

    // 1. Baseline.
    let (cpu0, gen0) = (baseline.cpu_time(), own_cpu());
    let base = best_of(&o.levels, |conns, _| {
        drive(
            baseline.addr,
            conns,
            o.duration,
            None,
            0,
            Pace::Closed,
            StatusCode::OK,
            Keep::Nothing,
            echo.clone(),
        )
    })
    .await;
    let base_rps = base.rps();
    let cpu_us = per_request_us(baseline.cpu_time() - cpu0, base.all_ok);
    let gen_us = per_request_us(own_cpu() - gen0, base.all_ok);
    rows.push(Row {
        name: "baseline: axum echo (closed loop)".into(),
        ratio: Some(1.0),
        figure: format!("{base_rps:.0} req/s ({} conns)", base.connections),
        target: String::new(),
        pass: None,
        extra: json!({ "server_cpu_us_per_request": cpu_us, "generator_cpu_us_per_request": gen_us }),
        stats: Some(base),
    });

    if o.runs("ingest") {
        // 2. Ingest at its maximum, against baselines measured just before and after it.
        let mut ledger = Ledger {
            acked: &mut acked,
            calls: &mut calls,
            sent: &mut sent,
            refused: &mut refused,
        };
        let row = ingest_row(
            &o,
            &baseline,
            &echo,
            &[&precall],
            &main_agent,
            "ingest: max throughput (closed loop)",
            0.25,
            &mut ledger,
        )
        .await;
        let ingest = row.stats.as_ref().expect("measured");
        ingest_rps = ingest.rps();
        ingest_conns = Some(ingest.connections);
        rows.push(row);
    }

    // The open loops send over as many connections as the largest closed-loop level.
    let open_conns = o.levels.iter().copied().max().unwrap_or(o.connections);
    if o.runs("open") {
        // 3. Ingest p99 at half its maximum, open loop, right after the maximum was measured:
        // this machine's speed drifts by 10-25 % within a minute, and half of a maximum
        // measured in a fast spell is more than half of what it can do in a slow one (the
        // viewer scenario used to run in between; bench-results/2026-11-28-runs-21-25.json).
        // Over HTTP/1.1 a connection carries one request at a time, so the generator opens
        // as many as the largest closed-loop level: enough that a request falls due with a
        // connection free to send it, rather than queueing in the generator behind a slow
        // answer to another.
        let rate = o
            .open_rate
            .map_or((ingest_rps / 2.0).max(1.0), |r| r.max(1) as f64);
        if o.open_trace.is_some() {
            eprintln!("open loop: {rate:.0} req/s over {open_conns} connections");
        }
        // The machine itself may stop for tens of milliseconds (see `stalls`): an attempt
        // during which it did is measured again, and every attempt is reported.
        let ingest_open = ingest_request(&main_agent);
        let attempts = OpenAttempts::run("ingest", &probe, &precall, async |attempt| {
            let open = drive(
                precall.addr,
                open_conns,
                o.duration,
                None,
                OPEN_LOOP + attempt * OPEN_ATTEMPT_SPAN,
                Pace::Open { rate },
                StatusCode::ACCEPTED,
                Keep::Number,
                ingest_open.clone(),
            )
            .await;
            account(&open, &mut acked, &mut sent, &mut refused);
            open
        })
        .await;
        let open = &attempts.open;
        // Errors in any attempt fail the row, not only in the one reported.
        let earlier_errors = attempts.earlier_failures.0;
        if let Some(path) = &o.open_trace {
            open.write_trace(path)?;
        }
        let p99 = open.ms(0.99);
        let (name, target, pass) = match o.open_rate {
            None => (
                format!("ingest: p99 at {rate:.0} req/s (open loop)"),
                "p99 ≤ 10 ms".to_owned(),
                Some(p99 <= 10.0 && open.errors + earlier_errors == 0),
            ),
            // Not half the maximum: not the target's load.
            Some(_) => (
                format!("ingest: p99 at {rate:.0} req/s, as asked (open loop)"),
                String::new(),
                None,
            ),
        };
        rows.push(Row {
            name,
            ratio: Some(open.rps() / base_rps),
            figure: attempts.figure(),
            target,
            pass,
            extra: attempts.extra(rate),
            stats: Some(attempts.open),
        });

        // 3a. The echo baseline under the same open loop: how long this machine itself
        // keeps requests waiting at that rate (its own stalls, the generator's lateness),
        // with no handler to speak of. No target; it says how much of the p99 above the
        // machine would have charged to any server that moment.
        rows.push(
            echo_open_loop(
                &probe,
                &baseline,
                &echo,
                rate,
                open_conns,
                o.duration,
                format!("baseline: echo at {rate:.0} req/s (open loop)"),
            )
            .await,
        );
    }

    if o.runs("echo-open") {
        // 3b. The echo baseline at half of its own maximum, open loop: the load the ingest
        // open loop is asked to bear, relative to what the server can do, put on a server
        // with nothing to do. No target; it says whether this machine and the generator
        // themselves keep a p99 of 10 ms at that share of their capacity in this run.
        let rate = (base_rps / 2.0).max(1.0);
        rows.push(
            echo_open_loop(
                &probe,
                &baseline,
                &echo,
                rate,
                open_conns,
                o.duration,
                format!("baseline: echo at half its maximum, {rate:.0} req/s (open loop)"),
            )
            .await,
        );
    }

    if o.runs("viewer") {
        // 3c. Ingest with the console's Test viewer open against ingest without it, in
        // alternating segments at one concurrency: the machine's speed moves by more than
        // the 10 % measured here within a minute, and alternating spreads that over both.
        let session = admin_session(&precall).await?;
        admin_made = true;
        let conns = ingest_conns.unwrap_or(o.connections);
        let segment = (o.duration / 2).max(Duration::from_secs(2));
        let (mut without, mut with) = (Stats::new(), Stats::new());
        let mut events = 0;
        for round in 0..VIEWER_ROUNDS {
            for viewing in [false, true] {
                let viewer = if viewing {
                    Some(open_viewer(precall.addr, &main_agent, &session).await)
                } else {
                    None
                };
                let first = VIEWER + (2 * round + u64::from(viewing)) * LEVEL_SPAN;
                let s = drive(
                    precall.addr,
                    conns,
                    segment,
                    None,
                    first,
                    Pace::Closed,
                    StatusCode::ACCEPTED,
                    Keep::Number,
                    ingest_request(&main_agent),
                )
                .await;
                if let Some(v) = viewer {
                    events += v.events();
                    v.stop();
                }
                account(&s, &mut acked, &mut sent, &mut refused);
                let into = if viewing { &mut with } else { &mut without };
                into.elapsed += s.elapsed;
                into.merge(s);
            }
        }
        let kept = with.rps() / without.rps().max(1e-9);
        with.connections = conns;
        rows.push(Row {
            name: "ingest with a Test viewer open".into(),
            ratio: None,
            figure: format!("{:.0} % of without", kept * 100.0),
            target: "≥ 90 % of without".into(),
            pass: Some(kept >= 0.9 && with.errors + without.errors == 0),
            extra: json!({ "viewer_events_received": events, "rps_with_viewer": with.rps(),
                           "rps_without_viewer": without.rps(), "connections": conns,
                           "segments_each": VIEWER_ROUNDS, "segment_secs": segment.as_secs_f64() }),
            stats: Some(with),
        });
    }

    if o.runs("calls") {
        // 4. Call start with the context already cached.
        let mut ledger = Ledger {
            acked: &mut acked,
            calls: &mut calls,
            sent: &mut sent,
            refused: &mut refused,
        };
        rows.push(
            call_start_row(
                &o,
                &baseline,
                &echo,
                &[&precall],
                &main_agent,
                ingest_rps,
                "call start, context cached (closed loop)",
                Some(0.25),
                &mut ledger,
            )
            .await,
        );
    }

    if o.runs("wake") {
        // 5. Wake-up: a call waits, its webhook lands; time from the 202 to the call's answer.
        let (wake, wake_extra, wake_acked, wake_calls) =
            wake_up(precall.addr, precall.addr, &main_agent, o.wake_calls, 10).await?;
        acked.extend(wake_acked.iter().copied());
        sent += wake_acked.len() as u64;
        calls.extend(wake_calls);
        let p99 = wake.ms(0.99);
        rows.push(Row {
            name: format!("wake-up: 202 → call answer ({})", o.wake_calls),
            ratio: None,
            figure: format!("p99 {p99:.2} ms"),
            target: "p99 ≤ 5 ms".into(),
            pass: Some(p99 <= 5.0 && wake.errors == 0 && wake_extra["not_woken"] == 0),
            extra: wake_extra,
            stats: Some(wake),
        });
    }

    if o.runs("fallback") {
        // 6. Fallback accuracy.
        let (fb, fb_calls) = fallback_accuracy(&precall, &fallback_agent, 200, 250).await?;
        calls.extend(fb_calls);
        let p99 = fb.ms(0.99);
        rows.push(Row {
            name: "fallback: answer − 250 ms wait (200)".into(),
            ratio: None,
            figure: format!("p99 {p99:.2} ms"),
            target: "p99 ≤ 20 ms".into(),
            pass: Some(p99 <= 20.0 && fb.errors == 0 && fb.refused == 0),
            extra: json!({}),
            stats: Some(fb),
        });
    }

    if o.runs("parked") {
        // 7. Parked calls.
        let parked = parked_calls(&precall, &parked_agent, o.parked, o.parked_http1).await?;
        let transport = if o.parked_http1 {
            "HTTP/1.1, a connection each".to_owned()
        } else {
            format!("HTTP/2, {} streams a connection", PARKED_STREAMS)
        };
        acked.extend(parked.acked.iter().copied());
        sent += parked.acked.len() as u64;
        calls.extend(parked.calls.iter().cloned());
        let all_correct = parked.correct == o.parked;
        rows.push(Row {
            name: format!("{} parked calls: answered correctly", o.parked),
            // The transport goes in the report's detail.
            ratio: None,
            figure: format!("{} of {}", parked.correct, o.parked),
            target: "all".into(),
            pass: Some(all_correct),
            extra: json!({ "wrong": parked.wrong, "errors": parked.errors, "transport": transport }),
            stats: None,
        });
        rows.push(Row {
            name: "  server CPU while parked".into(),
            ratio: None,
            figure: format!("{:.2} % of a core", parked.cpu_percent),
            target: "< 5 %".into(),
            pass: Some(parked.cpu_percent < 5.0),
            extra: json!({}),
            stats: None,
        });
        let added_mib = parked.added_rss as f64 / (1024.0 * 1024.0);
        rows.push(Row {
            name: "  server memory added while parked".into(),
            ratio: None,
            figure: format!("{added_mib:.1} MiB"),
            target: "< 100 MiB".into(),
            pass: Some(added_mib < 100.0),
            extra: json!({}),
            stats: None,
        });
    }

    // 8. Publishing a large agent while calls start on it.
    if o.runs("publish") {
        if !admin_made {
            admin_session(&precall).await?;
        }
        let token = cli(
            dir.path(),
            &url,
            &["api-token", "create", "--name", "bench"],
        )["token"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no API token"))?
            .to_owned();
        let p = publish::run(precall.addr, &token).await?;
        let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
        for d in &p.publish {
            hist.record(d.as_micros() as u64)?;
        }
        let (median, max) = (
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.max() as f64 / 1000.0,
        );
        rows.push(Row {
            name: format!(
                "publish: {} flows × {} blocks ({})",
                publish::FLOWS,
                publish::BLOCKS,
                p.publish.len()
            ),
            ratio: None,
            figure: format!("median {median:.1} ms, max {max:.1} ms"),
            target: "< 50 ms".into(),
            pass: Some(median < 50.0),
            extra: json!({
                "publish_ms": p.publish.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
                "document_bytes": p.document_bytes,
            }),
            stats: None,
        });
        rows.push(Row {
            name: "  calls during the publishes: one version each".into(),
            ratio: None,
            figure: format!(
                "{} of {} calls mixed, {} versions run, {} errors",
                p.mixed, p.calls, p.versions_seen, p.call_errors
            ),
            target: "none mixed".into(),
            pass: Some(p.mixed == 0 && p.calls > 0 && p.call_errors == 0),
            extra: json!({ "calls": p.calls, "mixed": p.mixed, "versions_seen": p.versions_seen, "errors": p.call_errors }),
            stats: None,
        });
    }

    if o.runs("connect") {
        // Voice platforms' connections (connect.rs).
        connect::rows(
            &o,
            &probe,
            &baseline,
            &precall,
            &echo,
            &main_agent,
            dir.path(),
            ingest_rps,
            &mut rows,
            &mut acked,
            &mut sent,
            &mut refused,
        )
        .await?;
    }

    // 9. Peak memory over the whole run.
    let (_, peak) = precall.memory();
    let peak_mib = peak as f64 / (1024.0 * 1024.0);
    rows.push(Row {
        name: "server peak resident memory (whole run)".into(),
        ratio: None,
        figure: format!("{peak_mib:.1} MiB"),
        target: "< 150 MiB".into(),
        pass: Some(peak_mib < 150.0),
        extra: json!({}),
        stats: None,
    });

    // 10. Nothing acknowledged is missing.
    let ledger = Ledger {
        acked: &mut acked,
        calls: &mut calls,
        sent: &mut sent,
        refused: &mut refused,
    };
    rows.push(
        integrity_row(
            &Stored::Sqlite(dir.path()),
            "integrity: acknowledged = found",
            &ledger,
        )
        .await?,
    );

    if o.engine == Engine::Postgres {
        // 11. The same store functions on PostgreSQL, two servers on one database.
        cluster::rows(&o, &baseline, &echo, dir.path(), &mut rows).await?;
    }

    print_table(&rows);
    for r in &rows {
        if let Some(us) = r.extra.get("server_cpu_us_per_request") {
            let generator = r.extra["generator_cpu_us_per_request"].as_f64();
            println!(
                "{:<42} server CPU {:.1} µs per request, load generator {:.1} µs",
                r.name,
                us.as_f64().unwrap_or(0.0),
                generator.unwrap_or(0.0)
            );
        }
    }
    println!(
        "ingest requests: sent {sent} = acknowledged {} + refused/failed {}",
        acked.len(),
        sent - acked.len() as u64
    );
    let report = json!({
        "when_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "machine_stalls_watched": probe.real_time,
        "engine": match o.engine {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        },
        "quick": o.quick,
        "duration_secs": o.duration.as_secs(),
        "connections": o.connections,
        "baseline_rps": base_rps,
        "scenarios": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "all_pass": rows.iter().all(|r| r.pass != Some(false)),
    });
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    std::fs::create_dir_all(&out_dir)?;
    let file = out_dir.join(format!("load-{}.json", report["when_unix"]));
    std::fs::write(&file, serde_json::to_string_pretty(&report)?)?;
    std::fs::write(
        out_dir.join("latest.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("report written to {}", file.display());
    Ok(())
}

/// A Test viewer: an admin session and the viewer's event stream, read in the background.
struct Viewer {
    task: tokio::task::JoinHandle<()>,
    events: Arc<std::sync::atomic::AtomicU64>,
}

impl Viewer {
    fn events(&self) -> u64 {
        self.events.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Signs the benchmark's admin in (first-run setup); returns the session cookie.
async fn admin_session(server: &Server) -> anyhow::Result<String> {
    let link = server
        .setup_link
        .borrow()
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the server printed no setup link"))?;
    let token = link.split("token=").nth(1).unwrap_or_default().to_owned();
    let mut conn = Conn::open(server.addr).await?;
    let form = format!(
        "token={token}&email=bench%40example.com&password=bench-password-123&confirm=bench-password-123"
    );
    let req = hyper::Request::post("/setup")
        .header("host", "localhost")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(form)))?;
    let (status, cookie) = conn.send_keep_headers(req).await?;
    anyhow::ensure!(status.is_redirection(), "setup answered {status}");
    let cookie = cookie.ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
    let session = cookie.split(';').next().unwrap_or_default().to_owned();
    Ok(session)
}

/// Opens `agent`'s Test viewer in `session` and counts the deliveries it shows.
async fn open_viewer(addr: std::net::SocketAddr, agent: &Agent, session: &str) -> Viewer {
    use http_body_util::BodyExt;
    // The webhook of the fraud-detection example is its action `crm`.
    let session = session.to_owned();
    let path = format!("/admin/agents/{}/actions/crm/events", agent.id);
    let events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = events.clone();
    let task = tokio::spawn(async move {
        let Ok(mut conn) = Conn::open(addr).await else {
            return;
        };
        let req = hyper::Request::get(path)
            .header("host", "localhost")
            .header("cookie", session)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let Ok(res) = conn.send_streaming(req).await else {
            return;
        };
        let mut body = res.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                let n = data
                    .windows(16)
                    .filter(|w| {
                        *w == b"event: delivery
"
                    })
                    .count();
                counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    Viewer { task, events }
}

/// The baseline's throughput measured again, next to a scenario: the machine's speed drifts
/// during a run, so each throughput ratio is taken against the mean of the baselines
/// measured right before and right after it.
async fn nearby_baseline(baseline: &Server, o: &Options, echo: &Make) -> f64 {
    let d = (o.duration / 2).max(Duration::from_secs(2));
    let s = best_of(&o.levels, |conns, _| {
        drive(
            baseline.addr,
            conns,
            d,
            None,
            0,
            Pace::Closed,
            StatusCode::OK,
            Keep::Nothing,
            echo.clone(),
        )
    })
    .await;
    s.rps()
}

/// Runs a closed-loop measurement at each concurrency level and keeps the best, with the
/// counts (and kept answers) of all levels, so that nothing sent goes unaccounted.
/// Webhooks as fast as they are answered, at each concurrency level, numbered from `first`
/// (each level with numbers of its own): the best level's figures.
async fn ingest_at_max(o: &Options, addrs: &[SocketAddr], agent: &Agent, first: u64) -> Stats {
    best_of(&o.levels, |conns, level| {
        drive_over(
            addrs,
            conns,
            o.duration,
            None,
            first + level as u64 * LEVEL_SPAN,
            Pace::Closed,
            StatusCode::ACCEPTED,
            Keep::Number,
            ingest_request(agent),
        )
    })
    .await
}

async fn best_of<F, Fut>(levels: &[usize], mut run: F) -> Stats
where
    F: FnMut(usize, usize) -> Fut,
    Fut: std::future::Future<Output = Stats>,
{
    let mut best: Option<Stats> = None;
    let (mut all_ok, mut kept, mut refused, mut errors) = (0, Vec::new(), 0, 0);
    for (level, &conns) in levels.iter().enumerate() {
        let mut s = run(conns, level).await;
        all_ok += s.ok;
        refused += s.refused;
        errors += s.errors;
        kept.append(&mut s.kept);
        if best.as_ref().is_none_or(|b| s.rps() > b.rps()) {
            best = Some(s);
        }
    }
    let mut best = best.expect("at least one level");
    best.all_ok = all_ok;
    best.kept = kept;
    // Refusals and errors at any level count against the scenario.
    best.refused = refused;
    best.errors = errors;
    best
}

/// The benchmark's own CPU time: the load generator shares the machine with the servers.
fn own_cpu() -> Duration {
    process_cpu(std::process::id())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The machine's longest stop, if it was long enough to matter (see `stalls`).
fn disturbing(stalls: &[Duration]) -> Option<Duration> {
    stalls.first().copied().filter(|s| *s >= DISTURBING)
}

/// An open loop's figure: its p99, and the machine's stop if one was long enough to matter.
fn open_figure(s: &Stats, stalls: &[Duration]) -> String {
    match disturbing(stalls) {
        Some(stop) => format!(
            "p99 {:.2} ms (machine stopped {:.1} ms)",
            s.ms(0.99),
            ms(stop)
        ),
        None => format!("p99 {:.2} ms", s.ms(0.99)),
    }
}

fn stalls_ms(stalls: &[Duration]) -> Vec<f64> {
    stalls.iter().map(|s| ms(*s)).collect()
}

/// An open loop measured until the machine did not stop during it (see `stalls`), up to
/// `OPEN_ATTEMPTS` attempts: the last attempt, with the server's and the generator's CPU
/// time over it and the machine's stops, and what the earlier ones gave.
struct OpenAttempts {
    open: Stats,
    cpu: Duration,
    gen_cpu: Duration,
    stalls: Vec<Duration>,
    /// The earlier attempts' figures, for the report.
    earlier: Vec<Value>,
    /// Failed and refused requests in the earlier attempts: they fail the row too.
    earlier_failures: (u64, u64),
}

impl OpenAttempts {
    /// Runs `attempt` (given its number from 0) until one had no disturbing stop.
    async fn run(
        label: &str,
        probe: &StallProbe,
        server: &Server,
        mut attempt: impl AsyncFnMut(u64) -> Stats,
    ) -> Self {
        let mut earlier = Vec::new();
        let mut earlier_failures = (0, 0);
        loop {
            let n = earlier.len() as u64;
            let (cpu0, gen0) = (server.cpu_time(), own_cpu());
            let open = attempt(n).await;
            let (cpu, gen_cpu) = (server.cpu_time() - cpu0, own_cpu() - gen0);
            let stalls = probe.during(&open);
            let stopped = match disturbing(&stalls) {
                Some(stop) if n + 1 < OPEN_ATTEMPTS => stop,
                _ => {
                    return Self {
                        open,
                        cpu,
                        gen_cpu,
                        stalls,
                        earlier,
                        earlier_failures,
                    };
                }
            };
            println!(
                "{label} open loop, attempt {}: the machine stopped for {:.1} ms (p99 {:.2} ms); measuring again",
                n + 1,
                ms(stopped),
                open.ms(0.99)
            );
            earlier_failures.0 += open.errors;
            earlier_failures.1 += open.refused;
            earlier.push(json!({
                "p99_ms": open.ms(0.99),
                "p50_ms": open.ms(0.5),
                "requests": open.ok,
                "refused": open.refused,
                "errors": open.errors,
                "machine_stalls_ms": stalls_ms(&stalls),
            }));
        }
    }

    /// The report's extra figures (see `open_loop_extra`) with the earlier attempts.
    fn extra(&self, rate: f64) -> Value {
        let mut extra = open_loop_extra(&self.open, rate, self.cpu, self.gen_cpu, &self.stalls);
        extra["earlier_attempts"] = json!(self.earlier);
        extra
    }

    /// The row's figure: its p99, the machine's stop, and which attempt it was.
    fn figure(&self) -> String {
        let mut figure = open_figure(&self.open, &self.stalls);
        if !self.earlier.is_empty() {
            figure += &format!(" (attempt {})", self.earlier.len() + 1);
        }
        figure
    }
}

fn per_request_us(cpu: Duration, requests: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / requests.max(1) as f64
}

/// The echo baseline under the open loop at `rate`: a row without a target.
async fn echo_open_loop(
    probe: &StallProbe,
    baseline: &Server,
    echo: &Make,
    rate: f64,
    conns: usize,
    duration: Duration,
    name: String,
) -> Row {
    let (cpu0, gen0) = (baseline.cpu_time(), own_cpu());
    let s = drive(
        baseline.addr,
        conns,
        duration,
        None,
        0,
        Pace::Open { rate },
        StatusCode::OK,
        Keep::Nothing,
        echo.clone(),
    )
    .await;
    let (cpu, gen_cpu) = (baseline.cpu_time() - cpu0, own_cpu() - gen0);
    let stalls = probe.during(&s);
    let figure = open_figure(&s, &stalls);
    Row {
        name,
        ratio: None,
        figure,
        target: String::new(),
        pass: None,
        extra: open_loop_extra(&s, rate, cpu, gen_cpu, &stalls),
        stats: Some(s),
    }
}

/// The report's extra figures for an open-loop row, given the server's and the generator's
/// CPU time over it and the machine's stalls during it (see `stalls`).
fn open_loop_extra(
    s: &Stats,
    rate: f64,
    server_cpu: Duration,
    generator_cpu: Duration,
    stalls: &[Duration],
) -> Value {
    json!({
        "machine_stalls_ms": stalls_ms(stalls),
        "offered_rate": rate,
        "connections": s.connections,
        "generator_send_delay_p99_ms": s.send_delay.value_at_quantile(0.99) as f64 / 1000.0,
        "server_cpu_us_per_request": per_request_us(server_cpu, s.ok),
        "generator_cpu_us_per_request": per_request_us(generator_cpu, s.ok),
    })
}

fn account(s: &Stats, acked: &mut HashSet<u64>, sent: &mut u64, refused: &mut u64) {
    *sent += s.kept.len() as u64 + s.refused + s.errors;
    *refused += s.refused + s.errors;
    acked.extend(s.kept.iter().map(|(i, _)| *i));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn call_id(body: &[u8]) -> Option<String> {
    string_field(body, b"callId").map(str::to_owned)
}

/// `n` calls in `lanes` parallel lanes: each call is sent to `call_addr`, given 5 ms to
/// park, then its webhook is sent to `hook_addr` (the same server, or another node of a
/// cluster); records the time from the webhook's 202 to the call's answer.
async fn wake_up(
    call_addr: SocketAddr,
    hook_addr: SocketAddr,
    agent: &Agent,
    n: u64,
    lanes: u64,
) -> anyhow::Result<(Stats, Value, Vec<u64>, Vec<String>)> {
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let (ingest, call) = (ingest_request(agent), call_request(agent));
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::new();
            let (mut arrived, mut not_woken) = (0u64, 0u64);
            let mut acked = Vec::new();
            let mut calls = Vec::new();
            let mut call_conn = Conn::open(call_addr).await?;
            let mut hook_conn = Conn::open(hook_addr).await?;
            for k in 0..n / lanes {
                let i = WAKE + lane * (n / lanes) + k;
                let call_fut = async {
                    let r = call_conn.send(call(i)).await;
                    (r, Instant::now())
                };
                let hook_fut = async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let r = hook_conn.send(ingest(i)).await;
                    (r, Instant::now())
                };
                let ((call_res, answered), (hook_res, acked_at)) = tokio::join!(call_fut, hook_fut);
                match (call_res, hook_res) {
                    (Ok((StatusCode::CREATED, body)), Ok((StatusCode::ACCEPTED, _))) => {
                        acked.push(i);
                        calls.extend(call_id(&body));
                        stats.ok += 1;
                        stats.record(answered.saturating_duration_since(acked_at));
                        if contains(&body, br#""outcome":"arrived""#) {
                            arrived += 1;
                        } else if !contains(&body, br#""source":"webhook""#) {
                            not_woken += 1;
                        }
                    }
                    _ => stats.errors += 1,
                }
            }
            anyhow::Ok((stats, arrived, not_woken, acked, calls))
        }));
    }
    let mut total = Stats::new();
    let (mut arrived, mut not_woken) = (0, 0);
    let mut acked = Vec::new();
    let mut calls = Vec::new();
    for t in tasks {
        let (s, a, nw, ak, c) = t.await??;
        total.merge(s);
        arrived += a;
        not_woken += nw;
        acked.extend(ak);
        calls.extend(c);
    }
    Ok((
        total,
        json!({ "woken_while_waiting": arrived, "not_woken": not_woken }),
        acked,
        calls,
    ))
}

/// `n` calls with no webhook, 50 at a time: how far past the configured wait each answer came.
async fn fallback_accuracy(
    server: &Server,
    agent: &Agent,
    n: u64,
    wait_ms: u64,
) -> anyhow::Result<(Stats, Vec<String>)> {
    let mut total = Stats::new();
    let mut calls = Vec::new();
    let batch = 50;
    for round in 0..n.div_ceil(batch) {
        let mut tasks = Vec::new();
        for k in 0..batch.min(n - round * batch) {
            let i = FALLBACK + round * batch + k;
            let (addr, call) = (server.addr, call_request(agent));
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(addr).await?;
                let started = Instant::now();
                let res = conn.send(call(i)).await;
                anyhow::Ok((res, started.elapsed()))
            }));
        }
        for t in tasks {
            match t.await? {
                Ok((Ok((StatusCode::CREATED, body)), elapsed)) => {
                    if contains(&body, br#""source":"fallback""#) {
                        total.ok += 1;
                    } else {
                        total.refused += 1;
                    }
                    calls.extend(call_id(&body));
                    let wait = Duration::from_millis(wait_ms);
                    total.record(elapsed.saturating_sub(wait));
                }
                _ => total.errors += 1,
            }
        }
    }
    Ok((total, calls))
}

struct Parked {
    correct: usize,
    wrong: usize,
    errors: usize,
    cpu_percent: f64,
    added_rss: u64,
    acked: Vec<u64>,
    calls: Vec<String>,
}

/// `n` calls wait at once (10 s fallback); while parked, the server's CPU and memory are
/// read; then nine in ten get their webhook and the rest must fall back.
async fn parked_calls(
    server: &Server,
    agent: &Agent,
    n: usize,
    http1: bool,
) -> anyhow::Result<Parked> {
    let (rss_before, _) = server.memory();
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    if http1 {
        // One connection per call, opened 500 at a time.
        for chunk in (0..n as u64).collect::<Vec<_>>().chunks(500) {
            let mut opened = Vec::with_capacity(chunk.len());
            for &k in chunk {
                let addr = server.addr;
                opened.push(tokio::spawn(async move {
                    Conn::open(addr).await.map(|c| (k, c))
                }));
            }
            for o in opened {
                let Ok((k, mut conn)) = o.await? else {
                    tasks.push(tokio::spawn(async {
                        (0, Err(anyhow::anyhow!("connect failed")))
                    }));
                    continue;
                };
                let call = call_request(agent);
                tasks.push(tokio::spawn(async move {
                    (k, conn.send(call(PARKED + k)).await)
                }));
            }
        }
    } else {
        // HTTP/2: the calls share connections, PARKED_STREAMS at a time on each.
        let mut conns = Vec::new();
        for _ in 0..n.div_ceil(PARKED_STREAMS) {
            conns.push(H2Conn::open(server.addr).await?);
        }
        let url = format!("http://{}/api/v1/calls", server.addr);
        for k in 0..n as u64 {
            let mut conn = conns[k as usize / PARKED_STREAMS].clone();
            let req = post(
                &url,
                Some(("authorization", &format!("Bearer {}", agent.token))),
                call_body(&agent.id, PARKED + k),
            );
            tasks.push(tokio::spawn(async move { (k, conn.send(req).await) }));
        }
    }
    let all_sent = began.elapsed();
    // Let every call reach its wait, then watch the server idle.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (rss_parked, _) = server.memory();
    let cpu0 = server.cpu_time();
    let window = Duration::from_secs(2);
    tokio::time::sleep(window).await;
    let cpu_percent = (server.cpu_time() - cpu0).as_secs_f64() / window.as_secs_f64() * 100.0;

    // Webhooks for nine callers in ten.
    let with_hook: Vec<u64> = (0..n as u64).filter(|k| k % 10 != 0).collect();
    let with_hook = Arc::new(with_hook);
    let ingest = ingest_request(agent);
    let map = with_hook.clone();
    let make: Make = Arc::new(move |i| ingest(PARKED + map[i as usize]));
    let hooks = drive(
        server.addr,
        64,
        Duration::from_secs(60),
        Some(with_hook.len() as u64),
        0,
        Pace::Closed,
        StatusCode::ACCEPTED,
        Keep::Number,
        make,
    )
    .await;
    let hooks_done = began.elapsed();
    let acked: Vec<u64> = hooks
        .kept
        .iter()
        .map(|(i, _)| PARKED + with_hook[*i as usize])
        .collect();

    let (mut correct, mut wrong, mut errors, mut fell_back) = (0, 0, 0, 0);
    let mut calls = Vec::new();
    for t in tasks {
        match t.await? {
            (k, Ok((StatusCode::CREATED, body))) => {
                calls.extend(call_id(&body));
                let v: Value = serde_json::from_slice(&body)?;
                let ok = if k % 10 == 0 {
                    v["source"] == "fallback" && v["variables"].get("marker").is_none()
                } else {
                    v["source"] == "webhook" && v["variables"]["marker"] == json!(PARKED + k)
                };
                if ok {
                    correct += 1
                } else {
                    wrong += 1;
                    if v["source"] == "fallback" {
                        fell_back += 1;
                    }
                }
            }
            _ => errors += 1,
        }
    }
    eprintln!(
        "parked: {n} calls sent in {all_sent:?}, webhooks done at {hooks_done:?}; \
         {fell_back} wrong answers fell back"
    );
    Ok(Parked {
        correct,
        wrong,
        errors,
        cpu_percent,
        added_rss: rss_parked.saturating_sub(rss_before),
        acked,
        calls,
    })
}

/// Where a run's webhooks and calls were stored.
enum Stored<'a> {
    /// The SQLite file `precall.db` in this directory.
    Sqlite(&'a Path),
    /// A PostgreSQL database.
    Postgres(&'a str),
}

/// What a scenario sent and got: acknowledged webhooks (their numbers), answered calls
/// (their ids), webhooks sent and refused. The integrity row checks it against the store.
struct Ledger<'a> {
    acked: &'a mut HashSet<u64>,
    calls: &'a mut Vec<String>,
    sent: &'a mut u64,
    refused: &'a mut u64,
}

impl Ledger<'_> {
    fn account(&mut self, s: &Stats) {
        account(s, self.acked, self.sent, self.refused);
    }
}

/// The integrity row: every acknowledged webhook in the ledger left a context in `stored`,
/// every answered call a stored call.
async fn integrity_row(
    stored: &Stored<'_>,
    name: &str,
    ledger: &Ledger<'_>,
) -> anyhow::Result<Row> {
    let (found_contexts, found_calls) = integrity(stored, ledger.acked, ledger.calls).await?;
    let (acked, calls) = (ledger.acked.len(), ledger.calls.len());
    let intact = found_contexts == acked && found_calls == calls;
    Ok(Row {
        name: name.into(),
        ratio: None,
        figure: format!("{found_contexts}/{acked} contexts, {found_calls}/{calls} calls"),
        target: "all found".into(),
        pass: Some(intact),
        extra: json!({ "ingest_sent": *ledger.sent, "ingest_acknowledged": acked,
                       "ingest_refused": *ledger.refused }),
        stats: None,
    })
}

/// Reads the database afterwards: every acknowledged webhook left a context, every
/// answered call a stored call.
async fn integrity(
    stored: &Stored<'_>,
    acked: &HashSet<u64>,
    calls: &[String],
) -> anyhow::Result<(usize, usize)> {
    use sqlx::Connection;
    const PHONES: &str = "SELECT phone FROM contexts";
    const CALLS: &str = "SELECT public_id FROM calls";
    // The same two reads on either engine's connection.
    macro_rules! read {
        ($conn:expr) => {{
            let mut conn = $conn;
            let phones: HashSet<String> = sqlx::query_scalar(PHONES)
                .fetch_all(&mut conn)
                .await?
                .into_iter()
                .collect();
            let calls: HashSet<String> = sqlx::query_scalar(CALLS)
                .fetch_all(&mut conn)
                .await?
                .into_iter()
                .collect();
            (phones, calls)
        }};
    }
    let (phones, stored) = match stored {
        Stored::Sqlite(dir) => {
            let url = format!("sqlite://{}?mode=ro", dir.join("precall.db").display());
            read!(sqlx::SqliteConnection::connect(&url).await?)
        }
        Stored::Postgres(url) => read!(sqlx::PgConnection::connect(url).await?),
    };
    let found_contexts = acked
        .iter()
        .filter(|i| phones.contains(&phone(**i)))
        .count();
    let found_calls = calls.iter().filter(|c| stored.contains(*c)).count();
    Ok((found_contexts, found_calls))
}

/// The servers' CPU time together.
fn cpu_of(servers: &[&Server]) -> Duration {
    servers.iter().map(|s| s.cpu_time()).sum()
}

/// Ingest at its maximum over `servers` (each connection to one of them in turn), against
/// baselines measured just before and after it: a ratio to the baseline, with `target`.
#[allow(clippy::too_many_arguments)]
async fn ingest_row(
    o: &Options,
    baseline: &Server,
    echo: &Make,
    servers: &[&Server],
    agent: &Agent,
    name: &str,
    target: f64,
    ledger: &mut Ledger<'_>,
) -> Row {
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let before = nearby_baseline(baseline, o, echo).await;
    let (cpu0, gen0) = (cpu_of(servers), own_cpu());
    let ingest = ingest_at_max(o, &addrs, agent, INGEST).await;
    let cpu_us = per_request_us(cpu_of(servers) - cpu0, ingest.all_ok);
    let gen_us = per_request_us(own_cpu() - gen0, ingest.all_ok);
    let after = nearby_baseline(baseline, o, echo).await;
    let near = (before + after) / 2.0;
    ledger.account(&ingest);
    let r = ingest.rps() / near;
    Row {
        name: name.into(),
        ratio: Some(r),
        figure: format!("{r:.3} of baseline ({} conns)", ingest.connections),
        target: format!("≥ {target:.2}"),
        pass: Some(r >= target && ingest.errors == 0),
        extra: json!({ "server_cpu_us_per_request": cpu_us, "generator_cpu_us_per_request": gen_us,
                       "nearby_baseline_rps": near, "servers": servers.len(),
                       "baseline_rps_before": before, "baseline_rps_after": after }),
        stats: Some(ingest),
    }
}

/// Call start with every caller's data cached beforehand, over `servers` (each connection
/// to one of them in turn), against baselines measured just before and after it: a ratio
/// to the baseline, with `target` if the scenario has one. Every call must get its
/// webhook's data.
#[allow(clippy::too_many_arguments)]
async fn call_start_row(
    o: &Options,
    baseline: &Server,
    echo: &Make,
    servers: &[&Server],
    agent: &Agent,
    ingest_rps: f64,
    name: &str,
    target: Option<f64>,
    ledger: &mut Ledger<'_>,
) -> Row {
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let preload_n = ((ingest_rps * o.duration.as_secs_f64() * 1.5) as u64).max(o.preload_min)
        * o.levels.len() as u64;
    let preload = drive_over(
        &addrs,
        o.connections,
        Duration::from_secs(600),
        Some(preload_n),
        PRELOAD,
        Pace::Closed,
        StatusCode::ACCEPTED,
        Keep::Number,
        ingest_request(agent),
    )
    .await;
    ledger.account(&preload);
    let before = nearby_baseline(baseline, o, echo).await;
    let (cpu0, gen0) = (cpu_of(servers), own_cpu());
    // Each level takes its callers from the preloaded ones after the last level's.
    let used = std::sync::atomic::AtomicU64::new(0);
    let call_start = best_of(&o.levels, |conns, _| {
        let (used, addrs) = (&used, &addrs);
        async move {
            let first = used.load(std::sync::atomic::Ordering::Relaxed);
            let s = drive_over(
                addrs,
                conns,
                o.duration,
                Some(preload_n - first),
                PRELOAD + first,
                Pace::Closed,
                StatusCode::CREATED,
                Keep::Call,
                call_request(agent),
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
    let cpu_us = per_request_us(cpu_of(servers) - cpu0, call_start.all_ok);
    let gen_us = per_request_us(own_cpu() - gen0, call_start.all_ok);
    let after = nearby_baseline(baseline, o, echo).await;
    let near = (before + after) / 2.0;
    let wrong = call_start
        .kept
        .iter()
        .filter(|(_, k)| !k.from_webhook)
        .count();
    ledger.calls.extend(
        call_start
            .kept
            .iter()
            .filter_map(|(_, k)| k.call_id.clone()),
    );
    let r = call_start.rps() / near;
    let faultless = call_start.errors == 0 && wrong == 0;
    Row {
        name: name.into(),
        ratio: Some(r),
        figure: format!("{r:.3} of baseline ({} conns)", call_start.connections),
        target: target.map_or_else(String::new, |t| format!("≥ {t:.2}")),
        // Without a target, only a fault fails the row.
        pass: match target {
            Some(t) => Some(r >= t && faultless),
            None => (!faultless).then_some(false),
        },
        extra: json!({ "not_from_webhook": wrong, "server_cpu_us_per_request": cpu_us,
                       "generator_cpu_us_per_request": gen_us, "nearby_baseline_rps": near,
                       "servers": servers.len(),
                       "baseline_rps_before": before, "baseline_rps_after": after }),
        stats: Some(call_start),
    }
}
