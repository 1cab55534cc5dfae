//! The payload of an upgraded stream (a WebSocket, any HTTP upgrade, an HTTP/2 or HTTP/3
//! extended CONNECT, a CONNECT tunnel) run through the body callbacks of its filter chain, as
//! Envoy runs it: client-to-upstream bytes are the request body, upstream-to-client bytes the
//! response body, and a half-close is the `end_of_stream` of that direction.
//!
//! Only a chain where some plugin reads bodies ([`crate::wasm::Plugin::reads_bodies`]) takes
//! this path; the others keep the splice (kernel, `splice(2)` or a plain copy, see
//! [`crate::accel`]), because every byte here is read into weir and handed to the VMs.
//!
//! Each direction is a [`FilteredBody`] over the bytes read from one end, written to the other
//! end as the filters hand them on, so the semantics are those of ordinary bodies: `Pause`
//! holds (and keeps buffering) a direction until the filter continues, which lets a filter
//! collect a WebSocket frame split across reads; `proxy_continue_stream` resumes it; a body
//! the filter rewrote is what is forwarded. A filter that closes the stream or replies locally
//! after the switch ends the tunnel: both ends are closed (a FIN, an `END_STREAM`), since the
//! response head is long gone. A read or write error resets both ends, as
//! [`crate::tunnel::splice`] does.

use super::Shared;
use super::filtered_body::FilteredBody;
use crate::accel::Spliced;
use crate::body::BoxError;
use crate::stats::AccelStats;
use crate::wasm::Direction;
use crate::wire::TunnelIo;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Each direction reads at most this much before handing it to the filters: the user-space
/// copy's buffer size ([`crate::accel`]).
const READ_SIZE: usize = 64 * 1024;

/// The filters of one upgraded stream, for its payload: put on the request that goes to the
/// router by [`super::FilterChain::filter_request`] when the request asks for a tunnel and a filter of
/// the chain reads bodies; the tunnel code takes it and, once the tunnel is established,
/// pumps the payload through it ([`PayloadFilters::pump`]) instead of splicing. Dropping it
/// unused (the tunnel was refused) changes nothing.
///
/// It keeps the stream's contexts alive: they end (`proxy_on_log`, ...) when the tunnel does.
#[derive(Clone)]
pub struct PayloadFilters {
    shared: Arc<Shared>,
    /// The filters in configuration order (client to upstream).
    request_order: Vec<usize>,
    /// The filters in reverse order (upstream to client).
    response_order: Vec<usize>,
}

/// Marks the answer of a tunnel whose payload goes through [`PayloadFilters`], so the
/// response headers callbacks are told that a body follows (`end_of_stream` false), as for
/// any response with a body.
#[derive(Debug, Clone, Copy)]
pub struct PayloadFollows;

/// How one direction ended early.
enum Stop {
    /// A read or write failed: the tunnel is reset.
    Io(io::Error),
    /// A filter closed the stream or replied locally: the tunnel is closed.
    Filter(BoxError),
}

impl PayloadFilters {
    pub(super) fn new(shared: Arc<Shared>, order: &[usize]) -> PayloadFilters {
        PayloadFilters {
            shared,
            request_order: order.to_vec(),
            response_order: order.iter().rev().copied().collect(),
        }
    }

