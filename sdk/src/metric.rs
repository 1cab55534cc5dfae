//! Counters a filter defines once (in `on_configure`) and adds to from any of its contexts.

use weir_abi::MetricType;

use crate::hostcalls;

/// A counter metric (exported by the host, e.g. on weir's `/stats/prometheus`). One the host
/// refused to define counts nothing: a filter does not fail for its metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter(Option<u32>);

impl Counter {
    /// Defines the counter `name` (by convention `<filter>.<what>`).
    pub fn define(name: &str) -> Counter {
        Counter(hostcalls::define_metric(MetricType::Counter, name).ok())
    }

    /// Adds `delta`; nothing for 0 (or for a delta past `i64::MAX`).
    pub fn add(self, delta: u64) {
        if let (Some(id), Ok(delta)) = (self.0, i64::try_from(delta))
            && delta > 0
        {
            // A failed increment only loses a count.
            let _ = hostcalls::increment_metric(id, delta);
        }
    }
}
