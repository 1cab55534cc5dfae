//! Upgrades and CONNECT in the connection manager: which requests are tunnels, whether this
//! route lets them through, and setting them up (proxied to the upstream, or terminated here
//! with raw TCP to the cluster).
//!
//! An upgrade has one internal shape whatever the wire ([`crate::wire::TunnelKind`]): an
//! HTTP/1.1 `Upgrade: X` request and an HTTP/2 or HTTP/3 extended CONNECT with `:protocol X`
//! are both "upgrade X". The upstream side encodes it for its own protocol (see
//! `upstream::tunnel`), and its answer becomes a tunnel in
//! [`crate::wire::tunnel::from_response`], so a WebSocket crosses H1 -> H2 -> H1 hops intact;
//! a method other than GET travels across an HTTP/2 hop in `x-weir-upgrade-method` and is
//! restored on the next HTTP/1.1 hop.

use super::HttpManager;
use super::filter_chain::{PayloadFilters, PayloadFollows};
use super::headers;
use super::local_reply::LocalReply;
use crate::access_log::http::TunnelLog;
use crate::body::{self, Body};
use crate::route::{ForwardAction, TerminateConnect};
use crate::socket::SocketId;
use crate::tunnel;
use crate::upstream::OriginalDestination;
use crate::upstream::connect::UpstreamStream;
use crate::upstream::tunnel::{TunnelPayload, X_WEIR_UPGRADE_METHOD};
use crate::wire::ConnectionInfo;
use crate::wire::TunnelKind;
use crate::wire::handoff::{DownstreamEnd, TunnelHandoff};
use crate::wire::tunnel::{TunnelAnswer, TunnelRequest, from_response};
use crate::wire::{self, TunnelIo, WireHead, body_io, head};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};

/// Whether `request` asks for a tunnel, and which ([`crate::wire::tunnel_kind`]); a
/// malformed ask is answered 400.
pub fn tunnel_kind<B>(request: &Request<B>) -> Result<Option<TunnelKind>, LocalReply> {
    crate::wire::tunnel_kind(request).map_err(|malformed| LocalReply::BadRequest(malformed.0))
}

impl HttpManager {
    /// Whether `kind` is enabled for `action`: the route's setting where it has one, else the
    /// connection manager's, else off.
    pub(super) fn tunnel_enabled(&self, kind: &TunnelKind, action: &ForwardAction) -> bool {
        let upgrade_type = kind.upgrade_type();
        match action.upgrade(upgrade_type) {
            Some(route) => route.enabled,
            None => self.config.upgrade(upgrade_type).is_some_and(|u| u.enabled),
        }
    }

    /// The route's `connect_config` when CONNECT is enabled and terminated here.
    pub(super) fn terminate_config(&self, action: &ForwardAction) -> Option<TerminateConnect> {
        action
            .upgrade("connect")
            .filter(|u| u.enabled)
            .and_then(|u| u.terminate)
    }

