//! `envoy.filters.network.tcp_proxy` listeners: each accepted connection goes to the cluster,
//! as raw TCP, or encapsulated in HTTP (`tunneling_config`): an HTTP/1.1, HTTP/2 or HTTP/3
//! CONNECT, or a POST whose bodies carry the bytes. The downstream's bytes are not read until
//! the tunnel answered 2xx, so nothing is sent before it is established; a refusal closes the
//! downstream.
//!
//! With network Wasm filters (`envoy.filters.network.wasm` before the tcp_proxy) the
//! connection's bytes go through them in user space ([`super::network_filters`]); without,
//! a raw TCP connection is spliced in the kernel where it can be.

use super::network_filters::{FilteredConnection, NetworkFilters};
use crate::access_log::tcp::TcpOutcome;
use crate::body;
use crate::config::{Interception, TunnelConfig};
use crate::snapshot::TcpProxyConfig;
use crate::socket::SocketId;
use crate::stats::TcpStats;
use crate::upstream::connect::UpstreamStream;
use crate::upstream::tunnel::TunnelPayload;
use crate::upstream::{OriginalDestination, RawGuard, UpstreamAddress, UpstreamError, WorkerPools};
use crate::wire::tunnel::{self as wire_tunnel, TunnelAnswer, TunnelRequest, from_response};
use crate::wire::{TunnelIo, body_io};
use http::{HeaderValue, Method, Request, Uri, header};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// The tcp_proxy a listener runs on one worker now; a config reload stores a new one, and
/// each connection keeps the one in force when it was accepted.
pub type CurrentTcpProxy = arc_swap::ArcSwap<TcpProxy>;

/// One tcp_proxy listener on one worker.
pub struct TcpProxy {
    config: Arc<TcpProxyConfig>,
    interception: Interception,
    pools: WorkerPools,
    stats: TcpStats,
    filters: NetworkFilters,
}

impl TcpProxy {
    /// A proxy for `config` through this worker's `pools`, with a VM per network filter on
    /// this worker (call it on the worker's runtime); with
    /// `interception.use_original_dst` an `ORIGINAL_DST` cluster connects each connection to
    /// where it was headed before it was redirected here.
    pub fn new(
        config: Arc<TcpProxyConfig>,
        interception: Interception,
        pools: WorkerPools,
    ) -> Arc<TcpProxy> {
        let stats = TcpStats::new(&config.stat_prefix);
        let filters = NetworkFilters::new(&config.network_filters, &pools);
        Arc::new(TcpProxy {
            config,
            interception,
            pools,
            stats,
            filters,
        })
    }

    /// The listener's own `access_log[]`, if it has one.
    pub fn listener_access_log(&self) -> Option<&Arc<crate::access_log::AccessLogs>> {
        self.config.listener_access_log.as_ref()
    }

    /// The `name` of a network filter whose ECDS config is missing: while there is one,
    /// each connection is closed as it is accepted (see
    /// [`crate::listener::tcp_proxy_accept_loop`]).
    pub fn missing_config(&self) -> Option<&str> {
        self.config.missing_config.as_deref()
    }

    /// The cluster its connections go to.
    pub fn cluster(&self) -> &str {
        &self.config.cluster
    }

    /// How this listener's connections were redirected here (sidecar mode), to read their
    /// original destination.
    pub fn interception(&self) -> Interception {
        self.interception
    }

    /// Serves one accepted connection to its end, counting it in the listener's stats;
    /// `original` is where it was headed before it was redirected here. Returns how it
    /// ended, for the listener's own access log (which, as Envoy's, says the upstream host
    /// and the flags of the tcp_proxy's connection).
    pub async fn serve_connection(
        &self,
        downstream: TcpStream,
        original: Option<std::net::SocketAddr>,
    ) -> TcpOutcome {
        self.stats.cx_total.inc();
        self.stats.cx_active.inc();
        let outcome = self.serve(downstream, original).await;
        self.stats.cx_active.dec();
        outcome
    }

