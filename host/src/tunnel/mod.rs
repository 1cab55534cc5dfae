//! Tunnels: CONNECT (proxied or terminated), HTTP upgrades across protocol hops, and TCP
//! carried inside HTTP (CONNECT or POST, HTTP/1.1 or HTTP/2), both ends.
//!
//! The connection manager decides *whether* a request is a tunnel (`http::upgrade`); a
//! tunnel's ends and the conversion of an upstream's answer into one are on the wire
//! ([`crate::wire::tunnel`]). This module has what moves its bytes: [`tcp_proxy`] (the
//! listener side that encapsulates raw TCP), [`network_filters`] (the Wasm filters a
//! tcp_proxy's bytes may go through), [`idle`] (the idle timeout), and the payload pump itself
//! is [`crate::accel::splice`], wrapped by [`splice`] here so that a failed tunnel resets both
//! of its ends.

pub mod idle;
pub mod network_filters;
pub mod tcp_proxy;

use crate::accel::Spliced;
use crate::wire::TunnelIo;
use std::io;

/// Moves bytes both ways between `a` and `b` ([`crate::accel::splice`]) until both directions
/// are done. FIN is carried as FIN (half-close); when either side fails (a reset, a stream
/// error), both ends are reset, so the failure reaches the far side of each hop as one.
pub async fn splice(a: TunnelIo, b: TunnelIo) -> io::Result<Spliced> {
    splice_counted(a, b, &crate::accel::Tally::default()).await
}

/// [`splice`], counting the bytes into `tally` as they move.
pub async fn splice_counted(
    mut a: TunnelIo,
    mut b: TunnelIo,
    tally: &crate::accel::Tally,
) -> io::Result<Spliced> {
    let result = crate::accel::splice_counted(&mut a, &mut b, tally).await;
    if let Err(error) = &result {
        tracing::debug!(%error, "tunnel failed; resetting both ends");
        a.reset();
        b.reset();
    }
    result
}
