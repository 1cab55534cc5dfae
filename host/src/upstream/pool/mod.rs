//! Per-worker connection pools and the dispatch of a request to one.
//!
//! Each worker owns a [`WorkerPools`]: for every (cluster, host) it has the pools its
//! cluster's protocol needs (`auto.rs`), each a [`generic::Pool`] of one protocol (`http1.rs`,
//! `http2.rs`, `http3.rs`). Pool state is behind a mutex that only that worker's tasks take;
//! what is shared across workers (circuit breakers, host health, stats) is atomics in
//! [`Cluster`] and [`Host`].

mod auto;
mod body;
mod generic;
mod http1;
mod http2;
mod http3;
mod lifecycle;
mod wait;

use super::cluster::{Cluster, Host, OpenConnection};
use super::connect::{self, UpstreamStream};
use super::error::UpstreamError;
use super::lb;
use super::manager::ClusterManager;
use super::outlier::Outcome;
use super::spec::{Discovery, OriginalDestination};
use crate::body::Body;
use auto::HostPools;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The connection pools of one worker thread, for every cluster of one [`ClusterManager`].
///
/// Cheap to clone; clones share the pools.
#[derive(Clone)]
pub struct WorkerPools {
    inner: Arc<WorkerInner>,
    /// Told the host each request is sent to (see [`WorkerPools::noting_hosts`]).
    note_host: Option<fn(SocketAddr)>,
}

struct WorkerInner {
    manager: Arc<ClusterManager>,
    hosts: Mutex<HostPoolMap>,
}

