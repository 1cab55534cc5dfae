//! A listener's HTTP connection manager as the runtime runs it: its validated config
//! ([`crate::config::http_manager`]) with its route table, access logs and Wasm filters built.

use super::wasm::load_plugin;
use crate::config::cluster_names::ClusterNames;
use crate::config::cluster_spec as spec;
use crate::config::common::{DEFAULT_BUFFER_LIMIT, nonzero};
use crate::config::http_manager::{
    CodecType, DEFAULT_REQUEST_HEADERS_TIMEOUT, DEFAULT_STREAM_IDLE_TIMEOUT, HttpConnectionManager,
    HttpFilter, HttpFilterConfig, PathNormalization, RouteSource, StripPort, strip_port,
};
use crate::config::http_options::HeadersWithUnderscoresAction;
use crate::config::{FieldError, runtime, wasm_spec};
use crate::route::RouteTable;
use crate::route::health_check::HealthCheckFilter;
use std::sync::Arc;
use std::time::Duration;

/// One `upgrade_configs[]` entry of a connection manager.
#[derive(Debug, Clone)]
pub struct UpgradeSetting {
    /// The upgrade type, lowercased (`connect` for CONNECT).
    pub upgrade_type: String,
    /// Allowed unless a route says otherwise.
    pub enabled: bool,
    /// The filter chain for this type, replacing the default one.
    pub filters: Option<Vec<std::sync::Arc<crate::wasm::PluginHandle>>>,
    /// The filters of `filters` whose ECDS config is missing (see
    /// [`HttpManagerConfig::missing_config`]).
    pub missing_config: Vec<MissingConfig>,
    /// The `name` of each of `filters` (see [`HttpManagerConfig::http_filter_names`]).
    pub filter_names: Vec<(String, bool)>,
}

/// An HTTP filter whose ECDS config has not come ([`HttpFilterConfig::Missing`]), where it
/// sits in its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingConfig {
    /// How many Wasm plugins of the chain run before it.
    pub after: usize,
    /// Its `name` (by which a route turns it off or on).
    pub name: String,
    /// Off unless a route turns it on (`disabled`).
    pub disabled: bool,
}

/// Each filter of `filters` whose ECDS config is missing, in order: the first of them that a
/// request's route does not turn off answers it (each one is enforced, as each of Envoy's
/// missing-config filters is).
pub fn missing_config(filters: &[HttpFilter]) -> Vec<MissingConfig> {
    let mut after = 0;
    let mut missing = Vec::new();
    for filter in filters {
        match filter.config {
            HttpFilterConfig::Wasm(_) => after += 1,
            HttpFilterConfig::Missing => missing.push(MissingConfig {
                after,
                name: filter.name.clone(),
                disabled: filter.disabled,
            }),
            _ => {}
        }
    }
    missing
}

/// The HTTP connection manager of a listener.
#[derive(Debug, Clone)]
pub struct HttpManagerConfig {
    /// Label of its stats.
    pub stat_prefix: String,
    /// Which codec(s) it speaks.
    pub codec: CodecType,
    /// Virtual hosts and routes.
    pub routes: Arc<RouteTable>,
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
    /// The `name` of each of `http_filters` (by which a route's `typed_per_filter_config`
    /// turns it off or on) and whether it is off unless a route turns it on (`disabled`).
    pub http_filter_names: Vec<(String, bool)>,
    /// The filters of `http_filters` whose ECDS config did not come in time and that have
    /// no default: requests that reach one (not turned off by their route) get a 500.
    pub missing_config: Vec<MissingConfig>,
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
    /// The listener's own `access_log[]` (one line per connection), set by
    /// `snapshot::listener`; `None` when there is none.
    pub listener_access_log: Option<std::sync::Arc<crate::access_log::AccessLogs>>,
    /// `envoy.filters.http.health_check` in `http_filters`, if any.
    pub health_check: Option<std::sync::Arc<HealthCheckFilter>>,
    /// What HTTP/1.0 requests get (`http_protocol_options.accept_http_10`,
    /// `default_host_for_http_10`).
    pub http10: Http10Policy,
}

/// `http_protocol_options.accept_http_10` and `default_host_for_http_10`: whether an
/// HTTP/1.0 request is served at all (Envoy's default: no, 426), and the `Host` one without
/// a host is given.
#[derive(Debug, Clone, Default)]
pub struct Http10Policy {
    /// Serve HTTP/1.0 requests.
    pub accept: bool,
    /// The `Host` of an HTTP/1.0 request that has none.
    pub default_host: Option<http::HeaderValue>,
}

impl HttpManagerConfig {
    /// The manager's setting for `upgrade_type` (case-insensitive), if it lists that type.
    pub fn upgrade(&self, upgrade_type: &str) -> Option<&UpgradeSetting> {
        self.upgrades
            .iter()
            .find(|u| u.upgrade_type.eq_ignore_ascii_case(upgrade_type))
    }
}

