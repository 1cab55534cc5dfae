//! Bootstrap Wasm services (`bootstrap_extensions[]`, `envoy.bootstrap.wasm`): the `service`
//! fixture (official proxy-wasm SDK) runs as a singleton or per worker, ticks, dequeues what
//! the `service_reporter` filter enqueues, calls an upstream on its ticks, is restarted at a
//! bounded rate after a trap, stops with the process, and survives a reload; another extension
//! type is a config error naming it.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::wasm::{fixture, set_filters, start_with_env};
use weir_tests::{H1Upstream, Weir, client, weir_bin};

/// The vm_id the service and the reporter share (shared data and queues are keyed by it).
const VM_ID: &str = "svc";

/// A `bootstrap_extensions[]` entry running the `service` fixture with `configuration`.
fn service_extension(singleton: bool, configuration: &str) -> Value {
    json!({
        "name": "envoy.bootstrap.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService",
            "singleton": singleton,
            "config": {
                "name": "svc",
                "vm_config": {
                    "vm_id": VM_ID,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": fixture("service").display().to_string() } }
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration
                }
            }
        }
    })
}

/// The `service_reporter` filter, in the service's VM id, enqueueing to its queue.
fn reporter_filter() -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "reporter",
                "vm_config": {
                    "vm_id": VM_ID,
                    "code": { "local": { "filename": fixture("service_reporter").display().to_string() } }
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": VM_ID
                }
            }
        }
    })
}

/// weir (`concurrency` workers) with the service and the reporter in front of an upstream
/// `up`, whose cluster (`backend`, cluster 0) the service may call.
async fn start(
    singleton: bool,
    configuration: &str,
    concurrency: usize,
) -> (H1Upstream, Ports, Weir) {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut config = config::simple(ports, &[up.addr]);
    set_filters(&mut config, vec![reporter_filter()]);
    config["bootstrap_extensions"] = json!([service_extension(singleton, configuration)]);
    let weir = start_with_env(&config, concurrency, &[]).await;
    (up, ports, weir)
}

async fn get(ports: &Ports, path: &str) -> client::Resp {
    let req = Request::get(path)
        .header("host", "example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    tokio::time::timeout(
        Duration::from_secs(10),
        client::h1_request(ports.http_addr(), req),
    )
    .await
    .expect("answered within 10 s")
    .expect("exchange")
}

/// The service's shared data `key` as the reporter copies it (`-` when absent).
fn reported(resp: &client::Resp, key: &str) -> String {
    resp.header(&format!("x-service-{key}")).to_owned()
}

fn number(resp: &client::Resp, key: &str) -> u64 {
    reported(resp, key).parse().unwrap_or(0)
}

