//! Remote Wasm code (`vm_config.code.remote`): a module served over HTTP by a server of the
//! test, behind a static cluster, fetched by weir through that cluster, checked by sha256 and
//! run; a wrong digest refused (on reload the old module keeps serving); a server that fails
//! at start-up retried, then the listener following `fail_open` as Envoy 1.40 does (skip the
//! filter, or 503); no fetch again while the digest stays; an oversized module refused.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting as _;
use weir_tests::wasm::{fixture, set_filters, start_with_env, wasm_filter};
use weir_tests::{H1Upstream, Weir, client, sha256_hex, wait_until};

/// Most bytes weir fetches for a module (`config::file::MAX_WASM_MODULE_BYTES`).
const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;

/// What the module server answers for a path.
#[derive(Clone)]
enum Answer {
    /// 200 with these bytes.
    Module(Arc<Vec<u8>>),
    /// This status, no body.
    Status(u16),
    /// Nothing, for this long, then close.
    Hang(Duration),
    /// 200 with a chunked body of this many bytes (no content-length).
    Chunked(usize),
}

/// An HTTP/1.1 server that answers each request by its path and records the paths it saw.
struct ModuleServer {
    addr: SocketAddr,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl ModuleServer {
    async fn start() -> ModuleServer {
        Self::start_with(None).await
    }

    /// Serves over TLS with `tls` (the certificate and key of `weir_tests::tls::self_signed`).
    async fn start_with(tls: Option<&weir_tests::tls::TlsFiles>) -> ModuleServer {
        let acceptor = tls.map(|files| {
            use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
            let key = PrivateKeyDer::from_pem_file(&files.key).expect("key");
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(files.cert_der.clone())], key)
            .expect("server certificate");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answers: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (a, s) = (answers.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (a, s) = (a.clone(), s.clone());
                match acceptor.clone() {
                    None => {
                        tokio::spawn(serve(stream, a, s));
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            if let Ok(Ok(tls)) = tokio::time::timeout(
                                Duration::from_secs(10),
                                acceptor.accept(stream),
                            )
                            .await
                            {
                                serve(tls, a, s).await;
                            }
                        });
                    }
                }
            }
        });
        ModuleServer {
            addr,
            answers,
            seen,
        }
    }

    fn answer(&self, path: &str, answer: Answer) {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), answer);
    }

    /// How many requests for `path` it has seen.
    fn requests(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

/// One request per connection (the answer says `connection: close`).
async fn serve(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split(' ').nth(1).unwrap_or("").to_owned();
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(path.clone());
    let answer = answers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&path)
        .cloned()
        .unwrap_or(Answer::Status(404));
    let _ = match answer {
        Answer::Module(bytes) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                bytes.len()
            );
            match stream.write_all(head.as_bytes()).await {
                Ok(()) => stream.write_all(&bytes).await,
                Err(e) => Err(e),
            }
        }
        Answer::Status(code) => {
            let head =
                format!("HTTP/1.1 {code} Nope\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await
        }
        Answer::Hang(how_long) => {
            tokio::time::sleep(how_long).await;
            Ok(())
        }
        Answer::Chunked(total) => {
            let chunk = vec![0u8; 1 << 20];
            let mut result = stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                )
                .await;
            let mut left = total;
            while left > 0 && result.is_ok() {
                let n = left.min(chunk.len());
                result = stream.write_all(format!("{n:x}\r\n").as_bytes()).await;
                if result.is_ok() {
                    result = stream.write_all(&chunk[..n]).await;
                }
                if result.is_ok() {
                    result = stream.write_all(b"\r\n").await;
                }
                left -= n;
            }
            if result.is_ok() {
                result = stream.write_all(b"0\r\n\r\n").await;
            }
            result
        }
    };
    let _ = stream.shutdown().await;
}

/// The `code` of a filter fetched from `http://modules.test<path>` through cluster `modules`.
fn remote_code(path: &str, sha256: &str, num_retries: u32, base_ms: u64) -> Value {
    json!({
        "remote": {
            "http_uri": {
                "uri": format!("http://modules.test{path}"),
                "cluster": "modules",
                "timeout": "5s"
            },
            "sha256": sha256,
            "retry_policy": {
                "num_retries": num_retries,
                "retry_back_off": { "base_interval": format!("{}s", base_ms as f64 / 1000.0) }
            }
        }
    })
}

