//! What a filter implements: one [`RootContext`] per plugin configuration, and per stream an
//! [`HttpContext`] (L7) or a [`StreamContext`] (L4) that the root creates.
//!
//! Every method has a default that lets traffic through untouched, so a filter implements only
//! the callbacks it needs.

use weir_abi::{Action, PeerType};

/// The per-plugin context: lives as long as the plugin's configuration in one VM (one per
/// worker), receives the configuration, ticks, queue wake-ups and callout answers, and creates
/// the per-stream contexts.
pub trait RootContext {
    /// Once per VM, after the root context is created. `vm_configuration_size` is the length
    /// of `vm_config.configuration`; read it with [`crate::vm_configuration`].
    /// Return false to fail the VM. Default: true.
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        let _ = vm_configuration_size;
        true
    }

    /// On every (re)configuration of the plugin. `plugin_configuration_size` is the length of
    /// the plugin's `configuration`; read it with [`crate::plugin_configuration`].
    /// Return false to reject the configuration. Default: true.
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let _ = plugin_configuration_size;
        true
    }

    /// Every tick period set with [`crate::hostcalls::set_tick_period`]. Default: nothing.
    fn on_tick(&mut self) {}

    /// A value was enqueued on a queue this VM registered. Default: nothing.
    fn on_queue_ready(&mut self, queue_id: u32) {
        let _ = queue_id;
    }

    /// The answer to an HTTP callout this root context dispatched (0 headers when it failed).
    /// Default: nothing.
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let _ = (token, num_headers, body_size, num_trailers);
    }

    /// The root context is being torn down (plugin removed or VM shutting down). Return false
    /// to finish asynchronous work first and call [`crate::hostcalls::done`] later.
    /// Default: true.
    fn on_done(&mut self) -> bool {
        true
    }

    /// Called for a new HTTP stream (on its first HTTP callback). `None` lets the stream pass
    /// through this plugin untouched. Default: `None`.
    fn create_http_context(&mut self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let _ = context_id;
        None
    }

    /// Called for a new L4 connection (on its first connection callback). `None` lets the
    /// connection pass untouched. Default: `None`.
    fn create_stream_context(&mut self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        let _ = context_id;
        None
    }
}

/// One HTTP stream (request and response). Header, body and trailer callbacks return an
/// [`Action`]: `Continue` passes the data on, `Pause` holds it (a paused body keeps buffering)
/// until the filter calls [`crate::hostcalls::continue_stream`] or answers locally.
pub trait HttpContext {
    /// The request headers arrived (`end_of_stream`: no body follows). Default: Continue.
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let _ = (num_headers, end_of_stream);
        Action::Continue
    }

    /// Request body bytes arrived; `body_size` is what is buffered now (only the new chunk
    /// unless earlier calls returned `Pause`). Default: Continue.
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let _ = (body_size, end_of_stream);
        Action::Continue
    }

    /// The request trailers arrived. Default: Continue.
    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        let _ = num_trailers;
        Action::Continue
    }

    /// The response headers arrived (`:status` included). Default: Continue.
    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let _ = (num_headers, end_of_stream);
        Action::Continue
    }

    /// Response body bytes arrived; as for the request body. Default: Continue.
    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let _ = (body_size, end_of_stream);
        Action::Continue
    }

    /// The response trailers arrived. Default: Continue.
    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        let _ = num_trailers;
        Action::Continue
    }

    /// The answer to an HTTP callout this stream dispatched; host calls made here act on this
    /// stream (e.g. `continue_stream`). Default: nothing.
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let _ = (token, num_headers, body_size, num_trailers);
    }

    /// The stream finished; headers and properties are still readable (access logs).
    /// Default: nothing.
    fn on_log(&mut self) {}

    /// The stream is about to be deleted. Default: true (delete now).
    fn on_done(&mut self) -> bool {
        true
    }
}

/// One L4 (TCP) connection through a network filter.
pub trait StreamContext {
    /// The downstream connection was accepted. Default: Continue.
    fn on_new_connection(&mut self) -> Action {
        Action::Continue
    }

    /// Bytes from the downstream peer; read them with
    /// [`crate::hostcalls::get_buffer`]`(BufferType::DownstreamData, ..)`. Default: Continue.
    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        let _ = (data_size, end_of_stream);
        Action::Continue
    }

    /// Bytes from the upstream peer. Default: Continue.
    fn on_upstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        let _ = (data_size, end_of_stream);
        Action::Continue
    }

    /// The downstream side closed. Default: nothing.
    fn on_downstream_close(&mut self, peer_type: PeerType) {
        let _ = peer_type;
    }

    /// The upstream side closed. Default: nothing.
    fn on_upstream_close(&mut self, peer_type: PeerType) {
        let _ = peer_type;
    }

    /// The answer to an HTTP callout this connection dispatched. Default: nothing.
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let _ = (token, num_headers, body_size, num_trailers);
    }

    /// The connection finished. Default: nothing.
    fn on_log(&mut self) {}

    /// The connection is about to be deleted. Default: true (delete now).
    fn on_done(&mut self) -> bool {
        true
    }
}
