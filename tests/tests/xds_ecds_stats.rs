//! Envoy's per-extension-config ECDS stats, in weir and in Envoy 1.40 driven by the same
//! management server: `extension_config_discovery.http_filter.<name>.*` (`config_reload`,
//! `config_fail`, `config_conflict`, and the xDS subscription's `update_attempt`,
//! `update_success`, `update_rejected`, `update_failure`, `init_fetch_timeout`) through an
//! initial ECDS config, an update, an update NACKed (a type the filter does not list), and the
//! same config sent again under a new version (applied, but nothing to reload); a second
//! filter whose config never comes counts its initial fetch timeout, and the NACK too (as
//! every ECDS subscription of the stream does in Envoy); a listener added later whose filter
//! does not list the type of the config in force counts a conflict (and runs that filter
//! without a config), after which a new config that filter cannot take is refused. The LDS
//! and CDS subscriptions' `listener_manager.lds.*` and `cluster_manager.cds.*` (`update_*`,
//! `init_fetch_timeout`, `version`, `version_text`) are compared too, through a CDS NACK at
//! the end. Both `GRPC` and `DELTA_GRPC`.
//!
//! The module is the `headers` fixture (the official proxy-wasm SDK, which Envoy's V8 loads):
//! it answers its plugin configuration in `x-wasm-config`.

use envoy_types::pb::envoy::config::core::v3::{ExtensionConfigSource, TypedExtensionConfig};
use envoy_types::pb::envoy::config::listener::v3::Listener;
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
use envoy_types::pb::google::protobuf::{BoolValue, Duration as ProtoDuration};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use weir_tests::xds_resources::{
    AdsApi, ads_bootstrap, ads_config_source, any, eds_cluster, listener_with_hcm, local_wasm_plugin,
};
use weir_tests::side_by_side::{Kind, Proxy};
use weir_tests::xds_server::{XdsServer, type_url};
use weir_tests::{free_port, get_host, wasm};

/// Bounds every wait for a config to be served or a request to reach the server.
const LIMIT: Duration = Duration::from_secs(15);

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const HEALTH_CHECK_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck";
/// The filter whose config comes over ECDS, and its ECDS resource.
const SERVED: &str = "headers-ecds";
/// A filter whose ECDS config never comes.
const NEVER: &str = "never-ecds";
/// How long [`NEVER`]'s source waits for its first config.
const NEVER_TIMEOUT: Duration = Duration::from_secs(1);

/// What a scenario reads of a proxy.
trait EcdsStats {
    /// The proxy's ECDS and LDS/CDS subscription stats by name, clock values normalised.
    async fn ecds_stats(&self) -> BTreeMap<String, String>;
}

impl EcdsStats for Proxy {
    /// Its `extension_config_discovery.*` stats from `/stats` (Envoy's text format), and
    /// the LDS and CDS subscriptions' (`update_*`, `init_fetch_timeout`, `version*`), by
    /// name. The gauges whose values are a clock (`update_time`) read `set` or `0` (a
    /// `version` is compared as it is: Envoy's hash of the version text); the histogram `update_duration` is left out (weir's `/stats` lists no
    /// histograms; it is on its `/stats/prometheus`).
    async fn ecds_stats(&self) -> BTreeMap<String, String> {
        let text = self
            .admin(
                "/stats?filter=%5E%28extension_config_discovery%5C.%7C%28listener_manager%5C.lds%7Ccluster_manager%5C.cds%29%5C.%28init_fetch_timeout%7Cupdate_%7Cversion%29%29",
            )
            .await;
        text.lines()
            .filter_map(|line| line.split_once(": "))
            .filter(|(name, _)| !name.ends_with(".update_duration"))
            .map(|(name, value)| {
                let value = if name.ends_with(".update_time") && value != "0" {
                    "set"
                } else {
                    value
                };
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }
}

/// An HTTP filter whose config comes over ECDS, of `type_url` only, its source giving up on
/// the first fetch after `timeout` (`None`: the default, 15 s).
fn discovered(name: &str, timeout: Option<Duration>, type_url: &str) -> HttpFilter {
    let mut source = ads_config_source();
    source.initial_fetch_timeout = timeout.map(|timeout| ProtoDuration {
        seconds: timeout.as_secs() as i64,
        nanos: timeout.subsec_nanos() as i32,
    });
    HttpFilter {
        name: name.into(),
        config_type: Some(ConfigType::ConfigDiscovery(ExtensionConfigSource {
            config_source: Some(source),
            type_urls: vec![type_url.into()],
            ..ExtensionConfigSource::default()
        })),
        ..HttpFilter::default()
    }
}

/// A listener `name` on 127.0.0.1:`port` with `filters` before the router; its one route
/// answers 200 itself with [`NEVER`] turned off where it is among them (so a request passes
/// the filter whose config never comes).
fn listener(name: &str, port: u16, filters: Vec<HttpFilter>) -> Listener {
    let turned_off = filters.iter().any(|filter| filter.name == NEVER).then(|| {
        (
            NEVER.to_owned(),
            any(&FilterConfig {
                disabled: true,
                ..FilterConfig::default()
            }),
        )
    });
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..RouteMatch::default()
        }),
        action: Some(Action::DirectResponse(DirectResponseAction {
            status: 200,
            ..DirectResponseAction::default()
        })),
        typed_per_filter_config: turned_off.into_iter().collect(),
        ..Route::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: format!("{name}-routes"),
            virtual_hosts: vec![VirtualHost {
                name: "all".into(),
                domains: vec!["*".into()],
                routes: vec![route],
                ..VirtualHost::default()
            }],
            ..RouteConfiguration::default()
        })),
        http_filters: filters
            .into_iter()
            .chain([HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(ConfigType::TypedConfig(any(&Router::default()))),
                ..HttpFilter::default()
            }])
            .collect(),
        ..HttpConnectionManager::default()
    };
    listener_with_hcm(name, port, &hcm)
}

