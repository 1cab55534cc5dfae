//! The connection manager's `envoy.filters.http.health_check` (see
//! [`crate::route::health_check`]): a health check it handles is answered here, before the
//! Wasm filters and routing, as Envoy's filter answers it: the status alone (no body), with
//! `x-envoy-upstream-healthchecked-cluster` (the proxy's `node.cluster`), logged with
//! Envoy's response code details, the `LH` flag on a 503, and as a health check (for
//! `not_health_check_filter`). While the server is failed every response of the manager says
//! `x-envoy-immediate-health-check-fail: true` ([`mark_failed`]).

use super::HttpManager;
use super::headers;
use crate::access_log::http::{HealthCheckRequest, ResponseInfo};
use crate::body::{self, Body};
use crate::route::health_check::{
    HealthCheckFilter, RequestHead, X_ENVOY_IMMEDIATE_HEALTH_CHECK_FAIL,
    X_ENVOY_UPSTREAM_HEALTHCHECKED_CLUSTER,
};
use crate::wire::ConnectionInfo;
use http::{HeaderMap, HeaderValue, Request, Response, header};

impl HttpManager {
    /// The filter's answer when `request` is a health check it handles (not one it passes
    /// upstream); `None` for any other request.
    pub(super) fn health_check_answer<B>(
        &self,
        filter: &HealthCheckFilter,
        request: &Request<B>,
        conn: &ConnectionInfo,
    ) -> Option<Response<Body>> {
        let head = RequestHead {
            method: request.method().as_str(),
            path: request.uri().path_and_query().map_or("/", |p| p.as_str()),
            authority: headers::request_host(request).unwrap_or(""),
            scheme: if conn.tls { "https" } else { "http" },
            headers: request.headers(),
        };
        if !filter.is_health_check(&head) {
            return None;
        }
        let failed = crate::server_state::health_check_failed();
        if filter.pass_through() && !failed {
            return None;
        }
        let answer = filter.answer(failed, |cluster| self.pools.cluster_health(cluster));
        let mut response = Response::new(body::empty());
        *response.status_mut() = answer.status;
        let headers = response.headers_mut();
        headers.insert(
            X_ENVOY_UPSTREAM_HEALTHCHECKED_CLUSTER.clone(),
            filter.service_cluster().clone(),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let extensions = response.extensions_mut();
        extensions.insert(ResponseInfo {
            flags: answer.flags,
            details: answer.details.to_owned(),
            transport_failure: None,
        });
        extensions.insert(HealthCheckRequest);
        Some(response)
    }
}

/// `x-envoy-immediate-health-check-fail: true` on a response of a manager with the filter
/// while the server is failed.
pub(super) fn mark_failed(filter: Option<&HealthCheckFilter>, headers: &mut HeaderMap) {
    if filter.is_some() && crate::server_state::health_check_failed() {
        headers.insert(
            X_ENVOY_IMMEDIATE_HEALTH_CHECK_FAIL.clone(),
            HeaderValue::from_static("true"),
        );
    }
}
