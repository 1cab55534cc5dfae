//! Unit tests of the Wasm host with small hand-written modules (WAT): ABI detection, the root
//! lifecycle, bounds-checked host functions, stubs for unknown imports, deadlines, memory
//! limits, stream callbacks and events, and the config shape Envoy writes.

use super::WasmError;
use super::context::{StreamData, StreamEvent, StreamInfo};
use super::plugin::{AbiVersion, NodeInfo, Plugin, PluginSpec};
use super::vm::{Direction, Side, Vm};
use bytes::Bytes;
use std::sync::Arc;
use weir_abi::{Action, StreamType};

/// A proxy-wasm module declaring `version`, with `imports`, a `proxy_on_configure` whose body
/// is `configure` (must leave an i32), and `extra` exports.
pub(crate) fn module(version: &str, imports: &str, configure: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
          {imports}
          (memory (export "memory") 1)
          (data (i32.const 100) "x-a1x-bcd")
          (func (export "{version}"))
          (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
          (func (export "proxy_on_context_create") (param i32 i32))
          (func (export "proxy_on_configure") (param i32 i32) (result i32) {configure})
          {extra}
        )"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("test module: {e}\n{text}"))
}

fn spec(code: Vec<u8>, configuration: &str) -> PluginSpec {
    PluginSpec {
        name: "unit".into(),
        root_id: "unit".into(),
        vm_id: "unit".into(),
        code,
        vm_configuration: Vec::new(),
        plugin_configuration: configuration.as_bytes().to_vec(),
        fail_open: false,
        node: NodeInfo::default(),
        source: None,
    }
}

fn load(configure: &str, imports: &str) -> Result<Arc<Plugin>, WasmError> {
    Plugin::load(spec(
        module(weir_abi::names::ABI_VERSION_0_2_1, imports, configure, ""),
        "abc",
    ))
}

#[test]
fn abi_version_is_detected_from_exports() {
    for (name, version) in [
        (weir_abi::names::ABI_VERSION_0_2_1, AbiVersion::V0_2_1),
        (weir_abi::names::ABI_VERSION_0_2_0, AbiVersion::V0_2_0),
        (weir_abi::names::ABI_VERSION_0_1_0, AbiVersion::V0_1_0),
    ] {
        let plugin = Plugin::load(spec(module(name, "", "(i32.const 1)", ""), "")).unwrap();
        assert_eq!(plugin.abi(), version);
    }
    let not_proxy_wasm = Plugin::load(spec(module("something_else", "", "(i32.const 1)", ""), ""));
    assert!(
        matches!(not_proxy_wasm, Err(WasmError::NotProxyWasm(_))),
        "{not_proxy_wasm:?}"
    );
    let garbage = Plugin::load(spec(b"\0asm\x01\0\0\0junk".to_vec(), ""));
    assert!(matches!(garbage, Err(WasmError::Compile(_))), "{garbage:?}");
}

