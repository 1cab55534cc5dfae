//! The functions the module exports for the host to call: the ABI version marker, the
//! allocator and every callback, each handed to the dispatcher.
//!
//! Compiled on wasm32 only: the root-context factory is the `__weir_sdk_new_root` function
//! that [`crate::main!`] defines in the filter crate, and linking against it only makes sense
//! in the filter's module.

use std::alloc::{Layout, alloc};
use std::ptr::{self, NonNull};
use std::sync::Once;

use weir_abi::Action;

use crate::dispatcher::{self, Dispatcher};
use crate::traits::RootContext;

unsafe extern "Rust" {
    /// Defined by `weir_sdk::main!` in the filter crate.
    safe fn __weir_sdk_new_root(root_id: u32) -> Box<dyn RootContext>;
}

/// Marks the module as speaking proxy-wasm ABI 0.2.1.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host allocates every buffer it hands to the module here: `size` bytes with align 1 from
/// the global allocator, which is exactly what the host-call wrappers later free as a
/// `Vec<u8>` of capacity `size`. Size 0 gets a dangling non-null pointer that is never freed.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    if size == 0 {
        return NonNull::<u8>::dangling().as_ptr();
    }
    match Layout::array::<u8>(size) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { alloc(layout) },
        Err(_) => ptr::null_mut(),
    }
}

fn on(f: impl FnOnce(&Dispatcher)) {
    dispatcher::with(f);
}

fn action(f: impl FnOnce(&Dispatcher) -> Action) -> u32 {
    dispatcher::with(f).as_u32()
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
    static PANIC_HOOK: Once = Once::new();
    PANIC_HOOK.call_once(crate::log::install_panic_hook);
    on(|d| d.on_context_create(context_id, parent_id, &__weir_sdk_new_root));
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(root_id: u32, vm_configuration_size: usize) -> u32 {
    dispatcher::with(|d| d.with_root(root_id, |r| r.on_vm_start(vm_configuration_size)))
        .unwrap_or(false)
        .into()
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(root_id: u32, plugin_configuration_size: usize) -> u32 {
    dispatcher::with(|d| d.with_root(root_id, |r| r.on_configure(plugin_configuration_size)))
        .unwrap_or(false)
        .into()
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_tick(root_id: u32) {
    on(|d| {
        d.with_root(root_id, |r| r.on_tick());
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_queue_ready(root_id: u32, queue_id: u32) {
    on(|d| {
        d.with_root(root_id, |r| r.on_queue_ready(queue_id));
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_new_connection(context_id: u32) -> u32 {
    action(|d| d.stream_action(context_id, |c| c.on_new_connection()))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_downstream_data(context_id: u32, size: usize, eos: u32) -> u32 {
    action(|d| d.stream_action(context_id, |c| c.on_downstream_data(size, eos != 0)))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_upstream_data(context_id: u32, size: usize, eos: u32) -> u32 {
    action(|d| d.stream_action(context_id, |c| c.on_upstream_data(size, eos != 0)))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_downstream_connection_close(context_id: u32, peer_type: u32) {
    on(|d| d.on_close(context_id, peer_type, true));
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_upstream_connection_close(context_id: u32, peer_type: u32) {
    on(|d| d.on_close(context_id, peer_type, false));
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(context_id: u32, headers: usize, eos: u32) -> u32 {
    action(|d| d.http_action(context_id, |c| c.on_http_request_headers(headers, eos != 0)))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_body(context_id: u32, size: usize, eos: u32) -> u32 {
    action(|d| d.http_action(context_id, |c| c.on_http_request_body(size, eos != 0)))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, trailers: usize) -> u32 {
    action(|d| d.http_action(context_id, |c| c.on_http_request_trailers(trailers)))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(context_id: u32, headers: usize, eos: u32) -> u32 {
    action(|d| {
        d.http_action(context_id, |c| {
            c.on_http_response_headers(headers, eos != 0)
        })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_body(context_id: u32, size: usize, eos: u32) -> u32 {
    action(|d| d.http_action(context_id, |c| c.on_http_response_body(size, eos != 0)))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_trailers(context_id: u32, trailers: usize) -> u32 {
    action(|d| d.http_action(context_id, |c| c.on_http_response_trailers(trailers)))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    headers: usize,
    body_size: usize,
    trailers: usize,
) {
    on(|d| d.on_http_call_response(context_id, token, headers, body_size, trailers));
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_log(context_id: u32) {
    on(|d| d.on_log(context_id));
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_done(context_id: u32) -> u32 {
    dispatcher::with(|d| d.on_done(context_id)).into()
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    on(|d| d.on_delete(context_id));
}
