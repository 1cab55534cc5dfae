//! The first step of every request, before any HTTP filter, route or upstream sees it: the
//! head is made safe to route. The authority (`:authority`, an absolute-form target, the
//! `Host` header) must not carry userinfo and is stripped of its port where the connection
//! manager says so; the path is normalised ([`crate::route::path`]). Everything after this
//! step sees the same, normalised head, so a filter guarding `/admin` and the route to
//! `/admin` cannot be walked around with `/a/../admin` or `%2e%2e`.

use super::upgrade;
use crate::route::authority;
use crate::route::path::PathOutcome;
use crate::snapshot::HttpManagerConfig;
use crate::wire::TunnelKind;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Uri, header};

/// Why a head was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadRefusal {
    /// The authority is unusable (userinfo, several or malformed `Host` headers): 400.
    BadAuthority(&'static str),
    /// The path cannot be normalised, or has escaped slashes that the config rejects: 400,
    /// counted as `downstream_rq_failed_path_normalization`.
    BadPath(&'static str),
    /// `UNESCAPE_AND_REDIRECT` and the path had escaped slashes: 307 to this path and query,
    /// counted as `downstream_rq_redirected_with_normalized_path`.
    Redirect(String),
    /// A header the config refuses (a name with `_` under `REJECT_REQUEST`): 400.
    BadHeader(&'static str),
}

/// Checks and normalises `request`'s head in place for a connection accepted on
/// `listener_port`, as `config` says.
pub fn sanitize_head<B>(
    request: &mut Request<B>,
    config: &HttpManagerConfig,
    listener_port: u16,
) -> Result<(), HeadRefusal> {
    // A plain CONNECT's authority is its tunnel's target: its port stays, and it has no path.
    let plain_connect = matches!(upgrade::tunnel_kind(request), Ok(Some(TunnelKind::Connect)));
    let strip = if plain_connect {
        authority::StripPort::Never
    } else {
        config.strip_port
    };
    sanitize_authority(request, strip, listener_port)?;
    if !plain_connect {
        sanitize_path(request, config)?;
    }
    Ok(())
}

fn sanitize_authority<B>(
    request: &mut Request<B>,
    strip: authority::StripPort,
    listener_port: u16,
) -> Result<(), HeadRefusal> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        // RFC 9112 3.2: more than one Host is a 400.
        return Err(HeadRefusal::BadAuthority("more than one host header"));
    }
    let host_header = match host_header.map(HeaderValue::to_str) {
        Some(Ok(host)) => Some(host),
        Some(Err(_)) => return Err(HeadRefusal::BadAuthority("invalid host header")),
        None => None,
    };
    let target = request.uri().authority().map(Authority::as_str);
    if target.is_some_and(authority::has_userinfo)
        || host_header.is_some_and(authority::has_userinfo)
    {
        return Err(HeadRefusal::BadAuthority("userinfo in the authority"));
    }
    // The target's authority wins over the Host header (RFC 9112 3.2.2 for absolute-form;
    // `:authority` for HTTP/2 and HTTP/3), so both say the same from here on.
    let host = target.or(host_header);
    let Some(host) = host else {
        return Ok(());
    };
    let stripped = strip.apply(host, listener_port);
    let new_host = stripped.unwrap_or(host);
    // Owned values only from here, so the head can be changed below.
    let new_host_header = match host_header {
        Some(old) if old != new_host => Some(
            HeaderValue::from_str(new_host)
                .map_err(|_| HeadRefusal::BadAuthority("invalid host header"))?,
        ),
        _ => None,
    };
    let new_target = match (stripped, target) {
        (Some(bare), Some(_)) => Some(
            Authority::try_from(bare)
                .map_err(|_| HeadRefusal::BadAuthority("invalid authority"))?,
        ),
        _ => None,
    };
    if let Some(bare) = new_target {
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.authority = Some(bare);
        *request.uri_mut() =
            Uri::from_parts(parts).map_err(|_| HeadRefusal::BadAuthority("invalid authority"))?;
    }
    if let Some(value) = new_host_header {
        request.headers_mut().insert(header::HOST, value);
    }
    Ok(())
}

fn sanitize_path<B>(
    request: &mut Request<B>,
    config: &HttpManagerConfig,
) -> Result<(), HeadRefusal> {
    let Some(path_and_query) = request.uri().path_and_query().map(PathAndQuery::as_str) else {
        return Ok(());
    };
    if path_and_query == "*" {
        // `OPTIONS *` (RFC 9112 3.2.4) names no resource.
        return Ok(());
    }
    match config.path_normalization.apply(path_and_query) {
        PathOutcome::Unchanged => Ok(()),
        PathOutcome::Reject(why) => Err(HeadRefusal::BadPath(why)),
        // gRPC clients do not follow redirects: as Envoy, refuse instead.
        PathOutcome::Redirect(_) if is_grpc(request) => {
            Err(HeadRefusal::BadPath("path normalization failed"))
        }
        PathOutcome::Redirect(location) => Err(HeadRefusal::Redirect(location)),
        PathOutcome::Rewritten(normalized) => {
            let normalized = PathAndQuery::try_from(normalized)
                .map_err(|_| HeadRefusal::BadPath("path normalization failed"))?;
            let mut parts = std::mem::take(request.uri_mut()).into_parts();
            parts.path_and_query = Some(normalized);
            *request.uri_mut() = Uri::from_parts(parts)
                .map_err(|_| HeadRefusal::BadPath("path normalization failed"))?;
            Ok(())
        }
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::PathWithEscapedSlashesAction;
    use crate::route::authority::StripPort;

    fn config(strip_port: StripPort) -> HttpManagerConfig {
        let yaml = r#"
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: t
          route_config: { virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, direct_response: { status: 200 } } ] } ] }
          http_filters: [ { name: envoy.filters.http.router } ]
