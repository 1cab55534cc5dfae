//! The xDS resources in force, assembled with the bootstrap's static ones into one config.
//!
//! [`XdsState`] is both ends of the seam: the ADS client's [`Subscriber`] (it reads each
//! response, builds the config it would make and has the reloader swap it in, or refuses it)
//! and the reloader's [`ConfigSource`] (a `POST /reload` or a change to the bootstrap file
//! reads the file again and assembles it with the resources held). Either way the config is
//! built by `snapshot`'s code from one `Bootstrap`: the file's static resources, then the
//! control plane's, so a resource is checked exactly as the same fields in a file are.
//!
//! Envoy's warming rules decide what of the held resources goes in: a listener whose route
//! configurations (`rds`) have not all arrived is left out (its port does not accept yet), and
//! so is a cluster of `type: EDS` whose endpoints have not arrived, and a listener whose HTTP
//! or network filters' ECDS configs have not; each goes in once what it waits for is there,
//! or once the `initial_fetch_timeout` of the config source that asked for it has passed
//! (then with no routes, no hosts, an HTTP filter that answers 500 or a network filter whose
//! listener closes each connection). Each name has its own timer per timeout asking for it
//! (Envoy's subscriptions are one per config source and name), started when it is first
//! asked for (CDS: `cds_config`'s, from the start; LDS: `lds_config`'s, from the end of the
//! clusters' initial fetch), as Envoy's subscriptions do. Until every subscribed type has
//! answered and every name asked
//! for has come (or given up) weir is not [`XdsState::initialized`], which `/ready` reports;
//! meanwhile no listener (static or of LDS) accepts, as Envoy's server starts its listeners
//! together once initialized (see [`Start`]); a listener added later warms alone.

use super::bootstrap_file::BootstrapFile;
use super::client::{Interest, Rejected, Subscriber, Update};
use super::cluster_specs::ClusterSpecs;
use super::ecds_stats::{self, EcdsSubscriptions};
use super::resource::{self, Decoded, Resource, ResourceType};
use crate::config::bootstrap::Bootstrap;
use crate::config::cluster::cluster_spec;
use crate::config::cluster_spec::ClusterSpec;
use crate::config::dynamic_resources::XdsSpec;
use crate::config::ecds::{DiscoveredConfig, ExtensionConfig};
use crate::config::http_manager::HttpFilterConfig;
use crate::config::listener::NetworkFilterConfig;
use crate::config::{ConfigError, FieldError};
use crate::reload::{ReloadError, Reloader, Trigger};
use crate::snapshot::{Config, ConfigSource, DynamicDump, DynamicEntry, Loaded};
use crate::stats::{XdsStats, XdsTypeStats};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

/// One resource held: what it says and when it came.
#[derive(Debug)]
pub struct HeldResource {
    /// The resource, read.
    pub decoded: Decoded,
    /// Its version: the resource's own (delta) or the response's (state-of-the-world).
    pub version: String,
    /// When it was last added or changed.
    pub last_updated: SystemTime,
}

/// What an applied response did: for the per-name ECDS stats, and the listeners whose
/// filters may conflict with the ECDS configs in force.
#[derive(Debug, Default)]
struct Applied {
    /// The names it carried: added, changed, unchanged or removed.
    delivered: BTreeSet<String>,
    /// The names whose resource it added, changed or removed.
    changed: BTreeSet<String>,
}

/// Every resource held, by type and name; cloned to stage an update before it is known to
/// build. The clone is cheap: each type's map is shared until the update changes it (copied
/// then, on write), and the resources themselves are always shared.
#[derive(Debug, Clone, Default)]
struct Held {
    resources: BTreeMap<ResourceType, Arc<BTreeMap<String, Arc<HeldResource>>>>,
    /// Types that have had their first response.
    received: BTreeSet<ResourceType>,
    /// Per type, the version of the response applied last.
    versions: BTreeMap<ResourceType, String>,
    /// The ECDS configs the update being staged adds or changes (empty once held): a
    /// filter that cannot take one of these refuses the update (NACK, as Envoy checks a new
    /// config against every filter asking for it), while one that cannot take a config
    /// already in force runs without it (Envoy's `config_conflict`).
    fresh_ecds: BTreeSet<String>,
}

impl Held {
    fn of(&self, kind: ResourceType) -> impl Iterator<Item = (&String, &Arc<HeldResource>)> {
        self.resources
            .get(&kind)
            .into_iter()
            .flat_map(|held| held.iter())
    }

    fn get(&self, kind: ResourceType, name: &str) -> Option<&Arc<HeldResource>> {
        self.resources.get(&kind).and_then(|held| held.get(name))
    }
}

/// A resource waited for: its type, its name (empty for the whole of a wildcard type) and the
/// `initial_fetch_timeout` of a source that asks for it. As Envoy's subscriptions, which are
/// one per config source and name, each timeout asking for a name has its own timer: what a
/// source with a longer timeout asks for waits longer than what one with a shorter asks for.
type WaitKey = (ResourceType, String, Duration);

/// The (type, name, timeout) whose `initial_fetch_timeout` passed before they came: what
/// waits for them with that timeout goes in without them.
type GaveUp = BTreeSet<WaitKey>;

/// The initial fetch of each resource asked for, as Envoy's per-subscription timers.
#[derive(Debug, Default)]
struct Waits {
    /// Those whose timer was started (at most once each).
    started: BTreeSet<WaitKey>,
    /// Those whose timer fired before they came.
    gave_up: GaveUp,
}

/// What of a type is asked for, with how long each is waited for at first (zero: forever).
enum Wanted {
    /// Every resource of the type (LDS, CDS).
    Wildcard(Duration),
    /// These names, each with the timeouts of the sources that ask for it.
    Names(BTreeMap<String, BTreeSet<Duration>>),
}

/// The resources from the control plane and the bootstrap file they are assembled with (see
/// the module docs).
pub struct XdsState {
    /// The bootstrap file as a source: its name, and whether it changed (the file watcher).
    file: Arc<dyn ConfigSource>,
    bootstrap: BootstrapFile,
    /// The specs of the dynamic clusters, kept from one build to the next.
    cluster_specs: ClusterSpecs,
    spec: XdsSpec,
    held: Mutex<Held>,
    /// The initial fetch timers: which names have one, and which gave up.
    waits: Mutex<Waits>,
    /// Set once the initial fetch was over: it stays over (as Envoy's server initializes
    /// once; a listener that comes later warms without making weir not ready).
    init_done: std::sync::atomic::AtomicBool,
    /// The static listeners' addresses, bound (not listening) while the initial fetch holds
    /// the listeners back (see [`crate::listener::set::reserve_addresses`]); let go once a
    /// config that ends it has bound the listeners themselves.
    reserved: Mutex<Vec<socket2::Socket>>,
    reloader: OnceLock<Weak<Reloader>>,
    this: Weak<XdsState>,
    stats: BTreeMap<ResourceType, XdsTypeStats>,
    /// Envoy's per-extension-config ECDS stats.
    ecds: EcdsSubscriptions,
    /// Envoy's `version_text` of the wildcard types subscribed (LDS, CDS).
    version_texts: BTreeMap<ResourceType, crate::stats::TextReadout>,
    /// The wildcard types (LDS, CDS) whose subscription started: Envoy counts the start,
    /// and each stream failure after it, in the type's `update_attempt`.
    started: Mutex<BTreeSet<ResourceType>>,
}

impl std::fmt::Debug for XdsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsState")
            .field("file", &self.file.name())
            .field("ads_cluster", &self.spec.ads_cluster)
            .finish_non_exhaustive()
    }
}

impl XdsState {
    /// Loads the bootstrap at `path` (read through `file`, which may watch it) and returns the
    /// config to start with, and the state when the file has `dynamic_resources` (`None`: weir
    /// runs the file alone). The config holds the static resources, nothing from the control
    /// plane yet.
    pub fn for_file(
        file: Arc<dyn ConfigSource>,
        path: PathBuf,
    ) -> Result<(Option<Arc<XdsState>>, Loaded), ConfigError> {
        let bootstrap = BootstrapFile::new(path, file.name());
        let cluster_specs = ClusterSpecs::default();
        let loaded = load_with(
            &bootstrap,
            &cluster_specs,
            &Held::default(),
            &GaveUp::new(),
            Start::Initialized,
        )?;
        let Some(spec) = loaded.config.xds.clone() else {
            return Ok((None, loaded));
        };
        let stats = ResourceType::ALL
            .into_iter()
            .map(|kind| (kind, XdsStats::global().of(kind.short_name())))
            .collect();
        let version_texts = [
            (ResourceType::Listener, spec.lds),
            (ResourceType::Cluster, spec.cds),
        ]
        .into_iter()
        .filter(|(_, subscribed)| *subscribed)
        .filter_map(|(kind, _)| Some((kind, XdsTypeStats::version_text(kind.short_name())?)))
        .collect();
        let state = Arc::new_cyclic(|this| XdsState {
            file,
            bootstrap,
            cluster_specs,
            spec,
            held: Mutex::new(Held::default()),
            waits: Mutex::new(Waits::default()),
            init_done: std::sync::atomic::AtomicBool::new(false),
            reserved: Mutex::new(Vec::new()),
            reloader: OnceLock::new(),
            this: this.clone(),
            stats,
            ecds: EcdsSubscriptions::default(),
            version_texts,
            started: Mutex::new(BTreeSet::new()),
        });
        // The static listeners wait for the initial fetch too (unless nothing is fetched).
        let mut loaded = loaded;
        if !state.initialized() {
            // As Envoy, which binds its listeners' sockets when it loads them: an address in
            // use stops the start, though nothing accepts before the initial fetch is over.
            let reserved =
                crate::listener::set::reserve_addresses(&loaded.config).map_err(|error| {
                    ConfigError {
                        file: state.file.name(),
                        path: "static_resources.listeners".into(),
                        message: error.to_string(),
                    }
                })?;
            *state
                .reserved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = reserved;
            hold_back_listeners(&mut loaded.config);
        }
        Ok((Some(state), loaded))
    }

    /// What the bootstrap says of the control plane.
    pub fn spec(&self) -> &XdsSpec {
        &self.spec
    }

    /// Connects the state to the reloader that runs its configs (made after the state, since
    /// the reloader's source is the state).
    pub fn attach(&self, reloader: &Arc<Reloader>) {
        let _ = self.reloader.set(Arc::downgrade(reloader));
    }

