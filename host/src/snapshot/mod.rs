//! The config as the runtime runs it: each validated resource of [`crate::config`] turned
//! into the objects workers use (route tables, access logs, loaded Wasm plugins), assembled
//! into one immutable [`Config`] snapshot that the workers share and a reload swaps whole.
//!
//! [`crate::config`] reads Envoy's YAML into checked, plain data and imports nothing above
//! it; this module is where that data meets the runtime: [`bootstrap`] assembles the whole
//! snapshot, [`listener`] and [`http_manager`] a listener with its connection manager (its
//! `route::RouteTable` and `access_log::AccessLogs`), [`wasm`] the plugins
//! (`wasm::PluginHandle`, their modules compiled and started once, so that a broken module
//! is a config error naming its field like any other). [`source`] is the seam every producer
//! of a config goes through: the file, the file watcher and, later, an xDS client.
//!
//! It sits above `config`, `route`, `access_log`, `wasm` and `upstream`, and below the
//! runtime that runs a snapshot (`http`, `listener`, `tunnel`, `reload`, `admin`, `worker`),
//! none of which it imports.

pub mod bootstrap;
pub mod http_manager;
pub mod listener;
pub mod source;
pub mod wasm;

pub use bootstrap::{Config, DumpJson, DynamicDump, DynamicEntry, WasmServiceConfig};
pub use http_manager::{Http10Policy, HttpManagerConfig, UpgradeSetting, http_filters};
pub use listener::{ListenerConfig, TcpListenerConfig, TcpProxyConfig};
pub use source::{ConfigSource, FileSource, Loaded};

use crate::config::{ConfigError, parse, read_text, yaml_limits};
use std::path::Path;

/// Reads and checks the config file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    load_str(&text, &path.display().to_string())
}

/// Reads and checks config `text`; `file` names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    yaml_limits::check(text).map_err(|e| e.in_file(file))?;
    let bootstrap = parse(text).map_err(|e| e.in_file(file))?;
    let dump =
        serde_yaml_ng::from_str::<serde_json::Value>(text).unwrap_or(serde_json::Value::Null);
    bootstrap::build(bootstrap, Vec::new(), file, dump).map_err(|e| e.in_file(file))
}

/// Checks a bootstrap already read (the xDS assembly's: the file's static resources with the
/// control plane's listeners), as [`load_str`] checks one read from text, with
/// `dynamic_clusters` (the control plane's, already read into specs) after the static ones;
/// `file` names it in errors.
pub fn load_bootstrap(
    bootstrap: crate::config::bootstrap::Bootstrap,
    dynamic_clusters: Vec<std::sync::Arc<crate::config::cluster_spec::ClusterSpec>>,
    file: &str,
    dump: serde_json::Value,
) -> Result<Config, crate::config::FieldError> {
    bootstrap::build(bootstrap, dynamic_clusters, file, dump)
}

#[cfg(test)]
mod hostile_tests;

#[cfg(test)]
mod sidecar_tests;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod xds_tests;
