//! The header rules of a request's route, virtual host and route configuration
//! ([`crate::route::header_rules`]) as the connection manager applies them: to the request
//! sent upstream (after the forwarding headers, as Envoy's router applies them after its
//! connection manager set those), and to the response of a request that had a route, before
//! the response filters (as Envoy's router applies them when the upstream's headers arrive),
//! which by then knows its request only through a [`MatchedRoute`].

use crate::access_log::format::LogContext;
use crate::route::{RouteId, RouteTable};
use crate::wire::ConnectionInfo;
use http::{HeaderMap, Method};
use std::time::SystemTime;

/// The route a request took, for its response's header rules; with the request facts
/// their values read, kept only where some response rule reads them (`%REQ(x)%`,
/// `%START_TIME%`, `%PROTOCOL%`).
#[derive(Debug, Clone)]
pub struct MatchedRoute {
    /// The route.
    pub route: RouteId,
    facts: Option<Box<RequestFacts>>,
}

/// What a response's header values may read of their request.
#[derive(Debug, Clone)]
struct RequestFacts {
    start: SystemTime,
    protocol: &'static str,
    method: Method,
    path: String,
    authority: Option<String>,
    /// The request headers some response rule reads (`%REQ(x)%`).
    headers: HeaderMap,
}

impl MatchedRoute {
    /// `route`, taken for `request` (its head as routed) of `routes`.
    pub fn new<B>(routes: &RouteTable, route: RouteId, request: &http::Request<B>) -> MatchedRoute {
        let facts = routes.response_reads().map(|names| {
            let mut headers = HeaderMap::new();
            for name in names {
                for value in request.headers().get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
            Box::new(RequestFacts {
                start: SystemTime::now(),
                protocol: crate::wire::WireHead::protocol_name(request),
                method: request.method().clone(),
                path: request
                    .uri()
                    .path_and_query()
                    .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
                authority: request.uri().authority().map(|a| a.as_str().to_owned()),
                headers,
            })
        });
        MatchedRoute { route, facts }
    }
}

/// Applies the response header rules of `route` (its own, its virtual host's, the route
/// configuration's) to a response of a request on `conn`.
pub fn apply_to_response(
    routes: &RouteTable,
    route: &MatchedRoute,
    conn: &ConnectionInfo,
    response: &mut http::Response<crate::body::Body>,
) {
    if !routes.has_response_rules(None, Some(route.route)) {
        return;
    }
    let facts = route.facts.as_deref();
    let status = response.status().as_u16();
    let upstream_host = response
        .extensions()
        .get::<crate::upstream::UpstreamAddress>()
        .map(|a| a.0);
    let cx = LogContext {
        start: facts.map(|f| f.start),
        method: facts.map(|f| f.method.as_str()),
        path: facts.map(|f| f.path.as_str()),
        authority: facts.and_then(|f| f.authority.as_deref()),
        request_headers: facts.map(|f| &f.headers),
        status: Some(status),
        upstream_host,
        downstream_remote: Some(conn.remote),
        downstream_local: Some(conn.local),
        protocol: facts.map(|f| f.protocol),
        sni: conn.sni.as_deref(),
        connection_id: Some(conn.id),
        ..LogContext::default()
    };
    routes.apply_response_rules(None, Some(route.route), response.headers_mut(), &cx);
}

/// What a request's header values read besides its headers.
pub struct RequestSide<'a> {
    /// `:method`.
    pub method: &'a Method,
    /// `:path`, as sent upstream.
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/2`, `HTTP/3` (downstream).
    pub protocol: &'static str,
    /// The cluster the request goes to.
    pub cluster: &'a str,
}

/// Applies the request header rules of `route` to `headers`, the request going upstream
/// over `conn`.
pub fn apply_to_request(
    routes: &RouteTable,
    route: RouteId,
    headers: &mut HeaderMap,
    side: &RequestSide<'_>,
    conn: &ConnectionInfo,
) {
    if !routes.has_request_rules(route) {
        return;
    }
    let cx = LogContext {
        start: Some(SystemTime::now()),
        method: Some(side.method.as_str()),
        path: Some(side.path),
        upstream_cluster: Some(side.cluster),
        downstream_remote: Some(conn.remote),
        downstream_local: Some(conn.local),
        protocol: Some(side.protocol),
        sni: conn.sni.as_deref(),
        connection_id: Some(conn.id),
        ..LogContext::default()
    };
    routes.apply_request_rules(route, headers, &cx);
}
