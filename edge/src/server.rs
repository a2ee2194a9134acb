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
//! | busy | request head parsed, handler running | – (the statement timeout and pool wait bound it; the handler bounds its body read by `body_timeout`) |
//! | writing | handler returned, response being sent | `body_timeout` |
//! | idle | response sent, keep-alive | `keep_alive_timeout` |
//!
//! At most `max_connections` are open. A new connection at the cap closes the connection
//! that has waited longest in the head or idle phase (nginx reuses idle keep-alive
//! connections the same way), so a crowd of slow clients cannot lock real ones out; only
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
/// hyper's own hard limit on a request head, beyond the configured (answered with JSON) one.
const HARD_HEADER_FACTOR: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Head = 0,
    Busy = 1,
    Writing = 2,
    Idle = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Head,
            1 => Phase::Busy,
            2 => Phase::Writing,
            _ => Phase::Idle,
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
    epoch: Instant,
}

impl ConnState {
    fn new(epoch: Instant) -> ConnState {
        let state = ConnState {
            phase: AtomicU8::new(Phase::Head as u8),
            since_ms: AtomicU64::new(0),
            changed: Notify::new(),
            evict: AtomicBool::new(false),
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
        matches!(self.phase(), Phase::Head | Phase::Idle)
    }

    /// When this connection is to be closed if nothing happens, with the reason.
    fn deadline(&self, limits: &HttpLimits) -> Option<(Instant, &'static str)> {
        let (limit, why) = match self.phase() {
            Phase::Head => (limits.header_timeout, "request head not received in time"),
            Phase::Idle => (limits.keep_alive_timeout, "idle keep-alive connection"),
            Phase::Writing => (limits.body_timeout, "response not taken in time"),
            Phase::Busy => return None,
        };
        Some((self.since() + limit, why))
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

    /// Asks the connection that has waited longest in the head or idle phase to close.
    fn evict_one(&self) -> bool {
        let open = self.lock();
        let victim = open
            .values()
            .filter(|c| c.evictable() && !c.evict.load(Ordering::Acquire))
            .min_by_key(|c| c.since_ms.load(Ordering::Acquire));
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
            serve_connection(stream, peer, state, &limits, router, stop_rx).await;
            registry.remove(id);
            drop(permit);
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

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ConnState>,
    limits: &HttpLimits,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Tracked {
        inner: stream,
        state: state.clone(),
    });
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let state = service_state.clone();
        let mut router = router.clone();
        state.enter(Phase::Busy);
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        async move {
            let response = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            state.enter(Phase::Writing);
            Ok::<_, Infallible>(response.map(|body| Tracked { inner: body, state }))
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

/// The socket (noting the first byte of a next request) or a response body (noting when it
/// has been sent), with the connection's state.
struct Tracked<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked<TcpStream> {
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

impl AsyncWrite for Tracked<TcpStream> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl HttpBody for Tracked<Body> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.state.advance(Phase::Writing, Phase::Idle);
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

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        // A response body is dropped once sent (or abandoned); the socket at the end.
        self.state.advance(Phase::Writing, Phase::Idle);
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
        assert!(registry.evict_one());
        assert!(old_idle.evict.load(Ordering::Acquire));
        assert!(!busy.evict.load(Ordering::Acquire));
        assert!(registry.evict_one());
        assert!(new_head.evict.load(Ordering::Acquire));
        assert!(!registry.evict_one(), "busy connections are never evicted");
    }
}
