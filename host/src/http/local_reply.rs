//! Replies weir makes itself, with the status and text an Envoy user would see.
//!
//! A reply tells the client nothing of the inside: its body is a short fixed reason (Envoy's
//! words, with the failure's kind but never a cluster, a host, an address or an OS error). As in
//! Envoy (without `always_set_request_id_in_response`) it carries no `x-request-id`; the detail
//! goes to the log with the request's id.

use super::headers::X_WEIR_OVERLOADED;
use crate::access_log::http::ResponseInfo;
use crate::body::{self, Body};
use crate::upstream::UpstreamError;
use http::{HeaderValue, Response, StatusCode, header};

/// Why weir answered a request itself.
#[derive(Debug)]
pub enum LocalReply {
    /// The request could not be parsed or is not allowed on the wire (400).
    BadRequest(&'static str),
    /// CONNECT or an upgrade where none is enabled (403).
    Forbidden(&'static str),
    /// No virtual host or route matched (404).
    NoRoute,
    /// More headers than `max_headers_count` (431).
    TooManyHeaders,
    /// The request body was malformed (a bad chunk, more bytes than its `content-length`) or
    /// cut short by the client (400).
    BadRequestBody,
    /// The request body did not arrive within `request_timeout` (408).
    RequestTimeout,
    /// The upstream did not answer within the route's timeout (504).
    UpstreamTimeout,
    /// The overload action `stop_accepting_requests` is saturated (503).
    Overloaded,
    /// The cluster a route picked per request (`cluster_header`, `weighted_clusters`), or
    /// named without being checked (a route from RDS), does not exist: the route's `cluster_not_found_response_code` (503 by default), no body.
    ClusterNotFound(StatusCode),
    /// The upstream could not be reached or used (503; 502 where an `ORIGINAL_DST` cluster
    /// has no original destination to go to).
    Upstream(UpstreamError),
}

impl LocalReply {
    /// The reply's status.
    pub fn status(&self) -> StatusCode {
        match self {
            LocalReply::BadRequest(_) => StatusCode::BAD_REQUEST,
            LocalReply::Forbidden(_) => StatusCode::FORBIDDEN,
            LocalReply::NoRoute => StatusCode::NOT_FOUND,
            LocalReply::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            LocalReply::BadRequestBody => StatusCode::BAD_REQUEST,
            LocalReply::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            LocalReply::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            LocalReply::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            LocalReply::ClusterNotFound(status) => *status,
            // Nowhere to forward to (a connection that was not redirected): a gateway error,
            // not an unavailable upstream.
            LocalReply::Upstream(UpstreamError::NoOriginalDestination { .. }) => {
                StatusCode::BAD_GATEWAY
            }
            LocalReply::Upstream(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The reply's body: a fixed text per kind of failure.
    fn text(&self) -> &'static str {
        match self {
            LocalReply::BadRequest(why) | LocalReply::Forbidden(why) => why,
            LocalReply::NoRoute => "",
            LocalReply::TooManyHeaders => "request headers exceed max_headers_count",
            LocalReply::BadRequestBody => "malformed request body",
            LocalReply::RequestTimeout => "request timeout",
            LocalReply::UpstreamTimeout => "upstream request timeout",
            // Envoy says "envoy overloaded"; which proxy and which resource is nobody's
            // business but the operator's (the log and `weir_overload_*` say it).
            LocalReply::Overloaded => "overloaded",
            LocalReply::ClusterNotFound(_) => "",
            LocalReply::Upstream(error) => upstream_text(error),
        }
    }

    /// The reply as a response, `text/plain`, with `x-weir-overloaded: true` when a circuit
    /// breaker refused the request.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let text = self.text();
        let overloaded = matches!(&self, LocalReply::Upstream(e) if e.is_overflow());
        let mut response = Response::new(body::full(text));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if !text.is_empty() {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
        if overloaded {
            headers.insert(X_WEIR_OVERLOADED.clone(), HeaderValue::from_static("true"));
        }
        response.extensions_mut().insert(self.log_info());
        response
    }

    /// Envoy's response flag, code details and transport failure reason for this reply, as
    /// the access log prints them.
    pub fn log_info(&self) -> ResponseInfo {
        let info = |flags, details: &str| ResponseInfo {
            flags,
            details: details.replace(' ', "_"),
            transport_failure: None,
        };
        match self {
            LocalReply::BadRequest(why) | LocalReply::Forbidden(why) => info("", why),
            LocalReply::NoRoute => info("NR", "route_not_found"),
            LocalReply::TooManyHeaders => info("DPE", "too_many_headers"),
            LocalReply::BadRequestBody => info("DPE", "malformed_request_body"),
            LocalReply::RequestTimeout => info("", "request_overall_timeout"),
            LocalReply::UpstreamTimeout => info("UT", "response_timeout"),
            LocalReply::Overloaded => info("OM", "overload"),
            // Envoy: `NC` (no cluster found), `cluster_not_found`.
            LocalReply::ClusterNotFound(_) => info("NC", "cluster_not_found"),
            LocalReply::Upstream(error) => upstream_info(error),
        }
    }
}

/// Envoy's flag and details for an upstream failure.
fn upstream_info(error: &UpstreamError) -> ResponseInfo {
    let reset = |flags, reason: &str, failure: Option<String>| ResponseInfo {
        flags,
        details: match &failure {
            Some(failure) => {
                format!("upstream_reset_before_response_started{{{reason}|{failure}}}")
            }
            None => format!("upstream_reset_before_response_started{{{reason}}}"),
        },
        transport_failure: failure,
    };
    let plain = |flags, details: &str| ResponseInfo {
        flags,
        details: details.to_owned(),
        transport_failure: None,
    };
    match error {
        UpstreamError::NoHealthyHost(_) => plain("UH", "no_healthy_upstream"),
        UpstreamError::NoOriginalDestination { .. } => plain("", "no_original_destination"),
        UpstreamError::UnknownCluster(_) => plain("NC", "cluster_not_found"),
        UpstreamError::ConnectionOverflow(_)
        | UpstreamError::PendingOverflow(_)
        | UpstreamError::RequestOverflow(_) => reset("UO", "overflow", None),
        UpstreamError::ConnectFailed { reason, .. }
        | UpstreamError::Tls { reason, .. }
        | UpstreamError::Config { reason, .. } => reset(
            "UF",
            "remote_connection_failure",
            Some(transport_failure(reason)),
        ),
        UpstreamError::ConnectTimeout { .. } => reset("UF", "connection_timeout", None),
        UpstreamError::Reset { .. } => reset("UC", "connection_termination", None),
    }
}

/// Envoy's words for a failed connect: `delayed_connect_error:_Connection_refused` (spaces as
/// `_`, without the OS error number).
fn transport_failure(reason: &str) -> String {
    let reason = match reason.find(" (os error") {
        Some(at) => &reason[..at],
        None => reason,
    };
    format!("delayed_connect_error:_{}", reason.replace(' ', "_"))
}

/// Envoy's text for an upstream failure, with its reset reason as Envoy names them
/// (`connection failure`, `connection termination`, `overflow`, ...): the kind of failure,
/// never where it happened.
fn upstream_text(error: &UpstreamError) -> &'static str {
    match error {
        UpstreamError::NoHealthyHost(_) => "no healthy upstream",
        UpstreamError::NoOriginalDestination { .. } => "no original destination",
        UpstreamError::UnknownCluster(_) => "",
        UpstreamError::ConnectionOverflow(_)
        | UpstreamError::PendingOverflow(_)
        | UpstreamError::RequestOverflow(_) => {
            "upstream connect error or disconnect/reset before headers. reset reason: overflow"
        }
        UpstreamError::ConnectFailed { .. }
        | UpstreamError::Tls { .. }
        | UpstreamError::Config { .. } => {
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
        }
        UpstreamError::ConnectTimeout { .. } => {
            "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
        }
        UpstreamError::Reset { .. } => {
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every upstream failure's reply, as the client reads it.
    async fn reply_text(error: UpstreamError) -> String {
        let response = LocalReply::Upstream(error).into_response();
        let (_, body) = response.into_parts();
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn upstream_replies_name_no_cluster_host_or_os_error() {
        let secrets = ["secret-cluster", "10.1.2.3", "4567", "Connection refused"];
        let errors = [
            UpstreamError::ConnectFailed {
                cluster: "secret-cluster".into(),
                host: "10.1.2.3:4567".into(),
                reason: "Connection refused (os error 111)".into(),
            },
            UpstreamError::ConnectTimeout {
                cluster: "secret-cluster".into(),
                host: "10.1.2.3:4567".into(),
            },
            UpstreamError::Tls {
                cluster: "secret-cluster".into(),
                host: "10.1.2.3:4567".into(),
                reason: "Connection refused".into(),
            },
            UpstreamError::Reset {
                cluster: "secret-cluster".into(),
                host: "10.1.2.3:4567".into(),
                reason: "Connection refused".into(),
            },
            UpstreamError::NoOriginalDestination {
                cluster: "secret-cluster".into(),
                reason: "10.1.2.3:4567".into(),
            },
            UpstreamError::NoHealthyHost("secret-cluster".into()),
            UpstreamError::UnknownCluster("secret-cluster".into()),
            UpstreamError::PendingOverflow("secret-cluster".into()),
        ];
        for error in errors {
            let text = reply_text(error.clone()).await;
            for secret in secrets {
                assert!(!text.contains(secret), "{error:?} told the client {text:?}");
            }
        }
    }

    #[test]
    fn the_reply_carries_no_request_id() {
        let response = LocalReply::NoRoute.into_response();
        assert!(!response.headers().contains_key("x-request-id"));
    }
}
