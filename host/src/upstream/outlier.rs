//! Passive health checking (`outlier_detection`): hosts that answer badly are ejected from
//! balancing for a while, on every worker at once.
//!
//! Each [`Host`] carries its own [`HostOutlier`] counters (atomics), so recording a result on
//! the request path touches only that host's atomics; an ejection is one flag on the host
//! that every worker's load balancer reads. The cluster's [`Detector`] holds the spec and the
//! stats; [`run`] sweeps every `interval`: ejected hosts whose time is up come back
//! (`base_ejection_time` x times ejected, capped by `max_ejection_time`), and the
//! success-rate and failure-percentage detections run over the interval's counts.

use super::cluster::{Cluster, Host};
use super::spec::OutlierSpec;
use crate::stats::OutlierStats;
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// What one request to a host came to, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The host answered with this status.
    Status(u16),
    /// No answer: the connection could not be made, timed out or was reset (a local-origin
    /// failure, in Envoy's terms).
    LocalFailure,
    /// No answer within the route's timeout (a local-origin failure that, without the split,
    /// counts as a 504).
    LocalTimeout,
}

/// Why a host was ejected; the index of its stats in [`crate::stats::OUTLIER_KINDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `consecutive_5xx`.
    Consecutive5xx = 0,
    /// `consecutive_gateway_failure`.
    ConsecutiveGatewayFailure = 1,
    /// `consecutive_local_origin_failure`.
    ConsecutiveLocalOriginFailure = 2,
    /// Success rate below the cluster's.
    SuccessRate = 3,
    /// Local-origin success rate below the cluster's.
    LocalOriginSuccessRate = 4,
    /// Failure percentage at or above `failure_percentage_threshold`.
    FailurePercentage = 5,
    /// Local-origin failure percentage at or above the threshold.
    LocalOriginFailurePercentage = 6,
}

/// One host's outlier state, shared by every worker.
#[derive(Debug, Default)]
pub struct HostOutlier {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    ejected: AtomicBool,
    /// When it was last ejected / returned, in ms since the detector's epoch.
    ejected_at_ms: AtomicU64,
    returned_at_ms: AtomicU64,
    /// Times ejected, less one per `base_ejection_time` spent back in balancing.
    multiplier: AtomicU32,
    /// This interval's answers: external (or all, without the split) and local-origin.
    external_ok: AtomicU64,
    external_failed: AtomicU64,
    local_ok: AtomicU64,
    local_failed: AtomicU64,
}

impl HostOutlier {
    /// Whether outlier detection has the host out of balancing now.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }
}

/// A cluster's outlier detector: its spec, stats and the count of hosts ejected now.
#[derive(Debug)]
pub struct Detector {
    spec: OutlierSpec,
    stats: OutlierStats,
    epoch: Instant,
    ejected: AtomicUsize,
}

