//! An opt-in bound on what a kernel-spliced tunnel holds in the kernel (trap A).
//!
//! Once the eBPF program has redirected a skb, TCP has acked it to its sender and it waits in
//! the peer socket's psock queue until the kernel's worker can put it into the peer's send
//! queue, which it can only do as fast as the far receiver reads. That queue has no limit and
//! is not charged to either socket, so the sender's window never closes: measured
//! (2026-12-03, Linux 6.18, 2 cores), a client that stopped reading let its upstream push
//! 1 GiB into weir's kernel in 2.5 s.
//!
//! With a limit set (`--accel-backlog-limit`), [`Backpressure`] looks at each way of a
//! spliced pair from user space, never reading the sockets: the program's byte counter for
//! the source against the peer's `tcpi_bytes_acked + SIOCOUTQ` tells how much waits in the
//! psock queue. Past the limit, the source socket's receive window is clamped to the
//! kernel's floor (`TCP_WINDOW_CLAMP`, about a kilobyte, under any sender's MSS), so the
//! sender stops; at half the limit the clamp is lifted. Measured with an 8 MiB limit and a
//! client that stopped reading: the upstream wrote 44 to 59 MiB (the limit, the peer's
//! 32 MiB send buffer, the client's receive buffer) and no more, for 1 s as for 20 s.
//!
//! The price is the reopening. A receive window reopens when the receiver sends an ACK, and
//! the program's socket only sends one when bytes arrive: nothing a user-space call can
//! trigger (TCP_QUICKACK needs an ACK already pending; a keepalive or `TCP_REPAIR`'s window
//! probe carries an old sequence number, which the sender drops). So the sender resumes at
//! its next zero-window probe: measured 50 to 220 ms after the reader resumed, after a
//! stall of 1 s as of 20 s. A transfer whose reader is merely slower than its sender pays
//! that on every pause: 4 GiB through tcp_proxy on 2 cores ran at 16.6 Gbit/s without a
//! limit, 12.9 with 64 MiB (6.7 once) and 2 with 8 MiB. Hence off by default, for operators
//! who need the memory bound more than bulk throughput.
//!
//! When to look: a look costs map lookups and three socket calls, and looking every
//! millisecond cost a 2-core bulk transfer 15 to 30%, while a timer that backs off when a
//! tunnel is quiet misses the burst that follows (a 256 MiB burst on loopback went through
//! whole in under 70 ms). So the program does the counting: each look leaves, per socket, the
//! count at which the queue could first pass the limit, and the program reports the cookie
//! in a ring buffer when its count gets there (`wake_at` and `wakes` in ebpf/splice.bpf.c).
//! An idle or slow tunnel costs nothing; only a paused one is looked at every millisecond.

use crate::socket as sock;
use crate::stats::AccelStats;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// The limit in bytes per way, 0 for none (the default).
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// How often a paused way is looked at (its sender resumes on its next zero-window probe,
/// which a late reopening would miss).
pub const PAUSED_INTERVAL: Duration = Duration::from_millis(1);

/// Sets the limit for tunnels spliced from now on: the bytes one way of a tunnel may hold in
/// the kernel's queue before its sender is paused. `None` turns the bound off.
pub fn set_limit(bytes: Option<u64>) {
    LIMIT.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// The limit set by [`set_limit`], if any.
pub fn limit() -> Option<u64> {
    Some(LIMIT.load(Ordering::Relaxed)).filter(|&bytes| bytes > 0)
}

/// One way of a spliced pair as [`Backpressure::look`] sees it.
pub struct Way<'a> {
    /// The socket whose bytes the program redirects (its window is the one clamped).
    pub from: &'a TcpStream,
    /// Bytes the program has redirected away from `from` since the link.
    pub redirected: u64,
    /// The peer socket the bytes are sent from.
    pub to: &'a TcpStream,
    /// `to`'s `bytes_queued` just before the link.
    pub to_base: u64,
}

/// The pause state of both ways of one tunnel.
pub struct Backpressure {
    limit: u64,
    ways: [WayState; 2],
    /// Notified by the program's wake-ups (see `Pair::notify_wakes`).
    waiter: Arc<Notify>,
}

struct WayState {
    /// The window clamp the socket had before any pause, restored on reopening.
    open_clamp: u32,
    paused: bool,
}

impl Backpressure {
    /// Watches the ways `a -> b` and `b -> a` of a pair just linked, with `limit` bytes each.
    pub fn new(limit: u64, a: &TcpStream, b: &TcpStream) -> io::Result<Self> {
        let way = |socket: &TcpStream| -> io::Result<WayState> {
            Ok(WayState {
                open_clamp: sock::window_clamp(socket)?,
                paused: false,
            })
        };
        Ok(Backpressure {
            limit,
            ways: [way(a)?, way(b)?],
            waiter: Arc::new(Notify::new()),
        })
    }

    /// What the program's wake-ups notify.
    pub fn waiter(&self) -> &Arc<Notify> {
        &self.waiter
    }

    /// Whether a way is paused now (the caller then looks every [`PAUSED_INTERVAL`]).
    pub fn paused(&self) -> bool {
        self.ways.iter().any(|way| way.paused)
    }

    /// Pauses or resumes each way by its queue. Returns, per way, the program's count at
    /// which to look again: where the queue could first pass the limit if nothing drained
    /// meanwhile (at least an eighth of the limit ahead, so a queue near the limit does not
    /// wake the watcher every few skbs; it can overshoot by that much).
    pub fn look(&mut self, ways: [Way<'_>; 2]) -> io::Result<[u64; 2]> {
        let mut wake_at = [0u64; 2];
        for ((state, way), at) in self.ways.iter_mut().zip(ways).zip(&mut wake_at) {
            let drained = sock::bytes_queued(way.to)?.saturating_sub(way.to_base);
            let queued = way.redirected.saturating_sub(drained);
            if !state.paused && queued > self.limit {
                // The floor is about 1 KiB: under the sender's MSS, so it stops sending.
                sock::set_window_clamp(way.from, 1)?;
                state.paused = true;
                AccelStats::global().backpressure_pauses.inc();
                tracing::debug!(queued, limit = self.limit, "kernel splice: sender paused");
            } else if state.paused && queued <= self.limit / 2 {
                sock::set_window_clamp(way.from, state.open_clamp)?;
                // Sends the new window at once where an ACK is pending (it rarely is; see
                // the module doc for why the sender's probe is what usually reopens it).
                sock::quick_ack(way.from)?;
                state.paused = false;
                tracing::debug!(queued, "kernel splice: sender resumed");
            }
            let headroom = self.limit.saturating_sub(queued).max(self.limit / 8);
            *at = way.redirected.saturating_add(headroom);
        }
        Ok(wake_at)
    }
}
