//! Degraded and excluded hosts as Envoy 1.40 has them, each case run through weir and Envoy
//! on the same config with upstreams of their own that answer the same way: an active HTTP
//! health check answered 200 with `x-envoy-degraded` makes a host degraded
//! (`/degraded_active_hc`), an endpoint with `health_status: DEGRADED` is degraded
//! (`/degraded_eds_health`), and a check failed with `x-envoy-immediate-health-check-fail`
//! excludes its host (`/excluded_via_immediate_hc_fail`). The `/clusters` flags and the
//! `membership_*` stats must be Envoy's, and the share of requests each host gets must be
//! the one Envoy's priority load gives (overprovisioning factor 1.4), on both, within a
//! tolerance over a bounded number of requests.

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use weir_tests::Weir;
use weir_tests::config::{self, Ports};
use weir_tests::envoy::Envoy;
use weir_tests::xds_resources::{
    AdsApi, ads_bootstrap, eds_cluster, listener_with_rds, load_assignment, route_configuration,
};
use weir_tests::xds_server::XdsServer;

/// Requests sent through each proxy in a case.
const REQUESTS: usize = 1_000;
/// How far (percentage points) a host's share may stray from Envoy's figure.
const TOLERANCE_POINTS: f64 = 6.0;

/// How a host answers its `/health`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
enum Check {
    /// 200.
    Pass,
    /// 200 with `x-envoy-degraded`.
    Degraded,
    /// 503 with `x-envoy-immediate-health-check-fail: true` (Envoy's health check filter
    /// while the server fails).
    ImmediateFail,
    /// 503.
    Fail,
}

/// One upstream host of a case: how it answers checks, and whether its endpoint says
/// `health_status: DEGRADED`.
#[derive(Clone, Copy, Debug)]
struct HostCase {
    check: Check,
    eds_degraded: bool,
}

const PASS: HostCase = HostCase {
    check: Check::Pass,
    eds_degraded: false,
};
const DEGRADED_HC: HostCase = HostCase {
    check: Check::Degraded,
    eds_degraded: false,
};
const DEGRADED_EDS: HostCase = HostCase {
    check: Check::Pass,
    eds_degraded: true,
};
const IMMEDIATE_FAIL: HostCase = HostCase {
    check: Check::ImmediateFail,
    eds_degraded: false,
};

/// A keep-alive HTTP/1.1 upstream on 127.0.0.1 answering `/health` as `check` says and
/// every other path 200, counting those in `hits`; runs until the test ends.
async fn upstream(check: Check, hits: Arc<AtomicUsize>) -> SocketAddr {
    upstream_switched(Arc::new(AtomicU8::new(check as u8)), hits).await
}

/// [`upstream`], answering `/health` as `check` (a [`Check`] as `u8`) says at the time.
async fn upstream_switched(check: Arc<AtomicU8>, hits: Arc<AtomicUsize>) -> SocketAddr {
    upstream_answering(
        check,
        hits,
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nup",
    )
    .await
}

/// [`upstream_switched`], answering every path but `/health` with `answer`.
async fn upstream_answering(
    check: Arc<AtomicU8>,
    hits: Arc<AtomicUsize>,
    answer: &'static str,
) -> SocketAddr {
    weir_tests::raw_h1::serve(move |path| {
        let answer = if path == "/health" {
            match check.load(Ordering::Relaxed) {
                c if c == Check::Pass as u8 => "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                c if c == Check::Fail as u8 => {
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                }
                c if c == Check::Degraded as u8 => {
                    "HTTP/1.1 200 OK\r\nx-envoy-degraded: true\r\ncontent-length: 0\r\n\r\n"
                }
                _ => {
                    "HTTP/1.1 503 Service Unavailable\r\n\
                     x-envoy-immediate-health-check-fail: true\r\ncontent-length: 0\r\n\r\n"
                }
            }
        } else {
            hits.fetch_add(1, Ordering::Relaxed);
            answer
        };
        std::future::ready(answer.to_owned())
    })
    .await
}

