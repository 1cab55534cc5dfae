//! The state of a cluster and its hosts that every worker shares: health, counters and the
//! circuit breakers, all atomics (or lock-free swaps), so the request path never takes a lock
//! shared between workers.

use super::error::UpstreamError;
use super::spec::{ClusterSpec, Discovery, EndpointHealth};
use super::tls;
use crate::stats::ClusterStats;
use arc_swap::ArcSwap;
use rustls::ClientConfig;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use tokio::sync::{Notify, watch};

/// The HTTP protocol spoken to one host, as the pools know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
    /// HTTP/3 over QUIC.
    Http3,
}

/// A host's health as load balancing sees it (Envoy's `Host::Health`, its "coarse health").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No flag that takes it out or degrades it: balanced over first.
    Healthy,
    /// Passing, but its health check answered `x-envoy-degraded` or EDS says `DEGRADED`:
    /// used only as far as the healthy hosts fall short (see `lb`).
    Degraded,
    /// Failing active health checks, ejected by outlier detection, or `UNHEALTHY`,
    /// `TIMEOUT` or `DRAINING` by EDS: only panic mode picks it.
    Unhealthy,
}

/// Hash table caches a cluster keeps, one per priority level up to this many.
const HASH_TABLES: usize = 4;

const PROTOCOL_UNKNOWN: u8 = 0;
const PROTOCOL_HTTP1: u8 = 1;
const PROTOCOL_HTTP2: u8 = 2;
const PROTOCOL_HTTP3: u8 = 3;

/// One upstream host (an address of an endpoint).
///
/// Hosts are shared by all workers; each worker's pools hold their own connections to it and
/// watch [`Host::drain_signal`] to close them when the host turns unhealthy or disappears.
#[derive(Debug)]
pub struct Host {
    /// Where connections go.
    pub addr: SocketAddr,
    healthy: AtomicBool,
    /// Envoy's `PENDING_ACTIVE_HC`: added to a cluster with `ignore_new_hosts_until_first_hc`
    /// and not yet checked, so left out of load balancing and of the panic computation.
    pending_first_check: AtomicBool,
    /// Envoy's `ACTIVE_HC_TIMEOUT`: unhealthy and its last check timed out.
    active_hc_timeout: AtomicBool,
    /// Envoy's `DEGRADED_ACTIVE_HC`: its last passing health check answered with
    /// `x-envoy-degraded`.
    degraded_active_hc: AtomicBool,
    /// Envoy's `EXCLUDED_VIA_IMMEDIATE_HC_FAIL`: a health check failed with
    /// `x-envoy-immediate-health-check-fail`; excluded until it is healthy again.
    immediate_hc_fail: AtomicBool,
    /// Its health checker's last state (consecutive passes, failures, when the next check
    /// is due), so that the checker of the cluster an EDS update builds goes on with it
    /// rather than checking it afresh (as Envoy keeps a host's check session).
    saved_check: std::sync::Mutex<Option<(u32, u32, tokio::time::Instant)>>,
    /// Set by a passive failure ([`Cluster::immediate_health_check_fail`]): the health
    /// checker starts the host's streak afresh, as Envoy's session resets its counts.
    streak_reset: AtomicBool,
    /// The `health_status` its endpoint was given (Envoy's EDS health flags), an
    /// [`EndpointHealth`] as `u8` (an EDS update changes it in place).
    eds_health: AtomicU8,
    /// Envoy's `PENDING_DYNAMIC_REMOVAL`: EDS removed it while it passed its active health
    /// checks, so it stays until it fails them.
    pending_removal: AtomicBool,
    removed: AtomicBool,
    /// Connections open to this host, over all workers.
    pub cx_active: AtomicI64,
    /// Requests in flight to this host, over all workers (LEAST_REQUEST reads it).
    pub rq_active: AtomicI64,
    /// Requests sent to this host since it was added.
    pub rq_total: AtomicU64,
    protocol: AtomicU8,
    drain: watch::Sender<u64>,
    /// Picked since the last `ORIGINAL_DST` cleanup sweep (see `original_dst`).
    used: AtomicBool,
    /// `load_balancing_weight` of its endpoint (at least 1; an EDS update changes it in
    /// place).
    weight: AtomicU32,
    /// Outlier detection's counters and ejection, shared by every worker.
    pub outlier: super::outlier::HostOutlier,
    /// The priority level of its endpoint's locality (0 the highest; an EDS update changes
    /// it in place).
    priority: AtomicU32,
    /// When it was added or last passed its health checks after failing them ([`clock_ms`]),
    /// for `slow_start_config`.
    ready_since_ms: AtomicI64,
}

/// Milliseconds on a process-wide monotonic clock (slow start's).
fn clock_ms() -> i64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = EPOCH.get_or_init(std::time::Instant::now);
    i64::try_from(epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
}

impl Host {
    /// A new host: healthy, protocol not yet negotiated.
    pub fn new(addr: SocketAddr) -> Host {
        Host::weighted(addr, 1)
    }

    /// A new host with `load_balancing_weight` `weight` (0 is taken as 1).
    pub fn weighted(addr: SocketAddr, weight: u32) -> Host {
        Host {
            addr,
            healthy: AtomicBool::new(true),
            pending_first_check: AtomicBool::new(false),
            active_hc_timeout: AtomicBool::new(false),
            degraded_active_hc: AtomicBool::new(false),
            immediate_hc_fail: AtomicBool::new(false),
            eds_health: AtomicU8::new(EndpointHealth::Healthy as u8),
            pending_removal: AtomicBool::new(false),
            streak_reset: AtomicBool::new(false),
            saved_check: std::sync::Mutex::new(None),
            removed: AtomicBool::new(false),
            cx_active: AtomicI64::new(0),
            rq_active: AtomicI64::new(0),
            rq_total: AtomicU64::new(0),
            protocol: AtomicU8::new(PROTOCOL_UNKNOWN),
            drain: watch::Sender::new(0),
            used: AtomicBool::new(true),
            weight: AtomicU32::new(weight.max(1)),
            outlier: Default::default(),
            priority: AtomicU32::new(0),
            ready_since_ms: AtomicI64::new(clock_ms()),
        }
    }

