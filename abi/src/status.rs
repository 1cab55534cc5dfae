//! `Status` — the `WasmResult` every host function returns.

use core::fmt;

use crate::UnknownValue;

/// The result code every proxy-wasm host function returns (proxy-wasm's `WasmResult`).
///
/// The gaps in the numbering (5, 6, 9, 11) are codes the spec reserves and hosts do not return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Status {
    /// The call did what it should.
    Ok = 0,
    /// The thing asked for does not exist (a header, a property, shared data, a queue).
    NotFound = 1,
    /// An argument is out of range or names nothing (e.g. a bad enum value or pointer).
    BadArgument = 2,
    /// The host could not serialize a value.
    SerializationFailure = 3,
    /// The host could not parse what the module passed (e.g. a malformed header map).
    ParseFailure = 4,
    /// Nothing there (e.g. an empty shared queue).
    Empty = 7,
    /// `proxy_set_shared_data` was given a CAS value that is no longer current.
    CasMismatch = 8,
    /// The host failed in a way the module cannot fix.
    InternalFailure = 10,
    /// The host does not implement this call.
    Unimplemented = 12,
}

impl Status {
    /// Every status, in code order.
    pub const ALL: &'static [Status] = &[
        Status::Ok,
        Status::NotFound,
        Status::BadArgument,
        Status::SerializationFailure,
        Status::ParseFailure,
        Status::Empty,
        Status::CasMismatch,
        Status::InternalFailure,
        Status::Unimplemented,
    ];

    /// The code as a Wasm function returns it.
    pub const fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code as an unsigned number.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The spec's name for the code (`"CasMismatch"`, ...), for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Ok => "Ok",
            Status::NotFound => "NotFound",
            Status::BadArgument => "BadArgument",
            Status::SerializationFailure => "SerializationFailure",
            Status::ParseFailure => "ParseFailure",
            Status::Empty => "Empty",
            Status::CasMismatch => "CasMismatch",
            Status::InternalFailure => "InternalFailure",
            Status::Unimplemented => "Unimplemented",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_i32())
    }
}

impl TryFrom<i32> for Status {
    type Error = UnknownValue;

    fn try_from(value: i32) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Status::Ok),
            1 => Ok(Status::NotFound),
            2 => Ok(Status::BadArgument),
            3 => Ok(Status::SerializationFailure),
            4 => Ok(Status::ParseFailure),
            7 => Ok(Status::Empty),
            8 => Ok(Status::CasMismatch),
            10 => Ok(Status::InternalFailure),
            12 => Ok(Status::Unimplemented),
            other => Err(UnknownValue {
                kind: "Status",
                value: i64::from(other),
            }),
        }
    }
}

impl TryFrom<u32> for Status {
    type Error = UnknownValue;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        i32::try_from(value)
            .map_err(|_| UnknownValue {
                kind: "Status",
                value: i64::from(value),
            })
            .and_then(Status::try_from)
    }
}

impl From<Status> for i32 {
    fn from(value: Status) -> i32 {
        value.as_i32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_spec() {
        let expected = [0, 1, 2, 3, 4, 7, 8, 10, 12];
        for (status, code) in Status::ALL.iter().zip(expected) {
            assert_eq!(status.as_i32(), code);
            assert_eq!(Status::try_from(code), Ok(*status));
            assert_eq!(Status::try_from(code as u32), Ok(*status));
        }
    }

    #[test]
    fn reserved_and_out_of_range_codes_are_errors() {
        for code in [5, 6, 9, 11, 13, -1, i32::MAX, i32::MIN] {
            assert!(Status::try_from(code).is_err(), "{code}");
        }
        assert!(Status::try_from(u32::MAX).is_err());
    }
}
