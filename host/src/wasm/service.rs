//! Bootstrap Wasm services (`bootstrap_extensions[]`, `envoy.bootstrap.wasm`): a plugin whose
//! root context runs for the life of the process instead of serving streams.
//!
//! A service's VM lives in a [`VmSlot`] like a filter's, so it gets the same host: its
//! `proxy_on_vm_start` and `proxy_on_configure`, `proxy_on_tick` at the period it sets, shared
//! data and queues (keyed by `vm_id`, shared with the filters of the same `vm_id`: a filter
//! resolves the queue the service registered and enqueues, the service is woken by
//! `proxy_on_queue_ready`), and `proxy_http_call` with `proxy_on_http_call_response`, through
//! the pools of the thread it runs on, following each new config snapshot.
//!
//! [`supervise`] keeps one VM running: where the singleton runs (its own thread, see
//! [`crate::services`]) or on each worker ([`crate::worker`]). A VM that traps, runs past its
//! deadline or its memory limit is dropped (`weir_wasm_vm_failures_total`), and started again
//! after a back-off that doubles from [`RESTART_MIN`] to [`RESTART_MAX`] while it keeps failing
//! (`weir_wasm_service_restarts_total`), so a service that traps at once cannot spin the CPU.
//! On shutdown its root context ends (`proxy_on_done`, `proxy_on_delete`).

use super::PluginHandle;
use super::slot::VmSlot;
use crate::upstream::WorkerPools;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The wait before the first restart of a failed service.
pub const RESTART_MIN: Duration = Duration::from_millis(500);
/// The longest wait between restarts.
pub const RESTART_MAX: Duration = Duration::from_secs(30);
/// A VM that ran this long before failing is restarted after [`RESTART_MIN`] again.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Runs the Wasm service `plugin` (one VM, on the current tokio runtime, its callouts through
/// `pools`) until `stop` turns true: restarts it after each failure (see the module docs), then
/// ends its root context. `place` names where it runs in logs (`singleton`, `worker 2`).
pub async fn supervise(
    plugin: Arc<PluginHandle>,
    pools: Arc<ArcSwap<WorkerPools>>,
    mut stop: watch::Receiver<bool>,
    place: String,
) {
    // Services take local code only (snapshot::bootstrap::wasm_services), so the plugin is loaded.
    let Some(slot) = VmSlot::for_service(&plugin, pools) else {
        tracing::error!(service = plugin.name(), %place, "Wasm service not started: its module is not loaded");
        return;
    };
    let name = plugin.name().to_string();
    let restarts = super::metrics::service_restarts(&name);
    if slot.is_running() {
        tracing::info!(service = %name, %place, "Wasm service started");
    }
    let mut backoff = RESTART_MIN;
    let mut started = Instant::now();
    loop {
        if slot.is_running() {
            tokio::select! {
                () = slot.failed_wait() => {}
                () = stopped(&mut stop) => break,
            }
            if slot.is_running() {
                // A wake-up left from an earlier failed start.
                continue;
            }
            if started.elapsed() >= HEALTHY_AFTER {
                backoff = RESTART_MIN;
            }
        }
        tracing::warn!(service = %name, %place, delay = ?backoff, "Wasm service is down; restarting it after the delay");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => break,
        }
        backoff = (backoff * 2).min(RESTART_MAX);
        started = Instant::now();
        restarts.inc();
        if slot.ensure_started().is_ok() {
            tracing::info!(service = %name, %place, "Wasm service restarted");
        }
    }
    // The last reference: dropping it ends the root context (`proxy_on_done`, `_delete`).
    drop(slot);
    tracing::info!(service = %name, %place, "Wasm service stopped");
}

/// Returns once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
