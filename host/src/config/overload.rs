//! The bootstrap's `overload_manager`, in Envoy's shape: resource monitors that measure a
//! pressure (0..1), and actions whose triggers turn on when a monitor's pressure crosses a
//! threshold. What weir implements of it:
//!
//! - monitors `envoy.resource_monitors.global_downstream_max_connections`
//!   (`DownstreamConnectionsConfig.max_active_downstream_connections`: the global connection
//!   limit; its pressure is open connections / the limit) and
//!   `envoy.resource_monitors.fixed_heap` (`FixedHeapConfig.max_heap_size_bytes`; weir's
//!   pressure is its resident memory / the limit, see [`crate::overload`]);
//! - actions `envoy.overload_actions.stop_accepting_requests` (new requests get 503) and
//!   `envoy.overload_actions.disable_http_keepalive` (HTTP/1.1 responses carry
//!   `connection: close`, HTTP/2 and HTTP/3 connections get GOAWAY);
//! - triggers `threshold.value` and `scaled {scaling_threshold, saturation_threshold}`; weir's
//!   two actions act only when saturated, as Envoy's do.
//!
//! Anything else (another monitor or action, `loadshed_points`, `buffer_factory_config`) is a
//! config error naming the field.

use super::FieldError;
use super::duration::ConfigDuration;
use super::typed::{PATH_MARK, split_typed, type_names, typed};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Envoy's default `refresh_interval`.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The monitor whose limit is the global downstream connection limit.
pub const GLOBAL_CONNECTIONS_MONITOR: &str =
    "envoy.resource_monitors.global_downstream_max_connections";
/// The memory monitor.
pub const FIXED_HEAP_MONITOR: &str = "envoy.resource_monitors.fixed_heap";

/// `overload_manager` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OverloadManager {
    /// How often the monitors are read (Envoy default 1 s).
    #[serde(default)]
    pub refresh_interval: Option<ConfigDuration>,
    /// `resource_monitors[]`.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub resource_monitors: Vec<ResourceMonitor>,
    /// `actions[]`.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub actions: Vec<OverloadAction>,
}

/// `resource_monitors[]`: a `name` and its `typed_config`.
#[derive(Debug, Clone)]
pub struct ResourceMonitor {
    /// The name triggers refer to.
    pub name: String,
    /// What it measures, with its limit.
    pub kind: MonitorKind,
}

/// The monitors weir implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorKind {
    /// Open downstream connections, across every listener and worker, against this limit.
    GlobalConnections {
        /// `max_active_downstream_connections`.
        max_active_downstream_connections: u64,
    },
    /// weir's resident memory against this limit.
    FixedHeap {
        /// `max_heap_size_bytes`.
        max_heap_size_bytes: u64,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DownstreamConnectionsConfig {
    #[serde(deserialize_with = "positive_integer")]
    max_active_downstream_connections: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedHeapConfig {
    #[serde(deserialize_with = "positive_integer")]
    max_heap_size_bytes: u64,
}

/// A protobuf (u)int64 as the JSON mapping writes it (a number, or a string of digits), which
/// must be above 0 as Envoy validates it.
fn positive_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Integer {
        Number(i64),
        Text(String),
    }
    let value = match Integer::deserialize(deserializer)? {
        Integer::Number(n) => n,
        Integer::Text(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|_| D::Error::custom(format!("expected an integer, got {text:?}")))?,
    };
    u64::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| D::Error::custom(format!("must be greater than 0, got {value}")))
}

impl<'de> Deserialize<'de> for ResourceMonitor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            name: String,
            #[serde(default)]
            typed_config: Option<serde_yaml_ng::Value>,
        }
        let raw = Raw::deserialize(deserializer)?;
        let expected = match raw.name.as_str() {
            GLOBAL_CONNECTIONS_MONITOR => type_names::DOWNSTREAM_CONNECTIONS,
            FIXED_HEAP_MONITOR => type_names::FIXED_HEAP,
            other => {
                return Err(D::Error::custom(format!(
                    "{PATH_MARK}name{PATH_MARK}unknown resource monitor {other:?}; weir supports \
                     {GLOBAL_CONNECTIONS_MONITOR} and {FIXED_HEAP_MONITOR}"
                )));
            }
        };
        let (type_name, value) =
            split_typed(&raw.name, raw.typed_config).map_err(D::Error::custom)?;
        if type_name != expected {
            return Err(D::Error::custom(format!(
                "{PATH_MARK}typed_config.@type{PATH_MARK}{} takes \
                 type.googleapis.com/{expected}, not {type_name:?}",
                raw.name
            )));
        }
        let kind = if expected == type_names::DOWNSTREAM_CONNECTIONS {
            let config: DownstreamConnectionsConfig = typed(value).map_err(D::Error::custom)?;
            MonitorKind::GlobalConnections {
                max_active_downstream_connections: config.max_active_downstream_connections,
            }
        } else {
            let config: FixedHeapConfig = typed(value).map_err(D::Error::custom)?;
            MonitorKind::FixedHeap {
                max_heap_size_bytes: config.max_heap_size_bytes,
            }
        };
        Ok(ResourceMonitor {
            name: raw.name,
            kind,
        })
    }
}