    /// `load_balancing_weight` of its endpoint (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Sets [`Host::weight`] (an EDS update of the same host; 0 is taken as 1).
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight.max(1), Ordering::Relaxed);
    }

    /// The priority level of its endpoint (0 the highest).
    pub fn priority(&self) -> u32 {
        self.priority.load(Ordering::Relaxed)
    }

    /// Sets [`Host::priority`] (an EDS update of the same host).
    pub fn set_priority(&self, priority: u32) {
        self.priority.store(priority, Ordering::Relaxed);
    }

    /// The same host at priority level `priority`.
    pub fn with_priority(self, priority: u32) -> Host {
        self.set_priority(priority);
        self
    }

    /// The same host with the `health_status` its endpoint was given.
    pub fn with_eds_health(self, health: EndpointHealth) -> Host {
        self.set_eds_health(health);
        self
    }

    /// The `health_status` its endpoint was given.
    pub fn eds_health(&self) -> EndpointHealth {
        match self.eds_health.load(Ordering::Acquire) {
            x if x == EndpointHealth::Unhealthy as u8 => EndpointHealth::Unhealthy,
            x if x == EndpointHealth::Draining as u8 => EndpointHealth::Draining,
            x if x == EndpointHealth::Degraded as u8 => EndpointHealth::Degraded,
            _ => EndpointHealth::Healthy,
        }
    }

    /// Sets [`Host::eds_health`] (an EDS update of the same host).
    pub fn set_eds_health(&self, health: EndpointHealth) {
        self.eds_health.store(health as u8, Ordering::Release);
    }

    /// What its health checker last saved: consecutive passes, failures, when the next check
    /// is due; `None` before its first check.
    pub fn saved_check(&self) -> Option<(u32, u32, tokio::time::Instant)> {
        *self
            .saved_check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Saves its health checker's state (see [`Host::saved_check`]).
    pub fn save_check(&self, passes: u32, failures: u32, due: tokio::time::Instant) {
        *self
            .saved_check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((passes, failures, due));
    }

    /// Whether a passive failure asked the health checker to start its streak afresh (and
    /// clears that).
    pub fn take_streak_reset(&self) -> bool {
        self.streak_reset.swap(false, Ordering::AcqRel)
    }

    /// Whether EDS removed it while it passed its active health checks (Envoy's
    /// `PENDING_DYNAMIC_REMOVAL`): it stays, balanced over by its health, until it fails.
    pub fn is_pending_removal(&self) -> bool {
        self.pending_removal.load(Ordering::Acquire)
    }

    /// Sets or clears [`Host::is_pending_removal`].
    pub fn set_pending_removal(&self, pending: bool) {
        self.pending_removal.store(pending, Ordering::Release);
    }

    /// Whether its last passing health check said `x-envoy-degraded` (Envoy's
    /// `DEGRADED_ACTIVE_HC`).
    pub fn is_degraded_active_hc(&self) -> bool {
        self.degraded_active_hc.load(Ordering::Acquire)
    }

    /// Sets or clears [`Host::is_degraded_active_hc`]; whether that changed it.
    pub fn set_degraded_active_hc(&self, degraded: bool) -> bool {
        self.degraded_active_hc.swap(degraded, Ordering::AcqRel) != degraded
    }

    /// Whether a health check failed with `x-envoy-immediate-health-check-fail` and it has
    /// not turned healthy since (Envoy's `EXCLUDED_VIA_IMMEDIATE_HC_FAIL`).
    pub fn is_immediate_hc_fail(&self) -> bool {
        self.immediate_hc_fail.load(Ordering::Acquire)
    }

    /// Sets or clears [`Host::is_immediate_hc_fail`].
    pub fn set_immediate_hc_fail(&self, failed: bool) {
        self.immediate_hc_fail.store(failed, Ordering::Release);
    }

    /// Its health as load balancing sees it, as Envoy's `coarseHealth`: unhealthy when it
    /// fails active health checks, is ejected, or EDS says `UNHEALTHY`, `TIMEOUT` or
    /// `DRAINING`; else degraded when its health check or EDS says so; else healthy.
    pub fn health(&self) -> Health {
        let eds = self.eds_health();
        if !self.is_healthy()
            || self.outlier.is_ejected()
            || matches!(eds, EndpointHealth::Unhealthy | EndpointHealth::Draining)
        {
            Health::Unhealthy
        } else if self.is_degraded_active_hc() || eds == EndpointHealth::Degraded {
            Health::Degraded
        } else {
            Health::Healthy
        }
    }

    /// Whether it is excluded from balancing and from the counts that decide panic mode
    /// and the healthy/degraded split, as Envoy's excluded hosts: waiting for its first
    /// health check (`PENDING_ACTIVE_HC`), failed with
    /// `x-envoy-immediate-health-check-fail` (`EXCLUDED_VIA_IMMEDIATE_HC_FAIL`), or
    /// `DRAINING` by EDS (`EDS_STATUS_DRAINING`).
    pub fn is_excluded(&self) -> bool {
        self.is_pending_first_check()
            || self.is_immediate_hc_fail()
            || self.eds_health() == EndpointHealth::Draining
    }

    /// How long since it was added, or since it passed its health checks again after
    /// failing them (slow start ramps its weight up over this).
    pub fn ready_for(&self) -> std::time::Duration {
        let since = self.ready_since_ms.load(Ordering::Acquire);
        std::time::Duration::from_millis(
            u64::try_from(clock_ms().saturating_sub(since)).unwrap_or(0),
        )
    }

    /// A new host of a cluster with active health checks, as Envoy adds one: unhealthy
    /// (`FAILED_ACTIVE_HC`) until its first check passes, and with `exclude` (the cluster's
    /// `ignore_new_hosts_until_first_hc`) also excluded from balancing until that first
    /// check, whatever its result.
    pub fn unchecked(addr: SocketAddr, weight: u32, exclude: bool) -> Host {
        let host = Host::weighted(addr, weight);
        host.healthy.store(false, Ordering::Release);
        host.pending_first_check.store(exclude, Ordering::Release);
        host
    }

    /// Whether it waits for its first health check outside load balancing (Envoy's
    /// `PENDING_ACTIVE_HC`).
    pub fn is_pending_first_check(&self) -> bool {
        self.pending_first_check.load(Ordering::Acquire)
    }

    /// Ends the wait for the first health check (its result is in); whether it was waiting.
    pub fn take_pending_first_check(&self) -> bool {
        self.pending_first_check.swap(false, Ordering::AcqRel)
    }

    /// Whether it is unhealthy and its last health check timed out (Envoy's
    /// `ACTIVE_HC_TIMEOUT`, shown in `/clusters`).
    pub fn is_active_hc_timeout(&self) -> bool {
        self.active_hc_timeout.load(Ordering::Acquire)
    }

    /// Sets or clears [`Host::is_active_hc_timeout`].
    pub fn set_active_hc_timeout(&self, timed_out: bool) {
        self.active_hc_timeout.store(timed_out, Ordering::Release);
    }

    /// Makes it look ready for `ago` only (tests of slow start).
    #[cfg(test)]
    pub fn set_ready_for(&self, ago: std::time::Duration) {
        let ago = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
        self.ready_since_ms
            .store(clock_ms().saturating_sub(ago), Ordering::Release);
    }

    /// Whether load balancing picks this host outside panic mode without preferring
    /// others: [`Health::Healthy`], not removed, not excluded.
    pub fn is_available(&self) -> bool {
        self.health() == Health::Healthy && !self.is_removed() && !self.is_excluded()
    }

    /// Whether discovery removed it.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Notes a pick, for the `ORIGINAL_DST` cleanup sweep.
    pub fn mark_used(&self) {
        self.used.store(true, Ordering::Relaxed);
    }

    /// Whether it was picked since the last call (and clears that).
    pub fn take_used(&self) -> bool {
        self.used.swap(false, Ordering::Relaxed)
    }

    /// Whether the last active health checks left it healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Sets the health-check verdict; turning unhealthy drains every worker's connections.
    pub fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::AcqRel);
        if was && !healthy {
            self.drain_connections();
        }
        if !was && healthy {
            self.ready_since_ms.store(clock_ms(), Ordering::Release);
        }
    }

    /// Marks the host gone from discovery and drains every worker's connections to it.
    pub fn remove(&self) {
        self.removed.store(true, Ordering::Release);
        self.drain_connections();
    }

    /// Tells every connection to this host to close: idle ones now, busy ones when their
    /// requests finish.
    pub fn drain_connections(&self) {
        self.drain.send_modify(|generation| *generation += 1);
    }

    /// A receiver that changes whenever [`Host::drain_connections`] is called after it was
    /// taken. A connection takes one when it opens.
    pub fn drain_signal(&self) -> watch::Receiver<u64> {
        self.drain.subscribe()
    }

    /// The protocol ALPN negotiated with this host last time, when known.
    pub fn negotiated_protocol(&self) -> Option<HostProtocol> {
        match self.protocol.load(Ordering::Acquire) {
            PROTOCOL_HTTP1 => Some(HostProtocol::Http1),
            PROTOCOL_HTTP2 => Some(HostProtocol::Http2),
            PROTOCOL_HTTP3 => Some(HostProtocol::Http3),
            _ => None,
        }
    }

    /// Remembers what ALPN negotiated, so later requests go to that protocol's pool.
    pub fn set_negotiated_protocol(&self, protocol: HostProtocol) {
        let value = match protocol {
            HostProtocol::Http1 => PROTOCOL_HTTP1,
            HostProtocol::Http2 => PROTOCOL_HTTP2,
            HostProtocol::Http3 => PROTOCOL_HTTP3,
        };
        self.protocol.store(value, Ordering::Release);
    }
}

