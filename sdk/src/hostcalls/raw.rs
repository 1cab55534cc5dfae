//! The host functions exactly as the module imports them from module `"env"`.
//!
//! Every one returns the raw `i32` status; [`super`] turns it into a `Result`. On wasm32 these
//! are real imports. On any other target there is no host to import from, so each one calls
//! the in-memory host of [`crate::testing`] (`Unimplemented` (12) without a
//! [`crate::testing::Host`] on the thread): filter crates build and run their unit tests on the
//! developer's machine.

#![allow(clippy::too_many_arguments, missing_docs)]

/// Declares the imports (wasm32) or the stubs (elsewhere) from one list of signatures, plus
/// `NAMES`, the import names, so a test can check them against `weir_abi::names`.
macro_rules! host_functions {
    ($( fn $name:ident($($arg:ident: $ty:ty),* $(,)?); )+) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "env")]
        unsafe extern "C" {
            $( pub fn $name($($arg: $ty),*) -> i32; )+
        }

        #[cfg(not(target_arch = "wasm32"))]
        mod off_wasm {
            $(
                /// Off wasm32 the host is [`crate::testing`]'s in-memory one: `Unimplemented`
                /// unless a test installed a [`crate::testing::Host`] on this thread.
                ///
                /// # Safety
                /// As for the import: pointers valid for the sizes passed with them.
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> i32 {
                    // SAFETY: forwarded contract.
                    unsafe { crate::testing::raw::$name($($arg),*) }
                }
            )+
        }
        #[cfg(not(target_arch = "wasm32"))]
        pub use off_wasm::*;

        /// Every import name this module declares.
        #[cfg(test)]
        pub const NAMES: &[&str] = &[$(stringify!($name)),+];
    };
}

host_functions! {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize);
    fn proxy_get_log_level(return_level: *mut u32);
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64);
    fn proxy_set_tick_period_milliseconds(period: u32);
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    );
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    );
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    );
    fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize);
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    );
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    );
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    );
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize);
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    );
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    );
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    );
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    );
    fn proxy_register_shared_queue(name_data: *const u8, name_size: usize, return_id: *mut u32);
    fn proxy_resolve_shared_queue(
        vm_id_data: *const u8,
        vm_id_size: usize,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    );
    fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize);
    fn proxy_dequeue_shared_queue(
        queue_id: u32,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    );
    fn proxy_continue_stream(stream_type: u32);
    fn proxy_close_stream(stream_type: u32);
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    );
    fn proxy_http_call(
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
    );
    fn proxy_get_status(
        return_code: *mut u32,
        return_message_data: *mut *mut u8,
        return_message_size: *mut usize,
    );
    fn proxy_set_effective_context(context_id: u32);
    fn proxy_done();
    fn proxy_call_foreign_function(
        name_data: *const u8,
        name_size: usize,
        args_data: *const u8,
        args_size: usize,
        return_results_data: *mut *mut u8,
        return_results_size: *mut usize,
    );
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    );
    fn proxy_increment_metric(metric_id: u32, offset: i64);
    fn proxy_record_metric(metric_id: u32, value: u64);
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_import_is_a_host_function_of_the_abi() {
        for name in super::NAMES {
            assert!(weir_abi::names::host::ALL.contains(name), "{name}");
        }
    }
}
