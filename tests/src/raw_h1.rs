//! A keep-alive HTTP/1.1 upstream written by hand, for tests that choose each answer's bytes
//! (a health check's status or headers, a delay) by the request's path. Bodies of requests
//! are not read: the tests that use it send heads only (GETs and health checks).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Most bytes of request heads held unanswered on one connection; a client past it is cut.
const HELD_AT_MOST: usize = 64 * 1024;

/// Serves on 127.0.0.1 until the test ends: for each request head on a connection, writes
/// what `answer` gives for its path (a whole response, head and body), in order.
pub async fn serve<F, A>(answer: F) -> SocketAddr
where
    F: Fn(String) -> A + Send + Sync + 'static,
    A: Future<Output = String> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut held = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = held.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if held.len() > HELD_AT_MOST => return,
                            Ok(n) => held.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&held[..end]).into_owned();
                    held.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let response = answer(path).await;
                    if sock.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
