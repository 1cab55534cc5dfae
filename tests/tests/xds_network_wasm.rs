//! Network (L4) Wasm filters whose config comes over ECDS, in weir and in Envoy 1.40 from the
//! same management server with the same raw TCP client: an LDS tcp_proxy listener whose
//! `envoy.filters.network.wasm` filter has `config_discovery`. Until the config comes the
//! listener warms (its port refuses connections); once its source's `initial_fetch_timeout`
//! has passed without it, every connection is closed as it is accepted, before a byte is
//! proxied, and counted (`network_extension_config_missing`); once the config comes the
//! filter's effect is on the wire (tcp-guard rewrites what the echo server sends back), an
//! ECDS update changes it for new connections, and an ECDS resource of a type the filter does
//! not list is NACKed while the config in force keeps serving; `/config_dump` shows the
//! config in an `EcdsConfigDump` as Envoy's, and `/stats` counts it all under
//! `extension_config_discovery.network_filter.<name>.*` as Envoy's. A static listener's filter
//! asks for its config the same way and refuses connections until it comes. Two filters
//! sharing an ECDS name with different `initial_fetch_timeout`s each wait their own.
//!
//! The module is `filters/tcp-guard` (built on weir-sdk; Envoy's V8 runs it too).

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{ExtensionConfigSource, TypedExtensionConfig};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm as HttpWasm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::PluginConfig;
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use weir_tests::envoy::Envoy;
use weir_tests::tcp_server::{Mode, TcpServer};
use weir_tests::xds_resources::{
    AdsApi, address, ads_bootstrap, ads_config_source, any, load_assignment, local_wasm_plugin,
};
use weir_tests::xds_server::{XdsServer, type_url};
use weir_tests::{Weir, free_port, wasm};

/// Bounds every wait for a config to be served.
const INITIAL: Duration = Duration::from_secs(15);
/// An update must be applied within this.
const UPDATE: Duration = Duration::from_secs(5);
/// The ECDS source's initial fetch timeout: the listener warms this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

