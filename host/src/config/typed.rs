//! Fields whose `typed_config` `"@type"` picks what they contain.
//!
//! Envoy writes an extension as `{name, typed_config: {"@type": URL, ...fields}}`, sometimes
//! wrapped in a `TypedStruct` (`{"@type": ...TypedStruct, type_url: URL, value: {...}}`), and for
//! well-known extensions with the `name` alone. Each resource reads its own extensions into a
//! typed enum (e.g. [`super::listener::NetworkFilter`]) with the helpers here. An error inside
//! the typed fields keeps its own field path: it is carried in the message between
//! [`PATH_MARK`]s and joined onto the outer path by [`super::ConfigError`].

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

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
    /// The health check HTTP filter.
    pub const HEALTH_CHECK: &str = "envoy.extensions.filters.http.health_check.v3.HealthCheck";
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

pub(super) fn unsupported(kind: &str, type_name: &str, accepted: &[&str]) -> String {
    format!(
        "{PATH_MARK}typed_config.@type{PATH_MARK}unsupported {kind} type {type_name:?}; weir supports {}",
        accepted.join(", ")
    )
}

/// The fields every typed extension has.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExtension {
    pub(super) name: String,
    #[serde(default)]
    pub(super) typed_config: Option<Value>,
}

/// Puts `key` in front of the inner path of `message`. The map's values are written without a
/// `typed_config` key, so that part of the inner path is replaced by the key.
pub(super) fn nest(key: &str, message: String) -> String {
    match message.strip_prefix(PATH_MARK) {
        Some(rest) => {
            let rest = rest.strip_prefix("typed_config").unwrap_or(rest);
            format!("{PATH_MARK}{key}{rest}")
        }
        None => format!("{PATH_MARK}{key}{PATH_MARK}{message}"),
    }
}

/// An error message of a typed field read on its own (outside a deserializer that places
/// it), as a [`super::FieldError`] whose path is the one marked inside it.
pub(super) fn inner_error(message: String) -> super::FieldError {
    let (path, message) = super::split_marked_path(&message);
    let path = if path.is_empty() {
        "typed_config".to_string()
    } else {
        path
    };
    super::FieldError::new(path, message)
}
