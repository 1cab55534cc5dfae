//! The few header values an access log entry keeps of a head.
//!
//! A request's head moves on to the upstream (and a response's to the client) long before
//! the line is written, so an entry copies out the values its formats read, and nothing
//! else. They are kept as bytes, each under its name's *slot* (the name's place in the list
//! of names the formats read, given to each format once: [`super::format::Format::assign_slots`]),
//! so a line finds a value without comparing names, and keeping one takes no reference count
//! (a `HeaderValue` clone would take one, and its drop give it back).

use http::{HeaderMap, HeaderName};

/// Most headers a head may have for [`PickedHeaders::copy`] to pick from it in one pass;
/// past it, each name is looked up.
const SCAN_AT_MOST: usize = 16;

/// Bytes before each value: its slot (`u16`) and its length (`u32`), little-endian.
const PREFIX: usize = 6;

/// Room taken at the first value kept: a user agent and a request id without a second
/// allocation.
const FIRST_ROOM: usize = 128;

/// The names an entry keeps the values of (a name's slot is its index), with a sieve of their
/// lengths: most headers of a head are none of them, and are passed over on their length.
#[derive(Debug, Default)]
pub struct PickNames {
    names: Vec<HeaderName>,
    /// Bit `n` is set when a name is `n` bytes long (bit 63: 63 bytes or more).
    lengths: u64,
}

impl PickNames {
    /// The names, in slot order.
    pub fn new(names: Vec<HeaderName>) -> PickNames {
        let lengths = names.iter().fold(0, |bits, name| bits | length_bit(name));
        PickNames { names, lengths }
    }

    /// The names, in slot order.
    pub fn names(&self) -> &[HeaderName] {
        &self.names
    }

    /// `name`'s slot, if it is one of them.
    pub fn slot(&self, name: &HeaderName) -> Option<usize> {
        if self.lengths & length_bit(name) == 0 {
            return None;
        }
        self.names.iter().position(|wanted| wanted == name)
    }
}

fn length_bit(name: &HeaderName) -> u64 {
    1 << name.as_str().len().min(63)
}

/// The values kept, in the head's order. One allocation, made at the first value kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PickedHeaders {
    /// Each value as [`PREFIX`] then its bytes.
    encoded: Vec<u8>,
}

impl PickedHeaders {
    /// The values in `all` of the names in `names`, each under its name's index there (the
    /// values of one name in their order).
    pub fn copy(names: &PickNames, all: &HeaderMap) -> PickedHeaders {
        let mut picked = PickedHeaders::default();
        if names.names.is_empty() {
            return picked;
        }
        if all.len() <= SCAN_AT_MOST {
            // A typical head: one pass comparing names is cheaper than hashing each name.
            for (name, value) in all {
                if let Some(slot) = names.slot(name) {
                    picked.push(slot, value.as_bytes());
                }
            }
        } else {
            for (slot, name) in names.names.iter().enumerate() {
                for value in all.get_all(name) {
                    picked.push(slot, value.as_bytes());
                }
            }
        }
        picked
    }

    /// Keeps `value` under `slot`. A slot past `u16` (no format reads that many names) or a
    /// value past 4 GiB (no head holds one) is not kept.
    pub fn push(&mut self, slot: usize, value: &[u8]) {
        let (Ok(slot), Ok(len)) = (u16::try_from(slot), u32::try_from(value.len())) else {
            return;
        };
        let needed = PREFIX + value.len();
        if self.encoded.capacity() == 0 {
            self.encoded.reserve(needed.max(FIRST_ROOM));
        }
        let [s0, s1] = slot.to_le_bytes();
        let [l0, l1, l2, l3] = len.to_le_bytes();
        self.encoded.extend_from_slice(&[s0, s1, l0, l1, l2, l3]);
        self.encoded.extend_from_slice(value);
    }

    /// Each value kept, with its slot, in order.
    fn iter(&self) -> impl Iterator<Item = (usize, &[u8])> {
        let mut rest = self.encoded.as_slice();
        std::iter::from_fn(move || {
            let (prefix, tail) = rest.split_first_chunk::<PREFIX>()?;
            let slot = u16::from_le_bytes([prefix[0], prefix[1]]);
            let len = u32::from_le_bytes([prefix[2], prefix[3], prefix[4], prefix[5]]);
            let (value, after) = tail.split_at_checked(usize::try_from(len).ok()?)?;
            rest = after;
            Some((usize::from(slot), value))
        })
    }

    /// The values kept under `slot`, in order.
    pub fn values(&self, slot: usize) -> impl Iterator<Item = &[u8]> {
        self.iter()
            .filter(move |(kept, _)| *kept == slot)
            .map(|(_, value)| value)
    }

    /// Drops the values kept under `slot`.
    pub fn remove(&mut self, slot: usize) {
        let mut kept = PickedHeaders::default();
        for (other, value) in self.iter().filter(|(other, _)| *other != slot) {
            kept.push(other, value);
        }
        *self = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_values_are_kept_in_order_whatever_the_heads_size() {
        let names = PickNames::new(
            ["x-request-id", "user-agent", "x-forwarded-for"]
                .iter()
                .map(|n| HeaderName::from_static(n))
                .collect(),
        );
        for filler in [0, SCAN_AT_MOST] {
            let mut all = HeaderMap::new();
            all.append("x-forwarded-for", "10.0.0.1".parse().expect("value"));
            all.append("accept", "*/*".parse().expect("value"));
            all.append("user-agent", "curl/8".parse().expect("value"));
            all.append("x-forwarded-for", "10.0.0.2".parse().expect("value"));
            for i in 0..filler {
                all.append(
                    HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).expect("name"),
                    "f".parse().expect("value"),
                );
            }
            let picked = PickedHeaders::copy(&names, &all);
            let values = |slot| picked.values(slot).collect::<Vec<_>>();
            assert_eq!(picked.iter().count(), 3, "{filler} fillers: {picked:?}");
            assert_eq!(values(2), [&b"10.0.0.1"[..], b"10.0.0.2"]);
            assert_eq!(values(1), [b"curl/8"]);
            assert!(values(0).is_empty() && values(3).is_empty());
        }
    }

    #[test]
    fn a_slot_is_removed_and_replaced_leaving_the_others() {
        let mut picked = PickedHeaders::default();
        picked.push(0, b"a");
        picked.push(1, b"");
        picked.push(0, &[b'x'; 300]);
        picked.push(2, b"c");
        picked.remove(0);
        picked.push(0, b"new");
        let all: Vec<_> = picked.iter().collect();
        assert_eq!(all, [(1, &b""[..]), (2, b"c"), (0, b"new")]);
        // Slots that do not fit are not kept (and nothing else is lost).
        picked.push(usize::from(u16::MAX) + 1, b"lost");
        assert_eq!(picked.iter().count(), 3);
    }
}