/// The overload actions weir implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum ActionKind {
    /// New requests get 503 from weir.
    #[serde(rename = "envoy.overload_actions.stop_accepting_requests")]
    StopAcceptingRequests,
    /// Responses close their HTTP/1.1 connection; HTTP/2 and HTTP/3 connections drain.
    #[serde(rename = "envoy.overload_actions.disable_http_keepalive")]
    DisableHttpKeepalive,
}

impl ActionKind {
    /// Envoy's name for it (its stats are `overload.<name>.*`).
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::StopAcceptingRequests => "envoy.overload_actions.stop_accepting_requests",
            ActionKind::DisableHttpKeepalive => "envoy.overload_actions.disable_http_keepalive",
        }
    }
}

/// `actions[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadAction {
    /// Which action.
    pub name: ActionKind,
    /// When it acts.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub triggers: Vec<RawTrigger>,
}

/// `actions[].triggers[]` as written: the monitor's `name` and exactly one of `threshold` and
/// `scaled`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    /// The monitor.
    pub name: String,
    /// `threshold`.
    #[serde(default)]
    pub threshold: Option<ThresholdTrigger>,
    /// `scaled`.
    #[serde(default)]
    pub scaled: Option<ScaledTrigger>,
}

/// `threshold`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdTrigger {
    /// Saturated at or above this pressure.
    pub value: f64,
}

/// `scaled`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaledTrigger {
    /// Below this pressure the action is off.
    pub scaling_threshold: f64,
    /// At or above this pressure the action is saturated.
    pub saturation_threshold: f64,
}

/// The overload manager weir runs: the checked form of [`OverloadManager`].
#[derive(Debug, Clone, PartialEq)]
pub struct OverloadConfig {
    /// How often monitors are read and actions updated.
    pub refresh_interval: Duration,
    /// The configured monitors.
    pub monitors: Vec<Monitor>,
    /// The configured actions.
    pub actions: Vec<Action>,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            monitors: Vec::new(),
            actions: Vec::new(),
        }
    }
}

impl OverloadConfig {
    /// The global downstream connection limit the config sets, if it sets one (weir then
    /// applies its default, see [`crate::overload::default_connection_limit`]).
    pub fn max_active_downstream_connections(&self) -> Option<u64> {
        self.monitors.iter().find_map(|m| match m.kind {
            MonitorKind::GlobalConnections {
                max_active_downstream_connections,
            } => Some(max_active_downstream_connections),
            MonitorKind::FixedHeap { .. } => None,
        })
    }
}

/// One monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// Its name.
    pub name: String,
    /// What it measures.
    pub kind: MonitorKind,
}

/// One action with its triggers.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// Which action.
    pub kind: ActionKind,
    /// Its triggers (at least one).
    pub triggers: Vec<Trigger>,
}

/// One trigger, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trigger {
    /// Its monitor's place in [`OverloadConfig::monitors`].
    pub monitor: usize,
    /// How pressure maps to the action's state.
    pub rule: TriggerRule,
}

/// How a trigger turns a monitor's pressure into an action state in 0..=1 (1: saturated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TriggerRule {
    /// 1 at or above the value, else 0.
    Threshold(f64),
    /// 0 below `scaling`, 1 at or above `saturation`, linear between.
    Scaled {
        /// `scaling_threshold`.
        scaling: f64,
        /// `saturation_threshold`.
        saturation: f64,
    },
}

