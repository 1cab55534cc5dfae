//! The top of the file (`node`, `admin`, `static_resources`, `bootstrap_extensions`, ...): its
//! schema. `snapshot::bootstrap` reads it, resource by resource, into the whole
//! runtime config.

use super::cluster::Cluster;
use super::common::Address;
use super::listener::Listener;
use super::runtime::LayeredRuntime;
use serde::Deserialize;

/// The top of the file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// `node` identifies this proxy (its id is visible to filters).
    #[serde(default)]
    pub node: Option<Node>,
    /// The admin listener; none when absent.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Listeners and clusters.
    #[serde(default)]
    pub static_resources: StaticResources,
    /// `dynamic_resources`: what comes from a control plane over ADS (see
    /// [`super::dynamic_resources`]).
    #[serde(default)]
    pub dynamic_resources: Option<super::dynamic_resources::DynamicResources>,
    /// `overload_manager` (see [`super::overload`]).
    #[serde(default)]
    pub overload_manager: Option<super::overload::OverloadManager>,
    /// `layered_runtime`: the runtime keys weir reads (see [`LayeredRuntime`]).
    #[serde(default)]
    pub layered_runtime: Option<LayeredRuntime>,
    /// `bootstrap_extensions`: Wasm services (see [`super::service`]).
    #[serde(default)]
    pub bootstrap_extensions: Vec<super::service::BootstrapExtension>,
}

/// `node`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// `node.id`.
    #[serde(default)]
    pub id: String,
    /// `node.cluster`.
    #[serde(default)]
    pub cluster: String,
    /// `node.metadata` (a `google.protobuf.Struct`): sent to the control plane.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// `node.locality`: sent to the control plane.
    #[serde(default)]
    pub locality: Option<super::dynamic_resources::Locality>,
    /// `node.user_agent_name` (default `weir`): sent to the control plane.
    #[serde(default)]
    pub user_agent_name: Option<String>,
    /// `node.user_agent_version` (default weir's version): sent to the control plane.
    #[serde(default)]
    pub user_agent_version: Option<String>,
}

/// `admin`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where the admin listener binds.
    pub address: Address,
    /// A file that logs every admin request in Envoy's default format (Envoy's older
    /// field, deprecated there for `access_log`; `/dev/null` is none).
    #[serde(default)]
    pub access_log_path: Option<String>,
    /// `access_log[]`: Envoy's `AccessLog`s for admin requests, read by `crate::access_log`.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub access_log: Vec<serde_json::Value>,
}

impl Admin {
    /// Every admin logger as an `AccessLog` entry: `access_log_path` (a file logger with the
    /// default format) first, then `access_log[]`.
    pub fn access_logs(&self) -> Vec<serde_json::Value> {
        let path = self
            .access_log_path
            .as_deref()
            .filter(|path| !path.is_empty() && *path != "/dev/null");
        let from_path = path.map(|path| {
            serde_json::json!({
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": path,
                },
            })
        });
        from_path
            .into_iter()
            .chain(self.access_log.iter().cloned())
            .collect()
    }
}

/// `static_resources`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StaticResources {
    /// `listeners[]`.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub listeners: Vec<Listener>,
    /// `clusters[]`.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub clusters: Vec<Cluster>,
}
