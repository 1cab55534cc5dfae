//! Active HTTP health checking of a cluster's hosts.
//!
//! Each host gets `GET path` with the configured host header on a fresh connection (h2 when the
//! cluster speaks h2 or ALPN chose it, HTTP/1.1 otherwise), the first at once and each next one
//! after the interval Envoy would pick for it (`next_interval`): `no_traffic_interval` (60 s)
//! until the cluster has carried traffic, then `interval`, `unhealthy_interval` or an edge
//! interval by the host's last result. A check passes on a status of `expected_statuses`
//! (200 by default) within `timeout`. As in Envoy, hosts start unhealthy (`FAILED_ACTIVE_HC`)
//! and the first result decides at once: a pass makes a host healthy whatever
//! `healthy_threshold` says, a failure (a timeout included) leaves it unhealthy; the cluster
//! has initialized (see [`Cluster::initialized`]) once every host has had that first check.
//! A host added later starts unhealthy too (with `ignore_new_hosts_until_first_hc`, also out
//! of balancing until its first result, pass or fail). As in Envoy, an answer with any
//! other status makes a host unhealthy at once (which drains every worker's connections to
//! it), unless the status is one of `retriable_statuses`: those, timeouts and connection
//! failures make it unhealthy after `unhealthy_threshold` consecutive failures.
//! `healthy_threshold` consecutive passes make it healthy again.
//!
//! As Envoy's, a passing answer that carries `x-envoy-degraded` marks the host degraded
//! (`DEGRADED_ACTIVE_HC`, balanced over only as far as the healthy hosts fall short) and one
//! without it clears that; a failing answer that carries
//! `x-envoy-immediate-health-check-fail` excludes the host (`EXCLUDED_VIA_IMMEDIATE_HC_FAIL`,
//! left out of the host counts) until it turns healthy again.

use super::cluster::{Cluster, Host, HostProtocol};
use super::connect;
use super::spec::{HealthCheckIntervals, HealthCheckSpec, UpstreamProtocol};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Consecutive results of one host.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    passes: u32,
    failures: u32,
}

/// What one result did to a host's health (Envoy's `HealthTransition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    /// The host stays as it was and no change is under way.
    Unchanged,
    /// The result counts towards a threshold not reached yet.
    Pending,
    /// The result flipped the host's health.
    Changed,
}

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// An expected status; `degraded` when the answer carried `x-envoy-degraded`.
    Pass { degraded: bool },
    /// A retriable status, a timeout, a connection failure: counts towards
    /// `unhealthy_threshold`.
    Fail,
    /// Any other status: the host is unhealthy at once (Envoy's non-retriable active failure).
    FailNow,
}

/// One host's streak and when its next check is due.
#[derive(Debug, Clone, Copy)]
struct HostCheck {
    streak: Streak,
    due: Instant,
}

