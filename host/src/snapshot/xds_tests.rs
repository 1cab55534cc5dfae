//! `dynamic_resources`, an HCM's `rds`, EDS clusters and `validate_clusters`, read from YAML
//! through [`load_str`] as a file is.

use super::*;
use crate::config::ConfigError;
use crate::config::dynamic_resources::{AdsApi, Locality};
use std::time::Duration;

const HCM_PATH: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";

/// A sidecar bootstrap: listeners and clusters over ADS, one static listener whose routes
/// come over RDS, one EDS cluster and the control plane's cluster.
const ADS: &str = r#"
node:
  id: sidecar-1
  cluster: mesh
  metadata: { ISTIO_VERSION: "1.20", labels: { app: web } }
  locality: { region: eu-west, zone: eu-west-1a }
  user_agent_name: envoy
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services:
    - envoy_grpc: { cluster_name: xds }
      initial_metadata: [ { key: Authorization, value: "Bearer t" } ]
  lds_config: { ads: {}, resource_api_version: V3, initial_fetch_timeout: 3s }
  cds_config: { ads: {}, resource_api_version: V3, initial_fetch_timeout: 20s }
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 127.0.0.1, port_value: 8080 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          rds:
            route_config_name: main-routes
            config_source: { ads: {}, resource_api_version: V3 }
          http_filters:
          - name: envoy.filters.http.router
  clusters:
  - name: xds
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: xds
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18000 } } }
  - name: web
    type: EDS
    connect_timeout: 1s
    eds_cluster_config:
      eds_config: { ads: {}, resource_api_version: V3 }
      service_name: web-eds
"#;

/// A plain file: one listener with an inline route table and one STATIC cluster.
const PLAIN: &str = r#"
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 127.0.0.1, port_value: 8080 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }
          http_filters:
          - name: envoy.filters.http.router
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9000 } } }
"#;

fn error_of(text: &str) -> ConfigError {
    match load_str(text, "test.yaml") {
        Ok(_) => panic!("config should not load"),
        Err(e) => e,
    }
}

#[test]
fn an_ads_bootstrap_gives_the_client_its_spec() {
    let config = load_str(ADS, "test.yaml").expect("loads");
    let xds = config.xds.expect("xds");
    assert_eq!(xds.ads_cluster, "xds");
    assert_eq!(xds.api, AdsApi::Delta);
    assert!(xds.lds && xds.cds);
    assert_eq!(xds.lds_fetch_timeout, Duration::from_secs(3));
    assert_eq!(xds.cds_fetch_timeout, Duration::from_secs(20));
    assert_eq!(xds.node_id, "sidecar-1");
    assert_eq!(xds.node_cluster, "mesh");
    assert_eq!(
        xds.node_metadata,
        serde_json::json!({"ISTIO_VERSION": "1.20", "labels": {"app": "web"}})
    );
    assert_eq!(
        xds.node_locality,
        Some(Locality {
            region: "eu-west".into(),
            zone: "eu-west-1a".into(),
            sub_zone: String::new(),
        })
    );
    assert_eq!(xds.node_user_agent_name, "envoy");
    assert!(xds.set_node_on_first_message_only);
    assert_eq!(
        xds.initial_metadata,
        [("authorization".to_string(), "Bearer t".to_string())]
    );
    // Routes RDS has not delivered are none: every request 404 until they come.
    assert_eq!(config.listeners.len(), 1);
    // The EDS cluster has no hosts until its endpoints come.
    let web = config
        .clusters
        .iter()
        .find(|c| c.name == "web")
        .expect("web");
    assert!(web.endpoints.is_empty());
}

#[test]
fn ads_defaults_follow_envoy() {
    let text = ADS
        .replace("api_type: DELTA_GRPC", "api_type: GRPC")
        .replace("    transport_api_version: V3\n", "")
        .replace(", initial_fetch_timeout: 3s", "")
        .replace(", initial_fetch_timeout: 20s", "");
    let xds = load_str(&text, "test.yaml")
        .expect("loads")
        .xds
        .expect("xds");
    assert_eq!(xds.api, AdsApi::StateOfTheWorld);
    assert_eq!(xds.lds_fetch_timeout, Duration::from_secs(15));
    assert_eq!(xds.cds_fetch_timeout, Duration::from_secs(15));
    let text = ADS.replace("initial_fetch_timeout: 3s", "initial_fetch_timeout: 0s");
    let xds = load_str(&text, "test.yaml")
        .expect("loads")
        .xds
        .expect("xds");
    assert_eq!(xds.lds_fetch_timeout, Duration::ZERO, "zero waits forever");
    let plain = load_str(PLAIN, "test.yaml").expect("loads");
    assert_eq!(plain.xds, None);
}

