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
pub struct ClusterManager {
    clusters: HashMap<String, Arc<Cluster>>,
    started: AtomicBool,
    background: Mutex<Vec<JoinHandle<()>>>,
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
    pub fn new(specs: Vec<ClusterSpec>) -> Result<Arc<ClusterManager>, UpstreamError> {
        let mut clusters = HashMap::with_capacity(specs.len());
        for spec in specs {
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
            started: AtomicBool::new(false),
            background: Mutex::new(Vec::new()),
        }))
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
        for cluster in self.clusters.values() {
            if matches!(
                cluster.spec.discovery,
                Discovery::StrictDns | Discovery::LogicalDns
            ) {
                background.push(tokio::spawn(dns::run(cluster.clone())));
            }
            if let Some(spec) = &cluster.spec.health_check {
                background.push(tokio::spawn(health::run(cluster.clone(), spec.clone())));
            }
        }
    }

    /// Stops the background tasks (config reload, shutdown).
    pub fn shutdown(&self) {
        let mut background = self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for task in background.drain(..) {
            task.abort();
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

    /// Envoy's `/clusters` text: per cluster its default-priority thresholds, per host its
    /// counters and health flags.
    pub fn clusters_text(&self) -> String {
        let mut names: Vec<&String> = self.clusters.keys().collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            let Some(cluster) = self.clusters.get(name) else {
                continue;
            };
            let thresholds = cluster.spec.thresholds;
            for (setting, value) in [
                ("max_connections", thresholds.max_connections),
                ("max_pending_requests", thresholds.max_pending_requests),
                ("max_requests", thresholds.max_requests),
                ("max_retries", thresholds.max_retries),
            ] {
                let _ = writeln!(out, "{name}::default_priority::{setting}::{value}");
            }
            for host in cluster.hosts().iter() {
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
                let flags = if host.is_healthy() {
                    "healthy"
                } else {
                    "/failed_active_hc"
                };
                let _ = writeln!(out, "{name}::{addr}::health_flags::{flags}");
            }
        }
        out
    }
}

impl Drop for ClusterManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}
