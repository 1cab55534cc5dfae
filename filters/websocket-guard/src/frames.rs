//! A streaming WebSocket (RFC 6455) frame-header parser: it is fed the bytes of one direction
//! in whatever chunks they arrive, skips payloads without buffering them, and counts messages.
//!
//! A *message* is counted when the header of its final frame (FIN set, opcode text, binary or
//! continuation) has been read — before that frame's payload goes on — so a limit stops the
//! message that exceeds it. Control frames (close, ping, pong) are not messages.

/// Limits for one direction; `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most data messages allowed.
    pub max_messages: Option<u64>,
    /// Largest frame payload allowed, in bytes.
    pub max_frame_payload: Option<u64>,
}

/// Why a direction must be stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// One message more than `max_messages`.
    TooManyMessages {
        /// The limit.
        limit: u64,
    },
    /// A frame announced a payload over `max_frame_payload`.
    FrameTooLarge {
        /// The announced size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes are not WebSocket framing.
    Protocol(&'static str),
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::TooManyMessages { limit } => write!(f, "more than {limit} messages"),
            Violation::FrameTooLarge { size, limit } => {
                write!(f, "frame payload {size} bytes exceeds {limit}")
            }
            Violation::Protocol(what) => write!(f, "not WebSocket framing: {what}"),
        }
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PONG: u8 = 0xA;

/// Parser state for one direction.
#[derive(Debug, Clone, Default)]
pub struct FrameParser {
    limits: Limits,
    /// Header bytes gathered so far (a header is at most 14 bytes).
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: u64,
    /// A fragmented message is open (its first frame had FIN clear).
    in_message: bool,
    /// Data messages completed.
    messages: u64,
    /// Frames seen (data and control).
    frames: u64,
    /// Set once a violation was returned: the direction is dead.
    failed: Option<Violation>,
}

impl FrameParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameParser {
            limits,
            ..Self::default()
        }
    }

    /// Data messages completed so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Frames seen so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Header length implied by the bytes gathered so far (2 until the second byte is in).
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    /// Feeds the next bytes of the direction. After the first violation every call returns it.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Violation> {
        if let Some(v) = self.failed {
            return Err(v);
        }
        while !data.is_empty() {
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.payload_left -= skip as u64;
                data = &data[skip..];
                continue;
            }
            // Gather header bytes until the header is complete (its length can grow once the
            // second byte is known).
            while self.have < self.header_len() {
                let Some((&byte, rest)) = data.split_first() else {
                    return Ok(());
                };
                self.header[self.have] = byte;
                self.have += 1;
                data = rest;
            }
            let result = self.frame_header();
            self.have = 0;
            if let Err(v) = result {
                self.failed = Some(v);
                return Err(v);
            }
        }
        Ok(())
    }

    /// Checks a complete header, counts it, and sets up the payload skip.
    fn frame_header(&mut self) -> Result<(), Violation> {
        let fin = self.header[0] & 0x80 != 0;
        let opcode = self.header[0] & 0x0f;
        let len7 = self.header[1] & 0x7f;
        let payload = match len7 {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&self.header[2..10]);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(Violation::Protocol("64-bit length with the top bit set"));
                }
                len
            }
            short => u64::from(short),
        };
        self.frames += 1;
        match opcode {
            OP_CLOSE..=OP_PONG => {
                if !fin || payload > 125 {
                    return Err(Violation::Protocol("fragmented or oversized control frame"));
                }
            }
            OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                if opcode == OP_CONTINUATION && !self.in_message {
                    return Err(Violation::Protocol("continuation without a message"));
                }
                if opcode != OP_CONTINUATION && self.in_message {
                    return Err(Violation::Protocol("new message inside a fragmented one"));
                }
                if let Some(limit) = self.limits.max_frame_payload
                    && payload > limit
                {
                    return Err(Violation::FrameTooLarge {
                        size: payload,
                        limit,
                    });
                }
                self.in_message = !fin;
                if fin {
                    if let Some(limit) = self.limits.max_messages
                        && self.messages >= limit
                    {
                        return Err(Violation::TooManyMessages { limit });
                    }
                    self.messages += 1;
                }
            }
            _ => return Err(Violation::Protocol("reserved opcode")),
        }
        self.payload_left = payload;
        Ok(())
    }
}

