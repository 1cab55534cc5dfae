//! Workers: N threads, each a single-threaded tokio runtime with its own `SO_REUSEPORT`
//! sockets, its own connection pools and its own connection managers, as Envoy's are. Nothing
//! on the request path is shared between workers but atomics.
//!
//! Each worker follows the config [`Snapshot`]s a reload publishes: for a new one it builds
//! its connection managers (routes, filter chains with their VMs) and pools anew, carrying
//! over the pools of clusters the reload left unchanged, and stores them where its accept
//! loops take them from; then it reports the generation it runs.

use crate::config::Interception;
use crate::http::{CurrentManager, HttpManager};
use crate::listener::{self, TlsError};
use crate::reload::{Publisher, Snapshot};
use crate::snapshot::ListenerConfig;
use crate::tunnel::tcp_proxy::{CurrentTcpProxy, TcpProxy};
use crate::upstream::WorkerPools;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
    /// A worker thread could not be created.
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
}

/// How long a worker waits for its Wasm services to end their root contexts at shutdown.
const SERVICE_STOP_TIME: Duration = Duration::from_secs(2);

/// The running workers.
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    addresses: Vec<(String, SocketAddr)>,
    publisher: Publisher,
}

/// A tcp_proxy listener's config and socket on one worker.
struct TcpWorkerListener {
    /// Its place in the config's `tcp_listeners`.
    index: usize,
    config: Arc<crate::snapshot::TcpProxyConfig>,
    socket: std::net::TcpListener,
    interception: Interception,
}

/// What one worker serves: each listener's config, sockets and TLS.
struct WorkerListener {
    /// Its place in the config's `listeners`.
    index: usize,
    config: Arc<crate::snapshot::HttpManagerConfig>,
    socket: ListenerSocket,
    tls: Option<tokio_rustls::TlsAcceptor>,
    interception: Interception,
}

/// A TCP socket (one per worker) or a QUIC endpoint's UDP socket (worker 0 only; see
/// [`listener::quic`]).
enum ListenerSocket {
    Tcp(std::net::TcpListener),
    Quic(std::net::UdpSocket, quinn::ServerConfig),
}

impl Workers {
    /// Binds every listener of the `snapshot`'s config once per worker and starts
    /// `concurrency` workers serving them. Binding and TLS errors surface here, before anything
    /// is served. The workers then follow the snapshots [`Workers::publisher`] sends.
    pub fn start(
        snapshot: &Arc<Snapshot>,
        concurrency: usize,
        drain_time: Duration,
    ) -> Result<Workers, StartError> {
        let config = &snapshot.config;
        let concurrency = concurrency.max(1);
        let mut per_worker: Vec<Vec<WorkerListener>> =
            (0..concurrency).map(|_| Vec::new()).collect();
        let mut addresses = Vec::new();
        for (index, listener) in config.listeners.iter().enumerate() {
            if let Some(settings) = &listener.quic {
                // `per_worker` has at least one worker (concurrency.max(1)).
                if let Some(first) = per_worker.first_mut() {
                    let address = start_quic(index, listener, settings, first)?;
                    addresses.push((listener.name.clone(), address));
                }
                continue;
            }
            let tls = match &listener.tls {
                Some(tls) => {
                    Some(
                        listener::tls::acceptor(tls).map_err(|source| StartError::Tls {
                            listener: listener.name.clone(),
                            source,
                        })?,
                    )
                }
                None => None,
            };
            let http = Arc::new(listener.http.clone());
            let mut address = listener.address;
            for sockets in per_worker.iter_mut() {
                let socket = bind(listener, address)?;
                // Port 0 asks for any free port: every worker must then share the one the
                // first bind got.
                address = socket.local_addr().map_err(|source| StartError::Bind {
                    listener: listener.name.clone(),
                    address,
                    source,
                })?;
                sockets.push(WorkerListener {
                    index,
                    config: http.clone(),
                    socket: ListenerSocket::Tcp(socket),
                    tls: tls.clone(),
                    interception: listener.interception,
                });
            }
            addresses.push((listener.name.clone(), address));
        }
        let mut tcp_per_worker: Vec<Vec<TcpWorkerListener>> =
            (0..concurrency).map(|_| Vec::new()).collect();
        for (index, listener) in config.tcp_listeners.iter().enumerate() {
            let proxy = Arc::new(listener.proxy.clone());
            let mut address = listener.address;
            for sockets in tcp_per_worker.iter_mut() {
                let transparent = listener.interception.transparent;
                let socket = listener::bind_tcp(address, transparent).map_err(|source| {
                    StartError::Bind {
                        listener: listener.name.clone(),
                        address,
                        source,
                    }
                })?;
                address = socket.local_addr().map_err(|source| StartError::Bind {
                    listener: listener.name.clone(),
                    address,
                    source,
                })?;
                sockets.push(TcpWorkerListener {
                    index,
                    config: proxy.clone(),
                    socket,
                    interception: listener.interception,
                });
            }
            addresses.push((listener.name.clone(), address));
        }
        let (shutdown, _) = watch::channel(false);
        let (updates, _) = watch::channel(snapshot.clone());
        let mut threads = Vec::new();
        let mut applied = Vec::new();
        for (index, (listeners, tcp_listeners)) in
            per_worker.into_iter().zip(tcp_per_worker).enumerate()
        {
            let shutdown = shutdown.subscribe();
            let (applied_tx, applied_rx) = watch::channel(snapshot.generation);
            applied.push(applied_rx);
            let follow = SnapshotFollower {
                updates: updates.subscribe(),
                applied: applied_tx,
            };
            let snapshot = snapshot.clone();
            let thread = std::thread::Builder::new()
                .name(format!("weir-worker-{index}"))
                .spawn(move || {
                    run_worker(
                        index,
                        listeners,
                        tcp_listeners,
                        snapshot,
                        follow,
                        shutdown,
                        drain_time,
                    )
                })
                .map_err(StartError::Thread)?;
            threads.push(thread);
        }
        Ok(Workers {
            threads,
            shutdown,
            addresses,
            publisher: Publisher::new(Arc::new(updates), applied),
        })
    }

