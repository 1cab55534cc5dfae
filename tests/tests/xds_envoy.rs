//! The tests' management server drives the real Envoy (1.40) over ADS, in both forms: Envoy
//! subscribes, ACKs every type, serves traffic by what it was sent, and NACKs an invalid
//! cluster while the version in force stays. This proves the server speaks xDS as Envoy
//! does, so weir's behaviour against it can be compared with Envoy's. Then both proxies wait
//! for routes and endpoints that never come, each for its own config source's
//! `initial_fetch_timeout`.

use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use std::time::{Duration, Instant};
use weir_tests::envoy::Envoy;
use weir_tests::xds_resources::{
    AdsApi, ads_bootstrap, eds_cluster, listener_with_rds, load_assignment, route_configuration,
};
use weir_tests::xds_server::{XdsServer, type_url};
use weir_tests::{H1Upstream, Weir, free_port, get};

/// Envoy's initial config must be served within this (the acceptance bound).
const INITIAL: Duration = Duration::from_secs(10);

async fn envoy_follows_the_server(api: AdsApi) {
    let upstream = H1Upstream::start("backend").await;
    let server = XdsServer::start().await;
    let port = free_port();
    server.set("c1", &eds_cluster("c1"));
    server.set("c1", &load_assignment("c1", &[upstream.addr]));
    server.set("l1", &listener_with_rds("l1", port, "r1"));
    server.set("r1", &route_configuration("r1", "/", "c1"));
    let envoy = Envoy::spawn(
        &ads_bootstrap("envoy-1", free_port(), server.addr(), api),
        "info",
    );
    let started = Instant::now();
    for type_url in [
        type_url::CLUSTER,
        type_url::ENDPOINT,
        type_url::LISTENER,
        type_url::ROUTE,
    ] {
        let version = server.version(type_url);
        let response = server
            .wait_for_response(INITIAL, |r| r.type_url == type_url && r.version == version)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{api:?}: Envoy subscribed to {type_url} within {INITIAL:?}: {:#?}\n{}",
                    server.requests(),
                    envoy.log_report()
                )
            });
        let ack = server
            .wait_for_request(INITIAL, 0, |r| {
                r.type_url == type_url && r.acks(&response.nonce)
            })
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{api:?}: Envoy ACKed {response:?}: {:#?}\n{}",
                    server.requests(),
                    envoy.log_report()
                )
            });
        assert_eq!(ack.delta, api == AdsApi::DeltaGrpc);
        if !ack.delta {
            assert_eq!(ack.version_info, version);
        }
    }
    let requests = server.requests();
    // Envoy's order: clusters first; the endpoints a cluster names are subscribed before
    // the CDS ACK; listeners once the clusters are warm.
    let position = |type_url: &str| requests.iter().position(|r| r.type_url == type_url);
    assert_eq!(requests[0].type_url, type_url::CLUSTER);
    assert!(position(type_url::ENDPOINT) < position(type_url::LISTENER));
    assert_eq!(requests[0].node_id.as_deref(), Some("envoy-1"));
    let rds = requests
        .iter()
        .find(|r| r.type_url == type_url::ROUTE)
        .expect("an RDS request");
    assert_eq!(rds.resource_names, ["r1"], "Envoy asks for routes by name");
    let eds = requests
        .iter()
        .find(|r| r.type_url == type_url::ENDPOINT)
        .expect("an EDS request");
    assert_eq!(
        eds.resource_names,
        ["c1"],
        "Envoy asks for endpoints by name"
    );
    let listener = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + INITIAL;
    let status = loop {
        let status = get(listener, "/").await.map(|resp| resp.status).ok();
        if status == Some(200) || Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status,
        Some(200),
        "{api:?}: Envoy serves the listener by the xDS config\n{}",
        envoy.log_report()
    );
    eprintln!(
        "{api:?}: Envoy ACKed all four types and served within {:?}",
        started.elapsed()
    );

    // An invalid cluster (connect_timeout must be positive) is NACKed; the version in force
    // stays the one accepted before.
    let accepted = server.version(type_url::CLUSTER);
    let from = server.requests().len();
    let mut bad = eds_cluster("bad");
    bad.connect_timeout = Some(ProtoDuration {
        seconds: -1,
        nanos: 0,
    });
    server.set("bad", &bad);
    let nack = server
        .wait_for_request(INITIAL, from, |r| {
            r.type_url == type_url::CLUSTER && r.is_nack()
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{api:?}: Envoy NACKs the invalid cluster: {:#?}\n{}",
                server.requests(),
                envoy.log_report()
            )
        });
    let (code, message) = nack.error_detail.clone().unwrap_or_default();
    eprintln!("{api:?}: Envoy's NACK: code {code}: {message}");
    // Envoy NACKs with INTERNAL (13), not INVALID_ARGUMENT, and the reason as text.
    assert_eq!(code, 13, "{message}");
    assert!(message.contains("duration"), "{message}");
    if api == AdsApi::Grpc {
        assert_eq!(nack.version_info, accepted, "the version in force stays");
    }
    // Still serving.
    let still = get(listener, "/").await.map(|resp| resp.status).ok();
    assert_eq!(still, Some(200));
}

#[tokio::test]
async fn envoy_follows_the_server_over_grpc() {
    envoy_follows_the_server(AdsApi::Grpc).await;
}

#[tokio::test]
async fn envoy_follows_the_server_over_delta_grpc() {
    envoy_follows_the_server(AdsApi::DeltaGrpc).await;
}

