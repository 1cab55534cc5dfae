//! Clients: hyper (HTTP/1.1, h2c prior knowledge, h2 over TLS), raw TCP, and the `curl` /
//! `nghttp` command-line tools.

use crate::IO_TIMEOUT;
use bytes::Bytes;
use http::{HeaderMap, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A whole response.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Protocol version.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Resp {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (the upstreams answer with JSON describing what they received).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}); status {} headers {:?} body {:?}",
                self.status,
                self.headers,
                self.text()
            )
        })
    }
}

async fn collect<B>(resp: http::Response<B>) -> Result<Resp, String>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("reading response body: {e}"))?
        .to_bytes();
    Ok(Resp {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

/// One HTTP/1.1 request on a fresh connection. The request's URI should be origin-form
/// (`/path`) with a `host` header set by the caller.
pub async fn h1_request(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Resp, String> {
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        h1_request_on(tcp, req).await
    };
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| format!("HTTP/1.1 request to {addr} timed out after {IO_TIMEOUT:?}"))?
}

/// One HTTP/1.1 request on an established stream (TCP or TLS).
pub async fn h1_request_on<S>(io: S, req: Request<Full<Bytes>>) -> Result<Resp, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("h1 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("h1 request: {e}"))?;
    collect(resp).await
}

/// `GET path` with `Host: localhost` over HTTP/1.1.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Resp, String> {
    get_host(addr, "localhost", path).await
}

/// `GET path` with the given Host over HTTP/1.1.
pub async fn get_host(addr: SocketAddr, host: &str, path: &str) -> Result<Resp, String> {
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("build request: {e}"))?;
    h1_request(addr, req).await
}

/// `GET path` with the given Host and more request headers over HTTP/1.1, panicking with the
/// error.
pub async fn must_get_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let mut request = Request::get(path).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    h1_request(addr, request)
        .await
        .unwrap_or_else(|e| panic!("GET {path} via {addr}: {e}"))
}

/// Like [`get`], panicking with the error.
pub async fn must_get(addr: SocketAddr, path: &str) -> Resp {
    get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} via {addr}: {e}"))
}

/// An HTTP/2 connection with prior knowledge (h2c), or over TLS when given a TLS stream.
/// Clones share the connection (each request is a new stream).
#[derive(Clone)]
pub struct H2Client {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2Client {
    /// h2c prior knowledge to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<H2Client, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        Self::handshake(tcp).await
    }

    /// HTTP/2 handshake on an established stream.
    pub async fn handshake<S>(io: S) -> Result<H2Client, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Client { sender })
    }

    /// Sends one request (URI in absolute form, e.g. `http://localhost/path`).
    pub async fn request(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, String> {
        let fut = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("h2 connection not ready: {e}"))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("h2 request: {e}"))?;
            collect(resp).await
        };
        tokio::time::timeout(IO_TIMEOUT, fut)
            .await
            .map_err(|_| format!("h2 request timed out after {IO_TIMEOUT:?}"))?
    }
}

/// One request over a fresh h2c (prior knowledge) connection.
pub async fn h2c_request(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Resp, String> {
    let mut client = tokio::time::timeout(IO_TIMEOUT, H2Client::connect(addr))
        .await
        .map_err(|_| "h2c connect timed out".to_owned())??;
    client.request(req).await
}

/// Writes `bytes` on a fresh connection and returns everything read until the peer closes,
/// or until `limit` passes (then whatever arrived).
pub async fn raw_exchange_for(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.write_all(bytes).await.expect("write raw request");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// [`raw_exchange_for`] with a 5 s limit.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    raw_exchange_for(addr, bytes, Duration::from_secs(5)).await
}

/// What a command-line tool did.
pub struct ToolOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Stdout bytes.
    pub stdout: Vec<u8>,
    /// Stderr as text.
    pub stderr: String,
}

impl std::fmt::Debug for ToolOutput {
    /// Text, not bytes; stdout cut to its last 4 KiB (bodies can be megabytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let start = self.stdout.len().saturating_sub(4096);
        write!(
            f,
            "exit code {}\n--- stdout ({} bytes{}) ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.stdout.len(),
            if start > 0 { ", tail shown" } else { "" },
            String::from_utf8_lossy(&self.stdout[start..]),
            self.stderr
        )
    }
}

impl ToolOutput {
    /// Stdout as (lossy) text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `program args` with a time limit; panics when the program is not installed.
pub async fn run_tool(program: &str, args: &[&str], limit: Duration) -> ToolOutput {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed: apt-get install -y curl nghttp2-client (the Makefile does)"
        ),
        Err(e) => panic!("spawn {program}: {e}"),
    };
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`{program} {}` ran longer than {limit:?}", args.join(" ")))
        .unwrap_or_else(|e| panic!("wait for {program}: {e}"));
    ToolOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A rustls client config trusting exactly `cert_der`, offering `alpn`.
pub fn tls_client_config(cert_der: &[u8], alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert_der.to_vec()))
        .expect("add test certificate to roots");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    std::sync::Arc::new(config)
}

/// TLS to `addr` for server name `localhost`; returns the stream and the negotiated ALPN.
pub async fn tls_connect(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let tls = tokio::time::timeout(
        IO_TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|e| format!("TLS handshake: {e}"))?;
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    Ok((tls, alpn))
}
