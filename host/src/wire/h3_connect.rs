//! The wire side of CONNECT and extended CONNECT (RFC 9220) over HTTP/3: frames, field
//! sections and request/response heads of a CONNECT stream, for the downstream server
//! (`http::h3`) and the upstream HTTP/3 pool alike.
//!
//! Why not the `h3` crate's request API: h3 0.0.8 knows `:protocol` only as `webtransport` or
//! `connect-udp` (its `ext::Protocol` is a closed set), so it rejects `:protocol websocket`
//! as a malformed request and cannot send one either. weir therefore codes CONNECT streams
//! itself while the h3 crate keeps the connection (SETTINGS, control streams, GOAWAY):
//!
//! - downstream, [`peek_connect`] decodes the first HEADERS frame of each request stream (read
//!   through the h3 crate's frame layer); a CONNECT, with or without `:protocol`, is served on
//!   the raw stream, anything else goes back to h3 unchanged;
//! - upstream, the pool opens a QUIC stream on its connection and writes the HEADERS frame
//!   from [`request_fields`].
//!
//! On a CONNECT stream the payload is the DATA frames both ways (RFC 9114 4.4, RFC 9220 3).
//! Frames of unknown (reserved, "grease") types are skipped; frames that have no place on a
//! request stream are an error. Field sections are coded statelessly with the `qpack` crate:
//! no dynamic table, as the h3 crate advertises `SETTINGS_QPACK_MAX_TABLE_CAPACITY` 0.

use super::Protocol;
use crate::body::{self, Body};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use qpack::HeaderField;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, FramedRead};

/// DATA frame type (RFC 9114 7.2.1).
const FRAME_DATA: u64 = 0x00;
/// HEADERS frame type (RFC 9114 7.2.2).
const FRAME_HEADERS: u64 = 0x01;
/// Frame types that must not appear on a request stream: CANCEL_PUSH, SETTINGS, GOAWAY,
/// MAX_PUSH_ID (control stream only), PUSH_PROMISE (weir never enables push) and the HTTP/2
/// types HTTP/3 reserves (RFC 9114 7.2.8).
const FRAMES_NOT_ON_REQUEST_STREAMS: [u64; 9] =
    [0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0d];

/// Largest field section read (the h3 server's `max_field_section_size` is the same).
pub const MAX_FIELD_SECTION: usize = 64 * 1024;