    async fn serve(
        &self,
        downstream: TcpStream,
        original: Option<std::net::SocketAddr>,
    ) -> TcpOutcome {
        let Some(logs) = &self.config.access_log else {
            return self.serve_unlogged(downstream, original).await;
        };
        let entry = crate::access_log::tcp::TcpEntry::start(
            logs.clone(),
            downstream.peer_addr().ok(),
            downstream.local_addr().ok(),
        );
        let outcome = self.serve_unlogged(downstream, original).await;
        entry.finish(&self.config.cluster, outcome);
        outcome
    }

    /// Serves one connection; returns how it ended, for the access log.
    async fn serve_unlogged(
        &self,
        downstream: TcpStream,
        original: Option<std::net::SocketAddr>,
    ) -> TcpOutcome {
        if !self.filters.is_empty() {
            return self.serve_filtered(downstream, original).await;
        }
        match self.connect(original).await {
            Ok(connected) => {
                let _guard = connected.guard;
                let tally = crate::accel::Tally::default();
                let ended = self.carry(downstream, connected.end, &tally).await;
                outcome(connected.host, ended, &tally)
            }
            Err(failed) => {
                reset(downstream);
                failed
            }
        }
    }

    /// [`TcpProxy::serve`] through the network filters: their contexts start (and may hold
    /// the upstream connection back) first, then every byte goes through them, in user
    /// space. The idle timeout covers the whole of it.
    /// Its log line's bytes are the downstream socket's, as Envoy counts them (see
    /// [`FilteredConnection::carry`]), however it ends.
    async fn serve_filtered(
        &self,
        downstream: TcpStream,
        original: Option<std::net::SocketAddr>,
    ) -> TcpOutcome {
        let (Ok(source), Ok(local)) = (downstream.peer_addr(), downstream.local_addr()) else {
            return TcpOutcome::default();
        };
        // As in Envoy, a redirected connection's destination is where it was headed.
        let destination = original.unwrap_or(local);
        let socket = SocketId::of(&downstream);
        let tally = crate::accel::Tally::default();
        let work = async {
            let Some(connection) = self.filters.start(source, destination).await else {
                tracing::debug!(%source, "tcp_proxy: a network filter closed the connection");
                return TcpOutcome::default();
            };
            let Ok(connected) = self.connect(original).await else {
                reset(downstream);
                return TcpOutcome {
                    flags: "UF",
                    ..TcpOutcome::default()
                };
            };
            let (address, _guard) = (connected.host, connected.guard);
            connection.connected(address);
            let downstream = wire_tunnel::tcp(downstream);
            if let Err(error) = connection
                .carry(downstream, connected.end.into_tunnel(), &tally)
                .await
            {
                tracing::debug!(%error, "tcp_proxy connection ended with an error");
            }
            drop::<FilteredConnection>(connection);
            TcpOutcome {
                upstream: address,
                ..TcpOutcome::default()
            }
        };
        let ended = self.until_idle(work, socket).await.unwrap_or(TcpOutcome {
            flags: "SI",
            ..TcpOutcome::default()
        });
        let moved = tally.get();
        if ended.upstream.is_none() && moved.a_to_b == 0 && moved.b_to_a == 0 {
            // Nothing carried (a filter closed it first, no upstream): as without filters.
            return ended;
        }
        TcpOutcome {
            received: moved.a_to_b,
            sent: moved.b_to_a,
            counted: true,
            ..ended
        }
    }

