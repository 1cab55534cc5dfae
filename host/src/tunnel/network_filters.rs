//! Network (L4) Wasm filters on a tcp_proxy listener: `envoy.filters.network.wasm` entries
//! before the `envoy.filters.network.tcp_proxy` of a filter chain, run as Envoy runs them.
//!
//! ```text
//! accept -> proxy_on_new_connection (filter 0, 1, ...) -> connect upstream
//! downstream bytes -> filter 0 -> filter 1 -> ... -> upstream
//! upstream bytes   <- filter 0 <- filter 1 <- ... <- upstream   (reverse order, as Envoy)
//! upstream's end of stream -> proxy_on_upstream_data(end), proxy_on_upstream_connection_close
//! end -> proxy_on_downstream_connection_close, proxy_on_log, proxy_on_done, proxy_on_delete
//! ```
//!
//! Every filter has its own context (its own VM per worker) and holds, per direction, the
//! bytes it has not passed on: a data callback sees all it holds (`BufferType::DownstreamData`
//! / `UpstreamData`), may rewrite them with `proxy_set_buffer_bytes`, and returns `Continue`
//! (the bytes, as it left them, go to the next filter and then the socket) or `Pause` (they
//! stay held, later bytes are added to them, Envoy's `StopIteration`) until the module calls
//! `proxy_continue_stream` for that direction (`Downstream` or `Upstream`). A pause in
//! `proxy_on_new_connection` holds the upstream connection back in the same way.
//! `proxy_close_stream` closes the connection, both sides, once the callback returns. A filter
//! whose VM fails closes the connection too (or is skipped from then on with `fail_open`).
//!
//! As in Envoy, `proxy_on_upstream_connection_close` comes right after the data callback that
//! carried the upstream's end of stream (a connection the upstream never ended gets none), and
//! `proxy_on_downstream_connection_close` when the connection is done. Where weir differs:
//! filters before a paused one see only the bytes that are new to them (Envoy hands them its
//! whole read buffer again).
//!
//! The bytes of such a connection are read into weir (64 KiB at a time per direction): it is
//! never spliced in the kernel, and counts as a user-space splice in
//! `weir_accel_splices_total{mode="userspace"}`.

use crate::accel::Tally;
use crate::stats::AccelStats;
use crate::upstream::WorkerPools;
use crate::wasm::{PluginHandle, Side, SlotError, StreamEvent, StreamHandle, StreamInfo, VmSlot};
use crate::wire::TunnelIo;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use weir_abi::{Action, PeerType, StreamType};

/// What one read asks of the socket: as much as the user-space copy reads at a time.
const READ_SIZE: usize = 64 * 1024;

/// The network filters of one tcp_proxy listener on one worker.
pub struct NetworkFilters {
    slots: Vec<Arc<VmSlot>>,
    /// A plugin that is not loaded and fails closed: every connection is closed.
    unloaded: Option<String>,
}

impl NetworkFilters {
    /// Filters running `plugins` in order, each in its own VM on this worker, with callouts
    /// through `pools`. Call on the worker's runtime (the VMs' timers start there).
    pub fn new(plugins: &[Arc<PluginHandle>], pools: &WorkerPools) -> NetworkFilters {
        let (slots, unloaded) = crate::wasm::slots_of(plugins, pools);
        NetworkFilters { slots, unloaded }
    }