    /// Whether the initial fetch is over: every type subscribed has answered, and every
    /// route configuration, endpoint set and filter config asked for is there (or its
    /// `initial_fetch_timeout` passed).
    /// Once over, it stays over.
    pub fn initialized(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.init_done.load(Ordering::Acquire) {
            return true;
        }
        let held = self.lock();
        let done = self.waiting_for(&held).is_empty();
        if done {
            self.init_done.store(true, Ordering::Release);
        }
        done
    }

    /// The types still waited for in the initial fetch, with the names waited for (those
    /// that gave up are not).
    fn waiting_for(&self, held: &Held) -> Vec<(ResourceType, Vec<String>)> {
        self.waiting_in(held, &ResourceType::ALL)
    }

    /// Whether a config built from `held` comes before the end of the initial fetch (its
    /// listeners are held back, see [`Start`]): the fetch was never over and `held` does
    /// not end it.
    fn start_of(&self, held: &Held) -> Start {
        use std::sync::atomic::Ordering;
        if self.init_done.load(Ordering::Acquire) || self.waiting_for(held).is_empty() {
            Start::Initialized
        } else {
            Start::Initializing
        }
    }

    /// [`XdsState::waiting_for`] among `kinds` only.
    fn waiting_in(&self, held: &Held, kinds: &[ResourceType]) -> Vec<(ResourceType, Vec<String>)> {
        let gave_up = self.gave_up();
        let mut waiting = Vec::new();
        for &kind in kinds {
            let missing = match self.wanted(held, kind) {
                None => continue,
                Some(Wanted::Wildcard(timeout)) => {
                    if held.received.contains(&kind)
                        || gave_up.contains(&(kind, String::new(), timeout))
                    {
                        continue;
                    }
                    Vec::new()
                }
                Some(Wanted::Names(names)) => {
                    // A name is waited for until it comes or every source asking for it
                    // gave up.
                    let missing: Vec<String> = names
                        .into_iter()
                        .filter(|(name, _)| held.get(kind, name).is_none())
                        .filter(|(name, timeouts)| {
                            timeouts
                                .iter()
                                .any(|t| !gave_up.contains(&(kind, name.clone(), *t)))
                        })
                        .map(|(name, _)| name)
                        .collect();
                    if missing.is_empty() {
                        continue;
                    }
                    missing
                }
            };
            waiting.push((kind, missing));
        }
        waiting
    }

    /// What gave up waiting so far.
    fn gave_up(&self) -> GaveUp {
        self.waits().gave_up.clone()
    }

