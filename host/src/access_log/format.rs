//! Envoy's access log format strings: `%COMMAND(arg):N%` operators between literal text.
//!
//! A format is parsed once, when the config is loaded, into [`Part`]s; a request then only
//! fills them in from a [`LogContext`]. Unknown operators are refused at parse time, naming
//! the operator, so a config that Envoy would read differently never loads. The same parser
//! serves any feature that takes Envoy's command operators (a header value with `%REQ(x)%`).

use http::{HeaderMap, HeaderName, HeaderValue};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use super::picked::PickedHeaders;

/// Text appended to a line. A line is bytes, not a `String`: a header's value is written as
/// its bytes came (as Envoy writes them), with no UTF-8 check per value.
trait PushText {
    fn push_str(&mut self, text: &str);
}

impl PushText for Vec<u8> {
    fn push_str(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

/// Envoy's default access log format (when `log_format` is not given).
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// Why a format string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// An operator weir does not implement (or Envoy does not have).
    #[error("unsupported command operator %{0}%")]
    Unsupported(String),
    /// An operator with a malformed argument or length.
    #[error("malformed command operator %{0}%: {1}")]
    Malformed(String, &'static str),
}

/// What one request's log entry knows; every field is optional, so other features (header
/// values) can fill in only what they have. A missing value prints as `-` (text) or `null`
/// (JSON), as Envoy's.
#[derive(Debug, Default, Clone)]
pub struct LogContext<'a> {
    /// When the request's head arrived.
    pub start: Option<SystemTime>,
    /// `:method`.
    pub method: Option<&'a str>,
    /// `:path` (with query).
    pub path: Option<&'a str>,
    /// `:authority` (or `host`).
    pub authority: Option<&'a str>,
    /// `:scheme`.
    pub scheme: Option<&'a str>,
    /// The request's headers.
    pub request_headers: Option<&'a HeaderMap>,
    /// The request headers an access log entry kept (see [`PickedHeaders`]), where
    /// `request_headers` is not given.
    pub request_picked: Option<&'a PickedHeaders>,
    /// The response's headers.
    pub response_headers: Option<&'a HeaderMap>,
    /// The response headers an access log entry kept.
    pub response_picked: Option<&'a PickedHeaders>,
    /// The response's trailers.
    pub response_trailers: Option<&'a HeaderMap>,
    /// The response status.
    pub status: Option<u16>,
    /// Envoy's response flags, comma-separated (empty when none).
    pub flags: &'a str,
    /// `%RESPONSE_CODE_DETAILS%`.
    pub details: Option<&'a str>,
    /// Request body bytes received.
    pub bytes_received: u64,
    /// Response body bytes sent.
    pub bytes_sent: u64,
    /// Start to the last response byte.
    pub duration: Option<Duration>,
    /// Start to the last request byte.
    pub request_duration: Option<Duration>,
    /// Start to the first response byte from upstream.
    pub response_duration: Option<Duration>,
    /// The upstream host the request went to.
    pub upstream_host: Option<SocketAddr>,
    /// The cluster the request was routed to.
    pub upstream_cluster: Option<&'a str>,
    /// Why connecting upstream failed.
    pub upstream_failure: Option<&'a str>,
    /// The downstream peer.
    pub downstream_remote: Option<SocketAddr>,
    /// The listener's address the connection came to.
    pub downstream_local: Option<SocketAddr>,
    /// `HTTP/1.1`, `HTTP/2`, `HTTP/3`.
    pub protocol: Option<&'a str>,
    /// The TLS SNI.
    pub sni: Option<&'a str>,
    /// The downstream connection's id.
    pub connection_id: Option<u64>,
    /// Upstream attempts made.
    pub attempts: Option<u32>,
    /// The request was a health check (the health check filter said so).
    pub health_check: bool,
}

/// One operator's value: absent, text, or a number (typed as such in JSON).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Nothing to say: `-` / `null`.
    None,
    /// Text.
    Text(Cow<'a, str>),
    /// A number.
    Number(u64),
}

/// Which header map `%REQ%`, `%RESP%` and `%TRAILER%` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Headers {
    Request,
    Response,
    Trailer,
}

/// The command operators weir implements.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    StartTime(TimePattern),
    Header {
        map: Headers,
        name: HeaderKey,
        fallback: Option<HeaderKey>,
    },
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    RequestDuration,
    ResponseDuration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamTransportFailureReason,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    Protocol,
    RequestedServerName,
    ConnectionId,
    UpstreamRequestAttemptCount,
}

/// A header an operator reads: its name as written (lowercase; `:path` and the like are
/// pseudo-headers) and, for a real header, the name parsed once, so a line's lookups neither
/// parse nor validate names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeaderKey {
    text: String,
    name: Option<http::HeaderName>,
    /// The pseudo-header it names, if it is one.
    pseudo: Option<Pseudo>,
    /// Where an entry's [`PickedHeaders`] keep its values (`:authority`'s: the `host`
    /// header's), once the format was given the names an entry keeps
    /// ([`Format::assign_slots`]).
    slot: Option<usize>,
}

/// The pseudo-headers a format may read, told apart once at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pseudo {
    Method,
    Path,
    Authority,
    Scheme,
    Status,
}

impl HeaderKey {
    fn new(text: String) -> HeaderKey {
        let name = http::HeaderName::from_bytes(text.as_bytes()).ok();
        let pseudo = match text.as_str() {
            ":method" => Some(Pseudo::Method),
            ":path" => Some(Pseudo::Path),
            ":authority" => Some(Pseudo::Authority),
            ":scheme" => Some(Pseudo::Scheme),
            ":status" => Some(Pseudo::Status),
            _ => None,
        };
        HeaderKey {
            text,
            name,
            pseudo,
            slot: None,
        }
    }
}

/// A piece of a format: text as written, or an operator (with its `:N` length limit).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Operator(Operator, Option<usize>),
}

/// A parsed format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    parts: Vec<Part>,
}

