//! Carrying a reset through a tunnel: what "reset this end" means for each thing a tunnel end
//! can be ([`SocketId`], in [`crate::socket`], reaches a socket someone else owns).
//!
//! RFC 9113 8.5: a TCP reset on one side of a CONNECT tunnel becomes an `RST_STREAM` with
//! `CONNECT_ERROR` on the HTTP/2 hop, and a stream error becomes a TCP reset. On an HTTP/1.1 hop
//! the HTTP connection itself is the tunnel (CONNECT) or carries it (POST), so it is reset.
//! Without this a reset arrives at the far end as an orderly FIN, and a peer cannot tell a
//! failed tunnel from a finished one.

/// The error a tunnel body ends with when the tunnel was reset: an h2 `CONNECT_ERROR`, so that
/// both hyper (server side) and weir's HTTP/2 pool (client side) reset the stream with it.
pub fn reset_error() -> crate::body::BoxError {
    Box::new(h2::Error::from(h2::Reason::CONNECT_ERROR))
}

/// The `RST_STREAM` reason to use when a request or response body fails: the body's own h2
/// reason where it carries one (a tunnel reset: `CONNECT_ERROR`), else `CANCEL`.
pub fn stream_reset_reason(error: &(dyn std::error::Error + 'static)) -> h2::Reason {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(reason) = error
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::reason)
        {
            return reason;
        }
        cause = error.source();
    }
    h2::Reason::CANCEL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_reset_is_connect_error() {
        let error = reset_error();
        assert_eq!(stream_reset_reason(&*error), h2::Reason::CONNECT_ERROR);
        let other: crate::body::BoxError = "boom".into();
        assert_eq!(stream_reset_reason(&*other), h2::Reason::CANCEL);
    }
}
