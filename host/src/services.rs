//! The singleton Wasm services of `bootstrap_extensions` (`singleton: true`): each runs one VM
//! for the process, on a thread of its own (`weir-wasm-service-N`, a single-threaded tokio
//! runtime), with connection pools of its own that follow each config snapshot as a worker's
//! do. Per-worker services (`singleton: false`) run on the workers instead ([`crate::worker`]).
//! What a service's VM gets and how it is restarted: [`crate::wasm::service`].
//!
//! They start after the workers and stop after them (a filter may enqueue to a service until
//! its stream ends), before the clusters shut down.

use crate::reload::Snapshot;
use crate::upstream::WorkerPools;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long [`SingletonServices::shutdown`] waits for the services to end.
const STOP_TIME: Duration = Duration::from_secs(5);

/// The running singleton services.
pub struct SingletonServices {
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl SingletonServices {
    /// Starts a thread for each singleton service of `snapshot`'s config; `updates` brings the
    /// snapshots published later (for the services' pools).
    pub fn start(
        snapshot: &Arc<Snapshot>,
        updates: watch::Receiver<Arc<Snapshot>>,
    ) -> std::io::Result<SingletonServices> {
        let (stop, _) = watch::channel(false);
        let mut threads = Vec::new();
        let singletons = snapshot
            .config
            .wasm_services
            .iter()
            .filter(|service| service.singleton);
        for (index, service) in singletons.enumerate() {
            let plugin = service.plugin.clone();
            let clusters = snapshot.clusters.clone();
            let updates = updates.clone();
            let stop = stop.subscribe();
            let thread = std::thread::Builder::new()
                .name(format!("weir-wasm-service-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            tracing::error!(%error, "cannot build a Wasm service's runtime");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let pools = Arc::new(ArcSwap::from_pointee(WorkerPools::new(clusters)));
                        let follow = tokio::spawn(follow_snapshots(updates, pools.clone()));
                        crate::wasm::service::supervise(plugin, pools, stop, "singleton".into())
                            .await;
                        follow.abort();
                    });
                })?;
            threads.push(thread);
        }
        Ok(SingletonServices { stop, threads })
    }

    /// Stops every singleton service (each ends its root context) and waits, up to a bound,
    /// for their threads. Blocks the calling thread.
    pub fn shutdown(self) {
        self.stop.send_replace(true);
        let deadline = Instant::now() + STOP_TIME;
        for thread in self.threads {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !thread.is_finished() {
                tracing::warn!("a singleton Wasm service did not stop in time; leaving it");
                continue;
            }
            if thread.join().is_err() {
                tracing::error!("a singleton Wasm service's thread panicked");
            }
        }
    }
}

/// Keeps `pools` on each new snapshot's clusters (pools of unchanged clusters carried over).
async fn follow_snapshots(
    mut updates: watch::Receiver<Arc<Snapshot>>,
    pools: Arc<ArcSwap<WorkerPools>>,
) {
    while updates.changed().await.is_ok() {
        let snapshot = updates.borrow_and_update().clone();
        let next = pools.load().successor(snapshot.clusters.clone());
        pools.store(Arc::new(next));
    }
}