/// This worker's pools by cluster name, then by host address: a request's lookup borrows
/// its cluster's name (no key is built per request).
type HostPoolMap = HashMap<String, HashMap<SocketAddr, Arc<HostPools>>>;

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
            note_host: None,
        }
    }

    /// These pools, calling `note` with the host each request is sent to (once per
    /// [`WorkerPools::send`], before the circuit breakers are checked), on the sending task:
    /// the access log notes the host and counts the attempt this way.
    pub fn noting_hosts(self, note: fn(SocketAddr)) -> WorkerPools {
        WorkerPools {
            note_host: Some(note),
            ..self
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
            .filter(|(cluster, _)| {
                manager.cluster(cluster).is_some_and(|new| {
                    self.inner
                        .manager
                        .cluster(cluster)
                        .is_some_and(|old| Arc::ptr_eq(&old, &new))
                })
            })
            .map(|(cluster, by_addr)| {
                let by_addr = by_addr
                    .iter()
                    .filter(|(_, pools)| !pools.host.is_removed())
                    .map(|(addr, pools)| (*addr, pools.clone()))
                    .collect();
                (cluster.clone(), by_addr)
            })
            .collect();
        WorkerPools {
            inner: Arc::new(WorkerInner {
                manager,
                hosts: Mutex::new(kept),
            }),
            note_host: self.note_host,
        }
    }

    /// Whether `cluster` is configured.
    pub fn has_cluster(&self, cluster: &str) -> bool {
        self.inner.manager.has_cluster(cluster)
    }

    /// `cluster`'s hosts as (healthy, total) now; `None` when it is not configured.
    pub fn cluster_health(&self, cluster: &str) -> Option<(usize, usize)> {
        let hosts = self.inner.manager.cluster(cluster)?.hosts();
        let healthy = hosts.iter().filter(|host| host.is_healthy()).count();
        Some((healthy, hosts.len()))
    }

    /// Whether `cluster` has `outlier_detection`.
    pub fn has_outlier_detection(&self, cluster: &str) -> bool {
        self.inner
            .manager
            .cluster(cluster)
            .is_some_and(|cluster| cluster.outlier.is_some())
    }

    /// Tells outlier detection that a request to `host` of `cluster` ran past its route's
    /// timeout: a local-origin failure (a 504 from the host, without
    /// `split_external_local_origin_errors`), as Envoy counts it.
    pub fn record_timeout(&self, cluster: &str, host: SocketAddr) {
        let Some(cluster) = self.inner.manager.cluster(cluster) else {
            return;
        };
        if cluster.outlier.is_none() {
            return;
        }
        if let Some(host) = cluster.hosts().iter().find(|h| h.addr == host) {
            cluster.record_outcome(host, Outcome::LocalTimeout);
        }
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
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, UpstreamError> {
        self.send_avoiding(cluster, req, &[], 1).await.0
    }

    /// As [`WorkerPools::send`], for a retry: the load balancer picks up to `picks` times
    /// while its pick is one of `avoid` (the hosts tried already, with a `previous_hosts`
    /// retry predicate), and the last pick stands (Envoy's
    /// `host_selection_retry_max_attempts`). Returns the host the request went to, if one
    /// was picked.
    pub async fn send_avoiding(
        &self,
        cluster: &str,
        req: http::Request<Body>,
        avoid: &[SocketAddr],
        picks: u32,
    ) -> (
        Result<http::Response<Body>, UpstreamError>,
        Option<SocketAddr>,
    ) {
        let Some(cluster) = self.inner.manager.cluster(cluster) else {
            return (Err(UpstreamError::UnknownCluster(cluster.to_owned())), None);
        };
        let original = req.extensions().get::<OriginalDestination>().copied();
        let hash = req
            .extensions()
            .get::<super::spec::LbHashKey>()
            .map(|key| key.0);
        let host = match self.pick_host_avoiding(&cluster, original, hash, avoid, picks) {
            Ok(host) => host,
            Err(error) => return (Err(error), None),
        };
        let result = self.send_to(&cluster, &host, req).await;
        (result, Some(host.addr))
    }

    /// The cluster `name`, for the router's own accounting against it (its retries).
    pub fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.inner.manager.cluster(name)
    }

    /// Sends `req` to `host` of `cluster` (see [`WorkerPools::send`]).
    async fn send_to(
        &self,
        cluster: &Arc<Cluster>,
        host: &Arc<Host>,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<Body>, UpstreamError> {
        if req
            .extensions()
            .get::<super::spec::AutoHostRewrite>()
            .is_some()
            && let Some(name) = cluster.dns_name(host).filter(|name| !name.is_empty())
        {
            req.headers_mut().insert(http::header::HOST, name);
        }
        if let Some(note) = self.note_host {
            note(host.addr);
        }
        if let Some(picked) = req.extensions().get::<super::spec::PickedHostNote>() {
            let _ = picked.0.set(host.addr);
        }
        let slot = cluster.try_request(host)?;
        let pools = self.host_pools(cluster, host);
        let mut result = pools.send(req, slot).await;
        match &mut result {
            Ok(response) => {
                response
                    .extensions_mut()
                    .insert(super::spec::UpstreamAddress(host.addr));
                cluster.stats.count_response(response.status().as_u16());
                cluster.record_outcome(host, Outcome::Status(response.status().as_u16()));
                // Envoy reads the header only where the cluster health checks its hosts: a
                // lookup saved on every other response.
                if cluster.spec.health_check.is_some()
                    && response
                        .headers()
                        .contains_key("x-envoy-immediate-health-check-fail")
                {
                    cluster.immediate_health_check_fail(host);
                }
                if let Some(cache) = &cluster.alt_svc
                    && !crate::wire::WireHead::over_quic(response)
                {
                    cache.record(
                        host.addr,
                        &response.headers().get_all(http::header::ALT_SVC),
                    );
                }
            }
            Err(error) => {
                tracing::debug!(%error, "upstream request failed");
                if error.is_host_failure() {
                    cluster.record_outcome(host, Outcome::LocalFailure);
                }
            }
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
        let host = self.pick_host(&cluster, original, None)?;
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
        hash: Option<u64>,
    ) -> Result<Arc<Host>, UpstreamError> {
        self.pick_host_avoiding(cluster, original, hash, &[], 1)
    }

    /// As [`WorkerPools::pick_host`], picking again (up to `picks` picks in all) while the
    /// pick is one of `avoid`; an `ORIGINAL_DST` cluster has one host to go to.
    fn pick_host_avoiding(
        &self,
        cluster: &Arc<Cluster>,
        original: Option<OriginalDestination>,
        hash: Option<u64>,
        avoid: &[SocketAddr],
        picks: u32,
    ) -> Result<Arc<Host>, UpstreamError> {
        if cluster.spec.discovery != Discovery::OriginalDst {
            let mut picked = None;
            for _ in 0..picks.max(1) {
                let Some(host) = lb::pick_host_for(cluster, hash) else {
                    break;
                };
                let again = avoid.contains(&host.addr);
                picked = Some(host);
                if !again {
                    break;
                }
            }
            return picked.ok_or_else(|| UpstreamError::NoHealthyHost(cluster.name().to_owned()));
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
            .get(cluster.name())
            .and_then(|by_addr| by_addr.get(&addr))
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
    fn host_pools(&self, cluster: &Arc<Cluster>, host: &Arc<Host>) -> Arc<HostPools> {
        let mut hosts = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(pools) = hosts
            .get(cluster.name())
            .and_then(|by_addr| by_addr.get(&host.addr))
            && Arc::ptr_eq(&pools.host, host)
        {
            return pools.clone();
        }
        // A new host (or one that came back under the same address): forget pools of hosts
        // that discovery removed, whose connections are already draining, and of original
        // destinations with no connection and no request left.
        let manager = &self.inner.manager;
        hosts.retain(|name, by_addr| {
            let original_dst = manager
                .cluster(name)
                .is_some_and(|c| c.spec.discovery == Discovery::OriginalDst);
            by_addr.retain(|_, pools| still_wanted(pools, original_dst));
            !by_addr.is_empty()
        });
        let pools = Arc::new(HostPools::new(cluster, host));
        hosts
            .entry(cluster.name().to_owned())
            .or_default()
            .insert(host.addr, pools.clone());
        pools
    }
}

/// Whether pools to a host stay in a worker's map: not when discovery removed the host
/// (its connections are already draining), nor for an original destination with no
/// connection and no request left.
fn still_wanted(pools: &HostPools, original_dst: bool) -> bool {
    use std::sync::atomic::Ordering;
    let unused = pools.host.cx_active.load(Ordering::Acquire) <= 0
        && pools.host.rq_active.load(Ordering::Acquire) <= 0;
    let idle_destination = original_dst && unused;
    !(pools.host.is_removed() || idle_destination)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ClusterStats;
    use crate::upstream::spec::{UpstreamProtocol, UpstreamTlsSpec};
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

    /// The host note is called once per send with the picked host, also when a breaker then
    /// refuses the request, and it carries over to the next snapshot's pools.
    #[tokio::test]
    async fn the_host_note_sees_every_attempt() {
        static NOTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        fn note(host: SocketAddr) {
            if host.port() == 1 {
                NOTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let mut spec = test_support::spec("noted", &[1]);
        spec.thresholds.max_requests = 0;
        let Ok(manager) = ClusterManager::new(vec![spec]) else {
            panic!("cluster builds")
        };
        let pools = WorkerPools::new(manager.clone()).noting_hosts(note);
        let refused = pools.send("noted", get("/")).await;
        assert!(
            matches!(refused, Err(UpstreamError::RequestOverflow(_))),
            "{refused:?}"
        );
        let next = pools.successor(manager);
        let refused = next.send("noted", get("/")).await;
        assert!(matches!(refused, Err(UpstreamError::RequestOverflow(_))));
        assert_eq!(NOTED.load(std::sync::atomic::Ordering::SeqCst), 2);
        let unnoted = pools_for(test_support::spec("unnoted", &[1]));
        let _ = timeout(LIMIT, unnoted.send("unnoted", get("/"))).await;
        assert_eq!(NOTED.load(std::sync::atomic::Ordering::SeqCst), 2);
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

    /// A retry avoiding the hosts tried already picks again, up to its number of picks;
    /// when every pick is one to avoid, the last pick stands.
    #[test]
    fn a_retry_avoids_the_hosts_tried_within_its_picks() {
        let Ok(manager) = ClusterManager::new(vec![test_support::spec("avoid", &[1, 2])]) else {
            panic!("cluster builds")
        };
        let pools = WorkerPools::new(manager);
        let Some(cluster) = pools.cluster("avoid") else {
            panic!("cluster")
        };
        let tried = [SocketAddr::from(([127, 0, 0, 1], 1))];
        for _ in 0..10 {
            let host = pools.pick_host_avoiding(&cluster, None, None, &tried, 2);
            assert_eq!(host.map(|h| h.addr.port()).ok(), Some(2));
        }
        let both = [tried[0], SocketAddr::from(([127, 0, 0, 1], 2))];
        assert!(
            pools
                .pick_host_avoiding(&cluster, None, None, &both, 3)
                .is_ok()
        );
        // One pick (no host_selection_retry_max_attempts): round robin decides alone.
        let ports: Vec<u16> = (0..4)
            .filter_map(|_| {
                pools
                    .pick_host_avoiding(&cluster, None, None, &tried, 1)
                    .ok()
            })
            .map(|h| h.addr.port())
            .collect();
        assert!(ports.contains(&1) && ports.contains(&2), "{ports:?}");
    }
}
