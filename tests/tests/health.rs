//! Active HTTP health checking: a failing host loses its pooled connection and its traffic
//! until it passes again.

use serde_json::json;
use std::time::Duration;
use weir_tests::client::get;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::{H1Upstream, Weir, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_host_is_drained_and_skipped_until_it_passes() {
    let a = H1Upstream::start("a").await;
    let b = H1Upstream::start("b").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[a.addr, b.addr]);
    // Two hosts, so one failing leaves 50% healthy: no panic routing in Envoy's terms either.
    config::cluster_of(&mut cfg, 0)["health_checks"] = json!([{
        "timeout": "0.5s",
        "interval": "0.2s",
        // Checked at this pace before traffic too (Envoy's default is once a minute).
        "no_traffic_interval": "0.2s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "http_health_check": {"path": "/health"},
    }]);
    let weir = Weir::start(&cfg).await;
    let seen_hc = |u: &H1Upstream| u.requests().iter().any(|r| r.path == "/health");
    assert!(
        wait_until(Duration::from_secs(5), || seen_hc(&a) && seen_hc(&b)).await,
        "both hosts should be health checked at /health within 5 s"
    );

    // Get a pooled connection to `a`.
    let mut a_conn = None;
    for i in 0..20 {
        let r = get(ports.http_addr(), &format!("/warm/{i}"))
            .await
            .expect("GET");
        if r.status == 200 && r.header("x-upstream") == "a" {
            a_conn = Some(r.header("x-conn-id").parse::<u64>().expect("x-conn-id"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_conn = a_conn.expect("no request reached host a in 20 tries (round robin over a and b)");
    assert!(
        !a.is_closed(a_conn),
        "the pooled connection to a closed too early"
    );

    a.set_healthy(false);
    assert!(
        wait_until(Duration::from_secs(5), || a.is_closed(a_conn)).await,
        "weir did not close its pooled connection {a_conn} to the host that failed its health check"
    );
    let failures = weir
        .stat(
            "weir_cluster_upstream_health_check_failure",
            &[("cluster_name", "backend")],
        )
        .await;
    assert!(
        failures >= 1.0,
        "health_check_failure stat did not move ({failures})"
    );

    let a_before = a.proxied_requests().len();
    for i in 0..10 {
        let r = get(ports.http_addr(), &format!("/while-down/{i}"))
            .await
            .expect("GET");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.header("x-upstream"),
            "b",
            "request {i} went to the unhealthy host"
        );
    }
    assert_eq!(
        a.proxied_requests().len(),
        a_before,
        "the unhealthy host got proxied requests"
    );

    a.set_healthy(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut back = false;
    while tokio::time::Instant::now() < deadline {
        let r = get(ports.http_addr(), "/after-recovery")
            .await
            .expect("GET");
        assert_eq!(r.status, 200);
        if r.header("x-upstream") == "a" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "host a got no request within 5 s of passing its health check again"
    );
}

/// Health checks of upstream `a` (cluster `quiet`, never sent traffic) and `b` (`backend`,
/// the route's) so far.
fn checks(a: &H1Upstream, b: &H1Upstream) -> (usize, usize) {
    let count = |u: &H1Upstream| u.requests().iter().filter(|r| r.path == "/health").count();
    (count(a), count(b))
}

/// `simple`'s config, `backend` checked every 0.1 s once it has traffic and every 0.5 s before
/// (`no_traffic_interval`), and a second cluster `quiet` with only `interval` (0.1 s), which
/// no route uses.
fn paced_config(
    ports: Ports,
    quiet: std::net::SocketAddr,
    busy: std::net::SocketAddr,
) -> serde_json::Value {
    let mut cfg = config::simple(ports, &[busy]);
    let check = json!({
        "timeout": "0.5s",
        "interval": "0.1s",
        "unhealthy_threshold": 2,
        "healthy_threshold": 2,
        "unhealthy_interval": "0.1s",
        "unhealthy_edge_interval": "0.1s",
        "healthy_edge_interval": "0.1s",
        "http_health_check": {"path": "/health"},
    });
    let mut busy_check = check.clone();
    busy_check["no_traffic_interval"] = json!("0.5s");
    busy_check["no_traffic_healthy_interval"] = json!("0.5s");
    config::cluster_of(&mut cfg, 0)["health_checks"] = json!([busy_check]);
    let mut quiet_cluster = config::static_cluster("quiet", &[quiet]);
    quiet_cluster["health_checks"] = json!([check]);
    cfg["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
        .push(quiet_cluster);
    cfg
}

/// The pace of one proxy's checks on `paced_config`: quiet's checks in all, backend's in
/// 1.5 s before any traffic, then backend's in the 1.5 s after one request.
async fn paced_counts(
    proxy: std::net::SocketAddr,
    a: &H1Upstream,
    b: &H1Upstream,
) -> (usize, usize, usize) {
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (quiet, busy) = checks(a, b);
            quiet > 0 && busy > 0
        })
        .await,
        "both clusters are checked at once"
    );
    let (_, first) = checks(a, b);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (quiet, before) = checks(a, b);
    let r = get(proxy, "/traffic").await.expect("GET");
    assert_eq!(r.status, 200, "{r:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (quiet_after, after) = checks(a, b);
    assert_eq!(
        quiet, quiet_after,
        "quiet got more checks with no traffic of its own"
    );
    (quiet, before - first, after - before)
}

/// `no_traffic_interval` as Envoy's: a cluster that has carried no traffic is checked at
/// `no_traffic_interval` (60 s unless set) rather than `interval`, and at `interval` once a
/// check after its first connection is due. Envoy 1.40 on the same config: quiet one check in
/// the first 1.5 s, backend every 0.5 s before traffic, every 0.1 s after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_keep_envoys_no_traffic_pace() {
    use envoy_check::envoy::Envoy;
    let (wa, wb) = (H1Upstream::start("a").await, H1Upstream::start("b").await);
    let (ea, eb) = (H1Upstream::start("a").await, H1Upstream::start("b").await);
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let _weir = Weir::start(&paced_config(weir_ports, wa.addr, wb.addr)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy = Envoy::start_config(
        &paced_config(envoy_ports, ea.addr, eb.addr).to_string(),
        dir.path(),
    );
    let (ours, theirs) = tokio::join!(
        paced_counts(weir_ports.http_addr(), &wa, &wb),
        paced_counts(envoy_ports.http_addr(), &ea, &eb)
    );
    drop(envoy);
    for (who, (quiet, before, after)) in [("weir", ours), ("Envoy", theirs)] {
        assert_eq!(quiet, 1, "{who}: quiet waits 60 s after its first check");
        assert!(
            (2..=4).contains(&before),
            "{who}: {before} backend checks in 1.5 s at the 0.5 s no-traffic pace"
        );
        assert!(
            after >= 6,
            "{who}: {after} backend checks in 1.5 s after traffic, at the 0.1 s pace"
        );
    }
}

/// One listener that answers `/s204` itself with 204 (a host for the checks of 204), and four
/// checked clusters, every one with `unhealthy_threshold: 100`: `plain` and `retriable` on
/// `up`'s `/health` (`retriable` with 503 in `retriable_statuses`), `nocontent` and
/// `expected` on the listener's `/s204` (`expected` with `expected_statuses` 2xx).
fn statuses_config(ports: Ports, up: std::net::SocketAddr) -> serde_json::Value {
    let answers = std::net::SocketAddr::from(([127, 0, 0, 1], ports.http));
    let route = json!({"match": {"path": "/s204"}, "direct_response": {"status": 204}});
    let mut cfg = config::bootstrap(
        ports.admin,
        vec![config::listener(
            "answers",
            ports.http,
            config::hcm("answers", vec![config::vhost("all", &["*"], vec![route])]),
        )],
        vec![],
    );
    let checked = |name: &str, host, path: &str, extra: serde_json::Value| {
        let mut http = json!({"path": path});
        if let (Some(http), Some(extra)) = (http.as_object_mut(), extra.as_object()) {
            http.extend(extra.clone());
        }
        let mut cluster = config::static_cluster(name, &[host]);
        cluster["health_checks"] = json!([{
            "timeout": "1s",
            "interval": "0.2s",
            "no_traffic_interval": "0.2s",
            "unhealthy_threshold": 100,
            "healthy_threshold": 1,
            "http_health_check": http,
        }]);
        cluster
    };
    cfg["static_resources"]["clusters"] = json!([
        checked("plain", up, "/health", json!({})),
        checked(
            "retriable",
            up,
            "/health",
            json!({"retriable_statuses": [{"start": 503, "end": 504}]})
        ),
        checked("nocontent", answers, "/s204", json!({})),
        checked(
            "expected",
            answers,
            "/s204",
            json!({"expected_statuses": [{"start": 200, "end": 300}]})
        ),
    ]);
    cfg
}

/// `cluster::health_flags::...` of each host in an admin `/clusters` answer (the address
/// left out), sorted.
fn health_flags(clusters: &str) -> Vec<String> {
    let mut flags: Vec<String> = clusters
        .lines()
        .filter(|line| line.contains("::health_flags::"))
        .filter_map(|line| {
            let (cluster, rest) = line.split_once("::")?;
            let (_, flags) = rest.split_once("::health_flags::")?;
            Some(format!("{cluster} {flags}"))
        })
        .collect();
    flags.sort();
    flags
}

/// GET `path` on an admin listener: its body (empty when it does not answer).
async fn admin_text(admin: std::net::SocketAddr, path: &str) -> String {
    weir_tests::client::get_host(admin, "localhost", path)
        .await
        .map(|resp| resp.text())
        .unwrap_or_default()
}

/// Waits (at most 10 s) until the health flags on `admin` are `want`; returns the last seen.
async fn flags_become(admin: std::net::SocketAddr, want: &[&str]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let flags = health_flags(&admin_text(admin, "/clusters").await);
        if flags == want || tokio::time::Instant::now() >= deadline {
            return flags;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `cluster.retriable.health_check.failure` on `admin`.
async fn retriable_failures(admin: std::net::SocketAddr) -> u64 {
    let text = admin_text(
        admin,
        "/stats?filter=%5Ecluster%5C.retriable%5C.health_check%5C.failure%24",
    )
    .await;
    text.trim()
        .rsplit(": ")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// As Envoy 1.40 (checked on the same config): an answer whose status is not in
/// `expected_statuses` (200 alone by default, so a 204 fails) makes a host unhealthy at its
/// first check, whatever `unhealthy_threshold` says; a status of `retriable_statuses` counts
/// towards the threshold like a timeout. `/clusters` health flags compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexpected_status_fails_a_host_at_once_as_envoy() {
    use envoy_check::envoy::Envoy;
    let up = H1Upstream::start("up").await;
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let weir = Weir::start(&statuses_config(weir_ports, up.addr)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy = Envoy::start_config(
        &statuses_config(envoy_ports, up.addr).to_string(),
        dir.path(),
    );
    let envoy_admin: std::net::SocketAddr = envoy.admin.parse().expect("envoy admin address");
    let admins = [("weir", weir.admin), ("Envoy", envoy_admin)];

    let passing = [
        "expected healthy",
        "nocontent /failed_active_hc",
        "plain healthy",
        "retriable healthy",
    ];
    for (who, admin) in admins {
        let flags = flags_become(admin, &passing).await;
        assert_eq!(flags, passing, "{who}: a 204 fails unless expected");
    }

    up.set_healthy(false);
    let failing = [
        "expected healthy",
        "nocontent /failed_active_hc",
        "plain /failed_active_hc",
        "retriable healthy",
    ];
    for (who, admin) in admins {
        let flags = flags_become(admin, &failing).await;
        assert_eq!(flags, failing, "{who}: a 503 fails plain at once");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while retriable_failures(admin).await < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            retriable_failures(admin).await >= 3,
            "{who}: retriable checked"
        );
        let flags = health_flags(&admin_text(admin, "/clusters").await);
        assert_eq!(
            flags, failing,
            "{who}: three retriable 503s are below the threshold of 100"
        );
    }
    drop(envoy);
}
