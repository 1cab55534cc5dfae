//! Image references: `registry/repository[:tag][@sha256:HEX]`, as Istio's WasmPlugin `url`
//! writes them after `oci://`.
//!
//! The registry must be named (a host with a dot or a port, `localhost`, or an IP): weir has no
//! implicit default registry, so a reference never resolves somewhere its author did not write.
//! A reference with neither tag nor digest means the tag `latest`, as docker and Istio read it.

use super::OciError;

/// Docker Hub's name in references, and the host its registry API answers on.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (lowercase).
    pub registry: String,
    /// `org/filter`: the repository path inside the registry.
    pub repository: String,
    /// The tag, when written (or `latest` when neither tag nor digest is).
    pub tag: Option<String>,
    /// `sha256:HEX` of the manifest, when the reference pins it.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `text` (an `oci://` prefix is accepted and dropped).
    pub fn parse(text: &str) -> Result<Reference, OciError> {
        let bad = |why: &str| OciError::Reference {
            reference: text.to_owned(),
            why: why.to_owned(),
        };
        let rest = text.strip_prefix("oci://").unwrap_or(text);
        if rest.is_empty() {
            return Err(bad("it is empty"));
        }
        if rest.len() > 1024 {
            return Err(bad("it is longer than 1024 characters"));
        }
        let (name_and_tag, digest) = match rest.split_once('@') {
            Some((name, digest)) => (name, Some(parse_digest(digest).map_err(|why| bad(&why))?)),
            None => (rest, None),
        };
        let Some((registry, path)) = name_and_tag.split_once('/') else {
            return Err(bad(
                "it names no registry; write registry/repository[:tag][@sha256:...], e.g. ghcr.io/org/filter:v1",
            ));
        };
        if !looks_like_registry(registry) {
            return Err(bad(&format!(
                "{registry:?} is not a registry host (it needs a dot, a port, or to be localhost); weir has no default registry"
            )));
        }
        valid_registry(registry).map_err(|why| bad(&why))?;
        // A tag follows the last ':' of the last path component (a port's ':' is in the registry).
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&path[..at], Some(&path[at + 1..]))
            }
            None => (path, None),
        };
        valid_repository(repository).map_err(|why| bad(&why))?;
        if let Some(tag) = tag {
            valid_tag(tag).map_err(|why| bad(&why))?;
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry: registry.to_ascii_lowercase(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// The host (and port) the registry API answers on: Docker Hub's references name
    /// `docker.io`, its API is elsewhere.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB || self.registry == "index.docker.io" {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine (`localhost`, 127.0.0.0/8, `[::1]`): only such
    /// a registry is spoken to over plain HTTP.
    pub fn is_loopback(&self) -> bool {
        is_loopback_authority(&self.registry)
    }

    /// The base of the registry API, `https://HOST/v2/REPO` or `http://` for a loopback one.
    pub fn api_base(&self) -> String {
        let scheme = if self.is_loopback() { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.api_host(), self.repository)
    }

    /// What the manifest is fetched by: the digest when pinned, else the tag.
    pub fn manifest_selector(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether `authority` (`host[:port]`) is a loopback host.
pub fn is_loopback_authority(authority: &str) -> bool {
    let host = host_of(authority);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host of `host[:port]` or `[v6]:port`, without brackets.
pub fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// `sha256:` + 64 lowercase hex digits.
pub fn parse_digest(text: &str) -> Result<String, String> {
    let Some(hex) = text.strip_prefix("sha256:") else {
        return Err(format!("digest {text:?} is not sha256:<64 hex digits>"));
    };
    if !is_sha256_hex(hex) {
        return Err(format!("digest {text:?} is not sha256:<64 hex digits>"));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// 64 hex digits.
pub fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn looks_like_registry(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first.starts_with('[')
        || first.eq_ignore_ascii_case("localhost")
}

fn valid_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(format!("registry {registry:?}: unclosed '['"));
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("registry {registry:?}: not an IPv6 address"));
        }
        (None, after.strip_prefix(':'))
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !ok {
            return Err(format!("registry host {host:?} is not a host name"));
        }
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("registry port {port:?} is not a port"));
    }
    Ok(())
}

/// Components of lowercase letters and digits, joined by `.`, `_`, `__`, `-` (the
/// distribution spec's grammar, simplified: no component starts or ends with a separator).
fn valid_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository is empty".to_owned());
    }
    for component in repository.split('/') {
        let ok = !component.is_empty()
            && component.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && component
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && component
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "repository component {component:?} must be lowercase letters, digits and . _ - inside"
            ));
        }
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !tag.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1-128 of A-Z a-z 0-9 _ . - and not start with . or -"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(text: &str) -> Reference {
        match Reference::parse(text) {
            Ok(reference) => reference,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    fn refused(text: &str) -> String {
        match Reference::parse(text) {
            Ok(reference) => panic!("{text:?} should be refused, parsed as {reference:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tag_and_digest() {
        let r = parse(&format!("ghcr.io/org/filters/auth:v1.2@sha256:{HEX}"));
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository, "org/filters/auth");
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        assert_eq!(r.digest, Some(format!("sha256:{HEX}")));
        assert_eq!(r.manifest_selector(), format!("sha256:{HEX}"));
        assert_eq!(
            r.to_string(),
            format!("ghcr.io/org/filters/auth:v1.2@sha256:{HEX}")
        );
        assert_eq!(r.api_base(), "https://ghcr.io/v2/org/filters/auth");
    }

    #[test]
    fn digest_only_has_no_tag() {
        let r = parse(&format!("oci://registry.example.com/f@sha256:{HEX}"));
        assert_eq!(r.tag, None);
        assert_eq!(
            r.to_string(),
            format!("registry.example.com/f@sha256:{HEX}")
        );
    }

    #[test]
    fn no_tag_means_latest() {
        let r = parse("registry.example.com/f");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.manifest_selector(), "latest");
    }

    #[test]
    fn port_is_not_a_tag() {
        let r = parse("127.0.0.1:5000/filters/auth");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "filters/auth");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert!(r.is_loopback());
        assert_eq!(r.api_base(), "http://127.0.0.1:5000/v2/filters/auth");
        let r = parse("localhost:5000/f:v2");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert!(r.is_loopback());
        let r = parse("[::1]:5000/f:v2");
        assert!(r.is_loopback());
        assert_eq!(r.api_base(), "http://[::1]:5000/v2/f");
    }

    #[test]
    fn only_loopback_is_plain_http() {
        for remote in [
            "ghcr.io/f:v1",
            "10.0.0.1:5000/f:v1",
            "localhost.example.com/f",
        ] {
            assert!(!parse(remote).is_loopback(), "{remote}");
            assert!(parse(remote).api_base().starts_with("https://"), "{remote}");
        }
    }

    #[test]
    fn docker_hub_api_host() {
        let r = parse("docker.io/library/filter:v1");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(
            r.api_base(),
            "https://registry-1.docker.io/v2/library/filter"
        );
    }

    #[test]
    fn uppercase_digest_is_normalised() {
        let r = parse(&format!("ghcr.io/f@sha256:{}", HEX.to_ascii_uppercase()));
        assert_eq!(r.digest, Some(format!("sha256:{HEX}")));
    }

    #[test]
    fn refusals_say_why() {
        assert!(refused("").contains("empty"));
        assert!(refused("filter:v1").contains("no registry"));
        assert!(refused("library/filter:v1").contains("no default registry"));
        assert!(refused("ghcr.io/f@sha256:abc").contains("64 hex"));
        assert!(refused(&format!("ghcr.io/f@md5:{HEX}")).contains("sha256"));
        assert!(refused("ghcr.io/Org/f").contains("lowercase"));
        assert!(refused("ghcr.io//f").contains("component"));
        assert!(refused("ghcr.io/f:").contains("tag"));
        assert!(refused("ghcr.io/f:-x").contains("tag"));
        assert!(refused("ghcr.io:0/f").contains("port"));
        assert!(refused("ghcr.io:http/f").contains("port"));
        assert!(refused("gh cr.io/f").contains("host"));
        assert!(refused(&"a".repeat(2000)).contains("1024"));
    }
}
