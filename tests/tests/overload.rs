//! The overload manager (Envoy's `overload_manager`) and the global downstream connection
//! limit: connections past the limit are closed at accept, a memory monitor past its threshold
//! turns requests into 503s or closes keep-alive connections, and running out of file
//! descriptors neither panics weir nor spins its accept loop.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_tests::client::{H2Client, get, raw_exchange_for};
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::h3::H3Client;
use weir_tests::{H1Upstream, Weir, weir_bin};

const CONNECTIONS_MONITOR: &str = "envoy.resource_monitors.global_downstream_max_connections";
const HEAP_MONITOR: &str = "envoy.resource_monitors.fixed_heap";
const STOP_ACCEPTING_REQUESTS: &str = "envoy.overload_actions.stop_accepting_requests";
const DISABLE_KEEPALIVE: &str = "envoy.overload_actions.disable_http_keepalive";
const OVERFLOW: &str = "weir_listener_downstream_global_cx_overflow";
const KEEPALIVE_REQUEST: &[u8] = b"GET /ka HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn connections_monitor(max: u64) -> Value {
    json!({
        "name": CONNECTIONS_MONITOR,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
            "max_active_downstream_connections": max,
        }
    })
}

fn heap_monitor(max_bytes: u64) -> Value {
    json!({
        "name": HEAP_MONITOR,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
            "max_heap_size_bytes": max_bytes,
        }
    })
}

/// `action` triggered by the heap monitor at `threshold`, refreshed every 100 ms.
fn heap_action(max_bytes: u64, action: &str, threshold: f64) -> Value {
    json!({
        "refresh_interval": "0.1s",
        "resource_monitors": [heap_monitor(max_bytes)],
        "actions": [{
            "name": action,
            "triggers": [{"name": HEAP_MONITOR, "threshold": {"value": threshold}}],
        }],
    })
}

fn listener_label(addr: SocketAddr) -> String {
    format!("{}_{}", addr.ip(), addr.port())
}

/// Opens a connection and has one keep-alive request answered on it; the connection stays
/// open. `None` when weir closed it without an answer.
async fn served_keepalive(addr: SocketAddr) -> Option<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    tcp.write_all(KEEPALIVE_REQUEST).await.ok()?;
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&buf[..n])
        .starts_with("HTTP/1.1 200")
        .then_some(tcp)
}

/// Polls a GET until it is answered 200, for at most `limit`.
async fn served_within(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(2), get(addr, "/")).await
            && resp.status == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A process's CPU time (user + system) so far, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which is in parentheses and may hold spaces): state is
    // field 3, utime 14 and stime 15.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let (utime, stime) = (fields[11], fields[12]);
    Duration::from_millis((utime + stime) * 1000 / ticks)
}

/// Starts weir on `config` with RLIMIT_NOFILE set to `nofile` (soft and hard).
async fn start_with_nofile(config: &Value, nofile: u64) -> Weir {
    let dir = tempfile::Builder::new()
        .prefix("weir-e2e-")
        .tempdir()
        .expect("temp dir");
    let config_path = dir.path().join("weir.yaml");
    std::fs::write(
        &config_path,
        serde_json::to_string_pretty(config).expect("config"),
    )
    .expect("write config");
    let mut cmd = Command::new(weir_bin());
    cmd.arg("-c")
        .arg(&config_path)
        .args(["--log-level", "debug", "--concurrency", "1"]);
    // SAFETY: the closure only calls setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let admin = weir_tests::weir::admin_addr(config);
    let mut weir = Weir::spawn_command(cmd, dir, config_path, admin);
    weir.wait_ready().await;
    weir
}

