//! In-process upstream servers and specs for the upstream tests (127.0.0.1, port 0).

use super::spec::*;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// A cluster spec for one or more local ports, HTTP/1.1, round robin, Envoy's defaults.
pub fn spec(name: &str, ports: &[u16]) -> ClusterSpec {
    ClusterSpec {
        name: name.into(),
        discovery: Discovery::Static,
        endpoints: ports
            .iter()
            .map(|port| EndpointSpec {
                address: "127.0.0.1".into(),
                port: *port,
                weight: 1,
                health: EndpointHealth::Healthy,
                priority: 0,
            })
            .collect(),
        overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR,
        weighted_priority_health: false,
        dns_refresh_rate: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        lb_policy: LbPolicy::RoundRobin,
        thresholds: Thresholds::default(),
        protocol: UpstreamProtocol::Http1,
        http2: Http2Settings::default(),
        max_requests_per_connection: None,
        idle_timeout: None,
        health_check: None,
        tls: None,
        http3: Http3Settings::default(),
        quic_hints: Vec::new(),
        cleanup_interval: Duration::from_secs(5),
        lb: LbSettings::default(),
        outlier: None,
        eds: false,
        ignore_health_on_host_removal: false,
    }
}

/// A request to `/path` with the host header set, empty body.
pub fn get(path: &str) -> http::Request<crate::body::Body> {
    let mut request = http::Request::new(crate::body::empty());
    *request.uri_mut() = path.parse().unwrap_or_default();
    request.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_static("backend.test"),
    );
    request
}

/// What a test server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Connections accepted.
    pub accepted: AtomicUsize,
    /// Connections that served at least one request other than `/healthz` and then closed.
    pub data_closed: AtomicUsize,
    /// Requests other than `/healthz`.
    pub requests: AtomicUsize,
}

impl Seen {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    pub fn data_closed(&self) -> usize {
        self.data_closed.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Handles one request of an HTTP/1.1 test server.
pub type Handler = Arc<
    dyn Fn(http::Request<Incoming>) -> BoxFuture<'static, http::Response<Full<Bytes>>>
        + Send
        + Sync,
>;

/// A handler that answers 200 "ok" after `delay`.
pub fn delayed_ok(delay: Duration) -> Handler {
    Arc::new(move |_request| {
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            http::Response::new(Full::new(Bytes::from_static(b"ok")))
        })
    })
}

/// A server on 127.0.0.1:0 that counts each connection it accepts in [`Seen`] and serves it
/// with what `serve` makes of it, on its own task.
async fn serve_each<S, F>(mut serve: S) -> (SocketAddr, Arc<Seen>)
where
    S: FnMut(tokio::net::TcpStream, Arc<Seen>) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let seen = Arc::new(Seen::default());
    let seen_by_server = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            seen_by_server.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(tcp, seen_by_server.clone()));
        }
    });
    (addr, seen)
}

