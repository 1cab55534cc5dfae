//! The HTTP filter chain: a connection manager's `http_filters` (Wasm plugins) run around the
//! router, as Envoy runs them.
//!
//! ```text
//! request headers  -> filter 0 -> filter 1 -> ... -> next (route + forward)
//! request body     -> filter 0 -> filter 1 -> ... -> upstream
//! response headers <- filter 0 <- filter 1 <- ... <- next's response
//! response body    <- filter 0 <- filter 1 <- ... <- upstream
//! ```
//!
//! The API is [`FilterChain::new`] (per worker, from any list of plugins: a listener's
//! `http_filters`, or an upgrade type's filters), [`FilterChain::is_empty`], and its two
//! halves, [`FilterChain::filter_request`] and [`ResponseFilters::filter_response`], which the
//! stream phases ([`crate::http::phases`]) call with routing and forwarding between them.
//! Because routing runs after the request half, the route is looked up on the headers as the
//! filters left them; the `routes` given to the chain only serve the
//! `xds.route_name`/`xds.cluster_name` properties.
//!
//! Semantics (Envoy's): a callback that returns `Pause` holds its direction until the module
//! calls `proxy_continue_stream`, answers with `proxy_send_local_response` or closes the
//! stream; a paused body keeps buffering, and the filter sees everything buffered so far on
//! each call. The router's answers (the upstream's, or its own 404/503/...) pass back through
//! every filter; a filter's local reply only through the filters before it (checked against
//! Envoy 1.40 with the same modules). A filter whose VM fails answers 500 (or is skipped for the
//! rest of the stream with `fail_open`). The stream's contexts end (`proxy_on_log`,
//! `proxy_on_done`, `proxy_on_delete`) when both bodies are done or dropped.
//!
//! The payload of a tunnel (an upgrade, CONNECT) is a body too, where a filter of the chain
//! reads bodies: see `upgraded_payload` ([`PayloadFilters`]).
//!
//! A filter whose ECDS config did not come in time and has no default
//! ([`FilterChain::with_missing_config`]) answers a bodiless 500 (`NFCF`) at its place, as
//! Envoy's missing-config filter: the filters before it see the request and the answer, those
//! after it nothing; a route that turns it off skips it. Only the first such filter of a chain
//! is kept.
//!
//! Where weir differs: `proxy_close_stream` answers 503 (Envoy resets the stream); admission
//! (header count, refused CONNECT or upgrade) runs inside `next`, after the request filters.
//!
//! A chain with no filters is never entered: the caller checks [`FilterChain::is_empty`].

use super::phases::Filtered;
use crate::body::{self, Body};
use crate::route::RouteTable;
use crate::snapshot::http_manager::MissingConfig;
use crate::upstream::{UpstreamAddress, WorkerPools};
use crate::wasm::{
    Direction, HeaderEdit, HeaderPairs, MapChanges, PluginHandle, StreamEvent, StreamHandle,
    StreamInfo, VmSlot,
};
use crate::wire::ConnectionInfo;
use http::{Request, Response};
use http_body::Body as _;

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use weir_abi::{Action, StreamType};

mod filtered_body;
mod head;
mod upgraded_payload;

use filtered_body::FilteredBody;
use head::{
    bad_request, closed_response, failure_response, local_response, request_pairs, response_pairs,
    route_props_picked,
};
pub use upgraded_payload::{PayloadFilters, PayloadFollows};

/// The filters of one chain on one worker.
pub struct FilterChain {
    slots: Vec<Arc<VmSlot>>,
    /// Per slot, the filter's `name` in `http_filters`, by which a route's
    /// `typed_per_filter_config` turns it off or on, and whether it is off unless a route
    /// turns it on (`disabled`). Empty: no route can.
    names: Vec<(String, bool)>,
    /// Some filter is off unless a route turns it on.
    any_disabled: bool,
    /// A plugin that is not loaded and fails closed: every stream gets a 503.
    unloaded: Option<String>,
    /// The filters whose ECDS config has not come, in order: a request that gets past the
    /// filters before the first of them its route does not turn off gets a 500 from it.
    missing_config: Vec<MissingConfig>,
    /// Most body bytes one filter may hold paused (the listener's
    /// `per_connection_buffer_limit_bytes`).
    buffer_limit: usize,
}

