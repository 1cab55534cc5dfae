//! Loads every weir filter (and the AssemblyScript and C modules) into real Envoy 1.40 (V8) and
//! checks, from a client's side, that it does what its README says. Fails — never skips — when Envoy or the wasm target is missing.
//!
//! One Envoy (one worker, hot restart off, started with `setsid`, killed at the end) serves one
//! listener per filter on ephemeral ports, routing to a tiny upstream on 127.0.0.1.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use envoy_check::envoy::{self, Envoy};
use envoy_check::{build_assemblyscript_fixture, build_c_filter, build_filters, http, upstream};

/// One listener: its name (also the plugin's root_id and vm_id), the module, the plugin
/// configuration JSON, and whether the filter goes in the websocket upgrade chain.
#[derive(Clone, Copy)]
struct Plugin<'a> {
    name: &'a str,
    module: &'a str,
    config: &'a str,
    websocket_chain: bool,
}

fn wasm_filter(dir: &Path, p: &Plugin<'_>) -> String {
    format!(
        r#"
                - name: envoy.filters.http.wasm
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                    config:
                      name: {name}
                      root_id: {name}
                      vm_config:
                        vm_id: {name}
                        runtime: envoy.wasm.runtime.v8
                        code: {{ local: {{ filename: "{file}" }} }}
                      configuration:
                        "@type": type.googleapis.com/google.protobuf.StringValue
                        value: '{config}'"#,
        name = p.name,
        file = dir.join(p.module).display(),
        config = p.config,
    )
}

fn listener(dir: &Path, p: &Plugin<'_>) -> String {
    let router = r#"
                - name: envoy.filters.http.router
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#;
    let (filters, upgrade) = if p.websocket_chain {
        // Only the websocket upgrade chain runs the filter; plain requests get the router.
        let chain = format!("{}{router}", wasm_filter(dir, p));
        (
            router.to_owned(),
            format!(
                "\n          upgrade_configs:\n          - upgrade_type: websocket\n            filters:{chain}"
            ),
        )
    } else {
        (format!("{}{router}", wasm_filter(dir, p)), String::new())
    };
    format!(
        r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream, timeout: 10s }}{upgrade}
          http_filters:{filters}"#,
        name = p.name,
    )
}

fn config(dir: &Path, upstream: &str, plugins: &[Plugin<'_>]) -> String {
    let (host, port) = upstream.rsplit_once(':').expect("upstream addr");
    let listeners: String = plugins.iter().map(|p| listener(dir, p)).collect();
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:{listeners}
  clusters:
  - name: upstream
    connect_timeout: 5s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}
"#
    )
}

const PLUGINS: &[Plugin<'static>] = &[
    Plugin {
        name: "header_manipulation",
        module: "header_manipulation.wasm",
        config: r#"{"request": {"remove": ["x-remove-me"], "set": {"x-set-request": "1"}, "add": [{"name": "x-added-request", "value": "a"}]}, "response": {"remove": ["x-upstream-secret"], "set": {"x-set-response": "yes"}}}"#,
        websocket_chain: false,
    },
    Plugin {
        name: "auth",
        module: "auth.wasm",
        config: r#"{"api_key": {"header": "x-api-key", "keys": ["k1"]}, "basic": {"users": {"alice": "s3cret"}}, "realm": "test"}"#,
        websocket_chain: false,
    },
    Plugin {
        name: "local_rate_limit",
        module: "local_rate_limit.wasm",
        config: r#"{"name": "t", "max_tokens": 3, "fill_interval_ms": 3600000}"#,
        websocket_chain: false,
    },
    Plugin {
        name: "websocket_guard",
        module: "websocket_guard.wasm",
        config: r#"{"max_client_messages": 3}"#,
        websocket_chain: true,
    },
];

