//! The subset of Envoy's v3 bootstrap that weir reads, with Envoy's field names and nesting.
//!
//! Every struct denies unknown fields, so a typo or an unsupported Envoy feature is an error
//! that names its path rather than something silently ignored. Fields whose `typed_config`
//! selects a type (`filters[]`, `http_filters[]`, `transport_socket`,
//! `typed_extension_protocol_options`) are resolved in [`super::typed`].

use super::duration::ConfigDuration;
use super::typed::{
    HttpFilter, ListenerFilter, NetworkFilter, ProtocolOptionsMap, TransportSocket,
};
use serde::Deserialize;

/// The top of the file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// `node` identifies this proxy (its id is visible to filters).
    #[serde(default)]
    pub node: Option<Node>,
    /// The admin listener; none when absent.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Listeners and clusters.
    #[serde(default)]
    pub static_resources: StaticResources,
    /// `overload_manager` (see [`super::overload`]).
    #[serde(default)]
    pub overload_manager: Option<super::overload::OverloadManager>,
    /// `layered_runtime`: the runtime keys weir reads (see [`LayeredRuntime`]).
    #[serde(default)]
    pub layered_runtime: Option<LayeredRuntime>,
    /// `bootstrap_extensions`: Wasm services (see [`super::service`]).
    #[serde(default)]
    pub bootstrap_extensions: Vec<super::service::BootstrapExtension>,
}

/// `layered_runtime`: Envoy's runtime, of which weir reads the static layers. Their keys are
/// free-form in Envoy; weir acts on the few it knows (premature resets, requests per I/O cycle)
/// and logs the others as unused.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LayeredRuntime {
    /// `layers[]`, later layers overriding earlier ones.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub layers: Vec<RuntimeLayer>,
}

/// `layered_runtime.layers[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeLayer {
    /// The layer's name.
    #[serde(default)]
    pub name: String,
    /// Keys and values given in the file.
    #[serde(default)]
    pub static_layer: Option<serde_json::Map<String, serde_json::Value>>,
    /// The admin layer (`/runtime_modify`): accepted, weir has none, so it stays empty.
    #[serde(default)]
    pub admin_layer: Option<serde_json::Value>,
}

/// `node`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// `node.id`.
    #[serde(default)]
    pub id: String,
    /// `node.cluster`.
    #[serde(default)]
    pub cluster: String,
}

/// `admin`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where the admin listener binds.
    pub address: Address,
    /// Accepted for compatibility with older Envoy configs; weir writes no admin access log.
    #[serde(default)]
    pub access_log_path: Option<String>,
}

/// `static_resources`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StaticResources {
    /// `listeners[]`.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub listeners: Vec<Listener>,
    /// `clusters[]`.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub clusters: Vec<Cluster>,
}

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

/// `listeners[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name.
    #[serde(default)]
    pub name: String,
    /// Where it binds.
    pub address: Address,
    /// `filter_chains[]`; weir uses the first (filter_chain_match is not supported).
    #[serde(deserialize_with = "super::lenient::one_or_many")]
    pub filter_chains: Vec<FilterChain>,
    /// Most body bytes a Wasm filter may hold paused (Envoy default 1 MiB): past it a request
    /// gets 413 and a response is reset.
    #[serde(default)]
    pub per_connection_buffer_limit_bytes: Option<u32>,
    /// A UDP listener's settings; with `quic_options` it is a QUIC (HTTP/3) listener.
    #[serde(default)]
    pub udp_listener_config: Option<UdpListenerConfig>,
    /// Connections redirected to this listener (iptables/nftables REDIRECT) go on to where
    /// they were headed: an `ORIGINAL_DST` cluster connects there. The same as listing
    /// `envoy.filters.listener.original_dst` in `listener_filters`.
    #[serde(default)]
    pub use_original_dst: Option<bool>,
    /// `listener_filters[]`: run on each accepted connection before its filter chain.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub listener_filters: Vec<ListenerFilter>,
    /// Bind with `IP_TRANSPARENT` (TPROXY): connections to any address routed here are
    /// accepted, and their local address is where they were headed.
    #[serde(default)]
    pub transparent: Option<bool>,
}