/// One listener routing everything to cluster `c` over `hosts` (`health_status: DEGRADED`
/// where the case says), checked on `/health` once while the test looks when `checked`.
fn degraded_config(ports: Ports, hosts: &[(SocketAddr, HostCase)], checked: bool) -> Value {
    let addrs: Vec<SocketAddr> = hosts.iter().map(|(addr, _)| *addr).collect();
    let mut cluster = config::static_cluster("c", &addrs);
    for (i, (_, case)) in hosts.iter().enumerate() {
        if case.eds_degraded {
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][i]["health_status"] =
                json!("DEGRADED");
        }
    }
    if checked {
        cluster["health_checks"] = json!([{
            "timeout": "2s",
            "interval": "30s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "http_health_check": {"path": "/health"},
        }]);
    }
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

/// What one proxy showed: each host's `/clusters` flags (in the hosts' order), the
/// cluster's `membership_*` and `lb_healthy_panic` stats after the requests, and each
/// host's share of [`REQUESTS`] in percent.
#[derive(Debug)]
struct Seen {
    flags: Vec<String>,
    stats: String,
    shares: Vec<f64>,
}

/// `/stats` filtered to cluster `c`'s membership stats, panic counter and degraded gauge.
const STATS: &str =
    "/stats?filter=%5Ecluster%5C.c%5C.(membership_%7Clb_healthy_panic%7Chealth_check%5C.degraded)";

/// Sends `requests` GETs of `/work` to `listener` (each must be a 200, all before
/// `deadline`) and returns each upstream's share of them in percent, from its hit counter.
/// The admin's answer at `path` (empty when it does not answer).
async fn admin_text(admin: SocketAddr, path: &str) -> String {
    weir_tests::client::get_host(admin, "localhost", path)
        .await
        .map(|resp| resp.text())
        .unwrap_or_default()
}

/// Each of `addrs`' health flags in cluster `cluster` as `/clusters` gives them
/// (`(missing)` for a host it does not list).
async fn health_flags(admin: SocketAddr, cluster: &str, addrs: &[SocketAddr]) -> Vec<String> {
    let clusters = admin_text(admin, "/clusters").await;
    addrs
        .iter()
        .map(|addr| {
            let prefix = format!("{cluster}::{addr}::health_flags::");
            clusters
                .lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .unwrap_or("(missing)")
                .to_owned()
        })
        .collect()
}

async fn shares_of(
    listener: SocketAddr,
    hits: &[Arc<AtomicUsize>],
    requests: usize,
    deadline: Instant,
    what: &str,
) -> Vec<f64> {
    let before: Vec<usize> = hits.iter().map(|h| h.load(Ordering::Relaxed)).collect();
    for _ in 0..requests {
        let answer = weir_tests::get(listener, "/work").await.expect("GET /work");
        assert_eq!(answer.status, 200, "{what}: {}", answer.text());
        assert!(Instant::now() < deadline, "{what}: requests took too long");
    }
    hits.iter()
        .zip(before)
        .map(|(h, before)| 100.0 * (h.load(Ordering::Relaxed) - before) as f64 / requests as f64)
        .collect()
}

