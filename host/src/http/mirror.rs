//! `request_mirror_policies` at run time: a fire-and-forget copy of a request sent to
//! another cluster, its answer read and dropped.
//!
//! The copy has the request's head as it goes upstream (rules applied), its host with
//! Envoy's `-shadow` suffix (before the port: `api:8080` is `api-shadow:8080`), and the body
//! once the main request's has ended, when it was within the manager's buffer limit (a larger
//! body drops the copy). A copy never delays the main request: its body is copied as it
//! passes, and the copy is sent from its own task. Copies in flight are bounded per worker
//! ([`MAX_IN_FLIGHT`]); one past the bound is dropped and counted, and each copy has a time
//! limit ([`MirrorLimits::timeout`]).

use crate::body::{self, Body, BoxError};
use crate::route::mirror::MirrorPolicy;
use crate::stats::HttpStats;
use crate::upstream::WorkerPools;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request};
use http_body::{Body as _, Frame};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// Copies in flight at once per connection manager and worker; more are dropped.
pub const MAX_IN_FLIGHT: usize = 256;

/// How long a copy may take when its route has no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// What bounds the copies of one manager on one worker.
#[derive(Debug, Default)]
pub struct MirrorLimits {
    in_flight: Arc<AtomicUsize>,
}

/// One copy's place among those in flight, given back when the copy ends.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl MirrorLimits {
    fn enter(&self) -> Option<InFlight> {
        let mut now = self.in_flight.load(Ordering::Acquire);
        loop {
            if now >= MAX_IN_FLIGHT {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                now,
                now + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(InFlight(self.in_flight.clone())),
                Err(seen) => now = seen,
            }
        }
    }

    /// Copies in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The time limit of a copy on a route whose timeout is `route_timeout`.
    pub fn timeout(route_timeout: Option<Duration>) -> Duration {
        route_timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// `host` with Envoy's `-shadow` suffix, before its port when it has one.
pub fn shadow_host(host: &[u8]) -> Option<HeaderValue> {
    let host = std::str::from_utf8(host).ok()?;
    let shadowed = match crate::route::authority::strip_port(host) {
        Some(name) if name.len() < host.len() => {
            format!("{name}-shadow{}", &host[name.len()..])
        }
        _ => format!("{host}-shadow"),
    };
    HeaderValue::from_str(&shadowed).ok()
}

/// Sends a copy of `request` to each sampled cluster of `policies`; returns the request
/// (its body copied as it passes, where a copy waits for it).
pub fn mirror(
    request: Request<Body>,
    policies: &[MirrorPolicy],
    pools: &WorkerPools,
    limits: &MirrorLimits,
    stats: &HttpStats,
    timeout: Duration,
    body_limit: usize,
) -> Request<Body> {
    let sampled: Vec<&MirrorPolicy> = policies
        .iter()
        .filter(|p| p.samples(rand::random()))
        .collect();
    if sampled.is_empty() {
        return request;
    }
    let (parts, request_body) = request.into_parts();
    let mut head = http::Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.version_mut() = parts.version;
    *head.headers_mut() = parts.headers.clone();
    if let Some(host) = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| shadow_host(h.as_bytes()))
    {
        head.headers_mut().insert(http::header::HOST, host);
    }
    let has_body = !request_body.is_end_stream();
    let mut senders = Vec::new();
    for policy in sampled {
        let Some(place) = limits.enter() else {
            stats.rq_mirror_overflow.inc();
            tracing::debug!(cluster = %policy.cluster, "mirror dropped: too many in flight");
            continue;
        };
        let body_ready = if has_body {
            let (tx, rx) = oneshot::channel();
            senders.push(tx);
            Some(rx)
        } else {
            None
        };
        stats.rq_mirror_total.inc();
        let copy = head_copy(&head);
        let pools = pools.clone();
        let cluster = policy.cluster.clone();
        let failed = stats.rq_mirror_failed.clone();
        tokio::spawn(async move {
            let _place = place;
            let send = async {
                let copy_body = match body_ready {
                    None => body::empty(),
                    Some(rx) => match rx.await {
                        Ok(bytes) => body::full(bytes),
                        // The body passed the limit or failed: no copy.
                        Err(_) => return Err("the request body was not copied".into()),
                    },
                };
                let request = copy.map(|()| copy_body);
                let response = pools
                    .send(&cluster, request)
                    .await
                    .map_err(|e| -> BoxError { e.to_string().into() })?;
                // Read and drop the answer, so the connection can be reused.
                let mut response_body = response.into_body();
                while let Some(frame) =
                    std::future::poll_fn(|cx| Pin::new(&mut response_body).poll_frame(cx)).await
                {
                    frame?;
                }
                Ok::<(), BoxError>(())
            };
            match tokio::time::timeout(timeout, send).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    failed.inc();
                    tracing::debug!(%cluster, %error, "mirror request failed");
                }
                Err(_) => {
                    failed.inc();
                    tracing::debug!(%cluster, "mirror request timed out");
                }
            }
        });
    }
    let request_body = if senders.is_empty() {
        request_body
    } else {
        body::boxed(CopiedBody {
            inner: request_body,
            copy: BytesMut::new(),
            limit: body_limit,
            senders,
        })
    };
    Request::from_parts(parts, request_body)
}

