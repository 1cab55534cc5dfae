//! The per-upgrade-type filter chain (`upgrade_configs[].filters`): a WebSocket upgrade runs
//! that chain alone, and ordinary requests run the default chain. The payload after the
//! switch goes through the chain's body callbacks where a filter reads bodies
//! (`websocket-guard`, the `body_rewrite` fixture), over HTTP/1.1 and across an HTTP/2 hop;
//! a chain of headers-only filters keeps the splice.

use bytes::Bytes;
use futures_util::SinkExt;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use weir_tests::config::{self, Ports};
use weir_tests::tcp_server::{Mode, TcpServer};
use weir_tests::tunnel_client::ws_upgrade_request;
use weir_tests::tunnel_client::{Ending, WsClient, raw_head, read_until_end, ws_connect};
use weir_tests::upgrade_app::UpgradeApp;
use weir_tests::wasm::{filter, fixture, set_filters, start_with_env, wasm_filter};
use weir_tests::ws_check::{
    assert_close_echoed, echo, echo_all, ends_without_echo, mixed_messages,
};
use weir_tests::ws_echo::WsEcho;
use weir_tests::{Weir, client};

/// A header-manipulation filter that sets `name: 1` on responses.
fn marker(name: &str) -> serde_json::Value {
    let configuration = format!(r#"{{"response": {{"set": {{"{name}": "1"}}}}}}"#);
    wasm_filter(
        "header_manipulation",
        &filter("header_manipulation"),
        &configuration,
        false,
    )
}

async fn start() -> (WsEcho, Ports, Weir) {
    let echo = WsEcho::start().await;
    let ports = Ports::new();
    let mut config = config::simple(ports, &[echo.addr]);
    set_filters(&mut config, vec![marker("x-default-chain")]);
    let router = json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": config::ROUTER_TYPE}
    });
    config::hcm_of(&mut config)["upgrade_configs"] = json!([{
        "upgrade_type": "websocket",
        "filters": [marker("x-websocket-chain"), router],
    }]);
    let weir = start_with_env(&config, 1, &[]).await;
    (echo, ports, weir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_runs_its_own_chain_and_not_the_default_one() {
    let (_echo, ports, weir) = start().await;
    let (_tcp, head) = raw_head(ports.http_addr(), &ws_upgrade_request("/ws"))
        .await
        .unwrap_or_else(|e| panic!("upgrade: {e}\n{}", weir.log_report()));
    assert_eq!(head.status, 101, "{}\n{}", head.text, weir.log_report());
    let text = head.text.to_ascii_lowercase();
    assert!(text.contains("x-websocket-chain: 1"), "{}", head.text);
    assert!(!text.contains("x-default-chain"), "{}", head.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_requests_run_the_default_chain() {
    let (_echo, ports, weir) = start().await;
    let req = Request::get("/plain")
        .header("host", "example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client::h1_request(ports.http_addr(), req)
        .await
        .unwrap_or_else(|e| panic!("GET: {e}\n{}", weir.log_report()));
    assert_eq!(resp.header("x-default-chain"), "1");
    assert!(resp.headers.get("x-websocket-chain").is_none());
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": config::ROUTER_TYPE}
    })
}

/// `websocket-guard` with `configuration` (JSON).
fn guard(configuration: &str) -> Value {
    wasm_filter(
        "websocket_guard",
        &filter("websocket_guard"),
        configuration,
        false,
    )
}

/// `config`'s HCM with `filters` (then the router) as the chain of upgrade type `upgrade_type`.
fn set_upgrade_chain(config: &mut Value, upgrade_type: &str, filters: Vec<Value>) {
    let mut chain = filters;
    chain.push(router());
    config::hcm_of(config)["upgrade_configs"] = json!([{
        "upgrade_type": upgrade_type,
        "filters": chain,
    }]);
}

/// One weir (HTTP/1.1 downstream) -> `app`, the websocket chain `filters`.
async fn start_ws(app: SocketAddr, filters: Vec<Value>) -> (Ports, Weir) {
    let ports = Ports::new();
    let mut config = config::simple(ports, &[app]);
    set_upgrade_chain(&mut config, "websocket", filters);
    let weir = start_with_env(&config, 1, &[]).await;
    (ports, weir)
}

/// client -H1-> A -H2-> B -H1-> `app`, the websocket chains `a_filters` on A and `b_filters`
/// on B. Returns (A, B, A's address).
async fn start_ws_chain(
    app: SocketAddr,
    a_filters: Vec<Value>,
    b_filters: Vec<Value>,
) -> (Weir, Weir, SocketAddr) {
    let pb = Ports::new();
    let mut cfg_b = config::simple(pb, &[app]);
    set_upgrade_chain(&mut cfg_b, "websocket", b_filters);
    config::allow_connect_downstream(config::hcm_of(&mut cfg_b));
    let b = start_with_env(&cfg_b, 1, &[]).await;
    let pa = Ports::new();
    let mut cfg_a = config::simple(pa, &[pb.http_addr()]);
    set_upgrade_chain(&mut cfg_a, "websocket", a_filters);
    config::upstream_http2_allow_connect(config::cluster_of(&mut cfg_a, 0));
    let a = start_with_env(&cfg_a, 1, &[]).await;
    (a, b, pa.http_addr())
}

const SPLICES: &str = "weir_accel_splices_total";

/// `weir_accel_splices_total{mode}` of `weir`, waited for (up to 10 s) to reach `want`.
async fn splices_until(weir: &Weir, mode: &str, want: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = weir.stat(SPLICES, &[("mode", mode)]).await;
        if value >= want || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `count` messages, each echoed intact, then one more, after which the connection
/// must end without that message's echo.
async fn assert_closed_after(ws: &mut WsClient, count: usize, weir: &Weir) {
    for i in 0..count {
        let msg = Message::binary(weir_tests::random_bytes(i as u64, 100 + i * 1000));
        echo(ws, msg)
            .await
            .unwrap_or_else(|e| panic!("message {}: {e}\n{}", i + 1, weir.log_report()));
    }
    ws.send(Message::text("one too many"))
        .await
        .unwrap_or_else(|e| panic!("send message {}: {e}", count + 1));
    if let Err(e) = ends_without_echo(ws).await {
        panic!("{e}\n{}", weir.log_report());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_guard_closes_after_the_limit_and_earlier_messages_arrive_intact() {
    let app = WsEcho::start().await;
    let (ports, weir) = start_ws(app.addr, vec![guard(r#"{"max_client_messages": 3}"#)]).await;
    let mut ws = ws_connect(ports.http_addr(), "/ws")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log_report()));
    assert_closed_after(&mut ws, 3, &weir).await;
    assert_eq!(app.messages(), 3, "the 4th message must not reach the app");
    assert_eq!(splices_until(&weir, "filtered", 1.0).await, 1.0);
    let stats = weir.stats().await;
    let metric = |name: &str| stats.get(name, &[]).unwrap_or(0.0);
    // The message over the limit is refused, not counted.
    assert_eq!(metric("weir_wasm_websocket_guard_client_messages"), 3.0);
    assert_eq!(metric("weir_wasm_websocket_guard_violations"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_guard_closes_on_a_frame_over_its_size_limit() {
    let app = WsEcho::start().await;
    let (ports, weir) = start_ws(app.addr, vec![guard(r#"{"max_frame_payload": 1024}"#)]).await;
    let mut ws = ws_connect(ports.http_addr(), "/ws")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log_report()));
    echo(&mut ws, Message::binary(vec![7u8; 1024]))
        .await
        .unwrap_or_else(|e| panic!("a frame at the limit: {e}\n{}", weir.log_report()));
    ws.send(Message::binary(vec![8u8; 1025]))
        .await
        .expect("send the frame over the limit");
    if let Err(e) = ends_without_echo(&mut ws).await {
        panic!("{e}\n{}", weir.log_report());
    }
    assert_eq!(
        app.messages(),
        1,
        "the frame over the limit must not reach the app"
    );
    let violations = weir.stat("weir_wasm_websocket_guard_violations", &[]).await;
    assert_eq!(violations, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_guard_closes_across_an_h2_hop() {
    let app = WsEcho::start().await;
    // A (HTTP/2 upstream) enforces the limit; B (HTTP/2 extended CONNECT downstream) only
    // counts, so its payload goes through its filter too.
    let (a, b, addr) = start_ws_chain(
        app.addr,
        vec![guard(r#"{"max_client_messages": 2}"#)],
        vec![guard("{}")],
    )
    .await;
    let mut ws = ws_connect(addr, "/ws")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_report(), b.log_report()));
    assert_closed_after(&mut ws, 2, &a).await;
    assert_eq!(app.messages(), 2, "the 3rd message must not reach the app");
    assert_eq!(splices_until(&a, "filtered", 1.0).await, 1.0);
    assert_eq!(splices_until(&b, "filtered", 1.0).await, 1.0);
    let counted = b
        .stat("weir_wasm_websocket_guard_client_messages", &[])
        .await;
    assert_eq!(
        counted, 2.0,
        "B's guard saw the messages that crossed the hop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_mixed_messages_through_payload_filters_across_an_h2_hop() {
    let app = WsEcho::start().await;
    let (a, b, addr) = start_ws_chain(app.addr, vec![guard("{}")], vec![guard("{}")]).await;
    let mut ws = ws_connect(addr, "/ws")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_report(), b.log_report()));
    let (total, took) = match echo_all(&mut ws, mixed_messages(8), Duration::from_secs(300)).await {
        Ok(done) => done,
        Err(e) => panic!("{e}\n{}\n{}", a.log_report(), b.log_report()),
    };
    eprintln!(
        "1,000 messages, {total} bytes each way, through a payload filter on both weirs, in {:?}",
        took
    );
    assert_eq!(app.messages(), 1000);
    assert_close_echoed(&mut ws, 4000, "done").await;
    for weir in [&a, &b] {
        assert_eq!(splices_until(weir, "filtered", 1.0).await, 1.0);
        let stats = weir.stats().await;
        let metric = |name: &str| stats.get(name, &[]).unwrap_or(0.0);
        assert_eq!(metric("weir_wasm_websocket_guard_client_messages"), 1000.0);
        assert_eq!(metric("weir_wasm_websocket_guard_server_messages"), 1000.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headers_only_chain_keeps_the_splice() {
    let app = WsEcho::start().await;
    let (ports, weir) = start_ws(app.addr, vec![marker("x-websocket-chain")]).await;
    let mut ws = ws_connect(ports.http_addr(), "/ws")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log_report()));
    echo(&mut ws, Message::text("hello"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log_report()));
    assert_close_echoed(&mut ws, 1000, "bye").await;
    drop(ws);
    // A proxied HTTP/1.1 upgrade is copied in user space (not spliced in the kernel): that
    // path ran, and the filtered one did not.
    assert!(splices_until(&weir, "userspace", 1.0).await >= 1.0);
    assert_eq!(weir.stat(SPLICES, &[("mode", "filtered")]).await, 0.0);
}

/// A raw upgrade to `protocol` on a fresh connection to `addr`; the connection after the 101.
async fn raw_upgrade(addr: SocketAddr, protocol: &str, weir: &Weir) -> tokio::net::TcpStream {
    let request = format!(
        "GET /raw HTTP/1.1\r\nhost: app.test\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
    );
    let (tcp, head) = raw_head(addr, request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("upgrade: {e}\n{}", weir.log_report()));
    assert_eq!(head.status, 101, "{}\n{}", head.text, weir.log_report());
    assert!(head.rest.is_empty(), "nothing before the client's payload");
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_rewriting_filter_changes_upgraded_bytes_both_ways() {
    // The fixture buffers each direction to its end (Pause until end_of_stream), then rewrites
    // the request (`foo` -> `bar`) and the response (uppercased, `rewritten:` before it). The
    // app echoes until the client's FIN, then closes.
    let app = UpgradeApp::start().await;
    let ports = Ports::new();
    let mut config = config::simple(ports, &[app.addr]);
    let rewrite = wasm_filter("body_rewrite", &fixture("body_rewrite"), "", false);
    set_upgrade_chain(&mut config, "x-echo", vec![rewrite]);
    let weir = start_with_env(&config, 1, &[]).await;
    let mut tcp = raw_upgrade(ports.http_addr(), "x-echo", &weir).await;
    tcp.write_all(b"food for ").await.expect("write");
    tcp.write_all(b"foo fighters").await.expect("write");
    tcp.shutdown().await.expect("half-close");
    let (ending, bytes) = read_until_end(&mut tcp, Duration::from_secs(20)).await;
    assert_eq!(ending, Ending::Eof, "{}", weir.log_report());
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        "rewritten:BARD FOR BAR FIGHTERS",
        "{}",
        weir.log_report()
    );
    assert_eq!(splices_until(&weir, "filtered", 1.0).await, 1.0);
}

/// One weir taking CONNECT on an HTTP/1.1 listener to `backend`: terminated there when
/// `terminate`, else proxied; `filters` (then the router), if any, as the CONNECT chain.
fn connect_weir(
    backend: SocketAddr,
    terminate: bool,
    filters: Option<Vec<Value>>,
) -> (Ports, Value) {
    let ports = Ports::new();
    let upgrade = terminate.then(|| config::terminate_connect(false));
    let route = config::route_connect("backend", upgrade);
    let mut hcm = config::hcm(
        "ingress_http",
        vec![config::vhost("v", &["*"], vec![route])],
    );
    hcm["codec_type"] = json!("HTTP1");
    hcm["upgrade_configs"] = match filters {
        Some(mut chain) => {
            chain.push(router());
            json!([{"upgrade_type": "CONNECT", "filters": chain}])
        }
        None => json!([{"upgrade_type": "CONNECT"}]),
    };
    let config = config::bootstrap(
        ports.admin,
        vec![config::listener("ingress", ports.http, hcm)],
        vec![config::static_cluster("backend", &[backend])],
    );
    (ports, config)
}

/// CONNECTs through `proxy`, sends `payload`, half-closes, and returns what came back
/// before the end (which must be a FIN).
async fn connect_exchange(proxy: SocketAddr, payload: &[u8], weirs: &[&Weir]) -> String {
    let logs = || {
        weirs
            .iter()
            .map(|w| w.log_report())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let request = b"CONNECT target.example:8080 HTTP/1.1\r\nhost: target.example:8080\r\n\r\n";
    let (mut tcp, head) = raw_head(proxy, request)
        .await
        .unwrap_or_else(|e| panic!("CONNECT: {e}\n{}", logs()));
    assert_eq!(head.status, 200, "{}\n{}", head.text, logs());
    tcp.write_all(payload).await.expect("write");
    tcp.shutdown().await.expect("half-close");
    let (ending, bytes) = read_until_end(&mut tcp, Duration::from_secs(20)).await;
    assert_eq!(ending, Ending::Eof, "{}", logs());
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_connect_payload_goes_through_the_connect_chain() {
    let target = TcpServer::start(Mode::Echo).await;
    let rewrite = wasm_filter("body_rewrite", &fixture("body_rewrite"), "", false);
    let (ports, config) = connect_weir(target.addr, true, Some(vec![rewrite]));
    let weir = start_with_env(&config, 1, &[]).await;
    let back = connect_exchange(ports.http_addr(), b"foo foo", &[&weir]).await;
    assert_eq!(back, "rewritten:BAR BAR");
    assert_eq!(
        target.bytes_received(),
        7,
        "the target got the rewritten request bytes"
    );
    // Never spliced, in the kernel or otherwise: the filters had every byte.
    assert_eq!(splices_until(&weir, "filtered", 1.0).await, 1.0);
    assert_eq!(weir.stat(SPLICES, &[("mode", "kernel")]).await, 0.0);
    assert_eq!(weir.stat(SPLICES, &[("mode", "userspace")]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_connect_payload_goes_through_the_connect_chain() {
    // client -> A (proxies the CONNECT over HTTP/2, the rewriting filter on its CONNECT
    // chain) -> B (terminates, no filter) -> echo.
    let target = TcpServer::start(Mode::Echo).await;
    let (pb, mut cfg_b) = connect_weir(target.addr, true, None);
    config::hcm_of(&mut cfg_b)["codec_type"] = json!("AUTO");
    let b = start_with_env(&cfg_b, 1, &[]).await;
    let rewrite = wasm_filter("body_rewrite", &fixture("body_rewrite"), "", false);
    let (pa, mut cfg_a) = connect_weir(pb.http_addr(), false, Some(vec![rewrite]));
    config::upstream_http2(config::cluster_of(&mut cfg_a, 0), None);
    let a = start_with_env(&cfg_a, 1, &[]).await;
    let back = connect_exchange(pa.http_addr(), b"a foo here", &[&a, &b]).await;
    assert_eq!(back, "rewritten:A BAR HERE");
    assert_eq!(splices_until(&a, "filtered", 1.0).await, 1.0);
    assert_eq!(
        b.stat(SPLICES, &[("mode", "filtered")]).await,
        0.0,
        "B has no filter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_crosses_a_filtered_tunnel_as_a_reset() {
    // The guard reads bodies (so the payload goes through it) and passes anything that is not
    // a WebSocket as it is; the target resets the connection after the first byte.
    let target = TcpServer::start(Mode::ResetAfterFirstByte).await;
    let (ports, config) = connect_weir(target.addr, true, Some(vec![guard("{}")]));
    let weir = start_with_env(&config, 1, &[]).await;
    let request = b"CONNECT target.example:8080 HTTP/1.1\r\nhost: target.example:8080\r\n\r\n";
    let (mut tcp, head) = raw_head(ports.http_addr(), request)
        .await
        .unwrap_or_else(|e| panic!("CONNECT: {e}\n{}", weir.log_report()));
    assert_eq!(head.status, 200, "{}\n{}", head.text, weir.log_report());
    tcp.write_all(b"x").await.expect("write");
    let (ending, _) = read_until_end(&mut tcp, Duration::from_secs(20)).await;
    assert_eq!(
        ending,
        Ending::Error(std::io::ErrorKind::ConnectionReset),
        "{}",
        weir.log_report()
    );
    assert_eq!(splices_until(&weir, "filtered", 1.0).await, 1.0);
}
