use super::*;

/// Encodes into a fixed stack buffer (the crate's tests run without `alloc`).
fn encode_fixed<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> ([u8; 512], usize) {
    let mut buf = [0u8; 512];
    let n = encode_into(pairs, &mut buf).expect("test map fits");
    (buf, n)
}

fn collect<'a>(pairs: Pairs<'a>, out: &mut [(&'a [u8], &'a [u8]); 8]) -> usize {
    let mut n = 0;
    for pair in pairs {
        out[n] = pair;
        n += 1;
    }
    n
}

#[test]
fn encodes_the_documented_layout() {
    let (buf, n) = encode_fixed(&[("a", "bc"), (":path", "")]);
    let expected: &[u8] = &[
        2, 0, 0, 0, // count
        1, 0, 0, 0, 2, 0, 0, 0, // a, bc
        5, 0, 0, 0, 0, 0, 0, 0, // :path, ""
        b'a', 0, b'b', b'c', 0, b':', b'p', b'a', b't', b'h', 0, 0,
    ];
    assert_eq!(&buf[..n], expected);
    assert_eq!(encoded_len(&[("a", "bc"), (":path", "")]), Ok(n));
}

#[test]
fn round_trips() {
    let pairs = [
        (":method", "GET"),
        (":path", "/x?y=1"),
        ("x-dup", "1"),
        ("x-dup", "2"),
        ("empty", ""),
    ];
    let (buf, n) = encode_fixed(&pairs);
    let decoded = decode(&buf[..n]).expect("valid");
    assert_eq!(decoded.len(), 5);
    let mut out = [(&b""[..], &b""[..]); 8];
    let count = collect(decoded, &mut out);
    assert_eq!(count, 5);
    for (got, want) in out.iter().zip(pairs.iter()) {
        assert_eq!(got.0, want.0.as_bytes());
        assert_eq!(got.1, want.1.as_bytes());
    }
}

#[test]
fn empty_inputs_are_empty_maps() {
    assert_eq!(decode(&[]).map(|p| p.count()), Ok(0));
    assert_eq!(decode(&[0, 0, 0, 0]).map(|p| p.count()), Ok(0));
    let empty: [(&str, &str); 0] = [];
    let (buf, n) = encode_fixed(&empty);
    assert_eq!(&buf[..n], &[0, 0, 0, 0]);
}

#[test]
fn binary_keys_and_values_survive() {
    let pairs: [(&[u8], &[u8]); 1] = [(&[0xff, 0x00, 0x01], &[0x00])];
    let (buf, n) = encode_fixed(&pairs);
    let (k, v) = decode(&buf[..n]).expect("valid").next().expect("one pair");
    assert_eq!(k, &[0xff, 0x00, 0x01]);
    assert_eq!(v, &[0x00]);
}

#[test]
fn short_count_is_truncated() {
    for len in 1..4 {
        assert_eq!(
            decode(&[1, 0, 0, 0][..len]).err(),
            Some(HeaderMapError::Truncated {
                needed: 4,
                available: len
            })
        );
    }
}

#[test]
fn count_beyond_the_bytes_is_rejected_before_any_table_read() {
    assert_eq!(
        decode(&[0xff, 0xff, 0xff, 0xff]).err(),
        Some(HeaderMapError::CountTooLarge { count: u32::MAX })
    );
    assert_eq!(
        decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).err(),
        Some(HeaderMapError::CountTooLarge { count: 1 })
    );
}

#[test]
fn every_truncation_of_a_valid_map_is_an_error() {
    let (buf, n) = encode_fixed(&[("host", "example.com"), ("x", "y")]);
    for len in 1..n {
        assert!(decode(&buf[..len]).is_err(), "length {len} decoded");
    }
    assert!(decode(&buf[..n]).is_ok());
}

#[test]
fn missing_nul_is_reported_with_its_offset() {
    let (mut buf, n) = encode_fixed(&[("ab", "c")]);
    // key "ab" starts at 12, its NUL at 14.
    buf[14] = b'!';
    assert_eq!(
        decode(&buf[..n]).err(),
        Some(HeaderMapError::MissingNul { offset: 14 })
    );
}

#[test]
fn oversized_lengths_are_truncation_not_overflow() {
    // count 1, key_len u32::MAX, value_len 0, then 2 bytes.
    let bytes = [1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0];
    assert!(matches!(
        decode(&bytes),
        Err(HeaderMapError::Truncated { .. })
    ));
    let bytes = [1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0];
    assert!(matches!(
        decode(&bytes),
        Err(HeaderMapError::Truncated { .. })
    ));
}

#[test]
fn trailing_bytes_are_rejected() {
    let (mut buf, n) = encode_fixed(&[("a", "b")]);
    buf[n] = 7;
    assert_eq!(
        decode(&buf[..n + 1]).err(),
        Some(HeaderMapError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn small_output_buffer_is_an_error_and_untouched() {
    let mut buf = [0xaau8; 10];
    assert_eq!(
        encode_into(&[("abc", "def")], &mut buf),
        Err(HeaderMapError::BufferTooSmall {
            needed: 20,
            available: 10
        })
    );
    assert_eq!(buf, [0xaa; 10]);
}

#[cfg(feature = "alloc")]
#[test]
fn encode_to_vec_matches_encode_into() {
    let pairs = [("k", "v"), ("k2", "v2")];
    let (buf, n) = encode_fixed(&pairs);
    assert_eq!(encode_to_vec(&pairs).expect("fits").as_slice(), &buf[..n]);
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Checks one input: decoding never panics, and whatever decodes re-encodes to the same bytes
/// (the format has exactly one encoding per map).
fn check_arbitrary(bytes: &[u8]) {
    let Ok(pairs) = decode(bytes) else { return };
    let mut table = [(&b""[..], &b""[..]); 64];
    let mut n = 0;
    for pair in pairs {
        assert!(n < table.len(), "more pairs than the input can hold");
        table[n] = pair;
        n += 1;
    }
    let mut out = [0u8; 1024];
    let written = encode_into(&table[..n], &mut out).expect("re-encode");
    if bytes.is_empty() {
        assert_eq!(&out[..written], &[0, 0, 0, 0]);
    } else {
        assert_eq!(&out[..written], bytes);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut buf = [0u8; 300];
    for _ in 0..20_000 {
        let len = rng.below(buf.len());
        for b in &mut buf[..len] {
            *b = rng.next() as u8;
        }
        // Small counts are far likelier to reach the size table and data checks.
        if len >= 4 && rng.below(2) == 0 {
            buf[..4].copy_from_slice(&(rng.below(6) as u32).to_le_bytes());
        }
        check_arbitrary(&buf[..len]);
    }
}

#[test]
fn mutated_valid_maps_never_panic() {
    let mut rng = Rng(42);
    let (base, n) = encode_fixed(&[(":authority", "a.example"), ("x-k", "v"), ("", "")]);
    for _ in 0..20_000 {
        let mut buf = base;
        for _ in 0..=rng.below(3) {
            let at = rng.below(n);
            buf[at] = rng.next() as u8;
        }
        let len = n - rng.below(4).min(n);
        check_arbitrary(&buf[..len]);
    }
}
