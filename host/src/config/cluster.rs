//! `static_resources.clusters[]`: the schema of a cluster and its reading into a
//! [`ClusterSpec`] (discovery, endpoints, load balancing, circuit breakers, protocol, TLS,
//! health checks), checked against Envoy's rules.

use super::cluster_spec as spec;
use super::cluster_spec::{ClusterSpec, Http3Settings, UpstreamProtocol};
use super::common::{Address, DEFAULT_BUFFER_LIMIT, nonzero};
use super::duration::ConfigDuration;
use super::http_options::{CommonHttpProtocolOptions, Http1ProtocolOptions, Http2ProtocolOptions};
use super::quic::{AlternateProtocolsCacheOptions, Http3ProtocolOptions, overlay};
use super::tls::{TransportSocket, TransportSocketConfig, upstream_tls};
use super::typed::{PATH_MARK, nest, split_typed, type_names, typed, unsupported};
use super::{FieldError, typed};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

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
    /// `type: EDS`: where the endpoints come from (ADS) and under which name.
    #[serde(default)]
    pub eds_cluster_config: Option<EdsClusterConfig>,
    /// Passive health checking: hosts that fail are ejected for a while (see
    /// [`super::outlier`]).
    #[serde(default)]
    pub outlier_detection: Option<super::outlier::OutlierDetection>,
    /// `healthy_panic_threshold` and friends (see [`super::balancing`]).
    #[serde(default)]
    pub common_lb_config: Option<super::balancing::CommonLbConfig>,
    /// `lb_policy: RING_HASH` settings.
    #[serde(default)]
    pub ring_hash_lb_config: Option<super::balancing::RingHashLbConfig>,
    /// `lb_policy: MAGLEV` settings.
    #[serde(default)]
    pub maglev_lb_config: Option<super::balancing::MaglevLbConfig>,
    /// `lb_policy: LEAST_REQUEST` settings.
    #[serde(default)]
    pub least_request_lb_config: Option<super::balancing::LeastRequestLbConfig>,
    /// `lb_policy: ROUND_ROBIN` settings.
    #[serde(default)]
    pub round_robin_lb_config: Option<super::balancing::RoundRobinLbConfig>,
    /// Whether a host that discovery removes goes at once even while it passes its active
    /// health checks (default false: it stays, `PENDING_DYNAMIC_REMOVAL`, until it fails).
    #[serde(default)]
    pub ignore_health_on_host_removal: bool,
}

/// `eds_cluster_config` of an EDS cluster.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EdsClusterConfig {
    /// Where the endpoints come from: `ads: {}`.
    #[serde(default)]
    pub eds_config: Option<super::dynamic_resources::ConfigSource>,
    /// The name of the load assignment to subscribe to (default: the cluster's name).
    #[serde(default)]
    pub service_name: Option<String>,
}

impl Cluster {
    /// For a `type: EDS` cluster, the name of the load assignment its endpoints come in:
    /// `eds_cluster_config.service_name`, or the cluster's name (as Envoy).
    pub fn eds_service_name(&self) -> Option<&str> {
        if self.discovery_type != DiscoveryType::EDS {
            return None;
        }
        let service = self
            .eds_cluster_config
            .as_ref()
            .and_then(|eds| eds.service_name.as_deref())
            .filter(|name| !name.is_empty());
        Some(service.unwrap_or(&self.name))
    }

    /// Puts in the endpoints EDS delivered (the xDS assembler, before the snapshot is
    /// built); the cluster then reads them as a STATIC cluster reads its `load_assignment`.
    pub fn set_eds_load_assignment(&mut self, assignment: ClusterLoadAssignment) {
        self.load_assignment = Some(assignment);
    }
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
    /// IP literals delivered over xDS (EDS) into `load_assignment`, read as STATIC's; none
    /// until they arrive (requests get 503, no healthy upstream, as in Envoy).
    EDS,
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
    /// Consistent hashing on a ring (`ring_hash_lb_config`), keyed by the route's
    /// `hash_policy`.
    RING_HASH,
    /// Consistent hashing with a Maglev table (`maglev_lb_config`), keyed by the route's
    /// `hash_policy`.
    MAGLEV,
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
    /// `policy`: the overprovisioning factor that priority levels are balanced by.
    #[serde(default)]
    pub policy: Option<LoadAssignmentPolicy>,
}

