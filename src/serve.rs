//! Serving connections: HTTP/1.1 and HTTP/2 (h2c) on one port, with the reading of every
//! request timed, the number of connections capped, and graceful shutdown.
//!
//! `axum::serve` reads requests for as long as a client cares to trickle them and keeps idle
//! connections for ever, so a few thousand sockets would hold the server's file descriptors
//! and memory. Here:
//!
//! * a connection with no request in flight must deliver a request's headers within the
//!   header timeout (counted from the connection's start, or from its last answer), whatever
//!   the protocol: an HTTP/1.1 client cut off in the middle of a request gets a `408` problem,
//!   an idle HTTP/1.1 connection is simply closed, an HTTP/2 one is sent GOAWAY and closed
//!   (which also cuts off a half-sent HEADERS frame);
//! * a request's body must arrive within the body timeout of its headers: reading it fails
//!   with [`BodyTimeout`], which the body readers answer with a `408` problem;
//! * a request's line and headers may take at most `max_header_bytes`: HTTP/1.1 gets a `431`
//!   problem, HTTP/2 a bare `431` on the stream (or GOAWAY when far over);
//! * at most `max_connections` are served at once: the next ones wait in the listen queue,
//!   and connections idle for a second are closed to make room for them;
//! * an HTTP/1.1 request answered before its body was read to the end (refused as too large,
//!   too slow, or without needing it) is answered `Connection: close`, and the connection is
//!   closed only once the client has sent the rest, up to [`LINGER_BYTES`] within
//!   [`LINGER_TIME`]: see [`linger`].
//!
//! Producing an answer is never timed: a call legitimately waits for its webhook data, and a
//! connection with a request in flight is never closed for being idle or to make room.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use prometheus_client::metrics::gauge::Gauge;

use crate::error::{ApiProblem, ProblemKind};
use crate::metrics::OpenConnection;

/// How long a client has to send a request's parts.
#[derive(Debug, Clone, Copy)]
pub struct ReadTimeouts {
    /// For the request line and headers, and for a connection to start a request at all.
    pub header: Duration,
    /// For the body, from the moment the headers have arrived.
    pub body: Duration,
}

/// How many connections, and how large a request's headers.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Largest request line and headers, in bytes (at least 8 KiB).
    pub max_header_bytes: usize,
}

/// File descriptors kept back from connections: the database's (its pools, write-ahead log
/// and shared memory, the ingest journal), the listener, the runtime's, and a margin.
const RESERVED_FILES: u64 = 256;

/// The default cap on connections: the open-file limit less [`RESERVED_FILES`] (half of the
/// limit when that is below 512), so that a flood of connections fills the cap, never the
/// file table (where `accept` would fail and the database could not open a file).
pub fn default_max_connections() -> usize {
    let limit = open_file_limit();
    let n = limit.saturating_sub(RESERVED_FILES).max(limit / 2).max(1);
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(unix)]
fn open_file_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
}

#[cfg(not(unix))]
fn open_file_limit() -> u64 {
    1024
}

/// A connection idle this long is closed when others wait for room.
const MAKE_ROOM_AFTER: Duration = Duration::from_secs(1);

/// An idle connection told to close (HTTP/2 GOAWAY) is dropped if the client has not closed
/// it after this long.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// After an answer that left part of its request unread, what arrives of the rest is read
/// and dropped ([`linger`]) for at most this long,
const LINGER_TIME: Duration = Duration::from_secs(5);
/// up to this much of it (as much as a management document may be),
const LINGER_BYTES: usize = 4 << 20;
/// and only while the client keeps sending: a pause this long ends it.
const LINGER_IDLE: Duration = Duration::from_secs(2);

