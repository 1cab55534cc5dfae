//! Extended CONNECT over HTTP/3 (RFC 9220): WebSocket across an HTTP/3 hop (client -H1->
//! weir A -H3-> weir B -H1-> app), an HTTP/3 client's extended CONNECT straight to weir, a
//! listener without `allow_extended_connect` refusing it, a non-WebSocket upgrade sent with
//! POST arriving as POST, a peer without SETTINGS_ENABLE_CONNECT_PROTOCOL, and bad CONNECTs.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;
use weir_tests::config::{self, Ports};
use weir_tests::h3::{H3Client, H3ConnectStream};
use weir_tests::tcp_server::{Mode, TcpServer};
use weir_tests::tunnel_client::{self, ws_connect};
use weir_tests::upgrade_app::UpgradeApp;
use weir_tests::ws_check::{
    assert_close_echoed, assert_ping_pong, echo, echo_all, ends_without_echo, mixed_messages,
};
use weir_tests::ws_echo::WsEcho;
use weir_tests::{Rng, Weir};

const INGRESS: [(&str, &str); 1] = [("stat_prefix", "ingress_http")];

/// A config with a TCP listener and a QUIC listener on the same port number in front of
/// `app` (HTTP/1.1), both with `upgrades`; the QUIC one with `allow_extended_connect`.
fn quic_front(
    ports: Ports,
    app: SocketAddr,
    upgrades: Value,
    allow_extended_connect: bool,
    tls: &weir_tests::tls::TlsFiles,
) -> Value {
    let mut cfg = config::simple(ports, &[app]);
    config::set_upgrades(config::hcm_of(&mut cfg), upgrades);
    let hcm = config::hcm_of(&mut cfg).clone();
    let mut quic = config::quic_listener("quic", ports.http, hcm, &tls.cert, &tls.key);
    quic["filter_chains"][0]["filters"][0]["typed_config"]["http3_protocol_options"] =
        json!({"allow_extended_connect": allow_extended_connect});
    cfg["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners")
        .push(quic);
    cfg
}

/// weir B: QUIC (and TCP) in front of `app`; weir A: HTTP/1.1 in front of B over HTTP/3,
/// trusting B's certificate. Returns (A, B, A's address, the directory of B's certificate).
async fn start_chain(
    app: SocketAddr,
    upgrades: Value,
    b_allows_extended_connect: bool,
) -> (Weir, Weir, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let pb = Ports::new();
    let cfg_b = quic_front(pb, app, upgrades.clone(), b_allows_extended_connect, &tls);
    let b = Weir::start(&cfg_b).await;

    let pa = Ports::new();
    let mut cfg_a = config::simple(pa, &[pb.http_addr()]);
    config::set_upgrades(config::hcm_of(&mut cfg_a), upgrades);
    let cluster = config::cluster_of(&mut cfg_a, 0);
    config::upstream_http3(cluster, None);
    cluster["transport_socket"]["typed_config"]["upstream_tls_context"]["common_tls_context"] = json!({
        "validation_context": {"trusted_ca": {"filename": tls.cert.to_str().expect("utf-8")}}
    });
    let a = Weir::start(&cfg_a).await;
    (a, b, pa.http_addr(), dir)
}