impl TriggerRule {
    /// The action state this rule gives at `pressure`, as Envoy's triggers compute it.
    pub fn state(self, pressure: f64) -> f64 {
        match self {
            TriggerRule::Threshold(value) => {
                if pressure >= value {
                    1.0
                } else {
                    0.0
                }
            }
            TriggerRule::Scaled {
                scaling,
                saturation,
            } => {
                if pressure >= saturation {
                    1.0
                } else if pressure <= scaling {
                    0.0
                } else {
                    (pressure - scaling) / (saturation - scaling)
                }
            }
        }
    }
}

/// Checks what serde cannot (unique monitor names, each action once, triggers naming a
/// configured monitor, thresholds in 0..=1) and builds the [`OverloadConfig`].
pub fn build(manager: Option<&OverloadManager>) -> Result<OverloadConfig, FieldError> {
    let Some(manager) = manager else {
        return Ok(OverloadConfig::default());
    };
    let path = "overload_manager";
    let refresh_interval = match manager.refresh_interval {
        None => DEFAULT_REFRESH_INTERVAL,
        Some(interval) if interval.get().is_zero() => {
            return Err(FieldError::new(
                format!("{path}.refresh_interval"),
                "must be greater than 0",
            ));
        }
        Some(interval) => interval.get(),
    };
    let mut monitors: Vec<Monitor> = Vec::new();
    for (i, monitor) in manager.resource_monitors.iter().enumerate() {
        if monitors.iter().any(|m| m.name == monitor.name) {
            return Err(FieldError::new(
                format!("{path}.resource_monitors[{i}].name"),
                format!("duplicate resource monitor {:?}", monitor.name),
            ));
        }
        monitors.push(Monitor {
            name: monitor.name.clone(),
            kind: monitor.kind,
        });
    }
    let mut actions: Vec<Action> = Vec::new();
    for (i, action) in manager.actions.iter().enumerate() {
        let action_path = format!("{path}.actions[{i}]");
        if actions.iter().any(|a| a.kind == action.name) {
            return Err(FieldError::new(
                format!("{action_path}.name"),
                format!("duplicate action {:?}", action.name.name()),
            ));
        }
        if action.triggers.is_empty() {
            return Err(FieldError::new(
                format!("{action_path}.triggers"),
                "an action needs at least one trigger",
            ));
        }
        let mut triggers = Vec::new();
        for (j, trigger) in action.triggers.iter().enumerate() {
            triggers.push(trigger_of(
                trigger,
                &monitors,
                &format!("{action_path}.triggers[{j}]"),
            )?);
        }
        actions.push(Action {
            kind: action.name,
            triggers,
        });
    }
    Ok(OverloadConfig {
        refresh_interval,
        monitors,
        actions,
    })
}

