//! Header rules of a proxy hop: hop-by-hop removal and the `x-forwarded-*` / `x-request-id`
//! headers Envoy's connection manager sets.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-weir-overloaded`: set on local replies refused by a circuit breaker.
pub static X_WEIR_OVERLOADED: HeaderName = HeaderName::from_static("x-weir-overloaded");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the headers that describe one connection rather than the message (RFC 9110
/// section 7.6.1), including every header the `Connection` header names. `te: trailers` is
/// kept on requests, as it is end-to-end in meaning for HTTP/2 and gRPC.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // Most messages (all HTTP/2 and HTTP/3 ones) carry none: one pass of cheap name compares
    // instead of a hashed lookup per hop-by-hop name (callgrind: 2.9k instructions a request),
    // noting which are there so that only those are removed.
    let mut present = 0u8;
    for name in headers.keys() {
        // Most names are passed over on their length alone.
        if !hop_by_hop_length(name.as_str().len()) {
            continue;
        }
        if let Some(at) = HOP_BY_HOP.iter().position(|hop| *hop == name) {
            present |= 1 << at;
        }
    }
    if present == 0 {
        return;
    }
    // The headers `Connection` names. An upstream's `Connection: keep-alive` names one that
    // goes anyway: only a name outside the list is parsed (allocated), and `close` is looked
    // up by its text.
    let mut named: Vec<HeaderName> = Vec::new();
    let mut close = false;
    for token in headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        if token.eq_ignore_ascii_case("close") {
            close = true;
        } else if !HOP_BY_HOP
            .iter()
            .any(|hop| token.eq_ignore_ascii_case(hop.as_str()))
            && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
        {
            named.push(name);
        }
    }
    for name in &named {
        headers.remove(name);
    }
    if close {
        headers.remove("close");
    }
    let te_trailers = keep_te_trailers
        && headers.get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
    for (at, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << at) != 0 {
            headers.remove(*name);
        }
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether a name `len` bytes long may be one of [`HOP_BY_HOP`] (their lengths).
fn hop_by_hop_length(len: usize) -> bool {
    matches!(len, 2 | 7 | 10 | 16 | 17)
}

/// The headers [`remove_hop_by_hop`] always removes.
static HOP_BY_HOP: [&HeaderName; 6] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// Appends `client` to `x-forwarded-for`, as Envoy does with `use_remote_address: true`.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    if let Some(value) = forwarded_for(headers.get(&X_FORWARDED_FOR), client) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

/// `x-forwarded-for` with `client` appended to `existing` (see [`append_forwarded_for`]), as
/// Envoy writes it: joined by a bare `,`, and a client on the loopback given as the host's
/// own address ([`crate::socket::host_address`]).
pub fn forwarded_for(existing: Option<&HeaderValue>, client: IpAddr) -> Option<HeaderValue> {
    let client = client.to_canonical();
    let client = if client.is_loopback() {
        crate::socket::host_address()
    } else {
        client
    }
    .to_string();
    let value = match existing.and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing},{client}"),
        _ => client,
    };
    // An IP address and a header that was already valid text form a valid value.
    HeaderValue::from_str(&value).ok()
}

/// A random version 4 UUID in its text form, for `x-request-id`.
pub fn new_request_id() -> HeaderValue {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    HeaderValue::from_bytes(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
}

/// The host a request is for: its authority (HTTP/2, HTTP/3, absolute-form HTTP/1.1), else
/// its Host header; `None` when neither is there or the header is not text.
pub fn request_host<B>(request: &http::Request<B>) -> Option<&str> {
    match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request.headers().get(http::header::HOST)?.to_str().ok(),
    }
}

/// The body length a head declares: its `content-length`, when that is one number (repeated
/// values must agree, RFC 9110 8.6). `None` when absent or malformed.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.to_str().ok()?.split(',') {
            let item: u64 = item.trim().parse().ok()?;
            if length.is_some_and(|length| length != item) {
                return None;
            }
            length = Some(item);
        }
    }
    length
}

/// Today's `date` header value (RFC 9110 6.6.1), formatted at most once a second per thread.
pub fn date_now() -> HeaderValue {
    thread_local! {
        static CACHED: std::cell::RefCell<Option<(u64, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with_borrow_mut(|cached| match cached {
        Some((at, value)) if *at == second => value.clone(),
        _ => {
            let value = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
            *cached = Some((second, value.clone()));
            value
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, x-secret, te".parse().unwrap(),
        );
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers, gzip".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("proxy-connection", "close".parse().unwrap());
        h.insert(header::UPGRADE, "h2c".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h, true);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "te"]);
        assert_eq!(h[header::TE], "trailers");
    }

    #[test]
    fn the_headers_connection_names_go_whatever_their_case() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "Keep-Alive, CLOSE".parse().unwrap());
        h.append(header::CONNECTION, "X-Other".parse().unwrap());
        h.insert("close", "1".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    /// A hostile `Connection`: thousands of tokens, empty ones, names that are not header
    /// names, a huge one. The named real headers go, the rest stays, nothing panics.
    #[test]
    fn a_hostile_connection_header_removes_only_what_it_names() {
        let mut h = HeaderMap::new();
        let mut tokens = [",,", " ", "bad name", "x-named", "a:b", "close"].join(",");
        for i in 0..5_000 {
            tokens.push_str(&format!(",x-t{i}"));
        }
        tokens.push(',');
        tokens.push_str(&"a".repeat(60_000));
        h.insert(header::CONNECTION, tokens.parse().unwrap());
        // A value that is not text is passed over whole.
        h.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-kept, \xe9").unwrap(),
        );
        h.insert("x-named", "1".parse().unwrap());
        h.insert("x-t4999", "1".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn the_length_sieve_lets_every_hop_by_hop_name_through() {
        for name in HOP_BY_HOP {
            assert!(hop_by_hop_length(name.as_str().len()), "{name}");
        }
    }

    #[test]
    fn each_hop_by_hop_header_alone_goes_too() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-kept", "1".parse().unwrap());
            h.insert(HeaderName::from_static(name), "gzip".parse().unwrap());
            remove_hop_by_hop(&mut h, false);
            let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(names, ["x-kept"], "{name}");
        }
    }

    #[test]
    fn content_length_is_one_number() {
        let of = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_LENGTH, v.parse().unwrap());
            }
            content_length(&h)
        };
        assert_eq!(of(&[]), None);
        assert_eq!(of(&["12"]), Some(12));
        assert_eq!(of(&["12", "12"]), Some(12));
        assert_eq!(of(&["12, 12"]), Some(12));
        assert_eq!(of(&["12", "13"]), None);
        assert_eq!(of(&["-1"]), None);
        assert_eq!(of(&["twelve"]), None);
    }

    #[test]
    fn date_is_an_http_date() {
        let value = date_now();
        let parsed = httpdate::parse_http_date(value.to_str().unwrap()).unwrap();
        let age = std::time::SystemTime::now().duration_since(parsed).unwrap();
        assert!(age < std::time::Duration::from_secs(3), "{value:?}");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        append_forwarded_for(&mut h, "::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1,192.0.2.7");
        // A client on the loopback is given as the host (Envoy's local address).
        append_forwarded_for(&mut h, "::ffff:127.0.0.1".parse().unwrap());
        let host = crate::socket::host_address();
        assert_eq!(
            h[&X_FORWARDED_FOR],
            format!("10.0.0.1,192.0.2.7,{host}").as_str()
        );
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let a = new_request_id();
        let text = a.to_str().unwrap();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        assert_ne!(a, new_request_id());
    }
}
