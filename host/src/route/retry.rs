//! A route's retry policy (`retry_policy` of a route or its virtual host), built once per
//! config: when a try's outcome is worth another try, how long to wait before it, and which
//! hosts it avoids. The router's loop that uses it is in [`crate::http::stream`].
//!
//! As Envoy's (`router/retry_state_impl.cc`):
//! - `5xx` retries any 5xx response, a reset, a failed connect and a per-try timeout;
//!   `gateway-error` the same with 502, 503 and 504 only; `reset` a reset, failed connect or
//!   per-try timeout (no response at all); `connect-failure` a failed connect;
//!   `refused-stream` an HTTP/2 stream the upstream refused; `retriable-4xx` a 409;
//!   `retriable-status-codes` the statuses of `retriable_status_codes`;
//!   `http3-post-connect-failure` a failure on an HTTP/3 connection after it was made.
//! - A response with `x-envoy-overloaded` (a circuit breaker of the next hop) is never
//!   retried, nor is a request refused by this proxy's own circuit breakers (`overflow`).
//! - `num_retries` defaults to 1. The wait before retry `n` (from 0) is a random time below
//!   `(2^(n+1) - 1) x base_interval`, capped at `max_interval` (Envoy's fully jittered
//!   exponential back-off; base 25 ms and max 10 x base by default).
//! - `previous_hosts`: a retry picks its host again, up to
//!   `host_selection_retry_max_attempts` times, while the pick is a host tried already; the
//!   last pick stands.

use crate::config::FieldError;
use crate::config::schema;
use http::HeaderName;
use rand::Rng;
use std::time::Duration;

/// Envoy's default `retry_back_off.base_interval` (`upstream.base_retry_backoff_ms`).
pub const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);

/// The most retries weir makes for one request, whatever `num_retries` says: each holds the
/// request (and its buffered body) longer, and a config must not make one request a storm.
pub const MAX_RETRIES: u32 = 100;

/// The most host picks a retry makes (`host_selection_retry_max_attempts` + 1).
const MAX_HOST_PICKS: u32 = 64;

/// The request headers Envoy's router reads retry and timeout settings from, which Envoy
/// strips from every request it does not trust (see [`strip_request_headers`]).
pub const X_ENVOY_RETRY_ON: HeaderName = HeaderName::from_static("x-envoy-retry-on");
/// See [`X_ENVOY_RETRY_ON`].
pub const X_ENVOY_MAX_RETRIES: HeaderName = HeaderName::from_static("x-envoy-max-retries");
/// See [`X_ENVOY_RETRY_ON`].
pub const X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
/// Put on each upstream request with `include_request_attempt_count` (1 for the first try).
pub const X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
/// On a response: a circuit breaker of the next hop refused the request; never retried.
const X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");

/// The internal request headers Envoy removes from a request from outside its trusted network
/// (`ConnectionManagerUtility::cleanInternalHeaders`): a client must not choose its own
/// retries or timeouts. weir has no `internal_address_config`, so, as Envoy 1.40 without one,
/// every request is from outside: these are removed from every request and never honoured.
const INTERNAL_ONLY: [HeaderName; 9] = [
    HeaderName::from_static("x-envoy-retry-on"),
    HeaderName::from_static("x-envoy-retry-grpc-on"),
    HeaderName::from_static("x-envoy-max-retries"),
    HeaderName::from_static("x-envoy-retriable-status-codes"),
    HeaderName::from_static("x-envoy-retriable-header-names"),
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms"),
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms"),
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms"),
    HeaderName::from_static("x-envoy-hedge-on-per-try-timeout"),
];

/// Removes the retry and timeout headers a client may not set (see [`INTERNAL_ONLY`]). A
/// request with no `x-envoy-` header at all (nearly every one) costs one pass over its
/// names, not nine lookups.
pub fn strip_request_headers(headers: &mut http::HeaderMap) {
    if !headers
        .keys()
        .any(|name| name.as_str().starts_with("x-envoy-"))
    {
        return;
    }
    for name in INTERNAL_ONLY {
        headers.remove(name);
    }
}

/// The `retry_on` conditions, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn(u16);