/// Starts a proxy (by `start`) on [`degraded_config`] for fresh upstreams as `hosts` says,
/// waits (at most 15 s) for its listener, reads the flags, sends [`REQUESTS`] GETs one
/// after the other and counts where they went.
async fn run(
    hosts: &[HostCase],
    checked: bool,
    start: impl FnOnce(&Value) -> Box<dyn std::any::Any>,
) -> Seen {
    let mut upstreams = Vec::new();
    for case in hosts {
        let hits = Arc::new(AtomicUsize::new(0));
        let addr = upstream(case.check, hits.clone()).await;
        upstreams.push((addr, *case, hits));
    }
    let cases: Vec<(SocketAddr, HostCase)> = upstreams.iter().map(|(a, c, _)| (*a, *c)).collect();
    let ports = Ports::new();
    let proxy = start(&degraded_config(ports, &cases, checked));
    let began = Instant::now();
    while TcpStream::connect(ports.http_addr()).await.is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "listener {} never accepted",
            ports.http_addr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|(addr, _, _)| *addr).collect();
    let flags = health_flags(admin, "c", &addrs).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..REQUESTS {
        let answer = weir_tests::get(ports.http_addr(), "/work")
            .await
            .expect("GET /work");
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(Instant::now() < deadline, "requests took over 60 s");
    }
    let stats = admin_text(admin, STATS).await;
    drop(proxy);
    let shares = upstreams
        .iter()
        .map(|(_, _, hits)| 100.0 * hits.load(Ordering::Relaxed) as f64 / REQUESTS as f64)
        .collect();
    Seen {
        flags,
        stats,
        shares,
    }
}

/// Runs `hosts` through weir and Envoy (one after the other, each with its own upstreams)
/// and asserts the same flags and stats and, for both, each host's share within
/// [`TOLERANCE_POINTS`] of `want` (percent per host, Envoy's priority load).
async fn compare(case: &str, hosts: &[HostCase], checked: bool, want: &[f64]) -> Seen {
    let ours = run(hosts, checked, |config| {
        Box::new(Weir::spawn(config, &["--concurrency", "1"]))
    })
    .await;
    let theirs = run(hosts, checked, |config| {
        Box::new(Envoy::spawn(config, "info"))
    })
    .await;
    eprintln!(
        "{case}: shares weir {:?} Envoy {:?}; flags {:?}",
        ours.shares, theirs.shares, theirs.flags
    );
    assert_eq!(
        (&ours.flags, &ours.stats),
        (&theirs.flags, &theirs.stats),
        "{case}: weir (left) and Envoy (right) differ\nweir {ours:#?}\nEnvoy {theirs:#?}"
    );
    for (who, seen) in [("weir", &ours), ("Envoy", &theirs)] {
        for (i, (share, want)) in seen.shares.iter().zip(want).enumerate() {
            assert!(
                (share - want).abs() <= TOLERANCE_POINTS,
                "{case}: {who} sent {share:.1}% to host {i}, Envoy's load says {want}%\n\
                 weir {ours:#?}\nEnvoy {theirs:#?}"
            );
        }
    }
    ours
}

/// One healthy host and one whose check says `x-envoy-degraded`: 50% healthy * 1.4 = 70%
/// of the load to the healthy host, the degraded one makes up the other 30%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_check_takes_what_the_healthy_host_lacks_as_envoy() {
    let seen = compare("1+1", &[PASS, DEGRADED_HC], true, &[70.0, 30.0]).await;
    assert_eq!(seen.flags, ["healthy", "/degraded_active_hc"]);
    assert!(
        seen.stats.contains("cluster.c.membership_degraded: 1\n")
            && seen.stats.contains("cluster.c.membership_healthy: 1\n")
            && seen.stats.contains("cluster.c.health_check.degraded: 1\n"),
        "{seen:#?}"
    );
}

/// One healthy host of three, two degraded: 140/3 = 46% to the healthy one, 54% to the
/// degraded two (27% each); 4 healthy and 1 degraded: the degraded one gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_degraded_share_follows_envoys_overprovisioning_factor() {
    let seen = compare(
        "1+2",
        &[PASS, DEGRADED_HC, DEGRADED_HC],
        true,
        &[46.0, 27.0, 27.0],
    )
    .await;
    assert!(
        seen.stats.contains("cluster.c.membership_degraded: 2\n"),
        "{seen:#?}"
    );
    compare(
        "4+1",
        &[PASS, PASS, PASS, PASS, DEGRADED_HC],
        true,
        &[25.0, 25.0, 25.0, 25.0, 0.0],
    )
    .await;
}