"#;
        let config = crate::snapshot::load_str(yaml, "test.yaml").expect("config");
        let mut manager = config
            .listeners
            .into_iter()
            .next()
            .expect("an HTTP listener")
            .http;
        std::sync::Arc::make_mut(&mut manager).strip_port = strip_port;
        std::sync::Arc::unwrap_or_clone(manager)
    }

    fn request(uri: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get(uri);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).expect("request")
    }

    fn host_of(request: &Request<()>) -> Option<&str> {
        request.headers().get(header::HOST)?.to_str().ok()
    }

    #[test]
    fn userinfo_is_refused_in_host_and_target() {
        let config = config(StripPort::Never);
        let refused = Err(HeadRefusal::BadAuthority("userinfo in the authority"));
        let mut by_host = request("/", &["x@evil.example"]);
        assert_eq!(sanitize_head(&mut by_host, &config, 80), refused);
        let mut by_target = request("http://x@evil.example/", &["evil.example"]);
        assert_eq!(sanitize_head(&mut by_target, &config, 80), refused);
        let mut connect = Request::connect("u:p@evil.example:443")
            .body(())
            .expect("request");
        assert_eq!(sanitize_head(&mut connect, &config, 80), refused);
    }

    #[test]
    fn one_host_header_at_most() {
        let config = config(StripPort::Never);
        let mut two = request("/", &["a.example", "b.example"]);
        assert_eq!(
            sanitize_head(&mut two, &config, 80),
            Err(HeadRefusal::BadAuthority("more than one host header"))
        );
    }

    #[test]
    fn ports_are_stripped_from_target_and_host_header() {
        let mut any = request("/", &["foo:1234"]);
        sanitize_head(&mut any, &config(StripPort::Any), 80).expect("sanitized");
        assert_eq!(host_of(&any), Some("foo"));

        let matching = config(StripPort::Matching);
        let mut other_port = request("/", &["foo:1234"]);
        sanitize_head(&mut other_port, &matching, 80).expect("sanitized");
        assert_eq!(host_of(&other_port), Some("foo:1234"));
        let mut own_port = request("http://foo:80/x", &["foo:80"]);
        sanitize_head(&mut own_port, &matching, 80).expect("sanitized");
        assert_eq!(own_port.uri().to_string(), "http://foo/x");
        assert_eq!(host_of(&own_port), Some("foo"));

        // A plain CONNECT keeps its port: it is where the tunnel goes.
        let mut connect = Request::connect("foo:443").body(()).expect("request");
        sanitize_head(&mut connect, &config(StripPort::Any), 443).expect("sanitized");
        assert_eq!(
            connect.uri().authority().map(Authority::as_str),
            Some("foo:443")
        );
    }

    #[test]
    fn the_target_authority_replaces_the_host_header() {
        let mut absolute = request("http://real.example/x", &["other.example"]);
        sanitize_head(&mut absolute, &config(StripPort::Never), 80).expect("sanitized");
        assert_eq!(host_of(&absolute), Some("real.example"));
    }

    #[test]
    fn paths_are_normalised_with_the_query_kept() {
        let mut config = config(StripPort::Never);
        let mut dotted = request("/a/%2e%2e/admin?next=/../x", &["h"]);
        sanitize_head(&mut dotted, &config, 80).expect("sanitized");
        assert_eq!(dotted.uri().to_string(), "/admin?next=/../x");
        let mut absolute = request("http://h/a/../admin", &[]);
        sanitize_head(&mut absolute, &config, 80).expect("sanitized");
        assert_eq!(absolute.uri().to_string(), "http://h/admin");
        let mut nul = request("/a%00", &["h"]);
        assert_eq!(
            sanitize_head(&mut nul, &config, 80),
            Err(HeadRefusal::BadPath("path normalization failed"))
        );
        let mut options = Request::options("*").body(()).expect("request");
        sanitize_head(&mut options, &config, 80).expect("sanitized");
        assert_eq!(options.uri().to_string(), "*");

        config.path_normalization.escaped_slashes =
            PathWithEscapedSlashesAction::UNESCAPE_AND_REDIRECT;
        let mut escaped = request("/a%2Fb?q", &["h"]);
        assert_eq!(
            sanitize_head(&mut escaped, &config, 80),
            Err(HeadRefusal::Redirect("/a/b?q".into()))
        );
        let mut grpc = request("/a%2Fb", &["h"]);
        grpc.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert_eq!(
            sanitize_head(&mut grpc, &config, 80),
            Err(HeadRefusal::BadPath("path normalization failed"))
        );
    }
}
