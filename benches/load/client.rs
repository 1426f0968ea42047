//! The load generator: HTTP/1.1 keep-alive connections (hyper), closed and open loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

impl Conn {
    /// Sends `req`; returns the status and the `set-cookie` header.
    pub async fn send_keep_headers(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, Option<String>)> {
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let cookie = res
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = res.status();
        let _ = res.into_body().collect().await?;
        Ok((status, cookie))
    }

    /// Sends `req` and returns the response with its body still streaming.
    pub async fn send_streaming(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }
}

/// A POST with a JSON body and optional auth header.
pub fn post(path: &str, auth: Option<(&'static str, &str)>, body: String) -> Request<Full<Bytes>> {
    let mut b = Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    if let Some((name, value)) = auth {
        b = b.header(name, value);
    }
    b.body(Full::new(Bytes::from(body))).expect("valid request")
}

/// What a scenario measured.
pub struct Stats {
    pub hist: Histogram<u64>,
    /// Open loop: how late the generator sent requests (its own delay, counted in `hist`).
    pub send_delay: Histogram<u64>,
    pub ok: u64,
    pub refused: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// The numbers of good answers, with what the scenario keeps of each (see [`Keep`]).
    pub kept: Vec<(u64, Kept)>,
    /// Connections this was measured over.
    pub connections: usize,
    /// Good answers over every level measured (see `best_of`).
    pub all_ok: u64,
    /// Open loop: each answered request as (due, latency, generator's lateness), in µs,
    /// `due` counted from the start.
    pub trace: Vec<(u32, u32, u32)>,
}

impl Stats {
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            send_delay: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            ok: 0,
            refused: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            kept: Vec::new(),
            connections: 0,
            all_ok: 0,
            trace: Vec::new(),
        }
    }

    /// Writes an open loop's trace to `path`: a first line with when the loop started, in
    /// µs since the Unix epoch (to line it up with the server's log), then each request's
    /// due time, latency and lateness, in µs.
    pub fn write_trace(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let mut trace = self.trace.clone();
        trace.sort_unstable();
        let started = std::time::SystemTime::now() - self.elapsed;
        let started = started.duration_since(std::time::UNIX_EPOCH)?.as_micros();
        let text: String = std::iter::once(format!("# started {started}\n"))
            .chain(
                trace
                    .iter()
                    .map(|(due, latency, late)| format!("{due} {latency} {late}\n")),
            )
            .collect();
        std::fs::write(path, text)?;
        Ok(())
    }

    pub fn record(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
        self.hist.record(us).expect("in range");
    }

    /// Adds one connection's raw figures, once its clock has stopped.
    fn absorb(&mut self, t: Tally) {
        for us in t.latencies {
            self.hist.record(u64::from(us)).expect("in range");
        }
        for us in t.delays {
            self.send_delay.record(u64::from(us)).expect("in range");
        }
        self.ok += t.ok;
        self.refused += t.refused;
        self.errors += t.errors;
        self.kept.extend(t.kept);
        self.trace.extend(t.trace);
    }

    pub fn merge(&mut self, other: Stats) {
        self.hist.add(&other.hist).expect("same bounds");
        self.send_delay.add(&other.send_delay).expect("same bounds");
        self.ok += other.ok;
        self.refused += other.refused;
        self.errors += other.errors;
        self.kept.extend(other.kept);
        self.trace.extend(other.trace);
    }

    /// Good answers per second; `None` for a latency scenario, which times no run.
    pub fn throughput(&self) -> Option<f64> {
        (!self.elapsed.is_zero()).then(|| self.rps())
    }

    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// What one connection's task counts while the clock runs, as raw figures that become
/// histograms only once every answer is in. A pair of histograms per task (256 tasks,
/// ~140 KB each) cost the generator ~4 % of its samples in recording alone, CPU taken
/// from the server it shares the machine with.
#[derive(Default)]
struct Tally {
    /// Latencies of answered requests, µs.
    latencies: Vec<u32>,
    /// Open loop: how late each request was sent, µs.
    delays: Vec<u32>,
    ok: u64,
    refused: u64,
    errors: u64,
    kept: Vec<(u64, Kept)>,
    trace: Vec<(u32, u32, u32)>,
}