/// `load_assignment.policy` (`ClusterLoadAssignment.Policy`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LoadAssignmentPolicy {
    /// `overprovisioning_factor` in percent (Envoy's default 140): a priority level's health
    /// is its share of healthy hosts times this, capped at 100.
    #[serde(default)]
    pub overprovisioning_factor: Option<u32>,
    /// `weighted_priority_health`: a priority level's health from its hosts' weights rather
    /// than their count.
    #[serde(default)]
    pub weighted_priority_health: bool,
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
    /// The priority level of these endpoints (0, the default, is the highest): a level takes
    /// the load the levels above it cannot, by their health (see `upstream::lb`).
    #[serde(default)]
    pub priority: u32,
}

/// `lb_endpoints[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbEndpoint {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The endpoint's share of the traffic against the others' (default 1), for every
    /// `lb_policy`.
    #[serde(default)]
    pub load_balancing_weight: Option<u32>,
    /// The endpoint's health as the config (or EDS) says it, Envoy's `HealthStatus`.
    #[serde(default)]
    pub health_status: HealthStatus,
}

/// `lb_endpoints[].health_status` (`envoy.config.core.v3.HealthStatus`).
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum HealthStatus {
    /// Nothing known (the default): healthy.
    #[default]
    UNKNOWN,
    /// Healthy.
    HEALTHY,
    /// Out of balancing.
    UNHEALTHY,
    /// Out of balancing and excluded from the host counts.
    DRAINING,
    /// As UNHEALTHY (a health check timed out).
    TIMEOUT,
    /// Used only as far as the healthy hosts fall short.
    DEGRADED,
}

impl HealthStatus {
    /// What the status makes of a host.
    pub fn endpoint_health(self) -> spec::EndpointHealth {
        match self {
            HealthStatus::UNKNOWN | HealthStatus::HEALTHY => spec::EndpointHealth::Healthy,
            HealthStatus::UNHEALTHY | HealthStatus::TIMEOUT => spec::EndpointHealth::Unhealthy,
            HealthStatus::DRAINING => spec::EndpointHealth::Draining,
            HealthStatus::DEGRADED => spec::EndpointHealth::Degraded,
        }
    }
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
    /// Retries in flight as a share of the requests in flight (replaces `max_retries`).
    #[serde(default)]
    pub retry_budget: Option<RetryBudget>,
}

/// `thresholds[].retry_budget`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// The share of active and pending requests that may be retries (default 20%).
    #[serde(default)]
    pub budget_percent: Option<Percent>,
    /// Retries allowed whatever the share (default 3).
    #[serde(default)]
    pub min_retry_concurrency: Option<u32>,
}

/// `type.v3.Percent`.
#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    /// 0.0 to 100.0.
    #[serde(default)]
    pub value: f64,
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
    /// Time between checks of a host once the cluster has carried traffic.
    pub interval: ConfigDuration,
    /// Time between checks while the cluster has carried no traffic (default 60 s).
    #[serde(default)]
    pub no_traffic_interval: Option<ConfigDuration>,
    /// `no_traffic_interval` for a host that passed and is healthy (default:
    /// `no_traffic_interval`).
    #[serde(default)]
    pub no_traffic_healthy_interval: Option<ConfigDuration>,
    /// Time between checks of an unhealthy host (default: `interval`).
    #[serde(default)]
    pub unhealthy_interval: Option<ConfigDuration>,
    /// Time to the next check after a failure that has not yet made a healthy host unhealthy
    /// (default: `unhealthy_interval`).
    #[serde(default)]
    pub unhealthy_edge_interval: Option<ConfigDuration>,
    /// Time to the next check after a pass that has not yet made an unhealthy host healthy
    /// (default: `interval`).
    #[serde(default)]
    pub healthy_edge_interval: Option<ConfigDuration>,
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
    /// The protocol of the check; HTTP3 checks over QUIC (see `spec::HealthCheckSpec`).
    #[serde(default)]
    pub codec_client_type: Option<HealthCheckCodec>,
    /// Statuses that pass (default: 200 only, as Envoy).
    #[serde(default)]
    pub expected_statuses: Vec<StatusRange>,
    /// Statuses that fail towards `unhealthy_threshold` instead of at once.
    #[serde(default)]
    pub retriable_statuses: Vec<StatusRange>,
}

