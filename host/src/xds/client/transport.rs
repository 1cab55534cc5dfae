//! The gRPC channel to the control plane: a connection to one host of its cluster, made by
//! the upstream pools' own code (DNS resolution, `connect_timeout`, TLS with the cluster's
//! rustls config and ALPN h2), handed to tonic for HTTP/2.

use super::MAX_MESSAGE_BYTES;
use crate::config::cluster_spec::{ClusterSpec, Discovery, UpstreamProtocol};
use crate::upstream::connect::{self, UpstreamStream};
use crate::upstream::{Cluster, UpstreamError, resolve_dns};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// The generated ADS client over one connection.
pub(super) type AdsClient = AggregatedDiscoveryServiceClient<Channel>;

/// How often an idle stream is pinged (HTTP/2 PING), so a control plane that vanished without
/// closing the connection (a host down, a partition) is noticed and the client reconnects.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a ping's answer is waited for before the connection is given up.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection to the control plane could not be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum TransportError {
    /// The cluster has no address to dial (a DNS name that did not resolve).
    #[error("cluster {0:?} has no host to connect to")]
    NoHost(String),
    /// TCP or TLS failed or timed out.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// TLS chose another protocol than HTTP/2.
    #[error("cluster {cluster:?}: {host} negotiated {alpn} by ALPN, not h2")]
    NotHttp2 {
        /// The cluster.
        cluster: String,
        /// The host dialled.
        host: String,
        /// What ALPN chose.
        alpn: String,
    },
    /// The HTTP/2 handshake failed or timed out.
    #[error("cluster {cluster:?}: HTTP/2 with {host}: {reason}")]
    Http2 {
        /// The cluster.
        cluster: String,
        /// The host dialled.
        host: String,
        /// tonic's reason.
        reason: String,
    },
}

/// The control plane's cluster, dialled one host after another on successive attempts.
pub(super) struct ControlPlane {
    cluster: Cluster,
    turn: usize,
}

impl ControlPlane {
    /// Builds the cluster's TLS config now (a missing file is an error at start, not on each
    /// attempt). gRPC needs HTTP/2, so ALPN offers h2 whatever the cluster's protocol says
    /// (unless the cluster lists its own ALPN).
    pub(super) fn new(mut spec: ClusterSpec) -> Result<ControlPlane, UpstreamError> {
        spec.protocol = UpstreamProtocol::Http2;
        Ok(ControlPlane {
            cluster: Cluster::new(spec)?,
            turn: 0,
        })
    }

    /// The cluster's name.
    pub(super) fn name(&self) -> &str {
        self.cluster.name()
    }

    /// Opens a connection to the next host and an HTTP/2 channel over it, all within the
    /// cluster's `connect_timeout` (DNS, TCP and TLS; then as long again for HTTP/2).
    pub(super) async fn connect(&mut self) -> Result<AdsClient, TransportError> {
        let limit = self.cluster.spec.connect_timeout;
        if matches!(
            self.cluster.spec.discovery,
            Discovery::StrictDns | Discovery::LogicalDns
        ) {
            // A resolution that hangs leaves the hosts as they were.
            let _ = tokio::time::timeout(limit, resolve_dns(&self.cluster)).await;
        }
        let hosts = self.cluster.hosts();
        if hosts.is_empty() {
            return Err(TransportError::NoHost(self.name().to_owned()));
        }
        let host = hosts[self.turn % hosts.len()].clone();
        self.turn = self.turn.wrapping_add(1);
        let connected = connect::establish(&self.cluster, &host).await?;
        if let UpstreamStream::Tls(tls) = &connected.stream {
            match tls.get_ref().1.alpn_protocol() {
                None | Some(b"h2") => {}
                Some(other) => {
                    return Err(TransportError::NotHttp2 {
                        cluster: self.name().to_owned(),
                        host: host.addr.to_string(),
                        alpn: String::from_utf8_lossy(other).into_owned(),
                    });
                }
            }
        }
        let http2_error = |reason: String| TransportError::Http2 {
            cluster: self.name().to_owned(),
            host: host.addr.to_string(),
            reason,
        };
        // The :authority is the cluster's name, as Envoy's gRPC client sends it.
        let endpoint = Endpoint::from_shared(format!("http://{}", self.name()))
            .or_else(|_| Endpoint::from_shared("http://xds".to_owned()))
            .map_err(|e| http2_error(e.to_string()))?
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let connector = Prepared(Arc::new(Mutex::new(Some(connected.stream))));
        let channel = tokio::time::timeout(limit, endpoint.connect_with_connector(connector))
            .await
            .map_err(|_| http2_error("handshake timed out".to_owned()))?
            .map_err(|e| http2_error(error_chain(&e)))?;
        Ok(AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// An error with its sources, for logs (tonic's top-level text is only "transport error").
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A connector that hands tonic the connection made beforehand, once: when it breaks, the
/// channel fails and the supervisor dials again (with its back-off) rather than tonic.
#[derive(Clone)]
struct Prepared(Arc<Mutex<Option<UpstreamStream>>>);

impl tonic::codegen::Service<Uri> for Prepared {
    type Response = TokioIo<UpstreamStream>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let stream = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        std::future::ready(stream.map(TokioIo::new).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the connection to the control plane closed",
            )
        }))
    }
}
