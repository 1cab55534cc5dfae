//! The one way a tunnel's downstream end leaves its codec: every codec puts a
//! [`TunnelHandoff`] on a request that may become a tunnel (an HTTP/1.1 `Upgrade` or CONNECT,
//! an HTTP/2 or HTTP/3 CONNECT, extended or plain), and the connection manager takes the end
//! from it once it has set a tunnel up ([`TunnelHandoff::take`], then
//! [`DownstreamEnd::into_io`]).
//!
//! What the codecs fill it with differs only in what carries the tunnel:
//! - HTTP/1.1 (hyper): the connection itself, which hyper hands back once the `101`/`2xx` is
//!   written ([`TunnelHandoff::upgrade`]); a plain-TCP connection can then be spliced by the
//!   kernel ([`DownstreamEnd::Upgraded`]);
//! - HTTP/2 and HTTP/3: the stream's DATA frames as two bodies, handed over by the codec
//!   once it wrote the `2xx` ([`TunnelHandoff::stream`], [`StreamHandoff::hand_over`]); the
//!   codec sends what the tunnel writes, and ends its stream the way its version resets a
//!   tunnel when the tunnel was reset.

use super::body_io::{self, BodyIo};
use super::tunnel::{self, TunnelIo};
use crate::body::Body;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// A request's way to its tunnel's downstream end, put on the request by its codec. Taken
/// once ([`TunnelHandoff::take`]); a clone shares the one end.
#[derive(Clone)]
pub struct TunnelHandoff(Arc<Mutex<Option<DownstreamEnd>>>);

impl TunnelHandoff {
    /// An HTTP/1.1 connection's: hyper hands the connection over through `upgrade` after the
    /// answer is written.
    pub fn upgrade(upgrade: hyper::upgrade::OnUpgrade) -> TunnelHandoff {
        TunnelHandoff::of(DownstreamEnd::Upgraded(upgrade))
    }

    /// A stream's (HTTP/2, HTTP/3): the codec hands the stream over through the
    /// [`StreamHandoff`] once the tunnel's `2xx` is written, or drops it when the answer was
    /// anything else.
    pub fn stream() -> (StreamHandoff, TunnelHandoff) {
        let (sender, receiver) = oneshot::channel();
        (
            StreamHandoff(sender),
            TunnelHandoff::of(DownstreamEnd::Stream(receiver)),
        )
    }

    fn of(end: DownstreamEnd) -> TunnelHandoff {
        TunnelHandoff(Arc::new(Mutex::new(Some(end))))
    }

    /// The end, the first time it is asked for.
    pub fn take(&self) -> Option<DownstreamEnd> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// The downstream end of `request`'s tunnel, taken from its handoff; one that fails
    /// when the request has none (its codec offered no tunnel, or it was taken already).
    pub fn take_from<B>(request: &mut http::Request<B>) -> DownstreamEnd {
        request
            .extensions_mut()
            .remove::<TunnelHandoff>()
            .and_then(|handoff| handoff.take())
            .unwrap_or(DownstreamEnd::Missing)
    }
}

/// The downstream side of an accepted tunnel, as its codec hands it over.
pub enum DownstreamEnd {
    /// An HTTP/1.1 connection, once hyper has written the answer.
    Upgraded(hyper::upgrade::OnUpgrade),
    /// An HTTP/2 or HTTP/3 stream, once its codec has written the answer.
    Stream(oneshot::Receiver<TunnelIo>),
    /// None was offered, or it was taken already.
    Missing,
}

impl DownstreamEnd {
    /// Waits until the answer is written and the end is the tunnel's.
    pub async fn into_io(self) -> Result<TunnelIo, String> {
        match self {
            DownstreamEnd::Upgraded(upgrade) => upgrade
                .await
                .map(tunnel::upgraded)
                .map_err(|e| e.to_string()),
            DownstreamEnd::Stream(receiver) => receiver
                .await
                .map_err(|_| "the downstream stream was not handed over".to_owned()),
            DownstreamEnd::Missing => Err("the downstream stream was taken".to_owned()),
        }
    }
}

/// A codec's side of a stream's handoff (HTTP/2, HTTP/3).
pub struct StreamHandoff(oneshot::Sender<TunnelIo>);

impl StreamHandoff {
    /// Whether a tunnel waits for the stream: the connection manager set one up and still
    /// holds the other side.
    pub fn is_wanted(&self) -> bool {
        !self.0.is_closed()
    }

    /// Hands the stream over as the tunnel's end: `incoming` (the stream's DATA from the
    /// client) is what the tunnel reads; what it writes comes out of the returned body, for
    /// the codec to send on the stream (the body fails when the tunnel was reset). `Err`:
    /// the tunnel was gone before it took the stream; the body it returns ends at once.
    pub fn hand_over(self, incoming: Body) -> Result<Body, Body> {
        let (outgoing_sender, outgoing) = body_io::channel_body();
        let io = tunnel::body(BodyIo::new(incoming, outgoing_sender));
        match self.0.send(io) {
            Ok(()) => Ok(outgoing),
            Err(io) => {
                drop(io);
                Err(outgoing)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_stream_is_handed_over_once_and_only_while_wanted() {
        let (sender, handoff) = TunnelHandoff::stream();
        assert!(sender.is_wanted());
        let mut request = http::Request::new(());
        request.extensions_mut().insert(handoff.clone());
        let end = TunnelHandoff::take_from(&mut request);
        assert!(matches!(
            TunnelHandoff::take_from(&mut request),
            DownstreamEnd::Missing
        ));
        assert!(handoff.take().is_none(), "a clone shares the one end");
        let outgoing = sender.hand_over(crate::body::empty());
        assert!(outgoing.is_ok());
        assert!(end.into_io().await.is_ok());

        let (sender, handoff) = TunnelHandoff::stream();
        drop(handoff);
        assert!(!sender.is_wanted());
        let Err(outgoing) = sender.hand_over(crate::body::empty()) else {
            panic!("nobody took the stream");
        };
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), outgoing.collect())
            .await
            .expect("the unwanted body ends at once");
        assert!(ended.is_ok());
    }

    #[tokio::test]
    async fn a_request_without_a_handoff_has_a_missing_end() {
        let mut request = http::Request::new(());
        let end = TunnelHandoff::take_from(&mut request);
        assert!(end.into_io().await.is_err());
    }
}
