//! Config hot reload: the config file and the module files it names are watched, and
//! `POST /reload` on the admin listener reloads on demand. A new snapshot replaces the old one
//! without failing a request; a bad config or module keeps the old one and is counted.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir_tests::client::{self, H2Client};
use weir_tests::config::{self, Ports};
use weir_tests::wasm::{filter, fixture, set_filters, start_with_env, wasm_filter};
use weir_tests::{H1Upstream, Weir};

/// The plugin configuration both modules get. `header_manipulation` reads it and sets
/// `x-wasm-config: hm`; the `headers` fixture echoes the whole string in `x-wasm-config`.
const PLUGIN_CONFIG: &str = r#"{"response":{"set":{"x-wasm-config":"hm"}}}"#;

/// One listener: `/direct` answers `body` itself, everything else goes to `backend` through
/// one Wasm filter loaded from `module`.
fn reload_config(ports: Ports, backend: std::net::SocketAddr, body: &str, module: &Path) -> Value {
    let mut config = config::bootstrap(
        ports.admin,
        vec![config::listener(
            "ingress",
            ports.http,
            config::hcm(
                "ingress_http",
                vec![config::vhost(
                    "all",
                    &["*"],
                    vec![
                        config::direct("/direct", 200, body),
                        config::route_prefix("/", "backend"),
                    ],
                )],
            ),
        )],
        vec![config::static_cluster("backend", &[backend])],
    );
    set_filters(
        &mut config,
        vec![wasm_filter("reloadable", module, PLUGIN_CONFIG, false)],
    );
    config
}

/// Replaces `path` the way editors do: a new file renamed over the old one.
fn replace(path: &Path, content: &[u8]) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, content).expect("write");
    std::fs::rename(&temp, path).expect("rename");
}

fn write_config(weir: &Weir, config: &Value) {
    let text = serde_json::to_string_pretty(config).expect("serialize config");
    replace(weir.config_path(), text.as_bytes());
}

async fn get(ports: Ports, path: &str) -> client::Resp {
    let req = Request::get(path)
        .header("host", "example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    tokio::time::timeout(
        Duration::from_secs(20),
        client::h1_request(ports.http_addr(), req),
    )
    .await
    .expect("answered within 20 s")
    .expect("exchange")
}

/// What the client tasks saw.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

impl Load {
    fn record(&self, result: Result<client::Resp, String>, first_failure: &mut Option<String>) {
        match result {
            Ok(resp) if resp.status == 200 => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(resp) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                first_failure.get_or_insert(format!("status {}: {}", resp.status, resp.text()));
            }
            Err(error) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                first_failure.get_or_insert(error);
            }
        }
    }
}

