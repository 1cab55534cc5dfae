//! weir's ADS client (the library, no proxy) against the tests' management server, in both
//! forms: subscription order and names, ACK after an applied response, NACK with the
//! reason and the previous version, interest changes, delta removals, and reconnecting
//! after the control plane was killed and restarted.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use weir::config::dynamic_resources::{AdsApi, XdsSpec};
use weir::xds::client::{self, Interest, Rejected, Subscriber, Update};
use weir::xds::resource::ResourceType;
use weir_tests::xds_resources::{
    eds_cluster, listener_with_rds, load_assignment, route_configuration, xds_cluster_json,
};
use weir_tests::xds_server::{RecordedRequest, XdsServer, type_url};

/// How long any one expected exchange may take.
const WAIT: Duration = Duration::from_secs(10);

/// A subscriber that records what it is given and answers with the interest the test sets.
#[derive(Default)]
struct Recorder {
    updates: Mutex<Vec<Update>>,
    interest: Mutex<HashMap<ResourceType, Interest>>,
    /// When a type is applied, another type's interest becomes this (a cluster naming its
    /// endpoints, a listener naming its routes).
    follow: Mutex<Vec<(ResourceType, ResourceType, Interest)>>,
    /// Updates of this type are refused with this reason.
    reject: Mutex<Option<(ResourceType, String)>>,
    connected: Mutex<Vec<bool>>,
    /// Streams lost and connection attempts failed (`Subscriber::stream_failed`).
    failures: std::sync::atomic::AtomicU64,
    /// What is held per type (delta), name -> version.
    held: Mutex<HashMap<ResourceType, HashMap<String, String>>>,
    /// Tells the client the interest changed outside a response.
    interest_signal: watch::Sender<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn names(list: &[&str]) -> Interest {
    Interest::Names(list.iter().map(|name| (*name).to_owned()).collect())
}

impl Recorder {
    /// Clusters and listeners as a wildcard; endpoints and routes by no name yet.
    fn new() -> Arc<Recorder> {
        let recorder = Recorder::default();
        {
            let mut interest = lock(&recorder.interest);
            interest.insert(ResourceType::Cluster, Interest::Wildcard);
            interest.insert(ResourceType::Listener, Interest::Wildcard);
        }
        Arc::new(recorder)
    }

    fn set_interest(&self, kind: ResourceType, interest: Interest) {
        lock(&self.interest).insert(kind, interest);
    }

    fn follow(&self, applied: ResourceType, kind: ResourceType, interest: Interest) {
        lock(&self.follow).push((applied, kind, interest));
    }

    fn reject(&self, rejection: Option<(ResourceType, &str)>) {
        *lock(&self.reject) = rejection.map(|(kind, reason)| (kind, reason.to_owned()));
    }

    fn updates(&self, kind: ResourceType) -> Vec<Update> {
        lock(&self.updates)
            .iter()
            .filter(|update| update.kind == kind)
            .cloned()
            .collect()
    }

    fn connected(&self) -> Vec<bool> {
        lock(&self.connected).clone()
    }

    fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Subscriber for Recorder {
    fn apply(
        &self,
        update: Update,
    ) -> Pin<Box<dyn Future<Output = Result<(), Rejected>> + Send + '_>> {
        Box::pin(async move {
            lock(&self.updates).push(update.clone());
            let rejection = lock(&self.reject).clone();
            if let Some((_, reason)) = rejection.filter(|(kind, _)| *kind == update.kind) {
                return Err(Rejected(reason));
            }
            let mut held = lock(&self.held);
            let held = held.entry(update.kind).or_default();
            for resource in &update.resources {
                if let Some(name) = &resource.name {
                    held.insert(name.clone(), resource.version.clone());
                }
            }
            for name in &update.removed {
                held.remove(name);
            }
            let follows: Vec<_> = lock(&self.follow)
                .iter()
                .filter(|(applied, _, _)| *applied == update.kind)
                .map(|(_, kind, interest)| (*kind, interest.clone()))
                .collect();
            for (kind, interest) in follows {
                self.set_interest(kind, interest);
            }
            Ok(())
        })
    }

