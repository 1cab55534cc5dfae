//! What the two stream forms share: the stream's loop ([`drive`]), how a stream ended, the
//! shutdown wait, the queue the requests go out through, the names of an interest, the NACK's
//! `error_detail`.

use super::{Interest, MAX_NAMES_PER_SUBSCRIPTION, MAX_RESOURCES_PER_RESPONSE, Subscriber};
use crate::xds::resource::ResourceType;
use envoy_types::pb::google::rpc::Status;
use futures_util::Stream;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Requests waiting to go out on a stream. A response causes at most one request per type,
/// so a few responses' worth is plenty.
pub(super) const REQUEST_QUEUE: usize = 64;

/// The code of a NACK's `error_detail`: gRPC's `INTERNAL`, as Envoy sends it (checked with
/// Envoy 1.40 in `tests/tests/xds_envoy.rs`), so a control plane sees the same NACK from both.
pub const NACK_CODE: i32 = 13;

/// The longest `error_detail` message: Envoy truncates it to 4 KiB (the reason may quote a
/// resource, which the control plane controls).
pub const MAX_NACK_MESSAGE_BYTES: usize = 4096;

/// The type URL of `envoy.service.discovery.v3.Resource`, the wrapper a state-of-the-world
/// response may put around each resource (with its name and version).
pub(super) const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// How one stream went.
#[derive(Debug)]
pub(super) struct Outcome {
    /// Its call was answered (the subscriber was told it is connected).
    pub established: bool,
    /// Responses received on it.
    pub responses: u64,
    /// Why it ended.
    pub end: End,
}

/// Why a stream ended.
#[derive(Debug)]
pub(super) enum End {
    /// The shutdown signal.
    Shutdown,
    /// The control plane or the connection ended it.
    Closed(String),
}

/// The request queue is gone: the stream ended.
pub(super) struct QueueClosed;

/// One stream form's state (state-of-the-world or delta), as [`drive`] runs it.
pub(super) trait Form {
    /// The responses of its call.
    type Response;

    /// Who the resources go to.
    fn subscriber(&self) -> &Arc<dyn Subscriber>;

    /// Sends a subscription for every type whose interest changed.
    fn follow(&mut self) -> impl Future<Output = Result<(), QueueClosed>> + Send;

    /// Applies one response, ACKs or NACKs it, and follows the interest of every type.
    fn respond(
        &mut self,
        response: Self::Response,
    ) -> impl Future<Output = Result<(), QueueClosed>> + Send;
}

/// Runs one stream until it ends or shutdown is asked for: the first subscriptions are queued
/// before `call` is made (a server may answer the call's headers only with its first
/// response), then each response, interest change and shutdown is acted on.
pub(super) async fn drive<F, C>(
    form: &mut F,
    call: C,
    shutdown: &mut watch::Receiver<bool>,
) -> Outcome
where
    F: Form,
    C: Future<Output = Result<tonic::Response<tonic::Streaming<F::Response>>, tonic::Status>>,
{
    let closed = |established, responses, reason| Outcome {
        established,
        responses,
        end: End::Closed(reason),
    };
    let shut = |established, responses| Outcome {
        established,
        responses,
        end: End::Shutdown,
    };
    if form.follow().await.is_err() {
        return closed(false, 0, "request queue closed".into());
    }
    let mut inbound = tokio::select! {
        answer = call => match answer {
            Ok(response) => response.into_inner(),
            Err(status) => return closed(false, 0, status_text(&status)),
        },
        () = stopped(shutdown) => return shut(false, 0),
    };
    form.subscriber().connected(true);
    tracing::info!("xDS: stream to the control plane established");
    let mut responses = 0;
    let mut signal = form.subscriber().interest_changes();
    loop {
        let response = match next_wake(&mut inbound, &mut signal, shutdown).await {
            Wake::Stop => return shut(true, responses),
            Wake::SignalGone => {
                signal = None;
                continue;
            }
            Wake::Interest => {
                let followed = tokio::select! {
                    followed = form.follow() => followed,
                    () = stopped(shutdown) => return shut(true, responses),
                };
                if followed.is_err() {
                    return closed(true, responses, "request queue closed".into());
                }
                continue;
            }
            Wake::Message(Ok(Some(response))) => response,
            Wake::Message(Ok(None)) => {
                return closed(true, responses, "the control plane ended the stream".into());
            }
            Wake::Message(Err(status)) => return closed(true, responses, status_text(&status)),
        };
        responses += 1;
        let handled = tokio::select! {
            handled = form.respond(response) => handled,
            () = stopped(shutdown) => return shut(true, responses),
        };
        if handled.is_err() {
            return closed(true, responses, "request queue closed".into());
        }
    }
}

