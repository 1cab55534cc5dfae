//! The host side of a module's stream contexts: what one HTTP stream holds while its filters
//! run (header maps, buffered bodies, trailers, properties), or one L4 connection through
//! network filters (the bytes each filter holds), and what a module asks of it
//! ([`StreamEvent`]s: continue, local reply, close).
//!
//! The data lives in the VM's store ([`super::state::HostState::streams`]) for the life of the
//! stream, so host functions called from any context (a callout's answer on the root context
//! that switches with `proxy_set_effective_context`) find it. The filter chain moves headers in
//! before a callback and takes them back after.

use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;
use tokio::sync::mpsc;

/// A header map as the ABI sees it: lowercase keys, pseudo-headers as ordinary entries, in
/// order, repeated keys kept.
pub type HeaderPairs = Vec<(String, Bytes)>;

/// One value call a module made on a header map (`proxy_add/replace/remove_header_map_value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Append a value.
    Add(String, Bytes),
    /// Set the value, dropping every other value of the name.
    Replace(String, Bytes),
    /// Drop every value of the name.
    Remove(String),
}

/// What the module did to a stream's request or response header map since the chain handed
/// it over.
///
/// Why: most filters change a header or two. Replaying those few edits on the request or
/// response head costs far less than rebuilding the head from the whole map after every
/// callback, which is what [`MapChanges::Rewritten`] (a pseudo-header or `host` touched, or
/// `proxy_set_header_map_pairs`) still needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MapChanges {
    /// Untouched: the head is as the chain gave it.
    #[default]
    None,
    /// Only these value edits on ordinary headers, in order.
    Edits(Vec<HeaderEdit>),
    /// Anything more: rebuild the head from the map.
    Rewritten,
}

impl MapChanges {
    /// Records one more edit.
    pub fn push(&mut self, edit: HeaderEdit) {
        let name = match &edit {
            HeaderEdit::Add(name, _) | HeaderEdit::Replace(name, _) | HeaderEdit::Remove(name) => {
                name
            }
        };
        // `:method`, `:path`, `:authority`, `:status` and `host` live outside the head's
        // header map (or are tied to `:authority`): only a rebuild gets them right.
        if name.starts_with(':') || name == "host" {
            *self = MapChanges::Rewritten;
            return;
        }
        match self {
            MapChanges::None => *self = MapChanges::Edits(vec![edit]),
            MapChanges::Edits(edits) => edits.push(edit),
            MapChanges::Rewritten => {}
        }
    }

    /// Adds what a later filter did to what the earlier ones did.
    pub fn merge(&mut self, later: MapChanges) {
        match (&mut *self, later) {
            (_, MapChanges::None) | (MapChanges::Rewritten, _) => {}
            (_, MapChanges::Rewritten) => *self = MapChanges::Rewritten,
            (MapChanges::None, later) => *self = later,
            (MapChanges::Edits(edits), MapChanges::Edits(more)) => edits.extend(more),
        }
    }
}

/// What a module asked its stream to do; takes effect once the running callback returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// `proxy_continue_stream` (or 0.1.0 `proxy_continue_request/response`).
    Continue(weir_abi::StreamType),
    /// `proxy_send_local_response`.
    LocalResponse(LocalResponse),
    /// `proxy_close_stream`: reset the stream.
    Close,
    /// The VM that held this stream's context failed or was replaced.
    VmFailed,
}

/// A reply a module makes instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u16,
    /// Why (Envoy's response code details).
    pub details: String,
    /// The body.
    pub body: Bytes,
    /// Extra headers.
    pub headers: HeaderPairs,
}

/// The route a stream matched, for the `xds.route_name` and `xds.cluster_name` properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteProps {
    /// The route's `name` (empty when it has none).
    pub name: String,
    /// The cluster it forwards to (empty for a direct response).
    pub cluster: String,
}

/// What is known about a stream outside its headers, for properties.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The route as of the last lookup (on arrival, then after the request filters), shared
    /// by the stream's contexts in every filter.
    pub route: std::sync::Arc<std::sync::Mutex<Option<RouteProps>>>,
    /// The downstream peer.
    pub source: SocketAddr,
    /// The listener's address.
    pub destination: SocketAddr,
    /// Downstream TLS.
    pub tls: bool,
    /// Downstream mutual TLS (a verified client certificate).
    pub mtls: bool,
    /// The downstream protocol (`HTTP/1.1`, `HTTP/2`).
    pub protocol: &'static str,
    /// When the request arrived (the connection was accepted, for a network filter).
    pub start: SystemTime,
    /// The upstream host the stream went to, once one was picked (`upstream.address`),
    /// shared by the stream's contexts in every filter.
    pub upstream: SharedAddress,
}

