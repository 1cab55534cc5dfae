//! A raw HTTP/2 frame writer and reader for attack tests: what a hostile client sends, byte
//! by byte, without a client library's manners (it opens more streams than the server allows,
//! resets them at will, puts anything in a header).
//!
//! Header blocks use only HPACK literals without indexing (RFC 7541 6.2.2) and no Huffman
//! coding, so any name and value, `:authority: x@evil.example` included, goes out as written.

use bytes::{BufMut, Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types used here: HEADERS.
pub const HEADERS: u8 = 0x1;
/// DATA.
pub const DATA: u8 = 0x0;
/// RST_STREAM.
pub const RST_STREAM: u8 = 0x3;
/// SETTINGS.
pub const SETTINGS: u8 = 0x4;
/// PING.
pub const PING: u8 = 0x6;
/// GOAWAY.
pub const GOAWAY: u8 = 0x7;

/// END_STREAM flag.
pub const END_STREAM: u8 = 0x1;
/// END_HEADERS flag.
pub const END_HEADERS: u8 = 0x4;
/// ACK flag (SETTINGS, PING).
pub const ACK: u8 = 0x1;

/// Error codes.
pub const CANCEL: u32 = 0x8;
/// REFUSED_STREAM.
pub const REFUSED_STREAM: u32 = 0x7;
/// ENHANCE_YOUR_CALM.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame as read.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Its type.
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its stream.
    pub stream: u32,
    /// Its payload.
    pub payload: Bytes,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

/// Appends one frame to `out`.
pub fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
    out.put_slice(payload);
}

/// An HPACK header block of literal fields (no indexing, no Huffman).
pub fn header_block(fields: &[(&str, &str)]) -> BytesMut {
    let mut block = BytesMut::new();
    for (name, value) in fields {
        block.put_u8(0x00);
        put_string(&mut block, name.as_bytes());
        put_string(&mut block, value.as_bytes());
    }
    block
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    // A 7-bit prefixed integer length (RFC 7541 5.1), Huffman bit clear.
    let mut len = s.len();
    if len < 127 {
        out.put_u8(len as u8);
    } else {
        out.put_u8(127);
        len -= 127;
        while len >= 128 {
            out.put_u8((len % 128 + 128) as u8);
            len /= 128;
        }
        out.put_u8(len as u8);
    }
    out.put_slice(s);
}

/// A GET's HEADERS frame on `stream` for `authority` and `path`.
pub fn get(out: &mut BytesMut, stream: u32, authority: &str, path: &str, end_stream: bool) {
    let block = header_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
    ]);
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(out, HEADERS, flags, stream, &block);
}

/// A raw HTTP/2 client connection.
pub struct RawH2 {
    /// The socket.
    pub tcp: TcpStream,
    buf: BytesMut,
}

impl RawH2 {
    /// Connects, sends the preface and an empty SETTINGS (the server's SETTINGS are ACKed as
    /// they are read by [`Self::read_frame`]).
    pub async fn connect(addr: std::net::SocketAddr) -> std::io::Result<RawH2> {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut out = BytesMut::from(PREFACE);
        frame(&mut out, SETTINGS, 0, 0, &[]);
        tcp.write_all(&out).await?;
        Ok(RawH2 {
            tcp,
            buf: BytesMut::new(),
        })
    }

    /// Writes `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// Reads the next frame within `limit`: `Ok(None)` at EOF or when the time is up. A
    /// SETTINGS frame from the server is ACKed.
    pub async fn read_frame(&mut self, limit: Duration) -> std::io::Result<Option<Frame>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head = self.buf.split_to(9);
                    let payload = self.buf.split_to(len).freeze();
                    let frame = Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload,
                    };
                    if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                        let mut ack = BytesMut::new();
                        self::frame(&mut ack, SETTINGS, ACK, 0, &[]);
                        self.tcp.write_all(&ack).await?;
                    }
                    return Ok(Some(frame));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Ok(read) => read?,
                Err(_) => return Ok(None),
            };
            if read == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }
}
