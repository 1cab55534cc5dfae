//! The header-map wire format, as `proxy_get_header_map_pairs`, `proxy_set_header_map_pairs`,
//! `proxy_send_local_response` and `proxy_http_call` carry it.
//!
//! Layout, all integers little-endian `u32`:
//!
//! ```text
//! count
//! key_len[0] value_len[0] ... key_len[count-1] value_len[count-1]
//! key[0] NUL value[0] NUL ... key[count-1] NUL value[count-1] NUL
//! ```
//!
//! An empty byte string is accepted as an empty map (hosts hand one over for a map with no
//! entries). Decoding checks every length against the bytes there are: the bytes may come from
//! an untrusted module or host, so a malformed map is an error, never a panic or an
//! out-of-bounds read.

use crate::HeaderMapError;

/// Bytes of the leading pair count.
pub const COUNT_LEN: usize = 4;
/// Bytes of one (key_len, value_len) entry of the size table.
pub const SIZES_LEN: usize = 8;
/// The fewest bytes one pair takes: its size-table entry and two NUL terminators.
pub const MIN_PAIR_LEN: usize = SIZES_LEN + 2;
/// Most pairs Envoy's host (proxy-wasm cpp-host) accepts in one map.
pub const CPP_HOST_MAX_PAIRS: usize = 1024;
/// Largest serialized map Envoy's host accepts, in bytes.
pub const CPP_HOST_MAX_BYTES: usize = 1 << 20;

fn read_u32(bytes: &[u8], offset: usize) -> Result<u32, HeaderMapError> {
    let end = offset.checked_add(4).ok_or(HeaderMapError::TooLarge)?;
    match bytes.get(offset..end) {
        Some(&[a, b, c, d]) => Ok(u32::from_le_bytes([a, b, c, d])),
        _ => Err(HeaderMapError::Truncated {
            needed: end,
            available: bytes.len(),
        }),
    }
}

fn to_usize(value: u32) -> Result<usize, HeaderMapError> {
    usize::try_from(value).map_err(|_| HeaderMapError::TooLarge)
}

/// Reads `len` bytes at `offset` followed by a NUL; returns the bytes and the offset after
/// the NUL.
fn read_terminated(
    bytes: &[u8],
    offset: usize,
    len: usize,
) -> Result<(&[u8], usize), HeaderMapError> {
    let nul_at = offset.checked_add(len).ok_or(HeaderMapError::TooLarge)?;
    let after = nul_at.checked_add(1).ok_or(HeaderMapError::TooLarge)?;
    if after > bytes.len() {
        return Err(HeaderMapError::Truncated {
            needed: after,
            available: bytes.len(),
        });
    }
    match (bytes.get(offset..nul_at), bytes.get(nul_at)) {
        (Some(field), Some(0)) => Ok((field, after)),
        (Some(_), Some(_)) => Err(HeaderMapError::MissingNul { offset: nul_at }),
        _ => Err(HeaderMapError::Truncated {
            needed: after,
            available: bytes.len(),
        }),
    }
}

/// Checks a serialized map completely and returns an iterator over its (key, value) pairs.
///
/// Errors when the count cannot fit, any length runs past the end, a NUL terminator is missing,
/// or bytes are left over after the last pair. Once this returns `Ok`, iterating cannot fail.
pub fn decode(bytes: &[u8]) -> Result<Pairs<'_>, HeaderMapError> {
    if bytes.is_empty() {
        return Ok(Pairs {
            bytes,
            next_size: COUNT_LEN,
            next_data: COUNT_LEN,
            remaining: 0,
        });
    }
    let count = read_u32(bytes, 0)?;
    let count_usize = to_usize(count)?;
    let body = bytes.len() - COUNT_LEN;
    if count_usize > body / MIN_PAIR_LEN {
        return Err(HeaderMapError::CountTooLarge { count });
    }
    // Cannot overflow: count * 8 <= body.
    let data_start = COUNT_LEN + count_usize * SIZES_LEN;
    let mut cursor = data_start;
    for i in 0..count_usize {
        let entry = COUNT_LEN + i * SIZES_LEN;
        let key_len = to_usize(read_u32(bytes, entry)?)?;
        let value_len = to_usize(read_u32(bytes, entry + 4)?)?;
        let (_, after_key) = read_terminated(bytes, cursor, key_len)?;
        let (_, after_value) = read_terminated(bytes, after_key, value_len)?;
        cursor = after_value;
    }
    if cursor != bytes.len() {
        return Err(HeaderMapError::TrailingBytes {
            extra: bytes.len() - cursor,
        });
    }
    Ok(Pairs {
        bytes,
        next_size: COUNT_LEN,
        next_data: data_start,
        remaining: count_usize,
    })
}

