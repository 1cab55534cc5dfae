//! HTTP/2 as a [`PoolProtocol`], on the `h2` crate's client.
//!
//! Streams are multiplexed up to min(the peer's SETTINGS_MAX_CONCURRENT_STREAMS, ours). A
//! connection drains on GOAWAY as on the pool's own rules; a request whose stream could not be
//! opened because the connection is going away, or that the peer refused unprocessed, goes to
//! another one.
//!
//! The handshake is followed by a PING round trip, so the peer's SETTINGS have been applied
//! before the connection's stream limit is read and requests are put on it.

use super::body::GuardedBody;
use super::generic::{Lease, Opened, Pool, PoolProtocol, Ready, StreamLimit};
use crate::body::Body;
use crate::upstream::cluster::{Cluster, ConnectionSlot, HostProtocol, RequestSlot};
use crate::upstream::connect::{self, Connected, UpstreamStream};
use crate::upstream::error::UpstreamError;
use crate::upstream::tunnel::{TunnelPayload, X_WEIR_UPGRADE_METHOD};
use crate::wire::Protocol;
use crate::wire::h2_body::{H2Body, send_body};
use bytes::Bytes;
use h2::SendStream;
use h2::client::{Connection, SendRequest};
use http_body::Body as HttpBody;
use std::sync::Arc;

/// How many connections a request tries when streams cannot be opened on them.
const MAX_SEND_ATTEMPTS: usize = 4;

/// Headers that HTTP/2 forbids (RFC 9113 8.2.2); `te` is allowed only as "trailers".
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// HTTP/2 connections to one host.
pub struct Http2;

impl PoolProtocol for Http2 {
    const NAME: &'static str = "h2";
    const PROTOCOL: HostProtocol = HostProtocol::Http2;
    type Transport = Connected;
    type Connection = SendRequest<Bytes>;
    type Stream = SendRequest<Bytes>;

    fn configured_streams(cluster: &Cluster) -> u32 {
        cluster.spec.http2.max_concurrent_streams
    }

    async fn open(
        pool: &Arc<Pool<Self>>,
        slot: ConnectionSlot,
        adopted: Option<Connected>,
    ) -> Result<Opened<Self>, UpstreamError> {
        let stream = match adopted {
            Some(connected) => connected.stream,
            None => connect::connect(&pool.cluster, &pool.host).await?.stream,
        };
        let handshake = tokio::time::timeout(
            pool.cluster.spec.connect_timeout,
            handshake(&pool.cluster, stream),
        )
        .await;
        let (send, connection, limit) = match handshake {
            Ok(Ok(ready)) => ready,
            Ok(Err(reason)) => {
                pool.cluster.stats.cx_connect_fail.inc();
                return Err(pool.connect_error(reason));
            }
            Err(_) => {
                pool.cluster.stats.cx_connect_fail.inc();
                pool.cluster.stats.cx_connect_timeout.inc();
                return Err(pool.connect_timeout());
            }
        };
        Ok(Opened::Ready(Ready {
            connection: send,
            driver: Box::pin(async move { connection.await.map_err(|e| e.to_string()) }),
            streams: StreamLimit::Known(limit),
            slot,
        }))
    }

    fn take_stream(connection: &mut SendRequest<Bytes>) -> Option<SendRequest<Bytes>> {
        Some(connection.clone())
    }
}

/// The h2 handshake with our SETTINGS, then a PING round trip so that the peer's SETTINGS
/// are applied; returns the stream limit: min(peer's, ours).
async fn handshake(
    cluster: &Cluster,
    stream: UpstreamStream,
) -> Result<(SendRequest<Bytes>, Connection<UpstreamStream, Bytes>, u32), String> {
    let settings = cluster.spec.http2;
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(settings.initial_stream_window_size)
        .initial_connection_window_size(settings.initial_connection_window_size)
        .enable_push(false)
        .handshake::<_, Bytes>(stream)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let mut ping_pong = connection
        .ping_pong()
        .ok_or_else(|| "h2 ping handle already taken".to_owned())?;
    tokio::select! {
        result = &mut connection => {
            return Err(match result {
                Ok(()) => "h2 connection closed during the handshake".to_owned(),
                Err(e) => format!("h2 handshake: {e}"),
            });
        }
        pong = ping_pong.ping(h2::Ping::opaque()) => {
            pong.map_err(|e| format!("h2 settings ping: {e}"))?;
        }
    }
    let peer = connection.max_concurrent_send_streams();
    let ours = settings.max_concurrent_streams.max(1) as usize;
    let limit = u32::try_from(peer.min(ours)).unwrap_or(u32::MAX).max(1);
    Ok((send, connection, limit))
}

