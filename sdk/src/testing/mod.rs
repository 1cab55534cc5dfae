//! A host in memory, for testing a filter with `cargo test` on the developer's machine: no
//! proxy, no Wasm.
//!
//! Off wasm32 every host call of the SDK lands here. Without a [`Host`] on the thread it
//! answers `Unimplemented`, as a host that has nothing would; with one, it keeps header maps,
//! buffers, properties, shared data, queues and metrics in memory, and records what the
//! filter did: local responses, logs, resumed or closed streams, HTTP callouts, the tick
//! period. A test sets the stage, calls the filter's context methods directly, and reads the
//! outcome:
//!
//! ```
//! use weir_sdk::testing::Host;
//! use weir_sdk::{Action, HttpContext, MapType, hostcalls};
//!
//! struct Deny;
//! impl HttpContext for Deny {
//!     fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
//!         let _ = hostcalls::send_local_response(403, "deny", &[("x-why", "test")], b"no\n", None);
//!         Action::Pause
//!     }
//! }
//!
//! let host = Host::new();
//! host.set_map(MapType::HttpRequestHeaders, &[(":path", "/")]);
//! assert_eq!(Deny.on_http_request_headers(1, true), Action::Pause);
//! let reply = host.local_response().expect("answered locally");
//! assert_eq!((reply.status, reply.body.as_slice()), (403, &b"no\n"[..]));
//! ```
//!
//! One [`Host`] per test: it lives in a thread-local (each test runs on its own thread) and is
//! removed when the handle drops. Behaviour follows weir's host (and Envoy's): header names are
//! lowercased, `get_map_value` gives the first value, a removed absent header is not an error,
//! a shared-data write with a stale CAS is refused with `CasMismatch`.

pub(crate) mod raw;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use weir_abi::{BufferType, LogLevel, MapType, StreamType};

/// A local response the filter sent (`send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// The HTTP status.
    pub status: u32,
    /// The details string (Envoy's `%RESPONSE_CODE_DETAILS%`).
    pub details: String,
    /// The extra headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The gRPC status, `None` for plain HTTP (-1 on the wire).
    pub grpc_status: Option<i32>,
}

/// An HTTP callout the filter dispatched (`dispatch_http_call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// The token it was given.
    pub token: u32,
    /// The cluster it is addressed to.
    pub upstream: String,
    /// Its headers (`:method`, `:path`, `:authority` among them).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
    /// Its timeout.
    pub timeout: Duration,
}

/// Everything the in-memory host holds for one test.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) maps: HashMap<u32, Vec<(String, Vec<u8>)>>,
    pub(crate) buffers: HashMap<u32, Vec<u8>>,
    pub(crate) properties: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) shared: BTreeMap<String, (Vec<u8>, u32)>,
    pub(crate) queues: Vec<(String, VecDeque<Vec<u8>>)>,
    pub(crate) metrics: Vec<(String, u32, u64)>,
    pub(crate) logs: Vec<(LogLevel, String)>,
    pub(crate) log_level: Option<LogLevel>,
    pub(crate) now: Option<SystemTime>,
    pub(crate) tick_period: Option<Duration>,
    pub(crate) local_response: Option<LocalResponse>,
    pub(crate) continued: Vec<StreamType>,
    pub(crate) closed: Vec<StreamType>,
    pub(crate) http_calls: Vec<HttpCall>,
    pub(crate) effective_context: Option<u32>,
    pub(crate) done_calls: usize,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's host state; `None` when no [`Host`] is installed.
pub(crate) fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    STATE.with(|state| state.borrow_mut().as_mut().map(f))
}

fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// The in-memory host for this thread (see the module docs). Dropping it removes it.
pub struct Host {
    /// Bound to the thread whose thread-local it installed.
    _not_send: PhantomData<*const ()>,
}

impl Default for Host {
    fn default() -> Self {
        Self::new()
    }
}

