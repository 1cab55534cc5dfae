//! The user-space copy: tokio's `copy_bidirectional_with_sizes`, with the FIN carried
//! (half-close), for streams that are not two plain TCP sockets (TLS, an upgraded h2/h3
//! stream, an encapsulating tunnel).

use super::{Spliced, Tally};
use crate::stats::AccelStats;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Each direction's buffer. tokio's default (8 KiB) costs one read and one write per 8 KiB,
/// which caps a loopback tunnel at a few Gbit/s; 64 KiB holds four TLS records or what one
/// loopback segment carries, for 128 KiB per tunnel.
const BUFFER: usize = 64 * 1024;

/// Copies bytes both ways between `a` and `b` until both directions are done, counting what
/// each side was written into `tally` as it goes.
///
/// A FIN is carried: when one side stops sending, the other side's write half is shut down
/// and the opposite direction goes on (TCP half-close). An error on either side ends both
/// directions; dropping the two halves then closes (or resets) both connections.
pub async fn copy<A, B>(mut a: A, mut b: B, tally: &Tally) -> io::Result<Spliced>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let stats = AccelStats::global();
    stats.splices_userspace.inc();
    let (a_to_b, b_to_a) = {
        let mut a = Written::new(&mut a, tally.way(false));
        let mut b = Written::new(&mut b, tally.way(true));
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER).await?
    };
    stats.userspace_bytes.inc_by(a_to_b + b_to_a);
    // Both directions saw EOF; make sure both write halves are closed too.
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    Ok(Spliced { a_to_b, b_to_a })
}

/// A stream that adds what is written to it to a counter.
struct Written<'a, S> {
    stream: S,
    counted: &'a AtomicU64,
}

impl<'a, S> Written<'a, S> {
    fn new(stream: S, counted: &'a AtomicU64) -> Self {
        Written { stream, counted }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Written<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Written<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            self.counted.fetch_add(*n as u64, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
