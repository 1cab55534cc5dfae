//! weir's own Wasm filters (`filters/`, built on weir-sdk) running in weir, checked the way
//! `filters/envoy-check` checks them in Envoy: the same requests, the same answers.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::wasm::{filter, set_filters, start_with_env, wasm_filter};
use weir_tests::{H1Upstream, Weir, client};

async fn start(module: &str, configuration: &str) -> (H1Upstream, Ports, Weir) {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut config = config::simple(ports, &[up.addr]);
    set_filters(
        &mut config,
        vec![wasm_filter(module, &filter(module), configuration, false)],
    );
    let weir = start_with_env(&config, 1, &[]).await;
    (up, ports, weir)
}

async fn get(ports: &Ports, path: &str, headers: &[(&str, &str)]) -> client::Resp {
    let mut req = Request::get(path).header("host", "example.com");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    client::h1_request(ports.http_addr(), req)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_manipulation_edits_both_directions() {
    let (up, ports, _weir) = start(
        "header_manipulation",
        r#"{"request": {"remove": ["x-remove-me"], "set": {"x-set-request": "1"}, "add": [{"name": "x-added-request", "value": "a"}]}, "response": {"remove": ["x-upstream"], "set": {"x-set-response": "yes"}}}"#,
    )
    .await;
    let resp = get(
        &ports,
        "/hm",
        &[("x-remove-me", "gone"), ("x-keep", "kept")],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = up.last_request("").expect("upstream saw it");
    assert_eq!(seen.values("x-set-request"), ["1"]);
    assert_eq!(seen.values("x-added-request"), ["a"]);
    assert_eq!(seen.values("x-keep"), ["kept"]);
    assert!(seen.values("x-remove-me").is_empty(), "{seen:?}");
    assert_eq!(resp.header("x-set-response"), "yes");
    assert!(
        resp.headers.get("x-upstream").is_none(),
        "{:?}",
        resp.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_answers_401_without_credentials_and_passes_with_them() {
    let (up, ports, _weir) = start(
        "auth",
        r#"{"api_key": {"header": "x-api-key", "keys": ["k1"]}, "basic": {"users": {"alice": "s3cret"}}, "realm": "test"}"#,
    )
    .await;
    let denied = get(&ports, "/", &[]).await;
    assert_eq!(denied.status, 401, "{}", denied.text());
    let challenges: Vec<&str> = denied
        .headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        challenges
            .iter()
            .any(|c| c.starts_with("Basic realm=\"test\"")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("ApiKey")),
        "{challenges:?}"
    );
    let before = up.tracker().requests.lock().unwrap().len();
    assert_eq!(before, 0, "a denied request reached the upstream");

    let key = get(&ports, "/", &[("x-api-key", "k1")]).await;
    assert_eq!(key.status, 200, "{}", key.text());
    let seen = up.last_request("").expect("upstream saw it");
    assert!(
        seen.values("x-api-key").is_empty(),
        "key leaked upstream: {seen:?}"
    );
    assert_eq!(get(&ports, "/", &[("x-api-key", "k2")]).await.status, 401);
    let basic = get(&ports, "/", &[("authorization", "Basic YWxpY2U6czNjcmV0")]).await;
    assert_eq!(basic.status, 200, "{}", basic.text());
    let wrong = get(&ports, "/", &[("authorization", "Basic YWxpY2U6d3Jvbmc=")]).await;
    assert_eq!(wrong.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rate_limit_answers_429_over_the_limit() {
    let (_up, ports, _weir) = start(
        "local_rate_limit",
        r#"{"name": "t", "max_tokens": 3, "fill_interval_ms": 3600000}"#,
    )
    .await;
    for i in 1..=3 {
        let resp = get(&ports, "/", &[]).await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
    }
    let limited = get(&ports, "/", &[]).await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    let retry_after: u64 = limited
        .header("retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("429 without a numeric retry-after: {:?}", limited.headers));
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
}
