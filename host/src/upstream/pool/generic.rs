//! One worker's connections to one host, for any HTTP version: [`Pool<P>`] holds the request
//! queue, capacity, busy/drain, circuit breakers and connection lifecycle once; what differs
//! per version is a [`PoolProtocol`] (`http1.rs`, `http2.rs`, `http3.rs`).
//!
//! A request takes a stream on a connection with room ([`Pool::acquire`]), or waits (pending,
//! under `max_pending_requests`) while new connections are made, up to `max_connections` over
//! the whole cluster: as many as the waiting requests need, given the streams each connection
//! is expected to take (1 for HTTP/1.1: no pipelining). A connection takes new streams until
//! it drains: at `max_requests_per_connection` (counted in `cx_max_requests`), on GOAWAY, when
//! a request could not be sent on it, or when its host is drained (turned unhealthy or
//! removed). A drained connection closes when its last stream ends; an unused one after
//! `idle_timeout`. Each connection has a driver task that runs its I/O and applies these rules
//! (see [`lifecycle`]).

use super::lifecycle::{self, Verdict, sleep_until_some};
use super::wait::PendingWait;
use crate::upstream::cluster::{Cluster, ConnectionSlot, Host, HostProtocol, OpenConnection};
use crate::upstream::error::UpstreamError;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// What a [`Pool`] needs to know about one HTTP version.
pub(super) trait PoolProtocol: Send + Sync + Sized + 'static {
    /// For logs: `http1`, `h2`, `h3`.
    const NAME: &'static str;
    /// How its connections are counted (`cx_http1_total`, ...).
    const PROTOCOL: HostProtocol;
    /// Whether a request tries the newest connection first. HTTP/1.1 does: an older idle
    /// connection is the likelier to have been closed by the server's keep-alive timeout, and
    /// the others idle out. Multiplexed protocols fill the oldest connection first.
    const NEWEST_FIRST: bool = false;
    /// Whether a request given up before its end (its [`Lease`] dropped without being ended)
    /// keeps its connection busy until the connection closes. HTTP/1.1 cannot cancel one
    /// request without closing the connection it is on; h2 and h3 reset just the stream.
    const ABANDONED_STREAM_HOLDS_CONNECTION: bool = false;

    /// A connection made outside the pool that the pool can take over (auto: a TLS connection
    /// whose ALPN chose this protocol, a TCP connection that won the race against QUIC).
    type Transport: Send + 'static;
    /// The pool's handle on one open connection.
    type Connection: Send + 'static;
    /// What one request takes from a connection to send on it.
    type Stream: Send + 'static;

    /// The most streams a connection takes by our own config.
    fn configured_streams(cluster: &Cluster) -> u32;

    /// Makes a connection (or sets one up on `adopted`) holding `slot`, within
    /// `connect_timeout`, counting what failed (`cx_connect_fail`, `cx_connect_timeout`).
    fn open(
        pool: &Arc<Pool<Self>>,
        slot: ConnectionSlot,
        adopted: Option<Self::Transport>,
    ) -> impl Future<Output = Result<Opened<Self>, UpstreamError>> + Send;

    /// A stream on `connection` for one request, when it can take one now (the pool has
    /// checked its stream count and drain state).
    fn take_stream(connection: &mut Self::Connection) -> Option<Self::Stream>;

    /// A stream given back with [`Lease::reuse`] (HTTP/1.1: the connection's sender); where
    /// a stream is a copy of the connection's handle there is nothing to do.
    fn return_stream(_connection: &mut Self::Connection, _stream: Self::Stream) {}

    /// Whether this pool still serves its host: a request waiting in it leaves
    /// ([`Pool::acquire`] returns `None`) once it does not (auto: ALPN found h2).
    fn serves(&self, _host: &Host) -> bool {
        true
    }
}

/// What [`PoolProtocol::open`] made.
pub(super) enum Opened<P: PoolProtocol> {
    /// A connection of this protocol.
    Ready(Ready<P>),
    /// The transport turned out to speak another protocol (ALPN) and went to that one's pool.
    HandedOff,
}