const NETWORK_WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm";
/// The name of the network filter whose config comes over ECDS, and of its ECDS resource.
const GUARD: &str = "guard";

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
    fn spawn(kind: Kind, server: &XdsServer, api: AdsApi) -> Proxy {
        let bootstrap = ads_bootstrap("wasm-net-1", free_port(), server.addr(), api);
        match kind {
            Kind::Weir => Proxy::Weir(Box::new(Weir::spawn(&bootstrap, &["--concurrency", "1"]))),
            Kind::Envoy => Proxy::Envoy(Box::new(Envoy::spawn(&bootstrap, "info"))),
        }
    }

    /// The `EcdsConfigDump`s of its `/config_dump`, each entry without `last_updated` and
    /// its Wasm filter's `config` (module paths, defaults that differ).
    async fn ecds_dump(&self) -> Vec<serde_json::Value> {
        let body = match self {
            Proxy::Weir(weir) => weir.admin_get("/config_dump").await.1,
            Proxy::Envoy(envoy) => envoy.admin_get("/config_dump").await.unwrap_or_default().1,
        };
        let dump: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let configs = dump["configs"].as_array().cloned().unwrap_or_default();
        configs
            .into_iter()
            .filter(|config| {
                config["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("EcdsConfigDump"))
            })
            .map(|mut config| {
                if let Some(entries) = config["ecds_filters"].as_array_mut() {
                    for entry in entries {
                        if let Some(entry) = entry.as_object_mut() {
                            entry.remove("last_updated");
                        }
                        if let Some(typed) = entry["ecds_filter"]["typed_config"].as_object_mut() {
                            typed.remove("config");
                        }
                    }
                }
                config
            })
            .collect()
    }

    /// Whether its admin's `/ready` answers 200 (the initial fetch is over).
    async fn ready(&self) -> bool {
        match self {
            Proxy::Weir(weir) => weir_tests::get_host(weir.admin, "localhost", "/ready")
                .await
                .is_ok_and(|resp| resp.status == 200),
            Proxy::Envoy(envoy) => envoy
                .admin_get("/ready")
                .await
                .is_some_and(|(status, _)| status == 200),
        }
    }

    fn log_report(&self) -> String {
        match self {
            Proxy::Weir(weir) => weir.log_report(),
            Proxy::Envoy(envoy) => envoy.log_report(),
        }
    }

    /// Its `extension_config_discovery.*` stats from `/stats`, by name: the gauges whose
    /// values are a clock or a hash (`update_time`, `version`) read `set` or `0`; the
    /// histogram `update_duration` (not in weir's `/stats`) is left out.
    async fn ecds_stats(&self) -> BTreeMap<String, String> {
        let path = "/stats?filter=%5Eextension_config_discovery%5C.";
        let text = match self {
            Proxy::Weir(weir) => weir.admin_get(path).await.1,
            Proxy::Envoy(envoy) => envoy.admin_get(path).await.unwrap_or_default().1,
        };
        text.lines()
            .filter_map(|line| line.split_once(": "))
            .filter(|(name, _)| !name.ends_with(".update_duration"))
            .map(|(name, value)| {
                let clock_or_hash = name.ends_with(".update_time") || name.ends_with(".version");
                let value = if clock_or_hash && value != "0" {
                    "set"
                } else {
                    value
                };
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    /// How many connections the listener on `port` closed because a network filter's
    /// config is missing (weir's `weir_listener_network_extension_config_missing`, Envoy's
    /// `listener.<address>.network_extension_config_missing`).
    async fn missing_config_closes(&self, port: u16) -> f64 {
        let label = format!("127.0.0.1_{port}");
        match self {
            Proxy::Weir(weir) => weir
                .stats()
                .await
                .get(
                    "weir_listener_network_extension_config_missing",
                    &[("listener_address", label.as_str())],
                )
                .unwrap_or(0.0),
            Proxy::Envoy(envoy) => {
                let name = format!("listener.{label}.network_extension_config_missing");
                let (_, body) = envoy
                    .admin_get(&format!("/stats?filter={name}"))
                    .await
                    .unwrap_or_default();
                body.lines()
                    .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0.0)
            }
        }
    }
}

/// The plugin config running tcp-guard with plugin `configuration`.
fn plugin(module: &Path, configuration: &str) -> PluginConfig {
    local_wasm_plugin("tcp_guard", module, configuration)
}

/// tcp-guard's configuration: the client's bytes must start with `HELLO ` (stripped), and
/// `ping` coming back from the server becomes `to`.
fn guard_configuration(to: &str) -> String {
    format!(
        r#"{{"prefix": "HELLO ", "strip_prefix": true, "rewrite_upstream": {{"from": "ping", "to": "{to}"}}}}"#
    )
}

/// The ECDS resource [`GUARD`]: tcp-guard rewriting `ping` to `to`.
fn ecds(module: &Path, to: &str) -> TypedExtensionConfig {
    TypedExtensionConfig {
        name: GUARD.into(),
        typed_config: Some(any(&Wasm {
            config: Some(plugin(module, &guard_configuration(to))),
        })),
    }
}

/// A STATIC cluster `name` with one host at `addr`, for CDS.
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

/// A tcp_proxy listener `name` on 127.0.0.1:`port` to cluster `upstream`, with the network
/// filter [`GUARD`] before it, its config over ECDS (network Wasm only, the source's initial
/// fetch timeout [`FETCH_TIMEOUT`]).
fn listener(name: &str, port: u16) -> Listener {
    listener_with_timeout(name, port, FETCH_TIMEOUT)
}

/// [`listener`] with the ECDS source's initial fetch timeout `timeout`.
fn listener_with_timeout(name: &str, port: u16, timeout: Duration) -> Listener {
    let mut source = ads_config_source();
    source.initial_fetch_timeout = Some(ProtoDuration {
        seconds: timeout.as_secs() as i64,
        nanos: 0,
    });
    let guard = Filter {
        name: GUARD.into(),
        config_type: Some(filter::ConfigType::ConfigDiscovery(ExtensionConfigSource {
            config_source: Some(source),
            type_urls: vec![NETWORK_WASM_TYPE.into()],
            ..ExtensionConfigSource::default()
        })),
    };
    let proxy = Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&TcpProxy {
            stat_prefix: name.into(),
            cluster_specifier: Some(ClusterSpecifier::Cluster("upstream".into())),
            ..TcpProxy::default()
        }))),
    };
    Listener {
        name: name.into(),
        address: Some(address(SocketAddr::from(([127, 0, 0, 1], port)))),
        filter_chains: vec![FilterChain {
            filters: vec![guard, proxy],
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}

/// What one connection saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// The connection was refused (nothing listens: the listener warms).
    Refused,
    /// The proxy closed it (EOF or reset) without a byte.
    Closed,
    /// The bytes that came back before the end.
    Bytes(String),
}

/// Connects to `port`, sends `data`, ends its side and reads to the end.
async fn exchange(port: u16, data: &[u8]) -> Seen {
    let connect = tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(("127.0.0.1", port)),
    );
    let mut stream = match connect.await {
        Ok(Ok(stream)) => stream,
        _ => return Seen::Refused,
    };
    // The proxy may have closed it already: a failed write is part of what is seen.
    let _ = stream.write_all(data).await;
    let _ = stream.shutdown().await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    if out.is_empty() {
        Seen::Closed
    } else {
        Seen::Bytes(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Exchanges `HELLO ping` on `port` until the answer is `want`, for at most `limit`;
/// returns how long it took, or the last answer.
async fn until_seen(port: u16, want: &Seen, limit: Duration) -> Result<Duration, Seen> {
    let start = Instant::now();
    loop {
        let seen = exchange(port, b"HELLO ping").await;
        if &seen == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= limit {
            return Err(seen);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one proxy did, compared between weir and Envoy.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// The ECDS names it asked for.
    ecds_names: Vec<String>,
    /// A connection while the config had not come, before the fetch timeout.
    warming: Seen,
    /// A connection after the fetch timeout, the config still missing.
    missing: Seen,
    /// Whether those closes were counted.
    missing_counted: bool,
    /// Once the config came: a client with the right prefix, and one without.
    served: Seen,
    wrong_prefix: Seen,
    /// After an ECDS update.
    updated: Seen,
    /// The `EcdsConfigDump`s of `/config_dump` then, without `last_updated` and the plugin's
    /// config.
    ecds_dump: Vec<serde_json::Value>,
    /// Whether a resource of a type the filter does not list was NACKed.
    nacked: bool,
    /// What answered after the NACK.
    after_nack: Seen,
    /// Its `extension_config_discovery.network_filter.guard.*` stats then.
    ecds_stats: BTreeMap<String, String>,
}

async fn scenario(kind: Kind, api: AdsApi) -> Outcome {
    let module = wasm::filter("tcp_guard");
    let echo = TcpServer::start(Mode::Echo).await;
    let server = XdsServer::start().await;
    let port = free_port();
    server.set("upstream", &static_cluster("upstream", echo.addr));
    server.set("tcp", &listener("tcp", port));
    let proxy = Proxy::spawn(kind, &server, api);
    let report = |what: &str, detail: &dyn std::fmt::Debug| -> String {
        format!(
            "{kind:?} {api:?}: {what}: {detail:?}\n{}",
            proxy.log_report()
        )
    };

    // Subscribed by the filter's name; the listener warms meanwhile.
    let request = server
        .wait_for_request(INITIAL, 0, |r| {
            r.type_url == type_url::EXTENSION_CONFIG && !r.resource_names.is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("{}", report("subscribed to ECDS", &server.requests())));
    let asked = Instant::now();
    let warming = exchange(port, b"HELLO ping").await;

    // Past the fetch timeout the listener accepts, and closes each connection at once.
    let missing = until_seen(port, &Seen::Closed, INITIAL)
        .await
        .map(|_| Seen::Closed)
        .unwrap_or_else(|seen| seen);
    eprintln!(
        "{kind:?} {api:?}: closing connections {:?} after the ECDS request",
        asked.elapsed()
    );
    let missing_counted = proxy.missing_config_closes(port).await >= 1.0;

    // The config comes: tcp-guard's rewrite is on the wire.
    server.set(GUARD, &ecds(&module, "v1"));
    let served_in = until_seen(port, &Seen::Bytes("v1".into()), UPDATE)
        .await
        .unwrap_or_else(|seen| panic!("{}", report("serves ECDS v1", &seen)));
    eprintln!("{kind:?} {api:?}: ECDS config v1 served after {served_in:?}");
    let served = exchange(port, b"HELLO ping").await;
    let wrong_prefix = exchange(port, b"GET / HTTP/1.1\r\n\r\n").await;

    // An update changes it for new connections.
    server.set(GUARD, &ecds(&module, "v2"));
    let updated_in = until_seen(port, &Seen::Bytes("v2".into()), UPDATE)
        .await
        .unwrap_or_else(|seen| panic!("{}", report("applies ECDS v2", &seen)));
    eprintln!("{kind:?} {api:?}: ECDS update applied in {updated_in:?}");
    let updated = exchange(port, b"HELLO ping").await;
    let ecds_dump = proxy.ecds_dump().await;

    // An HTTP Wasm config (a type the filter does not list) is NACKed; v2 keeps serving.
    let from = server.requests().len();
    server.set(
        GUARD,
        &TypedExtensionConfig {
            name: GUARD.into(),
            typed_config: Some(any(&HttpWasm {
                config: Some(plugin(&module, &guard_configuration("v3"))),
            })),
        },
    );
    let nack = server
        .wait_for_request(INITIAL, from, |r| {
            r.type_url == type_url::EXTENSION_CONFIG && r.is_nack()
        })
        .await;
    if let Some(nack) = &nack {
        eprintln!("{kind:?} {api:?}: NACK {:?}", nack.error_detail);
        let (_, message) = nack.error_detail.clone().unwrap_or_default();
        assert!(
            message.contains("envoy.extensions.filters.http.wasm.v3.Wasm"),
            "{kind:?}: {message}"
        );
    }
    let after_nack = exchange(port, b"HELLO ping").await;
    let ecds_stats = proxy.ecds_stats().await;
    drop(proxy);
    Outcome {
        ecds_names: request.resource_names,
        warming,
        missing,
        missing_counted,
        served,
        wrong_prefix,
        updated,
        ecds_dump,
        nacked: nack.is_some(),
        after_nack,
        ecds_stats,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_wasm_filter_over_ecds_warms_closes_serves_and_updates_as_envoy_does() {
    for api in AdsApi::BOTH {
        let weir = scenario(Kind::Weir, api).await;
        let expected = Outcome {
            ecds_names: vec![GUARD.to_string()],
            warming: Seen::Refused,
            missing: Seen::Closed,
            missing_counted: true,
            served: Seen::Bytes("v1".into()),
            wrong_prefix: Seen::Closed,
            updated: Seen::Bytes("v2".into()),
            ecds_dump: vec![serde_json::json!({
                "@type": "type.googleapis.com/envoy.admin.v3.EcdsConfigDump",
                "ecds_filters": [{
                    "ecds_filter": {
                        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                        "name": GUARD,
                        "typed_config": {"@type": NETWORK_WASM_TYPE}
                    },
                    "version_info": "2"
                }]
            })],
            nacked: true,
            after_nack: Seen::Bytes("v2".into()),
            // The start, the timeout, v1, v2, the NACK (counted twice over delta, as Envoy
            // counts the attempt before applying a delta update and again on its refusal).
            ecds_stats: [
                ("config_conflict", "0"),
                ("config_fail", "2"),
                ("config_reload", "2"),
                ("init_fetch_timeout", "1"),
                (
                    "update_attempt",
                    if api == AdsApi::Grpc { "5" } else { "6" },
                ),
                ("update_failure", "0"),
                ("update_rejected", "1"),
                ("update_success", "2"),
                ("update_time", "set"),
                ("version", "set"),
                ("version_text", "\"2\""),
            ]
            .into_iter()
            .map(|(stat, value)| {
                (
                    format!("extension_config_discovery.network_filter.{GUARD}.{stat}"),
                    value.to_owned(),
                )
            })
            .collect(),
        };
        assert_eq!(weir, expected, "{api:?}: weir");
        let envoy = scenario(Kind::Envoy, api).await;
        assert_eq!(
            weir, envoy,
            "{api:?}: weir (left) and Envoy 1.40 (right) differ"
        );
    }
}

/// The listener of [`listener`] written in the bootstrap's `static_resources` (JSON), to
/// cluster `upstream` there too, with no fetch timeout (it waits for the config).
fn static_listener_json(port: u16, upstream: SocketAddr) -> (serde_json::Value, serde_json::Value) {
    let listener = serde_json::json!({
        "name": "tcp-static",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [
            {"name": GUARD, "config_discovery": {
                "config_source": {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"},
                "type_urls": [NETWORK_WASM_TYPE]
            }},
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "tcp-static",
                "cluster": "static-upstream"
            }}
        ]}]
    });
    let cluster = serde_json::json!({
        "name": "static-upstream",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "static-upstream", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {
                "address": upstream.ip().to_string(), "port_value": upstream.port()
            }}}}
        ]}]}
    });
    (listener, cluster)
}

