//! Serving one downstream connection: codec choice (ALPN, `codec_type`, HTTP/2 preface
//! detection), graceful drain on shutdown, idle timeout, connection stats. HTTP/1.1 is
//! hyper's; HTTP/2 is weir's own codec on the `h2` crate ([`super::h2`]).

use super::h2::{self as h2_codec};
use super::prefixed::Prefixed;
use super::tracked::{Activity, StreamGuard, TrackedBody};
use super::{ConnectionInfo, CurrentManager};
use crate::body::BoxError;
use crate::config::HttpManagerConfig;
use crate::config::schema::CodecType;
use bytes::Bytes;
use http::{Request, Response};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

/// How often an idle connection checks its clock.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What a client speaking HTTP/2 with prior knowledge sends first (RFC 9113 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection being served, to its end.
type Serving = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// The codec setups a listener may need, built once: HTTP/1.1 (hyper) and HTTP/2 (`h2`).
pub(super) struct Codecs {
    http1: http1::Builder,
    http2: h2::server::Builder,
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
        streams: Streams,
        limits: h2_codec::Limits,
        drain: watch::Receiver<bool>,
    ) -> Serving
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http1 = self.http1.clone();
        let http2 = self.http2.clone();
        let clock = streams.activity.clone();
        match (codec, tls.alpn.as_deref()) {
            (CodecType::HTTP1, _) | (CodecType::AUTO, Some(b"http/1.1")) => {
                let io = Prefixed::new(Bytes::new(), io).with_head_clock(clock);
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
                match sniffed {
                    (io, true) => serve_http2(http2, io, streams, limits, drain).await,
                    (io, false) => {
                        serve_http1(http1, io.with_head_clock(clock), streams, drain).await
                    }
                }
            }),
        }
    }
}

/// Serves HTTP/1.1 with hyper (upgrades and CONNECT hand the connection over).
async fn serve_http1<I>(
    builder: http1::Builder,
    io: I,
    streams: Streams,
    mut drain: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let handled = streams.handle(request);
        async move { Ok::<_, Infallible>(handled.await) }
    });
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result.map_err(Into::into),
        _ = drain.wait_for(|drain| *drain) => connection.as_mut().graceful_shutdown(),
    }
    connection.await.map_err(Into::into)
}

/// Serves HTTP/2 with weir's codec.
async fn serve_http2<I>(
    builder: h2::server::Builder,
    io: I,
    streams: Streams,
    limits: h2_codec::Limits,
    drain: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handle = move |request| streams.handle(request);
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

/// What every stream of one connection is handled with, whatever its codec.
#[derive(Clone)]
struct Streams {
    current: Arc<CurrentManager>,
    activity: Arc<Activity>,
    /// Whether the connection's protocol (from its first request) is counted yet.
    counted_protocol: Arc<AtomicBool>,
    /// Requests started on the connection, for `max_requests_per_connection`.
    requests: Arc<AtomicU32>,
    /// Turning it true drains the connection (HTTP/2: GOAWAY; HTTP/1.1: `connection: close`
    /// after the response in flight; in-flight streams finish).
    drain: Arc<watch::Sender<bool>>,
    info: ConnectionInfo,
}

impl Streams {
    /// Answers `request` on the manager in force now; the response's body holds the
    /// stream's accounting until it is written.
    fn handle<B>(
        &self,
        request: Request<B>,
    ) -> impl Future<Output = Response<TrackedBody>> + Send + use<B>
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let manager = self.current.load_full();
        let guard = StreamGuard::start(self.activity.clone(), manager.stats.clone());
        if let Some(max) = manager.config.max_requests_per_connection {
            let started = self
                .requests
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if started == max {
                // This one is served; the connection takes no more (as Envoy: approximate on
                // HTTP/2, where streams already open finish).
                manager.stats.cx_max_requests_reached.inc();
                self.drain.send_replace(true);
            }
        }
        if !self.counted_protocol.swap(true, Ordering::Relaxed) {
            if request.version() == http::Version::HTTP_2 {
                manager.stats.cx_http2_total.inc();
            } else {
                manager.stats.cx_http1_total.inc();
            }
        }
        // A copy and, on TLS, one reference count (the SNI).
        let info = self.info.clone();
        let drain = self.drain.clone();
        let version = request.version();
        let tunnel = *request.method() == http::Method::CONNECT;
        async move {
            // Boxed: the stream's future is large, and each h2 stream's future is moved into
            // a spawned task; a pointer is cheaper to move than the whole state machine
            // (measured: memmove was 10% of a h2c profile).
            let mut response = Box::pin(manager.handle(request, &info)).await;
            if crate::overload::disable_http_keepalive() && !tunnel {
                disable_keepalive(&manager, version, &mut response, &drain);
            }
            let idle = response
                .extensions()
                .get::<super::stream::RouteIdleTimeout>()
                .map_or(manager.config.stream_idle_timeout, |route| route.0);
            response.map(|body| TrackedBody::new(body, guard, idle))
        }
    }
}

