//! The process's one `wasmtime::Engine`, and the limits every call into a module runs under.
//!
//! Epoch interruption is on: a background thread advances the epoch every [`EPOCH_TICK`], and
//! every call into a module sets its store's deadline to [`Limits::deadline`] worth of ticks,
//! so a module that loops forever traps instead of holding a worker.
//!
//! VMs come from wasmtime's pooling allocator ([`Allocation`]): address space for
//! `--wasm-pool-vms` instances, each with a memory of at most the VM memory limit, is reserved
//! once, and a VM's memory is a copy-on-write mapping of its module's data image, so creating
//! one (for a worker, after a crash, after a reload) maps and copies nothing. Where the
//! reservation is refused the engine allocates on demand, as before, and says so.

use super::WasmError;
use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

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

/// Env var (older than `--wasm-pool-vms`): how many VMs the pooling allocator holds slots for.
pub const POOL_VMS_ENV: &str = "WEIR_WASM_POOL_VMS";
/// The default of `--wasm-pool-vms`.
pub const DEFAULT_POOL_VMS: u32 = 1000;
/// Largest `vmctx` (an instance's host-side state) a pool slot holds; it grows with a module's
/// imports, functions and globals, 1 MiB (wasmtime's default) is short for a large module.
const POOL_INSTANCE_BYTES: usize = 8 << 20;
/// Most tables one module may define under the pooling allocator.
const POOL_TABLES_PER_MODULE: u32 = 2;
/// Most elements one table may hold (the same bound the store's limiter sets).
pub(super) const TABLE_ELEMENTS: usize = 1 << 20;

/// How VMs' memories, tables and instances are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Wasmtime's pooling allocator with slots for this many VMs: reserved once, reused, so
    /// creating a VM maps no new memory (copy-on-write images of the modules' data).
    Pooling(u32),
    /// Each VM's memory mapped when it is created (`--wasm-pool-vms 0`, or the pool could not
    /// reserve its address space).
    OnDemand,
}

/// The pool size from `--wasm-pool-vms` (or [`POOL_VMS_ENV`]), else [`DEFAULT_POOL_VMS`];
/// 0 is the on-demand allocator.
fn pool_vms() -> u32 {
    let settings = crate::settings::get();
    crate::settings::number(
        settings.wasm_pool_vms,
        POOL_VMS_ENV,
        "--wasm-pool-vms",
        |n| n <= u64::from(u32::MAX),
    )
    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    .unwrap_or(DEFAULT_POOL_VMS)
}

/// The pooling allocator's limits: `vms` instances, each with one memory of at most the VM
/// memory limit (and at most 4 GiB, all a 32-bit memory can address) and its tables.
fn pooling_config(limits: Limits, vms: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(vms)
        .total_memories(vms)
        .total_tables(vms.saturating_mul(POOL_TABLES_PER_MODULE))
        .max_memories_per_module(1)
        .max_tables_per_module(POOL_TABLES_PER_MODULE)
        .max_memory_size(limits.memory_bytes.min(1 << 32))
        .table_elements(TABLE_ELEMENTS)
        .max_core_instance_size(POOL_INSTANCE_BYTES);
    pool
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // On by default; said here because VM creation relies on it: a module's data segments
    // become one copy-on-write image mapped into each new VM, instead of being copied.
    config.memory_init_cow(true);
    config
}

/// The engine for `limits` under `allocation`; a pool that cannot be made (its address space
/// reservation refused: `ulimit -v`, a small virtual address space) falls back to allocation on
/// demand, logged.
fn new_engine(limits: Limits, allocation: Allocation) -> Result<(Engine, Allocation), String> {
    if let Allocation::Pooling(vms) = allocation {
        let mut config = base_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
            limits, vms,
        )));
        match Engine::new(&config) {
            Ok(engine) => return Ok((engine, allocation)),
            Err(error) => tracing::warn!(
                vms,
                error = format!("{error:#}"),
                "the Wasm pooling allocator cannot reserve its memory; VMs are allocated on demand"
            ),
        }
    }
    let engine = Engine::new(&base_config()).map_err(|e| format!("{e:#}"))?;
    Ok((engine, Allocation::OnDemand))
}

/// The engine and how it allocates VMs, created on first use with its epoch thread.
fn engine_and_allocation() -> Result<&'static (Engine, Allocation), WasmError> {
    static ENGINE: OnceLock<Result<(Engine, Allocation), String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let wanted = match pool_vms() {
                0 => Allocation::OnDemand,
                vms => Allocation::Pooling(vms),
            };
            let (engine, allocation) = new_engine(Limits::get(), wanted)?;
            tracing::info!(?allocation, "Wasm engine ready");
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
            Ok((engine, allocation))
        })
        .as_ref()
        .map_err(|e| WasmError::Engine(e.clone()))
}

/// The engine, created on first use with its epoch thread.
pub fn engine() -> Result<&'static Engine, WasmError> {
    engine_and_allocation().map(|(engine, _)| engine)
}

/// How the engine allocates VMs (creating it if needed).
pub fn allocation() -> Result<Allocation, WasmError> {
    engine_and_allocation().map(|(_, allocation)| *allocation)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        deadline: Duration::from_millis(100),
        memory_bytes: 64 << 20,
    };

    fn wat(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    #[test]
    fn a_pool_is_made_and_a_refused_one_falls_back_to_on_demand() {
        let (_, allocation) = new_engine(LIMITS, Allocation::Pooling(8)).unwrap();
        assert_eq!(allocation, Allocation::Pooling(8));
        // 100,000 slots of 4 GiB: more address space than x86-64 or aarch64 user space has.
        let (engine, allocation) = new_engine(LIMITS, Allocation::Pooling(100_000)).unwrap();
        assert_eq!(allocation, Allocation::OnDemand);
        assert!(wasmtime::Module::new(&engine, wat("(module (memory 1))")).is_ok());
    }

    #[test]
    fn pooled_memories_keep_the_memory_limit() {
        let (engine, _) = new_engine(LIMITS, Allocation::Pooling(4)).unwrap();
        // A module whose initial memory is past the limit is refused when it is compiled
        // (without the pool, the store's limiter refuses it when it is instantiated).
        let pages = (LIMITS.memory_bytes >> 16) + 1;
        let error =
            wasmtime::Module::new(&engine, wat(&format!("(module (memory {pages}))"))).unwrap_err();
        assert!(
            format!("{error:#}").contains("exceeds the limit"),
            "{error:#}"
        );
        // Up to the pool's size, then a clear refusal, then slots are reused once freed.
        let module = wasmtime::Module::new(&engine, wat("(module (memory 1))")).unwrap();
        let mut stores: Vec<wasmtime::Store<()>> = Vec::new();
        for _ in 0..4 {
            let mut store = wasmtime::Store::new(&engine, ());
            wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
            stores.push(store);
        }
        let mut store = wasmtime::Store::new(&engine, ());
        let error = wasmtime::Instance::new(&mut store, &module, &[]).unwrap_err();
        assert!(
            error
                .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some(),
            "{error:#}"
        );
        stores.clear();
        let mut store = wasmtime::Store::new(&engine, ());
        assert!(wasmtime::Instance::new(&mut store, &module, &[]).is_ok());
    }
}
