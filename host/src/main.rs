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
use weir::snapshot;
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
    /// How plain TCP tunnels move their payload: `splice` (the default; also `userspace`):
    /// `splice(2)` through a pipe per direction, bounded and with no copy into weir;
    /// `kernel`: the eBPF splice where the program loads (root, or CAP_BPF + CAP_NET_ADMIN),
    /// faster per byte but with an unbounded kernel queue unless --accel-backlog-limit is
    /// given; `copy`: read/write. Where not given, the config's `weir.config.v1.ProcessSettings`
    /// `accel`, then `WEIR_ACCEL` (same names) decides.
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
    /// The eBPF splice where the program loads, else `splice`.
    #[value(alias = "auto")]
    Kernel,
    /// `splice(2)` through a pipe per direction.
    #[value(alias = "userspace")]
    Splice,
    /// read/write copies.
    Copy,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config file and exit: 0 when it loads, 1 with the field path of the error.
    Validate,
    /// Write a new filter crate (Rust, weir's SDK) that builds and runs as it is: Cargo.toml
    /// with the wasm-filter profile, src/lib.rs, and weir.yaml to run it.
    NewFilter {
        /// The crate's name: lowercase letters, digits, '-' and '_'.
        name: String,
        /// Where to write the crate (created; must be empty if it exists). Default: ./NAME.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The sdk/ directory of a weir checkout, for the crate's weir-sdk dependency.
        /// Default: the checkout this weir was built from.
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::NewFilter { name, dir, sdk }) = &cli.command {
        return new_filter(name, dir, sdk);
    }
    let started = std::time::Instant::now();
    let set_log_level = init_logging(&cli.log_level);
    // The flag wins, then the config file's weir.config.v1.ProcessSettings, then (inside
    // `settings`) the older environment variable.
    let from_config = cli
        .config_path
        .as_deref()
        .and_then(config::process_settings::read_file)
        .unwrap_or_default();
    weir::settings::init(weir::settings::ProcessSettings {
        wasm_deadline_ms: cli.wasm_deadline_ms.or(from_config.wasm_deadline_ms),
        wasm_memory_limit_mb: cli
            .wasm_memory_limit_mb
            .or(from_config.wasm_memory_limit_mb),
        wasm_cache_dir: cli.wasm_cache_dir.clone().or(from_config.wasm_cache_dir),
        wasm_cache_max_mb: cli.wasm_cache_max_mb.or(from_config.wasm_cache_max_mb),
        wasm_pool_vms: cli.wasm_pool_vms.or(from_config.wasm_pool_vms),
        reload_interval_ms: cli.reload_interval_ms.or(from_config.reload_interval_ms),
    });
    let validate = cli.mode == Mode::Validate || matches!(cli.command, Some(Command::Validate));
    if validate {
        return match &cli.config_path {
            None => {
                eprintln!("weir validate: give the file with -c FILE");
                ExitCode::from(2)
            }
            Some(path) => match snapshot::load_file(path)
                .map_err(anyhow::Error::from)
                .and_then(|config| {
                    fetch_remote_modules(&config)?;
                    Ok(config)
                }) {
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
    match serve(&cli, started, set_log_level) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("weir: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `weir validate`: fetches (or takes from the store) every remote Wasm module, checks its
/// sha256 and loads it, as a reload would; so a config validated here will not be refused for
/// its modules. (Envoy's validation mode fetches nothing.)
fn fetch_remote_modules(config: &snapshot::Config) -> anyhow::Result<()> {
    let handles = config.plugin_handles();
    if handles.iter().all(|handle| handle.remote_code().is_none()) {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime to fetch the remote Wasm modules")?;
    runtime.block_on(async {
        let clusters = ClusterManager::new(config.clusters.clone())?;
        weir::wasm::remote::resolve(
            &handles,
            &clusters,
            weir::wasm::remote::Phase::Reload,
            &config.source,
        )
        .await?;
        Ok(())
    })
}

/// `weir new-filter`: writes the crate and prints the commands that build and run it.
fn new_filter(name: &str, dir: &Option<PathBuf>, sdk: &Option<PathBuf>) -> ExitCode {
    let request = weir::new_filter::NewFilter {
        name: name.to_owned(),
        dir: dir.clone(),
        sdk: sdk.clone(),
    };
    match weir::new_filter::create(&request) {
        Ok(written) => {
            let weir = std::env::current_exe()
                .map_or_else(|_| "weir".to_owned(), |p| p.display().to_string());
            println!(
                "Created the filter crate `{name}` in {}.",
                written.dir.display()
            );
            println!("Build it and run it in weir:");
            println!("  cd {}", written.dir.display());
            println!("  cargo build --target wasm32-wasip1 --profile wasm-filter");
            println!("  {weir} -c weir.yaml");
            println!("Then, from another shell:");
            println!("  curl -i http://127.0.0.1:10000/            # 200, with its header");
            println!("  curl -i http://127.0.0.1:10000/forbidden   # 403 from the filter");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("weir new-filter: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up logging at `level` (Envoy's level names; `RUST_LOG` overrides); returns what
/// `POST /logging?level=` calls to change the level later.
fn init_logging(level: &str) -> weir::admin::SetLogLevel {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(log_directives(level)))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    Box::new(move |level: &str| {
        const LEVELS: [&str; 7] = [
            "trace", "debug", "info", "warning", "error", "critical", "off",
        ];
        if !LEVELS.contains(&level) {
            return Err(format!(
                "unknown level {level:?}; accepted: {}",
                LEVELS.join(", ")
            ));
        }
        let filter = tracing_subscriber::EnvFilter::try_new(log_directives(level))
            .map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// The filter directives of an Envoy log level name.
fn log_directives(level: &str) -> String {
    let level = match level {
        "warning" => "warn",
        "critical" => "error",
        other => other,
    };
    // The Wasm compiler's own debug output (thousands of lines per module compiled) is not
    // weir's: at debug and trace it stays at info unless RUST_LOG asks for it.
    match level {
        "debug" | "trace" => format!(
            "{level},cranelift_codegen=info,cranelift_frontend=info,regalloc2=info,\
             wasmtime_internal_cranelift=info,wasmtime_cranelift=info"
        ),
        other => other.to_owned(),
    }
}

fn serve(
    cli: &Cli,
    started: std::time::Instant,
    set_log_level: weir::admin::SetLogLevel,
) -> anyhow::Result<()> {
    // With `dynamic_resources`, the config's source is the xDS state: the file's static
    // resources with what the control plane sends (the file alone until it does).
    let mut xds = None;
    let (source, config, config_hash) = match &cli.config_path {
        Some(path) => {
            let file = weir::reload::watch::file_source(path.clone());
            let (state, loaded) = weir::xds::state::XdsState::for_file(file.clone(), path.clone())?;
            let source: Arc<dyn snapshot::ConfigSource> = match state {
                Some(state) => {
                    xds = Some(state.clone());
                    state
                }
                None => file,
            };
            (Some(source), loaded.config, Some(loaded.version))
        }
        None => {
            tracing::info!("no config given (-c FILE): serving the built-in config");
            (
                None,
                snapshot::load_str(config::DEFAULT_CONFIG, "<built-in>")?,
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
        // The admin serves from now on, as Envoy's: while the start goes on it shows the
        // config and clusters being started, and its state.
        let admin = Admin::new(
            config.clone(),
            clusters.clone(),
            weir::admin::ServerInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                command_line_options: command_line_options(cli, concurrency),
                started,
                drain_time,
            },
            &cli.log_level,
            Some(set_log_level),
        );
        if let Some(listener) = admin_listener {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(%address, "admin listening");
            }
            tokio::spawn(admin.clone().serve(listener));
        }
        // As Envoy's, clusters warm before any listener starts: one with active health checks
        // once each host has had its first check (each bounded by the check's `timeout`).
        // Meanwhile the admin says PRE_INITIALIZING; `POST /quitquitquit` ends the start.
        tokio::select! {
            () = clusters.initialized() => {}
            () = admin.quit_requested() => {
                tracing::info!("quit asked while clusters warm; exiting");
                clusters.shutdown();
                return Ok(());
            }
        }
        admin.set_initializing();
        // Remote Wasm modules are fetched through those clusters before any worker (and so any
        // listener) starts, as Envoy holds its listeners until they are fetched or their
        // retries run out (then each such plugin follows its fail_open).
        // Meanwhile the admin says INITIALIZING, as Envoy's does.
        weir::wasm::remote::init_stats();
        let handles = config.plugin_handles();
        let resolving = weir::wasm::remote::resolve(
            &handles,
            &clusters,
            weir::wasm::remote::Phase::Start,
            &config.source,
        );
        let resolved = tokio::select! {
            resolved = resolving => resolved,
            () = admin.quit_requested() => {
                tracing::info!("quit asked while remote Wasm modules are fetched; exiting");
                clusters.shutdown();
                return Ok(());
            }
        };
        resolved?;
        // Every listener bound before any is served: a port in use stops the start.
        let listeners = weir::listener::set::ListenerSet::bind(&config, concurrency)?;
        let snapshot = Arc::new(Snapshot {
            generation: 0,
            config: config.clone(),
            config_hash,
            clusters,
            listeners: Arc::new(listeners),
        });
        weir::accel::set_backlog_limit(cli.accel_backlog_limit);
        if let Some(mark) = cli.upstream_mark {
            weir::upstream::mark::set_upstream_mark(mark)
                .with_context(|| format!("--upstream-mark {mark}: cannot set SO_MARK"))?;
            tracing::info!(mark, "upstream sockets are marked (SO_MARK)");
        }
        // Chooses the tunnel mode; loads the eBPF splice where asked for (or logs once why
        // not) before the first tunnel needs it.
        // The flag, then the config's ProcessSettings, then WEIR_ACCEL (read by `init`).
        let from_config = cli
            .config_path
            .as_deref()
            .and_then(config::process_settings::read_file)
            .and_then(|settings| settings.accel)
            .map(|accel| match accel {
                config::process_settings::AccelSetting::Kernel => weir::accel::Mode::Kernel,
                config::process_settings::AccelSetting::Splice => weir::accel::Mode::Splice,
                config::process_settings::AccelSetting::Copy => weir::accel::Mode::Copy,
            });
        let _ = weir::accel::init(
            cli.accel
                .map(|accel| match accel {
                    Accel::Kernel => weir::accel::Mode::Kernel,
                    Accel::Splice => weir::accel::Mode::Splice,
                    Accel::Copy => weir::accel::Mode::Copy,
                })
                .or(from_config),
        );
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
        let services = weir::services::SingletonServices::start(
            &snapshot,
            workers.publisher().subscribe(),
        )
        .context("starting the singleton Wasm services")?;
        let reloader = Reloader::new(source, snapshot, workers.publisher());
        // The ADS client runs until shutdown; the sender is kept to the end of serve.
        let (xds_stop, xds_stopped) = tokio::sync::watch::channel(false);
        if let Some(state) = &xds {
            state.attach(&reloader);
            state.spawn_initial_fetch_timer();
            let spec = state.spec().clone();
            let cluster = config
                .clusters
                .iter()
                .find(|cluster| cluster.name == spec.ads_cluster)
                .map(|cluster| (**cluster).clone())
                .with_context(|| format!("xds: no static cluster {:?}", spec.ads_cluster))?;
            tracing::info!(
                cluster = %spec.ads_cluster,
                api = ?spec.api,
                lds_fetch_timeout = ?spec.lds_fetch_timeout,
                cds_fetch_timeout = ?spec.cds_fetch_timeout,
                "xds: resources come from the control plane"
            );
            let subscriber: Arc<dyn weir::xds::client::Subscriber> = state.clone();
            weir::xds::client::spawn(spec, cluster, subscriber, xds_stopped)
                .context("xds: cannot start the ADS client")?;
        }
        weir::reload::watch::spawn(&reloader, tokio::runtime::Handle::current());
        let overload_source = reloader.clone();
        tokio::spawn(weir::overload::run(
            move || overload_source.current().config.overload.clone(),
            default_limit,
        ));
        admin.attach(reloader.clone());
        let drain_listeners = workers.drain_listeners();
        admin.set_drain_listeners(Box::new(move |delay| match delay {
            None => drain_listeners(),
            Some(delay) => {
                let drain_listeners = drain_listeners.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    drain_listeners();
                });
            }
        }));
        if let Some(state) = &xds {
            let state = state.clone();
            admin.set_init_check(Box::new(move || state.initialized()));
        }
        admin.set_ready(true);
        tokio::select! {
            signalled = wait_for_signal() => signalled?,
            () = admin.quit_requested() => {}
        }
        tracing::info!(
            ?drain_time,
            "draining: no new connections; in-flight requests finish"
        );
        admin.set_ready(false);
        let _ = xds_stop.send(true);
        tokio::task::spawn_blocking(move || {
            workers.shutdown();
            services.shutdown();
        })
        .await
        .context("joining workers")?;
        reloader.current().clusters.shutdown();
        tracing::info!("drained; exiting");
        Ok(())
    })
}

/// The command line as Envoy's `/server_info` `command_line_options` names it.
fn command_line_options(cli: &Cli, concurrency: usize) -> serde_json::Value {
    serde_json::json!({
        "config_path": cli.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "concurrency": concurrency,
        "log_level": cli.log_level,
        "mode": "Serve",
        "drain_time": format!("{}s", cli.drain_time_s),
        "restart_epoch": 0,
        "disable_hot_restart": true,
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut user1 =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    loop {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM"),
            _ = interrupt.recv() => tracing::info!("SIGINT"),
            // As Envoy: SIGUSR1 reopens the access log files (logrotate), and nothing else.
            _ = user1.recv() => {
                weir::access_log::sink::reopen_all();
                continue;
            }
        }
        return Ok(());
    }
}
