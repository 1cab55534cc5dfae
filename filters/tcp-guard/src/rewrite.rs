//! Replacing a byte string in a stream that arrives in pieces: a match may be split across
//! two pieces, so the tail of a piece that could begin a match is kept back and put in front
//! of the next one (and let go at the end of the stream).

/// One direction's replacer.
#[derive(Debug, Clone)]
pub struct Replacer {
    from: Vec<u8>,
    to: Vec<u8>,
    /// The tail kept back from the last piece: a proper prefix of `from`.
    pending: Vec<u8>,
    /// Matches replaced so far.
    replaced: u64,
}

impl Replacer {
    /// Replaces every `from` (not empty) with `to`.
    pub fn new(from: &[u8], to: &[u8]) -> Replacer {
        Replacer {
            from: from.to_vec(),
            to: to.to_vec(),
            pending: Vec::new(),
            replaced: 0,
        }
    }

    /// The bytes to pass on for `piece`; at `end` nothing is kept back.
    pub fn feed(&mut self, piece: &[u8], end: bool) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.pending);
        data.extend_from_slice(piece);
        let mut out = Vec::with_capacity(data.len());
        let Some(&first) = self.from.first() else {
            return data;
        };
        let mut at = 0;
        while at < data.len() {
            // Copy up to the next byte that could start a match.
            let Some(next) = data[at..].iter().position(|&b| b == first) else {
                out.extend_from_slice(&data[at..]);
                break;
            };
            out.extend_from_slice(&data[at..at + next]);
            at += next;
            let rest = &data[at..];
            if rest.starts_with(&self.from) {
                out.extend_from_slice(&self.to);
                at += self.from.len();
                self.replaced += 1;
            } else if !end && rest.len() < self.from.len() && self.from.starts_with(rest) {
                self.pending = rest.to_vec();
                break;
            } else {
                out.push(first);
                at += 1;
            }
        }
        out
    }

    /// Matches replaced so far.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace_all(text: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < text.len() {
            if text[at..].starts_with(from) {
                out.extend_from_slice(to);
                at += from.len();
            } else {
                out.push(text[at]);
                at += 1;
            }
        }
        out
    }

    #[test]
    fn whole_piece() {
        let mut r = Replacer::new(b"ping", b"pong!");
        assert_eq!(r.feed(b"a ping, pping, pin", true), b"a pong!, ppong!, pin");
        assert_eq!(r.replaced(), 2);
    }

    #[test]
    fn split_matches_are_found_at_every_cut() {
        let text = b"xxpingpinpingpping-ping-pi";
        let expected = replace_all(text, b"ping", b"PONG");
        for cut in 0..=text.len() {
            for cut2 in cut..=text.len() {
                let mut r = Replacer::new(b"ping", b"PONG");
                let mut out = r.feed(&text[..cut], false);
                out.extend(r.feed(&text[cut..cut2], false));
                out.extend(r.feed(&text[cut2..], false));
                out.extend(r.feed(b"", true));
                assert_eq!(out, expected, "cuts at {cut}, {cut2}");
            }
        }
    }

    #[test]
    fn held_tail_is_released_when_it_cannot_match() {
        let mut r = Replacer::new(b"abc", b"");
        assert_eq!(r.feed(b"xxab", false), b"xx");
        assert_eq!(r.feed(b"d", false), b"abd");
        assert_eq!(r.feed(b"ab", false), b"");
        assert_eq!(r.feed(b"", true), b"ab");
    }

    #[test]
    fn pieces_of_one_byte() {
        let text = b"the ping of pings is not a pin, ping";
        let mut r = Replacer::new(b"ping", b"P");
        let mut out = Vec::new();
        for byte in text {
            out.extend(r.feed(std::slice::from_ref(byte), false));
        }
        out.extend(r.feed(b"", true));
        assert_eq!(out, replace_all(text, b"ping", b"P"));
    }
}