/// `udp_listener_config`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UdpListenerConfig {
    /// Socket buffer sizes and GRO; accepted, weir leaves them to quinn.
    #[serde(default)]
    pub downstream_socket_config: Option<UdpSocketConfig>,
    /// Makes the listener a QUIC listener.
    #[serde(default)]
    pub quic_options: Option<QuicListenerOptions>,
}

/// `config.core.v3.UdpSocketConfig` (accepted for compatibility; quinn sizes its own buffers).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UdpSocketConfig {
    /// Largest datagram read.
    #[serde(default)]
    pub max_rx_datagram_size: Option<u64>,
    /// Use UDP GRO where the kernel has it.
    #[serde(default)]
    pub prefer_gro: Option<bool>,
}

/// `udp_listener_config.quic_options` (`config.listener.v3.QuicProtocolOptions`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuicListenerOptions {
    /// Stream limits and flow-control windows.
    #[serde(default)]
    pub quic_protocol_options: Option<QuicProtocolOptions>,
    /// A connection with no packets for this long is closed (Envoy default 300s).
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
    /// Time allowed for the QUIC handshake (accepted; quinn bounds it by the idle timeout).
    #[serde(default)]
    pub crypto_handshake_timeout: Option<ConfigDuration>,
    /// Accepted for compatibility (runtime feature flag).
    #[serde(default)]
    pub enabled: Option<serde_yaml_ng::Value>,
}

/// `config.core.v3.QuicProtocolOptions`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuicProtocolOptions {
    /// Most concurrent bidirectional streams the peer may open (Envoy default 100).
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// Per-stream flow-control window (Envoy default 16 MiB).
    #[serde(default)]
    pub initial_stream_window_size: Option<u32>,
    /// Connection flow-control window (Envoy default 24 MiB).
    #[serde(default)]
    pub initial_connection_window_size: Option<u32>,
    /// Close a connection with no packets for this long.
    #[serde(default)]
    pub idle_network_timeout: Option<ConfigDuration>,
}

/// `http3_protocol_options` (`config.core.v3.Http3ProtocolOptions`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Http3ProtocolOptions {
    /// QUIC transport settings.
    #[serde(default)]
    pub quic_protocol_options: Option<QuicProtocolOptions>,
    /// RFC 9220 extended CONNECT: a QUIC listener advertises SETTINGS_ENABLE_CONNECT_PROTOCOL
    /// and serves WebSocket (any upgrade) over HTTP/3 streams. On a cluster it is accepted and
    /// not needed: the peer's SETTINGS decide.
    #[serde(default)]
    pub allow_extended_connect: bool,
    /// Accepted for compatibility.
    #[serde(default)]
    pub override_stream_error_on_invalid_http_message: Option<bool>,
}

/// `alternate_protocols_cache_options` of `auto_config`: where alt-svc entries are kept, and
/// entries known before any response (QUIC hints).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AlternateProtocolsCacheOptions {
    /// The cache's name (Envoy shares caches by name; weir keeps one per cluster).
    #[serde(default)]
    pub name: String,
    /// Most entries kept.
    #[serde(default)]
    pub max_entries: Option<u32>,
    /// Hosts known to speak HTTP/3 on the same port before they advertise it.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub prepopulated_entries: Vec<AlternateProtocolsCacheEntry>,
    /// Accepted for compatibility (weir stores nothing on disk).
    #[serde(default)]
    pub key_value_store_config: Option<serde_yaml_ng::Value>,
    /// Accepted for compatibility.
    #[serde(default)]
    pub canonical_suffixes: Vec<String>,
}

/// `prepopulated_entries[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlternateProtocolsCacheEntry {
    /// Host name or IP of the endpoint.
    pub hostname: String,
    /// Its port.
    pub port: u16,
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

