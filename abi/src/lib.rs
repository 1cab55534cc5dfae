//! The proxy-wasm ABI as data.
//!
//! weir's host (which runs filters in wasmtime) and weir's SDK (which filters are written
//! with) both take every number, every export name and the header-map wire format from this
//! crate, so the two sides cannot disagree about the ABI. The reference is the proxy-wasm spec
//! `abi-versions/v0.2.1`, as Envoy implements it.
//!
//! `no_std` and without dependencies; the `alloc` feature adds helpers that return a `Vec`.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod enums;
mod error;
pub mod header_map;
pub mod names;
mod status;

pub use enums::{
    Action, BufferType, ContextType, LogLevel, MapType, MetricType, PeerType, StreamType,
};
pub use error::{HeaderMapError, UnknownValue};
pub use status::Status;
