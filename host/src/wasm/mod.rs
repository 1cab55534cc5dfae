//! The Wasm host: proxy-wasm filters (ABI 0.2.1, 0.2.0, 0.1.0) on wasmtime.
//!
//! - [`engine`]: the one `wasmtime::Engine` of the process, with epoch interruption and the
//!   limits every VM runs under ([`Limits`]);
//! - [`module_cache`]: compiled modules cached on disk by content hash;
//! - [`oci`]: modules pulled from OCI registries (`oci://` references);
//! - [`Plugin`] (`plugin.rs`): one configured filter, its module compiled and linked once;
//! - [`VmSlot`] (`slot.rs`): one worker's VM of a plugin, recreated after a failure, with its
//!   timers, queues and callouts;
//! - `vm.rs`: a Store + Instance and the typed calls into the module's callbacks;
//! - `abi/`: the raw host functions the module imports, by area, separate from the contexts
//!   (`state.rs`, `context.rs`) they act on;
//! - [`PluginHandle`]: a plugin as a config snapshot holds it, with its module's file (hot
//!   reload swaps whole snapshots: see [`crate::reload`]);
//! - [`remote`]: `vm_config.code.remote` modules fetched through a cluster, checked by
//!   sha256 and kept by digest; what a listener does while one cannot be had;
//! - [`service`]: bootstrap Wasm services (`envoy.bootstrap.wasm`), a VM kept running for the
//!   life of the process and restarted after failures;
//! - `callout.rs`: `proxy_http_call` requests sent through the worker's pools;
//! - `shared.rs`, `metrics.rs`, `properties.rs`: process-wide shared data and queues, plugin
//!   metrics, and the properties a module may read.
//!
//! The filter chain that drives HTTP stream contexts lives in [`crate::http::filter_chain`];
//! the one that drives network (L4) contexts in [`crate::tunnel::network_filters`].

mod abi;
mod callout;
pub mod context;
pub mod engine;
pub(crate) mod memory;
mod metrics;
pub mod module_cache;
pub mod oci;
mod plugin;
mod properties;
pub mod remote;
pub mod service;
mod shared;
mod slot;
mod state;
mod vm;

pub use context::{
    HeaderEdit, HeaderPairs, LocalResponse, MapChanges, RouteProps, SharedAddress, StreamEvent,
    StreamInfo,
};
pub use engine::Limits;
pub use plugin::{AbiVersion, NodeInfo, Plugin, PluginHandle, PluginSpec};
pub use slot::{SlotError, StreamHandle, VmSlot, slots_of};
pub use vm::{Direction, Side};

/// Why a plugin could not be loaded or a call into it failed.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The engine could not be created.
    #[error("cannot create the Wasm engine: {0}")]
    Engine(String),
    /// The module is not valid Wasm, or does not compile.
    #[error("the Wasm module does not compile: {0}")]
    Compile(String),
    /// The module is not a proxy-wasm module.
    #[error("not a proxy-wasm module: {0}")]
    NotProxyWasm(String),
    /// Linking or instantiating failed.
    #[error("cannot instantiate the Wasm module: {0}")]
    Instantiate(String),
    /// The module trapped, ran past its deadline or its memory limit.
    #[error("the Wasm module failed: {0}")]
    Trap(String),
    /// The module refused to start (`proxy_on_vm_start` / `proxy_on_configure` returned false).
    #[error("the plugin refused to start: {0} returned false")]
    Refused(&'static str),
}

#[cfg(test)]
pub(crate) mod tests;
