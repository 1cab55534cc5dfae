//! Config hot reload: the running config is one immutable [`Snapshot`] (config, compiled Wasm
//! plugins, clusters) and a reload swaps in a new one.
//!
//! A reload ([`Reloader::reload`]) is started by a change to the config file or to a module
//! file it names ([`watch`]), or by `POST /reload` on the admin listener. It runs off the
//! request path, one at a time:
//!
//! 1. load the config from its [`ConfigSource`] (the file, or the watcher over it): read and
//!    check it and load every Wasm plugin (compile through the module cache, link, start a
//!    test VM: `proxy_on_vm_start`, `proxy_on_configure`), as at start-up; a
//!    plugin with remote code is fetched (when its sha256 is not in the module store) through
//!    the new clusters after step 3 ([`crate::wasm::remote`]);
//! 2. refuse changes that need a restart ([`restart_needed`]: admin, Wasm services of
//!    `bootstrap_extensions`, which as in Envoy start once with the process);
//! 3. build the clusters: an unchanged cluster is carried over as it is (pools, health and
//!    circuit breakers included), a changed or new one is built afresh; bind the listeners
//!    the config adds or replaces ([`ListenerSet::successor`]; one known by its name and
//!    unchanged but for its routes and filters keeps its sockets);
//! 4. store the snapshot and hand it to every worker ([`Publisher`]), which builds its
//!    connection managers and VMs for it, starts the new listeners' accept loops and drains
//!    the removed and replaced ones, and says when it has; then the old set lets go of the
//!    sockets of the listeners the new one lacks ([`ListenerSet::retire`]).
//!
//! Any failure before step 4 keeps the old snapshot, is logged (`warn`, with the file and the
//! field path) and counted (`weir_server_config_reloads_total{result="failure"}`). Streams
//! already running finish on the snapshot they started with: each stream takes its connection
//! manager once, when it starts ([`crate::http::CurrentManager`]).

mod compat;
pub mod watch;

use crate::config::ConfigError;
use crate::listener::set::{BindError, ListenerChanges, ListenerSet};
use crate::snapshot::{Config, ConfigSource};
use crate::stats::ReloadStats;
use crate::upstream::{ClusterManager, UpstreamError};
use arc_swap::ArcSwap;
pub use compat::restart_needed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long a reload waits for every worker to run the new snapshot.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything derived from one version of the config file that requests use.
#[derive(Debug)]
pub struct Snapshot {
    /// 0 for the config weir started with, then one more per successful reload.
    pub generation: u64,
    /// The config, with its loaded plugins.
    pub config: Arc<Config>,
    /// SHA-256 of the config file's text it was built from (none for the built-in config).
    pub config_hash: Option<[u8; 32]>,
    /// Its clusters.
    pub clusters: Arc<ClusterManager>,
    /// Its listeners, bound ([`ListenerSet::bind`] at start, [`ListenerSet::successor`] on a
    /// reload).
    pub listeners: Arc<ListenerSet>,
}

/// What started a reload (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `POST /reload`.
    Admin,
    /// A watched file changed.
    FileChange,
    /// The control plane sent resources (xDS).
    Xds,
}

/// Why a reload kept the old snapshot.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// weir runs its built-in config: there is no file to read again.
    #[error("no config file to reload (weir runs its built-in config; start it with -c FILE)")]
    NoFile,
    /// The file does not parse or check, or a plugin does not load.
    #[error("{0}")]
    Config(ConfigError),
    /// The change is one weir cannot apply while running.
    #[error("{0}: admin and bootstrap_extensions changes need a restart")]
    NeedsRestart(String),
    /// A new or replaced listener could not be bound (an address in use, its TLS files).
    #[error("{file}: {source}")]
    Listeners {
        /// The config file.
        file: String,
        /// Why.
        source: BindError,
    },
    /// A cluster could not be built (e.g. its TLS files).
    #[error("{file}: {source}")]
    Clusters {
        /// The config file.
        file: String,
        /// Why.
        source: UpstreamError,
    },
    /// The blocking task that loads the config failed.
    #[error("the reload task failed: {0}")]
    Task(String),
}

