//! HTTP/1.0 as Envoy 1.40's connection manager takes it: the same config (one listener that
//! serves only HTTP/1.1, Envoy's default, and one with `http_protocol_options.accept_http_10`
//! and `default_host_for_http_10`) and the same raw requests through Envoy and weir, then
//! their answers, access log lines and `/stats` compared.

use envoy_check::envoy::Envoy;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use weir_tests::Weir;
use weir_tests::client::raw_exchange_for;
use weir_tests::config;

/// Every log field these requests make deterministic.
const FORMAT: &str = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %PROTOCOL% %REQ(:METHOD)% %REQ(:AUTHORITY)% %REQ(:PATH)% %BYTES_RECEIVED% %BYTES_SENT%\n";

/// The requests: HTTP/1.0 with and without a host, asking for keep-alive, HTTP/0.9 (without
/// a version, then naming it), then HTTP/1.1.
const REQUESTS: &[&[u8]] = &[
    b"GET /a HTTP/1.0\r\nHost: a.example\r\n\r\n",
    b"GET /b HTTP/1.0\r\n\r\n",
    b"GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /e\r\n",
    b"GET /f HTTP/0.9\r\n\r\n",
    b"GET /d HTTP/1.1\r\nHost: d.example\r\nConnection: close\r\n\r\n",
];

/// A connection manager `stat_prefix` answering 200 `hi` on every path, logging to `log`.
fn hcm(stat_prefix: &str, log: &Path) -> Value {
    let mut hcm = config::hcm(
        stat_prefix,
        vec![config::vhost(
            "all",
            &["*"],
            vec![config::direct("/", 200, "hi")],
        )],
    );
    hcm["access_log"] = json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": log.display().to_string(),
            "log_format": {"text_format_source": {"inline_string": FORMAT}},
        },
    }]);
    hcm
}

/// Listener `strict` (HTTP/1.1 only) on `strict_port`, listener `lenient` (HTTP/1.0
/// accepted, default host `dflt.example`) on `lenient_port`, both logging into `dir`.
fn http10_config(admin: u16, strict_port: u16, lenient_port: u16, dir: &Path) -> Value {
    let mut lenient = hcm("lenient", &dir.join("lenient.log"));
    lenient["http_protocol_options"] =
        json!({"accept_http_10": true, "default_host_for_http_10": "dflt.example"});
    config::bootstrap(
        admin,
        vec![
            config::listener(
                "strict",
                strict_port,
                hcm("strict", &dir.join("strict.log")),
            ),
            config::listener("lenient", lenient_port, lenient),
        ],
        vec![],
    )
}

