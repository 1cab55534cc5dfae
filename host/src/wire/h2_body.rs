//! Bodies on HTTP/2 streams (the `h2` crate), both directions, shared by the downstream codec
//! (`http::h2`) and the upstream pool: a stream's receive half as an [`http_body::Body`]
//! that gives flow-control capacity back as its data is handed on, and the pump that sends a
//! body on a stream within the peer's window.
//!
//! Both keep HTTP/2's meaning of a failure: a body that fails is sent as `RST_STREAM` with the
//! reason it carries (`CONNECT_ERROR` for a reset tunnel, RFC 9113 8.5), never as an orderly
//! `END_STREAM`, so the peer can tell a cut message from a whole one.

use crate::body::BoxError;
use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// The receive half of an HTTP/2 stream: its DATA frames (each releasing its flow-control
/// capacity as it is handed on, so the peer may send more only as fast as it is consumed),
/// then its trailers.
pub struct H2Body {
    /// `None` once done, or for a stream whose DATA frames are not a body (a CONNECT).
    recv: Option<RecvStream>,
    data_done: bool,
    /// The body's length when the head declared one (`content-length`); h2 checks that the
    /// DATA frames add up to it.
    length: Option<u64>,
}

impl H2Body {
    /// The body `recv` carries, `length` bytes long when known.
    pub fn new(recv: RecvStream, length: Option<u64>) -> H2Body {
        H2Body {
            recv: Some(recv),
            data_done: false,
            length,
        }
    }

    /// A body with nothing in it.
    pub fn empty() -> H2Body {
        H2Body {
            recv: None,
            data_done: true,
            length: Some(0),
        }
    }

    fn finish(&mut self) {
        self.recv = None;
    }
}

impl http_body::Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        let Some(recv) = this.recv.as_mut() else {
            return Poll::Ready(None);
        };
        if !this.data_done {
            match ready!(recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    if let Err(error) = recv.flow_control().release_capacity(data.len()) {
                        tracing::debug!(%error, "h2 release capacity");
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => {
                    this.finish();
                    return Poll::Ready(Some(Err(error)));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(recv.poll_trailers(cx));
        this.finish();
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.as_ref().is_none_or(RecvStream::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

/// How sending a body on a stream ended, when it did not end with the body's last frame.
#[derive(Debug, thiserror::Error)]
pub enum SendBodyError {
    /// The body failed; the stream was reset with the reason it carried.
    #[error("the body failed: {0}")]
    Body(BoxError),
    /// The peer reset the stream.
    #[error("the peer reset the stream ({0:?})")]
    Reset(h2::Reason),
    /// The stream or its connection failed.
    #[error(transparent)]
    Stream(#[from] h2::Error),
}

/// Sends `body` on `stream`: each data frame as the peer's flow-control window allows, then
/// the trailers or an empty `END_STREAM`. A body that fails resets the stream with the h2
/// reason it carries (`CONNECT_ERROR` for a reset tunnel), else `CANCEL`. Returns early
/// when the peer resets the stream (the body is dropped, which cancels whatever feeds it).
pub async fn send_body<B>(mut body: B, stream: &mut SendStream<Bytes>) -> Result<(), SendBodyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            reset = std::future::poll_fn(|cx| stream.poll_reset(cx)) => {
                return Err(SendBodyError::Reset(reset?));
            }
        };
        match frame {
            None => {
                stream.send_data(Bytes::new(), true)?;
                return Ok(());
            }
            Some(Err(error)) => {
                let error: BoxError = error.into();
                let reason = super::reset::stream_reset_reason(&*error);
                tracing::debug!(%error, ?reason, "body failed; resetting the stream");
                stream.send_reset(reason);
                return Err(SendBodyError::Body(error));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    // A body that knows this was its last frame ends the stream on it: one
                    // DATA frame, not a second, empty one (and no poll of the body to learn
                    // what it already said).
                    let last = body.is_end_stream();
                    send_with_capacity(stream, data, last).await?;
                    if last {
                        return Ok(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        stream.send_trailers(trailers)?;
                        return Ok(());
                    }
                }
            },
        }
    }
}

/// Sends `data` as the peer's flow-control window allows, its last piece ending the stream
/// when `end` says so.
async fn send_with_capacity(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), SendBodyError> {
    if data.is_empty() {
        if end {
            stream.send_data(data, true)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        // Waiting for window, and hearing of a reset while it never comes.
        let available = std::future::poll_fn(|cx| {
            if let Poll::Ready(available) = stream.poll_capacity(cx) {
                return Poll::Ready(Ok(available));
            }
            stream.poll_reset(cx).map(Err)
        })
        .await;
        let available = match available.map_err(|reset| match reset {
            Ok(reason) => SendBodyError::Reset(reason),
            Err(error) => SendBodyError::Stream(error),
        })? {
            Some(available) => available?,
            // The stream is closed: a reset we are about to hear of, or the connection.
            None => return Err(SendBodyError::Reset(h2::Reason::CANCEL)),
        };
        if available == 0 {
            continue;
        }
        let chunk = data.split_to(available.min(data.len()));
        stream.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}
