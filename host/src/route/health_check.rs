//! `envoy.filters.http.health_check`, as the connection manager runs it: which requests are
//! health checks (its `headers`, pseudo-headers included) and what the filter answers them
//! (Envoy's status, response code details and flag). The connection manager does the rest
//! (answering, the response headers): see `http::stream`.

use super::matcher::HeaderMatcher;
use crate::config::FieldError;
use crate::config::http_manager::HealthCheckConfig;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// `x-envoy-upstream-healthchecked-cluster`: on a health check's response, the service
/// cluster of this proxy (`node.cluster`).
pub static X_ENVOY_UPSTREAM_HEALTHCHECKED_CLUSTER: HeaderName =
    HeaderName::from_static("x-envoy-upstream-healthchecked-cluster");
/// `x-envoy-immediate-health-check-fail: true`: on every response through the filter while
/// the server fails its health checks.
pub static X_ENVOY_IMMEDIATE_HEALTH_CHECK_FAIL: HeaderName =
    HeaderName::from_static("x-envoy-immediate-health-check-fail");

/// The pseudo-headers a matcher may name, and the stand-in name each is matched under.
const PSEUDO: [(&str, &str); 4] = [
    (":path", "x-weir-pseudo-path"),
    (":method", "x-weir-pseudo-method"),
    (":authority", "x-weir-pseudo-authority"),
    (":scheme", "x-weir-pseudo-scheme"),
];

/// The request head as the filter reads it.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, with the query.
    pub path: &'a str,
    /// `:authority` (or `host`).
    pub authority: &'a str,
    /// `:scheme`.
    pub scheme: &'a str,
    /// The headers.
    pub headers: &'a HeaderMap,
}

/// What the filter answers a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheckAnswer {
    /// 200 or 503.
    pub status: StatusCode,
    /// `%RESPONSE_CODE_DETAILS%`.
    pub details: &'static str,
    /// `LH` (Envoy's FailedLocalHealthCheck) on a 503, else none.
    pub flags: &'static str,
}

/// One connection manager's health check filter.
#[derive(Debug, Clone)]
pub struct HealthCheckFilter {
    pass_through: bool,
    /// Matchers on real headers.
    headers: Vec<HeaderMatcher>,
    /// Matchers on pseudo-headers, under their stand-in names.
    pseudo: Vec<HeaderMatcher>,
    /// Which pseudo-headers [`Self::pseudo`] reads.
    pseudo_used: [bool; PSEUDO.len()],
    min_healthy: Vec<(String, f64)>,
    service_cluster: HeaderValue,
}

impl HealthCheckFilter {
    /// The filter of `config` at `path`; `service_cluster` is `node.cluster`.
    pub fn build(
        config: &HealthCheckConfig,
        path: &str,
        service_cluster: &str,
    ) -> Result<HealthCheckFilter, FieldError> {
        if config.cache_time.is_some() {
            return Err(FieldError::new(
                format!("{path}.cache_time"),
                "cached health check answers are not supported",
            ));
        }
        let mut headers = Vec::new();
        let mut pseudo = Vec::new();
        let mut pseudo_used = [false; PSEUDO.len()];
        for (i, header) in config.headers.iter().enumerate() {
            let header_path = format!("{path}.headers[{i}]");
            let lower = header.name.to_ascii_lowercase();
            if lower.starts_with(':') {
                let Some(slot) = PSEUDO.iter().position(|(name, _)| *name == lower) else {
                    return Err(FieldError::new(
                        format!("{header_path}.name"),
                        format!(
                            "unknown pseudo-header {lower:?}; known: :path, :method, :authority, :scheme"
                        ),
                    ));
                };
                let mut stand_in = header.clone();
                stand_in.name = PSEUDO[slot].1.to_owned();
                pseudo.push(HeaderMatcher::build(&stand_in, &header_path)?);
                pseudo_used[slot] = true;
            } else {
                headers.push(HeaderMatcher::build(header, &header_path)?);
            }
        }
        let mut min_healthy = Vec::new();
        for (cluster, percent) in &config.cluster_min_healthy_percentages {
            if !(0.0..=100.0).contains(&percent.value) {
                return Err(FieldError::new(
                    format!("{path}.cluster_min_healthy_percentages.{cluster}.value"),
                    "must be between 0 and 100",
                ));
            }
            min_healthy.push((cluster.clone(), percent.value));
        }
        let service_cluster = HeaderValue::from_str(service_cluster)
            .map_err(|_| FieldError::new("node.cluster", "not a valid header value"))?;
        Ok(HealthCheckFilter {
            pass_through: config.pass_through_mode,
            headers,
            pseudo,
            pseudo_used,
            min_healthy,
            service_cluster,
        })
    }

