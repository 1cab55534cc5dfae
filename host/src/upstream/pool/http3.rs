//! HTTP/3 as a [`PoolProtocol`], on quinn + the `h3` crate's client. Same contract as HTTP/2:
//!
//! - streams are multiplexed up to the peer's QUIC stream limit (and our own
//!   `max_concurrent_streams`). quinn does not tell the peer's limit, so the pool finds it
//!   out: when opening a stream would wait for stream credit while the connection already has
//!   streams open, the connection takes no new stream until one of its streams ends, and the
//!   request goes to another connection (a new one when none has room);
//! - `max_requests_per_connection`, GOAWAY and host drain make a connection drain. The h3
//!   client does not report a GOAWAY as an event: the next stream it refuses to open marks the
//!   connection draining and the request goes to another connection (nothing was sent), and
//!   the peer closes it when done;
//! - a tunnel (an upgrade, or CONNECT) goes as a CONNECT stream: RFC 9220 extended CONNECT
//!   with `:protocol` for an upgrade (only to a peer whose SETTINGS enable it), plain CONNECT
//!   otherwise; its DATA frames are the payload both ways (see [`crate::wire::h3_connect`]).

use super::generic::{Lease, Opened, Pool, PoolProtocol, Ready, StreamLimit};
use super::http2::request_head;
use crate::body::{Body, BoxError};
use crate::upstream::cluster::{Cluster, ConnectionSlot, HostProtocol, RequestSlot};
use crate::upstream::error::UpstreamError;
use crate::upstream::quic;
use crate::upstream::tunnel::TunnelPayload;
use crate::wire::Protocol;
use crate::wire::h3_body::H3Body;
use crate::wire::h3_connect::{self, DataBody};
use bytes::Bytes;
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

/// How many connections a request tries when streams cannot be opened on them.
const MAX_SEND_ATTEMPTS: usize = 4;

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// HTTP/3 connections to one host.
#[derive(Default)]
pub struct Http3 {
    /// The client endpoint (UDP socket) of this pool, made on first use on the worker's
    /// runtime.
    endpoint: Mutex<Option<quinn::Endpoint>>,
}

/// An open HTTP/3 connection; a request takes a copy.
#[derive(Clone)]
pub struct Connection {
    send: SendRequest,
    /// The QUIC connection itself: CONNECT streams are opened on it directly.
    quic: quinn::Connection,
    /// When the connection was set up (the peer's SETTINGS follow shortly).
    opened: Instant,
}

impl PoolProtocol for Http3 {
    const NAME: &'static str = "h3";
    const PROTOCOL: HostProtocol = HostProtocol::Http3;
    /// Never adopted: auto races QUIC from this pool itself.
    type Transport = Infallible;
    type Connection = Connection;
    type Stream = Connection;

    fn configured_streams(cluster: &Cluster) -> u32 {
        cluster.spec.http3.max_concurrent_streams
    }

    async fn open(
        pool: &Arc<Pool<Self>>,
        slot: ConnectionSlot,
        _adopted: Option<Infallible>,
    ) -> Result<Opened<Self>, UpstreamError> {
        let alt_svc = pool.cluster.alt_svc.as_ref();
        let (send, mut driver, quic) = match handshake(pool).await {
            Ok(made) => {
                if let Some(cache) = alt_svc {
                    cache.mark_working(pool.host.addr);
                }
                made
            }
            Err(error) => {
                pool.cluster.stats.cx_connect_fail.inc();
                if let Some(cache) = alt_svc {
                    cache.mark_broken(pool.host.addr);
                }
                return Err(error);
            }
        };
        let driver = async move {
            let error = driver.wait_idle().await;
            if error.is_h3_no_error() {
                Ok(())
            } else {
                Err(error.to_string())
            }
        };
        Ok(Opened::Ready(Ready {
            connection: Connection {
                send,
                quic,
                opened: Instant::now(),
            },
            driver: Box::pin(driver),
            streams: StreamLimit::Assumed(pool.cluster.spec.http3.max_concurrent_streams),
            slot,
        }))
    }

    fn take_stream(connection: &mut Connection) -> Option<Connection> {
        Some(connection.clone())
    }
}

/// This pool's client endpoint, made on first use.
fn endpoint(
    pool: &Pool<Http3>,
    config: &quinn::ClientConfig,
) -> Result<quinn::Endpoint, UpstreamError> {
    let mut endpoint = pool
        .protocol
        .endpoint
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(endpoint) = endpoint.as_ref() {
        return Ok(endpoint.clone());
    }
    let made = quic::client_endpoint(config, pool.host.addr)
        .map_err(|e| pool.connect_error(format!("QUIC client socket: {e}")))?;
    *endpoint = Some(made.clone());
    Ok(made)
}

