//! The admin listener, with Envoy's admin API for what weir has: `/ready`, `/stats` (Envoy's
//! names, text or `?format=json`, `?filter=REGEX`), `/stats/prometheus`, `/server_info`,
//! `/config_dump` (Envoy's shape), `/clusters` (text or `?format=json`), `/listeners`,
//! `/memory`, `/runtime`, `/certs`, `POST /logging?level=`, `POST /quitquitquit`,
//! `POST /reopen_logs` (access log files), `POST /healthcheck/fail` and `/healthcheck/ok`,
//! `POST /drain_listeners`, and weir's `POST /reload`. Endpoints that change something answer
//! only POST (405 otherwise), so a crawler or a link cannot trigger them.
//!
//! It runs on the main runtime, apart from the workers, so it answers even when they are busy.
//! It serves from the start, as Envoy's admin does: while clusters warm and remote Wasm
//! modules are fetched (before any listener opens) every read-only endpoint answers from the
//! config and clusters being started, `/ready` and `/server_info` say `PRE_INITIALIZING` or
//! `INITIALIZING`, and `POST /reload` is refused (503) until the first snapshot runs.

mod certs;
mod clusters_json;
mod config_dump;
mod envoy_stats;
mod runtime;

use crate::body::{self, Body};
use crate::reload::{Reloader, Trigger};
use crate::snapshot::Config;
use crate::stats::Stats;
use crate::upstream::ClusterManager;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Changes the log level at run time (`POST /logging?level=`): `Err` with why not.
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What `/server_info` tells of the process, fixed at start.
pub struct ServerInfo {
    /// weir's version.
    pub version: String,
    /// The command line as Envoy's `command_line_options` (JSON object).
    pub command_line_options: serde_json::Value,
    /// When the process started.
    pub started: Instant,
    /// `--drain-time-s`: how long `POST /drain_listeners?graceful` keeps accepting.
    pub drain_time: std::time::Duration,
}

/// What the admin endpoints show.
pub struct Admin {
    /// What the endpoints show: the config and clusters being started, then (from
    /// [`Admin::attach`]) the running snapshots and how to reload them.
    source: std::sync::Mutex<Source>,
    /// Where the start is: [`PHASE_PRE_INITIALIZING`], [`PHASE_INITIALIZING`] or
    /// [`PHASE_STARTED`].
    phase: AtomicU8,
    ready: AtomicBool,
    info: ServerInfo,
    set_log_level: Option<SetLogLevel>,
    log_level: std::sync::Mutex<String>,
    quit: Notify,
    drain_listeners: std::sync::OnceLock<DrainListeners>,
    /// Whether the initial fetch from the control plane is over (none without xDS).
    initialized: std::sync::OnceLock<InitCheck>,
}

/// Where [`Admin`] reads the config and clusters it shows.
enum Source {
    /// The start: the config and clusters being started. Let go at [`Admin::attach`], so a
    /// reload that replaces those clusters stops their health checks and resolvers.
    Starting(Arc<Config>, Arc<ClusterManager>),
    /// The running snapshots.
    Running(Arc<Reloader>),
}

/// Clusters warm (Envoy's `PRE_INITIALIZING`: its init manager has not started).
const PHASE_PRE_INITIALIZING: u8 = 0;
/// Remote Wasm modules are fetched (Envoy's `INITIALIZING`).
const PHASE_INITIALIZING: u8 = 1;
/// The first snapshot runs ([`Admin::attach`]).
const PHASE_STARTED: u8 = 2;

/// Says whether the proxy's initialization is over (the xDS initial fetch).
pub type InitCheck = Box<dyn Fn() -> bool + Send + Sync>;

/// Stops every listener (`POST /drain_listeners`); `Some(delay)` stops them after `delay`
/// (`?graceful`: Envoy keeps accepting through its drain time).
pub type DrainListeners = Box<dyn Fn(Option<std::time::Duration>) + Send + Sync>;