    /// Whether there is none (then the connection may be spliced in the kernel).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.unloaded.is_none()
    }

    /// Creates each filter's context for a new connection (`source` the client, `destination`
    /// the listener's address) and runs `proxy_on_new_connection`, waiting while a filter
    /// paused it. `None`: a filter closed the connection, or failed (not `fail_open`); the
    /// contexts have ended and the caller closes the downstream socket.
    pub async fn start(
        &self,
        source: SocketAddr,
        destination: SocketAddr,
    ) -> Option<FilteredConnection> {
        if let Some(plugin) = &self.unloaded {
            tracing::debug!(
                plugin,
                "Wasm plugin not loaded and fail closed: connection closed"
            );
            return None;
        }
        let info = StreamInfo {
            source,
            destination,
            tls: false,
            mtls: false,
            protocol: "",
            start: std::time::SystemTime::now(),
            route: Default::default(),
            upstream: Default::default(),
        };
        let upstream = info.upstream.clone();
        let mut filters = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            match slot.start_stream(info.clone()) {
                Ok(handle) => filters.push(Some(handle)),
                Err(_) if slot.plugin().fail_open() => filters.push(None),
                Err(_) => return None,
            }
        }
        let count = filters.len();
        let connection = FilteredConnection {
            filters: Mutex::new(filters),
            state: Mutex::new(State {
                downstream: Flow::new(count),
                upstream: Flow::new(count),
                closed: false,
                upstream_closed: vec![false; count],
                peer_ended: [false; 2],
            }),
            woken: [Notify::new(), Notify::new()],
            closing: Notify::new(),
            upstream,
        };
        for index in 0..count {
            let called = connection.with_filter(index, StreamHandle::new_connection);
            let paused = match called {
                None => false,
                Some(Err(error)) => {
                    connection.failed(index, &error);
                    false
                }
                Some(Ok(action)) => {
                    connection.drain_events(index);
                    action == Action::Pause
                }
            };
            if paused && !connection.is_closed() {
                connection.wait_new_connection(index).await;
            }
            if connection.is_closed() {
                // Dropping it ends the contexts.
                return None;
            }
        }
        Some(connection)
    }
}

/// One direction's progress through the filters.
struct Flow {
    /// Per filter: it paused and holds bytes of this direction.
    paused: Vec<bool>,
    /// Per filter: the end of the stream reached it while it held bytes.
    held_end: Vec<bool>,
    /// Filters that asked to continue this direction, oldest first.
    resumed: VecDeque<usize>,
}

impl Flow {
    fn new(filters: usize) -> Flow {
        Flow {
            paused: vec![false; filters],
            held_end: vec![false; filters],
            resumed: VecDeque::new(),
        }
    }
}

struct State {
    downstream: Flow,
    upstream: Flow,
    /// A filter closed the connection (or failed): both sides close.
    closed: bool,
    /// Per filter: `proxy_on_upstream_connection_close` was called.
    upstream_closed: Vec<bool>,
    /// Per side (downstream, upstream): the peer ended its stream or failed, so its close
    /// was the peer's (`PeerType::Remote`) rather than weir's.
    peer_ended: [bool; 2],
}

impl State {
    fn flow(&mut self, side: Side) -> &mut Flow {
        match side {
            Side::Downstream => &mut self.downstream,
            Side::Upstream => &mut self.upstream,
        }
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Downstream => 0,
        Side::Upstream => 1,
    }
}

/// What a run through the filters ended with.
enum Outcome {
    /// Write these bytes to the far socket, then shut its write side down when `end` is set.
    Forward { bytes: Vec<u8>, end: bool },
    /// A filter holds them.
    Held,
    /// The connection is closing.
    Close,
}

/// One connection's filter contexts and where each direction stands. Locks are taken only
/// for a callback or a look at the state, never across an `.await`, and all of it runs on
/// the connection's one task.
pub struct FilteredConnection {
    /// Per filter: its context, or `None` once it is skipped (failed open).
    filters: Mutex<Vec<Option<StreamHandle>>>,
    state: Mutex<State>,
    /// Wakes the pump of each side (downstream, upstream) when a filter continued it.
    woken: [Notify; 2],
    /// Wakes the connection when a filter closed it.
    closing: Notify,
    /// `upstream.address`, seen by every context.
    upstream: crate::wasm::SharedAddress,
}

impl FilteredConnection {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_closed(&self) -> bool {
        self.state().closed
    }

    fn close(&self) {
        self.state().closed = true;
        self.closing.notify_one();
        for woken in &self.woken {
            woken.notify_one();
        }
    }

    /// Runs `f` on filter `index` if it is still in the chain.
    fn with_filter<R>(&self, index: usize, f: impl FnOnce(&mut StreamHandle) -> R) -> Option<R> {
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        filters.get_mut(index).and_then(Option::as_mut).map(f)
    }