/// The QUIC handshake and the HTTP/3 setup, within `connect_timeout`.
async fn handshake(
    pool: &Pool<Http3>,
) -> Result<
    (
        SendRequest,
        h3::client::Connection<h3_quinn::Connection, Bytes>,
        quinn::Connection,
    ),
    UpstreamError,
> {
    let cluster = &pool.cluster;
    let Some(config) = &cluster.quic else {
        return Err(UpstreamError::Config {
            cluster: cluster.name().to_owned(),
            reason: "cluster has no QUIC config".into(),
        });
    };
    let endpoint = endpoint(pool, config)?;
    let name = quic::server_name(&cluster.spec, pool.host.addr);
    // Auto: the UDP port the host advertised; explicit HTTP/3: the endpoint itself.
    let target = cluster.h3_address(pool.host.addr).unwrap_or(pool.host.addr);
    let attempt = async {
        let connecting = endpoint
            .connect(target, &name)
            .map_err(|e| pool.connect_error(format!("QUIC connect: {e}")))?;
        let connection = connecting.await.map_err(|e| match e {
            quinn::ConnectionError::TransportError(ref t)
                if (0x100..0x200).contains(&u64::from(t.code)) =>
            {
                UpstreamError::Tls {
                    cluster: cluster.name().to_owned(),
                    host: pool.host.addr.to_string(),
                    reason: e.to_string(),
                }
            }
            other => pool.connect_error(format!("QUIC handshake: {other}")),
        })?;
        let (driver, send) = h3::client::builder()
            .build::<_, _, Bytes>(h3_quinn::Connection::new(connection.clone()))
            .await
            .map_err(|e| pool.connect_error(format!("HTTP/3 setup: {e}")))?;
        Ok((send, driver, connection))
    };
    match tokio::time::timeout(cluster.spec.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => {
            cluster.stats.cx_connect_timeout.inc();
            Err(pool.connect_timeout())
        }
    }
}

