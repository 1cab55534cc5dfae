//! `GET /clusters?format=json` as Envoy 1.40 writes it: the same config (a cluster of two
//! weighted hosts under active health checks, one failing them, and a cluster whose one
//! host the config marks `DEGRADED`) and the same requests through weir and Envoy, then both
//! answers compared key by key, in the order written: nesting, value types, addresses,
//! health flags, weights, thresholds and the per-host counters.
//!
//! What weir does not keep is taken out of Envoy's answer first (and checked to be what it
//! is): the per-host stats weir has no figure for, each host's `locality` (`{}` here), and
//! the `HIGH`-priority thresholds. A second case takes an EDS cluster from a control plane
//! (`added_via_api`). `cx_active`'s value depends on the number of workers
//! (each has its own pools), so it is checked apart.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weir_tests::H1Upstream;
use weir_tests::config::{self, Ports};
use weir_tests::side_by_side::{Kind, Proxy};
use weir_tests::xds_resources::{
    AdsApi, ads_bootstrap, eds_cluster, listener_with_rds, load_assignment, route_configuration,
};
use weir_tests::xds_server::XdsServer;

/// Bounds every wait.
const LIMIT: Duration = Duration::from_secs(20);

/// The per-host stats weir keeps, in Envoy's order (counters, then gauges, by name).
const WEIR_STATS: [&str; 3] = ["rq_total", "cx_active", "rq_active"];

/// The per-host stats Envoy writes and weir does not keep, in Envoy's order.
const ENVOY_ONLY_STATS: [&str; 6] = [
    "cx_connect_fail",
    "cx_total",
    "rq_error",
    "rq_success",
    "rq_timeout",
    "rq_pending_active",
];

/// A JSON value whose objects keep their keys in the order they were written, so that two
/// answers compare in their order too.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    Leaf(Value),
}

