//! Serving one downstream HTTP/2 connection on the `h2` crate: each stream goes through the
//! same handler as an HTTP/1.1 request (see [`super::server`]), its bodies streamed both ways
//! within flow control, trailers passed on. On drain the connection sends GOAWAY, lets the
//! streams in flight finish, then closes.
//!
//! Why not hyper's HTTP/2 server: hyper hands an accepted CONNECT stream (plain, or RFC 8441
//! extended) over as an `Upgraded` whose close is always an orderly `END_STREAM`, while a
//! tunnel whose far side was reset must end with `RST_STREAM(CONNECT_ERROR)` (RFC 9113 8.5),
//! and that needs the stream itself. Here a CONNECT's 2xx is sent, then its DATA frames are
//! handed to the tunnel through the request's [`TunnelHandoff`] (as every codec hands a
//! tunnel over), and a reset of the
//! tunnel resets the stream with the reason it carries.
//!
//! What hyper's server did and this one keeps (the `date` header on every response is the
//! connection driver's, [`super::driver`], for every codec): connection-specific headers
//! stripped from responses, `content-length` set from a body of
//! known length, a stream the client resets before its answer stops being handled (which
//! cancels the upstream request), and hyper's limits (400 KiB send buffer per stream, 1,024
//! locally reset streams before the connection is closed).
//!
//! What it adds against abusive clients: header lists are bounded by `max_request_headers_kb`
//! (431 past it), Envoy's premature-reset rule closes a connection whose streams are mostly
//! reset by the client ([`super::premature_reset`]), and one connection starts at most
//! `max_requests_per_io_cycle` streams before it yields its worker to the others.

use super::headers;
use super::premature_reset::{ResetWatch, StreamEnd};
use super::tracked::TrackedBody;
use crate::config::runtime::StreamAbuseLimits;
use crate::snapshot::HttpManagerConfig;
use crate::stats::HttpStats;
use crate::wire::Protocol;
use crate::wire::h2_body::{H2Body, SendBodyError, send_body};
use crate::wire::handoff::{StreamHandoff, TunnelHandoff};
use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderValue, Method, Request, Response, header};
use http_body::Body as _;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// Bytes a stream may queue for sending beyond what the peer's window lets out.
const MAX_SEND_BUFFER: usize = 400 << 10;

/// Streams we may reset for the peer's protocol errors before closing the connection
/// (a bound on the "reset flood" attacks).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The connection settings of a listener, from its `http2_protocol_options`.
pub(super) fn builder(config: &HttpManagerConfig) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(config.http2.max_concurrent_streams)
        .initial_window_size(config.http2.initial_stream_window_size)
        .initial_connection_window_size(config.http2.initial_connection_window_size)
        .max_header_list_size(config.max_request_headers_bytes)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
    if config.allow_connect {
        builder.enable_connect_protocol();
    }
    builder
}

/// What one connection is held to, beyond its codec settings.
#[derive(Clone)]
pub(super) struct Limits {
    /// Premature resets and streams per cycle.
    pub abuse: StreamAbuseLimits,
    /// The listener's stats (resets and closes are counted there).
    pub stats: Arc<HttpStats>,
}

