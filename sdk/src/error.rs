//! The error every host-call wrapper returns.

use weir_abi::{HeaderMapError, Status};

/// Why a host call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The host answered with a status other than `Ok` (and other than the ones a wrapper
    /// turns into a value, like `NotFound` into `None`).
    #[error("{call} failed: {status}")]
    Status {
        /// The host function, e.g. `"proxy_set_shared_data"`.
        call: &'static str,
        /// What it returned.
        status: Status,
    },
    /// The host answered with a number that is no proxy-wasm status.
    #[error("{call} returned unknown status {code}")]
    UnknownStatus {
        /// The host function.
        call: &'static str,
        /// What it returned.
        code: i32,
    },
    /// The host handed back a header map that is not in the wire format.
    #[error("{call} returned a malformed header map: {source}")]
    MalformedHeaderMap {
        /// The host function.
        call: &'static str,
        /// What is wrong with it.
        source: HeaderMapError,
    },
    /// Headers the filter passed cannot be put in the wire format (a length over 4 GiB).
    #[error("headers for {call} cannot be encoded: {source}")]
    UnencodableHeaders {
        /// The host function.
        call: &'static str,
        /// Why.
        source: HeaderMapError,
    },
}

impl Error {
    /// The status the host returned, where it returned a known one.
    pub fn status(&self) -> Option<Status> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when `proxy_set_shared_data` lost a compare-and-swap race: read again and retry.
    pub fn is_cas_mismatch(&self) -> bool {
        self.status() == Some(Status::CasMismatch)
    }
}

/// The result of a host call.
pub type Result<T> = core::result::Result<T, Error>;

/// Turns a raw status code into `Ok(status)` for the codes a caller handles itself, or an
/// error naming the call.
pub(crate) fn check(call: &'static str, code: i32) -> Result<Status> {
    match Status::try_from(code) {
        Ok(status) => Ok(status),
        Err(_) => Err(Error::UnknownStatus { call, code }),
    }
}

/// `Ok(())` for `Status::Ok`, an error for anything else.
pub(crate) fn expect_ok(call: &'static str, code: i32) -> Result<()> {
    match check(call, code)? {
        Status::Ok => Ok(()),
        status => Err(Error::Status { call, status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_become_results() {
        assert_eq!(expect_ok("proxy_log", 0), Ok(()));
        assert_eq!(
            expect_ok("proxy_log", 12),
            Err(Error::Status {
                call: "proxy_log",
                status: Status::Unimplemented
            })
        );
        assert_eq!(
            expect_ok("proxy_log", 99),
            Err(Error::UnknownStatus {
                call: "proxy_log",
                code: 99
            })
        );
        assert!(
            Error::Status {
                call: "proxy_set_shared_data",
                status: Status::CasMismatch
            }
            .is_cas_mismatch()
        );
    }
}
