//! TCP tunneling, weir to weir: weir A's tcp_proxy listener (`tunneling_config`) carries
//! each connection in an HTTP/1.1 CONNECT, an HTTP/2 CONNECT, an HTTP/1.1 POST or an HTTP/2
//! POST to weir B, which terminates it (`connect_config`) to a TCP server. Per carrier:
//! random bytes both ways with matching SHA-256, half-close (a FIN either way stays a FIN),
//! reset (a RST either way arrives as a RST: `ECONNRESET` on the far side's read), and
//! refusals (no downstream bytes before the 2xx; the downstream closed). Plus plain tcp_proxy,
//! and a CONNECT over HTTP/3 (bytes both ways).
//!
//! Payload size: 256 MiB each way, as the issue asks (about 2-8 s per carrier with a debug
//! build; generated and hashed as it streams, so memory stays small). `WEIR_TUNNEL_MIB`
//! overrides it.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_tests::config::{self, Ports};
use weir_tests::tcp_server::{FIN_FIRST_GREETING, Mode, TcpServer};
use weir_tests::tunnel_client::{Ending, connect_and_read_until_end, read_until_end};
use weir_tests::upgrade_app::{RefusingH1, RefusingH2};
use weir_tests::{RandomStream, Weir, free_port, random_sha256};

const TUNNEL_HOST: &str = "server.test:9000";
const POST_PATH: &str = "/tunnel";

/// How the tunnel from A to B is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    H1Connect,
    H2Connect,
    H1Post,
    H2Post,
}

impl Carrier {
    fn h2(self) -> bool {
        matches!(self, Carrier::H2Connect | Carrier::H2Post)
    }
    fn post(self) -> bool {
        matches!(self, Carrier::H1Post | Carrier::H2Post)
    }
}

fn payload_len() -> usize {
    let mib: usize = std::env::var("WEIR_TUNNEL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    mib << 20
}

/// weir B: CONNECT enabled, HTTP/2 with allow_connect downstream; a route that terminates
/// (a connect_matcher route for CONNECT, a prefix route with allow_post for POST) to
/// `server`. With `enabled: false` the route refuses CONNECT instead.
fn config_b(ports: Ports, carrier: Carrier, server: SocketAddr, enabled: bool) -> Value {
    let mut upgrade = config::terminate_connect(carrier.post());
    if !enabled {
        upgrade[0]["enabled"] = json!(false);
    }
    let route = if carrier.post() {
        json!({"match": {"prefix": "/"}, "route": {"cluster": "server", "upgrade_configs": upgrade}})
    } else {
        config::route_connect("server", Some(upgrade))
    };
    let mut hcm = config::hcm(
        "ingress_http",
        vec![config::vhost("v", &["*"], vec![route])],
    );
    config::set_upgrades(&mut hcm, json!([{"upgrade_type": "CONNECT"}]));
    config::allow_connect_downstream(&mut hcm);
    config::bootstrap(
        ports.admin,
        vec![config::listener("ingress", ports.http, hcm)],
        vec![config::static_cluster("server", &[server])],
    )
}

/// weir A: a tcp_proxy listener on `port` tunnelling to `upstream` over `carrier`.
fn config_a(admin: u16, port: u16, carrier: Carrier, upstream: SocketAddr) -> Value {
    let mut tunneling = json!({
        "hostname": TUNNEL_HOST,
        "headers_to_add": [{"header": {"key": "x-tunnel-test", "value": "1"}}],
    });
    if carrier.post() {
        tunneling["use_post"] = json!(true);
        tunneling["post_path"] = json!(POST_PATH);
    }
    let mut cluster = config::static_cluster("b", &[upstream]);
    if carrier.h2() {
        config::upstream_http2(&mut cluster, None);
    }
    config::bootstrap(
        admin,
        vec![config::tcp_proxy_listener(
            "tcp",
            port,
            "tcp_tunnel",
            "b",
            Some(tunneling),
        )],
        vec![cluster],
    )
}

/// A and B in front of `server`; returns them and A's listener address.
async fn start_pair(
    carrier: Carrier,
    server: SocketAddr,
    enabled: bool,
) -> (Weir, Weir, SocketAddr) {
    let pb = Ports::new();
    let b = Weir::start(&config_b(pb, carrier, server, enabled)).await;
    let port = free_port();
    let a = Weir::start(&config_a(free_port(), port, carrier, pb.http_addr())).await;
    (a, b, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn logs(a: &Weir, b: &Weir) -> String {
    format!(
        "--- weir A ---\n{}\n--- weir B ---\n{}",
        a.log_report(),
        b.log_report()
    )
}

/// Sends `RandomStream(seed, len)` and shuts down the write half while reading to EOF;
/// returns the length and hex SHA-256 of what came back.
async fn exchange(
    addr: SocketAddr,
    seed: u64,
    len: usize,
    limit: Duration,
) -> Result<(usize, String), String> {
    use sha2::Digest;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let mut data = RandomStream::new(seed, len);
        while let Some(chunk) = data.next_chunk(256 << 10) {
            wr.write_all(&chunk).await?;
        }
        wr.shutdown().await?;
        Ok::<_, std::io::Error>(wr)
    });
    let mut hasher = sha2::Sha256::new();
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 << 10];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => return Err(format!("not done in {limit:?}; {received} bytes back")),
            Ok(Err(e)) => return Err(format!("read: {e} after {received} bytes")),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                hasher.update(&buf[..n]);
                received += n;
            }
        }
    }
    let _wr = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .map_err(|_| "writer stuck".to_owned())?
        .map_err(|e| format!("writer task: {e}"))?
        .map_err(|e| format!("write: {e}"))?;
    let sha = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((received, sha))
}

