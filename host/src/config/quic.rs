//! The QUIC (HTTP/3) parts of the schema that listeners and clusters share
//! (`udp_listener_config`, `quic_protocol_options`, `http3_protocol_options`,
//! `alternate_protocols_cache_options`), and how their options overlay [`Http3Settings`].
//! Envoy's consistency rules (a UDP listener needs `quic_options`, the QUIC transport socket and
//! `codec_type: HTTP3`; an HTTP/3 cluster needs `QuicUpstreamTransport`) are checked where the
//! listener and the cluster are read ([`super::listener`], [`super::cluster`]).

use super::cluster_spec::Http3Settings;
use super::duration::ConfigDuration;
use serde::Deserialize;

/// `udp_listener_config`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UdpListenerConfig {
    /// Socket buffer sizes and GRO; accepted, weir leaves them to quinn.
    #[serde(default)]
    pub downstream_socket_config: Option<UdpSocketConfig>,
    /// Makes the listener a QUIC listener.
    #[serde(default)]
    pub quic_options: Option<QuicListenerOptions>,
}

/// `config.core.v3.UdpSocketConfig` (accepted for compatibility; quinn sizes its own buffers).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UdpSocketConfig {
    /// Largest datagram read.
    #[serde(default)]
    pub max_rx_datagram_size: Option<u64>,
    /// Use UDP GRO where the kernel has it.
    #[serde(default)]
    pub prefer_gro: Option<bool>,
}

/// `udp_listener_config.quic_options` (`config.listener.v3.QuicProtocolOptions`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuicListenerOptions {
    /// Stream limits and flow-control windows.
    #[serde(default)]
    pub quic_protocol_options: Option<QuicProtocolOptions>,
    /// A connection with no packets for this long is closed (Envoy default 300s).
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
    /// Time allowed for the QUIC handshake (accepted; quinn bounds it by the idle timeout).
    #[serde(default)]
    pub crypto_handshake_timeout: Option<ConfigDuration>,
    /// Accepted for compatibility (runtime feature flag).
    #[serde(default)]
    pub enabled: Option<serde_yaml_ng::Value>,
}

/// `config.core.v3.QuicProtocolOptions`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuicProtocolOptions {
    /// Most concurrent bidirectional streams the peer may open (Envoy default 100).
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// Per-stream flow-control window (Envoy default 16 MiB).
    #[serde(default)]
    pub initial_stream_window_size: Option<u32>,
    /// Connection flow-control window (Envoy default 24 MiB).
    #[serde(default)]
    pub initial_connection_window_size: Option<u32>,
    /// Close a connection with no packets for this long.
    #[serde(default)]
    pub idle_network_timeout: Option<ConfigDuration>,
}

/// `http3_protocol_options` (`config.core.v3.Http3ProtocolOptions`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Http3ProtocolOptions {
    /// QUIC transport settings.
    #[serde(default)]
    pub quic_protocol_options: Option<QuicProtocolOptions>,
    /// RFC 9220 extended CONNECT: a QUIC listener advertises SETTINGS_ENABLE_CONNECT_PROTOCOL
    /// and serves WebSocket (any upgrade) over HTTP/3 streams. On a cluster it is accepted and
    /// not needed: the peer's SETTINGS decide.
    #[serde(default)]
    pub allow_extended_connect: bool,
    /// Accepted for compatibility.
    #[serde(default)]
    pub override_stream_error_on_invalid_http_message: Option<bool>,
}

/// `alternate_protocols_cache_options` of `auto_config`: where alt-svc entries are kept, and
/// entries known before any response (QUIC hints).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AlternateProtocolsCacheOptions {
    /// The cache's name (Envoy shares caches by name; weir keeps one per cluster).
    #[serde(default)]
    pub name: String,
    /// Most entries kept.
    #[serde(default)]
    pub max_entries: Option<u32>,
    /// Hosts known to speak HTTP/3 on the same port before they advertise it.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub prepopulated_entries: Vec<AlternateProtocolsCacheEntry>,
    /// Accepted for compatibility (weir stores nothing on disk).
    #[serde(default)]
    pub key_value_store_config: Option<serde_yaml_ng::Value>,
    /// Accepted for compatibility.
    #[serde(default)]
    pub canonical_suffixes: Vec<String>,
}

/// `prepopulated_entries[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlternateProtocolsCacheEntry {
    /// Host name or IP of the endpoint.
    pub hostname: String,
    /// Its port.
    pub port: u16,
}

/// Overlays the fields set in `options` onto `settings`.
pub(super) fn overlay(settings: &mut Http3Settings, options: Option<&QuicProtocolOptions>) {
    let Some(options) = options else { return };
    if let Some(n) = options.max_concurrent_streams {
        settings.max_concurrent_streams = n.max(1);
    }
    if let Some(n) = options.initial_stream_window_size {
        settings.initial_stream_window_size = n;
    }
    if let Some(n) = options.initial_connection_window_size {
        settings.initial_connection_window_size = n;
    }
    if let Some(d) = options.idle_network_timeout.filter(|d| !d.get().is_zero()) {
        settings.idle_timeout = d.get();
    }
}
