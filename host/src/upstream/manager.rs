//! The process-wide set of clusters and their background tasks.

use super::cluster::Cluster;
use super::error::UpstreamError;
use super::spec::{ClusterSpec, Discovery};
use super::{dns, health};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::task::JoinHandle;

/// Every cluster of one config snapshot, shared by all workers.
///
/// A reload builds the next snapshot's manager with [`ClusterManager::successor`]: a cluster
/// whose spec did not change is the same [`Cluster`] (its hosts, health, circuit breakers, and
/// the workers' pools to it, carry over); a changed or new one starts afresh.
pub struct ClusterManager {
    clusters: HashMap<String, Arc<Cluster>>,
    /// Clusters built by [`Cluster::after_eds_update`] from the previous manager's: they
    /// take over its hosts, so its health checker stops when they are in force.
    eds_updated: std::collections::HashSet<String>,
    started: AtomicBool,
    /// Health checkers and DNS resolvers, by cluster name.
    background: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for ClusterManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterManager")
            .field("clusters", &self.clusters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ClusterManager {
    /// Builds every cluster (TLS client configs included: a missing or unreadable CA, cert or
    /// key is an error naming the file). Spawns nothing.
    pub fn new(
        specs: Vec<impl Into<Arc<ClusterSpec>>>,
    ) -> Result<Arc<ClusterManager>, UpstreamError> {
        let mut clusters = HashMap::with_capacity(specs.len());
        for spec in specs {
            let spec: Arc<ClusterSpec> = spec.into();
            let name = spec.name.clone();
            let cluster = Arc::new(Cluster::new(spec)?);
            if clusters.insert(name.clone(), cluster).is_some() {
                return Err(UpstreamError::Config {
                    cluster: name,
                    reason: "duplicate cluster name".into(),
                });
            }
        }
        Ok(Arc::new(ClusterManager {
            clusters,
            eds_updated: Default::default(),
            started: AtomicBool::new(false),
            background: Mutex::new(HashMap::new()),
        }))
    }

    /// The manager of the next snapshot: `specs` built as [`ClusterManager::new`] does, except
    /// that a cluster of `previous` with the same name and an equal spec is taken as it is.
    /// Spawns nothing and changes nothing in `previous` (the reload may still be refused); once
    /// it is in force, call [`ClusterManager::take_over_background`].
    pub fn successor(
        previous: &ClusterManager,
        specs: Vec<impl Into<Arc<ClusterSpec>>>,
    ) -> Result<Arc<ClusterManager>, UpstreamError> {
        let mut clusters = HashMap::with_capacity(specs.len());
        let mut eds_updated = std::collections::HashSet::new();
        for spec in specs {
            let spec: Arc<ClusterSpec> = spec.into();
            let name = spec.name.clone();
            let cluster = match previous.clusters.get(&name) {
                // The same spec (a control plane's cluster that did not change), or an equal
                // one (a file read again).
                Some(same) if Arc::ptr_eq(&same.spec, &spec) || *same.spec == *spec => same.clone(),
                // EDS changed its endpoints alone: the hosts carry over, as Envoy's.
                Some(old) if old.spec.eds && spec.eds && old.spec.same_but_endpoints(&spec) => {
                    eds_updated.insert(name.clone());
                    Arc::new(Cluster::after_eds_update(spec, old)?)
                }
                _ => Arc::new(Cluster::new(spec)?),
            };
            if clusters.insert(name.clone(), cluster).is_some() {
                return Err(UpstreamError::Config {
                    cluster: name,
                    reason: "duplicate cluster name".into(),
                });
            }
        }
        Ok(Arc::new(ClusterManager {
            clusters,
            eds_updated,
            started: AtomicBool::new(false),
            background: Mutex::new(HashMap::new()),
        }))
    }

    /// Starts the background tasks of a successor: the clusters it shares with `previous` keep
    /// theirs (moved over, so they run on when `previous` is dropped); the others get new ones
    /// on the current tokio runtime. `previous` keeps the tasks of the clusters that were
    /// changed or removed until it is dropped (when the streams still using it are done),
    /// except a cluster EDS updated: its old tasks stop, and the new cluster takes over the
    /// hosts it shares with the old one ([`Cluster::take_over_hosts`]).
    pub fn take_over_background(self: &Arc<Self>, previous: &ClusterManager) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut theirs = previous
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut background = self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (name, cluster) in &self.clusters {
            let shared = previous
                .clusters
                .get(name)
                .is_some_and(|old| Arc::ptr_eq(old, cluster));
            let tasks = match theirs.remove(name) {
                Some(tasks) if shared => tasks,
                // The hosts are this cluster's now: the old checker would race its own.
                Some(tasks) if self.eds_updated.contains(name) => {
                    for task in tasks {
                        task.abort();
                    }
                    cluster.take_over_hosts();
                    spawn_background(cluster)
                }
                not_shared => {
                    if let Some(tasks) = not_shared {
                        theirs.insert(name.clone(), tasks);
                    }
                    if self.eds_updated.contains(name) {
                        cluster.take_over_hosts();
                    }
                    spawn_background(cluster)
                }
            };
            background.insert(name.clone(), tasks);
        }
    }

    /// Spawns health checkers and DNS resolvers on the current tokio runtime. Only the first
    /// call spawns; later ones do nothing.
    pub fn start_background(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut background = self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (name, cluster) in &self.clusters {
            background.insert(name.clone(), spawn_background(cluster));
        }
    }

    /// Stops the background tasks (config reload, shutdown).
    pub fn shutdown(&self) {
        let mut background = self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, tasks) in background.drain() {
            for task in tasks {
                task.abort();
            }
        }
    }

