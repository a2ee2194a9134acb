//! The HTTP/1 server loop: what a client connection may cost.
//!
//! `axum::serve` keeps a connection open for as long as the client likes: one that sends
//! nothing, half a request line or a body slower than its `Content-Length` is never closed,
//! and each holds a file descriptor and buffers (measured: 8,000 such connections took the
//! edge from 7 MB to ~200 MB). So the edge runs its own accept loop over hyper, and tracks
//! each connection's phase:
//!
//! | phase | from | closed when it lasts longer than |
//! |---|---|---|
//! | head | accepted, or the first byte of a next request | `header_timeout` |
//! | body | the handler reads the request body | `body_timeout` |
//! | busy | request head parsed, handler running | – (bounded by the handler: statement timeout, pool and queue waits) |
//! | writing | handler returned, response being sent | `body_timeout` without progress |
//! | idle | response sent and flushed, keep-alive | `keep_alive_timeout` |
//!
//! At most `max_connections` are open. A new connection at the cap closes the connection
//! that has waited longest in the idle phase, else in the head phase, else in the body phase
//! (nginx reuses idle keep-alive connections the same way), so a crowd of slow clients,
//! even ones holding a valid token and trickling bodies, cannot lock real ones out; only
//! when every connection is busy does the accept loop wait for one to finish.
//!
//! A client that disconnects while its request runs makes hyper drop the handler, which
//! cancels the request's database statement (see [`crate::db`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tower_service::Service;

use crate::config::HttpLimits;

/// After shutdown is signalled, connections get this long to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How much longer than `body_timeout` a body phase may last before the connection is closed
/// without the handler's 408.
const BODY_GRACE: Duration = Duration::from_millis(500);
/// hyper's own hard limit on a request head, beyond the configured (answered with JSON) one.
const HARD_HEADER_FACTOR: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Head = 0,
    Body = 1,
    Busy = 2,
    Writing = 3,
    Idle = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Head,
            1 => Phase::Body,
            2 => Phase::Busy,
            3 => Phase::Writing,
            _ => Phase::Idle,
        }
    }

    /// Which connections go first at the cap: those without a request (idle), then those
    /// that have not finished sending one (head, body). `None`: never evicted.
    fn eviction_rank(self) -> Option<u8> {
        match self {
            Phase::Idle => Some(0),
            Phase::Head => Some(1),
            Phase::Body => Some(2),
            Phase::Busy | Phase::Writing => None,
        }
    }
}

/// One connection's phase, shared by its I/O wrapper, its service and its task.
struct ConnState {
    phase: AtomicU8,
    /// When the current phase began, in milliseconds since the server started.
    since_ms: AtomicU64,
    /// Wakes the connection's task to recompute its deadline or consider eviction.
    changed: Notify,
    evict: AtomicBool,
    /// The response body has been produced; the phase turns idle once it is flushed.
    body_done: AtomicBool,
    epoch: Instant,
}

impl ConnState {
    fn new(epoch: Instant) -> ConnState {
        let state = ConnState {
            phase: AtomicU8::new(Phase::Head as u8),
            since_ms: AtomicU64::new(0),
            changed: Notify::new(),
            evict: AtomicBool::new(false),
            body_done: AtomicBool::new(false),
            epoch,
        };
        state.stamp();
        state
    }

    fn stamp(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since_ms.store(ms, Ordering::Release);
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn enter(&self, phase: Phase) {
        self.stamp();
        self.phase.store(phase as u8, Ordering::Release);
        self.changed.notify_one();
    }

    /// `from` → `to`, only if still in `from`.
    fn advance(&self, from: Phase, to: Phase) {
        if self
            .phase
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.stamp();
            self.changed.notify_one();
        }
    }

