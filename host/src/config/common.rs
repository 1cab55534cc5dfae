//! Schema pieces every resource shares (addresses, data sources, header values) and the
//! defaults rule they share (`nonzero`).

use serde::Deserialize;
use std::time::Duration;

/// `config.core.v3.Address`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// `socket_address`.
    pub socket_address: SocketAddress,
}

/// `config.core.v3.SocketAddress`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketAddress {
    /// An IP literal (listeners, STATIC clusters) or a DNS name (DNS clusters).
    pub address: String,
    /// The port; 0 for a listener means "any free port".
    #[serde(default)]
    pub port_value: u16,
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: SocketProtocol,
    /// Accept IPv4 on an IPv6 any-address too.
    #[serde(default)]
    pub ipv4_compat: bool,
}

/// `SocketAddress.protocol`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
pub enum SocketProtocol {
    /// TCP.
    #[default]
    TCP,
    /// UDP (QUIC listeners).
    UDP,
}

/// `response_headers_to_add[]` (`config.core.v3.HeaderValueOption`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValueOption {
    /// The header.
    pub header: HeaderValue,
    /// How it combines with a header already there (default APPEND_IF_EXISTS_OR_ADD).
    #[serde(default)]
    pub append_action: Option<HeaderAppendAction>,
    /// Deprecated form: true appends, false overwrites.
    #[serde(default)]
    pub append: Option<bool>,
    /// Add the header even when its value is empty.
    #[serde(default)]
    pub keep_empty_value: bool,
}

/// `config.core.v3.HeaderValue`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    /// Name.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// `append_action`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum HeaderAppendAction {
    /// Append a value (or add the header).
    APPEND_IF_EXISTS_OR_ADD,
    /// Add only when absent.
    ADD_IF_ABSENT,
    /// Replace the values (or add the header).
    OVERWRITE_IF_EXISTS_OR_ADD,
    /// Replace only when present.
    OVERWRITE_IF_EXISTS,
}

/// A message with no fields (`{}`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EmptyConfig {}

/// `config.core.v3.DataSource`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// Read from this file.
    #[serde(default)]
    pub filename: Option<String>,
    /// This text.
    #[serde(default)]
    pub inline_string: Option<String>,
    /// These bytes, base64 as protobuf JSON writes bytes.
    #[serde(default)]
    pub inline_bytes: Option<String>,
}

/// Envoy's default `per_connection_buffer_limit_bytes` (a listener's or a cluster's): 1 MiB.
pub const DEFAULT_BUFFER_LIMIT: usize = 1 << 20;

/// Envoy's convention: a zero duration disables the timeout.
pub fn nonzero(duration: Option<Duration>) -> Option<Duration> {
    duration.filter(|d| !d.is_zero())
}
