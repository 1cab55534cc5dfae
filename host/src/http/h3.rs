//! Serving one downstream QUIC connection with HTTP/3 (the `h3` crate): the codec adapter
//! under the connection driver ([`super::driver`], which owns the connection's stats, limits
//! and drain, and each stream's way in and out: [`Connection::stream`], as for HTTP/1.1 and
//! HTTP/2). Here: reading request heads, writing responses with their bodies streamed and
//! trailers passed on, and HTTP/3's own drain: GOAWAY, the requests in flight finish, then
//! the connection closes.
//!
//! CONNECT streams (plain CONNECT, and RFC 9220 extended CONNECT where the listener's
//! `http3_protocol_options.allow_extended_connect` advertises SETTINGS_ENABLE_CONNECT_PROTOCOL)
//! are served on the raw stream (see [`super::h3_connect`] for why): the manager sees an
//! upgrade or a CONNECT as it would from HTTP/2, and once its 2xx is written the stream's DATA
//! frames are the tunnel, handed over through the request's [`TunnelHandoff`] (as every
//! codec hands a tunnel over).
//!
//! Envoy's premature-reset rule holds here as on HTTP/2 ([`super::premature_reset`]): a
//! connection whose request streams are mostly abandoned by the client (stopped or reset
//! before their response is written) gets GOAWAY and is closed with H3_EXCESSIVE_LOAD.

use super::CurrentManager;
use super::driver::{Connection, ConnectionCount, ConnectionLimits, Driven, drive};
use super::premature_reset::{ResetWatch, StreamEnd};
use super::tracked::{Opening, TrackedBody};
use crate::body;
use crate::wire::ConnectionInfo;
use crate::wire::h3_body::H3Body;
use crate::wire::h3_connect::{self, CONNECTION_SPECIFIC, DataBody};
use crate::wire::handoff::TunnelHandoff;
use bytes::Bytes;
use h3::quic::{BidiStream as _, RecvStream as _, SendStream as _};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// A request stream of a downstream connection.
type ServerStream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// What accepting a request stream gives.
type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;

/// A request stream taken from the h3 crate after its first HEADERS frame (a CONNECT).
type RawStream = h3::stream::BufRecvStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// A request stream, once its head is read.
enum Resolved {
    /// Anything but CONNECT, served through the h3 crate.
    Request(http::Request<()>, ServerStream),
    /// A CONNECT (extended or plain), served on the raw stream.
    Connect(http::Request<()>, RawStream),
}

/// How often a draining connection checks whether its last stream is done.
const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// H3_EXCESSIVE_LOAD (RFC 9114 8.1): the code a connection closed for abuse gets.
const H3_EXCESSIVE_LOAD: u32 = 0x107;

/// Serves HTTP/3 on an accepted QUIC `connection` until it closes, under the connection
/// driver ([`super::driver`]); `shutdown` turning true sends GOAWAY, lets in-flight requests
/// finish, then closes the connection (a few round trips after the last response, so its
/// last bytes are acknowledged first: closing a QUIC connection drops data not yet
/// delivered). Each request runs on the manager `current` holds when it starts.
pub async fn serve_h3_connection(
    current: Arc<CurrentManager>,
    connection: quinn::Connection,
    local: std::net::SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    // Connection-level settings come from the manager current at accept; each request
    // takes the manager current when it starts.
    let accepted_on = current.load_full();
    let stats = accepted_on.stats.clone();
    let count = ConnectionCount::open(&stats, true);
    let info = ConnectionInfo {
        remote: connection.remote_address(),
        local,
        tls: true,
        original_dst: None,
        // QUIC listeners ask for no client certificate.
        mtls: false,
        socket: None,
        id: crate::wire::connection::next_connection_id(),
        sni: connection
            .handshake_data()
            .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|data| {
                data.server_name
                    .map(|name| std::sync::Arc::from(name.as_str()))
            }),
    };
    let quic = connection.clone();
    let allow_extended_connect = accepted_on.config.allow_extended_connect;
    let built = h3::server::builder()
        .max_field_section_size(u64::from(accepted_on.config.max_request_headers_bytes))
        .enable_extended_connect(allow_extended_connect)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await;
    let h3_connection = match built {
        Ok(h3_connection) => h3_connection,
        Err(error) => {
            tracing::debug!(peer = %info.remote, %error, "HTTP/3 setup failed");
            stats.cx_protocol_error.inc();
            return;
        }
    };
    let (drain, drained) = watch::channel(*shutdown.borrow());
    let drain = Arc::new(drain);
    let driver = Connection::new(current, info.clone(), drain.clone());
    // Counted when the connection is made, as Envoy counts `downstream_cx_http3_total`.
    driver.count_protocol(&stats, &http::Version::HTTP_3);
    let driven = Driven {
        peer: info.remote,
        stats: stats.clone(),
        count,
        // `common_http_protocol_options`, as on TCP: past either limit the connection
        // drains (GOAWAY, in-flight streams finish, then it closes).
        limits: ConnectionLimits::new(&accepted_on.config),
        activity: driver.activity().clone(),
        drain,
    };
    let streams = Streams {
        connection: driver,
        resets: Arc::new(ResetWatch::new(accepted_on.config.abuse)),
        allow_extended_connect,
        stats,
        peer: info.remote,
    };
    // Not kept: a reload must not keep an old snapshot alive for a long-lived connection.
    drop(accepted_on);
    drive(
        serve(h3_connection, quic, streams, drained),
        driven,
        shutdown,
    )
    .await;
}