    fn waits(&self) -> std::sync::MutexGuard<'_, Waits> {
        self.waits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the initial fetch timers of what is asked for at the start (LDS, CDS, the
    /// static resources' routes and endpoints).
    pub fn spawn_initial_fetch_timer(&self) {
        let held = self.lock().clone();
        self.start_all_timers(&held);
    }

    /// [`XdsState::start_timers`] for every type.
    fn start_all_timers(&self, held: &Held) {
        for kind in ResourceType::ALL {
            self.start_timers(held, kind, self.wanted(held, kind).as_ref());
        }
    }

    /// Starts a timer for each resource of `kind` asked for that has none yet (and a
    /// nonzero timeout): when it fires before the resource came, the resource gives up
    /// waiting, and the config is built again with what waited for it going in without it.
    /// Outside a Tokio runtime (unit tests) nothing starts.
    /// `wanted` is what of `kind` is asked for (as [`XdsState::wanted`] says).
    fn start_timers(&self, held: &Held, kind: ResourceType, wanted: Option<&Wanted>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let timeouts: Vec<(&str, Duration)> = match wanted {
            None => return,
            Some(Wanted::Wildcard(timeout)) => {
                // As Envoy, whose LDS starts once the cluster manager is initialized: the
                // LDS timer waits for the clusters' initial fetch (CDS and their endpoints).
                let started = self
                    .waits()
                    .started
                    .contains(&(kind, String::new(), *timeout));
                if started || (kind == ResourceType::Listener && !self.clusters_initialized(held)) {
                    return;
                }
                vec![("", *timeout)]
            }
            Some(Wanted::Names(names)) => names
                .iter()
                .flat_map(|(name, timeouts)| timeouts.iter().map(|t| (name.as_str(), *t)))
                .collect(),
        };
        let mut waits = self.waits();
        for (name, timeout) in timeouts {
            if timeout.is_zero() || !waits.started.insert((kind, name.to_owned(), timeout)) {
                continue;
            }
            let name = name.to_owned();
            let this = self.this.clone();
            runtime.spawn(async move {
                tokio::time::sleep(timeout).await;
                if let Some(state) = this.upgrade() {
                    state.give_up(kind, name, timeout).await;
                }
            });
        }
    }

    /// Whether the initial fetch of clusters and their endpoints is over (every one came or
    /// gave up).
    fn clusters_initialized(&self, held: &Held) -> bool {
        self.waiting_in(
            held,
            &[ResourceType::Cluster, ResourceType::ClusterLoadAssignment],
        )
        .is_empty()
    }

    /// The timer of (`kind`, `name`) with `timeout` fired: unless it came, what waits for it
    /// with that timeout goes in without it.
    async fn give_up(&self, kind: ResourceType, name: String, timeout: Duration) {
        let held = self.lock().clone();
        let (came, wanted) = if name.is_empty() {
            (held.received.contains(&kind), true)
        } else {
            let wanted = matches!(
                self.wanted(&held, kind),
                Some(Wanted::Names(names))
                    if names.get(&name).is_some_and(|timeouts| timeouts.contains(&timeout))
            );
            (held.get(kind, &name).is_some(), wanted)
        };
        if came {
            return;
        }
        if !wanted {
            // No longer asked for: asked for again later, it gets a timer anew.
            self.waits().started.remove(&(kind, name, timeout));
            return;
        }
        self.stats[&kind].init_fetch_timeout.inc();
        if kind == ResourceType::ExtensionConfig {
            self.ecds.timed_out(&name);
        }
        tracing::warn!(
            kind = kind.short_name(),
            name,
            ?timeout,
            "xds: initial fetch timed out; going on without it"
        );
        self.waits().gave_up.insert((kind, name, timeout));
        // What waited on it may start its own timers now (LDS after CDS).
        self.start_all_timers(&held);
        if let Err(rejected) = self.swap_in(held, Trigger::Xds).await {
            tracing::warn!(error = %rejected, "xds: the config without the missing resource does not build");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What of `kind` is asked for given `held`, with each one's initial fetch timeout;
    /// `None` when the type is not subscribed.
    fn wanted(&self, held: &Held, kind: ResourceType) -> Option<Wanted> {
        match kind {
            ResourceType::Listener => self
                .spec
                .lds
                .then_some(Wanted::Wildcard(self.spec.lds_fetch_timeout)),
            ResourceType::Cluster => self
                .spec
                .cds
                .then_some(Wanted::Wildcard(self.spec.cds_fetch_timeout)),
            // The static listeners and clusters of the file (as it reads now: the interest
            // follows the running config), then the held ones, read in place (a control
            // plane's thousands of clusters are not copied to be asked their names).
            ResourceType::RouteConfiguration => {
                let names = self.listener_names(held, rds_names);
                (!names.is_empty() || self.spec.lds).then_some(Wanted::Names(names))
            }
            ResourceType::ClusterLoadAssignment => {
                let bootstrap = self.static_bootstrap();
                let held_clusters = held.of(ResourceType::Cluster).filter_map(|(_, held)| {
                    match &held.decoded.resource {
                        Resource::Cluster(cluster) => Some(&**cluster),
                        _ => None,
                    }
                });
                let names = merge(
                    bootstrap
                        .static_resources
                        .clusters
                        .iter()
                        .chain(held_clusters)
                        .filter_map(eds_name_and_timeout),
                );
                (!names.is_empty() || self.spec.cds).then_some(Wanted::Names(names))
            }
            ResourceType::ExtensionConfig => {
                let names = self.listener_names(held, ecds_names);
                (!names.is_empty()).then_some(Wanted::Names(names))
            }
        }
    }

    /// The names `names_of` finds in the file's static listeners and the held ones, each
    /// with the timeouts of those asking.
    fn listener_names(
        &self,
        held: &Held,
        names_of: fn(&crate::config::listener::Listener) -> Vec<(String, Duration)>,
    ) -> BTreeMap<String, BTreeSet<Duration>> {
        let bootstrap = self.static_bootstrap();
        let held_listeners =
            held.of(ResourceType::Listener)
                .filter_map(|(_, held)| match &held.decoded.resource {
                    Resource::Listener(listener) => Some(&**listener),
                    _ => None,
                });
        merge(
            bootstrap
                .static_resources
                .listeners
                .iter()
                .chain(held_listeners)
                .flat_map(names_of),
        )
    }

    /// The extension configs the file's static listeners and the held ones ask for, each
    /// with the kinds of filter asking (Envoy's ECDS stat prefixes).
    fn ecds_asked(&self, held: &Held) -> ecds_stats::Asked {
        let bootstrap = self.static_bootstrap();
        let held_listeners =
            held.of(ResourceType::Listener)
                .filter_map(|(_, held)| match &held.decoded.resource {
                    Resource::Listener(listener) => Some(&**listener),
                    _ => None,
                });
        let mut asked = ecds_stats::Asked::new();
        for listener in bootstrap
            .static_resources
            .listeners
            .iter()
            .chain(held_listeners)
        {
            for (name, prefix) in ecds_scopes(listener) {
                asked.entry(name).or_default().insert(prefix);
            }
        }
        asked
    }

    /// The static part of the bootstrap file in force (see [`BootstrapFile::statics`]).
    fn static_bootstrap(&self) -> Bootstrap {
        self.bootstrap.statics()
    }

    /// Builds the config `held` makes and has the reloader swap it in.
    async fn swap_in(&self, held: Held, trigger: Trigger) -> Result<(), Rejected> {
        let Some(reloader) = self.reloader.get().and_then(Weak::upgrade) else {
            return Err(Rejected("weir is shutting down".into()));
        };
        let Some(this) = self.this.upgrade() else {
            return Err(Rejected("weir is shutting down".into()));
        };
        let start = self.start_of(&held);
        let staged = Arc::new(Staged { state: this, held });
        match reloader.reload_from(staged, trigger).await {
            Ok(_) => {
                // Once a config ends the initial fetch, later ones never hold listeners back
                // again (a listener added then warms alone).
                if start == Start::Initialized {
                    self.init_done
                        .store(true, std::sync::atomic::Ordering::Release);
                    // The listeners are bound now: their addresses need holding no more.
                    self.reserved
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clear();
                }
                Ok(())
            }
            Err(ReloadError::Config(error)) => {
                Err(Rejected(format!("{}: {}", error.path, error.message)))
            }
            Err(other) => Err(Rejected(other.to_string())),
        }
    }

    /// Reads the resources of `update`, stages them over what is held and swaps the config
    /// they make in; holds them only if that worked.
    async fn apply_update(&self, update: Update) -> Result<(), Rejected> {
        let kind = update.kind;
        let stats = &self.stats[&kind];
        stats.update_attempt.inc();
        // The names a delta response carries (state-of-the-world names them inside).
        let handed: BTreeSet<String> = if update.state_of_the_world {
            BTreeSet::new()
        } else {
            update
                .resources
                .iter()
                .filter_map(|raw| raw.name.clone())
                .chain(update.removed.iter().cloned())
                .collect()
        };
        let version = update.version.clone();
        let started = std::time::Instant::now();
        // Envoy refuses a resource that does not decode before any subscription sees the
        // response; one that decodes but does not apply, from a subscription's callback.
        let (result, decoded) = match self.read_update(&update) {
            Ok(read) => (self.stage_and_swap(update, read).await, true),
            Err(rejected) => (Err(rejected), false),
        };
        match &result {
            Ok(applied) => {
                stats.update_success.inc();
                stats.update_time.set(unix_millis());
                if let Some(text) = self.version_texts.get(&kind) {
                    text.set(&version);
                }
                match kind {
                    ResourceType::ExtensionConfig => {
                        self.ecds.applied(
                            &applied.delivered,
                            &applied.changed,
                            &version,
                            started.elapsed(),
                        );
                    }
                    ResourceType::Listener => self.count_conflicts(&applied.changed),
                    _ => {}
                }
            }
            Err(rejected) => {
                stats.update_rejected.inc();
                // Over delta Envoy counts the attempt of a subscription handed its part of
                // the response before applying it, and again on the refusal: once the
                // resources decoded.
                let handed = if decoded { handed } else { BTreeSet::new() };
                if kind == ResourceType::ExtensionConfig {
                    self.ecds.rejected(&handed);
                } else if kind.wildcard() && !handed.is_empty() {
                    stats.update_attempt.inc();
                }
                tracing::warn!(kind = kind.short_name(), error = %rejected, "xds: update rejected; keeping the resources in force");
            }
        }
        result.map(|_| ())
    }

    /// Reads every resource of `update` (Envoy's decoding, with the proto's own checks).
    fn read_update(&self, update: &Update) -> Result<BTreeMap<String, Decoded>, Rejected> {
        let kind = update.kind;
        let mut read: BTreeMap<String, Decoded> = BTreeMap::new();
        // A route configuration reuses the unchanged routes of its version in force (never
        // of one refused: only what was accepted is held).
        let previous = |name: &str| self.in_force(kind, name);
        for raw in &update.resources {
            let decoded =
                resource::decode_reusing(kind, &raw.body, &previous).map_err(|error| {
                    let name = raw
                        .name
                        .clone()
                        .or_else(|| name_of(kind, &raw.body))
                        .unwrap_or_else(|| "?".to_owned());
                    Rejected(format!(
                        "{} {name:?}: {}: {}",
                        kind.short_name(),
                        error.path,
                        error.message
                    ))
                })?;
            if let Some(name) = &raw.name
                && *name != decoded.name
            {
                return Err(Rejected(format!(
                    "{} {name:?}: the resource is named {:?}",
                    kind.short_name(),
                    decoded.name
                )));
            }
            if read.contains_key(&decoded.name) {
                return Err(Rejected(format!(
                    "{} {:?}: sent twice in one response",
                    kind.short_name(),
                    decoded.name
                )));
            }
            read.insert(decoded.name.clone(), decoded);
        }
        Ok(read)
    }

    /// Stages the resources `read` from `update` over those held and swaps the config they
    /// make in.
    async fn stage_and_swap(
        &self,
        update: Update,
        read: BTreeMap<String, Decoded>,
    ) -> Result<Applied, Rejected> {
        let kind = update.kind;
        let now = SystemTime::now();
        self.refuse_static_names(kind, read.keys())?;
        let mut applied = Applied {
            delivered: read.keys().chain(&update.removed).cloned().collect(),
            changed: BTreeSet::new(),
        };
        let (mut staged, changed) = {
            let held = self.lock();
            let mut staged = held.clone();
            let by_name = Arc::make_mut(staged.resources.entry(kind).or_default());
            let mut changed = false;
            if update.state_of_the_world && kind.wildcard() {
                let before = by_name.len();
                by_name.retain(|name, _| read.contains_key(name));
                changed |= by_name.len() != before;
            }
            for name in &update.removed {
                if by_name.remove(name).is_some() {
                    changed = true;
                    applied.changed.insert(name.clone());
                }
            }
            let response_version = update.version.clone();
            // Each resource's own version (delta), looked up by name rather than by a scan of
            // the response per resource (quadratic in a response of thousands).
            let own_versions: std::collections::HashMap<&str, &str> = update
                .resources
                .iter()
                .filter_map(|raw| Some((raw.name.as_deref()?, raw.version.as_str())))
                .collect();
            for (name, decoded) in read {
                let version = own_versions
                    .get(name.as_str())
                    .filter(|version| !version.is_empty())
                    .map_or_else(|| response_version.clone(), |version| version.to_string());
                let same = by_name
                    .get(&name)
                    .is_some_and(|held| decoded.same_as(&held.decoded));
                if same {
                    continue;
                }
                changed = true;
                applied.changed.insert(name.clone());
                by_name.insert(
                    name,
                    Arc::new(HeldResource {
                        decoded,
                        version,
                        last_updated: now,
                    }),
                );
            }
            changed |= staged.received.insert(kind);
            staged.versions.insert(kind, update.version.clone());
            (staged, changed)
        };
        if kind == ResourceType::ExtensionConfig {
            staged.fresh_ecds = applied.changed.clone();
        }
        if changed {
            self.swap_in(staged.clone(), Trigger::Xds).await?;
        } else {
            self.stats[&kind].update_empty.inc();
        }
        self.stats[&kind].version.set(version_hash(&update.version));
        staged.fresh_ecds.clear();
        *self.lock() = staged;
        Ok(applied)
    }

    /// Counts Envoy's `config_conflict` for the filters of the listeners an LDS update added
    /// or changed (Envoy makes their filters then) that cannot take the ECDS config in force
    /// for them, and so run without it.
    fn count_conflicts(&self, listeners: &BTreeSet<String>) {
        let held = self.lock();
        let configs = |name: &str| held_filter_config(&held, name);
        for name in listeners {
            let Some(Resource::Listener(listener)) = held
                .get(ResourceType::Listener, name)
                .map(|held| &held.decoded.resource)
            else {
                continue;
            };
            for (filter, prefix) in conflicts(listener, &configs) {
                tracing::warn!(listener = %name, filter, "xds: the ECDS config in force is not one this filter takes; it runs without it (config_conflict)");
                self.ecds.conflict(&filter, prefix);
            }
        }
    }

    /// The resource of `kind` named `name` in force: the last version of it accepted, until
    /// it is removed.
    fn in_force(&self, kind: ResourceType, name: &str) -> Option<Decoded> {
        self.lock().get(kind, name).map(|held| held.decoded.clone())
    }

    /// A dynamic listener or cluster may not take the name of a static one (as Envoy).
    fn refuse_static_names<'a>(
        &self,
        kind: ResourceType,
        names: impl Iterator<Item = &'a String>,
    ) -> Result<(), Rejected> {
        let statics: Vec<String> = match kind {
            ResourceType::Listener => self
                .static_bootstrap()
                .static_resources
                .listeners
                .into_iter()
                .map(|listener| listener.name)
                .collect(),
            ResourceType::Cluster => self
                .static_bootstrap()
                .static_resources
                .clusters
                .into_iter()
                .map(|cluster| cluster.name)
                .collect(),
            _ => return Ok(()),
        };
        for name in names {
            if statics.contains(name) {
                return Err(Rejected(format!(
                    "{} {name:?}: a static resource of the bootstrap has that name",
                    kind.short_name()
                )));
            }
        }
        Ok(())
    }
}

/// The name inside a resource that does not read (state-of-the-world sends no name beside it),
/// for the NACK to say which resource it refuses.
fn name_of(kind: ResourceType, bytes: &[u8]) -> Option<String> {
    let type_name = kind.type_url().strip_prefix("type.googleapis.com/")?;
    let json = super::proto::to_json(type_name, bytes).ok()?;
    let field = match kind {
        ResourceType::ClusterLoadAssignment => "cluster_name",
        _ => "name",
    };
    json.get(field)?.as_str().map(str::to_owned)
}

/// Now in milliseconds since the Unix epoch (Envoy's `update_time`).
pub(super) fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Envoy's `version` stat: a hash of the version string, as a gauge.
pub(super) fn version_hash(version: &str) -> i64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(version.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // A gauge is signed; the top bit is dropped so the value reads the same everywhere.
    (u64::from_le_bytes(bytes) >> 1) as i64
}

impl Subscriber for XdsState {
    fn apply(
        &self,
        update: Update,
    ) -> Pin<Box<dyn Future<Output = Result<(), Rejected>> + Send + '_>> {
        Box::pin(self.apply_update(update))
    }

    /// What of `kind` to ask for; names asked for the first time start their initial
    /// fetch timers.
    fn interest(&self, kind: ResourceType) -> Interest {
        let held = self.lock();
        let wanted = self.wanted(&held, kind);
        self.start_timers(&held, kind, wanted.as_ref());
        if kind == ResourceType::ExtensionConfig {
            self.ecds.follow(&self.ecds_asked(&held));
        }
        if matches!(wanted, Some(Wanted::Wildcard(_)))
            && self
                .started
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(kind)
        {
            self.stats[&kind].update_attempt.inc();
        }
        match wanted {
            Some(Wanted::Wildcard(_)) => Interest::Wildcard,
            Some(Wanted::Names(names)) => Interest::Names(names.into_keys().collect()),
            None => Interest::Names(BTreeSet::new()),
        }
    }

    fn connected(&self, up: bool) {
        XdsStats::global().connected_state.set(i64::from(up));
    }

    fn stream_failed(&self) {
        self.ecds.stream_failed();
        let started = self
            .started
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for kind in started.iter() {
            self.stats[kind].update_failure.inc();
            self.stats[kind].update_attempt.inc();
        }
    }

    /// What is held, for a delta stream's `initial_resource_versions` after a reconnect.
    fn held_versions(&self, kind: ResourceType) -> std::collections::HashMap<String, String> {
        self.lock()
            .of(kind)
            .map(|(name, held)| (name.clone(), held.version.clone()))
            .collect()
    }
}

impl ConfigSource for XdsState {
    fn name(&self) -> String {
        self.file.name()
    }