impl Format {
    /// Parses an Envoy format string.
    pub fn parse(text: &str) -> Result<Format, FormatError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            // `%%` is a literal percent sign.
            if let Some(tail) = after.strip_prefix('%') {
                literal.push('%');
                rest = tail;
                continue;
            }
            let (operator, tail) = split_operator(after)?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(parse_operator(operator)?);
            rest = tail;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Format { parts })
    }

    /// Whether the format reads request headers (so a caller keeps them only then).
    pub fn uses_request_headers(&self) -> bool {
        self.uses(Headers::Request)
    }

    /// Whether the format reads response headers or trailers.
    pub fn uses_response_headers(&self) -> bool {
        self.uses(Headers::Response) || self.uses(Headers::Trailer)
    }

    /// Whether the format prints `%UPSTREAM_CLUSTER%` (the router notes the cluster's name
    /// for the entry only then).
    pub fn uses_upstream_cluster(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, Part::Operator(Operator::UpstreamCluster, _)))
    }

    /// The (lowercase, non-pseudo) request header names the format reads: an entry keeps
    /// a copy of those alone.
    pub fn request_header_names(&self) -> impl Iterator<Item = &str> {
        self.header_names(Headers::Request)
    }

    /// The response header names the format reads (see [`Self::request_header_names`]).
    pub fn response_header_names(&self) -> impl Iterator<Item = &str> {
        self.header_names(Headers::Response)
    }

    /// Gives each header operator the slot of its name among the names an entry keeps of a
    /// request (`request`) and of a response (`response`), where [`PickedHeaders`] keep its
    /// values.
    pub fn assign_slots(&mut self, request: &[HeaderName], response: &[HeaderName]) {
        for part in &mut self.parts {
            let Part::Operator(
                Operator::Header {
                    map,
                    name,
                    fallback,
                },
                _,
            ) = part
            else {
                continue;
            };
            let names = match map {
                Headers::Request => request,
                Headers::Response => response,
                Headers::Trailer => continue,
            };
            for key in std::iter::once(name).chain(fallback) {
                let wanted = picked_name(&key.text);
                key.slot = names.iter().position(|name| name.as_str() == wanted);
            }
        }
    }

    fn header_names(&self, which: Headers) -> impl Iterator<Item = &str> {
        self.parts
            .iter()
            .filter_map(move |part| match part {
                Part::Operator(
                    Operator::Header {
                        map,
                        name,
                        fallback,
                    },
                    _,
                ) if *map == which => Some(std::iter::once(name).chain(fallback)),
                _ => None,
            })
            .flatten()
            .map(|key| picked_name(&key.text))
            .filter(|name| !name.starts_with(':'))
    }

    fn uses(&self, which: Headers) -> bool {
        self.parts.iter().any(
            |part| matches!(part, Part::Operator(Operator::Header { map, .. }, _) if *map == which),
        )
    }

    /// Appends the format filled in from `cx` to `out` (text: a missing value is `-`).
    pub fn render_into(&self, cx: &LogContext<'_>, out: &mut Vec<u8>) {
        self.render_parts(cx, out, "-");
    }

    /// Appends every part to `out`, `missing` for an operator without a value. Values are
    /// written straight into `out` (a line costs one allocation, its own).
    fn render_parts(&self, cx: &LogContext<'_>, out: &mut Vec<u8>, missing: &str) {
        for part in &self.parts {
            match part {
                Part::Literal(text) => push_literal(out, text.as_bytes()),
                Part::Operator(op, None) => write_value(op, cx, out, missing),
                Part::Operator(op, Some(limit)) => {
                    let mut value = Vec::new();
                    write_value(op, cx, &mut value, "");
                    match value.as_slice() {
                        [] => out.push_str(missing),
                        value => out.extend_from_slice(truncate_bytes(value, *limit)),
                    }
                }
            }
        }
    }

    /// The text of a format with no operator (a header value written plainly), if it is one.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// The first operator (as Envoy names it) for which `available` says no: what a feature
    /// that fills in only part of a [`LogContext`] refuses at config time.
    pub fn unavailable_operator(&self, available: impl Fn(&str) -> bool) -> Option<&'static str> {
        self.parts.iter().find_map(|part| match part {
            Part::Operator(op, _) if !available(op.name()) => Some(op.name()),
            _ => None,
        })
    }

    /// Appends the format filled in from `cx` to `out`, a missing value as nothing (Envoy's
    /// header formatter omits empty values where the access log writes `-`).
    pub fn render_omitting_empty(&self, cx: &LogContext<'_>, out: &mut Vec<u8>) {
        self.render_parts(cx, out, "");
    }

    /// The format filled in from `cx`, as text.
    pub fn render(&self, cx: &LogContext<'_>) -> String {
        text_of(self.render_bytes(cx))
    }

    /// The format filled in from `cx`, as the bytes of a line.
    pub fn render_bytes(&self, cx: &LogContext<'_>) -> Vec<u8> {
        // Envoy's default line for a plain request is about 200 bytes.
        let mut out = Vec::with_capacity(256);
        self.render_into(cx, &mut out);
        out
    }

    /// The value as a JSON format's field: a lone operator keeps its type (a number, `null`
    /// when absent); anything else is text.
    pub fn render_json(&self, cx: &LogContext<'_>) -> serde_json::Value {
        if let [Part::Operator(op, limit)] = self.parts.as_slice() {
            return match evaluate(op, cx) {
                Value::None => serde_json::Value::Null,
                Value::Number(n) => serde_json::Value::from(n),
                Value::Text(text) => serde_json::Value::from(truncate(&text, *limit)),
            };
        }
        serde_json::Value::from(self.render(cx))
    }
}