    /// Whether `head` is a health check: every matcher matches (Envoy's `headers`; none
    /// given, every request is one).
    pub fn is_health_check(&self, head: &RequestHead<'_>) -> bool {
        if !self.headers.iter().all(|m| m.matches(head.headers)) {
            return false;
        }
        if self.pseudo.is_empty() {
            return true;
        }
        let values = [head.path, head.method, head.authority, head.scheme];
        let mut stand_ins = HeaderMap::new();
        for (slot, used) in self.pseudo_used.iter().enumerate() {
            if *used && let Ok(value) = HeaderValue::from_str(values[slot]) {
                stand_ins.insert(HeaderName::from_static(PSEUDO[slot].1), value);
            }
        }
        self.pseudo.iter().all(|m| m.matches(&stand_ins))
    }

    /// Whether health checks go on upstream while the server passes.
    pub fn pass_through(&self) -> bool {
        self.pass_through
    }

    /// The value of `x-envoy-upstream-healthchecked-cluster`.
    pub fn service_cluster(&self) -> &HeaderValue {
        &self.service_cluster
    }

    /// The answer to a health check the filter handles: 503 while `failed`, else 503 when a
    /// cluster of `cluster_min_healthy_percentages` is missing, empty (with a minimum above
    /// 0) or below its minimum, else 200. `hosts(cluster)` is (healthy, total), `None` for a
    /// cluster that does not exist.
    pub fn answer(
        &self,
        failed: bool,
        hosts: impl Fn(&str) -> Option<(usize, usize)>,
    ) -> HealthCheckAnswer {
        let unavailable = |details| HealthCheckAnswer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            details,
            flags: "LH",
        };
        if failed {
            return unavailable("health_check_failed");
        }
        for (cluster, min) in &self.min_healthy {
            let Some((healthy, total)) = hosts(cluster) else {
                return unavailable("health_check_failed_cluster_not_found");
            };
            if total == 0 {
                if *min == 0.0 {
                    continue;
                }
                return unavailable("health_check_failed_cluster_empty");
            }
            if (healthy as f64) < (total as f64) * min / 100.0 {
                return unavailable("health_check_failed_cluster_unhealthy");
            }
        }
        HealthCheckAnswer {
            status: StatusCode::OK,
            details: "health_check_ok",
            flags: "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(yaml: &str) -> Result<HealthCheckFilter, FieldError> {
        let config: HealthCheckConfig = serde_yaml_ng::from_str(yaml).expect("schema");
        HealthCheckFilter::build(&config, "hc", "front")
    }

    fn head<'a>(path: &'a str, headers: &'a HeaderMap) -> RequestHead<'a> {
        RequestHead {
            method: "GET",
            path,
            authority: "example.com",
            scheme: "http",
            headers,
        }
    }

    #[test]
    fn pseudo_and_real_headers_must_all_match() {
        let hc = filter(
            "pass_through_mode: false\nheaders:\n- {name: \":path\", string_match: {exact: /healthz}}\n- {name: x-probe, present_match: true}\n",
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        assert!(!hc.is_health_check(&head("/healthz", &headers)));
        headers.insert("x-probe", HeaderValue::from_static("1"));
        assert!(hc.is_health_check(&head("/healthz", &headers)));
        assert!(!hc.is_health_check(&head("/healthz?x=1", &headers)));
        assert!(!hc.is_health_check(&head("/other", &headers)));
        let every = filter("pass_through_mode: false\n").unwrap();
        assert!(every.is_health_check(&head("/anything", &HeaderMap::new())));
    }

    #[test]
    fn answers_follow_the_failed_state_and_cluster_health() {
        let hc = filter(
            "pass_through_mode: false\ncluster_min_healthy_percentages: {a: {value: 50}, b: {value: 0}}\n",
        )
        .unwrap();
        let hosts = |healthy_a| {
            move |c: &str| match c {
                "a" => Some((healthy_a, 4)),
                "b" => Some((0, 0)),
                _ => None,
            }
        };
        assert_eq!(hc.answer(false, hosts(2)).status, StatusCode::OK);
        assert_eq!(hc.answer(false, hosts(2)).details, "health_check_ok");
        let low = hc.answer(false, hosts(1));
        assert_eq!(
            (low.status, low.details, low.flags),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "health_check_failed_cluster_unhealthy",
                "LH"
            )
        );
        assert_eq!(hc.answer(true, hosts(4)).details, "health_check_failed");
        let missing = filter(
            "pass_through_mode: false\ncluster_min_healthy_percentages: {nope: {value: 1}}\n",
        )
        .unwrap();
        assert_eq!(
            missing.answer(false, hosts(4)).details,
            "health_check_failed_cluster_not_found"
        );
    }

    #[test]
    fn unsupported_settings_are_errors_naming_the_field() {
        let cached = filter("pass_through_mode: true\ncache_time: 1s\n").unwrap_err();
        assert_eq!(cached.path, "hc.cache_time", "{cached:?}");
        let pseudo =
            filter("pass_through_mode: false\nheaders: [{name: \":nope\"}]\n").unwrap_err();
        assert_eq!(pseudo.path, "hc.headers[0].name", "{pseudo:?}");
    }
}
