//! One kernel-spliced tunnel, from linking its two sockets to closing them.
//!
//! Once linked, the eBPF program carries the payload; this task takes both sockets out of
//! tokio's reactor and sleeps on a [`HangupWatch`] (a FIN or an error on either socket; the
//! per-skb data wake-ups are filtered out), reading each socket for what the program leaves to
//! user space once right after the link and then on each of its wake-ups:
//! - EOF (the program drops a pure FIN's zero-length skb, which the kernel's psock backlog
//!   would take for a broken pipe; the socket reads EOF from TCP's state once its queue is
//!   empty): the FIN is not redirected,
//!   so it is forwarded here with `shutdown(SHUT_WR)` on the peer, but only once every byte
//!   the program redirected has reached the peer's send queue (trap B), or the stream would be
//!   truncated. "Reached" is the program's per-socket byte counter against the peer's
//!   `tcpi_bytes_acked + SIOCOUTQ` since the link;
//! - an error (a RST): the peer is reset too;
//! - bytes (received before the peer was in the map, or by a skb the program could not
//!   redirect): written to the peer here and counted as user-space bytes. They can only arrive
//!   in the instant around the link (read right after it; see [`Session::start`]), when the
//!   tunnel has not started talking yet in the usual protocols, or once a peer has closed
//!   (which wakes the watcher).
//!
//! Backpressure (trap A): the kernel acks what a socket receives and queues what it redirects
//! without bound while the peer's receiver does not read (1 GiB in 2.5 s measured behind a
//! client that stopped reading). The bound is opt-in (`--accel-backlog-limit`, see
//! [`super::backpressure`]): it shuts the sender's receive window, which costs a bulk
//! transfer each time, since only the sender's zero-window probe reopens it. The backlog is
//! also what keeps bulk throughput well under a direct connection's here: the endpoints'
//! copies into and out of pages that sat in a backlog of hundreds of MB cost about ten times
//! what they cost on the direct path, whose pages are reused while hot (perf, 2026-12-03, 2
//! cores: `_copy_from_iter` 40% of both CPUs at 8 Gbit/s against 12% at 27 Gbit/s direct).
//! Two other ways to cap it were tried and not kept. The program passing bytes up past a
//! limit (to the socket's own queue, which is charged to it, so the window closes) and user
//! space copying them: in 4 of about 25 loaded runs whole segments arrived twice in the
//! direction copied after the switch; the suspect is the psock's recvmsg running the verdict
//! over what is still on the TCP receive queue while the softirq does, not pinned down.
//! Taking a socket out of the map to pause it (the branch `backpressure-pause`):
//! `sk_psock_stop_verdict` clears the program before it restores `sk_data_ready`, and the
//! verdict path takes no lock against it, so an skb read in that window meets no program and
//! is dropped although TCP has acked it (net/core/skmsg.c).

use super::backpressure::{Backpressure, PAUSED_INTERVAL, Way};
use super::hangup::{HangupWatch, Hangups};
use super::kernel::{Kernel, MapError, Pair};
use super::{Spliced, Tally};
use crate::socket as sock;
use crate::stats::AccelStats;
use std::io::{self, Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The send buffer limit of both spliced sockets (the kernel doubles it). The kernel's
/// psock worker, which sends what the program redirected, backs off for a whole jiffy
/// (`schedule_delayed_work(.., 1)` in `sk_psock_backlog`: 4 ms at HZ=250) whenever the
/// socket's send buffer is full, and a write-space wake-up does not cut that wait short; a
/// buffer that holds a few milliseconds of loopback traffic keeps the pipe full across it.
/// Measured (2026-12-03, 2 cores, 1 GiB through tcp_proxy): 4.8 to 6.3 Gbit/s with the
/// autotuned default, 6.6 to 7.8 with 16 MiB.
const SEND_BUFFER: usize = 16 << 20;

/// The receive buffer limit of both spliced sockets (doubled by the kernel; autotuning stops,
/// the advertised window may grow to this). Why a fixed one: TCP learns that a window
/// reopened only from an ACK. A client that sends at once fills the few hundred KiB of
/// window a fresh socket advertises while weir connects upstream, and then waits (as does a
/// server that speaks first, on the upstream socket). Once
/// linked, the program takes those bytes off the queue, but the reopened window is
/// advertised only if the buffer leaves room for it (`__tcp_cleanup_rbuf`); from an
/// autotuned 128 KiB buffer it does not, so the client sat until its zero-window probe,
/// 200 ms or more (37 of 60 back-to-back 32 MiB uploads through tcp_proxy, 2026-12-04; none
/// with this; `kernel_splice_reopens_a_window_filled_before_the_link`). Set before
/// the link, so the ACKs of whatever arrives meanwhile advertise room too.
const RECEIVE_BUFFER: usize = 8 << 20;

/// How long a drain may make no progress before the tunnel is reset (the peer's receiver is
/// gone or stuck).
const DRAIN_STALL: Duration = Duration::from_secs(30);

/// A tunnel's backpressure with the tunnel's sockets `(a, b)`, for a wait that must keep
/// looking (see [`Session::step`]).
type KeepUp<'a> = (&'a mut Backpressure, (&'a StdTcpStream, &'a StdTcpStream));