fn trigger_of(
    trigger: &RawTrigger,
    monitors: &[Monitor],
    path: &str,
) -> Result<Trigger, FieldError> {
    let monitor = monitors
        .iter()
        .position(|m| m.name == trigger.name)
        .ok_or_else(|| {
            FieldError::new(
                format!("{path}.name"),
                format!(
                    "{:?} is not one of overload_manager.resource_monitors",
                    trigger.name
                ),
            )
        })?;
    let fraction = |value: f64, field: &str| {
        if (0.0..=1.0).contains(&value) {
            Ok(value)
        } else {
            Err(FieldError::new(
                format!("{path}.{field}"),
                format!("must be between 0 and 1, got {value}"),
            ))
        }
    };
    let rule = match (trigger.threshold, trigger.scaled) {
        (Some(threshold), None) => {
            TriggerRule::Threshold(fraction(threshold.value, "threshold.value")?)
        }
        (None, Some(scaled)) => {
            let scaling = fraction(scaled.scaling_threshold, "scaled.scaling_threshold")?;
            let saturation = fraction(scaled.saturation_threshold, "scaled.saturation_threshold")?;
            if scaling >= saturation {
                return Err(FieldError::new(
                    format!("{path}.scaled"),
                    "scaling_threshold must be below saturation_threshold",
                ));
            }
            TriggerRule::Scaled {
                scaling,
                saturation,
            }
        }
        _ => {
            return Err(FieldError::new(
                path.to_string(),
                "a trigger needs exactly one of `threshold` and `scaled`",
            ));
        }
    };
    Ok(Trigger { monitor, rule })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `overload_manager` of a config file holding only it, read as the whole file is.
    fn load(overload: &str) -> Result<OverloadConfig, crate::config::ConfigError> {
        let text = format!("overload_manager:\n{overload}");
        let bootstrap = crate::config::parse(&text).map_err(|e| e.in_file("test.yaml"))?;
        build(bootstrap.overload_manager.as_ref()).map_err(|e| e.in_file("test.yaml"))
    }

    #[test]
    fn reads_envoys_shape() {
        let config = load(
            r#"
  refresh_interval: 0.25s
  resource_monitors:
    - name: envoy.resource_monitors.global_downstream_max_connections
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
        max_active_downstream_connections: 10
    - name: envoy.resource_monitors.fixed_heap
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig
        max_heap_size_bytes: "2147483648"
  actions:
    - name: envoy.overload_actions.stop_accepting_requests
      triggers:
        - name: envoy.resource_monitors.fixed_heap
          threshold: {value: 0.95}
    - name: envoy.overload_actions.disable_http_keepalive
      triggers:
        - name: envoy.resource_monitors.fixed_heap
          scaled: {scaling_threshold: 0.8, saturation_threshold: 0.9}
"#,
        )
        .unwrap();
        assert_eq!(config.refresh_interval, Duration::from_millis(250));
        assert_eq!(config.max_active_downstream_connections(), Some(10));
        assert_eq!(
            config.monitors[1].kind,
            MonitorKind::FixedHeap {
                max_heap_size_bytes: 2_147_483_648
            }
        );
        assert_eq!(config.actions.len(), 2);
        assert_eq!(config.actions[0].triggers[0].monitor, 1);
        assert_eq!(
            config.actions[1].triggers[0].rule,
            TriggerRule::Scaled {
                scaling: 0.8,
                saturation: 0.9
            }
        );
    }

    #[test]
    fn absent_means_defaults() {
        let bootstrap = crate::config::parse("{}").unwrap();
        let config = build(bootstrap.overload_manager.as_ref()).unwrap();
        assert_eq!(config, OverloadConfig::default());
        assert_eq!(config.refresh_interval, Duration::from_secs(1));
        assert_eq!(config.max_active_downstream_connections(), None);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "  resource_monitors:\n    - name: envoy.resource_monitors.injected_resource\n      typed_config: {}\n",
                "overload_manager.resource_monitors[0].name",
            ),
            (
                "  resource_monitors:\n    - name: envoy.resource_monitors.fixed_heap\n      typed_config: {\"@type\": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig, max_heap_size_bytes: 0}\n",
                "overload_manager.resource_monitors[0].typed_config.max_heap_size_bytes",
            ),
            (
                "  resource_monitors:\n    - name: envoy.resource_monitors.fixed_heap\n      typed_config: {\"@type\": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig, max_active_downstream_connections: 3}\n",
                "overload_manager.resource_monitors[0].typed_config.@type",
            ),
            (
                "  actions:\n    - name: envoy.overload_actions.shrink_heap\n      triggers: []\n",
                "overload_manager.actions[0].name",
            ),
            (
                "  resource_monitors: []\n  actions:\n    - name: envoy.overload_actions.stop_accepting_requests\n      triggers: [{name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.9}}]\n",
                "overload_manager.actions[0].triggers[0].name",
            ),
            (
                "  resource_monitors:\n    - name: envoy.resource_monitors.fixed_heap\n      typed_config: {\"@type\": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig, max_heap_size_bytes: 10}\n  actions:\n    - name: envoy.overload_actions.stop_accepting_requests\n      triggers: [{name: envoy.resource_monitors.fixed_heap, threshold: {value: 1.5}}]\n",
                "overload_manager.actions[0].triggers[0].threshold.value",
            ),
            ("  loadshed_points: []\n", "overload_manager"),
        ];
        for (overload, path) in cases {
            let error = load(overload).expect_err(overload);
            assert!(
                error.path.starts_with(path),
                "{overload}: expected the error at {path}, got {error}"
            );
        }
    }

    #[test]
    fn triggers_follow_envoy() {
        let threshold = TriggerRule::Threshold(0.9);
        assert_eq!(threshold.state(0.89), 0.0);
        assert_eq!(threshold.state(0.9), 1.0);
        let scaled = TriggerRule::Scaled {
            scaling: 0.5,
            saturation: 0.9,
        };
        assert_eq!(scaled.state(0.4), 0.0);
        assert!((scaled.state(0.7) - 0.5).abs() < 1e-9);
        assert_eq!(scaled.state(0.95), 1.0);
    }
}