/// `bytes` as text (a value that is not UTF-8 with its bad bytes replaced).
fn text_of(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Appends a format's literal text: a short one (most are a space, a quote and a bracket)
/// byte by byte, cheaper than a copy of unknown length.
fn push_literal(out: &mut Vec<u8>, text: &[u8]) {
    if text.len() <= 4 {
        for &byte in text {
            out.push(byte);
        }
    } else {
        out.extend_from_slice(text);
    }
}

/// The first `limit` characters of a value (its first `limit` bytes where it is not UTF-8).
fn truncate_bytes(value: &[u8], limit: usize) -> &[u8] {
    match std::str::from_utf8(value) {
        Ok(text) => truncate(text, Some(limit)).as_bytes(),
        Err(_) => &value[..limit.min(value.len())],
    }
}

fn truncate(text: &str, limit: Option<usize>) -> &str {
    match limit {
        Some(n) => match text.char_indices().nth(n) {
            Some((at, _)) => &text[..at],
            None => text,
        },
        None => text,
    }
}

/// Splits `NAME(args):N%rest` into the operator text and the rest.
fn split_operator(after: &str) -> Result<(&str, &str), FormatError> {
    // The operator ends at the first `%` outside parentheses (START_TIME's argument has its
    // own `%`s).
    let mut depth = 0usize;
    for (i, c) in after.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '%' if depth == 0 => return Ok((&after[..i], &after[i + 1..])),
            _ => {}
        }
    }
    Err(FormatError::Malformed(
        after.chars().take(40).collect(),
        "no closing %",
    ))
}

fn parse_operator(text: &str) -> Result<Part, FormatError> {
    let malformed = |why| FormatError::Malformed(text.to_string(), why);
    let (head, limit) = match text.rfind(')') {
        Some(close) => {
            let (head, tail) = text.split_at(close + 1);
            (head, tail)
        }
        None => match text.find(':') {
            Some(colon) => text.split_at(colon),
            None => (text, ""),
        },
    };
    let limit = match limit {
        "" => None,
        tail => Some(
            tail.strip_prefix(':')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| malformed("the length after ':' must be a number"))?,
        ),
    };
    let (name, arg) = match head.find('(') {
        Some(open) => {
            let arg = head[open + 1..]
                .strip_suffix(')')
                .ok_or_else(|| malformed("unclosed '('"))?;
            (&head[..open], Some(arg))
        }
        None => (head, None),
    };
    let header = |map| -> Result<Operator, FormatError> {
        let arg = arg.ok_or_else(|| malformed("needs a header name"))?;
        let (name, fallback) = match arg.split_once('?') {
            Some((name, fallback)) => (name, Some(HeaderKey::new(fallback.to_ascii_lowercase()))),
            None => (arg, None),
        };
        if name.is_empty() {
            return Err(malformed("needs a header name"));
        }
        Ok(Operator::Header {
            map,
            name: HeaderKey::new(name.to_ascii_lowercase()),
            fallback,
        })
    };
    let plain = |op: Operator| -> Result<Operator, FormatError> {
        match arg {
            Some(_) => Err(malformed("takes no argument")),
            None => Ok(op),
        }
    };
    let op = match name {
        "START_TIME" => Operator::StartTime(TimePattern::new(parse_time_pattern(match arg {
            None | Some("") => DEFAULT_TIME_PATTERN,
            Some(pattern) => pattern,
        }))),
        "REQ" => header(Headers::Request)?,
        "RESP" => header(Headers::Response)?,
        "TRAILER" => header(Headers::Trailer)?,
        "RESPONSE_CODE" => plain(Operator::ResponseCode)?,
        "RESPONSE_FLAGS" => plain(Operator::ResponseFlags)?,
        "RESPONSE_CODE_DETAILS" => plain(Operator::ResponseCodeDetails)?,
        "BYTES_RECEIVED" => plain(Operator::BytesReceived)?,
        "BYTES_SENT" => plain(Operator::BytesSent)?,
        "DURATION" => plain(Operator::Duration)?,
        "REQUEST_DURATION" => plain(Operator::RequestDuration)?,
        "RESPONSE_DURATION" => plain(Operator::ResponseDuration)?,
        "UPSTREAM_HOST" => plain(Operator::UpstreamHost)?,
        "UPSTREAM_CLUSTER" => plain(Operator::UpstreamCluster)?,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => plain(Operator::UpstreamTransportFailureReason)?,
        "DOWNSTREAM_REMOTE_ADDRESS" => plain(Operator::DownstreamRemoteAddress)?,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            plain(Operator::DownstreamRemoteAddressWithoutPort)?
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => plain(Operator::DownstreamLocalAddress)?,
        "PROTOCOL" => plain(Operator::Protocol)?,
        "REQUESTED_SERVER_NAME" => plain(Operator::RequestedServerName)?,
        "CONNECTION_ID" => plain(Operator::ConnectionId)?,
        "UPSTREAM_REQUEST_ATTEMPT_COUNT" => plain(Operator::UpstreamRequestAttemptCount)?,
        _ => return Err(FormatError::Unsupported(text.to_string())),
    };
    Ok(Part::Operator(op, limit))
}

impl Operator {
    /// The operator's name as written in a format (`REQ`, `UPSTREAM_HOST`, ...).
    fn name(&self) -> &'static str {
        match self {
            Operator::StartTime(_) => "START_TIME",
            Operator::Header { map, .. } => match map {
                Headers::Request => "REQ",
                Headers::Response => "RESP",
                Headers::Trailer => "TRAILER",
            },
            Operator::ResponseCode => "RESPONSE_CODE",
            Operator::ResponseFlags => "RESPONSE_FLAGS",
            Operator::ResponseCodeDetails => "RESPONSE_CODE_DETAILS",
            Operator::BytesReceived => "BYTES_RECEIVED",
            Operator::BytesSent => "BYTES_SENT",
            Operator::Duration => "DURATION",
            Operator::RequestDuration => "REQUEST_DURATION",
            Operator::ResponseDuration => "RESPONSE_DURATION",
            Operator::UpstreamHost => "UPSTREAM_HOST",
            Operator::UpstreamCluster => "UPSTREAM_CLUSTER",
            Operator::UpstreamTransportFailureReason => "UPSTREAM_TRANSPORT_FAILURE_REASON",
            Operator::DownstreamRemoteAddress => "DOWNSTREAM_REMOTE_ADDRESS",
            Operator::DownstreamRemoteAddressWithoutPort => {
                "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
            }
            Operator::DownstreamLocalAddress => "DOWNSTREAM_LOCAL_ADDRESS",
            Operator::Protocol => "PROTOCOL",
            Operator::RequestedServerName => "REQUESTED_SERVER_NAME",
            Operator::ConnectionId => "CONNECTION_ID",
            Operator::UpstreamRequestAttemptCount => "UPSTREAM_REQUEST_ATTEMPT_COUNT",
        }
    }
}

