//! Path and header matchers of a route.

use crate::config::FieldError;
use crate::config::schema::{self, RouteMatch};
use http::HeaderMap;
use regex::Regex;

/// What a request's path must look like.
#[derive(Debug, Clone)]
pub enum PathMatcher {
    /// The path (with its query) starts with this.
    Prefix {
        /// The prefix.
        prefix: String,
        /// Compare case-sensitively.
        case_sensitive: bool,
    },
    /// The path without its query is exactly this.
    Exact {
        /// The path.
        path: String,
        /// Compare case-sensitively.
        case_sensitive: bool,
    },
    /// The path without its query matches this in full.
    Regex(Regex),
    /// CONNECT requests (`connect_matcher`); they have no path.
    Connect,
}

impl PathMatcher {
    /// Builds the path matcher of `route_match` at `path`.
    pub fn build(route_match: &RouteMatch, path: &str) -> Result<PathMatcher, FieldError> {
        let case_sensitive = route_match.case_sensitive.unwrap_or(true);
        if route_match.connect_matcher.is_some() {
            if route_match.prefix.is_some()
                || route_match.path.is_some()
                || route_match.safe_regex.is_some()
            {
                return Err(FieldError::new(
                    path,
                    "set exactly one of prefix, path, safe_regex and connect_matcher",
                ));
            }
            return Ok(PathMatcher::Connect);
        }
        match (
            &route_match.prefix,
            &route_match.path,
            &route_match.safe_regex,
        ) {
            (Some(prefix), None, None) => Ok(PathMatcher::Prefix {
                prefix: prefix.clone(),
                case_sensitive,
            }),
            (None, Some(exact), None) => Ok(PathMatcher::Exact {
                path: exact.clone(),
                case_sensitive,
            }),
            (None, None, Some(regex)) => Ok(PathMatcher::Regex(full_regex(
                &regex.regex,
                &format!("{path}.safe_regex.regex"),
            )?)),
            _ => Err(FieldError::new(
                path,
                "set exactly one of prefix, path, safe_regex and connect_matcher",
            )),
        }
    }

    /// Whether a request matches: a CONNECT request only `connect_matcher`, any other request
    /// by its `path_and_query`.
    pub fn matches_request(&self, is_connect: bool, path_and_query: &str) -> bool {
        match (self, is_connect) {
            (PathMatcher::Connect, connect) => connect,
            (_, true) => false,
            (_, false) => self.matches(path_and_query),
        }
    }

    /// Whether `path_and_query` matches.
    pub fn matches(&self, path_and_query: &str) -> bool {
        let path = path_and_query
            .split_once('?')
            .map_or(path_and_query, |(p, _)| p);
        match self {
            PathMatcher::Prefix {
                prefix,
                case_sensitive: true,
            } => path_and_query.starts_with(prefix.as_str()),
            PathMatcher::Prefix {
                prefix,
                case_sensitive: false,
            } => path_and_query
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix)),
            PathMatcher::Exact {
                path: exact,
                case_sensitive: true,
            } => path == exact,
            PathMatcher::Exact {
                path: exact,
                case_sensitive: false,
            } => path.eq_ignore_ascii_case(exact),
            PathMatcher::Regex(regex) => regex.is_match(path),
            PathMatcher::Connect => false,
        }
    }

    /// How many bytes at the front of the path `prefix_rewrite` replaces.
    pub fn rewrite_len(&self, path_and_query: &str) -> usize {
        let path_len = path_and_query.find('?').unwrap_or(path_and_query.len());
        match self {
            PathMatcher::Prefix { prefix, .. } => prefix.len().min(path_and_query.len()),
            PathMatcher::Exact { .. } | PathMatcher::Regex(_) => path_len,
            PathMatcher::Connect => 0,
        }
    }
}

/// Compiles `pattern` so that it must match a whole string, as RE2's FullMatch does.
fn full_regex(pattern: &str, path: &str) -> Result<Regex, FieldError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| FieldError::new(path, format!("invalid regex: {e}")))
}

