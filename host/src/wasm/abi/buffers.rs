//! Buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`,
//! and 0.1.0's `proxy_get_configuration`.

use super::Registrar;
use crate::wasm::memory::{self, HostResult, done, read, return_bytes, unsigned};
use crate::wasm::state::HostState;
use wasmtime::Caller;
use weir_abi::names::host as names;
use weir_abi::{BufferType, Status};

/// A copy of the buffer `buffer_type` names in the effective context.
fn buffer(state: &mut HostState, buffer_type: i32) -> Result<Vec<u8>, Status> {
    let buffer_type = BufferType::try_from(buffer_type).map_err(|_| Status::BadArgument)?;
    match buffer_type {
        BufferType::VmConfiguration => Ok(state.plugin.vm_configuration.clone()),
        BufferType::PluginConfiguration => Ok(state.plugin.plugin_configuration.clone()),
        BufferType::HttpCallResponseBody => state
            .call_response
            .as_ref()
            .map(|r| r.body.clone())
            .ok_or(Status::NotFound),
        other => body_mut(state, other).map(|body| body.clone()),
    }
}

/// The mutable body buffer (HTTP) or connection data (network filter) of the effective stream.
fn body_mut(state: &mut HostState, buffer_type: BufferType) -> Result<&mut Vec<u8>, Status> {
    let stream = state.effective_stream().ok_or(Status::NotFound)?;
    match buffer_type {
        BufferType::HttpRequestBody => Ok(&mut stream.request_body),
        BufferType::HttpResponseBody => Ok(&mut stream.response_body),
        BufferType::DownstreamData => Ok(&mut stream.downstream_data),
        BufferType::UpstreamData => Ok(&mut stream.upstream_data),
        _ => Err(Status::NotFound),
    }
}

fn get_bytes(
    mut caller: Caller<'_, HostState>,
    buffer_type: i32,
    start: i32,
    max_size: i32,
    ptr_out: i32,
    len_out: i32,
) -> HostResult {
    let bytes = match buffer(caller.data_mut(), buffer_type) {
        Ok(bytes) => bytes,
        Err(status) => return memory::status(status),
    };
    let start = unsigned(start);
    if start > bytes.len() {
        return memory::status(Status::BadArgument);
    }
    let end = start.saturating_add(unsigned(max_size)).min(bytes.len());
    if end == start {
        // As Envoy: nothing to return leaves the out-pointers alone (the SDKs read None).
        return memory::status(Status::Ok);
    }
    done(return_bytes(
        &mut caller,
        &bytes[start..end],
        ptr_out,
        len_out,
    )?)
}

fn set_bytes(
    mut caller: Caller<'_, HostState>,
    buffer_type: i32,
    start: i32,
    size: i32,
    data_ptr: i32,
    data_len: i32,
) -> HostResult {
    let result = read(&mut caller, data_ptr, data_len).and_then(|data| {
        let buffer_type = BufferType::try_from(buffer_type).map_err(|_| Status::BadArgument)?;
        let body = body_mut(caller.data_mut(), buffer_type)?;
        let start = unsigned(start).min(body.len());
        let end = start.saturating_add(unsigned(size)).min(body.len());
        body.splice(start..end, data);
        Ok(())
    });
    done(result)
}

fn get_status(
    mut caller: Caller<'_, HostState>,
    buffer_type: i32,
    len_out: i32,
    flags_out: i32,
) -> HostResult {
    let result = buffer(caller.data_mut(), buffer_type).and_then(|bytes| {
        memory::write_u32(&mut caller, len_out, bytes.len() as u32)?;
        memory::write_u32(&mut caller, flags_out, 0)
    });
    done(result)
}

fn get_configuration(mut caller: Caller<'_, HostState>, ptr_out: i32, len_out: i32) -> HostResult {
    let bytes = caller.data().plugin.plugin_configuration.clone();
    done(return_bytes(&mut caller, &bytes, ptr_out, len_out)?)
}

/// Defines the buffer functions.
pub fn add(r: &mut Registrar<'_>) {
    r.env(names::PROXY_GET_BUFFER_BYTES, get_bytes);
    r.env(names::PROXY_SET_BUFFER_BYTES, set_bytes);
    r.env(names::PROXY_GET_BUFFER_STATUS, get_status);
    r.env(names::legacy::PROXY_GET_CONFIGURATION, get_configuration);
}