    /// Filter `index` failed (its VM trapped, ran out of time or memory, or was replaced):
    /// skip it from now on when it fails open, else close the connection.
    fn failed(&self, index: usize, error: &SlotError) {
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(Some(handle)) = filters.get_mut(index) else {
            // Already skipped.
            return;
        };
        let fail_open = handle.plugin().fail_open();
        let name = handle.plugin().name().to_string();
        drop(filters);
        if fail_open {
            tracing::debug!(plugin = %name, %error, "network filter failed open; skipped for this connection");
            if let Some(slot) = self
                .filters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(index)
            {
                *slot = None;
            }
            // What it held died with its VM; an end of stream it held goes on (as a resume
            // with no bytes), so the far side still sees the FIN.
            for side in [Side::Downstream, Side::Upstream] {
                let paused = self.state().flow(side).paused[index];
                if paused {
                    self.resume(side, index);
                }
            }
        } else {
            tracing::debug!(plugin = %name, %error, "network filter failed; closing the connection");
            self.close();
        }
    }

    /// Acts on what filter `index` asked for (or on its VM's failure).
    fn on_event(&self, index: usize, event: StreamEvent) {
        match event {
            StreamEvent::Continue(StreamType::Downstream) => self.resume(Side::Downstream, index),
            StreamEvent::Continue(StreamType::Upstream) => self.resume(Side::Upstream, index),
            // HTTP directions and local replies mean nothing on a connection.
            StreamEvent::Continue(_) | StreamEvent::LocalResponse(_) => {}
            StreamEvent::Close => self.close(),
            StreamEvent::VmFailed => self.failed(index, &SlotError::Gone),
        }
    }

    fn resume(&self, side: Side, index: usize) {
        self.state().flow(side).resumed.push_back(index);
        self.woken[side_index(side)].notify_one();
    }

    /// Acts on the events filter `index` sent during the callback that just returned.
    fn drain_events(&self, index: usize) {
        let mut events = Vec::new();
        self.with_filter(index, |handle| {
            while let Ok(event) = handle.events().try_recv() {
                events.push(event);
            }
        });
        for event in events {
            self.on_event(index, event);
        }
    }

    /// Waits until filter `index`, paused in `proxy_on_new_connection`, continues (either
    /// direction) or the connection closes.
    async fn wait_new_connection(&self, index: usize) {
        loop {
            {
                let mut state = self.state();
                if state.closed {
                    return;
                }
                let resumed = [Side::Downstream, Side::Upstream]
                    .into_iter()
                    .any(|side| state.flow(side).resumed.contains(&index));
                if resumed {
                    state.downstream.resumed.retain(|i| *i != index);
                    state.upstream.resumed.retain(|i| *i != index);
                    return;
                }
            }
            let event = self.next_event().await;
            match event {
                Some((index, event)) => self.on_event(index, event),
                None => return,
            }
        }
    }

    /// The next event of any filter still in the chain; `None` when none is left to send one.
    async fn next_event(&self) -> Option<(usize, StreamEvent)> {
        std::future::poll_fn(|cx| {
            let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
            let mut live = false;
            for (index, slot) in filters.iter_mut().enumerate() {
                let Some(handle) = slot else { continue };
                match handle.events().poll_recv(cx) {
                    Poll::Ready(Some(event)) => return Poll::Ready(Some((index, event))),
                    // The VM is gone without a word: as a failure.
                    Poll::Ready(None) => return Poll::Ready(Some((index, StreamEvent::VmFailed))),
                    Poll::Pending => live = true,
                }
            }
            if live {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        })
        .await
    }

    /// Acts on filter events as they come, until the connection ends (never returns while
    /// a filter is left).
    async fn follow_events(&self) {
        while !self.is_closed() {
            let Some((index, event)) = self.next_event().await else {
                break;
            };
            self.on_event(index, event);
        }
        std::future::pending::<()>().await
    }

    /// The upstream is connected (to `address`, when it is known): `upstream.address` reads
    /// it from now on.
    pub fn connected(&self, address: Option<SocketAddr>) {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) = address;
    }

