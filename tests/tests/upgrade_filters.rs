//! The per-upgrade-type filter chain (`upgrade_configs[].filters`): a WebSocket upgrade runs
//! that chain alone, and ordinary requests run the default chain.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use weir_tests::config::{self, Ports};
use weir_tests::tunnel_client::{raw_head, ws_upgrade_request};
use weir_tests::wasm::{filter, set_filters, start_with_env, wasm_filter};
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
