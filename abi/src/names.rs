//! Every name the ABI links by: the version marker exports, the host functions a module
//! imports from module `"env"`, and the callbacks a module exports.
//!
//! A host links every name in [`host::ALL`] (an unsupported one answers
//! [`Status::Unimplemented`](crate::Status::Unimplemented), it never fails to link) and
//! detects the ABI version from which of [`ABI_VERSIONS`] a module exports.

/// Module name the host functions are imported from.
pub const IMPORT_MODULE: &str = "env";

/// Exported (as a no-op function) by modules that speak ABI 0.2.1.
pub const ABI_VERSION_0_2_1: &str = "proxy_abi_version_0_2_1";
/// Exported by modules that speak ABI 0.2.0 (the Go and AssemblyScript SDKs).
pub const ABI_VERSION_0_2_0: &str = "proxy_abi_version_0_2_0";
/// Exported by modules that speak ABI 0.1.0.
pub const ABI_VERSION_0_1_0: &str = "proxy_abi_version_0_1_0";
/// The version markers, newest first: a host picks the first one a module exports.
pub const ABI_VERSIONS: &[&str] = &[ABI_VERSION_0_2_1, ABI_VERSION_0_2_0, ABI_VERSION_0_1_0];

/// Exported (as a no-op function) by a module that reads no body: weir's own marker, which
/// other hosts ignore. Every SDK exports the body callbacks whether a filter uses them or
/// not, so this is how a filter says so; weir then leaves the payload of an upgraded stream
/// (a WebSocket, a CONNECT tunnel) off that filter, and off the user-space path, where no
/// other filter of its chain reads it. `weir_sdk::headers_only!()` defines it.
pub const HEADERS_ONLY: &str = "weir_headers_only";

/// WASI command entry point; a host calls it once before any callback.
pub const WASI_START: &str = "_start";
/// WASI reactor entry point; a host calls it once before any callback.
pub const WASI_INITIALIZE: &str = "_initialize";

