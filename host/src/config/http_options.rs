//! HTTP protocol options that both sides take: `common_http_protocol_options`,
//! `http_protocol_options` and `http2_protocol_options` (a connection manager's and a
//! cluster's).

use super::duration::ConfigDuration;
use serde::Deserialize;

/// `common_http_protocol_options`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CommonHttpProtocolOptions {
    /// Close a connection with no request in flight after this (Envoy default 1h).
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
    /// Most headers a request (or, upstream, a response) may carry (default 100).
    #[serde(default)]
    pub max_headers_count: Option<u32>,
    /// Drain a connection after this many requests (downstream: GOAWAY, or `connection:
    /// close` on HTTP/1.1, counted as `downstream_cx_max_requests_reached`).
    #[serde(default)]
    pub max_requests_per_connection: Option<u32>,
    /// Close a connection this long after it opened.
    #[serde(default)]
    pub max_connection_duration: Option<ConfigDuration>,
    /// What to do with a request header whose name has an underscore (default ALLOW).
    #[serde(default)]
    pub headers_with_underscores_action: HeadersWithUnderscoresAction,
}

/// `headers_with_underscores_action`: underscores in header names are legal, but some
/// servers read `x_user` and `x-user` as the same header, so a proxy that checks one may
/// pass the other through.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum HeadersWithUnderscoresAction {
    /// Pass them on.
    #[default]
    ALLOW,
    /// Answer 400.
    REJECT_REQUEST,
    /// Remove those headers and pass the request on.
    DROP_HEADER,
}

/// `http_protocol_options` (HTTP/1.1).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Http1ProtocolOptions {
    /// Serve HTTP/1.0 requests (connection manager only). Off by default, as in Envoy:
    /// such a request is answered 426 Upgrade Required and its connection closed.
    #[serde(default)]
    pub accept_http_10: bool,
    /// The `Host` an HTTP/1.0 request without one is given (with `accept_http_10`), for
    /// routing and the upstream, as Envoy's.
    #[serde(default)]
    pub default_host_for_http_10: Option<String>,
}

/// `http2_protocol_options`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Http2ProtocolOptions {
    /// SETTINGS_MAX_CONCURRENT_STREAMS (downstream: 100, Envoy's edge value; upstream:
    /// Envoy's default 2147483647).
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// SETTINGS_INITIAL_WINDOW_SIZE (downstream: 64 KiB, Envoy's edge value; upstream:
    /// Envoy's default 268435456).
    #[serde(default)]
    pub initial_stream_window_size: Option<u32>,
    /// Connection flow-control window (downstream: 1 MiB, Envoy's edge value; upstream:
    /// Envoy's default 268435456).
    #[serde(default)]
    pub initial_connection_window_size: Option<u32>,
    /// Advertise SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441).
    #[serde(default)]
    pub allow_connect: bool,
}
