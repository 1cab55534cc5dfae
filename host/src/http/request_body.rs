//! The request body as the upstream reads it, watched for what is the client's doing:
//! `request_timeout` (the whole request must arrive within a deadline), `stream_idle_timeout`
//! (no byte for too long) and a body the client sent malformed or cut short (a bad chunk, more
//! bytes than its `content-length`, a reset).
//!
//! Any of these fails the body, and with it the upstream request; the [`BodyVerdict`] then
//! tells the router that the client, not the upstream, was at fault, so the stream answers
//! 408 or 400 (as Envoy does) if no response has started, and the upstream is not blamed.

use super::idle_clock::{IdleClock, poll_frame_idle};
use crate::body::{Body, BoxError};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// The request body did not arrive within `request_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within request_timeout")]
pub struct RequestTimedOut;

/// What became of a watched request body, shared with the router.
#[derive(Debug, Default)]
pub struct BodyVerdict {
    fault: AtomicU8,
    /// The request came over HTTP/1.x, where a body that fails resets the stream.
    http1: bool,
}

/// Why a watched body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// `request_timeout` passed.
    TimedOut,
    /// `stream_idle_timeout` passed without a byte.
    Idle,
    /// The client's body itself failed (too long, reset, cut).
    Malformed,
    /// The HTTP/1.1 codec could not parse the client's body (a bad chunk): a protocol error
    /// of the connection, as Envoy counts it (`downstream_cx_protocol_error`).
    Unparsable,
}

impl BodyVerdict {
    /// A verdict on the body of a request that came over HTTP/1.x (`http1`) or not.
    pub fn new(http1: bool) -> BodyVerdict {
        BodyVerdict {
            fault: AtomicU8::new(0),
            http1,
        }
    }

    /// Whether the request came over HTTP/1.x: its stream cannot go on after its body
    /// failed (the connection closes), which Envoy 1.40 counts as a reset
    /// (`downstream_rq_rx_reset`).
    pub fn http1(&self) -> bool {
        self.http1
    }

    fn set(&self, fault: BodyFault) {
        let code = match fault {
            BodyFault::TimedOut => 1,
            BodyFault::Idle => 2,
            BodyFault::Malformed => 3,
            BodyFault::Unparsable => 4,
        };
        self.fault.store(code, Ordering::Release);
    }

    /// Why the body failed, if it did.
    pub fn fault(&self) -> Option<BodyFault> {
        match self.fault.load(Ordering::Acquire) {
            1 => Some(BodyFault::TimedOut),
            2 => Some(BodyFault::Idle),
            3 => Some(BodyFault::Malformed),
            4 => Some(BodyFault::Unparsable),
            _ => None,
        }
    }
}

/// A request body under watch.
pub struct WatchedBody {
    inner: Body,
    deadline: Option<Pin<Box<Sleep>>>,
    idle: Option<IdleClock>,
    verdict: Arc<BodyVerdict>,
}

impl WatchedBody {
    /// Wraps `inner`: it fails `deadline` from now, or after `idle` without a frame; `verdict`
    /// learns why it failed.
    pub fn new(
        inner: Body,
        deadline: Option<Duration>,
        idle: Option<Duration>,
        verdict: Arc<BodyVerdict>,
    ) -> WatchedBody {
        WatchedBody {
            inner,
            deadline: deadline.map(|limit| Box::pin(tokio::time::sleep(limit))),
            idle: idle.map(IdleClock::new),
            verdict,
        }
    }
}

/// Why a client's body failed with `error`: one the HTTP/1.1 codec (hyper) could not parse
/// (a parse error, or its body decoder's invalid input or data: a bad chunk size, chunk
/// extensions or trailers over their limits) is [`BodyFault::Unparsable`]; anything else
/// (the body cut short: the connection closed, `UnexpectedEof`) [`BodyFault::Malformed`].
fn fault_of(error: &(dyn std::error::Error + Send + Sync + 'static)) -> BodyFault {
    let Some(error) = error.downcast_ref::<hyper::Error>() else {
        return BodyFault::Malformed;
    };
    let undecodable = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            )
        });
    if error.is_parse() || undecodable {
        BodyFault::Unparsable
    } else {
        BodyFault::Malformed
    }
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let WatchedBody {
            inner,
            deadline,
            idle,
            verdict,
        } = &mut *self;
        let polled = match poll_frame_idle(inner, idle.as_mut(), cx) {
            Ok(polled) => polled,
            Err(idle) => {
                verdict.set(BodyFault::Idle);
                return Poll::Ready(Some(Err(Box::new(idle))));
            }
        };
        if let Poll::Ready(frame) = polled {
            if let Some(Err(error)) = &frame {
                verdict.set(fault_of(error.as_ref()));
            }
            return Poll::Ready(frame);
        }
        if let Some(deadline) = deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            verdict.set(BodyFault::TimedOut);
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

    fn never() -> Body {
        let never = futures_util::stream::pending::<Result<Frame<Bytes>, BoxError>>();
        BodyExt::boxed(StreamBody::new(never))
    }

    #[tokio::test(start_paused = true)]
    async fn fails_after_the_deadline() {
        let verdict = Arc::new(BodyVerdict::default());
        let body = WatchedBody::new(never(), Some(Duration::from_secs(1)), None, verdict.clone());
        assert!(body.collect().await.is_err());
        assert_eq!(verdict.fault(), Some(BodyFault::TimedOut));
    }

    #[tokio::test(start_paused = true)]
    async fn fails_when_idle() {
        let verdict = Arc::new(BodyVerdict::default());
        let body = WatchedBody::new(never(), None, Some(Duration::from_secs(5)), verdict.clone());
        assert!(body.collect().await.is_err());
        assert_eq!(verdict.fault(), Some(BodyFault::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_body_is_the_clients_fault() {
        let failing =
            futures_util::stream::iter([Err::<Frame<Bytes>, BoxError>("bad chunk".into())]);
        let verdict = Arc::new(BodyVerdict::default());
        let body = WatchedBody::new(
            BodyExt::boxed(StreamBody::new(failing)),
            None,
            None,
            verdict.clone(),
        );
        assert!(body.collect().await.is_err());
        assert_eq!(verdict.fault(), Some(BodyFault::Malformed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_passes() {
        let verdict = Arc::new(BodyVerdict::default());
        let body = WatchedBody::new(
            crate::body::full("abc"),
            Some(Duration::from_secs(1)),
            Some(Duration::from_secs(1)),
            verdict.clone(),
        );
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        assert_eq!(&bytes[..], b"abc");
        assert_eq!(verdict.fault(), None);
    }
}
