//! CONNECT: `curl -p -x` through weir in terminate and proxy modes, 50 HTTP/2 CONNECT tunnels
//! on one connection, and the refusals (off: 403, no route: 404/403, no authority: 400).

use bytes::Bytes;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use weir_tests::client::run_tool;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::tcp_server::{Mode, TcpServer};
use weir_tests::tunnel_client;
use weir_tests::{H1Upstream, Weir};

const INGRESS: [(&str, &str); 1] = [("stat_prefix", "ingress_http")];
const TARGET: &str = "target.example:8080";

/// One listener, HCM `upgrade_configs` = `upgrades` (None: not set), one virtual host with
/// `domains` and `routes`, one cluster `backend` on `backend`.
fn connect_config(
    ports: Ports,
    upgrades: Option<Value>,
    domains: &[&str],
    routes: Vec<Value>,
    backend: SocketAddr,
) -> Value {
    let mut hcm = config::hcm("ingress_http", vec![config::vhost("v", domains, routes)]);
    if let Some(u) = upgrades {
        config::set_upgrades(&mut hcm, u);
    }
    config::bootstrap(
        ports.admin,
        vec![config::listener("ingress", ports.http, hcm)],
        vec![config::static_cluster("backend", &[backend])],
    )
}

fn connect_enabled() -> Option<Value> {
    Some(json!([{"upgrade_type": "CONNECT"}]))
}

