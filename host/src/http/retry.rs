//! The forward phase's tries: a request sent upstream under its route's timeout and, where
//! the route (or its virtual host) has a `retry_policy`, tried again as the policy says
//! ([`crate::route::retry`]).
//!
//! A retry is decided on a try's response head or its failure, before anything of that
//! response goes downstream, so no byte of a response the client has seen is ever retried.
//! The route's `timeout` covers every try and the waits between them (starting once the
//! request body is buffered, as Envoy's starts at the end of the request); `per_try_timeout`
//! (and `per_try_idle_timeout`) bound each try's wait for its response head.
//!
//! A request body is replayed from a buffer: with a retry policy, the body is read first, up
//! to the listener's `per_connection_buffer_limit_bytes`. A body that does not fit is sent as
//! it comes (what was buffered, then the rest) and the request gets one try, as Envoy does
//! when its retry buffer overflows. A retry takes a unit of the cluster's `max_retries`
//! circuit breaker (Envoy's default 3) from its decision to its outcome; when none is left
//! the retry is not sent (`upstream_rq_retry_overflow`, flag `UO`) and the last try's outcome
//! is the answer. When `num_retries` is spent on a try the policy would retry, the answer
//! is that try's (`upstream_rq_retry_limit_exceeded`, flag `URX`).

use super::HttpManager;
use super::local_reply::LocalReply;
use crate::access_log::http::{RetryFlag, note_retry_flag};
use crate::body::{self, Body, BoxError};
use crate::route::ForwardAction;
use crate::route::retry::{RetryOn, RetryPolicy, TryFailure, X_ENVOY_ATTEMPT_COUNT};
use crate::upstream::{RetrySlot, UpstreamError};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

impl HttpManager {
    /// Sends `request` to the route's cluster under the route's timeout, with the route's
    /// retries; returns the response head of the try that answers.
    pub(super) async fn send_upstream(
        &self,
        mut request: Request<Body>,
        action: &ForwardAction,
    ) -> Result<Response<Body>, LocalReply> {
        if action.include_attempt_count {
            request
                .headers_mut()
                .insert(X_ENVOY_ATTEMPT_COUNT, HeaderValue::from_static("1"));
        }
        match action.retry.as_deref() {
            // A policy without `retry_on` retries nothing (Envoy makes no retry state for
            // it): one try, the body streamed.
            Some(policy) if policy.retry_on != RetryOn::default() => {
                Box::pin(self.send_with_retries(request, action, policy)).await
            }
            _ => self.send_once(request, action).await,
        }
    }

    /// One try under the route's timeout (a route without a retry policy).
    async fn send_once(
        &self,
        request: Request<Body>,
        action: &ForwardAction,
    ) -> Result<Response<Body>, LocalReply> {
        let mut request = request;
        let picked = self.note_picked_host(&mut request, action);
        // Boxed: the pools' future is large, and moving it into the timeout and then into
        // this future's state copied it twice per request (callgrind: ~1,300 instructions of
        // memcpy, more than the allocation).
        let send = Box::pin(self.pools.send(&action.cluster, request));
        let result = match action.timeout {
            Some(limit) => match tokio::time::timeout(limit, send).await {
                Ok(result) => result,
                Err(_) => {
                    self.stats.rq_timeout.inc();
                    self.blame_timeout(picked.as_ref(), action);
                    return Err(LocalReply::UpstreamTimeout);
                }
            },
            None => send.await,
        };
        result.map_err(|e| {
            tracing::debug!(cluster = %action.cluster, error = %e, "upstream request failed");
            LocalReply::Upstream(e)
        })
    }

    /// Where the route has a timeout and its cluster outlier detection, asks the pools to
    /// note the host `request` goes to, so that a timeout can be blamed on it.
    fn note_picked_host(
        &self,
        request: &mut Request<Body>,
        action: &ForwardAction,
    ) -> Option<crate::upstream::PickedHostNote> {
        let picked = (action.timeout.is_some()
            && self.pools.has_outlier_detection(&action.cluster))
        .then(crate::upstream::PickedHostNote::default)?;
        request.extensions_mut().insert(picked.clone());
        Some(picked)
    }

    /// Tells outlier detection that the host noted in `picked` ran past the route's timeout.
    fn blame_timeout(
        &self,
        picked: Option<&crate::upstream::PickedHostNote>,
        action: &ForwardAction,
    ) {
        if let Some(host) = picked.and_then(|picked| picked.0.get()) {
            self.pools.record_timeout(&action.cluster, *host);
        }
    }

