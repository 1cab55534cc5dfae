//! Hot reload of a Wasm module file: new streams run the new module, streams in flight finish
//! on the old one, and a module that does not load leaves the old one in force.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::path::Path;
use std::time::Duration;
use weir_tests::config::{self, Ports};
use weir_tests::wasm::{fixture, set_filters, start_with_env, wasm_filter};
use weir_tests::{H1Upstream, client};

async fn send(ports: Ports, path: &str, headers: &[(&str, &str)]) -> client::Resp {
    let mut req = Request::get(path).header("host", "example.com");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    tokio::time::timeout(
        Duration::from_secs(20),
        client::h1_request(ports.http_addr(), req),
    )
    .await
    .expect("answered within 20 s")
    .expect("exchange")
}

/// Replaces `path` atomically with `content`.
fn replace(path: &Path, content: &[u8]) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, content).expect("write");
    std::fs::rename(&temp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_module_file_is_reloaded_without_dropping_streams() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("plugin.wasm");
    std::fs::copy(fixture("headers"), &module).expect("copy");
    let mut config = config::simple(ports, &[up.addr]);
    set_filters(
        &mut config,
        vec![wasm_filter("reloadable", &module, "v1", false)],
    );
    let weir = start_with_env(&config, 1, &[("WEIR_WASM_RELOAD_INTERVAL_MS", "50")]).await;

    let first = send(ports, "/", &[]).await;
    assert_eq!(first.header("x-wasm-config"), "v1");

    // In flight across the reload: its response still goes through the old module.
    let in_flight = tokio::spawn(send(ports, "/slow/1500", &[]));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A broken module is refused; the old one stays.
    replace(&module, b"\0asm\x01\0\0\0broken");
    let mut refused = false;
    for _ in 0..100 {
        if weir
            .log()
            .contains("config reload failed; keeping the running config")
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "{}", weir.log_report());
    assert_eq!(send(ports, "/", &[]).await.header("x-wasm-config"), "v1");

    replace(
        &module,
        &std::fs::read(fixture("local_response")).expect("read"),
    );
    let mut reloaded = false;
    for _ in 0..100 {
        if send(ports, "/", &[("x-deny", "yes")]).await.status == 403 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloaded, "the new module answers\n{}", weir.log_report());
    let after = send(ports, "/", &[]).await;
    assert_eq!(after.status, 200);
    assert!(
        after.headers.get("x-wasm-config").is_none(),
        "new streams run the new module"
    );

    let old = in_flight.await.expect("in-flight request");
    assert_eq!(old.status, 200, "{}", old.text());
    assert_eq!(
        old.header("x-wasm-config"),
        "v1",
        "the stream in flight kept its module"
    );
}
