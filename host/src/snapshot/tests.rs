use super::*;
use crate::config::cluster_spec as spec;
use crate::config::http_manager::CodecType;
use crate::config::*;
use std::time::Duration;

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
    assert_eq!(cluster.protocol, spec::UpstreamProtocol::Http2);
    assert_eq!(cluster.http2.max_concurrent_streams, 7);
    assert_eq!(cluster.max_requests_per_connection, Some(10));
    assert_eq!(cluster.thresholds.max_connections, 4);
    assert_eq!(cluster.thresholds.max_pending_requests, 2);
    assert_eq!(cluster.thresholds.max_requests, 1024);
    assert_eq!(cluster.connect_timeout, Duration::from_secs(1));
    assert_eq!(cluster.lb_policy, spec::LbPolicy::LeastRequest);
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
    let e = error_of(&GOOD.replace("LEAST_REQUEST", "LOAD_BALANCING_POLICY_CONFIG"));
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

/// Found by the config_loader fuzz target: an empty key at the top gave an empty path.
#[test]
fn an_empty_top_level_key_is_reported_at_the_top() {
    let e = error_of("{\"\": 1}");
    assert_eq!(e.path, ".");
    assert!(e.message.contains("unknown field"), "{e}");
}

#[test]
fn yaml_syntax_errors_are_reported() {
    let e = error_of("static_resources: [");
    assert!(!e.message.is_empty());
}

/// The HTTP/3 example: Envoy's shapes for QUIC listeners and HTTP/3 clusters.
const H3: &str = include_str!("../../../configs/http3_downstream_upstream.yaml");

/// An example config with its certificate paths (relative to the repository root, where the
/// README runs them) made absolute: the config's files are read when it loads, and unit
/// tests run in `host/`.
fn example(text: &str) -> String {
    let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/src/upstream/testdata/");
    text.replace("host/src/upstream/testdata/", testdata)
}

fn h3_variant(from: &str, to: &str) -> String {
    assert!(H3.contains(from), "the example contains {from:?}");
    example(H3).replacen(from, to, 1)
}

#[test]
fn loads_envoys_http3_shapes() {
    let config = load_str(&example(H3), "h3.yaml").unwrap();
    let tcp = &config.listeners[0];
    assert!(tcp.quic.is_none());
    let quic = &config.listeners[1];
    let settings = quic.quic.expect("a QUIC listener");
    assert_eq!(settings.max_concurrent_streams, 100);
    assert_eq!(quic.http.codec, CodecType::HTTP3);
    assert_eq!(quic.tls.as_ref().map(|t| t.certificates.len()), Some(1));
    assert_eq!(
        quic.address.port(),
        tcp.address.port(),
        "one port number, two protocols"
    );
    let h3 = &config.clusters[0];
    assert_eq!(h3.protocol, spec::UpstreamProtocol::Http3);
    assert_eq!(h3.max_requests_per_connection, Some(1000));
    let tls = h3
        .tls
        .as_ref()
        .expect("upstream TLS from QuicUpstreamTransport");
    assert_eq!(tls.sni.as_deref(), Some("localhost"));
    assert!(tls.ca_file.is_some());
    let auto = &config.clusters[1];
    assert_eq!(auto.protocol, spec::UpstreamProtocol::AutoHttp3);
    assert_eq!(auto.quic_hints, vec![("localhost".to_owned(), 8444)]);
}

/// The WebSocket-over-HTTP/3 example: the QUIC listener advertises extended CONNECT, the
/// other does not.
#[test]
fn websocket_over_h3_example_allows_extended_connect_on_its_quic_listener() {
    let text = example(include_str!("../../../configs/websocket_h1_h3_h1.yaml"));
    let config = load_str(&text, "websocket_h1_h3_h1.yaml").unwrap();
    let (edge, inner) = (&config.listeners[0], &config.listeners[1]);
    assert!(!edge.http.allow_extended_connect);
    assert!(inner.quic.is_some());
    assert!(inner.http.allow_extended_connect);
    assert_eq!(config.clusters[0].protocol, spec::UpstreamProtocol::Http3);
    let off = load_str(&example(H3), "h3.yaml").unwrap();
    assert!(
        !off.listeners[1].http.allow_extended_connect,
        "off unless configured"
    );
}

#[test]
fn quic_listener_rules_name_their_fields() {
    let no_quic_options = h3_variant("      quic_options: {}\n", "");
    let error = error_of(&no_quic_options);
    assert_eq!(
        error.path,
        "static_resources.listeners[1].udp_listener_config.quic_options"
    );
    let not_http3 = h3_variant("codec_type: HTTP3", "codec_type: AUTO");
    assert_eq!(
        error_of(&not_http3).path,
        "static_resources.listeners[1].filter_chains[0].filters[0].typed_config.codec_type"
    );
    let tcp_http3 = h3_variant(
        "stat_prefix: ingress_tcp",
        "stat_prefix: ingress_tcp\n          codec_type: HTTP3",
    );
    assert_eq!(
        error_of(&tcp_http3).path,
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.codec_type"
    );
    let unknown = h3_variant(
        "          downstream_tls_context:\n",
        "          bogus: 1\n          downstream_tls_context:\n",
    );
    let error = error_of(&unknown);
    assert_eq!(
        error.path,
        "static_resources.listeners[1].filter_chains[0].transport_socket.typed_config.bogus",
        "{error}"
    );
}

