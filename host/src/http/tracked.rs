//! Knowing when a stream ends: its response body has been written, or dropped.
//!
//! A response leaves the handler long before its body is sent, so the per-stream accounting
//! (`downstream_rq_active`, the connection's idle clock) rides on the body and is settled when
//! the body finishes or is dropped, whichever comes first.

use crate::body::{Body, BoxError};
use crate::stats::HttpStats;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

/// What a connection knows about its streams, for its idle timeout.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    active: AtomicUsize,
    /// Milliseconds since `origin` when the last stream ended.
    last_end_ms: AtomicU64,
}

impl Activity {
    /// A connection with no stream yet; its idle clock starts now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            active: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        })
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

/// Held for the life of one stream; settles its accounting on drop.
pub struct StreamGuard {
    activity: Arc<Activity>,
    stats: HttpStats,
}

impl StreamGuard {
    /// Counts a new stream on `activity`.
    pub fn start(activity: Arc<Activity>, stats: HttpStats) -> StreamGuard {
        activity.active.fetch_add(1, Ordering::AcqRel);
        stats.rq_active.inc();
        StreamGuard { activity, stats }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let now = self.activity.origin.elapsed().as_millis();
        self.activity
            .last_end_ms
            .store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::Release);
        self.activity.active.fetch_sub(1, Ordering::AcqRel);
        self.stats.rq_active.dec();
    }
}

/// A response body that holds its stream's [`StreamGuard`] until the last frame is out.
pub struct TrackedBody {
    inner: Body,
    guard: Option<StreamGuard>,
}

impl TrackedBody {
    /// Wraps `inner`; `guard` is released at its end.
    pub fn new(inner: Body, guard: StreamGuard) -> TrackedBody {
        TrackedBody {
            inner,
            guard: Some(guard),
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
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard = None;
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
