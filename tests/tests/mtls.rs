//! Client certificates both ways: a listener with `require_client_certificate` and a
//! `validation_context.trusted_ca` admits only clients that present a certificate it trusts
//! (curl, with and without one), and a cluster's `tls_certificates` is presented to an
//! upstream that asks for one (weir A -> weir B, B requiring it). A Wasm filter sees the
//! `connection.mtls` property: true only where the client presented a verified certificate.

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use weir_tests::config::{self, Ports};
use weir_tests::tls::{TlsFiles, self_signed};
use weir_tests::wasm::{fixture, set_filters, wasm_filter};
use weir_tests::{Weir, get};

const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A server and a client certificate, each self-signed (each is its own CA), in `dir`.
fn certificates(dir: &Path) -> (TlsFiles, TlsFiles) {
    let server_dir = dir.join("server");
    let client_dir = dir.join("client");
    std::fs::create_dir_all(&server_dir).expect("mkdir server");
    std::fs::create_dir_all(&client_dir).expect("mkdir client");
    (self_signed(&server_dir), self_signed(&client_dir))
}

/// weir B: a TLS listener that verifies client certificates against `client_ca` (and, with
/// `require`, refuses clients without one) and answers 200 "mtls ok" itself, through the
/// `headers` fixture filter (its `x-wasm-mtls` header is the `connection.mtls` property).
fn mtls_server(ports: Ports, server: &TlsFiles, client_ca: &Path, require: bool) -> Value {
    let hcm = config::hcm(
        "mtls",
        vec![config::vhost(
            "all",
            &["*"],
            vec![config::direct("/", 200, "mtls ok")],
        )],
    );
    let mut listener = config::listener("mtls", ports.http, hcm);
    listener["filter_chains"][0]["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "require_client_certificate": require,
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{
                    "certificate_chain": {"filename": path(&server.cert)},
                    "private_key": {"filename": path(&server.key)},
                }],
                "validation_context": {"trusted_ca": {"filename": path(client_ca)}},
            },
        },
    });
    let mut cfg = config::bootstrap(ports.admin, vec![listener], vec![]);
    set_filters(
        &mut cfg,
        vec![wasm_filter("headers", &fixture("headers"), "mtls", false)],
    );
    cfg
}

/// curl over TLS to `port`, trusting `ca`, with `client` as its certificate if given; on
/// success the body, a newline and the response's `x-wasm-mtls`; else curl's exit status and
/// stderr.
fn curl(port: u16, ca: &Path, client: Option<&TlsFiles>) -> Result<String, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert", path(ca)]);
    if let Some(client) = client {
        cmd.args(["--cert", path(&client.cert), "--key", path(&client.key)]);
    }
    cmd.args(["-w", "\n%header{x-wasm-mtls}"]);
    cmd.arg(format!("https://localhost:{port}/"));
    let out = cmd.output().map_err(|e| format!("run curl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "curl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_requires_a_trusted_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = certificates(dir.path());
    let ports = Ports::new();
    let weir = Weir::start(&mtls_server(ports, &server, &client.cert, true)).await;

    let body = curl(ports.http, &server.cert, Some(&client))
        .unwrap_or_else(|e| panic!("with the client certificate: {e}\n{}", weir.log_report()));
    assert_eq!(body, "mtls ok\ntrue", "body, then connection.mtls");

    let refused = curl(ports.http, &server.cert, None);
    assert!(
        refused.is_err(),
        "no client certificate must be refused, got {refused:?}"
    );

    // A certificate the listener does not trust (the server's own) is refused too.
    let untrusted = curl(ports.http, &server.cert, Some(&server));
    assert!(
        untrusted.is_err(),
        "an untrusted client certificate must be refused, got {untrusted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_presents_its_client_certificate_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = certificates(dir.path());
    let b_ports = Ports::new();
    let b = Weir::start(&mtls_server(b_ports, &server, &client.cert, true)).await;

    // weir A: plain HTTP in, TLS with a client certificate to B (SNI localhost, B verified
    // against its own certificate).
    let a_config = |with_certificate: bool| {
        let ports = Ports::new();
        let mut cfg = config::simple(ports, &[b_ports.http_addr()]);
        let mut common = json!({
            "validation_context": {"trusted_ca": {"filename": path(&server.cert)}},
        });
        if with_certificate {
            common["tls_certificates"] = json!([{
                "certificate_chain": {"filename": path(&client.cert)},
                "private_key": {"filename": path(&client.key)},
            }]);
        }
        config::cluster_of(&mut cfg, 0)["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": UPSTREAM_TLS,
                "sni": "localhost",
                "common_tls_context": common,
            },
        });
        (ports, cfg)
    };

    let (ports, cfg) = a_config(true);
    let a = Weir::start(&cfg).await;
    let response = get(ports.http_addr(), "/").await.expect("GET through A");
    assert_eq!(
        response.status,
        200,
        "{response:?}\nA:\n{}\nB:\n{}",
        a.log_report(),
        b.log_report()
    );
    assert_eq!(response.body.as_ref(), b"mtls ok");
    drop(a);

    // Without the certificate B refuses the handshake: A answers 503.
    let (ports, cfg) = a_config(false);
    let a = Weir::start(&cfg).await;
    let response = get(ports.http_addr(), "/").await.expect("GET through A");
    assert_eq!(response.status, 503, "{response:?}\n{}", a.log_report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificate_sets_connection_mtls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = certificates(dir.path());
    let ports = Ports::new();
    let weir = Weir::start(&mtls_server(ports, &server, &client.cert, false)).await;

    let with = curl(ports.http, &server.cert, Some(&client))
        .unwrap_or_else(|e| panic!("with the client certificate: {e}\n{}", weir.log_report()));
    assert_eq!(with, "mtls ok\ntrue", "body, then connection.mtls");
    let without = curl(ports.http, &server.cert, None)
        .unwrap_or_else(|e| panic!("without a client certificate: {e}\n{}", weir.log_report()));
    assert_eq!(without, "mtls ok\nfalse", "body, then connection.mtls");
}