    /// What hands new snapshots to these workers (for the [`crate::reload::Reloader`]).
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Where each listener is bound (useful when the config asked for port 0).
    pub fn addresses(&self) -> &[(String, SocketAddr)] {
        &self.addresses
    }

    /// What stops every listener as [`Workers::shutdown`] does, without waiting for the
    /// workers (`POST /drain_listeners`): listeners close, connections drain, the process
    /// stays up.
    pub fn drain_listeners(&self) -> impl Fn() + Clone + Send + Sync + 'static {
        let shutdown = self.shutdown.clone();
        move || {
            shutdown.send_replace(true);
        }
    }

    /// Stops accepting, lets in-flight requests finish (each worker waits up to the drain
    /// time), and returns when every worker has exited. Blocks the calling thread.
    pub fn shutdown(self) {
        self.shutdown.send_replace(true);
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

/// Binds a QUIC listener and gives it to `worker` (its TLS and QUIC config checked now).
fn start_quic(
    index: usize,
    listener: &ListenerConfig,
    settings: &crate::upstream::Http3Settings,
    worker: &mut Vec<WorkerListener>,
) -> Result<SocketAddr, StartError> {
    let tls_error = |source| StartError::Tls {
        listener: listener.name.clone(),
        source,
    };
    let Some(tls) = &listener.tls else {
        return Err(tls_error(TlsError::Invalid {
            path: Default::default(),
            what: "a QUIC listener needs certificates".into(),
        }));
    };
    let server = listener::quic::server_config(tls, settings).map_err(tls_error)?;
    let bind_error = |source| StartError::Bind {
        listener: listener.name.clone(),
        address: listener.address,
        source,
    };
    let socket = listener::quic::bind_udp(listener.address).map_err(bind_error)?;
    let address = socket.local_addr().map_err(bind_error)?;
    worker.push(WorkerListener {
        index,
        config: Arc::new(listener.http.clone()),
        socket: ListenerSocket::Quic(socket, server),
        tls: None,
        interception: listener.interception,
    });
    Ok(address)
}

fn bind(
    listener: &ListenerConfig,
    address: SocketAddr,
) -> Result<std::net::TcpListener, StartError> {
    listener::bind_tcp(address, listener.interception.transparent).map_err(|source| {
        StartError::Bind {
            listener: listener.name.clone(),
            address,
            source,
        }
    })
}

/// A worker's ends of the snapshot channels.
struct SnapshotFollower {
    /// The newest snapshot.
    updates: watch::Receiver<Arc<Snapshot>>,
    /// The generation this worker runs.
    applied: watch::Sender<u64>,
}

fn run_worker(
    index: usize,
    listeners: Vec<WorkerListener>,
    tcp_listeners: Vec<TcpWorkerListener>,
    snapshot: Arc<Snapshot>,
    follow: SnapshotFollower,
    mut shutdown: watch::Receiver<bool>,
    drain_time: Duration,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(worker = index, %error, "cannot build worker runtime");
            return;
        }
    };
    runtime.block_on(async move {
        // The access log notes the host each request goes to.
        let pools = WorkerPools::new(snapshot.clusters.clone())
            .noting_hosts(crate::access_log::http::note_upstream);
        let service_pools = Arc::new(ArcSwap::from_pointee(pools.clone()));
        let (stop_services, services_stop) = watch::channel(false);
        let services: Vec<_> = snapshot
            .config
            .wasm_services
            .iter()
            .filter(|service| !service.singleton)
            .map(|service| {
                tokio::spawn(crate::wasm::service::supervise(
                    service.plugin.clone(),
                    service_pools.clone(),
                    services_stop.clone(),
                    format!("worker {index}"),
                ))
            })
            .collect();
        drop(snapshot);
        let (alive, mut all_closed) = mpsc::channel::<()>(1);
        let mut managers = Vec::new();
        let mut proxies = Vec::new();
        for listener in listeners {
            let manager = Arc::new(ArcSwap::new(HttpManager::new(
                listener.config,
                pools.clone(),
            )));
            managers.push((listener.index, manager.clone()));
            match listener.socket {
                ListenerSocket::Tcp(socket) => tokio::spawn(listener::accept_loop(
                    socket,
                    listener.interception,
                    listener.tls,
                    manager,
                    shutdown.clone(),
                    alive.clone(),
                )),
                ListenerSocket::Quic(socket, server) => {
                    tokio::spawn(listener::quic::quic_accept_loop(
                        socket,
                        server,
                        manager,
                        shutdown.clone(),
                        alive.clone(),
                    ))
                }
            };
        }
        for listener in tcp_listeners {
            let proxy = Arc::new(ArcSwap::new(TcpProxy::new(
                listener.config,
                listener.interception,
                pools.clone(),
            )));
            proxies.push((listener.index, proxy.clone()));
            tokio::spawn(listener::tcp_proxy_accept_loop(
                proxy,
                listener.socket,
                shutdown.clone(),
                alive.clone(),
            ));
        }
        drop(alive);
        tokio::spawn(follow_snapshots(
            index,
            follow,
            managers,
            proxies,
            pools,
            service_pools,
        ));
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        tracing::debug!(worker = index, "draining");
        // Every connection holds a sender; recv() returns None once all are gone.
        if tokio::time::timeout(drain_time, all_closed.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                worker = index,
                ?drain_time,
                "drain time over with connections still open; closing them"
            );
        }
        // The Wasm services on this worker outlive its connections (a filter may enqueue to
        // one until its stream ends), then end their root contexts.
        stop_services.send_replace(true);
        for service in services {
            if tokio::time::timeout(SERVICE_STOP_TIME, service)
                .await
                .is_err()
            {
                tracing::warn!(worker = index, "a Wasm service did not stop in time");
            }
        }
    });
}

