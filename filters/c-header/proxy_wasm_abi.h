/* The proxy-wasm ABI 0.2.1 as C declarations: the host functions a module imports from
 * module "env", the callbacks it exports, and the enums both sides use. Written for weir from
 * the ABI reference (docs: /work/shared/PROXY_WASM.md in the weir project, the proxy-wasm spec
 * `abi-versions/v0.2.1`); only what a filter needs, no SDK.
 *
 * Conventions of the ABI on wasm32: pointers and sizes are 32-bit, every host function returns
 * a proxy_status_t, and a buffer the host hands back (through a `char **` / `size_t *` pair of
 * out-pointers) was allocated in this module's memory with the exported
 * `proxy_on_memory_allocate`: the module owns it and frees it with free().
 */
#ifndef PROXY_WASM_ABI_H
#define PROXY_WASM_ABI_H

#include <stddef.h>
#include <stdint.h>

/* Status codes every host function returns. */
typedef enum {
  PROXY_OK = 0,
  PROXY_NOT_FOUND = 1,
  PROXY_BAD_ARGUMENT = 2,
  PROXY_SERIALIZATION_FAILURE = 3,
  PROXY_PARSE_FAILURE = 4,
  PROXY_EMPTY = 7,
  PROXY_CAS_MISMATCH = 8,
  PROXY_INTERNAL_FAILURE = 10,
  PROXY_UNIMPLEMENTED = 12,
} proxy_status_t;

/* What a header, body or data callback returns. */
typedef enum {
  PROXY_ACTION_CONTINUE = 0,
  PROXY_ACTION_PAUSE = 1,
} proxy_action_t;

typedef enum {
  PROXY_LOG_TRACE = 0,
  PROXY_LOG_DEBUG = 1,
  PROXY_LOG_INFO = 2,
  PROXY_LOG_WARN = 3,
  PROXY_LOG_ERROR = 4,
  PROXY_LOG_CRITICAL = 5,
} proxy_log_level_t;

typedef enum {
  PROXY_STREAM_HTTP_REQUEST = 0,
  PROXY_STREAM_HTTP_RESPONSE = 1,
  PROXY_STREAM_DOWNSTREAM = 2,
  PROXY_STREAM_UPSTREAM = 3,
} proxy_stream_type_t;

typedef enum {
  PROXY_BUFFER_HTTP_REQUEST_BODY = 0,
  PROXY_BUFFER_HTTP_RESPONSE_BODY = 1,
  PROXY_BUFFER_DOWNSTREAM_DATA = 2,
  PROXY_BUFFER_UPSTREAM_DATA = 3,
  PROXY_BUFFER_HTTP_CALL_RESPONSE_BODY = 4,
  PROXY_BUFFER_GRPC_RECEIVE = 5,
  PROXY_BUFFER_VM_CONFIGURATION = 6,
  PROXY_BUFFER_PLUGIN_CONFIGURATION = 7,
  PROXY_BUFFER_CALL_DATA = 8,
} proxy_buffer_type_t;

typedef enum {
  PROXY_MAP_HTTP_REQUEST_HEADERS = 0,
  PROXY_MAP_HTTP_REQUEST_TRAILERS = 1,
  PROXY_MAP_HTTP_RESPONSE_HEADERS = 2,
  PROXY_MAP_HTTP_RESPONSE_TRAILERS = 3,
  PROXY_MAP_HTTP_CALL_RESPONSE_HEADERS = 6,
  PROXY_MAP_HTTP_CALL_RESPONSE_TRAILERS = 7,
} proxy_map_type_t;

typedef enum {
  PROXY_METRIC_COUNTER = 0,
  PROXY_METRIC_GAUGE = 1,
  PROXY_METRIC_HISTOGRAM = 2,
} proxy_metric_type_t;

/* A host function: imported from module "env" under its own name. */
#define PROXY_HOST_FUNCTION(name) \
  __attribute__((import_module("env"), import_name(#name))) proxy_status_t name

/* A callback: exported under its own name. */
#define PROXY_CALLBACK(name) __attribute__((export_name(#name)))

/* Host functions (the subset this SDK-less filter uses, plus the common ones). */
PROXY_HOST_FUNCTION(proxy_log)(proxy_log_level_t level, const char *message, size_t size);
PROXY_HOST_FUNCTION(proxy_get_buffer_bytes)(proxy_buffer_type_t type, size_t start,
                                            size_t max_size, char **data, size_t *size);
PROXY_HOST_FUNCTION(proxy_get_header_map_value)(proxy_map_type_t type, const char *key,
                                                size_t key_size, char **value,
                                                size_t *value_size);
PROXY_HOST_FUNCTION(proxy_add_header_map_value)(proxy_map_type_t type, const char *key,
                                                size_t key_size, const char *value,
                                                size_t value_size);
PROXY_HOST_FUNCTION(proxy_replace_header_map_value)(proxy_map_type_t type, const char *key,
                                                    size_t key_size, const char *value,
                                                    size_t value_size);
PROXY_HOST_FUNCTION(proxy_remove_header_map_value)(proxy_map_type_t type, const char *key,
                                                   size_t key_size);
PROXY_HOST_FUNCTION(proxy_send_local_response)(uint32_t status_code, const char *details,
                                               size_t details_size, const char *body,
                                               size_t body_size, const char *headers,
                                               size_t headers_size, int32_t grpc_status);
PROXY_HOST_FUNCTION(proxy_continue_stream)(proxy_stream_type_t stream);
PROXY_HOST_FUNCTION(proxy_define_metric)(proxy_metric_type_t type, const char *name,
                                         size_t name_size, uint32_t *id);
PROXY_HOST_FUNCTION(proxy_increment_metric)(uint32_t id, int64_t delta);

#endif /* PROXY_WASM_ABI_H */
