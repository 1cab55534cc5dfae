//! Headers weir adds (x-forwarded-for, x-forwarded-proto, x-request-id) and hop-by-hop
//! headers it must not forward.

use weir_tests::client::{get, raw_exchange};
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::{Counting, Recorded};
use weir_tests::{H1Upstream, H2Upstream, Weir};

/// An edge config: `use_remote_address: true`, so weir appends the peer to x-forwarded-for.
fn edge_config(ports: Ports, backend: std::net::SocketAddr) -> serde_json::Value {
    let mut cfg = config::simple(ports, &[backend]);
    config::hcm_of(&mut cfg)["use_remote_address"] = true.into();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_generated_request_id() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let _weir = Weir::start(&edge_config(ports, up.addr)).await;

    for i in 0..2 {
        let resp = get(ports.http_addr(), &format!("/fwd/{i}"))
            .await
            .expect("GET");
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    let seen: Vec<Recorded> = up.proxied_requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let mut ids = Vec::new();
    for rec in &seen {
        let xff = rec.values("x-forwarded-for");
        assert_eq!(xff.len(), 1, "one x-forwarded-for expected: {rec:?}");
        // A client on the loopback is named by the host's address, as Envoy does.
        let host = weir::socket::host_address().to_string();
        assert_eq!(
            xff[0], host,
            "x-forwarded-for must name the client: {rec:?}"
        );
        assert_eq!(rec.values("x-forwarded-proto"), vec!["http"], "{rec:?}");
        let rid = rec.values("x-request-id");
        assert_eq!(rid.len(), 1, "a generated x-request-id expected: {rec:?}");
        assert!(
            rid[0].len() >= 16,
            "generated x-request-id too short to be unique: {rid:?}"
        );
        ids.push(rid[0].to_owned());
    }
    assert_ne!(
        ids[0], ids[1],
        "two requests got the same generated x-request-id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_kept_when_present() {
    // Not an edge listener (no use_remote_address): Envoy keeps an incoming x-request-id
    // there (at the edge it regenerates it unless preserve_external_request_id is set).
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let _weir = Weir::start(&config::simple(ports, &[up.addr])).await;
    let req = http::Request::get("/keep")
        .header("host", "localhost")
        .header("x-request-id", "e2e-fixed-id-123")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = weir_tests::h1_request(ports.http_addr(), req)
        .await
        .expect("GET");
    assert_eq!(resp.status, 200);
    let rec = up.last_request("/keep").expect("upstream saw nothing");
    assert_eq!(
        rec.values("x-request-id"),
        vec!["e2e-fixed-id-123"],
        "an incoming x-request-id must be kept as is: {rec:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_appends_the_peer_to_incoming_entries() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let _weir = Weir::start(&edge_config(ports, up.addr)).await;
    let req = http::Request::get("/xff")
        .header("host", "localhost")
        .header("x-forwarded-for", "203.0.113.7")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = weir_tests::h1_request(ports.http_addr(), req)
        .await
        .expect("GET");
    assert_eq!(resp.status, 200);
    let rec = up.last_request("/xff").expect("upstream saw nothing");
    let xff = rec.values("x-forwarded-for");
    let host = weir::socket::host_address();
    assert_eq!(
        xff,
        vec![format!("203.0.113.7,{host}")],
        "x-forwarded-for must keep the incoming entry and append the peer, as Envoy joins them"
    );
}

/// A request carrying every hop-by-hop header a client may send on HTTP/1.1 (Upgrade is left
/// out: with it, the request is an upgrade attempt, which is a different feature).
const HOP_BY_HOP_REQUEST: &str = "POST /hop HTTP/1.1\r\n\
Host: localhost\r\n\
Connection: close, X-Custom-Hop\r\n\
Keep-Alive: timeout=5\r\n\
TE: gzip\r\n\
Proxy-Connection: keep-alive\r\n\
X-Custom-Hop: secret\r\n\
X-Kept: yes\r\n\
Transfer-Encoding: chunked\r\n\
\r\n\
5\r\nhello\r\n0\r\n\r\n";

fn assert_no_hop_by_hop(rec: &Recorded, h2_upstream: bool) {
    assert_eq!(
        rec.values("x-kept"),
        vec!["yes"],
        "control header lost: {rec:?}"
    );
    for name in [
        "keep-alive",
        "te",
        "proxy-connection",
        "x-custom-hop",
        "upgrade",
    ] {
        assert!(
            rec.values(name).is_empty(),
            "hop-by-hop header {name} reached the upstream: {rec:?}"
        );
    }
    for v in rec.values("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-custom-hop"),
            "the client's Connection header reached the upstream: {rec:?}"
        );
    }
    if h2_upstream {
        // On HTTP/2 every connection-specific header is illegal; none may be sent.
        for name in ["connection", "transfer-encoding"] {
            assert!(
                rec.values(name).is_empty(),
                "{name} sent to an HTTP/2 upstream: {rec:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_do_not_reach_http1_upstream() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let _weir = Weir::start(&config::simple(ports, &[up.addr])).await;
    let reply = raw_exchange(ports.http_addr(), HOP_BY_HOP_REQUEST.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "weir answered:\n{reply}");
    let rec = up.last_request("/hop").expect("upstream saw nothing");
    assert_no_hop_by_hop(&rec, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_do_not_reach_http2_upstream() {
    let up = H2Upstream::start("up2", None).await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    config::upstream_http2(config::cluster_of(&mut cfg, 0), None);
    let _weir = Weir::start(&cfg).await;
    let reply = raw_exchange(ports.http_addr(), HOP_BY_HOP_REQUEST.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "weir answered as below (an HTTP/2 upstream resets a stream carrying a \
         connection-specific header, so a 503 may mean weir forwarded one):\n{reply}"
    );
    let rec = up.last_request("/hop").expect("h2 upstream saw nothing");
    assert_eq!(rec.method, "POST");
    assert_no_hop_by_hop(&rec, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_header_without_connection_upgrade_is_not_forwarded() {
    // Without `Connection: upgrade` this is no upgrade request, and Upgrade is hop-by-hop.
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let _weir = Weir::start(&config::simple(ports, &[up.addr])).await;
    let reply = raw_exchange(
        ports.http_addr(),
        b"GET /no-upgrade HTTP/1.1\r\nHost: localhost\r\nUpgrade: example/1\r\n\
          X-Kept: yes\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "weir answered:\n{reply}");
    let rec = up
        .last_request("/no-upgrade")
        .expect("upstream saw nothing");
    assert_eq!(rec.values("x-kept"), vec!["yes"], "{rec:?}");
    assert!(
        rec.values("upgrade").is_empty(),
        "Upgrade reached the upstream without Connection: upgrade: {rec:?}"
    );
}
