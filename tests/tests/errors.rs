//! Local replies for bad requests and upstream failures, and the counters behind them.

use serde_json::json;
use std::time::Duration;
use weir_tests::client::{get, raw_exchange, raw_exchange_for};
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::{H1Upstream, Weir, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_gets_400() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let _weir = Weir::start(&config::simple(ports, &[up.addr])).await;
    let reply = raw_exchange(
        ports.http_addr(),
        b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
    )
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 400"),
        "expected 400 for a header line without a colon, got:\n{reply:?}"
    );
    let reply = raw_exchange(ports.http_addr(), b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(
        reply.starts_with("HTTP/1.1 400"),
        "expected 400 for garbage, got:\n{reply:?}"
    );
    assert!(
        up.proxied_requests().is_empty(),
        "a malformed request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_gets_404() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    config::hcm_of(&mut cfg)["route_config"]["virtual_hosts"] = json!([config::vhost(
        "only",
        &["only.example"],
        vec![config::route_prefix("/", "backend")]
    )]);
    let weir = Weir::start(&cfg).await;
    let resp = get(ports.http_addr(), "/").await.expect("GET");
    assert_eq!(resp.status, 404, "unknown host must get 404: {resp:?}");
    let resp = weir_tests::get_host(ports.http_addr(), "only.example", "/x")
        .await
        .expect("GET");
    assert_eq!(resp.status, 200, "the matching host is routed");
    assert!(up.last_request("/x").is_some());
    let stats = weir.stats().await;
    assert_eq!(
        stats.get(
            "weir_http_downstream_rq_xx",
            &[
                ("response_code_class", "4"),
                ("stat_prefix", "ingress_http")
            ]
        ),
        Some(1.0),
        "one 4xx counted:\n{}",
        stats.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_port_closed_gets_503() {
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let ports = Ports::new();
    let weir = Weir::start(&config::simple(ports, &[closed])).await;
    let resp = get(ports.http_addr(), "/").await.expect("GET");
    assert_eq!(resp.status, 503, "refused upstream connection: {resp:?}");
    let stats = weir.stats().await;
    assert_eq!(
        stats.get(
            "weir_http_downstream_rq_xx",
            &[
                ("response_code_class", "5"),
                ("stat_prefix", "ingress_http")
            ]
        ),
        Some(1.0),
        "one 5xx counted:\n{}",
        stats.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dropping_connection_gets_503() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let _weir = Weir::start(&config::simple(ports, &[up.addr])).await;
    let resp = get(ports.http_addr(), "/drop").await.expect("GET /drop");
    assert_eq!(resp.status, 503, "upstream reset before headers: {resp:?}");
    assert!(
        up.last_request("/drop").is_some(),
        "the request did reach the upstream"
    );
    // weir is still fine afterwards.
    let resp = get(ports.http_addr(), "/after").await.expect("GET /after");
    assert_eq!(resp.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_gets_504() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    config::hcm_of(&mut cfg)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"] =
        json!("0.5s");
    let _weir = Weir::start(&cfg).await;
    let started = std::time::Instant::now();
    let resp = get(ports.http_addr(), "/slow/3000")
        .await
        .expect("GET /slow");
    let took = started.elapsed();
    assert_eq!(resp.status, 504, "{resp:?}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(2500),
        "504 should come after about 0.5 s, came after {took:?}"
    );
    let resp = get(ports.http_addr(), "/slow/10").await.expect("GET fast");
    assert_eq!(resp.status, 200, "a request within the timeout passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_gets_431() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    config::hcm_of(&mut cfg)["common_http_protocol_options"] = json!({"max_headers_count": 20});
    let _weir = Weir::start(&cfg).await;

    let mut ok = String::from("GET /few HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for i in 0..10 {
        ok.push_str(&format!("x-h{i}: v\r\n"));
    }
    ok.push_str("\r\n");
    let reply = raw_exchange(ports.http_addr(), ok.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "12 headers are within 20:\n{reply}"
    );

    let mut many = String::from("GET /many HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for i in 0..40 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let reply = raw_exchange_for(ports.http_addr(), many.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "42 headers over a limit of 20:\n{reply}"
    );
    assert!(
        up.last_request("/many").is_none(),
        "the oversized request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_drop_is_counted() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let weir = Weir::start(&config::simple(ports, &[up.addr])).await;
    let resp = get(ports.http_addr(), "/drop").await.expect("GET /drop");
    assert_eq!(resp.status, 503);
    let stats = weir.stats().await;
    let backend = [("cluster_name", "backend")];
    assert_eq!(
        stats.get("weir_cluster_upstream_cx_destroy_with_active_rq", &backend),
        Some(1.0),
        "the upstream closed a connection with a request on it:\n{}",
        stats.text
    );
    assert_eq!(
        stats.get(
            "weir_http_downstream_rq_xx",
            &[
                ("response_code_class", "5"),
                ("stat_prefix", "ingress_http")
            ]
        ),
        Some(1.0),
        "{}",
        stats.text
    );
}

/// Routes `/dead` (a closed port), `/empty` (a cluster without hosts) and `/slow` (an upstream
/// slower than the route's 0.3 s); anything else has no route.
fn failing_routes(ports: Ports, up: std::net::SocketAddr) -> serde_json::Value {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cfg = config::simple(ports, &[dead]);
    let clusters = cfg["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters");
    clusters.push(config::static_cluster("slow_backend", &[up]));
    clusters.push(config::static_cluster("empty", &[]));
    config::hcm_of(&mut cfg)["route_config"]["virtual_hosts"][0]["routes"] = json!([
        {"match": {"prefix": "/slow"}, "route": {"cluster": "slow_backend", "timeout": "0.3s"}},
        config::route_prefix("/empty", "empty"),
        config::route_prefix("/dead", "backend"),
    ]);
    cfg
}

/// For each local reply: its status and its `x-request-id`, with and without one from the
/// client.
async fn reply_ids(proxy: std::net::SocketAddr) -> Vec<String> {
    let mut lines = Vec::new();
    for path in ["/nothere", "/dead", "/empty", "/slow/3000"] {
        for sent in [None, Some("client-id")] {
            let extra = sent.map_or(String::new(), |id| format!("x-request-id: {id}\r\n"));
            let request =
                format!("GET {path} HTTP/1.1\r\nhost: x\r\n{extra}connection: close\r\n\r\n");
            let raw = raw_exchange_for(proxy, request.as_bytes(), Duration::from_secs(3)).await;
            let head = raw
                .split("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let status = head.get(9..12).unwrap_or("?").to_owned();
            let id = head
                .lines()
                .find_map(|l| l.strip_prefix("x-request-id: "))
                .unwrap_or("-")
                .to_owned();
            lines.push(format!("{path} sent={sent:?} {status} x-request-id={id}"));
        }
    }
    lines
}

/// Local replies carry no `x-request-id`, as Envoy's (without
/// `always_set_request_id_in_response`): 404 no route, 503 connect failure, 503 no healthy
/// upstream, 504 timeout, whether the client sent an id or weir generated one. Envoy 1.40 on
/// the same config sends none on any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_carry_no_request_id_as_envoys() {
    use envoy_check::envoy::Envoy;
    let up = H1Upstream::start("up").await;
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let _weir = Weir::start(&failing_routes(weir_ports, up.addr)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy = Envoy::start_config(
        &failing_routes(envoy_ports, up.addr).to_string(),
        dir.path(),
    );
    let (ours, theirs) = tokio::join!(
        reply_ids(weir_ports.http_addr()),
        reply_ids(envoy_ports.http_addr())
    );
    drop(envoy);
    assert_eq!(ours, theirs, "weir (left) and Envoy (right)");
    let statuses: Vec<&str> = ours
        .iter()
        .map(|l| l.split(' ').nth(2).unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        ["404", "404", "503", "503", "503", "503", "504", "504"]
    );
    assert!(
        ours.iter().all(|l| l.ends_with("x-request-id=-")),
        "{ours:#?}"
    );
}