/// A range of HTTP statuses (`type.v3.Int64Range`): `start` included, `end` excluded.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRange {
    /// The first status of the range.
    #[serde(default)]
    pub start: i64,
    /// The status after the last of the range.
    #[serde(default)]
    pub end: i64,
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

/// `typed_extension_protocol_options` of a cluster: the one key weir knows.
#[derive(Debug, Clone, Default)]
pub struct ProtocolOptionsMap {
    /// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.
    pub http: Option<UpstreamHttpProtocolOptions>,
}

impl<'de> Deserialize<'de> for ProtocolOptionsMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = BTreeMap::<String, Value>::deserialize(deserializer)?;
        let mut options = ProtocolOptionsMap::default();
        for (key, value) in entries {
            if key != type_names::HTTP_PROTOCOL_OPTIONS {
                return Err(D::Error::custom(format!(
                    "{PATH_MARK}{key}{PATH_MARK}unsupported protocol options; weir supports {}",
                    type_names::HTTP_PROTOCOL_OPTIONS
                )));
            }
            let (type_name, fields) =
                split_typed(&key, Some(value)).map_err(|e| D::Error::custom(nest(&key, e)))?;
            if type_name != type_names::HTTP_PROTOCOL_OPTIONS {
                return Err(D::Error::custom(nest(
                    &key,
                    unsupported(
                        "protocol options",
                        &type_name,
                        &[type_names::HTTP_PROTOCOL_OPTIONS],
                    ),
                )));
            }
            options.http = Some(typed(fields).map_err(|e| D::Error::custom(nest(&key, e)))?);
        }
        Ok(options)
    }
}

/// An EDS cluster's `eds_cluster_config`: there, with endpoints from ADS.
fn eds_checks(cluster: &Cluster, path: &str) -> Result<(), FieldError> {
    let eds_path = format!("{path}.eds_cluster_config");
    let Some(eds) = &cluster.eds_cluster_config else {
        return Err(FieldError::new(
            eds_path,
            "a type: EDS cluster needs eds_cluster_config (eds_config: {ads: {}})",
        ));
    };
    match &eds.eds_config {
        Some(source) => source.check_ads(&format!("{eds_path}.eds_config")),
        None => Err(FieldError::new(
            format!("{eds_path}.eds_config"),
            "set eds_config: {ads: {}} (weir takes endpoints over ADS)",
        )),
    }
}

/// The lowest priority level an endpoint may have (Envoy's `lte: 128`).
const MAX_PRIORITY: u32 = 128;

