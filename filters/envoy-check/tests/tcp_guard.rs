//! The network filter `tcp-guard` (weir-sdk `StreamContext`) in real Envoy 1.40 (V8), as
//! `envoy.filters.network.wasm` before a tcp_proxy: the same traffic as weir's
//! `tests/tests/network_wasm.rs` (`envoy_and_weir_count_the_same`) gets the same bytes and
//! the same metric values. Fails — never skips — when Envoy or the wasm target is missing.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_check::envoy::{self, Envoy};
use envoy_check::{build_filters, http};

/// The plugin configuration weir's test uses too.
const CONFIG: &str = r#"{"prefix": "HELLO ", "strip_prefix": true, "rewrite_downstream": {"from": "ping", "to": "PING"}, "rewrite_upstream": {"from": "PING", "to": "pong"}}"#;

/// An echo server on 127.0.0.1:0 that records everything it received.
fn echo_server() -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let mut buf = [0u8; 65536];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    record.lock().expect("lock").extend_from_slice(&buf[..n]);
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    (addr, seen)
}

/// Sends `parts` (200 ms apart), then a FIN, and reads to the end (at most 20 s).
fn exchange(addr: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect to envoy");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    for part in parts {
        stream.write_all(part).expect("write");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = stream.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// `wasmcustom.tcp_guard.<name>` from Envoy's `/stats`.
fn stat(envoy: &Envoy, name: &str) -> Option<u64> {
    let resp = http::get(&envoy.admin, "/stats?filter=tcp_guard", &[]).ok()?;
    let body = String::from_utf8_lossy(&resp.body).into_owned();
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("wasmcustom.tcp_guard.{name}: ")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn tcp_guard_runs_in_real_envoy() {
    let wasm = build_filters();
    let bin = envoy::binary();
    let (upstream, seen) = echo_server();
    let (host, port) = upstream.rsplit_once(':').expect("addr");
    let dir = std::env::temp_dir().join(format!("weir-envoy-tcp-guard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: tcp_guard
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config:
            name: tcp_guard
            root_id: tcp_guard
            vm_config:
              vm_id: tcp_guard
              runtime: envoy.wasm.runtime.v8
              code: {{ local: {{ filename: "{module}" }} }}
            configuration:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: '{CONFIG}'
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp_guard
          cluster: upstream
  clusters:
  - name: upstream
    connect_timeout: 5s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}
"#,
        module = wasm.join("tcp_guard.wasm").display(),
    );
    let config_path = dir.join("envoy.yaml");
    std::fs::write(&config_path, config).expect("write config");
    let envoy = Envoy::start(&bin, &config_path, &dir);
    let listener = envoy.listener("tcp_guard");

    let good = exchange(&listener, &[b"HEL", b"LO ping and ping!"]);
    let bad = exchange(&listener, &[b"GET / HTTP/1.1\r\n\r\n"]);
    let expected = [
        ("connections", 2),
        ("downstream_bytes", 38),
        ("upstream_bytes", 14),
        ("rejected", 1),
        ("rewrites", 4),
        ("downstream_closes", 2),
        ("upstream_closes", 1),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut counts: Vec<(&str, Option<u64>)>;
    loop {
        counts = expected
            .iter()
            .map(|(name, _)| (*name, stat(&envoy, name)))
            .collect();
        let all = counts
            .iter()
            .zip(&expected)
            .all(|((_, got), (_, want))| *got == Some(*want));
        if all || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = envoy.log_text();
    drop(envoy);
    assert_eq!(String::from_utf8_lossy(&good), "pong and pong!", "{log}");
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        String::from_utf8_lossy(&seen.lock().expect("lock")),
        "PING and PING!"
    );
    let wanted: Vec<(&str, Option<u64>)> = expected.iter().map(|(n, v)| (*n, Some(*v))).collect();
    assert_eq!(counts, wanted, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
