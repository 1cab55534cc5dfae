//! The host functions off wasm32: each reads its arguments as the ABI passes them (pointers
//! and sizes), acts on the thread's [`super::State`] and answers with a status, exactly where
//! a real host would. Without a [`super::Host`] on the thread every one answers
//! `Unimplemented` and touches nothing.

#![allow(clippy::too_many_arguments, missing_docs)]

use std::time::{Duration, SystemTime};

use weir_abi::{LogLevel, Status, StreamType, header_map};

use super::{HttpCall, LocalResponse, State, with_state};

fn code(status: Status) -> i32 {
    status.as_i32()
}

/// Runs `f` on the host state, or answers `Unimplemented` when there is none.
fn host(f: impl FnOnce(&mut State) -> Status) -> i32 {
    code(with_state(f).unwrap_or(Status::Unimplemented))
}

/// The bytes at `data`.
///
/// # Safety
/// `data` is valid for `size` bytes (the SDK's wrappers pass Rust slices).
unsafe fn bytes<'a>(data: *const u8, size: usize) -> &'a [u8] {
    if size == 0 || data.is_null() {
        &[]
    } else {
        // SAFETY: see the function's contract.
        unsafe { std::slice::from_raw_parts(data, size) }
    }
}

unsafe fn text(data: *const u8, size: usize) -> String {
    // SAFETY: forwarded contract.
    String::from_utf8_lossy(unsafe { bytes(data, size) }).into_owned()
}

/// Hands `value` to the module as the real host does: in a block of exactly its size that
/// the SDK frees as a `Vec<u8>`.
///
/// # Safety
/// The out-pointers are valid for writes.
unsafe fn give(value: &[u8], return_data: *mut *mut u8, return_size: *mut usize) {
    let (data, size) = if value.is_empty() {
        (std::ptr::null_mut(), 0)
    } else {
        let block: Box<[u8]> = value.into();
        let size = block.len();
        (Box::into_raw(block).cast::<u8>(), size)
    };
    // SAFETY: see the function's contract.
    unsafe {
        *return_data = data;
        *return_size = size;
    }
}

fn decode_map(data: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let pairs = header_map::decode(data).ok()?;
    Some(
        pairs
            .map(|(k, v)| (String::from_utf8_lossy(k).to_ascii_lowercase(), v.to_vec()))
            .collect(),
    )
}

