//! How Envoy 1.40's HTTP connection manager counts HTTP/1.1 streams that do not end well
//! (`downstream_rq_rx_reset`, `_rq_tx_reset`, `downstream_cx_protocol_error`), and weir
//! beside it: one config through both, raw TCP clients that leave, cut or garble their
//! requests, an upstream that delays, cuts or stalls its answers, and the counters each case
//! moved compared.
//!
//! What Envoy counts (measured with these clients): every HTTP/1.1 stream the connection's
//! close ends before its request and its response are both whole is `rq_rx_reset`, whoever
//! closed (the client mid-request or mid-response, with a FIN or a RST; the codec after a
//! request it could not parse, answered 400 or 431; after an HTTP/1.0 request it refused with
//! 426); a response Envoy itself had to cut (its upstream's body cut, `stream_idle_timeout`)
//! is `rq_tx_reset` as well. A head cut short is a request (`rq_total`). Only what the codec
//! could not parse, or refused, is a protocol error.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_tests::config;
use weir_tests::side_by_side::{Kind, Proxy};

/// The counters compared, as `http.h.<name>` in `/stats`.
const COUNTERS: &[&str] = &[
    "downstream_cx_http1_total",
    "downstream_cx_protocol_error",
    "downstream_rq_total",
    "downstream_rq_rx_reset",
    "downstream_rq_tx_reset",
    "downstream_rq_2xx",
    "downstream_rq_4xx",
    "downstream_rq_5xx",
    "downstream_rq_idle_timeout",
];

/// `/stats` filtered to the listener's counters and its active gauges.
const STATS: &str = "/stats?filter=%5Ehttp%5C.h%5C.downstream_";

/// Size of the `/big` answer: more than the client's socket and the proxy's buffers hold.
const BIG: usize = 8 << 20;

/// One HTTP/1.1 upstream, by path: `/slow` answers after 1.5 s, `/big` answers [`BIG`]
/// bytes, `/trunc` sends a head for 100 bytes, 10 of them, and closes, `/stall` the same but
/// holds the connection 2.5 s first; anything else answers `ok` at once (after the whole
/// request body).
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve_upstream(tcp));
        }
    });
    addr
}

/// Serves one upstream connection (see [`upstream`]); any failure ends it.
async fn serve_upstream(mut tcp: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let answered = match path.as_str() {
            "/slow" => {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
            }
            "/big" => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n");
                let _ = tcp.write_all(head.as_bytes()).await;
                tcp.write_all(&vec![b'x'; BIG]).await
            }
            "/trunc" | "/stall" => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                    .await;
                let hold = if path == "/stall" { 2500 } else { 200 };
                tokio::time::sleep(Duration::from_millis(hold)).await;
                return;
            }
            _ => {
                tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
            }
        };
        if answered.is_err() {
            return;
        }
    }
}

/// Listener `h` on `port` routing everything to `upstream`, `stream_idle_timeout` 1 s.
fn proxy_config(admin: u16, port: u16, upstream: SocketAddr) -> Value {
    let mut hcm = config::hcm(
        "h",
        vec![config::vhost(
            "all",
            &["*"],
            vec![config::route_prefix("/", "up")],
        )],
    );
    hcm["stream_idle_timeout"] = json!("1s");
    config::bootstrap(
        admin,
        vec![config::listener("h", port, hcm)],
        vec![config::static_cluster("up", &[upstream])],
    )
}

/// How a client behaves.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// A whole GET, its answer read to the close.
    Baseline,
    /// A POST head for 100 bytes, 10 of them, then a close.
    BodyCut,
    /// A GET head to `/slow`, then a close before the answer.
    CloseBeforeAnswer,
    /// The same, closed with a RST (`SO_LINGER` 0).
    ResetBeforeAnswer,
    /// A GET head to `/slow`, then its write side shut (half close), then a read.
    HalfCloseBeforeAnswer,
    /// Half a GET head, then a close.
    HeadCut,
    /// Bytes that are no request line (answered 400).
    Garbage,
    /// A `content-length` that is no number (answered 400).
    BadContentLength,
    /// A chunked body whose chunk size is no number (answered 400).
    BadChunk,
    /// A head over `max_request_headers_kb` (answered 431).
    HeadTooLarge,
    /// An HTTP/1.0 request, which the listener does not serve (answered 426).
    Http10,
    /// A GET for `/big` whose answer it stops reading after a few bytes, then closes.
    StopsReading,
    /// A GET answered, then a close on the idle keep-alive connection.
    CloseWhenIdle,
    /// A GET whose upstream cuts its body (`/trunc`).
    UpstreamCut,
    /// A GET whose upstream stalls mid-body past `stream_idle_timeout` (`/stall`).
    UpstreamStalls,
}

