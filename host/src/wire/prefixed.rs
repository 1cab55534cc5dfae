//! A connection as the HTTP/1.1 codec reads it: the first bytes, if they were already read (an
//! AUTO listener sniffing for the HTTP/2 preface), are read again first; and every read tells
//! the connection's [`HeadClock`] that bytes arrived (the connection manager's activity, which
//! starts its request headers timeout when no request is in flight).
//!
//! Where the connection manager says so ([`Prefixed::screening_first_line`]), the first
//! request line is held until whole and screened for its version first
//! ([`super::request_line`]).
//!
//! The splice of a CONNECT or an upgrade on such a connection takes the socket back out
//! ([`Prefixed::into_parts`]), so a plain TCP socket behind an AUTO listener is spliced in the
//! kernel like one behind an HTTP1 listener.

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

    /// The connection's first request names a version the connection manager does not
    /// serve (see [`super::request_line`]): its first stream is to be refused.
    fn first_request_refused(&self) {}
}

/// The longest first line held for screening; past it, the bytes go to the codec as they
/// are (which refuses a head that long anyway).
const FIRST_LINE_LIMIT: usize = 16 * 1024;

/// The most read at once while the first line is held (hyper's first read is as large).
const READ_AT_ONCE: usize = 8 * 1024;

/// The first request line being held for screening.
struct FirstLine {
    held: BytesMut,
    accept_http_10: bool,
}

/// `io` with `prefix` to be read before it.
pub struct Prefixed<I> {
    prefix: Bytes,
    io: I,
    clock: Option<Arc<dyn HeadClock>>,
    first_line: Option<FirstLine>,
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
            first_line: None,
            deferred_error: None,
        }
    }

    /// Holds the first request line (with the prefix) until it is whole, then screens its
    /// version ([`super::request_line::screen`]) under `accept_http_10`; a refused one is told
    /// to the head clock ([`HeadClock::first_request_refused`]).
    pub fn screening_first_line(mut self, accept_http_10: bool) -> Self {
        let held = BytesMut::from(&std::mem::take(&mut self.prefix)[..]);
        self.first_line = Some(FirstLine {
            held,
            accept_http_10,
        });
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
        if let Some(first) = self.first_line.take() {
            return (first.held.freeze(), self.io);
        }
        (self.prefix, self.io)
    }
}

impl<I: AsyncRead + Unpin> Prefixed<I> {
    /// Reads until the first line held is whole (or the connection ends, or the line is
    /// longer than [`FIRST_LINE_LIMIT`]), then makes the screened bytes the prefix.
    fn poll_first_line(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(first) = self.first_line.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while !first.held.contains(&b'\n') && first.held.len() < FIRST_LINE_LIMIT {
            // As much as the codec itself would read at once: what follows the head in the
            // same segment (a CONNECT's first payload bytes) is then read with it, not left
            // on the socket for the splice that takes the socket over.
            first.held.reserve(READ_AT_ONCE);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut first.held) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(_)) => {
                    if let Some(clock) = &self.clock {
                        clock.bytes_arrived();
                    }
                }
            }
        }
        let Some(first) = self.first_line.take() else {
            return Poll::Ready(Ok(()));
        };
        let screened = super::request_line::screen(first.held, first.accept_http_10);
        if screened.refused
            && let Some(clock) = &self.clock
        {
            clock.first_request_refused();
        }
        self.prefix = screened.bytes;
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
        if self.first_line.is_some() {
            std::task::ready!(self.poll_first_line(cx))?;
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
            self.read_ahead(cx, buf);
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
