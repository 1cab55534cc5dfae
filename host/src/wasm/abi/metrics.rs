//! Metrics: `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//! `proxy_get_metric` (see [`crate::wasm::metrics`]). A metric id is an index into the VM's
//! list of defined metrics.

use super::Registrar;
use crate::wasm::memory::{HostResult, done, read_string, write_u32, write_u64};
use crate::wasm::metrics::{self, PluginMetric};
use crate::wasm::state::HostState;
use std::sync::Arc;
use wasmtime::Caller;
use weir_abi::names::host as names;
use weir_abi::{MetricType, Status};

fn metric(state: &HostState, id: i32) -> Result<Arc<PluginMetric>, Status> {
    usize::try_from(id)
        .ok()
        .and_then(|index| state.metrics.get(index))
        .cloned()
        .ok_or(Status::NotFound)
}

fn define(
    mut caller: Caller<'_, HostState>,
    kind: i32,
    name_ptr: i32,
    name_len: i32,
    id_out: i32,
) -> HostResult {
    let result = read_string(&mut caller, name_ptr, name_len).and_then(|name| {
        let kind = MetricType::try_from(kind).map_err(|_| Status::BadArgument)?;
        let metric = metrics::define(kind, &name)?;
        let state = caller.data_mut();
        let id = match state.metrics.iter().position(|m| Arc::ptr_eq(m, &metric)) {
            Some(id) => id,
            None => {
                state.metrics.push(metric);
                state.metrics.len() - 1
            }
        };
        write_u32(&mut caller, id_out, id as u32)
    });
    done(result)
}

/// Defines the metric functions.
pub fn add(r: &mut Registrar<'_>) {
    r.env(names::PROXY_DEFINE_METRIC, define);
    r.env(
        names::PROXY_INCREMENT_METRIC,
        |caller: Caller<'_, HostState>, id: i32, delta: i64| {
            done(metric(caller.data(), id).and_then(|m| m.increment(delta)))
        },
    );
    r.env(
        names::PROXY_RECORD_METRIC,
        |caller: Caller<'_, HostState>, id: i32, value: i64| {
            done(metric(caller.data(), id).map(|m| m.record(value as u64)))
        },
    );
    r.env(
        names::PROXY_GET_METRIC,
        |mut caller: Caller<'_, HostState>, id: i32, value_out: i32| {
            let result =
                metric(caller.data(), id).and_then(|m| write_u64(&mut caller, value_out, m.get()));
            done(result)
        },
    );
}
