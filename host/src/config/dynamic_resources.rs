//! `dynamic_resources`: which resources come from a control plane over ADS, and where it is.
//! Its schema and its plain data ([`XdsSpec`]), which `xds` runs.
//!
//! weir speaks ADS only (one gRPC stream, state-of-the-world or delta, for every type): a
//! config source must be `ads: {}`; a file path, REST or a gRPC source of its own is a config
//! error naming the field.

use super::FieldError;
use super::bootstrap::Node;
use super::cluster_spec::{ClusterSpec, UpstreamProtocol};
use super::common::{EmptyConfig, HeaderValue};
use super::duration::ConfigDuration;
use serde::Deserialize;
use std::time::Duration;

/// Envoy's `initial_fetch_timeout` when a config source gives none.
pub const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// `dynamic_resources` of the bootstrap.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DynamicResources {
    /// Where listeners come from (LDS): `ads: {}`.
    #[serde(default)]
    pub lds_config: Option<ConfigSource>,
    /// Where clusters come from (CDS): `ads: {}`.
    #[serde(default)]
    pub cds_config: Option<ConfigSource>,
    /// The control plane the ADS stream goes to.
    #[serde(default)]
    pub ads_config: Option<ApiConfigSource>,
}

/// `config.core.v3.ConfigSource`: where a resource comes from. weir takes `ads` only.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigSource {
    /// Over the ADS stream of `dynamic_resources.ads_config`.
    #[serde(default)]
    pub ads: Option<EmptyConfig>,
    /// The resources' API version: V3 (AUTO, the default, means V3).
    #[serde(default)]
    pub resource_api_version: ApiVersion,
    /// How long the first response is waited for before going on without it (Envoy's
    /// default 15 s; zero: forever).
    #[serde(default)]
    pub initial_fetch_timeout: Option<ConfigDuration>,
    /// A file watched for resources: not supported.
    #[serde(default)]
    pub path: Option<serde_json::Value>,
    /// A file watched for resources: not supported.
    #[serde(default)]
    pub path_config_source: Option<serde_json::Value>,
    /// A REST or gRPC source of its own: not supported.
    #[serde(default)]
    pub api_config_source: Option<serde_json::Value>,
    /// The source of the resource that names this one: not supported.
    #[serde(default, rename = "self")]
    pub self_source: Option<serde_json::Value>,
}

impl ConfigSource {
    /// How long the first response of what comes from this source is waited for before
    /// weir goes on without it: `initial_fetch_timeout`, Envoy's default 15 s where unset;
    /// zero: forever.
    pub fn fetch_timeout(&self) -> Duration {
        self.initial_fetch_timeout
            .map_or(DEFAULT_INITIAL_FETCH_TIMEOUT, ConfigDuration::get)
    }

    /// [`ConfigSource::fetch_timeout`] of `source`, Envoy's default without one.
    pub fn fetch_timeout_of(source: Option<&ConfigSource>) -> Duration {
        source.map_or(DEFAULT_INITIAL_FETCH_TIMEOUT, ConfigSource::fetch_timeout)
    }
}

/// `config.core.v3.ApiVersion`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum ApiVersion {
    /// Unset.
    #[default]
    AUTO,
    /// The v2 API, which Envoy no longer speaks.
    V2,
    /// The v3 API.
    V3,
}

/// `config.core.v3.ApiConfigSource`, as `ads_config`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiConfigSource {
    /// GRPC (state-of-the-world) or DELTA_GRPC (incremental).
    #[serde(default)]
    pub api_type: Option<ApiType>,
    /// V3 (AUTO, the default, means V3 as in Envoy 1.40).
    #[serde(default)]
    pub transport_api_version: ApiVersion,
    /// The control plane: one `envoy_grpc` service.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub grpc_services: Vec<GrpcService>,
    /// Send the node only in the first request of a stream (Envoy's default: false, every
    /// request carries it).
    #[serde(default)]
    pub set_node_on_first_message_only: bool,
}

/// `api_type` of an `ApiConfigSource`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum ApiType {
    /// Removed from Envoy.
    DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE,
    /// REST polling: not supported.
    REST,
    /// gRPC, state-of-the-world.
    GRPC,
    /// gRPC, incremental.
    DELTA_GRPC,
    /// xdstp's aggregated state-of-the-world: not supported.
    AGGREGATED_GRPC,
    /// xdstp's aggregated delta: not supported.
    AGGREGATED_DELTA_GRPC,
}

