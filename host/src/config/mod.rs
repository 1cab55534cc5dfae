//! The YAML config: Envoy's v3 bootstrap shape in, weir's runtime config out.
//!
//! [`load_file`] / [`load_str`] parse with `serde_yaml_ng`, tracking the field path of every
//! error, check what serde cannot (references, exclusive fields, regexes, addresses), and turn
//! the result into [`Config`], with Envoy's defaults applied, so nothing past this module
//! reads YAML.

pub mod duration;
pub mod file;
mod lenient;
pub mod overload;
pub mod pem;
pub mod process_settings;
mod quic;
pub mod runtime;
pub mod schema;
pub mod service;
pub mod typed;
pub mod wasm;
pub mod yaml_limits;

use crate::route::RouteTable;
use crate::upstream::{self, ClusterSpec};
use schema::{Bootstrap, CodecType};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use typed::{HttpFilterConfig, NetworkFilterConfig, PATH_MARK, TransportSocketConfig};

/// The config weir runs with when it is given none: a page saying how to write one.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// A config that cannot be used: which file, which field, what is wrong and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {path}: {message}")]
pub struct ConfigError {
    /// The file (or `<built-in>`).
    pub file: String,
    /// The field path, e.g. `static_resources.clusters[2].lb_policy`.
    pub path: String,
    /// What is wrong, and what is accepted.
    pub message: String,
}

/// A field path and a message, before the file is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl fmt::Display) -> Self {
        FieldError {
            path: path.into(),
            message: message.to_string(),
        }
    }

    fn in_file(self, file: &str) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            path: self.path,
            message: self.message,
        }
    }
}

/// Everything weir runs: listeners, clusters, admin.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (a path, or `<built-in>`).
    pub source: String,
    /// The file as JSON, for `/config_dump`.
    pub dump: serde_json::Value,
    /// `node.id`.
    pub node_id: String,
    /// The admin listener's address.
    pub admin: Option<SocketAddr>,
    /// HTTP listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Upstream clusters.
    pub clusters: Vec<ClusterSpec>,
    /// TCP proxy listeners (`envoy.filters.network.tcp_proxy`).
    pub tcp_listeners: Vec<TcpListenerConfig>,
    /// `overload_manager`: monitors, actions and the global connection limit.
    pub overload: overload::OverloadConfig,
    /// `bootstrap_extensions`' Wasm services, started once with the process (a reload that
    /// changes them is refused: see [`crate::reload::restart_needed`]).
    pub wasm_services: Vec<WasmServiceConfig>,
    /// `bootstrap_extensions`' `weir.config.v1.ProcessSettings`, if any (read at start-up, a
    /// reload that changes it is refused: see [`process_settings`]).
    pub process_settings: Option<process_settings::ProcessSettingsConfig>,
}

/// One `envoy.bootstrap.wasm` extension: its plugin, loaded and checked like a filter's.
#[derive(Debug, Clone)]
pub struct WasmServiceConfig {
    /// The plugin.
    pub plugin: std::sync::Arc<crate::wasm::PluginHandle>,
    /// One VM on a thread of its own (`true`) or one per worker.
    pub singleton: bool,
    /// SHA-256 over everything that makes the service what it is (module, names,
    /// configurations, `singleton`): two configs run the same service when it is equal.
    pub identity: [u8; 32],
}

impl Config {
    /// Every Wasm plugin of the config (HTTP filters, upgrade filters, network filters), in
    /// config order.
    pub fn plugin_handles(&self) -> Vec<std::sync::Arc<crate::wasm::PluginHandle>> {
        let http = self.listeners.iter().flat_map(|listener| {
            let upgrades = listener
                .http
                .upgrades
                .iter()
                .filter_map(|upgrade| upgrade.filters.as_ref())
                .flatten();
            listener.http.http_filters.iter().chain(upgrades)
        });
        let network = self
            .tcp_listeners
            .iter()
            .flat_map(|listener| listener.proxy.network_filters.iter());
        http.chain(network).cloned().collect()
    }
}

/// A listener whose filter chain is a `tcp_proxy`.
#[derive(Debug, Clone)]
pub struct TcpListenerConfig {
    /// Its name.
    pub name: String,
    /// Where it binds.
    pub address: SocketAddr,
    /// Whether it takes redirected connections (sidecar mode).
    pub interception: Interception,
    /// The proxy.
    pub proxy: TcpProxyConfig,
}

/// How a listener takes connections that iptables/nftables redirected to it (sidecar mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interception {
    /// Read each connection's original destination (`SO_ORIGINAL_DST` after a REDIRECT, the
    /// local address under TPROXY): `ORIGINAL_DST` clusters connect there. From
    /// `use_original_dst: true` or the `envoy.filters.listener.original_dst` listener filter.
    pub use_original_dst: bool,
    /// Bind with `IP_TRANSPARENT` (`transparent: true`), for TPROXY rules.
    pub transparent: bool,
}

