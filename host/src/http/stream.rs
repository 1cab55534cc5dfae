//! One request's way through the connection manager: the manager's implementation of the
//! stream phases ([`super::phases`], which lists them and runs them in order), and what they
//! share (the connection a request came on, the upstream request's shape).
//!
//! Before anything else, the head is **sanitised** ([`super::sanitize`]): userinfo in the
//! authority is a 400; the host's port is stripped and the path normalised as the manager
//! says (`/a/%2e%2e/admin` is `/admin` from there on, for the filters, the route and the
//! upstream alike). The HTTP filters ([`super::filter_chain`]) see the request before
//! routing and the response after. Admission ([`HttpManager::admit`]: header count, a host,
//! methods and upgrades this listener does not take) and the route
//! ([`crate::route::RouteTable::find`]; none is a 404) come next; a route may answer itself
//! (`direct_response`, `redirect`). The upstream request ([`HttpManager::upstream_request`])
//! has its path and host rewritten, hop-by-hop headers removed, `x-forwarded-*` and
//! `x-request-id` set, and its body put under `request_timeout` (408 when it passes first);
//! [`HttpManager::forward`] sends it through the cluster's pool under the route's timeout
//! (504; pool errors are 503s), and shapes the response (hop-by-hop headers removed,
//! `server` set). The body streams back, and the stream ends when its last byte is written
//! (see [`super::tracked`]).

use super::HttpManager;
use super::filter_chain::ResponseFilters;
use super::headers::{self, X_FORWARDED_PROTO, X_REQUEST_ID};
use super::local_reply::LocalReply;
use super::phases::{Filtered, Routed, StreamPhases, run_stream};
use super::request_body::{BodyFault, BodyVerdict, WatchedBody};
use super::route_headers::{self, MatchedRoute};
use super::sanitize;
use super::upgrade;
use crate::body::{self, Body};
use crate::route::redirect::RedirectRequest;
use crate::route::{ForwardAction, RouteAction, RouteId};
use crate::wire::ConnectionInfo;
use crate::wire::TunnelKind;
use crate::wire::head;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, Uri, header};
use http_body::Body as _;
use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::Arc;

/// Where the connection was headed before it was redirected to weir, as `ORIGINAL_DST`
/// clusters take it.
pub(super) fn original_destination(
    conn: &ConnectionInfo,
) -> Option<crate::upstream::OriginalDestination> {
    conn.original_dst.map(crate::upstream::OriginalDestination)
}

/// Puts the connection's original destination, if any, on an upstream request, where an
/// `ORIGINAL_DST` cluster looks for it.
pub(super) fn mark_original_destination(conn: &ConnectionInfo, extensions: &mut http::Extensions) {
    if let Some(original) = original_destination(conn) {
        extensions.insert(original);
    }
}

/// What the route phase picked for a stream that goes upstream.
pub struct Target<'s> {
    /// The request's host, as admitted.
    host: String,
    /// The route's action; once the upstream is selected, the one for this request (a
    /// weighted or `cluster_header` route's copy naming the cluster picked).
    action: Cow<'s, ForwardAction>,
    /// How much of the path the route's match covers (`prefix_rewrite` replaces it).
    rewrite_len: usize,
    /// The tunnel the request asks for, if any.
    tunnel: Option<TunnelKind>,
    /// The route taken (for its header rules and mirrors).
    route: RouteId,
}

/// What goes upstream, and how.
pub struct Upstream<'s> {
    action: Cow<'s, ForwardAction>,
    outgoing: Outgoing,
}

/// How a stream leaves for its upstream.
enum Outgoing {
    /// A request through the cluster's pool; the verdict says whether and why its body
    /// failed on the client's side.
    Request(Request<Body>, Option<Arc<BodyVerdict>>),
    /// A tunnel (an upgrade, CONNECT) proxied to the cluster.
    Tunnel {
        request: Request<Body>,
        kind: TunnelKind,
        host: String,
        route: RouteId,
    },
    /// A POST whose body is the payload of a tunnel terminated here (`connect_config` with
    /// `allow_post`).
    TerminatePost(Request<Body>),
}

