//! `dynamic_resources`: which resources come from a control plane over ADS, and where it is.
//! Its schema and its plain data ([`XdsSpec`]), which `xds` runs.

use std::time::Duration;

/// How the ADS stream speaks: `api_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdsApi {
    /// `GRPC`: state-of-the-world (each response holds every resource of its type).
    #[default]
    StateOfTheWorld,
    /// `DELTA_GRPC`: incremental (responses hold what changed and what was removed).
    Delta,
}

/// `dynamic_resources`, checked: everything the xDS client needs.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsSpec {
    /// `ads_config.grpc_services[0].envoy_grpc.cluster_name`: the static cluster (HTTP/2,
    /// optionally TLS) the control plane is reached through.
    pub ads_cluster: String,
    /// `ads_config.api_type`.
    pub api: AdsApi,
    /// `lds_config` names ADS: listeners come from the control plane.
    pub lds: bool,
    /// `cds_config` names ADS: clusters come from the control plane.
    pub cds: bool,
    /// The longest the first response of a type is waited for before weir goes on without it
    /// (`initial_fetch_timeout` of the config source; Envoy's default 15 s; zero: forever).
    pub initial_fetch_timeout: Duration,
    /// `node.id`.
    pub node_id: String,
    /// `node.cluster`.
    pub node_cluster: String,
    /// `node.metadata`, as JSON (a `google.protobuf.Struct`).
    pub node_metadata: serde_json::Value,
}
