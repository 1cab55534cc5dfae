//! The load balancers' settings of a cluster beside `lb_policy`: `common_lb_config`,
//! `ring_hash_lb_config`, `maglev_lb_config` and `least_request_lb_config`, read into
//! [`LbSettings`] with Envoy's defaults and limits.

use super::FieldError;
use super::cluster::{Cluster, LbPolicyName};
use super::cluster_spec::{LbSettings, SlowStart};
use super::duration::ConfigDuration;
use serde::Deserialize;

/// `type.v3.Percent`: `{value: 50.0}`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    /// 0.0 to 100.0.
    #[serde(default)]
    pub value: f64,
}

/// `common_lb_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonLbConfig {
    /// Below this share of available hosts, balance over all hosts (default 50%).
    #[serde(default)]
    pub healthy_panic_threshold: Option<Percent>,
    /// Leave hosts added by discovery out of balancing until their first health check.
    #[serde(default)]
    pub ignore_new_hosts_until_first_hc: bool,
}

/// `ring_hash_lb_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingHashLbConfig {
    /// Fewest entries on the ring (default 1024).
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
    /// Most entries on the ring (default 8M).
    #[serde(default)]
    pub maximum_ring_size: Option<u64>,
    /// Only XX_HASH (the default).
    #[serde(default)]
    pub hash_function: Option<HashFunction>,
}

/// `ring_hash_lb_config.hash_function`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum HashFunction {
    /// xxHash64 (Envoy's default).
    XX_HASH,
    /// MurmurHash2 64A, as libstdc++'s std::hash; not supported by weir.
    MURMUR_HASH_2,
}

/// `maglev_lb_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaglevLbConfig {
    /// Entries in the lookup table, a prime (default 65537).
    #[serde(default)]
    pub table_size: Option<u64>,
}

/// `least_request_lb_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeastRequestLbConfig {
    /// Random hosts compared per pick (default 2, at least 2).
    #[serde(default)]
    pub choice_count: Option<u32>,
    /// New hosts ramp up.
    #[serde(default)]
    pub slow_start_config: Option<SlowStartConfig>,
}

/// `round_robin_lb_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundRobinLbConfig {
    /// New hosts ramp up.
    #[serde(default)]
    pub slow_start_config: Option<SlowStartConfig>,
}

/// `slow_start_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowStartConfig {
    /// How long a new host ramps up (without it, no slow start, as Envoy).
    #[serde(default)]
    pub slow_start_window: Option<ConfigDuration>,
    /// The ramp's curve (default 1.0, linear).
    #[serde(default)]
    pub aggression: Option<RuntimeDouble>,
    /// The least share of its weight a new host gets (default 10%).
    #[serde(default)]
    pub min_weight_percent: Option<Percent>,
}

/// `core.v3.RuntimeDouble`: weir has no runtime, so `default_value` is the value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeDouble {
    /// The value.
    pub default_value: f64,
    /// Accepted; weir has no runtime layer.
    #[serde(default)]
    pub runtime_key: Option<String>,
}

/// Envoy's cap on `maglev_lb_config.table_size` (5000011).
const MAGLEV_MAX_TABLE_SIZE: u64 = 5_000_011;
/// Envoy's cap on `ring_hash_lb_config.maximum_ring_size` (8M).
const RING_MAX: u64 = 8 * 1024 * 1024;

