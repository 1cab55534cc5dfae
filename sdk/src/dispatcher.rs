//! Maps the host's context ids to the filter's context objects and routes every callback.
//!
//! A root context is created when the host creates a context with parent 0. A child context
//! is recorded as *pending* when it is created and becomes an [`HttpContext`] on its first HTTP
//! callback or a [`StreamContext`] on its first L4 callback (the ABI does not say which kind a
//! new context is; this way one module works as an HTTP and as a network filter). While a
//! callback runs, its context is taken out of the table, so a filter calling back into the SDK
//! can never hit a borrowed table. Unknown ids are logged and answered with the default (let
//! the traffic through), never a panic.

// Off wasm32 nothing exports the callbacks, so only the unit tests drive the dispatcher.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use weir_abi::{Action, LogLevel, PeerType};

use crate::traits::{HttpContext, RootContext, StreamContext};

/// A child context (one stream under a root).
enum Child {
    /// Created by the host; which kind is known at its first callback.
    Pending { root_id: u32 },
    /// An HTTP stream.
    Http(Box<dyn HttpContext>),
    /// An L4 connection.
    Stream(Box<dyn StreamContext>),
    /// The root did not want this stream: every callback passes through.
    PassThrough,
    /// Out of the table while one of its callbacks runs.
    Running,
}

/// Hashes a context id (a `u32` the host hands out) with one multiplication.
///
/// Why not the standard SipHash or a `BTreeMap`: the table is looked up on every callback,
/// several times per request, with hundreds of streams live; inside a Wasm VM SipHash or a
/// B-tree walk costs more than the rest of a typical callback.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        // Fibonacci hashing: the high bits (which the table's control bytes use) depend on
        // every bit of the id.
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Children = HashMap<u32, Child, BuildHasherDefault<IdHasher>>;

/// Which kind a pending child should become.
#[derive(Clone, Copy)]
enum Kind {
    Http,
    Stream,
}

/// The table of live contexts and HTTP-callout tokens.
#[derive(Default)]
pub(crate) struct Dispatcher {
    roots: RefCell<BTreeMap<u32, Box<dyn RootContext>>>,
    children: RefCell<Children>,
    /// The context whose callback is running; a callout made now answers to it.
    active: Cell<u32>,
    /// Callout token -> the context that dispatched it.
    callouts: RefCell<BTreeMap<u32, u32>>,
}

thread_local! {
    static DISPATCHER: Dispatcher = Dispatcher::default();
}

/// Runs `f` on this VM's dispatcher.
pub(crate) fn with<R>(f: impl FnOnce(&Dispatcher) -> R) -> R {
    DISPATCHER.with(f)
}

/// Records that the running context dispatched the callout `token`.
pub(crate) fn register_callout(token: u32) {
    with(|d| d.register_callout(token));
}

fn warn(message: &str) {
    crate::log::write(LogLevel::Warn, message);
}

impl Dispatcher {
    pub(crate) fn register_callout(&self, token: u32) {
        self.callouts.borrow_mut().insert(token, self.active.get());
    }

    /// `proxy_on_context_create`: parent 0 makes a root with `new_root`, anything else a
    /// pending child of that root.
    pub(crate) fn on_context_create(
        &self,
        context_id: u32,
        parent_id: u32,
        new_root: &dyn Fn(u32) -> Box<dyn RootContext>,
    ) {
        if parent_id == 0 {
            self.active.set(context_id);
            let root = new_root(context_id);
            self.roots.borrow_mut().insert(context_id, root);
        } else if self.roots.borrow().contains_key(&parent_id) {
            self.children
                .borrow_mut()
                .insert(context_id, Child::Pending { root_id: parent_id });
        } else {
            warn(&format!(
                "context {context_id} created under unknown root {parent_id}; it will pass through"
            ));
            self.children
                .borrow_mut()
                .insert(context_id, Child::PassThrough);
        }
    }

    /// Runs `f` on root `root_id`, or returns `None` when there is no such root.
    pub(crate) fn with_root<R>(
        &self,
        root_id: u32,
        f: impl FnOnce(&mut dyn RootContext) -> R,
    ) -> Option<R> {
        let Some(mut root) = self.roots.borrow_mut().remove(&root_id) else {
            warn(&format!("callback for unknown root context {root_id}"));
            return None;
        };
        self.active.set(root_id);
        let result = f(root.as_mut());
        self.roots.borrow_mut().insert(root_id, root);
        Some(result)
    }

    /// Takes child `id` out of the table (leaving [`Child::Running`] in its place), turning a
    /// pending child into `kind`; `None` when there is no such child or it is running.
    fn take_child(&self, id: u32, kind: Option<Kind>) -> Option<Child> {
        let child = {
            let mut children = self.children.borrow_mut();
            let Some(slot) = children.get_mut(&id) else {
                drop(children);
                warn(&format!("callback for unknown context {id}"));
                return None;
            };
            if matches!(slot, Child::Running) {
                return None;
            }
            std::mem::replace(slot, Child::Running)
        };
        match (child, kind) {
            (Child::Pending { root_id }, Some(kind)) => {
                self.active.set(id);
                let created = self.with_root(root_id, |root| match kind {
                    Kind::Http => root.create_http_context(id).map(Child::Http),
                    Kind::Stream => root.create_stream_context(id).map(Child::Stream),
                });
                Some(created.flatten().unwrap_or(Child::PassThrough))
            }
            (child, _) => Some(child),
        }
    }

