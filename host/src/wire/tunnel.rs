//! One end of an established tunnel, whatever carries it (a TCP socket, TLS, an HTTP/1.1
//! connection after `101`/`2xx`, or an HTTP/2 or HTTP/3 stream's two bodies), and the one
//! conversion of an upstream's answer into a tunnel ([`from_response`]), for every caller that
//! opens one (the connection manager's upgrades and CONNECT, and the tcp_proxy's CONNECT and
//! POST tunnels).

use super::WireHead;
use super::body_io::{self, BodySender};
use crate::body::Body;
use crate::socket::SocketId;
use http::{Response, StatusCode};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte stream a tunnel end can be.
pub trait TunnelStream: AsyncRead + AsyncWrite + Send {}

impl<T: AsyncRead + AsyncWrite + Send> TunnelStream for T {}

/// One end of an established tunnel, whatever carries it, and how to reset it.
///
/// Dropping it closes the end in an orderly way (a FIN, an `END_STREAM`); [`TunnelIo::reset`]
/// closes it the way a TCP reset is carried on that hop instead.
pub struct TunnelIo {
    stream: Pin<Box<dyn TunnelStream>>,
    /// A socket to close with a RST: a TCP end, or the HTTP/1.1 connection under this end.
    socket: Option<SocketId>,
    /// Set to end the outgoing tunnel body with an error (`RST_STREAM` on an HTTP/2 hop).
    body_reset: Option<Arc<AtomicBool>>,
}

impl TunnelIo {
    /// Also close `socket` with a RST when this end is reset: the HTTP/1.1 connection that
    /// carries it (a CONNECT's or an upgrade's connection, a POST tunnel's).
    pub fn reset_socket(mut self, socket: Option<SocketId>) -> TunnelIo {
        if socket.is_some() {
            self.socket = socket;
        }
        self
    }

    /// Closes this end as a reset: the socket under it (if any) with a RST, the body it sends
    /// (if any) with an error.
    pub fn reset(self) {
        self.reset_handle().reset();
        drop(self.stream);
    }

    /// What [`TunnelIo::reset`] does, kept apart from the stream: for a caller that splits
    /// the end into halves and may have to reset it once the halves are gone.
    pub fn reset_handle(&self) -> ResetHandle {
        ResetHandle {
            socket: self.socket,
            body_reset: self.body_reset.clone(),
        }
    }
}

/// Resets a [`TunnelIo`] that was split or moved: call [`ResetHandle::reset`] before the
/// last half is dropped.
#[derive(Clone)]
pub struct ResetHandle {
    socket: Option<SocketId>,
    body_reset: Option<Arc<AtomicBool>>,
}

impl ResetHandle {
    /// Makes the end's close a reset: a RST on its socket (if any), an error ending the body
    /// it sends (if any).
    pub fn reset(&self) {
        if let Some(socket) = &self.socket {
            socket.reset_on_close();
        }
        if let Some(flag) = &self.body_reset {
            flag.store(true, Ordering::Release);
        }
    }
}

impl AsyncRead for TunnelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.as_mut().poll_shutdown(cx)
    }
}

/// Boxes a stream as a [`TunnelIo`] that has nothing more to reset than dropping it.
pub fn boxed<T: AsyncRead + AsyncWrite + Send + 'static>(stream: T) -> TunnelIo {
    TunnelIo {
        stream: Box::pin(stream),
        socket: None,
        body_reset: None,
    }
}

/// A TCP (or TLS over TCP) end: reset means a RST on `socket`.
pub fn socket<T: AsyncRead + AsyncWrite + Send + 'static>(
    stream: T,
    socket: Option<SocketId>,
) -> TunnelIo {
    boxed(stream).reset_socket(socket)
}

/// A plain TCP end.
pub fn tcp(stream: tokio::net::TcpStream) -> TunnelIo {
    let id = SocketId::of(&stream);
    socket(stream, id)
}