/// Envoy's default `per_connection_buffer_limit_bytes` (kept with the config that sets it).
pub use crate::config::common::DEFAULT_BUFFER_LIMIT;

impl FilterChain {
    /// A chain running `plugins` in order, each in its own VM on this worker, with callouts
    /// through `pools`. Call on the worker's runtime (the VMs' timers start there).
    /// A filter that pauses a body may hold at most `buffer_limit` bytes of it: past that a
    /// request gets 413 and a response is reset, as in Envoy.
    pub fn new(
        plugins: &[Arc<PluginHandle>],
        pools: &WorkerPools,
        buffer_limit: usize,
    ) -> FilterChain {
        let (slots, unloaded) = crate::wasm::slots_of(plugins, pools);
        FilterChain {
            slots,
            names: Vec::new(),
            any_disabled: false,
            unloaded,
            missing_config: Vec::new(),
            buffer_limit,
        }
    }

    /// The chain with the filters whose ECDS config has not come (see
    /// [`crate::snapshot::http_manager::MissingConfig`]): what reaches one gets a 500, as
    /// Envoy's missing-config filter answers.
    pub fn with_missing_config(mut self, missing: Vec<MissingConfig>) -> FilterChain {
        self.missing_config = missing;
        self
    }

    /// The chain with its filters' `names` and `disabled` (one per plugin, in order), so
    /// that a route's `typed_per_filter_config` can turn them off or on.
    pub fn with_names(mut self, names: Vec<(String, bool)>) -> FilterChain {
        self.any_disabled = names.iter().any(|(_, disabled)| *disabled);
        self.names = names;
        self
    }

    /// A chain with no filters.
    pub fn empty() -> FilterChain {
        FilterChain {
            slots: Vec::new(),
            names: Vec::new(),
            any_disabled: false,
            unloaded: None,
            missing_config: Vec::new(),
            buffer_limit: DEFAULT_BUFFER_LIMIT,
        }
    }

