//! Listeners follow the config across a reload (the file rewritten, then `POST /reload`), as
//! Envoy's follow LDS: a listener known by its name is added (bound, serving), removed (the
//! port closes; its connections drain: HTTP/1.1 `connection: close`, HTTP/2 GOAWAY, tcp_proxy
//! tunnels run on; what is left after the drain time is closed) or replaced (new connections
//! go to the new one at once, the old one's connections drain; at the same address the port
//! never closes).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_tests::config;
use weir_tests::h2_frames::RawH2;
use weir_tests::tcp_server::{Mode, TcpServer};
use weir_tests::{H1Upstream, Weir, free_port};

/// The drain time the tests run weir with (`--drain-time-s`).
const DRAIN_TIME: Duration = Duration::from_secs(3);

/// An HTTP listener `name` on `port` routing everything to `backend`.
fn http_listener(name: &str, port: u16) -> Value {
    config::listener(
        name,
        port,
        config::hcm(
            &format!("{name}_http"),
            vec![config::vhost(
                "all",
                &["*"],
                vec![config::route_prefix("/", "backend")],
            )],
        ),
    )
}

fn bootstrap(
    admin: u16,
    listeners: Vec<Value>,
    backend: SocketAddr,
    echo: Option<SocketAddr>,
) -> Value {
    let mut clusters = vec![config::static_cluster("backend", &[backend])];
    if let Some(echo) = echo {
        clusters.push(config::static_cluster("echo", &[echo]));
    }
    config::bootstrap(admin, listeners, clusters)
}

/// Starts weir with the watcher off (only `POST /reload` reloads) and a short drain time.
async fn start(config: &Value) -> Weir {
    let drain = DRAIN_TIME.as_secs().to_string();
    Weir::start_with(
        config,
        &[
            "--concurrency",
            "2",
            "--reload-interval-ms",
            "0",
            "--drain-time-s",
            &drain,
        ],
    )
    .await
}