/// Builds one frame (for tests and examples): `mask` = Some(key) masks the payload as a client
/// must.
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (opcode & 0x0f)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    fn feed_in_chunks(
        parser: &mut FrameParser,
        bytes: &[u8],
        chunk: usize,
    ) -> Result<(), Violation> {
        bytes.chunks(chunk).try_for_each(|c| parser.feed(c))
    }

    #[test]
    fn counts_messages_across_any_chunking() {
        let mut stream = Vec::new();
        stream.extend(encode_frame(true, OP_TEXT, b"hello", KEY));
        stream.extend(encode_frame(false, OP_BINARY, &[7; 300], KEY));
        stream.extend(encode_frame(true, 0x9, b"ping", KEY));
        stream.extend(encode_frame(true, OP_CONTINUATION, &[8; 70_000], KEY));
        stream.extend(encode_frame(true, OP_TEXT, b"", None));
        for chunk in [1, 2, 3, 7, 13, 64, 1000, stream.len()] {
            let mut p = FrameParser::new(Limits::default());
            feed_in_chunks(&mut p, &stream, chunk).expect("valid stream");
            assert_eq!(p.messages(), 3, "chunk {chunk}");
            assert_eq!(p.frames(), 5, "chunk {chunk}");
        }
    }

    #[test]
    fn the_message_over_the_limit_is_refused() {
        let limits = Limits {
            max_messages: Some(2),
            max_frame_payload: None,
        };
        let mut p = FrameParser::new(limits);
        let frame = encode_frame(true, OP_TEXT, b"x", KEY);
        p.feed(&frame).expect("1");
        p.feed(&frame).expect("2");
        assert_eq!(p.feed(&frame), Err(Violation::TooManyMessages { limit: 2 }));
        // Dead from now on.
        assert!(p.feed(&[]).is_err());
        assert_eq!(p.messages(), 2);
    }

    #[test]
    fn oversized_frames_are_refused_from_their_header() {
        let limits = Limits {
            max_messages: None,
            max_frame_payload: Some(100),
        };
        let mut p = FrameParser::new(limits);
        let frame = encode_frame(true, OP_BINARY, &[0; 101], None);
        assert_eq!(
            p.feed(&frame[..4]),
            Err(Violation::FrameTooLarge {
                size: 101,
                limit: 100
            })
        );
    }

    #[test]
    fn framing_errors_are_violations() {
        let bad = [
            encode_frame(true, OP_CONTINUATION, b"x", None),
            encode_frame(false, 0x9, b"x", None),
            encode_frame(true, 0x9, &[0; 126], None),
            encode_frame(true, 0x3, b"", None),
            vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0],
        ];
        for frame in bad {
            let mut p = FrameParser::new(Limits::default());
            assert!(
                matches!(p.feed(&frame), Err(Violation::Protocol(_))),
                "{frame:?}"
            );
        }
        let mut p = FrameParser::new(Limits::default());
        let mut two = encode_frame(false, OP_TEXT, b"a", None);
        two.extend(encode_frame(true, OP_TEXT, b"b", None));
        assert!(matches!(p.feed(&two), Err(Violation::Protocol(_))));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..5000 {
            let mut p = FrameParser::new(Limits {
                max_messages: Some(3),
                max_frame_payload: Some(1000),
            });
            let mut buf = [0u8; 64];
            for b in &mut buf {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let _ = feed_in_chunks(&mut p, &buf, (x % 9 + 1) as usize);
        }
    }
}
