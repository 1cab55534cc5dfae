//! Wasm filters over xDS, in weir and in Envoy 1.40 from the same management server: an
//! `envoy.filters.http.wasm` filter delivered inline in an LDS listener (its module a local
//! file, or remote code with its sha256 fetched through a CDS cluster), one whose config
//! comes over ECDS (`config_discovery`): served once it arrives, swapped by an ECDS update
//! within 5 s with no failed request across the change, and an ECDS resource whose type the
//! filter does not list NACKed while the config in force keeps serving; and a route or
//! virtual host turning the filter off or back on (`typed_per_filter_config`), also one
//! `disabled` in `http_filters`; a filter whose ECDS config does not come (the listener warms
//! for its source's `initial_fetch_timeout`, then the filter answers 500 `NFCF` until the
//! config comes), each such filter enforced where several are missing; and the ECDS part of
//! `/config_dump` (`EcdsConfigDump`).
//!
//! The module is the `headers` fixture (the official proxy-wasm SDK, which Envoy's V8 loads):
//! it answers its plugin configuration in `x-wasm-config`.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{
    AsyncDataSource, DataSource, ExtensionConfigSource, HttpUri, RemoteDataSource,
    TypedExtensionConfig, async_data_source, data_source, http_uri,
};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, FilterConfig, Route, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::health_check::v3::HealthCheck;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::wasm::v3::{PluginConfig, plugin_config};
use envoy_types::pb::google::protobuf::BoolValue;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use weir_tests::envoy::Envoy;
use weir_tests::xds_resources::{
    AdsApi, ads_bootstrap, ads_config_source, any, listener_with_hcm, load_assignment, local_wasm_plugin,
};
use weir_tests::xds_server::{XdsServer, type_url};
use weir_tests::{Weir, free_port, get_host, wasm};

/// The initial config must serve within this.
const INITIAL: Duration = Duration::from_secs(10);
/// An update must be applied within this (the bound).
const UPDATE: Duration = Duration::from_secs(5);

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
/// The name of the filter whose config comes over ECDS, and of its ECDS resource.
const ECDS_FILTER: &str = "headers-ecds";

/// The proxy under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Weir,
    Envoy,
}

/// A running proxy of either kind; dropped, it stops.
enum Proxy {
    Weir(Box<Weir>),
    Envoy(Box<Envoy>),
}

impl Proxy {
    /// Starts `kind` on an ADS bootstrap pointing at `server` (without waiting: the listener
    /// is polled).
    fn spawn(kind: Kind, server: &XdsServer) -> Proxy {
        Proxy::spawn_with(kind, server, AdsApi::Grpc)
    }

    /// [`Proxy::spawn`] with the ADS stream in form `api`.
    fn spawn_with(kind: Kind, server: &XdsServer, api: AdsApi) -> Proxy {
        let bootstrap = ads_bootstrap("wasm-1", free_port(), server.addr(), api);
        match kind {
            Kind::Weir => Proxy::Weir(Box::new(spawn_weir(&bootstrap))),
            Kind::Envoy => Proxy::Envoy(Box::new(Envoy::spawn(&bootstrap, "info"))),
        }
    }

    fn log_report(&self) -> String {
        match self {
            Proxy::Weir(weir) => weir.log_report(),
            Proxy::Envoy(envoy) => envoy.log_report(),
        }
    }
}

/// Starts weir on `bootstrap` (without waiting for `/ready`) with a Wasm module cache of its
/// own, so that a remote module it fetches is not left in the user's cache for other tests.
fn spawn_weir(bootstrap: &serde_json::Value) -> Weir {
    let dir = tempfile::Builder::new()
        .prefix("weir-e2e-xds-wasm-")
        .tempdir()
        .expect("create temp dir");
    let config_path = dir.path().join("weir.yaml");
    std::fs::write(
        &config_path,
        serde_json::to_string_pretty(bootstrap).expect("serialize config"),
    )
    .expect("write config");
    let mut command = std::process::Command::new(weir_tests::weir_bin());
    command
        .arg("-c")
        .arg(&config_path)
        .args(["--log-level", "debug", "--concurrency", "1"])
        .env("WEIR_WASM_CACHE_DIR", dir.path().join("wasm-cache"));
    let admin = weir_tests::weir::admin_addr(bootstrap);
    Weir::spawn_command(command, dir, config_path, admin)
}

