//! One VM: a store and an instance of a plugin's module, its root context, and typed calls
//! into the module's callbacks. Every call runs under the plugin's deadline (epoch ticks) and
//! its store under the memory limit; a trap of any kind comes back as [`WasmError::Trap`],
//! after which the VM must not be used again.

use super::WasmError;
use super::context::{CallResponse, PendingCall, StreamData};
use super::plugin::{AbiVersion, Plugin};
use super::state::{HostState, VmHooks};
use std::time::Duration;
use wasmtime::{Instance, Store, Trap, TypedFunc, WasmParams, WasmResults};
use weir_abi::Action;
use weir_abi::names::{self, callbacks as cb};

/// `proxy_on_request_headers` / `_response_headers`, whose arity depends on the ABI.
enum HeadersFn {
    /// 0.1.0: `(ctx, num_headers)`.
    Legacy(TypedFunc<(i32, i32), i32>),
    /// 0.2.x: `(ctx, num_headers, end_of_stream)`.
    Current(TypedFunc<(i32, i32, i32), i32>),
}

/// `proxy_on_http_call_response(root, token, headers, body_size, trailers)`.
type CallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// The callbacks a module exports (all but context creation are optional).
struct Exports {
    on_context_create: TypedFunc<(i32, i32), ()>,
    on_vm_start: Option<TypedFunc<(i32, i32), i32>>,
    on_configure: Option<TypedFunc<(i32, i32), i32>>,
    on_tick: Option<TypedFunc<i32, ()>>,
    on_queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    on_request_headers: Option<HeadersFn>,
    on_request_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_request_trailers: Option<TypedFunc<(i32, i32), i32>>,
    on_response_headers: Option<HeadersFn>,
    on_response_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_response_trailers: Option<TypedFunc<(i32, i32), i32>>,
    on_http_call_response: Option<CallResponseFn>,
    on_new_connection: Option<TypedFunc<i32, i32>>,
    on_downstream_data: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_upstream_data: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_downstream_close: Option<TypedFunc<(i32, i32), ()>>,
    on_upstream_close: Option<TypedFunc<(i32, i32), ()>>,
    on_log: Option<TypedFunc<i32, ()>>,
    on_done: Option<TypedFunc<i32, i32>>,
    on_delete: Option<TypedFunc<i32, ()>>,
}

fn typed<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    instance: &Instance,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, WasmError> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(func) => func
            .typed::<P, R>(&*store)
            .map(Some)
            .map_err(|e| WasmError::NotProxyWasm(format!("{name}: {e}"))),
    }
}

fn headers_fn(
    store: &mut Store<HostState>,
    instance: &Instance,
    name: &str,
    abi: AbiVersion,
) -> Result<Option<HeadersFn>, WasmError> {
    if abi == AbiVersion::V0_1_0
        && let Ok(Some(legacy)) = typed::<(i32, i32), i32>(store, instance, name)
    {
        return Ok(Some(HeadersFn::Legacy(legacy)));
    }
    Ok(typed(store, instance, name)?.map(HeadersFn::Current))
}

impl Exports {
    fn resolve(
        store: &mut Store<HostState>,
        instance: &Instance,
        abi: AbiVersion,
    ) -> Result<Exports, WasmError> {
        let on_context_create =
            typed(store, instance, cb::PROXY_ON_CONTEXT_CREATE)?.ok_or_else(|| {
                WasmError::NotProxyWasm(format!("{} is not exported", cb::PROXY_ON_CONTEXT_CREATE))
            })?;
        Ok(Exports {
            on_context_create,
            on_vm_start: typed(store, instance, cb::PROXY_ON_VM_START)?,
            on_configure: typed(store, instance, cb::PROXY_ON_CONFIGURE)?,
            on_tick: typed(store, instance, cb::PROXY_ON_TICK)?,
            on_queue_ready: typed(store, instance, cb::PROXY_ON_QUEUE_READY)?,
            on_request_headers: headers_fn(store, instance, cb::PROXY_ON_REQUEST_HEADERS, abi)?,
            on_request_body: typed(store, instance, cb::PROXY_ON_REQUEST_BODY)?,
            on_request_trailers: typed(store, instance, cb::PROXY_ON_REQUEST_TRAILERS)?,
            on_response_headers: headers_fn(store, instance, cb::PROXY_ON_RESPONSE_HEADERS, abi)?,
            on_response_body: typed(store, instance, cb::PROXY_ON_RESPONSE_BODY)?,
            on_response_trailers: typed(store, instance, cb::PROXY_ON_RESPONSE_TRAILERS)?,
            on_http_call_response: typed(store, instance, cb::PROXY_ON_HTTP_CALL_RESPONSE)?,
            on_new_connection: typed(store, instance, cb::PROXY_ON_NEW_CONNECTION)?,
            on_downstream_data: typed(store, instance, cb::PROXY_ON_DOWNSTREAM_DATA)?,
            on_upstream_data: typed(store, instance, cb::PROXY_ON_UPSTREAM_DATA)?,
            on_downstream_close: typed(store, instance, cb::PROXY_ON_DOWNSTREAM_CONNECTION_CLOSE)?,
            on_upstream_close: typed(store, instance, cb::PROXY_ON_UPSTREAM_CONNECTION_CLOSE)?,
            on_log: typed(store, instance, cb::PROXY_ON_LOG)?,
            on_done: typed(store, instance, cb::PROXY_ON_DONE)?,
            on_delete: typed(store, instance, cb::PROXY_ON_DELETE)?,
        })
    }
}