/// Sets the membership gauges of `hosts` as Envoy partitions its host set: healthy and
/// degraded by [`Host::health`] (an ejected host is not healthy), excluded by
/// [`Host::is_excluded`] (a host may be excluded and counted by its health too).
fn set_membership(stats: &ClusterStats, hosts: &[Arc<Host>]) {
    let (mut healthy, mut degraded, mut excluded) = (0i64, 0i64, 0i64);
    for host in hosts {
        match host.health() {
            Health::Healthy => healthy += 1,
            Health::Degraded => degraded += 1,
            Health::Unhealthy => {}
        }
        if host.is_excluded() && !host.is_removed() {
            excluded += 1;
        }
    }
    stats.membership_total.set(hosts.len() as i64);
    stats.membership_healthy.set(healthy);
    stats.membership_degraded.set(degraded);
    stats.membership_excluded.set(excluded);
}

/// A counting limit shared by all workers (one circuit breaker threshold).
#[derive(Debug)]
pub struct Breaker {
    limit: u32,
    count: AtomicU32,
}

impl Breaker {
    fn new(limit: u32) -> Breaker {
        Breaker {
            limit,
            count: AtomicU32::new(0),
        }
    }

    /// Takes one unit if the limit allows.
    fn try_acquire(&self) -> bool {
        self.try_acquire_within(self.limit)
    }

    /// Takes one unit if fewer than `limit` are taken (a limit that changes with load).
    fn try_acquire_within(&self, limit: u32) -> bool {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < limit).then_some(count + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        // Only called by guards that acquired, so the count is above zero.
        let _ = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                count.checked_sub(1)
            });
    }

    /// Units taken now.
    pub fn current(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }
}

/// A cluster: its spec, stats, TLS config, hosts and circuit breakers.
pub struct Cluster {
    /// What it was built from (shared with the config that holds it: a reload that keeps the
    /// spec tells the cluster unchanged by its identity, without comparing every field).
    pub spec: Arc<ClusterSpec>,
    /// Its stats (label `cluster_name`).
    pub stats: ClusterStats,
    /// The TLS client config, when the cluster speaks TLS.
    pub tls: Option<Arc<ClientConfig>>,
    /// The QUIC client config, when the cluster speaks HTTP/3 (always or by alt-svc).
    pub quic: Option<quinn::ClientConfig>,
    /// Hosts known to speak HTTP/3 (`auto_config` with `http3_protocol_options` only).
    pub alt_svc: Option<super::alt_svc::AltSvcCache>,
    hosts: ArcSwap<Vec<Arc<Host>>>,
    /// `max_connections`.
    pub connections: Breaker,
    /// `max_pending_requests`.
    pub pending: Breaker,
    /// `max_requests`.
    pub requests: Breaker,
    /// `max_retries`: retries in flight, from the decision to retry to that try's outcome.
    pub retries: Breaker,
    /// Where round robin goes next.
    pub(crate) round_robin: AtomicUsize,
    /// Outlier detection, when the cluster has `outlier_detection`.
    pub outlier: Option<super::outlier::Detector>,
    /// RING_HASH / MAGLEV: per priority level (modulo [`HASH_TABLES`]), the table over the
    /// level's hosts available when it was built.
    hash_tables: [super::hash_lb::TableCache; HASH_TABLES],
    /// Woken when a connection of this cluster closes, for requests waiting on
    /// `max_connections`. Only requests already over a breaker wait on it.
    pub(crate) connection_freed: Notify,
    /// `ORIGINAL_DST`: the destinations seen (see `original_dst`).
    pub(super) original: super::original_dst::OriginalDestinations,
    /// STRICT_DNS and LOGICAL_DNS: the name each address was resolved from (see `dns`), for
    /// `auto_host_rewrite`.
    dns_names: ArcSwap<Vec<(SocketAddr, http::HeaderValue)>>,
    /// Whether the cluster has finished initializing: true at once without active health
    /// checks; with them, once every host known after discovery's first answer has had its
    /// first check (Envoy's cluster warming, see [`Cluster::initialized`]).
    initialized: watch::Sender<bool>,
    /// STRICT_DNS and LOGICAL_DNS: whether the first resolution is done (either way).
    resolved: watch::Sender<bool>,
    /// Built by [`Cluster::after_eds_update`]: what it does to the hosts it shares with the
    /// cluster it follows once it is in force ([`Cluster::take_over_hosts`]).
    eds_carry: std::sync::Mutex<Option<EdsCarry>>,
}

