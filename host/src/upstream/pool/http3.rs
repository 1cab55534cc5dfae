//! One worker's HTTP/3 connections to one host, on quinn + the `h3` crate's client. Same
//! contract as the HTTP/2 pool:
//!
//! - streams are multiplexed up to the peer's QUIC stream limit (and our own
//!   `max_concurrent_streams`). quinn does not tell the peer's limit, so the pool finds it
//!   out: when opening a stream would wait for stream credit while the connection already has
//!   streams open, the connection is marked busy until one of its streams ends, and the
//!   request goes to another connection (a new one when none has room);
//! - `max_requests_per_connection`, GOAWAY and host drain make a connection drain: no new
//!   streams, open ones finish, then it closes. The h3 client does not report a GOAWAY as an
//!   event: the next stream it refuses to open marks the connection draining and the request
//!   goes to another connection (nothing was sent), and the peer closes it when done;
//! - circuit breakers through the cluster's slots, pending waits through [`PendingWait`],
//!   `cx_http3_total` and the other connection stats as for h2;
//! - a tunnel (an upgrade, or CONNECT) goes as a CONNECT stream: RFC 9220 extended CONNECT
//!   with `:protocol` for an upgrade (only to a peer whose SETTINGS enable it), plain CONNECT
//!   otherwise; its DATA frames are the payload both ways (see [`crate::wire::h3_connect`]).

use super::http2::request_head;
use super::lifecycle::{self, Verdict, sleep_until_some};
use super::wait::PendingWait;
use crate::body::{Body, BoxError};
use crate::upstream::cluster::{
    Cluster, ConnectionSlot, Host, HostProtocol, OpenConnection, RequestSlot,
};
use crate::upstream::error::UpstreamError;
use crate::upstream::quic;
use crate::upstream::tunnel::TunnelPayload;
use crate::wire::Protocol;
use crate::wire::h3_body::H3Body;
use crate::wire::h3_connect::{self, DataBody};
use bytes::Bytes;
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// How many connections a request tries when streams cannot be opened on them.
const MAX_SEND_ATTEMPTS: usize = 4;

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;
type Driver = h3::client::Connection<h3_quinn::Connection, Bytes>;

/// The HTTP/3 pool of one worker to one host.
pub struct Http3Pool {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    state: Mutex<State>,
    /// Woken when a stream ends, a connection opens or closes, or an attempt fails.
    changed: Notify,
    /// The client endpoint (UDP socket) of this pool, made on first use on the worker's
    /// runtime.
    endpoint: Mutex<Option<quinn::Endpoint>>,
}

struct State {
    connections: Vec<Entry>,
    connecting: usize,
    waiting: usize,
    failures: u64,
    last_failure: Option<UpstreamError>,
    next_id: u64,
    /// Streams a connection being made is expected to take: the last limit found, or ours.
    expected_streams: u32,
    /// When the last connection attempt started (auto's 300 ms head start).
    attempt_started: Option<Instant>,
    /// Whether a TCP handshake was already raced against that attempt.
    tcp_raced: bool,
}

struct Entry {
    id: u64,
    send: SendRequest,
    /// The QUIC connection itself: CONNECT streams are opened on it directly.
    quic: quinn::Connection,
    /// When the connection was set up (the peer's SETTINGS follow shortly).
    opened: Instant,
    max_streams: u32,
    active: u32,
    requests: u32,
    draining: bool,
    /// Opening a stream had to wait for credit: no new stream until one of ours ends.
    busy: bool,
    idle_since: Option<Instant>,
    poke: Arc<Notify>,
}

impl lifecycle::PooledConnection for Entry {
    fn id(&self) -> u64 {
        self.id
    }
    fn in_use(&self) -> bool {
        self.active > 0
    }
    fn draining(&self) -> bool {
        self.draining
    }
    fn idle_since(&self) -> Option<Instant> {
        self.idle_since
    }
}

impl Entry {
    fn has_room(&self) -> bool {
        !self.draining && !self.busy && self.active < self.max_streams
    }
}