/// Which direction of a stream a callback is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The request (decoding, in Envoy's words).
    Request,
    /// The response (encoding).
    Response,
}

/// Which side of an L4 connection a network filter callback is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client that connected to the listener (its bytes go upstream).
    Downstream,
    /// The cluster's host (its bytes go downstream).
    Upstream,
}

/// What a host function left for the host to do once the callback returned.
#[derive(Debug, Default)]
pub struct Effects {
    /// Callouts to start.
    pub calls: Vec<PendingCall>,
    /// The new tick period, when it changed (`Some(None)` = ticks off).
    pub tick: Option<Option<Duration>>,
}

/// A running VM.
pub struct Vm {
    store: Store<HostState>,
    exports: Exports,
    deadline_ticks: u64,
    next_context: u32,
}

impl Vm {
    /// Instantiates `plugin` and runs its root context's start: `_initialize`/`_start`,
    /// `proxy_on_context_create(root)`, `proxy_on_vm_start`, `proxy_on_configure`.
    /// `hooks` connect it to its worker (queues, clusters); a default one for a VM that only
    /// checks the plugin starts.
    pub fn start(plugin: &Plugin, hooks: VmHooks) -> Result<Vm, WasmError> {
        let limits = plugin.limits();
        let engine = plugin.instance_pre().module().engine();
        let mut store = Store::new(
            engine,
            HostState::new(plugin.info().clone(), limits.memory_bytes),
        );
        store.data_mut().queue_waker = hooks.queue_waker;
        store.data_mut().cluster_exists = hooks.cluster_exists;
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        let deadline_ticks = limits.deadline_ticks();
        store.set_epoch_deadline(deadline_ticks);
        let instance = plugin.instance_pre().instantiate(&mut store).map_err(|e| {
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
            {
                WasmError::Instantiate(format!(
                    "{e:#}: every slot of the VM pool is in use (raise --wasm-pool-vms)"
                ))
            } else {
                trap_error(&store, e)
            }
        })?;
        store.data_mut().exports = super::memory::resolve_exports(&mut store, &instance);

        for entry in [names::WASI_INITIALIZE, names::WASI_START] {
            if let Some(init) = typed::<(), ()>(&mut store, &instance, entry)? {
                store.set_epoch_deadline(deadline_ticks);
                init.call(&mut store, ())
                    .map_err(|e| trap_error(&store, e))?;
                break;
            }
        }
        let exports = Exports::resolve(&mut store, &instance, plugin.abi())?;
        let mut vm = Vm {
            store,
            exports,
            deadline_ticks,
            next_context: 2,
        };
        let root = vm.root_id();
        let vm_config_len = plugin.info().vm_configuration.len() as i32;
        let plugin_config_len = plugin.info().plugin_configuration.len() as i32;
        let create = vm.exports.on_context_create.clone();
        vm.call(root, |store| create.call(store, (root as i32, 0)))?;
        if let Some(start) = vm.exports.on_vm_start.clone()
            && vm.call(root, |store| {
                start.call(store, (root as i32, vm_config_len))
            })? == 0
        {
            return Err(WasmError::Refused(names::callbacks::PROXY_ON_VM_START));
        }
        if let Some(configure) = vm.exports.on_configure.clone()
            && vm.call(root, |store| {
                configure.call(store, (root as i32, plugin_config_len))
            })? == 0
        {
            return Err(WasmError::Refused(names::callbacks::PROXY_ON_CONFIGURE));
        }
        Ok(vm)
    }

    /// The root context's id.
    pub fn root_id(&self) -> u32 {
        self.store.data().root_id
    }