/// Checks the cluster's hosts, each at once and then after its `next_interval`. A host added
/// to the cluster is checked within `interval`. Runs until aborted.
/// The cluster counts as initialized once every host it has (after a DNS cluster's first
/// resolution) has had one check.
pub async fn run(cluster: Arc<Cluster>, spec: HealthCheckSpec) {
    let mut checks: HashMap<SocketAddr, HostCheck> = HashMap::new();
    // As Envoy, a DNS cluster's hosts are known once its first resolution is in.
    cluster.first_resolution().await;
    loop {
        let hosts = cluster.hosts();
        checks.retain(|addr, _| hosts.iter().any(|host| host.addr == *addr));
        // A host another checker of this cluster checked (before an EDS update) goes on
        // where that one left it: its streak, its next check, not a first check.
        for host in hosts.iter() {
            if !checks.contains_key(&host.addr)
                && let Some((passes, failures, due)) = host.saved_check()
            {
                let streak = Streak { passes, failures };
                checks.insert(host.addr, HostCheck { streak, due });
            }
        }
        if !cluster.is_initialized() && hosts.iter().all(|host| checks.contains_key(&host.addr)) {
            tracing::debug!(cluster = %cluster.name(), "first health checks done");
            cluster.set_initialized();
        }
        let now = Instant::now();
        let due: Vec<_> = hosts
            .iter()
            .filter(|host| checks.get(&host.addr).is_none_or(|check| check.due <= now))
            .cloned()
            .collect();
        if due.is_empty() {
            // Wake for the earliest due host, or within `interval` to notice new hosts.
            let earliest = checks.values().map(|check| check.due).min();
            let wake = earliest.map_or(now + spec.intervals.interval, |earliest| {
                earliest.min(now + spec.intervals.interval)
            });
            tokio::time::sleep_until(wake).await;
            continue;
        }
        let results = futures_util::future::join_all(
            due.iter()
                .map(|host| check_and_count(&cluster, &spec, host)),
        )
        .await;
        let finished = Instant::now();
        let traffic = has_traffic(&cluster);
        for (host, (outcome, timed_out)) in due.iter().zip(results) {
            let first = !checks.contains_key(&host.addr);
            let check = checks.entry(host.addr).or_insert(HostCheck {
                streak: Streak::default(),
                due: finished,
            });
            if host.take_streak_reset() {
                check.streak = Streak::default();
            }
            let transition = apply(&cluster, &spec, host, &mut check.streak, outcome, first);
            // As Envoy: a failure sets the timeout flag on an unhealthy host when it was a
            // timeout and clears it otherwise; turning healthy clears it.
            let passed = matches!(outcome, Outcome::Pass { .. });
            if !passed {
                host.set_active_hc_timeout(timed_out && !host.is_healthy());
            } else if host.is_healthy() {
                host.set_active_hc_timeout(false);
            }
            check.due = finished + next_interval(&spec.intervals, traffic, passed, transition);
            host.save_check(check.streak.passes, check.streak.failures, check.due);
        }
        // As Envoy's EDS cluster: a host pending removal goes once it fails its check.
        let gone: Vec<Arc<Host>> = due
            .iter()
            .filter(|host| host.is_pending_removal() && !host.is_healthy())
            .cloned()
            .collect();
        if gone.is_empty() {
            cluster.update_membership();
        } else {
            cluster.drop_pending_removal(&gone);
        }
        let hosts = cluster.hosts();
        let passing = hosts
            .iter()
            .filter(|host| host.is_healthy() && !host.is_removed())
            .count();
        cluster.stats.health_check_healthy.set(passing as i64);
        let degraded = hosts
            .iter()
            .filter(|host| host.is_degraded_active_hc() && !host.is_removed())
            .count();
        cluster.stats.health_check_degraded.set(degraded as i64);
    }
}

/// Whether the cluster has ever opened (or tried to open) a connection for traffic, Envoy's
/// test for leaving `no_traffic_interval` (`upstream_cx_total` used). Health checks do not
/// count.
fn has_traffic(cluster: &Cluster) -> bool {
    let stats = &cluster.stats;
    stats.cx_total.get() > 0
        || stats.cx_connect_fail.get() > 0
        || stats.cx_connect_timeout.get() > 0
}

/// The time to a host's next check after a result, as Envoy picks it
/// (`HealthCheckerImplBase::interval`): before the cluster has had traffic,
/// `no_traffic_healthy_interval` after a pass with no change pending and `no_traffic_interval`
/// otherwise; after traffic, `healthy_edge_interval` / `unhealthy_edge_interval` while a pass
/// or a failure counts towards its threshold, else `interval` after a pass and
/// `unhealthy_interval` after a failure.
fn next_interval(
    intervals: &HealthCheckIntervals,
    traffic: bool,
    passed: bool,
    transition: Transition,
) -> Duration {
    let pending = transition == Transition::Pending;
    match (traffic, passed, pending) {
        (false, true, false) => intervals.no_traffic_healthy,
        (false, _, _) => intervals.no_traffic,
        (true, true, true) => intervals.healthy_edge,
        (true, true, false) => intervals.interval,
        (true, false, true) => intervals.unhealthy_edge,
        (true, false, false) => intervals.unhealthy,
    }
}

/// Updates a host's streak with one result and flips its health at the thresholds (or at
/// once, for [`Outcome::FailNow`], and for a pass that is the host's `first` result, as
/// Envoy's `first_check_`). The first result, whatever it is, also ends a
/// `ignore_new_hosts_until_first_hc` wait (Envoy's `clearPendingFlag`).
fn apply(
    cluster: &Cluster,
    spec: &HealthCheckSpec,
    host: &Host,
    streak: &mut Streak,
    outcome: Outcome,
    first: bool,
) -> Transition {
    let transition = apply_result(cluster, spec, host, streak, outcome, first);
    if host.take_pending_first_check() {
        return Transition::Changed;
    }
    transition
}

