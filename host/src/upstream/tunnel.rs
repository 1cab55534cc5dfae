//! What the pools need to know to carry a tunnel (an upgrade, CONNECT, or a POST tunnel)
//! instead of a request.
//!
//! An HTTP/1.1 upstream carries an upgrade on its connection: the request goes with no body
//! and, after `101` (or a `2xx` to CONNECT), the connection itself is the tunnel
//! (`hyper::upgrade::on`). An HTTP/2 upstream carries it on a stream: the request becomes an
//! (extended) CONNECT whose DATA frames are the payload. The router cannot know which before
//! the pool picks a connection, so it hands the payload over in the request's extensions as a
//! [`TunnelPayload`]; the HTTP/2 pool takes it as the stream's body, the HTTP/1.1 pool leaves
//! it alone.

use crate::body::Body;
use http::HeaderName;
use std::sync::{Arc, Mutex, PoisonError};

/// Carries, across an HTTP/2 hop, the method of an upgrade request that was not GET: RFC 8441
/// turns every upgrade into CONNECT, and the next hop restores the method from this header.
pub static X_WEIR_UPGRADE_METHOD: HeaderName = HeaderName::from_static("x-weir-upgrade-method");

/// The downstream-to-upstream payload of a tunnel, for pools that send it as a body.
#[derive(Clone)]
pub struct TunnelPayload(Arc<Mutex<Option<Body>>>);

impl TunnelPayload {
    /// Wraps the payload body.
    pub fn new(body: Body) -> TunnelPayload {
        TunnelPayload(Arc::new(Mutex::new(Some(body))))
    }

    /// Takes the payload (once).
    pub fn take(&self) -> Option<Body> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl std::fmt::Debug for TunnelPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TunnelPayload")
    }
}
