//! HTTP upgrades: WebSocket across an HTTP/2 hop (client -H1-> weir A -H2-> weir B -H1->
//! app), the enable table, a non-WebSocket upgrade sent with POST, the upgrade counters, and
//! bad upgrade requests. The per-upgrade-type filter chain (`upgrade_configs[].filters`) is
//! in upgrade_filters.rs.

use futures_util::StreamExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::tunnel_client::{self, ws_connect, ws_upgrade_request};
use weir_tests::upgrade_app::UpgradeApp;
use weir_tests::ws_check::{assert_close_echoed, assert_ping_pong, echo, echo_all, mixed_messages};
use weir_tests::ws_echo::WsEcho;
use weir_tests::{H1Upstream, Weir};

const INGRESS: [(&str, &str); 1] = [("stat_prefix", "ingress_http")];

/// weir B (HTTP/1.1 or HTTP/2 downstream with allow_connect) -> `app` over HTTP/1.1, and
/// weir A (HTTP/1.1 downstream) -> B over HTTP/2 with allow_connect; both with `upgrades` as
/// the HCM's `upgrade_configs`. Returns (A, B, A's address).
async fn start_chain(app: SocketAddr, upgrades: Value) -> (Weir, Weir, SocketAddr) {
    let pb = Ports::new();
    let mut cfg_b = config::simple(pb, &[app]);
    config::set_upgrades(config::hcm_of(&mut cfg_b), upgrades.clone());
    config::allow_connect_downstream(config::hcm_of(&mut cfg_b));
    let b = Weir::start(&cfg_b).await;

    let pa = Ports::new();
    let mut cfg_a = config::simple(pa, &[pb.http_addr()]);
    config::set_upgrades(config::hcm_of(&mut cfg_a), upgrades);
    config::upstream_http2_allow_connect(config::cluster_of(&mut cfg_a, 0));
    let a = Weir::start(&cfg_a).await;
    (a, b, pa.http_addr())
}

/// The A -> B hop was HTTP/2: B saw one HTTP/2 connection and no HTTP/1.1 one.
async fn assert_h2_hop(b: &Weir) {
    assert_eq!(
        b.stat("weir_http_downstream_cx_http2_total", &INGRESS)
            .await,
        1.0,
        "B must have been reached over HTTP/2"
    );
    assert_eq!(
        b.stat("weir_http_downstream_cx_http1_total", &INGRESS)
            .await,
        0.0,
        "B must not have been reached over HTTP/1.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_h1_h2_h1() {
    let app = WsEcho::start().await;
    let (a, b, addr) = start_chain(app.addr, json!([{"upgrade_type": "websocket"}])).await;
    let mut ws = ws_connect(addr, "/chat?room=1")
        .await
        .unwrap_or_else(|e| panic!("handshake through A and B: {e}\n{}", b.log_report()));

    let (total, took) = match echo_all(&mut ws, mixed_messages(4), Duration::from_secs(180)).await {
        Ok(done) => done,
        Err(e) => panic!("{e}\n{}", b.log_report()),
    };
    eprintln!("1,000 messages, {total} bytes each way, in {:?}", took);
    assert_eq!(app.messages(), 1000, "the echo server's message count");

    // Ping -> pong with the same payload (answered by the app, end to end).
    assert_ping_pong(&mut ws, b"are you there").await;

    // Close with an application code: the app sees it, and its echo comes back.
    assert_close_echoed(&mut ws, 4000, "done here").await;
    assert_eq!(app.closes(), vec![(4000, "done here".to_owned())]);

    let hs = app.handshakes();
    assert_eq!(hs.len(), 1, "one handshake at the app: {hs:?}");
    assert_eq!(hs[0].method, "GET");
    assert_eq!(hs[0].path, "/chat?room=1");
    assert_h2_hop(&b).await;
    drop(a);
}

/// One weir -> WsEcho with the HCM's and the route's websocket setting (None = not listed).
async fn start_enable(
    app: SocketAddr,
    hcm_enabled: Option<bool>,
    route_enabled: Option<bool>,
) -> (Weir, SocketAddr) {
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[app]);
    let mut hcm_entry = json!({"upgrade_type": "websocket"});
    if let Some(e) = hcm_enabled {
        hcm_entry["enabled"] = json!(e);
    }
    config::set_upgrades(config::hcm_of(&mut cfg), json!([hcm_entry]));
    if let Some(e) = route_enabled {
        let route = &mut config::hcm_of(&mut cfg)["route_config"]["virtual_hosts"][0]["routes"][0];
        route["route"]["upgrade_configs"] = json!([{"upgrade_type": "websocket", "enabled": e}]);
    }
    (Weir::start(&cfg).await, ports.http_addr())
}

