//! The requests of an HTTP/1 connection followed as bytes, before the HTTP/1.1 codec (hyper)
//! reads them, so that every request head (not only the first) has its line screened for its
//! version ([`super::request_line::screen`]), as Envoy's codec screens each request.
//!
//! The framer holds each request head until it is whole, screens it and notes its verdict,
//! then lets the body through by its framing (`content-length`, or chunked up to its last
//! chunk and trailers). A CONNECT or an `Upgrade` request, or anything it cannot frame (a
//! line that is not a request line, a bad `content-length`, a head past [`HEAD_LIMIT`]), ends
//! the screening: from there the bytes pass as they are, for the codec to take or refuse.

use bytes::{Bytes, BytesMut};

/// The longest head held for screening; past it, the bytes pass as they are (the codec
/// refuses a head that long anyway).
pub const HEAD_LIMIT: usize = 96 * 1024;

/// The longest chunk-size or trailer line followed; past it, screening ends.
const LINE_LIMIT: usize = 8 * 1024;

/// Where the framer is in the connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At (or inside) a request head.
    Head,
    /// Inside a body of known length: this many bytes left.
    Fixed(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// Inside a chunk: this many bytes left, its CRLF included.
    ChunkData(u64),
    /// At the trailer lines after the last chunk.
    Trailers,
    /// Screening is over: everything passes.
    Opaque,
}

/// Follows one connection's requests (see the module doc).
#[derive(Debug)]
pub struct Framer {
    state: State,
    accept_http_10: bool,
    held: BytesMut,
}

impl Framer {
    /// A framer at the start of a connection whose manager has `accept_http_10`.
    pub fn new(accept_http_10: bool) -> Framer {
        Framer {
            state: State::Head,
            accept_http_10,
            held: BytesMut::new(),
        }
    }

    /// The buffer bytes read from the connection go into before [`Framer::process`].
    pub fn held_mut(&mut self) -> &mut BytesMut {
        &mut self.held
    }

    /// Whether screening is over and nothing is held: the framer can be dropped.
    pub fn is_done(&self) -> bool {
        self.state == State::Opaque && self.held.is_empty()
    }

    /// Inside a body with nothing held: how many bytes may be read straight through, as
    /// they are, before the framer must look again (then [`Framer::passed`] says how many
    /// went). `None` where the framer must see the bytes.
    pub fn straight_through(&self) -> Option<u64> {
        match self.state {
            State::Fixed(left) | State::ChunkData(left) if self.held.is_empty() => Some(left),
            _ => None,
        }
    }

    /// `n` bytes (at most [`Framer::straight_through`]) went straight through.
    pub fn passed(&mut self, n: u64) {
        self.state = match self.state {
            State::Fixed(left) if left <= n => State::Head,
            State::Fixed(left) => State::Fixed(left - n),
            State::ChunkData(left) if left <= n => State::ChunkSize,
            State::ChunkData(left) => State::ChunkData(left - n),
            other => other,
        };
    }

    /// Whatever is held, as it is (the connection ended, or is handed over).
    pub fn take_held(&mut self) -> BytesMut {
        std::mem::take(&mut self.held)
    }

