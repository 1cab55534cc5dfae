//! Endpoint priority levels as Envoy 1.40 balances them: each case runs the same config (a
//! static cluster with `load_assignment.endpoints[]` at priorities 0 and 1, active health
//! checks on `/health`) through weir and Envoy, each with upstreams of its own that answer
//! their checks the same way (200, or 503 to fail), and compares the share of requests each
//! host got with the figure Envoy's priority load gives, for both, within a tolerance over a
//! bounded number of requests; and the cluster's `lb_healthy_panic` and `membership_*` stats
//! between the two.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use weir_tests::config::{self, Ports};
use weir_tests::side_by_side::{Kind, Proxy};

/// Requests sent through each proxy in a case.
const REQUESTS: usize = 1_000;
/// How far (percentage points) a host's share may stray from Envoy's figure.
const TOLERANCE_POINTS: f64 = 6.0;

/// `/stats` filtered to cluster `c`'s panic counter and host counts.
const STATS: &str =
    "/stats?filter=%5Ecluster%5C.c%5C.(lb_healthy_panic%7Cmembership_(healthy%7Ctotal))";

/// A keep-alive HTTP/1.1 upstream on 127.0.0.1 answering `/health` 200 when `passes`, else
/// 503, and every other path 200, counting those in `hits`; runs until the test ends.
async fn upstream(passes: bool, hits: Arc<AtomicUsize>) -> SocketAddr {
    weir_tests::raw_h1::serve(move |path| {
        let answer = match (path == "/health", passes) {
            (true, true) => "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            (true, false) => "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
            (false, _) => {
                hits.fetch_add(1, Ordering::Relaxed);
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nup"
            }
        };
        std::future::ready(answer.to_owned())
    })
    .await
}