/// The Wasm filter config running the `headers` fixture with plugin `configuration`.
fn wasm_config(module: &Path, configuration: &str) -> Wasm {
    Wasm {
        config: Some(local_wasm_plugin("headers", module, configuration)),
    }
}

/// An HTTP filter whose config comes over ECDS, of the Wasm type only.
fn discovered(name: &str) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(ConfigType::ConfigDiscovery(ExtensionConfigSource {
            config_source: Some(ads_config_source()),
            type_urls: vec![WASM_TYPE.into()],
            ..ExtensionConfigSource::default()
        })),
        ..HttpFilter::default()
    }
}

fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(ConfigType::TypedConfig(any(&Router::default()))),
        ..HttpFilter::default()
    }
}

/// A route for paths under `prefix` answered by the proxy itself with 200.
fn direct(prefix: &str) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
            ..RouteMatch::default()
        }),
        action: Some(Action::DirectResponse(DirectResponseAction {
            status: 200,
            ..DirectResponseAction::default()
        })),
        ..Route::default()
    }
}

/// `typed_per_filter_config` turning `filter` off (`disabled`) or back on (an empty
/// `config`, as Envoy wants it: a `FilterConfig` with neither is refused).
fn per_filter(
    filter: &str,
    disabled: bool,
) -> std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any> {
    let config = (!disabled).then(envoy_types::pb::google::protobuf::Any::default);
    [(
        filter.to_owned(),
        any(&FilterConfig {
            disabled,
            config,
            ..FilterConfig::default()
        }),
    )]
    .into_iter()
    .collect()
}

/// A virtual host for every domain with `routes`.
fn catch_all(routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: "all".into(),
        domains: vec!["*".into()],
        routes,
        ..VirtualHost::default()
    }
}

/// A listener `name` on 127.0.0.1:`port` with `filters` and the router, with inline routes.
fn listener(name: &str, port: u16, filters: Vec<HttpFilter>, routes: Vec<Route>) -> Listener {
    listener_with_hosts(name, port, filters, vec![catch_all(routes)])
}

fn listener_with_hosts(
    name: &str,
    port: u16,
    filters: Vec<HttpFilter>,
    virtual_hosts: Vec<VirtualHost>,
) -> Listener {
    let mut http_filters = filters;
    http_filters.push(router());
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: format!("{name}-routes"),
            virtual_hosts,
            ..RouteConfiguration::default()
        })),
        http_filters,
        ..HttpConnectionManager::default()
    };
    listener_with_hcm(name, port, &hcm)
}

/// The ECDS resource for [`ECDS_FILTER`] with `configuration`.
fn ecds(module: &Path, configuration: &str) -> TypedExtensionConfig {
    TypedExtensionConfig {
        name: ECDS_FILTER.into(),
        typed_config: Some(any(&wasm_config(module, configuration))),
    }
}

/// `GET path` on `addr`: the status and `x-wasm-config`, or the error.
async fn probe(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    probe_host(addr, "localhost", path).await
}

/// [`probe`] with a Host.
async fn probe_host(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let resp = tokio::time::timeout(Duration::from_secs(2), get_host(addr, host, path))
        .await
        .map_err(|_| "timed out".to_string())??;
    Ok((resp.status, resp.header("x-wasm-config").to_owned()))
}

