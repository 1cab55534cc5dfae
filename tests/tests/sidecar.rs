//! Sidecar mode end to end, in network namespaces the test builds itself.
//!
//! ```text
//!  client ns                      app ns
//!  10.231.N.1  ---- veth ----     10.231.N.2
//!  curl http://10.231.N.2:8080/   iptables nat PREROUTING --dport 8080 -> REDIRECT :15001
//!                                 weir (0.0.0.0:15001, use_original_dst, ORIGINAL_DST cluster,
//!                                       --upstream-mark 77) -> app 0.0.0.0:8080
//! ```
//!
//! The app namespace also redirects its own outgoing connections to the app's ports (nat
//! OUTPUT), except those marked 77: weir's upstream connection to the app would otherwise be
//! sent back to weir, so the tests only pass when weir marks its sockets.
//!
//! The client needs no proxy setting: it connects to the app's address and port. Everything
//! (namespaces, the veth pair, the rules living in the namespaces, weir) is removed by a
//! Drop guard, also when an assertion fails. These tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN
//! for `setns`), iproute2 and iptables; as everywhere in this project they run as root and fail,
//! never skip, without them.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use weir_tests::config::{
    address, hcm, listener, route_connect, route_prefix, set_upgrades, tcp_proxy_listener,
    terminate_connect, vhost,
};
use weir_tests::wasm::{filter, set_filters, wasm_filter};
use weir_tests::{Weir, weir_bin};