/// Accepts connections on `listener` until `signal` resolves, then stops accepting, lets every
/// connection finish its in-flight requests, and returns when the last one has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: ReadTimeouts,
    limits: ConnectionLimits,
    open_connections: Gauge,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    // Connections hold a receiver of `stop_rx`'s channel; dropping it tells them to finish.
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::spawn(async move {
        signal.await;
        drop(stop_rx);
    });
    // Every connection holds a clone of `open_rx`: when all are gone, all have closed.
    let (open_tx, open_rx) = watch::channel(());
    // True while a connection waits for room: idle connections then close.
    let (crowded, _) = watch::channel(false);

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // None, not hyper's default of 30 s: hyper would make, register and drop a timer
        // per request. Each connection's own timer below ends a request whose headers are
        // late (`Ending::TimedOut`, 408) by moving one deadline forward.
        .header_read_timeout(None)
        // Headers are parsed from this buffer: past it, hyper answers 431 (made a problem
        // by `Watched`). It also bounds what one read of a body buffers.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);

    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    tracing::info!(max_connections, "accepting connections");
    let room = Arc::new(Semaphore::new(max_connections));
    let mut warned_full: Option<Instant> = None;
    let peak = Arc::new(AtomicUsize::new(0));
    let trimmer = spawn_trimmer(room.clone(), max_connections, peak.clone());

    loop {
        // Room is taken before accepting: beyond the cap, connections wait in the listen
        // queue (the kernel's), costing the server nothing.
        let permit = match room.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if warned_full.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(
                        max_connections,
                        "connection cap reached; new connections wait for room"
                    );
                    warned_full = Some(Instant::now());
                }
                crowded.send_replace(true);
                let permit = tokio::select! {
                    permit = room.clone().acquire_owned() => permit.expect("never closed"),
                    _ = stop_tx.closed() => break,
                };
                crowded.send_replace(false);
                permit
            }
        };
        peak.fetch_max(
            max_connections - room.available_permits(),
            Ordering::Relaxed,
        );
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors (another part of the process holds them):
                    // wait for some to close.
                    tracing::warn!(error = %e, "accept failed; retrying in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = stop_tx.closed() => break,
        };
        tokio::spawn(connection(
            stream,
            peer,
            router.clone(),
            builder.clone(),
            timeouts,
            limits.max_header_bytes,
            Held {
                stop: stop_tx.clone(),
                crowded: crowded.subscribe(),
                _open: open_rx.clone(),
                _room: permit,
                _counted: OpenConnection::new(&open_connections),
            },
        ));
    }
    drop(open_rx);
    drop(listener);
    open_tx.closed().await;
    trimmer.abort();
}

/// Connections that must have closed since their peak (and at least half of them) before
/// memory is given back.
const TRIM_AFTER_CLOSED: usize = 256;