/// Polls `/` until `done` holds for the reported values, for at most `limit`; returns the last
/// response.
async fn poll_until(
    ports: &Ports,
    weir: &Weir,
    limit: Duration,
    what: &str,
    done: impl Fn(&client::Resp) -> bool,
) -> client::Resp {
    let deadline = Instant::now() + limit;
    loop {
        let resp = get(ports, "/").await;
        if done(&resp) {
            return resp;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; last response headers: {:?}\n{}",
            resp.headers,
            weir.log_report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn singleton_service_ticks_once_per_period_for_the_process() {
    let (_up, ports, weir) = start(true, "tick_ms=50", 2).await;
    let first = poll_until(&ports, &weir, Duration::from_secs(10), "10 ticks", |r| {
        number(r, "ticks") >= 10
    })
    .await;
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resp = get(&ports, "/").await;
    // One VM ticks, for both workers: one ticker, and no more ticks than one VM's periods.
    assert_eq!(reported(&resp, "tickers"), "1", "{:?}", resp.headers);
    let ticks = number(&resp, "ticks") - number(&first, "ticks");
    let periods = window.elapsed().as_millis() as u64 / 50 + 3;
    assert!(
        (5..=periods).contains(&ticks),
        "{ticks} ticks in {:?} at 50 ms: not one VM's",
        window.elapsed()
    );
    let log = weir.log();
    assert!(
        log.contains("Wasm service started"),
        "{}",
        weir.log_report()
    );
    assert!(log.contains("service tick 3"), "{}", weir.log_report());
    // The test VM weir starts to check the plugin, and the service's VM.
    assert!(number(&resp, "starts") <= 2, "{:?}", resp.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_worker_service_runs_one_vm_on_each_worker() {
    let (_up, ports, weir) = start(false, "tick_ms=50", 2).await;
    let resp = poll_until(&ports, &weir, Duration::from_secs(10), "two tickers", |r| {
        number(r, "tickers") >= 2
    })
    .await;
    // Give a third VM, were there one, time to tick.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp_later = get(&ports, "/").await;
    assert_eq!(
        reported(&resp_later, "tickers"),
        "2",
        "{:?} then {:?}",
        resp.headers,
        resp_later.headers
    );
    assert_eq!(weir.log().matches("Wasm service started").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_enqueues_and_the_service_dequeues() {
    let (_up, ports, weir) = start(true, "tick_ms=1000", 2).await;
    for i in 0..5 {
        let resp = get(&ports, &format!("/enqueue/item-{i}")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("x-enqueued"),
            "ok",
            "{:?}\n{}",
            resp.headers,
            weir.log_report()
        );
    }
    let resp = poll_until(
        &ports,
        &weir,
        Duration::from_secs(5),
        "5 events dequeued",
        |r| number(r, "events") >= 5,
    )
    .await;
    assert_eq!(reported(&resp, "events"), "5", "{:?}", resp.headers);
    assert_eq!(
        reported(&resp, "last-event"),
        "item-4",
        "{:?}",
        resp.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_http_call_reaches_an_upstream() {
    let ports = Ports::new();
    // The cluster of `config::simple`.
    let cluster = "backend";
    let up = H1Upstream::start("called-by-service").await;
    let mut config = config::simple(ports, &[up.addr]);
    set_filters(&mut config, vec![reporter_filter()]);
    config["bootstrap_extensions"] = json!([service_extension(
        true,
        &format!("tick_ms=100;call={cluster}")
    )]);
    let weir = start_with_env(&config, 1, &[]).await;
    let resp = poll_until(&ports, &weir, Duration::from_secs(10), "3 callouts", |r| {
        number(r, "calls") >= 3
    })
    .await;
    assert_eq!(
        reported(&resp, "call"),
        "200 called-by-service",
        "{:?}",
        resp.headers
    );
    let seen = up
        .last_request("/from-service")
        .expect("the upstream saw the service's callout");
    assert_eq!(seen.values("host"), ["service"], "{seen:?}");
    let from_service = up
        .requests()
        .iter()
        .filter(|r| r.path == "/from-service")
        .count();
    assert!(from_service >= 3, "callouts seen: {from_service}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_service_is_restarted_at_a_bounded_rate() {
    let (_up, ports, weir) = start(true, "tick_ms=20;trap_on_tick=3", 1).await;
    let restarts = || async {
        weir.stat("weir_wasm_service_restarts_total", &[("service", "svc")])
            .await
    };
    // When the first restart and the third are seen (polled every 20 ms).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut first = None;
    loop {
        let count = restarts().await;
        if count >= 1.0 && first.is_none() {
            first = Some(Instant::now());
        }
        if count >= 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 restarts not within 15 s (seen {count})\n{}",
            weir.log_report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The back-off doubles from 500 ms: the second restart waits 1 s, the third 2 s more.
    let between = first.map(|t| t.elapsed()).unwrap_or_default();
    assert!(
        between >= Duration::from_millis(2800),
        "restarts 1 to 3 within {between:?}: the back-off did not hold\n{}",
        weir.log_report()
    );
    let failures = weir
        .stat("weir_wasm_vm_failures_total", &[("plugin", "svc")])
        .await;
    assert!(failures >= 3.0, "failures: {failures}");
    let log = weir.log();
    assert!(
        log.contains("Wasm service VM failed") && log.contains("trapping on purpose"),
        "the trap and the module's panic message are logged\n{}",
        weir.log_report()
    );
    assert!(
        log.contains("Wasm service restarted"),
        "{}",
        weir.log_report()
    );
    // Each new VM ticked (tickers counts VMs that ticked), and requests were served throughout.
    let resp = get(&ports, "/").await;
    assert_eq!(resp.status, 200);
    assert!(number(&resp, "tickers") >= 3, "{:?}", resp.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_stops_cleanly_on_shutdown() {
    let (_up, ports, mut weir) = start(true, "tick_ms=50", 2).await;
    poll_until(&ports, &weir, Duration::from_secs(10), "a tick", |r| {
        number(r, "ticks") >= 1
    })
    .await;
    weir.sigterm();
    let status = weir
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("weir exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", weir.log_report());
    let log = weir.log();
    assert!(
        log.contains("Wasm service stopped"),
        "{}",
        weir.log_report()
    );
    let stopped = log.find("Wasm service stopped").unwrap_or(0);
    let drained = log.find("drained; exiting").unwrap_or(0);
    assert!(stopped < drained, "the service stops before weir exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_lives_across_a_reload_and_a_change_to_it_needs_a_restart() {
    let (_up, ports, weir) = start(true, "tick_ms=50", 1).await;
    poll_until(&ports, &weir, Duration::from_secs(10), "a tick", |r| {
        number(r, "tickers") >= 1
    })
    .await;
    // A reload that leaves the service alone: applied, and the same VM ticks on.
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(weir.config_path()).expect("read config"))
            .expect("config is JSON");
    config::hcm_of(&mut config)["stat_prefix"] = json!("reloaded");
    std::fs::write(weir.config_path(), config.to_string()).expect("write config");
    let (status, body) = weir.admin_post("/reload").await;
    assert_eq!(status, 200, "{body}");
    let before = number(&get(&ports, "/").await, "ticks");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = get(&ports, "/").await;
    assert!(number(&resp, "ticks") > before, "{:?}", resp.headers);
    assert_eq!(reported(&resp, "tickers"), "1", "{:?}", resp.headers);
    // A change to the service itself is refused with the reason; the service runs on.
    config["bootstrap_extensions"][0]["typed_config"]["config"]["configuration"]["value"] =
        json!("tick_ms=60");
    std::fs::write(weir.config_path(), config.to_string()).expect("write config");
    let (status, body) = weir.admin_post("/reload").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("bootstrap_extensions") && body.contains("need a restart"),
        "{body}"
    );
    assert_eq!(weir.log().matches("Wasm service stopped").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_bootstrap_extension_type_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config::simple(Ports::new(), &["127.0.0.1:1".parse().expect("address")]);
    config["bootstrap_extensions"] = json!([{
        "name": "envoy.bootstrap.internal_listener",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
        }
    }]);
    let file = dir.path().join("ext.yaml");
    std::fs::write(&file, config.to_string()).expect("write config");
    let out = weir_tests::client::run_tool(
        weir_bin().to_str().expect("utf-8 path"),
        &["validate", "-c", file.to_str().expect("utf-8 path")],
        Duration::from_secs(20),
    )
    .await;
    let text = format!("{}{}", out.stdout_text(), out.stderr);
    assert_ne!(out.code, 0, "{text}");
    assert!(
        text.contains("bootstrap_extensions[0].typed_config.@type"),
        "{text}"
    );
    assert!(
        text.contains("envoy.extensions.bootstrap.internal_listener.v3.InternalListener"),
        "{text}"
    );
}