/// A static listener's network filter: it asks for its config by name, refuses connections
/// until the config comes, then serves it.
async fn static_scenario(kind: Kind) -> (Vec<String>, Seen, Seen) {
    let module = wasm::filter("tcp_guard");
    let echo = TcpServer::start(Mode::Echo).await;
    let server = XdsServer::start().await;
    let port = free_port();
    let mut bootstrap = ads_bootstrap("wasm-net-2", free_port(), server.addr(), AdsApi::Grpc);
    let (listener, cluster) = static_listener_json(port, echo.addr);
    bootstrap["static_resources"]["listeners"] = serde_json::json!([listener]);
    bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
        .push(cluster);
    let proxy = match kind {
        Kind::Weir => Proxy::Weir(Box::new(Weir::spawn(&bootstrap, &["--concurrency", "1"]))),
        Kind::Envoy => Proxy::Envoy(Box::new(Envoy::spawn(&bootstrap, "info"))),
    };
    let request = server
        .wait_for_request(INITIAL, 0, |r| {
            r.type_url == type_url::EXTENSION_CONFIG && !r.resource_names.is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("{kind:?} subscribed to ECDS\n{}", proxy.log_report()));
    let waiting = exchange(port, b"HELLO ping").await;
    server.set(GUARD, &ecds(&module, "v1"));
    let served = until_seen(port, &Seen::Bytes("v1".into()), INITIAL)
        .await
        .map(|_| Seen::Bytes("v1".into()))
        .unwrap_or_else(|seen| seen);
    drop(proxy);
    (request.resource_names, waiting, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_listener_takes_its_network_filter_config_over_ecds_as_envoy_does() {
    let weir = static_scenario(Kind::Weir).await;
    assert_eq!(
        weir,
        (
            vec![GUARD.to_string()],
            Seen::Refused,
            Seen::Bytes("v1".into())
        ),
        "weir"
    );
    let envoy = static_scenario(Kind::Envoy).await;
    assert_eq!(weir, envoy, "weir (left) and Envoy 1.40 (right) differ");
}

/// Two listeners whose filters share the ECDS name [`GUARD`], one source waiting 2 s and the
/// other 6 s, sent once the proxy is initialized (during the initial fetch Envoy starts no
/// listener before all of them warmed): what each does 4 s after the ECDS request (the first
/// closes connections, the second still warms), then 8 s after it (both close).
async fn shared_name_scenario(kind: Kind) -> [Seen; 4] {
    let echo = TcpServer::start(Mode::Echo).await;
    let server = XdsServer::start().await;
    let (fast, slow) = (free_port(), free_port());
    server.set("upstream", &static_cluster("upstream", echo.addr));
    let proxy = Proxy::spawn(kind, &server, AdsApi::Grpc);
    let start = Instant::now();
    while !proxy.ready().await {
        assert!(
            start.elapsed() < INITIAL,
            "{kind:?} ready\n{}",
            proxy.log_report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let from = server.requests().len();
    server.set_many(vec![
        (
            "fast".to_string(),
            any(&listener_with_timeout("fast", fast, Duration::from_secs(2))),
        ),
        (
            "slow".to_string(),
            any(&listener_with_timeout("slow", slow, Duration::from_secs(6))),
        ),
    ]);
    server
        .wait_for_request(INITIAL, from, |r| {
            r.type_url == type_url::EXTENSION_CONFIG && !r.resource_names.is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("{kind:?} subscribed to ECDS\n{}", proxy.log_report()));
    let asked = Instant::now();
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(asked.elapsed())).await;
    let at_4s = [
        exchange(fast, b"HELLO ping").await,
        exchange(slow, b"HELLO ping").await,
    ];
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(asked.elapsed())).await;
    let at_8s = [
        exchange(fast, b"HELLO ping").await,
        exchange(slow, b"HELLO ping").await,
    ];
    drop(proxy);
    [
        at_4s[0].clone(),
        at_4s[1].clone(),
        at_8s[0].clone(),
        at_8s[1].clone(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_sharing_an_ecds_name_each_wait_their_own_timeout_as_envoy() {
    let weir = shared_name_scenario(Kind::Weir).await;
    assert_eq!(
        weir,
        [Seen::Closed, Seen::Refused, Seen::Closed, Seen::Closed],
        "weir"
    );
    let envoy = shared_name_scenario(Kind::Envoy).await;
    assert_eq!(weir, envoy, "weir (left) and Envoy 1.40 (right) differ");
}

/// What a proxy did with two listeners of its initial LDS response, sharing the ECDS name
/// [`GUARD`] (which never comes), one source waiting 2 s and the other 6 s.
#[derive(Debug, PartialEq, Eq)]
struct InitialOutcome {
    /// 4 s after the ECDS request: both ports, and whether `/ready` said 200.
    at_4s: [Seen; 2],
    ready_at_4s: bool,
    /// 8 s after it.
    at_8s: [Seen; 2],
    ready_at_8s: bool,
}

/// The initial listeners start together: as Envoy's server, which starts no listener before
/// every initial listener has warmed (or given up), the 2 s listener refuses connections
/// until the 6 s one has given up too. Returns what was seen and how long after the ECDS
/// request the 2 s listener first accepted.
async fn initial_listeners_scenario(kind: Kind) -> (InitialOutcome, Duration) {
    let echo = TcpServer::start(Mode::Echo).await;
    let server = XdsServer::start().await;
    let (fast, slow) = (free_port(), free_port());
    server.set("upstream", &static_cluster("upstream", echo.addr));
    server.set_many(vec![
        (
            "fast".to_string(),
            any(&listener_with_timeout("fast", fast, Duration::from_secs(2))),
        ),
        (
            "slow".to_string(),
            any(&listener_with_timeout("slow", slow, Duration::from_secs(6))),
        ),
    ]);
    let proxy = Proxy::spawn(kind, &server, AdsApi::Grpc);
    server
        .wait_for_request(INITIAL, 0, |r| {
            r.type_url == type_url::EXTENSION_CONFIG && !r.resource_names.is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("{kind:?} subscribed to ECDS\n{}", proxy.log_report()));
    let asked = Instant::now();
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(asked.elapsed())).await;
    let at_4s = [
        exchange(fast, b"HELLO ping").await,
        exchange(slow, b"HELLO ping").await,
    ];
    let ready_at_4s = proxy.ready().await;
    // When the 2 s listener first accepts (bounded: 15 s after the request).
    let opened = loop {
        if exchange(fast, b"HELLO ping").await != Seen::Refused {
            break asked.elapsed();
        }
        assert!(
            asked.elapsed() < INITIAL,
            "{kind:?}: the 2 s listener never accepted\n{}",
            proxy.log_report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(asked.elapsed())).await;
    let at_8s = [
        exchange(fast, b"HELLO ping").await,
        exchange(slow, b"HELLO ping").await,
    ];
    let ready_at_8s = proxy.ready().await;
    drop(proxy);
    let outcome = InitialOutcome {
        at_4s,
        ready_at_4s,
        at_8s,
        ready_at_8s,
    };
    (outcome, opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_listeners_start_together_once_all_warmed_as_envoy() {
    let (weir, weir_opened) = initial_listeners_scenario(Kind::Weir).await;
    eprintln!("weir: {weir:?}, the 2 s listener accepted {weir_opened:?} after the ECDS request");
    assert_eq!(
        weir,
        InitialOutcome {
            at_4s: [Seen::Refused, Seen::Refused],
            ready_at_4s: false,
            at_8s: [Seen::Closed, Seen::Closed],
            ready_at_8s: true,
        },
        "weir"
    );
    let (envoy, envoy_opened) = initial_listeners_scenario(Kind::Envoy).await;
    eprintln!(
        "envoy: {envoy:?}, the 2 s listener accepted {envoy_opened:?} after the ECDS request"
    );
    assert_eq!(weir, envoy, "weir (left) and Envoy 1.40 (right) differ");
    // Both open the 2 s listener when the 6 s fetch gives up, not when its own does.
    for (who, opened) in [("weir", weir_opened), ("envoy", envoy_opened)] {
        assert!(
            opened >= Duration::from_millis(5500) && opened < Duration::from_secs(8),
            "{who}: the 2 s listener accepted {opened:?} after the ECDS request"
        );
    }
}
