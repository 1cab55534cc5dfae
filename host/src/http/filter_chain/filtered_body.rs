//! The body of one direction of a stream, run through its filters' body and trailers
//! callbacks as it streams (see the parent module for the semantics).

use super::head::{header_map, payload_too_large};

use super::{FilterReply, Outcome, Shared, on_event};
use crate::body::{Body, BoxError};
use crate::wasm::{Direction, HeaderPairs, SlotError, StreamEvent};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A body run through the body (and trailers) callbacks of its direction.
pub(super) struct FilteredBody {
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
    pub(super) fn new(
        inner: Body,
        shared: Arc<Shared>,
        order: Vec<usize>,
        direction: Direction,
    ) -> Self {
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
            self.shared.forget_resumed(index, direction);
            let called = self
                .shared
                .with_filter(index, |h| h.body(direction, &data, end_of_stream));
            match called {
                None => {}
                Some(Ok(out)) => {
                    if let Some(event) = self.shared.pending_event(index, direction)
                        && let Some(fail) = self.on_body_event(index, Some(event))
                    {
                        return fail;
                    }
                    match out {
                        Some(out) => data = out,
                        None if self.holds_too_much(index) => return self.refuse(index),
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

    /// Whether filter `index`, paused, holds more of this body than the listener allows.
    fn holds_too_much(&self, index: usize) -> bool {
        let direction = self.direction;
        self.shared
            .with_filter(index, |h| h.buffered_len(direction))
            .and_then(Result::ok)
            .is_some_and(|held| held > self.shared.buffer_limit)
    }

    /// Stops the body of a filter that buffered past the limit: a request is answered 413
    /// (by the filters before it, as for a local reply), a response (its head already sent)
    /// is reset.
    fn refuse(&mut self, index: usize) -> Push {
        tracing::debug!(
            limit = self.shared.buffer_limit,
            direction = ?self.direction,
            "a Wasm filter buffered more than per_connection_buffer_limit_bytes"
        );
        if self.direction == Direction::Request {
            self.shared.set_local_reply(FilterReply {
                from: index,
                sender_sees: false,
                response: payload_too_large(),
            });
        }
        Push::Fail("a Wasm filter buffered more than per_connection_buffer_limit_bytes")
    }

    /// Handles a non-continue event of filter `index` during the body; `Some` stops the body.
    fn on_body_event(&mut self, index: usize, event: Option<StreamEvent>) -> Option<Push> {
        match on_event(&self.shared, index, event) {
            Outcome::Next => None,
            Outcome::Reply(response, sender_sees) => {
                if self.direction == Direction::Request {
                    // Request filters run in configuration order: the index is the position.
                    self.shared.set_local_reply(FilterReply {
                        from: index,
                        sender_sees,
                        response,
                    });
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
