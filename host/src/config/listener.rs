//! `static_resources.listeners[]`: the schema of a listener, its filter chain and its
//! network filters, and its reading into [`ListenerConfig`] (an HTTP listener) or
//! [`TcpListenerConfig`] (a `tcp_proxy` listener).

use super::FieldError;
use super::cluster_spec as spec;
use super::cluster_spec::Http3Settings;
use super::common::{Address, HeaderValueOption, SocketProtocol, nonzero};
use super::duration::ConfigDuration;
use super::http_manager::{
    CodecType, HttpConnectionManager, HttpManagerConfig, http_manager_config,
};
use super::quic::{UdpListenerConfig, overlay};
use super::tls::{DownstreamTls, TransportSocket, TransportSocketConfig, downstream_tls};
use super::typed::{RawExtension, split_typed, type_names, typed, unsupported};
use super::wasm::load_plugin;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `listeners[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name.
    #[serde(default)]
    pub name: String,
    /// Where it binds.
    pub address: Address,
    /// `filter_chains[]`; weir uses the first (filter_chain_match is not supported).
    #[serde(deserialize_with = "super::lenient::one_or_many")]
    pub filter_chains: Vec<FilterChain>,
    /// Most body bytes a Wasm filter may hold paused (Envoy default 1 MiB): past it a request
    /// gets 413 and a response is reset.
    #[serde(default)]
    pub per_connection_buffer_limit_bytes: Option<u32>,
    /// A UDP listener's settings; with `quic_options` it is a QUIC (HTTP/3) listener.
    #[serde(default)]
    pub udp_listener_config: Option<UdpListenerConfig>,
    /// Connections redirected to this listener (iptables/nftables REDIRECT) go on to where
    /// they were headed: an `ORIGINAL_DST` cluster connects there. The same as listing
    /// `envoy.filters.listener.original_dst` in `listener_filters`.
    #[serde(default)]
    pub use_original_dst: Option<bool>,
    /// `listener_filters[]`: run on each accepted connection before its filter chain.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub listener_filters: Vec<ListenerFilter>,
    /// Bind with `IP_TRANSPARENT` (TPROXY): connections to any address routed here are
    /// accepted, and their local address is where they were headed.
    #[serde(default)]
    pub transparent: Option<bool>,
}

/// `filter_chains[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterChain {
    /// Optional name.
    #[serde(default)]
    pub name: Option<String>,
    /// `filters[]`: network filters, the last one terminal.
    #[serde(deserialize_with = "super::lenient::one_or_many")]
    pub filters: Vec<NetworkFilter>,
    /// TLS for the downstream side (`DownstreamTlsContext`).
    #[serde(default)]
    pub transport_socket: Option<TransportSocket>,
}

/// `envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProxy {
    /// Label of its stats.
    pub stat_prefix: String,
    /// Where connections go.
    pub cluster: String,
    /// Carry each connection inside an HTTP CONNECT (or POST) to the cluster.
    #[serde(default)]
    pub tunneling_config: Option<TunnelingConfig>,
    /// Close a connection with no bytes either way for this long (Envoy default 1h).
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
    /// `access_log[]`: one line per connection, at its close.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub access_log: Vec<serde_json::Value>,
}

/// `tunneling_config` of a tcp_proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelingConfig {
    /// The CONNECT authority (or POST host), e.g. `host.example:443`.
    pub hostname: String,
    /// POST instead of CONNECT.
    #[serde(default)]
    pub use_post: bool,
    /// The POST path (default "/").
    #[serde(default)]
    pub post_path: Option<String>,
    /// Headers added to the tunnel request.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub headers_to_add: Vec<HeaderValueOption>,
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
    pub quic: Option<spec::Http3Settings>,
    /// Whether it takes redirected connections (sidecar mode; TCP listeners only).
    pub interception: Interception,
    /// The connection manager.
    pub http: HttpManagerConfig,
}

