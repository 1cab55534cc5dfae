//! `envoy.filters.network.http_connection_manager`: its schema and its reading into
//! [`HttpManagerConfig`] (timeouts, limits, filters, upgrades, path handling), with Envoy's
//! defaults applied.

use super::cluster_spec as spec;
use super::common::{DEFAULT_BUFFER_LIMIT, nonzero};
use super::duration::ConfigDuration;
use super::http_options::{
    CommonHttpProtocolOptions, HeadersWithUnderscoresAction, Http1ProtocolOptions,
    Http2ProtocolOptions,
};
use super::quic::Http3ProtocolOptions;
use super::route::RouteConfiguration;
use super::typed::{RawExtension, split_typed, type_names, typed, unsupported};
use super::wasm::load_plugin;
use super::{FieldError, runtime};
use crate::route::RouteTable;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// `envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectionManager {
    /// Label of this manager's stats.
    pub stat_prefix: String,
    /// Which downstream codec: AUTO detects HTTP/2 by its preface or ALPN.
    #[serde(default)]
    pub codec_type: CodecType,
    /// Inline route table.
    pub route_config: RouteConfiguration,
    /// `http_filters[]`; the router must be last.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub http_filters: Vec<HttpFilter>,
    /// Options for every protocol.
    #[serde(default)]
    pub common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    /// HTTP/1.1 options.
    #[serde(default)]
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    /// HTTP/2 options.
    #[serde(default)]
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    /// HTTP/3 options (listeners with `codec_type: HTTP3`).
    #[serde(default)]
    pub http3_protocol_options: Option<Http3ProtocolOptions>,
    /// Time allowed to receive a whole request; zero or unset disables it.
    #[serde(default)]
    pub request_timeout: Option<ConfigDuration>,
    /// Time allowed to receive request headers, from the first byte of the head (weir's
    /// default 10 s; zero disables).
    #[serde(default)]
    pub request_headers_timeout: Option<ConfigDuration>,
    /// Time a stream may go without activity in either direction (default 5 min; zero
    /// disables).
    #[serde(default)]
    pub stream_idle_timeout: Option<ConfigDuration>,
    /// Most request header bytes, in KiB (default 60, at most 8192): past it, 431.
    #[serde(default)]
    pub max_request_headers_kb: Option<u32>,
    /// Use the connection's peer address as the client address and append it to
    /// x-forwarded-for (Envoy's edge setting).
    #[serde(default)]
    pub use_remote_address: bool,
    /// Give requests without x-request-id a generated one (default true).
    #[serde(default)]
    pub generate_request_id: Option<bool>,
    /// Value of the `server` response header (default "weir").
    #[serde(default)]
    pub server_name: Option<String>,
    /// Time allowed for draining connections on shutdown.
    #[serde(default)]
    pub drain_timeout: Option<ConfigDuration>,
    /// Upgrade types (`websocket`, `CONNECT`, any other) this manager takes.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub upgrade_configs: Vec<UpgradeConfig>,
    /// RFC 3986 path normalisation before filters and routing (weir's default true; Envoy's
    /// false).
    #[serde(default)]
    pub normalize_path: Option<bool>,
    /// Merge adjacent slashes in the path before filters and routing (default false).
    #[serde(default)]
    pub merge_slashes: bool,
    /// What to do with `%2F` and `%5C` in the path.
    #[serde(default)]
    pub path_with_escaped_slashes_action: PathWithEscapedSlashesAction,
    /// Strip the host's port when it is the listener's (exclusive with
    /// `strip_any_host_port`).
    #[serde(default)]
    pub strip_matching_host_port: bool,
    /// Strip any port from the host.
    #[serde(default)]
    pub strip_any_host_port: bool,
    /// `access_log[]`: Envoy's `AccessLog`s, read by [`crate::access_log`].
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub access_log: Vec<serde_json::Value>,
}

