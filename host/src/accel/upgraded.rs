//! Splicing a connection hyper handed over after a CONNECT or an upgrade.

use super::Spliced;
use crate::wire::prefixed::Prefixed;
use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::io;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Splices an upgraded downstream with a plain TCP upstream: in the kernel when the downstream
/// is an h1 connection on a plain TCP socket (hyper gives the socket back from under the
/// [`Prefixed`] reader every h1 connection is served through), else by copying.
///
/// The bytes hyper had already read past the request head (a client that did not wait for
/// the 200) are written to the upstream first (trap F), so nothing is lost or reordered.
pub async fn splice_upgraded(downstream: Upgraded, upstream: TcpStream) -> io::Result<Spliced> {
    match downstream.downcast::<TokioIo<Prefixed<TcpStream>>>() {
        Ok(parts) => {
            // hyper read the sniffed prefix before the request head it is part of, so what is
            // left of it (nothing, in practice) comes after hyper's own buffer.
            let (prefix, socket) = parts.io.into_inner().into_parts();
            splice_socket(socket, [parts.read_buf, prefix], upstream).await
        }
        Err(downstream) => {
            tracing::debug!("accel: upgraded connection is not a plain h1 socket; copying");
            super::splice(TokioIo::new(downstream), upstream).await
        }
    }
}

/// Writes the bytes already read from `downstream` (in order) to `upstream`, then splices the
/// two sockets.
async fn splice_socket(
    mut downstream: TcpStream,
    early: [Bytes; 2],
    mut upstream: TcpStream,
) -> io::Result<Spliced> {
    let mut early_len: u64 = early.iter().map(|bytes| bytes.len() as u64).sum();
    tracing::debug!(
        early = early_len,
        "accel: upgraded h1 socket taken back from hyper"
    );
    for bytes in early.iter().filter(|bytes| !bytes.is_empty()) {
        upstream.write_all(bytes).await?;
    }
    // hyper may have read part of a segment: the rest of it goes the same way, before a
    // splice takes the socket (see `forward_queued`).
    early_len += super::forward_queued(&mut downstream, &mut upstream).await?;
    if early_len > 0 {
        crate::stats::AccelStats::global()
            .userspace_bytes
            .inc_by(early_len);
    }
    let mut spliced = super::splice_tcp(downstream, upstream).await?;
    spliced.a_to_b += early_len;
    Ok(spliced)
}
