//! HTTP/3 for the tests, on quinn + the `h3` crate: a client ([`H3Client`]) and an upstream
//! server ([`H3Upstream`]) with a configurable QUIC stream limit, GOAWAY on demand, and
//! counters of connections and requests.
//!
//! The upstream answers `/echo` with the request body, `/slow/MS` after MS milliseconds, and
//! anything else with `ok`; every response carries `x-conn: N` (its connection's number).

use bytes::{Buf, Bytes, BytesMut};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A QUIC client config trusting `cert_der`, ALPN h3.
pub fn client_config(cert_der: &[u8]) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert_der.to_vec()))
        .expect("trust the test certificate");
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = QuicClientConfig::try_from(tls).expect("QUIC client config");
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// An HTTP/3 response read in full.
#[derive(Debug)]
pub struct H3Response {
    /// The status.
    pub status: u16,
    /// Its headers.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Bytes,
    /// Trailers, if any.
    pub trailers: Option<http::HeaderMap>,
}

/// One HTTP/3 connection to `addr` for `server_name`.
pub struct H3Client {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    /// The QUIC connection (for closing).
    pub connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

impl H3Client {
    /// Connects and sets HTTP/3 up.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        cert_der: &[u8],
    ) -> Result<H3Client, String> {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr"))
            .map_err(|e| e.to_string())?;
        endpoint.set_default_client_config(client_config(cert_der));
        let connecting = endpoint
            .connect(addr, server_name)
            .map_err(|e| e.to_string())?;
        let connection = tokio::time::timeout(crate::IO_TIMEOUT, connecting)
            .await
            .map_err(|_| "QUIC handshake timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = driver.wait_idle().await;
        });
        Ok(H3Client {
            send,
            connection,
            _endpoint: endpoint,
        })
    }

    /// Sends `method url` with `body` (and `trailers`) and reads the whole response.
    pub async fn request(
        &self,
        request: http::Request<()>,
        body: Bytes,
        trailers: Option<http::HeaderMap>,
    ) -> Result<H3Response, String> {
        let mut send = self.send.clone();
        let exchange = async move {
            let mut stream = send
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let mut rest = body;
            while !rest.is_empty() {
                let chunk = rest.split_to(rest.len().min(64 * 1024));
                stream.send_data(chunk).await.map_err(|e| e.to_string())?;
            }
            if let Some(trailers) = trailers {
                stream
                    .send_trailers(trailers)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            // The server may answer before it read our FIN and stop our sending side
            // (STOP_SENDING with H3_NO_ERROR, RFC 9114 section 4.1.1): the response still
            // counts, so a failed finish is not the end of the exchange.
            if let Err(error) = stream.finish().await {
                let _ = error;
            }
            let response = stream.recv_response().await.map_err(|e| e.to_string())?;
            let mut body = BytesMut::new();
            while let Some(mut chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
                body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
            }
            let trailers = stream.recv_trailers().await.map_err(|e| e.to_string())?;
            Ok(H3Response {
                status: response.status().as_u16(),
                headers: response.headers().clone(),
                body: body.freeze(),
                trailers,
            })
        };
        tokio::time::timeout(crate::IO_TIMEOUT, exchange)
            .await
            .map_err(|_| "HTTP/3 exchange timed out".to_owned())?
    }

    /// HTTP/3 "rapid reset": opens GET `path` streams one after another and abandons each at
    /// once (STOP_SENDING with H3_REQUEST_CANCELLED, the response unread), up to `most` or
    /// until the server closes the connection. Returns how many went out and the
    /// application error code the server closed with, if it did.
    pub async fn rapid_reset(&self, path: &str, most: u32, limit: Duration) -> (u32, Option<u64>) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut sent = 0;
        while sent < most && tokio::time::Instant::now() < deadline {
            if let Some(code) = self.close_code() {
                return (sent, Some(code));
            }
            let Ok(request) = http::Request::get(format!("https://localhost{path}")).body(())
            else {
                break;
            };
            let mut send = self.send.clone();
            let opened = tokio::time::timeout_at(deadline, send.send_request(request)).await;
            let Ok(Ok(mut stream)) = opened else {
                break;
            };
            let _ = stream.finish().await;
            stream.stop_sending(h3::error::Code::H3_REQUEST_CANCELLED);
            sent += 1;
        }
        // Give a close on its way time to land.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.connection.closed()).await;
        (sent, self.close_code())
    }

    /// The application error code the server closed the connection with, if it did.
    pub fn close_code(&self) -> Option<u64> {
        match self.connection.close_reason()? {
            quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
            _ => None,
        }
    }

    /// GET `https://localhost{path}`.
    pub async fn get(&self, path: &str) -> Result<H3Response, String> {
        let request = http::Request::get(format!("https://localhost{path}"))
            .body(())
            .map_err(|e| e.to_string())?;
        self.request(request, Bytes::new(), None).await
    }
}

