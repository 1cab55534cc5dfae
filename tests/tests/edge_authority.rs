//! Authority and path hygiene at the edge (issue 17, item 4), downstream on HTTP/1.1, HTTP/2
//! and HTTP/3: userinfo in the authority is a 400 from weir itself and reaches no upstream;
//! `strip_any_host_port` / `strip_matching_host_port` pick the virtual host without the port;
//! `normalize_path` (on by default), `merge_slashes` and `path_with_escaped_slashes_action`
//! decide the path the route, the Wasm filters and the upstream see.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::{Counting, Recorded};
use weir_tests::h3::H3Client;
use weir_tests::{H1Upstream, Weir, raw_exchange};

/// Requests to `/admin...` go to the cluster `admin`, the rest to `backend`; the virtual host
/// `foo` (domain `foo`) answers itself, so a response tells which virtual host took it.
fn edge_config(ports: Ports, backend: SocketAddr, admin: SocketAddr) -> Value {
    config::bootstrap(
        ports.admin,
        vec![config::listener(
            "ingress",
            ports.http,
            config::hcm(
                "ingress_http",
                vec![
                    config::vhost("foo", &["foo"], vec![config::direct("/", 200, "vhost foo")]),
                    config::vhost(
                        "all",
                        &["*"],
                        vec![
                            config::route_prefix("/admin", "admin"),
                            config::route_prefix("/", "backend"),
                        ],
                    ),
                ],
            ),
        )],
        vec![
            config::static_cluster("backend", &[backend]),
            config::static_cluster("admin", &[admin]),
        ],
    )
}

struct Edge {
    backend: H1Upstream,
    admin: H1Upstream,
    ports: Ports,
    weir: Weir,
}

/// weir on [`edge_config`], with `tweak` applied to its connection manager.
async fn start(tweak: impl FnOnce(&mut Value)) -> Edge {
    let backend = H1Upstream::start("backend").await;
    let admin = H1Upstream::start("admin").await;
    let ports = Ports::new();
    let mut cfg = edge_config(ports, backend.addr, admin.addr);
    tweak(config::hcm_of(&mut cfg));
    let weir = Weir::start(&cfg).await;
    Edge {
        backend,
        admin,
        ports,
        weir,
    }
}

impl Edge {
    /// Sends one raw HTTP/1.1 request (`Connection: close` is added) and returns the
    /// response's status line and the whole response.
    async fn raw(&self, target: &str, host: &str) -> (String, String) {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = raw_exchange(self.ports.http_addr(), request.as_bytes()).await;
        let status = response.lines().next().unwrap_or_default().to_owned();
        (status, response)
    }

    fn upstreams_saw_nothing(&self) -> bool {
        self.backend.proxied_requests().is_empty() && self.admin.proxied_requests().is_empty()
    }

    async fn stat(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut all = vec![("stat_prefix", "ingress_http")];
        all.extend_from_slice(labels);
        self.weir.stats().await.get(name, &all).unwrap_or_default()
    }
}

