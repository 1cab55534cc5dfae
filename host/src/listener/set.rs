//! The running set of listeners and how a new config changes it. A listener is known by its
//! `name`, as in Envoy: a config that names a listener the running set lacks adds it, one that
//! leaves a name out removes it, and one whose listener of the same name has another socket,
//! TLS, QUIC settings or interception replaces it. A change only to what runs behind the
//! socket (routes, filters, the tcp_proxy's cluster) keeps the listener: its accept loops stay
//! and take the new connection manager (see [`crate::worker`]).
//!
//! [`ListenerSet::bind`] binds what the config needs, off the workers: one `SO_REUSEPORT`
//! socket per worker for a TCP listener, one UDP socket for a QUIC one, with its TLS read
//! now, so a port in use or a bad key refuses the config before anything changes. A
//! replaced TCP listener at the same address gets the running sockets (duplicated
//! descriptors), so the port never closes: the workers start the new accept loops on them
//! and stop the old ones, and connections waiting in the kernel's queue go to the new loop.
//! [`ListenerSet::retire`] then closes what the set holds of the listeners the new one does
//! not carry; their workers drain them ([`crate::listener::accept_each`]).

use super::tls::{self, TlsError};
use crate::config::Interception;
use crate::snapshot::{Config, ListenerConfig, TcpListenerConfig};
use crate::stats::ListenerManagerStats;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A listener's TLS files are unusable.
    #[error("listener {listener}: {source}")]
    Tls {
        /// The listener.
        listener: String,
        /// Why.
        source: TlsError,
    },
    /// A listener could not bind.
    #[error("listener {listener}: cannot listen on {address}: {source}")]
    Bind {
        /// The listener.
        listener: String,
        /// Where.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What one listener runs behind its socket, found in a config by the listener's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// An HTTP connection manager over TCP (with or without TLS).
    Http,
    /// An HTTP/3 connection manager over QUIC.
    Quic,
    /// A tcp_proxy.
    TcpProxy,
}

/// The sockets of one bound listener.
#[derive(Debug)]
pub enum Sockets {
    /// One listening socket per worker.
    Tcp(Vec<std::net::TcpListener>),
    /// The UDP socket of a QUIC endpoint (served by worker 0; see [`super::quic`]).
    Quic(std::net::UdpSocket),
}

/// One listener of a [`ListenerSet`]: bound, with its TLS, until the set that replaces the
/// one it is in retires it.
pub struct BoundListener {
    /// Its name.
    pub name: String,
    /// Unique per bind: a worker runs a listener of that name whose id differs from this one's
    /// as the one this replaces.
    pub id: u64,
    /// What runs behind it.
    pub kind: ListenerKind,
    /// Where it is bound (the port the kernel chose where the config says 0).
    pub address: SocketAddr,
    /// How it takes redirected connections.
    pub interception: Interception,
    /// Its TLS (TCP listeners with a transport socket).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Its QUIC endpoint's config (QUIC listeners).
    pub quic: Option<quinn::ServerConfig>,
    /// What the listener's sockets and its identity are, for comparing with a new config.
    identity: Identity,
    /// The sockets (until retired) and the drain marker every worker's accept loop holds.
    held: Mutex<Option<Held>>,
}

impl std::fmt::Debug for BoundListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundListener")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// What a bound listener holds until it is retired.
#[derive(Debug)]
struct Held {
    sockets: Sockets,
    life: Arc<ListenerLife>,
}

/// Shared by a listener's accept loops on every worker: once it is retired it counts in
/// `total_listeners_draining` until the last accept loop holding it ends its drain.
#[derive(Debug, Default)]
pub struct ListenerLife {
    draining: AtomicBool,
}

impl ListenerLife {
    fn start_draining(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            ListenerManagerStats::global()
                .total_listeners_draining
                .inc();
        }
    }
}

impl Drop for ListenerLife {
    fn drop(&mut self) {
        if *self.draining.get_mut() {
            ListenerManagerStats::global()
                .total_listeners_draining
                .dec();
        }
    }
}

