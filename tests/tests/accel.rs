//! The kernel splice (eBPF sockhash) end to end: raw tcp_proxy tunnels through a real weir.
//!
//! These need root (CAP_BPF + CAP_NET_ADMIN) and bpftool; they fail, not skip, without them,
//! since CI runs as root.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_tests::config::{self, address};
use weir_tests::{Weir, free_port};

const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const BULK: u64 = 1 << 30;
const TUNNELS: u64 = 10_000;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the kernel splice tests need root (CAP_BPF + CAP_NET_ADMIN); CI runs as root"
    );
}

/// A bootstrap with one raw tcp_proxy listener to `upstream`; returns it and the listener.
fn tcp_proxy_config(upstream: SocketAddr) -> (Value, SocketAddr) {
    let port = free_port();
    let listener = json!({
        "name": "tcp",
        "address": address(port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": TCP_PROXY, "stat_prefix": "tcp", "cluster": "backend"},
        }]}],
    });
    let cluster = config::static_cluster("backend", &[upstream]);
    let config = config::bootstrap(free_port(), vec![listener], vec![cluster]);
    (config, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// An upstream that reads each connection to EOF, then answers "<bytes> <sha256>" and closes
/// (so the answer travels after the client's half-close).
async fn hashing_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hash = Sha256::new();
                let mut total = 0u64;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            hash.update(&buf[..n]);
                            total += n as u64;
                        }
                        Err(_) => return,
                    }
                }
                let answer = format!("{total} {}", hex(&hash.finalize()));
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An upstream that reads an 8-byte length and that many bytes, answers their SHA-256 (32
/// bytes), then waits for the client's FIN and closes: a request/response tunnel whose FINs
/// come after the payload, so every tunnel is spliced in the kernel.
async fn request_response_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut len = [0u8; 8];
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut body = vec![0u8; u64::from_be_bytes(len) as usize];
                if stream.read_exact(&mut body).await.is_err() {
                    return;
                }
                let _ = stream.write_all(&Sha256::digest(&body)).await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    });
    addr
}

/// One request/response tunnel of `len` bytes through `proxy`; panics on a wrong answer.
async fn request_response(proxy: SocketAddr, len: usize) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to weir");
    let body = &chunk()[..len];
    let mut request = (len as u64).to_be_bytes().to_vec();
    request.extend_from_slice(body);
    stream.write_all(&request).await.expect("write");
    let mut answer = [0u8; 32];
    stream
        .read_exact(&mut answer)
        .await
        .expect("read the answer");
    assert_eq!(answer.as_slice(), Sha256::digest(body).as_slice());
    stream.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .await
        .expect("the upstream's FIN");
    assert!(rest.is_empty());
}

/// Sends `len` bytes of a pattern, half-closes, and returns (our "<len> <sha>", the answer).
async fn transfer(proxy: SocketAddr, len: u64) -> (String, String) {
    let stream = TcpStream::connect(proxy).await.expect("connect to weir");
    send_and_hash(stream, len, &[]).await
}

/// One MiB of the test pattern, made once.
fn chunk() -> &'static [u8] {
    static CHUNK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CHUNK.get_or_init(|| (0..1u32 << 20).map(|i| (i % 251) as u8).collect())
}

/// Sends `len` pattern bytes (the first `already` of them were sent by the caller),
/// half-closes and reads the upstream's answer.
async fn send_and_hash(mut stream: TcpStream, len: u64, already: &[u8]) -> (String, String) {
    let chunk = chunk();
    let mut hash = Sha256::new();
    hash.update(already);
    let mut sent = already.len() as u64;
    while sent < len {
        let offset = (sent % chunk.len() as u64) as usize;
        let n = (chunk.len() - offset).min((len - sent) as usize);
        stream
            .write_all(&chunk[offset..offset + n])
            .await
            .expect("write");
        hash.update(&chunk[offset..offset + n]);
        sent += n as u64;
    }
    stream.shutdown().await.expect("half-close");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("read the answer");
    (format!("{len} {}", hex(&hash.finalize())), answer)
}

/// Closes `stream` with a RST (SO_LINGER 0).
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid struct of the size given, for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
    drop(stream);
}