    /// After filter `index` saw the upstream's end of stream: its
    /// `proxy_on_upstream_connection_close`, once (as Envoy, which has no upstream close
    /// event in a network filter, calls it then too).
    fn upstream_ended(&self, index: usize) {
        {
            let mut state = self.state();
            match state.upstream_closed.get_mut(index) {
                Some(closed) if !*closed => *closed = true,
                _ => return,
            }
        }
        let called = self.with_filter(index, |handle| {
            handle.connection_closed(Side::Upstream, PeerType::Remote)
        });
        if let Some(Err(error)) = called {
            self.failed(index, &error);
        }
    }

    /// The filters in the order `side`'s bytes go through them.
    fn order(&self, side: Side) -> Vec<usize> {
        let count = self.state().downstream.paused.len();
        match side {
            Side::Downstream => (0..count).collect(),
            Side::Upstream => (0..count).rev().collect(),
        }
    }

    /// The bytes of `side` the filters that paused on them hold.
    fn held(&self, side: Side) -> usize {
        let paused: Vec<usize> = {
            let mut state = self.state();
            let flow = state.flow(side);
            (0..flow.paused.len()).filter(|i| flow.paused[*i]).collect()
        };
        paused
            .into_iter()
            .filter_map(|index| self.with_filter(index, |handle| handle.held(side)))
            .sum()
    }

    /// Runs `bytes` (`end`: the end of the stream) through the filters of `side` from
    /// position `from` of its order.
    fn run(&self, side: Side, from: usize, mut bytes: Vec<u8>, end: bool) -> Outcome {
        let order = self.order(side);
        for &index in order.iter().skip(from) {
            if self.is_closed() {
                return Outcome::Close;
            }
            if bytes.is_empty() && !end {
                return Outcome::Held;
            }
            let called = self.with_filter(index, |handle| handle.data(side, &bytes, end));
            if end && side == Side::Upstream && matches!(called, Some(Ok(_))) {
                self.upstream_ended(index);
            }
            match called {
                // Skipped (failed open): the bytes go on as they are.
                None => {}
                Some(Err(error)) => {
                    self.failed(index, &error);
                }
                Some(Ok(result)) => {
                    self.drain_events(index);
                    match result {
                        Some(passed) => {
                            self.state().flow(side).paused[index] = false;
                            bytes = passed;
                        }
                        None => {
                            let mut state = self.state();
                            let flow = state.flow(side);
                            flow.paused[index] = true;
                            flow.held_end[index] = end;
                            drop(state);
                            return if self.is_closed() {
                                Outcome::Close
                            } else {
                                Outcome::Held
                            };
                        }
                    }
                }
            }
        }
        if self.is_closed() {
            return Outcome::Close;
        }
        if bytes.is_empty() && !end {
            return Outcome::Held;
        }
        Outcome::Forward { bytes, end }
    }

    /// Filter `index` continued `side`: what it holds goes on to the filters after it.
    fn run_resumed(&self, side: Side, index: usize) -> Outcome {
        let end = {
            let mut state = self.state();
            let flow = state.flow(side);
            if !flow.paused.get(index).copied().unwrap_or(false) {
                // Continue without a pause (or after a failure): nothing is held.
                return Outcome::Held;
            }
            flow.paused[index] = false;
            std::mem::take(&mut flow.held_end[index])
        };
        let held = match self.with_filter(index, |handle| handle.take_data(side)) {
            Some(Ok(held)) => held,
            Some(Err(error)) => {
                self.failed(index, &error);
                if self.is_closed() {
                    return Outcome::Close;
                }
                Vec::new()
            }
            // Skipped after a failure (fail_open): its bytes are gone, its end of stream not.
            None => Vec::new(),
        };
        let position = self
            .order(side)
            .iter()
            .position(|i| *i == index)
            .unwrap_or(0);
        self.run(side, position + 1, held, end)
    }