fn paths(requests: &[Recorded]) -> Vec<&str> {
    requests.iter().map(|r| r.path.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_in_host_or_absolute_form_is_400_on_http1() {
    let edge = start(|_| {}).await;
    for (target, host) in [
        ("/", "x@evil.example"),
        ("/admin", "user:secret@foo"),
        ("http://x@evil.example/", "evil.example"),
        ("http://user:secret@foo/admin", "foo"),
    ] {
        let (status, response) = edge.raw(target, host).await;
        assert_eq!(
            status, "HTTP/1.1 400 Bad Request",
            "{target} Host {host}: {response}"
        );
        assert!(!response.contains("vhost foo"), "never routed: {response}");
    }
    assert!(
        edge.upstreams_saw_nothing(),
        "a request with userinfo reached an upstream: {:?} {:?}",
        edge.backend.proxied_requests(),
        edge.admin.proxied_requests()
    );
    assert_eq!(
        edge.stat(
            "weir_http_downstream_rq_xx",
            &[("response_code_class", "4")]
        )
        .await,
        4.0,
        "each refusal counts as a 4xx"
    );

    // Without the userinfo the same requests are served.
    let (status, _) = edge.raw("/", "evil.example").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(edge.backend.proxied_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_400() {
    let edge = start(|_| {}).await;
    let request =
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(edge.ports.http_addr(), request).await;
    assert!(
        response.starts_with("HTTP/1.1 400 "),
        "two Host headers: {response}"
    );
    assert!(edge.upstreams_saw_nothing());
}

/// Sends GET `uri` over a fresh h2c connection with the `h2` crate, which puts the URI's
/// authority, userinfo and all, in `:authority`; returns the status.
async fn h2_status(addr: SocketAddr, uri: &str) -> Result<u16, String> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut client, connection) = h2::client::handshake(tcp)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = http::Request::get(uri)
            .body(())
            .map_err(|e| e.to_string())?;
        let (response, _) = client
            .send_request(request, true)
            .map_err(|e| e.to_string())?;
        let response = response.await.map_err(|e| e.to_string())?;
        Ok(response.status().as_u16())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "h2 exchange timed out".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_in_authority_is_400_on_http2() {
    let edge = start(|_| {}).await;
    let addr = edge.ports.http_addr();
    for uri in ["http://x@evil.example/", "http://user:secret@foo/admin"] {
        let status = h2_status(addr, uri)
            .await
            .unwrap_or_else(|e| panic!("h2 {uri}: {e}\n{}", edge.weir.log_report()));
        assert_eq!(status, 400, ":authority of {uri}");
    }
    assert!(
        edge.upstreams_saw_nothing(),
        "a request with userinfo reached an upstream"
    );
    assert_eq!(
        h2_status(addr, "http://evil.example/a/%2e%2e/admin").await,
        Ok(200)
    );
    assert_eq!(paths(&edge.admin.proxied_requests()), ["/admin"]);
    assert_eq!(
        edge.stat(
            "weir_http_downstream_rq_xx",
            &[("response_code_class", "4")]
        )
        .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_in_authority_is_400_on_http3() {
    let backend = H1Upstream::start("backend").await;
    let admin = H1Upstream::start("admin").await;
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let mut cfg = edge_config(ports, backend.addr, admin.addr);
    config::add_quic_listener(&mut cfg, ports.http, &tls.cert, &tls.key);
    let weir = Weir::start(&cfg).await;
    let client = H3Client::connect(ports.http_addr(), "localhost", &tls.cert_der)
        .await
        .unwrap_or_else(|e| panic!("h3 connect: {e}\n{}", weir.log_report()));
    for uri in ["https://x@evil.example/", "https://user:secret@foo/admin"] {
        let request = http::Request::get(uri).body(()).expect("request");
        let response = client
            .request(request, bytes::Bytes::new(), None)
            .await
            .unwrap_or_else(|e| panic!("h3 {uri}: {e}\n{}", weir.log_report()));
        assert_eq!(response.status, 400, ":authority of {uri}: {response:?}");
    }
    assert!(
        backend.proxied_requests().is_empty() && admin.proxied_requests().is_empty(),
        "a request with userinfo reached an upstream"
    );
    let normalised = client
        .get("/a/../admin?via=h3")
        .await
        .expect("h3 GET with dots");
    assert_eq!(normalised.status, 200, "{normalised:?}");
    assert_eq!(paths(&admin.proxied_requests()), ["/admin?via=h3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_reach_the_route_and_upstream_as_admin() {
    let edge = start(|_| {}).await;
    for target in [
        "/a/%2e%2e/admin",
        "/a/../admin",
        "/a/%2E%2e/admin?next=/../x",
        "/../../admin",
        "/a/.%2e/b/..;jsessionid=1/../admin",
        "/%61dmin",
    ] {
        let (status, response) = edge.raw(target, "any.example").await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{target}: {response}");
        assert!(
            response.contains("x-upstream: admin"),
            "{target} took the /admin route: {response}"
        );
    }
    assert_eq!(
        paths(&edge.admin.proxied_requests()),
        [
            "/admin",
            "/admin",
            "/admin?next=/../x",
            "/admin",
            "/admin",
            "/admin"
        ],
        "the upstream sees the normalised path, the query as sent"
    );
    assert!(edge.backend.proxied_requests().is_empty());

    // A path that cannot be normalised is refused.
    let (status, _) = edge.raw("/admin/%00", "any.example").await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert_eq!(
        edge.stat("weir_http_downstream_rq_failed_path_normalization", &[])
            .await,
        1.0
    );
    assert_eq!(edge.admin.proxied_requests().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalize_path_false_keeps_the_path_as_sent() {
    let edge = start(|hcm| hcm["normalize_path"] = json!(false)).await;
    let (status, _) = edge.raw("/a/../admin", "any.example").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(paths(&edge.backend.proxied_requests()), ["/a/../admin"]);
    assert!(edge.admin.proxied_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_slashes_off_and_on() {
    let off = start(|_| {}).await;
    let (status, _) = off.raw("//admin///x", "any.example").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        paths(&off.backend.proxied_requests()),
        ["//admin///x"],
        "merge_slashes is off by default: `//admin` is not under the prefix `/admin`"
    );

    let on = start(|hcm| hcm["merge_slashes"] = json!(true)).await;
    let (status, _) = on.raw("//admin///x?a=//b", "any.example").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(paths(&on.admin.proxied_requests()), ["/admin/x?a=//b"]);
    assert!(on.backend.proxied_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slashes_kept_rejected_forwarded_or_redirected() {
    let keep = start(|_| {}).await;
    let (status, _) = keep.raw("/x%2F..%2Fadmin", "any.example").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        paths(&keep.backend.proxied_requests()),
        ["/x%2F..%2Fadmin"],
        "kept by default"
    );

    let reject =
        start(|hcm| hcm["path_with_escaped_slashes_action"] = json!("REJECT_REQUEST")).await;
    for target in ["/x%2F..%2Fadmin", "/a%5cb", "/admin%2f"] {
        let (status, response) = reject.raw(target, "any.example").await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{target}: {response}");
    }
    assert!(reject.upstreams_saw_nothing());
    assert_eq!(
        reject
            .stat("weir_http_downstream_rq_failed_path_normalization", &[])
            .await,
        3.0
    );
    let (status, _) = reject.raw("/fine?q=%2F", "any.example").await;
    assert_eq!(
        status, "HTTP/1.1 200 OK",
        "an escaped slash in the query is no concern"
    );

    let forward =
        start(|hcm| hcm["path_with_escaped_slashes_action"] = json!("UNESCAPE_AND_FORWARD")).await;
    let (status, _) = forward.raw("/x%2F..%2Fadmin", "any.example").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(paths(&forward.admin.proxied_requests()), ["/admin"]);

    let redirect =
        start(|hcm| hcm["path_with_escaped_slashes_action"] = json!("UNESCAPE_AND_REDIRECT")).await;
    let (status, response) = redirect.raw("/admin%2Fpanel?x=1", "any.example").await;
    assert_eq!(status, "HTTP/1.1 307 Temporary Redirect", "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nlocation: /admin/panel?x=1\r\n"),
        "{response}"
    );
    assert!(redirect.upstreams_saw_nothing());
    assert_eq!(
        redirect
            .stat(
                "weir_http_downstream_rq_redirected_with_normalized_path",
                &[]
            )
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_in_virtual_host_matching() {
    // As Envoy: the port is part of the host unless the manager strips it.
    let plain = start(|_| {}).await;
    let (_, response) = plain.raw("/x", "foo:1234").await;
    assert!(
        response.contains("x-upstream: backend"),
        "`foo:1234` is not the domain `foo`: {response}"
    );

    let any = start(|hcm| hcm["strip_any_host_port"] = json!(true)).await;
    let (status, response) = any.raw("/x", "foo:1234").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(response.ends_with("vhost foo"), "{response}");
    // The upstream receives the stripped host too.
    let (status, _) = any.raw("/x", "bar.example:8080").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let seen = any.backend.proxied_requests();
    assert_eq!(
        seen.last().map(|r| r.values("host")),
        Some(vec!["bar.example"])
    );

    let matching = start(|hcm| hcm["strip_matching_host_port"] = json!(true)).await;
    let own = format!("foo:{}", matching.ports.http);
    let (_, response) = matching.raw("/x", &own).await;
    assert!(
        response.ends_with("vhost foo"),
        "the listener's port is stripped: {response}"
    );
    let (_, response) = matching.raw("/x", "foo:1234").await;
    assert!(
        response.contains("x-upstream: backend"),
        "another port is kept: {response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_filters_see_the_normalised_path() {
    use weir_tests::wasm::{fixture, set_filters, start_with_env, wasm_filter};
    let backend = H1Upstream::start("backend").await;
    let admin = H1Upstream::start("admin").await;
    let ports = Ports::new();
    let mut cfg = edge_config(ports, backend.addr, admin.addr);
    set_filters(
        &mut cfg,
        vec![wasm_filter("headers", &fixture("headers"), "first", false)],
    );
    let _weir = start_with_env(&cfg, 1, &[]).await;
    let request = "GET /a/%2e%2e/admin?q=1 HTTP/1.1\r\nHost: any\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(ports.http_addr(), request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let seen = admin.proxied_requests();
    let last = seen.last().expect("the admin route took it");
    assert_eq!(last.path, "/admin?q=1");
    assert_eq!(
        last.values("x-wasm-request"),
        ["GET /admin?q=1"],
        "the filter read the normalised :path"
    );

    let request = "GET / HTTP/1.1\r\nHost: x@evil.example\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(ports.http_addr(), request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert!(
        !response.contains("x-wasm-response"),
        "refused before any filter ran: {response}"
    );
    assert!(backend.proxied_requests().is_empty());
}
