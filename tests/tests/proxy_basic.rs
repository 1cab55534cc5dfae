//! Real clients (curl, nghttp, hyper) through weir to real upstreams: headers both ways,
//! HTTP/1.1, h2c prior knowledge, TLS with ALPN, 10 MiB bodies both ways.

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use std::time::Duration;
use weir_tests::client::{self, H2Client, run_tool};
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::{H1Upstream, Weir, pattern, sha256_hex};

const TEN_MIB: usize = 10 * 1024 * 1024;
const TOOL_LIMIT: Duration = Duration::from_secs(60);

async fn setup() -> (H1Upstream, Ports, Weir) {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let weir = Weir::start(&config::simple(ports, &[up.addr])).await;
    (up, ports, weir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_headers_reach_upstream_and_come_back() {
    let (up, ports, weir) = setup().await;
    let url = format!("http://127.0.0.1:{}/some/path?q=1", ports.http);
    let out = run_tool(
        "curl",
        &[
            "-sS",
            "--http1.1",
            "-D",
            "-",
            "-H",
            "x-custom-req: hello",
            "-H",
            "x-echo-back: ping",
            &url,
        ],
        TOOL_LIMIT,
    )
    .await;
    let text = out.stdout_text();
    assert_eq!(out.code, 0, "curl failed: {}\n{text}", out.stderr);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "expected HTTP/1.1 200 from weir, got:\n{text}"
    );
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("x-upstream: up"),
        "upstream's response header missing:\n{text}"
    );
    assert!(
        lower.contains("x-echoed: ping"),
        "response header derived from the request missing:\n{text}"
    );
    let rec = up
        .last_request("/some/path")
        .unwrap_or_else(|| panic!("upstream saw no request; it saw {:?}", up.requests()));
    assert_eq!(
        rec.path, "/some/path?q=1",
        "path and query must arrive as sent"
    );
    assert_eq!(rec.method, "GET");
    assert_eq!(rec.values("x-custom-req"), vec!["hello"], "{rec:?}");
    assert_eq!(
        rec.values("host"),
        vec![format!("127.0.0.1:{}", ports.http)],
        "Host must arrive unchanged: {rec:?}"
    );
    drop(weir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_h2c_prior_knowledge() {
    let (up, ports, _weir) = setup().await;
    let url = format!("http://127.0.0.1:{}/h2c/path", ports.http);
    let out = run_tool(
        "nghttp",
        &["-v", "-H", "x-custom-req: over-h2", &url],
        TOOL_LIMIT,
    )
    .await;
    let text = out.stdout_text();
    assert_eq!(out.code, 0, "nghttp failed: {}\n{text}", out.stderr);
    assert!(
        text.contains("recv HEADERS frame") && text.contains(":status: 200"),
        "no HTTP/2 200 from weir:\n{text}"
    );
    assert!(
        text.contains("x-upstream: up"),
        "upstream's response header missing:\n{text}"
    );
    let rec = up
        .last_request("/h2c/path")
        .expect("upstream saw no /h2c/path");
    assert_eq!(rec.values("x-custom-req"), vec!["over-h2"], "{rec:?}");
    // The upstream is HTTP/1.1, so weir must have turned :authority into Host.
    assert_eq!(
        rec.values("host"),
        vec![format!("127.0.0.1:{}", ports.http)],
        "{rec:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_h2c_prior_knowledge_with_codec_auto() {
    let (up, ports, _weir) = setup().await;
    let mut h2 = H2Client::connect(ports.http_addr())
        .await
        .expect("h2c connect");
    let req = Request::get("http://localhost/hyper-h2c")
        .header("x-custom-req", "hyper")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.request(req).await.expect("h2c GET");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.version, Version::HTTP_2);
    assert_eq!(resp.header("x-upstream"), "up");
    let desc = resp.json();
    assert_eq!(desc["path"], "/hyper-h2c");
    assert_eq!(desc["headers"]["x-custom-req"][0], "hyper");
    assert_eq!(up.proxied_requests().len(), 1);

    // 10 MiB up and back on the same connection.
    let data = Bytes::from(pattern(TEN_MIB));
    let req = Request::post("http://localhost/echo")
        .body(Full::new(data.clone()))
        .unwrap();
    let resp = h2.request(req).await.expect("h2c POST /echo");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), TEN_MIB, "echoed body length");
    assert_eq!(
        sha256_hex(&resp.body),
        sha256_hex(&data),
        "echoed body differs"
    );

    let req = Request::get(format!("http://localhost/large/{TEN_MIB}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.request(req).await.expect("h2c GET /large");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), TEN_MIB);
    assert_eq!(sha256_hex(&resp.body), sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_ten_mib_chunked_both_ways() {
    let (_up, ports, _weir) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("upload.bin");
    let data = pattern(TEN_MIB);
    std::fs::write(&src, &data).unwrap();
    let echoed = dir.path().join("echoed.bin");
    let headers = dir.path().join("echo-headers.txt");
    let url = format!("http://127.0.0.1:{}/echo", ports.http);
    let out = run_tool(
        "curl",
        &[
            "-sS",
            "--http1.1",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", src.display()),
            "-D",
            headers.to_str().unwrap(),
            "-o",
            echoed.to_str().unwrap(),
            &url,
        ],
        TOOL_LIMIT,
    )
    .await;
    assert_eq!(out.code, 0, "curl upload failed: {}", out.stderr);
    let head = std::fs::read_to_string(&headers).unwrap();
    // curl sends `Expect: 100-continue` for a large body: a 100 may come before the 200.
    let last_status = head.lines().rfind(|l| l.starts_with("HTTP/"));
    assert!(
        last_status.is_some_and(|l| l.starts_with("HTTP/1.1 200")),
        "final status must be 200:\n{head}"
    );
    let got = std::fs::read(&echoed).unwrap();
    assert_eq!(got.len(), TEN_MIB, "echoed length; headers:\n{head}");
    assert_eq!(sha256_hex(&got), sha256_hex(&data), "echoed body differs");

    let downloaded = dir.path().join("large.bin");
    let url = format!("http://127.0.0.1:{}/large/{TEN_MIB}", ports.http);
    let out = run_tool(
        "curl",
        &[
            "-sS",
            "--http1.1",
            "-o",
            downloaded.to_str().unwrap(),
            "-w",
            "%{http_code}",
            &url,
        ],
        TOOL_LIMIT,
    )
    .await;
    assert_eq!(out.code, 0, "curl download failed: {}", out.stderr);
    assert_eq!(out.stdout_text(), "200");
    let got = std::fs::read(&downloaded).unwrap();
    assert_eq!(got.len(), TEN_MIB, "downloaded length");
    assert_eq!(
        sha256_hex(&got),
        sha256_hex(&data),
        "downloaded body differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_h2c_ten_mib_both_ways() {
    let (_up, ports, _weir) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("upload.bin");
    let data = pattern(TEN_MIB);
    std::fs::write(&src, &data).unwrap();
    let url = format!("http://127.0.0.1:{}/echo", ports.http);
    let out = run_tool("nghttp", &["-d", src.to_str().unwrap(), &url], TOOL_LIMIT).await;
    assert_eq!(out.code, 0, "nghttp upload failed: {}", out.stderr);
    assert_eq!(out.stdout.len(), TEN_MIB, "echoed length over h2");
    assert_eq!(
        sha256_hex(&out.stdout),
        sha256_hex(&data),
        "echoed body differs"
    );

    let url = format!("http://127.0.0.1:{}/large/{TEN_MIB}", ports.http);
    let out = run_tool("nghttp", &[&url], TOOL_LIMIT).await;
    assert_eq!(out.code, 0, "nghttp download failed: {}", out.stderr);
    assert_eq!(out.stdout.len(), TEN_MIB, "downloaded length over h2");
    assert_eq!(sha256_hex(&out.stdout), sha256_hex(&data));
}

async fn tls_setup() -> (H1Upstream, Ports, Weir, tempfile::TempDir, Vec<u8>) {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let certs = tempfile::tempdir().unwrap();
    let tls = weir_tests::tls::self_signed(certs.path());
    let mut cfg = config::simple(ports, &[up.addr]);
    let l = cfg["static_resources"]["listeners"][0].take();
    cfg["static_resources"]["listeners"][0] = config::with_tls(l, &tls.cert, &tls.key);
    config::hcm_of(&mut cfg)["use_remote_address"] = true.into();
    let weir = Weir::start(&cfg).await;
    (up, ports, weir, certs, tls.cert_der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_over_tls_negotiates_h2() {
    let (up, ports, _weir, _certs, _) = tls_setup().await;
    let url = format!("https://127.0.0.1:{}/tls/path", ports.http);
    let out = run_tool("nghttp", &["-v", &url], TOOL_LIMIT).await;
    let text = out.stdout_text();
    assert_eq!(out.code, 0, "nghttp https failed: {}\n{text}", out.stderr);
    assert!(
        text.contains("The negotiated protocol: h2"),
        "ALPN did not pick h2:\n{text}"
    );
    assert!(text.contains(":status: 200"), "{text}");
    let rec = up.last_request("/tls/path").expect("upstream saw nothing");
    assert_eq!(
        rec.values("x-forwarded-proto"),
        vec!["https"],
        "x-forwarded-proto over TLS: {rec:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_tls_http1_and_http2() {
    let (up, ports, _weir, _certs, _) = tls_setup().await;
    for (flag, expect) in [("--http1.1", "HTTP/1.1 200"), ("--http2", "HTTP/2 200")] {
        let url = format!("https://127.0.0.1:{}/tls{flag}", ports.http);
        let out = run_tool("curl", &["-sS", "-k", flag, "-D", "-", &url], TOOL_LIMIT).await;
        let text = out.stdout_text();
        assert_eq!(out.code, 0, "curl {flag} failed: {}\n{text}", out.stderr);
        assert!(
            text.starts_with(expect),
            "curl {flag}: expected {expect}:\n{text}"
        );
        assert!(
            up.last_request(&format!("/tls{flag}")).is_some(),
            "upstream did not see the {flag} request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustls_client_verifies_certificate_and_gets_h2() {
    let (_up, ports, _weir, _certs, cert_der) = tls_setup().await;
    let cfg = client::tls_client_config(&cert_der, &[b"h2", b"http/1.1"]);
    let (tls, alpn) = client::tls_connect(ports.http_addr(), cfg)
        .await
        .expect("TLS handshake verifying the generated certificate");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "ALPN");
    let mut h2 = H2Client::handshake(tls).await.expect("h2 over TLS");
    let req = Request::get("https://localhost/over-tls")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.request(req).await.expect("GET over h2+TLS");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.version, Version::HTTP_2);
    assert_eq!(resp.json()["path"], "/over-tls");

    // A client offering only http/1.1 gets HTTP/1.1.
    let cfg = client::tls_client_config(&cert_der, &[b"http/1.1"]);
    let (tls, alpn) = client::tls_connect(ports.http_addr(), cfg)
        .await
        .expect("TLS handshake");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let req = Request::get("/over-tls-h1")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client::h1_request_on(tls, req)
        .await
        .expect("GET over h1+TLS");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.version, Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_serve_and_share_stats() {
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let weir = Weir::start_with(&config::simple(ports, &[up.addr]), &["--concurrency", "2"]).await;
    let futs = (0..20).map(|i| async move {
        weir_tests::get(ports.http_addr(), &format!("/w/{i}"))
            .await
            .unwrap_or_else(|e| panic!("GET /w/{i}: {e}"))
    });
    let resps = futures_util::future::join_all(futs).await;
    assert!(resps.iter().all(|r| r.status == 200), "{resps:?}");
    assert_eq!(up.proxied_requests().len(), 20);
    assert_eq!(
        weir.stat(
            "weir_http_downstream_rq_total",
            &[("stat_prefix", "ingress_http")]
        )
        .await,
        20.0,
        "stats must add up over both workers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_type_http1_and_http2_are_enforced() {
    let up = H1Upstream::start("up").await;
    let admin = weir_tests::free_port();
    let (h1_port, h2_port) = (weir_tests::free_port(), weir_tests::free_port());
    let listener = |name: &str, port: u16, codec: &str| {
        let mut hcm = config::hcm(
            name,
            vec![config::vhost(
                "all",
                &["*"],
                vec![config::route_prefix("/", "backend")],
            )],
        );
        hcm["codec_type"] = codec.into();
        config::listener(name, port, hcm)
    };
    let cfg = config::bootstrap(
        admin,
        vec![
            listener("only_h1", h1_port, "HTTP1"),
            listener("only_h2", h2_port, "HTTP2"),
        ],
        vec![config::static_cluster("backend", &[up.addr])],
    );
    let _weir = Weir::start(&cfg).await;

    let h1_url = format!("http://127.0.0.1:{h1_port}/c1");
    let h2_url = format!("http://127.0.0.1:{h2_port}/c2");
    let out = run_tool(
        "curl",
        &["-sS", "--http1.1", "-D", "-", &h1_url],
        TOOL_LIMIT,
    )
    .await;
    assert!(
        out.stdout_text().starts_with("HTTP/1.1 200"),
        "HTTP1 listener, h1 client: {out:?}"
    );
    let out = run_tool("nghttp", &["-v", &h2_url], TOOL_LIMIT).await;
    assert!(
        out.code == 0 && out.stdout_text().contains(":status: 200"),
        "HTTP2 listener, h2c client: {out:?}"
    );
    assert!(up.last_request("/c1").is_some() && up.last_request("/c2").is_some());

    // The wrong protocol on each gets no answer from the upstream.
    let out = run_tool("nghttp", &["-v", &h1_url.replace("/c1", "/x1")], TOOL_LIMIT).await;
    assert!(
        !out.stdout_text().contains(":status: 200"),
        "HTTP1 listener answered an h2c client: {out:?}"
    );
    let out = run_tool(
        "curl",
        &["-sS", "--http1.1", "-D", "-", &h2_url.replace("/c2", "/x2")],
        TOOL_LIMIT,
    )
    .await;
    assert!(
        !out.stdout_text().contains(" 200"),
        "HTTP2 listener answered an HTTP/1.1 client: {out:?}"
    );
    assert!(
        up.last_request("/x1").is_none() && up.last_request("/x2").is_none(),
        "a request in the wrong protocol reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_multiplexes_concurrent_streams_on_one_connection() {
    let (up, ports, _weir) = setup().await;
    let h2 = H2Client::connect(ports.http_addr())
        .await
        .expect("h2c connect");
    let futs = (0..20).map(|i| {
        let mut c = h2.clone();
        async move {
            let req = Request::get(format!("http://localhost/slow/200?stream={i}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            c.request(req)
                .await
                .unwrap_or_else(|e| panic!("stream {i}: {e}"))
        }
    });
    let started = std::time::Instant::now();
    let resps = futures_util::future::join_all(futs).await;
    let took = started.elapsed();
    for (i, r) in resps.iter().enumerate() {
        assert_eq!(r.status, 200, "stream {i}: {r:?}");
        assert_eq!(
            r.json()["path"],
            format!("/slow/200?stream={i}"),
            "responses crossed"
        );
    }
    assert_eq!(up.proxied_requests().len(), 20);
    assert!(
        took < Duration::from_secs(3),
        "20 concurrent 200 ms streams took {took:?}: were they serialized?"
    );
}

/// A response whose body has a known length ends its HTTP/2 stream on its last DATA frame, as
/// Envoy and nghttp2 servers do, rather than with a second, empty DATA frame (a frame, a
/// write and a body poll fewer per response). Both a proxied answer and a local one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_response_ends_its_stream_on_its_last_data_frame() {
    use weir_tests::h2_frames::{self, RawH2};
    let (_up, ports, _weir) = setup().await;
    // `/`: the upstream's JSON with a content-length; no route for the other host: weir's 404.
    for (stream, authority) in [(1u32, "localhost"), (3, "no-such-host.example")] {
        let mut client = RawH2::connect(ports.http_addr()).await.expect("connect");
        let mut out = bytes::BytesMut::new();
        h2_frames::get(&mut out, stream, authority, "/", true);
        client.send(&out).await.expect("send GET");
        let mut data_frames = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no END_STREAM within 10 s"
            );
            let frame = client
                .read_frame(Duration::from_secs(5))
                .await
                .expect("read")
                .expect("a frame before EOF");
            if frame.stream != stream {
                continue;
            }
            if frame.kind == h2_frames::DATA {
                data_frames.push((
                    frame.payload.len(),
                    frame.flags & h2_frames::END_STREAM != 0,
                ));
            }
            if frame.flags & h2_frames::END_STREAM != 0 {
                break;
            }
        }
        assert!(!data_frames.is_empty(), "{authority}: a body was expected");
        assert!(
            data_frames.iter().all(|(len, _)| *len > 0),
            "{authority}: no empty DATA frame expected: {data_frames:?}"
        );
        assert!(
            data_frames.last().is_some_and(|(_, end)| *end),
            "{authority}: the last DATA frame carries END_STREAM: {data_frames:?}"
        );
    }
}