/// Serves HTTP/2 on `io` until the peer closes or the connection fails; `drain` turning true
/// sends GOAWAY, and the connection closes once its streams are done. `handle` answers each
/// request. Too many premature resets close it at once with GOAWAY(ENHANCE_YOUR_CALM).
pub(super) async fn serve<I, H, F>(
    builder: h2::server::Builder,
    io: I,
    handle: H,
    limits: Limits,
    mut drain: watch::Receiver<bool>,
) -> Result<(), h2::Error>
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<H2Body>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<TrackedBody>> + Send + 'static,
{
    let mut connection = tokio::select! {
        connection = builder.handshake::<_, Bytes>(io) => connection?,
        // Drained before its preface came: nothing is in flight.
        _ = drain.wait_for(|drain| *drain) => return Ok(()),
    };
    // One per connection, shared by its stream tasks (an `Arc` clone each, not a copy of the
    // stats' counters).
    let ctx = Arc::new(ConnectionCtx {
        resets: ResetWatch::new(limits.abuse),
        stats: limits.stats,
    });
    let per_cycle = limits.abuse.max_requests_per_io_cycle.max(1);
    let mut started_this_cycle = 0u32;
    let mut draining = false;
    let mut closing = false;
    loop {
        if started_this_cycle >= per_cycle {
            // Let the worker's other connections run before this one starts more.
            started_this_cycle = 0;
            tokio::task::yield_now().await;
        }
        tokio::select! {
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    // Boxed: the stream's future holds every phase's state (kilobytes), and
                    // the task would otherwise copy it whole on spawn and at each change of
                    // its stage; boxed, it is copied once, into the box.
                    let stream = serve_stream(handle.clone(), request, respond, ctx.clone());
                    tokio::spawn(Box::pin(stream));
                    started_this_cycle += 1;
                }
                Some(Err(error)) if is_orderly_end(&error) => return Ok(()),
                // Our own GOAWAY for premature resets ends the connection in good order.
                Some(Err(_)) | None if closing => return Ok(()),
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
            () = ctx.resets.tripped(), if !closing => {
                closing = true;
                ctx.stats.rq_too_many_premature_resets.inc();
                tracing::debug!("h2 connection closed: too many premature stream resets");
                connection.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
            }
            // A dropped sender drains too (whoever could ask for a drain is gone).
            _ = drain.wait_for(|drain| *drain), if !draining && !closing => {
                draining = true;
                connection.graceful_shutdown();
            }
        }
    }
}

/// What the stream tasks of one connection report their ends to.
struct ConnectionCtx {
    resets: ResetWatch,
    stats: Arc<HttpStats>,
}

impl ConnectionCtx {
    fn ended(&self, started: Instant, end: StreamEnd) {
        if matches!(end, StreamEnd::ResetByClient { .. }) {
            self.stats.rq_rx_reset.inc();
        }
        self.resets.stream_ended(started, end);
    }
}

/// Whether `error` is the client's RST_STREAM.
fn is_remote_reset(error: &h2::Error) -> bool {
    error.is_reset() && error.is_remote()
}

