use super::*;

const GOOD: &str = r#"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 9901 } }
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 0.0.0.0, port_value: 8080 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0.25s }
          http_filters:
          - name: envoy.filters.http.router
  clusters:
  - name: backend
    type: STRICT_DNS
    connect_timeout: 1s
    lb_policy: LEAST_REQUEST
    circuit_breakers: { thresholds: [ { max_connections: 4, max_pending_requests: 2 } ] }
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 7 } }
        common_http_protocol_options: { max_requests_per_connection: 10 }
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: localhost, port_value: 9000 } } }
"#;

fn error_of(text: &str) -> ConfigError {
    match load_str(text, "test.yaml") {
        Ok(_) => panic!("config should not load"),
        Err(e) => e,
    }
}

#[test]
fn loads_an_envoy_config() {
    let config = load_str(GOOD, "test.yaml").unwrap();
    assert_eq!(config.admin, Some("127.0.0.1:9901".parse().unwrap()));
    let cluster = &config.clusters[0];
    assert_eq!(cluster.protocol, upstream::UpstreamProtocol::Http2);
    assert_eq!(cluster.http2.max_concurrent_streams, 7);
    assert_eq!(cluster.max_requests_per_connection, Some(10));
    assert_eq!(cluster.thresholds.max_connections, 4);
    assert_eq!(cluster.thresholds.max_pending_requests, 2);
    assert_eq!(cluster.thresholds.max_requests, 1024);
    assert_eq!(cluster.connect_timeout, Duration::from_secs(1));
    assert_eq!(cluster.lb_policy, upstream::LbPolicy::LeastRequest);
    assert_eq!(config.listeners[0].http.stat_prefix, "ingress_http");
    assert_eq!(
        config.dump["static_resources"]["clusters"][0]["name"],
        "backend"
    );
}

#[test]
fn the_built_in_config_loads() {
    let config = load_str(DEFAULT_CONFIG, "<built-in>").unwrap();
    assert_eq!(
        config.listeners[0].address,
        "127.0.0.1:10000".parse().unwrap()
    );
}

#[test]
fn unknown_field_names_its_path() {
    let e = error_of(&GOOD.replace("lb_policy: LEAST_REQUEST", "lb_polcy: LEAST_REQUEST"));
    assert_eq!(e.path, "static_resources.clusters[0].lb_polcy");
    assert!(e.message.contains("unknown field `lb_polcy`"), "{e}");
    assert!(
        e.message.contains("lb_policy"),
        "lists the accepted fields: {e}"
    );
    assert_eq!(e.file, "test.yaml");
}

#[test]
fn wrong_enum_value_lists_the_accepted_ones() {
    let e = error_of(&GOOD.replace("LEAST_REQUEST", "MAGLEV"));
    assert_eq!(e.path, "static_resources.clusters[0].lb_policy");
    assert!(e.message.contains("ROUND_ROBIN"), "{e}");
}

#[test]
fn errors_inside_typed_config_keep_their_path() {
    let e = error_of(&GOOD.replace("codec_type: AUTO", "codec_type: HTTP9"));
    assert_eq!(
        e.path,
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.codec_type"
    );
    let e = error_of(&GOOD.replace(
        "route: { cluster: backend, timeout: 0.25s }",
        "route: { cluster: backend, timeout: 5 }",
    ));
    assert!(
        e.path
            .ends_with("typed_config.route_config.virtual_hosts[0].routes[0].route.timeout"),
        "{e}"
    );
    let e = error_of(&GOOD.replace("max_concurrent_streams: 7", "max_concurrent_stream: 7"));
    assert!(
        e.path.starts_with("static_resources.clusters[0].typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions.explicit_http_config.http2_protocol_options"),
        "{e}"
    );
    let e = error_of(&GOOD.replace(
        "- name: envoy.filters.http.router",
        "- name: envoy.filters.http.cors",
    ));
    assert!(e.path.ends_with("typed_config.http_filters[0]"), "{e}");
}

#[test]
fn unsupported_filter_type_is_named() {
    let e = error_of(&GOOD.replace("v3.HttpConnectionManager", "v3.RedisProxy"));
    assert!(e.path.ends_with("filters[0].typed_config.@type"), "{e}");
    assert!(
        e.message.contains("RedisProxy") && e.message.contains("HttpConnectionManager"),
        "{e}"
    );
}

#[test]
fn typed_struct_wrapper_is_unwrapped() {
    let wrapped = GOOD.replace(
        "\"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n          stat_prefix: ingress_http",
        "\"@type\": type.googleapis.com/udpa.type.v1.TypedStruct\n          type_url: type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n          value:\n            stat_prefix: ingress_http",
    )
    .replace("\n          codec_type", "\n            codec_type")
    .replace("\n          route_config:\n            virtual_hosts:\n            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: { prefix: \"/\" }\n                route: { cluster: backend, timeout: 0.25s }\n          http_filters:\n          - name: envoy.filters.http.router",
        "\n            route_config: { virtual_hosts: [ { name: all, domains: [\"*\"], routes: [ { match: { prefix: \"/\" }, route: { cluster: backend } } ] } ] }\n            http_filters: [ { name: envoy.filters.http.router } ]");
    let config = load_str(&wrapped, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{wrapped}"));
    assert_eq!(config.listeners[0].http.stat_prefix, "ingress_http");
}

#[test]
fn semantic_errors_name_their_field() {
    let e = error_of(&GOOD.replace("cluster: backend, timeout", "cluster: nowhere, timeout"));
    assert!(e.path.ends_with("routes[0].route.cluster"), "{e}");
    assert!(e.message.contains("nowhere"), "{e}");
    let e = error_of(&GOOD.replace("type: STRICT_DNS", "type: STATIC"));
    assert!(e.path.ends_with("socket_address.address"), "{e}");
    let e = error_of(&GOOD.replace("address: 0.0.0.0", "address: example.com"));
    assert_eq!(
        e.path,
        "static_resources.listeners[0].address.socket_address.address"
    );
}

#[test]
fn yaml_syntax_errors_are_reported() {
    let e = error_of("static_resources: [");
    assert!(!e.message.is_empty());
}