/// An address learnt while a stream runs (the upstream host), readable from every context.
pub type SharedAddress = std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>;

/// One HTTP context's data inside a VM.
#[derive(Debug)]
pub struct StreamData {
    /// Request headers, as the filters have left them.
    pub request_headers: HeaderPairs,
    /// Request body bytes buffered for the filter.
    pub request_body: Vec<u8>,
    /// Request trailers.
    pub request_trailers: HeaderPairs,
    /// Response headers.
    pub response_headers: HeaderPairs,
    /// Response body bytes buffered for the filter.
    pub response_body: Vec<u8>,
    /// Response trailers.
    pub response_trailers: HeaderPairs,
    /// What the module did to `request_headers` since they were handed over.
    pub request_changes: MapChanges,
    /// What the module did to `response_headers` since they were handed over.
    pub response_changes: MapChanges,
    /// A network filter's downstream bytes not passed on yet (`BufferType::DownstreamData`).
    pub downstream_data: Vec<u8>,
    /// A network filter's upstream bytes not passed on yet (`BufferType::UpstreamData`).
    pub upstream_data: Vec<u8>,
    /// Properties set by the module (filter state).
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Connection and timing.
    pub info: StreamInfo,
    /// Where [`StreamEvent`]s go (the stream's side of the chain listens).
    pub events: mpsc::UnboundedSender<StreamEvent>,
}

impl StreamData {
    /// A stream with empty maps.
    pub fn new(info: StreamInfo, events: mpsc::UnboundedSender<StreamEvent>) -> StreamData {
        StreamData {
            request_headers: Vec::new(),
            request_body: Vec::new(),
            request_trailers: Vec::new(),
            response_headers: Vec::new(),
            response_body: Vec::new(),
            response_trailers: Vec::new(),
            request_changes: MapChanges::None,
            response_changes: MapChanges::None,
            downstream_data: Vec::new(),
            upstream_data: Vec::new(),
            properties: HashMap::new(),
            info,
            events,
        }
    }
}

/// The answer to an HTTP callout, readable while `proxy_on_http_call_response` runs.
#[derive(Debug, Default)]
pub struct CallResponse {
    /// Headers, `:status` first.
    pub headers: HeaderPairs,
    /// The body.
    pub body: Vec<u8>,
    /// Trailers.
    pub trailers: HeaderPairs,
}

/// A callout a module asked for with `proxy_http_call`, started once its callback returns.
#[derive(Debug)]
pub struct PendingCall {
    /// The token the module got.
    pub token: u32,
    /// The cluster.
    pub cluster: String,
    /// Headers with `:method`, `:path`, `:authority`.
    pub headers: HeaderPairs,
    /// The body.
    pub body: Bytes,
    /// Give up after this long.
    pub timeout: std::time::Duration,
}

/// The pairs of an `http::HeaderMap` (names are lowercase already).
pub fn pairs_of(headers: &http::HeaderMap) -> impl Iterator<Item = (String, Bytes)> + '_ {
    headers.iter().map(|(name, value)| {
        (
            name.as_str().to_string(),
            Bytes::copy_from_slice(value.as_bytes()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(name: &str) -> HeaderEdit {
        HeaderEdit::Add(name.into(), Bytes::from_static(b"v"))
    }

    #[test]
    fn value_edits_on_ordinary_headers_are_kept_in_order() {
        let mut changes = MapChanges::None;
        changes.push(add("x-a"));
        changes.push(HeaderEdit::Remove("x-b".into()));
        assert_eq!(
            changes,
            MapChanges::Edits(vec![add("x-a"), HeaderEdit::Remove("x-b".into())])
        );
        let mut later = MapChanges::None;
        later.push(add("x-c"));
        changes.merge(later);
        changes.merge(MapChanges::None);
        let MapChanges::Edits(edits) = &changes else {
            panic!("{changes:?}")
        };
        assert_eq!(edits.len(), 3);
    }

    #[test]
    fn pseudo_headers_and_host_need_a_rebuild() {
        for name in [":path", ":authority", ":status", "host"] {
            let mut changes = MapChanges::None;
            changes.push(add("x-a"));
            changes.push(add(name));
            changes.push(add("x-b"));
            assert_eq!(changes, MapChanges::Rewritten, "{name}");
        }
        let mut changes = MapChanges::None;
        changes.push(add("x-a"));
        changes.merge(MapChanges::Rewritten);
        changes.merge(MapChanges::Edits(vec![add("x-b")]));
        assert_eq!(changes, MapChanges::Rewritten);
    }
}
