//! Local acceleration (`--local-accel-cgroup`) end to end: weir and an app (the `local_app`
//! binary) in a cgroup v2 directory each test makes for itself, a client outside it.
//!
//! These need root (attaching `sock_ops` to a cgroup, CAP_BPF + CAP_NET_ADMIN), a cgroup v2
//! mount and bpftool; they fail, not skip, without them, since CI runs as root. Each test's
//! cgroup is removed at the end, also when the test fails (its guard kills the processes in
//! it first). The tests run in parallel in one binary: every weir has its own programs, maps
//! and cgroup, which is part of what they check.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_tests::client::{Resp, h1_request, h1_request_on};
use weir_tests::config::{self, Ports};
use weir_tests::{Weir, free_port};

const BIG: usize = 16 << 20;
const SMALL_REQUESTS: usize = 200;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "local acceleration tests need root (sock_ops on a cgroup); CI runs as root"
    );
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host).
fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE ..."
            let (before, after) = line.split_once(" - ")?;
            (after.split_whitespace().next()? == "cgroup2")
                .then(|| before.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .expect("a cgroup2 filesystem is mounted (local acceleration needs cgroup v2)")
}

/// A cgroup made for one test; on drop, whatever is still in it is killed and it is removed.
struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    fn new(tag: &str) -> TestCgroup {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = cgroup2_mount().join(format!(
            "weir-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        TestCgroup { path }
    }

    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Bounded: the processes are ours (weir, the app) and die on SIGKILL.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for pid in self.pids() {
                // SAFETY: kill(2) on a process of this test's own cgroup.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    eprintln!("cannot remove cgroup {}: {e}", self.path.display());
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// A test application (`local_app`) as a process started inside a cgroup.
struct App {
    child: Child,
    addr: SocketAddr,
}

impl App {
    /// The HTTP/1.1 test upstream, answering with `x-upstream: NAME`.
    fn start_in(cgroup: &Path, name: &str) -> App {
        Self::spawn_in(cgroup, &["http", name])
    }

    /// `local_app ARGS` inside `cgroup`; waits for its `listening ADDR` line.
    fn spawn_in(cgroup: &Path, args: &[&str]) -> App {
        let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())
            .expect("cgroup path has no NUL");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_local_app"));
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: between fork and exec the closure only calls open/write/close, which are
        // async-signal-safe, on a path prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let error = std::io::Error::last_os_error();
                libc::close(fd);
                if written == 1 { Ok(()) } else { Err(error) }
            });
        }
        let mut child = cmd.spawn().expect("spawn local_app in the cgroup");
        let stdout = child.stdout.take().expect("local_app stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read local_app's first line");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("local_app said {line:?}"));
        App { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts weir with local acceleration in `cgroup` (and `extra` arguments).
async fn weir_in(cgroup: &TestCgroup, config: &Value, extra: &[&str]) -> Weir {
    let path = cgroup.path.to_str().expect("utf-8 cgroup path");
    let mut args = vec!["--concurrency", "1", "--local-accel-cgroup", path];
    args.extend_from_slice(extra);
    let weir = Weir::start_with(config, &args).await;
    assert!(
        weir.log().contains("local acceleration on"),
        "weir says local acceleration is on\n{}",
        weir.log_report()
    );
    assert!(
        cgroup.pids().contains(&weir.pid()),
        "weir moved itself into {}\n{}",
        cgroup.path.display(),
        weir.log_report()
    );
    weir
}

/// weir's local acceleration counters: (sockets added, in the map now, bytes redirected).
async fn local_counts(weir: &Weir) -> (u64, u64, u64) {
    let stats = weir.stats().await;
    let get = |name| {
        stats
            .get(name, &[])
            .unwrap_or_else(|| panic!("{name} is exported\n{}", stats.text)) as u64
    };
    (
        get("weir_accel_local_sockets_total"),
        get("weir_accel_local_sockets_active"),
        get("weir_accel_local_redirected_bytes_total"),
    )
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn post(path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "localhost")
        .body(Full::new(body))
        .expect("request")
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// 16 MiB up (echoed back) and 16 MiB down through `addr`; both must arrive intact.
async fn big_transfers(addr: SocketAddr, seed: u64) {
    let body = Bytes::from(weir_tests::random_bytes(seed, BIG));
    let resp = must(
        h1_request(addr, post("/echo", body.clone())).await,
        "POST /echo",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), BIG, "echoed length");
    assert_eq!(sha256(&resp.body), sha256(&body), "echoed SHA-256");
    let resp = must(
        h1_request(addr, get(&format!("/large/{BIG}"))).await,
        "GET /large",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(
        sha256(&resp.body),
        sha256(&weir_tests::pattern(BIG)),
        "download SHA-256"
    );
}

fn must(result: Result<Resp, String>, what: &str) -> Resp {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `count` small requests: half on one keep-alive connection, half each on a new one.
async fn small_requests(addr: SocketAddr, app_name: &str, count: usize) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h1 handshake");
    let conn = tokio::spawn(conn);
    for i in 0..count / 2 {
        let body = Bytes::from(format!("small request {i}"));
        sender.ready().await.expect("keep-alive connection ready");
        let resp = tokio::time::timeout(
            weir_tests::IO_TIMEOUT,
            sender.send_request(post("/echo", body.clone())),
        )
        .await
        .expect("in time")
        .expect("keep-alive request");
        assert_eq!(resp.status(), 200);
        let got = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(got, body, "keep-alive request {i}");
    }
    drop(sender);
    let _ = conn.await;
    for i in 0..count / 2 {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let resp = must(h1_request_on(tcp, get("/small")).await, "GET /small");
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(resp.header("x-upstream"), app_name, "request {i}");
    }
}

/// Keys of weir's `local_socks` sockhash, as (local port, remote port), read with bpftool.
fn local_socks_ports(pid: u32) -> Vec<(u16, u16)> {
    let dump = dump_map(pid, "local_socks");
    dump.as_array()
        .expect("bpftool dump is an array")
        .iter()
        .map(|entry| {
            let key: Vec<u8> = entry["key"]
                .as_array()
                .expect("key bytes")
                .iter()
                .map(|b| {
                    let b = b.as_str().expect("hex byte");
                    u8::from_str_radix(b.trim_start_matches("0x"), 16).expect("hex byte")
                })
                .collect();
            assert_eq!(key.len(), 44, "struct local_key");
            let port = |at: usize| {
                u16::try_from(u32::from_ne_bytes(key[at..at + 4].try_into().unwrap())).unwrap()
            };
            (port(36), port(40))
        })
        .collect()
}

fn bpftool() -> &'static str {
    ["/usr/sbin/bpftool", "/sbin/bpftool"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("bpftool")
}

/// `bpftool map dump` of the map named `name` among `pid`'s fds.
fn dump_map(pid: u32, name: &str) -> Value {
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
        let show = std::process::Command::new(bpftool())
            .args(["-j", "map", "show", "id", id])
            .output()
            .expect("bpftool (Debian package bpftool) must be installed");
        let show: Value = serde_json::from_slice(&show.stdout).unwrap_or(Value::Null);
        if show["name"] != name {
            continue;
        }
        let out = std::process::Command::new(bpftool())
            .args(["-j", "map", "dump", "id", id])
            .output()
            .expect("bpftool map dump");
        assert!(out.status.success(), "bpftool map dump id {id}: {out:?}");
        return serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    }
    panic!("weir (pid {pid}) holds no map named {name}");
}

/// Polls until weir's `local_socks` and `local_members` are empty (bounded); panics with what
/// is left.
async fn wait_map_empty(weir: &Weir) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = local_socks_ports(weir.pid());
        let members = dump_map(weir.pid(), "local_members")
            .as_array()
            .map_or(usize::MAX, Vec::len);
        if left.is_empty() && members == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "local_socks still holds {left:?} ({members} in local_members) after every connection closed\n{}",
            weir.log_report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback connection between two sockets of this test process (outside every cgroup of
/// the tests): 1 MiB each way. Returns both ends' ports.
async fn outside_loopback_exchange() -> (u16, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server_port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        stream.read_exact(&mut buf).await.expect("read");
        stream.write_all(&buf).await.expect("write back");
        stream.shutdown().await.expect("shutdown");
    });
    let mut client = TcpStream::connect(("127.0.0.1", server_port))
        .await
        .expect("connect");
    let client_port = client.local_addr().expect("addr").port();
    let sent = weir_tests::random_bytes(7, 1 << 20);
    client.write_all(&sent).await.expect("write");
    let mut back = Vec::new();
    client.read_to_end(&mut back).await.expect("read back");
    assert_eq!(back, sent);
    server.await.expect("server task");
    (client_port, server_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_between_weir_and_a_local_app_goes_through_sk_msg() {
    require_root();
    let cgroup = TestCgroup::new("http");
    let app = App::start_in(&cgroup.path, "local-app");
    let ports = Ports::new();
    let config = config::simple(ports, &[app.addr]);
    let weir = weir_in(&cgroup, &config, &[]).await;
    let proxy = ports.http_addr();
    let (added_before, _, redirected_before) = local_counts(&weir).await;
    assert_eq!(
        (added_before, redirected_before),
        (0, 0),
        "nothing yet (the admin listener is outside the cgroup)"
    );

    big_transfers(proxy, 1).await;
    small_requests(proxy, "local-app", SMALL_REQUESTS).await;

    let (added, _, redirected) = local_counts(&weir).await;
    // Both ends of weir's pooled connection to the app, and weir's side of each client
    // connection (the clients themselves are outside the cgroup).
    assert!(added >= 2, "sockets added: {added}\n{}", weir.log_report());
    // 16 MiB up and back, 16 MiB down, plus the small requests: the weir<->app hop. At
    // least what the app sent (echo and download): weir's side may have been kept on TCP if
    // weir sent before the app's socket was in the map (the reorder guard, local.bpf.c).
    assert!(
        redirected >= 2 * BIG as u64,
        "sk_msg redirected {redirected} bytes, want at least {}\n{}",
        2 * BIG,
        weir.log_report()
    );
    let userspace = weir.stat("weir_accel_userspace_bytes_total", &[]).await;
    assert_eq!(userspace, 0.0, "no tunnel here, nothing spliced");

    // The pooled upstream connection is in the map by its two ends: weir's and the app's.
    let members = local_socks_ports(weir.pid());
    assert!(
        members.iter().any(|&(local, _)| local == app.addr.port())
            && members.iter().any(|&(_, remote)| remote == app.addr.port()),
        "both ends of weir's connection to the app (port {}) are members: {members:?}",
        app.addr.port()
    );

    // A process outside the cgroup talking over loopback is left alone.
    let (client_port, server_port) = outside_loopback_exchange().await;
    let members = local_socks_ports(weir.pid());
    assert!(
        !members
            .iter()
            .any(|&(l, r)| [l, r].contains(&client_port) || [l, r].contains(&server_port)),
        "an outside connection ({client_port} <-> {server_port}) is not in the map: {members:?}"
    );
    let (added_after, _, redirected_after) = local_counts(&weir).await;
    assert_eq!(
        (added_after, redirected_after),
        (added, redirected),
        "the outside connection added no socket and no redirect"
    );

    // Entries leave the map on close: stop the app, weir's pooled connection closes.
    drop(app);
    wait_map_empty(&weir).await;
    let (_, active, _) = local_counts(&weir).await;
    assert_eq!(active, 0, "weir_accel_local_sockets_active back to 0");
    drop(weir);
    drop(cgroup);
}

/// A test cgroup named `cgroup` with an HTTP app `app_name` in it, and weir in it too (with
/// `--accel ACCEL`) proxying a tcp_proxy listener to the app; returns them and the listener's
/// address.
async fn tcp_proxy_to_a_local_app(
    cgroup: &str,
    app_name: &str,
    accel: &str,
) -> (TestCgroup, App, Weir, SocketAddr) {
    let cgroup = TestCgroup::new(cgroup);
    let app = App::start_in(&cgroup.path, app_name);
    let port = free_port();
    let listener = config::tcp_proxy_listener("tcp", port, "tcp", "app", None);
    let config = config::bootstrap(
        free_port(),
        vec![listener],
        vec![config::static_cluster("app", &[app.addr])],
    );
    let weir = weir_in(&cgroup, &config, &["--accel", accel]).await;
    (cgroup, app, weir, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_to_a_local_app_is_copied_through_sk_msg_not_kernel_spliced() {
    require_root();
    let (cgroup, app, weir, proxy) =
        tcp_proxy_to_a_local_app("splice", "spliced-app", "kernel").await;

    big_transfers(proxy, 2).await;
    small_requests(proxy, "spliced-app", 20).await;

    // With local acceleration on, a loopback pair is never kernel-spliced (sk_msg bytes and
    // spliced bytes could overtake each other): it is copied, and sk_msg carries the
    // weir<->app hop.
    let kernel = weir
        .stat("weir_accel_splices_total", &[("mode", "kernel")])
        .await;
    assert_eq!(kernel, 0.0, "no loopback pair kernel-spliced");
    let (_, _, redirected) = local_counts(&weir).await;
    assert!(
        redirected >= 2 * BIG as u64,
        "sk_msg carried the weir<->app hop: {redirected}\n{}",
        weir.log_report()
    );
    // Every tunnel was torn down.
    let deadline = Instant::now() + Duration::from_secs(20);
    while weir
        .stat("weir_tcp_cx_active", &[("stat_prefix", "tcp")])
        .await
        > 0.0
    {
        assert!(
            Instant::now() < deadline,
            "tcp_proxy connections still open\n{}",
            weir.log_report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_map_empty(&weir).await;
    drop(weir);
    drop(app);
    drop(cgroup);
}

/// One request through a CONNECT tunnel that weir terminates (to its `backend` cluster).
async fn through_connect(proxy: SocketAddr, request: Request<Full<Bytes>>) -> Resp {
    let head = b"CONNECT app.local:80 HTTP/1.1\r\nhost: app.local:80\r\n\r\n";
    let (tcp, head) = weir_tests::tunnel_client::raw_head(proxy, head)
        .await
        .unwrap_or_else(|e| panic!("CONNECT: {e}"));
    assert_eq!(head.status, 200, "CONNECT answered: {}", head.text);
    assert!(head.rest.is_empty(), "nothing past the 200 before we spoke");
    must(h1_request_on(tcp, request).await, "request in the tunnel")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connect_to_a_local_app_is_copied_through_sk_msg() {
    require_root();
    let cgroup = TestCgroup::new("connect");
    let app = App::start_in(&cgroup.path, "connect-app");
    let ports = Ports::new();
    let mut hcm = config::hcm(
        "ingress_http",
        vec![config::vhost(
            "v",
            &["*"],
            vec![config::route_connect(
                "backend",
                Some(config::terminate_connect(false)),
            )],
        )],
    );
    config::set_upgrades(&mut hcm, serde_json::json!([{"upgrade_type": "CONNECT"}]));
    // An HTTP/1.1 listener: the tunnel then owns the whole downstream socket (spliceable).
    hcm["codec_type"] = serde_json::json!("HTTP1");
    let config = config::bootstrap(
        ports.admin,
        vec![config::listener("ingress", ports.http, hcm)],
        vec![config::static_cluster("backend", &[app.addr])],
    );
    let weir = weir_in(&cgroup, &config, &["--accel", "kernel"]).await;

    let body = Bytes::from(weir_tests::random_bytes(5, BIG));
    let resp = through_connect(ports.http_addr(), post("/echo", body.clone())).await;
    assert_eq!(resp.status, 200);
    assert_eq!(sha256(&resp.body), sha256(&body), "echo through the tunnel");
    let resp = through_connect(ports.http_addr(), get(&format!("/large/{BIG}"))).await;
    assert_eq!(
        sha256(&resp.body),
        sha256(&weir_tests::pattern(BIG)),
        "download"
    );

    let kernel = weir
        .stat("weir_accel_splices_total", &[("mode", "kernel")])
        .await;
    assert_eq!(
        kernel,
        0.0,
        "no loopback tunnel kernel-spliced\n{}",
        weir.log_report()
    );
    let (_, _, redirected) = local_counts(&weir).await;
    assert!(
        redirected >= BIG as u64,
        "sk_msg carried the weir<->app hop: {redirected}\n{}",
        weir.log_report()
    );
    drop(app);
    wait_map_empty(&weir).await;
    drop(weir);
    drop(cgroup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_app_that_speaks_first_keeps_its_byte_order() {
    require_root();
    const BANNER: usize = 1 << 20;
    const ECHO: usize = 1 << 20;
    const CONNECTIONS: usize = 20;
    let cgroup = TestCgroup::new("banner");
    // Writes its banner as soon as it accepts, through sk_msg: with the kernel splice on as
    // well, the banner must still arrive whole and in order (once, it did not, when the pair
    // was spliced after the first bytes had gone by sk_msg).
    let app = App::spawn_in(&cgroup.path, &["banner-echo", &BANNER.to_string()]);
    let port = free_port();
    let listener = config::tcp_proxy_listener("tcp", port, "tcp", "app", None);
    let config = config::bootstrap(
        free_port(),
        vec![listener],
        vec![config::static_cluster("app", &[app.addr])],
    );
    let weir = weir_in(&cgroup, &config, &["--accel", "kernel"]).await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let banner = weir_tests::pattern(BANNER);
    for i in 0..CONNECTIONS {
        let exchange = async {
            let mut stream = TcpStream::connect(proxy).await.expect("connect");
            let mut got = vec![0u8; BANNER];
            stream.read_exact(&mut got).await.expect("read the banner");
            assert!(got == banner, "connection {i}: the banner arrived in order");
            let sent = weir_tests::random_bytes(100 + i as u64, ECHO);
            let (mut reader, mut writer) = stream.into_split();
            let writing = async {
                writer.write_all(&sent).await.expect("write");
                writer.shutdown().await.expect("half-close");
            };
            let mut back = Vec::with_capacity(ECHO);
            let reading = reader.read_to_end(&mut back);
            let ((), read) = tokio::join!(writing, reading);
            read.expect("read the echo");
            assert!(
                back == sent,
                "connection {i}: the echo arrived intact, then EOF"
            );
        };
        tokio::time::timeout(Duration::from_secs(60), exchange)
            .await
            .unwrap_or_else(|_| panic!("connection {i} timed out\n{}", weir.log_report()));
    }
    let kernel = weir
        .stat("weir_accel_splices_total", &[("mode", "kernel")])
        .await;
    assert_eq!(kernel, 0.0, "no loopback pair kernel-spliced");
    drop(app);
    wait_map_empty(&weir).await;
    drop(weir);
    drop(cgroup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_to_a_local_app_without_the_kernel_splice_is_copied_intact() {
    require_root();
    let (cgroup, app, weir, proxy) =
        tcp_proxy_to_a_local_app("copy", "copied-app", "userspace").await;

    big_transfers(proxy, 3).await;
    small_requests(proxy, "copied-app", 20).await;

    // splice(2) cannot read what sk_msg put on weir's upstream socket, so the pair is copied
    // (with read/write, which sk_msg accelerates on the weir<->app hop).
    let (_, _, redirected) = local_counts(&weir).await;
    assert!(
        redirected >= 2 * BIG as u64,
        "sk_msg carried the weir<->app hop: {redirected}\n{}",
        weir.log_report()
    );
    drop(app);
    wait_map_empty(&weir).await;
    drop(weir);
    drop(cgroup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_weirs_in_two_cgroups_do_not_interfere() {
    require_root();
    let cgroup_a = TestCgroup::new("two-a");
    let cgroup_b = TestCgroup::new("two-b");
    let app_a = App::start_in(&cgroup_a.path, "app-a");
    let app_b = App::start_in(&cgroup_b.path, "app-b");
    let (ports_a, ports_b) = (Ports::new(), Ports::new());
    let weir_a = weir_in(&cgroup_a, &config::simple(ports_a, &[app_a.addr]), &[]).await;
    let weir_b = weir_in(&cgroup_b, &config::simple(ports_b, &[app_b.addr]), &[]).await;
    assert!(!cgroup_a.pids().contains(&app_b.pid()));
    assert!(!cgroup_b.pids().contains(&weir_a.pid()));

    small_requests(ports_a.http_addr(), "app-a", 20).await;
    let (added_a, _, redirected_a) = local_counts(&weir_a).await;
    let (added_b, _, redirected_b) = local_counts(&weir_b).await;
    assert!(
        added_a >= 2 && redirected_a > 0,
        "weir A accelerated its hop"
    );
    assert_eq!(
        (added_b, redirected_b),
        (0, 0),
        "weir B saw nothing of A's traffic"
    );

    small_requests(ports_b.http_addr(), "app-b", 20).await;
    let (_, _, redirected_b) = local_counts(&weir_b).await;
    let (added_a_after, _, redirected_a_after) = local_counts(&weir_a).await;
    assert!(redirected_b > 0, "weir B accelerated its own hop");
    assert_eq!(
        (added_a_after, redirected_a_after),
        (added_a, redirected_a),
        "weir A saw nothing of B's traffic"
    );
    drop((weir_a, weir_b, app_a, app_b));
    drop((cgroup_a, cgroup_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cgroup_v2_directory_weir_says_why_and_serves_over_tcp() {
    let app = weir_tests::H1Upstream::start("plain-app").await;
    let not_cgroup = tempfile::tempdir().expect("temp dir");
    let wanted = not_cgroup.path().join("weir");
    let ports = Ports::new();
    let config = config::simple(ports, &[app.addr]);
    let weir = Weir::start_with(
        &config,
        &[
            "--concurrency",
            "1",
            "--local-accel-cgroup",
            wanted.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    let log = weir.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("local acceleration off"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one log line says why\n{}",
        weir.log_report()
    );
    assert!(
        lines[0].contains("not on a cgroup v2 filesystem"),
        "the reason: {}",
        lines[0]
    );
    assert!(!wanted.exists(), "nothing created outside cgroup v2");
    let ours = std::fs::read_to_string("/proc/self/cgroup").expect("our cgroup");
    let weirs = std::fs::read_to_string(format!("/proc/{}/cgroup", weir.pid())).expect("weir's");
    assert_eq!(weirs, ours, "weir stayed where it was started");

    let resp = must(h1_request(ports.http_addr(), get("/small")).await, "GET");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-upstream"), "plain-app");
    big_transfers(ports.http_addr(), 4).await;
    let stats = weir.stats().await;
    assert!(
        !stats.has("weir_accel_local_redirected_bytes_total"),
        "no local acceleration stats while it is off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_privileges_weir_says_why_and_serves_over_tcp() {
    require_root();
    let cgroup = TestCgroup::new("unprivileged");
    let app = weir_tests::H1Upstream::start("unprivileged-app").await;
    let ports = Ports::new();
    let config = config::simple(ports, &[app.addr]);
    let dir = tempfile::Builder::new()
        .prefix("weir-e2e-")
        .tempdir()
        .expect("temp dir");
    let config_path = dir.path().join("weir.yaml");
    std::fs::write(&config_path, config.to_string()).expect("write config");
    // Still uid 0 (so the files and the cgroup stay writable), but with no capability at all:
    // loading a BPF program needs CAP_BPF (or CAP_SYS_ADMIN).
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set=-all", "--inh-caps=-all", "--"])
        .arg(weir_tests::weir_bin())
        .arg("-c")
        .arg(&config_path)
        .args(["--log-level", "debug", "--concurrency", "1"])
        .arg("--local-accel-cgroup")
        .arg(&cgroup.path);
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
    let mut weir = Weir::spawn_command(cmd, dir, config_path, admin);
    weir.wait_ready().await;
    let log = weir.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("local acceleration off"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one log line says why\n{}",
        weir.log_report()
    );
    assert!(
        lines[0].contains("not privileged"),
        "the reason names the missing privilege: {}",
        lines[0]
    );
    assert!(
        !cgroup.pids().contains(&weir.pid()),
        "weir did not join the cgroup"
    );
    let resp = must(h1_request(ports.http_addr(), get("/small")).await, "GET");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-upstream"), "unprivileged-app");
    drop(weir);
    drop(cgroup);
}