/// What a reload must compare to keep a listener: all but what runs behind its sockets.
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    kind: ListenerKind,
    address: SocketAddr,
    tls: Option<crate::config::DownstreamTls>,
    quic: Option<crate::upstream::Http3Settings>,
    interception: Interception,
}

impl Identity {
    fn of_http(listener: &ListenerConfig) -> Identity {
        Identity {
            kind: if listener.quic.is_some() {
                ListenerKind::Quic
            } else {
                ListenerKind::Http
            },
            address: listener.address,
            tls: listener.tls.clone(),
            quic: listener.quic,
            interception: listener.interception,
        }
    }

    fn of_tcp(listener: &TcpListenerConfig) -> Identity {
        Identity {
            kind: ListenerKind::TcpProxy,
            address: listener.address,
            tls: None,
            quic: None,
            interception: listener.interception,
        }
    }
}

/// Binds, without listening, a socket at the address of each TCP listener of `config` (HTTP
/// over TCP and `tcp_proxy`; QUIC and port 0 left out), as Envoy binds its listeners'
/// sockets when it loads them, before they accept: a start that holds its listeners back
/// for the control plane still stops on an address in use, and a connection is refused
/// until the listener starts. The sockets share their port with the listeners' own
/// (`SO_REUSEADDR` and `SO_REUSEPORT`, never listening), so they may go at any time after.
pub fn reserve_addresses(config: &Config) -> Result<Vec<socket2::Socket>, BindError> {
    let http = config
        .listeners
        .iter()
        .filter(|listener| listener.quic.is_none())
        .map(|listener| (&listener.name, listener.address, listener.interception));
    let tcp = config
        .tcp_listeners
        .iter()
        .map(|listener| (&listener.name, listener.address, listener.interception));
    http.chain(tcp)
        .filter(|(_, address, _)| address.port() != 0)
        .map(|(name, address, interception)| {
            super::reserve_tcp(address, interception.transparent).map_err(|source| {
                BindError::Bind {
                    listener: name.clone(),
                    address,
                    source,
                }
            })
        })
        .collect()
}

/// What a new set did to the one it follows, by listener name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListenerChanges {
    /// Listeners the old set did not have.
    pub added: Vec<String>,
    /// Listeners of the old set the new one lacks.
    pub removed: Vec<String>,
    /// Listeners replaced by a new one of the same name.
    pub modified: Vec<String>,
}

impl ListenerChanges {
    /// Whether the set is the same.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.modified.is_empty()
    }
}

/// The listeners of one config, bound.
#[derive(Debug)]
pub struct ListenerSet {
    /// Workers each TCP listener has a socket for.
    workers: usize,
    listeners: Vec<Arc<BoundListener>>,
}

