//! `weir validate`, refusing bad configs, and the built-in config.

use serde_json::json;
use std::time::Duration;
use weir_tests::client::run_tool;
use weir_tests::config::{self, Ports};
use weir_tests::{H1Upstream, weir_bin};

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `weir validate -c FILE`; returns (exit code, stdout + stderr).
async fn validate(file: &std::path::Path) -> (i32, String) {
    let bin = weir_bin();
    let out = run_tool(
        bin.to_str().expect("utf-8 path"),
        &["validate", "-c", file.to_str().expect("utf-8 path")],
        LIMIT,
    )
    .await;
    (out.code, format!("{}{}", out.stdout_text(), out.stderr))
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn sample(ports: Ports) -> serde_json::Value {
    config::simple(ports, &["127.0.0.1:1".parse().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_rejects_unknown_field_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sample(Ports::new());
    config::cluster_of(&mut cfg, 0)["lb_polcy"] = json!("ROUND_ROBIN");
    let file = write(dir.path(), "typo.yaml", &cfg.to_string());
    let (code, msg) = validate(&file).await;
    assert_ne!(
        code, 0,
        "an unknown field must fail validation; output:\n{msg}"
    );
    assert!(
        msg.contains("typo.yaml"),
        "the message must name the file:\n{msg}"
    );
    assert!(
        msg.contains("static_resources.clusters[0]"),
        "the message must give the field path:\n{msg}"
    );
    assert!(
        msg.contains("lb_polcy"),
        "the message must name the unknown field:\n{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_rejects_bad_enum_naming_what_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sample(Ports::new());
    config::cluster_of(&mut cfg, 0)["lb_policy"] = json!("FASTEST");
    let file = write(dir.path(), "enum.yaml", &cfg.to_string());
    let (code, msg) = validate(&file).await;
    assert_ne!(code, 0, "output:\n{msg}");
    assert!(
        msg.contains("static_resources.clusters[0].lb_policy"),
        "field path missing:\n{msg}"
    );
    assert!(
        msg.contains("ROUND_ROBIN"),
        "the message must say what is accepted:\n{msg}"
    );
}

/// A hand-written block-style YAML config in Envoy's spelling, using every feature the
/// e2e suite relies on.
const ENVOY_STYLE: &str = r#"
# An Envoy v3 bootstrap, as an Envoy user would write it.
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 9901 }
static_resources:
  listeners:
  - name: listener_0
    address:
      socket_address: { address: 127.0.0.1, port_value: 10000 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          codec_type: AUTO
          generate_request_id: true
          request_timeout: 30s
          common_http_protocol_options:
            idle_timeout: 300s
            max_headers_count: 100
          route_config:
            name: local_route
            virtual_hosts:
            - name: backend
              domains: ["*.example.com", "example.*", "*"]
              routes:
              - match: { path: "/healthz" }
                direct_response: { status: 200, body: { inline_string: "ok" } }
              - match:
                  safe_regex: { regex: "/items/[0-9]+" }
                route: { cluster: service }
              - match:
                  prefix: "/api/"
                  headers:
                  - name: x-tenant
                    string_match: { exact: blue }
                route: { cluster: service, prefix_rewrite: "/v2/", host_rewrite_literal: api.internal, timeout: 5s }
              - match: { prefix: "/" }
                route: { cluster: service }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: { filename: "CERT" }
              private_key: { filename: "KEY" }
  clusters:
  - name: service
    type: STATIC
    connect_timeout: 0.25s
    lb_policy: ROUND_ROBIN
    circuit_breakers:
      thresholds:
      - max_connections: 100
        max_pending_requests: 100
        max_requests: 1000
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
        common_http_protocol_options:
          max_requests_per_connection: 10
    health_checks:
    - timeout: 1s
      interval: 5s
      healthy_threshold: 1
      unhealthy_threshold: 2
      http_health_check: { path: /health }
    load_assignment:
      cluster_name: service
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: 8080 }
  - name: dns_service
    type: STRICT_DNS
    connect_timeout: 1s
    lb_policy: LEAST_REQUEST
    load_assignment:
      cluster_name: dns_service
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: localhost, port_value: 8081 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_accepts_good_configs() {
    let dir = tempfile::tempdir().unwrap();
    let tls = weir_tests::tls::self_signed(dir.path());
    let text = ENVOY_STYLE
        .replace("CERT", tls.cert.to_str().unwrap())
        .replace("KEY", tls.key.to_str().unwrap());
    let file = write(dir.path(), "envoy.yaml", &text);
    let (code, msg) = validate(&file).await;
    assert_eq!(code, 0, "an Envoy-style config must validate:\n{msg}");

    let file = write(dir.path(), "simple.yaml", &sample(Ports::new()).to_string());
    let (code, msg) = validate(&file).await;
    assert_eq!(code, 0, "the suite's own config must validate:\n{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_refuses_a_bad_config() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    config::hcm_of(&mut cfg)["codec_type"] = json!("HTTP9");
    let mut weir = weir_tests::Weir::spawn(&cfg, &["--concurrency", "1"]);
    let status = weir
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("weir kept running on a bad config\n{}", weir.log_report()));
    assert!(!status.success(), "weir exited 0 on a bad config");
    let log = weir.log();
    assert!(
        log.contains("codec_type"),
        "the error must name the field:\n{log}"
    );
    assert!(
        weir_tests::get(ports.http_addr(), "/").await.is_err(),
        "nothing may listen after a refused config"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_config_serves_builtin_page_on_port_10000() {
    // The built-in config binds 127.0.0.1:10000; if something else holds it, this test cannot
    // tell anything and says so instead of failing.
    match std::net::TcpListener::bind("127.0.0.1:10000") {
        Ok(l) => drop(l),
        Err(e) => {
            eprintln!(
                "SKIPPED no_config_serves_builtin_page_on_port_10000: 127.0.0.1:10000 is taken ({e})"
            );
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(weir_bin());
    cmd.args(["--concurrency", "1", "--log-level", "debug"]);
    let config_path = dir.path().join("(built-in)");
    // The built-in admin address is not ours to know; readiness is judged on port 10000.
    let mut weir =
        weir_tests::Weir::spawn_command(cmd, dir, config_path, "127.0.0.1:9901".parse().unwrap());
    let addr: std::net::SocketAddr = "127.0.0.1:10000".parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let resp = loop {
        if let Some(status) = weir.try_exit_status() {
            panic!("weir without -c exited ({status})\n{}", weir.log_report());
        }
        if let Ok(r) = weir_tests::get(addr, "/").await {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing answered on 127.0.0.1:10000 within 10 s\n{}",
            weir.log_report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(resp.status, 200, "built-in page: {resp:?}");
    assert!(!resp.body.is_empty(), "the built-in page is empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_options_config_path_and_log_level() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let cfg = config::simple(ports, &[up.addr]);
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "long.yaml", &cfg.to_string());

    let bin = weir_bin();
    let out = run_tool(
        bin.to_str().unwrap(),
        &["validate", "--config-path", file.to_str().unwrap()],
        LIMIT,
    )
    .await;
    assert_eq!(out.code, 0, "validate --config-path: {out:?}");

    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("--config-path")
        .arg(&file)
        .args(["--log-level", "info", "--concurrency", "2"]);
    let mut weir =
        weir_tests::Weir::spawn_command(cmd, dir, file, weir_tests::weir::admin_addr(&cfg));
    weir.wait_ready().await;
    let r = weir_tests::get(ports.http_addr(), "/long")
        .await
        .expect("GET");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), "up");
}

/// The official proxy-wasm Rust SDK's example `envoy.yaml` (examples/http_headers) writes
/// `listeners:` as one object, not a list; Envoy reads it as a list of one, and so does weir.
/// Only the module path and the port are changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_field_written_as_one_object_is_a_list_of_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = weir_tests::wasm::fixture("headers");
    let port = weir_tests::free_port();
    let text = format!(
        r#"static_resources:
  listeners:
    address:
      socket_address:
        address: 127.0.0.1
        port_value: {port}
    filter_chains:
      - filters:
          - name: envoy.filters.network.http_connection_manager
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              stat_prefix: ingress_http
              codec_type: AUTO
              route_config:
                name: local_routes
                virtual_hosts:
                  - name: local_service
                    domains:
                      - "*"
                    routes:
                      - match:
                          prefix: "/"
                        direct_response:
                          status: 200
                          body:
                            inline_string: "Request /hello and be welcomed!"
              http_filters:
                - name: envoy.filters.http.wasm
                  typed_config:
                    "@type": type.googleapis.com/udpa.type.v1.TypedStruct
                    type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                    value:
                      config:
                        name: "http_headers"
                        vm_config:
                          runtime: "envoy.wasm.runtime.v8"
                          code:
                            local:
                              filename: "{module}"
                - name: envoy.filters.http.router
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        module = module.display()
    );
    let file = write(dir.path(), "envoy.yaml", &text);
    let (code, out) = validate(&file).await;
    assert_eq!(code, 0, "{out}");

    // A typo inside the one object still names its path.
    let bad = write(
        dir.path(),
        "bad.yaml",
        &text.replace("    filter_chains:", "    filter_chain:"),
    );
    let (code, out) = validate(&bad).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("static_resources.listeners"), "{out}");
    assert!(out.contains("filter_chain"), "{out}");
}