impl HttpManager {
    /// Handles one request and returns its response head and streamed body: the phases of
    /// [`super::phases`], in order. Never fails: every problem is a local reply.
    /// The response carries the `response_headers_to_add` of the request's virtual host and
    /// route configuration.
    pub async fn handle<B>(&self, request: Request<B>, conn: &ConnectionInfo) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<body::BoxError>,
    {
        run_stream(self, request, conn).await
    }

    /// Gives `request` an `x-request-id` where the manager generates them and it has none.
    fn ensure_request_id<B>(&self, request: &mut Request<B>) {
        if self.config.generate_request_id && !request.headers().contains_key(&X_REQUEST_ID) {
            request
                .headers_mut()
                .insert(X_REQUEST_ID.clone(), headers::new_request_id());
        }
    }
}

/// The connection manager's phases: see [`super::phases`] for their order and purpose.
impl StreamPhases for HttpManager {
    type Log = Box<crate::access_log::http::Entry>;
    type ResponseFilters = Option<ResponseFilters>;
    type Target<'s> = Target<'s>;
    type Upstream<'s> = Upstream<'s>;

    /// An entry when the manager has access logs (see [`crate::access_log::http`]).
    fn open_log<B>(
        &self,
        mut request: Request<B>,
        conn: &ConnectionInfo,
    ) -> (Option<Self::Log>, Request<Body>)
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<body::BoxError>,
    {
        use crate::access_log::http::Entry;
        let Some(logs) = &self.config.access_log else {
            return (None, request.map(body::boxed));
        };
        // The id is made now, so the line and the upstream carry the same one (as Envoy's,
        // which logs the request headers as it forwarded them).
        self.ensure_request_id(&mut request);
        let mut entry = Entry::start(logs.clone(), &request, conn);
        if self.config.use_remote_address {
            entry.note_forwarded_for(conn.remote.ip());
        }
        let request = entry.count_body(request);
        (Some(entry), request)
    }

    fn accept(&self, conn: &ConnectionInfo) -> ControlFlow<Response<Body>> {
        // Counted in `downstream_rq_total` already, when its codec started it (see
        // `driver::Connection::stream`).
        if crate::overload::stop_accepting_requests() {
            // As Envoy: refused as soon as the head is read, before routing or any filter
            // runs, so an overloaded proxy spends as little as it can on the request.
            self.stats.rq_overload_close.inc();
            tracing::debug!(peer = %conn.remote, "overloaded: request refused");
            let response = LocalReply::Overloaded.into_response();
            self.stats.count_response(response.status().as_u16());
            return ControlFlow::Break(response);
        }
        ControlFlow::Continue(())
    }

    /// [`sanitize::sanitize_head`], then [`HttpManager::screen_head`], then
    /// `internal_only_headers`.
    fn head_received(
        &self,
        request: &mut Request<Body>,
        conn: &ConnectionInfo,
    ) -> ControlFlow<Response<Body>> {
        let sanitized = sanitize::sanitize_head(request, &self.config, conn.local.port())
            .and_then(|()| self.screen_head(request));
        if let Err(refusal) = sanitized {
            return ControlFlow::Break(self.refuse(refusal));
        }
        // `internal_only_headers`: gone before any filter sees the request, as in Envoy.
        for name in self.config.routes.internal_only_headers() {
            request.headers_mut().remove(name);
        }
        ControlFlow::Continue(())
    }

