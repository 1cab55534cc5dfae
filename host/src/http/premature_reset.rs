//! Envoy's premature-reset rule for multiplexed connections (HTTP/2 and HTTP/3), the defence
//! against "rapid reset" floods (CVE-2023-44487): a client that opens streams and resets them
//! at once costs the proxy a request each (an upstream request started, then cancelled) and
//! costs itself nothing. Once a connection has closed `premature_reset_total` streams, it is
//! closed with GOAWAY if more than half of them were reset prematurely: by the client before
//! their response began, or within `premature_reset_lifetime` of their start. Pacing the resets
//! (a PING or WINDOW_UPDATE between them) changes nothing, since only stream outcomes count.

use crate::config::runtime::StreamAbuseLimits;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How one stream of the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Answered in full, or ended by weir.
    Completed,
    /// Reset by the client; `response_started` when its response head had been sent.
    ResetByClient {
        /// Whether the response head went out before the reset.
        response_started: bool,
    },
}

/// One connection's stream outcomes. Shared by the connection task and its stream tasks (one
/// worker's tasks: the atomics are never contended).
#[derive(Debug)]
pub struct ResetWatch {
    limits: StreamAbuseLimits,
    closed: AtomicU32,
    premature: AtomicU32,
    tripped: AtomicBool,
    notify: Notify,
}

impl ResetWatch {
    /// A connection with no stream yet.
    pub fn new(limits: StreamAbuseLimits) -> ResetWatch {
        ResetWatch {
            limits,
            closed: AtomicU32::new(0),
            premature: AtomicU32::new(0),
            tripped: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// Counts a stream that started at `started` and ended as `end`; wakes [`Self::tripped`]
    /// when the connection has earned its GOAWAY.
    pub fn stream_ended(&self, started: Instant, end: StreamEnd) {
        self.count(started.elapsed(), end);
    }

    fn count(&self, lifetime: Duration, end: StreamEnd) {
        let closed = self
            .closed
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let premature = match end {
            StreamEnd::Completed => self.premature.load(Ordering::Relaxed),
            StreamEnd::ResetByClient { response_started } => {
                if !response_started || lifetime < self.limits.premature_reset_lifetime {
                    self.premature.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    self.premature.load(Ordering::Relaxed)
                }
            }
        };
        if closed >= self.limits.premature_reset_total
            && u64::from(premature) * 2 > u64::from(closed)
            && !self.tripped.swap(true, Ordering::Relaxed)
        {
            self.notify.notify_one();
        }
    }

    /// Resolves once the connection has had too many premature resets (at most once).
    pub async fn tripped(&self) {
        if self.tripped.load(Ordering::Relaxed) {
            return;
        }
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(total: u32) -> ResetWatch {
        ResetWatch::new(StreamAbuseLimits {
            premature_reset_total: total,
            ..StreamAbuseLimits::default()
        })
    }

    const EARLY: StreamEnd = StreamEnd::ResetByClient {
        response_started: false,
    };

    #[test]
    fn trips_only_after_the_total_and_over_half() {
        let w = watch(10);
        for _ in 0..9 {
            w.count(Duration::ZERO, EARLY);
        }
        assert!(!w.tripped.load(Ordering::Relaxed), "not before 10 streams");
        w.count(Duration::ZERO, EARLY);
        assert!(w.tripped.load(Ordering::Relaxed));
    }

    #[test]
    fn half_is_not_more_than_half() {
        let w = watch(10);
        for _ in 0..5 {
            w.count(Duration::ZERO, EARLY);
            w.count(Duration::ZERO, StreamEnd::Completed);
        }
        assert!(!w.tripped.load(Ordering::Relaxed));
        w.count(Duration::ZERO, EARLY);
        assert!(w.tripped.load(Ordering::Relaxed), "6 of 11");
    }

    #[test]
    fn a_late_reset_after_the_response_began_is_not_premature() {
        let w = watch(4);
        let late = StreamEnd::ResetByClient {
            response_started: true,
        };
        for _ in 0..10 {
            w.count(Duration::from_secs(2), late);
        }
        assert!(!w.tripped.load(Ordering::Relaxed));
        for _ in 0..11 {
            w.count(Duration::from_millis(10), late);
        }
        assert!(w.tripped.load(Ordering::Relaxed), "within the first second");
    }

    #[tokio::test]
    async fn tripped_wakes_once_tripped() {
        let w = std::sync::Arc::new(watch(1));
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.tripped().await }
        });
        tokio::task::yield_now().await;
        w.count(Duration::ZERO, EARLY);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        // And a later wait returns at once.
        tokio::time::timeout(Duration::from_secs(1), w.tripped())
            .await
            .expect("already tripped");
    }
}
