//! Properties: `proxy_get_property`, `proxy_set_property` (see [`crate::wasm::properties`]).

use super::Registrar;
use crate::wasm::memory::{self, HostResult, done, read, return_bytes};
use crate::wasm::properties;
use crate::wasm::state::HostState;
use wasmtime::Caller;
use weir_abi::Status;
use weir_abi::names::host as names;

fn get_property(
    mut caller: Caller<'_, HostState>,
    path_ptr: i32,
    path_len: i32,
    ptr_out: i32,
    len_out: i32,
) -> HostResult {
    let value = read(&mut caller, path_ptr, path_len)
        .and_then(|path| properties::lookup(caller.data(), &path).ok_or(Status::NotFound));
    match value {
        Ok(value) => done(return_bytes(&mut caller, &value, ptr_out, len_out)?),
        Err(status) => memory::status(status),
    }
}

fn set_property(
    mut caller: Caller<'_, HostState>,
    path_ptr: i32,
    path_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> HostResult {
    let result = read(&mut caller, path_ptr, path_len).and_then(|path| {
        let value = read(&mut caller, value_ptr, value_len)?;
        properties::set(caller.data_mut(), path, value);
        Ok(())
    });
    done(result)
}

/// Defines the property functions.
pub fn add(r: &mut Registrar<'_>) {
    r.env(names::PROXY_GET_PROPERTY, get_property);
    r.env(names::PROXY_SET_PROPERTY, set_property);
}
