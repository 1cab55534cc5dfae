//! Tunnels: CONNECT (proxied or terminated), HTTP upgrades across protocol hops, and TCP
//! carried inside HTTP (CONNECT or POST, HTTP/1.1 or HTTP/2), both ends.
//!
//! The connection manager decides *whether* a request is a tunnel (`http::upgrade`); this
//! module has the pieces that move its bytes: [`body_io`] (a tunnel carried as HTTP bodies),
//! [`tcp_proxy`] (the listener side that encapsulates raw TCP), and the payload pump itself is
//! [`crate::accel::splice`].

pub mod body_io;
pub mod tcp_proxy;

use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

/// One end of an established tunnel, whatever carries it.
pub type TunnelIo = Pin<Box<dyn TunnelStream>>;

/// A byte stream a tunnel end can be.
pub trait TunnelStream: AsyncRead + AsyncWrite + Send {}

impl<T: AsyncRead + AsyncWrite + Send> TunnelStream for T {}

/// Boxes a stream as a [`TunnelIo`].
pub fn boxed<T: AsyncRead + AsyncWrite + Send + 'static>(stream: T) -> TunnelIo {
    Box::pin(stream)
}

/// Adapts hyper's upgraded connection (hyper's own IO traits) to tokio's.
pub fn upgraded(upgraded: hyper::upgrade::Upgraded) -> TunnelIo {
    boxed(hyper_util::rt::TokioIo::new(upgraded))
}