impl RetryOn {
    /// `5xx`.
    pub const FIVE_XX: RetryOn = RetryOn(1);
    /// `gateway-error`.
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    /// `reset`.
    pub const RESET: RetryOn = RetryOn(1 << 2);
    /// `connect-failure`.
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 3);
    /// `retriable-4xx`.
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 4);
    /// `refused-stream`.
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 5);
    /// `retriable-status-codes`.
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 6);
    /// `http3-post-connect-failure`.
    pub const HTTP3_POST_CONNECT_FAILURE: RetryOn = RetryOn(1 << 7);

    /// The conditions of a `retry_on` comma list; an unknown one is an error naming it.
    /// Envoy's gRPC conditions (`cancelled`, `unavailable`, ...) and `reset-before-request`,
    /// `envoy-ratelimited`, `retriable-headers` are not implemented and say so.
    pub fn parse(list: &str) -> Result<RetryOn, String> {
        let mut on = RetryOn::default();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            on.0 |= match word {
                "5xx" => RetryOn::FIVE_XX,
                "gateway-error" => RetryOn::GATEWAY_ERROR,
                "reset" => RetryOn::RESET,
                "connect-failure" => RetryOn::CONNECT_FAILURE,
                "retriable-4xx" => RetryOn::RETRIABLE_4XX,
                "refused-stream" => RetryOn::REFUSED_STREAM,
                "retriable-status-codes" => RetryOn::RETRIABLE_STATUS_CODES,
                "http3-post-connect-failure" => RetryOn::HTTP3_POST_CONNECT_FAILURE,
                other => return Err(format!("retry condition {other:?} is not supported")),
            }
            .0;
        }
        Ok(on)
    }

    /// Whether any of `other`'s conditions is set.
    pub fn any(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    fn with(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }
}

/// Why a try failed without a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryFailure {
    /// The connection could not be made (refused, timed out, TLS).
    ConnectFailure,
    /// The stream or connection was reset before the response head.
    Reset,
    /// The upstream refused the HTTP/2 stream.
    RefusedStream,
    /// The try ran out of `per_try_timeout` (or `per_try_idle_timeout`).
    PerTryTimeout,
    /// A circuit breaker of this proxy refused it: never retried.
    Overflow,
    /// Nothing to retry on (no healthy host, no cluster).
    Other,
}

/// One route's retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// `retry_on`.
    pub retry_on: RetryOn,
    /// `num_retries` (default 1), at most [`MAX_RETRIES`].
    pub num_retries: u32,
    /// `per_try_timeout`: each try's own limit (`None`: the route's timeout only).
    pub per_try_timeout: Option<Duration>,
    /// `per_try_idle_timeout`: the most a try may wait for its response head.
    pub per_try_idle_timeout: Option<Duration>,
    /// `retry_back_off.base_interval`.
    pub base_interval: Duration,
    /// `retry_back_off.max_interval`.
    pub max_interval: Duration,
    /// `retriable_status_codes`.
    pub retriable_status_codes: Vec<u16>,
    /// `retry_host_predicate` has `previous_hosts`.
    pub previous_hosts: bool,
    /// How many host picks a retry makes (`host_selection_retry_max_attempts` + 1).
    pub host_picks: u32,
}

