//! Upstream connection pools and circuit breakers, seen from the upstream's own counters.

use futures_util::future::join_all;
use std::collections::BTreeMap;
use std::time::Duration;
use weir_tests::client::get;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::{H1Upstream, H2Upstream, Resp, Weir, wait_until};

const BACKEND: [(&str, &str); 1] = [("cluster_name", "backend")];

async fn concurrent_gets(ports: Ports, paths: Vec<String>) -> Vec<Resp> {
    let futs = paths.into_iter().map(|p| async move {
        get(ports.http_addr(), &p)
            .await
            .unwrap_or_else(|e| panic!("GET {p}: {e}"))
    });
    join_all(futs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_pool_respects_max_connections() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    config::circuit_breakers(config::cluster_of(&mut cfg, 0), Some(4), None, None);
    let weir = Weir::start(&cfg).await;

    let paths = (0..20).map(|i| format!("/slow/200?i={i}")).collect();
    let resps = concurrent_gets(ports, paths).await;
    let statuses: Vec<u16> = resps.iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "all 20 must succeed: {statuses:?}"
    );
    let accepted = up.accepted();
    assert!(
        (1..=4).contains(&accepted),
        "max_connections 4: the upstream accepted {accepted} connections"
    );
    assert_eq!(up.proxied_requests().len(), 20);
    let cx_total = weir.stat("weir_cluster_upstream_cx_total", &BACKEND).await;
    assert_eq!(
        cx_total, accepted as f64,
        "weir's upstream_cx_total vs the upstream's count"
    );
    let rq_total = weir.stat("weir_cluster_upstream_rq_total", &BACKEND).await;
    assert_eq!(rq_total, 20.0, "upstream_rq_total");
    let cx_overflow = weir
        .stat("weir_cluster_upstream_cx_overflow", &BACKEND)
        .await;
    assert!(
        cx_overflow >= 1.0,
        "20 concurrent requests over 4 connections must hit max_connections (upstream_cx_overflow {cx_overflow})"
    );
    assert_eq!(
        weir.stat("weir_cluster_upstream_rq_pending_overflow", &BACKEND)
            .await,
        0.0,
        "nothing may overflow the default pending limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_pending_overflow_gets_503_overloaded() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    config::circuit_breakers(config::cluster_of(&mut cfg, 0), Some(1), Some(2), None);
    let weir = Weir::start(&cfg).await;

    let paths = (0..8).map(|i| format!("/slow/1000?i={i}")).collect();
    let resps = concurrent_gets(ports, paths).await;
    let ok = resps.iter().filter(|r| r.status == 200).count();
    let overloaded: Vec<&Resp> = resps.iter().filter(|r| r.status == 503).collect();
    let summary: Vec<(u16, String)> = resps
        .iter()
        .map(|r| (r.status, r.header("x-weir-overloaded").to_owned()))
        .collect();
    assert_eq!(
        ok + overloaded.len(),
        8,
        "only 200 and 503 expected: {summary:?}"
    );
    assert!(
        (1..=3).contains(&ok),
        "1 connection + 2 pending can serve at most 3 of 8: {summary:?}"
    );
    for r in &overloaded {
        assert_eq!(
            r.header("x-weir-overloaded"),
            "true",
            "503 without the overload header: {r:?}"
        );
    }
    assert!(
        up.accepted() <= 1,
        "max_connections 1, upstream saw {}",
        up.accepted()
    );
    assert_eq!(
        up.proxied_requests().len(),
        ok,
        "overflowed requests must not reach the upstream"
    );
    let overflow = weir
        .stat("weir_cluster_upstream_rq_pending_overflow", &BACKEND)
        .await;
    assert_eq!(
        overflow,
        overloaded.len() as f64,
        "upstream_rq_pending_overflow"
    );
}

fn h2_config(
    ports: Ports,
    up: &H2Upstream,
    max_requests_per_connection: Option<u32>,
) -> serde_json::Value {
    let mut cfg = config::simple(ports, &[up.addr]);
    config::upstream_http2(config::cluster_of(&mut cfg, 0), max_requests_per_connection);
    cfg
}

fn conn_ids(resps: &[Resp]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in resps {
        *m.entry(r.header("x-conn-id").to_owned()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_pool_opens_connections_per_max_concurrent_streams() {
    let up = H2Upstream::start("up2", Some(2)).await;
    let ports = Ports::new();
    let weir = Weir::start(&h2_config(ports, &up, None)).await;

    // One request first, so the pool has the upstream's SETTINGS before the burst.
    let warm = get(ports.http_addr(), "/warm").await.expect("GET /warm");
    assert_eq!(warm.status, 200, "{warm:?}");
    assert_eq!(up.accepted(), 1);

    let paths = (0..5).map(|i| format!("/slow/800?i={i}")).collect();
    let resps = concurrent_gets(ports, paths).await;
    let statuses: Vec<u16> = resps.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let per_conn = conn_ids(&resps);
    assert_eq!(
        up.accepted(),
        3,
        "5 concurrent streams at 2 per connection need 3 connections; per connection: {per_conn:?}"
    );
    assert!(
        per_conn.values().all(|n| *n <= 2),
        "a connection carried more streams than the upstream allows: {per_conn:?}"
    );
    assert_eq!(
        weir.stat("weir_cluster_upstream_cx_total", &BACKEND).await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_pool_max_requests_per_connection() {
    let up = H2Upstream::start("up2", None).await;
    let ports = Ports::new();
    let _weir = Weir::start(&h2_config(ports, &up, Some(10))).await;
    let mut resps = Vec::new();
    for i in 0..25 {
        let r = get(ports.http_addr(), &format!("/seq/{i}"))
            .await
            .expect("GET");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        resps.push(r);
    }
    let per_conn = conn_ids(&resps);
    assert_eq!(
        up.accepted(),
        3,
        "25 requests at 10 per connection: {per_conn:?}"
    );
    let mut counts: Vec<usize> = per_conn.values().copied().collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        vec![5, 10, 10],
        "requests per connection: {per_conn:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_goaway_lets_streams_finish_and_moves_to_new_connection() {
    let up = H2Upstream::start("up2", None).await;
    let ports = Ports::new();
    let _weir = Weir::start(&h2_config(ports, &up, None)).await;
    let warm = get(ports.http_addr(), "/warm").await.expect("GET /warm");
    assert_eq!(
        (warm.status, warm.header("x-conn-id")),
        (200, "1"),
        "{warm:?}"
    );

    let addr = ports.http_addr();
    let slow = tokio::spawn(async move { get(addr, "/slow/1500").await });
    assert!(
        wait_until(Duration::from_secs(5), || up.in_flight() == 1).await,
        "the slow request never reached the upstream"
    );
    up.goaway();
    // Let the GOAWAY reach weir.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = get(addr, "/after-goaway").await.expect("GET after GOAWAY");
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(
        after.header("x-conn-id"),
        "2",
        "after GOAWAY the next request must use a new connection"
    );
    let slow = slow.await.expect("join").expect("slow request");
    assert_eq!(
        slow.status, 200,
        "the in-flight stream must finish: {slow:?}"
    );
    assert_eq!(slow.header("x-conn-id"), "1");
    assert_eq!(up.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_pool_reuses_connection_for_sequential_requests() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let _weir = Weir::start(&config::simple(ports, &[up.addr])).await;
    for i in 0..5 {
        let r = get(ports.http_addr(), &format!("/seq/{i}"))
            .await
            .expect("GET");
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        up.accepted(),
        1,
        "5 sequential requests should share one upstream connection"
    );
}