/// A linked pair with the send-queue baselines taken just before the link.
pub struct Session {
    pair: Pair,
    base_a: u64,
    base_b: u64,
    /// The bound on each way's kernel queue, if one is set (see [`super::backpressure`]).
    backlog_limit: Option<u64>,
}

impl Session {
    /// Links `a` and `b` in the kernel's maps.
    ///
    /// What a socket already holds when it joins the sockhash goes through the program too,
    /// ahead of what arrives later (measured: 10,000 request/response tunnels whose request
    /// was queued before the link, no byte copied here), except on the socket that joins
    /// first (the program cannot redirect to a socket not yet in the map): `Kernel::link`
    /// puts in first the one that holds nothing yet. Bytes it receives in the microseconds
    /// before the other joins are passed up and copied by the watcher: the one window where
    /// order depends on timing.
    pub fn start(
        kernel: &'static Kernel,
        a: &TcpStream,
        b: &TcpStream,
        backlog_limit: Option<u64>,
    ) -> Result<Self, MapError> {
        let base_a = sock::bytes_queued(a)?;
        let base_b = sock::bytes_queued(b)?;
        sock::set_receive_buffer(a, RECEIVE_BUFFER)?;
        sock::set_receive_buffer(b, RECEIVE_BUFFER)?;
        let pair = kernel.link(a, b)?;
        // Besides its own purpose (see SEND_BUFFER), setsockopt takes each socket's lock,
        // which a softirq holds while it runs the program on an skb: once these return, every
        // skb either socket received during the link has been redirected or passed up, so the
        // first read in `watch` finds whatever was passed up.
        sock::set_send_buffer(a, SEND_BUFFER)?;
        sock::set_send_buffer(b, SEND_BUFFER)?;
        Ok(Session {
            pair,
            base_a,
            base_b,
            backlog_limit,
        })
    }

    /// Runs until both directions are done (each FIN carried), or one side fails, in which
    /// case both are reset. Both sockets are closed and the map entries removed on return,
    /// and also if this future is dropped.
    /// `tally` gets the bytes moved either way when it ends, whether or not it failed.
    pub async fn run(self, a: TcpStream, b: TcpStream, tally: &Tally) -> io::Result<Spliced> {
        AccelStats::global().splices_kernel.inc();
        // Out of tokio's reactor, which would wake on every redirected skb (see `hangup`).
        let (a, b) = (a.into_std()?, b.into_std()?);
        let mut user = (0u64, 0u64);
        let result = self.watch(&a, &b, &mut user).await;
        tally.add_a_to_b(self.pair.redirected_from(self.pair.a) + user.0);
        tally.add_b_to_a(self.pair.redirected_from(self.pair.b) + user.1);
        if result.is_err() {
            sock::set_reset_on_close(&a);
            sock::set_reset_on_close(&b);
        }
        // Map entries go first (Pair's drop), then the sockets leave the sockhash on close.
        drop(self);
        result
    }

    /// `user`: the bytes copied here `(a -> b, b -> a)`, kept also when it fails.
    async fn watch(
        &self,
        a: &StdTcpStream,
        b: &StdTcpStream,
        user: &mut (u64, u64),
    ) -> io::Result<Spliced> {
        let hangups = HangupWatch::new(a, b)?;
        let mut buf = vec![0u8; 16 * 1024];
        let (mut a_eof, mut b_eof) = (false, false);
        let (user_ab, user_ba) = (&mut user.0, &mut user.1);
        // Both sides are read once first: what the program passed up during the link (see
        // `start`) wakes nothing later.
        let mut due = Hangups { a: true, b: true };
        let mut backpressure = match self.backlog_limit {
            Some(limit) => {
                let mut backpressure = Backpressure::new(limit, a, b)?;
                self.pair
                    .notify_wakes(backpressure.waiter())
                    .map_err(io::Error::other)?;
                self.look(&mut backpressure, a, b)?;
                Some(backpressure)
            }
            None => None,
        };
        loop {
            if due.a && !a_eof {
                let way = (a, b, self.pair.a, self.base_b);
                let keep_up = backpressure.as_mut().map(|bp| (bp, (a, b)));
                a_eof = self.step(way, user_ab, &mut buf, keep_up).await?;
            }
            if due.b && !b_eof {
                let way = (b, a, self.pair.b, self.base_a);
                let keep_up = backpressure.as_mut().map(|bp| (bp, (a, b)));
                b_eof = self.step(way, user_ba, &mut buf, keep_up).await?;
            }
            if a_eof && b_eof {
                break;
            }
            let Some(backpressure) = &mut backpressure else {
                due = hangups.wait().await?;
                continue;
            };
            let hung_up = if backpressure.paused() {
                tokio::select! {
                    due = hangups.wait() => Some(due?),
                    () = tokio::time::sleep(PAUSED_INTERVAL) => None,
                }
            } else {
                tokio::select! {
                    due = hangups.wait() => Some(due?),
                    () = backpressure.waiter().notified() => None,
                }
            };
            due = match hung_up {
                Some(due) => due,
                None => {
                    self.look(backpressure, a, b)?;
                    Hangups::default()
                }
            };
        }
        Ok(Spliced {
            a_to_b: self.pair.redirected_from(self.pair.a) + *user_ab,
            b_to_a: self.pair.redirected_from(self.pair.b) + *user_ba,
        })
    }

