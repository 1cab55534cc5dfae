//! Virtual hosts and routes: which route a request takes.
//!
//! A [`RouteTable`] is built once per config from `route_config`, with every regex compiled and
//! every cluster reference checked, so matching a request does no parsing and cannot fail.
//! Virtual hosts are found as Envoy finds them: an exact domain first, then the longest
//! `*.suffix` wildcard, then the longest `prefix.*` wildcard, then `*`. Within a virtual host,
//! the first route whose match accepts the request wins. The host is compared with its port,
//! as Envoy compares it: `example.com:8080` matches the domain `example.com:8080` (or a
//! wildcard), not `example.com`, unless `ignore_port_in_host_matching` is set or the
//! connection manager strips ports first (see [`authority::StripPort`]).

pub mod authority;
pub mod hash;
pub mod header_rules;
pub mod health_check;
mod matcher;
pub mod mirror;
pub mod path;
pub mod per_filter;
pub mod redirect;
pub mod regex;
pub mod response_headers;
pub mod retry;
pub mod shared;
pub mod split;

use crate::access_log::format::LogContext;
use crate::config::FieldError;
use crate::config::cluster_names::ClusterNames;
use crate::config::schema::{self, RouteConfiguration};
use bytes::Bytes;
use header_rules::{Direction, HeaderRules};
use http::HeaderMap;
pub use matcher::{HeaderMatcher, PathMatcher, QueryMatcher, is_grpc};
use redirect::Redirect;
use split::{ClusterChoice, WeightedClusters};
use std::collections::HashMap;
use std::time::Duration;

/// Default upstream response timeout of a route (Envoy's).
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Every virtual host of one connection manager.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    virtual_hosts: Vec<VirtualHost>,
    exact: HashMap<String, usize>,
    /// `*.example.com` as (".example.com"-style suffix, host index), longest first.
    suffixes: Vec<(String, usize)>,
    /// `www.example.*` as ("www.example."-style prefix, host index), longest first.
    prefixes: Vec<(String, usize)>,
    catch_all: Option<usize>,
    /// `route_config.request_headers_to_add` / `_to_remove`.
    request_rules: HeaderRules,
    /// `route_config.response_headers_to_add` / `_to_remove`.
    response_rules: HeaderRules,
    /// `most_specific_header_mutations_wins`: the levels' rules run route configuration
    /// first, route last (Envoy's default is the reverse: the route configuration's last).
    most_specific_wins: bool,
    /// `internal_only_headers`, removed from every request as it comes.
    internal_only: Vec<http::HeaderName>,
    /// The request headers some level's response rules read (`%REQ(x)%`), which a request
    /// keeps for its response with its start and protocol; `None` when no response rule
    /// reads any of those.
    response_reads: Option<Vec<http::HeaderName>>,
    /// `route_config.ignore_port_in_host_matching`: the host's port is ignored when the
    /// virtual host is picked.
    ignore_port: bool,
    /// Some virtual host has `require_tls` (otherwise nothing needs checking).
    any_require_tls: bool,
    /// Some level (route configuration, virtual host, route) has response header rules.
    any_response_rules: bool,
    /// Some route turns an HTTP filter off or on (`typed_per_filter_config`): only then is
    /// the route looked up for it before the filters run.
    any_filter_overrides: bool,
}

/// A virtual host of one [`RouteTable`], by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualHostId(usize);

/// One virtual host.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    /// Its name.
    pub name: String,
    /// Its routes, in order.
    pub routes: Vec<Route>,
    /// `request_headers_to_add` / `_to_remove` of the virtual host.
    pub request_rules: HeaderRules,
    /// `response_headers_to_add` / `_to_remove` of the virtual host.
    pub response_rules: HeaderRules,
    /// `require_tls` is EXTERNAL_ONLY or ALL: a request whose `x-forwarded-proto` is not
    /// `https` gets a 301 to `https://` (weir has no internal addresses, so both are the same,
    /// as in Envoy 1.40 without `internal_address_config`).
    pub require_tls: bool,
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its name, if given.
    pub name: Option<String>,
    /// What the path must look like.
    pub path: PathMatcher,
    /// Headers that must match, all of them.
    pub headers: Vec<HeaderMatcher>,
    /// Query parameters that must match, all of them.
    pub query: Vec<QueryMatcher>,
    /// Only gRPC requests (`match.grpc`).
    pub grpc: bool,
    /// What happens to a matched request.
    pub action: RouteAction,
    /// `request_headers_to_add` / `_to_remove` of the route.
    pub request_rules: HeaderRules,
    /// `response_headers_to_add` / `_to_remove` of the route.
    pub response_rules: HeaderRules,
    /// `route.request_mirror_policies`.
    pub mirrors: Vec<mirror::MirrorPolicy>,
    /// The HTTP filters `typed_per_filter_config` turns off or on for this route (merged
    /// with its virtual host's and route configuration's).
    pub filters: per_filter::FilterOverrides,
}