async fn assert_upgrade_works(hcm: Option<bool>, route: Option<bool>) {
    let app = WsEcho::start().await;
    let (weir, addr) = start_enable(app.addr, hcm, route).await;
    let mut ws = ws_connect(addr, "/ws")
        .await
        .unwrap_or_else(|e| panic!("HCM {hcm:?} / route {route:?}: {e}\n{}", weir.log_report()));
    echo(&mut ws, Message::text("hello"))
        .await
        .expect("echo through the upgrade");
    assert_eq!(app.accepted(), 1);
}

async fn assert_upgrade_forbidden(hcm: Option<bool>, route: Option<bool>) {
    let app = WsEcho::start().await;
    let (weir, addr) = start_enable(app.addr, hcm, route).await;
    let (_tcp, head) = tunnel_client::raw_head(addr, &ws_upgrade_request("/ws"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log_report()));
    assert_eq!(
        head.status, 403,
        "HCM {hcm:?} / route {route:?}: {}",
        head.text
    );
    assert_eq!(
        app.accepted(),
        0,
        "a refused upgrade must not reach the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_hcm_default_route_default_works() {
    assert_upgrade_works(None, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_hcm_default_route_false_is_403() {
    assert_upgrade_forbidden(None, Some(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_hcm_false_route_true_works() {
    assert_upgrade_works(Some(false), Some(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_hcm_false_route_false_is_403() {
    assert_upgrade_forbidden(Some(false), Some(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_type_matches_case_insensitively() {
    let app = WsEcho::start().await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[app.addr]);
    config::set_upgrades(
        config::hcm_of(&mut cfg),
        json!([{"upgrade_type": "WebSocket"}]),
    );
    let weir = Weir::start(&cfg).await;
    let request = b"GET /ws HTTP/1.1\r\nhost: ws.test\r\nconnection: upgrade\r\nupgrade: WEBSOCKET\r\n\
                    sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (_tcp, head) = tunnel_client::raw_head(ports.http_addr(), request)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log_report()));
    assert_eq!(head.status, 101, "{}", head.text);
    assert_eq!(app.handshakes().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_without_any_config_is_403() {
    let app = WsEcho::start().await;
    let ports = Ports::new();
    let weir = Weir::start(&config::simple(ports, &[app.addr])).await;
    let (_tcp, head) = tunnel_client::raw_head(ports.http_addr(), &ws_upgrade_request("/ws"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log_report()));
    assert_eq!(head.status, 403, "{}", head.text);
    assert_eq!(app.accepted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_upgrade_arrives_as_post_after_h2_hop() {
    let app = UpgradeApp::start().await;
    let (_a, b, addr) = start_chain(app.addr, json!([{"upgrade_type": "my-proto"}])).await;
    let request = b"POST /switch HTTP/1.1\r\nhost: app.test\r\nconnection: upgrade\r\n\
                    upgrade: my-proto\r\n\r\n";
    let (tcp, head) = tunnel_client::raw_head(addr, request)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log_report()));
    assert_eq!(head.status, 101, "{}", head.text);
    assert!(
        head.text.to_ascii_lowercase().contains("upgrade: my-proto"),
        "101 without `upgrade: my-proto`: {}",
        head.text
    );
    assert!(
        head.rest.is_empty(),
        "bytes before any were sent: {:?}",
        head.rest
    );

    // 256 KiB each way, concurrently, then half-close: the echo comes back whole.
    if let Err(e) = tunnel_client::echo_half_closed(tcp, 9, 256 << 10).await {
        panic!("{e}\n{}", b.log_report());
    }

    let heads = app.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(heads[0].method, "POST", "the method the app saw: {heads:?}");
    assert_eq!(heads[0].target, "/switch");
    assert_eq!(heads[0].header("upgrade"), Some("my-proto"));
    assert_eq!(
        heads[0].header("x-weir-upgrade-method"),
        None,
        "the hop's method header must not reach the app"
    );
    assert_h2_hop(&b).await;
}

async fn stat_until(weir: &Weir, name: &str, want: f64, limit: Duration) -> f64 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let v = weir.stat(name, &INGRESS).await;
        if v == want || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_counters() {
    let app = WsEcho::start().await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[app.addr]);
    config::set_upgrades(
        config::hcm_of(&mut cfg),
        json!([{"upgrade_type": "websocket"}]),
    );
    let routes = &mut config::hcm_of(&mut cfg)["route_config"]["virtual_hosts"][0]["routes"];
    // /off refuses upgrades: a 403 must not count.
    routes.as_array_mut().expect("routes").insert(
        0,
        json!({"match": {"prefix": "/off"}, "route": {"cluster": "backend",
            "upgrade_configs": [{"upgrade_type": "websocket", "enabled": false}]}}),
    );
    let weir = Weir::start(&cfg).await;
    let total = "weir_http_downstream_cx_upgrades_total";
    let active = "weir_http_downstream_cx_upgrades_active";
    assert_eq!(weir.stat(total, &INGRESS).await, 0.0);

    let mut clients = Vec::new();
    for i in 0..3 {
        let mut ws = ws_connect(ports.http_addr(), &format!("/ws/{i}"))
            .await
            .unwrap_or_else(|e| panic!("client {i}: {e}\n{}", weir.log_report()));
        echo(&mut ws, Message::text(format!("client {i}")))
            .await
            .expect("echo");
        clients.push(ws);
    }
    let (_tcp, head) = tunnel_client::raw_head(ports.http_addr(), &ws_upgrade_request("/off"))
        .await
        .expect("request to /off");
    assert_eq!(head.status, 403, "{}", head.text);

    assert_eq!(weir.stat(total, &INGRESS).await, 3.0, "three upgrades");
    assert_eq!(
        stat_until(&weir, active, 3.0, Duration::from_secs(5)).await,
        3.0,
        "three open"
    );
    let splices = weir
        .stat("weir_accel_splices_total", &[("mode", "userspace")])
        .await;
    assert!(
        splices >= 3.0,
        "each upgrade's payload goes through accel::splice: {splices}"
    );

    for (i, mut ws) in clients.into_iter().enumerate() {
        ws.close(None)
            .await
            .unwrap_or_else(|e| panic!("close {i}: {e}"));
        // Drain until the close handshake finishes (bounded).
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
    assert_eq!(
        stat_until(&weir, active, 0.0, Duration::from_secs(10)).await,
        0.0,
        "upgrades_active must return to 0 after the close\n{}",
        weir.log_report()
    );
    assert_eq!(weir.stat(total, &INGRESS).await, 3.0, "total unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_body_is_400() {
    let app = WsEcho::start().await;
    let (a, _b, addr) = start_chain(app.addr, json!([{"upgrade_type": "websocket"}])).await;
    let request =
        b"GET /ws HTTP/1.1\r\nhost: ws.test\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
                    sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    content-length: 5\r\n\r\nhello";
    let (_tcp, head) = tunnel_client::raw_head(addr, request)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", a.log_report()));
    assert_eq!(head.status, 400, "{}", head.text);
    assert_eq!(app.accepted(), 0, "the app must see nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protocol_is_400_and_other_streams_carry_on() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    config::set_upgrades(
        config::hcm_of(&mut cfg),
        json!([{"upgrade_type": "websocket"}]),
    );
    config::allow_connect_downstream(config::hcm_of(&mut cfg));
    let weir = Weir::start(&cfg).await;

    let send = tunnel_client::h2_client(ports.http_addr()).await;
    let get = |path: &str| {
        http::Request::get(format!("http://localhost{path}"))
            .body(())
            .expect("request")
    };
    let mut send = send.ready().await.expect("ready");
    let (first, _) = send.send_request(get("/first"), true).expect("first GET");
    let first = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("first answer in time")
        .expect("first answer");
    assert_eq!(first.status(), 200);
    assert!(
        send.is_extended_connect_protocol_enabled(),
        "allow_connect must advertise SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );

    // A slow stream in flight while the bad one is refused.
    let mut send = send.ready().await.expect("ready");
    let (slow, _) = send.send_request(get("/slow/800"), true).expect("slow GET");

    let mut bad = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri("http://localhost/ws")
        .body(())
        .expect("request");
    bad.extensions_mut()
        .insert(h2::ext::Protocol::from("web socket"));
    let mut send = send.ready().await.expect("ready");
    let (bad, _stream) = send.send_request(bad, false).expect("send bad CONNECT");
    let bad = tokio::time::timeout(Duration::from_secs(10), bad)
        .await
        .expect("answer to the bad :protocol in time")
        .unwrap_or_else(|e| panic!("bad :protocol: {e}\n{}", weir.log_report()));
    assert_eq!(bad.status(), 400, "malformed :protocol");

    let slow = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("slow answer in time")
        .expect("slow stream survives");
    assert_eq!(slow.status(), 200);
    let mut send = send.ready().await.expect("connection still usable");
    let (after, _) = send.send_request(get("/after"), true).expect("GET after");
    let after = tokio::time::timeout(Duration::from_secs(10), after)
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(after.status(), 200);
    let paths: Vec<String> = up.proxied_requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths.len(),
        3,
        "only the good streams reach the upstream: {paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_refused_by_app_is_not_101_after_h2_hop() {
    // The app answers the upgrade with 403: the client must get that answer, not a 101.
    let app = weir_tests::upgrade_app::RefusingH1::start().await;
    let (a, b, addr) = start_chain(app.addr, json!([{"upgrade_type": "websocket"}])).await;
    let (_tcp, head) = tunnel_client::raw_head(addr, &ws_upgrade_request("/ws"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log_report()));
    assert_eq!(
        head.status,
        403,
        "the app refused the upgrade: {}\n--- A ---\n{}\n--- B ---\n{}",
        head.text,
        a.log_report(),
        b.log_report()
    );
    assert_eq!(app.seen().requests.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_ignored_by_app_is_not_101_after_h2_hop() {
    // The app ignores `Upgrade` and answers 200 with a body, as a plain HTTP server does.
    // It never switched protocols, so the client must not be told it did.
    let app = H1Upstream::start("plain").await;
    let (a, b, addr) = start_chain(app.addr, json!([{"upgrade_type": "websocket"}])).await;
    let (_tcp, head) = tunnel_client::raw_head(addr, &ws_upgrade_request("/ws"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log_report()));
    eprintln!(
        "upgrade ignored by the app: the client got {:?}",
        head.status_line
    );
    assert_ne!(
        head.status,
        101,
        "the app answered 200 without switching protocols, yet the client got 101: {}\n--- A ---\n{}\n--- B ---\n{}",
        head.text,
        a.log_report(),
        b.log_report()
    );
    assert_eq!(app.proxied_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_with_the_upgrade_request_arrive() {
    // The client does not wait for the 101: its first bytes ride in the same segment as the
    // request head, and must reach the app after the switch (not be lost or taken as HTTP).
    let app = UpgradeApp::start().await;
    let (_a, b, addr) = start_chain(app.addr, json!([{"upgrade_type": "my-proto"}])).await;
    let request = b"GET /eager HTTP/1.1\r\nhost: app.test\r\nconnection: upgrade\r\n\
                    upgrade: my-proto\r\n\r\nearly-bytes";
    let (mut tcp, head) = tunnel_client::raw_head(addr, request)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log_report()));
    assert_eq!(head.status, 101, "{}", head.text);
    let mut back = head.rest.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    while back.len() < b"early-bytes".len() {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => back.extend_from_slice(&buf[..n]),
            other => panic!(
                "early bytes not echoed ({other:?}); got {:?}\n{}",
                String::from_utf8_lossy(&back),
                b.log_report()
            ),
        }
    }
    assert_eq!(back, b"early-bytes");
    assert_eq!(app.heads().len(), 1);
}

/// As in Envoy 1.40 (checked with the same shape of config), an upgrade goes to an HTTP/2
/// cluster as an RFC 8441 extended CONNECT whether or not the cluster has
/// `http2_protocol_options.allow_connect`: the peer's SETTINGS_ENABLE_CONNECT_PROTOCOL is what
/// counts. (`websocket_echo_h1_h2_h1` above has it set.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_h2_cluster_without_allow_connect_works_as_in_envoy() {
    let app = WsEcho::start().await;
    let upgrades = json!([{"upgrade_type": "websocket"}]);
    let pb = Ports::new();
    let mut cfg_b = config::simple(pb, &[app.addr]);
    config::set_upgrades(config::hcm_of(&mut cfg_b), upgrades.clone());
    config::allow_connect_downstream(config::hcm_of(&mut cfg_b));
    let b = Weir::start(&cfg_b).await;
    let pa = Ports::new();
    let mut cfg_a = config::simple(pa, &[pb.http_addr()]);
    config::set_upgrades(config::hcm_of(&mut cfg_a), upgrades);
    config::upstream_http2(config::cluster_of(&mut cfg_a, 0), None);
    let a = Weir::start(&cfg_a).await;

    let mut ws = ws_connect(pa.http_addr(), "/ws").await.unwrap_or_else(|e| {
        panic!(
            "{e}\n--- A ---\n{}\n--- B ---\n{}",
            a.log_report(),
            b.log_report()
        )
    });
    echo(
        &mut ws,
        Message::text("over an h2 cluster without allow_connect"),
    )
    .await
    .expect("echo");
    assert_h2_hop(&b).await;
}

/// An upstream that accepts connections (up to 8) and never answers on them.
async fn silent_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < 8 {
            match listener.accept().await {
                Ok((tcp, _)) => held.push(tcp),
                Err(_) => break,
            }
        }
        // Hold them until the test ends (the task is aborted then).
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_past_the_route_timeout_is_504_and_counted_as_a_request_is() {
    let (app, silent) = silent_upstream().await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[app]);
    let hcm = config::hcm_of(&mut cfg);
    config::set_upgrades(hcm, json!([{"upgrade_type": "websocket"}]));
    hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"] = json!("0.5s");
    let weir = Weir::start(&cfg).await;
    let timeouts = "weir_http_downstream_rq_timeout";

    // A plain request past the timeout: 504, counted.
    let started = std::time::Instant::now();
    let (_tcp, head) = tunnel_client::raw_head(
        ports.http_addr(),
        b"GET /plain HTTP/1.1\r\nhost: ws.test\r\n\r\n",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", weir.log_report()));
    assert_eq!(head.status, 504, "{}", head.text);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the 504 came after {:?}",
        started.elapsed()
    );
    assert_eq!(
        weir.stat(timeouts, &INGRESS).await,
        1.0,
        "the request's timeout"
    );

    // An upgrade past the same timeout: 504, and counted the same way.
    let started = std::time::Instant::now();
    let (_tcp, head) = tunnel_client::raw_head(ports.http_addr(), &ws_upgrade_request("/ws"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log_report()));
    let took = started.elapsed();
    assert_eq!(head.status, 504, "{}", head.text);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "the upgrade's 504 should come after about 0.5 s, came after {took:?}"
    );
    assert_eq!(
        weir.stat(timeouts, &INGRESS).await,
        2.0,
        "the upgrade's timeout counts as the request's did\n{}",
        weir.log_report()
    );
    silent.abort();
}
