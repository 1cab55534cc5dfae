//! The `weir` binary: command line, logging, start-up and signals. Everything else is in the
//! library.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use weir::admin::Admin;
use weir::config;
use weir::reload::{Reloader, Snapshot};
use weir::upstream::ClusterManager;
use weir::worker::Workers;

/// mimalloc rather than glibc's malloc: the request path allocates and frees many small
/// objects from worker threads (headers, futures, frames); in a h2c profile glibc's
/// `_int_malloc`/`_int_free`/`malloc_consolidate` were ~6% of weir's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// weir: a WebAssembly-extensible programmable proxy. Configs are shaped like Envoy's v3
/// bootstrap.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The config file (YAML). Without one, weir serves its built-in config.
    #[arg(
        short = 'c',
        long = "config-path",
        visible_alias = "config",
        global = true
    )]
    config_path: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long, global = true)]
    concurrency: Option<usize>,
    /// trace, debug, info, warning (warn), error, critical, off.
    #[arg(short = 'l', long, default_value = "info", global = true)]
    log_level: String,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 10, global = true)]
    drain_time_s: u64,
    /// Envoy's way to ask for validation: `--mode validate`.
    #[arg(long, value_enum, default_value_t = Mode::Serve)]
    mode: Mode,
    /// How tunnels move their payload: `kernel` (the default) splices plain TCP in the kernel
    /// (eBPF) where the program loads (root, or CAP_BPF + CAP_NET_ADMIN) and copies in user
    /// space otherwise; `userspace` always copies (also `WEIR_ACCEL=userspace`, which
    /// `--accel kernel` overrides).
    #[arg(long, value_enum, global = true)]
    accel: Option<Accel>,
    /// Bounds what one way of a kernel-spliced tunnel may hold in the kernel, in bytes: past
    /// it the sender is paused (its receive window shut) until the far reader catches up.
    /// Off by default: the kernel queues without bound while a reader stalls, and each pause
    /// costs the sender's zero-window probe (200 ms or more) to resume.
    #[arg(long, value_name = "BYTES", global = true, value_parser = clap::value_parser!(u64).range(1..))]
    accel_backlog_limit: Option<u64>,
    /// Sidecar mode: mark every upstream socket weir opens (TCP, and UDP for QUIC) with
    /// SO_MARK N (needs CAP_NET_ADMIN), so an iptables rule `-m mark --mark N -j RETURN`
    /// keeps weir's own connections from being redirected back to it.
    #[arg(long, value_name = "N", global = true)]
    upstream_mark: Option<u32>,
    /// Local acceleration: a cgroup v2 directory (created if missing) whose loopback TCP
    /// sockets are joined by eBPF (sock_ops + sk_msg), so bytes between weir and an app on the
    /// same host skip TCP/IP. weir moves itself into it; put the app there too. Needs root
    /// (CAP_BPF + CAP_NET_ADMIN); where it cannot be set up, one log line says why and weir
    /// serves without it.
    #[arg(long, value_name = "DIR", global = true)]
    local_accel_cgroup: Option<PathBuf>,
    /// The longest one call into a Wasm module may run, in milliseconds (default 100; replaces
    /// WEIR_WASM_DEADLINE_MS, still read when this is not given).
    #[arg(long, value_name = "MS", global = true, value_parser = clap::value_parser!(u64).range(1..))]
    wasm_deadline_ms: Option<u64>,
    /// The most memory one Wasm VM may hold, in MiB (default 256; replaces
    /// WEIR_WASM_MEMORY_LIMIT_MB).
    #[arg(long, value_name = "MIB", global = true, value_parser = clap::value_parser!(u64).range(1..))]
    wasm_memory_limit_mb: Option<u64>,
    /// Where compiled Wasm modules are cached (default $XDG_CACHE_HOME/weir/wasm or
    /// ~/.cache/weir/wasm; replaces WEIR_WASM_CACHE_DIR).
    #[arg(long, value_name = "DIR", global = true)]
    wasm_cache_dir: Option<PathBuf>,
    /// The most the compiled Wasm module cache may hold, in MiB (default 512; the least
    /// recently used modules are deleted past it; replaces WEIR_WASM_CACHE_MAX_MB).
    #[arg(long, value_name = "MIB", global = true, value_parser = clap::value_parser!(u64).range(1..))]
    wasm_cache_max_mb: Option<u64>,
    /// How many Wasm VMs (all plugins, workers and config generations together) the pooling
    /// allocator holds slots for (default 1000; 0 allocates each VM's memory on demand;
    /// replaces WEIR_WASM_POOL_VMS). A VM past the pool fails to start, logged.
    #[arg(long, value_name = "N", global = true, value_parser = clap::value_parser!(u64).range(0..=u64::from(u32::MAX)))]
    wasm_pool_vms: Option<u64>,
    /// How often the config file and the module files it names are checked for changes, in
    /// milliseconds (default 500; 0 turns the watch off; replaces WEIR_RELOAD_INTERVAL_MS).
    #[arg(long, value_name = "MS", global = true)]
    reload_interval_ms: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Run the proxy.
    Serve,
    /// Check the config and exit.
    Validate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Accel {
    /// The kernel splice where possible, else the user-space copy.
    #[value(alias = "auto")]
    Kernel,
    /// Always the user-space copy.
    Userspace,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config file and exit: 0 when it loads, 1 with the field path of the error.
    Validate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    weir::settings::init(weir::settings::ProcessSettings {
        wasm_deadline_ms: cli.wasm_deadline_ms,
        wasm_memory_limit_mb: cli.wasm_memory_limit_mb,
        wasm_cache_dir: cli.wasm_cache_dir.clone(),
        wasm_cache_max_mb: cli.wasm_cache_max_mb,
        wasm_pool_vms: cli.wasm_pool_vms,
        reload_interval_ms: cli.reload_interval_ms,
    });
    let validate = cli.mode == Mode::Validate || matches!(cli.command, Some(Command::Validate));
    if validate {
        return match &cli.config_path {
            None => {
                eprintln!("weir validate: give the file with -c FILE");
                ExitCode::from(2)
            }
            Some(path) => match config::load_file(path) {
                Ok(config) => {
                    println!(
                        "{}: OK ({} listeners, {} clusters)",
                        path.display(),
                        config.listeners.len() + config.tcp_listeners.len(),
                        config.clusters.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            },
        };
    }
    match serve(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("weir: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let level = match level {
        "warning" => "warn",
        "critical" => "error",
        other => other,
    };
    // The Wasm compiler's own debug output (thousands of lines per module compiled) is not
    // weir's: at debug and trace it stays at info unless RUST_LOG asks for it.
    let directives = match level {
        "debug" | "trace" => format!(
            "{level},cranelift_codegen=info,cranelift_frontend=info,regalloc2=info,\
             wasmtime_internal_cranelift=info,wasmtime_cranelift=info"
        ),
        other => other.to_owned(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&directives))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn serve(cli: &Cli) -> anyhow::Result<()> {
    let (config, config_hash) = match &cli.config_path {
        Some(path) => {
            let (config, hash) = weir::reload::read_config(path)?;
            (config, Some(hash))
        }
        None => {
            tracing::info!("no config given (-c FILE): serving the built-in config");
            (
                config::load_str(config::DEFAULT_CONFIG, "<built-in>")?,
                None,
            )
        }
    };
    let config = Arc::new(config);
    let concurrency = cli
        .concurrency
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let drain_time = Duration::from_secs(cli.drain_time_s);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("weir-main")
        .enable_all()
        .build()
        .context("building the main runtime")?;
    runtime.block_on(async move {
        // Bound before weir joins a local acceleration cgroup: scrapes and reloads over
        // loopback stay out of its sockhash.
        let admin_listener = match config.admin {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("admin: cannot listen on {address}"))?,
            ),
            None => None,
        };
        if let Some(cgroup) = &cli.local_accel_cgroup {
            // Before any other socket (health checks, listeners, pools) exists, so that all
            // of them are made inside the cgroup.
            if let Err(reason) = weir::accel::local::enable(cgroup) {
                tracing::warn!(
                    cgroup = %cgroup.display(),
                    "accel: local acceleration off: {reason}; loopback hops use TCP"
                );
            }
        }
        let clusters = ClusterManager::new(config.clusters.clone())?;
        clusters.start_background();
        let snapshot = Arc::new(Snapshot {
            generation: 0,
            config: config.clone(),
            config_hash,
            clusters,
        });
        weir::accel::set_backlog_limit(cli.accel_backlog_limit);
        match cli.accel {
            Some(Accel::Userspace) => weir::accel::force_userspace(),
            Some(Accel::Kernel) => weir::accel::enable_kernel(),
            None => {}
        }
        if let Some(mark) = cli.upstream_mark {
            weir::upstream::mark::set_upstream_mark(mark)
                .with_context(|| format!("--upstream-mark {mark}: cannot set SO_MARK"))?;
            tracing::info!(mark, "upstream sockets are marked (SO_MARK)");
        }
        // Loads the eBPF splice (or logs once why not) before the first tunnel needs it.
        let _ = weir::accel::init();
        // The overload state (and the global connection limit) is in force before the first
        // connection is accepted; then a timer refreshes it from the config in force.
        let fd_limit = weir::overload::raise_fd_limit();
        let default_limit = weir::overload::default_connection_limit();
        weir::overload::refresh(&config.overload, default_limit);
        match config.overload.max_active_downstream_connections() {
            Some(limit) => tracing::info!(limit, "global downstream connection limit"),
            None => tracing::info!(
                limit = default_limit,
                ?fd_limit,
                "global downstream connection limit: weir's default, min(50000, (RLIMIT_NOFILE - 64) / 2); \
                 set it with overload_manager's envoy.resource_monitors.global_downstream_max_connections"
            ),
        }
        let workers = Workers::start(&snapshot, concurrency, drain_time)?;
        for (name, address) in workers.addresses() {
            tracing::info!(listener = %name, %address, concurrency, "listening");
        }
        let reloader = Reloader::new(cli.config_path.clone(), snapshot, workers.publisher());
        weir::reload::watch::spawn(&reloader, tokio::runtime::Handle::current());
        let overload_source = reloader.clone();
        tokio::spawn(weir::overload::run(
            move || overload_source.current().config.clone(),
            default_limit,
        ));
        let admin = Admin::new(reloader.clone());
        if let Some(listener) = admin_listener {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(%address, "admin listening");
            }
            tokio::spawn(admin.clone().serve(listener));
        }
        admin.set_ready(true);
        wait_for_signal().await?;
        tracing::info!(
            ?drain_time,
            "draining: no new connections; in-flight requests finish"
        );
        admin.set_ready(false);
        tokio::task::spawn_blocking(move || workers.shutdown())
            .await
            .context("joining workers")?;
        reloader.current().clusters.shutdown();
        tracing::info!("drained; exiting");
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM"),
        _ = interrupt.recv() => tracing::info!("SIGINT"),
    }
    Ok(())
}