/// `filter_chains[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterChain {
    /// Optional name.
    #[serde(default)]
    pub name: Option<String>,
    /// `filters[]`: network filters, the last one terminal.
    #[serde(deserialize_with = "super::lenient::one_or_many")]
    pub filters: Vec<NetworkFilter>,
    /// TLS for the downstream side (`DownstreamTlsContext`).
    #[serde(default)]
    pub transport_socket: Option<TransportSocket>,
}

/// `envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectionManager {
    /// Label of this manager's stats.
    pub stat_prefix: String,
    /// Which downstream codec: AUTO detects HTTP/2 by its preface or ALPN.
    #[serde(default)]
    pub codec_type: CodecType,
    /// Inline route table.
    pub route_config: RouteConfiguration,
    /// `http_filters[]`; the router must be last.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub http_filters: Vec<HttpFilter>,
    /// Options for every protocol.
    #[serde(default)]
    pub common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    /// HTTP/1.1 options.
    #[serde(default)]
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    /// HTTP/2 options.
    #[serde(default)]
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    /// HTTP/3 options (listeners with `codec_type: HTTP3`).
    #[serde(default)]
    pub http3_protocol_options: Option<Http3ProtocolOptions>,
    /// Time allowed to receive a whole request; zero or unset disables it.
    #[serde(default)]
    pub request_timeout: Option<ConfigDuration>,
    /// Time allowed to receive request headers, from the first byte of the head (weir's
    /// default 10 s; zero disables).
    #[serde(default)]
    pub request_headers_timeout: Option<ConfigDuration>,
    /// Time a stream may go without activity in either direction (default 5 min; zero
    /// disables).
    #[serde(default)]
    pub stream_idle_timeout: Option<ConfigDuration>,
    /// Most request header bytes, in KiB (default 60, at most 8192): past it, 431.
    #[serde(default)]
    pub max_request_headers_kb: Option<u32>,
    /// Use the connection's peer address as the client address and append it to
    /// x-forwarded-for (Envoy's edge setting).
    #[serde(default)]
    pub use_remote_address: bool,
    /// Give requests without x-request-id a generated one (default true).
    #[serde(default)]
    pub generate_request_id: Option<bool>,
    /// Value of the `server` response header (default "weir").
    #[serde(default)]
    pub server_name: Option<String>,
    /// Time allowed for draining connections on shutdown.
    #[serde(default)]
    pub drain_timeout: Option<ConfigDuration>,
    /// Upgrade types (`websocket`, `CONNECT`, any other) this manager takes.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub upgrade_configs: Vec<UpgradeConfig>,
    /// RFC 3986 path normalisation before filters and routing (weir's default true; Envoy's
    /// false).
    #[serde(default)]
    pub normalize_path: Option<bool>,
    /// Merge adjacent slashes in the path before filters and routing (default false).
    #[serde(default)]
    pub merge_slashes: bool,
    /// What to do with `%2F` and `%5C` in the path.
    #[serde(default)]
    pub path_with_escaped_slashes_action: PathWithEscapedSlashesAction,
    /// Strip the host's port when it is the listener's (exclusive with
    /// `strip_any_host_port`).
    #[serde(default)]
    pub strip_matching_host_port: bool,
    /// Strip any port from the host.
    #[serde(default)]
    pub strip_any_host_port: bool,
    /// `access_log[]`: Envoy's `AccessLog`s, read by [`crate::access_log`].
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub access_log: Vec<serde_json::Value>,
}

/// `path_with_escaped_slashes_action`: what a connection manager does with escaped slashes
/// (`%2F`, `%2f`, `%5C`, `%5c`) in a request path.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum PathWithEscapedSlashesAction {
    /// The implementation's choice: Envoy's and weir's is `KEEP_UNCHANGED`.
    #[default]
    IMPLEMENTATION_SPECIFIC_DEFAULT,
    /// Forward them as they are.
    KEEP_UNCHANGED,
    /// Answer 400.
    REJECT_REQUEST,
    /// Unescape them and answer 307 with the normalised path in `location` (400 for gRPC).
    UNESCAPE_AND_REDIRECT,
    /// Unescape them and go on.
    UNESCAPE_AND_FORWARD,
}