impl H3Client {
    /// Whether the server's SETTINGS enable extended CONNECT (RFC 9220), waiting up to
    /// `limit` for them (h3 reports the defaults, off, until they arrive).
    pub async fn extended_connect_enabled(&self, limit: Duration) -> bool {
        use h3::ConnectionState as _;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.send.settings().enable_extended_connect() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Opens a CONNECT stream with `fields` (pseudo-headers first) and reads the response
    /// head. h3 0.0.8's client cannot send `:protocol websocket`, so the stream is opened on
    /// the QUIC connection directly and its frames are written here: one HEADERS frame
    /// (QPACK without the dynamic table, via the `qpack` crate), then DATA frames.
    pub async fn connect_stream(&self, fields: &[(&str, &str)]) -> Result<H3ConnectStream, String> {
        let open = async {
            let (mut send, recv) = self.connection.open_bi().await.map_err(|e| e.to_string())?;
            let fields: Vec<qpack::HeaderField> = fields
                .iter()
                .map(|(name, value)| qpack::HeaderField::new(*name, *value))
                .collect();
            let mut block = BytesMut::new();
            qpack::encode_stateless(&mut block, &fields).map_err(|e| e.to_string())?;
            let mut frame = BytesMut::new();
            put_varint(&mut frame, 0x01);
            put_varint(&mut frame, block.len() as u64);
            frame.extend_from_slice(&block);
            send.write_all(&frame).await.map_err(|e| e.to_string())?;
            let mut stream = H3ConnectStream {
                status: 0,
                headers: http::HeaderMap::new(),
                send,
                recv,
                buf: BytesMut::new(),
            };
            loop {
                match stream.next_frame().await? {
                    Some((0x01, block)) => {
                        let mut block = block;
                        let decoded = qpack::decode_stateless(&mut block, 1 << 16)
                            .map_err(|e| format!("response head: {e}"))?;
                        for field in decoded.fields {
                            if field.name.as_ref() == b":status" {
                                let text = String::from_utf8_lossy(&field.value).into_owned();
                                stream.status =
                                    text.parse().map_err(|_| format!("status {text}"))?;
                            } else {
                                let name = http::HeaderName::from_bytes(&field.name)
                                    .map_err(|e| e.to_string())?;
                                let value = http::HeaderValue::from_bytes(&field.value)
                                    .map_err(|e| e.to_string())?;
                                stream.headers.append(name, value);
                            }
                        }
                        if stream.status >= 200 {
                            return Ok(stream);
                        }
                    }
                    Some((0x00, _)) => return Err("DATA before the response head".into()),
                    Some(_) => {}
                    None => return Err("stream ended before the response head".into()),
                }
            }
        };
        tokio::time::timeout(crate::IO_TIMEOUT, open)
            .await
            .map_err(|_| "CONNECT stream: no response head in time".to_owned())?
    }
}

fn put_varint(buf: &mut BytesMut, value: u64) {
    if value < 1 << 6 {
        buf.extend_from_slice(&[value as u8]);
    } else if value < 1 << 14 {
        buf.extend_from_slice(&(0x4000 | value as u16).to_be_bytes());
    } else if value < 1 << 30 {
        buf.extend_from_slice(&(0x8000_0000 | value as u32).to_be_bytes());
    } else {
        buf.extend_from_slice(&(0xc000_0000_0000_0000 | value).to_be_bytes());
    }
}

/// A varint at the start of `buf`: (value, length), if complete.
fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let rest = buf.get(1..len)?;
    Some((
        rest.iter()
            .fold(u64::from(first & 0x3f), |v, b| (v << 8) | u64::from(*b)),
        len,
    ))
}

