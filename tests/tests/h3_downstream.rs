//! Downstream HTTP/3: a QUIC listener in Envoy's shape sharing its port number with a TCP
//! listener that advertises it with `alt-svc`, requests through the same routes to an
//! HTTP/1.1 upstream, bodies streamed both ways, a bad key refused at start-up.

use bytes::Bytes;
use serde_json::json;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::h3::H3Client;
use weir_tests::{H1Upstream, Weir, get};

fn h3_config(
    ports: Ports,
    backend: std::net::SocketAddr,
    dir: &std::path::Path,
) -> (serde_json::Value, Vec<u8>) {
    let tls = weir_tests::tls::self_signed(dir);
    let mut cfg = config::simple(ports, &[backend]);
    let alt_svc = format!("h3=\":{}\"; ma=86400", ports.http);
    config::hcm_of(&mut cfg)["route_config"]["response_headers_to_add"] = json!([
        {"header": {"key": "alt-svc", "value": alt_svc}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    ]);
    config::add_quic_listener(&mut cfg, ports.http, &tls.cert, &tls.key);
    (cfg, tls.cert_der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_requests_share_routes_and_stream_bodies() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, cert_der) = h3_config(ports, up.addr, dir.path());
    let weir = Weir::start_with(&cfg, &["--concurrency", "2"]).await;

    // The TCP listener advertises HTTP/3 on the same port number.
    let tcp = get(ports.http_addr(), "/any").await.expect("GET over TCP");
    assert_eq!(tcp.status, 200, "{tcp:?}");
    let alt_svc = tcp
        .headers
        .get("alt-svc")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    assert_eq!(alt_svc, Some(format!("h3=\":{}\"; ma=86400", ports.http)));

    let client = H3Client::connect(ports.http_addr(), "localhost", &cert_der)
        .await
        .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", weir.log_report()));
    let response = client.get("/h3/get").await.expect("h3 GET");
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response.headers.contains_key("alt-svc"),
        "route config headers apply to h3 too"
    );
    let seen = up.proxied_requests();
    let last = seen.last().expect("the upstream saw the request");
    assert_eq!(last.values("x-forwarded-proto"), vec!["https"], "{last:?}");

    // 10 MiB up and back, intact.
    let payload: Bytes = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let request = http::Request::post("https://localhost/echo")
        .body(())
        .expect("request");
    let echoed = client
        .request(request, payload.clone(), None)
        .await
        .unwrap_or_else(|e| panic!("h3 echo: {e}\n{}", weir.log_report()));
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.body.len(), payload.len());
    assert!(echoed.body == payload, "echoed body differs");

    let stats = weir.stats().await;
    let h3_connections = stats.get(
        "weir_http_downstream_cx_http3_total",
        &[("stat_prefix", "ingress_http")],
    );
    assert_eq!(h3_connections, Some(1.0), "one h3 connection counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_quic_key_stops_start_up_naming_the_file() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cfg, _) = h3_config(ports, up.addr, dir.path());
    let missing = dir.path().join("missing-key.pem");
    cfg["static_resources"]["listeners"][1]["filter_chains"][0]["transport_socket"]["typed_config"]
        ["downstream_tls_context"]["common_tls_context"]["tls_certificates"][0]["private_key"] =
        json!({"filename": missing.to_str().expect("utf-8")});
    let mut weir = Weir::spawn(&cfg, &["--concurrency", "1"]);
    let status = weir.wait_exit(std::time::Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| !s.success()),
        "weir must refuse to start"
    );
    let log = weir.log();
    assert!(
        log.contains("missing-key.pem"),
        "the error names the key file:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_listener_picks_the_certificate_by_sni() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let first_dir = tempfile::tempdir().expect("tempdir");
    let (mut cfg, first_der) = h3_config(ports, up.addr, first_dir.path());
    // A second certificate, for other.test only.
    let second_dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["other.test".to_owned()]).expect("rcgen");
    let (cert, key) = (
        second_dir.path().join("cert.pem"),
        second_dir.path().join("key.pem"),
    );
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");
    let certificates = &mut cfg["static_resources"]["listeners"][1]["filter_chains"][0]["transport_socket"]
        ["typed_config"]["downstream_tls_context"]["common_tls_context"]["tls_certificates"];
    certificates
        .as_array_mut()
        .expect("certificates")
        .push(json!({
            "certificate_chain": {"filename": cert.to_str().expect("utf-8")},
            "private_key": {"filename": key.to_str().expect("utf-8")},
        }));
    let weir = Weir::start(&cfg).await;
    let second_der = ck.cert.der().to_vec();
    for (name, trusted) in [("localhost", &first_der), ("other.test", &second_der)] {
        let client = H3Client::connect(ports.http_addr(), name, trusted)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", weir.log_report()));
        let response = client.get("/sni").await.expect("h3 GET");
        assert_eq!(response.status, 200, "{name}");
    }
    // other.test with only the first certificate trusted: the handshake must fail.
    let wrong = H3Client::connect(ports.http_addr(), "other.test", &first_der).await;
    assert!(wrong.is_err(), "other.test must get its own certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_h3_requests_then_exits() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, cert_der) = h3_config(ports, up.addr, dir.path());
    let mut weir = Weir::start(&cfg).await;
    let client = H3Client::connect(ports.http_addr(), "localhost", &cert_der)
        .await
        .expect("h3 connect");
    let in_flight = tokio::spawn(async move {
        let response = client.get("/slow/700").await;
        (response, client)
    });
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let started = std::time::Instant::now();
    weir.sigterm();
    let (response, _client) = in_flight.await.expect("join");
    let response =
        response.unwrap_or_else(|e| panic!("in-flight h3 request: {e}\n{}", weir.log_report()));
    assert_eq!(response.status, 200, "the request in flight finishes");
    let status = weir.wait_exit(std::time::Duration::from_secs(8)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "weir exits 0: {status:?}\n{}",
        weir.log_report()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the drained QUIC connection closed instead of holding shutdown for the drain time: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_connections_honour_idle_timeout_and_max_connection_duration() {
    let up = H1Upstream::start("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = [
        ("idle_timeout", json!({"idle_timeout": "1s"})),
        (
            "max_connection_duration",
            json!({"max_connection_duration": "2s"}),
        ),
    ];
    for (which, common) in limits {
        let ports = Ports::new();
        let (mut cfg, cert_der) = h3_config(ports, up.addr, dir.path());
        cfg["static_resources"]["listeners"][1]["filter_chains"][0]["filters"][0]["typed_config"]
            ["common_http_protocol_options"] = common;
        let weir = Weir::start(&cfg).await;
        let client = H3Client::connect(ports.http_addr(), "localhost", &cert_der)
            .await
            .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", weir.log_report()));
        let opened = std::time::Instant::now();
        let first = client.get("/first").await.expect("first GET");
        assert_eq!(first.status, 200);
        // The QUIC idle timeout (300 s by default) is far away: only the HCM limit can close it.
        let closed = client.connection.closed();
        tokio::pin!(closed);
        let keep_busy = which == "max_connection_duration";
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut requests = 0u32;
        let reason = loop {
            tokio::select! {
                reason = &mut closed => break Some(reason),
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                    if tokio::time::Instant::now() >= deadline {
                        break None;
                    }
                    if keep_busy && client.get("/busy").await.is_ok() {
                        requests += 1;
                    }
                }
            }
        };
        let lived = opened.elapsed();
        assert!(
            reason.is_some(),
            "{which}: the connection was still open after 15 s\n{}",
            weir.log_report()
        );
        let floor = if keep_busy { 2 } else { 1 };
        assert!(
            lived >= std::time::Duration::from_secs(floor),
            "{which}: closed after {lived:?}, before the limit"
        );
        if keep_busy {
            assert!(
                requests >= 3,
                "requests kept flowing until the limit ({requests})"
            );
        }
    }
}

/// Every codec's responses get their response head once, in one place: a `date` (HTTP/3
/// too, for weir's own answers), the virtual host's and the route configuration's
/// `response_headers_to_add` once (an appending header would show twice otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_responses_carry_date_and_response_headers_once() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let cert_der = tls.cert_der.clone();
    let mut cfg = config::simple(ports, &[up.addr]);
    let route_config = &mut config::hcm_of(&mut cfg)["route_config"];
    route_config["response_headers_to_add"] = json!([
        {"header": {"key": "x-route-config", "value": "b"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
    ]);
    let vhost = &mut route_config["virtual_hosts"][0];
    vhost["response_headers_to_add"] = json!([
        {"header": {"key": "x-vhost", "value": "a"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
    ]);
    let routes = vhost["routes"].as_array_mut().expect("routes");
    routes.insert(0, config::direct("/direct", 200, "here"));
    // The QUIC listener gets a copy of the TCP listener's connection manager.
    config::add_quic_listener(&mut cfg, ports.http, &tls.cert, &tls.key);
    let weir = Weir::start(&cfg).await;
    let client = H3Client::connect(ports.http_addr(), "localhost", &cert_der)
        .await
        .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", weir.log_report()));

    // weir's own answer (a direct response) and the upstream's, which brings its own date.
    for path in ["/direct", "/proxied"] {
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), client.get(path))
            .await
            .expect("h3 GET within 10 s")
            .unwrap_or_else(|e| panic!("h3 GET {path}: {e}\n{}", weir.log_report()));
        assert_eq!(response.status, 200, "{path}: {response:?}");
        let dates: Vec<_> = response.headers.get_all("date").iter().collect();
        assert_eq!(dates.len(), 1, "{path}: one date: {response:?}");
        let date = dates[0].to_str().expect("date is text");
        assert!(
            date.ends_with(" GMT") && date.len() == "Sun, 06 Nov 1994 08:49:37 GMT".len(),
            "{path}: an HTTP date: {date}"
        );
        let vhost_values: Vec<_> = response.headers.get_all("x-vhost").iter().collect();
        assert_eq!(
            vhost_values,
            ["a"],
            "{path}: the vhost's header once: {response:?}"
        );
        let route_config_values: Vec<_> =
            response.headers.get_all("x-route-config").iter().collect();
        assert_eq!(
            route_config_values,
            ["b"],
            "{path}: the route configuration's header once: {response:?}"
        );
    }

    // The same answer over TCP (HTTP/1.1) has the same head.
    let tcp = get(ports.http_addr(), "/direct")
        .await
        .expect("GET over TCP");
    assert_eq!(tcp.status, 200, "{tcp:?}");
    assert_eq!(tcp.headers.get_all("date").iter().count(), 1, "{tcp:?}");
    assert_eq!(tcp.headers.get_all("x-vhost").iter().count(), 1, "{tcp:?}");
}

/// `max_requests_per_connection` holds on HTTP/3 as on HTTP/2 (Envoy: the request that
/// reaches it is served, then the connection gets GOAWAY and closes once its streams are
/// done); `downstream_cx_max_requests_reached` counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_connections_end_after_max_requests_per_connection() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cfg, cert_der) = h3_config(ports, up.addr, dir.path());
    cfg["static_resources"]["listeners"][1]["filter_chains"][0]["filters"][0]["typed_config"]["common_http_protocol_options"] =
        json!({"max_requests_per_connection": 2});
    let weir = Weir::start(&cfg).await;
    let client = H3Client::connect(ports.http_addr(), "localhost", &cert_der)
        .await
        .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", weir.log_report()));
    for path in ["/1", "/2"] {
        let response = client
            .get(path)
            .await
            .unwrap_or_else(|e| panic!("h3 GET {path}: {e}\n{}", weir.log_report()));
        assert_eq!(response.status, 200, "{path}: {response:?}");
    }
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.connection.closed(),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the connection closes after its last request\n{}",
        weir.log_report()
    );
    assert_eq!(client.close_code(), Some(0x100), "closed with H3_NO_ERROR");
    assert!(client.get("/3").await.is_err(), "no third request");
    let stats = weir.stats().await;
    let labels = [("stat_prefix", "ingress_http")];
    assert_eq!(
        stats.get("weir_http_downstream_cx_max_requests_reached", &labels),
        Some(1.0)
    );
    assert_eq!(
        stats.get("weir_http_downstream_cx_http3_total", &labels),
        Some(1.0),
        "one h3 connection counted once"
    );
    assert_eq!(up.proxied_requests().len(), 2);

    // A fresh connection is served again.
    let again = H3Client::connect(ports.http_addr(), "localhost", &cert_der)
        .await
        .expect("h3 connect again");
    assert_eq!(again.get("/4").await.expect("h3 GET /4").status, 200);
}

