//! Times what an access log entry costs a worker per request, apart from the network: the
//! entry opened from a request head, the response head taken, the response body read to its
//! end (which renders the line and queues it for the sink's writer thread).
//!
//! `cargo run --release -p weir --example access_log_bench -- [N] [FORMAT]` runs N requests
//! (default 200,000) through an entry with Envoy's default format (or FORMAT), logged to a
//! file in the temporary directory, and prints one line:
//! `access_log_ns_per_request entry=... baseline=... n=...` (`baseline`: the same loop with no
//! entry: the request and response built, the body read).

use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use weir::access_log::AccessLogs;
use weir::access_log::http::{Entry, UpstreamSeen};
use weir::wire::ConnectionInfo;

// As the weir binary: the allocator is part of what a request costs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The most requests one run makes.
const MAX_REQUESTS: usize = 10_000_000;

fn request() -> http::Request<weir::body::Body> {
    http::Request::builder()
        .uri("http://bench.example/some/path?q=1")
        .header("user-agent", "h2load nghttp2/1.52.0")
        .header("x-request-id", "4f2a0b6e-8c1d-4e57-9a3b-2d6c8e1f0a4b")
        .header("accept", "*/*")
        .body(weir::body::empty())
        .unwrap_or_default()
}

fn response() -> http::Response<weir::body::Body> {
    let mut response = http::Response::new(weir::body::full(Bytes::from_static(b"hello\n")));
    response
        .headers_mut()
        .insert("content-length", http::HeaderValue::from_static("6"));
    response
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = match args.first().map(|n| n.parse::<usize>()) {
        None => 200_000,
        Some(Ok(n)) if (1..=MAX_REQUESTS).contains(&n) => n,
        Some(_) => {
            eprintln!("N must be a number from 1 to {MAX_REQUESTS}");
            return std::process::ExitCode::from(2);
        }
    };
    let path = std::env::temp_dir().join(format!("access_log_bench.{}.log", std::process::id()));
    let mut logger = serde_json::json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
        }
    });
    if let Some(format) = args.get(1) {
        logger["typed_config"]["log_format"] =
            serde_json::json!({ "text_format_source": { "inline_string": format } });
    }
    let logs = match AccessLogs::from_config(&[logger], "access_log") {
        Ok(Some(logs)) => logs,
        Ok(None) => unreachable!("one logger was given"),
        Err(error) => {
            eprintln!("access log config: {error:?}");
            return std::process::ExitCode::from(2);
        }
    };
    let conn = ConnectionInfo {
        remote: "127.0.0.1:40000"
            .parse()
            .unwrap_or(([127, 0, 0, 1], 40000).into()),
        local: "127.0.0.1:10000"
            .parse()
            .unwrap_or(([127, 0, 0, 1], 10000).into()),
        tls: false,
        original_dst: None,
        mtls: false,
        socket: None,
        id: 7,
        sni: None,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("runtime: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let baseline = runtime.block_on(async {
        let started = thread_cpu_time();
        for _ in 0..count {
            let request = request();
            let body = response().into_body();
            let _ = body.collect().await;
            drop(request);
        }
        thread_cpu_time().saturating_sub(started)
    });
    let logged = runtime.block_on(run_logged(count, &logs, &conn));
    let _ = std::fs::remove_file(&path);
    let per = |d: Duration| d.as_nanos() as f64 / count as f64;
    println!(
        "access_log_ns_per_request entry={:.0} baseline={:.0} n={count}",
        per(logged) - per(baseline),
        per(baseline)
    );
    std::process::ExitCode::SUCCESS
}

async fn run_logged(count: usize, logs: &Arc<AccessLogs>, conn: &ConnectionInfo) -> Duration {
    let started = thread_cpu_time();
    for _ in 0..count {
        let request = request();
        let entry = Entry::start(logs.clone(), &request, conn);
        let request = entry.count_body(request);
        let response = entry.respond(response(), UpstreamSeen::default());
        let _ = response.into_body().collect().await;
        drop(request);
    }
    thread_cpu_time().saturating_sub(started)
}

/// The CPU time this thread has used: what the loop cost, whatever else the machine runs.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    let _ = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}