/// `upgrade_configs[]` of a connection manager.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    /// The upgrade's name, matched case-insensitively (`CONNECT` for CONNECT).
    pub upgrade_type: String,
    /// The HTTP filters for this upgrade type, replacing the default chain.
    #[serde(default)]
    pub filters: Option<Vec<HttpFilter>>,
    /// Whether the upgrade is allowed (default true); routes may override it.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `upgrade_configs[]` of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteUpgradeConfig {
    /// The upgrade's name, matched case-insensitively.
    pub upgrade_type: String,
    /// Whether the upgrade is allowed on this route (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// For CONNECT: weir terminates the tunnel itself and opens TCP to the route's cluster.
    #[serde(default)]
    pub connect_config: Option<ConnectConfig>,
}

/// `connect_config` of a route's CONNECT upgrade.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    /// Also terminate POST requests as tunnels (the body is the payload).
    #[serde(default)]
    pub allow_post: bool,
}

/// `codec_type`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
pub enum CodecType {
    /// HTTP/1.1 or HTTP/2, detected per connection.
    #[default]
    AUTO,
    /// HTTP/1.1 only.
    HTTP1,
    /// HTTP/2 only.
    HTTP2,
    /// HTTP/3 (QUIC listeners only).
    HTTP3,
}

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
    /// Accept HTTP/1.0 requests (hyper always does).
    #[serde(default)]
    pub accept_http_10: bool,
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

/// `route_config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfiguration {
    /// Optional name.
    #[serde(default)]
    pub name: Option<String>,
    /// `virtual_hosts[]`.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub virtual_hosts: Vec<VirtualHost>,
    /// Headers added to every response (after the virtual host's).
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    /// Pick the virtual host by the host without its port (default false).
    #[serde(default)]
    pub ignore_port_in_host_matching: bool,
    /// The most bytes a `direct_response` body may hold (Envoy's default 4096).
    #[serde(default)]
    pub max_direct_response_body_size_bytes: Option<u32>,
}

/// `virtual_hosts[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    /// Name (for logs).
    pub name: String,
    /// Host names, each exact, `*.suffix`, `prefix.*` or `*`.
    pub domains: Vec<String>,
    /// `routes[]`, first match wins.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub routes: Vec<Route>,
    /// Headers added to every response of this virtual host.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    /// Requests not made over TLS (by `x-forwarded-proto`) get a 301 to `https://`.
    #[serde(default)]
    pub require_tls: TlsRequirementType,
}

/// `require_tls` of a virtual host.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum TlsRequirementType {
    /// No requirement.
    #[default]
    NONE,
    /// Requests from outside must use TLS. weir has no internal addresses, so this is `ALL`
    /// (as Envoy 1.40 is without `internal_address_config`).
    EXTERNAL_ONLY,
    /// Every request must use TLS.
    ALL,
}

/// `routes[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Optional name.
    #[serde(default)]
    pub name: Option<String>,
    /// Which requests this route takes.
    #[serde(rename = "match")]
    pub route_match: RouteMatch,
    /// Forward to a cluster.
    #[serde(default)]
    pub route: Option<RouteAction>,
    /// Answer locally.
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
    /// Answer with a redirect.
    #[serde(default)]
    pub redirect: Option<RedirectAction>,
}

/// `redirect` of a route.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RedirectAction {
    /// The scheme becomes `https`.
    #[serde(default)]
    pub https_redirect: bool,
    /// The scheme becomes this.
    #[serde(default)]
    pub scheme_redirect: Option<String>,
    /// The host becomes this.
    #[serde(default)]
    pub host_redirect: Option<String>,
    /// The port becomes this.
    #[serde(default)]
    pub port_redirect: Option<u32>,
    /// The path becomes this (a query in it replaces the request's).
    #[serde(default)]
    pub path_redirect: Option<String>,
    /// The matched prefix of the path becomes this.
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    /// The path is rewritten by a regex.
    #[serde(default)]
    pub regex_rewrite: Option<RegexMatchAndSubstitute>,
    /// Status (default MOVED_PERMANENTLY).
    #[serde(default)]
    pub response_code: RedirectResponseCode,
    /// Drop the query.
    #[serde(default)]
    pub strip_query: bool,
}