    /// Whether there is nothing to run (then the chain need not be called).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.unloaded.is_none() && self.missing_config.is_empty()
    }

    /// Whether a plugin of the chain may read bodies ([`crate::wasm::Plugin::reads_bodies`]):
    /// then the payload of an upgraded stream goes through the chain (see
    /// [`PayloadFilters`]) instead of being spliced.
    pub fn reads_bodies(&self) -> bool {
        self.slots.iter().any(|slot| slot.plugin().reads_bodies())
    }

    /// Runs `request` through the filters, then `next`, then the response back through the
    /// filters in reverse order, as the stream phases do (for tests of the chain alone).
    #[cfg(test)]
    pub async fn run<F, Fut>(
        &self,
        request: Request<Body>,
        conn: &ConnectionInfo,
        routes: &RouteTable,
        next: F,
    ) -> Response<Body>
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: std::future::Future<Output = Response<Body>>,
    {
        match self.filter_request(request, conn, routes).await {
            Filtered::Continue(request, filters) => {
                let response = next(request).await;
                ResponseFilters::filter_response(filters, response).await
            }
            Filtered::Answered(response, filters) => {
                ResponseFilters::filter_response(filters, response).await
            }
        }
    }

    /// The request half of the chain: the request through the filters, on to
    /// routing, or a filter's answer instead; with the filters that are to see the response
    /// (none where the chain could not start).
    ///
    /// A request for a tunnel (an upgrade, CONNECT) on a chain that [reads
    /// bodies](FilterChain::reads_bodies) goes on with [`PayloadFilters`] in its extensions,
    /// and its headers callbacks are told a body follows: the tunnel's payload will be that
    /// body.
    pub async fn filter_request(
        &self,
        mut request: Request<Body>,
        conn: &ConnectionInfo,
        routes: &RouteTable,
    ) -> Filtered<Option<ResponseFilters>> {
        if let Some(plugin) = &self.unloaded {
            tracing::debug!(
                plugin,
                "Wasm plugin not loaded and fail closed: 503 (wasm_fail_stream)"
            );
            return Filtered::Answered(head::unloaded_response(), None);
        }
        let info = StreamInfo {
            source: conn.remote,
            destination: conn.local,
            tls: conn.tls,
            mtls: conn.mtls,
            protocol: crate::wire::WireHead::protocol_name(&request),
            start: std::time::SystemTime::now(),
            route: Arc::new(Mutex::new(route_props_picked(routes, &mut request))),
            upstream: Default::default(),
        };
        let route = info.route.clone();
        // Checked before the filters run: they may rewrite the upgrade headers, but not
        // turn a tunnel into a request or back.
        let payload =
            matches!(super::upgrade::tunnel_kind(&request), Ok(Some(_))) && self.reads_bodies();
        let upstream = info.upstream.clone();
        // The filters the request's route turns off (Envoy decides the chain on the route
        // of the request as it came, before the filters change it) are skipped as a filter
        // failed open is: no context, no callback.
        let overrides = (routes.has_filter_overrides()
            && (!self.names.is_empty() || !self.missing_config.is_empty()))
        .then(|| head::find_route(routes, &request))
        .flatten()
        .map(|route| &route.filters)
        .filter(|overrides| !overrides.is_empty());
        let decide = overrides.is_some() || self.any_disabled;
        let picked = request
            .extensions()
            .get::<crate::route::PickedCluster>()
            .map(|picked| picked.0.as_str());
        // The first filter with no config that the route does not turn off: the filters
        // after it see nothing of the stream.
        let stop = self.missing_config.iter().find(|missing| {
            !overrides
                .and_then(|overrides| overrides.disabled(&missing.name, picked))
                .unwrap_or(missing.disabled)
        });
        let mut filters = Vec::with_capacity(self.slots.len());
        for (index, slot) in self.slots.iter().enumerate() {
            let disabled = decide
                && self.names.get(index).is_some_and(|(name, by_default)| {
                    overrides
                        .and_then(|overrides| overrides.disabled(name, picked))
                        .unwrap_or(*by_default)
                });
            if disabled {
                filters.push(None);
                continue;
            }
            match slot.start_stream(info.clone()) {
                Ok(handle) => filters.push(Some(handle)),
                Err(_) if slot.plugin().fail_open() => filters.push(None),
                Err(_) => return Filtered::Answered(failure_response(), None),
            }
        }
        let resumed = filters.iter().map(|_| Resumed::default()).collect();
        let shared = Arc::new(Shared {
            filters: Mutex::new(filters),
            local_reply: Mutex::new(None),
            resumed: Mutex::new(resumed),
            buffer_limit: self.buffer_limit,
        });
        let order: Vec<usize> = match stop {
            Some(missing) => (0..missing.after.min(self.slots.len())).collect(),
            None => (0..self.slots.len()).collect(),
        };
        match filter_request(&shared, &order, request, payload).await {
            Ok(_) if stop.is_some() => {
                tracing::debug!(
                    filter = stop.map(|missing| missing.name.as_str()),
                    "HTTP filter has no config (ECDS): 500"
                );
                let filters = ResponseFilters {
                    from: Some(order.len()),
                    len: order.len(),
                    shared,
                    upstream,
                };
                Filtered::Answered(head::missing_config_response(), Some(filters))
            }
            Ok(mut request) => {
                if payload {
                    let filters = PayloadFilters::new(shared.clone(), &order);
                    request.extensions_mut().insert(filters);
                }
                *route.lock().unwrap_or_else(PoisonError::into_inner) =
                    route_props_picked(routes, &mut request);
                let filters = ResponseFilters {
                    from: None,
                    len: order.len(),
                    shared,
                    upstream,
                };
                Filtered::Continue(request, Some(filters))
            }
            Err(reply) => {
                let filters = ResponseFilters {
                    from: Some(reply.seen_by()),
                    len: order.len(),
                    shared,
                    upstream,
                };
                Filtered::Answered(reply.response, Some(filters))
            }
        }
    }
}

/// The filters of one stream that saw its request, to see its response (the response half
/// of the chain, [`ResponseFilters::filter_response`]).
pub struct ResponseFilters {
    /// Where a filter answered instead of the upstream: how many filters, from the first,
    /// see that answer ([`FilterReply::seen_by`]).
    from: Option<usize>,
    /// How many filters the chain has.
    len: usize,
    shared: Arc<Shared>,
    /// The upstream host, for the filters' `upstream.address`.
    upstream: Arc<Mutex<Option<std::net::SocketAddr>>>,
}