/// The A -> B hop was HTTP/3: B saw one HTTP/3 connection and no TCP one.
async fn assert_h3_hop(b: &Weir) {
    assert_eq!(
        b.stat("weir_http_downstream_cx_http3_total", &INGRESS)
            .await,
        1.0,
        "B must have been reached over HTTP/3\n{}",
        b.log_report()
    );
    assert_eq!(
        b.stat("weir_http_downstream_cx_http1_total", &INGRESS)
            .await,
        0.0,
        "B must not have been reached over HTTP/1.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_h1_h3_h1() {
    let app = WsEcho::start().await;
    let (a, b, addr, _dir) =
        start_chain(app.addr, json!([{"upgrade_type": "websocket"}]), true).await;
    let mut ws = ws_connect(addr, "/chat?room=3").await.unwrap_or_else(|e| {
        panic!(
            "handshake through A and B: {e}\n{}\n{}",
            a.log_report(),
            b.log_report()
        )
    });

    let (total, took) =
        match echo_all(&mut ws, mixed_messages(9220), Duration::from_secs(240)).await {
            Ok(done) => done,
            Err(e) => panic!("{e}\n{}\n{}", a.log_report(), b.log_report()),
        };
    eprintln!(
        "1,000 messages, {total} bytes each way over an HTTP/3 hop, in {:?}",
        took
    );
    assert_eq!(app.messages(), 1000, "the echo server's message count");

    // Ping -> pong with the same payload (answered by the app, end to end).
    assert_ping_pong(&mut ws, b"still there?").await;

    // Close with an application code: the app sees it, and its echo comes back.
    assert_close_echoed(&mut ws, 4001, "over h3").await;
    assert_eq!(app.closes(), vec![(4001, "over h3".to_owned())]);

    let hs = app.handshakes();
    assert_eq!(hs.len(), 1, "one handshake at the app: {hs:?}");
    assert_eq!(hs[0].method, "GET");
    assert_eq!(hs[0].path, "/chat?room=3");
    assert_h3_hop(&b).await;
    assert_eq!(
        b.stat("weir_http_downstream_cx_upgrades_total", &INGRESS)
            .await,
        1.0,
        "B counted the upgrade"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_upgrade_arrives_as_post_after_h3_hop() {
    let app = UpgradeApp::start().await;
    let (a, b, addr, _dir) =
        start_chain(app.addr, json!([{"upgrade_type": "my-proto"}]), true).await;
    let request = b"POST /switch HTTP/1.1\r\nhost: app.test\r\nconnection: upgrade\r\n\
                    upgrade: my-proto\r\n\r\n";
    let (tcp, head) = tunnel_client::raw_head(addr, request)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_report(), b.log_report()));
    assert_eq!(head.status, 101, "{}\n{}", head.text, a.log_report());
    assert!(
        head.text.to_ascii_lowercase().contains("upgrade: my-proto"),
        "101 without `upgrade: my-proto`: {}",
        head.text
    );

    // 256 KiB each way, concurrently, then half-close: the echo comes back whole.
    if let Err(e) = tunnel_client::echo_half_closed(tcp, 3, 256 << 10).await {
        panic!("{e}\n{}", b.log_report());
    }

    let heads = app.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(
        heads[0].method, "POST",
        "the method is restored after the h3 hop"
    );
    assert_eq!(heads[0].header("upgrade"), Some("my-proto"));
    assert_eq!(
        heads[0].header("x-weir-upgrade-method"),
        None,
        "the carrier header does not reach the app"
    );
    assert_h3_hop(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_extended_connect_gets_a_503_and_the_log_says_why() {
    let app = WsEcho::start().await;
    let (a, _b, addr, _dir) =
        start_chain(app.addr, json!([{"upgrade_type": "websocket"}]), false).await;
    let (mut tcp, head) = tunnel_client::raw_head(addr, &tunnel_client::ws_upgrade_request("/ws"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", a.log_report()));
    assert_eq!(head.status, 503, "{}", head.text);
    let mut body = head.rest.clone();
    let more = async {
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&body).contains("reset reason") {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), more).await;
    let body = String::from_utf8_lossy(&body);
    // The client gets Envoy's fixed text; why (the peer lacks the setting) is the operator's,
    // in the log.
    assert!(
        !body.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"),
        "a local reply tells nothing of the inside: {body}"
    );
    assert!(
        a.log().contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"),
        "the log names the reason\n{}",
        a.log_report()
    );
    assert_eq!(app.accepted(), 0, "nothing reached the app");
}

/// A weir with a QUIC listener in front of an [`UpgradeApp`], and an HTTP/3 client to it.
async fn direct(
    allow_extended_connect: bool,
    upgrades: Value,
) -> (Weir, H3Client, UpgradeApp, tempfile::TempDir) {
    let app = UpgradeApp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let ports = Ports::new();
    let mut cfg = quic_front(ports, app.addr, upgrades, allow_extended_connect, &tls);
    // `/after` is answered by weir itself: it shows the connection still serves requests.
    for listener in cfg["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners")
    {
        let hcm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
        hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array_mut()
            .expect("routes")
            .insert(0, config::direct("/after", 200, "still here"));
    }
    let weir = Weir::start(&cfg).await;
    let client = H3Client::connect(ports.http_addr(), "localhost", &tls.cert_der)
        .await
        .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", weir.log_report()));
    (weir, client, app, dir)
}

fn extended_connect(protocol: &str, path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "CONNECT".into()),
        (":protocol", protocol.into()),
        (":scheme", "https".into()),
        (":authority", "localhost".into()),
        (":path", path.into()),
        ("sec-websocket-version", "13".into()),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
    ]
}

fn fields<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_extended_connect_reaches_an_h1_upgrade() {
    let (weir, client, app, _dir) = direct(true, json!([{"upgrade_type": "websocket"}])).await;
    assert!(
        client
            .extended_connect_enabled(Duration::from_secs(5))
            .await,
        "the listener advertises SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    let head = extended_connect("websocket", "/live?x=1");
    let mut stream = client
        .connect_stream(&fields(&head))
        .await
        .unwrap_or_else(|e| panic!("extended CONNECT: {e}\n{}", weir.log_report()));
    assert_eq!(
        stream.status,
        200,
        "{:?}\n{}",
        stream.headers,
        weir.log_report()
    );

    // 200 KiB in DATA frames of mixed sizes; the app echoes every byte.
    let sent = weir_tests::random_bytes(17, 200 << 10);
    let mut rng = Rng::new(5);
    let mut at = 0;
    while at < sent.len() {
        let n = rng.range(1, 16 << 10).min(sent.len() - at);
        stream.send(&sent[at..at + n]).await.expect("send DATA");
        at += n;
    }
    let back = stream.read_exact(sent.len()).await.expect("echo back");
    assert!(
        back == sent,
        "echoed payload differs ({} bytes back)",
        back.len()
    );
    stream.finish().expect("FIN");
    let rest = stream.read_exact(1).await.expect("end of stream");
    assert!(rest.is_empty(), "nothing after the echo: {rest:?}");

    let heads = app.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(
        heads[0].method, "GET",
        "an extended CONNECT becomes GET + Upgrade"
    );
    assert_eq!(heads[0].target, "/live?x=1");
    assert_eq!(heads[0].header("upgrade"), Some("websocket"));
    assert_eq!(heads[0].header("sec-websocket-version"), Some("13"));

    // Bad :protocol: 400, and the connection's other streams carry on.
    let bad = extended_connect("web socket", "/ws");
    let refused = client
        .connect_stream(&fields(&bad))
        .await
        .expect("a response to a malformed :protocol");
    assert_eq!(refused.status, 400);
    let ok = client
        .get("/after")
        .await
        .expect("GET after the bad CONNECT");
    assert_eq!(ok.status, 200);
    assert_eq!(&ok.body[..], b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_connect_is_refused_without_allow_extended_connect() {
    let (weir, client, app, _dir) = direct(false, json!([{"upgrade_type": "websocket"}])).await;
    assert!(
        !client
            .extended_connect_enabled(Duration::from_millis(500))
            .await,
        "SETTINGS_ENABLE_CONNECT_PROTOCOL must not be sent"
    );
    let head = extended_connect("websocket", "/ws");
    let refused = client.connect_stream(&fields(&head)).await;
    assert!(
        refused.is_err(),
        "the stream must be rejected, got status {:?}",
        refused.map(|s| s.status).ok()
    );
    assert!(app.heads().is_empty(), "nothing reached the app");
    let ok = client
        .get("/after")
        .await
        .unwrap_or_else(|e| panic!("the connection carries on: {e}\n{}", weir.log_report()));
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_connect_over_h3_is_403_unless_enabled() {
    let (_weir, client, app, _dir) = direct(true, json!([{"upgrade_type": "websocket"}])).await;
    let connect = [(":method", "CONNECT"), (":authority", "127.0.0.1:9")];
    let stream = client
        .connect_stream(&connect)
        .await
        .expect("a response to CONNECT");
    assert_eq!(stream.status, 403);
    assert!(app.heads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_connect_over_h3_terminates_to_tcp() {
    let echo = TcpServer::start(Mode::Echo).await;
    let (_weir, _client, mut stream, _dir) = h3_terminating(echo.addr).await;
    // Our FIN reaches the TCP server, whose FIN ends the stream.
    let sent = weir_tests::random_bytes(21, 100 << 10);
    stream.echo_then_close(&sent, 7000).await;
}

/// A TCP reset of the target ends the CONNECT stream with H3_CONNECT_ERROR (RFC 9114 section
/// 4.4), not a FIN: the client can tell a broken tunnel from a finished one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_connect_over_h3_carries_a_target_reset_as_h3_connect_error() {
    let target = TcpServer::start(Mode::ResetAfterFirstByte).await;
    let (weir, client, mut stream, _dir) = h3_terminating(target.addr).await;
    stream.send(b"x").await.expect("send DATA");
    let ended = stream.reset_code().await;
    assert_eq!(
        ended,
        Ok(Some(h3::error::Code::H3_CONNECT_ERROR.value())),
        "the stream must be reset with H3_CONNECT_ERROR\n{}",
        weir.log_report()
    );
    let ok = client
        .get("/after")
        .await
        .unwrap_or_else(|e| panic!("the connection carries on: {e}\n{}", weir.log_report()));
    assert_eq!(ok.status, 404, "{}", weir.log_report());
}

/// weir on HTTP/3 terminating CONNECT to `target` over TCP, an HTTP/3 client of it, and a
/// CONNECT stream that client opened (answered 200).
async fn h3_terminating(
    target: std::net::SocketAddr,
) -> (Weir, H3Client, H3ConnectStream, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let ports = Ports::new();
    let mut cfg = quic_front(
        ports,
        target,
        json!([{"upgrade_type": "CONNECT"}]),
        false,
        &tls,
    );
    for listener in cfg["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners")
    {
        let hcm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
        hcm["route_config"]["virtual_hosts"][0]["routes"] = json!([config::route_connect(
            "backend",
            Some(config::terminate_connect(false))
        )]);
    }
    let weir = Weir::start(&cfg).await;
    let client = H3Client::connect(ports.http_addr(), "localhost", &tls.cert_der)
        .await
        .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", weir.log_report()));
    let connect = [(":method", "CONNECT"), (":authority", "db.test:5432")];
    let stream = client
        .connect_stream(&connect)
        .await
        .unwrap_or_else(|e| panic!("CONNECT: {e}\n{}", weir.log_report()));
    assert_eq!(stream.status, 200, "{}", weir.log_report());
    (weir, client, stream, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_connect_crosses_two_h3_hops() {
    let app = UpgradeApp::start().await;
    let upgrades = json!([{"upgrade_type": "my-proto"}]);
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let pb = Ports::new();
    let b = Weir::start(&quic_front(pb, app.addr, upgrades.clone(), true, &tls)).await;
    let pa = Ports::new();
    let mut cfg_a = quic_front(pa, pb.http_addr(), upgrades, true, &tls);
    let cluster = config::cluster_of(&mut cfg_a, 0);
    config::upstream_http3(cluster, None);
    cluster["transport_socket"]["typed_config"]["upstream_tls_context"]["common_tls_context"] = json!({
        "validation_context": {"trusted_ca": {"filename": tls.cert.to_str().expect("utf-8")}}
    });
    let a = Weir::start(&cfg_a).await;

    // client -H3-> A -H3-> B -H1-> app
    let client = H3Client::connect(pa.http_addr(), "localhost", &tls.cert_der)
        .await
        .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", a.log_report()));
    assert!(
        client
            .extended_connect_enabled(Duration::from_secs(5))
            .await
    );
    let head = extended_connect("my-proto", "/two/hops");
    let mut stream = client
        .connect_stream(&fields(&head))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_report(), b.log_report()));
    assert_eq!(stream.status, 200, "{}\n{}", a.log_report(), b.log_report());
    let sent = weir_tests::random_bytes(33, 300 << 10);
    stream.echo_then_close(&sent, 10_000).await;

    let heads = app.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(heads[0].method, "GET");
    assert_eq!(heads[0].target, "/two/hops");
    assert_eq!(heads[0].header("upgrade"), Some("my-proto"));
    assert_h3_hop(&b).await;
}

/// The payload of the extended CONNECT goes through a filter that reads bodies on both sides
/// of the HTTP/3 hop (A's upstream leg, B's downstream leg): `websocket-guard` with a limit of
/// two client messages on both. A stops the third; B's guard saw the two that crossed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_payload_goes_through_the_filters_across_an_h3_hop() {
    use futures_util::SinkExt;
    use weir_tests::wasm::{filter, wasm_filter};
    let app = WsEcho::start().await;
    let guard = wasm_filter(
        "websocket_guard",
        &filter("websocket_guard"),
        r#"{"max_client_messages": 2}"#,
        false,
    );
    let router = json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": config::ROUTER_TYPE}
    });
    let upgrades = json!([{"upgrade_type": "websocket", "filters": [guard, router]}]);
    let (a, b, addr, _dir) = start_chain(app.addr, upgrades, true).await;
    let mut ws = ws_connect(addr, "/ws")
        .await
        .unwrap_or_else(|e| panic!("handshake: {e}\n{}\n{}", a.log_report(), b.log_report()));
    for i in 0..2u64 {
        let msg = Message::binary(weir_tests::random_bytes(i, 3000));
        echo(&mut ws, msg)
            .await
            .unwrap_or_else(|e| panic!("message {i}: {e}\n{}", b.log_report()));
    }
    ws.send(Message::text("one too many")).await.expect("send");
    if let Err(e) = ends_without_echo(&mut ws).await {
        panic!(
            "the connection must end without an echo: {e}\n{}",
            a.log_report()
        );
    }
    assert_eq!(
        app.messages(),
        2,
        "the third message must not reach the app"
    );
    assert_h3_hop(&b).await;
    let filtered = [("mode", "filtered")];
    let client_messages = "weir_wasm_websocket_guard_client_messages";
    assert_eq!(a.stat("weir_accel_splices_total", &filtered).await, 1.0);
    assert_eq!(b.stat("weir_accel_splices_total", &filtered).await, 1.0);
    assert_eq!(a.stat(client_messages, &[]).await, 2.0, "A's guard");
    assert_eq!(
        b.stat(client_messages, &[]).await,
        2.0,
        "B's guard, over HTTP/3"
    );
}