impl Host {
    /// Installs an empty host on this thread (replacing one a previous handle left).
    pub fn new() -> Host {
        STATE.with(|state| *state.borrow_mut() = Some(State::default()));
        Host {
            _not_send: PhantomData,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            let state = state.get_or_insert_with(State::default);
            f(state)
        })
    }

    /// Sets a whole header map (request or response headers or trailers, or a callout's
    /// answer); names are lowercased.
    pub fn set_map(&self, map: MapType, pairs: &[(&str, &str)]) {
        let pairs = pairs
            .iter()
            .map(|(k, v)| (lower(k), v.as_bytes().to_vec()))
            .collect();
        self.with(|s| s.maps.insert(map.as_u32(), pairs));
    }

    /// A header map as the filter left it, values as (lossy) text.
    pub fn map(&self, map: MapType) -> Vec<(String, String)> {
        self.with(|s| {
            s.maps
                .get(&map.as_u32())
                .map(|pairs| {
                    pairs
                        .iter()
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// The first value of `name` in a header map.
    pub fn map_value(&self, map: MapType, name: &str) -> Option<String> {
        let name = lower(name);
        self.map(map)
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// Sets a buffer: a body, connection data, a callout's body, or a configuration.
    pub fn set_buffer(&self, buffer: BufferType, bytes: &[u8]) {
        self.with(|s| s.buffers.insert(buffer.as_u32(), bytes.to_vec()));
    }

    /// A buffer as the filter left it (empty when never set).
    pub fn buffer(&self, buffer: BufferType) -> Vec<u8> {
        self.with(|s| s.buffers.get(&buffer.as_u32()).cloned().unwrap_or_default())
    }

    /// The plugin's `configuration`, for `on_configure` (a `StringValue`'s string).
    pub fn set_plugin_configuration(&self, bytes: &[u8]) {
        self.set_buffer(BufferType::PluginConfiguration, bytes);
    }

    /// `vm_config.configuration`, for `on_vm_start`.
    pub fn set_vm_configuration(&self, bytes: &[u8]) {
        self.set_buffer(BufferType::VmConfiguration, bytes);
    }

    /// Sets a property, e.g. `&["source", "address"]`, in the host's encoding (strings raw,
    /// integers 8 bytes little-endian).
    pub fn set_property(&self, path: &[&str], value: &[u8]) {
        let path = crate::hostcalls::property_path(path);
        self.with(|s| s.properties.insert(path, value.to_vec()));
    }

    /// A property, including one the filter set.
    pub fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let path = crate::hostcalls::property_path(path);
        self.with(|s| s.properties.get(&path).cloned())
    }

    /// A shared-data entry and its CAS version.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.with(|s| s.shared.get(key).cloned())
    }

    /// The wall clock `get_current_time` reads (the real clock until set).
    pub fn set_time(&self, now: SystemTime) {
        self.with(|s| s.now = Some(now));
    }

    /// The level `get_log_level` answers (Trace until set).
    pub fn set_log_level(&self, level: LogLevel) {
        self.with(|s| s.log_level = Some(level));
    }

    /// The local response the filter sent, if any.
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.with(|s| s.local_response.clone())
    }

    /// Every line the filter logged, in order.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.with(|s| s.logs.clone())
    }

    /// The directions the filter resumed (`continue_stream`), in order.
    pub fn continued(&self) -> Vec<StreamType> {
        self.with(|s| s.continued.clone())
    }

    /// The directions the filter reset (`close_stream`), in order.
    pub fn closed(&self) -> Vec<StreamType> {
        self.with(|s| s.closed.clone())
    }

    /// The HTTP callouts the filter dispatched, in order.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.with(|s| s.http_calls.clone())
    }

    /// The tick period the filter asked for (`None`: never set; zero: stopped).
    pub fn tick_period(&self) -> Option<Duration> {
        self.with(|s| s.tick_period)
    }

    /// A metric's value by the name it was defined with.
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.with(|s| {
            s.metrics
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, _, value)| *value)
        })
    }

    /// Enqueues `value` on the queue `name` (registered by the filter), as another VM would.
    /// False when the filter registered no such queue.
    pub fn enqueue(&self, name: &str, value: &[u8]) -> bool {
        self.with(|s| match s.queues.iter_mut().find(|(n, _)| n == name) {
            Some((_, queue)) => {
                queue.push_back(value.to_vec());
                true
            }
            None => false,
        })
    }

    /// Forgets what the filter did (local response, logs, resumes, closes, callouts) and keeps
    /// the stage (maps, buffers, properties, shared data, metrics), e.g. between two requests.
    pub fn clear_outcome(&self) {
        self.with(|s| {
            s.local_response = None;
            s.logs.clear();
            s.continued.clear();
            s.closed.clear();
            s.http_calls.clear();
        });
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        STATE.with(|state| *state.borrow_mut() = None);
    }
}

#[cfg(test)]
mod tests;