fn millis(d: Option<Duration>) -> Value<'static> {
    d.map_or(Value::None, |d| Value::Number(d.as_millis() as u64))
}

fn addr(a: Option<SocketAddr>) -> Value<'static> {
    a.map_or(Value::None, |a| Value::Text(Cow::Owned(a.to_string())))
}

fn text<'a>(s: Option<&'a str>) -> Value<'a> {
    match s {
        Some(s) if !s.is_empty() => Value::Text(Cow::Borrowed(s)),
        _ => Value::None,
    }
}

/// Appends `op`'s value to `out` as text, `missing` when it has none: what [`evaluate`] gives,
/// with the times, addresses and numbers written in place rather than made into strings.
fn write_value(op: &Operator, cx: &LogContext<'_>, out: &mut Vec<u8>, missing: &str) {
    let address = match op {
        Operator::StartTime(pattern) => {
            match cx.start {
                Some(at) => pattern.write(at, out),
                None => out.push_str(missing),
            }
            return;
        }
        Operator::UpstreamHost => cx.upstream_host,
        Operator::DownstreamRemoteAddress => cx.downstream_remote,
        Operator::DownstreamLocalAddress => cx.downstream_local,
        // The operators of Envoy's default format, written without a `Value` in between
        // (each as `evaluate` gives it).
        Operator::Header {
            map,
            name,
            fallback,
        } => {
            if !push_header(*map, name, cx, out)
                && !fallback
                    .as_ref()
                    .is_some_and(|fallback| push_header(*map, fallback, cx, out))
            {
                out.push_str(missing);
            }
            return;
        }
        Operator::ResponseCode => {
            push_number(out, u64::from(cx.status.unwrap_or(0)));
            return;
        }
        Operator::BytesReceived => {
            push_number(out, cx.bytes_received);
            return;
        }
        Operator::BytesSent => {
            push_number(out, cx.bytes_sent);
            return;
        }
        Operator::Duration => {
            push_millis(out, cx.duration, missing);
            return;
        }
        Operator::Protocol => {
            match cx.protocol {
                Some(protocol) if !protocol.is_empty() => out.push_str(protocol),
                _ => out.push_str(missing),
            }
            return;
        }
        _ => {
            match evaluate(op, cx) {
                Value::None => out.push_str(missing),
                Value::Text(text) => out.push_str(&text),
                Value::Number(n) => push_number(out, n),
            }
            return;
        }
    };
    match address {
        Some(address) => push_address(out, address),
        None => out.push_str(missing),
    }
}

/// The header an entry keeps for the operator of the header `text` names: `:authority`
/// is the `host` header on HTTP/1.1.
fn picked_name(text: &str) -> &str {
    if text == ":authority" { "host" } else { text }
}

/// `:authority` as the request had it, else its `host` header (`key` is the operator's).
fn authority<'a>(cx: &LogContext<'a>, key: &HeaderKey) -> Option<&'a str> {
    cx.authority.or_else(|| match cx.request_headers {
        Some(map) => map.get(http::header::HOST).and_then(header_text),
        None => {
            let value = cx.request_picked?.values(key.slot?).next()?;
            std::str::from_utf8(value).ok()
        }
    })
}

/// A header value as text: its bytes as they came where they are UTF-8 (Envoy logs a
/// header's bytes as they are; one that is not UTF-8 is left out, a line being text).
fn header_text(value: &HeaderValue) -> Option<&str> {
    std::str::from_utf8(value.as_bytes()).ok()
}

/// Appends `d` in whole milliseconds, `missing` when there is none.
fn push_millis(out: &mut Vec<u8>, d: Option<Duration>, missing: &str) {
    match d {
        Some(d) => push_number(out, d.as_millis() as u64),
        None => out.push_str(missing),
    }
}

/// Appends the value of the header `key` names as [`header_value`] gives it (the values of
/// a repeated header joined by `,`), straight into `out`; false when it has none (nothing
/// appended).
fn push_header(map: Headers, key: &HeaderKey, cx: &LogContext<'_>, out: &mut Vec<u8>) -> bool {
    if let Some(pseudo) = key.pseudo {
        // The pseudo-headers are fields of `cx` (as `header_value` reads them; one a map
        // has not, `:status` of a request or `:path` of a response, is none).
        let text = match (map, pseudo) {
            (Headers::Request, Pseudo::Method) => cx.method,
            (Headers::Request, Pseudo::Path) => cx.path,
            (Headers::Request, Pseudo::Scheme) => cx.scheme,
            (Headers::Request, Pseudo::Authority) => authority(cx, key),
            (Headers::Response, Pseudo::Status) => {
                return cx.status.is_some_and(|status| {
                    push_number(out, u64::from(status));
                    true
                });
            }
            _ => None,
        };
        return match text {
            Some(text) if !text.is_empty() => {
                out.push_str(text);
                true
            }
            _ => false,
        };
    }
    let (headers, picked) = match map {
        Headers::Request => (cx.request_headers, cx.request_picked),
        Headers::Response => (cx.response_headers, cx.response_picked),
        Headers::Trailer => (cx.response_trailers, None),
    };
    let Some(name) = &key.name else {
        return false;
    };
    let start = out.len();
    let mut values = 0usize;
    let mut push = |value: &[u8]| {
        if values > 0 {
            out.push(b',');
        }
        out.extend_from_slice(value);
        values += 1;
    };
    match (headers, picked, key.slot) {
        (Some(map), _, _) => map.get_all(name).iter().for_each(|v| push(v.as_bytes())),
        (None, Some(picked), Some(slot)) => picked.values(slot).for_each(push),
        _ => {}
    }
    // One empty value is no value (as `text` reads it); two or more leave their `,`.
    out.len() > start
}

