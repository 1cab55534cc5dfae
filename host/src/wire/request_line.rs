//! A request line of an HTTP/1 connection, screened for its version before the HTTP/1.1
//! codec (hyper) reads it, as Envoy's codec screens it, for every request of the connection
//! (which [`super::request_framing`] finds):
//!
//! - HTTP/0.9 (`GET /`, no version, no headers; or `HTTP/0.9`), which hyper cannot parse,
//!   is read as the HTTP/1.0 request Envoy makes of it;
//! - where HTTP/1.0 is not served (`accept_http_10` off, Envoy's default), an HTTP/1.0 or
//!   0.9 request line is read as HTTP/1.1 and the request marked refused, so that its 426
//!   goes out as Envoy's does, in HTTP/1.1 (hyper answers an HTTP/1.0 request in HTTP/1.0),
//!   whether it is the first request of its connection or follows HTTP/1.1 ones.

use bytes::{Bytes, BytesMut};

/// What a request line said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screened {
    /// The bytes for the codec to read: the line (rewritten where its version was) and
    /// whatever followed it.
    pub bytes: Bytes,
    /// The request's version is one the connection manager does not serve: it is answered
    /// 426 (the codec reads it as HTTP/1.1).
    pub refused: bool,
}

/// Screens `held`, bytes from the start of a request head that hold its whole request line
/// (up to its `\n`); `accept_http_10` is the connection manager's setting. Bytes that do not
/// start with a request line (or with one of another version) are passed as they are.
pub fn screen(held: BytesMut, accept_http_10: bool) -> Screened {
    let as_is = |held: BytesMut| Screened {
        bytes: held.freeze(),
        refused: false,
    };
    let Some(end) = held.iter().position(|b| *b == b'\n') else {
        return as_is(held);
    };
    let line = held[..end].strip_suffix(b"\r").unwrap_or(&held[..end]);
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return as_is(held);
    };
    let version = parts.next();
    if parts.next().is_some() || method.is_empty() || target.is_empty() {
        return as_is(held);
    }
    let (http09, low) = match version {
        None => (true, true),
        Some(b"HTTP/0.9") => (false, true),
        Some(b"HTTP/1.0") => (false, true),
        Some(_) => (false, false),
    };
    if !low || (accept_http_10 && version == Some(b"HTTP/1.0")) {
        return as_is(held);
    }
    let served_as: &[u8] = if accept_http_10 {
        b"HTTP/1.0"
    } else {
        b"HTTP/1.1"
    };
    let mut bytes = BytesMut::with_capacity(held.len() + 16);
    bytes.extend_from_slice(method);
    bytes.extend_from_slice(b" ");
    bytes.extend_from_slice(target);
    bytes.extend_from_slice(b" ");
    bytes.extend_from_slice(served_as);
    bytes.extend_from_slice(b"\r\n");
    if http09 {
        // An HTTP/0.9 request has no headers: its head ends with its line.
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(&held[end + 1..]);
    Screened {
        bytes: bytes.freeze(),
        refused: !accept_http_10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screened(bytes: &[u8], accept: bool) -> (String, bool) {
        let out = screen(BytesMut::from(bytes), accept);
        (
            String::from_utf8_lossy(&out.bytes).into_owned(),
            out.refused,
        )
    }

    #[test]
    fn http11_and_what_is_no_request_line_pass_as_they_are() {
        for (input, accept) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], false),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", true),
            (b"\r\nGET / HTTP/1.0\r\n", false),
            (b"GET /", false),
            (b"GET  / HTTP/1.0\r\n", false),
        ] {
            let (out, refused) = screened(input, accept);
            assert_eq!(out.as_bytes(), input);
            assert!(!refused, "{out:?}");
        }
    }

    #[test]
    fn a_low_version_is_read_as_http11_and_refused_unless_accepted() {
        assert_eq!(
            screened(b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n", false),
            ("GET /a HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(), true)
        );
        assert_eq!(
            screened(b"GET /a HTTP/0.9\r\n\r\n", false),
            ("GET /a HTTP/1.1\r\n\r\n".to_owned(), true)
        );
        assert_eq!(
            screened(b"GET /a\r\n", false),
            ("GET /a HTTP/1.1\r\n\r\n".to_owned(), true)
        );
    }

    #[test]
    fn accepted_http09_is_read_as_http10() {
        assert_eq!(
            screened(b"GET /a\r\n", true),
            ("GET /a HTTP/1.0\r\n\r\n".to_owned(), false)
        );
        assert_eq!(
            screened(b"GET /a\n", true),
            ("GET /a HTTP/1.0\r\n\r\n".to_owned(), false)
        );
        assert_eq!(
            screened(b"GET /a HTTP/0.9\r\nX: y\r\n\r\n", true),
            ("GET /a HTTP/1.0\r\nX: y\r\n\r\n".to_owned(), false)
        );
    }
}