/// Polls `path` until it answers 200 with `x-wasm-config: config`, for at most `limit`;
/// returns how long it took and how many requests failed (not 200) on the way, or the last
/// answer when it never did. Before the first 200 (the listener not up yet), failures are
/// not counted unless `count_failures_from_start`.
async fn until_config(
    addr: SocketAddr,
    path: &str,
    config: &str,
    limit: Duration,
    count_failures_from_start: bool,
) -> Result<(Duration, usize), String> {
    let start = Instant::now();
    let mut failures = 0;
    let mut served = count_failures_from_start;
    loop {
        let last = probe(addr, path).await;
        match &last {
            Ok((200, seen)) if seen == config => return Ok((start.elapsed(), failures)),
            Ok((200, _)) => served = true,
            _ if served => failures += 1,
            _ => {}
        }
        if start.elapsed() >= limit {
            return Err(format!("last answer {last:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What one proxy did, compared between weir and Envoy.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// The ECDS names it asked for.
    ecds_names: Vec<String>,
    /// What a route that turns the ECDS filter off answered.
    disabled_route: (u16, String),
    /// Requests that failed across the ECDS update.
    failed_across_update: usize,
    /// Whether the resource of a type not listed was NACKed.
    nacked: bool,
    /// What answered after the NACK.
    after_nack: (u16, String),
}

async fn ecds_scenario(kind: Kind, api: AdsApi) -> Outcome {
    let module = wasm::fixture("headers");
    let server = XdsServer::start().await;
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    server.set(
        "ecds",
        &listener(
            "ecds",
            port,
            vec![discovered(ECDS_FILTER)],
            vec![
                Route {
                    typed_per_filter_config: per_filter(ECDS_FILTER, true),
                    ..direct("/off")
                },
                direct("/"),
            ],
        ),
    );
    let proxy = Proxy::spawn_with(kind, &server, api);

    // Subscribed by the filter's name; the listener serves once the config came.
    let request = server
        .wait_for_request(INITIAL, 0, |r| {
            r.type_url == type_url::EXTENSION_CONFIG && !r.resource_names.is_empty()
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{kind:?} subscribed to ECDS: {:#?}\n{}",
                server.requests(),
                proxy.log_report()
            )
        });
    server.set(ECDS_FILTER, &ecds(&module, "v1"));
    let (took, _) = until_config(addr, "/", "v1", INITIAL, false)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{kind:?} serves ECDS config v1: {e}\n{}",
                proxy.log_report()
            )
        });
    eprintln!("{kind:?}: listener with its ECDS filter serving after {took:?}");
    let disabled_route = probe(addr, "/off")
        .await
        .unwrap_or_else(|e| panic!("{kind:?} answers /off: {e}\n{}", proxy.log_report()));

    // An update swaps the filter's config within 5 s; every request across it answers.
    let changing = Instant::now();
    server.set(ECDS_FILTER, &ecds(&module, "v2"));
    let (took, failed) = until_config(addr, "/", "v2", UPDATE, true)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{kind:?} applies ECDS v2 within {UPDATE:?}: {e}\n{}",
                proxy.log_report()
            )
        });
    assert!(took <= UPDATE && changing.elapsed() <= UPDATE + Duration::from_secs(1));
    eprintln!("{kind:?}: ECDS update applied in {took:?}, {failed} failed requests");

    // A config of a type the filter does not list is NACKed; v2 keeps serving.
    let from = server.requests().len();
    server.set(
        ECDS_FILTER,
        &TypedExtensionConfig {
            name: ECDS_FILTER.into(),
            typed_config: Some(any(&HealthCheck {
                pass_through_mode: Some(BoolValue { value: false }),
                ..HealthCheck::default()
            })),
        },
    );
    let nack = server
        .wait_for_request(INITIAL, from, |r| {
            r.type_url == type_url::EXTENSION_CONFIG && r.is_nack()
        })
        .await;
    if let Some(nack) = &nack {
        eprintln!("{kind:?}: NACK {:?}", nack.error_detail);
        let (_, message) = nack.error_detail.clone().unwrap_or_default();
        assert!(message.contains("HealthCheck"), "{kind:?}: {message}");
    }
    let after_nack = probe(addr, "/").await.unwrap_or_else(|e| {
        panic!(
            "{kind:?} answers after the NACK: {e}\n{}",
            proxy.log_report()
        )
    });
    drop(proxy);
    Outcome {
        ecds_names: request.resource_names,
        disabled_route,
        failed_across_update: failed,
        nacked: nack.is_some(),
        after_nack,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_filter_config_over_ecds_is_served_updated_and_checked_as_envoy_does() {
    for api in AdsApi::BOTH {
        let weir = ecds_scenario(Kind::Weir, api).await;
        let expected = Outcome {
            ecds_names: vec![ECDS_FILTER.to_string()],
            disabled_route: (200, String::new()),
            failed_across_update: 0,
            nacked: true,
            after_nack: (200, "v2".to_string()),
        };
        assert_eq!(weir, expected, "{api:?}: weir");
        let envoy = ecds_scenario(Kind::Envoy, api).await;
        assert_eq!(
            weir, envoy,
            "{api:?}: weir (left) and Envoy 1.40 (right) differ"
        );
    }
}

/// Serves `module` to every request (HTTP/1.1, one request per connection) until dropped;
/// returns its address.
async fn module_server(module: Vec<u8>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let module = std::sync::Arc::new(module);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let module = module.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head));
                if !matches!(read.await, Ok(Ok(n)) if n > 0) {
                    return;
                }
                let header = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    module.len()
                );
                let _ = stream.write_all(header.as_bytes()).await;
                let _ = stream.write_all(&module).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// A STATIC cluster `name` with one HTTP/1.1 host at `addr`, for CDS.
