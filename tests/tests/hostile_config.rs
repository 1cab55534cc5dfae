//! `weir validate` on configs written to hurt: files that are devices, FIFOs or missing, and
//! a document nested 100,000 deep. Each is refused in under a second, naming the field.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weir_tests::client::run_tool;
use weir_tests::config::{self, Ports};
use weir_tests::weir_bin;

/// What each refusal must take at most (the process's start included).
const BOUND: Duration = Duration::from_secs(1);
/// How long the tool may run before it is killed: well past the bound, so a hang shows as a
/// failed bound, not a stuck test.
const LIMIT: Duration = Duration::from_secs(20);

/// The field paths in the suite's one-listener config.
const HCM: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";
const CERT: &str = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0]";

/// Runs `weir validate -c FILE`; returns (exit code, stderr, how long it took).
async fn validate(file: &Path) -> (i32, String, Duration) {
    let bin = weir_bin();
    let started = Instant::now();
    let out = run_tool(
        bin.to_str().expect("utf-8 path"),
        &["validate", "-c", file.to_str().expect("utf-8 path")],
        LIMIT,
    )
    .await;
    (out.code, out.stderr, started.elapsed())
}

/// Validates `config` (written to `dir`) and checks it is refused within [`BOUND`] with
/// `field` and `reason` in the message.
async fn assert_refused(dir: &Path, config: &str, field: &str, reason: &str) {
    let file = dir.join("hostile.yaml");
    std::fs::write(&file, config).expect("write the config");
    let (code, stderr, took) = validate(&file).await;
    assert_eq!(code, 1, "must be refused; stderr:\n{stderr}");
    assert!(took < BOUND, "took {took:?}; stderr:\n{stderr}");
    assert!(
        stderr.contains(field),
        "the message must name {field}:\n{stderr}"
    );
    assert!(stderr.contains(reason), "expected {reason:?}:\n{stderr}");
}

fn simple() -> Value {
    config::simple(Ports::new(), &["127.0.0.1:1".parse().expect("address")])
}

fn with_body_file(file: &Path) -> String {
    let mut cfg = simple();
    config::hcm_of(&mut cfg)["route_config"]["virtual_hosts"][0]["routes"][0] = json!({
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"filename": path(file)}},
    });
    cfg.to_string()
}

fn with_certificate(cert: &Path, key: &Path) -> String {
    let mut cfg = simple();
    let listener = cfg["static_resources"]["listeners"][0].take();
    cfg["static_resources"]["listeners"][0] = config::with_tls(listener, cert, key);
    cfg.to_string()
}

fn with_wasm_module(module: &Path) -> String {
    let mut cfg = simple();
    config::hcm_of(&mut cfg)["http_filters"] = json!([
        {
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {"vm_config": {"code": {"local": {"filename": path(module)}}}},
            },
        },
        {"name": "envoy.filters.http.router", "typed_config": {"@type": config::ROUTER_TYPE}},
    ]);
    cfg.to_string()
}

fn path(file: &Path) -> &str {
    file.to_str().expect("utf-8 path")
}

fn fifo(dir: &Path) -> PathBuf {
    let fifo = dir.join("fifo");
    let c_path = std::ffi::CString::new(path(&fifo)).expect("no NUL");
    // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    fifo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_zero_as_a_wasm_module_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let field = format!("{HCM}.http_filters[0].typed_config.config.vm_config.code.local.filename");
    let config = with_wasm_module(Path::new("/dev/zero"));
    assert_refused(dir.path(), &config, &field, "not a regular file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_zero_as_a_body_file_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let field =
        format!("{HCM}.route_config.virtual_hosts[0].routes[0].direct_response.body.filename");
    let config = with_body_file(Path::new("/dev/zero"));
    assert_refused(dir.path(), &config, &field, "not a regular file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_zero_as_a_certificate_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let field = format!("{CERT}.certificate_chain.filename");
    let config = with_certificate(Path::new("/dev/zero"), &tls.key);
    assert_refused(dir.path(), &config, &field, "not a regular file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let fifo = fifo(dir.path());
    let field = format!("{CERT}.private_key.filename");
    let config = with_certificate(&tls.cert, &fifo);
    assert_refused(dir.path(), &config, &field, "FIFO").await;
    let field =
        format!("{HCM}.route_config.virtual_hosts[0].routes[0].direct_response.body.filename");
    assert_refused(dir.path(), &with_body_file(&fifo), &field, "FIFO").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_certificate_fails_validation_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let missing = dir.path().join("missing.pem");
    let field = format!("{CERT}.certificate_chain.filename");
    let config = with_certificate(&missing, &tls.key);
    assert_refused(dir.path(), &config, &field, "missing.pem").await;

    // The same files, both present, validate.
    let file = dir.path().join("good.yaml");
    std::fs::write(&file, with_certificate(&tls.cert, &tls.key)).expect("write");
    let (code, stderr, _) = validate(&file).await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_nested_100000_deep_is_refused_at_once_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = format!("static_resources:\n  listeners: {}\n", "[".repeat(100_000));
    assert_refused(dir.path(), &flow, "line 2, column", "nest deeper than 64").await;
    // Block sequences, 100,000 deep on one line (`- - - ... x`).
    let block = format!("static_resources: {{}}\nx:\n  {}x\n", "- ".repeat(100_000));
    assert_refused(dir.path(), &block, "line 3, column", "nest deeper than 64").await;
    // Block mappings by indentation: 200 deep is enough to pass the limit (100,000 would be
    // a 10 GB file).
    let indented: String = (0..200)
        .map(|depth| format!("{}k{depth}:\n", " ".repeat(depth)))
        .collect();
    assert_refused(
        dir.path(),
        &indented,
        "line 65, column 65",
        "nest deeper than 64",
    )
    .await;
}