/// Gives the memory of a crowd of connections back to the system once it has gone. glibc
/// keeps what they freed for later: 1 000 connections flooding the server with oversized
/// headers left it at 48 MiB instead of 20 until `malloc_trim`. Trimming briefly holds up
/// allocations, so it is done only after such a crowd, at most every few seconds.
fn spawn_trimmer(
    room: Arc<Semaphore>,
    max_connections: usize,
    peak: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let open = max_connections - room.available_permits();
            let most = peak.load(Ordering::Relaxed);
            if most >= open + TRIM_AFTER_CLOSED && open <= most / 2 {
                peak.store(open, Ordering::Relaxed);
                let _ = tokio::task::spawn_blocking(give_back_memory).await;
            }
        }
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back_memory() {
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; glibc
    // makes it safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
    tracing::debug!(
        took_us = started.elapsed().as_micros() as u64,
        "memory given back"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_memory() {}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What a connection holds of the server's, until it closes.
struct Held {
    /// Closed when the server stops.
    stop: watch::Sender<()>,
    /// True while another connection waits for room.
    crowded: watch::Receiver<bool>,
    /// Tells the server this connection is still open.
    _open: watch::Receiver<()>,
    /// Its place under the connection cap.
    _room: OwnedSemaphorePermit,
    /// Counts it in `precall_open_connections` while it is open.
    _counted: OpenConnection,
}

/// What a connection's parts tell each other.
struct ConnState {
    /// Bytes arrived since the last bytes were written: a request is being read.
    unanswered: AtomicBool,
    /// The client opened with the HTTP/2 preface.
    h2: AtomicBool,
    /// hyper answered 431 (its bare answer was held back, to send a problem instead).
    too_large: AtomicBool,
    /// Requests whose answer is not yet fully handed to hyper.
    in_flight: AtomicUsize,
    /// When the connection last became idle (or started).
    idle_since: Mutex<Instant>,
    /// Woken when the connection becomes idle.
    went_idle: Notify,
    /// The start of the connection, for the times below.
    born: Instant,
    /// Milliseconds after `born` (plus one) since which a write has been waiting for the
    /// client to read; 0 when none waits.
    blocked_since: AtomicU64,
    /// Answers with a part ready that hyper has not taken yet (the client's flow-control
    /// window is shut, or it does not read), with the time that part became ready.
    waiting: Mutex<Vec<(u64, Instant)>>,
    /// Numbers the answers of the connection.
    answers: AtomicU64,
    /// An HTTP/1.1 request's body was dropped before its end: its answer closes the
    /// connection, and what the client still sends is read before closing.
    left_unread: AtomicBool,
    /// The socket, handed back when hyper lets go of it, to answer 408 or 431 on.
    returned: Mutex<Option<TcpStream>>,
}

impl ConnState {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            unanswered: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            too_large: AtomicBool::new(false),
            left_unread: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(now),
            went_idle: Notify::new(),
            born: now,
            blocked_since: AtomicU64::new(0),
            waiting: Mutex::new(Vec::new()),
            answers: AtomicU64::new(0),
            returned: Mutex::new(None),
        }
    }

    /// No request in flight, nothing left to write.
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.blocked_since.load(Ordering::Acquire) == 0
    }

    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().expect("idle lock")
    }

    /// Called when what kept the connection busy is done.
    fn maybe_idle(&self) {
        if self.is_idle() {
            if let Ok(mut since) = self.idle_since.lock() {
                *since = Instant::now();
            }
            self.went_idle.notify_one();
        }
    }

    fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// An HTTP/1.1 request's body was left unread (see [`ConnState::left_unread`]).
    fn left_unread(&self) -> bool {
        !self.is_h2() && self.left_unread.load(Ordering::Relaxed)
    }

    /// An HTTP/1.1 request is partly read.
    fn mid_request(&self) -> bool {
        !self.is_h2() && self.unanswered.load(Ordering::Relaxed)
    }

    fn write_blocked(&self) {
        let since = self.born.elapsed().as_millis() as u64 + 1;
        let _ = self
            .blocked_since
            .compare_exchange(0, since, Ordering::AcqRel, Ordering::Relaxed);
    }

    fn wrote(&self) {
        if self.blocked_since.load(Ordering::Relaxed) != 0 {
            self.blocked_since.store(0, Ordering::Release);
            self.maybe_idle();
        }
    }

    /// Since when the client has taken nothing that the server has ready for it.
    fn stalled_since(&self) -> Option<Instant> {
        let blocked = match self.blocked_since.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.born + Duration::from_millis(ms - 1)),
        };
        let waiting = self
            .waiting
            .lock()
            .expect("waiting lock")
            .iter()
            .map(|&(_, since)| since)
            .min();
        blocked.into_iter().chain(waiting).min()
    }

    /// Answer `id` has a part ready for hyper to take (`Some`), or not (`None`).
    fn answer_ready(&self, id: u64, since: Option<Instant>) {
        let mut waiting = self.waiting.lock().expect("waiting lock");
        let at = waiting.iter().position(|&(i, _)| i == id);
        match (at, since) {
            (Some(at), Some(since)) => waiting[at].1 = since,
            (None, Some(since)) => waiting.push((id, since)),
            (Some(at), None) => {
                waiting.swap_remove(at);
            }
            (None, None) => {}
        }
    }
}

/// A request in flight on its connection, from its headers until its answer's body is done.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: &Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.maybe_idle();
        }
    }
}

/// An answer's body, keeping its request in flight until hyper is done with it, and noting
/// when a part of it waits for hyper (that is, for the client) to take it.
struct Answer {
    body: Body,
    id: u64,
    in_flight: InFlight,
}

impl Answer {
    fn new(body: Body, in_flight: InFlight) -> Self {
        let state = &in_flight.0;
        let id = state.answers.fetch_add(1, Ordering::Relaxed);
        // Its head is ready: until hyper first asks for the body, the client holds it up.
        state.answer_ready(id, Some(Instant::now()));
        Self {
            body,
            id,
            in_flight,
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.in_flight.0.answer_ready(self.id, None);
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let ready = matches!(polled, Poll::Ready(Some(Ok(_)))).then(Instant::now);
        self.in_flight.0.answer_ready(self.id, ready);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why a connection ended.
#[derive(PartialEq, Eq)]
enum Ending {
    /// Closed by either side, or idle.
    Closed,
    /// No complete request within the header timeout.
    TimedOut,
    /// hyper gave up on the connection (a request it could not parse, say).
    Failed,
    /// The client took none of an answer in time.
    Stalled,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    builder: Arc<Builder<TokioExecutor>>,
    timeouts: ReadTimeouts,
    max_header_bytes: usize,
    held: Held,
) {
    let Held {
        stop,
        mut crowded,
        _open: open,
        _room: room,
        _counted: counted,
    } = held;
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Watched {
        stream: Some(stream),
        state: state.clone(),
        preface: 0,
    });
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(&state);
            let mut req =
                req.map(|body| Body::new(TimedBody::new(body, timeouts.body, state.clone())));
            req.extensions_mut().insert(ConnectInfo(peer));
            let answer = router.clone().call(req);
            let state = state.clone();
            async move {
                let mut res = answer.await?;
                // Left unread, the rest of the body would be taken for the next request:
                // hyper closes after this answer, which the client must know before it
                // reuses the connection.
                if state.left_unread() {
                    res.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(res.map(|body| Answer::new(body, in_flight)))
            }
        })
    };

