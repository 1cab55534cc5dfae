//! A route's `hash_policy`, compiled: the hash a RING_HASH or MAGLEV cluster picks the
//! request's host by, computed as Envoy computes it (xxHash64 of each entry's value, entries
//! combined by rotating the hash so far left by one and xoring the next; a `terminal` entry
//! that yields a hash ends the list), and the cookie to set when a cookie entry with a `ttl`
//! found none.

use crate::config::FieldError;
use crate::config::hash_policy::HashPolicy;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::SocketAddr;
use std::time::Duration;
use xxhash_rust::xxh64::xxh64;

/// One compiled `hash_policy[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashRule {
    source: Input,
    terminal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Input {
    Header(HeaderName),
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: Option<String>,
    },
    SourceIp,
    QueryParameter(String),
    /// weir has no filter state: never a hash.
    FilterState,
}

/// What the hash policy made of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHash {
    /// The hash, where some entry yielded one.
    pub hash: Option<u64>,
    /// A `Set-Cookie` for the response: a cookie entry with a `ttl` generated its cookie.
    pub set_cookie: Option<HeaderValue>,
}

/// Compiles `hash_policy` at `path` (`...route.hash_policy`).
pub fn build(policies: &[HashPolicy], path: &str) -> Result<Vec<HashRule>, FieldError> {
    policies
        .iter()
        .enumerate()
        .map(|(i, policy)| {
            let field = format!("{path}[{i}]");
            let mut sources = Vec::new();
            if let Some(header) = &policy.header {
                let name = HeaderName::try_from(header.header_name.to_ascii_lowercase())
                    .map_err(|_| {
                        FieldError::new(
                            format!("{field}.header.header_name"),
                            "not a valid header name",
                        )
                    })?;
                sources.push(Input::Header(name));
            }
            if let Some(cookie) = &policy.cookie {
                if cookie.name.is_empty() || cookie.name.contains([';', '=', ' ', ',']) {
                    return Err(FieldError::new(
                        format!("{field}.cookie.name"),
                        "not a valid cookie name",
                    ));
                }
                sources.push(Input::Cookie {
                    name: cookie.name.clone(),
                    ttl: cookie.ttl.map(|t| t.get()),
                    path: cookie.path.clone().filter(|p| !p.is_empty()),
                });
            }
            if let Some(connection) = &policy.connection_properties {
                if !connection.source_ip {
                    return Err(FieldError::new(
                        format!("{field}.connection_properties.source_ip"),
                        "must be true (the only connection property)",
                    ));
                }
                sources.push(Input::SourceIp);
            }
            if let Some(query) = &policy.query_parameter {
                sources.push(Input::QueryParameter(query.name.clone()));
            }
            if policy.filter_state.is_some() {
                sources.push(Input::FilterState);
            }
            match <[Input; 1]>::try_from(sources) {
                Ok([source]) => Ok(HashRule {
                    source,
                    terminal: policy.terminal,
                }),
                Err(_) => Err(FieldError::new(
                    field,
                    "set exactly one of header, cookie, connection_properties, query_parameter and filter_state",
                )),
            }
        })
        .collect()
}

/// The hash of a request with `headers` and `query` (the part after `?`, if any) from
/// `remote` to `local`, by `rules`.
pub fn compute(
    rules: &[HashRule],
    headers: &HeaderMap,
    query: Option<&str>,
    remote: SocketAddr,
    local: SocketAddr,
) -> RequestHash {
    let mut out = RequestHash::default();
    for rule in rules {
        let hash = match &rule.source {
            Input::Header(name) => header_hash(headers, name),
            Input::Cookie { name, ttl, path } => match cookie(headers, name) {
                Some(value) => Some(xxh64(value.as_bytes(), 0)),
                None => match ttl {
                    Some(ttl) => {
                        // As Envoy: the value is a hash of the connection's two addresses.
                        let value =
                            format!("{:016x}", xxh64(format!("{remote}{local}").as_bytes(), 0));
                        out.set_cookie = set_cookie(name, &value, *ttl, path.as_deref());
                        Some(xxh64(value.as_bytes(), 0))
                    }
                    None => None,
                },
            },
            Input::SourceIp => Some(xxh64(remote.ip().to_string().as_bytes(), 0)),
            Input::QueryParameter(name) => query
                .and_then(|query| {
                    query
                        .split('&')
                        .find_map(|pair| match pair.split_once('=') {
                            Some((key, value)) if key == name => Some(value),
                            None if pair == name => Some(""),
                            _ => None,
                        })
                })
                .map(|value| xxh64(value.as_bytes(), 0)),
            Input::FilterState => None,
        };
        if let Some(hash) = hash {
            out.hash = Some(match out.hash {
                Some(so_far) => so_far.rotate_left(1) ^ hash,
                None => hash,
            });
            if rule.terminal {
                break;
            }
        }
    }
    out
}

/// The hash of every value of header `name`, as Envoy's: the values sorted (so their order
/// does not matter), each hashed with the previous hash as the seed.
fn header_hash(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    let mut values: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values.iter().fold(0, |seed, value| xxh64(value, seed)))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim_matches('"'))
        })
}