    /// Takes from the held bytes all it can follow and returns the bytes for the codec
    /// (screened heads included); an incomplete head or line stays held for more bytes.
    /// `verdict` is told, for each head screened, in order, whether it is refused.
    pub fn process(&mut self, verdict: &mut dyn FnMut(bool)) -> Bytes {
        let mut out = Output::default();
        loop {
            match self.state {
                State::Opaque => {
                    out.push(self.held.split().freeze());
                    return out.finish();
                }
                State::Fixed(left) | State::ChunkData(left) => {
                    if self.held.is_empty() {
                        return out.finish();
                    }
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.held.len());
                    out.push(self.held.split_to(n).freeze());
                    let left = left - n as u64;
                    self.state = match (self.state, left) {
                        (State::Fixed(_), 0) => State::Head,
                        (State::ChunkData(_), 0) => State::ChunkSize,
                        (State::ChunkData(_), _) => State::ChunkData(left),
                        _ => State::Fixed(left),
                    };
                }
                State::ChunkSize | State::Trailers => {
                    let Some(end) = memchr::memchr(b'\n', &self.held) else {
                        if self.held.len() > LINE_LIMIT {
                            self.state = State::Opaque;
                            continue;
                        }
                        return out.finish();
                    };
                    let line = self.held.split_to(end + 1);
                    let text = line.strip_suffix(b"\n").unwrap_or(&line);
                    let text = text.strip_suffix(b"\r").unwrap_or(text);
                    self.state = if self.state == State::Trailers {
                        if text.is_empty() {
                            State::Head
                        } else {
                            State::Trailers
                        }
                    } else {
                        match chunk_size(text) {
                            Some(0) => State::Trailers,
                            Some(size) => State::ChunkData(size.saturating_add(2)),
                            None => State::Opaque,
                        }
                    };
                    out.push(line.freeze());
                }
                State::Head => {
                    // Empty lines before a request line pass as they are.
                    while self.held.first() == Some(&b'\n') || self.held.starts_with(b"\r\n") {
                        let n = if self.held[0] == b'\n' { 1 } else { 2 };
                        out.push(self.held.split_to(n).freeze());
                    }
                    if self.held.is_empty() || self.held[..] == b"\r"[..] {
                        return out.finish();
                    }
                    let Some(end) = head_end(&self.held) else {
                        if self.held.len() > HEAD_LIMIT {
                            self.state = State::Opaque;
                            continue;
                        }
                        return out.finish();
                    };
                    let Some(end) = end else {
                        // Not a request line: the codec says what it is.
                        self.state = State::Opaque;
                        continue;
                    };
                    let head = self.held.split_to(end);
                    let screened = super::request_line::screen(head, self.accept_http_10);
                    verdict(screened.refused);
                    self.state = body_framing(&screened.bytes);
                    out.push(screened.bytes);
                }
            }
        }
    }
}

/// The bytes [`Framer::process`] gives the codec: the one piece as it is (the common case, a
/// head alone: no copy), or the pieces joined.
#[derive(Default)]
struct Output {
    first: Bytes,
    joined: Option<BytesMut>,
}

impl Output {
    fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        if let Some(joined) = &mut self.joined {
            joined.extend_from_slice(&piece);
        } else if self.first.is_empty() {
            self.first = piece;
        } else {
            let mut joined = BytesMut::with_capacity(self.first.len() + piece.len());
            joined.extend_from_slice(&self.first);
            joined.extend_from_slice(&piece);
            self.joined = Some(joined);
        }
    }

    fn finish(self) -> Bytes {
        match self.joined {
            Some(joined) => joined.freeze(),
            None => self.first,
        }
    }
}