fn static_cluster(name: &str, addr: SocketAddr) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(ProtoDuration {
            seconds: 1,
            nanos: 0,
        }),
        load_assignment: Some(load_assignment(name, &[addr])),
        ..Cluster::default()
    }
}

/// The Wasm filter config of [`wasm_config`] with its code fetched from `uri` through
/// `cluster` and checked against `sha256`.
fn remote_wasm_config(uri: &str, cluster: &str, sha256: &str, configuration: &str) -> Wasm {
    let mut wasm = wasm_config(Path::new("unused"), configuration);
    if let Some(PluginConfig {
        vm: Some(plugin_config::Vm::VmConfig(vm)),
        ..
    }) = &mut wasm.config
    {
        vm.code = Some(AsyncDataSource {
            specifier: Some(async_data_source::Specifier::Remote(RemoteDataSource {
                http_uri: Some(HttpUri {
                    uri: uri.into(),
                    timeout: Some(ProtoDuration {
                        seconds: 5,
                        nanos: 0,
                    }),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster.into())),
                }),
                sha256: sha256.into(),
                retry_policy: None,
            })),
        });
    }
    wasm
}

/// Where the LDS listener's Wasm module comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    /// `code.local.filename`.
    Local,
    /// `code.remote` through a CDS cluster, with its sha256.
    Remote,
}

async fn lds_scenario(kind: Kind, code: Code) -> (u16, String) {
    let module = wasm::fixture("headers");
    let server = XdsServer::start().await;
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (module_addr, module_task) =
        module_server(std::fs::read(&module).expect("read the module")).await;
    let config = match code {
        Code::Local => wasm_config(&module, "lds"),
        Code::Remote => {
            server.set("wasm_server", &static_cluster("wasm_server", module_addr));
            let digest = weir_tests::sha256_hex(&std::fs::read(&module).expect("module"));
            remote_wasm_config(
                &format!("http://{module_addr}/headers.wasm"),
                "wasm_server",
                &digest,
                "lds",
            )
        }
    };
    let wasm_filter = HttpFilter {
        name: "envoy.filters.http.wasm".into(),
        config_type: Some(ConfigType::TypedConfig(any(&config))),
        ..HttpFilter::default()
    };
    server.set(
        "lds",
        &listener("lds", port, vec![wasm_filter], vec![direct("/")]),
    );
    let proxy = Proxy::spawn(kind, &server);
    until_config(addr, "/", "lds", INITIAL, false)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{kind:?} serves the LDS Wasm filter: {e}\n{}",
                proxy.log_report()
            )
        });
    let answer = probe(addr, "/").await.expect("an answer");
    drop(proxy);
    module_task.abort();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_filter_inline_in_an_lds_listener_runs_as_in_envoy() {
    for code in [Code::Local, Code::Remote] {
        let weir = lds_scenario(Kind::Weir, code).await;
        assert_eq!(weir, (200, "lds".to_string()), "{code:?}");
        let envoy = lds_scenario(Kind::Envoy, code).await;
        assert_eq!(weir, envoy, "{code:?}: weir (left) and Envoy 1.40 (right)");
    }
}

/// The requests of the per-route scenario: (host, path), and what answers with the Wasm
/// filter on (`x-wasm-config: per-route`) or off (none).
const PER_ROUTE: &[(&str, &str, &str)] = &[
    // The route turns the filter off; its neighbour leaves it on.
    ("localhost", "/off", ""),
    ("localhost", "/", "per-route"),
    // The virtual host turns it off; a route of it back on.
    ("quiet.example", "/on", "per-route"),
    ("quiet.example", "/", ""),
];

