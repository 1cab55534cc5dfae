//! weir: a WebAssembly-extensible programmable proxy.
//!
//! The host owns everything that touches a socket; see `DESIGN.md` for the module map.

pub mod body;
pub mod config;
pub mod route;
pub mod stats;
pub mod upstream;
