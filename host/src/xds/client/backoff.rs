//! The wait before reconnecting to the control plane: Envoy's jittered exponential back-off
//! (`JitteredExponentialBackOffStrategy`, base 500 ms, at most 30 s), so a fleet that lost
//! its control plane does not reconnect all at once.

use rand::Rng;
use std::time::Duration;

/// The back-off's bounds: each wait is drawn uniformly from `[0, interval)`, where the
/// interval starts at `base` and doubles after each failed attempt up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first interval (Envoy: 500 ms).
    pub base: Duration,
    /// The largest interval (Envoy: 30 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// The back-off of one reconnect loop.
#[derive(Debug)]
pub(super) struct Retries {
    bounds: Backoff,
    interval: Duration,
}

impl Retries {
    /// A loop at its first interval.
    pub(super) fn new(bounds: Backoff) -> Retries {
        let base = bounds.base.max(Duration::from_millis(1));
        Retries {
            bounds: Backoff {
                base,
                max: bounds.max.max(base),
            },
            interval: base,
        }
    }

    /// Back to the first interval: the control plane answered.
    pub(super) fn reset(&mut self) {
        self.interval = self.bounds.base;
    }

    /// The next wait, and the interval doubled for the one after.
    pub(super) fn next_delay(&mut self) -> Duration {
        let interval = self.interval;
        self.interval = interval.saturating_mul(2).min(self.bounds.max);
        let millis = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(rand::rng().random_range(0..millis))
    }

    /// The interval the next wait is drawn from (the longest it can be).
    #[cfg(test)]
    pub(super) fn ceiling(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_a_doubling_interval_capped_at_max() {
        let mut retries = Retries::new(Backoff::default());
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceiling = retries.ceiling();
            ceilings.push(ceiling.as_millis());
            let delay = retries.next_delay();
            assert!(delay < ceiling, "{delay:?} drawn under {ceiling:?}");
        }
        assert_eq!(
            ceilings,
            [
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
        retries.reset();
        assert_eq!(retries.ceiling(), Duration::from_millis(500));
    }

    #[test]
    fn waits_are_jittered() {
        let mut retries = Retries::new(Backoff {
            base: Duration::from_secs(30),
            max: Duration::from_secs(30),
        });
        let draws: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| retries.next_delay()).collect();
        assert!(draws.len() > 10, "20 draws over 30 s differ: {draws:?}");
    }
}
