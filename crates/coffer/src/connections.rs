//! The listener: HTTP/1 connections, each bounded before it can cost more
//! than a file descriptor.
//!
//! - A connection must send a whole request head within
//!   `header_read_timeout_ms`, the first and each next one on a keep-alive
//!   connection; a connection that moves no byte either way for
//!   `idle_timeout_ms` (a stalled body, a silent WebSocket) is closed.
//! - At most `connections_per_client` are open from one address; beyond,
//!   a new one is closed at once.
//! - At most `connections_total` are open. The last `connections_reserved`
//!   of them serve only `GET /healthz` and the operator: any other request
//!   on such a connection answers `429 limit-exceeded` and the connection
//!   closes. 429, not 503: the project answers every limit alike, naming it
//!   and counting it on `/metrics`, and the gateway itself is healthy.
//! - When every slot is taken, the newcomer takes the place of the oldest
//!   connection that has not yet sent a request head: half-open connections
//!   can then never lock out a client that speaks at once, such as a health
//!   check. With none to evict, the newcomer is closed at once.
//! - At shutdown the listener closes, every connection finishes the request
//!   it is serving and closes, for [`SHUTDOWN_GRACE_MS`] at most. A stream
//!   (an event stream answering a GET, an upgraded WebSocket) never
//!   finishes by itself: it is not waited for, and ends with the process
//!   (its client resumes from the last event id it saw).

use crate::error::Error;
use crate::limits::{Limit, Limits};
use axum::Router;
use axum::http::{HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, Ready, ready};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready as ready_poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Sleep};

/// The route that the reserved connections serve to anyone.
const HEALTH_PATH: &str = "/healthz";
/// What a request refused from the reserved room is told to wait.
const RESERVED_RETRY_AFTER_SECS: u64 = 1;
/// A failed accept (out of file descriptors, say) is retried after this
/// pause rather than in a busy loop.
const ACCEPT_ERROR_PAUSE_MS: u64 = 100;
/// At shutdown, open connections get this long to finish their requests.
pub const SHUTDOWN_GRACE_MS: u64 = 10_000;

/// Whether a bearer secret is the operator's: its requests may use the
/// reserved room.
pub type IsOperator = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then lets open connections finish their requests for a bounded time.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    is_operator: IsOperator,
    shutdown: impl Future<Output = ()>,
) {
    let admission = Arc::new(Admission::new(limits));
    let timeouts = Timeouts { header_read: limits.header_read_timeout(), idle: limits.idle_timeout() };
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let client = peer.ip().to_canonical();
        match admission.admit(client) {
            Ok(admitted) => {
                let connection = Connection {
                    app: app.clone(),
                    is_operator: Arc::clone(&is_operator),
                    timeouts,
                    stopping: stopping.clone(),
                };
                tokio::spawn(connection.run(stream, peer, admitted));
            }
            Err(limit) => {
                // Closed unread: answering would cost what the bound saves.
                crate::metrics::METRICS.record_limit_hit(limit);
                tracing::debug!(%client, limit = limit.name(), "connection refused");
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = admission.requests_drained();
    if tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), drained).await.is_err() {
        let (open, streams) = admission.open();
        tracing::warn!(open, streams, "connections still serving a request when the shutdown grace ended are dropped");
    }
}

#[derive(Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
}

/// Counts the open connections, in all and per client address.
struct Admission {
    total_max: u32,
    /// Beyond this many, a connection is in the reserved room.
    unreserved_max: u32,
    per_client_max: u32,
    open: Mutex<Open>,
    /// Signalled as each connection closes.
    closed: Notify,
}

#[derive(Default)]
struct Open {
    total: u32,
    /// Of `total`, those serving a stream (see [`is_stream`]).
    streams: u32,
    by_client: HashMap<IpAddr, u32>,
    /// Connections in the order they came, for eviction; entries whose
    /// connection closed or sent a head are dropped lazily.
    headless: VecDeque<Weak<Headless>>,
}

/// A connection until it sends its first request head.
#[derive(Default)]
struct Headless {
    head_seen: AtomicBool,
    evict: Notify,
}

/// A connection let in: its slot, whether it is in the reserved room, and
/// its eviction handle.
struct Admitted {
    slot: Slot,
    reserved: bool,
    headless: Arc<Headless>,
}

