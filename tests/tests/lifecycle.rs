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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_idle_timeout_closes_idle_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    config::hcm_of(&mut cfg)["common_http_protocol_options"] =
        serde_json::json!({"idle_timeout": "0.5s"});
    let _weir = Weir::start(&cfg).await;
    let mut tcp = tokio::net::TcpStream::connect(ports.http_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /idle HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut answered_at = None;
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => {
                answered_at.get_or_insert_with(std::time::Instant::now);
                got.extend_from_slice(&buf[..n]);
            }
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the request is answered first:\n{text}"
    );
    assert!(
        closed,
        "weir kept an idle keep-alive connection open past idle_timeout 0.5s"
    );
    let idle = answered_at.expect("answered").elapsed();
    assert!(
        idle >= Duration::from_millis(300) && idle < Duration::from_secs(4),
        "a keep-alive connection should close about 0.5 s after going idle, closed after {idle:?}"
    );
}
