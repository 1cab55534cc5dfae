//! What a cluster is, as the upstream side needs it: plain data read from the config.
//!
//! [`super::cluster`] turns Envoy's YAML (`static_resources.clusters[]`) into these, with
//! Envoy's defaults already applied; `upstream::ClusterManager` builds its clusters from them,
//! so nothing on the upstream side reads YAML.

use std::path::PathBuf;
use std::time::Duration;

/// One upstream cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// The cluster's name, as routes refer to it and as the `cluster_name` stat label.
    pub name: String,
    /// How the endpoints' addresses are found.
    pub discovery: Discovery,
    /// Endpoints from `load_assignment` (flattened over localities, in order), each with its
    /// locality's priority.
    pub endpoints: Vec<EndpointSpec>,
    /// `load_assignment.policy.overprovisioning_factor`, in percent (default
    /// [`DEFAULT_OVERPROVISIONING_FACTOR`]): how far a priority level's healthy hosts are
    /// taken to cover for its unhealthy ones before lower levels take load.
    pub overprovisioning_factor: u32,
    /// `load_assignment.policy.weighted_priority_health`: a priority level's health from its
    /// hosts' weights rather than their count.
    pub weighted_priority_health: bool,
    /// How often STRICT_DNS / LOGICAL_DNS names are resolved again (Envoy default 5s).
    pub dns_refresh_rate: Duration,
    /// Limit on a TCP (and TLS) connection attempt (Envoy default 5s).
    pub connect_timeout: Duration,
    /// How a host is picked for a request.
    pub lb_policy: LbPolicy,
    /// The default-priority circuit breaker thresholds.
    pub thresholds: Thresholds,
    /// Which HTTP protocol is spoken upstream.
    pub protocol: UpstreamProtocol,
    /// HTTP/2 settings weir sends to the upstream (from `http2_protocol_options`).
    pub http2: Http2Settings,
    /// After this many requests a connection is drained (no limit when `None`).
    pub max_requests_per_connection: Option<u32>,
    /// An idle connection (no request in flight) is closed after this (Envoy default 1h).
    pub idle_timeout: Option<Duration>,
    /// Active HTTP health checking, when configured.
    pub health_check: Option<HealthCheckSpec>,
    /// TLS to the upstream (`transport_socket` envoy.transport_sockets.tls), when configured.
    pub tls: Option<UpstreamTlsSpec>,
    /// QUIC settings of HTTP/3 connections (`http3_protocol_options.quic_protocol_options`).
    pub http3: Http3Settings,
    /// Hosts (name or IP, port) known to speak HTTP/3 before they advertise it with alt-svc
    /// (`alternate_protocols_cache_options.prepopulated_entries`).
    pub quic_hints: Vec<(String, u16)>,
    /// `ORIGINAL_DST` only: a destination with no connection, no request and no new pick
    /// for this long leaves the cluster (Envoy's `cleanup_interval`, default 5s).
    pub cleanup_interval: Duration,
    /// The load balancers' settings beside `lb_policy`.
    pub lb: LbSettings,
    /// Passive health checking (`outlier_detection`), when configured.
    pub outlier: Option<OutlierSpec>,
    /// `type: EDS`: its endpoints come from the control plane, and an update of them alone
    /// keeps the cluster's hosts and their health (see `ClusterManager::successor`).
    pub eds: bool,
    /// `ignore_health_on_host_removal`: a host discovery removes goes at once even while it
    /// passes its active health checks (default false: it stays until it fails them).
    pub ignore_health_on_host_removal: bool,
}

impl ClusterSpec {
    /// Whether `self` and `other` differ in their endpoints at most.
    pub fn same_but_endpoints(&self, other: &ClusterSpec) -> bool {
        let strip = |spec: &ClusterSpec| ClusterSpec {
            endpoints: Vec::new(),
            overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR,
            weighted_priority_health: false,
            ..spec.clone()
        };
        strip(self) == strip(other)
    }
}

