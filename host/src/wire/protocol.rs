//! The one type for what tunnel a request asks for, whatever the wire: HTTP/1.1 `Upgrade: X`,
//! HTTP/2 extended CONNECT with `:protocol X` (RFC 8441), HTTP/3 extended CONNECT (RFC 9220)
//! and plain CONNECT.
//!
//! Each codec has its own representation of `:protocol` (the `h2` crate's
//! `h2::ext::Protocol`, the HTTP/3 field weir decodes itself in [`super::h3_connect`], the
//! `Upgrade` header on HTTP/1.1); each is converted to and from [`Protocol`] where the codec
//! meets the rest of weir, so nothing above the wire reads a codec's type. A request from an
//! HTTP/2 or HTTP/3 extended CONNECT carries its `:protocol` as a [`Protocol`] in its
//! extensions; [`tunnel_kind`] reads either shape into one [`TunnelKind`].

use http::header::InvalidHeaderValue;
use http::{HeaderMap, HeaderValue, Method, Request, header};

/// The name of a protocol a tunnel carries: an `Upgrade` token or a `:protocol` value.
///
/// In a request's extensions it is the `:protocol` as received (not yet checked);
/// in a [`TunnelKind::Upgrade`] it is checked and lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Protocol(String);

impl Protocol {
    /// A protocol named `name`, as it is.
    pub fn new(name: impl Into<String>) -> Protocol {
        Protocol(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// From an HTTP/2 `:protocol`, as the `h2` crate carries it.
    pub fn from_h2(protocol: &h2::ext::Protocol) -> Protocol {
        Protocol::new(protocol.as_str())
    }

    /// As the `h2` crate sends `:protocol` (in a request head's extensions).
    pub fn to_h2(&self) -> h2::ext::Protocol {
        h2::ext::Protocol::from(self.0.as_str())
    }

    /// Marks an HTTP/1.1 head as an upgrade to this protocol: `Connection: upgrade` and
    /// `Upgrade: <name>`. Fails (nothing inserted) where the name is no header value.
    pub fn insert_h1_upgrade(&self, headers: &mut HeaderMap) -> Result<(), InvalidHeaderValue> {
        let upgrade = HeaderValue::from_str(&self.0)?;
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
        Ok(())
    }
}

impl From<&str> for Protocol {
    fn from(name: &str) -> Protocol {
        Protocol::new(name)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of tunnel a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelKind {
    /// An upgrade to this protocol (lowercased): HTTP/1.1 `Upgrade`, or HTTP/2+ extended
    /// CONNECT's `:protocol`.
    Upgrade(Protocol),
    /// A plain CONNECT: a TCP tunnel to the request's authority.
    Connect,
}

impl TunnelKind {
    /// The `upgrade_type` that enables it (`connect` for CONNECT).
    pub fn upgrade_type(&self) -> &str {
        match self {
            TunnelKind::Upgrade(protocol) => protocol.as_str(),
            TunnelKind::Connect => "connect",
        }
    }
}

/// A request that asks for a tunnel in a malformed way; the text says how (a 400's detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedTunnel(pub &'static str);

/// Whether `request` asks for a tunnel, and which. `Upgrade: h2c` is not one: it is dropped
/// with the other hop-by-hop headers, as Envoy does.
pub fn tunnel_kind<B>(request: &Request<B>) -> Result<Option<TunnelKind>, MalformedTunnel> {
    if request.method() == Method::CONNECT {
        if let Some(protocol) = request.extensions().get::<Protocol>() {
            let protocol = protocol.as_str();
            if protocol.is_empty() || !protocol.bytes().all(is_token_byte) {
                return Err(MalformedTunnel("malformed :protocol"));
            }
            return Ok(Some(TunnelKind::Upgrade(Protocol::new(
                protocol.to_ascii_lowercase(),
            ))));
        }
        if request.uri().authority().is_none() {
            return Err(MalformedTunnel("CONNECT needs an authority (host:port)"));
        }
        return Ok(Some(TunnelKind::Connect));
    }
    h1_upgrade(request.headers())
}

/// The upgrade an HTTP/1.1 head asks for: `Connection: upgrade` with an `Upgrade` header.
fn h1_upgrade(headers: &HeaderMap) -> Result<Option<TunnelKind>, MalformedTunnel> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    if !connection_upgrade {
        return Ok(None);
    }
    match headers.get(header::UPGRADE).map(HeaderValue::to_str) {
        None => Ok(None),
        Some(Ok(value)) if value.trim().eq_ignore_ascii_case("h2c") => Ok(None),
        Some(Ok(value)) => {
            // `Upgrade` may list several protocols; weir passes the first on, as Envoy does.
            let first = value.split(',').next().unwrap_or("").trim();
            if first.is_empty() || !first.bytes().all(|b| is_token_byte(b) || b == b'/') {
                return Err(MalformedTunnel("malformed upgrade header"));
            }
            Ok(Some(TunnelKind::Upgrade(Protocol::new(
                first.to_ascii_lowercase(),
            ))))
        }
        Some(Err(_)) => Err(MalformedTunnel("malformed upgrade header")),
    }
}

/// RFC 9110 token characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(protocol: &str) -> Option<TunnelKind> {
        Some(TunnelKind::Upgrade(Protocol::new(protocol)))
    }

    #[test]
    fn an_h1_upgrade_is_its_first_token_lowercased() {
        let request = Request::get("/chat")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "WebSocket, foo/2")
            .body(())
            .unwrap();
        assert_eq!(tunnel_kind(&request), Ok(upgrade("websocket")));
    }

