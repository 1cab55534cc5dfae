//! A cluster with active health checks at start, as Envoy 1.40 warms it (each case run
//! through weir and Envoy on the same config, upstream and client): the listener does not
//! accept before every host has had its first check (the admin `/ready` says
//! `PRE_INITIALIZING` meanwhile); that first check decides at once (a pass makes the host
//! healthy whatever `healthy_threshold` says, a failure or a timeout leaves it unhealthy,
//! and with one host of none healthy the default 50% panic threshold still routes to it);
//! a check that never answers holds the start for its `timeout` only. The first request's
//! status, the `/clusters` health flags and the stats are compared.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use weir_tests::Weir;
use weir_tests::config::{self, Ports};
use weir_tests::envoy::Envoy;

/// How an upstream answers its `/health`: this status after this delay. Every other path
/// is 200 `up`.
#[derive(Clone, Copy, Debug)]
struct Health {
    status: u16,
    delay: Duration,
}

/// A keep-alive HTTP/1.1 upstream on 127.0.0.1 answering as `health` says; runs until the
/// test ends.
async fn upstream(health: Health) -> SocketAddr {
    weir_tests::raw_h1::serve(move |path| async move {
        let (status, body) = if path == "/health" {
            tokio::time::sleep(health.delay).await;
            (health.status, "health")
        } else {
            (200, "up")
        };
        format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    })
    .await
}

/// One listener routing everything to cluster `c` (one host, `up`), whose checks have
/// `timeout`, thresholds of 3, and an interval long enough that only the first check runs
/// while the test looks.
fn checked_config(ports: Ports, up: SocketAddr, timeout: &str) -> Value {
    let mut cluster = config::static_cluster("c", &[up]);
    cluster["health_checks"] = json!([{
        "timeout": timeout,
        "interval": "30s",
        "unhealthy_threshold": 3,
        "healthy_threshold": 3,
        "http_health_check": {"path": "/health"},
    }]);
    config::bootstrap(
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
    )
}

/// What one proxy did from its start: how long its listener refused connections, what
/// `/ready` said first while it did (when it answered), the first request's status, then
/// its `/clusters` health flags and its stats.
#[derive(Debug)]
struct Start {
    refused_for: Duration,
    ready_while_refusing: Option<(u16, String)>,
    first_status: u16,
    flags: String,
    stats: String,
}

/// The stats both proxies keep of a checked cluster, as `/stats` text.
const STATS: &str = "/stats?filter=%5Ecluster%5C.c%5C.(health_check%5C.(attempt%7Csuccess%7Cfailure%7Cnetwork_failure%7Chealthy)%7Cmembership_(healthy%7Ctotal)%7Clb_healthy_panic)%24";

/// Waits (at most 15 s) for `ports`' listener to accept, asking `/ready` on the way, then
/// sends one GET and reads the admin's `/clusters` flags and [`STATS`].
async fn observe_start(ports: Ports, spawned: Instant) -> Start {
    let listener = ports.http_addr();
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
    let mut ready_while_refusing = None;
    loop {
        if TcpStream::connect(listener).await.is_ok() {
            break;
        }
        if ready_while_refusing.is_none()
            && let Ok(Ok(resp)) = tokio::time::timeout(
                Duration::from_millis(500),
                weir_tests::client::get_host(admin, "localhost", "/ready"),
            )
            .await
        {
            ready_while_refusing = Some((resp.status, resp.text().trim().to_owned()));
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(15),
            "listener {listener} never accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_for = spawned.elapsed();
    let first = weir_tests::get(listener, "/first")
        .await
        .expect("first GET");
    let admin_text = |path: &'static str| async move {
        weir_tests::client::get_host(admin, "localhost", path)
            .await
            .map(|resp| resp.text())
            .unwrap_or_default()
    };
    let flags = admin_text("/clusters")
        .await
        .lines()
        .filter_map(|line| {
            line.split_once("::health_flags::")
                .map(|(_, f)| f.to_owned())
        })
        .collect::<Vec<_>>()
        .join(",");
    Start {
        refused_for,
        ready_while_refusing,
        first_status: first.status,
        flags,
        stats: admin_text(STATS).await,
    }
}

/// Starts weir and Envoy on `checked_config` for an upstream answering `health`, each with
/// its own upstream, and observes both starts at once.
async fn both(health: Health, timeout: &str) -> (Start, Start) {
    let (weir_up, envoy_up) = (upstream(health).await, upstream(health).await);
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let spawned = Instant::now();
    let weir = Weir::spawn(
        &checked_config(weir_ports, weir_up, timeout),
        &["--concurrency", "1"],
    );
    let envoy = Envoy::spawn(&checked_config(envoy_ports, envoy_up, timeout), "info");
    let (ours, theirs) = tokio::join!(
        observe_start(weir_ports, spawned),
        observe_start(envoy_ports, spawned)
    );
    drop(envoy);
    drop(weir);
    (ours, theirs)
}

/// The parts that must be equal, with a message.
fn assert_same(case: &str, ours: &Start, theirs: &Start) {
    assert_eq!(
        (ours.first_status, &ours.flags, &ours.stats),
        (theirs.first_status, &theirs.flags, &theirs.stats),
        "{case}: weir (left) and Envoy (right) differ\nweir {ours:#?}\nEnvoy {theirs:#?}"
    );
}

/// `/health` answers 503 after 0.5 s: the listener opens after that first check; the host
/// is unhealthy at once (unhealthy_threshold 3 notwithstanding); with no host healthy,
/// panic mode still sends the first request to it (200, `lb_healthy_panic` 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_first_check_leaves_the_host_unhealthy_as_envoy() {
    let health = Health {
        status: 503,
        delay: Duration::from_millis(500),
    };
    let (ours, theirs) = both(health, "1s").await;
    assert_same("503", &ours, &theirs);
    for (who, start) in [("weir", &ours), ("Envoy", &theirs)] {
        assert!(
            start.refused_for >= Duration::from_millis(400),
            "{who}: listener accepted before the first check failed: {start:#?}"
        );
    }
    assert_eq!(ours.first_status, 200, "panic mode routes to the only host");
    assert_eq!(ours.flags, "/failed_active_hc");
    assert_eq!(
        ours.stats,
        "cluster.c.health_check.attempt: 1\ncluster.c.health_check.failure: 1\n\
         cluster.c.health_check.healthy: 0\ncluster.c.health_check.network_failure: 0\n\
         cluster.c.health_check.success: 0\ncluster.c.lb_healthy_panic: 1\n\
         cluster.c.membership_healthy: 0\ncluster.c.membership_total: 1\n"
    );
}

