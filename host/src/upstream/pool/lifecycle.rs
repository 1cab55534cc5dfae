//! When a pooled connection closes. The pool's connection driver (see `generic.rs`) asks
//! [`evaluate`] after every change to its entry and sleeps until the deadline it returns (or
//! until poked).

use crate::stats::ClusterStats;
use std::time::Duration;
use tokio::time::Instant;

/// What a connection's driver does next.
pub(super) enum Verdict {
    /// Close the connection: its entry is already gone from the pool.
    Close,
    /// Keep it; look again at this instant (idle deadline), or when poked.
    Keep(Option<Instant>),
}

/// A pool's bookkeeping for one connection, as [`evaluate`] sees it.
pub(super) trait PooledConnection {
    /// The connection's id in its pool.
    fn id(&self) -> u64;
    /// Whether it carries a request (or a tunnel) now: never closed then.
    fn in_use(&self) -> bool;
    /// Whether it takes no new requests (GOAWAY, request cap, health, host removed).
    fn draining(&self) -> bool;
    /// Since when it has been unused, where it is.
    fn idle_since(&self) -> Option<Instant>;
}

/// Decides whether connection `id` closes now: it is gone from `connections`, or unused and
/// draining, or unused for `idle_timeout` (counted in `cx_idle_timeout`). A closing entry is
/// removed from `connections`.
pub(super) fn evaluate<E: PooledConnection>(
    connections: &mut Vec<E>,
    id: u64,
    idle_timeout: Option<Duration>,
    stats: &ClusterStats,
) -> Verdict {
    let Some(index) = connections.iter().position(|e| e.id() == id) else {
        return Verdict::Close;
    };
    let entry = &connections[index];
    if entry.in_use() {
        // Looked at again one idle timeout from now rather than woken when the request ends:
        // a wake per request would cost more than one per timeout period.
        return Verdict::Keep(idle_timeout.map(|timeout| Instant::now() + timeout));
    }
    if entry.draining() {
        connections.swap_remove(index);
        return Verdict::Close;
    }
    match (idle_timeout, entry.idle_since()) {
        (Some(timeout), Some(since)) if since + timeout <= Instant::now() => {
            connections.swap_remove(index);
            stats.cx_idle_timeout.inc();
            Verdict::Close
        }
        (Some(timeout), Some(since)) => Verdict::Keep(Some(since + timeout)),
        _ => Verdict::Keep(None),
    }
}

/// Sleeps until `deadline`, or forever when there is none.
pub(super) async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
