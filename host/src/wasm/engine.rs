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

/// Env var: the deadline of one call into a module, in milliseconds (default 100).
pub const DEADLINE_ENV: &str = "WEIR_WASM_DEADLINE_MS";
/// Env var: the memory limit of one VM, in MiB (default 256).
pub const MEMORY_LIMIT_ENV: &str = "WEIR_WASM_MEMORY_LIMIT_MB";

/// What every VM runs under, read once from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest one call into a module may run.
    pub deadline: Duration,
    /// Most linear memory (and tables) one VM may hold, in bytes.
    pub memory_bytes: usize,
}

impl Limits {
    /// The limits from [`DEADLINE_ENV`] and [`MEMORY_LIMIT_ENV`], or the defaults (100 ms,
    /// 256 MiB). A value that does not parse is logged and the default used.
    pub fn get() -> Limits {
        static LIMITS: OnceLock<Limits> = OnceLock::new();
        *LIMITS.get_or_init(|| Limits {
            deadline: Duration::from_millis(env_number(DEADLINE_ENV, 100)),
            memory_bytes: usize::try_from(env_number(MEMORY_LIMIT_ENV, 256))
                .unwrap_or(256)
                .saturating_mul(1 << 20),
        })
    }

    /// The deadline in epoch ticks (at least one).
    pub fn deadline_ticks(&self) -> u64 {
        let ticks = self.deadline.as_nanos() / EPOCH_TICK.as_nanos().max(1);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(value) if value > 0 => value,
            _ => {
                tracing::warn!(var = name, value = %text, default, "ignoring invalid value");
                default
            }
        },
        Err(_) => default,
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