/// On a listener whose Wasm filter is `disabled` (off unless a route turns it on): path, and
/// the answer's `x-wasm-config`.
const DEFAULT_OFF: &[(&str, &str)] = &[("/on", "per-route"), ("/", "")];

async fn per_route_scenario(kind: Kind) -> Vec<(u16, String)> {
    let module = wasm::fixture("headers");
    let server = XdsServer::start().await;
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let filter_name = "envoy.filters.http.wasm";
    let wasm_filter = HttpFilter {
        name: filter_name.into(),
        config_type: Some(ConfigType::TypedConfig(any(&wasm_config(
            &module,
            "per-route",
        )))),
        ..HttpFilter::default()
    };
    let quiet = VirtualHost {
        name: "quiet".into(),
        domains: vec!["quiet.example".into()],
        routes: vec![
            Route {
                typed_per_filter_config: per_filter(filter_name, false),
                ..direct("/on")
            },
            direct("/"),
        ],
        typed_per_filter_config: per_filter(filter_name, true),
        ..VirtualHost::default()
    };
    let all = catch_all(vec![
        Route {
            typed_per_filter_config: per_filter(filter_name, true),
            ..direct("/off")
        },
        direct("/"),
    ]);
    let off_port = free_port();
    let off_addr = SocketAddr::from(([127, 0, 0, 1], off_port));
    let off_filter = HttpFilter {
        disabled: true,
        ..wasm_filter.clone()
    };
    server.set(
        "per-route",
        &listener_with_hosts("per-route", port, vec![wasm_filter], vec![quiet, all]),
    );
    server.set(
        "default-off",
        &listener(
            "default-off",
            off_port,
            vec![off_filter],
            vec![
                Route {
                    typed_per_filter_config: per_filter(filter_name, false),
                    ..direct("/on")
                },
                direct("/"),
            ],
        ),
    );
    let proxy = Proxy::spawn(kind, &server);
    until_config(addr, "/", "per-route", INITIAL, false)
        .await
        .unwrap_or_else(|e| panic!("{kind:?} serves the listener: {e}\n{}", proxy.log_report()));
    let mut answers = Vec::new();
    for (host, path, _) in PER_ROUTE {
        let answer = probe_host(addr, host, path)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} {host}{path}: {e}\n{}", proxy.log_report()));
        answers.push(answer);
    }
    until_config(off_addr, "/on", "per-route", INITIAL, false)
        .await
        .unwrap_or_else(|e| panic!("{kind:?} serves default-off: {e}\n{}", proxy.log_report()));
    for (path, _) in DEFAULT_OFF {
        let answer = probe(off_addr, path)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} default-off {path}: {e}\n{}", proxy.log_report()));
        answers.push(answer);
    }
    drop(proxy);
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_or_virtual_host_turns_a_wasm_filter_off_or_on_as_envoy_does() {
    let weir = per_route_scenario(Kind::Weir).await;
    let expected: Vec<(u16, String)> = PER_ROUTE
        .iter()
        .map(|(_, _, config)| (200, config.to_string()))
        .chain(
            DEFAULT_OFF
                .iter()
                .map(|(_, config)| (200, config.to_string())),
        )
        .collect();
    assert_eq!(weir, expected, "weir");
    let envoy = per_route_scenario(Kind::Envoy).await;
    assert_eq!(weir, envoy, "weir (left) and Envoy 1.40 (right)");
}

/// The ECDS filter of [`discovered`] whose `config_source` gives up on the first fetch after
/// `timeout`.
fn discovered_with_timeout(name: &str, timeout: Duration) -> HttpFilter {
    let mut filter = discovered(name);
    if let Some(ConfigType::ConfigDiscovery(discovery)) = &mut filter.config_type
        && let Some(source) = &mut discovery.config_source
    {
        source.initial_fetch_timeout = Some(ProtoDuration {
            seconds: timeout.as_secs() as i64,
            nanos: timeout.subsec_nanos() as i32,
        });
    }
    filter
}

/// How long the ECDS filter of the missing-config scenario waits for its config.
const ECDS_TIMEOUT: Duration = Duration::from_secs(2);