/// What `/ready` and `/server_info`'s `state` say, from [`Admin::readiness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Serving.
    Live,
    /// Clusters warm at start (their first health checks), before any listener opens.
    PreInitializing,
    /// Waiting for remote Wasm modules at start, or for the initial fetch from the control
    /// plane (or its timeout).
    Initializing,
    /// Shutting down, or failing health checks (`POST /healthcheck/fail`).
    Draining,
}

impl Readiness {
    /// Envoy's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            Readiness::Live => "LIVE",
            Readiness::PreInitializing => "PRE_INITIALIZING",
            Readiness::Initializing => "INITIALIZING",
            Readiness::Draining => "DRAINING",
        }
    }
}

impl Admin {
    /// Admin of a proxy starting with `config` and `clusters` (`PRE_INITIALIZING` until
    /// [`Admin::set_initializing`], then `INITIALIZING` until [`Admin::attach`]); not ready
    /// until [`Admin::set_ready`].
    pub fn new(
        config: Arc<Config>,
        clusters: Arc<ClusterManager>,
        info: ServerInfo,
        log_level: &str,
        set_log_level: Option<SetLogLevel>,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            source: std::sync::Mutex::new(Source::Starting(config, clusters)),
            phase: AtomicU8::new(PHASE_PRE_INITIALIZING),
            ready: AtomicBool::new(false),
            info,
            set_log_level,
            log_level: std::sync::Mutex::new(log_level.to_owned()),
            quit: Notify::new(),
            drain_listeners: std::sync::OnceLock::new(),
            initialized: std::sync::OnceLock::new(),
        })
    }

    /// Records that the clusters have warmed and the start goes on (remote Wasm modules):
    /// `INITIALIZING` from now on, as Envoy's init manager.
    pub fn set_initializing(&self) {
        let _ = self.phase.compare_exchange(
            PHASE_PRE_INITIALIZING,
            PHASE_INITIALIZING,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Shows the running snapshots of `reloader` from now on (the start is over).
    pub fn attach(&self, reloader: Arc<Reloader>) {
        *self.lock_source() = Source::Running(reloader);
        self.phase.store(PHASE_STARTED, Ordering::Release);
    }

    fn lock_source(&self) -> std::sync::MutexGuard<'_, Source> {
        self.source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The running snapshots' reloader, once the start is over.
    fn reloader(&self) -> Option<Arc<Reloader>> {
        match &*self.lock_source() {
            Source::Running(reloader) => Some(reloader.clone()),
            Source::Starting(..) => None,
        }
    }

    /// The config and clusters to show: the snapshot in force, or the ones being started.
    fn view(&self) -> (Arc<Config>, Arc<ClusterManager>) {
        match &*self.lock_source() {
            Source::Running(reloader) => {
                let snapshot = reloader.current();
                (snapshot.config.clone(), snapshot.clusters.clone())
            }
            Source::Starting(config, clusters) => (config.clone(), clusters.clone()),
        }
    }

    /// How `POST /drain_listeners` stops the listeners (set once, by the binary).
    pub fn set_drain_listeners(&self, drain: DrainListeners) {
        let _ = self.drain_listeners.set(drain);
    }

    /// The one answer of `/ready` and `/server_info`'s `state`: every condition that makes
    /// the proxy not ready joins here.
    pub fn readiness(&self) -> Readiness {
        match self.phase.load(Ordering::Acquire) {
            PHASE_PRE_INITIALIZING => return Readiness::PreInitializing,
            PHASE_INITIALIZING => return Readiness::Initializing,
            _ => {}
        }
        if !self.ready.load(Ordering::Acquire) || crate::server_state::health_check_failed() {
            return Readiness::Draining;
        }
        if self
            .initialized
            .get()
            .is_some_and(|initialized| !initialized())
        {
            return Readiness::Initializing;
        }
        Readiness::Live
    }

    /// Makes `/ready` say INITIALIZING (503) while `initialized` says false: the xDS initial
    /// fetch, as Envoy's init manager holds its readiness.
    pub fn set_init_check(&self, initialized: InitCheck) {
        let _ = self.initialized.set(initialized);
    }

    /// Returns once `POST /quitquitquit` was asked (the caller then shuts down as on SIGTERM).
    pub async fn quit_requested(&self) {
        self.quit.notified().await;
    }

    /// Marks the proxy as serving (true) or draining (false), as `/ready` reports it.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Serves admin requests on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = self.clone();
            let info = crate::wire::ConnectionInfo {
                remote: peer,
                local: listener.local_addr().unwrap_or(peer),
                tls: false,
                original_dst: None,
                mtls: false,
                socket: None,
                id: crate::wire::connection::next_connection_id(),
                sni: None,
            };
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let admin = admin.clone();
                    let info = info.clone();
                    async move { Ok::<_, Infallible>(admin.respond_logged(request, &info).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "admin connection");
                }
            });
        }
    }

    /// [`Admin::respond`], logged to the admin access logs (`admin.access_log_path`,
    /// `admin.access_log[]`) of the config in force when there are any.
    async fn respond_logged(
        &self,
        request: Request<Incoming>,
        info: &crate::wire::ConnectionInfo,
    ) -> Response<Body> {
        let Some(logs) = self.view().0.admin_access_log.clone() else {
            return self.respond(&request).await;
        };
        // The entry reads the head; admin requests carry no body worth counting.
        let entry = crate::access_log::http::Entry::start(logs, &request, info).without_body();
        let response = self.respond(&request).await;
        entry.respond(response, crate::access_log::http::UpstreamSeen::default())
    }

    /// The endpoints that change something (POST only), else [`Admin::handle`].
    async fn respond(&self, request: &Request<Incoming>) -> Response<Body> {
        let path = request.uri().path();
        if !matches!(
            path,
            "/reload"
                | "/quitquitquit"
                | "/logging"
                | "/reopen_logs"
                | "/healthcheck/fail"
                | "/healthcheck/ok"
                | "/drain_listeners"
        ) {
            return self.handle(request);
        }
        if request.method() != Method::POST {
            if path == "/logging" && request.method() == Method::GET {
                return self.logging_levels();
            }
            // Envoy's words.
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("Method {} not allowed, POST required.", request.method()),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        match path {
            "/quitquitquit" => {
                tracing::info!("admin: POST /quitquitquit");
                self.quit.notify_one();
                text(StatusCode::OK, "OK\n".into())
            }
            "/logging" => self.set_logging(request),
            "/reopen_logs" => {
                crate::access_log::sink::reopen_all();
                text(StatusCode::OK, "OK\n".into())
            }
            "/healthcheck/fail" | "/healthcheck/ok" => {
                let fail = path == "/healthcheck/fail";
                if crate::server_state::set_health_check_failed(fail) != fail {
                    tracing::info!(failed = fail, "admin: server health checks {path}");
                }
                text(StatusCode::OK, "OK\n".into())
            }
            "/drain_listeners" => self.drain(request),
            _ => self.reload().await,
        }
    }

    /// `POST /drain_listeners`: every listener stops accepting and its connections drain,
    /// as at shutdown; the process stays up and `/ready` stays as it was (as Envoy's).
    /// `?graceful`: the listeners keep accepting through the drain time first, as Envoy's.
    /// `?inboundonly`: only listeners whose `traffic_direction` is `INBOUND`; weir's
    /// listeners have none, so (as Envoy with unspecified directions) none is drained.
    fn drain(&self, request: &Request<Incoming>) -> Response<Body> {
        let uri = request.uri();
        if query_has(uri, "inboundonly") {
            return text(StatusCode::OK, "OK\n".into());
        }
        let Some(drain) = self.drain_listeners.get() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "listeners cannot be drained in this process\n".into(),
            );
        };
        let graceful = query_has(uri, "graceful");
        tracing::info!(graceful, "admin: POST /drain_listeners");
        drain(graceful.then_some(self.info.drain_time));
        text(StatusCode::OK, "OK\n".into())
    }

    /// `POST /reload`: waits for the reload and tells how it went, as JSON.
    async fn reload(&self) -> Response<Body> {
        let Some(reloader) = self.reloader() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{}: no reload before the start is over\n",
                    self.readiness().name()
                ),
            );
        };
        let (status, json) = match reloader.reload(Trigger::Admin).await {
            Ok(outcome) => (StatusCode::OK, outcome.to_json()),
            Err(error) => (
                error.status(),
                serde_json::json!({ "result": "failure", "error": error.to_string() }),
            ),
        };
        json_response(status, format!("{json}\n"))
    }

    /// `POST /logging?level=L`: every logger at `L` (Envoy's levels: trace, debug, info,
    /// warning, error, critical, off).
    fn set_logging(&self, request: &Request<Incoming>) -> Response<Body> {
        let Some(level) = query_param(request.uri(), "level") else {
            return self.logging_levels();
        };
        let Some(set) = &self.set_log_level else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the log level cannot be changed in this process\n".into(),
            );
        };
        match set(&level) {
            Ok(()) => {
                tracing::info!(%level, "admin: log level changed");
                *self
                    .log_level
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = level;
                self.logging_levels()
            }
            Err(reason) => text(StatusCode::BAD_REQUEST, format!("{reason}\n")),
        }
    }

    /// `GET /logging`: the level in force, as Envoy lists its loggers.
    fn logging_levels(&self) -> Response<Body> {
        let level = self
            .log_level
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        text(
            StatusCode::OK,
            format!("active loggers:\n  weir: {level}\n"),
        )
    }

    fn handle(&self, request: &Request<Incoming>) -> Response<Body> {
        let path = request.uri().path();
        match (request.method(), path) {
            (&Method::GET | &Method::HEAD, "/ready") => {
                let readiness = self.readiness();
                let status = match readiness {
                    Readiness::Live => StatusCode::OK,
                    Readiness::Draining
                    | Readiness::Initializing
                    | Readiness::PreInitializing => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                };
                text(status, format!("{}\n", readiness.name()))
            }
            (&Method::GET, "/memory") => memory(),
            (&Method::GET, "/certs") => {
                let (config, _) = self.view();
                let dump = certs::dump(&config.listeners, &config.clusters);
                json_response(
                    StatusCode::OK,
                    serde_json::to_string_pretty(&dump).unwrap_or_default(),
                )
            }
            (&Method::GET, "/runtime") => {
                let (config, _) = self.view();
                json_response(
                    StatusCode::OK,
                    serde_json::to_string_pretty(&runtime::dump(&config.dump))
                        .unwrap_or_default(),
                )
            }
            (&Method::GET, "/stats/prometheus") => {
                let mut response = text(StatusCode::OK, Stats::global().prometheus_text());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            (&Method::GET, "/stats") => self.stats(request),
            (&Method::GET, "/server_info") => self.server_info(),
            (&Method::GET, "/config_dump") => {
                let (config, _) = self.view();
                let resource = query_param(request.uri(), "resource");
                let mask = query_param(request.uri(), "mask");
                let sources = config_dump::Sources {
                    bootstrap: &config.dump,
                    dynamic: config.dynamic.as_deref(),
                    include_eds: query_has(request.uri(), "include_eds"),
                };
                match config_dump::dump(sources, resource.as_deref(), mask.as_deref()) {
                    Ok(dump) => json_response(
                        StatusCode::OK,
                        serde_json::to_string_pretty(&dump)
                            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")),
                    ),
                    Err(error) => text(StatusCode::NOT_FOUND, format!("{error}\n")),
                }
            }
            (&Method::GET, "/clusters") => self.clusters(request),
            (&Method::GET, "/listeners") => self.listeners(request),
            (&Method::GET, "/") => text(
                StatusCode::OK,
                "weir admin\n  /ready\n  /stats  (?filter=REGEX, ?format=json|prometheus)\n  \
                 /stats/prometheus\n  /server_info\n  /config_dump  (?resource=, ?mask=, ?include_eds)\n  \
                 /clusters  (?format=json)\n  /listeners  (?format=json)\n  /memory\n  /runtime\n  /certs\n  \
                 GET|POST /logging  (?level=)\n  POST /reload\n  POST /quitquitquit\n  \
                 POST /reopen_logs\n  POST /healthcheck/fail\n  POST /healthcheck/ok\n  \
                 POST /drain_listeners  (?inboundonly, ?graceful)\n"
                    .into(),
            ),
            _ => text(StatusCode::NOT_FOUND, format!("no admin endpoint {path}\n")),
        }
    }
}

