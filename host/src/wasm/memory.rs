//! Bounds-checked access to a module's linear memory from host functions.
//!
//! A module may pass any pointer and length. Every read and write here checks its range and
//! answers a [`Status`] instead of trapping; only a trap inside the module's own allocator
//! (called to place returned bytes) comes back as an error, which fails the call.

use super::state::{HostState, ModuleExports};
use wasmtime::{AsContextMut, Caller, Extern, Instance, Memory, TypedFunc};
use weir_abi::Status;

/// What a host function returns to the module: a status, or a trap.
pub type HostResult = wasmtime::Result<i32>;

/// Returns `status` to the module.
pub fn status(status: Status) -> HostResult {
    Ok(status.as_i32())
}

/// Turns a step's result into the status the module receives.
pub fn done(result: Result<(), Status>) -> HostResult {
    Ok(match result {
        Ok(()) => Status::Ok.as_i32(),
        Err(status) => status.as_i32(),
    })
}

/// An `i32` argument read as the unsigned `u32` the ABI means (SDKs pass `usize::MAX`).
pub fn unsigned(value: i32) -> usize {
    value as u32 as usize
}

/// Looks up, once per instance, the exports every host call needs (kept in
/// [`HostState::exports`]).
pub fn resolve_exports(mut store: impl AsContextMut, instance: &Instance) -> ModuleExports {
    let mut store = store.as_context_mut();
    let memory = instance.get_memory(&mut store, "memory");
    let allocator = [
        weir_abi::names::callbacks::PROXY_ON_MEMORY_ALLOCATE,
        weir_abi::names::callbacks::MALLOC,
    ]
    .iter()
    .find_map(|name| instance.get_func(&mut store, name))
    .and_then(|func| func.typed::<i32, i32>(&store).ok());
    ModuleExports { memory, allocator }
}

fn memory(caller: &mut Caller<'_, HostState>) -> Result<Memory, Status> {
    if let Some(memory) = caller.data().exports.memory {
        return Ok(memory);
    }
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(Status::InternalFailure),
    }
}

/// The module's allocator: the one resolved at instantiation, else looked up by name.
fn allocator(caller: &mut Caller<'_, HostState>) -> Option<TypedFunc<i32, i32>> {
    if let Some(allocator) = &caller.data().exports.allocator {
        return Some(allocator.clone());
    }
    [
        weir_abi::names::callbacks::PROXY_ON_MEMORY_ALLOCATE,
        weir_abi::names::callbacks::MALLOC,
    ]
    .iter()
    .find_map(|name| caller.get_export(name).and_then(Extern::into_func))
    .and_then(|func| func.typed::<i32, i32>(&*caller).ok())
}

/// The `len` bytes at `ptr` of a module's memory `data`, the ABI's `i32`s read as unsigned;
/// `BadArgument` when any of them is outside it. The bounds arithmetic of every access.
pub fn slice(data: &[u8], ptr: i32, len: usize) -> Result<&[u8], Status> {
    let ptr = unsigned(ptr);
    let end = ptr.checked_add(len).ok_or(Status::BadArgument)?;
    data.get(ptr..end).ok_or(Status::BadArgument)
}

/// As [`slice`], to write into.
pub fn slice_mut(data: &mut [u8], ptr: i32, len: usize) -> Result<&mut [u8], Status> {
    let ptr = unsigned(ptr);
    let end = ptr.checked_add(len).ok_or(Status::BadArgument)?;
    data.get_mut(ptr..end).ok_or(Status::BadArgument)
}

/// A copy of `len` bytes at `ptr`; `BadArgument` when the range is outside memory.
pub fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let len = unsigned(len);
    if len == 0 {
        return Ok(Vec::new());
    }
    let memory = memory(caller)?;
    slice(memory.data(&*caller), ptr, len).map(<[u8]>::to_vec)
}

/// [`read`] as UTF-8 (lossy).
pub fn read_string(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> Result<String, Status> {
    read(caller, ptr, len).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Writes `bytes` at `ptr`.
pub fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let memory = memory(caller)?;
    slice_mut(memory.data_mut(&mut *caller), ptr, bytes.len())?.copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian `u32` at `ptr`.
pub fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64` at `ptr`.
pub fn write_u64(caller: &mut Caller<'_, HostState>, ptr: i32, value: u64) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Copies `bytes` into memory the module allocates (`proxy_on_memory_allocate`, or `malloc`)
/// and writes its address and length to `ptr_out` and `len_out`.
///
/// The outer error is a trap in the module's allocator; the inner one a status for the module.
pub fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_out: i32,
    len_out: i32,
) -> wasmtime::Result<Result<(), Status>> {
    let Ok(len) = u32::try_from(bytes.len()) else {
        return Ok(Err(Status::BadArgument));
    };
    let Some(allocator) = allocator(caller) else {
        return Ok(Err(Status::InternalFailure));
    };

    let address = allocator.call(&mut *caller, len as i32)?;
    if address == 0 && len > 0 {
        return Ok(Err(Status::InternalFailure));
    }
    Ok(write(caller, address, bytes)
        .and_then(|()| write_u32(caller, ptr_out, address as u32))
        .and_then(|()| write_u32(caller, len_out, len)))
}