/// Envoy's default overprovisioning factor, in percent (1.4).
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

/// QUIC and HTTP/3 settings, for listeners and for upstream connections; Envoy's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http3Settings {
    /// Bidirectional streams the peer may open at once (Envoy default 100).
    pub max_concurrent_streams: u32,
    /// Per-stream receive window (Envoy default 16 MiB).
    pub initial_stream_window_size: u32,
    /// Connection receive window (Envoy default 24 MiB).
    pub initial_connection_window_size: u32,
    /// A connection without packets for this long is closed (Envoy default 300s).
    pub idle_timeout: Duration,
}

impl Default for Http3Settings {
    fn default() -> Self {
        Http3Settings {
            max_concurrent_streams: 100,
            initial_stream_window_size: 16 * 1024 * 1024,
            initial_connection_window_size: 24 * 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

impl Http3Settings {
    /// A QUIC listener's defaults: the HTTP/2 edge values for the flow-control windows (64 KiB
    /// a stream, 1 MiB a connection), so an HTTP/3 client can make weir hold no more of its
    /// uploads than an HTTP/2 one (Envoy's QUIC defaults, 16 and 24 MiB, are for upstreams).
    pub fn downstream() -> Self {
        Http3Settings {
            initial_stream_window_size: 65_536,
            initial_connection_window_size: 1_048_576,
            ..Http3Settings::default()
        }
    }
}

/// `type` of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// Endpoints are IP literals, used as written.
    Static,
    /// Every address each name resolves to is a host; resolved again every refresh.
    StrictDns,
    /// Only the first address a name resolves to is used; resolved again every refresh.
    LogicalDns,
    /// No endpoints: a request (or raw connection) goes to the original destination of the
    /// downstream connection it came on (`upstream::OriginalDestination` in its extensions).
    OriginalDst,
}

/// One endpoint: `socket_address { address, port_value }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// An IP literal (STATIC) or a DNS name (STRICT_DNS, LOGICAL_DNS).
    pub address: String,
    /// The TCP port.
    pub port: u16,
    /// `load_balancing_weight` (default 1, never 0): its share against the other endpoints.
    pub weight: u32,
    /// `health_status` the config or EDS gave it (Envoy's EDS health flags).
    pub health: EndpointHealth,
    /// The `priority` of its locality (0, the highest, by default).
    pub priority: u32,
}

/// An endpoint's `health_status`, as Envoy turns it into a host's EDS health flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointHealth {
    /// `UNKNOWN` (the default) or `HEALTHY`: no flag.
    #[default]
    Healthy,
    /// `UNHEALTHY` or `TIMEOUT`: out of balancing (`/failed_eds_health`).
    Unhealthy,
    /// `DRAINING`: out of balancing and excluded (`/eds_status_draining`).
    Draining,
    /// `DEGRADED`: used only as far as the healthy hosts fall short
    /// (`/degraded_eds_health`).
    Degraded,
}

/// `lb_policy` of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    /// Each healthy host in turn.
    RoundRobin,
    /// Power of two choices on active requests.
    LeastRequest,
    /// A uniformly random healthy host.
    Random,
    /// Consistent hashing on a ring of hashes ([`LbSettings`]' ring sizes).
    RingHash,
    /// Consistent hashing with a Maglev lookup table ([`LbSettings::maglev_table_size`]).
    Maglev,
}

/// The load balancers' settings beside `lb_policy`, with Envoy's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LbSettings {
    /// `common_lb_config.healthy_panic_threshold`, in percent: when fewer hosts than this
    /// are available, balancing goes over all of them (Envoy's panic mode). Default 50.
    pub healthy_panic_threshold: f64,
    /// `common_lb_config.ignore_new_hosts_until_first_hc`: a host that discovery adds to a
    /// health-checked cluster is left out of balancing (and of the panic computation) until
    /// its first check, as Envoy's `PENDING_ACTIVE_HC`. Default false.
    pub ignore_new_hosts_until_first_hc: bool,
    /// `ring_hash_lb_config.minimum_ring_size` (default 1024).
    pub ring_min_size: u64,
    /// `ring_hash_lb_config.maximum_ring_size` (default 8M).
    pub ring_max_size: u64,
    /// `maglev_lb_config.table_size`, a prime (default 65537).
    pub maglev_table_size: u64,
    /// `least_request_lb_config.choice_count` (default 2).
    pub choice_count: u32,
    /// `slow_start_config` of `round_robin_lb_config` or `least_request_lb_config`.
    pub slow_start: Option<SlowStart>,
}

