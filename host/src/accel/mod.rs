//! Moving the payload of an established tunnel or upgrade between its two sides.
//!
//! Every byte of a CONNECT tunnel, an upgraded stream or a plain TCP proxy goes through
//! [`splice`] (any two byte streams, copied in user space) or [`splice_tcp`] (two plain TCP
//! sockets: by `splice(2)` through a pipe by default, or as `--accel` chose, see [`Mode`]).
//! `weir_accel_splices_total{mode}` counts each.
//!
//! - `mode`: `--accel`, and why the default is `splice(2)` rather than the eBPF splice;
//! - `kernel`: loading the program once per process and the per-tunnel map entries;
//! - `local`: the opt-in `sock_ops` + `sk_msg` acceleration of loopback hops between weir and
//!   an application in the same cgroup (`--local-accel-cgroup`);
//! - `session`: one kernel-spliced tunnel (FIN, RST, drain, cleanup);
//! - `backpressure`: the opt-in bound on what one tunnel holds in the kernel
//!   (`--accel-backlog-limit`);
//! - `hangup`: what `session` waits on: a FIN or an error on either socket, never data;
//! - `upgraded`: the CONNECT/upgrade case (hyper gives the socket back);
//! - `pipe`: the user-space path for two TCP sockets (`splice(2)`, no copy into weir);
//! - `userspace`: the copy, for every other pair of streams;
//! - `sock`: the socket options both need.

mod backpressure;
mod hangup;
mod kernel;
pub mod local;
mod mode;
mod pipe;
mod session;
mod upgraded;
mod userspace;

pub use backpressure::set_limit as set_backlog_limit;
pub use kernel::Unavailable;
pub use local::LocalUnavailable;
pub use mode::{MODE_ENV, Mode};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
pub use upgraded::splice_upgraded;

/// Bytes moved by one splice, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spliced {
    /// From `a` to `b`.
    pub a_to_b: u64,
    /// From `b` to `a`.
    pub b_to_a: u64,
}

/// Bytes moved so far by one splice, per direction, kept up to date while it runs: what a
/// caller reads after the splice ended with an error, or was dropped (an idle timeout), as well
/// as after it finished. The kernel splice (`--accel kernel`) fills it when it ends, not while
/// it runs.
#[derive(Debug, Default)]
pub struct Tally {
    a_to_b: AtomicU64,
    b_to_a: AtomicU64,
}

impl Tally {
    /// The bytes so far.
    pub fn get(&self) -> Spliced {
        Spliced {
            a_to_b: self.a_to_b.load(Ordering::Relaxed),
            b_to_a: self.b_to_a.load(Ordering::Relaxed),
        }
    }

