//! HTTP/1.1 as a [`PoolProtocol`], on hyper's client connection.
//!
//! No pipelining: a connection takes one request at a time (its sender is the stream, taken
//! out while the request runs). The connection goes back to the pool when the response body
//! has been read to its end; a response body dropped unread retires it. A response that
//! switches protocols (101) keeps the connection for the upgrade, and it is never reused.
//! Auto over TLS: a connection whose ALPN chose h2 goes to the host's HTTP/2 pool (see
//! `auto.rs`).

use super::auto;
use super::body::GuardedBody;
use super::generic::{Lease, Opened, Pool, PoolProtocol, Ready, StreamLimit};
use super::http2::Http2;
use crate::body::{Body, BoxError, boxed};
use crate::socket::SocketId;
use crate::upstream::cluster::{Cluster, ConnectionSlot, Host, HostProtocol, RequestSlot};
use crate::upstream::connect::{self, Connected, UpstreamStream};
use crate::upstream::error::UpstreamError;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// How many connections a request tries when each turns out closed before the request
/// could be written to it.
const MAX_SEND_ATTEMPTS: usize = 4;

/// HTTP/1.1 connections to one host.
pub struct Http1 {
    /// Auto over TLS: the host's h2 pool, which takes connections that negotiate h2.
    alpn_h2: Option<Arc<Pool<Http2>>>,
}

impl Http1 {
    /// `alpn_h2`: the host's h2 pool when ALPN may pick h2 (auto over TLS).
    pub fn new(alpn_h2: Option<Arc<Pool<Http2>>>) -> Http1 {
        Http1 { alpn_h2 }
    }
}

/// An open HTTP/1.1 connection.
pub struct Connection {
    /// Present while the connection is idle; the request in flight holds it otherwise.
    sender: Option<SendRequest<Body>>,
    /// The TCP socket under it, so a tunnel it carries can be reset (see `wire::reset`).
    socket: Option<SocketId>,
}

/// A connection taken for one request.
pub struct Stream {
    sender: SendRequest<Body>,
    socket: Option<SocketId>,
}

impl PoolProtocol for Http1 {
    const NAME: &'static str = "http1";
    const PROTOCOL: HostProtocol = HostProtocol::Http1;
    const NEWEST_FIRST: bool = true;
    const ABANDONED_STREAM_HOLDS_CONNECTION: bool = true;
    type Transport = Connected;
    type Connection = Connection;
    type Stream = Stream;

    fn configured_streams(_cluster: &Cluster) -> u32 {
        1
    }

    async fn open(
        pool: &Arc<Pool<Self>>,
        slot: ConnectionSlot,
        adopted: Option<Connected>,
    ) -> Result<Opened<Self>, UpstreamError> {
        let connected = match adopted {
            Some(connected) => connected,
            None => connect::connect(&pool.cluster, &pool.host).await?,
        };
        let (connected, slot) = match &pool.protocol.alpn_h2 {
            Some(http2) => match auto::offer_to_http2(http2, &pool.host, connected, slot) {
                Some(kept) => kept,
                None => return Ok(Opened::HandedOff),
            },
            None => (connected, slot),
        };
        let Connected { stream, .. } = connected;
        let socket = match &stream {
            UpstreamStream::Plain(tcp) => SocketId::of(tcp),
            UpstreamStream::Tls(tls) => SocketId::of(tls.get_ref().0),
        };
        let (sender, connection) =
            match hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await {
                Ok(handshake) => handshake,
                Err(error) => {
                    pool.cluster.stats.cx_connect_fail.inc();
                    return Err(pool.connect_error(error.to_string()));
                }
            };
        let connection = connection.with_upgrades();
        Ok(Opened::Ready(Ready {
            connection: Connection {
                sender: Some(sender),
                socket,
            },
            driver: Box::pin(async move { connection.await.map_err(|e| e.to_string()) }),
            streams: StreamLimit::Known(1),
            slot,
        }))
    }

    fn take_stream(connection: &mut Connection) -> Option<Stream> {
        if connection.sender.as_ref()?.is_closed() {
            return None;
        }
        Some(Stream {
            sender: connection.sender.take()?,
            socket: connection.socket,
        })
    }

    fn return_stream(connection: &mut Connection, stream: Stream) {
        connection.sender = Some(stream.sender);
    }

    fn serves(&self, host: &Host) -> bool {
        self.alpn_h2.is_none() || host.negotiated_protocol() != Some(HostProtocol::Http2)
    }
}

/// What [`Pool::<Http1>::send`] did.
pub enum Sent {
    /// The response head arrived.
    Response(http::Response<Body>),
    /// The host negotiated h2 by ALPN (auto over TLS): send there instead.
    UseHttp2(Box<http::Request<Body>>, RequestSlot),
}