/// Reads the settings of the cluster at `path`, checking them as Envoy does.
pub fn lb_settings(cluster: &Cluster, path: &str) -> Result<LbSettings, FieldError> {
    let mut lb = LbSettings {
        ignore_new_hosts_until_first_hc: cluster
            .common_lb_config
            .as_ref()
            .is_some_and(|c| c.ignore_new_hosts_until_first_hc),
        ..LbSettings::default()
    };
    if let Some(threshold) = cluster
        .common_lb_config
        .as_ref()
        .and_then(|c| c.healthy_panic_threshold)
    {
        if !(0.0..=100.0).contains(&threshold.value) {
            return Err(FieldError::new(
                format!("{path}.common_lb_config.healthy_panic_threshold.value"),
                "must be between 0 and 100",
            ));
        }
        lb.healthy_panic_threshold = threshold.value;
    }
    let policy_mismatch = |field: &str, policy: &str| {
        FieldError::new(
            format!("{path}.{field}"),
            format!("only for lb_policy: {policy}"),
        )
    };
    if let Some(ring) = &cluster.ring_hash_lb_config {
        if cluster.lb_policy != LbPolicyName::RING_HASH {
            return Err(policy_mismatch("ring_hash_lb_config", "RING_HASH"));
        }
        let field = |name: &str| format!("{path}.ring_hash_lb_config.{name}");
        if ring.hash_function == Some(HashFunction::MURMUR_HASH_2) {
            return Err(FieldError::new(
                field("hash_function"),
                "only XX_HASH is supported",
            ));
        }
        lb.ring_min_size = ring.minimum_ring_size.unwrap_or(lb.ring_min_size);
        lb.ring_max_size = ring.maximum_ring_size.unwrap_or(lb.ring_max_size);
        if lb.ring_min_size == 0 || lb.ring_min_size > RING_MAX {
            return Err(FieldError::new(
                field("minimum_ring_size"),
                format!("must be between 1 and {RING_MAX}"),
            ));
        }
        if lb.ring_max_size == 0 || lb.ring_max_size > RING_MAX {
            return Err(FieldError::new(
                field("maximum_ring_size"),
                format!("must be between 1 and {RING_MAX}"),
            ));
        }
        if lb.ring_min_size > lb.ring_max_size {
            return Err(FieldError::new(
                field("minimum_ring_size"),
                "must not be above maximum_ring_size",
            ));
        }
    }
    if let Some(maglev) = &cluster.maglev_lb_config {
        if cluster.lb_policy != LbPolicyName::MAGLEV {
            return Err(policy_mismatch("maglev_lb_config", "MAGLEV"));
        }
        if let Some(size) = maglev.table_size {
            if size > MAGLEV_MAX_TABLE_SIZE || !is_prime(size) {
                return Err(FieldError::new(
                    format!("{path}.maglev_lb_config.table_size"),
                    format!("must be a prime number at most {MAGLEV_MAX_TABLE_SIZE}"),
                ));
            }
            lb.maglev_table_size = size;
        }
    }
    if let Some(least) = &cluster.least_request_lb_config {
        if cluster.lb_policy != LbPolicyName::LEAST_REQUEST {
            return Err(policy_mismatch("least_request_lb_config", "LEAST_REQUEST"));
        }
        if let Some(count) = least.choice_count {
            if count < 2 {
                return Err(FieldError::new(
                    format!("{path}.least_request_lb_config.choice_count"),
                    "must be at least 2",
                ));
            }
            lb.choice_count = count.min(100);
        }
        lb.slow_start = slow_start(
            least.slow_start_config.as_ref(),
            &format!("{path}.least_request_lb_config.slow_start_config"),
        )?;
    }
    if let Some(round_robin) = &cluster.round_robin_lb_config {
        if cluster.lb_policy != LbPolicyName::ROUND_ROBIN {
            return Err(policy_mismatch("round_robin_lb_config", "ROUND_ROBIN"));
        }
        lb.slow_start = slow_start(
            round_robin.slow_start_config.as_ref(),
            &format!("{path}.round_robin_lb_config.slow_start_config"),
        )?;
    }
    Ok(lb)
}

/// Reads `slow_start_config` at `path`; none without a `slow_start_window` (as Envoy, where
/// slow start is off then).
fn slow_start(
    config: Option<&SlowStartConfig>,
    path: &str,
) -> Result<Option<SlowStart>, FieldError> {
    let Some(config) = config else {
        return Ok(None);
    };
    let Some(window) = config
        .slow_start_window
        .map(|w| w.get())
        .filter(|w| !w.is_zero())
    else {
        return Ok(None);
    };
    let aggression = config.aggression.as_ref().map_or(1.0, |a| a.default_value);
    if !aggression.is_finite() || aggression <= 0.0 {
        return Err(FieldError::new(
            format!("{path}.aggression.default_value"),
            "must be above 0",
        ));
    }
    let min_weight_percent = config.min_weight_percent.map_or(10.0, |p| p.value);
    if !(0.0..=100.0).contains(&min_weight_percent) {
        return Err(FieldError::new(
            format!("{path}.min_weight_percent.value"),
            "must be between 0 and 100",
        ));
    }
    Ok(Some(SlowStart {
        window,
        aggression,
        min_weight_percent,
    }))
}

