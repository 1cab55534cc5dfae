//! Path and header matchers of a route.

use crate::config::FieldError;
use crate::config::schema::{self, RouteMatch};
use http::HeaderMap;
use regex::Regex;

use super::regex::full as full_regex;

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
    /// The path without its query is this, or this and then `/` and more
    /// (`path_separated_prefix`).
    SeparatedPrefix {
        /// The prefix (no `?`, `#` or trailing `/`).
        prefix: String,
        /// Compare case-sensitively.
        case_sensitive: bool,
    },
    /// CONNECT requests (`connect_matcher`); they have no path.
    Connect,
}

impl PathMatcher {
    /// Builds the path matcher of `route_match` at `path`.
    pub fn build(route_match: &RouteMatch, path: &str) -> Result<PathMatcher, FieldError> {
        let case_sensitive = route_match.case_sensitive.unwrap_or(true);
        const ONE_OF: &str = "set exactly one of prefix, path, safe_regex, path_separated_prefix and connect_matcher";
        let others = route_match.prefix.is_some()
            || route_match.path.is_some()
            || route_match.safe_regex.is_some();
        if route_match.connect_matcher.is_some() {
            if others || route_match.path_separated_prefix.is_some() {
                return Err(FieldError::new(path, ONE_OF));
            }
            return Ok(PathMatcher::Connect);
        }
        if let Some(prefix) = &route_match.path_separated_prefix {
            if others {
                return Err(FieldError::new(path, ONE_OF));
            }
            if prefix.is_empty() || prefix.contains(['?', '#']) || prefix.ends_with('/') {
                return Err(FieldError::new(
                    format!("{path}.path_separated_prefix"),
                    "a non-empty path without ?, # or a trailing /",
                ));
            }
            return Ok(PathMatcher::SeparatedPrefix {
                prefix: prefix.clone(),
                case_sensitive,
            });
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
            _ => Err(FieldError::new(path, ONE_OF)),
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
            PathMatcher::SeparatedPrefix {
                prefix,
                case_sensitive,
            } => {
                let head = path.get(..prefix.len());
                let head_matches = match head {
                    Some(head) if *case_sensitive => head == prefix,
                    Some(head) => head.eq_ignore_ascii_case(prefix),
                    None => false,
                };
                head_matches && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
            }
            PathMatcher::Connect => false,
        }
    }

    /// How many bytes at the front of the path `prefix_rewrite` replaces.
    pub fn rewrite_len(&self, path_and_query: &str) -> usize {
        let path_len = path_and_query.find('?').unwrap_or(path_and_query.len());
        match self {
            PathMatcher::Prefix { prefix, .. } | PathMatcher::SeparatedPrefix { prefix, .. } => {
                prefix.len().min(path_and_query.len())
            }
            PathMatcher::Exact { .. } | PathMatcher::Regex(_) => path_len,
            PathMatcher::Connect => 0,
        }
    }
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
            rules.push(string_rule(m, &format!("{path}.string_match"))?);
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
        let mut values = headers.get_all(&self.name).iter();
        let result = match (values.next(), values.next()) {
            (None, _) => matches!(self.rule, HeaderRule::Present(false)),
            // The common case, one value, is matched where it lies: no copy.
            (Some(value), None) => self.rule.matches(value.to_str().unwrap_or("")),
            (Some(first), Some(second)) => {
                let mut joined = String::from(first.to_str().unwrap_or(""));
                for value in std::iter::once(second).chain(values) {
                    joined.push(',');
                    joined.push_str(value.to_str().unwrap_or(""));
                }
                self.rule.matches(&joined)
            }
        };
        result != self.invert
    }
}

impl HeaderRule {
    /// Whether a present `value` satisfies the rule. `ignore_case` folds ASCII letters
    /// only (as Envoy), compared byte by byte rather than on lowercased copies.
    fn matches(&self, value: &str) -> bool {
        let eq: fn(&[u8], &[u8]) -> bool = match self {
            HeaderRule::Present(present) => return *present,
            HeaderRule::Regex(regex) => return regex.is_match(value),
            HeaderRule::Exact(_, true)
            | HeaderRule::Prefix(_, true)
            | HeaderRule::Suffix(_, true)
            | HeaderRule::Contains(_, true) => <[u8]>::eq_ignore_ascii_case,
            _ => |a, b| a == b,
        };
        let value = value.as_bytes();
        match self {
            HeaderRule::Exact(want, _) => eq(value, want.as_bytes()),
            HeaderRule::Prefix(want, _) => value
                .get(..want.len())
                .is_some_and(|head| eq(head, want.as_bytes())),
            HeaderRule::Suffix(want, _) => value
                .len()
                .checked_sub(want.len())
                .and_then(|start| value.get(start..))
                .is_some_and(|tail| eq(tail, want.as_bytes())),
            HeaderRule::Contains(want, _) => {
                want.is_empty() || value.windows(want.len()).any(|w| eq(w, want.as_bytes()))
            }
            HeaderRule::Present(_) | HeaderRule::Regex(_) => false,
        }
    }
}