/// Envoy's generated cookie: `name="value"; Max-Age=N; Path=P; HttpOnly`.
fn set_cookie(name: &str, value: &str, ttl: Duration, path: Option<&str>) -> Option<HeaderValue> {
    let mut text = format!("{name}=\"{value}\"");
    if !ttl.is_zero() {
        text.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(path) = path {
        text.push_str(&format!("; Path={path}"));
    }
    text.push_str("; HttpOnly");
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hash_policy::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn rules(yaml: &str) -> Vec<HashRule> {
        let policies: Vec<HashPolicy> = serde_yaml_ng::from_str(yaml).expect("yaml");
        build(&policies, "hash_policy").expect("builds")
    }

    #[test]
    fn header_query_and_source_ip() {
        let rules = rules("[{header: {header_name: X-User}}]");
        let mut headers = HeaderMap::new();
        let none = compute(&rules, &headers, None, addr(1), addr(2));
        assert_eq!(none.hash, None);
        headers.insert("x-user", HeaderValue::from_static("alice"));
        let a = compute(&rules, &headers, None, addr(1), addr(2));
        let b = compute(&rules, &headers, None, addr(3), addr(2));
        assert_eq!(a.hash, b.hash);
        assert!(a.hash.is_some());
        let ip = super::rules_from(&["{connection_properties: {source_ip: true}}"]);
        let same_ip = compute(&ip, &headers, None, addr(1), addr(2));
        assert_eq!(
            same_ip.hash,
            compute(&ip, &headers, None, addr(9), addr(2)).hash
        );
        let query = super::rules_from(&["{query_parameter: {name: k}}"]);
        let k1 = compute(&query, &headers, Some("a=1&k=v"), addr(1), addr(2));
        let k2 = compute(&query, &headers, Some("k=w"), addr(1), addr(2));
        assert!(k1.hash.is_some() && k1.hash != k2.hash);
    }

    #[test]
    fn header_values_hash_in_any_order() {
        let rules = super::rules_from(&["{header: {header_name: x}}"]);
        let mut one = HeaderMap::new();
        one.append("x", HeaderValue::from_static("a"));
        one.append("x", HeaderValue::from_static("b"));
        let mut other = HeaderMap::new();
        other.append("x", HeaderValue::from_static("b"));
        other.append("x", HeaderValue::from_static("a"));
        let h = |headers: &HeaderMap| compute(&rules, headers, None, addr(1), addr(2)).hash;
        assert_eq!(h(&one), h(&other));
        let mut single = HeaderMap::new();
        single.append("x", HeaderValue::from_static("a"));
        assert_eq!(h(&single), Some(xxh64(b"a", 0)));
        assert_ne!(h(&single), h(&one));
    }

    #[test]
    fn terminal_stops_and_entries_combine() {
        let mut headers = HeaderMap::new();
        headers.insert("a", HeaderValue::from_static("1"));
        headers.insert("b", HeaderValue::from_static("2"));
        let both = super::rules_from(&["{header: {header_name: a}}", "{header: {header_name: b}}"]);
        let first = super::rules_from(&[
            "{header: {header_name: a}, terminal: true}",
            "{header: {header_name: b}}",
        ]);
        let only_a = super::rules_from(&["{header: {header_name: a}}"]);
        let h = |r: &[HashRule]| compute(r, &headers, None, addr(1), addr(2)).hash;
        assert_eq!(h(&first), h(&only_a));
        assert_ne!(h(&both), h(&only_a));
    }

    #[test]
    fn cookie_with_ttl_is_generated_and_set() {
        let rules = super::rules_from(&["{cookie: {name: sticky, ttl: 60s, path: /}}"]);
        let empty = HeaderMap::new();
        let generated = compute(&rules, &empty, None, addr(1), addr(2));
        let set = generated.set_cookie.expect("a Set-Cookie");
        let text = set.to_str().expect("ascii");
        assert!(text.starts_with("sticky=\""), "{text}");
        assert!(text.ends_with("\"; Max-Age=60; Path=/; HttpOnly"), "{text}");
        // The client sends it back: the same hash, no new cookie.
        let value = text.split('"').nth(1).expect("value");
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&format!("other=1; sticky={value}")).expect("value"),
        );
        let back = compute(&rules, &headers, None, addr(7), addr(2));
        assert_eq!(back.hash, generated.hash);
        assert_eq!(back.set_cookie, None);
        let no_ttl = super::rules_from(&["{cookie: {name: sticky}}"]);
        assert_eq!(
            compute(&no_ttl, &empty, None, addr(1), addr(2)),
            RequestHash::default()
        );
    }

    #[test]
    fn one_kind_per_entry() {
        let policies: Vec<HashPolicy> =
            serde_yaml_ng::from_str("[{header: {header_name: a}, query_parameter: {name: q}}]")
                .expect("yaml");
        let err = build(&policies, "r.hash_policy").expect_err("two kinds");
        assert!(format!("{err:?}").contains("r.hash_policy[0]"), "{err:?}");
    }
}

#[cfg(test)]
fn rules_from(entries: &[&str]) -> Vec<HashRule> {
    let yaml = format!("[{}]", entries.join(", "));
    let policies: Vec<HashPolicy> = serde_yaml_ng::from_str(&yaml).unwrap_or_default();
    build(&policies, "hash_policy").unwrap_or_default()
}

/// On an upstream request: the `Set-Cookie` its hash policy generated, which the router adds
/// to the response.
#[derive(Debug, Clone)]
pub struct HashCookie(pub HeaderValue);
