use std::time::Duration;

use weir_abi::{Action, BufferType, LogLevel, MapType, MetricType, Status, StreamType};

use super::*;
use crate::hostcalls as hc;
use crate::{HttpContext, RootContext};

#[test]
fn header_maps_behave_like_the_real_host() {
    let host = Host::new();
    host.set_map(
        MapType::HttpRequestHeaders,
        &[(":path", "/a"), ("X-Two", "1"), ("x-two", "2")],
    );
    let map = MapType::HttpRequestHeaders;
    assert_eq!(
        hc::get_map_value(map, "x-two").unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(hc::get_map_value(map, "absent").unwrap(), None);
    hc::replace_map_value(map, "X-Two", b"only").unwrap();
    hc::add_map_value(map, "via", b"weir").unwrap();
    hc::remove_map_value(map, "absent").unwrap();
    hc::remove_map_value(map, ":path").unwrap();
    assert_eq!(
        host.map(map),
        [
            ("x-two".into(), "only".into()),
            ("via".into(), "weir".into())
        ]
    );
    assert_eq!(
        hc::get_map(map).unwrap(),
        [
            ("x-two".into(), b"only".to_vec()),
            ("via".into(), b"weir".to_vec())
        ]
    );
    hc::set_map(MapType::HttpResponseHeaders, &[(":status", "204")]).unwrap();
    assert_eq!(
        host.map_value(MapType::HttpResponseHeaders, ":status"),
        Some("204".into())
    );
}

#[test]
fn buffers_follow_the_abi_offsets() {
    let host = Host::new();
    host.set_buffer(BufferType::HttpRequestBody, b"hello world");
    let body = BufferType::HttpRequestBody;
    assert_eq!(
        hc::get_buffer(body, 6, 100).unwrap(),
        Some(b"world".to_vec())
    );
    assert_eq!(
        hc::get_buffer(body, 0, usize::MAX).unwrap().unwrap().len(),
        11
    );
    hc::set_buffer(body, 0, 5, b"HELLO").unwrap();
    hc::set_buffer(body, 0, 0, b">").unwrap();
    hc::set_buffer(body, usize::MAX, 0, b"<").unwrap();
    assert_eq!(host.buffer(body), b">HELLO world<");
    assert_eq!(
        hc::get_buffer(BufferType::HttpResponseBody, 0, 10).unwrap(),
        None
    );
    host.set_plugin_configuration(b"{\"a\":1}");
    assert_eq!(crate::plugin_configuration().unwrap(), b"{\"a\":1}");
    assert!(crate::vm_configuration().unwrap().is_empty());
}

#[test]
fn properties_shared_data_queues_and_metrics() {
    let host = Host::new();
    host.set_property(&["request", "path"], b"/x");
    assert_eq!(
        hc::get_property(&["request", "path"]).unwrap(),
        Some(b"/x".to_vec())
    );
    hc::set_property(&["filter_state", "k"], b"v").unwrap();
    assert_eq!(host.property(&["filter_state", "k"]), Some(b"v".to_vec()));

    assert_eq!(hc::get_shared_data("k").unwrap(), None);
    hc::set_shared_data("k", b"1", None).unwrap();
    let first = hc::get_shared_data("k").unwrap().unwrap();
    hc::set_shared_data("k", b"2", Some(first.cas)).unwrap();
    let stale = hc::set_shared_data("k", b"3", Some(first.cas)).unwrap_err();
    assert!(stale.is_cas_mismatch());
    assert_eq!(host.shared_data("k").map(|(v, _)| v), Some(b"2".to_vec()));

    let queue = hc::register_shared_queue("jobs").unwrap();
    assert_eq!(hc::resolve_shared_queue("vm", "jobs").unwrap(), Some(queue));
    assert_eq!(hc::dequeue_shared_queue(queue).unwrap(), None);
    assert!(host.enqueue("jobs", b"a"));
    assert!(!host.enqueue("other", b"a"));
    hc::enqueue_shared_queue(queue, b"b").unwrap();
    assert_eq!(
        hc::dequeue_shared_queue(queue).unwrap(),
        Some(b"a".to_vec())
    );
    assert_eq!(
        hc::dequeue_shared_queue(queue).unwrap(),
        Some(b"b".to_vec())
    );

    let counter = crate::metric::Counter::define("f.hits");
    counter.add(3);
    counter.add(2);
    assert_eq!(host.metric("f.hits"), Some(5));
    let gauge = hc::define_metric(MetricType::Gauge, "f.level").unwrap();
    hc::record_metric(gauge, 7).unwrap();
    assert_eq!(hc::get_metric(gauge).unwrap(), 7);
}

#[test]
fn outcomes_are_recorded() {
    let host = Host::new();
    crate::log::info("one");
    hc::continue_stream(StreamType::HttpRequest).unwrap();
    hc::close_stream(StreamType::HttpResponse).unwrap();
    hc::set_tick_period(Duration::from_millis(250)).unwrap();
    let token = hc::dispatch_http_call(
        "auth",
        &[
            (":method", "GET"),
            (":path", "/check"),
            (":authority", "auth"),
        ],
        Some(b"q"),
        &[],
        Duration::from_secs(1),
    )
    .unwrap();
    hc::send_local_response(429, "limited", &[("Retry-After", "1")], b"slow down", None).unwrap();
    assert_eq!(host.logs(), [(LogLevel::Info, "one".to_owned())]);
    assert_eq!(host.continued(), [StreamType::HttpRequest]);
    assert_eq!(host.closed(), [StreamType::HttpResponse]);
    assert_eq!(host.tick_period(), Some(Duration::from_millis(250)));
    let calls = host.http_calls();
    assert_eq!(
        (calls[0].token, calls[0].upstream.as_str()),
        (token, "auth")
    );
    assert_eq!(calls[0].body, b"q");
    assert_eq!(
        host.local_response(),
        Some(LocalResponse {
            status: 429,
            details: "limited".into(),
            headers: vec![("retry-after".into(), "1".into())],
            body: b"slow down".to_vec(),
            grpc_status: None,
        })
    );
    host.clear_outcome();
    assert!(host.local_response().is_none() && host.logs().is_empty());
}

#[test]
fn without_a_host_every_call_is_unimplemented() {
    {
        let _host = Host::new();
        hc::log(LogLevel::Info, "x").unwrap();
    }
    let status = hc::log(LogLevel::Info, "x").unwrap_err().status();
    assert_eq!(status, Some(Status::Unimplemented));
}

/// The shape a filter's own test takes: drive the contexts like the host would.
#[test]
fn a_filter_runs_against_the_host() {
    struct Root {
        prefix: String,
    }
    impl RootContext for Root {
        fn on_configure(&mut self, _: usize) -> bool {
            self.prefix = String::from_utf8_lossy(&crate::plugin_configuration().unwrap()).into();
            !self.prefix.is_empty()
        }
        fn create_http_context(&mut self, _: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Guard(self.prefix.clone())))
        }
    }
    struct Guard(String);
    impl HttpContext for Guard {
        fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
            let path = hc::get_map_value(MapType::HttpRequestHeaders, ":path")
                .ok()
                .flatten()
                .unwrap_or_default();
            if path.starts_with(self.0.as_bytes()) {
                let _ = hc::send_local_response::<&str, &str>(403, "guard", &[], b"", None);
                return Action::Pause;
            }
            Action::Continue
        }
    }

    let host = Host::new();
    let mut root = Root {
        prefix: String::new(),
    };
    assert!(!root.on_configure(0), "an empty prefix is refused");
    host.set_plugin_configuration(b"/admin");
    assert!(root.on_configure(6));
    let mut stream = root.create_http_context(2).unwrap();
    host.set_map(MapType::HttpRequestHeaders, &[(":path", "/admin/x")]);
    assert_eq!(stream.on_http_request_headers(1, true), Action::Pause);
    assert_eq!(host.local_response().map(|r| r.status), Some(403));
    host.clear_outcome();
    host.set_map(MapType::HttpRequestHeaders, &[(":path", "/")]);
    assert_eq!(stream.on_http_request_headers(1, true), Action::Continue);
    assert!(host.local_response().is_none());
}
