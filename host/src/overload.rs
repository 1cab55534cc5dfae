//! The overload manager at run time: one state per process, which a timer task
//! ([`run`]) refreshes every `refresh_interval` from the monitors of the config in force, and
//! which the request path reads with one relaxed atomic load per check (no lock, no
//! allocation), so being ready for overload costs nothing while there is none.
//!
//! It also owns the global downstream connection limit: one counter across every listener
//! and worker (TCP and QUIC), taken at accept ([`admit_connection`]) and given back when the
//! connection ends. A connection over the limit is closed right after accept and counted
//! (`downstream_global_cx_overflow`), never queued. The limit is the config's
//! `max_active_downstream_connections`, or weir's default ([`default_connection_limit`]), so
//! that weir never runs out of file descriptors.
//!
//! The `fixed_heap` monitor reads weir's resident memory (RSS) from `/proc/self/statm`: what
//! the kernel has given the process, allocator caches, Wasm code and stacks included, which
//! is what an OOM killer or a cgroup limit counts. (Envoy's reads tcmalloc's heap size.)

use crate::config::overload::{MonitorKind, OverloadConfig};
use crate::stats::OverloadStats;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The global connection limit weir applies when the config sets none, before the file
/// descriptor limit lowers it.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 50_000;

/// File descriptors kept aside from the connection budget for listeners, the admin
/// listener, runtimes (epoll, eventfd), config and Wasm files, logs and health checks.
pub const RESERVED_FDS: u64 = 64;

/// The process's overload state: the two actions' saturation and the connection count.
pub struct OverloadState {
    stop_accepting_requests: AtomicBool,
    disable_http_keepalive: AtomicBool,
    connections: ConnectionCount,
}

static STATE: OverloadState = OverloadState {
    stop_accepting_requests: AtomicBool::new(false),
    disable_http_keepalive: AtomicBool::new(false),
    connections: ConnectionCount::new(),
};

/// Whether `envoy.overload_actions.stop_accepting_requests` is saturated: new requests get
/// 503.
#[inline]
pub fn stop_accepting_requests() -> bool {
    STATE.stop_accepting_requests.load(Ordering::Relaxed)
}

/// Whether `envoy.overload_actions.disable_http_keepalive` is saturated: HTTP/1.1 responses
/// close their connection, HTTP/2 and HTTP/3 connections drain.
#[inline]
pub fn disable_http_keepalive() -> bool {
    STATE.disable_http_keepalive.load(Ordering::Relaxed)
}

/// Takes one place under the global downstream connection limit for a connection just
/// accepted, or `None` when the limit is reached (the caller closes the connection and counts
/// it). The place is given back when the returned slot drops.
#[inline]
pub fn admit_connection() -> Option<ConnectionSlot> {
    STATE.connections.admit()
}

/// Downstream connections open now, across every listener and worker.
pub fn active_connections() -> u64 {
    STATE.connections.active()
}

/// A count of open connections under a limit; one per process ([`admit_connection`]).
pub struct ConnectionCount {
    active: AtomicU64,
    limit: AtomicU64,
}

impl ConnectionCount {
    /// No connections, no limit yet.
    pub const fn new() -> ConnectionCount {
        ConnectionCount {
            active: AtomicU64::new(0),
            limit: AtomicU64::new(u64::MAX),
        }
    }

    /// Sets the limit; connections already open above it stay.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// One more connection, unless that would pass the limit.
    pub fn admit(&'static self) -> Option<ConnectionSlot> {
        let before = self.active.fetch_add(1, Ordering::Relaxed);
        if before >= self.limit.load(Ordering::Relaxed) {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnectionSlot(self))
    }
}

impl Default for ConnectionCount {
    fn default() -> Self {
        Self::new()
    }
}

/// One open downstream connection's place under the global limit; given back on drop.
pub struct ConnectionSlot(&'static ConnectionCount);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// weir's global connection limit when the config sets none:
/// `min(50,000, (RLIMIT_NOFILE soft limit - 64) / 2)`, at least 1. Half of what is left after
/// the reserve, because each downstream connection may hold an upstream one (Envoy
/// recommends a limit below half the descriptor limit for the same reason).
pub fn default_connection_limit() -> u64 {
    connection_limit_for(fd_soft_limit())
}

fn connection_limit_for(fd_limit: Option<u64>) -> u64 {
    match fd_limit {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(fds) => (fds.saturating_sub(RESERVED_FDS) / 2).clamp(1, DEFAULT_MAX_CONNECTIONS),
    }
}

/// The soft RLIMIT_NOFILE; `None` when unlimited or unreadable.
fn fd_soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, as servers commonly do at start (the
/// soft limit is often 1,024 for compatibility with `select`, which weir does not use).
/// Returns the soft limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(
                from = limit.rlim_cur,
                to = limit.rlim_max,
                "raised the file descriptor limit"
            );
        }
    }
    fd_soft_limit()
}