    /// Waits until every cluster has initialized (see [`Cluster::initialized`]): those with
    /// active health checks once each host has had its first check, which the check's
    /// `timeout` bounds. Envoy holds its listeners for this; call it after
    /// [`ClusterManager::start_background`].
    pub async fn initialized(&self) {
        for cluster in self.clusters.values() {
            cluster.initialized().await;
        }
    }

    /// Whether a cluster of that name exists.
    pub fn has_cluster(&self, name: &str) -> bool {
        self.clusters.contains_key(name)
    }

    /// The cluster of that name.
    pub fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(name).cloned()
    }

    /// Every cluster with its name, in the order of the names (the admin's `/clusters`).
    pub fn by_name(&self) -> Vec<(&str, &Arc<Cluster>)> {
        let mut clusters: Vec<(&str, &Arc<Cluster>)> = self
            .clusters
            .iter()
            .map(|(name, cluster)| (name.as_str(), cluster))
            .collect();
        clusters.sort_unstable_by_key(|(name, _)| *name);
        clusters
    }

    /// Envoy's `/clusters` text: per cluster its default-priority thresholds, per host (by
    /// priority level) its counters and health flags.
    pub fn clusters_text(&self) -> String {
        let mut out = String::new();
        for (name, cluster) in self.by_name() {
            let thresholds = cluster.spec.thresholds;
            for (setting, value) in [
                ("max_connections", thresholds.max_connections),
                ("max_pending_requests", thresholds.max_pending_requests),
                ("max_requests", thresholds.max_requests),
                ("max_retries", thresholds.max_retries),
            ] {
                let _ = writeln!(out, "{name}::default_priority::{setting}::{value}");
            }
            // Envoy lists its hosts by priority level (its host sets in order).
            let mut hosts: Vec<_> = cluster.hosts().iter().cloned().collect();
            hosts.sort_by_key(|host| host.priority());
            for host in &hosts {
                let addr = host.addr;
                let _ = writeln!(
                    out,
                    "{name}::{addr}::cx_active::{}",
                    host.cx_active.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    out,
                    "{name}::{addr}::rq_active::{}",
                    host.rq_active.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    out,
                    "{name}::{addr}::rq_total::{}",
                    host.rq_total.load(Ordering::Relaxed)
                );
                let flags = health_flags(host);
                let _ = writeln!(out, "{name}::{addr}::health_flags::{flags}");
            }
        }
        out
    }
}

