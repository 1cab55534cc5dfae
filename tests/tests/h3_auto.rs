//! `auto_config` with `http3_protocol_options` (Envoy's shape, with
//! `alternate_protocols_cache_options`): QUIC only to hosts that advertised it with alt-svc or
//! have a QUIC hint, a 300 ms head start for QUIC before TCP, QUIC preferred once up.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weir_tests::config::{self, Ports};
use weir_tests::h3::{H3Upstream, TlsTcpUpstream, udp_blackhole, udp_delay_relay};
use weir_tests::{Weir, get};

/// A config whose cluster is auto (h2/http1.1 by ALPN over TLS, HTTP/3 by alt-svc) to
/// `endpoint`, with a QUIC hint for it when `hint`. No CA: certificates are not verified.
fn auto_config(ports: Ports, endpoint: SocketAddr, hint: bool) -> Value {
    let mut cfg = config::simple(ports, &[endpoint]);
    let cluster = config::cluster_of(&mut cfg, 0);
    let mut cache = json!({"name": "default_alternate_protocols_cache"});
    if hint {
        cache["prepopulated_entries"] = json!([{"hostname": "127.0.0.1", "port": endpoint.port()}]);
    }
    cluster["typed_extension_protocol_options"] = json!({
        config::UPSTREAM_HTTP_OPTIONS: {
            "@type": format!("type.googleapis.com/{}", config::UPSTREAM_HTTP_OPTIONS),
            "auto_config": {
                "http2_protocol_options": {},
                "http3_protocol_options": {},
                "alternate_protocols_cache_options": cache,
            },
        }
    });
    cluster["transport_socket"] = json!({
        "name": "envoy.transport_sockets.quic",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport",
            "upstream_tls_context": {"sni": "localhost"},
        },
    });
    cfg
}

async fn body_of(ports: Ports, weir: &Weir) -> String {
    let response = get(ports.http_addr(), "/").await.expect("GET");
    assert_eq!(response.status, 200, "{response:?}\n{}", weir.log_report());
    String::from_utf8_lossy(&response.body).into_owned()
}

/// Makes the UDP side with `$make`, then a TCP upstream on the same port number; when another
/// test holds that number over TCP, tries a fresh UDP side (at most 20 times).
macro_rules! paired {
    ($make:expr, $port:expr, $delay:expr) => {{
        let mut found = None;
        for _ in 0..20 {
            let udp_side = $make;
            let port = ($port)(&udp_side);
            if let Some(tcp) = TlsTcpUpstream::try_start_slow(port, $delay).await {
                found = Some((udp_side, tcp));
                break;
            }
        }
        found.expect("a UDP and TCP port pair within 20 tries")
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quic_attempt_until_the_host_advertises_h3() {
    let (h3, tcp) = paired!(
        H3Upstream::start(100).await,
        |h3: &H3Upstream| h3.addr.port(),
        Duration::ZERO
    );
    let ports = Ports::new();
    let weir = Weir::start(&auto_config(ports, tcp.addr, false)).await;
    for _ in 0..3 {
        assert_eq!(body_of(ports, &weir).await, "tcp");
    }
    assert_eq!(
        h3.connections(),
        0,
        "no QUIC attempt to a host that never advertised h3"
    );
    tcp.advertise(&format!("h3=\":{}\"; ma=60", h3.addr.port()));
    assert_eq!(
        body_of(ports, &weir).await,
        "tcp",
        "this response brings the alt-svc"
    );
    let tcp_requests = tcp.requests();
    for _ in 0..3 {
        assert_eq!(
            body_of(ports, &weir).await,
            "ok",
            "after alt-svc, HTTP/3\n{}",
            weir.log_report()
        );
    }
    assert_eq!(h3.connections(), 1);
    assert_eq!(tcp.requests(), tcp_requests, "QUIC is preferred once up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_quic_falls_back_to_tcp_after_300ms() {
    let ((_udp, blackhole), tcp) = paired!(
        udp_blackhole(Duration::from_secs(10)).await,
        |hole: &(std::net::SocketAddr, _)| hole.0.port(),
        Duration::ZERO
    );
    let ports = Ports::new();
    let weir = Weir::start(&auto_config(ports, tcp.addr, true)).await;
    let started = Instant::now();
    assert_eq!(body_of(ports, &weir).await, "tcp");
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(300),
        "QUIC got its head start: {first:?}"
    );
    assert!(
        first < Duration::from_millis(900),
        "TCP carried it right after 300 ms: {first:?}"
    );
    // The QUIC attempt is still pending (or already marked broken): no second wait.
    let started = Instant::now();
    assert_eq!(body_of(ports, &weir).await, "tcp");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(tcp.connections(), 1, "one TCP connection carried both");
    blackhole.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hinted_host_gets_quic_first() {
    let (h3, tcp) = paired!(
        H3Upstream::start(100).await,
        |h3: &H3Upstream| h3.addr.port(),
        Duration::ZERO
    );
    let ports = Ports::new();
    let weir = Weir::start(&auto_config(ports, tcp.addr, true)).await;
    for _ in 0..4 {
        assert_eq!(body_of(ports, &weir).await, "ok", "{}", weir.log_report());
    }
    assert_eq!(h3.connections(), 1);
    assert_eq!(tcp.connections(), 0, "QUIC won the race: no TCP connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_quic_still_wins_when_tcp_is_later() {
    // QUIC through a relay with 200 ms each way: up after ~400 ms, past its 300 ms head start.
    // TCP's TLS handshake is held back 1.5 s. The QUIC handshake finishes first, so it carries
    // the first request although TCP was started at 300 ms.
    let h3 = H3Upstream::start(100).await;
    let (_relay, tcp) = paired!(
        udp_delay_relay(h3.addr, Duration::from_millis(200), Duration::from_secs(20)).await,
        |relay: &std::net::SocketAddr| relay.port(),
        Duration::from_millis(1500)
    );
    let ports = Ports::new();
    let weir = Weir::start(&auto_config(ports, tcp.addr, true)).await;
    assert_eq!(
        body_of(ports, &weir).await,
        "ok",
        "QUIC won the race\n{}",
        weir.log_report()
    );
    // No bound on the time taken: "ok" is the h3 server's answer (TCP's says "tcp"), which
    // is the proof, and a wall-clock bound only measures how loaded the machine is.
    assert_eq!(tcp.requests(), 0);
    assert_eq!(
        tcp.connections(),
        1,
        "a TCP handshake was raced (and dropped)"
    );
}
