//! The user-space copy: tokio's `copy_bidirectional`, with the FIN carried (half-close).

use super::Spliced;
use crate::stats::AccelStats;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

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
    let (a_to_b, b_to_a) = tokio::io::copy_bidirectional(&mut a, &mut b).await?;
    stats.userspace_bytes.inc_by(a_to_b + b_to_a);
    // Both directions saw EOF; make sure both write halves are closed too.
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    Ok(Spliced { a_to_b, b_to_a })
}