/// A route of one [`RouteTable`], by position: how a response finds its route's rules once
/// the request is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteId {
    vhost: usize,
    route: usize,
}

impl RouteId {
    /// The route's virtual host.
    pub fn virtual_host(self) -> VirtualHostId {
        VirtualHostId(self.vhost)
    }
}

/// What a route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to a cluster.
    Forward(ForwardAction),
    /// Answer locally.
    Direct {
        /// Status code.
        status: http::StatusCode,
        /// Body.
        body: Bytes,
    },
    /// Answer with a redirect.
    Redirect(Redirect),
}

/// `route` of a route: where and how to forward.
#[derive(Debug, Clone)]
pub struct ForwardAction {
    /// The cluster: the one `cluster` names; with `weighted_clusters` or `cluster_header`,
    /// the one [`ForwardAction::for_request`] picked (before that: the first weighted
    /// cluster, or none).
    pub cluster: String,
    /// `weighted_clusters` or `cluster_header`: the cluster is picked per request (shared,
    /// so that the per-request copy of the action does not copy it).
    pub choice: Option<std::sync::Arc<ClusterChoice>>,
    /// Headers added to the upstream request: the picked weighted cluster's
    /// `request_headers_to_add` (set by [`ForwardAction::for_request`]).
    pub request_headers: Vec<response_headers::HeaderToAdd>,
    /// The status when the cluster does not exist (`cluster_not_found_response_code`).
    pub cluster_not_found: http::StatusCode,
    /// `cluster` was not among the config's clusters when the table was built (a route
    /// from RDS, whose clusters are not checked): the router checks it per request.
    pub cluster_unchecked: bool,
    /// Replaces the matched part of the path.
    pub prefix_rewrite: Option<String>,
    /// Rewrites the path (not the query) by a regex.
    pub regex_rewrite: Option<regex::PathRegexRewrite>,
    /// Replaces the host.
    pub host_rewrite: Option<http::HeaderValue>,
    /// Replaces the host with this request header's value, when it has a non-empty one.
    pub host_rewrite_header: Option<http::HeaderName>,
    /// `auto_host_rewrite`: the host becomes the DNS name of the upstream host picked (see
    /// [`crate::upstream::AutoHostRewrite`]).
    pub auto_host_rewrite: bool,
    /// Time for the upstream to answer; `None` = no limit.
    pub timeout: Option<Duration>,
    /// `idle_timeout`: the stream idle timeout of this route's streams in place of the
    /// connection manager's `stream_idle_timeout` (`Some(None)`: none at all); `None` keeps
    /// the connection manager's.
    pub idle_timeout: Option<Option<Duration>>,
    /// Per-route upgrade overrides.
    pub upgrades: Vec<RouteUpgrade>,
    /// `retry_policy` of the route, else of its virtual host; `None`: one try.
    pub retry: Option<std::sync::Arc<retry::RetryPolicy>>,
    /// The virtual host's `include_request_attempt_count`.
    pub include_attempt_count: bool,
    /// `hash_policy`: what a RING_HASH or MAGLEV cluster hashes the request by (shared, so
    /// that the per-request copy of the action does not copy it).
    pub hash_policy: Option<std::sync::Arc<[hash::HashRule]>>,
}

/// In a request's extensions: the cluster a `weighted_clusters` or `cluster_header` route
/// picked for it when the HTTP filters were shown its route (`cluster_name`); the router keeps
/// that pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickedCluster(pub String);

/// One `upgrade_configs[]` entry of a route.
#[derive(Debug, Clone)]
pub struct RouteUpgrade {
    /// The upgrade type, lowercased (`connect` for CONNECT).
    pub upgrade_type: String,
    /// Allowed on this route.
    pub enabled: bool,
    /// CONNECT only: terminate here (open TCP to the cluster) instead of proxying.
    pub terminate: Option<TerminateConnect>,
}

/// `connect_config`: weir ends the tunnel and speaks raw TCP to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminateConnect {
    /// POST requests are tunnels too (their body is the payload).
    pub allow_post: bool,
}

impl ForwardAction {
    /// This action for one request with `headers`: itself, or, where it picks its cluster per
    /// request, a copy naming the cluster picked (empty when `cluster_header` names none).
    /// A request that carries a [`PickedCluster`] (the HTTP filters' view of its route) keeps
    /// that pick, so that a weighted route sends where the filters were told it would.
    pub fn for_request(
        &self,
        headers: &HeaderMap,
        picked: Option<&PickedCluster>,
    ) -> std::borrow::Cow<'_, ForwardAction> {
        match &self.choice {
            None => std::borrow::Cow::Borrowed(self),
            Some(choice) => {
                let (cluster, adds) = picked
                    .and_then(|picked| choice.repick(&picked.0))
                    .unwrap_or_else(|| choice.pick(headers));
                let mut action = self.clone();
                action.cluster = cluster.to_string();
                action.request_headers = adds.to_vec();
                action.choice = None;
                std::borrow::Cow::Owned(action)
            }
        }
    }

    /// The route's override for `upgrade_type`, if it has one.
    pub fn upgrade(&self, upgrade_type: &str) -> Option<&RouteUpgrade> {
        self.upgrades
            .iter()
            .find(|u| u.upgrade_type.eq_ignore_ascii_case(upgrade_type))
    }
}

