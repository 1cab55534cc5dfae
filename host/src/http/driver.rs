//! The downstream connection driver: what every connection and every stream gets, whatever
//! its codec. The codecs ([`super::server`] for HTTP/1.1 on hyper and HTTP/2 on the `h2`
//! crate, [`super::h3`] for HTTP/3 on `h3` + quinn) only read requests, write responses and
//! say GOAWAY their own way; the driver owns:
//!
//! - the connection's stats ([`ConnectionCount`]: `downstream_cx_total`, `_active`,
//!   `_ssl_total`);
//! - its limits ([`ConnectionLimits`]: `idle_timeout`, `max_connection_duration`,
//!   `request_headers_timeout`), checked on one clock ([`LIMITS_CHECK`]);
//! - drain on shutdown and reload, and the connection's end ([`drive`], which runs the
//!   codec's adapter under all of the above);
//! - every stream's answer ([`answer`]): the stream phases ([`super::phases`]), then the
//!   response head's `date` ([`finish_response_head`]);
//! - each stream's way in and out, whatever its codec ([`Connection::stream`]): the manager
//!   in force when it starts, `max_requests_per_connection`, `downstream_rq_total` and the
//!   protocol counted once, the overload action `disable_http_keepalive`, and the stream's
//!   accounting riding on its body ([`TrackedBody`]: `downstream_rq_active`, the idle
//!   clock, `stream_idle_timeout` on the response body).
//!
//! A tunnel (an `Upgrade`, a CONNECT on any version) leaves the driver one way: its codec
//! put a [`crate::wire::handoff::TunnelHandoff`] on the request, which the connection manager
//! takes the tunnel's downstream end from once it has set the tunnel up.
//!
//! Where the codecs differ, they ask the head ([`WireHead`]): a connection that carries a
//! `connection` header (HTTP/1.x) is told `connection: close`; HTTP/2 and HTTP/3 drain
//! (GOAWAY).

use super::tracked::{Activity, StreamGuard, TrackedBody};
use super::{CurrentManager, HttpManager, headers};
use crate::body::BoxError;
use crate::snapshot::HttpManagerConfig;
use crate::stats::HttpStats;
use crate::wire::ConnectionInfo;
use crate::wire::{ProtocolFamily, WireHead};
use bytes::Bytes;
use http::{Request, Response};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How often a connection checks its limits.
const LIMITS_CHECK: Duration = Duration::from_secs(1);

/// A downstream connection counted in its listener's stats while it lives: `cx_total` and
/// `cx_ssl_total` when it opens, `cx_active` until it is dropped.
pub(super) struct ConnectionCount {
    stats: Arc<HttpStats>,
}

impl ConnectionCount {
    /// Counts a connection opening (`tls`: it is TLS, or QUIC).
    pub(super) fn open(stats: &Arc<HttpStats>, tls: bool) -> ConnectionCount {
        stats.cx_total.inc();
        stats.cx_active.inc();
        if tls {
            stats.cx_ssl_total.inc();
        }
        ConnectionCount {
            stats: stats.clone(),
        }
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.stats.cx_active.dec();
    }
}

/// Whether a change of the worker's shutdown signal (`changed`, the result of waiting on it)
/// asks the connection to drain. A dropped sender means the worker is gone: drain as on
/// shutdown.
fn drain_requested(
    changed: Result<(), watch::error::RecvError>,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    changed.is_err() || *shutdown.borrow()
}

/// The limits a connection is held to, from the manager in force when it was accepted
/// (`common_http_protocol_options` and `request_headers_timeout`).
pub(super) struct ConnectionLimits {
    idle_timeout: Option<Duration>,
    headers_timeout: Option<Duration>,
    deadline: Option<tokio::time::Instant>,
}