impl std::fmt::Debug for OutlierStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutlierStats").finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector for cluster `name` with `spec`.
    pub fn new(name: &str, spec: OutlierSpec) -> Detector {
        Detector {
            spec,
            stats: OutlierStats::new(name),
            epoch: Instant::now(),
            ejected: AtomicUsize::new(0),
        }
    }

    /// Its stats.
    pub fn stats(&self) -> &OutlierStats {
        &self.stats
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records what a request to `host` (one of `hosts`) came to; ejects it where a
    /// consecutive-failure threshold is reached. Request path: atomics only.
    pub fn record(&self, hosts: &[Arc<Host>], host: &Host, outcome: Outcome) {
        let state = &host.outlier;
        let split = self.spec.split_external_local_origin_errors;
        let status = match outcome {
            Outcome::LocalFailure | Outcome::LocalTimeout if split => {
                state.local_failed.fetch_add(1, Ordering::Relaxed);
                let count = state.consecutive_local.fetch_add(1, Ordering::AcqRel) + 1;
                if count == self.spec.consecutive_local_origin_failure {
                    self.detect(
                        hosts,
                        host,
                        Kind::ConsecutiveLocalOriginFailure,
                        self.spec.enforcing_consecutive_local_origin_failure,
                    );
                }
                return;
            }
            // Without the split a local-origin failure counts as a 503 from the host, as
            // Envoy maps it.
            Outcome::LocalFailure => 503,
            Outcome::LocalTimeout => 504,
            Outcome::Status(status) => {
                if split {
                    state.local_ok.fetch_add(1, Ordering::Relaxed);
                    state.consecutive_local.store(0, Ordering::Release);
                }
                status
            }
        };
        let server_error = (500..600).contains(&status);
        if server_error {
            state.external_failed.fetch_add(1, Ordering::Relaxed);
        } else {
            state.external_ok.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(status, 502..=504) {
            let count = state.consecutive_gateway.fetch_add(1, Ordering::AcqRel) + 1;
            if count == self.spec.consecutive_gateway_failure {
                self.detect(
                    hosts,
                    host,
                    Kind::ConsecutiveGatewayFailure,
                    self.spec.enforcing_consecutive_gateway_failure,
                );
            }
        } else {
            state.consecutive_gateway.store(0, Ordering::Release);
        }
        if server_error {
            let count = state.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1;
            if count == self.spec.consecutive_5xx {
                self.detect(
                    hosts,
                    host,
                    Kind::Consecutive5xx,
                    self.spec.enforcing_consecutive_5xx,
                );
            }
        } else {
            state.consecutive_5xx.store(0, Ordering::Release);
        }
    }

    /// A detection of `kind` on `host`: counted, and enforced with `enforcing` percent
    /// chance unless `max_ejection_percent` of `hosts` is ejected already (one host always may
    /// be, as in Envoy).
    fn detect(&self, hosts: &[Arc<Host>], host: &Host, kind: Kind, enforcing: u32) {
        if host.outlier.is_ejected() {
            return;
        }
        let index = kind as usize;
        self.stats.ejections_total.inc();
        if let Some(counter) = self.stats.detected.get(index) {
            counter.inc();
        }
        let enforce = enforcing >= 100 || rand::rng().random_range(0..100) < enforcing;
        if !enforce {
            return;
        }
        let total = hosts.len().max(1) as u64;
        let max_percent = u64::from(self.spec.max_ejection_percent);
        let reserved = self
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |active| {
                let allowed = active == 0 || (active as u64 + 1) * 100 <= max_percent * total;
                allowed.then_some(active + 1)
            });
        if reserved.is_err() {
            self.stats.ejections_overflow.inc();
            return;
        }
        let state = &host.outlier;
        if state.ejected.swap(true, Ordering::AcqRel) {
            // Another worker ejected it meanwhile.
            self.ejected.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        state.ejected_at_ms.store(self.now_ms(), Ordering::Release);
        state.multiplier.fetch_add(1, Ordering::AcqRel);
        state.consecutive_5xx.store(0, Ordering::Release);
        state.consecutive_gateway.store(0, Ordering::Release);
        state.consecutive_local.store(0, Ordering::Release);
        self.stats.ejections_active.inc();
        self.stats.ejections_enforced_total.inc();
        if let Some(counter) = self.stats.enforced.get(index) {
            counter.inc();
        }
        tracing::info!(host = %host.addr, kind = crate::stats::OUTLIER_KINDS[index], "outlier ejected");
    }

    /// How long `host` stays ejected this time: `base_ejection_time` x its multiplier, capped
    /// by `max_ejection_time` (or the base, where that is larger).
    fn ejection_time(&self, host: &Host) -> Duration {
        let multiplier = host.outlier.multiplier.load(Ordering::Acquire).max(1);
        let base = self.spec.base_ejection_time;
        base.saturating_mul(multiplier)
            .min(self.spec.max_ejection_time.max(base))
    }

    /// The interval's work over `hosts`: ejected hosts whose time is up come back, the
    /// multiplier of hosts back in balancing for `base_ejection_time` goes down by one, and
    /// the success-rate and failure-percentage detections run over the interval's counts
    /// (which start again from zero).
    pub fn sweep(&self, hosts: &[Arc<Host>]) {
        let now = self.now_ms();
        let base_ms = u64::try_from(self.spec.base_ejection_time.as_millis()).unwrap_or(u64::MAX);
        for host in hosts {
            let state = &host.outlier;
            if state.is_ejected() {
                let since = now.saturating_sub(state.ejected_at_ms.load(Ordering::Acquire));
                let time = u64::try_from(self.ejection_time(host).as_millis()).unwrap_or(u64::MAX);
                if since >= time && state.ejected.swap(false, Ordering::AcqRel) {
                    state.returned_at_ms.store(now, Ordering::Release);
                    self.ejected.fetch_sub(1, Ordering::AcqRel);
                    self.stats.ejections_active.dec();
                    tracing::info!(host = %host.addr, "outlier ejection ended");
                }
            } else if state.multiplier.load(Ordering::Acquire) > 0
                && now.saturating_sub(state.returned_at_ms.load(Ordering::Acquire)) >= base_ms
            {
                let _ = state
                    .multiplier
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| m.checked_sub(1));
                state.returned_at_ms.store(now, Ordering::Release);
            }
        }
        // Hosts removed from the cluster while ejected (DNS) are no longer swept: count the
        // ejected ones again so that they neither hold max_ejection_percent nor the gauge.
        let actual = hosts.iter().filter(|h| h.outlier.is_ejected()).count();
        let before = self.ejected.swap(actual, Ordering::AcqRel);
        if before != actual {
            self.stats
                .ejections_active
                .add(actual as i64 - before as i64);
        }
        let counts: Vec<[u64; 4]> = hosts
            .iter()
            .map(|host| {
                let s = &host.outlier;
                [
                    s.external_ok.swap(0, Ordering::AcqRel),
                    s.external_failed.swap(0, Ordering::AcqRel),
                    s.local_ok.swap(0, Ordering::AcqRel),
                    s.local_failed.swap(0, Ordering::AcqRel),
                ]
            })
            .collect();
        let external: Vec<(u64, u64)> = counts.iter().map(|c| (c[0], c[1])).collect();
        self.rates(hosts, &external, false);
        if self.spec.split_external_local_origin_errors {
            let local: Vec<(u64, u64)> = counts.iter().map(|c| (c[2], c[3])).collect();
            self.rates(hosts, &local, true);
        }
    }

    /// Success-rate and failure-percentage detections over `(ok, failed)` per host.
    fn rates(&self, hosts: &[Arc<Host>], counts: &[(u64, u64)], local: bool) {
        let spec = &self.spec;
        let candidates = |volume: u32| -> Vec<(usize, f64)> {
            counts
                .iter()
                .enumerate()
                .filter(|(i, (ok, failed))| {
                    ok + failed >= u64::from(volume.max(1))
                        && hosts.get(*i).is_some_and(|h| !h.outlier.is_ejected())
                })
                .map(|(i, (ok, failed))| (i, *ok as f64 * 100.0 / (ok + failed) as f64))
                .collect()
        };
        let success = candidates(spec.success_rate_request_volume);
        if !success.is_empty() && success.len() >= spec.success_rate_minimum_hosts as usize {
            let mean = success.iter().map(|(_, rate)| rate).sum::<f64>() / success.len() as f64;
            let variance = success
                .iter()
                .map(|(_, rate)| (rate - mean).powi(2))
                .sum::<f64>()
                / success.len() as f64;
            let threshold =
                mean - variance.sqrt() * f64::from(spec.success_rate_stdev_factor) / 1000.0;
            let (kind, enforcing) = if local {
                (
                    Kind::LocalOriginSuccessRate,
                    spec.enforcing_local_origin_success_rate,
                )
            } else {
                (Kind::SuccessRate, spec.enforcing_success_rate)
            };
            for (i, rate) in &success {
                if *rate < threshold
                    && let Some(host) = hosts.get(*i)
                {
                    self.detect(hosts, host, kind, enforcing);
                }
            }
        }
        let failing = candidates(spec.failure_percentage_request_volume);
        if !failing.is_empty() && failing.len() >= spec.failure_percentage_minimum_hosts as usize {
            let (kind, enforcing) = if local {
                (
                    Kind::LocalOriginFailurePercentage,
                    spec.enforcing_failure_percentage_local_origin,
                )
            } else {
                (Kind::FailurePercentage, spec.enforcing_failure_percentage)
            };
            for (i, success_rate) in &failing {
                if 100.0 - success_rate >= f64::from(spec.failure_percentage_threshold)
                    && let Some(host) = hosts.get(*i)
                {
                    self.detect(hosts, host, kind, enforcing);
                }
            }
        }
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        // The gauge is shared by a successor cluster of the same name.
        self.stats
            .ejections_active
            .sub(self.ejected.load(Ordering::Acquire) as i64);
    }
}