/// A connection ready for streams.
pub(super) struct Ready<P: PoolProtocol> {
    /// The pool's handle on it.
    pub connection: P::Connection,
    /// Runs the connection's I/O until it ends (`Err`: why it failed).
    pub driver: ConnectionDriver,
    /// How many streams it takes.
    pub streams: StreamLimit,
    /// The connection's `max_connections` unit, held until it closes.
    pub slot: ConnectionSlot,
}

/// A connection's I/O task, run by the pool's driver.
pub(super) type ConnectionDriver = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// How many streams a new connection takes.
pub(super) enum StreamLimit {
    /// min(the peer's limit, ours): the next connections are expected to take as many.
    Known(u32),
    /// Ours; the peer's limit is found out as streams open (HTTP/3: quinn does not tell it,
    /// see [`Lease::stream_limit_reached`]).
    Assumed(u32),
}

/// The pool of one worker to one host for protocol `P`.
pub(super) struct Pool<P: PoolProtocol> {
    pub cluster: Arc<Cluster>,
    pub host: Arc<Host>,
    pub protocol: P,
    state: Mutex<State<P::Connection>>,
    /// Woken when a stream ends, a connection opens or closes, or an attempt fails.
    changed: Notify,
}

struct State<C> {
    connections: Vec<Entry<C>>,
    connecting: usize,
    waiting: usize,
    failures: u64,
    last_failure: Option<UpstreamError>,
    next_id: u64,
    /// Streams a connection being made is expected to take: the last known limit, or ours.
    expected_streams: u32,
    /// When the last attempt made by [`Pool::start_connecting`] started.
    attempt_started: Option<Instant>,
    /// Where the connections streams ended on were, when that left them room, the last one
    /// on top: where [`PoolProtocol::NEWEST_FIRST`] holds (HTTP/1.1), a stream goes to the
    /// top one first (the most recently used idle connection, as Envoy's), without a scan
    /// of every connection busy with a request. Hints only: each is checked when popped
    /// (a connection that closed since moved another into its place), and the stack is
    /// never longer than the list of connections.
    released: Vec<usize>,
}

impl<C> State<C> {
    /// The index of the connection `id`, looked for at `hint` first (where a lease last saw
    /// it: connections move only when one before them closes).
    fn index_of(&self, id: u64, hint: usize) -> Option<usize> {
        match self.connections.get(hint) {
            Some(entry) if entry.id == id => Some(hint),
            _ => self.connections.iter().position(|e| e.id == id),
        }
    }
}

/// One open connection, as the pool sees it.
struct Entry<C> {
    id: u64,
    connection: C,
    max_streams: u32,
    /// Streams taken on it now.
    active: u32,
    /// Streams ever taken on it (`max_requests_per_connection`).
    requests: u32,
    /// No new streams; it closes when the last one ends.
    draining: bool,
    /// Opening a stream had to wait for the peer's credit: no new stream until one ends.
    blocked: bool,
    /// Carries a tunnel outside the pool's streams (HTTP/1.1 after `101`): never reused,
    /// never closed by the pool; it closes when the tunnel does.
    detached: bool,
    idle_since: Option<Instant>,
    /// Wakes the connection's driver to look at its entry again.
    poke: Arc<Notify>,
}

impl<C> Entry<C> {
    fn has_room(&self) -> bool {
        !self.draining && !self.blocked && !self.detached && self.active < self.max_streams
    }
}

impl<C> lifecycle::PooledConnection for Entry<C> {
    fn id(&self) -> u64 {
        self.id
    }
    fn in_use(&self) -> bool {
        self.active > 0 || self.detached
    }
    fn draining(&self) -> bool {
        self.draining
    }
    fn idle_since(&self) -> Option<Instant> {
        self.idle_since
    }
}

/// How a [`Lease`] ends.
enum End<S> {
    /// Dropped: the stream is over (when a stream was opened with it, the peer gave its
    /// credit back).
    Done,
    /// The request is done and the connection may carry another: `S` goes back to it.
    Reuse(S),
    /// The connection takes no more requests.
    Retire,
    /// The connection carries a tunnel from now on (see [`Entry::detached`]).
    Detach,
}

