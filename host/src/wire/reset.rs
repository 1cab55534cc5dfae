//! Carrying a reset through a tunnel: what "reset this end" means for each thing a tunnel end
//! can be, and a way to reach a socket someone else (hyper) owns.
//!
//! RFC 9113 8.5: a TCP reset on one side of a CONNECT tunnel becomes an `RST_STREAM` with
//! `CONNECT_ERROR` on the HTTP/2 hop, and a stream error becomes a TCP reset. On an HTTP/1.1 hop
//! the HTTP connection itself is the tunnel (CONNECT) or carries it (POST), so it is reset.
//! Without this a reset arrives at the far end as an orderly FIN, and a peer cannot tell a
//! failed tunnel from a finished one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// `SO_COOKIE` (asm-generic/socket.h): a socket's 64-bit id, unique for the boot.
const SO_COOKIE: libc::c_int = 57;

/// A TCP socket identified by its descriptor *and* its cookie, so that it can be reset later
/// by whoever holds this, even though the socket itself is owned elsewhere (by hyper's
/// connection task). If the socket was closed meanwhile and its descriptor number reused, the
/// cookie no longer matches and nothing is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketId {
    fd: RawFd,
    cookie: u64,
}

impl SocketId {
    /// The id of `socket`, or `None` where the kernel does not give a cookie.
    pub fn of(socket: &impl AsRawFd) -> Option<SocketId> {
        let fd = socket.as_raw_fd();
        cookie(fd).ok().map(|cookie| SocketId { fd, cookie })
    }

    /// A private descriptor for this socket, if it is still open (the descriptor number now
    /// names the same socket: the cookie matches). The owner may close its own descriptor at
    /// any time; this one keeps the socket valid while it is used.
    pub fn dup(&self) -> Option<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC takes an fd and an int and returns a new fd or -1.
        let dup = unsafe { libc::fcntl(self.fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return None;
        }
        // SAFETY: `dup` is a descriptor we just created and own.
        let dup = unsafe { OwnedFd::from_raw_fd(dup) };
        (cookie(dup.as_raw_fd()).ok() == Some(self.cookie)).then_some(dup)
    }

    /// Makes the socket's last close send a RST (`SO_LINGER` 0) instead of a FIN, if it is
    /// still open. Returns whether it was.
    pub fn reset_on_close(&self) -> bool {
        let Some(dup) = self.dup() else {
            return false;
        };
        match socket2::SockRef::from(&dup).set_linger(Some(Duration::ZERO)) {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, "SO_LINGER");
                false
            }
        }
    }
}

fn cookie(fd: RawFd) -> io::Result<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` is a valid u64 buffer of `len` bytes for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
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

/// The error a tunnel body ends with when the tunnel was reset: an h2 `CONNECT_ERROR`, so that
/// both hyper (server side) and weir's HTTP/2 pool (client side) reset the stream with it.
pub fn reset_error() -> crate::body::BoxError {
    Box::new(h2::Error::from(h2::Reason::CONNECT_ERROR))
}

/// The `RST_STREAM` reason to use when a request or response body fails: the body's own h2
/// reason where it carries one (a tunnel reset: `CONNECT_ERROR`), else `CANCEL`.
pub fn stream_reset_reason(error: &(dyn std::error::Error + 'static)) -> h2::Reason {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(reason) = error
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::reason)
        {
            return reason;
        }
        cause = error.source();
    }
    h2::Reason::CANCEL
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn reset_on_close_makes_the_peer_see_a_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let id = SocketId::of(&server).expect("a TCP socket has a cookie");
        assert!(id.reset_on_close());
        drop(server);
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("the close reaches the client");
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );
    }

    #[tokio::test]
    async fn a_closed_socket_is_not_touched() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let id = SocketId::of(&client).unwrap();
        drop(client);
        // The number may be reused by the next socket; the cookie tells them apart.
        let other = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(!id.reset_on_close());
        let linger = socket2::SockRef::from(&other).linger().unwrap();
        assert_eq!(linger, None, "another socket was changed");
    }

    #[test]
    fn tunnel_reset_is_connect_error() {
        let error = reset_error();
        assert_eq!(stream_reset_reason(&*error), h2::Reason::CONNECT_ERROR);
        let other: crate::body::BoxError = "boom".into();
        assert_eq!(stream_reset_reason(&*other), h2::Reason::CANCEL);
    }
}