impl Admin {
    /// `GET /stats`: Envoy's names in Envoy's text (default) or JSON, `?filter=` a regex on
    /// the name; `?format=prometheus` is `/stats/prometheus`; `?usedonly` leaves out stats that
    /// are zero (weir does not track "ever written" apart from the value).
    fn stats(&self, request: &Request<Incoming>) -> Response<Body> {
        let uri = request.uri();
        let format = query_param(uri, "format");
        if format.as_deref() == Some("prometheus") {
            return text(StatusCode::OK, Stats::global().prometheus_text());
        }
        let filter = match query_param(uri, "filter").filter(|f| !f.is_empty()) {
            None => None,
            Some(pattern) => match regex::RegexBuilder::new(&pattern)
                .size_limit(1 << 20)
                .build()
            {
                Ok(regex) => Some(regex),
                Err(error) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("invalid regex in filter: {error}\n"),
                    );
                }
            },
        };
        let mut stats = envoy_stats::collect(&Stats::global().registry().gather());
        let (config, _) = self.view();
        let checked: std::collections::HashSet<&str> = config
            .clusters
            .iter()
            .filter(|spec| spec.health_check.is_some())
            .map(|spec| spec.name.as_str())
            .collect();
        envoy_stats::retain_health_checked(&mut stats, |cluster| checked.contains(cluster));
        let mut readouts = crate::stats::TextReadouts::global().all();
        if query_has(uri, "usedonly") {
            stats.retain(|stat| stat.value != 0.0);
            readouts.retain(|(_, value)| !value.is_empty());
        }
        match format.as_deref() {
            Some("json") => json_response(
                StatusCode::OK,
                envoy_stats::json(&readouts, &stats, filter.as_ref()).to_string(),
            ),
            None | Some("text") => text(
                StatusCode::OK,
                envoy_stats::text(&readouts, &stats, filter.as_ref()),
            ),
            Some(other) => text(
                StatusCode::BAD_REQUEST,
                format!("unknown format {other:?}; accepted: text, json, prometheus\n"),
            ),
        }
    }

    /// `GET /server_info`, in Envoy's shape.
    fn server_info(&self) -> Response<Body> {
        let uptime = format!("{}s", self.info.started.elapsed().as_secs());
        let state = self.readiness().name();
        let info = serde_json::json!({
            "version": self.info.version,
            "state": state,
            "hot_restart_version": "disabled",
            "command_line_options": self.info.command_line_options,
            "uptime_current_epoch": uptime,
            "uptime_all_epochs": uptime,
        });
        json_response(
            StatusCode::OK,
            serde_json::to_string_pretty(&info).unwrap_or_default(),
        )
    }

    /// `GET /clusters`: Envoy's text, or with `?format=json` its `cluster_statuses` JSON
    /// (see [`clusters_json`]).
    fn clusters(&self, request: &Request<Incoming>) -> Response<Body> {
        let (config, clusters) = self.view();
        if query_param(request.uri(), "format").as_deref() != Some("json") {
            return text(StatusCode::OK, clusters.clusters_text());
        }
        let from_cds = |name: &str| {
            config.dynamic.as_deref().is_some_and(|dynamic| {
                dynamic
                    .clusters
                    .iter()
                    .any(|entry| entry.name == name && !entry.warming)
            })
        };
        json_response(StatusCode::OK, clusters_json::render(&clusters, &from_cds))
    }

    /// `GET /listeners`: `name::address` lines, or Envoy's `listener_statuses` JSON.
    fn listeners(&self, request: &Request<Incoming>) -> Response<Body> {
        let (config, _) = self.view();
        let listeners: Vec<(&str, std::net::SocketAddr)> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.address))
            .chain(
                config
                    .tcp_listeners
                    .iter()
                    .map(|l| (l.name.as_str(), l.address)),
            )
            .collect();
        if query_param(request.uri(), "format").as_deref() == Some("json") {
            let statuses: Vec<serde_json::Value> = listeners
                .iter()
                .map(|(name, address)| {
                    serde_json::json!({
                        "name": name,
                        "local_address": {"socket_address": {
                            "address": address.ip().to_string(),
                            "port_value": address.port(),
                        }},
                    })
                })
                .collect();
            return json_response(
                StatusCode::OK,
                serde_json::json!({ "listener_statuses": statuses }).to_string(),
            );
        }
        let mut out = String::new();
        for (name, address) in listeners {
            out.push_str(&format!("{name}::{address}\n"));
        }
        text(StatusCode::OK, out)
    }
}

