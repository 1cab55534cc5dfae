//! The errors this crate returns. `no_std`, so they implement `core::fmt::Display` (and
//! `core::error::Error`) by hand.

use core::fmt;

/// A number read from the ABI that names no variant of the enum it should be.
///
/// Returned by every `TryFrom<i32>` / `TryFrom<u32>` conversion: a module or a host can pass
/// any integer, and an unknown one is an error, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownValue {
    /// The enum the value was meant for, e.g. `"BufferType"`.
    pub kind: &'static str,
    /// The value as it came in.
    pub value: i64,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown proxy-wasm {} value {}", self.kind, self.value)
    }
}

impl core::error::Error for UnknownValue {}

/// Why a serialized header map could not be decoded or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMapError {
    /// The bytes end before what the count and the size table announce.
    Truncated {
        /// Bytes the map needs up to the point where it broke off.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The pair count cannot fit in the bytes given (each pair needs at least 10 bytes).
    CountTooLarge {
        /// The count the map announces.
        count: u32,
    },
    /// A key or value is not followed by the NUL byte the format requires.
    MissingNul {
        /// Offset where the NUL was expected.
        offset: usize,
    },
    /// Bytes are left over after the last pair.
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A key, a value, the pair count or the whole map does not fit the format's u32 fields
    /// (or the platform's `usize`).
    TooLarge,
    /// The caller's output buffer is smaller than the encoded map.
    BufferTooSmall {
        /// Bytes the encoded map needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for HeaderMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, available } => write!(
                f,
                "header map truncated: needs {needed} bytes, has {available}"
            ),
            Self::CountTooLarge { count } => {
                write!(
                    f,
                    "header map announces {count} pairs, more than its bytes can hold"
                )
            }
            Self::MissingNul { offset } => {
                write!(f, "header map: missing NUL terminator at offset {offset}")
            }
            Self::TrailingBytes { extra } => {
                write!(f, "header map: {extra} bytes after the last pair")
            }
            Self::TooLarge => f.write_str("header map: a length does not fit in 32 bits"),
            Self::BufferTooSmall { needed, available } => write!(
                f,
                "header map needs {needed} bytes, the output buffer has {available}"
            ),
        }
    }
}

impl core::error::Error for HeaderMapError {}
