//! The wire: what an HTTP stream and a tunnel are on each version, below both the connection
//! manager (`http/`) and the upstream pools (`upstream/`), which import it and nothing of
//! each other's codec code.
//!
//! - [`protocol`]: the one [`Protocol`]/[`TunnelKind`] type for HTTP/1.1 `Upgrade`, HTTP/2
//!   and HTTP/3 `:protocol` (extended CONNECT, RFC 8441/9220) and plain CONNECT, with its
//!   conversions to and from each codec's representation;
//! - [`connection`]: the downstream connection a stream came on ([`ConnectionInfo`]);
//! - [`head`]: what weir asks of the version a head came on ([`WireHead`]), so that only the
//!   wire matches on versions;
//! - [`h2_body`], [`h3_body`], [`h3_connect`]: bodies and CONNECT streams on the `h2` and `h3`
//!   codecs, for downstream and upstream alike;
//! - [`handoff`]: the one way a tunnel's downstream end leaves its codec
//!   ([`handoff::TunnelHandoff`]), filled by every codec;
//! - [`prefixed`]: a connection as the HTTP/1.1 codec reads it (sniffed bytes first), its
//!   first request line screened for its version ([`request_line`]);
//! - [`tunnel`]: one end of an established tunnel ([`TunnelIo`]) and the one conversion of an
//!   upstream's answer into a tunnel ([`tunnel::from_response`]); [`body_io`] (a tunnel
//!   carried as two HTTP bodies) and [`reset`] (carrying a reset across a hop) under it.
//!
//! Nothing here imports `http/`, `upstream/` or `tunnel/`.

pub mod body_io;
pub mod connection;
pub mod h2_body;
pub mod h3_body;
pub mod h3_connect;
pub mod handoff;
pub mod head;
pub mod prefixed;
pub mod protocol;
pub mod request_framing;
pub mod request_line;
pub mod reset;
pub mod tunnel;

pub use connection::ConnectionInfo;
pub use head::{ProtocolFamily, WireHead};
pub use protocol::{MalformedTunnel, Protocol, TunnelKind, tunnel_kind};
pub use tunnel::TunnelIo;
