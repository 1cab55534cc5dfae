//! One tcp_proxy connection's log entry: written once, when the connection closes, with the
//! bytes both ways (Envoy's `tcp_proxy.access_log`).

use super::AccessLogs;
use super::format::LogContext;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// How a proxied connection ended, as its log line says it.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpOutcome {
    /// The upstream host it was connected to.
    pub upstream: Option<SocketAddr>,
    /// Bytes from downstream to upstream (`%BYTES_RECEIVED%`).
    pub received: u64,
    /// Bytes from upstream to downstream (`%BYTES_SENT%`).
    pub sent: u64,
    /// Envoy's flags: `UF,URX` when no upstream connection could be had, `SI` on the idle
    /// timeout.
    pub flags: &'static str,
    /// Whether `received` and `sent` are the tcp_proxy's own count of the bytes it carried
    /// (the listener's line then says the same, as Envoy's); when not, the listener's line
    /// reads the socket's counters.
    pub counted: bool,
}

/// An open entry for one downstream connection.
#[derive(Debug)]
pub struct TcpEntry {
    logs: Arc<AccessLogs>,
    start: SystemTime,
    started: Instant,
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
    connection_id: u64,
}

impl TcpEntry {
    /// Opens an entry for a connection from `remote` to `local`.
    pub fn start(
        logs: Arc<AccessLogs>,
        remote: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) -> TcpEntry {
        TcpEntry {
            logs,
            start: SystemTime::now(),
            started: Instant::now(),
            remote,
            local,
            connection_id: crate::wire::connection::next_connection_id(),
        }
    }

    /// Writes the line: the connection to `cluster` ended as `outcome` says.
    pub fn finish(self, cluster: &str, outcome: TcpOutcome) {
        let cx = LogContext {
            start: Some(self.start),
            flags: outcome.flags,
            bytes_received: outcome.received,
            bytes_sent: outcome.sent,
            duration: Some(self.started.elapsed()),
            upstream_host: outcome.upstream,
            upstream_cluster: Some(cluster),
            downstream_remote: self.remote,
            downstream_local: self.local,
            connection_id: Some(self.connection_id),
            attempts: Some(u32::from(outcome.upstream.is_some())),
            ..LogContext::default()
        };
        self.logs.log(&cx);
    }
}