    /// The listener's `http_filters`, or an upgrade type's own chain (which then runs
    /// alone).
    async fn request_filters(
        &self,
        mut request: Request<Body>,
        conn: &ConnectionInfo,
    ) -> Filtered<Self::ResponseFilters> {
        // The health check filter first (see `super::health_check`), with the request's id
        // for its log line, as Envoy's.
        if let Some(filter) = &self.config.health_check {
            self.ensure_request_id(&mut request);
            match self.health_check_answer(filter, &request, conn) {
                super::health_check::HealthCheckVerdict::NotOne => {}
                super::health_check::HealthCheckVerdict::PassedThrough => {
                    // Carried to the upstream's answer (see `forward`), for its header and
                    // its log line.
                    request
                        .extensions_mut()
                        .insert(crate::access_log::http::HealthCheckRequest);
                }
                super::health_check::HealthCheckVerdict::Answered(mut answer) => {
                    if let Some(matched) = self.route_before_filters(&request) {
                        answer.extensions_mut().insert(matched);
                    }
                    return Filtered::Answered(answer, None);
                }
            }
        }
        // The request's tunnel kind is read only where some upgrade type has a chain.
        let kind = (!self.upgrade_filters.is_empty())
            .then(|| upgrade::tunnel_kind(&request).ok().flatten())
            .flatten();
        let filters = match kind {
            Some(kind) => self
                .upgrade_filters
                .iter()
                .find(|(upgrade_type, _)| upgrade_type == kind.upgrade_type())
                .map_or(&self.filters, |(_, chain)| chain),
            None => &self.filters,
        };
        if filters.is_empty() {
            return Filtered::Continue(request, None);
        }
        // As Envoy, the request id exists before the filters run (`request.id`).
        self.ensure_request_id(&mut request);
        let before = self.route_before_filters(&request);
        let routes = &self.config.routes;
        match Box::pin(filters.filter_request(request, conn, routes)).await {
            Filtered::Answered(mut response, filters) => {
                if let Some(matched) = before {
                    response.extensions_mut().insert(matched);
                }
                Filtered::Answered(response, filters)
            }
            going_on => going_on,
        }
    }

