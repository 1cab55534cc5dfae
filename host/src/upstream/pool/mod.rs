//! Per-worker connection pools and the dispatch of a request to one.
//!
//! Each worker owns a [`WorkerPools`]: for every (cluster, host) it has an HTTP/1.1 pool, an
//! HTTP/2 pool or both (auto over TLS). Pool state is behind a mutex that only that worker's
//! tasks take; what is shared across workers (circuit breakers, host health, stats) is atomics
//! in [`Cluster`] and [`Host`].

mod body;
mod http1;
mod http2;
mod http3;
mod lifecycle;
mod wait;

use super::cluster::{Cluster, Host, HostProtocol, OpenConnection, RequestSlot};
use super::connect::{self, UpstreamStream};
use super::error::UpstreamError;
use super::lb;
use super::manager::ClusterManager;
use super::spec::{Discovery, OriginalDestination, UpstreamProtocol};
use crate::body::Body;
use http1::Http1Pool;
use http2::Http2Pool;
use http3::Http3Pool;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The connection pools of one worker thread, for every cluster of one [`ClusterManager`].
///
/// Cheap to clone; clones share the pools.
#[derive(Clone)]
pub struct WorkerPools {
    inner: Arc<WorkerInner>,
}

struct WorkerInner {
    manager: Arc<ClusterManager>,
    hosts: Mutex<HashMap<(String, SocketAddr), HostPools>>,
}

/// The pools of one worker to one host.
#[derive(Clone)]
struct HostPools {
    host: Arc<Host>,
    http1: Option<Arc<Http1Pool>>,
    http2: Option<Arc<Http2Pool>>,
    http3: Option<Arc<Http3Pool>>,
}

impl std::fmt::Debug for WorkerPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPools").finish_non_exhaustive()
    }
}