/// The ECDS resource for [`SERVED`]: the `headers` fixture with plugin `configuration`.
fn ecds(module: &Path, configuration: &str) -> TypedExtensionConfig {
    TypedExtensionConfig {
        name: SERVED.into(),
        typed_config: Some(any(&Wasm {
            config: Some(local_wasm_plugin("headers", module, configuration)),
        })),
    }
}

/// Polls `GET /` until it answers 200 with `x-wasm-config: config`, for at most [`LIMIT`].
async fn until_config(addr: SocketAddr, config: &str) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let last = tokio::time::timeout(Duration::from_secs(2), get_host(addr, "localhost", "/"))
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|answer| answer)
            .map(|resp| (resp.status, resp.header("x-wasm-config").to_owned()));
        if matches!(&last, Ok((200, seen)) if seen == config) {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= LIMIT {
            return Err(format!("last answer {last:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `proxy` answered the ECDS response of the server's current version (an ACK
/// or, with `nack`, a NACK) on a request at or after the `from`-th.
async fn until_answered(server: &XdsServer, proxy: &Proxy, kind: Kind, from: usize, nack: bool) {
    let answered = server
        .wait_for_request(LIMIT, from, |r| {
            r.type_url == type_url::EXTENSION_CONFIG
                && !r.response_nonce.is_empty()
                && r.is_nack() == nack
        })
        .await;
    assert!(
        answered.is_some(),
        "{kind:?} answered the ECDS response (nack: {nack}): {:#?}\n{}",
        server.requests(),
        proxy.log_report()
    );
}

/// The stats after each step: the config served, the update, the NACK, the same config again.
type Steps = Vec<(&'static str, BTreeMap<String, String>)>;

/// Lets the proxy finish counting (Envoy counts `config_reload` once its workers took the
/// config), then reads its stats.
async fn settled_stats(proxy: &Proxy) -> BTreeMap<String, String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.ecds_stats().await
}

async fn scenario(kind: Kind, api: AdsApi) -> Steps {
    let module = wasm::fixture("headers");
    let server = XdsServer::start().await;
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    server.set(
        "ecds",
        &listener(
            "ecds",
            port,
            vec![
                discovered(SERVED, None, WASM_TYPE),
                discovered(NEVER, Some(NEVER_TIMEOUT), WASM_TYPE),
            ],
        ),
    );
    let proxy = Proxy::spawn(
        kind,
        &ads_bootstrap("ecds-stats", free_port(), server.addr(), api),
    );
    let mut steps = Steps::new();

    // Both names asked for (in one request, or a delta request each).
    let asked_both = || {
        let asked: std::collections::BTreeSet<String> = server
            .requests()
            .into_iter()
            .filter(|r| r.type_url == type_url::EXTENSION_CONFIG)
            .flat_map(|r| r.resource_names)
            .collect();
        asked.contains(SERVED) && asked.contains(NEVER)
    };
    assert!(
        weir_tests::wait_until(LIMIT, asked_both).await,
        "{kind:?} subscribed to both ECDS names: {:#?}\n{}",
        server.requests(),
        proxy.log_report()
    );
    // The filter that never gets its config gives up first (the listener waits for it).
    tokio::time::sleep(NEVER_TIMEOUT + Duration::from_millis(500)).await;
    steps.push(("timed out", proxy.ecds_stats().await));

    let from = server.requests().len();
    server.set(SERVED, &ecds(&module, "v1"));
    until_config(addr, "v1")
        .await
        .unwrap_or_else(|e| panic!("{kind:?} serves v1: {e}\n{}", proxy.log_report()));
    until_answered(&server, &proxy, kind, from, false).await;
    steps.push(("served", settled_stats(&proxy).await));

    let from = server.requests().len();
    server.set(SERVED, &ecds(&module, "v2"));
    until_config(addr, "v2")
        .await
        .unwrap_or_else(|e| panic!("{kind:?} serves v2: {e}\n{}", proxy.log_report()));
    until_answered(&server, &proxy, kind, from, false).await;
    steps.push(("updated", settled_stats(&proxy).await));

    // A config of a type the filter does not list is NACKed; v2 keeps serving.
    let from = server.requests().len();
    server.set(
        SERVED,
        &TypedExtensionConfig {
            name: SERVED.into(),
            typed_config: Some(any(&HealthCheck {
                pass_through_mode: Some(BoolValue { value: false }),
                ..HealthCheck::default()
            })),
        },
    );
    until_answered(&server, &proxy, kind, from, true).await;
    until_config(addr, "v2")
        .await
        .unwrap_or_else(|e| panic!("{kind:?} still serves v2: {e}\n{}", proxy.log_report()));
    steps.push(("nacked", settled_stats(&proxy).await));

    // v2 again, under a new version: applied (ACKed) with nothing to reload.
    let from = server.requests().len();
    server.set(SERVED, &ecds(&module, "v2"));
    until_answered(&server, &proxy, kind, from, false).await;
    steps.push(("same again", settled_stats(&proxy).await));

    // A listener whose filter takes only another type than the config in force: it goes in
    // at once, its filter without a config (500), and counts a conflict.
    let other_port = free_port();
    let from = server.requests().len();
    server.set(
        "conflicting",
        &listener(
            "conflicting",
            other_port,
            vec![discovered(SERVED, None, HEALTH_CHECK_TYPE)],
        ),
    );
    server
        .wait_for_request(LIMIT, from, |r| {
            r.type_url == type_url::LISTENER && !r.response_nonce.is_empty() && !r.is_nack()
        })
        .await
        .unwrap_or_else(|| panic!("{kind:?} ACKed the listener\n{}", proxy.log_report()));
    let other = SocketAddr::from(([127, 0, 0, 1], other_port));
    let mut status = None;
    for _ in 0..100 {
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(2), get_host(other, "localhost", "/")).await
        {
            status = Some(resp.status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status,
        Some(500),
        "{kind:?}: the filter runs without its config\n{}",
        proxy.log_report()
    );
    let mut conflict = settled_stats(&proxy).await;
    conflict.insert(
        "GET / on the conflicting listener".into(),
        format!("{status:?}"),
    );
    steps.push(("conflict", conflict));

    // Now a Wasm config is one a filter cannot take: refused.
    let from = server.requests().len();
    server.set(SERVED, &ecds(&module, "v3"));
    until_answered(&server, &proxy, kind, from, true).await;
    steps.push((
        "refused for the conflicting filter",
        settled_stats(&proxy).await,
    ));

    // A cluster that does not read (connect_timeout must be positive): CDS NACKed.
    let from = server.requests().len();
    let mut bad = eds_cluster("bad");
    bad.connect_timeout = Some(ProtoDuration {
        seconds: -1,
        nanos: 0,
    });
    server.set("bad", &bad);
    server
        .wait_for_request(LIMIT, from, |r| {
            r.type_url == type_url::CLUSTER && r.is_nack()
        })
        .await
        .unwrap_or_else(|| panic!("{kind:?} NACKed the cluster\n{}", proxy.log_report()));
    steps.push(("cds refused", settled_stats(&proxy).await));

    // weir's Prometheus families carry the same values, the scope as labels.
    if kind == Kind::Weir {
        let prometheus = proxy.admin("/stats/prometheus").await;
        let reload = format!(
            "weir_extension_config_discovery_config_reload{{extension_config_name=\"{SERVED}\",stat_prefix=\"http_filter\"}} 2"
        );
        let durations = format!(
            "weir_extension_config_discovery_update_duration_count{{extension_config_name=\"{SERVED}\",stat_prefix=\"http_filter\"}} 3"
        );
        for line in [reload, durations] {
            assert!(
                prometheus.lines().any(|seen| seen == line),
                "{line} in\n{prometheus}"
            );
        }
    }
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecds_stats_count_as_envoys() {
    for api in AdsApi::BOTH {
        let envoy = scenario(Kind::Envoy, api).await;
        // What the steps must come to (the comparison below means nothing if Envoy counts
        // nothing).
        let last = &envoy.last().expect("steps").1;
        let served = |stat: &str| {
            last.get(&format!(
                "extension_config_discovery.http_filter.{SERVED}.{stat}"
            ))
            .cloned()
        };
        assert_eq!(served("config_reload").as_deref(), Some("2"), "{last:#?}");
        assert_eq!(served("config_fail").as_deref(), Some("2"), "{last:#?}");
        assert_eq!(served("config_conflict").as_deref(), Some("1"), "{last:#?}");
        assert_eq!(served("update_success").as_deref(), Some("3"), "{last:#?}");
        // LDS: its start, the first listener, the conflicting one.
        for (stat, value) in [("version_text", "\"2\""), ("update_attempt", "3")] {
            assert_eq!(
                last.get(&format!("listener_manager.lds.{stat}"))
                    .map(String::as_str),
                Some(value),
                "{last:#?}"
            );
        }
        let weir = scenario(Kind::Weir, api).await;
        assert_eq!(
            weir, envoy,
            "{api:?}: weir (left) and Envoy 1.40 (right) differ"
        );
    }
}
