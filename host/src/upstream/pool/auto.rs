//! Which of a host's pools a request goes to, auto included: the one place that chooses
//! between the protocol pools (`http1.rs`, `http2.rs`, `http3.rs`).
//!
//! - `HTTP1`, `HTTP2`, `HTTP3` clusters: the pool of that protocol, alone.
//! - auto in the clear: HTTP/1.1.
//! - auto over TLS: ALPN offers h2 and http/1.1. Connections are made by the HTTP/1.1 pool;
//!   one whose ALPN chose h2 goes to the HTTP/2 pool ([`offer_to_http2`]), and the host's
//!   protocol is remembered: from then on requests go to the HTTP/2 pool, and those waiting in
//!   the HTTP/1.1 pool move over.
//! - auto with HTTP/3 (by alt-svc or a hint): a host known to speak HTTP/3 gets a QUIC attempt
//!   with a head start, then TCP too; whichever is up first carries the request (see
//!   [`HostPools::auto_picks_http3`]). Hosts not known to speak it use the TCP pools as above.

use super::generic::Pool;
use super::http1::{self, Http1};
use super::http2::Http2;
use super::http3::Http3;
use crate::body::Body;
use crate::upstream::cluster::{Cluster, ConnectionSlot, Host, HostProtocol, RequestSlot};
use crate::upstream::connect::{self, Connected};
use crate::upstream::error::UpstreamError;
use crate::upstream::spec::UpstreamProtocol;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// How long auto waits for a QUIC handshake before TCP carries the request.
const QUIC_HEAD_START: Duration = Duration::from_millis(300);

/// The pools of one worker to one host: those its cluster's protocol needs.
pub(super) struct HostPools {
    pub host: Arc<Host>,
    cluster: Arc<Cluster>,
    http1: Option<Arc<Pool<Http1>>>,
    http2: Option<Arc<Pool<Http2>>>,
    http3: Option<Arc<Pool<Http3>>>,
    /// The QUIC attempt (by when it started) that a TCP handshake was raced against: one
    /// request per attempt races, later ones find that TCP connection in the TCP pools.
    tcp_raced: Mutex<Option<Instant>>,
}

impl HostPools {
    /// Empty pools to `host` for the protocol of `cluster`.
    pub fn new(cluster: &Arc<Cluster>, host: &Arc<Host>) -> HostPools {
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
        .then(|| Pool::new(cluster.clone(), host.clone(), Http3::default()));
        let http2 = http2.then(|| Pool::new(cluster.clone(), host.clone(), Http2));
        // The HTTP/1.1 pool hands ALPN-h2 connections to the HTTP/2 pool when there is one.
        let http1 =
            http1.then(|| Pool::new(cluster.clone(), host.clone(), Http1::new(http2.clone())));
        HostPools {
            host: host.clone(),
            cluster: cluster.clone(),
            http1,
            http2,
            http3,
            tcp_raced: Mutex::new(None),
        }
    }

    /// Sends on the pool of the host's protocol: HTTP/3 as above; HTTP/2 when that is all the
    /// cluster speaks or ALPN chose it before; HTTP/1.1 otherwise (whose first connection may
    /// find out, by ALPN, that the host speaks h2 and hand the request over).
    pub async fn send(
        &self,
        req: http::Request<Body>,
        slot: RequestSlot,
    ) -> Result<http::Response<Body>, UpstreamError> {
        // The h3 paths are boxed so that their (large) futures do not make every h1/h2
        // request's future larger: the future is moved per request.
        if let Some(http3) = &self.http3 {
            if self.http1.is_none() && self.http2.is_none() {
                return Box::pin(http3.send(req, slot)).await;
            }
            if Box::pin(self.auto_picks_http3(http3)).await {
                return Box::pin(http3.send(req, slot)).await;
            }
        }
        let prefer_http2 =
            self.http1.is_none() || self.host.negotiated_protocol() == Some(HostProtocol::Http2);
        if let (true, Some(http2)) = (prefer_http2, &self.http2) {
            return http2.send(req, slot).await;
        }
        let Some(http1) = &self.http1 else {
            // Unreachable by construction: a host has at least one pool.
            return Err(UpstreamError::Config {
                cluster: String::new(),
                reason: "host has no connection pool".into(),
            });
        };
        match http1.send(req, slot).await? {
            http1::Sent::Response(response) => Ok(response),
            http1::Sent::UseHttp2(req, slot) => match &self.http2 {
                Some(http2) => Box::pin(http2.send(*req, slot)).await,
                None => Err(UpstreamError::Config {
                    cluster: String::new(),
                    reason: "host negotiated h2 but the cluster has no h2 pool".into(),
                }),
            },
        }
    }

    /// Auto with HTTP/3: QUIC when a connection is up (preferred once both are). For a host
    /// known to speak HTTP/3 (alt-svc or hint), a QUIC attempt gets [`QUIC_HEAD_START`] from
    /// its start; then a TCP handshake starts too, and whichever is up first carries the
    /// request (a TCP connection that wins goes to the TCP pools; the QUIC attempt goes on and
    /// takes later requests once up). Hosts not known to speak HTTP/3 get no QUIC attempt.
    async fn auto_picks_http3(&self, http3: &Arc<Pool<Http3>>) -> bool {
        let (cluster, host) = (&self.cluster, &self.host);
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
        let Some(http1) = self.http1.as_ref().filter(|_| self.claim_tcp_race(started)) else {
            return false;
        };
        let Some(slot) = cluster.try_open_connection() else {
            return false;
        };
        let tcp = connect::connect(cluster, host);
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

    /// True once per QUIC attempt (by when it `started`), for the request that races a TCP
    /// handshake against it.
    fn claim_tcp_race(&self, started: Instant) -> bool {
        let mut raced = self
            .tcp_raced
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        raced.replace(started) != Some(started)
    }
}

/// Auto over TLS: a connection the HTTP/1.1 pool made goes to the HTTP/2 pool when its ALPN
/// chose h2 (`None`), else it stays (returned). Either way the host's protocol is remembered,
/// so that later requests go straight to its pool.
pub(super) fn offer_to_http2(
    http2: &Arc<Pool<Http2>>,
    host: &Host,
    connected: Connected,
    slot: ConnectionSlot,
) -> Option<(Connected, ConnectionSlot)> {
    if connected.alpn == Some(HostProtocol::Http2) {
        host.set_negotiated_protocol(HostProtocol::Http2);
        http2.adopt(connected, slot);
        return None;
    }
    host.set_negotiated_protocol(HostProtocol::Http1);
    Some((connected, slot))
}