impl WorkerPools {
    /// Empty pools for the clusters of `manager`; connections open on first use.
    pub fn new(manager: Arc<ClusterManager>) -> WorkerPools {
        WorkerPools {
            inner: Arc::new(WorkerInner {
                manager,
                hosts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// This worker's pools for the next snapshot's `manager`: the pools to clusters `manager`
    /// shares with this one's (unchanged by the reload) are carried over with their open
    /// connections; the others start empty. Pools left behind close as the streams still using
    /// them finish.
    pub fn successor(&self, manager: Arc<ClusterManager>) -> WorkerPools {
        let hosts = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let kept = hosts
            .iter()
            .filter(|((cluster, _), pools)| {
                manager.cluster(cluster).is_some_and(|new| {
                    self.inner
                        .manager
                        .cluster(cluster)
                        .is_some_and(|old| Arc::ptr_eq(&old, &new))
                        && !pools.host.is_removed()
                })
            })
            .map(|(key, pools)| (key.clone(), pools.clone()))
            .collect();
        WorkerPools {
            inner: Arc::new(WorkerInner {
                manager,
                hosts: Mutex::new(kept),
            }),
        }
    }

    /// Whether `cluster` is configured.
    pub fn has_cluster(&self, cluster: &str) -> bool {
        self.inner.manager.has_cluster(cluster)
    }

    /// Picks a healthy host by the cluster's `lb_policy` (for an `ORIGINAL_DST` cluster: the
    /// [`OriginalDestination`] in `req`'s extensions), gets a connection from this worker's
    /// pool (circuit breakers apply), sends `req` and returns the response head with its
    /// streamed body, and the host's address as an [`super::spec::UpstreamAddress`] in its
    /// extensions.
    ///
    /// `req.uri()` is origin-form and the `host` header carries the authority; hop-by-hop
    /// headers are already removed. The `max_requests` unit taken here is held until the
    /// response body is done (read to its end, failed or dropped).
    pub async fn send(
        &self,
        cluster: &str,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<Body>, UpstreamError> {
        let cluster = self
            .inner
            .manager
            .cluster(cluster)
            .ok_or_else(|| UpstreamError::UnknownCluster(cluster.to_owned()))?;
        let original = req.extensions().get::<OriginalDestination>().copied();
        let host = self.pick_host(&cluster, original)?;
        if req
            .extensions()
            .get::<super::spec::AutoHostRewrite>()
            .is_some()
            && let Some(name) = cluster.dns_name(&host).filter(|name| !name.is_empty())
        {
            req.headers_mut().insert(http::header::HOST, name);
        }
        crate::access_log::http::note_upstream(host.addr);
        let slot = cluster.try_request(&host)?;
        let pools = self.host_pools(&cluster, &host);
        let mut result = send_to_host(&pools, &cluster, req, slot).await;
        match &mut result {
            Ok(response) => {
                response
                    .extensions_mut()
                    .insert(super::spec::UpstreamAddress(host.addr));
                cluster.stats.count_response(response.status().as_u16());
                if let Some(cache) = &cluster.alt_svc
                    && response.version() != http::Version::HTTP_3
                {
                    cache.record(
                        host.addr,
                        &response.headers().get_all(http::header::ALT_SVC),
                    );
                }
            }
            Err(error) => tracing::debug!(%error, "upstream request failed"),
        }
        result
    }

    /// Opens a raw connection (TCP, or TLS where the cluster has a transport socket) to a
    /// healthy host of `cluster`, for a terminated CONNECT or POST tunnel or a tcp_proxy; an
    /// `ORIGINAL_DST` cluster connects to `original`, where the downstream connection was
    /// headed before it was redirected to weir (and fails without one), other clusters ignore
    /// it. The connection counts against `max_connections` for as long as it lives; over the
    /// limit the call fails at once with `ConnectionOverflow`.
    pub async fn connect_raw_to(
        &self,
        cluster: &str,
        original: Option<OriginalDestination>,
    ) -> Result<RawConnection, UpstreamError> {
        let cluster = self
            .inner
            .manager
            .cluster(cluster)
            .ok_or_else(|| UpstreamError::UnknownCluster(cluster.to_owned()))?;
        let host = self.pick_host(&cluster, original)?;
        let Some(slot) = cluster.try_open_connection() else {
            cluster.stats.cx_overflow.inc();
            return Err(UpstreamError::ConnectionOverflow(cluster.name().to_owned()));
        };
        let connected = connect::connect(&cluster, &host).await?;
        let peer = host.addr;
        Ok(RawConnection {
            stream: connected.stream,
            peer,
            guard: RawGuard(OpenConnection::tcp(cluster, host, slot)),
        })
    }

    /// The host a request or connection goes to: the original destination for an
    /// `ORIGINAL_DST` cluster, else a healthy host picked by the cluster's `lb_policy`.
    fn pick_host(
        &self,
        cluster: &Arc<Cluster>,
        original: Option<OriginalDestination>,
    ) -> Result<Arc<Host>, UpstreamError> {
        if cluster.spec.discovery != Discovery::OriginalDst {
            return lb::pick_host(cluster)
                .ok_or_else(|| UpstreamError::NoHealthyHost(cluster.name().to_owned()));
        }
        let Some(OriginalDestination(addr)) = original else {
            return Err(UpstreamError::NoOriginalDestination {
                cluster: cluster.name().to_owned(),
                reason: "the downstream connection has no original destination (it was not \
                         redirected to weir, or its listener does not set use_original_dst)"
                    .into(),
            });
        };
        // The cluster's host for this destination (shared by the workers, listed by
        // `/clusters`): from this worker's own pools when it has them, so the cluster's lock
        // is taken only for a destination new to this worker.
        let known = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(cluster.name().to_owned(), addr))
            .map(|pools| pools.host.clone())
            .filter(|host| !host.is_removed());
        Ok(match known {
            Some(host) => {
                host.mark_used();
                host
            }
            None => cluster.original_host(addr),
        })
    }

    /// This worker's pools to `host`, created on first use.
    fn host_pools(&self, cluster: &Arc<Cluster>, host: &Arc<Host>) -> HostPools {
        let mut hosts = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (cluster.name().to_owned(), host.addr);
        if let Some(pools) = hosts.get(&key)
            && Arc::ptr_eq(&pools.host, host)
        {
            return pools.clone();
        }
        // A new host (or one that came back under the same address): forget pools of hosts
        // that discovery removed, whose connections are already draining, and of original
        // destinations with no connection and no request left.
        let manager = &self.inner.manager;
        hosts.retain(|(name, _), pools| {
            let original_dst = manager
                .cluster(name)
                .is_some_and(|c| c.spec.discovery == Discovery::OriginalDst);
            let unused = pools
                .host
                .cx_active
                .load(std::sync::atomic::Ordering::Acquire)
                <= 0
                && pools
                    .host
                    .rq_active
                    .load(std::sync::atomic::Ordering::Acquire)
                    <= 0;
            let idle_destination = original_dst && unused;
            !(pools.host.is_removed() || idle_destination)
        });
        let speaks_tls = cluster.tls.is_some();
        let (http1, http2) = match cluster.spec.protocol {
            UpstreamProtocol::Http1 => (true, false),
            UpstreamProtocol::Http2 => (false, true),
            UpstreamProtocol::Http3 => (false, false),
            // With HTTP/3 by alt-svc, TCP is there for hosts not (yet) known to speak it.
            UpstreamProtocol::Auto | UpstreamProtocol::AutoHttp3 => (true, speaks_tls),
        };
        let http3 = matches!(
            cluster.spec.protocol,
            UpstreamProtocol::Http3 | UpstreamProtocol::AutoHttp3
        )
        .then(|| Http3Pool::new(cluster.clone(), host.clone()));
        let http2 = http2.then(|| Http2Pool::new(cluster.clone(), host.clone()));
        let http1 = http1.then(|| Http1Pool::new(cluster.clone(), host.clone(), http2.clone()));
        let pools = HostPools {
            host: host.clone(),
            http1,
            http2,
            http3,
        };
        hosts.insert(key, pools.clone());
        pools
    }
}

/// A raw connection to an upstream host (see [`WorkerPools::connect_raw_to`]).
#[derive(Debug)]
pub struct RawConnection {
    /// The byte stream.
    pub stream: UpstreamStream,
    /// The host's address.
    pub peer: SocketAddr,
    /// Keep this while the stream is in use: it holds the `max_connections` unit and the
    /// connection stats.
    pub guard: RawGuard,
}

/// The accounting of a [`RawConnection`], released on drop.
#[derive(Debug)]
pub struct RawGuard(#[allow(dead_code)] OpenConnection);

/// Sends on the pool of the host's protocol: HTTP/2 when that is all the cluster speaks or
/// ALPN chose it before, HTTP/1.1 otherwise (whose first connection may find out, by ALPN,
/// that the host speaks h2 and hand the request over).
/// How long auto waits for a QUIC handshake before TCP carries the request.
const QUIC_HEAD_START: std::time::Duration = std::time::Duration::from_millis(300);

/// Auto with HTTP/3: QUIC when a connection is up (preferred once both are). For a host known
/// to speak HTTP/3 (alt-svc or hint), a QUIC attempt gets [`QUIC_HEAD_START`] from its start;
/// then a TCP handshake starts too, and whichever is up first carries the request (a TCP
/// connection that wins goes to the TCP pools; the QUIC attempt goes on and takes later
/// requests once up). Hosts not known to speak HTTP/3 get no QUIC attempt.
async fn auto_picks_http3(
    http3: &Arc<Http3Pool>,
    cluster: &Arc<Cluster>,
    pools: &HostPools,
) -> bool {
    let host = &pools.host;
    if http3.is_up() {
        return true;
    }
    if cluster.h3_address(host.addr).is_none() {
        return false;
    }
    let Some(started) = http3.start_connecting() else {
        return false;
    };
    if http3.wait_ready(started + QUIC_HEAD_START).await {
        return true;
    }
    let Some(http1) = pools.http1.as_ref().filter(|_| http3.claim_tcp_race()) else {
        return false;
    };
    let Some(slot) = cluster.try_open_connection() else {
        return false;
    };
    let tcp = super::connect::connect(cluster, host);
    tokio::pin!(tcp);
    let quic_deadline = started + cluster.spec.connect_timeout;
    tokio::select! {
        ready = http3.wait_ready(quic_deadline) => {
            if ready {
                // QUIC won; the TCP handshake is dropped.
                return true;
            }
            // QUIC failed or timed out: TCP carries it.
            if let Ok(connected) = tcp.await {
                http1.adopt(connected, slot);
            }
            false
        }
        connected = &mut tcp => {
            if let Ok(connected) = connected {
                http1.adopt(connected, slot);
            }
            false
        }
    }
}

async fn send_to_host(
    pools: &HostPools,
    cluster: &Arc<Cluster>,
    req: http::Request<Body>,
    slot: RequestSlot,
) -> Result<http::Response<Body>, UpstreamError> {
    // The h3 paths are boxed so that their (large) futures do not make every h1/h2 request's
    // future larger: the future is moved per request.
    if let Some(http3) = &pools.http3 {
        if pools.http1.is_none() && pools.http2.is_none() {
            return Box::pin(http3.send(req, slot)).await;
        }
        if Box::pin(auto_picks_http3(http3, cluster, pools)).await {
            return Box::pin(http3.send(req, slot)).await;
        }
    }
    let prefer_http2 =
        pools.http1.is_none() || pools.host.negotiated_protocol() == Some(HostProtocol::Http2);
    if let (true, Some(http2)) = (prefer_http2, &pools.http2) {
        return http2.send(req, slot).await;
    }
    let Some(http1) = &pools.http1 else {
        // Unreachable by construction: a host has at least one pool.
        return Err(UpstreamError::Config {
            cluster: String::new(),
            reason: "host has no connection pool".into(),
        });
    };
    match http1.send(req, slot).await? {
        http1::Sent::Response(response) => Ok(response),
        http1::Sent::UseHttp2(req, slot) => match &pools.http2 {
            Some(http2) => Box::pin(http2.send(*req, slot)).await,

            None => Err(UpstreamError::Config {
                cluster: String::new(),
                reason: "host negotiated h2 but the cluster has no h2 pool".into(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ClusterStats;
    use crate::upstream::spec::UpstreamTlsSpec;
    use crate::upstream::test_support::{self, get};
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tokio::time::timeout;

    const LIMIT: Duration = Duration::from_secs(10);

    fn pools_for(spec: crate::upstream::ClusterSpec) -> WorkerPools {
        match ClusterManager::new(vec![spec]) {
            Ok(manager) => WorkerPools::new(manager),
            Err(error) => panic!("cluster builds: {error}"),
        }
    }

    async fn send_ok(pools: &WorkerPools, cluster: &str) -> Result<String, UpstreamError> {
        let response = timeout(LIMIT, pools.send(cluster, get("/")))
            .await
            .map_err(|_| UpstreamError::NoHealthyHost("test timed out".into()))??;
        let body = response.into_body().collect().await;
        Ok(body
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default())
    }

    /// auto over TLS: ALPN offers h2 and http/1.1; an h2 server gets h2 (the connection the
    /// first request made is handed to the h2 pool and reused), a server that only speaks
    /// http/1.1 gets HTTP/1.1. No CA configured: the certificate is accepted unverified.
    #[tokio::test]
    async fn auto_over_tls_follows_alpn() {
        let (h2_addr, h2_seen) = test_support::tls_server(&[b"h2", b"http/1.1"]).await;
        let (h1_addr, h1_seen) = test_support::tls_server(&[b"http/1.1"]).await;
        let mut specs = Vec::new();
        for (name, port) in [("auto_h2", h2_addr.port()), ("auto_h1", h1_addr.port())] {
            let mut spec = test_support::spec(name, &[port]);
            spec.protocol = UpstreamProtocol::Auto;
            spec.tls = Some(UpstreamTlsSpec::default());
            specs.push(spec);
        }
        let manager = match ClusterManager::new(specs) {
            Ok(manager) => manager,
            Err(error) => panic!("clusters build: {error}"),
        };
        let pools = WorkerPools::new(manager);
        for cluster in ["auto_h2", "auto_h1"] {
            for _ in 0..3 {
                let body = send_ok(&pools, cluster).await;
                assert_eq!(body.ok().as_deref(), Some("ok"), "{cluster}");
            }
        }
        let h2_stats = ClusterStats::new("auto_h2");
        assert_eq!(
            (h2_stats.cx_http2_total.get(), h2_stats.cx_http1_total.get()),
            (1, 0)
        );
        assert_eq!(h2_seen.accepted(), 1);
        assert_eq!(h2_seen.requests(), 3);
        let h1_stats = ClusterStats::new("auto_h1");
        assert_eq!(
            (h1_stats.cx_http2_total.get(), h1_stats.cx_http1_total.get()),
            (0, 1)
        );
        assert_eq!(h1_seen.accepted(), 1);
    }

    /// With a CA the server certificate is verified against the SNI: the right name
    /// connects, a wrong one fails with a TLS error.
    #[tokio::test]
    async fn tls_verifies_against_the_ca_and_sni() {
        let (addr, _seen) = test_support::tls_server(&[b"http/1.1"]).await;
        let mut specs = Vec::new();
        for (name, sni) in [("tls_good_sni", "localhost"), ("tls_bad_sni", "other.test")] {
            let mut spec = test_support::spec(name, &[addr.port()]);
            spec.tls = Some(UpstreamTlsSpec {
                sni: Some(sni.into()),
                ca_file: Some(test_support::testdata("ca.pem")),
                ..Default::default()
            });
            specs.push(spec);
        }
        let Ok(manager) = ClusterManager::new(specs) else {
            panic!("clusters build")
        };
        let pools = WorkerPools::new(manager);
        assert_eq!(
            send_ok(&pools, "tls_good_sni").await.ok().as_deref(),
            Some("ok")
        );
        let bad = send_ok(&pools, "tls_bad_sni").await;
        assert!(matches!(bad, Err(UpstreamError::Tls { .. })), "{bad:?}");
        assert_eq!(ClusterStats::new("tls_bad_sni").cx_connect_fail.get(), 1);
    }

    /// Unknown clusters and missing TLS files are errors, not panics.
    #[tokio::test]
    async fn unknown_cluster_and_bad_tls_files_are_errors() {
        let pools = pools_for(test_support::spec("known", &[1]));
        let unknown = pools.send("unknown", get("/")).await;
        assert!(matches!(unknown, Err(UpstreamError::UnknownCluster(_))));
        let mut spec = test_support::spec("bad_key", &[1]);
        spec.tls = Some(UpstreamTlsSpec {
            cert_chain_file: Some(test_support::testdata("cert.pem")),
            private_key_file: Some("/nonexistent/weir-key.pem".into()),
            ..Default::default()
        });
        let error = ClusterManager::new(vec![spec])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("/nonexistent/weir-key.pem"), "{error}");
    }

    /// max_requests 1: while one response body is unread a second request is refused with
    /// RequestOverflow (counted); once the body is read the breaker lets requests through.
    #[tokio::test]
    async fn max_requests_breaker_holds_until_the_body_is_done() {
        let (addr, _seen) = test_support::http1_server(
            test_support::delayed_ok(Duration::ZERO),
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        )
        .await;
        let mut spec = test_support::spec("max_rq", &[addr.port()]);
        spec.thresholds.max_requests = 1;
        let pools = pools_for(spec);
        let first = timeout(LIMIT, pools.send("max_rq", get("/"))).await;
        let Ok(Ok(first)) = first else {
            panic!("first succeeds: {first:?}")
        };
        let second = pools.send("max_rq", get("/")).await;
        assert!(
            matches!(second, Err(UpstreamError::RequestOverflow(_))),
            "{second:?}"
        );
        assert_eq!(ClusterStats::new("max_rq").rq_overflow.get(), 1);
        assert!(first.into_body().collect().await.is_ok());
        assert_eq!(send_ok(&pools, "max_rq").await.ok().as_deref(), Some("ok"));
    }

    /// A refused connection fails the request with ConnectFailed and counts cx_connect_fail.
    #[tokio::test]
    async fn refused_connection_is_connect_failed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let Ok(port) = listener.and_then(|l| l.local_addr()).map(|a| a.port()) else {
            panic!("bind")
        };
        let pools = pools_for(test_support::spec("refused", &[port]));
        let result = send_ok(&pools, "refused").await;
        assert!(
            matches!(result, Err(UpstreamError::ConnectFailed { .. })),
            "{result:?}"
        );
        let stats = ClusterStats::new("refused");
        assert_eq!(stats.cx_connect_fail.get(), 1);
        assert_eq!(stats.rq_pending_active.get(), 0);
        assert_eq!(stats.rq_active.get(), 0);
    }
}