/// Where the head at the start of `held` ends: `None` while it is not whole yet,
/// `Some(None)` when it does not start with a request line, else `Some(Some(end))`. An
/// HTTP/0.9 line (no version) is a whole head; any other ends at its empty line.
fn head_end(held: &[u8]) -> Option<Option<usize>> {
    let line_end = memchr::memchr(b'\n', held)?;
    let line = &held[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let tokens = line.split(|b| *b == b' ').count();
    if line.is_empty() || line.split(|b| *b == b' ').any(<[u8]>::is_empty) {
        return Some(None);
    }
    match tokens {
        2 => Some(Some(line_end + 1)),
        3 => {
            // The first line end followed by an empty line (`\r\n` or a bare `\n`).
            memchr::memchr_iter(b'\n', &held[line_end..])
                .map(|at| line_end + at + 1)
                .find_map(|after| match &held[after..] {
                    [b'\n', ..] => Some(after + 1),
                    [b'\r', b'\n', ..] => Some(after + 2),
                    _ => None,
                })
                .map(Some)
        }
        _ => Some(None),
    }
}

/// What follows a whole (screened) head: nothing, a body of known length, a chunked body;
/// or, for a CONNECT, an upgrade, or framing it cannot tell, the end of screening.
fn body_framing(head: &[u8]) -> State {
    if head.starts_with(b"CONNECT ") {
        return State::Opaque;
    }
    // Line by line (memchr finds each end; a byte-at-a-time split cost more than the rest).
    let mut start = 0;
    let lines = memchr::memchr_iter(b'\n', head)
        .map(move |end| {
            let line = &head[start..end];
            start = end + 1;
            line
        })
        .skip(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut coded = false;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = &line[..colon];
        // Read only for the three names that frame a body.
        let value = || std::str::from_utf8(&line[colon + 1..]).unwrap_or("").trim();
        if name.eq_ignore_ascii_case(b"upgrade") {
            return State::Opaque;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            coded = true;
            chunked = value()
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for part in value().split(',') {
                match (part.trim().parse::<u64>(), length) {
                    (Ok(n), None) => length = Some(n),
                    (Ok(n), Some(seen)) if n == seen => {}
                    _ => return State::Opaque,
                }
            }
        }
    }
    match (coded, chunked, length) {
        (true, true, _) => State::ChunkSize,
        (true, false, _) => State::Opaque,
        (false, _, Some(0) | None) => State::Head,
        (false, _, Some(n)) => State::Fixed(n),
    }
}

/// The size of a chunk-size line (hex digits, then maybe extensions); `None` when bad.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    if !(rest.is_empty()
        || rest.starts_with(b";")
        || rest.starts_with(b" ")
        || rest.starts_with(b"\t"))
    {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; the output and the verdicts.
    fn run(input: &[u8], accept: bool, step: usize) -> (String, Vec<bool>) {
        let mut framer = Framer::new(accept);
        let mut out = Vec::new();
        let mut verdicts = Vec::new();
        for piece in input.chunks(step.max(1)) {
            framer.held_mut().extend_from_slice(piece);
            out.extend_from_slice(&framer.process(&mut |refused| verdicts.push(refused)));
        }
        out.extend_from_slice(&framer.take_held());
        (String::from_utf8_lossy(&out).into_owned(), verdicts)
    }

    fn every_step(input: &[u8], accept: bool) -> (String, Vec<bool>) {
        let whole = run(input, accept, input.len());
        for step in 1..input.len() {
            assert_eq!(run(input, accept, step), whole, "in pieces of {step}");
        }
        whole
    }

    #[test]
    fn a_later_http10_request_is_screened_like_the_first() {
        let input = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.0\r\nHost: b\r\n\r\n";
        assert_eq!(
            every_step(input, false),
            (
                "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n".to_owned(),
                vec![false, true]
            )
        );
        let (out, verdicts) = every_step(input, true);
        assert_eq!(out.as_bytes(), input);
        assert_eq!(verdicts, [false, false]);
        // HTTP/0.9 after HTTP/1.1.
        assert_eq!(
            every_step(b"GET /a HTTP/1.1\r\n\r\nGET /e\r\n", true),
            (
                "GET /a HTTP/1.1\r\n\r\nGET /e HTTP/1.0\r\n\r\n".to_owned(),
                vec![false, false]
            )
        );
    }

    #[test]
    fn bodies_pass_unscreened_by_their_framing() {
        // A body that looks like a request line is not one.
        let fixed = b"POST /a HTTP/1.1\r\nContent-Length: 18\r\n\r\nGET /x HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
        assert_eq!(
            every_step(fixed, false),
            (
                "POST /a HTTP/1.1\r\nContent-Length: 18\r\n\r\nGET /x HTTP/1.0\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
                    .to_owned(),
                vec![false, true]
            )
        );
        let chunked = b"POST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n13;x=y\r\nGET /x HTTP/1.0\r\n\r\n\r\n0\r\nT: v\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
        let (out, verdicts) = every_step(chunked, false);
        assert!(out.ends_with("GET /b HTTP/1.1\r\n\r\n"), "{out}");
        assert!(out.contains("\r\n13;x=y\r\nGET /x HTTP/1.0\r\n"), "{out}");
        assert_eq!(verdicts, [false, true]);
    }

    #[test]
    fn bodies_can_go_straight_through() {
        let mut framer = Framer::new(false);
        framer
            .held_mut()
            .extend_from_slice(b"POST /a HTTP/1.1\r\ncontent-length: 10\r\n\r\n");
        let mut verdicts = Vec::new();
        let head = framer.process(&mut |refused| verdicts.push(refused));
        assert!(head.ends_with(b"\r\n\r\n"));
        assert_eq!(framer.straight_through(), Some(10));
        framer.passed(4);
        assert_eq!(framer.straight_through(), Some(6));
        framer.passed(6);
        assert_eq!(framer.straight_through(), None, "at the next head");
        framer
            .held_mut()
            .extend_from_slice(b"GET /b HTTP/1.0\r\n\r\n");
        let next = framer.process(&mut |refused| verdicts.push(refused));
        assert_eq!(&next[..], b"GET /b HTTP/1.1\r\n\r\n");
        assert_eq!(verdicts, [false, true]);
    }

    #[test]
    fn tunnels_and_what_cannot_be_framed_end_screening() {
        for input in [
            &b"CONNECT a:1 HTTP/1.1\r\n\r\nGET /b HTTP/1.0\r\n\r\n"[..],
            b"GET /a HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: x\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
        ] {
            let (out, verdicts) = every_step(input, false);
            assert_eq!(out.as_bytes(), input);
            assert_eq!(verdicts, [false]);
        }
        let junk = b"hello\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
        assert_eq!(
            every_step(junk, false),
            (String::from_utf8_lossy(junk).into_owned(), vec![])
        );
    }
}
