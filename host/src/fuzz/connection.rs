//! One downstream connection served from fuzz bytes: weir's codec, routing and local replies
//! over an in-memory pipe, with routes that all answer directly (no input reaches a network).

use crate::http::{ConnectionTls, CurrentManager, HttpManager, serve_connection};
use crate::upstream::{ClusterManager, WorkerPools};
use crate::wire::ConnectionInfo;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The client preface of HTTP/2 (RFC 9113 3.4), sent before an [`Codec::Http2`] input.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long weir may stay silent before the client, having sent everything, closes its side
/// (and, once closed, gives up waiting for weir to close). On the paused clock this costs no
/// real time: the runtime jumps to it as soon as everything is idle.
const QUIET: Duration = Duration::from_secs(1);

/// How long the connection may take to end once the client is gone; past it the input hangs
/// weir (a bug too). Paused-clock time as well.
const CONNECTION_BOUND: Duration = Duration::from_secs(60);

/// One listener of the harness; `{NAME}` and `{CODEC}` are filled in. Virtual hosts by exact
/// domain, suffix and prefix wildcards and `*`; routes by path, regex, prefix and header.
const LISTENER: &str = r#"
  - name: {NAME}
    address: { socket_address: { address: 127.0.0.1, port_value: 1 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {NAME}
          codec_type: {CODEC}
          route_config:
            response_headers_to_add:
            - header: { key: x-fuzz, value: "1" }
            virtual_hosts:
            - name: example
              domains: ["example.com", "*.example.org", "www.example.*", "[::1]:8080"]
              routes:
              - match: { path: "/exact" }
                direct_response: { status: 200, body: { inline_string: exact } }
              - match: { safe_regex: { regex: "/items/[0-9]+" } }
                direct_response: { status: 201, body: { inline_string: item } }
              - match:
                  prefix: "/api/"
                  headers:
                  - name: x-tenant
                    string_match: { exact: blue }
                direct_response: { status: 202, body: { inline_string: api } }
              - match: { prefix: "/" }
                direct_response: { status: 204 }
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 404, body: { inline_string: none } }
          http_filters:
          - name: envoy.filters.http.router
"#;

/// Which listener an input goes to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Codec {
    /// `codec_type: HTTP1` (hyper's HTTP/1.1).
    Http1,
    /// `codec_type: HTTP2` (weir's codec on the `h2` crate), the preface sent first.
    Http2,
}

/// A runtime and the two listeners' managers, built once per thread.
struct Harness {
    runtime: tokio::runtime::Runtime,
    http1: Arc<CurrentManager>,
    http2: Arc<CurrentManager>,
}

impl Harness {
    fn new() -> Harness {
        let text = format!(
            "static_resources:\n  listeners:{}{}",
            LISTENER
                .replace("{NAME}", "fuzz_h1")
                .replace("{CODEC}", "HTTP1"),
            LISTENER
                .replace("{NAME}", "fuzz_h2")
                .replace("{CODEC}", "HTTP2"),
        );
        let config = crate::snapshot::load_str(&text, "fuzz-harness.yaml")
            .unwrap_or_else(|e| panic!("the harness's own config loads: {e}"));
        let clusters = ClusterManager::new(Vec::<crate::config::cluster_spec::ClusterSpec>::new())
            .unwrap_or_else(|e| panic!("an empty cluster manager builds: {e}"));
        // The paused clock: timers fire when everything is idle, in no real time, so an input
        // runs the same way on every run and a quiet period costs nothing.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap_or_else(|e| panic!("a tokio runtime builds: {e}"));
        let managers = runtime.block_on(async {
            let pools = WorkerPools::new(clusters);
            config
                .listeners
                .into_iter()
                .map(|listener| {
                    let manager = HttpManager::new(listener.http, pools.clone());
                    Arc::new(CurrentManager::new(manager))
                })
                .collect::<Vec<_>>()
        });
        let [http1, http2] = <[_; 2]>::try_from(managers)
            .unwrap_or_else(|_| panic!("the harness's config has two listeners"));
        Harness {
            runtime,
            http1,
            http2,
        }
    }
}

thread_local! {
    static HARNESS: Harness = Harness::new();
}