/// The number of open fds of `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Entries in every BPF map weir holds (found through its fds' `map_id`), read with bpftool;
/// ring buffers aside.
fn weir_map_entries(pid: u32) -> usize {
    let mut total = 0;
    let dir = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("read fdinfo");
    for entry in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Some(id) = info
            .lines()
            .find_map(|line| line.strip_prefix("map_id:"))
            .map(str::trim)
        else {
            continue;
        };
        // A ring buffer (BPF_MAP_TYPE_RINGBUF, 27: the splice's wake-ups) has no entries to
        // dump; bpftool refuses it.
        if info
            .lines()
            .any(|line| line.strip_prefix("map_type:").map(str::trim) == Some("27"))
        {
            continue;
        }
        let bpftool = ["/usr/sbin/bpftool", "/sbin/bpftool"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .unwrap_or("bpftool");
        let out = std::process::Command::new(bpftool)
            .args(["-j", "map", "dump", "id", id])
            .output()
            .expect("bpftool (Debian package bpftool) must be installed");
        assert!(out.status.success(), "bpftool map dump id {id}: {out:?}");
        let dump: Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
        total += dump.as_array().map_or(0, Vec::len);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_transfer_is_spliced_in_the_kernel() {
    require_root();
    let upstream = hashing_upstream().await;
    let (config, proxy) = tcp_proxy_config(upstream);
    let weir = Weir::start_with(&config, &["--concurrency", "1", "--accel", "kernel"]).await;
    let started = std::time::Instant::now();
    let (sent, answer) = transfer(proxy, BULK).await;
    let elapsed = started.elapsed();
    assert_eq!(
        answer,
        sent,
        "same length and SHA-256 at the upstream\n{}",
        weir.log_report()
    );
    println!(
        "{} MiB through the kernel splice in {elapsed:?} ({:.1} Gbit/s)",
        BULK >> 20,
        BULK as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
    );
    let kernel = weir
        .stat("weir_accel_splices_total", &[("mode", "kernel")])
        .await;
    let userspace_bytes = weir.stat("weir_accel_userspace_bytes_total", &[]).await;
    assert!(
        kernel >= 1.0,
        "a kernel splice counted\n{}",
        weir.log_report()
    );
    assert_eq!(
        userspace_bytes, 0.0,
        "no payload byte went through user space"
    );
    assert!(
        weir.log().contains("kernel splice on"),
        "{}",
        weir.log_report()
    );
}

/// An upstream that sends `len` pattern bytes at once, then reads to the client's FIN and
/// answers with the number of bytes it read after it (the client sends none) before closing.
async fn downloading_upstream(len: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sent = 0;
                while sent < len {
                    let n = chunk().len().min(len - sent);
                    if stream.write_all(&chunk()[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
                let mut rest = Vec::new();
                if stream.read_to_end(&mut rest).await.is_err() {
                    return;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// The client half-closes while the upstream is still sending and the client is not
/// reading, so the bytes toward the client wait in the kernel: every byte must still arrive,
/// then the upstream's FIN, never a reset.
///
/// It exercises what was behind the short tunnels' teardown race: a pure FIN passed up to
/// user space while bytes redirected to the same socket wait in the kernel's psock backlog
/// is queued behind them, and the backlog's worker takes a zero-length skb for a broken pipe
/// (EPIPE on the socket, later redirects to it dropped). The program now drops such skbs.
/// (The old program passed this test too, since weir reads that side's EOF before the
/// worker reaches the FIN and never reads it again; the race needs weir to read after.)
async fn half_close_while_downloading(accel: &str) {
    let len = 64 << 20;
    let upstream = downloading_upstream(len).await;
    let (config, proxy) = tcp_proxy_config(upstream);
    let weir = Weir::start_with(&config, &["--concurrency", "1", "--accel", accel]).await;
    for round in 0..3 {
        let mut stream = TcpStream::connect(proxy).await.expect("connect to weir");
        // Let the download fill every buffer on the way while the client does not read.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.shutdown().await.expect("half-close");
        let mut received = Vec::with_capacity(len);
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut received))
            .await
            .expect("the download ends within a minute");
        let intact = received.len() == len
            && received
                .chunks(chunk().len())
                .all(|part| part == &chunk()[..part.len()]);
        assert!(
            read.is_ok() && intact,
            "round {round}: the whole download, then a FIN: {read:?}, {} of {len} bytes\n{}",
            received.len(),
            weir.log_report()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_while_the_other_way_is_busy_is_carried() {
    require_root();
    half_close_while_downloading("kernel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_while_the_other_way_is_busy_is_carried_in_user_space() {
    half_close_while_downloading("userspace").await;
}

/// Without `--accel`, a plain TCP tunnel is moved with splice(2), never the eBPF splice,
/// even where the program would load (root): the kernel path's queue is unbounded, so it is
/// opt-in. The one log line says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice2_is_the_default_and_the_kernel_splice_opt_in() {
    require_root();
    let upstream = hashing_upstream().await;
    let (config, proxy) = tcp_proxy_config(upstream);
    let weir = Weir::start_with(&config, &["--concurrency", "1"]).await;
    let (sent, answer) = transfer(proxy, 4 << 20).await;
    assert_eq!(answer, sent, "same length and SHA-256 at the upstream");
    let kernel = weir
        .stat("weir_accel_splices_total", &[("mode", "kernel")])
        .await;
    let userspace = weir
        .stat("weir_accel_splices_total", &[("mode", "userspace")])
        .await;
    assert_eq!((kernel, userspace), (0.0, 1.0), "{}", weir.log_report());
    let log = weir.log();
    assert_eq!(
        log.lines().filter(|l| l.contains("accel:")).count(),
        1,
        "{}",
        weir.log_report()
    );
    assert!(
        log.contains("splice(2) through a pipe"),
        "{}",
        weir.log_report()
    );
    assert!(!log.contains("kernel splice on"), "{}", weir.log_report());
}

/// `--accel kernel` loads the eBPF splice (root) and the tunnel goes through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accel_kernel_splices_in_the_kernel() {
    require_root();
    let upstream = hashing_upstream().await;
    let (config, proxy) = tcp_proxy_config(upstream);
    let weir = Weir::start_with(&config, &["--concurrency", "1", "--accel", "kernel"]).await;
    let (sent, answer) = transfer(proxy, 4 << 20).await;
    assert_eq!(answer, sent, "same length and SHA-256 at the upstream");
    let kernel = weir
        .stat("weir_accel_splices_total", &[("mode", "kernel")])
        .await;
    assert_eq!(kernel, 1.0, "{}", weir.log_report());
    assert!(
        weir.log().contains("kernel splice on"),
        "{}",
        weir.log_report()
    );
}

/// `--accel copy` moves a plain TCP tunnel with read/write: same bytes, counted in user space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accel_copy_copies() {
    let upstream = hashing_upstream().await;
    let (config, proxy) = tcp_proxy_config(upstream);
    let weir = Weir::start_with(&config, &["--concurrency", "1", "--accel", "copy"]).await;
    let (sent, answer) = transfer(proxy, 4 << 20).await;
    assert_eq!(answer, sent, "same length and SHA-256 at the upstream");
    let userspace = weir
        .stat("weir_accel_splices_total", &[("mode", "userspace")])
        .await;
    assert_eq!(userspace, 1.0, "{}", weir.log_report());
    assert!(
        weir.log().contains("read/write copies"),
        "{}",
        weir.log_report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_is_carried_to_the_upstream() {
    require_root();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("local_addr");
    let (config, proxy) = tcp_proxy_config(upstream);
    let weir = Weir::start_with(&config, &["--concurrency", "1", "--accel", "kernel"]).await;
    let mut client = TcpStream::connect(proxy).await.expect("connect");
    let (mut server, _) = listener.accept().await.expect("accept");
    client.write_all(b"hello").await.expect("write");
    let mut hello = [0u8; 5];
    server.read_exact(&mut hello).await.expect("read hello");
    reset(client);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), server.read_to_end(&mut rest))
        .await
        .expect("the upstream learns of the reset");
    assert!(
        read.is_err(),
        "a RST, not a FIN: {read:?}\n{}",
        weir.log_report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_short_tunnels_leave_no_map_entry_and_no_fd() {
    require_root();
    let upstream = request_response_upstream().await;
    let (config, proxy) = tcp_proxy_config(upstream);
    let weir = Weir::start_with(&config, &["--concurrency", "1", "--accel", "kernel"]).await;
    let pid = weir.pid();
    // One tunnel first, so lazily made things (the program, pools) exist before the baseline.
    request_response(proxy, 10).await;
    let fds_before = fd_count(pid);
    let started = std::time::Instant::now();
    for round in 0..TUNNELS {
        request_response(proxy, 1 + (round % 4_000) as usize).await;
    }
    println!("{TUNNELS} tunnels in {:?}", started.elapsed());
    let mut fds_after = fd_count(pid);
    for _ in 0..50 {
        if fds_after <= fds_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = fd_count(pid);
    }
    assert!(
        fds_after <= fds_before,
        "fds: {fds_before} before, {fds_after} after"
    );
    assert_eq!(weir_map_entries(pid), 0, "weir's BPF maps are empty");
    let kernel = weir
        .stat("weir_accel_splices_total", &[("mode", "kernel")])
        .await;
    let userspace = weir
        .stat("weir_accel_splices_total", &[("mode", "userspace")])
        .await;
    let bytes = weir.stat("weir_accel_userspace_bytes_total", &[]).await;
    println!("splices: {kernel} kernel, {userspace} userspace; {bytes} bytes copied in user space");
    assert_eq!(
        kernel,
        (TUNNELS + 1) as f64,
        "every tunnel spliced in the kernel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_fallback_copies_in_user_space_and_says_so() {
    let upstream = hashing_upstream().await;
    let (config, proxy) = tcp_proxy_config(upstream);
    let weir = Weir::start_with(&config, &["--concurrency", "1", "--accel", "userspace"]).await;
    let (sent, answer) = transfer(proxy, 16 << 20).await;
    assert_eq!(answer, sent, "same length and SHA-256 via user space");
    let userspace = weir
        .stat("weir_accel_splices_total", &[("mode", "userspace")])
        .await;
    let kernel = weir
        .stat("weir_accel_splices_total", &[("mode", "kernel")])
        .await;
    let bytes = weir.stat("weir_accel_userspace_bytes_total", &[]).await;
    assert_eq!((userspace, kernel), (1.0, 0.0));
    assert!(
        bytes >= (16 << 20) as f64,
        "the payload was copied: {bytes}"
    );
    let log = weir.log();
    let lines = log.lines().filter(|l| l.contains("accel:")).count();
    assert_eq!(lines, 1, "one log line says why:\n{}", weir.log_report());
    assert!(
        log.contains("splice(2) through a pipe"),
        "{}",
        weir.log_report()
    );
}

/// A listener with `codec_type: codec` that terminates CONNECT to `upstream`.
fn terminate_config(upstream: SocketAddr, codec: &str) -> (Value, SocketAddr) {
    let port = free_port();
    let route = json!({
        "match": {"connect_matcher": {}},
        "route": {
            "cluster": "backend",
            "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}],
        },
    });
    let mut hcm = config::hcm(
        "ingress_http",
        vec![config::vhost("all", &["*"], vec![route])],
    );
    hcm["codec_type"] = json!(codec);
    let listener = config::listener("connect", port, hcm);
    let cluster = config::static_cluster("backend", &[upstream]);
    let config = config::bootstrap(free_port(), vec![listener], vec![cluster]);
    (config, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connect_is_spliced_with_the_early_bytes_first() {
    connect_is_spliced_with_the_early_bytes_first("HTTP1").await;
}

/// An AUTO listener (Envoy's default) wraps the socket to replay the bytes it sniffed for the
/// HTTP/2 preface; the splice takes the socket back out from under that wrapper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connect_on_an_auto_listener_is_spliced_too() {
    connect_is_spliced_with_the_early_bytes_first("AUTO").await;
}

/// A CONNECT whose head and first payload bytes come in one write, on a `codec` listener:
/// 64 MiB arrive intact, carried by the kernel but for the bytes hyper read past the head.
async fn connect_is_spliced_with_the_early_bytes_first(codec: &str) {
    require_root();
    let upstream = hashing_upstream().await;
    let (config, proxy) = terminate_config(upstream, codec);
    let weir = Weir::start_with(&config, &["--concurrency", "1", "--accel", "kernel"]).await;
    let len: u64 = 64 << 20;
    let mut stream = TcpStream::connect(proxy).await.expect("connect to weir");
    // The head and the first payload bytes in one write: hyper reads some past the head (F).
    let early = &chunk()[..4096];
    let mut first = format!("CONNECT {upstream} HTTP/1.1\r\nhost: {upstream}\r\n\r\n").into_bytes();
    first.extend_from_slice(early);
    stream.write_all(&first).await.expect("write CONNECT");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await.expect("read the 200");
        assert_eq!(
            n,
            1,
            "weir closed before answering: {head:?}\n{}",
            weir.log_report()
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{head}\n{}",
        weir.log_report()
    );
    let (sent, answer) = send_and_hash(stream, len, early).await;
    assert_eq!(
        answer,
        sent,
        "same length and SHA-256 at the upstream\n{}",
        weir.log_report()
    );
    let kernel = weir
        .stat("weir_accel_splices_total", &[("mode", "kernel")])
        .await;
    assert_eq!(kernel, 1.0, "spliced in the kernel\n{}", weir.log_report());
    // Only the early bytes (those hyper read past the head, and what the socket still held
    // when hyper handed it over: payload the client sent at once after the 200 may be in it
    // on a loaded machine) are copied by user space; the 64 MiB go through the kernel.
    let bytes = weir.stat("weir_accel_userspace_bytes_total", &[]).await;
    println!("CONNECT: {bytes} early bytes copied in user space, the rest in the kernel");
    assert!(
        bytes <= (early.len() + (1 << 20)) as f64,
        "no payload through the user-space copy: {bytes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_accel_env_chooses_the_mode() {
    let upstream = hashing_upstream().await;
    let (config, proxy) = tcp_proxy_config(upstream);
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("weir.yaml");
    std::fs::write(&config_path, config.to_string()).expect("write config");
    let mut command = std::process::Command::new(weir_tests::weir_bin());
    command
        .arg("-c")
        .arg(&config_path)
        .args(["--log-level", "debug", "--concurrency", "1"])
        .env("WEIR_ACCEL", "copy");
    let admin = weir_tests::weir::admin_addr(&config);
    let mut weir = Weir::spawn_command(command, dir, config_path, admin);
    weir.wait_ready().await;
    let (sent, answer) = transfer(proxy, 4 << 20).await;
    assert_eq!(answer, sent, "same length and SHA-256 via user space");
    let kernel = weir
        .stat("weir_accel_splices_total", &[("mode", "kernel")])
        .await;
    let userspace = weir
        .stat("weir_accel_splices_total", &[("mode", "userspace")])
        .await;
    assert_eq!((userspace, kernel), (1.0, 0.0));
    let log = weir.log();
    assert_eq!(
        log.lines().filter(|l| l.contains("accel:")).count(),
        1,
        "{}",
        weir.log_report()
    );
    assert!(
        log.contains("WEIR_ACCEL=copy") && log.contains("read/write copies"),
        "{}",
        weir.log_report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_is_carried_to_the_client() {
    require_root();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("local_addr");
    let (config, proxy) = tcp_proxy_config(upstream);
    let weir = Weir::start_with(&config, &["--concurrency", "1", "--accel", "kernel"]).await;
    let mut client = TcpStream::connect(proxy).await.expect("connect");
    let (mut server, _) = listener.accept().await.expect("accept");
    server.write_all(b"hello").await.expect("write");
    let mut hello = [0u8; 5];
    client.read_exact(&mut hello).await.expect("read hello");
    reset(server);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest))
        .await
        .expect("the client learns of the reset");
    assert!(
        read.is_err(),
        "a RST, not a FIN: {read:?}\n{}",
        weir.log_report()
    );
}

/// The user-space path (`splice(2)` through a pipe) carries a reset both ways too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_is_carried_in_user_space() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("local_addr");
    let (config, proxy) = tcp_proxy_config(upstream);
    let weir = Weir::start_with(&config, &["--concurrency", "1", "--accel", "userspace"]).await;
    for client_resets in [true, false] {
        let mut client = TcpStream::connect(proxy).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        client.write_all(b"hello").await.expect("write");
        let mut hello = [0u8; 5];
        server.read_exact(&mut hello).await.expect("read hello");
        server.write_all(b"olleh").await.expect("write back");
        client.read_exact(&mut hello).await.expect("read olleh");
        let (resetting, mut other) = if client_resets {
            (client, server)
        } else {
            (server, client)
        };
        reset(resetting);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), other.read_to_end(&mut rest))
            .await
            .expect("the other side learns of the reset");
        assert!(
            read.is_err(),
            "client resets: {client_resets}: a RST, not a FIN: {read:?}\n{}",
            weir.log_report()
        );
    }
}