/// `response_code` of a redirect.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum RedirectResponseCode {
    /// 301.
    #[default]
    MOVED_PERMANENTLY,
    /// 302.
    FOUND,
    /// 303.
    SEE_OTHER,
    /// 307.
    TEMPORARY_REDIRECT,
    /// 308.
    PERMANENT_REDIRECT,
}

/// `type.matcher.v3.RegexMatchAndSubstitute`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexMatchAndSubstitute {
    /// What to replace (every match).
    pub pattern: RegexMatcher,
    /// The replacement; `\1`..`\9` are the pattern's groups, as RE2 writes them.
    pub substitution: String,
}

/// `query_parameters[]` of a route match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParameterMatcher {
    /// The parameter's name.
    pub name: String,
    /// Its (first) value matches.
    #[serde(default)]
    pub string_match: Option<StringMatcher>,
    /// It is present.
    #[serde(default)]
    pub present_match: Option<bool>,
}

/// `match`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// The path starts with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The path without its query is exactly this.
    #[serde(default)]
    pub path: Option<String>,
    /// The path without its query matches this regex in full.
    #[serde(default)]
    pub safe_regex: Option<RegexMatcher>,
    /// Whether prefix and path compare case-sensitively (default true).
    #[serde(default)]
    pub case_sensitive: Option<bool>,
    /// Every one of these must match.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub headers: Vec<HeaderMatcher>,
    /// Matches CONNECT requests (which have no path).
    #[serde(default)]
    pub connect_matcher: Option<EmptyConfig>,
    /// The path without its query is this, or starts with this and `/`.
    #[serde(default)]
    pub path_separated_prefix: Option<String>,
    /// Every one of these must match.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Only gRPC requests (`content-type: application/grpc` or `application/grpc+...`).
    #[serde(default)]
    pub grpc: Option<EmptyConfig>,
}

/// A message with no fields (`{}`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EmptyConfig {}

/// `type.matcher.v3.RegexMatcher`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexMatcher {
    /// The pattern (RE2 syntax; weir uses the `regex` crate, whose syntax is RE2's).
    pub regex: String,
    /// Accepted for compatibility; the engine is always RE2-compatible.
    #[serde(default)]
    pub google_re2: Option<serde_yaml_ng::Value>,
}

/// `headers[]` of a route match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatcher {
    /// Header name.
    pub name: String,
    /// Deprecated form of `string_match.exact`.
    #[serde(default)]
    pub exact_match: Option<String>,
    /// Deprecated form of `string_match.prefix`.
    #[serde(default)]
    pub prefix_match: Option<String>,
    /// Deprecated form of `string_match.suffix`.
    #[serde(default)]
    pub suffix_match: Option<String>,
    /// Deprecated form of `string_match.contains`.
    #[serde(default)]
    pub contains_match: Option<String>,
    /// Deprecated form of `string_match.safe_regex`.
    #[serde(default)]
    pub safe_regex_match: Option<RegexMatcher>,
    /// The header is present (true) or absent (false).
    #[serde(default)]
    pub present_match: Option<bool>,
    /// The value matches.
    #[serde(default)]
    pub string_match: Option<StringMatcher>,
    /// Negate the result.
    #[serde(default)]
    pub invert_match: bool,
}

/// `type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatcher {
    /// Equal.
    #[serde(default)]
    pub exact: Option<String>,
    /// Starts with.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Ends with.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Contains.
    #[serde(default)]
    pub contains: Option<String>,
    /// Matches in full.
    #[serde(default)]
    pub safe_regex: Option<RegexMatcher>,
    /// Compare ignoring ASCII case (not for safe_regex).
    #[serde(default)]
    pub ignore_case: bool,
}

