//! QUIC listeners: the UDP socket, the quinn endpoint with rustls (ALPN "h3", certificates
//! picked by SNI exactly as on TCP) and the accept loop handing each connection to HTTP/3.
//!
//! Workers and QUIC: the kernel spreads datagrams over `SO_REUSEPORT` sockets by their
//! 4-tuple, which breaks QUIC once a client migrates or its connection ID routing matters, and
//! a quinn endpoint must own every datagram of its connections. So each QUIC listener has one
//! endpoint, served by one worker (worker 0); its connections and requests run on that worker.
//! TCP listeners keep one socket per worker.

use super::tls::{self, TlsError};
use crate::config::DownstreamTls;
use crate::http::{CurrentManager, serve_h3_connection};
use crate::upstream::Http3Settings;
use quinn::crypto::rustls::QuicServerConfig;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// ALPN of HTTP/3.
const ALPN_H3: &[u8] = b"h3";

/// Binds the UDP socket of a QUIC listener (no `SO_REUSEPORT`: one endpoint owns the port).
pub fn bind_udp(address: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket.into())
}

/// The quinn server config of a QUIC listener: its TLS (read and checked now, so a bad key
/// stops start-up naming the file), ALPN "h3" only, and the listener's QUIC settings.
pub fn server_config(
    tls: &DownstreamTls,
    settings: &Http3Settings,
) -> Result<quinn::ServerConfig, TlsError> {
    let rustls_config = tls::server_config(tls)?;
    let mut rustls_config = (*rustls_config).clone();
    rustls_config.alpn_protocols = vec![ALPN_H3.to_vec()];
    rustls_config.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(rustls_config).map_err(|e| TlsError::Invalid {
        path: tls
            .certificates
            .first()
            .map(|(chain, _)| chain.clone())
            .unwrap_or_default(),
        what: format!("not usable for QUIC: {e}"),
    })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(settings.max_concurrent_streams.into())
        .stream_receive_window(settings.initial_stream_window_size.into())
        .receive_window(settings.initial_connection_window_size.into());
    if let Ok(idle) = quinn::IdleTimeout::try_from(settings.idle_timeout) {
        transport.max_idle_timeout(Some(idle));
    }
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// What a QUIC listener serves with: its TLS and transport settings, its connection manager,
/// and the marker that counts it draining once retired (see [`super::set::ListenerLife`]).
pub struct QuicTarget {
    /// The endpoint's server config.
    pub config: quinn::ServerConfig,
    /// The connection manager new connections are served with.
    pub manager: Arc<CurrentManager>,
    /// Held while the listener's connections run.
    pub life: Arc<super::set::ListenerLife>,
}

/// Accepts QUIC connections on `socket` until `stop` says so, serving each with HTTP/3
/// on its own task (each holds a clone of `alive`, as TCP connections do); then, as a TCP
/// listener does ([`super::accept_each`]), refuses new connections, lets those open drain
/// (GOAWAY) and closes any still open after `drain_time`.
///
/// A listener replaced at the same address keeps the endpoint (one UDP socket cannot serve
/// two): a [`QuicTarget`] from `replaced` becomes the endpoint's server config and the
/// manager of new connections at once, while the connections accepted so far drain as those
/// of a retired listener do.
pub async fn quic_accept_loop(
    socket: std::net::UdpSocket,
    target: QuicTarget,
    mut stop: watch::Receiver<super::Stop>,
    mut replaced: mpsc::UnboundedReceiver<QuicTarget>,
    alive: mpsc::Sender<()>,
    drain_time: std::time::Duration,
) {
    let QuicTarget {
        config,
        mut manager,
        mut life,
    } = target;
    let local = match socket.local_addr() {
        Ok(local) => local,
        Err(error) => {
            tracing::error!(%error, "QUIC listener has no address");
            return;
        }
    };
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let endpoint = match quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    ) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            tracing::error!(%error, %local, "cannot start QUIC endpoint");
            return;
        }
    };
    let overflow = crate::stats::ListenerStats::new(Some(local));
    let mut connections = tokio::task::JoinSet::new();
    let (mut drain, mut shutdown) = watch::channel(false);
    let why = loop {
        let why = *stop.borrow_and_update();
        if why != super::Stop::Running {
            break why;
        }
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            Some(next) = replaced.recv() => {
                endpoint.set_server_config(Some(next.config));
                manager = next.manager;
                let (next_drain, next_shutdown) = watch::channel(false);
                shutdown = next_shutdown;
                let old = (
                    std::mem::take(&mut connections),
                    std::mem::replace(&mut drain, next_drain),
                    std::mem::replace(&mut life, next.life),
                );
                let alive = alive.clone();
                tracing::debug!(%local, open = old.0.len(), "QUIC listener replaced; its connections drain");
                tokio::spawn(async move {
                    let (connections, drain, _life) = old;
                    let _alive = alive;
                    super::drain_connections(connections, &drain, super::Stop::Retired, drain_time, Some(local)).await;
                });
                continue;
            }
            changed = stop.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break super::Stop::Shutdown,
            },
        };
        let Some(incoming) = incoming else {
            break super::Stop::Shutdown;
        };
        let Some(slot) = crate::overload::admit_connection() else {
            // Refused before the handshake: the client gets CONNECTION_REFUSED.
            overflow.downstream_global_cx_overflow.inc();
            tracing::debug!(peer = %incoming.remote_address(), "global downstream connection limit reached; QUIC connection refused");
            incoming.refuse();
            continue;
        };
        let manager = manager.clone();
        let shutdown = shutdown.clone();
        let alive = alive.clone();
        connections.spawn(async move {
            let _alive = alive;
            let _slot = slot;
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => serve_h3_connection(manager, connection, local, shutdown).await,
                Err(error) => tracing::debug!(peer = %remote, %error, "QUIC handshake failed"),
            }
        });
    };
    // New connections are refused from now on; open ones drain on their own tasks.
    endpoint.set_server_config(None);
    tracing::debug!(%local, open = connections.len(), "QUIC listener closed; draining");
    super::drain_connections(connections, &drain, why, drain_time, Some(local)).await;
    // The endpoint (and its UDP socket) goes once its last connection has.
    endpoint.close(0u32.into(), b"listener removed");
    drop(life);
}
