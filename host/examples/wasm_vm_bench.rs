//! Times what a worker pays to create a Wasm VM of a plugin (instantiation and the root
//! context's start: `proxy_on_context_create`, `proxy_on_vm_start`, `proxy_on_configure`).
//!
//! `cargo run --release -p weir --example wasm_vm_bench -- MODULE.wasm [N] [CONFIGURATION]`
//! loads the module as a plugin (compiled, or taken from the compiled-module cache), starts
//! and drops N VMs (default 500) one after the other, and prints one line:
//! `wasm_vm_create_us mean=... p50=... p99=... max=... n=... load_ms=... engine_ms=...
//! allocation=...` (`load_ms`: loading the plugin; `engine_ms`: creating the engine and its VM
//! pool; `allocation`: `pooling(N)` or `on-demand`). `tests/bench/wasm_vm.sh` (run
//! by `make bench`) calls it.

use std::time::{Duration, Instant};
use weir::wasm::{Plugin, PluginSpec};

/// The most VMs one run starts (the bench is a measurement, not a soak).
const MAX_VMS: usize = 100_000;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(module) = args.first() else {
        eprintln!("usage: wasm_vm_bench MODULE.wasm [N] [CONFIGURATION]");
        return std::process::ExitCode::from(2);
    };
    let count = match args.get(1).map(|n| n.parse::<usize>()) {
        None => 500,
        Some(Ok(n)) if (1..=MAX_VMS).contains(&n) => n,
        Some(_) => {
            eprintln!("N must be a number from 1 to {MAX_VMS}");
            return std::process::ExitCode::from(2);
        }
    };
    let configuration = args.get(2).cloned().unwrap_or_default();
    let code = match std::fs::read(module) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{module}: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let spec = PluginSpec {
        name: "bench".into(),
        root_id: String::new(),
        vm_id: String::new(),
        code,
        vm_configuration: Vec::new(),
        plugin_configuration: configuration.into_bytes(),
        fail_open: false,
        node: Default::default(),
        source: None,
    };
    // The engine (and its VM pool) first, so `load_ms` is the module alone: compiled, or
    // read from the cache, linked, and one VM started.
    let creating = Instant::now();
    if let Err(error) = weir::wasm::engine::engine() {
        eprintln!("{error}");
        return std::process::ExitCode::FAILURE;
    }
    let engine_ms = creating.elapsed().as_secs_f64() * 1e3;
    let allocation = match weir::wasm::engine::allocation() {
        Ok(weir::wasm::engine::Allocation::Pooling(vms)) => format!("pooling({vms})"),
        Ok(weir::wasm::engine::Allocation::OnDemand) => "on-demand".to_string(),
        Err(error) => error.to_string(),
    };
    let loading = Instant::now();
    let plugin = match Plugin::load(spec) {
        Ok(plugin) => plugin,
        Err(error) => {
            eprintln!("{module}: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let load = loading.elapsed();
    let mut times: Vec<Duration> = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        if let Err(error) = plugin.start_detached_vm() {
            eprintln!("starting a VM: {error}");
            return std::process::ExitCode::FAILURE;
        }
        times.push(start.elapsed());
    }
    times.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = times.iter().map(|d| micros(*d)).sum::<f64>() / count as f64;
    let at = |q: f64| micros(times[((count - 1) as f64 * q).round() as usize]);
    println!(
        "wasm_vm_create_us mean={mean:.1} p50={:.1} p99={:.1} max={:.1} n={count} load_ms={:.1} engine_ms={engine_ms:.1} allocation={allocation}",
        at(0.5),
        at(0.99),
        at(1.0),
        load.as_secs_f64() * 1e3
    );
    std::process::ExitCode::SUCCESS
}
