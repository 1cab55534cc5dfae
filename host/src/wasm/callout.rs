//! HTTP callouts (`proxy_http_call`): the request a module described, sent through the
//! worker's connection pools to a configured cluster, and the answer collected for
//! `proxy_on_http_call_response`.

use super::context::{CallResponse, HeaderPairs, PendingCall};
use crate::body;
use crate::upstream::WorkerPools;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::time::Duration;

/// Most bytes of a callout answer's body kept for the module.
const MAX_CALL_RESPONSE_BODY: usize = 4 << 20;
/// The timeout of a callout that asked for none.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a callout through the worker's pools; `None` when it failed or timed out.
pub async fn execute(pools: &WorkerPools, call: PendingCall) -> Option<CallResponse> {
    let request = match call_request(&call) {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(%error, "invalid Wasm callout request");
            return None;
        }
    };
    let timeout = if call.timeout.is_zero() {
        DEFAULT_CALL_TIMEOUT
    } else {
        call.timeout
    };
    let cluster = call.cluster;
    let exchange = async {
        let response = pools.send(&cluster, request).await.ok()?;
        let (parts, body) = response.into_parts();
        let (body, trailers) = collect_limited(body, MAX_CALL_RESPONSE_BODY).await?;
        let mut headers: HeaderPairs = vec![(
            ":status".to_string(),
            Bytes::from(parts.status.as_u16().to_string()),
        )];
        headers.extend(crate::wasm::context::pairs_of(&parts.headers));
        Some(CallResponse {
            headers,
            body,
            trailers: trailers
                .map(|t| crate::wasm::context::pairs_of(&t).collect())
                .unwrap_or_default(),
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(response) => response,
        Err(_) => {
            tracing::debug!(cluster, ?timeout, "Wasm callout timed out");
            None
        }
    }
}

/// Reads `body` to its end: its bytes and trailers; `None` when it fails or passes `limit`.
async fn collect_limited(
    mut body: body::Body,
    limit: usize,
) -> Option<(Vec<u8>, Option<http::HeaderMap>)> {
    let mut bytes = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        match frame.into_data() {
            Ok(data) => {
                if bytes.len() + data.len() > limit {
                    return None;
                }
                bytes.extend_from_slice(&data);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Some((bytes, trailers))
}

/// The request of a callout: `:method`, `:path`, `:authority` (as `host`) and the headers.
fn call_request(call: &PendingCall) -> Result<http::Request<body::Body>, http::Error> {
    let mut request = http::Request::new(body::full(call.body.clone()));
    for (name, value) in &call.headers {
        match name.as_str() {
            ":method" => *request.method_mut() = http::Method::from_bytes(value)?,
            ":path" => *request.uri_mut() = http::Uri::try_from(value.as_ref())?,
            ":authority" => {
                let host = http::HeaderValue::from_bytes(value)?;
                request.headers_mut().insert(http::header::HOST, host);
            }
            pseudo if pseudo.starts_with(':') => {}
            _ => {
                let header = http::HeaderName::from_bytes(name.as_bytes())?;
                let value = http::HeaderValue::from_bytes(value)?;
                request.headers_mut().append(header, value);
            }
        }
    }
    Ok(request)
}
