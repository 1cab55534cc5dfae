//! One worker's VM of one plugin ([`VmSlot`]), and one stream's context in it
//! ([`StreamHandle`]).
//!
//! The VM is created when the slot is (on the worker, so its timers run there), and again on
//! the next use after it failed: a trap, deadline or memory limit drops it, counts
//! `weir_wasm_vm_failures_total{plugin}`, tells every stream that had a context in it
//! ([`StreamEvent::VmFailed`]) and bumps the slot's generation, so late callbacks (a timer, a
//! callout's answer, the end of a stream) for the dead VM are dropped instead of reaching the
//! new one.
//!
//! A Wasm service's slot ([`VmSlot::for_service`]) serves no streams: its supervisor
//! ([`super::service`]) restarts the VM after a failure, and its callouts follow the pools of
//! each new snapshot.
//!
//! A config reload does not touch a slot: it builds new slots for the new snapshot, and this
//! one lives on, with its VM, until the last stream that started on it has finished.
//!
//! The lock is per worker and uncontended (one thread); it is never held across an `.await`.

use super::WasmError;
use super::callout;
use super::context::{HeaderPairs, MapChanges, StreamData, StreamEvent, StreamInfo};
use super::plugin::{Plugin, PluginHandle};
use super::state::VmHooks;
use super::vm::{Direction, Effects, Side, Vm};
use crate::upstream::WorkerPools;
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use weir_abi::Action;

/// Why a call through a slot did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The VM failed during this call (counted).
    #[error("{0}")]
    Failed(WasmError),
    /// The VM that held this context failed earlier and was replaced.
    #[error("the VM of this context is gone")]
    Gone,
}

struct SlotInner {
    /// The VM new streams start on (created on demand).
    vm: Option<Vm>,
    /// The plugin `vm` runs.
    plugin: Arc<Plugin>,
    /// The generation of `vm`; bumped when it fails.
    generation: u64,
    tick_task: Option<tokio::task::AbortHandle>,
}

/// The slots of a chain's `plugins` on this worker, in order, and the name of the first
/// plugin that is not loaded and does not fail open, if any: its chain refuses every stream
/// (Envoy answers 503). A plugin that is not loaded and fails open is left out of the chain,
/// as Envoy skips it. (Only a remote module that could not be fetched at start-up leaves a
/// plugin unloaded: see [`super::remote`].)
pub fn slots_of(
    plugins: &[Arc<PluginHandle>],
    pools: &WorkerPools,
) -> (Vec<Arc<VmSlot>>, Option<String>) {
    let mut slots = Vec::with_capacity(plugins.len());
    let mut refused = None;
    for handle in plugins {
        match VmSlot::new(handle, pools.clone()) {
            Some(slot) => slots.push(slot),
            None if handle.fail_open() => {}
            None => {
                refused.get_or_insert_with(|| handle.name().to_owned());
            }
        }
    }
    (slots, refused)
}

/// The pools a slot's callouts go through.
#[derive(Clone)]
enum SlotPools {
    /// A filter's: the pools of the snapshot its chain was built for.
    Fixed(WorkerPools),
    /// A Wasm service's, which outlives snapshots: whatever pools are current (its owner
    /// stores the pools of each new snapshot).
    Current(Arc<ArcSwap<WorkerPools>>),
}

impl SlotPools {
    fn get(&self) -> WorkerPools {
        match self {
            SlotPools::Fixed(pools) => pools.clone(),
            SlotPools::Current(current) => WorkerPools::clone(&current.load()),
        }
    }
}

/// A plugin's VM on one worker.
pub struct VmSlot {
    plugin: Arc<Plugin>,
    pools: SlotPools,
    inner: Mutex<SlotInner>,
    /// Woken each time the VM fails (a Wasm service's supervisor waits on it).
    failures: tokio::sync::Notify,
}

