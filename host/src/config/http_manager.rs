//! `envoy.filters.network.http_connection_manager`: its schema and the plain settings read
//! from it (path handling, host ports, Envoy's default timeouts);
//! `snapshot::http_manager` reads the rest into the runtime's `HttpManagerConfig`
//! (timeouts, limits, filters, upgrades), with Envoy's defaults applied.

use super::FieldError;
use super::duration::ConfigDuration;
use super::dynamic_resources::ConfigSource;
use super::http_options::{CommonHttpProtocolOptions, Http1ProtocolOptions, Http2ProtocolOptions};
use super::quic::Http3ProtocolOptions;
use super::route::RouteConfiguration;
use super::typed::{split_typed, type_names, typed, unsupported};
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
    /// Inline route table (exactly one of `route_config` and `rds`).
    #[serde(default)]
    pub route_config: Option<RouteConfiguration>,
    /// The route table comes over xDS (RDS), by name (exactly one of `route_config` and
    /// `rds`).
    #[serde(default)]
    pub rds: Option<Rds>,
    /// The route configuration RDS delivered for `rds`, put in by the xDS assembler
    /// ([`HttpConnectionManager::set_rds_route_config`]); never read from a file. Shared
    /// with the xDS state that holds it: a config built from it is not a copy, and its route
    /// table is built once however many configs are (`route::shared`).
    #[serde(skip)]
    pub rds_route_config: Option<std::sync::Arc<RouteConfiguration>>,
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

/// `rds` of a connection manager.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rds {
    /// The name of the route configuration to subscribe to.
    pub route_config_name: String,
    /// Where it comes from: ADS is what weir supports.
    pub config_source: ConfigSource,
}

/// Where a connection manager's routes come from; it decides whether the route names of
/// clusters are checked when `validate_clusters` does not say (Envoy's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    /// `route_config`, written inline (in a file or in an LDS listener).
    Inline,
    /// `rds`: a route configuration of its own, delivered over xDS.
    Rds,
}

impl RouteSource {
    /// Envoy checks that the clusters routes name exist for an inline route table, and
    /// not for one from RDS (whose clusters may come later, over CDS), unless
    /// `validate_clusters` says otherwise.
    pub fn validates_clusters_by_default(self) -> bool {
        self == RouteSource::Inline
    }
}

impl HttpConnectionManager {
    /// Which of `route_config` and `rds` the manager at `path` has: exactly one (Envoy's
    /// `oneof route_specifier`), and an `rds` whose `config_source` is ADS.
    pub fn route_source(&self, path: &str) -> Result<RouteSource, FieldError> {
        match (&self.route_config, &self.rds) {
            (Some(_), None) => Ok(RouteSource::Inline),
            (None, Some(rds)) => {
                rds.config_source
                    .check_ads(&format!("{path}.rds.config_source"))?;
                if rds.route_config_name.is_empty() {
                    return Err(FieldError::new(
                        format!("{path}.rds.route_config_name"),
                        "must name a route configuration",
                    ));
                }
                Ok(RouteSource::Rds)
            }
            (Some(_), Some(_)) => Err(FieldError::new(
                format!("{path}.rds"),
                "set exactly one of route_config and rds",
            )),
            (None, None) => Err(FieldError::new(
                path,
                "set exactly one of route_config and rds",
            )),
        }
    }

    /// Every HTTP filter of the manager: `http_filters`, then each `upgrade_configs[].filters`.
    pub fn all_http_filters(&self) -> impl Iterator<Item = &HttpFilter> {
        self.http_filters.iter().chain(
            self.upgrade_configs
                .iter()
                .flat_map(|upgrade| upgrade.filters.iter().flatten()),
        )
    }

    /// [`HttpConnectionManager::all_http_filters`], to change (the xDS assembler puts ECDS
    /// configs in place).
    pub fn all_http_filters_mut(&mut self) -> impl Iterator<Item = &mut HttpFilter> {
        self.http_filters.iter_mut().chain(
            self.upgrade_configs
                .iter_mut()
                .flat_map(|upgrade| upgrade.filters.iter_mut().flatten()),
        )
    }

    /// The route configuration `rds` names, if the routes come over RDS.
    pub fn rds_name(&self) -> Option<&str> {
        self.rds.as_ref().map(|rds| rds.route_config_name.as_str())
    }

    /// Puts in the route configuration RDS delivered for [`HttpConnectionManager::rds_name`]
    /// (the xDS assembler, before the snapshot is built).
    pub fn set_rds_route_config(&mut self, routes: std::sync::Arc<RouteConfiguration>) {
        self.rds_route_config = Some(routes);
    }