/// `envoy.filters.network.tcp_proxy`: each connection goes to the cluster, as raw TCP or
/// inside an HTTP tunnel.
#[derive(Debug, Clone)]
pub struct TcpProxyConfig {
    /// Label of its stats.
    pub stat_prefix: String,
    /// Where connections go.
    pub cluster: String,
    /// Encapsulate in HTTP CONNECT / POST when set.
    pub tunnel: Option<TunnelConfig>,
    /// Idle limit (Envoy default 1h; `None` = never).
    pub idle_timeout: Option<Duration>,
    /// The `envoy.filters.network.wasm` filters before the tcp_proxy, in order: each sees
    /// the bytes from downstream in this order and those from upstream in reverse.
    pub network_filters: Vec<std::sync::Arc<crate::wasm::PluginHandle>>,
    /// `access_log[]`: `None` when there is none.
    pub access_log: Option<std::sync::Arc<crate::access_log::AccessLogs>>,
}

/// `tunneling_config` of a tcp_proxy.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The CONNECT authority / POST host.
    pub hostname: http::uri::Authority,
    /// POST to `post_path` instead of CONNECT.
    pub use_post: bool,
    /// The POST path.
    pub post_path: http::uri::PathAndQuery,
    /// Extra request headers.
    pub headers: http::HeaderMap,
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

/// One listener with its HTTP connection manager.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Its name.
    pub name: String,
    /// Where it binds.
    pub address: SocketAddr,
    /// TLS, when the filter chain has a transport socket.
    pub tls: Option<DownstreamTls>,
    /// QUIC settings when this is a UDP (HTTP/3) listener; its TLS is then in `tls`.
    pub quic: Option<upstream::Http3Settings>,
    /// Whether it takes redirected connections (sidecar mode; TCP listeners only).
    pub interception: Interception,
    /// The connection manager.
    pub http: HttpManagerConfig,
}

/// Downstream TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamTls {
    /// Certificate chains and keys (PEM files); the first is the default, others are picked by
    /// SNI.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    /// ALPN protocols accepted, in preference order.
    pub alpn_protocols: Vec<String>,
    /// CA bundle for client certificates.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate.
    pub require_client_certificate: bool,
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
    pub headers_with_underscores: schema::HeadersWithUnderscoresAction,
    /// Time allowed to receive request headers (weir's default 10 s).
    pub request_headers_timeout: Option<Duration>,
    /// Time a stream may go without a byte either way (default 5 min).
    pub stream_idle_timeout: Option<Duration>,
    /// Premature-reset and per-cycle limits (from `layered_runtime`).
    pub abuse: runtime::StreamAbuseLimits,
    /// Time allowed to receive a whole request.
    pub request_timeout: Option<Duration>,
    /// Downstream HTTP/2 settings.
    pub http2: upstream::Http2Settings,
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
    pub path_normalization: crate::route::path::PathNormalization,
    /// `strip_matching_host_port` / `strip_any_host_port`.
    pub strip_port: crate::route::authority::StripPort,
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

/// `request_headers_timeout` when the config gives none: Envoy's edge recommendation (Envoy
/// itself has none by default, which lets a client trickle a head forever).
pub const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);

/// `stream_idle_timeout` when the config gives none (Envoy's default).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Reads and checks the config file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    load_str(&text, &path.display().to_string())
}

/// Reads the config file at `path` as text: a regular file of at most
/// [`file::MAX_CONFIG_BYTES`], in UTF-8.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    let error = |message: String| ConfigError {
        file: path.display().to_string(),
        path: ".".into(),
        message,
    };
    let bytes = file::read_limited(path, file::MAX_CONFIG_BYTES)
        .map_err(|e| error(format!("cannot read the file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| error(format!("cannot read the file: not UTF-8: {e}")))
}

/// Reads and checks config `text`; `file` names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    yaml_limits::check(text).map_err(|e| e.in_file(file))?;
    let bootstrap = parse(text).map_err(|e| e.in_file(file))?;
    let dump =
        serde_yaml_ng::from_str::<serde_json::Value>(text).unwrap_or(serde_json::Value::Null);
    build(bootstrap, file, dump).map_err(|e| e.in_file(file))
}

/// Parses YAML into the schema, with the field path of any error.
pub fn parse(text: &str) -> Result<Bootstrap, FieldError> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let outer = error.path().to_string();
        let message = error.into_inner().to_string();
        let (inner, message) = split_marked_path(&message);
        let path = match (outer.as_str(), inner.as_str()) {
            // An empty key at the top (`"": 1`) is a path of one empty segment: the top.
            (".", "") | ("", "") => ".".to_string(),
            (".", inner) => inner.to_string(),
            (outer, "") => outer.to_string(),
            (outer, inner) => format!("{outer}.{inner}"),
        };
        FieldError { path, message }
    })
}

/// Takes the nested paths [`typed`] marked in `message` off its front, joined with dots.
/// serde_yaml_ng starts its messages with its own idea of the path; that is dropped, since
/// serde_path_to_error's is the one kept.
fn split_marked_path(message: &str) -> (String, String) {
    let mut message = match message.find(PATH_MARK) {
        Some(start) => &message[start..],
        None => strip_yaml_path(message),
    };
    let mut path = Vec::new();
    while let Some(rest) = message.strip_prefix(PATH_MARK) {
        match rest.split_once(PATH_MARK) {
            Some((inner, tail)) => {
                path.push(inner);
                message = tail;
            }
            None => break,
        }
    }
    (path.join("."), message.to_string())
}