    /// Moves `side`'s bytes from `from` through the filters to `to` until its end has been
    /// forwarded (or the connection closes). Returns the bytes written.
    async fn pump<R, W>(
        &self,
        side: Side,
        mut from: R,
        mut to: W,
        downstream_bytes: &Tally,
    ) -> io::Result<u64>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buffer = vec![0u8; READ_SIZE];
        let mut reading = true;
        let mut written = 0u64;
        loop {
            let resumed = {
                let mut state = self.state();
                if state.closed {
                    return Ok(written);
                }
                state.flow(side).resumed.pop_front()
            };
            let outcome = match resumed {
                Some(index) => self.run_resumed(side, index),
                None => {
                    let read = tokio::select! {
                        () = self.woken[side_index(side)].notified() => continue,
                        read = from.read(&mut buffer), if reading => read,
                    };
                    if side == Side::Downstream
                        && let Ok(n) = read
                    {
                        // As Envoy's connection counts `%BYTES_RECEIVED%`: at each read the
                        // whole of its read buffer, the bytes filters still hold included.
                        downstream_bytes.add_a_to_b(n as u64 + self.held(side) as u64);
                    }
                    match read {
                        Ok(0) => {
                            reading = false;
                            self.state().peer_ended[side_index(side)] = true;
                            self.run(side, 0, Vec::new(), true)
                        }
                        Ok(n) => self.run(side, 0, buffer[..n].to_vec(), false),
                        Err(error) => {
                            self.state().peer_ended[side_index(side)] = true;
                            return Err(error);
                        }
                    }
                }
            };
            match outcome {
                Outcome::Held => {}
                Outcome::Close => {
                    self.close();
                    return Ok(written);
                }
                Outcome::Forward { bytes, end } => {
                    if !bytes.is_empty() {
                        to.write_all(&bytes).await?;
                        written += bytes.len() as u64;
                        if side == Side::Upstream {
                            downstream_bytes.add_b_to_a(bytes.len() as u64);
                        }
                    }
                    if end {
                        // A FIN stays a FIN: the far side may still send.
                        to.shutdown().await?;
                        return Ok(written);
                    }
                }
            }
        }
    }

    /// Carries the connection between `downstream` and `upstream` through the filters until
    /// both directions ended or a filter closed it. On an I/O error both ends are reset, as
    /// [`super::splice`] does; otherwise dropping them closes both (a FIN).
    ///
    /// `downstream_bytes` counts the downstream bytes as Envoy's connection counts them for
    /// `%BYTES_RECEIVED%` and `%BYTES_SENT%`: `a_to_b`, at each read from the client (its end
    /// included), the bytes read and those the filters still hold from before (Envoy adds its
    /// whole read buffer at each read, so held bytes count again); `b_to_a` every byte
    /// written to it (as the filters left them).
    pub async fn carry(
        &self,
        downstream: TunnelIo,
        upstream: TunnelIo,
        downstream_bytes: &Tally,
    ) -> io::Result<()> {
        let stats = AccelStats::global();
        stats.splices_userspace.inc();
        let (down_read, down_write) = tokio::io::split(downstream);
        let (up_read, up_write) = tokio::io::split(upstream);
        let mut halves = (down_read, down_write, up_read, up_write);
        let result = {
            let (down_read, down_write, up_read, up_write) = &mut halves;
            let both = async {
                tokio::try_join!(
                    self.pump(Side::Downstream, down_read, up_write, downstream_bytes),
                    self.pump(Side::Upstream, up_read, down_write, downstream_bytes),
                )
            };
            tokio::select! {
                result = both => result.map(|(up, down)| up + down),
                () = self.follow_events() => Ok(0),
                () = self.closing.notified() => Ok(0),
            }
        };
        let (down_read, down_write, up_read, up_write) = halves;
        let downstream = down_read.unsplit(down_write);
        let upstream = up_read.unsplit(up_write);
        match result {
            Ok(bytes) => {
                stats.userspace_bytes.inc_by(bytes);
                Ok(())
            }
            Err(error) => {
                tracing::debug!(%error, "filtered tcp_proxy connection failed; resetting both ends");
                downstream.reset();
                upstream.reset();
                Err(error)
            }
        }
    }

    /// Ends every context: `proxy_on_downstream_connection_close` (`Remote` where the client
    /// ended its side, `Local` where weir closed it), then `proxy_on_log`, `proxy_on_done`,
    /// `proxy_on_delete`. Runs once, when the connection is dropped (whatever ended it: both
    /// sides, a filter, the idle timeout).
    fn finish(&self) {
        let peer = if self.state().peer_ended[side_index(Side::Downstream)] {
            PeerType::Remote
        } else {
            PeerType::Local
        };
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        for handle in filters.iter_mut().flatten() {
            if let Err(error) = handle.connection_closed(Side::Downstream, peer) {
                tracing::debug!(plugin = handle.plugin().name(), %error, "network filter failed in its close callback");
            }
        }
        // Dropping the handles ends the contexts (log, done, delete).
        filters.clear();
    }
}