/// Appends `address` as `Display` writes it (`1.2.3.4:80`, `[::1]:80`); IPv4, the common
/// case, without `fmt`'s machinery.
fn push_address(out: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            push_ipv4(out, *v4.ip());
            out.push(b':');
            push_number(out, u64::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            out.push_str(&address.to_string());
        }
    }
}

fn push_ipv4(out: &mut Vec<u8>, ip: std::net::Ipv4Addr) {
    // Built whole, then appended at once: one capacity check, one copy.
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    out.extend_from_slice(&text[..len]);
}

/// Appends `n` in decimal (without `fmt`'s machinery: a line has several numbers).
fn push_number(out: &mut Vec<u8>, n: u64) {
    if n < 10 {
        // A byte count or a duration of a small request: often a single digit.
        out.push(b'0' + n as u8);
        return;
    }
    push_padded(out, n, 1);
}

/// Appends `n` in decimal, zero-padded to at least `width` digits (at most 20).
fn push_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    if n < 1000 && width <= 3 {
        // A status code, a port's tail, milliseconds of a second: three digits at most,
        // worked out without a loop.
        let n = n as u16;
        let digits = [(n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8];
        let len = match n {
            0..=9 => 1,
            10..=99 => 2,
            _ => 3,
        };
        for &digit in &digits[3 - len.max(width)..] {
            out.push(b'0' + digit);
        }
        return;
    }
    // Digit by digit: the numbers of a line are short, and an ASCII `push` is a capacity
    // check and a store (cheaper, measured, than building a buffer and appending it).
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    for _ in len..width.min(digits.len()) {
        out.push(b'0');
    }
    for &digit in digits[..len].iter().rev() {
        out.push(digit);
    }
}

fn evaluate<'a>(op: &Operator, cx: &LogContext<'a>) -> Value<'a> {
    match op {
        Operator::StartTime(pattern) => match cx.start {
            Some(at) => Value::Text(Cow::Owned(format_time(at, &pattern.pieces))),
            None => Value::None,
        },
        Operator::Header {
            map,
            name,
            fallback,
        } => {
            let found = header_value(*map, name, cx);
            match (found, fallback) {
                (Value::None, Some(fallback)) => header_value(*map, fallback, cx),
                (found, _) => found,
            }
        }
        Operator::ResponseCode => Value::Number(u64::from(cx.status.unwrap_or(0))),
        // Envoy prints `-` for no flags in JSON too (a string, not null).
        Operator::ResponseFlags => Value::Text(Cow::Borrowed(if cx.flags.is_empty() {
            "-"
        } else {
            cx.flags
        })),
        // Set but empty (a reply made with no details, as Envoy's missing-config filter's)
        // prints empty, as Envoy's; unset prints `-`.
        Operator::ResponseCodeDetails => match cx.details {
            Some(details) => Value::Text(Cow::Borrowed(details)),
            None => Value::None,
        },
        Operator::BytesReceived => Value::Number(cx.bytes_received),
        Operator::BytesSent => Value::Number(cx.bytes_sent),
        Operator::Duration => millis(cx.duration),
        Operator::RequestDuration => millis(cx.request_duration),
        Operator::ResponseDuration => millis(cx.response_duration),
        Operator::UpstreamHost => addr(cx.upstream_host),
        Operator::UpstreamCluster => text(cx.upstream_cluster),
        Operator::UpstreamTransportFailureReason => text(cx.upstream_failure),
        Operator::DownstreamRemoteAddress => addr(cx.downstream_remote),
        Operator::DownstreamRemoteAddressWithoutPort => {
            cx.downstream_remote.map_or(Value::None, |a| {
                let ip = match a.ip() {
                    std::net::IpAddr::V4(v4) => {
                        let mut ip = Vec::with_capacity(15);
                        push_ipv4(&mut ip, v4);
                        text_of(ip)
                    }
                    v6 => v6.to_string(),
                };
                Value::Text(Cow::Owned(ip))
            })
        }
        Operator::DownstreamLocalAddress => addr(cx.downstream_local),
        Operator::Protocol => text(cx.protocol),
        Operator::RequestedServerName => text(cx.sni),
        Operator::ConnectionId => cx.connection_id.map_or(Value::None, Value::Number),
        Operator::UpstreamRequestAttemptCount => Value::Number(u64::from(cx.attempts.unwrap_or(0))),
    }
}

fn header_value<'a>(map: Headers, key: &HeaderKey, cx: &LogContext<'a>) -> Value<'a> {
    let (headers, picked) = match map {
        Headers::Request => {
            let pseudo = match key.pseudo {
                Some(Pseudo::Method) => Some(cx.method),
                Some(Pseudo::Path) => Some(cx.path),
                Some(Pseudo::Authority) => Some(authority(cx, key)),
                Some(Pseudo::Scheme) => Some(cx.scheme),
                Some(Pseudo::Status) | None => None,
            };
            if let Some(value) = pseudo {
                return text(value);
            }
            (cx.request_headers, cx.request_picked)
        }
        Headers::Response => {
            if key.pseudo == Some(Pseudo::Status) {
                return cx
                    .status
                    .map_or(Value::None, |s| Value::Text(Cow::Owned(s.to_string())));
            }
            (cx.response_headers, cx.response_picked)
        }
        Headers::Trailer => (cx.response_trailers, None),
    };
    let Some(name) = &key.name else {
        return Value::None;
    };
    // The values joined by `,` (as Envoy joins a repeated header); one is borrowed as it is.
    let mut first: Option<&'a str> = None;
    let mut joined: Option<String> = None;
    let mut take = |value: &'a [u8]| {
        let Ok(value) = std::str::from_utf8(value) else {
            return;
        };
        match (&mut joined, first) {
            (Some(joined), _) => {
                joined.push(',');
                joined.push_str(value);
            }
            (None, Some(before)) => joined = Some(format!("{before},{value}")),
            (None, None) => first = Some(value),
        }
    };
    match (headers, picked, key.slot) {
        (Some(map), _, _) => map.get_all(name).iter().for_each(|v| take(v.as_bytes())),
        (None, Some(picked), Some(slot)) => picked.values(slot).for_each(take),
        _ => {}
    }
    match joined {
        Some(joined) => Value::Text(Cow::Owned(joined)),
        None => text(first),
    }
}