/// Gives every bind its own id.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl ListenerSet {
    /// Binds every listener of `config` for `workers` workers (at start).
    pub fn bind(config: &Config, workers: usize) -> Result<ListenerSet, BindError> {
        let empty = ListenerSet {
            workers: workers.max(1),
            listeners: Vec::new(),
        };
        let (set, _) = empty.successor(config)?;
        Ok(set)
    }

    /// The set `config` asks for, following this one: listeners this set has unchanged are
    /// carried over as they are; new and replaced ones are bound now (a replaced TCP
    /// listener at the same address shares the running sockets). Nothing of this set changes
    /// until [`ListenerSet::retire`].
    pub fn successor(&self, config: &Config) -> Result<(ListenerSet, ListenerChanges), BindError> {
        let mut changes = ListenerChanges::default();
        let mut listeners = Vec::new();
        let wanted = config
            .listeners
            .iter()
            .map(|listener| {
                (
                    listener.name.as_str(),
                    Identity::of_http(listener),
                    Some(listener),
                )
            })
            .chain(
                config
                    .tcp_listeners
                    .iter()
                    .map(|listener| (listener.name.as_str(), Identity::of_tcp(listener), None)),
            );
        for (name, identity, http) in wanted {
            let running = self.get(name);
            if let Some(running) = running.filter(|running| running.identity == identity) {
                listeners.push(running.clone());
                continue;
            }
            let handed_over = running.and_then(|running| running.shareable_sockets(&identity));
            let bound = self.bind_one(name, identity, http, handed_over)?;
            match running {
                Some(_) => changes.modified.push(name.to_owned()),
                None => changes.added.push(name.to_owned()),
            }
            listeners.push(Arc::new(bound));
        }
        for running in &self.listeners {
            if !listeners
                .iter()
                .any(|listener| listener.name == running.name)
            {
                changes.removed.push(running.name.clone());
            }
        }
        let set = ListenerSet {
            workers: self.workers,
            listeners,
        };
        Ok((set, changes))
    }

    /// Once `next` (this set's successor) is in force: closes what this set holds of every
    /// listener `next` does not carry over, marks them draining, and counts `changes`.
    pub fn retire(&self, next: &ListenerSet, changes: &ListenerChanges) {
        for listener in &self.listeners {
            if next
                .listeners
                .iter()
                .any(|kept| Arc::ptr_eq(kept, listener))
            {
                continue;
            }
            listener.retire();
        }
        let stats = ListenerManagerStats::global();
        stats.listener_added.inc_by(changes.added.len() as u64);
        stats.listener_removed.inc_by(changes.removed.len() as u64);
        stats
            .listener_modified
            .inc_by(changes.modified.len() as u64);
        stats
            .total_listeners_active
            .set(next.listeners.len() as i64);
    }

    /// Counts this set as the first one in force (at start).
    pub fn count_started(&self) {
        let stats = ListenerManagerStats::global();
        stats.listener_added.inc_by(self.listeners.len() as u64);
        stats
            .total_listeners_active
            .set(self.listeners.len() as i64);
    }

    /// Closes what the set holds of every listener (at shutdown: the workers' accept loops
    /// are then the last to hold the sockets, and close them as they stop).
    pub fn close_all(&self) {
        for listener in &self.listeners {
            listener.retire();
        }
    }

    /// The listeners, in the config's order (HTTP, then tcp_proxy).
    pub fn listeners(&self) -> &[Arc<BoundListener>] {
        &self.listeners
    }

    /// The listener named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<BoundListener>> {
        self.listeners.iter().find(|listener| listener.name == name)
    }

    /// Binds the listener `name` (`http`: its config when it is an HTTP listener), or takes
    /// the `handed_over` sockets of the one it replaces.
    fn bind_one(
        &self,
        name: &str,
        identity: Identity,
        http: Option<&ListenerConfig>,
        handed_over: Option<Sockets>,
    ) -> Result<BoundListener, BindError> {
        let tls_error = |source| BindError::Tls {
            listener: name.to_owned(),
            source,
        };
        let bind_error = |address, source| BindError::Bind {
            listener: name.to_owned(),
            address,
            source,
        };
        let mut tls = None;
        let mut quic = None;
        let sockets = match (identity.kind, http) {
            (ListenerKind::Quic, Some(listener)) => {
                let (Some(certificates), Some(settings)) = (&listener.tls, &listener.quic) else {
                    return Err(tls_error(TlsError::Invalid {
                        path: Default::default(),
                        what: "a QUIC listener needs certificates".into(),
                    }));
                };
                quic = Some(super::quic::server_config(certificates, settings).map_err(tls_error)?);
                match handed_over {
                    Some(sockets) => sockets,
                    None => Sockets::Quic(
                        super::quic::bind_udp(identity.address)
                            .map_err(|source| bind_error(identity.address, source))?,
                    ),
                }
            }
            (kind, _) => {
                if let (ListenerKind::Http, Some(certificates)) = (kind, &identity.tls) {
                    tls = Some(tls::acceptor(certificates).map_err(tls_error)?);
                }
                match handed_over {
                    Some(sockets) => sockets,
                    None => {
                        let mut address = identity.address;
                        let mut sockets = Vec::with_capacity(self.workers);
                        for _ in 0..self.workers {
                            let socket =
                                super::bind_tcp(address, identity.interception.transparent)
                                    .map_err(|source| bind_error(address, source))?;
                            // Port 0 asks for any free port: every worker then shares the one
                            // the first bind got.
                            address = socket
                                .local_addr()
                                .map_err(|source| bind_error(address, source))?;
                            sockets.push(socket);
                        }
                        Sockets::Tcp(sockets)
                    }
                }
            }
        };
        let address = match &sockets {
            Sockets::Tcp(sockets) => sockets.first().and_then(|s| s.local_addr().ok()),
            Sockets::Quic(socket) => socket.local_addr().ok(),
        }
        .unwrap_or(identity.address);
        Ok(BoundListener {
            name: name.to_owned(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            kind: identity.kind,
            address,
            interception: identity.interception,
            tls,
            quic,
            identity,
            held: Mutex::new(Some(Held {
                sockets,
                life: Arc::default(),
            })),
        })
    }
}