impl VmSlot {
    /// A slot for the plugin of `handle` whose callouts go through `pools`; starts the VM now
    /// (a failure is logged and counted, and the next stream tries again). `None` when the
    /// plugin is not loaded (remote code that could not be fetched: see [`slots_of`]).
    pub fn new(handle: &PluginHandle, pools: WorkerPools) -> Option<Arc<VmSlot>> {
        Some(VmSlot::with_pools(
            handle.current()?,
            SlotPools::Fixed(pools),
        ))
    }

    /// A slot for a Wasm service ([`super::service`]): its callouts go through whatever pools
    /// `pools` holds when they start. Starts the VM now, as [`VmSlot::new`] does. `None` when
    /// the plugin is not loaded.
    pub fn for_service(
        handle: &PluginHandle,
        pools: Arc<ArcSwap<WorkerPools>>,
    ) -> Option<Arc<VmSlot>> {
        Some(VmSlot::with_pools(
            handle.current()?,
            SlotPools::Current(pools),
        ))
    }

    fn with_pools(plugin: Arc<Plugin>, pools: SlotPools) -> Arc<VmSlot> {
        let slot = Arc::new(VmSlot {
            inner: Mutex::new(SlotInner {
                vm: None,
                plugin: plugin.clone(),
                generation: 0,
                tick_task: None,
            }),
            plugin,
            pools,
            failures: tokio::sync::Notify::new(),
        });
        let _ = slot.with_vm(None, |_| Ok(()));
        slot
    }

    /// Starts the VM if there is none (it failed, or never started); an error says why it
    /// could not (logged and counted already).
    pub fn ensure_started(self: &Arc<Self>) -> Result<(), SlotError> {
        self.with_vm(None, |_| Ok(())).map(|_| ())
    }

    /// Whether a VM is running.
    pub fn is_running(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .vm
            .is_some()
    }

    /// Waits until the VM fails (returns at once when it failed since the last wait).
    pub async fn failed_wait(&self) {
        self.failures.notified().await;
    }

    /// The plugin it runs.
    pub fn plugin(&self) -> Arc<Plugin> {
        self.plugin.clone()
    }