/// weir's resident memory in bytes, from `/proc/self/statm` (its second field, in pages).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page_size = u64::try_from(page_size).ok().filter(|p| *p > 0)?;
    Some(pages.saturating_mul(page_size))
}

/// Reads every monitor of `config` and sets the actions' states (and their stats). Applies
/// the config's connection limit, or `default_limit`.
pub fn refresh(config: &OverloadConfig, default_limit: u64) {
    let stats = OverloadStats::global();
    let limit = config
        .max_active_downstream_connections()
        .unwrap_or(default_limit);
    STATE.connections.set_limit(limit);
    let active = STATE.connections.active();
    stats
        .global_downstream_max_connections
        .set(i64::try_from(limit).unwrap_or(i64::MAX));
    stats
        .global_downstream_cx_active
        .set(i64::try_from(active).unwrap_or(i64::MAX));
    let pressures: Vec<Option<f64>> = config
        .monitors
        .iter()
        .map(|monitor| {
            let pressure = match monitor.kind {
                MonitorKind::GlobalConnections {
                    max_active_downstream_connections,
                } => Some(active as f64 / max_active_downstream_connections as f64),
                MonitorKind::FixedHeap {
                    max_heap_size_bytes,
                } => resident_bytes().map(|rss| rss as f64 / max_heap_size_bytes as f64),
            };
            match pressure {
                Some(pressure) => stats
                    .pressure
                    .with_label_values(&[monitor.name.as_str()])
                    .set(percent(pressure)),
                None => stats
                    .failed_updates
                    .with_label_values(&[monitor.name.as_str()])
                    .inc(),
            }
            pressure
        })
        .collect();
    let mut stop_accepting_requests = false;
    let mut disable_http_keepalive = false;
    for action in &config.actions {
        // As Envoy: the action's state is the highest its triggers give; a monitor that
        // could not be read leaves its triggers out.
        let state = action
            .triggers
            .iter()
            .filter_map(|trigger| {
                let pressure = pressures.get(trigger.monitor).copied().flatten()?;
                Some(trigger.rule.state(pressure))
            })
            .fold(0.0_f64, f64::max);
        let saturated = state >= 1.0;
        let name = action.kind.name();
        stats
            .active
            .with_label_values(&[name])
            .set(i64::from(saturated));
        stats
            .scale_percent
            .with_label_values(&[name])
            .set(percent(state));
        match action.kind {
            crate::config::overload::ActionKind::StopAcceptingRequests => {
                stop_accepting_requests |= saturated;
            }
            crate::config::overload::ActionKind::DisableHttpKeepalive => {
                disable_http_keepalive |= saturated;
            }
        }
    }
    let was = STATE
        .stop_accepting_requests
        .swap(stop_accepting_requests, Ordering::Relaxed);
    if was != stop_accepting_requests {
        tracing::warn!(
            active = stop_accepting_requests,
            "overload action envoy.overload_actions.stop_accepting_requests"
        );
    }
    let was = STATE
        .disable_http_keepalive
        .swap(disable_http_keepalive, Ordering::Relaxed);
    if was != disable_http_keepalive {
        tracing::warn!(
            active = disable_http_keepalive,
            "overload action envoy.overload_actions.disable_http_keepalive"
        );
    }
}

fn percent(fraction: f64) -> i64 {
    // `as` saturates; NaN becomes 0.
    (fraction * 100.0).round() as i64
}

/// Refreshes the state every `refresh_interval` of the overload config `current` returns (the
/// running config's, read anew each time, so a reload's monitors, actions and limit apply from
/// the next refresh). Runs until its task is dropped.
pub async fn run<F>(current: F, default_limit: u64)
where
    F: Fn() -> OverloadConfig + Send + 'static,
{
    loop {
        let config = current();
        refresh(&config, default_limit);
        let interval = config.refresh_interval.max(Duration::from_millis(1));
        drop(config);
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limit_leaves_room_for_upstreams_and_files() {
        assert_eq!(connection_limit_for(None), 50_000);
        assert_eq!(connection_limit_for(Some(1_048_576)), 50_000);
        assert_eq!(connection_limit_for(Some(1_024)), 480);
        assert_eq!(connection_limit_for(Some(256)), 96);
        assert_eq!(connection_limit_for(Some(64)), 1);
        assert_eq!(connection_limit_for(Some(0)), 1);
    }

    #[test]
    fn count_refuses_past_the_limit_and_frees_on_drop() {
        static COUNT: ConnectionCount = ConnectionCount::new();
        COUNT.set_limit(2);
        let first = COUNT.admit().expect("first");
        let second = COUNT.admit().expect("second");
        assert!(COUNT.admit().is_none());
        assert_eq!(COUNT.active(), 2);
        drop(first);
        let third = COUNT.admit().expect("a place came free");
        assert_eq!(COUNT.active(), 2);
        drop((second, third));
        assert_eq!(COUNT.active(), 0);
    }

    #[test]
    fn resident_memory_is_read() {
        let rss = resident_bytes().expect("/proc/self/statm");
        assert!(rss > 1 << 20, "{rss}");
    }
}
