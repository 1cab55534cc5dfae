//! The compiled-module cache across restarts: a restart with the same `--wasm-cache-dir`
//! compiles nothing, and a damaged entry is detected, rebuilt and never loaded.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir_tests::config::{self, Ports};
use weir_tests::wasm::{filter, fixture, set_filters, wasm_filter};
use weir_tests::{H1Upstream, Weir, client};

const HIT: &str = "weir_wasm_cache_hit_total";
const MISS: &str = "weir_wasm_cache_miss_total";
const CORRUPT: &str = "weir_wasm_cache_corrupt_total";

/// A config with two Wasm filters (a fixture and one of weir's filters): two modules.
fn two_filters(ports: Ports, up: &H1Upstream) -> Value {
    let mut config = config::simple(ports, &[up.addr]);
    set_filters(
        &mut config,
        vec![
            wasm_filter("headers", &fixture("headers"), "cached", false),
            wasm_filter(
                "header_manipulation",
                &filter("header_manipulation"),
                r#"{"response": {"set": {"x-manipulated": "yes"}}}"#,
                false,
            ),
        ],
    );
    config
}

/// Starts weir on `config` with the cache in `cache` (two workers: each makes its VMs).
async fn start(config: &Value, cache: &Path) -> Weir {
    let cache = cache.to_str().expect("utf-8 path");
    Weir::start_with(
        config,
        &[
            "--concurrency",
            "2",
            "--wasm-cache-dir",
            cache,
            "--reload-interval-ms",
            "0",
        ],
    )
    .await
}

/// Stops `weir` with SIGTERM (bounded).
async fn stop(mut weir: Weir) {
    weir.sigterm();
    assert!(
        weir.wait_exit(Duration::from_secs(10)).await.is_some(),
        "weir did not exit within 10 s\n{}",
        weir.log_report()
    );
}

/// A request through both filters answers 200 with both filters' headers.
async fn assert_filters_run(ports: Ports) {
    let req = Request::get("/")
        .header("host", "example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        client::h1_request(ports.http_addr(), req),
    )
    .await
    .expect("answered within 10 s")
    .expect("exchange");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-wasm-config"), "cached");
    assert_eq!(resp.header("x-manipulated"), "yes");
}

/// The cache's entries, sorted.
fn entries(cache: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_warm_cache_compiles_nothing() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let config = two_filters(ports, &up);
    let cache = tempfile::tempdir().expect("tempdir");

    let cold = start(&config, cache.path()).await;
    assert_filters_run(ports).await;
    let stats = cold.stats().await;
    assert!(
        stats.get(MISS, &[]).unwrap_or(0.0) >= 2.0,
        "two modules compiled:\n{}",
        stats.text
    );
    assert_eq!(stats.get(HIT, &[]), Some(0.0), "{}", stats.text);
    stop(cold).await;
    assert_eq!(entries(cache.path()).len(), 2, "one entry per module");

    let warm = start(&config, cache.path()).await;
    assert_filters_run(ports).await;
    let stats = warm.stats().await;
    assert!(
        stats.get(HIT, &[]).unwrap_or(0.0) >= 2.0,
        "both modules from the cache:\n{}",
        stats.text
    );
    assert_eq!(
        stats.get(MISS, &[]),
        Some(0.0),
        "compiled nothing:\n{}",
        stats.text
    );
    assert_eq!(stats.get(CORRUPT, &[]), Some(0.0), "{}", stats.text);
    stop(warm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_entry_is_detected_rebuilt_and_never_loaded() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let config = two_filters(ports, &up);
    let cache = tempfile::tempdir().expect("tempdir");

    stop(start(&config, cache.path()).await).await;
    let found = entries(cache.path());
    assert_eq!(found.len(), 2);
    let (damaged, intact) = (&found[0], &found[1]);
    let whole = std::fs::read(damaged).expect("read entry");
    std::fs::write(damaged, &whole[..whole.len() / 2]).expect("truncate");

    let weir = start(&config, cache.path()).await;
    assert_filters_run(ports).await;
    let stats = weir.stats().await;
    assert_eq!(stats.get(CORRUPT, &[]), Some(1.0), "{}", stats.text);
    assert_eq!(
        stats.get(MISS, &[]),
        Some(1.0),
        "only the damaged one compiled"
    );
    assert!(stats.get(HIT, &[]).unwrap_or(0.0) >= 1.0, "{}", stats.text);
    assert!(
        weir.log().contains("corrupt cached Wasm module"),
        "{}",
        weir.log_report()
    );
    stop(weir).await;
    assert_eq!(
        std::fs::read(damaged).expect("rebuilt entry"),
        whole,
        "the entry is written whole again"
    );
    assert!(intact.is_file());

    // A bit flipped in the middle (the length unchanged) is caught the same way.
    let mut flipped = whole.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(damaged, &flipped).expect("flip");
    let weir = start(&config, cache.path()).await;
    assert_filters_run(ports).await;
    let stats = weir.stats().await;
    assert_eq!(stats.get(CORRUPT, &[]), Some(1.0), "{}", stats.text);
    assert_eq!(stats.get(MISS, &[]), Some(1.0), "{}", stats.text);
    stop(weir).await;
}
