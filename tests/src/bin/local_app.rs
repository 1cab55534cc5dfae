//! local_app: a test application as a process of its own, for tests that need the application
//! in another process than the test (local acceleration puts it into a cgroup of its own,
//! which a test thread cannot join).
//!
//! - `local_app http NAME`: the in-process HTTP/1.1 upstream of the tests
//!   ([`weir_tests::H1Upstream`], `x-upstream: NAME`);
//! - `local_app banner-echo N`: raw TCP, server speaks first: on each connection writes N
//!   bytes of [`weir_tests::pattern`] at once, then echoes what it reads until EOF, then
//!   closes.
//!
//! Listens on 127.0.0.1 (a free port), prints `listening ADDR` on stdout, and serves until
//! killed, or until stdin closes, so it never outlives the test that started it.

use std::io::Read as _;
use std::process::ExitCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.first().map(String::as_str) {
        Some("http") => Mode::Http(args.get(1).cloned().unwrap_or_else(|| "app".to_owned())),
        Some("banner-echo") => match args.get(1).and_then(|n| n.parse().ok()) {
            Some(n) => Mode::BannerEcho(n),
            None => return usage(),
        },
        _ => return usage(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("local_app: runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match mode {
            Mode::Http(name) => {
                let upstream = weir_tests::H1Upstream::start(&name).await;
                println!("listening {}", upstream.addr);
                Server::Http(upstream)
            }
            Mode::BannerEcho(n) => match banner_echo(n).await {
                Ok(task) => Server::Raw(task),
                Err(error) => {
                    eprintln!("local_app: {error}");
                    return;
                }
            },
        };
        let _ = tokio::task::spawn_blocking(|| {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        })
        .await;
        match server {
            Server::Http(upstream) => drop(upstream),
            Server::Raw(task) => task.abort(),
        }
    });
    ExitCode::SUCCESS
}

enum Mode {
    Http(String),
    BannerEcho(usize),
}

/// What serves, kept until stdin closes.
enum Server {
    Http(weir_tests::H1Upstream),
    Raw(tokio::task::JoinHandle<()>),
}

fn usage() -> ExitCode {
    eprintln!("usage: local_app http NAME | local_app banner-echo BYTES");
    ExitCode::from(2)
}

async fn banner_echo(banner_len: usize) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let banner = bytes::Bytes::from(weir_tests::pattern(banner_len));
    Ok(tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let banner = banner.clone();
            tokio::spawn(async move {
                if stream.write_all(&banner).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    }))
}