/// `route` of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAction {
    /// The cluster to forward to.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Clusters to split the traffic over, by weight.
    #[serde(default)]
    pub weighted_clusters: Option<WeightedClusters>,
    /// The cluster named by this request header.
    #[serde(default)]
    pub cluster_header: Option<String>,
    /// Status when the cluster does not exist (default SERVICE_UNAVAILABLE).
    #[serde(default)]
    pub cluster_not_found_response_code: ClusterNotFoundResponseCode,
    /// Rewrite the path (without its query) by a regex.
    #[serde(default)]
    pub regex_rewrite: Option<RegexMatchAndSubstitute>,
    /// Replace the Host / :authority with this request header's value, when present.
    #[serde(default)]
    pub host_rewrite_header: Option<String>,
    /// Replace the Host / :authority with the upstream host's name (DNS clusters).
    #[serde(default)]
    pub auto_host_rewrite: Option<bool>,
    /// `stream_idle_timeout` for this route's streams.
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
    /// Replace the matched prefix with this.
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    /// Replace the Host / :authority with this.
    #[serde(default)]
    pub host_rewrite_literal: Option<String>,
    /// Time for the upstream to respond (default 15s; 0 disables it).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Per-route upgrade settings, overriding the connection manager's.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub upgrade_configs: Vec<RouteUpgradeConfig>,
}

/// `weighted_clusters` of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedClusters {
    /// The clusters and their weights.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub clusters: Vec<ClusterWeight>,
    /// Deprecated in Envoy; accepted and, as Envoy 1.40 does, not used (the weights' sum is).
    #[serde(default)]
    pub total_weight: Option<u32>,
}

/// `weighted_clusters.clusters[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterWeight {
    /// The cluster.
    pub name: String,
    /// Its share (required, as in Envoy).
    pub weight: u32,
    /// Headers added to a request sent to this cluster (plain values).
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
}

/// `cluster_not_found_response_code` of a route.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum ClusterNotFoundResponseCode {
    /// 503.
    #[default]
    SERVICE_UNAVAILABLE,
    /// 404.
    NOT_FOUND,
    /// 500.
    INTERNAL_SERVER_ERROR,
}

/// `direct_response`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    /// Status code.
    pub status: u16,
    /// Body.
    #[serde(default)]
    pub body: Option<DataSource>,
}

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

/// `clusters[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Unique name routes refer to.
    pub name: String,
    /// Discovery type (default STATIC).
    #[serde(default, rename = "type")]
    pub discovery_type: DiscoveryType,
    /// Limit on connecting (default 5s).
    #[serde(default)]
    pub connect_timeout: Option<ConfigDuration>,
    /// Load balancing policy (default ROUND_ROBIN).
    #[serde(default)]
    pub lb_policy: LbPolicyName,
    /// Endpoints.
    #[serde(default)]
    pub load_assignment: Option<ClusterLoadAssignment>,
    /// Circuit breakers.
    #[serde(default)]
    pub circuit_breakers: Option<CircuitBreakers>,
    /// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` and friends.
    #[serde(default)]
    pub typed_extension_protocol_options: Option<ProtocolOptionsMap>,
    /// Deprecated v3 shortcut for an HTTP/2 upstream.
    #[serde(default)]
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    /// Active health checks (the first is used).
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub health_checks: Vec<HealthCheck>,
    /// TLS to the upstream (`UpstreamTlsContext`).
    #[serde(default)]
    pub transport_socket: Option<TransportSocket>,
    /// Re-resolution interval for DNS clusters (default 5s).
    #[serde(default)]
    pub dns_refresh_rate: Option<ConfigDuration>,
    /// Address families DNS names resolve to.
    #[serde(default)]
    pub dns_lookup_family: DnsLookupFamily,
    /// What one upstream stream may hold in weir ahead of a slow client (default 1 MiB, as
    /// Envoy): the HTTP/2 stream window weir advertises upstream when
    /// `http2_protocol_options.initial_stream_window_size` does not set it.
    #[serde(default)]
    pub per_connection_buffer_limit_bytes: Option<u32>,
    /// `ORIGINAL_DST` clusters: how often Envoy drops unused hosts. Accepted; weir drops a
    /// destination's pools once it has no connection left.
    #[serde(default)]
    pub cleanup_interval: Option<ConfigDuration>,
}