/// What [`ConnectionLimits::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LimitCheck {
    /// Within its limits.
    Fine,
    /// A request head still not whole after `request_headers_timeout`: the client is slow
    /// or trickling on purpose; the connection closes now.
    HeadersTimeout,
    /// Idle for `idle_timeout`, or older than `max_connection_duration`: it drains
    /// (in-flight streams finish).
    Drain { idle: bool, too_old: bool },
}

impl ConnectionLimits {
    /// The limits of `config`, the connection's age counted from now.
    pub(super) fn new(config: &HttpManagerConfig) -> ConnectionLimits {
        ConnectionLimits {
            idle_timeout: config.idle_timeout,
            headers_timeout: config.request_headers_timeout,
            deadline: config
                .max_connection_duration
                .map(|d| tokio::time::Instant::now() + d),
        }
    }

    /// Whether there is any limit to check.
    pub(super) fn any(&self) -> bool {
        self.idle_timeout.is_some() || self.deadline.is_some() || self.headers_timeout.is_some()
    }

    /// Checks the connection's `activity` against the limits; one that is `draining`
    /// already is only held to `request_headers_timeout`.
    pub(super) fn check(&self, activity: &Activity, draining: bool) -> LimitCheck {
        if let Some(limit) = self.headers_timeout
            && activity
                .head_arriving_for()
                .is_some_and(|arriving| arriving >= limit)
        {
            return LimitCheck::HeadersTimeout;
        }
        if draining {
            return LimitCheck::Fine;
        }
        let idle = matches!((self.idle_timeout, activity.idle_for()), (Some(limit), Some(idle)) if idle >= limit);
        let too_old = self
            .deadline
            .is_some_and(|deadline| tokio::time::Instant::now() >= deadline);
        if idle || too_old {
            LimitCheck::Drain { idle, too_old }
        } else {
            LimitCheck::Fine
        }
    }
}

/// One downstream connection as the driver holds it while its codec serves it.
pub(super) struct Driven {
    /// The peer, for logs.
    pub peer: std::net::SocketAddr,
    /// The listener's stats, from the manager in force when it was accepted.
    pub stats: Arc<HttpStats>,
    /// Counted in the stats until the drive ends.
    pub count: ConnectionCount,
    /// Its limits.
    pub limits: ConnectionLimits,
    /// What it knows about its streams.
    pub activity: Arc<Activity>,
    /// Turning it true drains it: the codec stops taking streams (HTTP/1.1: `connection:
    /// close` after the response in flight; HTTP/2 and HTTP/3: GOAWAY) and ends once those
    /// in flight are done.
    pub drain: Arc<watch::Sender<bool>>,
}

/// Drives one downstream connection to its end, whatever its codec: `codec` (the adapter
/// serving it, which drains when [`Driven::drain`] turns true) runs until the peer closes,
/// an error, or its drain completes; `shutdown` turning true (the worker stops, or a reload
/// retires the listener) and the connection's limits drain it; a request head that takes
/// longer than `request_headers_timeout` closes it at once.
pub(super) async fn drive<C>(codec: C, driven: Driven, mut shutdown: watch::Receiver<bool>)
where
    C: Future<Output = Result<(), BoxError>>,
{
    // Read through `driven`, not taken apart into locals: those would be a second copy of
    // it in this future, kept for the connection's life.
    let mut codec = std::pin::pin!(codec);
    let peer = driven.peer;
    let stats = &driven.stats;
    let limits = &driven.limits;
    let activity = &driven.activity;
    let drain = &driven.drain;
    let mut draining = *drain.borrow();
    loop {
        tokio::select! {
            result = codec.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "downstream connection ended with an error");
                    stats.cx_protocol_error.inc();
                }
                break;
            }
            changed = shutdown.changed(), if !draining => {
                if drain_requested(changed, &shutdown) {
                    draining = true;
                    drain.send_replace(true);
                }
            }
            () = tokio::time::sleep(LIMITS_CHECK), if limits.any() => {
                match limits.check(activity, draining) {
                    LimitCheck::Fine => {}
                    LimitCheck::HeadersTimeout => {
                        tracing::debug!(%peer, "request headers timeout; closing");
                        stats.rq_header_timeout.inc();
                        break;
                    }
                    LimitCheck::Drain { idle, too_old } => {
                        tracing::debug!(%peer, idle, too_old, "draining downstream connection");
                        draining = true;
                        drain.send_replace(true);
                    }
                }
            }
        }
    }
    drop(driven.count);
}

