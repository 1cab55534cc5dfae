//! The harness's own upstreams, checked directly (no weir), so a failure elsewhere points at
//! weir rather than at the test servers.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::time::Duration;
use weir_tests::client::{H2Client, get};
use weir_tests::h1_upstream::Counting;
use weir_tests::{H1Upstream, H2Upstream, pattern, sha256_hex, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_upstream_endpoints() {
    let up = H1Upstream::start("u").await;
    let r = get(up.addr, "/x?y=1").await.unwrap();
    assert_eq!(
        (r.status, r.header("x-upstream"), r.header("x-conn-id")),
        (200, "u", "1")
    );
    assert_eq!(r.json()["path"], "/x?y=1");

    let data = Bytes::from(pattern(1 << 20));
    let req = Request::post("/echo")
        .header("host", "h")
        .body(Full::new(data.clone()))
        .unwrap();
    let r = weir_tests::h1_request(up.addr, req).await.unwrap();
    assert_eq!(r.header("transfer-encoding"), "chunked");
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));

    let r = get(up.addr, "/large/1000").await.unwrap();
    assert_eq!(r.body.len(), 1000);

    assert_eq!(get(up.addr, "/health").await.unwrap().status, 200);
    up.set_healthy(false);
    assert_eq!(get(up.addr, "/health").await.unwrap().status, 503);

    assert!(
        get(up.addr, "/drop").await.is_err(),
        "/drop must not answer"
    );
    assert!(wait_until(Duration::from_secs(2), || up.active() == 0).await);
    assert!(up.is_closed(1));
    assert_eq!(up.accepted(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_upstream_streams_limit_and_goaway() {
    let up = H2Upstream::start("u2", Some(2)).await;
    let mut c = H2Client::connect(up.addr).await.unwrap();
    let r = c
        .request(
            Request::get(format!("http://{}/a", up.addr))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!((r.status, r.header("x-conn-id")), (200, "1"));
    assert_eq!(r.json()["path"], "/a");

    let slow = {
        let addr = up.addr;
        let mut c2 = H2Client::connect(addr).await.unwrap();
        tokio::spawn(async move {
            c2.request(
                Request::get(format!("http://{addr}/slow/600"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
        })
    };
    assert!(wait_until(Duration::from_secs(5), || up.in_flight() == 1).await);
    up.goaway();
    let r = slow.await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.header("x-conn-id")),
        (200, "2"),
        "in-flight stream finishes after GOAWAY"
    );
    assert!(
        wait_until(Duration::from_secs(5), || up.is_closed(1)
            && up.is_closed(2))
        .await
    );
}