/// What one proxy did with a filter whose ECDS config did not come, compared between weir
/// and Envoy.
#[derive(Debug, PartialEq, Eq)]
struct MissingOutcome {
    /// Whether the listener refused connections while it waited (it warms).
    refused_while_warming: bool,
    /// Whether it began to answer no sooner than the ECDS source's `initial_fetch_timeout`
    /// (less 0.7 s: the timer starts before the subscription reaches the server, which
    /// takes a while on a loaded machine).
    answered_after_the_timeout: bool,
    /// Status, `content-length` and body of the answer once the fetch gave up.
    without_config: (u16, String, String),
    /// What a route that turns the filter off answers then.
    without_config_route_off: (u16, String),
    /// What answered once the config came.
    with_config: (u16, String),
    /// The access log line of the answer without the config: status, response flags and
    /// code details.
    logged: String,
}

/// `listener` with its connection manager writing `%RESPONSE_CODE% %RESPONSE_FLAGS%
/// %RESPONSE_CODE_DETAILS%` per request to `path`.
fn with_access_log(mut listener: Listener, path: &Path) -> Listener {
    use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
    use envoy_types::pb::envoy::config::core::v3::{
        SubstitutionFormatString, substitution_format_string,
    };
    use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
        FileAccessLog, file_access_log,
    };
    use prost::Message as _;
    let logger = FileAccessLog {
        path: path.display().to_string(),
        access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(
            SubstitutionFormatString {
                format: Some(substitution_format_string::Format::TextFormatSource(
                    DataSource {
                        specifier: Some(data_source::Specifier::InlineString(
                            "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n".into(),
                        )),
                        ..DataSource::default()
                    },
                )),
                ..SubstitutionFormatString::default()
            },
        )),
    };
    for chain in &mut listener.filter_chains {
        for filter in &mut chain.filters {
            if let Some(filter::ConfigType::TypedConfig(config)) = &mut filter.config_type
                && let Ok(mut hcm) = HttpConnectionManager::decode(config.value.as_slice())
            {
                hcm.access_log.push(AccessLog {
                    name: "envoy.access_loggers.file".into(),
                    config_type: Some(access_log::ConfigType::TypedConfig(any(&logger))),
                    ..AccessLog::default()
                });
                *config = any(&hcm);
            }
        }
    }
    listener
}