/// Drops the `a.b[0]: ` path prefix serde_yaml_ng puts on its messages.
pub(crate) fn strip_yaml_path(message: &str) -> &str {
    match message.split_once(": ") {
        Some((head, tail)) if !head.is_empty() && !head.contains(char::is_whitespace) => tail,
        _ => message,
    }
}

fn build(
    bootstrap: Bootstrap,
    source: &str,
    dump: serde_json::Value,
) -> Result<Config, FieldError> {
    let admin = match &bootstrap.admin {
        Some(admin) => Some(listen_address(&admin.address, "admin.address")?),
        None => None,
    };
    let overload = overload::build(bootstrap.overload_manager.as_ref())?;
    let mut clusters = Vec::new();
    for (i, cluster) in bootstrap.static_resources.clusters.iter().enumerate() {
        let path = format!("static_resources.clusters[{i}]");
        if clusters
            .iter()
            .any(|c: &ClusterSpec| c.name == cluster.name)
        {
            return Err(FieldError::new(
                format!("{path}.name"),
                format!("duplicate cluster name {:?}", cluster.name),
            ));
        }
        clusters.push(cluster_spec(cluster, &path)?);
    }
    let cluster_names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    let node = crate::wasm::NodeInfo {
        id: bootstrap
            .node
            .as_ref()
            .map(|n| n.id.clone())
            .unwrap_or_default(),
        cluster: bootstrap
            .node
            .as_ref()
            .map(|n| n.cluster.clone())
            .unwrap_or_default(),
    };
    let abuse = runtime::StreamAbuseLimits::from_runtime(bootstrap.layered_runtime.as_ref())?;
    let mut listeners = Vec::new();
    let mut tcp_listeners = Vec::new();
    for (i, listener) in bootstrap.static_resources.listeners.iter().enumerate() {
        let path = format!("static_resources.listeners[{i}]");
        if let Some(tcp) = tcp_listener_config(listener, &path, &cluster_names, &node)? {
            tcp_listeners.push(tcp);
            continue;
        }
        let mut built = listener_config(listener, &path, &cluster_names, &node)?;
        built.http.abuse = abuse;
        if listeners
            .iter()
            .any(|l: &ListenerConfig| l.name == built.name)
        {
            return Err(FieldError::new(
                format!("{path}.name"),
                format!("duplicate listener name {:?}", built.name),
            ));
        }
        listeners.push(built);
    }
    Ok(Config {
        source: source.to_string(),
        dump,
        node_id: bootstrap.node.map(|n| n.id).unwrap_or_default(),
        admin,
        listeners,
        clusters,
        tcp_listeners,
        overload,
        wasm_services: wasm_services(&bootstrap.bootstrap_extensions, &node)?,
        process_settings: bootstrap.bootstrap_extensions.iter().find_map(|extension| {
            match &extension.kind {
                service::ExtensionKind::ProcessSettings(settings) => Some(settings.clone()),
                service::ExtensionKind::WasmService(_) => None,
            }
        }),
    })
}

/// Loads the plugin of each `bootstrap_extensions[]` Wasm service (its module compiled and
/// started once, as a filter's is).
fn wasm_services(
    extensions: &[service::BootstrapExtension],
    node: &crate::wasm::NodeInfo,
) -> Result<Vec<WasmServiceConfig>, FieldError> {
    let mut services = Vec::new();
    for (i, extension) in extensions.iter().enumerate() {
        let Some(service) = extension.wasm_service() else {
            continue;
        };
        let typed_path = format!("bootstrap_extensions[{i}].typed_config");
        let filter = wasm::WasmFilterConfig {
            config: service.config.clone(),
        };
        if service.config.vm_config.code.remote.is_some() {
            // A service starts once with the process, before remote modules are fetched for
            // the listeners; fetching it as well is not built yet.
            return Err(FieldError::new(
                format!("{typed_path}.config.vm_config.code.remote"),
                "a bootstrap Wasm service takes code.local (a file or inline bytes); remote code is for filters",
            ));
        }
        let plugin = load_plugin(&filter, &typed_path, &[], node)?;
        let identity = service_identity(&plugin, service.singleton);
        services.push(WasmServiceConfig {
            plugin,
            singleton: service.singleton,
            identity,
        });
    }
    Ok(services)
}

fn service_identity(plugin: &crate::wasm::PluginHandle, singleton: bool) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    // Local code only (checked by the caller), so the plugin is loaded.
    let Some(loaded) = plugin.current() else {
        hash.update(plugin.name().as_bytes());
        return hash.finalize().into();
    };
    let info = loaded.info().clone();
    for part in [
        &plugin.code_hash()[..],
        info.name.as_bytes(),
        info.root_id.as_bytes(),
        info.vm_id.as_bytes(),
        &info.vm_configuration,
        &info.plugin_configuration,
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.update([u8::from(singleton)]);
    hash.finalize().into()
}

