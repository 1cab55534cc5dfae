//! The process's one `wasmtime::Engine`, and the limits every call into a module runs under.
//!
//! Epoch interruption is on: a background thread advances the epoch every [`EPOCH_TICK`], and
//! every call into a module sets its store's deadline to [`Limits::deadline`] worth of ticks,
//! so a module that loops forever traps instead of holding a worker.

use super::WasmError;
use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::{Config, Engine};

/// How often the epoch advances; the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Env var (older than `--wasm-deadline-ms`): the deadline of one call into a module, in
/// milliseconds (default 100).
pub const DEADLINE_ENV: &str = "WEIR_WASM_DEADLINE_MS";
/// Env var (older than `--wasm-memory-limit-mb`): the memory limit of one VM, in MiB
/// (default 256).
pub const MEMORY_LIMIT_ENV: &str = "WEIR_WASM_MEMORY_LIMIT_MB";

/// What every VM runs under, read once from the command line (or the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest one call into a module may run.
    pub deadline: Duration,
    /// Most linear memory (and tables) one VM may hold, in bytes.
    pub memory_bytes: usize,
}

impl Limits {
    /// The limits from `--wasm-deadline-ms` and `--wasm-memory-limit-mb` (or, where those are
    /// not given, [`DEADLINE_ENV`] and [`MEMORY_LIMIT_ENV`]), else the defaults (100 ms,
    /// 256 MiB).
    pub fn get() -> Limits {
        static LIMITS: OnceLock<Limits> = OnceLock::new();
        *LIMITS.get_or_init(|| {
            let settings = crate::settings::get();
            let positive = |n: u64| n > 0;
            let deadline_ms = crate::settings::number(
                settings.wasm_deadline_ms,
                DEADLINE_ENV,
                "--wasm-deadline-ms",
                positive,
            )
            .unwrap_or(100);
            let memory_mb = crate::settings::number(
                settings.wasm_memory_limit_mb,
                MEMORY_LIMIT_ENV,
                "--wasm-memory-limit-mb",
                positive,
            )
            .unwrap_or(256);
            Limits {
                deadline: Duration::from_millis(deadline_ms),
                memory_bytes: usize::try_from(memory_mb)
                    .unwrap_or(256)
                    .saturating_mul(1 << 20),
            }
        })
    }

    /// The deadline in epoch ticks (at least one).
    pub fn deadline_ticks(&self) -> u64 {
        let ticks = self.deadline.as_nanos() / EPOCH_TICK.as_nanos().max(1);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

/// The engine, created on first use with its epoch thread.
pub fn engine() -> Result<&'static Engine, WasmError> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.epoch_interruption(true);
            let engine = Engine::new(&config).map_err(|e| e.to_string())?;
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("weir-wasm-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        ticker.increment_epoch();
                    }
                })
                .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(|e| WasmError::Engine(e.clone()))
}
