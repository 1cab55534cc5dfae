//! Static listeners (from the bootstrap, not LDS) start accepting together, once every one of
//! them has warmed, in weir as in Envoy 1.40 driven by the same management server: one
//! listener whose connection manager takes its routes from RDS over ADS
//! (`initial_fetch_timeout: 2s`) and one plain listener with inline routes. Neither accepts a
//! connection before the route configuration arrives (then both serve, the RDS one by its
//! routes) or, when it never comes, before the 2 s pass (then the RDS listener answers 404
//! from an empty route table).
//! Envoy's server starts its listeners only once initialized; weir holds its listeners back
//! until its initial fetch is over.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weir_tests::side_by_side::{Kind, Proxy};
use weir_tests::xds_resources::{AdsApi, ads_bootstrap, route_configuration};
use weir_tests::xds_server::{XdsServer, type_url};
use weir_tests::{free_port, get_host};

/// Bounds every wait.
const LIMIT: Duration = Duration::from_secs(15);
/// The RDS source's initial fetch timeout.
const RDS_TIMEOUT: Duration = Duration::from_secs(2);
/// The route configuration the RDS listener asks for.
const ROUTES: &str = "static-rds-routes";

/// A static listener `name` on 127.0.0.1:`port` whose connection manager has `routes` (an
/// `rds` or a `route_config` entry) and the router.
fn listener_json(name: &str, port: u16, routes: (&str, Value)) -> Value {
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        }}]
    });
    hcm[routes.0] = routes.1;
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm
        }]}]
    })
}

/// The bootstrap: ADS at `server` for RDS only (no LDS, no CDS), the static listener `rds`
/// on `rds_port` taking [`ROUTES`] from RDS with [`RDS_TIMEOUT`], and the static listener
/// `plain` on `plain_port` answering 200 itself.
fn bootstrap(server: &XdsServer, rds_port: u16, plain_port: u16) -> Value {
    let mut bootstrap = ads_bootstrap("static-start", free_port(), server.addr(), AdsApi::Grpc);
    if let Some(dynamic) = bootstrap["dynamic_resources"].as_object_mut() {
        dynamic.remove("lds_config");
        dynamic.remove("cds_config");
    }
    let rds = json!({
        "route_config_name": ROUTES,
        "config_source": {
            "ads": {},
            "resource_api_version": "V3",
            "initial_fetch_timeout": format!("{}s", RDS_TIMEOUT.as_secs())
        }
    });
    let inline = json!({"virtual_hosts": [{
        "name": "all",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]
    }]});
    bootstrap["static_resources"]["listeners"] = json!([
        listener_json("rds", rds_port, ("rds", rds)),
        listener_json("plain", plain_port, ("route_config", inline)),
    ]);
    bootstrap
}

/// `GET /` on `addr`: its status, or `None` when the connection is refused or nothing
/// answers within 2 s.
async fn status(addr: SocketAddr) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(2), get_host(addr, "localhost", "/"))
        .await
        .ok()?
        .ok()
        .map(|resp| resp.status)
}

/// What one proxy did, compared between weir and Envoy.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// The RDS and plain listeners' answers shortly after RDS was asked for, nothing sent.
    before: [Option<u16>; 2],
    /// Whether the plain listener started no sooner than the route configuration came (or,
    /// without it, than the timeout passed, less 0.7 s: the timer starts before the request
    /// reaches the server).
    plain_waited: bool,
    /// Both listeners' answers once the plain one accepts.
    after: [Option<u16>; 2],
}

