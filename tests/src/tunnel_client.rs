//! Client-side helpers for upgrades and tunnels: a WebSocket client over TCP, a raw request
//! whose response head is read (and the connection kept), and bounded reads.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket client connection.
pub type WsClient = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `ws://addr{path}` over plain TCP; the error is tungstenite's (for an
/// HTTP answer other than 101 it names the status).
pub async fn ws_connect(addr: SocketAddr, path: &str) -> Result<WsClient, String> {
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let url = format!("ws://{addr}{path}");
        let (ws, resp) = tokio_tungstenite::client_async(url.as_str(), tcp)
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(resp) => format!(
                    "handshake answered {} ({:?})",
                    resp.status(),
                    resp.body()
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                ),
                e => format!("websocket handshake: {e}"),
            })?;
        if resp.status() != 101 {
            return Err(format!("handshake status {}", resp.status()));
        }
        Ok(ws)
    };
    tokio::time::timeout(crate::IO_TIMEOUT, fut)
        .await
        .map_err(|_| format!("websocket connect to {addr} timed out"))?
}

/// A response head read off a raw connection.
#[derive(Debug)]
pub struct RawHead {
    /// The status line, e.g. `HTTP/1.1 101 Switching Protocols`.
    pub status_line: String,
    /// The status code (0 when the line did not parse).
    pub status: u16,
    /// The head's text (status line and headers).
    pub text: String,
    /// Bytes read past the head.
    pub rest: Vec<u8>,
}

/// Writes `request` on a fresh connection and reads the response head (at most 10 s); the
/// connection stays open for the caller. `Err` says what came back instead.
pub async fn raw_head(addr: SocketAddr, request: &[u8]) -> Result<(TcpStream, RawHead), String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.write_all(request)
        .await
        .map_err(|e| format!("write request: {e}"))?;
    let head = read_response_head(&mut tcp, Duration::from_secs(10)).await?;
    Ok((tcp, head))
}

/// Reads a response head from `tcp` within `limit`.
pub async fn read_response_head(tcp: &mut TcpStream, limit: Duration) -> Result<RawHead, String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status_line = text.lines().next().unwrap_or("").to_owned();
            let status = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            return Ok(RawHead {
                status_line,
                status,
                text,
                rest: buf[end + 4..].to_vec(),
            });
        }
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => {
                return Err(format!(
                    "no response head within {limit:?}; got {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            Ok(Ok(0)) => {
                return Err(format!(
                    "connection closed before a response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => {
                return Err(format!(
                    "read error {e} before a response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
        }
    }
}

/// How a connection ended, seen by a reader.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// EOF (the peer's FIN).
    Eof,
    /// A read error (e.g. a reset).
    Error(std::io::ErrorKind),
    /// Nothing within the limit.
    Open,
}

/// Reads (discarding, counting) until EOF, an error or `limit`: how it ended and the bytes.
pub async fn read_until_end(tcp: &mut TcpStream, limit: Duration) -> (Ending, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return (Ending::Open, out),
            Ok(Ok(0)) => return (Ending::Eof, out),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return (Ending::Error(e.kind()), out),
        }
    }
}

/// Connects to `addr`, writes `early` (a failed write is ignored), and reads until the end, as
/// [`read_until_end`]. For a proxy that refuses the connection right after accepting it: its
/// reset can arrive before this side's connect has been polled to completion, and then the
/// connect itself fails with `ECONNRESET`; that counts as the same ending as a reset read.
pub async fn connect_and_read_until_end(
    addr: SocketAddr,
    early: &[u8],
    limit: Duration,
) -> (Ending, Vec<u8>) {
    let mut tcp = match TcpStream::connect(addr).await {
        Ok(tcp) => tcp,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            return (Ending::Error(e.kind()), Vec::new());
        }
        Err(e) => panic!("connect {addr}: {e}"),
    };
    let _ = tcp.write_all(early).await;
    read_until_end(&mut tcp, limit).await
}

/// A WebSocket upgrade request for `path` (HTTP/1.1, fixed key).
pub fn ws_upgrade_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nhost: ws.test\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `len` random bytes (from `seed`) on `tcp` while reading, half-closes after them, and
/// expects exactly those bytes echoed back, then EOF, within 30 s.
pub async fn echo_half_closed(tcp: TcpStream, seed: u64, len: usize) -> Result<(), String> {
    let sent = crate::random_bytes(seed, len);
    let (mut rd, mut wr) = tcp.into_split();
    let to_send = sent.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&to_send).await?;
        wr.shutdown().await?;
        Ok::<_, std::io::Error>(wr)
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut back))
        .await
        .map_err(|_| format!("echo not finished in 30 s ({} bytes back)", back.len()))?
        .map_err(|e| format!("read echo: {e}"))?;
    writer
        .await
        .map_err(|e| format!("writer: {e}"))?
        .map_err(|e| format!("write: {e}"))?;
    if back.len() != sent.len() {
        return Err(format!("bytes echoed: {} of {}", back.len(), sent.len()));
    }
    if back != sent {
        return Err("echoed bytes differ".to_owned());
    }
    Ok(())
}

/// An HTTP/2 (prior knowledge) client connection to `addr`, driven in the background; panics
/// when the connection or its handshake fails.
pub async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}