fn head_copy(head: &Request<()>) -> Request<()> {
    let mut copy = Request::new(());
    *copy.method_mut() = head.method().clone();
    *copy.uri_mut() = head.uri().clone();
    *copy.version_mut() = head.version();
    *copy.headers_mut() = head.headers().clone();
    copy
}

/// The main request's body, copied for its mirrors as it passes, up to `limit` bytes; at its
/// end the copy goes to each mirror. Past the limit, or on an error, the mirrors get nothing
/// (their senders are dropped).
struct CopiedBody {
    inner: Body,
    copy: BytesMut,
    limit: usize,
    senders: Vec<oneshot::Sender<Bytes>>,
}

impl http_body::Body for CopiedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && !this.senders.is_empty()
                {
                    if this.copy.len() + data.len() > this.limit {
                        this.senders.clear();
                        this.copy = BytesMut::new();
                    } else {
                        this.copy.extend_from_slice(data);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.senders.clear(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl CopiedBody {
    fn finish(&mut self) {
        let copy = std::mem::take(&mut self.copy).freeze();
        for sender in self.senders.drain(..) {
            let _ = sender.send(copy.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_host_goes_before_the_port() {
        let host = |h: &str| shadow_host(h.as_bytes()).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(host("api.example").as_deref(), Some("api.example-shadow"));
        assert_eq!(host("api:8080").as_deref(), Some("api-shadow:8080"));
        assert_eq!(host("[::1]:80").as_deref(), Some("[::1]-shadow:80"));
    }

    #[test]
    fn the_bound_counts_places_and_gives_them_back() {
        let limits = MirrorLimits::default();
        let places: Vec<InFlight> = (0..MAX_IN_FLIGHT).filter_map(|_| limits.enter()).collect();
        assert_eq!(places.len(), MAX_IN_FLIGHT);
        assert!(limits.enter().is_none());
        drop(places);
        assert_eq!(limits.in_flight(), 0);
        assert!(limits.enter().is_some());
    }

    #[tokio::test]
    async fn the_copy_is_the_body_within_the_limit() {
        use http_body_util::BodyExt;
        let (tx, rx) = oneshot::channel();
        let body = CopiedBody {
            inner: body::full(Bytes::from_static(b"hello")),
            copy: BytesMut::new(),
            limit: 5,
            senders: vec![tx],
        };
        let passed = body.collect().await.unwrap().to_bytes();
        assert_eq!(&passed[..], b"hello");
        assert_eq!(&rx.await.unwrap()[..], b"hello");
        let (tx, rx) = oneshot::channel();
        let body = CopiedBody {
            inner: body::full(Bytes::from_static(b"hello!")),
            copy: BytesMut::new(),
            limit: 5,
            senders: vec![tx],
        };
        let passed = body.collect().await.unwrap().to_bytes();
        assert_eq!(&passed[..], b"hello!");
        assert!(rx.await.is_err(), "past the limit, no copy");
    }
}
