//! Active HTTP health checking of a cluster's hosts.
//!
//! Every `interval` each host gets `GET path` with the configured host header on a fresh
//! connection (h2 when the cluster speaks h2 or ALPN chose it, HTTP/1.1 otherwise). A check
//! passes on a 2xx within `timeout`. Hosts start healthy; `unhealthy_threshold` consecutive
//! failures make one unhealthy (which drains every worker's connections to it), and
//! `healthy_threshold` consecutive passes make it healthy again.

use super::cluster::{Cluster, Host, HostProtocol};
use super::connect;
use super::spec::{HealthCheckSpec, UpstreamProtocol};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Consecutive results of one host.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    passes: u32,
    failures: u32,
}

/// Checks the cluster's hosts every `spec.interval`, the first round at once. Runs until
/// aborted.
pub async fn run(cluster: Arc<Cluster>, spec: HealthCheckSpec) {
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    let mut ticks = tokio::time::interval(spec.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let hosts = cluster.hosts();
        let results = futures_util::future::join_all(
            hosts
                .iter()
                .map(|host| check_and_count(&cluster, &spec, host)),
        )
        .await;
        streaks.retain(|addr, _| hosts.iter().any(|host| host.addr == *addr));
        for (host, passed) in hosts.iter().zip(results) {
            let streak = streaks.entry(host.addr).or_default();
            apply(&cluster, &spec, host, streak, passed);
        }
        cluster.update_membership();
        let passing = hosts
            .iter()
            .filter(|host| host.is_healthy() && !host.is_removed())
            .count();
        cluster.stats.health_check_healthy.set(passing as i64);
    }
}

/// Updates a host's streak with one result and flips its health at the thresholds.
fn apply(
    cluster: &Cluster,
    spec: &HealthCheckSpec,
    host: &Host,
    streak: &mut Streak,
    passed: bool,
) {
    if passed {
        streak.passes += 1;
        streak.failures = 0;
        if !host.is_healthy() && streak.passes >= spec.healthy_threshold.max(1) {
            tracing::info!(cluster = %cluster.name(), host = %host.addr, "host healthy");
            host.set_healthy(true);
        }
    } else {
        streak.failures += 1;
        streak.passes = 0;
        if host.is_healthy() && streak.failures >= spec.unhealthy_threshold.max(1) {
            tracing::info!(cluster = %cluster.name(), host = %host.addr, "host unhealthy");
            host.set_healthy(false);
        }
    }
}

async fn check_and_count(cluster: &Cluster, spec: &HealthCheckSpec, host: &Host) -> bool {
    cluster.stats.health_check_attempt.inc();
    // A failure without an answer (no connection, a reset, the timeout) is also a network
    // failure, as Envoy counts it; a non-2xx answer is only a failure.
    let (passed, network) =
        match tokio::time::timeout(spec.timeout, check(cluster, spec, host)).await {
            Ok(Ok(status)) => (status.is_success(), false),
            Ok(Err(error)) => {
                tracing::debug!(%error, host = %host.addr, "health check failed");
                (false, true)
            }
            Err(_) => {
                tracing::debug!(host = %host.addr, "health check timed out");
                (false, true)
            }
        };
    if passed {
        cluster.stats.health_check_success.inc();
    } else {
        cluster.stats.health_check_failure.inc();
        if network {
            cluster.stats.health_check_network_failure.inc();
        }
    }
    passed
}

/// One check: connect, send the GET, return the response status.
async fn check(
    cluster: &Cluster,
    spec: &HealthCheckSpec,
    host: &Host,
) -> Result<http::StatusCode, Box<dyn std::error::Error + Send + Sync>> {
    let authority = spec
        .host
        .clone()
        .unwrap_or_else(|| cluster.name().to_owned());
    if spec.over_quic {
        return super::quic::health_check(cluster, host.addr, &authority, &spec.path).await;
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
        Ok(response?.status())
    } else {
        let request = request.body(Empty::<Bytes>::new())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        let driver = tokio::spawn(connection);
        let response = sender.send_request(request).await;
        driver.abort();
        Ok(response?.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec() -> HealthCheckSpec {
        HealthCheckSpec {
            path: "/healthz".into(),
            host: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            over_quic: false,
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
        apply(&cluster, &spec, &host, &mut streak, false);
        apply(&cluster, &spec, &host, &mut streak, false);
        assert!(
            host.is_healthy(),
            "two failures are below the threshold of three"
        );
        apply(&cluster, &spec, &host, &mut streak, false);
        assert!(!host.is_healthy());
        apply(&cluster, &spec, &host, &mut streak, true);
        assert!(!host.is_healthy(), "one pass is below the threshold of two");
        apply(&cluster, &spec, &host, &mut streak, true);
        assert!(host.is_healthy());
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
            interval: Duration::from_millis(50),
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