    /// Moves the payload both ways between `downstream` and `upstream` through the filters'
    /// body callbacks until both directions are done (see the module docs). Counted in
    /// `weir_accel_splices_total{mode="filtered"}` and `weir_accel_userspace_bytes_total`.
    pub async fn pump(self, downstream: TunnelIo, upstream: TunnelIo) -> io::Result<Spliced> {
        let stats = AccelStats::global();
        stats.splices_filtered.inc();
        let (down_reset, up_reset) = (downstream.reset_handle(), upstream.reset_handle());
        let (down_read, mut down_write) = tokio::io::split(downstream);
        let (up_read, mut up_write) = tokio::io::split(upstream);
        let requests = FilteredBody::new(
            crate::body::boxed(ReadBody::new(down_read)),
            self.shared.clone(),
            self.request_order,
            Direction::Request,
        );
        let responses = FilteredBody::new(
            crate::body::boxed(ReadBody::new(up_read)),
            self.shared,
            self.response_order,
            Direction::Response,
        );
        let (mut a_to_b, mut b_to_a) = (0, 0);
        let result = tokio::try_join!(
            forward(requests, &mut up_write, &mut a_to_b),
            forward(responses, &mut down_write, &mut b_to_a)
        );
        stats.userspace_bytes.inc_by(a_to_b + b_to_a);
        match result {
            Ok(((), ())) => Ok(Spliced { a_to_b, b_to_a }),
            Err(Stop::Filter(reason)) => {
                tracing::debug!(%reason, "a filter ended the upgraded stream; closing both ends");
                // Dropping the halves after their write side is shut: a FIN (END_STREAM)
                // each way, and the peers' later bytes are not read.
                let _ = up_write.shutdown().await;
                let _ = down_write.shutdown().await;
                Ok(Spliced { a_to_b, b_to_a })
            }
            Err(Stop::Io(error)) => {
                tracing::debug!(%error, "upgraded stream failed; resetting both ends");
                down_reset.reset();
                up_reset.reset();
                Err(error)
            }
        }
    }
}

/// Writes what the filters hand on of one direction to `out`, then shuts `out`'s write side
/// (the half-close carried on). Counts the bytes written in `written`.
async fn forward<W>(mut body: FilteredBody, out: &mut W, written: &mut u64) -> Result<(), Stop>
where
    W: AsyncWrite + Unpin,
{
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                // Trailers cannot arrive here (the source is a byte stream).
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    out.write_all(&data).await.map_err(Stop::Io)?;
                    out.flush().await.map_err(Stop::Io)?;
                    *written += data.len() as u64;
                }
            }
            Some(Err(error)) => {
                return Err(match error.downcast::<io::Error>() {
                    Ok(error) => Stop::Io(*error),
                    Err(reason) => Stop::Filter(reason),
                });
            }
        }
    }
    out.shutdown().await.map_err(Stop::Io)
}

/// The bytes read from one end of a tunnel as a body: a data frame per read, the end at EOF.
struct ReadBody<R> {
    /// In a mutex only to make the body `Sync`, as [`crate::body::Body`] must be (a tunnel
    /// end is `Send` only); `get_mut` reaches it without locking.
    reader: Mutex<R>,
    buffer: Box<[u8]>,
    done: bool,
}

impl<R> ReadBody<R> {
    fn new(reader: R) -> Self {
        ReadBody {
            reader: Mutex::new(reader),
            buffer: vec![0; READ_SIZE].into_boxed_slice(),
            done: false,
        }
    }
}

