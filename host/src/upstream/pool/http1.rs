//! One worker's HTTP/1.1 connections to one host.
//!
//! No pipelining: a connection carries one request at a time. A request takes an idle
//! connection, or waits (pending) while a new one is made, up to `max_connections` over the
//! whole cluster. A connection goes back to the pool when its response body has been read to
//! the end (hyper's `SendRequest::ready()` says so); a response that switches protocols (101)
//! keeps the connection for the upgrade, and it is never reused.
//!
//! Every connection has a driver task that runs hyper's connection future and closes it when
//! it has been idle for `idle_timeout`, or when the host is drained (turned unhealthy or
//! removed): at once when idle, after its request when busy.

use super::body::GuardedBody;
use super::http2::Http2Pool;
use super::lifecycle::{self, Verdict, sleep_until_some};
use super::wait::PendingWait;
use crate::body::{Body, BoxError, boxed};
use crate::upstream::cluster::{
    Cluster, ConnectionSlot, Host, HostProtocol, OpenConnection, RequestSlot,
};
use crate::upstream::connect::{self, Connected, UpstreamStream};
use crate::upstream::error::UpstreamError;
use crate::wire::reset::SocketId;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// How many connections a request tries when each turns out closed before the request
/// could be written to it.
const MAX_SEND_ATTEMPTS: usize = 4;

/// What [`Http1Pool::send`] did.
pub enum Sent {
    /// The response head arrived.
    Response(http::Response<Body>),
    /// The host negotiated h2 by ALPN (auto over TLS): send there instead.
    UseHttp2(Box<http::Request<Body>>, RequestSlot),
}

/// The HTTP/1.1 pool of one worker to one host.
pub struct Http1Pool {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    /// For auto over TLS: the host's h2 pool, which takes connections that negotiate h2.
    http2: Option<Arc<Http2Pool>>,
    state: Mutex<State>,
    /// Woken when a connection turns idle, closes, or an attempt to make one ends.
    changed: Notify,
}

#[derive(Default)]
struct State {
    connections: Vec<Entry>,
    connecting: usize,
    waiting: usize,
    failures: u64,
    last_failure: Option<UpstreamError>,
    next_id: u64,
}

/// One open connection, as the pool sees it.
struct Entry {
    id: u64,
    /// Present while the connection is idle; the request in flight holds it otherwise.
    sender: Option<SendRequest<Body>>,
    busy: bool,
    upgraded: bool,
    draining: bool,
    requests: u32,
    idle_since: Option<Instant>,
    /// Wakes the connection's driver to look at its entry again.
    poke: Arc<Notify>,
    /// The TCP socket under it, so a tunnel it carries can be reset (see `tunnel::reset`).
    socket: Option<SocketId>,
}

impl lifecycle::PooledConnection for Entry {
    fn id(&self) -> u64 {
        self.id
    }
    fn in_use(&self) -> bool {
        self.upgraded || self.busy
    }
    fn draining(&self) -> bool {
        self.draining
    }
    fn idle_since(&self) -> Option<Instant> {
        self.idle_since
    }
}

/// A connection taken for one request.
struct Lease {
    id: u64,
    sender: SendRequest<Body>,
    poke: Arc<Notify>,
    socket: Option<SocketId>,
}