    /// The bootstrap file read again, with the resources held.
    fn load(&self) -> Result<Loaded, ConfigError> {
        let held = self.lock().clone();
        let start = if self.initialized() {
            Start::Initialized
        } else {
            Start::Initializing
        };
        load_with(
            &self.bootstrap,
            &self.cluster_specs,
            &held,
            &self.gave_up(),
            start,
        )
    }

    fn changed(&self, running: &Config, version: Option<[u8; 32]>) -> bool {
        self.file.changed(running, version)
    }
}

/// The config an update would make: the state's file with resources not yet held.
#[derive(Debug)]
struct Staged {
    state: Arc<XdsState>,
    held: Held,
}

impl ConfigSource for Staged {
    fn name(&self) -> String {
        self.state.name()
    }

    fn load(&self) -> Result<Loaded, ConfigError> {
        load_with(
            &self.state.bootstrap,
            &self.state.cluster_specs,
            &self.held,
            &self.state.gave_up(),
            self.state.start_of(&self.held),
        )
    }
}

/// Whether a config is built before the initial fetch is over. As Envoy's server, which
/// starts its workers (and so any listener's accept) only once initialized, every listener
/// (static, or of LDS) is held back until each initial listener has warmed or given up:
/// while [`Start::Initializing`] the listeners are built (a bad one is refused as ever) but
/// none is put in the config, so no port accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The initial fetch is still waited for: no listener accepts.
    Initializing,
    /// It is over: each listener accepts once it has warmed.
    Initialized,
}

/// Reads the bootstrap file and builds it with the resources of `held` (see the module
/// docs); what waits for a resource in `gave_up` goes in without it; while `start` says
/// [`Start::Initializing`] the config has no listeners.
fn load_with(
    bootstrap_file: &BootstrapFile,
    specs: &ClusterSpecs,
    held: &Held,
    gave_up: &GaveUp,
    start: Start,
) -> Result<Loaded, ConfigError> {
    let parsed = bootstrap_file.read()?;
    let file = bootstrap_file.name();
    let version = parsed.version;
    let mut bootstrap = parsed.bootstrap.clone();
    let dump = parsed.dump.clone();
    let (provenance, dynamic_clusters) =
        assemble(&mut bootstrap, held, specs, gave_up).map_err(|e| e.in_file(file))?;
    let mut config = crate::snapshot::load_bootstrap(bootstrap, dynamic_clusters, file, dump)
        .map_err(|error| provenance.explain(error).in_file(file))?;
    config.dynamic = Some(Arc::new(dynamic_dump(held, &provenance)));
    if start == Start::Initializing {
        hold_back_listeners(&mut config);
    }
    Ok(Loaded { config, version })
}

/// Takes the listeners out of `config` (built, so a bad one was refused as ever) until the
/// initial fetch is over.
fn hold_back_listeners(config: &mut Config) {
    if !config.listeners.is_empty() || !config.tcp_listeners.is_empty() {
        tracing::debug!(
            http = config.listeners.len(),
            tcp = config.tcp_listeners.len(),
            "xds: listeners held back until the initial fetch is over"
        );
    }
    config.listeners.clear();
    config.tcp_listeners.clear();
}

/// Where each listener and cluster of an assembled bootstrap came from, to name the resource
/// in an error, and what was left out while warming.
#[derive(Debug, Default)]
struct Provenance {
    static_listeners: usize,
    dynamic_listeners: Vec<String>,
    static_clusters: usize,
    dynamic_clusters: Vec<String>,
    warming_listeners: Vec<String>,
    warming_clusters: Vec<String>,
    /// Some HTTP filter takes its config over ECDS (then `/config_dump` has an ECDS dump,
    /// empty until a config comes, as Envoy's).
    ecds_asked: bool,
}

impl Provenance {
    /// `error` with its path told in terms of the resource it is in: `listener "x":
    /// filter_chains[0]...` rather than `static_resources.listeners[3].filter_chains[0]...`.
    fn explain(&self, error: FieldError) -> FieldError {
        let parts = [
            (
                "static_resources.listeners[",
                self.static_listeners,
                &self.dynamic_listeners,
                "listener",
            ),
            (
                "static_resources.clusters[",
                self.static_clusters,
                &self.dynamic_clusters,
                "cluster",
            ),
        ];
        for (prefix, statics, dynamic, what) in parts {
            let Some(rest) = error.path.strip_prefix(prefix) else {
                continue;
            };
            let Some((index, inner)) = rest.split_once(']') else {
                continue;
            };
            let Some(name) = index
                .parse::<usize>()
                .ok()
                .and_then(|index| index.checked_sub(statics))
                .and_then(|index| dynamic.get(index))
            else {
                continue;
            };
            let inner = inner.strip_prefix('.').unwrap_or(inner);
            let inner = if inner.is_empty() { "." } else { inner };
            return FieldError::new(format!("{what} {name:?}: {inner}"), error.message);
        }
        error
    }
}

/// Puts the held resources into `bootstrap` after its static ones: listeners with their
/// route configurations in place of `rds` and their filters' ECDS configs in place of
/// `config_discovery`, EDS clusters with their endpoints; what still waits is left out
/// unless what it waits for is in `gave_up`. An ECDS config whose type a filter does not
/// list is an error when the update being staged brings it, a conflict (the filter runs
/// without it) when it was in force already.
fn assemble(
    bootstrap: &mut Bootstrap,
    held: &Held,
    specs: &ClusterSpecs,
    gave_up: &GaveUp,
) -> Result<(Provenance, Vec<Arc<ClusterSpec>>), FieldError> {
    let gave_up = |kind: ResourceType, name: &str, timeout: Duration| {
        gave_up.contains(&(kind, name.to_owned(), timeout))
    };
    let routes = |name: &str| match held.get(ResourceType::RouteConfiguration, name) {
        Some(held) => match &held.decoded.resource {
            Resource::RouteConfiguration(routes) => Some(routes.clone()),
            _ => None,
        },
        None => None,
    };
    let endpoints = |name: &str| match held.get(ResourceType::ClusterLoadAssignment, name) {
        Some(held) => match &held.decoded.resource {
            Resource::ClusterLoadAssignment(assignment) => Some((**assignment).clone()),
            _ => None,
        },
        None => None,
    };
    let resources = &mut bootstrap.static_resources;
    let mut provenance = Provenance {
        static_listeners: resources.listeners.len(),
        static_clusters: resources.clusters.len(),
        ..Provenance::default()
    };
    // A static EDS cluster is there from the start, with no hosts until its endpoints come
    // (503 UH), and its source counts for the initial fetch's timeout.
    for cluster in &mut resources.clusters {
        if let Some(assignment) = eds_name(cluster).and_then(|service| endpoints(&service)) {
            set_endpoints(cluster, assignment);
        }
    }
    // A dynamic EDS cluster waits outside the config for its endpoints (Envoy warms it
    // before use). A dynamic cluster goes in as its spec, built once per cluster resource
    // and endpoint set (`ClusterSpecs`).
    let mut dynamic_specs = Vec::new();
    for (name, held_cluster) in held.of(ResourceType::Cluster) {
        let Resource::Cluster(cluster) = &held_cluster.decoded.resource else {
            continue;
        };
        let held_endpoints = match eds_name_and_timeout(cluster) {
            Some((service, timeout)) => {
                match held.get(ResourceType::ClusterLoadAssignment, &service) {
                    Some(held_endpoints) => Some(held_endpoints),
                    None if gave_up(ResourceType::ClusterLoadAssignment, &service, timeout) => None,
                    None => {
                        provenance.warming_clusters.push(name.clone());
                        continue;
                    }
                }
            }
            None => None,
        };
        let spec = specs.spec(name, held_cluster, held_endpoints, || {
            let mut cluster = (**cluster).clone();
            if let Some(Resource::ClusterLoadAssignment(assignment)) =
                held_endpoints.map(|held| &held.decoded.resource)
            {
                set_endpoints(&mut cluster, (**assignment).clone());
            }
            cluster_spec(&cluster, "").map_err(|error| {
                let inner = error.path.trim_start_matches('.');
                let inner = if inner.is_empty() { "." } else { inner };
                FieldError::new(format!("cluster {name:?}: {inner}"), error.message)
            })
        })?;
        dynamic_specs.push(spec);
        provenance.dynamic_clusters.push(name.clone());
    }
    specs.keep_only(&|name| held.get(ResourceType::Cluster, name).is_some());

    for (name, held) in held.of(ResourceType::Listener) {
        if let Resource::Listener(listener) = &held.decoded.resource {
            resources.listeners.push((**listener).clone());
            provenance.dynamic_listeners.push(name.clone());
        }
    }
    let filter_config = |name: &str| held_filter_config(held, name);
    let fresh = |name: &str| held.fresh_ecds.contains(name);
    // Without a control plane a filter's `config_discovery` stays as written, and building
    // the listener says why it cannot run (rather than the listener warming for ever).
    let ads = bootstrap
        .dynamic_resources
        .as_ref()
        .is_some_and(|dynamic| dynamic.ads_config.is_some());
    let resources = &mut bootstrap.static_resources;
    let mut warming_listeners = Vec::new();
    let mut filter_error = None;
    resources.listeners.retain_mut(|listener| {
        provenance.ecds_asked |= !ecds_names(listener).is_empty();
        let filters = if ads {
            let filters_gave_up =
                |name: &str, timeout| gave_up(ResourceType::ExtensionConfig, name, timeout);
            match fill_filter_configs(listener, &filter_config, &filters_gave_up, &fresh) {
                Ok(complete) => complete,
                Err(error) => {
                    filter_error.get_or_insert(error);
                    true
                }
            }
        } else {
            true
        };
        let routes_gave_up =
            |name: &str, timeout| gave_up(ResourceType::RouteConfiguration, name, timeout);
        let complete = fill_routes(listener, &routes, &routes_gave_up) && filters;
        if !complete {
            warming_listeners.push(listener.name.clone());
        }
        complete
    });
    if let Some(error) = filter_error {
        return Err(error);
    }
    provenance
        .dynamic_listeners
        .retain(|name| !warming_listeners.contains(name));
    provenance.static_listeners = resources.listeners.len() - provenance.dynamic_listeners.len();
    provenance.warming_listeners = warming_listeners;
    Ok((provenance, dynamic_specs))
}

