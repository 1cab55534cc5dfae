//! [`SocketId`]: a TCP socket that can be reached (reset, read) by someone who does not own it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

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
        super::cookie(socket)
            .ok()
            .map(|cookie| SocketId { fd, cookie })
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
        (super::cookie(&dup).ok() == Some(self.cookie)).then_some(dup)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
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
}