    fn since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Acquire))
    }

    fn evictable(&self) -> bool {
        self.phase().eviction_rank().is_some()
    }

    /// When this connection is to be closed if nothing happens, with the reason.
    fn deadline(&self, limits: &HttpLimits) -> Option<(Instant, &'static str)> {
        let (limit, why) = match self.phase() {
            Phase::Head => (limits.header_timeout, "request head not received in time"),
            // The handler answers a late body with 408 at `body_timeout`; this is the backstop.
            Phase::Body => (
                limits.body_timeout + BODY_GRACE,
                "request body not received in time",
            ),
            Phase::Idle => (limits.keep_alive_timeout, "idle keep-alive connection"),
            Phase::Writing => (limits.body_timeout, "response not taken in time"),
            Phase::Busy => return None,
        };
        Some((self.since() + limit, why))
    }
}

/// A handler's view of its connection: reading a request body is its own phase, evictable
/// at the cap and bounded by `body_timeout` (the handler bounds it too).
#[derive(Clone)]
pub struct Connection(Arc<ConnState>);

impl Connection {
    pub fn reading_body(&self) {
        self.0.advance(Phase::Busy, Phase::Body);
    }

    pub fn body_read(&self) {
        self.0.advance(Phase::Body, Phase::Busy);
    }
}