/// The (key, value) pairs of a map [`decode`] has checked, in wire order.
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    bytes: &'a [u8],
    next_size: usize,
    next_data: usize,
    remaining: usize,
}

impl<'a> Pairs<'a> {
    fn next_pair(&mut self) -> Result<(&'a [u8], &'a [u8]), HeaderMapError> {
        let key_len = to_usize(read_u32(self.bytes, self.next_size)?)?;
        let value_len = to_usize(read_u32(self.bytes, self.next_size + 4)?)?;
        let (key, after_key) = read_terminated(self.bytes, self.next_data, key_len)?;
        let (value, after_value) = read_terminated(self.bytes, after_key, value_len)?;
        self.next_size += SIZES_LEN;
        self.next_data = after_value;
        Ok((key, value))
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // `decode` validated every pair, so this cannot fail; should it anyway, the iterator
        // ends rather than panics.
        match self.next_pair() {
            Ok(pair) => Some(pair),
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Pairs<'_> {}

/// Bytes the wire format of `pairs` takes.
///
/// Errors when a key, a value, the count or the total does not fit in a `u32`.
pub fn encoded_len<K, V>(pairs: &[(K, V)]) -> Result<usize, HeaderMapError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    u32::try_from(pairs.len()).map_err(|_| HeaderMapError::TooLarge)?;
    let mut total = COUNT_LEN;
    for (key, value) in pairs {
        let (key, value) = (key.as_ref(), value.as_ref());
        u32::try_from(key.len()).map_err(|_| HeaderMapError::TooLarge)?;
        u32::try_from(value.len()).map_err(|_| HeaderMapError::TooLarge)?;
        total = total
            .checked_add(MIN_PAIR_LEN)
            .and_then(|t| t.checked_add(key.len()))
            .and_then(|t| t.checked_add(value.len()))
            .ok_or(HeaderMapError::TooLarge)?;
    }
    u32::try_from(total).map_err(|_| HeaderMapError::TooLarge)?;
    Ok(total)
}

/// Writes the wire format of `pairs` at the start of `out` and returns the bytes written.
///
/// Errors with [`HeaderMapError::BufferTooSmall`] (writing nothing) when `out` is too short;
/// [`encoded_len`] says how long it must be.
pub fn encode_into<K, V>(pairs: &[(K, V)], out: &mut [u8]) -> Result<usize, HeaderMapError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let needed = encoded_len(pairs)?;
    let Some(out) = out.get_mut(..needed) else {
        return Err(HeaderMapError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    };
    // Every length below fits in u32 (checked by `encoded_len`), and every range lies inside
    // `out` because `needed` is exactly the sum of what is written.
    let mut write = Writer { out, at: 0 };
    write.u32(pairs.len() as u32);
    for (key, value) in pairs {
        write.u32(key.as_ref().len() as u32);
        write.u32(value.as_ref().len() as u32);
    }
    for (key, value) in pairs {
        write.terminated(key.as_ref());
        write.terminated(value.as_ref());
    }
    Ok(needed)
}

/// Sequential writer over a buffer already known to be exactly large enough.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        if let Some(dst) = self.out.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        self.at = end;
    }

    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }

    fn terminated(&mut self, field: &[u8]) {
        self.bytes(field);
        self.bytes(&[0]);
    }
}

/// The wire format of `pairs` in a new `Vec`.
#[cfg(feature = "alloc")]
pub fn encode_to_vec<K, V>(pairs: &[(K, V)]) -> Result<alloc::vec::Vec<u8>, HeaderMapError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut out = alloc::vec![0; encoded_len(pairs)?];
    encode_into(pairs, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