/// `stream_idle_timeout` holds on an HTTP/3 response body as on the other codecs: an upstream
/// that stops sending mid-body gets the stream reset after the timeout (counted in
/// `downstream_rq_idle_timeout`), not when the upstream gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_response_bodies_honour_stream_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stalling = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = stalling.local_addr().expect("addr");
    let serving = tokio::spawn(async move {
        // One connection: the head and 5 of 100 body bytes, then nothing for 20 s.
        let Ok(Ok((mut socket, _))) =
            tokio::time::timeout(std::time::Duration::from_secs(20), stalling.accept()).await
        else {
            return;
        };
        let mut buf = [0u8; 4096];
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut buf)).await;
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
            .await;
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    });
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cfg, cert_der) = h3_config(ports, upstream, dir.path());
    cfg["static_resources"]["listeners"][1]["filter_chains"][0]["filters"][0]["typed_config"]["stream_idle_timeout"] =
        json!("1s");
    let weir = Weir::start(&cfg).await;
    let client = H3Client::connect(ports.http_addr(), "localhost", &cert_der)
        .await
        .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", weir.log_report()));
    let started = std::time::Instant::now();
    let result = client.get("/stalls").await;
    let took = started.elapsed();
    assert!(result.is_err(), "the stalled body is cut: {result:?}");
    assert!(
        took < std::time::Duration::from_secs(8),
        "cut by stream_idle_timeout (1 s), not by the upstream: {took:?}\n{}",
        weir.log_report()
    );
    let stats = weir.stats().await;
    assert_eq!(
        stats.get(
            "weir_http_downstream_rq_idle_timeout",
            &[("stat_prefix", "ingress_http")]
        ),
        Some(1.0)
    );
    serving.abort();
}
