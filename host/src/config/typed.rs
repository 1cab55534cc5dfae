//! Fields whose `typed_config` `"@type"` picks what they contain.
//!
//! Envoy writes an extension as `{name, typed_config: {"@type": URL, ...fields}}`, sometimes
//! wrapped in a `TypedStruct` (`{"@type": ...TypedStruct, type_url: URL, value: {...}}`), and for
//! well-known extensions with the `name` alone. Each is read here into a typed enum. An error
//! inside the typed fields keeps its own field path: it is carried in the message between
//! [`PATH_MARK`]s and joined onto the outer path by [`super::ConfigError`].

use super::schema::{
    DownstreamTlsContext, HttpConnectionManager, QuicDownstreamTransport, QuicUpstreamTransport,
    TcpProxy, UpstreamHttpProtocolOptions, UpstreamTlsContext,
};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::{Mapping, Value};
use std::collections::BTreeMap;

/// Marks the inner field path inside an error message (see the module docs).
pub(super) const PATH_MARK: char = '\u{1}';

const TYPE_PREFIX: &str = "type.googleapis.com/";
const TYPED_STRUCTS: &[&str] = &["udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"];

/// Type names of the extensions weir implements.
pub mod type_names {
    /// The HTTP connection manager network filter.
    pub const HCM: &str =
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    /// The TCP proxy network filter.
    pub const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
    /// The router HTTP filter.
    pub const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
    /// Downstream TLS.
    pub const DOWNSTREAM_TLS: &str =
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
    /// Upstream TLS.
    pub const UPSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
    /// The proxy-wasm HTTP filter.
    pub const WASM: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
    /// The proxy-wasm network (L4) filter.
    pub const NETWORK_WASM: &str = "envoy.extensions.filters.network.wasm.v3.Wasm";
    /// QUIC (HTTP/3) on a listener's filter chain.
    pub const QUIC_DOWNSTREAM: &str =
        "envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport";
    /// QUIC (HTTP/3) to a cluster's hosts.
    pub const QUIC_UPSTREAM: &str =
        "envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport";
    /// Upstream HTTP protocol options.
    pub const HTTP_PROTOCOL_OPTIONS: &str =
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    /// The listener filter that reads a redirected connection's original destination.
    pub const ORIGINAL_DST: &str = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst";
    /// The overload manager's global downstream connections monitor.
    pub const DOWNSTREAM_CONNECTIONS: &str =
        "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig";
    /// The overload manager's memory monitor.
    pub const FIXED_HEAP: &str = "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig";
}

/// Extension names that may stand alone, without `typed_config`, and the type each means.
const WELL_KNOWN_NAMES: &[(&str, &str)] = &[
    ("envoy.filters.http.router", type_names::ROUTER),
    ("envoy.router", type_names::ROUTER),
    (
        "envoy.filters.listener.original_dst",
        type_names::ORIGINAL_DST,
    ),
    ("envoy.listener.original_dst", type_names::ORIGINAL_DST),
];

/// Splits `typed_config` into its type name and its fields. With no `typed_config`, the
/// extension's `name` must be one that stands alone.
pub(super) fn split_typed(
    name: &str,
    typed_config: Option<Value>,
) -> Result<(String, Value), String> {
    let Some(typed_config) = typed_config else {
        return WELL_KNOWN_NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, type_name)| (type_name.to_string(), Value::Mapping(Mapping::new())))
            .ok_or_else(|| format!("extension {name:?} needs a typed_config with an \"@type\""));
    };
    let Value::Mapping(mut fields) = typed_config else {
        return Err(format!(
            "{PATH_MARK}typed_config{PATH_MARK}expected a mapping"
        ));
    };
    let type_url = match fields.remove("@type") {
        Some(Value::String(url)) => url,
        Some(_) => {
            return Err(format!(
                "{PATH_MARK}typed_config.@type{PATH_MARK}expected a string"
            ));
        }
        None => {
            return Err(format!(
                "{PATH_MARK}typed_config{PATH_MARK}missing \"@type\""
            ));
        }
    };
    let type_name = type_url
        .strip_prefix(TYPE_PREFIX)
        .unwrap_or(&type_url)
        .to_string();
    if !TYPED_STRUCTS.contains(&type_name.as_str()) {
        return Ok((type_name, Value::Mapping(fields)));
    }
    let inner_url = match fields.remove("type_url") {
        Some(Value::String(url)) => url,
        _ => {
            return Err(format!(
                "{PATH_MARK}typed_config.type_url{PATH_MARK}a TypedStruct needs a string type_url"
            ));
        }
    };
    let value = fields
        .remove("value")
        .unwrap_or(Value::Mapping(Mapping::new()));
    if let Some((Value::String(key), _)) = fields.into_iter().next() {
        return Err(format!(
            "{PATH_MARK}typed_config.{key}{PATH_MARK}unknown field, expected `type_url` or `value`"
        ));
    }
    let inner = inner_url
        .strip_prefix(TYPE_PREFIX)
        .unwrap_or(&inner_url)
        .to_string();
    Ok((inner, value))
}

