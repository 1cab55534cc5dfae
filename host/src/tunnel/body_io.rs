//! A tunnel carried as two HTTP bodies (an HTTP/2 CONNECT stream, a POST tunnel), seen as one
//! byte stream so [`crate::accel::splice`] can move it like a socket.

use crate::body::{Body, BoxError};
use bytes::{Buf, Bytes};
use http_body::{Body as _, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Chunks in flight from a [`BodyIo`]'s writer to its peer before the writer waits.
const CHANNEL_DEPTH: usize = 16;

/// A body fed by a channel: each `Bytes` sent is a data frame; dropping every sender ends it.
pub struct ChannelBody {
    receiver: mpsc::Receiver<Bytes>,
}

/// A body whose frames are sent later, and the sender that feeds it.
pub fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (sender, receiver) = mpsc::channel(CHANNEL_DEPTH);
    (sender, crate::body::boxed(ChannelBody { receiver }))
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.receiver.is_closed() && self.receiver.is_empty()
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
}

impl BodyIo {
    /// Reads come from `incoming`; writes go to the body fed by `outgoing`, and shutting the
    /// writer down ends that body (a half-close).
    pub fn new(incoming: Body, outgoing: mpsc::Sender<Bytes>) -> BodyIo {
        BodyIo {
            incoming,
            leftover: Bytes::new(),
            outgoing: PollSender::new(outgoing),
        }
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
        feed_in.send(Bytes::from_static(b"hello ")).await.unwrap();
        feed_in.send(Bytes::from_static(b"world")).await.unwrap();
        drop(feed_in);
        let mut read = Vec::new();
        io.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"hello world");
        io.write_all(b"back").await.unwrap();
        io.shutdown().await.unwrap();
        let sent = out_body.collect().await.unwrap().to_bytes();
        assert_eq!(&sent[..], b"back");
    }
}
