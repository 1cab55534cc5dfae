//! A filter in C (`filters/c-header`): written against the proxy-wasm ABI with no SDK, built
//! by clang's wasm32 target with Debian's wasi-libc (`make wasm-filter-c`), run through weir
//! with real HTTP requests: its configuration read in `proxy_on_configure`, a header read
//! (`:path`), a response header set, a local 403 carrying a header, and a counter.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::time::Duration;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::wasm::{c_filter, set_filters, start_with_env, wasm_filter};
use weir_tests::{H1Upstream, client};

async fn send(ports: &Ports, path: &str) -> client::Resp {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_filter_sets_a_header_and_refuses_the_configured_prefix() {
    let module = c_filter();
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut config = config::simple(ports, &[up.addr]);
    set_filters(
        &mut config,
        vec![wasm_filter("c_header", &module, "/admin", false)],
    );
    let weir = start_with_env(&config, 1, &[]).await;

    for path in ["/admin", "/admin/users?x=1"] {
        let refused = send(&ports, path).await;
        assert_eq!(refused.status, 403, "{path}: {}", refused.text());
        assert_eq!(refused.text(), "blocked by c-header\n", "{path}");
        assert_eq!(refused.header("x-c-header"), "hello from C", "{path}");
    }
    assert!(up.requests().is_empty(), "nothing refused went upstream");

    let passed = send(&ports, "/public/admin").await;
    assert_eq!(
        passed.status,
        200,
        "{}\n{}",
        passed.text(),
        weir.log_report()
    );
    assert_eq!(passed.header("x-c-header"), "hello from C");
    assert_eq!(up.requests().len(), 1, "the passed request went upstream");
    assert!(
        weir.log().contains("c-header: configured"),
        "{}",
        weir.log_report()
    );
    let stats = weir.stats().await;
    assert_eq!(
        stats.get("weir_wasm_c_header_blocked", &[]),
        Some(2.0),
        "{}",
        stats.text
    );
}

/// Without a configuration the filter refuses its default prefix, `/private`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_filter_defaults_to_private() {
    let module = c_filter();
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut config = config::simple(ports, &[up.addr]);
    set_filters(
        &mut config,
        vec![wasm_filter("c_header", &module, "", false)],
    );
    let _weir = start_with_env(&config, 1, &[]).await;
    assert_eq!(send(&ports, "/private/x").await.status, 403);
    assert_eq!(send(&ports, "/admin").await.status, 200);
}