    /// The id exists before anything can fail, so a local reply and its log line carry the
    /// one the upstream would have seen (`upstream_request` keeps it).
    fn request_id(&self, request: &mut Request<Body>) -> Option<HeaderValue> {
        self.ensure_request_id(request);
        // A clone of a generated id is an allocation (its bytes become shared): made only
        // for the debug line that reads it.
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return None;
        }
        request.headers().get(&X_REQUEST_ID).cloned()
    }

    /// Admission ([`HttpManager::admit`]: header count, a host, tunnels this listener does
    /// not take), `require_tls`, then the route; `direct_response` and `redirect` routes
    /// answer here.
    fn route<'s>(
        &'s self,
        request: &Request<Body>,
        conn: &ConnectionInfo,
    ) -> Result<Routed<Target<'s>>, LocalReply> {
        let tunnel = upgrade::tunnel_kind(request)?;
        let host = self.admit(request)?;
        let is_connect = tunnel == Some(TunnelKind::Connect);
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", PathAndQuery::as_str);
        let routes = &self.config.routes;
        let forwarded_proto = self.forwarded_proto(request, conn);
        if !is_connect && routes.requires_tls(&host, forwarded_proto) {
            // `require_tls`: before any route, as Envoy; the host and path as they came.
            self.stats.rq_direct_response.inc();
            return redirect_response(
                http::StatusCode::MOVED_PERMANENTLY,
                &format!("https://{host}{path}"),
            )
            .map(Routed::Answered);
        }
        let Some((route_id, route)) =
            routes.find_request_id(&host, is_connect, path, request.headers())
        else {
            self.stats.rq_no_route.inc();
            if is_connect && !self.config.upgrade("connect").is_some_and(|u| u.enabled) {
                // CONNECT is off unless configured: say so rather than "no route".
                return Err(LocalReply::Forbidden(
                    "CONNECT is not enabled on this listener",
                ));
            }
            return Err(LocalReply::NoRoute);
        };
        match &route.action {
            RouteAction::Direct {
                status,
                body: content,
            } => {
                self.stats.rq_direct_response.inc();
                let mut response = Response::new(body::full(content.clone()));
                *response.status_mut() = *status;
                if !content.is_empty() {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                }
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(content.len()));
                response
                    .extensions_mut()
                    .insert(MatchedRoute::new(routes, route_id, request));
                Ok(Routed::Answered(response))
            }
            RouteAction::Redirect(redirect) => {
                self.stats.rq_direct_response.inc();
                let scheme =
                    request
                        .uri()
                        .scheme_str()
                        .unwrap_or(if conn.tls { "https" } else { "http" });
                let location = redirect.location(&RedirectRequest {
                    scheme,
                    forwarded_proto,
                    host: &host,
                    path_and_query: path,
                    matched_len: route.path.rewrite_len(path),
                });
                let mut response = redirect_response(redirect.status, &location)?;
                response
                    .extensions_mut()
                    .insert(MatchedRoute::new(routes, route_id, request));
                Ok(Routed::Answered(response))
            }
            RouteAction::Forward(action) => Ok(Routed::Upstream(Target {
                host,
                action: Cow::Borrowed(action),
                rewrite_len: route.path.rewrite_len(path),
                tunnel,
                route: route_id,
            })),
        }
    }

    /// `weighted_clusters` and `cluster_header` pick the cluster here, once per request; a
    /// cluster that does not exist (picked so, or named by a route whose clusters were not
    /// checked: RDS) is answered as Envoy does, and a tunnel must be enabled
    /// on the route.
    fn upstream_selected<'s>(
        &'s self,
        request: &Request<Body>,
        mut target: Target<'s>,
    ) -> Result<Target<'s>, LocalReply> {
        if let Cow::Borrowed(action) = target.action {
            target.action = action.for_request(
                request.headers(),
                request.extensions().get::<crate::route::PickedCluster>(),
            );
        }
        let action: &ForwardAction = &target.action;
        if self
            .config
            .access_log
            .as_ref()
            .is_some_and(|logs| logs.reads_upstream_cluster())
        {
            // Only where a format prints it: the note is a copy of the name.
            crate::access_log::http::note_cluster(&action.cluster);
        }
        if (matches!(target.action, Cow::Owned(_)) || action.cluster_unchecked)
            && !self.pools.has_cluster(&action.cluster)
        {
            tracing::debug!(cluster = %action.cluster, "route names no such cluster");
            return Err(LocalReply::ClusterNotFound(action.cluster_not_found));
        }
        if let Some(kind) = &target.tunnel
            && !self.tunnel_enabled(kind, action)
        {
            return Err(LocalReply::Forbidden(match kind {
                TunnelKind::Connect => "CONNECT is not enabled on this route",
                TunnelKind::Upgrade(_) => "this upgrade is not enabled on this route",
            }));
        }
        Ok(target)
    }

    /// A tunnel as it came; a POST to a terminated CONNECT route as its body; anything else
    /// rewritten for the upstream ([`HttpManager::upstream_request`]).
    fn upstream_request<'s>(
        &'s self,
        request: Request<Body>,
        target: Target<'s>,
        conn: &ConnectionInfo,
    ) -> Result<Upstream<'s>, LocalReply> {
        let Target {
            host,
            action,
            rewrite_len,
            tunnel,
            route,
        } = target;
        let outgoing = if let Some(kind) = tunnel {
            Outgoing::Tunnel {
                request,
                kind,
                host,
                route,
            }
        } else if request.method() == Method::POST
            && self.terminate_config(&action).is_some_and(|t| t.allow_post)
        {
            Outgoing::TerminatePost(request)
        } else {
            let (request, verdict) =
                self.upstream_request(request, &host, &action, rewrite_len, conn, route)?;
            Outgoing::Request(request, verdict)
        };
        Ok(Upstream { action, outgoing })
    }

    /// Through the cluster's pool ([`HttpManager::forward`]); a tunnel is set up and
    /// answered ([`HttpManager::tunnel`], [`HttpManager::terminate_post`]).
    async fn forward<'s>(
        &'s self,
        upstream: Upstream<'s>,
        conn: &ConnectionInfo,
    ) -> Result<Response<Body>, LocalReply> {
        let action: &ForwardAction = &upstream.action;
        match upstream.outgoing {
            // Boxed, as the other rare path below: the future of this function is as large
            // as its largest branch, and it is moved per request.
            Outgoing::Tunnel {
                request,
                kind,
                host,
                route,
            } => Box::pin(self.tunnel(request, kind, &host, action, conn, route)).await,
            Outgoing::TerminatePost(request) => {
                let socket = conn.tunnel_socket(&request);
                Box::pin(self.terminate_post(
                    request.into_body(),
                    socket,
                    action,
                    original_destination(conn),
                ))
                .await
            }
            Outgoing::Request(request, verdict) => {
                self.forward(request, action).await.map_err(|reply| {
                    // A body that failed on the client's side is why the upstream request
                    // failed: the client's fault, answered as such.
                    let http1 = verdict.as_ref().is_some_and(|verdict| verdict.http1());
                    match verdict.and_then(|verdict| verdict.fault()) {
                        Some(BodyFault::TimedOut) => {
                            self.stats.rq_timeout.inc();
                            LocalReply::RequestTimeout
                        }
                        Some(BodyFault::Idle) => {
                            self.stats.rq_idle_timeout.inc();
                            LocalReply::RequestTimeout
                        }
                        Some(fault @ (BodyFault::Malformed | BodyFault::Unparsable)) => {
                            self.stats.rq_body_error.inc();
                            if fault == BodyFault::Unparsable {
                                self.stats.cx_protocol_error.inc();
                            }
                            if http1 {
                                // The connection closes under the unfinished request: Envoy
                                // counts the stream reset (its codec reports it).
                                self.stats.rq_rx_reset.inc();
                            }
                            LocalReply::BadRequestBody
                        }
                        None => reply,
                    }
                })
            }
        }
    }

    async fn response_filters(
        &self,
        filters: Self::ResponseFilters,
        response: Response<Body>,
    ) -> Response<Body> {
        if filters.is_none() {
            return response;
        }
        Box::pin(ResponseFilters::filter_response(filters, response)).await
    }

    fn route_matched(
        &self,
        request: &Request<Body>,
        target: &Target<'_>,
        _conn: &ConnectionInfo,
    ) -> Option<MatchedRoute> {
        Some(MatchedRoute::new(
            &self.config.routes,
            target.route,
            request,
        ))
    }

    /// The response header rules of the route, its virtual host and the route configuration,
    /// in Envoy's order ([`route_headers`]), before the response filters.
    fn route_response_head(
        &self,
        route: Option<MatchedRoute>,
        conn: &ConnectionInfo,
        mut response: Response<Body>,
    ) -> Response<Body> {
        if let Some(route) = &route {
            route_headers::apply_to_response(&self.config.routes, route, conn, &mut response);
        }
        response
    }

    /// After the response filters: the `server` header (`server_name`, on every answer, the
    /// upstream's replaced, as Envoy's default `server_header_transformation: OVERWRITE`),
    /// `x-envoy-immediate-health-check-fail` while the server fails its health checks; the
    /// response counted by its class.
    fn response_head(&self, mut response: Response<Body>) -> Response<Body> {
        if let Some(server) = &self.server_header {
            response
                .headers_mut()
                .insert(header::SERVER, server.clone());
        }
        super::health_check::mark_passed_through(
            self.config.health_check.as_deref(),
            &mut response,
        );
        super::health_check::mark_failed(
            self.config.health_check.as_deref(),
            response.headers_mut(),
        );
        self.stats.count_response(response.status().as_u16());
        response
    }

    fn log(
        &self,
        log: Self::Log,
        response: Response<Body>,
        upstream: crate::access_log::http::UpstreamSeen,
    ) -> Response<Body> {
        log.respond(response, upstream)
    }
}