/// Serves one connection whose client sends `input` (after the preface for HTTP/2) and reads
/// what weir answers; once everything is sent and weir has been [`QUIET`], the client closes
/// its side, and once weir is quiet again the client is gone. Returns weir's answer. Panics
/// when the connection outlives the client by [`CONNECTION_BOUND`]: a hang is a bug too.
pub(super) fn serve(codec: Codec, input: &[u8]) -> Vec<u8> {
    HARNESS.with(|harness| {
        let (manager, preface) = match codec {
            Codec::Http1 => (harness.http1.clone(), &[][..]),
            Codec::Http2 => (harness.http2.clone(), H2_PREFACE),
        };
        harness.runtime.block_on(async move {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let (_shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
            let info = ConnectionInfo::loopback();
            let serving = tokio::spawn(serve_connection(
                manager,
                server,
                info,
                ConnectionTls::default(),
                shutdown_rx,
            ));
            let answer = client_exchange(client, preface, input).await;
            match tokio::time::timeout(CONNECTION_BOUND, serving).await {
                Ok(Ok(())) => answer,
                Ok(Err(join_error)) => match join_error.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(join_error) => panic!("the connection's task ended: {join_error}"),
                },
                Err(_) => panic!(
                    "the connection did not end {CONNECTION_BOUND:?} after the client was gone"
                ),
            }
        })
    })
}

/// The client's side: sends `preface` and `input` while reading, closes its sending side when
/// all is sent and weir is quiet, and returns (dropping the connection) when weir closes or
/// is quiet again, or stops reading what is sent.
async fn client_exchange(client: tokio::io::DuplexStream, preface: &[u8], input: &[u8]) -> Vec<u8> {
    let (mut from_weir, mut to_weir) = tokio::io::split(client);
    let send = async move {
        // weir may stop reading (a bad request): the rest of the input is then moot.
        let _ = to_weir.write_all(preface).await;
        let _ = to_weir.write_all(input).await;
        to_weir
    };
    tokio::pin!(send);
    let mut writer = None;
    let mut sent = false;
    let mut answer = Vec::new();
    let mut buffer = vec![0; 16 * 1024];
    loop {
        tokio::select! {
            to_weir = &mut send, if !sent => {
                writer = Some(to_weir);
                sent = true;
            }
            read = tokio::time::timeout(QUIET, from_weir.read(&mut buffer)) => match read {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
                // Quiet with everything sent: close our side, then wait for weir's close.
                Err(_) => match writer.take() {
                    Some(mut to_weir) => {
                        let _ = to_weir.shutdown().await;
                        writer = None;
                        drop(to_weir);
                    }
                    // Quiet after our close, or quiet while our input waits unread.
                    None => break,
                },
            },
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_requests_are_routed_and_answered() {
        let answer = serve(
            Codec::Http1,
            b"GET /exact HTTP/1.1\r\nHost: example.com\r\n\r\n\
              GET /items/12 HTTP/1.1\r\nHost: www.example.net\r\n\r\n\
              GET /api/x HTTP/1.1\r\nHost: a.example.org\r\nx-tenant: blue\r\n\r\n",
        );
        let answer = String::from_utf8_lossy(&answer);
        for expected in [
            "HTTP/1.1 200",
            "exact",
            "HTTP/1.1 201",
            "item",
            "HTTP/1.1 202",
        ] {
            assert!(answer.contains(expected), "{expected:?} in:\n{answer}");
        }
    }

    #[test]
    fn http2_frames_are_routed_and_answered() {
        // SETTINGS, then HEADERS (END_STREAM | END_HEADERS) on stream 1: GET http
        // example.com /exact, as HPACK's static-table indexes and literals.
        let mut input = vec![0, 0, 0, 4, 0, 0, 0, 0, 0];
        let mut block = vec![0x82, 0x86, 0x04, 6];
        block.extend_from_slice(b"/exact");
        block.extend_from_slice(&[0x01, 11]);
        block.extend_from_slice(b"example.com");
        input.extend_from_slice(&[0, 0, block.len() as u8, 1, 5, 0, 0, 0, 1]);
        input.extend_from_slice(&block);
        let answer = serve(Codec::Http2, &input);
        // weir's SETTINGS, then a HEADERS frame on stream 1 and its DATA, "exact".
        let frames = frame_types(&answer);
        assert!(
            frames.contains(&(1, 1)),
            "no HEADERS on stream 1: {frames:?}"
        );
        assert!(answer.windows(5).any(|w| w == b"exact"), "{answer:?}");
    }

    /// (type, stream) of each frame in `bytes`.
    fn frame_types(mut bytes: &[u8]) -> Vec<(u8, u32)> {
        let mut frames = Vec::new();
        while bytes.len() >= 9 {
            let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
            frames.push((bytes[3], stream));
            bytes = bytes.get(9 + length..).unwrap_or_default();
        }
        frames
    }
}