impl ReloadError {
    /// The HTTP status `POST /reload` answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            ReloadError::NoFile | ReloadError::NeedsRestart(_) => http::StatusCode::CONFLICT,
            ReloadError::Config(_)
            | ReloadError::Clusters { .. }
            | ReloadError::Listeners { .. } => http::StatusCode::BAD_REQUEST,
            ReloadError::Task(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// The new snapshot's generation.
    pub generation: u64,
    /// How long it took, from reading the file to every worker running it.
    pub duration: Duration,
    /// Clusters carried over unchanged (their pools and health kept).
    pub clusters_kept: usize,
    /// Clusters built afresh (new or changed).
    pub clusters_new: usize,
    /// Whether every worker said it runs the new snapshot within the apply timeout.
    pub all_workers: bool,
    /// Listeners added, removed and replaced.
    pub listeners: ListenerChanges,
}

impl ReloadOutcome {
    /// The JSON `POST /reload` answers with.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "result": "success",
            "generation": self.generation,
            "duration_seconds": self.duration.as_secs_f64(),
            "clusters_kept": self.clusters_kept,
            "clusters_new": self.clusters_new,
            "all_workers_applied": self.all_workers,
            "listeners_added": self.listeners.added,
            "listeners_removed": self.listeners.removed,
            "listeners_modified": self.listeners.modified,
        })
    }
}

/// Hands snapshots to the workers and waits until each runs it.
#[derive(Debug, Clone)]
pub struct Publisher {
    updates: Arc<tokio::sync::watch::Sender<Arc<Snapshot>>>,
    /// Per worker, the generation it runs.
    applied: Vec<tokio::sync::watch::Receiver<u64>>,
}

impl Publisher {
    /// A publisher over `updates` (what the workers follow) and each worker's `applied`.
    pub fn new(
        updates: Arc<tokio::sync::watch::Sender<Arc<Snapshot>>>,
        applied: Vec<tokio::sync::watch::Receiver<u64>>,
    ) -> Publisher {
        Publisher { updates, applied }
    }

    /// A receiver of every snapshot published from now on (for what follows snapshots beside
    /// the workers: the singleton Wasm services' pools).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.updates.subscribe()
    }

    /// The snapshot published last.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.updates.borrow().clone()
    }

    /// Sends `snapshot` to every worker and waits (up to `timeout`) until each has built its
    /// connection managers for it; false when one did not in time. A worker that has exited
    /// counts as done.
    async fn publish(&self, snapshot: Arc<Snapshot>, timeout: Duration) -> bool {
        let generation = snapshot.generation;
        self.updates.send_replace(snapshot);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut all = true;
        for applied in &self.applied {
            let mut applied = applied.clone();
            let waited =
                tokio::time::timeout_at(deadline, applied.wait_for(|g| *g >= generation)).await;
            all &= waited.is_ok();
        }
        all
    }
}