    /// The manager's route table at `path`: where it came from, and the field path its
    /// errors are reported under (`route_config`, or `rds` for one RDS delivered). An `rds`
    /// that nothing filled is an error: its routes come over xDS.
    pub fn routes(
        &self,
        path: &str,
    ) -> Result<(&RouteConfiguration, RouteSource, String), FieldError> {
        let source = self.route_source(path)?;
        let routes = match source {
            RouteSource::Inline => self.route_config.as_ref(),
            RouteSource::Rds => self.rds_route_config.as_deref(),
        };
        match (source, routes) {
            (RouteSource::Inline, Some(routes)) => {
                Ok((routes, source, format!("{path}.route_config")))
            }
            (RouteSource::Rds, Some(routes)) => Ok((routes, source, format!("{path}.rds"))),
            (_, None) => Err(FieldError::new(
                format!("{path}.rds"),
                "the routes of rds come over xDS (RDS): dynamic_resources.ads_config must name the control plane",
            )),
        }
    }
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
    /// `disabled`: off unless a route turns it on (`typed_per_filter_config` with a
    /// `FilterConfig` whose `config` is empty), as Envoy.
    pub disabled: bool,
}

/// The HTTP filters weir implements.
#[derive(Debug, Clone)]
pub enum HttpFilterConfig {
    /// `envoy.filters.http.router`: forwards to the route's cluster. Always last.
    Router(RouterConfig),
    /// `envoy.filters.http.wasm`: a proxy-wasm module (see [`super::wasm`]).
    Wasm(Box<super::wasm::WasmFilterConfig>),
    /// `envoy.filters.http.health_check`: answers health checks (see [`HealthCheckConfig`]).
    HealthCheck(HealthCheckConfig),
    /// `config_discovery`: the config comes over ECDS; the xDS assembler puts it (or the
    /// default) in place before the snapshot is built.
    Discovered(Box<ExtensionConfigSource>),
    /// `config_discovery` whose config did not come within `initial_fetch_timeout` and that
    /// has no `default_config`: put in by the xDS assembler, it answers every request that
    /// reaches it with a 500 (Envoy's missing-config filter, response flag `NFCF`) until the
    /// config comes.
    Missing,
}

/// `envoy.extensions.filters.http.health_check.v3.HealthCheck`: requests that match
/// `headers` are health checks. Without `pass_through_mode` the filter answers them itself:
/// 200, or 503 while the server is failed by `POST /healthcheck/fail` or a cluster of
/// `cluster_min_healthy_percentages` has too few healthy hosts. With it they go on upstream
/// unless the server is failed. Every response says `x-envoy-immediate-health-check-fail:
/// true` while it is failed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Whether health checks go on upstream (Envoy requires the field).
    pub pass_through_mode: bool,
    /// What makes a request a health check (all must match); `:path`, `:method`,
    /// `:authority` and `:scheme` are matched too.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub headers: Vec<super::route::HeaderMatcher>,
    /// Cluster name -> the least percentage of its hosts that must be healthy for a 200.
    #[serde(default)]
    pub cluster_min_healthy_percentages: std::collections::BTreeMap<String, Percent>,
    /// Envoy's cached pass-through answers; weir refuses it (it does not cache).
    #[serde(default)]
    pub cache_time: Option<ConfigDuration>,
}

/// `type.v3.Percent`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    /// 0 to 100.
    #[serde(default)]
    pub value: f64,
}

/// `envoy.extensions.filters.http.router.v3.Router`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Don't add `x-envoy-*` headers (weir adds none either way).
    #[serde(default)]
    pub suppress_envoy_headers: bool,
}

/// `http_filters[]` as written: an extension with `typed_config`, or one whose config comes
/// over ECDS (`config_discovery`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpFilter {
    name: String,
    #[serde(default)]
    typed_config: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    config_discovery: Option<ExtensionConfigSource>,
    #[serde(default)]
    disabled: bool,
}

impl<'de> Deserialize<'de> for HttpFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawHttpFilter::deserialize(deserializer)?;
        let config = match (raw.typed_config, raw.config_discovery) {
            (Some(_), Some(_)) => {
                return Err(D::Error::custom(format!(
                    "{}config_discovery{}set exactly one of typed_config and config_discovery",
                    super::typed::PATH_MARK,
                    super::typed::PATH_MARK
                )));
            }
            (None, Some(discovery)) => {
                discovery.check().map_err(D::Error::custom)?;
                HttpFilterConfig::Discovered(Box::new(discovery))
            }
            (typed_config, None) => {
                http_filter_config(&raw.name, typed_config).map_err(D::Error::custom)?
            }
        };
        if raw.disabled && matches!(config, HttpFilterConfig::Router(_)) {
            return Err(D::Error::custom(format!(
                "{}disabled{}the router cannot be disabled",
                super::typed::PATH_MARK,
                super::typed::PATH_MARK
            )));
        }
        Ok(HttpFilter {
            name: raw.name,
            config,
            disabled: raw.disabled,
        })
    }
}