#[test]
fn the_control_plane_is_a_static_http2_cluster() {
    let at = "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name";
    let e = error_of(&ADS.replace("cluster_name: xds }", "cluster_name: nowhere }"));
    assert_eq!(e.path, at);
    assert!(e.message.contains("unknown cluster \"nowhere\""), "{e}");
    let e = error_of(&ADS.replace(
        "explicit_http_config: { http2_protocol_options: {} }",
        "explicit_http_config: { http_protocol_options: {} }",
    ));
    assert_eq!(e.path, at);
    assert!(e.message.contains("HTTP/2"), "{e}");
    let older = ADS.replace(
        "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n",
        "    http2_protocol_options: {}\n",
    );
    assert_ne!(older, ADS);
    load_str(&older, "test.yaml").expect("http2_protocol_options is HTTP/2 too");
}

#[test]
fn ads_config_errors_name_the_field() {
    let ads = "dynamic_resources.ads_config";
    for (from, to, path, says) in [
        (
            "api_type: DELTA_GRPC",
            "api_type: REST",
            "api_type",
            "GRPC or DELTA_GRPC",
        ),
        (
            "api_type: DELTA_GRPC",
            "api_type: AGGREGATED_GRPC",
            "api_type",
            "GRPC or DELTA_GRPC",
        ),
        ("    api_type: DELTA_GRPC\n", "", "api_type", "DELTA_GRPC"),
        (
            "transport_api_version: V3",
            "transport_api_version: V2",
            "transport_api_version",
            "V3",
        ),
        (
            "- envoy_grpc: { cluster_name: xds }",
            "- google_grpc: { target_uri: x }",
            "grpc_services[0].google_grpc",
            "envoy_grpc",
        ),
        (
            "set_node_on_first_message_only: true",
            "refresh_delay: 1s",
            "refresh_delay",
            "unknown field",
        ),
    ] {
        let text = ADS.replace(from, to);
        assert_ne!(text, ADS, "{from}");
        let e = error_of(&text);
        assert_eq!(e.path, format!("{ads}.{path}"), "{to}: {e}");
        assert!(e.message.contains(says), "{to}: {e}");
    }
}

#[test]
fn config_sources_other_than_ads_are_refused() {
    for (source, field) in [
        ("{ path: /etc/envoy/lds.yaml }", "path"),
        (
            "{ path_config_source: { path: /etc/envoy/lds.yaml } }",
            "path_config_source",
        ),
        (
            "{ api_config_source: { api_type: GRPC, grpc_services: [ { envoy_grpc: { cluster_name: xds } } ] } }",
            "api_config_source",
        ),
    ] {
        let text = ADS.replace(
            "lds_config: { ads: {}, resource_api_version: V3, initial_fetch_timeout: 3s }",
            &format!("lds_config: {source}"),
        );
        let e = error_of(&text);
        assert_eq!(
            e.path,
            format!("dynamic_resources.lds_config.{field}"),
            "{e}"
        );
        assert!(e.message.contains("ADS"), "{e}");
    }
    let e = error_of(&ADS.replace(
        "      eds_config: { ads: {}, resource_api_version: V3 }",
        "      eds_config: { path: /etc/eds.yaml }",
    ));
    assert_eq!(
        e.path,
        "static_resources.clusters[1].eds_cluster_config.eds_config.path"
    );
    let e = error_of(&ADS.replace(
        "config_source: { ads: {}, resource_api_version: V3 }",
        "config_source: { resource_api_version: V2, ads: {} }",
    ));
    assert_eq!(
        e.path,
        format!("{HCM_PATH}.rds.config_source.resource_api_version")
    );
}

#[test]
fn lds_over_ads_needs_ads_config() {
    let start = ADS.find("  ads_config:").expect("ads_config");
    let end = ADS.find("  lds_config:").expect("lds_config");
    let text = format!("{}{}", &ADS[..start], &ADS[end..]);
    let e = error_of(&text);
    assert_eq!(e.path, "dynamic_resources.lds_config.ads");
    assert!(e.message.contains("ads_config"), "{e}");
}

