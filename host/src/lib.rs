//! weir: a WebAssembly-extensible programmable proxy.
//!
//! The host owns everything that touches a socket. `ARCHITECTURE.md` in the repository root
//! draws the layers of this crate (each module imports only those below it) and walks one
//! request and one tunnel through them.

pub mod accel;
pub mod access_log;
pub mod admin;
pub mod body;
pub mod config;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod listener;
pub mod new_filter;
pub mod overload;
pub mod reload;
pub mod route;
pub mod server_state;
pub mod services;
pub mod settings;
pub mod snapshot;
pub mod socket;
pub mod stats;
pub mod tunnel;
pub mod upstream;
pub mod wasm;
pub mod wire;
pub mod worker;
pub mod xds;
