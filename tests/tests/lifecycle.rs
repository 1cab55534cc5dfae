//! Admin endpoints, stats, and shutdown.

use std::time::Duration;
use weir_tests::client::get;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::{H1Upstream, Weir, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_request_finish_then_exits_zero() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut weir = Weir::start(&config::simple(ports, &[up.addr])).await;
    let addr = ports.http_addr();
    let slow = tokio::spawn(async move { get(addr, "/slow/1500").await });
    assert!(
        wait_until(Duration::from_secs(5), || up.in_flight() == 1).await,
        "the slow request never reached the upstream"
    );
    weir.sigterm();
    let resp = slow
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("in-flight request failed after SIGTERM: {e}"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.json()["path"],
        "/slow/1500",
        "whole body after SIGTERM"
    );
    let status = weir
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| {
            panic!(
                "weir still running 10 s after SIGTERM\n{}",
                weir.log_report()
            )
        });
    assert!(
        status.success(),
        "weir exited with {status} after SIGTERM\n{}",
        weir.log_report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ready_clusters_config_dump_and_stats() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let weir = Weir::start(&config::simple(ports, &[up.addr])).await;
    assert_eq!(weir.admin_get("/ready").await.0, 200);
    for i in 0..3 {
        let r = get(ports.http_addr(), &format!("/s/{i}"))
            .await
            .expect("GET");
        assert_eq!(r.status, 200);
    }

    let (status, clusters) = weir.admin_get("/clusters").await;
    assert_eq!(status, 200);
    let host = format!("backend::{}", up.addr);
    assert!(
        clusters.contains(&format!("{host}::health_flags::healthy")),
        "/clusters lacks {host}::health_flags::healthy:\n{clusters}"
    );
    let active_line = clusters
        .lines()
        .find(|l| l.starts_with(&format!("{host}::cx_active::")))
        .unwrap_or_else(|| panic!("/clusters lacks {host}::cx_active::N:\n{clusters}"));
    let active: u64 = active_line
        .rsplit("::")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        active,
        up.active(),
        "cx_active vs the upstream's open connections"
    );

    let (status, dump) = weir.admin_get("/config_dump").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&dump)
        .unwrap_or_else(|e| panic!("/config_dump not JSON ({e}):\n{dump}"));
    let text = json.to_string();
    assert!(
        text.contains("ingress_http") && text.contains("backend"),
        "{dump}"
    );

    let stats = weir.stats().await;
    let rq = |name: &str, labels: &[(&str, &str)]| stats.get(name, labels).unwrap_or(0.0);
    let p = ("stat_prefix", "ingress_http");
    assert_eq!(
        rq("weir_http_downstream_rq_total", &[p]),
        3.0,
        "{}",
        stats.text
    );
    assert_eq!(
        rq(
            "weir_http_downstream_rq_xx",
            &[("response_code_class", "2"), p]
        ),
        3.0,
        "{}",
        stats.text
    );
    assert!(
        rq("weir_http_downstream_cx_total", &[p]) >= 3.0,
        "{}",
        stats.text
    );
    let c = ("cluster_name", "backend");
    assert_eq!(
        rq("weir_cluster_upstream_rq_total", &[c]),
        3.0,
        "{}",
        stats.text
    );
    assert_eq!(
        rq("weir_cluster_upstream_cx_total", &[c]),
        up.accepted() as f64,
        "{}",
        stats.text
    );
    assert_eq!(
        rq("weir_cluster_upstream_cx_active", &[c]),
        up.active() as f64,
        "{}",
        stats.text
    );
}