/// A listener whose network filters end with a tcp_proxy, after any number of
/// `envoy.filters.network.wasm`; `None` for any other listener.
fn tcp_listener_config(
    listener: &schema::Listener,
    path: &str,
    clusters: &[&str],
    node: &crate::wasm::NodeInfo,
) -> Result<Option<TcpListenerConfig>, FieldError> {
    let [chain] = listener.filter_chains.as_slice() else {
        return Ok(None);
    };
    let Some((filter, before)) = chain.filters.split_last() else {
        return Ok(None);
    };
    let NetworkFilterConfig::TcpProxy(proxy) = &filter.config else {
        return Ok(None);
    };
    let last = before.len();
    let filter_path = format!("{path}.filter_chains[0].filters[{last}].typed_config");
    let mut network_filters = Vec::with_capacity(before.len());
    for (i, filter) in before.iter().enumerate() {
        let filter_path = format!("{path}.filter_chains[0].filters[{i}]");
        let NetworkFilterConfig::Wasm(wasm_config) = &filter.config else {
            return Err(FieldError::new(
                filter_path,
                "before a tcp_proxy only envoy.filters.network.wasm filters are supported",
            ));
        };
        network_filters.push(load_plugin(
            wasm_config,
            &format!("{filter_path}.typed_config"),
            clusters,
            node,
        )?);
    }
    if chain.transport_socket.is_some() {
        return Err(FieldError::new(
            format!("{path}.filter_chains[0].transport_socket"),
            "TLS on tcp_proxy listeners is not supported here",
        ));
    }
    let address = listen_address(&listener.address, &format!("{path}.address"))?;
    let interception = interception(listener, path)?;
    if !clusters.contains(&proxy.cluster.as_str()) {
        return Err(FieldError::new(
            format!("{filter_path}.cluster"),
            format!(
                "unknown cluster {:?}; defined clusters: {clusters:?}",
                proxy.cluster
            ),
        ));
    }
    let tunnel = match &proxy.tunneling_config {
        None => None,
        Some(tunneling) => {
            let tunnel_path = format!("{filter_path}.tunneling_config");
            let hostname = tunneling
                .hostname
                .parse::<http::uri::Authority>()
                .map_err(|_| {
                    FieldError::new(format!("{tunnel_path}.hostname"), "expected host:port")
                })?;
            let post_path = tunneling
                .post_path
                .as_deref()
                .unwrap_or("/")
                .parse::<http::uri::PathAndQuery>()
                .map_err(|_| {
                    FieldError::new(format!("{tunnel_path}.post_path"), "expected a path")
                })?;
            if tunneling.post_path.is_some() && !tunneling.use_post {
                return Err(FieldError::new(
                    format!("{tunnel_path}.post_path"),
                    "post_path needs use_post: true",
                ));
            }
            let mut headers = http::HeaderMap::new();
            for (h, option) in tunneling.headers_to_add.iter().enumerate() {
                let field = format!("{tunnel_path}.headers_to_add[{h}].header");
                let name =
                    http::HeaderName::from_bytes(option.header.key.as_bytes()).map_err(|_| {
                        FieldError::new(format!("{field}.key"), "not a valid header name")
                    })?;
                let value = http::HeaderValue::from_str(&option.header.value).map_err(|_| {
                    FieldError::new(format!("{field}.value"), "not a valid header value")
                })?;
                headers.append(name, value);
            }
            Some(TunnelConfig {
                hostname,
                use_post: tunneling.use_post,
                post_path,
                headers,
            })
        }
    };
    let name = if listener.name.is_empty() {
        address.to_string()
    } else {
        listener.name.clone()
    };
    Ok(Some(TcpListenerConfig {
        name,
        address,
        interception,
        proxy: TcpProxyConfig {
            stat_prefix: proxy.stat_prefix.clone(),
            cluster: proxy.cluster.clone(),
            tunnel,
            network_filters,
            access_log: crate::access_log::AccessLogs::from_config(
                &proxy.access_log,
                &format!("{filter_path}.access_log"),
            )?,
            idle_timeout: match proxy.idle_timeout {
                Some(d) => nonzero(Some(d.get())),
                None => Some(Duration::from_secs(3600)),
            },
        },
    }))
}

/// `use_original_dst`, `listener_filters` and `transparent` of a listener.
fn interception(listener: &schema::Listener, path: &str) -> Result<Interception, FieldError> {
    let mut use_original_dst = listener.use_original_dst.unwrap_or(false);
    for filter in &listener.listener_filters {
        match filter.config {
            typed::ListenerFilterConfig::OriginalDst(_) => use_original_dst = true,
        }
    }
    let interception = Interception {
        use_original_dst,
        transparent: listener.transparent.unwrap_or(false),
    };
    let udp = listener.address.socket_address.protocol == schema::SocketProtocol::UDP
        || listener.udp_listener_config.is_some();
    if udp && interception != Interception::default() {
        let field = if interception.transparent {
            "transparent"
        } else if listener.listener_filters.is_empty() {
            "use_original_dst"
        } else {
            "listener_filters"
        };
        return Err(FieldError::new(
            format!("{path}.{field}"),
            "original destination and transparent mode are for TCP listeners only",
        ));
    }
    Ok(interception)
}