/// weir's HTTP listener in the app namespace (iptables redirects the app's HTTP port here).
const WEIR_HTTP_PORT: u16 = 15001;
/// weir's tcp_proxy listener.
const WEIR_TCP_PORT: u16 = 15002;
/// weir's admin listener (127.0.0.1 in the app namespace).
const ADMIN_PORT: u16 = 15000;
/// The app's HTTP port.
const APP_HTTP_PORT: u16 = 8080;
/// The app's TCP (echo) port.
const APP_TCP_PORT: u16 = 9000;
/// The port of the app's second HTTP server, reached through weir by TPROXY.
const APP_TPROXY_PORT: u16 = 8081;
/// weir's transparent (TPROXY) HTTP listener.
const WEIR_TPROXY_PORT: u16 = 15003;
/// The SO_MARK weir puts on its upstream sockets; the rules let marked connections through.
const MARK: u32 = 77;
/// Bound on every wait.
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `args` (`ip ...`, `iptables ...`) and panics with its output when it fails.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install iproute2 and iptables): {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A client namespace and an app namespace joined by a veth pair, with the app namespace's
/// REDIRECT rules. Dropping it deletes both namespaces, which takes the veth pair and the
/// rules with them.
struct Topology {
    client_ns: String,
    app_ns: String,
    client_ip: String,
    app_ip: String,
}

impl Topology {
    fn new() -> Topology {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let topology = Topology {
            client_ns: format!("weir-sc-{pid}-{n}-client"),
            app_ns: format!("weir-sc-{pid}-{n}-app"),
            client_ip: format!("10.231.{n}.1"),
            app_ip: format!("10.231.{n}.2"),
        };
        // The guard exists before the first namespace does, so a failure below cleans up.
        run("ip", &["netns", "add", &topology.client_ns]);
        run("ip", &["netns", "add", &topology.app_ns]);
        run(
            "ip",
            &[
                "link",
                "add",
                "veth-client",
                "netns",
                &topology.client_ns,
                "type",
                "veth",
                "peer",
                "name",
                "veth-app",
                "netns",
                &topology.app_ns,
            ],
        );
        for (ns, dev, ip) in [
            (&topology.client_ns, "veth-client", &topology.client_ip),
            (&topology.app_ns, "veth-app", &topology.app_ip),
        ] {
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
            );
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        let mark = MARK.to_string();
        for (app_port, weir_port) in [
            (APP_HTTP_PORT, WEIR_HTTP_PORT),
            (APP_TCP_PORT, WEIR_TCP_PORT),
        ] {
            let app_port = app_port.to_string();
            let weir_port = weir_port.to_string();
            let iptables = |rule: &[&str]| {
                let mut args = vec![
                    "netns",
                    "exec",
                    &topology.app_ns,
                    "iptables",
                    "-w",
                    "-t",
                    "nat",
                ];
                args.extend_from_slice(rule);
                run("ip", &args);
            };
            // Inbound: what arrives for the app goes to weir.
            iptables(&[
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "--dport",
                &app_port,
                "-j",
                "REDIRECT",
                "--to-ports",
                &weir_port,
            ]);
            // Local connections to the app go to weir too, except weir's own (marked) ones.
            iptables(&[
                "-A", "OUTPUT", "-p", "tcp", "--dport", &app_port, "-m", "mark", "--mark", &mark,
                "-j", "RETURN",
            ]);
            iptables(&[
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "--dport",
                &app_port,
                "-j",
                "REDIRECT",
                "--to-ports",
                &weir_port,
            ]);
        }
        // TPROXY: no NAT; packets for the app's second port are delivered to weir's transparent
        // listener as they are (policy routing sends the marked packets to the local table).
        // weir's own connections (mark 77) come back through PREROUTING on lo and are left
        // alone.
        let tproxy_port = APP_TPROXY_PORT.to_string();
        let mangle = |rule: &[&str]| {
            let mut args = vec![
                "netns",
                "exec",
                &topology.app_ns,
                "iptables",
                "-w",
                "-t",
                "mangle",
            ];
            args.extend_from_slice(rule);
            run("ip", &args);
        };
        mangle(&[
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            &tproxy_port,
            "-m",
            "mark",
            "--mark",
            &mark,
            "-j",
            "RETURN",
        ]);
        mangle(&[
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            &tproxy_port,
            "-j",
            "TPROXY",
            "--on-port",
            &WEIR_TPROXY_PORT.to_string(),
            "--tproxy-mark",
            "1",
        ]);
        run(
            "ip",
            &[
                "-n",
                &topology.app_ns,
                "rule",
                "add",
                "fwmark",
                "1",
                "lookup",
                "100",
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &topology.app_ns,
                "route",
                "add",
                "local",
                "0.0.0.0/0",
                "dev",
                "lo",
                "table",
                "100",
            ],
        );
        topology
    }

    /// Runs `f` on a thread inside namespace `ns` (sockets it opens, and processes it
    /// spawns, live there) and returns what it returns.
    fn inside<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                let file =
                    std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns on a namespace fd we hold open; it changes only this thread.
                let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    entered,
                    0,
                    "setns {path}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            });
            match thread.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs `f` inside the app namespace on a fresh tokio runtime.
    fn in_app<T: Send>(&self, f: impl AsyncFnOnce() -> T + Send) -> T {
        Self::inside(&self.app_ns, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
            runtime.block_on(f())
        })
    }

    /// `curl` from the client namespace, with no proxy setting: status line and headers
    /// (`-i`) and the body; `None` with curl's error when it fails.
    async fn curl_from_client(&self, url: &str) -> Result<String, String> {
        self.curl_from_client_with(&["--noproxy", "*"], url).await
    }

    /// [`Topology::curl_from_client`], which must succeed with a 200 (else the test fails
    /// with `weir`'s log).
    async fn curl_ok(&self, url: &str, weir: &Weir) -> String {
        let answer = match self.curl_from_client(url).await {
            Ok(answer) => answer,
            Err(error) => panic!("{error}\n{}", weir.log_report()),
        };
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{answer}\n{}",
            weir.log_report()
        );
        answer
    }

    /// [`Topology::curl_from_client`] with other curl arguments before the URL.
    async fn curl_from_client_with(&self, args: &[&str], url: &str) -> Result<String, String> {
        let output = tokio::process::Command::new("timeout")
            .args(["20", "ip", "netns", "exec", &self.client_ns])
            .args(["curl", "-sS", "-i", "--max-time", "10"])
            .args(args)
            .arg(url)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
        if !output.status.success() {
            return Err(format!(
                "curl {url}: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Sends `payload` over TCP from the client namespace to `to`, half-closes, and returns
    /// everything read back until the peer closes (off the runtime thread, which keeps
    /// serving the app meanwhile).
    async fn tcp_exchange_from_client(&self, to: SocketAddr, payload: &'static [u8]) -> Vec<u8> {
        let client_ns = self.client_ns.clone();
        let exchange = tokio::task::spawn_blocking(move || {
            Self::inside(&client_ns, || Self::tcp_exchange(to, payload))
        });
        match exchange.await {
            Ok(bytes) => bytes,
            Err(error) => panic!("TCP client: {error}"),
        }
    }

    fn tcp_exchange(to: SocketAddr, payload: &[u8]) -> Vec<u8> {
        {
            let mut stream = TcpStream::connect_timeout(&to, LIMIT)
                .unwrap_or_else(|e| panic!("connect {to} from the client namespace: {e}"));
            stream.set_read_timeout(Some(LIMIT)).ok();
            stream.set_write_timeout(Some(LIMIT)).ok();
            stream
                .write_all(payload)
                .unwrap_or_else(|e| panic!("write: {e}"));
            stream
                .shutdown(std::net::Shutdown::Write)
                .unwrap_or_else(|e| panic!("shutdown: {e}"));
            let mut back = Vec::new();
            stream
                .read_to_end(&mut back)
                .unwrap_or_else(|e| panic!("read: {e}"));
            back
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.client_ns, &self.app_ns] {
            let deleted = Command::new("ip").args(["netns", "del", ns]).output();
            if let Ok(output) = deleted
                && !output.status.success()
            {
                eprintln!(
                    "ip netns del {ns}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

/// The app: answers every request with the headers it received, one `name: value` a line,
/// and `x-app: yes`. Serves until the runtime ends.
async fn start_http_app(port: u16) {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .unwrap_or_else(|e| panic!("app bind :{port}: {e}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    let mut text = format!("{} {}\n", request.method(), request.uri());
                    for (name, value) in request.headers() {
                        text.push_str(&format!(
                            "{name}: {}\n",
                            String::from_utf8_lossy(value.as_bytes())
                        ));
                    }
                    Response::builder()
                        .header("x-app", "yes")
                        .body(Full::new(Bytes::from(text)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// The TCP app: echoes what it reads, prefixed with `app:`, and closes after the peer's FIN.
async fn start_tcp_app() {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", APP_TCP_PORT))
        .await
        .unwrap_or_else(|e| panic!("app bind :{APP_TCP_PORT}: {e}"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut received = Vec::new();
                if stream.read_to_end(&mut received).await.is_ok() {
                    let _ = stream.write_all(b"app:").await;
                    let _ = stream.write_all(&received).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
}

/// `{socket_address: {address: 0.0.0.0, port_value: port}}`.
fn any_address(port: u16) -> Value {
    json!({"socket_address": {"address": "0.0.0.0", "port_value": port}})
}

/// The sidecar's config: an HTTP listener with `use_original_dst` and the header_manipulation
/// Wasm filter, a tcp_proxy listener with the original_dst listener filter, both to an
/// ORIGINAL_DST cluster.
fn sidecar_config() -> Value {
    // A CONNECT arriving on the redirected HTTP port is terminated here and its payload
    // goes where the connection was headed (the ORIGINAL_DST cluster), as any request does.
    let mut inbound_hcm = hcm(
        "inbound_http",
        vec![vhost(
            "all",
            &["*"],
            vec![
                route_connect("original", Some(terminate_connect(false))),
                route_prefix("/", "original"),
            ],
        )],
    );
    set_upgrades(&mut inbound_hcm, json!([{"upgrade_type": "CONNECT"}]));
    let mut http = listener("inbound_http", WEIR_HTTP_PORT, inbound_hcm);
    http["address"] = any_address(WEIR_HTTP_PORT);
    http["use_original_dst"] = json!(true);
    let mut tcp = tcp_proxy_listener(
        "inbound_tcp",
        WEIR_TCP_PORT,
        "inbound_tcp",
        "original",
        None,
    );
    tcp["address"] = any_address(WEIR_TCP_PORT);
    tcp["listener_filters"] = json!([{
        "name": "envoy.filters.listener.original_dst",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
        }
    }]);
    let mut tproxy = listener(
        "inbound_tproxy",
        WEIR_TPROXY_PORT,
        hcm(
            "inbound_tproxy",
            vec![vhost("all", &["*"], vec![route_prefix("/", "original")])],
        ),
    );
    tproxy["address"] = any_address(WEIR_TPROXY_PORT);
    tproxy["transparent"] = json!(true);
    tproxy["use_original_dst"] = json!(true);
    let mut config = json!({
        "admin": {"address": address(ADMIN_PORT)},
        "static_resources": {
            "listeners": [http, tcp, tproxy],
            "clusters": [{
                "name": "original",
                "type": "ORIGINAL_DST",
                "lb_policy": "CLUSTER_PROVIDED",
                "connect_timeout": "2s",
            }],
        },
    });
    let module = filter("header_manipulation");
    set_filters(
        &mut config,
        vec![wasm_filter(
            "sidecar_headers",
            &module,
            r#"{"request": {"set": {"x-sidecar": "weir"}}, "response": {"set": {"x-sidecar-response": "weir"}}}"#,
            false,
        )],
    );
    config
}

/// Each of `counters` (name, labels) reads 1 on weir's `/stats/prometheus`.
async fn counted_once(weir: &Weir, counters: &[(&str, &[(&str, &str)])]) {
    let stats = weir.stats().await;
    for (name, labels) in counters {
        assert_eq!(stats.get(name, labels), Some(1.0), "{name}\n{}", stats.text);
    }
}

/// Starts weir (in the namespace of the calling thread) marking its upstream sockets.
async fn start_sidecar() -> Weir {
    assert!(
        weir_bin().is_file(),
        "build weir first: cargo build -p weir"
    );
    Weir::start_with(
        &sidecar_config(),
        &["--concurrency", "1", "--upstream-mark", &MARK.to_string()],
    )
    .await
}

/// HTTP from the client namespace to the app's address and port reaches the app through weir:
/// the app sees the header weir's Wasm filter set, the client sees the app's answer with
/// weir's response header, and weir's stats count the request on the inbound listener and
/// on the ORIGINAL_DST cluster.
#[test]
fn http_to_the_app_goes_through_the_sidecar() {
    let topology = Topology::new();
    let app_url = format!("http://{}:{APP_HTTP_PORT}/hello", topology.app_ip);
    topology.in_app(async || {
        start_http_app(APP_HTTP_PORT).await;
        let weir = start_sidecar().await;
        let answer = topology.curl_ok(&app_url, &weir).await;
        let lower = answer.to_ascii_lowercase();
        assert!(lower.contains("x-app: yes"), "{answer}");
        assert!(lower.contains("x-sidecar-response: weir"), "{answer}");
        assert!(
            lower.contains("\nx-sidecar: weir\n"),
            "the app did not see weir's header: {answer}"
        );
        assert!(
            lower.contains("\nget /hello\n") || lower.contains("get /hello\n"),
            "{answer}"
        );
        counted_once(
            &weir,
            &[
                (
                    "weir_http_downstream_rq_total",
                    &[("stat_prefix", "inbound_http")],
                ),
                (
                    "weir_cluster_upstream_rq_total",
                    &[("cluster_name", "original")],
                ),
            ],
        )
        .await;
        // The destination is a host of the ORIGINAL_DST cluster, as in Envoy's /clusters.
        let clusters = match weir_tests::client::get(weir.admin, "/clusters").await {
            Ok(resp) => String::from_utf8_lossy(&resp.body).into_owned(),
            Err(error) => panic!("/clusters: {error}"),
        };
        let app = format!("original::{}:{APP_HTTP_PORT}::rq_total::1", topology.app_ip);
        assert!(clusters.lines().any(|l| l == app), "{app} in\n{clusters}");
        drop(weir);
    });
}

/// A CONNECT sent to the app's address (a client that takes the app for its proxy) is
/// redirected to weir, which terminates it and carries the tunnel to the original destination:
/// the request the client then sends through the tunnel is answered by the app itself.
#[test]
fn a_terminated_connect_goes_to_the_original_destination() {
    let topology = Topology::new();
    let app = format!("http://{}:{APP_HTTP_PORT}", topology.app_ip);
    topology.in_app(async || {
        start_http_app(APP_HTTP_PORT).await;
        let weir = start_sidecar().await;
        let answer = match topology
            .curl_from_client_with(
                &["--proxytunnel", "--proxy", &app],
                &format!("{app}/tunneled"),
            )
            .await
        {
            Ok(answer) => answer,
            Err(error) => panic!("{error}\n{}", weir.log_report()),
        };
        // curl prints weir's answer to the CONNECT, then the app's answer through the tunnel.
        let lower = answer.to_ascii_lowercase();
        let (connect, response) = lower.split_at(lower.rfind("http/1.1 ").unwrap_or(0));
        assert!(
            connect.starts_with("http/1.1 200"),
            "CONNECT answered: {answer}\n{}",
            weir.log_report()
        );
        assert!(response.starts_with("http/1.1 200"), "{answer}");
        assert!(response.contains("x-app: yes"), "{answer}");
        assert!(response.contains("get /tunneled"), "{answer}");
        // The app answered the client itself, through the tunnel: weir's filter did not see it.
        assert!(!response.contains("x-sidecar-response"), "{answer}");
        counted_once(
            &weir,
            &[
                (
                    "weir_http_downstream_cx_upgrades_total",
                    &[("stat_prefix", "inbound_http")],
                ),
                (
                    "weir_cluster_upstream_cx_total",
                    &[("cluster_name", "original")],
                ),
            ],
        )
        .await;
        drop(weir);
    });
}

/// A request made straight to weir's listener (no rule redirected it) has no original
/// destination: forwarding it to "where it was going" would loop back into weir. weir answers
/// 502 and says why in its log.
#[test]
fn a_connection_to_the_sidecar_itself_is_refused_not_looped() {
    let topology = Topology::new();
    let weir_url = format!("http://{}:{WEIR_HTTP_PORT}/direct", topology.app_ip);
    topology.in_app(async || {
        start_http_app(APP_HTTP_PORT).await;
        let weir = start_sidecar().await;
        let answer = match topology.curl_from_client(&weir_url).await {
            Ok(answer) => answer,
            Err(error) => panic!("{error}\n{}", weir.log_report()),
        };
        assert!(
            answer.starts_with("HTTP/1.1 502"),
            "{answer}\n{}",
            weir.log_report()
        );
        assert!(answer.contains("no original destination"), "{answer}");
        let logged = weir_tests::wait_until(LIMIT, || {
            weir.log().contains("addressed to this listener itself")
        })
        .await;
        assert!(
            logged,
            "no log line about the refused connection\n{}",
            weir.log_report()
        );
        let stats = weir.stats().await;
        let upstream = stats
            .get(
                "weir_cluster_upstream_cx_total",
                &[("cluster_name", "original")],
            )
            .unwrap_or(0.0);
        assert_eq!(upstream, 0.0, "weir connected somewhere: {}", stats.text);
    });
}

/// A tcp_proxy listener with the original_dst listener filter: bytes from the client namespace
/// to the app's TCP port reach the app through weir and its answer comes back; half-close is
/// carried (the app answers after the client's FIN). weir counts the connection.
#[test]
fn tcp_to_the_app_goes_through_the_sidecar() {
    let topology = Topology::new();
    let to: SocketAddr = match format!("{}:{APP_TCP_PORT}", topology.app_ip).parse() {
        Ok(to) => to,
        Err(error) => panic!("address: {error}"),
    };
    topology.in_app(async || {
        start_tcp_app().await;
        let weir = start_sidecar().await;
        let back = topology
            .tcp_exchange_from_client(to, b"hello through the sidecar")
            .await;
        assert_eq!(
            String::from_utf8_lossy(&back),
            "app:hello through the sidecar",
            "{}",
            weir.log_report()
        );
        counted_once(
            &weir,
            &[
                ("weir_tcp_cx_total", &[("stat_prefix", "inbound_tcp")]),
                (
                    "weir_cluster_upstream_cx_total",
                    &[("cluster_name", "original")],
                ),
            ],
        )
        .await;
    });
}

/// TPROXY instead of REDIRECT: weir's listener is bound with IP_TRANSPARENT and takes the
/// connection as it was addressed (no NAT); the accepted socket's local address is the app's,
/// and the ORIGINAL_DST cluster sends there. The app sees the request id weir added.
#[test]
fn http_through_a_tproxy_rule_reaches_the_app() {
    let topology = Topology::new();
    let app_url = format!("http://{}:{APP_TPROXY_PORT}/tproxied", topology.app_ip);
    topology.in_app(async || {
        start_http_app(APP_TPROXY_PORT).await;
        let weir = start_sidecar().await;
        let answer = topology.curl_ok(&app_url, &weir).await;
        let lower = answer.to_ascii_lowercase();
        assert!(lower.contains("x-app: yes"), "{answer}");
        assert!(lower.contains("get /tproxied\n"), "{answer}");
        assert!(
            lower.contains("\nx-request-id: "),
            "weir's request id did not reach the app: {answer}"
        );
        counted_once(
            &weir,
            &[(
                "weir_http_downstream_rq_total",
                &[("stat_prefix", "inbound_tproxy")],
            )],
        )
        .await;
    });
}