impl ResponseFilters {
    /// Runs `response` back through the filters (none: it is returned as it is). As in
    /// Envoy, a response passes back through the filters that saw the request: all of them
    /// for the upstream's (or the router's) answer, those before a filter that replied. A
    /// reply a filter made while the request body streamed replaces the upstream's answer.
    pub async fn filter_response(
        filters: Option<Self>,
        response: Response<Body>,
    ) -> Response<Body> {
        let Some(filters) = filters else {
            return response;
        };
        let (seen_by, response) = match filters.from {
            Some(seen_by) => (seen_by, response),
            None => {
                if let Some(host) = response.extensions().get::<UpstreamAddress>() {
                    *filters
                        .upstream
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(host.0);
                }
                match filters.shared.take_local_reply() {
                    Some(reply) => (reply.seen_by(), reply.response),
                    None => (filters.len, response),
                }
            }
        };
        let reverse: Vec<usize> = (0..seen_by).rev().collect();
        filter_response(filters.shared, reverse, response).await
    }
}

/// The request phase: headers through every filter, then the body wrapped to run through
/// them as it streams. `Err` is the reply to answer with instead. With `payload` (a tunnel
/// whose payload will go through the filters) a body follows the headers, but not as this
/// request's body, which is left as it is.
async fn filter_request(
    shared: &Arc<Shared>,
    order: &[usize],
    request: Request<Body>,
    payload: bool,
) -> Result<Request<Body>, FilterReply> {
    let (mut parts, request_body) = request.into_parts();
    let end_of_stream = request_body.is_end_stream();
    let pairs = request_pairs(&parts);
    let headers_end = end_of_stream && !payload;
    let changes = run_headers(shared, order, Direction::Request, pairs, headers_end).await?;
    head::apply_request(&mut parts, changes).map_err(|problem| FilterReply {
        from: order.len(),
        sender_sees: false,
        response: bad_request(problem),
    })?;
    let request_body = if end_of_stream || payload {
        // Envoy calls no body callback for a request without a body.
        request_body
    } else {
        body::boxed(FilteredBody::new(
            request_body,
            shared.clone(),
            order.to_vec(),
            Direction::Request,
        ))
    };
    Ok(Request::from_parts(parts, request_body))
}

/// The response phase: headers through the filters in reverse order, then the body wrapped.
/// The stream's contexts end when the returned body is done (or dropped).
async fn filter_response(
    shared: Arc<Shared>,
    reverse: Vec<usize>,
    response: Response<Body>,
) -> Response<Body> {
    let (mut parts, response_body) = response.into_parts();
    let end_of_stream = response_body.is_end_stream();
    // An established tunnel's payload follows its answer (see [`PayloadFilters`]).
    let headers_end = end_of_stream && parts.extensions.get::<PayloadFollows>().is_none();
    let pairs = response_pairs(&parts);
    let changes =
        match run_headers(&shared, &reverse, Direction::Response, pairs, headers_end).await {
            Ok(changes) => changes,
            Err(reply) => return reply.response,
        };
    head::apply_response(&mut parts, changes);
    if end_of_stream {
        return Response::from_parts(parts, response_body);
    }
    let response_body = body::boxed(FilteredBody::new(
        response_body,
        shared,
        reverse,
        Direction::Response,
    ));
    Response::from_parts(parts, response_body)
}

/// One stream's contexts, shared by the chain and the two bodies. Locked only for a callback
/// (never across an `.await`).
struct Shared {
    /// Per filter: its context, or `None` once it is skipped (failed open).
    filters: Mutex<Vec<Option<StreamHandle>>>,
    /// A local reply a filter made while the request body was streaming.
    local_reply: Mutex<Option<FilterReply>>,
    /// Per filter: `proxy_continue_stream` calls read off its channel by the other direction
    /// (both directions of an upgraded stream run at once), kept for the one they resume.
    resumed: Mutex<Vec<Resumed>>,
    /// Most body bytes one filter may hold paused.
    buffer_limit: usize,
}

/// One filter's continues kept for a direction, by [`side`].
#[derive(Default)]
struct Resumed {
    /// A continue arrived for this direction.
    pending: [bool; 2],
    /// The task waiting for this direction's continue.
    wakers: [Option<Waker>; 2],
}