/// A CONNECT stream opened by [`H3Client::connect_stream`]: its response head, and its DATA
/// frames as the payload both ways.
pub struct H3ConnectStream {
    /// The final status.
    pub status: u16,
    /// The response headers.
    pub headers: http::HeaderMap,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
}

impl H3ConnectStream {
    /// The next whole frame (type, payload); `None` at the end of the stream.
    async fn next_frame(&mut self) -> Result<Option<(u64, Bytes)>, String> {
        loop {
            if let Some((kind, a)) = varint(&self.buf)
                && let Some((len, b)) = varint(&self.buf[a..])
                && self.buf.len() >= a + b + len as usize
            {
                self.buf.advance(a + b);
                return Ok(Some((kind, self.buf.split_to(len as usize).freeze())));
            }
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err("stream ended inside a frame".into()),
                Err(error) => return Err(format!("read: {error}")),
            }
        }
    }

    /// Sends `data` as one DATA frame.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), String> {
        let mut head = BytesMut::new();
        put_varint(&mut head, 0x00);
        put_varint(&mut head, data.len() as u64);
        self.send
            .write_all(&head)
            .await
            .map_err(|e| e.to_string())?;
        self.send.write_all(data).await.map_err(|e| e.to_string())
    }

    /// Ends the sending side (FIN).
    pub fn finish(&mut self) -> Result<(), String> {
        self.send.finish().map_err(|e| e.to_string())
    }

    /// The next DATA payload (other frame types are skipped); `None` at the end.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            match self.next_frame().await? {
                Some((0x00, data)) => return Ok(Some(data)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// Sends `sent` in DATA frames of `chunk` bytes to an echoing peer, checks that the same
    /// bytes come back, then sends our FIN and checks that the peer's FIN ends the stream.
    pub async fn echo_then_close(&mut self, sent: &[u8], chunk: usize) {
        for part in sent.chunks(chunk) {
            self.send(part).await.expect("send DATA");
        }
        let back = self.read_exact(sent.len()).await.expect("echo back");
        assert!(back == sent, "echoed bytes differ ({} back)", back.len());
        self.finish().expect("FIN");
        let rest = self.read_exact(1).await.expect("end of stream");
        assert!(rest.is_empty(), "{rest:?}");
    }

    /// Reads to the end of the stream (within [`crate::IO_TIMEOUT`]): `Ok(None)` when it
    /// ended with a FIN, `Ok(Some(code))` when the peer reset it with that error code.
    pub async fn reset_code(&mut self) -> Result<Option<u64>, String> {
        let read = async {
            loop {
                match self.recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(None),
                    Err(quinn::ReadError::Reset(code)) => return Ok(Some(code.into_inner())),
                    Err(error) => return Err(format!("read: {error}")),
                }
            }
        };
        tokio::time::timeout(crate::IO_TIMEOUT, read)
            .await
            .map_err(|_| "the stream did not end in time".to_owned())?
    }

    /// Reads DATA until `len` bytes came or the stream ended (within [`crate::IO_TIMEOUT`]).
    pub async fn read_exact(&mut self, len: usize) -> Result<Vec<u8>, String> {
        let read = async {
            let mut out = Vec::with_capacity(len);
            while out.len() < len {
                match self.recv().await? {
                    Some(data) => out.extend_from_slice(&data),
                    None => break,
                }
            }
            Ok(out)
        };
        tokio::time::timeout(crate::IO_TIMEOUT, read)
            .await
            .map_err(|_| format!("fewer than {len} bytes in time"))?
    }
}