impl Pool<Http2> {
    /// Sends `req` on a stream of this pool and returns the response head; the request body
    /// is pumped by a task, and the response body holds `slot` and the stream until done.
    pub async fn send(
        self: &Arc<Self>,
        req: http::Request<Body>,
        slot: RequestSlot,
    ) -> Result<http::Response<Body>, UpstreamError> {
        let (parts, body) = req.into_parts();
        let scheme = if self.cluster.tls.is_some() {
            "https"
        } else {
            "http"
        };
        // A tunnel's payload is the stream's body (see `upstream::tunnel`).
        let payload = parts
            .extensions
            .get::<TunnelPayload>()
            .and_then(TunnelPayload::take);
        let is_tunnel = payload.is_some();
        let body = payload.unwrap_or(body);
        let end_of_stream = body.is_end_stream();
        let mut body = Some(body);
        for _ in 0..MAX_SEND_ATTEMPTS {
            let (lease, send) = self.acquire_stream().await?;
            let head = request_head(&parts, scheme, self.host.addr)
                .map_err(|reason| self.reset(reason))?;
            // An extended CONNECT (`:protocol`, RFC 8441) needs the peer's consent.
            if head.extensions().get::<h2::ext::Protocol>().is_some()
                && !send.is_extended_connect_protocol_enabled()
            {
                self.cluster.stats.rq_reset.inc();
                return Err(self.reset(
                    "the upstream does not accept extended CONNECT: its SETTINGS lack SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441)".into(),
                ));
            }
            let opened = match send.ready().await {
                Ok(mut send) => send.send_request(head, end_of_stream),
                Err(error) => Err(error),
            };
            let (response, stream) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    // Nothing went out: the connection is going away. Try another one.
                    tracing::debug!(%error, "h2 stream not opened; retrying on another connection");
                    lease.retire();
                    continue;
                }
            };
            let lease = Arc::new(lease);
            if let Some(body) = body.take().filter(|_| !end_of_stream) {
                tokio::spawn(pump_request_body(body, stream, lease.clone()));
            }
            match response.await {
                Ok(response) => {
                    let (mut head, recv) = response.into_parts();
                    head.version = http::Version::HTTP_2;
                    // The stream slot and the request's breaker unit are held until the
                    // response body is done.
                    let body = GuardedBody::new(H2Body::new(recv, None), (lease, slot));
                    return Ok(http::Response::from_parts(head, crate::body::boxed(body)));
                }
                Err(error) if end_of_stream && !is_tunnel && refused_unprocessed(&error) => {
                    // The peer did not process the stream (GOAWAY below its id or
                    // REFUSED_STREAM) and there was no body: safe to send again elsewhere.
                    tracing::debug!(%error, "h2 stream refused; retrying on another connection");
                    lease.drain_connection();
                }
                Err(error) => {
                    // Our own reset (the request body failed on the client's side) is not
                    // the upstream's doing.
                    let ours = error.is_reset() && !error.is_remote() && !error.is_library();
                    if !ours {
                        self.cluster.stats.rq_reset.inc();
                    }
                    return Err(self.reset(error.to_string()));
                }
            }
        }
        self.cluster.stats.rq_reset.inc();
        Err(self.reset("no connection could open a stream".into()))
    }
}

/// Whether a stream failed without the peer having processed it.
fn refused_unprocessed(error: &h2::Error) -> bool {
    error.reason() == Some(h2::Reason::REFUSED_STREAM) || (error.is_go_away() && error.is_remote())
}

