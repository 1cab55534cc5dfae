//! Splicing a connection hyper handed over after a CONNECT or an upgrade.

use super::Spliced;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::io;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Splices an upgraded downstream with a plain TCP upstream: in the kernel when the downstream
/// is an h1 connection on a plain TCP socket (hyper gives the socket back), else by copying.
///
/// The bytes hyper had already read past the request head (a client that did not wait for
/// the 200) are written to the upstream first (trap F), so nothing is lost or reordered.
pub async fn splice_upgraded(downstream: Upgraded, mut upstream: TcpStream) -> io::Result<Spliced> {
    match downstream.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let early = parts.read_buf.len() as u64;
            tracing::debug!(early, "accel: upgraded h1 socket taken back from hyper");
            if early > 0 {
                upstream.write_all(&parts.read_buf).await?;
                crate::stats::AccelStats::global()
                    .userspace_bytes
                    .inc_by(early);
            }
            let mut spliced = super::splice_tcp(parts.io.into_inner(), upstream).await?;
            spliced.a_to_b += early;
            Ok(spliced)
        }
        Err(upgraded) => {
            tracing::debug!("accel: upgraded connection is not a plain h1 socket; copying");
            super::splice(TokioIo::new(upgraded), upstream).await
        }
    }
}