/// Microseconds, within the histograms' bounds.
fn micros(d: Duration) -> u32 {
    d.as_micros().clamp(1, 60_000_000) as u32
}

type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// What a scenario keeps of each good answer.
///
/// Bodies are never held: a kept `Bytes` pins the connection's whole read buffer, so
/// holding hundreds of thousands of them made the generator allocate (and the kernel
/// zero) a fresh buffer for almost every answer, CPU taken from the server under test.
#[derive(Clone, Copy)]
pub enum Keep {
    /// Only counts.
    Nothing,
    /// The request's number (a webhook whose 202 must leave a readable context).
    Number,
    /// The number and the call's id and source, read as the answer arrives.
    Call,
}

/// What was kept of one good answer.
#[derive(Default)]
pub struct Kept {
    /// The call's id (`Keep::Call`).
    pub call_id: Option<String>,
    /// Whether the call's variables came from its webhook (`"source":"webhook"`).
    pub from_webhook: bool,
}

impl Kept {
    /// Reads a call's answer: `callId` and `source` are top-level string fields, so the
    /// first occurrence of each key is theirs (nested objects come after them).
    pub fn call(body: &[u8]) -> Self {
        Self {
            call_id: string_field(body, b"callId").map(str::to_owned),
            from_webhook: string_field(body, b"source") == Some("webhook"),
        }
    }
}

/// The value of the first `"key":"value"` in `body` (values here hold no escapes).
pub fn string_field<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let mut pattern = Vec::with_capacity(key.len() + 4);
    pattern.extend_from_slice(b"\"");
    pattern.extend_from_slice(key);
    pattern.extend_from_slice(b"\":\"");
    let start = body
        .windows(pattern.len())
        .position(|w| w == pattern.as_slice())?
        + pattern.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[start..start + len]).ok()
}

/// How each connection paces its requests.
#[derive(Clone, Copy)]
pub enum Pace {
    /// Send the next request as soon as the answer is in.
    Closed,
    /// Requests fall due at `rate` a second, in batches one millisecond apart (request i in
    /// the first batch at or after start + i / rate); latency counts from its batch's time,
    /// so a slow answer delaying the next send is charged to the server (coordinated
    /// omission).
    Open { rate: f64 },
}

/// Runs `conns` connections for `duration` (or until `limit` requests), numbering requests
/// from `first`. `expect` is the status of a good answer; `keep` says what is kept of it.
#[allow(clippy::too_many_arguments)]
pub async fn drive(
    addr: SocketAddr,
    conns: usize,
    duration: Duration,
    limit: Option<u64>,
    first: u64,
    pace: Pace,
    expect: StatusCode,
    keep: Keep,
    make: MakeRequest,
) -> Stats {
    drive_over(
        &[addr],
        conns,
        duration,
        limit,
        first,
        pace,
        expect,
        keep,
        make,
    )
    .await
}