async fn sha_both_ways(carrier: Carrier) {
    let len = payload_len();
    let server = TcpServer::start(Mode::Exchange { seed: 2, len }).await;
    let (a, b, addr) = start_pair(carrier, server.addr, true).await;
    let up_sha = random_sha256(1, len);
    let down_sha = random_sha256(2, len);
    let started = Instant::now();
    let (back_len, back_sha) = exchange(addr, 1, len, Duration::from_secs(300))
        .await
        .unwrap_or_else(|e| panic!("{carrier:?}: {e}\n{}", logs(&a, &b)));
    let took = started.elapsed();
    eprintln!(
        "{carrier:?}: {} MiB each way in {took:?} ({:.1} MiB/s each way)",
        len >> 20,
        (len >> 20) as f64 / took.as_secs_f64()
    );
    assert_eq!(back_len, len, "{carrier:?}: bytes received by the client");
    assert_eq!(back_sha, down_sha, "{carrier:?}: server-to-client SHA-256");
    let ok = weir_tests::wait_until(Duration::from_secs(10), || !server.records().is_empty()).await;
    assert!(
        ok,
        "{carrier:?}: the server's connection did not end\n{}",
        logs(&a, &b)
    );
    let rec = &server.records()[0];
    assert_eq!(
        server.accepted(),
        1,
        "{carrier:?}: one connection at the server"
    );
    assert_eq!(
        rec.received_len, len,
        "{carrier:?}: bytes received by the server: {rec:?}"
    );
    assert_eq!(
        rec.received_sha, up_sha,
        "{carrier:?}: client-to-server SHA-256"
    );
    assert!(
        rec.saw_eof,
        "{carrier:?}: the client's FIN reached the server: {rec:?}"
    );
    let codec = if carrier.h2() {
        "weir_http_downstream_cx_http2_total"
    } else {
        "weir_http_downstream_cx_http1_total"
    };
    assert_eq!(
        b.stat(codec, &[("stat_prefix", "ingress_http")]).await,
        1.0,
        "{carrier:?}: B got the tunnel on one connection of that protocol"
    );
    assert_eq!(
        a.stat("weir_tcp_cx_total", &[("stat_prefix", "tcp_tunnel")])
            .await,
        1.0,
        "A's tcp_proxy counted the connection"
    );
    assert_eq!(
        b.stat(
            "weir_http_downstream_cx_upgrades_total",
            &[("stat_prefix", "ingress_http")]
        )
        .await,
        1.0,
        "B terminated one tunnel"
    );
}

