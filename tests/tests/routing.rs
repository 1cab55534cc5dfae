//! Virtual hosts and route matching: domains with wildcards, prefix/path/regex/header
//! matches, first match wins, prefix_rewrite, host_rewrite_literal, direct_response.

use serde_json::json;
use weir_tests::client::get_host;
use weir_tests::config::{self, Ports, direct, route_prefix, vhost};
use weir_tests::h1_upstream::Counting;
use weir_tests::{H1Upstream, Weir};

fn routing_config(
    ports: Ports,
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
) -> serde_json::Value {
    let default_routes = vec![
        json!({"match": {"path": "/exact"},
               "direct_response": {"status": 200, "body": {"inline_string": "path-exact"}}}),
        json!({"match": {"prefix": "/api/", "headers": [
                  {"name": "x-tenant", "string_match": {"exact": "blue"}}]},
               "direct_response": {"status": 200, "body": {"inline_string": "header-blue"}}}),
        json!({"match": {"safe_regex": {"regex": "/items/[0-9]+"}},
               "direct_response": {"status": 200, "body": {"inline_string": "regex"}}}),
        json!({"match": {"prefix": "/api/"},
               "route": {"cluster": "a", "prefix_rewrite": "/v2/"}}),
        json!({"match": {"prefix": "/host/"},
               "route": {"cluster": "a", "host_rewrite_literal": "rewritten.example"}}),
        direct("/first", 200, "first"),
        direct("/first/second", 200, "second"),
        direct("/teapot", 418, "short and stout"),
        route_prefix("/b/", "b"),
    ];
    config::bootstrap(
        ports.admin,
        vec![config::listener(
            "ingress",
            ports.http,
            config::hcm(
                "ingress_http",
                vec![
                    vhost(
                        "exact",
                        &["api.example.com"],
                        vec![direct("/", 200, "vh-exact")],
                    ),
                    vhost(
                        "suffix",
                        &["*.wild.example"],
                        vec![direct("/", 200, "vh-suffix")],
                    ),
                    vhost(
                        "prefix",
                        &["www.example.*"],
                        vec![direct("/", 200, "vh-prefix")],
                    ),
                    vhost("default", &["*"], default_routes),
                ],
            ),
        )],
        vec![
            config::static_cluster("a", &[a]),
            config::static_cluster("b", &[b]),
        ],
    )
}

async fn setup() -> (H1Upstream, H1Upstream, Ports, Weir) {
    let a = H1Upstream::start("a").await;
    let b = H1Upstream::start("b").await;
    let ports = Ports::new();
    let weir = Weir::start(&routing_config(ports, a.addr, b.addr)).await;
    (a, b, ports, weir)
}

async fn fetch(ports: Ports, host: &str, path: &str) -> (u16, String) {
    let resp = get_host(ports.http_addr(), host, path)
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"));
    (resp.status, resp.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_host_domains_with_wildcards() {
    let (_a, _b, ports, _weir) = setup().await;
    let cases = [
        ("api.example.com", "/", 200, "vh-exact"),
        ("x.wild.example", "/", 200, "vh-suffix"),
        ("deep.x.wild.example", "/", 200, "vh-suffix"),
        ("www.example.org", "/", 200, "vh-prefix"),
        // `*.wild.example` needs at least one character before the dot.
        ("wild.example", "/exact", 200, "path-exact"),
        ("unknown.test", "/exact", 200, "path-exact"),
    ];
    for (host, path, status, body) in cases {
        let got = fetch(ports, host, path).await;
        assert_eq!(got, (status, body.to_owned()), "Host {host} path {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_prefix_regex_header_matches_first_match_wins() {
    let (a, _b, ports, _weir) = setup().await;
    let h = "any.test";
    assert_eq!(fetch(ports, h, "/exact").await, (200, "path-exact".into()));
    assert_eq!(
        fetch(ports, h, "/exact?x=1").await,
        (200, "path-exact".into()),
        "path match ignores the query"
    );
    assert_eq!(
        fetch(ports, h, "/exact/more").await.0,
        404,
        "path is not a prefix"
    );
    assert_eq!(fetch(ports, h, "/items/42").await, (200, "regex".into()));
    assert_eq!(
        fetch(ports, h, "/items/42x").await.0,
        404,
        "safe_regex must match the whole path"
    );
    assert_eq!(
        fetch(ports, h, "/first/second/x").await,
        (200, "first".into()),
        "first match wins"
    );
    assert_eq!(
        fetch(ports, h, "/teapot").await,
        (418, "short and stout".into())
    );

    // Header match: with x-tenant: blue the earlier route takes it; without, the later one.
    let req = http::Request::get("/api/users")
        .header("host", h)
        .header("x-tenant", "blue")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = weir_tests::h1_request(ports.http_addr(), req)
        .await
        .unwrap();
    assert_eq!((resp.status, resp.text()), (200, "header-blue".into()));
    assert!(
        a.proxied_requests().is_empty(),
        "header-matched route must not reach cluster a"
    );
    let req = http::Request::get("/api/users")
        .header("host", h)
        .header("x-tenant", "green")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = weir_tests::h1_request(ports.http_addr(), req)
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-upstream"), "a");
    assert_eq!(fetch(ports, h, "/nowhere").await.0, 404, "no route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_rewrite_and_host_rewrite_literal() {
    let (a, b, ports, _weir) = setup().await;
    let (status, _) = fetch(ports, "client.test", "/api/users?id=7").await;
    assert_eq!(status, 200);
    let rec = a.last_request("/").expect("cluster a saw nothing");
    assert_eq!(rec.path, "/v2/users?id=7", "prefix_rewrite /api/ -> /v2/");
    assert_eq!(
        rec.values("host"),
        vec!["client.test"],
        "host unchanged without rewrite"
    );

    let (status, _) = fetch(ports, "client.test", "/host/x").await;
    assert_eq!(status, 200);
    let rec = a
        .last_request("/host/")
        .expect("cluster a saw no /host/ request");
    assert_eq!(
        rec.values("host"),
        vec!["rewritten.example"],
        "host_rewrite_literal: {rec:?}"
    );

    let (status, _) = fetch(ports, "client.test", "/b/thing").await;
    assert_eq!(status, 200);
    let rec = b.last_request("/b/").expect("cluster b saw nothing");
    assert_eq!(rec.path, "/b/thing", "no rewrite configured for /b/");
    assert_eq!(
        a.proxied_requests().len(),
        2,
        "cluster a got exactly its two requests"
    );
}
