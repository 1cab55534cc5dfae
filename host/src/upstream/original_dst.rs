//! The hosts of an `ORIGINAL_DST` cluster: one per original destination, made when a
//! redirected connection first needs it and dropped by a sweep every `cleanup_interval` when
//! it was not picked since the previous sweep and has no connection or request (Envoy's rule).
//!
//! The hosts are the cluster's, shared by every worker (as Envoy's are), so `/clusters` lists
//! them with their counters and the `membership_total` gauge counts them. Each worker still
//! keeps its own pools per host (see `pool`); a host the sweep removed is marked removed, and
//! the workers forget its pools.

use super::cluster::{Cluster, Host};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

/// The destinations an `ORIGINAL_DST` cluster knows now.
#[derive(Debug, Default)]
pub struct OriginalDestinations {
    hosts: Mutex<HashMap<SocketAddr, Arc<Host>>>,
}

impl Cluster {
    /// The host for original destination `addr` (created on first use), marked used. Workers
    /// call it only for a destination they have no pools to yet (see `pool`), so the lock
    /// shared by the workers is not taken per request.
    pub fn original_host(&self, addr: SocketAddr) -> Arc<Host> {
        let mut hosts = self
            .original
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(host) = hosts.get(&addr) {
            host.mark_used();
            return host.clone();
        }
        let host = Arc::new(Host::new(addr));
        hosts.insert(addr, host.clone());
        self.publish_original_hosts(&hosts);
        host
    }

    /// Drops the destinations that were not picked since the previous sweep and have no open
    /// connection and no request in flight. Returns how many were dropped.
    pub fn sweep_original_hosts(&self) -> usize {
        let mut hosts = self
            .original
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = hosts.len();
        hosts.retain(|_, host| {
            let used = host.take_used();
            let stale = !used
                && host.cx_active.load(Ordering::Acquire) <= 0
                && host.rq_active.load(Ordering::Acquire) <= 0;
            if stale {
                host.remove();
            }
            !stale
        });
        let dropped = before - hosts.len();
        if dropped > 0 {
            self.publish_original_hosts(&hosts);
        }
        dropped
    }

    /// Makes the host set (what `/clusters` and the membership gauges show) the destinations
    /// known now, in address order.
    fn publish_original_hosts(&self, hosts: &HashMap<SocketAddr, Arc<Host>>) {
        let mut list: Vec<Arc<Host>> = hosts.values().cloned().collect();
        list.sort_by_key(|host| host.addr);
        self.store_hosts(list);
    }
}

/// Sweeps `cluster`'s destinations every `cleanup_interval`, for as long as the task runs.
pub async fn run_cleanup(cluster: Arc<Cluster>) {
    let period = cluster.spec.cleanup_interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let dropped = cluster.sweep_original_hosts();
        if dropped > 0 {
            tracing::debug!(
                cluster = cluster.name(),
                dropped,
                "dropped original destinations unused for cleanup_interval"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::spec::Discovery;
    use crate::upstream::test_support;
    use std::time::Duration;

    fn cluster() -> Cluster {
        let mut spec = test_support::spec("passthrough", &[]);
        spec.discovery = Discovery::OriginalDst;
        spec.cleanup_interval = Duration::from_secs(5);
        match Cluster::new(spec) {
            Ok(cluster) => cluster,
            Err(e) => panic!("{e}"),
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn one_shared_host_per_destination_listed_in_the_host_set() {
        let cluster = cluster();
        let a = cluster.original_host(addr(80));
        let again = cluster.original_host(addr(80));
        assert!(Arc::ptr_eq(&a, &again));
        cluster.original_host(addr(81));
        let listed: Vec<SocketAddr> = cluster.hosts().iter().map(|h| h.addr).collect();
        assert_eq!(listed, [addr(80), addr(81)]);
        assert_eq!(cluster.stats.membership_total.get(), 2);
    }

    #[test]
    fn the_sweep_drops_only_destinations_unused_for_the_interval() {
        let cluster = cluster();
        let idle = cluster.original_host(addr(80));
        let connected = cluster.original_host(addr(81));
        connected.cx_active.fetch_add(1, Ordering::AcqRel);
        let busy = cluster.original_host(addr(82));
        busy.rq_active.fetch_add(1, Ordering::AcqRel);
        assert_eq!(cluster.sweep_original_hosts(), 0, "all used just now");
        assert_eq!(cluster.sweep_original_hosts(), 1);
        assert!(idle.is_removed());
        assert!(!connected.is_removed() && !busy.is_removed());
        let listed: Vec<SocketAddr> = cluster.hosts().iter().map(|h| h.addr).collect();
        assert_eq!(listed, [addr(81), addr(82)]);
        // A destination seen again after its sweep is a new host.
        let back = cluster.original_host(addr(80));
        assert!(!Arc::ptr_eq(&back, &idle) && !back.is_removed());
    }
}
