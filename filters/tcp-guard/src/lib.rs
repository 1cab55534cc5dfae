//! `tcp-guard`: a network (L4) filter for a tcp_proxy listener (`envoy.filters.network.wasm`).
//! Counts the bytes each way, turns away clients whose first bytes are not a configured
//! prefix (optionally stripping it, and holding the server's bytes until it was checked), and
//! replaces a byte string in either direction, across reads. See README.md for exactly what it
//! does.

pub mod config;
pub mod rewrite;

use std::rc::Rc;

use weir_sdk::metric::Counter;
use weir_sdk::{
    Action, BufferType, PeerType, RootContext, StreamContext, StreamType, hostcalls, log,
};

use crate::config::Config;
use crate::rewrite::Replacer;

/// The filter's counters.
#[derive(Debug, Default, Clone, Copy)]
struct Metrics {
    connections: Counter,
    downstream_bytes: Counter,
    upstream_bytes: Counter,
    rejected: Counter,
    rewrites: Counter,
    downstream_closes: Counter,
    upstream_closes: Counter,
}

impl Metrics {
    fn define() -> Metrics {
        Metrics {
            connections: Counter::define("tcp_guard.connections"),
            downstream_bytes: Counter::define("tcp_guard.downstream_bytes"),
            upstream_bytes: Counter::define("tcp_guard.upstream_bytes"),
            rejected: Counter::define("tcp_guard.rejected"),
            rewrites: Counter::define("tcp_guard.rewrites"),
            downstream_closes: Counter::define("tcp_guard.downstream_closes"),
            upstream_closes: Counter::define("tcp_guard.upstream_closes"),
        }
    }
}

/// Holds the configuration and the metric ids.
#[derive(Default)]
pub struct Root {
    config: Option<Rc<Config>>,
    metrics: Metrics,
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = weir_sdk::parsed_plugin_configuration("tcp-guard", Config::parse) else {
            return false;
        };
        self.config = Some(Rc::new(config));
        self.metrics = Metrics::define();
        true
    }

    fn create_stream_context(&mut self, _id: u32) -> Option<Box<dyn StreamContext>> {
        let config = self.config.clone()?;
        let replacer = |rewrite: &Option<config::Rewrite>| {
            rewrite
                .as_ref()
                .map(|r| Replacer::new(r.from.as_bytes(), r.to.as_bytes()))
        };
        Some(Box::new(Guard {
            prefix: if config.prefix.is_some() {
                Prefix::Checking
            } else {
                Prefix::Passed
            },
            downstream: Direction::new(replacer(&config.rewrite_downstream)),
            upstream: Direction::new(replacer(&config.rewrite_upstream)),
            config,
            metrics: self.metrics,
            upstream_held: false,
        }))
    }
}

/// Where the client's prefix check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    /// Not enough bytes yet.
    Checking,
    /// Checked (or none configured).
    Passed,
    /// Wrong: the connection is being closed, nothing more passes.
    Rejected,
}

/// One direction of a connection.
struct Direction {
    /// The rewrite, if configured.
    replacer: Option<Replacer>,
    /// Bytes the host holds for this filter from earlier calls (it paused): the callback's
    /// size counts them again.
    held: usize,
    /// Bytes received from the peer in this direction.
    received: u64,
}

impl Direction {
    fn new(replacer: Option<Replacer>) -> Direction {
        Direction {
            replacer,
            held: 0,
            received: 0,
        }
    }
}

/// One connection.
struct Guard {
    config: Rc<Config>,
    metrics: Metrics,
    prefix: Prefix,
    downstream: Direction,
    upstream: Direction,
    /// The server's bytes are held until the prefix is checked.
    upstream_held: bool,
}

fn buffer(buffer_type: BufferType, start: usize, size: usize) -> Vec<u8> {
    match hostcalls::get_buffer(buffer_type, start, size) {
        Ok(bytes) => bytes.unwrap_or_default(),
        Err(e) => {
            log::warn(&format!("tcp-guard: reading {buffer_type:?}: {e}"));
            Vec::new()
        }
    }
}

fn set(buffer_type: BufferType, start: usize, size: usize, data: &[u8]) {
    if let Err(e) = hostcalls::set_buffer(buffer_type, start, size, data) {
        log::warn(&format!("tcp-guard: writing {buffer_type:?}: {e}"));
    }
}

fn text_property(path: &[&str]) -> String {
    hostcalls::get_property(path)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|| "-".into())
}

