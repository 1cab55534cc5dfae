//! A tunnel carried as two HTTP bodies (an HTTP/2 CONNECT stream, a POST tunnel), seen as one
//! byte stream so the splice (`accel::splice`) can move it like a socket.

use crate::body::{Body, BoxError};
use bytes::{Buf, Bytes};
use http_body::{Body as _, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Chunks in flight from a [`BodyIo`]'s writer to its peer before the writer waits.
const CHANNEL_DEPTH: usize = 16;

/// A body fed by a channel: each `Bytes` sent is a data frame; dropping every sender ends it,
/// cleanly (a FIN) or, when the tunnel was reset first, with [`super::reset::reset_error`].
pub struct ChannelBody {
    receiver: mpsc::Receiver<Bytes>,
    reset: Arc<AtomicBool>,
}

/// The feeding end of a [`ChannelBody`].
pub struct BodySender {
    sender: mpsc::Sender<Bytes>,
    reset: Arc<AtomicBool>,
}

/// A body whose frames are sent later, and the sender that feeds it.
pub fn channel_body() -> (BodySender, Body) {
    let (sender, receiver) = mpsc::channel(CHANNEL_DEPTH);
    let reset = Arc::new(AtomicBool::new(false));
    let body = ChannelBody {
        receiver,
        reset: reset.clone(),
    };
    (BodySender { sender, reset }, crate::body::boxed(body))
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match ready!(self.receiver.poll_recv(cx)) {
            Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            // Every sender is gone; the flag was set before, if it was set at all.
            None if self.reset.load(Ordering::Acquire) => {
                Poll::Ready(Some(Err(super::reset::reset_error())))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.receiver.is_closed() && self.receiver.is_empty() && !self.reset.load(Ordering::Acquire)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Reads from one body, writes into a channel that feeds another.
pub struct BodyIo {
    incoming: Body,
    leftover: Bytes,
    outgoing: PollSender<Bytes>,
    reset: Arc<AtomicBool>,
}

impl BodyIo {
    /// Reads come from `incoming`; writes go to the body fed by `outgoing`, and shutting the
    /// writer down ends that body (a half-close).
    pub fn new(incoming: Body, outgoing: BodySender) -> BodyIo {
        BodyIo {
            incoming,
            leftover: Bytes::new(),
            outgoing: PollSender::new(outgoing.sender),
            reset: outgoing.reset,
        }
    }

    /// Set it, then drop this `BodyIo`: the outgoing body ends with an error instead of
    /// cleanly, which the hop carries as a reset (`RST_STREAM`, or a failed HTTP/1.1 body).
    pub fn reset_flag(&self) -> Arc<AtomicBool> {
        self.reset.clone()
    }
}

impl AsyncRead for BodyIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.leftover.is_empty() {
                let n = this.leftover.len().min(buf.remaining());
                buf.put_slice(&this.leftover[..n]);
                this.leftover.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.incoming).poll_frame(cx)) {
                // End of the body: EOF.
                None => return Poll::Ready(Ok(())),
                Some(Err(error)) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, error)));
                }
                Some(Ok(frame)) => {
                    // Trailers carry nothing for a tunnel; skip them.
                    if let Ok(data) = frame.into_data() {
                        this.leftover = data;
                    }
                }
            }
        }
    }
}

impl AsyncWrite for BodyIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if ready!(this.outgoing.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        match this.outgoing.send_item(Bytes::copy_from_slice(buf)) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outgoing.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_one_body_and_writes_another() {
        let (feed_in, incoming) = channel_body();
        let (outgoing, out_body) = channel_body();
        let mut io = BodyIo::new(incoming, outgoing);
        feed_in
            .sender
            .send(Bytes::from_static(b"hello "))
            .await
            .unwrap();
        feed_in
            .sender
            .send(Bytes::from_static(b"world"))
            .await
            .unwrap();
        drop(feed_in);
        let mut read = Vec::new();
        io.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"hello world");
        io.write_all(b"back").await.unwrap();
        io.shutdown().await.unwrap();
        let sent = out_body.collect().await.unwrap().to_bytes();
        assert_eq!(&sent[..], b"back");
    }

    #[tokio::test]
    async fn a_reset_ends_the_outgoing_body_with_connect_error() {
        let (_feed_in, incoming) = channel_body();
        let (outgoing, mut out_body) = channel_body();
        let mut io = BodyIo::new(incoming, outgoing);
        io.write_all(b"sent before").await.unwrap();
        let flag = io.reset_flag();
        flag.store(true, Ordering::Release);
        drop(io);
        let first = out_body.frame().await.unwrap().unwrap();
        assert_eq!(
            first.into_data().unwrap(),
            Bytes::from_static(b"sent before")
        );
        assert!(
            !out_body.is_end_stream(),
            "a reset body is not a finished one"
        );
        let error = out_body
            .frame()
            .await
            .expect("an error, not the end")
            .unwrap_err();
        assert_eq!(
            super::super::reset::stream_reset_reason(&*error),
            h2::Reason::CONNECT_ERROR
        );
    }
}