/// One listener routing everything to cluster `c`: one locality per entry of `levels` (its
/// hosts' addresses) at the priority of its place, checked on `/health` once while the test
/// looks, and `extra` merged into the cluster (`policy` in the load assignment, `weights`
/// each host's `load_balancing_weight` in order, `lb_policy`; `hash_header` the route's
/// `hash_policy`).
fn priorities_config(ports: Ports, levels: &[Vec<SocketAddr>], extra: &Value) -> Value {
    let mut cluster = config::static_cluster("c", &[]);
    let mut weights = extra["weights"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter();
    let localities: Vec<Value> = levels
        .iter()
        .enumerate()
        .map(|(priority, addrs)| {
            let lb_endpoints: Vec<Value> = addrs
                .iter()
                .map(|a| {
                    let mut endpoint = json!({"endpoint": {"address": {"socket_address": {
                        "address": a.ip().to_string(), "port_value": a.port()}}}});
                    if let Some(weight) = weights.next() {
                        endpoint["load_balancing_weight"] = weight;
                    }
                    endpoint
                })
                .collect();
            json!({"priority": priority, "lb_endpoints": lb_endpoints})
        })
        .collect();
    cluster["load_assignment"]["endpoints"] = json!(localities);
    if let Some(policy) = extra.get("policy") {
        cluster["load_assignment"]["policy"] = policy.clone();
    }
    if let Some(common) = extra.get("common_lb_config") {
        cluster["common_lb_config"] = common.clone();
    }
    cluster["health_checks"] = json!([{
        "timeout": "2s",
        "interval": "30s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "http_health_check": {"path": "/health"},
    }]);
    if let Some(policy) = extra.get("lb_policy") {
        cluster["lb_policy"] = policy.clone();
    }
    let mut bootstrap = config::bootstrap(
        ports.admin,
        vec![config::listener(
            "ingress",
            ports.http,
            config::hcm(
                "ingress",
                vec![config::vhost(
                    "all",
                    &["*"],
                    vec![config::route_prefix("/", "c")],
                )],
            ),
        )],
        vec![cluster],
    );
    if let Some(header) = extra.get("hash_header") {
        bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["hash_policy"] =
            json!([{"header": {"header_name": header}}]);
    }
    bootstrap
}

/// What one proxy did: each host's share of [`REQUESTS`] in percent (levels in order, hosts
/// in order), and the cluster's stats after the requests.
#[derive(Debug)]
struct Seen {
    shares: Vec<f64>,
    stats: String,
}

/// Starts `kind` on [`priorities_config`] (with `extra`) for fresh upstreams (per level, whether each
/// passes its checks), waits (at most 15 s) for its listener, sends [`REQUESTS`] GETs one
/// after the other (each a 200, all within 60 s) and counts where they went.
async fn run(kind: Kind, levels: &[&[bool]], extra: &Value) -> Seen {
    let mut hits = Vec::new();
    let mut addrs = Vec::new();
    for level in levels {
        let mut level_addrs = Vec::new();
        for passes in level.iter() {
            let counter = Arc::new(AtomicUsize::new(0));
            level_addrs.push(upstream(*passes, counter.clone()).await);
            hits.push(counter);
        }
        addrs.push(level_addrs);
    }
    let ports = Ports::new();
    let proxy = Proxy::spawn(kind, &priorities_config(ports, &addrs, extra));
    let began = Instant::now();
    while TcpStream::connect(ports.http_addr()).await.is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "{kind:?}: listener {} never accepted\n{}",
            ports.http_addr(),
            proxy.log_report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..REQUESTS {
        let answer = weir_tests::get(ports.http_addr(), "/work")
            .await
            .expect("GET /work");
        assert_eq!(answer.status, 200, "{kind:?}: {}", answer.text());
        assert!(
            Instant::now() < deadline,
            "{kind:?}: requests took over 60 s"
        );
    }
    let stats = proxy.admin(STATS).await;
    drop(proxy);
    let shares = hits
        .iter()
        .map(|h| 100.0 * h.load(Ordering::Relaxed) as f64 / REQUESTS as f64)
        .collect();
    Seen { shares, stats }
}

/// Runs `levels` through weir and Envoy and asserts, for both, each host's share within
/// [`TOLERANCE_POINTS`] of `want` (percent per host, Envoy's priority load), the same host
/// counts, and panic picks within the same tolerance.
async fn compare(case: &str, levels: &[&[bool]], extra: Value, want: &[f64]) {
    let ours = run(Kind::Weir, levels, &extra).await;
    let theirs = run(Kind::Envoy, levels, &extra).await;
    eprintln!(
        "{case}: shares weir {:?} Envoy {:?}",
        ours.shares, theirs.shares
    );
    // The host counts exactly; the panic picks (random draws) as a share, within the same
    // tolerance.
    let membership = |stats: &str| {
        stats
            .lines()
            .filter(|line| line.contains("membership_"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        membership(&ours.stats),
        membership(&theirs.stats),
        "{case}: weir (left) and Envoy (right) host counts differ"
    );
    let panic_share = |stats: &str| {
        let picks: f64 = stats
            .lines()
            .find_map(|line| line.strip_prefix("cluster.c.lb_healthy_panic: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(-1000.0);
        100.0 * picks / REQUESTS as f64
    };
    let (ours_panic, theirs_panic) = (panic_share(&ours.stats), panic_share(&theirs.stats));
    assert!(
        (ours_panic - theirs_panic).abs() <= TOLERANCE_POINTS,
        "{case}: panic picks weir {ours_panic}% Envoy {theirs_panic}%\nweir {ours:#?}\nEnvoy {theirs:#?}"
    );
    for (who, seen) in [("weir", &ours), ("Envoy", &theirs)] {
        assert_eq!(seen.shares.len(), want.len());
        for (i, (share, want)) in seen.shares.iter().zip(want).enumerate() {
            assert!(
                (share - want).abs() <= TOLERANCE_POINTS,
                "{case}: {who} sent {share:.1}% to host {i}, Envoy's load says {want}%\n\
                 weir {ours:#?}\nEnvoy {theirs:#?}"
            );
        }
    }
}

/// P0 two hosts, P1 one. All healthy: P0 takes everything. One P0 host failing: P0's health
/// is 50% * 1.4 = 70%, P1 (100%) takes the other 30%. Both P0 hosts failing: P1 takes all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_priority_takes_what_the_higher_one_lacks_as_envoy() {
    compare(
        "all healthy",
        &[&[true, true], &[true]],
        json!({}),
        &[50.0, 50.0, 0.0],
    )
    .await;
    compare(
        "half of P0 down",
        &[&[false, true], &[true]],
        json!({}),
        &[0.0, 70.0, 30.0],
    )
    .await;
    compare(
        "P0 down",
        &[&[false, false], &[true]],
        json!({}),
        &[0.0, 0.0, 100.0],
    )
    .await;
}

/// `policy.overprovisioning_factor: 200`: one healthy host of two keeps P0 whole (100%).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overprovisioning_factor_is_envoys() {
    compare(
        "factor 200",
        &[&[false, true], &[true]],
        json!({"policy": {"overprovisioning_factor": 200}}),
        &[0.0, 100.0, 0.0],
    )
    .await;
}

/// `policy.weighted_priority_health`: P0 a failing host of weight 1 and a healthy one of
/// weight 3 is 75% * 1.4, whole (counting hosts it would be 70/30 with P1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_priority_health_is_envoys() {
    compare(
        "weighted",
        &[&[false, true], &[true]],
        json!({"policy": {"weighted_priority_health": true}, "weights": [1, 3, 1]}),
        &[0.0, 100.0, 0.0],
    )
    .await;
    compare(
        "weighted, the other way",
        &[&[false, true], &[true]],
        json!({"policy": {"weighted_priority_health": true}, "weights": [3, 1, 1]}),
        &[0.0, 35.0, 65.0],
    )
    .await;
}

/// Both levels one healthy host of four: 35% health each, 70% in all, and each level under
/// the 50% panic threshold: total panic, the load split by host counts (50/50), each level's
/// share over all its hosts (12.5% each), every pick counted in `lb_healthy_panic`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_panic_spreads_over_every_host_as_envoy() {
    compare(
        "total panic",
        &[&[true, false, false, false], &[true, false, false, false]],
        json!({}),
        &[12.5; 8],
    )
    .await;
}

/// `healthy_panic_threshold: 30`: P0 one healthy host of four (35% health, 25% healthy: in
/// panic), P1 two of five (56%, 40%: not): normalized 91, P0 gets 35*100/91 = 38 plus the
/// rounding point, 39% over all its four hosts, P1 61% over its two healthy ones. (One level
/// of nine hosts, three healthy, would send 33% to each healthy host.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_in_panic_spreads_its_own_share_as_envoy() {
    compare(
        "P0 in panic",
        &[
            &[true, false, false, false],
            &[true, true, false, false, false],
        ],
        json!({"common_lb_config": {"healthy_panic_threshold": {"value": 30}}}),
        &[9.75, 9.75, 9.75, 9.75, 30.5, 30.5, 0.0, 0.0, 0.0],
    )
    .await;
}

