//! The user-space copy: tokio's `copy_bidirectional_with_sizes`, with the FIN carried
//! (half-close), for streams that are not two plain TCP sockets (TLS, an upgraded h2/h3
//! stream, an encapsulating tunnel).

use super::Spliced;
use crate::stats::AccelStats;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Each direction's buffer. tokio's default (8 KiB) costs one read and one write per 8 KiB,
/// which caps a loopback tunnel at a few Gbit/s; 64 KiB holds four TLS records or what one
/// loopback segment carries, for 128 KiB per tunnel.
const BUFFER: usize = 64 * 1024;

/// Copies bytes both ways between `a` and `b` until both directions are done.
///
/// A FIN is carried: when one side stops sending, the other side's write half is shut down
/// and the opposite direction goes on (TCP half-close). An error on either side ends both
/// directions; dropping the two halves then closes (or resets) both connections.
pub async fn copy<A, B>(mut a: A, mut b: B) -> io::Result<Spliced>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let stats = AccelStats::global();
    stats.splices_userspace.inc();
    let (a_to_b, b_to_a) =
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER).await?;
    stats.userspace_bytes.inc_by(a_to_b + b_to_a);
    // Both directions saw EOF; make sure both write halves are closed too.
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    Ok(Spliced { a_to_b, b_to_a })
}