/// The index of `direction` in [`Resumed`].
fn side(direction: Direction) -> usize {
    match direction {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

/// A response a filter made (a local reply, or a 500 for its failure) instead of the
/// upstream's.
struct FilterReply {
    /// The position of the filter that made it: the filters before it see it (and, with
    /// `sender_sees`, that filter too), as they saw the request; those after it do not.
    from: usize,
    /// Whether the filter that made it sees it too: its own local reply, as in Envoy (whose
    /// Wasm filter is called back with the reply it sent), not a reply made for its failure.
    sender_sees: bool,
    response: Response<Body>,
}

impl FilterReply {
    /// How many filters, from the first, see this reply on its way back.
    fn seen_by(&self) -> usize {
        self.from + usize::from(self.sender_sees)
    }
}

impl Shared {
    fn take_local_reply(&self) -> Option<FilterReply> {
        self.local_reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn set_local_reply(&self, reply: FilterReply) {
        *self
            .local_reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reply);
    }

    /// Runs `f` on filter `index` if it is still in the chain.
    fn with_filter<R>(&self, index: usize, f: impl FnOnce(&mut StreamHandle) -> R) -> Option<R> {
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        filters.get_mut(index).and_then(Option::as_mut).map(f)
    }

    /// After a failure of filter `index`: skip it when it fails open (`true`), else `false`.
    fn fail(&self, index: usize) -> bool {
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = filters.get_mut(index) else {
            return false;
        };
        let fail_open = slot.as_ref().is_some_and(|h| h.plugin().fail_open());
        if fail_open {
            *slot = None;
        }
        fail_open
    }

    /// Waits for what filter `index` asks after pausing `direction`.
    async fn wait(&self, index: usize, direction: Direction) -> Option<StreamEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx, index, direction)).await
    }

    fn poll_event(
        &self,
        cx: &mut Context<'_>,
        index: usize,
        direction: Direction,
    ) -> Poll<Option<StreamEvent>> {
        if self.take_resumed(index, direction, cx.waker()) {
            return Poll::Ready(Some(StreamEvent::Continue(stream_type(direction))));
        }
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(Some(handle)) = filters.get_mut(index) else {
            return Poll::Ready(None);
        };
        loop {
            match handle.events().poll_recv(cx) {
                Poll::Ready(Some(StreamEvent::Continue(t))) if t != stream_type(direction) => {
                    self.resume_other(index, t);
                }
                other => return other,
            }
        }
    }

    /// An event other than a continue that arrived during a callback of `direction` that did
    /// not pause. A continue of that direction means nothing then and is dropped; one of the
    /// other direction is kept for it.
    fn pending_event(&self, index: usize, direction: Direction) -> Option<StreamEvent> {
        self.with_filter(index, |handle| {
            while let Ok(event) = handle.events().try_recv() {
                match event {
                    StreamEvent::Continue(t) if t != stream_type(direction) => {
                        self.resume_other(index, t);
                    }
                    StreamEvent::Continue(_) => {}
                    event => return Some(event),
                }
            }
            None
        })
        .flatten()
    }

    /// Whether a continue for `direction` of filter `index` was kept (taking it); if not,
    /// `waker` is woken when one is.
    fn take_resumed(&self, index: usize, direction: Direction, waker: &Waker) -> bool {
        let mut resumed = self.resumed.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = resumed.get_mut(index) else {
            return false;
        };
        let side = side(direction);
        if std::mem::take(&mut entry.pending[side]) {
            entry.wakers[side] = None;
            return true;
        }
        entry.wakers[side] = Some(waker.clone());
        false
    }

    /// Keeps a continue of `stream_type` (read off filter `index`'s channel by the other
    /// direction) for the direction it resumes, and wakes that direction.
    fn resume_other(&self, index: usize, stream_type: StreamType) {
        let direction = match stream_type {
            StreamType::HttpRequest => Direction::Request,
            StreamType::HttpResponse => Direction::Response,
            _ => return,
        };
        let mut resumed = self.resumed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = resumed.get_mut(index) {
            entry.pending[side(direction)] = true;
            if let Some(waker) = entry.wakers[side(direction)].take() {
                waker.wake();
            }
        }
    }

    /// Forgets a continue kept for `direction` of filter `index`: called before each of its
    /// callbacks of that direction, whose answer supersedes it.
    fn forget_resumed(&self, index: usize, direction: Direction) {
        let mut resumed = self.resumed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = resumed.get_mut(index) {
            entry.pending[side(direction)] = false;
        }
    }
}