#[test]
fn a_module_reads_bodies_when_it_exports_a_body_callback_and_no_headers_only_marker() {
    let v = weir_abi::names::ABI_VERSION_0_2_1;
    let load = |extra: &str| Plugin::load(spec(module(v, "", "(i32.const 1)", extra), "")).unwrap();
    let request_body =
        r#"(func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0))"#;
    let response_body = r#"(func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (i32.const 0))"#;
    let marker = format!(r#"(func (export "{}"))"#, weir_abi::names::HEADERS_ONLY);
    assert!(!load("").reads_bodies(), "no body callback");
    assert!(load(request_body).reads_bodies(), "request body callback");
    assert!(load(response_body).reads_bodies(), "response body callback");
    assert!(
        !load(&format!("{request_body}{response_body}{marker}")).reads_bodies(),
        "body callbacks, but declared headers-only"
    );
}

#[test]
fn configure_returning_false_refuses_the_plugin() {
    let refused = load("(i32.const 0)", "");
    assert!(
        matches!(refused, Err(WasmError::Refused(name)) if name == "proxy_on_configure"),
        "{refused:?}"
    );
}

#[test]
fn bad_pointers_get_a_status_not_a_trap() {
    // proxy_log from an address past the end of memory; get_buffer_bytes writing its result
    // pointer past the end; a header map with no stream: BadArgument, BadArgument, NotFound.
    let imports = r#"
        (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
        (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
        (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))"#;
    let configure = r#"
        (i32.and
          (i32.and
            (i32.eq (call $log (i32.const 2) (i32.const -16) (i32.const 100)) (i32.const 2))
            (i32.eq (call $get (i32.const 7) (i32.const 0) (i32.const -1) (i32.const -4) (i32.const -8)) (i32.const 2)))
          (i32.eq (call $pairs (i32.const 0) (i32.const 0) (i32.const 4)) (i32.const 1)))"#;
    load(configure, imports).expect("every call answered with the expected status");
}

#[test]
fn plugin_configuration_is_read_with_an_unbounded_max_size() {
    // get_buffer_bytes(PluginConfiguration, 0, usize::MAX) as the Rust SDK calls it: the
    // bytes land at the allocator's address (4096), their address and length at 0 and 4.
    let imports = r#"(import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))"#;
    let configure = r#"
        (i32.and
          (i32.and
            (i32.eqz (call $get (i32.const 7) (i32.const 0) (i32.const -1) (i32.const 0) (i32.const 4)))
            (i32.eq (i32.load (i32.const 4)) (i32.const 3)))
          (i32.eq (i32.load8_u (i32.load (i32.const 0))) (i32.const 97)))"#;
    load(configure, imports).expect("configuration read");
}

#[test]
fn unknown_imports_link_and_answer_unimplemented() {
    let imports = r#"
        (import "env" "proxy_grpc_call" (func $grpc (param i32 i32) (result i32)))
        (import "env" "proxy_from_the_future" (func $future (result i32)))
        (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#;
    let configure = r#"
        (i32.and
          (i32.and
            (i32.eq (call $grpc (i32.const 0) (i32.const 0)) (i32.const 12))
            (i32.eq (call $future) (i32.const 12)))
          (i32.eq (call $open (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                               (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)) (i32.const 52)))"#;
    load(configure, imports).expect("stubs answer statuses");
}

#[test]
fn endless_loop_hits_the_deadline() {
    let looping = load("(loop $again (br $again)) (i32.const 1)", "");
    match looping {
        Err(WasmError::Trap(message)) => assert!(message.contains("deadline"), "{message}"),
        other => panic!("expected a deadline trap, got {other:?}"),
    }
}

#[test]
fn memory_growth_past_the_limit_traps() {
    // 65535 pages is ~4 GiB, far past the default 256 MiB.
    let growing = load("(drop (memory.grow (i32.const 65535))) (i32.const 1)", "");
    assert!(matches!(growing, Err(WasmError::Trap(_))), "{growing:?}");
    let trapping = load("unreachable", "");
    assert!(matches!(trapping, Err(WasmError::Trap(_))), "{trapping:?}");
}

/// A VM's memory is a copy-on-write mapping of its module's data image (a memfd wasmtime names
/// `wasm-memory-image`), not an anonymous mapping the data is copied into: creating a VM
/// copies nothing.
#[test]
fn a_vm_memory_maps_the_module_data_image_copy_on_write() {
    let plugin = load("(i32.const 1)", "").unwrap();
    let mut vm = Vm::start(&plugin, Default::default()).unwrap();
    let base = vm.memory_base().expect("the module exports its memory");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapping = maps
        .lines()
        .find(|line| {
            let range = line.split_whitespace().next().unwrap_or("");
            let (start, end) = range.split_once('-').unwrap_or(("0", "0"));
            let start = usize::from_str_radix(start, 16).unwrap_or(usize::MAX);
            let end = usize::from_str_radix(end, 16).unwrap_or(0);
            (start..end).contains(&base)
        })
        .unwrap_or_else(|| panic!("no mapping holds {base:#x}:\n{maps}"));
    assert!(
        mapping.contains("wasm-memory-image"),
        "the memory's first page is not the module's image: {mapping}"
    );
    let perms = mapping.split_whitespace().nth(1).unwrap_or("");
    assert!(
        perms.ends_with('p'),
        "mapped private (copy-on-write): {mapping}"
    );
}

fn stream_info() -> StreamInfo {
    StreamInfo {
        source: "127.0.0.1:5000".parse().unwrap(),
        destination: "127.0.0.1:8080".parse().unwrap(),
        tls: false,
        mtls: false,
        protocol: "HTTP/1.1",
        route: Default::default(),
        start: std::time::SystemTime::now(),
        upstream: Default::default(),
    }
}

/// Header edits and stream events from `proxy_on_request_headers`, for 0.1.0 (two
/// parameters, `proxy_continue_request`) and 0.2.1 (three, `proxy_continue_stream`).
#[test]
fn request_headers_callback_edits_the_map_and_sends_events() {
    let cases = [
        (
            weir_abi::names::ABI_VERSION_0_1_0,
            "(param i32 i32)",
            r#"(import "env" "proxy_continue_request" (func $continue (result i32)))"#,
            "(drop (call $continue))",
        ),
        (
            weir_abi::names::ABI_VERSION_0_2_1,
            "(param i32 i32 i32)",
            r#"(import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))"#,
            "(drop (call $continue (i32.const 0)))",
        ),
    ];
    for (version, params, continue_import, continue_call) in cases {
        let imports = format!(
            r#"(import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
               (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
               {continue_import}"#
        );
        let extra = format!(
            r#"(func (export "proxy_on_request_headers") {params} (result i32)
                 (drop (call $replace (i32.const 0) (i32.const 100) (i32.const 3) (i32.const 103) (i32.const 1)))
                 (drop (call $remove (i32.const 0) (i32.const 104) (i32.const 3)))
                 {continue_call}
                 (i32.const 1))"#
        );
        let plugin =
            Plugin::load(spec(module(version, &imports, "(i32.const 1)", &extra), "")).unwrap();
        let mut vm = Vm::start(&plugin, Default::default()).unwrap();
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let id = vm
            .create_stream(StreamData::new(stream_info(), events_tx))
            .unwrap();
        let stream = vm.stream_mut(id).unwrap();
        stream.request_headers = vec![
            (":path".into(), Bytes::from_static(b"/")),
            ("x-a".into(), Bytes::from_static(b"old")),
            ("x-a".into(), Bytes::from_static(b"older")),
            ("x-b".into(), Bytes::from_static(b"gone")),
        ];
        let action = vm.on_headers(id, Direction::Request, 4, true).unwrap();
        assert_eq!(action, Action::Pause, "{version}");
        let headers = &vm.stream_mut(id).unwrap().request_headers;
        assert_eq!(
            headers,
            &vec![
                (":path".to_string(), Bytes::from_static(b"/")),
                ("x-a".to_string(), Bytes::from_static(b"1")),
            ],
            "{version}"
        );
        assert_eq!(
            events.try_recv(),
            Ok(StreamEvent::Continue(StreamType::HttpRequest))
        );
        vm.finish_stream(id).unwrap();
        assert!(vm.stream_mut(id).is_none());
    }
}

/// Response trailers are a map of their own (`HttpResponseTrailers`), and body callbacks see
/// the bytes buffered so far and may replace them.
#[test]
fn trailers_and_body_buffers_are_reachable_from_their_callbacks() {
    let imports = r#"
        (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
        (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))"#;
    let extra = r#"
        (func (export "proxy_on_response_trailers") (param i32 i32) (result i32)
          (drop (call $add (i32.const 3) (i32.const 100) (i32.const 3) (i32.const 103) (i32.const 1)))
          (i32.const 0))
        (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
          ;; replace everything buffered with "x-b"
          (drop (call $set (i32.const 1) (i32.const 0) (local.get 1) (i32.const 104) (i32.const 3)))
          (i32.const 0))"#;
    let code = module(
        weir_abi::names::ABI_VERSION_0_2_1,
        imports,
        "(i32.const 1)",
        extra,
    );
    let plugin = Plugin::load(spec(code, "")).unwrap();
    let mut vm = Vm::start(&plugin, Default::default()).unwrap();
    let (events_tx, _events) = tokio::sync::mpsc::unbounded_channel();
    let id = vm
        .create_stream(StreamData::new(stream_info(), events_tx))
        .unwrap();
    vm.stream_mut(id).unwrap().response_body = b"original body".to_vec();
    let action = vm.on_body(id, Direction::Response, 13, true).unwrap();
    assert_eq!(action, Action::Continue);
    assert_eq!(vm.stream_mut(id).unwrap().response_body, b"x-b");
    let action = vm.on_trailers(id, Direction::Response, 0).unwrap();
    assert_eq!(action, Action::Continue);
    assert_eq!(
        vm.stream_mut(id).unwrap().response_trailers,
        vec![("x-a".to_string(), Bytes::from_static(b"1"))]
    );
    assert!(vm.stream_mut(id).unwrap().request_trailers.is_empty());
}

/// The network (L4) callbacks: `proxy_on_new_connection` reads `upstream.address` and puts
/// it into the downstream buffer; `proxy_on_downstream_data` prepends to what it holds and
/// continues the upstream side; `proxy_on_upstream_data` closes the connection and pauses;
/// the close callback gets the peer type.
#[test]
fn network_callbacks_reach_their_buffers_and_send_events() {
    let imports = r#"
        (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
        (import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
        (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
        (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))"#;
    let extra = r#"
        (data (i32.const 150) "upstream\00address")
        (func (export "proxy_on_new_connection") (param i32) (result i32)
          (if (i32.eqz (call $prop (i32.const 150) (i32.const 16) (i32.const 300) (i32.const 304)))
            (then (drop (call $set (i32.const 2) (i32.const 0) (i32.const 0)
                                   (i32.load (i32.const 300)) (i32.load (i32.const 304))))))
          (i32.const 0))
        (func (export "proxy_on_downstream_data") (param i32 i32 i32) (result i32)
          (drop (call $set (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 3)))
          (drop (call $continue (i32.const 3)))
          (i32.const 0))
        (func (export "proxy_on_upstream_data") (param i32 i32 i32) (result i32)
          (drop (call $close (i32.const 3)))
          (i32.const 1))
        (func (export "proxy_on_downstream_connection_close") (param i32 i32)
          ;; peer type 2 (Remote): append "!" to the upstream buffer, as a witness
          (if (i32.eq (local.get 1) (i32.const 2))
            (then (drop (call $set (i32.const 3) (i32.const 1000) (i32.const 0) (i32.const 103) (i32.const 1))))))"#;
    let code = module(
        weir_abi::names::ABI_VERSION_0_2_1,
        imports,
        "(i32.const 1)",
        extra,
    );
    let plugin = Plugin::load(spec(code, "")).unwrap();
    let mut vm = Vm::start(&plugin, Default::default()).unwrap();
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let info = stream_info();
    *info.upstream.lock().unwrap() = Some("10.0.0.7:9000".parse().unwrap());
    let id = vm.create_stream(StreamData::new(info, events_tx)).unwrap();

    assert_eq!(vm.on_new_connection(id).unwrap(), Action::Continue);
    assert_eq!(vm.stream_mut(id).unwrap().downstream_data, b"10.0.0.7:9000");

    vm.stream_mut(id).unwrap().downstream_data = b"payload".to_vec();
    let action = vm.on_data(id, Side::Downstream, 7, false).unwrap();
    assert_eq!(action, Action::Continue);
    assert_eq!(vm.stream_mut(id).unwrap().downstream_data, b"x-apayload");
    assert_eq!(
        events.try_recv(),
        Ok(StreamEvent::Continue(StreamType::Upstream))
    );

    vm.stream_mut(id).unwrap().upstream_data = b"reply".to_vec();
    let action = vm.on_data(id, Side::Upstream, 5, true).unwrap();
    assert_eq!(action, Action::Pause);
    assert_eq!(events.try_recv(), Ok(StreamEvent::Close));

    vm.on_connection_close(id, Side::Downstream, weir_abi::PeerType::Remote)
        .unwrap();
    assert_eq!(vm.stream_mut(id).unwrap().upstream_data, b"reply1");
    vm.on_connection_close(id, Side::Upstream, weir_abi::PeerType::Local)
        .unwrap();
    vm.finish_stream(id).unwrap();
}
