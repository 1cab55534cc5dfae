//! Replies weir makes itself, with the status and text an Envoy user would see.

use super::headers::X_WEIR_OVERLOADED;
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
    /// The request body did not arrive within `request_timeout` (408).
    RequestTimeout,
    /// The upstream did not answer within the route's timeout (504).
    UpstreamTimeout,
    /// The overload action `stop_accepting_requests` is saturated (503).
    Overloaded,
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
            LocalReply::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            LocalReply::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            LocalReply::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            // Nowhere to forward to (a connection that was not redirected): a gateway error,
            // not an unavailable upstream.
            LocalReply::Upstream(UpstreamError::NoOriginalDestination { .. }) => {
                StatusCode::BAD_GATEWAY
            }
            LocalReply::Upstream(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The reply as a response, `text/plain`, with `x-weir-overloaded: true` when a circuit
    /// breaker refused the request.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let text = match &self {
            LocalReply::BadRequest(why) | LocalReply::Forbidden(why) => (*why).to_string(),
            LocalReply::NoRoute => String::new(),
            LocalReply::TooManyHeaders => "request headers exceed max_headers_count".into(),
            LocalReply::RequestTimeout => "request timeout".into(),
            LocalReply::UpstreamTimeout => "upstream request timeout".into(),
            // Envoy says "envoy overloaded"; which proxy and which resource is nobody's
            // business but the operator's (the log and `weir_overload_*` say it).
            LocalReply::Overloaded => "overloaded".into(),
            LocalReply::Upstream(UpstreamError::NoHealthyHost(_)) => "no healthy upstream".into(),
            LocalReply::Upstream(e @ UpstreamError::NoOriginalDestination { .. }) => e.to_string(),
            LocalReply::Upstream(e) if e.is_overflow() => "upstream overflow".into(),
            LocalReply::Upstream(e) => {
                format!(
                    "upstream connect error or disconnect/reset before headers. reset reason: {e}"
                )
            }
        };
        let overloaded = matches!(&self, LocalReply::Upstream(e) if e.is_overflow());
        let mut response = Response::new(body::full(text.clone()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if !text.is_empty() {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
        if overloaded {
            headers.insert(X_WEIR_OVERLOADED.clone(), HeaderValue::from_static("true"));
        }
        response
    }
}
