//! h1_app: the in-process HTTP/1.1 upstream of the tests ([`weir_tests::H1Upstream`]) as a
//! process of its own, for tests that need the application in another process than the test
//! (local acceleration puts it into a cgroup of its own, which a test thread cannot join).
//!
//! `h1_app NAME`: listens on 127.0.0.1 (a free port), prints `listening ADDR` on stdout, and
//! serves until killed (or until stdin closes, so it never outlives the test that started it).

use std::io::Read as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_else(|| "app".to_owned());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("h1_app: runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let upstream = weir_tests::H1Upstream::start(&name).await;
        println!("listening {}", upstream.addr);
        let _ = tokio::task::spawn_blocking(|| {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        })
        .await;
        drop(upstream);
    });
    ExitCode::SUCCESS
}