fn check_header_manipulation(envoy: &Envoy) {
    let addr = envoy.listener("header_manipulation");
    let resp = http::get(&addr, "/hm", &[("x-remove-me", "gone"), ("x-keep", "kept")])
        .expect("request through header_manipulation");
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen_upstream = resp.text().to_ascii_lowercase();
    assert!(
        seen_upstream.contains("x-set-request: 1"),
        "{seen_upstream}"
    );
    assert!(
        seen_upstream.contains("x-added-request: a"),
        "{seen_upstream}"
    );
    assert!(seen_upstream.contains("x-keep: kept"), "{seen_upstream}");
    assert!(!seen_upstream.contains("x-remove-me"), "{seen_upstream}");
    assert_eq!(resp.header("x-set-response"), Some("yes"), "{resp:?}");
    assert_eq!(resp.header("x-upstream-secret"), None, "{resp:?}");
}

fn check_auth(envoy: &Envoy) {
    let addr = envoy.listener("auth");
    let denied = http::get(&addr, "/", &[]).expect("request without credentials");
    assert_eq!(denied.status, 401, "{denied:?}");
    let challenges = denied.all("www-authenticate");
    assert!(
        challenges
            .iter()
            .any(|c| c.starts_with("Basic realm=\"test\"")),
        "{denied:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("ApiKey")),
        "{denied:?}"
    );

    let key = http::get(&addr, "/", &[("x-api-key", "k1")]).expect("request with api key");
    assert_eq!(key.status, 200, "{key:?}");
    assert!(
        !key.text().to_ascii_lowercase().contains("x-api-key"),
        "key leaked upstream"
    );

    let wrong_key = http::get(&addr, "/", &[("x-api-key", "k2")]).expect("wrong key");
    assert_eq!(wrong_key.status, 401);

    // alice:s3cret
    let basic = http::get(&addr, "/", &[("authorization", "Basic YWxpY2U6czNjcmV0")])
        .expect("request with basic");
    assert_eq!(basic.status, 200, "{basic:?}");
    // alice:wrong
    let wrong = http::get(&addr, "/", &[("authorization", "Basic YWxpY2U6d3Jvbmc=")])
        .expect("request with a wrong password");
    assert_eq!(wrong.status, 401, "{wrong:?}");
}

fn check_local_rate_limit(envoy: &Envoy) {
    let addr = envoy.listener("local_rate_limit");
    for i in 1..=3 {
        let resp = http::get(&addr, "/", &[]).expect("request under the limit");
        assert_eq!(resp.status, 200, "request {i}: {resp:?}");
    }
    let limited = http::get(&addr, "/", &[]).expect("request over the limit");
    assert_eq!(limited.status, 429, "{limited:?}");
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric retry-after: {limited:?}"));
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
}

/// The AssemblyScript fixture (npm proxy-wasm SDK) answers as `tests/tests/wasm_fixtures.rs`
/// expects it to in weir.
fn check_path_guard(envoy: &Envoy) {
    let addr = envoy.listener("path_guard");
    for path in ["/admin", "/admin/users", "/private/x"] {
        let blocked = http::get(&addr, path, &[]).expect("request to a blocked path");
        assert_eq!(blocked.status, 403, "{path}: {blocked:?}");
        assert_eq!(
            blocked.header("x-path-guard"),
            Some("blocked"),
            "{blocked:?}"
        );
        assert_eq!(blocked.text(), "blocked by path-guard\n", "{blocked:?}");
    }
    let passed = http::get(&addr, "/private", &[]).expect("request to an open path");
    assert_eq!(passed.status, 200, "{passed:?}");
    assert_eq!(passed.header("x-path-guard"), Some("passed"), "{passed:?}");
    let seen_upstream = passed.text().to_ascii_lowercase();
    assert!(
        seen_upstream.contains("x-path-guard: passed"),
        "{seen_upstream}"
    );
}