/// The `initial_fetch_timeout` of the RDS and EDS sources of the timeout scenario (LDS and
/// CDS wait 5 s, [`ads_bootstrap`]'s).
const SOURCE_TIMEOUT: Duration = Duration::from_secs(1);

/// When the timeout scenario's listeners are probed, after the proxy started: past the RDS
/// and EDS sources' timeouts, before the 5 s of LDS and CDS.
const PROBE_AT: Duration = Duration::from_millis(3500);

/// `source` giving up on its first response after [`SOURCE_TIMEOUT`].
fn with_timeout(source: &mut envoy_types::pb::envoy::config::core::v3::ConfigSource) {
    source.initial_fetch_timeout = Some(ProtoDuration {
        seconds: SOURCE_TIMEOUT.as_secs() as i64,
        nanos: 0,
    });
}

/// A listener whose routes never come, and one routing to a cluster whose endpoints never
/// come, both sources with a 1 s `initial_fetch_timeout`: what each answers (status, body)
/// 3.5 s after the proxy started, `None` when it does not accept.
async fn fetch_timeout_scenario(envoy: bool) -> Vec<Option<(u16, String)>> {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use prost::Message as _;
    let server = XdsServer::start().await;
    let (routes_port, endpoints_port) = (free_port(), free_port());
    let mut routes_never = listener_with_rds("routes-never", routes_port, "never");
    // The HCM's rds source, inside its Any.
    for chain in &mut routes_never.filter_chains {
        for filter in &mut chain.filters {
            if let Some(ConfigType::TypedConfig(any)) = &mut filter.config_type
                && let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice())
            {
                if let Some(RouteSpecifier::Rds(rds)) = &mut hcm.route_specifier
                    && let Some(source) = &mut rds.config_source
                {
                    with_timeout(source);
                }
                *any = weir_tests::xds_server::any(&hcm);
            }
        }
    }
    server.set("routes-never", &routes_never);
    let mut cluster = eds_cluster("endpoints-never");
    if let Some(eds) = &mut cluster.eds_cluster_config
        && let Some(source) = &mut eds.eds_config
    {
        with_timeout(source);
    }
    server.set("endpoints-never", &cluster);
    server.set(
        "to-endpoints-never",
        &listener_with_rds("to-endpoints-never", endpoints_port, "to-endpoints-never"),
    );
    server.set(
        "to-endpoints-never",
        &route_configuration("to-endpoints-never", "/", "endpoints-never"),
    );
    let bootstrap = ads_bootstrap("timeouts-1", free_port(), server.addr(), AdsApi::Grpc);
    let started = Instant::now();
    let (_envoy, _weir) = if envoy {
        (Some(Envoy::spawn(&bootstrap, "info")), None)
    } else {
        (None, Some(Weir::spawn(&bootstrap, &[])))
    };
    tokio::time::sleep(PROBE_AT.saturating_sub(started.elapsed())).await;
    let mut answers = Vec::new();
    for port in [routes_port, endpoints_port] {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let answer = tokio::time::timeout(Duration::from_secs(1), get(addr, "/")).await;
        answers.push(match answer {
            Ok(Ok(resp)) => Some((resp.status, resp.text())),
            _ => None,
        });
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "probed before the LDS and CDS timeouts"
    );
    answers
}

#[tokio::test]
async fn routes_and_endpoints_wait_for_their_own_sources_initial_fetch_timeout_as_envoy() {
    let weir = fetch_timeout_scenario(false).await;
    assert_eq!(
        weir,
        [
            Some((404, String::new())),
            Some((503, "no healthy upstream".to_string()))
        ],
        "weir"
    );
    let envoy = fetch_timeout_scenario(true).await;
    assert_eq!(weir, envoy, "weir (left) and Envoy 1.40 (right)");
}

/// The `initial_fetch_timeout` of `lds_config` and `cds_config` in the readiness scenario.
const LDS_CDS_TIMEOUT: Duration = Duration::from_secs(2);

/// With the control plane away, whether the proxy's `GET /ready` answers 200, 3 s after it
/// started (past the CDS timeout, before CDS's and then LDS's) and 6.5 s after (past both).
async fn readiness_scenario(envoy: bool) -> (bool, bool) {
    // A port nothing listens on: the control plane is away.
    let away = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let mut bootstrap = ads_bootstrap("ready-1", free_port(), away, AdsApi::Grpc);
    for source in ["lds_config", "cds_config"] {
        bootstrap["dynamic_resources"][source]["initial_fetch_timeout"] =
            serde_json::json!(format!("{}s", LDS_CDS_TIMEOUT.as_secs()));
    }
    let admin = weir_tests::weir::admin_addr(&bootstrap);
    let started = Instant::now();
    let (_envoy, _weir) = if envoy {
        (Some(Envoy::spawn(&bootstrap, "info")), None)
    } else {
        (None, Some(Weir::spawn(&bootstrap, &[])))
    };
    let mut ready = Vec::new();
    for at in [Duration::from_secs(3), Duration::from_millis(6500)] {
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            weir_tests::get_host(admin, "localhost", "/ready"),
        )
        .await;
        ready.push(matches!(answer, Ok(Ok(resp)) if resp.status == 200));
    }
    (ready[0], ready[1])
}

#[tokio::test]
async fn lds_waits_from_the_end_of_the_cds_initial_fetch_as_envoy() {
    let envoy = readiness_scenario(true).await;
    let weir = readiness_scenario(false).await;
    assert_eq!(weir, (false, true), "weir");
    assert_eq!(weir, envoy, "weir (left) and Envoy 1.40 (right)");
}