/// An in-process HTTP/3 upstream on 127.0.0.1.
pub struct H3Upstream {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    /// Its certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its certificate, PEM (a CA file for weir).
    pub cert_pem: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    goaway: watch::Sender<u64>,
    _endpoint: quinn::Endpoint,
}

impl H3Upstream {
    /// Starts it with a self-signed certificate for localhost; each connection lets the
    /// client open `max_streams` request streams at once.
    pub async fn start(max_streams: u32) -> H3Upstream {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("rcgen certificate");
        let cert_der = ck.cert.der().to_vec();
        let cert_pem = ck.cert.pem();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert_der.clone())], key)
            .expect("server certificate");
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = QuicServerConfig::try_from(tls).expect("QUIC server config");
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(max_streams.into());
        config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("addr"))
            .expect("bind the h3 upstream");
        let addr = endpoint.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (goaway, _) = watch::channel(0u64);
        let accept = endpoint.clone();
        let (conns, reqs, goaway_tx) = (connections.clone(), requests.clone(), goaway.clone());
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                let number = conns.fetch_add(1, Ordering::SeqCst) + 1;
                let reqs = reqs.clone();
                let goaway_rx = goaway_tx.subscribe();
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        serve_connection(connection, number, reqs, goaway_rx).await;
                    }
                });
            }
        });
        H3Upstream {
            addr,
            cert_der,
            cert_pem,
            connections,
            requests,
            goaway,
            _endpoint: endpoint,
        }
    }

    /// QUIC connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Sends GOAWAY on every open connection (requests in flight finish).
    pub fn goaway(&self) {
        self.goaway.send_modify(|n| *n += 1);
    }
}

async fn serve_connection(
    connection: quinn::Connection,
    number: usize,
    requests: Arc<AtomicUsize>,
    mut goaway: watch::Receiver<u64>,
) {
    let Ok(mut h3) =
        h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(connection.clone()))
            .await
    else {
        return;
    };
    let mut closing = false;
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    requests.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        if let Ok((request, stream)) = resolver.resolve_request().await {
                            let _ = answer(request, stream, number).await;
                        }
                    });
                }
                _ => break,
            },
            changed = goaway.changed(), if !closing => {
                if changed.is_ok() {
                    closing = true;
                    let _ = h3.shutdown(0).await;
                }
            }
        }
    }
}

