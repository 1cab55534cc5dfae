//! One HTTP request's log entry, from its head to the end (or drop) of its response body.
//!
//! [`Entry::start`] takes what the head says; the request body is wrapped to count its bytes
//! and see its end ([`Entry::count_body`]); [`Entry::respond`] takes the response head and
//! wraps the response body ([`LoggedBody`]), which writes the line when the body ends, or,
//! dropped before its end (the client went away), with Envoy's `DC` flag. Facts only the
//! router and the pools know (the cluster, the host picked, attempts) are noted on the
//! request's task through [`note_upstream`], which costs nothing where no entry is open.

use super::AccessLogs;
use super::format::{LogContext, PickedHeaders};
use crate::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Frame, SizeHint};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

/// Envoy's response flags and code details for a response weir made itself, put in its
/// extensions by [`crate::http::local_reply::LocalReply::into_response`].
#[derive(Debug, Clone)]
pub struct ResponseInfo {
    /// Envoy's flag letters (`UF`, `NR`, ...), empty when none.
    pub flags: &'static str,
    /// `%RESPONSE_CODE_DETAILS%`.
    pub details: String,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub transport_failure: Option<String>,
}

/// Put in a response's extensions by the health check filter: the request was a health
/// check (`not_health_check_filter` leaves its line out).
#[derive(Debug, Clone, Copy)]
pub struct HealthCheckRequest;

/// Put in a tunnel's answer (an upgrade's 101, a CONNECT's 200) by the connection manager:
/// the entry is written when the tunnel closes, with the payload bytes both ways (as Envoy
/// logs upgrades and CONNECT), not when the answer's empty body ends. Whichever comes second,
/// the answer's head ([`Entry::respond`]) or the tunnel's end ([`TunnelLog::finish`]),
/// writes the line; a tunnel that never reports is logged with 0 bytes when the last handle
/// goes.
#[derive(Debug, Clone, Default)]
pub struct TunnelLog(Arc<std::sync::Mutex<TunnelLogState>>);

#[derive(Debug, Default)]
struct TunnelLogState {
    finishing: Option<Box<Finishing>>,
    /// (received from downstream, sent to downstream), once the tunnel closed.
    bytes: Option<(u64, u64)>,
}

impl TunnelLog {
    /// The tunnel closed after moving `received` bytes from downstream and `sent` to it.
    pub fn finish(&self, received: u64, sent: u64) {
        let finishing = {
            let mut state = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.bytes = Some((received, sent));
            state.finishing.take()
        };
        if let Some(finishing) = finishing {
            finishing.write_tunnel(received, sent);
        }
    }

    fn attach(&self, finishing: Box<Finishing>) {
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match state.bytes {
            Some((received, sent)) => {
                drop(state);
                finishing.write_tunnel(received, sent);
            }
            None => state.finishing = Some(finishing),
        }
    }
}

impl Drop for TunnelLogState {
    fn drop(&mut self) {
        if let Some(finishing) = self.finishing.take() {
            finishing.write_tunnel(0, 0);
        }
    }
}

/// What the router and the pools learnt about the upstream side of the request.
#[derive(Debug, Default, Clone)]
struct UpstreamNotes {
    cluster: Option<String>,
    host: Option<SocketAddr>,
    attempts: u32,
    /// How the router's retries ended, where that is a response flag.
    retry_flag: Option<RetryFlag>,
}

/// The response flags a retry policy can add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryFlag {
    /// `UO`: the `max_retries` circuit breaker kept a retry from being sent.
    Overflow,
    /// `URX`: the last try failed as the policy retries, and `num_retries` was spent.
    LimitExceeded,
}

tokio::task_local! {
    // Boxed: the scope swaps its value in and out of the thread at each poll of the stream;
    // a pointer is cheaper to swap than the notes.
    static NOTES: Box<RefCell<UpstreamNotes>>;
}

/// Notes that the request is being sent to `host` (one attempt more), when an access log
/// entry is open for it; nothing otherwise.
pub fn note_upstream(host: SocketAddr) {
    let _ = NOTES.try_with(|notes| {
        let mut notes = notes.borrow_mut();
        notes.host = Some(host);
        notes.attempts += 1;
    });
}