/// The names of the ECDS resources a listener's HTTP and network filters ask for
/// (`config_discovery`: the filter's `name`), with their sources' initial fetch timeouts.
fn ecds_names(listener: &crate::config::listener::Listener) -> Vec<(String, Duration)> {
    let http = listener
        .http_managers()
        .flat_map(|hcm| hcm.all_http_filters())
        .filter_map(|filter| Some((&filter.name, filter.discovery()?)));
    let network = listener
        .filter_chains
        .iter()
        .flat_map(|chain| chain.filters.iter())
        .filter_map(|filter| Some((&filter.name, filter.discovery()?)));
    http.chain(network)
        .map(|(name, discovery)| (name.clone(), discovery.config_source.fetch_timeout()))
        .collect()
}

/// The names of the ECDS resources a listener's filters ask for, each with the kind of
/// filter asking: Envoy's stat prefix (`http_filter`, `network_filter`).
fn ecds_scopes(listener: &crate::config::listener::Listener) -> Vec<(String, &'static str)> {
    let http = listener
        .http_managers()
        .flat_map(|hcm| hcm.all_http_filters())
        .filter(|filter| filter.discovery().is_some())
        .map(|filter| (filter.name.clone(), ecds_stats::HTTP_FILTER));
    let network = listener
        .filter_chains
        .iter()
        .flat_map(|chain| chain.filters.iter())
        .filter(|filter| filter.discovery().is_some())
        .map(|filter| (filter.name.clone(), ecds_stats::NETWORK_FILTER));
    http.chain(network).collect()
}

/// (name, timeout) pairs by name, with every timeout that asks for each name.
fn merge(pairs: impl Iterator<Item = (String, Duration)>) -> BTreeMap<String, BTreeSet<Duration>> {
    let mut merged: BTreeMap<String, BTreeSet<Duration>> = BTreeMap::new();
    for (name, timeout) in pairs {
        merged.entry(name).or_default().insert(timeout);
    }
    merged
}

/// The ECDS config held under `name`.
fn held_filter_config(held: &Held, name: &str) -> Option<Box<ExtensionConfig>> {
    match &held
        .get(ResourceType::ExtensionConfig, name)?
        .decoded
        .resource
    {
        Resource::ExtensionConfig(config) => Some(config.clone()),
        _ => None,
    }
}

/// The `config_discovery` filters of `listener` (name, Envoy's stat prefix) that cannot
/// take the ECDS config `configs` holds for them: its type is not one of the filter's
/// `type_urls`, or it is the other kind of filter's config.
fn conflicts(
    listener: &crate::config::listener::Listener,
    configs: &impl Fn(&str) -> Option<Box<ExtensionConfig>>,
) -> Vec<(String, &'static str)> {
    let takes =
        |name: &str, discovery: &crate::config::http_manager::ExtensionConfigSource, http: bool| {
            configs(name).is_none_or(|config| {
                discovery.type_urls.contains(&config.type_url)
                    && matches!(config.config, DiscoveredConfig::Http(_)) == http
            })
        };
    let http = listener
        .http_managers()
        .flat_map(|hcm| hcm.all_http_filters())
        .filter_map(|filter| Some((&filter.name, filter.discovery()?)))
        .filter(|(name, discovery)| !takes(name, discovery, true))
        .map(|(name, _)| (name.clone(), ecds_stats::HTTP_FILTER));
    let network = listener
        .filter_chains
        .iter()
        .flat_map(|chain| chain.filters.iter())
        .filter_map(|filter| Some((&filter.name, filter.discovery()?)))
        .filter(|(name, discovery)| !takes(name, discovery, false))
        .map(|(name, _)| (name.clone(), ecds_stats::NETWORK_FILTER));
    http.chain(network).collect()
}

/// Puts in each `config_discovery` filter of `listener` (HTTP or network) its ECDS config,
/// else its `default_config` when it applies without warming or its initial fetch
/// `gave_up` (with no default then: an HTTP filter that answers 500, a network filter that
/// closes each connection, as Envoy's); false when a filter still waits (the listener
/// warms). A config whose type is not one of the filter's `type_urls`, or of the other kind
/// of filter, is an error naming the resource when it is `fresh` (the ECDS update that
/// brings it is NACKed); one already in force is a conflict, as in Envoy: the filter takes
/// its default, or runs without a config, at once.
fn fill_filter_configs(
    listener: &mut crate::config::listener::Listener,
    configs: &impl Fn(&str) -> Option<Box<ExtensionConfig>>,
    gave_up: &impl Fn(&str, Duration) -> bool,
    fresh: &impl Fn(&str) -> bool,
) -> Result<bool, FieldError> {
    let listener_name = listener.name.clone();
    let mut complete = true;
    for hcm in listener.http_managers_mut() {
        for filter in hcm.all_http_filters_mut() {
            let Some(discovery) = filter.discovery() else {
                continue;
            };
            let resolved = resolve_discovered(
                &filter.name,
                discovery,
                &listener_name,
                (configs, gave_up, fresh),
                ("an HTTP", |delivered| match delivered {
                    DiscoveredConfig::Http(config) => Ok(config),
                    other => Err(other),
                }),
                || discovery.default_filter_config(&filter.name),
                HttpFilterConfig::Missing,
            )?;
            match resolved {
                Some(config) => filter.config = config,
                None => complete = false,
            }
        }
    }
    for chain in &mut listener.filter_chains {
        for filter in &mut chain.filters {
            let Some(discovery) = filter.discovery() else {
                continue;
            };
            let resolved = resolve_discovered(
                &filter.name,
                discovery,
                &listener_name,
                (configs, gave_up, fresh),
                ("a network", |delivered| match delivered {
                    DiscoveredConfig::Network(config) => Ok(config),
                    other => Err(other),
                }),
                || discovery.default_network_config(&filter.name),
                NetworkFilterConfig::Missing,
            )?;
            match resolved {
                Some(config) => filter.config = config,
                None => complete = false,
            }
        }
    }
    Ok(complete)
}

/// Accepts a delivered ECDS config as one kind of filter's, or gives it back.
type TakeDiscovered<T> = fn(DiscoveredConfig) -> Result<T, DiscoveredConfig>;

/// One `config_discovery` filter's config now (see [`fill_filter_configs`]): the one
/// delivered, which `take` accepts as this kind of filter's (else an error saying it is not
/// `kind` when the config is `fresh`, a conflict when not), or its `default` when it
/// applies without warming, the fetch gave up or the config in force conflicts (`missing`
/// when it has none); `None` while it still waits.
fn resolve_discovered<T>(
    name: &str,
    discovery: &crate::config::http_manager::ExtensionConfigSource,
    listener_name: &str,
    (configs, gave_up, fresh): (
        &impl Fn(&str) -> Option<Box<ExtensionConfig>>,
        &impl Fn(&str, Duration) -> bool,
        &impl Fn(&str) -> bool,
    ),
    (kind, take): (&str, TakeDiscovered<T>),
    default: impl FnOnce() -> Result<Option<T>, String>,
    missing: T,
) -> Result<Option<T>, FieldError> {
    let checked = delivered_config(name, discovery, configs, listener_name).and_then(|found| {
        found
            .map(|delivered| {
                take(delivered).map_err(|other| wrong_kind(name, &other, kind, listener_name))
            })
            .transpose()
    });
    let conflict = match checked {
        Ok(Some(config)) => return Ok(Some(config)),
        Ok(None) => false,
        Err(error) if fresh(name) => return Err(error),
        Err(_) => true,
    };
    if !(conflict
        || discovery.apply_default_config_without_warming
        || gave_up(name, discovery.config_source.fetch_timeout()))
    {
        return Ok(None);
    }
    // Checked when the listener was read; a default that does not read here leaves the
    // filter waiting.
    Ok(default().ok().map(|config| config.unwrap_or(missing)))
}

/// The ECDS config held for the filter `name`, checked against its `type_urls`.
fn delivered_config(
    name: &str,
    discovery: &crate::config::http_manager::ExtensionConfigSource,
    configs: &impl Fn(&str) -> Option<Box<ExtensionConfig>>,
    listener_name: &str,
) -> Result<Option<DiscoveredConfig>, FieldError> {
    let Some(delivered) = configs(name) else {
        return Ok(None);
    };
    if !discovery.type_urls.contains(&delivered.type_url) {
        return Err(FieldError::new(
            format!("ecds {name:?}: typed_config.@type"),
            format!(
                "type {:?} is not one of the type_urls {:?} of the filter {name:?} of listener {listener_name:?}",
                delivered.type_url, discovery.type_urls
            ),
        ));
    }
    Ok(Some(delivered.config))
}

/// The error for an ECDS config of the other kind than the filter `name` that asks for it
/// (an HTTP filter's config for a network filter, or the reverse).
fn wrong_kind(
    name: &str,
    delivered: &DiscoveredConfig,
    wanted: &str,
    listener_name: &str,
) -> FieldError {
    FieldError::new(
        format!("ecds {name:?}: typed_config.@type"),
        format!(
            "{} filter's config, but the filter {name:?} of listener {listener_name:?} is {wanted} filter",
            delivered.kind()
        ),
    )
}