/// Writes `config` over weir's file and reloads; panics unless the reload succeeded.
async fn reload(weir: &Weir, config: &Value) -> Value {
    let text = serde_json::to_string_pretty(config).expect("serialize config");
    let temp = weir.config_path().with_extension("tmp");
    std::fs::write(&temp, text).expect("write config");
    std::fs::rename(&temp, weir.config_path()).expect("rename config");
    let (status, answer) = weir.admin_post("/reload").await;
    assert_eq!(status, 200, "POST /reload: {answer}\n{}", weir.log_report());
    serde_json::from_str(&answer).expect("reload answer is JSON")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn get(port: u16, path: &str) -> Result<weir_tests::client::Resp, String> {
    let request = Request::get(path)
        .header("host", "example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    tokio::time::timeout(
        Duration::from_secs(10),
        weir_tests::client::h1_request(addr(port), request),
    )
    .await
    .map_err(|_| "no answer within 10 s".to_owned())?
}

/// Whether a TCP connection to `port` is refused (the port is closed), trying every 20 ms
/// for up to a second: the workers' accept loops close their sockets as they next run, just
/// after the reload answered.
async fn refused(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr(port))).await;
        if matches!(attempt, Ok(Err(ref error)) if error.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stat(weir: &Weir, name: &str) -> f64 {
    weir.stat(name, &[]).await
}

/// Reads from `stream` until EOF (or a reset); the bytes read, or `None` if it stayed open for
/// `limit`.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(all),
            Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
        }
        if all.len() > 1 << 20 {
            return Some(all);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listener_added_serves_removed_one_closes_and_drains() {
    let up = H1Upstream::start("up").await;
    let echo = TcpServer::start(Mode::Echo).await;
    let (admin, main_port, extra_port, tcp_port) =
        (free_port(), free_port(), free_port(), free_port());
    let one = bootstrap(
        admin,
        vec![http_listener("main", main_port)],
        up.addr,
        Some(echo.addr),
    );
    let weir = start(&one).await;
    assert_eq!(get(main_port, "/").await.map(|r| r.status), Ok(200));
    assert!(
        refused(extra_port).await,
        "the extra port is closed before it is added"
    );
    assert_eq!(
        stat(&weir, "weir_listener_manager_listener_added").await,
        1.0
    );
    assert_eq!(
        stat(&weir, "weir_listener_manager_total_listeners_active").await,
        1.0
    );

    // Added: an HTTP listener and a tcp_proxy one serve at once.
    let mut three = one.clone();
    let listeners = three["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners");
    listeners.push(http_listener("extra", extra_port));
    listeners.push(config::tcp_proxy_listener(
        "tunnel", tcp_port, "tunnel", "echo", None,
    ));
    let answer = reload(&weir, &three).await;
    eprintln!("add: the reload took {} s", answer["duration_seconds"]);
    assert_eq!(
        answer["listeners_added"],
        serde_json::json!(["extra", "tunnel"]),
        "{answer}"
    );
    for _ in 0..4 {
        assert_eq!(
            get(extra_port, "/").await.map(|r| r.status),
            Ok(200),
            "{}",
            weir.log_report()
        );
    }
    assert_eq!(get(main_port, "/").await.map(|r| r.status), Ok(200));
    let mut tunnel = TcpStream::connect(addr(tcp_port))
        .await
        .expect("tcp_proxy connects");
    tunnel.write_all(b"ping").await.expect("write");
    let mut pong = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tunnel.read_exact(&mut pong))
        .await
        .expect("echo within 5 s")
        .expect("echo");
    assert_eq!(&pong, b"ping");
    assert_eq!(
        stat(&weir, "weir_listener_manager_listener_added").await,
        3.0
    );
    assert_eq!(
        stat(&weir, "weir_listener_manager_total_listeners_active").await,
        3.0
    );

    // On the extra listener: a slow request in flight, an idle keep-alive HTTP/1.1 connection
    // and an HTTP/2 connection.
    let slow = tokio::spawn(async move { get(extra_port, "/slow/1500").await });
    let mut idle = TcpStream::connect(addr(extra_port)).await.expect("connect");
    idle.write_all(b"GET / HTTP/1.1\r\nhost: example.com\r\n\r\n")
        .await
        .expect("write");
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut head))
        .await
        .expect("answer within 5 s")
        .expect("read");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    let mut h2 = RawH2::connect(addr(extra_port))
        .await
        .expect("h2c connects");
    let mut request = bytes::BytesMut::new();
    weir_tests::h2_frames::get(&mut request, 1, "example.com", "/", true);
    h2.send(&request).await.expect("send");
    let mut answered = false;
    for _ in 0..10 {
        match h2
            .read_frame(Duration::from_secs(5))
            .await
            .expect("read frame")
        {
            Some(frame) if frame.kind == 0x1 && frame.stream == 1 => {
                answered = true;
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    assert!(answered, "the h2 request was answered");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Removed: both go; the ports close, the connections drain.
    let removed_at = Instant::now();
    let answer = reload(&weir, &one).await;
    assert_eq!(
        answer["listeners_removed"],
        serde_json::json!(["extra", "tunnel"]),
        "{answer}"
    );
    assert!(
        refused(extra_port).await,
        "new connections to a removed listener are refused"
    );
    assert!(
        refused(tcp_port).await,
        "new connections to a removed tcp_proxy are refused"
    );
    let closed_in = removed_at.elapsed();
    assert!(
        closed_in < Duration::from_secs(2),
        "ports closed in {closed_in:?}"
    );
    assert_eq!(
        get(main_port, "/").await.map(|r| r.status),
        Ok(200),
        "the kept listener serves"
    );
    assert_eq!(
        stat(&weir, "weir_listener_manager_listener_removed").await,
        2.0
    );
    assert_eq!(
        stat(&weir, "weir_listener_manager_total_listeners_active").await,
        1.0
    );
    assert_eq!(
        stat(&weir, "weir_listener_manager_total_listeners_draining").await,
        2.0
    );
    // The idle HTTP/1.1 connection is closed well within the drain time.
    let idle_closed = read_to_close(&mut idle, DRAIN_TIME).await;
    assert!(
        idle_closed.is_some(),
        "the idle keep-alive connection was closed within {DRAIN_TIME:?}"
    );
    // The HTTP/2 connection gets a GOAWAY.
    let mut goaway = false;
    for _ in 0..10 {
        match h2.read_frame(DRAIN_TIME).await {
            Ok(Some(frame)) if frame.kind == 0x7 => {
                goaway = true;
                break;
            }
            Ok(Some(_)) => continue,
            _ => break,
        }
    }
    assert!(goaway, "the h2 connection got a GOAWAY");
    // The slow request in flight completes.
    let slow = slow.await.expect("slow task");
    assert_eq!(slow.as_ref().map(|r| r.status), Ok(200), "{slow:?}");
    assert_eq!(
        slow.as_ref().map(|r| r.header("connection").to_owned()),
        Ok("close".to_owned())
    );
    // The tunnel runs on through the drain...
    tunnel.write_all(b"more").await.expect("write");
    tokio::time::timeout(Duration::from_secs(2), tunnel.read_exact(&mut pong))
        .await
        .expect("echo within 2 s")
        .expect("the tunnel runs on while its listener drains");
    assert_eq!(&pong, b"more");
    // ...and is closed at the drain time's end.
    let left = read_to_close(&mut tunnel, DRAIN_TIME + Duration::from_secs(2)).await;
    let tunnel_closed = removed_at.elapsed();
    eprintln!(
        "removal: ports refused {closed_in:?} after the reload began, tunnel closed after \
         {tunnel_closed:?} (drain time {DRAIN_TIME:?})"
    );
    assert!(left.is_some(), "the tunnel was closed after the drain time");
    assert!(
        tunnel_closed >= DRAIN_TIME - Duration::from_millis(100)
            && tunnel_closed < DRAIN_TIME + Duration::from_secs(2),
        "tunnel closed {tunnel_closed:?} after the removal (drain time {DRAIN_TIME:?})"
    );
    let mut draining = 1.0;
    for _ in 0..30 {
        draining = stat(&weir, "weir_listener_manager_total_listeners_draining").await;
        if draining == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(draining, 0.0, "no listener drains after the drain time");

    // Added back: it serves again; Envoy's names in /stats.
    let answer = reload(&weir, &three).await;
    assert_eq!(
        answer["listeners_added"],
        serde_json::json!(["extra", "tunnel"]),
        "{answer}"
    );
    assert_eq!(get(extra_port, "/").await.map(|r| r.status), Ok(200));
    let (_, envoy) = weir.admin_get("/stats").await;
    for line in [
        "listener_manager.listener_added: 5",
        "listener_manager.listener_removed: 2",
        "listener_manager.listener_modified: 0",
        "listener_manager.total_listeners_active: 3",
        "listener_manager.total_listeners_draining: 0",
    ] {
        assert!(
            envoy.lines().any(|l| l == line),
            "/stats has {line:?}:\n{envoy}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listener_moved_to_another_address() {
    let up = H1Upstream::start("up").await;
    let (admin, before, after) = (free_port(), free_port(), free_port());
    let weir = start(&bootstrap(
        admin,
        vec![http_listener("main", before)],
        up.addr,
        None,
    ))
    .await;
    assert_eq!(get(before, "/").await.map(|r| r.status), Ok(200));
    let answer = reload(
        &weir,
        &bootstrap(admin, vec![http_listener("main", after)], up.addr, None),
    )
    .await;
    assert_eq!(
        answer["listeners_modified"],
        serde_json::json!(["main"]),
        "{answer}"
    );
    assert_eq!(get(after, "/").await.map(|r| r.status), Ok(200));
    assert!(refused(before).await, "the old address is closed");
    assert_eq!(
        stat(&weir, "weir_listener_manager_listener_modified").await,
        1.0
    );
    assert_eq!(
        stat(&weir, "weir_listener_manager_total_listeners_active").await,
        1.0
    );
}

/// A rustls client trusting exactly the given certificates.
fn trusting(certs: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(rustls::pki_types::CertificateDer::from(cert.to_vec()))
            .expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// One HTTP/1.1 request over a new TLS connection; the status and the server certificate.
async fn tls_get(
    port: u16,
    client: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(u16, Vec<u8>), String> {
    let (tls, _) = weir_tests::client::tls_connect(addr(port), client).await?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .unwrap_or_default();
    let request = Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        weir_tests::client::h1_request_on(tls, request),
    )
    .await
    .map_err(|_| "no answer within 10 s".to_owned())??;
    Ok((response.status, cert))
}

fn tls_bootstrap(
    admin: u16,
    port: u16,
    tls: &weir_tests::tls::TlsFiles,
    backend: SocketAddr,
) -> Value {
    let listener = config::with_tls(http_listener("secure", port), &tls.cert, &tls.key);
    bootstrap(admin, vec![listener], backend, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_change_new_connections_see_it_old_ones_finish() {
    let up = H1Upstream::start("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).expect("mkdir");
    std::fs::create_dir_all(&dir_b).expect("mkdir");
    let (cert_a, cert_b) = (
        weir_tests::tls::self_signed(&dir_a),
        weir_tests::tls::self_signed(&dir_b),
    );
    let (admin, port) = (free_port(), free_port());
    let weir = start(&tls_bootstrap(admin, port, &cert_a, up.addr)).await;
    let both = trusting(&[&cert_a.cert_der, &cert_b.cert_der]);
    let (status, seen) = tls_get(port, both.clone(), "/").await.expect("TLS request");
    assert_eq!((status, seen == cert_a.cert_der), (200, true));

    // A slow request on a connection of the old listener, in flight across the change.
    let old = tokio::spawn({
        let both = both.clone();
        async move { tls_get(port, both, "/slow/1500").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = reload(&weir, &tls_bootstrap(admin, port, &cert_b, up.addr)).await;
    assert_eq!(
        answer["listeners_modified"],
        serde_json::json!(["secure"]),
        "{answer}"
    );
    let (status, seen) = tls_get(port, both.clone(), "/")
        .await
        .expect("TLS request after the change");
    assert_eq!(status, 200);
    assert!(
        seen == cert_b.cert_der,
        "a new connection sees the new certificate"
    );
    assert!(
        tls_get(port, trusting(&[&cert_a.cert_der]), "/")
            .await
            .is_err(),
        "a client trusting only the old certificate is refused"
    );
    let (status, seen) = old
        .await
        .expect("task")
        .expect("the old connection's request completes");
    assert_eq!(status, 200);
    assert!(
        seen == cert_a.cert_der,
        "the old connection kept the old certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_loop_across_listener_replacements_on_one_port_has_no_failure() {
    let up = H1Upstream::start("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).expect("mkdir");
    std::fs::create_dir_all(&dir_b).expect("mkdir");
    let certs = [
        weir_tests::tls::self_signed(&dir_a),
        weir_tests::tls::self_signed(&dir_b),
    ];
    let (admin, port) = (free_port(), free_port());
    let weir = start(&tls_bootstrap(admin, port, &certs[0], up.addr)).await;
    let client = trusting(&[&certs[0].cert_der, &certs[1].cert_der]);

    // Four clients, each request on a new TLS connection, until stopped (at most 60 s).
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let seen_b = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, seen_b, client) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            seen_b.clone(),
            client.clone(),
        );
        let cert_b = certs[1].cert_der.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut first_failure = None;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                match tls_get(port, client.clone(), "/").await {
                    Ok((200, cert)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if cert == cert_b {
                            seen_b.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_failure.get_or_insert(format!("{other:?}"));
                    }
                }
            }
            first_failure
        }));
    }
    const CHANGES: usize = 6;
    for change in 1..=CHANGES {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let answer = reload(
            &weir,
            &tls_bootstrap(admin, port, &certs[change % 2], up.addr),
        )
        .await;
        assert_eq!(
            answer["listeners_modified"],
            serde_json::json!(["secure"]),
            "{answer}"
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for task in tasks {
        if let Some(failure) = task.await.expect("client task") {
            failures.push(failure);
        }
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} requests across {CHANGES} listener replacements, {failed} failed");
    assert_eq!(failed, 0, "{failures:?}\n{}", weir.log_report());
    assert!(ok >= 50, "the loop ran ({ok} requests)");
    assert!(
        seen_b.load(Ordering::Relaxed) > 0,
        "some requests saw the second certificate"
    );
    assert_eq!(
        stat(&weir, "weir_listener_manager_listener_modified").await,
        CHANGES as f64
    );
}

fn with_quic(mut config: Value, port: u16, tls: &weir_tests::tls::TlsFiles) -> Value {
    let hcm = config::hcm(
        "quic_http",
        vec![config::vhost(
            "all",
            &["*"],
            vec![config::route_prefix("/", "backend")],
        )],
    );
    config["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners")
        .push(config::quic_listener("h3", port, hcm, &tls.cert, &tls.key));
    config
}

/// An HTTP/3 connection to `port` trusting only `cert_der`, within 3 s.
async fn h3_connect(port: u16, cert_der: &[u8]) -> Result<weir_tests::h3::H3Client, String> {
    tokio::time::timeout(
        Duration::from_secs(3),
        weir_tests::h3::H3Client::connect(addr(port), "localhost", cert_der),
    )
    .await
    .map_err(|_| "no QUIC handshake within 3 s".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quic_listener_added_replaced_in_place_and_removed() {
    let up = H1Upstream::start("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).expect("mkdir");
    std::fs::create_dir_all(&dir_b).expect("mkdir");
    let (cert_a, cert_b) = (
        weir_tests::tls::self_signed(&dir_a),
        weir_tests::tls::self_signed(&dir_b),
    );
    let (admin, main_port, quic_port) = (free_port(), free_port(), free_port());
    let plain = bootstrap(admin, vec![http_listener("main", main_port)], up.addr, None);
    let weir = start(&plain).await;
    assert!(
        h3_connect(quic_port, &cert_a.cert_der).await.is_err(),
        "no QUIC listener yet"
    );

    // Added: HTTP/3 is served.
    let answer = reload(&weir, &with_quic(plain.clone(), quic_port, &cert_a)).await;
    assert_eq!(
        answer["listeners_added"],
        serde_json::json!(["h3"]),
        "{answer}"
    );
    let old = h3_connect(quic_port, &cert_a.cert_der)
        .await
        .expect("HTTP/3 after the add");
    assert_eq!(old.get("/").await.map(|r| r.status), Ok(200));

    // Replaced at the same port (a new certificate): new connections see it at once; a
    // request in flight on the old connection completes.
    let slow = tokio::spawn(async move {
        let response = old.get("/slow/1500").await;
        (response, old)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = reload(&weir, &with_quic(plain.clone(), quic_port, &cert_b)).await;
    assert_eq!(
        answer["listeners_modified"],
        serde_json::json!(["h3"]),
        "{answer}"
    );
    let new = h3_connect(quic_port, &cert_b.cert_der)
        .await
        .expect("HTTP/3 with the new certificate");
    assert_eq!(new.get("/").await.map(|r| r.status), Ok(200));
    assert!(
        h3_connect(quic_port, &cert_a.cert_der).await.is_err(),
        "a client trusting only the old certificate is refused"
    );
    let (response, _old) = slow.await.expect("slow task");
    assert_eq!(
        response.map(|r| r.status),
        Ok(200),
        "the in-flight request completed"
    );
    assert_eq!(
        stat(&weir, "weir_listener_manager_listener_modified").await,
        1.0
    );

    // Removed: new connections are not served; the TCP listener goes on.
    let answer = reload(&weir, &plain).await;
    assert_eq!(
        answer["listeners_removed"],
        serde_json::json!(["h3"]),
        "{answer}"
    );
    assert!(
        h3_connect(quic_port, &cert_b.cert_der).await.is_err(),
        "the QUIC listener is gone"
    );
    assert_eq!(get(main_port, "/").await.map(|r| r.status), Ok(200));
    assert_eq!(
        stat(&weir, "weir_listener_manager_total_listeners_active").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_clients_across_listener_replacements_see_connection_close_not_failures() {
    let up = H1Upstream::start("up").await;
    let (admin, port) = (free_port(), free_port());
    let config = |original_dst: bool| {
        let mut listener = http_listener("main", port);
        if original_dst {
            listener["use_original_dst"] = serde_json::json!(true);
        }
        bootstrap(admin, vec![listener], up.addr, None)
    };
    let weir = start(&config(false)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let closes = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, ok, closes, failed) = (stop.clone(), ok.clone(), closes.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut first_failure = None;
            let mut sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> = None;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                if sender.as_ref().is_none_or(|s| s.is_closed()) {
                    let tcp = match TcpStream::connect(addr(port)).await {
                        Ok(tcp) => tcp,
                        Err(error) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_failure.get_or_insert(format!("connect: {error}"));
                            continue;
                        }
                    };
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let Ok((s, connection)) = hyper::client::conn::http1::handshake(io).await
                    else {
                        continue;
                    };
                    tokio::spawn(connection);
                    sender = Some(s);
                }
                let Some(s) = sender.as_mut() else { continue };
                if s.ready().await.is_err() {
                    sender = None;
                    continue;
                }
                let request = Request::get("/")
                    .header("host", "example.com")
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                match tokio::time::timeout(Duration::from_secs(10), s.send_request(request)).await {
                    Ok(Ok(response)) if response.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                        if sender.as_ref().is_some_and(|s| s.is_closed()) {
                            closes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_failure.get_or_insert(format!("{other:?}"));
                        sender = None;
                    }
                }
            }
            first_failure
        }));
    }
    const CHANGES: usize = 6;
    for change in 1..=CHANGES {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let answer = reload(&weir, &config(change % 2 == 1)).await;
        assert_eq!(
            answer["listeners_modified"],
            serde_json::json!(["main"]),
            "{answer}"
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for task in tasks {
        if let Some(failure) = task.await.expect("client task") {
            failures.push(failure);
        }
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "keep-alive: {ok} requests across {CHANGES} replacements, {failed} failed, {} connections closed after a response",
        closes.load(Ordering::Relaxed)
    );
    assert_eq!(failed, 0, "{failures:?}");
    assert!(ok >= 50, "the loop ran ({ok} requests)");
    // Each replacement sent the busy clients away with `connection: close` on a response.
    assert!(
        closes.load(Ordering::Relaxed) >= CHANGES as u64,
        "connections closed after a response: {}",
        closes.load(Ordering::Relaxed)
    );
}