/// Notes how the request's retries ended (see [`RetryFlag`]), when an access log entry is
/// open for it.
pub fn note_retry_flag(flag: RetryFlag) {
    let _ = NOTES.try_with(|notes| notes.borrow_mut().retry_flag = Some(flag));
}

/// Notes the cluster a route sends to (before a host is picked, which may fail).
pub fn note_cluster(cluster: &str) {
    let _ = NOTES.try_with(|notes| {
        let mut notes = notes.borrow_mut();
        if notes.cluster.as_deref() != Some(cluster) {
            notes.cluster = Some(cluster.to_owned());
        }
    });
}

/// Runs `future` with upstream notes collected for the entry, and returns them with its
/// output.
pub async fn with_notes<F: std::future::Future>(future: F) -> (F::Output, UpstreamSeen) {
    NOTES
        .scope(Box::default(), async move {
            let output = future.await;
            let notes = NOTES.with(|n| n.take());
            (output, UpstreamSeen(notes))
        })
        .await
}

/// The upstream side of a request as noted while it ran (see [`with_notes`]).
#[derive(Debug, Default)]
pub struct UpstreamSeen(UpstreamNotes);

/// The request side's progress: body bytes received and when the last arrived.
#[derive(Debug, Default)]
struct RequestProgress {
    bytes: AtomicU64,
    /// Nanoseconds after the start when the body ended, plus one (0: not yet).
    ended_after: AtomicU64,
}

/// An open entry: what the request head said.
#[derive(Debug)]
pub struct Entry {
    logs: Arc<AccessLogs>,
    start: SystemTime,
    started: Instant,
    /// The request's method and target as they came (`None` for a request refused before
    /// its head was taken, [`Entry::headless`]); the target is a clone that shares the
    /// request's bytes, read for the path and authority when the line is written.
    head: Option<(http::Method, http::Uri)>,
    scheme: &'static str,
    protocol: &'static str,
    /// The request headers the formats read (empty when none does).
    request_headers: PickedHeaders,
    remote: SocketAddr,
    local: SocketAddr,
    connection_id: u64,
    sni: Option<Arc<str>>,
    /// The request body's progress, shared with its [`CountedRequestBody`]; `None` when the
    /// head ended the request (no body: nothing to count, and no allocation for it).
    request: Option<Arc<RequestProgress>>,
}

/// The finished facts, kept in the response body until it ends.
#[derive(Debug)]
struct Finishing {
    entry: Box<Entry>,
    status: u16,
    response_headers: PickedHeaders,
    trailers: Option<HeaderMap>,
    info: Option<ResponseInfo>,
    upstream: UpstreamSeen,
    upstream_host: Option<SocketAddr>,
    response_after: Option<std::time::Duration>,
    health_check: bool,
}

impl Entry {
    /// Opens an entry for `request` (its head as the proxy will handle it) on `conn`. Its
    /// body, if one follows the head, is counted once it passes through
    /// [`Entry::count_body`]; until then the entry reads it as not ended. Boxed: the entry
    /// is moved from phase to phase, and into the response body at the end.
    pub fn start<B: http_body::Body>(
        logs: Arc<AccessLogs>,
        request: &http::Request<B>,
        conn: &crate::wire::ConnectionInfo,
    ) -> Box<Entry> {
        let progress =
            (!request.body().is_end_stream()).then(|| Arc::new(RequestProgress::default()));
        Box::new(Entry {
            start: SystemTime::now(),
            started: Instant::now(),
            head: Some((request.method().clone(), request.uri().clone())),
            scheme: if conn.tls { "https" } else { "http" },
            protocol: crate::wire::WireHead::protocol_name(request),
            request_headers: logs.copy_request_headers(request.headers()),
            remote: conn.remote,
            local: conn.local,
            connection_id: conn.id,
            sni: conn.sni.clone(),
            request: progress,
            logs,
        })
    }

