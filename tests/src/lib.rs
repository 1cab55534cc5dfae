//! Shared harness for the end-to-end tests.
//!
//! Every test starts its own `weir` process (see [`weir::Weir`]) on ephemeral ports of
//! 127.0.0.1, with in-process upstreams ([`h1_upstream`], [`h2_upstream`]) and real clients
//! (hyper in-process, `curl` and `nghttp` as child processes, see [`client`]). Configs are
//! built as JSON values ([`config`]); JSON is YAML, so the file weir reads is a valid YAML
//! bootstrap with Envoy's field names.

pub mod client;
pub mod config;
pub mod envoy;
pub mod h1_upstream;
pub mod h2_frames;
pub mod h2_upstream;
pub mod h3;
pub mod raw_h1;
pub mod registry;
pub mod side_by_side;
pub mod stats;
pub mod tcp_server;
pub mod tls;
pub mod tunnel_client;
pub mod upgrade_app;
pub mod wasm;
pub mod weir;
pub mod ws_check;
pub mod ws_echo;
pub mod xds_resources;
pub mod xds_server;

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

/// Where [`free_port`] looks next (an offset into its range); starts at a per-process spot so
/// test binaries run side by side rarely probe the same ports.
static NEXT_PORT: Mutex<Option<u32>> = Mutex::new(None);

/// The kernel's range for ephemeral (auto-bound) ports, from
/// `/proc/sys/net/ipv4/ip_local_port_range`; Linux's default when it cannot be read.
fn ephemeral_port_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// An address whose connections are refused for as long as the returned socket lives: bound
/// but not listening, so the kernel answers every SYN with a reset and no other process can
/// take the port meanwhile (a listener bound and dropped leaves the port free for anyone, and
/// a test expecting "connection refused" then reaches whatever took it).
pub fn refusing_addr() -> (socket2::Socket, std::net::SocketAddr) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_socket())
        .expect("a bound IPv4 address");
    (socket, addr)
}

/// A free port on 127.0.0.1 for weir to bind (TCP, and UDP for a QUIC listener on the same
/// port). Within one test binary the same port is never handed out twice.
///
/// Why not the kernel's pick (`bind :0`): such a port is free only until the next outgoing
/// connection on the machine, which may get it as its source port between this call and the
/// moment weir binds it (seen in CI as "Address already in use" on an admin port). The ports
/// come from below the ephemeral range instead, where no outgoing connection is auto-bound.
pub fn free_port() -> u16 {
    const FLOOR: u32 = 10_000;
    let (ephemeral_low, _) = ephemeral_port_range();
    let ceiling = u32::from(ephemeral_low);
    if ceiling <= FLOOR + 1_000 {
        // An unusual range leaves no room below it: fall back to the kernel's pick.
        return kernel_picked_port();
    }
    let span = ceiling - FLOOR;
    let mut next = NEXT_PORT.lock().unwrap_or_else(|e| e.into_inner());
    let offset = next.get_or_insert_with(|| (std::process::id().wrapping_mul(7_919)) % span);
    for _ in 0..span {
        let port = (FLOOR + *offset) as u16;
        *offset = (*offset + 1) % span;
        if port_is_free(port) {
            return port;
        }
    }
    panic!("no free port in {FLOOR}..{ceiling}");
}

/// True when `port` can be bound on 127.0.0.1 for both TCP and UDP right now.
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

/// The kernel's choice of port (`bind 127.0.0.1:0`), never the same twice in one binary.
fn kernel_picked_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port)
        {
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

/// Deterministic pseudo-random bytes (xorshift64*) from `seed`: the same seed gives the same
/// bytes, different seeds differ.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut stream = RandomStream::new(seed, len);
    while let Some(chunk) = stream.next_chunk(1 << 20) {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Hex SHA-256 of [`random_bytes`]`(seed, len)`, computed without holding them.
pub fn random_sha256(seed: u64, len: usize) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut stream = RandomStream::new(seed, len);
    while let Some(chunk) = stream.next_chunk(1 << 20) {
        hasher.update(&chunk);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// [`random_bytes`] produced chunk by chunk, for payloads too large to hold.
#[derive(Debug, Clone)]
pub struct RandomStream {
    rng: Rng,
    remaining: usize,
}

impl RandomStream {
    /// The `len` bytes of [`random_bytes`]`(seed, len)`.
    pub fn new(seed: u64, len: usize) -> RandomStream {
        RandomStream {
            rng: Rng::new(seed),
            remaining: len,
        }
    }

    /// The next at most `max` bytes (rounded down to a multiple of 8, at least 8); `None`
    /// when all were produced.
    pub fn next_chunk(&mut self, max: usize) -> Option<Vec<u8>> {
        if self.remaining == 0 {
            return None;
        }
        let n = self.remaining.min((max / 8).max(1) * 8);
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        out.truncate(n);
        self.remaining -= n;
        Some(out)
    }
}

/// A small deterministic generator (xorshift64*) for test data and sizes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// The lines of the file at `path` once it has `count` of them, polled every 50 ms; panics
/// past `limit` with what the file held (access logs: Envoy flushes its files on a timer).
pub async fn wait_for_lines(
    path: &std::path::Path,
    count: usize,
    limit: std::time::Duration,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: {} lines in {limit:?}, wanted {count}:\n{text}",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