    fn interest(&self, kind: ResourceType) -> Interest {
        lock(&self.interest)
            .get(&kind)
            .cloned()
            .unwrap_or_else(|| Interest::Names(BTreeSet::new()))
    }

    fn connected(&self, up: bool) {
        lock(&self.connected).push(up);
    }

    fn stream_failed(&self) {
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn interest_changes(&self) -> Option<watch::Receiver<()>> {
        Some(self.interest_signal.subscribe())
    }

    fn held_versions(&self, kind: ResourceType) -> HashMap<String, String> {
        lock(&self.held).get(&kind).cloned().unwrap_or_default()
    }
}

/// A client started against `server` in form `api`, feeding `recorder`.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(server: &XdsServer, api: AdsApi, recorder: &Arc<Recorder>) -> Running {
        Self::start_with_cluster(xds_cluster_json(server.addr()), api, recorder)
    }

    /// With the control plane's cluster as given (bootstrap JSON).
    fn start_with_cluster(
        cluster: serde_json::Value,
        api: AdsApi,
        recorder: &Arc<Recorder>,
    ) -> Running {
        // The control plane's cluster as the bootstrap reader makes it from Envoy's YAML.
        let bootstrap = serde_json::json!({
            "static_resources": {"clusters": [cluster]}
        });
        let config = weir::snapshot::load_str(&bootstrap.to_string(), "xds-test.yaml")
            .unwrap_or_else(|e| panic!("the xDS cluster reads: {e}"));
        let cluster = (*config.clusters[0]).clone();
        let spec = XdsSpec {
            ads_cluster: cluster.name.clone(),
            api,
            lds: true,
            cds: true,
            lds_fetch_timeout: Duration::from_secs(5),
            cds_fetch_timeout: Duration::from_secs(5),
            node_id: "node-1".into(),
            node_cluster: "weir-tests".into(),
            node_metadata: serde_json::json!({"suite": "xds"}),
            node_locality: None,
            node_user_agent_name: String::new(),
            node_user_agent_version: String::new(),
            set_node_on_first_message_only: true,
            ads_authority: None,
            initial_metadata: vec![("x-test-token".into(), "t1".into())],
        };
        let (stop, shutdown) = watch::channel(false);
        let subscriber: Arc<dyn Subscriber> = recorder.clone();
        let task = client::spawn(spec, cluster, subscriber, shutdown).expect("client starts");
        Running { stop, task }
    }

    /// Asks the client to stop and checks it does within a second.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(1), self.task).await;
        assert!(ended.is_ok(), "the client stops within 1 s of the signal");
        eprintln!("client stopped in {:?}", started.elapsed());
    }
}

/// Waits for `check` on the recorder.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    assert!(
        weir_tests::wait_until(WAIT, &mut check).await,
        "{what} within {WAIT:?}"
    );
}

/// The ACK of the response carrying `type_url`'s current version, both waited for.
async fn acked(server: &XdsServer, type_url: &str) -> RecordedRequest {
    let version = server.version(type_url);
    let last = server
        .wait_for_response(WAIT, |response| {
            response.type_url == type_url && response.version == version
        })
        .await
        .unwrap_or_else(|| panic!("a {type_url} response of version {version} within {WAIT:?}"));
    let ack = server
        .wait_for_request(WAIT, 0, |request| {
            request.type_url == type_url && request.acks(&last.nonce)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "the ACK of {last:?} within {WAIT:?}: {:#?}",
                server.requests()
            )
        });
    if !ack.delta {
        assert_eq!(
            ack.version_info, last.version,
            "an ACK carries the version it accepts"
        );
    }
    ack
}