/// `slow_start_config`: a host new to the cluster (or back from failing active health
/// checks) gets a share of its weight that grows over `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    /// `slow_start_window`.
    pub window: Duration,
    /// `aggression.default_value` (default 1.0: linear); the share is
    /// (elapsed / window)^(1 / aggression).
    pub aggression: f64,
    /// `min_weight_percent` (default 10): the share never goes below this.
    pub min_weight_percent: f64,
}

impl SlowStart {
    /// The share (0 to 1] of its weight a host gets `elapsed` after it became ready.
    pub fn factor(&self, elapsed: Duration) -> f64 {
        if elapsed >= self.window || self.window.is_zero() {
            return 1.0;
        }
        let time = elapsed.as_secs_f64().max(0.001) / self.window.as_secs_f64();
        time.powf(1.0 / self.aggression)
            .max(self.min_weight_percent / 100.0)
            .min(1.0)
    }
}

impl Default for LbSettings {
    fn default() -> Self {
        LbSettings {
            healthy_panic_threshold: 50.0,
            ignore_new_hosts_until_first_hc: false,
            ring_min_size: 1024,
            ring_max_size: 8 * 1024 * 1024,
            maglev_table_size: 65_537,
            choice_count: 2,
            slow_start: None,
        }
    }
}

/// `outlier_detection` of a cluster, with Envoy's defaults; percentages are 0..=100.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierSpec {
    /// 5xx responses in a row that eject a host (default 5).
    pub consecutive_5xx: u32,
    /// 502/503/504 responses in a row that eject a host (default 5).
    pub consecutive_gateway_failure: u32,
    /// Local-origin failures (connect failure, timeout, reset) in a row that eject a host
    /// when `split_external_local_origin_errors` (default 5).
    pub consecutive_local_origin_failure: u32,
    /// Whether local-origin failures are counted apart from the upstream's 5xx answers.
    pub split_external_local_origin_errors: bool,
    /// How often ejected hosts are checked for return and the rates computed (default 10s).
    pub interval: Duration,
    /// A host is ejected for this times the number of times it was ejected (default 30s).
    pub base_ejection_time: Duration,
    /// The cap on an ejection's length (default 300s).
    pub max_ejection_time: Duration,
    /// At most this share of the hosts is ejected at once; one host always may be (default 10).
    pub max_ejection_percent: u32,
    /// Chance (percent) that a consecutive_5xx detection ejects (default 100).
    pub enforcing_consecutive_5xx: u32,
    /// Chance that a consecutive_gateway_failure detection ejects (default 0).
    pub enforcing_consecutive_gateway_failure: u32,
    /// Chance that a consecutive_local_origin_failure detection ejects (default 100).
    pub enforcing_consecutive_local_origin_failure: u32,
    /// Chance that a success-rate detection ejects (default 100).
    pub enforcing_success_rate: u32,
    /// Chance that a local-origin success-rate detection ejects (default 100).
    pub enforcing_local_origin_success_rate: u32,
    /// Hosts with enough requests needed for success-rate detection (default 5).
    pub success_rate_minimum_hosts: u32,
    /// Requests in an interval a host needs to count in success-rate detection (default 100).
    pub success_rate_request_volume: u32,
    /// A host is ejected below mean - stdev x this / 1000 (default 1900).
    pub success_rate_stdev_factor: u32,
    /// A host failing at least this percent of its requests is ejected (default 85).
    pub failure_percentage_threshold: u32,
    /// Chance that a failure-percentage detection ejects (default 0).
    pub enforcing_failure_percentage: u32,
    /// Chance that a local-origin failure-percentage detection ejects (default 0).
    pub enforcing_failure_percentage_local_origin: u32,
    /// Hosts with enough requests needed for failure-percentage detection (default 5).
    pub failure_percentage_minimum_hosts: u32,
    /// Requests in an interval a host needs to count in failure-percentage detection
    /// (default 50).
    pub failure_percentage_request_volume: u32,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        OutlierSpec {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            split_external_local_origin_errors: false,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_success_rate: 100,
            enforcing_local_origin_success_rate: 100,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            failure_percentage_threshold: 85,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
        }
    }
}

