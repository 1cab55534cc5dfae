//! A WebSocket echo server (tokio-tungstenite): every text and binary message comes back as
//! it was; pings are answered with pongs (by tungstenite); close frames are recorded and
//! echoed. The handshake requests are recorded too.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// A handshake request as the server saw it.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    accepted: AtomicU64,
    active: AtomicU64,
    handshakes: Mutex<Vec<Handshake>>,
    closes: Mutex<Vec<(u16, String)>>,
    messages: AtomicU64,
}

/// The echo server; stops when dropped.
pub struct WsEcho {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl WsEcho {
    /// Starts on 127.0.0.1:0.
    pub async fn start() -> WsEcho {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ws echo");
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
                    st.active.fetch_add(1, Ordering::SeqCst);
                    serve(&st, sock).await;
                    st.active.fetch_sub(1, Ordering::SeqCst);
                });
                while conns.try_join_next().is_some() {}
            }
        });
        WsEcho { addr, state, task }
    }

    /// TCP connections accepted.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections being served now.
    pub fn active(&self) -> u64 {
        self.state.active.load(Ordering::SeqCst)
    }

    /// Data messages echoed so far.
    pub fn messages(&self) -> u64 {
        self.state.messages.load(Ordering::SeqCst)
    }

    /// The handshakes completed so far.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.state.handshakes.lock().unwrap().clone()
    }

    /// Close frames received: (code, reason).
    pub fn closes(&self) -> Vec<(u16, String)> {
        self.state.closes.lock().unwrap().clone()
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// The callback's `Result<Response, ErrorResponse>` is tungstenite's signature, not ours.
#[allow(clippy::result_large_err)]
async fn serve(st: &State, sock: tokio::net::TcpStream) {
    let record = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        st.handshakes.lock().unwrap().push(Handshake {
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map_or("/".to_owned(), |p| p.to_string()),
            headers: crate::h1_upstream::header_pairs(req.headers()),
        });
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(sock, record).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                st.messages.fetch_add(1, Ordering::SeqCst);
                if ws.send(msg).await.is_err() {
                    return;
                }
            }
            Message::Ping(_) => {
                // tungstenite queued the pong; push it out now.
                if ws.flush().await.is_err() {
                    return;
                }
            }
            Message::Close(frame) => {
                let entry = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                st.closes.lock().unwrap().push(entry);
                // tungstenite echoes the close frame; drive it out.
                let _ = ws.flush().await;
            }
            Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}