/// `config.core.v3.GrpcService`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GrpcService {
    /// The control plane through one of the bootstrap's static clusters.
    #[serde(default)]
    pub envoy_grpc: Option<EnvoyGrpc>,
    /// Google's gRPC client: not supported.
    #[serde(default)]
    pub google_grpc: Option<serde_json::Value>,
    /// Metadata (headers) sent on the stream, e.g. a token for the control plane.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub initial_metadata: Vec<HeaderValue>,
}

/// `envoy_grpc` of a `GrpcService`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EnvoyGrpc {
    /// The static cluster (HTTP/2) the control plane is reached through.
    pub cluster_name: String,
    /// The `:authority` of the stream (default: the cluster's name).
    #[serde(default)]
    pub authority: Option<String>,
}

/// `node.locality`.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    /// Region.
    #[serde(default)]
    pub region: String,
    /// Zone.
    #[serde(default)]
    pub zone: String,
    /// Sub-zone.
    #[serde(default)]
    pub sub_zone: String,
}

impl ConfigSource {
    /// Checks that the source at `path` is ADS (the one weir supports), and its API version.
    pub fn check_ads(&self, path: &str) -> Result<(), FieldError> {
        let others = [
            ("path", self.path.is_some()),
            ("path_config_source", self.path_config_source.is_some()),
            ("api_config_source", self.api_config_source.is_some()),
            ("self", self.self_source.is_some()),
        ];
        if let Some((field, _)) = others.iter().find(|(_, set)| *set) {
            return Err(FieldError::new(
                format!("{path}.{field}"),
                "weir takes resources over ADS only: write `ads: {}` and name the control plane in dynamic_resources.ads_config",
            ));
        }
        if self.ads.is_none() {
            return Err(FieldError::new(
                path,
                "weir takes resources over ADS only: write `ads: {}` and name the control plane in dynamic_resources.ads_config",
            ));
        }
        if self.resource_api_version == ApiVersion::V2 {
            return Err(FieldError::new(
                format!("{path}.resource_api_version"),
                "the v2 xDS API is not supported; use V3",
            ));
        }
        Ok(())
    }
}

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
    /// How long the first LDS response is waited for before weir goes on without it
    /// (`lds_config.initial_fetch_timeout`, Envoy's default 15 s; zero: forever).
    pub lds_fetch_timeout: Duration,
    /// The same for CDS (`cds_config.initial_fetch_timeout`).
    pub cds_fetch_timeout: Duration,
    /// `node.id`.
    pub node_id: String,
    /// `node.cluster`.
    pub node_cluster: String,
    /// `node.metadata`, as JSON (a `google.protobuf.Struct`).
    pub node_metadata: serde_json::Value,
    /// `node.locality`, if given.
    pub node_locality: Option<Locality>,
    /// `node.user_agent_name` (default `weir`).
    pub node_user_agent_name: String,
    /// `node.user_agent_version` (default: weir's version).
    pub node_user_agent_version: String,
    /// `ads_config.set_node_on_first_message_only`.
    pub set_node_on_first_message_only: bool,
    /// `ads_config.grpc_services[0].envoy_grpc.authority`: the stream's `:authority`
    /// (default: the cluster's name).
    pub ads_authority: Option<String>,
    /// `ads_config.grpc_services[0].initial_metadata`: (name, value) pairs sent as headers
    /// on the stream.
    pub initial_metadata: Vec<(String, String)>,
}