/// A tunnel carried as two HTTP bodies: reset ends the body it sends with an error.
pub fn body(io: body_io::BodyIo) -> TunnelIo {
    let flag = io.reset_flag();
    TunnelIo {
        body_reset: Some(flag),
        ..boxed(io)
    }
}

/// Adapts hyper's upgraded connection (hyper's own IO traits) to tokio's.
pub fn upgraded(upgraded: hyper::upgrade::Upgraded) -> TunnelIo {
    boxed(hyper_util::rt::TokioIo::new(upgraded))
}

/// How a tunnel was asked of the upstream, which decides the answer that opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelRequest {
    /// An upgrade: HTTP/1.1 `Upgrade`, or an extended CONNECT on HTTP/2 and HTTP/3.
    Upgrade,
    /// A plain CONNECT to an authority.
    Connect,
    /// A POST whose request and response bodies carry the payload (a tcp_proxy's
    /// `tunneling_config.use_post`).
    Post,
}

/// What an upstream's answer to a tunnel request made of it.
#[derive(Debug)]
pub enum TunnelAnswer {
    /// The tunnel is open: the answer's head (its body is the tunnel now) and the upstream
    /// end.
    Open {
        /// The upstream's status and headers.
        head: Response<()>,
        /// The upstream end of the tunnel.
        tunnel: TunnelIo,
    },
    /// The upstream did not open it: its answer, as it came, to go back as a response.
    Refused(Response<Body>),
}

/// An answer that opened the tunnel, but whose connection could not be taken over.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// hyper did not hand over the HTTP/1.1 connection after its `101` or `2xx`.
    #[error("upgrade: {0}")]
    Upgrade(#[source] hyper::Error),
}

