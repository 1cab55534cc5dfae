//! Upstream HTTP/3: weir (HTTP/1.1 listener) forwarding to an in-process quinn/h3 upstream
//! through a cluster in Envoy's shape (`explicit_http_config.http3_protocol_options` +
//! `QuicUpstreamTransport`). The pool's contract is the h2 pool's: streams up to the peer's
//! limit, max_requests_per_connection, GOAWAY drain.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use weir_tests::config::{self, Ports};
use weir_tests::h3::H3Upstream;
use weir_tests::{Weir, get};

/// A config forwarding everything to `up` over HTTP/3, verifying its certificate against a CA
/// file (the upstream's self-signed certificate) and SNI localhost.
fn config_for(
    up: &H3Upstream,
    ports: Ports,
    dir: &std::path::Path,
    max_requests: Option<u32>,
) -> Value {
    let ca = dir.join("upstream-ca.pem");
    std::fs::write(&ca, &up.cert_pem).expect("write CA");
    let mut cfg = config::simple(ports, &[up.addr]);
    let cluster = config::cluster_of(&mut cfg, 0);
    config::upstream_http3(cluster, max_requests);
    cluster["transport_socket"]["typed_config"]["upstream_tls_context"]["common_tls_context"] =
        json!({"validation_context": {"trusted_ca": {"filename": ca.to_str().expect("utf-8")}}});
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_over_h3_with_bodies_and_a_verified_certificate() {
    let up = H3Upstream::start(100).await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let weir = Weir::start(&config_for(&up, ports, dir.path(), None)).await;
    for i in 0..3 {
        let response = get(ports.http_addr(), &format!("/get/{i}"))
            .await
            .expect("GET");
        assert_eq!(response.status, 200, "{response:?}\n{}", weir.log_report());
        assert_eq!(&response.body[..], b"ok");
    }
    assert_eq!(up.connections(), 1, "one connection carries every request");
    let payload: Bytes = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let request = http::Request::post("/echo")
        .header("host", "localhost")
        .body(Full::new(payload.clone()))
        .expect("request");
    let response = weir_tests::h1_request(ports.http_addr(), request)
        .await
        .expect("POST");
    assert_eq!(response.status, 200);
    assert!(response.body == payload, "10 MiB came back intact");
    let stats = weir.stats().await;
    let h3 = stats.get(
        "weir_cluster_upstream_cx_http3_total",
        &[("cluster_name", "backend")],
    );
    assert_eq!(h3, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_opens_more_connections() {
    // The upstream lets 2 streams per connection: 5 concurrent slow requests need 3.
    let up = H3Upstream::start(2).await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let weir = Weir::start(&config_for(&up, ports, dir.path(), None)).await;
    let started = Instant::now();
    let addr = ports.http_addr();
    let requests = (0..5).map(|i| async move { get(addr, &format!("/slow/700?{i}")).await });
    let responses = futures_util::future::join_all(requests).await;
    for response in responses {
        let response = response.expect("GET");
        assert_eq!(response.status, 200, "{response:?}\n{}", weir.log_report());
    }
    assert_eq!(up.connections(), 3, "{}", weir.log_report());
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "the 5 ran concurrently: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_and_goaway_drain() {
    let up = H3Upstream::start(100).await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let weir = Weir::start(&config_for(&up, ports, dir.path(), Some(2))).await;
    for _ in 0..3 {
        let response = get(ports.http_addr(), "/").await.expect("GET");
        assert_eq!(response.status, 200, "{response:?}\n{}", weir.log_report());
    }
    assert_eq!(up.connections(), 2, "2 requests per connection");

    // GOAWAY while a slow request runs: it finishes, and the next request gets a new
    // connection.
    let slow = tokio::spawn(get(ports.http_addr(), "/slow/500"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    up.goaway();
    let slow = slow.await.expect("join").expect("slow GET");
    assert_eq!(slow.status, 200, "the request in flight finishes: {slow:?}");
    let before = up.connections();
    let after_goaway = get(ports.http_addr(), "/").await.expect("GET");
    assert_eq!(
        after_goaway.status,
        200,
        "{after_goaway:?}\n{}",
        weir.log_report()
    );
    assert_eq!(up.connections(), before + 1, "{}", weir.log_report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sni_fails_certificate_verification() {
    let up = H3Upstream::start(100).await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config_for(&up, ports, dir.path(), None);
    config::cluster_of(&mut cfg, 0)["transport_socket"]["typed_config"]["upstream_tls_context"]["sni"] =
        json!("other.test");
    let weir = Weir::start(&cfg).await;
    let response = get(ports.http_addr(), "/").await.expect("GET");
    assert_eq!(response.status, 503, "{response:?}\n{}", weir.log_report());
    assert_eq!(up.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_to_h3_streams_bodies_and_trailers_both_ways() {
    let up = H3Upstream::start(100).await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config_for(&up, ports, dir.path(), None);
    let tls = weir_tests::tls::self_signed(dir.path());
    let hcm = config::hcm_of(&mut cfg).clone();
    let quic = config::quic_listener("quic", ports.http, hcm, &tls.cert, &tls.key);
    cfg["static_resources"]["listeners"] = json!([quic]);
    let weir = Weir::start(&cfg).await;
    let client = weir_tests::h3::H3Client::connect(ports.http_addr(), "localhost", &tls.cert_der)
        .await
        .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", weir.log_report()));
    let payload: Bytes = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
    let request = http::Request::post("https://localhost/echo")
        .body(())
        .expect("request");
    let response = client
        .request(request, payload.clone(), Some(trailers))
        .await
        .unwrap_or_else(|e| panic!("h3 echo: {e}\n{}", weir.log_report()));
    assert_eq!(response.status, 200);
    assert!(
        response.body == payload,
        "1 MiB intact through h3 -> weir -> h3"
    );
    let echoed = response.trailers.and_then(|t| t.get("x-checksum").cloned());
    assert_eq!(
        echoed,
        Some(http::HeaderValue::from_static("abc")),
        "trailers both ways"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_an_h3_cluster_go_over_quic() {
    let up = H3Upstream::start(100).await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config_for(&up, ports, dir.path(), None);
    config::cluster_of(&mut cfg, 0)["health_checks"] = json!([{
        "timeout": "0.5s",
        "interval": "0.2s",
        // Checked at this pace before traffic too (Envoy's default is once a minute).
        "no_traffic_interval": "0.2s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "http_health_check": {"path": "/health", "codec_client_type": "HTTP3"},
    }]);
    let weir = Weir::start(&cfg).await;
    let checked = weir_tests::wait_until(Duration::from_secs(5), || up.requests() >= 3).await;
    assert!(
        checked,
        "health checks reach the h3 upstream\n{}",
        weir.log_report()
    );
    let response = get(ports.http_addr(), "/").await.expect("GET");
    assert_eq!(
        response.status,
        200,
        "the host stays healthy\n{}",
        weir.log_report()
    );
    let stats = weir.stats().await;
    let failures = stats.get(
        "weir_cluster_upstream_health_check_failure",
        &[("cluster_name", "backend")],
    );
    assert!(
        failures.unwrap_or(0.0) == 0.0,
        "no failed checks: {failures:?}"
    );
}
