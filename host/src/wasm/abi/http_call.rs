//! HTTP callouts: `proxy_http_call` records the call; the VM's slot starts it once the
//! running callback returns and delivers the answer to `proxy_on_http_call_response` on the
//! root context (see [`crate::wasm::VmSlot`]).

use super::Registrar;
use super::headers::decode_pairs;
use crate::wasm::context::PendingCall;
use crate::wasm::memory::{HostResult, done, read, read_string, unsigned, write_u32};
use crate::wasm::state::HostState;
use bytes::Bytes;
use std::time::Duration;
use wasmtime::Caller;
use weir_abi::Status;
use weir_abi::names::host as names;

/// Callouts one VM may have waiting to start at once.
const MAX_PENDING_CALLS: usize = 1024;

#[allow(clippy::too_many_arguments)]
fn http_call(
    mut caller: Caller<'_, HostState>,
    upstream_ptr: i32,
    upstream_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    body_ptr: i32,
    body_len: i32,
    trailers_ptr: i32,
    trailers_len: i32,
    timeout_ms: i32,
    token_out: i32,
) -> HostResult {
    let result = (|| {
        let cluster = read_string(&mut caller, upstream_ptr, upstream_len)?;
        let headers = decode_pairs(&read(&mut caller, headers_ptr, headers_len)?)?;
        let body = Bytes::from(read(&mut caller, body_ptr, body_len)?);
        // Trailers are checked but not sent (HTTP/1.1 callouts).
        decode_pairs(&read(&mut caller, trailers_ptr, trailers_len)?)?;
        for required in [":method", ":path", ":authority"] {
            if !headers.iter().any(|(k, v)| k == required && !v.is_empty()) {
                return Err(Status::BadArgument);
            }
        }
        let state = caller.data_mut();
        let known = match &state.cluster_exists {
            Some(exists) => exists(&cluster),
            None => !cluster.is_empty(),
        };
        if !known {
            // As Envoy: an unknown cluster is refused at once.
            return Err(Status::BadArgument);
        }
        if state.pending_calls.len() >= MAX_PENDING_CALLS {
            return Err(Status::InternalFailure);
        }
        let token = state.next_token;
        state.next_token = state.next_token.wrapping_add(1).max(1);
        state.pending_calls.push(PendingCall {
            token,
            cluster,
            headers,
            body,
            timeout: Duration::from_millis(unsigned(timeout_ms) as u64),
        });
        write_u32(&mut caller, token_out, token)
    })();
    done(result)
}

/// Defines `proxy_http_call`.
pub fn add(r: &mut Registrar<'_>) {
    r.env(names::PROXY_HTTP_CALL, http_call);
}
