//! `websocket-guard`: for a WebSocket upgrade chain. Parses WebSocket frame headers in the
//! request and response bodies of an upgraded stream (across body chunks), counts messages per
//! direction, and stops the stream when a configured limit is passed. See README.md for
//! exactly what it does.

pub mod config;
pub mod frames;

use std::rc::Rc;

use weir_sdk::metric::Counter;
use weir_sdk::{Action, BufferType, HttpContext, MapType, RootContext, StreamType, hostcalls, log};

use crate::config::Config;
use crate::frames::{FrameParser, Violation};

/// The filter's counters.
#[derive(Debug, Default, Clone, Copy)]
struct Metrics {
    client_messages: Counter,
    server_messages: Counter,
    violations: Counter,
}

impl Metrics {
    fn define() -> Metrics {
        Metrics {
            client_messages: Counter::define("websocket_guard.client_messages"),
            server_messages: Counter::define("websocket_guard.server_messages"),
            violations: Counter::define("websocket_guard.violations"),
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
        let Some(config) = weir_sdk::parsed_plugin_configuration("websocket-guard", Config::parse)
        else {
            return false;
        };
        self.config = Some(Rc::new(config));
        self.metrics = Metrics::define();
        true
    }

    fn create_http_context(&mut self, _id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(Guard {
            client: FrameParser::new(config.client_limits()),
            server: FrameParser::new(config.server_limits()),
            config,
            metrics: self.metrics,
            websocket: false,
            upgraded: false,
            stopped: false,
        }))
    }
}

/// One (possibly) upgraded stream.
struct Guard {
    config: Rc<Config>,
    metrics: Metrics,
    client: FrameParser,
    server: FrameParser,
    /// The request asked for a WebSocket (H1 `upgrade: websocket` or H2 `:protocol`).
    websocket: bool,
    /// The response accepted it (101, or 200 to an extended CONNECT).
    upgraded: bool,
    /// A limit was passed: nothing more is forwarded.
    stopped: bool,
}

fn header(map: MapType, name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value(map, name).ok().flatten()
}

fn contains_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Which direction a body callback is for.
#[derive(Clone, Copy)]
enum Direction {
    Client,
    Server,
}

impl Guard {
    fn on_body(&mut self, direction: Direction, size: usize) -> Action {
        if self.stopped {
            return Action::Pause;
        }
        if !self.websocket || size == 0 {
            return Action::Continue;
        }
        let (buffer, parser, counter) = match direction {
            Direction::Client => (
                BufferType::HttpRequestBody,
                &mut self.client,
                self.metrics.client_messages,
            ),
            Direction::Server => (
                BufferType::HttpResponseBody,
                &mut self.server,
                self.metrics.server_messages,
            ),
        };
        let bytes = match hostcalls::get_buffer(buffer, 0, size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(e) => {
                log::warn(&format!("websocket-guard: reading body: {e}"));
                return Action::Continue;
            }
        };
        let before = parser.messages();
        let result = parser.feed(&bytes);
        counter.add(parser.messages() - before);
        match result {
            Ok(()) => Action::Continue,
            Err(violation) => self.stop(direction, violation),
        }
    }

    /// Stops the stream: a local reply while the upgrade is not answered yet, a reset after.
    fn stop(&mut self, direction: Direction, violation: Violation) -> Action {
        self.stopped = true;
        self.metrics.violations.add(1);
        let side = match direction {
            Direction::Client => "client",
            Direction::Server => "server",
        };
        log::info(&format!(
            "websocket-guard: {side} sent {violation}; closing"
        ));
        if !self.upgraded && matches!(direction, Direction::Client) {
            let sent = hostcalls::send_local_response(
                self.config.deny_status,
                "websocket_guard_limit",
                &[("content-type", "text/plain")],
                b"websocket limit exceeded\n",
                None,
            );
            if sent.is_ok() {
                return Action::Pause;
            }
        }
        let stream = match direction {
            Direction::Client => StreamType::HttpRequest,
            Direction::Server => StreamType::HttpResponse,
        };
        if let Err(e) = hostcalls::close_stream(stream) {
            log::warn(&format!("websocket-guard: closing stream: {e}"));
        }
        Action::Pause
    }
}

impl HttpContext for Guard {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let upgrade = header(MapType::HttpRequestHeaders, "upgrade")
            .is_some_and(|v| contains_token(&v, "websocket"));
        let protocol = header(MapType::HttpRequestHeaders, ":protocol")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
        self.websocket = upgrade || protocol;
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, _: bool) -> Action {
        self.on_body(Direction::Client, size)
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let status = header(MapType::HttpResponseHeaders, ":status").unwrap_or_default();
        self.upgraded = self.websocket && (status == b"101" || status == b"200");
        if self.websocket && !self.upgraded {
            // Refused upstream: the bodies are ordinary HTTP, not frames.
            self.websocket = false;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, _: bool) -> Action {
        if !self.upgraded {
            return Action::Continue;
        }
        self.on_body(Direction::Server, size)
    }
}

weir_sdk::main!(|_root_id| Box::new(Root::default()));