/// What an EDS update does to the previous cluster's hosts once the new cluster is in
/// force (held until then: the update may still be refused).
#[derive(Debug, Default)]
struct EdsCarry {
    /// Hosts kept, with the `health_status`, weight and priority the update gives them.
    kept: Vec<(Arc<Host>, EndpointHealth, u32, u32)>,
    /// Hosts the update removed that pass their health checks: kept, pending removal.
    pending: Vec<Arc<Host>>,
    /// Hosts the update removed for good.
    removed: Vec<Arc<Host>>,
    /// Whether a host was added or removed (a membership change).
    changed: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Builds a cluster: TLS config, and for STATIC the hosts from the IP literals. DNS
    /// clusters get their hosts from the first resolution (see `dns`).
    pub fn new(spec: impl Into<Arc<ClusterSpec>>) -> Result<Cluster, UpstreamError> {
        Cluster::build(spec.into(), true)
    }

    /// The cluster after an EDS update of `previous` that changed its endpoints alone, as
    /// Envoy updates an EDS cluster's host set in place: an endpoint `previous` has (same
    /// address) is the same [`Host`], its health, outlier state and counters kept (its
    /// `health_status` and weight the update's); a new one starts as a new host of the
    /// cluster would. A host the update removes goes, unless the cluster has active health
    /// checks, not `ignore_health_on_host_removal`, and the host neither fails them nor is
    /// `UNHEALTHY` by EDS: then it stays, `PENDING_DYNAMIC_REMOVAL`, until it fails a check.
    /// The cluster counts as initialized when `previous` did (no warming again). Changes
    /// nothing in `previous` until [`Cluster::take_over_hosts`].
    pub fn after_eds_update(
        spec: impl Into<Arc<ClusterSpec>>,
        previous: &Cluster,
    ) -> Result<Cluster, UpstreamError> {
        let cluster = Cluster::build(spec.into(), false)?;
        let spec = &cluster.spec;
        let checked = spec.health_check.is_some();
        let before = previous.hosts();
        let mut carry = EdsCarry::default();
        let mut next = Vec::with_capacity(before.len());
        for fresh in cluster.hosts().iter() {
            let same = before
                .iter()
                .find(|old| old.addr == fresh.addr && !old.is_removed());
            match same {
                Some(old) => {
                    carry.kept.push((
                        old.clone(),
                        fresh.eds_health(),
                        fresh.weight(),
                        fresh.priority(),
                    ));
                    next.push(old.clone());
                }
                None => {
                    carry.changed = true;
                    next.push(if checked {
                        Arc::new(
                            Host::unchecked(
                                fresh.addr,
                                fresh.weight(),
                                spec.lb.ignore_new_hosts_until_first_hc,
                            )
                            .with_eds_health(fresh.eds_health())
                            .with_priority(fresh.priority()),
                        )
                    } else {
                        fresh.clone()
                    });
                }
            }
        }
        for old in before.iter() {
            if old.is_removed() || next.iter().any(|kept| Arc::ptr_eq(kept, old)) {
                continue;
            }
            let stays = checked
                && !spec.ignore_health_on_host_removal
                && old.is_healthy()
                && old.eds_health() != EndpointHealth::Unhealthy;
            if stays {
                carry.pending.push(old.clone());
                next.push(old.clone());
            } else {
                carry.changed = true;
                carry.removed.push(old.clone());
            }
        }
        cluster.hosts.store(Arc::new(next));
        if previous.is_initialized() {
            cluster.set_initialized();
        }
        *cluster
            .eds_carry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(carry);
        Ok(cluster)
    }

    /// Applies what [`Cluster::after_eds_update`] held back, once this cluster is in force:
    /// the kept hosts take their new `health_status` (and leave a pending removal), the
    /// removed ones pending removal are flagged, the others drained; counts the membership
    /// change and sets the gauges. Nothing for a cluster built otherwise, or a second time.
    pub fn take_over_hosts(&self) {
        let carry = self
            .eds_carry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(carry) = carry else {
            return;
        };
        for (host, health, weight, priority) in carry.kept {
            host.set_eds_health(health);
            host.set_weight(weight);
            host.set_priority(priority);
            host.set_pending_removal(false);
        }
        let mut removed = carry.removed;
        let mut changed = carry.changed;
        for host in carry.pending {
            // It failed its check since the update came: it goes now.
            if !host.is_healthy() {
                removed.push(host);
                continue;
            }
            tracing::debug!(cluster = %self.name(), host = %host.addr, "host pending removal");
            host.set_pending_removal(true);
        }
        let kept: Vec<Arc<Host>> = self
            .hosts()
            .iter()
            .filter(|host| !removed.iter().any(|gone| Arc::ptr_eq(gone, host)))
            .cloned()
            .collect();
        if kept.len() != self.hosts().len() {
            changed = true;
            self.hosts.store(Arc::new(kept));
        }
        for host in removed {
            tracing::debug!(cluster = %self.name(), host = %host.addr, "host removed");
            host.remove();
        }
        if changed {
            self.stats.membership_change.inc();
        }
        self.update_membership();
    }

    /// Drops `gone` (hosts pending removal that failed their health check), as Envoy's EDS
    /// cluster does on that check: drained, and a membership change.
    pub(super) fn drop_pending_removal(&self, gone: &[Arc<Host>]) {
        let hosts = self.hosts();
        let next: Vec<Arc<Host>> = hosts
            .iter()
            .filter(|host| !gone.iter().any(|g| Arc::ptr_eq(g, host)))
            .cloned()
            .collect();
        for host in gone {
            tracing::debug!(cluster = %self.name(), host = %host.addr, "host removed after failing its check");
            host.remove();
        }
        self.store_hosts(next);
    }