impl Pool<Http1> {
    /// Sends `req` on a connection of this pool and returns the response head; the response
    /// body holds `slot` until it is done.
    pub async fn send(
        self: &Arc<Self>,
        mut req: http::Request<Body>,
        slot: RequestSlot,
    ) -> Result<Sent, UpstreamError> {
        for _ in 0..MAX_SEND_ATTEMPTS {
            let Some((lease, mut stream)) = self.acquire().await? else {
                return Ok(Sent::UseHttp2(Box::new(req), slot));
            };
            // A connection comes back as soon as its response body ends; hyper may need a
            // moment to finish its bookkeeping before it takes the next request.
            if !stream.sender.is_ready() {
                let ready =
                    tokio::time::timeout(self.cluster.spec.connect_timeout, stream.sender.ready());
                if !matches!(ready.await, Ok(Ok(()))) {
                    lease.retire();
                    continue;
                }
            }
            match stream.sender.try_send_request(req).await {
                Ok(response) => return Ok(Sent::Response(finish(lease, stream, response, slot))),
                Err(mut error) => {
                    let reason = error.error().to_string();
                    let unsent = error.take_message();
                    lease.retire();
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
}

/// Hands the response to the caller. The connection goes back to the pool when the response
/// body has been read to its end (or stays with the upgrade on a 101).
fn finish(
    lease: Lease<Http1>,
    stream: Stream,
    mut response: http::Response<Incoming>,
    slot: RequestSlot,
) -> http::Response<Body> {
    // A tunnel on this connection (CONNECT, an upgrade, a POST tunnel) is reset by resetting
    // the connection itself.
    if let Some(socket) = stream.socket {
        response.extensions_mut().insert(socket);
    }
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        lease.detach();
        return response.map(|incoming| boxed(GuardedBody::new(incoming, slot)));
    }
    let release = Release(Some((lease, stream)));
    response.map(|incoming| {
        Body::new(ResponseBody {
            incoming,
            release,
            slot: Some(slot),
        })
    })
}

/// Gives a connection back to its pool when the response is done with it.
struct Release(Option<(Lease<Http1>, Stream)>);

impl Release {
    /// `reusable`: the response body was read to its end, so the connection may carry
    /// another request.
    fn finish(&mut self, reusable: bool) {
        if let Some((lease, stream)) = self.0.take() {
            if reusable {
                lease.reuse(stream);
            } else {
                lease.retire();
            }
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

    /// max_requests_per_connection 2: 5 sequential requests use 3 connections (2 + 2 + 1);
    /// the two that reached the cap are counted and closed.
    #[tokio::test]
    async fn max_requests_per_connection_retires_the_connection() {
        let (addr, seen) =
            test_support::http1_server(delayed_ok(Duration::ZERO), Arc::new(AtomicBool::new(true)))
                .await;
        let mut spec = test_support::spec("h1_max_requests", &[addr.port()]);
        spec.max_requests_per_connection = Some(2);
        let pools = pools_for(spec);
        for _ in 0..5 {
            let response = timeout(LIMIT, pools.send("h1_max_requests", get("/"))).await;
            let Ok(Ok(response)) = response else {
                panic!("request succeeds: {response:?}")
            };
            assert_eq!(body_text(response).await, "ok");
        }
        assert_eq!(seen.accepted(), 3);
        let stats = ClusterStats::new("h1_max_requests");
        assert_eq!(stats.cx_max_requests.get(), 2);
        assert!(
            eventually(LIMIT, || seen.data_closed() == 2).await,
            "the capped connections close"
        );
    }

    /// A request given up before its response (the caller went away) takes its connection
    /// with it: HTTP/1.1 cannot cancel one request and keep the connection. The next request
    /// opens a new one, and the abandoned connection closes counted as destroyed with an
    /// active request.
    #[tokio::test]
    async fn abandoned_request_is_not_followed_on_its_connection() {
        let (addr, seen) = test_support::http1_server(
            delayed_ok(Duration::from_millis(300)),
            Arc::new(AtomicBool::new(true)),
        )
        .await;
        let pools = pools_for(test_support::spec("h1_abandoned", &[addr.port()]));
        let given_up = timeout(
            Duration::from_millis(50),
            pools.send("h1_abandoned", get("/")),
        )
        .await;
        assert!(given_up.is_err(), "the first request is given up");
        let next = timeout(LIMIT, pools.send("h1_abandoned", get("/"))).await;
        let Ok(Ok(next)) = next else {
            panic!("next request succeeds: {next:?}")
        };
        assert_eq!(body_text(next).await, "ok");
        assert_eq!(
            seen.accepted(),
            2,
            "the abandoned connection was not reused"
        );
        let stats = ClusterStats::new("h1_abandoned");
        assert!(eventually(LIMIT, || stats.cx_destroy_with_active_rq.get() == 1).await);
        assert!(eventually(LIMIT, || stats.cx_active.get() == 1).await);
        assert_eq!(stats.rq_active.get(), 0);
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
        let Ok(manager) =
            ClusterManager::new(Vec::<crate::config::cluster_spec::ClusterSpec>::new())
        else {
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