/// A `%START_TIME(...)%` pattern, parsed once, with an id of its own for [`LAST_SECOND`].
#[derive(Debug, Clone)]
struct TimePattern {
    id: u64,
    pieces: Vec<TimePiece>,
}

/// Two patterns are the same when they print the same (the id only names a parse).
impl PartialEq for TimePattern {
    fn eq(&self, other: &TimePattern) -> bool {
        self.pieces == other.pieces
    }
}

impl Eq for TimePattern {}

/// What a worker thread last printed for a pattern: the text of one second, with the places
/// of its fraction digits. A busy logger prints the same second thousands of times over, so
/// a line only copies it and fills in the fractions.
struct SecondText {
    pattern: u64,
    secs: u64,
    text: Vec<u8>,
    /// (byte offset in `text`, digits) of each fraction.
    fractions: Vec<(usize, u8)>,
}

thread_local! {
    static LAST_SECOND: std::cell::RefCell<Option<SecondText>> =
        const { std::cell::RefCell::new(None) };
}

impl TimePattern {
    fn new(pieces: Vec<TimePiece>) -> TimePattern {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        TimePattern {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            pieces,
        }
    }

    /// Appends `at` in UTC per the pattern to `out`.
    fn write(&self, at: SystemTime, out: &mut Vec<u8>) {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
        LAST_SECOND.with(|last| {
            let mut last = last.borrow_mut();
            let second = match &mut *last {
                Some(second) if second.pattern == self.id && second.secs == secs => second,
                slot => {
                    let mut second = SecondText {
                        pattern: self.id,
                        secs,
                        text: Vec::with_capacity(32),
                        fractions: Vec::new(),
                    };
                    render_time(
                        since,
                        &self.pieces,
                        &mut second.text,
                        Some(&mut second.fractions),
                    );
                    slot.insert(second)
                }
            };
            let mut copied = 0;
            for &(at, digits) in &second.fractions {
                out.extend_from_slice(second.text.get(copied..at).unwrap_or_default());
                push_fraction(out, nanos, digits);
                copied = at + usize::from(digits);
            }
            out.extend_from_slice(second.text.get(copied..).unwrap_or_default());
        });
    }
}

/// Appends the first `digits` (at most 9) decimal digits of a second's fraction.
fn push_fraction(out: &mut Vec<u8>, nanos: u32, digits: u8) {
    if digits > 0 {
        let digits = digits.min(9);
        let scaled = nanos / 10u32.pow(9 - u32::from(digits));
        push_padded(out, u64::from(scaled), usize::from(digits));
    }
}

/// A piece of a `%START_TIME(...)%` pattern, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TimePiece {
    Literal(String),
    /// A strftime conversion (`Y`, `m`, ...).
    Field(char),
    /// `%E<n>S`: seconds with `n` fractional digits; `%f` is `Fraction(9)` without seconds.
    SecondsFraction(u8),
    Fraction(u8),
}

/// Envoy's `%START_TIME%` without a pattern.
const DEFAULT_TIME_PATTERN: &str = "%Y-%m-%dT%H:%M:%E3SZ";

