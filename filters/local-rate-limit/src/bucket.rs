//! The token bucket: configuration, the state kept in shared data, and the pure refill/take
//! step (unit-tested on the build machine; the filter wraps it in a CAS loop).

use serde::Deserialize;

/// The plugin configuration (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names the bucket in shared data; plugins with the same `vm_id` and `name` share one.
    #[serde(default = "default_name")]
    pub name: String,
    /// Bucket size: the most requests allowed in a burst.
    pub max_tokens: u64,
    /// Tokens added every `fill_interval_ms` (default: `max_tokens`).
    #[serde(default)]
    pub tokens_per_fill: Option<u64>,
    /// Refill period in milliseconds (> 0).
    pub fill_interval_ms: u64,
}

fn default_name() -> String {
    "default".to_owned()
}

impl Config {
    /// Parses and checks the configuration.
    pub fn parse(bytes: &[u8]) -> Result<Config, String> {
        let config: Config = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if config.max_tokens == 0 {
            return Err("max_tokens must be > 0".into());
        }
        if config.fill_interval_ms == 0 {
            return Err("fill_interval_ms must be > 0".into());
        }
        if config.tokens_per_fill == Some(0) {
            return Err("tokens_per_fill must be > 0".into());
        }
        Ok(config)
    }

    /// The shared-data key of this bucket.
    pub fn shared_key(&self) -> String {
        format!("weir.local_rate_limit.{}", self.name)
    }

    fn interval_nanos(&self) -> u64 {
        self.fill_interval_ms.saturating_mul(1_000_000)
    }
}

/// The bucket as stored in shared data: 16 bytes, two little-endian u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens left.
    pub tokens: u64,
    /// Time of the last refill, nanoseconds since the Unix epoch (advanced in whole intervals).
    pub refilled_at: u64,
}

impl Bucket {
    /// Stored size in bytes.
    pub const LEN: usize = 16;

    /// The stored form.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..8].copy_from_slice(&self.tokens.to_le_bytes());
        out[8..].copy_from_slice(&self.refilled_at.to_le_bytes());
        out
    }

    /// Reads the stored form; `None` when it is not 16 bytes (then the bucket starts over).
    pub fn decode(bytes: &[u8]) -> Option<Bucket> {
        let tokens = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let refilled_at = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        (bytes.len() == Self::LEN).then_some(Bucket {
            tokens,
            refilled_at,
        })
    }
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A token was taken.
    Allow,
    /// The bucket is empty; the next token comes in this many seconds (at least 1).
    Deny {
        /// For `retry-after`.
        retry_after_secs: u64,
    },
}

/// Refills `current` (a full bucket when there is none) up to `now` and tries to take one
/// token. Returns the new state to store and the decision.
pub fn take(config: &Config, current: Option<Bucket>, now: u64) -> (Bucket, Decision) {
    let interval = config.interval_nanos().max(1);
    let per_fill = config.tokens_per_fill.unwrap_or(config.max_tokens);
    let mut bucket = current.unwrap_or(Bucket {
        tokens: config.max_tokens,
        refilled_at: now,
    });
    if now < bucket.refilled_at {
        // The clock went back (or another worker's clock is ahead): restart the phase.
        bucket.refilled_at = now;
    }
    let intervals = (now - bucket.refilled_at) / interval;
    if intervals > 0 {
        bucket.tokens = bucket
            .tokens
            .saturating_add(intervals.saturating_mul(per_fill))
            .min(config.max_tokens);
        bucket.refilled_at += intervals * interval;
    }
    bucket.tokens = bucket.tokens.min(config.max_tokens);
    if bucket.tokens > 0 {
        bucket.tokens -= 1;
        (bucket, Decision::Allow)
    } else {
        let wait = (bucket.refilled_at + interval).saturating_sub(now);
        let retry_after_secs = wait.div_ceil(1_000_000_000).max(1);
        (bucket, Decision::Deny { retry_after_secs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn config(max: u64, per_fill: Option<u64>, interval_ms: u64) -> Config {
        Config {
            name: "t".into(),
            max_tokens: max,
            tokens_per_fill: per_fill,
            fill_interval_ms: interval_ms,
        }
    }

    #[test]
    fn burst_then_deny_then_refill() {
        let c = config(3, Some(1), 2000);
        let mut state = None;
        let t0 = 100 * SEC;
        for _ in 0..3 {
            let (b, d) = take(&c, state, t0);
            assert_eq!(d, Decision::Allow);
            state = Some(b);
        }
        let (b, d) = take(&c, state, t0 + SEC / 2);
        assert_eq!(
            d,
            Decision::Deny {
                retry_after_secs: 2
            }
        );
        state = Some(b);
        let (b, d) = take(&c, state, t0 + 2 * SEC);
        assert_eq!(d, Decision::Allow);
        assert_eq!(b.tokens, 0);
        // Long idle: refills to max, not beyond.
        let (b, _) = take(&c, Some(b), t0 + 1000 * SEC);
        assert_eq!(b.tokens, 2);
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let c = config(1, None, 10);
        let (b, _) = take(&c, None, 5 * SEC);
        let (_, d) = take(&c, Some(b), 5 * SEC + 1);
        assert_eq!(
            d,
            Decision::Deny {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn clock_going_back_does_not_underflow() {
        let c = config(1, None, 1000);
        let (b, _) = take(&c, None, 10 * SEC);
        let (_, d) = take(&c, Some(b), SEC);
        assert!(matches!(d, Decision::Deny { .. }));
    }

    #[test]
    fn state_round_trips_and_bad_state_is_none() {
        let b = Bucket {
            tokens: 7,
            refilled_at: u64::MAX,
        };
        assert_eq!(Bucket::decode(&b.encode()), Some(b));
        assert_eq!(Bucket::decode(&[1, 2, 3]), None);
        assert_eq!(Bucket::decode(&[0; 17]), None);
    }

    #[test]
    fn config_checks() {
        assert!(Config::parse(br#"{"max_tokens": 1, "fill_interval_ms": 1}"#).is_ok());
        assert!(Config::parse(br#"{"max_tokens": 0, "fill_interval_ms": 1}"#).is_err());
        assert!(Config::parse(br#"{"max_tokens": 1, "fill_interval_ms": 0}"#).is_err());
        assert!(
            Config::parse(br#"{"max_tokens": 1, "fill_interval_ms": 1, "tokens_per_fill": 0}"#)
                .is_err()
        );
        assert!(Config::parse(br#"{"max_tokens": -1, "fill_interval_ms": 1}"#).is_err());
    }
}
