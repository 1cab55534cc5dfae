//! Bootstrap builders with Envoy's v3 field names, as JSON values (tests tweak them in place).

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;

/// `typed_config` type of the HTTP connection manager.
pub const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
/// `typed_config` type of the router filter.
pub const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
/// `typed_config` type of the downstream TLS context.
pub const DOWNSTREAM_TLS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
/// Key and `@type` of the upstream HTTP protocol options.
pub const UPSTREAM_HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// `{socket_address: {address: 127.0.0.1, port_value: port}}`.
pub fn address(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

/// A bootstrap with an admin listener on `admin_port`.
pub fn bootstrap(admin_port: u16, listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "admin": {"address": address(admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

/// An HttpConnectionManager `typed_config` (codec AUTO, router filter).
pub fn hcm(stat_prefix: &str, virtual_hosts: Vec<Value>) -> Value {
    json!({
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": {"name": "local_route", "virtual_hosts": virtual_hosts},
        "http_filters": [
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}
        ],
    })
}

/// A listener on 127.0.0.1:`port` whose only filter is `hcm`.
pub fn listener(name: &str, port: u16, hcm: Value) -> Value {
    json!({
        "name": name,
        "address": address(port),
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": hcm,
            }],
        }],
    })
}

/// Adds a DownstreamTlsContext (ALPN h2, http/1.1) to the listener's filter chain.
pub fn with_tls(mut listener: Value, cert: &Path, key: &Path) -> Value {
    listener["filter_chains"][0]["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS_TYPE,
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{
                    "certificate_chain": {"filename": cert.to_str().expect("utf-8 path")},
                    "private_key": {"filename": key.to_str().expect("utf-8 path")},
                }],
            },
        },
    });
    listener
}

/// A virtual host.
pub fn vhost(name: &str, domains: &[&str], routes: Vec<Value>) -> Value {
    json!({"name": name, "domains": domains, "routes": routes})
}

/// `match: {prefix}` -> `route: {cluster}`.
pub fn route_prefix(prefix: &str, cluster: &str) -> Value {
    json!({"match": {"prefix": prefix}, "route": {"cluster": cluster}})
}

/// `match: {prefix}` -> `direct_response: {status, body.inline_string}`.
pub fn direct(prefix: &str, status: u16, body: &str) -> Value {
    json!({
        "match": {"prefix": prefix},
        "direct_response": {"status": status, "body": {"inline_string": body}},
    })
}

/// A STATIC cluster over `endpoints`, round robin, 1 s connect timeout.
pub fn static_cluster(name: &str, endpoints: &[SocketAddr]) -> Value {
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|a| {
            json!({"endpoint": {"address": {"socket_address": {
                "address": a.ip().to_string(), "port_value": a.port()}}}})
        })
        .collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]},
    })
}

/// Makes `cluster` speak HTTP/2 upstream (prior knowledge), optionally capping requests per
/// connection.
pub fn upstream_http2(cluster: &mut Value, max_requests_per_connection: Option<u32>) {
    let mut options = json!({
        "@type": format!("type.googleapis.com/{UPSTREAM_HTTP_OPTIONS}"),
        "explicit_http_config": {"http2_protocol_options": {}},
    });
    if let Some(n) = max_requests_per_connection {
        options["common_http_protocol_options"] = json!({"max_requests_per_connection": n});
    }
    cluster["typed_extension_protocol_options"] = json!({ UPSTREAM_HTTP_OPTIONS: options });
}

/// Sets `circuit_breakers.thresholds[0]` (DEFAULT priority) of `cluster`.
pub fn circuit_breakers(
    cluster: &mut Value,
    max_connections: Option<u32>,
    max_pending_requests: Option<u32>,
    max_requests: Option<u32>,
) {
    let mut t = json!({"priority": "DEFAULT"});
    if let Some(n) = max_connections {
        t["max_connections"] = json!(n);
    }
    if let Some(n) = max_pending_requests {
        t["max_pending_requests"] = json!(n);
    }
    if let Some(n) = max_requests {
        t["max_requests"] = json!(n);
    }
    cluster["circuit_breakers"] = json!({"thresholds": [t]});
}

/// The ports of a one-listener setup.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Admin listener.
    pub admin: u16,
    /// The HTTP listener (stat_prefix `ingress_http`).
    pub http: u16,
}

impl Ports {
    /// Two fresh ports.
    pub fn new() -> Ports {
        Ports {
            admin: crate::free_port(),
            http: crate::free_port(),
        }
    }

    /// 127.0.0.1:http.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self::new()
    }
}

/// One listener (`ingress_http`, every domain, prefix `/`) to one STATIC cluster `backend`.
pub fn simple(ports: Ports, backend: &[SocketAddr]) -> Value {
    bootstrap(
        ports.admin,
        vec![listener(
            "ingress",
            ports.http,
            hcm(
                "ingress_http",
                vec![vhost("all", &["*"], vec![route_prefix("/", "backend")])],
            ),
        )],
        vec![static_cluster("backend", backend)],
    )
}