/// Reads the connection manager whose `typed_config` is at `path`; `clusters` are the names
/// routes and remote modules may refer to.
pub(super) fn http_manager_config(
    hcm: &HttpConnectionManager,
    path: &str,
    clusters: &ClusterNames,
    node: &wasm_spec::NodeInfo,
) -> Result<HttpManagerConfig, FieldError> {
    let http_filters = http_filters(
        &hcm.http_filters,
        &format!("{path}.http_filters"),
        clusters,
        node,
    )?;
    let http_filter_names = wasm_filter_names(&hcm.http_filters);
    let health_check = health_check(hcm, path, node)?;
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
            missing_config: upgrade
                .filters
                .as_deref()
                .map(missing_config)
                .unwrap_or_default(),
            filter_names: upgrade
                .filters
                .as_deref()
                .map(wasm_filter_names)
                .unwrap_or_default(),
        });
    }

    let (route_config, source, routes_path) = hcm.routes(path)?;
    let validate_clusters = route_config
        .validate_clusters
        .unwrap_or(source.validates_clusters_by_default());
    let routes = match (&hcm.rds_route_config, source) {
        (Some(shared), RouteSource::Rds) if !validate_clusters => {
            crate::route::shared::unvalidated(shared, &routes_path)?
        }
        _ => Arc::new(RouteTable::build_validating(
            route_config,
            &routes_path,
            clusters,
            validate_clusters,
        )?),
    };
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
        missing_config: missing_config(&hcm.http_filters),
        http_filters,
        http_filter_names,
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
        listener_access_log: None,
        health_check,
        http10: http10_policy(hcm, path)?,
    })
}

/// The connection manager's [`Http10Policy`]; a `default_host_for_http_10` that cannot be a
/// `Host` header is a config error.
fn http10_policy(hcm: &HttpConnectionManager, path: &str) -> Result<Http10Policy, FieldError> {
    let Some(options) = &hcm.http_protocol_options else {
        return Ok(Http10Policy::default());
    };
    let default_host = match options.default_host_for_http_10.as_deref() {
        None | Some("") => None,
        Some(host) => Some(
            host.parse::<http::uri::Authority>()
                .ok()
                .and_then(|_| http::HeaderValue::from_str(host).ok())
                .ok_or_else(|| {
                    FieldError::new(
                        format!("{path}.http_protocol_options.default_host_for_http_10"),
                        "not a host",
                    )
                })?,
        ),
    };
    Ok(Http10Policy {
        accept: options.accept_http_10,
        default_host,
    })
}

/// The manager's `envoy.filters.http.health_check`, if its `http_filters` have one (at most
/// one; none in `upgrade_configs[].filters`, which run instead of `http_filters`).
fn health_check(
    hcm: &HttpConnectionManager,
    path: &str,
    node: &wasm_spec::NodeInfo,
) -> Result<Option<std::sync::Arc<HealthCheckFilter>>, FieldError> {
    for (u, upgrade) in hcm.upgrade_configs.iter().enumerate() {
        let filters = upgrade.filters.as_deref().unwrap_or_default();
        if let Some(i) = filters
            .iter()
            .position(|f| matches!(f.config, HttpFilterConfig::HealthCheck(_)))
        {
            return Err(FieldError::new(
                format!("{path}.upgrade_configs[{u}].filters[{i}]"),
                "the health check filter belongs in the connection manager's http_filters",
            ));
        }
    }
    let mut found = None;
    for (i, filter) in hcm.http_filters.iter().enumerate() {
        let HttpFilterConfig::HealthCheck(config) = &filter.config else {
            continue;
        };
        let filter_path = format!("{path}.http_filters[{i}]");
        if filter.disabled {
            return Err(FieldError::new(
                format!("{filter_path}.disabled"),
                "weir turns Wasm filters off and on per route, not the health check filter",
            ));
        }
        if found.is_some() {
            return Err(FieldError::new(
                filter_path,
                "at most one health check filter",
            ));
        }
        let built = HealthCheckFilter::build(
            config,
            &format!("{filter_path}.typed_config"),
            &node.cluster,
        )?;
        found = Some(std::sync::Arc::new(built));
    }
    Ok(found)
}

/// The names of the Wasm filters of `filters`, in the order [`http_filters`] loads their
/// plugins, each with its `disabled`.
pub fn wasm_filter_names(filters: &[HttpFilter]) -> Vec<(String, bool)> {
    filters
        .iter()
        .filter(|filter| matches!(filter.config, HttpFilterConfig::Wasm(_)))
        .map(|filter| (filter.name.clone(), filter.disabled))
        .collect()
}

/// Reads a list of `http_filters` (at `path`) into the Wasm plugins it runs, in order,
/// loading and compiling each module. The router must be last (and may be absent, as in
/// `upgrade_configs[].filters`).
pub fn http_filters(
    filters: &[HttpFilter],
    path: &str,
    clusters: &ClusterNames,
    node: &wasm_spec::NodeInfo,
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
            // Runs in the chain as a stop (`FilterChain::with_missing_config`).
            HttpFilterConfig::Missing => {}
            HttpFilterConfig::Discovered(_) => {
                return Err(FieldError::new(
                    format!("{filter_path}.config_discovery"),
                    "the config of this filter comes over xDS (ECDS) and has not arrived: dynamic_resources.ads_config must name the control plane",
                ));
            }
            // Built by `health_check`; weir runs it before the Wasm filters.
            HttpFilterConfig::HealthCheck(_) => {
                if !plugins.is_empty() {
                    return Err(FieldError::new(
                        filter_path,
                        "weir runs the health check filter first: list it before the Wasm filters",
                    ));
                }
            }
        }
    }
    Ok(plugins)
}