/// A client task: requests in a loop until `load.stop` or `limit`, each on a new HTTP/1.1
/// connection, or all on one HTTP/2 connection (whose streams cross the reloads). Returns
/// the first failure, if any.
async fn client_task(ports: Ports, load: Arc<Load>, h2: bool, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut first_failure = None;
    let mut connection = None;
    for n in 0..1_000_000u64 {
        if load.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let path = format!("/load/{n}");
        let result = if h2 {
            if connection.is_none() {
                match H2Client::connect(ports.http_addr()).await {
                    Ok(c) => connection = Some(c),
                    Err(error) => {
                        load.record(Err(error), &mut first_failure);
                        continue;
                    }
                }
            }
            let Some(c) = connection.as_mut() else {
                continue;
            };
            let req = Request::get(format!("http://example.com{path}"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            tokio::time::timeout(Duration::from_secs(20), c.request(req))
                .await
                .unwrap_or_else(|_| Err("h2 request timed out".into()))
        } else {
            let req = Request::get(path.as_str())
                .header("host", "example.com")
                .body(Full::new(Bytes::new()))
                .expect("request");
            client::h1_request(ports.http_addr(), req).await
        };
        load.record(result, &mut first_failure);
    }
    first_failure
}

/// Polls (fresh connections) until `x-wasm-config` is `expected`; how long that took.
async fn until_header(ports: Ports, expected: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if get(ports, "/probe").await.header("x-wasm-config") == expected {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn failures(weir: &Weir) -> f64 {
    weir.stat("weir_server_config_reloads_total", &[("result", "failure")])
        .await
}

/// Waits until the reload failure counter is above `before`.
async fn until_failure_counted(weir: &Weir, before: f64) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if failures(weir).await > before {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_fail_no_request() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("plugin.wasm");
    let manipulation = std::fs::read(filter("header_manipulation")).expect("read module");
    let echo = std::fs::read(fixture("headers")).expect("read fixture");
    std::fs::write(&module, &manipulation).expect("write module");
    let config = reload_config(ports, up.addr, "v0", &module);
    let weir = start_with_env(&config, 2, &[("WEIR_RELOAD_INTERVAL_MS", "100")]).await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert_eq!(get(ports, "/").await.header("x-wasm-config"), "hm");

    let (status, body) = weir.admin_get("/reload").await;
    assert_eq!(status, 405, "GET /reload: {body}");

    // Steady load: 4 tasks on new HTTP/1.1 connections, 4 on one HTTP/2 connection each.
    let load = Arc::new(Load::default());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(client_task(
                ports,
                load.clone(),
                i % 2 == 1,
                Duration::from_secs(240),
            ))
        })
        .collect();

    // 20 module file changes, alternating two modules: each shows up on its own.
    let mut delays = Vec::new();
    for round in 0..20 {
        let (content, expected) = if round % 2 == 0 {
            (&echo, PLUGIN_CONFIG)
        } else {
            (&manipulation, "hm")
        };
        replace(&module, content);
        let delay = until_header(ports, expected, Duration::from_secs(10)).await;
        let Some(delay) = delay else {
            panic!(
                "round {round}: the new module did not show within 10 s\n{}",
                weir.log_report()
            );
        };
        delays.push(delay);
    }
    // The module is now `header_manipulation` ("hm").

    // 20 config changes applied by POST /reload: in force when it answers.
    let mut last_generation = 0;
    for round in 1..=20 {
        let body = format!("v{round}");
        write_config(&weir, &reload_config(ports, up.addr, &body, &module));
        let (status, answer) = weir.admin_post("/reload").await;
        assert_eq!(status, 200, "POST /reload: {answer}");
        let answer: Value = serde_json::from_str(&answer).expect("JSON answer");
        assert_eq!(answer["result"], "success", "{answer}");
        let generation = answer["generation"].as_u64().expect("generation");
        assert!(generation > last_generation, "{answer}");
        last_generation = generation;
        assert_eq!(get(ports, "/direct").await.text(), body, "round {round}");
        assert_eq!(get(ports, "/").await.header("x-wasm-config"), "hm");
    }

    // A broken module (garbage bytes): the old one goes on, the failure is counted, by the
    // watcher and by POST /reload alike.
    let before = failures(&weir).await;
    replace(&module, b"\0asm\x01\0\0\0 this is not a module");
    assert!(
        until_failure_counted(&weir, before).await,
        "the watcher counted no failure\n{}",
        weir.log_report()
    );
    assert_eq!(get(ports, "/").await.header("x-wasm-config"), "hm");
    let before = failures(&weir).await;
    let (status, answer) = weir.admin_post("/reload").await;
    assert_eq!(status, 400, "POST /reload with a broken module: {answer}");
    assert!(answer.contains("vm_config.code.local"), "{answer}");
    assert_eq!(failures(&weir).await, before + 1.0);
    assert_eq!(get(ports, "/").await.header("x-wasm-config"), "hm");
    replace(&module, &manipulation);

    // A broken config (an unknown field): the old one goes on; the answer names the field.
    let mut broken = reload_config(ports, up.addr, "broken", &module);
    broken["static_resources"]["clusters"][0]["bogus_field"] = json!(1);
    write_config(&weir, &broken);
    let before = failures(&weir).await;
    let (status, answer) = weir.admin_post("/reload").await;
    assert_eq!(status, 400, "POST /reload with a broken config: {answer}");
    assert!(
        answer.contains("static_resources.clusters[0]") && answer.contains("bogus_field"),
        "{answer}"
    );
    assert!(failures(&weir).await > before);
    assert_eq!(get(ports, "/direct").await.text(), "v20");
    assert_eq!(get(ports, "/").await.header("x-wasm-config"), "hm");

    // An admin address change needs a restart: refused with the reason. (A listener change
    // is applied: see listener_reload.rs.)
    let moved = reload_config(
        Ports {
            admin: weir_tests::free_port(),
            http: ports.http,
        },
        up.addr,
        "moved",
        &module,
    );
    write_config(&weir, &moved);
    let (status, answer) = weir.admin_post("/reload").await;
    assert_eq!(status, 409, "POST /reload with a moved admin: {answer}");
    assert!(answer.contains("need a restart"), "{answer}");
    assert_eq!(get(ports, "/direct").await.text(), "v20");

    // Back to a good config: reloads work again.
    write_config(&weir, &reload_config(ports, up.addr, "final", &module));
    let (status, answer) = weir.admin_post("/reload").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(get(ports, "/direct").await.text(), "final");

    load.stop.store(true, Ordering::Relaxed);
    let mut first_failures = Vec::new();
    for task in tasks {
        if let Some(failure) = task.await.expect("client task") {
            first_failures.push(failure);
        }
    }
    let ok = load.ok.load(Ordering::Relaxed);
    let failed = load.failed.load(Ordering::Relaxed);
    // Round 0 loads the `headers` fixture for the first time, so its time includes compiling
    // it (seconds, in a debug build on a loaded machine); from then on both modules come from
    // the module cache.
    let first_load = delays[0];
    let mut sorted = delays[1..].to_vec();
    sorted.sort();
    eprintln!(
        "load: {ok} requests answered, {failed} failed; module change -> new behaviour: \
         first load (compiles) {first_load:?}, then median {:?}, max {:?}",
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    assert_eq!(
        failed,
        0,
        "requests failed during reloads: {first_failures:?}\n{}",
        weir.log_report()
    );
    assert!(ok >= 100, "the load ran ({ok} requests)");
    // The acceptance bound: each change shows within a second (the first load aside).
    let slow: Vec<_> = delays
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, d)| **d > Duration::from_secs(1))
        .collect();
    assert!(
        slow.is_empty(),
        "changes slower than 1 s (round, time): {slow:?}"
    );

    let stats = weir.stats().await;
    let successes = stats
        .get("weir_server_config_reloads_total", &[("result", "success")])
        .unwrap_or(0.0);
    assert!(successes >= 41.0, "successful reloads: {successes}");
    let duration = stats
        .get("weir_server_config_reload_duration_seconds", &[])
        .unwrap_or(0.0);
    assert!(duration > 0.0, "reload duration gauge: {duration}");
    let last = stats
        .get(
            "weir_server_config_reload_last_success_timestamp_seconds",
            &[],
        )
        .unwrap_or(0.0);
    assert!(
        last >= started.floor(),
        "last success {last}, started {started}"
    );
}

/// Only `POST /reload` (the watch is off) applies a route change; a cluster the change left
/// alone keeps its pooled upstream connection, a changed one gets a new pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_applies_a_route_change_and_keeps_unchanged_pools() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let build = |body: &str, connect_timeout: &str| {
        let mut config = config::bootstrap(
            ports.admin,
            vec![config::listener(
                "ingress",
                ports.http,
                config::hcm(
                    "ingress_http",
                    vec![config::vhost(
                        "all",
                        &["*"],
                        vec![
                            config::direct("/direct", 200, body),
                            config::route_prefix("/", "backend"),
                        ],
                    )],
                ),
            )],
            vec![config::static_cluster("backend", &[up.addr])],
        );
        config::cluster_of(&mut config, 0)["connect_timeout"] = json!(connect_timeout);
        config
    };
    let weir = start_with_env(
        &build("before", "1s"),
        1,
        &[("WEIR_RELOAD_INTERVAL_MS", "0")],
    )
    .await;
    assert_eq!(get(ports, "/direct").await.text(), "before");
    let first = get(ports, "/").await;
    assert_eq!(first.status, 200);
    let conn = first.header("x-conn-id").to_owned();

    write_config(&weir, &build("after", "1s"));
    // The watch is off: nothing changes until asked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(ports, "/direct").await.text(), "before");
    let (status, answer) = weir.admin_post("/reload").await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("JSON answer");
    assert_eq!(answer["generation"], 1, "{answer}");
    assert_eq!(answer["clusters_kept"], 1, "{answer}");
    assert_eq!(get(ports, "/direct").await.text(), "after");
    assert_eq!(
        get(ports, "/").await.header("x-conn-id"),
        conn,
        "the unchanged cluster kept its pooled connection"
    );

    write_config(&weir, &build("after", "2s"));
    let (status, answer) = weir.admin_post("/reload").await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("JSON answer");
    assert_eq!(answer["clusters_new"], 1, "{answer}");
    assert_ne!(
        get(ports, "/").await.header("x-conn-id"),
        conn,
        "the changed cluster has a new pool"
    );
    assert_eq!(
        weir.stat("weir_server_config_reloads_total", &[("result", "success")])
            .await,
        2.0
    );
}

/// A config file that cannot be read keeps the running config; `POST /reload` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_of_a_missing_file_keeps_the_running_config() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let weir = start_with_env(&config::simple(ports, &[up.addr]), 1, &[]).await;
    std::fs::remove_file(weir.config_path()).expect("remove config");
    let (status, answer) = weir.admin_post("/reload").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("cannot read the file"), "{answer}");
    assert_eq!(get(ports, "/").await.status, 200);
}