impl RetryPolicy {
    /// The policy of `policy` at `path`, checked.
    pub fn build(policy: &schema::RetryPolicy, path: &str) -> Result<RetryPolicy, FieldError> {
        let retry_on = match &policy.retry_on {
            Some(list) => RetryOn::parse(list)
                .map_err(|why| FieldError::new(format!("{path}.retry_on"), why))?,
            None => RetryOn::default(),
        };
        let mut retriable_status_codes = Vec::new();
        for (i, code) in policy.retriable_status_codes.iter().enumerate() {
            let code = u16::try_from(*code)
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    FieldError::new(
                        format!("{path}.retriable_status_codes[{i}]"),
                        "expected an HTTP status 100..=599",
                    )
                })?;
            retriable_status_codes.push(code);
        }
        let (base_interval, max_interval) = match &policy.retry_back_off {
            None => (DEFAULT_BASE_INTERVAL, DEFAULT_BASE_INTERVAL * 10),
            Some(back_off) => {
                let base = back_off.base_interval.get();
                if base.is_zero() {
                    return Err(FieldError::new(
                        format!("{path}.retry_back_off.base_interval"),
                        "must be greater than 0",
                    ));
                }
                let max = back_off
                    .max_interval
                    .map_or(base.saturating_mul(10), |m| m.get());
                if max < base {
                    return Err(FieldError::new(
                        format!("{path}.retry_back_off.max_interval"),
                        "must be at least base_interval",
                    ));
                }
                (base, max)
            }
        };
        let mut previous_hosts = false;
        for (i, predicate) in policy.retry_host_predicate.iter().enumerate() {
            if predicate.name != "envoy.retry_host_predicates.previous_hosts" {
                return Err(FieldError::new(
                    format!("{path}.retry_host_predicate[{i}].name"),
                    format!(
                        "retry host predicate {:?} is not supported (weir has \
                         envoy.retry_host_predicates.previous_hosts)",
                        predicate.name
                    ),
                ));
            }
            previous_hosts = true;
        }
        let reselects = policy.host_selection_retry_max_attempts.unwrap_or(0);
        if reselects < 0 {
            return Err(FieldError::new(
                format!("{path}.host_selection_retry_max_attempts"),
                "must not be negative",
            ));
        }
        let nonzero = |d: Option<crate::config::duration::ConfigDuration>| {
            d.map(|d| d.get()).filter(|d| !d.is_zero())
        };
        Ok(RetryPolicy {
            retry_on,
            num_retries: policy.num_retries.unwrap_or(1).min(MAX_RETRIES),
            per_try_timeout: nonzero(policy.per_try_timeout),
            per_try_idle_timeout: nonzero(policy.per_try_idle_timeout),
            base_interval,
            max_interval,
            retriable_status_codes,
            previous_hosts,
            host_picks: u32::try_from(reselects)
                .unwrap_or(u32::MAX)
                .saturating_add(1)
                .min(MAX_HOST_PICKS),
        })
    }

    /// Whether a response head with `status` and `headers` is worth another try.
    pub fn retries_response(&self, status: u16, headers: &http::HeaderMap) -> bool {
        if headers.contains_key(&X_ENVOY_OVERLOADED) {
            return false;
        }
        let on = self.retry_on;
        (on.any(RetryOn::FIVE_XX) && (500..=599).contains(&status))
            || (on.any(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
            || (on.any(RetryOn::RETRIABLE_4XX) && status == 409)
            || (on.any(RetryOn::RETRIABLE_STATUS_CODES)
                && self.retriable_status_codes.contains(&status))
    }

    /// Whether a try that failed for `failure` (on an HTTP/3 connection: `over_http3`) is
    /// worth another try.
    pub fn retries_failure(&self, failure: TryFailure, over_http3: bool) -> bool {
        let on = self.retry_on;
        let no_response = RetryOn::FIVE_XX
            .with(RetryOn::GATEWAY_ERROR)
            .with(RetryOn::RESET);
        match failure {
            TryFailure::Overflow | TryFailure::Other => false,
            TryFailure::ConnectFailure => on.any(no_response.with(RetryOn::CONNECT_FAILURE)),
            TryFailure::PerTryTimeout => on.any(no_response),
            TryFailure::RefusedStream => on.any(no_response.with(RetryOn::REFUSED_STREAM)),
            TryFailure::Reset => {
                on.any(no_response) || (over_http3 && on.any(RetryOn::HTTP3_POST_CONNECT_FAILURE))
            }
        }
    }

    /// The wait before retry `n` (0 for the first): random below `(2^(n+1) - 1) x base`,
    /// and never above `max_interval`.
    pub fn back_off(&self, n: u32) -> Duration {
        let factor = 1u32
            .checked_shl(n.saturating_add(1).min(31))
            .map_or(u32::MAX, |f| f - 1);
        let bound = self.base_interval.saturating_mul(factor);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(rand::rng().random_range(0..nanos)).min(self.max_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<RetryPolicy, FieldError> {
        let schema: schema::RetryPolicy = serde_yaml_ng::from_str(yaml).expect("schema");
        RetryPolicy::build(&schema, "route.retry_policy")
    }

    #[test]
    fn retry_on_parses_a_comma_list_and_names_what_it_refuses() {
        let on = RetryOn::parse("5xx, connect-failure,,retriable-status-codes").expect("parses");
        assert!(on.any(RetryOn::FIVE_XX));
        assert!(on.any(RetryOn::CONNECT_FAILURE));
        assert!(on.any(RetryOn::RETRIABLE_STATUS_CODES));
        assert!(!on.any(RetryOn::RESET));
        let all = "5xx,gateway-error,reset,connect-failure,retriable-4xx,refused-stream,\
                   retriable-status-codes,http3-post-connect-failure";
        assert_eq!(RetryOn::parse(all).map(|o| o.0), Ok(0xff));
        let error = policy("retry_on: 5xx,cancelled").expect_err("refused");
        assert_eq!(error.path, "route.retry_policy.retry_on");
        assert!(error.message.contains("cancelled"), "{error:?}");
    }

    #[test]
    fn envoys_defaults() {
        let p = policy("retry_on: 5xx").expect("builds");
        assert_eq!(p.num_retries, 1);
        assert_eq!(p.base_interval, Duration::from_millis(25));
        assert_eq!(p.max_interval, Duration::from_millis(250));
        assert_eq!(p.host_picks, 1);
        assert!(!p.previous_hosts);
        let p = policy(
            "{retry_on: reset, num_retries: 7, retry_back_off: {base_interval: 0.1s}, \
             host_selection_retry_max_attempts: 3, retry_host_predicate: [{name: \
             envoy.retry_host_predicates.previous_hosts}]}",
        )
        .expect("builds");
        assert_eq!(
            (
                p.num_retries,
                p.max_interval,
                p.host_picks,
                p.previous_hosts
            ),
            (7, Duration::from_secs(1), 4, true)
        );
    }

    #[test]
    fn bad_fields_are_named() {
        for (yaml, field) in [
            (
                "retry_back_off: {base_interval: 1s, max_interval: 0.5s}",
                "route.retry_policy.retry_back_off.max_interval",
            ),
            (
                "retry_back_off: {base_interval: 0s}",
                "route.retry_policy.retry_back_off.base_interval",
            ),
            (
                "retriable_status_codes: [503, 99]",
                "route.retry_policy.retriable_status_codes[1]",
            ),
            (
                "retry_host_predicate: [{name: envoy.retry_host_predicates.omit_canary_hosts}]",
                "route.retry_policy.retry_host_predicate[0].name",
            ),
            (
                "host_selection_retry_max_attempts: -1",
                "route.retry_policy.host_selection_retry_max_attempts",
            ),
        ] {
            let error = policy(yaml).expect_err(yaml);
            assert_eq!(error.path, field, "{yaml}");
        }
    }

    #[test]
    fn responses_retried_by_condition() {
        let none = http::HeaderMap::new();
        let five = policy("retry_on: 5xx").expect("builds");
        assert!(five.retries_response(500, &none) && five.retries_response(503, &none));
        assert!(!five.retries_response(409, &none) && !five.retries_response(200, &none));
        let gateway = policy("retry_on: gateway-error").expect("builds");
        assert!(gateway.retries_response(502, &none) && gateway.retries_response(504, &none));
        assert!(!gateway.retries_response(500, &none));
        let four = policy("retry_on: retriable-4xx").expect("builds");
        assert!(four.retries_response(409, &none) && !four.retries_response(404, &none));
        let codes = policy("{retry_on: retriable-status-codes, retriable_status_codes: [418]}")
            .expect("builds");
        assert!(codes.retries_response(418, &none) && !codes.retries_response(503, &none));
        let mut overloaded = http::HeaderMap::new();
        overloaded.insert(X_ENVOY_OVERLOADED, http::HeaderValue::from_static("true"));
        assert!(!five.retries_response(503, &overloaded));
    }

    #[test]
    fn failures_retried_by_condition() {
        use TryFailure::*;
        let connect = policy("retry_on: connect-failure").expect("builds");
        assert!(connect.retries_failure(ConnectFailure, false));
        assert!(!connect.retries_failure(Reset, false));
        assert!(!connect.retries_failure(PerTryTimeout, false));
        for on in ["5xx", "gateway-error", "reset"] {
            let p = policy(&format!("retry_on: {on}")).expect("builds");
            for failure in [ConnectFailure, Reset, RefusedStream, PerTryTimeout] {
                assert!(p.retries_failure(failure, false), "{on} {failure:?}");
            }
            assert!(!p.retries_failure(Overflow, false), "{on}");
            assert!(!p.retries_failure(Other, false), "{on}");
        }
        let refused = policy("retry_on: refused-stream").expect("builds");
        assert!(refused.retries_failure(RefusedStream, false));
        assert!(!refused.retries_failure(Reset, false));
        let h3 = policy("retry_on: http3-post-connect-failure").expect("builds");
        assert!(h3.retries_failure(Reset, true) && !h3.retries_failure(Reset, false));
    }

    #[test]
    fn back_off_is_jittered_below_its_exponential_bound_and_the_max() {
        let p =
            policy("{retry_on: 5xx, retry_back_off: {base_interval: 0.01s, max_interval: 0.05s}}")
                .expect("builds");
        let mut first_max = Duration::ZERO;
        for _ in 0..500 {
            let first = p.back_off(0);
            assert!(first < Duration::from_millis(10), "{first:?}");
            first_max = first_max.max(first);
            assert!(p.back_off(1) < Duration::from_millis(30));
            assert!(p.back_off(2) <= Duration::from_millis(50));
            assert!(p.back_off(40) <= Duration::from_millis(50));
            assert!(p.back_off(u32::MAX) <= Duration::from_millis(50));
        }
        // Jittered: 500 draws below 10 ms are not all tiny.
        assert!(first_max > Duration::from_millis(5), "{first_max:?}");
    }

    #[test]
    fn only_envoys_internal_headers_are_stripped() {
        let mut headers = http::HeaderMap::new();
        for name in [
            "x-envoy-retry-on",
            "x-envoy-max-retries",
            "x-envoy-upstream-rq-timeout-ms",
        ] {
            headers.insert(name, http::HeaderValue::from_static("5"));
        }
        headers.insert("x-envoy-other", http::HeaderValue::from_static("kept"));
        strip_request_headers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-envoy-other"));
    }
}