/// What a stream's loop wakes up for.
pub(super) enum Wake<T> {
    /// The next response (`None`: the control plane ended the stream).
    Message(Result<Option<T>, tonic::Status>),
    /// The subscriber says its interest changed outside a response.
    Interest,
    /// The subscriber's interest signal is gone: stop watching it.
    SignalGone,
    /// Shutdown.
    Stop,
}

/// Waits for the next thing a stream must act on.
pub(super) async fn next_wake<T>(
    inbound: &mut tonic::Streaming<T>,
    signal: &mut Option<watch::Receiver<()>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Wake<T> {
    let interest = async {
        match signal.as_mut() {
            Some(signal) => signal.changed().await.is_ok(),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        message = inbound.message() => Wake::Message(message),
        alive = interest => if alive { Wake::Interest } else { Wake::SignalGone },
        () = stopped(shutdown) => Wake::Stop,
    }
}

/// Resolves when shutdown is asked for: the signal turned `true` or its sender is gone.
pub(super) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The request side of a stream: what is queued on `queue`, in order, until the stream's
/// owner drops the sender.
pub(super) fn outgoing<T: Send + 'static>(queue: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures_util::stream::unfold(queue, |mut queue| async move {
        queue.recv().await.map(|request| (request, queue))
    })
}

/// The call's request: the stream of `requests`, with the bootstrap's
/// `grpc_services[].initial_metadata` as gRPC metadata (a name or value gRPC cannot carry is
/// left out, with a warning).
pub(super) fn call<S>(requests: S, metadata: &[(String, String)]) -> tonic::Request<S> {
    let mut request = tonic::Request::new(requests);
    for (name, value) in metadata {
        let key = tonic::metadata::AsciiMetadataKey::from_bytes(name.as_bytes());
        let value = tonic::metadata::AsciiMetadataValue::try_from(value.as_str());
        match (key, value) {
            (Ok(key), Ok(value)) => {
                request.metadata_mut().insert(key, value);
            }
            _ => {
                tracing::warn!(%name, "xds: initial_metadata entry cannot be sent as gRPC metadata; left out")
            }
        }
    }
    request
}

/// Whether `interest` asks for anything: a type that was never subscribed and is asked for
/// by no name is left alone (no request at all).
pub(super) fn asks_for_something(interest: &Interest) -> bool {
    match interest {
        Interest::Wildcard => true,
        Interest::Names(names) => !names.is_empty(),
    }
}

/// The names of a subscription to `interest`, cut to [`MAX_NAMES_PER_SUBSCRIPTION`] (with an
/// error logged); a wildcard is `wildcard_names`.
pub(super) fn names(
    kind: ResourceType,
    interest: &Interest,
    wildcard_names: &[&str],
) -> Vec<String> {
    match interest {
        Interest::Wildcard => wildcard_names
            .iter()
            .map(|name| (*name).to_owned())
            .collect(),
        Interest::Names(names) => bounded_names(kind, names.iter()),
    }
}

/// `names`, cut to [`MAX_NAMES_PER_SUBSCRIPTION`] with an error logged.
pub(super) fn bounded_names<'a>(
    kind: ResourceType,
    names: impl ExactSizeIterator<Item = &'a String>,
) -> Vec<String> {
    let count = names.len();
    if count > MAX_NAMES_PER_SUBSCRIPTION {
        tracing::error!(
            type = kind.short_name(),
            count,
            limit = MAX_NAMES_PER_SUBSCRIPTION,
            "xDS subscription has too many names; subscribing to the first ones only"
        );
    }
    names.take(MAX_NAMES_PER_SUBSCRIPTION).cloned().collect()
}

/// A response's resource count checked against [`MAX_RESOURCES_PER_RESPONSE`].
pub(super) fn check_count(count: usize) -> Result<(), String> {
    if count > MAX_RESOURCES_PER_RESPONSE {
        return Err(format!(
            "the response carries {count} resources, over weir's limit of \
             {MAX_RESOURCES_PER_RESPONSE}"
        ));
    }
    Ok(())
}

/// The `error_detail` of a NACK.
pub(super) fn error_detail(mut message: String) -> Status {
    if message.len() > MAX_NACK_MESSAGE_BYTES {
        let mut end = MAX_NACK_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    Status {
        code: NACK_CODE,
        message,
        details: Vec::new(),
    }
}

/// The text of a gRPC status that ended a stream.
pub(super) fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&super::transport::error_chain(source));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_nack_message_is_cut_at_a_char_boundary() {
        let status = error_detail("é".repeat(MAX_NACK_MESSAGE_BYTES));
        assert_eq!(status.code, NACK_CODE);
        assert!(status.message.len() <= MAX_NACK_MESSAGE_BYTES);
        assert!(status.message.len() > MAX_NACK_MESSAGE_BYTES - 2);
        assert_eq!(error_detail("short".into()).message, "short");
    }
}
