//! Safe wrappers over every proxy-wasm 0.2.1 host function (gRPC left out).
//!
//! Each wrapper passes Rust slices as (pointer, length) pairs, receives host-allocated buffers
//! through out-pointers (the host places them in memory from `proxy_on_memory_allocate`, and
//! the wrapper takes ownership of them as a `Vec<u8>`), and turns the status into a
//! [`Result`]. Statuses that are answers rather than failures become values: `NotFound` is
//! `None`, an `Empty` queue is `None`.

pub mod raw;

use core::ptr;
use std::time::{Duration, SystemTime};

use weir_abi::{BufferType, LogLevel, MapType, MetricType, Status, StreamType, header_map};

use crate::error::{Error, Result, check, expect_ok};

/// A buffer the host allocated in module memory and handed over through out-pointers.
struct HostBuffer {
    data: *mut u8,
    size: usize,
}

impl HostBuffer {
    fn new() -> Self {
        HostBuffer {
            data: ptr::null_mut(),
            size: 0,
        }
    }

    /// Takes ownership of what the host wrote.
    ///
    /// # Safety
    /// Only after a host call returned `Ok`: `data`/`size` are then null/0 or a block the host
    /// got from `proxy_on_memory_allocate(size)`, which allocates exactly `size` bytes with
    /// align 1 from the global allocator — the layout `Vec<u8>` with capacity `size` frees.
    unsafe fn into_vec(self) -> Vec<u8> {
        if self.data.is_null() || self.size == 0 {
            Vec::new()
        } else {
            // SAFETY: see the function's contract.
            unsafe { Vec::from_raw_parts(self.data, self.size, self.size) }
        }
    }
}

fn encode_map<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    call: &'static str,
    pairs: &[(K, V)],
) -> Result<Vec<u8>> {
    header_map::encode_to_vec(pairs).map_err(|source| Error::UnencodableHeaders { call, source })
}

fn decode_map(call: &'static str, bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let pairs =
        header_map::decode(bytes).map_err(|source| Error::MalformedHeaderMap { call, source })?;
    Ok(pairs
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_vec()))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Logging, time, ticks
// ---------------------------------------------------------------------------------------------

/// Writes a log line attributed to this plugin.
pub fn log(level: LogLevel, message: &str) -> Result<()> {
    // SAFETY: the message slice is valid for the call.
    let code = unsafe { raw::proxy_log(level.as_u32(), message.as_ptr(), message.len()) };
    expect_ok("proxy_log", code)
}

/// The host's current log level for this plugin, so a filter can skip formatting lines that
/// would be dropped.
pub fn get_log_level() -> Result<LogLevel> {
    let mut level = 0u32;
    // SAFETY: the out-pointer is a valid local.
    expect_ok("proxy_get_log_level", unsafe {
        raw::proxy_get_log_level(&mut level)
    })?;
    LogLevel::try_from(level).map_err(|_| Error::Status {
        call: "proxy_get_log_level",
        status: Status::SerializationFailure,
    })
}