/// Headers HTTP/3 forbids in a message (RFC 9114 4.2).
pub const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// What can go wrong on a CONNECT stream's wire.
#[derive(Debug, thiserror::Error)]
pub enum H3ConnectError {
    /// A frame's length ran past the end of the stream.
    #[error("HTTP/3 stream ended inside a frame")]
    Truncated,
    /// A frame type that has no place on a request stream.
    #[error("HTTP/3 frame type {0:#x} is not allowed on a request stream")]
    UnexpectedFrame(u64),
    /// DATA before the message head.
    #[error("HTTP/3 DATA before the HEADERS frame")]
    DataBeforeHeaders,
    /// A field section larger than [`MAX_FIELD_SECTION`].
    #[error("HTTP/3 field section over {MAX_FIELD_SECTION} bytes")]
    FieldSectionTooLarge,
    /// The field section does not decode.
    #[error("QPACK: {0}")]
    Qpack(String),
    /// The head is not a valid HTTP message.
    #[error("malformed HTTP/3 message: {0}")]
    Malformed(&'static str),
    /// The stream ended before a response head came.
    #[error("HTTP/3 stream ended before the response head")]
    NoResponse,
    /// The QUIC stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Appends a QUIC variable-length integer (RFC 9000 16).
fn put_varint(buf: &mut BytesMut, value: u64) {
    if value < 1 << 6 {
        buf.put_u8(value as u8);
    } else if value < 1 << 14 {
        buf.put_u16(0x4000 | value as u16);
    } else if value < 1 << 30 {
        buf.put_u32(0x8000_0000 | value as u32);
    } else {
        buf.put_u64(0xc000_0000_0000_0000 | value);
    }
}

/// The variable-length integer at the start of `buf` and its length, if all of it is there.
fn peek_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(1..len)?;
    let value = bytes.iter().fold(u64::from(first & 0x3f), |value, b| {
        (value << 8) | u64::from(*b)
    });
    Some((value, len))
}

/// A frame header: type and payload length.
fn frame_head(frame_type: u64, len: usize) -> BytesMut {
    let mut head = BytesMut::with_capacity(16);
    put_varint(&mut head, frame_type);
    put_varint(&mut head, len as u64);
    head
}

/// A HEADERS frame carrying `fields`, QPACK-encoded without the dynamic table.
pub fn headers_frame(fields: &[HeaderField]) -> Result<Bytes, H3ConnectError> {
    let mut block = BytesMut::new();
    qpack::encode_stateless(&mut block, fields)
        .map_err(|e| H3ConnectError::Qpack(e.to_string()))?;
    let mut frame = frame_head(FRAME_HEADERS, block.len());
    frame.extend_from_slice(&block);
    Ok(frame.freeze())
}

/// Decodes a HEADERS frame's payload.
pub fn decode_fields(block: &Bytes) -> Result<Vec<HeaderField>, H3ConnectError> {
    let mut block = block.clone();
    qpack::decode_stateless(&mut block, MAX_FIELD_SECTION as u64)
        .map(|decoded| decoded.fields)
        .map_err(|e| H3ConnectError::Qpack(e.to_string()))
}

/// A frame of a request stream that matters to a CONNECT stream.
#[derive(Debug, PartialEq, Eq)]
pub enum H3Frame {
    /// A whole HEADERS frame's payload (a field section).
    Headers(Bytes),
    /// Some of a DATA frame's payload (a large DATA frame comes in pieces).
    Data(Bytes),
}

/// Splits a request stream into [`H3Frame`]s, skipping frames of unknown types.
#[derive(Debug, Default)]
pub struct FrameCodec {
    /// Payload bytes of the current DATA frame not yet returned.
    data_left: u64,
    /// Payload bytes of an unknown frame still to skip.
    skip_left: u64,
}

impl Decoder for FrameCodec {
    type Item = H3Frame;
    type Error = H3ConnectError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<H3Frame>, H3ConnectError> {
        loop {
            if self.skip_left > 0 {
                let n = src.len().min(self.skip_left as usize);
                src.advance(n);
                self.skip_left -= n as u64;
                if self.skip_left > 0 {
                    return Ok(None);
                }
            }
            if self.data_left > 0 {
                if src.is_empty() {
                    return Ok(None);
                }
                let n = src.len().min(self.data_left as usize);
                self.data_left -= n as u64;
                return Ok(Some(H3Frame::Data(src.split_to(n).freeze())));
            }
            let Some((frame_type, type_len)) = peek_varint(src) else {
                return Ok(None);
            };
            let Some((len, len_len)) = peek_varint(&src[type_len..]) else {
                return Ok(None);
            };
            let head = type_len + len_len;
            match frame_type {
                FRAME_DATA => {
                    src.advance(head);
                    self.data_left = len;
                }
                FRAME_HEADERS => {
                    if len > MAX_FIELD_SECTION as u64 {
                        return Err(H3ConnectError::FieldSectionTooLarge);
                    }
                    let total = head + len as usize;
                    if src.len() < total {
                        src.reserve(total - src.len());
                        return Ok(None);
                    }
                    src.advance(head);
                    return Ok(Some(H3Frame::Headers(src.split_to(len as usize).freeze())));
                }
                t if FRAMES_NOT_ON_REQUEST_STREAMS.contains(&t) => {
                    return Err(H3ConnectError::UnexpectedFrame(t));
                }
                _ => {
                    src.advance(head);
                    self.skip_left = len;
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<H3Frame>, H3ConnectError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && self.data_left == 0 && self.skip_left == 0 => Ok(None),
            None => Err(H3ConnectError::Truncated),
        }
    }
}

/// The frames of a stream's receive half.
pub type Frames<R> = FramedRead<R, FrameCodec>;

/// Reads frames from `recv`.
pub fn frames<R: AsyncRead>(recv: R) -> Frames<R> {
    FramedRead::new(recv, FrameCodec::default())
}

/// A CONNECT stream's incoming payload (its DATA frames) as a body. HEADERS after the data
/// (trailers) end it: a tunnel has no use for them.
pub struct DataBody<R> {
    /// In a mutex so the body is `Sync` (QUIC receive halves are not); only ever reached
    /// through `&mut self`.
    frames: Mutex<Frames<R>>,
    done: bool,
    /// Kept until the payload ends (a pool's stream lease).
    hold: Option<Box<dyn Send + Sync>>,
}

impl<R: AsyncRead + Send + Unpin + 'static> DataBody<R> {
    /// The rest of `frames`, holding `hold` until it ends.
    pub fn new(frames: Frames<R>, hold: Option<Box<dyn Send + Sync>>) -> DataBody<R> {
        DataBody {
            frames: Mutex::new(frames),
            done: false,
            hold,
        }
    }

    /// As a [`Body`].
    pub fn boxed(self) -> Body {
        body::boxed(self)
    }
}

impl<R: AsyncRead + Send + Unpin + 'static> http_body::Body for DataBody<R> {
    type Data = Bytes;
    type Error = H3ConnectError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H3ConnectError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let frames = this.frames.get_mut().unwrap_or_else(|p| p.into_inner());
        loop {
            let next = ready!(Pin::new(&mut *frames).poll_next(cx));
            match next {
                Some(Ok(H3Frame::Data(data))) if data.is_empty() => {}
                Some(Ok(H3Frame::Data(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Some(Ok(H3Frame::Headers(_))) | None => {
                    this.done = true;
                    this.hold = None;
                    return Poll::Ready(None);
                }
                Some(Err(error)) => {
                    this.done = true;
                    this.hold = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Writes each data frame of `body` as a DATA frame, then ends the stream (FIN). An error
/// from `body` is returned without ending the stream: the caller resets it.
pub async fn pump_data<W: AsyncWrite + Unpin>(mut body: Body, send: &mut W) -> io::Result<()> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| io::Error::new(io::ErrorKind::ConnectionReset, e))?;
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            send.write_all(&frame_head(FRAME_DATA, data.len())).await?;
            send.write_all(&data).await?;
        }
    }
    send.shutdown().await
}

/// `:method CONNECT` (with or without `:protocol`), from a decoded request field section.
pub fn is_connect(fields: &[HeaderField]) -> bool {
    fields
        .iter()
        .any(|f| f.name.as_ref() == b":method" && f.value.as_ref() == b"CONNECT")
}

/// The first HEADERS frame's field section, when it is a CONNECT request; `None` for any
/// other request (or one that does not decode: h3 then answers it as it would have).
pub fn peek_connect(block: &Bytes) -> Option<Vec<HeaderField>> {
    decode_fields(block)
        .ok()
        .filter(|fields| is_connect(fields))
}

/// A CONNECT request's head and its `:protocol` (extended CONNECT), from its field section.
///
/// Plain CONNECT (RFC 9114 4.4) has `:authority` only; extended CONNECT (RFC 9220) has
/// `:protocol`, `:scheme`, `:authority` and `:path`. Pseudo-headers come first, once each.
pub fn connect_request(
    fields: Vec<HeaderField>,
) -> Result<(Request<()>, Option<Protocol>), H3ConnectError> {
    let malformed = H3ConnectError::Malformed;
    let mut method = None;
    let mut scheme = None;
    let mut authority = None;
    let mut path = None;
    let mut protocol = None;
    let mut headers = HeaderMap::new();
    for field in fields {
        let (name, value) = field.into_inner();
        if let Some(pseudo) = name.strip_prefix(b":") {
            if !headers.is_empty() {
                return Err(malformed("pseudo-header after a regular field"));
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"authority" => &mut authority,
                b"path" => &mut path,
                b"protocol" => &mut protocol,
                _ => return Err(malformed("unknown pseudo-header")),
            };
            if slot.is_some() {
                return Err(malformed("repeated pseudo-header"));
            }
            let value =
                String::from_utf8(value.into_owned()).map_err(|_| malformed("pseudo-header"))?;
            *slot = Some(value);
            continue;
        }
        // HTTP/3 field names are lower case (RFC 9114 4.2); `HeaderName` would fold them.
        if name.iter().any(u8::is_ascii_uppercase) {
            return Err(malformed("upper-case field name"));
        }
        let name = HeaderName::from_bytes(&name).map_err(|_| malformed("field name"))?;
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            return Err(malformed("connection-specific field"));
        }
        let value = HeaderValue::from_bytes(&value).map_err(|_| malformed("field value"))?;
        headers.append(name, value);
    }
    if method.as_deref() != Some("CONNECT") {
        return Err(malformed("not a CONNECT request"));
    }
    let authority = authority.ok_or(malformed("CONNECT without :authority"))?;
    let mut uri = Uri::builder().authority(authority.as_str());
    match &protocol {
        Some(_) => {
            let (Some(scheme), Some(path)) = (&scheme, &path) else {
                return Err(malformed("extended CONNECT without :scheme and :path"));
            };
            uri = uri.scheme(scheme.as_str()).path_and_query(path.as_str());
        }
        None if scheme.is_some() || path.is_some() => {
            return Err(malformed("CONNECT with :scheme or :path"));
        }
        None => {}
    }
    let uri = uri.build().map_err(|_| malformed("request target"))?;
    let mut request = Request::new(());
    *request.method_mut() = Method::CONNECT;
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_3;
    *request.headers_mut() = headers;
    Ok((request, protocol.map(Protocol::new)))
}

/// The field section of the request an upstream CONNECT stream opens with: `head` is the
/// request as the HTTP/2 pool shapes it (absolute URI, `host` moved to `:authority`), with
/// `protocol` for an extended CONNECT.
pub fn request_fields(head: &Request<()>, protocol: Option<&Protocol>) -> Vec<HeaderField> {
    let mut fields = vec![HeaderField::new(":method", "CONNECT")];
    let authority = head.uri().authority().map_or("", |a| a.as_str());
    if let Some(protocol) = protocol {
        fields.push(HeaderField::new(":protocol", protocol.as_str()));
        fields.push(HeaderField::new(
            ":scheme",
            head.uri().scheme_str().unwrap_or("https"),
        ));
        fields.push(HeaderField::new(":authority", authority));
        fields.push(HeaderField::new(
            ":path",
            head.uri().path_and_query().map_or("/", |p| p.as_str()),
        ));
    } else {
        fields.push(HeaderField::new(":authority", authority));
    }
    push_headers(&mut fields, head.headers());
    fields
}

/// The field section of a response head.
pub fn response_fields(status: StatusCode, headers: &HeaderMap) -> Vec<HeaderField> {
    let mut fields = vec![HeaderField::new(":status", status.as_str())];
    push_headers(&mut fields, headers);
    fields
}

fn push_headers(fields: &mut Vec<HeaderField>, headers: &HeaderMap) {
    for (name, value) in headers {
        if name == http::header::HOST || CONNECTION_SPECIFIC.contains(&name.as_str()) {
            continue;
        }
        fields.push(HeaderField::new(name.as_str(), value.as_bytes()));
    }
}

/// A response head from its field section.
pub fn response_head(fields: Vec<HeaderField>) -> Result<Response<()>, H3ConnectError> {
    let malformed = H3ConnectError::Malformed;
    let mut status = None;
    let mut headers = HeaderMap::new();
    for field in fields {
        let (name, value) = field.into_inner();
        if name.as_ref() == b":status" {
            if status.is_some() || !headers.is_empty() {
                return Err(malformed(":status"));
            }
            status = Some(StatusCode::from_bytes(&value).map_err(|_| malformed(":status"))?);
            continue;
        }
        if name.starts_with(b":") {
            return Err(malformed("unknown pseudo-header in a response"));
        }
        let name = HeaderName::from_bytes(&name).map_err(|_| malformed("field name"))?;
        let value = HeaderValue::from_bytes(&value).map_err(|_| malformed("field value"))?;
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status.ok_or(malformed("response without :status"))?;
    *response.version_mut() = http::Version::HTTP_3;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Reads the final response head of an upstream CONNECT stream, skipping interim (1xx)
/// responses. The frames after it are the tunnel's payload.
pub async fn read_response<R: AsyncRead + Unpin>(
    frames: &mut Frames<R>,
) -> Result<Response<()>, H3ConnectError> {
    use futures_util::StreamExt;
    loop {
        match frames.next().await {
            Some(Ok(H3Frame::Headers(block))) => {
                let response = response_head(decode_fields(&block)?)?;
                if !response.status().is_informational() {
                    return Ok(response);
                }
            }
            Some(Ok(H3Frame::Data(_))) => return Err(H3ConnectError::DataBeforeHeaders),
            Some(Err(error)) => return Err(error),
            None => return Err(H3ConnectError::NoResponse),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<H3Frame>, H3ConnectError> {
        let mut codec = FrameCodec::default();
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        // One byte at a time: every frame boundary falls inside a read at least once.
        for b in bytes {
            src.put_u8(*b);
            while let Some(frame) = codec.decode(&mut src)? {
                out.push(frame);
            }
        }
        while let Some(frame) = codec.decode_eof(&mut src)? {
            out.push(frame);
        }
        Ok(out)
    }

    #[test]
    fn varints_round_trip_at_every_length() {
        for value in [
            0,
            63,
            64,
            16_383,
            16_384,
            (1 << 30) - 1,
            1 << 30,
            (1 << 62) - 1,
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, value);
            assert_eq!(peek_varint(&buf), Some((value, buf.len())), "{value}");
            assert_eq!(
                peek_varint(&buf[..buf.len() - 1]),
                None,
                "{value} cut short"
            );
        }
        // RFC 9000 A.1's examples.
        assert_eq!(peek_varint(&[0x25]), Some((37, 1)));
        assert_eq!(peek_varint(&[0x7b, 0xbd]), Some((15_293, 2)));
        assert_eq!(
            peek_varint(&[0x9d, 0x7f, 0x3e, 0x7d]),
            Some((494_878_333, 4))
        );
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let fields = response_fields(StatusCode::OK, &HeaderMap::new());
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&headers_frame(&fields).unwrap());
        // A reserved (grease) frame type 0x21 with a 3-byte payload is skipped.
        wire.extend_from_slice(&frame_head(0x21, 3));
        wire.extend_from_slice(b"xyz");
        wire.extend_from_slice(&frame_head(FRAME_DATA, 5));
        wire.extend_from_slice(b"hello");
        wire.extend_from_slice(&frame_head(FRAME_DATA, 0));
        wire.extend_from_slice(&frame_head(FRAME_DATA, 1));
        wire.extend_from_slice(b"!");
        let frames = decode_all(&wire).unwrap();
        let H3Frame::Headers(block) = &frames[0] else {
            panic!("first frame: {:?}", frames[0]);
        };
        let head = response_head(decode_fields(block).unwrap()).unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        let data: Vec<u8> = frames[1..]
            .iter()
            .flat_map(|f| match f {
                H3Frame::Data(d) => d.to_vec(),
                H3Frame::Headers(_) => panic!("headers among the data"),
            })
            .collect();
        assert_eq!(data, b"hello!");
    }

    #[test]
    fn truncated_and_forbidden_frames_are_errors() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&frame_head(FRAME_DATA, 10));
        wire.extend_from_slice(b"short");
        assert!(matches!(decode_all(&wire), Err(H3ConnectError::Truncated)));
        // SETTINGS on a request stream.
        let settings = frame_head(0x04, 0);
        assert!(matches!(
            decode_all(&settings),
            Err(H3ConnectError::UnexpectedFrame(0x04))
        ));
        let huge = frame_head(FRAME_HEADERS, MAX_FIELD_SECTION + 1);
        assert!(matches!(
            decode_all(&huge),
            Err(H3ConnectError::FieldSectionTooLarge)
        ));
    }

    #[test]
    fn extended_connect_head_round_trips() {
        let mut head = Request::new(());
        *head.uri_mut() = "https://ws.test:443/chat?room=1".parse().unwrap();
        head.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        head.headers_mut()
            .insert("connection", HeaderValue::from_static("upgrade"));
        let fields = request_fields(&head, Some(&Protocol::new("websocket")));
        let frame = headers_frame(&fields).unwrap();
        let frames = decode_all(&frame).unwrap();
        let [H3Frame::Headers(block)] = &frames[..] else {
            panic!("{frames:?}");
        };
        let decoded = peek_connect(block).expect("a CONNECT");
        let (request, protocol) = connect_request(decoded).unwrap();
        assert_eq!(protocol, Some(Protocol::new("websocket")));
        assert_eq!(request.method(), Method::CONNECT);
        assert_eq!(request.uri().to_string(), "https://ws.test:443/chat?room=1");
        assert_eq!(request.headers()["sec-websocket-version"], "13");
        assert!(
            !request.headers().contains_key("connection"),
            "connection-specific fields are not sent"
        );
    }

    #[test]
    fn plain_connect_has_authority_only() {
        let mut head = Request::new(());
        *head.uri_mut() = Uri::from_static("db.internal:5432");
        let fields = request_fields(&head, None);
        let names: Vec<&[u8]> = fields.iter().map(|f| f.name.as_ref()).collect();
        assert_eq!(names, [b":method".as_ref(), b":authority".as_ref()]);
        let (request, protocol) = connect_request(fields).unwrap();
        assert_eq!(protocol, None);
        assert_eq!(
            request.uri().authority().unwrap().as_str(),
            "db.internal:5432"
        );
    }

    #[test]
    fn malformed_connect_heads_are_refused() {
        let f = |pairs: &[(&str, &str)]| -> Vec<HeaderField> {
            pairs
                .iter()
                .map(|(n, v)| HeaderField::new(*n, *v))
                .collect()
        };
        let cases = [
            f(&[(":method", "CONNECT")]),
            f(&[
                (":method", "CONNECT"),
                (":authority", "a:1"),
                (":path", "/"),
            ]),
            f(&[
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":authority", "a:1"),
            ]),
            f(&[
                (":method", "CONNECT"),
                (":authority", "a:1"),
                (":authority", "b:1"),
            ]),
            f(&[(":method", "CONNECT"), ("x", "1"), (":authority", "a:1")]),
            f(&[
                (":method", "CONNECT"),
                (":authority", "a:1"),
                ("Upper", "1"),
            ]),
            f(&[
                (":method", "CONNECT"),
                (":authority", "a:1"),
                ("connection", "close"),
            ]),
            f(&[(":method", "GET"), (":authority", "a:1")]),
        ];
        for (i, fields) in cases.into_iter().enumerate() {
            assert!(connect_request(fields).is_err(), "case {i} accepted");
        }
    }
}