/// A listener whose network filters end with a tcp_proxy, after any number of
/// `envoy.filters.network.wasm`; `None` for any other listener.
pub(super) fn tcp_listener_config(
    listener: &Listener,
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
fn interception(listener: &Listener, path: &str) -> Result<Interception, FieldError> {
    let mut use_original_dst = listener.use_original_dst.unwrap_or(false);
    for filter in &listener.listener_filters {
        match filter.config {
            ListenerFilterConfig::OriginalDst(_) => use_original_dst = true,
        }
    }
    let interception = Interception {
        use_original_dst,
        transparent: listener.transparent.unwrap_or(false),
    };
    let udp = listener.address.socket_address.protocol == SocketProtocol::UDP
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

/// The address a listener (or the admin listener) at `path` binds: an IP literal and a port.
pub(super) fn listen_address(address: &Address, path: &str) -> Result<SocketAddr, FieldError> {
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
    if socket.protocol != SocketProtocol::TCP && path == "admin.address" {
        return Err(FieldError::new(
            format!("{path}.socket_address.protocol"),
            "the admin listener is TCP; accepted: TCP",
        ));
    }
    Ok(SocketAddr::new(ip, socket.port_value))
}

/// Reads the HTTP listener at `path` (one filter chain ending in an HTTP connection manager).
pub(super) fn listener_config(
    listener: &Listener,
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
    let quic = listener_quic(listener, chain, hcm, path)?;
    Ok(ListenerConfig {
        name,
        address,
        tls,
        quic,
        interception,
        http,
    })
}

/// The QUIC settings of `listener` when it is a QUIC listener, `None` for TCP; an error for a
/// half-QUIC listener.
fn listener_quic(
    listener: &Listener,
    chain: &FilterChain,
    hcm: &HttpConnectionManager,
    path: &str,
) -> Result<Option<Http3Settings>, FieldError> {
    let udp = listener.address.socket_address.protocol == SocketProtocol::UDP;
    let quic_options = listener
        .udp_listener_config
        .as_ref()
        .and_then(|u| u.quic_options.as_ref());
    let quic_socket = matches!(
        chain.transport_socket.as_ref().map(|t| &t.config),
        Some(TransportSocketConfig::QuicDownstream(_))
    );
    let chain_path = format!("{path}.filter_chains[0]");
    let codec_path = format!("{chain_path}.filters[0].typed_config.codec_type");
    if !udp {
        if quic_options.is_some() {
            return Err(FieldError::new(
                format!("{path}.udp_listener_config.quic_options"),
                "quic_options need address.socket_address.protocol: UDP",
            ));
        }
        if quic_socket {
            return Err(FieldError::new(
                format!("{chain_path}.transport_socket"),
                "QuicDownstreamTransport needs a UDP listener (address.socket_address.protocol: UDP)",
            ));
        }
        if hcm.codec_type == CodecType::HTTP3 {
            return Err(FieldError::new(
                codec_path,
                "HTTP3 needs a UDP listener with udp_listener_config.quic_options",
            ));
        }
        return Ok(None);
    }
    let Some(quic_options) = quic_options else {
        return Err(FieldError::new(
            format!("{path}.udp_listener_config.quic_options"),
            "a UDP listener serves QUIC: set udp_listener_config: {quic_options: {}}",
        ));
    };
    if !quic_socket {
        return Err(FieldError::new(
            format!("{chain_path}.transport_socket"),
            "a QUIC listener needs transport_socket envoy.transport_sockets.quic with a QuicDownstreamTransport",
        ));
    }
    if hcm.codec_type != CodecType::HTTP3 {
        return Err(FieldError::new(
            codec_path,
            "a QUIC listener needs codec_type: HTTP3",
        ));
    }
    let mut settings = Http3Settings::downstream();
    overlay(&mut settings, quic_options.quic_protocol_options.as_ref());
    overlay(
        &mut settings,
        hcm.http3_protocol_options
            .as_ref()
            .and_then(|o| o.quic_protocol_options.as_ref()),
    );
    if let Some(idle) = quic_options.idle_timeout.filter(|d| !d.get().is_zero()) {
        settings.idle_timeout = idle.get();
    }
    Ok(Some(settings))
}
