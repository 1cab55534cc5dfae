//! Metrics: the failure counter of every plugin, and the metrics modules define
//! (`proxy_define_metric`), exported on `/stats/prometheus`.
//!
//! A module's metric named `n` becomes the family `weir_wasm_<n>` (characters Prometheus does
//! not allow become `_`), shared by every worker's VM of every plugin that defines the name.

use crate::stats::Stats;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use weir_abi::{MetricType, Status};

/// `weir_wasm_vm_failures_total{plugin}`: traps, deadlines and memory limits, per plugin.
pub fn vm_failures(plugin: &str) -> IntCounter {
    static FAMILY: LazyLock<IntCounterVec> = LazyLock::new(|| {
        crate::stats::register_counter(
            Stats::global().registry(),
            "weir_wasm_vm_failures_total",
            "Calls into a Wasm plugin that trapped, ran past their deadline or memory limit.",
            &["plugin"],
        )
    });
    FAMILY.with_label_values(&[plugin])
}

/// `weir_wasm_service_restarts_total{service}`: times a bootstrap Wasm service's VM was
/// started again after it failed (see [`super::service`]).
pub fn service_restarts(service: &str) -> IntCounter {
    static FAMILY: LazyLock<IntCounterVec> = LazyLock::new(|| {
        crate::stats::register_counter(
            Stats::global().registry(),
            "weir_wasm_service_restarts_total",
            "Restarts of a bootstrap Wasm service's VM after it failed.",
            &["service"],
        )
    });
    FAMILY.with_label_values(&[service])
}

/// One metric a module defined.
pub enum PluginMetric {
    /// A counter.
    Counter(IntCounter),
    /// A gauge.
    Gauge(IntGauge),
    /// A histogram.
    Histogram(Histogram),
}

impl PluginMetric {
    /// Adds `delta` (counters ignore negative deltas; histograms do not increment).
    pub fn increment(&self, delta: i64) -> Result<(), Status> {
        match self {
            PluginMetric::Counter(c) => {
                if delta < 0 {
                    return Err(Status::BadArgument);
                }
                c.inc_by(delta as u64);
            }
            PluginMetric::Gauge(g) => g.add(delta),
            PluginMetric::Histogram(_) => return Err(Status::BadArgument),
        }
        Ok(())
    }

    /// Sets a gauge or counter, or observes a histogram value.
    pub fn record(&self, value: u64) {
        match self {
            PluginMetric::Counter(c) => {
                let current = c.get();
                if value >= current {
                    c.inc_by(value - current);
                }
            }
            PluginMetric::Gauge(g) => g.set(i64::try_from(value).unwrap_or(i64::MAX)),
            PluginMetric::Histogram(h) => h.observe(value as f64),
        }
    }

    /// The current value (a histogram's sample count).
    pub fn get(&self) -> u64 {
        match self {
            PluginMetric::Counter(c) => c.get(),
            PluginMetric::Gauge(g) => u64::try_from(g.get()).unwrap_or(0),
            PluginMetric::Histogram(h) => h.get_sample_count(),
        }
    }
}

static DEFINED: LazyLock<Mutex<HashMap<String, Arc<PluginMetric>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The Prometheus name of a module's metric `name`.
pub fn family_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("weir_wasm_{cleaned}")
}

/// The process-wide metric `name` of kind `kind`, registered on first definition. Defining a
/// name again with another kind is `BadArgument`.
pub fn define(kind: MetricType, name: &str) -> Result<Arc<PluginMetric>, Status> {
    let family = family_name(name);
    let mut defined = DEFINED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(metric) = defined.get(&family) {
        let same = matches!(
            (metric.as_ref(), kind),
            (PluginMetric::Counter(_), MetricType::Counter)
                | (PluginMetric::Gauge(_), MetricType::Gauge)
                | (PluginMetric::Histogram(_), MetricType::Histogram)
        );
        return if same {
            Ok(metric.clone())
        } else {
            Err(Status::BadArgument)
        };
    }
    let help = format!("Wasm plugin metric {name:?}.");
    let registry = Stats::global().registry();
    let metric = match kind {
        MetricType::Counter => {
            let c = IntCounter::new(&family, help).map_err(|_| Status::BadArgument)?;
            registry
                .register(Box::new(c.clone()))
                .map_err(|_| Status::BadArgument)?;
            PluginMetric::Counter(c)
        }
        MetricType::Gauge => {
            let g = IntGauge::new(&family, help).map_err(|_| Status::BadArgument)?;
            registry
                .register(Box::new(g.clone()))
                .map_err(|_| Status::BadArgument)?;
            PluginMetric::Gauge(g)
        }
        MetricType::Histogram => {
            let h = Histogram::with_opts(HistogramOpts::new(&family, help))
                .map_err(|_| Status::BadArgument)?;
            registry
                .register(Box::new(h.clone()))
                .map_err(|_| Status::BadArgument)?;
            PluginMetric::Histogram(h)
        }
    };
    let metric = Arc::new(metric);
    defined.insert(family, metric.clone());
    Ok(metric)
}

/// The compiled-module cache's counters ([`super::module_cache`]).
pub struct CacheStats {
    /// `weir_wasm_cache_hit_total`: modules taken from the cache (nothing compiled).
    pub hit: IntCounter,
    /// `weir_wasm_cache_miss_total`: modules compiled (no entry, or a corrupt one).
    pub miss: IntCounter,
    /// `weir_wasm_cache_corrupt_total`: entries found truncated or altered, deleted and
    /// written again.
    pub corrupt: IntCounter,
    /// `weir_wasm_cache_evictions_total`: entries deleted to keep the cache under its bound.
    pub evictions: IntCounter,
}

/// The cache's counters, registered on first use (so a process that loads a module shows all
/// four, at 0 where nothing happened).
pub fn cache_stats() -> &'static CacheStats {
    static STATS: LazyLock<CacheStats> = LazyLock::new(|| {
        let counter = crate::stats::counter;
        CacheStats {
            hit: counter(
                "weir_wasm_cache_hit_total",
                "Wasm modules taken compiled from the module cache.",
            ),
            miss: counter(
                "weir_wasm_cache_miss_total",
                "Wasm modules compiled: not in the module cache, or their entry was corrupt.",
            ),
            corrupt: counter(
                "weir_wasm_cache_corrupt_total",
                "Module cache entries found truncated or altered (deleted, then rebuilt).",
            ),
            evictions: counter(
                "weir_wasm_cache_evictions_total",
                "Module cache entries deleted to keep the cache under --wasm-cache-max-mb.",
            ),
        }
    });
    &STATS
}
