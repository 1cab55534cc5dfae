//! Serving one downstream QUIC connection with HTTP/3 (the `h3` crate): each request stream
//! goes through the same [`HttpManager::handle`] as HTTP/1.1 and HTTP/2 requests, with its
//! body streamed both ways and trailers passed on. On shutdown the connection sends GOAWAY,
//! lets the requests in flight finish, then closes.

use super::h3_body::H3Body;
use super::tracked::{Activity, StreamGuard};
use super::{ConnectionInfo, HttpManager};
use crate::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use std::sync::Arc;
use tokio::sync::watch;

/// A request stream of a downstream connection.
type ServerStream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Headers HTTP/3 forbids (RFC 9114 4.2), removed from responses.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// How often a draining connection checks whether its last stream is done.
const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Serves HTTP/3 on an accepted QUIC `connection` until it closes; `shutdown` turning true
/// sends GOAWAY, lets in-flight requests finish, then closes the connection (a few round trips
/// after the last response, so its last bytes are acknowledged first: closing a QUIC
/// connection drops data not yet delivered).
pub async fn serve_h3_connection(
    manager: Arc<HttpManager>,
    connection: quinn::Connection,
    local: std::net::SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let stats = manager.stats.clone();
    stats.cx_total.inc();
    stats.cx_active.inc();
    stats.cx_ssl_total.inc();
    stats.cx_http3_total.inc();
    let info = ConnectionInfo {
        remote: connection.remote_address(),
        local,
        tls: true,
        socket: None,
    };
    let quic = connection.clone();
    let built = h3::server::builder()
        .max_field_section_size(64 * 1024)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await;
    let mut h3_connection = match built {
        Ok(h3_connection) => h3_connection,
        Err(error) => {
            tracing::debug!(peer = %info.remote, %error, "HTTP/3 setup failed");
            stats.cx_protocol_error.inc();
            stats.cx_active.dec();
            return;
        }
    };
    let activity = Activity::new();
    let mut draining = *shutdown.borrow();
    if draining {
        let _ = h3_connection.shutdown(0).await;
    }
    loop {
        tokio::select! {
            accepted = h3_connection.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let manager = manager.clone();
                    let guard = StreamGuard::start(activity.clone(), manager.stats.clone());
                    tokio::spawn(async move {
                        match resolver.resolve_request().await {
                            Ok((request, stream)) => serve_request(&manager, request, stream, &info).await,
                            Err(error) => tracing::debug!(%error, "HTTP/3 request head unreadable"),
                        }
                        drop(guard);
                    });
                }
                Ok(None) => break,
                Err(error) => {
                    if !error.is_h3_no_error() {
                        tracing::debug!(peer = %info.remote, %error, "HTTP/3 connection ended with an error");
                    }
                    break;
                }
            },
            changed = shutdown.changed(), if !draining => {
                if changed.is_err() || *shutdown.borrow() {
                    draining = true;
                    if let Err(error) = h3_connection.shutdown(0).await {
                        tracing::debug!(%error, "HTTP/3 GOAWAY");
                    }
                }
            }
            () = tokio::time::sleep(DRAIN_CHECK), if draining => {
                let grace = (quic.rtt() * 3).max(std::time::Duration::from_millis(100));
                if activity.idle_for().is_some_and(|idle| idle >= grace) {
                    // 0x100: H3_NO_ERROR.
                    quic.close(quinn::VarInt::from_u32(0x100), b"shutting down");
                    break;
                }
            }
        }
    }
    stats.cx_active.dec();
}

/// One request: the manager answers it, the response head, body and trailers go back.
async fn serve_request(
    manager: &HttpManager,
    request: http::Request<()>,
    stream: ServerStream,
    info: &ConnectionInfo,
) {
    let (mut send, recv) = stream.split();
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let body = H3Body::new(recv, None).await;
    let request = request.map(|()| body);
    let response = manager.handle(request, info).await;
    let (mut head, body) = response.into_parts();
    manager
        .config
        .routes
        .add_response_headers(host.as_deref(), &mut head.headers);
    remove_connection_specific(&mut head.headers);
    if let Err(error) = send_response(&mut send, Response::from_parts(head, ()), body).await {
        tracing::debug!(%error, "HTTP/3 response not sent in full");
    }
}

fn remove_connection_specific(headers: &mut HeaderMap) {
    for name in CONNECTION_SPECIFIC {
        headers.remove(name);
    }
}

/// Sends the head, then each body frame as it comes, then trailers (or FIN).
async fn send_response(
    send: &mut h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    head: Response<()>,
    mut body: Body,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    send.send_response(head).await?;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                // The upstream failed mid-body: reset so the client sees it was cut.
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return Err(error);
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if !data.is_empty() {
                    send.send_data(data).await?;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    // h3 0.0.8's send_trailers does not end the stream.
                    send.send_trailers(trailers).await?;
                    break;
                }
            }
        }
    }
    send.finish().await?;
    Ok(())
}
