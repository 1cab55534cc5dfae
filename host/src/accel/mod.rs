//! Moving the payload of an established tunnel or upgrade between its two sides.
//!
//! Every byte of a CONNECT tunnel, an upgraded stream or a plain TCP proxy goes through
//! [`splice`]. This is the user-space copy; the kernel (eBPF sockmap) path plugs in behind the
//! same call where both sides are plain TCP sockets and nothing needs to see the bytes.

use crate::stats::AccelStats;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Bytes moved by one splice, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spliced {
    /// From `a` to `b`.
    pub a_to_b: u64,
    /// From `b` to `a`.
    pub b_to_a: u64,
}

/// Copies bytes both ways between `a` and `b` until both directions are done.
///
/// A FIN is carried: when one side stops sending, the other side's write half is shut down
/// and the opposite direction goes on (TCP half-close). An error on either side ends both
/// directions; dropping the two halves then closes (or resets) both connections.
pub async fn splice<A, B>(mut a: A, mut b: B) -> io::Result<Spliced>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let stats = AccelStats::global();
    stats.splices_userspace.inc();
    let result = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    match result {
        Ok((a_to_b, b_to_a)) => {
            stats.userspace_bytes.inc_by(a_to_b + b_to_a);
            // Both directions saw EOF; make sure both write halves are closed too.
            let _ = a.shutdown().await;
            let _ = b.shutdown().await;
            Ok(Spliced { a_to_b, b_to_a })
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, duplex};

    #[tokio::test]
    async fn carries_bytes_and_half_close_both_ways() {
        let (mut client, proxy_a) = duplex(64);
        let (proxy_b, mut server) = duplex(64);
        let relay = tokio::spawn(splice(proxy_a, proxy_b));
        let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let expected = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&payload).await?;
            client.shutdown().await?;
            let mut back = Vec::new();
            client.read_to_end(&mut back).await?;
            Ok::<_, io::Error>(back)
        });
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, expected, "client's bytes, then its FIN");
        server.write_all(b"reply after half-close").await.unwrap();
        server.shutdown().await.unwrap();
        let back = writer.await.unwrap().unwrap();
        assert_eq!(back, b"reply after half-close");
        let spliced = relay.await.unwrap().unwrap();
        assert_eq!(
            spliced,
            Spliced {
                a_to_b: 10_000,
                b_to_a: 22
            }
        );
    }
}