/// The first value of query parameter `name` of `uri`, percent-decoded (`+` is a space).
fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

/// Whether the query of `uri` has parameter `name` (with or without a value).
fn query_has(uri: &http::Uri, name: &str) -> bool {
    uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| percent_decode(pair.split('=').next().unwrap_or("")) == name)
    })
}

fn percent_decode(text: &str) -> String {
    use crate::route::path::hex_value;
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex_value(*high).zip(hex_value(*low)),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some((high, low))) => {
                out.push((high << 4) | low);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /memory`, in Envoy's shape (its values are tcmalloc's, as decimal strings). weir
/// allocates with mimalloc, which keeps no such figures, so they come from the kernel
/// (`/proc/self/status`): `allocated` is the resident anonymous memory (`RssAnon`),
/// `heap_size` the data segment (`VmData`), `pageheap_unmapped` the part of it not resident,
/// `total_physical_bytes` the resident set (`VmRSS`); the caches' figures are 0.
fn memory() -> Response<Body> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |k| k.saturating_mul(1024))
    };
    let allocated = kib("RssAnon");
    let heap_size = kib("VmData");
    let memory = serde_json::json!({
        "allocated": allocated.to_string(),
        "heap_size": heap_size.to_string(),
        "pageheap_unmapped": heap_size.saturating_sub(allocated).to_string(),
        "pageheap_free": "0",
        "total_thread_cache": "0",
        "total_physical_bytes": kib("VmRSS").to_string(),
    });
    json_response(
        StatusCode::OK,
        serde_json::to_string_pretty(&memory).unwrap_or_default(),
    )
}

fn json_response(status: StatusCode, content: String) -> Response<Body> {
    let mut response = text(status, content);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, content: String) -> Response<Body> {
    let mut response = Response::new(body::full(content));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_percent_decoded() {
        let uri: http::Uri = "/stats?filter=%5Ecluster%5C.b+x&usedonly&format=json"
            .parse()
            .unwrap();
        assert_eq!(
            query_param(&uri, "filter").as_deref(),
            Some("^cluster\\.b x")
        );
        assert_eq!(query_param(&uri, "format").as_deref(), Some("json"));
        assert_eq!(query_param(&uri, "usedonly").as_deref(), Some(""));
        assert!(query_has(&uri, "usedonly"));
        assert!(!query_has(&uri, "missing"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
