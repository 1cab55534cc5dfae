//! The connection manager's `envoy.filters.http.health_check` (see
//! [`crate::route::health_check`]): a health check it handles is answered here, before the
//! Wasm filters and routing, as Envoy's filter answers it: the status alone (no body), with
//! `x-envoy-upstream-healthchecked-cluster` (the proxy's `node.cluster`), logged with
//! Envoy's response code details, the `LH` flag on a 503, and as a health check (for
//! `not_health_check_filter`). A health check passed upstream (`pass_through_mode` while
//! the server passes) gets the same header on its upstream's answer ([`mark_passed_through`]).
//! While the server is failed every response of the manager says
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

/// What the health check filter does with a request.
pub(super) enum HealthCheckVerdict {
    /// Not a health check: on through the filters.
    NotOne,
    /// A health check passed upstream (`pass_through_mode`, the server passing).
    PassedThrough,
    /// A health check answered here.
    Answered(Response<Body>),
}

impl HttpManager {
    /// What the filter does with `request`: its answer when it is a health check the filter
    /// handles.
    pub(super) fn health_check_answer<B>(
        &self,
        filter: &HealthCheckFilter,
        request: &Request<B>,
        conn: &ConnectionInfo,
    ) -> HealthCheckVerdict {
        let head = RequestHead {
            method: request.method().as_str(),
            path: request.uri().path_and_query().map_or("/", |p| p.as_str()),
            authority: headers::request_host(request).unwrap_or(""),
            scheme: if conn.tls { "https" } else { "http" },
            headers: request.headers(),
        };
        if !filter.is_health_check(&head) {
            return HealthCheckVerdict::NotOne;
        }
        let failed = crate::server_state::health_check_failed();
        if filter.pass_through() && !failed {
            return HealthCheckVerdict::PassedThrough;
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
        HealthCheckVerdict::Answered(response)
    }
}

/// On the upstream's answer to a health check the filter passed through (`response` carries
/// [`HealthCheckRequest`]): `x-envoy-upstream-healthchecked-cluster`, as Envoy's filter adds
/// it to every health check's response.
pub(super) fn mark_passed_through(
    filter: Option<&HealthCheckFilter>,
    response: &mut Response<Body>,
) {
    if let Some(filter) = filter
        && response.extensions().get::<HealthCheckRequest>().is_some()
    {
        response.headers_mut().insert(
            X_ENVOY_UPSTREAM_HEALTHCHECKED_CLUSTER.clone(),
            filter.service_cluster().clone(),
        );
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
