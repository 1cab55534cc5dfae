//! Shared harness for the end-to-end tests.
//!
//! Every test starts its own `weir` process (see [`weir::Weir`]) on ephemeral ports of
//! 127.0.0.1, with in-process upstreams ([`h1_upstream`], [`h2_upstream`]) and real clients
//! (hyper in-process, `curl` and `nghttp` as child processes, see [`client`]). Configs are
//! built as JSON values ([`config`]); JSON is YAML, so the file weir reads is a valid YAML
//! bootstrap with Envoy's field names.

pub mod client;
pub mod config;
pub mod h1_upstream;
pub mod h2_upstream;
pub mod h3;
pub mod stats;
pub mod tls;
pub mod weir;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

pub use client::{Resp, get, get_host, h1_request, h2c_request, raw_exchange};
pub use h1_upstream::H1Upstream;
pub use h2_upstream::H2Upstream;
pub use weir::Weir;

/// Upper bound for one client exchange in the helpers.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    dir.canonicalize().unwrap_or(dir)
}

/// The weir binary under test: `$WEIR_BIN`, else `<workspace root>/target/debug/weir`.
///
/// Panics with instructions when it is missing.
pub fn weir_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WEIR_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "WEIR_BIN={} is not a file; unset it or point it at a built weir binary",
            bin.display()
        );
        return bin;
    }
    let bin = workspace_root().join("target/debug/weir");
    assert!(
        bin.is_file(),
        "the weir binary is missing at {}: run `cargo build -p weir` first (or set WEIR_BIN)",
        bin.display()
    );
    bin
}

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free TCP port on 127.0.0.1 for weir to bind. The kernel picks it; within one test
/// binary the same port is never handed out twice.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no fresh ephemeral port after 100 tries");
}

/// Polls `check` every 25 ms until it returns true or `limit` passes; returns its last answer.
pub async fn wait_until<F: FnMut() -> bool>(limit: Duration, mut check: F) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return check();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic test payload of `len` bytes (not all-zero, so reordering or truncation shows).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}