/// `/health` answers 200 after 1 s (within the 3 s timeout): neither listener accepts
/// before it does, `/ready` says 503 `PRE_INITIALIZING` meanwhile, and the one pass makes
/// the host healthy although `healthy_threshold` is 3 (no panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_pass_holds_the_listener_then_makes_the_host_healthy_as_envoy() {
    let health = Health {
        status: 200,
        delay: Duration::from_secs(1),
    };
    let (ours, theirs) = both(health, "3s").await;
    assert_same("slow 200", &ours, &theirs);
    for (who, start) in [("weir", &ours), ("Envoy", &theirs)] {
        assert!(
            start.refused_for >= Duration::from_millis(900),
            "{who}: listener accepted before the first check passed: {start:#?}"
        );
        assert_eq!(
            start.ready_while_refusing,
            Some((503, "PRE_INITIALIZING".to_owned())),
            "{who}: /ready while the cluster warms"
        );
    }
    assert_eq!(ours.flags, "healthy");
    assert_eq!(
        ours.stats,
        "cluster.c.health_check.attempt: 1\ncluster.c.health_check.failure: 0\n\
         cluster.c.health_check.healthy: 1\ncluster.c.health_check.network_failure: 0\n\
         cluster.c.health_check.success: 1\ncluster.c.lb_healthy_panic: 0\n\
         cluster.c.membership_healthy: 1\ncluster.c.membership_total: 1\n"
    );
}

/// `/health` never answers (30 s) and the timeout is 1 s: the start is held for the
/// timeout only, then the host is unhealthy with `active_hc_timeout` (a network failure),
/// and panic mode routes the first request to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_check_that_times_out_holds_the_start_for_its_timeout_as_envoy() {
    let health = Health {
        status: 200,
        delay: Duration::from_secs(30),
    };
    let (ours, theirs) = both(health, "1s").await;
    assert_same("timeout", &ours, &theirs);
    for (who, start) in [("weir", &ours), ("Envoy", &theirs)] {
        assert!(
            (Duration::from_millis(900)..Duration::from_secs(5)).contains(&start.refused_for),
            "{who}: the start waits for the 1 s timeout: {start:#?}"
        );
    }
    assert_eq!(ours.first_status, 200);
    assert_eq!(ours.flags, "/failed_active_hc/active_hc_timeout");
    assert_eq!(
        ours.stats,
        "cluster.c.health_check.attempt: 1\ncluster.c.health_check.failure: 1\n\
         cluster.c.health_check.healthy: 0\ncluster.c.health_check.network_failure: 1\n\
         cluster.c.health_check.success: 0\ncluster.c.lb_healthy_panic: 1\n\
         cluster.c.membership_healthy: 0\ncluster.c.membership_total: 1\n"
    );
}