/// A stream slot on one connection, given back when dropped.
struct StreamLease {
    pool: Arc<Http3Pool>,
    id: u64,
    /// Whether a stream was opened with it (its end gives stream credit back).
    opened: bool,
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        self.pool.release_stream(self.id, self.opened);
    }
}
impl Http3Pool {
    /// An empty pool.
    pub fn new(cluster: Arc<Cluster>, host: Arc<Host>) -> Arc<Self> {
        let expected_streams = cluster.spec.http3.max_concurrent_streams.max(1);
        Arc::new(Http3Pool {
            cluster,
            host,
            state: Mutex::new(State {
                connections: Vec::new(),
                connecting: 0,
                waiting: 0,
                failures: 0,
                last_failure: None,
                next_id: 0,
                expected_streams,
                attempt_started: None,
                tcp_raced: false,
            }),
            changed: Notify::new(),
            endpoint: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reset(&self, reason: String) -> UpstreamError {
        UpstreamError::Reset {
            cluster: self.cluster.name().to_owned(),
            host: self.host.addr.to_string(),
            reason,
        }
    }

    fn connect_error(&self, reason: String) -> UpstreamError {
        UpstreamError::ConnectFailed {
            cluster: self.cluster.name().to_owned(),
            host: self.host.addr.to_string(),
            reason,
        }
    }

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
            let (mut lease, mut send, active) = self.acquire().await?;
            let mut head = request_head(&parts, "https", &self.host.addr.to_string())
                .map_err(|reason| self.reset(reason))?;
            *head.version_mut() = http::Version::HTTP_3;
            let opening = send.send_request(head);
            tokio::pin!(opening);
            let first = std::future::poll_fn(|cx| Poll::Ready(opening.as_mut().poll(cx))).await;
            let opened = match first {
                Poll::Ready(opened) => opened,
                Poll::Pending if active > 1 && attempt + 1 < MAX_SEND_ATTEMPTS => {
                    // No stream credit: the peer's limit is reached on this connection.
                    tracing::debug!(id = lease.id, active, "h3 connection at its stream limit");
                    self.mark_busy(lease.id, active - 1);
                    continue;
                }
                Poll::Pending => opening.await,
            };
            let stream = match opened {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, "h3 stream not opened; retrying on another connection");
                    self.mark_draining(lease.id);
                    continue;
                }
            };
            let (send_half, mut recv) = stream.split();
            lease.opened = true;
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
        let head = request_head(&parts, "https", &self.host.addr.to_string())
            .map_err(|reason| self.reset(reason))?;
        let protocol = head
            .extensions()
            .get::<h2::ext::Protocol>()
            .map(Protocol::from_h2);
        let fields = h3_connect::request_fields(&head, protocol.as_ref());
        let frame = h3_connect::headers_frame(&fields).map_err(|e| self.reset(e.to_string()))?;
        let (mut lease, send, _active) = self.acquire().await?;
        let Some((quic, opened)) = self.connection_of(lease.id) else {
            return Err(self.reset("the connection closed".into()));
        };
        if protocol.is_some() && !peer_allows_extended_connect(&send, &quic, opened).await {
            self.cluster.stats.rq_reset.inc();
            return Err(self.reset(
                "the upstream does not accept extended CONNECT over HTTP/3 (RFC 9220): its SETTINGS lack SETTINGS_ENABLE_CONNECT_PROTOCOL (on weir or Envoy: http3_protocol_options.allow_extended_connect)".into(),
            ));
        }
        let (mut send_stream, recv_stream) = match quic.open_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                self.mark_draining(lease.id);
                self.cluster.stats.rq_reset.inc();
                return Err(self.reset(format!("QUIC stream not opened: {error}")));
            }
        };
        lease.opened = true;
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

    /// The QUIC connection of entry `id` and when it was set up.
    fn connection_of(&self, id: u64) -> Option<(quinn::Connection, Instant)> {
        let state = self.lock();
        let entry = state.connections.iter().find(|e| e.id == id)?;
        Some((entry.quic.clone(), entry.opened))
    }

    /// Takes a stream slot on a connection with room, or waits (pending) while new
    /// connections are made. Also returns how many streams the connection has with this one.
    async fn acquire(self: &Arc<Self>) -> Result<(StreamLease, SendRequest, u32), UpstreamError> {
        let mut wait = PendingWait::new(self.cluster.clone());
        let mut waiting: Option<WaitingCount> = None;
        loop {
            let changed = self.changed.notified();
            let freed = self.cluster.connection_freed.notified();
            tokio::pin!(changed, freed);
            changed.as_mut().enable();
            freed.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(entry) = state.connections.iter_mut().find(|e| e.has_room()) {
                    entry.active += 1;
                    entry.requests += 1;
                    entry.idle_since = None;
                    if self
                        .cluster
                        .spec
                        .max_requests_per_connection
                        .is_some_and(|max| entry.requests >= max)
                    {
                        entry.draining = true;
                        self.cluster.stats.cx_max_requests.inc();
                    }
                    let lease = StreamLease {
                        pool: self.clone(),
                        id: entry.id,
                        opened: false,
                    };
                    return Ok((lease, entry.send.clone(), entry.active));
                }
                if wait.saw_new_failure(state.failures)
                    && state.connecting == 0
                    && let Some(failure) = state.last_failure.clone()
                {
                    return Err(failure);
                }
                if wait.enter()? {
                    state.waiting += 1;
                    waiting.get_or_insert_with(|| WaitingCount { pool: self.clone() });
                }
                let coming = state
                    .connecting
                    .saturating_mul(state.expected_streams as usize);
                if state.waiting > coming
                    && let Some(slot) = wait.open_connection()
                {
                    state.connecting += 1;
                    tokio::spawn(self.clone().connect(slot));
                }
            }
            let host = self.host.addr.to_string();
            wait.wait(&host, changed, freed).await?;
        }
    }

    /// This pool's client endpoint, made on first use.
    fn endpoint(&self, config: &quinn::ClientConfig) -> Result<quinn::Endpoint, UpstreamError> {
        let mut endpoint = self.endpoint.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(endpoint) = endpoint.as_ref() {
            return Ok(endpoint.clone());
        }
        let made = quic::client_endpoint(config, self.host.addr)
            .map_err(|e| self.connect_error(format!("QUIC client socket: {e}")))?;
        *endpoint = Some(made.clone());
        Ok(made)
    }

    /// The QUIC handshake and the HTTP/3 setup, within `connect_timeout`.
    async fn handshake(&self) -> Result<(SendRequest, Driver, quinn::Connection), UpstreamError> {
        let Some(config) = &self.cluster.quic else {
            return Err(UpstreamError::Config {
                cluster: self.cluster.name().to_owned(),
                reason: "cluster has no QUIC config".into(),
            });
        };
        let endpoint = self.endpoint(config)?;
        let name = quic::server_name(&self.cluster.spec, self.host.addr);
        // Auto: the UDP port the host advertised; explicit HTTP/3: the endpoint itself.
        let target = self
            .cluster
            .h3_address(self.host.addr)
            .unwrap_or(self.host.addr);
        let attempt = async {
            let connecting = endpoint
                .connect(target, &name)
                .map_err(|e| self.connect_error(format!("QUIC connect: {e}")))?;
            let connection = connecting.await.map_err(|e| match e {
                quinn::ConnectionError::TransportError(ref t)
                    if (0x100..0x200).contains(&u64::from(t.code)) =>
                {
                    UpstreamError::Tls {
                        cluster: self.cluster.name().to_owned(),
                        host: self.host.addr.to_string(),
                        reason: e.to_string(),
                    }
                }
                other => self.connect_error(format!("QUIC handshake: {other}")),
            })?;
            let (driver, send) = h3::client::builder()
                .build::<_, _, Bytes>(h3_quinn::Connection::new(connection.clone()))
                .await
                .map_err(|e| self.connect_error(format!("HTTP/3 setup: {e}")))?;
            Ok((send, driver, connection))
        };
        match tokio::time::timeout(self.cluster.spec.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                self.cluster.stats.cx_connect_timeout.inc();
                Err(UpstreamError::ConnectTimeout {
                    cluster: self.cluster.name().to_owned(),
                    host: self.host.addr.to_string(),
                })
            }
        }
    }

    /// Makes one connection (holding `slot`) and drives it until it closes.
    async fn connect(self: Arc<Self>, slot: ConnectionSlot) {
        match self.handshake().await {
            Ok((send, driver, quic)) => {
                if let Some(cache) = &self.cluster.alt_svc {
                    cache.mark_working(self.host.addr);
                }
                self.adopt(send, driver, quic, slot).await
            }
            Err(error) => {
                self.cluster.stats.cx_connect_fail.inc();
                if let Some(cache) = &self.cluster.alt_svc {
                    cache.mark_broken(self.host.addr);
                }
                self.connect_failed(error);
            }
        }
    }

    /// Whether a connection is up and not draining (auto: QUIC is preferred once up; the pool
    /// opens more QUIC connections when that one is at its stream limit).
    pub fn is_up(&self) -> bool {
        self.lock().connections.iter().any(|e| !e.draining)
    }

    /// Auto: starts a QUIC connection when none is open or being made (a `max_connections`
    /// unit permitting), and returns when the attempt in progress started.
    pub fn start_connecting(self: &Arc<Self>) -> Option<Instant> {
        let mut state = self.lock();
        if state.connecting == 0 && state.connections.iter().all(|e| e.draining) {
            let slot = self.cluster.try_open_connection()?;
            state.connecting += 1;
            state.attempt_started = Some(Instant::now());
            state.tcp_raced = false;
            tokio::spawn(self.clone().connect(slot));
        }
        (state.connecting > 0)
            .then_some(state.attempt_started)
            .flatten()
    }

    /// Auto: true once per QUIC attempt, for the request that races a TCP handshake against
    /// it (later requests find that TCP connection in the TCP pools).
    pub fn claim_tcp_race(&self) -> bool {
        let mut state = self.lock();
        !std::mem::replace(&mut state.tcp_raced, true)
    }

    /// Auto: waits until a connection has room (true) or `until` passes or the attempt
    /// fails (false).
    pub async fn wait_ready(&self, until: Instant) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.lock();
                if state.connections.iter().any(Entry::has_room) {
                    return true;
                }
                if state.connecting == 0 {
                    return false;
                }
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(until) => return false,
            }
        }
    }

    /// Puts an established connection in the pool and drives it until it closes. The
    /// caller counted it in `connecting`.
    async fn adopt(
        self: Arc<Self>,
        send: SendRequest,
        driver: Driver,
        quic: quinn::Connection,
        slot: ConnectionSlot,
    ) {
        let drain = self.host.drain_signal();
        let open = OpenConnection::new(
            self.cluster.clone(),
            self.host.clone(),
            slot,
            HostProtocol::Http3,
        );
        let poke = Arc::new(Notify::new());
        let id = {
            let mut state = self.lock();
            state.connecting = state.connecting.saturating_sub(1);
            let id = state.next_id;
            state.next_id += 1;
            state.connections.push(Entry {
                id,
                send,
                quic,
                opened: Instant::now(),
                max_streams: self.cluster.spec.http3.max_concurrent_streams.max(1),
                active: 0,
                requests: 0,
                draining: false,
                busy: false,
                idle_since: Some(Instant::now()),
                poke: poke.clone(),
            });
            id
        };
        tracing::debug!(cluster = %self.cluster.name(), host = %self.host.addr, id, "h3 connection open");
        self.changed.notify_waiters();
        self.drive(id, driver, drain, poke).await;
        drop(open);
    }

    /// Records a failed attempt and wakes the waiting requests.
    fn connect_failed(&self, error: UpstreamError) {
        tracing::debug!(%error, "h3 connect failed");
        {
            let mut state = self.lock();
            state.connecting = state.connecting.saturating_sub(1);
            state.failures += 1;
            state.last_failure = Some(error);
        }
        self.changed.notify_waiters();
    }

    async fn drive(
        &self,
        id: u64,
        mut driver: Driver,
        mut drain: watch::Receiver<u64>,
        poke: Arc<Notify>,
    ) {
        let mut drain_open = true;
        loop {
            let poked = poke.notified();
            tokio::pin!(poked);
            poked.as_mut().enable();
            let deadline = match self.evaluate(id) {
                Verdict::Close => break,
                Verdict::Keep(deadline) => deadline,
            };
            tokio::select! {
                error = driver.wait_idle() => {
                    if !error.is_h3_no_error() {
                        tracing::debug!(%error, id, "h3 connection failed");
                    }
                    break;
                }
                changed = drain.changed(), if drain_open => {
                    drain_open = changed.is_ok();
                    self.mark_draining(id);
                }
                () = &mut poked => {}
                () = sleep_until_some(deadline) => {}
            }
        }
        let mut state = self.lock();
        if let Some(index) = state.connections.iter().position(|e| e.id == id) {
            let entry = state.connections.swap_remove(index);
            if entry.active > 0 {
                self.cluster.stats.cx_destroy_with_active_rq.inc();
            }
        }
        drop(state);
        tracing::debug!(cluster = %self.cluster.name(), host = %self.host.addr, id, "h3 connection closed");
        self.changed.notify_waiters();
    }

    /// Decides whether connection `id` closes now (drained and empty, or idle too long).
    fn evaluate(&self, id: u64) -> Verdict {
        let mut state = self.lock();
        lifecycle::evaluate(
            &mut state.connections,
            id,
            self.cluster.spec.idle_timeout,
            &self.cluster.stats,
        )
    }

    fn mark_draining(&self, id: u64) {
        let poke = {
            let mut state = self.lock();
            let Some(entry) = state.connections.iter_mut().find(|e| e.id == id) else {
                return;
            };
            entry.draining = true;
            entry.poke.clone()
        };
        poke.notify_one();
    }

    /// Connection `id` had no stream credit with `open` streams: no new stream on it until
    /// one ends, and connections made from now on are expected to take `open`.
    fn mark_busy(&self, id: u64, open: u32) {
        let mut state = self.lock();
        state.expected_streams = open.max(1);
        if let Some(entry) = state.connections.iter_mut().find(|e| e.id == id) {
            entry.busy = true;
        }
    }

    /// A lease ended; when its stream was opened (and so has ended), the peer gives its
    /// credit back and the connection is no longer busy.
    fn release_stream(&self, id: u64, opened: bool) {
        let poke = {
            let mut state = self.lock();
            let Some(entry) = state.connections.iter_mut().find(|e| e.id == id) else {
                return;
            };
            entry.active = entry.active.saturating_sub(1);
            if opened {
                entry.busy = false;
            }
            if entry.active == 0 {
                entry.idle_since = Some(Instant::now());
            }
            entry.poke.clone()
        };
        poke.notify_one();
        self.changed.notify_one();
    }
}

/// Whether the peer's SETTINGS enable extended CONNECT. They come on the peer's control stream
/// shortly after the handshake, and h3 reports defaults (off) until then, so a connection
/// younger than a few round trips waits for them.
async fn peer_allows_extended_connect(
    send: &SendRequest,
    quic: &quinn::Connection,
    opened: Instant,
) -> bool {
    use h3::ConnectionState as _;
    let settled = opened + (quic.rtt() * 4).max(Duration::from_millis(100));
    loop {
        if send.settings().enable_extended_connect() {
            return true;
        }
        if Instant::now() >= settled || quic.close_reason().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Counts a request among the pool's waiting ones while it lives.
struct WaitingCount {
    pool: Arc<Http3Pool>,
}

impl Drop for WaitingCount {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        state.waiting = state.waiting.saturating_sub(1);
    }
}

/// Copies the request body into the stream (QUIC flow control applies inside `send_data`),
/// then its trailers or the end of the stream.
async fn pump_request_body(
    mut body: Body,
    mut stream: h3::client::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    lease: Arc<StreamLease>,
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