/// A server holding a cluster with its endpoints and a listener with its routes.
async fn gateway_server() -> XdsServer {
    let server = XdsServer::start().await;
    let backend = "127.0.0.1:18080".parse().expect("address");
    server.set("c1", &eds_cluster("c1"));
    server.set("c1", &load_assignment("c1", &[backend]));
    server.set("l1", &listener_with_rds("l1", 18000, "r1"));
    server.set("r1", &route_configuration("r1", "/", "c1"));
    server
}

fn gateway_recorder() -> Arc<Recorder> {
    let recorder = Recorder::new();
    recorder.follow(
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
        names(&["c1"]),
    );
    recorder.follow(
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        names(&["r1"]),
    );
    recorder
}

async fn subscribes_in_order_and_acks(api: AdsApi) {
    let server = gateway_server().await;
    let recorder = gateway_recorder();
    let client = Running::start(&server, api, &recorder);
    for type_url in [
        type_url::CLUSTER,
        type_url::ENDPOINT,
        type_url::LISTENER,
        type_url::ROUTE,
    ] {
        acked(&server, type_url).await;
    }
    let requests = server.requests();
    // Clusters first, then listeners (Envoy's order); endpoints and routes only once a
    // cluster or listener names them.
    assert_eq!(requests[0].type_url, type_url::CLUSTER);
    assert_eq!(requests[1].type_url, type_url::LISTENER);
    assert!(requests[0].resource_names.is_empty(), "CDS is a wildcard");
    assert!(requests[1].resource_names.is_empty(), "LDS is a wildcard");
    assert_eq!(
        requests[0].node_id.as_deref(),
        Some("node-1"),
        "the first request has the node"
    );
    assert!(
        requests[1..].iter().all(|r| r.node_id.is_none()),
        "only the first has it"
    );
    let first_eds = requests
        .iter()
        .position(|r| r.type_url == type_url::ENDPOINT)
        .expect("an EDS request");
    assert_eq!(requests[first_eds].resource_names, ["c1"], "EDS by name");
    let cds_ack = requests
        .iter()
        .position(|r| r.type_url == type_url::CLUSTER && !r.response_nonce.is_empty())
        .expect("a CDS ACK");
    assert!(
        first_eds < cds_ack,
        "the EDS subscription a CDS response caused goes before its ACK (as Envoy)"
    );
    let first_rds = requests
        .iter()
        .position(|r| r.type_url == type_url::ROUTE)
        .expect("an RDS request");
    assert_eq!(requests[first_rds].resource_names, ["r1"], "RDS by name");
    assert!(
        requests.iter().all(|r| !r.is_nack()),
        "nothing refused: {requests:#?}"
    );
    // The four types this test serves (no ECDS resource here).
    for kind in [
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
    ] {
        let updates = recorder.updates(kind);
        assert_eq!(updates.len(), 1, "one update of {kind:?}");
        assert_eq!(updates[0].resources.len(), 1);
        assert_eq!(
            updates[0].state_of_the_world,
            api == AdsApi::StateOfTheWorld
        );
    }
    let cluster = recorder.updates(ResourceType::Cluster).remove(0);
    let decoded = <Cluster as prost::Message>::decode(&cluster.resources[0].body[..])
        .expect("the cluster's bytes reach the subscriber as sent");
    assert_eq!(decoded.name, "c1");
    assert_eq!(recorder.connected(), [true]);
    client.stop().await;
    assert_eq!(recorder.connected(), [true, false]);
}

#[tokio::test]
async fn sotw_subscribes_in_envoys_order_and_acks() {
    subscribes_in_order_and_acks(AdsApi::StateOfTheWorld).await;
}

#[tokio::test]
async fn delta_subscribes_in_envoys_order_and_acks() {
    subscribes_in_order_and_acks(AdsApi::Delta).await;
}