fn listen_address(address: &schema::Address, path: &str) -> Result<SocketAddr, FieldError> {
    let socket = &address.socket_address;
    let ip: IpAddr = socket.address.parse().map_err(|_| {
        FieldError::new(
            format!("{path}.socket_address.address"),
            format!(
                "{:?} is not an IP address; listeners bind to IP literals like 0.0.0.0 or ::1",
                socket.address
            ),
        )
    })?;
    if socket.protocol != schema::SocketProtocol::TCP && path == "admin.address" {
        return Err(FieldError::new(
            format!("{path}.socket_address.protocol"),
            "the admin listener is TCP; accepted: TCP",
        ));
    }
    Ok(SocketAddr::new(ip, socket.port_value))
}

fn listener_config(
    listener: &schema::Listener,
    path: &str,
    clusters: &[&str],
    node: &crate::wasm::NodeInfo,
) -> Result<ListenerConfig, FieldError> {
    let address = listen_address(&listener.address, &format!("{path}.address"))?;
    let interception = interception(listener, path)?;
    let name = if listener.name.is_empty() {
        address.to_string()
    } else {
        listener.name.clone()
    };
    let [chain] = listener.filter_chains.as_slice() else {
        return Err(FieldError::new(
            format!("{path}.filter_chains"),
            format!(
                "expected exactly one filter chain, found {}",
                listener.filter_chains.len()
            ),
        ));
    };
    let chain_path = format!("{path}.filter_chains[0]");
    let tls = match &chain.transport_socket {
        None => None,
        Some(socket) => match &socket.config {
            TransportSocketConfig::DownstreamTls(context) => Some(downstream_tls(
                context,
                &format!("{chain_path}.transport_socket.typed_config"),
            )?),
            TransportSocketConfig::QuicDownstream(quic) => Some(downstream_tls(
                &quic.downstream_tls_context,
                &format!("{chain_path}.transport_socket.typed_config.downstream_tls_context"),
            )?),
            TransportSocketConfig::UpstreamTls(_) | TransportSocketConfig::QuicUpstream(_) => {
                return Err(FieldError::new(
                    format!("{chain_path}.transport_socket.typed_config.@type"),
                    "a listener needs a DownstreamTlsContext or QuicDownstreamTransport",
                ));
            }
        },
    };
    let [filter] = chain.filters.as_slice() else {
        return Err(FieldError::new(
            format!("{chain_path}.filters"),
            format!(
                "expected exactly one network filter (envoy.filters.network.http_connection_manager), found {}",
                chain.filters.len()
            ),
        ));
    };
    let filter_path = format!("{chain_path}.filters[0].typed_config");
    let NetworkFilterConfig::HttpConnectionManager(hcm) = &filter.config else {
        return Err(FieldError::new(
            format!("{chain_path}.filters[0]"),
            "expected envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy",
        ));
    };
    let mut http = http_manager_config(hcm, &filter_path, clusters, node)?;
    if let Some(limit) = listener.per_connection_buffer_limit_bytes {
        http.buffer_limit = limit as usize;
    }
    let quic = quic::listener_quic(listener, chain, hcm, path)?;
    Ok(ListenerConfig {
        name,
        address,
        tls,
        quic,
        interception,
        http,
    })
}