/// The C filter (no SDK) answers as `tests/tests/wasm_c_filter.rs` expects it to in weir.
fn check_c_header(envoy: &Envoy) {
    let addr = envoy.listener("c_header");
    for path in ["/admin", "/admin/users?x=1"] {
        let refused = http::get(&addr, path, &[]).expect("request to a refused path");
        assert_eq!(refused.status, 403, "{path}: {refused:?}");
        assert_eq!(refused.text(), "blocked by c-header\n", "{refused:?}");
        assert_eq!(
            refused.header("x-c-header"),
            Some("hello from C"),
            "{refused:?}"
        );
    }
    let passed = http::get(&addr, "/public/admin", &[]).expect("request to an open path");
    assert_eq!(passed.status, 200, "{passed:?}");
    assert_eq!(
        passed.header("x-c-header"),
        Some("hello from C"),
        "{passed:?}"
    );
}

fn check_websocket_guard(envoy: &Envoy, upstream: &upstream::Upstream) {
    let addr = envoy.listener("websocket_guard");
    let mut ws = http::connect(&addr).expect("connect websocket_guard");
    use std::io::Write;
    ws.write_all(
        format!(
            "GET /chat HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("send upgrade");
    let head = http::read_head(&mut ws).expect("upgrade response");
    assert_eq!(head.status, 101, "{head:?}");
    let key = Some([9, 8, 7, 6]);
    for i in 0..3u8 {
        let msg = [b'm', b'0' + i];
        http::write_frame(&mut ws, 0x1, &msg, key).expect("send message under the limit");
        let (opcode, echo) = http::read_frame(&mut ws).expect("echo under the limit");
        assert_eq!((opcode, echo.as_slice()), (0x1, &msg[..]));
    }
    // The fourth message is over the limit: it must not be echoed, and Envoy closes.
    let _ = http::write_frame(&mut ws, 0x1, b"m3", key);
    ws.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    match http::read_frame(&mut ws) {
        Ok(frame) => panic!("message over the limit came back: {frame:?}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "expected the connection to close, got {e}"
        ),
    }
    assert_eq!(upstream.ws_frames.load(Ordering::SeqCst), 3);
}

#[test]
fn filters_run_in_real_envoy() {
    let wasm = build_filters();
    let bin = envoy::binary();
    let upstream = upstream::start();
    let dir = std::env::temp_dir().join(format!("weir-envoy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config_path = dir.join("envoy.yaml");
    let path_guard = build_assemblyscript_fixture();
    let path_guard = path_guard.display().to_string();
    let c_header = build_c_filter().display().to_string();
    let plugins: Vec<Plugin<'_>> = PLUGINS
        .iter()
        .copied()
        .chain([Plugin {
            name: "path_guard",
            module: &path_guard,
            config: "/admin, /private/",
            websocket_chain: false,
        }])
        .chain([Plugin {
            name: "c_header",
            module: &c_header,
            config: "/admin",
            websocket_chain: false,
        }])
        .collect();
    std::fs::write(&config_path, config(&wasm, &upstream.addr, &plugins)).expect("write config");

    let envoy = Envoy::start(&bin, &config_path, &dir);
    let checks: [(&str, &dyn Fn()); 6] = [
        ("header_manipulation", &|| check_header_manipulation(&envoy)),
        ("auth", &|| check_auth(&envoy)),
        ("local_rate_limit", &|| check_local_rate_limit(&envoy)),
        ("path_guard", &|| check_path_guard(&envoy)),
        ("c_header", &|| check_c_header(&envoy)),
        ("websocket_guard", &|| {
            check_websocket_guard(&envoy, &upstream)
        }),
    ];
    let mut failed = Vec::new();
    for (name, check) in checks {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{name}: {msg}"));
        }
    }
    let log = envoy.log_text();
    drop(envoy);
    assert!(
        failed.is_empty(),
        "failed in Envoy:\n{}\n--- envoy log (wasm lines) ---\n{}",
        failed.join("\n"),
        log.lines()
            .filter(|l| l.contains("wasm") || l.contains("critical") || l.contains("error"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
