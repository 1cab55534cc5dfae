//! Serving one downstream connection with hyper: codec choice (ALPN, `codec_type`, HTTP/2
//! preface detection), graceful drain on shutdown, idle timeout, connection stats.

use super::tracked::{Activity, StreamGuard, TrackedBody};
use super::{ConnectionInfo, CurrentManager};
use crate::config::HttpManagerConfig;
use crate::config::schema::CodecType;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// How often an idle connection checks its clock.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The codec setups a listener may need, built once: HTTP/1.1 only, HTTP/2 only, and AUTO
/// (HTTP/2 when the connection starts with its preface, else HTTP/1.1).
pub(super) struct Codecs {
    auto: auto::Builder<TokioExecutor>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Codecs {
    pub(super) fn new(config: &HttpManagerConfig) -> Codecs {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .max_headers(config.max_headers_count)
            .header_read_timeout(config.request_headers_timeout);
        let mut auto_http2 = auto.http2();
        auto_http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.http2.max_concurrent_streams)
            .initial_stream_window_size(config.http2.initial_stream_window_size)
            .initial_connection_window_size(config.http2.initial_connection_window_size);
        if config.allow_connect {
            auto_http2.enable_connect_protocol();
        }
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .max_headers(config.max_headers_count)
            .header_read_timeout(config.request_headers_timeout);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.http2.max_concurrent_streams)
            .initial_stream_window_size(config.http2.initial_stream_window_size)
            .initial_connection_window_size(config.http2.initial_connection_window_size);
        if config.allow_connect {
            http2.enable_connect_protocol();
        }
        Codecs { auto, http1, http2 }
    }

    /// Starts serving `io` with the codec `codec_type` and ALPN call for.
    fn serve<I, S>(&self, codec: CodecType, tls: &ConnectionTls, io: I, service: S) -> Serving<I, S>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<TrackedBody>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let io = TokioIo::new(io);
        match (codec, tls.alpn.as_deref()) {
            (CodecType::HTTP1, _) | (CodecType::AUTO, Some(b"http/1.1")) => Serving::Http1(
                Box::pin(self.http1.serve_connection(io, service).with_upgrades()),
            ),
            (CodecType::HTTP2, _) | (CodecType::AUTO, Some(b"h2")) => {
                Serving::Http2(Box::pin(self.http2.serve_connection(io, service)))
            }
            // HTTP3 is for QUIC listeners only (the config refuses it on TCP).
            (CodecType::AUTO | CodecType::HTTP3, _) => Serving::Auto(Box::pin(
                self.auto
                    .serve_connection_with_upgrades(io, service)
                    .into_owned(),
            )),
        }
    }
}

/// A connection being served by one of the codecs.
enum Serving<I, S>
where
    S: Service<Request<Incoming>, Response = Response<TrackedBody>, Error = Infallible>,
{
    Http1(Pin<Box<http1::UpgradeableConnection<TokioIo<I>, S>>>),
    Http2(Pin<Box<http2::Connection<TokioIo<I>, S, TokioExecutor>>>),
    Auto(Pin<Box<auto::UpgradeableConnection<'static, TokioIo<I>, S, TokioExecutor>>>),
}

impl<I, S> Serving<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<TrackedBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    /// Stops taking new requests; in-flight ones finish, then the connection closes.
    fn graceful_shutdown(&mut self) {
        match self {
            Serving::Http1(connection) => connection.as_mut().graceful_shutdown(),
            Serving::Http2(connection) => connection.as_mut().graceful_shutdown(),
            Serving::Auto(connection) => connection.as_mut().graceful_shutdown(),
        }
    }

    /// Serves until the connection ends.
    async fn run(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match self {
            Serving::Http1(connection) => connection.as_mut().await.map_err(Into::into),
            Serving::Http2(connection) => connection.as_mut().await.map_err(Into::into),
            Serving::Auto(connection) => connection.as_mut().await,
        }
    }
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
    let activity = Activity::new();
    let counted_protocol = Arc::new(AtomicBool::new(false));
    let service = {
        let activity = activity.clone();
        service_fn(move |request: hyper::Request<Incoming>| {
            let manager = current.load_full();
            let guard = StreamGuard::start(activity.clone(), manager.stats.clone());
            if !counted_protocol.swap(true, Ordering::Relaxed) {
                if request.version() == http::Version::HTTP_2 {
                    manager.stats.cx_http2_total.inc();
                } else {
                    manager.stats.cx_http1_total.inc();
                }
            }
            // Resolved now, while the request is here: its response gets that virtual
            // host's response_headers_to_add.
            let vhost = super::headers::request_host(&request)
                .and_then(|host| manager.config.routes.virtual_host_id(host));
            async move {
                // Boxed: the stream's future is large, and hyper moves the service future
                // into a spawned task per h2 stream; a pointer is cheaper to move than the
                // whole state machine (measured: memmove was 10% of a h2c profile).
                let mut response = Box::pin(manager.handle(request, &info)).await;
                manager
                    .config
                    .routes
                    .add_response_headers(vhost, response.headers_mut());
                Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, guard)))
            }
        })
    };
    let mut connection = manager
        .codecs
        .serve(manager.config.codec, &tls, io, service);
    let idle_timeout = manager.config.idle_timeout;
    let max_duration = manager
        .config
        .max_connection_duration
        .map(|d| tokio::time::Instant::now() + d);
    // Not kept for the connection's life: a reload may replace it, and its VMs and pools
    // should go once the streams that use them are done.
    drop(manager);
    let mut draining = *shutdown.borrow();
    if draining {
        connection.graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.run() => {
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
                    connection.graceful_shutdown();
                }
            }
            () = tokio::time::sleep(IDLE_CHECK), if !draining && (idle_timeout.is_some() || max_duration.is_some()) => {
                let idle = matches!((idle_timeout, activity.idle_for()), (Some(limit), Some(idle)) if idle >= limit);
                let too_old = max_duration.is_some_and(|deadline| tokio::time::Instant::now() >= deadline);
                if idle || too_old {
                    tracing::debug!(peer = %info.remote, idle, too_old, "closing downstream connection");
                    draining = true;
                    connection.graceful_shutdown();
                }
            }
        }
    }
    stats.cx_active.dec();
}
