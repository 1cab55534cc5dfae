//! tcp_proxy's `idle_timeout`: a connection that moved no byte either way for that long is
//! closed, both sides (Envoy's default is 1h; 0 turns it off).
//!
//! Every byte of a tcp_proxy connection crosses its downstream socket (received from the
//! client, or sent to it), whether the payload is copied in user space or spliced in the
//! kernel, where no byte passes through weir. So activity is read off that socket's counters
//! (`TCP_INFO`: bytes received, bytes acked by the client) a few times per period rather than
//! by wrapping the streams.

use crate::socket::{SocketId, TcpCounters};
use std::future::Future;
use std::io;

use std::time::Duration;
use tokio::time::Instant;

/// How often the counters are looked at: four times per period, at most once a second.
fn check_interval(limit: Duration) -> Duration {
    (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Runs `work` (the pump of one connection), or stops it (drops it, which closes both sides)
/// once `socket` has moved no byte either way for `limit`. Returns `None` when it timed out.
pub async fn run_until_idle<F: Future>(
    work: F,
    socket: Option<SocketId>,
    limit: Option<Duration>,
) -> Option<F::Output> {
    let (Some(limit), Some(socket)) = (limit, socket) else {
        return Some(work.await);
    };
    tokio::pin!(work);
    let mut last = counters(&socket).ok();
    let mut last_change = Instant::now();
    let mut tick = tokio::time::interval(check_interval(limit));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            output = &mut work => return Some(output),
            _ = tick.tick() => {
                let now = counters(&socket).ok();
                if now != last {
                    last = now;
                    last_change = Instant::now();
                } else if last_change.elapsed() >= limit {
                    return None;
                }
            }
        }
    }
}

/// The socket's byte counters, read through a private descriptor checked against the
/// socket's cookie.
fn counters(socket: &SocketId) -> io::Result<TcpCounters> {
    let dup = socket
        .dup()
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    crate::socket::tcp_counters(&dup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn stops_work_after_the_socket_is_quiet_and_not_before() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let id = SocketId::of(&server);
        let limit = Duration::from_millis(400);
        let started = Instant::now();
        // Bytes every 100 ms for a second keep it alive; then silence ends it.
        let chatter = async {
            for _ in 0..10 {
                client.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let work = async {
            let mut buf = [0u8; 16];
            loop {
                if server.read(&mut buf).await.unwrap() == 0 {
                    break;
                }
            }
        };
        let (outcome, ()) = tokio::join!(run_until_idle(work, id, Some(limit)), chatter);
        assert!(outcome.is_none(), "the work must be stopped as idle");
        assert!(
            started.elapsed() >= Duration::from_millis(850) + limit,
            "stopped after {:?}, while bytes still flowed",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn no_limit_runs_to_the_end() {
        let done = run_until_idle(async { 7 }, None, Some(Duration::from_millis(1))).await;
        assert_eq!(done, Some(7));
    }
}