/// Reads from `tcp` until it closes, fails, or `limit` passes; what came.
async fn read_to_close(tcp: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Runs `client` against `addr`: the first line it got back (empty when none).
async fn run_client(client: Client, addr: SocketAddr) -> String {
    let pause = Duration::from_millis(300);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if matches!(client, Client::StopsReading) {
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    }
    let mut tcp = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let send: Vec<u8> = match client {
        Client::Baseline => b"GET /fast HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n".to_vec(),
        Client::BodyCut => {
            b"POST /post HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n0123456789".to_vec()
        }
        Client::CloseBeforeAnswer | Client::ResetBeforeAnswer | Client::HalfCloseBeforeAnswer => {
            b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n".to_vec()
        }
        Client::HeadCut => b"GET /fast HTTP/1.1\r\nhost: a\r\n".to_vec(),
        Client::Garbage => b"GARBAGE\x01\x02 nonsense\r\n\r\n".to_vec(),
        Client::BadContentLength => {
            b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: abc\r\n\r\n".to_vec()
        }
        Client::BadChunk => {
            b"POST /post HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec()
        }
        Client::HeadTooLarge => {
            let mut head = b"GET /fast HTTP/1.1\r\nhost: a\r\nx-big: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', 70_000));
            head.extend_from_slice(b"\r\n\r\n");
            head
        }
        Client::Http10 => b"GET /x HTTP/1.0\r\n\r\n".to_vec(),
        Client::StopsReading => b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
        Client::CloseWhenIdle => b"GET /fast HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
        Client::UpstreamCut => b"GET /trunc HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
        Client::UpstreamStalls => b"GET /stall HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
    };
    // A proxy that answers before reading everything may close first: what it answered is
    // still read.
    let _ = tcp.write_all(&send).await;
    let got = match client {
        Client::BodyCut | Client::HeadCut | Client::CloseBeforeAnswer => {
            tokio::time::sleep(pause).await;
            Vec::new()
        }
        Client::ResetBeforeAnswer => {
            tokio::time::sleep(pause).await;
            socket2::SockRef::from(&tcp)
                .set_linger(Some(Duration::ZERO))
                .expect("SO_LINGER");
            Vec::new()
        }
        Client::HalfCloseBeforeAnswer => {
            let _ = tcp.shutdown().await;
            read_to_close(&mut tcp, Duration::from_secs(4)).await
        }
        Client::StopsReading => {
            let mut first = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut first))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            // Well within `stream_idle_timeout` (1 s), which would end the stream first.
            tokio::time::sleep(pause).await;
            first[..n].to_vec()
        }
        Client::CloseWhenIdle => {
            let mut first = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut first))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(200)).await;
            first[..n].to_vec()
        }
        Client::Baseline
        | Client::Garbage
        | Client::BadContentLength
        | Client::BadChunk
        | Client::HeadTooLarge
        | Client::Http10
        | Client::UpstreamCut
        | Client::UpstreamStalls => read_to_close(&mut tcp, Duration::from_secs(5)).await,
    };
    drop(tcp);
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The listener's counters and gauges as `/stats` lists them: name (without `http.h.`) to
/// value; empty when the proxy does not answer.
async fn stats(proxy: &Proxy) -> BTreeMap<String, i64> {
    proxy
        .admin(STATS)
        .await
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((
                name.strip_prefix("http.h.")?.to_owned(),
                value.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// The counters once no connection and no request is active on the listener (at most 10 s).
async fn settled(proxy: &Proxy) -> BTreeMap<String, i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = stats(proxy).await;
        let idle = ["downstream_cx_active", "downstream_rq_active"]
            .iter()
            .all(|gauge| now.get(*gauge) == Some(&0));
        if idle || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `client` moved in [`COUNTERS`] on `proxy` (listening on `addr`), and its answer's
/// first line.
async fn moved(proxy: &Proxy, addr: SocketAddr, client: Client) -> (String, BTreeMap<String, i64>) {
    let before = settled(proxy).await;
    let answer = run_client(client, addr).await;
    let after = settled(proxy).await;
    let moved = COUNTERS
        .iter()
        .map(|name| {
            let delta =
                after.get(*name).copied().unwrap_or(0) - before.get(*name).copied().unwrap_or(0);
            ((*name).to_owned(), delta)
        })
        .filter(|(_, delta)| *delta != 0)
        .collect();
    (answer, moved)
}

/// Starts `kind` on its own ports: the proxy and its listener's address, once its admin lists
/// the listener's stats and the listener takes connections (at most 30 s).
async fn start(kind: Kind, upstream: SocketAddr) -> (Proxy, SocketAddr) {
    let (admin, port) = (weir_tests::free_port(), weir_tests::free_port());
    let proxy = Proxy::spawn(kind, &proxy_config(admin, port, upstream));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // The admin listener first: weir's panics on a refused connection.
        let ready = TcpStream::connect(("127.0.0.1", admin)).await.is_ok()
            && TcpStream::connect(addr).await.is_ok()
            && stats(&proxy).await.contains_key("downstream_rq_total");
        if ready {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind:?} did not start\n{}",
            proxy.log_report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The probe connection above is counted; let it close.
    settled(&proxy).await;
    (proxy, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_resets_are_counted_as_envoy_counts_them() {
    let upstream = upstream().await;
    let (weir, weir_addr) = start(Kind::Weir, upstream).await;
    let (envoy, envoy_addr) = start(Kind::Envoy, upstream).await;

    // Each client, and what it moves on both (Envoy 1.40, measured), in COUNTERS order:
    // http1_total, protocol_error, rq_total, rx_reset, tx_reset, 2xx, 4xx, 5xx, idle_timeout.
    let cases: &[(Client, [i64; 9])] = &[
        (Client::Baseline, [1, 0, 1, 0, 0, 1, 0, 0, 0]),
        (Client::BodyCut, [1, 0, 1, 1, 0, 0, 0, 0, 0]),
        (Client::CloseBeforeAnswer, [1, 0, 1, 1, 0, 0, 0, 0, 0]),
        (Client::ResetBeforeAnswer, [1, 0, 1, 1, 0, 0, 0, 0, 0]),
        (Client::HalfCloseBeforeAnswer, [1, 0, 1, 1, 0, 0, 0, 0, 0]),
        (Client::HeadCut, [1, 0, 1, 1, 0, 0, 0, 0, 0]),
        (Client::Garbage, [1, 1, 1, 1, 0, 0, 1, 0, 0]),
        (Client::BadContentLength, [1, 1, 1, 1, 0, 0, 1, 0, 0]),
        (Client::BadChunk, [1, 1, 1, 1, 0, 0, 1, 0, 0]),
        (Client::HeadTooLarge, [1, 1, 1, 1, 0, 0, 1, 0, 0]),
        (Client::Http10, [1, 1, 1, 1, 0, 0, 1, 0, 0]),
        (Client::StopsReading, [1, 0, 1, 1, 0, 1, 0, 0, 0]),
        (Client::CloseWhenIdle, [1, 0, 1, 0, 0, 1, 0, 0, 0]),
        (Client::UpstreamCut, [1, 0, 1, 1, 1, 1, 0, 0, 0]),
        (Client::UpstreamStalls, [1, 0, 1, 1, 1, 1, 0, 0, 1]),
    ];
    let mut failures = Vec::new();
    for (client, expected) in cases {
        let ((ours_answer, mut ours), (theirs_answer, theirs)) = tokio::join!(
            moved(&weir, weir_addr, *client),
            moved(&envoy, envoy_addr, *client)
        );
        let expected: BTreeMap<String, i64> = COUNTERS
            .iter()
            .zip(expected)
            .filter(|(_, value)| **value != 0)
            .map(|(name, value)| ((*name).to_owned(), *value))
            .collect();
        if matches!(client, Client::BodyCut) {
            // Left as it is: weir answers the cut body 400 (into the closed connection) and
            // counts that answer; Envoy, whose client is gone, answers nothing.
            assert_eq!(ours.remove("downstream_rq_4xx"), Some(1), "{client:?}");
        }
        let status = |answer: &str| answer.split(' ').nth(1).unwrap_or_default().to_owned();
        if theirs != expected || ours != theirs || status(&ours_answer) != status(&theirs_answer) {
            failures.push(format!(
                "{client:?}:\n  weir  {ours:?} {ours_answer:?}\n  envoy {theirs:?} {theirs_answer:?}\n  expected {expected:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "counters moved differently:\n{}\n{}",
        failures.join("\n"),
        weir.log_report()
    );
}