impl std::fmt::Debug for TunnelIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelIo")
            .field("socket", &self.socket)
            .field("body_reset", &self.body_reset.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether `response` opens the tunnel asked for as `asked`, on the version that carried it:
///
/// - on an HTTP/2 or HTTP/3 stream (RFC 9113 8.5, RFC 8441 5, RFC 9220), and for a POST
///   tunnel on any version, a `2xx` opens it and the payload is the two bodies;
/// - on HTTP/1.1, an upgrade is opened by `101 Switching Protocols` only and a CONNECT by a
///   `2xx` only (RFC 9110 9.3.6), and the connection itself is the tunnel.
pub fn opens(response: &Response<Body>, asked: TunnelRequest) -> bool {
    let status = response.status();
    if response.multiplexed() || asked != TunnelRequest::Upgrade {
        status.is_success()
    } else {
        status == StatusCode::SWITCHING_PROTOCOLS
    }
}

/// Converts an upstream's answer to a tunnel request into the tunnel's upstream end, the one
/// way every tunnel weir opens upstream is made (an upgrade or CONNECT proxied by the
/// connection manager, a tcp_proxy's CONNECT or POST tunnel). `payload` feeds the request body
/// that carries the payload upstream where the tunnel is two bodies; it is dropped otherwise.
///
/// A reset of the end resets what carries it: the HTTP/1.1 connection (when the pool marked
/// the answer with its [`SocketId`]), or the stream (`RST_STREAM(CONNECT_ERROR)`).
pub async fn from_response(
    mut response: Response<Body>,
    asked: TunnelRequest,
    payload: BodySender,
) -> Result<TunnelAnswer, OpenError> {
    if !opens(&response, asked) {
        return Ok(TunnelAnswer::Refused(response));
    }
    // Set by the HTTP/1.1 pool only: that connection carries the tunnel alone.
    let socket = response.extensions().get::<SocketId>().copied();
    if response.multiplexed() || asked == TunnelRequest::Post {
        let (parts, incoming) = response.into_parts();
        let tunnel = body(body_io::BodyIo::new(incoming, payload)).reset_socket(socket);
        return Ok(TunnelAnswer::Open {
            head: Response::from_parts(parts, ()),
            tunnel,
        });
    }
    drop(payload);
    let connection = hyper::upgrade::on(&mut response)
        .await
        .map_err(OpenError::Upgrade)?;
    let (parts, _empty) = response.into_parts();
    Ok(TunnelAnswer::Open {
        head: Response::from_parts(parts, ()),
        tunnel: upgraded(connection).reset_socket(socket),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version;

    fn answer(version: Version, status: u16) -> Response<Body> {
        let mut response = Response::new(crate::body::empty());
        *response.version_mut() = version;
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    }

    #[test]
    fn which_answers_open_which_tunnels() {
        use TunnelRequest::{Connect, Post, Upgrade};
        let cases = [
            // HTTP/1.1: an upgrade by 101 only, a CONNECT and a POST tunnel by 2xx only.
            (Version::HTTP_11, 101, Upgrade, true),
            (Version::HTTP_11, 200, Upgrade, false),
            (Version::HTTP_11, 200, Connect, true),
            (Version::HTTP_11, 204, Connect, true),
            (Version::HTTP_11, 101, Connect, false),
            (Version::HTTP_11, 200, Post, true),
            (Version::HTTP_11, 101, Post, false),
            (Version::HTTP_11, 403, Connect, false),
            // HTTP/2 and HTTP/3: a stream's 2xx, whatever was asked.
            (Version::HTTP_2, 200, Upgrade, true),
            (Version::HTTP_2, 101, Upgrade, false),
            (Version::HTTP_2, 200, Connect, true),
            (Version::HTTP_3, 200, Upgrade, true),
            (Version::HTTP_3, 200, Connect, true),
            (Version::HTTP_3, 502, Connect, false),
        ];
        for (version, status, asked, expected) in cases {
            assert_eq!(
                opens(&answer(version, status), asked),
                expected,
                "{version:?} {status} to {asked:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_refusal_comes_back_as_it_came() {
        let (payload, _body) = body_io::channel_body();
        let mut refused = answer(Version::HTTP_11, 403);
        refused
            .headers_mut()
            .insert("x-why", http::HeaderValue::from_static("no"));
        match from_response(refused, TunnelRequest::Connect, payload).await {
            Ok(TunnelAnswer::Refused(response)) => {
                assert_eq!(response.status(), StatusCode::FORBIDDEN);
                assert_eq!(response.headers()["x-why"], "no");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stream_answer_is_a_tunnel_of_two_bodies() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (payload, mut upstream_request_body) = body_io::channel_body();
        let response_body = crate::body::full(bytes::Bytes::from_static(b"pong"));
        let mut response = Response::new(response_body);
        *response.version_mut() = Version::HTTP_2;
        response
            .headers_mut()
            .insert("x-upstream", http::HeaderValue::from_static("yes"));
        let opened = from_response(response, TunnelRequest::Upgrade, payload).await;
        let Ok(TunnelAnswer::Open { head, mut tunnel }) = opened else {
            panic!("expected an open tunnel, got {opened:?}");
        };
        assert_eq!(head.headers()["x-upstream"], "yes");
        // Downstream to upstream: written to the tunnel, read from the request body.
        tunnel.write_all(b"ping").await.unwrap();
        tunnel.flush().await.unwrap();
        let frame = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            http_body_util::BodyExt::frame(&mut upstream_request_body),
        )
        .await
        .expect("the payload reaches the request body in time");
        let data = frame.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"ping");
        // Upstream to downstream: sent as the response body, read from the tunnel.
        let mut read = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tunnel.read_to_end(&mut read),
        )
        .await
        .expect("the tunnel ends in time")
        .unwrap();
        assert_eq!(read, b"pong");
    }

    #[tokio::test]
    async fn an_h1_answer_without_a_connection_to_take_over_is_an_error() {
        let (payload, _body) = body_io::channel_body();
        let response = answer(Version::HTTP_11, 200);
        let opened = from_response(response, TunnelRequest::Connect, payload).await;
        let error = opened.expect_err("no connection came with this answer");
        assert!(error.to_string().starts_with("upgrade: "), "{error}");
    }
}