async fn half_close(carrier: Carrier) {
    // The server answers only after the client's FIN: the FIN must cross both weirs, and
    // the client must still receive everything after its own FIN.
    let server = TcpServer::start(Mode::EchoAfterEof).await;
    let (a, b, addr) = start_pair(carrier, server.addr, true).await;
    let len = 300 << 10;
    let (back_len, back_sha) = exchange(addr, 5, len, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{carrier:?}: {e}\n{}", logs(&a, &b)));
    assert_eq!(back_len, len, "{carrier:?}: echo after the FIN");
    assert_eq!(
        back_sha,
        random_sha256(5, len),
        "{carrier:?}: echoed bytes differ"
    );
    let rec = &server.records()[0];
    assert!(rec.saw_eof && rec.error.is_none(), "{carrier:?}: {rec:?}");
}

/// The server resets its connection: the client's read fails with a reset (ECONNRESET), not
/// an EOF: TCP RST -> RST_STREAM(CONNECT_ERROR) or a reset HTTP/1.1 connection -> TCP RST.
async fn reset(carrier: Carrier) {
    let server = TcpServer::start(Mode::ResetAfterFirstByte).await;
    let (a, b, addr) = start_pair(carrier, server.addr, true).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect A");
    tcp.write_all(b"x").await.expect("write the first byte");
    let (ending, bytes) = read_until_end(&mut tcp, Duration::from_secs(10)).await;
    eprintln!("{carrier:?}: after the server's reset the client saw {ending:?}");
    assert!(bytes.is_empty(), "{carrier:?}: unexpected bytes {bytes:?}");
    assert_eq!(server.accepted(), 1);
    assert_eq!(
        ending,
        Ending::Error(std::io::ErrorKind::ConnectionReset),
        "{carrier:?}: the server reset its connection; the client must see a reset\n{}",
        logs(&a, &b)
    );
}

/// The client resets its connection mid-tunnel: the server's connection ends too.
async fn client_reset(carrier: Carrier) {
    let server = TcpServer::start(Mode::Echo).await;
    let (a, b, addr) = start_pair(carrier, server.addr, true).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect A");
    tcp.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut echo))
        .await
        .unwrap_or_else(|_| panic!("{carrier:?}: no echo in 10 s\n{}", logs(&a, &b)))
        .expect("read echo");
    assert_eq!(&echo, b"ping");
    socket2::SockRef::from(&tcp)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(tcp);
    let ended =
        weir_tests::wait_until(Duration::from_secs(10), || !server.records().is_empty()).await;
    assert!(
        ended,
        "{carrier:?}: the client reset its connection, the server's stayed open 10 s\n{}",
        logs(&a, &b)
    );
    let rec = &server.records()[0];
    eprintln!("{carrier:?}: after the client's reset the server saw {rec:?}");
    assert_eq!(rec.received_len, 4, "{carrier:?}: {rec:?}");
    assert_eq!(
        rec.read_error,
        Some(std::io::ErrorKind::ConnectionReset),
        "{carrier:?}: the client reset its connection; the server must see a reset, not {}\n{}",
        if rec.saw_eof { "an EOF" } else { "this" },
        logs(&a, &b)
    );
}

/// The server sends its FIN first: the client reads the bytes and an EOF (not a reset), and
/// can still send; the server reads that and then the client's own FIN, without an error.
async fn server_fin(carrier: Carrier) {
    let server = TcpServer::start(Mode::FinFirst).await;
    let (a, b, addr) = start_pair(carrier, server.addr, true).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect A");
    let (ending, bytes) = read_until_end(&mut tcp, Duration::from_secs(10)).await;
    assert_eq!(
        (ending, bytes.as_slice()),
        (Ending::Eof, FIN_FIRST_GREETING),
        "{carrier:?}: the server's FIN must reach the client as a FIN, after its bytes\n{}",
        logs(&a, &b)
    );
    tcp.write_all(b"still sending after your FIN")
        .await
        .expect("the client's direction stays open");
    tcp.shutdown().await.expect("the client's FIN");
    let ended =
        weir_tests::wait_until(Duration::from_secs(10), || !server.records().is_empty()).await;
    assert!(
        ended,
        "{carrier:?}: the client's FIN did not reach the server\n{}",
        logs(&a, &b)
    );
    let rec = &server.records()[0];
    assert!(
        rec.saw_eof && rec.error.is_none(),
        "{carrier:?}: the server must see an orderly EOF: {rec:?}\n{}",
        logs(&a, &b)
    );
    assert_eq!(
        rec.received_len,
        b"still sending after your FIN".len(),
        "{carrier:?}: {rec:?}"
    );
}