/// An HTTP/1.1 server (hyper) on 127.0.0.1:0; `/healthz` answers 200 while `healthy` is
/// set and 503 otherwise; everything else goes to `handler`.
pub async fn http1_server(handler: Handler, healthy: Arc<AtomicBool>) -> (SocketAddr, Arc<Seen>) {
    serve_each(move |tcp, seen| {
        let handler = handler.clone();
        let healthy = healthy.clone();
        async move {
            let served_data = Arc::new(AtomicBool::new(false));
            let served = served_data.clone();
            let seen_here = seen.clone();
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let handler = handler.clone();
                let healthy = healthy.clone();
                let served = served.clone();
                let seen = seen_here.clone();
                async move {
                    if request.uri().path() == "/healthz" {
                        let status = if healthy.load(Ordering::SeqCst) {
                            200
                        } else {
                            503
                        };
                        let mut response = http::Response::new(Full::new(Bytes::new()));
                        *response.status_mut() =
                            http::StatusCode::from_u16(status).unwrap_or_default();
                        return Ok::<_, std::convert::Infallible>(response);
                    }
                    served.store(true, Ordering::SeqCst);
                    seen.requests.fetch_add(1, Ordering::SeqCst);
                    Ok(handler(request).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
            if served_data.load(Ordering::SeqCst) {
                seen.data_closed.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// An HTTP/2 server (the h2 crate) on 127.0.0.1:0 advertising `max_streams` when given.
/// `/slow` answers after 300 ms, `/echo` sends the request body back with the request's
/// trailers plus `x-echo-len`, anything else answers "ok" at once. Setting `goaway` makes
/// every open connection shut down gracefully (GOAWAY; streams in flight finish).
pub async fn http2_server(
    max_streams: Option<u32>,
    goaway: tokio::sync::watch::Receiver<bool>,
) -> (SocketAddr, Arc<Seen>) {
    serve_each(move |tcp, seen| {
        let mut goaway = goaway.clone();
        // Only a GOAWAY requested after this connection opened applies to it.
        goaway.borrow_and_update();
        async move {
            let mut builder = h2::server::Builder::new();
            if let Some(max) = max_streams {
                builder.max_concurrent_streams(max);
            }
            let Ok(mut connection) = builder.handshake::<_, Bytes>(tcp).await else {
                return;
            };
            let mut shutting_down = false;
            loop {
                tokio::select! {
                    accepted = connection.accept() => match accepted {
                        Some(Ok((request, respond))) => {
                            seen.requests.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(handle_h2(request, respond));
                        }
                        _ => break,
                    },
                    changed = goaway.changed(), if !shutting_down => {
                        if changed.is_ok() && *goaway.borrow() {
                            shutting_down = true;
                            connection.graceful_shutdown();
                        }
                    }
                }
            }
            seen.data_closed.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await
}

async fn handle_h2(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let path = request.uri().path().to_owned();
    let mut body = request.into_body();
    let mut received = Vec::new();
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
        received.extend_from_slice(&data);
    }
    let trailers = body.trailers().await.ok().flatten();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let Ok(mut stream) = respond.send_response(http::Response::new(()), false) else {
        return;
    };
    if path != "/echo" {
        let _ = stream.send_data(Bytes::from_static(b"ok"), true);
        return;
    }
    let mut data = Bytes::from(received);
    let length = data.len();
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let Some(Ok(available)) = std::future::poll_fn(|cx| stream.poll_capacity(cx)).await else {
            return;
        };
        let chunk = data.split_to(available.min(data.len()));
        if stream.send_data(chunk, false).is_err() {
            return;
        }
    }
    let mut trailers = trailers.unwrap_or_default();
    trailers.insert("x-echo-len", http::HeaderValue::from(length));
    let _ = stream.send_trailers(trailers);
}

/// Path of a file in `upstream/testdata`.
pub fn testdata(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/upstream/testdata")
        .join(file)
}

/// A TLS server on 127.0.0.1:0 with `testdata/cert.pem` (for `localhost`, signed by
/// `testdata/ca.pem`) offering `alpn`; speaks h2 when ALPN chose it, HTTP/1.1 otherwise, and
/// answers "ok".
pub async fn tls_server(alpn: &[&[u8]]) -> (SocketAddr, Arc<Seen>) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |file: &str| std::fs::read(testdata(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let certs = rustls_pemfile::certs(&mut read("cert.pem").as_slice())
        .collect::<Result<Vec<CertificateDer<'static>>, _>>()
        .unwrap_or_else(|e| panic!("cert: {e}"));
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut read("key.pem").as_slice())
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("key.pem has a key"));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
    .unwrap_or_else(|e| panic!("server config: {e}"));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    serve_each(move |tcp, seen| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                let Ok(mut connection) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = connection.accept().await {
                    seen.requests.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(handle_h2(request, respond));
                }
            } else {
                let service =
                    hyper::service::service_fn(move |_request: http::Request<Incoming>| {
                        seen.requests.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            }
        }
    })
    .await
}
