//! Typical xDS resources built from envoy-types' generated types, for [`crate::xds_server`],
//! and the bootstrap that points Envoy or weir at that server over ADS.
//!
//! The resources are what a control plane serves a gateway: a listener whose HTTP connection
//! manager takes its routes from RDS over ADS, a route configuration sending a prefix to a
//! cluster, a cluster whose endpoints come from EDS over ADS, and the endpoints.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, Http2ProtocolOptions,
    SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions,
};
use envoy_types::pb::google::protobuf::Duration;
use serde_json::{Value, json};
use std::net::SocketAddr;

pub use crate::xds_server::any;

/// The name of the control plane's static cluster in [`ads_bootstrap`].
pub const XDS_CLUSTER: &str = "xds_cluster";

/// `{ads: {}, resource_api_version: V3}`: resources of this kind come over the ADS stream.
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..ConfigSource::default()
    }
}

/// A socket address.
pub fn address(addr: SocketAddr) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(addr.port()))),
            ..SocketAddress::default()
        })),
    }
}

/// A listener `name` on 127.0.0.1:`port` whose HTTP connection manager (stat prefix `name`)
/// takes route configuration `route_config_name` from RDS over ADS, with the router filter.
pub fn listener_with_rds(name: &str, port: u16, route_config_name: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route_config_name.to_owned(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(ConfigType::TypedConfig(any(&Router::default()))),
            ..HttpFilter::default()
        }],
        ..HttpConnectionManager::default()
    };
    listener_with_hcm(name, port, &hcm)
}

/// A listener `name` on 127.0.0.1:`port` with one filter chain: the connection manager
/// `hcm`.
pub fn listener_with_hcm(name: &str, port: u16, hcm: &HttpConnectionManager) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(address(SocketAddr::from(([127, 0, 0, 1], port)))),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(any(hcm))),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}

/// A route configuration `name` with one virtual host for every domain, sending paths
/// starting with `prefix` to `cluster`.
pub fn route_configuration(name: &str, prefix: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: "all".to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix(prefix.to_owned())),
                    ..RouteMatch::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_owned())),
                    ..RouteAction::default()
                })),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    }
}

/// A cluster `name` of type EDS whose endpoints come over ADS (under its own name), with a
/// 1 s connect timeout.
pub fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: String::new(),
        }),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Cluster::default()
    }
}

/// The endpoints of `cluster_name`: one locality with `addrs`.
pub fn load_assignment(cluster_name: &str, addrs: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: addrs
                .iter()
                .map(|addr| LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(address(*addr)),
                        ..Endpoint::default()
                    })),
                    ..LbEndpoint::default()
                })
                .collect(),
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    }
}

/// A STATIC cluster `name` with one host speaking HTTP/2 in the clear, as a control plane's
/// cluster is (`typed_extension_protocol_options` with explicit HTTP/2).
pub fn static_h2_cluster(name: &str, addr: SocketAddr) -> Cluster {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..HttpProtocolOptions::default()
    };
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        load_assignment: Some(load_assignment(name, &[addr])),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            any(&options),
        )]
        .into_iter()
        .collect(),
        ..Cluster::default()
    }
}

/// The ADS stream's form in a bootstrap: `api_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdsApi {
    /// `GRPC`: state-of-the-world.
    Grpc,
    /// `DELTA_GRPC`: incremental.
    DeltaGrpc,
}

impl AdsApi {
    /// Both forms, for tests that run each.
    pub const BOTH: [AdsApi; 2] = [AdsApi::Grpc, AdsApi::DeltaGrpc];

    /// Its `api_type` value.
    pub fn api_type(self) -> &'static str {
        match self {
            AdsApi::Grpc => "GRPC",
            AdsApi::DeltaGrpc => "DELTA_GRPC",
        }
    }
}

/// The control plane's static cluster as bootstrap JSON: [`XDS_CLUSTER`], STATIC, one host,
/// HTTP/2 in the clear.
pub fn xds_cluster_json(xds: SocketAddr) -> Value {
    json!({
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": xds.ip().to_string(), "port_value": xds.port()
            }}}}]}]
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        }
    })
}

/// A bootstrap (Envoy's field names; weir reads the same) that takes listeners and clusters
/// from the control plane at `xds` over ADS in form `api`, as node `node_id` (cluster
/// `weir-tests`), with the admin on 127.0.0.1:`admin_port` and `initial_fetch_timeout` 5 s.
/// Static listeners or clusters can be added to `static_resources` afterwards.
pub fn ads_bootstrap(node_id: &str, admin_port: u16, xds: SocketAddr, api: AdsApi) -> Value {
    let ads_source = json!({
        "ads": {},
        "resource_api_version": "V3",
        "initial_fetch_timeout": "5s"
    });
    json!({
        "node": {
            "id": node_id,
            "cluster": "weir-tests",
            "metadata": {"suite": "xds"}
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api.api_type(),
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]
            },
            "lds_config": ads_source,
            "cds_config": ads_source
        },
        "static_resources": {
            "listeners": [],
            "clusters": [xds_cluster_json(xds)]
        }
    })
}

/// A proxy-wasm plugin config named `name` (its root and VM id too) running the module at
/// `module` from a local file with plugin `configuration`, as both Envoy and weir take it.
pub fn local_wasm_plugin(
    name: &str,
    module: &std::path::Path,
    configuration: &str,
) -> envoy_types::pb::envoy::extensions::wasm::v3::PluginConfig {
    use envoy_types::pb::envoy::config::core::v3::{
        AsyncDataSource, DataSource, async_data_source, data_source,
    };
    use envoy_types::pb::envoy::extensions::wasm::v3::{PluginConfig, VmConfig, plugin_config};
    use envoy_types::pb::google::protobuf::StringValue;
    PluginConfig {
        name: name.into(),
        root_id: name.into(),
        configuration: Some(crate::xds_server::any(&StringValue {
            value: configuration.into(),
        })),
        vm: Some(plugin_config::Vm::VmConfig(VmConfig {
            vm_id: name.into(),
            runtime: "envoy.wasm.runtime.v8".into(),
            code: Some(AsyncDataSource {
                specifier: Some(async_data_source::Specifier::Local(DataSource {
                    specifier: Some(data_source::Specifier::Filename(
                        module.display().to_string(),
                    )),
                    ..DataSource::default()
                })),
            }),
            ..VmConfig::default()
        })),
        ..PluginConfig::default()
    }
}