    /// Runs `f` (one call into the module) with `context` as the effective context and a
    /// fresh deadline.
    fn call<R>(
        &mut self,
        context: u32,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, WasmError> {
        self.store.data_mut().effective_context = context;
        self.store.set_epoch_deadline(self.deadline_ticks);
        f(&mut self.store).map_err(|e| trap_error(&self.store, e))
    }

    /// Creates an HTTP context for `data`; returns its id.
    pub fn create_stream(&mut self, data: StreamData) -> Result<u32, WasmError> {
        let id = self.next_context;
        self.next_context = self.next_context.wrapping_add(1).max(2);
        self.store.data_mut().streams.insert(id, data);
        let root = self.root_id() as i32;
        let create = self.exports.on_context_create.clone();
        self.call(id, |store| create.call(store, (id as i32, root)))?;
        Ok(id)
    }

    /// The data of stream `id`.
    pub fn stream_mut(&mut self, id: u32) -> Option<&mut StreamData> {
        self.store.data_mut().streams.get_mut(&id)
    }

    /// Every stream alive in this VM (to tell them when the VM fails).
    pub fn streams(&self) -> impl Iterator<Item = &StreamData> {
        self.store.data().streams.values()
    }

    /// `proxy_on_{request,response}_headers`.
    pub fn on_headers(
        &mut self,
        id: u32,
        direction: Direction,
        count: usize,
        end_of_stream: bool,
    ) -> Result<Action, WasmError> {
        let callback = match direction {
            Direction::Request => &self.exports.on_request_headers,
            Direction::Response => &self.exports.on_response_headers,
        };
        let action = match callback {
            None => 0,
            Some(HeadersFn::Legacy(f)) => {
                let f = f.clone();
                self.call(id, |s| f.call(s, (id as i32, count as i32)))?
            }
            Some(HeadersFn::Current(f)) => {
                let f = f.clone();
                self.call(id, |s| {
                    f.call(s, (id as i32, count as i32, i32::from(end_of_stream)))
                })?
            }
        };
        Ok(to_action(action))
    }

    /// `proxy_on_{request,response}_body` with `size` bytes buffered.
    pub fn on_body(
        &mut self,
        id: u32,
        direction: Direction,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, WasmError> {
        let callback = match direction {
            Direction::Request => self.exports.on_request_body.clone(),
            Direction::Response => self.exports.on_response_body.clone(),
        };
        self.on_buffered(callback, id, size, end_of_stream)
    }

    /// `proxy_on_{request,response}_trailers`.
    pub fn on_trailers(
        &mut self,
        id: u32,
        direction: Direction,
        count: usize,
    ) -> Result<Action, WasmError> {
        let callback = match direction {
            Direction::Request => self.exports.on_request_trailers.clone(),
            Direction::Response => self.exports.on_response_trailers.clone(),
        };
        let Some(f) = callback else {
            return Ok(Action::Continue);
        };
        let action = self.call(id, |s| f.call(s, (id as i32, count as i32)))?;
        Ok(to_action(action))
    }

    /// `proxy_on_new_connection`: a network filter's context for a new connection.
    pub fn on_new_connection(&mut self, id: u32) -> Result<Action, WasmError> {
        let Some(f) = self.exports.on_new_connection.clone() else {
            return Ok(Action::Continue);
        };
        let action = self.call(id, |s| f.call(s, id as i32))?;
        Ok(to_action(action))
    }

    /// `proxy_on_{downstream,upstream}_data` with `size` bytes buffered for `side`.
    pub fn on_data(
        &mut self,
        id: u32,
        side: Side,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, WasmError> {
        let callback = match side {
            Side::Downstream => self.exports.on_downstream_data.clone(),
            Side::Upstream => self.exports.on_upstream_data.clone(),
        };
        self.on_buffered(callback, id, size, end_of_stream)
    }

    /// A callback about `size` buffered bytes (an HTTP body, or a connection's data); Continue
    /// where the module does not export it.
    fn on_buffered(
        &mut self,
        callback: Option<TypedFunc<(i32, i32, i32), i32>>,
        id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, WasmError> {
        let Some(f) = callback else {
            return Ok(Action::Continue);
        };
        let action = self.call(id, |s| {
            f.call(s, (id as i32, size as i32, i32::from(end_of_stream)))
        })?;
        Ok(to_action(action))
    }

    /// `proxy_on_{downstream,upstream}_connection_close`: `side` is closed, by the peer
    /// (`PeerType::Remote`) or by weir (`PeerType::Local`).
    pub fn on_connection_close(
        &mut self,
        id: u32,
        side: Side,
        peer: weir_abi::PeerType,
    ) -> Result<(), WasmError> {
        let callback = match side {
            Side::Downstream => self.exports.on_downstream_close.clone(),
            Side::Upstream => self.exports.on_upstream_close.clone(),
        };
        match callback {
            Some(f) => self.call(id, |s| f.call(s, (id as i32, peer.as_i32()))),
            None => Ok(()),
        }
    }

    /// The end of stream `id`: `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`, and its
    /// data dropped.
    pub fn finish_stream(&mut self, id: u32) -> Result<(), WasmError> {
        let result = self.end_context(id);
        self.store.data_mut().streams.remove(&id);
        result
    }

    fn end_context(&mut self, id: u32) -> Result<(), WasmError> {
        if let Some(f) = self.exports.on_log.clone() {
            self.call(id, |s| f.call(s, id as i32))?;
        }
        if let Some(f) = self.exports.on_done.clone() {
            self.call(id, |s| f.call(s, id as i32))?;
        }
        if let Some(f) = self.exports.on_delete.clone() {
            self.call(id, |s| f.call(s, id as i32))?;
        }
        Ok(())
    }

    /// `proxy_on_tick` on the root context.
    pub fn on_tick(&mut self) -> Result<(), WasmError> {
        let root = self.root_id();
        match self.exports.on_tick.clone() {
            Some(f) => self.call(root, |s| f.call(s, root as i32)),
            None => Ok(()),
        }
    }

    /// `proxy_on_queue_ready(root, queue)`.
    pub fn on_queue_ready(&mut self, queue: u32) -> Result<(), WasmError> {
        let root = self.root_id();
        match self.exports.on_queue_ready.clone() {
            Some(f) => self.call(root, |s| f.call(s, (root as i32, queue as i32))),
            None => Ok(()),
        }
    }

    /// Delivers a callout's answer (`None`: it failed) to `proxy_on_http_call_response` on
    /// the root context.
    pub fn on_http_call_response(
        &mut self,
        token: u32,
        response: Option<CallResponse>,
    ) -> Result<(), WasmError> {
        let root = self.root_id();
        let Some(f) = self.exports.on_http_call_response.clone() else {
            return Ok(());
        };
        let (headers, body, trailers) = response.as_ref().map_or((0, 0, 0), |r| {
            (r.headers.len(), r.body.len(), r.trailers.len())
        });
        self.store.data_mut().call_response = response;
        let result = self.call(root, |s| {
            f.call(
                s,
                (
                    root as i32,
                    token as i32,
                    headers as i32,
                    body as i32,
                    trailers as i32,
                ),
            )
        });
        self.store.data_mut().call_response = None;
        result
    }

    /// Ends the root context (`proxy_on_done`, `proxy_on_delete`) before the VM is dropped
    /// for good (the worker is shutting down).
    pub fn stop(&mut self) -> Result<(), WasmError> {
        let root = self.root_id();
        if let Some(f) = self.exports.on_done.clone() {
            self.call(root, |s| f.call(s, root as i32))?;
        }
        if let Some(f) = self.exports.on_delete.clone() {
            self.call(root, |s| f.call(s, root as i32))?;
        }
        Ok(())
    }

    /// The address of its linear memory's first byte (tests check how it is mapped).
    #[cfg(test)]
    pub fn memory_base(&mut self) -> Option<usize> {
        let memory = self.store.data().exports.memory?;
        Some(memory.data_ptr(&self.store) as usize)
    }

    /// Takes what the last callbacks asked of the host.
    pub fn take_effects(&mut self) -> Effects {
        let state = self.store.data_mut();
        Effects {
            calls: std::mem::take(&mut state.pending_calls),
            tick: std::mem::take(&mut state.tick_changed).then_some(state.tick_period),
        }
    }
}

fn to_action(value: i32) -> Action {
    match Action::try_from(value) {
        Ok(Action::Pause) => Action::Pause,
        _ => Action::Continue,
    }
}

/// Describes a failed call: a trap (which one), the deadline, the memory limit, or the
/// module's own panic message.
fn trap_error(store: &Store<HostState>, error: wasmtime::Error) -> WasmError {
    let what = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "deadline exceeded (epoch interruption)".to_string(),
        Some(trap) => format!("trap: {trap}"),
        None => format!("{error:#}"),
    };
    match &store.data().last_critical {
        Some(panic) => WasmError::Trap(format!("{what}; the module logged: {panic}")),
        None => WasmError::Trap(what),
    }
}