    let ending = {
        let mut conn = pin!(builder.serve_connection(io, service));
        let mut stopping = pin!(stop.closed());
        let mut stop_requested = false;
        // When the connection was told to close (GOAWAY on HTTP/2).
        let mut closing: Option<Instant> = None;
        let mut watching_crowd = true;
        // One timer, set to whatever falls due next (one per connection is lighter on
        // memory and on the timer wheel than one per rule).
        let mut timer = pin!(tokio::time::sleep_until(Instant::now() + timeouts.header));
        loop {
            let now = Instant::now();
            let idle = state.is_idle();
            let idle_since = state.idle_since();
            let crowded_now = *crowded.borrow();
            // Idle, and not in the middle of reading an HTTP/1.1 request (that one is left
            // to its header timeout).
            let may_make_room = idle && closing.is_none() && !state.mid_request();
            let due = match closing {
                // Busy: check that the client takes its answers (looked at again every body
                // timeout, as parts of answers come and go without waking this loop).
                _ if !idle => state.stalled_since().unwrap_or(now) + timeouts.body,
                Some(told) => told.max(idle_since) + CLOSE_GRACE,
                None if may_make_room && crowded_now => {
                    idle_since + MAKE_ROOM_AFTER.min(timeouts.header)
                }
                None => idle_since + timeouts.header,
            };
            if due <= now {
                if !idle {
                    tracing::debug!(%peer, "the client took none of its answer in time; closing");
                    break Ending::Stalled;
                }
                if !state.is_idle() {
                    continue;
                }
                if closing.is_some() {
                    break Ending::Closed;
                }
                let timed_out = idle_since + timeouts.header <= now;
                if !state.is_h2() {
                    break if timed_out {
                        Ending::TimedOut
                    } else {
                        Ending::Closed
                    };
                }
                conn.as_mut().graceful_shutdown();
                closing = Some(now);
                continue;
            }
            timer.as_mut().reset(due);
            tokio::select! {
                result = conn.as_mut() => {
                    break match result {
                        Ok(()) => Ending::Closed,
                        Err(e) if is_header_timeout(&*e) => Ending::TimedOut,
                        Err(_) => Ending::Failed,
                    };
                }
                () = state.went_idle.notified() => {}
                watched = crowded.wait_for(|crowded| *crowded),
                    if watching_crowd && may_make_room && !crowded_now =>
                {
                    watching_crowd = watched.is_ok();
                }
                () = &mut timer => {}
                _ = &mut stopping, if !stop_requested => {
                    stop_requested = true;
                    conn.as_mut().graceful_shutdown();
                    closing.get_or_insert(now);
                }
            }
        }
    };
    // hyper has let go of the socket (dropping `conn` handed it back).
    let stream = state.returned.lock().expect("socket lock").take();
    if let Some(stream) = stream {
        if state.too_large.load(Ordering::Relaxed) {
            let problem = ApiProblem::new(
                ProblemKind::HeadersTooLarge,
                format!(
                    "the request line and headers are larger than {}",
                    describe_bytes(max_header_bytes)
                ),
            );
            answer_and_close(stream, problem).await;
        } else if ending == Ending::TimedOut && state.mid_request() {
            let problem = ApiProblem::new(
                ProblemKind::RequestTimeout,
                format!(
                    "the request's headers did not arrive within {}",
                    describe(timeouts.header)
                ),
            );
            answer_and_close(stream, problem).await;
        } else if !state.is_h2()
            && (state.left_unread() || ending == Ending::Failed)
            && ending != Ending::Stalled
        {
            linger(stream).await;
        }
    }
    drop((open, room, counted));
}

fn is_header_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}

