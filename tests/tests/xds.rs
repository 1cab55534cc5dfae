//! weir and Envoy 1.40 driven by the same xDS management server through the same scenario,
//! over state-of-the-world (GRPC) and delta (DELTA_GRPC) ADS, with the same outcomes asserted
//! of both:
//!
//! 1. the initial config (a listener with RDS, an EDS cluster) serves within 10 s, and
//!    `/ready` says so;
//! 2. a route update is applied within 5 s, with no failed request in a request loop that
//!    runs across it;
//! 3. an EDS change moves the traffic to the new endpoint;
//! 4. an invalid cluster is NACKed with a reason (weir's names the field), and the config in
//!    force keeps serving;
//! 5. the listener removed stops accepting; added again, it serves;
//! 6. the control plane killed, the last config keeps serving; restarted, updates resume.

use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weir_tests::envoy::Envoy;
use weir_tests::xds_resources::{
    AdsApi, ads_bootstrap, eds_cluster, listener_with_rds, load_assignment, route_configuration,
};
use weir_tests::xds_server::{XdsServer, type_url};
use weir_tests::{H1Upstream, Weir, free_port, get};

/// The initial config must serve within this.
const INITIAL: Duration = Duration::from_secs(10);
/// An update must be applied within this.
const UPDATE: Duration = Duration::from_secs(5);
/// A restarted control plane is reconnected to within this (both proxies back off, from
/// 500 ms, jittered, up to 30 s; two or three tries fit).
const RECONNECT: Duration = Duration::from_secs(20);

/// The proxy under test: one of the two, run the same way.
enum Proxy {
    Weir(Weir),
    Envoy(Envoy),
}

impl Proxy {
    async fn start(kind: &str, api: AdsApi, xds: SocketAddr) -> (Proxy, u16) {
        let admin_port = free_port();
        let bootstrap = ads_bootstrap(&format!("{kind}-1"), admin_port, xds, api);
        let proxy = match kind {
            "weir" => {
                // Not `Weir::start`: it waits for /ready, which says INITIALIZING until the
                // control plane has answered; the scenario waits for that itself.
                Proxy::Weir(Weir::spawn(&bootstrap, &[]))
            }
            _ => Proxy::Envoy(Envoy::spawn(&bootstrap, "info")),
        };
        (proxy, admin_port)
    }

    fn log_report(&self) -> String {
        match self {
            Proxy::Weir(weir) => weir.log_report(),
            Proxy::Envoy(envoy) => envoy.log_report(),
        }
    }
}

/// The upstream (`x-upstream`) that answers `GET path` on `listener`, or why none did.
async fn answered_by(listener: SocketAddr, path: &str) -> Result<String, String> {
    let response = get(listener, path).await?;
    if response.status != 200 {
        return Err(format!("status {}", response.status));
    }
    response
        .headers
        .get("x-upstream")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| "no x-upstream".to_owned())
}