/// Reads `value` as `T`, keeping the field path of an error inside it, relative to
/// `typed_config`.
pub(super) fn typed<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        let message = error.into_inner().to_string();
        match message.find(PATH_MARK) {
            // A typed field nested in this one: join its path onto ours.
            Some(start) => {
                let nested = &message[start + PATH_MARK.len_utf8()..];
                format!("{PATH_MARK}typed_config{path}.{nested}")
            }
            None => format!(
                "{PATH_MARK}typed_config{path}{PATH_MARK}{}",
                super::strip_yaml_path(&message)
            ),
        }
    })
}

fn unsupported(kind: &str, type_name: &str, accepted: &[&str]) -> String {
    format!(
        "{PATH_MARK}typed_config.@type{PATH_MARK}unsupported {kind} type {type_name:?}; weir supports {}",
        accepted.join(", ")
    )
}

/// The fields every typed extension has.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtension {
    name: String,
    #[serde(default)]
    typed_config: Option<Value>,
}

/// `filter_chains[].filters[]`.
#[derive(Debug, Clone)]
pub struct NetworkFilter {
    /// The filter's `name`.
    pub name: String,
    /// What it is.
    pub config: NetworkFilterConfig,
}

/// The network filters weir implements.
#[derive(Debug, Clone)]
pub enum NetworkFilterConfig {
    /// `envoy.filters.network.http_connection_manager`.
    HttpConnectionManager(Box<HttpConnectionManager>),
    /// `envoy.filters.network.tcp_proxy`.
    TcpProxy(Box<TcpProxy>),
    /// `envoy.filters.network.wasm`: a proxy-wasm module on a connection's bytes, before the
    /// tcp_proxy. Its config has the HTTP Wasm filter's shape (see [`super::wasm`]).
    Wasm(Box<super::wasm::WasmFilterConfig>),
}

impl<'de> Deserialize<'de> for NetworkFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawExtension::deserialize(deserializer)?;
        let (type_name, value) =
            split_typed(&raw.name, raw.typed_config).map_err(D::Error::custom)?;
        let config = match type_name.as_str() {
            type_names::HCM => NetworkFilterConfig::HttpConnectionManager(Box::new(
                typed(value).map_err(D::Error::custom)?,
            )),
            type_names::TCP_PROXY => {
                NetworkFilterConfig::TcpProxy(Box::new(typed(value).map_err(D::Error::custom)?))
            }
            type_names::NETWORK_WASM => {
                NetworkFilterConfig::Wasm(Box::new(typed(value).map_err(D::Error::custom)?))
            }
            other => {
                return Err(D::Error::custom(unsupported(
                    "network filter",
                    other,
                    &[
                        type_names::HCM,
                        type_names::TCP_PROXY,
                        type_names::NETWORK_WASM,
                    ],
                )));
            }
        };
        Ok(NetworkFilter {
            name: raw.name,
            config,
        })
    }
}

/// `http_filters[]`.
#[derive(Debug, Clone)]
pub struct HttpFilter {
    /// The filter's `name`.
    pub name: String,
    /// What it is.
    pub config: HttpFilterConfig,
}

/// The HTTP filters weir implements.
#[derive(Debug, Clone)]
pub enum HttpFilterConfig {
    /// `envoy.filters.http.router`: forwards to the route's cluster. Always last.
    Router(RouterConfig),
    /// `envoy.filters.http.wasm`: a proxy-wasm module (see [`super::wasm`]).
    Wasm(Box<super::wasm::WasmFilterConfig>),
}

/// `envoy.extensions.filters.http.router.v3.Router`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Don't add `x-envoy-*` headers (weir adds none either way).
    #[serde(default)]
    pub suppress_envoy_headers: bool,
}

impl<'de> Deserialize<'de> for HttpFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawExtension::deserialize(deserializer)?;
        let (type_name, value) =
            split_typed(&raw.name, raw.typed_config).map_err(D::Error::custom)?;
        let config = match type_name.as_str() {
            type_names::ROUTER => HttpFilterConfig::Router(typed(value).map_err(D::Error::custom)?),
            type_names::WASM => {
                HttpFilterConfig::Wasm(Box::new(typed(value).map_err(D::Error::custom)?))
            }
            other => {
                return Err(D::Error::custom(unsupported(
                    "HTTP filter",
                    other,
                    &[type_names::ROUTER, type_names::WASM],
                )));
            }
        };
        Ok(HttpFilter {
            name: raw.name,
            config,
        })
    }
}

/// `listener_filters[]`.
#[derive(Debug, Clone)]
pub struct ListenerFilter {
    /// The filter's `name`.
    pub name: String,
    /// What it is.
    pub config: ListenerFilterConfig,
}

/// The listener filters weir implements.
#[derive(Debug, Clone)]
pub enum ListenerFilterConfig {
    /// `envoy.filters.listener.original_dst`: the connection's original destination (before
    /// an iptables/nftables REDIRECT) is where an `ORIGINAL_DST` cluster connects.
    OriginalDst(OriginalDstConfig),
}