impl Http1Pool {
    /// An empty pool; `http2` is the host's h2 pool when ALPN may pick h2 (auto over TLS).
    pub fn new(cluster: Arc<Cluster>, host: Arc<Host>, http2: Option<Arc<Http2Pool>>) -> Arc<Self> {
        Arc::new(Http1Pool {
            cluster,
            host,
            http2,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `req` on a connection of this pool and returns the response head; the response
    /// body holds `slot` until it is done.
    pub async fn send(
        self: &Arc<Self>,
        mut req: http::Request<Body>,
        slot: RequestSlot,
    ) -> Result<Sent, UpstreamError> {
        for _ in 0..MAX_SEND_ATTEMPTS {
            let Some(mut lease) = self.acquire().await? else {
                return Ok(Sent::UseHttp2(Box::new(req), slot));
            };
            // A connection comes back as soon as its response body ends; hyper may need a
            // moment to finish its bookkeeping before it takes the next request.
            if !lease.sender.is_ready() {
                let ready =
                    tokio::time::timeout(self.cluster.spec.connect_timeout, lease.sender.ready());
                if !matches!(ready.await, Ok(Ok(()))) {
                    self.abandon(lease);
                    continue;
                }
            }

            match lease.sender.try_send_request(req).await {
                Ok(response) => return Ok(Sent::Response(self.finish(lease, response, slot))),
                Err(mut error) => {
                    let reason = error.error().to_string();
                    let unsent = error.take_message();
                    self.abandon(lease);
                    match unsent {
                        Some(unsent) => {
                            tracing::debug!(%reason, "connection closed before the request was written; retrying");
                            req = unsent;
                        }
                        None => {
                            // A request body that failed is the client's doing (malformed,
                            // cut short, too slow): the upstream is not blamed for it.
                            if !error.error().is_user() {
                                self.cluster.stats.rq_reset.inc();
                            }
                            return Err(self.reset(reason));
                        }
                    }
                }
            }
        }
        self.cluster.stats.rq_reset.inc();
        Err(self.reset("every connection tried closed before the request was written".into()))
    }

    fn reset(&self, reason: String) -> UpstreamError {
        UpstreamError::Reset {
            cluster: self.cluster.name().to_owned(),
            host: self.host.addr.to_string(),
            reason,
        }
    }

    /// Takes an idle connection, or waits for one (pending) while new ones are made.
    /// `None`: the host turned out to speak h2 (auto over TLS).
    async fn acquire(self: &Arc<Self>) -> Result<Option<Lease>, UpstreamError> {
        let mut wait = PendingWait::new(self.cluster.clone());
        let mut waiting: Option<WaitingCount> = None;
        loop {
            let changed = self.changed.notified();
            let freed = self.cluster.connection_freed.notified();
            tokio::pin!(changed, freed);
            changed.as_mut().enable();
            freed.as_mut().enable();
            {
                let mut state = self.lock();
                if self.http2.is_some()
                    && self.host.negotiated_protocol() == Some(HostProtocol::Http2)
                {
                    return Ok(None);
                }
                if let Some(entry) = state.connections.iter_mut().rev().find(|entry| {
                    !entry.busy
                        && !entry.draining
                        && entry
                            .sender
                            .as_ref()
                            .is_some_and(|sender| !sender.is_closed())
                }) && let Some(sender) = entry.sender.take()
                {
                    entry.busy = true;
                    entry.requests += 1;
                    entry.idle_since = None;
                    return Ok(Some(Lease {
                        id: entry.id,
                        sender,
                        poke: entry.poke.clone(),
                        socket: entry.socket,
                    }));
                }
                if wait.saw_new_failure(state.failures)
                    && state.connecting == 0
                    && let Some(failure) = state.last_failure.clone()
                {
                    return Err(failure);
                }
                if wait.enter()? {
                    state.waiting += 1;
                    waiting.get_or_insert_with(|| WaitingCount { pool: self.clone() });
                }
                if state.connecting < state.waiting
                    && let Some(slot) = wait.open_connection()
                {
                    state.connecting += 1;
                    tokio::spawn(self.clone().connect(slot));
                }
            }
            let host = self.host.addr.to_string();
            // On an error `waiting` is dropped with this frame, which uncounts it.
            wait.wait(&host, changed, freed).await?;
        }
    }

    /// Hands the response to the caller. The connection goes back to the pool when the
    /// response body has been read to its end (or stays with the upgrade on a 101).
    fn finish(
        self: &Arc<Self>,
        lease: Lease,
        mut response: http::Response<hyper::body::Incoming>,
        slot: RequestSlot,
    ) -> http::Response<Body> {
        // A tunnel on this connection (CONNECT, an upgrade, a POST tunnel) is reset by
        // resetting the connection itself.
        if let Some(socket) = lease.socket {
            response.extensions_mut().insert(socket);
        }
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            let mut state = self.lock();
            if let Some(entry) = state.connections.iter_mut().find(|e| e.id == lease.id) {
                entry.upgraded = true;
                entry.busy = false;
            }
            return response.map(|incoming| boxed(GuardedBody::new(incoming, slot)));
        }
        let release = Release {
            pool: self.clone(),
            lease: Some(lease),
        };
        response.map(|incoming| {
            Body::new(ResponseBody {
                incoming,
                release,
                slot: Some(slot),
            })
        })
    }

    /// Puts a connection whose response is done back as idle, or lets it close (draining,
    /// `max_requests_per_connection` reached, or not reusable).
    fn release(&self, id: u64, sender: SendRequest<Body>, reusable: bool) {
        let mut state = self.lock();
        let Some(entry) = state.connections.iter_mut().find(|e| e.id == id) else {
            return;
        };
        entry.busy = false;
        let max_reached = self
            .cluster
            .spec
            .max_requests_per_connection
            .is_some_and(|max| entry.requests >= max);
        if max_reached {
            self.cluster.stats.cx_max_requests.inc();
        }
        if !reusable || max_reached || entry.draining {
            entry.draining = true;
            return;
        }
        entry.sender = Some(sender);
        entry.idle_since = Some(Instant::now());
        drop(state);
        self.changed.notify_one();
    }

    /// Gives up a connection whose request could not be sent on it.
    fn abandon(&self, lease: Lease) {
        let mut state = self.lock();
        if let Some(entry) = state.connections.iter_mut().find(|e| e.id == lease.id) {
            entry.busy = false;
            entry.draining = true;
        }
        drop(state);
        lease.poke.notify_one();
    }

    /// Makes one connection (holding `slot`) and drives it until it closes.
    async fn connect(self: Arc<Self>, slot: ConnectionSlot) {
        self.connect_with(slot, None).await;
    }

    /// Takes a connection made outside the pool: auto with HTTP/3 races a TCP handshake
    /// against QUIC, and a TCP connection that wins comes here (or, by ALPN, to HTTP/2).
    pub fn adopt(self: &Arc<Self>, connected: Connected, slot: ConnectionSlot) {
        self.lock().connecting += 1;
        tokio::spawn(self.clone().connect_with(slot, Some(connected)));
    }

    /// Makes one connection (or finishes `connected`) and drives it until it closes.
    async fn connect_with(self: Arc<Self>, slot: ConnectionSlot, connected: Option<Connected>) {
        let drain = self.host.drain_signal();
        let connected = match connected {
            Some(connected) => connected,
            None => match connect::connect(&self.cluster, &self.host).await {
                Ok(connected) => connected,
                Err(error) => return self.connect_failed(error),
            },
        };
        if let Some(http2) = &self.http2 {
            if connected.alpn == Some(HostProtocol::Http2) {
                self.host.set_negotiated_protocol(HostProtocol::Http2);
                self.lock().connecting -= 1;
                http2.adopt(connected, slot);
                self.changed.notify_waiters();
                return;
            }
            self.host.set_negotiated_protocol(HostProtocol::Http1);
        }
        let Connected { stream, .. } = connected;
        let socket = match &stream {
            UpstreamStream::Plain(tcp) => SocketId::of(tcp),
            UpstreamStream::Tls(tls) => SocketId::of(tls.get_ref().0),
        };
        let (sender, connection) =
            match hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await {
                Ok(handshake) => handshake,
                Err(error) => {
                    self.cluster.stats.cx_connect_fail.inc();
                    return self.connect_failed(UpstreamError::ConnectFailed {
                        cluster: self.cluster.name().to_owned(),
                        host: self.host.addr.to_string(),
                        reason: error.to_string(),
                    });
                }
            };
        let open = OpenConnection::new(
            self.cluster.clone(),
            self.host.clone(),
            slot,
            HostProtocol::Http1,
        );
        let poke = Arc::new(Notify::new());
        let id = {
            let mut state = self.lock();
            state.connecting -= 1;
            let id = state.next_id;
            state.next_id += 1;
            state.connections.push(Entry {
                id,
                sender: Some(sender),
                busy: false,
                upgraded: false,
                draining: false,
                requests: 0,
                idle_since: Some(Instant::now()),
                poke: poke.clone(),
                socket,
            });
            id
        };
        tracing::debug!(cluster = %self.cluster.name(), host = %self.host.addr, id, "http1 connection open");
        self.changed.notify_one();
        self.drive(id, connection.with_upgrades(), drain, poke)
            .await;
        drop(open);
    }

    fn connect_failed(&self, error: UpstreamError) {
        {
            let mut state = self.lock();
            state.connecting -= 1;
            state.failures += 1;
            state.last_failure = Some(error);
        }
        self.changed.notify_waiters();
    }

    /// Runs the connection until it ends or the pool closes it.
    async fn drive<C>(
        &self,
        id: u64,
        connection: C,
        mut drain: watch::Receiver<u64>,
        poke: Arc<Notify>,
    ) where
        C: Future<Output = hyper::Result<()>>,
    {
        tokio::pin!(connection);
        let mut drain_open = true;
        loop {
            let poked = poke.notified();
            tokio::pin!(poked);
            poked.as_mut().enable();
            let deadline = match self.evaluate(id) {
                Verdict::Close => break,
                Verdict::Keep(deadline) => deadline,
            };
            tokio::select! {
                result = &mut connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, id, "http1 connection failed");
                    }
                    break;
                }
                changed = drain.changed(), if drain_open => {
                    drain_open = changed.is_ok();
                    self.mark_draining(id);
                }
                () = &mut poked => {}
                () = sleep_until_some(deadline) => {}
            }
        }
        let mut state = self.lock();
        if let Some(index) = state.connections.iter().position(|e| e.id == id) {
            let entry = state.connections.swap_remove(index);
            if entry.busy {
                self.cluster.stats.cx_destroy_with_active_rq.inc();
            }
        }
        drop(state);
        tracing::debug!(cluster = %self.cluster.name(), host = %self.host.addr, id, "http1 connection closed");
        self.changed.notify_waiters();
    }

    /// Decides whether connection `id` closes now (drained or idle too long).
    fn evaluate(&self, id: u64) -> Verdict {
        let mut state = self.lock();
        lifecycle::evaluate(
            &mut state.connections,
            id,
            self.cluster.spec.idle_timeout,
            &self.cluster.stats,
        )
    }

    fn mark_draining(&self, id: u64) {
        if let Some(entry) = self.lock().connections.iter_mut().find(|e| e.id == id) {
            entry.draining = true;
        }
    }
}

