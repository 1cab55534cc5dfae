//! A module that loops forever, one that traps and one that grows its memory without bound:
//! weir answers every request (500, or passes it through with `fail_open`), stays up, and
//! `weir_wasm_vm_failures_total{plugin}` counts exactly the failures. Also: a module that is
//! missing or does not compile is a config error with its field path.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::time::Duration;
use weir_tests::config::{self, Ports};
use weir_tests::wasm::{fixture, set_filters, start_with_env, wasm_filter};
use weir_tests::{H1Upstream, Weir, client};

const REQUESTS: usize = 100;

async fn start(mode: &str, fail_open: bool, env: &[(&str, &str)]) -> (H1Upstream, Ports, Weir) {
    let (up, ports, config) = misbehaving(mode, fail_open).await;
    let weir = start_with_env(&config, 1, env).await;
    (up, ports, weir)
}

/// An upstream, and a config whose listener runs the `misbehave` fixture in `mode`.
async fn misbehaving(mode: &str, fail_open: bool) -> (H1Upstream, Ports, serde_json::Value) {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut config = config::simple(ports, &[up.addr]);
    set_filters(
        &mut config,
        vec![wasm_filter(
            "misbehave",
            &fixture("misbehave"),
            mode,
            fail_open,
        )],
    );
    (up, ports, config)
}

/// Sends [`REQUESTS`] requests (each bounded in time); returns how many got each status.
async fn hammer(ports: &Ports, weir: &mut Weir) -> (usize, usize) {
    let (mut ok, mut failed) = (0, 0);
    for i in 0..REQUESTS {
        let req = Request::get(format!("/r{i}"))
            .header("host", "example.com")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            client::h1_request(ports.http_addr(), req),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} unanswered\n{}", weir.log_report()))
        .unwrap_or_else(|e| panic!("request {i}: {e}\n{}", weir.log_report()));
        match resp.status {
            200 => ok += 1,
            500 => failed += 1,
            other => panic!("request {i}: unexpected {other}: {}", resp.text()),
        }
    }
    assert!(
        weir.try_exit_status().is_none(),
        "weir exited\n{}",
        weir.log_report()
    );
    (ok, failed)
}

async fn failures(weir: &Weir) -> f64 {
    weir.stats()
        .await
        .get("weir_wasm_vm_failures_total", &[("plugin", "misbehave")])
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loop_hits_the_deadline_every_time() {
    let (_up, ports, mut weir) = start("loop", false, &[("WEIR_WASM_DEADLINE_MS", "20")]).await;
    let (ok, failed) = hammer(&ports, &mut weir).await;
    assert_eq!((ok, failed), (0, REQUESTS));
    assert_eq!(failures(&weir).await, REQUESTS as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loop_with_fail_open_passes_requests_through() {
    let (up, ports, mut weir) = start("loop", true, &[("WEIR_WASM_DEADLINE_MS", "20")]).await;
    let (ok, failed) = hammer(&ports, &mut weir).await;
    assert_eq!((ok, failed), (REQUESTS, 0));
    assert_eq!(failures(&weir).await, REQUESTS as f64);
    use weir_tests::h1_upstream::Counting;
    assert_eq!(up.tracker().requests.lock().unwrap().len(), REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_answers_500_and_the_vm_is_recreated() {
    let (_up, ports, mut weir) = start("trap", false, &[]).await;
    let (ok, failed) = hammer(&ports, &mut weir).await;
    assert_eq!((ok, failed), (0, REQUESTS));
    assert_eq!(failures(&weir).await, REQUESTS as f64);
    assert!(
        weir.log().contains("trap on purpose"),
        "the module's panic message is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_memory_growth_hits_the_limit() {
    let (_up, ports, mut weir) = start("grow", false, &[("WEIR_WASM_MEMORY_LIMIT_MB", "32")]).await;
    let (ok, failed) = hammer(&ports, &mut weir).await;
    assert_eq!(ok + failed, REQUESTS);
    // Each VM holds 4 MiB more per request: a few pass, then one fails, and a new VM starts.
    assert!(failed >= 10, "{ok} passed, {failed} failed");
    assert!(ok >= failed, "{ok} passed, {failed} failed");
    assert_eq!(failures(&weir).await, failed as f64);
}

/// The same limit from the command line (`--wasm-memory-limit-mb`), the environment variable's
/// replacement: at the default 256 MiB this module would pass every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_flag_sets_the_limit() {
    let (_up, ports, config) = misbehaving("grow", false).await;
    let mut weir = Weir::start_with(&config, &["--wasm-memory-limit-mb", "32"]).await;
    let (ok, failed) = hammer(&ports, &mut weir).await;
    assert_eq!(ok + failed, REQUESTS);
    assert!(failed >= 10, "{ok} passed, {failed} failed");
    assert_eq!(failures(&weir).await, failed as f64);
}

/// The same limit from the config file: weir's `weir.config.v1.ProcessSettings` bootstrap
/// extension. A reload that changes it is refused (the limit is read once, at start-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_from_the_config_sets_the_limit() {
    let (_up, ports, mut config) = misbehaving("grow", false).await;
    let settings = |limit: u64| {
        serde_json::json!([{
            "name": "weir.settings",
            "typed_config": {
                "@type": "type.googleapis.com/weir.config.v1.ProcessSettings",
                "wasm_memory_limit_mb": limit,
            },
        }])
    };
    config["bootstrap_extensions"] = settings(32);
    let mut weir = Weir::start(&config).await;
    let (ok, failed) = hammer(&ports, &mut weir).await;
    assert_eq!(ok + failed, REQUESTS);
    assert!(failed >= 10, "{ok} passed, {failed} failed");
    assert_eq!(failures(&weir).await, failed as f64);

    config["bootstrap_extensions"] = settings(64);
    std::fs::write(weir.config_path(), config.to_string()).expect("rewrite the config");
    let (status, body) = weir.admin_post("/reload").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("ProcessSettings"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_broken_module_is_a_config_error_with_its_path() {
    let ports = Ports::new();
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
        let mut config = config::simple(ports, &["127.0.0.1:1".parse().expect("addr")]);
        set_filters(&mut config, vec![wasm_filter("bad", &module, "", false)]);
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
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains("http_filters[0].typed_config.config.vm_config.code.local"),
            "{text}"
        );
        assert!(text.contains(expected), "{text}");
    }
}