/// Declares one `pub const` per name (the constant's name is the upper-cased name) and an
/// `ALL` list of them.
macro_rules! names {
    ($( $(#[$meta:meta])* $konst:ident = $name:literal; )+) => {
        $( $(#[$meta])* pub const $konst: &str = $name; )+
        /// Every name declared in this module.
        pub const ALL: &[&str] = &[$($konst),+];
    };
}

/// Host functions, imported by modules from [`IMPORT_MODULE`].
pub mod host {
    names! {
        /// `(level, msg_ptr, msg_len)`: a log line attributed to the plugin.
        PROXY_LOG = "proxy_log";
        /// `(*level)`: the current log level, so a module can skip formatting.
        PROXY_GET_LOG_LEVEL = "proxy_get_log_level";
        /// `(*u64)`: wall-clock time in nanoseconds since the Unix epoch.
        PROXY_GET_CURRENT_TIME_NANOSECONDS = "proxy_get_current_time_nanoseconds";
        /// `(period_ms)`: call `proxy_on_tick` on the root context every period; 0 disables.
        PROXY_SET_TICK_PERIOD_MILLISECONDS = "proxy_set_tick_period_milliseconds";
        /// `(buffer_type, start, max_size, *ptr, *len)`: read a slice of a buffer.
        PROXY_GET_BUFFER_BYTES = "proxy_get_buffer_bytes";
        /// `(buffer_type, start, size, data_ptr, data_len)`: replace a range of a buffer.
        PROXY_SET_BUFFER_BYTES = "proxy_set_buffer_bytes";
        /// `(buffer_type, *len, *flags)`: size of a buffer (some SDKs link it).
        PROXY_GET_BUFFER_STATUS = "proxy_get_buffer_status";
        /// `(map_type, *ptr, *len)`: the whole map in the wire format.
        PROXY_GET_HEADER_MAP_PAIRS = "proxy_get_header_map_pairs";
        /// `(map_type, ptr, len)`: replace the whole map.
        PROXY_SET_HEADER_MAP_PAIRS = "proxy_set_header_map_pairs";
        /// `(map_type, key_ptr, key_len, *ptr, *len)`: first value of a header.
        PROXY_GET_HEADER_MAP_VALUE = "proxy_get_header_map_value";
        /// `(map_type, key_ptr, key_len, value_ptr, value_len)`: append a value.
        PROXY_ADD_HEADER_MAP_VALUE = "proxy_add_header_map_value";
        /// `(map_type, key_ptr, key_len, value_ptr, value_len)`: set, replacing all values.
        PROXY_REPLACE_HEADER_MAP_VALUE = "proxy_replace_header_map_value";
        /// `(map_type, key_ptr, key_len)`: remove every value of a header.
        PROXY_REMOVE_HEADER_MAP_VALUE = "proxy_remove_header_map_value";
        /// `(map_type, *size)`: serialized size of a map. 0.2.x hosts may leave it out.
        PROXY_GET_HEADER_MAP_SIZE = "proxy_get_header_map_size";
        /// `(path_ptr, path_len, *ptr, *len)`: a property; path segments joined by NUL.
        PROXY_GET_PROPERTY = "proxy_get_property";
        /// `(path_ptr, path_len, value_ptr, value_len)`: set a property (filter state).
        PROXY_SET_PROPERTY = "proxy_set_property";
        /// `(key_ptr, key_len, *ptr, *len, *cas)`: VM-wide shared data.
        PROXY_GET_SHARED_DATA = "proxy_get_shared_data";
        /// `(key_ptr, key_len, value_ptr, value_len, cas)`: store shared data; cas 0 is
        /// unconditional.
        PROXY_SET_SHARED_DATA = "proxy_set_shared_data";
        /// `(name_ptr, name_len, *id)`: register a queue owned by this VM.
        PROXY_REGISTER_SHARED_QUEUE = "proxy_register_shared_queue";
        /// `(vm_id_ptr, vm_id_len, name_ptr, name_len, *id)`: find another VM's queue.
        PROXY_RESOLVE_SHARED_QUEUE = "proxy_resolve_shared_queue";
        /// `(id, value_ptr, value_len)`: enqueue; wakes the owner's `proxy_on_queue_ready`.
        PROXY_ENQUEUE_SHARED_QUEUE = "proxy_enqueue_shared_queue";
        /// `(id, *ptr, *len)`: dequeue; `Empty` when there is nothing.
        PROXY_DEQUEUE_SHARED_QUEUE = "proxy_dequeue_shared_queue";
        /// `(stream_type)`: resume a paused direction.
        PROXY_CONTINUE_STREAM = "proxy_continue_stream";
        /// `(stream_type)`: reset a direction.
        PROXY_CLOSE_STREAM = "proxy_close_stream";
        /// `(status, details_ptr, details_len, body_ptr, body_len, headers_ptr, headers_len,
        /// grpc_status)`: answer the stream without the upstream.
        PROXY_SEND_LOCAL_RESPONSE = "proxy_send_local_response";
        /// `(upstream_ptr, upstream_len, headers_ptr, headers_len, body_ptr, body_len,
        /// trailers_ptr, trailers_len, timeout_ms, *token)`: HTTP callout.
        PROXY_HTTP_CALL = "proxy_http_call";
        /// gRPC unary callout.
        PROXY_GRPC_CALL = "proxy_grpc_call";
        /// gRPC streaming callout.
        PROXY_GRPC_STREAM = "proxy_grpc_stream";
        /// Send on a gRPC stream.
        PROXY_GRPC_SEND = "proxy_grpc_send";
        /// Cancel a gRPC callout.
        PROXY_GRPC_CANCEL = "proxy_grpc_cancel";
        /// Close a gRPC stream.
        PROXY_GRPC_CLOSE = "proxy_grpc_close";
        /// `(*code, *msg_ptr, *msg_len)`: status of the last callout.
        PROXY_GET_STATUS = "proxy_get_status";
        /// `(context_id)`: following host calls act on that context.
        PROXY_SET_EFFECTIVE_CONTEXT = "proxy_set_effective_context";
        /// `()`: the context that returned false from `proxy_on_done` is finished now.
        PROXY_DONE = "proxy_done";
        /// `(name_ptr, name_len, args_ptr, args_len, *ptr, *len)`: host extension.
        PROXY_CALL_FOREIGN_FUNCTION = "proxy_call_foreign_function";
        /// `(type, name_ptr, name_len, *id)`: define a counter, gauge or histogram.
        PROXY_DEFINE_METRIC = "proxy_define_metric";
        /// `(id, delta: i64)`.
        PROXY_INCREMENT_METRIC = "proxy_increment_metric";
        /// `(id, value: u64)`: set a gauge, observe a histogram.
        PROXY_RECORD_METRIC = "proxy_record_metric";
        /// `(id, *u64)`.
        PROXY_GET_METRIC = "proxy_get_metric";
    }

    /// ABI 0.1.0 names that 0.2.x replaced; a host still links them for old modules.
    pub mod legacy {
        names! {
            /// 0.1.0 `proxy_continue_stream(HttpRequest)`.
            PROXY_CONTINUE_REQUEST = "proxy_continue_request";
            /// 0.1.0 `proxy_continue_stream(HttpResponse)`.
            PROXY_CONTINUE_RESPONSE = "proxy_continue_response";
            /// 0.1.0 `proxy_close_stream(HttpRequest)`.
            PROXY_CLOSE_REQUEST = "proxy_close_request";
            /// 0.1.0 `proxy_close_stream(HttpResponse)`.
            PROXY_CLOSE_RESPONSE = "proxy_close_response";
            /// 0.1.0: read the plugin configuration.
            PROXY_GET_CONFIGURATION = "proxy_get_configuration";
            /// 0.1.0: ask the host to re-run route matching.
            PROXY_CLEAR_ROUTE_CACHE = "proxy_clear_route_cache";
        }
    }
}

/// Callbacks, exported by modules and called by the host.
pub mod callbacks {
    names! {
        /// `(size) -> ptr`: the module's allocator; the host places every returned buffer
        /// in memory it gets from here.
        PROXY_ON_MEMORY_ALLOCATE = "proxy_on_memory_allocate";
        /// `(context_id, parent_id)`: parent 0 creates a root context.
        PROXY_ON_CONTEXT_CREATE = "proxy_on_context_create";
        /// `(root_id, vm_config_size) -> bool`.
        PROXY_ON_VM_START = "proxy_on_vm_start";
        /// `(root_id, plugin_config_size) -> bool`.
        PROXY_ON_CONFIGURE = "proxy_on_configure";
        /// `(root_id)`.
        PROXY_ON_TICK = "proxy_on_tick";
        /// `(root_id, queue_id)`.
        PROXY_ON_QUEUE_READY = "proxy_on_queue_ready";
        /// `(ctx) -> Action`.
        PROXY_ON_NEW_CONNECTION = "proxy_on_new_connection";
        /// `(ctx, data_size, end_of_stream) -> Action`.
        PROXY_ON_DOWNSTREAM_DATA = "proxy_on_downstream_data";
        /// `(ctx, data_size, end_of_stream) -> Action`.
        PROXY_ON_UPSTREAM_DATA = "proxy_on_upstream_data";
        /// `(ctx, peer_type)`.
        PROXY_ON_DOWNSTREAM_CONNECTION_CLOSE = "proxy_on_downstream_connection_close";
        /// `(ctx, peer_type)`.
        PROXY_ON_UPSTREAM_CONNECTION_CLOSE = "proxy_on_upstream_connection_close";
        /// `(ctx, num_headers, end_of_stream) -> Action` (0.1.0: no end_of_stream).
        PROXY_ON_REQUEST_HEADERS = "proxy_on_request_headers";
        /// `(ctx, body_size, end_of_stream) -> Action`.
        PROXY_ON_REQUEST_BODY = "proxy_on_request_body";
        /// `(ctx, num_trailers) -> Action`.
        PROXY_ON_REQUEST_TRAILERS = "proxy_on_request_trailers";
        /// `(ctx, num_headers, end_of_stream) -> Action`.
        PROXY_ON_RESPONSE_HEADERS = "proxy_on_response_headers";
        /// `(ctx, body_size, end_of_stream) -> Action`.
        PROXY_ON_RESPONSE_BODY = "proxy_on_response_body";
        /// `(ctx, num_trailers) -> Action`.
        PROXY_ON_RESPONSE_TRAILERS = "proxy_on_response_trailers";
        /// `(root_or_ctx, token, num_headers, body_size, num_trailers)`.
        PROXY_ON_HTTP_CALL_RESPONSE = "proxy_on_http_call_response";
        /// `(ctx, token, num_headers)`.
        PROXY_ON_GRPC_RECEIVE_INITIAL_METADATA = "proxy_on_grpc_receive_initial_metadata";
        /// `(ctx, token, response_size)`.
        PROXY_ON_GRPC_RECEIVE = "proxy_on_grpc_receive";
        /// `(ctx, token, num_trailers)`.
        PROXY_ON_GRPC_RECEIVE_TRAILING_METADATA = "proxy_on_grpc_receive_trailing_metadata";
        /// `(ctx, token, status_code)`.
        PROXY_ON_GRPC_CLOSE = "proxy_on_grpc_close";
        /// `(ctx)`: the stream is finished; for access logs.
        PROXY_ON_LOG = "proxy_on_log";
        /// `(ctx) -> bool`: true = delete now; false = the module calls `proxy_done` later.
        PROXY_ON_DONE = "proxy_on_done";
        /// `(ctx)`: free the context.
        PROXY_ON_DELETE = "proxy_on_delete";
        /// `(root_id, function_id, data_size)`.
        PROXY_ON_FOREIGN_FUNCTION = "proxy_on_foreign_function";
    }

    /// The allocator name modules used before `proxy_on_memory_allocate`.
    pub const MALLOC: &str = "malloc";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_unique_and_prefixed(names: &[&str], prefix: &str) {
        for (i, a) in names.iter().enumerate() {
            assert!(a.starts_with(prefix), "{a}");
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        assert_unique_and_prefixed(host::ALL, "proxy_");
        assert_unique_and_prefixed(host::legacy::ALL, "proxy_");
        assert_unique_and_prefixed(callbacks::ALL, "proxy_on_");
        assert_unique_and_prefixed(ABI_VERSIONS, "proxy_abi_version_");
        for legacy in host::legacy::ALL {
            assert!(!host::ALL.contains(legacy));
        }
        assert_eq!(host::ALL.len(), 39);
        assert!(host::ALL.contains(&"proxy_send_local_response"));
        assert!(callbacks::ALL.contains(&"proxy_on_memory_allocate"));
    }
}
