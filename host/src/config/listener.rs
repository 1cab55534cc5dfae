//! `static_resources.listeners[]`: the schema of a listener, its filter chain and its
//! network filters, and the plain settings read from it (its address, interception, QUIC
//! settings); `snapshot::listener` reads the rest into the runtime's `ListenerConfig`
//! (an HTTP listener) or `TcpListenerConfig` (a `tcp_proxy` listener, with its
//! [`TunnelConfig`]).

use super::FieldError;
use super::cluster_spec::Http3Settings;
use super::common::{Address, HeaderValueOption, SocketProtocol};
use super::duration::ConfigDuration;
use super::http_manager::{CodecType, ExtensionConfigSource, HttpConnectionManager};
use super::quic::{UdpListenerConfig, overlay};
use super::tls::{TransportSocket, TransportSocketConfig};
use super::typed::{PATH_MARK, RawExtension, split_typed, type_names, typed, unsupported};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, SocketAddr};

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
    /// `access_log[]`: one line per downstream connection, at its close (see
    /// `access_log::listener`); Envoy's `AccessLog`s, read by [`crate::access_log`].
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub access_log: Vec<serde_json::Value>,
}

impl Listener {
    /// Every HTTP connection manager of the listener's filter chains, to fill in the routes
    /// RDS delivered ([`HttpConnectionManager::set_rds_route_config`]).
    pub fn http_managers_mut(&mut self) -> impl Iterator<Item = &mut HttpConnectionManager> {
        self.filter_chains
            .iter_mut()
            .flat_map(|chain| chain.filters.iter_mut())
            .filter_map(|filter| match &mut filter.config {
                NetworkFilterConfig::HttpConnectionManager(hcm) => Some(&mut **hcm),
                _ => None,
            })
    }

    /// Every HTTP connection manager of the listener's filter chains.
    pub fn http_managers(&self) -> impl Iterator<Item = &HttpConnectionManager> {
        self.filter_chains
            .iter()
            .flat_map(|chain| chain.filters.iter())
            .filter_map(|filter| match &filter.config {
                NetworkFilterConfig::HttpConnectionManager(hcm) => Some(&**hcm),
                _ => None,
            })
    }
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
    /// `config_discovery`: the config comes over ECDS; the xDS assembler puts it (or the
    /// default) in place before the snapshot is built.
    Discovered(Box<ExtensionConfigSource>),
    /// `config_discovery` whose config did not come within `initial_fetch_timeout` and that
    /// has no `default_config`: put in by the xDS assembler, it makes the listener close
    /// every connection it accepts, before any filter sees it (Envoy's
    /// `network_extension_config_missing`), until the config comes.
    Missing,
}

/// `filter_chains[].filters[]` as written: an extension with `typed_config`, or one whose
/// config comes over ECDS (`config_discovery`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetworkFilter {
    name: String,
    #[serde(default)]
    typed_config: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    config_discovery: Option<ExtensionConfigSource>,
}

impl<'de> Deserialize<'de> for NetworkFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawNetworkFilter::deserialize(deserializer)?;
        let config = match (raw.typed_config, raw.config_discovery) {
            (Some(_), Some(_)) => {
                return Err(D::Error::custom(format!(
                    "{PATH_MARK}config_discovery{PATH_MARK}set exactly one of typed_config and config_discovery",
                )));
            }
            (None, Some(discovery)) => {
                discovery.check_network().map_err(D::Error::custom)?;
                NetworkFilterConfig::Discovered(Box::new(discovery))
            }
            (typed_config, None) => {
                network_filter_config(&raw.name, typed_config).map_err(D::Error::custom)?
            }
        };
        Ok(NetworkFilter {
            name: raw.name,
            config,
        })
    }
}

/// Reads the `typed_config` of the network filter `name`. Errors carry their path inside
/// `typed_config` (see [`super::typed`]).
pub fn network_filter_config(
    name: &str,
    typed_config: Option<serde_yaml_ng::Value>,
) -> Result<NetworkFilterConfig, String> {
    let (type_name, value) = split_typed(name, typed_config)?;
    Ok(match type_name.as_str() {
        type_names::HCM => NetworkFilterConfig::HttpConnectionManager(Box::new(typed(value)?)),
        type_names::TCP_PROXY => NetworkFilterConfig::TcpProxy(Box::new(typed(value)?)),
        type_names::NETWORK_WASM => NetworkFilterConfig::Wasm(Box::new(typed(value)?)),
        other => {
            return Err(unsupported(
                "network filter",
                other,
                &[
                    type_names::HCM,
                    type_names::TCP_PROXY,
                    type_names::NETWORK_WASM,
                ],
            ));
        }
    })
}

impl NetworkFilter {
    /// Whether its config comes over ECDS (`config_discovery`) and has not been put in.
    pub fn discovery(&self) -> Option<&ExtensionConfigSource> {
        match &self.config {
            NetworkFilterConfig::Discovered(discovery) => Some(discovery),
            _ => None,
        }
    }
}

impl ExtensionConfigSource {
    /// [`ExtensionConfigSource::check`] for a network filter: its `default_config` must read
    /// as a network filter's.
    fn check_network(&self) -> Result<(), String> {
        self.check_source()?;
        self.default_network_config("").map(|_| ())
    }

    /// `default_config` read as the network filter `name`'s config, if there is one.
    pub fn default_network_config(
        &self,
        name: &str,
    ) -> Result<Option<NetworkFilterConfig>, String> {
        let Some(default) = &self.default_config else {
            return Ok(None);
        };
        network_filter_config(name, Some(default.clone()))
            .map(Some)
            .map_err(super::http_manager::in_default_config)
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

/// `use_original_dst`, `listener_filters` and `transparent` of a listener.
pub fn interception(listener: &Listener, path: &str) -> Result<Interception, FieldError> {
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
pub fn listen_address(address: &Address, path: &str) -> Result<SocketAddr, FieldError> {
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

/// The QUIC settings of `listener` when it is a QUIC listener, `None` for TCP; an error for a
/// half-QUIC listener.
pub fn listener_quic(
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