async fn nack_keeps_the_previous_version(api: AdsApi) {
    let server = XdsServer::start().await;
    server.set("l1", &listener_with_rds("l1", 18000, "r1"));
    let recorder = Recorder::new();
    let client = Running::start(&server, api, &recorder);
    let accepted = acked(&server, type_url::LISTENER).await;
    let reason = "listeners[0].address.socket_address.port_value: 70000 is not a port";
    recorder.reject(Some((ResourceType::Listener, reason)));
    let from = server.requests().len();
    server.set("l1", &listener_with_rds("l1", 70, "r1"));
    let nack = server
        .wait_for_request(WAIT, from, |r| {
            r.type_url == type_url::LISTENER && r.is_nack()
        })
        .await
        .unwrap_or_else(|| panic!("a NACK within {WAIT:?}: {:#?}", server.requests()));
    let refused = server
        .responses()
        .into_iter()
        .rfind(|r| r.type_url == type_url::LISTENER)
        .expect("the refused response");
    assert_eq!(
        nack.response_nonce, refused.nonce,
        "the NACK names the refused response"
    );
    assert_eq!(
        nack.error_detail,
        Some((client::NACK_CODE, reason.to_owned())),
        "Envoy's NACK code (INTERNAL) and the reason"
    );
    if api == AdsApi::StateOfTheWorld {
        assert_eq!(
            nack.version_info, accepted.version_info,
            "a NACK carries the version still in force"
        );
        assert_ne!(nack.version_info, refused.version);
    }
    // Accepted again once valid.
    recorder.reject(None);
    server.set("l1", &listener_with_rds("l1", 18001, "r1"));
    let ack = acked(&server, type_url::LISTENER).await;
    if api == AdsApi::StateOfTheWorld {
        assert_eq!(ack.version_info, server.version(type_url::LISTENER));
    }
    client.stop().await;
}

#[tokio::test]
async fn sotw_nack_keeps_the_previous_version() {
    nack_keeps_the_previous_version(AdsApi::StateOfTheWorld).await;
}

#[tokio::test]
async fn delta_nack_keeps_the_previous_version() {
    nack_keeps_the_previous_version(AdsApi::Delta).await;
}

async fn interest_change_subscribes_again(api: AdsApi) {
    let server = gateway_server().await;
    server.set("r2", &route_configuration("r2", "/two", "c1"));
    let recorder = gateway_recorder();
    let client = Running::start(&server, api, &recorder);
    let rds_ack = acked(&server, type_url::ROUTE).await;
    // A listener now names two route configurations (applied with a listener update).
    recorder.follow(
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        names(&["r1", "r2"]),
    );
    let from = server.requests().len();
    server.set("l2", &listener_with_rds("l2", 18002, "r2"));
    let grown = server
        .wait_for_request(WAIT, from, |r| {
            r.type_url == type_url::ROUTE
                && (r.resource_names.len() == 2 || r.resource_names == ["r2"])
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "a new RDS subscription within {WAIT:?}: {:#?}",
                server.requests()
            )
        });
    match api {
        AdsApi::StateOfTheWorld => {
            assert_eq!(grown.resource_names, ["r1", "r2"], "the full list");
            assert_eq!(
                grown.version_info, rds_ack.version_info,
                "with the RDS version held"
            );
            assert_eq!(
                grown.response_nonce, rds_ack.response_nonce,
                "and the last RDS nonce"
            );
        }
        AdsApi::Delta => {
            assert_eq!(grown.resource_names, ["r2"], "only the new name");
            assert!(grown.unsubscribe.is_empty());
        }
    }
    eventually("r2 reaches the subscriber", || {
        recorder
            .updates(ResourceType::RouteConfiguration)
            .iter()
            .any(|update| {
                update
                    .resources
                    .iter()
                    .filter_map(|r| {
                        <RouteConfiguration as prost::Message>::decode(&r.body[..]).ok()
                    })
                    .any(|route| route.name == "r2")
            })
    })
    .await;
    // Shrinks to r2 only.
    recorder.follow(
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        names(&["r2"]),
    );
    let from = server.requests().len();
    server.remove(type_url::LISTENER, "l1");
    let shrunk = server
        .wait_for_request(WAIT, from, |r| {
            r.type_url == type_url::ROUTE
                && ((!r.delta && r.resource_names == ["r2"]) || !r.unsubscribe.is_empty())
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "a smaller RDS subscription within {WAIT:?}: {:#?}",
                server.requests()
            )
        });
    match api {
        AdsApi::StateOfTheWorld => assert_eq!(shrunk.resource_names, ["r2"]),
        AdsApi::Delta => assert_eq!(shrunk.unsubscribe, ["r1"]),
    }
    client.stop().await;
}