impl RouteTable {
    /// Builds the table from `route_config` at `path`, checking that every cluster a route
    /// names is one of `clusters` unless `validate_clusters: false` says not to.
    pub fn build(
        config: &RouteConfiguration,
        path: &str,
        clusters: &ClusterNames,
    ) -> Result<RouteTable, FieldError> {
        let validate = config.validate_clusters.unwrap_or(true);
        RouteTable::build_validating(config, path, clusters, validate)
    }

    /// Builds the table from `route_config` at `path`; with `validate_clusters`, every
    /// cluster a route names must be one of `clusters`. Without, a route may name a cluster
    /// that is not there (Envoy's rule for RDS, whose clusters may come later): a request it
    /// takes gets the route's `cluster_not_found_response_code` (`NC`, as Envoy).
    pub fn build_validating(
        config: &RouteConfiguration,
        path: &str,
        clusters: &ClusterNames,
        validate_clusters: bool,
    ) -> Result<RouteTable, FieldError> {
        RouteTable::build_validating_reusing(config, path, clusters, validate_clusters, &|_, _| {
            None
        })
    }

    /// [`RouteTable::build_validating`] where `reuse(v, r)` may give the built route of
    /// `virtual_hosts[v].routes[r]` (one built before from the same route, in a virtual host
    /// and route configuration with the same fields, with the same `clusters` and
    /// `validate_clusters`): that route is taken as it is rather than built again. An xDS
    /// route update reuses the routes it did not change this way (`xds::route_reuse`).
    pub fn build_validating_reusing(
        config: &RouteConfiguration,
        path: &str,
        clusters: &ClusterNames,
        validate_clusters: bool,
        reuse: &dyn Fn(usize, usize) -> Option<Route>,
    ) -> Result<RouteTable, FieldError> {
        if validate_clusters {
            return RouteTable::build_checked(config, path, clusters, reuse);
        }
        let named = named_clusters(config);
        let known = clusters.with(named.iter().map(String::as_str));
        let mut table = RouteTable::build_checked(config, path, &known, reuse)?;
        for vhost in &mut table.virtual_hosts {
            for route in &mut vhost.routes {
                if let RouteAction::Forward(action) = &mut route.action
                    && action.choice.is_none()
                    && !clusters.contains(&action.cluster)
                {
                    action.cluster_unchecked = true;
                }
            }
        }
        Ok(table)
    }