/// What the request streams of one HTTP/3 connection are served with.
struct Streams {
    connection: Connection,
    resets: Arc<ResetWatch>,
    allow_extended_connect: bool,
    /// The listener's stats, from the manager in force when the connection was accepted
    /// (shared: one reference count per stream, not a copy of every counter).
    stats: Arc<crate::stats::HttpStats>,
    /// The client, for logs.
    peer: std::net::SocketAddr,
}

/// The HTTP/3 codec adapter: accepts request streams until the connection ends; `drain`
/// turning true sends GOAWAY, and the connection is closed once its streams are done. Too
/// many premature resets close it at once with H3_EXCESSIVE_LOAD.
async fn serve(
    mut h3_connection: h3::server::Connection<h3_quinn::Connection, Bytes>,
    quic: quinn::Connection,
    streams: Streams,
    mut drain: watch::Receiver<bool>,
) -> Result<(), crate::body::BoxError> {
    let Streams {
        connection,
        resets,
        allow_extended_connect,
        stats,
        peer,
    } = streams;
    let mut draining = *drain.borrow();
    if draining {
        let _ = h3_connection.shutdown(0).await;
    }
    loop {
        tokio::select! {
            accepted = h3_connection.accept() => match accepted {
                Ok(Some(resolver)) => {
                    // Not idle while its head is on the way; counted as a request from its
                    // head on ([`Connection::stream`]).
                    let opening = Opening::start(connection.activity().clone());
                    let connection = connection.clone();
                    let resets = resets.clone();
                    let stats = stats.clone();
                    let started = Instant::now();
                    tokio::spawn(async move {
                        match resolve(resolver, allow_extended_connect).await {
                            Ok(Resolved::Request(request, stream)) => {
                                let end = serve_request(&connection, request, stream, opening, &stats).await;
                                if matches!(end, StreamEnd::ResetByClient { .. }) {
                                    stats.rq_rx_reset.inc();
                                }
                                resets.stream_ended(started, end);
                            }
                            Ok(Resolved::Connect(request, stream)) => serve_connect(&connection, request, stream, opening).await,
                            Err(error) => {
                                tracing::debug!(%error, "HTTP/3 request head unreadable");
                                drop(opening);
                            }
                        }
                    });
                }
                Ok(None) => return Ok(()),
                Err(error) => {
                    // Not a protocol error of the connection's stats: QUIC ends connections
                    // with errors in the ordinary course (idle, the peer's close).
                    if !error.is_h3_no_error() {
                        tracing::debug!(%peer, %error, "HTTP/3 connection ended with an error");
                    }
                    return Ok(());
                }
            },
            () = resets.tripped() => {
                stats.rq_too_many_premature_resets.inc();
                tracing::debug!(%peer, "HTTP/3 connection closed: too many premature stream resets");
                if let Err(error) = h3_connection.shutdown(0).await {
                    tracing::debug!(%error, "HTTP/3 GOAWAY");
                }
                quic.close(quinn::VarInt::from_u32(H3_EXCESSIVE_LOAD), b"too many premature resets");
                return Ok(());
            }
            // A dropped sender drains too (whoever could ask for a drain is gone). The guard
            // `wait_for` returns is dropped at once: GOAWAY is awaited below.
            () = async { drop(drain.wait_for(|drain| *drain).await) }, if !draining => {
                draining = true;
                if let Err(error) = h3_connection.shutdown(0).await {
                    tracing::debug!(%error, "HTTP/3 GOAWAY");
                }
            }
            () = tokio::time::sleep(DRAIN_CHECK), if draining => {
                let grace = (quic.rtt() * 3).max(std::time::Duration::from_millis(100));
                if connection.activity().idle_for().is_some_and(|idle| idle >= grace) {
                    // 0x100: H3_NO_ERROR.
                    quic.close(quinn::VarInt::from_u32(0x100), b"shutting down");
                    return Ok(());
                }
            }
        }
    }
}