/// Reads `dynamic_resources` (with `node`) into the [`XdsSpec`] the client runs: `None` when
/// nothing comes over xDS. `clusters` are the static clusters, one of which must be the
/// control plane's, speaking HTTP/2.
pub fn xds_spec(
    dynamic: Option<&DynamicResources>,
    node: Option<&Node>,
    clusters: &[std::sync::Arc<ClusterSpec>],
) -> Result<Option<XdsSpec>, FieldError> {
    let Some(dynamic) = dynamic else {
        return Ok(None);
    };
    let sources = [
        ("dynamic_resources.lds_config", dynamic.lds_config.as_ref()),
        ("dynamic_resources.cds_config", dynamic.cds_config.as_ref()),
    ];
    for (path, source) in sources {
        if let Some(source) = source {
            source.check_ads(path)?;
        }
    }
    let Some(ads) = &dynamic.ads_config else {
        if let Some((path, _)) = sources.iter().find(|(_, source)| source.is_some()) {
            return Err(FieldError::new(
                format!("{path}.ads"),
                "names ADS, but dynamic_resources.ads_config does not name the control plane",
            ));
        }
        return Ok(None);
    };
    let path = "dynamic_resources.ads_config";
    let api = match ads.api_type {
        Some(ApiType::GRPC) => AdsApi::StateOfTheWorld,
        Some(ApiType::DELTA_GRPC) => AdsApi::Delta,
        Some(other) => {
            return Err(FieldError::new(
                format!("{path}.api_type"),
                format!("{other:?} is not supported; weir speaks ADS as GRPC or DELTA_GRPC"),
            ));
        }
        None => {
            return Err(FieldError::new(
                format!("{path}.api_type"),
                "set GRPC (state-of-the-world) or DELTA_GRPC (incremental)",
            ));
        }
    };
    if ads.transport_api_version == ApiVersion::V2 {
        return Err(FieldError::new(
            format!("{path}.transport_api_version"),
            "the v2 xDS transport is not supported; use V3",
        ));
    }
    let [service] = ads.grpc_services.as_slice() else {
        return Err(FieldError::new(
            format!("{path}.grpc_services"),
            "name exactly one control plane (one envoy_grpc service)",
        ));
    };
    let service_path = format!("{path}.grpc_services[0]");
    if service.google_grpc.is_some() {
        return Err(FieldError::new(
            format!("{service_path}.google_grpc"),
            "not supported; use envoy_grpc with a static cluster",
        ));
    }
    let Some(envoy_grpc) = &service.envoy_grpc else {
        return Err(FieldError::new(
            format!("{service_path}.envoy_grpc"),
            "name the control plane's static cluster in envoy_grpc.cluster_name",
        ));
    };
    let cluster_path = format!("{service_path}.envoy_grpc.cluster_name");
    let Some(cluster) = clusters.iter().find(|c| c.name == envoy_grpc.cluster_name) else {
        let names: super::cluster_names::ClusterNames =
            clusters.iter().map(|c| c.name.as_str()).collect();
        return Err(FieldError::new(
            cluster_path,
            format!(
                "unknown cluster {:?}; the control plane is reached through a static cluster; defined clusters: {names:?}",
                envoy_grpc.cluster_name
            ),
        ));
    };
    if cluster.protocol != UpstreamProtocol::Http2 {
        return Err(FieldError::new(
            cluster_path,
            format!(
                "cluster {:?} must speak HTTP/2 for gRPC: give it typed_extension_protocol_options \
                 (envoy.extensions.upstreams.http.v3.HttpProtocolOptions with \
                 explicit_http_config.http2_protocol_options) or http2_protocol_options",
                cluster.name
            ),
        ));
    }
    let mut initial_metadata = Vec::new();
    for (i, header) in service.initial_metadata.iter().enumerate() {
        let key = header.key.to_ascii_lowercase();
        if http::HeaderName::from_bytes(key.as_bytes()).is_err()
            || http::HeaderValue::from_str(&header.value).is_err()
        {
            return Err(FieldError::new(
                format!("{service_path}.initial_metadata[{i}]"),
                "not a valid header name and value",
            ));
        }
        initial_metadata.push((key, header.value.clone()));
    }
    let node = node.cloned().unwrap_or_default();
    let node_metadata = match node.metadata {
        None => serde_json::Value::Object(Default::default()),
        Some(metadata @ serde_json::Value::Object(_)) => metadata,
        Some(_) => {
            return Err(FieldError::new(
                "node.metadata",
                "expected a mapping (a google.protobuf.Struct)",
            ));
        }
    };
    Ok(Some(XdsSpec {
        ads_cluster: envoy_grpc.cluster_name.clone(),
        api,
        lds: dynamic.lds_config.is_some(),
        cds: dynamic.cds_config.is_some(),
        lds_fetch_timeout: ConfigSource::fetch_timeout_of(dynamic.lds_config.as_ref()),
        cds_fetch_timeout: ConfigSource::fetch_timeout_of(dynamic.cds_config.as_ref()),
        node_id: node.id,
        node_cluster: node.cluster,
        node_metadata,
        node_locality: node.locality,
        node_user_agent_name: node.user_agent_name.unwrap_or_else(|| "weir".to_string()),
        node_user_agent_version: node
            .user_agent_version
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
        set_node_on_first_message_only: ads.set_node_on_first_message_only,
        ads_authority: envoy_grpc.authority.clone(),
        initial_metadata,
    }))
}

#[cfg(test)]
mod tests;
