//! Modules built with the official proxy-wasm Rust SDK (`filters/fixtures`) driving every
//! area of the host through real HTTP requests: header maps, properties, configuration
//! buffers, body buffering and rewriting, local replies, HTTP callouts (answered, failed,
//! timed out), timers, shared data with CAS, shared queues, metrics. Plus one module in a second
//! language: AssemblyScript on the npm proxy-wasm SDK (ABI 0.2.0, a Wasm start section).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use std::time::Duration;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::wasm::{assemblyscript_fixture, fixture, set_filters, start_with_env, wasm_filter};
use weir_tests::{H1Upstream, Weir, client};

async fn start(
    name: &str,
    configuration: &str,
    tweak: impl FnOnce(&mut Value),
) -> (H1Upstream, Ports, Weir) {
    start_module(name, &fixture(name), configuration, tweak).await
}

/// weir with one plugin `name` (also its root id) running `module`, in front of an upstream.
async fn start_module(
    name: &str,
    module: &std::path::Path,
    configuration: &str,
    tweak: impl FnOnce(&mut Value),
) -> (H1Upstream, Ports, Weir) {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut config = config::simple(ports, &[up.addr]);
    set_filters(
        &mut config,
        vec![wasm_filter(name, module, configuration, false)],
    );
    tweak(&mut config);
    let weir = start_with_env(&config, 1, &[]).await;
    (up, ports, weir)
}