/// A config: listener -> the `headers` fixture plugin (configuration `configuration`) whose
/// code is `code` -> `up`; plus cluster `modules` at `modules`.
fn remote_config(
    ports: Ports,
    up: SocketAddr,
    modules: SocketAddr,
    code: Value,
    configuration: &str,
    fail_open: bool,
) -> Value {
    let mut config = config::simple(ports, &[up]);
    let mut filter = wasm_filter("remote", &fixture("headers"), configuration, fail_open);
    filter["typed_config"]["config"]["vm_config"]["code"] = code;
    set_filters(&mut config, vec![filter]);
    config["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
        .push(config::static_cluster("modules", &[modules]));
    config
}

fn headers_module() -> (Arc<Vec<u8>>, String) {
    let bytes = std::fs::read(fixture("headers")).expect("headers fixture");
    let sha = sha256_hex(&bytes);
    (Arc::new(bytes), sha)
}

async fn send(ports: Ports) -> client::Resp {
    let req = Request::get("/")
        .header("host", "example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    tokio::time::timeout(
        Duration::from_secs(20),
        client::h1_request(ports.http_addr(), req),
    )
    .await
    .expect("answered within 20 s")
    .expect("exchange")
}

fn write_config(weir: &Weir, config: &Value) {
    let temp = weir.config_path().with_extension("tmp");
    std::fs::write(
        &temp,
        serde_json::to_string_pretty(config).expect("serialize"),
    )
    .expect("write config");
    std::fs::rename(&temp, weir.config_path()).expect("rename config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_module_runs_and_is_fetched_again_only_when_the_digest_changes() {
    let up = H1Upstream::start("up").await;
    let server = ModuleServer::start().await;
    let (module, sha) = headers_module();
    server.answer("/headers.wasm", Answer::Module(module.clone()));
    let ports = Ports::new();
    let config = remote_config(
        ports,
        up.addr,
        server.addr,
        remote_code("/headers.wasm", &sha, 1, 100),
        "v1",
        false,
    );
    let weir = start_with_env(&config, 1, &[("WEIR_RELOAD_INTERVAL_MS", "50")]).await;

    let resp = send(ports).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-wasm-response"), "200 200", "the module ran");
    assert_eq!(resp.header("x-wasm-config"), "v1");
    assert_eq!(server.requests("/headers.wasm"), 1);
    let stats = weir.stats().await;
    assert_eq!(
        stats.get("weir_wasm_remote_load_fetch_successes", &[]),
        Some(1.0)
    );
    assert_eq!(
        stats.get("weir_wasm_remote_load_cache_misses", &[]),
        Some(1.0)
    );
    assert_eq!(
        stats.get("weir_wasm_remote_load_fetch_failures", &[]),
        Some(0.0)
    );
    let stored = weir
        .dir()
        .join("wasm-cache")
        .join("modules")
        .join(format!("{sha}.wasm"));
    assert_eq!(
        std::fs::read(&stored).expect("module stored by digest"),
        *module
    );

    // The same config again: no fetch.
    let (status, body) = weir.admin_post("/reload").await;
    assert_eq!(status, 200, "{body}");
    // A changed config with the same sha256, picked up by the file watcher: no fetch either.
    let v2 = remote_config(
        ports,
        up.addr,
        server.addr,
        remote_code("/headers.wasm", &sha, 1, 100),
        "v2",
        false,
    );
    write_config(&weir, &v2);
    let mut applied = false;
    for _ in 0..100 {
        if send(ports).await.header("x-wasm-config") == "v2" {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        applied,
        "the watcher reloaded the changed config within 5 s"
    );
    assert_eq!(
        server.requests("/headers.wasm"),
        1,
        "same digest: no new fetch"
    );
    assert!(weir.stat("weir_wasm_remote_load_cache_hits", &[]).await >= 2.0);

    // A new digest (another path serving the same module with one more custom section, so
    // its digest differs) is fetched.
    let mut other = module.to_vec();
    other.extend_from_slice(&[0, 4, 3, b'w', b'e', b'r']);
    let other_sha = sha256_hex(&other);
    server.answer("/other.wasm", Answer::Module(Arc::new(other)));
    let v3 = remote_config(
        ports,
        up.addr,
        server.addr,
        remote_code("/other.wasm", &other_sha, 1, 100),
        "v3",
        false,
    );
    write_config(&weir, &v3);
    let (status, body) = weir.admin_post("/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(send(ports).await.header("x-wasm-config"), "v3");
    assert_eq!(server.requests("/other.wasm"), 1);
    assert_eq!(
        weir.stat("weir_wasm_remote_load_fetch_successes", &[])
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_on_reload_is_refused_and_the_old_module_keeps_serving() {
    let up = H1Upstream::start("up").await;
    let server = ModuleServer::start().await;
    let (module, sha) = headers_module();
    server.answer("/headers.wasm", Answer::Module(module));
    let ports = Ports::new();
    let config = remote_config(
        ports,
        up.addr,
        server.addr,
        remote_code("/headers.wasm", &sha, 1, 100),
        "v1",
        false,
    );
    // No file watch: the reload below is the only one.
    let weir = start_with_env(&config, 1, &[("WEIR_RELOAD_INTERVAL_MS", "0")]).await;
    assert_eq!(send(ports).await.header("x-wasm-config"), "v1");

    let wrong = "0".repeat(64);
    let bad = remote_config(
        ports,
        up.addr,
        server.addr,
        remote_code("/headers.wasm", &wrong, 1, 50),
        "v2",
        false,
    );
    write_config(&weir, &bad);
    let (status, body) = weir.admin_post("/reload").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("differs"), "{body}");
    let log = weir.log();
    let refused = log
        .lines()
        .find(|line| line.contains("Wasm module refused: its sha256 differs"))
        .unwrap_or_else(|| panic!("no refusal line\n{}", weir.log_report()));
    assert!(
        refused.contains("http://modules.test/headers.wasm"),
        "{refused}"
    );
    assert!(refused.contains(&format!("expected={wrong}")), "{refused}");
    assert!(refused.contains(&format!("actual={sha}")), "{refused}");
    assert_eq!(
        server.requests("/headers.wasm"),
        1 + 2,
        "the attempt and its retry"
    );

    let resp = send(ports).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-wasm-config"), "v1", "the old module serves");
    assert_eq!(
        weir.stat("weir_server_config_reloads_total", &[("result", "failure")])
            .await,
        1.0
    );
    assert_eq!(
        weir.stat("weir_wasm_remote_load_fetch_failures", &[]).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_server_at_start_is_retried_then_a_fail_closed_filter_answers_503() {
    let up = H1Upstream::start("up").await;
    let server = ModuleServer::start().await;
    server.answer("/headers.wasm", Answer::Status(503));
    let (_, sha) = headers_module();
    let ports = Ports::new();
    let config = remote_config(
        ports,
        up.addr,
        server.addr,
        remote_code("/headers.wasm", &sha, 3, 50),
        "v1",
        false,
    );
    let weir = start_with_env(&config, 1, &[]).await;
    assert_eq!(server.requests("/headers.wasm"), 4, "1 attempt + 3 retries");

    let resp = send(ports).await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(
        resp.header("x-wasm-response"),
        "",
        "the module does not run"
    );
    assert_eq!(up.requests().len(), 0, "nothing reaches the upstream");
    assert_eq!(
        weir.stat("weir_wasm_remote_load_fetch_failures", &[]).await,
        1.0
    );
    assert!(
        weir.log()
            .contains("Wasm module not fetched after 4 attempt(s)"),
        "{}",
        weir.log_report()
    );

    // The server comes back: nothing is fetched by itself (as in Envoy); a reload fetches the
    // module and swaps it in.
    server.answer("/headers.wasm", Answer::Module(headers_module().0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(send(ports).await.status, 503);
    assert_eq!(server.requests("/headers.wasm"), 4);
    let (status, body) = weir.admin_post("/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.requests("/headers.wasm"), 5);
    let resp = send(ports).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-wasm-response"), "200 200", "the module runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_at_start_then_a_fail_open_filter_is_skipped() {
    let up = H1Upstream::start("up").await;
    // A port nothing listens on (and nothing else takes while the test runs).
    let (_refusing, down) = weir_tests::refusing_addr();
    let (_, sha) = headers_module();
    let ports = Ports::new();
    let config = remote_config(
        ports,
        up.addr,
        down,
        remote_code("/headers.wasm", &sha, 2, 50),
        "v1",
        true,
    );
    let weir = start_with_env(&config, 1, &[]).await;
    let log = weir.log();
    let attempts = log.matches("Wasm module fetch failed").count();
    assert_eq!(attempts, 3, "1 attempt + 2 retries\n{}", weir.log_report());

    let resp = send(ports).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-wasm-response"), "", "the filter is skipped");
    assert_eq!(up.requests().len(), 1);
    assert_eq!(
        weir.stat("weir_wasm_remote_load_fetch_failures", &[]).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_is_not_bound_while_its_module_is_being_fetched() {
    let up = H1Upstream::start("up").await;
    let server = ModuleServer::start().await;
    server.answer("/headers.wasm", Answer::Hang(Duration::from_secs(3)));
    let (_, sha) = headers_module();
    let ports = Ports::new();
    let mut config = remote_config(
        ports,
        up.addr,
        server.addr,
        remote_code("/headers.wasm", &sha, 0, 50),
        "v1",
        true,
    );
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"]["remote"]["http_uri"]
        ["timeout"] = json!("1.5s");
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("weir.yaml");
    std::fs::write(&config_path, config.to_string()).expect("write");
    let mut cmd = std::process::Command::new(weir_tests::weir_bin());
    cmd.arg("-c")
        .arg(&config_path)
        .args(["--log-level", "debug", "--concurrency", "1"])
        .env("WEIR_WASM_CACHE_DIR", dir.path().join("cache"));
    let mut weir =
        Weir::spawn_command(cmd, dir, config_path, weir_tests::weir::admin_addr(&config));

    assert!(
        wait_until(Duration::from_secs(10), || server.requests("/headers.wasm")
            == 1)
        .await,
        "the fetch started"
    );
    let refused = tokio::net::TcpStream::connect(ports.http_addr()).await;
    assert!(
        refused.is_err(),
        "the listener accepts before its module is there"
    );
    let (status, body) = weir.admin_get("/ready").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "INITIALIZING\n"),
        "as Envoy's /ready"
    );

    weir.wait_ready().await;
    assert_eq!(weir.admin_get("/ready").await, (200, "LIVE\n".to_owned()));
    let resp = send(ports).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-wasm-response"), "", "fail_open: skipped");
    assert!(
        weir.log().contains("no whole answer within 1.5s"),
        "{}",
        weir.log_report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_module_is_refused() {
    let up = H1Upstream::start("up").await;
    let server = ModuleServer::start().await;
    server.answer("/big.wasm", Answer::Chunked(MAX_MODULE_BYTES + 1));
    let (_, sha) = headers_module();
    let ports = Ports::new();
    let config = remote_config(
        ports,
        up.addr,
        server.addr,
        remote_code("/big.wasm", &sha, 0, 50),
        "v1",
        false,
    );
    let weir = start_with_env(&config, 1, &[]).await;
    assert_eq!(server.requests("/big.wasm"), 1);
    assert!(
        weir.log()
            .contains("the module is larger than 67108864 bytes"),
        "{}",
        weir.log_report()
    );
    assert_eq!(send(ports).await.status, 503);
    assert_eq!(
        weir.stat("weir_wasm_remote_load_fetch_failures", &[]).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_takes_the_module_from_the_store_and_a_corrupt_one_is_fetched_again() {
    let up = H1Upstream::start("up").await;
    let server = ModuleServer::start().await;
    let (module, sha) = headers_module();
    server.answer("/headers.wasm", Answer::Module(module));
    let cache = tempfile::tempdir().expect("cache dir");
    let cache_dir = cache.path().to_str().expect("utf-8 path").to_owned();
    let env = [("WEIR_WASM_CACHE_DIR", cache_dir.as_str())];
    let ports = Ports::new();
    let config = remote_config(
        ports,
        up.addr,
        server.addr,
        remote_code("/headers.wasm", &sha, 0, 50),
        "v1",
        false,
    );

    let first = start_with_env(&config, 1, &env).await;
    assert_eq!(send(ports).await.header("x-wasm-response"), "200 200");
    drop(first);
    assert_eq!(server.requests("/headers.wasm"), 1);

    let second = start_with_env(&config, 1, &env).await;
    assert_eq!(send(ports).await.header("x-wasm-response"), "200 200");
    assert_eq!(server.requests("/headers.wasm"), 1, "taken from the store");
    assert_eq!(
        second.stat("weir_wasm_remote_load_cache_hits", &[]).await,
        1.0
    );
    assert_eq!(
        second.stat("weir_wasm_remote_load_cache_misses", &[]).await,
        0.0
    );
    drop(second);

    let stored = cache.path().join("modules").join(format!("{sha}.wasm"));
    std::fs::write(&stored, b"\0asm\x01\0\0\0tampered").expect("corrupt the stored module");
    let third = start_with_env(&config, 1, &env).await;
    assert_eq!(send(ports).await.header("x-wasm-response"), "200 200");
    assert_eq!(server.requests("/headers.wasm"), 2, "fetched again");
    assert!(
        third.log().contains("does not match its digest"),
        "{}",
        third.log_report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_is_fetched_over_tls_when_the_cluster_says_so() {
    let up = H1Upstream::start("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = weir_tests::tls::self_signed(dir.path());
    let server = ModuleServer::start_with(Some(&tls)).await;
    let (module, sha) = headers_module();
    server.answer("/headers.wasm", Answer::Module(module));
    let ports = Ports::new();
    let mut config = remote_config(
        ports,
        up.addr,
        server.addr,
        remote_code("/headers.wasm", &sha, 0, 50),
        "v1",
        false,
    );
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"]["remote"]["http_uri"]
        ["uri"] = json!("https://localhost/headers.wasm");
    config["static_resources"]["clusters"][1]["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "localhost",
            "common_tls_context": {
                "validation_context": {"trusted_ca": {"filename": tls.cert.display().to_string()}}
            }
        }
    });
    let weir = start_with_env(&config, 1, &[]).await;
    assert_eq!(server.requests("/headers.wasm"), 1);
    let resp = send(ports).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("x-wasm-response"),
        "200 200",
        "{}",
        weir.log_report()
    );
}

/// A network (L4) Wasm filter whose remote module could not be fetched: fail closed closes
/// every connection before the upstream; fail open lets the bytes through without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfetched_network_filter_follows_fail_open() {
    use weir_tests::tcp_server::{Mode, TcpServer};
    let server = ModuleServer::start().await;
    server.answer("/guard.wasm", Answer::Status(500));
    let (_, sha) = headers_module();
    for fail_open in [false, true] {
        let echo = TcpServer::start(Mode::Echo).await;
        let ports = Ports::new();
        let mut listener =
            config::tcp_proxy_listener("tcp_in", ports.http, "tcp_in", "upstream", None);
        let filter = json!({
            "name": "envoy.filters.network.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
                "config": {
                    "name": "guard",
                    "vm_config": { "code": remote_code("/guard.wasm", &sha, 0, 50) },
                    "fail_open": fail_open
                }
            }
        });
        let chain = &mut listener["filter_chains"][0]["filters"];
        let tcp_proxy = chain[0].clone();
        *chain = json!([filter, tcp_proxy]);
        let config = config::bootstrap(
            ports.admin,
            vec![listener],
            vec![
                config::static_cluster("upstream", &[echo.addr]),
                config::static_cluster("modules", &[server.addr]),
            ],
        );
        let _weir = start_with_env(&config, 1, &[]).await;

        let mut stream = tokio::net::TcpStream::connect(ports.http_addr())
            .await
            .expect("connect");
        let _ = stream.write_all(b"ping").await;
        let mut back = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            (&mut stream).take(4).read_to_end(&mut back),
        )
        .await
        .expect("answered or closed within 10 s");
        if fail_open {
            assert!(read.is_ok(), "{read:?}");
            assert_eq!(
                back, b"ping",
                "fail open: the bytes pass without the filter"
            );
            assert_eq!(echo.accepted(), 1);
        } else {
            assert!(back.is_empty(), "fail closed: nothing comes back");
            assert_eq!(
                echo.accepted(),
                0,
                "fail closed: the upstream is never reached"
            );
        }
    }
}