    /// [`Cluster::new`]; the first hosts count as a membership change where `count_first`.
    fn build(spec: Arc<ClusterSpec>, count_first: bool) -> Result<Cluster, UpstreamError> {
        let tls = spec
            .tls
            .as_ref()
            .map(|tls_spec| tls::client_config(&spec.name, tls_spec, spec.protocol))
            .transpose()?;
        let quic = super::quic::client_config(&spec)?;
        let hosts = match spec.discovery {
            Discovery::Static => spec
                .endpoints
                .iter()
                .map(|endpoint| {
                    let ip: IpAddr =
                        endpoint
                            .address
                            .parse()
                            .map_err(|_| UpstreamError::Config {
                                cluster: spec.name.clone(),
                                reason: format!(
                                    "STATIC endpoint address {:?} is not an IP address",
                                    endpoint.address
                                ),
                            })?;
                    Ok(Arc::new(
                        Host::weighted(SocketAddr::new(ip, endpoint.port), endpoint.weight)
                            .with_eds_health(endpoint.health)
                            .with_priority(endpoint.priority),
                    ))
                })
                .collect::<Result<Vec<_>, UpstreamError>>()?,
            // ORIGINAL_DST: a host per destination as redirected connections need it.
            Discovery::StrictDns | Discovery::LogicalDns | Discovery::OriginalDst => Vec::new(),
        };
        // With active health checks a host starts unhealthy, as Envoy's STATIC hosts do
        // (`FAILED_ACTIVE_HC`); its first check decides.
        let hosts: Vec<Arc<Host>> = if spec.health_check.is_some() {
            hosts
                .into_iter()
                .map(|host| {
                    Arc::new(
                        Host::unchecked(host.addr, host.weight(), false)
                            .with_eds_health(host.eds_health())
                            .with_priority(host.priority()),
                    )
                })
                .collect()
        } else {
            hosts
        };
        let stats = ClusterStats::new(&spec.name);
        // An EDS update's cluster sets them once in force (`take_over_hosts`).
        if count_first {
            set_membership(&stats, &hosts);
        }
        // As Envoy's, the first hosts are a membership change.
        if count_first && !hosts.is_empty() {
            stats.membership_change.inc();
        }
        let dns = matches!(spec.discovery, Discovery::StrictDns | Discovery::LogicalDns);
        Ok(Cluster {
            connections: Breaker::new(spec.thresholds.max_connections),
            pending: Breaker::new(spec.thresholds.max_pending_requests),
            requests: Breaker::new(spec.thresholds.max_requests),
            retries: Breaker::new(spec.thresholds.max_retries),
            stats,
            tls,
            quic,
            alt_svc: (spec.protocol == super::spec::UpstreamProtocol::AutoHttp3)
                .then(super::alt_svc::AltSvcCache::new),
            hosts: ArcSwap::from_pointee(hosts),
            round_robin: AtomicUsize::new(0),
            outlier: spec
                .outlier
                .clone()
                .map(|outlier| super::outlier::Detector::new(&spec.name, outlier)),
            hash_tables: Default::default(),
            connection_freed: Notify::new(),
            original: Default::default(),
            dns_names: Default::default(),
            initialized: watch::Sender::new(spec.health_check.is_none()),
            resolved: watch::Sender::new(!dns),
            eds_carry: Default::default(),
            spec,
        })
    }

    /// Where to try HTTP/3 for `host` now (`auto_config` with HTTP/3): the UDP address its
    /// alt-svc advertised, or its own address when a QUIC hint names it (by endpoint name or
    /// IP, and port); `None` when it is not known to speak HTTP/3 or its QUIC is broken.
    pub fn h3_address(&self, host: SocketAddr) -> Option<SocketAddr> {
        let cache = self.alt_svc.as_ref()?;
        let hinted = self.spec.quic_hints.iter().any(|(name, port)| {
            *port == host.port()
                && (name.parse::<IpAddr>().ok() == Some(host.ip())
                    || self
                        .spec
                        .endpoints
                        .iter()
                        .any(|e| e.port == host.port() && e.address.eq_ignore_ascii_case(name)))
        });
        if hinted {
            cache.add_hint(host);
        }
        cache.h3_address(host)
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The hosts now (a snapshot).
    /// The RING_HASH / MAGLEV table cache of priority level `priority` (levels past
    /// [`HASH_TABLES`] share, each rebuilding the table when its hosts differ).
    pub(crate) fn hash_table(&self, priority: u32) -> &super::hash_lb::TableCache {
        &self.hash_tables[priority as usize % HASH_TABLES]
    }

    pub fn hosts(&self) -> Arc<Vec<Arc<Host>>> {
        self.hosts.load_full()
    }

    /// Records the DNS name each resolved address came from.
    pub fn set_dns_names(&self, names: Vec<(SocketAddr, http::HeaderValue)>) {
        self.dns_names.store(Arc::new(names));
    }

    /// The DNS name `host` was resolved from, if it was (`auto_host_rewrite`).
    pub fn dns_name(&self, host: &Host) -> Option<http::HeaderValue> {
        self.dns_names
            .load()
            .iter()
            .find(|(addr, _)| *addr == host.addr)
            .map(|(_, name)| name.clone())
    }

    /// Waits until the cluster has initialized: at once without active health checks, else
    /// until each host has had its first check (bounded by the check's `timeout`), as
    /// Envoy holds its listeners until its clusters have warmed.
    pub async fn initialized(&self) {
        let mut done = self.initialized.subscribe();
        // The sender lives as long as `self`, so this returns once it is set.
        let _ = done.wait_for(|done| *done).await;
    }

    /// Whether the cluster has initialized ([`Cluster::initialized`]).
    pub fn is_initialized(&self) -> bool {
        *self.initialized.borrow()
    }

    /// Records that the first health-check round is done.
    pub(super) fn set_initialized(&self) {
        self.initialized.send_replace(true);
    }

    /// Waits for the first DNS resolution of a DNS cluster (at once for the others).
    pub(super) async fn first_resolution(&self) {
        let mut done = self.resolved.subscribe();
        let _ = done.wait_for(|done| *done).await;
    }

    /// Records that the first DNS resolution is done, whatever it found.
    pub(super) fn set_resolved(&self) {
        self.resolved.send_replace(true);
    }

    /// Replaces the host set with `addrs`: hosts still present keep their state, and the ones
    /// gone are removed (their connections drained). New ones start healthy, or with active
    /// health checks unhealthy until their first check passes (Envoy's `FAILED_ACTIVE_HC`),
    /// and with `ignore_new_hosts_until_first_hc` out of balancing until then.
    pub fn set_host_addresses(&self, addrs: &[SocketAddr]) {
        let old = self.hosts.load_full();
        let mut next = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if next.iter().any(|host: &Arc<Host>| host.addr == *addr) {
                continue;
            }
            let (weight, health, priority) = self.endpoint_of(*addr);
            match old.iter().find(|host| host.addr == *addr) {
                Some(host) => next.push(host.clone()),
                None if self.spec.health_check.is_some() => next.push(Arc::new(
                    Host::unchecked(*addr, weight, self.spec.lb.ignore_new_hosts_until_first_hc)
                        .with_eds_health(health)
                        .with_priority(priority),
                )),
                None => next.push(Arc::new(
                    Host::weighted(*addr, weight)
                        .with_eds_health(health)
                        .with_priority(priority),
                )),
            }
        }
        for host in old.iter() {
            if !next.iter().any(|kept| Arc::ptr_eq(kept, host)) {
                tracing::debug!(cluster = %self.name(), host = %host.addr, "host removed");
                host.remove();
            }
        }
        self.store_hosts(next);
    }