fn http_manager_config(
    hcm: &schema::HttpConnectionManager,
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
    let defaults = upstream::Http2Settings::downstream();
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
        http2: upstream::Http2Settings {
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
        buffer_limit: crate::http::DEFAULT_BUFFER_LIMIT,
        path_normalization: crate::route::path::PathNormalization {
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
fn strip_port(
    hcm: &schema::HttpConnectionManager,
    path: &str,
) -> Result<crate::route::authority::StripPort, FieldError> {
    use crate::route::authority::StripPort;
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
    filters: &[typed::HttpFilter],
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

/// Loads the plugin of one Wasm filter (HTTP or network; the config has the same shape) whose
/// `typed_config` is at `typed_path`: its module is read, compiled and started once, so a
/// module that fails is a config error naming the field. A module with remote code is only
/// checked here and left pending: [`crate::wasm::remote::resolve`] fetches it once the
/// clusters (`clusters` are their names) exist.
fn load_plugin(
    wasm_config: &wasm::WasmFilterConfig,
    typed_path: &str,
    clusters: &[&str],
    node: &crate::wasm::NodeInfo,
) -> Result<std::sync::Arc<crate::wasm::PluginHandle>, FieldError> {
    let spec = wasm::plugin_spec(wasm_config, typed_path, node)?;
    if let Some(remote) = wasm::remote_code(wasm_config, typed_path, clusters)? {
        return Ok(crate::wasm::PluginHandle::remote(spec, remote));
    }
    let source = spec.source.clone();
    let code_hash = <sha2::Sha256 as sha2::Digest>::digest(&spec.code).into();
    let plugin = crate::wasm::Plugin::load(spec)
        .map_err(|e| FieldError::new(format!("{typed_path}.config.vm_config.code.local"), e))?;
    Ok(crate::wasm::PluginHandle::new(plugin, source, code_hash))
}

/// Envoy's convention: a zero duration disables the timeout.
fn nonzero(duration: Option<Duration>) -> Option<Duration> {
    duration.filter(|d| !d.is_zero())
}

fn file_of(source: &schema::DataSource, path: &str) -> Result<PathBuf, FieldError> {
    match (
        &source.filename,
        &source.inline_string,
        &source.inline_bytes,
    ) {
        (Some(file), None, None) => Ok(PathBuf::from(file)),
        _ => Err(FieldError::new(
            path,
            "TLS material must be given as {filename: PATH}; inline_string and inline_bytes are not supported here",
        )),
    }
}

/// The `validation_context.trusted_ca` file of the TLS context at `path`, checked to hold
/// usable CA certificates.
fn trusted_ca(
    common: &schema::CommonTlsContext,
    path: &str,
) -> Result<Option<PathBuf>, FieldError> {
    let Some(ca) = common
        .validation_context
        .as_ref()
        .and_then(|v| v.trusted_ca.as_ref())
    else {
        return Ok(None);
    };
    let field = format!("{path}.common_tls_context.validation_context.trusted_ca");
    let file = file_of(ca, &field)?;
    pem::check_ca(&file, &field)?;
    Ok(Some(file))
}

fn downstream_tls(
    context: &schema::DownstreamTlsContext,
    path: &str,
) -> Result<DownstreamTls, FieldError> {
    let common = &context.common_tls_context;
    if common.tls_certificates.is_empty() {
        return Err(FieldError::new(
            format!("{path}.common_tls_context.tls_certificates"),
            "a TLS listener needs at least one certificate_chain + private_key",
        ));
    }
    let mut certificates = Vec::new();
    for (i, cert) in common.tls_certificates.iter().enumerate() {
        let cert_path = format!("{path}.common_tls_context.tls_certificates[{i}]");
        let chain = file_of(
            &cert.certificate_chain,
            &format!("{cert_path}.certificate_chain"),
        )?;
        let key = file_of(&cert.private_key, &format!("{cert_path}.private_key"))?;
        pem::check_certificate(&chain, &key, &cert_path)?;
        certificates.push((chain, key));
    }
    let client_ca = trusted_ca(common, path)?;
    if context.require_client_certificate && client_ca.is_none() {
        return Err(FieldError::new(
            format!("{path}.require_client_certificate"),
            "requiring client certificates needs common_tls_context.validation_context.trusted_ca",
        ));
    }
    Ok(DownstreamTls {
        certificates,
        alpn_protocols: common.alpn_protocols.clone(),
        client_ca,
        require_client_certificate: context.require_client_certificate,
    })
}

fn cluster_spec(cluster: &schema::Cluster, path: &str) -> Result<ClusterSpec, FieldError> {
    use schema::DiscoveryType;
    let discovery = match cluster.discovery_type {
        DiscoveryType::STATIC => upstream::Discovery::Static,
        DiscoveryType::STRICT_DNS => upstream::Discovery::StrictDns,
        DiscoveryType::LOGICAL_DNS => upstream::Discovery::LogicalDns,
        DiscoveryType::ORIGINAL_DST => upstream::Discovery::OriginalDst,
    };
    original_dst_checks(cluster, path)?;
    let mut endpoints = Vec::new();
    if let Some(assignment) = &cluster.load_assignment {
        for (j, locality) in assignment.endpoints.iter().enumerate() {
            if locality.priority != 0 {
                return Err(FieldError::new(
                    format!("{path}.load_assignment.endpoints[{j}].priority"),
                    "only priority 0 is supported",
                ));
            }
            for (k, lb_endpoint) in locality.lb_endpoints.iter().enumerate() {
                let socket = &lb_endpoint.endpoint.address.socket_address;
                let field = format!(
                    "{path}.load_assignment.endpoints[{j}].lb_endpoints[{k}].endpoint.address.socket_address"
                );
                if discovery == upstream::Discovery::Static
                    && socket.address.parse::<IpAddr>().is_err()
                {
                    return Err(FieldError::new(
                        format!("{field}.address"),
                        format!(
                            "{:?} is not an IP address; a STATIC cluster needs IP literals (use type: STRICT_DNS or LOGICAL_DNS for names)",
                            socket.address
                        ),
                    ));
                }
                if socket.port_value == 0 {
                    return Err(FieldError::new(
                        format!("{field}.port_value"),
                        "an endpoint needs a port",
                    ));
                }
                endpoints.push(upstream::EndpointSpec {
                    address: socket.address.clone(),
                    port: socket.port_value,
                });
            }
        }
    }
    if discovery == upstream::Discovery::LogicalDns && endpoints.len() > 1 {
        return Err(FieldError::new(
            format!("{path}.load_assignment"),
            "a LOGICAL_DNS cluster takes exactly one endpoint",
        ));
    }
    let lb_policy = match cluster.lb_policy {
        schema::LbPolicyName::ROUND_ROBIN => upstream::LbPolicy::RoundRobin,
        schema::LbPolicyName::LEAST_REQUEST => upstream::LbPolicy::LeastRequest,
        schema::LbPolicyName::RANDOM => upstream::LbPolicy::Random,
        // Only ORIGINAL_DST takes it (checked above), and its host is the destination, not
        // a pick: the policy is never consulted.
        schema::LbPolicyName::CLUSTER_PROVIDED => upstream::LbPolicy::RoundRobin,
    };
    let mut thresholds = upstream::Thresholds::default();
    if let Some(breakers) = &cluster.circuit_breakers {
        for t in breakers
            .thresholds
            .iter()
            .filter(|t| t.priority == schema::RoutingPriority::DEFAULT)
        {
            thresholds.max_connections = t.max_connections.unwrap_or(thresholds.max_connections);
            thresholds.max_pending_requests = t
                .max_pending_requests
                .unwrap_or(thresholds.max_pending_requests);
            thresholds.max_requests = t.max_requests.unwrap_or(thresholds.max_requests);
            thresholds.max_retries = t.max_retries.unwrap_or(thresholds.max_retries);
        }
    }
    let (protocol, h2_options, common) = upstream_protocol(cluster, path)?;
    let defaults = upstream::Http2Settings::default();
    let http2 = upstream::Http2Settings {
        max_concurrent_streams: h2_options
            .as_ref()
            .and_then(|o| o.max_concurrent_streams)
            .unwrap_or(defaults.max_concurrent_streams),
        // What one upstream stream may push ahead of a slow client is the cluster's
        // buffer limit (Envoy holds it there with watermarks; an HTTP/2 window is weir's
        // watermark), unless the config sets the window itself.
        initial_stream_window_size: h2_options
            .as_ref()
            .and_then(|o| o.initial_stream_window_size)
            .unwrap_or(
                cluster
                    .per_connection_buffer_limit_bytes
                    .unwrap_or(crate::http::DEFAULT_BUFFER_LIMIT as u32)
                    .clamp(65_535, defaults.initial_stream_window_size),
            ),
        initial_connection_window_size: h2_options
            .as_ref()
            .and_then(|o| o.initial_connection_window_size)
            .unwrap_or(defaults.initial_connection_window_size),
    };
    let health_check = match cluster.health_checks.as_slice() {
        [] => None,
        [check, ..] => {
            let check_path = format!("{path}.health_checks[0]");
            let Some(http) = &check.http_health_check else {
                return Err(FieldError::new(
                    check_path,
                    "only http_health_check is supported",
                ));
            };
            if check.interval.get().is_zero() {
                return Err(FieldError::new(
                    format!("{check_path}.interval"),
                    "must be above 0s",
                ));
            }
            Some(upstream::HealthCheckSpec {
                path: http.path.clone(),
                host: http.host.clone(),
                interval: check.interval.get(),
                timeout: check.timeout.get(),
                healthy_threshold: check.healthy_threshold.max(1),
                unhealthy_threshold: check.unhealthy_threshold.max(1),
                over_quic: quic::health_check_over_quic(http.codec_client_type, protocol),
            })
        }
    };
    let tls = match &cluster.transport_socket {
        None => None,
        Some(socket) => match &socket.config {
            TransportSocketConfig::UpstreamTls(context) => Some(upstream_tls(
                context,
                &format!("{path}.transport_socket.typed_config"),
            )?),
            TransportSocketConfig::QuicUpstream(quic) => Some(upstream_tls(
                &quic.upstream_tls_context,
                &format!("{path}.transport_socket.typed_config.upstream_tls_context"),
            )?),
            TransportSocketConfig::DownstreamTls(_) | TransportSocketConfig::QuicDownstream(_) => {
                return Err(FieldError::new(
                    format!("{path}.transport_socket.typed_config.@type"),
                    "a cluster needs an UpstreamTlsContext or QuicUpstreamTransport",
                ));
            }
        },
    };
    let (http3, quic_hints) = quic::cluster_quic(cluster, protocol, path)?;
    Ok(ClusterSpec {
        name: cluster.name.clone(),
        discovery,
        endpoints,
        dns_refresh_rate: nonzero(cluster.dns_refresh_rate.map(|d| d.get()))
            .unwrap_or(Duration::from_secs(5)),
        connect_timeout: nonzero(cluster.connect_timeout.map(|d| d.get()))
            .unwrap_or(Duration::from_secs(5)),
        lb_policy,
        thresholds,
        protocol,
        http2,
        max_requests_per_connection: common
            .as_ref()
            .and_then(|c| c.max_requests_per_connection)
            .filter(|n| *n > 0),
        idle_timeout: match common.as_ref().and_then(|c| c.idle_timeout) {
            Some(d) => nonzero(Some(d.get())),
            None => Some(Duration::from_secs(3600)),
        },
        health_check,
        tls,
        http3,
        quic_hints,
        cleanup_interval: nonzero(cluster.cleanup_interval.map(|d| d.get()))
            .unwrap_or(Duration::from_secs(5)),
    })
}

/// What Envoy requires of `ORIGINAL_DST` clusters, and of `CLUSTER_PROVIDED`.
fn original_dst_checks(cluster: &schema::Cluster, path: &str) -> Result<(), FieldError> {
    use schema::{DiscoveryType, LbPolicyName};
    let original_dst = cluster.discovery_type == DiscoveryType::ORIGINAL_DST;
    let provided = cluster.lb_policy == LbPolicyName::CLUSTER_PROVIDED;
    if original_dst && !provided {
        return Err(FieldError::new(
            format!("{path}.lb_policy"),
            "a cluster of type ORIGINAL_DST needs lb_policy: CLUSTER_PROVIDED",
        ));
    }
    if provided && !original_dst {
        return Err(FieldError::new(
            format!("{path}.lb_policy"),
            "CLUSTER_PROVIDED is only for clusters of type ORIGINAL_DST",
        ));
    }
    if !original_dst {
        return Ok(());
    }
    let has_endpoints = cluster
        .load_assignment
        .as_ref()
        .is_some_and(|a| a.endpoints.iter().any(|e| !e.lb_endpoints.is_empty()));
    if has_endpoints {
        return Err(FieldError::new(
            format!("{path}.load_assignment"),
            "an ORIGINAL_DST cluster has no endpoints: it connects to each connection's original destination",
        ));
    }
    if !cluster.health_checks.is_empty() {
        return Err(FieldError::new(
            format!("{path}.health_checks"),
            "an ORIGINAL_DST cluster has no fixed hosts to check",
        ));
    }
    Ok(())
}

type ProtocolChoice = (
    upstream::UpstreamProtocol,
    Option<schema::Http2ProtocolOptions>,
    Option<schema::CommonHttpProtocolOptions>,
);

fn upstream_protocol(cluster: &schema::Cluster, path: &str) -> Result<ProtocolChoice, FieldError> {
    use upstream::UpstreamProtocol;
    let options = cluster
        .typed_extension_protocol_options
        .as_ref()
        .and_then(|m| m.http.as_ref());
    let Some(options) = options else {
        return Ok(match &cluster.http2_protocol_options {
            Some(h2) => (UpstreamProtocol::Http2, Some(h2.clone()), None),
            None => (UpstreamProtocol::Http1, None, None),
        });
    };
    let options_path = format!(
        "{path}.typed_extension_protocol_options.{}",
        typed::type_names::HTTP_PROTOCOL_OPTIONS
    );
    let common = options.common_http_protocol_options.clone();
    match (&options.explicit_http_config, &options.auto_config) {
        (Some(_), Some(_)) => Err(FieldError::new(
            options_path,
            "set one of explicit_http_config and auto_config, not both",
        )),
        (Some(explicit), None) => match (
            &explicit.http_protocol_options,
            &explicit.http2_protocol_options,
        ) {
            _ if explicit.http3_protocol_options.is_some()
                && (explicit.http_protocol_options.is_some()
                    || explicit.http2_protocol_options.is_some()) =>
            {
                Err(FieldError::new(
                    format!("{options_path}.explicit_http_config"),
                    "set exactly one of http_protocol_options, http2_protocol_options and http3_protocol_options",
                ))
            }
            (Some(_), None) => Ok((UpstreamProtocol::Http1, None, common)),
            (None, Some(h2)) => Ok((UpstreamProtocol::Http2, Some(h2.clone()), common)),
            (None, None) if explicit.http3_protocol_options.is_some() => {
                Ok((UpstreamProtocol::Http3, None, common))
            }
            _ => Err(FieldError::new(
                format!("{options_path}.explicit_http_config"),
                "set exactly one of http_protocol_options, http2_protocol_options and http3_protocol_options",
            )),
        },
        (None, Some(auto)) => Ok((
            if auto.http3_protocol_options.is_some() {
                UpstreamProtocol::AutoHttp3
            } else {
                UpstreamProtocol::Auto
            },
            auto.http2_protocol_options.clone(),
            common,
        )),
        (None, None) => Ok((UpstreamProtocol::Http1, None, common)),
    }
}

fn upstream_tls(
    context: &schema::UpstreamTlsContext,
    path: &str,
) -> Result<upstream::UpstreamTlsSpec, FieldError> {
    let common = &context.common_tls_context;
    let (cert_chain_file, private_key_file) = match common.tls_certificates.as_slice() {
        [] => (None, None),
        [cert] => {
            let cert_path = format!("{path}.common_tls_context.tls_certificates[0]");
            (
                Some(file_of(
                    &cert.certificate_chain,
                    &format!("{cert_path}.certificate_chain"),
                )?),
                Some(file_of(
                    &cert.private_key,
                    &format!("{cert_path}.private_key"),
                )?),
            )
        }
        _ => {
            return Err(FieldError::new(
                format!("{path}.common_tls_context.tls_certificates"),
                "an upstream TLS context takes at most one client certificate",
            ));
        }
    };
    if let (Some(chain), Some(key)) = (&cert_chain_file, &private_key_file) {
        let cert_path = format!("{path}.common_tls_context.tls_certificates[0]");
        pem::check_certificate(chain, key, &cert_path)?;
    }
    let ca_file = trusted_ca(common, path)?;
    Ok(upstream::UpstreamTlsSpec {
        sni: context.sni.clone(),
        ca_file,
        cert_chain_file,
        private_key_file,
        alpn_protocols: common.alpn_protocols.clone(),
    })
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod sidecar_tests;
#[cfg(test)]
mod tests;
