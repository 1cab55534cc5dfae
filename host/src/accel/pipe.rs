//! The user-space path for two plain TCP sockets: `splice(2)` through a pipe, per direction.
//!
//! `splice` moves the received pages from one socket's receive queue into a pipe and from the
//! pipe into the other socket's send queue without copying them into weir's memory (haproxy's
//! technique), so where the eBPF splice is off or refused, a plain TCP tunnel still costs a
//! fraction of a read/write copy. Readiness comes from tokio (`readable`/`writable` + `try_io`),
//! so a direction waits without a thread.
//!
//! Semantics are the copy's: a FIN is carried once the pipe is empty (`shutdown(SHUT_WR)` on
//! the other socket, the opposite direction goes on), an error on either side ends both
//! directions (the caller then resets both sockets), and `weir_accel_userspace_bytes_total`
//! counts each byte as it leaves the pipe.

use super::{Spliced, Tally};
use crate::socket as sock;
use crate::stats::AccelStats;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for (`F_SETPIPE_SZ`): 4x the default 64 KiB, so that one `splice`
/// moves what a loopback or LAN socket typically holds. Not more: an unprivileged process's
/// pipes share `/proc/sys/fs/pipe-user-pages-soft` (64 MiB), past which every new pipe gets
/// 2 pages; at 256 KiB that is 128 busy tunnels before pipes shrink (they still work).
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// One direction's pipe: `read` end, `write` end, and how many bytes it holds.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// What `F_SETPIPE_SZ` granted (the pipe's own size where it refused).
    capacity: usize,
    held: usize,
}

impl Pipe {
    /// A non-blocking pipe, sized to [`PIPE_SIZE`] where the kernel allows it.
    fn new() -> io::Result<Self> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a writable array of two c_int, as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int argument and returns the new size or -1;
        // F_GETPIPE_SZ takes none and returns the size or -1.
        let size = unsafe {
            match libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) {
                -1 => libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ),
                granted => granted,
            }
        };
        // A pipe too small for our byte count is also handled: a full pipe reads as
        // [`Fill::PipeFull`].
        let capacity = usize::try_from(size).unwrap_or(0).max(4096);
        Ok(Pipe {
            read,
            write,
            capacity,
            held: 0,
        })
    }
}

/// `splice(from, to, len)`, non-blocking; the bytes moved (0: EOF on a socket `from`).
fn splice(from: libc::c_int, to: libc::c_int, len: usize) -> io::Result<usize> {
    // SAFETY: both fds are open for the duration of the call; null offsets mean "the file
    // position", which pipes and sockets require.
    let moved = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(moved).map_err(|_| io::Error::last_os_error())
}

/// The two pipes of one tunnel (a to b, b to a), made before the splice starts so that a
/// failure (out of fds) can fall back to the copy.
pub struct Pipes(Pipe, Pipe);

impl Pipes {
    /// Two pipes, or why not.
    pub fn new() -> io::Result<Self> {
        Ok(Pipes(Pipe::new()?, Pipe::new()?))
    }
}

/// Splices `a` and `b` in user space until both directions are done; the bytes each way.
///
/// Errors end both directions; the caller resets both sockets then.
pub async fn splice_tcp(
    a: &TcpStream,
    b: &TcpStream,
    pipes: Pipes,
    tally: &Tally,
) -> io::Result<Spliced> {
    let Pipes(pipe_ab, pipe_ba) = pipes;
    AccelStats::global().splices_userspace.inc();
    let (a_to_b, b_to_a) = tokio::try_join!(
        one_way(a, b, pipe_ab, tally.way(true)),
        one_way(b, a, pipe_ba, tally.way(false))
    )?;
    Ok(Spliced { a_to_b, b_to_a })
}

/// What one attempt to fill the pipe from a socket did.
enum Fill {
    /// Bytes moved into the pipe; 0 is the socket's EOF.
    Moved(usize),
    /// The pipe has no free slot left (a slot holds one page fragment, so a pipe can be full
    /// well below its byte capacity) while the socket still has bytes: not a lack of
    /// readiness, which must not be cleared or the socket's next edge might never come.
    PipeFull,
}

/// `splice(from -> pipe)`, telling a full pipe from an empty socket when it says EAGAIN.
fn fill(from: &TcpStream, pipe: &Pipe, room: usize) -> io::Result<Fill> {
    match splice(from.as_raw_fd(), pipe.write.as_raw_fd(), room) {
        Ok(n) => Ok(Fill::Moved(n)),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock && pipe.held > 0 => {
            if bytes_readable(from)? > 0 {
                Ok(Fill::PipeFull)
            } else {
                Err(error)
            }
        }
        Err(error) => Err(error),
    }
}

/// Bytes in the socket's receive queue (`FIONREAD`).
fn bytes_readable(socket: &TcpStream) -> io::Result<usize> {
    let mut readable: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to the pointer given.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut readable) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(readable).unwrap_or(0))
}

/// Moves `from`'s bytes to `to` until `from`'s FIN, which is then carried to `to`.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    mut pipe: Pipe,
    counted: &AtomicU64,
) -> io::Result<u64> {
    let stats = AccelStats::global();
    let mut total = 0u64;
    let mut eof = false;
    let mut pipe_full = false;
    loop {
        // Fill the pipe while there is room and something to read.
        if !eof && !pipe_full && pipe.held < pipe.capacity {
            let room = pipe.capacity - pipe.held;
            match from.try_io(Interest::READABLE, || fill(from, &pipe, room)) {
                Ok(Fill::Moved(0)) => eof = true,
                Ok(Fill::Moved(n)) => pipe.held += n,
                Ok(Fill::PipeFull) => pipe_full = true,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if pipe.held == 0 {
                        from.readable().await?;
                        continue;
                    }
                }
                Err(error) => return Err(error),
            }
        }
        // Empty it into `to` as far as `to` takes it.
        if pipe.held > 0 {
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), to.as_raw_fd(), pipe.held)
            }) {
                Ok(n) => {
                    pipe.held -= n;
                    pipe_full = false;
                    total += n as u64;
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                    stats.userspace_bytes.inc_by(n as u64);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    // `to` is full: wait for room, or (pipe not full) for more to read.
                    if eof || pipe_full || pipe.held >= pipe.capacity {
                        to.writable().await?;
                    } else {
                        tokio::select! {
                            ready = to.writable() => ready?,
                            ready = from.readable() => ready?,
                        }
                    }
                }
                Err(error) => return Err(error),
            }
        } else if eof {
            sock::shutdown_write(to)?;
            return Ok(total);
        }
    }
}