    /// Runs `f` on a VM. Without `generation` (a new stream), on the current VM, created if
    /// needed. With `generation`, only on the VM of that generation ([`SlotError::Gone`] after
    /// it failed). Returns the generation it ran on.
    fn with_vm<R>(
        self: &Arc<Self>,
        generation: Option<u64>,
        f: impl FnOnce(&mut Vm) -> Result<R, WasmError>,
    ) -> Result<(R, u64), SlotError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if generation.is_some_and(|g| g != inner.generation) {
            return Err(SlotError::Gone);
        }
        let mut effects = Effects::default();
        if inner.vm.is_none() {
            if generation.is_some() {
                return Err(SlotError::Gone);
            }
            let (waker, woken) = mpsc::unbounded_channel::<u32>();
            let pools = self.pools.clone();
            let hooks = VmHooks {
                queue_waker: Some(waker),
                cluster_exists: Some(Arc::new(move |name: &str| pools.get().has_cluster(name))),
            };
            match Vm::start(&inner.plugin, hooks) {
                Ok(mut vm) => {
                    self.listen_to_queues(woken, inner.generation);
                    effects = vm.take_effects();
                    inner.vm = Some(vm);
                }
                Err(error) => {
                    self.failed(&mut inner, &error);
                    return Err(SlotError::Failed(error));
                }
            }
        }
        let Some(vm) = inner.vm.as_mut() else {
            return Err(SlotError::Gone);
        };
        match f(vm) {
            Ok(result) => {
                let more = vm.take_effects();
                effects.calls.extend(more.calls);
                effects.tick = more.tick.or(effects.tick);
                let current = inner.generation;
                self.apply(&mut inner, effects, current);
                Ok((result, current))
            }
            Err(error) => {
                self.failed(&mut inner, &error);
                Err(SlotError::Failed(error))
            }
        }
    }

    /// Drops a failed VM: count, log, tell its streams, stop its timer.
    fn failed(&self, inner: &mut SlotInner, error: &WasmError) {
        inner.plugin.failures().inc();
        match self.pools {
            SlotPools::Current(_) => {
                tracing::warn!(service = inner.plugin.name(), %error, "Wasm service VM failed")
            }
            SlotPools::Fixed(_) => {
                tracing::warn!(plugin = inner.plugin.name(), %error, "Wasm VM failed; it is recreated for the next stream")
            }
        }
        if let Some(vm) = inner.vm.take() {
            for stream in vm.streams() {
                let _ = stream.events.send(StreamEvent::VmFailed);
            }
        }
        if let Some(task) = inner.tick_task.take() {
            task.abort();
        }
        inner.generation += 1;
        self.failures.notify_one();
    }

    /// Starts the callouts and (re)starts the timer a callback asked for.
    fn apply(self: &Arc<Self>, inner: &mut SlotInner, effects: Effects, generation: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for call in effects.calls {
            let weak = Arc::downgrade(self);
            let pools = self.pools.get();
            runtime.spawn(async move {
                let token = call.token;
                let response = callout::execute(&pools, call).await;
                if let Some(slot) = weak.upgrade() {
                    let _ = slot.with_vm(Some(generation), |vm| {
                        vm.on_http_call_response(token, response)
                    });
                }
            });
        }
        if let Some(period) = effects.tick.filter(|_| generation == inner.generation) {
            if let Some(task) = inner.tick_task.take() {
                task.abort();
            }
            if let Some(period) = period {
                let weak = Arc::downgrade(self);
                let task = runtime.spawn(tick(weak, period, generation));
                inner.tick_task = Some(task.abort_handle());
            }
        }
    }

    /// Routes queue wake-ups (`woken`) of the VM of `generation` to `proxy_on_queue_ready`, while it lives.
    fn listen_to_queues(
        self: &Arc<Self>,
        mut woken: mpsc::UnboundedReceiver<u32>,
        generation: u64,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            while let Some(queue) = woken.recv().await {
                let Some(slot) = weak.upgrade() else { break };
                if slot
                    .with_vm(Some(generation), |vm| vm.on_queue_ready(queue))
                    .is_err()
                {
                    break;
                }
            }
        });
    }

    /// Creates an HTTP context for a new stream.
    pub fn start_stream(self: &Arc<Self>, info: StreamInfo) -> Result<StreamHandle, SlotError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (id, generation) = self.with_vm(None, |vm| {
            vm.create_stream(StreamData::new(info, events_tx))
        })?;
        Ok(StreamHandle {
            slot: self.clone(),
            id,
            generation,
            events,
            finished: false,
        })
    }
}

impl Drop for VmSlot {
    /// The worker is done with the plugin: end the root contexts.
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = inner.tick_task.take() {
            task.abort();
        }
        if let Some(mut vm) = inner.vm.take() {
            stop(&mut vm, &inner.plugin);
        }
    }
}

/// Ends a VM's root context before it is dropped; a failure then is only logged.
fn stop(vm: &mut Vm, plugin: &Plugin) {
    if let Err(error) = vm.stop() {
        tracing::debug!(plugin = plugin.name(), %error, "Wasm VM failed while stopping");
    }
}

async fn tick(slot: Weak<VmSlot>, period: Duration, generation: u64) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let Some(slot) = slot.upgrade() else { return };
        if slot.with_vm(Some(generation), Vm::on_tick).is_err() {
            return;
        }
    }
}

/// One stream's context in a plugin's VM. Dropping it ends the context (`proxy_on_log`,
/// `proxy_on_done`, `proxy_on_delete`).
pub struct StreamHandle {
    slot: Arc<VmSlot>,
    id: u32,
    generation: u64,
    events: mpsc::UnboundedReceiver<StreamEvent>,
    finished: bool,
}

impl StreamHandle {
    /// The plugin it runs in.
    pub fn plugin(&self) -> Arc<Plugin> {
        self.slot.plugin()
    }

    /// What the module asked of this stream (continue, local reply, close, VM failed).
    pub fn events(&mut self) -> &mut mpsc::UnboundedReceiver<StreamEvent> {
        &mut self.events
    }

