//! Workers: N threads, each a single-threaded tokio runtime with its own `SO_REUSEPORT`
//! sockets, its own connection pools and its own connection managers, as Envoy's are. Nothing
//! on the request path is shared between workers but atomics.
//!
//! Each worker follows the config [`Snapshot`]s a reload publishes: for a new one it builds
//! its connection managers (routes, filter chains with their VMs) and pools anew, carrying
//! over the pools of clusters the reload left unchanged, and stores them where its accept
//! loops take them from; it starts an accept loop for each listener the snapshot's set adds
//! and stops (drains) those of the listeners it removes or replaces (see
//! [`crate::listener::set`]); then it reports the generation it runs.

use crate::http::{CurrentManager, HttpManager};
use crate::listener::set::{BoundListener, ListenerKind, WorkerSocket};
use crate::listener::{self};
use crate::reload::{Publisher, Snapshot};
use crate::tunnel::tcp_proxy::{CurrentTcpProxy, TcpProxy};
use crate::upstream::WorkerPools;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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

impl Workers {
    /// Starts `concurrency` workers serving the listeners of the `snapshot` (bound in its
    /// [`crate::listener::set::ListenerSet`], one socket per worker for each TCP listener).
    /// The workers then follow the snapshots [`Workers::publisher`] sends: each starts the
    /// listeners a new snapshot adds, drains those it removes or replaces (for `drain_time`),
    /// and gives those it keeps the new connection managers.
    pub fn start(
        snapshot: &Arc<Snapshot>,
        concurrency: usize,
        drain_time: Duration,
    ) -> Result<Workers, StartError> {
        let concurrency = concurrency.max(1);
        let addresses = snapshot
            .listeners
            .listeners()
            .iter()
            .map(|listener| (listener.name.clone(), listener.address))
            .collect();
        snapshot.listeners.count_started();
        let (shutdown, _) = watch::channel(false);
        let (updates, _) = watch::channel(snapshot.clone());
        let mut threads = Vec::new();
        let mut applied = Vec::new();
        for index in 0..concurrency {
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
                .spawn(move || run_worker(index, snapshot, follow, shutdown, drain_time))
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

    /// Where each listener was bound at start (useful when the config asked for port 0).
    pub fn addresses(&self) -> &[(String, SocketAddr)] {
        &self.addresses
    }

    /// What stops every listener as [`Workers::shutdown`] does, without waiting for the
    /// workers (`POST /drain_listeners`): listeners close, connections drain, the process
    /// stays up.
    pub fn drain_listeners(&self) -> impl Fn() + Clone + Send + Sync + 'static {
        let shutdown = self.shutdown.clone();
        let publisher = self.publisher.clone();
        move || {
            // The set in force holds a descriptor of each listening socket: closed now, so
            // the ports close as the workers' accept loops stop.
            publisher.latest().listeners.close_all();
            shutdown.send_replace(true);
        }
    }

    /// Stops accepting, lets in-flight requests finish (each worker waits up to the drain
    /// time), and returns when every worker has exited. Blocks the calling thread.
    pub fn shutdown(self) {
        (self.drain_listeners())();
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
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
        let (alive, mut all_closed) = mpsc::channel::<()>(1);
        let mut listeners = WorkerListeners {
            worker: index,
            drain_time,
            alive,
            running: HashMap::new(),
        };
        listeners.follow(&snapshot, &pools);
        drop(snapshot);
        tokio::spawn(follow_snapshots(
            index,
            follow,
            listeners,
            pools,
            service_pools,
            shutdown.clone(),
        ));
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        tracing::debug!(worker = index, "draining");
        // Every accept loop and connection holds a sender; recv() returns None once all are
        // gone.
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

/// What one of a worker's listeners serves with: the connection manager or tcp_proxy its
/// accept loop takes for each new connection.
enum Serves {
    Http(Arc<CurrentManager>),
    TcpProxy(Arc<CurrentTcpProxy>),
}

/// One listener running on a worker.
struct RunningListener {
    /// The [`BoundListener::id`] it runs.
    id: u64,
    serves: Serves,
    /// Stops its accept loop and drains its connections.
    stop: watch::Sender<listener::Stop>,
    /// A QUIC listener's: where its endpoint takes the listener that replaces it at the same
    /// address.
    replaced: Option<(
        SocketAddr,
        mpsc::UnboundedSender<listener::quic::QuicTarget>,
    )>,
}

impl RunningListener {
    /// Whether `next`, which replaces this listener, takes its running QUIC endpoint over.
    fn handed_over_to(&self, next: &BoundListener) -> bool {
        next.kind == ListenerKind::Quic
            && self
                .replaced
                .as_ref()
                .is_some_and(|(address, to)| *address == next.address && !to.is_closed())
    }
}

/// The listeners one worker runs, by name, following the snapshots' listener sets.
struct WorkerListeners {
    worker: usize,
    drain_time: Duration,
    /// Held by every accept loop and connection (see [`run_worker`]).
    alive: mpsc::Sender<()>,
    running: HashMap<String, RunningListener>,
}

impl WorkerListeners {
    /// Runs the listeners of `snapshot`: drains those it no longer has (or has replaced),
    /// starts those this worker does not run yet, and gives the others the new connection
    /// manager (or tcp_proxy), which their accept loops take for each new connection.
    fn follow(&mut self, snapshot: &Snapshot, pools: &WorkerPools) {
        let set = &snapshot.listeners;
        self.running.retain(|name, running| {
            let kept = set
                .get(name)
                .is_some_and(|bound| bound.id == running.id || running.handed_over_to(bound));
            if !kept {
                tracing::debug!(worker = self.worker, listener = %name, "draining listener");
                running.stop.send_replace(listener::Stop::Retired);
            }
            kept
        });
        let config = &snapshot.config;
        let http: HashMap<&str, _> = config
            .listeners
            .iter()
            .map(|listener| (listener.name.as_str(), listener))
            .collect();
        let tcp: HashMap<&str, _> = config
            .tcp_listeners
            .iter()
            .map(|listener| (listener.name.as_str(), listener))
            .collect();
        for bound in set.listeners() {
            let name = bound.name.as_str();
            match (bound.kind, http.get(name), tcp.get(name)) {
                (ListenerKind::Http | ListenerKind::Quic, Some(listener), _) => {
                    let manager = HttpManager::new(listener.http.clone(), pools.clone());
                    match self.running.get_mut(name) {
                        Some(running) if running.id != bound.id => {
                            hand_over(running, bound, manager)
                        }
                        Some(RunningListener {
                            serves: Serves::Http(current),
                            ..
                        }) => current.store(manager),
                        _ => self.start(bound, Serves::Http(Arc::new(ArcSwap::new(manager)))),
                    }
                }
                (ListenerKind::TcpProxy, _, Some(listener)) => {
                    let proxy = TcpProxy::new(
                        Arc::new(listener.proxy.clone()),
                        listener.interception,
                        pools.clone(),
                    );
                    match self.running.get(name).map(|running| &running.serves) {
                        Some(Serves::TcpProxy(current)) => current.store(proxy),
                        _ => self.start(bound, Serves::TcpProxy(Arc::new(ArcSwap::new(proxy)))),
                    }
                }
                _ => tracing::error!(listener = %name, "listener missing from its own config"),
            }
        }
    }

    /// Starts this worker's accept loop of `bound`, serving with `serves`.
    fn start(&mut self, bound: &BoundListener, serves: Serves) {
        if bound.kind == ListenerKind::Quic && self.worker != 0 {
            // One endpoint per QUIC listener, on worker 0 (see `listener::quic`).
            return;
        }
        let Some((socket, life)) = bound.take_for_worker(self.worker) else {
            tracing::warn!(worker = self.worker, listener = %bound.name, "the listener's socket is gone (retired before this worker ran it); not started");
            return;
        };
        let (stop, stopped) = watch::channel(listener::Stop::Running);
        let alive = self.alive.clone();
        let drain_time = self.drain_time;
        let mut quic = None;
        match (socket, &serves) {
            (WorkerSocket::Tcp(socket), Serves::Http(manager)) => {
                let serving = listener::accept_loop(
                    socket,
                    bound.interception,
                    bound.tls.clone(),
                    manager.clone(),
                    stopped,
                    alive,
                    drain_time,
                );
                tokio::spawn(async move {
                    let _life = life;
                    serving.await;
                });
            }
            (WorkerSocket::Quic(socket), Serves::Http(manager)) => {
                let Some(config) = bound.quic.clone() else {
                    return;
                };
                let (replace, replaced) = mpsc::unbounded_channel();
                tokio::spawn(listener::quic::quic_accept_loop(
                    socket,
                    listener::quic::QuicTarget {
                        config,
                        manager: manager.clone(),
                        life,
                    },
                    stopped,
                    replaced,
                    alive,
                    drain_time,
                ));
                quic = Some((bound.address, replace));
            }
            (WorkerSocket::Tcp(socket), Serves::TcpProxy(proxy)) => {
                let serving = listener::tcp_proxy_accept_loop(
                    proxy.clone(),
                    socket,
                    stopped,
                    alive,
                    drain_time,
                );
                tokio::spawn(async move {
                    let _life = life;
                    serving.await;
                });
            }
            (WorkerSocket::Quic(_), Serves::TcpProxy(_)) => return,
        }
        self.running.insert(
            bound.name.clone(),
            RunningListener {
                id: bound.id,
                serves,
                stop,
                replaced: quic,
            },
        );
    }

    /// Stops every listener (the worker stops): each drains.
    fn stop_all(&mut self) {
        for running in self.running.values() {
            running.stop.send_replace(listener::Stop::Shutdown);
        }
        self.running.clear();
    }
}

/// Hands the QUIC endpoint `running` serves over to `next`, which replaces it at the same
/// address (see [`listener::quic::quic_accept_loop`]): new connections get `next`'s TLS and
/// `manager` at once; those open drain.
fn hand_over(running: &mut RunningListener, next: &BoundListener, manager: Arc<HttpManager>) {
    let (Some(config), Some(life), Some((_, to))) =
        (next.quic.clone(), next.life(), &running.replaced)
    else {
        tracing::warn!(listener = %next.name, "cannot hand the QUIC endpoint over (listener already retired)");
        return;
    };
    let current = Arc::new(ArcSwap::new(manager));
    let target = listener::quic::QuicTarget {
        config,
        manager: current.clone(),
        life,
    };
    if to.send(target).is_err() {
        tracing::warn!(listener = %next.name, "the QUIC endpoint is gone; not handed over");
        return;
    }
    running.id = next.id;
    running.serves = Serves::Http(current);
}

/// Follows each new snapshot: carries this worker's pools over to its clusters and runs its
/// listeners ([`WorkerListeners::follow`]); streams in flight keep the managers they started
/// with. At shutdown it stops every listener. Ends when the workers stop or are gone (the
/// sender is dropped).
async fn follow_snapshots(
    worker: usize,
    mut follow: SnapshotFollower,
    mut listeners: WorkerListeners,
    mut pools: WorkerPools,
    service_pools: Arc<ArcSwap<WorkerPools>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = follow.updates.changed() => if changed.is_err() { break },
            changed = shutdown.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break,
            },
        }
        let snapshot = follow.updates.borrow_and_update().clone();
        pools = pools.successor(snapshot.clusters.clone());
        service_pools.store(Arc::new(pools.clone()));
        listeners.follow(&snapshot, &pools);
        tracing::debug!(
            worker,
            generation = snapshot.generation,
            "worker runs the new config"
        );
        follow.applied.send_replace(snapshot.generation);
    }
    listeners.stop_all();
}
