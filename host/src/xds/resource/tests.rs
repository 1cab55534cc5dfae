//! Resources built with envoy-types' generated messages, encoded, decoded and read.

use super::*;
use crate::config::ecds::DiscoveredConfig;
use crate::config::http_manager::HttpFilterConfig;
use crate::config::schema::{DiscoveryType, LbPolicyName};
use envoy_types::pb::envoy::config::cluster::v3 as cluster_pb;
use envoy_types::pb::envoy::config::core::v3 as core_pb;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint_pb;
use envoy_types::pb::envoy::config::listener::v3 as listener_pb;
use envoy_types::pb::envoy::config::route::v3 as route_pb;
// A type the descriptor pool knows and weir takes nowhere as an HTTP filter.
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog as NotAnHttpFilter;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm_pb;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;
use prost::Message;

pub(crate) fn socket_address(address: &str, port: u32) -> core_pb::Address {
    core_pb::Address {
        address: Some(core_pb::address::Address::SocketAddress(
            core_pb::SocketAddress {
                address: address.into(),
                port_specifier: Some(core_pb::socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            },
        )),
    }
}

pub(crate) fn ads_source() -> core_pb::ConfigSource {
    core_pb::ConfigSource {
        config_source_specifier: Some(core_pb::config_source::ConfigSourceSpecifier::Ads(
            core_pb::AggregatedConfigSource {},
        )),
        resource_api_version: core_pb::ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub(crate) fn route_configuration(name: &str, cluster: &str) -> route_pb::RouteConfiguration {
    route_pb::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![route_pb::VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![route_pb::Route {
                r#match: Some(route_pb::RouteMatch {
                    path_specifier: Some(route_pb::route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route_pb::route::Action::Route(route_pb::RouteAction {
                    cluster_specifier: Some(route_pb::route_action::ClusterSpecifier::Cluster(
                        cluster.into(),
                    )),
                    timeout: Some(PbDuration {
                        seconds: 0,
                        nanos: 250_000_000,
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(crate) fn router_filter() -> hcm_pb::HttpFilter {
    hcm_pb::HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(hcm_pb::http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    }
}

pub(crate) fn listener(name: &str, hcm: hcm_pb::HttpConnectionManager) -> listener_pb::Listener {
    listener_pb::Listener {
        name: name.into(),
        address: Some(socket_address("127.0.0.1", 10000)),
        filter_chains: vec![listener_pb::FilterChain {
            filters: vec![listener_pb::Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(listener_pb::filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(crate) fn hcm_with(
    routes: hcm_pb::http_connection_manager::RouteSpecifier,
) -> hcm_pb::HttpConnectionManager {
    hcm_pb::HttpConnectionManager {
        stat_prefix: "ingress".into(),
        route_specifier: Some(routes),
        http_filters: vec![router_filter()],
        ..Default::default()
    }
}

pub(crate) fn rds(name: &str) -> hcm_pb::http_connection_manager::RouteSpecifier {
    hcm_pb::http_connection_manager::RouteSpecifier::Rds(hcm_pb::Rds {
        config_source: Some(ads_source()),
        route_config_name: name.into(),
    })
}

pub(crate) fn load_assignment(
    name: &str,
    hosts: &[(&str, u32)],
) -> endpoint_pb::ClusterLoadAssignment {
    endpoint_pb::ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![endpoint_pb::LocalityLbEndpoints {
            lb_endpoints: hosts
                .iter()
                .map(|(address, port)| endpoint_pb::LbEndpoint {
                    host_identifier: Some(endpoint_pb::lb_endpoint::HostIdentifier::Endpoint(
                        endpoint_pb::Endpoint {
                            address: Some(socket_address(address, *port)),
                            ..Default::default()
                        },
                    )),
                    load_balancing_weight: Some(UInt32Value { value: 3 }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(crate) fn eds_cluster(name: &str, service_name: &str) -> cluster_pb::Cluster {
    cluster_pb::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster_pb::cluster::ClusterDiscoveryType::Type(
            cluster_pb::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster_pb::cluster::EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: service_name.into(),
        }),
        connect_timeout: Some(PbDuration {
            seconds: 2,
            nanos: 0,
        }),
        lb_policy: cluster_pb::cluster::LbPolicy::LeastRequest as i32,
        ..Default::default()
    }
}

fn decode_error(kind: ResourceType, bytes: &[u8]) -> FieldError {
    match decode(kind, bytes) {
        Ok(decoded) => panic!("{kind:?} {} was read", decoded.name),
        Err(error) => error,
    }
}

fn hcm_of(listener: &Listener) -> &crate::config::http_manager::HttpConnectionManager {
    listener
        .http_managers()
        .next()
        .expect("an HTTP connection manager")
}

#[test]
fn a_listener_with_an_inline_route_table_reads_as_the_file_would() {
    let pb = listener(
        "ingress",
        hcm_with(
            hcm_pb::http_connection_manager::RouteSpecifier::RouteConfig(route_configuration(
                "local", "backend",
            )),
        ),
    );
    let decoded = decode(ResourceType::Listener, &pb.encode_to_vec()).expect("decoded");
    assert_eq!(decoded.name, "ingress");
    assert_eq!(
        decoded.json.get()["filter_chains"][0]["filters"][0]["typed_config"]["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    let Resource::Listener(listener) = decoded.resource else {
        panic!("not a listener");
    };
    assert_eq!(listener.name, "ingress");
    assert_eq!(listener.address.socket_address.address, "127.0.0.1");
    assert_eq!(listener.address.socket_address.port_value, 10000);
    let hcm = hcm_of(&listener);
    assert_eq!(hcm.stat_prefix, "ingress");
    assert_eq!(hcm.rds_name(), None);
    let routes = hcm.route_config.as_ref().expect("inline routes");
    assert_eq!(routes.name.as_deref(), Some("local"));
    let action = routes.virtual_hosts[0].routes[0]
        .route
        .as_ref()
        .expect("route");
    assert_eq!(action.cluster.as_deref(), Some("backend"));
    assert_eq!(
        action.timeout.map(|t| t.get()),
        Some(std::time::Duration::from_millis(250))
    );
    assert!(matches!(
        hcm.http_filters[0].config,
        HttpFilterConfig::Router(_)
    ));
}

#[test]
fn a_listener_with_rds_names_its_route_configuration() {
    let pb = listener("ingress", hcm_with(rds("routes-a")));
    let decoded = decode(ResourceType::Listener, &pb.encode_to_vec()).expect("decoded");
    let Resource::Listener(mut listener) = decoded.resource else {
        panic!("not a listener");
    };
    assert_eq!(hcm_of(&listener).rds_name(), Some("routes-a"));
    assert!(hcm_of(&listener).routes("hcm").is_err(), "not filled yet");
    let routes = decode(
        ResourceType::RouteConfiguration,
        &route_configuration("routes-a", "backend").encode_to_vec(),
    )
    .expect("routes");
    let Resource::RouteConfiguration(routes) = routes.resource else {
        panic!("not routes");
    };
    for hcm in listener.http_managers_mut() {
        hcm.set_rds_route_config(routes.clone());
    }
    let (filled, source, path) = hcm_of(&listener).routes("hcm").expect("filled");
    assert_eq!(source, RouteSource::Rds);
    assert_eq!(path, "hcm.rds");
    assert_eq!(filled.name.as_deref(), Some("routes-a"));
}

#[test]
fn route_configurations_check_clusters_only_when_asked() {
    let mut pb = route_configuration("routes-a", "nowhere");
    let bytes = pb.encode_to_vec();
    let decoded = decode(ResourceType::RouteConfiguration, &bytes).expect("decoded");
    assert_eq!(decoded.name, "routes-a");
    let Resource::RouteConfiguration(routes) = decoded.resource else {
        panic!("not routes");
    };
    // From RDS, clusters are not checked by default (Envoy's rule).
    assert_eq!(routes.validate_clusters, None);
    check_routes(&routes, &["backend"].into()).expect("not checked");

    pb.validate_clusters = Some(envoy_types::pb::google::protobuf::BoolValue { value: true });
    let decoded = decode(ResourceType::RouteConfiguration, &pb.encode_to_vec()).expect("decoded");
    let Resource::RouteConfiguration(routes) = decoded.resource else {
        panic!("not routes");
    };
    assert_eq!(routes.validate_clusters, Some(true));
    let error = check_routes(&routes, &["backend"].into()).expect_err("checked");
    assert_eq!(error.path, "virtual_hosts[0].routes[0].route.cluster");
    assert!(
        error.message.contains("unknown cluster \"nowhere\""),
        "{}",
        error.message
    );
    check_routes(&routes, &["nowhere"].into()).expect("known");
}

#[test]
fn an_eds_cluster_and_its_load_assignment_are_read() {
    let decoded = decode(
        ResourceType::Cluster,
        &eds_cluster("backend", "backend-eds").encode_to_vec(),
    )
    .expect("decoded");
    assert_eq!(decoded.name, "backend");
    assert_eq!(decoded.json.get()["type"], "EDS");
    assert_eq!(decoded.json.get()["connect_timeout"], "2s");
    let Resource::Cluster(mut cluster) = decoded.resource else {
        panic!("not a cluster");
    };
    assert_eq!(cluster.discovery_type, DiscoveryType::EDS);
    assert_eq!(cluster.lb_policy, LbPolicyName::LEAST_REQUEST);
    assert_eq!(cluster.eds_service_name(), Some("backend-eds"));
    let spec = cluster_spec(&cluster, "c").expect("spec");
    assert!(spec.endpoints.is_empty(), "no endpoints before EDS");

    let decoded = decode(
        ResourceType::ClusterLoadAssignment,
        &load_assignment("backend-eds", &[("10.0.0.1", 8080), ("10.0.0.2", 8081)]).encode_to_vec(),
    )
    .expect("decoded");
    assert_eq!(decoded.name, "backend-eds");
    assert_eq!(
        decoded.json.get()["endpoints"][0]["lb_endpoints"][0]["load_balancing_weight"],
        3
    );
    let Resource::ClusterLoadAssignment(assignment) = decoded.resource else {
        panic!("not a load assignment");
    };
    cluster.set_eds_load_assignment(*assignment);
    let spec = cluster_spec(&cluster, "c").expect("spec");
    let hosts: Vec<_> = spec
        .endpoints
        .iter()
        .map(|e| format!("{}:{}", e.address, e.port))
        .collect();
    assert_eq!(hosts, ["10.0.0.1:8080", "10.0.0.2:8081"]);
}

/// An endpoint's `health_status` from EDS reaches the cluster spec as Envoy reads it:
/// DEGRADED degraded, UNHEALTHY and TIMEOUT unhealthy, DRAINING draining, the rest healthy.
#[test]
fn eds_health_statuses_are_read() {
    use crate::upstream::spec::EndpointHealth;
    let mut assignment = load_assignment(
        "backend",
        &[
            ("10.0.0.1", 1),
            ("10.0.0.2", 2),
            ("10.0.0.3", 3),
            ("10.0.0.4", 4),
            ("10.0.0.5", 5),
        ],
    );
    let statuses = [
        core_pb::HealthStatus::Degraded,
        core_pb::HealthStatus::Unhealthy,
        core_pb::HealthStatus::Timeout,
        core_pb::HealthStatus::Draining,
        core_pb::HealthStatus::Healthy,
    ];
    for (endpoint, status) in assignment.endpoints[0]
        .lb_endpoints
        .iter_mut()
        .zip(statuses)
    {
        endpoint.health_status = status as i32;
    }
    let decoded = decode(
        ResourceType::ClusterLoadAssignment,
        &assignment.encode_to_vec(),
    )
    .expect("decoded");
    assert_eq!(
        decoded.json.get()["endpoints"][0]["lb_endpoints"][0]["health_status"],
        "DEGRADED"
    );
    let Resource::ClusterLoadAssignment(assignment) = decoded.resource else {
        panic!("not a load assignment");
    };
    let decoded = decode(
        ResourceType::Cluster,
        &eds_cluster("backend", "backend").encode_to_vec(),
    )
    .expect("decoded");
    let Resource::Cluster(mut cluster) = decoded.resource else {
        panic!("not a cluster");
    };
    cluster.set_eds_load_assignment(*assignment);
    let spec = cluster_spec(&cluster, "c").expect("spec");
    let health: Vec<EndpointHealth> = spec.endpoints.iter().map(|e| e.health).collect();
    assert_eq!(
        health,
        [
            EndpointHealth::Degraded,
            EndpointHealth::Unhealthy,
            EndpointHealth::Unhealthy,
            EndpointHealth::Draining,
            EndpointHealth::Healthy,
        ]
    );
}

#[test]
fn an_eds_cluster_without_a_service_name_takes_its_own() {
    let decoded = decode(
        ResourceType::Cluster,
        &eds_cluster("backend", "").encode_to_vec(),
    )
    .expect("decoded");
    let Resource::Cluster(cluster) = decoded.resource else {
        panic!("not a cluster");
    };
    assert_eq!(cluster.eds_service_name(), Some("backend"));
}

#[test]
fn invalid_resources_name_the_field() {
    let mut cluster = eds_cluster("backend", "");
    cluster.lb_policy = 99;
    let error = decode_error(ResourceType::Cluster, &cluster.encode_to_vec());
    assert_eq!(error.path, "lb_policy");

    let mut cluster = eds_cluster("backend", "");
    cluster.eds_cluster_config = None;
    let error = decode_error(ResourceType::Cluster, &cluster.encode_to_vec());
    assert_eq!(error.path, "eds_cluster_config");

    let error = decode_error(
        ResourceType::ClusterLoadAssignment,
        &load_assignment("backend", &[("backend.example", 80)]).encode_to_vec(),
    );
    assert_eq!(
        error.path,
        "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address"
    );
    assert!(
        error.message.contains("not an IP address"),
        "{}",
        error.message
    );

    let mut hcm = hcm_with(rds("routes-a"));
    hcm.http_filters.insert(
        0,
        hcm_pb::HttpFilter {
            name: "envoy.access_loggers.file".into(),
            config_type: Some(hcm_pb::http_filter::ConfigType::TypedConfig(pack_any(
                NotAnHttpFilter::default(),
            ))),
            ..Default::default()
        },
    );
    let error = decode_error(
        ResourceType::Listener,
        &listener("ingress", hcm).encode_to_vec(),
    );
    assert_eq!(
        error.path,
        "filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.@type"
    );
    assert!(
        error.message.contains("unsupported HTTP filter type")
            && error.message.contains("FileAccessLog"),
        "{}",
        error.message
    );

    let mut routes = route_configuration("routes-a", "backend");
    routes.virtual_hosts[0].routes[0].r#match = Some(route_pb::RouteMatch {
        path_specifier: Some(route_pb::route_match::PathSpecifier::SafeRegex(
            envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                regex: "(".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    });
    let error = decode_error(ResourceType::RouteConfiguration, &routes.encode_to_vec());
    assert!(
        error
            .path
            .starts_with("virtual_hosts[0].routes[0].match.safe_regex"),
        "{}",
        error.path
    );
}

#[test]
fn a_resource_without_a_name_is_refused() {
    let error = decode_error(
        ResourceType::Listener,
        &listener("", hcm_with(rds("r"))).encode_to_vec(),
    );
    assert_eq!(error.path, "name");
    let error = decode_error(
        ResourceType::ClusterLoadAssignment,
        &load_assignment("", &[("10.0.0.1", 80)]).encode_to_vec(),
    );
    assert_eq!(error.path, "cluster_name");
}

#[test]
fn an_unknown_any_or_bad_bytes_are_refused_at_the_top() {
    let mut pb = listener("ingress", hcm_with(rds("r")));
    if let Some(listener_pb::filter::ConfigType::TypedConfig(any)) =
        &mut pb.filter_chains[0].filters[0].config_type
    {
        *any = Any {
            type_url: "type.googleapis.com/example.Unknown".into(),
            value: vec![],
        };
    }
    let error = decode_error(ResourceType::Listener, &pb.encode_to_vec());
    assert_eq!(error.path, ".");
    assert!(
        error.message.contains("example.Unknown"),
        "{}",
        error.message
    );

    let error = decode_error(ResourceType::Cluster, b"\xff\xff\xff");
    assert!(error.message.contains("invalid"), "{}", error.message);
}

#[test]
fn a_typed_struct_is_read_as_the_type_it_names() {
    use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value};
    let typed_struct = |fields: Vec<(&str, PbValue)>| Struct {
        fields: fields
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect(),
    };
    let string = |text: &str| PbValue {
        kind: Some(value::Kind::StringValue(text.into())),
    };
    // An HCM written as a TypedStruct: its Struct holds numbers as doubles.
    let hcm_fields = typed_struct(vec![
        ("stat_prefix", string("ts")),
        (
            "max_request_headers_kb",
            PbValue {
                kind: Some(value::Kind::NumberValue(61.0)),
            },
        ),
        (
            "rds",
            PbValue {
                kind: Some(value::Kind::StructValue(typed_struct(vec![
                    ("route_config_name", string("r")),
                    (
                        "config_source",
                        PbValue {
                            kind: Some(value::Kind::StructValue(typed_struct(vec![(
                                "ads",
                                PbValue {
                                    kind: Some(value::Kind::StructValue(Struct::default())),
                                },
                            )]))),
                        },
                    ),
                ]))),
            },
        ),
    ]);
    #[derive(Clone, PartialEq, prost::Message)]
    struct TypedStruct {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(message, optional, tag = "2")]
        value: Option<Struct>,
    }
    let any = Any {
        type_url: "type.googleapis.com/udpa.type.v1.TypedStruct".into(),
        value: TypedStruct {
            type_url: format!(
                "type.googleapis.com/{}",
                crate::config::typed::type_names::HCM
            ),
            value: Some(hcm_fields),
        }
        .encode_to_vec(),
    };
    let mut pb = listener("ingress", hcm_with(rds("unused")));
    pb.filter_chains[0].filters[0].config_type =
        Some(listener_pb::filter::ConfigType::TypedConfig(any));
    let decoded = decode(ResourceType::Listener, &pb.encode_to_vec()).expect("decoded");
    let Resource::Listener(listener) = decoded.resource else {
        panic!("not a listener");
    };
    let hcm = hcm_of(&listener);
    assert_eq!(hcm.stat_prefix, "ts");
    assert_eq!(hcm.max_request_headers_kb, Some(61));
    assert_eq!(hcm.rds_name(), Some("r"));
}

#[test]
fn a_wasm_filter_and_its_string_configuration_are_read() {
    use envoy_types::pb::envoy::config::core::v3::{
        AsyncDataSource, DataSource, async_data_source, data_source,
    };
    use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
    use envoy_types::pb::envoy::extensions::wasm::v3::{PluginConfig, VmConfig, plugin_config};
    use envoy_types::pb::google::protobuf::StringValue;
    let wasm = Wasm {
        config: Some(PluginConfig {
            name: "auth".into(),
            root_id: "auth_root".into(),
            configuration: Some(pack_any(StringValue {
                value: "{\"k\":1}".into(),
            })),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                runtime: "envoy.wasm.runtime.v8".into(),
                code: Some(AsyncDataSource {
                    specifier: Some(async_data_source::Specifier::Local(DataSource {
                        specifier: Some(data_source::Specifier::Filename(
                            "/etc/weir/auth.wasm".into(),
                        )),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    let mut hcm = hcm_with(rds("r"));
    hcm.http_filters.insert(
        0,
        hcm_pb::HttpFilter {
            name: "envoy.filters.http.wasm".into(),
            config_type: Some(hcm_pb::http_filter::ConfigType::TypedConfig(pack_any(wasm))),
            ..Default::default()
        },
    );
    let decoded = decode(
        ResourceType::Listener,
        &listener("ingress", hcm).encode_to_vec(),
    )
    .expect("decoded");
    let Resource::Listener(listener) = decoded.resource else {
        panic!("not a listener");
    };
    let HttpFilterConfig::Wasm(wasm) = &hcm_of(&listener).http_filters[0].config else {
        panic!("not a Wasm filter");
    };
    assert_eq!(wasm.config.name, "auth");
    assert_eq!(wasm.config.root_id, "auth_root");
    let configuration = serde_json::to_value(&wasm.config.configuration).expect("json");
    assert_eq!(
        configuration,
        serde_json::json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": "{\"k\":1}",
        })
    );
}

#[test]
fn an_inline_route_table_of_a_listener_is_checked_with_its_path() {
    let mut routes = route_configuration("local", "backend");
    routes.virtual_hosts[0].domains = vec!["*.".into(), "**x".into()];
    let pb = listener(
        "ingress",
        hcm_with(hcm_pb::http_connection_manager::RouteSpecifier::RouteConfig(routes)),
    );
    let error = decode_error(ResourceType::Listener, &pb.encode_to_vec());
    assert_eq!(
        error.path,
        "filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].domains[1]"
    );
}

/// A Wasm filter config whose plugin is `name`, with a string `configuration`.
fn wasm_filter(
    name: &str,
    configuration: &str,
) -> envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm {
    use envoy_types::pb::envoy::config::core::v3::{
        AsyncDataSource, DataSource, async_data_source, data_source,
    };
    use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
    use envoy_types::pb::envoy::extensions::wasm::v3::{PluginConfig, VmConfig, plugin_config};
    use envoy_types::pb::google::protobuf::StringValue;
    Wasm {
        config: Some(PluginConfig {
            name: name.into(),
            configuration: Some(pack_any(StringValue {
                value: configuration.into(),
            })),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                runtime: "envoy.wasm.runtime.v8".into(),
                code: Some(AsyncDataSource {
                    specifier: Some(async_data_source::Specifier::Local(DataSource {
                        specifier: Some(data_source::Specifier::Filename(
                            "/etc/weir/f.wasm".into(),
                        )),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
    }
}

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

#[test]
fn an_ecds_resource_is_read_as_an_http_filter_config() {
    let resource = core_pb::TypedExtensionConfig {
        name: "auth".into(),
        typed_config: Some(pack_any(wasm_filter("auth", "v1"))),
    };
    let decoded = decode(ResourceType::ExtensionConfig, &resource.encode_to_vec()).expect("read");
    assert_eq!(decoded.name, "auth");
    let Resource::ExtensionConfig(config) = decoded.resource else {
        panic!("not an extension config");
    };
    assert_eq!(config.type_url, WASM_TYPE);
    let DiscoveredConfig::Http(HttpFilterConfig::Wasm(wasm)) = &config.config else {
        panic!("not a Wasm filter");
    };
    assert_eq!(wasm.config.name, "auth");
    assert_eq!(
        ResourceType::from_type_url(
            "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
        ),
        Some(ResourceType::ExtensionConfig)
    );
    assert_eq!(ResourceType::ExtensionConfig.short_name(), "ecds");
    assert!(!ResourceType::ExtensionConfig.wildcard());
}

#[test]
fn an_ecds_resource_of_a_type_weir_has_no_filter_for_is_refused_with_its_path() {
    let resource = core_pb::TypedExtensionConfig {
        name: "log".into(),
        typed_config: Some(pack_any(NotAnHttpFilter::default())),
    };
    let error = decode_error(ResourceType::ExtensionConfig, &resource.encode_to_vec());
    assert_eq!(error.path, "typed_config.@type", "{error:?}");
    assert!(error.message.contains("FileAccessLog"), "{error:?}");
    let empty = core_pb::TypedExtensionConfig {
        name: "x".into(),
        typed_config: None,
    };
    let error = decode_error(ResourceType::ExtensionConfig, &empty.encode_to_vec());
    assert_eq!(error.path, "typed_config", "{error:?}");
}

fn discovered_filter(
    name: &str,
    default: Option<Any>,
    without_warming: bool,
    type_urls: &[&str],
) -> hcm_pb::HttpFilter {
    hcm_pb::HttpFilter {
        name: name.into(),
        config_type: Some(hcm_pb::http_filter::ConfigType::ConfigDiscovery(
            core_pb::ExtensionConfigSource {
                config_source: Some(ads_source()),
                default_config: default,
                apply_default_config_without_warming: without_warming,
                type_urls: type_urls.iter().map(|url| url.to_string()).collect(),
            },
        )),
        ..Default::default()
    }
}

#[test]
fn a_filter_with_config_discovery_is_read_and_checked() {
    let mut hcm = hcm_with(rds("r"));
    hcm.http_filters.insert(
        0,
        discovered_filter(
            "auth",
            Some(pack_any(wasm_filter("auth", "default"))),
            true,
            &[WASM_TYPE],
        ),
    );
    let decoded = decode(
        ResourceType::Listener,
        &listener("ingress", hcm.clone()).encode_to_vec(),
    )
    .expect("read");
    let Resource::Listener(read) = decoded.resource else {
        panic!("not a listener");
    };
    let discovery = hcm_of(&read).http_filters[0]
        .discovery()
        .expect("config_discovery");
    assert!(discovery.apply_default_config_without_warming);
    assert_eq!(discovery.type_urls, [WASM_TYPE]);

    // A default config whose type is not listed.
    hcm.http_filters[0] = discovered_filter(
        "auth",
        Some(pack_any(wasm_filter("auth", "default"))),
        false,
        &["type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"],
    );
    let error = decode_error(
        ResourceType::Listener,
        &listener("ingress", hcm.clone()).encode_to_vec(),
    );
    assert_eq!(
        error.path,
        "filter_chains[0].filters[0].typed_config.http_filters[0].config_discovery.default_config.@type",
        "{error:?}"
    );
    // No type URL at all.
    hcm.http_filters[0] = discovered_filter("auth", None, false, &[]);
    let error = decode_error(
        ResourceType::Listener,
        &listener("ingress", hcm.clone()).encode_to_vec(),
    );
    assert_eq!(
        error.path,
        "filter_chains[0].filters[0].typed_config.http_filters[0].config_discovery.type_urls",
        "{error:?}"
    );
    // Without warming needs a default.
    hcm.http_filters[0] = discovered_filter("auth", None, true, &[WASM_TYPE]);
    let error = decode_error(
        ResourceType::Listener,
        &listener("ingress", hcm).encode_to_vec(),
    );
    assert!(
        error.path.ends_with("config_discovery.default_config"),
        "{error:?}"
    );
}

const NETWORK_WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm";

/// [`wasm_filter`]'s plugin as a network Wasm filter's config.
fn network_wasm_filter(
    name: &str,
    configuration: &str,
) -> envoy_types::pb::envoy::extensions::filters::network::wasm::v3::Wasm {
    envoy_types::pb::envoy::extensions::filters::network::wasm::v3::Wasm {
        config: wasm_filter(name, configuration).config,
    }
}

#[test]
fn an_ecds_resource_of_the_network_wasm_type_is_read_as_a_network_filter_config() {
    let resource = core_pb::TypedExtensionConfig {
        name: "guard".into(),
        typed_config: Some(pack_any(network_wasm_filter("guard", "v1"))),
    };
    let decoded = decode(ResourceType::ExtensionConfig, &resource.encode_to_vec()).expect("read");
    let Resource::ExtensionConfig(config) = decoded.resource else {
        panic!("not an extension config");
    };
    assert_eq!(config.type_url, NETWORK_WASM_TYPE);
    let DiscoveredConfig::Network(crate::config::listener::NetworkFilterConfig::Wasm(wasm)) =
        &config.config
    else {
        panic!("not a network Wasm filter: {:?}", config.config);
    };
    assert_eq!(wasm.config.name, "guard");

    // A terminal network filter is not taken over ECDS.
    let resource = core_pb::TypedExtensionConfig {
        name: "proxy".into(),
        typed_config: Some(pack_any(
            envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy {
                stat_prefix: "tcp".into(),
                ..Default::default()
            },
        )),
    };
    let error = decode_error(ResourceType::ExtensionConfig, &resource.encode_to_vec());
    assert_eq!(error.path, "typed_config.@type", "{error:?}");
    assert!(error.message.contains("TcpProxy"), "{error:?}");
}

#[test]
fn a_network_filter_with_config_discovery_is_read_and_checked() {
    let network_listener = |source: core_pb::ExtensionConfigSource| {
        let mut listener = listener("tcp", hcm_with(rds("r")));
        listener.filter_chains[0].filters.insert(
            0,
            listener_pb::Filter {
                name: "guard".into(),
                config_type: Some(listener_pb::filter::ConfigType::ConfigDiscovery(source)),
            },
        );
        listener
    };
    let source = core_pb::ExtensionConfigSource {
        config_source: Some(ads_source()),
        default_config: Some(pack_any(network_wasm_filter("guard", "default"))),
        apply_default_config_without_warming: false,
        type_urls: vec![NETWORK_WASM_TYPE.into()],
    };
    let decoded = decode(
        ResourceType::Listener,
        &network_listener(source.clone()).encode_to_vec(),
    )
    .expect("read");
    let Resource::Listener(read) = decoded.resource else {
        panic!("not a listener");
    };
    let discovery = read.filter_chains[0].filters[0]
        .discovery()
        .expect("config_discovery");
    assert_eq!(discovery.type_urls, [NETWORK_WASM_TYPE]);
    assert!(discovery.default_network_config("guard").unwrap().is_some());

    // A default that is an HTTP filter's config, listed or not, does not read as a network
    // filter's.
    let http_default = core_pb::ExtensionConfigSource {
        default_config: Some(pack_any(wasm_filter("guard", "default"))),
        type_urls: vec![NETWORK_WASM_TYPE.into(), WASM_TYPE.into()],
        ..source.clone()
    };
    let error = decode_error(
        ResourceType::Listener,
        &network_listener(http_default).encode_to_vec(),
    );
    assert_eq!(
        error.path, "filter_chains[0].filters[0].config_discovery.default_config.@type",
        "{error:?}"
    );
    // No type URL at all.
    let error = decode_error(
        ResourceType::Listener,
        &network_listener(core_pb::ExtensionConfigSource {
            type_urls: Vec::new(),
            ..source
        })
        .encode_to_vec(),
    );
    assert_eq!(
        error.path, "filter_chains[0].filters[0].config_discovery.type_urls",
        "{error:?}"
    );
}
