//! Listeners: binding (one `SO_REUSEPORT` socket per worker), the running set and how a
//! reload changes it ([`set`]), TLS with ALPN, and the one accept loop ([`accept_each`]) that
//! hands each connection to its HTTP connection manager or its tcp_proxy, and drains them when
//! the listener stops. Listeners in sidecar mode
//! read each connection's original destination ([`original_dst`]).

pub mod original_dst;
pub mod quic;
pub mod set;
pub mod tls;

use crate::access_log::listener::ConnectionEntry;
use crate::config::Interception;
use crate::http::{ConnectionTls, CurrentManager, serve_connection_closing};
use crate::stats::ListenerStats;
use crate::tunnel::tcp_proxy::CurrentTcpProxy;
use crate::wire::ConnectionInfo;
use futures_util::future::Either;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use tls::TlsError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Binds a TCP listening socket at `address` that other workers can bind too
/// (`SO_REUSEPORT`: the kernel spreads connections over them); with `transparent`
/// (`IP_TRANSPARENT`, for TPROXY rules) it also takes connections addressed elsewhere.
pub fn bind_tcp(address: SocketAddr, transparent: bool) -> io::Result<std::net::TcpListener> {
    let socket = bound_tcp(address, transparent)?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A socket bound at `address` as [`bind_tcp`] binds, not listening: it holds the address
/// (an address in use fails here) while a connection to it is still refused.
pub fn reserve_tcp(address: SocketAddr, transparent: bool) -> io::Result<Socket> {
    bound_tcp(address, transparent)
}

fn bound_tcp(address: SocketAddr, transparent: bool) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if address.is_ipv6() {
        // `::` takes IPv4 too only where Envoy's ipv4_compat asks; the default is IPv6 only.
        socket.set_only_v6(true)?;
    }
    if transparent {
        original_dst::set_transparent(&socket, address)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

/// Why a listener's accept loop stops, as its worker says through a watch channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stop {
    /// It accepts.
    #[default]
    Running,
    /// A reload removed or replaced the listener: its connections drain after
    /// [`RETIRE_GRACE`].
    Retired,
    /// The worker stops: its connections drain at once.
    Shutdown,
}

/// How long the connections of a listener a reload retired serve on before they are told to
/// drain. A connection accepted just before the listener was retired has its first request
/// still on the way (a TLS handshake, a client's first write); drained at once, an HTTP/1.1
/// one would be closed unanswered. Meanwhile HTTP/1.x responses say `connection: close`, so
/// busy keep-alive clients leave on a response rather than see their connection closed
/// between two requests ([`Accepted::closing`]).
pub const RETIRE_GRACE: Duration = Duration::from_secs(1);

/// One connection an accept loop took, admitted under the global connection limit.
pub struct Accepted {
    /// The connection, with `TCP_NODELAY` set.
    pub stream: TcpStream,
    /// The peer.
    pub remote: SocketAddr,
    /// The address the listener is bound at, where the kernel says.
    pub bound: Option<SocketAddr>,
    /// Turns true when the listener's connections are to drain.
    pub drain: watch::Receiver<bool>,
    /// Turns true when a reload retired the listener: its HTTP/1.x connections say
    /// `connection: close` on their next response, before `drain` turns true.
    pub closing: watch::Receiver<bool>,
}

impl Accepted {
    /// The connection's original destination, read when `interception.use_original_dst` (see
    /// [`original_destination_or_log`]); `None` otherwise.
    pub fn original_destination(&self, interception: Interception) -> Option<SocketAddr> {
        match (interception.use_original_dst, self.bound) {
            (true, Some(bound)) => original_destination_or_log(
                &self.stream,
                bound,
                interception.transparent,
                self.remote,
            ),
            _ => None,
        }
    }
}

/// The one accept loop of every TCP listener (HTTP and tcp_proxy): accepts on `listener` until
/// `shutdown` turns true, takes a place under the global connection limit for each connection
/// (closing it at once, before any byte is read, when there is none), and runs what `serve`
/// makes of it on its own task. That task holds the place and a clone of `alive`, so the worker
/// can wait for every connection to finish by waiting for the channel to close. `serve` runs
/// on the loop itself: it does the cheap per-connection reads (the original destination) and
/// returns the future that serves the connection.
///
/// Once `stop` says so (the worker stops, or a reload removes or replaces the listener; see
/// [`Stop`]) the loop closes its socket and its connections drain ([`Accepted::drain`]:
/// HTTP/1.1 `connection: close`, HTTP/2 and HTTP/3 GOAWAY; a tcp_proxy connection runs on);
/// those still open after `drain_time` are closed.
pub async fn accept_each<S, F>(
    listener: std::net::TcpListener,
    mut stop: watch::Receiver<Stop>,
    alive: mpsc::Sender<()>,
    drain_time: Duration,
    mut serve: S,
) where
    S: FnMut(Accepted) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot register listener with the runtime");
            return;
        }
    };
    let bound = listener.local_addr().ok();
    let stats = ListenerStats::new(bound);
    let mut errors = AcceptErrors::default();
    let mut connections = tokio::task::JoinSet::new();
    let (drain, draining) = watch::channel(false);
    let (closing, closing_rx) = watch::channel(false);
    let why = loop {
        let why = *stop.borrow_and_update();
        if why != Stop::Running {
            break why;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Finished connections are reaped as they end, so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            // A dropped sender: whoever could stop the listener is gone; stop it.
            changed = stop.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break Stop::Shutdown,
            },
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                errors.back_off(&error, bound).await;
                continue;
            }
        };
        let Some(slot) = crate::overload::admit_connection() else {
            // Closed at once, before any byte is read: the client sees the connection end.
            stats.downstream_global_cx_overflow.inc();
            tracing::debug!(peer = %remote, "global downstream connection limit reached; closed");
            drop(stream);
            continue;
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY");
        }
        // Boxed: an `async move` block that awaits a future it captured holds that future
        // twice (the capture and the awaited copy), and a connection's future is kilobytes.
        let connection = Box::pin(serve(Accepted {
            stream,
            remote,
            bound,
            drain: draining.clone(),
            closing: closing_rx.clone(),
        }));
        let alive = alive.clone();
        connections.spawn(async move {
            let _alive = alive;
            let _slot = slot;
            connection.await;
        });
    };
    drop(listener);
    tracing::debug!(
        ?bound,
        open = connections.len(),
        ?why,
        "listener closed; draining"
    );
    closing.send_replace(true);
    drain_connections(connections, &drain, why, drain_time, bound).await;
}