/// A response with its `date` masked.
fn masked(response: &str) -> String {
    response
        .lines()
        .map(|line| {
            if line.to_ascii_lowercase().starts_with("date:") {
                "date: D"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The answers to [`REQUESTS`] on `addr`, each on a fresh connection; the one that asked to
/// keep its connection is read for at most a second (then the connection is dropped).
async fn exchange(addr: SocketAddr) -> Vec<String> {
    let mut answers = Vec::new();
    for request in REQUESTS {
        let answer = raw_exchange_for(addr, request, Duration::from_secs(1)).await;
        answers.push(masked(&answer));
    }
    answers
}

/// The stats both proxies keep for these requests, as `/stats` text.
const STATS: &str = "/stats?filter=%5Ehttp%5C.(strict%7Clenient)%5C.downstream_(cx_protocol_error%7Crq_total%7Crq_2xx%7Crq_4xx)%24";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_is_refused_or_served_as_envoy() {
    let port = weir_tests::free_port;
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let (weir_strict, weir_lenient) = (port(), port());
    let (envoy_strict, envoy_lenient) = (port(), port());
    let weir = Weir::start(&http10_config(
        port(),
        weir_strict,
        weir_lenient,
        weir_dir.path(),
    ))
    .await;
    let envoy_config = http10_config(port(), envoy_strict, envoy_lenient, envoy_dir.path());
    let envoy = Envoy::start_config(&envoy_config.to_string(), envoy_dir.path());
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    for (name, weir_port, envoy_port) in [
        ("strict", weir_strict, envoy_strict),
        ("lenient", weir_lenient, envoy_lenient),
    ] {
        let ours = exchange(local(weir_port)).await;
        let theirs = exchange(local(envoy_port)).await;
        for ((request, ours), theirs) in REQUESTS.iter().zip(&ours).zip(&theirs) {
            // Envoy's `server` is `envoy`, weir's `weir`.
            let theirs = theirs.replace("server: envoy", "server: weir");
            let mut ours_sorted: Vec<&str> = ours.lines().collect();
            let mut theirs_sorted: Vec<&str> = theirs.lines().collect();
            // The status line first, then the headers in any order, then the body.
            ours_sorted[1..].sort_unstable();
            theirs_sorted[1..].sort_unstable();
            assert_eq!(
                ours_sorted,
                theirs_sorted,
                "{name} {:?}: weir (left) and Envoy (right) differ\n{}",
                String::from_utf8_lossy(request),
                weir.log_report()
            );
        }
        let log = format!("{name}.log");
        let ours =
            weir_tests::wait_for_lines(&weir_dir.path().join(&log), 6, Duration::from_secs(10))
                .await;
        let theirs =
            weir_tests::wait_for_lines(&envoy_dir.path().join(&log), 6, Duration::from_secs(10))
                .await;
        assert_eq!(ours, theirs, "{log}: weir (left) and Envoy (right) differ");
        if name == "strict" {
            assert_eq!(ours[0], "426 DPE low_version HTTP/1.1 - - - 0 16");
            assert!(ours[..5].iter().all(|line| line == &ours[0]), "{ours:#?}");
        } else {
            assert_eq!(
                ours[1],
                "200 - direct_response HTTP/1.0 GET dflt.example /b 0 2"
            );
            assert_eq!(
                ours[3],
                "200 - direct_response HTTP/1.0 GET dflt.example /e 0 2"
            );
        }
    }

    let envoy_admin: SocketAddr = envoy.admin.parse().expect("envoy admin address");
    let ours = weir.admin_get(STATS).await;
    let theirs = weir_tests::client::get_host(envoy_admin, "localhost", STATS)
        .await
        .expect("envoy /stats");
    assert_eq!(
        ours.1,
        "http.lenient.downstream_cx_protocol_error: 0\nhttp.lenient.downstream_rq_2xx: 6\n\
         http.lenient.downstream_rq_4xx: 0\nhttp.lenient.downstream_rq_total: 6\n\
         http.strict.downstream_cx_protocol_error: 5\nhttp.strict.downstream_rq_2xx: 1\n\
         http.strict.downstream_rq_4xx: 5\nhttp.strict.downstream_rq_total: 6\n"
    );
    assert_eq!(
        ours.1,
        theirs.text(),
        "/stats: weir (left) and Envoy (right)"
    );
}

/// Requests sent one after the other on one connection: HTTP/1.1 first, then a lower
/// version (HTTP/1.0 with and without keep-alive, HTTP/0.9; the last pipelined).
const SEQUENCES: &[&[&[u8]]] = &[
    &[
        b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n",
        b"GET /b HTTP/1.0\r\nHost: b.example\r\n\r\n",
    ],
    &[
        b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n",
        b"GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET /d HTTP/1.1\r\nHost: d.example\r\n\r\n",
    ],
    &[b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n", b"GET /e\r\n"],
    // Pipelined: both in one write.
    &[b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\nGET /b HTTP/1.0\r\n\r\n"],
];

/// Sends `requests` on one connection to `addr`, 200 ms apart, and reads everything that
/// comes back until the connection closes (`<closed>`) or stays quiet for a second
/// (`<open>`).
async fn sequence(addr: SocketAddr, requests: &[&[u8]]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    for request in requests {
        // A write after the proxy closed may fail; what it answered is still read.
        let _ = tcp.write_all(request).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    }
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break "<closed>",
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break "<open>",
        }
    };
    format!("{}{end}", String::from_utf8_lossy(&answer))
}

/// `answer` with each response's header lines sorted (the status line and the body kept
/// in place), `date` masked and Envoy's `server` read as weir's; each status line starts a
/// line of its own.
fn normalized(answer: &str) -> String {
    let answer = answer
        .replace("\r\n", "\n")
        .replace("server: envoy", "server: weir")
        .replace("HTTP/1.", "\nHTTP/1.");
    let mut out: Vec<String> = Vec::new();
    let mut headers: Vec<String> = Vec::new();
    let mut in_head = false;
    for line in answer.split('\n') {
        if line.starts_with("HTTP/1.") {
            out.push(line.to_owned());
            in_head = true;
        } else if in_head && line.is_empty() {
            headers.sort_unstable();
            out.append(&mut headers);
            out.push(String::new());
            in_head = false;
        } else if in_head {
            let masked = line.to_ascii_lowercase().starts_with("date:");
            headers.push(if masked {
                "date: D".to_owned()
            } else {
                line.to_owned()
            });
        } else {
            out.push(line.to_owned());
        }
    }
    headers.sort_unstable();
    out.append(&mut headers);
    out.join("\n")
}

/// HTTP/1.0 (or 0.9) after HTTP/1.1 on one kept-alive connection, as Envoy 1.40: without
/// `accept_http_10` it is answered `HTTP/1.1 426` and the connection closed (pipelined
/// too); with it, served in HTTP/1.0 (closing unless it asked for keep-alive, then
/// HTTP/1.1 goes on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_after_http11_on_one_connection_as_envoy() {
    let port = weir_tests::free_port;
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let envoy_dir = tempfile::tempdir().expect("tempdir");
    let (weir_strict, weir_lenient) = (port(), port());
    let (envoy_strict, envoy_lenient) = (port(), port());
    let weir = Weir::start(&http10_config(
        port(),
        weir_strict,
        weir_lenient,
        weir_dir.path(),
    ))
    .await;
    let envoy_config = http10_config(port(), envoy_strict, envoy_lenient, envoy_dir.path());
    let envoy = Envoy::start_config(&envoy_config.to_string(), envoy_dir.path());
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut seen = Vec::new();
    for (name, weir_port, envoy_port) in [
        ("strict", weir_strict, envoy_strict),
        ("lenient", weir_lenient, envoy_lenient),
    ] {
        for requests in SEQUENCES {
            let ours = normalized(&sequence(local(weir_port), requests).await);
            let theirs = normalized(&sequence(local(envoy_port), requests).await);
            assert_eq!(
                ours,
                theirs,
                "{name} {:?}: weir (left) and Envoy (right) differ\n{}",
                requests
                    .iter()
                    .map(|r| String::from_utf8_lossy(r))
                    .collect::<Vec<_>>(),
                weir.log_report()
            );
            seen.push(ours);
        }
    }
    // The refusals are Envoy's: in HTTP/1.1, closing the connection.
    assert!(
        seen[0].contains("\nHTTP/1.1 426 Upgrade Required\n"),
        "{}",
        seen[0]
    );
    assert!(seen[0].ends_with("Upgrade Required<closed>"), "{}", seen[0]);
    assert!(
        seen[3].contains("\nHTTP/1.1 426 Upgrade Required\n"),
        "{}",
        seen[3]
    );
    assert!(seen[5].contains("\nHTTP/1.0 200 OK\n"), "{}", seen[5]);
    assert!(seen[5].ends_with("hi<open>"), "{}", seen[5]);

    let envoy_admin: SocketAddr = envoy.admin.parse().expect("envoy admin address");
    let ours = weir.admin_get(STATS).await;
    let theirs = weir_tests::client::get_host(envoy_admin, "localhost", STATS)
        .await
        .expect("envoy /stats");
    assert_eq!(
        ours.1,
        theirs.text(),
        "/stats: weir (left) and Envoy (right)"
    );
}