    /// The `load_balancing_weight`, `health_status` and priority of the endpoint `addr` was
    /// resolved from (1, healthy and 0 when unknown).
    fn endpoint_of(&self, addr: SocketAddr) -> (u32, EndpointHealth, u32) {
        let names = self.dns_names.load();
        let name = names.iter().find(|(a, _)| *a == addr).map(|(_, name)| name);
        self.spec
            .endpoints
            .iter()
            .find(|e| {
                e.port == addr.port()
                    && name.is_some_and(|name| e.address.as_bytes() == name.as_bytes())
            })
            .map_or((1, EndpointHealth::Healthy, 0), |e| {
                (e.weight, e.health, e.priority)
            })
    }

    /// A routed response from `host` carried `x-envoy-immediate-health-check-fail` (the
    /// host's own health check filter failing): as Envoy's router tells the host's active
    /// health checker, and only where the cluster has one, the host is excluded
    /// (`EXCLUDED_VIA_IMMEDIATE_HC_FAIL`) and, a non-retriable passive failure, unhealthy at
    /// once (its connections drained), counted in `health_check.failure` and
    /// `health_check.passive_failure`; its passes count from zero again.
    pub fn immediate_health_check_fail(&self, host: &Host) {
        if self.spec.health_check.is_none() {
            return;
        }
        tracing::info!(cluster = %self.name(), host = %host.addr, "host failed by x-envoy-immediate-health-check-fail");
        host.set_immediate_hc_fail(true);
        host.streak_reset.store(true, Ordering::Release);
        host.set_healthy(false);
        host.set_active_hc_timeout(false);
        self.stats.health_check_failure.inc();
        self.stats.health_check_passive_failure.inc();
        self.update_membership();
        let passing = self
            .hosts()
            .iter()
            .filter(|host| host.is_healthy() && !host.is_removed())
            .count();
        self.stats.health_check_healthy.set(passing as i64);
    }

    /// Records what a request to `host` came to, for outlier detection (nothing without it).
    pub fn record_outcome(&self, host: &Host, outcome: super::outlier::Outcome) {
        if let Some(detector) = &self.outlier {
            let was_ejected = host.outlier.is_ejected();
            detector.record(&self.hosts.load(), host, outcome);
            if !was_ejected && host.outlier.is_ejected() {
                self.update_membership();
            }
        }
    }

    /// Makes `hosts` the host set and updates the membership gauges; counts
    /// `membership_change` when a host was added or removed (as Envoy, not when only health
    /// changed).
    pub(super) fn store_hosts(&self, hosts: Vec<Arc<Host>>) {
        let old = self.hosts.swap(Arc::new(hosts));
        let new = self.hosts.load();
        let changed = old.len() != new.len()
            || new
                .iter()
                .any(|host| !old.iter().any(|was| Arc::ptr_eq(was, host)));
        if changed {
            self.stats.membership_change.inc();
        }
        self.update_membership();
    }

    /// Sets the membership gauges from the hosts' state.
    pub fn update_membership(&self) {
        set_membership(&self.stats, &self.hosts.load());
    }

    /// Takes a `max_connections` unit for a new connection; `None` when the breaker is open
    /// (the caller counts `cx_overflow`, once per request).
    pub fn try_open_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        self.connections.try_acquire().then(|| ConnectionSlot {
            cluster: self.clone(),
        })
    }

    /// Takes a `max_pending_requests` unit; `PendingOverflow` (counted) when it is open.
    pub fn try_pending(self: &Arc<Self>) -> Result<PendingSlot, UpstreamError> {
        if self.pending.try_acquire() {
            self.stats.rq_pending_total.inc();
            self.stats.rq_pending_active.inc();
            Ok(PendingSlot {
                cluster: self.clone(),
            })
        } else {
            self.stats.rq_pending_overflow.inc();
            Err(UpstreamError::PendingOverflow(self.name().to_owned()))
        }
    }

    /// Takes a `max_requests` unit for a request to `host`, held until the response body is
    /// done; `RequestOverflow` (counted) when the breaker is open.
    pub fn try_request(self: &Arc<Self>, host: &Arc<Host>) -> Result<RequestSlot, UpstreamError> {
        if self.requests.try_acquire() {
            self.stats.rq_total.inc();
            self.stats.rq_active.inc();
            host.rq_active.fetch_add(1, Ordering::AcqRel);
            host.rq_total.fetch_add(1, Ordering::AcqRel);
            Ok(RequestSlot {
                cluster: self.clone(),
                host: host.clone(),
            })
        } else {
            self.stats.rq_overflow.inc();
            Err(UpstreamError::RequestOverflow(self.name().to_owned()))
        }
    }
}

/// One unit of `max_retries`, held by a retry from the decision to send it until its outcome
/// is known (as Envoy's retry state holds it until its next decision).
#[derive(Debug)]
pub struct RetrySlot {
    cluster: Arc<Cluster>,
}

impl Cluster {
    /// Takes a `max_retries` unit for a retry; `None` (`upstream_rq_retry_overflow` counted)
    /// when the breaker is open.
    pub fn try_retry(self: &Arc<Self>) -> Option<RetrySlot> {
        // With a `retry_budget`, the limit follows the requests active and pending now.
        let limit = match self.spec.thresholds.retry_budget {
            Some(budget) => budget.limit(self.requests.current() + self.pending.current()),
            None => self.retries.limit,
        };
        if self.retries.try_acquire_within(limit) {
            Some(RetrySlot {
                cluster: self.clone(),
            })
        } else {
            self.stats.rq_retry_overflow.inc();
            None
        }
    }
}

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.cluster.retries.release();
    }
}

/// One unit of `max_connections`, held by a connection (or its attempt) until it closes.
#[derive(Debug)]
pub struct ConnectionSlot {
    cluster: Arc<Cluster>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.cluster.connections.release();
        self.cluster.connection_freed.notify_waiters();
    }
}