/// Reads the head of a request stream. A CONNECT is taken off the h3 crate (which cannot
/// parse `:protocol websocket`); any other request goes back to it with its first frame.
/// An extended CONNECT on a listener that did not advertise it is malformed (RFC 9220 3,
/// RFC 8441 4): the stream is reset with H3_MESSAGE_ERROR, as is a CONNECT head that is not
/// valid HTTP/3.
async fn resolve(mut resolver: Resolver, allow_extended_connect: bool) -> Result<Resolved, String> {
    let frame = std::future::poll_fn(|cx| resolver.frame_stream.poll_next(cx)).await;
    let connect = match &frame {
        Ok(Some(h3::proto::frame::Frame::Headers(block))) => h3_connect::peek_connect(block),
        _ => None,
    };
    let Some(fields) = connect else {
        let resolved = resolver
            .accept_with_frame(frame)
            .map_err(|e| e.to_string())?;
        let (request, stream) = resolved.resolve().await.map_err(|e| e.to_string())?;
        return Ok(Resolved::Request(request, stream));
    };
    let mut stream = resolver.frame_stream.into_inner();
    let refused = match h3_connect::connect_request(fields) {
        Ok((mut request, protocol)) => match protocol {
            Some(_) if !allow_extended_connect => {
                "extended CONNECT on a listener without allow_extended_connect".to_owned()
            }
            Some(protocol) => {
                request.extensions_mut().insert(protocol);
                return Ok(Resolved::Connect(request, stream));
            }
            None => return Ok(Resolved::Connect(request, stream)),
        },
        Err(error) => error.to_string(),
    };
    let code = h3::error::Code::H3_MESSAGE_ERROR.value();
    stream.stop_sending(code);
    stream.reset(code);
    Err(refused)
}