/// Reads the cluster at `path` (`static_resources.clusters[i]`) into its [`ClusterSpec`].
pub fn cluster_spec(cluster: &Cluster, path: &str) -> Result<ClusterSpec, FieldError> {
    use DiscoveryType;
    let discovery = match cluster.discovery_type {
        DiscoveryType::STATIC => spec::Discovery::Static,
        DiscoveryType::STRICT_DNS => spec::Discovery::StrictDns,
        DiscoveryType::LOGICAL_DNS => spec::Discovery::LogicalDns,
        DiscoveryType::ORIGINAL_DST => spec::Discovery::OriginalDst,
        DiscoveryType::EDS => {
            eds_checks(cluster, path)?;
            spec::Discovery::Static
        }
    };
    original_dst_checks(cluster, path)?;
    let mut endpoints = Vec::new();
    if let Some(assignment) = &cluster.load_assignment {
        for (j, locality) in assignment.endpoints.iter().enumerate() {
            if locality.priority > MAX_PRIORITY {
                return Err(FieldError::new(
                    format!("{path}.load_assignment.endpoints[{j}].priority"),
                    format!("must be at most {MAX_PRIORITY}, as Envoy's"),
                ));
            }
            for (k, lb_endpoint) in locality.lb_endpoints.iter().enumerate() {
                let socket = &lb_endpoint.endpoint.address.socket_address;
                let field = format!(
                    "{path}.load_assignment.endpoints[{j}].lb_endpoints[{k}].endpoint.address.socket_address"
                );
                if discovery == spec::Discovery::Static && socket.address.parse::<IpAddr>().is_err()
                {
                    return Err(FieldError::new(
                        format!("{field}.address"),
                        format!(
                            "{:?} is not an IP address; a STATIC cluster needs IP literals (use type: STRICT_DNS or LOGICAL_DNS for names)",
                            socket.address
                        ),
                    ));
                }
                if socket.port_value == 0 {
                    return Err(FieldError::new(
                        format!("{field}.port_value"),
                        "an endpoint needs a port",
                    ));
                }
                if lb_endpoint.load_balancing_weight == Some(0) {
                    return Err(FieldError::new(
                        format!(
                            "{path}.load_assignment.endpoints[{j}].lb_endpoints[{k}].load_balancing_weight"
                        ),
                        "must be at least 1",
                    ));
                }
                endpoints.push(spec::EndpointSpec {
                    address: socket.address.clone(),
                    port: socket.port_value,
                    weight: lb_endpoint.load_balancing_weight.unwrap_or(1),
                    health: lb_endpoint.health_status.endpoint_health(),
                    priority: locality.priority,
                });
            }
        }
    }
    let overprovisioning_factor = overprovisioning_factor(cluster, path)?;
    if discovery == spec::Discovery::LogicalDns && endpoints.len() > 1 {
        return Err(FieldError::new(
            format!("{path}.load_assignment"),
            "a LOGICAL_DNS cluster takes exactly one endpoint",
        ));
    }
    let lb_policy = match cluster.lb_policy {
        LbPolicyName::ROUND_ROBIN => spec::LbPolicy::RoundRobin,
        LbPolicyName::LEAST_REQUEST => spec::LbPolicy::LeastRequest,
        LbPolicyName::RANDOM => spec::LbPolicy::Random,
        // Only ORIGINAL_DST takes it (checked above), and its host is the destination, not
        // a pick: the policy is never consulted.
        LbPolicyName::CLUSTER_PROVIDED => spec::LbPolicy::RoundRobin,
        LbPolicyName::RING_HASH => spec::LbPolicy::RingHash,
        LbPolicyName::MAGLEV => spec::LbPolicy::Maglev,
    };
    let lb = super::balancing::lb_settings(cluster, path)?;
    let outlier = cluster
        .outlier_detection
        .as_ref()
        .map(|o| super::outlier::outlier_spec(o, &format!("{path}.outlier_detection")))
        .transpose()?;
    let mut thresholds = spec::Thresholds::default();
    if let Some(breakers) = &cluster.circuit_breakers {
        for (i, t) in breakers
            .thresholds
            .iter()
            .enumerate()
            .filter(|(_, t)| t.priority == RoutingPriority::DEFAULT)
        {
            thresholds.max_connections = t.max_connections.unwrap_or(thresholds.max_connections);
            thresholds.max_pending_requests = t
                .max_pending_requests
                .unwrap_or(thresholds.max_pending_requests);
            thresholds.max_requests = t.max_requests.unwrap_or(thresholds.max_requests);
            thresholds.max_retries = t.max_retries.unwrap_or(thresholds.max_retries);
            if let Some(budget) = &t.retry_budget {
                let percent = budget.budget_percent.map_or(20.0, |p| p.value);
                if !(0.0..=100.0).contains(&percent) {
                    return Err(FieldError::new(
                        format!(
                            "{path}.circuit_breakers.thresholds[{i}].retry_budget.budget_percent.value"
                        ),
                        "expected 0 to 100",
                    ));
                }
                thresholds.retry_budget = Some(spec::RetryBudget {
                    // Hundredths of a percent: the spec stays plain, comparable data.
                    budget_basis_points: (percent * 100.0).round() as u32,
                    min_retry_concurrency: budget.min_retry_concurrency.unwrap_or(3),
                });
            }
        }
    }
    let (protocol, h2_options, common) = upstream_protocol(cluster, path)?;
    let defaults = spec::Http2Settings::default();
    let http2 = spec::Http2Settings {
        max_concurrent_streams: h2_options
            .as_ref()
            .and_then(|o| o.max_concurrent_streams)
            .unwrap_or(defaults.max_concurrent_streams),
        // What one upstream stream may push ahead of a slow client is the cluster's
        // buffer limit (Envoy holds it there with watermarks; an HTTP/2 window is weir's
        // watermark), unless the config sets the window itself.
        initial_stream_window_size: h2_options
            .as_ref()
            .and_then(|o| o.initial_stream_window_size)
            .unwrap_or(
                cluster
                    .per_connection_buffer_limit_bytes
                    .unwrap_or(DEFAULT_BUFFER_LIMIT as u32)
                    .clamp(65_535, defaults.initial_stream_window_size),
            ),
        initial_connection_window_size: h2_options
            .as_ref()
            .and_then(|o| o.initial_connection_window_size)
            .unwrap_or(defaults.initial_connection_window_size),
    };
    let health_check = match cluster.health_checks.as_slice() {
        [] => None,
        [check, ..] => {
            let check_path = format!("{path}.health_checks[0]");
            let Some(http) = &check.http_health_check else {
                return Err(FieldError::new(
                    check_path,
                    "only http_health_check is supported",
                ));
            };
            let positive = |name: &str, value: Option<&ConfigDuration>| match value {
                Some(value) if value.get().is_zero() => Err(FieldError::new(
                    format!("{check_path}.{name}"),
                    "must be above 0s",
                )),
                Some(value) => Ok(Some(value.get())),
                None => Ok(None),
            };
            let interval = positive("interval", Some(&check.interval))?.unwrap_or_default();
            let no_traffic_interval =
                positive("no_traffic_interval", check.no_traffic_interval.as_ref())?
                    .unwrap_or(spec::DEFAULT_NO_TRAFFIC_INTERVAL);
            let unhealthy_interval =
                positive("unhealthy_interval", check.unhealthy_interval.as_ref())?
                    .unwrap_or(interval);
            let intervals = spec::HealthCheckIntervals {
                interval,
                no_traffic: no_traffic_interval,
                no_traffic_healthy: positive(
                    "no_traffic_healthy_interval",
                    check.no_traffic_healthy_interval.as_ref(),
                )?
                .unwrap_or(no_traffic_interval),
                unhealthy: unhealthy_interval,
                unhealthy_edge: positive(
                    "unhealthy_edge_interval",
                    check.unhealthy_edge_interval.as_ref(),
                )?
                .unwrap_or(unhealthy_interval),
                healthy_edge: positive(
                    "healthy_edge_interval",
                    check.healthy_edge_interval.as_ref(),
                )?
                .unwrap_or(interval),
            };
            let statuses = |name: &str, ranges: &[StatusRange]| {
                status_ranges(ranges, &format!("{check_path}.http_health_check.{name}"))
            };
            let mut expected_statuses = statuses("expected_statuses", &http.expected_statuses)?;
            if expected_statuses.is_empty() {
                expected_statuses.push((200, 201));
            }
            Some(spec::HealthCheckSpec {
                expected_statuses,
                retriable_statuses: statuses("retriable_statuses", &http.retriable_statuses)?,
                path: http.path.clone(),
                host: http.host.clone(),
                intervals,
                timeout: check.timeout.get(),
                healthy_threshold: check.healthy_threshold.max(1),
                unhealthy_threshold: check.unhealthy_threshold.max(1),
                over_quic: health_check_over_quic(http.codec_client_type, protocol),
            })
        }
    };
    let tls = match &cluster.transport_socket {
        None => None,
        Some(socket) => match &socket.config {
            TransportSocketConfig::UpstreamTls(context) => Some(upstream_tls(
                context,
                &format!("{path}.transport_socket.typed_config"),
            )?),
            TransportSocketConfig::QuicUpstream(quic) => Some(upstream_tls(
                &quic.upstream_tls_context,
                &format!("{path}.transport_socket.typed_config.upstream_tls_context"),
            )?),
            TransportSocketConfig::DownstreamTls(_) | TransportSocketConfig::QuicDownstream(_) => {
                return Err(FieldError::new(
                    format!("{path}.transport_socket.typed_config.@type"),
                    "a cluster needs an UpstreamTlsContext or QuicUpstreamTransport",
                ));
            }
        },
    };
    let (http3, quic_hints) = cluster_quic(cluster, protocol, path)?;
    Ok(ClusterSpec {
        name: cluster.name.clone(),
        discovery,
        endpoints,
        overprovisioning_factor,
        weighted_priority_health: cluster
            .load_assignment
            .as_ref()
            .and_then(|a| a.policy.as_ref())
            .is_some_and(|p| p.weighted_priority_health),
        dns_refresh_rate: nonzero(cluster.dns_refresh_rate.map(|d| d.get()))
            .unwrap_or(Duration::from_secs(5)),
        connect_timeout: nonzero(cluster.connect_timeout.map(|d| d.get()))
            .unwrap_or(Duration::from_secs(5)),
        lb_policy,
        thresholds,
        protocol,
        http2,
        max_requests_per_connection: common
            .as_ref()
            .and_then(|c| c.max_requests_per_connection)
            .filter(|n| *n > 0),
        idle_timeout: match common.as_ref().and_then(|c| c.idle_timeout) {
            Some(d) => nonzero(Some(d.get())),
            None => Some(Duration::from_secs(3600)),
        },
        health_check,
        tls,
        http3,
        quic_hints,
        cleanup_interval: nonzero(cluster.cleanup_interval.map(|d| d.get()))
            .unwrap_or(Duration::from_secs(5)),
        lb,
        outlier,
        eds: cluster.discovery_type == DiscoveryType::EDS,
        ignore_health_on_host_removal: cluster.ignore_health_on_host_removal,
    })
}

