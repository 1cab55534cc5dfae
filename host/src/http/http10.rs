//! HTTP/1.0 requests, as Envoy's connection manager takes them
//! (`http_protocol_options.accept_http_10`, `default_host_for_http_10`).
//!
//! By default (Envoy's too) only HTTP/1.1 is served: an HTTP/1.0 request is answered
//! `426 Upgrade Required` by the codec and its connection closed, before any filter, route
//! or upstream sees it; it is logged as Envoy logs it (`DPE`, `low_version`, no request
//! head) and counted as a protocol error. With `accept_http_10` it is served, and one without
//! a `Host` is given `default_host_for_http_10` (where set) before anything routes on it.

use super::HttpManager;
use crate::body::{self, Body};
use crate::snapshot::Http10Policy;
use crate::wire::ConnectionInfo;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};

/// Envoy's body for the refusal.
const UPGRADE_REQUIRED: &str = "Upgrade Required";

/// What becomes of a request, by its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Http10Verdict {
    /// Not HTTP/1.0, or one this manager serves: on to the phases.
    Serve,
    /// An HTTP/1.0 request this manager does not serve: answered 426.
    Refuse,
}

/// Screens `request` under `policy`; an HTTP/1.0 request that is served and has no host
/// (neither an absolute-form target nor a `Host`) gets the default host here.
pub(super) fn screen<B>(policy: &Http10Policy, request: &mut Request<B>) -> Http10Verdict {
    if !is_http10(request.version()) {
        return Http10Verdict::Serve;
    }
    if !policy.accept {
        return Http10Verdict::Refuse;
    }
    if let Some(host) = &policy.default_host
        && request.uri().authority().is_none()
        && !request.headers().contains_key(header::HOST)
    {
        request.headers_mut().insert(header::HOST, host.clone());
    }
    Http10Verdict::Serve
}

/// HTTP/1.0, or the HTTP/0.9 hyper would read as such.
fn is_http10(version: Version) -> bool {
    version == Version::HTTP_10 || version == Version::HTTP_09
}

/// Whether an HTTP/1.0 `request` asked to keep its connection (`connection: keep-alive`);
/// one that did not gets `connection: close` on its response, as Envoy's.
pub(super) fn wants_close<B>(request: &Request<B>) -> bool {
    is_http10(request.version())
        && !request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("keep-alive"))
}

impl HttpManager {
    /// The 426 for an HTTP/1.0 request this manager does not serve, counted and logged as
    /// Envoy's codec refusal (`downstream_rq_4xx`, `downstream_cx_protocol_error`; `DPE`,
    /// `low_version`; the stream was counted in `downstream_rq_total` when it started); the
    /// connection closes after it. Envoy 1.40 also counts the stream as reset
    /// (`downstream_rq_rx_reset`): its request never completed, and an HTTP/1.1 stream that
    /// ends so is reset by the connection's close.
    pub(super) fn refuse_http10(&self, conn: &ConnectionInfo) -> Response<Body> {
        self.stats.cx_protocol_error.inc();
        self.stats.rq_rx_reset.inc();
        tracing::debug!(peer = %conn.remote, "HTTP/1.0 request refused (accept_http_10 is off)");
        let mut response = Response::new(body::full(UPGRADE_REQUIRED));
        *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(UPGRADE_REQUIRED.len()),
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if let Some(server) = &self.server_header {
            headers.insert(header::SERVER, server.clone());
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        self.stats.count_response(response.status().as_u16());
        response
            .extensions_mut()
            .insert(crate::access_log::http::ResponseInfo {
                flags: "DPE",
                details: "low_version".to_owned(),
                transport_failure: None,
            });
        match &self.config.access_log {
            // Envoy's codec speaks HTTP/1.1 when it refuses, and logs that.
            Some(logs) => crate::access_log::http::Entry::headless(logs.clone(), conn, "HTTP/1.1")
                .respond(response, Default::default()),
            None => response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/").version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn http10_is_refused_unless_accepted_and_then_gets_the_default_host() {
        let off = Http10Policy::default();
        let on = Http10Policy {
            accept: true,
            default_host: Some(HeaderValue::from_static("dflt.example")),
        };
        let mut plain = request(Version::HTTP_10, &[]);
        assert_eq!(screen(&off, &mut plain), Http10Verdict::Refuse);
        assert_eq!(screen(&on, &mut plain), Http10Verdict::Serve);
        assert_eq!(plain.headers()[header::HOST], "dflt.example");
        let mut hosted = request(Version::HTTP_10, &[("host", "a.example")]);
        assert_eq!(screen(&on, &mut hosted), Http10Verdict::Serve);
        assert_eq!(hosted.headers()[header::HOST], "a.example");
        let mut http11 = request(Version::HTTP_11, &[]);
        assert_eq!(screen(&off, &mut http11), Http10Verdict::Serve);
        assert!(
            !http11.headers().contains_key(header::HOST),
            "HTTP/1.1 untouched"
        );
    }

    #[test]
    fn only_http10_without_keep_alive_is_told_close() {
        assert!(wants_close(&request(Version::HTTP_10, &[])));
        assert!(!wants_close(&request(
            Version::HTTP_10,
            &[("connection", "Keep-Alive")]
        )));
        assert!(!wants_close(&request(Version::HTTP_11, &[])));
    }
}
