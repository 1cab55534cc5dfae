//! [`ConnectionInfo`]: the downstream connection a stream came on, filled in by the listener
//! (TCP, TLS) or the QUIC endpoint, read by the connection manager, the filters' properties and
//! the access log.

use super::WireHead;
use crate::socket::SocketId;
use std::net::SocketAddr;
use std::sync::Arc;

/// The downstream connection a stream came on, as the layers above the wire see it: its
/// addresses, TLS, original destination (sidecar mode), socket and id.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer.
    pub remote: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Where the connection was headed before iptables/nftables redirected it to weir, on a
    /// listener with `use_original_dst` (`None` elsewhere, and where it was not redirected).
    /// `ORIGINAL_DST` clusters send there.
    pub original_dst: Option<SocketAddr>,
    /// Whether the peer presented a client certificate that the listener verified (mutual
    /// TLS); the `connection.mtls` property.
    pub mtls: bool,
    /// The TCP socket under it (none for QUIC): an HTTP/1.1 connection that carries a tunnel
    /// is reset through it when the tunnel is (see [`super::reset`]).
    pub socket: Option<SocketId>,
    /// The connection's id, unique in the process (`%CONNECTION_ID%`).
    pub id: u64,
    /// The TLS server name the client asked for (`%REQUESTED_SERVER_NAME%`).
    pub sni: Option<Arc<str>>,
}

/// A fresh downstream connection id (process-wide, from 1, as Envoy's).
pub fn next_connection_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl ConnectionInfo {
    /// A plain connection from and to 127.0.0.1 (id 1), for tests.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn loopback() -> ConnectionInfo {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        ConnectionInfo {
            remote: addr,
            local: addr,
            tls: false,
            original_dst: None,
            mtls: false,
            socket: None,
            id: 1,
            sni: None,
        }
    }

    /// The socket to reset when a tunnel carried by a request with `head` is reset: the
    /// connection's own for HTTP/1.x (the connection is the tunnel, or carries only it); none
    /// on a multiplexed connection (HTTP/2, HTTP/3), where the stream is reset and the
    /// connection's other streams carry on.
    pub fn tunnel_socket(&self, head: &impl WireHead) -> Option<SocketId> {
        if head.multiplexed() {
            None
        } else {
            self.socket
        }
    }
}
