//! Facts about a TCP socket and the few options weir sets on one, with `getsockopt`,
//! `setsockopt` and `ioctl`: its cookie and [`SocketId`] (to reset a socket someone else owns),
//! its byte counters (the kernel splice's backpressure, tcp_proxy's idle timeout) and its
//! buffers and window. Below every module that moves bytes (accel/, tunnel/, upstream/, http/).

mod host_address;
mod id;

pub use host_address::host_address;
pub use id::SocketId;

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// `SO_COOKIE` (asm-generic/socket.h): the socket's 64-bit id, unique for the boot (the key of
/// the eBPF maps).
const SO_COOKIE: libc::c_int = 57;
/// Offsets in `struct tcp_info` (linux/tcp.h): 8 bytes of `u8` fields, 24 `u32`, then the
/// `u64`s `tcpi_pacing_rate`, `tcpi_max_pacing_rate`, `tcpi_bytes_acked`, `tcpi_bytes_received`.
const BYTES_ACKED_OFFSET: usize = 120;
const BYTES_RECEIVED_OFFSET: usize = 128;

/// The socket's cookie (`SO_COOKIE`), stable for the socket's life.
pub fn cookie(socket: &impl AsRawFd) -> io::Result<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` is a valid u64 buffer of `len` bytes for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_COOKIE,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Every byte ever put into the socket's send queue: bytes acked by the peer plus those still
/// queued (`SIOCOUTQ`: unacked and unsent). Compared with a baseline, it tells how much of what
/// the eBPF program redirected to this socket has reached its send queue.
pub fn bytes_queued(socket: &impl AsRawFd) -> io::Result<u64> {
    let acked = tcp_counters(socket)?.acked;
    // SIOCOUTQ is TIOCOUTQ for sockets.
    Ok(acked + ioctl_count(socket, libc::TIOCOUTQ)?)
}

/// A TCP socket's byte counters since it opened (`struct tcp_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounters {
    /// Bytes the peer acknowledged (`tcpi_bytes_acked`).
    pub acked: u64,
    /// Bytes received (`tcpi_bytes_received`).
    pub received: u64,
}

/// The socket's [`TcpCounters`], read with `TCP_INFO`.
pub fn tcp_counters(socket: &impl AsRawFd) -> io::Result<TcpCounters> {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let field = |offset: usize| {
        info.get(offset..offset + 8)
            .filter(|_| len as usize >= offset + 8)
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map(u64::from_ne_bytes)
            .ok_or_else(|| io::Error::other("tcp_info too short"))
    };
    Ok(TcpCounters {
        acked: field(BYTES_ACKED_OFFSET)?,
        received: field(BYTES_RECEIVED_OFFSET)?,
    })
}

/// The socket's TCP state (`tcpi_state`: 1 ESTABLISHED ... 11 CLOSING, as `<netinet/tcp.h>`).
pub fn tcp_state(socket: &impl AsRawFd) -> io::Result<u8> {
    let mut info = [0u8; 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info[0])
}

/// Bytes waiting to be read on the socket (`SIOCINQ`, which is FIONREAD for sockets).
pub fn bytes_readable(socket: &impl AsRawFd) -> io::Result<u64> {
    ioctl_count(socket, libc::FIONREAD)
}

/// Bytes in the socket's send queue not yet acked by the peer (`SIOCOUTQ`).
#[cfg(test)]
pub fn bytes_unacked(socket: &impl AsRawFd) -> io::Result<u64> {
    ioctl_count(socket, libc::TIOCOUTQ)
}

/// An `ioctl` that writes one C int count (`SIOCINQ`, `SIOCOUTQ`).
fn ioctl_count(socket: &impl AsRawFd, request: libc::Ioctl) -> io::Result<u64> {
    let mut count: libc::c_int = 0;
    // SAFETY: these requests write one c_int to the pointer given.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), request, &mut count as *mut libc::c_int) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Caps the receive window this socket advertises at `bytes` (`TCP_WINDOW_CLAMP`; the
/// kernel's floor is about 1 KiB).
pub fn set_window_clamp(socket: &impl AsRawFd, bytes: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int(socket, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, value)
}

/// `setsockopt(level, option)` with a C int value.
fn set_int(
    socket: &impl AsRawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_SNDBUFFORCE` and `SO_RCVBUFFORCE` (asm-generic/socket.h): `SO_SNDBUF` and `SO_RCVBUF`
/// past `net.core.wmem_max` / `rmem_max`, for CAP_NET_ADMIN.
const SO_SNDBUFFORCE: libc::c_int = 32;
const SO_RCVBUFFORCE: libc::c_int = 33;

/// Sets a buffer limit to `bytes` (the kernel doubles it for its overhead) with `forced` where
/// the process may, else with `plain`, which the sysctl maximum caps.
fn set_buffer(
    socket: &impl AsRawFd,
    forced: libc::c_int,
    plain: libc::c_int,
    bytes: usize,
) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int(socket, libc::SOL_SOCKET, forced, value)
        .or_else(|_| set_int(socket, libc::SOL_SOCKET, plain, value))
}

/// Sets the socket's send buffer limit to `bytes`, past `net.core.wmem_max` where the
/// process may, else up to it.
pub fn set_send_buffer(socket: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    set_buffer(socket, SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes)
}

/// Sets the socket's receive buffer limit to `bytes` (which also stops the kernel autotuning
/// it), past `net.core.rmem_max` where the process may, else up to it; and lets the
/// advertised window grow to `bytes`, which autotuning would otherwise have raised.
pub fn set_receive_buffer(socket: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    set_buffer(socket, SO_RCVBUFFORCE, libc::SO_RCVBUF, bytes)?;
    set_window_clamp(socket, u32::try_from(bytes).unwrap_or(u32::MAX))
}

/// Makes the next close send a RST (`SO_LINGER` 0), so a reset is carried to this side.
pub fn set_reset_on_close(socket: &impl std::os::fd::AsFd) {
    if let Err(error) = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(%error, "SO_LINGER");
    }
}

/// Sends our FIN (`shutdown(SHUT_WR)`); the read half stays open.
pub fn shutdown_write(socket: &impl std::os::fd::AsFd) -> io::Result<()> {
    socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write)
}

/// The receive window cap the socket has now (`TCP_WINDOW_CLAMP`).
pub fn window_clamp(socket: &impl AsRawFd) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a valid c_int buffer of `len` bytes for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_WINDOW_CLAMP,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(value).unwrap_or(0))
}

/// Sends an ACK now if one is pending (`TCP_QUICKACK`), so a reopened window is advertised.
pub fn quick_ack(socket: &impl AsRawFd) -> io::Result<()> {
    set_int(socket, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1)
}
