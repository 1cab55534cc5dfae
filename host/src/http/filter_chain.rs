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
//! `http_filters`, or an upgrade type's filters), [`FilterChain::is_empty`] and
//! [`FilterChain::run`], which wraps whatever produces the response (`next`). Because routing
//! runs inside `next`, the route is looked up on the headers as the filters left them; the
//! `routes` given to `run` only serve the `xds.route_name`/`xds.cluster_name` properties.
//!
//! Semantics (Envoy's): a callback that returns `Pause` holds its direction until the module
//! calls `proxy_continue_stream`, answers with `proxy_send_local_response` or closes the
//! stream; a paused body keeps buffering, and the filter sees everything buffered so far on
//! each call. A filter whose VM fails answers 500 (or is skipped for the rest of the stream
//! with `fail_open`). The stream's contexts end (`proxy_on_log`, `proxy_on_done`,
//! `proxy_on_delete`) when both bodies are done or dropped.
//!
//! A chain with no filters is never entered: the caller checks [`FilterChain::is_empty`].

use super::stream::ConnectionInfo;
use crate::body::{self, Body, BoxError};
use crate::route::{RouteAction, RouteTable};
use crate::upstream::WorkerPools;
use crate::wasm::{
    Direction, HeaderPairs, LocalResponse, Plugin, RouteProps, SlotError, StreamEvent,
    StreamHandle, StreamInfo, VmSlot,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::{Body as _, Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use weir_abi::{Action, StreamType};

/// The filters of one chain on one worker.
pub struct FilterChain {
    slots: Vec<Arc<VmSlot>>,
}

impl FilterChain {
    /// A chain running `plugins` in order, each in its own VM on this worker, with callouts
    /// through `pools`. Call on the worker's runtime (the VMs' timers start there).
    pub fn new(plugins: &[Arc<Plugin>], pools: &WorkerPools) -> FilterChain {
        FilterChain {
            slots: plugins
                .iter()
                .map(|plugin| VmSlot::new(plugin.clone(), pools.clone()))
                .collect(),
        }
    }

    /// A chain with no filters.
    pub fn empty() -> FilterChain {
        FilterChain { slots: Vec::new() }
    }

    /// Whether there is nothing to run (then [`FilterChain::run`] need not be called).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Runs `request` through the filters, then `next` (routing and forwarding), then the
    /// response back through the filters in reverse order. Never fails: a filter's failure
    /// or local reply is the response.
    pub async fn run<F, Fut>(
        &self,
        request: Request<Body>,
        conn: &ConnectionInfo,
        routes: &RouteTable,
        next: F,
    ) -> Response<Body>
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        let info = StreamInfo {
            source: conn.remote,
            destination: conn.local,
            tls: conn.tls,
            protocol: protocol_name(request.version()),
            start: std::time::SystemTime::now(),
            route: Arc::new(Mutex::new(route_props(routes, &request))),
        };
        let route = info.route.clone();
        let mut filters = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            match slot.start_stream(info.clone()) {
                Ok(handle) => filters.push(Some(handle)),
                Err(_) if slot.plugin().fail_open() => filters.push(None),
                Err(_) => return failure_response(),
            }
        }
        let shared = Arc::new(Shared {
            filters: Mutex::new(filters),
            local_reply: Mutex::new(None),
        });
        let order: Vec<usize> = (0..self.slots.len()).collect();
        let response = match filter_request(&shared, &order, request).await {
            Ok(request) => {
                *route.lock().unwrap_or_else(PoisonError::into_inner) =
                    route_props(routes, &request);
                let response = next(request).await;
                shared.take_local_reply().unwrap_or(response)
            }
            // As in Envoy, local replies pass through the response callbacks too.
            Err(reply) => reply,
        };
        let reverse: Vec<usize> = order.into_iter().rev().collect();
        filter_response(shared, reverse, response).await
    }
}