/// Builds, checks and swaps config snapshots (see the module docs).
pub struct Reloader {
    source: Option<Arc<dyn ConfigSource>>,
    current: ArcSwap<Snapshot>,
    publisher: Publisher,
    /// One reload at a time.
    running: tokio::sync::Mutex<()>,
    stats: &'static ReloadStats,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source)
            .field("generation", &self.current.load().generation)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader of the configs `source` produces (none: the built-in config, which cannot be
    /// reloaded), starting from `snapshot`, which the workers behind `publisher` run.
    pub fn new(
        source: Option<Arc<dyn ConfigSource>>,
        snapshot: Arc<Snapshot>,
        publisher: Publisher,
    ) -> Arc<Self> {
        Arc::new(Reloader {
            source,
            current: ArcSwap::new(snapshot),
            publisher,
            running: tokio::sync::Mutex::new(()),
            stats: ReloadStats::global(),
        })
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Where the configs come from, if weir was started with a config file.
    pub fn source(&self) -> Option<&Arc<dyn ConfigSource>> {
        self.source.as_ref()
    }

    /// Loads the config from the source again and, if it loads, makes it the running config; otherwise
    /// keeps the old one. Logs and counts the result either way. Call on the main runtime
    /// (new clusters' health checkers start on it).
    pub async fn reload(&self, trigger: Trigger) -> Result<ReloadOutcome, ReloadError> {
        let source = self.source.clone().ok_or(ReloadError::NoFile)?;
        self.reload_from(source, trigger).await
    }

    /// Loads the config from `source` rather than the reloader's own and, if it loads, makes
    /// it the running config, as [`Reloader::reload`] does. The xDS client applies a
    /// control plane's resources this way: `source` is the config as those resources would
    /// make it, and a failure is what its NACK says.
    pub async fn reload_from(
        &self,
        source: Arc<dyn ConfigSource>,
        trigger: Trigger,
    ) -> Result<ReloadOutcome, ReloadError> {
        let _one_at_a_time = self.running.lock().await;
        let started = Instant::now();
        let result = self.build_and_swap(source, started).await;
        let elapsed = started.elapsed();
        self.stats.last_duration_seconds.set(elapsed.as_secs_f64());
        match &result {
            Ok(outcome) => {
                self.stats.success.inc();
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                self.stats
                    .last_success_timestamp_seconds
                    .set(now.as_secs_f64());
                tracing::info!(
                    ?trigger,
                    generation = outcome.generation,
                    ?elapsed,
                    clusters_kept = outcome.clusters_kept,
                    clusters_new = outcome.clusters_new,
                    "config reloaded"
                );
                if !outcome.all_workers {
                    tracing::warn!(timeout = ?APPLY_TIMEOUT, "a worker did not confirm the new config in time; it picks it up when it can");
                }
            }
            Err(error) => {
                self.stats.failure.inc();
                match error {
                    ReloadError::Config(e) => tracing::warn!(
                        ?trigger,
                        file = %e.file,
                        field = %e.path,
                        reason = %e.message,
                        "config reload failed; keeping the running config"
                    ),
                    other => tracing::warn!(
                        ?trigger,
                        error = %other,
                        "config reload failed; keeping the running config"
                    ),
                }
            }
        }
        result
    }

    async fn build_and_swap(
        &self,
        source: Arc<dyn ConfigSource>,
        started: Instant,
    ) -> Result<ReloadOutcome, ReloadError> {
        let old = self.current();
        // Parsing, compiling modules and starting their test VMs, reading TLS files: all
        // blocking work, kept off the runtime the admin listener and the watcher share.
        let previous = old.clone();
        let built = tokio::task::spawn_blocking(move || {
            let loaded = source.load().map_err(ReloadError::Config)?;
            let (config, hash) = (loaded.config, loaded.version);
            if let Some(reason) = restart_needed(&previous.config, &config) {
                return Err(ReloadError::NeedsRestart(reason));
            }
            let clusters = ClusterManager::successor(&previous.clusters, config.clusters.clone())
                .map_err(|source| ReloadError::Clusters {
                file: config.source.clone(),
                source,
            })?;
            // New and replaced listeners are bound now: a port in use refuses the reload.
            let (listeners, changes) =
                previous
                    .listeners
                    .successor(&config)
                    .map_err(|source| ReloadError::Listeners {
                        file: config.source.clone(),
                        source,
                    })?;
            Ok((config, hash, clusters, listeners, changes))
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))?;
        let (config, config_hash, clusters, listeners, changes) = built?;
        // Remote Wasm modules, through the new snapshot's clusters (a module whose sha256 is
        // already in the store is not fetched again); one that cannot be had refuses the reload.
        crate::wasm::remote::resolve(
            &config.plugin_handles(),
            &clusters,
            crate::wasm::remote::Phase::Reload,
            &config.source,
        )
        .await
        .map_err(ReloadError::Config)?;
        let clusters_kept = config
            .clusters
            .iter()
            .filter(|spec| {
                let new = clusters.cluster(&spec.name);
                let old = old.clusters.cluster(&spec.name);
                matches!((new, old), (Some(new), Some(old)) if Arc::ptr_eq(&new, &old))
            })
            .count();
        let clusters_new = config.clusters.len() - clusters_kept;
        self.stats.clusters_kept.inc_by(clusters_kept as u64);
        self.stats.clusters_rebuilt.inc_by(clusters_new as u64);
        clusters.take_over_background(&old.clusters);
        // As Envoy warms a new cluster before it takes traffic: a new or changed cluster with
        // active health checks serves once its hosts have had their first check (each check
        // bounded by its `timeout`); the running config serves meanwhile.
        clusters.initialized().await;
        let snapshot = Arc::new(Snapshot {
            generation: old.generation + 1,
            config: Arc::new(config),
            config_hash: Some(config_hash),
            clusters,
            listeners: Arc::new(listeners),
        });
        self.current.store(snapshot.clone());
        let generation = snapshot.generation;
        let all_workers = self
            .publisher
            .publish(snapshot.clone(), APPLY_TIMEOUT)
            .await;
        // Every worker runs the new listeners (or was given the time to): what the old set
        // holds of the listeners it no longer has is closed; their workers drain them.
        old.listeners.retire(&snapshot.listeners, &changes);
        if !changes.is_empty() {
            tracing::info!(
                added = ?changes.added,
                removed = ?changes.removed,
                modified = ?changes.modified,
                "listeners changed"
            );
        }
        Ok(ReloadOutcome {
            generation,
            duration: started.elapsed(),
            clusters_kept,
            clusters_new,
            all_workers,
            listeners: changes,
        })
    }
}
