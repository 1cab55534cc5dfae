//! The host a request is routed by: its authority (`:authority`, an absolute-form target or
//! the `Host` header) checked for userinfo and, where the connection manager says so,
//! stripped of its port (Envoy's `strip_matching_host_port` and `strip_any_host_port`).

pub use crate::config::http_manager::StripPort;

/// Whether an authority carries userinfo (`user:password@host`). RFC 9110 4.2.4 deprecates
/// it in `http` URIs, and a `Host` header cannot carry it at all (RFC 9112 3.2); a proxy that
/// kept it would match the host behind the `@` by the wrong name and forward the credentials.
pub fn has_userinfo(authority: &str) -> bool {
    authority.contains('@')
}

/// `host:port` -> `host`, `[::1]:80` -> `[::1]`; `None` when there is no port (`::1`, an
/// IPv6 address without brackets, has none).
pub fn strip_port(host: &str) -> Option<&str> {
    split_port(host).map(|(bare, _)| bare)
}

/// `host:port` -> (`host`, port text).
fn split_port(host: &str) -> Option<(&str, &str)> {
    let (bare, port) = host.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || bare.ends_with(':') {
        return None;
    }
    // `::1` has colons but no port unless bracketed.
    if bare.contains(':') && !bare.ends_with(']') {
        return None;
    }
    Some((bare, port))
}

impl StripPort {
    /// The host with its port stripped as this mode says, for a connection accepted on
    /// `listener_port`; `None` when it stays as it is.
    pub fn apply<'a>(&self, host: &'a str, listener_port: u16) -> Option<&'a str> {
        match self {
            StripPort::Never => None,
            StripPort::Any => strip_port(host),
            StripPort::Matching => {
                let (bare, port) = split_port(host)?;
                (port.parse::<u16>().ok()? == listener_port).then_some(bare)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_anything_before_an_at_sign() {
        assert!(has_userinfo("x@evil.example"));
        assert!(has_userinfo("user:pass@evil.example:8080"));
        assert!(has_userinfo("@evil.example"));
        assert!(!has_userinfo("example.com"));
        assert!(!has_userinfo("example.com:443"));
        assert!(!has_userinfo("[::1]:80"));
    }

    #[test]
    fn ports_split_off_names_and_bracketed_addresses_only() {
        assert_eq!(strip_port("example.com:10000"), Some("example.com"));
        assert_eq!(strip_port("127.0.0.1:80"), Some("127.0.0.1"));
        assert_eq!(strip_port("[::1]:80"), Some("[::1]"));
        assert_eq!(strip_port("example.com"), None);
        assert_eq!(strip_port("example.com:"), None);
        assert_eq!(strip_port("example.com:http"), None);
        assert_eq!(strip_port("::1"), None);
        assert_eq!(strip_port("[::1]"), None);
        assert_eq!(strip_port("a::80"), None);
    }

    #[test]
    fn strip_modes() {
        assert_eq!(StripPort::Never.apply("foo:1234", 1234), None);
        assert_eq!(StripPort::Any.apply("foo:1234", 80), Some("foo"));
        assert_eq!(StripPort::Any.apply("foo", 80), None);
        assert_eq!(StripPort::Matching.apply("foo:1234", 1234), Some("foo"));
        assert_eq!(StripPort::Matching.apply("foo:1234", 80), None);
        assert_eq!(StripPort::Matching.apply("foo:99999", 99), None);
        assert_eq!(StripPort::Matching.apply("[::1]:443", 443), Some("[::1]"));
    }
}