/// A's upstream is a fake that refuses with 403 after a pause: the client's early bytes must
/// not be sent before a 2xx (nor after the refusal), and the client is closed.
async fn refused_no_early_bytes(carrier: Carrier) {
    let (upstream, seen): (
        SocketAddr,
        Box<dyn Fn() -> weir_tests::upgrade_app::Refused>,
    ) = if carrier.h2() {
        let fake = RefusingH2::start().await;
        let addr = fake.addr;
        (addr, Box::new(move || fake.seen()))
    } else {
        let fake = RefusingH1::start().await;
        let addr = fake.addr;
        (addr, Box::new(move || fake.seen()))
    };
    let port = free_port();
    let a = Weir::start(&config_a(free_port(), port, carrier, upstream)).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect A");
    tcp.write_all(b"early bytes, before any 2xx")
        .await
        .expect("write early bytes");
    let (ending, bytes) = read_until_end(&mut tcp, Duration::from_secs(10)).await;
    assert_ne!(
        ending,
        Ending::Open,
        "{carrier:?}: refused tunnel, but the downstream stayed open\n{}",
        a.log_report()
    );
    assert!(
        bytes.is_empty(),
        "{carrier:?}: bytes to the client: {bytes:?}"
    );
    // Let the fake finish its post-refusal window.
    tokio::time::sleep(weir_tests::upgrade_app::REFUSE_AFTER).await;
    let seen = seen();
    assert_eq!(seen.requests.len(), 1, "{carrier:?}: {seen:?}");
    let want_method = if carrier.post() { "POST" } else { "CONNECT" };
    assert!(
        seen.requests[0].starts_with(want_method),
        "{carrier:?}: tunnel request {seen:?}"
    );
    let headers = &seen.headers[0];
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let authority = if carrier.h2() { ":authority" } else { "host" };
    assert_eq!(
        value(authority),
        Some(TUNNEL_HOST),
        "{carrier:?}: tunneling_config.hostname: {headers:?}"
    );
    assert_eq!(
        value("x-tunnel-test"),
        Some("1"),
        "{carrier:?}: headers_to_add: {headers:?}"
    );
    if carrier.post() {
        assert!(
            seen.requests[0].ends_with(POST_PATH),
            "{carrier:?}: post_path: {seen:?}"
        );
    }
    assert!(
        seen.before_refusal.is_empty(),
        "{carrier:?}: {} bytes reached the upstream before its answer (no 2xx was given): {:?}",
        seen.before_refusal.len(),
        String::from_utf8_lossy(&seen.before_refusal)
    );
    let after = String::from_utf8_lossy(&seen.after_refusal);
    assert!(
        !after.contains("early bytes"),
        "{carrier:?}: the client's bytes were sent after the refusal: {after:?}"
    );
}

/// weir B refuses: 503 (its cluster refuses connections) for every carrier; the client is
/// closed.
async fn refused_by_weir_503(carrier: Carrier) {
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let pb = Ports::new();
    let b = Weir::start(&config_b(pb, carrier, dead, true)).await;
    let port = free_port();
    let a = Weir::start(&config_a(free_port(), port, carrier, pb.http_addr())).await;
    let a_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (ending, bytes) =
        connect_and_read_until_end(a_addr, b"early bytes", Duration::from_secs(10)).await;
    assert_ne!(
        ending,
        Ending::Open,
        "{carrier:?}: downstream left open\n{}",
        logs(&a, &b)
    );
    assert!(
        bytes.is_empty(),
        "{carrier:?}: bytes to the client: {bytes:?}"
    );
    assert!(
        a.stat(
            "weir_tcp_upstream_connect_fail",
            &[("stat_prefix", "tcp_tunnel")]
        )
        .await
            >= 1.0,
        "{carrier:?}: A counts the failed tunnel"
    );
}

/// weir B refuses CONNECT (route `enabled: false` -> 403): the server sees nothing.
async fn refused_by_weir_403(carrier: Carrier) {
    let server = TcpServer::start(Mode::Echo).await;
    let (a, b, addr) = start_pair(carrier, server.addr, false).await;
    let (ending, bytes) =
        connect_and_read_until_end(addr, b"early bytes", Duration::from_secs(10)).await;
    assert_ne!(
        ending,
        Ending::Open,
        "{carrier:?}: downstream left open\n{}",
        logs(&a, &b)
    );
    assert!(
        bytes.is_empty(),
        "{carrier:?}: bytes to the client: {bytes:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.accepted(),
        0,
        "{carrier:?}: the server must see no connection"
    );
    assert_eq!(server.bytes_received(), 0);
}