    /// Sets up an enabled tunnel: answers downstream and leaves a task moving the payload.
    pub(super) async fn tunnel<B>(
        &self,
        mut request: Request<B>,
        kind: TunnelKind,
        host: &str,
        action: &ForwardAction,
        conn: &ConnectionInfo,
        route: crate::route::RouteId,
    ) -> Result<Response<Body>, LocalReply>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<body::BoxError>,
    {
        if !request.body().is_end_stream() && !request.multiplexed() {
            // An HTTP/1.1 upgrade with a body: its bytes would be taken for the tunnel's on
            // an HTTP/2 hop. RFC 8441's path is strict, and so is weir's.
            let has_body = request
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0")
                || request.headers().contains_key(header::TRANSFER_ENCODING);
            if has_body {
                return Err(LocalReply::BadRequest(
                    "an upgrade request may not have a body",
                ));
            }
        }
        let downstream = TunnelHandoff::take_from(&mut request);
        // The chain's filters, where one reads the payload (put there by the chain).
        let payload_filters = request.extensions_mut().remove::<PayloadFilters>();
        let downstream_version = request.version();
        let downstream_socket = conn.tunnel_socket(&downstream_version);
        if kind == TunnelKind::Connect
            && let Some(_terminate) = self.terminate_config(action)
        {
            // An HTTP/1.1 connection in the clear on an HTTP1 or AUTO listener hands back its
            // TCP socket (AUTO's from under the preface sniffer): the kernel splice's case.
            use crate::config::schema::CodecType;
            let bare_socket = downstream_socket.is_some()
                && !conn.tls
                && matches!(self.config.codec, CodecType::HTTP1 | CodecType::AUTO);
            return self
                .terminate(
                    downstream,
                    downstream_socket,
                    bare_socket,
                    action,
                    payload_filters,
                    super::stream::original_destination(conn),
                )
                .await;
        }
        let upstream_request = self.tunnel_request(request, &kind, host, conn, (route, action))?;
        let (payload_sender, payload) = body_io::channel_body();
        let mut upstream_request = upstream_request;
        super::stream::mark_original_destination(conn, upstream_request.extensions_mut());
        upstream_request
            .extensions_mut()
            .insert(TunnelPayload::new(payload));
        let send = self.pools.send(&action.cluster, upstream_request);
        let result = match action.timeout {
            Some(limit) => match tokio::time::timeout(limit, send).await {
                Ok(result) => result,
                Err(_) => {
                    self.stats.rq_timeout.inc();
                    return Err(LocalReply::UpstreamTimeout);
                }
            },
            None => send.await,
        };
        let response = result.map_err(LocalReply::Upstream)?;
        let asked = match kind {
            TunnelKind::Connect => TunnelRequest::Connect,
            TunnelKind::Upgrade(_) => TunnelRequest::Upgrade,
        };
        let reset = |reason: String| {
            LocalReply::Upstream(crate::upstream::UpstreamError::Reset {
                cluster: action.cluster.clone(),
                host: String::new(),
                reason,
            })
        };
        let (response, upstream) = match from_response(response, asked, payload_sender).await {
            Ok(TunnelAnswer::Open { head, tunnel }) => (head, tunnel),
            Ok(TunnelAnswer::Refused(mut response)) => {
                // On an HTTP/2 or HTTP/3 downstream a 2xx to a CONNECT *is* the tunnel (RFC
                // 9113 8.5, RFC 8441 5): an upstream that answered 2xx without switching
                // protocols cannot be passed on as it is.
                let status = response.status();
                if status.is_success() && downstream_version.multiplexed() {
                    return Err(reset(format!(
                        "the upstream answered the {} upgrade with {status} without switching protocols",
                        kind.upgrade_type()
                    )));
                }
                // The upstream said no: its answer goes back as an ordinary response.
                headers::remove_hop_by_hop(response.headers_mut(), false);
                *response.version_mut() = head::BETWEEN_HOPS;
                return Ok(response);
            }
            Err(error) => return Err(reset(error.to_string())),
        };
        let mut answer = Response::new(body::empty());
        let mut head = response.headers().clone();
        headers::remove_hop_by_hop(&mut head, false);
        head.remove(header::CONTENT_LENGTH);
        *answer.headers_mut() = head;
        match &kind {
            // HTTP/1.x: the connection switches protocols.
            TunnelKind::Upgrade(protocol) if !downstream_version.multiplexed() => {
                *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                if protocol.insert_h1_upgrade(answer.headers_mut()).is_err() {
                    // Never for a checked token; the 101 still says `Connection: upgrade`.
                    answer
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                }
            }
            _ => *answer.status_mut() = StatusCode::OK,
        }
        if payload_filters.is_some() {
            answer.extensions_mut().insert(PayloadFollows);
        }
        let filters = payload_filters;
        let log = self.tunnel_log(&mut answer);
        self.spawn_splice_with(downstream, downstream_socket, upstream, None, filters, log);
        Ok(answer)
    }