/// [`apply`] without the end of the first-check wait.
fn apply_result(
    cluster: &Cluster,
    spec: &HealthCheckSpec,
    host: &Host,
    streak: &mut Streak,
    outcome: Outcome,
    first: bool,
) -> Transition {
    if let Outcome::Pass { degraded } = outcome {
        streak.passes += 1;
        streak.failures = 0;
        let transition = if host.is_healthy() {
            Transition::Unchanged
        } else if !first && streak.passes < spec.healthy_threshold.max(1) {
            Transition::Pending
        } else {
            tracing::info!(cluster = %cluster.name(), host = %host.addr, "host healthy");
            // As Envoy: turning healthy ends an immediate-failure exclusion.
            host.set_immediate_hc_fail(false);
            host.set_healthy(true);
            Transition::Changed
        };
        // As Envoy's `handleSuccess`: any pass sets or clears the degraded flag, and a change
        // of it is a change unless a health change is pending.
        if host.set_degraded_active_hc(degraded) {
            tracing::info!(cluster = %cluster.name(), host = %host.addr, degraded, "host degraded flag");
            if transition == Transition::Unchanged {
                return Transition::Changed;
            }
        }
        return transition;
    } else {
        streak.failures += 1;
        streak.passes = 0;
        if !host.is_healthy() {
            return Transition::Unchanged;
        }
        if outcome == Outcome::Fail && streak.failures < spec.unhealthy_threshold.max(1) {
            return Transition::Pending;
        }
        tracing::info!(cluster = %cluster.name(), host = %host.addr, "host unhealthy");
        host.set_healthy(false);
    }
    Transition::Changed
}

/// Checks `host` once and counts the check in the cluster's stats: the outcome, and whether
/// it was a timeout.
async fn check_and_count(
    cluster: &Cluster,
    spec: &HealthCheckSpec,
    host: &Host,
) -> (Outcome, bool) {
    cluster.stats.health_check_attempt.inc();
    // A failure without an answer (no connection, a reset, the timeout) is also a network
    // failure, as Envoy counts it; an unexpected answer is only a failure.
    let (outcome, network, timed_out) =
        match tokio::time::timeout(spec.timeout, check(cluster, spec, host)).await {
            Ok(Ok(answer)) => {
                let outcome = judge(spec, &answer);
                // As Envoy: a failing status with the immediate-failure header excludes the
                // host (whatever it was before); a pass ends that only once healthy.
                if !matches!(outcome, Outcome::Pass { .. }) && answer.immediate_fail {
                    host.set_immediate_hc_fail(true);
                }
                (outcome, false, false)
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, host = %host.addr, "health check failed");
                (Outcome::Fail, true, false)
            }
            Err(_) => {
                tracing::debug!(host = %host.addr, "health check timed out");
                (Outcome::Fail, true, true)
            }
        };
    if matches!(outcome, Outcome::Pass { .. }) {
        cluster.stats.health_check_success.inc();
    } else {
        cluster.stats.health_check_failure.inc();
        if network {
            cluster.stats.health_check_network_failure.inc();
        }
    }
    (outcome, timed_out)
}

/// What a health check's answer said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    status: u16,
    /// It carried `x-envoy-degraded`.
    degraded: bool,
    /// It carried `x-envoy-immediate-health-check-fail`.
    immediate_fail: bool,
}

impl Answer {
    fn of(response: &http::response::Parts) -> Answer {
        Answer {
            status: response.status.as_u16(),
            degraded: response.headers.contains_key("x-envoy-degraded"),
            immediate_fail: response
                .headers
                .contains_key("x-envoy-immediate-health-check-fail"),
        }
    }
}

/// What an answer is (Envoy's rule: `expected_statuses` wins over `retriable_statuses`
/// where they overlap; `x-envoy-degraded` counts only on an expected status).
fn judge(spec: &HealthCheckSpec, answer: &Answer) -> Outcome {
    let status = answer.status;
    if spec.expects(status) {
        Outcome::Pass {
            degraded: answer.degraded,
        }
    } else if spec.retriable(status) {
        Outcome::Fail
    } else {
        Outcome::FailNow
    }
}

