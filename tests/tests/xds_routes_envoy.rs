//! What xDS-shaped config does before (or without) a control plane, as Envoy 1.40 does it: a
//! route table with `validate_clusters: false` (RDS's default) whose routes name a cluster
//! that does not exist answers 503 (`NC`, `cluster_not_found`) or the route's
//! `cluster_not_found_response_code`; an EDS cluster whose endpoints have not come answers
//! 503 (`UH`, `no_healthy_upstream`). The same config and requests through both proxies,
//! compared answer by answer and access log line by line.

use envoy_check::envoy::{self, Envoy};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use weir_tests::client;
use weir_tests::config::{self, Ports};
use weir_tests::{H1Upstream, Weir};

const FILE_TYPE: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";

/// The requests, in order, and what both proxies answer.
const CASES: &[(&str, u16, &str)] = &[
    ("/gone", 503, "503 NC cluster_not_found"),
    ("/gone404", 404, "404 NC cluster_not_found"),
    ("/eds", 503, "503 UH no_healthy_upstream"),
    ("/", 200, "200 - via_upstream"),
];

/// `control_plane` is where `dynamic_resources.ads_config` points: nothing answers there, so
/// the EDS cluster's endpoints never come and its `initial_fetch_timeout` lets both proxies
/// go on without them.
fn unchecked_config(
    ports: Ports,
    backend: SocketAddr,
    control_plane: SocketAddr,
    log: &Path,
) -> Value {
    let routes = vec![
        json!({"match": {"prefix": "/gone404"}, "route": {
            "cluster": "gone", "cluster_not_found_response_code": "NOT_FOUND"}}),
        config::route_prefix("/gone", "gone"),
        config::route_prefix("/eds", "web"),
        config::route_prefix("/", "backend"),
    ];
    let mut hcm = config::hcm("ingress_http", vec![config::vhost("all", &["*"], routes)]);
    hcm["route_config"]["validate_clusters"] = json!(false);
    hcm["access_log"] = json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_TYPE,
            "path": log.display().to_string(),
            "log_format": {"text_format_source": {"inline_string":
                "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}},
        },
    }]);
    let mut bootstrap = config::bootstrap(
        ports.admin,
        vec![config::listener("ingress", ports.http, hcm)],
        vec![
            config::static_cluster("backend", &[backend]),
            json!({
                "name": "web",
                "type": "EDS",
                "connect_timeout": "1s",
                "eds_cluster_config": {
                    "eds_config": {"ads": {}, "resource_api_version": "V3",
                                   "initial_fetch_timeout": "0.5s"},
                    "service_name": "web-eds",
                },
            }),
        ],
    );
    let mut xds = config::static_cluster("xds", &[control_plane]);
    config::upstream_http2(&mut xds, None);
    if let Some(clusters) = bootstrap["static_resources"]["clusters"].as_array_mut() {
        clusters.push(xds);
    }
    bootstrap["dynamic_resources"] = json!({"ads_config": {
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
    }});
    // Envoy needs a node to subscribe to endpoints.
    bootstrap["node"] = json!({"id": "edge-1", "cluster": "edge"});
    bootstrap
}

async fn log_lines(path: &Path, count: usize) -> Vec<String> {
    weir_tests::wait_for_lines(path, count, Duration::from_secs(10)).await
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = http::Request::get(path)
        .header("host", "x.example")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = client::h1_request(addr, request)
        .await
        .unwrap_or_else(|e| panic!("GET {path} via {addr}: {e}"));
    let body = if resp.status == 200 {
        String::new()
    } else {
        resp.text()
    };
    (resp.status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_clusters_and_endpoints_are_answered_as_envoy() {
    let backend = H1Upstream::start("backend").await;
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    // A port nothing listens on: the control plane is away.
    let control_plane = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let weir_log = weir_dir.path().join("access.log");
    let envoy_log = envoy_dir.path().join("access.log");
    let _weir = Weir::start(&unchecked_config(
        weir_ports,
        backend.addr,
        control_plane,
        &weir_log,
    ))
    .await;
    let envoy_yaml = envoy_dir.path().join("envoy.yaml");
    let envoy_config = unchecked_config(envoy_ports, backend.addr, control_plane, &envoy_log);
    std::fs::write(&envoy_yaml, envoy_config.to_string()).expect("write envoy config");
    let envoy = Envoy::start(&envoy::binary(), &envoy_yaml, envoy_dir.path());

    for (path, status, _) in CASES {
        let weir = get(weir_ports.http_addr(), path).await;
        let envoy = get(envoy_ports.http_addr(), path).await;
        assert_eq!(weir, envoy, "{path}: weir (left) and Envoy (right) differ");
        assert_eq!(weir.0, *status, "{path}");
    }
    let weir_lines = log_lines(&weir_log, CASES.len()).await;
    let envoy_lines = log_lines(&envoy_log, CASES.len()).await;
    assert_eq!(
        weir_lines, envoy_lines,
        "weir's log (left), Envoy's (right)"
    );
    let expected: Vec<String> = CASES
        .iter()
        .map(|(path, _, logged)| format!("{path} {logged}"))
        .collect();
    assert_eq!(weir_lines, expected);
    drop(envoy);
}