/// Answers a request that hyper gave up on (its headers too slow or too large) with a
/// problem, then closes.
async fn answer_and_close(mut stream: TcpStream, problem: ApiProblem) {
    let status = problem.kind.status();
    let body = problem.body().to_string();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    let written = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        linger(stream).await;
    }
}

/// Closes a connection whose client may still be sending (the rest of a body the server
/// did not read, or of headers it gave up on): says so (FIN), then reads and drops what
/// arrives until the client closes, pauses, or passes the bounds, and only then closes.
///
/// Closing a socket with unread bytes makes the system send RST instead of FIN, and a
/// client that receives RST may lose the answer it has not read yet (its own stack
/// discards it, or the answer still waiting in the server's send buffer is dropped), or
/// fail its request while still writing the body: it sees "connection reset" instead of
/// the 413 or 408 it was sent. RFC 9112 §9.6 asks servers to close in these stages.
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIME;
    let mut left = LINGER_BYTES;
    // On the heap, and only while lingering: a connection's future does not carry it.
    let mut sink = vec![0u8; 4096];
    loop {
        let until = deadline.min(Instant::now() + LINGER_IDLE);
        match tokio::time::timeout_at(until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 && n < left => left -= n,
            _ => return,
        }
    }
}

/// `10 s`, `1.5 s`, `300 ms`.
pub fn describe(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// `16 KiB`, `10000 bytes`.
fn describe_bytes(n: usize) -> String {
    if n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

/// What a client sends first on an HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The connection's socket, noting when bytes come and go and which protocol they speak,
/// handed back when dropped.
struct Watched {
    stream: Option<TcpStream>,
    state: Arc<ConnState>,
    /// How much of [`H2_PREFACE`] the first bytes matched (`usize::MAX`: they did not).
    preface: usize,
}

impl Watched {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("socket present until dropped"))
    }

    fn sniff(&mut self, read: &[u8]) {
        for &byte in read {
            if self.preface >= H2_PREFACE.len() {
                return;
            }
            if byte != H2_PREFACE[self.preface] {
                self.preface = usize::MAX;
                return;
            }
            self.preface += 1;
            if self.preface == H2_PREFACE.len() {
                self.state.h2.store(true, Ordering::Relaxed);
            }
        }
    }

    fn note(&self, written: &Poll<io::Result<usize>>) {
        match written {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.state.unanswered.store(false, Ordering::Relaxed);
                self.state.wrote();
            }
            Poll::Pending => self.state.write_blocked(),
            _ => {}
        }
    }

    /// Whether to hold back a write: hyper's own bare 431 (the first bytes of an answer to
    /// an HTTP/1.1 request, which the application never answers 431), and all after it, as
    /// the connection then closes and gets a problem instead.
    fn holds_back(&self, first: &[u8]) -> bool {
        let state = &self.state;
        if state.too_large.load(Ordering::Relaxed) {
            return true;
        }
        if state.mid_request() && first.starts_with(b"HTTP/1.1 431 ") {
            state.too_large.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.state.returned.lock() {
            *slot = self.stream.take();
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(self.stream().poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.state.unanswered.store(true, Ordering::Relaxed);
            if self.preface < H2_PREFACE.len() {
                self.sniff(&buf.filled()[before..]);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.holds_back(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        let written = self.stream().poll_write(cx, buf);
        self.note(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if self.holds_back(first) {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        let written = self.stream().poll_write_vectored(cx, bufs);
        self.note(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.too_large.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Once 431 is due, the socket stays open for the problem written after hyper.
        if self.state.too_large.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        self.stream().poll_shutdown(cx)
    }
}

/// Reading a request body took longer than the body timeout.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request's body did not arrive within {}",
            describe(self.0)
        )
    }
}

impl std::error::Error for BodyTimeout {}

/// The body as it arrives, failing with [`BodyTimeout`] once its deadline has passed. The
/// timer is only armed when the body is not already there, so small bodies cost nothing.
/// Dropped before its end, it tells its connection (which then closes after the answer).
struct TimedBody {
    inner: Incoming,
    limit: Duration,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    /// Read to its end.
    ended: bool,
    conn: Arc<ConnState>,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration, conn: Arc<ConnState>) -> Self {
        Self {
            inner,
            limit,
            deadline: Instant::now() + limit,
            timer: None,
            ended: false,
            conn,
        }
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        if !self.ended && !http_body::Body::is_end_stream(&self.inner) {
            self.conn.left_unread.store(true, Ordering::Relaxed);
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.ended |= frame.is_none();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
