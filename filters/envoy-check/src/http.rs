//! A minimal HTTP/1.1 client and WebSocket frame I/O over `std::net`, with timeouts.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Every socket read and write gives up after this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A response: status, headers (names lowercased, in order) and the raw body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// (lowercased name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// Everything after the head (chunked framing left in place).
    pub body: Vec<u8>,
}

impl Response {
    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connects with timeouts set.
pub fn connect(addr: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// `GET path` with extra headers and `connection: close`; reads the whole response.
pub fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    let mut stream = connect(addr)?;
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Reads up to the end of a response head from `stream` (byte by byte: nothing past the head
/// is consumed) and parses it.
pub fn read_head(stream: &mut TcpStream) -> io::Result<Response> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in head"));
        }
        raw.push(byte[0]);
        if raw.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
    }
    parse_response(&raw)
}

/// Parses a response head (and whatever body follows it).
pub fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("head not utf-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// Reads one WebSocket frame: (opcode, payload). Unmasks if masked.
pub fn read_frame(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    let mut len = u64::from(head[1] & 0x7f);
    if len == 126 {
        let mut ext = [0u8; 2];
        stream.read_exact(&mut ext)?;
        len = u64::from(u16::from_be_bytes(ext));
    } else if len == 127 {
        let mut ext = [0u8; 8];
        stream.read_exact(&mut ext)?;
        len = u64::from_be_bytes(ext);
    }
    if len > 1 << 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too big"));
    }
    let mut key = [0u8; 4];
    let masked = head[1] & 0x80 != 0;
    if masked {
        stream.read_exact(&mut key)?;
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok((head[0] & 0x0f, payload))
}

/// Writes one final frame with a payload under 126 bytes, masked with `key` when given.
pub fn write_frame(
    stream: &mut TcpStream,
    opcode: u8,
    payload: &[u8],
    key: Option<[u8; 4]>,
) -> io::Result<()> {
    assert!(payload.len() < 126, "test frames are small");
    let mut frame = vec![0x80 | opcode, payload.len() as u8];
    match key {
        Some(key) => {
            frame[1] |= 0x80;
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    stream.write_all(&frame)
}
