//! What an idle keep-alive connection costs weir (issue 22, "memory per connection"): many
//! HTTP/1.1 clients, each after one request through weir to an upstream, held open and idle;
//! weir's resident memory may grow only so much per connection. The bench row `idle_conns`
//! (tests/bench) measures the same on a release build; this bounds the debug build the tests
//! drive, whose futures are larger.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_tests::config::{self, Ports};
use weir_tests::{H1Upstream, Weir};

/// Idle connections held.
const CONNECTIONS: usize = 1000;
/// Connections opened at once (as tests/bench/idle_conns.py).
const BATCH: usize = 64;
/// The most weir's RSS may grow per idle connection, debug build. Measured here (AUTO codec,
/// mimalloc): 55 KiB before the idle path was trimmed (a 27 KiB connection future carrying
/// the TLS handshake's size, a 16 KiB hyper read buffer, hyper's service slot), 22.5 KiB
/// after, of which hyper's own read and write buffers are 16 KiB of heap.
const MAX_KIB_PER_CONNECTION: f64 = 40.0;
/// The whole test's limit.
const LIMIT: Duration = Duration::from_secs(120);

/// weir's resident set (`VmRSS`), KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}:\n{status}"))
}

/// One GET on `conn` and its whole answer (by `content-length`); panics unless it is a 200.
async fn exchange(conn: &mut TcpStream) {
    conn.write_all(b"GET / HTTP/1.1\r\nHost: idle\r\nUser-Agent: idle-memory\r\n\r\n")
        .await
        .expect("write request");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        assert!(got.len() < 64 * 1024, "head too long");
        let n = conn.read(&mut chunk).await.expect("read response");
        assert!(
            n > 0,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    while got.len() < head_end + length {
        let n = conn.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "closed in the body");
        got.extend_from_slice(&chunk[..n]);
    }
}

/// `count` connections to `addr`, `BATCH` at a time, each after one exchange.
async fn open_idle(addr: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(count);
    while conns.len() < count {
        let batch = BATCH.min(count - conns.len());
        let opened = futures_util::future::join_all((0..batch).map(|_| async move {
            let mut conn = TcpStream::connect(addr).await.expect("connect");
            exchange(&mut conn).await;
            conn
        }))
        .await;
        conns.extend(opened);
    }
    conns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_holds_little_memory() {
    tokio::time::timeout(LIMIT, async {
        let up = H1Upstream::start("up").await;
        let ports = Ports::new();
        let weir = Weir::start(&config::simple(ports, &[up.addr])).await;
        let addr = ports.http_addr();
        // Warm: the upstream pool filled as the measured batches will fill it, the worker's
        // one-time allocations made; then closed.
        drop(open_idle(addr, BATCH * 2).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib(weir.pid());
        let started = Instant::now();
        let mut conns = open_idle(addr, CONNECTIONS).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib(weir.pid());
        let per_connection = after.saturating_sub(before) as f64 / CONNECTIONS as f64;
        eprintln!(
            "{CONNECTIONS} idle connections in {:?}: RSS {before} -> {after} KiB, \
             {per_connection:.1} KiB each",
            started.elapsed()
        );
        assert!(
            per_connection <= MAX_KIB_PER_CONNECTION,
            "an idle keep-alive connection holds {per_connection:.1} KiB of weir's memory \
             (bound {MAX_KIB_PER_CONNECTION} KiB; RSS {before} -> {after} KiB)"
        );
        // Still served: each idle connection takes a second request.
        for conn in conns.iter_mut().step_by(50) {
            exchange(conn).await;
        }
    })
    .await
    .expect("within the test's limit");
}
