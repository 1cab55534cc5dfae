//! What the rest of weir asks of the HTTP version a request or response head came on, asked
//! of the head itself so that only the wire knows which versions there are: whether the
//! message is one stream among others on its connection, and the name a log or a filter shows.
//!
//! This is the start of the one head model for every version (the issue's `wire/` layer):
//! callers above the wire ask [`WireHead::multiplexed`] rather than matching on
//! `Version::HTTP_2 | Version::HTTP_3` themselves.

use http::Version;

/// The protocol families Envoy's per-connection statistics count
/// (`downstream_cx_http1_total`, `_http2_total`, `_http3_total`): HTTP/1.0 and HTTP/1.1 are
/// one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolFamily {
    /// HTTP/1.0 and HTTP/1.1 (and 0.9).
    Http1,
    /// HTTP/2.
    Http2,
    /// HTTP/3.
    Http3,
}

/// The version a head carries between hops, while it is weir's and no codec's: an upstream
/// request before its pool's codec writes it (each pool sets its own version), a response
/// before the downstream codec writes it (each writes its own). HTTP/1.1, because hyper's
/// HTTP/1.1 codecs take a head as it is.
pub const BETWEEN_HOPS: Version = Version::HTTP_11;

/// The questions weir asks of a head's HTTP version.
pub trait WireHead {
    /// The HTTP version the head came on.
    fn wire_version(&self) -> Version;

    /// Whether the message is one stream among others on its connection (HTTP/2, HTTP/3):
    /// a tunnel is carried on the stream (its DATA frames), a failure resets the stream and
    /// not the connection, and a CONNECT's `2xx` is the tunnel itself. Otherwise (HTTP/1.x)
    /// the connection carries this one message at a time, and a tunnel takes the connection
    /// over.
    fn multiplexed(&self) -> bool {
        matches!(self.wire_version(), Version::HTTP_2 | Version::HTTP_3)
    }

    /// Whether the message's connection is told how it goes on in a `connection` header
    /// (HTTP/1.x: `connection: close` ends it after this message). HTTP/2 and HTTP/3 forbid
    /// the header (RFC 9113 8.2.2, RFC 9114 4.2): their connection stops taking streams
    /// with GOAWAY instead.
    fn carries_connection_header(&self) -> bool {
        !self.multiplexed()
    }

    /// Whether the message came over QUIC (HTTP/3): an `alt-svc` it carries offers nothing
    /// new, the alternative is in use already.
    fn over_quic(&self) -> bool {
        self.wire_version() == Version::HTTP_3
    }

    /// The family the message's connection is counted in.
    fn protocol_family(&self) -> ProtocolFamily {
        match self.wire_version() {
            Version::HTTP_2 => ProtocolFamily::Http2,
            Version::HTTP_3 => ProtocolFamily::Http3,
            _ => ProtocolFamily::Http1,
        }
    }

    /// The protocol's name as proxy-wasm's `request.protocol` and the access log show it:
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3`.
    fn protocol_name(&self) -> &'static str {
        match self.wire_version() {
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        }
    }
}

impl WireHead for Version {
    fn wire_version(&self) -> Version {
        *self
    }
}

impl<B> WireHead for http::Request<B> {
    fn wire_version(&self) -> Version {
        self.version()
    }
}

impl<B> WireHead for http::Response<B> {
    fn wire_version(&self) -> Version {
        self.version()
    }
}

impl WireHead for http::request::Parts {
    fn wire_version(&self) -> Version {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_h2_and_h3_are_multiplexed() {
        let versions = [
            (Version::HTTP_09, false, "HTTP/0.9", ProtocolFamily::Http1),
            (Version::HTTP_10, false, "HTTP/1.0", ProtocolFamily::Http1),
            (Version::HTTP_11, false, "HTTP/1.1", ProtocolFamily::Http1),
            (Version::HTTP_2, true, "HTTP/2", ProtocolFamily::Http2),
            (Version::HTTP_3, true, "HTTP/3", ProtocolFamily::Http3),
        ];
        for (version, multiplexed, name, family) in versions {
            assert_eq!(version.multiplexed(), multiplexed, "{version:?}");
            assert_eq!(version.carries_connection_header(), !multiplexed);
            assert_eq!(version.protocol_family(), family);
            assert_eq!(version.over_quic(), family == ProtocolFamily::Http3);
            assert_eq!(version.protocol_name(), name);
            let mut request = http::Request::new(());
            *request.version_mut() = version;
            assert_eq!(request.multiplexed(), multiplexed);
            assert_eq!(request.into_parts().0.protocol_name(), name);
        }
    }
}