/// Starts `kind`; with `routes_after` the route configuration is served that long after RDS
/// was asked for (else never).
async fn scenario(kind: Kind, routes_after: Option<Duration>) -> Outcome {
    let server = XdsServer::start().await;
    let (rds_port, plain_port) = (free_port(), free_port());
    let rds = SocketAddr::from(([127, 0, 0, 1], rds_port));
    let plain = SocketAddr::from(([127, 0, 0, 1], plain_port));
    let config = bootstrap(&server, rds_port, plain_port);
    let proxy = Proxy::spawn(kind, &config);
    server
        .wait_for_request(LIMIT, 0, |r| {
            r.type_url == type_url::ROUTE && r.resource_names.iter().any(|n| n == ROUTES)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{kind:?} asked for {ROUTES}: {:#?}\n{}",
                server.requests(),
                proxy.log_report()
            )
        });
    let asked = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = [status(rds).await, status(plain).await];
    let mut arrived = None;
    if let Some(after) = routes_after {
        tokio::time::sleep(after.saturating_sub(asked.elapsed())).await;
        arrived = Some(asked.elapsed());
        server.set(ROUTES, &route_configuration(ROUTES, "/", "none"));
    }
    // When the plain listener first answers.
    let opened = loop {
        if status(plain).await.is_some() {
            break asked.elapsed();
        }
        assert!(
            asked.elapsed() < LIMIT,
            "{kind:?}: the plain listener never accepted\n{}",
            proxy.log_report()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let after = [status(rds).await, status(plain).await];
    let earliest = arrived.unwrap_or(RDS_TIMEOUT.saturating_sub(Duration::from_millis(700)));
    eprintln!(
        "{kind:?}: routes {}; the plain listener accepted {opened:?} after RDS was asked for",
        arrived.map_or("never sent".to_string(), |at| format!("sent at {at:?}")),
    );
    Outcome {
        before,
        plain_waited: opened >= earliest,
        after,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_listeners_start_together_once_the_rds_one_warmed_as_envoy() {
    // The routes come after 1 s (before the 2 s timeout): `/` goes to a cluster that does
    // not exist, so the RDS listener answers 503 (its routes came), the plain one 200.
    let weir = scenario(Kind::Weir, Some(Duration::from_secs(1))).await;
    let expected = Outcome {
        before: [None, None],
        plain_waited: true,
        after: [Some(503), Some(200)],
    };
    assert_eq!(weir, expected, "weir, routes after 1 s");
    let envoy = scenario(Kind::Envoy, Some(Duration::from_secs(1))).await;
    assert_eq!(
        weir, envoy,
        "routes after 1 s: weir (left) and Envoy 1.40 (right) differ"
    );

    // The routes never come: both wait out the 2 s, then the RDS listener has an empty
    // table (404).
    let weir = scenario(Kind::Weir, None).await;
    let expected = Outcome {
        after: [Some(404), Some(200)],
        ..expected
    };
    assert_eq!(weir, expected, "weir, no routes");
    let envoy = scenario(Kind::Envoy, None).await;
    assert_eq!(
        weir, envoy,
        "no routes: weir (left) and Envoy 1.40 (right) differ"
    );
}

/// Runs `bin` with `args` until it exits (a panic when it runs past [`LIMIT`]): its exit
/// code and what it printed.
async fn run_until_exit(bin: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = weir_tests::client::run_tool(bin.to_str().expect("utf-8 path"), args, LIMIT).await;
    (out.code, format!("{}{}", out.stdout_text(), out.stderr))
}

/// A static listener's address already in use stops the start, although the listeners wait
/// for the control plane before they accept: Envoy binds its listeners' sockets when it
/// loads them; weir binds (without listening) each held-back listener's address at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_listener_address_in_use_stops_the_start_as_envoy() {
    let server = XdsServer::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("address").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bootstrap.json");
    std::fs::write(
        &file,
        bootstrap(&server, free_port(), taken_port).to_string(),
    )
    .expect("write bootstrap");
    let path = file.to_str().expect("utf-8 path");
    let (weir_code, weir_said) =
        run_until_exit(&weir_tests::weir_bin(), &["-c", path, "--concurrency", "1"]).await;
    let (envoy_code, envoy_said) = run_until_exit(
        &weir_tests::envoy::envoy_bin(),
        &["-c", path, "--disable-hot-restart", "--concurrency", "1"],
    )
    .await;
    assert_ne!(envoy_code, 0, "Envoy: {envoy_said}");
    assert!(
        envoy_said.contains("Address already in use"),
        "Envoy: {envoy_said}"
    );
    assert_ne!(weir_code, 0, "weir: {weir_said}");
    assert!(
        weir_said.contains("plain") && weir_said.contains(&format!("127.0.0.1:{taken_port}")),
        "weir names the listener and its address: {weir_said}"
    );
    assert!(
        weir_said.to_lowercase().contains("address already in use")
            || weir_said.to_lowercase().contains("address in use"),
        "weir: {weir_said}"
    );
    drop(taken);
}