/// `path_with_escaped_slashes_action`: what a connection manager does with escaped slashes
/// (`%2F`, `%2f`, `%5C`, `%5c`) in a request path.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum PathWithEscapedSlashesAction {
    /// The implementation's choice: Envoy's and weir's is `KEEP_UNCHANGED`.
    #[default]
    IMPLEMENTATION_SPECIFIC_DEFAULT,
    /// Forward them as they are.
    KEEP_UNCHANGED,
    /// Answer 400.
    REJECT_REQUEST,
    /// Unescape them and answer 307 with the normalised path in `location` (400 for gRPC).
    UNESCAPE_AND_REDIRECT,
    /// Unescape them and go on.
    UNESCAPE_AND_FORWARD,
}

/// `upgrade_configs[]` of a connection manager.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    /// The upgrade's name, matched case-insensitively (`CONNECT` for CONNECT).
    pub upgrade_type: String,
    /// The HTTP filters for this upgrade type, replacing the default chain.
    #[serde(default)]
    pub filters: Option<Vec<HttpFilter>>,
    /// Whether the upgrade is allowed (default true); routes may override it.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `codec_type`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
pub enum CodecType {
    /// HTTP/1.1 or HTTP/2, detected per connection.
    #[default]
    AUTO,
    /// HTTP/1.1 only.
    HTTP1,
    /// HTTP/2 only.
    HTTP2,
    /// HTTP/3 (QUIC listeners only).
    HTTP3,
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

/// One `upgrade_configs[]` entry of a connection manager.
#[derive(Debug, Clone)]
pub struct UpgradeSetting {
    /// The upgrade type, lowercased (`connect` for CONNECT).
    pub upgrade_type: String,
    /// Allowed unless a route says otherwise.
    pub enabled: bool,
    /// The filter chain for this type, replacing the default one.
    pub filters: Option<Vec<std::sync::Arc<crate::wasm::PluginHandle>>>,
}

/// The HTTP connection manager of a listener.
#[derive(Debug, Clone)]
pub struct HttpManagerConfig {
    /// Label of its stats.
    pub stat_prefix: String,
    /// Which codec(s) it speaks.
    pub codec: CodecType,
    /// Virtual hosts and routes.
    pub routes: RouteTable,
    /// Close connections idle this long (Envoy default 1h; `None` = never).
    pub idle_timeout: Option<Duration>,
    /// Most headers a request may carry (Envoy default 100).
    pub max_headers_count: usize,
    /// Most bytes a request head may take (`max_request_headers_kb`, default 60 KiB).
    pub max_request_headers_bytes: u32,
    /// What to do with header names that have an underscore.
    pub headers_with_underscores: HeadersWithUnderscoresAction,
    /// Time allowed to receive request headers (weir's default 10 s).
    pub request_headers_timeout: Option<Duration>,
    /// Time a stream may go without a byte either way (default 5 min).
    pub stream_idle_timeout: Option<Duration>,
    /// Premature-reset and per-cycle limits (from `layered_runtime`).
    pub abuse: runtime::StreamAbuseLimits,
    /// Time allowed to receive a whole request.
    pub request_timeout: Option<Duration>,
    /// Downstream HTTP/2 settings.
    pub http2: spec::Http2Settings,
    /// Advertise RFC 8441 extended CONNECT.
    pub allow_connect: bool,
    /// Advertise RFC 9220 extended CONNECT on HTTP/3 (`http3_protocol_options.
    /// allow_extended_connect`).
    pub allow_extended_connect: bool,
    /// Append the peer address to x-forwarded-for and trust it as the client.
    pub use_remote_address: bool,
    /// Generate x-request-id when absent.
    pub generate_request_id: bool,
    /// `server` header of responses.
    pub server_name: String,
    /// Close connections this long after they opened.
    pub max_connection_duration: Option<Duration>,
    /// Drain a connection once it has started this many requests.
    pub max_requests_per_connection: Option<u32>,
    /// The Wasm plugins of `http_filters`, in order (the router, always last, is not listed).
    pub http_filters: Vec<std::sync::Arc<crate::wasm::PluginHandle>>,
    /// `upgrade_configs`.
    pub upgrades: Vec<UpgradeSetting>,
    /// Most body bytes a Wasm filter may hold paused: the listener's
    /// `per_connection_buffer_limit_bytes` (Envoy default 1 MiB).
    pub buffer_limit: usize,
    /// `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`.
    pub path_normalization: PathNormalization,
    /// `strip_matching_host_port` / `strip_any_host_port`.
    pub strip_port: StripPort,
    /// `access_log[]`: `None` when there is none, so a request costs nothing extra.
    pub access_log: Option<std::sync::Arc<crate::access_log::AccessLogs>>,
}

impl HttpManagerConfig {
    /// The manager's setting for `upgrade_type` (case-insensitive), if it lists that type.
    pub fn upgrade(&self, upgrade_type: &str) -> Option<&UpgradeSetting> {
        self.upgrades
            .iter()
            .find(|u| u.upgrade_type.eq_ignore_ascii_case(upgrade_type))
    }
}

/// How a connection manager normalises request paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathNormalization {
    /// RFC 3986 normalisation (`route::path::normalize_rfc3986`). weir's default is on (Envoy's is
    /// off, with a note that it will turn on): an edge proxy whose routes and filters
    /// see `/a/../admin` where the upstream sees `/admin` cannot guard `/admin`.
    pub normalize_path: bool,
    /// Merge runs of `/` into one (`route::path::merge_slashes`); default off, as Envoy.
    pub merge_slashes: bool,
    /// What to do with `%2F`, `%2f`, `%5C` and `%5c` in the path.
    pub escaped_slashes: PathWithEscapedSlashesAction,
}