impl Drop for FilteredConnection {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ClusterManager;
    use crate::wasm::{NodeInfo, Plugin, PluginSpec};
    use std::time::Duration;
    use tokio::io::DuplexStream;

    #[test]
    fn no_plugins_is_empty() {
        assert!(
            NetworkFilters {
                slots: Vec::new(),
                unloaded: None
            }
            .is_empty()
        );
    }

    /// A network filter in WAT: `downstream` and `upstream` are the bodies of its data
    /// callbacks (params `$size`, `$end`; `$set` is `proxy_set_buffer_bytes`); bytes 100..
    /// hold `markers`.
    fn plugin(name: &str, markers: &str, downstream: &str, upstream: &str) -> Arc<PluginHandle> {
        plugin_of(
            name,
            &format!(
                r#"(import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 1)
                (data (i32.const 100) "{markers}")
                (func (export "proxy_on_downstream_data") (param $ctx i32) (param $size i32) (param $end i32) (result i32) {downstream})
                (func (export "proxy_on_upstream_data") (param $ctx i32) (param $size i32) (param $end i32) (result i32) {upstream})"#
            ),
        )
    }

    /// A proxy-wasm module (ABI 0.2.1) with `body` (imports first, a memory) added.
    fn plugin_of(name: &str, body: &str) -> Arc<PluginHandle> {
        let text = format!(
            r#"(module
              {body}
              (func (export "proxy_abi_version_0_2_1"))
              (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
              (func (export "proxy_on_context_create") (param i32 i32))
            )"#
        );
        let code = wat::parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let plugin = Plugin::load(PluginSpec {
            name: name.into(),
            root_id: name.into(),
            vm_id: name.into(),
            code,
            vm_configuration: Vec::new(),
            plugin_configuration: Vec::new(),
            fail_open: false,
            node: NodeInfo::default(),
            source: None,
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        PluginHandle::new(plugin, None, [0; 32])
    }

    /// Appends the marker at `at` to the `buffer` (2 downstream, 3 upstream) when bytes came.
    fn append(buffer: u32, at: u32) -> String {
        format!(
            "(if (i32.gt_u (local.get $size) (i32.const 0)) (then (drop (call $set (i32.const {buffer}) (i32.const 1000000) (i32.const 0) (i32.const {at}) (i32.const 1))))) (i32.const 0)"
        )
    }

    async fn read_exactly(stream: &mut DuplexStream, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut out))
            .await
            .expect("bytes in time")
            .expect("read");
        out
    }