/// `circuit_breakers.thresholds[]` for the DEFAULT priority. Envoy's defaults are 1024,
/// 1024, 1024 and 3. They count across all workers, as Envoy's do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Connections open to all hosts of the cluster at once.
    pub max_connections: u32,
    /// Requests waiting for a connection at once.
    pub max_pending_requests: u32,
    /// Requests in flight to the cluster at once.
    pub max_requests: u32,
    /// Retries in flight at once.
    pub max_retries: u32,
    /// `retry_budget`: when set, the retries allowed in flight follow the requests in flight
    /// instead of `max_retries`.
    pub retry_budget: Option<RetryBudget>,
}

/// `retry_budget` of circuit breaker thresholds: retries in flight may be `budget_percent`
/// of the requests active and pending, and never fewer than `min_retry_concurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// `budget_percent` in hundredths of a percent (2000 = 20%).
    pub budget_basis_points: u32,
    /// `min_retry_concurrency`.
    pub min_retry_concurrency: u32,
}

impl RetryBudget {
    /// The retries allowed in flight when `active` requests are active or pending.
    pub fn limit(&self, active: u32) -> u32 {
        let share = u64::from(active) * u64::from(self.budget_basis_points) / 10_000;
        u32::try_from(share)
            .unwrap_or(u32::MAX)
            .max(self.min_retry_concurrency)
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
        }
    }
}

/// The upstream protocol, from `typed_extension_protocol_options`
/// (`envoy.extensions.upstreams.http.v3.HttpProtocolOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// `explicit_http_config.http_protocol_options`, or nothing configured (Envoy's default).
    Http1,
    /// `explicit_http_config.http2_protocol_options`: h2 with prior knowledge in the clear,
    /// ALPN "h2" over TLS.
    Http2,
    /// `auto_config`: over TLS, ALPN offers h2 and http/1.1 and the server picks; in the clear,
    /// HTTP/1.1.
    Auto,
    /// `explicit_http_config.http3_protocol_options`: HTTP/3 over QUIC (ALPN "h3").
    Http3,
    /// `auto_config` with `http3_protocol_options`: HTTP/3 to a host that advertised it with
    /// alt-svc (or has a QUIC hint), raced against TCP; TCP with ALPN h2/http/1.1 otherwise.
    AutoHttp3,
}

/// HTTP/2 settings for upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// Our own limit on streams per connection; the peer's SETTINGS may lower it further.
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE we advertise (Envoy default 256 MiB).
    pub initial_stream_window_size: u32,
    /// The connection-level window we advertise (Envoy default 256 MiB).
    pub initial_connection_window_size: u32,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_concurrent_streams: 2_147_483_647,
            initial_stream_window_size: 268_435_456,
            initial_connection_window_size: 268_435_456,
        }
    }
}

impl Http2Settings {
    /// A listener's defaults: Envoy's edge best-practice values, so one client can neither
    /// hold more than 100 streams (and with them the clusters' circuit breakers) nor make weir
    /// buffer more than 1 MiB of its uploads.
    pub fn downstream() -> Self {
        Http2Settings {
            max_concurrent_streams: 100,
            initial_stream_window_size: 65_536,
            initial_connection_window_size: 1_048_576,
        }
    }
}