/// The EDS phases: per upstream (0, 1, 2), its priority and whether EDS says UNHEALTHY; the
/// assignment's `overprovisioning_factor` (none: Envoy's 140); each host's share Envoy's
/// load gives. Each phase moves a host to another level, so `/clusters?format=json` (its
/// hosts' `priority`) shows when a proxy has taken it.
type EdsPhase = ([(u32, bool); 3], Option<u32>, [f64; 3]);
const EDS_PHASES: [EdsPhase; 3] = [
    // P0 {0 failing, 1}, P1 {2}: 70/30.
    ([(0, true), (0, false), (1, false)], None, [0.0, 70.0, 30.0]),
    // Host 2 at P2, factor 200: P0 whole (P1 empty, P2 nothing).
    (
        [(0, true), (0, false), (2, false)],
        Some(200),
        [0.0, 100.0, 0.0],
    ),
    // Host 2 up to P0, hosts 0 and 1 down to P1 (all healthy): all to host 2.
    (
        [(1, false), (1, false), (0, false)],
        None,
        [0.0, 0.0, 100.0],
    ),
];

/// `GET /clusters?format=json` of `admin`: cluster `c1`'s hosts, each (port, priority).
async fn eds_priorities(admin: SocketAddr) -> Vec<(u64, u64)> {
    let text = weir_tests::client::get_host(admin, "localhost", "/clusters?format=json")
        .await
        .map(|resp| resp.text())
        .unwrap_or_default();
    let json: Value = serde_json::from_str(&text).unwrap_or_default();
    let mut hosts = Vec::new();
    for cluster in json["cluster_statuses"].as_array().into_iter().flatten() {
        if cluster["name"] != "c1" {
            continue;
        }
        for host in cluster["host_statuses"].as_array().into_iter().flatten() {
            let port = host["address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap_or(0);
            hosts.push((port, host["priority"].as_u64().unwrap_or(0)));
        }
    }
    hosts.sort_unstable();
    hosts
}

/// Starts `kind` on an ADS bootstrap whose control plane serves cluster `c1` (EDS) over
/// three fresh upstreams as each of [`EDS_PHASES`] says in turn; under each, once the proxy
/// shows the new priorities (at most 10 s), sends [`REQUESTS`] GETs and counts where they
/// went.
async fn run_eds(kind: Kind) -> Vec<Vec<f64>> {
    use envoy_types::pb::envoy::config::core::v3::HealthStatus;
    use envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;
    use envoy_types::pb::envoy::config::endpoint::v3::cluster_load_assignment::Policy;
    use envoy_types::pb::google::protobuf::UInt32Value;
    use weir_tests::xds_resources::{
        AdsApi, ads_bootstrap, eds_cluster, listener_with_rds, load_assignment, route_configuration,
    };
    let hits: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut addrs = Vec::new();
    for hits in &hits {
        addrs.push(upstream(true, hits.clone()).await);
    }
    let server = weir_tests::xds_server::XdsServer::start().await;
    let port = weir_tests::free_port();
    let admin_port = weir_tests::free_port();
    server.set("c1", &eds_cluster("c1"));
    server.set("l1", &listener_with_rds("l1", port, "r1"));
    server.set("r1", &route_configuration("r1", "/", "c1"));
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let mut proxy = None;
    let mut seen = Vec::new();
    for (hosts, factor, _) in EDS_PHASES {
        let mut assignment = load_assignment("c1", &[]);
        let top = hosts.iter().map(|(p, _)| *p).max().unwrap_or(0);
        assignment.endpoints = (0..=top)
            .filter_map(|priority| {
                let mut locality = load_assignment("c1", &addrs).endpoints.pop()?;
                let mut kept = Vec::new();
                for (endpoint, (at, failing)) in locality.lb_endpoints.drain(..).zip(hosts) {
                    if at == priority {
                        let mut endpoint = endpoint;
                        if failing {
                            endpoint.health_status = HealthStatus::Unhealthy as i32;
                        }
                        kept.push(endpoint);
                    }
                }
                (!kept.is_empty()).then_some(LocalityLbEndpoints {
                    lb_endpoints: kept,
                    priority,
                    ..locality
                })
            })
            .collect();
        assignment.policy = factor.map(|value| Policy {
            overprovisioning_factor: Some(UInt32Value { value }),
            ..Policy::default()
        });
        server.set("c1", &assignment);
        if proxy.is_none() {
            proxy = Some(Proxy::spawn(
                kind,
                &ads_bootstrap("priorities", admin_port, server.addr(), AdsApi::Grpc),
            ));
        }
        let mut want: Vec<(u64, u64)> = addrs
            .iter()
            .zip(hosts)
            .map(|(addr, (priority, _))| (u64::from(addr.port()), u64::from(priority)))
            .collect();
        want.sort_unstable();
        let began = Instant::now();
        loop {
            let serving = weir_tests::get(listener, "/probe")
                .await
                .is_ok_and(|resp| resp.status == 200);
            if serving && eds_priorities(admin).await == want {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "{kind:?}: {hosts:?} never applied: {:?}",
                eds_priorities(admin).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before: Vec<usize> = hits.iter().map(|h| h.load(Ordering::Relaxed)).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..REQUESTS {
            let answer = weir_tests::get(listener, "/work").await.expect("GET /work");
            assert_eq!(answer.status, 200, "{kind:?}: {}", answer.text());
            assert!(
                Instant::now() < deadline,
                "{kind:?}: requests took over 60 s"
            );
        }
        seen.push(
            hits.iter()
                .zip(before)
                .map(|(h, before)| {
                    100.0 * (h.load(Ordering::Relaxed) - before) as f64 / REQUESTS as f64
                })
                .collect(),
        );
    }
    drop(proxy);
    seen
}

/// Priorities and the overprovisioning factor from EDS, and hosts moving between levels by
/// an update: the shares of [`EDS_PHASES`], on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eds_priorities_are_envoys() {
    let ours = run_eds(Kind::Weir).await;
    let theirs = run_eds(Kind::Envoy).await;
    for (((hosts, factor, want), ours), theirs) in EDS_PHASES.iter().zip(&ours).zip(&theirs) {
        eprintln!("eds {hosts:?} factor {factor:?}: shares weir {ours:?} Envoy {theirs:?}");
        for (who, seen) in [("weir", ours), ("Envoy", theirs)] {
            for (i, (share, want)) in seen.iter().zip(want).enumerate() {
                assert!(
                    (share - want).abs() <= TOLERANCE_POINTS,
                    "{hosts:?}: {who} sent {share:.1}% to host {i}, Envoy's load says {want}%"
                );
            }
        }
    }
}

/// Keys sent per proxy in the hash case.
const KEYS: usize = 300;

/// Starts `kind` on [`priorities_config`] with `lb_policy` hashing header `x-user`, sends
/// [`KEYS`] keys twice each (one after the other) and returns the host (index over the
/// levels' hosts in order) each key went to; asserts a key goes to the same host both times.
async fn run_hashed(kind: Kind, levels: &[&[bool]], lb_policy: &str) -> Vec<usize> {
    let mut hits = Vec::new();
    let mut addrs = Vec::new();
    for level in levels {
        let mut level_addrs = Vec::new();
        for passes in level.iter() {
            let counter = Arc::new(AtomicUsize::new(0));
            level_addrs.push(upstream(*passes, counter.clone()).await);
            hits.push(counter);
        }
        addrs.push(level_addrs);
    }
    let ports = Ports::new();
    let extra = json!({"lb_policy": lb_policy, "hash_header": "x-user"});
    let proxy = Proxy::spawn(kind, &priorities_config(ports, &addrs, &extra));
    let began = Instant::now();
    while TcpStream::connect(ports.http_addr()).await.is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "{kind:?}: listener never accepted\n{}",
            proxy.log_report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut placed = Vec::new();
    for key in 0..KEYS {
        let user = format!("user-{key}");
        let mut went = Vec::new();
        for _ in 0..2 {
            let before: Vec<usize> = hits.iter().map(|h| h.load(Ordering::Relaxed)).collect();
            let answer = weir_tests::client::must_get_with(
                ports.http_addr(),
                "lb.example",
                "/work",
                &[("x-user", &user)],
            )
            .await;
            assert_eq!(answer.status, 200, "{kind:?}");
            let host = hits
                .iter()
                .zip(&before)
                .position(|(h, before)| h.load(Ordering::Relaxed) > *before);
            went.push(host.unwrap_or(usize::MAX));
            assert!(
                Instant::now() < deadline,
                "{kind:?}: requests took over 60 s"
            );
        }
        assert_eq!(went[0], went[1], "{kind:?} {lb_policy}: {user} moved");
        placed.push(went[0]);
    }
    drop(proxy);
    placed
}

/// RING_HASH and MAGLEV draw the level by the request's hash (`hash % 100 + 1` against the
/// priority loads) and then hash within the level, as Envoy: with one of P0's two hosts
/// failing, about 30% of the keys go to P1, each key sticks, and each key lands on the same
/// host as on Envoy (the level drawn from the same xxHash of the header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_policies_draw_the_level_by_the_hash_as_envoy() {
    let levels: &[&[bool]] = &[&[false, true], &[true]];
    for lb_policy in ["RING_HASH", "MAGLEV"] {
        let ours = run_hashed(Kind::Weir, levels, lb_policy).await;
        let theirs = run_hashed(Kind::Envoy, levels, lb_policy).await;
        let to_p1 = |placed: &[usize]| {
            100.0 * placed.iter().filter(|host| **host == 2).count() as f64 / KEYS as f64
        };
        eprintln!(
            "{lb_policy}: keys to P1 weir {:.1}% Envoy {:.1}%",
            to_p1(&ours),
            to_p1(&theirs)
        );
        assert!(!ours.contains(&0) && !theirs.contains(&0), "host 0 fails");
        assert!((to_p1(&ours) - 30.0).abs() <= 10.0, "{lb_policy}: weir");
        assert_eq!(
            ours, theirs,
            "{lb_policy}: weir (left) and Envoy (right) place keys differently"
        );
    }
}