/// Polls until `GET path` is answered by `upstream`; the time it took, or `None` past
/// `limit`.
async fn wait_for_upstream(
    listener: SocketAddr,
    path: &str,
    upstream: &str,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if answered_by(listener, path).await.as_deref() == Ok(upstream) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Polls until a connection to `listener` is refused; false past `limit`.
async fn wait_for_refusal(listener: SocketAddr, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if tokio::net::TcpStream::connect(listener).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// `GET /ready` on the admin port: its status, if the admin listener answers.
async fn ready(admin_port: u16) -> Option<u16> {
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    get(admin, "/ready")
        .await
        .ok()
        .map(|response| response.status)
}

async fn follows_the_control_plane(kind: &str, api: AdsApi) {
    let a = H1Upstream::start("a").await;
    let b = H1Upstream::start("b").await;
    let mut server = XdsServer::start().await;
    let port = free_port();
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    server.set("c1", &eds_cluster("c1"));
    server.set("c1", &load_assignment("c1", &[a.addr]));
    server.set("l1", &listener_with_rds("l1", port, "r1"));
    server.set("r1", &route_configuration("r1", "/", "c1"));
    let (proxy, admin_port) = Proxy::start(kind, api, server.addr()).await;
    let report = |proxy: &Proxy| format!("{kind} {api:?}\n{}", proxy.log_report());

    // 1. The initial config serves within 10 s, and the proxy says it is ready.
    let initial = wait_for_upstream(listener, "/", "a", INITIAL).await;
    assert!(initial.is_some(), "initial config: {}", report(&proxy));
    let deadline = Instant::now() + UPDATE;
    while ready(admin_port).await != Some(200) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready(admin_port).await, Some(200), "{}", report(&proxy));
    eprintln!("{kind} {api:?}: initial config served in {initial:?}");

    // 2. A route update within 5 s, with a request loop across it: no request fails.
    server.set("c2", &eds_cluster("c2"));
    server.set("c2", &load_assignment("c2", &[b.addr]));
    let looping = tokio::spawn(async move {
        let (mut ok, mut failed, mut from_b) = (0u32, Vec::new(), 0u32);
        let started = Instant::now();
        // Bounded in time and count.
        while started.elapsed() < Duration::from_secs(3) && ok + (failed.len() as u32) < 5_000 {
            match answered_by(listener, "/").await {
                Ok(upstream) => {
                    ok += 1;
                    from_b += u32::from(upstream == "b");
                }
                Err(why) => failed.push(why),
            }
        }
        (ok, failed, from_b)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pushed = Instant::now();
    server.set("r1", &route_configuration("r1", "/", "c2"));
    let applied = wait_for_upstream(listener, "/", "b", UPDATE).await;
    let (ok, failed, from_b) = looping.await.expect("request loop");
    assert!(applied.is_some(), "route update: {}", report(&proxy));
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the route update: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 10 && from_b > 0, "ok {ok}, from b {from_b}");
    eprintln!(
        "{kind} {api:?}: route update applied {:?} after the push; {ok} requests across it, 0 failed",
        pushed
            .elapsed()
            .min(applied.unwrap_or_default() + Duration::from_millis(20))
    );

    // 3. An EDS change moves the traffic.
    server.set("c2", &load_assignment("c2", &[a.addr]));
    let moved = wait_for_upstream(listener, "/", "a", UPDATE).await;
    assert!(moved.is_some(), "EDS change: {}", report(&proxy));

    // 4. An invalid cluster is NACKed, with its reason; the config in force keeps serving.
    let from = server.requests().len();
    let mut bad = eds_cluster("bad");
    bad.connect_timeout = Some(ProtoDuration {
        seconds: -1,
        nanos: 0,
    });
    server.set("bad", &bad);
    let nack = server
        .wait_for_request(UPDATE, from, |r| {
            r.type_url == type_url::CLUSTER && r.is_nack()
        })
        .await
        .unwrap_or_else(|| panic!("no NACK of the invalid cluster: {}", report(&proxy)));
    let (code, message) = nack.error_detail.clone().unwrap_or_default();
    eprintln!("{kind} {api:?}: NACK code {code}: {message}");
    assert_eq!(code, 13, "{message}");
    assert!(message.contains("duration"), "the NACK says why: {message}");
    if kind == "weir" {
        // Envoy's says only what is wrong; weir's also says where, as `weir validate` would.
        assert!(
            message.contains("cds \"bad\": connect_timeout"),
            "weir's NACK names the resource and the field: {message}"
        );
    }
    assert_eq!(answered_by(listener, "/").await.as_deref(), Ok("a"));
    assert!(server.remove(type_url::CLUSTER, "bad"));

    // 5. The listener removed stops accepting; added again, it serves.
    assert!(server.remove(type_url::LISTENER, "l1"));
    assert!(
        wait_for_refusal(listener, UPDATE).await,
        "listener removal: {}",
        report(&proxy)
    );
    server.set("l1", &listener_with_rds("l1", port, "r1"));
    assert!(
        wait_for_upstream(listener, "/", "a", UPDATE)
            .await
            .is_some(),
        "listener re-added: {}",
        report(&proxy)
    );

    // 6. The control plane killed: the last config keeps serving. Restarted: updates resume.
    server.stop().await;
    for _ in 0..10 {
        assert_eq!(
            answered_by(listener, "/").await.as_deref(),
            Ok("a"),
            "serving without the control plane: {}",
            report(&proxy)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.restart().await;
    server.set("c2", &load_assignment("c2", &[b.addr]));
    let resumed = wait_for_upstream(listener, "/", "b", RECONNECT).await;
    assert!(
        resumed.is_some(),
        "updates after the control plane came back: {}",
        report(&proxy)
    );
    eprintln!("{kind} {api:?}: updates resumed {resumed:?} after the restart");
    drop(proxy);
}

#[tokio::test]
async fn weir_follows_the_control_plane_over_grpc() {
    follows_the_control_plane("weir", AdsApi::Grpc).await;
}

#[tokio::test]
async fn weir_follows_the_control_plane_over_delta_grpc() {
    follows_the_control_plane("weir", AdsApi::DeltaGrpc).await;
}

#[tokio::test]
async fn envoy_follows_the_control_plane_over_grpc() {
    follows_the_control_plane("envoy", AdsApi::Grpc).await;
}

#[tokio::test]
async fn envoy_follows_the_control_plane_over_delta_grpc() {
    follows_the_control_plane("envoy", AdsApi::DeltaGrpc).await;
}