/// `health_status: DEGRADED` on a static endpoint (Envoy takes it there too), without
/// health checks: `/degraded_eds_health`, and the same 70/30 split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_endpoint_status_is_envoys() {
    let seen = compare("eds 1+1", &[PASS, DEGRADED_EDS], false, &[70.0, 30.0]).await;
    assert_eq!(seen.flags, ["healthy", "/degraded_eds_health"]);
}

/// Two of three hosts fail their check with `x-envoy-immediate-health-check-fail`: they
/// are excluded (`membership_excluded` 2), so the one healthy host is 100% of the hosts
/// counted, no panic mode, and it takes every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_failed_immediately_are_excluded_as_envoy() {
    let seen = compare(
        "immediate",
        &[PASS, IMMEDIATE_FAIL, IMMEDIATE_FAIL],
        true,
        &[100.0, 0.0, 0.0],
    )
    .await;
    assert_eq!(
        seen.flags[1],
        "/failed_active_hc/excluded_via_immediate_hc_fail"
    );
    assert!(
        seen.stats.contains("cluster.c.membership_excluded: 2\n")
            && seen.stats.contains("cluster.c.lb_healthy_panic: 0\n"),
        "{seen:#?}"
    );
}

/// The EDS health statuses the EDS test walks host 1 through, with the share of requests
/// Envoy's load gives hosts 0 and 1 under each. Each step changes the host's coarse health:
/// Envoy rebuilds its host set (and its membership gauges) only then, so an update from
/// UNHEALTHY to DRAINING would leave Envoy's `membership_excluded` stale where weir's is
/// current.
const EDS_PHASES: [(HealthStatus, [f64; 2]); 4] = [
    (HealthStatus::Degraded, [70.0, 30.0]),
    (HealthStatus::Draining, [100.0, 0.0]),
    (HealthStatus::Healthy, [50.0, 50.0]),
    (HealthStatus::Unhealthy, [100.0, 0.0]),
];

/// `/stats` filtered to cluster `c1`'s host counts (not `membership_change`: weir builds
/// an EDS cluster afresh on each update).
const EDS_STATS: &str =
    "/stats?filter=%5Ecluster%5C.c1%5C.membership_(healthy%7Cdegraded%7Cexcluded%7Ctotal)";