    /// Connects to the cluster as the config says (raw TCP or TLS from the pool, or a CONNECT
    /// or POST tunnel); on failure (counted, logged) the access log's outcome for it.
    async fn connect(
        &self,
        original: Option<std::net::SocketAddr>,
    ) -> Result<Connected, TcpOutcome> {
        let connected = match &self.config.tunnel {
            None => self.connect_raw(original).await,
            Some(tunnel) => match self.open_tunnel(tunnel).await {
                Ok((end, host)) => Ok(Connected {
                    end: UpstreamEnd::Tunnel(end),
                    host,
                    guard: None,
                }),
                Err(reason) => {
                    tracing::debug!(%reason, "tcp_proxy: tunnel not established");
                    Err(TcpOutcome {
                        flags: "UF",
                        ..TcpOutcome::default()
                    })
                }
            },
        };
        if connected.is_err() {
            self.stats.upstream_connect_fail.inc();
        }
        connected
    }

    /// A raw TCP (or TLS) connection from the cluster's pool.
    async fn connect_raw(
        &self,
        original: Option<std::net::SocketAddr>,
    ) -> Result<Connected, TcpOutcome> {
        match self
            .pools
            .connect_raw_to(&self.config.cluster, original.map(OriginalDestination))
            .await
        {
            Ok(raw) => Ok(Connected {
                end: match raw.stream {
                    UpstreamStream::Plain(tcp) => UpstreamEnd::Tcp(tcp),
                    UpstreamStream::Tls(tls) => {
                        let socket = SocketId::of(tls.get_ref().0);
                        UpstreamEnd::Tunnel(wire_tunnel::socket(tls, socket))
                    }
                },
                host: Some(raw.peer),
                guard: Some(raw.guard),
            }),
            Err(error) => {
                if matches!(error, UpstreamError::NoOriginalDestination { .. }) {
                    tracing::warn!(%error, "tcp_proxy: closing the connection");
                } else {
                    tracing::debug!(%error, "tcp_proxy: no upstream connection");
                }
                // As Envoy's tcp_proxy: the connect failed (UF) on its last attempt (URX), to
                // the host it picked.
                Err(TcpOutcome {
                    flags: "UF,URX",
                    upstream: failed_host(&error),
                    ..TcpOutcome::default()
                })
            }
        }
    }

    /// Carries the connection's bytes both ways until both directions are done, the one
    /// place the downstream socket is handed down: spliced in the kernel where both ends are
    /// plain TCP ([`crate::accel::splice_tcp`]), through the tunnel pump otherwise
    /// ([`super::splice`]), under `idle_timeout`. An error (a reset on one side) resets both.
    /// The bytes each way are counted into `tally` as they move, so that they are known
    /// however it ends.
    async fn carry(
        &self,
        downstream: TcpStream,
        upstream: UpstreamEnd,
        tally: &crate::accel::Tally,
    ) -> Option<std::io::Result<crate::accel::Spliced>> {
        let socket = SocketId::of(&downstream);
        let ended = match upstream {
            UpstreamEnd::Tcp(upstream) => {
                let splice = crate::accel::splice_tcp_counted(downstream, upstream, tally);
                self.until_idle(splice, socket).await
            }
            UpstreamEnd::Tunnel(upstream) => {
                let splice = super::splice_counted(wire_tunnel::tcp(downstream), upstream, tally);
                self.until_idle(splice, socket).await
            }
        };
        if let Some(Err(error)) = &ended {
            tracing::debug!(%error, "tcp_proxy tunnel ended with an error");
        }
        ended
    }

    /// Runs a connection's pump under `idle_timeout` (read off the downstream `socket`): past
    /// it the pump is dropped, which closes both sides, and `weir_tcp_idle_timeout` counts it.
    async fn until_idle<F: std::future::Future>(
        &self,
        pump: F,
        socket: Option<SocketId>,
    ) -> Option<F::Output> {
        let output = super::idle::run_until_idle(pump, socket, self.config.idle_timeout).await;
        if output.is_none() {
            self.stats.idle_timeout.inc();
            tracing::debug!(limit = ?self.config.idle_timeout, "tcp_proxy connection idle; closed");
        }
        output
    }