async fn send(ports: &Ports, req: http::request::Builder, body: &[u8]) -> client::Resp {
    let req = req
        .header("host", "example.com")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    tokio::time::timeout(
        Duration::from_secs(20),
        client::h1_request(ports.http_addr(), req),
    )
    .await
    .expect("answered within 20 s")
    .expect("exchange")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_properties_and_configuration_reach_the_module() {
    let (up, ports, weir) = start("headers", "cfg-headers", |config| {
        config["node"] = json!({"id": "test-node", "cluster": "test-cluster"});
    })
    .await;
    let resp = send(
        &ports,
        Request::get("/props/x?q=1")
            .header("x-remove", "1")
            .header("x-remove-too", "1")
            .header("x-replace", "original")
            .header("x-echo-back", "v"),
        b"",
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = up.last_request("").expect("upstream saw it");
    assert!(seen.values("x-remove").is_empty(), "{seen:?}");
    assert!(seen.values("x-remove-too").is_empty(), "{seen:?}");
    assert_eq!(seen.values("x-wasm-time"), ["ok"]);
    let pairs: usize = seen.values("x-wasm-pairs")[0].parse().expect("pairs");
    // :method, :scheme, :authority, :path, x-replace, x-echo-back, x-request-id (after the
    // removals).
    assert_eq!(pairs, 7, "every header and pseudo-header");
    assert_eq!(seen.values("x-replace"), ["replaced"]);
    assert_eq!(seen.values("x-added"), ["1"]);
    assert_eq!(seen.values("x-wasm-request"), ["GET /props/x?q=1"]);
    assert_eq!(resp.header("x-wasm-response"), "200 200");
    assert_eq!(resp.header("x-wasm-config"), "cfg-headers");
    assert_eq!(resp.header("x-wasm-vm-config"), "vm:headers");
    let props = resp.header("x-wasm-props").to_string();
    let (props, request_id) = props.rsplit_once('|').expect("request.id last");
    assert_eq!(
        props,
        format!(
            "headers|headers|headers|/props/x|example.com|GET|HTTP/1.1|test-node|{}|backend",
            ports.http
        )
    );
    assert_eq!(
        seen.values("x-request-id"),
        [request_id],
        "request.id is the id sent upstream"
    );
    assert_eq!(
        resp.header("x-wasm-state"),
        "kept",
        "set_property reads back"
    );
    assert!(
        resp.headers.get("x-echoed").is_none(),
        "response header removed"
    );
    let count: usize = resp
        .header("x-wasm-request-headers")
        .parse()
        .expect("count");
    assert!(count >= 5, "pseudo-headers and headers: {count}");
    assert_eq!(
        resp.header("x-wasm-pairs-set"),
        "1",
        "the whole map replaced"
    );
    assert_eq!(
        resp.header("x-wasm-upstream"),
        up.addr.to_string(),
        "upstream.address in the response callbacks"
    );
    // proxy_on_log runs once the response is done, and still reads upstream.address.
    let mut logged = false;
    let expected_log = format!("headers fixture on_log 200 upstream {}", up.addr);
    for _ in 0..50 {
        if weir.log().contains(&expected_log) {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logged, "on_log ran\n{}", weir.log_report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_bodies_buffer_and_are_rewritten_both_ways() {
    let (_up, ports, _weir) = start("body_rewrite", "", |_| {}).await;
    let small = send(&ports, Request::post("/echo"), b"foo and foo").await;
    assert_eq!(small.status, 200, "{}", small.text());
    assert_eq!(small.text(), "rewritten:BAR AND BAR");
    // Several frames each way: the upstream echoes in 64 KiB chunks.
    let big: Vec<u8> = b"foo-".repeat(100_000);
    let resp = send(&ports, Request::post("/echo"), &big).await;
    assert_eq!(resp.status, 200);
    let expected = format!("rewritten:{}", "BAR-".repeat(100_000));
    assert_eq!(resp.body.len(), expected.len());
    assert!(resp.text() == expected, "body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_body_past_the_buffer_limit_is_refused() {
    // As in Envoy: a filter may hold at most per_connection_buffer_limit_bytes of a paused
    // body; past it a request gets 413 and a response (its head already sent) is cut off.
    let (up, ports, weir) = start("body_rewrite", "", |config| {
        config["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] =
            json!(65_536);
    })
    .await;
    let under = send(&ports, Request::post("/echo"), &b"foo-".repeat(10_000)).await;
    assert_eq!(under.status, 200, "{}", under.text());
    assert_eq!(under.body.len(), "rewritten:".len() + 40_000);
    let over = send(&ports, Request::post("/echo"), &b"foo-".repeat(50_000)).await;
    assert_eq!(over.status, 413, "{}\n{}", over.text(), weir.log_report());
    assert_eq!(over.text(), "payload too large\n");
    let echoed = up
        .tracker()
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/echo")
        .count();
    assert!(echoed <= 2, "{echoed}");
    // A response over the limit: the head went out, the body cannot complete.
    let req = Request::get("/large/200000")
        .header("host", "example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let cut = tokio::time::timeout(
        Duration::from_secs(20),
        client::h1_request(ports.http_addr(), req),
    )
    .await
    .expect("ended within 20 s");
    assert!(
        cut.is_err(),
        "a response past the limit must not arrive whole"
    );
    // weir goes on serving.
    let after = send(&ports, Request::post("/echo"), b"foo").await;
    assert_eq!(after.text(), "rewritten:BAR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_response_answers_without_the_upstream() {
    let (up, ports, _weir) = start("local_response", "", |_| {}).await;
    let denied = send(&ports, Request::get("/x").header("x-deny", "yes"), b"").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.text(), "denied by wasm");
    assert_eq!(denied.header("x-denied-by"), "wasm");
    assert_eq!(up.tracker().requests.lock().unwrap().len(), 0);
    // weir answers a closed stream with 503 (Envoy resets it).
    let closed = send(&ports, Request::get("/x").header("x-close", "yes"), b"").await;
    assert_eq!(closed.status, 503, "{}", closed.text());
    assert_eq!(up.tracker().requests.lock().unwrap().len(), 0);
    let allowed = send(&ports, Request::get("/x"), b"").await;
    assert_eq!(allowed.status, 200);
    assert_eq!(up.tracker().requests.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_callout_answers_resume_or_fail_the_request() {
    let auth = H1Upstream::start("auth").await;
    let auth_addr = auth.addr;
    let (up, ports, _weir) = start("http_call", "", |config| {
        config["static_resources"]["clusters"]
            .as_array_mut()
            .expect("clusters")
            .push(config::static_cluster("auth", &[auth_addr]));
    })
    .await;
    let ok = send(&ports, Request::get("/hello"), b"").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let seen = up.last_request("").expect("upstream saw it");
    assert_eq!(seen.values("x-auth"), ["auth"], "{seen:?}");
    let body_len: usize = seen.values("x-auth-body-len")[0].parse().expect("len");
    assert!(body_len > 10, "the callout body was read: {body_len}");
    assert_eq!(auth.tracker().requests.lock().unwrap().len(), 1);

    // Paused at the end of the body while the callout runs; the body is replaced in the VM
    // during the pause, then the request resumes.
    let big = b"body-".repeat(50_000);
    let checked = send(&ports, Request::post("/echo"), &big).await;
    assert_eq!(checked.status, 200, "{}", checked.text());
    assert_eq!(checked.body.len(), "checked:".len() + big.len());
    assert!(checked.body.starts_with(b"checked:body-body-"));

    let before = up.tracker().requests.lock().unwrap().len();
    let timed_out = send(&ports, Request::get("/slow/3000"), b"").await;
    assert_eq!(timed_out.status, 504, "{}", timed_out.text());
    assert_eq!(timed_out.text(), "callout failed");
    let dropped = send(&ports, Request::get("/drop"), b"").await;
    assert_eq!(dropped.status, 504, "{}", dropped.text());
    assert_eq!(up.tracker().requests.lock().unwrap().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_period_calls_on_tick() {
    let (_up, ports, _weir) = start("timers", "", |_| {}).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let resp = send(&ports, Request::get("/"), b"").await;
    let ticks: u64 = resp.header("x-ticks").parse().expect("x-ticks");
    assert!(ticks >= 5, "{ticks} ticks in 400 ms at 10 ms");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later: u64 = send(&ports, Request::get("/"), b"")
        .await
        .header("x-ticks")
        .parse()
        .expect("x-ticks");
    assert!(later > ticks, "{later} > {ticks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_data_counts_across_workers_and_queue_reaches_its_owner() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut config = config::simple(ports, &[up.addr]);
    set_filters(
        &mut config,
        vec![wasm_filter(
            "shared_data",
            &fixture("shared_data"),
            "",
            false,
        )],
    );
    let _weir = start_with_env(&config, 2, &[]).await;
    let mut last_paths = Vec::new();
    for i in 1..=20u64 {
        let resp = send(&ports, Request::get(format!("/p{i}")), b"").await;
        assert_eq!(resp.status, 200);
        let hits: u64 = resp.header("x-hits").parse().expect("x-hits");
        assert_eq!(hits, i, "one counter for both workers");
        last_paths.push(resp.header("x-last-path").to_string());
    }
    assert!(
        last_paths.iter().any(|p| p.starts_with("/p")),
        "on_queue_ready stored a dequeued path: {last_paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_defined_updated_and_exported() {
    let (_up, ports, weir) = start("metrics", "", |_| {}).await;
    for i in 1..=5 {
        let resp = send(&ports, Request::get("/"), b"").await;
        assert_eq!(resp.header("x-requests"), i.to_string());
    }
    let stats = weir.stats().await;
    assert_eq!(
        stats.get("weir_wasm_fixture_requests", &[]),
        Some(5.0),
        "{}",
        stats.text
    );
    assert_eq!(stats.get("weir_wasm_fixture_gauge", &[]), Some(42.0));
    assert_eq!(stats.get("weir_wasm_fixture_sizes_count", &[]), Some(5.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_runs_in_order_and_local_replies_pass_their_filter_and_those_before() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let config = replying_chain(ports, up.addr);
    let _weir = start_with_env(&config, 1, &[]).await;
    let denied = send(&ports, Request::get("/x").header("x-deny", "yes"), b"").await;
    assert_eq!(denied.status, 403);
    // What Envoy 1.40 does with the same modules and chain (compared in
    // `a_filters_local_reply_passes_the_response_callbacks_as_envoys`): the local reply of
    // the second filter goes back through its own response callbacks and the first one's;
    // the third one (which never saw the request) does not see it.
    assert_eq!(denied.header("x-wasm-response"), "403 403");
    assert_eq!(denied.header("x-local-response-saw"), "403");
    assert_eq!(denied.text(), "denied by wasm");
    assert_eq!(denied.header("content-length"), "14");
    assert_eq!(up.tracker().requests.lock().unwrap().len(), 0);
    // An upstream answer goes back through all three, in reverse order.
    let passed = send(&ports, Request::post("/echo"), b"foo").await;
    assert_eq!(passed.status, 200);
    assert_eq!(passed.header("x-wasm-config"), "first");
    assert_eq!(passed.header("x-local-response-saw"), "200");
    assert_eq!(passed.text(), "rewritten:BAR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_run_the_same_filters() {
    let (up, ports, _weir) = start("headers", "h2", |_| {}).await;
    let req = Request::get(format!("http://example.com:{}/over/h2", ports.http))
        .header("x-replace", "original")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        client::h2c_request(ports.http_addr(), req),
    )
    .await
    .expect("answered within 20 s")
    .expect("h2c exchange");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let props = resp.header("x-wasm-props").to_string();
    assert!(props.contains("|/over/h2|"), "{props}");
    assert!(props.contains("|HTTP/2|"), "{props}");
    let seen = up.last_request("").expect("upstream saw it");
    assert_eq!(seen.values("x-replace"), ["replaced"]);
    assert_eq!(seen.values("x-wasm-request"), ["GET /over/h2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_callout_to_an_unknown_cluster_is_refused_at_once() {
    let (up, ports, _weir) = start("http_call", "", |_| {}).await;
    let resp = send(&ports, Request::get("/x"), b"").await;
    // proxy_http_call answered BadArgument; the fixture replies 500 itself.
    assert_eq!(resp.status, 500, "{}", resp.text());
    assert_eq!(resp.text(), "dispatch failed");
    assert_eq!(up.tracker().requests.lock().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_paused_streams_each_resume_on_their_own_callout() {
    let auth = H1Upstream::start("auth").await;
    let auth_addr = auth.addr;
    let (up, ports, _weir) = start("http_call", "", |config| {
        config["static_resources"]["clusters"]
            .as_array_mut()
            .expect("clusters")
            .push(config::static_cluster("auth", &[auth_addr]));
    })
    .await;
    let requests = (0..20).map(|i| {
        async move {
            // Every other callout takes 100 ms, so the paused streams overlap.
            let path = if i % 2 == 0 {
                format!("/slow/100?i={i}")
            } else {
                format!("/fast?i={i}")
            };
            send(&ports, Request::get(path), b"").await
        }
    });
    let responses = futures_util::future::join_all(requests).await;
    for resp in &responses {
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let seen = up.tracker().requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 20);
    for request in &seen {
        assert_eq!(request.values("x-auth"), ["auth"], "{request:?}");
    }
}

/// `filters/fixtures/assemblyscript`: the npm SDK's root context picked by `plugin_root_id`,
/// its configuration read in `proxy_on_configure`, a header read and added each way, a local
/// reply with an extra header, and a counter, all as in Envoy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assemblyscript_module_on_the_npm_sdk_guards_paths() {
    let (up, ports, weir) = start_module(
        "path_guard",
        &assemblyscript_fixture(),
        "/admin, /private/",
        |_| {},
    )
    .await;
    for path in ["/admin", "/admin/users", "/private/x"] {
        let blocked = send(&ports, Request::get(path), b"").await;
        assert_eq!(blocked.status, 403, "{path}: {}", blocked.text());
        assert_eq!(blocked.header("x-path-guard"), "blocked", "{path}");
        assert_eq!(blocked.text(), "blocked by path-guard\n", "{path}");
    }
    assert!(up.requests().is_empty(), "nothing blocked went upstream");
    let passed = send(&ports, Request::get("/private"), b"").await;
    assert_eq!(
        passed.status,
        200,
        "{}\n{}",
        passed.text(),
        weir.log_report()
    );
    assert_eq!(passed.header("x-path-guard"), "passed");
    let seen = up.last_request("").expect("upstream saw it");
    assert_eq!(seen.values("x-path-guard"), ["passed"]);
    let stats = weir.stats().await;
    assert_eq!(
        stats.get("weir_wasm_path_guard_blocked", &[]),
        Some(3.0),
        "{}",
        stats.text
    );
}

/// `headers`, `local_response`, `body_rewrite` in that order before the router.
fn replying_chain(ports: Ports, up: std::net::SocketAddr) -> Value {
    let mut config = config::simple(ports, &[up]);
    set_filters(
        &mut config,
        vec![
            wasm_filter("headers", &fixture("headers"), "first", false),
            wasm_filter("local_response", &fixture("local_response"), "", false),
            wasm_filter("body_rewrite", &fixture("body_rewrite"), "", false),
        ],
    );
    config
}

/// What the client sees of a reply from `local_response`: status, the headers the filters
/// set on the way back, the body.
async fn reply_seen(ports: &Ports, deny: &str) -> String {
    let denied = send(ports, Request::get("/x").header("x-deny", deny), b"").await;
    let header = |name: &str| {
        denied
            .headers
            .get(name)
            .map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned())
    };
    format!(
        "{} x-wasm-response={} x-local-response-saw={} x-denied-by={} x-denied-again={} \
         content-length={} body={:?}",
        denied.status,
        header("x-wasm-response"),
        header("x-local-response-saw"),
        header("x-denied-by"),
        header("x-denied-again"),
        header("content-length"),
        denied.text()
    )
}

/// A Wasm filter's local reply goes back through the response callbacks as Envoy's does: the
/// filter that sent it sees it (`x-local-response-saw: 403`), as does the one before it
/// (`x-wasm-response`); the one after it, which never saw the request, does not (the body is
/// not rewritten). A second reply the filter makes from its response callback replaces the
/// first and passes no filter. The same modules and chain through Envoy 1.40 and weir give the
/// same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filters_local_reply_passes_the_response_callbacks_as_envoys() {
    use envoy_check::envoy::Envoy;
    let up = H1Upstream::start("up").await;
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let _weir = start_with_env(&replying_chain(weir_ports, up.addr), 1, &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy = Envoy::start_config(
        &replying_chain(envoy_ports, up.addr).to_string(),
        dir.path(),
    );
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for deny in ["yes", "twice"] {
        ours.push(reply_seen(&weir_ports, deny).await);
        theirs.push(reply_seen(&envoy_ports, deny).await);
    }
    drop(envoy);
    assert_eq!(ours, theirs, "weir (left) and Envoy (right)");
    assert_eq!(
        ours[0],
        "403 x-wasm-response=403 403 x-local-response-saw=403 x-denied-by=wasm \
         x-denied-again=- content-length=14 body=\"denied by wasm\""
    );
    // A second reply from the filter's response callback replaces the first and goes out
    // without passing any filter: no loop.
    assert_eq!(
        ours[1],
        "418 x-wasm-response=- x-local-response-saw=- x-denied-by=- x-denied-again=yes \
         content-length=12 body=\"denied again\""
    );
}