/// `envoy.extensions.filters.listener.original_dst.v3.OriginalDst`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalDstConfig {
    /// Windows only in Envoy (`INBOUND`/`OUTBOUND`); accepted, Linux needs none.
    #[serde(default)]
    pub traffic_direction: Option<String>,
}

impl<'de> Deserialize<'de> for ListenerFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawExtension::deserialize(deserializer)?;
        let (type_name, value) =
            split_typed(&raw.name, raw.typed_config).map_err(D::Error::custom)?;
        let config = match type_name.as_str() {
            type_names::ORIGINAL_DST => {
                ListenerFilterConfig::OriginalDst(typed(value).map_err(D::Error::custom)?)
            }
            other => {
                return Err(D::Error::custom(unsupported(
                    "listener filter",
                    other,
                    &[type_names::ORIGINAL_DST],
                )));
            }
        };
        Ok(ListenerFilter {
            name: raw.name,
            config,
        })
    }
}

/// `transport_socket`.
#[derive(Debug, Clone)]
pub struct TransportSocket {
    /// The socket's `name` (e.g. `envoy.transport_sockets.tls`).
    pub name: String,
    /// What it is.
    pub config: TransportSocketConfig,
}

/// The transport sockets weir implements.
#[derive(Debug, Clone)]
pub enum TransportSocketConfig {
    /// TLS on a listener's filter chain.
    DownstreamTls(Box<DownstreamTlsContext>),
    /// TLS to a cluster's hosts.
    UpstreamTls(Box<UpstreamTlsContext>),
    /// QUIC on a listener's filter chain (HTTP/3 listeners).
    QuicDownstream(Box<QuicDownstreamTransport>),
    /// QUIC to a cluster's hosts (HTTP/3 clusters).
    QuicUpstream(Box<QuicUpstreamTransport>),
}

impl<'de> Deserialize<'de> for TransportSocket {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawExtension::deserialize(deserializer)?;
        let (type_name, value) =
            split_typed(&raw.name, raw.typed_config).map_err(D::Error::custom)?;
        let config = match type_name.as_str() {
            type_names::DOWNSTREAM_TLS => TransportSocketConfig::DownstreamTls(Box::new(
                typed(value).map_err(D::Error::custom)?,
            )),
            type_names::UPSTREAM_TLS => TransportSocketConfig::UpstreamTls(Box::new(
                typed(value).map_err(D::Error::custom)?,
            )),
            type_names::QUIC_DOWNSTREAM => TransportSocketConfig::QuicDownstream(Box::new(
                typed(value).map_err(D::Error::custom)?,
            )),
            type_names::QUIC_UPSTREAM => TransportSocketConfig::QuicUpstream(Box::new(
                typed(value).map_err(D::Error::custom)?,
            )),
            other => {
                return Err(D::Error::custom(unsupported(
                    "transport socket",
                    other,
                    &[
                        type_names::DOWNSTREAM_TLS,
                        type_names::UPSTREAM_TLS,
                        type_names::QUIC_DOWNSTREAM,
                        type_names::QUIC_UPSTREAM,
                    ],
                )));
            }
        };
        Ok(TransportSocket {
            name: raw.name,
            config,
        })
    }
}

/// `typed_extension_protocol_options` of a cluster: the one key weir knows.
#[derive(Debug, Clone, Default)]
pub struct ProtocolOptionsMap {
    /// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.
    pub http: Option<UpstreamHttpProtocolOptions>,
}

impl<'de> Deserialize<'de> for ProtocolOptionsMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = BTreeMap::<String, Value>::deserialize(deserializer)?;
        let mut options = ProtocolOptionsMap::default();
        for (key, value) in entries {
            if key != type_names::HTTP_PROTOCOL_OPTIONS {
                return Err(D::Error::custom(format!(
                    "{PATH_MARK}{key}{PATH_MARK}unsupported protocol options; weir supports {}",
                    type_names::HTTP_PROTOCOL_OPTIONS
                )));
            }
            let (type_name, fields) =
                split_typed(&key, Some(value)).map_err(|e| D::Error::custom(nest(&key, e)))?;
            if type_name != type_names::HTTP_PROTOCOL_OPTIONS {
                return Err(D::Error::custom(nest(
                    &key,
                    unsupported(
                        "protocol options",
                        &type_name,
                        &[type_names::HTTP_PROTOCOL_OPTIONS],
                    ),
                )));
            }
            options.http = Some(typed(fields).map_err(|e| D::Error::custom(nest(&key, e)))?);
        }
        Ok(options)
    }
}

/// Puts `key` in front of the inner path of `message`. The map's values are written without a
/// `typed_config` key, so that part of the inner path is replaced by the key.
fn nest(key: &str, message: String) -> String {
    match message.strip_prefix(PATH_MARK) {
        Some(rest) => {
            let rest = rest.strip_prefix("typed_config").unwrap_or(rest);
            format!("{PATH_MARK}{key}{rest}")
        }
        None => format!("{PATH_MARK}{key}{PATH_MARK}{message}"),
    }
}