    /// Sends the CONNECT (or POST) and returns the tunnel once the upstream answered 2xx,
    /// with the address of the host that answered.
    async fn open_tunnel(
        &self,
        tunnel: &TunnelConfig,
    ) -> Result<(TunnelIo, Option<std::net::SocketAddr>), String> {
        let (payload_sender, payload) = body_io::channel_body();
        let mut request = Request::new(body::empty());
        *request.version_mut() = crate::wire::head::BETWEEN_HOPS;
        if tunnel.use_post {
            *request.method_mut() = Method::POST;
            *request.uri_mut() = Uri::from(tunnel.post_path.clone());
            *request.body_mut() = payload;
        } else {
            *request.method_mut() = Method::CONNECT;
            *request.uri_mut() = Uri::from(tunnel.hostname.clone());
            request.extensions_mut().insert(TunnelPayload::new(payload));
        }
        let host = HeaderValue::from_str(tunnel.hostname.as_str()).map_err(|e| e.to_string())?;
        request.headers_mut().insert(header::HOST, host);
        for (name, value) in &tunnel.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        let response = self
            .pools
            .send(&self.config.cluster, request)
            .await
            .map_err(|e| e.to_string())?;
        let address = response.extensions().get::<UpstreamAddress>().map(|a| a.0);
        let asked = if tunnel.use_post {
            TunnelRequest::Post
        } else {
            TunnelRequest::Connect
        };
        match from_response(response, asked, payload_sender).await {
            Ok(TunnelAnswer::Open { tunnel, .. }) => Ok((tunnel, address)),
            Ok(TunnelAnswer::Refused(response)) => {
                Err(format!("upstream answered {}", response.status()))
            }
            Err(error) => Err(format!("CONNECT {error}")),
        }
    }
}

/// The upstream end of a tcp_proxy connection.
enum UpstreamEnd {
    /// Plain TCP: with a plain TCP downstream, the kernel can splice the two.
    Tcp(TcpStream),
    /// TLS, or a tunnel inside HTTP: moved in user space.
    Tunnel(TunnelIo),
}

impl UpstreamEnd {
    /// The end as a tunnel end, for what moves bytes in user space (the network filters).
    fn into_tunnel(self) -> TunnelIo {
        match self {
            UpstreamEnd::Tcp(tcp) => wire_tunnel::tcp(tcp),
            UpstreamEnd::Tunnel(tunnel) => tunnel,
        }
    }
}

/// A connection made to the cluster for one downstream connection.
struct Connected {
    end: UpstreamEnd,
    /// The host it went to, for the access log and the network filters.
    host: Option<std::net::SocketAddr>,
    /// Held while a raw pooled connection is in use (its circuit-breaker place).
    guard: Option<RawGuard>,
}

/// How a connection to `upstream` ended, for the access log: the bytes each way that crossed
/// (`tally`), whether the splice finished, failed (a reset) or was cut by the idle timeout
/// (`SI`), as Envoy counts them.
fn outcome(
    upstream: Option<std::net::SocketAddr>,
    ended: Option<std::io::Result<crate::accel::Spliced>>,
    tally: &crate::accel::Tally,
) -> TcpOutcome {
    let moved = tally.get();
    TcpOutcome {
        upstream,
        received: moved.a_to_b,
        sent: moved.b_to_a,
        flags: if ended.is_none() { "SI" } else { "" },
        counted: true,
    }
}

/// The host a failed connect went to, where the error names one.
fn failed_host(error: &UpstreamError) -> Option<std::net::SocketAddr> {
    match error {
        UpstreamError::ConnectFailed { host, .. }
        | UpstreamError::ConnectTimeout { host, .. }
        | UpstreamError::Tls { host, .. } => host.parse().ok(),
        _ => None,
    }
}

/// Closes `stream` with a reset (SO_LINGER 0), so the peer sees the failure as one.
fn reset(stream: TcpStream) {
    if let Err(error) = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(%error, "SO_LINGER");
    }
    drop(stream);
}
