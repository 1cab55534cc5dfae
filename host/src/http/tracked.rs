//! Knowing when a stream ends: its response body has been written, or dropped.
//!
//! A response leaves the handler long before its body is sent, so the per-stream accounting
//! (`downstream_rq_active`, the connection's idle clock) rides on the body and is settled when
//! the body finishes or is dropped, whichever comes first.

use super::HttpManager;
use super::idle_clock::{IdleClock, poll_frame_idle};
use crate::body::{Body, BoxError};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

/// What a connection knows about its streams, for its idle timeout and (HTTP/1.1) its
/// request headers timeout.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    active: AtomicUsize,
    /// Milliseconds since `origin` when the last stream ended.
    last_end_ms: AtomicU64,
    /// Milliseconds since `origin` when bytes of a request head not yet whole first arrived
    /// (bytes read while no stream is in flight); [`NO_HEAD`] when none is arriving.
    head_since_ms: AtomicU64,
    /// HTTP/1 request heads screened so far (counted by the codec's reader, see
    /// [`crate::wire::request_framing`]).
    heads_screened: AtomicU64,
    /// Streams started so far: the n-th takes the n-th head's verdict.
    streams_started: AtomicU64,
    /// The numbers of the screened heads refused for their version, not yet taken; locked
    /// only once a head was refused (rare: a refusal closes the connection).
    refused_heads: std::sync::Mutex<std::collections::VecDeque<u64>>,
    /// Some head was refused on this connection.
    any_refused: AtomicBool,
}

/// `head_since_ms` when no request head is arriving.
const NO_HEAD: u64 = u64::MAX;