impl Guard {
    /// Rewrites bytes `start..start + len` of `buffer_type` with `direction`'s replacer;
    /// returns the length they have now.
    fn rewrite(
        direction: &mut Direction,
        metrics: Metrics,
        buffer_type: BufferType,
        start: usize,
        len: usize,
        end: bool,
    ) -> usize {
        let Some(replacer) = direction.replacer.as_mut() else {
            return len;
        };
        let before = replacer.replaced();
        let data = if len == 0 {
            Vec::new()
        } else {
            buffer(buffer_type, start, len)
        };
        let out = replacer.feed(&data, end);
        metrics.rewrites.add(replacer.replaced() - before);
        if out != data {
            set(buffer_type, start, len, &out);
        }
        out.len()
    }

    fn reject(&mut self, why: &str) -> Action {
        self.prefix = Prefix::Rejected;
        self.metrics.rejected.add(1);
        log::info(&format!(
            "tcp-guard: closing the connection from {}: {why}",
            text_property(&["source", "address"])
        ));
        if let Err(e) = hostcalls::close_stream(StreamType::Downstream) {
            log::warn(&format!("tcp-guard: closing: {e}"));
        }
        Action::Pause
    }
}

impl StreamContext for Guard {
    fn on_new_connection(&mut self) -> Action {
        self.metrics.connections.add(1);
        Action::Continue
    }

    fn on_downstream_data(&mut self, size: usize, end_of_stream: bool) -> Action {
        let fresh = size.saturating_sub(self.downstream.held);
        self.downstream.received += fresh as u64;
        self.metrics.downstream_bytes.add(fresh as u64);
        if self.prefix == Prefix::Rejected {
            return Action::Pause;
        }
        let mut len = size;
        if self.prefix == Prefix::Checking {
            let prefix = self.config.prefix.as_deref().unwrap_or_default().as_bytes();
            let head = buffer(BufferType::DownstreamData, 0, prefix.len());
            if !prefix.starts_with(&head) {
                return self.reject("it did not start with the configured prefix");
            }
            if head.len() < prefix.len() {
                if end_of_stream {
                    return self.reject("it ended before the whole prefix");
                }
                // Hold what came so far; the next call sees it all again.
                self.downstream.held = size;
                return Action::Pause;
            }
            self.prefix = Prefix::Passed;
            if self.config.strip_prefix {
                set(BufferType::DownstreamData, 0, prefix.len(), b"");
                len -= prefix.len();
            }
            if self.upstream_held {
                // The host passes what it holds for us on, without calling us again.
                self.upstream_held = false;
                self.upstream.held = 0;
                if let Err(e) = hostcalls::continue_stream(StreamType::Upstream) {
                    log::warn(&format!("tcp-guard: releasing the server's bytes: {e}"));
                }
            }
        }
        self.downstream.held = 0;
        Self::rewrite(
            &mut self.downstream,
            self.metrics,
            BufferType::DownstreamData,
            0,
            len,
            end_of_stream,
        );
        Action::Continue
    }

    fn on_upstream_data(&mut self, size: usize, end_of_stream: bool) -> Action {
        let fresh = size.saturating_sub(self.upstream.held);
        self.upstream.received += fresh as u64;
        self.metrics.upstream_bytes.add(fresh as u64);
        if self.prefix == Prefix::Rejected {
            return Action::Pause;
        }
        // The bytes held from earlier calls are rewritten already: only the fresh ones go
        // through the replacer.
        let start = self.upstream.held;
        let rewritten = Self::rewrite(
            &mut self.upstream,
            self.metrics,
            BufferType::UpstreamData,
            start,
            fresh,
            end_of_stream,
        );
        if self.config.hold_upstream && self.prefix == Prefix::Checking {
            self.upstream.held = start + rewritten;
            self.upstream_held = true;
            return Action::Pause;
        }
        self.upstream.held = 0;
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer: PeerType) {
        self.metrics.downstream_closes.add(1);
    }

    fn on_upstream_close(&mut self, _peer: PeerType) {
        self.metrics.upstream_closes.add(1);
    }

    fn on_log(&mut self) {
        log::info(&format!(
            "tcp-guard: connection {} -> {} done: {} bytes from the client, {} from the server{}",
            text_property(&["source", "address"]),
            text_property(&["upstream", "address"]),
            self.downstream.received,
            self.upstream.received,
            if self.prefix == Prefix::Rejected {
                " (rejected)"
            } else {
                ""
            }
        ));
    }
}

weir_sdk::main!(|_root_id| Box::new(Root::default()));
