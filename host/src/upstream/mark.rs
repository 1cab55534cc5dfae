//! `SO_MARK` on weir's own upstream sockets, so that firewall rules can tell them apart.
//!
//! In sidecar mode iptables/nftables redirect an application's connections to weir; weir's
//! own connections to the same ports must not be redirected again (they would loop back into
//! weir). With `--upstream-mark N` every upstream TCP connection weir opens (to clusters, for
//! health checks, for tunnels) carries mark N, and a rule like
//! `iptables -t nat -I OUTPUT -m mark --mark N -j RETURN` lets it through untouched. QUIC
//! upstream sockets (UDP) carry the mark too.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::net::{TcpSocket, TcpStream};

/// The mark; 0 (the kernel's "no mark") means none is set.
static UPSTREAM_MARK: AtomicU32 = AtomicU32::new(0);

/// Marks every upstream TCP socket opened from now on with `mark` (0: none). Checks first
/// that this process may set marks (it needs CAP_NET_ADMIN), so a missing privilege is a
/// start-up error rather than a failure on every connection.
pub fn set_upstream_mark(mark: u32) -> io::Result<()> {
    if mark != 0 {
        let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        probe.set_mark(mark)?;
    }
    UPSTREAM_MARK.store(mark, Ordering::Release);
    Ok(())
}

/// The mark upstream sockets get, if any.
pub fn upstream_mark() -> Option<u32> {
    match UPSTREAM_MARK.load(Ordering::Acquire) {
        0 => None,
        mark => Some(mark),
    }
}

/// Connects to `addr` over TCP, the socket marked with the upstream mark when one is set.
pub async fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(mark) = upstream_mark() {
        socket2::SockRef::from(&socket).set_mark(mark)?;
    }
    socket.connect(addr).await
}

/// Binds a UDP socket for upstream QUIC at `local`, marked with the upstream mark when one
/// is set (QUIC datagrams pass the same sidecar rules as TCP).
pub fn bind_udp(local: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(local)?;
    if let Some(mark) = upstream_mark() {
        socket2::SockRef::from(&socket).set_mark(mark)?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mark is on the socket weir connects with (we run as root, so it can be set; the
    /// mark is process-wide, so this test sets it and clears it again).
    #[tokio::test]
    async fn upstream_sockets_carry_the_mark() {
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind")
        };
        let Ok(address) = listener.local_addr() else {
            panic!("local_addr")
        };
        if let Err(error) = set_upstream_mark(0x5eed) {
            panic!("setting SO_MARK needs CAP_NET_ADMIN (tests run as root): {error}");
        }
        let stream = connect_tcp(address).await;
        let udp = bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)));
        let cleared = set_upstream_mark(0);
        let Ok(stream) = stream else {
            panic!("connect: {stream:?}")
        };
        assert!(cleared.is_ok());
        let mark = socket2::SockRef::from(&stream).mark();
        assert_eq!(mark.ok(), Some(0x5eed));
        let Ok(udp) = udp else {
            panic!("bind udp: {udp:?}")
        };
        assert_eq!(socket2::SockRef::from(&udp).mark().ok(), Some(0x5eed));

        let unmarked = connect_tcp(address).await;
        let Ok(unmarked) = unmarked else {
            panic!("connect: {unmarked:?}")
        };
        assert_eq!(socket2::SockRef::from(&unmarked).mark().ok(), Some(0));
    }
}
