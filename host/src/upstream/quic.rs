//! QUIC client side of HTTP/3 clusters: the quinn client config (rustls with ALPN "h3", the
//! cluster's CA and SNI rules) and the client endpoint each HTTP/3 pool sends from.

use super::error::UpstreamError;
use super::spec::{ClusterSpec, Http3Settings, UpstreamProtocol};
use super::tls::{self, ALPN_H3};
use quinn::crypto::rustls::QuicClientConfig;
use std::net::SocketAddr;
use std::sync::Arc;

/// The QUIC client config of a cluster that speaks HTTP/3 (explicitly or by alt-svc), `None`
/// for the others. Built once with the cluster, so unreadable TLS files are config errors.
pub fn client_config(spec: &ClusterSpec) -> Result<Option<quinn::ClientConfig>, UpstreamError> {
    if !matches!(
        spec.protocol,
        UpstreamProtocol::Http3 | UpstreamProtocol::AutoHttp3
    ) {
        return Ok(None);
    }
    let config_error = |reason: String| UpstreamError::Config {
        cluster: spec.name.clone(),
        reason,
    };
    let tls_spec = spec.tls.clone().unwrap_or_default();
    let rustls_config = tls::client_config(&spec.name, &tls_spec, UpstreamProtocol::Http3)?;
    let mut rustls_config = (*rustls_config).clone();
    rustls_config.alpn_protocols = vec![ALPN_H3.to_vec()];
    let crypto = QuicClientConfig::try_from(rustls_config)
        .map_err(|e| config_error(format!("QUIC TLS config: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport(&spec.http3)));
    Ok(Some(config))
}

/// Transport settings of upstream connections: our receive windows and idle timeout; the
/// server opens no streams to us (no server push), so it gets no bidirectional streams.
fn transport(settings: &Http3Settings) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(0u32.into())
        .stream_receive_window(settings.initial_stream_window_size.into())
        .receive_window(settings.initial_connection_window_size.into())
        .keep_alive_interval(Some(std::time::Duration::from_secs(15)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(settings.idle_timeout) {
        transport.max_idle_timeout(Some(idle));
    }
    transport
}

/// A client endpoint on an ephemeral UDP port of `peer`'s address family, its socket marked
/// with the upstream mark (`--upstream-mark`) like weir's TCP upstream sockets, so sidecar
/// rules let its datagrams through.
pub fn client_endpoint(
    config: &quinn::ClientConfig,
    peer: SocketAddr,
) -> std::io::Result<quinn::Endpoint> {
    let local: SocketAddr = if peer.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = super::mark::bind_udp(local)?;
    let runtime: std::sync::Arc<dyn quinn::Runtime> = std::sync::Arc::new(quinn::TokioRuntime);
    let mut endpoint =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?;

    endpoint.set_default_client_config(config.clone());
    Ok(endpoint)
}

/// The server name a QUIC handshake is made for: the SNI, else the IP as text (quinn needs a
/// name; rustls sends no SNI for an IP, as over TCP).
pub fn server_name(spec: &ClusterSpec, peer: SocketAddr) -> String {
    spec.tls
        .as_ref()
        .and_then(|t| t.sni.clone())
        .unwrap_or_else(|| peer.ip().to_string())
}

/// One active health check of an HTTP/3 host: a fresh QUIC connection (from its own endpoint,
/// so it shares nothing with the pools), `GET path` with `authority`, the response head.
/// The caller bounds it with the check's timeout.
pub async fn health_check(
    cluster: &super::cluster::Cluster,
    host: SocketAddr,
    authority: &str,
    path: &str,
) -> Result<http::response::Parts, crate::body::BoxError> {
    let config = cluster
        .quic
        .as_ref()
        .ok_or("the cluster has no QUIC config")?;
    let endpoint = client_endpoint(config, host)?;
    let name = server_name(&cluster.spec, host);
    let connection = endpoint.connect(host, &name)?.await?;
    let (mut driver, mut send) =
        h3::client::new(h3_quinn::Connection::new(connection.clone())).await?;
    let drive = tokio::spawn(async move { driver.wait_idle().await });
    let uri = http::Uri::builder()
        .scheme("https")
        .authority(authority)
        .path_and_query(path)
        .build()?;
    let exchange = async {
        let mut stream = send.send_request(http::Request::get(uri).body(())?).await?;
        stream.finish().await?;
        let response = stream.recv_response().await?;
        Ok::<_, crate::body::BoxError>(response.into_parts().0)
    };
    let status = exchange.await;
    drive.abort();
    // 0x100: H3_NO_ERROR.
    connection.close(quinn::VarInt::from_u32(0x100), b"health check done");
    endpoint.wait_idle().await;
    status
}