/// The HCM `typed_config` of listener 0 in a bootstrap, to tweak.
pub fn hcm_of(config: &mut Value) -> &mut Value {
    &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

/// Cluster `i` of a bootstrap, to tweak.
pub fn cluster_of(config: &mut Value, i: usize) -> &mut Value {
    &mut config["static_resources"]["clusters"][i]
}

/// `typed_config` type of the TCP proxy network filter.
pub const TCP_PROXY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// Sets the HCM's `upgrade_configs` (e.g. `[{"upgrade_type": "websocket"}]`).
pub fn set_upgrades(hcm: &mut Value, upgrade_configs: Value) {
    hcm["upgrade_configs"] = upgrade_configs;
}

/// `http2_protocol_options.allow_connect: true` on an HCM (downstream RFC 8441, extended
/// CONNECT advertised in SETTINGS).
pub fn allow_connect_downstream(hcm: &mut Value) {
    hcm["http2_protocol_options"] = json!({"allow_connect": true});
}

/// Like [`upstream_http2`], with `http2_protocol_options.allow_connect: true` (the hop that
/// carries upgrades as extended CONNECT).
pub fn upstream_http2_allow_connect(cluster: &mut Value) {
    let options = json!({
        "@type": format!("type.googleapis.com/{UPSTREAM_HTTP_OPTIONS}"),
        "explicit_http_config": {"http2_protocol_options": {"allow_connect": true}},
    });
    cluster["typed_extension_protocol_options"] = json!({ UPSTREAM_HTTP_OPTIONS: options });
}

/// `match: {connect_matcher: {}}` -> `route: {cluster, upgrade_configs}`.
pub fn route_connect(cluster: &str, upgrade_configs: Option<Value>) -> Value {
    let mut route = json!({"match": {"connect_matcher": {}}, "route": {"cluster": cluster}});
    if let Some(u) = upgrade_configs {
        route["route"]["upgrade_configs"] = u;
    }
    route
}

/// A route's `upgrade_configs` that terminates CONNECT here (`connect_config`), with
/// `allow_post` when asked.
pub fn terminate_connect(allow_post: bool) -> Value {
    let connect_config = if allow_post {
        json!({"allow_post": true})
    } else {
        json!({})
    };
    json!([{"upgrade_type": "CONNECT", "connect_config": connect_config}])
}

/// A listener on 127.0.0.1:`port` whose one filter is `envoy.filters.network.tcp_proxy` to
/// `cluster`, encapsulated in HTTP when `tunneling_config` is given.
pub fn tcp_proxy_listener(
    name: &str,
    port: u16,
    stat_prefix: &str,
    cluster: &str,
    tunneling_config: Option<Value>,
) -> Value {
    let mut proxy = json!({
        "@type": TCP_PROXY_TYPE,
        "stat_prefix": stat_prefix,
        "cluster": cluster,
    });
    if let Some(t) = tunneling_config {
        proxy["tunneling_config"] = t;
    }
    json!({
        "name": name,
        "address": address(port),
        "filter_chains": [{
            "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}],
        }],
    })
}

/// A QUIC (HTTP/3) listener in Envoy's shape on UDP 127.0.0.1:`port`: `udp_listener_config`
/// with `quic_options`, the QUIC transport socket with `cert`/`key`, and `hcm` switched to
/// `codec_type: HTTP3`.
pub fn quic_listener(name: &str, port: u16, mut hcm: Value, cert: &Path, key: &Path) -> Value {
    hcm["codec_type"] = json!("HTTP3");
    hcm["http3_protocol_options"] = json!({});
    json!({
        "name": name,
        "address": {"socket_address": {"protocol": "UDP", "address": "127.0.0.1", "port_value": port}},
        "udp_listener_config": {"quic_options": {}, "downstream_socket_config": {"prefer_gro": true}},
        "filter_chains": [{
            "transport_socket": {
                "name": "envoy.transport_sockets.quic",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport",
                    "downstream_tls_context": {"common_tls_context": {"tls_certificates": [{
                        "certificate_chain": {"filename": cert.to_str().expect("utf-8 path")},
                        "private_key": {"filename": key.to_str().expect("utf-8 path")},
                    }]}},
                },
            },
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": hcm,
            }],
        }],
    })
}

/// Adds a QUIC listener (see [`quic_listener`]) beside listener 0 of `config`, on the same port
/// number (UDP), with listener 0's connection manager.
pub fn add_quic_listener(config: &mut Value, port: u16, cert: &Path, key: &Path) {
    let hcm = hcm_of(config).clone();
    let quic = quic_listener("quic", port, hcm, cert, key);
    config["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners")
        .push(quic);
}

/// Makes `cluster` speak HTTP/3 (Envoy's shape: `explicit_http_config.http3_protocol_options`
/// and a `QuicUpstreamTransport` transport socket with SNI `localhost`), optionally capping
/// requests per connection.
pub fn upstream_http3(cluster: &mut Value, max_requests_per_connection: Option<u32>) {
    let mut options = json!({
        "@type": format!("type.googleapis.com/{UPSTREAM_HTTP_OPTIONS}"),
        "explicit_http_config": {"http3_protocol_options": {}},
    });
    if let Some(n) = max_requests_per_connection {
        options["common_http_protocol_options"] = json!({"max_requests_per_connection": n});
    }
    cluster["typed_extension_protocol_options"] = json!({ UPSTREAM_HTTP_OPTIONS: options });
    cluster["transport_socket"] = json!({
        "name": "envoy.transport_sockets.quic",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport",
            "upstream_tls_context": {"sni": "localhost"},
        },
    });
}