#[tokio::test]
async fn sotw_interest_change_subscribes_again() {
    interest_change_subscribes_again(AdsApi::StateOfTheWorld).await;
}

#[tokio::test]
async fn delta_interest_change_subscribes_again() {
    interest_change_subscribes_again(AdsApi::Delta).await;
}

#[tokio::test]
async fn delta_removal_reaches_the_subscriber() {
    let server = XdsServer::start().await;
    server.set("c1", &eds_cluster("c1"));
    server.set("c2", &eds_cluster("c2"));
    let recorder = Recorder::new();
    let client = Running::start(&server, AdsApi::Delta, &recorder);
    acked(&server, type_url::CLUSTER).await;
    assert!(server.remove(type_url::CLUSTER, "c2"));
    eventually("the removal of c2 reaches the subscriber", || {
        recorder
            .updates(ResourceType::Cluster)
            .iter()
            .any(|update| update.removed == ["c2"] && update.resources.is_empty())
    })
    .await;
    acked(&server, type_url::CLUSTER).await;
    client.stop().await;
}

#[tokio::test]
async fn sotw_removal_is_a_response_without_the_resource() {
    let server = XdsServer::start().await;
    server.set("c1", &eds_cluster("c1"));
    server.set("c2", &eds_cluster("c2"));
    let recorder = Recorder::new();
    let client = Running::start(&server, AdsApi::StateOfTheWorld, &recorder);
    acked(&server, type_url::CLUSTER).await;
    assert!(server.remove(type_url::CLUSTER, "c2"));
    eventually("a CDS update with c1 alone", || {
        recorder
            .updates(ResourceType::Cluster)
            .iter()
            .any(|update| update.resources.len() == 1 && update.state_of_the_world)
    })
    .await;
    client.stop().await;
}

