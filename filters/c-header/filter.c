/* c-header: a proxy-wasm HTTP filter in C, written against the ABI alone (proxy_wasm_abi.h),
 * built with clang's wasm32 target and Debian's wasi-libc (see README.md).
 *
 * - Every response it lets through gets `x-c-header: hello from C`.
 * - A request whose :path starts with the configured prefix (the plugin configuration, a
 *   plain string; "/private" when empty) is answered locally with 403, the same header and the
 *   body "blocked by c-header\n", and counted in the counter `c_header_blocked`.
 *
 * Nothing here is weir-specific: the module runs in Envoy as well.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_wasm_abi.h"

#define HEADER_NAME "x-c-header"
#define HEADER_VALUE "hello from C"
#define DEFAULT_PREFIX "/private"
/* A configured prefix longer than this is refused (on_configure returns false). */
#define MAX_PREFIX 256

/* The configured prefix. One plugin per VM (the VM is this filter's alone), so the root
 * context's state can live in globals. */
static char blocked_prefix[MAX_PREFIX + 1] = DEFAULT_PREFIX;
static size_t blocked_prefix_len = sizeof(DEFAULT_PREFIX) - 1;
static uint32_t blocked_counter;
static bool have_counter;

static void log_line(proxy_log_level_t level, const char *message) {
  proxy_log(level, message, strlen(message));
}

/* The module speaks ABI 0.2.1. */
PROXY_CALLBACK(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {}

/* The host places every buffer it returns here; the filter frees it with free(). */
PROXY_CALLBACK(proxy_on_memory_allocate) void *proxy_on_memory_allocate(size_t size) {
  return malloc(size);
}

PROXY_CALLBACK(proxy_on_context_create)
void proxy_on_context_create(uint32_t context_id, uint32_t parent_id) {
  (void)context_id;
  (void)parent_id;
}

PROXY_CALLBACK(proxy_on_vm_start)
uint32_t proxy_on_vm_start(uint32_t root_id, size_t vm_configuration_size) {
  (void)root_id;
  (void)vm_configuration_size;
  return 1;
}

PROXY_CALLBACK(proxy_on_configure)
uint32_t proxy_on_configure(uint32_t root_id, size_t configuration_size) {
  (void)root_id;
  char *data = NULL;
  size_t size = 0;
  if (configuration_size > 0 &&
      proxy_get_buffer_bytes(PROXY_BUFFER_PLUGIN_CONFIGURATION, 0, configuration_size, &data,
                             &size) != PROXY_OK) {
    log_line(PROXY_LOG_ERROR, "c-header: cannot read the plugin configuration");
    return 0;
  }
  if (size > MAX_PREFIX) {
    free(data);
    log_line(PROXY_LOG_ERROR, "c-header: the configured prefix is longer than 256 bytes");
    return 0;
  }
  if (size == 0) {
    memcpy(blocked_prefix, DEFAULT_PREFIX, sizeof(DEFAULT_PREFIX));
    blocked_prefix_len = sizeof(DEFAULT_PREFIX) - 1;
  } else {
    memcpy(blocked_prefix, data, size);
    blocked_prefix[size] = '\0';
    blocked_prefix_len = size;
  }
  free(data);
  if (!have_counter) {
    static const char name[] = "c_header_blocked";
    have_counter = proxy_define_metric(PROXY_METRIC_COUNTER, name, sizeof(name) - 1,
                                       &blocked_counter) == PROXY_OK;
  }
  log_line(PROXY_LOG_INFO, "c-header: configured");
  return 1;
}

/* Writes one (name, value) pair as a proxy-wasm header map (little-endian u32 count, the
 * pairs' u32 sizes, then each name and value followed by a NUL) into `out`, which holds
 * `header_map_size(...)` bytes. */
static void put_u32(char *out, uint32_t value) {
  out[0] = (char)(value & 0xff);
  out[1] = (char)((value >> 8) & 0xff);
  out[2] = (char)((value >> 16) & 0xff);
  out[3] = (char)((value >> 24) & 0xff);
}

static size_t one_pair_map(char *out, const char *name, size_t name_len, const char *value,
                           size_t value_len) {
  put_u32(out, 1);
  put_u32(out + 4, (uint32_t)name_len);
  put_u32(out + 8, (uint32_t)value_len);
  char *at = out + 12;
  memcpy(at, name, name_len);
  at[name_len] = '\0';
  at += name_len + 1;
  memcpy(at, value, value_len);
  at[value_len] = '\0';
  return 12 + name_len + 1 + value_len + 1;
}

static bool path_is_blocked(void) {
  char *path = NULL;
  size_t path_len = 0;
  if (proxy_get_header_map_value(PROXY_MAP_HTTP_REQUEST_HEADERS, ":path", 5, &path,
                                 &path_len) != PROXY_OK) {
    return false;
  }
  bool blocked = path_len >= blocked_prefix_len &&
                 memcmp(path, blocked_prefix, blocked_prefix_len) == 0;
  free(path);
  return blocked;
}

PROXY_CALLBACK(proxy_on_request_headers)
proxy_action_t proxy_on_request_headers(uint32_t context_id, size_t headers, uint32_t eos) {
  (void)context_id;
  (void)headers;
  (void)eos;
  if (!path_is_blocked()) {
    return PROXY_ACTION_CONTINUE;
  }
  if (have_counter) {
    proxy_increment_metric(blocked_counter, 1);
  }
  static const char body[] = "blocked by c-header\n";
  static const char details[] = "c_header_blocked";
  char map[12 + sizeof(HEADER_NAME) + sizeof(HEADER_VALUE)];
  size_t map_len = one_pair_map(map, HEADER_NAME, sizeof(HEADER_NAME) - 1, HEADER_VALUE,
                                sizeof(HEADER_VALUE) - 1);
  /* -1: no gRPC status. The reply goes out once this callback returns. */
  if (proxy_send_local_response(403, details, sizeof(details) - 1, body, sizeof(body) - 1, map,
                                map_len, -1) != PROXY_OK) {
    log_line(PROXY_LOG_WARN, "c-header: the local reply was refused; passing the request");
    return PROXY_ACTION_CONTINUE;
  }
  return PROXY_ACTION_PAUSE;
}

PROXY_CALLBACK(proxy_on_response_headers)
proxy_action_t proxy_on_response_headers(uint32_t context_id, size_t headers, uint32_t eos) {
  (void)context_id;
  (void)headers;
  (void)eos;
  proxy_replace_header_map_value(PROXY_MAP_HTTP_RESPONSE_HEADERS, HEADER_NAME,
                                 sizeof(HEADER_NAME) - 1, HEADER_VALUE, sizeof(HEADER_VALUE) - 1);
  return PROXY_ACTION_CONTINUE;
}

PROXY_CALLBACK(proxy_on_done) uint32_t proxy_on_done(uint32_t context_id) {
  (void)context_id;
  return 1;
}

PROXY_CALLBACK(proxy_on_delete) void proxy_on_delete(uint32_t context_id) { (void)context_id; }