fn stream_type(direction: Direction) -> StreamType {
    match direction {
        Direction::Request => StreamType::HttpRequest,
        Direction::Response => StreamType::HttpResponse,
    }
}

/// What a filter's turn ended with.
enum Outcome {
    /// Go on to the next filter.
    Next,
    /// Answer with this response; `true` where the filter that made it sees it on its way
    /// back (its own local reply, as in Envoy), `false` where it does not (a failure's 500,
    /// a closed stream).
    Reply(Response<Body>, bool),
}

/// What to do after filter `index` answered `event` (or failed, `None`/`VmFailed`).
fn on_event(shared: &Shared, index: usize, event: Option<StreamEvent>) -> Outcome {
    match event {
        Some(StreamEvent::Continue(_)) => Outcome::Next,
        Some(StreamEvent::LocalResponse(reply)) => Outcome::Reply(local_response(reply), true),
        Some(StreamEvent::Close) => Outcome::Reply(closed_response(), false),
        Some(StreamEvent::VmFailed) | None => {
            if shared.fail(index) {
                Outcome::Next
            } else {
                Outcome::Reply(failure_response(), false)
            }
        }
    }
}

/// What the headers callbacks of one direction did to the head, for [`head::apply_request`]
/// and [`head::apply_response`].
enum HeadChanges {
    /// Nothing: the head stays as it is.
    None,
    /// Value edits on ordinary headers, in the order the filters made them.
    Edits(Vec<HeaderEdit>),
    /// The map as the last filter left it: the head is rebuilt from it.
    Rewritten(HeaderPairs),
}

/// Runs the headers callbacks of `direction` over filters `order`, starting from `pairs` (the
/// head as the ABI's map); returns what they changed, or the response to answer with.
async fn run_headers(
    shared: &Shared,
    order: &[usize],
    direction: Direction,
    mut pairs: HeaderPairs,
    end_of_stream: bool,
) -> Result<HeadChanges, FilterReply> {
    let mut changes = MapChanges::None;
    for (position, &index) in order.iter().enumerate() {
        let reply = |response, sender_sees| FilterReply {
            from: position,
            sender_sees,
            response,
        };
        shared.forget_resumed(index, direction);
        // Nothing after the last filter reads `pairs` unless the head must be rebuilt from
        // the final map (then it is read back below): the last filter may have it outright.
        let last = position + 1 == order.len();
        let given = if last && changes != MapChanges::Rewritten {
            std::mem::take(&mut pairs)
        } else {
            pairs.clone()
        };
        let called = shared.with_filter(index, |h| h.headers(direction, given, end_of_stream));
        let outcome = match called {
            None => continue,
            Some(Err(_)) => on_event(shared, index, None),
            Some(Ok(action)) => match shared.pending_event(index, direction) {
                Some(event) => on_event(shared, index, Some(event)),
                None if action == Action::Pause => {
                    let event = shared.wait(index, direction).await;
                    on_event(shared, index, event)
                }
                None => Outcome::Next,
            },
        };
        if let Outcome::Reply(response, sender_sees) = outcome {
            return Err(reply(response, sender_sees));
        }
        // A filter skipped after failing open (`None`) changed nothing.
        let more = match shared.with_filter(index, |h| h.take_header_changes(direction)) {
            Some(Ok(more)) => more,
            Some(Err(_)) => match on_event(shared, index, None) {
                Outcome::Reply(response, sender_sees) => {
                    return Err(reply(response, sender_sees));
                }
                Outcome::Next => continue,
            },
            None => continue,
        };
        if more == MapChanges::None {
            continue;
        }
        changes.merge(more);
        // The next filter, or the rebuild, sees the map as this filter left it.
        if !last || changes == MapChanges::Rewritten {
            match shared.with_filter(index, |h| h.current_headers(direction, false)) {
                Some(Ok(current)) => pairs = current,
                Some(Err(_)) => {
                    if let Outcome::Reply(response, sender_sees) = on_event(shared, index, None) {
                        return Err(reply(response, sender_sees));
                    }
                }
                None => {}
            }
        }
    }
    Ok(match changes {
        MapChanges::None => HeadChanges::None,
        MapChanges::Edits(edits) => HeadChanges::Edits(edits),
        MapChanges::Rewritten => HeadChanges::Rewritten(pairs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_chain_is_empty() {
        assert!(FilterChain::empty().is_empty());
    }
}