/// The peer went away in good order: GOAWAY with NO_ERROR, or the socket closed on a frame
/// boundary.
fn is_orderly_end(error: &h2::Error) -> bool {
    (error.is_go_away() && error.is_remote() && error.reason() == Some(h2::Reason::NO_ERROR))
        || error
            .get_io()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// One stream: the handler answers it; the head, body and trailers go back. A CONNECT's DATA
/// frames are not its body: the handler gets an empty one, and the frames go to the tunnel
/// it sets up, if it does.
async fn serve_stream<H, F>(
    handle: H,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    ctx: Arc<ConnectionCtx>,
) where
    H: Fn(Request<H2Body>) -> F,
    F: Future<Output = Response<TrackedBody>>,
{
    let started = Instant::now();
    let end = answer_stream(handle, request, &mut respond, &ctx).await;
    ctx.ended(started, end);
}

/// [`serve_stream`]'s body: answers the stream and says how it ended.
async fn answer_stream<H, F>(
    handle: H,
    request: Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
    ctx: &ConnectionCtx,
) -> StreamEnd
where
    H: Fn(Request<H2Body>) -> F,
    F: Future<Output = Response<TrackedBody>>,
{
    let (mut parts, recv) = request.into_parts();
    // The rest of weir reads an extended CONNECT's :protocol as the wire's one type.
    if let Some(protocol) = parts.extensions.remove::<h2::ext::Protocol>() {
        parts.extensions.insert(Protocol::from_h2(&protocol));
    }
    let mut tunnel = None;
    let body = if parts.method == Method::CONNECT {
        let (sender, handoff) = TunnelHandoff::stream();
        parts.extensions.insert(handoff);
        tunnel = Some((recv, sender));
        H2Body::empty()
    } else {
        let length = headers::content_length(&parts.headers);
        H2Body::new(recv, length)
    };
    let handled = handle(Request::from_parts(parts, body));
    let mut handled = std::pin::pin!(handled);
    // A client that resets the stream before its answer cancels the request (and the
    // upstream request with it).
    let answered = std::future::poll_fn(|cx| {
        if let Poll::Ready(response) = handled.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        respond.poll_reset(cx).map(|_| None)
    })
    .await;
    let Some(response) = answered else {
        tracing::debug!("h2 stream reset by the client before its answer");
        return StreamEnd::ResetByClient {
            response_started: false,
        };
    };
    let (mut head, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut head.headers, false);
    if let Some((recv, handoff)) = tunnel {
        // A tunnel waits on the handoff only where the handler set one up.
        if head.status.is_success() && handoff.is_wanted() {
            head.headers.remove(header::CONTENT_LENGTH);
            return serve_tunnel(
                respond,
                Response::from_parts(head, ()),
                body,
                recv,
                handoff,
                ctx,
            )
            .await;
        }
    }
    let end_of_stream = body.is_end_stream();
    if !end_of_stream
        && !head.headers.contains_key(header::CONTENT_LENGTH)
        && let Some(length) = body.size_hint().exact()
    {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    let mut stream = match respond.send_response(Response::from_parts(head, ()), end_of_stream) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%error, "h2 response head not sent");
            return ended_by(&error, false);
        }
    };
    if !end_of_stream && let Err(error) = send_body(body, &mut stream).await {
        tracing::debug!(%error, "h2 response not sent in full");
        return body_ended_by(&error, ctx);
    }
    StreamEnd::Completed
}

/// How a stream whose response body was not sent in full ended (its head was); a reset weir
/// sent is counted.
fn body_ended_by(error: &SendBodyError, ctx: &ConnectionCtx) -> StreamEnd {
    match error {
        SendBodyError::Reset(_) => StreamEnd::ResetByClient {
            response_started: true,
        },
        SendBodyError::Stream(error) => ended_by(error, true),
        SendBodyError::Body(_) => {
            // send_body reset the stream with the body's reason.
            ctx.stats.rq_tx_reset.inc();
            StreamEnd::Completed
        }
    }
}

/// How a stream that failed with `error` ended.
fn ended_by(error: &h2::Error, response_started: bool) -> StreamEnd {
    if is_remote_reset(error) {
        StreamEnd::ResetByClient { response_started }
    } else {
        StreamEnd::Completed
    }
}

/// An accepted tunnel: the 2xx head goes out, then the stream is handed over as the tunnel's
/// downstream end. What the tunnel writes is sent here; a tunnel reset ends it with
/// `RST_STREAM(CONNECT_ERROR)`. `counted` (the response's body) keeps the stream counted as
/// active until the tunnel is done.
async fn serve_tunnel(
    respond: &mut SendResponse<Bytes>,
    head: Response<()>,
    counted: TrackedBody,
    recv: RecvStream,
    handoff: StreamHandoff,
    ctx: &ConnectionCtx,
) -> StreamEnd {
    let mut stream = match respond.send_response(head, false) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%error, "h2 CONNECT answer not sent");
            return ended_by(&error, false);
        }
    };
    let incoming = crate::body::boxed(H2Body::new(recv, None));
    let Ok(outgoing) = handoff.hand_over(incoming) else {
        tracing::debug!("h2 tunnel ended before its stream was handed over");
        stream.send_reset(h2::Reason::CANCEL);
        ctx.stats.rq_tx_reset.inc();
        return StreamEnd::Completed;
    };
    let end = match send_body(outgoing, &mut stream).await {
        Ok(()) => StreamEnd::Completed,
        Err(error) => {
            tracing::debug!(%error, "h2 tunnel stream ended with an error");
            body_ended_by(&error, ctx)
        }
    };
    drop(counted);
    end
}
