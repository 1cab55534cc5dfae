//! `request_timeout`: the whole request, body included, must arrive within a deadline.
//!
//! The request body is wrapped so that, once the deadline passes, reading it fails; the
//! upstream request then fails too, and the stream answers 408 (as Envoy does) if no response
//! has started, or is reset if one has.

use crate::body::{Body, BoxError};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// The request body did not arrive within `request_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within request_timeout")]
pub struct RequestTimedOut;

/// A request body that fails once its deadline passes.
pub struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl DeadlineBody {
    /// Wraps `inner`; the deadline is `limit` from now. `expired` turns true if it passes.
    pub fn new(inner: Body, limit: Duration, expired: Arc<AtomicBool>) -> DeadlineBody {
        DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep(limit)),
            expired,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(Box::new(RequestTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn fails_after_the_deadline() {
        let never = futures_util::stream::pending::<Result<Frame<Bytes>, BoxError>>();
        let expired = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody::new(
            BodyExt::boxed(StreamBody::new(never)),
            Duration::from_secs(1),
            expired.clone(),
        );
        let result = body.collect().await;
        assert!(result.is_err());
        assert!(expired.load(Ordering::Acquire));
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_passes() {
        let expired = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody::new(
            crate::body::full("abc"),
            Duration::from_secs(1),
            expired.clone(),
        );
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        assert_eq!(&bytes[..], b"abc");
        assert!(!expired.load(Ordering::Acquire));
    }
}