    /// `request` with its body made the one [`Body`] type, counted for the entry where a
    /// body follows its head (a request that ended with its head is boxed as it is: nothing
    /// to count, no layer to poll through).
    pub fn count_body<B>(&self, request: http::Request<B>) -> http::Request<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        match &self.request {
            None => request.map(crate::body::boxed),
            Some(progress) => {
                let progress = Some(progress.clone());
                let started = self.started;
                request.map(|inner| {
                    crate::body::boxed(CountedRequestBody {
                        inner,
                        progress,
                        started,
                    })
                })
            }
        }
    }

    /// The entry, with a body that follows its head left uncounted and the request read as
    /// ended with its head (the admin's requests: nothing in their bodies is worth a count).
    pub fn without_body(mut self: Box<Self>) -> Box<Entry> {
        self.request = None;
        self
    }

    /// An entry for a request the codec refused before it took its head (an HTTP/1.0
    /// request where only HTTP/1.1 is served): as Envoy's, its line has no method, path,
    /// authority or request header, and `protocol` as the codec speaks it.
    pub fn headless(
        logs: Arc<AccessLogs>,
        conn: &crate::wire::ConnectionInfo,
        protocol: &'static str,
    ) -> Box<Entry> {
        Box::new(Entry {
            start: SystemTime::now(),
            started: Instant::now(),
            head: None,
            scheme: if conn.tls { "https" } else { "http" },
            protocol,
            request_headers: PickedHeaders::default(),
            remote: conn.remote,
            local: conn.local,
            connection_id: conn.id,
            sni: conn.sni.clone(),
            request: None,
            logs,
        })
    }

    /// Notes that the proxy appended `client` to the request's `x-forwarded-for`, where a
    /// format logs it (Envoy logs the request headers as it forwarded them).
    pub fn note_forwarded_for(&mut self, client: std::net::IpAddr) {
        use crate::http::headers::{X_FORWARDED_FOR, forwarded_for};
        let Some(slot) = self.logs.request_slot(&X_FORWARDED_FOR) else {
            return;
        };
        let headers = &mut self.request_headers;
        let existing = headers
            .values(slot)
            .next()
            .and_then(|value| http::HeaderValue::from_bytes(value).ok());
        if let Some(value) = forwarded_for(existing.as_ref(), client) {
            headers.remove(slot);
            headers.push(slot, value.as_bytes());
        }
    }

    /// Takes the response head; returns the response with its body wrapped to finish the
    /// entry.
    pub fn respond(
        self: Box<Self>,
        response: Response<Body>,
        upstream: UpstreamSeen,
    ) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        let info = parts.extensions.remove::<ResponseInfo>();
        let upstream_host = parts
            .extensions
            .get::<crate::upstream::UpstreamAddress>()
            .map(|a| a.0);
        let response_after = upstream_host.map(|_| self.started.elapsed());
        let health_check = parts.extensions.remove::<HealthCheckRequest>().is_some();
        let tunnel = parts.extensions.remove::<TunnelLog>();
        let finishing = Finishing {
            health_check,
            status: parts.status.as_u16(),
            response_headers: self.logs.copy_response_headers(&parts.headers),
            trailers: None,
            info,
            upstream_host: upstream_host.or(upstream.0.host),
            upstream,
            response_after,
            entry: self,
        };
        if let Some(tunnel) = tunnel {
            tunnel.attach(Box::new(finishing));
            return Response::from_parts(parts, body);
        }
        // The entry's facts travel inside the body's own box: one allocation, not two.
        let body = LoggedBody {
            inner: body,
            sent: 0,
            finishing: Some(finishing),
        };
        Response::from_parts(parts, crate::body::boxed(body))
    }
}

impl Finishing {
    /// A tunnel's line: its payload bytes both ways.
    fn write_tunnel(self, received: u64, sent: u64) {
        self.write(Some(received), sent, false);
    }