/// One check: connect, send the GET, return what the response head said.
async fn check(
    cluster: &Cluster,
    spec: &HealthCheckSpec,
    host: &Host,
) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
    let authority = spec
        .host
        .clone()
        .unwrap_or_else(|| cluster.name().to_owned());
    if spec.over_quic {
        return super::quic::health_check(cluster, host.addr, &authority, &spec.path)
            .await
            .map(|head| Answer::of(&head));
    }
    let connected = connect::establish(cluster, host).await?;
    let io = TokioIo::new(connected.stream);
    let use_h2 = cluster.spec.protocol == UpstreamProtocol::Http2
        || connected.alpn == Some(HostProtocol::Http2);
    let request = http::Request::get(spec.path.as_str()).header(http::header::HOST, &authority);
    if use_h2 {
        let scheme = if cluster.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let uri = http::Uri::builder()
            .scheme(scheme)
            .authority(authority.as_str())
            .path_and_query(spec.path.as_str())
            .build()?;
        let request = http::Request::get(uri).body(Empty::<Bytes>::new())?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        let driver = tokio::spawn(connection);
        let response = sender.send_request(request).await;
        driver.abort();
        Ok(Answer::of(&response?.into_parts().0))
    } else {
        let request = request.body(Empty::<Bytes>::new())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        let driver = tokio::spawn(connection);
        let response = sender.send_request(request).await;
        driver.abort();
        Ok(Answer::of(&response?.into_parts().0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: Outcome = Outcome::Pass { degraded: false };

    /// An answer with `code` and no header of note.
    fn status(code: u16) -> Answer {
        Answer {
            status: code,
            degraded: false,
            immediate_fail: false,
        }
    }

    fn spec() -> HealthCheckSpec {
        HealthCheckSpec {
            path: "/healthz".into(),
            host: None,
            intervals: HealthCheckIntervals::all(Duration::from_secs(1)),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            over_quic: false,
            expected_statuses: vec![(200, 201)],
            retriable_statuses: vec![(500, 504)],
        }
    }

    #[test]
    fn thresholds_flip_health() {
        let cluster = Cluster::new(crate::upstream::test_support::spec("hc_thresholds", &[1]));
        let Ok(cluster) = cluster else {
            panic!("cluster builds")
        };
        let host = cluster.hosts()[0].clone();
        let mut streak = Streak::default();
        let spec = spec();
        let mut step = |passed| {
            let outcome = if passed { PASS } else { Outcome::Fail };
            apply(&cluster, &spec, &host, &mut streak, outcome, false)
        };
        assert_eq!(step(true), Transition::Unchanged);
        assert_eq!(step(false), Transition::Pending);
        assert_eq!(step(false), Transition::Pending);
        assert!(
            host.is_healthy(),
            "two failures are below the threshold of three"
        );
        assert_eq!(step(false), Transition::Changed);
        assert!(!host.is_healthy());
        assert_eq!(step(false), Transition::Unchanged);
        assert_eq!(step(true), Transition::Pending);
        assert!(!host.is_healthy(), "one pass is below the threshold of two");
        assert_eq!(step(true), Transition::Changed);
        assert!(host.is_healthy());
    }

    /// As Envoy: a status neither expected nor retriable makes a healthy host unhealthy at
    /// once, whatever `unhealthy_threshold` says; a retriable one counts towards it.
    #[test]
    fn an_unexpected_status_fails_a_host_at_once() {
        let Ok(cluster) = Cluster::new(crate::upstream::test_support::spec("hc_now", &[1])) else {
            panic!("cluster builds")
        };
        let host = cluster.hosts()[0].clone();
        let spec = spec();
        assert_eq!(judge(&spec, &status(200)), PASS);
        assert_eq!(
            judge(&spec, &status(204)),
            Outcome::FailNow,
            "200 only by default"
        );
        assert_eq!(judge(&spec, &status(503)), Outcome::Fail, "retriable");
        assert_eq!(judge(&spec, &status(404)), Outcome::FailNow);
        let mut streak = Streak::default();
        assert_eq!(
            apply(&cluster, &spec, &host, &mut streak, Outcome::Fail, false),
            Transition::Pending
        );
        assert_eq!(
            apply(&cluster, &spec, &host, &mut streak, Outcome::FailNow, false),
            Transition::Changed
        );
        assert!(!host.is_healthy());
        let overlapping = HealthCheckSpec {
            expected_statuses: vec![(200, 300)],
            retriable_statuses: vec![(200, 600)],
            ..spec
        };
        assert_eq!(judge(&overlapping, &status(204)), PASS, "expected wins");
        assert_eq!(judge(&overlapping, &status(404)), Outcome::Fail);
    }

    /// As Envoy's `handleSuccess`: a pass with `x-envoy-degraded` marks the host degraded
    /// (a change, though its health did not change), one without clears it; turning
    /// healthy ends an immediate-failure exclusion; the degraded flag follows the
    /// answer, never the threshold.
    #[test]
    fn a_degraded_answer_marks_the_host_degraded() {
        use crate::upstream::cluster::Health;
        let Ok(cluster) = Cluster::new(crate::upstream::test_support::spec("hc_degraded", &[1]))
        else {
            panic!("cluster builds")
        };
        let host = cluster.hosts()[0].clone();
        let spec = spec();
        let mut streak = Streak::default();
        let degraded = Outcome::Pass { degraded: true };
        assert_eq!(
            judge(
                &spec,
                &Answer {
                    degraded: true,
                    ..status(200)
                }
            ),
            degraded
        );
        assert_eq!(
            judge(
                &spec,
                &Answer {
                    degraded: true,
                    ..status(404)
                }
            ),
            Outcome::FailNow,
            "only a pass can be degraded"
        );
        assert_eq!(
            apply(&cluster, &spec, &host, &mut streak, degraded, false),
            Transition::Changed
        );
        assert_eq!(host.health(), Health::Degraded);
        assert_eq!(
            apply(&cluster, &spec, &host, &mut streak, degraded, false),
            Transition::Unchanged
        );
        assert_eq!(
            apply(&cluster, &spec, &host, &mut streak, PASS, false),
            Transition::Changed
        );
        assert_eq!(host.health(), Health::Healthy);
        // Failed with the immediate-failure header: excluded until healthy again.
        host.set_immediate_hc_fail(true);
        apply(&cluster, &spec, &host, &mut streak, Outcome::FailNow, false);
        assert!(host.is_excluded());
        assert_eq!(
            apply(&cluster, &spec, &host, &mut streak, degraded, false),
            Transition::Pending,
            "healthy_threshold 2"
        );
        assert!(host.is_excluded() && host.is_degraded_active_hc());
        apply(&cluster, &spec, &host, &mut streak, degraded, false);
        assert!(!host.is_excluded());
        assert_eq!(host.health(), Health::Degraded);
    }

    /// As Envoy: with active health checks a host starts unhealthy (`FAILED_ACTIVE_HC`), and
    /// its first result decides at once: a pass makes it healthy whatever
    /// `healthy_threshold` says, a failure leaves it unhealthy; later passes count again.
    #[test]
    fn the_first_result_decides_at_once() {
        let mut cluster_spec = crate::upstream::test_support::spec("hc_first", &[1, 2]);
        cluster_spec.health_check = Some(spec());
        let Ok(cluster) = Cluster::new(cluster_spec) else {
            panic!("cluster builds")
        };
        let hosts = cluster.hosts();
        assert!(hosts.iter().all(|host| !host.is_healthy()));
        assert_eq!(cluster.stats.membership_healthy.get(), 0);
        assert!(!cluster.is_initialized(), "not before the first checks");
        let spec = spec();
        let (mut a, mut b) = (Streak::default(), Streak::default());
        let first_pass = apply(&cluster, &spec, &hosts[0], &mut a, PASS, true);
        assert_eq!(first_pass, Transition::Changed);
        assert!(hosts[0].is_healthy(), "one pass is enough the first time");
        let first_fail = apply(&cluster, &spec, &hosts[1], &mut b, Outcome::Fail, true);
        assert_eq!(first_fail, Transition::Unchanged);
        assert!(!hosts[1].is_healthy());
        let later = apply(&cluster, &spec, &hosts[1], &mut b, PASS, false);
        assert_eq!(later, Transition::Pending, "then healthy_threshold counts");
    }

    /// Hosts discovery adds later start unhealthy; with `ignore_new_hosts_until_first_hc`
    /// they are also out of balancing and of the panic count until their first result (so
    /// one healthy host of three takes everything instead of panic mode spreading it).
    #[test]
    fn new_hosts_wait_for_their_first_check_where_asked() {
        use crate::upstream::lb::pick_host;
        use std::collections::BTreeSet;
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        for ignore in [false, true] {
            let mut cluster_spec = crate::upstream::test_support::spec("hc_new", &[1]);
            cluster_spec.health_check = Some(spec());
            cluster_spec.lb.ignore_new_hosts_until_first_hc = ignore;
            let Ok(cluster) = Cluster::new(cluster_spec) else {
                panic!("cluster builds")
            };
            let spec = spec();
            let first = cluster.hosts()[0].clone();
            apply(&cluster, &spec, &first, &mut Streak::default(), PASS, true);
            cluster.set_host_addresses(&[addr(1), addr(2), addr(3)]);
            let added = cluster.hosts()[1..].to_vec();
            assert!(added.iter().all(|host| !host.is_healthy()));
            assert!(
                added
                    .iter()
                    .all(|host| host.is_pending_first_check() == ignore)
            );
            let ports = |cluster: &Cluster| {
                (0..30)
                    .filter_map(|_| pick_host(cluster).map(|host| host.addr.port()))
                    .collect::<BTreeSet<u16>>()
            };
            let want: BTreeSet<u16> = if ignore { [1].into() } else { [1, 2, 3].into() };
            assert_eq!(ports(&cluster), want, "ignore {ignore}");
            for host in &added {
                let failed = apply(
                    &cluster,
                    &spec,
                    host,
                    &mut Streak::default(),
                    Outcome::Fail,
                    true,
                );
                let want = if ignore {
                    Transition::Changed
                } else {
                    Transition::Unchanged
                };
                assert_eq!(failed, want, "the first result ends the wait");
                assert!(!host.is_pending_first_check());
            }
            assert_eq!(
                ports(&cluster),
                [1, 2, 3].into(),
                "1 of 3 healthy: panic mode"
            );
        }
    }

    /// A STRICT_DNS cluster with checks initializes once its first resolution is in and the
    /// hosts it found have had their first check (one pass: healthy).
    #[tokio::test]
    async fn a_dns_cluster_initializes_after_resolving_and_checking() {
        use crate::upstream::ClusterManager;
        use crate::upstream::spec::Discovery;
        use crate::upstream::test_support::{self, delayed_ok};
        use std::sync::atomic::AtomicBool;

        let healthy = Arc::new(AtomicBool::new(true));
        let (addr, _seen) = test_support::http1_server(delayed_ok(Duration::ZERO), healthy).await;
        let mut cluster_spec = test_support::spec("hc_dns_init", &[addr.port()]);
        cluster_spec.discovery = Discovery::StrictDns;
        cluster_spec.health_check = Some(spec());
        let manager = match ClusterManager::new(vec![cluster_spec]) {
            Ok(manager) => manager,
            Err(error) => panic!("cluster builds: {error}"),
        };
        let Some(cluster) = manager.cluster("hc_dns_init") else {
            panic!("cluster")
        };
        assert!(!cluster.is_initialized());
        manager.start_background();
        let initialized =
            tokio::time::timeout(Duration::from_secs(10), manager.initialized()).await;
        assert!(initialized.is_ok(), "initializes");
        let hosts = cluster.hosts();
        assert_eq!(hosts.len(), 1);
        assert!(hosts[0].is_healthy(), "its first check passed");
        assert!(cluster.stats.health_check_success.get() >= 1);
        manager.shutdown();
    }

    /// Envoy's choice of the next interval, each field its own value.
    #[test]
    fn next_interval_is_envoys() {
        let ms = Duration::from_millis;
        let intervals = HealthCheckIntervals {
            interval: ms(1),
            no_traffic: ms(2),
            no_traffic_healthy: ms(3),
            unhealthy: ms(4),
            unhealthy_edge: ms(5),
            healthy_edge: ms(6),
        };
        use Transition::{Changed, Pending, Unchanged};
        let cases = [
            (false, true, Unchanged, 3),
            (false, true, Changed, 3),
            (false, true, Pending, 2),
            (false, false, Unchanged, 2),
            (false, false, Pending, 2),
            (true, true, Unchanged, 1),
            (true, true, Changed, 1),
            (true, true, Pending, 6),
            (true, false, Unchanged, 4),
            (true, false, Changed, 4),
            (true, false, Pending, 5),
        ];
        for (traffic, passed, transition, want) in cases {
            assert_eq!(
                next_interval(&intervals, traffic, passed, transition),
                ms(want),
                "traffic {traffic} passed {passed} {transition:?}"
            );
        }
    }

    /// A host whose health endpoint starts failing has its idle pooled connection closed
    /// (the upstream sees the close), gets no requests while unhealthy, and takes requests
    /// again on a fresh connection once it passes.
    #[tokio::test]
    async fn unhealthy_host_is_drained_and_skipped_until_it_passes() {
        use crate::stats::ClusterStats;
        use crate::upstream::test_support::{self, delayed_ok, eventually, get};
        use crate::upstream::{ClusterManager, UpstreamError, WorkerPools};
        use http_body_util::BodyExt;
        use std::sync::atomic::{AtomicBool, Ordering};

        const LIMIT: Duration = Duration::from_secs(10);
        let healthy = Arc::new(AtomicBool::new(true));
        let (addr, seen) =
            test_support::http1_server(delayed_ok(Duration::ZERO), healthy.clone()).await;
        let mut spec = test_support::spec("hc_drain", &[addr.port()]);
        // Panic mode off (`healthy_panic_threshold: 0`): an unhealthy only host is skipped,
        // not balanced over as Envoy's default panic mode would.
        spec.lb.healthy_panic_threshold = 0.0;
        spec.health_check = Some(HealthCheckSpec {
            intervals: HealthCheckIntervals::all(Duration::from_millis(50)),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            ..self::tests::spec()
        });
        let manager = match ClusterManager::new(vec![spec]) {
            Ok(manager) => manager,
            Err(error) => panic!("cluster builds: {error}"),
        };
        manager.start_background();
        manager.start_background();
        let pools = WorkerPools::new(manager.clone());
        let stats = ClusterStats::new("hc_drain");
        assert!(eventually(LIMIT, || stats.health_check_success.get() >= 1).await);

        let response = tokio::time::timeout(LIMIT, pools.send("hc_drain", get("/"))).await;
        let Ok(Ok(response)) = response else {
            panic!("request succeeds: {response:?}")
        };
        assert!(response.into_body().collect().await.is_ok());
        assert_eq!(seen.data_closed(), 0, "the connection stays pooled");

        healthy.store(false, Ordering::SeqCst);
        assert!(
            eventually(LIMIT, || seen.data_closed() == 1).await,
            "pooled connection closed"
        );
        let refused = pools.send("hc_drain", get("/")).await;
        assert!(
            matches!(refused, Err(UpstreamError::NoHealthyHost(_))),
            "{refused:?}"
        );
        assert_eq!(seen.requests(), 1, "no request reached the unhealthy host");
        assert_eq!(stats.membership_healthy.get(), 0);
        assert_eq!(stats.membership_total.get(), 1);
        assert!(stats.health_check_failure.get() >= 1);
        let flags = format!("hc_drain::{addr}::health_flags::/failed_active_hc");
        assert!(
            manager.clusters_text().contains(&flags),
            "{}",
            manager.clusters_text()
        );

        healthy.store(true, Ordering::SeqCst);
        assert!(eventually(LIMIT, || stats.membership_healthy.get() == 1).await);
        let response = tokio::time::timeout(LIMIT, pools.send("hc_drain", get("/"))).await;
        let Ok(Ok(response)) = response else {
            panic!("request succeeds: {response:?}")
        };
        assert!(response.into_body().collect().await.is_ok());
        assert_eq!(seen.requests(), 2);
        assert_eq!(
            stats.cx_http1_total.get(),
            2,
            "a fresh connection after recovery"
        );
        let text = manager.clusters_text();
        assert!(
            text.contains(&format!("hc_drain::{addr}::rq_total::2")),
            "{text}"
        );
        assert!(
            text.contains("hc_drain::default_priority::max_connections::1024"),
            "{text}"
        );
        manager.shutdown();
    }
}