/// A stream's answer, whatever its codec: the stream phases ([`super::phases`]), then the
/// response head as it leaves for the wire ([`finish_response_head`]).
pub(super) async fn answer<B>(
    manager: &HttpManager,
    request: Request<B>,
    info: &ConnectionInfo,
) -> Response<crate::body::Body>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    // Not boxed here: the stream phases box their large state where it is made (see
    // `phases::run_stream`), so what is left inline is small to move.
    let mut response = manager.handle(request, info).await;
    finish_response_head(response.headers_mut());
    response
}

/// The response head as it leaves for the wire, whatever the codec: a `date` when it has
/// none (RFC 9110 6.6.1: an origin with a clock sends one; an upstream's is kept).
fn finish_response_head(headers: &mut http::HeaderMap) {
    if !headers.contains_key(http::header::DATE) {
        headers.insert(http::header::DATE, headers::date_now());
    }
}

/// What every stream of one connection is handled with, whatever its codec.
#[derive(Clone)]
pub(super) struct Connection {
    current: Arc<CurrentManager>,
    activity: Arc<Activity>,
    /// Whether the connection's protocol (from its first request) is counted yet.
    counted_protocol: Arc<AtomicBool>,
    /// Requests started on the connection, for `max_requests_per_connection`.
    requests: Arc<AtomicU32>,
    /// Turning it true drains the connection (HTTP/2 and HTTP/3: GOAWAY; HTTP/1.1:
    /// `connection: close` after the response in flight; in-flight streams finish).
    drain: Arc<watch::Sender<bool>>,
    info: ConnectionInfo,
    /// Turns true when the connection's listener is retired (see
    /// [`Connection::closing_on`]); `None` where no one asks.
    closing: Option<watch::Receiver<bool>>,
}

impl Connection {
    /// A connection `info` whose streams run on the manager `current` holds when each
    /// starts; `drain` drains it.
    pub(super) fn new(
        current: Arc<CurrentManager>,
        info: ConnectionInfo,
        drain: Arc<watch::Sender<bool>>,
    ) -> Connection {
        Connection {
            current,
            activity: Activity::new(),
            counted_protocol: Arc::new(AtomicBool::new(false)),
            requests: Arc::new(AtomicU32::new(0)),
            drain,
            info,
            closing: None,
        }
    }

    /// The connection, whose HTTP/1.x responses say `connection: close` once `closing` turns
    /// true: a retired listener's connections leave after their next response, before the
    /// drain closes those still idle (closing a keep-alive connection between requests races
    /// the client's next one; a response that says close does not).
    pub(super) fn closing_on(mut self, closing: Option<watch::Receiver<bool>>) -> Connection {
        self.closing = closing;
        self
    }

    /// What the connection knows about its streams (its idle and head clocks).
    pub(super) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Counts the connection in its protocol's `downstream_cx_http*_total` unless it is
    /// counted already: at its first stream, or before that where the codec knows the
    /// protocol from the start (HTTP/3: Envoy counts a QUIC connection when it is made,
    /// whether or not a request follows).
    pub(super) fn count_protocol(&self, stats: &HttpStats, head: &impl WireHead) {
        if self.counted_protocol.swap(true, Ordering::Relaxed) {
            return;
        }
        crate::access_log::listener::note_protocol(head.protocol_name());
        match head.protocol_family() {
            ProtocolFamily::Http1 => stats.cx_http1_total.inc(),
            ProtocolFamily::Http2 => stats.cx_http2_total.inc(),
            ProtocolFamily::Http3 => stats.cx_http3_total.inc(),
        }
    }

