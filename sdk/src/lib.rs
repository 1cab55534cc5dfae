//! weir's SDK for writing proxy-wasm filters in Rust.
//!
//! Filters target proxy-wasm ABI 0.2.1 exactly, so a module built with this SDK runs in weir
//! and in Envoy. Every ABI number and the header-map wire format come from [`weir_abi`], the
//! crate weir's host uses too.
//!
//! A filter implements [`RootContext`] (per plugin configuration) and [`HttpContext`] or
//! [`StreamContext`] (per stream), registers its root with [`main!`], and calls the host
//! through [`hostcalls`] (or the shortcuts re-exported here). Build it as a `cdylib` for
//! `wasm32-wasip1`:
//!
//! ```ignore
//! use weir_sdk::{Action, HttpContext, RootContext, hostcalls, MapType};
//!
//! struct Root;
//! impl RootContext for Root {
//!     fn create_http_context(&mut self, _id: u32) -> Option<Box<dyn HttpContext>> {
//!         Some(Box::new(Stamp))
//!     }
//! }
//!
//! struct Stamp;
//! impl HttpContext for Stamp {
//!     fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
//!         let _ = hostcalls::replace_map_value(MapType::HttpResponseHeaders, "x-stamp", b"1");
//!         Action::Continue
//!     }
//! }
//!
//! weir_sdk::main!(|_root_id| Box::new(Root));
//! ```
//!
//! Off wasm32 the crate still builds, for `cargo test` of a filter on the developer's machine:
//! host calls go to [`testing::Host`], a host in memory a test installs (without one they
//! return [`Status::Unimplemented`]).

#![warn(missing_docs)]

mod dispatcher;
pub mod error;
#[cfg(target_arch = "wasm32")]
mod exports;
pub mod hostcalls;
pub mod log;
pub mod metric;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod traits;

pub use error::{Error, Result};
pub use traits::{HttpContext, RootContext, StreamContext};
pub use weir_abi::{
    self as abi, Action, BufferType, LogLevel, MapType, MetricType, PeerType, Status, StreamType,
};

/// The bytes of `vm_config.configuration`; call it from [`RootContext::on_vm_start`]. Empty
/// when there is none.
pub fn vm_configuration() -> Result<Vec<u8>> {
    Ok(hostcalls::get_buffer(BufferType::VmConfiguration, 0, usize::MAX)?.unwrap_or_default())
}

/// The bytes of the plugin's `configuration` (for Envoy's `StringValue`, the string); call it
/// from [`RootContext::on_configure`]. Empty when there is none.
pub fn plugin_configuration() -> Result<Vec<u8>> {
    Ok(hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)?.unwrap_or_default())
}

/// The plugin's `configuration` parsed by `parse`, for [`RootContext::on_configure`]. A read
/// or parse error is logged as `"{filter}: bad configuration: {error}"` and gives `None`:
/// return false from `on_configure` then, and the host refuses the configuration.
pub fn parsed_plugin_configuration<T, E: core::fmt::Display>(
    filter: &str,
    parse: impl FnOnce(&[u8]) -> core::result::Result<T, E>,
) -> Option<T> {
    let parsed = plugin_configuration()
        .map_err(|e| e.to_string())
        .and_then(|bytes| parse(&bytes).map_err(|e| e.to_string()));
    match parsed {
        Ok(config) => Some(config),
        Err(e) => {
            log::error(&format!("{filter}: bad configuration: {e}"));
            None
        }
    }
}

/// Registers the filter: `$new_root` builds the root context for a root context id (one per
/// plugin configuration in each VM). Use it once, at the top level of the filter crate.
///
/// ```ignore
/// weir_sdk::main!(|root_id| Box::new(MyRoot::new(root_id)));
/// ```
///
/// It defines the `__weir_sdk_new_root` symbol the SDK's `proxy_on_context_create` export
/// links against; a module without it fails to load (an unresolved import), loudly.
#[macro_export]
macro_rules! main {
    ($new_root:expr $(,)?) => {
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub fn __weir_sdk_new_root(root_id: u32) -> ::std::boxed::Box<dyn $crate::RootContext> {
            let new_root: fn(u32) -> ::std::boxed::Box<dyn $crate::RootContext> = $new_root;
            new_root(root_id)
        }
    };
}

/// Declares that the filter reads no body: it exports the [`abi::names::HEADERS_ONLY`]
/// marker. Use it once, at the top level of a filter crate whose [`HttpContext`] implements
/// no body callback.
///
/// The SDK exports every callback whatever a filter implements, so without the marker a host
/// cannot tell a headers-only filter from one that reads bodies. weir reads it to keep the
/// payload of an upgraded stream (WebSocket, CONNECT) on its fast path (kernel splice or a
/// plain copy) where no filter of the upgrade's chain wants it; other hosts ignore it. A
/// filter that declares it and implements body callbacks anyway still gets ordinary request
/// and response bodies, but not the payload after an upgrade.
///
/// ```ignore
/// weir_sdk::main!(|_root_id| Box::new(MyRoot));
/// weir_sdk::headers_only!();
/// ```
#[macro_export]
macro_rules! headers_only {
    () => {
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn weir_headers_only() {}
    };
}
