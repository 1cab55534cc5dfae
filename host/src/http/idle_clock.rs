//! `stream_idle_timeout` for one direction of a stream's body: the body fails once no frame
//! has come for the limit.
//!
//! Cheap on the hot path: a frame only stamps the time; the timer is made the first time the
//! body waits and is re-armed only when it fires early (the body moved since it was set), so
//! a body that flows costs one timer per idle period, not one per frame.

use crate::body::{Body, BoxError};
use bytes::Bytes;
use http_body::{Body as _, Frame};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The body went `stream_idle_timeout` without a frame.
#[derive(Debug, thiserror::Error)]
#[error("no body bytes for stream_idle_timeout")]
pub struct StreamIdleTimeout;

/// The idle clock of one body.
pub struct IdleClock {
    limit: Duration,
    last: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleClock {
    /// A clock that starts now and fails after `limit` without a frame.
    pub fn new(limit: Duration) -> IdleClock {
        IdleClock {
            limit,
            last: Instant::now(),
            sleep: None,
        }
    }

    /// A frame went by.
    pub fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// Sees what polling the body gave: a frame stamps the time; a wait is `Ready` once it has
    /// lasted `limit` since the last frame (the body should then fail).
    pub fn observe<T, E>(
        &mut self,
        polled: &Poll<Option<Result<T, E>>>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        match polled {
            Poll::Ready(Some(Ok(_))) => {
                self.touch();
                Poll::Pending
            }
            Poll::Ready(_) => Poll::Pending,
            Poll::Pending => self.poll_expired(cx),
        }
    }

    /// The body is waiting: `Ready` once it has waited `limit` since its last frame.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.last + self.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last + self.limit;
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            // A frame came since the timer was set: wait out the rest.
            sleep.as_mut().reset(deadline);
        }
    }
}

/// What polling a body's next frame gave, with the body polled under `idle` (if any):
/// `Err(StreamIdleTimeout)` once it has waited the whole limit; the caller counts it and fails
/// the body with it.
pub type IdlePoll = Result<Poll<Option<Result<Frame<Bytes>, BoxError>>>, StreamIdleTimeout>;

/// Polls `body` for its next frame and shows the result to `idle` (see [`IdlePoll`]).
pub fn poll_frame_idle(
    body: &mut Body,
    idle: Option<&mut IdleClock>,
    cx: &mut Context<'_>,
) -> IdlePoll {
    let polled = Pin::new(body).poll_frame(cx);
    if let Some(idle) = idle
        && idle.observe(&polled, cx).is_ready()
    {
        return Err(StreamIdleTimeout);
    }
    Ok(polled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_only_after_a_whole_quiet_limit() {
        let mut clock = IdleClock::new(Duration::from_secs(10));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(clock.poll_expired(&mut cx).is_pending());
        tokio::time::advance(Duration::from_secs(8)).await;
        clock.touch();
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(clock.poll_expired(&mut cx).is_pending(), "moved 8 s ago");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(clock.poll_expired(&mut cx).is_ready());
    }
}