/// Whether a connection is serving a stream now; counted in
/// `Open::streams` while set (changed only under the admission's lock).
type StreamFlag = Arc<AtomicBool>;

impl Admission {
    fn new(limits: &Limits) -> Admission {
        Admission {
            total_max: limits.connections_total,
            unreserved_max: limits.connections_total.saturating_sub(limits.connections_reserved),
            per_client_max: limits.connections_per_client,
            open: Mutex::new(Open::default()),
            closed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Limit> {
        let mut open = self.lock();
        let from_client = open.by_client.get(&client).copied().unwrap_or(0);
        if from_client >= self.per_client_max {
            return Err(Limit::ConnectionsPerClient);
        }
        // An evicted connection still counts until its task drops it, a
        // moment later: the total may pass the bound by the evictions in
        // flight, never by a connection that is served.
        if open.total >= self.total_max && !open.evict_oldest_headless() {
            return Err(Limit::ConnectionsTotal);
        }
        open.total = open.total.saturating_add(1);
        open.by_client.insert(client, from_client.saturating_add(1));
        let headless = Arc::new(Headless::default());
        open.headless.push_back(Arc::downgrade(&headless));
        if open.headless.len() > self.total_max as usize {
            open.headless.retain(|h| h.upgrade().is_some_and(|h| !h.head_seen.load(Ordering::Relaxed)));
        }
        let reserved = open.total > self.unreserved_max;
        let slot = Slot { admission: Arc::clone(self), client, stream: StreamFlag::default() };
        Ok(Admitted { slot, reserved, headless })
    }

    fn release(&self, client: IpAddr, stream: &AtomicBool) {
        let mut open = self.lock();
        if stream.swap(false, Ordering::Relaxed) {
            open.streams = open.streams.saturating_sub(1);
        }
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_client.remove(&client);
            }
        }
        drop(open);
        self.closed.notify_waiters();
    }

    /// Marks a connection as serving a stream, or no longer.
    fn mark_stream(&self, stream: &AtomicBool, on: bool) {
        let mut open = self.lock();
        if stream.swap(on, Ordering::Relaxed) == on {
            return;
        }
        open.streams = if on { open.streams.saturating_add(1) } else { open.streams.saturating_sub(1) };
        drop(open);
        self.closed.notify_waiters();
    }

    /// The open connections, and how many of them serve a stream.
    fn open(&self) -> (u32, u32) {
        let open = self.lock();
        (open.total, open.streams)
    }

    /// Completes once every open connection, if any, serves a stream: no
    /// request is left to finish.
    async fn requests_drained(&self) {
        loop {
            let changed = self.closed.notified();
            let (total, streams) = self.open();
            if total <= streams {
                return;
            }
            changed.await;
        }
    }
}

impl Open {
    /// Tells the oldest connection that has sent no request head to close;
    /// answers whether there was one.
    fn evict_oldest_headless(&mut self) -> bool {
        while let Some(oldest) = self.headless.pop_front() {
            if let Some(h) = oldest.upgrade().filter(|h| !h.head_seen.load(Ordering::Relaxed)) {
                h.evict.notify_one();
                return true;
            }
        }
        false
    }
}

/// A connection's place in the count, given back when dropped. It lives
/// in the connection's I/O, so an upgraded connection (a WebSocket) keeps
/// it until the socket closes.
struct Slot {
    admission: Arc<Admission>,
    client: IpAddr,
    stream: StreamFlag,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release(self.client, &self.stream);
    }
}