/// Like [`drive`], over several servers of one cluster: connection `k` goes to
/// `addrs[k % addrs.len()]`, so that a closed loop spreads its load as a round-robin proxy
/// would.
#[allow(clippy::too_many_arguments)]
pub async fn drive_over(
    addrs: &[SocketAddr],
    conns: usize,
    duration: Duration,
    limit: Option<u64>,
    first: u64,
    pace: Pace,
    expect: StatusCode,
    keep: Keep,
    make: MakeRequest,
) -> Stats {
    // Every connection is open before the clock starts: a sender keeps its connections,
    // and in the open loop the first requests would otherwise be charged for the handshakes
    // of hundreds of connections opening at once (half of the first 50 ms over 10 ms).
    let opened = futures_util::future::join_all((0..conns).map(|k| async move {
        (
            addrs[k % addrs.len()],
            Conn::open(addrs[k % addrs.len()]).await,
        )
    }))
    .await;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + duration;
    let permits = match pace {
        Pace::Open { rate } => Some(pacer(start, end, rate, conns)),
        Pace::Closed => None,
    };
    let mut tasks = Vec::with_capacity(conns);
    for (addr, conn) in opened {
        let (next, make, permits) = (next.clone(), make.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = Tally::default();
            let Ok(mut conn) = conn else {
                stats.errors += 1;
                return (stats, None);
            };
            loop {
                // Open loop: a permit for each request that has fallen due. The number is
                // taken after the permit, so request n is never sent before its time.
                if let Some(p) = &permits {
                    match p.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if limit.is_some_and(|l| n >= l) {
                    break;
                }
                let due = match pace {
                    Pace::Closed => Instant::now(),
                    Pace::Open { rate } => start + BATCH * batch_of(n, rate) as u32,
                };
                if due >= end {
                    break;
                }
                let mut late = 0;
                if let Pace::Open { .. } = pace {
                    late = micros(due.elapsed());
                    stats.delays.push(late);
                }
                let i = first + n;
                match conn.send(make(i)).await {
                    Ok((status, body)) => {
                        let latency = micros(due.elapsed());
                        stats.latencies.push(latency);
                        if let Pace::Open { .. } = pace {
                            stats.trace.push((
                                due.duration_since(start).as_micros() as u32,
                                latency,
                                late,
                            ));
                        }
                        if status == expect {
                            stats.ok += 1;
                            match keep {
                                Keep::Nothing => {}
                                Keep::Number => stats.kept.push((i, Kept::default())),
                                Keep::Call => stats.kept.push((i, Kept::call(&body))),
                            }
                        } else {
                            stats.refused += 1;
                        }
                    }
                    Err(_) => {
                        stats.errors += 1;
                        match Conn::open(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => return (stats, None),
                        }
                    }
                }
            }
            // The connection is kept until every task is done: closing it now would make
            // the server handle a wave of closes while other requests are still in flight.
            (stats, Some(conn))
        }));
    }
    let finished = futures_util::future::join_all(tasks).await;
    let elapsed = start.elapsed();
    // Merged once all answers are in, so that merging takes no CPU from the last requests.
    let mut total = Stats::new();
    total.connections = conns;
    let mut conns = Vec::with_capacity(finished.len());
    for (stats, conn) in finished.into_iter().map(|t| t.expect("load task")) {
        total.absorb(stats);
        conns.extend(conn);
    }
    drop(conns);
    total.elapsed = elapsed;
    total
}

/// Open loop: requests fall due in batches, one batch each `BATCH`.
const BATCH: Duration = Duration::from_millis(1);

/// The batch in which request `n` falls due at `rate` a second.
fn batch_of(n: u64, rate: f64) -> u64 {
    (n as f64 / rate / BATCH.as_secs_f64()).ceil() as u64
}

/// Releases each batch's requests at its time, from a thread of its own on the kernel's
/// high-resolution timer; after the last batch, one more permit for each of the `senders`,
/// which each then draw a request due at or after `end` and stop. (Closing the semaphore
/// instead would refuse permits already released but not yet taken: requests due in the
/// last batch that no sender was free to take would never be sent, nor counted.)
///
/// Tokio's timers fire on a 1 ms wheel and its park rounds up again, so requests each
/// due at their own instant within a millisecond left together, up to 1-2 ms after it:
/// 0.9 ms late at the median, lateness the open loop charged to the server. The server
/// saw millisecond batches all the same; now the schedule says so, and the batches leave
/// within ~0.2 ms of their time (the generator's lateness is still charged).
fn pacer(start: Instant, end: Instant, rate: f64, senders: usize) -> Arc<tokio::sync::Semaphore> {
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    let released = permits.clone();
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            // SAFETY: prctl with PR_SET_TIMERSLACK only sets this thread's timer slack.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
            let mut due = 0u64;
            for batch in 0u32.. {
                let at = start + BATCH * batch;
                if at >= end {
                    released.add_permits(senders);
                    return;
                }
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                let before = due;
                while batch_of(due, rate) <= u64::from(batch) {
                    due += 1;
                }
                released.add_permits((due - before) as usize);
            }
        })
        .expect("pacer thread");
    permits
}

/// One HTTP/2 connection (prior knowledge, no TLS) carrying many requests at once.
#[derive(Clone)]
pub struct H2Conn {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