async fn reconnects_after_a_restart(api: AdsApi) {
    let mut server = gateway_server().await;
    let recorder = gateway_recorder();
    let client = Running::start(&server, api, &recorder);
    let cds_ack = acked(&server, type_url::CLUSTER).await;
    acked(&server, type_url::ROUTE).await;
    assert_eq!(recorder.failures(), 0, "no failure while the stream is up");
    server.stop().await;
    eventually("the subscriber hears the stream is down", || {
        recorder.connected() == [true, false]
    })
    .await;
    // The lost stream (and each attempt while the server is away) is a failure: Envoy's
    // `update_failure`.
    eventually("the lost stream counts as a failure", || {
        recorder.failures() >= 1
    })
    .await;
    // Changed while the control plane was away: delivered once it is back.
    server.set("c2", &eds_cluster("c2"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from = server.requests().len();
    let restarted = Instant::now();
    server.restart().await;
    let first = server
        .wait_for_request(Duration::from_secs(5), from, |r| {
            r.type_url == type_url::CLUSTER
        })
        .await
        .unwrap_or_else(|| panic!("a new CDS subscription within 5 s of the restart"));
    let reconnect = restarted.elapsed();
    eprintln!("{api:?}: resubscribed {reconnect:?} after the restart");
    assert_eq!(server.streams_opened(), 2);
    assert_eq!(
        first.node_id.as_deref(),
        Some("node-1"),
        "a new stream sends the node again"
    );
    match api {
        AdsApi::StateOfTheWorld => {
            assert_eq!(
                first.version_info, cds_ack.version_info,
                "the version held is announced"
            );
        }
        AdsApi::Delta => {
            assert_eq!(
                first
                    .initial_resource_versions
                    .get("c1")
                    .map(String::as_str),
                Some("1"),
                "the resources held are announced: {first:?}"
            );
        }
    }
    eventually("c2 reaches the subscriber after the restart", || {
        recorder
            .updates(ResourceType::Cluster)
            .iter()
            .any(|update| {
                update
                    .resources
                    .iter()
                    .filter_map(|r| <Cluster as prost::Message>::decode(&r.body[..]).ok())
                    .any(|cluster| cluster.name == "c2")
            })
    })
    .await;
    acked(&server, type_url::ROUTE).await;
    assert_eq!(recorder.connected(), [true, false, true]);
    let failures = recorder.failures();
    if api == AdsApi::Delta {
        let c1_again = recorder
            .updates(ResourceType::Cluster)
            .iter()
            .skip(1)
            .any(|update| {
                update
                    .resources
                    .iter()
                    .any(|r| r.name.as_deref() == Some("c1"))
            });
        assert!(!c1_again, "c1, unchanged and announced, is not sent again");
    }
    client.stop().await;
    assert_eq!(recorder.failures(), failures, "a shutdown is no failure");
}

#[tokio::test]
async fn sotw_reconnects_after_a_restart() {
    reconnects_after_a_restart(AdsApi::StateOfTheWorld).await;
}

#[tokio::test]
async fn delta_reconnects_after_a_restart() {
    reconnects_after_a_restart(AdsApi::Delta).await;
}

#[tokio::test]
async fn an_unreachable_control_plane_is_retried_until_it_appears() {
    let mut server = XdsServer::start().await;
    server.set("c1", &eds_cluster("c1"));
    server.stop().await;
    let recorder = Recorder::new();
    let client = Running::start(&server, AdsApi::StateOfTheWorld, &recorder);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        recorder.connected().is_empty(),
        "never connected while it is away"
    );
    server.restart().await;
    acked(&server, type_url::CLUSTER).await;
    assert_eq!(recorder.connected(), [true]);
    client.stop().await;
}

#[tokio::test]
async fn sotw_nacks_an_unknown_type_and_an_unsubscribed_one() {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    let server = XdsServer::start().await;
    server.set("l1", &listener_with_rds("l1", 18000, "r1"));
    let recorder = Recorder::new();
    let client = Running::start(&server, AdsApi::StateOfTheWorld, &recorder);
    let accepted = acked(&server, type_url::LISTENER).await;
    for (type_url, reason) in [
        ("type.googleapis.com/example.Unknown", "unknown type URL"),
        (type_url::ROUTE, "did not subscribe"),
    ] {
        let from = server.requests().len();
        server.inject_sotw(DiscoveryResponse {
            version_info: "99".into(),
            type_url: type_url.into(),
            ..DiscoveryResponse::default()
        });
        let nack = server
            .wait_for_request(WAIT, from, |r| r.type_url == type_url && r.is_nack())
            .await
            .unwrap_or_else(|| panic!("a NACK of {type_url}: {:#?}", server.requests()));
        let (code, message) = nack.error_detail.clone().unwrap_or_default();
        assert_eq!(code, client::NACK_CODE);
        assert!(message.contains(reason), "{message}");
        assert_eq!(nack.version_info, "", "no version of it was ever accepted");
    }
    // A listener response holding a cluster is refused, naming the resource.
    let from = server.requests().len();
    server.inject_sotw(DiscoveryResponse {
        version_info: "100".into(),
        type_url: type_url::LISTENER.into(),
        resources: vec![weir_tests::xds_server::any(&eds_cluster("c9"))],
        ..DiscoveryResponse::default()
    });
    let nack = server
        .wait_for_request(WAIT, from, |r| {
            r.type_url == type_url::LISTENER && r.is_nack()
        })
        .await
        .unwrap_or_else(|| panic!("a NACK of the mistyped listener: {:#?}", server.requests()));
    let (_, message) = nack.error_detail.clone().unwrap_or_default();
    assert!(message.starts_with("resources[0]: type"), "{message}");
    assert_eq!(
        nack.version_info, accepted.version_info,
        "the version in force stays"
    );
    assert_eq!(
        recorder.updates(ResourceType::Listener).len(),
        1,
        "nothing refused was applied"
    );
    client.stop().await;
}

#[tokio::test]
async fn the_control_plane_is_reached_over_tls_with_alpn_h2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = weir_tests::tls::self_signed(dir.path());
    let server = XdsServer::start_tls(&files).await;
    server.set("c1", &eds_cluster("c1"));
    let mut cluster = xds_cluster_json(server.addr());
    cluster["transport_socket"] = serde_json::json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "localhost",
            "common_tls_context": {
                "validation_context": {
                    "trusted_ca": {"filename": files.cert.to_str().expect("utf-8 path")}
                }
            }
        }
    });
    let recorder = Recorder::new();
    let client = Running::start_with_cluster(cluster, AdsApi::Delta, &recorder);
    acked(&server, type_url::CLUSTER).await;
    assert_eq!(
        server.negotiated_alpn(),
        ["h2"],
        "one TLS connection, ALPN h2"
    );
    client.stop().await;
}