    /// The tries of a request under `policy` (see the module's docs).
    async fn send_with_retries(
        &self,
        request: Request<Body>,
        action: &ForwardAction,
        policy: &RetryPolicy,
    ) -> Result<Response<Body>, LocalReply> {
        let (parts, request_body) = request.into_parts();
        let replay = if request_body.is_end_stream() {
            Some(Buffered::default())
        } else {
            match Buffered::read(request_body, self.config.buffer_limit).await {
                Ok(Read::Whole(buffered)) => Some(buffered),
                Ok(Read::TooLarge(body)) => {
                    // No replay possible: one try, streamed as it comes.
                    tracing::debug!(cluster = %action.cluster, "request body over the buffer limit: not retried");
                    let request = Request::from_parts(parts, body);
                    return self.send_once(request, action).await;
                }
                Err(error) => {
                    tracing::debug!(%error, "request body failed while buffered for retries");
                    return Err(LocalReply::BadRequestBody);
                }
            }
        };
        let replay = replay.unwrap_or_default();
        let deadline = action.timeout.map(|limit| Instant::now() + limit);
        let cluster = self.pools.cluster(&action.cluster);
        let over_http3 = cluster
            .as_ref()
            .is_some_and(|c| c.spec.protocol == crate::upstream::UpstreamProtocol::Http3);
        let per_try = match (policy.per_try_timeout, policy.per_try_idle_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut tried: Vec<SocketAddr> = Vec::new();
        // The unit of `max_retries` the retry in flight holds (none for the first try).
        let mut retry_slot: Option<RetrySlot> = None;
        let mut retries_left = policy.num_retries;
        let mut retry = 0u32;
        loop {
            let mut attempt = Request::from_parts(parts.clone(), replay.body());
            if action.include_attempt_count {
                attempt
                    .headers_mut()
                    .insert(X_ENVOY_ATTEMPT_COUNT, HeaderValue::from(retry + 1));
            }
            let avoid: &[SocketAddr] = if policy.previous_hosts { &tried } else { &[] };
            let picks = if policy.previous_hosts {
                policy.host_picks
            } else {
                1
            };
            let picked = self.note_picked_host(&mut attempt, action);
            let send = self
                .pools
                .send_avoiding(&action.cluster, attempt, avoid, picks);
            let try_limit = match (per_try, deadline) {
                (Some(per_try), Some(deadline)) => Some((Instant::now() + per_try).min(deadline)),
                (Some(per_try), None) => Some(Instant::now() + per_try),
                (None, deadline) => deadline,
            };
            let outcome = match try_limit {
                Some(limit) => tokio::time::timeout_at(limit, send).await.ok(),
                None => Some(send.await),
            };
            let (outcome, failure) = match outcome {
                Some((result, host)) => {
                    if let Some(host) = host {
                        tried.push(host);
                    }
                    match result {
                        Ok(response) => {
                            let retried = policy
                                .retries_response(response.status().as_u16(), response.headers());
                            (Ok(response), retried.then_some(None))
                        }
                        Err(error) => {
                            let failure = try_failure(&error);
                            tracing::debug!(cluster = %action.cluster, %error, "upstream try failed");
                            let retried = policy.retries_failure(failure, over_http3);
                            (
                                Err(LocalReply::Upstream(error)),
                                retried.then_some(Some(failure)),
                            )
                        }
                    }
                }
                None if deadline.is_some_and(|d| Instant::now() >= d) => {
                    // The route's timeout covers every try: no retry after it.
                    self.stats.rq_timeout.inc();
                    self.blame_timeout(picked.as_ref(), action);
                    drop(retry_slot.take());
                    return Err(LocalReply::UpstreamTimeout);
                }
                None => {
                    if let Some(cluster) = &cluster {
                        cluster.stats.rq_per_try_timeout.inc();
                    }
                    let retried = policy.retries_failure(TryFailure::PerTryTimeout, over_http3);
                    (
                        Err(LocalReply::UpstreamTimeout),
                        retried.then_some(Some(TryFailure::PerTryTimeout)),
                    )
                }
            };
            // The retry in flight has its outcome: its unit goes back (Envoy's resetRetry).
            let was_retry = retry_slot.take().is_some();
            let Some(cluster) = &cluster else {
                return outcome;
            };
            if failure.is_none() {
                if was_retry {
                    cluster.stats.rq_retry_success.inc();
                }
                return outcome;
            }
            if retries_left == 0 {
                cluster.stats.rq_retry_limit_exceeded.inc();
                note_retry_flag(RetryFlag::LimitExceeded);
                return outcome;
            }
            retries_left -= 1;
            let Some(slot) = cluster.try_retry() else {
                note_retry_flag(RetryFlag::Overflow);
                return outcome;
            };
            retry_slot = Some(slot);
            cluster.stats.rq_retry.inc();
            let wait = policy.back_off(retry);
            retry += 1;
            // The abandoned try's response (its body unread) is dropped here, freeing its
            // connection, before the wait.
            drop(outcome);
            self.back_off(wait, deadline).await?;
        }
    }

    /// Waits `wait` before a retry; when the route's `deadline` comes first, waits until
    /// then and answers with the route's timeout (as Envoy's global timer fires during a
    /// back-off).
    async fn back_off(&self, wait: Duration, deadline: Option<Instant>) -> Result<(), LocalReply> {
        match deadline {
            Some(deadline) if Instant::now() + wait >= deadline => {
                tokio::time::sleep_until(deadline).await;
                self.stats.rq_timeout.inc();
                Err(LocalReply::UpstreamTimeout)
            }
            _ => {
                tokio::time::sleep(wait).await;
                Ok(())
            }
        }
    }
}

/// What kind of failure `error` is, for the retry policy.
fn try_failure(error: &UpstreamError) -> TryFailure {
    match error {
        UpstreamError::ConnectFailed { .. }
        | UpstreamError::ConnectTimeout { .. }
        | UpstreamError::Tls { .. } => TryFailure::ConnectFailure,
        UpstreamError::Reset { reason, .. } if reason.contains("refused") => {
            TryFailure::RefusedStream
        }
        UpstreamError::Reset { .. } => TryFailure::Reset,
        UpstreamError::ConnectionOverflow(_)
        | UpstreamError::PendingOverflow(_)
        | UpstreamError::RequestOverflow(_) => TryFailure::Overflow,
        UpstreamError::UnknownCluster(_)
        | UpstreamError::NoHealthyHost(_)
        | UpstreamError::NoOriginalDestination { .. }
        | UpstreamError::Config { .. } => TryFailure::Other,
    }
}

/// A request body read into memory for replay: its data and trailers.
#[derive(Debug, Default)]
struct Buffered {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

/// What reading a body for replay gave.
enum Read {
    /// All of it, within the limit.
    Whole(Buffered),
    /// More than the limit: what was read, followed by the rest, to send once.
    TooLarge(Body),
}

impl Buffered {
    /// Reads `body` to its end, unless it holds more than `limit` bytes.
    async fn read(mut body: Body, limit: usize) -> Result<Read, BoxError> {
        let mut buffered = Buffered::default();
        let mut size = 0usize;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame?;
            match frame.into_data() {
                Ok(data) => {
                    size = size.saturating_add(data.len());
                    buffered.chunks.push(data);
                    if size > limit {
                        return Ok(Read::TooLarge(body::boxed(Replay {
                            chunks: buffered.chunks.into(),
                            trailers: None,
                            rest: Some(body),
                        })));
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        buffered.trailers = Some(trailers);
                    }
                }
            }
        }
        Ok(Read::Whole(buffered))
    }