fn lossy_pairs(pairs: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

pub unsafe fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> i32 {
    // SAFETY: the wrapper passes a slice.
    let message = unsafe { text(message_data, message_size) };
    host(|s| match LogLevel::try_from(level) {
        Ok(level) => {
            s.logs.push((level, message));
            Status::Ok
        }
        Err(_) => Status::BadArgument,
    })
}

pub unsafe fn proxy_get_log_level(return_level: *mut u32) -> i32 {
    host(|s| {
        let level = s.log_level.unwrap_or(LogLevel::Trace);
        // SAFETY: the wrapper passes a local.
        unsafe { *return_level = level.as_u32() };
        Status::Ok
    })
}

pub unsafe fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> i32 {
    host(|s| {
        let now = s.now.unwrap_or_else(SystemTime::now);
        let nanos = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        // SAFETY: the wrapper passes a local.
        unsafe { *return_time = nanos };
        Status::Ok
    })
}

pub unsafe fn proxy_set_tick_period_milliseconds(period: u32) -> i32 {
    host(|s| {
        s.tick_period = Some(Duration::from_millis(u64::from(period)));
        Status::Ok
    })
}

pub unsafe fn proxy_get_buffer_bytes(
    buffer_type: u32,
    start: usize,
    max_size: usize,
    return_buffer_data: *mut *mut u8,
    return_buffer_size: *mut usize,
) -> i32 {
    host(|s| {
        let Some(buffer) = s.buffers.get(&buffer_type) else {
            return Status::NotFound;
        };
        let start = start.min(buffer.len());
        let end = start.saturating_add(max_size).min(buffer.len());
        // SAFETY: the wrapper passes locals.
        unsafe { give(&buffer[start..end], return_buffer_data, return_buffer_size) };
        Status::Ok
    })
}

pub unsafe fn proxy_set_buffer_bytes(
    buffer_type: u32,
    start: usize,
    size: usize,
    buffer_data: *const u8,
    buffer_size: usize,
) -> i32 {
    // SAFETY: the wrapper passes a slice.
    let data = unsafe { bytes(buffer_data, buffer_size) }.to_vec();
    host(|s| {
        let buffer = s.buffers.entry(buffer_type).or_default();
        let start = start.min(buffer.len());
        let end = start.saturating_add(size).min(buffer.len());
        buffer.splice(start..end, data);
        Status::Ok
    })
}

pub unsafe fn proxy_get_header_map_pairs(
    map_type: u32,
    return_map_data: *mut *mut u8,
    return_map_size: *mut usize,
) -> i32 {
    host(|s| {
        let pairs = s.maps.get(&map_type).cloned().unwrap_or_default();
        let Ok(encoded) = header_map::encode_to_vec(&pairs) else {
            return Status::SerializationFailure;
        };
        // SAFETY: the wrapper passes locals.
        unsafe { give(&encoded, return_map_data, return_map_size) };
        Status::Ok
    })
}

pub unsafe fn proxy_set_header_map_pairs(
    map_type: u32,
    map_data: *const u8,
    map_size: usize,
) -> i32 {
    // SAFETY: the wrapper passes a slice.
    let decoded = decode_map(unsafe { bytes(map_data, map_size) });
    host(|s| match decoded {
        Some(pairs) => {
            s.maps.insert(map_type, pairs);
            Status::Ok
        }
        None => Status::BadArgument,
    })
}

pub unsafe fn proxy_get_header_map_value(
    map_type: u32,
    key_data: *const u8,
    key_size: usize,
    return_value_data: *mut *mut u8,
    return_value_size: *mut usize,
) -> i32 {
    // SAFETY: the wrapper passes a slice.
    let key = unsafe { text(key_data, key_size) }.to_ascii_lowercase();
    host(|s| {
        let found = s
            .maps
            .get(&map_type)
            .and_then(|pairs| pairs.iter().find(|(k, _)| *k == key));
        match found {
            Some((_, value)) => {
                // SAFETY: the wrapper passes locals.
                unsafe { give(value, return_value_data, return_value_size) };
                Status::Ok
            }
            None => Status::NotFound,
        }
    })
}

pub unsafe fn proxy_add_header_map_value(
    map_type: u32,
    key_data: *const u8,
    key_size: usize,
    value_data: *const u8,
    value_size: usize,
) -> i32 {
    // SAFETY: the wrapper passes slices.
    let (key, value) = unsafe { (text(key_data, key_size), bytes(value_data, value_size)) };
    let value = value.to_vec();
    host(|s| {
        s.maps
            .entry(map_type)
            .or_default()
            .push((key.to_ascii_lowercase(), value));
        Status::Ok
    })
}

pub unsafe fn proxy_replace_header_map_value(
    map_type: u32,
    key_data: *const u8,
    key_size: usize,
    value_data: *const u8,
    value_size: usize,
) -> i32 {
    // SAFETY: the wrapper passes slices.
    let (key, value) = unsafe { (text(key_data, key_size), bytes(value_data, value_size)) };
    let (key, value) = (key.to_ascii_lowercase(), value.to_vec());
    host(|s| {
        let pairs = s.maps.entry(map_type).or_default();
        match pairs.iter().position(|(k, _)| *k == key) {
            Some(first) => {
                pairs[first].1 = value;
                let mut index = 0;
                pairs.retain(|(k, _)| {
                    let keep = index <= first || *k != key;
                    index += 1;
                    keep
                });
            }
            None => pairs.push((key, value)),
        }
        Status::Ok
    })
}

pub unsafe fn proxy_remove_header_map_value(
    map_type: u32,
    key_data: *const u8,
    key_size: usize,
) -> i32 {
    // SAFETY: the wrapper passes a slice.
    let key = unsafe { text(key_data, key_size) }.to_ascii_lowercase();
    host(|s| {
        if let Some(pairs) = s.maps.get_mut(&map_type) {
            pairs.retain(|(k, _)| *k != key);
        }
        Status::Ok
    })
}

pub unsafe fn proxy_get_property(
    path_data: *const u8,
    path_size: usize,
    return_value_data: *mut *mut u8,
    return_value_size: *mut usize,
) -> i32 {
    // SAFETY: the wrapper passes a slice.
    let path = unsafe { bytes(path_data, path_size) }.to_vec();
    host(|s| match s.properties.get(&path) {
        Some(value) => {
            // SAFETY: the wrapper passes locals.
            unsafe { give(value, return_value_data, return_value_size) };
            Status::Ok
        }
        None => Status::NotFound,
    })
}

pub unsafe fn proxy_set_property(
    path_data: *const u8,
    path_size: usize,
    value_data: *const u8,
    value_size: usize,
) -> i32 {
    // SAFETY: the wrapper passes slices.
    let (path, value) = unsafe { (bytes(path_data, path_size), bytes(value_data, value_size)) };
    let (path, value) = (path.to_vec(), value.to_vec());
    host(|s| {
        s.properties.insert(path, value);
        Status::Ok
    })
}

pub unsafe fn proxy_get_shared_data(
    key_data: *const u8,
    key_size: usize,
    return_value_data: *mut *mut u8,
    return_value_size: *mut usize,
    return_cas: *mut u32,
) -> i32 {
    // SAFETY: the wrapper passes a slice.
    let key = unsafe { text(key_data, key_size) };
    host(|s| match s.shared.get(&key) {
        Some((value, cas)) => {
            // SAFETY: the wrapper passes locals.
            unsafe {
                give(value, return_value_data, return_value_size);
                *return_cas = *cas;
            }
            Status::Ok
        }
        None => Status::NotFound,
    })
}

pub unsafe fn proxy_set_shared_data(
    key_data: *const u8,
    key_size: usize,
    value_data: *const u8,
    value_size: usize,
    cas: u32,
) -> i32 {
    // SAFETY: the wrapper passes slices.
    let (key, value) = unsafe { (text(key_data, key_size), bytes(value_data, value_size)) };
    let value = value.to_vec();
    host(|s| {
        let current = s.shared.get(&key).map_or(0, |(_, cas)| *cas);
        if cas != 0 && cas != current {
            return Status::CasMismatch;
        }
        s.shared
            .insert(key, (value, current.wrapping_add(1).max(1)));
        Status::Ok
    })
}

/// Queue ids are 1-based positions in `State::queues`.
fn queue_id(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

pub unsafe fn proxy_register_shared_queue(
    name_data: *const u8,
    name_size: usize,
    return_id: *mut u32,
) -> i32 {
    // SAFETY: the wrapper passes a slice.
    let name = unsafe { text(name_data, name_size) };
    host(|s| {
        let index = match s.queues.iter().position(|(n, _)| *n == name) {
            Some(index) => index,
            None => {
                s.queues.push((name, Default::default()));
                s.queues.len() - 1
            }
        };
        // SAFETY: the wrapper passes a local.
        unsafe { *return_id = queue_id(index) };
        Status::Ok
    })
}

pub unsafe fn proxy_resolve_shared_queue(
    vm_id_data: *const u8,
    vm_id_size: usize,
    name_data: *const u8,
    name_size: usize,
    return_id: *mut u32,
) -> i32 {
    // One VM in a test: the vm id is not looked at.
    let _ = (vm_id_data, vm_id_size);
    // SAFETY: the wrapper passes a slice.
    let name = unsafe { text(name_data, name_size) };
    host(|s| match s.queues.iter().position(|(n, _)| *n == name) {
        Some(index) => {
            // SAFETY: the wrapper passes a local.
            unsafe { *return_id = queue_id(index) };
            Status::Ok
        }
        None => Status::NotFound,
    })
}

fn queue(s: &mut State, queue_id: u32) -> Option<&mut std::collections::VecDeque<Vec<u8>>> {
    let index = usize::try_from(queue_id).ok()?.checked_sub(1)?;
    s.queues.get_mut(index).map(|(_, queue)| queue)
}

pub unsafe fn proxy_enqueue_shared_queue(
    queue_id: u32,
    value_data: *const u8,
    value_size: usize,
) -> i32 {
    // SAFETY: the wrapper passes a slice.
    let value = unsafe { bytes(value_data, value_size) }.to_vec();
    host(|s| match queue(s, queue_id) {
        Some(queue) => {
            queue.push_back(value);
            Status::Ok
        }
        None => Status::NotFound,
    })
}

pub unsafe fn proxy_dequeue_shared_queue(
    queue_id: u32,
    return_value_data: *mut *mut u8,
    return_value_size: *mut usize,
) -> i32 {
    host(|s| match queue(s, queue_id) {
        None => Status::NotFound,
        Some(queue) => match queue.pop_front() {
            Some(value) => {
                // SAFETY: the wrapper passes locals.
                unsafe { give(&value, return_value_data, return_value_size) };
                Status::Ok
            }
            None => Status::Empty,
        },
    })
}

fn stream(stream_type: u32) -> Option<StreamType> {
    StreamType::try_from(stream_type).ok()
}

pub unsafe fn proxy_continue_stream(stream_type: u32) -> i32 {
    host(|s| match stream(stream_type) {
        Some(stream) => {
            s.continued.push(stream);
            Status::Ok
        }
        None => Status::BadArgument,
    })
}

pub unsafe fn proxy_close_stream(stream_type: u32) -> i32 {
    host(|s| match stream(stream_type) {
        Some(stream) => {
            s.closed.push(stream);
            Status::Ok
        }
        None => Status::BadArgument,
    })
}

pub unsafe fn proxy_send_local_response(
    status_code: u32,
    status_code_details_data: *const u8,
    status_code_details_size: usize,
    body_data: *const u8,
    body_size: usize,
    headers_data: *const u8,
    headers_size: usize,
    grpc_status: i32,
) -> i32 {
    // SAFETY: the wrapper passes slices.
    let (details, body, headers) = unsafe {
        (
            text(status_code_details_data, status_code_details_size),
            bytes(body_data, body_size).to_vec(),
            decode_map(bytes(headers_data, headers_size)),
        )
    };
    host(|s| {
        let Some(headers) = headers else {
            return Status::BadArgument;
        };
        s.local_response = Some(LocalResponse {
            status: status_code,
            details,
            headers: lossy_pairs(headers),
            body,
            grpc_status: (grpc_status >= 0).then_some(grpc_status),
        });
        Status::Ok
    })
}

pub unsafe fn proxy_http_call(
    upstream_data: *const u8,
    upstream_size: usize,
    headers_data: *const u8,
    headers_size: usize,
    body_data: *const u8,
    body_size: usize,
    trailers_data: *const u8,
    trailers_size: usize,
    timeout_ms: u32,
    return_token: *mut u32,
) -> i32 {
    let _ = (trailers_data, trailers_size);
    // SAFETY: the wrapper passes slices.
    let (upstream, headers, body) = unsafe {
        (
            text(upstream_data, upstream_size),
            decode_map(bytes(headers_data, headers_size)),
            bytes(body_data, body_size).to_vec(),
        )
    };
    host(|s| {
        let Some(headers) = headers else {
            return Status::BadArgument;
        };
        let token = u32::try_from(s.http_calls.len() + 1).unwrap_or(u32::MAX);
        s.http_calls.push(HttpCall {
            token,
            upstream,
            headers: lossy_pairs(headers),
            body,
            timeout: Duration::from_millis(u64::from(timeout_ms)),
        });
        // SAFETY: the wrapper passes a local.
        unsafe { *return_token = token };
        Status::Ok
    })
}

pub unsafe fn proxy_get_status(
    return_code: *mut u32,
    return_message_data: *mut *mut u8,
    return_message_size: *mut usize,
) -> i32 {
    let _ = (return_code, return_message_data, return_message_size);
    // gRPC is not modelled.
    code(Status::Unimplemented)
}

pub unsafe fn proxy_set_effective_context(context_id: u32) -> i32 {
    host(|s| {
        s.effective_context = Some(context_id);
        Status::Ok
    })
}

pub unsafe fn proxy_done() -> i32 {
    host(|s| {
        s.done_calls += 1;
        Status::Ok
    })
}

pub unsafe fn proxy_call_foreign_function(
    name_data: *const u8,
    name_size: usize,
    args_data: *const u8,
    args_size: usize,
    return_results_data: *mut *mut u8,
    return_results_size: *mut usize,
) -> i32 {
    let _ = (name_data, name_size, args_data, args_size);
    let _ = (return_results_data, return_results_size);
    // No host extensions in a test.
    host(|_| Status::NotFound)
}

pub unsafe fn proxy_define_metric(
    metric_type: u32,
    name_data: *const u8,
    name_size: usize,
    return_id: *mut u32,
) -> i32 {
    let _ = metric_type;
    // SAFETY: the wrapper passes a slice.
    let name = unsafe { text(name_data, name_size) };
    host(|s| {
        let id = match s.metrics.iter().find(|(n, _, _)| *n == name) {
            Some((_, id, _)) => *id,
            None => {
                let id = u32::try_from(s.metrics.len() + 1).unwrap_or(u32::MAX);
                s.metrics.push((name, id, 0));
                id
            }
        };
        // SAFETY: the wrapper passes a local.
        unsafe { *return_id = id };
        Status::Ok
    })
}

fn metric(s: &mut State, metric_id: u32) -> Option<&mut u64> {
    s.metrics
        .iter_mut()
        .find(|(_, id, _)| *id == metric_id)
        .map(|(_, _, value)| value)
}

pub unsafe fn proxy_increment_metric(metric_id: u32, offset: i64) -> i32 {
    host(|s| match metric(s, metric_id) {
        Some(value) => {
            *value = value.saturating_add_signed(offset);
            Status::Ok
        }
        None => Status::NotFound,
    })
}

pub unsafe fn proxy_record_metric(metric_id: u32, value: u64) -> i32 {
    host(|s| match metric(s, metric_id) {
        Some(current) => {
            *current = value;
            Status::Ok
        }
        None => Status::NotFound,
    })
}

pub unsafe fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> i32 {
    host(|s| match metric(s, metric_id) {
        Some(value) => {
            // SAFETY: the wrapper passes a local.
            unsafe { *return_value = *value };
            Status::Ok
        }
        None => Status::NotFound,
    })
}