/// `type` of a cluster.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum DiscoveryType {
    /// IP literals.
    #[default]
    STATIC,
    /// Every address of every name.
    STRICT_DNS,
    /// The first address of each name.
    LOGICAL_DNS,
    /// No endpoints: each connection goes where the downstream connection was headed before
    /// it was redirected to weir (a listener with `use_original_dst`).
    ORIGINAL_DST,
}

/// `lb_policy`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum LbPolicyName {
    /// In turn.
    #[default]
    ROUND_ROBIN,
    /// Fewest active requests of two random picks.
    LEAST_REQUEST,
    /// Uniformly random.
    RANDOM,
    /// The cluster picks the host itself (`ORIGINAL_DST`: the original destination).
    CLUSTER_PROVIDED,
}

/// `dns_lookup_family`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum DnsLookupFamily {
    /// Both families.
    #[default]
    AUTO,
    /// IPv4 only.
    V4_ONLY,
    /// IPv6 only.
    V6_ONLY,
    /// IPv4 first.
    V4_PREFERRED,
    /// All addresses.
    ALL,
}

/// `load_assignment`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterLoadAssignment {
    /// Usually the cluster's name.
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Localities.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub endpoints: Vec<LocalityLbEndpoints>,
}

/// `endpoints[]` of a load assignment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityLbEndpoints {
    /// Accepted for compatibility; weir does not do locality-aware balancing.
    #[serde(default)]
    pub locality: Option<serde_yaml_ng::Value>,
    /// The endpoints.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub lb_endpoints: Vec<LbEndpoint>,
    /// Only priority 0 is supported.
    #[serde(default)]
    pub priority: u32,
}

/// `lb_endpoints[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbEndpoint {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Accepted; weir balances without weights.
    #[serde(default)]
    pub load_balancing_weight: Option<u32>,
}

/// `endpoint`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Its address.
    pub address: Address,
}

/// `circuit_breakers`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// One entry per priority; weir uses DEFAULT.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub thresholds: Vec<Thresholds>,
}

/// `thresholds[]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// DEFAULT (the default) or HIGH.
    #[serde(default)]
    pub priority: RoutingPriority,
    /// Connections to the cluster.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection.
    #[serde(default)]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight.
    #[serde(default)]
    pub max_requests: Option<u32>,
    /// Retries in flight.
    #[serde(default)]
    pub max_retries: Option<u32>,
}

/// `priority` of circuit breaker thresholds.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum RoutingPriority {
    /// The one weir uses.
    #[default]
    DEFAULT,
    /// Accepted; weir has no high-priority routes.
    HIGH,
}

/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHttpProtocolOptions {
    /// Options for every protocol.
    #[serde(default)]
    pub common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    /// One protocol, always.
    #[serde(default)]
    pub explicit_http_config: Option<ExplicitHttpConfig>,
    /// Protocol chosen by ALPN.
    #[serde(default)]
    pub auto_config: Option<AutoHttpConfig>,
}

/// `explicit_http_config`: exactly one of the fields.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExplicitHttpConfig {
    /// HTTP/1.1.
    #[serde(default)]
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    /// HTTP/2.
    #[serde(default)]
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    /// HTTP/3 (the cluster's transport socket must be QUIC).
    #[serde(default)]
    pub http3_protocol_options: Option<Http3ProtocolOptions>,
}

/// `auto_config`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AutoHttpConfig {
    /// HTTP/1.1 options when h1 is picked.
    #[serde(default)]
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    /// HTTP/2 options when h2 is picked.
    #[serde(default)]
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    /// HTTP/3 to hosts known to speak it (alt-svc or a QUIC hint); TCP otherwise.
    #[serde(default)]
    pub http3_protocol_options: Option<Http3ProtocolOptions>,
    /// Where alt-svc entries are kept, and QUIC hints.
    #[serde(default)]
    pub alternate_protocols_cache_options: Option<AlternateProtocolsCacheOptions>,
}