impl BoundListener {
    /// Duplicates of this listener's TCP sockets for the listener `next` that replaces it,
    /// where `next` binds the same address the same way (so the port stays open across the
    /// change); `None` where it must bind its own.
    ///
    /// A QUIC listener replaced at the same address shares its UDP socket the same way; its
    /// worker hands the running endpoint over to the new listener (see
    /// [`super::quic::quic_accept_loop`]), as one socket cannot feed two endpoints.
    fn shareable_sockets(&self, next: &Identity) -> Option<Sockets> {
        let both_quic = next.kind == ListenerKind::Quic && self.kind == ListenerKind::Quic;
        let both_tcp = next.kind != ListenerKind::Quic && self.kind != ListenerKind::Quic;
        let same_socket = (both_quic || both_tcp)
            && next.address == self.identity.address
            && next.interception.transparent == self.interception.transparent;
        if !same_socket {
            return None;
        }
        let held = self.held.lock().ok()?;
        let duplicates = match &held.as_ref()?.sockets {
            Sockets::Tcp(sockets) => sockets
                .iter()
                .map(std::net::TcpListener::try_clone)
                .collect::<std::io::Result<Vec<_>>>()
                .map(Sockets::Tcp),
            Sockets::Quic(socket) => socket.try_clone().map(Sockets::Quic),
        };
        match duplicates {
            Ok(duplicates) => Some(duplicates),
            Err(error) => {
                tracing::warn!(listener = %self.name, %error, "cannot share the running sockets; binding new ones");
                None
            }
        }
    }

    /// The drain marker of this listener's accept loops; `None` once it is retired.
    pub fn life(&self) -> Option<Arc<ListenerLife>> {
        let held = self.held.lock().ok()?;
        Some(held.as_ref()?.life.clone())
    }

    /// Worker `worker`'s own descriptor of this listener's socket (TCP: its socket; QUIC:
    /// the UDP socket, for worker 0 only) and the drain marker its accept loop holds; `None`
    /// once the listener is retired (or where the worker has none).
    pub fn take_for_worker(&self, worker: usize) -> Option<(WorkerSocket, Arc<ListenerLife>)> {
        let held = self.held.lock().ok()?;
        let held = held.as_ref()?;
        let socket = match &held.sockets {
            Sockets::Tcp(sockets) => WorkerSocket::Tcp(sockets.get(worker)?.try_clone().ok()?),
            Sockets::Quic(socket) if worker == 0 => WorkerSocket::Quic(socket.try_clone().ok()?),
            Sockets::Quic(_) => return None,
        };
        Some((socket, held.life.clone()))
    }

    /// Closes what the set holds of this listener and marks it draining.
    fn retire(&self) {
        let held = match self.held.lock() {
            Ok(mut held) => held.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(held) = held {
            held.life.start_draining();
        }
    }
}

/// One worker's descriptor of a listener's socket.
#[derive(Debug)]
pub enum WorkerSocket {
    /// A TCP listening socket.
    Tcp(std::net::TcpListener),
    /// A QUIC endpoint's UDP socket.
    Quic(std::net::UdpSocket),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::load_str;