    /// Counts how an HTTP/1.1 connection that hyper ended with `error` left its stream, as
    /// Envoy 1.40's HTTP/1.1 codec counts it, and says whether the connection itself failed
    /// (the driver counts `downstream_cx_protocol_error` then):
    ///
    /// - a request hyper could not parse (it answered 400, or 431 for a head too large): a
    ///   stream as Envoy's codec opens one for it (`downstream_rq_total`, the connection's
    ///   `downstream_cx_http1_total`, the answer's class), reset by the connection's close
    ///   (`downstream_rq_rx_reset`); a protocol error;
    /// - anything else (the client closed or reset the connection, a write failed): the
    ///   stream in flight, or the request head arriving, is reset by the client
    ///   (`downstream_rq_rx_reset`; a head never whole is a request to Envoy, counted in
    ///   `downstream_rq_total`); not a protocol error.
    ///
    /// Only on a connection's failing end: a request served in full costs nothing here.
    pub(super) fn http1_ended_by(&self, error: hyper::Error) -> Result<(), BoxError> {
        let manager = self.current.load();
        let stats = &manager.stats;
        if error.is_parse() {
            self.count_http1(stats);
            stats.rq_total.inc();
            if !error.is_parse_version_h2() {
                stats.count_response(if error.is_parse_too_large() { 431 } else { 400 });
            }
            stats.rq_rx_reset.inc();
            return Err(error.into());
        }
        tracing::debug!(peer = %self.info.remote, %error, "HTTP/1.1 connection ended with an error");
        if self.activity.in_flight() {
            stats.rq_rx_reset.inc();
        } else if self.activity.head_arriving_for().is_some() {
            self.count_http1(stats);
            stats.rq_total.inc();
            stats.rq_rx_reset.inc();
        }
        Ok(())
    }

    /// Counts the connection in `downstream_cx_http1_total` unless it is counted already
    /// (a request that hyper refused, or one cut before its head was whole: no head to
    /// read the protocol from).
    fn count_http1(&self, stats: &HttpStats) {
        if !self.counted_protocol.swap(true, Ordering::Relaxed) {
            crate::access_log::listener::note_protocol("HTTP/1.1");
            stats.cx_http1_total.inc();
        }
    }

    /// Answers `request` on the manager in force now; the response's body holds the
    /// stream's accounting until it is written.
    pub(super) fn stream<B>(
        &self,
        mut request: Request<B>,
    ) -> impl Future<Output = Response<TrackedBody>> + Send + use<B>
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let manager = self.current.load_full();
        let guard = StreamGuard::start(self.activity.clone(), manager.clone());
        if let Some(max) = manager.config.max_requests_per_connection {
            let started = self
                .requests
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if started == max {
                // This one is served; the connection takes no more (as Envoy: approximate on
                // HTTP/2 and HTTP/3, where streams already open finish after the GOAWAY).
                manager.stats.cx_max_requests_reached.inc();
                self.drain.send_replace(true);
            }
        }
        self.count_protocol(&manager.stats, &request);
        // Here, when the codec starts the stream, as Envoy counts it: a stream whose
        // connection ends before its answer is begun (an HTTP/1.1 client that sent its head
        // and left) is a request too.
        manager.stats.rq_total.inc();
        // A copy and, on TLS, one reference count (the SNI).
        let info = self.info.clone();
        let drain = self.drain.clone();
        let version = request.version();
        let tunnel = *request.method() == http::Method::CONNECT;
        let http10 = if self.activity.take_refused() {
            // Its line named HTTP/1.0 or 0.9; the codec read it as HTTP/1.1 (see
            // `crate::wire::request_framing`).
            super::http10::Http10Verdict::Refuse
        } else {
            super::http10::screen(&manager.config.http10, &mut request)
        };
        let close_http10 = super::http10::wants_close(&request);
        // Read at the response only where it can change the response (an HTTP/1.x one).
        let closing = self
            .closing
            .as_ref()
            .filter(|_| version.carries_connection_header() && !tunnel)
            .cloned();
        async move {
            let mut response = match http10 {
                super::http10::Http10Verdict::Serve => answer(&manager, request, &info).await,
                super::http10::Http10Verdict::Refuse => {
                    drop(request);
                    let mut refused = manager.refuse_http10(&info);
                    finish_response_head(refused.headers_mut());
                    refused
                }
            };
            if version == http::Version::HTTP_10
                && (http10 == super::http10::Http10Verdict::Refuse || close_http10)
            {
                // Said so, or hyper (which answers an HTTP/1.0 request in HTTP/1.0) would add
                // `keep-alive` to a `close` for a client that asked to keep the connection.
                *response.version_mut() = http::Version::HTTP_10;
            }
            if close_http10 && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                // As Envoy: an HTTP/1.0 client that did not ask to keep the connection is
                // told it closes.
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            if crate::overload::disable_http_keepalive() && !tunnel {
                disable_keepalive(&manager, version, &mut response, &drain);
            } else if crate::server_state::health_check_failed() && !tunnel {
                drain_close(version, &mut response, &drain);
            }
            if closing.is_some_and(|closing| *closing.borrow())
                && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
            {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            let idle = response
                .extensions()
                .get::<super::stream::RouteIdleTimeout>()
                .map_or(manager.config.stream_idle_timeout, |route| route.0);
            let http1 = version.carries_connection_header();
            response.map(|body| TrackedBody::new(body, guard, idle, http1))
        }
    }
}