    fn with_stream<R>(
        &mut self,
        f: impl FnOnce(&mut Vm, u32) -> Result<R, WasmError>,
    ) -> Result<R, SlotError> {
        let id = self.id;
        let result = self.slot.with_vm(Some(self.generation), |vm| f(vm, id));
        if result.is_err() {
            self.finished = true;
        }
        result.map(|(r, _)| r)
    }

    /// Runs the headers callback of `direction` with `headers` as its map; the map stays in
    /// the VM (the module may still change it after a pause): read it with
    /// [`StreamHandle::current_headers`].
    pub fn headers(
        &mut self,
        direction: Direction,
        headers: HeaderPairs,
        end_of_stream: bool,
    ) -> Result<Action, SlotError> {
        self.with_stream(|vm, id| {
            let count = headers.len();
            if let Some(stream) = vm.stream_mut(id) {
                *map_of(stream, direction, false) = headers;
                *changes_of(stream, direction) = MapChanges::None;
            }
            vm.on_headers(id, direction, count, end_of_stream)
        })
    }

    /// What the module did to the headers of `direction` since [`StreamHandle::headers`]
    /// handed them over; the record starts again empty.
    pub fn take_header_changes(&mut self, direction: Direction) -> Result<MapChanges, SlotError> {
        self.with_stream(|vm, id| {
            Ok(vm
                .stream_mut(id)
                .map(|s| std::mem::take(changes_of(s, direction)))
                .unwrap_or_default())
        })
    }

    /// The headers (or trailers) of `direction` as the module left them.
    pub fn current_headers(
        &mut self,
        direction: Direction,
        trailers: bool,
    ) -> Result<HeaderPairs, SlotError> {
        self.with_stream(|vm, id| {
            Ok(vm
                .stream_mut(id)
                .map(|s| map_of(s, direction, trailers).clone())
                .unwrap_or_default())
        })
    }

    /// Appends `data` to the body buffer of `direction` and runs the body callback with all
    /// that is buffered. On `Continue` the buffer (as the module left it) is taken and
    /// returned; on `Pause` it stays buffered (see [`StreamHandle::take_body`]).
    pub fn body(
        &mut self,
        direction: Direction,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<Option<Vec<u8>>, SlotError> {
        self.run_buffered(body_of, direction, data, |vm, id, size| {
            vm.on_body(id, direction, size, end_of_stream)
        })
    }

    /// How many body bytes of `direction` the module holds (a paused body buffers).
    pub fn buffered_len(&mut self, direction: Direction) -> Result<usize, SlotError> {
        self.with_stream(|vm, id| Ok(vm.stream_mut(id).map_or(0, |s| body_of(s, direction).len())))
    }

    /// Takes the body bytes buffered for `direction`.
    pub fn take_body(&mut self, direction: Direction) -> Result<Vec<u8>, SlotError> {
        self.with_stream(|vm, id| {
            Ok(vm
                .stream_mut(id)
                .map(|s| std::mem::take(body_of(s, direction)))
                .unwrap_or_default())
        })
    }

    /// Runs the trailers callback of `direction`; returns the action and the trailers as the
    /// module left them.
    pub fn trailers(
        &mut self,
        direction: Direction,
        trailers: HeaderPairs,
    ) -> Result<(Action, HeaderPairs), SlotError> {
        self.with_stream(|vm, id| {
            let count = trailers.len();
            if let Some(stream) = vm.stream_mut(id) {
                *map_of(stream, direction, true) = trailers;
            }
            let action = vm.on_trailers(id, direction, count)?;
            let trailers = vm
                .stream_mut(id)
                .map(|s| map_of(s, direction, true).clone())
                .unwrap_or_default();
            Ok((action, trailers))
        })
    }
}

/// A network filter's context (an L4 connection): the callbacks of
/// `envoy.filters.network.wasm`.
impl StreamHandle {
    /// `proxy_on_new_connection`.
    pub fn new_connection(&mut self) -> Result<Action, SlotError> {
        self.with_stream(|vm, id| vm.on_new_connection(id))
    }