    /// A config with an HTTP listener per `(name, port, body)`, each answering `body`.
    fn config(listeners: &[(&str, u16, &str)]) -> Config {
        let listeners: String = listeners
            .iter()
            .map(|(name, port, body)| {
                format!(
                    r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "{body}" }} }}
          http_filters:
          - name: envoy.filters.http.router
"#
                )
            })
            .collect();
        let text = format!("static_resources:\n  listeners:{listeners}");
        match load_str(&text, "t.yaml") {
            Ok(config) => config,
            Err(error) => panic!("test config: {error}"),
        }
    }

    fn free_port() -> u16 {
        match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(address) => address.port(),
            Err(error) => panic!("no free port: {error}"),
        }
    }

    fn bind(config: &Config) -> ListenerSet {
        match ListenerSet::bind(config, 2) {
            Ok(set) => set,
            Err(error) => panic!("bind: {error}"),
        }
    }

    fn refused(address: SocketAddr) -> bool {
        std::net::TcpStream::connect(address)
            .is_err_and(|error| error.kind() == std::io::ErrorKind::ConnectionRefused)
    }

    #[test]
    fn a_reload_adds_removes_replaces_and_keeps_listeners_by_name() {
        let (a, b, c) = (free_port(), free_port(), free_port());
        let first = bind(&config(&[("a", a, "1"), ("b", b, "1")]));
        let b_address = first.get("b").map(|l| l.address);
        // a: only its routes change (kept); b: gone; c: new.
        let next = config(&[("a", a, "2"), ("c", c, "1")]);
        let (second, changes) = match first.successor(&next) {
            Ok(done) => done,
            Err(error) => panic!("successor: {error}"),
        };
        assert_eq!(changes.added, ["c"]);
        assert_eq!(changes.removed, ["b"]);
        assert!(changes.modified.is_empty());
        let (Some(kept), Some(old)) = (second.get("a"), first.get("a")) else {
            panic!("a is in both sets");
        };
        assert!(
            Arc::ptr_eq(kept, old),
            "a listener whose routes changed is kept"
        );
        // Until retired, the old set still holds b's sockets: the port is open.
        let Some(b_address) = b_address else {
            panic!("b was bound")
        };
        assert!(!refused(b_address));
        first.retire(&second, &changes);
        assert!(refused(b_address), "a retired listener's port is closed");
        assert!(!refused(SocketAddr::from(([127, 0, 0, 1], c))));
        second.close_all();
    }

    #[test]
    fn a_replaced_listener_at_the_same_address_shares_the_open_socket() {
        let port = free_port();
        let first = bind(&config(&[("a", port, "1")]));
        let mut moved = config(&[("a", port, "1")]);
        moved.listeners[0].interception.use_original_dst = true;
        let (second, changes) = match first.successor(&moved) {
            Ok(done) => done,
            Err(error) => panic!("successor: {error}"),
        };
        assert_eq!(changes.modified, ["a"]);
        let (Some(new), Some(old)) = (second.get("a"), first.get("a")) else {
            panic!("a is in both sets");
        };
        assert_ne!(new.id, old.id, "a replaced listener is a new bind");
        first.retire(&second, &changes);
        // The socket stayed open through the retirement of the old listener.
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(!refused(address), "the port never closed");
        let Some((WorkerSocket::Tcp(socket), _)) = new.take_for_worker(1) else {
            panic!("worker 1 has a TCP socket");
        };
        assert_eq!(socket.local_addr().ok(), Some(address));
        assert!(
            old.take_for_worker(0).is_none(),
            "the retired listener holds nothing"
        );
        second.close_all();
        drop(socket);
        assert!(refused(address));
    }

    #[test]
    fn a_port_in_use_refuses_the_new_set_and_keeps_the_old() {
        let (a, taken) = (free_port(), free_port());
        let first = bind(&config(&[("a", a, "1")]));
        let _holder = match std::net::TcpListener::bind(("127.0.0.1", taken)) {
            Ok(holder) => holder,
            Err(error) => panic!("bind: {error}"),
        };
        let result = first.successor(&config(&[("a", a, "1"), ("b", taken, "1")]));
        assert!(
            matches!(result, Err(BindError::Bind { ref listener, .. }) if listener == "b"),
            "{result:?}"
        );
        assert!(!refused(SocketAddr::from(([127, 0, 0, 1], a))));
    }
}