/// Drains the `connections` of a listener that stopped accepting (`why`): after the grace of
/// a retired listener, tells them (`drain`), waits until `drain_time` has passed since the
/// stop for them to end, then closes those still open.
pub(crate) async fn drain_connections(
    mut connections: tokio::task::JoinSet<()>,
    drain: &watch::Sender<bool>,
    why: Stop,
    drain_time: Duration,
    listener: Option<SocketAddr>,
) {
    let deadline = tokio::time::Instant::now() + drain_time;
    if why == Stop::Retired {
        let grace = RETIRE_GRACE.min(drain_time);
        let all_ended = async { while connections.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(grace, all_ended).await;
    }
    drain.send_replace(true);
    let all_ended = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline, all_ended).await.is_err() {
        tracing::info!(
            ?listener,
            open = connections.len(),
            ?drain_time,
            "drain time over; closing the listener's remaining connections"
        );
        connections.shutdown().await;
    }
}

/// Accepts HTTP connections on `listener` (see [`accept_each`]), serving each with the
/// connection manager `manager` holds when it is accepted (see [`CurrentManager`]), over TLS
/// when `tls` is given. With `interception.use_original_dst` each connection carries its
/// original destination, for `ORIGINAL_DST` clusters.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    interception: Interception,
    tls: Option<tokio_rustls::TlsAcceptor>,
    manager: Arc<CurrentManager>,
    stop: watch::Receiver<Stop>,
    alive: mpsc::Sender<()>,
    drain_time: Duration,
) {
    accept_each(listener, stop, alive, drain_time, move |accepted| {
        let original_dst = accepted.original_destination(interception);
        let Accepted {
            stream,
            remote,
            bound,
            drain: shutdown,
            closing,
        } = accepted;
        let local = stream.local_addr().ok().or(bound).unwrap_or(remote);
        let entry = manager
            .load()
            .config()
            .listener_access_log
            .clone()
            .map(|logs| ConnectionEntry::start(logs, &stream, remote, Some(local)));
        let manager = manager.clone();
        let tls = tls.clone();
        logged(entry, async move {
            let info = ConnectionInfo {
                remote,
                local,
                tls: tls.is_some(),
                original_dst,
                mtls: false,
                socket: crate::socket::SocketId::of(&stream),
                id: crate::wire::connection::next_connection_id(),
                sni: None,
            };
            match tls {
                None => {
                    let tls = ConnectionTls::default();
                    serve_connection_closing(manager, stream, info, tls, shutdown, Some(closing))
                        .await
                }
                // Boxed: the handshake's state and a TLS stream are kilobytes; inline, every
                // connection's future (plain ones too) would be that large for its whole life.
                Some(acceptor) => {
                    Box::pin(serve_tls(
                        acceptor, manager, stream, info, shutdown, closing,
                    ))
                    .await
                }
            }
        })
    })
    .await;
}

/// Serves `stream` over TLS: the handshake, then HTTP as [`serve_connection_closing`] does.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    manager: Arc<CurrentManager>,
    stream: TcpStream,
    mut info: ConnectionInfo,
    shutdown: watch::Receiver<bool>,
    closing: watch::Receiver<bool>,
) {
    // Boxed: the handshake's state is freed once it is done, not kept beside the connection.
    let stream = match Box::pin(acceptor.accept(stream)).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(peer = %info.remote, %error, "TLS handshake failed");
            return;
        }
    };
    let session = stream.get_ref().1;
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    // rustls only completes a handshake with a client certificate that the listener's
    // verifier accepted.
    info.mtls = session
        .peer_certificates()
        .is_some_and(|chain| !chain.is_empty());
    info.sni = session.server_name().map(std::sync::Arc::from);
    let tls = ConnectionTls { tls: true, alpn };
    serve_connection_closing(manager, stream, info, tls, shutdown, Some(closing)).await;
}

