//! The data of one VM's store: the plugin it runs, its limits, its contexts, and what host
//! functions leave for the host to act on after a callback returns.

use super::context::{CallResponse, PendingCall, StreamData};
use super::plugin::PluginInfo;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::StoreLimits;

/// `T` of `Store<T>` for a proxy-wasm VM.
pub struct HostState {
    /// The plugin's names and configuration bytes.
    pub plugin: Arc<PluginInfo>,
    /// The memory limit (wasmtime's `ResourceLimiter`).
    pub limits: StoreLimits,
    /// The root context's id.
    pub root_id: u32,
    /// The context host calls act on (set by the host before each callback, and by the module
    /// with `proxy_set_effective_context`).
    pub effective_context: u32,
    /// HTTP contexts alive in this VM.
    pub streams: HashMap<u32, StreamData>,
    /// The callout answer being delivered, if any.
    pub call_response: Option<CallResponse>,
    /// Callouts asked for and not started yet.
    pub pending_calls: Vec<PendingCall>,
    /// Next callout token.
    pub next_token: u32,
    /// `proxy_set_tick_period_milliseconds`; `None` = no ticks.
    pub tick_period: Option<Duration>,
    /// Set when `tick_period` changed and the timer must be restarted.
    pub tick_changed: bool,
    /// Queues this VM registered (ids), whose `proxy_on_queue_ready` it receives.
    pub owned_queues: Vec<u32>,
    /// Metric ids this VM defined, resolved to the process-wide metrics.
    pub metrics: Vec<Arc<super::metrics::PluginMetric>>,
    /// Properties set on the root context.
    pub root_properties: HashMap<Vec<u8>, Vec<u8>>,
    /// The last log line at critical level (an SDK panic message), for the failure log.
    pub last_critical: Option<String>,
    /// Wakes this VM's queue listener when a queue it owns gets an item.
    pub queue_waker: Option<tokio::sync::mpsc::UnboundedSender<u32>>,
    /// Says whether a cluster exists, for `proxy_http_call` (`None`: any name is taken).
    pub cluster_exists: Option<ClusterCheck>,
    /// The module's exported memory and allocator, resolved once after instantiation: host
    /// calls use them on every request, and a lookup by name (plus the allocator's type
    /// check) each time showed in profiles.
    pub exports: ModuleExports,
}

/// Exports that host functions use, resolved once per instance (see [`HostState::exports`]).
#[derive(Default, Clone)]
pub struct ModuleExports {
    /// `memory`.
    pub memory: Option<wasmtime::Memory>,
    /// `proxy_on_memory_allocate`, else `malloc`, typed `(i32) -> i32`.
    pub allocator: Option<wasmtime::TypedFunc<i32, i32>>,
}

/// Whether a cluster name is configured.
pub type ClusterCheck = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What a VM is connected to on its worker.
#[derive(Default)]
pub struct VmHooks {
    /// Receives the ids of queues the VM registered when items arrive.
    pub queue_waker: Option<tokio::sync::mpsc::UnboundedSender<u32>>,
    /// Checks callout cluster names.
    pub cluster_exists: Option<ClusterCheck>,
}

impl HostState {
    /// A fresh state for `plugin` under a memory limit of `memory_bytes`.
    pub fn new(plugin: Arc<PluginInfo>, memory_bytes: usize) -> HostState {
        HostState {
            plugin,
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .table_elements(super::engine::TABLE_ELEMENTS)
                .instances(1)
                .trap_on_grow_failure(true)
                .build(),
            root_id: 1,
            effective_context: 1,
            streams: HashMap::new(),
            call_response: None,
            pending_calls: Vec::new(),
            next_token: 1,
            tick_period: None,
            tick_changed: false,
            owned_queues: Vec::new(),
            metrics: Vec::new(),
            root_properties: HashMap::new(),
            last_critical: None,
            exports: ModuleExports::default(),
            queue_waker: None,
            cluster_exists: None,
        }
    }

    /// The stream the effective context is, if it is one.
    pub fn effective_stream(&mut self) -> Option<&mut StreamData> {
        self.streams.get_mut(&self.effective_context)
    }
}
