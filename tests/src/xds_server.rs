//! An xDS management server for the tests: both ADS RPCs (state-of-the-world and delta) of
//! envoy-types' generated tonic server, on 127.0.0.1, over a store of resources per type URL.
//!
//! Each [`XdsServer::set`] or [`XdsServer::remove`] bumps its type's version and is pushed to
//! every open stream: state-of-the-world streams get the type's full set (only the requested
//! names for a named subscription, as RDS and EDS are), delta streams get the changes and
//! removals within their subscription. Every request is recorded ([`RecordedRequest`]) so
//! tests can assert ACKs and NACKs, and every response ([`SentResponse`]).
//! [`XdsServer::stop`] kills the connections abruptly (as a killed control plane would) and
//! [`XdsServer::restart`] serves again on the same port.

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use futures_util::Stream;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

/// The type URLs of the resource types.
pub mod type_url {
    /// LDS.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// CDS.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// ECDS.
    pub const EXTENSION_CONFIG: &str =
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
}

/// Whether a type is subscribed by name (RDS, EDS, ECDS) rather than as a wildcard.
fn named_type(type_url: &str) -> bool {
    type_url == type_url::ROUTE
        || type_url == type_url::ENDPOINT
        || type_url == type_url::EXTENSION_CONFIG
}

/// One request a client sent, as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The stream it came on (numbered from 1 in the order streams opened).
    pub stream: u64,
    /// A delta request (`DeltaAggregatedResources`) rather than state-of-the-world.
    pub delta: bool,
    /// `type_url`.
    pub type_url: String,
    /// `version_info` (state-of-the-world; empty in delta).
    pub version_info: String,
    /// `response_nonce`.
    pub response_nonce: String,
    /// `resource_names` (state-of-the-world) or `resource_names_subscribe` (delta).
    pub resource_names: Vec<String>,
    /// `resource_names_unsubscribe` (delta).
    pub unsubscribe: Vec<String>,
    /// `initial_resource_versions` (delta).
    pub initial_resource_versions: BTreeMap<String, String>,
    /// `error_detail`'s code and message: set on a NACK.
    pub error_detail: Option<(i32, String)>,
    /// `node.id`, when the request carried the node.
    pub node_id: Option<String>,
}

impl RecordedRequest {
    /// Whether it NACKs a response.
    pub fn is_nack(&self) -> bool {
        self.error_detail.is_some()
    }

    /// Whether it ACKs the response with `nonce`.
    pub fn acks(&self, nonce: &str) -> bool {
        self.response_nonce == nonce && self.error_detail.is_none()
    }
}

/// One response the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentResponse {
    /// The stream it went on.
    pub stream: u64,
    /// A delta response.
    pub delta: bool,
    /// `type_url`.
    pub type_url: String,
    /// `version_info` (or delta's `system_version_info`).
    pub version: String,
    /// `nonce`.
    pub nonce: String,
    /// The names of the resources it carried.
    pub names: Vec<String>,
    /// `removed_resources` (delta).
    pub removed: Vec<String>,
}

/// The resources of one type.
#[derive(Default)]
struct TypeStore {
    /// Bumped by each change of the type.
    version: u64,
    /// Name -> (resource, the version it was last set at).
    resources: BTreeMap<String, (Any, u64)>,
}

/// What the streams share.
#[derive(Default)]
struct Shared {
    store: Mutex<HashMap<String, TypeStore>>,
    requests: Mutex<Vec<RecordedRequest>>,
    responses: Mutex<Vec<SentResponse>>,
    streams: Mutex<u64>,
    open_streams: Mutex<u64>,
    /// Bumped on every store change; each stream watches it.
    changes: watch::Sender<u64>,
    /// The protocol ALPN chose on each TLS connection accepted (empty: none).
    alpn: Mutex<Vec<String>>,
    /// Responses pushed as they are onto every open state-of-the-world stream.
    injected: Mutex<Option<tokio::sync::broadcast::Sender<DiscoveryResponse>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new_stream(&self) -> u64 {
        *lock(&self.open_streams) += 1;
        let mut streams = lock(&self.streams);
        *streams += 1;
        *streams
    }

    fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
    }

    fn sent(&self, response: SentResponse) {
        lock(&self.responses).push(response);
    }

    fn injected(&self) -> tokio::sync::broadcast::Receiver<DiscoveryResponse> {
        lock(&self.injected)
            .get_or_insert_with(|| tokio::sync::broadcast::channel(16).0)
            .subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }
}

/// A running server (see the module docs). Dropping it kills its connections.
pub struct XdsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<Running>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

struct Running {
    kill: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl XdsServer {
    /// A server on 127.0.0.1 and a port of the kernel's choice, with no resources.
    pub async fn start() -> XdsServer {
        Self::start_with(None).await
    }

    /// A server over TLS with the certificate `files` (ALPN h2), as a control plane reached
    /// through a cluster with an `UpstreamTlsContext` is.
    pub async fn start_tls(files: &crate::tls::TlsFiles) -> XdsServer {
        let pem = std::fs::read(&files.key).expect("read key.pem");
        let key = rustls_pemfile::private_key(&mut pem.as_slice())
            .expect("parse key.pem")
            .expect("a key in key.pem");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(
                files.cert_der.clone(),
            )],
            key,
        )
        .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> XdsServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the xDS server");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared::default());
        let running = serve(listener, shared.clone(), tls.clone());
        XdsServer {
            addr,
            shared,
            running: Some(running),
            tls,
        }
    }

    /// The protocol ALPN chose on each TLS connection so far (`""`: none).
    pub fn negotiated_alpn(&self) -> Vec<String> {
        lock(&self.shared.alpn).clone()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the resource `name` of `message`'s type (added or replaced) and pushes it.
    pub fn set<M: prost::Name>(&self, name: &str, message: &M) {
        self.set_any(name, any(message));
    }

    /// Sets a resource given as an `Any` (its type URL is its type's) and pushes it.
    pub fn set_any(&self, name: &str, resource: Any) {
        self.set_many(vec![(name.to_owned(), resource)]);
    }

    /// Sets several resources, each type's version bumped once, and pushes them.
    pub fn set_many(&self, resources: Vec<(String, Any)>) {
        {
            let mut store = lock(&self.shared.store);
            let mut bumped = BTreeSet::new();
            for (name, resource) in resources {
                let types = store.entry(resource.type_url.clone()).or_default();
                if bumped.insert(resource.type_url.clone()) {
                    types.version += 1;
                }
                let version = types.version;
                types.resources.insert(name, (resource, version));
            }
        }
        self.shared.changed();
    }

    /// Removes a resource; bumps the type's version and pushes the change when it was there.
    pub fn remove(&self, type_url: &str, name: &str) -> bool {
        let removed = {
            let mut store = lock(&self.shared.store);
            let types = store.entry(type_url.to_owned()).or_default();
            let removed = types.resources.remove(name).is_some();
            if removed {
                types.version += 1;
            }
            removed
        };
        if removed {
            self.shared.changed();
        }
        removed
    }

    /// The version of a type now (`"0"` before its first change).
    pub fn version(&self, type_url: &str) -> String {
        lock(&self.shared.store)
            .get(type_url)
            .map_or(0, |types| types.version)
            .to_string()
    }

    /// Sends `response` as it is (any type URL, any resources; its nonce is set) on every
    /// open state-of-the-world stream, outside the store: for responses a client must refuse.
    pub fn inject_sotw(&self, response: DiscoveryResponse) {
        if let Some(sender) = lock(&self.shared.injected).as_ref() {
            let _ = sender.send(response);
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Every response sent so far, in order.
    pub fn responses(&self) -> Vec<SentResponse> {
        lock(&self.shared.responses).clone()
    }

    /// Streams opened so far (both RPCs).
    pub fn streams_opened(&self) -> u64 {
        *lock(&self.shared.streams)
    }

    /// Streams open now.
    pub fn open_streams(&self) -> u64 {
        *lock(&self.shared.open_streams)
    }

    /// Waits up to `limit` for a request matching `matches`, received at or after the
    /// `from`-th request (0: any); returns it.
    pub async fn wait_for_request(
        &self,
        limit: Duration,
        from: usize,
        matches: impl Fn(&RecordedRequest) -> bool,
    ) -> Option<RecordedRequest> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let found = lock(&self.shared.requests)
                .iter()
                .skip(from)
                .find(|request| matches(request))
                .cloned();
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits up to `limit` for a response matching `matches`; returns it.
    pub async fn wait_for_response(
        &self,
        limit: Duration,
        matches: impl Fn(&SentResponse) -> bool,
    ) -> Option<SentResponse> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let found = lock(&self.shared.responses)
                .iter()
                .find(|response| matches(response))
                .cloned();
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills every connection (no gRPC status, as when the process dies) and closes the
    /// port. The resources stay for [`XdsServer::restart`].
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let _ = running.kill.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), running.task).await;
    }

    /// Serves again on the same port (after [`XdsServer::stop`]).
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut listener = None;
        for _ in 0..100 {
            match bind_reusable(self.addr) {
                Ok(bound) => {
                    listener = Some(bound);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = listener.expect("rebind the xDS server's port within 5 s");
        self.running = Some(serve(listener, self.shared.clone(), self.tls.clone()));
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.kill.send(true);
            running.task.abort();
        }
    }
}