#[test]
fn node_metadata_is_a_mapping() {
    let e = error_of(&ADS.replace(
        "metadata: { ISTIO_VERSION: \"1.20\", labels: { app: web } }",
        "metadata: 5",
    ));
    assert_eq!(e.path, "node.metadata");
    let e = error_of(&ADS.replace("user_agent_name: envoy", "user_agent_nmae: envoy"));
    assert_eq!(e.path, "node.user_agent_nmae");
}

#[test]
fn a_connection_manager_has_exactly_one_of_route_config_and_rds() {
    let both = PLAIN.replace(
        "          route_config:\n",
        "          rds: { route_config_name: r, config_source: { ads: {} } }\n          route_config:\n",
    );
    let e = error_of(&both);
    assert_eq!(e.path, format!("{HCM_PATH}.rds"));
    assert!(
        e.message.contains("exactly one of route_config and rds"),
        "{e}"
    );
    let start = PLAIN.find("          route_config:").expect("route_config");
    let end = PLAIN.find("          http_filters:").expect("http_filters");
    let neither = format!("{}{}", &PLAIN[..start], &PLAIN[end..]);
    let e = error_of(&neither);
    assert_eq!(e.path, HCM_PATH);
    assert!(
        e.message.contains("exactly one of route_config and rds"),
        "{e}"
    );
}

#[test]
fn rds_in_a_file_without_a_control_plane_is_an_error() {
    let start = PLAIN.find("          route_config:").expect("route_config");
    let end = PLAIN.find("          http_filters:").expect("http_filters");
    let text = format!(
        "{}          rds: {{ route_config_name: r, config_source: {{ ads: {{}} }} }}\n{}",
        &PLAIN[..start],
        &PLAIN[end..]
    );
    let e = error_of(&text);
    assert_eq!(e.path, format!("{HCM_PATH}.rds"));
    assert!(e.message.contains("dynamic_resources.ads_config"), "{e}");
}

#[test]
fn eds_clusters_read_their_load_assignment_as_static_ones() {
    let text = ADS.replace(
        "      service_name: web-eds
",
        "      service_name: web-eds
    load_assignment:
      cluster_name: web-eds
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.0.0.7, port_value: 9000 } } }
",
    );
    assert_ne!(text, ADS);
    let config = load_str(&text, "test.yaml").expect("loads");
    let web = config
        .clusters
        .iter()
        .find(|c| c.name == "web")
        .expect("web");
    assert_eq!(
        web.discovery,
        crate::config::cluster_spec::Discovery::Static
    );
    assert_eq!(web.endpoints.len(), 1);
    assert_eq!(web.endpoints[0].address, "10.0.0.7");
    let e = error_of(&ADS.replace(
        "    eds_cluster_config:
      eds_config: { ads: {}, resource_api_version: V3 }
      service_name: web-eds
",
        "",
    ));
    assert_eq!(e.path, "static_resources.clusters[1].eds_cluster_config");
}

#[test]
fn eds_without_a_control_plane_is_an_error_as_in_envoy() {
    let text = PLAIN.replace(
        "  - name: backend\n    connect_timeout: 1s\n",
        "  - name: backend\n    type: EDS\n    eds_cluster_config: { eds_config: { ads: {} } }\n    connect_timeout: 1s\n",
    );
    assert_ne!(text, PLAIN);
    let e = error_of(&text);
    assert_eq!(
        e.path,
        "static_resources.clusters[0].eds_cluster_config.eds_config.ads"
    );
    assert!(e.message.contains("dynamic_resources.ads_config"), "{e}");
}

#[test]
fn validate_clusters_decides_whether_route_clusters_are_checked() {
    let unknown = PLAIN.replace("route: { cluster: backend }", "route: { cluster: gone }");
    let e = error_of(&unknown);
    assert_eq!(
        e.path,
        format!("{HCM_PATH}.route_config.virtual_hosts[0].routes[0].route.cluster")
    );
    let e = error_of(&unknown.replace(
        "name: local\n",
        "name: local\n            validate_clusters: true\n",
    ));
    assert!(e.path.ends_with("routes[0].route.cluster"), "{e}");
    let unchecked = unknown.replace(
        "name: local\n",
        "name: local\n            validate_clusters: false\n",
    );
    assert_ne!(unchecked, unknown);
    load_str(&unchecked, "test.yaml").expect("clusters not checked");
}
