//! h2spec (HTTP/2 conformance: generic, http2 and hpack, 146 cases) against weir at its
//! default settings, proxying to an upstream that reads request bodies: `codec_type: HTTP2`
//! in the clear, over TLS with ALPN h2, and `codec_type: AUTO` in the clear.
//!
//! h2spec is not on the package registries, so these tests are `#[ignore]`d in `make test`
//! and run by `make conformance`, which needs `$H2SPEC` pointing at a built h2spec (the
//! Makefile says how to build one).

use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use weir_tests::client::run_tool;
use weir_tests::config::{self, Ports};
use weir_tests::{H1Upstream, Weir};

/// The h2spec binary: `$H2SPEC`.
fn h2spec() -> PathBuf {
    let bin = std::env::var_os("H2SPEC").map(PathBuf::from);
    match bin {
        Some(bin) if bin.is_file() => bin,
        _ => panic!(
            "set H2SPEC to an h2spec binary (make conformance builds one from a fetched \
             summerwind/h2spec snapshot; see the Makefile)"
        ),
    }
}

/// Runs h2spec against `port` and returns (passed, failed, skipped) and its report.
async fn run_h2spec(port: u16, tls: bool) -> ((u32, u32, u32), String) {
    let port = port.to_string();
    let mut args = vec!["-h", "127.0.0.1", "-p", port.as_str(), "-o", "3"];
    if tls {
        args.extend(["-t", "-k"]);
    }
    let bin = h2spec();
    let out = run_tool(
        bin.to_str().expect("utf-8 path"),
        &args,
        Duration::from_secs(300),
    )
    .await;
    let text = out.stdout_text();
    // "146 tests, 146 passed, 0 skipped, 0 failed"
    let summary = text
        .lines()
        .rev()
        .find(|line| line.contains(" tests, "))
        .unwrap_or_default()
        .to_owned();
    let count = |word: &str| {
        summary
            .split(", ")
            .find_map(|part| part.strip_suffix(word))
            .and_then(|n| n.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    };
    let failures = text
        .split("Failures:")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    eprintln!("h2spec on port {port} (tls: {tls}): {summary}");
    (
        (count(" passed"), count(" failed"), count(" skipped")),
        failures,
    )
}

async fn weir_for(
    codec: &str,
    tls: Option<&weir_tests::tls::TlsFiles>,
) -> (Weir, Ports, H1Upstream) {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    config::hcm_of(&mut cfg)["codec_type"] = json!(codec);
    // The upstream reads each request's body before it answers (so h2spec's malformed-body
    // cases reach the codec before a response does) and answers with a body (the flow-control
    // cases need one).
    if let Some(files) = tls {
        let listener = cfg["static_resources"]["listeners"][0].take();
        cfg["static_resources"]["listeners"][0] =
            config::with_tls(listener, &files.cert, &files.key);
    }
    let weir = Weir::start(&cfg).await;
    (weir, ports, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs h2spec: make conformance"]
async fn h2spec_http2_cleartext_passes_every_case() {
    let (_weir, ports, _up) = weir_for("HTTP2", None).await;
    let ((passed, failed, skipped), failures) = run_h2spec(ports.http, false).await;
    assert_eq!((passed, failed, skipped), (146, 0, 0), "{failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs h2spec: make conformance"]
async fn h2spec_http2_over_tls_passes_every_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = weir_tests::tls::self_signed(dir.path());
    let (_weir, ports, _up) = weir_for("HTTP2", Some(&files)).await;
    let ((passed, failed, skipped), failures) = run_h2spec(ports.http, true).await;
    assert_eq!((passed, failed, skipped), (146, 0, 0), "{failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs h2spec: make conformance"]
async fn h2spec_auto_passes_every_case_but_the_invalid_preface() {
    let (_weir, ports, _up) = weir_for("AUTO", None).await;
    let ((passed, failed, skipped), failures) = run_h2spec(ports.http, false).await;
    // 3.5/2 sends an invalid preface, which AUTO reads as HTTP/1.1 (and answers 400).
    assert_eq!((passed, failed, skipped), (145, 1, 0), "{failures}");
    assert!(
        failures.contains("3.5. HTTP/2 Connection Preface"),
        "{failures}"
    );
}