    /// Has the backpressure pause or resume each way, then arms the program's wake-ups at
    /// the counts it returns.
    fn look(
        &self,
        backpressure: &mut Backpressure,
        a: &StdTcpStream,
        b: &StdTcpStream,
    ) -> io::Result<()> {
        let at = backpressure.look(self.ways(a, b))?;
        self.pair.wake_when(at).map_err(io::Error::other)
    }

    /// Both ways as the backpressure sees them: `a -> b`, then `b -> a`.
    fn ways<'a>(&self, a: &'a StdTcpStream, b: &'a StdTcpStream) -> [Way<'a>; 2] {
        [
            Way {
                from: a,
                redirected: self.pair.redirected_from(self.pair.a),
                to: b,
                to_base: self.base_b,
            },
            Way {
                from: b,
                redirected: self.pair.redirected_from(self.pair.b),
                to: a,
                to_base: self.base_a,
            },
        ]
    }

    /// Looks at one way, `(from, to, from's cookie, to's send-queue baseline)`: copies what
    /// the program left to user space on `from` (adding it to `user_written`) and, on EOF,
    /// forwards the FIN once everything before it has drained. Returns whether `from` is done.
    /// `keep_up`: the tunnel's backpressure and its sockets `(a, b)`, looked at while the
    /// drain waits, since the other way may be paused and its reader may have caught up (an
    /// echoing peer stops reading this way until it can write that one).
    async fn step(
        &self,
        (from, to, from_cookie, to_base): (&StdTcpStream, &StdTcpStream, u64, u64),
        user_written: &mut u64,
        buf: &mut [u8],
        keep_up: Option<KeepUp<'_>>,
    ) -> io::Result<bool> {
        let (copied, eof) = copy_passed(from, to, buf).await?;
        *user_written += copied;
        if eof {
            self.drain(from_cookie, to, to_base, *user_written, keep_up)
                .await?;
            sock::shutdown_write(to)?;
        }
        Ok(eof)
    }

    /// Waits until everything redirected away from `from_cookie` (plus `user_written` bytes
    /// copied here) is in `to`'s send queue (trap B).
    async fn drain(
        &self,
        from_cookie: u64,
        to: &StdTcpStream,
        to_base: u64,
        user_written: u64,
        mut keep_up: Option<KeepUp<'_>>,
    ) -> io::Result<()> {
        let mut last = u64::MAX;
        let mut since = Instant::now();
        for attempt in 0u32.. {
            let expected = self.pair.redirected_from(from_cookie) + user_written;
            let queued = sock::bytes_queued(to)?.saturating_sub(to_base);
            if queued >= expected {
                return Ok(());
            }
            if let Some(error) = to.take_error()? {
                return Err(error);
            }
            if let Some((backpressure, (a, b))) = keep_up.as_mut() {
                self.look(backpressure, a, b)?;
            }
            if queued != last {
                last = queued;
                since = Instant::now();
            } else if since.elapsed() > DRAIN_STALL {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("kernel splice: {queued} of {expected} bytes drained, no progress"),
                ));
            }
            if attempt < 8 {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(())
    }
}

/// Reads what the program left to user space on `from` (bytes passed up, then EOF or an
/// error) and writes it to `to`. Returns the bytes copied and whether `from` reached EOF.
async fn copy_passed(
    from: &StdTcpStream,
    to: &StdTcpStream,
    buf: &mut [u8],
) -> io::Result<(u64, bool)> {
    let mut copied = 0u64;
    loop {
        match (&*from).read(buf) {
            // A RST can read as EOF on a sockhash member; SO_ERROR tells them apart.
            Ok(0) => {
                return match from.take_error()? {
                    Some(error) => Err(error),
                    None => Ok((copied, true)),
                };
            }
            Ok(n) => {
                write_all(to, buf.get(..n).unwrap_or_default()).await?;
                AccelStats::global().userspace_bytes.inc_by(n as u64);
                tracing::debug!(bytes = n, "kernel splice: bytes left to user space, copied");
                copied += n as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok((copied, false)),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// Writes all of `data` to a non-blocking socket outside the reactor, waiting a millisecond
/// whenever its send buffer is full (only the few bytes passed up around the link come
/// here, into a send buffer that is empty then).
async fn write_all(to: &StdTcpStream, mut data: &[u8]) -> io::Result<()> {
    let mut since = Instant::now();
    while !data.is_empty() {
        match (&*to).write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = data.get(n..).unwrap_or_default();
                since = Instant::now();
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if since.elapsed() > DRAIN_STALL {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "kernel splice: peer's send buffer full, no progress",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
