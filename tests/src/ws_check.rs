//! The client side of the WebSocket echo tests (tests/tests/upgrades.rs over an HTTP/2 hop,
//! tests/tests/h3_websocket.rs over an HTTP/3 hop): the mixed messages, one echo, and the
//! ping/pong and close checks, so both hops are held to the same checks.

use crate::Rng;
use crate::tunnel_client::WsClient;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Sends `msg` and expects the same message back within 30 s.
pub async fn echo(ws: &mut WsClient, msg: Message) -> Result<(), String> {
    ws.send(msg.clone())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let got = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .map_err(|_| "no echo within 30 s".to_owned())?
        .ok_or("stream ended instead of an echo")?
        .map_err(|e| format!("read: {e}"))?;
    if got != msg {
        return Err(format!(
            "echo differs: sent {} bytes ({}), got {} bytes ({})",
            msg.len(),
            kind(&msg),
            got.len(),
            kind(&got)
        ));
    }
    Ok(())
}

/// Echoes every one of `msgs` in order ([`echo`]), all within `limit`; returns the bytes
/// sent (each way) and the time taken, or which message failed and why.
pub async fn echo_all(
    ws: &mut WsClient,
    msgs: Vec<Message>,
    limit: Duration,
) -> Result<(usize, Duration), String> {
    let total: usize = msgs.iter().map(Message::len).sum();
    let count = msgs.len();
    let started = std::time::Instant::now();
    let run = async {
        for (i, msg) in msgs.into_iter().enumerate() {
            echo(ws, msg)
                .await
                .map_err(|e| format!("message {i}: {e}"))?;
        }
        Ok::<_, String>(())
    };
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(())) => Ok((total, started.elapsed())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("{count} messages took over {limit:?}")),
    }
}

/// Waits up to 10 s for the connection to end (EOF, an error, or a close frame) without a
/// data message coming back; `Err` says what came instead.
pub async fn ends_without_echo(ws: &mut WsClient) -> Result<(), String> {
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return Ok(()),
                Some(Ok(Message::Close(_))) => {}
                Some(Ok(other)) => return Err(other),
            }
        }
    })
    .await;
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(msg)) => Err(format!(
            "a {} message came back ({} bytes)",
            kind(&msg),
            msg.len()
        )),
        Err(_) => Err("the connection stayed open for 10 s".to_owned()),
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
        Message::Close(_) => "close",
        Message::Frame(_) => "frame",
    }
}

/// The 1,000 messages: most small, some medium, ten large (up to 1 MiB), 1 B and exactly
/// 1 MiB included; every seventh is text. `seed` picks the sizes and bytes.
pub fn mixed_messages(seed: u64) -> Vec<Message> {
    let mut rng = Rng::new(seed);
    (0..1000usize)
        .map(|i| {
            let len = match i {
                0 => 1,
                1 => 1 << 20,
                _ if i % 100 == 50 => rng.range(256 << 10, 1 << 20),
                _ if i % 10 == 5 => rng.range(1 << 10, 64 << 10),
                _ => rng.range(1, 512),
            };
            if i % 7 == 3 {
                let text: String = (0..len)
                    .map(|_| (b'a' + (rng.next_u64() % 26) as u8) as char)
                    .collect();
                Message::text(text)
            } else {
                Message::binary(crate::random_bytes(i as u64, len))
            }
        })
        .collect()
}

/// A ping with `payload` gets a pong with the same payload (answered end to end).
pub async fn assert_ping_pong(ws: &mut WsClient, payload: &[u8]) {
    ws.send(Message::Ping(payload.to_vec().into()))
        .await
        .expect("send ping");
    let pong = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("pong within 10 s")
        .expect("stream open")
        .expect("read pong");
    assert_eq!(pong, Message::Pong(payload.to_vec().into()));
}

/// A close with an application `code` and `reason` comes back as the echo's close frame.
pub async fn assert_close_echoed(ws: &mut WsClient, code: u16, reason: &str) {
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    })))
    .await
    .expect("send close");
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("close echo within 10 s");
    match back {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), code, "close code back");
            assert_eq!(frame.reason.as_str(), reason, "close reason back");
        }
        other => panic!("expected the close frame back, got {other:?}"),
    }
}