/// One `headers[]` entry of a route match.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    name: http::HeaderName,
    rule: HeaderRule,
    invert: bool,
}

#[derive(Debug, Clone)]
enum HeaderRule {
    Present(bool),
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(Regex),
}

impl HeaderMatcher {
    /// Builds the matcher for `header` at `path`.
    pub fn build(header: &schema::HeaderMatcher, path: &str) -> Result<HeaderMatcher, FieldError> {
        let name = http::HeaderName::from_bytes(header.name.to_ascii_lowercase().as_bytes())
            .map_err(|_| FieldError::new(format!("{path}.name"), "not a valid header name"))?;
        let mut rules = Vec::new();
        if let Some(v) = &header.exact_match {
            rules.push(HeaderRule::Exact(v.clone(), false));
        }
        if let Some(v) = &header.prefix_match {
            rules.push(HeaderRule::Prefix(v.clone(), false));
        }
        if let Some(v) = &header.suffix_match {
            rules.push(HeaderRule::Suffix(v.clone(), false));
        }
        if let Some(v) = &header.contains_match {
            rules.push(HeaderRule::Contains(v.clone(), false));
        }
        if let Some(v) = &header.safe_regex_match {
            rules.push(HeaderRule::Regex(full_regex(
                &v.regex,
                &format!("{path}.safe_regex_match.regex"),
            )?));
        }
        if let Some(present) = header.present_match {
            rules.push(HeaderRule::Present(present));
        }
        if let Some(m) = &header.string_match {
            let ic = m.ignore_case;
            let mut inner = Vec::new();
            if let Some(v) = &m.exact {
                inner.push(HeaderRule::Exact(v.clone(), ic));
            }
            if let Some(v) = &m.prefix {
                inner.push(HeaderRule::Prefix(v.clone(), ic));
            }
            if let Some(v) = &m.suffix {
                inner.push(HeaderRule::Suffix(v.clone(), ic));
            }
            if let Some(v) = &m.contains {
                inner.push(HeaderRule::Contains(v.clone(), ic));
            }
            if let Some(v) = &m.safe_regex {
                inner.push(HeaderRule::Regex(full_regex(
                    &v.regex,
                    &format!("{path}.string_match.safe_regex.regex"),
                )?));
            }
            if inner.len() != 1 {
                return Err(FieldError::new(
                    format!("{path}.string_match"),
                    "set exactly one of exact, prefix, suffix, contains and safe_regex",
                ));
            }
            rules.extend(inner);
        }
        let rule = match rules.len() {
            0 => HeaderRule::Present(true),
            1 => rules.remove(0),
            _ => {
                return Err(FieldError::new(
                    path,
                    "set only one way to match the header",
                ));
            }
        };
        Ok(HeaderMatcher {
            name,
            rule,
            invert: header.invert_match,
        })
    }

    /// Whether `headers` satisfy this matcher. A header that appears several times is matched
    /// on its values joined with ",", as Envoy does.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter().peekable();
        let result = if values.peek().is_none() {
            matches!(self.rule, HeaderRule::Present(false))
        } else {
            let joined: Vec<&str> = values.map(|v| v.to_str().unwrap_or("")).collect();
            let value = joined.join(",");
            let fold = |s: &str, ic: bool| {
                if ic {
                    s.to_ascii_lowercase()
                } else {
                    s.to_string()
                }
            };
            match &self.rule {
                HeaderRule::Present(present) => *present,
                HeaderRule::Exact(want, ic) => fold(&value, *ic) == fold(want, *ic),
                HeaderRule::Prefix(want, ic) => fold(&value, *ic).starts_with(&fold(want, *ic)),
                HeaderRule::Suffix(want, ic) => fold(&value, *ic).ends_with(&fold(want, *ic)),
                HeaderRule::Contains(want, ic) => fold(&value, *ic).contains(&fold(want, *ic)),
                HeaderRule::Regex(regex) => regex.is_match(&value),
            }
        };
        result != self.invert
    }
}