/// Reads the `typed_config` of the HTTP filter `name` (absent: a name that stands alone,
/// such as the router's). Errors carry their path inside `typed_config` (see
/// [`super::typed`]).
pub(super) fn http_filter_config(
    name: &str,
    typed_config: Option<serde_yaml_ng::Value>,
) -> Result<HttpFilterConfig, String> {
    let (type_name, value) = split_typed(name, typed_config)?;
    Ok(match type_name.as_str() {
        type_names::ROUTER => HttpFilterConfig::Router(typed(value)?),
        type_names::WASM => HttpFilterConfig::Wasm(Box::new(typed(value)?)),
        type_names::HEALTH_CHECK => HttpFilterConfig::HealthCheck(typed(value)?),
        other => {
            return Err(unsupported(
                "HTTP filter",
                other,
                &[
                    type_names::ROUTER,
                    type_names::WASM,
                    type_names::HEALTH_CHECK,
                ],
            ));
        }
    })
}

/// The type URL of a `typed_config` (`"@type"`; a `TypedStruct`'s `type_url`), as
/// `type_urls` of [`ExtensionConfigSource`] lists them.
pub fn typed_config_type_url(typed_config: &serde_json::Value) -> Option<String> {
    let outer = typed_config.get("@type")?.as_str()?;
    let name = outer.strip_prefix("type.googleapis.com/").unwrap_or(outer);
    if matches!(name, "udpa.type.v1.TypedStruct" | "xds.type.v3.TypedStruct") {
        return typed_config
            .get("type_url")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
    }
    Some(outer.to_string())
}

/// `config_discovery` of an HTTP or network filter: `envoy.config.core.v3.ExtensionConfigSource`.
/// The filter's config is the ECDS resource named as the filter; until it arrives the listener
/// warms, unless `default_config` applies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionConfigSource {
    /// Where it comes from: ADS.
    pub config_source: ConfigSource,
    /// The config used before the first one arrives (with
    /// `apply_default_config_without_warming`, or after `initial_fetch_timeout`), as written.
    #[serde(default)]
    pub default_config: Option<serde_yaml_ng::Value>,
    /// Use `default_config` at once rather than warming the listener.
    #[serde(default)]
    pub apply_default_config_without_warming: bool,
    /// The type URLs a delivered config may have; another is refused (NACK).
    #[serde(default)]
    pub type_urls: Vec<String>,
}

impl ExtensionConfigSource {
    /// ADS as the source, at least one type URL, and a default config that reads as an HTTP
    /// filter's and whose type is listed (Envoy's checks). Errors carry their path inside
    /// `config_discovery`.
    fn check(&self) -> Result<(), String> {
        self.check_source()?;
        self.default_filter_config("").map(|_| ())
    }

    /// The checks of [`ExtensionConfigSource::check`] but whether the default reads (which
    /// depends on the kind of filter).
    pub(super) fn check_source(&self) -> Result<(), String> {
        let mark = super::typed::PATH_MARK;
        self.config_source.check_ads("").map_err(|e| {
            format!(
                "{mark}config_discovery.config_source{}{mark}{}",
                e.path, e.message
            )
        })?;
        if self.type_urls.is_empty() {
            return Err(format!(
                "{mark}config_discovery.type_urls{mark}list at least one type URL"
            ));
        }
        if self.apply_default_config_without_warming && self.default_config.is_none() {
            return Err(format!(
                "{mark}config_discovery.default_config{mark}apply_default_config_without_warming needs a default_config"
            ));
        }
        if let Some(default) = &self.default_config {
            let json = serde_json::to_value(default)
                .map_err(|e| format!("{mark}config_discovery.default_config{mark}{e}"))?;
            let type_url = typed_config_type_url(&json).unwrap_or_default();
            if !self.type_urls.contains(&type_url) {
                return Err(format!(
                    "{mark}config_discovery.default_config.@type{mark}type {type_url:?} is not in type_urls"
                ));
            }
        }
        Ok(())
    }

    /// `default_config` read as the filter `name`'s config, if there is one.
    pub fn default_filter_config(&self, name: &str) -> Result<Option<HttpFilterConfig>, String> {
        let Some(default) = &self.default_config else {
            return Ok(None);
        };
        http_filter_config(name, Some(default.clone()))
            .map(Some)
            .map_err(in_default_config)
    }
}

/// An error reading a `default_config` as a `typed_config`, with its path moved to
/// `config_discovery.default_config`.
pub(super) fn in_default_config(message: String) -> String {
    match message.strip_prefix(super::typed::PATH_MARK) {
        Some(rest) => format!(
            "{}config_discovery.default_config{}",
            super::typed::PATH_MARK,
            rest.strip_prefix("typed_config").unwrap_or(rest)
        ),
        None => message,
    }
}

impl HttpFilter {
    /// Whether its config comes over ECDS (`config_discovery`) and has not been put in.
    pub fn discovery(&self) -> Option<&ExtensionConfigSource> {
        match &self.config {
            HttpFilterConfig::Discovered(discovery) => Some(discovery),
            _ => None,
        }
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

/// `strip_matching_host_port` and `strip_any_host_port` of the manager at `path`: at most
/// one of them (Envoy's `oneof`).
pub fn strip_port(hcm: &HttpConnectionManager, path: &str) -> Result<StripPort, FieldError> {
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
