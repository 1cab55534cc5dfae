//! The one body type every hop of the proxy hands around.
//!
//! Downstream request bodies (hyper `Incoming`), upstream response bodies (hyper or h2) and
//! local replies all become a [`Body`], so the connection manager, the router and the pools
//! never need to be generic over the body they carry.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Error type carried inside a [`Body`]: whatever failed while a body was being read.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed HTTP body with data frames of [`Bytes`] and optional trailers.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body with nothing in it (a HEAD reply, a 204, a CONNECT request).
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body holding `bytes`, sent as one frame.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}