/// `load_assignment.policy.overprovisioning_factor` (percent, more than 0; Envoy's default
/// 140).
fn overprovisioning_factor(cluster: &Cluster, path: &str) -> Result<u32, FieldError> {
    let Some(policy) = cluster
        .load_assignment
        .as_ref()
        .and_then(|a| a.policy.as_ref())
    else {
        return Ok(spec::DEFAULT_OVERPROVISIONING_FACTOR);
    };
    match policy.overprovisioning_factor {
        None => Ok(spec::DEFAULT_OVERPROVISIONING_FACTOR),
        Some(0) => Err(FieldError::new(
            format!("{path}.load_assignment.policy.overprovisioning_factor"),
            "must be more than 0",
        )),
        Some(factor) => Ok(factor),
    }
}

/// What Envoy requires of `ORIGINAL_DST` clusters, and of `CLUSTER_PROVIDED`.
fn original_dst_checks(cluster: &Cluster, path: &str) -> Result<(), FieldError> {
    use {DiscoveryType, LbPolicyName};
    let original_dst = cluster.discovery_type == DiscoveryType::ORIGINAL_DST;
    let provided = cluster.lb_policy == LbPolicyName::CLUSTER_PROVIDED;
    if original_dst && !provided {
        return Err(FieldError::new(
            format!("{path}.lb_policy"),
            "a cluster of type ORIGINAL_DST needs lb_policy: CLUSTER_PROVIDED",
        ));
    }
    if provided && !original_dst {
        return Err(FieldError::new(
            format!("{path}.lb_policy"),
            "CLUSTER_PROVIDED is only for clusters of type ORIGINAL_DST",
        ));
    }
    if !original_dst {
        return Ok(());
    }
    let has_endpoints = cluster
        .load_assignment
        .as_ref()
        .is_some_and(|a| a.endpoints.iter().any(|e| !e.lb_endpoints.is_empty()));
    if has_endpoints {
        return Err(FieldError::new(
            format!("{path}.load_assignment"),
            "an ORIGINAL_DST cluster has no endpoints: it connects to each connection's original destination",
        ));
    }
    if !cluster.health_checks.is_empty() {
        return Err(FieldError::new(
            format!("{path}.health_checks"),
            "an ORIGINAL_DST cluster has no fixed hosts to check",
        ));
    }
    Ok(())
}