/// `connection`, written to the listener's access log at its end when `entry` is open.
/// Not an `async fn`: one would hold `connection` twice (its argument and the copy it
/// awaits), for the connection's whole life.
fn logged<F: Future<Output = ()>>(
    entry: Option<ConnectionEntry>,
    connection: F,
) -> impl Future<Output = ()> {
    match entry {
        Some(entry) => Either::Left(entry.run(connection)),
        None => Either::Right(connection),
    }
}

/// Accepts tcp_proxy connections on `listener` (see [`accept_each`]), serving each with the
/// proxy `current` holds when it is accepted.
pub async fn tcp_proxy_accept_loop(
    current: Arc<CurrentTcpProxy>,
    listener: std::net::TcpListener,
    stop: watch::Receiver<Stop>,
    alive: mpsc::Sender<()>,
    drain_time: Duration,
) {
    let mut missing_stats: Option<ListenerStats> = None;
    accept_each(listener, stop, alive, drain_time, move |accepted| {
        let proxy = current.load_full();
        if let Some(filter) = proxy.missing_config() {
            // Envoy closes such a connection in `onAccept`, before any filter (or log)
            // sees it, and counts it in `network_extension_config_missing`.
            missing_stats
                .get_or_insert_with(|| ListenerStats::new(accepted.bound))
                .network_extension_config_missing
                .inc();
            tracing::debug!(
                peer = %accepted.remote,
                filter,
                "a network filter's ECDS config is missing; connection closed"
            );
        }
        // Without a missing config, the connection served (and its log entry); with one,
        // nothing: the stream is dropped (closed) here.
        let served = proxy.missing_config().is_none().then(|| {
            let original = accepted.original_destination(proxy.interception());
            let entry = proxy.listener_access_log().map(|logs| {
                let local = accepted.stream.local_addr().ok().or(accepted.bound);
                ConnectionEntry::start(logs.clone(), &accepted.stream, accepted.remote, local)
                    .with_cluster(proxy.cluster())
            });
            let remote = accepted.remote;
            let connection = async move {
                let outcome = proxy.serve_connection(accepted.stream, original).await;
                tracing::debug!(peer = %remote, "tcp_proxy connection done");
                outcome
            };
            (entry, connection)
        });
        async move {
            match served {
                Some((Some(entry), connection)) => {
                    entry.run_tcp(connection).await;
                }
                Some((None, connection)) => {
                    connection.await;
                }
                None => {}
            }
        }
    })
    .await;
}

/// The original destination of a connection accepted on the listener bound at `bound`, or
/// `None` with a log line saying why (requests of such a connection to an `ORIGINAL_DST`
/// cluster are refused; its tcp_proxy connection is closed).
pub fn original_destination_or_log(
    stream: &tokio::net::TcpStream,
    bound: SocketAddr,
    transparent: bool,
    remote: SocketAddr,
) -> Option<SocketAddr> {
    match original_dst::original_destination(stream, bound, transparent) {
        Ok(destination) => {
            tracing::debug!(peer = %remote, %destination, "original destination");
            Some(destination)
        }
        Err(reason) => {
            tracing::warn!(
                peer = %remote,
                listener = %bound,
                "no original destination: {reason}"
            );
            None
        }
    }
}

/// How often a listener that keeps failing to accept says so in the log.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What an accept loop does when `accept()` fails: wait before trying again (a listener out
/// of file descriptors stays readable, so trying again at once would spin a core), and log
/// once per [`ACCEPT_ERROR_LOG_INTERVAL`] with the number of failures since the last line.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    last_logged: Option<Instant>,
    since_logged: u64,
}

impl AcceptErrors {
    /// Logs `error` (at most once per interval) and sleeps: 100 ms when the process or system
    /// is out of descriptors or buffers (EMFILE, ENFILE, ENOBUFS, ENOMEM), which only a
    /// connection ending can fix; 10 ms otherwise.
    pub async fn back_off(&mut self, error: &io::Error, listener: Option<SocketAddr>) {
        self.since_logged += 1;
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL)
        {
            tracing::warn!(
                %error,
                ?listener,
                failures = self.since_logged,
                "accept failed; backing off"
            );
            self.last_logged = Some(Instant::now());
            self.since_logged = 0;
        }
        tokio::time::sleep(accept_backoff(error)).await;
    }
}

/// How long to wait after `error` before accepting again.
fn accept_backoff(error: &io::Error) -> Duration {
    match error.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            Duration::from_millis(100)
        }
        _ => Duration::from_millis(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_descriptors_waits_longer() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(accept_backoff(&emfile), Duration::from_millis(100));
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(accept_backoff(&aborted), Duration::from_millis(10));
    }
}