    /// Builds the upstream request of a proxied tunnel; the request header rules of its
    /// route apply, as to any request sent upstream.
    fn tunnel_request<B>(
        &self,
        request: Request<B>,
        kind: &TunnelKind,
        host: &str,
        conn: &ConnectionInfo,
        (route, action): (crate::route::RouteId, &ForwardAction),
    ) -> Result<Request<Body>, LocalReply> {
        let (mut parts, _body) = request.into_parts();
        let protocol = crate::wire::WireHead::protocol_name(&parts);
        let original_method = parts
            .headers
            .remove(&X_WEIR_UPGRADE_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
        headers::remove_hop_by_hop(&mut parts.headers, false);
        parts.extensions = http::Extensions::new();
        parts.version = head::BETWEEN_HOPS;
        match kind {
            TunnelKind::Connect => {
                let authority = parts
                    .uri
                    .authority()
                    .cloned()
                    .ok_or(LocalReply::BadRequest(
                        "CONNECT needs an authority (host:port)",
                    ))?;
                parts.method = Method::CONNECT;
                parts.uri = Uri::from(authority.clone());
                let value = HeaderValue::from_str(authority.as_str())
                    .map_err(|_| LocalReply::BadRequest("invalid authority"))?;
                parts.headers.insert(header::HOST, value);
            }
            TunnelKind::Upgrade(protocol) => {
                if parts.method == Method::CONNECT {
                    // From an HTTP/2+ extended CONNECT: back to the method the first hop had.
                    parts.method = original_method.unwrap_or(Method::GET);
                }
                let path = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string();
                parts.uri =
                    Uri::try_from(path).map_err(|_| LocalReply::BadRequest("invalid path"))?;
                let host = HeaderValue::from_str(host)
                    .map_err(|_| LocalReply::BadRequest("invalid host"))?;
                parts.headers.insert(header::HOST, host);
                protocol
                    .insert_h1_upgrade(&mut parts.headers)
                    .map_err(|_| LocalReply::BadRequest("malformed upgrade"))?;
                // RFC 8441 drops this on the HTTP/2 hop; WebSocket servers on HTTP/1.1 need it.
                if protocol.as_str() == "websocket"
                    && !parts.headers.contains_key(header::SEC_WEBSOCKET_VERSION)
                {
                    parts.headers.insert(
                        header::SEC_WEBSOCKET_VERSION,
                        HeaderValue::from_static("13"),
                    );
                }
            }
        }
        self.add_forwarding_headers(&mut parts.headers, conn);
        let side = super::route_headers::RequestSide {
            method: &parts.method,
            path: parts.uri.path_and_query().map_or("", |p| p.as_str()),
            protocol,
            cluster: &action.cluster,
        };
        super::route_headers::apply_to_request(
            &self.config.routes,
            route,
            &mut parts.headers,
            &side,
            conn,
        );
        Ok(Request::from_parts(parts, body::empty()))
    }

    /// A terminated CONNECT: raw TCP (or TLS) to the route's cluster, 200 once it is up.
    /// `downstream_socket` is the HTTP/1.1 connection's (none on HTTP/2: a stream);
    /// `bare_socket`: hyper will hand back that socket itself, unwrapped; `payload`: the
    /// filters the payload goes through, if any reads it (then it is never kernel-spliced).
    async fn terminate(
        &self,
        downstream: DownstreamEnd,
        downstream_socket: Option<SocketId>,
        bare_socket: bool,
        action: &ForwardAction,
        payload: Option<PayloadFilters>,
        original: Option<OriginalDestination>,
    ) -> Result<Response<Body>, LocalReply> {
        let raw = self
            .pools
            .connect_raw_to(&action.cluster, original)
            .await
            .map_err(LocalReply::Upstream)?;
        let (stream, guard) = (raw.stream, raw.guard);
        let mut answer = Response::new(body::empty());
        let log = self.tunnel_log(&mut answer);
        match stream {
            // Plain TCP both sides: the kernel splice where it is loaded (it resets both
            // sockets itself when one fails).
            UpstreamStream::Plain(upstream) if bare_socket && payload.is_none() => {
                self.spawn_splice_tcp(downstream, downstream_socket, upstream, guard, log)
            }
            stream => {
                if payload.is_some() {
                    answer.extensions_mut().insert(PayloadFollows);
                }
                let upstream = upstream_end(stream);
                let guard = Some(guard);
                self.spawn_splice_with(downstream, downstream_socket, upstream, guard, payload, log)
            }
        }
        Ok(answer)
    }

    /// With access logs, the tunnel's entry ([`TunnelLog`]), put on its `answer` so that
    /// the line is written when the tunnel closes; `None` without.
    fn tunnel_log(&self, answer: &mut Response<Body>) -> Option<TunnelLog> {
        self.config.access_log.as_ref()?;
        let log = TunnelLog::default();
        answer.extensions_mut().insert(log.clone());
        Some(log)
    }

    /// As [`Self::spawn_splice_with`], to a plain TCP upstream: [`crate::accel::splice_upgraded`].
    fn spawn_splice_tcp(
        &self,
        downstream: DownstreamEnd,
        downstream_socket: Option<SocketId>,
        upstream: tokio::net::TcpStream,
        guard: crate::upstream::RawGuard,
        log: Option<TunnelLog>,
    ) {
        let downstream = match downstream {
            DownstreamEnd::Upgraded(downstream) => downstream,
            other => {
                let upstream = wire::tunnel::tcp(upstream);
                let guard = Some(guard);
                return self.spawn_splice_with(
                    other,
                    downstream_socket,
                    upstream,
                    guard,
                    None,
                    log,
                );
            }
        };
        let stats = self.stats.clone();
        stats.cx_upgrades_total.inc();
        stats.cx_upgrades_active.inc();
        tokio::spawn(async move {
            let _guard = guard;
            let spliced = match downstream.await {
                Ok(downstream) => crate::accel::splice_upgraded(downstream, upstream).await,
                Err(error) => Err(std::io::Error::other(error)),
            };
            log_tunnel(log, spliced);
            stats.cx_upgrades_active.dec();
        });
    }

    /// A terminated POST tunnel (`connect_config.allow_post`): the request body is the
    /// payload to the cluster, the response body the payload back.
    ///
    /// A reset upstream ends the response body with an error: `RST_STREAM(CONNECT_ERROR)` on
    /// HTTP/2, and on HTTP/1.1 the connection (`downstream_socket`) closes with a RST.
    pub(super) async fn terminate_post(
        &self,
        request_body: Body,
        downstream_socket: Option<SocketId>,
        action: &ForwardAction,
        original: Option<OriginalDestination>,
    ) -> Result<Response<Body>, LocalReply> {
        let raw = self
            .pools
            .connect_raw_to(&action.cluster, original)
            .await
            .map_err(LocalReply::Upstream)?;
        let (sender, response_body) = body_io::channel_body();
        let downstream = wire::tunnel::body(body_io::BodyIo::new(request_body, sender))
            .reset_socket(downstream_socket);
        let stats = self.stats.clone();
        stats.cx_upgrades_total.inc();
        stats.cx_upgrades_active.inc();
        let (stream, guard) = (raw.stream, raw.guard);
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(error) = tunnel::splice(downstream, upstream_end(stream)).await {
                tracing::debug!(%error, "POST tunnel ended");
            }
            stats.cx_upgrades_active.dec();
        });
        Ok(Response::new(response_body))
    }

    /// Once the downstream end is handed over (by its codec, through the request's
    /// [`TunnelHandoff`], after our 101/200 is written), moves the payload both ways until both sides are done; a failure
    /// resets both ends ([`tunnel::splice`]), the downstream through `downstream_socket` on
    /// HTTP/1.1. With `payload`, through the chain's body callbacks
    /// ([`PayloadFilters::pump`]) instead of a splice.
    fn spawn_splice_with(
        &self,
        downstream: DownstreamEnd,
        downstream_socket: Option<SocketId>,
        upstream: TunnelIo,
        guard: Option<crate::upstream::RawGuard>,
        payload: Option<PayloadFilters>,
        log: Option<TunnelLog>,
    ) {
        let stats = self.stats.clone();
        stats.cx_upgrades_total.inc();
        stats.cx_upgrades_active.inc();
        tokio::spawn(async move {
            let _guard = guard;
            let spliced = match downstream.into_io().await {
                Ok(downstream) => {
                    let downstream = downstream.reset_socket(downstream_socket);
                    match payload {
                        Some(filters) => filters.pump(downstream, upstream).await,
                        None => tunnel::splice(downstream, upstream).await,
                    }
                }
                Err(error) => Err(std::io::Error::other(error)),
            };
            log_tunnel(log, spliced);
            stats.cx_upgrades_active.dec();
        });
    }
}

/// The end of a tunnel: its log line (the payload bytes both ways; 0 when it failed, whose
/// counts are not known) and a debug line on a failure.
fn log_tunnel(log: Option<TunnelLog>, spliced: std::io::Result<crate::accel::Spliced>) {
    let (received, sent) = match spliced {
        Ok(spliced) => (spliced.a_to_b, spliced.b_to_a),
        Err(error) => {
            tracing::debug!(%error, "tunnel ended with an error");
            (0, 0)
        }
    };
    if let Some(log) = log {
        log.finish(received, sent);
    }
}

/// A raw upstream connection as a tunnel end whose reset is a RST on its TCP socket.
fn upstream_end(stream: UpstreamStream) -> TunnelIo {
    match stream {
        UpstreamStream::Plain(tcp) => wire::tunnel::tcp(tcp),
        UpstreamStream::Tls(tls) => {
            let socket = SocketId::of(tls.get_ref().0);
            wire::tunnel::socket(tls, socket)
        }
    }
}