fn parse_time_pattern(pattern: &str) -> Vec<TimePiece> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let piece = match chars.next() {
            Some('E') => {
                let digits: String =
                    std::iter::from_fn(|| chars.next_if(char::is_ascii_digit)).collect();
                match chars.next() {
                    Some('S') => TimePiece::SecondsFraction(digits.parse().unwrap_or(0).min(9)),
                    Some('f') if digits.is_empty() => TimePiece::Fraction(6),
                    Some('f') => TimePiece::Fraction(digits.parse().unwrap_or(0).min(9)),
                    other => {
                        literal.push_str("%E");
                        literal.push_str(&digits);
                        literal.extend(other);
                        continue;
                    }
                }
            }
            Some('f') => TimePiece::Fraction(9),
            Some('%') => {
                literal.push('%');
                continue;
            }
            Some(field) => TimePiece::Field(field),
            None => {
                literal.push('%');
                continue;
            }
        };
        if !literal.is_empty() {
            pieces.push(TimePiece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(piece);
    }
    if !literal.is_empty() {
        pieces.push(TimePiece::Literal(literal));
    }
    pieces
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Year, month (1-12), day (1-31) of a day count since 1970-01-01 (Howard Hinnant's civil
/// date algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `at` in UTC as Envoy writes a time without a pattern: `2026-12-07T04:05:06.789Z` (also
/// the timestamps of `/config_dump`).
pub fn utc_timestamp(at: SystemTime) -> String {
    format_time(at, &parse_time_pattern(DEFAULT_TIME_PATTERN))
}

/// `at` in UTC per `pieces` (Envoy logs times in UTC).
fn format_time(at: SystemTime, pieces: &[TimePiece]) -> String {
    let mut out = Vec::with_capacity(32);
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    render_time(since, pieces, &mut out, None);
    text_of(out)
}

/// Appends the time `since` the epoch in UTC per `pieces` to `out`. With `fractions`, each
/// fraction of a second is written as zeros and its place noted there instead (see
/// [`SecondText`]).
fn render_time(
    since: Duration,
    pieces: &[TimePiece],
    out: &mut Vec<u8>,
    mut fractions: Option<&mut Vec<(usize, u8)>>,
) {
    let secs = since.as_secs() as i64;
    let nanos = since.subsec_nanos();
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400) as u64;
    let (year, month, day) = civil_from_days(days);
    let (month, day) = (u64::from(month), u64::from(day));
    let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let mut fraction = |digits: u8, out: &mut Vec<u8>| match fractions.as_deref_mut() {
        Some(places) if digits > 0 => {
            let digits = digits.min(9);
            places.push((out.len(), digits));
            push_padded(out, 0, usize::from(digits));
        }
        _ => push_fraction(out, nanos, digits),
    };
    let push_year = |out: &mut Vec<u8>| {
        if year < 0 {
            out.push(b'-');
        }
        push_number(out, year.unsigned_abs());
    };
    for piece in pieces {
        match piece {
            TimePiece::Literal(text) => out.push_str(text),
            TimePiece::SecondsFraction(digits) => {
                push_padded(out, second, 2);
                if *digits > 0 {
                    out.push(b'.');
                    fraction(*digits, out);
                }
            }
            TimePiece::Fraction(digits) => fraction(*digits, out),
            TimePiece::Field(field) => match field {
                'Y' => push_year(out),
                'y' => push_padded(out, year.rem_euclid(100) as u64, 2),
                'm' => push_padded(out, month, 2),
                'd' => push_padded(out, day, 2),
                'e' => {
                    if day < 10 {
                        out.push(b' ');
                    }
                    push_number(out, day);
                }
                'H' => push_padded(out, hour, 2),
                'M' => push_padded(out, minute, 2),
                'S' => push_padded(out, second, 2),
                // `since` is after the epoch: `secs` is not negative.
                's' => push_number(out, secs.unsigned_abs()),
                'z' => out.push_str("+0000"),
                'Z' => out.push_str("UTC"),
                'T' => {
                    push_padded(out, hour, 2);
                    out.push(b':');
                    push_padded(out, minute, 2);
                    out.push(b':');
                    push_padded(out, second, 2);
                }
                'F' => {
                    push_year(out);
                    out.push(b'-');
                    push_padded(out, month, 2);
                    out.push(b'-');
                    push_padded(out, day, 2);
                }
                'b' | 'h' => out.push_str(MONTHS[(month - 1) as usize]),
                'a' => out.push_str(WEEKDAYS[days.rem_euclid(7) as usize]),
                'j' => push_padded(out, (days - days_from_year(year) + 1) as u64, 3),
                'n' => out.push(b'\n'),
                't' => out.push(b'\t'),
                other => {
                    out.push(b'%');
                    out.push_str(other.encode_utf8(&mut [0; 4]));
                }
            },
        }
    }
}

/// Days from 1970-01-01 to January 1st of `year`.
fn days_from_year(year: i64) -> i64 {
    let y = year - 1;
    let leaps = |y: i64| y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400);
    365 * (year - 1970) + leaps(y) - leaps(1969)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_print_as_fmt_does() {
        for n in [
            0u64,
            7,
            10,
            99,
            100,
            255,
            1000,
            65_535,
            123_456_789,
            u64::MAX,
        ] {
            for width in [1usize, 2, 3, 9, 20, 25] {
                let mut out = b"x".to_vec();
                push_padded(&mut out, n, width);
                assert_eq!(
                    text_of(out),
                    format!("x{n:0width$}", width = width.min(20)),
                    "{n} {width}"
                );
            }
        }
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.100.255",
            "255.255.255.255",
            "127.0.0.1",
        ] {
            let addr: std::net::Ipv4Addr = ip.parse().expect("ip");
            let mut out = Vec::new();
            push_ipv4(&mut out, addr);
            assert_eq!(out, ip.as_bytes());
        }
    }

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn default_start_time_is_envoys() {
        // 2026-12-06T23:40:07.069434Z, as Envoy 1.40 printed it.
        let format = Format::parse("[%START_TIME%]").expect("parse");
        let cx = LogContext {
            start: Some(at(1_796_600_407, 69_434_000)),
            ..LogContext::default()
        };
        assert_eq!(format.render(&cx), "[2026-12-06T23:40:07.069Z]");
        let custom = Format::parse("%START_TIME(%Y/%m/%d %s %E3S %f %z %j %a %b)%").expect("p");
        assert_eq!(
            custom.render(&cx),
            "2026/12/06 1796600407 07.069 069434000 +0000 340 Sun Dec"
        );
    }

    #[test]
    fn a_second_printed_again_gets_its_own_fractions() {
        // The worker's cached second must give each line its own fraction, and a pattern
        // (or a second) other than the cached one its own text.
        let default = Format::parse("[%START_TIME%]").expect("parse");
        let custom = Format::parse("%START_TIME(%T.%E6S|%f|%Ef)%").expect("parse");
        let line = |format: &Format, secs, nanos| {
            format.render(&LogContext {
                start: Some(at(secs, nanos)),
                ..LogContext::default()
            })
        };
        assert_eq!(
            line(&default, 1_796_600_407, 69_434_000),
            "[2026-12-06T23:40:07.069Z]"
        );
        assert_eq!(
            line(&default, 1_796_600_407, 5_000_000),
            "[2026-12-06T23:40:07.005Z]"
        );
        assert_eq!(
            line(&default, 1_796_600_407, 999_999_999),
            "[2026-12-06T23:40:07.999Z]"
        );
        assert_eq!(
            line(&custom, 1_796_600_407, 1_234_567),
            "23:40:07.07.001234|001234567|001234"
        );
        assert_eq!(
            line(&default, 1_796_600_408, 0),
            "[2026-12-06T23:40:08.000Z]"
        );
        assert_eq!(
            line(&custom, 1_796_600_408, 987_654_321),
            "23:40:08.08.987654|987654321|987654"
        );
        // Each line is what the uncached formatter prints.
        for (secs, nanos) in [(0, 0), (1_796_600_407, 123_456_789), (4_102_444_799, 1)] {
            let TimePattern { pieces, .. } = match &custom.parts[0] {
                Part::Operator(Operator::StartTime(pattern), _) => pattern.clone(),
                other => panic!("{other:?}"),
            };
            assert_eq!(
                line(&custom, secs, nanos),
                format_time(at(secs, nanos), &pieces)
            );
        }
    }

    #[test]
    fn headers_fallback_and_length() {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", "curl/7.88.1".parse().expect("value"));
        headers.append("x-a", "1".parse().expect("value"));
        headers.append("x-a", "2".parse().expect("value"));
        let cx = LogContext {
            path: Some("/hello"),
            request_headers: Some(&headers),
            ..LogContext::default()
        };
        let format = Format::parse(
            "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(USER-AGENT):4% %REQ(x-a)% %REQ(NONE)% 100%%",
        )
        .expect("parse");
        assert_eq!(format.render(&cx), "/hello curl 1,2 - 100%");
    }

    /// The text writer takes shortcuts for some operators (headers, numbers, durations); it
    /// must print what `evaluate` says, for every shape of header.
    #[test]
    fn written_values_are_the_evaluated_ones() {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", "curl/7.88.1".parse().expect("value"));
        headers.append("x-a", "1".parse().expect("value"));
        headers.append("x-a", "2".parse().expect("value"));
        headers.insert("x-empty", HeaderValue::from_static(""));
        headers.append("x-two-empty", HeaderValue::from_static(""));
        headers.append("x-two-empty", HeaderValue::from_static(""));
        headers.insert("x-bin", HeaderValue::from_bytes(b"\xff").expect("value"));
        headers.insert(
            "x-utf8",
            HeaderValue::from_bytes("caf\u{e9}".as_bytes()).expect("value"),
        );
        headers.insert("host", HeaderValue::from_static("h.example"));
        let mut names: Vec<HeaderName> = headers.keys().cloned().collect();
        names.dedup();
        let picked = PickedHeaders::copy(
            &crate::access_log::picked::PickNames::new(names.clone()),
            &headers,
        );
        let ops = [
            "%REQ(USER-AGENT)%",
            "%REQ(x-a)%",
            "%REQ(x-empty)%",
            "%REQ(x-two-empty)%",
            "%REQ(x-utf8)%",
            "%REQ(:scheme)%",
            "%RESP(:method)%",
            "%TRAILER(:status)%",
            "%REQ(x-none)%",
            "%REQ(x-none?x-a)%",
            "%REQ(x-empty?user-agent)%",
            "%REQ(:path)%",
            "%REQ(:authority)%",
            "%REQ(:method)%",
            "%REQ(:status)%",
            "%RESP(:status)%",
            "%RESP(x-a)%",
            "%TRAILER(x-a)%",
            "%RESP(:path)%",
            "%RESPONSE_CODE%",
            "%BYTES_RECEIVED%",
            "%BYTES_SENT%",
            "%DURATION%",
            "%PROTOCOL%",
        ];
        let full = LogContext {
            path: Some("/p"),
            method: Some("GET"),
            scheme: Some("https"),
            status: Some(204),
            bytes_received: 7,
            bytes_sent: 12_345,
            duration: Some(Duration::from_micros(2_500)),
            protocol: Some("HTTP/2"),
            request_headers: Some(&headers),
            response_headers: Some(&headers),
            response_trailers: Some(&headers),
            ..LogContext::default()
        };
        let from_picked = LogContext {
            request_headers: None,
            request_picked: Some(&picked),
            response_headers: None,
            response_picked: Some(&picked),
            ..full.clone()
        };
        let empty = LogContext::default();
        for cx in [&full, &from_picked, &empty] {
            for op in ops {
                let mut format = Format::parse(op).expect("parse");
                format.assign_slots(&names, &names);
                let [Part::Operator(operator, None)] = format.parts.as_slice() else {
                    panic!("{op} is one operator");
                };
                let evaluated = match evaluate(operator, cx) {
                    Value::None => "-".to_owned(),
                    Value::Text(text) => text.into_owned(),
                    Value::Number(n) => n.to_string(),
                };
                assert_eq!(format.render(cx), evaluated, "{op} in {cx:?}");
            }
        }
        // A line prints a value's bytes as they came, as Envoy prints a header's bytes; a
        // JSON value (text) leaves out one that is not UTF-8.
        let mut bytes = Format::parse("%REQ(x-utf8)% %REQ(x-bin)%").expect("parse");
        bytes.assign_slots(&names, &names);
        for cx in [&full, &from_picked] {
            assert_eq!(bytes.render_bytes(cx), b"caf\xc3\xa9 \xff");
        }
        let bin = Format::parse("%REQ(x-bin)%").expect("parse");
        assert_eq!(bin.render_json(&full), serde_json::Value::Null);
    }

    #[test]
    fn unknown_operators_are_named() {
        assert_eq!(
            Format::parse("%DYNAMIC_METADATA(x)%"),
            Err(FormatError::Unsupported("DYNAMIC_METADATA(x)".into()))
        );
        assert!(matches!(
            Format::parse("%RESPONSE_CODE"),
            Err(FormatError::Malformed(..))
        ));
        assert!(matches!(
            Format::parse("%REQ(a):x%"),
            Err(FormatError::Malformed(..))
        ));
    }

    #[test]
    fn json_values_keep_their_type() {
        let cx = LogContext {
            status: Some(503),
            flags: "UF",
            ..LogContext::default()
        };
        let code = Format::parse("%RESPONSE_CODE%").expect("parse");
        assert_eq!(code.render_json(&cx), serde_json::json!(503));
        let sni = Format::parse("%REQUESTED_SERVER_NAME%").expect("parse");
        assert_eq!(sni.render_json(&cx), serde_json::Value::Null);
        let mixed = Format::parse("x %RESPONSE_CODE% %RESPONSE_FLAGS%").expect("parse");
        assert_eq!(mixed.render_json(&cx), serde_json::json!("x 503 UF"));
    }
}