type ProtocolChoice = (
    spec::UpstreamProtocol,
    Option<Http2ProtocolOptions>,
    Option<CommonHttpProtocolOptions>,
);

/// The protocol the cluster speaks upstream, with the HTTP/2 and common options that go with
/// it: from `typed_extension_protocol_options`, else the older `http2_protocol_options`.
fn upstream_protocol(cluster: &Cluster, path: &str) -> Result<ProtocolChoice, FieldError> {
    use spec::UpstreamProtocol;
    let options = cluster
        .typed_extension_protocol_options
        .as_ref()
        .and_then(|m| m.http.as_ref());
    let Some(options) = options else {
        return Ok(match &cluster.http2_protocol_options {
            Some(h2) => (UpstreamProtocol::Http2, Some(h2.clone()), None),
            None => (UpstreamProtocol::Http1, None, None),
        });
    };
    let options_path = format!(
        "{path}.typed_extension_protocol_options.{}",
        typed::type_names::HTTP_PROTOCOL_OPTIONS
    );
    let common = options.common_http_protocol_options.clone();
    match (&options.explicit_http_config, &options.auto_config) {
        (Some(_), Some(_)) => Err(FieldError::new(
            options_path,
            "set one of explicit_http_config and auto_config, not both",
        )),
        (Some(explicit), None) => match (
            &explicit.http_protocol_options,
            &explicit.http2_protocol_options,
        ) {
            _ if explicit.http3_protocol_options.is_some()
                && (explicit.http_protocol_options.is_some()
                    || explicit.http2_protocol_options.is_some()) =>
            {
                Err(FieldError::new(
                    format!("{options_path}.explicit_http_config"),
                    "set exactly one of http_protocol_options, http2_protocol_options and http3_protocol_options",
                ))
            }
            (Some(_), None) => Ok((UpstreamProtocol::Http1, None, common)),
            (None, Some(h2)) => Ok((UpstreamProtocol::Http2, Some(h2.clone()), common)),
            (None, None) if explicit.http3_protocol_options.is_some() => {
                Ok((UpstreamProtocol::Http3, None, common))
            }
            _ => Err(FieldError::new(
                format!("{options_path}.explicit_http_config"),
                "set exactly one of http_protocol_options, http2_protocol_options and http3_protocol_options",
            )),
        },
        (None, Some(auto)) => Ok((
            if auto.http3_protocol_options.is_some() {
                UpstreamProtocol::AutoHttp3
            } else {
                UpstreamProtocol::Auto
            },
            auto.http2_protocol_options.clone(),
            common,
        )),
        (None, None) => Ok((UpstreamProtocol::Http1, None, common)),
    }
}