    /// [`RouteTable::build_validating`], checking every cluster name against `clusters`.
    fn build_checked(
        config: &RouteConfiguration,
        path: &str,
        clusters: &ClusterNames,
        reuse: &dyn Fn(usize, usize) -> Option<Route>,
    ) -> Result<RouteTable, FieldError> {
        let mut table = RouteTable {
            ignore_port: config.ignore_port_in_host_matching,
            any_require_tls: config
                .virtual_hosts
                .iter()
                .any(|v| v.require_tls != schema::TlsRequirementType::NONE),
            ..RouteTable::default()
        };
        let body_limit = config
            .max_direct_response_body_size_bytes
            .unwrap_or(DEFAULT_MAX_DIRECT_RESPONSE_BODY_BYTES);
        for (i, vhost) in config.virtual_hosts.iter().enumerate() {
            let vhost_path = format!("{path}.virtual_hosts[{i}]");
            for (d, domain) in vhost.domains.iter().enumerate() {
                let domain = domain.to_ascii_lowercase();
                let domain_path = format!("{vhost_path}.domains[{d}]");
                let duplicate = if domain == "*" {
                    table.catch_all.replace(i).is_some()
                } else if let Some(suffix) = domain.strip_prefix('*') {
                    if suffix.is_empty() || suffix.contains('*') {
                        return Err(FieldError::new(
                            domain_path,
                            "a wildcard domain has one leading or trailing *",
                        ));
                    }
                    push_unique(&mut table.suffixes, suffix, i)
                } else if let Some(prefix) = domain.strip_suffix('*') {
                    if prefix.contains('*') {
                        return Err(FieldError::new(
                            domain_path,
                            "a wildcard domain has one leading or trailing *",
                        ));
                    }
                    push_unique(&mut table.prefixes, prefix, i)
                } else if domain.contains('*') {
                    return Err(FieldError::new(
                        domain_path,
                        "a wildcard domain has one leading or trailing *",
                    ));
                } else {
                    table.exact.insert(domain.clone(), i).is_some()
                };
                if duplicate {
                    return Err(FieldError::new(
                        domain_path,
                        format!("domain {domain:?} appears in more than one virtual host"),
                    ));
                }
            }
            let retry = match &vhost.retry_policy {
                Some(policy) => Some(std::sync::Arc::new(retry::RetryPolicy::build(
                    policy,
                    &format!("{vhost_path}.retry_policy"),
                )?)),
                None => None,
            };
            let vhost_forward = VirtualHostForward {
                retry,
                include_attempt_count: vhost.include_request_attempt_count,
            };
            let mut routes = Vec::new();
            for (r, route) in vhost.routes.iter().enumerate() {
                if let Some(built) = reuse(i, r) {
                    table.any_filter_overrides |= !built.filters.is_empty();
                    routes.push(built);
                    continue;
                }
                let mut built = build_route(
                    route,
                    &format!("{vhost_path}.routes[{r}]"),
                    clusters,
                    body_limit,
                    &vhost_forward,
                )?;
                built.filters = per_filter::FilterOverrides::build(
                    &[
                        &config.typed_per_filter_config,
                        &vhost.typed_per_filter_config,
                        &route.typed_per_filter_config,
                    ],
                    route
                        .route
                        .iter()
                        .flat_map(|forward| forward.weighted_clusters.iter())
                        .flat_map(|weighted| weighted.clusters.iter())
                        .map(|cluster| (cluster.name.as_str(), &cluster.typed_per_filter_config)),
                );
                table.any_filter_overrides |= !built.filters.is_empty();
                routes.push(built);
            }
            let (request_rules, response_rules) = level_rules(
                &vhost_path,
                [
                    &vhost.request_headers_to_add,
                    &vhost.response_headers_to_add,
                ],
                [
                    &vhost.request_headers_to_remove,
                    &vhost.response_headers_to_remove,
                ],
            )?;
            table.virtual_hosts.push(VirtualHost {
                name: vhost.name.clone(),
                routes,
                request_rules,
                response_rules,
                require_tls: vhost.require_tls != schema::TlsRequirementType::NONE,
            });
        }
        (table.request_rules, table.response_rules) = level_rules(
            path,
            [
                &config.request_headers_to_add,
                &config.response_headers_to_add,
            ],
            [
                &config.request_headers_to_remove,
                &config.response_headers_to_remove,
            ],
        )?;
        table.most_specific_wins = config.most_specific_header_mutations_wins;
        for (i, name) in config.internal_only_headers.iter().enumerate() {
            table.internal_only.push(header_name(
                name,
                &format!("{path}.internal_only_headers[{i}]"),
            )?);
        }
        table.response_reads = table.collect_response_reads();
        table.any_response_rules = !table.response_rules.is_empty()
            || table.virtual_hosts.iter().any(|vhost| {
                !vhost.response_rules.is_empty()
                    || vhost
                        .routes
                        .iter()
                        .any(|route| !route.response_rules.is_empty())
            });
        table
            .suffixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        table
            .prefixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(table)
    }