impl HttpManager {
    /// The answer to a head that [`sanitize::sanitize_head`] refused, counted as Envoy counts
    /// it.
    fn refuse(&self, refusal: sanitize::HeadRefusal) -> Response<Body> {
        tracing::debug!(?refusal, "request head refused");
        match refusal {
            sanitize::HeadRefusal::BadAuthority(why) | sanitize::HeadRefusal::BadHeader(why) => {
                LocalReply::BadRequest(why).into_response()
            }
            sanitize::HeadRefusal::BadPath(why) => {
                self.stats.rq_failed_path_normalization.inc();
                LocalReply::BadRequest(why).into_response()
            }
            sanitize::HeadRefusal::Redirect(location) => {
                let Ok(location) = HeaderValue::from_str(&location) else {
                    self.stats.rq_failed_path_normalization.inc();
                    return LocalReply::BadRequest("path normalization failed").into_response();
                };
                self.stats.rq_redirected_with_normalized_path.inc();
                let mut response = Response::new(body::empty());
                *response.status_mut() = http::StatusCode::TEMPORARY_REDIRECT;
                let headers = response.headers_mut();
                headers.insert(header::LOCATION, location);
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                response
            }
        }
    }

    /// After [`sanitize::sanitize_head`], before anything (the filters included) sees the
    /// request: header names with underscores (`headers_with_underscores_action`).
    fn screen_head<B>(&self, request: &mut Request<B>) -> Result<(), sanitize::HeadRefusal> {
        use crate::config::schema::HeadersWithUnderscoresAction as Underscores;
        let action = self.config.headers_with_underscores;
        if action == Underscores::ALLOW
            || !request
                .headers()
                .keys()
                .any(|name| name.as_str().contains('_'))
        {
            return Ok(());
        }
        if action == Underscores::REJECT_REQUEST {
            self.stats.rq_rejected_with_underscores_in_headers.inc();
            return Err(sanitize::HeadRefusal::BadHeader(
                "header name with an underscore",
            ));
        }
        let names: Vec<_> = request
            .headers()
            .keys()
            .filter(|name| name.as_str().contains('_'))
            .cloned()
            .collect();
        for name in names {
            request.headers_mut().remove(&name);
            self.stats.dropped_headers_with_underscores.inc();
        }
        Ok(())
    }