/// The overload action `disable_http_keepalive`, as Envoy applies it: an HTTP/1.x response
/// says `connection: close` (hyper then closes the connection after it); an HTTP/2 or
/// HTTP/3 connection drains (GOAWAY, in-flight streams finish; those versions forbid the
/// header). A switch of protocols (101) is left alone: the connection is the tunnel.
fn disable_keepalive<B>(
    manager: &HttpManager,
    version: http::Version,
    response: &mut Response<B>,
    drain: &watch::Sender<bool>,
) {
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    if !version.carries_connection_header() {
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

/// Envoy's drain close while the server fails its health checks (`POST
/// /healthcheck/fail`): the connection closes after this response, as with
/// [`disable_keepalive`], without its overload stat.
fn drain_close<B>(version: http::Version, response: &mut Response<B>, drain: &watch::Sender<bool>) {
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    if !version.carries_connection_header() {
        drain.send_replace(true);
        return;
    }
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_head_gets_a_date_once_and_keeps_the_upstreams() {
        let mut headers = http::HeaderMap::new();
        finish_response_head(&mut headers);
        finish_response_head(&mut headers);
        assert_eq!(headers.get_all(http::header::DATE).iter().count(), 1);

        let upstream = http::HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::DATE, upstream.clone());
        finish_response_head(&mut headers);
        assert_eq!(headers.get(http::header::DATE), Some(&upstream));
    }

    #[tokio::test(start_paused = true)]
    async fn limits_drain_an_old_connection_unless_it_drains_already() {
        let limits = ConnectionLimits {
            idle_timeout: Some(Duration::from_secs(10)),
            headers_timeout: None,
            deadline: Some(tokio::time::Instant::now() + Duration::from_secs(100)),
        };
        assert!(limits.any());
        let activity = Activity::new();
        assert_eq!(limits.check(&activity, false), LimitCheck::Fine);
        tokio::time::advance(Duration::from_secs(101)).await;
        assert!(matches!(
            limits.check(&activity, false),
            LimitCheck::Drain { too_old: true, .. }
        ));
        assert_eq!(
            limits.check(&activity, true),
            LimitCheck::Fine,
            "draining already"
        );
        let none = ConnectionLimits {
            idle_timeout: None,
            headers_timeout: None,
            deadline: None,
        };
        assert!(!none.any());
        assert_eq!(none.check(&activity, false), LimitCheck::Fine);
    }
}
