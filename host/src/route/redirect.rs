//! A route's `redirect`: the 3xx answer and its `Location`, built as Envoy builds it.
//!
//! The path is rewritten first (`prefix_rewrite` replaces the part the route matched,
//! `regex_rewrite` every match in the path, the query kept), then the URI is put together:
//! - scheme: `scheme_redirect`, else `https` with `https_redirect`, else the request's;
//! - host: `host_redirect`, else the request's host, whose port is dropped when
//!   `port_redirect` is set, or when the scheme changes and the port is the default one of
//!   the request's `x-forwarded-proto` (`:80` for http, `:443` for https);
//! - port: `:port_redirect` when set;
//! - path: `path_redirect` (a query in it replaces the request's and survives `strip_query`;
//!   without one the request's query follows it), else the (rewritten) request path;
//!   `strip_query` drops the query.

use super::regex::PathRegexRewrite;
use crate::config::FieldError;
use crate::config::schema::{self, RedirectResponseCode};
use http::{HeaderValue, StatusCode};

/// A compiled `redirect`.
#[derive(Debug, Clone)]
pub struct Redirect {
    scheme: Option<String>,
    host: Option<String>,
    /// `:port`.
    port: Option<String>,
    path: Option<String>,
    path_has_query: bool,
    rewrite: PathRewrite,
    strip_query: bool,
    /// The status: 301, 302, 303, 307 or 308.
    pub status: StatusCode,
}

#[derive(Debug, Clone)]
enum PathRewrite {
    None,
    Prefix(String),
    Regex(PathRegexRewrite),
}

/// What of a request a redirect's `Location` is built from.
#[derive(Debug, Clone, Copy)]
pub struct RedirectRequest<'a> {
    /// The request's scheme (`http` or `https`).
    pub scheme: &'a str,
    /// Its `x-forwarded-proto` as the connection manager leaves it.
    pub forwarded_proto: &'a str,
    /// Its host (authority).
    pub host: &'a str,
    /// Its path and query.
    pub path_and_query: &'a str,
    /// How many bytes at the front of the path the route matched (`prefix_rewrite` replaces
    /// them).
    pub matched_len: usize,
}

impl Redirect {
    /// Builds `redirect` at `path`.
    pub fn build(config: &schema::RedirectAction, path: &str) -> Result<Redirect, FieldError> {
        let text = |value: &Option<String>, field: &str| -> Result<Option<String>, FieldError> {
            match value {
                Some(v) if HeaderValue::from_str(v).is_err() || v.contains(char::is_whitespace) => {
                    Err(FieldError::new(
                        format!("{path}.{field}"),
                        "not a valid part of a URI",
                    ))
                }
                Some(v) if v.is_empty() => Ok(None),
                v => Ok(v.clone()),
            }
        };
        if config.https_redirect && config.scheme_redirect.is_some() {
            return Err(FieldError::new(
                path,
                "set at most one of https_redirect and scheme_redirect",
            ));
        }
        let rewrites = [
            config.path_redirect.is_some(),
            config.prefix_rewrite.is_some(),
            config.regex_rewrite.is_some(),
        ];
        if rewrites.iter().filter(|set| **set).count() > 1 {
            return Err(FieldError::new(
                path,
                "set at most one of path_redirect, prefix_rewrite and regex_rewrite",
            ));
        }
        let scheme = match text(&config.scheme_redirect, "scheme_redirect")? {
            Some(scheme) => Some(scheme.to_ascii_lowercase()),
            None => config.https_redirect.then(|| "https".to_string()),
        };
        let port = match config.port_redirect {
            None | Some(0) => None,
            Some(port) if port <= u32::from(u16::MAX) => Some(format!(":{port}")),
            Some(_) => {
                return Err(FieldError::new(
                    format!("{path}.port_redirect"),
                    "expected 1..=65535",
                ));
            }
        };
        let path_redirect = text(&config.path_redirect, "path_redirect")?;
        let rewrite = match (&config.prefix_rewrite, &config.regex_rewrite) {
            (Some(prefix), None) => {
                text(&config.prefix_rewrite, "prefix_rewrite")?;
                PathRewrite::Prefix(prefix.clone())
            }
            (None, Some(regex)) => PathRewrite::Regex(PathRegexRewrite::build(
                regex,
                &format!("{path}.regex_rewrite"),
            )?),
            _ => PathRewrite::None,
        };
        Ok(Redirect {
            scheme,
            host: text(&config.host_redirect, "host_redirect")?,
            port,
            path_has_query: path_redirect.as_ref().is_some_and(|p| p.contains('?')),
            path: path_redirect,
            rewrite,
            strip_query: config.strip_query,
            status: match config.response_code {
                RedirectResponseCode::MOVED_PERMANENTLY => StatusCode::MOVED_PERMANENTLY,
                RedirectResponseCode::FOUND => StatusCode::FOUND,
                RedirectResponseCode::SEE_OTHER => StatusCode::SEE_OTHER,
                RedirectResponseCode::TEMPORARY_REDIRECT => StatusCode::TEMPORARY_REDIRECT,
                RedirectResponseCode::PERMANENT_REDIRECT => StatusCode::PERMANENT_REDIRECT,
            },
        })
    }