async fn missing_config_scenario(kind: Kind) -> MissingOutcome {
    let module = wasm::fixture("headers");
    let server = XdsServer::start().await;
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("access.log");
    server.set(
        "missing",
        &with_access_log(
            listener(
                "missing",
                port,
                vec![discovered_with_timeout(ECDS_FILTER, ECDS_TIMEOUT)],
                vec![
                    Route {
                        typed_per_filter_config: per_filter(ECDS_FILTER, true),
                        ..direct("/off")
                    },
                    direct("/"),
                ],
            ),
            &log,
        ),
    );
    let proxy = Proxy::spawn(kind, &server);
    server
        .wait_for_request(INITIAL, 0, |r| {
            r.type_url == type_url::EXTENSION_CONFIG && !r.resource_names.is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("{kind:?} subscribed to ECDS\n{}", proxy.log_report()));
    let asked = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused_while_warming = probe(addr, "/").await.is_err();
    // Polled until it answers; the first answer is the one without the config.
    let mut first = None;
    while asked.elapsed() < INITIAL {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            weir_tests::get_host(addr, "localhost", "/"),
        )
        .await;
        if let Ok(Ok(resp)) = answer {
            first = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answered_after = asked.elapsed();
    let first = first.unwrap_or_else(|| panic!("{kind:?} never answered\n{}", proxy.log_report()));
    eprintln!(
        "{kind:?}: answered {} after {answered_after:?}",
        first.status
    );
    let without_config = (
        first.status,
        first.header("content-length").to_owned(),
        first.text(),
    );
    let without_config_route_off = probe(addr, "/off")
        .await
        .unwrap_or_else(|e| panic!("{kind:?} answers /off: {e}\n{}", proxy.log_report()));
    server.set(ECDS_FILTER, &ecds(&module, "late"));
    until_config(addr, "/", "late", INITIAL, true)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{kind:?} serves the late config: {e}\n{}",
                proxy.log_report()
            )
        });
    let with_config = probe(addr, "/").await.expect("an answer");
    let logged = weir_tests::wait_for_lines(&log, 1, INITIAL).await[0].clone();
    drop(proxy);
    MissingOutcome {
        refused_while_warming,
        answered_after_the_timeout: answered_after + Duration::from_millis(700) >= ECDS_TIMEOUT,
        without_config,
        without_config_route_off,
        with_config,
        logged,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_whose_ecds_config_does_not_come_warms_then_answers_500_as_envoy_does() {
    let envoy = missing_config_scenario(Kind::Envoy).await;
    let weir = missing_config_scenario(Kind::Weir).await;
    assert_eq!(
        weir,
        MissingOutcome {
            refused_while_warming: true,
            answered_after_the_timeout: true,
            without_config: (500, "0".into(), String::new()),
            without_config_route_off: (200, String::new()),
            with_config: (200, "late".into()),
            logged: "500 NFCF ".into(),
        },
        "weir"
    );
    assert_eq!(weir, envoy, "weir (left) and Envoy 1.40 (right)");
}

/// The admin answers compared in the ECDS dump scenario, asked first while the filter's
/// config has not come (the listener warming), then once it serves.
const ECDS_DUMPS: &[&str] = &[
    "/config_dump?mask=ecds_filters",
    "/config_dump",
    "/config_dump?resource=ecds_filters",
    "/config_dump?resource=ecds_filters&mask=version_info",
    "/config_dump?mask=ecds_filters",
];

/// `path` on the admin of `proxy`, as JSON.
async fn admin_json(kind: Kind, proxy: &Proxy, path: &str) -> serde_json::Value {
    let (status, body) = match proxy {
        Proxy::Weir(weir) => weir.admin_get(path).await,
        Proxy::Envoy(envoy) => envoy.admin_get(path).await.unwrap_or_default(),
    };
    assert_eq!(status, 200, "{kind:?} {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{kind:?} {path}: {e}: {body}"))
}