impl Default for PathNormalization {
    fn default() -> Self {
        PathNormalization {
            normalize_path: true,
            merge_slashes: false,
            escaped_slashes: PathWithEscapedSlashesAction::IMPLEMENTATION_SPECIFIC_DEFAULT,
        }
    }
}

/// Which port a connection manager strips from the host before filters and routing see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StripPort {
    /// Keep the host as the client sent it (Envoy's default).
    #[default]
    Never,
    /// Strip the port when it is the listener's own (`strip_matching_host_port`).
    Matching,
    /// Strip any port (`strip_any_host_port`).
    Any,
}

/// `request_headers_timeout` when the config gives none: Envoy's edge recommendation (Envoy
/// itself has none by default, which lets a client trickle a head forever).
pub const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);

/// `stream_idle_timeout` when the config gives none (Envoy's default).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Reads the connection manager whose `typed_config` is at `path`; `clusters` are the names
/// routes and remote modules may refer to.
pub(super) fn http_manager_config(
    hcm: &HttpConnectionManager,
    path: &str,
    clusters: &[&str],
    node: &crate::wasm::NodeInfo,
) -> Result<HttpManagerConfig, FieldError> {
    let http_filters = http_filters(
        &hcm.http_filters,
        &format!("{path}.http_filters"),
        clusters,
        node,
    )?;
    let mut upgrades = Vec::new();
    for (u, upgrade) in hcm.upgrade_configs.iter().enumerate() {
        let filters = match &upgrade.filters {
            Some(filters) => Some(self::http_filters(
                filters,
                &format!("{path}.upgrade_configs[{u}].filters"),
                clusters,
                node,
            )?),
            None => None,
        };
        upgrades.push(UpgradeSetting {
            upgrade_type: upgrade.upgrade_type.to_ascii_lowercase(),
            enabled: upgrade.enabled.unwrap_or(true),
            filters,
        });
    }

    let routes = RouteTable::build(&hcm.route_config, &format!("{path}.route_config"), clusters)?;
    let common = hcm.common_http_protocol_options.clone().unwrap_or_default();
    let h2 = hcm.http2_protocol_options.clone().unwrap_or_default();
    let defaults = spec::Http2Settings::downstream();
    let max_headers_count = common.max_headers_count.unwrap_or(100);
    if max_headers_count == 0 {
        return Err(FieldError::new(
            format!("{path}.common_http_protocol_options.max_headers_count"),
            "must be at least 1",
        ));
    }
    let max_request_headers_kb = hcm.max_request_headers_kb.unwrap_or(60);
    if !(1..=8192).contains(&max_request_headers_kb) {
        return Err(FieldError::new(
            format!("{path}.max_request_headers_kb"),
            "must be between 1 and 8192",
        ));
    }
    Ok(HttpManagerConfig {
        stat_prefix: hcm.stat_prefix.clone(),
        codec: hcm.codec_type,
        routes,
        idle_timeout: nonzero(
            common
                .idle_timeout
                .map(|d| d.get())
                .or(Some(Duration::from_secs(3600))),
        ),
        max_headers_count: max_headers_count as usize,
        max_request_headers_bytes: max_request_headers_kb * 1024,
        headers_with_underscores: common.headers_with_underscores_action,
        request_headers_timeout: nonzero(
            hcm.request_headers_timeout
                .map(|d| d.get())
                .or(Some(DEFAULT_REQUEST_HEADERS_TIMEOUT)),
        ),
        stream_idle_timeout: nonzero(
            hcm.stream_idle_timeout
                .map(|d| d.get())
                .or(Some(DEFAULT_STREAM_IDLE_TIMEOUT)),
        ),
        abuse: runtime::StreamAbuseLimits::default(),
        request_timeout: nonzero(hcm.request_timeout.map(|d| d.get())),
        http2: spec::Http2Settings {
            max_concurrent_streams: h2
                .max_concurrent_streams
                .unwrap_or(defaults.max_concurrent_streams),
            initial_stream_window_size: h2
                .initial_stream_window_size
                .unwrap_or(defaults.initial_stream_window_size),
            initial_connection_window_size: h2
                .initial_connection_window_size
                .unwrap_or(defaults.initial_connection_window_size),
        },
        allow_connect: h2.allow_connect,
        allow_extended_connect: hcm
            .http3_protocol_options
            .as_ref()
            .is_some_and(|h3| h3.allow_extended_connect),
        use_remote_address: hcm.use_remote_address,
        generate_request_id: hcm.generate_request_id.unwrap_or(true),
        server_name: hcm.server_name.clone().unwrap_or_else(|| "weir".into()),
        max_connection_duration: nonzero(common.max_connection_duration.map(|d| d.get())),
        max_requests_per_connection: common.max_requests_per_connection.filter(|n| *n > 0),
        http_filters,
        upgrades,
        buffer_limit: DEFAULT_BUFFER_LIMIT,
        path_normalization: PathNormalization {
            normalize_path: hcm.normalize_path.unwrap_or(true),
            merge_slashes: hcm.merge_slashes,
            escaped_slashes: hcm.path_with_escaped_slashes_action,
        },
        strip_port: strip_port(hcm, path)?,
        access_log: crate::access_log::AccessLogs::from_config(
            &hcm.access_log,
            &format!("{path}.access_log"),
        )?,
    })
}