/// One unit of `max_pending_requests`, held while a request waits for a connection.
#[derive(Debug)]
pub struct PendingSlot {
    cluster: Arc<Cluster>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.cluster.pending.release();
        self.cluster.stats.rq_pending_active.dec();
    }
}

/// One unit of `max_requests`, held from dispatch until the response body is done.
#[derive(Debug)]
pub struct RequestSlot {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.cluster.requests.release();
        self.cluster.stats.rq_active.dec();
        self.host.rq_active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts an open connection in the cluster's and host's stats until dropped; holds the
/// connection's `max_connections` unit.
#[derive(Debug)]
pub struct OpenConnection {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    _slot: ConnectionSlot,
}

impl OpenConnection {
    /// Counts a newly established connection of `protocol`.
    pub fn new(
        cluster: Arc<Cluster>,
        host: Arc<Host>,
        slot: ConnectionSlot,
        protocol: HostProtocol,
    ) -> OpenConnection {
        cluster.stats.cx_total.inc();
        cluster.stats.cx_active.inc();
        match protocol {
            HostProtocol::Http1 => cluster.stats.cx_http1_total.inc(),
            HostProtocol::Http2 => cluster.stats.cx_http2_total.inc(),
            HostProtocol::Http3 => cluster.stats.cx_http3_total.inc(),
        }
        host.cx_active.fetch_add(1, Ordering::AcqRel);
        OpenConnection {
            cluster,
            host,
            _slot: slot,
        }
    }
}

impl OpenConnection {
    /// Counts a raw TCP connection (a terminated CONNECT, a tcp_proxy): `cx_total` and
    /// `cx_active`, no protocol counter.
    pub fn tcp(cluster: Arc<Cluster>, host: Arc<Host>, slot: ConnectionSlot) -> OpenConnection {
        cluster.stats.cx_total.inc();
        cluster.stats.cx_active.inc();
        host.cx_active.fetch_add(1, Ordering::AcqRel);
        OpenConnection {
            cluster,
            host,
            _slot: slot,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.cluster.stats.cx_active.dec();
        self.host.cx_active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `membership_change` counts the first hosts and each update that adds or removes one,
    /// as Envoy's; an update with the same hosts is no change.
    #[test]
    fn membership_change_counts_host_set_changes_only() {
        let Ok(cluster) = Cluster::new(crate::upstream::test_support::spec(
            "membership_change_unit",
            &[1],
        )) else {
            panic!("cluster builds")
        };
        let change = || cluster.stats.membership_change.get();
        assert_eq!(change(), 1, "the first hosts");
        let one = SocketAddr::from(([127, 0, 0, 1], 1));
        let two = SocketAddr::from(([127, 0, 0, 1], 2));
        cluster.set_host_addresses(&[one]);
        assert_eq!(change(), 1, "same hosts");
        cluster.set_host_addresses(&[one, two]);
        assert_eq!(change(), 2, "one added");
        cluster.set_host_addresses(&[two]);
        assert_eq!(change(), 3, "one removed");
        assert_eq!(cluster.stats.membership_total.get(), 1);
        assert_eq!(cluster.stats.membership_excluded.get(), 0);
    }

    /// An EDS update of the endpoints alone keeps the hosts it still names (their health
    /// too, the new `health_status` applied once in force); a removed host passing its
    /// checks stays pending removal, one failing them goes; only real additions and
    /// removals are membership changes.
    #[test]
    fn an_eds_update_keeps_hosts_and_their_health() {
        use crate::upstream::spec::HealthCheckIntervals;
        let mut spec = crate::upstream::test_support::spec("eds_update_unit", &[1, 2, 3]);
        spec.eds = true;
        spec.health_check = Some(crate::upstream::spec::HealthCheckSpec {
            path: "/health".into(),
            host: None,
            intervals: HealthCheckIntervals::all(std::time::Duration::from_secs(1)),
            timeout: std::time::Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            over_quic: false,
            expected_statuses: vec![(200, 201)],
            retriable_statuses: Vec::new(),
        });
        let Ok(first) = Cluster::new(spec.clone()) else {
            panic!("cluster builds")
        };
        let old = first.hosts();
        old[0].set_healthy(true);
        old[1].set_healthy(true);
        first.set_initialized();
        let change = first.stats.membership_change.get();
        // Endpoint 1 stays (now DEGRADED, weight 5), 2 (healthy) and 3 (failing) go, 4
        // comes.
        let mut next = spec.clone();
        next.endpoints.remove(2);
        next.endpoints.remove(1);
        next.endpoints[0].health = EndpointHealth::Degraded;
        next.endpoints[0].weight = 5;
        next.endpoints[0].priority = 1;
        next.endpoints.push(crate::upstream::spec::EndpointSpec {
            address: "127.0.0.1".into(),
            port: 4,
            weight: 1,
            health: EndpointHealth::Healthy,
            priority: 2,
        });
        assert!(spec.same_but_endpoints(&next));
        let Ok(second) = Cluster::after_eds_update(next, &first) else {
            panic!("cluster builds")
        };
        assert!(second.is_initialized(), "no warming again");
        assert_eq!(
            old[0].health(),
            Health::Healthy,
            "nothing changes before in force"
        );
        assert_eq!(old[0].weight(), 1);
        assert_eq!(old[0].priority(), 0);
        assert!(!old[2].is_removed());
        second.take_over_hosts();
        let hosts = second.hosts();
        let ports: Vec<u16> = hosts.iter().map(|h| h.addr.port()).collect();
        assert_eq!(ports, [1, 4, 2]);
        assert!(Arc::ptr_eq(&hosts[0], &old[0]) && Arc::ptr_eq(&hosts[2], &old[1]));
        assert_eq!(hosts[0].health(), Health::Degraded);
        assert_eq!(hosts[0].weight(), 5, "a new weight, the same host");
        assert_eq!(hosts[0].priority(), 1, "a new priority, the same host");
        assert_eq!(hosts[1].priority(), 2);
        assert!(
            !hosts[1].is_healthy(),
            "a new host waits for its first check"
        );
        assert!(hosts[2].is_pending_removal() && hosts[2].is_healthy());
        assert!(old[2].is_removed());
        assert_eq!(second.stats.membership_change.get(), change + 1);
        assert_eq!(second.stats.membership_total.get(), 3);
        second.drop_pending_removal(&[hosts[2].clone()]);
        assert!(old[1].is_removed());
        assert_eq!(second.stats.membership_total.get(), 2);
        assert_eq!(second.stats.membership_change.get(), change + 2);
    }

    /// A host an EDS update would keep pending removal that fails its check before the
    /// update is in force goes at once (one membership change).
    #[test]
    fn a_host_failing_before_the_update_is_in_force_goes() {
        let mut spec = crate::upstream::test_support::spec("eds_pending_fail", &[1, 2]);
        spec.eds = true;
        spec.health_check = Some(crate::upstream::spec::HealthCheckSpec {
            path: "/health".into(),
            host: None,
            intervals: crate::upstream::spec::HealthCheckIntervals::all(
                std::time::Duration::from_secs(1),
            ),
            timeout: std::time::Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            over_quic: false,
            expected_statuses: vec![(200, 201)],
            retriable_statuses: Vec::new(),
        });
        let Ok(first) = Cluster::new(spec.clone()) else {
            panic!("cluster builds")
        };
        let old = first.hosts();
        old[0].set_healthy(true);
        old[1].set_healthy(true);
        let change = first.stats.membership_change.get();
        let mut next = spec;
        next.endpoints.truncate(1);
        let Ok(second) = Cluster::after_eds_update(next, &first) else {
            panic!("cluster builds")
        };
        assert_eq!(second.hosts().len(), 2, "host 2 planned pending removal");
        old[1].set_healthy(false);
        second.take_over_hosts();
        assert_eq!(second.hosts().len(), 1);
        assert!(old[1].is_removed() && !old[1].is_pending_removal());
        assert_eq!(second.stats.membership_change.get(), change + 1);
        assert_eq!(second.stats.membership_total.get(), 1);
    }

    /// A routed response with `x-envoy-immediate-health-check-fail` fails and excludes its
    /// host where the cluster has active health checks (counted as a passive failure), and
    /// does nothing where it has none.
    #[test]
    fn an_immediate_failure_in_a_response_excludes_a_checked_host() {
        let plain = Cluster::new(crate::upstream::test_support::spec("passive_plain", &[1]));
        let Ok(plain) = plain else {
            panic!("cluster builds")
        };
        plain.immediate_health_check_fail(&plain.hosts()[0]);
        assert!(plain.hosts()[0].is_available());
        let mut spec = crate::upstream::test_support::spec("passive_checked", &[1, 2]);
        spec.health_check = Some(crate::upstream::spec::HealthCheckSpec {
            path: "/health".into(),
            host: None,
            intervals: crate::upstream::spec::HealthCheckIntervals::all(
                std::time::Duration::from_secs(1),
            ),
            timeout: std::time::Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            over_quic: false,
            expected_statuses: vec![(200, 201)],
            retriable_statuses: Vec::new(),
        });
        let Ok(cluster) = Cluster::new(spec) else {
            panic!("cluster builds")
        };
        let hosts = cluster.hosts();
        hosts[0].set_healthy(true);
        hosts[1].set_healthy(true);
        cluster.immediate_health_check_fail(&hosts[1]);
        assert!(!hosts[1].is_healthy() && hosts[1].is_excluded());
        assert!(hosts[1].take_streak_reset());
        assert_eq!(cluster.stats.health_check_passive_failure.get(), 1);
        assert_eq!(cluster.stats.membership_excluded.get(), 1);
        assert_eq!(cluster.stats.membership_healthy.get(), 1);
        assert_eq!(cluster.stats.health_check_healthy.get(), 1);
    }

    #[test]
    fn breaker_counts_up_to_its_limit() {
        let breaker = Breaker::new(2);
        assert!(breaker.try_acquire());
        assert!(breaker.try_acquire());
        assert!(!breaker.try_acquire());
        breaker.release();
        assert!(breaker.try_acquire());
        assert_eq!(breaker.current(), 2);
    }

    /// `max_retries` (Envoy's default 3) bounds the retries in flight across the cluster;
    /// one more is refused and counted, and a finished retry gives its unit back.
    #[test]
    fn retry_budget_holds_three_retries_by_default_and_counts_overflow() {
        let spec = crate::upstream::test_support::spec("retry_budget", &[1]);
        assert_eq!(spec.thresholds.max_retries, 3);
        let Ok(cluster) = Cluster::new(spec) else {
            panic!("cluster builds")
        };
        let cluster = Arc::new(cluster);
        let held: Vec<_> = (0..3).filter_map(|_| cluster.try_retry()).collect();
        assert_eq!(held.len(), 3);
        assert!(cluster.try_retry().is_none());
        assert_eq!(cluster.stats.rq_retry_overflow.get(), 1);
        drop(held);
        assert_eq!(cluster.retries.current(), 0);
        assert!(cluster.try_retry().is_some());
    }

    /// `retry_budget`: 20% of the requests active and pending, at least
    /// `min_retry_concurrency`.
    #[test]
    fn a_retry_budget_follows_the_requests_in_flight() {
        let budget = crate::upstream::spec::RetryBudget {
            budget_basis_points: 2000,
            min_retry_concurrency: 3,
        };
        assert_eq!(budget.limit(0), 3);
        assert_eq!(budget.limit(10), 3);
        assert_eq!(budget.limit(50), 10);
        assert_eq!(budget.limit(u32::MAX), 858_993_459);
        let mut spec = crate::upstream::test_support::spec("retry_budget_share", &[1]);
        spec.thresholds.retry_budget = Some(crate::upstream::spec::RetryBudget {
            budget_basis_points: 5000,
            min_retry_concurrency: 1,
        });
        let Ok(cluster) = Cluster::new(spec) else {
            panic!("cluster builds")
        };
        let cluster = Arc::new(cluster);
        let first = cluster.try_retry();
        assert!(first.is_some(), "the minimum: one");
        assert!(cluster.try_retry().is_none());
        // Four requests in flight: half of them may be retries.
        let host = cluster.hosts()[0].clone();
        let requests: Vec<_> = (0..4)
            .filter_map(|_| cluster.try_request(&host).ok())
            .collect();
        assert_eq!(requests.len(), 4);
        let second = cluster.try_retry();
        assert!(second.is_some());
        assert!(cluster.try_retry().is_none());
        assert_eq!(cluster.stats.rq_retry_overflow.get(), 2);
    }

    #[test]
    fn unhealthy_host_signals_drain_and_leaves_lb() {
        let host = Host::new(SocketAddr::from(([127, 0, 0, 1], 1)));
        let mut signal = host.drain_signal();
        host.set_healthy(false);
        assert!(!host.is_available());
        assert!(signal.has_changed().unwrap_or(false));
        signal.borrow_and_update();
        host.set_healthy(true);
        assert!(host.is_available());
        assert!(!signal.has_changed().unwrap_or(true));
    }
}
