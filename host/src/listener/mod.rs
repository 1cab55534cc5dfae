//! Listeners: binding (one `SO_REUSEPORT` socket per worker), TLS with ALPN, and the accept
//! loop that hands each connection to its HTTP connection manager.

pub mod quic;
pub mod tls;

use crate::http::{ConnectionInfo, ConnectionTls, HttpManager, serve_connection};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
pub use tls::TlsError;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Binds a TCP listening socket at `address` that other workers can bind too
/// (`SO_REUSEPORT`: the kernel spreads connections over them).
pub fn bind_tcp(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if address.is_ipv6() {
        // `::` takes IPv4 too only where Envoy's ipv4_compat asks; the default is IPv6 only.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Accepts connections on `listener` until `shutdown` turns true, serving each on its own
/// task. Every connection task holds a clone of `alive`, so the worker can wait for all of
/// them to finish by waiting for the channel to close.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    manager: Arc<HttpManager>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot register listener with the runtime");
            return;
        }
    };
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY");
        }
        let local = stream.local_addr().ok().or(local).unwrap_or(remote);
        let manager = manager.clone();
        let shutdown = shutdown.clone();
        let alive = alive.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let info = ConnectionInfo {
                remote,
                local,
                tls: tls.is_some(),
                socket: crate::tunnel::reset::SocketId::of(&stream),
            };
            match tls {
                None => {
                    serve_connection(manager, stream, info, ConnectionTls::default(), shutdown)
                        .await
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                        let tls = ConnectionTls { tls: true, alpn };
                        serve_connection(manager, stream, info, tls, shutdown).await;
                    }
                    Err(error) => tracing::debug!(peer = %remote, %error, "TLS handshake failed"),
                },
            }
        });
    }
    tracing::debug!(?local, "listener closed");
}