/// `strip_matching_host_port` and `strip_any_host_port` of the manager at `path`: at most
/// one of them (Envoy's `oneof`).
fn strip_port(hcm: &HttpConnectionManager, path: &str) -> Result<StripPort, FieldError> {
    match (hcm.strip_matching_host_port, hcm.strip_any_host_port) {
        (false, false) => Ok(StripPort::Never),
        (true, false) => Ok(StripPort::Matching),
        (false, true) => Ok(StripPort::Any),
        (true, true) => Err(FieldError::new(
            format!("{path}.strip_any_host_port"),
            "set at most one of strip_matching_host_port and strip_any_host_port",
        )),
    }
}

/// Reads a list of `http_filters` (at `path`) into the Wasm plugins it runs, in order,
/// loading and compiling each module. The router must be last (and may be absent, as in
/// `upgrade_configs[].filters`).
pub fn http_filters(
    filters: &[HttpFilter],
    path: &str,
    clusters: &[&str],
    node: &crate::wasm::NodeInfo,
) -> Result<Vec<std::sync::Arc<crate::wasm::PluginHandle>>, FieldError> {
    let mut plugins = Vec::new();
    for (i, filter) in filters.iter().enumerate() {
        let filter_path = format!("{path}[{i}]");
        match &filter.config {
            HttpFilterConfig::Router(_) => {
                if i + 1 != filters.len() {
                    return Err(FieldError::new(
                        filter_path,
                        "the router must be the last HTTP filter",
                    ));
                }
            }
            HttpFilterConfig::Wasm(wasm_config) => {
                let typed_path = format!("{filter_path}.typed_config");
                plugins.push(load_plugin(wasm_config, &typed_path, clusters, node)?);
            }
        }
    }
    Ok(plugins)
}
