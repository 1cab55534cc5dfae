//! A connection as the HTTP/1.1 codec reads it: the first bytes, if they were already read (an
//! AUTO listener sniffing for the HTTP/2 preface), are read again first; and every read tells
//! the connection's [`HeadClock`] that bytes arrived (the connection manager's activity, which
//! starts its request headers timeout when no request is in flight).
//!
//! The splice of a CONNECT or an upgrade on such a connection takes the socket back out
//! ([`Prefixed::into_parts`]), so a plain TCP socket behind an AUTO listener is spliced in the
//! kernel like one behind an HTTP1 listener.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Told of every read that brought bytes, to time the request head they may start.
pub trait HeadClock: Send + Sync {
    /// Bytes came in on the connection.
    fn bytes_arrived(&self);
}

/// `io` with `prefix` to be read before it.
pub struct Prefixed<I> {
    prefix: Bytes,
    io: I,
    clock: Option<Arc<dyn HeadClock>>,
}

impl<I> Prefixed<I> {
    /// `io`, whose first bytes `prefix` were already read from it.
    pub fn new(prefix: Bytes, io: I) -> Self {
        Prefixed {
            prefix,
            io,
            clock: None,
        }
    }

    /// Tells `activity` of every read from now on (see [`HeadClock::bytes_arrived`]); when
    /// bytes were already read, a head is arriving now.
    pub fn with_head_clock(mut self, activity: Arc<dyn HeadClock>) -> Self {
        if !self.prefix.is_empty() {
            activity.bytes_arrived();
        }
        self.clock = Some(activity);
        self
    }

    /// The part of the prefix not read yet, and the connection.
    pub fn into_parts(self) -> (Bytes, I) {
        (self.prefix, self.io)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            let before = buf.filled().len();
            let read = Pin::new(&mut self.io).poll_read(cx, buf);
            if let Some(clock) = &self.clock
                && buf.filled().len() > before
            {
                clock.bytes_arrived();
            }
            return read;
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
