//! A connection as the HTTP/1.1 codec reads it: the first bytes, if they were already read (an
//! AUTO listener sniffing for the HTTP/2 preface), are read again first; and every read tells
//! the connection's [`HeadClock`] that bytes arrived (the connection manager's activity, which
//! starts its request headers timeout when no request is in flight).
//!
//! Where the connection manager says so ([`Prefixed::screening_requests`]), every request
//! head is held until whole and its line screened for its version first
//! ([`super::request_framing`], [`super::request_line`]).
//!
//! The splice of a CONNECT or an upgrade on such a connection takes the socket back out
//! ([`Prefixed::into_parts`]), so a plain TCP socket behind an AUTO listener is spliced in the
//! kernel like one behind an HTTP1 listener.

use super::request_framing::Framer;
use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Told of every read that brought bytes, to time the request head they may start.
pub trait HeadClock: Send + Sync {
    /// Bytes came in on the connection.
    fn bytes_arrived(&self);

    /// A request head was screened (see [`super::request_line`]): `refused` when its line
    /// names a version the connection manager does not serve. Told once per head, in the
    /// order of the requests, so the stream of each takes its own verdict.
    fn request_screened(&self, _refused: bool) {}
}

/// The most read at once while requests are screened (hyper reads as much).
const READ_AT_ONCE: usize = 8 * 1024;

/// `io` with `prefix` to be read before it.
pub struct Prefixed<I> {
    prefix: Bytes,
    io: I,
    clock: Option<Arc<dyn HeadClock>>,
    framer: Option<Framer>,
    /// An error met reading ahead of the prefix (see [`Prefixed::read_ahead`]), for the next
    /// read.
    deferred_error: Option<io::Error>,
}

impl<I> Prefixed<I> {
    /// `io`, whose first bytes `prefix` were already read from it.
    pub fn new(prefix: Bytes, io: I) -> Self {
        Prefixed {
            prefix,
            io,
            clock: None,
            framer: None,
            deferred_error: None,
        }
    }

