//! Configs written to hurt: files that are devices, FIFOs, missing or huge, TLS material that
//! does not parse, documents nested too deep. Each is refused at once, naming the field.

use super::*;
use crate::config::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A listener with a `direct_response` route; `{ROUTE_EXTRA}`, `{BODY}`, `{TLS}` and
/// `{FILTERS}` are filled in by each test.
const BASE: &str = r#"
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 127.0.0.1, port_value: 8080 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            {ROUTE_EXTRA}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: {BODY} }
          http_filters:
          {FILTERS}
          - name: envoy.filters.http.router
      {TLS}
"#;

fn config(route_extra: &str, body: &str, tls: &str, filters: &str) -> String {
    BASE.replace("{ROUTE_EXTRA}", route_extra)
        .replace("{BODY}", body)
        .replace("{TLS}", tls)
        .replace("{FILTERS}", filters)
}

fn body_file(file: &str) -> String {
    config("", &format!("{{ filename: {file:?} }}"), "", "")
}

fn tls_files(chain: &str, key: &str) -> String {
    let tls = format!(
        r#"transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: {chain:?} }}
              private_key: {{ filename: {key:?} }}"#
    );
    config("", "{ inline_string: ok }", &tls, "")
}

fn wasm_file(file: &str) -> String {
    let filter = format!(
        r#"- name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                vm_config:
                  code: {{ local: {{ filename: {file:?} }} }}"#
    );
    config("", "{ inline_string: ok }", "", &filter)
}

fn testdata(file: &str) -> String {
    format!(
        "{}/src/upstream/testdata/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The error of loading `text`, and how long the load took.
fn refused(text: &str) -> (ConfigError, Duration) {
    let started = Instant::now();
    match load_str(text, "hostile.yaml") {
        Ok(_) => panic!("should be refused:\n{text}"),
        Err(error) => (error, started.elapsed()),
    }
}

fn make_fifo(dir: &Path) -> PathBuf {
    let fifo = dir.join("fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    fifo
}

const CERT_FIELD: &str = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0]";
const BODY_FIELD: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].direct_response.body";

#[test]
fn the_base_config_loads_with_real_files() {
    let config = load_str(
        &tls_files(&testdata("cert.pem"), &testdata("key.pem")),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        config.listeners[0].tls.as_ref().unwrap().certificates.len(),
        1
    );
}

#[test]
fn dev_zero_is_refused_in_every_file_field() {
    for (text, field) in [
        (body_file("/dev/zero"), format!("{BODY_FIELD}.filename")),
        (
            tls_files("/dev/zero", &testdata("key.pem")),
            format!("{CERT_FIELD}.certificate_chain.filename"),
        ),
        (
            tls_files(&testdata("cert.pem"), "/dev/zero"),
            format!("{CERT_FIELD}.private_key.filename"),
        ),
        (
            wasm_file("/dev/zero"),
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.config.vm_config.code.local.filename".into(),
        ),
    ] {
        let (error, took) = refused(&text);
        assert_eq!(error.path, field, "{error}");
        assert!(error.message.contains("not a regular file"), "{error}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}

#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = make_fifo(dir.path());
    let (error, took) = refused(&body_file(fifo.to_str().unwrap()));
    assert_eq!(error.path, format!("{BODY_FIELD}.filename"));
    assert!(error.message.contains("FIFO"), "{error}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn a_missing_or_broken_certificate_is_a_config_error() {
    let (error, _) = refused(&tls_files("/nonexistent/cert.pem", &testdata("key.pem")));
    assert_eq!(
        error.path,
        format!("{CERT_FIELD}.certificate_chain.filename")
    );
    assert!(error.message.contains("/nonexistent/cert.pem"), "{error}");

    let (error, _) = refused(&tls_files(&testdata("key.pem"), &testdata("key.pem")));
    assert_eq!(
        error.path,
        format!("{CERT_FIELD}.certificate_chain.filename")
    );
    assert!(error.message.contains("no CERTIFICATE"), "{error}");

    // ca.pem is a certificate, but not the one key.pem signs for.
    let (error, _) = refused(&tls_files(&testdata("ca.pem"), &testdata("key.pem")));
    assert_eq!(error.path, CERT_FIELD);
    assert!(error.message.contains("do not match"), "{error}");
}

#[test]
fn a_direct_response_body_is_bounded_as_in_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 5000]).unwrap();
    let (error, _) = refused(&body_file(big.to_str().unwrap()));
    assert_eq!(error.path, format!("{BODY_FIELD}.filename"));
    assert!(error.message.contains("4096"), "{error}");

    let inline = format!("{{ inline_string: {} }}", "x".repeat(5000));
    let (error, _) = refused(&config("", &inline, "", ""));
    assert_eq!(error.path, format!("{BODY_FIELD}.inline_string"));

    let raised = config("max_direct_response_body_size_bytes: 8192", &inline, "", "");
    assert!(load_str(&raised, "t.yaml").is_ok());
}

#[test]
fn a_deep_document_is_refused_at_once_with_its_position() {
    let text = format!("static_resources:\n  listeners: {}", "[".repeat(100_000));
    let (error, took) = refused(&text);
    assert!(error.message.contains("line 2, column"), "{error}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}
