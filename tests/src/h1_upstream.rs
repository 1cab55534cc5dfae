//! An in-process HTTP/1.1 upstream (hyper) that counts its connections and records requests.
//!
//! Paths (after any rewrite by weir):
//! - `/echo`: the request body back, streamed in 64 KiB chunks (chunked encoding);
//! - `/large/N`: N bytes of [`crate::pattern`], chunked;
//! - `/slow/MS`: waits MS milliseconds, then answers like the default;
//! - `/health`: 200 while healthy, 503 otherwise ([`H1Upstream::set_healthy`]);
//! - `/drop`: closes the connection without answering;
//! - anything else: 200 with a JSON description of the request (see [`describe`]).
//!
//! Every response carries `x-upstream: NAME` and `x-conn-id: N` (N counts accepted
//! connections from 1), plus `x-echoed: V` when the request had `x-echo-back: V`.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The connection it came on (1-based).
    pub conn: u64,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers in arrival order, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// Every value of a header.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Connection counters and request log shared by the upstreams.
#[derive(Default)]
pub struct Tracker {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
    /// Ids of the connections that have closed.
    pub closed: Mutex<Vec<u64>>,
    /// Requests, in arrival order.
    pub requests: Mutex<Vec<Recorded>>,
    /// Requests being handled now.
    pub in_flight: AtomicU64,
}

impl Tracker {
    pub(crate) fn open(&self) -> u64 {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.accepted.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn close(&self, id: u64) {
        self.active.fetch_sub(1, Ordering::SeqCst);
        self.closed.lock().unwrap().push(id);
    }

    pub(crate) fn record(&self, r: Recorded) {
        self.requests.lock().unwrap().push(r);
    }
}

/// Methods common to both upstream kinds.
pub trait Counting {
    /// The shared counters.
    fn tracker(&self) -> &Tracker;

    /// Connections accepted so far.
    fn accepted(&self) -> u64 {
        self.tracker().accepted.load(Ordering::SeqCst)
    }
    /// Connections open now.
    fn active(&self) -> u64 {
        self.tracker().active.load(Ordering::SeqCst)
    }
    /// Whether connection `id` has closed.
    fn is_closed(&self, id: u64) -> bool {
        self.tracker().closed.lock().unwrap().contains(&id)
    }
    /// Requests being handled now.
    fn in_flight(&self) -> u64 {
        self.tracker().in_flight.load(Ordering::SeqCst)
    }
    /// All requests seen.
    fn requests(&self) -> Vec<Recorded> {
        self.tracker().requests.lock().unwrap().clone()
    }
    /// Requests seen other than health checks (`/health`).
    fn proxied_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path != "/health")
            .collect()
    }
    /// The last request whose path starts with `prefix`.
    fn last_request(&self, prefix: &str) -> Option<Recorded> {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.path.starts_with(prefix))
    }
}

/// JSON description of a request: upstream name, connection, method, path, authority (h2) or
/// host, and the headers as `{name: [values]}`.
pub fn describe(name: &str, r: &Recorded, authority: Option<&str>) -> Value {
    let mut headers = serde_json::Map::new();
    for (n, v) in &r.headers {
        headers
            .entry(n.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .expect("array")
            .push(Value::String(v.clone()));
    }
    json!({
        "upstream": name,
        "conn": r.conn,
        "method": r.method,
        "path": r.path,
        "authority": authority,
        "headers": headers,
    })
}

pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

struct State {
    name: String,
    healthy: AtomicBool,
    tracker: Tracker,
}

/// The HTTP/1.1 upstream; stops accepting (and drops its connections) when dropped.
pub struct H1Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Counting for H1Upstream {
    fn tracker(&self) -> &Tracker {
        &self.state.tracker
    }
}

impl H1Upstream {
    /// Starts on 127.0.0.1:0, healthy.
    pub async fn start(name: &str) -> H1Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(State {
            name: name.to_owned(),
            healthy: AtomicBool::new(true),
            tracker: Tracker::default(),
        });
        let st = state.clone();
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
                conns.spawn(async move {
                    let st2 = st.clone();
                    let svc = service_fn(move |req| handle(st2.clone(), id, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                    st.tracker.close(id);
                });
                while conns.try_join_next().is_some() {}
            }
        });
        H1Upstream { addr, state, task }
    }

    /// The name it puts in `x-upstream`.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Makes `/health` answer 200 (true) or 503 (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }
}