    /// Appends `data` to what this filter holds for `side` and runs the data callback with
    /// all of it. On `Continue` the bytes (as the module left them: replaced, cut, added to)
    /// are taken and returned, to go on to the next filter; on `Pause` they stay held (see
    /// [`StreamHandle::take_data`]).
    pub fn data(
        &mut self,
        side: Side,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<Option<Vec<u8>>, SlotError> {
        self.run_buffered(data_of, side, data, |vm, id, size| {
            vm.on_data(id, side, size, end_of_stream)
        })
    }

    /// How many bytes of `side` the stream holds (a network filter that paused on them);
    /// 0 once the stream failed.
    pub fn held(&mut self, side: Side) -> usize {
        self.with_stream(|vm, id| Ok(vm.stream_mut(id).map_or(0, |s| data_of(s, side).len())))
            .unwrap_or(0)
    }

    /// Appends `data` to the buffer `buffer(stream, key)` and runs `callback` with the size of
    /// all it holds. On `Continue` the buffer (as the module left it) is taken and returned;
    /// on `Pause` it stays.
    fn run_buffered<K: Copy>(
        &mut self,
        buffer: fn(&mut StreamData, K) -> &mut Vec<u8>,
        key: K,
        data: &[u8],
        callback: impl FnOnce(&mut Vm, u32, usize) -> Result<Action, WasmError>,
    ) -> Result<Option<Vec<u8>>, SlotError> {
        self.with_stream(|vm, id| {
            let size = match vm.stream_mut(id) {
                Some(stream) => {
                    let held = buffer(stream, key);
                    held.extend_from_slice(data);
                    held.len()
                }
                None => 0,
            };
            match callback(vm, id, size)? {
                Action::Pause => Ok(None),
                _ => Ok(Some(
                    vm.stream_mut(id)
                        .map(|s| std::mem::take(buffer(s, key)))
                        .unwrap_or_default(),
                )),
            }
        })
    }

    /// Takes the bytes this filter holds for `side` (it paused, then continued).
    pub fn take_data(&mut self, side: Side) -> Result<Vec<u8>, SlotError> {
        self.with_stream(|vm, id| {
            Ok(vm
                .stream_mut(id)
                .map(|s| std::mem::take(data_of(s, side)))
                .unwrap_or_default())
        })
    }

    /// `proxy_on_{downstream,upstream}_connection_close`.
    pub fn connection_closed(
        &mut self,
        side: Side,
        peer: weir_abi::PeerType,
    ) -> Result<(), SlotError> {
        self.with_stream(|vm, id| vm.on_connection_close(id, side, peer))
    }
}

fn data_of(stream: &mut StreamData, side: Side) -> &mut Vec<u8> {
    match side {
        Side::Downstream => &mut stream.downstream_data,
        Side::Upstream => &mut stream.upstream_data,
    }
}

fn map_of(stream: &mut StreamData, direction: Direction, trailers: bool) -> &mut HeaderPairs {
    match (direction, trailers) {
        (Direction::Request, false) => &mut stream.request_headers,
        (Direction::Request, true) => &mut stream.request_trailers,
        (Direction::Response, false) => &mut stream.response_headers,
        (Direction::Response, true) => &mut stream.response_trailers,
    }
}

fn changes_of(stream: &mut StreamData, direction: Direction) -> &mut MapChanges {
    match direction {
        Direction::Request => &mut stream.request_changes,
        Direction::Response => &mut stream.response_changes,
    }
}

fn body_of(stream: &mut StreamData, direction: Direction) -> &mut Vec<u8> {
    match direction {
        Direction::Request => &mut stream.request_body,
        Direction::Response => &mut stream.response_body,
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        if !self.finished {
            let id = self.id;
            let _ = self
                .slot
                .with_vm(Some(self.generation), |vm| vm.finish_stream(id));
        }
    }
}
