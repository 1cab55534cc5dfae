//! Shared data and queues: `proxy_{get,set}_shared_data`,
//! `proxy_{register,resolve,enqueue,dequeue}_shared_queue` (see [`crate::wasm::shared`]).

use super::Registrar;
use crate::wasm::memory::{self, HostResult, done, read, read_string, return_bytes, write_u32};
use crate::wasm::shared;
use crate::wasm::state::HostState;
use wasmtime::Caller;
use weir_abi::names::host as names;

fn get_data(
    mut caller: Caller<'_, HostState>,
    key_ptr: i32,
    key_len: i32,
    ptr_out: i32,
    len_out: i32,
    cas_out: i32,
) -> HostResult {
    let found = read(&mut caller, key_ptr, key_len)
        .and_then(|key| shared::get_data(&caller.data().plugin.vm_id, &key));
    match found {
        Ok((value, cas)) => {
            if let Err(status) = return_bytes(&mut caller, &value, ptr_out, len_out)? {
                return memory::status(status);
            }
            done(write_u32(&mut caller, cas_out, cas))
        }
        Err(status) => memory::status(status),
    }
}

fn set_data(
    mut caller: Caller<'_, HostState>,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
    cas: i32,
) -> HostResult {
    let result = read(&mut caller, key_ptr, key_len).and_then(|key| {
        let value = read(&mut caller, value_ptr, value_len)?;
        shared::set_data(&caller.data().plugin.vm_id, &key, value, cas as u32)
    });
    done(result)
}

fn register_queue(
    mut caller: Caller<'_, HostState>,
    name_ptr: i32,
    name_len: i32,
    id_out: i32,
) -> HostResult {
    let result = read_string(&mut caller, name_ptr, name_len).and_then(|name| {
        let state = caller.data_mut();
        let id = shared::register_queue(&state.plugin.vm_id, &name, state.queue_waker.clone());
        if !state.owned_queues.contains(&id) {
            state.owned_queues.push(id);
        }
        write_u32(&mut caller, id_out, id)
    });
    done(result)
}

fn resolve_queue(
    mut caller: Caller<'_, HostState>,
    vm_ptr: i32,
    vm_len: i32,
    name_ptr: i32,
    name_len: i32,
    id_out: i32,
) -> HostResult {
    let result = read_string(&mut caller, vm_ptr, vm_len).and_then(|vm_id| {
        let name = read_string(&mut caller, name_ptr, name_len)?;
        let vm_id = if vm_id.is_empty() {
            caller.data().plugin.vm_id.clone()
        } else {
            vm_id
        };
        let id = shared::resolve_queue(&vm_id, &name)?;
        write_u32(&mut caller, id_out, id)
    });
    done(result)
}

fn enqueue(
    mut caller: Caller<'_, HostState>,
    id: i32,
    value_ptr: i32,
    value_len: i32,
) -> HostResult {
    done(
        read(&mut caller, value_ptr, value_len).and_then(|value| shared::enqueue(id as u32, value)),
    )
}

fn dequeue(mut caller: Caller<'_, HostState>, id: i32, ptr_out: i32, len_out: i32) -> HostResult {
    match shared::dequeue(id as u32) {
        Ok(value) => done(return_bytes(&mut caller, &value, ptr_out, len_out)?),
        Err(status) => memory::status(status),
    }
}

/// Defines the shared data and queue functions.
pub fn add(r: &mut Registrar<'_>) {
    r.env(names::PROXY_GET_SHARED_DATA, get_data);
    r.env(names::PROXY_SET_SHARED_DATA, set_data);
    r.env(names::PROXY_REGISTER_SHARED_QUEUE, register_queue);
    r.env(names::PROXY_RESOLVE_SHARED_QUEUE, resolve_queue);
    r.env(names::PROXY_ENQUEUE_SHARED_QUEUE, enqueue);
    r.env(names::PROXY_DEQUEUE_SHARED_QUEUE, dequeue);
}
