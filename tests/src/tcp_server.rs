//! Raw TCP servers for tunnel tests: echo, echo-after-EOF (half-close), a two-way exchange of
//! pseudo-random bytes with SHA-256 bookkeeping, and one that resets its connections. Each
//! counts accepted connections and every byte received.

use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What the server does with each connection.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Writes every byte back as it arrives; shuts its write half down on EOF.
    Echo,
    /// Reads until EOF, then writes everything back and shuts down (needs the peer's FIN).
    EchoAfterEof,
    /// Writes the `len` bytes of [`crate::random_bytes`]`(seed, len)` (generated as it goes)
    /// and shuts down, while
    /// reading to EOF; records the SHA-256 of what it read.
    Exchange {
        /// Seed of the bytes sent.
        seed: u64,
        /// How many bytes to send.
        len: usize,
    },
    /// Reads until at least one byte arrived, then closes with a reset (SO_LINGER 0).
    ResetAfterFirstByte,
    /// Writes [`FIN_FIRST_GREETING`] and shuts its write half down (a FIN) at once, then
    /// reads until EOF: the other direction must stay open after its FIN.
    FinFirst,
}

/// What [`Mode::FinFirst`] sends before its FIN.
pub const FIN_FIRST_GREETING: &[u8] = b"bye from the server";

/// What one connection carried, recorded when it ended.
#[derive(Debug, Clone)]
pub struct ConnRecord {
    /// Bytes read from the peer.
    pub received_len: usize,
    /// Hex SHA-256 of those bytes.
    pub received_sha: String,
    /// Whether the peer's EOF (FIN) was seen.
    pub saw_eof: bool,
    /// An I/O error, if the connection ended with one.
    pub error: Option<String>,
    /// The kind of the error a read ended with (`ConnectionReset`: the peer reset).
    pub read_error: Option<std::io::ErrorKind>,
}

#[derive(Default)]
struct State {
    accepted: AtomicU64,
    bytes_received: AtomicU64,
    records: Mutex<Vec<ConnRecord>>,
}

/// A TCP server on 127.0.0.1:0; stops (dropping its connections) when dropped.
pub struct TcpServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpServer {
    /// Starts a server in `mode`.
    pub async fn start(mode: Mode) -> TcpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tcp server");
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                st.accepted.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                conns.spawn(async move {
                    let record = serve(&st, sock, mode).await;
                    st.records.lock().unwrap().push(record);
                });
                while conns.try_join_next().is_some() {}
            }
        });
        TcpServer { addr, state, task }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Bytes received so far, over all connections.
    pub fn bytes_received(&self) -> u64 {
        self.state.bytes_received.load(Ordering::SeqCst)
    }

    /// The connections that have ended.
    pub fn records(&self) -> Vec<ConnRecord> {
        self.state.records.lock().unwrap().clone()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(st: &State, sock: TcpStream, mode: Mode) -> ConnRecord {
    let _ = sock.set_nodelay(true);
    let mut hasher = Sha256::new();
    let mut received_len = 0usize;
    let mut saw_eof = false;
    let mut error = None;
    let mut read_error = None;
    let (mut rd, mut wr) = sock.into_split();
    let mut buf = vec![0u8; 64 * 1024];
    match mode {
        Mode::Echo => loop {
            match rd.read(&mut buf).await {
                Ok(0) => {
                    saw_eof = true;
                    let _ = wr.shutdown().await;
                    break;
                }
                Ok(n) => {
                    st.bytes_received.fetch_add(n as u64, Ordering::SeqCst);
                    hasher.update(&buf[..n]);
                    received_len += n;
                    if let Err(e) = wr.write_all(&buf[..n]).await {
                        error = Some(e.to_string());
                        break;
                    }
                }
                Err(e) => {
                    read_error = Some(e.kind());
                    error = Some(e.to_string());
                    break;
                }
            }
        },
        Mode::EchoAfterEof => {
            let mut all = Vec::new();
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => {
                        saw_eof = true;
                        break;
                    }
                    Ok(n) => {
                        st.bytes_received.fetch_add(n as u64, Ordering::SeqCst);
                        all.extend_from_slice(&buf[..n]);
                    }
                    Err(e) => {
                        read_error = Some(e.kind());
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            hasher.update(&all);
            received_len = all.len();
            if saw_eof {
                if let Err(e) = wr.write_all(&all).await {
                    error = Some(e.to_string());
                }
                let _ = wr.shutdown().await;
            }
        }
        Mode::Exchange { seed, len } => {
            let writer = tokio::spawn(async move {
                let mut data = crate::RandomStream::new(seed, len);
                while let Some(chunk) = data.next_chunk(256 * 1024) {
                    wr.write_all(&chunk).await?;
                }
                wr.shutdown().await?;
                Ok::<_, std::io::Error>(wr)
            });
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => {
                        saw_eof = true;
                        break;
                    }
                    Ok(n) => {
                        st.bytes_received.fetch_add(n as u64, Ordering::SeqCst);
                        hasher.update(&buf[..n]);
                        received_len += n;
                    }
                    Err(e) => {
                        read_error = Some(e.kind());
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            match writer.await {
                Ok(Ok(_wr)) => {}
                Ok(Err(e)) => error = Some(format!("write: {e}")),
                Err(e) => error = Some(format!("writer task: {e}")),
            }
        }
        Mode::ResetAfterFirstByte => {
            match rd.read(&mut buf).await {
                Ok(n) => {
                    st.bytes_received.fetch_add(n as u64, Ordering::SeqCst);
                    hasher.update(&buf[..n]);
                    received_len = n;
                    saw_eof = n == 0;
                }
                Err(e) => {
                    read_error = Some(e.kind());
                    error = Some(e.to_string());
                }
            }
            let sock = rd.reunite(wr).expect("reunite halves");
            let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
            drop(sock);
        }
        Mode::FinFirst => {
            if let Err(e) = wr.write_all(FIN_FIRST_GREETING).await {
                error = Some(format!("write: {e}"));
            }
            let _ = wr.shutdown().await;
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => {
                        saw_eof = true;
                        break;
                    }
                    Ok(n) => {
                        st.bytes_received.fetch_add(n as u64, Ordering::SeqCst);
                        hasher.update(&buf[..n]);
                        received_len += n;
                    }
                    Err(e) => {
                        read_error = Some(e.kind());
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
    }
    ConnRecord {
        received_len,
        received_sha: hex(&hasher.finalize()),
        saw_eof,
        error,
        read_error,
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