async fn answer(
    request: http::Request<()>,
    mut stream: h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
    number: usize,
) -> Result<(), h3::error::StreamError> {
    let path = request.uri().path().to_owned();
    let mut body = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await? {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    let trailers = stream.recv_trailers().await?;
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms = ms.parse().unwrap_or(0u64).min(10_000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let response = http::Response::builder()
        .status(200)
        .header("x-conn", number.to_string())
        .body(())
        .expect("response head");
    stream.send_response(response).await?;
    if path == "/echo" {
        let mut rest = body.freeze();
        while !rest.is_empty() {
            let chunk = rest.split_to(rest.len().min(64 * 1024));
            stream.send_data(chunk).await?;
        }
        if let Some(trailers) = trailers {
            stream.send_trailers(trailers).await?;
        }
    } else {
        stream.send_data(Bytes::from_static(b"ok")).await?;
    }
    stream.finish().await
}

/// An HTTP/1.1-over-TLS upstream on a given TCP port (to pair with an [`H3Upstream`] or a
/// UDP blackhole on the same port number) that answers `tcp`, with an `alt-svc` header once
/// one is set.
pub struct TlsTcpUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    alt_svc: Arc<std::sync::Mutex<Option<String>>>,
}

impl TlsTcpUpstream {
    /// Starts it on 127.0.0.1:`port` with a fresh self-signed certificate.
    pub async fn start(port: u16) -> TlsTcpUpstream {
        Self::start_slow(port, Duration::ZERO).await
    }

    /// Like [`TlsTcpUpstream::start`], with each TLS handshake held back by `delay`.
    pub async fn start_slow(port: u16, delay: Duration) -> TlsTcpUpstream {
        match Self::try_start_slow(port, delay).await {
            Some(upstream) => upstream,
            None => panic!("bind the TCP upstream on port {port}: in use"),
        }
    }

    /// Like [`TlsTcpUpstream::start_slow`]; `None` when the TCP port is taken (the UDP side
    /// got a port number some other test holds over TCP: pick another pair).
    pub async fn try_start_slow(port: u16, delay: Duration) -> Option<TlsTcpUpstream> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("rcgen certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(ck.cert.der().to_vec())], key)
            .expect("server certificate");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .ok()?;
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let alt_svc = Arc::new(std::sync::Mutex::new(None::<String>));
        let (conns, reqs, alt) = (connections.clone(), requests.clone(), alt_svc.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                let (acceptor, reqs, alt) = (acceptor.clone(), reqs.clone(), alt.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |_req: http::Request<hyper::body::Incoming>| {
                            reqs.fetch_add(1, Ordering::SeqCst);
                            let alt_svc = alt.lock().map(|a| a.clone()).unwrap_or(None);
                            async move {
                                let mut response = http::Response::new(http_body_util::Full::new(
                                    Bytes::from_static(b"tcp"),
                                ));
                                if let Some(value) = alt_svc {
                                    response.headers_mut().insert(
                                        "alt-svc",
                                        http::HeaderValue::from_str(&value).expect("alt-svc value"),
                                    );
                                }
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Some(TlsTcpUpstream {
            addr,
            connections,
            requests,
            alt_svc,
        })
    }

    /// Starts advertising `value` in `alt-svc`.
    pub fn advertise(&self, value: &str) {
        if let Ok(mut alt_svc) = self.alt_svc.lock() {
            *alt_svc = Some(value.to_owned());
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A UDP socket on 127.0.0.1:`port` that reads and drops every datagram (QUIC blackholed),
/// for at most `limit`.
pub async fn udp_blackhole(limit: Duration) -> (SocketAddr, tokio::task::JoinHandle<usize>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind the UDP blackhole");
    let addr = socket.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let mut dropped = 0;
        let mut buf = vec![0u8; 65536];
        let deadline = tokio::time::Instant::now() + limit;
        while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            dropped += 1;
        }
        dropped
    });
    (addr, task)
}

/// A UDP relay on 127.0.0.1 to `target` that holds every datagram back by `delay` each way
/// (a QUIC path with a long round trip), for at most `limit`.
pub async fn udp_delay_relay(target: SocketAddr, delay: Duration, limit: Duration) -> SocketAddr {
    let front = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind the relay"),
    );
    let back = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind the relay's back side"),
    );
    back.connect(target)
        .await
        .expect("connect the relay to its target");
    let addr = front.local_addr().expect("local addr");
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let deadline = tokio::time::Instant::now() + limit;
    let (f, b, c) = (front.clone(), back.clone(), client.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(Ok((n, from))) = tokio::time::timeout_at(deadline, f.recv_from(&mut buf)).await
        {
            if let Ok(mut client) = c.lock() {
                *client = Some(from);
            }
            let (b, data) = (b.clone(), buf[..n].to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = b.send(&data).await;
            });
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, back.recv(&mut buf)).await {
            let Some(to) = client.lock().ok().and_then(|c| *c) else {
                continue;
            };
            let (f, data) = (front.clone(), buf[..n].to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = f.send_to(&data, to).await;
            });
        }
    });
    addr
}