/// The h2 request head: absolute URI from the scheme, the `host` header (else the host's
/// address) and the origin-form path; connection-specific headers dropped.
pub(super) fn request_head(
    parts: &http::request::Parts,
    scheme: &str,
    fallback_authority: std::net::SocketAddr,
) -> Result<http::Request<()>, String> {
    // The host's address is written out only where the request names no authority.
    let fallback;
    let authority = match parts
        .headers
        .get(http::header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
    {
        Some(authority) => authority,
        None => {
            fallback = fallback_authority.to_string();
            fallback.as_str()
        }
    };
    // An HTTP/1.1 upgrade becomes an extended CONNECT (RFC 8441) with `:protocol`; a method
    // other than GET travels in a header so the next hop can restore it.
    let upgrade = parts
        .headers
        .get(http::header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty());
    let mut builder = http::Uri::builder().authority(authority);
    if parts.method != http::Method::CONNECT || upgrade.is_some() {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |path_and_query| path_and_query.as_str());
        builder = builder.scheme(scheme).path_and_query(path);
    }
    let uri = builder
        .build()
        .map_err(|e| format!("bad request target: {e}"))?;
    let mut head = http::Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = uri;
    *head.version_mut() = http::Version::HTTP_2;
    if let Some(protocol) = upgrade {
        *head.method_mut() = http::Method::CONNECT;
        // `:protocol` in the h2 codec's representation, converted at this edge.
        head.extensions_mut()
            .insert(Protocol::from(protocol).to_h2());
        if parts.method != http::Method::GET && parts.method != http::Method::CONNECT {
            let method = http::HeaderValue::from_str(parts.method.as_str())
                .map_err(|_| "bad method".to_string())?;
            head.headers_mut()
                .insert(X_WEIR_UPGRADE_METHOD.clone(), method);
        }
    }
    let headers = head.headers_mut();
    for (name, value) in &parts.headers {
        let name_str = name.as_str();
        let forbidden = name == http::header::HOST
            || CONNECTION_SPECIFIC.contains(&name_str)
            || (name == http::header::TE && value.as_bytes() != b"trailers");
        if !forbidden {
            headers.append(name.clone(), value.clone());
        }
    }
    Ok(head)
}

/// Copies the request body into the stream with flow control, then its trailers; the
/// stream's slot is held until then.
async fn pump_request_body(body: Body, mut stream: SendStream<Bytes>, lease: Arc<Lease<Http2>>) {
    if let Err(error) = send_body(body, &mut stream).await {
        tracing::debug!(%error, "h2 request body not sent in full");
    }
    drop(lease);
}

#[cfg(test)]
mod tests {
    use crate::stats::ClusterStats;
    use crate::upstream::test_support::{self, eventually, get};
    use crate::upstream::{ClusterManager, UpstreamError, UpstreamProtocol, WorkerPools};
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tokio::time::timeout;

    const LIMIT: Duration = Duration::from_secs(10);

    fn pools_for(
        name: &str,
        port: u16,
        adjust: impl FnOnce(&mut crate::upstream::ClusterSpec),
    ) -> WorkerPools {
        let mut spec = test_support::spec(name, &[port]);
        spec.protocol = UpstreamProtocol::Http2;
        adjust(&mut spec);
        match ClusterManager::new(vec![spec]) {
            Ok(manager) => WorkerPools::new(manager),
            Err(error) => panic!("cluster builds: {error}"),
        }
    }

