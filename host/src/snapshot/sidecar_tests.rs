//! Sidecar mode in the config: original-destination listeners and `ORIGINAL_DST` clusters.

use super::*;
use crate::config::cluster_spec as spec;
use crate::config::*;

const SIDECAR: &str = r#"
static_resources:
  listeners:
  - name: inbound
    address: { socket_address: { address: 0.0.0.0, port_value: 15006 } }
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: original }
  - name: inbound_tcp
    address: { socket_address: { address: 0.0.0.0, port_value: 15007 } }
    transparent: true
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: inbound_tcp
          cluster: original
  - name: plain
    address: { socket_address: { address: 127.0.0.1, port_value: 15008 } }
    listener_filters:
    - name: envoy.filters.listener.original_dst
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: plain
          cluster: original
  clusters:
  - name: original
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
    cleanup_interval: 5s
"#;

fn error_of(text: &str) -> ConfigError {
    match load_str(text, "sidecar.yaml") {
        Ok(_) => panic!("config should not load"),
        Err(e) => e,
    }
}

#[test]
fn loads_original_dst_listeners_and_cluster() {
    let config = match load_str(SIDECAR, "sidecar.yaml") {
        Ok(config) => config,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(
        config.listeners[0].interception,
        Interception {
            use_original_dst: true,
            transparent: false
        }
    );
    assert_eq!(
        config.tcp_listeners[0].interception,
        Interception {
            use_original_dst: true,
            transparent: true
        }
    );
    // The filter's name alone, as older Envoy configs write it.
    assert!(config.tcp_listeners[1].interception.use_original_dst);
    let cluster = &config.clusters[0];
    assert_eq!(cluster.discovery, spec::Discovery::OriginalDst);
    assert!(cluster.endpoints.is_empty());
}

#[test]
fn original_dst_needs_cluster_provided_and_back() {
    let text = SIDECAR.replace("lb_policy: CLUSTER_PROVIDED", "lb_policy: ROUND_ROBIN");
    let error = error_of(&text);
    assert_eq!(error.path, "static_resources.clusters[0].lb_policy");
    assert!(error.message.contains("CLUSTER_PROVIDED"), "{error}");
    let text = SIDECAR.replace("type: ORIGINAL_DST", "type: STATIC");
    let error = error_of(&text);
    assert_eq!(error.path, "static_resources.clusters[0].lb_policy");
    assert!(
        error
            .message
            .contains("only for clusters of type ORIGINAL_DST"),
        "{error}"
    );
}

#[test]
fn original_dst_takes_no_endpoints_or_health_checks() {
    let endpoints = SIDECAR.replace(
        "    cleanup_interval: 5s\n",
        "    cleanup_interval: 5s\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 80 } } }\n",
    );
    let error = error_of(&endpoints);
    assert_eq!(error.path, "static_resources.clusters[0].load_assignment");
    let checks = SIDECAR.replace(
        "    cleanup_interval: 5s\n",
        "    cleanup_interval: 5s\n    health_checks: [{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /}}]\n",
    );
    let error = error_of(&checks);
    assert_eq!(error.path, "static_resources.clusters[0].health_checks");
}

#[test]
fn unknown_listener_filters_name_their_path() {
    let text = SIDECAR.replace(
        "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
        "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    );
    let error = error_of(&text);
    assert_eq!(
        error.path,
        "static_resources.listeners[1].listener_filters[0].typed_config.@type"
    );
    assert!(error.message.contains("OriginalDst"), "{error}");
    let text = SIDECAR.replace(
        "\"@type\": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
        "\"@type\": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst\n        bind_to_port: true",
    );
    let error = error_of(&text);
    assert_eq!(
        error.path,
        "static_resources.listeners[1].listener_filters[0].typed_config.bind_to_port"
    );
}

#[test]
fn quic_listeners_cannot_take_redirected_connections() {
    let text = r#"
static_resources:
  listeners:
  - name: h3
    address: { socket_address: { address: 0.0.0.0, port_value: 443, protocol: UDP } }
    use_original_dst: true
    udp_listener_config: { quic_options: {} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h3
          codec_type: HTTP3
          route_config: {}
"#;
    let error = error_of(text);
    assert_eq!(error.path, "static_resources.listeners[0].use_original_dst");
}
