//! Per-worker connection pools and the dispatch of a request to one.
//!
//! Each worker owns a [`WorkerPools`]: for every (cluster, host) it has an HTTP/1.1 pool, an
//! HTTP/2 pool or both (auto over TLS). Pool state is behind a mutex that only that worker's
//! tasks take; what is shared across workers (circuit breakers, host health, stats) is atomics
//! in [`Cluster`] and [`Host`].

mod body;
mod http1;
mod http2;
mod wait;

use super::cluster::{Cluster, Host, HostProtocol, RequestSlot};
use super::error::UpstreamError;
use super::lb;
use super::manager::ClusterManager;
use super::spec::UpstreamProtocol;
use crate::body::Body;
use http1::Http1Pool;
use http2::Http2Pool;
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

    /// Picks a healthy host by the cluster's `lb_policy`, gets a connection from this worker's
    /// pool (circuit breakers apply), sends `req` and returns the response head with its
    /// streamed body.
    ///
    /// `req.uri()` is origin-form and the `host` header carries the authority; hop-by-hop
    /// headers are already removed. The `max_requests` unit taken here is held until the
    /// response body is done (read to its end, failed or dropped).
    pub async fn send(
        &self,
        cluster: &str,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, UpstreamError> {
        let cluster = self
            .inner
            .manager
            .cluster(cluster)
            .ok_or_else(|| UpstreamError::UnknownCluster(cluster.to_owned()))?;
        let host = lb::pick_host(&cluster)
            .ok_or_else(|| UpstreamError::NoHealthyHost(cluster.name().to_owned()))?;
        let slot = cluster.try_request(&host)?;
        let pools = self.host_pools(&cluster, &host);
        let result = send_to_host(&pools, req, slot).await;
        match &result {
            Ok(response) => cluster.stats.count_response(response.status().as_u16()),
            Err(error) => tracing::debug!(%error, "upstream request failed"),
        }
        result
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
        // that discovery removed, whose connections are already draining.
        hosts.retain(|_, pools| !pools.host.is_removed());
        let speaks_tls = cluster.tls.is_some();
        let (http1, http2) = match cluster.spec.protocol {
            UpstreamProtocol::Http1 => (true, false),
            UpstreamProtocol::Http2 => (false, true),
            UpstreamProtocol::Auto => (true, speaks_tls),
        };
        let http2 = http2.then(|| Http2Pool::new(cluster.clone(), host.clone()));
        let http1 = http1.then(|| Http1Pool::new(cluster.clone(), host.clone(), http2.clone()));
        let pools = HostPools {
            host: host.clone(),
            http1,
            http2,
        };
        hosts.insert(key, pools.clone());
        pools
    }
}

/// Sends on the pool of the host's protocol: HTTP/2 when that is all the cluster speaks or
/// ALPN chose it before, HTTP/1.1 otherwise (whose first connection may find out, by ALPN,
/// that the host speaks h2 and hand the request over).
async fn send_to_host(
    pools: &HostPools,
    req: http::Request<Body>,
    slot: RequestSlot,
) -> Result<http::Response<Body>, UpstreamError> {
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
            Some(http2) => http2.send(*req, slot).await,
            None => Err(UpstreamError::Config {
                cluster: String::new(),
                reason: "host negotiated h2 but the cluster has no h2 pool".into(),
            }),
        },
    }
}