/// Opens up to `count` connections to `addr` (each says nothing); stops at the first that
/// cannot be opened.
async fn flood(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => open.push(tcp),
            _ => break,
        }
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_closes_connections_past_it() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    cfg["overload_manager"] = json!({"resource_monitors": [connections_monitor(10)]});
    // Two workers: the limit is one count across them.
    let weir = Weir::start_with(&cfg, &["--concurrency", "2"]).await;
    let addr = ports.http_addr();
    let mut open = Vec::new();
    for i in 0..10 {
        let tcp = served_keepalive(addr)
            .await
            .unwrap_or_else(|| panic!("connection {i} under the limit not served"));
        open.push(tcp);
    }
    let eleventh = raw_exchange_for(addr, KEEPALIVE_REQUEST, Duration::from_secs(5)).await;
    assert!(
        eleventh.is_empty(),
        "the 11th connection must be closed without a response, got {eleventh:?}"
    );
    let label = listener_label(addr);
    let overflow = weir
        .stat(OVERFLOW, &[("listener_address", label.as_str())])
        .await;
    assert_eq!(overflow, 1.0, "one connection over the limit counted");
    // Three close: new connections are served again.
    open.truncate(7);
    let mut served = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while served.len() < 3 && Instant::now() < deadline {
        match served_keepalive(addr).await {
            Some(tcp) => served.push(tcp),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(
        served.len(),
        3,
        "connections freed by closes are served again"
    );
    let again = raw_exchange_for(addr, KEEPALIVE_REQUEST, Duration::from_secs(5)).await;
    assert!(again.is_empty(), "full again: closed, got {again:?}");
    let stats = weir.stats().await;
    assert!(
        stats
            .get(OVERFLOW, &[("listener_address", label.as_str())])
            .is_some_and(|v| v >= 2.0),
        "{}",
        stats.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_pressure_stops_accepting_requests_until_raised() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    // 1 MiB: far below weir's resident memory, so the pressure is far above 0.9.
    cfg["overload_manager"] = heap_action(1 << 20, STOP_ACCEPTING_REQUESTS, 0.9);
    let weir = Weir::start(&cfg).await;
    let addr = ports.http_addr();
    let resp = get(addr, "/").await.expect("GET");
    assert_eq!(resp.status, 503, "overloaded: {resp:?}");
    let body = resp.text();
    assert_eq!(body, "overloaded");
    for inside in ["envoy", "weir", "heap", "memory", "127.0.0.1", "backend"] {
        assert!(
            !body.contains(inside),
            "the 503 body tells {inside:?}: {body}"
        );
    }
    assert!(
        up.proxied_requests().is_empty(),
        "an overloaded request reached the upstream"
    );
    let stats = weir.stats().await;
    assert_eq!(
        stats.get(
            "weir_http_downstream_rq_overload_close",
            &[("stat_prefix", "ingress_http")]
        ),
        Some(1.0),
        "{}",
        stats.text
    );
    assert_eq!(
        stats.get("weir_overload_active", &[("name", STOP_ACCEPTING_REQUESTS)]),
        Some(1.0)
    );
    assert_eq!(
        stats.get(
            "weir_overload_scale_percent",
            &[("name", STOP_ACCEPTING_REQUESTS)]
        ),
        Some(100.0)
    );
    assert!(
        stats
            .get("weir_overload_pressure", &[("name", HEAP_MONITOR)])
            .is_some_and(|p| p > 100.0),
        "{}",
        stats.text
    );
    // Raised far above: the next refresh after the reload serves again.
    cfg["overload_manager"] = heap_action(1 << 40, STOP_ACCEPTING_REQUESTS, 0.9);
    let text = serde_json::to_string_pretty(&cfg).expect("config");
    let staged = weir.dir().join("weir.yaml.new");
    std::fs::write(&staged, text).expect("write config");
    std::fs::rename(&staged, weir.config_path()).expect("replace config");
    let (status, answer) = weir.admin_post("/reload").await;
    assert_eq!(status, 200, "reload: {answer}");
    assert!(
        served_within(addr, Duration::from_secs(5)).await,
        "not served after the limit was raised\n{}",
        weir.log_report()
    );
    assert_eq!(
        weir.stat("weir_overload_active", &[("name", STOP_ACCEPTING_REQUESTS)])
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_pressure_disables_keepalive() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    cfg["overload_manager"] = heap_action(1 << 20, DISABLE_KEEPALIVE, 0.5);
    let weir = Weir::start(&cfg).await;
    let addr = ports.http_addr();
    // HTTP/1.1: the response says `connection: close` and weir closes the connection (the
    // exchange ends well before its 5 s limit).
    let started = Instant::now();
    let reply = raw_exchange_for(addr, KEEPALIVE_REQUEST, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "no connection: close in {reply:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "weir kept the connection open"
    );
    // HTTP/2: the request is served, then the connection is drained (GOAWAY): a later request
    // on it fails.
    let mut h2 = H2Client::connect(addr).await.expect("h2c connect");
    let request = || {
        http::Request::get(format!("http://{addr}/h2"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request")
    };
    let first = h2.request(request()).await.expect("first h2 request");
    assert_eq!(first.status, 200);
    let mut refused = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if h2.request(request()).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the HTTP/2 connection was not drained");
    let stats = weir.stats().await;
    assert!(
        stats
            .get(
                "weir_http_downstream_cx_overload_disable_keepalive",
                &[("stat_prefix", "ingress_http")]
            )
            .is_some_and(|v| v >= 2.0),
        "{}",
        stats.text
    );
    assert_eq!(
        stats.get("weir_overload_active", &[("name", DISABLE_KEEPALIVE)]),
        Some(1.0)
    );
}

/// `disable_http_keepalive` over HTTP/3 is a GOAWAY, as on HTTP/2 (Envoy drains the
/// connection; HTTP/3 forbids a `connection` header): the request is served without one,
/// then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_pressure_disables_keepalive_over_h3_with_goaway() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let mut cfg = config::simple(ports, &[up.addr]);
    config::add_quic_listener(&mut cfg, ports.http, &tls.cert, &tls.key);
    cfg["overload_manager"] = heap_action(1 << 20, DISABLE_KEEPALIVE, 0.5);
    let weir = Weir::start(&cfg).await;
    let client = H3Client::connect(ports.http_addr(), "localhost", &tls.cert_der)
        .await
        .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", weir.log_report()));
    let response = client.get("/h3").await.expect("h3 GET");
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        !response.headers.contains_key("connection"),
        "no connection header over HTTP/3: {response:?}"
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), client.connection.closed()).await;
    assert!(
        closed.is_ok(),
        "the HTTP/3 connection was not drained\n{}",
        weir.log_report()
    );
    assert_eq!(
        weir.stat(
            "weir_http_downstream_cx_overload_disable_keepalive",
            &[("stat_prefix", "ingress_http")]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limit_follows_the_descriptor_limit() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    // No overload_manager: the default limit is (256 - 64) / 2 = 96.
    let weir = start_with_nofile(&config::simple(ports, &[up.addr]), 256).await;
    assert_eq!(
        weir.stat("weir_overload_global_downstream_max_connections", &[])
            .await,
        96.0
    );
    let addr = ports.http_addr();
    let label = listener_label(addr);
    let cpu_before = cpu_time(weir.pid());
    let open = flood(addr, 110).await;
    assert_eq!(open.len(), 110, "the kernel takes every connection");
    let mut overflow = 0.0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while overflow < 14.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        overflow = weir
            .stat(OVERFLOW, &[("listener_address", label.as_str())])
            .await;
    }
    assert_eq!(overflow, 14.0, "110 connections, 96 admitted");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu_time(weir.pid()) - cpu_before;
    eprintln!("weir's CPU while 110 connections (96 admitted) were held: {cpu:?}");
    assert!(cpu < Duration::from_millis(700), "weir used {cpu:?} of CPU");
    drop(open);
    assert!(
        served_within(addr, Duration::from_secs(5)).await,
        "not served after the flood closed\n{}",
        weir.log_report()
    );
    assert!(!weir.log().contains("panicked"), "{}", weir.log_report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_neither_panics_nor_spins() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    // A limit the descriptors cannot reach: accept() fails with EMFILE first.
    cfg["overload_manager"] = json!({"resource_monitors": [connections_monitor(100_000)]});
    let weir = start_with_nofile(&cfg, 128).await;
    let addr = ports.http_addr();
    let open = flood(addr, 200).await;
    assert_eq!(open.len(), 200, "the kernel queues every connection");
    assert!(
        weir_tests::wait_until(Duration::from_secs(5), || weir
            .log()
            .contains("accept failed"))
        .await,
        "weir never ran out of descriptors\n{}",
        weir.log_report()
    );
    let cpu_before = cpu_time(weir.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu_time(weir.pid()) - cpu_before;
    eprintln!("weir's CPU in 2 s out of descriptors: {cpu:?}");
    assert!(
        cpu < Duration::from_millis(500),
        "weir spun: {cpu:?} of CPU in 2 s"
    );
    let logged = weir.log().matches("accept failed").count();
    assert!(logged <= 3, "accept errors logged {logged} times");
    drop(open);
    assert!(
        served_within(addr, Duration::from_secs(10)).await,
        "not served after the flood closed\n{}",
        weir.log_report()
    );
    assert!(!weir.log().contains("panicked"), "{}", weir.log_report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connections_count_toward_the_limit() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let mut cfg = config::simple(ports, &[up.addr]);
    config::add_quic_listener(&mut cfg, ports.http, &tls.cert, &tls.key);
    cfg["overload_manager"] = json!({"resource_monitors": [connections_monitor(2)]});
    let weir = Weir::start(&cfg).await;
    let addr = ports.http_addr();
    let mut clients = Vec::new();
    for i in 0..2 {
        let client = H3Client::connect(addr, "localhost", &tls.cert_der)
            .await
            .unwrap_or_else(|e| panic!("h3 connection {i}: {e}\n{}", weir.log_report()));
        let response = client.get("/h3").await.expect("h3 GET");
        assert_eq!(response.status, 200);
        clients.push(client);
    }
    // Full with two QUIC connections: a third is refused, and so is a TCP one.
    let third = H3Client::connect(addr, "localhost", &tls.cert_der).await;
    assert!(third.is_err(), "a third QUIC connection was accepted");
    let tcp = raw_exchange_for(addr, KEEPALIVE_REQUEST, Duration::from_secs(5)).await;
    assert!(tcp.is_empty(), "a TCP connection past the limit: {tcp:?}");
    let label = listener_label(addr);
    assert_eq!(
        weir.stat(OVERFLOW, &[("listener_address", label.as_str())])
            .await,
        2.0
    );
    // One QUIC connection closes: its place is free for the next connection.
    let closing = clients.pop().expect("client");
    closing.connection.close(0u32.into(), b"done");
    drop(closing);
    assert!(
        served_within(addr, Duration::from_secs(5)).await,
        "not served after a QUIC connection closed\n{}",
        weir.log_report()
    );
}