/// `message` as an `Any`.
pub fn any<M: prost::Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A listener on `addr` with SO_REUSEADDR, so a restart binds the port its killed
/// connections left in TIME_WAIT.
fn bind_reusable(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// Serves the ADS service on `listener` (over TLS with `tls`) until killed.
fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Running {
    let (kill, killed) = watch::channel(false);
    let service = Ads {
        shared: shared.clone(),
        kill: killed.clone(),
    };
    let incoming = {
        let killed = killed.clone();
        futures_util::stream::unfold(listener, move |listener| {
            let (killed, tls, shared) = (killed.clone(), tls.clone(), shared.clone());
            async move {
                let accepted = match listener.accept().await {
                    Err(error) => Err(error),
                    Ok((tcp, _)) => match tls {
                        // Responses go out at once (no Nagle wait behind the client's delayed
                        // ACK), as a real control plane's gRPC server sends them.
                        _ if tcp.set_nodelay(true).is_err() => Err(io::Error::other("TCP_NODELAY")),
                        None => Ok(Killable::new(Box::pin(tcp), killed)),
                        Some(acceptor) => {
                            let handshake =
                                tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp))
                                    .await;
                            match handshake {
                                Ok(Ok(stream)) => {
                                    let alpn =
                                        stream.get_ref().1.alpn_protocol().unwrap_or_default();
                                    lock(&shared.alpn)
                                        .push(String::from_utf8_lossy(alpn).into_owned());
                                    Ok(Killable::new(Box::pin(stream), killed))
                                }
                                Ok(Err(error)) => Err(error),
                                Err(_) => Err(io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    "TLS handshake timed out",
                                )),
                            }
                        }
                    },
                };
                Some((accepted, listener))
            }
        })
    };
    let mut signal = killed;
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(
                AggregatedDiscoveryServiceServer::new(service),
                incoming,
                async move {
                    let _ = signal.wait_for(|kill| *kill).await;
                },
            )
            .await;
        if let Err(error) = result {
            eprintln!("xDS server: {error}");
        }
    });
    Running { kill, task }
}

/// A byte stream a connection runs on (TCP, or TLS over TCP).
trait Io: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Io for T {}