/// The `/config_dump` view of what is held.
fn dynamic_dump(held: &Held, provenance: &Provenance) -> DynamicDump {
    let entries = |kind: ResourceType| -> Vec<DynamicEntry> {
        held.of(kind)
            .map(|(name, held)| DynamicEntry {
                name: name.clone(),
                version_info: held.version.clone(),
                last_updated: held.last_updated,
                resource: held.decoded.json.clone(),
                warming: match kind {
                    ResourceType::Listener => provenance.warming_listeners.contains(name),
                    ResourceType::Cluster => provenance.warming_clusters.contains(name),
                    _ => false,
                },
            })
            .collect()
    };
    DynamicDump {
        versions: held
            .versions
            .iter()
            .map(|(kind, version)| (kind.short_name(), version.clone()))
            .collect(),
        listeners: entries(ResourceType::Listener),
        route_configs: entries(ResourceType::RouteConfiguration),
        clusters: entries(ResourceType::Cluster),
        endpoints: entries(ResourceType::ClusterLoadAssignment),
        filter_configs: entries(ResourceType::ExtensionConfig),
        ecds: provenance.ecds_asked || held.received.contains(&ResourceType::ExtensionConfig),
    }
}

/// The route configuration names a listener's connection managers take from RDS, with
/// their sources' initial fetch timeouts.
fn rds_names(listener: &crate::config::listener::Listener) -> Vec<(String, Duration)> {
    listener
        .http_managers()
        .filter_map(|hcm| {
            let rds = hcm.rds.as_ref()?;
            Some((
                rds.route_config_name.clone(),
                rds.config_source.fetch_timeout(),
            ))
        })
        .collect()
}

/// Puts each RDS route configuration of `listener` in place; false when one is not there
/// (the listener warms), unless its initial fetch `gave_up` (then an empty one stands in:
/// every request 404).
fn fill_routes(
    listener: &mut crate::config::listener::Listener,
    routes: &impl Fn(&str) -> Option<Arc<crate::config::route::RouteConfiguration>>,
    gave_up: &impl Fn(&str, Duration) -> bool,
) -> bool {
    for hcm in listener.http_managers_mut() {
        let Some(rds) = hcm.rds.as_ref() else {
            continue;
        };
        let name = rds.route_config_name.clone();
        let timeout = rds.config_source.fetch_timeout();
        match routes(&name) {
            Some(route_config) => hcm.set_rds_route_config(route_config),
            None if gave_up(&name, timeout) => {
                hcm.set_rds_route_config(Arc::new(crate::config::route::RouteConfiguration {
                    name: Some(name),
                    ..Default::default()
                }))
            }
            None => return false,
        }
    }
    true
}

/// The name of the endpoints an EDS cluster takes (`eds_cluster_config.service_name`, else
/// its own name); `None` for other clusters.
fn eds_name(cluster: &crate::config::cluster::Cluster) -> Option<String> {
    cluster.eds_service_name().map(str::to_owned)
}

/// [`eds_name`] with the initial fetch timeout of the cluster's `eds_config`.
fn eds_name_and_timeout(cluster: &crate::config::cluster::Cluster) -> Option<(String, Duration)> {
    let name = eds_name(cluster)?;
    let source = cluster
        .eds_cluster_config
        .as_ref()
        .and_then(|eds| eds.eds_config.as_ref());
    Some((
        name,
        crate::config::dynamic_resources::ConfigSource::fetch_timeout_of(source),
    ))
}

/// Gives an EDS cluster its endpoints.
fn set_endpoints(
    cluster: &mut crate::config::cluster::Cluster,
    assignment: crate::config::cluster::ClusterLoadAssignment,
) {
    cluster.set_eds_load_assignment(assignment);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::FileSource;

    /// The control plane's cluster and ADS for listeners and clusters; nothing else static.
    const BOOTSTRAP: &str = r#"
node: { id: n1, cluster: c1 }
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [ { envoy_grpc: { cluster_name: xds } } ]
  lds_config: { ads: {}, resource_api_version: V3 }
  cds_config: { ads: {}, resource_api_version: V3 }
static_resources:
  clusters:
  - name: xds
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: xds
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18000 } } }
"#;

    fn state(dir: &tempfile::TempDir) -> Arc<XdsState> {
        let path = dir.path().join("bootstrap.yaml");
        std::fs::write(&path, BOOTSTRAP).unwrap();
        let (state, loaded) =
            XdsState::for_file(Arc::new(FileSource::new(&path)), path.clone()).unwrap();
        assert!(loaded.config.listeners.is_empty());
        state.expect("the bootstrap has dynamic_resources")
    }

    fn decoded(kind: ResourceType, yaml: &str) -> Decoded {
        let json: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let resource = match kind {
            ResourceType::Listener => {
                Resource::Listener(Box::new(crate::config::parse_value(json.clone()).unwrap()))
            }
            ResourceType::RouteConfiguration => Resource::RouteConfiguration(Arc::new(
                crate::config::parse_value(json.clone()).unwrap(),
            )),
            ResourceType::Cluster => {
                Resource::Cluster(Box::new(crate::config::parse_value(json.clone()).unwrap()))
            }
            ResourceType::ClusterLoadAssignment => Resource::ClusterLoadAssignment(Box::new(
                crate::config::parse_value(json.clone()).unwrap(),
            )),
            ResourceType::ExtensionConfig => Resource::ExtensionConfig(Box::new(
                crate::config::ecds::extension_config(&json).unwrap(),
            )),
        };
        let name = json
            .get("name")
            .or_else(|| json.get("cluster_name"))
            .and_then(serde_json::Value::as_str)
            .unwrap()
            .to_string();
        Decoded {
            name,
            resource,
            json: crate::xds::resource::ResourceJson::new(json),
            route_parts: None,
            same_json_as: None,
        }
    }

    fn hold(state: &XdsState, kind: ResourceType, yaml: &str) {
        let decoded = decoded(kind, yaml);
        let mut held = state.lock();
        held.received.insert(kind);
        Arc::make_mut(held.resources.entry(kind).or_default()).insert(
            decoded.name.clone(),
            Arc::new(HeldResource {
                decoded,
                version: "1".into(),
                last_updated: SystemTime::now(),
            }),
        );
    }

    /// [`hold`] an ECDS config as the update being staged brings it (`fresh`: a filter
    /// that cannot take it refuses the update).
    fn hold_fresh(state: &XdsState, yaml: &str) {
        hold(state, ResourceType::ExtensionConfig, yaml);
        let name = decoded(ResourceType::ExtensionConfig, yaml).name;
        state.lock().fresh_ecds.insert(name);
    }

    /// Marks the initial fetch over, as once weir has initialized: what these tests hold
    /// then warms listener by listener.
    fn after_init(state: &XdsState) {
        state
            .init_done
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Every initial fetch still waited for gives up, as when each timer fired.
    fn give_up_all(state: &XdsState) {
        let held = state.lock().clone();
        let mut waits = state.waits();
        for kind in ResourceType::ALL {
            match state.wanted(&held, kind) {
                None => {}
                Some(Wanted::Wildcard(timeout)) => {
                    waits.gave_up.insert((kind, String::new(), timeout));
                }
                Some(Wanted::Names(names)) => {
                    for (name, timeouts) in names {
                        for timeout in timeouts {
                            waits.gave_up.insert((kind, name.clone(), timeout));
                        }
                    }
                }
            }
        }
    }

    const LISTENER: &str = r#"
name: web
address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: web
      rds: { route_config_name: web-routes, config_source: { ads: {} } }
      http_filters: [ { name: envoy.filters.http.router } ]
"#;

    const ROUTES: &str = r#"
name: web-routes
virtual_hosts:
- name: all
  domains: ["*"]
  routes: [ { match: { prefix: / }, route: { cluster: backend } } ]
"#;

    const CLUSTER: &str = r#"
name: backend
type: EDS
eds_cluster_config: { eds_config: { ads: {} } }
"#;

    const ENDPOINTS: &str = r#"
cluster_name: backend
endpoints:
- lb_endpoints:
  - endpoint: { address: { socket_address: { address: 127.0.0.2, port_value: 9 } } }
"#;

    #[test]
    fn a_listener_waits_for_its_routes_and_a_cluster_for_its_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        assert_eq!(
            state.interest(ResourceType::Listener),
            Interest::Wildcard,
            "listeners come over ADS"
        );
        assert!(!state.initialized(), "nothing has answered yet");
        hold(&state, ResourceType::Listener, LISTENER);
        hold(&state, ResourceType::Cluster, CLUSTER);
        let names =
            |names: &[&str]| Interest::Names(names.iter().map(|name| name.to_string()).collect());
        assert_eq!(
            state.interest(ResourceType::RouteConfiguration),
            names(&["web-routes"])
        );
        assert_eq!(
            state.interest(ResourceType::ClusterLoadAssignment),
            names(&["backend"])
        );
        // Both warm: neither is in the config, both are in the dump as warming.
        let config = state.load().unwrap().config;
        assert!(config.listeners.is_empty());
        assert!(config.clusters.iter().all(|c| c.name != "backend"));
        let dump = config.dynamic.clone().unwrap();
        assert!(dump.listeners[0].warming && dump.clusters[0].warming);
        assert!(!state.initialized());

        hold(&state, ResourceType::RouteConfiguration, ROUTES);
        hold(&state, ResourceType::ClusterLoadAssignment, ENDPOINTS);
        let config = state.load().unwrap().config;
        assert_eq!(config.listeners.len(), 1);
        let backend = config
            .clusters
            .iter()
            .find(|c| c.name == "backend")
            .unwrap();
        assert_eq!(backend.endpoints.len(), 1);
        assert!(state.initialized());
        let dump = config.dynamic.unwrap();
        assert!(!dump.listeners[0].warming && !dump.clusters[0].warming);
    }

    #[test]
    fn past_the_initial_fetch_timeout_what_waits_goes_in_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        hold(&state, ResourceType::Listener, LISTENER);
        hold(&state, ResourceType::Cluster, CLUSTER);
        give_up_all(&state);
        let config = state.load().unwrap().config;
        // The listener serves with an empty route table (404), the cluster with no host.
        assert_eq!(config.listeners.len(), 1);
        let backend = config
            .clusters
            .iter()
            .find(|c| c.name == "backend")
            .unwrap();
        assert!(backend.endpoints.is_empty());
        assert!(state.initialized());
    }

    /// A listener with inline routes whose Wasm filter `auth` takes its config over ECDS.
    fn ecds_listener(default: &str) -> String {
        format!(
            r#"
name: ecds
address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: ecds
      route_config:
        virtual_hosts:
        - {{ name: all, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, direct_response: {{ status: 200 }} }} ] }}
      http_filters:
      - name: auth
        config_discovery:
          config_source: {{ ads: {{}} }}
          type_urls: [ type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm ]
          {default}
      - name: envoy.filters.http.router