    /// The `Location` for `request`.
    pub fn location(&self, request: &RedirectRequest<'_>) -> String {
        let rewritten: std::borrow::Cow<'_, str> = match &self.rewrite {
            PathRewrite::None => request.path_and_query.into(),
            PathRewrite::Prefix(prefix) => {
                let rest = request
                    .path_and_query
                    .get(request.matched_len..)
                    .unwrap_or("");
                format!("{prefix}{rest}").into()
            }
            PathRewrite::Regex(regex) => regex.apply(request.path_and_query),
        };
        let scheme = self.scheme.as_deref().unwrap_or(request.scheme);
        let port = self.port.as_deref().unwrap_or("");
        let host = match &self.host {
            Some(host) => host.as_str(),
            None => request_host(request, scheme, port),
        };
        let mut path = match &self.path {
            Some(path) if self.path_has_query => path.clone(),
            Some(path) => match rewritten.find('?') {
                Some(at) => format!("{path}{}", &rewritten[at..]),
                None => path.clone(),
            },
            None => rewritten.into_owned(),
        };
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if self.strip_query
            && !self.path_has_query
            && let Some(at) = path.find('?')
        {
            path.truncate(at);
        }
        format!("{scheme}://{host}{port}{path}")
    }
}

/// The request's host for a redirect to `scheme` and `port` (empty: none), with its port
/// dropped as Envoy drops it.
fn request_host<'a>(request: &RedirectRequest<'a>, scheme: &str, port: &str) -> &'a str {
    let host = request.host;
    let port_at = if host.starts_with('[') {
        host.rfind("]:").map(|at| at + 1)
    } else {
        host.rfind(':')
    };
    let Some(at) = port_at else {
        return host;
    };
    let request_port = &host[at..];
    let proto = request.forwarded_proto;
    let mut remove = !port.is_empty();
    if scheme != proto {
        remove |= proto == "https" && request_port == ":443";
        remove |= proto == "http" && request_port == ":80";
    }
    if remove { &host[..at] } else { host }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(yaml: &str) -> Result<Redirect, FieldError> {
        let config: schema::RedirectAction = serde_yaml_ng::from_str(yaml).unwrap();
        Redirect::build(&config, "r.redirect")
    }

    fn location(yaml: &str, host: &str, path: &str, matched: usize) -> String {
        redirect(yaml).unwrap().location(&RedirectRequest {
            scheme: "http",
            forwarded_proto: "http",
            host,
            path_and_query: path,
            matched_len: matched,
        })
    }

    /// Each case is what Envoy 1.40 answered to the same route and request.
    #[test]
    fn locations_are_envoys() {
        let h = "127.0.0.1:29470";
        assert_eq!(
            location("{https_redirect: true}", h, "/r1/a?x=1", 3),
            "https://127.0.0.1:29470/r1/a?x=1"
        );
        assert_eq!(
            location(
                "{https_redirect: true, strip_query: true}",
                h,
                "/r2/a?x=1",
                3
            ),
            "https://127.0.0.1:29470/r2/a"
        );
        assert_eq!(
            location(
                "{host_redirect: new.example, port_redirect: 8443, response_code: FOUND}",
                h,
                "/r3/a?x=1",
                3
            ),
            "http://new.example:8443/r3/a?x=1"
        );
        assert_eq!(
            location("{path_redirect: /new/path}", h, "/r4/a?x=1", 3),
            "http://127.0.0.1:29470/new/path?x=1"
        );
        assert_eq!(
            location("{path_redirect: /new/path}", h, "/r4?", 3),
            "http://127.0.0.1:29470/new/path?"
        );
        assert_eq!(
            location(
                "{prefix_rewrite: /five, scheme_redirect: ftp}",
                h,
                "/r5/a?x=1",
                3
            ),
            "ftp://127.0.0.1:29470/five/a?x=1"
        );
        assert_eq!(
            location(
                r#"{regex_rewrite: {pattern: {regex: '^/r6/(\w+)/(\w+)'}, substitution: '/x/\2/\1'}}"#,
                h,
                "/r6/ab/cd/e?x=1",
                3
            ),
            "http://127.0.0.1:29470/x/cd/ab/e?x=1"
        );
        assert_eq!(
            location(
                "{path_redirect: '/q?a=b', strip_query: true}",
                h,
                "/r7/z?x=1",
                3
            ),
            "http://127.0.0.1:29470/q?a=b"
        );
        // Default ports of the request's scheme go when the scheme changes.
        assert_eq!(
            location("{https_redirect: true}", "h.example:80", "/r1/a?x", 3),
            "https://h.example/r1/a?x"
        );
        assert_eq!(
            location("{https_redirect: true}", "h.example:443", "/r1/a?x", 3),
            "https://h.example:443/r1/a?x"
        );
        assert_eq!(
            location("{https_redirect: true}", "[::1]:80", "/r1/a?x", 3),
            "https://[::1]/r1/a?x"
        );
        assert_eq!(
            location(
                "{host_redirect: new.example, port_redirect: 8443}",
                "[::1]:80",
                "/r3/a?x",
                3
            ),
            "http://new.example:8443/r3/a?x"
        );
        assert_eq!(
            location(
                "{prefix_rewrite: /five, scheme_redirect: ftp}",
                "h.example:80",
                "/r5/a?x",
                3
            ),
            "ftp://h.example/five/a?x"
        );
        assert_eq!(
            location("{path_redirect: /new/path}", "h.example:80", "/r4", 3),
            "http://h.example:80/new/path"
        );
        assert_eq!(
            location("{port_redirect: 8080}", "h.example:80", "/p", 1),
            "http://h.example:8080/p"
        );
    }

    #[test]
    fn codes_and_errors() {
        assert_eq!(
            redirect("{}").unwrap().status,
            StatusCode::MOVED_PERMANENTLY
        );
        for (code, status) in [
            ("FOUND", 302),
            ("SEE_OTHER", 303),
            ("TEMPORARY_REDIRECT", 307),
            ("PERMANENT_REDIRECT", 308),
        ] {
            let r = redirect(&format!("{{response_code: {code}}}")).unwrap();
            assert_eq!(r.status.as_u16(), status);
        }
        let e = redirect("{path_redirect: /x, prefix_rewrite: /y}").unwrap_err();
        assert_eq!(e.path, "r.redirect");
        let e = redirect("{https_redirect: true, scheme_redirect: http}").unwrap_err();
        assert_eq!(e.path, "r.redirect");
        let e = redirect("{port_redirect: 70000}").unwrap_err();
        assert_eq!(e.path, "r.redirect.port_redirect");
        let e = redirect("{host_redirect: 'a b'}").unwrap_err();
        assert_eq!(e.path, "r.redirect.host_redirect");
        let e = redirect("{regex_rewrite: {pattern: {regex: '('}, substitution: x}}").unwrap_err();
        assert_eq!(e.path, "r.redirect.regex_rewrite.pattern.regex");
    }
}