macro_rules! carrier_tests {
    ($module:ident, $carrier:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sha256_both_ways() {
                sha_both_ways($carrier).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn half_close_carried() {
                half_close($carrier).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn server_reset_reaches_client_as_reset() {
                reset($carrier).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn client_reset_reaches_server_as_reset() {
                client_reset($carrier).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn server_fin_stays_fin() {
                server_fin($carrier).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn refused_sends_no_bytes_before_2xx() {
                refused_no_early_bytes($carrier).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn refused_by_weir_503_closes_downstream() {
                refused_by_weir_503($carrier).await;
            }
        }
    };
}

carrier_tests!(h1_connect, Carrier::H1Connect);
carrier_tests!(h2_connect, Carrier::H2Connect);
carrier_tests!(h1_post, Carrier::H1Post);
carrier_tests!(h2_post, Carrier::H2Post);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_connect_refused_by_weir_403() {
    refused_by_weir_403(Carrier::H1Connect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connect_refused_by_weir_403() {
    refused_by_weir_403(Carrier::H2Connect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_proxy_sha256_both_ways() {
    let len = payload_len();
    let server = TcpServer::start(Mode::Exchange { seed: 7, len }).await;
    let admin = free_port();
    let port = free_port();
    let cfg = config::bootstrap(
        admin,
        vec![config::tcp_proxy_listener(
            "tcp", port, "plain", "server", None,
        )],
        vec![config::static_cluster("server", &[server.addr])],
    );
    let weir = Weir::start(&cfg).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (back_len, back_sha) = exchange(addr, 6, len, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log_report()));
    assert_eq!(back_len, len);
    assert_eq!(back_sha, random_sha256(7, len));
    assert!(weir_tests::wait_until(Duration::from_secs(10), || !server.records().is_empty()).await);
    assert_eq!(server.records()[0].received_sha, random_sha256(6, len));
    assert_eq!(
        weir.stat("weir_tcp_cx_total", &[("stat_prefix", "plain")])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_proxy_reset_carried() {
    let server = TcpServer::start(Mode::ResetAfterFirstByte).await;
    let admin = free_port();
    let port = free_port();
    let cfg = config::bootstrap(
        admin,
        vec![config::tcp_proxy_listener(
            "tcp", port, "plain", "server", None,
        )],
        vec![config::static_cluster("server", &[server.addr])],
    );
    let weir = Weir::start(&cfg).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tcp.write_all(b"x").await.expect("write");
    let (ending, bytes) = read_until_end(&mut tcp, Duration::from_secs(10)).await;
    assert!(bytes.is_empty(), "{bytes:?}");
    assert_eq!(
        ending,
        Ending::Error(std::io::ErrorKind::ConnectionReset),
        "the server reset; plain tcp_proxy must reset the client\n{}",
        weir.log_report()
    );
}

/// weir with one tcp_proxy listener to an echo server, `idle_timeout` 1s, raw or tunnelled
/// (then through weir B over `carrier`). Returns the weirs (B when tunnelled) and A's address.
async fn idle_pair(
    carrier: Option<Carrier>,
    server: SocketAddr,
) -> (Weir, Option<Weir>, SocketAddr) {
    let port = free_port();
    let (mut cfg, b) = match carrier {
        None => {
            let cfg = config::bootstrap(
                free_port(),
                vec![config::tcp_proxy_listener(
                    "tcp",
                    port,
                    "tcp_tunnel",
                    "b",
                    None,
                )],
                vec![config::static_cluster("b", &[server])],
            );
            (cfg, None)
        }
        Some(carrier) => {
            let pb = Ports::new();
            let b = Weir::start(&config_b(pb, carrier, server, true)).await;
            (
                config_a(free_port(), port, carrier, pb.http_addr()),
                Some(b),
            )
        }
    };
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["idle_timeout"] =
        json!("1s");
    let a = Weir::start(&cfg).await;
    (a, b, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// `idle_timeout`: bytes every 300 ms for 2.5 s keep the connection open past the 1 s limit;
/// then, with no byte either way, both sides are closed within a few seconds and
/// `weir_tcp_idle_timeout` counts it.
async fn idle_timeout_closes_both_sides(carrier: Option<Carrier>) {
    let server = TcpServer::start(Mode::Echo).await;
    let (a, b, addr) = idle_pair(carrier, server.addr).await;
    let report = || match &b {
        Some(b) => logs(&a, b),
        None => a.log_report(),
    };
    let mut tcp = TcpStream::connect(addr).await.expect("connect A");
    let started = Instant::now();
    let mut echo = [0u8; 1];
    let mut last_byte = Instant::now();
    for i in 0..9u8 {
        tcp.write_all(&[i]).await.expect("write while active");
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut echo))
            .await
            .unwrap_or_else(|_| panic!("{carrier:?}: no echo {i}\n{}", report()))
            .unwrap_or_else(|e| {
                panic!("{carrier:?}: closed while active ({i}): {e}\n{}", report())
            });
        assert_eq!(echo[0], i);
        last_byte = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "active for longer than the limit"
    );
    let (ending, bytes) = read_until_end(&mut tcp, Duration::from_secs(15)).await;
    let closed_after = last_byte.elapsed();
    assert!(bytes.is_empty(), "{carrier:?}: {bytes:?}");
    assert_ne!(
        ending,
        Ending::Open,
        "{carrier:?}: idle for 15 s with idle_timeout 1s, still open\n{}",
        report()
    );
    assert!(
        closed_after >= Duration::from_millis(900),
        "{carrier:?}: closed {closed_after:?} after the last byte, before the 1 s limit"
    );
    let server_closed =
        weir_tests::wait_until(Duration::from_secs(10), || !server.records().is_empty()).await;
    assert!(
        server_closed,
        "{carrier:?}: the server side stayed open\n{}",
        report()
    );
    // The counter moves right after the pump is dropped (which closed the sockets): on a
    // loaded machine the client can see the close first, so give it a moment.
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = a
            .stat("weir_tcp_idle_timeout", &[("stat_prefix", "tcp_tunnel")])
            .await;
        if counted >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 1.0, "{carrier:?}: counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_proxy_idle_timeout_closes_both_sides() {
    idle_timeout_closes_both_sides(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connect_idle_timeout_closes_both_sides() {
    idle_timeout_closes_both_sides(Some(Carrier::H2Connect)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_post_idle_timeout_closes_both_sides() {
    idle_timeout_closes_both_sides(Some(Carrier::H1Post)).await;
}

/// weir A's tcp_proxy carries each connection in a CONNECT over HTTP/3 to weir B (a QUIC
/// listener that terminates it): the CONNECT stream's 2xx opens the tunnel and its DATA
/// frames carry the bytes both ways, as an HTTP/2 stream's do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_connect_sha256_both_ways() {
    let len = 4 << 20;
    let server = TcpServer::start(Mode::Exchange { seed: 2, len }).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let pb = Ports::new();
    let mut cfg_b = config_b(pb, Carrier::H2Connect, server.addr, true);
    config::add_quic_listener(&mut cfg_b, pb.http, &tls.cert, &tls.key);
    let b = Weir::start(&cfg_b).await;
    let port = free_port();
    let mut cfg_a = config_a(free_port(), port, Carrier::H1Connect, pb.http_addr());
    let cluster = config::cluster_of(&mut cfg_a, 0);
    config::upstream_http3(cluster, None);
    cluster["transport_socket"]["typed_config"]["upstream_tls_context"]["common_tls_context"] = json!({
        "validation_context": {"trusted_ca": {"filename": tls.cert.to_str().expect("utf-8")}}
    });
    let a = Weir::start(&cfg_a).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let (back_len, back_sha) = exchange(addr, 1, len, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a, &b)));
    assert_eq!(back_len, len, "bytes received by the client");
    assert_eq!(back_sha, random_sha256(2, len), "server-to-client SHA-256");
    let ok = weir_tests::wait_until(Duration::from_secs(10), || !server.records().is_empty()).await;
    assert!(ok, "the server's connection did not end\n{}", logs(&a, &b));
    let rec = &server.records()[0];
    assert_eq!(
        rec.received_len, len,
        "bytes received by the server: {rec:?}"
    );
    assert_eq!(
        rec.received_sha,
        random_sha256(1, len),
        "client-to-server SHA-256"
    );
    let ingress = [("stat_prefix", "ingress_http")];
    assert_eq!(
        b.stat("weir_http_downstream_cx_http3_total", &ingress)
            .await,
        1.0,
        "B got the tunnel over HTTP/3\n{}",
        logs(&a, &b)
    );
    assert_eq!(
        b.stat("weir_http_downstream_cx_upgrades_total", &ingress)
            .await,
        1.0,
        "B terminated one tunnel"
    );
}