/// Sweeps `cluster`'s hosts every `interval` (see [`Detector::sweep`]); runs until aborted.
pub async fn run(cluster: Arc<Cluster>) {
    let Some(detector) = cluster.outlier.as_ref() else {
        return;
    };
    let mut tick = tokio::time::interval(detector.spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        detector.sweep(&cluster.hosts());
        cluster.update_membership();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::test_support;

    fn cluster(ports: &[u16], spec: OutlierSpec) -> Arc<Cluster> {
        let mut cluster_spec = test_support::spec(&format!("outlier_{}", ports[0]), ports);
        cluster_spec.outlier = Some(spec);
        match Cluster::new(cluster_spec) {
            Ok(cluster) => Arc::new(cluster),
            Err(e) => panic!("cluster builds: {e}"),
        }
    }

    fn spec() -> OutlierSpec {
        OutlierSpec {
            consecutive_5xx: 3,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_percent: 50,
            ..OutlierSpec::default()
        }
    }

    fn fail(cluster: &Cluster, host: &Host, times: usize) {
        for _ in 0..times {
            cluster.record_outcome(host, Outcome::Status(503));
        }
    }

    /// Advances the paused clock by `secs` one second at a time, letting the sweeper run.
    async fn advance(secs: u64) {
        for _ in 0..secs {
            tokio::time::advance(Duration::from_secs(1)).await;
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejected_after_consecutive_5xx_and_back_after_base_times_count() {
        let cluster = cluster(&[41001, 41002, 41003, 41004], spec());
        let sweeper = tokio::spawn(run(cluster.clone()));
        let host = cluster.hosts()[0].clone();
        let stats = cluster.outlier.as_ref().map(|d| d.stats().clone());
        let Some(stats) = stats else {
            panic!("a detector")
        };
        fail(&cluster, &host, 2);
        cluster.record_outcome(&host, Outcome::Status(200));
        fail(&cluster, &host, 2);
        assert!(host.is_available(), "a success in between resets the count");
        fail(&cluster, &host, 1);
        assert!(!host.is_available(), "third 5xx in a row ejects");
        assert_eq!(stats.ejections_active.get(), 1);
        assert_eq!(stats.enforced[Kind::Consecutive5xx as usize].get(), 1);
        // First ejection: base (10s).
        advance(9).await;
        assert!(!host.is_available(), "still out at 9s");
        advance(2).await;
        assert!(host.is_available(), "back after 10s");
        assert_eq!(stats.ejections_active.get(), 0);
        // Second ejection right away: 2 x base = 20s.
        fail(&cluster, &host, 3);
        assert!(!host.is_available());
        advance(19).await;
        assert!(!host.is_available(), "still out at 19s");
        advance(2).await;
        assert!(host.is_available(), "back after 20s");
        // Third: 3 x base = 30s, capped by max_ejection_time 25s.
        fail(&cluster, &host, 3);
        advance(24).await;
        assert!(!host.is_available(), "still out at 24s");
        advance(2).await;
        assert!(host.is_available(), "back after the 25s cap");
        sweeper.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_and_local_failures() {
        let cluster = cluster(&[41011, 41012, 41013, 41014], spec());
        let hosts = cluster.hosts();
        for host in hosts.iter().take(3) {
            for _ in 0..3 {
                cluster.record_outcome(host, Outcome::LocalFailure);
            }
        }
        let ejected = hosts.iter().filter(|h| !h.is_available()).count();
        assert_eq!(ejected, 2, "50% of four hosts at most");
        let Some(detector) = cluster.outlier.as_ref() else {
            panic!("a detector")
        };
        assert_eq!(detector.stats().ejections_overflow.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_are_gateway_failures_unless_split() {
        let gateway = OutlierSpec {
            consecutive_5xx: 1000,
            consecutive_gateway_failure: 2,
            enforcing_consecutive_gateway_failure: 100,
            ..spec()
        };
        let joined = cluster(&[41031, 41032], gateway.clone());
        let host = joined.hosts()[0].clone();
        joined.record_outcome(&host, Outcome::LocalTimeout);
        joined.record_outcome(&host, Outcome::LocalTimeout);
        assert!(!host.is_available(), "two 504s in a row");
        let Some(detector) = joined.outlier.as_ref() else {
            panic!("a detector")
        };
        assert_eq!(
            detector.stats().enforced[Kind::ConsecutiveGatewayFailure as usize].get(),
            1
        );
        let split = cluster(
            &[41041, 41042],
            OutlierSpec {
                split_external_local_origin_errors: true,
                consecutive_local_origin_failure: 2,
                ..gateway
            },
        );
        let host = split.hosts()[0].clone();
        split.record_outcome(&host, Outcome::LocalTimeout);
        split.record_outcome(&host, Outcome::Status(200));
        split.record_outcome(&host, Outcome::LocalTimeout);
        assert!(
            host.is_available(),
            "an answer in between resets the local count"
        );
        split.record_outcome(&host, Outcome::LocalFailure);
        assert!(!host.is_available(), "two local-origin failures in a row");
        let Some(detector) = split.outlier.as_ref() else {
            panic!("a detector")
        };
        assert_eq!(
            detector.stats().enforced[Kind::ConsecutiveLocalOriginFailure as usize].get(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failure_percentage_ejects_at_the_interval() {
        let cluster = cluster(
            &[41021, 41022, 41023],
            OutlierSpec {
                consecutive_5xx: 1000,
                enforcing_failure_percentage: 100,
                failure_percentage_minimum_hosts: 3,
                failure_percentage_request_volume: 10,
                failure_percentage_threshold: 50,
                max_ejection_percent: 100,
                ..spec()
            },
        );
        let hosts = cluster.hosts();
        for (i, host) in hosts.iter().enumerate() {
            for n in 0..20 {
                let status = if i == 1 && n % 4 != 0 { 500 } else { 200 };
                cluster.record_outcome(host, Outcome::Status(status));
            }
        }
        assert!(hosts.iter().all(|h| h.is_available()));
        let Some(detector) = cluster.outlier.as_ref() else {
            panic!("a detector")
        };
        detector.sweep(&hosts);
        assert!(!hosts[1].is_available(), "75% failures ejects");
        assert!(hosts[0].is_available() && hosts[2].is_available());
        assert_eq!(
            detector.stats().detected[Kind::FailurePercentage as usize].get(),
            1
        );
    }
}