/// A `StringMatcher` at `path` as a rule.
fn string_rule(m: &schema::StringMatcher, path: &str) -> Result<HeaderRule, FieldError> {
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
            &format!("{path}.safe_regex.regex"),
        )?));
    }
    if inner.len() != 1 {
        return Err(FieldError::new(
            path,
            "set exactly one of exact, prefix, suffix, contains and safe_regex",
        ));
    }
    Ok(inner.remove(0))
}

/// One `query_parameters[]` entry of a route match: the parameter's first value (as written,
/// not decoded) matches `string_match`, or the parameter is present, as Envoy has it.
#[derive(Debug, Clone)]
pub struct QueryMatcher {
    name: String,
    /// `None`: present is enough.
    rule: Option<HeaderRule>,
}

impl QueryMatcher {
    /// Builds the matcher for `config` at `path`.
    pub fn build(
        config: &schema::QueryParameterMatcher,
        path: &str,
    ) -> Result<QueryMatcher, FieldError> {
        if config.name.is_empty() {
            return Err(FieldError::new(format!("{path}.name"), "must not be empty"));
        }
        if config.string_match.is_some() && config.present_match.is_some() {
            return Err(FieldError::new(
                path,
                "set at most one of string_match and present_match",
            ));
        }
        let rule = match &config.string_match {
            Some(m) => Some(string_rule(m, &format!("{path}.string_match"))?),
            None => None,
        };
        Ok(QueryMatcher {
            name: config.name.clone(),
            rule,
        })
    }

    /// Whether the query of `path_and_query` satisfies this matcher.
    pub fn matches(&self, path_and_query: &str) -> bool {
        let Some((_, query)) = path_and_query.split_once('?') else {
            return false;
        };
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        let first = query.split('&').find_map(|param| {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            (key == self.name).then_some(value)
        });
        match (first, &self.rule) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(value), Some(rule)) => rule.matches(value),
        }
    }
}

/// Whether a request is gRPC as Envoy's `grpc` route match sees it: `content-type` is
/// `application/grpc` or starts with `application/grpc+` (`application/grpc-web` is not).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('+'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn matcher(yaml: &str) -> HeaderMatcher {
        let config: schema::HeaderMatcher = serde_yaml_ng::from_str(yaml).unwrap();
        HeaderMatcher::build(&config, "m").unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-h", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn string_rules_compare_in_place_folding_ascii_only_with_ignore_case() {
        let cases: &[(&str, &[&str], bool)] = &[
            ("{exact: AbC}", &["AbC"], true),
            ("{exact: AbC}", &["abc"], false),
            ("{exact: AbC, ignore_case: true}", &["aBc"], true),
            ("{exact: AbC, ignore_case: true}", &["aBcd"], false),
            ("{prefix: Ab}", &["Abc"], true),
            ("{prefix: Ab}", &["abc"], false),
            ("{prefix: Ab, ignore_case: true}", &["aBc"], true),
            ("{prefix: Abcd, ignore_case: true}", &["abc"], false),
            ("{suffix: Bc, ignore_case: true}", &["ABC"], true),
            ("{suffix: Bc}", &["ABC"], false),
            ("{suffix: xabc, ignore_case: true}", &["abc"], false),
            ("{contains: bC, ignore_case: true}", &["aBcd"], true),
            ("{contains: bC}", &["aBcd"], false),
            ("{contains: '', ignore_case: true}", &["a"], true),
            ("{contains: zz, ignore_case: true}", &["a"], false),
            // Several values are matched joined with ",", as Envoy.
            ("{exact: 'a,b,c'}", &["a", "b", "c"], true),
            ("{contains: 'A,B', ignore_case: true}", &["a", "b"], true),
            ("{exact: a}", &["a", "b"], false),
        ];
        for (rule, values, want) in cases {
            let m = matcher(&format!("{{name: x-h, string_match: {rule}}}"));
            assert_eq!(m.matches(&headers(values)), *want, "{rule} on {values:?}");
        }
        let absent = matcher("{name: x-h, present_match: false}");
        assert!(absent.matches(&HeaderMap::new()));
        assert!(!absent.matches(&headers(&["a"])));
    }
}