/// A connection that fails every read and write once the server is killed, so hyper drops
/// it at once: the client sees its connection die, as with a killed process.
struct Killable {
    tcp: Pin<Box<dyn Io>>,
    killed: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Killable {
    fn new(tcp: Pin<Box<dyn Io>>, mut kill: watch::Receiver<bool>) -> Killable {
        Killable {
            tcp,
            killed: Box::pin(async move {
                let _ = kill.wait_for(|kill| *kill).await;
            }),
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "xDS server killed",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl tonic::transport::server::Connected for Killable {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Killable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        this.tcp.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        this.tcp.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        this.tcp.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().tcp.as_mut().poll_shutdown(cx)
    }
}

/// Resolves when the server is killed.
async fn killed(kill: &mut watch::Receiver<bool>) {
    let _ = kill.wait_for(|kill| *kill).await;
}

/// The service: each stream runs on a task of its own.
struct Ads {
    shared: Arc<Shared>,
    kill: watch::Receiver<bool>,
}

type Outgoing<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The response side of a stream: what its task queues.
fn outgoing<T: Send + 'static>(queue: mpsc::Receiver<Result<T, Status>>) -> Outgoing<T> {
    Box::pin(futures_util::stream::unfold(
        queue,
        |mut queue| async move { queue.recv().await.map(|item| (item, queue)) },
    ))
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Outgoing<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Outgoing<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (queue, responses) = mpsc::channel(64);
        let stream = SotwStream {
            id: self.shared.new_stream(),
            shared: self.shared.clone(),
            queue,
            subscriptions: HashMap::new(),
            nonce: 0,
        };
        tokio::spawn(stream.run(request.into_inner(), self.kill.clone()));
        Ok(Response::new(outgoing(responses)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (queue, responses) = mpsc::channel(64);
        let stream = DeltaStream {
            id: self.shared.new_stream(),
            shared: self.shared.clone(),
            queue,
            subscriptions: HashMap::new(),
            nonce: 0,
        };
        tokio::spawn(stream.run(request.into_inner(), self.kill.clone()));
        Ok(Response::new(outgoing(responses)))
    }
}

/// A state-of-the-world subscription: `None` names is a wildcard.
struct SotwSubscription {
    names: Option<BTreeSet<String>>,
    /// The type's version last sent on this stream.
    sent: Option<u64>,
}

struct SotwStream {
    id: u64,
    shared: Arc<Shared>,
    queue: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    subscriptions: HashMap<String, SotwSubscription>,
    nonce: u64,
}

impl SotwStream {
    async fn run(
        mut self,
        mut inbound: Streaming<DiscoveryRequest>,
        mut kill: watch::Receiver<bool>,
    ) {
        let mut changes = self.shared.changes.subscribe();
        let mut injected = self.shared.injected();
        loop {
            tokio::select! {
                response = injected.recv() => match response {
                    Ok(response) => {
                        if !self.send_raw(response).await {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                request = inbound.message() => match request {
                    Ok(Some(request)) => {
                        if !self.on_request(request).await {
                            break;
                        }
                    }
                    _ => break,
                },
                changed = changes.changed() => {
                    if changed.is_err() || !self.on_change().await {
                        break;
                    }
                }
                () = killed(&mut kill) => break,
            }
        }
        *lock(&self.shared.open_streams) -= 1;
    }

    /// Records a request; answers it when it subscribes to a type or changes its names.
    async fn on_request(&mut self, request: DiscoveryRequest) -> bool {
        self.shared.record(RecordedRequest {
            stream: self.id,
            delta: false,
            type_url: request.type_url.clone(),
            version_info: request.version_info.clone(),
            response_nonce: request.response_nonce.clone(),
            resource_names: request.resource_names.clone(),
            unsubscribe: Vec::new(),
            initial_resource_versions: BTreeMap::new(),
            error_detail: request
                .error_detail
                .as_ref()
                .map(|status| (status.code, status.message.clone())),
            node_id: request.node.as_ref().map(|node| node.id.clone()),
        });
        let type_url = request.type_url;
        let requested: BTreeSet<String> = request.resource_names.into_iter().collect();
        let names = match self.subscriptions.get(&type_url) {
            // The first request with no names: the legacy wildcard.
            None if requested.is_empty() && !named_type(&type_url) => None,
            _ if requested.contains("*") => None,
            Some(subscription) if subscription.names.is_none() && requested.is_empty() => None,
            _ => Some(requested),
        };
        let changed = self
            .subscriptions
            .get(&type_url)
            .is_none_or(|subscription| subscription.names != names);
        if !changed {
            return true;
        }
        self.subscriptions
            .insert(type_url.clone(), SotwSubscription { names, sent: None });
        self.send(&type_url).await
    }

    /// Pushes every subscribed type whose version moved.
    async fn on_change(&mut self) -> bool {
        let moved: Vec<String> = {
            let store = lock(&self.shared.store);
            self.subscriptions
                .iter()
                .filter(|(type_url, subscription)| {
                    let version = store.get(*type_url).map_or(0, |types| types.version);
                    subscription.sent != Some(version)
                })
                .map(|(type_url, _)| type_url.clone())
                .collect()
        };
        for type_url in moved {
            if !self.send(&type_url).await {
                return false;
            }
        }
        true
    }

    /// Sends an injected response with a nonce of this stream.
    async fn send_raw(&mut self, mut response: DiscoveryResponse) -> bool {
        self.nonce += 1;
        response.nonce = format!("{}-{}", self.id, self.nonce);
        self.shared.sent(SentResponse {
            stream: self.id,
            delta: false,
            type_url: response.type_url.clone(),
            version: response.version_info.clone(),
            nonce: response.nonce.clone(),
            names: Vec::new(),
            removed: Vec::new(),
        });
        self.queue.send(Ok(response)).await.is_ok()
    }

    /// Sends the type's resources within the subscription.
    async fn send(&mut self, type_url: &str) -> bool {
        let Some(subscription) = self.subscriptions.get_mut(type_url) else {
            return true;
        };
        let (version, resources): (u64, Vec<(String, Any)>) = {
            let store = lock(&self.shared.store);
            match store.get(type_url) {
                None => (0, Vec::new()),
                Some(types) => (
                    types.version,
                    types
                        .resources
                        .iter()
                        .filter(|(name, _)| {
                            subscription
                                .names
                                .as_ref()
                                .is_none_or(|names| names.contains(*name))
                        })
                        .map(|(name, (resource, _))| (name.clone(), resource.clone()))
                        .collect(),
                ),
            }
        };
        subscription.sent = Some(version);
        self.nonce += 1;
        let nonce = format!("{}-{}", self.id, self.nonce);
        self.shared.sent(SentResponse {
            stream: self.id,
            delta: false,
            type_url: type_url.to_owned(),
            version: version.to_string(),
            nonce: nonce.clone(),
            names: resources.iter().map(|(name, _)| name.clone()).collect(),
            removed: Vec::new(),
        });
        let response = DiscoveryResponse {
            version_info: version.to_string(),
            resources: resources
                .into_iter()
                .map(|(_, resource)| resource)
                .collect(),
            type_url: type_url.to_owned(),
            nonce,
            ..DiscoveryResponse::default()
        };
        self.queue.send(Ok(response)).await.is_ok()
    }
}

/// A delta subscription.
struct DeltaSubscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client holds, as this stream believes: name -> version.
    known: HashMap<String, String>,
}

struct DeltaStream {
    id: u64,
    shared: Arc<Shared>,
    queue: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    subscriptions: HashMap<String, DeltaSubscription>,
    nonce: u64,
}

impl DeltaStream {
    async fn run(
        mut self,
        mut inbound: Streaming<DeltaDiscoveryRequest>,
        mut kill: watch::Receiver<bool>,
    ) {
        let mut changes = self.shared.changes.subscribe();
        loop {
            tokio::select! {
                request = inbound.message() => match request {
                    Ok(Some(request)) => {
                        if !self.on_request(request).await {
                            break;
                        }
                    }
                    _ => break,
                },
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let types: Vec<String> = self.subscriptions.keys().cloned().collect();
                    let mut open = true;
                    for type_url in types {
                        open = open && self.send(&type_url, false).await;
                    }
                    if !open {
                        break;
                    }
                }
                () = killed(&mut kill) => break,
            }
        }
        *lock(&self.shared.open_streams) -= 1;
    }

    /// Records a request; follows its subscription changes and answers them.
    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> bool {
        self.shared.record(RecordedRequest {
            stream: self.id,
            delta: true,
            type_url: request.type_url.clone(),
            version_info: String::new(),
            response_nonce: request.response_nonce.clone(),
            resource_names: request.resource_names_subscribe.clone(),
            unsubscribe: request.resource_names_unsubscribe.clone(),
            initial_resource_versions: request
                .initial_resource_versions
                .iter()
                .map(|(name, version)| (name.clone(), version.clone()))
                .collect(),
            error_detail: request
                .error_detail
                .as_ref()
                .map(|status| (status.code, status.message.clone())),
            node_id: request.node.as_ref().map(|node| node.id.clone()),
        });
        let type_url = request.type_url;
        match self.subscriptions.get_mut(&type_url) {
            None => {
                let subscribe = request.resource_names_subscribe;
                let wildcard = subscribe.is_empty() || subscribe.iter().any(|name| name == "*");
                self.subscriptions.insert(
                    type_url.clone(),
                    DeltaSubscription {
                        wildcard,
                        names: subscribe.into_iter().filter(|name| name != "*").collect(),
                        known: request.initial_resource_versions.into_iter().collect(),
                    },
                );
                self.send(&type_url, true).await
            }
            Some(subscription) => {
                let mut changed = false;
                for name in request.resource_names_subscribe {
                    changed = true;
                    if name == "*" {
                        subscription.wildcard = true;
                    } else {
                        subscription.names.insert(name);
                    }
                }
                for name in request.resource_names_unsubscribe {
                    if name == "*" {
                        subscription.wildcard = false;
                    } else {
                        subscription.names.remove(&name);
                        subscription.known.remove(&name);
                    }
                }
                if !changed {
                    return true;
                }
                self.send(&type_url, false).await
            }
        }
    }

    /// Sends what changed within the subscription since the client's view; `always` sends
    /// even when nothing did (the first answer to a subscription).
    async fn send(&mut self, type_url: &str, always: bool) -> bool {
        let Some(subscription) = self.subscriptions.get_mut(type_url) else {
            return true;
        };
        let (version, changed, removed) = {
            let store = lock(&self.shared.store);
            let empty = TypeStore::default();
            let types = store.get(type_url).unwrap_or(&empty);
            let in_scope =
                |name: &String| subscription.wildcard || subscription.names.contains(name);
            let changed: Vec<Resource> = types
                .resources
                .iter()
                .filter(|(name, _)| in_scope(name))
                .filter(|(name, (_, version))| {
                    subscription.known.get(*name) != Some(&version.to_string())
                })
                .map(|(name, (resource, version))| Resource {
                    name: name.clone(),
                    version: version.to_string(),
                    resource: Some(resource.clone()),
                    ..Resource::default()
                })
                .collect();
            let removed: Vec<String> = subscription
                .known
                .keys()
                .filter(|name| !types.resources.contains_key(*name))
                .cloned()
                .collect();
            (types.version, changed, removed)
        };
        if changed.is_empty() && removed.is_empty() && !always {
            return true;
        }
        for resource in &changed {
            subscription
                .known
                .insert(resource.name.clone(), resource.version.clone());
        }
        for name in &removed {
            subscription.known.remove(name);
        }
        self.nonce += 1;
        let nonce = format!("{}-{}", self.id, self.nonce);
        self.shared.sent(SentResponse {
            stream: self.id,
            delta: true,
            type_url: type_url.to_owned(),
            version: version.to_string(),
            nonce: nonce.clone(),
            names: changed
                .iter()
                .map(|resource| resource.name.clone())
                .collect(),
            removed: removed.clone(),
        });
        let response = DeltaDiscoveryResponse {
            system_version_info: version.to_string(),
            resources: changed,
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce,
            ..DeltaDiscoveryResponse::default()
        };
        self.queue.send(Ok(response)).await.is_ok()
    }
}
