//! An in-process HTTP/2 (prior knowledge) upstream on the `h2` crate: configurable
//! SETTINGS_MAX_CONCURRENT_STREAMS, connection counting, request log, GOAWAY on demand.
//!
//! Paths: `/slow/MS` waits MS milliseconds; anything else answers at once. Every answer is
//! 200 with the JSON of [`crate::h1_upstream::describe`] and headers `x-upstream`,
//! `x-conn-id`.

use crate::h1_upstream::{Counting, Recorded, Tracker, describe, header_pairs};
use bytes::Bytes;
use http::Response;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

struct State {
    name: String,
    tracker: Tracker,
}

/// The HTTP/2 upstream; stops (dropping its connections) when dropped.
pub struct H2Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    goaway: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Counting for H2Upstream {
    fn tracker(&self) -> &Tracker {
        &self.state.tracker
    }
}

impl H2Upstream {
    /// Starts on 127.0.0.1:0, advertising `max_concurrent_streams` when given.
    pub async fn start(name: &str, max_concurrent_streams: Option<u32>) -> H2Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind h2 upstream");
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(State {
            name: name.to_owned(),
            tracker: Tracker::default(),
        });
        let (goaway, _) = watch::channel(0u64);
        let st = state.clone();
        let goaway_tx = goaway.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    // e.g. EMFILE: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let id = st.tracker.open();
                let st = st.clone();
                let goaway_rx = goaway_tx.subscribe();
                conns.spawn(async move {
                    serve(st.clone(), id, sock, max_concurrent_streams, goaway_rx).await;
                    st.tracker.close(id);
                });
                while conns.try_join_next().is_some() {}
            }
        });
        H2Upstream {
            addr,
            state,
            goaway,
            task,
        }
    }

    /// Starts a graceful shutdown (GOAWAY, then streams in flight finish) on every
    /// connection open now.
    pub fn goaway(&self) {
        self.goaway.send_modify(|g| *g += 1);
    }
}

impl Drop for H2Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    st: Arc<State>,
    conn_id: u64,
    sock: tokio::net::TcpStream,
    max_concurrent_streams: Option<u32>,
    mut goaway: watch::Receiver<u64>,
) {
    let mut builder = h2::server::Builder::new();
    if let Some(n) = max_concurrent_streams {
        builder.max_concurrent_streams(n);
    }
    let Ok(mut conn) = builder.handshake::<_, Bytes>(sock).await else {
        return;
    };
    goaway.borrow_and_update();
    let mut watching = true;
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    let st = st.clone();
                    streams.spawn(async move { handle(st, conn_id, req, respond).await });
                }
                _ => break,
            },
            changed = goaway.changed(), if watching => {
                if changed.is_ok() {
                    conn.graceful_shutdown();
                }
                watching = false;
            }
        }
        while streams.try_join_next().is_some() {}
    }
    // The connection is done; let stream tasks that still hold a handle end on their own.
    streams.detach_all();
}

async fn handle(
    st: Arc<State>,
    conn: u64,
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let authority = req.uri().authority().map(|a| a.to_string());
    let rec = Recorded {
        conn,
        method: req.method().to_string(),
        path: path.clone(),
        headers: header_pairs(req.headers()),
    };
    st.tracker.record(rec.clone());
    st.tracker.in_flight.fetch_add(1, Ordering::SeqCst);
    // Read (and release) the request body.
    let mut body = req.into_body();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(data) => {
                let _ = body.flow_control().release_capacity(data.len());
            }
            Err(_) => break,
        }
    }
    let p = path.split('?').next().unwrap_or("");
    if let Some(n) = p.strip_prefix("/large/") {
        // `n` bytes, as fast as the peer's window lets them out.
        let n: usize = n.parse().unwrap_or(0);
        let resp = Response::builder().status(200).body(()).expect("response");
        if let Ok(send) = respond.send_response(resp, false) {
            send_large(send, n).await;
        }
        st.tracker.in_flight.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    if let Some(ms) = p.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let desc = describe(&st.name, &rec, authority.as_deref()).to_string();
    let resp = Response::builder()
        .status(200)
        .header("x-upstream", st.name.as_str())
        .header("x-conn-id", conn)
        .header("content-type", "application/json")
        .body(())
        .expect("response");
    if let Ok(mut send) = respond.send_response(resp, false) {
        let _ = send.send_data(Bytes::from(desc), true);
    }
    st.tracker.in_flight.fetch_sub(1, Ordering::SeqCst);
}

/// Sends `len` bytes (one 64 KiB block of [`crate::pattern`] over and over) within the peer's
/// flow-control window, then ends the stream.
async fn send_large(mut send: h2::SendStream<Bytes>, len: usize) {
    let block = Bytes::from(crate::pattern(64 * 1024));
    let mut left = len;
    while left > 0 {
        send.reserve_capacity(left.min(block.len()));
        let Some(Ok(n)) = std::future::poll_fn(|cx| send.poll_capacity(cx)).await else {
            return;
        };
        let n = n.min(left).min(block.len());
        if n == 0 {
            continue;
        }
        if send.send_data(block.slice(..n), false).is_err() {
            return;
        }
        left -= n;
    }
    let _ = send.send_data(Bytes::new(), true);
}