    /// Writes the line; `bytes_received` replaces the request body's count (a tunnel's).
    fn write(self, bytes_received: Option<u64>, bytes_sent: u64, disconnected: bool) {
        let entry = &self.entry;
        // A request without a body ended with its head: at the start.
        let (counted, ended_after) = entry.request.as_deref().map_or((0, 1), |progress| {
            (
                progress.bytes.load(Ordering::Relaxed),
                progress.ended_after.load(Ordering::Relaxed),
            )
        });
        let info = self.info.as_ref();
        // Envoy 1.40 prints flags in the order they were set: a retry decision's (`URX`,
        // `UO`) before the local reply's, `DC` last.
        let mut flags = match self.upstream.0.retry_flag {
            Some(RetryFlag::LimitExceeded) => "URX".to_owned(),
            Some(RetryFlag::Overflow) => "UO".to_owned(),
            None => String::new(),
        };
        let mut add = |flag: &str| {
            if !flag.is_empty() && !flags.split(',').any(|f| f == flag) {
                if !flags.is_empty() {
                    flags.push(',');
                }
                flags.push_str(flag);
            }
        };
        add(info.map_or("", |i| i.flags));
        if disconnected {
            add("DC");
        }
        let details = match info {
            Some(info) => info.details.as_str(),
            None if disconnected => "downstream_remote_disconnect",
            None if self.upstream_host.is_some() && self.response_after.is_some() => "via_upstream",
            None => "direct_response",
        };
        let notes = &self.upstream.0;
        let cx = LogContext {
            start: Some(entry.start),
            method: entry.head.as_ref().map(|(method, _)| method.as_str()),
            path: entry
                .head
                .as_ref()
                .map(|(_, uri)| uri.path_and_query().map_or("/", |p| p.as_str())),
            authority: entry
                .head
                .as_ref()
                .and_then(|(_, uri)| uri.authority())
                .map(|a| a.as_str()),
            scheme: Some(entry.scheme),
            request_headers: None,
            request_picked: Some(&entry.request_headers),
            response_headers: None,
            response_picked: Some(&self.response_headers),
            response_trailers: self.trailers.as_ref(),
            status: Some(self.status),
            flags: &flags,
            details: Some(details),
            bytes_received: bytes_received.unwrap_or(counted),
            bytes_sent,
            duration: Some(entry.started.elapsed()),
            request_duration: (ended_after > 0)
                .then(|| std::time::Duration::from_nanos(ended_after - 1)),
            response_duration: self.response_after,
            upstream_host: self.upstream_host,
            upstream_cluster: notes.cluster.as_deref(),
            upstream_failure: info.and_then(|i| i.transport_failure.as_deref()),
            downstream_remote: Some(entry.remote),
            downstream_local: Some(entry.local),
            protocol: Some(entry.protocol),
            sni: entry.sni.as_deref(),
            connection_id: Some(entry.connection_id),
            attempts: Some(notes.attempts),
            health_check: self.health_check,
        };
        entry.logs.log(&cx);
    }
}

pin_project_lite::pin_project! {
    /// A request body that counts its bytes and notes when it ends.
    struct CountedRequestBody<B> {
        #[pin]
        inner: B,
        progress: Option<Arc<RequestProgress>>,
        started: Instant,
    }
}

impl<B> CountedRequestBody<B> {
    fn mark_end(progress: Option<&RequestProgress>, started: Instant) {
        let Some(progress) = progress else {
            return;
        };
        let after = started.elapsed().as_nanos() as u64 + 1;
        let _ =
            progress
                .ended_after
                .compare_exchange(0, after, Ordering::Relaxed, Ordering::Relaxed);
    }
}

impl<B> http_body::Body for CountedRequestBody<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(progress)) = (frame.data_ref(), this.progress) {
                    progress
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => Self::mark_end(this.progress.as_deref(), *this.started),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            Self::mark_end(self.progress.as_deref(), self.started);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that finishes its log entry when it ends or is dropped.
struct LoggedBody {
    inner: Body,
    sent: u64,
    finishing: Option<Finishing>,
}

impl LoggedBody {
    fn finish(&mut self, disconnected: bool) {
        if let Some(finishing) = self.finishing.take() {
            finishing.write(None, self.sent, disconnected);
        }
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(finishing) = &mut self.finishing
                    && finishing.entry.logs.needs_response_headers()
                {
                    finishing.trailers = Some(trailers.clone());
                }
                if self.inner.is_end_stream() {
                    self.finish(false);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                self.finish(false);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                // The upstream failed mid-body: Envoy's `UPE`-free view is that the
                // downstream stream was reset; the line says what was sent.
                self.finish(true);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // A body dropped at its end (an empty body hyper never polled, a HEAD) is complete;
        // dropped before, the client went away.
        let complete = http_body::Body::is_end_stream(&self.inner);
        self.finish(!complete);
    }
}