impl Pool<Http3> {
    /// Sends `req` on a stream of this pool and returns the response head; the request body
    /// is pumped by a task, and the response body holds `slot` and the stream until done.
    pub async fn send(
        self: &Arc<Self>,
        req: http::Request<Body>,
        slot: RequestSlot,
    ) -> Result<http::Response<Body>, UpstreamError> {
        let (parts, body) = req.into_parts();
        // A tunnel's payload is the stream's body (see `upstream::tunnel`).
        if let Some(payload) = parts
            .extensions
            .get::<TunnelPayload>()
            .and_then(TunnelPayload::take)
        {
            return self.send_tunnel(parts, payload, slot).await;
        }
        let end_of_stream = body.is_end_stream();
        let mut body = Some(body);
        for attempt in 0..MAX_SEND_ATTEMPTS {
            let (mut lease, mut connection) = self.acquire_stream().await?;
            let active = lease.active();
            let mut head = request_head(&parts, "https", self.host.addr)
                .map_err(|reason| self.reset(reason))?;
            *head.version_mut() = http::Version::HTTP_3;
            let opening = connection.send.send_request(head);
            tokio::pin!(opening);
            let first = std::future::poll_fn(|cx| Poll::Ready(opening.as_mut().poll(cx))).await;
            let opened = match first {
                Poll::Ready(opened) => opened,
                Poll::Pending if active > 1 && attempt + 1 < MAX_SEND_ATTEMPTS => {
                    // No stream credit: the peer's limit is reached on this connection.
                    tracing::debug!(id = lease.id(), active, "h3 connection at its stream limit");
                    lease.stream_limit_reached();
                    continue;
                }
                Poll::Pending => opening.await,
            };
            let stream = match opened {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, "h3 stream not opened; retrying on another connection");
                    lease.retire();
                    continue;
                }
            };
            let (send_half, mut recv) = stream.split();
            lease.opened();
            let lease = Arc::new(lease);
            match body.take().filter(|_| !end_of_stream) {
                Some(body) => {
                    tokio::spawn(pump_request_body(body, send_half, lease.clone()));
                }
                None => {
                    let mut send_half = send_half;
                    if let Err(error) = send_half.finish().await {
                        tracing::debug!(%error, "h3 end of request");
                    }
                }
            }
            match recv.recv_response().await {
                Ok(response) => {
                    let (head, ()) = response.into_parts();
                    let hold: Box<dyn Send + Sync> = Box::new((lease, slot));
                    let body = H3Body::new(recv, Some(hold)).await;
                    return Ok(http::Response::from_parts(
                        head,
                        body.map_err(BoxError::from).boxed(),
                    ));
                }
                Err(error) => {
                    self.cluster.stats.rq_reset.inc();
                    return Err(self.reset(error.to_string()));
                }
            }
        }
        self.cluster.stats.rq_reset.inc();
        Err(self.reset("no connection could open a stream".into()))
    }

    /// Sends a tunnel as a CONNECT stream: `:protocol` (RFC 9220) for an upgrade, plain
    /// CONNECT for a CONNECT; `payload` is pumped into its DATA frames, and the response body
    /// is the DATA frames that come back. The stream slot is held until both are done.
    async fn send_tunnel(
        self: &Arc<Self>,
        parts: http::request::Parts,
        payload: Body,
        slot: RequestSlot,
    ) -> Result<http::Response<Body>, UpstreamError> {
        let head =
            request_head(&parts, "https", self.host.addr).map_err(|reason| self.reset(reason))?;
        // The head is built as for HTTP/2 (`request_head`), which carries `:protocol` the h2
        // codec's way; HTTP/3 writes it from the one `wire::Protocol`.
        let protocol = head
            .extensions()
            .get::<h2::ext::Protocol>()
            .map(Protocol::from_h2);
        let fields = h3_connect::request_fields(&head, protocol.as_ref());
        let frame = h3_connect::headers_frame(&fields).map_err(|e| self.reset(e.to_string()))?;
        let (mut lease, connection) = self.acquire_stream().await?;
        if protocol.is_some() && !peer_allows_extended_connect(&connection).await {
            self.cluster.stats.rq_reset.inc();
            return Err(self.reset(
                "the upstream does not accept extended CONNECT over HTTP/3 (RFC 9220): its SETTINGS lack SETTINGS_ENABLE_CONNECT_PROTOCOL (on weir or Envoy: http3_protocol_options.allow_extended_connect)".into(),
            ));
        }
        let (mut send_stream, recv_stream) = match connection.quic.open_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                lease.retire();
                self.cluster.stats.rq_reset.inc();
                return Err(self.reset(format!("QUIC stream not opened: {error}")));
            }
        };
        lease.opened();
        let lease = Arc::new(lease);
        if let Err(error) = send_stream.write_all(&frame).await {
            self.cluster.stats.rq_reset.inc();
            return Err(self.reset(format!("CONNECT head not sent: {error}")));
        }
        let pump_lease = lease.clone();
        tokio::spawn(async move {
            if let Err(error) = h3_connect::pump_data(payload, &mut send_stream).await {
                tracing::debug!(%error, "h3 tunnel payload ended with an error; resetting the stream");
                let code = quinn::VarInt::from_u64(h3::error::Code::H3_REQUEST_CANCELLED.value());
                if let Ok(code) = code {
                    let _ = send_stream.reset(code);
                }
            }
            drop(pump_lease);
        });
        let mut frames = h3_connect::frames(recv_stream);
        let response = match h3_connect::read_response(&mut frames).await {
            Ok(response) => response,
            Err(error) => {
                self.cluster.stats.rq_reset.inc();
                return Err(self.reset(error.to_string()));
            }
        };
        let (head, ()) = response.into_parts();
        let hold: Box<dyn Send + Sync> = Box::new((lease, slot));
        let body = DataBody::new(frames, Some(hold)).boxed();
        Ok(http::Response::from_parts(head, body))
    }
}

/// Whether the peer's SETTINGS enable extended CONNECT. They come on the peer's control stream
/// shortly after the handshake, and h3 reports defaults (off) until then, so a connection
/// younger than a few round trips waits for them.
async fn peer_allows_extended_connect(connection: &Connection) -> bool {
    use h3::ConnectionState as _;
    let settled = connection.opened + (connection.quic.rtt() * 4).max(Duration::from_millis(100));
    loop {
        if connection.send.settings().enable_extended_connect() {
            return true;
        }
        if Instant::now() >= settled || connection.quic.close_reason().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Copies the request body into the stream (QUIC flow control applies inside `send_data`),
/// then its trailers or the end of the stream.
async fn pump_request_body(
    mut body: Body,
    mut stream: h3::client::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    lease: Arc<Lease<Http3>>,
) {
    loop {
        match body.frame().await {
            None => {
                if let Err(error) = stream.finish().await {
                    tracing::debug!(%error, "h3 end of request body");
                }
                break;
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "request body failed; resetting the upstream stream");
                stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                break;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if let Err(error) = stream.send_data(data).await {
                        tracing::debug!(%error, "h3 request body");
                        break;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        // h3 0.0.8's send_trailers does not end the stream: finish after.
                        let sent = match stream.send_trailers(trailers).await {
                            Ok(()) => stream.finish().await,
                            Err(error) => Err(error),
                        };
                        if let Err(error) = sent {
                            tracing::debug!(%error, "h3 request trailers");
                        }
                        break;
                    }
                }
            },
        }
    }
    drop(lease);
}