/// `expected_statuses` or `retriable_statuses` as `[start, end)` pairs; as Envoy, each range
/// must lie within 100..=600 and hold at least one status.
fn status_ranges(ranges: &[StatusRange], path: &str) -> Result<Vec<(u16, u16)>, FieldError> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, range)| {
            let status = |value: i64| {
                u16::try_from(value)
                    .ok()
                    .filter(|v| (100..=600).contains(v))
            };
            match (status(range.start), status(range.end)) {
                (Some(start), Some(end)) if start < end => Ok((start, end)),
                _ => Err(FieldError::new(
                    format!("{path}[{i}]"),
                    "must be a range [start, end) of statuses within 100..600",
                )),
            }
        })
        .collect()
}

/// Whether a cluster's health checks go over QUIC: `codec_client_type: HTTP3`, or none given
/// on an explicit HTTP/3 cluster (Envoy would check such a cluster with HTTP/1.1 over TCP,
/// which a QUIC-only upstream cannot answer).
fn health_check_over_quic(codec: Option<HealthCheckCodec>, protocol: UpstreamProtocol) -> bool {
    match codec {
        Some(codec) => codec == HealthCheckCodec::HTTP3,
        None => protocol == UpstreamProtocol::Http3,
    }
}

/// What HTTP/3 adds to a cluster of `protocol`: its QUIC settings and QUIC hints, after
/// checking the protocol against the transport socket.
fn cluster_quic(
    cluster: &Cluster,
    protocol: UpstreamProtocol,
    path: &str,
) -> Result<(Http3Settings, Vec<(String, u16)>), FieldError> {
    let quic_socket = matches!(
        cluster.transport_socket.as_ref().map(|t| &t.config),
        Some(TransportSocketConfig::QuicUpstream(_))
    );
    let wants_h3 = matches!(
        protocol,
        UpstreamProtocol::Http3 | UpstreamProtocol::AutoHttp3
    );
    if wants_h3 && !quic_socket {
        return Err(FieldError::new(
            format!("{path}.transport_socket"),
            "HTTP/3 to a cluster needs transport_socket envoy.transport_sockets.quic with a QuicUpstreamTransport",
        ));
    }
    if quic_socket && !wants_h3 {
        return Err(FieldError::new(
            format!("{path}.transport_socket"),
            "a QuicUpstreamTransport needs http3_protocol_options in explicit_http_config or auto_config",
        ));
    }
    let options = cluster
        .typed_extension_protocol_options
        .as_ref()
        .and_then(|m| m.http.as_ref());
    let explicit = options
        .and_then(|o| o.explicit_http_config.as_ref())
        .and_then(|e| e.http3_protocol_options.as_ref());
    let auto = options.and_then(|o| o.auto_config.as_ref());
    let h3 = explicit.or_else(|| auto.and_then(|a| a.http3_protocol_options.as_ref()));
    let mut settings = Http3Settings::default();
    overlay(
        &mut settings,
        h3.and_then(|o| o.quic_protocol_options.as_ref()),
    );
    let mut hints = Vec::new();
    if protocol == UpstreamProtocol::AutoHttp3 {
        let Some(cache) = auto.and_then(|a| a.alternate_protocols_cache_options.as_ref()) else {
            return Err(FieldError::new(
                format!(
                    "{path}.typed_extension_protocol_options.{}.auto_config.alternate_protocols_cache_options",
                    super::typed::type_names::HTTP_PROTOCOL_OPTIONS
                ),
                "auto_config with http3_protocol_options needs alternate_protocols_cache_options (as in Envoy)",
            ));
        };
        hints = cache
            .prepopulated_entries
            .iter()
            .map(|e| (e.hostname.to_ascii_lowercase(), e.port))
            .collect();
    }
    Ok((settings, hints))
}