"#
        )
    }

    /// An ECDS resource `auth` of type `type_name` (a health check, which builds without a
    /// Wasm module, stands in for a filter config).
    const ECDS_HEALTH_CHECK: &str = r#"
name: auth
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck
  pass_through_mode: false
"#;

    #[test]
    fn a_listener_waits_for_its_filter_configs_and_asks_for_them_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        assert_eq!(
            state.interest(ResourceType::ExtensionConfig),
            Interest::Names(BTreeSet::new()),
            "no filter asks for a config"
        );
        hold(&state, ResourceType::Listener, &ecds_listener(""));
        assert_eq!(
            state.interest(ResourceType::ExtensionConfig),
            Interest::Names(["auth".to_string()].into())
        );
        let config = state.load().unwrap().config;
        assert!(config.listeners.is_empty(), "the listener warms");
        assert!(config.dynamic.unwrap().listeners[0].warming);
        assert!(!state.initialized());
    }

    #[test]
    fn no_listener_goes_in_before_every_initial_listener_has_warmed() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        state.lock().received.insert(ResourceType::Cluster);
        let other = LISTENER
            .replace("name: web\n", "name: other\n")
            .replace("web-routes", "other-routes");
        hold(&state, ResourceType::Listener, LISTENER);
        hold(&state, ResourceType::Listener, &other);
        hold(&state, ResourceType::RouteConfiguration, ROUTES);
        let serving = |state: &XdsState| -> Vec<String> {
            let config = state.load().unwrap().config;
            config.listeners.iter().map(|l| l.name.clone()).collect()
        };
        assert!(serving(&state).is_empty(), "web has warmed, other has not");
        assert!(!state.initialized());
        hold(
            &state,
            ResourceType::RouteConfiguration,
            &ROUTES.replace("web-routes", "other-routes"),
        );
        assert_eq!(serving(&state), ["other", "web"], "both start together");
        assert!(state.initialized());
        // After initialization a new listener warms alone.
        let late = LISTENER
            .replace("name: web\n", "name: late\n")
            .replace("web-routes", "late-routes");
        hold(&state, ResourceType::Listener, &late);
        assert_eq!(serving(&state), ["other", "web"], "late warms alone");
    }

    #[test]
    fn config_discovery_without_a_control_plane_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.yaml");
        let listener = ecds_listener("").replace('\n', "\n    ");
        std::fs::write(
            &path,
            format!(
                "static_resources:\n  listeners:\n  - {}",
                listener.trim_start()
            ),
        )
        .unwrap();
        let error = XdsState::for_file(Arc::new(FileSource::new(&path)), path.clone()).unwrap_err();
        assert!(
            error.path.ends_with("http_filters[0].config_discovery"),
            "{error}"
        );
    }

    #[test]
    fn an_ecds_config_whose_type_the_filter_does_not_list_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        hold(&state, ResourceType::Listener, &ecds_listener(""));
        hold_fresh(&state, ECDS_HEALTH_CHECK);
        let error = state.load().unwrap_err();
        assert_eq!(error.path, "ecds \"auth\": typed_config.@type", "{error}");
        assert!(error.message.contains("HealthCheck"), "{error}");
        assert!(error.message.contains("type_urls"), "{error}");
    }

    #[test]
    fn a_wildcard_subscription_counts_its_start_once_and_each_stream_failure() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        let failures = || XdsStats::global().of("lds").update_failure.get();
        state.stream_failed();
        let before = failures();
        assert!(
            state.started.lock().unwrap().is_empty(),
            "nothing started yet"
        );
        state.interest(ResourceType::Listener);
        state.interest(ResourceType::Listener);
        state.interest(ResourceType::RouteConfiguration);
        assert_eq!(
            *state.started.lock().unwrap(),
            BTreeSet::from([ResourceType::Listener]),
            "started once; named types are not Envoy-named here"
        );
        state.stream_failed();
        assert_eq!(failures(), before + 1);
    }

    #[test]
    fn a_filter_that_cannot_take_the_config_in_force_runs_without_it_and_counts_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        after_init(&state);
        // The config came first (accepted for another listener's filter, say); the listener
        // that comes next lists only the Wasm type.
        hold(&state, ResourceType::ExtensionConfig, ECDS_HEALTH_CHECK);
        hold(&state, ResourceType::Listener, &ecds_listener(""));
        state.ecds.follow(&state.ecds_asked(&state.lock()));
        let config = state.load().expect("a conflict is no error").config;
        assert_eq!(config.listeners.len(), 1, "the listener goes in at once");
        let conflict = || {
            crate::stats::EcdsStats::global()
                .of(ecds_stats::HTTP_FILTER, "auth")
                .config_conflict
                .get()
        };
        let before = conflict();
        state.count_conflicts(&BTreeSet::from(["ecds".to_owned()]));
        assert_eq!(conflict(), before + 1);
        // A listener that can take it counts none.
        let takes = ecds_listener("").replace(
            "type_urls: [ type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm ]",
            "type_urls: [ type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck ]",
        );
        hold(&state, ResourceType::Listener, &takes);
        state.count_conflicts(&BTreeSet::from(["ecds".to_owned()]));
        assert_eq!(conflict(), before + 1);
    }

    #[test]
    fn an_ecds_config_of_a_listed_type_goes_in_place_of_config_discovery() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        after_init(&state);
        let listener = ecds_listener("").replace(
            "type_urls: [ type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm ]",
            "type_urls: [ type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm, type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck ]",
        );
        hold(&state, ResourceType::Listener, &listener);
        hold(&state, ResourceType::ExtensionConfig, ECDS_HEALTH_CHECK);
        let config = state.load().unwrap().config;
        assert_eq!(config.listeners.len(), 1, "the listener is complete");
        let waiting = state.waiting_for(&state.lock());
        assert!(
            waiting
                .iter()
                .all(|(kind, _)| *kind != ResourceType::ExtensionConfig),
            "{waiting:?}"
        );
    }

    #[test]
    fn a_default_config_applies_without_warming_or_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        after_init(&state);
        let default = "default_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck, pass_through_mode: true }";
        let listener = ecds_listener(default).replace(
            "type_urls: [ type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm ]",
            "type_urls: [ type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck ]",
        );
        hold(&state, ResourceType::Listener, &listener);
        assert!(state.load().unwrap().config.listeners.is_empty(), "warms");
        give_up_all(&state);
        assert_eq!(state.load().unwrap().config.listeners.len(), 1);

        let dir = tempfile::tempdir().unwrap();
        let state = super::tests::state(&dir);
        after_init(&state);
        let listener = listener.replace(
            "default_config:",
            "apply_default_config_without_warming: true\n          default_config:",
        );
        hold(&state, ResourceType::Listener, &listener);
        assert_eq!(state.load().unwrap().config.listeners.len(), 1);
    }

    #[test]
    fn a_filter_whose_config_gave_up_without_a_default_goes_in_missing() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        hold(&state, ResourceType::Listener, &ecds_listener(""));
        assert!(state.load().unwrap().config.listeners.is_empty(), "warms");
        give_up_all(&state);
        let config = state.load().unwrap().config;
        assert_eq!(config.listeners.len(), 1, "serves once the fetch gave up");
        let missing = config.listeners[0].http.missing_config.clone();
        let missing: Vec<_> = missing.into_iter().map(|m| (m.after, m.name)).collect();
        assert_eq!(missing, [(0, "auth".to_string())]);
        assert!(state.initialized());
    }

    #[test]
    fn each_http_filter_whose_config_gave_up_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        let listener = ecds_listener("").replace(
            "      - name: envoy.filters.http.router",
            "      - name: second
        disabled: true
        config_discovery:
          config_source: { ads: {} }
          type_urls: [ type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm ]
      - name: envoy.filters.http.router",
        );
        hold(&state, ResourceType::Listener, &listener);
        give_up_all(&state);
        let config = state.load().unwrap().config;
        let missing: Vec<_> = config.listeners[0]
            .http
            .missing_config
            .iter()
            .map(|m| (m.name.as_str(), m.disabled))
            .collect();
        assert_eq!(missing, [("auth", false), ("second", true)]);
    }

    /// A tcp_proxy listener whose network filter `guard` takes its config over ECDS, of the
    /// types `type_urls`.
    fn network_ecds_listener(type_urls: &str) -> String {
        format!(
            r#"
name: tcp
address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
filter_chains:
- filters:
  - name: guard
    config_discovery:
      config_source: {{ ads: {{}} }}
      type_urls: [ {type_urls} ]
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: tcp
      cluster: xds
"#
        )
    }

    const NETWORK_WASM_TYPE: &str =
        "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm";

    #[test]
    fn a_network_filter_waits_for_its_config_then_closes_connections_once_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        hold(
            &state,
            ResourceType::Listener,
            &network_ecds_listener(NETWORK_WASM_TYPE),
        );
        let held = state.lock().clone();
        let Some(Wanted::Names(ecds)) = state.wanted(&held, ResourceType::ExtensionConfig) else {
            panic!("ECDS by name");
        };
        assert_eq!(ecds.keys().collect::<Vec<_>>(), ["guard"]);
        let config = state.load().unwrap().config;
        assert!(config.tcp_listeners.is_empty(), "warms");
        give_up_all(&state);
        let config = state.load().unwrap().config;
        assert_eq!(
            config.tcp_listeners.len(),
            1,
            "goes in once the fetch gave up"
        );
        assert_eq!(
            config.tcp_listeners[0].proxy.missing_config.as_deref(),
            Some("guard")
        );
        assert!(config.tcp_listeners[0].proxy.network_filters.is_empty());
    }

    #[test]
    fn a_network_filter_default_config_applies_without_warming() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        after_init(&state);
        let code =
            crate::wasm::tests::module(weir_abi::names::ABI_VERSION_0_2_1, "", "(i32.const 1)", "");
        let module = dir.path().join("guard.wasm");
        std::fs::write(&module, code).unwrap();
        let default = format!(
            r#"      apply_default_config_without_warming: true
      default_config:
        "@type": {NETWORK_WASM_TYPE}
        config:
          name: guard
          vm_config: {{ runtime: envoy.wasm.runtime.v8, code: {{ local: {{ filename: "{}" }} }} }}
      type_urls:"#,
            module.display()
        );
        let listener =
            network_ecds_listener(NETWORK_WASM_TYPE).replace("      type_urls:", &default);
        hold(&state, ResourceType::Listener, &listener);
        let config = state.load().unwrap().config;
        assert_eq!(config.tcp_listeners.len(), 1, "no warming");
        let proxy = &config.tcp_listeners[0].proxy;
        assert_eq!(proxy.missing_config, None);
        assert_eq!(proxy.network_filters.len(), 1, "the default runs");
    }

    #[test]
    fn an_http_filter_config_for_a_network_filter_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        hold(
            &state,
            ResourceType::Listener,
            &network_ecds_listener(
                "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
            ),
        );
        hold_fresh(
            &state,
            &ECDS_HEALTH_CHECK.replace("name: auth", "name: guard"),
        );
        let error = state.load().unwrap_err();
        assert_eq!(error.path, "ecds \"guard\": typed_config.@type", "{error}");
        assert!(error.message.contains("an HTTP filter's config"), "{error}");
        assert!(error.message.contains("a network filter"), "{error}");
    }

    #[test]
    fn a_network_filter_config_of_an_unlisted_type_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        hold(
            &state,
            ResourceType::Listener,
            &network_ecds_listener(NETWORK_WASM_TYPE),
        );
        hold_fresh(
            &state,
            &ECDS_HEALTH_CHECK.replace("name: auth", "name: guard"),
        );
        let error = state.load().unwrap_err();
        assert_eq!(error.path, "ecds \"guard\": typed_config.@type", "{error}");
        assert!(error.message.contains("type_urls"), "{error}");
    }

    #[test]
    fn each_name_waits_for_the_timeout_of_the_source_that_asks_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        let listener = ecds_listener("").replace(
            "config_source: { ads: {} }",
            "config_source: { ads: {}, initial_fetch_timeout: 2s }",
        );
        hold(&state, ResourceType::Listener, &listener);
        hold(
            &state,
            ResourceType::Listener,
            &LISTENER.replace(
                "config_source: { ads: {} }",
                "config_source: { ads: {}, initial_fetch_timeout: 0s }",
            ),
        );
        hold(&state, ResourceType::Cluster, CLUSTER);
        let held = state.lock().clone();
        let Some(Wanted::Names(ecds)) = state.wanted(&held, ResourceType::ExtensionConfig) else {
            panic!("ECDS by name");
        };
        assert_eq!(ecds["auth"], BTreeSet::from([Duration::from_secs(2)]));
        let Some(Wanted::Names(rds)) = state.wanted(&held, ResourceType::RouteConfiguration) else {
            panic!("RDS by name");
        };
        assert_eq!(
            rds["web-routes"],
            BTreeSet::from([Duration::ZERO]),
            "zero: forever"
        );
        let Some(Wanted::Names(eds)) = state.wanted(&held, ResourceType::ClusterLoadAssignment)
        else {
            panic!("EDS by name");
        };
        assert_eq!(
            eds["backend"],
            BTreeSet::from([Duration::from_secs(15)]),
            "Envoy's default"
        );
        assert!(matches!(
            state.wanted(&held, ResourceType::Listener),
            Some(Wanted::Wildcard(timeout)) if timeout == Duration::from_secs(15)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_gives_up_after_its_own_timeout_from_when_it_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        hold(
            &state,
            ResourceType::Listener,
            &LISTENER.replace(
                "config_source: { ads: {} }",
                "config_source: { ads: {}, initial_fetch_timeout: 2s }",
            ),
        );
        let key = (
            ResourceType::RouteConfiguration,
            "web-routes".to_string(),
            Duration::from_secs(2),
        );
        state.interest(ResourceType::RouteConfiguration);
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert!(!state.gave_up().contains(&key), "not yet");
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(state.gave_up().contains(&key), "past its 2 s");
        // Asked for again, a name keeps the timer it had.
        state.interest(ResourceType::RouteConfiguration);
        assert!(state.waits().started.contains(&key));
    }

    /// As Envoy, whose ECDS subscriptions are one per config source and name: two filters
    /// asking for one name with different timeouts each wait their own.
    #[tokio::test(start_paused = true)]
    async fn filters_sharing_a_name_each_wait_their_own_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        after_init(&state);
        let with_timeout = |name: &str, timeout: &str| {
            ecds_listener("")
                .replace("name: ecds\n", &format!("name: {name}\n"))
                .replace(
                    "config_source: { ads: {} }",
                    &format!("config_source: {{ ads: {{}}, initial_fetch_timeout: {timeout} }}"),
                )
        };
        hold(&state, ResourceType::Listener, &with_timeout("fast", "2s"));
        hold(&state, ResourceType::Listener, &with_timeout("slow", "6s"));
        state.interest(ResourceType::ExtensionConfig);
        let serving = |state: &XdsState| -> Vec<String> {
            let config = state.load().unwrap().config;
            config.listeners.iter().map(|l| l.name.clone()).collect()
        };
        assert!(serving(&state).is_empty(), "both warm");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            serving(&state),
            ["fast"],
            "the 2 s one gave up, the 6 s one warms"
        );
        let ecds_waiting = |state: &XdsState| {
            state
                .waiting_for(&state.lock())
                .into_iter()
                .any(|(kind, _)| kind == ResourceType::ExtensionConfig)
        };
        assert!(ecds_waiting(&state), "the 6 s source still waits");
        tokio::time::sleep(Duration::from_millis(4000)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(serving(&state), ["fast", "slow"]);
        assert!(!ecds_waiting(&state));
    }

    #[tokio::test(start_paused = true)]
    async fn the_lds_timer_starts_once_the_clusters_initial_fetch_is_over() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        let lds = (
            ResourceType::Listener,
            String::new(),
            Duration::from_secs(15),
        );
        state.interest(ResourceType::Listener);
        assert!(
            !state.waits().started.contains(&lds),
            "CDS has not answered"
        );
        state.lock().received.insert(ResourceType::Cluster);
        state.interest(ResourceType::Listener);
        assert!(state.waits().started.contains(&lds));
    }

    #[test]
    fn once_initialized_a_listener_that_comes_later_warms_without_unreadying() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        {
            let mut held = state.lock();
            held.received.insert(ResourceType::Listener);
            held.received.insert(ResourceType::Cluster);
        }
        assert!(state.initialized());
        hold(&state, ResourceType::Listener, LISTENER);
        assert!(state.load().unwrap().config.listeners.is_empty(), "warms");
        assert!(state.initialized(), "still ready");
    }

    #[test]
    fn an_error_in_a_resource_names_the_resource_not_its_place_in_the_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        hold(&state, ResourceType::Listener, LISTENER);
        // Routes that check their clusters, naming one that does not exist.
        hold(
            &state,
            ResourceType::RouteConfiguration,
            &ROUTES.replace("virtual_hosts:", "validate_clusters: true\nvirtual_hosts:"),
        );
        let error = state.load().unwrap_err();
        assert!(
            error.path.starts_with("listener \"web\": filter_chains[0]"),
            "{error}"
        );
        assert!(error.message.contains("backend"), "{error}");
    }

    #[test]
    fn a_dynamic_resource_may_not_take_a_static_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        let names = ["xds".to_string()];
        let refused = state
            .refuse_static_names(ResourceType::Cluster, names.iter())
            .unwrap_err();
        assert!(refused.0.contains("static"), "{refused}");
        assert!(
            state
                .refuse_static_names(ResourceType::RouteConfiguration, names.iter())
                .is_ok()
        );
    }

    /// A route configuration `routes` of one virtual host, routes `/a` to `a` and `/b` to `b`.
    fn two_routes(a: &str, b: &str) -> bytes::Bytes {
        use envoy_types::pb::envoy::config::route::v3 as route_pb;
        use prost::Message as _;
        let route = |prefix: &str, cluster: &str| route_pb::Route {
            r#match: Some(route_pb::RouteMatch {
                path_specifier: Some(route_pb::route_match::PathSpecifier::Prefix(prefix.into())),
                ..Default::default()
            }),
            action: Some(route_pb::route::Action::Route(route_pb::RouteAction {
                cluster_specifier: Some(route_pb::route_action::ClusterSpecifier::Cluster(
                    cluster.into(),
                )),
                ..Default::default()
            })),
            ..Default::default()
        };
        route_pb::RouteConfiguration {
            name: "routes".into(),
            virtual_hosts: vec![route_pb::VirtualHost {
                name: "all".into(),
                domains: vec!["*".into()],
                routes: vec![route("/a", a), route("/b", b)],
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    }

    #[tokio::test]
    async fn a_refused_route_configuration_lends_nothing_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        let accepted = resource::decode(ResourceType::RouteConfiguration, &two_routes("a", "b"))
            .expect("decodes");
        let accepted_parts = accepted.route_parts.clone().expect("parts");
        {
            let mut held = state.lock();
            Arc::make_mut(
                held.resources
                    .entry(ResourceType::RouteConfiguration)
                    .or_default(),
            )
            .insert(
                "routes".into(),
                Arc::new(HeldResource {
                    decoded: accepted,
                    version: "1".into(),
                    last_updated: SystemTime::now(),
                }),
            );
        }
        // A version that reads but is refused (no config can be swapped in here).
        let refused = state
            .apply_update(Update {
                kind: ResourceType::RouteConfiguration,
                version: "2".into(),
                resources: vec![crate::xds::client::RawResource {
                    name: None,
                    version: String::new(),
                    body: two_routes("x", "y"),
                }],
                removed: vec![],
                state_of_the_world: true,
            })
            .await;
        assert!(refused.is_err());
        let in_force = state
            .in_force(ResourceType::RouteConfiguration, "routes")
            .expect("held");
        assert!(
            Arc::ptr_eq(
                in_force.route_parts.as_ref().expect("parts"),
                &accepted_parts
            ),
            "the refused version's parts are not kept"
        );
        // The next version reuses the accepted one's routes, not the refused one's.
        let previous = |name: &str| state.in_force(ResourceType::RouteConfiguration, name);
        let (_, reused) =
            crate::xds::route_reuse::decode(&two_routes("a", "y"), &previous).expect("reuses");
        assert_eq!((reused.decoded, reused.read), (1, 1));
    }

    #[test]
    fn a_version_hash_is_stable_and_positive() {
        assert_eq!(version_hash("v1"), version_hash("v1"));
        assert_ne!(version_hash("v1"), version_hash("v2"));
        assert!(version_hash("anything") >= 0);
    }
}
