//! A listener as the runtime runs it: its validated config ([`crate::config::listener`]) with
//! its connection manager ([`ListenerConfig`]) or its `tcp_proxy` and network filters
//! ([`TcpListenerConfig`]) built.

use super::http_manager::{HttpManagerConfig, http_manager_config};
use super::wasm::load_plugin;
use crate::config::FieldError;
use crate::config::cluster_names::ClusterNames;
use crate::config::cluster_spec as spec;
use crate::config::common::nonzero;
use crate::config::listener::{
    Interception, Listener, NetworkFilterConfig, TunnelConfig, interception, listen_address,
    listener_quic,
};
use crate::config::tls::{DownstreamTls, TransportSocketConfig, downstream_tls};
use crate::config::wasm_spec;
use std::net::SocketAddr;
use std::time::Duration;

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
    /// The `name` of the first network filter whose ECDS config is missing
    /// ([`NetworkFilterConfig::Missing`]): while there is one, the listener closes each
    /// connection as it accepts it, before any filter sees it (as Envoy does).
    pub missing_config: Option<String>,
    /// `access_log[]`: `None` when there is none.
    pub access_log: Option<std::sync::Arc<crate::access_log::AccessLogs>>,
    /// The listener's own `access_log[]` (one line per connection); `None` when there is none.
    pub listener_access_log: Option<std::sync::Arc<crate::access_log::AccessLogs>>,
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
    /// The connection manager, shared by every worker's manager of this snapshot (a route
    /// table of thousands of routes is built once, not copied per worker).
    pub http: std::sync::Arc<HttpManagerConfig>,
}

/// A listener whose network filters end with a tcp_proxy, after any number of
/// `envoy.filters.network.wasm`; `None` for any other listener.
pub(super) fn tcp_listener_config(
    listener: &Listener,
    path: &str,
    clusters: &ClusterNames,
    node: &wasm_spec::NodeInfo,
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
    let mut missing_config = None;
    for (i, filter) in before.iter().enumerate() {
        let filter_path = format!("{path}.filter_chains[0].filters[{i}]");
        let wasm_config = match &filter.config {
            NetworkFilterConfig::Wasm(wasm_config) => wasm_config,
            NetworkFilterConfig::Missing => {
                missing_config.get_or_insert_with(|| filter.name.clone());
                continue;
            }
            NetworkFilterConfig::Discovered(_) => {
                return Err(FieldError::new(
                    format!("{filter_path}.config_discovery"),
                    "the config of this filter comes over xDS (ECDS) and has not arrived: dynamic_resources.ads_config must name the control plane",
                ));
            }
            _ => {
                return Err(FieldError::new(
                    filter_path,
                    "before a tcp_proxy only envoy.filters.network.wasm filters are supported",
                ));
            }
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
    if !clusters.contains(proxy.cluster.as_str()) {
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
            missing_config,
            access_log: crate::access_log::AccessLogs::from_config(
                &proxy.access_log,
                &format!("{filter_path}.access_log"),
            )?,
            listener_access_log: crate::access_log::AccessLogs::from_config(
                &listener.access_log,
                &format!("{path}.access_log"),
            )?,
            idle_timeout: match proxy.idle_timeout {
                Some(d) => nonzero(Some(d.get())),
                None => Some(Duration::from_secs(3600)),
            },
        },
    }))
}

/// Reads the HTTP listener at `path` (one filter chain ending in an HTTP connection manager).
pub(super) fn listener_config(
    listener: &Listener,
    path: &str,
    clusters: &ClusterNames,
    node: &wasm_spec::NodeInfo,
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
    http.listener_access_log = crate::access_log::AccessLogs::from_config(
        &listener.access_log,
        &format!("{path}.access_log"),
    )?;
    let quic = listener_quic(listener, chain, hcm, path)?;
    Ok(ListenerConfig {
        name,
        address,
        tls,
        quic,
        interception,
        http: std::sync::Arc::new(http),
    })
}