/// Whether `n` is prime (trial division; `n` is at most a few million).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut divisor = 2;
    while divisor * divisor <= n {
        if n.is_multiple_of(divisor) {
            return false;
        }
        divisor += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cluster::cluster_spec;
    use crate::config::cluster_spec::{ClusterSpec, LbPolicy};

    fn read(extra: &str) -> Result<ClusterSpec, String> {
        let yaml = format!(
            "name: c\nload_assignment:\n  endpoints:\n  - lb_endpoints:\n    - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}}}\n      load_balancing_weight: 3\n{extra}"
        );
        let cluster: Cluster = serde_yaml_ng::from_str(&yaml).map_err(|e| e.to_string())?;
        cluster_spec(&cluster, "clusters[0]").map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn settings_defaults_and_errors_name_the_field() {
        let Ok(spec) = read("lb_policy: MAGLEV\n") else {
            panic!("maglev reads")
        };
        assert_eq!(spec.lb_policy, LbPolicy::Maglev);
        assert_eq!(spec.lb, LbSettings::default());
        assert!(!spec.lb.ignore_new_hosts_until_first_hc);
        let Ok(warm) = read("common_lb_config: {ignore_new_hosts_until_first_hc: true}\n") else {
            panic!("ignore_new_hosts_until_first_hc reads")
        };
        assert!(warm.lb.ignore_new_hosts_until_first_hc);
        assert_eq!(spec.endpoints[0].weight, 3);
        assert_eq!(spec.outlier, None);
        let Ok(spec) = read(
            "lb_policy: RING_HASH\nring_hash_lb_config: {minimum_ring_size: 64, maximum_ring_size: 128}\ncommon_lb_config: {healthy_panic_threshold: {value: 0}}\noutlier_detection: {consecutive_5xx: 2, interval: 1s}\n",
        ) else {
            panic!("ring reads")
        };
        assert_eq!((spec.lb.ring_min_size, spec.lb.ring_max_size), (64, 128));
        assert!(spec.lb.healthy_panic_threshold == 0.0);
        let outlier = spec.outlier.unwrap_or_default();
        assert_eq!(outlier.consecutive_5xx, 2);
        assert_eq!(
            outlier.base_ejection_time,
            std::time::Duration::from_secs(30)
        );
        for (extra, field) in [
            (
                "lb_policy: MAGLEV\nmaglev_lb_config: {table_size: 65536}\n",
                "clusters[0].maglev_lb_config.table_size",
            ),
            (
                "ring_hash_lb_config: {}\n",
                "clusters[0].ring_hash_lb_config",
            ),
            (
                "lb_policy: RING_HASH\nring_hash_lb_config: {minimum_ring_size: 10, maximum_ring_size: 5}\n",
                "minimum_ring_size",
            ),
            (
                "lb_policy: RING_HASH\nring_hash_lb_config: {hash_function: MURMUR_HASH_2}\n",
                "hash_function",
            ),
            (
                "lb_policy: LEAST_REQUEST\nleast_request_lb_config: {choice_count: 1}\n",
                "choice_count",
            ),
            (
                "common_lb_config: {healthy_panic_threshold: {value: 101}}\n",
                "healthy_panic_threshold.value",
            ),
            (
                "outlier_detection: {max_ejection_percent: 101}\n",
                "clusters[0].outlier_detection.max_ejection_percent",
            ),
            (
                "outlier_detection: {interval: 0s}\n",
                "clusters[0].outlier_detection.interval",
            ),
            (
                "lb_policy: LEAST_REQUEST\nleast_request_lb_config: {slow_start_config: {slow_start_window: 1s, aggression: {default_value: 0, runtime_key: k}}}\n",
                "least_request_lb_config.slow_start_config.aggression.default_value",
            ),
            (
                "round_robin_lb_config: {slow_start_config: {slow_start_window: 1s, min_weight_percent: {value: 200}}}\n",
                "round_robin_lb_config.slow_start_config.min_weight_percent.value",
            ),
            (
                "lb_policy: RANDOM\nround_robin_lb_config: {}\n",
                "clusters[0].round_robin_lb_config",
            ),
        ] {
            match read(extra) {
                Ok(_) => panic!("{extra}: accepted"),
                Err(error) => assert!(error.contains(field), "{extra}: {error}"),
            }
        }
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537));
        assert!(is_prime(2));
        assert!(!is_prime(65_536));
        assert!(!is_prime(1));
        assert!(is_prime(MAGLEV_MAX_TABLE_SIZE));
    }

    /// `load_assignment.endpoints[].priority` reaches each endpoint; the assignment's
    /// `policy.overprovisioning_factor` (140 by default, 0 refused by its field) and
    /// `weighted_priority_health` the spec; a priority over 128 is refused.
    #[test]
    fn priorities_and_the_overprovisioning_factor_read() {
        let yaml = |policy: &str| {
            format!(
                "name: c\nload_assignment:\n  {policy}endpoints:\n  - lb_endpoints:\n    - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}}}\n  - priority: 2\n    lb_endpoints:\n    - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 2}}}}}}\n"
            )
        };
        let read = |policy: &str| -> Result<ClusterSpec, String> {
            let cluster: Cluster =
                serde_yaml_ng::from_str(&yaml(policy)).map_err(|e| e.to_string())?;
            cluster_spec(&cluster, "clusters[0]").map_err(|e| format!("{e:?}"))
        };
        let Ok(spec) = read("") else {
            panic!("priorities read")
        };
        let priorities: Vec<u32> = spec.endpoints.iter().map(|e| e.priority).collect();
        assert_eq!(priorities, vec![0, 2]);
        assert_eq!(spec.overprovisioning_factor, 140);
        let Ok(spec) = read("policy: {overprovisioning_factor: 200}\n  ") else {
            panic!("policy reads")
        };
        assert_eq!(spec.overprovisioning_factor, 200);
        let Ok(too_low) =
            serde_yaml_ng::from_str::<Cluster>(&yaml("").replace("priority: 2", "priority: 129"))
        else {
            panic!("parses")
        };
        let error = cluster_spec(&too_low, "clusters[0]").err().map(|e| e.path);
        assert_eq!(
            error.as_deref(),
            Some("clusters[0].load_assignment.endpoints[1].priority")
        );
        assert!(!spec.weighted_priority_health);
        let Ok(spec) = read("policy: {weighted_priority_health: true}\n  ") else {
            panic!("weighted_priority_health reads")
        };
        assert!(spec.weighted_priority_health);
        let error = read("policy: {overprovisioning_factor: 0}\n  ")
            .err()
            .unwrap_or_default();
        assert!(
            error.contains("clusters[0].load_assignment.policy.overprovisioning_factor"),
            "{error}"
        );
    }
}