/// A dump reduced to what weir and Envoy share: each config's `@type` (those weir has: Envoy
/// adds scoped routes and secrets), and of the ECDS entries, their keys, `@type`s, names and
/// versions (not `last_updated` nor the module's path).
fn ecds_shape(dump: &serde_json::Value) -> serde_json::Value {
    const SHARED: &[&str] = &[
        "BootstrapConfigDump",
        "ClustersConfigDump",
        "EcdsConfigDump",
        "ListenersConfigDump",
        "RoutesConfigDump",
    ];
    let configs = dump["configs"].as_array().cloned().unwrap_or_default();
    let shape = |entry: &serde_json::Value| {
        let mut keys: Vec<&String> = entry
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        keys.sort();
        serde_json::json!({
            "keys": keys,
            "@type": entry["@type"],
            "version_info": entry["version_info"],
            "ecds_filter": {
                "@type": entry["ecds_filter"]["@type"],
                "name": entry["ecds_filter"]["name"],
                "typed_config": entry["ecds_filter"]["typed_config"]["@type"],
            },
        })
    };
    let types: Vec<serde_json::Value> = configs
        .iter()
        .filter(|config| {
            config["@type"].as_str().is_some_and(|t| {
                SHARED.iter().any(|shared| {
                    t.ends_with(&format!(".{shared}")) || t.contains(".EcdsConfigDump.")
                })
            })
        })
        .map(|config| {
            let mut keys: Vec<&String> = config
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            keys.sort();
            let is_ecds = config["@type"]
                .as_str()
                .is_some_and(|t| t.contains("EcdsConfigDump"));
            if !is_ecds {
                return serde_json::json!({ "@type": config["@type"] });
            }
            if config.get("ecds_filter").is_some() || config.get("version_info").is_some() {
                return shape(config);
            }
            let filters: Vec<serde_json::Value> = config["ecds_filters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(shape)
                .collect();
            serde_json::json!({ "@type": config["@type"], "keys": keys, "ecds_filters": filters })
        })
        .collect();
    serde_json::json!(types)
}

/// The [`ECDS_DUMPS`] of a proxy whose listener's filter takes its config over ECDS: the
/// first before the config came, the others once `v1` serves; each reduced by
/// [`ecds_shape`].
async fn ecds_dump_scenario(kind: Kind) -> Vec<serde_json::Value> {
    let module = wasm::fixture("headers");
    let server = XdsServer::start().await;
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    server.set(
        "dumped",
        &listener(
            "dumped",
            port,
            vec![discovered(ECDS_FILTER)],
            vec![direct("/")],
        ),
    );
    let proxy = Proxy::spawn(kind, &server);
    server
        .wait_for_request(INITIAL, 0, |r| {
            r.type_url == type_url::EXTENSION_CONFIG && !r.resource_names.is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("{kind:?} subscribed to ECDS\n{}", proxy.log_report()));
    // The subscription is sent once the listener is read; its dump is there by then.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut dumps = vec![ecds_shape(&admin_json(kind, &proxy, ECDS_DUMPS[0]).await)];
    server.set(ECDS_FILTER, &ecds(&module, "v1"));
    until_config(addr, "/", "v1", INITIAL, false)
        .await
        .unwrap_or_else(|e| panic!("{kind:?} serves ECDS v1: {e}\n{}", proxy.log_report()));
    for path in &ECDS_DUMPS[1..] {
        dumps.push(ecds_shape(&admin_json(kind, &proxy, path).await));
    }
    drop(proxy);
    dumps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecds_configs_are_in_config_dump_as_envoys() {
    let weir = ecds_dump_scenario(Kind::Weir).await;
    let ecds_type = "type.googleapis.com/envoy.admin.v3.EcdsConfigDump";
    assert_eq!(
        weir[0],
        serde_json::json!([{ "@type": ecds_type, "keys": ["@type"], "ecds_filters": [] }]),
        "weir, before the config came"
    );
    assert_eq!(weir[1][2]["@type"], ecds_type, "weir: {}", weir[1]);
    assert_eq!(
        weir[1][2]["ecds_filters"][0]["version_info"], "1",
        "weir: {}",
        weir[1]
    );
    assert_eq!(
        weir[1][2]["ecds_filters"][0]["ecds_filter"]["name"],
        ECDS_FILTER
    );
    let envoy = ecds_dump_scenario(Kind::Envoy).await;
    for ((path, weir), envoy) in ECDS_DUMPS.iter().zip(&weir).zip(&envoy) {
        assert_eq!(
            weir, envoy,
            "{path}: weir (left) and Envoy 1.40 (right) differ"
        );
    }
}

/// Two HTTP filters whose ECDS configs do not come (1 s): `/` reaches the first, and a route
/// that turns the first off reaches the second, which answers 500 as well (each missing
/// config is enforced); a route that turns both off is served. Returns the statuses.
async fn two_missing_scenario(kind: Kind) -> Vec<u16> {
    let server = XdsServer::start().await;
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(1);
    let mut both_off = per_filter("first", true);
    both_off.extend(per_filter("second", true));
    server.set(
        "two",
        &listener(
            "two",
            port,
            vec![
                discovered_with_timeout("first", timeout),
                discovered_with_timeout("second", timeout),
            ],
            vec![
                Route {
                    typed_per_filter_config: per_filter("first", true),
                    ..direct("/first-off")
                },
                Route {
                    typed_per_filter_config: both_off,
                    ..direct("/both-off")
                },
                direct("/"),
            ],
        ),
    );
    let proxy = Proxy::spawn(kind, &server);
    let start = Instant::now();
    let first = loop {
        if let Ok((status, _)) = probe(addr, "/").await {
            break status;
        }
        assert!(
            start.elapsed() < INITIAL,
            "{kind:?} never answered\n{}",
            proxy.log_report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut statuses = vec![first];
    for path in ["/first-off", "/both-off"] {
        let (status, _) = probe(addr, path)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} answers {path}: {e}\n{}", proxy.log_report()));
        statuses.push(status);
    }
    drop(proxy);
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_whose_ecds_config_is_missing_answers_500_as_envoy_does() {
    let weir = two_missing_scenario(Kind::Weir).await;
    assert_eq!(weir, [500, 500, 200], "weir");
    let envoy = two_missing_scenario(Kind::Envoy).await;
    assert_eq!(weir, envoy, "weir (left) and Envoy 1.40 (right)");
}
