//! Logging, time, the tick timer, stream control (continue, close, local reply), the effective
//! context, `proxy_done` and foreign functions.

use super::Registrar;
use super::headers::decode_pairs;
use crate::wasm::context::{LocalResponse, StreamEvent};
use crate::wasm::memory::{self, HostResult, done, read, read_string, write_u32, write_u64};
use crate::wasm::state::HostState;
use bytes::Bytes;
use std::time::{Duration, SystemTime};
use wasmtime::Caller;
use weir_abi::names::host as names;
use weir_abi::{LogLevel, Status, StreamType};

fn log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) -> HostResult {
    let message = match read_string(&mut caller, ptr, len) {
        Ok(message) => message,
        Err(status) => return memory::status(status),
    };
    let plugin = caller.data().plugin.name.as_str();
    match LogLevel::try_from(level) {
        Ok(LogLevel::Trace) => tracing::trace!(plugin, "{message}"),
        Ok(LogLevel::Debug) => tracing::debug!(plugin, "{message}"),
        Ok(LogLevel::Info) => tracing::info!(plugin, "{message}"),
        Ok(LogLevel::Warn) => tracing::warn!(plugin, "{message}"),
        Ok(LogLevel::Error) => tracing::error!(plugin, "{message}"),
        Ok(LogLevel::Critical) => {
            tracing::error!(plugin, critical = true, "{message}");
            caller.data_mut().last_critical = Some(message);
        }
        Err(_) => return memory::status(Status::BadArgument),
    }
    memory::status(Status::Ok)
}

/// The most verbose level `tracing` would record, as the ABI's level.
fn current_level() -> LogLevel {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => LogLevel::Trace,
        LevelFilter::DEBUG => LogLevel::Debug,
        LevelFilter::INFO => LogLevel::Info,
        LevelFilter::WARN => LogLevel::Warn,
        _ => LogLevel::Error,
    }
}

fn get_log_level(mut caller: Caller<'_, HostState>, level_out: i32) -> HostResult {
    done(write_u32(&mut caller, level_out, current_level().as_u32()))
}

fn current_time(mut caller: Caller<'_, HostState>, time_out: i32) -> HostResult {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    done(write_u64(&mut caller, time_out, nanos))
}

fn set_tick_period(mut caller: Caller<'_, HostState>, period_ms: i32) -> HostResult {
    let state = caller.data_mut();
    let period = memory::unsigned(period_ms);
    state.tick_period = (period > 0).then(|| Duration::from_millis(period as u64));
    state.tick_changed = true;
    memory::status(Status::Ok)
}

/// Sends `event` to the effective context's stream.
fn stream_event(state: &mut HostState, event: StreamEvent) -> Result<(), Status> {
    let stream = state.effective_stream().ok_or(Status::NotFound)?;
    // The stream may be gone already; its receiver then no longer cares.
    let _ = stream.events.send(event);
    Ok(())
}

fn continue_stream(mut caller: Caller<'_, HostState>, stream_type: i32) -> HostResult {
    let result = match StreamType::try_from(stream_type) {
        Ok(t) => stream_event(caller.data_mut(), StreamEvent::Continue(t)),
        Err(_) => Err(Status::BadArgument),
    };
    done(result)
}

fn close_stream(mut caller: Caller<'_, HostState>, stream_type: i32) -> HostResult {
    let result = match StreamType::try_from(stream_type) {
        // Either direction of an HTTP stream resets the stream; either side of a network
        // filter's connection closes the connection (both sides), as in Envoy.
        Ok(_) => stream_event(caller.data_mut(), StreamEvent::Close),
        Err(_) => Err(Status::BadArgument),
    };
    done(result)
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(
    mut caller: Caller<'_, HostState>,
    status: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    _grpc_status: i32,
) -> HostResult {
    let result = (|| {
        let status = u16::try_from(status)
            .ok()
            .filter(|s| (100..1000).contains(s))
            .ok_or(Status::BadArgument)?;
        let details = read_string(&mut caller, details_ptr, details_len)?;
        let body = Bytes::from(read(&mut caller, body_ptr, body_len)?);
        let headers = decode_pairs(&read(&mut caller, headers_ptr, headers_len)?)?;
        stream_event(
            caller.data_mut(),
            StreamEvent::LocalResponse(LocalResponse {
                status,
                details,
                body,
                headers,
            }),
        )
    })();
    done(result)
}

fn set_effective_context(mut caller: Caller<'_, HostState>, context_id: i32) -> HostResult {
    let state = caller.data_mut();
    let id = context_id as u32;
    if id != state.root_id && !state.streams.contains_key(&id) {
        return memory::status(Status::BadArgument);
    }
    state.effective_context = id;
    memory::status(Status::Ok)
}

fn get_status(
    mut caller: Caller<'_, HostState>,
    code_out: i32,
    ptr_out: i32,
    len_out: i32,
) -> HostResult {
    // Only gRPC callouts have a status, and they are not supported: report OK, empty message.
    let result = write_u32(&mut caller, code_out, 0)
        .and_then(|()| write_u32(&mut caller, ptr_out, 0))
        .and_then(|()| write_u32(&mut caller, len_out, 0));
    done(result)
}

/// Defines logging, time, tick, stream control, context and gRPC functions.
pub fn add(r: &mut Registrar<'_>) {
    r.env(names::PROXY_LOG, log);
    r.env(names::PROXY_GET_LOG_LEVEL, get_log_level);
    r.env(names::PROXY_GET_CURRENT_TIME_NANOSECONDS, current_time);
    r.env(names::PROXY_SET_TICK_PERIOD_MILLISECONDS, set_tick_period);
    r.env(names::PROXY_CONTINUE_STREAM, continue_stream);
    r.env(names::PROXY_CLOSE_STREAM, close_stream);
    r.env(names::PROXY_SEND_LOCAL_RESPONSE, send_local_response);
    r.env(names::PROXY_SET_EFFECTIVE_CONTEXT, set_effective_context);
    r.env(names::PROXY_GET_STATUS, get_status);
    r.env(names::PROXY_DONE, |_: Caller<'_, HostState>| {
        memory::status(Status::Ok)
    });
    r.env(
        names::PROXY_CALL_FOREIGN_FUNCTION,
        |_: Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            memory::status(Status::NotFound)
        },
    );
    r.env(
        names::legacy::PROXY_CONTINUE_REQUEST,
        |c: Caller<'_, HostState>| continue_stream(c, StreamType::HttpRequest.as_i32()),
    );
    r.env(
        names::legacy::PROXY_CONTINUE_RESPONSE,
        |c: Caller<'_, HostState>| continue_stream(c, StreamType::HttpResponse.as_i32()),
    );
    r.env(
        names::legacy::PROXY_CLOSE_REQUEST,
        |c: Caller<'_, HostState>| close_stream(c, StreamType::HttpRequest.as_i32()),
    );
    r.env(
        names::legacy::PROXY_CLOSE_RESPONSE,
        |c: Caller<'_, HostState>| close_stream(c, StreamType::HttpResponse.as_i32()),
    );
    r.env(
        names::legacy::PROXY_CLEAR_ROUTE_CACHE,
        |_: Caller<'_, HostState>| {
            // Routing runs after the request filters anyway.
            memory::status(Status::Ok)
        },
    );
    // gRPC (`proxy_grpc_*`) is left to the stubs of `super::link`: `Unimplemented` for any
    // signature a module declares.
}
