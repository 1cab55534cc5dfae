//! How a request waits for a connection: the pending circuit breaker, the `max_connections`
//! breaker, and a deadline so that nothing waits forever.

use crate::upstream::cluster::{Cluster, ConnectionSlot, PendingSlot};
use crate::upstream::error::UpstreamError;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::futures::Notified;
use tokio::time::Instant;

/// How much longer than `connect_timeout` a request may wait for a connection: a connection
/// being made may take `connect_timeout`, and busy connections get this long to free up.
pub const PENDING_WAIT_CAP: Duration = Duration::from_secs(10);

/// One request's wait for a connection.
pub struct PendingWait {
    cluster: Arc<Cluster>,
    deadline: Instant,
    pending: Option<PendingSlot>,
    cx_overflow_counted: bool,
    /// Whether the last try to open a connection found `max_connections` reached.
    blocked_on_connections: bool,
    /// The pool's connect-failure count when the wait began.
    failures_seen: Option<u64>,
}

impl PendingWait {
    /// Starts a wait (nothing is counted until [`PendingWait::enter`]).
    pub fn new(cluster: Arc<Cluster>) -> PendingWait {
        let deadline = Instant::now() + cluster.spec.connect_timeout + PENDING_WAIT_CAP;
        PendingWait {
            cluster,
            deadline,
            pending: None,
            cx_overflow_counted: false,
            blocked_on_connections: false,
            failures_seen: None,
        }
    }

    /// Makes the request pending (once): takes a `max_pending_requests` unit or fails with
    /// `PendingOverflow`. Returns whether it became pending just now.
    pub fn enter(&mut self) -> Result<bool, UpstreamError> {
        if self.pending.is_some() {
            return Ok(false);
        }
        self.pending = Some(self.cluster.try_pending()?);
        Ok(true)
    }

    /// Whether a connection attempt failed since the wait began, given the pool's count of
    /// failures now. The first call records the count.
    pub fn saw_new_failure(&mut self, failures_now: u64) -> bool {
        match self.failures_seen {
            Some(seen) => failures_now > seen,
            None => {
                self.failures_seen = Some(failures_now);
                false
            }
        }
    }

    /// Takes a `max_connections` unit for a new connection; when the breaker is open,
    /// counts `cx_overflow` (once per request) and remembers to wait for a unit to free.
    pub fn open_connection(&mut self) -> Option<ConnectionSlot> {
        let slot = self.cluster.try_open_connection();
        self.blocked_on_connections = slot.is_none();
        if slot.is_none() && !self.cx_overflow_counted {
            self.cx_overflow_counted = true;
            self.cluster.stats.cx_overflow.inc();
        }
        slot
    }

    /// Waits until the pool `changed`, a connection of the cluster closed (when the breaker
    /// held this request back), or the deadline, which fails the request:
    /// `ConnectionOverflow` when the breaker held it back, `ConnectTimeout` otherwise.
    ///
    /// `changed` and `freed` must have been enabled before the pool's state was read, so
    /// that no wake-up between reading and waiting is lost.
    pub async fn wait(
        &mut self,
        host: &str,
        changed: Pin<&mut Notified<'_>>,
        freed: Pin<&mut Notified<'_>>,
    ) -> Result<(), UpstreamError> {
        let blocked = self.blocked_on_connections;
        tokio::select! {
            () = changed => Ok(()),
            () = freed, if blocked => Ok(()),
            () = tokio::time::sleep_until(self.deadline) => {
                if blocked {
                    Err(UpstreamError::ConnectionOverflow(self.cluster.name().to_owned()))
                } else {
                    Err(UpstreamError::ConnectTimeout {
                        cluster: self.cluster.name().to_owned(),
                        host: host.to_owned(),
                    })
                }
            }
        }
    }
}