impl Drop for H1Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(data: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A chunked body (no length known in advance) sending `data` in 64 KiB frames.
fn chunked(data: Bytes) -> Body {
    let chunks: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = (0..data
        .len())
        .step_by(64 * 1024)
        .map(|i| Ok(Frame::data(data.slice(i..(i + 64 * 1024).min(data.len())))))
        .collect();
    StreamBody::new(futures_util::stream::iter(chunks)).boxed()
}

#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dropping the connection on purpose")
    }
}

impl std::error::Error for DropConnection {}

async fn handle(
    st: Arc<State>,
    conn: u64,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let rec = Recorded {
        conn,
        method: req.method().to_string(),
        path: path.clone(),
        headers: header_pairs(req.headers()),
    };
    st.tracker.record(rec.clone());
    let echo_back = req.headers().get("x-echo-back").cloned();
    st.tracker.in_flight.fetch_add(1, Ordering::SeqCst);
    let result = respond(&st, &rec, &path, req).await;
    st.tracker.in_flight.fetch_sub(1, Ordering::SeqCst);
    let (status, body) = result?;
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert("x-upstream", st.name.parse().expect("header value"));
    h.insert("x-conn-id", conn.into());
    if let Some(v) = echo_back {
        h.insert("x-echoed", v);
    }
    Ok(resp)
}

/// Paths for retry tests, by what the upstream answers (with the request body back):
/// `/fail-first/K/...` 503 while this upstream has seen at most K requests for the path,
/// then 200; `/fail-on/NAME/...` 503 from the upstream named NAME, 200 from the others;
/// `/status/NNN/...` NNN; `/slow-first/K/MS/...` 200 after MS ms while this upstream has seen
/// at most K requests for the path, at once after. `None` for any other path.
async fn retry_paths(st: &State, path: &str) -> Option<StatusCode> {
    let seen = || {
        st.tracker
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .count()
    };
    let mut words = path.trim_start_matches('/').split('/');
    let kind = words.next()?;
    let arg = words.next().unwrap_or("");
    match kind {
        "fail-first" => {
            let k: usize = arg.parse().unwrap_or(0);
            Some(if seen() <= k {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            })
        }
        "fail-on" => Some(if arg == st.name {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }),
        "status" => StatusCode::from_u16(arg.parse().unwrap_or(200)).ok(),
        "slow-first" => {
            let k: usize = arg.parse().unwrap_or(0);
            let ms: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            if seen() <= k {
                tokio::time::sleep(Duration::from_millis(ms.min(30_000))).await;
            }
            Some(StatusCode::OK)
        }
        _ => None,
    }
}

async fn respond(
    st: &State,
    rec: &Recorded,
    path: &str,
    req: Request<Incoming>,
) -> Result<(StatusCode, Body), DropConnection> {
    let p = path.split('?').next().unwrap_or("");
    if p == "/echo" {
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(|_| DropConnection)?
            .to_bytes();
        return Ok((StatusCode::OK, chunked(body)));
    }
    if let Some(status) = retry_paths(st, p).await {
        // The request body comes back (a replayed body can be checked).
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(|_| DropConnection)?
            .to_bytes();
        return Ok((status, full(body)));
    }
    if let Some(n) = p.strip_prefix("/large/") {
        let n: usize = n.parse().unwrap_or(0);
        return Ok((StatusCode::OK, chunked(Bytes::from(crate::pattern(n)))));
    }
    if p == "/health" {
        return Ok(if st.healthy.load(Ordering::SeqCst) {
            (StatusCode::OK, full("healthy"))
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, full("unhealthy"))
        });
    }
    if p == "/drop" {
        return Err(DropConnection);
    }
    if let Some(ms) = p.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    // Drain the request body so keep-alive works.
    let _ = req.into_body().collect().await;
    let host = rec.values("host").first().map(|s| s.to_string());
    let desc = describe(&st.name, rec, host.as_deref());
    Ok((StatusCode::OK, full(desc.to_string())))
}