/// [`checked_config`] with `/v` answered `version` by the listener itself, and cluster `c`
/// checked only where `timeout` is given.
fn versioned_config(ports: Ports, up: SocketAddr, timeout: Option<&str>, version: &str) -> Value {
    let mut cfg = match timeout {
        Some(timeout) => checked_config(ports, up, timeout),
        None => {
            let mut cfg = checked_config(ports, up, "1s");
            cfg["static_resources"]["clusters"][0]
                .as_object_mut()
                .map(|cluster| cluster.remove("health_checks"));
            cfg
        }
    };
    let routes = &mut cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"];
    if let Some(routes) = routes.as_array_mut() {
        routes.insert(0, config::direct("/v", 200, version));
    }
    cfg
}

/// A reload that gives a cluster health checks swaps in once the new cluster's host has had
/// its first check (as Envoy warms a new cluster before it takes traffic): when the new
/// config answers, the host is already healthy (no panic routing), though its check took
/// a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_cluster_warms_before_it_takes_traffic() {
    let up = upstream(Health {
        status: 200,
        delay: Duration::from_secs(1),
    })
    .await;
    let ports = Ports::new();
    let weir = Weir::start(&versioned_config(ports, up, None, "v1")).await;
    let next = versioned_config(ports, up, Some("3s"), "v2");
    std::fs::write(
        weir.config_path(),
        serde_json::to_string_pretty(&next).expect("config"),
    )
    .expect("write config");
    let reload = {
        let admin = weir.admin;
        tokio::spawn(async move {
            let request = http::Request::post("/reload")
                .header("host", "localhost")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request");
            weir_tests::client::h1_request(admin, request).await
        })
    };
    let written = Instant::now();
    loop {
        let answer = weir_tests::get(ports.http_addr(), "/v")
            .await
            .expect("GET /v");
        if answer.text() == "v2" {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        written.elapsed() >= Duration::from_millis(800),
        "the new config served before its cluster's first check answered ({:?})",
        written.elapsed()
    );
    let first = weir_tests::get(ports.http_addr(), "/first")
        .await
        .expect("GET");
    assert_eq!(first.status, 200);
    assert_eq!(
        weir.admin_get(STATS).await.1,
        "cluster.c.health_check.attempt: 1\ncluster.c.health_check.failure: 0\n\
         cluster.c.health_check.healthy: 1\ncluster.c.health_check.network_failure: 0\n\
         cluster.c.health_check.success: 1\ncluster.c.lb_healthy_panic: 0\n\
         cluster.c.membership_healthy: 1\ncluster.c.membership_total: 1\n"
    );
    let _ = reload.await;
}

/// What one proxy's admin said while its cluster warmed (its listener still refusing), and
/// the cluster's membership stats once the listener accepted.
#[derive(Debug, PartialEq)]
struct Warming {
    /// `/ready`: status and body.
    ready: (u16, String),
    /// `/server_info`: status and `state`.
    server_info: (u16, String),
    /// `/stats`: status, and the cluster's `membership_*` lines.
    stats: (u16, String),
    /// `/clusters`: status, and the health flags of cluster `c`'s hosts.
    clusters: (u16, String),
    /// `/config_dump` and `/listeners`: statuses.
    dump_and_listeners: (u16, u16),
    /// Whether the listener still refused after all of the above was read.
    still_refusing: bool,
    /// The `membership_*` lines once the listener accepted.
    membership_after: String,
}

/// `/stats` filtered to cluster `c`'s membership stats.
const MEMBERSHIP: &str = "/stats?filter=%5Ecluster%5C.c%5C.membership_";