    #[test]
    fn h2c_and_an_upgrade_without_connection_upgrade_are_no_tunnel() {
        let h2c = Request::get("/")
            .header("connection", "upgrade")
            .header("upgrade", "h2c")
            .body(())
            .unwrap();
        assert_eq!(tunnel_kind(&h2c), Ok(None));
        let bare = Request::get("/")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert_eq!(tunnel_kind(&bare), Ok(None));
    }

    #[test]
    fn a_malformed_upgrade_header_is_refused() {
        let request = Request::get("/")
            .header("connection", "upgrade")
            .header("upgrade", "web socket")
            .body(())
            .unwrap();
        assert_eq!(
            tunnel_kind(&request),
            Err(MalformedTunnel("malformed upgrade header"))
        );
    }

    #[test]
    fn an_extended_connect_is_an_upgrade_to_its_protocol() {
        let mut request = Request::connect("https://ws.example/chat")
            .body(())
            .unwrap();
        request
            .extensions_mut()
            .insert(Protocol::from_h2(&h2::ext::Protocol::from("WebSocket")));
        assert_eq!(tunnel_kind(&request), Ok(upgrade("websocket")));
        // `/` is allowed in an Upgrade token, not in `:protocol`.
        request.extensions_mut().insert(Protocol::new("foo/2"));
        assert_eq!(
            tunnel_kind(&request),
            Err(MalformedTunnel("malformed :protocol"))
        );
    }

    #[test]
    fn a_plain_connect_needs_an_authority() {
        let request = Request::connect("example.com:443").body(()).unwrap();
        assert_eq!(tunnel_kind(&request), Ok(Some(TunnelKind::Connect)));
        let no_authority = Request::connect("/").body(()).unwrap();
        assert_eq!(
            tunnel_kind(&no_authority),
            Err(MalformedTunnel("CONNECT needs an authority (host:port)"))
        );
    }

    #[test]
    fn the_h1_and_h2_forms_convert_both_ways() {
        let protocol = Protocol::new("websocket");
        assert_eq!(Protocol::from_h2(&protocol.to_h2()), protocol);
        let mut headers = HeaderMap::new();
        protocol.insert_h1_upgrade(&mut headers).unwrap();
        let request = {
            let mut request = Request::get("/").body(()).unwrap();
            *request.headers_mut() = headers;
            request
        };
        assert_eq!(tunnel_kind(&request), Ok(upgrade("websocket")));
        assert!(
            Protocol::new("bad\nname")
                .insert_h1_upgrade(&mut HeaderMap::new())
                .is_err()
        );
    }
}