/// Starts a proxy (by `start`) on an ADS bootstrap whose control plane serves cluster `c1`
/// (EDS) over two fresh upstreams, host 1 with each of [`EDS_PHASES`]' statuses in turn;
/// under each, once the proxy shows the new flags (at most 10 s), reads the flags and
/// stats and sends [`REQUESTS`] GETs.
async fn run_eds(start: impl FnOnce(&Value) -> Box<dyn std::any::Any>) -> Vec<Seen> {
    let hits: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut addrs = Vec::new();
    for hits in &hits {
        addrs.push(upstream(Check::Pass, hits.clone()).await);
    }
    let server = XdsServer::start().await;
    let port = weir_tests::free_port();
    let admin_port = weir_tests::free_port();
    server.set("c1", &eds_cluster("c1"));
    server.set("l1", &listener_with_rds("l1", port, "r1"));
    server.set("r1", &route_configuration("r1", "/", "c1"));
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let mut seen = Vec::new();
    let mut previous = "(missing)".to_owned();
    let mut proxy = None;
    let mut start = Some(start);
    for (status, _) in EDS_PHASES {
        let mut assignment = load_assignment("c1", &addrs);
        assignment.endpoints[0].lb_endpoints[1].health_status = status as i32;
        server.set("c1", &assignment);
        if let Some(start) = start.take() {
            proxy = Some(start(&ads_bootstrap(
                "degraded",
                admin_port,
                server.addr(),
                AdsApi::Grpc,
            )));
        }
        let began = Instant::now();
        let flags = loop {
            let flags = health_flags(admin, "c1", &addrs).await;
            let serving = weir_tests::get(listener, "/probe")
                .await
                .is_ok_and(|resp| resp.status == 200);
            if serving && flags[1] != previous && flags[1] != "(missing)" {
                break flags;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "{status:?}: never applied: {flags:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        previous = flags[1].clone();
        let shares = shares_of(
            listener,
            &hits,
            REQUESTS,
            began + Duration::from_secs(70),
            &format!("{status:?}"),
        )
        .await;
        let stats = admin_text(admin, EDS_STATS).await;
        seen.push(Seen {
            flags,
            stats,
            shares,
        });
    }
    drop(proxy);
    seen
}

/// Host 1's `health_status` from EDS, DEGRADED, DRAINING, HEALTHY, UNHEALTHY: the flags
/// (`/degraded_eds_health`, `/eds_status_draining`, `healthy`, `/failed_eds_health`), the
/// host counts (degraded 1; excluded 1; healthy 2; healthy 1) and the split (70/30; all to
/// host 0; 50/50; all to host 0) are Envoy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eds_health_statuses_are_envoys() {
    let ours = run_eds(|config| Box::new(Weir::spawn(config, &["--concurrency", "1"]))).await;
    let theirs = run_eds(|config| Box::new(Envoy::spawn(config, "info"))).await;
    for (((status, want), ours), theirs) in EDS_PHASES.iter().zip(&ours).zip(&theirs) {
        eprintln!(
            "eds {status:?}: shares weir {:?} Envoy {:?}; flags {:?}",
            ours.shares, theirs.shares, theirs.flags
        );
        assert_eq!(
            (&ours.flags, &ours.stats),
            (&theirs.flags, &theirs.stats),
            "{status:?}: weir (left) and Envoy (right) differ"
        );
        for (who, seen) in [("weir", ours), ("Envoy", theirs)] {
            for (i, (share, want)) in seen.shares.iter().zip(want).enumerate() {
                assert!(
                    (share - want).abs() <= TOLERANCE_POINTS,
                    "{status:?}: {who} sent {share:.1}% to host {i}, Envoy's load says {want}%"
                );
            }
        }
    }
    assert_eq!(ours[0].flags, ["healthy", "/degraded_eds_health"]);
    assert!(
        ours[1]
            .stats
            .contains("cluster.c1.membership_excluded: 1\n"),
        "{:#?}",
        ours[1]
    );
}

/// Cluster `c1`'s `membership_*` stats, `membership_change` included.
const REMOVAL_STATS: &str = "/stats?filter=%5Ecluster%5C.c1%5C.membership_";

/// What one proxy showed of the EDS removal of a health-checked host (its cluster with
/// `ignore_health_on_host_removal` as `ignore` says): per step the flags of hosts 0 and 1,
/// the membership stats and the shares of the requests sent then.
async fn run_removal(
    ignore: bool,
    start: impl FnOnce(&Value) -> Box<dyn std::any::Any>,
) -> Vec<Seen> {
    use envoy_types::pb::envoy::config::core::v3 as core_pb;
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
    let hits: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let checks: Vec<Arc<AtomicU8>> = (0..2)
        .map(|_| Arc::new(AtomicU8::new(Check::Pass as u8)))
        .collect();
    let mut addrs = Vec::new();
    for (hits, check) in hits.iter().zip(&checks) {
        addrs.push(upstream_switched(check.clone(), hits.clone()).await);
    }
    let server = XdsServer::start().await;
    let port = weir_tests::free_port();
    let admin_port = weir_tests::free_port();
    let mut cluster = eds_cluster("c1");
    let ms = |millis: i32| PbDuration {
        seconds: 0,
        nanos: millis * 1_000_000,
    };
    cluster.health_checks = vec![core_pb::HealthCheck {
        timeout: Some(ms(500)),
        interval: Some(ms(200)),
        no_traffic_interval: Some(ms(200)),
        unhealthy_threshold: Some(UInt32Value { value: 1 }),
        healthy_threshold: Some(UInt32Value { value: 1 }),
        health_checker: Some(core_pb::health_check::HealthChecker::HttpHealthCheck(
            core_pb::health_check::HttpHealthCheck {
                path: "/health".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }];
    cluster.ignore_health_on_host_removal = ignore;
    server.set("c1", &cluster);
    server.set("c1", &load_assignment("c1", &addrs));
    server.set("l1", &listener_with_rds("l1", port, "r1"));
    server.set("r1", &route_configuration("r1", "/", "c1"));
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let proxy = start(&ads_bootstrap(
        "removal",
        admin_port,
        server.addr(),
        AdsApi::Grpc,
    ));
    let flags_now = || health_flags(admin, "c1", &addrs);
    let mut seen = Vec::new();
    // 0: both hosts healthy; 1: EDS drops host 1; 2: host 1 then fails its check.
    for step in 0..3 {
        match step {
            1 => server.set("c1", &load_assignment("c1", &addrs[..1])),
            2 => checks[1].store(Check::ImmediateFail as u8, Ordering::Relaxed),
            _ => {}
        }
        let began = Instant::now();
        let flags = loop {
            let flags = flags_now().await;
            let serving = weir_tests::get(listener, "/probe")
                .await
                .is_ok_and(|resp| resp.status == 200);
            let done = match step {
                0 => flags.iter().all(|f| f == "healthy"),
                1 if !ignore => flags[1] != "healthy",
                1 => flags[1] == "(missing)",
                _ => flags[1] == "(missing)",
            };
            if serving && done {
                break flags;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "step {step}: never came: {flags:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let stats = admin_text(admin, REMOVAL_STATS).await;
        let shares = shares_of(
            listener,
            &hits,
            400,
            began + Duration::from_secs(40),
            &format!("step {step}"),
        )
        .await;
        seen.push(Seen {
            flags,
            stats,
            shares,
        });
    }
    drop(proxy);
    seen
}

/// EDS drops a host that passes its health checks: as Envoy (`ignore_health_on_host_removal`
/// false), it stays, flagged `/pending_dynamic_removal`, counted in `membership_total` and
/// `membership_healthy` (not `membership_excluded`) and balanced over, until its check
/// fails; then it goes (a membership change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_host_passing_its_checks_stays_until_it_fails_as_envoy() {
    removal_as_envoy(false, [[50.0, 50.0], [50.0, 50.0], [100.0, 0.0]]).await;
}

/// With `ignore_health_on_host_removal`, a host EDS drops goes at once, passing or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_health_on_host_removal_drops_it_at_once_as_envoy() {
    removal_as_envoy(true, [[50.0, 50.0], [100.0, 0.0], [100.0, 0.0]]).await;
}

/// Runs [`run_removal`] through weir and Envoy and compares each step, the shares within
/// 10 points of `wants`.
async fn removal_as_envoy(ignore: bool, wants: [[f64; 2]; 3]) {
    let ours = run_removal(ignore, |config| {
        Box::new(Weir::spawn(config, &["--concurrency", "1"]))
    })
    .await;
    let theirs = run_removal(ignore, |config| Box::new(Envoy::spawn(config, "info"))).await;
    for (step, ((ours, theirs), want)) in ours.iter().zip(&theirs).zip(wants).enumerate() {
        eprintln!(
            "removal step {step}: shares weir {:?} Envoy {:?}; flags {:?}",
            ours.shares, theirs.shares, theirs.flags
        );
        assert_eq!(
            (&ours.flags, &ours.stats),
            (&theirs.flags, &theirs.stats),
            "step {step}: weir (left) and Envoy (right) differ"
        );
        for (who, seen) in [("weir", ours), ("Envoy", theirs)] {
            for (i, (share, want)) in seen.shares.iter().zip(want).enumerate() {
                assert!(
                    (share - want).abs() <= 10.0,
                    "step {step}: {who} sent {share:.1}% to host {i}, want {want}%"
                );
            }
        }
    }
    let want = if ignore {
        "(missing)"
    } else {
        "/pending_dynamic_removal"
    };
    assert_eq!(ours[1].flags, ["healthy", want]);
}

/// A routed response of host 1 carries `x-envoy-immediate-health-check-fail` (its own
/// health check filter failing): as Envoy's router, the host is failed at once and
/// excluded (`/failed_active_hc/excluded_via_immediate_hc_fail`, `health_check.failure` and
/// `.passive_failure` 1, `membership_excluded` 1), and host 0, all the hosts counted, takes
/// every later request (no panic mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_failing_its_host_immediately_excludes_it_as_envoy() {
    let ours = run_passive(|config| Box::new(Weir::spawn(config, &["--concurrency", "1"]))).await;
    let theirs = run_passive(|config| Box::new(Envoy::spawn(config, "info"))).await;
    eprintln!(
        "passive: shares weir {:?} Envoy {:?}; flags {:?}",
        ours.shares, theirs.shares, theirs.flags
    );
    assert_eq!(
        (&ours.flags, &ours.stats),
        (&theirs.flags, &theirs.stats),
        "weir (left) and Envoy (right) differ"
    );
    assert_eq!(
        ours.flags,
        [
            "healthy",
            "/failed_active_hc/excluded_via_immediate_hc_fail"
        ]
    );
    for stat in [
        "cluster.c.health_check.passive_failure: 1\n",
        "cluster.c.health_check.failure: 1\n",
        "cluster.c.membership_excluded: 1\n",
        "cluster.c.lb_healthy_panic: 0\n",
    ] {
        assert!(ours.stats.contains(stat), "{stat} in {}", ours.stats);
    }
    for (who, seen) in [("weir", &ours), ("Envoy", &theirs)] {
        assert_eq!(seen.shares, [100.0, 0.0], "{who}");
    }
}

/// `/stats` of cluster `c`: membership, panic and the health check's failure counts.
const PASSIVE_STATS: &str = "/stats?filter=%5Ecluster%5C.c%5C.(membership_%7Clb_healthy_panic%7Chealth_check%5C.(failure%7Cpassive_failure%7Chealthy)%24)";

/// Starts a proxy (by `start`) on [`degraded_config`] (checks every 30 s) over two hosts
/// passing their checks, host 1 answering traffic with
/// `x-envoy-immediate-health-check-fail`; sends GETs (at most 20) until one reached host 1,
/// waits (at most 10 s) for host 1 to be flagged, then reads flags and stats and sends 200
/// GETs, counting where they went.
async fn run_passive(start: impl FnOnce(&Value) -> Box<dyn std::any::Any>) -> Seen {
    let hits: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let pass = || Arc::new(AtomicU8::new(Check::Pass as u8));
    let addrs = [
        upstream_switched(pass(), hits[0].clone()).await,
        upstream_answering(
            pass(),
            hits[1].clone(),
            "HTTP/1.1 200 OK\r\nx-envoy-immediate-health-check-fail: true\r\ncontent-length: 2\r\n\r\nup",
        )
        .await,
    ];
    let ports = Ports::new();
    let proxy = start(&degraded_config(
        ports,
        &[(addrs[0], PASS), (addrs[1], PASS)],
        true,
    ));
    let began = Instant::now();
    while TcpStream::connect(ports.http_addr()).await.is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "listener never accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        let answer = weir_tests::get(ports.http_addr(), "/work")
            .await
            .expect("GET");
        assert_eq!(answer.status, 200);
        if hits[1].load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    assert_eq!(
        hits[1].load(Ordering::Relaxed),
        1,
        "one request reached host 1"
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
    let flagged = Instant::now();
    let flags = loop {
        let flags = health_flags(admin, "c", &addrs).await;
        if flags[1] != "healthy" {
            break flags;
        }
        assert!(
            flagged.elapsed() < Duration::from_secs(10),
            "never flagged: {flags:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stats = admin_text(admin, PASSIVE_STATS).await;
    let shares = shares_of(
        ports.http_addr(),
        &hits,
        200,
        Instant::now() + Duration::from_secs(60),
        "passive",
    )
    .await;
    drop(proxy);
    Seen {
        flags,
        stats,
        shares,
    }
}

/// `/stats` of cluster `c1`: its health checks and host counts.
const KEEP_STATS: &str = "/stats?filter=%5Ecluster%5C.c1%5C.(membership_%7Chealth_check%5C.(attempt%7Csuccess%7Cfailure%7Chealthy)%24)";

/// What one proxy showed after an EDS update added a host to a checked cluster whose host
/// 1 failed its first check and has passed its `/health` since (but is not due for another
/// check for 30 s): the flags of the three hosts and the stats.
async fn run_keeps_health(start: impl FnOnce(&Value) -> Box<dyn std::any::Any>) -> Seen {
    use envoy_types::pb::envoy::config::core::v3 as core_pb;
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
    let checks: Vec<Arc<AtomicU8>> = [Check::Pass, Check::Fail, Check::Pass]
        .iter()
        .map(|check| Arc::new(AtomicU8::new(*check as u8)))
        .collect();
    let mut addrs = Vec::new();
    for check in &checks {
        addrs.push(upstream_switched(check.clone(), Arc::new(AtomicUsize::new(0))).await);
    }
    let server = XdsServer::start().await;
    let port = weir_tests::free_port();
    let admin_port = weir_tests::free_port();
    let mut cluster = eds_cluster("c1");
    let secs = |seconds: i64| PbDuration { seconds, nanos: 0 };
    cluster.health_checks = vec![core_pb::HealthCheck {
        timeout: Some(secs(2)),
        interval: Some(secs(30)),
        no_traffic_interval: Some(secs(30)),
        unhealthy_threshold: Some(UInt32Value { value: 1 }),
        healthy_threshold: Some(UInt32Value { value: 1 }),
        health_checker: Some(core_pb::health_check::HealthChecker::HttpHealthCheck(
            core_pb::health_check::HttpHealthCheck {
                path: "/health".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }];
    server.set("c1", &cluster);
    server.set("c1", &load_assignment("c1", &addrs[..2]));
    server.set("l1", &listener_with_rds("l1", port, "r1"));
    server.set("r1", &route_configuration("r1", "/", "c1"));
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let proxy = start(&ads_bootstrap(
        "keeps-health",
        admin_port,
        server.addr(),
        AdsApi::Grpc,
    ));
    let flags_now = || health_flags(admin, "c1", &addrs);
    let began = Instant::now();
    loop {
        let flags = flags_now().await;
        let serving = weir_tests::get(listener, "/probe").await.is_ok();
        if serving && flags[..2] == ["healthy", "/failed_active_hc"] {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "never started: {flags:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    checks[1].store(Check::Pass as u8, Ordering::Relaxed);
    server.set("c1", &load_assignment("c1", &addrs));
    let updated = Instant::now();
    let flags = loop {
        let flags = flags_now().await;
        if flags[2] == "healthy" {
            break flags;
        }
        assert!(
            updated.elapsed() < Duration::from_secs(10),
            "the added host never passed: {flags:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stats = admin_text(admin, KEEP_STATS).await;
    drop(proxy);
    Seen {
        flags,
        stats,
        shares: Vec::new(),
    }
}

/// An EDS update that adds a host keeps the other hosts' health and check schedules, as
/// Envoy's: host 1, failed at its first check, stays failed until its next check is due
/// (30 s) although its `/health` passes now; only the new host is checked (attempts 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eds_update_keeps_the_hosts_health_as_envoy() {
    let ours =
        run_keeps_health(|config| Box::new(Weir::spawn(config, &["--concurrency", "1"]))).await;
    let theirs = run_keeps_health(|config| Box::new(Envoy::spawn(config, "info"))).await;
    assert_eq!(
        (&ours.flags, &ours.stats),
        (&theirs.flags, &theirs.stats),
        "weir (left) and Envoy (right) differ"
    );
    assert_eq!(ours.flags, ["healthy", "/failed_active_hc", "healthy"]);
}