/// Builds this worker's connection managers and tcp proxies for each new snapshot and stores
/// them where the accept loops take them from; streams in flight keep the ones they started
/// with. Ends when the workers are gone (the sender is dropped).
async fn follow_snapshots(
    worker: usize,
    mut follow: SnapshotFollower,
    managers: Vec<(usize, Arc<CurrentManager>)>,
    proxies: Vec<(usize, Arc<CurrentTcpProxy>)>,
    mut pools: WorkerPools,
    service_pools: Arc<ArcSwap<WorkerPools>>,
) {
    while follow.updates.changed().await.is_ok() {
        let snapshot = follow.updates.borrow_and_update().clone();
        pools = pools.successor(snapshot.clusters.clone());
        service_pools.store(Arc::new(pools.clone()));
        let config = &snapshot.config;
        for (index, current) in &managers {
            // The reload refused any change to the set of listeners, so the index holds.
            if let Some(listener) = config.listeners.get(*index) {
                let http = Arc::new(listener.http.clone());
                current.store(HttpManager::new(http, pools.clone()));
            }
        }
        for (index, current) in &proxies {
            if let Some(listener) = config.tcp_listeners.get(*index) {
                let proxy = Arc::new(listener.proxy.clone());
                current.store(TcpProxy::new(proxy, listener.interception, pools.clone()));
            }
        }
        tracing::debug!(
            worker,
            generation = snapshot.generation,
            "worker runs the new config"
        );
        follow.applied.send_replace(snapshot.generation);
    }
}