/// A CONNECT stream: the manager answers it as any tunnel request (an upgrade of type
/// `:protocol`, or a CONNECT); a 2xx it answered with a tunnel behind is written, then the
/// stream is handed over as the tunnel's downstream end, and stays counted as a request until
/// the tunnel is done. Any other answer goes back as an ordinary response.
async fn serve_connect(
    connection: &Connection,
    mut request: Request<()>,
    stream: RawStream,
    opening: Opening,
) {
    let (mut send, recv) = stream.split();
    let (handoff_sender, handoff) = TunnelHandoff::stream();
    request.extensions_mut().insert(handoff);
    let answered = connection.stream(request.map(|()| body::empty()));
    drop(opening);
    let response = answered.await;
    let (mut head, body) = response.into_parts();
    remove_connection_specific(&mut head.headers);
    let sent =
        match h3_connect::headers_frame(&h3_connect::response_fields(head.status, &head.headers)) {
            Ok(frame) => send.write_all(&frame).await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
    if let Err(error) = sent {
        tracing::debug!(%error, "HTTP/3 CONNECT response head not sent");
        send.reset(h3::error::Code::H3_INTERNAL_ERROR.value());
        return;
    }
    // A tunnel task waits on the handoff only when the manager set a tunnel up.
    if head.status.is_success() && handoff_sender.is_wanted() {
        let incoming = DataBody::new(h3_connect::frames(recv), None).boxed();
        // Not wanted after all: the body ends at once, and so does the stream (FIN).
        let outgoing = handoff_sender
            .hand_over(incoming)
            .unwrap_or_else(|outgoing| {
                tracing::debug!("HTTP/3 tunnel ended before its stream was handed over");
                outgoing
            });
        tokio::spawn(async move {
            // The response's body is not sent (the tunnel is): it holds the stream's count.
            let _counted = body;
            // The outgoing body fails only when the tunnel was reset (RFC 9114 4.4).
            if let Err(error) = h3_connect::pump_data(outgoing, &mut send).await {
                tracing::debug!(%error, "HTTP/3 tunnel stream ended with an error");
                send.reset(h3::error::Code::H3_CONNECT_ERROR.value());
            }
        });
        return;
    }
    drop(handoff_sender);
    drop(recv);
    if let Err(error) = h3_connect::pump_data(body::boxed(body), &mut send).await {
        tracing::debug!(%error, "HTTP/3 CONNECT response not sent in full");
        send.reset(h3::error::Code::H3_INTERNAL_ERROR.value());
    }
}

/// One request: the driver answers it ([`Connection::stream`]), the response head, body and
/// trailers go back; says how the stream ended (a reset weir sent is counted in `stats`).
async fn serve_request(
    connection: &Connection,
    request: http::Request<()>,
    stream: ServerStream,
    opening: Opening,
    stats: &crate::stats::HttpStats,
) -> StreamEnd {
    let (mut send, recv) = stream.split();
    let body = H3Body::new(recv, None).await;
    let answered = connection.stream(request.map(|()| body));
    drop(opening);
    let response = answered.await;
    let (mut head, body) = response.into_parts();
    remove_connection_specific(&mut head.headers);
    match send_response(&mut send, Response::from_parts(head, ()), body).await {
        Ok(()) => StreamEnd::Completed,
        Err(error) => {
            tracing::debug!(%error, "HTTP/3 response not sent in full");
            match error {
                // The client stopped or reset the stream, or its connection is gone.
                ResponseError::Head(_) => StreamEnd::ResetByClient {
                    response_started: false,
                },
                ResponseError::Stream(_) => StreamEnd::ResetByClient {
                    response_started: true,
                },
                ResponseError::Body(_) => {
                    stats.rq_tx_reset.inc();
                    StreamEnd::Completed
                }
            }
        }
    }
}

/// How sending a response failed.
#[derive(Debug, thiserror::Error)]
enum ResponseError {
    /// The head could not be written: the client is gone from the stream.
    #[error("head not sent: {0}")]
    Head(h3::error::StreamError),
    /// The stream failed after the head.
    #[error("stream failed: {0}")]
    Stream(h3::error::StreamError),
    /// The response body failed (the upstream's side); the stream was reset.
    #[error("body failed: {0}")]
    Body(crate::body::BoxError),
}

fn remove_connection_specific(headers: &mut HeaderMap) {
    for name in CONNECTION_SPECIFIC {
        headers.remove(name);
    }
}

/// Sends the head, then each body frame as it comes, then trailers (or FIN).
async fn send_response(
    send: &mut h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    head: Response<()>,
    mut body: TrackedBody,
) -> Result<(), ResponseError> {
    send.send_response(head)
        .await
        .map_err(ResponseError::Head)?;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                // The upstream failed mid-body, or it went `stream_idle_timeout` without a
                // frame: reset so the client sees it was cut.
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return Err(ResponseError::Body(error));
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if !data.is_empty() {
                    send.send_data(data).await.map_err(ResponseError::Stream)?;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    // h3 0.0.8's send_trailers does not end the stream.
                    send.send_trailers(trailers)
                        .await
                        .map_err(ResponseError::Stream)?;
                    break;
                }
            }
        }
    }
    send.finish().await.map_err(ResponseError::Stream)?;
    Ok(())
}
