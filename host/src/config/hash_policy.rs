//! `route.hash_policy[]`: what a RING_HASH or MAGLEV cluster hashes a request by (Envoy's
//! `config.route.v3.RouteAction.HashPolicy`).

use super::duration::ConfigDuration;
use serde::Deserialize;

/// One `hash_policy[]` entry: exactly one of the kinds, and `terminal`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashPolicy {
    /// Hash a request header's value.
    #[serde(default)]
    pub header: Option<HeaderHash>,
    /// Hash a cookie's value; with `ttl`, a missing cookie is generated and set.
    #[serde(default)]
    pub cookie: Option<CookieHash>,
    /// Hash a property of the downstream connection.
    #[serde(default)]
    pub connection_properties: Option<ConnectionPropertiesHash>,
    /// Hash a query parameter's value.
    #[serde(default)]
    pub query_parameter: Option<QueryParameterHash>,
    /// Hash a filter state object; weir has no filter state, so it never yields a hash.
    #[serde(default)]
    pub filter_state: Option<FilterStateHash>,
    /// When this entry yields a hash, the entries after it are not evaluated.
    #[serde(default)]
    pub terminal: bool,
}

/// `hash_policy[].header`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderHash {
    /// The header.
    pub header_name: String,
}

/// `hash_policy[].cookie`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieHash {
    /// The cookie.
    pub name: String,
    /// Lifetime of a generated cookie; without it, a missing cookie yields no hash.
    #[serde(default)]
    pub ttl: Option<ConfigDuration>,
    /// `Path` of a generated cookie.
    #[serde(default)]
    pub path: Option<String>,
}

/// `hash_policy[].connection_properties`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPropertiesHash {
    /// Hash the downstream peer's IP address.
    #[serde(default)]
    pub source_ip: bool,
}

/// `hash_policy[].query_parameter`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParameterHash {
    /// The parameter.
    pub name: String,
}

/// `hash_policy[].filter_state`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterStateHash {
    /// The filter state key.
    pub key: String,
}