    /// Two filters: `hold` pauses downstream bytes until 5 have come (then passes them all),
    /// `mark` prepends `b` to downstream bytes; each appends its letter to upstream bytes.
    /// Downstream goes hold -> mark, upstream mark -> hold (reverse), so the upstream reads
    /// `babcde` from `ab` + `cde`, and the client reads `replyBA` from `reply`.
    #[tokio::test]
    async fn bytes_go_through_the_filters_in_order_and_a_pause_accumulates() {
        let hold = plugin(
            "hold",
            "A",
            "(if (result i32) (i32.and (i32.lt_u (local.get $size) (i32.const 5)) (i32.eqz (local.get $end))) (then (i32.const 1)) (else (i32.const 0)))",
            &append(3, 100),
        );
        let mark = plugin(
            "mark",
            "bB",
            "(if (i32.gt_u (local.get $size) (i32.const 0)) (then (drop (call $set (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1))))) (i32.const 0)",
            &append(3, 101),
        );
        let manager = ClusterManager::new(Vec::<crate::config::cluster_spec::ClusterSpec>::new())
            .expect("no clusters");
        let pools = WorkerPools::new(manager);
        let filters = NetworkFilters::new(&[hold, mark], &pools);
        let local: SocketAddr = "127.0.0.1:1000".parse().expect("addr");
        let connection = filters
            .start("127.0.0.1:2000".parse().expect("addr"), local)
            .await
            .expect("no filter closes it");
        connection.connected(Some("127.0.0.1:3000".parse().expect("addr")));
        let (mut client, downstream) = tokio::io::duplex(1 << 16);
        let (mut server, upstream) = tokio::io::duplex(1 << 16);
        let tally = Tally::default();
        let carried = connection.carry(
            crate::wire::tunnel::boxed(downstream),
            crate::wire::tunnel::boxed(upstream),
            &tally,
        );
        let peers = async {
            client.write_all(b"ab").await.expect("write");
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(b"cde").await.expect("write");
            assert_eq!(read_exactly(&mut server, 6).await, b"babcde");
            server.write_all(b"reply").await.expect("write");
            assert_eq!(read_exactly(&mut client, 7).await, b"replyBA");
            client.shutdown().await.expect("FIN");
            server.shutdown().await.expect("FIN");
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.expect("EOF");
            assert!(rest.is_empty(), "{rest:?}");
        };
        let (result, ()) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(carried, peers)
        })
        .await
        .expect("done in time");
        result.expect("carried to the end");
        // The client's bytes as Envoy counts them, not as the filters made them: "ab", then
        // "cde" with the "ab" the first filter still held (7); "replyBA" written (7).
        let counted = tally.get();
        assert_eq!((counted.a_to_b, counted.b_to_a), (7, 7));
    }

    /// A pause in `proxy_on_new_connection` holds the connection until the module acts
    /// (from its tick, after `proxy_set_effective_context`): `proxy_continue_stream` lets it
    /// start, `proxy_close_stream` ends it.
    #[tokio::test]
    async fn a_pause_on_new_connection_waits_for_the_module() {
        let manager = ClusterManager::new(Vec::<crate::config::cluster_spec::ClusterSpec>::new())
            .expect("no clusters");
        let pools = WorkerPools::new(manager);
        for (action, opens) in [("$continue", true), ("$close", false)] {
            let gate = plugin_of(
                "gate",
                &format!(
                    r#"(import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
                    (import "env" "proxy_set_effective_context" (func $context (param i32) (result i32)))
                    (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
                    (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
                    (memory (export "memory") 1)
                    (global $held (mut i32) (i32.const 0))
                    (func (export "proxy_on_new_connection") (param $ctx i32) (result i32)
                      (global.set $held (local.get $ctx))
                      (drop (call $tick (i32.const 20)))
                      (i32.const 1))
                    (func (export "proxy_on_tick") (param i32)
                      (if (global.get $held) (then
                        (drop (call $context (global.get $held)))
                        (drop (call {action} (i32.const 2)))
                        (global.set $held (i32.const 0))
                        (drop (call $tick (i32.const 0))))))"#
                ),
            );
            let filters = NetworkFilters::new(&[gate], &pools);
            let address: SocketAddr = "127.0.0.1:1000".parse().expect("addr");
            let start = filters.start(address, address);
            tokio::pin!(start);
            tokio::select! {
                biased;
                _ = &mut start => panic!("{action}: the connection must wait for the tick"),
                () = tokio::task::yield_now() => {}
            }
            let started = tokio::time::timeout(Duration::from_secs(10), start)
                .await
                .expect("the tick came");
            assert_eq!(started.is_some(), opens, "{action}");
        }
    }
}