    /// Counts `n` more bytes from `a` to `b`.
    pub fn add_a_to_b(&self, n: u64) {
        self.a_to_b.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` more bytes from `b` to `a`.
    pub fn add_b_to_a(&self, n: u64) {
        self.b_to_a.fetch_add(n, Ordering::Relaxed);
    }

    /// The counter of one direction: `a -> b` when `forward`.
    fn way(&self, forward: bool) -> &AtomicU64 {
        if forward { &self.a_to_b } else { &self.b_to_a }
    }
}

/// Chooses how plain TCP tunnels move their payload (`--accel`; `None`: [`MODE_ENV`], else
/// [`Mode::Splice`]) and, for [`Mode::Kernel`], loads the eBPF program now rather than on the
/// first tunnel, so its one log line (on, or why not) comes early. Returns why the kernel
/// splice is off where it was asked for and could not be loaded.
pub fn init(mode: Option<Mode>) -> Option<&'static Unavailable> {
    let chosen_by = mode::set(mode);
    let how = match mode::get() {
        Mode::Kernel => {
            tracing::debug!("accel: the eBPF splice asked for ({chosen_by})");
            return kernel::get().err();
        }
        Mode::Splice => "splice(2) through a pipe",
        Mode::Copy => "read/write copies",
    };
    tracing::info!(
        "accel: plain TCP tunnels are moved with {how} ({chosen_by}; `--accel kernel` for the eBPF splice)"
    );
    None
}

/// The mode tunnels use now (see [`init`]).
pub fn mode() -> Mode {
    mode::get()
}

/// Entries in the kernel splice's own maps (0 when nothing is spliced, or when not loaded);
/// for tests and leak checks.
pub fn kernel_map_entries() -> usize {
    kernel::loaded().map_or(0, |kernel| kernel.entries())
}

/// Copies bytes both ways between `a` and `b` in user space until both directions are done.
///
/// A FIN is carried: when one side stops sending, the other side's write half is shut down
/// and the opposite direction goes on (TCP half-close). An error on either side ends both
/// directions; dropping the two halves then closes (or resets) both connections.
pub async fn splice<A, B>(a: A, b: B) -> io::Result<Spliced>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    userspace::copy(a, b, &Tally::default()).await
}

/// [`splice`], counting the bytes into `tally` as they move.
pub async fn splice_counted<A, B>(a: A, b: B, tally: &Tally) -> io::Result<Spliced>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    userspace::copy(a, b, tally).await
}

/// Splices two plain TCP sockets until both directions are done, the way [`mode`] says.
///
/// FIN and half-close are carried both ways; an error or a RST on one side resets the other
/// (both sockets are reset on `Err`). Both sockets are closed on return. Bytes the caller
/// already read from either socket (past a CONNECT head, say) must be written to the other
/// before this call. Where the kernel splice was asked for and is not loaded, `splice(2)`
/// through a pipe moves the bytes; where it refuses the pair, or no pipe can be made (out of
/// fds), the plain copy.
pub async fn splice_tcp(a: TcpStream, b: TcpStream) -> io::Result<Spliced> {
    splice_tcp_as(mode::get(), a, b, backpressure::limit()).await
}

/// [`splice_tcp`], counting the bytes into `tally` as they move (see [`Tally`]).
pub async fn splice_tcp_counted(a: TcpStream, b: TcpStream, tally: &Tally) -> io::Result<Spliced> {
    splice_tcp_tallied(mode::get(), a, b, backpressure::limit(), tally).await
}

/// [`splice_tcp`] in `mode`, with the kernel queue of each way bounded by `backlog_limit`
/// bytes, if any (see [`set_backlog_limit`]).
async fn splice_tcp_as(
    mode: Mode,
    a: TcpStream,
    b: TcpStream,
    backlog_limit: Option<u64>,
) -> io::Result<Spliced> {
    splice_tcp_tallied(mode, a, b, backlog_limit, &Tally::default()).await
}

/// [`splice_tcp_as`], counting into `tally`.
async fn splice_tcp_tallied(
    mode: Mode,
    a: TcpStream,
    b: TcpStream,
    backlog_limit: Option<u64>,
    tally: &Tally,
) -> io::Result<Spliced> {
    let (mut a, mut b) = (a, b);
    let kernel = match mode {
        Mode::Kernel => kernel::get().ok(),
        Mode::Splice | Mode::Copy => None,
    };
    let result = match kernel {
        // Local acceleration: a loopback socket may receive bytes by sk_msg, which neither
        // the splice's sk_skb program nor splice(2) sees, and whose order against what a
        // splice carries cannot be guaranteed (seen: a local app's first megabyte arriving
        // out of order). recv(2) reads sk_msg's queue, then TCP's, in order: such pairs are
        // copied, and sk_msg still carries the hop to a local app.
        _ if local::get().is_some_and(|local| local.may_hold(&a) || local.may_hold(&b)) => {
            userspace::copy(&mut a, &mut b, tally).await
        }
        _ if mode == Mode::Copy => userspace::copy(&mut a, &mut b, tally).await,
        Some(kernel) => match session::Session::start(kernel, &a, &b, backlog_limit) {
            Ok(session) => return session.run(a, b, tally).await,
            // Typically a side that already sent its FIN: the sockhash takes only established
            // sockets. The other may be in the sockhash by then (it is never taken out while
            // open, trap D), and a sockhash member's bytes are only readable with recv(2), not
            // splice(2) (the program moves them off the TCP receive queue): so the copy, not
            // the pipe.
            Err(error) => {
                tracing::debug!(%error, "accel: cannot splice in the kernel; copying");
                userspace::copy(&mut a, &mut b, tally).await
            }
        },
        None => match pipe::Pipes::new() {
            Ok(pipes) => pipe::splice_tcp(&a, &b, pipes, tally).await,
            Err(error) => {
                tracing::debug!(%error, "accel: no pipe for splice(2); copying");
                userspace::copy(&mut a, &mut b, tally).await
            }
        },
    };
    if result.is_err() {
        crate::socket::set_reset_on_close(&a);
        crate::socket::set_reset_on_close(&b);
    }
    result
}

/// Reads what `from` holds now (as much as was queued when called, no more) and writes it to
/// `to`: for a socket user space has read from, before any splice takes it over.
///
/// The kernel splice carries a segment user space read part of (a codec that read a head and
/// some of the payload sent with it) whole, from its first byte, once its socket joins the
/// sockhash (seen: a CONNECT's head and first 2 KiB, read by weir, reaching the upstream a
/// second time; the kernel's `tcp_read_skb` takes the segment, not what is left of it).
/// Reading every byte queued now takes the rest of that segment; what arrives later comes in
/// whole ones. Returns the bytes moved.
pub(crate) async fn forward_queued(from: &mut TcpStream, to: &mut TcpStream) -> io::Result<u64> {
    use tokio::io::AsyncWriteExt;
    let mut left = crate::socket::bytes_readable(from)?;
    let mut moved = 0u64;
    if left == 0 {
        return Ok(moved);
    }
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match from.try_read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => {
                to.write_all(&buf[..n]).await?;
                moved += n as u64;
                left = left.saturating_sub(n as u64);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => return Err(error),
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests;
