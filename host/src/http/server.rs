//! Serving one downstream TCP connection: the codec adapters under the connection driver
//! ([`super::driver`], which owns the connection's stats, limits, drain and streams). Here:
//! the codec choice (ALPN, `codec_type`, HTTP/2 preface detection) and each codec's own
//! drain (HTTP/1.1: hyper's graceful shutdown; HTTP/2: GOAWAY). HTTP/1.1 is hyper's; HTTP/2
//! is weir's own codec on the `h2` crate ([`super::h2`]).

use super::CurrentManager;
use super::driver::{Connection, ConnectionCount, ConnectionLimits, Driven, drive};
use super::h2::{self as h2_codec};
use super::tracked::TrackedBody;
use crate::body::BoxError;
use crate::config::schema::CodecType;
use crate::snapshot::HttpManagerConfig;
use crate::wire::ConnectionInfo;
use crate::wire::handoff::TunnelHandoff;
use crate::wire::prefixed::Prefixed;
use bytes::Bytes;
use http::Request;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

/// What a client speaking HTTP/2 with prior knowledge sends first (RFC 9113 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection being served, to its end.
type Serving = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// An HTTP/1.1 request being answered (what hyper's service returns).
type Handled =
    Pin<Box<dyn Future<Output = Result<http::Response<TrackedBody>, Infallible>> + Send>>;

/// The codec setups a listener may need, built once: HTTP/1.1 (hyper) and HTTP/2 (`h2`).
pub(super) struct Codecs {
    http1: http1::Builder,
    http2: h2::server::Builder,
    /// `accept_http_10`, for the HTTP/1 reader's first-line screen.
    accept_http_10: bool,
}

impl Codecs {
    pub(super) fn new(config: &HttpManagerConfig) -> Codecs {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .max_headers(config.max_headers_count)
            // 431 past it (hyper answers it itself).
            .max_header_size(config.max_request_headers_bytes as usize)
            // hyper's own timer would run while a keep-alive connection idles between
            // requests; weir's starts at the head's first byte (see `Activity::bytes_arrived`).
            .header_read_timeout(None);
        Codecs {
            http1,
            http2: h2_codec::builder(config),
            accept_http_10: config.http10.accept,
        }
    }

    /// Starts serving `io` with the codec `codec_type` and ALPN call for: HTTP/1.1, HTTP/2,
    /// or (AUTO without ALPN) HTTP/2 when the connection starts with its preface, else
    /// HTTP/1.1. `drain` turning true stops taking requests; those in flight finish.
    fn serve<I>(
        &self,
        codec: CodecType,
        tls: &ConnectionTls,
        io: I,
        streams: Connection,
        limits: h2_codec::Limits,
        drain: watch::Receiver<bool>,
    ) -> Serving
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http1 = self.http1.clone();
        let http2 = self.http2.clone();
        let clock = streams.activity().clone();
        let accept_http_10 = self.accept_http_10;
        match (codec, tls.alpn.as_deref()) {
            (CodecType::HTTP1, _) | (CodecType::AUTO, Some(b"http/1.1")) => {
                let io = Prefixed::new(Bytes::new(), io)
                    .with_head_clock(clock)
                    .screening_requests(accept_http_10);
                Box::pin(serve_http1(http1, io, streams, drain))
            }
            (CodecType::HTTP2, _) | (CodecType::AUTO, Some(b"h2")) => {
                Box::pin(serve_http2(http2, io, streams, limits, drain))
            }
            // HTTP3 is for QUIC listeners only (the config refuses it on TCP).
            (CodecType::AUTO | CodecType::HTTP3, _) => Box::pin(async move {
                let mut drain_sniff = drain.clone();
                let sniffed = tokio::select! {
                    sniffed = sniff_preface(io) => sniffed?,
                    // Drained before the client said anything.
                    _ = drain_sniff.wait_for(|drain| *drain) => return Ok(()),
                };
                // Each codec boxed on its own: inline, this future would be as large as the
                // larger of the two (HTTP/2's), kept for the connection's life on HTTP/1.1
                // connections too.
                let serving: Serving = match sniffed {
                    (io, true) => Box::pin(serve_http2(http2, io, streams, limits, drain)),
                    (io, false) => {
                        let io = io.with_head_clock(clock).screening_requests(accept_http_10);
                        Box::pin(serve_http1(http1, io, streams, drain))
                    }
                };
                serving.await
            }),
        }
    }
}

