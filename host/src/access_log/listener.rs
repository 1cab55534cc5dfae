//! A listener's own `access_log[]` (Envoy's `Listener.access_log`): one line per downstream
//! connection, written when the connection closes, with what the connection knows and no
//! request of its own: its peers, its duration, the bytes both ways on the socket and, on an
//! HTTP listener, the protocol of its first request (as Envoy's HCM sets the connection's
//! protocol; Envoy's default format then reads `"- - HTTP/1.1" 0 - 80 129 ...`); on a
//! tcp_proxy listener, the upstream host and the flags of the proxied connection (Envoy's
//! tcp_proxy writes them into the connection's stream info, which the listener's log reads).
//!
//! The bytes are the TCP counters of the socket (`tcpi_bytes_received`, `tcpi_bytes_acked`,
//! less the FINs), read just before the socket closes, so they are the bytes on the wire
//! (with TLS, the records). The entry holds a private descriptor of the socket for that read; it is closed
//! right after, so the peer sees the close when the connection's own task is done.

use super::AccessLogs;
use super::format::LogContext;
use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

tokio::task_local! {
    static PROTOCOL: Cell<Option<&'static str>>;
}

/// Notes the protocol of the connection the current task serves (`HTTP/1.1`, `HTTP/2`), for
/// its listener's log line; the first note stays. Nothing where no listener log is open.
pub fn note_protocol(protocol: &'static str) {
    let _ = PROTOCOL.try_with(|noted| {
        if noted.get().is_none() {
            noted.set(Some(protocol));
        }
    });
}

/// An open entry for one accepted connection.
#[derive(Debug)]
pub struct ConnectionEntry {
    logs: Arc<AccessLogs>,
    start: SystemTime,
    started: Instant,
    remote: SocketAddr,
    local: Option<SocketAddr>,
    socket: Option<OwnedFd>,
    connection_id: u64,
    cluster: Option<String>,
    /// A tcp_proxy's upstream host and flags, once its connection ended.
    upstream: Option<SocketAddr>,
    flags: &'static str,
}

impl ConnectionEntry {
    /// Opens an entry for `socket`, accepted from `remote` on `local`.
    pub fn start(
        logs: Arc<AccessLogs>,
        socket: &impl AsRawFd,
        remote: SocketAddr,
        local: Option<SocketAddr>,
    ) -> ConnectionEntry {
        ConnectionEntry {
            logs,
            start: SystemTime::now(),
            started: Instant::now(),
            remote,
            local,
            socket: crate::socket::SocketId::of(socket).and_then(|id| id.dup()),
            connection_id: crate::wire::connection::next_connection_id(),
            cluster: None,
            upstream: None,
            flags: "",
        }
    }

    /// The cluster the connection goes to (a tcp_proxy's), for `%UPSTREAM_CLUSTER%`.
    pub fn with_cluster(mut self, cluster: &str) -> ConnectionEntry {
        self.cluster = Some(cluster.to_owned());
        self
    }

    /// Runs `connection` (the future serving the socket) to its end, then writes the line.
    pub async fn run<F: Future<Output = ()>>(self, connection: F) {
        let protocol = PROTOCOL.scope(Cell::new(None), async move {
            connection.await;
            PROTOCOL.with(Cell::get)
        });
        let protocol = protocol.await;
        self.finish(protocol, None);
    }

    /// Runs a tcp_proxy `connection` to its end, then writes the line with the upstream host
    /// and the flags it ended with.
    pub async fn run_tcp<F: Future<Output = super::tcp::TcpOutcome>>(mut self, connection: F) {
        let outcome = connection.await;
        self.upstream = outcome.upstream;
        self.flags = outcome.flags;
        let counted = outcome.counted.then_some((outcome.received, outcome.sent));
        self.finish(None, counted);
    }

    /// Writes the line; the bytes are `counted` where the connection's user counted them,
    /// else the socket's counters.
    fn finish(self, protocol: Option<&'static str>, counted: Option<(u64, u64)>) {
        let (received, sent) =
            counted.unwrap_or_else(|| self.socket.as_ref().map_or((0, 0), payload_bytes));
        let cx = LogContext {
            start: Some(self.start),
            bytes_received: received,
            bytes_sent: sent,
            duration: Some(self.started.elapsed()),
            downstream_remote: Some(self.remote),
            downstream_local: self.local,
            protocol,
            connection_id: Some(self.connection_id),
            upstream_cluster: self.cluster.as_deref(),
            upstream_host: self.upstream,
            flags: self.flags,
            ..LogContext::default()
        };
        self.logs.log(&cx);
        // The private descriptor closes here, after the read.
        drop(self.socket);
    }
}

/// The payload bytes (received, sent) of `socket`: its TCP counters less the sequence number
/// a FIN takes (the peer's, once received; ours, once acknowledged), read from its state.
fn payload_bytes(socket: &OwnedFd) -> (u64, u64) {
    let Ok(counters) = crate::socket::tcp_counters(socket) else {
        return (0, 0);
    };
    let state = crate::socket::tcp_state(socket).unwrap_or(0);
    // TIME_WAIT 6, CLOSE 7, CLOSE_WAIT 8, LAST_ACK 9, CLOSING 11: the peer's FIN is in.
    let peer_fin = u64::from(matches!(state, 6..=9 | 11));
    // FIN_WAIT2 5, TIME_WAIT 6, CLOSE 7: ours is acknowledged.
    let our_fin = u64::from(matches!(state, 5..=7));
    (
        counters.received.saturating_sub(peer_fin),
        counters.acked.saturating_sub(our_fin),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_noted_protocol_is_kept_and_none_outside_an_entry() {
        note_protocol("HTTP/2");
        let noted = PROTOCOL
            .scope(Cell::new(None), async {
                note_protocol("HTTP/1.1");
                note_protocol("HTTP/2");
                PROTOCOL.with(Cell::get)
            })
            .await;
        assert_eq!(noted, Some("HTTP/1.1"));
    }
}