impl<R: AsyncRead + Unpin> http_body::Body for ReadBody<R> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let reader = this
            .reader
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let mut read = ReadBuf::new(&mut this.buffer);
        match Pin::new(reader).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => {
                this.done = true;
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                this.done = true;
                Poll::Ready(None)
            }
            // Copied out: the filters take the bytes into the VM's buffer anyway.
            Poll::Ready(Ok(())) => {
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(read.filled())))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::filter_chain::FilterChain;
    use crate::route::RouteTable;
    use crate::upstream::{ClusterManager, WorkerPools};
    use crate::wasm::{NodeInfo, Plugin, PluginHandle, PluginSpec};
    use crate::wire::ConnectionInfo;
    use http::{Request, Response, StatusCode};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, DuplexStream};

    /// Request payload: held until 4 bytes (or the end) are buffered, then wrapped in `<<`
    /// `>>`. Response payload: passed on, except a chunk of 5 bytes or more, on which the
    /// filter closes the stream.
    const PAYLOAD_FILTER: &str = r#"(module
      (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 100) "<<>>")
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
      (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
        (if (i32.eqz (local.get $size)) (then (return (i32.const 0))))
        (if (i32.and (i32.lt_u (local.get $size) (i32.const 4)) (i32.eqz (local.get $eos)))
          (then (return (i32.const 1))))
        (drop (call $set (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 2)))
        (drop (call $set (i32.const 0) (i32.add (local.get $size) (i32.const 2)) (i32.const 0) (i32.const 102) (i32.const 2)))
        (i32.const 0))
      (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
        (if (i32.ge_u (local.get $size) (i32.const 5))
          (then (drop (call $close (i32.const 1))) (return (i32.const 1))))
        (i32.const 0))
    )"#;

    /// The same module without body callbacks.
    const HEADERS_ONLY_FILTER: &str = r#"(module
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
    )"#;

    /// Response payload: always held (`Pause`). Request payload: passed on, and each chunk
    /// resumes the response direction (`proxy_continue_stream(HttpResponse)`).
    const CONTINUE_FILTER: &str = r#"(module
      (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
      (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
        (drop (call $continue (i32.const 1)))
        (i32.const 0))
      (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
        (i32.const 1))
    )"#;

    fn chain(wat: &str) -> FilterChain {
        let code = wat::parse_str(wat).expect("test module");
        let plugin = Plugin::load(PluginSpec {
            name: "payload".into(),
            root_id: String::new(),
            vm_id: String::new(),
            code,
            vm_configuration: Vec::new(),
            plugin_configuration: Vec::new(),
            fail_open: false,
            node: NodeInfo::default(),
            source: None,
        })
        .expect("plugin loads");
        let handle = PluginHandle::new(plugin, None, [0; 32]);
        let pools = WorkerPools::new(
            ClusterManager::new(Vec::<crate::config::cluster_spec::ClusterSpec>::new())
                .expect("no clusters"),
        );
        FilterChain::new(&[handle], &pools, crate::http::DEFAULT_BUFFER_LIMIT)
    }

    fn conn() -> ConnectionInfo {
        ConnectionInfo::loopback()
    }

    fn upgrade_request() -> Request<crate::body::Body> {
        Request::get("/ws")
            .header("host", "example.com")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(crate::body::empty())
            .expect("request")
    }

    /// Runs `request` through `chain` with a `next` that answers 101 and keeps the
    /// [`PayloadFilters`] it was given, if any.
    async fn run(
        chain: &FilterChain,
        request: Request<crate::body::Body>,
    ) -> Option<PayloadFilters> {
        let taken = Mutex::new(None);
        let routes = RouteTable::default();
        let response = chain
            .run(request, &conn(), &routes, |mut request| {
                let filters = request.extensions_mut().remove::<PayloadFilters>();
                let follows = filters.is_some();
                *taken.lock().expect("lock") = filters;
                async move {
                    let mut response = Response::new(crate::body::empty());
                    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    if follows {
                        response.extensions_mut().insert(PayloadFollows);
                    }
                    response
                }
            })
            .await;
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        taken.into_inner().expect("lock")
    }

    /// Both ends of a pump: (client, downstream end, upstream end, upstream server).
    fn ends() -> (DuplexStream, TunnelIo, TunnelIo, DuplexStream) {
        let (client, downstream) = tokio::io::duplex(1 << 16);
        let (upstream, server) = tokio::io::duplex(1 << 16);
        (
            client,
            crate::wire::tunnel::boxed(downstream),
            crate::wire::tunnel::boxed(upstream),
            server,
        )
    }

    async fn read_exactly(stream: &mut DuplexStream, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut got))
            .await
            .expect("bytes within 10 s")
            .expect("read");
        got
    }

    async fn read_to_end(stream: &mut DuplexStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
            .await
            .expect("EOF within 10 s")
            .expect("read");
        got
    }

    #[tokio::test]
    async fn payload_is_collected_rewritten_and_half_closed_through_the_filters() {
        let chain = chain(PAYLOAD_FILTER);
        assert!(chain.reads_bodies());
        let filters = run(&chain, upgrade_request())
            .await
            .expect("payload filters");
        let (mut client, downstream, upstream, mut server) = ends();
        let pump = tokio::spawn(filters.pump(downstream, upstream));

        // Two bytes are held (the filter pauses under 4), two more release all four.
        client.write_all(b"ab").await.expect("write");
        let early = tokio::time::timeout(Duration::from_millis(200), server.read_u8()).await;
        assert!(early.is_err(), "bytes passed a paused filter: {early:?}");
        client.write_all(b"cd").await.expect("write");
        assert_eq!(read_exactly(&mut server, 8).await, b"<<abcd>>");

        // Short chunks the other way pass unchanged.
        server.write_all(b"hey").await.expect("write");
        assert_eq!(read_exactly(&mut client, 3).await, b"hey");

        // A half-close each way is carried, after what was held.
        client.write_all(b"z").await.expect("write");
        client.shutdown().await.expect("shutdown");
        assert_eq!(read_to_end(&mut server).await, b"<<z>>");
        server.shutdown().await.expect("shutdown");
        assert_eq!(read_to_end(&mut client).await, b"");
        let spliced = pump.await.expect("pump task").expect("pump");
        assert_eq!(
            spliced,
            Spliced {
                a_to_b: 13,
                b_to_a: 3
            }
        );
    }

    #[tokio::test]
    async fn a_filter_closing_the_stream_closes_both_ends() {
        let chain = chain(PAYLOAD_FILTER);
        let filters = run(&chain, upgrade_request())
            .await
            .expect("payload filters");
        let (mut client, downstream, upstream, mut server) = ends();
        let pump = tokio::spawn(filters.pump(downstream, upstream));
        server.write_all(b"hello").await.expect("write");
        assert_eq!(
            read_to_end(&mut client).await,
            b"",
            "nothing of the refused chunk"
        );
        assert_eq!(read_to_end(&mut server).await, b"");
        tokio::time::timeout(Duration::from_secs(10), pump)
            .await
            .expect("pump ends")
            .expect("pump task")
            .expect("a filter's close is not an error");
    }

    #[tokio::test]
    async fn only_tunnels_on_a_chain_that_reads_bodies_get_payload_filters() {
        let headers_only = chain(HEADERS_ONLY_FILTER);
        assert!(!headers_only.reads_bodies());
        assert!(run(&headers_only, upgrade_request()).await.is_none());
        let reading = chain(PAYLOAD_FILTER);
        let plain = Request::get("/")
            .header("host", "example.com")
            .body(crate::body::empty())
            .expect("request");
        assert!(run(&reading, plain).await.is_none(), "not a tunnel");
    }

    #[tokio::test]
    async fn a_continue_made_while_the_other_direction_runs_resumes_the_paused_one() {
        let chain = chain(CONTINUE_FILTER);
        let filters = run(&chain, upgrade_request())
            .await
            .expect("payload filters");
        let (mut client, downstream, upstream, mut server) = ends();
        let pump = tokio::spawn(filters.pump(downstream, upstream));
        for round in 0..3u8 {
            server.write_all(&[b'a' + round]).await.expect("write");
            let held = tokio::time::timeout(Duration::from_millis(100), client.read_u8()).await;
            assert!(
                held.is_err(),
                "round {round}: a paused direction passed: {held:?}"
            );
            // The client's bytes make the filter resume the response direction.
            client.write_all(b"go").await.expect("write");
            assert_eq!(read_exactly(&mut server, 2).await, b"go");
            assert_eq!(read_exactly(&mut client, 1).await, [b'a' + round]);
        }
        drop((client, server));
        let _ = tokio::time::timeout(Duration::from_secs(10), pump).await;
    }
}