/// `health_checks[0]` with `http_health_check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// Request path of the check (`http_health_check.path`).
    pub path: String,
    /// Host header of the check (`http_health_check.host`; the cluster name when unset).
    pub host: Option<String>,
    /// Time to the next check of a host, by the cluster's traffic and the host's last result.
    pub intervals: HealthCheckIntervals,
    /// A check with no response within this fails.
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy host healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy host unhealthy.
    pub unhealthy_threshold: u32,
    /// Check over QUIC (HTTP/3) instead of TCP.
    pub over_quic: bool,
    /// Statuses that pass, as `[start, end)` ranges (`expected_statuses`; default 200).
    pub expected_statuses: Vec<(u16, u16)>,
    /// Statuses that fail towards `unhealthy_threshold` (`retriable_statuses`); any other
    /// status outside `expected_statuses` makes a healthy host unhealthy at once, as in Envoy.
    pub retriable_statuses: Vec<(u16, u16)>,
}

impl HealthCheckSpec {
    /// Whether the answer `status` passes the check.
    pub fn expects(&self, status: u16) -> bool {
        in_ranges(&self.expected_statuses, status)
    }

    /// Whether the answer `status`, failing, counts towards `unhealthy_threshold` rather than
    /// making the host unhealthy at once.
    pub fn retriable(&self, status: u16) -> bool {
        in_ranges(&self.retriable_statuses, status)
    }
}

fn in_ranges(ranges: &[(u16, u16)], status: u16) -> bool {
    ranges
        .iter()
        .any(|(start, end)| (*start..*end).contains(&status))
}

/// Envoy's default `no_traffic_interval`: a cluster that has carried no traffic has its hosts
/// checked once a minute.
pub const DEFAULT_NO_TRAFFIC_INTERVAL: Duration = Duration::from_secs(60);

/// The intervals of `health_checks[0]`, defaults resolved as Envoy resolves them. Which one
/// follows a check is Envoy's rule (see `upstream::health::next_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheckIntervals {
    /// `interval`: a healthy host with no change pending, once the cluster has had traffic.
    pub interval: Duration,
    /// `no_traffic_interval`: every check before the cluster has had traffic, except those
    /// `no_traffic_healthy` covers.
    pub no_traffic: Duration,
    /// `no_traffic_healthy_interval`: before traffic, after a pass of a healthy host.
    pub no_traffic_healthy: Duration,
    /// `unhealthy_interval`: after a failure of an unhealthy host (or the one that made it so).
    pub unhealthy: Duration,
    /// `unhealthy_edge_interval`: after a failure below `unhealthy_threshold`.
    pub unhealthy_edge: Duration,
    /// `healthy_edge_interval`: after a pass below `healthy_threshold`.
    pub healthy_edge: Duration,
}

impl HealthCheckIntervals {
    /// Every interval `every`, as a config that sets them all would.
    pub fn all(every: Duration) -> Self {
        HealthCheckIntervals {
            interval: every,
            no_traffic: every,
            no_traffic_healthy: every,
            unhealthy: every,
            unhealthy_edge: every,
            healthy_edge: every,
        }
    }
}

/// `transport_socket` `envoy.transport_sockets.tls` with an `UpstreamTlsContext`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTlsSpec {
    /// SNI to send (`sni`); none when unset, as in Envoy.
    pub sni: Option<String>,
    /// CA bundle the upstream's certificate must chain to
    /// (`common_tls_context.validation_context.trusted_ca.filename`). When unset the
    /// certificate is not verified, as in Envoy without a validation context.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (`common_tls_context.tls_certificates[0].certificate_chain`).
    pub cert_chain_file: Option<PathBuf>,
    /// Client private key (`common_tls_context.tls_certificates[0].private_key`).
    pub private_key_file: Option<PathBuf>,
    /// `common_tls_context.alpn_protocols`; when empty the protocol decides
    /// (h2 / http/1.1 / both for auto).
    pub alpn_protocols: Vec<String>,
}