impl Json {
    fn parse(text: &str) -> Json {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(fields) => fields.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn remove(&mut self, key: &str) -> Option<Json> {
        match self {
            Json::Object(fields) => {
                let at = fields.iter().position(|(k, _)| k == key)?;
                Some(fields.remove(at).1)
            }
            _ => None,
        }
    }

    fn items_mut(&mut self) -> &mut Vec<Json> {
        match self {
            Json::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Leaf(Value::String(s)) => s,
            _ => "",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Leaf(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Leaf(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Leaf(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Leaf(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Leaf(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Leaf(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields = Vec::new();
        while let Some(field) = map.next_entry::<String, Json>()? {
            fields.push(field);
        }
        Ok(Json::Object(fields))
    }
}

/// Listener `ingress` routes everything to cluster `c`: hosts `good` (weight 3) and `bad`
/// (weight 1), health checked every 30 s (so only the first check runs while the test
/// looks). Cluster `spare` (no route) has one host, weight 5, that the config says is
/// `DEGRADED`.
fn proxy_config(ports: Ports, good: SocketAddr, bad: SocketAddr) -> Value {
    let mut checked = config::static_cluster("c", &[good, bad]);
    checked["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["load_balancing_weight"] =
        json!(3);
    checked["load_assignment"]["endpoints"][0]["lb_endpoints"][1]["load_balancing_weight"] =
        json!(1);
    checked["health_checks"] = json!([{
        "timeout": "1s",
        "interval": "30s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "http_health_check": {"path": "/health"},
    }]);
    let mut spare = config::static_cluster("spare", &[good]);
    spare["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["load_balancing_weight"] = json!(5);
    spare["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["health_status"] =
        json!("DEGRADED");
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
        vec![checked, spare],
    )
}

/// Whether `clusters` shows cluster `c`'s first host passing its checks and its second
/// failing them (both first checks are in).
fn checked_once(clusters: &Json) -> bool {
    let Some(Json::Array(statuses)) = clusters.get("cluster_statuses") else {
        return false;
    };
    let Some(Json::Array(hosts)) = statuses
        .iter()
        .find(|cluster| cluster.get("name").is_some_and(|n| n.str() == "c"))
        .and_then(|cluster| cluster.get("host_statuses"))
    else {
        return false;
    };
    let failing = |host: &Json| {
        host.get("health_status")
            .and_then(|h| h.get("failed_active_health_check"))
            .is_some()
    };
    hosts.len() == 2 && !failing(&hosts[0]) && failing(&hosts[1])
}

/// Starts `kind` on [`proxy_config`], waits for the first checks and the listener, sends
/// three GETs (all to `good`: one host of two healthy is no panic), and returns the raw
/// `/clusters?format=json`.
async fn clusters_json(kind: Kind, good: SocketAddr, bad: SocketAddr) -> String {
    let ports = Ports::new();
    let proxy = Proxy::spawn(kind, &proxy_config(ports, good, bad));
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
    let clusters = || async move {
        weir_tests::client::get_host(admin, "localhost", "/clusters?format=json")
            .await
            .map(|resp| resp.text())
            .unwrap_or_default()
    };
    let started = Instant::now();
    loop {
        let answer = clusters().await;
        let ready = serde_json::from_str::<Json>(&answer).is_ok_and(|json| checked_once(&json))
            && weir_tests::client::get(ports.http_addr(), "/warm")
                .await
                .is_ok_and(|resp| resp.status == 200);
        if ready {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{kind:?}: no first checks in {LIMIT:?}; last answer:\n{answer}\n{}",
            proxy.log_report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..2 {
        let resp = weir_tests::client::get(ports.http_addr(), &format!("/r/{i}"))
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: GET: {e}"));
        assert_eq!(resp.status, 200, "{kind:?}");
    }
    let answer = clusters().await;
    drop(proxy);
    answer
}

/// Envoy's answer less what weir does not keep, each part checked before it goes: clusters
/// in name order (Envoy's follow a hash map), stats [`ENVOY_ONLY_STATS`], `locality` (`{}`
/// for these hosts), and the second thresholds entry (`HIGH`).
fn without_what_weir_lacks(mut envoy: Json) -> Json {
    let Some(clusters) = envoy.get_mut("cluster_statuses") else {
        panic!("no cluster_statuses: {envoy:?}");
    };
    let clusters = clusters.items_mut();
    clusters.sort_by(|a, b| {
        let name = |c: &Json| c.get("name").map(|n| n.str().to_owned());
        name(a).cmp(&name(b))
    });
    for cluster in clusters {
        let Some(thresholds) = cluster
            .get_mut("circuit_breakers")
            .and_then(|breakers| breakers.get_mut("thresholds"))
        else {
            panic!("no thresholds: {cluster:?}");
        };
        let thresholds = thresholds.items_mut();
        assert_eq!(thresholds.len(), 2, "{thresholds:?}");
        assert_eq!(
            thresholds[1].get("priority").map(Json::str),
            Some("HIGH"),
            "{thresholds:?}"
        );
        thresholds.truncate(1);
        let Some(hosts) = cluster.get_mut("host_statuses") else {
            panic!("no host_statuses: {cluster:?}");
        };
        for host in hosts.items_mut() {
            assert_eq!(host.remove("locality"), Some(Json::Object(Vec::new())));
            let Some(stats) = host.get_mut("stats") else {
                panic!("no stats: {host:?}");
            };
            let stats = stats.items_mut();
            let mut dropped = Vec::new();
            stats.retain(|stat| {
                let name = stat.get("name").map(Json::str).unwrap_or_default();
                let kept = WEIR_STATS.contains(&name);
                if !kept {
                    dropped.push(name.to_owned());
                }
                kept
            });
            assert_eq!(dropped, ENVOY_ONLY_STATS, "Envoy's other stats changed");
        }
    }
    envoy
}

/// Takes the value out of every host's `cx_active` (in the order of the hosts), leaving its
/// `type`.
fn take_cx_active_values(clusters: &mut Json) -> Vec<Option<Json>> {
    let mut values = Vec::new();
    let Some(clusters) = clusters.get_mut("cluster_statuses") else {
        return values;
    };
    for cluster in clusters.items_mut() {
        let Some(hosts) = cluster.get_mut("host_statuses") else {
            continue;
        };
        for host in hosts.items_mut() {
            let Some(stats) = host.get_mut("stats") else {
                continue;
            };
            for stat in stats.items_mut() {
                if stat.get("name").map(Json::str) == Some("cx_active") {
                    values.push(stat.remove("value"));
                }
            }
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_json_is_envoys_shape_with_weirs_figures() {
    let good = H1Upstream::start("good").await;
    let bad = H1Upstream::start("bad").await;
    bad.set_healthy(false);

    let weir_text = clusters_json(Kind::Weir, good.addr, bad.addr).await;
    let envoy_text = clusters_json(Kind::Envoy, good.addr, bad.addr).await;

    // The same layout: protobuf's pretty JSON, one space a level, a newline at the end.
    for (who, text) in [("weir", &weir_text), ("Envoy", &envoy_text)] {
        assert!(
            text.starts_with("{\n \"cluster_statuses\": [\n  {\n   \"name\": \"")
                && text.ends_with("}\n"),
            "{who}:\n{text}"
        );
    }
    let mut weir = Json::parse(&weir_text);
    let mut envoy = without_what_weir_lacks(Json::parse(&envoy_text));
    // Connections open to a host depend on the workers (Envoy runs one per core, weir one):
    // only the good host has one.
    let leaf = |v: Value| Json::Leaf(v);
    assert_eq!(
        take_cx_active_values(&mut weir),
        [Some(leaf(json!("1"))), None, None],
        "{weir_text}"
    );
    let envoys = take_cx_active_values(&mut envoy);
    assert!(
        envoys[0].is_some() && envoys[1..] == [None, None],
        "{envoy_text}"
    );
    assert_eq!(
        weir, envoy,
        "weir (left) and Envoy less what weir lacks (right) differ\nweir:\n{weir_text}\nEnvoy:\n{envoy_text}"
    );

    // What both said, spelled out.
    let host = |cluster: usize, host: usize| {
        let Some(Json::Array(clusters)) = weir.get("cluster_statuses") else {
            panic!("{weir_text}");
        };
        let Some(Json::Array(hosts)) = clusters[cluster].get("host_statuses") else {
            panic!("{weir_text}");
        };
        hosts[host].clone()
    };
    let (good_host, bad_host, spare_host) = (host(0, 0), host(0, 1), host(1, 0));
    let port = |h: &Json| {
        h.get("address")
            .and_then(|a| a.get("socket_address"))
            .and_then(|s| s.get("port_value"))
            .cloned()
    };
    assert_eq!(port(&good_host), Some(Json::Leaf(json!(good.addr.port()))));
    assert_eq!(port(&bad_host), Some(Json::Leaf(json!(bad.addr.port()))));
    assert_eq!(good_host.get("weight"), Some(&Json::Leaf(json!(3))));
    assert_eq!(spare_host.get("weight"), Some(&Json::Leaf(json!(5))));
    // Counters are strings; the warm-up GET and two more went to the good host.
    let Some(Json::Array(stats)) = good_host.get("stats") else {
        panic!("{weir_text}");
    };
    assert_eq!(
        stats[0],
        Json::Object(vec![
            ("value".into(), Json::Leaf(json!("3"))),
            ("name".into(), Json::Leaf(json!("rq_total"))),
        ])
    );
    let health = |h: &Json| h.get("health_status").cloned();
    assert_eq!(
        health(&bad_host),
        Some(Json::Object(vec![
            ("failed_active_health_check".into(), leaf(json!(true))),
            ("eds_health_status".into(), leaf(json!("HEALTHY"))),
        ]))
    );
    assert_eq!(
        health(&spare_host),
        Some(Json::Object(vec![(
            "eds_health_status".into(),
            leaf(json!("DEGRADED"))
        )]))
    );
}

/// Starts `kind` on an ADS bootstrap to `server` (which serves listener `l1` on a fresh port,
/// routing to EDS cluster `c1` of one host), waits for a 200 through it, and returns the raw
/// `/clusters?format=json`.
async fn xds_clusters_json(kind: Kind, server: &XdsServer) -> String {
    let (admin_port, port) = (weir_tests::free_port(), weir_tests::free_port());
    server.set("l1", &listener_with_rds("l1", port, "r1"));
    let proxy = Proxy::spawn(
        kind,
        &ads_bootstrap("node-1", admin_port, server.addr(), AdsApi::Grpc),
    );
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while !weir_tests::client::get(listener, "/one")
        .await
        .is_ok_and(|resp| resp.status == 200)
    {
        assert!(
            started.elapsed() < LIMIT,
            "{kind:?}: no 200 through {listener} in {LIMIT:?}\n{}",
            proxy.log_report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    weir_tests::client::get_host(admin, "localhost", "/clusters?format=json")
        .await
        .map(|resp| resp.text())
        .unwrap_or_default()
}

/// Takes the `stats` out of every host of cluster `name`.
fn take_stats_of(clusters: &mut Json, name: &str) {
    let Some(clusters) = clusters.get_mut("cluster_statuses") else {
        return;
    };
    for cluster in clusters.items_mut() {
        if cluster.get("name").map(Json::str) != Some(name) {
            continue;
        }
        if let Some(hosts) = cluster.get_mut("host_statuses") {
            for host in hosts.items_mut() {
                host.remove("stats");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_from_the_control_plane_is_added_via_api_as_envoys() {
    let up = H1Upstream::start("up").await;
    let server = XdsServer::start().await;
    server.set("c1", &eds_cluster("c1"));
    server.set("c1", &load_assignment("c1", &[up.addr]));
    server.set("r1", &route_configuration("r1", "/", "c1"));

    let weir_text = xds_clusters_json(Kind::Weir, &server).await;
    let envoy_text = xds_clusters_json(Kind::Envoy, &server).await;
    let mut weir = Json::parse(&weir_text);
    let mut envoy = without_what_weir_lacks(Json::parse(&envoy_text));
    take_cx_active_values(&mut weir);
    take_cx_active_values(&mut envoy);
    // Envoy counts its ADS stream in the control plane's host (`rq_total`, `cx_active`,
    // `rq_active` 1); weir's xDS client is not counted there.
    for json in [&mut weir, &mut envoy] {
        take_stats_of(json, weir_tests::xds_resources::XDS_CLUSTER);
    }
    assert_eq!(
        weir, envoy,
        "weir (left) and Envoy less what weir lacks (right) differ\nweir:\n{weir_text}\nEnvoy:\n{envoy_text}"
    );
    let Some(Json::Array(clusters)) = weir.get("cluster_statuses") else {
        panic!("{weir_text}");
    };
    let added: Vec<(&str, Option<&Json>)> = clusters
        .iter()
        .map(|c| (c.get("name").map_or("", Json::str), c.get("added_via_api")))
        .collect();
    assert_eq!(
        added,
        [
            ("c1", Some(&Json::Leaf(json!(true)))),
            (weir_tests::xds_resources::XDS_CLUSTER, None)
        ],
        "{weir_text}"
    );
}
