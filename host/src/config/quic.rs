//! The HTTP/3 parts of the config: which listeners are QUIC listeners and which clusters speak
//! HTTP/3, checked for Envoy's consistency rules (a UDP listener needs `quic_options`, the QUIC
//! transport socket and `codec_type: HTTP3`; an HTTP/3 cluster needs `QuicUpstreamTransport`).

use super::FieldError;
use super::schema::{self, CodecType, QuicProtocolOptions, SocketProtocol};
use super::typed::TransportSocketConfig;
use crate::upstream::{Http3Settings, UpstreamProtocol};

/// Overlays the fields set in `options` onto `settings`.
fn overlay(settings: &mut Http3Settings, options: Option<&QuicProtocolOptions>) {
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

/// The QUIC settings of `listener` when it is a QUIC listener, `None` for TCP; an error for a
/// half-QUIC listener.
pub(super) fn listener_quic(
    listener: &schema::Listener,
    chain: &schema::FilterChain,
    hcm: &schema::HttpConnectionManager,
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

/// Whether a cluster's health checks go over QUIC: `codec_client_type: HTTP3`, or none given
/// on an explicit HTTP/3 cluster (Envoy would check such a cluster with HTTP/1.1 over TCP,
/// which a QUIC-only upstream cannot answer).
pub(super) fn health_check_over_quic(
    codec: Option<schema::HealthCheckCodec>,
    protocol: UpstreamProtocol,
) -> bool {
    match codec {
        Some(codec) => codec == schema::HealthCheckCodec::HTTP3,
        None => protocol == UpstreamProtocol::Http3,
    }
}

/// What HTTP/3 adds to a cluster of `protocol`: its QUIC settings and QUIC hints, after
/// checking the protocol against the transport socket.
pub(super) fn cluster_quic(
    cluster: &schema::Cluster,
    protocol: UpstreamProtocol,
    path: &str,
) -> Result<(Http3Settings, Vec<(String, u16)>), FieldError> {
    let quic_socket = matches!(
        cluster.transport_socket.as_ref().map(|t| &t.config),
        Some(TransportSocketConfig::QuicUpstream(_))
    );
    let wants_h3 = matches!(
        protocol,
        UpstreamProtocol::Http3 | UpstreamProtocol::AutoHttp3
    );
    if wants_h3 && !quic_socket {
        return Err(FieldError::new(
            format!("{path}.transport_socket"),
            "HTTP/3 to a cluster needs transport_socket envoy.transport_sockets.quic with a QuicUpstreamTransport",
        ));
    }
    if quic_socket && !wants_h3 {
        return Err(FieldError::new(
            format!("{path}.transport_socket"),
            "a QuicUpstreamTransport needs http3_protocol_options in explicit_http_config or auto_config",
        ));
    }
    let options = cluster
        .typed_extension_protocol_options
        .as_ref()
        .and_then(|m| m.http.as_ref());
    let explicit = options
        .and_then(|o| o.explicit_http_config.as_ref())
        .and_then(|e| e.http3_protocol_options.as_ref());
    let auto = options.and_then(|o| o.auto_config.as_ref());
    let h3 = explicit.or_else(|| auto.and_then(|a| a.http3_protocol_options.as_ref()));
    let mut settings = Http3Settings::default();
    overlay(
        &mut settings,
        h3.and_then(|o| o.quic_protocol_options.as_ref()),
    );
    let mut hints = Vec::new();
    if protocol == UpstreamProtocol::AutoHttp3 {
        let Some(cache) = auto.and_then(|a| a.alternate_protocols_cache_options.as_ref()) else {
            return Err(FieldError::new(
                format!(
                    "{path}.typed_extension_protocol_options.{}.auto_config.alternate_protocols_cache_options",
                    super::typed::type_names::HTTP_PROTOCOL_OPTIONS
                ),
                "auto_config with http3_protocol_options needs alternate_protocols_cache_options (as in Envoy)",
            ));
        };
        hints = cache
            .prepopulated_entries
            .iter()
            .map(|e| (e.hostname.to_ascii_lowercase(), e.port))
            .collect();
    }
    Ok((settings, hints))
}