impl<P: PoolProtocol> Pool<P> {
    /// An empty pool.
    pub fn new(cluster: Arc<Cluster>, host: Arc<Host>, protocol: P) -> Arc<Self> {
        let expected_streams = P::configured_streams(&cluster).max(1);
        Arc::new(Pool {
            cluster,
            host,
            protocol,
            state: Mutex::new(State {
                connections: Vec::new(),
                connecting: 0,
                waiting: 0,
                failures: 0,
                last_failure: None,
                next_id: 0,
                expected_streams,
                attempt_started: None,
                released: Vec::new(),
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<P::Connection>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The error of a request that failed on this pool's host.
    pub fn reset(&self, reason: String) -> UpstreamError {
        UpstreamError::Reset {
            cluster: self.cluster.name().to_owned(),
            host: self.host.addr.to_string(),
            reason,
        }
    }

    /// The error of a connection attempt to this pool's host that failed.
    pub fn connect_error(&self, reason: String) -> UpstreamError {
        UpstreamError::ConnectFailed {
            cluster: self.cluster.name().to_owned(),
            host: self.host.addr.to_string(),
            reason,
        }
    }

    /// The error of a connection attempt that did not finish within `connect_timeout`.
    pub fn connect_timeout(&self) -> UpstreamError {
        UpstreamError::ConnectTimeout {
            cluster: self.cluster.name().to_owned(),
            host: self.host.addr.to_string(),
        }
    }

    /// Takes a stream on a connection with room, or waits (pending) while new connections
    /// are made. `None`: the pool no longer serves its host ([`PoolProtocol::serves`]).
    pub async fn acquire(self: &Arc<Self>) -> Result<Option<(Lease<P>, P::Stream)>, UpstreamError> {
        // A connection with room first: the common case takes nothing shared by the workers
        // (the cluster's count and its `connection_freed` waiters are only for waiting).
        {
            let mut state = self.lock();
            if !self.protocol.serves(&self.host) {
                return Ok(None);
            }
            if let Some(taken) = self.take_stream(&mut state) {
                return Ok(Some(taken));
            }
        }
        let mut wait = PendingWait::new(self.cluster.clone());
        let mut waiting: Option<WaitingCount<P>> = None;
        loop {
            let changed = self.changed.notified();
            let freed = self.cluster.connection_freed.notified();
            tokio::pin!(changed, freed);
            changed.as_mut().enable();
            freed.as_mut().enable();
            {
                let mut state = self.lock();
                if !self.protocol.serves(&self.host) {
                    return Ok(None);
                }
                if let Some(taken) = self.take_stream(&mut state) {
                    return Ok(Some(taken));
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
                    tokio::spawn(self.clone().run_connection(slot, None));
                }
            }
            let host = self.host.addr.to_string();
            // On an error `waiting` is dropped with this frame, which uncounts it.
            wait.wait(&host, changed, freed).await?;
        }
    }

    /// [`Pool::acquire`] for a protocol whose pool always serves its host.
    pub async fn acquire_stream(self: &Arc<Self>) -> Result<(Lease<P>, P::Stream), UpstreamError> {
        self.acquire()
            .await?
            .ok_or_else(|| self.reset("the pool no longer serves this host".into()))
    }

    /// A stream on the first connection with room (the newest first where `P` says so);
    /// the connection drains when it reaches `max_requests_per_connection`.
    fn take_stream(
        self: &Arc<Self>,
        state: &mut State<P::Connection>,
    ) -> Option<(Lease<P>, P::Stream)> {
        let count = state.connections.len();
        let mut released = std::mem::take(&mut state.released);
        // Only NEWEST_FIRST pools push hints (see `release`).
        let hints = std::iter::from_fn(|| released.pop());
        let scan = (0..count).map(|n| if P::NEWEST_FIRST { count - 1 - n } else { n });
        let mut found = None;
        for index in hints.chain(scan) {
            let Some(entry) = state.connections.get_mut(index) else {
                continue;
            };
            if !entry.has_room() {
                continue;
            }
            let Some(stream) = P::take_stream(&mut entry.connection) else {
                continue;
            };
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
            let lease = Lease {
                pool: self.clone(),
                id: entry.id,
                index,
                active: entry.active,
                opened: false,
                ended: false,
            };
            found = Some((lease, stream));
            break;
        }
        // The hints not used yet stay for the next streams (the vector keeps its room).
        state.released = released;
        found
    }

    /// Takes a connection made outside the pool (see [`PoolProtocol::Transport`]) and
    /// drives it until it closes.
    pub fn adopt(self: &Arc<Self>, transport: P::Transport, slot: ConnectionSlot) {
        self.lock().connecting += 1;
        tokio::spawn(self.clone().run_connection(slot, Some(transport)));
    }

    /// Makes one connection (holding `slot`), or sets up `adopted`, and drives it until it
    /// closes. The caller counted it in `connecting`.
    async fn run_connection(self: Arc<Self>, slot: ConnectionSlot, adopted: Option<P::Transport>) {
        // Taken before connecting, so that a drain while connecting is seen.
        let drain = self.host.drain_signal();
        let ready = match P::open(&self, slot, adopted).await {
            Ok(Opened::Ready(ready)) => ready,
            Ok(Opened::HandedOff) => {
                {
                    let mut state = self.lock();
                    state.connecting = state.connecting.saturating_sub(1);
                }
                self.changed.notify_waiters();
                return;
            }
            Err(error) => return self.connect_failed(error),
        };
        let Ready {
            connection,
            driver,
            streams,
            slot,
        } = ready;
        let open = OpenConnection::new(self.cluster.clone(), self.host.clone(), slot, P::PROTOCOL);
        let poke = Arc::new(Notify::new());
        let (id, max_streams) = {
            let mut state = self.lock();
            state.connecting = state.connecting.saturating_sub(1);
            let max_streams = match streams {
                StreamLimit::Known(limit) => {
                    state.expected_streams = limit.max(1);
                    limit.max(1)
                }
                StreamLimit::Assumed(limit) => limit.max(1),
            };
            let id = state.next_id;
            state.next_id += 1;
            state.connections.push(Entry {
                id,
                connection,
                max_streams,
                active: 0,
                requests: 0,
                draining: false,
                blocked: false,
                detached: false,
                idle_since: Some(Instant::now()),
                poke: poke.clone(),
            });
            (id, max_streams)
        };
        tracing::debug!(cluster = %self.cluster.name(), host = %self.host.addr, protocol = P::NAME, id, max_streams, "connection open");
        // Wake as many waiting requests as the connection takes.
        if max_streams == 1 {
            self.changed.notify_one();
        } else {
            self.changed.notify_waiters();
        }
        self.drive(id, driver, drain, poke).await;
        drop(open);
    }

    /// Records a failed attempt and wakes the waiting requests (which fail with it when no
    /// other attempt is under way).
    fn connect_failed(&self, error: UpstreamError) {
        tracing::debug!(%error, protocol = P::NAME, "connect failed");
        {
            let mut state = self.lock();
            state.connecting = state.connecting.saturating_sub(1);
            state.failures += 1;
            state.last_failure = Some(error);
        }
        self.changed.notify_waiters();
    }

    /// Runs the connection until it ends or the pool closes it: drained and empty, or idle
    /// for `idle_timeout`. Its host's drain signal drains it.
    async fn drive(
        &self,
        id: u64,
        mut driver: ConnectionDriver,
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
                result = &mut driver => {
                    if let Err(error) = result {
                        tracing::debug!(%error, protocol = P::NAME, id, "connection failed");
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
        tracing::debug!(cluster = %self.cluster.name(), host = %self.host.addr, protocol = P::NAME, id, "connection closed");
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

    /// A lease of connection `id` ended.
    fn release(&self, id: u64, hint: usize, opened: bool, end: End<P::Stream>) {
        let poke = {
            let mut state = self.lock();
            let Some(index) = state.index_of(id, hint) else {
                return;
            };
            let room = {
                let entry = &mut state.connections[index];
                entry.active = entry.active.saturating_sub(1);
                if opened {
                    entry.blocked = false;
                }
                match end {
                    End::Done => {}
                    End::Reuse(stream) => P::return_stream(&mut entry.connection, stream),
                    End::Retire => entry.draining = true,
                    End::Detach => entry.detached = true,
                }
                entry.has_room()
            };
            if room && P::NEWEST_FIRST {
                if state.released.len() >= state.connections.len() {
                    // Stale hints piled up (connections closed): start again.
                    state.released.clear();
                }
                state.released.push(index);
            }
            let entry = &mut state.connections[index];
            if entry.active == 0 {
                entry.idle_since = Some(Instant::now());
            }
            // Its driver needs waking only to close it (see `lifecycle`).
            (entry.active == 0 && entry.draining).then(|| entry.poke.clone())
        };
        if let Some(poke) = poke {
            poke.notify_one();
        }
        self.changed.notify_one();
    }

    /// Whether a connection is up and not draining (auto prefers HTTP/3 once it is).
    pub fn is_up(&self) -> bool {
        self.lock().connections.iter().any(|e| !e.draining)
    }

    /// Starts a connection when none is open or being made (a `max_connections` unit
    /// permitting), and returns when the attempt in progress started (auto's head start).
    pub fn start_connecting(self: &Arc<Self>) -> Option<Instant> {
        let mut state = self.lock();
        if state.connecting == 0 && state.connections.iter().all(|e| e.draining) {
            let slot = self.cluster.try_open_connection()?;
            state.connecting += 1;
            state.attempt_started = Some(Instant::now());
            tokio::spawn(self.clone().run_connection(slot, None));
        }
        (state.connecting > 0)
            .then_some(state.attempt_started)
            .flatten()
    }

    /// Waits until a connection has room (true), or `until` passes or no attempt is left
    /// (false).
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
}

/// One stream taken on a connection by [`Pool::acquire`]; it is given back when the lease is
/// dropped, or ended with [`Lease::reuse`], [`Lease::retire`] or [`Lease::detach`].
pub(super) struct Lease<P: PoolProtocol> {
    pool: Arc<Pool<P>>,
    id: u64,
    /// Where the connection was in the pool's list when the stream was taken (a hint).
    index: usize,
    active: u32,
    opened: bool,
    ended: bool,
}

impl<P: PoolProtocol> Lease<P> {
    /// The connection's id in its pool.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How many streams the connection carried when this one was taken, this one included.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// A stream was opened with this lease: its end gives the peer's credit back.
    pub fn opened(&mut self) {
        self.opened = true;
    }

    /// Opening a stream had to wait for the peer's credit with `active - 1` streams open on
    /// the connection: none is put on it until one of those ends, and connections made from
    /// now on are expected to take as many (HTTP/3).
    pub fn stream_limit_reached(self) {
        {
            let mut state = self.pool.lock();
            state.expected_streams = self.active.saturating_sub(1).max(1);
            if let Some(index) = state.index_of(self.id, self.index) {
                state.connections[index].blocked = true;
            }
        }
        drop(self);
    }

    /// The request is done with the connection, which may carry another: `stream` goes back.
    pub fn reuse(self, stream: P::Stream) {
        self.end(End::Reuse(stream));
    }

    /// The connection takes no new requests (nothing could be sent on it, it is not reusable
    /// or it is going away); it closes once its streams end.
    pub fn retire(self) {
        self.end(End::Retire);
    }

    /// The connection takes no new requests; this lease still holds its stream.
    pub fn drain_connection(&self) {
        self.pool.mark_draining(self.id);
    }

    /// The connection carries a tunnel from now on, outside the pool (HTTP/1.1 after `101`).
    pub fn detach(self) {
        self.end(End::Detach);
    }

    fn end(mut self, end: End<P::Stream>) {
        self.ended = true;
        self.pool.release(self.id, self.index, self.opened, end);
    }
}

impl<P: PoolProtocol> Drop for Lease<P> {
    fn drop(&mut self) {
        if self.ended || P::ABANDONED_STREAM_HOLDS_CONNECTION {
            return;
        }
        self.pool
            .release(self.id, self.index, self.opened, End::Done);
    }
}

/// Counts a request among the pool's waiters until dropped (also when the caller gives up).
struct WaitingCount<P: PoolProtocol> {
    pool: Arc<Pool<P>>,
}

impl<P: PoolProtocol> Drop for WaitingCount<P> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        state.waiting = state.waiting.saturating_sub(1);
    }
}
