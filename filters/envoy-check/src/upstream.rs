//! A tiny upstream on an ephemeral 127.0.0.1 port: plain requests get 200 with the request
//! head echoed in the body (so a test sees what reached the upstream); WebSocket upgrades get
//! 101 and every frame echoed back, counted.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::http::{self, IO_TIMEOUT};

/// The running upstream (its threads end with the test process).
pub struct Upstream {
    /// `127.0.0.1:port`.
    pub addr: String,
    /// WebSocket data frames received so far.
    pub ws_frames: Arc<AtomicU64>,
}

/// Starts the upstream.
pub fn start() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr").to_string();
    let ws_frames = Arc::new(AtomicU64::new(0));
    let counter = ws_frames.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &counter);
            });
        }
    });
    Upstream { addr, ws_frames }
}

fn serve(mut stream: TcpStream, ws_frames: &AtomicU64) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if text.contains("upgrade: websocket") {
        stream.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
              sec-websocket-accept: not-checked\r\n\r\n",
        )?;
        loop {
            let (opcode, payload) = http::read_frame(&mut stream)?;
            if opcode == 0x8 {
                return Ok(());
            }
            ws_frames.fetch_add(1, Ordering::SeqCst);
            http::write_frame(&mut stream, opcode, &payload, None)?;
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-upstream-secret: leak\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        head.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.write_all(&head)
}
