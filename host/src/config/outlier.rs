//! `outlier_detection` of a cluster (Envoy's `cluster.v3.OutlierDetection`): the schema and
//! its reading into an [`OutlierSpec`] with Envoy's defaults.

use super::FieldError;
use super::cluster_spec::OutlierSpec;
use super::duration::ConfigDuration;
use serde::Deserialize;

/// `outlier_detection`: every field optional, Envoy's defaults in [`OutlierSpec`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// 5xx answers in a row that eject a host.
    #[serde(default)]
    pub consecutive_5xx: Option<u32>,
    /// 502/503/504 answers in a row that eject a host.
    #[serde(default)]
    pub consecutive_gateway_failure: Option<u32>,
    /// Local-origin failures in a row that eject a host (with the split on).
    #[serde(default)]
    pub consecutive_local_origin_failure: Option<u32>,
    /// Count local-origin failures apart from the upstream's answers.
    #[serde(default)]
    pub split_external_local_origin_errors: Option<bool>,
    /// Time between ejection sweeps.
    #[serde(default)]
    pub interval: Option<ConfigDuration>,
    /// Base ejection time, multiplied by the times a host was ejected.
    #[serde(default)]
    pub base_ejection_time: Option<ConfigDuration>,
    /// Cap on an ejection.
    #[serde(default)]
    pub max_ejection_time: Option<ConfigDuration>,
    /// Most hosts ejected at once, in percent.
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
    /// Chance (percent) a consecutive_5xx detection ejects.
    #[serde(default)]
    pub enforcing_consecutive_5xx: Option<u32>,
    /// Chance a consecutive_gateway_failure detection ejects.
    #[serde(default)]
    pub enforcing_consecutive_gateway_failure: Option<u32>,
    /// Chance a consecutive_local_origin_failure detection ejects.
    #[serde(default)]
    pub enforcing_consecutive_local_origin_failure: Option<u32>,
    /// Chance a success-rate detection ejects.
    #[serde(default)]
    pub enforcing_success_rate: Option<u32>,
    /// Chance a local-origin success-rate detection ejects.
    #[serde(default)]
    pub enforcing_local_origin_success_rate: Option<u32>,
    /// Hosts with enough volume for success-rate detection.
    #[serde(default)]
    pub success_rate_minimum_hosts: Option<u32>,
    /// Requests per interval a host needs for success-rate detection.
    #[serde(default)]
    pub success_rate_request_volume: Option<u32>,
    /// Ejection below mean - stdev x factor / 1000.
    #[serde(default)]
    pub success_rate_stdev_factor: Option<u32>,
    /// Failure percentage at or above which a host is ejected.
    #[serde(default)]
    pub failure_percentage_threshold: Option<u32>,
    /// Chance a failure-percentage detection ejects.
    #[serde(default)]
    pub enforcing_failure_percentage: Option<u32>,
    /// Chance a local-origin failure-percentage detection ejects.
    #[serde(default)]
    pub enforcing_failure_percentage_local_origin: Option<u32>,
    /// Hosts with enough volume for failure-percentage detection.
    #[serde(default)]
    pub failure_percentage_minimum_hosts: Option<u32>,
    /// Requests per interval a host needs for failure-percentage detection.
    #[serde(default)]
    pub failure_percentage_request_volume: Option<u32>,
}

/// Reads `outlier_detection` at `path`, checking percentages (0..=100) and the interval.
pub fn outlier_spec(config: &OutlierDetection, path: &str) -> Result<OutlierSpec, FieldError> {
    let d = OutlierSpec::default();
    let percent = |value: Option<u32>, default: u32, name: &str| -> Result<u32, FieldError> {
        match value {
            Some(v) if v > 100 => Err(FieldError::new(
                format!("{path}.{name}"),
                "a percentage, at most 100",
            )),
            Some(v) => Ok(v),
            None => Ok(default),
        }
    };
    let duration = |value: Option<ConfigDuration>, default| value.map_or(default, |v| v.get());
    let spec = OutlierSpec {
        consecutive_5xx: config.consecutive_5xx.unwrap_or(d.consecutive_5xx),
        consecutive_gateway_failure: config
            .consecutive_gateway_failure
            .unwrap_or(d.consecutive_gateway_failure),
        consecutive_local_origin_failure: config
            .consecutive_local_origin_failure
            .unwrap_or(d.consecutive_local_origin_failure),
        split_external_local_origin_errors: config
            .split_external_local_origin_errors
            .unwrap_or(false),
        interval: duration(config.interval, d.interval),
        base_ejection_time: duration(config.base_ejection_time, d.base_ejection_time),
        max_ejection_time: duration(config.max_ejection_time, d.max_ejection_time),
        max_ejection_percent: percent(
            config.max_ejection_percent,
            d.max_ejection_percent,
            "max_ejection_percent",
        )?,
        enforcing_consecutive_5xx: percent(
            config.enforcing_consecutive_5xx,
            d.enforcing_consecutive_5xx,
            "enforcing_consecutive_5xx",
        )?,
        enforcing_consecutive_gateway_failure: percent(
            config.enforcing_consecutive_gateway_failure,
            d.enforcing_consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure",
        )?,
        enforcing_consecutive_local_origin_failure: percent(
            config.enforcing_consecutive_local_origin_failure,
            d.enforcing_consecutive_local_origin_failure,
            "enforcing_consecutive_local_origin_failure",
        )?,
        enforcing_success_rate: percent(
            config.enforcing_success_rate,
            d.enforcing_success_rate,
            "enforcing_success_rate",
        )?,
        enforcing_local_origin_success_rate: percent(
            config.enforcing_local_origin_success_rate,
            d.enforcing_local_origin_success_rate,
            "enforcing_local_origin_success_rate",
        )?,
        success_rate_minimum_hosts: config
            .success_rate_minimum_hosts
            .unwrap_or(d.success_rate_minimum_hosts),
        success_rate_request_volume: config
            .success_rate_request_volume
            .unwrap_or(d.success_rate_request_volume),
        success_rate_stdev_factor: config
            .success_rate_stdev_factor
            .unwrap_or(d.success_rate_stdev_factor),
        failure_percentage_threshold: percent(
            config.failure_percentage_threshold,
            d.failure_percentage_threshold,
            "failure_percentage_threshold",
        )?,
        enforcing_failure_percentage: percent(
            config.enforcing_failure_percentage,
            d.enforcing_failure_percentage,
            "enforcing_failure_percentage",
        )?,
        enforcing_failure_percentage_local_origin: percent(
            config.enforcing_failure_percentage_local_origin,
            d.enforcing_failure_percentage_local_origin,
            "enforcing_failure_percentage_local_origin",
        )?,
        failure_percentage_minimum_hosts: config
            .failure_percentage_minimum_hosts
            .unwrap_or(d.failure_percentage_minimum_hosts),
        failure_percentage_request_volume: config
            .failure_percentage_request_volume
            .unwrap_or(d.failure_percentage_request_volume),
    };
    if spec.interval.is_zero() {
        return Err(FieldError::new(
            format!("{path}.interval"),
            "must be above 0s",
        ));
    }
    if spec.base_ejection_time.is_zero() {
        return Err(FieldError::new(
            format!("{path}.base_ejection_time"),
            "must be above 0s",
        ));
    }
    Ok(spec)
}
