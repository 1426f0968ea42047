//! Serving connections: HTTP/1.1 and HTTP/2 (h2c) on one port, with the reading of every
//! request timed, and graceful shutdown.
//!
//! `axum::serve` reads requests for as long as a client cares to trickle them, so a few
//! hundred slow sockets would hold the server's connections and memory. Here:
//!
//! * a request's headers must arrive within the header timeout (counted from the connection's
//!   start, or from the previous answer on a kept-alive connection); a client cut off in the
//!   middle of a request gets a `408` problem, an idle connection is simply closed;
//! * a request's body must arrive within the body timeout of its headers: reading it fails
//!   with [`BodyTimeout`], which the body readers answer with a `408` problem.
//!
//! Producing an answer is never timed: a call legitimately waits for its webhook data.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
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
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::error::{ApiProblem, ProblemKind};

/// How long a client has to send a request's parts.
#[derive(Debug, Clone, Copy)]
pub struct ReadTimeouts {
    /// For the request line and headers.
    pub header: Duration,
    /// For the body, from the moment the headers have arrived.
    pub body: Duration,
}

/// Accepts connections on `listener` until `signal` resolves, then stops accepting, lets every
/// connection finish its in-flight requests, and returns when the last one has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: ReadTimeouts,
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

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
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
            stop_tx.clone(),
            open_rx.clone(),
        ));
    }
    drop(open_rx);
    drop(listener);
    open_tx.closed().await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What a connection's parts tell each other.
#[derive(Default)]
struct ConnState {
    /// Bytes arrived since the last bytes were written: a request is being read.
    unanswered: AtomicBool,
    /// A request's headers have arrived at least once.
    served: AtomicBool,
    /// The socket, handed back when hyper lets go of it, to answer 408 on.
    returned: Mutex<Option<TcpStream>>,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    builder: Arc<Builder<TokioExecutor>>,
    timeouts: ReadTimeouts,
    stop: watch::Sender<()>,
    open: watch::Receiver<()>,
) {
    let state = Arc::new(ConnState::default());
    let io = TokioIo::new(Watched {
        stream: Some(stream),
        state: state.clone(),
    });
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            state.served.store(true, Ordering::Relaxed);
            let mut req = req.map(|body| Body::new(TimedBody::new(body, timeouts.body)));
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(req)
        })
    };

    let timed_out = {
        let mut conn = pin!(builder.serve_connection(io, service));
        // Before hyper knows the protocol (it waits for the first bytes to tell HTTP/1.1
        // from HTTP/2), its own header timeout is not running: this one covers that time.
        let mut first_request = pin!(tokio::time::sleep(timeouts.header));
        let mut stopping = pin!(stop.closed());
        let mut first_request_due = true;
        let mut stop_requested = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => break result.is_err_and(|e| is_header_timeout(&*e)),
                _ = &mut first_request, if first_request_due => {
                    if !state.served.load(Ordering::Relaxed) {
                        break true;
                    }
                    first_request_due = false;
                }
                _ = &mut stopping, if !stop_requested => {
                    stop_requested = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    };
    // hyper has let go of the socket (dropping `conn` handed it back).
    let stream = state.returned.lock().expect("socket lock").take();
    if let Some(stream) = stream
        && timed_out
        && state.unanswered.load(Ordering::Relaxed)
    {
        answer_request_timeout(stream, timeouts.header).await;
    }
    drop(open);
}

fn is_header_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}

/// Tells a client cut off in the middle of a request's headers why, then closes.
async fn answer_request_timeout(mut stream: TcpStream, after: Duration) {
    let problem = ApiProblem::new(
        ProblemKind::RequestTimeout,
        format!(
            "the request's headers did not arrive within {}",
            describe(after)
        ),
    )
    .body()
    .to_string();
    let head = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        problem.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(problem.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client still sends until it closes, so that closing does not
        // reset the connection before the answer is read.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
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

/// The connection's socket, noting when bytes come and go, handed back when dropped.
struct Watched {
    stream: Option<TcpStream>,
    state: Arc<ConnState>,
}

impl Watched {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("socket present until dropped"))
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
        let n = ready!(self.stream().poll_write(cx, buf))?;
        if n > 0 {
            self.state.unanswered.store(false, Ordering::Relaxed);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(self.stream().poll_write_vectored(cx, bufs))?;
        if n > 0 {
            self.state.unanswered.store(false, Ordering::Relaxed);
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
struct TimedBody {
    inner: Incoming,
    limit: Duration,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: Instant::now() + limit,
            timer: None,
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