/// What each connection task needs besides its socket.
struct Connection {
    app: Router,
    is_operator: IsOperator,
    timeouts: Timeouts,
    stopping: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, peer: std::net::SocketAddr, admitted: Admitted) {
        let Admitted { slot, reserved, headless } = admitted;
        let (admission, streaming) = (Arc::clone(&slot.admission), Arc::clone(&slot.stream));
        let io = TokioIo::new(Watched::new(stream, self.timeouts.idle, slot));
        let service = RoomService {
            app: TowerToHyperService::new(self.app),
            reserved: reserved.then_some(self.is_operator),
            headless: Arc::clone(&headless),
            peer,
            admission,
            streaming,
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.timeouts.header_read);
        let mut conn = std::pin::pin!(builder.serve_connection(io, service).with_upgrades());
        let mut shutting_down = false;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "connection ended");
                    }
                    return;
                }
                () = headless.evict.notified() => {
                    // A head that came meanwhile wins: the request is served.
                    if !headless.head_seen.load(Ordering::Relaxed) {
                        return;
                    }
                }
                stopped = self.stopping.wait_for(|stop| *stop), if !shutting_down => {
                    shutting_down = true;
                    if stopped.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// The router, behind the reserved room's rule when the connection is in
/// it (`reserved` then holds the operator check).
struct RoomService {
    app: TowerToHyperService<Router>,
    reserved: Option<IsOperator>,
    headless: Arc<Headless>,
    /// The client's address, for handlers that bound per client (the
    /// paywalls' challenges), as axum's `ConnectInfo`.
    peer: std::net::SocketAddr,
    admission: Arc<Admission>,
    /// Set while the connection serves a stream, which shutdown does not
    /// wait for.
    streaming: StreamFlag,
}

type Routed = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for RoomService {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, Routed>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.headless.head_seen.store(true, Ordering::Relaxed);
        // A next request on the connection: a stream it served has ended.
        if self.streaming.load(Ordering::Relaxed) {
            self.admission.mark_stream(&self.streaming, false);
        }
        request.extensions_mut().insert(axum::extract::ConnectInfo(self.peer));
        match &self.reserved {
            Some(is_operator) if !may_use_reserve(&request, is_operator.as_ref()) => Either::Left(ready(Ok(refusal()))),
            _ => {
                let get = request.method() == axum::http::Method::GET;
                let routed = hyper::service::Service::call(&self.app, request);
                let (admission, streaming) = (Arc::clone(&self.admission), Arc::clone(&self.streaming));
                Either::Right(Box::pin(async move {
                    let response = routed.await?;
                    if is_stream(get, &response) {
                        admission.mark_stream(&streaming, true);
                    }
                    Ok(response)
                }))
            }
        }
    }
}

/// Whether an answer is a stream that lasts as long as its client listens:
/// an upgrade (a WebSocket), or an event stream answering a GET (the
/// events, a room, MCP's notifications). An event stream answering a POST
/// (an MCP call) carries that call's answer and then ends: it is a request.
fn is_stream(get: bool, response: &Response) -> bool {
    response.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS
        || (get
            && response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream")))
}

fn may_use_reserve(request: &Request<Incoming>, is_operator: &(dyn Fn(&str) -> bool + Send + Sync)) -> bool {
    request.uri().path() == HEALTH_PATH
        || crate::http::extract::bearer_secret(request.headers()).is_some_and(is_operator)
}

/// `429 limit-exceeded` for `connections_total`, and the connection closes.
fn refusal() -> Response {
    let detail = "every connection but those kept for the operator and /healthz is taken";
    let mut response = Error::limit(Limit::ConnectionsTotal, RESERVED_RETRY_AFTER_SECS, detail).into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A socket that fails once no byte has moved either way for the idle
/// timeout, and that holds the connection's slot.
struct Watched {
    stream: TcpStream,
    idle_timeout: Duration,
    last_active: Instant,
    idle: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl Watched {
    fn new(stream: TcpStream, idle_timeout: Duration, slot: Slot) -> Watched {
        let now = Instant::now();
        let idle = Box::pin(tokio::time::sleep_until(now + idle_timeout));
        Watched { stream, idle_timeout, last_active: now, idle, _slot: slot }
    }

    /// Called when the socket is not ready: pending until the idle deadline,
    /// which moves with each byte that did.
    fn poll_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        loop {
            let deadline = self.last_active + self.idle_timeout;
            if self.idle.deadline() != deadline {
                self.idle.as_mut().reset(deadline);
            }
            ready_poll!(self.idle.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle")));
            }
        }
    }

    fn progressed<T>(&mut self, polled: Poll<io::Result<T>>, moved: bool, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.poll_idle(cx),
            ready => {
                if moved {
                    self.last_active = Instant::now();
                }
                ready
            }
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let moved = buf.filled().len() > before;
        this.progressed(polled, moved, cx)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        this.progressed(polled, moved, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        this.progressed(polled, moved, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