/// The overload action `disable_http_keepalive`, as Envoy applies it: an HTTP/1.x response
/// says `connection: close` (hyper then closes the connection after it); an HTTP/2
/// connection drains (GOAWAY, in-flight streams finish). A switch of protocols (101) is left
/// alone: the connection is the tunnel.
fn disable_keepalive<B>(
    manager: &super::HttpManager,
    version: http::Version,
    response: &mut Response<B>,
    drain: &watch::Sender<bool>,
) {
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    if version == http::Version::HTTP_2 {
        if !drain.send_replace(true) {
            manager.stats.cx_overload_disable_keepalive.inc();
        }
        return;
    }
    manager.stats.cx_overload_disable_keepalive.inc();
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
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
pub async fn serve_connection<I>(
    current: Arc<CurrentManager>,
    io: I,
    info: ConnectionInfo,
    tls: ConnectionTls,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let manager = current.load_full();
    let stats = manager.stats.clone();
    stats.cx_total.inc();
    stats.cx_active.inc();
    if tls.tls {
        stats.cx_ssl_total.inc();
    }
    let (drain, drained) = watch::channel(*shutdown.borrow());
    let drain = Arc::new(drain);
    let mut draining = *drained.borrow();
    let streams = Streams {
        current: current.clone(),
        activity: Activity::new(),
        counted_protocol: Arc::new(AtomicBool::new(false)),
        requests: Arc::new(AtomicU32::new(0)),
        drain: drain.clone(),
        info: info.clone(),
    };
    let activity = streams.activity.clone();
    let limits = h2_codec::Limits {
        abuse: manager.config.abuse,
        stats: stats.clone(),
    };
    let mut connection =
        manager
            .codecs
            .serve(manager.config.codec, &tls, io, streams, limits, drained);
    let idle_timeout = manager.config.idle_timeout;
    let headers_timeout = manager.config.request_headers_timeout;
    let max_duration = manager
        .config
        .max_connection_duration
        .map(|d| tokio::time::Instant::now() + d);
    // Not kept for the connection's life: a reload may replace it, and its VMs and pools
    // should go once the streams that use them are done.
    drop(manager);
    loop {
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(peer = %info.remote, %error, "downstream connection ended with an error");
                    stats.cx_protocol_error.inc();
                }
                break;
            }
            changed = shutdown.changed(), if !draining => {
                // A dropped sender means the worker is gone: drain as on shutdown.
                if changed.is_err() || *shutdown.borrow() {
                    draining = true;
                    drain.send_replace(true);
                }
            }
            () = tokio::time::sleep(IDLE_CHECK), if idle_timeout.is_some() || max_duration.is_some() || headers_timeout.is_some() => {
                if let Some(limit) = headers_timeout
                    && activity.head_arriving_for().is_some_and(|arriving| arriving >= limit)
                {
                    // A head still not whole: the client is slow or trickling on purpose.
                    tracing::debug!(peer = %info.remote, "request headers timeout; closing");
                    stats.rq_header_timeout.inc();
                    break;
                }
                if draining {
                    continue;
                }
                let idle = matches!((idle_timeout, activity.idle_for()), (Some(limit), Some(idle)) if idle >= limit);
                let too_old = max_duration.is_some_and(|deadline| tokio::time::Instant::now() >= deadline);
                if idle || too_old {
                    tracing::debug!(peer = %info.remote, idle, too_old, "closing downstream connection");
                    draining = true;
                    drain.send_replace(true);
                }
            }
        }
    }
    stats.cx_active.dec();
}