    /// Holds each request head (the prefix first) until it is whole, then screens its
    /// version ([`super::request_line::screen`]) under `accept_http_10`; each verdict is told
    /// to the head clock ([`HeadClock::request_screened`]).
    pub fn screening_requests(mut self, accept_http_10: bool) -> Self {
        let mut framer = Framer::new(accept_http_10);
        framer
            .held_mut()
            .extend_from_slice(&std::mem::take(&mut self.prefix));
        self.framer = Some(framer);
        self
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
    pub fn into_parts(mut self) -> (Bytes, I) {
        if let Some(mut framer) = self.framer.take() {
            let held = framer.take_held();
            if !held.is_empty() {
                let mut all = BytesMut::from(&self.prefix[..]);
                all.extend_from_slice(&held);
                return (all.freeze(), self.io);
            }
        }
        (self.prefix, self.io)
    }
}

impl<I: AsyncRead + Unpin> Prefixed<I> {
    /// While requests are screened and the prefix is empty: reads and frames until there are
    /// bytes for the codec (then the prefix) or the connection ends (then what was held goes
    /// as it is); drops the framer once screening is over.
    fn poll_framed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.prefix.is_empty() {
            let Some(framer) = self.framer.as_mut() else {
                break;
            };
            let clock = &self.clock;
            let out = framer.process(&mut |refused| {
                if let Some(clock) = clock {
                    clock.request_screened(refused);
                }
            });
            if !out.is_empty() {
                self.prefix = out;
                break;
            }
            if framer.is_done() {
                self.framer = None;
                break;
            }
            let held = framer.held_mut();
            let polled = if held.is_empty() {
                // Nothing held (a keep-alive connection between requests): read on the stack,
                // so a connection idling here holds no buffer of its own.
                *held = BytesMut::new();
                let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_AT_ONCE];
                let mut read = ReadBuf::uninit(&mut chunk);
                match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        held.extend_from_slice(read.filled());
                        Poll::Ready(Ok(read.filled().len()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            } else {
                held.reserve(READ_AT_ONCE);
                tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, held)
            };
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    self.prefix = framer.take_held().freeze();
                    self.framer = None;
                }
                Poll::Ready(Ok(_)) => {
                    if let Some(clock) = &self.clock {
                        clock.bytes_arrived();
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(error) = self.deferred_error.take() {
            return Poll::Ready(Err(error));
        }
        if self.prefix.is_empty()
            && let Some(budget) = self.framer.as_ref().and_then(Framer::straight_through)
        {
            // A body: read it straight into the codec's buffer, as much as belongs to it.
            let limit = usize::try_from(budget)
                .unwrap_or(usize::MAX)
                .min(buf.remaining());
            let dst = buf.initialize_unfilled_to(limit);
            let mut limited = ReadBuf::new(dst);
            std::task::ready!(Pin::new(&mut self.io).poll_read(cx, &mut limited))?;
            let n = limited.filled().len();
            buf.advance(n);
            if n > 0 {
                if let Some(framer) = self.framer.as_mut() {
                    framer.passed(n as u64);
                }
                if let Some(clock) = &self.clock {
                    clock.bytes_arrived();
                }
            }
            return Poll::Ready(Ok(()));
        }
        if self.framer.is_some() {
            std::task::ready!(self.poll_framed(cx))?;
        }
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
        if self.prefix.is_empty() {
            // An emptied `Bytes` still holds its buffer (the first line's read, up to 8 KiB):
            // a connection idling for hours should not.
            self.prefix = Bytes::new();
            // Not while requests are screened: what follows goes through the framer.
            if self.framer.is_none() {
                self.read_ahead(cx, buf);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> Prefixed<I> {
    /// After the prefix's last bytes, reads what the connection already has into the room
    /// left in `buf`, so the reader gets the prefix and what followed it in one read. hyper
    /// grows its read buffer from 8 KiB to 16 KiB (and keeps it for the connection's life)
    /// when a head comes in two reads, as it did when only the 24 bytes sniffed for the
    /// HTTP/2 preface came first. Nothing there yet is fine (the prefix alone is returned);
    /// an error is kept for the next read, which returns it.
    fn read_ahead(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) {
        if buf.remaining() == 0 {
            return;
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(clock) = &self.clock
                    && buf.filled().len() > before
                {
                    clock.bytes_arrived();
                }
            }
            Poll::Ready(Err(error)) => self.deferred_error = Some(error),
            Poll::Pending => {}
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the connection already has comes with the prefix's last bytes, in one read: hyper
    /// keeps a 16 KiB read buffer for the connection's life when a head takes two reads.
    #[tokio::test]
    async fn the_prefix_and_what_followed_it_come_in_one_read() {
        let (mut client, server) = tokio::io::duplex(1024);
        client
            .write_all(b"TP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let mut io = Prefixed::new(Bytes::from_static(b"GET / HT"), server);
        let mut buf = [0u8; 256];
        let n = io.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    /// Nothing more there: the prefix alone, at once; what comes later, in the next read.
    #[tokio::test]
    async fn the_prefix_alone_when_nothing_followed_yet() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = Prefixed::new(Bytes::from_static(b"GET / HT"), server);
        let mut buf = [0u8; 256];
        let n = io.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"GET / HT");
        client.write_all(b"TP/1.1\r\n").await.expect("write");
        let n = io.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"TP/1.1\r\n");
    }

    /// A connection whose reads fail.
    struct Failing;

    impl AsyncRead for Failing {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")))
        }
    }

    /// An error met reading ahead comes with the next read, after the prefix.
    #[tokio::test]
    async fn an_error_met_reading_ahead_comes_next() {
        let mut io = Prefixed::new(Bytes::from_static(b"GET"), Failing);
        let mut buf = [0u8; 16];
        let n = io.read(&mut buf).await.expect("the prefix");
        assert_eq!(&buf[..n], b"GET");
        let error = io.read(&mut buf).await.expect_err("the deferred error");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    }
}
