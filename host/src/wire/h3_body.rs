//! An HTTP/3 stream's receive half as an [`http_body::Body`]: DATA frames, then trailers.
//! Used for downstream request bodies and upstream response bodies alike, so both stream
//! (nothing is buffered beyond what QUIC flow control lets in).

use bytes::{Buf, Bytes};
use h3::error::StreamError;
use http::HeaderMap;
use http_body::Frame;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};

/// The receive half of a request stream (server side) or response stream (client side).
pub trait H3Recv: Send + Unpin + 'static {
    /// Next DATA payload; `None` at the end of the data.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>>;
    /// Trailers, after the data; `None` when there are none.
    fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, StreamError>>;
}

/// The server's and the client's request streams read alike (the `h3` crate gives them the
/// same methods but no shared trait).
macro_rules! h3_recv {
    ($stream:ty) => {
        impl H3Recv for $stream {
            fn poll_data(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Option<Bytes>, StreamError>> {
                let data = ready!(self.poll_recv_data(cx))?;
                Poll::Ready(Ok(data.map(|mut buf| buf.copy_to_bytes(buf.remaining()))))
            }

            fn poll_trailers(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Option<HeaderMap>, StreamError>> {
                self.poll_recv_trailers(cx)
            }
        }
    };
}

h3_recv!(h3::server::RequestStream<h3_quinn::RecvStream, Bytes>);
h3_recv!(h3::client::RequestStream<h3_quinn::RecvStream, Bytes>);

/// Where the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Data,
    Trailers,
    Done,
}

/// A streamed body read from an HTTP/3 stream. `Sync` (required of [`crate::body::Body`])
/// because the stream sits in a mutex that is only ever reached through `&mut self`.
pub struct H3Body<R> {
    recv: Mutex<R>,
    first: Option<Bytes>,
    phase: Phase,
    /// Kept until the body is done or dropped (a pool's stream lease, a request slot).
    hold: Option<Box<dyn Send + Sync>>,
}

impl<R: H3Recv> H3Body<R> {
    /// A body reading `recv`. It polls the stream once first: when the peer's FIN came with
    /// the headers (a GET), the body is known to be empty before anyone reads it, so it is
    /// forwarded without a body (no chunked encoding for an empty HTTP/1.1 request).
    pub async fn new(mut recv: R, hold: Option<Box<dyn Send + Sync>>) -> Self {
        let peek = std::future::poll_fn(|cx| Poll::Ready(recv.poll_data(cx))).await;
        let (first, phase) = match peek {
            Poll::Ready(Ok(Some(data))) => (Some(data), Phase::Data),
            Poll::Ready(Ok(None)) => (None, Phase::Trailers),
            // An error shows again on the first read.
            Poll::Ready(Err(_)) | Poll::Pending => (None, Phase::Data),
        };
        let mut body = H3Body {
            recv: Mutex::new(recv),
            first,
            phase,
            hold,
        };
        if body.phase == Phase::Trailers {
            let recv = body.recv.get_mut().unwrap_or_else(|p| p.into_inner());
            if let Poll::Ready(Ok(None)) =
                std::future::poll_fn(|cx| Poll::Ready(recv.poll_trailers(cx))).await
            {
                body.phase = Phase::Done;
                body.hold = None;
            }
        }
        body
    }
}

impl<R: H3Recv> http_body::Body for H3Body<R> {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let recv = this.recv.get_mut().unwrap_or_else(|p| p.into_inner());
        loop {
            match this.phase {
                Phase::Data => match ready!(recv.poll_data(cx)) {
                    Ok(Some(data)) if data.is_empty() => {}
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) => this.phase = Phase::Trailers,
                    Err(error) => {
                        this.phase = Phase::Done;
                        this.hold = None;
                        return Poll::Ready(Some(Err(error)));
                    }
                },
                Phase::Trailers => {
                    let trailers = ready!(recv.poll_trailers(cx));
                    this.phase = Phase::Done;
                    this.hold = None;
                    return Poll::Ready(match trailers {
                        Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
                        Ok(None) => None,
                        Err(error) => Some(Err(error)),
                    });
                }
                Phase::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.phase == Phase::Done && self.first.is_none()
    }
}
