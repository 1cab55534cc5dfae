//! Tunnels: CONNECT (proxied or terminated), HTTP upgrades across protocol hops, and TCP
//! carried inside HTTP (CONNECT or POST, HTTP/1.1 or HTTP/2), both ends.
//!
//! The connection manager decides *whether* a request is a tunnel (`http::upgrade`); this
//! module has the pieces that move its bytes: [`body_io`] (a tunnel carried as HTTP bodies),
//! [`tcp_proxy`] (the listener side that encapsulates raw TCP), [`network_filters`] (the
//! Wasm filters a tcp_proxy's bytes may go through), [`reset`] (carrying a reset
//! across a hop), and the payload pump itself is [`crate::accel::splice`], wrapped by
//! [`splice`] here so that a failed tunnel resets both of its ends.

pub mod body_io;
pub mod idle;
pub mod network_filters;
pub mod reset;
pub mod tcp_proxy;

use crate::accel::Spliced;
use crate::socket::SocketId;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte stream a tunnel end can be.
pub trait TunnelStream: AsyncRead + AsyncWrite + Send {}

impl<T: AsyncRead + AsyncWrite + Send> TunnelStream for T {}

/// One end of an established tunnel, whatever carries it, and how to reset it.
///
/// Dropping it closes the end in an orderly way (a FIN, an `END_STREAM`); [`TunnelIo::reset`]
/// closes it the way a TCP reset is carried on that hop instead.
pub struct TunnelIo {
    stream: Pin<Box<dyn TunnelStream>>,
    /// A socket to close with a RST: a TCP end, or the HTTP/1.1 connection under this end.
    socket: Option<SocketId>,
    /// Set to end the outgoing tunnel body with an error (`RST_STREAM` on an HTTP/2 hop).
    body_reset: Option<Arc<AtomicBool>>,
}

impl TunnelIo {
    /// Also close `socket` with a RST when this end is reset: the HTTP/1.1 connection that
    /// carries it (a CONNECT's or an upgrade's connection, a POST tunnel's).
    pub fn reset_socket(mut self, socket: Option<SocketId>) -> TunnelIo {
        if socket.is_some() {
            self.socket = socket;
        }
        self
    }

    /// Closes this end as a reset: the socket under it (if any) with a RST, the body it sends
    /// (if any) with an error.
    pub fn reset(self) {
        self.reset_handle().reset();
        drop(self.stream);
    }

    /// What [`TunnelIo::reset`] does, kept apart from the stream: for a caller that splits
    /// the end into halves and may have to reset it once the halves are gone.
    pub fn reset_handle(&self) -> ResetHandle {
        ResetHandle {
            socket: self.socket,
            body_reset: self.body_reset.clone(),
        }
    }
}

/// Resets a [`TunnelIo`] that was split or moved: call [`ResetHandle::reset`] before the
/// last half is dropped.
#[derive(Clone)]
pub struct ResetHandle {
    socket: Option<SocketId>,
    body_reset: Option<Arc<AtomicBool>>,
}

impl ResetHandle {
    /// Makes the end's close a reset: a RST on its socket (if any), an error ending the body
    /// it sends (if any).
    pub fn reset(&self) {
        if let Some(socket) = &self.socket {
            socket.reset_on_close();
        }
        if let Some(flag) = &self.body_reset {
            flag.store(true, Ordering::Release);
        }
    }
}

impl AsyncRead for TunnelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.as_mut().poll_shutdown(cx)
    }
}

/// Boxes a stream as a [`TunnelIo`] that has nothing more to reset than dropping it.
pub fn boxed<T: AsyncRead + AsyncWrite + Send + 'static>(stream: T) -> TunnelIo {
    TunnelIo {
        stream: Box::pin(stream),
        socket: None,
        body_reset: None,
    }
}

/// A TCP (or TLS over TCP) end: reset means a RST on `socket`.
pub fn socket<T: AsyncRead + AsyncWrite + Send + 'static>(
    stream: T,
    socket: Option<SocketId>,
) -> TunnelIo {
    boxed(stream).reset_socket(socket)
}

/// A plain TCP end.
pub fn tcp(stream: tokio::net::TcpStream) -> TunnelIo {
    let id = SocketId::of(&stream);
    socket(stream, id)
}

/// A tunnel carried as two HTTP bodies: reset ends the body it sends with an error.
pub fn body(io: body_io::BodyIo) -> TunnelIo {
    let flag = io.reset_flag();
    TunnelIo {
        body_reset: Some(flag),
        ..boxed(io)
    }
}

/// Adapts hyper's upgraded connection (hyper's own IO traits) to tokio's.
pub fn upgraded(upgraded: hyper::upgrade::Upgraded) -> TunnelIo {
    boxed(hyper_util::rt::TokioIo::new(upgraded))
}

/// Moves bytes both ways between `a` and `b` ([`crate::accel::splice`]) until both directions
/// are done. FIN is carried as FIN (half-close); when either side fails (a reset, a stream
/// error), both ends are reset, so the failure reaches the far side of each hop as one.
pub async fn splice(mut a: TunnelIo, mut b: TunnelIo) -> io::Result<Spliced> {
    let result = crate::accel::splice(&mut a, &mut b).await;
    if let Err(error) = &result {
        tracing::debug!(%error, "tunnel failed; resetting both ends");
        a.reset();
        b.reset();
    }
    result
}
