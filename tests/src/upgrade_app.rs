//! Raw HTTP/1.1 peers for upgrade and tunnel tests:
//! - [`UpgradeApp`]: answers any `Upgrade: X` request with `101` and then echoes bytes,
//!   recording each request head (to see the method that arrived);
//! - [`RefusingH1`] / [`RefusingH2`]: an upstream that waits, records every byte that
//!   arrives after the request head, then refuses the tunnel with 403.

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A request head as received.
#[derive(Debug, Clone)]
pub struct Head {
    /// Method.
    pub method: String,
    /// Request target.
    pub target: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an HTTP/1.1 request head (at most 64 KiB); returns it and any bytes read past it.
pub async fn read_head(sock: &mut TcpStream) -> Option<(Head, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = buf[end + 4..].to_vec();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((
        Head {
            method,
            target,
            headers,
        },
        rest,
    ))
}

/// Accepts forever, handing each connection to `serve`.
fn accept_loop<F, Fut>(listener: TcpListener, serve: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            conns.spawn(serve(sock));
            while conns.try_join_next().is_some() {}
        }
    })
}

/// An app that switches protocols on any upgrade request and then echoes.
pub struct UpgradeApp {
    /// Where it listens.
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<Head>>>,
    task: tokio::task::JoinHandle<()>,
}

impl UpgradeApp {
    /// Starts on 127.0.0.1:0.
    pub async fn start() -> UpgradeApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        let addr = listener.local_addr().expect("local_addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        let task = accept_loop(listener, move |mut sock| {
            let recorded = recorded.clone();
            async move {
                let Some((head, rest)) = read_head(&mut sock).await else {
                    return;
                };
                let protocol = head.header("upgrade").unwrap_or("none").to_owned();
                recorded.lock().unwrap().push(head);
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
                );
                if sock.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                if !rest.is_empty() && sock.write_all(&rest).await.is_err() {
                    return;
                }
                let (mut rd, mut wr) = sock.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            }
        });
        UpgradeApp { addr, heads, task }
    }

    /// The request heads received.
    pub fn heads(&self) -> Vec<Head> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for UpgradeApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a refusing upstream saw.
#[derive(Debug, Clone, Default)]
pub struct Refused {
    /// Method and target (h1) or method and authority/path (h2) of each tunnel request.
    pub requests: Vec<String>,
    /// The headers of each request, names lower-case (HTTP/2: with `:authority`).
    pub headers: Vec<Vec<(String, String)>>,
    /// Bytes that arrived after the request head, before the refusal was sent.
    pub before_refusal: Vec<u8>,
    /// Bytes that arrived after the refusal (for HTTP/1.1 this may be body framing such as
    /// a chunked body's last chunk).
    pub after_refusal: Vec<u8>,
}

/// How long a refusing upstream waits before answering 403.
pub const REFUSE_AFTER: Duration = Duration::from_millis(500);

/// An HTTP/1.1 upstream that answers every request with 403 after [`REFUSE_AFTER`].
pub struct RefusingH1 {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Refused>>,
    task: tokio::task::JoinHandle<()>,
}

impl RefusingH1 {
    /// Starts on 127.0.0.1:0.
    pub async fn start() -> RefusingH1 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let seen = Arc::new(Mutex::new(Refused::default()));
        let rec = seen.clone();
        let task = accept_loop(listener, move |mut sock| {
            let rec = rec.clone();
            async move {
                let Some((head, rest)) = read_head(&mut sock).await else {
                    return;
                };
                {
                    let mut r = rec.lock().unwrap();
                    r.requests.push(format!("{} {}", head.method, head.target));
                    r.headers.push(head.headers.clone());
                    r.before_refusal.extend_from_slice(&rest);
                }
                let mut buf = [0u8; 4096];
                let deadline = tokio::time::Instant::now() + REFUSE_AFTER;
                while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    rec.lock()
                        .unwrap()
                        .before_refusal
                        .extend_from_slice(&buf[..n]);
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                    .await;
                let deadline = tokio::time::Instant::now() + REFUSE_AFTER;
                while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    rec.lock()
                        .unwrap()
                        .after_refusal
                        .extend_from_slice(&buf[..n]);
                }
            }
        });
        RefusingH1 { addr, seen, task }
    }

    /// What it saw so far.
    pub fn seen(&self) -> Refused {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RefusingH1 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/2 (prior knowledge) upstream that answers every stream with 403 after
/// [`REFUSE_AFTER`], recording DATA that arrived on it.
pub struct RefusingH2 {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Refused>>,
    task: tokio::task::JoinHandle<()>,
}

impl RefusingH2 {
    /// Starts on 127.0.0.1:0.
    pub async fn start() -> RefusingH2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let seen = Arc::new(Mutex::new(Refused::default()));
        let rec = seen.clone();
        let task = accept_loop(listener, move |sock| {
            let rec = rec.clone();
            async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                let mut streams = JoinSet::new();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let rec = rec.clone();
                    streams.spawn(async move {
                        let (parts, mut body) = req.into_parts();
                        {
                            let mut r = rec.lock().unwrap();
                            r.requests.push(format!("{} {}", parts.method, parts.uri));
                            let mut headers = crate::h1_upstream::header_pairs(&parts.headers);
                            if let Some(a) = parts.uri.authority() {
                                headers.push((":authority".into(), a.to_string()));
                            }
                            r.headers.push(headers);
                        }
                        let deadline = tokio::time::Instant::now() + REFUSE_AFTER;
                        record_data(&rec, &mut body, deadline, false).await;
                        let resp = http::Response::builder()
                            .status(403)
                            .body(())
                            .expect("resp");
                        let _ = respond.send_response(resp, true);
                        let deadline = tokio::time::Instant::now() + REFUSE_AFTER;
                        record_data(&rec, &mut body, deadline, true).await;
                    });
                }
                while streams.join_next().await.is_some() {}
            }
        });
        RefusingH2 { addr, seen, task }
    }

    /// What it saw so far.
    pub fn seen(&self) -> Refused {
        self.seen.lock().unwrap().clone()
    }
}

async fn record_data(
    rec: &Mutex<Refused>,
    body: &mut h2::RecvStream,
    deadline: tokio::time::Instant,
    refused: bool,
) {
    while let Ok(Some(Ok(data))) = tokio::time::timeout_at(deadline, body.data()).await {
        let data: Bytes = data;
        let _ = body.flow_control().release_capacity(data.len());
        let mut r = rec.lock().unwrap();
        if refused {
            r.after_refusal.extend_from_slice(&data);
        } else {
            r.before_refusal.extend_from_slice(&data);
        }
    }
}

impl Drop for RefusingH2 {
    fn drop(&mut self) {
        self.task.abort();
    }
}