/// Gives a connection back to its pool when the response is done with it.
struct Release {
    pool: Arc<Http1Pool>,
    lease: Option<Lease>,
}

impl Release {
    /// `reusable`: the response body was read to its end, so the connection may carry
    /// another request.
    fn finish(&mut self, reusable: bool) {
        if let Some(Lease {
            id, sender, poke, ..
        }) = self.lease.take()
        {
            self.pool.release(id, sender, reusable);
            poke.notify_one();
        }
    }
}

pin_project! {
    /// An HTTP/1.1 response body: returns the connection to the pool at its end, and holds
    /// the request's `max_requests` unit until then.
    struct ResponseBody {
        #[pin]
        incoming: Incoming,
        release: Release,
        slot: Option<RequestSlot>,
    }

    impl PinnedDrop for ResponseBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Dropped unread: the connection is only reusable when nothing was left to read.
            let reusable = this.incoming.is_end_stream();
            this.release.finish(reusable);
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match ready!(this.incoming.poll_frame(cx)) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(error)) => {
                this.release.finish(false);
                this.slot.take();
                Poll::Ready(Some(Err(error.into())))
            }
            None => {
                this.release.finish(true);
                this.slot.take();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// Counts a request among the pool's waiters until dropped (also when the caller gives up).
struct WaitingCount {
    pool: Arc<Http1Pool>,
}

impl Drop for WaitingCount {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        state.waiting = state.waiting.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use crate::stats::ClusterStats;
    use crate::upstream::test_support::{self, delayed_ok, eventually, get};
    use crate::upstream::{ClusterManager, UpstreamError, WorkerPools};
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;
    use tokio::time::timeout;

    const LIMIT: Duration = Duration::from_secs(10);

    async fn body_text(response: http::Response<crate::body::Body>) -> String {
        match response.into_body().collect().await {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Err(error) => format!("body error: {error}"),
        }
    }

    fn pools_for(spec: crate::upstream::ClusterSpec) -> WorkerPools {
        match ClusterManager::new(vec![spec]) {
            Ok(manager) => WorkerPools::new(manager),
            Err(error) => panic!("cluster builds: {error}"),
        }
    }

    /// 20 concurrent requests with max_connections 4: the upstream sees at most 4
    /// connections, the other requests wait as pending, and all 20 succeed.
    #[tokio::test]
    async fn concurrent_requests_share_at_most_max_connections() {
        let (addr, seen) = test_support::http1_server(
            delayed_ok(Duration::from_millis(30)),
            Arc::new(AtomicBool::new(true)),
        )
        .await;
        let mut spec = test_support::spec("h1_max_cx", &[addr.port()]);
        spec.thresholds.max_connections = 4;
        let pools = pools_for(spec);
        let requests = (0..20).map(|_| {
            let pools = pools.clone();
            tokio::spawn(async move {
                let response = pools.send("h1_max_cx", get("/")).await?;
                Ok::<_, UpstreamError>(body_text(response).await)
            })
        });
        let results = timeout(LIMIT, futures_util::future::join_all(requests)).await;
        let Ok(results) = results else {
            panic!("requests finish in time")
        };
        for result in results {
            match result {
                Ok(Ok(body)) => assert_eq!(body, "ok"),
                other => panic!("request failed: {other:?}"),
            }
        }
        assert!(seen.accepted() <= 4, "{} connections", seen.accepted());
        assert!(seen.accepted() >= 1);
        let stats = ClusterStats::new("h1_max_cx");
        assert!(
            stats.cx_overflow.get() >= 1,
            "requests found max_connections reached"
        );
        assert!(
            stats.rq_pending_total.get() >= 16,
            "requests waited as pending"
        );
        assert_eq!(stats.rq_total.get(), 20);
        assert_eq!(
            stats.rq_active.get(),
            0,
            "every request's breaker unit is back"
        );
        assert_eq!(stats.rq_pending_active.get(), 0);
    }

    /// max_connections 4 and max_pending_requests 2: requests beyond what can wait are
    /// refused with PendingOverflow, counted in rq_pending_overflow; the rest succeed.
    #[tokio::test]
    async fn pending_overflow_is_refused_and_counted() {
        let (addr, _seen) = test_support::http1_server(
            delayed_ok(Duration::from_millis(200)),
            Arc::new(AtomicBool::new(true)),
        )
        .await;
        let mut spec = test_support::spec("h1_pending_overflow", &[addr.port()]);
        spec.thresholds.max_connections = 4;
        spec.thresholds.max_pending_requests = 2;
        let pools = pools_for(spec);
        let requests = (0..20).map(|_| {
            let pools = pools.clone();
            tokio::spawn(async move {
                pools
                    .send("h1_pending_overflow", get("/"))
                    .await
                    .map(|_| ())
            })
        });
        let Ok(results) = timeout(LIMIT, futures_util::future::join_all(requests)).await else {
            panic!("requests finish in time")
        };
        let mut ok = 0;
        let mut overflow = 0;
        for result in results {
            match result {
                Ok(Ok(())) => ok += 1,
                Ok(Err(UpstreamError::PendingOverflow(_))) => overflow += 1,
                other => panic!("unexpected: {other:?}"),
            }
        }
        assert!(ok >= 2, "{ok} succeeded");
        assert!(overflow >= 1, "{overflow} overflowed");
        assert_eq!(ok + overflow, 20);
        let stats = ClusterStats::new("h1_pending_overflow");
        assert_eq!(stats.rq_pending_overflow.get(), overflow);
        assert!(UpstreamError::PendingOverflow(String::new()).is_overflow());
    }

    /// Sequential requests whose bodies are read reuse one connection; with idle_timeout the
    /// idle connection is then closed (the upstream sees the close) and counted.
    #[tokio::test]
    async fn connection_is_reused_then_closed_when_idle() {
        let (addr, seen) =
            test_support::http1_server(delayed_ok(Duration::ZERO), Arc::new(AtomicBool::new(true)))
                .await;
        let mut spec = test_support::spec("h1_reuse_idle", &[addr.port()]);
        spec.idle_timeout = Some(Duration::from_millis(300));
        let pools = pools_for(spec);
        for _ in 0..3 {
            let response = timeout(LIMIT, pools.send("h1_reuse_idle", get("/"))).await;
            let Ok(Ok(response)) = response else {
                panic!("request succeeds: {response:?}")
            };
            assert_eq!(body_text(response).await, "ok");
        }
        assert_eq!(
            seen.accepted(),
            1,
            "one connection carried all three requests"
        );
        let stats = ClusterStats::new("h1_reuse_idle");
        assert_eq!(stats.cx_http1_total.get(), 1);
        assert!(
            eventually(LIMIT, || seen.data_closed() == 1).await,
            "upstream sees the close"
        );
        assert_eq!(stats.cx_idle_timeout.get(), 1);
        assert!(eventually(LIMIT, || stats.cx_active.get() == 0).await);
    }

    /// A connection the upstream severs mid-request fails only that request.
    #[tokio::test]
    async fn severed_connection_fails_only_its_request() {
        let handler: test_support::Handler = Arc::new(|request| {
            Box::pin(async move {
                if request.uri().path() == "/sever" {
                    // Never answers; the test server drops the connection below.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
            })
        });
        let (addr, seen) =
            test_support::http1_server(handler, Arc::new(AtomicBool::new(true))).await;
        let _ = seen;
        // A raw TCP front that forwards to the hyper server but cuts the first connection.
        let front = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let front_addr = front.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let mut first = true;
            for _ in 0..8 {
                let Ok((mut client, _)) = front.accept().await else {
                    return;
                };
                let cut = std::mem::take(&mut first);
                tokio::spawn(async move {
                    if cut {
                        let mut buf = [0u8; 1024];
                        let _ = tokio::io::AsyncReadExt::read(&mut client, &mut buf).await;
                        drop(client);
                        return;
                    }
                    if let Ok(mut server) = tokio::net::TcpStream::connect(addr).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        let spec = test_support::spec("h1_severed", &[front_addr.port()]);
        let pools = pools_for(spec);
        let first = {
            let pools = pools.clone();
            tokio::spawn(async move { pools.send("h1_severed", get("/sever")).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = timeout(LIMIT, pools.send("h1_severed", get("/"))).await;
        let Ok(Ok(second)) = second else {
            panic!("second request succeeds: {second:?}")
        };
        assert_eq!(body_text(second).await, "ok");
        let first = timeout(LIMIT, first).await;
        assert!(
            matches!(first, Ok(Ok(Err(UpstreamError::Reset { .. })))),
            "{first:?}"
        );
        let stats = ClusterStats::new("h1_severed");
        assert_eq!(stats.rq_reset.get(), 1);
        assert_eq!(stats.cx_destroy_with_active_rq.get(), 1);
    }

    /// When its host is drained while a request is in flight, the connection finishes that
    /// request and then closes (the upstream sees the close) instead of going back idle.
    #[tokio::test]
    async fn busy_connection_closes_after_its_request_when_drained() {
        let (addr, seen) = test_support::http1_server(
            delayed_ok(Duration::from_millis(200)),
            Arc::new(AtomicBool::new(true)),
        )
        .await;
        let Ok(manager) =
            ClusterManager::new(vec![test_support::spec("h1_busy_drain", &[addr.port()])])
        else {
            panic!("cluster builds")
        };
        let Some(cluster) = manager.cluster("h1_busy_drain") else {
            panic!("cluster exists")
        };
        let pools = WorkerPools::new(manager.clone());
        let in_flight = {
            let pools = pools.clone();
            tokio::spawn(async move {
                let response = pools.send("h1_busy_drain", get("/")).await?;
                Ok::<_, UpstreamError>(body_text(response).await)
            })
        };
        assert!(eventually(LIMIT, || seen.requests() == 1).await);
        cluster.hosts()[0].drain_connections();
        let body = timeout(LIMIT, in_flight).await;
        assert!(
            matches!(&body, Ok(Ok(Ok(body))) if body == "ok"),
            "{body:?}"
        );
        assert!(
            eventually(LIMIT, || seen.data_closed() == 1).await,
            "closed after its request"
        );
        let stats = ClusterStats::new("h1_busy_drain");
        assert_eq!(stats.cx_destroy_with_active_rq.get(), 0);
        assert!(eventually(LIMIT, || stats.cx_active.get() == 0).await);
    }

    /// The router needs `WorkerPools` shareable across threads and `send`'s future `Send`
    /// (hyper's h2 server spawns the service future).
    #[test]
    fn worker_pools_and_send_future_are_send() {
        fn is_send_sync<T: Send + Sync>(_: &T) {}
        fn is_send<T: Send>(_: &T) {}
        let Ok(manager) = ClusterManager::new(vec![]) else {
            panic!("empty manager builds")
        };
        let pools = WorkerPools::new(manager);
        is_send_sync(&pools);
        let future = pools.send("none", get("/"));
        is_send(&future);
    }

    /// A 101 hands the connection to the upgrade (bytes flow both ways on it), and the
    /// connection is never reused: the next request opens a new one.
    #[tokio::test]
    async fn upgrade_takes_the_connection_out_of_the_pool() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let handler: test_support::Handler = Arc::new(|mut request| {
            Box::pin(async move {
                if request.headers().contains_key(http::header::UPGRADE) {
                    let upgrade = hyper::upgrade::on(&mut request);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = upgrade.await {
                            let mut io = hyper_util::rt::TokioIo::new(upgraded);
                            let mut buf = [0u8; 4];
                            if io.read_exact(&mut buf).await.is_ok() {
                                let _ = io.write_all(&buf).await;
                            }
                        }
                    });
                    let mut response =
                        http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                    *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                    response.headers_mut().insert(
                        http::header::UPGRADE,
                        http::HeaderValue::from_static("echo"),
                    );
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("upgrade"),
                    );
                    return response;
                }
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
            })
        });
        let (addr, seen) =
            test_support::http1_server(handler, Arc::new(AtomicBool::new(true))).await;
        let pools = pools_for(test_support::spec("h1_upgrade", &[addr.port()]));
        let mut request = get("/");
        request.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        request.headers_mut().insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static("echo"),
        );
        let response = timeout(LIMIT, pools.send("h1_upgrade", request)).await;
        let Ok(Ok(mut response)) = response else {
            panic!("upgrade answered: {response:?}")
        };
        assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
        let upgraded = timeout(LIMIT, hyper::upgrade::on(&mut response)).await;
        let Ok(Ok(upgraded)) = upgraded else {
            panic!("upgraded")
        };
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        let echoed = timeout(LIMIT, async {
            io.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            io.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        })
        .await;
        assert!(
            matches!(echoed, Ok(Ok(buf)) if &buf == b"ping"),
            "{echoed:?}"
        );
        let next = timeout(LIMIT, pools.send("h1_upgrade", get("/"))).await;
        let Ok(Ok(next)) = next else {
            panic!("next request succeeds: {next:?}")
        };
        assert_eq!(body_text(next).await, "ok");
        assert_eq!(seen.accepted(), 2, "the upgraded connection was not reused");
    }
}