/// A host's health flags as Envoy's `/clusters` writes them, in Envoy's order.
fn health_flags(host: &super::cluster::Host) -> String {
    use super::spec::EndpointHealth;
    let eds = host.eds_health();
    let mut flags = String::new();
    for (set, flag) in [
        (!host.is_healthy(), "/failed_active_hc"),
        (host.outlier.is_ejected(), "/failed_outlier_check"),
        (eds == EndpointHealth::Unhealthy, "/failed_eds_health"),
        (host.is_degraded_active_hc(), "/degraded_active_hc"),
        (eds == EndpointHealth::Degraded, "/degraded_eds_health"),
        (host.is_pending_removal(), "/pending_dynamic_removal"),
        (host.is_pending_first_check(), "/pending_active_hc"),
        (
            host.is_immediate_hc_fail(),
            "/excluded_via_immediate_hc_fail",
        ),
        (host.is_active_hc_timeout(), "/active_hc_timeout"),
        (eds == EndpointHealth::Draining, "/eds_status_draining"),
    ] {
        if set {
            flags.push_str(flag);
        }
    }
    if flags.is_empty() {
        flags.push_str("healthy");
    }
    flags
}

/// A cluster's DNS resolver and health checker, as its spec asks.
fn spawn_background(cluster: &Arc<Cluster>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    // Only DNS clusters resolve names; STATIC and ORIGINAL_DST ones have nothing to resolve.
    if matches!(
        cluster.spec.discovery,
        Discovery::StrictDns | Discovery::LogicalDns
    ) {
        tasks.push(tokio::spawn(dns::run(cluster.clone())));
    }
    if let Some(spec) = &cluster.spec.health_check {
        tasks.push(tokio::spawn(health::run(cluster.clone(), spec.clone())));
    }
    if cluster.outlier.is_some() {
        tasks.push(tokio::spawn(super::outlier::run(cluster.clone())));
    }
    if cluster.spec.discovery == Discovery::OriginalDst {
        tasks.push(tokio::spawn(super::original_dst::run_cleanup(
            cluster.clone(),
        )));
    }
    tasks
}

impl Drop for ClusterManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::spec::HealthCheckSpec;
    use crate::upstream::test_support;
    use std::time::Duration;

    fn checked(name: &str, port: u16) -> ClusterSpec {
        let mut spec = test_support::spec(name, &[port]);
        spec.health_check = Some(HealthCheckSpec {
            path: "/health".into(),
            host: None,
            intervals: crate::upstream::spec::HealthCheckIntervals::all(Duration::from_secs(60)),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            over_quic: false,
            expected_statuses: vec![(200, 201)],
            retriable_statuses: Vec::new(),
        });
        spec
    }

    fn tasks(manager: &ClusterManager, name: &str) -> usize {
        let background = manager
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        background.get(name).map_or(0, Vec::len)
    }

    #[tokio::test]
    async fn successor_keeps_unchanged_clusters_and_their_health_checks() {
        let Ok(old) = ClusterManager::new(vec![
            checked("same", 1),
            checked("changed", 2),
            checked("removed", 3),
        ]) else {
            panic!("clusters");
        };
        old.start_background();
        let Ok(new) = ClusterManager::successor(
            &old,
            vec![
                checked("same", 1),
                checked("changed", 20),
                checked("added", 4),
            ],
        ) else {
            panic!("successor");
        };
        let kept = |name: &str| match (old.cluster(name), new.cluster(name)) {
            (Some(old), Some(new)) => Arc::ptr_eq(&old, &new),
            _ => false,
        };
        assert!(kept("same"));
        assert!(!kept("changed"));
        assert!(new.cluster("added").is_some() && !new.has_cluster("removed"));
        // Nothing moved before the successor is in force.
        assert_eq!(tasks(&old, "same"), 1);

        new.take_over_background(&old);
        assert_eq!(tasks(&new, "same"), 1, "moved over");
        assert_eq!(tasks(&old, "same"), 0);
        assert_eq!(tasks(&new, "changed"), 1, "a new checker for the new spec");
        assert_eq!(
            tasks(&old, "changed"),
            1,
            "the old one runs until the old manager goes"
        );
        assert_eq!(tasks(&new, "added"), 1);
        assert_eq!(tasks(&old, "removed"), 1);
        drop(old);
        let background = new
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let same = background.get("same").and_then(|t| t.first());
        assert!(
            same.is_some_and(|task| !task.is_finished()),
            "the kept checker outlives the old manager"
        );
    }
}