    /// The virtual host for `host` (the Host header or :authority), compared with its port
    /// unless `ignore_port_in_host_matching` is set.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        self.virtual_host_index(host)
            .and_then(|i| self.virtual_hosts.get(i))
    }

    fn virtual_host_index(&self, host: &str) -> Option<usize> {
        if self.exact.is_empty() && self.suffixes.is_empty() && self.prefixes.is_empty() {
            // Only `*` (the common front-proxy shape): nothing to compare.
            return self.catch_all;
        }
        let host: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        };
        let host: &str = &host;
        let host = if self.ignore_port {
            authority::strip_port(host).unwrap_or(host)
        } else {
            host
        };
        self.find_host(host).or(self.catch_all)
    }

    fn find_host(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        // A wildcard must stand for at least one character, as in Envoy.
        let suffix = self
            .suffixes
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()));
        if let Some((_, i)) = suffix {
            return Some(*i);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| host.len() > prefix.len() && host.starts_with(prefix.as_str()))
            .map(|(_, i)| *i)
    }

    /// Applies the response header rules of the virtual host for `host` and then of the
    /// route configuration to a response's `headers` (Envoy's order: most specific first),
    /// with no request facts for their values.
    pub fn add_response_headers(&self, vhost: Option<VirtualHostId>, headers: &mut HeaderMap) {
        self.apply_response_rules(vhost, None, headers, &LogContext::default());
    }

    /// The levels' rules for a request of `route` (or, without one, of `vhost`), in the
    /// order they apply: Envoy's, most specific first and the route configuration's last
    /// (so its rules win), or the reverse with `most_specific_header_mutations_wins`.
    fn levels(
        &self,
        vhost: Option<VirtualHostId>,
        route: Option<RouteId>,
        pick: for<'a> fn(Level<'a>) -> &'a HeaderRules,
    ) -> [Option<&HeaderRules>; 3] {
        let vhost_index = route.map(|r| r.vhost).or(vhost.map(|VirtualHostId(i)| i));
        let vhost = vhost_index.and_then(|i| self.virtual_hosts.get(i));
        let route = route.and_then(|r| vhost.and_then(|v| v.routes.get(r.route)));
        let most = route.map(|r| pick(Level::Route(r)));
        let middle = vhost.map(|v| pick(Level::VirtualHost(v)));
        let least = Some(pick(Level::Table(self)));
        if self.most_specific_wins {
            [least, middle, most]
        } else {
            [most, middle, least]
        }
    }

    /// Applies the request header rules of `route`, its virtual host and the route
    /// configuration to a request's `headers`; `cx` fills in values with operators.
    pub fn apply_request_rules(
        &self,
        route: RouteId,
        headers: &mut HeaderMap,
        cx: &LogContext<'_>,
    ) {
        for rules in self
            .levels(None, Some(route), request_rules)
            .into_iter()
            .flatten()
        {
            if !rules.is_empty() {
                rules.apply(headers, cx, Direction::Request);
            }
        }
    }

    /// Applies the response header rules of `route` (when the request had one; otherwise
    /// of `vhost`, when it had one) and the route configuration to a response's `headers`.
    pub fn apply_response_rules(
        &self,
        vhost: Option<VirtualHostId>,
        route: Option<RouteId>,
        headers: &mut HeaderMap,
        cx: &LogContext<'_>,
    ) {
        for rules in self
            .levels(vhost, route, response_rules)
            .into_iter()
            .flatten()
        {
            if !rules.is_empty() {
                rules.apply(headers, cx, Direction::Response);
            }
        }
    }

    /// Whether a request of `route` has header rules to apply (at any level): without, the
    /// connection manager skips building their context.
    pub fn has_request_rules(&self, route: RouteId) -> bool {
        self.levels(None, Some(route), request_rules)
            .into_iter()
            .flatten()
            .any(|rules| !rules.is_empty())
    }

    /// Whether a response of `route` (or, without one, of `vhost`) has header rules to apply.
    pub fn has_response_rules(&self, vhost: Option<VirtualHostId>, route: Option<RouteId>) -> bool {
        self.levels(vhost, route, response_rules)
            .into_iter()
            .flatten()
            .any(|rules| !rules.is_empty())
    }

    /// `internal_only_headers`: removed from every request as it comes (weir has no
    /// internal addresses, so every client is external, as Envoy 1.40's default).
    pub fn internal_only_headers(&self) -> &[http::HeaderName] {
        &self.internal_only
    }

    /// Whether some level has response header rules (else no response needs its route).
    pub fn any_response_rules(&self) -> bool {
        self.any_response_rules
    }

    /// The request headers a response's rules read (`%REQ(x)%`), if any does.
    pub fn response_reads(&self) -> Option<&[http::HeaderName]> {
        self.response_reads.as_deref()
    }

    fn collect_response_reads(&self) -> Option<Vec<http::HeaderName>> {
        let mut all = vec![&self.response_rules];
        for vhost in &self.virtual_hosts {
            all.push(&vhost.response_rules);
            all.extend(vhost.routes.iter().map(|r| &r.response_rules));
        }
        if !all.iter().any(|rules| rules.reads_request()) {
            return None;
        }
        let mut names: Vec<http::HeaderName> = Vec::new();
        for name in all.iter().flat_map(|rules| rules.request_header_names()) {
            if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes())
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
        Some(names)
    }

    /// Whether some route turns an HTTP filter off or on (`typed_per_filter_config`).
    pub fn has_filter_overrides(&self) -> bool {
        self.any_filter_overrides
    }

    /// The route `virtual_hosts[vhost].routes[route]`, as built.
    pub fn route_at(&self, vhost: usize, route: usize) -> Option<&Route> {
        self.virtual_hosts.get(vhost)?.routes.get(route)
    }

    /// The route `id` names.
    pub fn route(&self, id: RouteId) -> Option<&Route> {
        self.virtual_hosts.get(id.vhost)?.routes.get(id.route)
    }

    /// The virtual host a request for `host` (its authority or Host header) belongs to, as
    /// an id to pass to [`RouteTable::add_response_headers`] once the response is there: the
    /// request itself is gone by then, and an id needs no copy of its host.
    pub fn virtual_host_id(&self, host: &str) -> Option<VirtualHostId> {
        self.virtual_host_index(host).map(VirtualHostId)
    }

    /// Whether a request for `host` whose `x-forwarded-proto` (as the connection manager
    /// leaves it) is `forwarded_proto` must be redirected to `https://` (`require_tls`). As in
    /// Envoy, this comes before any route is matched.
    pub fn requires_tls(&self, host: &str, forwarded_proto: &str) -> bool {
        self.any_require_tls
            && forwarded_proto != "https"
            && self.virtual_host(host).is_some_and(|v| v.require_tls)
    }

    /// The route for a request: its virtual host by `host`, then the first route matching
    /// `path` (with query) and `headers`.
    pub fn find(&self, host: &str, path: &str, headers: &HeaderMap) -> Option<&Route> {
        self.find_request(host, false, path, headers)
    }

    /// As [`RouteTable::find`], for a CONNECT request (`is_connect`: only `connect_matcher`
    /// routes take it) or any other.
    pub fn find_request(
        &self,
        host: &str,
        is_connect: bool,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<&Route> {
        self.find_request_id(host, is_connect, path, headers)
            .map(|(_, route)| route)
    }

    /// As [`RouteTable::find_request`], with the route's id.
    pub fn find_request_id(
        &self,
        host: &str,
        is_connect: bool,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<(RouteId, &Route)> {
        let vhost = self.virtual_host_index(host)?;
        let routes = &self.virtual_hosts.get(vhost)?.routes;
        routes
            .iter()
            .position(|route| {
                route.path.matches_request(is_connect, path)
                    && route.headers.iter().all(|h| h.matches(headers))
                    && route.query.iter().all(|q| q.matches(path))
                    && (!route.grpc || is_grpc(headers))
            })
            .and_then(|i| Some((RouteId { vhost, route: i }, routes.get(i)?)))
    }
}

/// One level of header rules.
enum Level<'a> {
    Route(&'a Route),
    VirtualHost(&'a VirtualHost),
    Table(&'a RouteTable),
}

/// A level's request rules.
fn request_rules(level: Level<'_>) -> &HeaderRules {
    match level {
        Level::Route(r) => &r.request_rules,
        Level::VirtualHost(v) => &v.request_rules,
        Level::Table(t) => &t.request_rules,
    }
}

/// A level's response rules.
fn response_rules(level: Level<'_>) -> &HeaderRules {
    match level {
        Level::Route(r) => &r.response_rules,
        Level::VirtualHost(v) => &v.response_rules,
        Level::Table(t) => &t.response_rules,
    }
}

/// The request and response rules of one level at `path`: `adds` and `removes` are the
/// request's then the response's fields.
fn level_rules(
    path: &str,
    adds: [&[schema::HeaderValueOption]; 2],
    removes: [&[String]; 2],
) -> Result<(HeaderRules, HeaderRules), FieldError> {
    // Most levels of a large table have no rules: their four field paths are not written
    // out for nothing (a thousand routes' worth is most of a route update's build).
    if adds.iter().all(|adds| adds.is_empty()) && removes.iter().all(|removes| removes.is_empty()) {
        return Ok((HeaderRules::default(), HeaderRules::default()));
    }
    let request = HeaderRules::build(
        adds[0],
        removes[0],
        Direction::Request,
        &format!("{path}.request_headers_to_add"),
        &format!("{path}.request_headers_to_remove"),
    )?;
    let response = HeaderRules::build(
        adds[1],
        removes[1],
        Direction::Response,
        &format!("{path}.response_headers_to_add"),
        &format!("{path}.response_headers_to_remove"),
    )?;
    Ok((request, response))
}

fn push_unique(list: &mut Vec<(String, usize)>, key: &str, index: usize) -> bool {
    if list.iter().any(|(existing, _)| existing == key) {
        return true;
    }
    list.push((key.to_string(), index));
    false
}

/// What a virtual host gives each of its forwarding routes.
#[derive(Default)]
struct VirtualHostForward {
    /// Its `retry_policy`, for routes without their own.
    retry: Option<std::sync::Arc<retry::RetryPolicy>>,
    /// `include_request_attempt_count`.
    include_attempt_count: bool,
}

/// One route at `path`; `body_limit` bounds a `direct_response` body.
fn build_route(
    route: &schema::Route,
    path: &str,
    clusters: &ClusterNames,
    body_limit: u32,
    vhost: &VirtualHostForward,
) -> Result<Route, FieldError> {
    let path_matcher = PathMatcher::build(&route.route_match, &format!("{path}.match"))?;
    let mut headers = Vec::new();
    for (h, header) in route.route_match.headers.iter().enumerate() {
        headers.push(HeaderMatcher::build(
            header,
            &format!("{path}.match.headers[{h}]"),
        )?);
    }
    let mut query = Vec::new();
    for (q, parameter) in route.route_match.query_parameters.iter().enumerate() {
        query.push(QueryMatcher::build(
            parameter,
            &format!("{path}.match.query_parameters[{q}]"),
        )?);
    }
    let action = match (&route.route, &route.direct_response, &route.redirect) {
        (Some(forward), None, None) => {
            let mut action = build_forward(forward, &format!("{path}.route"), clusters)?;
            // The route's own policy wins over its virtual host's, whole (as Envoy).
            if action.retry.is_none() {
                action.retry.clone_from(&vhost.retry);
            }
            action.include_attempt_count = vhost.include_attempt_count;
            RouteAction::Forward(action)
        }
        (None, Some(direct), None) => {
            let status = http::StatusCode::from_u16(direct.status)
                .ok()
                .filter(|s| (200..=599).contains(&s.as_u16()))
                .ok_or_else(|| {
                    FieldError::new(
                        format!("{path}.direct_response.status"),
                        "expected 200..=599",
                    )
                })?;
            let body = match &direct.body {
                None => Bytes::new(),
                Some(source) => {
                    data_source(source, &format!("{path}.direct_response.body"), body_limit)?
                }
            };
            RouteAction::Direct { status, body }
        }
        (None, None, Some(redirect)) => {
            RouteAction::Redirect(Redirect::build(redirect, &format!("{path}.redirect"))?)
        }
        _ => {
            return Err(FieldError::new(
                path,
                "a route needs exactly one of `route`, `redirect` and `direct_response`",
            ));
        }
    };
    let (request_rules, response_rules) = level_rules(
        path,
        [
            &route.request_headers_to_add,
            &route.response_headers_to_add,
        ],
        [
            &route.request_headers_to_remove,
            &route.response_headers_to_remove,
        ],
    )?;
    let mirrors = match &route.route {
        Some(forward) => forward
            .request_mirror_policies
            .iter()
            .enumerate()
            .map(|(m, policy)| {
                mirror::MirrorPolicy::build(
                    policy,
                    &format!("{path}.route.request_mirror_policies[{m}]"),
                    clusters,
                )
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok(Route {
        name: route.name.clone(),
        path: path_matcher,
        headers,
        query,
        grpc: route.route_match.grpc.is_some(),
        action,
        request_rules,
        response_rules,
        mirrors,
        filters: per_filter::FilterOverrides::default(),
    })
}

/// Every cluster the routes of `config` name (`cluster`, `weighted_clusters`).
fn named_clusters(config: &RouteConfiguration) -> Vec<String> {
    let actions = config
        .virtual_hosts
        .iter()
        .flat_map(|vhost| vhost.routes.iter())
        .filter_map(|route| route.route.as_ref());
    let mut names = Vec::new();
    for action in actions {
        names.extend(action.cluster.iter().cloned());
        if let Some(weighted) = &action.weighted_clusters {
            names.extend(weighted.clusters.iter().map(|c| c.name.clone()));
        }
    }
    names
}

/// The `route` action at `path`, its clusters checked against `clusters`.
fn build_forward(
    forward: &schema::RouteAction,
    path: &str,
    clusters: &ClusterNames,
) -> Result<ForwardAction, FieldError> {
    let (cluster, choice) = match (
        &forward.cluster,
        &forward.weighted_clusters,
        &forward.cluster_header,
    ) {
        (Some(cluster), None, None) => {
            if !clusters.contains(cluster) {
                return Err(FieldError::new(
                    format!("{path}.cluster"),
                    format!("unknown cluster {cluster:?}; defined clusters: {clusters:?}"),
                ));
            }
            (cluster.clone(), None)
        }
        (None, Some(weighted), None) => {
            let weighted =
                WeightedClusters::build(weighted, &format!("{path}.weighted_clusters"), clusters)?;
            (
                weighted.first().to_string(),
                Some(std::sync::Arc::new(ClusterChoice::Weighted(weighted))),
            )
        }
        (None, None, Some(header)) => {
            let name = header_name(header, &format!("{path}.cluster_header"))?;
            (
                String::new(),
                Some(std::sync::Arc::new(ClusterChoice::Header(name))),
            )
        }
        _ => {
            return Err(FieldError::new(
                path,
                "set exactly one of cluster, weighted_clusters and cluster_header",
            ));
        }
    };
    let host_rewrites = [
        forward.host_rewrite_literal.is_some(),
        forward.host_rewrite_header.is_some(),
        forward.auto_host_rewrite.is_some(),
    ];
    if host_rewrites.iter().filter(|set| **set).count() > 1 {
        return Err(FieldError::new(
            path,
            "set at most one of host_rewrite_literal, host_rewrite_header and auto_host_rewrite",
        ));
    }
    let host_rewrite = match &forward.host_rewrite_literal {
        Some(host) => Some(http::HeaderValue::from_str(host).map_err(|_| {
            FieldError::new(
                format!("{path}.host_rewrite_literal"),
                "not a valid header value",
            )
        })?),
        None => None,
    };
    let host_rewrite_header = match &forward.host_rewrite_header {
        Some(header) => Some(header_name(header, &format!("{path}.host_rewrite_header"))?),
        None => None,
    };
    if let Some(rewrite) = &forward.prefix_rewrite
        && !rewrite.starts_with('/')
        && !rewrite.is_empty()
    {
        // Envoy allows this, but a path that does not start with '/' is not a valid
        // origin-form request target for the upstream.
        return Err(FieldError::new(
            format!("{path}.prefix_rewrite"),
            "must start with '/'",
        ));
    }
    if forward.prefix_rewrite.is_some() && forward.regex_rewrite.is_some() {
        return Err(FieldError::new(
            path,
            "set at most one of prefix_rewrite and regex_rewrite",
        ));
    }
    let regex_rewrite = match &forward.regex_rewrite {
        Some(rewrite) => Some(regex::PathRegexRewrite::build(
            rewrite,
            &format!("{path}.regex_rewrite"),
        )?),
        None => None,
    };
    let retry = match &forward.retry_policy {
        Some(policy) => Some(std::sync::Arc::new(retry::RetryPolicy::build(
            policy,
            &format!("{path}.retry_policy"),
        )?)),
        None => None,
    };
    let hash_policy = if forward.hash_policy.is_empty() {
        Vec::new()
    } else {
        hash::build(&forward.hash_policy, &format!("{path}.hash_policy"))?
    };
    Ok(ForwardAction {
        retry,
        include_attempt_count: false,
        hash_policy: (!hash_policy.is_empty()).then(|| hash_policy.into()),
        cluster,
        choice,
        request_headers: Vec::new(),
        cluster_unchecked: false,
        cluster_not_found: match forward.cluster_not_found_response_code {
            schema::ClusterNotFoundResponseCode::SERVICE_UNAVAILABLE => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            schema::ClusterNotFoundResponseCode::NOT_FOUND => http::StatusCode::NOT_FOUND,
            schema::ClusterNotFoundResponseCode::INTERNAL_SERVER_ERROR => {
                http::StatusCode::INTERNAL_SERVER_ERROR
            }
        },
        prefix_rewrite: forward.prefix_rewrite.clone(),
        regex_rewrite,
        host_rewrite,
        host_rewrite_header,
        auto_host_rewrite: forward.auto_host_rewrite == Some(true),
        timeout: match forward.timeout {
            Some(t) if t.get().is_zero() => None,
            Some(t) => Some(t.get()),
            None => Some(DEFAULT_ROUTE_TIMEOUT),
        },
        idle_timeout: forward
            .idle_timeout
            .map(|t| Some(t.get()).filter(|t| !t.is_zero())),
        upgrades: forward
            .upgrade_configs
            .iter()
            .enumerate()
            .map(|(u, upgrade)| {
                let upgrade_type = upgrade.upgrade_type.to_ascii_lowercase();
                if upgrade.connect_config.is_some() && upgrade_type != "connect" {
                    return Err(FieldError::new(
                        format!("{path}.upgrade_configs[{u}].connect_config"),
                        "connect_config belongs to upgrade_type CONNECT",
                    ));
                }
                Ok(RouteUpgrade {
                    upgrade_type,
                    enabled: upgrade.enabled.unwrap_or(true),
                    terminate: upgrade.connect_config.as_ref().map(|c| TerminateConnect {
                        allow_post: c.allow_post,
                    }),
                })
            })
            .collect::<Result<_, _>>()?,
    })
}

/// A header name from config at `path`, lower-cased.
fn header_name(name: &str, path: &str) -> Result<http::HeaderName, FieldError> {
    http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| FieldError::new(path, "not a valid header name"))
}

/// Envoy's default `max_direct_response_body_size_bytes`: the most bytes a `direct_response`
/// body may hold, inline or from its file.
pub const DEFAULT_MAX_DIRECT_RESPONSE_BODY_BYTES: u32 = 4096;

/// Reads a `DataSource` holding a body of at most `limit` bytes: inline text, or a file read
/// now (a regular file only).
fn data_source(source: &schema::DataSource, path: &str, limit: u32) -> Result<Bytes, FieldError> {
    let body = match (
        &source.inline_string,
        &source.filename,
        &source.inline_bytes,
    ) {
        (Some(text), None, None) => Bytes::from(text.clone()),
        (None, Some(file), None) => crate::config::file::read_limited(file.as_ref(), limit.into())
            .map(Bytes::from)
            .map_err(|e| FieldError::new(format!("{path}.filename"), e))?,
        _ => {
            return Err(FieldError::new(
                path,
                "set exactly one of inline_string and filename",
            ));
        }
    };
    if body.len() as u64 > u64::from(limit) {
        return Err(FieldError::new(
            format!("{path}.inline_string"),
            format!(
                "the body is {} bytes, above max_direct_response_body_size_bytes ({limit})",
                body.len()
            ),
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests;