/// Serves HTTP/1.1 with hyper (upgrades and CONNECT hand the connection over, through the
/// request's [`TunnelHandoff`]).
async fn serve_http1<I>(
    builder: http1::Builder,
    io: I,
    streams: Connection,
    mut drain: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Borrowed by the service, kept here to count how the connection ended.
    let streams = &streams;
    let service = service_fn(move |mut request: Request<hyper::body::Incoming>| {
        // A request hyper can switch protocols on (an `Upgrade`, a CONNECT) hands its
        // connection over as every codec hands a tunnel over.
        if let Some(upgrade) = request
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>()
        {
            request
                .extensions_mut()
                .insert(TunnelHandoff::upgrade(upgrade));
        }
        let handled = streams.stream(request);
        // Boxed: hyper keeps a slot sized for this future for the connection's whole life
        // (allocated when the connection starts, kept while it idles); boxed, the slot is a
        // pointer and the stream's state is allocated when a request comes and freed when
        // its response is out.
        let handled: Handled = Box::pin(async move { Ok::<_, Infallible>(handled.await) });
        handled
    });
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        result = connection.as_mut() => Some(result),
        _ = drain.wait_for(|drain| *drain) => None,
    };
    let result = match ended {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    // Read while `connection` (and with it a stream cut short) is still here.
    match result {
        Ok(()) => Ok(()),
        Err(error) => streams.http1_ended_by(error),
    }
}

/// Serves HTTP/2 with weir's codec.
async fn serve_http2<I>(
    builder: h2::server::Builder,
    io: I,
    streams: Connection,
    limits: h2_codec::Limits,
    drain: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Here, on the connection's task: its streams run on tasks of their own.
    crate::access_log::listener::note_protocol("HTTP/2");
    let handle = move |request| streams.stream(request);
    h2_codec::serve(builder, io, handle, limits, drain)
        .await
        .map_err(Into::into)
}

/// Reads as much of the connection's start as tells HTTP/2's preface from anything else:
/// the connection (with those bytes to be read again) and whether it is HTTP/2.
async fn sniff_preface<I: AsyncRead + Unpin>(mut io: I) -> io::Result<(Prefixed<I>, bool)> {
    let mut start = [0u8; H2_PREFACE.len()];
    let mut len = 0;
    while len < start.len() {
        let read = io.read(&mut start[len..]).await?;
        if read == 0 {
            break;
        }
        len += read;
        if start[..len] != H2_PREFACE[..len] {
            break;
        }
    }
    let is_h2 = start[..len] == H2_PREFACE[..];
    let prefix = Bytes::copy_from_slice(&start[..len]);
    Ok((Prefixed::new(prefix, io), is_h2))
}

/// What the TLS handshake (if any) settled.
#[derive(Debug, Clone, Default)]
pub struct ConnectionTls {
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The protocol ALPN picked.
    pub alpn: Option<Vec<u8>>,
}

/// Serves HTTP on `io` until the peer closes, an error, the idle timeout, or `shutdown`
/// turning true (then in-flight streams finish and the connection closes). Each request runs on
/// the manager `current` holds when it starts; the connection's own settings come from the one
/// in force now.
pub fn serve_connection<I>(
    current: Arc<CurrentManager>,
    io: I,
    info: ConnectionInfo,
    tls: ConnectionTls,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + use<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_connection_closing(current, io, info, tls, shutdown, None)
}

/// [`serve_connection`], whose HTTP/1.x responses say `connection: close` once `closing`
/// turns true (a listener a reload retired: its connections leave after their next response,
/// before `shutdown` drains those still open).
///
/// Not an `async fn`: the setup runs when it is called, and what it returns is the driver's
/// future alone. An `async fn` would keep a slot for `io` (a TLS stream is kilobytes) and its
/// setup's locals in the future for the connection's whole life, though the codec took them.
pub fn serve_connection_closing<I>(
    current: Arc<CurrentManager>,
    io: I,
    info: ConnectionInfo,
    tls: ConnectionTls,
    shutdown: watch::Receiver<bool>,
    closing: Option<watch::Receiver<bool>>,
) -> impl Future<Output = ()> + Send + use<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let manager = current.load_full();
    let stats = manager.stats.clone();
    let count = ConnectionCount::open(&stats, tls.tls);
    let (drain, drained) = watch::channel(*shutdown.borrow());
    let drain = Arc::new(drain);
    let streams = Connection::new(current.clone(), info.clone(), drain.clone()).closing_on(closing);
    let activity = streams.activity().clone();
    let limits = h2_codec::Limits {
        abuse: manager.config.abuse,
        stats: stats.clone(),
    };
    // Boxed by `serve`: the codec's state (hyper's or h2's connection) is kilobytes, and
    // sized for the codec the connection speaks.
    let codec = manager
        .codecs
        .serve(manager.config.codec, &tls, io, streams, limits, drained);
    let driven = Driven {
        peer: info.remote,
        limits: ConnectionLimits::new(&manager.config),
        stats,
        count,
        activity,
        drain,
    };
    // Not kept for the connection's life: a reload may replace it, and its VMs and pools
    // should go once the streams that use them are done.
    drop(manager);
    drive(codec, driven, shutdown)
}