impl Activity {
    /// A connection with no stream yet; its idle clock starts now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            active: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(NO_HEAD),
            heads_screened: AtomicU64::new(0),
            streams_started: AtomicU64::new(0),
            refused_heads: Default::default(),
            any_refused: AtomicBool::new(false),
        })
    }

    /// Whether the HTTP/1 stream starting now is refused for its version (see
    /// [`crate::wire::request_framing`]): takes the verdict of the next head screened (false
    /// when none is waiting, as on HTTP/2 and HTTP/3).
    pub fn take_refused(&self) -> bool {
        let stream = self.streams_started.fetch_add(1, Ordering::AcqRel);
        if !self.any_refused.load(Ordering::Acquire) {
            return false;
        }
        let mut refused = self
            .refused_heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Heads before this stream's that no stream took (none on HTTP/1) are let go.
        while refused.front().is_some_and(|&head| head < stream) {
            refused.pop_front();
        }
        if refused.front() == Some(&stream) {
            refused.pop_front();
            return true;
        }
        false
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    /// Bytes came in on an HTTP/1.1 connection: with no stream in flight they are the start
    /// of a request head, and its clock starts (Envoy's `request_headers_timeout` runs from
    /// the head's first byte, so an idle keep-alive connection is not timed by it).
    pub fn bytes_arrived(&self) {
        if self.active.load(Ordering::Acquire) == 0
            && self.head_since_ms.load(Ordering::Relaxed) == NO_HEAD
        {
            self.head_since_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// How long a request head has been arriving without being whole; `None` when none is.
    pub fn head_arriving_for(&self) -> Option<std::time::Duration> {
        let since = self.head_since_ms.load(Ordering::Relaxed);
        if since == NO_HEAD || self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(std::time::Duration::from_millis(
            self.now_ms().saturating_sub(since),
        ))
    }

    /// A stream (or a stream opening) ended: the idle clock restarts now.
    fn stream_ended(&self) {
        let now = self.origin.elapsed().as_millis();
        self.last_end_ms
            .store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::Release);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether a stream is in flight (or opening) now.
    pub fn in_flight(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// How long the connection has had no stream in flight; `None` while one is.
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last_end = std::time::Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
        Some(self.origin.elapsed().saturating_sub(last_end))
    }
}

/// A stream opened whose head is still on its way (HTTP/3 opens a request stream before
/// its HEADERS frame): while it is held the connection is not idle, so a drain does not
/// close the connection under a request about to start; no request is counted yet (that
/// is [`StreamGuard`]'s, from the head on).
pub struct Opening {
    activity: Arc<Activity>,
}

impl Opening {
    /// Marks a stream opening on `activity`.
    pub fn start(activity: Arc<Activity>) -> Opening {
        activity.active.fetch_add(1, Ordering::AcqRel);
        Opening { activity }
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.activity.stream_ended();
    }
}

/// Held for the life of one stream; settles its accounting on drop.
pub struct StreamGuard {
    activity: Arc<Activity>,
    /// The stream's manager, for its stats: a reference count on this worker's manager rather
    /// than a copy of every counter (each an `Arc` shared by all workers).
    manager: Arc<HttpManager>,
}

impl StreamGuard {
    /// Counts a new stream of `manager` on `activity`.
    pub fn start(activity: Arc<Activity>, manager: Arc<HttpManager>) -> StreamGuard {
        activity.active.fetch_add(1, Ordering::AcqRel);
        activity.head_since_ms.store(NO_HEAD, Ordering::Relaxed);
        manager.stats.rq_active.inc();
        StreamGuard { activity, manager }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.activity.stream_ended();
        self.manager.stats.rq_active.dec();
    }
}

/// A response body that holds its stream's [`StreamGuard`] until the last frame is out, and
/// fails (resetting the stream) when it goes `stream_idle_timeout` without a frame.
pub struct TrackedBody {
    inner: Body,
    guard: Option<StreamGuard>,
    idle: Option<IdleClock>,
    /// The stream is HTTP/1.x, whose codec (hyper) resets it by closing the connection when
    /// the body fails: counted here as Envoy counts it (HTTP/2 and HTTP/3 count their own).
    http1: bool,
}

impl TrackedBody {
    /// Wraps `inner`; `guard` is released at its end; `idle` is `stream_idle_timeout`;
    /// `http1`: the stream is HTTP/1.x (see [`TrackedBody::failed`]).
    pub fn new(
        inner: Body,
        guard: StreamGuard,
        idle: Option<std::time::Duration>,
        http1: bool,
    ) -> TrackedBody {
        let idle = idle
            .filter(|_| !http_body::Body::is_end_stream(&inner))
            .map(IdleClock::new);
        TrackedBody {
            inner,
            guard: Some(guard),
            idle,
            http1,
        }
    }

    /// The body failed (the upstream's was cut, or `stream_idle_timeout`): the codec resets
    /// the stream. On HTTP/1.x that is the connection's close, which Envoy 1.40 counts as a
    /// reset sent (`downstream_rq_tx_reset`) and, its codec reporting the reset to the stream
    /// too, as one received (`downstream_rq_rx_reset`).
    fn failed(&self, guard: &StreamGuard) {
        if self.http1 {
            guard.manager.stats.rq_tx_reset.inc();
            guard.manager.stats.rq_rx_reset.inc();
        }
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // `Body` (a BoxBody) is Unpin, and so is this struct.
        let this = &mut *self;
        let polled = match poll_frame_idle(&mut this.inner, this.idle.as_mut(), cx) {
            Ok(polled) => polled,
            Err(idle) => {
                if let Some(guard) = this.guard.take() {
                    guard.manager.stats.rq_idle_timeout.inc();
                    this.failed(&guard);
                }
                return Poll::Ready(Some(Err(Box::new(idle))));
            }
        };
        match &polled {
            Poll::Ready(None) => this.guard = None,
            Poll::Ready(Some(Err(_))) => {
                if let Some(guard) = this.guard.take() {
                    this.failed(&guard);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
impl crate::wire::prefixed::HeadClock for Activity {
    fn bytes_arrived(&self) {
        Activity::bytes_arrived(self);
    }

    fn request_screened(&self, refused: bool) {
        let head = self.heads_screened.fetch_add(1, Ordering::AcqRel);
        if refused {
            self.refused_heads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push_back(head);
            self.any_refused.store(true, Ordering::Release);
        }
    }
}