#[test]
fn http3_cluster_rules_name_their_fields() {
    let both = h3_variant(
        "          http3_protocol_options: {}\n        common_http_protocol_options",
        "          http3_protocol_options: {}\n          http2_protocol_options: {}\n        common_http_protocol_options",
    );
    let error = error_of(&both);
    assert!(error.path.ends_with(".explicit_http_config"), "{error}");
    let tls_socket = h3_variant(
        "      name: envoy.transport_sockets.quic\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport\n        upstream_tls_context:\n          sni: localhost\n          common_tls_context:",
        "      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: localhost\n        common_tls_context:",
    );
    let error = error_of(&tls_socket);
    assert_eq!(
        error.path, "static_resources.clusters[0].transport_socket",
        "{error}"
    );
    let no_cache = h3_variant(
        "          alternate_protocols_cache_options:\n            name: default_alternate_protocols_cache\n            prepopulated_entries:\n            - {hostname: localhost, port: 8444}\n",
        "",
    );
    let error = error_of(&no_cache);
    assert!(
        error
            .path
            .ends_with("auto_config.alternate_protocols_cache_options"),
        "{error}"
    );
    let bad_header = h3_variant("key: alt-svc", "key: \"alt svc\"");
    let error = error_of(&bad_header);
    assert!(
        error
            .path
            .ends_with("route_config.response_headers_to_add[0].header.key"),
        "{error}"
    );
}

#[test]
fn path_and_host_normalization_fields() {
    use crate::config::http_manager::PathWithEscapedSlashesAction;
    use crate::config::http_manager::StripPort;
    let config = load_str(GOOD, "test.yaml").unwrap();
    let http = &config.listeners[0].http;
    assert!(
        http.path_normalization.normalize_path,
        "weir normalises paths by default"
    );
    assert!(!http.path_normalization.merge_slashes);
    assert_eq!(
        http.path_normalization.escaped_slashes,
        PathWithEscapedSlashesAction::IMPLEMENTATION_SPECIFIC_DEFAULT
    );
    assert_eq!(http.strip_port, StripPort::Never);

    let set = GOOD.replace(
        "codec_type: AUTO",
        "codec_type: AUTO\n          normalize_path: false\n          merge_slashes: true\n          path_with_escaped_slashes_action: REJECT_REQUEST\n          strip_any_host_port: true",
    );
    let http = load_str(&set, "test.yaml")
        .unwrap()
        .listeners
        .remove(0)
        .http;
    assert!(!http.path_normalization.normalize_path);
    assert!(http.path_normalization.merge_slashes);
    assert_eq!(
        http.path_normalization.escaped_slashes,
        PathWithEscapedSlashesAction::REJECT_REQUEST
    );
    assert_eq!(http.strip_port, StripPort::Any);

    let both = GOOD.replace(
        "codec_type: AUTO",
        "codec_type: AUTO\n          strip_matching_host_port: true\n          strip_any_host_port: true",
    );
    let e = error_of(&both);
    assert!(e.path.ends_with("typed_config.strip_any_host_port"), "{e}");
    let e = error_of(&GOOD.replace(
        "codec_type: AUTO",
        "codec_type: AUTO\n          path_with_escaped_slashes_action: UNESCAPE",
    ));
    assert!(e.path.ends_with("path_with_escaped_slashes_action"), "{e}");
    assert!(e.message.contains("UNESCAPE_AND_FORWARD"), "{e}");
}

/// `retry_policy` on a virtual host and a route (the route's wins, whole), and a cluster's
/// `retry_budget`, load with Envoy's names; a bad retry field is named by its path.
#[test]
fn retry_policies_and_budgets_load_with_envoys_names() {
    let text = GOOD
        .replace(
            "              domains: [\"*\"]\n",
            "              domains: [\"*\"]\n              include_request_attempt_count: true\n              retry_policy: { retry_on: 5xx, num_retries: 4 }\n",
        )
        .replace(
            "              - match: { prefix: \"/\" }\n",
            "              - match: { prefix: \"/own\" }\n                route: { cluster: backend, retry_policy: { retry_on: \"connect-failure,reset\" } }\n              - match: { prefix: \"/\" }\n",
        )
        .replace(
            "thresholds: [ { max_connections: 4, max_pending_requests: 2 } ]",
            "thresholds: [ { max_connections: 4, max_pending_requests: 2, retry_budget: { budget_percent: { value: 25 } } } ]",
        );
    let config = load_str(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let routes = &config.listeners[0].http.routes;
    let action = |path: &str| match routes
        .find("h", path, &http::HeaderMap::new())
        .map(|r| &r.action)
    {
        Some(crate::route::RouteAction::Forward(action)) => action.clone(),
        other => panic!("{path}: {other:?}"),
    };
    let inherited = action("/x");
    let policy = inherited.retry.expect("the virtual host's policy");
    assert_eq!(policy.num_retries, 4);
    assert!(inherited.include_attempt_count);
    let own = action("/own").retry.expect("the route's own policy");
    assert_eq!(
        own.num_retries, 1,
        "the route's policy replaces the virtual host's whole"
    );
    assert!(own.retry_on.any(crate::route::retry::RetryOn::RESET));
    assert!(!own.retry_on.any(crate::route::retry::RetryOn::FIVE_XX));
    assert_eq!(
        config.clusters[0].thresholds.retry_budget,
        Some(spec::RetryBudget {
            budget_basis_points: 2500,
            min_retry_concurrency: 3
        })
    );
    let e = error_of(&text.replace("retry_on: 5xx", "retry_on: \"5xx,bogus\""));
    assert!(
        e.path.ends_with("virtual_hosts[0].retry_policy.retry_on"),
        "{e}"
    );
    let e = error_of(&text.replace("value: 25", "value: 250"));
    assert!(
        e.path
            .ends_with("circuit_breakers.thresholds[0].retry_budget.budget_percent.value"),
        "{e}"
    );
}
