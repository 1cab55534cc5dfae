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