/// Waits (at most 10 s) for `ports`' admin to answer `/ready` while the listener refuses,
/// reads the admin as [`Warming`] says, then waits (at most 15 s) for the listener.
async fn observe_warming(ports: Ports) -> Warming {
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
    let get = |path: &'static str| async move {
        match tokio::time::timeout(
            Duration::from_secs(2),
            weir_tests::client::get_host(admin, "localhost", path),
        )
        .await
        {
            Ok(Ok(resp)) => Some((resp.status, resp.text())),
            _ => None,
        }
    };
    let began = Instant::now();
    let ready = loop {
        if let Some((status, body)) = get("/ready").await {
            break (status, body.trim().to_owned());
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "admin {admin} never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (info_status, info) = get("/server_info").await.unwrap_or_default();
    let state = serde_json::from_str::<Value>(&info)
        .ok()
        .and_then(|info| info["state"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let stats = get(MEMBERSHIP).await.unwrap_or_default();
    let (clusters_status, clusters) = get("/clusters").await.unwrap_or_default();
    let flags = clusters
        .lines()
        .filter(|line| line.starts_with("c::"))
        .filter_map(|line| {
            line.split_once("::health_flags::")
                .map(|(_, f)| f.to_owned())
        })
        .collect::<Vec<_>>()
        .join(",");
    let dump = get("/config_dump").await.map_or(0, |(status, _)| status);
    let listeners = get("/listeners").await.map_or(0, |(status, _)| status);
    let still_refusing = TcpStream::connect(ports.http_addr()).await.is_err();
    while TcpStream::connect(ports.http_addr()).await.is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "listener never accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let membership_after = get(MEMBERSHIP).await.unwrap_or_default().1;
    Warming {
        ready,
        server_info: (info_status, state),
        stats,
        clusters: (clusters_status, flags),
        dump_and_listeners: (dump, listeners),
        still_refusing,
        membership_after,
    }
}

/// Starts weir and Envoy on [`checked_config`] (timeout 5 s, `ignore` as the cluster's
/// `ignore_new_hosts_until_first_hc`) for an upstream whose `/health` answers `status`
/// after 2 s, and observes both while they warm.
async fn both_warming(status: u16, ignore: bool) -> (Warming, Warming) {
    both_warming_as(status, ignore, false).await
}

/// [`both_warming`], with cluster `c` STRICT_DNS (`localhost`, IPv4 only) where `dns` says.
async fn both_warming_as(status: u16, ignore: bool, dns: bool) -> (Warming, Warming) {
    let health = Health {
        status,
        delay: Duration::from_secs(2),
    };
    let (weir_up, envoy_up) = (upstream(health).await, upstream(health).await);
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let config = |ports: Ports, up: SocketAddr| {
        let mut cfg = checked_config(ports, up, "5s");
        if ignore {
            cfg["static_resources"]["clusters"][0]["common_lb_config"] =
                json!({"ignore_new_hosts_until_first_hc": true});
        }
        if dns {
            let cluster = &mut cfg["static_resources"]["clusters"][0];
            cluster["type"] = json!("STRICT_DNS");
            cluster["dns_lookup_family"] = json!("V4_ONLY");
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["address"] = json!("localhost");
        }
        cfg
    };
    let weir = Weir::spawn(&config(weir_ports, weir_up), &["--concurrency", "1"]);
    let envoy = Envoy::spawn(&config(envoy_ports, envoy_up), "info");
    let (ours, theirs) = tokio::join!(observe_warming(weir_ports), observe_warming(envoy_ports));
    drop(envoy);
    drop(weir);
    (ours, theirs)
}

/// While a cluster warms at start (its first check takes 2 s), the whole admin answers as
/// Envoy's: `/ready` 503 and `/server_info` 200 with `PRE_INITIALIZING`, `/stats`,
/// `/clusters` (the host `/failed_active_hc`), `/config_dump` and `/listeners` 200; the
/// membership stats (total, healthy, degraded, excluded, change) are Envoy's then and after
/// the first check failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_answers_while_clusters_warm_as_envoy() {
    let (ours, theirs) = both_warming(503, false).await;
    assert_eq!(ours, theirs, "weir (left) and Envoy (right) differ");
    assert!(ours.still_refusing, "{ours:#?}");
    assert_eq!(ours.ready, (503, "PRE_INITIALIZING".to_owned()));
    assert_eq!(ours.server_info, (200, "PRE_INITIALIZING".to_owned()));
    assert_eq!(ours.stats.0, 200);
    assert_eq!(ours.dump_and_listeners, (200, 200));
}

/// As above with `ignore_new_hosts_until_first_hc`, the first check passing: the membership
/// stats (`membership_excluded` above all) and the health flags match Envoy's while the
/// cluster warms and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_stats_while_hosts_wait_for_their_first_check_as_envoy() {
    let (ours, theirs) = both_warming(200, true).await;
    assert_eq!(ours, theirs, "weir (left) and Envoy (right) differ");
    assert!(ours.still_refusing, "{ours:#?}");
}

/// The same with a STRICT_DNS cluster (`localhost`, IPv4 only): its host comes from the
/// first resolution, a new host, so `ignore_new_hosts_until_first_hc` excludes it until its
/// first check (`membership_excluded` 1 while it warms, in Envoy as in weir).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_host_waiting_for_its_first_check_is_excluded_as_envoy() {
    let (ours, theirs) = both_warming_as(200, true, true).await;
    assert_eq!(ours, theirs, "weir (left) and Envoy (right) differ");
    assert!(ours.still_refusing, "{ours:#?}");
    assert!(
        ours.stats.1.contains("cluster.c.membership_excluded: 1\n"),
        "{ours:#?}"
    );
    assert!(
        ours.membership_after
            .contains("cluster.c.membership_excluded: 0\n"),
        "{ours:#?}"
    );
}
