//! A minimal WASI preview 1 (`wasi_snapshot_preview1`, and `wasi_unstable` for old modules):
//! stdout/stderr go to the log, clocks and randomness work, the environment and arguments are
//! empty, there are no files. Other WASI functions link as stubs answering `ENOSYS`.

use super::Registrar;
use crate::wasm::memory::{read, unsigned, write, write_u32, write_u64};
use crate::wasm::state::HostState;
use std::sync::LazyLock;
use std::time::{Instant, SystemTime};
use wasmtime::Caller;

/// The module names WASI functions are imported from.
pub const MODULES: &[&str] = &["wasi_snapshot_preview1", "wasi_unstable"];

/// WASI errno: success.
const SUCCESS: i32 = 0;
/// WASI errno: bad file descriptor.
const EBADF: i32 = 8;
/// WASI errno: invalid argument.
const EINVAL: i32 = 28;
/// WASI errno: function not supported.
pub const ENOSYS: i32 = 52;
/// WASI errno: bad address (a pointer outside memory).
const EFAULT: i32 = 21;

/// Most bytes one `fd_write` logs.
const MAX_LOG_WRITE: usize = 64 * 1024;

fn errno(result: Result<(), weir_abi::Status>) -> i32 {
    match result {
        Ok(()) => SUCCESS,
        Err(_) => EFAULT,
    }
}

fn fd_write(
    mut caller: Caller<'_, HostState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    written_out: i32,
) -> i32 {
    if fd != 1 && fd != 2 {
        return EBADF;
    }
    let count = unsigned(iovs_len);
    if count > 1024 {
        return EINVAL;
    }
    let Ok(table) = read(&mut caller, iovs, (count * 8) as i32) else {
        return EFAULT;
    };
    let mut text = Vec::new();
    let mut total: u32 = 0;
    for entry in table.chunks_exact(8) {
        let ptr = i32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let len = i32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        let Ok(bytes) = read(&mut caller, ptr, len) else {
            return EFAULT;
        };
        total = total.saturating_add(bytes.len() as u32);
        if text.len() < MAX_LOG_WRITE {
            text.extend_from_slice(&bytes[..bytes.len().min(MAX_LOG_WRITE - text.len())]);
        }
    }
    let line = String::from_utf8_lossy(&text);
    let line = line.trim_end();
    if !line.is_empty() {
        let plugin = caller.data().plugin.name.as_str();
        if fd == 1 {
            tracing::info!(plugin, stream = "stdout", "{line}");
        } else {
            tracing::warn!(plugin, stream = "stderr", "{line}");
        }
    }
    errno(write_u32(&mut caller, written_out, total))
}

fn empty_sizes(mut caller: Caller<'_, HostState>, count_out: i32, size_out: i32) -> i32 {
    errno(write_u32(&mut caller, count_out, 0).and_then(|()| write_u32(&mut caller, size_out, 0)))
}

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

fn clock_time_get(
    mut caller: Caller<'_, HostState>,
    clock: i32,
    _precision: i64,
    time_out: i32,
) -> i32 {
    let nanos = match clock {
        // realtime
        0 => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        // monotonic, process and thread CPU time: time since the host started
        1..=3 => START.elapsed().as_nanos(),
        _ => return EINVAL,
    };
    errno(write_u64(
        &mut caller,
        time_out,
        u64::try_from(nanos).unwrap_or(u64::MAX),
    ))
}

fn random_get(mut caller: Caller<'_, HostState>, buf: i32, len: i32) -> i32 {
    let len = unsigned(len);
    if len > 1 << 20 {
        return EINVAL;
    }
    let mut bytes = vec![0u8; len];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    errno(write(&mut caller, buf, &bytes))
}

fn fd_fdstat_get(mut caller: Caller<'_, HostState>, fd: i32, stat_out: i32) -> i32 {
    if !(0..=2).contains(&fd) {
        return EBADF;
    }
    // fdstat: filetype u8 (2 = character device), flags u16, rights u64 x2: 24 bytes.
    let mut stat = [0u8; 24];
    stat[0] = 2;
    stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    errno(write(&mut caller, stat_out, &stat))
}

/// Defines the WASI functions under `module`.
pub fn add(r: &mut Registrar<'_>, module: &str) {
    r.func(module, "fd_write", fd_write);
    r.func(
        module,
        "fd_read",
        |_: Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32| EBADF,
    );
    r.func(module, "fd_close", |_: Caller<'_, HostState>, _: i32| EBADF);
    r.func(
        module,
        "fd_seek",
        |_: Caller<'_, HostState>, _: i32, _: i64, _: i32, _: i32| EBADF,
    );
    r.func(module, "fd_fdstat_get", fd_fdstat_get);
    r.func(
        module,
        "fd_prestat_get",
        |_: Caller<'_, HostState>, _: i32, _: i32| EBADF,
    );
    r.func(
        module,
        "fd_prestat_dir_name",
        |_: Caller<'_, HostState>, _: i32, _: i32, _: i32| EBADF,
    );
    r.func(module, "environ_sizes_get", empty_sizes);
    r.func(
        module,
        "environ_get",
        |_: Caller<'_, HostState>, _: i32, _: i32| SUCCESS,
    );
    r.func(module, "args_sizes_get", empty_sizes);
    r.func(
        module,
        "args_get",
        |_: Caller<'_, HostState>, _: i32, _: i32| SUCCESS,
    );
    r.func(module, "clock_time_get", clock_time_get);
    r.func(
        module,
        "clock_res_get",
        |mut c: Caller<'_, HostState>, _: i32, out: i32| errno(write_u64(&mut c, out, 1_000)),
    );
    r.func(module, "random_get", random_get);
    r.func(module, "sched_yield", |_: Caller<'_, HostState>| SUCCESS);
    r.func(
        module,
        "proc_exit",
        |_: Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the module called proc_exit({code})"
            )))
        },
    );
}