    /// What every request sent upstream carries, a tunnel's included: `x-forwarded-proto`
    /// (set, or kept from the client unless `use_remote_address`), the client's address
    /// appended to `x-forwarded-for` with `use_remote_address`, and an `x-request-id` where it
    /// has none (the request-id phase set one, but a client's `connection: x-request-id` may
    /// have had it stripped as hop-by-hop since).
    pub(super) fn add_forwarding_headers(
        &self,
        headers: &mut http::HeaderMap,
        conn: &ConnectionInfo,
    ) {
        let scheme = if conn.tls { "https" } else { "http" };
        if self.config.use_remote_address || !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
        }
        if self.config.use_remote_address {
            headers::append_forwarded_for(headers, conn.remote.ip());
        }
        // `x-request-id` was made before routing (the request id phase); one a filter took
        // out stays out, as in Envoy, whose router does not make it again.
    }

    /// The request's `x-forwarded-proto` as `upstream_request` will leave it: the
    /// connection's scheme, unless the client's value is trusted (no `use_remote_address`).
    fn forwarded_proto<'r, B>(&self, request: &'r Request<B>, conn: &ConnectionInfo) -> &'r str {
        let scheme = if conn.tls { "https" } else { "http" };
        if self.config.use_remote_address {
            return scheme;
        }
        request
            .headers()
            .get(&X_FORWARDED_PROTO)
            .and_then(|value| value.to_str().ok())
            .unwrap_or(scheme)
    }

    /// The route of `request` as it is before the HTTP filters run, for the answer a filter
    /// (or the health check filter) may give: Envoy knows the route before its filters run
    /// and applies its response header rules to such an answer. Looked up only where some
    /// level has response rules; `None` for a request no route takes.
    fn route_before_filters<B>(&self, request: &Request<B>) -> Option<MatchedRoute> {
        let routes = &self.config.routes;
        if !routes.any_response_rules() {
            return None;
        }
        let host = self.admit(request).ok()?;
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", PathAndQuery::as_str);
        let is_connect = request.method() == http::Method::CONNECT;
        let (id, _) = routes.find_request_id(&host, is_connect, path, request.headers())?;
        Some(MatchedRoute::new(routes, id, request))
    }

    /// Checks a request can be served here at all, and returns its host.
    fn admit<B>(&self, request: &Request<B>) -> Result<String, LocalReply> {
        if request.headers().len() > self.config.max_headers_count {
            return Err(LocalReply::TooManyHeaders);
        }
        let host = match request.uri().authority() {
            Some(authority) => authority.as_str().to_string(),
            None => match request.headers().get(header::HOST).map(HeaderValue::to_str) {
                Some(Ok(host)) if !host.is_empty() => host.to_string(),
                Some(_) => return Err(LocalReply::BadRequest("invalid host header")),
                // HTTP/1.0 may omit Host; Envoy rejects it the same way unless told otherwise.
                None => return Err(LocalReply::BadRequest("missing host header")),
            },
        };
        Ok(host)
    }

    /// Builds the request the upstream receives. A request with a body has it watched (see
    /// [`super::request_body`]); the verdict returned says whether and why it failed.
    fn upstream_request(
        &self,
        request: Request<Body>,
        host: &str,
        action: &ForwardAction,
        rewrite_len: usize,
        conn: &ConnectionInfo,
        route: RouteId,
    ) -> Result<(Request<Body>, Option<Arc<BodyVerdict>>), LocalReply> {
        let (mut parts, request_body) = request.into_parts();
        let protocol = crate::wire::WireHead::protocol_name(&parts);
        let http1 = crate::wire::WireHead::carries_connection_header(&parts);
        if let Some(rules) = &action.hash_policy {
            let hashed = crate::route::hash::compute(
                rules,
                &parts.headers,
                parts.uri.query(),
                conn.remote,
                conn.local,
            );
            if let Some(hash) = hashed.hash {
                parts.extensions.insert(crate::upstream::LbHashKey(hash));
            }
            if let Some(cookie) = hashed.set_cookie {
                parts
                    .extensions
                    .insert(crate::route::hash::HashCookie(cookie));
            }
        }
        let path = match (&action.prefix_rewrite, &action.regex_rewrite) {
            (None, Some(regex)) => {
                let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
                match regex.apply(path) {
                    std::borrow::Cow::Owned(rewritten) => PathAndQuery::try_from(rewritten)
                        .map_err(|_| LocalReply::BadRequest("invalid path after rewrite"))?,
                    std::borrow::Cow::Borrowed(_) => parts
                        .uri
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| PathAndQuery::from_static("/")),
                }
            }
            (Some(rewrite), _) => {
                let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
                let rest = path.get(rewrite_len..).unwrap_or("");
                let mut rewritten = format!("{rewrite}{rest}");
                if !rewritten.starts_with('/') {
                    rewritten.insert(0, '/');
                }
                PathAndQuery::try_from(rewritten)
                    .map_err(|_| LocalReply::BadRequest("invalid path after rewrite"))?
            }
            // The request's own path, shared rather than copied and parsed again.
            (None, None) => parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
        parts.uri = Uri::from(path);

        parts.version = head::BETWEEN_HOPS;
        let headers = &mut parts.headers;
        headers::remove_hop_by_hop(headers, true);
        let from_header = action
            .host_rewrite_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .filter(|value| !value.is_empty())
            .cloned();
        let host = match (&action.host_rewrite, from_header) {
            (Some(rewrite), _) => rewrite.clone(),
            (None, Some(value)) => value,
            (None, None) => {
                HeaderValue::from_str(host).map_err(|_| LocalReply::BadRequest("invalid host"))?
            }
        };
        headers.insert(header::HOST, host);
        // Retry and timeout settings are not the client's to choose (see `route::retry`).
        crate::route::retry::strip_request_headers(headers);
        crate::route::response_headers::apply(&action.request_headers, headers);
        self.add_forwarding_headers(headers, conn);
        let side = route_headers::RequestSide {
            method: &parts.method,
            path: parts.uri.path_and_query().map_or("/", PathAndQuery::as_str),
            protocol,
            cluster: &action.cluster,
        };
        route_headers::apply_to_request(&self.config.routes, route, headers, &side, conn);
        mark_original_destination(conn, &mut parts.extensions);
        if action.auto_host_rewrite {
            parts.extensions.insert(crate::upstream::AutoHostRewrite);
        }
        if request_body.is_end_stream() {
            let request = self.mirror(Request::from_parts(parts, request_body), action, route);
            return Ok((request, None));
        }
        let verdict = Arc::new(BodyVerdict::new(http1));
        let request_body = body::boxed(WatchedBody::new(
            request_body,
            self.config.request_timeout,
            action
                .idle_timeout
                .unwrap_or(self.config.stream_idle_timeout),
            verdict.clone(),
        ));
        let request = self.mirror(Request::from_parts(parts, request_body), action, route);
        Ok((request, Some(verdict)))
    }

    /// `request_mirror_policies` of `route`: copies of `request` on their way (see
    /// [`super::mirror`]); the request, its body copied as it passes where a copy needs it.
    fn mirror(
        &self,
        request: Request<Body>,
        action: &ForwardAction,
        route: RouteId,
    ) -> Request<Body> {
        let Some(policies) = self
            .config
            .routes
            .route(route)
            .map(|r| r.mirrors.as_slice())
            .filter(|m| !m.is_empty())
        else {
            return request;
        };
        super::mirror::mirror(
            request,
            policies,
            &self.pools,
            &self.mirrors,
            &self.stats,
            super::mirror::MirrorLimits::timeout(action.timeout),
            self.config.buffer_limit,
        )
    }

    /// Sends `request` to the route's cluster (retried as its route says) and shapes the
    /// response for downstream.
    async fn forward(
        &self,
        request: Request<Body>,
        action: &ForwardAction,
    ) -> Result<Response<Body>, LocalReply> {
        let mut request = request;
        let hash_cookie = request
            .extensions_mut()
            .remove::<crate::route::hash::HashCookie>();
        let health_check = request
            .extensions_mut()
            .remove::<crate::access_log::http::HealthCheckRequest>();
        // Under the route's timeout, with its retries (see `super::retry`).
        let mut response = self.send_upstream(request, action).await?;
        if let Some(health_check) = health_check {
            response.extensions_mut().insert(health_check);
        }
        headers::remove_hop_by_hop(response.headers_mut(), false);
        *response.version_mut() = head::BETWEEN_HOPS;
        if let Some(crate::route::hash::HashCookie(cookie)) = hash_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        if let Some(idle) = action.idle_timeout {
            response.extensions_mut().insert(RouteIdleTimeout(idle));
        }
        Ok(response)
    }
}

/// On a response: the route's `idle_timeout`, which replaces the connection manager's
/// `stream_idle_timeout` for the response body (`None`: no limit).
#[derive(Debug, Clone, Copy)]
pub struct RouteIdleTimeout(pub Option<std::time::Duration>);

/// A redirect weir answers itself (`redirect` routes, `require_tls`): `status`, `Location`,
/// no body.
fn redirect_response(
    status: http::StatusCode,
    location: &str,
) -> Result<Response<Body>, LocalReply> {
    let location = HeaderValue::from_str(location)
        .map_err(|_| LocalReply::BadRequest("invalid redirect location"))?;
    let mut response = Response::new(body::empty());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    Ok(response)
}