/// The request phase: headers through every filter, then the body wrapped to run through
/// them as it streams. `Err` is the reply to answer with instead.
async fn filter_request(
    shared: &Arc<Shared>,
    order: &[usize],
    request: Request<Body>,
) -> Result<Request<Body>, Response<Body>> {
    let (mut parts, request_body) = request.into_parts();
    let end_of_stream = request_body.is_end_stream();
    let pairs = request_pairs(&parts);
    let pairs = run_headers(shared, order, Direction::Request, pairs, end_of_stream).await?;
    apply_request_pairs(&mut parts, &pairs).map_err(bad_request)?;
    let request_body = if end_of_stream {
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
    let pairs = response_pairs(&parts);
    let pairs =
        match run_headers(&shared, &reverse, Direction::Response, pairs, end_of_stream).await {
            Ok(pairs) => pairs,
            Err(reply) => return reply,
        };
    apply_response_pairs(&mut parts, &pairs);
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
    local_reply: Mutex<Option<Response<Body>>>,
}

impl Shared {
    fn take_local_reply(&self) -> Option<Response<Body>> {
        self.local_reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn set_local_reply(&self, response: Response<Body>) {
        *self
            .local_reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(response);
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
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(Some(handle)) = filters.get_mut(index) else {
            return Poll::Ready(None);
        };
        loop {
            match handle.events().poll_recv(cx) {
                Poll::Ready(Some(StreamEvent::Continue(t))) if t != stream_type(direction) => {}
                other => return other,
            }
        }
    }

    /// A request or response event that arrived during a callback that did not pause.
    fn pending_event(&self, index: usize) -> Option<StreamEvent> {
        self.with_filter(index, |handle| {
            while let Ok(event) = handle.events().try_recv() {
                if !matches!(event, StreamEvent::Continue(_)) {
                    return Some(event);
                }
            }
            None
        })
        .flatten()
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
    /// Answer with this response.
    Reply(Response<Body>),
}

/// What to do after filter `index` answered `event` (or failed, `None`/`VmFailed`).
fn on_event(shared: &Shared, index: usize, event: Option<StreamEvent>) -> Outcome {
    match event {
        Some(StreamEvent::Continue(_)) => Outcome::Next,
        Some(StreamEvent::LocalResponse(reply)) => Outcome::Reply(local_response(reply)),
        Some(StreamEvent::Close) => Outcome::Reply(closed_response()),
        Some(StreamEvent::VmFailed) | None => {
            if shared.fail(index) {
                Outcome::Next
            } else {
                Outcome::Reply(failure_response())
            }
        }
    }
}

/// Runs the headers callbacks of `direction` over filters `order`; returns the headers as the
/// last filter left them, or the response to answer with.
async fn run_headers(
    shared: &Shared,
    order: &[usize],
    direction: Direction,
    mut pairs: HeaderPairs,
    end_of_stream: bool,
) -> Result<HeaderPairs, Response<Body>> {
    for &index in order {
        let called = shared.with_filter(index, |h| {
            h.headers(direction, pairs.clone(), end_of_stream)
        });
        let outcome = match called {
            None => continue,
            Some(Err(_)) => on_event(shared, index, None),
            Some(Ok(action)) => match shared.pending_event(index) {
                Some(event) => on_event(shared, index, Some(event)),
                None if action == Action::Pause => {
                    let event = shared.wait(index, direction).await;
                    on_event(shared, index, event)
                }
                None => Outcome::Next,
            },
        };
        match outcome {
            Outcome::Reply(response) => return Err(response),
            Outcome::Next => {
                match shared.with_filter(index, |h| h.current_headers(direction, false)) {
                    Some(Ok(current)) => pairs = current,
                    Some(Err(_)) => {
                        if let Outcome::Reply(response) = on_event(shared, index, None) {
                            return Err(response);
                        }
                    }
                    None => {}
                }
            }
        }
    }
    Ok(pairs)
}

/// A body run through the body (and trailers) callbacks of its direction.
struct FilteredBody {
    inner: Body,
    shared: Arc<Shared>,
    order: Vec<usize>,
    direction: Direction,
    /// Frames ready to hand on.
    ready: VecDeque<Frame<Bytes>>,
    /// A filter paused at the end of the stream: wait for it, then go on from the next one.
    waiting: Option<Waiting>,
    /// A filter paused mid-stream holds data; it is flushed when the filter continues.
    held: Option<usize>,
    /// The inner body is done.
    inner_done: bool,
    /// Everything has been handed on.
    finished: bool,
}

/// A pause at the end of the body.
struct Waiting {
    /// Position in `order` of the paused filter.
    position: usize,
    /// Trailers that arrived with the end, handed on after the data.
    trailers: Option<HeaderMap>,
}

/// How pushing data through the filters ended.
enum Push {
    /// Hand on this data (and end when `end_of_stream`).
    Emit(Vec<u8>),
    /// The filter at this position holds the data (paused mid-stream).
    Held(usize),
    /// A filter paused at the end: wait for it.
    Wait(usize),
    /// The stream must stop with this error.
    Fail(&'static str),
}

impl FilteredBody {
    fn new(inner: Body, shared: Arc<Shared>, order: Vec<usize>, direction: Direction) -> Self {
        FilteredBody {
            inner,
            shared,
            order,
            direction,
            ready: VecDeque::new(),
            waiting: None,
            held: None,
            inner_done: false,
            finished: false,
        }
    }

    /// Passes `data` through the filters from position `from` on.
    fn push(&mut self, from: usize, mut data: Vec<u8>, end_of_stream: bool) -> Push {
        for position in from..self.order.len() {
            let index = self.order[position];
            let direction = self.direction;
            let called = self
                .shared
                .with_filter(index, |h| h.body(direction, &data, end_of_stream));
            match called {
                None => {}
                Some(Ok(out)) => {
                    if let Some(event) = self.shared.pending_event(index)
                        && let Some(fail) = self.on_body_event(index, Some(event))
                    {
                        return fail;
                    }
                    match out {
                        Some(out) => data = out,
                        None if end_of_stream => return Push::Wait(position),
                        None => return Push::Held(position),
                    }
                }
                Some(Err(_)) => {
                    if let Some(fail) = self.on_body_event(index, None) {
                        return fail;
                    }
                }
            }
        }
        Push::Emit(data)
    }

    /// Handles a non-continue event of filter `index` during the body; `Some` stops the body.
    fn on_body_event(&mut self, index: usize, event: Option<StreamEvent>) -> Option<Push> {
        match on_event(&self.shared, index, event) {
            Outcome::Next => None,
            Outcome::Reply(response) => {
                if self.direction == Direction::Request {
                    self.shared.set_local_reply(response);
                }
                Some(Push::Fail("a Wasm filter stopped the stream"))
            }
        }
    }

    /// Runs the trailers callbacks, flushing bodies filters still hold.
    fn push_trailers(&mut self, trailers: HeaderMap) -> Result<(Vec<u8>, HeaderMap), &'static str> {
        let mut pairs: HeaderPairs = crate::wasm::context::pairs_of(&trailers).collect();
        let mut flushed = Vec::new();
        for position in 0..self.order.len() {
            let index = self.order[position];
            let direction = self.direction;
            let called = self.shared.with_filter(index, |h| {
                let held = h.take_body(direction)?;
                let (_, pairs) = h.trailers(direction, pairs.clone())?;
                Ok::<_, SlotError>((held, pairs))
            });
            match called {
                None => {}
                Some(Ok((held, out))) => {
                    flushed.extend_from_slice(&held);
                    pairs = out;
                }
                Some(Err(_)) => {
                    if let Some(Push::Fail(reason)) = self.on_body_event(index, None) {
                        return Err(reason);
                    }
                }
            }
        }
        Ok((flushed, header_map(&pairs)))
    }

    fn emit(&mut self, data: Vec<u8>, trailers: Option<HeaderMap>) {
        if !data.is_empty() {
            self.ready.push_back(Frame::data(Bytes::from(data)));
        }
        if let Some(trailers) = trailers {
            self.ready.push_back(Frame::trailers(trailers));
        }
    }
}

impl http_body::Body for FilteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            if let Some(waiting) = &this.waiting {
                let index = this.order[waiting.position];
                let event = match this.shared.poll_event(cx, index, this.direction) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(event) => event,
                };
                let Some(waiting) = this.waiting.take() else {
                    continue;
                };
                if let Some(Push::Fail(reason)) = this.on_body_event(index, event) {
                    this.finished = true;
                    return Poll::Ready(Some(Err(reason.into())));
                }
                let direction = this.direction;
                let held = this
                    .shared
                    .with_filter(index, |h| h.take_body(direction))
                    .and_then(Result::ok)
                    .unwrap_or_default();
                match this.push(waiting.position + 1, held, true) {
                    Push::Emit(data) => {
                        this.emit(data, waiting.trailers);
                        this.finished = true;
                    }
                    Push::Held(_) => this.finished = true,
                    Push::Wait(position) => {
                        this.waiting = Some(Waiting {
                            position,
                            trailers: waiting.trailers,
                        })
                    }
                    Push::Fail(reason) => {
                        this.finished = true;
                        return Poll::Ready(Some(Err(reason.into())));
                    }
                }
                continue;
            }
            if this.inner_done {
                this.finished = true;
                continue;
            }
            if let Some(position) = this.held {
                let index = this.order[position];
                if let Poll::Ready(event) = this.shared.poll_event(cx, index, this.direction) {
                    // The filter continued (or failed) while holding data: hand it on.
                    this.held = None;
                    if let Some(Push::Fail(reason)) = this.on_body_event(index, event) {
                        this.finished = true;
                        return Poll::Ready(Some(Err(reason.into())));
                    }
                    let direction = this.direction;
                    let held = this
                        .shared
                        .with_filter(index, |h| h.take_body(direction))
                        .and_then(Result::ok)
                        .unwrap_or_default();
                    match this.push(position + 1, held, false) {
                        Push::Emit(data) => this.emit(data, None),
                        Push::Held(later) => this.held = Some(later),
                        Push::Wait(_) => {}
                        Push::Fail(reason) => {
                            this.finished = true;
                            return Poll::Ready(Some(Err(reason.into())));
                        }
                    }
                    continue;
                }
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(Some(Ok(frame))) => Some(frame),
                Poll::Ready(None) => None,
            };
            let (data, end_of_stream, trailers) = match frame {
                None => {
                    this.inner_done = true;
                    (Vec::new(), true, None)
                }
                Some(frame) => match frame.into_data() {
                    Ok(data) => {
                        let end = this.inner.is_end_stream();
                        this.inner_done = end;
                        (data.to_vec(), end, None)
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            this.inner_done = true;
                            match this.push_trailers(trailers) {
                                Ok((flushed, trailers)) => (flushed, false, Some(trailers)),
                                Err(reason) => {
                                    this.finished = true;
                                    return Poll::Ready(Some(Err(reason.into())));
                                }
                            }
                        }
                        Err(_) => continue,
                    },
                },
            };
            if trailers.is_some() {
                this.emit(data, trailers);
                this.finished = true;
                continue;
            }
            match this.push(0, data, end_of_stream) {
                Push::Emit(data) => {
                    this.held = None;
                    this.emit(data, None);
                    if end_of_stream {
                        this.finished = true;
                    }
                }
                Push::Held(position) => this.held = Some(position),
                Push::Wait(position) => {
                    this.waiting = Some(Waiting {
                        position,
                        trailers: None,
                    })
                }
                Push::Fail(reason) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(reason.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.ready.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // Filters may change the length.
        SizeHint::default()
    }
}

/// The route `request` matches, as properties show it.
fn route_props<B>(routes: &RouteTable, request: &Request<B>) -> Option<RouteProps> {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers().get(http::header::HOST)?.to_str().ok())?;
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let route = routes.find(host, path, request.headers())?;
    Some(RouteProps {
        name: route.name.clone().unwrap_or_default(),
        cluster: match &route.action {
            RouteAction::Forward(action) => action.cluster.clone(),
            RouteAction::Direct { .. } => String::new(),
        },
    })
}

fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn pair(name: &str, value: impl Into<Bytes>) -> (String, Bytes) {
    (name.to_string(), value.into())
}

/// The request head as the ABI's map: `:method`, `:scheme`, `:authority`, `:path`, headers.
fn request_pairs(parts: &http::request::Parts) -> HeaderPairs {
    let mut pairs = Vec::with_capacity(parts.headers.len() + 4);
    pairs.push(pair(
        ":method",
        Bytes::copy_from_slice(parts.method.as_str().as_bytes()),
    ));
    let scheme = parts.uri.scheme_str().unwrap_or("http");
    pairs.push(pair(":scheme", Bytes::copy_from_slice(scheme.as_bytes())));
    let authority = parts
        .uri
        .authority()
        .map(|a| Bytes::copy_from_slice(a.as_str().as_bytes()))
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .map(|h| Bytes::copy_from_slice(h.as_bytes()))
        })
        .unwrap_or_default();
    pairs.push(pair(":authority", authority));
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    pairs.push(pair(":path", Bytes::copy_from_slice(path.as_bytes())));
    pairs.extend(crate::wasm::context::pairs_of(&parts.headers).filter(|(name, _)| name != "host"));
    pairs
}

/// Puts the filters' request map back into the request head.
fn apply_request_pairs(
    parts: &mut http::request::Parts,
    pairs: &HeaderPairs,
) -> Result<(), &'static str> {
    let mut headers = HeaderMap::with_capacity(pairs.len());
    let mut path = None;
    let mut authority = None;
    for (name, value) in pairs {
        match name.as_str() {
            ":method" => match Method::from_bytes(value) {
                Ok(method) => parts.method = method,
                Err(_) => return Err("invalid :method set by a Wasm filter"),
            },
            ":path" => path = Some(value.clone()),
            ":authority" => authority = Some(value.clone()),
            pseudo if pseudo.starts_with(':') => {}
            _ => append(&mut headers, name, value),
        }
    }
    if let Some(authority) = &authority
        && !authority.is_empty()
    {
        match HeaderValue::from_bytes(authority) {
            Ok(host) => {
                headers.insert(http::header::HOST, host);
            }
            Err(_) => return Err("invalid :authority set by a Wasm filter"),
        }
    }
    let path = path.unwrap_or_else(|| Bytes::from_static(b"/"));
    let uri = match (parts.uri.scheme_str(), &authority) {
        (Some(scheme), Some(authority)) if !authority.is_empty() => {
            Uri::try_from([scheme.as_bytes(), b"://", authority, &path].concat())
        }
        _ => Uri::try_from(path.to_vec()),
    };
    parts.uri = uri.map_err(|_| "invalid :path set by a Wasm filter")?;
    parts.headers = headers;
    Ok(())
}