/// The host's wall clock.
pub fn get_current_time() -> Result<SystemTime> {
    let mut nanos = 0u64;
    // SAFETY: the out-pointer is a valid local.
    expect_ok("proxy_get_current_time_nanoseconds", unsafe {
        raw::proxy_get_current_time_nanoseconds(&mut nanos)
    })?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// The host's wall clock in nanoseconds since the Unix epoch.
pub fn get_current_time_nanos() -> Result<u64> {
    let mut nanos = 0u64;
    // SAFETY: the out-pointer is a valid local.
    expect_ok("proxy_get_current_time_nanoseconds", unsafe {
        raw::proxy_get_current_time_nanoseconds(&mut nanos)
    })?;
    Ok(nanos)
}

/// Asks the host to call the root context's `on_tick` every `period`; `Duration::ZERO`
/// stops the ticks. Periods above `u32::MAX` milliseconds are clamped.
pub fn set_tick_period(period: Duration) -> Result<()> {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    expect_ok("proxy_set_tick_period_milliseconds", unsafe {
        raw::proxy_set_tick_period_milliseconds(millis)
    })
}

// ---------------------------------------------------------------------------------------------
// Buffers
// ---------------------------------------------------------------------------------------------

/// Reads up to `max_size` bytes of a buffer from offset `start`. `None` when the buffer is not
/// available in this callback.
pub fn get_buffer(
    buffer_type: BufferType,
    start: usize,
    max_size: usize,
) -> Result<Option<Vec<u8>>> {
    const CALL: &str = "proxy_get_buffer_bytes";
    let mut out = HostBuffer::new();
    // SAFETY: out-pointers are valid locals.
    let code = unsafe {
        raw::proxy_get_buffer_bytes(
            buffer_type.as_u32(),
            start,
            max_size,
            &mut out.data,
            &mut out.size,
        )
    };
    match check(CALL, code)? {
        // SAFETY: Ok, so the host handed over an allocation of ours.
        Status::Ok => Ok(Some(unsafe { out.into_vec() })),
        Status::NotFound | Status::Empty => Ok(None),
        status => Err(Error::Status { call: CALL, status }),
    }
}

/// Replaces `size` bytes of a buffer from offset `start` with `data` (start 0, size 0
/// prepends; start at or past the end appends; 0 and the whole length replaces everything).
pub fn set_buffer(buffer_type: BufferType, start: usize, size: usize, data: &[u8]) -> Result<()> {
    // SAFETY: the data slice is valid for the call.
    expect_ok("proxy_set_buffer_bytes", unsafe {
        raw::proxy_set_buffer_bytes(buffer_type.as_u32(), start, size, data.as_ptr(), data.len())
    })
}

// ---------------------------------------------------------------------------------------------
// Header maps
// ---------------------------------------------------------------------------------------------

/// Every (name, value) pair of a map, in order. Names are lossily UTF-8 (hosts lowercase them
/// and HTTP allows only tokens there); values are bytes as they arrived.
pub fn get_map(map_type: MapType) -> Result<Vec<(String, Vec<u8>)>> {
    const CALL: &str = "proxy_get_header_map_pairs";
    let mut out = HostBuffer::new();
    // SAFETY: out-pointers are valid locals.
    let code =
        unsafe { raw::proxy_get_header_map_pairs(map_type.as_u32(), &mut out.data, &mut out.size) };
    match check(CALL, code)? {
        Status::Ok => {
            // SAFETY: Ok, so the host handed over an allocation of ours.
            let bytes = unsafe { out.into_vec() };
            decode_map(CALL, &bytes)
        }
        Status::NotFound => Ok(Vec::new()),
        status => Err(Error::Status { call: CALL, status }),
    }
}

/// Replaces a whole map with `pairs`.
pub fn set_map<K: AsRef<[u8]>, V: AsRef<[u8]>>(map_type: MapType, pairs: &[(K, V)]) -> Result<()> {
    const CALL: &str = "proxy_set_header_map_pairs";
    let bytes = encode_map(CALL, pairs)?;
    // SAFETY: the encoded map is valid for the call.
    expect_ok(CALL, unsafe {
        raw::proxy_set_header_map_pairs(map_type.as_u32(), bytes.as_ptr(), bytes.len())
    })
}

/// The first value of header `name`, or `None` when it is absent.
pub fn get_map_value(map_type: MapType, name: &str) -> Result<Option<Vec<u8>>> {
    const CALL: &str = "proxy_get_header_map_value";
    let mut out = HostBuffer::new();
    // SAFETY: the name slice and the out-pointers are valid for the call.
    let code = unsafe {
        raw::proxy_get_header_map_value(
            map_type.as_u32(),
            name.as_ptr(),
            name.len(),
            &mut out.data,
            &mut out.size,
        )
    };
    match check(CALL, code)? {
        // SAFETY: Ok, so the host handed over an allocation of ours.
        Status::Ok => Ok(Some(unsafe { out.into_vec() })),
        Status::NotFound => Ok(None),
        status => Err(Error::Status { call: CALL, status }),
    }
}

/// Appends a value for `name`, keeping the values already there.
pub fn add_map_value(map_type: MapType, name: &str, value: &[u8]) -> Result<()> {
    // SAFETY: the slices are valid for the call.
    expect_ok("proxy_add_header_map_value", unsafe {
        raw::proxy_add_header_map_value(
            map_type.as_u32(),
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Sets `name` to `value`, replacing every value it had.
pub fn replace_map_value(map_type: MapType, name: &str, value: &[u8]) -> Result<()> {
    // SAFETY: the slices are valid for the call.
    expect_ok("proxy_replace_header_map_value", unsafe {
        raw::proxy_replace_header_map_value(
            map_type.as_u32(),
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every value of `name` (absent is not an error).
pub fn remove_map_value(map_type: MapType, name: &str) -> Result<()> {
    const CALL: &str = "proxy_remove_header_map_value";
    // SAFETY: the name slice is valid for the call.
    let code =
        unsafe { raw::proxy_remove_header_map_value(map_type.as_u32(), name.as_ptr(), name.len()) };
    match check(CALL, code)? {
        Status::Ok | Status::NotFound => Ok(()),
        status => Err(Error::Status { call: CALL, status }),
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Joins path segments with NUL, the ABI's property-path encoding.
pub fn property_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.iter().map(|s| s.len() + 1).sum());
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(segment.as_bytes());
    }
    out
}

/// A property, e.g. `&["request", "path"]`, in the host's encoding (strings raw, integers
/// 8 bytes little-endian, ...). `None` when the host does not know it.
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>> {
    const CALL: &str = "proxy_get_property";
    let path = property_path(path);
    let mut out = HostBuffer::new();
    // SAFETY: the path slice and the out-pointers are valid for the call.
    let code =
        unsafe { raw::proxy_get_property(path.as_ptr(), path.len(), &mut out.data, &mut out.size) };
    match check(CALL, code)? {
        // SAFETY: Ok, so the host handed over an allocation of ours.
        Status::Ok => Ok(Some(unsafe { out.into_vec() })),
        Status::NotFound => Ok(None),
        status => Err(Error::Status { call: CALL, status }),
    }
}

/// Sets a property (filter state other filters, and `get_property`, can read back).
pub fn set_property(path: &[&str], value: &[u8]) -> Result<()> {
    let path = property_path(path);
    // SAFETY: the slices are valid for the call.
    expect_ok("proxy_set_property", unsafe {
        raw::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
    })
}

// ---------------------------------------------------------------------------------------------
// Shared data and shared queues
// ---------------------------------------------------------------------------------------------

/// A shared-data value and the CAS token to pass back to [`set_shared_data`] to update it only
/// if nobody else did in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedData {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The version the value was read at.
    pub cas: u32,
}

/// Reads a VM-wide shared-data entry (shared by every worker's copy of the VM); `None` when
/// the key was never set.
pub fn get_shared_data(key: &str) -> Result<Option<SharedData>> {
    const CALL: &str = "proxy_get_shared_data";
    let mut out = HostBuffer::new();
    let mut cas = 0u32;
    // SAFETY: the key slice and the out-pointers are valid for the call.
    let code = unsafe {
        raw::proxy_get_shared_data(
            key.as_ptr(),
            key.len(),
            &mut out.data,
            &mut out.size,
            &mut cas,
        )
    };
    match check(CALL, code)? {
        Status::Ok => Ok(Some(SharedData {
            // SAFETY: Ok, so the host handed over an allocation of ours.
            value: unsafe { out.into_vec() },
            cas,
        })),
        Status::NotFound => Ok(None),
        status => Err(Error::Status { call: CALL, status }),
    }
}

/// Stores a shared-data entry. With `cas: Some(token)` the write happens only if the entry is
/// still at that version; otherwise the error satisfies [`Error::is_cas_mismatch`]. With
/// `None` it is unconditional.
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<()> {
    // SAFETY: the slices are valid for the call.
    expect_ok("proxy_set_shared_data", unsafe {
        raw::proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// Registers (or finds, if this VM already did) a queue named `name` owned by this VM; its
/// root context gets `on_queue_ready` when something is enqueued.
pub fn register_shared_queue(name: &str) -> Result<u32> {
    let mut id = 0u32;
    // SAFETY: the name slice and the out-pointer are valid for the call.
    expect_ok("proxy_register_shared_queue", unsafe {
        raw::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

/// Finds the queue `name` registered by the VM `vm_id`; `None` when there is none.
pub fn resolve_shared_queue(vm_id: &str, name: &str) -> Result<Option<u32>> {
    const CALL: &str = "proxy_resolve_shared_queue";
    let mut id = 0u32;
    // SAFETY: the slices and the out-pointer are valid for the call.
    let code = unsafe {
        raw::proxy_resolve_shared_queue(
            vm_id.as_ptr(),
            vm_id.len(),
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    };
    match check(CALL, code)? {
        Status::Ok => Ok(Some(id)),
        Status::NotFound => Ok(None),
        status => Err(Error::Status { call: CALL, status }),
    }
}

/// Appends `value` to a queue.
pub fn enqueue_shared_queue(queue_id: u32, value: &[u8]) -> Result<()> {
    // SAFETY: the value slice is valid for the call.
    expect_ok("proxy_enqueue_shared_queue", unsafe {
        raw::proxy_enqueue_shared_queue(queue_id, value.as_ptr(), value.len())
    })
}

/// Takes the oldest value from a queue; `None` when it is empty.
pub fn dequeue_shared_queue(queue_id: u32) -> Result<Option<Vec<u8>>> {
    const CALL: &str = "proxy_dequeue_shared_queue";
    let mut out = HostBuffer::new();
    // SAFETY: the out-pointers are valid locals.
    let code = unsafe { raw::proxy_dequeue_shared_queue(queue_id, &mut out.data, &mut out.size) };
    match check(CALL, code)? {
        // SAFETY: Ok, so the host handed over an allocation of ours.
        Status::Ok => Ok(Some(unsafe { out.into_vec() })),
        Status::Empty => Ok(None),
        status => Err(Error::Status { call: CALL, status }),
    }
}

// ---------------------------------------------------------------------------------------------
// Stream control
// ---------------------------------------------------------------------------------------------

/// Resumes a direction the filter paused. Takes effect after the current callback returns.
pub fn continue_stream(stream_type: StreamType) -> Result<()> {
    // SAFETY: no pointers.
    expect_ok("proxy_continue_stream", unsafe {
        raw::proxy_continue_stream(stream_type.as_u32())
    })
}

/// Resets a direction (Envoy resets the whole stream, which closes an upgraded connection).
pub fn close_stream(stream_type: StreamType) -> Result<()> {
    // SAFETY: no pointers.
    expect_ok("proxy_close_stream", unsafe {
        raw::proxy_close_stream(stream_type.as_u32())
    })
}

/// Answers the current HTTP stream locally, without (or instead of) the upstream. Takes effect
/// after the callback returns; return [`Action::Pause`](weir_abi::Action::Pause) from it.
///
/// `details` ends up in Envoy's `%RESPONSE_CODE_DETAILS%`; `grpc_status` is `None` for plain
/// HTTP.
pub fn send_local_response<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    status_code: u32,
    details: &str,
    headers: &[(K, V)],
    body: &[u8],
    grpc_status: Option<i32>,
) -> Result<()> {
    const CALL: &str = "proxy_send_local_response";
    let headers = encode_map(CALL, headers)?;
    // SAFETY: the slices are valid for the call.
    expect_ok(CALL, unsafe {
        raw::proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc_status.unwrap_or(-1),
        )
    })
}

/// Makes following host calls act on `context_id` (e.g. to resume a stream from a callout
/// answer). The dispatcher already does this before `on_http_call_response`.
pub fn set_effective_context(context_id: u32) -> Result<()> {
    // SAFETY: no pointers.
    expect_ok("proxy_set_effective_context", unsafe {
        raw::proxy_set_effective_context(context_id)
    })
}

/// Tells the host a context that returned `false` from `on_done` is finished now.
pub fn done() -> Result<()> {
    // SAFETY: no arguments.
    expect_ok("proxy_done", unsafe { raw::proxy_done() })
}

/// The status code and message of the last callout (meaningful for gRPC callouts).
pub fn get_status() -> Result<(u32, Vec<u8>)> {
    const CALL: &str = "proxy_get_status";
    let mut code_out = 0u32;
    let mut out = HostBuffer::new();
    // SAFETY: out-pointers are valid locals.
    let code = unsafe { raw::proxy_get_status(&mut code_out, &mut out.data, &mut out.size) };
    expect_ok(CALL, code)?;
    // SAFETY: Ok, so the host handed over an allocation of ours.
    Ok((code_out, unsafe { out.into_vec() }))
}

// ---------------------------------------------------------------------------------------------
// HTTP callouts
// ---------------------------------------------------------------------------------------------

/// Sends an HTTP request to the cluster `upstream`. `headers` must hold `:method`, `:path` and
/// `:authority`. Returns the token the answer will carry: the context that made the call gets
/// `on_http_call_response(token, ...)`, and reads the answer with
/// [`get_map`]`(MapType::HttpCallResponseHeaders)` and
/// [`get_buffer`]`(BufferType::HttpCallResponseBody, ..)`.
pub fn dispatch_http_call<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    upstream: &str,
    headers: &[(K, V)],
    body: Option<&[u8]>,
    trailers: &[(K, V)],
    timeout: Duration,
) -> Result<u32> {
    const CALL: &str = "proxy_http_call";
    let headers = encode_map(CALL, headers)?;
    let trailers = encode_map(CALL, trailers)?;
    let body = body.unwrap_or_default();
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    let mut token = 0u32;
    // SAFETY: the slices and the out-pointer are valid for the call.
    expect_ok(CALL, unsafe {
        raw::proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    crate::dispatcher::register_callout(token);
    Ok(token)
}

/// Calls a host extension by name; `None` when the host has none of that name.
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Option<Vec<u8>>> {
    const CALL: &str = "proxy_call_foreign_function";
    let mut out = HostBuffer::new();
    // SAFETY: the slices and the out-pointers are valid for the call.
    let code = unsafe {
        raw::proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut out.data,
            &mut out.size,
        )
    };
    match check(CALL, code)? {
        // SAFETY: Ok, so the host handed over an allocation of ours.
        Status::Ok => Ok(Some(unsafe { out.into_vec() })),
        Status::NotFound => Ok(None),
        status => Err(Error::Status { call: CALL, status }),
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Defines (or finds) a metric and returns its id. Define once, in `on_vm_start` or
/// `on_configure`, and keep the id.
pub fn define_metric(metric_type: MetricType, name: &str) -> Result<u32> {
    let mut id = 0u32;
    // SAFETY: the name slice and the out-pointer are valid for the call.
    expect_ok("proxy_define_metric", unsafe {
        raw::proxy_define_metric(metric_type.as_u32(), name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

/// Adds `delta` to a counter or gauge.
pub fn increment_metric(metric_id: u32, delta: i64) -> Result<()> {
    // SAFETY: no pointers.
    expect_ok("proxy_increment_metric", unsafe {
        raw::proxy_increment_metric(metric_id, delta)
    })
}

/// Sets a gauge, or records one observation of a histogram.
pub fn record_metric(metric_id: u32, value: u64) -> Result<()> {
    // SAFETY: no pointers.
    expect_ok("proxy_record_metric", unsafe {
        raw::proxy_record_metric(metric_id, value)
    })
}

/// The current value of a counter or gauge.
pub fn get_metric(metric_id: u32) -> Result<u64> {
    let mut value = 0u64;
    // SAFETY: the out-pointer is a valid local.
    expect_ok("proxy_get_metric", unsafe {
        raw::proxy_get_metric(metric_id, &mut value)
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_paths_join_with_nul() {
        assert_eq!(property_path(&["request", "path"]), b"request\0path");
        assert_eq!(property_path(&["plugin_root_id"]), b"plugin_root_id");
        assert!(property_path(&[]).is_empty());
    }

    #[test]
    fn off_wasm_every_call_is_unimplemented_not_a_crash() {
        let unimplemented = |r: Result<()>| {
            assert_eq!(
                r.err().and_then(|e| e.status()),
                Some(Status::Unimplemented)
            );
        };
        unimplemented(log(LogLevel::Info, "x"));
        unimplemented(set_buffer(BufferType::HttpRequestBody, 0, 0, b"x"));
        unimplemented(set_map(MapType::HttpRequestHeaders, &[("a", "b")]));
        unimplemented(set_shared_data("k", b"v", Some(3)));
        unimplemented(send_local_response(401, "", &[("a", "b")], b"", None));
        assert!(get_map(MapType::HttpRequestHeaders).is_err());
        assert!(get_shared_data("k").is_err());
        assert!(dispatch_http_call::<&str, &str>("c", &[], None, &[], Duration::ZERO).is_err());
    }
}