#[tokio::test]
async fn a_control_plane_with_an_untrusted_certificate_is_not_used() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = weir_tests::tls::self_signed(dir.path());
    let other = tempfile::tempdir().expect("temp dir");
    let untrusted = weir_tests::tls::self_signed(other.path());
    let server = XdsServer::start_tls(&files).await;
    server.set("c1", &eds_cluster("c1"));
    let mut cluster = xds_cluster_json(server.addr());
    cluster["transport_socket"] = serde_json::json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "localhost",
            "common_tls_context": {
                "validation_context": {
                    "trusted_ca": {"filename": untrusted.cert.to_str().expect("utf-8 path")}
                }
            }
        }
    });
    let recorder = Recorder::new();
    let client = Running::start_with_cluster(cluster, AdsApi::StateOfTheWorld, &recorder);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        server.requests().is_empty(),
        "no request reaches an untrusted control plane"
    );
    assert!(recorder.connected().is_empty());
    client.stop().await;
}

#[tokio::test]
async fn a_control_plane_named_by_dns_is_resolved() {
    let server = XdsServer::start().await;
    server.set("c1", &eds_cluster("c1"));
    let mut cluster = xds_cluster_json(server.addr());
    cluster["type"] = serde_json::json!("STRICT_DNS");
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        ["address"] = serde_json::json!("localhost");
    let recorder = Recorder::new();
    let client = Running::start_with_cluster(cluster, AdsApi::StateOfTheWorld, &recorder);
    acked(&server, type_url::CLUSTER).await;
    client.stop().await;
}

async fn interest_signal_subscribes_without_a_response(api: AdsApi) {
    let server = gateway_server().await;
    let recorder = Recorder::new();
    let client = Running::start(&server, api, &recorder);
    acked(&server, type_url::LISTENER).await;
    acked(&server, type_url::CLUSTER).await;
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.type_url != type_url::ENDPOINT),
        "no endpoints asked for yet"
    );
    let from = server.requests().len();
    recorder.set_interest(ResourceType::ClusterLoadAssignment, names(&["c1"]));
    recorder.interest_signal.send_replace(());
    let eds = server
        .wait_for_request(WAIT, from, |r| r.type_url == type_url::ENDPOINT)
        .await
        .unwrap_or_else(|| {
            panic!(
                "an EDS subscription after the signal: {:#?}",
                server.requests()
            )
        });
    assert_eq!(eds.resource_names, ["c1"]);
    acked(&server, type_url::ENDPOINT).await;
    client.stop().await;
}

#[tokio::test]
async fn sotw_interest_signal_subscribes_without_a_response() {
    interest_signal_subscribes_without_a_response(AdsApi::StateOfTheWorld).await;
}

#[tokio::test]
async fn delta_interest_signal_subscribes_without_a_response() {
    interest_signal_subscribes_without_a_response(AdsApi::Delta).await;
}