/// `health_checks[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// A check with no answer within this fails.
    pub timeout: ConfigDuration,
    /// Time between checks.
    pub interval: ConfigDuration,
    /// Failures that make a host unhealthy.
    pub unhealthy_threshold: u32,
    /// Passes that make a host healthy.
    pub healthy_threshold: u32,
    /// The HTTP check.
    #[serde(default)]
    pub http_health_check: Option<HttpHealthCheck>,
    /// Accepted; weir does not add jitter.
    #[serde(default)]
    pub interval_jitter: Option<ConfigDuration>,
}

/// `http_health_check`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheck {
    /// Path requested.
    pub path: String,
    /// Host header (default: the cluster name).
    #[serde(default)]
    pub host: Option<String>,
    /// The protocol of the check; HTTP3 checks over QUIC (see `upstream::HealthCheckSpec`).
    #[serde(default)]
    pub codec_client_type: Option<HealthCheckCodec>,
}

/// `http_health_check.codec_client_type` (`type.v3.CodecClientType`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum HealthCheckCodec {
    /// HTTP/1.1 (Envoy's default).
    HTTP1,
    /// HTTP/2.
    HTTP2,
    /// HTTP/3 over QUIC.
    HTTP3,
}

/// `extensions.transport_sockets.tls.v3.DownstreamTlsContext`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DownstreamTlsContext {
    /// Certificates and ALPN.
    #[serde(default)]
    pub common_tls_context: CommonTlsContext,
    /// Ask clients for a certificate and refuse those without one.
    #[serde(default)]
    pub require_client_certificate: bool,
}

/// `extensions.transport_sockets.tls.v3.UpstreamTlsContext`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsContext {
    /// CA, client certificate and ALPN.
    #[serde(default)]
    pub common_tls_context: CommonTlsContext,
    /// SNI to send.
    #[serde(default)]
    pub sni: Option<String>,
}

/// `common_tls_context`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CommonTlsContext {
    /// Certificate chains with their keys.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub tls_certificates: Vec<TlsCertificate>,
    /// Peer certificate validation.
    #[serde(default)]
    pub validation_context: Option<CertificateValidationContext>,
    /// ALPN protocols offered (client) or accepted (server), in preference order.
    #[serde(default)]
    pub alpn_protocols: Vec<String>,
}

/// `tls_certificates[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// PEM certificate chain.
    pub certificate_chain: DataSource,
    /// PEM private key.
    pub private_key: DataSource,
}

/// `validation_context`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CertificateValidationContext {
    /// PEM CA bundle.
    #[serde(default)]
    pub trusted_ca: Option<DataSource>,
}

/// `envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProxy {
    /// Label of its stats.
    pub stat_prefix: String,
    /// Where connections go.
    pub cluster: String,
    /// Carry each connection inside an HTTP CONNECT (or POST) to the cluster.
    #[serde(default)]
    pub tunneling_config: Option<TunnelingConfig>,
    /// Close a connection with no bytes either way for this long (Envoy default 1h).
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
    /// `access_log[]`: one line per connection, at its close.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub access_log: Vec<serde_json::Value>,
}

/// `tunneling_config` of a tcp_proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelingConfig {
    /// The CONNECT authority (or POST host), e.g. `host.example:443`.
    pub hostname: String,
    /// POST instead of CONNECT.
    #[serde(default)]
    pub use_post: bool,
    /// The POST path (default "/").
    #[serde(default)]
    pub post_path: Option<String>,
    /// Headers added to the tunnel request.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub headers_to_add: Vec<HeaderValueOption>,
}

/// `envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuicDownstreamTransport {
    /// Certificates (picked by SNI) and client validation, as for TLS over TCP.
    pub downstream_tls_context: DownstreamTlsContext,
    /// 0-RTT (accepted; weir does not take early data).
    #[serde(default)]
    pub enable_early_data: Option<bool>,
}

/// `envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuicUpstreamTransport {
    /// SNI, CA and client certificate, as for TLS over TCP.
    pub upstream_tls_context: UpstreamTlsContext,
}