/// The response head as the ABI's map: `:status`, then the headers.
fn response_pairs(parts: &http::response::Parts) -> HeaderPairs {
    let mut pairs = Vec::with_capacity(parts.headers.len() + 1);
    pairs.push(pair(
        ":status",
        Bytes::from(parts.status.as_u16().to_string()),
    ));
    pairs.extend(crate::wasm::context::pairs_of(&parts.headers));
    pairs
}

fn apply_response_pairs(parts: &mut http::response::Parts, pairs: &HeaderPairs) {
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if name == ":status" {
            if let Some(status) = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
            {
                parts.status = status;
            }
        } else if !name.starts_with(':') {
            append(&mut headers, name, value);
        }
    }
    parts.headers = headers;
}

fn header_map(pairs: &HeaderPairs) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        append(&mut headers, name, value);
    }
    headers
}

/// Appends one header; names or values HTTP does not allow are dropped (and logged).
fn append(headers: &mut HeaderMap, name: &str, value: &Bytes) {
    match (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_bytes(value),
    ) {
        (Ok(name), Ok(value)) => {
            headers.append(name, value);
        }
        _ => tracing::debug!(
            header = name,
            "dropping an invalid header set by a Wasm filter"
        ),
    }
}

/// A module's `proxy_send_local_response` as a response.
fn local_response(reply: LocalResponse) -> Response<Body> {
    let mut response = Response::new(body::full(reply.body.clone()));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in &reply.headers {
        append(headers, name, value);
    }
    if !reply.body.is_empty() && !headers.contains_key(http::header::CONTENT_TYPE) {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    headers.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(reply.body.len()),
    );
    response
}

fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    response
}

/// A filter's VM failed and the plugin does not fail open.
fn failure_response() -> Response<Body> {
    text_response(StatusCode::INTERNAL_SERVER_ERROR, "wasm filter failed\n")
}

/// A filter closed the stream.
fn closed_response() -> Response<Body> {
    text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "stream closed by a wasm filter\n",
    )
}

fn bad_request(text: &'static str) -> Response<Body> {
    text_response(StatusCode::BAD_REQUEST, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(pairs: &HeaderPairs) -> Vec<&str> {
        pairs.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn request_head_round_trips_through_the_abi_map() {
        let request = Request::post("/a/b?c=1")
            .header("host", "example.com")
            .header("x-one", "1")
            .header("x-one", "2")
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        let pairs = request_pairs(&parts);
        assert_eq!(
            names(&pairs),
            [
                ":method",
                ":scheme",
                ":authority",
                ":path",
                "x-one",
                "x-one"
            ]
        );
        assert_eq!(pairs[2].1, "example.com");
        let mut edited = pairs.clone();
        edited[0].1 = Bytes::from_static(b"PUT");
        edited[2].1 = Bytes::from_static(b"other.example");
        edited[3].1 = Bytes::from_static(b"/new?x=y");
        edited.push(("x-two".into(), Bytes::from_static(b"2")));
        apply_request_pairs(&mut parts, &edited).unwrap();
        assert_eq!(parts.method, Method::PUT);
        assert_eq!(parts.uri, "/new?x=y");
        assert_eq!(parts.headers["host"], "other.example");
        assert_eq!(parts.headers.get_all("x-one").iter().count(), 2);
        assert_eq!(parts.headers["x-two"], "2");
    }

    #[test]
    fn invalid_pseudo_headers_from_a_filter_are_refused() {
        let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
        let bad_method = vec![(":method".to_string(), Bytes::from_static(b"BAD METHOD"))];
        assert!(apply_request_pairs(&mut parts, &bad_method).is_err());
        let bad_path = vec![(":path".to_string(), Bytes::from_static(b"/with space"))];
        assert!(apply_request_pairs(&mut parts, &bad_path).is_err());
    }

    #[test]
    fn response_status_and_headers_round_trip() {
        let (mut parts, ()) = Response::builder()
            .status(201)
            .header("x-a", "1")
            .body(())
            .unwrap()
            .into_parts();
        let mut pairs = response_pairs(&parts);
        assert_eq!(names(&pairs), [":status", "x-a"]);
        pairs[0].1 = Bytes::from_static(b"418");
        pairs.push(("bad header".into(), Bytes::from_static(b"dropped")));
        apply_response_pairs(&mut parts, &pairs);
        assert_eq!(parts.status, StatusCode::IM_A_TEAPOT);
        assert_eq!(parts.headers.len(), 1);
    }

    #[test]
    fn local_response_has_its_headers_and_length() {
        let response = local_response(LocalResponse {
            status: 403,
            details: "denied".into(),
            body: Bytes::from_static(b"no"),
            headers: vec![("x-why".into(), Bytes::from_static(b"policy"))],
        });
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()["x-why"], "policy");
        assert_eq!(response.headers()["content-length"], "2");
    }

    #[test]
    fn an_empty_chain_is_empty() {
        assert!(FilterChain::empty().is_empty());
    }
}
