//! What can go wrong on the upstream side, in the terms the router maps to statuses.

/// Why a request could not be sent upstream, or a cluster could not be built.
///
/// Every variant carries the cluster (and, where there is one, the host) it happened on, so a
/// log line or a local reply can say where. Reasons are kept as text so the error is `Clone`:
/// one failed connection attempt fails every request that was waiting for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No cluster of that name exists.
    #[error("unknown cluster {0:?}")]
    UnknownCluster(String),
    /// The cluster has no healthy host to pick.
    #[error("no healthy upstream in cluster {0:?}")]
    NoHealthyHost(String),
    /// `max_connections` is reached and the request could not get a connection in time.
    #[error("cluster {0:?}: max_connections circuit breaker open")]
    ConnectionOverflow(String),
    /// `max_pending_requests` is reached: the request may not wait for a connection.
    #[error("cluster {0:?}: max_pending_requests circuit breaker open")]
    PendingOverflow(String),
    /// `max_requests` is reached.
    #[error("cluster {0:?}: max_requests circuit breaker open")]
    RequestOverflow(String),
    /// The TCP connection to a host could not be made.
    #[error("cluster {cluster:?}: connecting to {host} failed: {reason}")]
    ConnectFailed {
        /// The cluster.
        cluster: String,
        /// The host's address.
        host: String,
        /// The OS's or the handshake's reason.
        reason: String,
    },
    /// Connecting to a host (TCP and TLS) took longer than `connect_timeout`.
    #[error("cluster {cluster:?}: connecting to {host} timed out")]
    ConnectTimeout {
        /// The cluster.
        cluster: String,
        /// The host's address.
        host: String,
    },
    /// The TLS handshake with a host failed.
    #[error("cluster {cluster:?}: TLS handshake with {host} failed: {reason}")]
    Tls {
        /// The cluster.
        cluster: String,
        /// The host's address.
        host: String,
        /// rustls's reason.
        reason: String,
    },
    /// The connection or the stream was reset before the response head arrived.
    #[error("cluster {cluster:?}: upstream {host} reset before the response head: {reason}")]
    Reset {
        /// The cluster.
        cluster: String,
        /// The host's address.
        host: String,
        /// What the codec said.
        reason: String,
    },
    /// An `ORIGINAL_DST` cluster was asked for a connection that has no usable original
    /// destination: it was not redirected (it was addressed to weir's own listener, so
    /// forwarding it would loop back to weir), or its listener does not read one.
    #[error("cluster {cluster:?}: {reason}")]
    NoOriginalDestination {
        /// The cluster.
        cluster: String,
        /// Why there is none.
        reason: String,
    },
    /// The cluster could not be built (TLS material, addresses).
    #[error("cluster {cluster:?}: {reason}")]
    Config {
        /// The cluster.
        cluster: String,
        /// What is wrong, naming the file where there is one.
        reason: String,
    },
}

impl UpstreamError {
    /// Whether a circuit breaker refused the request (the router answers 503 with
    /// `x-weir-overloaded`).
    pub fn is_overflow(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectionOverflow(_)
                | UpstreamError::PendingOverflow(_)
                | UpstreamError::RequestOverflow(_)
        )
    }

    /// Whether the host itself failed (connect failure or timeout, TLS, a reset before the
    /// response): a local-origin failure for outlier detection.
    pub fn is_host_failure(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectFailed { .. }
                | UpstreamError::ConnectTimeout { .. }
                | UpstreamError::Tls { .. }
                | UpstreamError::Reset { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_variants_are_overflow() {
        assert!(UpstreamError::PendingOverflow("c".into()).is_overflow());
        assert!(UpstreamError::ConnectionOverflow("c".into()).is_overflow());
        assert!(UpstreamError::RequestOverflow("c".into()).is_overflow());
        assert!(!UpstreamError::NoHealthyHost("c".into()).is_overflow());
    }
}