    /// Puts child `id` back after its callback, unless it was deleted meanwhile.
    fn put_back(&self, id: u32, child: Child) {
        if let Some(slot) = self.children.borrow_mut().get_mut(&id) {
            *slot = child;
        }
    }

    /// Runs `f` on child `id` as it is (a pending child stays pending); `None` when there is
    /// no such child.
    fn with_child<R>(&self, id: u32, f: impl FnOnce(&mut Child) -> R) -> Option<R> {
        let mut child = self.take_child(id, None)?;
        let result = f(&mut child);
        self.put_back(id, child);
        Some(result)
    }

    /// Runs `f` on HTTP context `id`; `None` when it is unknown, passes through or is L4.
    pub(crate) fn with_http<R>(
        &self,
        id: u32,
        f: impl FnOnce(&mut dyn HttpContext) -> R,
    ) -> Option<R> {
        let mut child = self.take_child(id, Some(Kind::Http))?;
        let result = match &mut child {
            Child::Http(http) => {
                self.active.set(id);
                Some(f(http.as_mut()))
            }
            _ => None,
        };
        self.put_back(id, child);
        result
    }

    /// Runs `f` on stream context `id`; `None` when it is unknown, passes through or is HTTP.
    pub(crate) fn with_stream<R>(
        &self,
        id: u32,
        f: impl FnOnce(&mut dyn StreamContext) -> R,
    ) -> Option<R> {
        let mut child = self.take_child(id, Some(Kind::Stream))?;
        let result = match &mut child {
            Child::Stream(stream) => {
                self.active.set(id);
                Some(f(stream.as_mut()))
            }
            _ => None,
        };
        self.put_back(id, child);
        result
    }

    /// An HTTP callback: the filter's answer, or Continue when there is no filter context.
    pub(crate) fn http_action(
        &self,
        id: u32,
        f: impl FnOnce(&mut dyn HttpContext) -> Action,
    ) -> Action {
        self.with_http(id, f).unwrap_or(Action::Continue)
    }

    /// An L4 callback: the filter's answer, or Continue when there is no filter context.
    pub(crate) fn stream_action(
        &self,
        id: u32,
        f: impl FnOnce(&mut dyn StreamContext) -> Action,
    ) -> Action {
        self.with_stream(id, f).unwrap_or(Action::Continue)
    }

    fn child_is(&self, id: u32, pred: fn(&Child) -> bool) -> bool {
        self.children.borrow().get(&id).is_some_and(pred)
    }

    /// `proxy_on_log`.
    pub(crate) fn on_log(&self, id: u32) {
        if self.roots.borrow().contains_key(&id) {
            return;
        }
        self.with_child(id, |child| match child {
            Child::Http(http) => {
                self.active.set(id);
                http.on_log();
            }
            Child::Stream(stream) => {
                self.active.set(id);
                stream.on_log();
            }
            _ => {}
        });
    }

    /// `proxy_on_done`: true when the context can be deleted now.
    pub(crate) fn on_done(&self, id: u32) -> bool {
        if self.roots.borrow().contains_key(&id) {
            return self.with_root(id, |r| r.on_done()).unwrap_or(true);
        }
        self.with_child(id, |child| match child {
            Child::Http(http) => {
                self.active.set(id);
                http.on_done()
            }
            Child::Stream(stream) => {
                self.active.set(id);
                stream.on_done()
            }
            _ => true,
        })
        .unwrap_or(true)
    }

    /// `proxy_on_delete`: drops the context and any callouts still addressed to it.
    pub(crate) fn on_delete(&self, id: u32) {
        let removed_child = self.children.borrow_mut().remove(&id).is_some();
        let removed_root = self.roots.borrow_mut().remove(&id).is_some();
        if !removed_child && !removed_root {
            warn(&format!("delete of unknown context {id}"));
        }
        self.callouts.borrow_mut().retain(|_, owner| *owner != id);
    }

    /// `proxy_on_http_call_response`: routes the answer to the context that made the call
    /// (the host addresses it to the root), after pointing the host at that context.
    pub(crate) fn on_http_call_response(
        &self,
        addressed_to: u32,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let owner = self
            .callouts
            .borrow_mut()
            .remove(&token)
            .unwrap_or(addressed_to);
        if owner != addressed_to
            && let Err(e) = crate::hostcalls::set_effective_context(owner)
        {
            warn(&format!("callout {token}: {e}"));
        }
        let args = (token, num_headers, body_size, num_trailers);
        if self.roots.borrow().contains_key(&owner) {
            self.with_root(owner, |r| {
                r.on_http_call_response(args.0, args.1, args.2, args.3)
            });
        } else if self.child_is(owner, |c| matches!(c, Child::Http(_))) {
            self.with_http(owner, |c| {
                c.on_http_call_response(args.0, args.1, args.2, args.3)
            });
        } else if self.child_is(owner, |c| matches!(c, Child::Stream(_))) {
            self.with_stream(owner, |c| {
                c.on_http_call_response(args.0, args.1, args.2, args.3)
            });
        } else {
            warn(&format!(
                "callout {token} answered for unknown context {owner}"
            ));
        }
    }

    /// `proxy_on_downstream_connection_close` / `proxy_on_upstream_connection_close`.
    pub(crate) fn on_close(&self, id: u32, peer: u32, downstream: bool) {
        let peer = PeerType::try_from(peer).unwrap_or(PeerType::Unknown);
        self.with_stream(id, |c| {
            if downstream {
                c.on_downstream_close(peer)
            } else {
                c.on_upstream_close(peer)
            }
        });
    }
}

#[cfg(test)]
mod tests;