/// Open connections, for eviction at the cap.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, state: Arc<ConnState>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, state);
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Asks the connection that has waited longest in the idle phase (else head, else body)
    /// to close.
    fn evict_one(&self) -> bool {
        let open = self.lock();
        let victim = open
            .values()
            .filter(|c| !c.evict.load(Ordering::Acquire))
            .filter_map(|c| {
                let rank = c.phase().eviction_rank()?;
                Some((rank, c.since_ms.load(Ordering::Acquire), c))
            })
            .min_by_key(|(rank, since, _)| (*rank, *since))
            .map(|(_, _, c)| c);
        match victim {
            Some(c) => {
                c.evict.store(true, Ordering::Release);
                c.changed.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open requests finish
/// (up to [`DRAIN_TIMEOUT`]).
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let epoch = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // At the cap: close the longest-waiting idle connection and take its slot. Should
        // that one turn busy before it sees the request, ask the next one shortly after.
        let mut warned = false;
        let permit = loop {
            if let Ok(permit) = slots.clone().try_acquire_owned() {
                break Some(permit);
            }
            if !registry.evict_one() && !warned {
                warned = true;
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "every connection is busy; a new one waits for a free slot"
                );
            }
            tokio::select! {
                permit = slots.clone().acquire_owned() => break permit.ok(),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = &mut shutdown => break None,
            }
        };
        let Some(permit) = permit else { break };
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::new(epoch));
        let id = registry.add(state.clone());
        let (registry, limits, router, stop_rx) = (
            registry.clone(),
            limits.clone(),
            router.clone(),
            stop_rx.clone(),
        );
        tokio::spawn(async move {
            // Unregisters and frees the slot however the task ends, a panic included.
            let _open = Open {
                registry,
                id,
                _permit: permit,
            };
            serve_connection(stream, peer, state, &limits, router, stop_rx).await;
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; stopping anyway");
    }
    Ok(())
}

struct Open {
    registry: Arc<Registry>,
    id: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ConnState>,
    limits: &HttpLimits,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        state: state.clone(),
    });
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let state = service_state.clone();
        let mut router = router.clone();
        state.body_done.store(false, Ordering::Release);
        state.enter(Phase::Busy);
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(Connection(state.clone()));
        async move {
            let response = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            state.enter(Phase::Writing);
            Ok::<_, Infallible>(response.map(|body| TrackedBody { inner: body, state }))
        }
    });
    let hard_header_limit = limits.max_header_bytes.saturating_mul(HARD_HEADER_FACTOR);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_header_size(hard_header_limit)
        .max_buf_size(hard_header_limit.max(8192));
    let mut connection = pin!(builder.serve_connection(io, service));
    let mut stopping = false;

    loop {
        let deadline = state.deadline(limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            () = state.changed.notified() => {
                if state.evict.swap(false, Ordering::AcqRel) && state.evictable() {
                    tracing::debug!(%peer, "closing the longest-waiting connection: at the connection cap");
                    return;
                }
            }
            () = sleep_until(deadline.map(|(at, _)| at)) => {
                if let Some((at, why)) = state.deadline(limits) {
                    if Instant::now() >= at {
                        tracing::debug!(%peer, reason = why, "closing a slow or idle connection");
                        return;
                    }
                }
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The socket, noting the first byte of a next request and the response's progress.
struct TrackedIo {
    inner: TcpStream,
    state: Arc<ConnState>,
}

/// A response body, noting when hyper has taken all of it.
struct TrackedBody {
    inner: Body,
    state: Arc<ConnState>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.advance(Phase::Idle, Phase::Head);
        }
        polled
    }
}

impl TrackedIo {
    /// A response that makes progress keeps its connection: the writing deadline counts
    /// from the last bytes the client took.
    fn wrote(&self, polled: &Poll<std::io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) && self.state.phase() == Phase::Writing {
            self.state.stamp();
        }
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes after writing what it has buffered: once the whole body has been
    /// produced, the flush that follows ends the response.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) && self.state.body_done.load(Ordering::Acquire) {
            self.state.advance(Phase::Writing, Phase::Idle);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.state.body_done.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    /// hyper drops a body once it has taken all of it (into its write buffer).
    fn drop(&mut self) {
        self.state.body_done.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_phase() {
        let limits = HttpLimits {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(2),
            keep_alive_timeout: Duration::from_secs(3),
            ..HttpLimits::default()
        };
        let state = ConnState::new(Instant::now());
        let head = state.deadline(&limits).expect("head has a deadline").0;
        assert!(head <= Instant::now() + Duration::from_secs(1));
        state.enter(Phase::Busy);
        assert!(state.deadline(&limits).is_none());
        assert!(!state.evictable());
        state.enter(Phase::Writing);
        assert_eq!(
            state.deadline(&limits).map(|d| d.1),
            Some("response not taken in time")
        );
        state.advance(Phase::Busy, Phase::Idle); // not in Busy: no change
        assert_eq!(state.phase(), Phase::Writing);
        state.advance(Phase::Writing, Phase::Idle);
        assert!(state.evictable());
        assert_eq!(
            state.deadline(&limits).map(|d| d.1),
            Some("idle keep-alive connection")
        );
    }

    #[test]
    fn eviction_picks_the_longest_waiting_idle_connection() {
        let epoch = Instant::now() - Duration::from_secs(10);
        let registry = Registry::default();
        let busy = Arc::new(ConnState::new(epoch));
        busy.since_ms.store(0, Ordering::Release);
        busy.phase.store(Phase::Busy as u8, Ordering::Release);
        let old_idle = Arc::new(ConnState::new(epoch));
        old_idle.since_ms.store(1_000, Ordering::Release);
        old_idle.phase.store(Phase::Idle as u8, Ordering::Release);
        let new_head = Arc::new(ConnState::new(epoch));
        registry.add(busy.clone());
        registry.add(old_idle.clone());
        registry.add(new_head.clone());
        let old_body = Arc::new(ConnState::new(epoch));
        old_body.since_ms.store(0, Ordering::Release);
        old_body.phase.store(Phase::Body as u8, Ordering::Release);
        registry.add(old_body.clone());
        // Idle first, then head, then body, whatever their age.
        assert!(registry.evict_one());
        assert!(old_idle.evict.load(Ordering::Acquire));
        assert!(!busy.evict.load(Ordering::Acquire));
        assert!(registry.evict_one());
        assert!(new_head.evict.load(Ordering::Acquire));
        assert!(registry.evict_one());
        assert!(old_body.evict.load(Ordering::Acquire));
        assert!(!registry.evict_one(), "busy connections are never evicted");
    }
}