    async fn send_ok(
        pools: &WorkerPools,
        cluster: &str,
        path: &str,
    ) -> Result<String, UpstreamError> {
        let response = pools.send(cluster, get(path)).await?;
        assert_eq!(response.status(), http::StatusCode::OK);
        match response.into_body().collect().await {
            Ok(body) => Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned()),
            Err(error) => Ok(format!("body error: {error}")),
        }
    }

    /// The upstream allows 2 streams per connection: 5 concurrent slow requests open
    /// exactly 3 connections (2 + 2 + 1), and all succeed.
    #[tokio::test]
    async fn streams_multiplex_up_to_the_peer_limit() {
        let (_goaway, goaway_rx) = tokio::sync::watch::channel(false);
        let (addr, seen) = test_support::http2_server(Some(2), goaway_rx).await;
        let pools = pools_for("h2_streams", addr.port(), |_| {});
        let requests = (0..5).map(|_| {
            let pools = pools.clone();
            tokio::spawn(async move { send_ok(&pools, "h2_streams", "/slow").await })
        });
        let Ok(results) = timeout(LIMIT, futures_util::future::join_all(requests)).await else {
            panic!("requests finish in time")
        };
        for result in results {
            assert!(
                matches!(&result, Ok(Ok(body)) if body == "ok"),
                "{result:?}"
            );
        }
        assert_eq!(seen.accepted(), 3);
        assert_eq!(ClusterStats::new("h2_streams").cx_http2_total.get(), 3);
    }

    /// max_requests_per_connection 10: 25 sequential requests open 3 connections, and the
    /// drained ones close once empty.
    #[tokio::test]
    async fn max_requests_per_connection_drains() {
        let (_goaway, goaway_rx) = tokio::sync::watch::channel(false);
        let (addr, seen) = test_support::http2_server(None, goaway_rx).await;
        let pools = pools_for("h2_max_requests", addr.port(), |spec| {
            spec.max_requests_per_connection = Some(10);
        });
        for _ in 0..25 {
            let result = timeout(LIMIT, send_ok(&pools, "h2_max_requests", "/")).await;
            assert!(
                matches!(&result, Ok(Ok(body)) if body == "ok"),
                "{result:?}"
            );
        }
        assert_eq!(seen.accepted(), 3);
        let stats = ClusterStats::new("h2_max_requests");
        assert_eq!(stats.cx_max_requests.get(), 2);
        assert!(
            eventually(LIMIT, || seen.data_closed() == 2).await,
            "drained connections close"
        );
    }

    /// A GOAWAY from the upstream lets the stream in flight finish, and the next request
    /// goes on a new connection.
    #[tokio::test]
    async fn goaway_drains_and_next_request_uses_a_new_connection() {
        let (goaway, goaway_rx) = tokio::sync::watch::channel(false);
        let (addr, seen) = test_support::http2_server(None, goaway_rx).await;
        let pools = pools_for("h2_goaway", addr.port(), |_| {});
        let slow = {
            let pools = pools.clone();
            tokio::spawn(async move { send_ok(&pools, "h2_goaway", "/slow").await })
        };
        assert!(eventually(LIMIT, || seen.requests() == 1).await);
        let _ = goaway.send(true);
        // Let the GOAWAY reach the client before the next request.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = timeout(LIMIT, send_ok(&pools, "h2_goaway", "/")).await;
        assert!(matches!(&next, Ok(Ok(body)) if body == "ok"), "{next:?}");
        let slow = timeout(LIMIT, slow).await;
        assert!(
            matches!(&slow, Ok(Ok(Ok(body))) if body == "ok"),
            "{slow:?}"
        );
        assert_eq!(seen.accepted(), 2);
        assert!(
            eventually(LIMIT, || seen.data_closed() >= 1).await,
            "the old connection closes"
        );
    }

    /// A 10 MiB chunked request body with trailers streams up with flow control and comes
    /// back, with trailers, as the response body.
    #[tokio::test]
    async fn bodies_and_trailers_stream_both_ways() {
        let (_goaway, goaway_rx) = tokio::sync::watch::channel(false);
        let (addr, _seen) = test_support::http2_server(None, goaway_rx).await;
        let pools = pools_for("h2_echo", addr.port(), |_| {});
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        let mut frames: Vec<Result<Frame<Bytes>, crate::body::BoxError>> =
            (0..160).map(|_| Ok(Frame::data(chunk.clone()))).collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-request-trailer", http::HeaderValue::from_static("yes"));
        frames.push(Ok(Frame::trailers(trailers)));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut request = get("/echo");
        *request.method_mut() = http::Method::POST;
        *request.body_mut() = crate::body::boxed(body);
        let response = timeout(LIMIT, pools.send("h2_echo", request)).await;
        let Ok(Ok(response)) = response else {
            panic!("request succeeds: {response:?}")
        };
        let collected = timeout(LIMIT, response.into_body().collect()).await;
        let Ok(Ok(collected)) = collected else {
            panic!("body arrives")
        };
        let trailers = collected.trailers().cloned().unwrap_or_default();
        assert_eq!(collected.to_bytes().len(), 10 * 1024 * 1024);
        assert_eq!(
            trailers.get("x-request-trailer").map(|v| v.as_bytes()),
            Some(&b"yes"[..])
        );
        assert_eq!(
            trailers.get("x-echo-len").map(|v| v.as_bytes()),
            Some(&b"10485760"[..])
        );
        let stats = ClusterStats::new("h2_echo");
        assert!(eventually(LIMIT, || stats.rq_active.get() == 0).await);
    }

    /// The h2 head: absolute URI from the host header, forbidden headers dropped.
    #[test]
    fn request_head_builds_pseudo_headers_and_drops_connection_headers() {
        let request = http::Request::post("/p?q=1")
            .header("host", "example.test:8443")
            .header("connection", "close")
            .header("te", "gzip")
            .header("x-kept", "1")
            .body(());
        let Ok(request) = request else {
            panic!("request builds")
        };
        let (parts, ()) = request.into_parts();
        let head = super::request_head(&parts, "https", ([127, 0, 0, 1], 1).into());
        let Ok(head) = head else {
            panic!("head builds")
        };
        assert_eq!(head.uri().to_string(), "https://example.test:8443/p?q=1");
        assert!(head.headers().get("connection").is_none());
        assert!(head.headers().get("te").is_none());
        assert!(head.headers().get("host").is_none());
        assert_eq!(
            head.headers().get("x-kept").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }

    /// An idle h2 connection closes after idle_timeout (counted); a host drain closes an
    /// idle connection at once, and the next request gets a fresh one.
    #[tokio::test]
    async fn idle_timeout_and_drain_close_idle_connections() {
        let (_goaway, goaway_rx) = tokio::sync::watch::channel(false);
        let (addr, seen) = test_support::http2_server(None, goaway_rx).await;
        let pools = pools_for("h2_idle", addr.port(), |spec| {
            spec.idle_timeout = Some(Duration::from_millis(200));
        });
        let first = timeout(LIMIT, send_ok(&pools, "h2_idle", "/")).await;
        assert!(matches!(&first, Ok(Ok(body)) if body == "ok"), "{first:?}");
        let stats = ClusterStats::new("h2_idle");
        assert!(
            eventually(LIMIT, || seen.data_closed() == 1).await,
            "idle connection closed"
        );
        assert_eq!(stats.cx_idle_timeout.get(), 1);

        let (_goaway, goaway_rx) = tokio::sync::watch::channel(false);
        let (addr, seen) = test_support::http2_server(None, goaway_rx).await;
        let Ok(manager) = ClusterManager::new(vec![{
            let mut spec = test_support::spec("h2_drain", &[addr.port()]);
            spec.protocol = UpstreamProtocol::Http2;
            spec
        }]) else {
            panic!("cluster builds")
        };
        let pools = WorkerPools::new(manager.clone());
        let first = timeout(LIMIT, send_ok(&pools, "h2_drain", "/")).await;
        assert!(matches!(&first, Ok(Ok(body)) if body == "ok"), "{first:?}");
        let Some(cluster) = manager.cluster("h2_drain") else {
            panic!("cluster exists")
        };
        cluster.hosts()[0].drain_connections();
        assert!(
            eventually(LIMIT, || seen.data_closed() == 1).await,
            "drained connection closed"
        );
        let next = timeout(LIMIT, send_ok(&pools, "h2_drain", "/")).await;
        assert!(matches!(&next, Ok(Ok(body)) if body == "ok"), "{next:?}");
        assert_eq!(seen.accepted(), 2);
    }
}