/// `curl -s -p -x http://proxy http://TARGET/hello`: curl's own CONNECT, then a GET inside.
async fn curl_through(proxy: SocketAddr) -> weir_tests::client::ToolOutput {
    let proxy = format!("http://{proxy}");
    let url = format!("http://{TARGET}/hello");
    run_tool(
        "curl",
        &["-sS", "-p", "-x", &proxy, "--max-time", "20", &url],
        Duration::from_secs(30),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_proxytunnel_terminate_mode() {
    let web = H1Upstream::start("web").await;
    let ports = Ports::new();
    let cfg = connect_config(
        ports,
        connect_enabled(),
        &["*"],
        vec![config::route_connect(
            "backend",
            Some(config::terminate_connect(false)),
        )],
        web.addr,
    );
    let weir = Weir::start(&cfg).await;
    let out = curl_through(ports.http_addr()).await;
    assert_eq!(out.code, 0, "curl failed: {out:?}\n{}", weir.log_report());
    let page: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not the upstream's page ({e}): {out:?}"));
    assert_eq!(page["upstream"], "web", "{page}");
    assert_eq!(page["path"], "/hello", "{page}");
    assert_eq!(
        page["authority"], TARGET,
        "the Host curl sent inside the tunnel"
    );
    let reqs = web.requests();
    assert_eq!(
        reqs.len(),
        1,
        "only the tunnelled GET reaches the server: {reqs:?}"
    );
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(
        weir.stat("weir_http_downstream_cx_upgrades_total", &INGRESS)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_proxytunnel_proxy_mode() {
    proxy_mode(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_proxytunnel_proxy_mode_over_h2_hop() {
    proxy_mode(true).await;
}

/// curl -> A (proxies the CONNECT; to B over HTTP/2 when `h2_hop`) -> B (terminates) -> web.
async fn proxy_mode(h2_hop: bool) {
    let web = H1Upstream::start("web").await;
    // B terminates; its virtual host is the CONNECT target (host:port), not a wildcard.
    let pb = Ports::new();
    let cfg_b = connect_config(
        pb,
        connect_enabled(),
        &[TARGET],
        vec![config::route_connect(
            "backend",
            Some(config::terminate_connect(false)),
        )],
        web.addr,
    );
    let b = Weir::start(&cfg_b).await;
    // A proxies the CONNECT to B (no connect_config).
    let pa = Ports::new();
    let mut cfg_a = connect_config(
        pa,
        connect_enabled(),
        &["*"],
        vec![config::route_connect("backend", None)],
        pb.http_addr(),
    );
    if h2_hop {
        config::upstream_http2(config::cluster_of(&mut cfg_a, 0), None);
    }
    let a = Weir::start(&cfg_a).await;

    let out = curl_through(pa.http_addr()).await;
    assert_eq!(
        out.code,
        0,
        "curl failed: {out:?}\n--- A ---\n{}\n--- B ---\n{}",
        a.log_report(),
        b.log_report()
    );
    let page: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not the upstream's page ({e}): {out:?}"));
    assert_eq!(page["path"], "/hello", "{page}");
    assert_eq!(web.requests().len(), 1);
    let ups = "weir_http_downstream_cx_upgrades_total";
    assert_eq!(a.stat(ups, &INGRESS).await, 1.0, "A proxied one CONNECT");
    assert_eq!(b.stat(ups, &INGRESS).await, 1.0, "B terminated one CONNECT");
    assert_eq!(
        a.stat(
            "weir_cluster_upstream_rq_total",
            &[("cluster_name", "backend")]
        )
        .await,
        1.0,
        "A sent the CONNECT upstream as a request"
    );
    let codec = if h2_hop {
        "weir_http_downstream_cx_http2_total"
    } else {
        "weir_http_downstream_cx_http1_total"
    };
    assert_eq!(
        b.stat(codec, &INGRESS).await,
        1.0,
        "the A -> B hop's protocol"
    );
}

async fn raw_connect_status(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let (_tcp, head) = tunnel_client::raw_head(addr, request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (head.status, head.text)
}

fn connect_request(target: &str) -> Vec<u8> {
    format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_upgrades_off_is_403() {
    let web = H1Upstream::start("web").await;
    let ports = Ports::new();
    // A connect_matcher route that would terminate, but CONNECT is not an upgrade type of the
    // HCM and the route lists none: off.
    let cfg = connect_config(
        ports,
        None,
        &["*"],
        vec![
            config::route_connect("backend", None),
            config::route_prefix("/", "backend"),
        ],
        web.addr,
    );
    let weir = Weir::start(&cfg).await;
    let (status, text) = raw_connect_status(ports.http_addr(), &connect_request(TARGET)).await;
    assert_eq!(status, 403, "{text}\n{}", weir.log_report());
    let out = curl_through(ports.http_addr()).await;
    assert_ne!(out.code, 0, "curl must fail: {out:?}");
    assert!(
        out.stderr.contains("403"),
        "curl should report the 403: {out:?}"
    );
    assert_eq!(web.accepted(), 0, "nothing reaches the upstream");
    assert_eq!(
        weir.stat("weir_http_downstream_cx_upgrades_total", &INGRESS)
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_without_authority_is_400() {
    let web = H1Upstream::start("web").await;
    let ports = Ports::new();
    let cfg = connect_config(
        ports,
        connect_enabled(),
        &["*"],
        vec![config::route_connect(
            "backend",
            Some(config::terminate_connect(false)),
        )],
        web.addr,
    );
    let weir = Weir::start(&cfg).await;
    let (status, text) = raw_connect_status(
        ports.http_addr(),
        b"CONNECT / HTTP/1.1\r\nhost: x.test\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}\n{}", weir.log_report());
    assert_eq!(web.accepted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_no_route_is_404_when_enabled_403_when_not() {
    let web = H1Upstream::start("web").await;
    for (upgrades, want) in [(connect_enabled(), 404), (None, 403)] {
        let ports = Ports::new();
        // Only a path route: no connect_matcher, so no route takes a CONNECT.
        let cfg = connect_config(
            ports,
            upgrades.clone(),
            &["*"],
            vec![config::route_prefix("/", "backend")],
            web.addr,
        );
        let weir = Weir::start(&cfg).await;
        let (status, text) = raw_connect_status(ports.http_addr(), &connect_request(TARGET)).await;
        assert_eq!(
            status,
            want,
            "HCM upgrade_configs {upgrades:?}: {text}\n{}",
            weir.log_report()
        );
        // A plain request on the same config still works.
        let resp = weir_tests::get(ports.http_addr(), "/ok")
            .await
            .expect("GET");
        assert_eq!(resp.status, 200);
    }
    // A virtual host for another target does not take this one either.
    let ports = Ports::new();
    let cfg = connect_config(
        ports,
        connect_enabled(),
        &["other.example:8080"],
        vec![config::route_connect(
            "backend",
            Some(config::terminate_connect(false)),
        )],
        web.addr,
    );
    let weir = Weir::start(&cfg).await;
    let (status, text) = raw_connect_status(ports.http_addr(), &connect_request(TARGET)).await;
    assert_eq!(status, 404, "{text}\n{}", weir.log_report());
    assert_eq!(
        web.requests().len(),
        2,
        "only the two plain GETs reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_fifty_connect_tunnels_on_one_connection() {
    const TUNNELS: usize = 50;
    const PER_TUNNEL: usize = 64 << 10;
    let echo = TcpServer::start(Mode::Echo).await;
    let ports = Ports::new();
    let cfg = connect_config(
        ports,
        connect_enabled(),
        &["*"],
        vec![config::route_connect(
            "backend",
            Some(config::terminate_connect(false)),
        )],
        echo.addr,
    );
    let weir = Weir::start(&cfg).await;

    let tcp = tokio::net::TcpStream::connect(ports.http_addr())
        .await
        .expect("connect");
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });

    let mut tunnels = tokio::task::JoinSet::new();
    for i in 0..TUNNELS {
        let send = send.clone();
        tunnels.spawn(async move {
            let req = http::Request::builder()
                .method(http::Method::CONNECT)
                .uri(TARGET)
                .body(())
                .expect("request");
            let mut send = send.ready().await.map_err(|e| format!("ready: {e}"))?;
            let (resp, mut stream) = send
                .send_request(req, false)
                .map_err(|e| format!("send CONNECT: {e}"))?;
            let resp = resp.await.map_err(|e| format!("response: {e}"))?;
            if resp.status() != 200 {
                return Err(format!("status {}", resp.status()));
            }
            let mut body = resp.into_body();
            let data = weir_tests::random_bytes(1000 + i as u64, PER_TUNNEL);
            stream
                .send_data(Bytes::from(data.clone()), false)
                .map_err(|e| format!("send data: {e}"))?;
            let mut back = Vec::new();
            while back.len() < data.len() {
                match body.data().await {
                    Some(Ok(chunk)) => {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        back.extend_from_slice(&chunk);
                    }
                    Some(Err(e)) => return Err(format!("read: {e} after {} bytes", back.len())),
                    None => return Err(format!("ended after {} bytes", back.len())),
                }
            }
            if back != data {
                return Err("echoed bytes differ".into());
            }
            // Half-close: the tunnel ends in turn (the echo server shuts down on EOF).
            stream
                .send_data(Bytes::new(), true)
                .map_err(|e| format!("end stream: {e}"))?;
            // (An empty DATA frame may carry the END_STREAM.)
            loop {
                match body.data().await {
                    None => return Ok(i),
                    Some(Ok(extra)) if extra.is_empty() => {}
                    Some(Ok(extra)) => {
                        return Err(format!("{} extra bytes after the echo", extra.len()));
                    }
                    Some(Err(e)) => return Err(format!("stream reset instead of END_STREAM: {e}")),
                }
            }
        });
    }
    let mut done = Vec::new();
    let all = async {
        while let Some(r) = tunnels.join_next().await {
            done.push(r.expect("tunnel task"));
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .is_err()
    {
        panic!(
            "50 tunnels not done in 60 s ({} finished)\n{}",
            done.len(),
            weir.log_report()
        );
    }
    let failed: Vec<&String> = done.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "tunnels failed: {failed:?}\n{}",
        weir.log_report()
    );
    assert_eq!(done.len(), TUNNELS);
    assert_eq!(
        echo.accepted(),
        TUNNELS as u64,
        "one upstream connection per tunnel"
    );
    assert_eq!(
        weir.stat("weir_http_downstream_cx_total", &INGRESS).await,
        1.0,
        "all tunnels on one downstream connection"
    );
    assert_eq!(
        weir.stat("weir_http_downstream_cx_upgrades_total", &INGRESS)
            .await,
        TUNNELS as f64
    );
}

/// Opens an HTTP/2 CONNECT to `authority`: (status, the stream to send on, the body).
async fn h2_connect(
    send: &h2::client::SendRequest<Bytes>,
    authority: &str,
) -> (u16, h2::SendStream<Bytes>, h2::RecvStream) {
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(authority)
        .body(())
        .expect("request");
    let mut send = send.clone().ready().await.expect("connection ready");
    let (resp, stream) = send.send_request(req, false).expect("send CONNECT");
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("CONNECT answered within 10 s")
        .expect("CONNECT response");
    let status = resp.status().as_u16();
    (status, stream, resp.into_body())
}

/// Reads `n` bytes from an h2 body within 10 s.
async fn h2_read(body: &mut h2::RecvStream, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let fut = async {
        while out.len() < n {
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    out.extend_from_slice(&chunk);
                }
                other => panic!("tunnel ended ({other:?}) after {} bytes", out.len()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("tunnel data within 10 s");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connect_refusals_leave_other_streams_alone() {
    let echo = TcpServer::start(Mode::Echo).await;
    let ports = Ports::new();
    // Only TARGET has a virtual host; CONNECT is enabled.
    let cfg = connect_config(
        ports,
        connect_enabled(),
        &[TARGET],
        vec![config::route_connect(
            "backend",
            Some(config::terminate_connect(false)),
        )],
        echo.addr,
    );
    let weir = Weir::start(&cfg).await;
    let send = tunnel_client::h2_client(ports.http_addr()).await;

    let (status, mut tunnel, mut tunnel_body) = h2_connect(&send, TARGET).await;
    assert_eq!(status, 200, "{}", weir.log_report());
    tunnel
        .send_data(Bytes::from_static(b"before"), false)
        .expect("send");
    assert_eq!(h2_read(&mut tunnel_body, 6).await, b"before");

    let (status, _s, _b) = h2_connect(&send, "nowhere.example:443").await;
    assert_eq!(status, 404, "a CONNECT no virtual host takes");

    tunnel
        .send_data(Bytes::from_static(b"after"), false)
        .expect("send on the first tunnel");
    assert_eq!(
        h2_read(&mut tunnel_body, 5).await,
        b"after",
        "the open tunnel carries on after the refused stream"
    );
    let (status, mut second, mut second_body) = h2_connect(&send, TARGET).await;
    assert_eq!(status, 200, "a new tunnel on the same connection");
    second
        .send_data(Bytes::from_static(b"second"), false)
        .expect("send");
    assert_eq!(h2_read(&mut second_body, 6).await, b"second");
    assert_eq!(echo.accepted(), 2, "the refused CONNECT opened nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connect_with_upgrades_off_is_403() {
    let echo = TcpServer::start(Mode::Echo).await;
    let ports = Ports::new();
    let cfg = connect_config(
        ports,
        None,
        &["*"],
        vec![config::route_connect("backend", None)],
        echo.addr,
    );
    let weir = Weir::start(&cfg).await;
    let send = tunnel_client::h2_client(ports.http_addr()).await;
    let (status, _s, _b) = h2_connect(&send, TARGET).await;
    assert_eq!(status, 403, "{}", weir.log_report());
    assert_eq!(echo.accepted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_connect_bytes_sent_with_the_request_arrive() {
    // Clients often send their first bytes (a TLS ClientHello) right behind the CONNECT.
    let echo = TcpServer::start(Mode::Echo).await;
    let ports = Ports::new();
    let cfg = connect_config(
        ports,
        connect_enabled(),
        &["*"],
        vec![config::route_connect(
            "backend",
            Some(config::terminate_connect(false)),
        )],
        echo.addr,
    );
    let weir = Weir::start(&cfg).await;
    let mut request = connect_request(TARGET);
    request.extend_from_slice(b"early-bytes");
    let (mut tcp, head) = tunnel_client::raw_head(ports.http_addr(), &request)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log_report()));
    assert_eq!(head.status, 200, "{}", head.text);
    let mut back = head.rest.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    while back.len() < b"early-bytes".len() {
        match tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf))
            .await
        {
            Ok(Ok(n)) if n > 0 => back.extend_from_slice(&buf[..n]),
            other => panic!(
                "early bytes not echoed ({other:?}); got {:?}\n{}",
                String::from_utf8_lossy(&back),
                weir.log_report()
            ),
        }
    }
    assert_eq!(back, b"early-bytes");
}

/// RFC 9113 8.5 on weir's own HTTP/2 downstream: the target resetting its TCP connection
/// reaches the client as `RST_STREAM(CONNECT_ERROR)` (not an orderly `END_STREAM`), a client's
/// `RST_STREAM` reaches the target as a TCP reset, and the connection's other streams carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connect_resets_cross_as_connect_error_and_tcp_rst() {
    let resetting = TcpServer::start(Mode::ResetAfterFirstByte).await;
    let echo = TcpServer::start(Mode::Echo).await;
    let ports = Ports::new();
    let terminate =
        |cluster: &str| config::route_connect(cluster, Some(config::terminate_connect(false)));
    let mut hcm = config::hcm(
        "ingress_http",
        vec![
            config::vhost("resets", &["resets.example:1"], vec![terminate("resets")]),
            config::vhost("echoes", &["echoes.example:1"], vec![terminate("echoes")]),
        ],
    );
    config::set_upgrades(&mut hcm, json!([{"upgrade_type": "CONNECT"}]));
    let cfg = config::bootstrap(
        ports.admin,
        vec![config::listener("ingress", ports.http, hcm)],
        vec![
            config::static_cluster("resets", &[resetting.addr]),
            config::static_cluster("echoes", &[echo.addr]),
        ],
    );
    let weir = Weir::start(&cfg).await;
    let send = tunnel_client::h2_client(ports.http_addr()).await;

    // A tunnel that stays open through both resets.
    let (status, mut bystander, mut bystander_body) = h2_connect(&send, "echoes.example:1").await;
    assert_eq!(status, 200, "{}", weir.log_report());

    // The target resets: the client's stream is reset with CONNECT_ERROR.
    let (status, mut tunnel, mut body) = h2_connect(&send, "resets.example:1").await;
    assert_eq!(status, 200, "{}", weir.log_report());
    tunnel
        .send_data(Bytes::from_static(b"x"), false)
        .expect("send");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match body.data().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                other => return other,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the tunnel did not end in 10 s\n{}", weir.log_report()));
    let reason = match ended {
        Some(Err(error)) => error.reason(),
        other => panic!(
            "the target reset its connection; the stream ended with {other:?}\n{}",
            weir.log_report()
        ),
    };
    assert_eq!(reason, Some(h2::Reason::CONNECT_ERROR));

    // The client resets its stream: the target sees a TCP reset.
    bystander
        .send_data(Bytes::from_static(b"ping"), false)
        .expect("send");
    assert_eq!(h2_read(&mut bystander_body, 4).await, b"ping");
    let (status, mut cancelled, mut cancelled_body) = h2_connect(&send, "echoes.example:1").await;
    assert_eq!(status, 200);
    cancelled
        .send_data(Bytes::from_static(b"abc"), false)
        .expect("send");
    assert_eq!(h2_read(&mut cancelled_body, 3).await, b"abc");
    cancelled.send_reset(h2::Reason::CANCEL);
    let closed =
        weir_tests::wait_until(Duration::from_secs(10), || !echo.records().is_empty()).await;
    assert!(
        closed,
        "the target's connection stayed open\n{}",
        weir.log_report()
    );
    let record = &echo.records()[0];
    assert_eq!(record.received_len, 3, "{record:?}");
    assert_eq!(
        record.read_error,
        Some(std::io::ErrorKind::ConnectionReset),
        "a client RST_STREAM must reach the target as a reset: {record:?}"
    );

    // The first tunnel carried on through both.
    bystander
        .send_data(Bytes::from_static(b"still here"), false)
        .expect("send");
    assert_eq!(h2_read(&mut bystander_body, 10).await, b"still here");
}