    /// The body again, for one try.
    fn body(&self) -> Body {
        if self.chunks.is_empty() && self.trailers.is_none() {
            return body::empty();
        }
        body::boxed(Replay {
            chunks: self.chunks.iter().cloned().collect(),
            trailers: self.trailers.clone(),
            rest: None,
        })
    }
}

/// A body sent from memory (`chunks`, then `trailers`), then from `rest` where the buffer
/// could not hold it all.
struct Replay {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Body>,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(rest) = self.rest.as_mut() {
            return Pin::new(rest).poll_frame(cx);
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(buffered));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(buffered));
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn chunked(parts: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_replays_whole_each_time() {
        let Ok(Read::Whole(buffered)) = Buffered::read(chunked(&["ab", "cd"]), 4).await else {
            panic!("fits")
        };
        for _ in 0..2 {
            let body = buffered.body();
            assert_eq!(body.size_hint().exact(), Some(4));
            let bytes = body.collect().await.map(|c| c.to_bytes()).ok();
            assert_eq!(bytes.as_deref(), Some(&b"abcd"[..]));
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_sent_whole_once() {
        let Ok(Read::TooLarge(body)) = Buffered::read(chunked(&["ab", "cd", "ef"]), 3).await else {
            panic!("over the limit")
        };
        let bytes = body.collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(bytes.as_deref(), Some(&b"abcdef"[..]));
    }

    #[test]
    fn upstream_errors_map_to_the_failures_envoy_retries() {
        let reset = |reason: &str| UpstreamError::Reset {
            cluster: "c".into(),
            host: "h".into(),
            reason: reason.into(),
        };
        assert_eq!(try_failure(&reset("connection closed")), TryFailure::Reset);
        assert_eq!(
            try_failure(&reset("stream refused")),
            TryFailure::RefusedStream
        );
        let connect = UpstreamError::ConnectFailed {
            cluster: "c".into(),
            host: "h".into(),
            reason: "Connection refused".into(),
        };
        assert_eq!(try_failure(&connect), TryFailure::ConnectFailure);
        assert_eq!(
            try_failure(&UpstreamError::RequestOverflow("c".into())),
            TryFailure::Overflow
        );
        assert_eq!(
            try_failure(&UpstreamError::NoHealthyHost("c".into())),
            TryFailure::Other
        );
    }
}
