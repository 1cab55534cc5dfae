//! `route_config`: virtual hosts, routes, matchers and actions, with Envoy's field names.
//!
//! This module is the schema only; [`crate::route::RouteTable`] checks it (regexes, cluster
//! names, redirects) and builds itself from it.

use super::common::{DataSource, EmptyConfig, HeaderValueOption};
use super::duration::ConfigDuration;
use serde::Deserialize;

/// `route_config`.
#[derive(Debug, Clone, Deserialize, Default)]
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
    /// Headers removed from every response.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub response_headers_to_remove: Vec<String>,
    /// Headers added to every request sent upstream.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from every request sent upstream.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub request_headers_to_remove: Vec<String>,
    /// Headers removed from requests of external clients (every client: weir has no
    /// internal addresses) before anything sees them.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub internal_only_headers: Vec<String>,
    /// Apply the header rules from the least specific level to the most specific (route
    /// last, so its rules win) instead of Envoy's default, route first.
    #[serde(default)]
    pub most_specific_header_mutations_wins: bool,
    /// Pick the virtual host by the host without its port (default false).
    #[serde(default)]
    pub ignore_port_in_host_matching: bool,
    /// The most bytes a `direct_response` body may hold (Envoy's default 4096).
    #[serde(default)]
    pub max_direct_response_body_size_bytes: Option<u32>,
    /// Check that the clusters routes name exist when the table is built (Envoy's default:
    /// yes for an inline `route_config`, no for one from RDS, whose requests to a missing
    /// cluster get `cluster_not_found_response_code` instead).
    #[serde(default)]
    pub validate_clusters: Option<bool>,
    /// `typed_per_filter_config`: per HTTP filter name, whether it runs for the requests
    /// this level takes (see [`super::per_filter`]).
    #[serde(default)]
    pub typed_per_filter_config: super::per_filter::PerFilterConfig,
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
    /// Headers removed from every response of this virtual host.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub response_headers_to_remove: Vec<String>,
    /// Headers added to every request of this virtual host sent upstream.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from every request of this virtual host sent upstream.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub request_headers_to_remove: Vec<String>,
    /// Requests not made over TLS (by `x-forwarded-proto`) get a 301 to `https://`.
    #[serde(default)]
    pub require_tls: TlsRequirementType,
    /// Retries of the routes that have no `retry_policy` of their own.
    #[serde(default)]
    pub retry_policy: Option<RetryPolicy>,
    /// Upstream requests carry `x-envoy-attempt-count` (1 on the first try).
    #[serde(default)]
    pub include_request_attempt_count: bool,
    /// `typed_per_filter_config`: per HTTP filter name, whether it runs for the requests
    /// this level takes (see [`super::per_filter`]).
    #[serde(default)]
    pub typed_per_filter_config: super::per_filter::PerFilterConfig,
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
    /// Headers added to the request sent upstream.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from the request sent upstream.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub request_headers_to_remove: Vec<String>,
    /// Headers added to the response.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from the response.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub response_headers_to_remove: Vec<String>,
    /// `typed_per_filter_config`: per HTTP filter name, whether it runs for the requests
    /// this level takes (see [`super::per_filter`]).
    #[serde(default)]
    pub typed_per_filter_config: super::per_filter::PerFilterConfig,
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
    /// Copies of the request sent to other clusters, their answers ignored.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub request_mirror_policies: Vec<RequestMirrorPolicy>,
    /// Retries of this route (in place of its virtual host's).
    #[serde(default)]
    pub retry_policy: Option<RetryPolicy>,
    /// What a RING_HASH or MAGLEV cluster hashes the request by.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub hash_policy: Vec<super::hash_policy::HashPolicy>,
}

/// `request_mirror_policies[]` of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMirrorPolicy {
    /// The cluster the copy goes to.
    pub cluster: String,
    /// The share of requests copied (all when absent); the runtime key is not read.
    #[serde(default)]
    pub runtime_fraction: Option<RuntimeFractionalPercent>,
    /// Accepted; weir has no tracing, so it changes nothing.
    #[serde(default)]
    pub trace_sampled: Option<bool>,
}

/// `config.core.v3.RuntimeFractionalPercent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFractionalPercent {
    /// The share.
    pub default_value: FractionalPercent,
    /// Accepted and not read (weir's runtime has no such keys).
    #[serde(default)]
    pub runtime_key: Option<String>,
}

/// `type.v3.FractionalPercent`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FractionalPercent {
    /// The numerator.
    #[serde(default)]
    pub numerator: u32,
    /// Over HUNDRED (default), TEN_THOUSAND or MILLION.
    #[serde(default)]
    pub denominator: FractionalDenominator,
}

/// `FractionalPercent.denominator`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum FractionalDenominator {
    /// 100.
    #[default]
    HUNDRED,
    /// 10,000.
    TEN_THOUSAND,
    /// 1,000,000.
    MILLION,
}

/// `retry_policy` of a route or virtual host (`config.route.v3.RetryPolicy`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// When to retry: a comma list (`5xx`, `gateway-error`, `reset`, `connect-failure`, ...).
    #[serde(default)]
    pub retry_on: Option<String>,
    /// Retries allowed (default 1).
    #[serde(default)]
    pub num_retries: Option<u32>,
    /// Time for each try, within the route's `timeout`.
    #[serde(default)]
    pub per_try_timeout: Option<ConfigDuration>,
    /// Time each try may go without a byte from the upstream.
    #[serde(default)]
    pub per_try_idle_timeout: Option<ConfigDuration>,
    /// The wait between tries.
    #[serde(default)]
    pub retry_back_off: Option<RetryBackOff>,
    /// The statuses `retriable-status-codes` retries.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub retriable_status_codes: Vec<u32>,
    /// Which hosts a retry avoids (`envoy.retry_host_predicates.previous_hosts`).
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub retry_host_predicate: Vec<RetryHostPredicate>,
    /// How many times a retry picks a host again when the predicate rejects one.
    #[serde(default)]
    pub host_selection_retry_max_attempts: Option<i64>,
}

/// `retry_back_off` of a retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBackOff {
    /// The first wait's bound (required by Envoy).
    pub base_interval: ConfigDuration,
    /// The largest wait (default 10 x `base_interval`).
    #[serde(default)]
    pub max_interval: Option<ConfigDuration>,
}

/// `retry_host_predicate[]`: a `name` and its `typed_config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryHostPredicate {
    /// `envoy.retry_host_predicates.previous_hosts`.
    pub name: String,
    /// Its config (`PreviousHostsPredicate` has no field).
    #[serde(default)]
    pub typed_config: Option<serde_yaml_ng::Value>,
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
    /// `typed_per_filter_config`: per HTTP filter name, whether it runs for the requests
    /// this level takes (see [`super::per_filter`]).
    #[serde(default)]
    pub typed_per_filter_config: super::per_filter::PerFilterConfig,
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
