//! The runtime keys weir reads from `layered_runtime` static layers: Envoy's knobs for
//! abusive HTTP/2 and HTTP/3 clients, which Envoy keeps in its runtime rather than in the
//! connection manager's config.

use super::FieldError;
use serde::Deserialize;
use std::time::Duration;

/// `overload.premature_reset_total_stream_count`.
const PREMATURE_RESET_TOTAL: &str = "overload.premature_reset_total_stream_count";
/// `overload.premature_reset_min_stream_lifetime_seconds`.
const PREMATURE_RESET_LIFETIME: &str = "overload.premature_reset_min_stream_lifetime_seconds";
/// `http.max_requests_per_io_cycle`.
const MAX_REQUESTS_PER_IO_CYCLE: &str = "http.max_requests_per_io_cycle";

/// Limits on what one downstream connection may ask of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbuseLimits {
    /// After this many streams on a connection, the connection is closed (GOAWAY) if more
    /// than half of them were reset prematurely (Envoy's default 500).
    pub premature_reset_total: u32,
    /// A stream the client resets before its response began, or within this long of its
    /// start, is a premature reset (Envoy's default 1 s).
    pub premature_reset_lifetime: Duration,
    /// Most new streams one connection may start before it yields its worker to others
    /// (Envoy has no limit by default; weir's default 32 keeps one connection from holding
    /// a worker for a whole read of pipelined frames).
    pub max_requests_per_io_cycle: u32,
}

impl Default for StreamAbuseLimits {
    fn default() -> Self {
        StreamAbuseLimits {
            premature_reset_total: 500,
            premature_reset_lifetime: Duration::from_secs(1),
            max_requests_per_io_cycle: 32,
        }
    }
}

impl StreamAbuseLimits {
    /// Reads the keys weir knows from the static layers of `runtime` (later layers win); the
    /// others are logged once as unused.
    pub fn from_runtime(runtime: Option<&LayeredRuntime>) -> Result<Self, FieldError> {
        let mut limits = StreamAbuseLimits::default();
        let Some(runtime) = runtime else {
            return Ok(limits);
        };
        for (l, layer) in runtime.layers.iter().enumerate() {
            let Some(keys) = &layer.static_layer else {
                continue;
            };
            for (key, value) in keys {
                let path = || format!("layered_runtime.layers[{l}].static_layer.{key}");
                match key.as_str() {
                    PREMATURE_RESET_TOTAL => {
                        limits.premature_reset_total = positive(value).ok_or_else(|| {
                            FieldError::new(path(), "expected a positive integer")
                        })?;
                    }
                    PREMATURE_RESET_LIFETIME => {
                        let seconds = value.as_u64().ok_or_else(|| {
                            FieldError::new(path(), "expected a whole number of seconds")
                        })?;
                        limits.premature_reset_lifetime = Duration::from_secs(seconds);
                    }
                    MAX_REQUESTS_PER_IO_CYCLE => {
                        limits.max_requests_per_io_cycle = positive(value).ok_or_else(|| {
                            FieldError::new(path(), "expected a positive integer")
                        })?;
                    }
                    _ => tracing::info!(key = %key, "runtime key not used by weir"),
                }
            }
        }
        Ok(limits)
    }
}

/// A JSON number (or numeric string, as runtime values are often written) in 1..=u32::MAX.
fn positive(value: &serde_json::Value) -> Option<u32> {
    let n = match value {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    u32::try_from(n).ok().filter(|n| *n > 0)
}

/// `layered_runtime`: Envoy's runtime, of which weir reads the static layers. Their keys are
/// free-form in Envoy; weir acts on the few it knows (premature resets, requests per I/O cycle)
/// and logs the others as unused.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LayeredRuntime {
    /// `layers[]`, later layers overriding earlier ones.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub layers: Vec<RuntimeLayer>,
}

/// `layered_runtime.layers[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeLayer {
    /// The layer's name.
    #[serde(default)]
    pub name: String,
    /// Keys and values given in the file.
    #[serde(default)]
    pub static_layer: Option<serde_json::Map<String, serde_json::Value>>,
    /// The admin layer (`/runtime_modify`): accepted, weir has none, so it stays empty.
    #[serde(default)]
    pub admin_layer: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(yaml: &str) -> LayeredRuntime {
        serde_yaml_ng::from_str(yaml).expect("runtime yaml")
    }

    #[test]
    fn defaults_are_envoys_premature_reset_rule() {
        let limits = StreamAbuseLimits::from_runtime(None).expect("defaults");
        assert_eq!(limits.premature_reset_total, 500);
        assert_eq!(limits.premature_reset_lifetime, Duration::from_secs(1));
    }

    #[test]
    fn later_layers_win_and_unknown_keys_are_ignored() {
        let rt = runtime(
            "layers:\n- name: a\n  static_layer: {overload.premature_reset_total_stream_count: 10, some.other.key: true}\n- name: b\n  static_layer: {overload.premature_reset_total_stream_count: \"20\", http.max_requests_per_io_cycle: 4}\n- name: admin\n  admin_layer: {}\n",
        );
        let limits = StreamAbuseLimits::from_runtime(Some(&rt)).expect("limits");
        assert_eq!(limits.premature_reset_total, 20);
        assert_eq!(limits.max_requests_per_io_cycle, 4);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let rt =
            runtime("layers:\n- name: a\n  static_layer: {http.max_requests_per_io_cycle: 0}\n");
        let error = StreamAbuseLimits::from_runtime(Some(&rt)).expect_err("zero");
        assert!(
            error
                .path
                .ends_with("static_layer.http.max_requests_per_io_cycle"),
            "{error:?}"
        );
    }
}
