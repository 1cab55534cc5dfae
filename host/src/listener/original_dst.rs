//! Transparent (sidecar) accept: where a connection redirected to weir was headed.
//!
//! In sidecar mode iptables/nftables send an application's traffic to weir's listener. With
//! `REDIRECT` (NAT) the kernel rewrites the destination and remembers the original one in
//! conntrack, where `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6) reads it back. With
//! `TPROXY` nothing is rewritten: the listener is bound with `IP_TRANSPARENT` and the accepted
//! socket's local address *is* the original destination.
//!
//! A connection made straight to weir's listener (no rule redirected it) has the listener
//! itself as its original destination; forwarding it there would loop back into weir, so it
//! gets no original destination (see [`NoOriginalDestination::AddressedToListener`]).

use socket2::{SockRef, Socket};
use std::io;
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpStream;

/// Why a connection on an original-destination listener has no usable original destination.
#[derive(Debug, thiserror::Error)]
pub enum NoOriginalDestination {
    /// The connection was made to the listener's own address: nothing redirected it, and
    /// forwarding it to its destination would loop back to weir.
    #[error(
        "connection to {0} was addressed to this listener itself, not redirected to it; \
         forwarding it would loop back to weir"
    )]
    AddressedToListener(SocketAddr),
    /// The kernel has no original destination for it (no NAT rule touched it, or conntrack
    /// is not loaded).
    #[error("cannot read SO_ORIGINAL_DST (was the connection redirected by a NAT rule?): {0}")]
    Unreadable(io::Error),
}

/// Where `stream`, accepted on the listener bound at `listener`, was headed before it was
/// redirected: its local address under TPROXY (`transparent`), else `SO_ORIGINAL_DST`.
pub fn original_destination(
    stream: &TcpStream,
    listener: SocketAddr,
    transparent: bool,
) -> Result<SocketAddr, NoOriginalDestination> {
    let local = stream
        .local_addr()
        .map_err(NoOriginalDestination::Unreadable)?;
    let destination = if transparent {
        local
    } else {
        read_original_dst(&SockRef::from(stream), local)?
    };
    let destination = unmap(destination);
    if (destination == unmap(local) && !transparent) || is_listener(destination, listener) {
        return Err(NoOriginalDestination::AddressedToListener(destination));
    }
    Ok(destination)
}

/// `SO_ORIGINAL_DST` for an IPv4 connection (also one on an IPv6 socket with an IPv4-mapped
/// address), `IP6T_SO_ORIGINAL_DST` for IPv6.
fn read_original_dst(
    socket: &SockRef<'_>,
    local: SocketAddr,
) -> Result<SocketAddr, NoOriginalDestination> {
    let ipv4 = match local.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().is_some(),
    };
    let address = if ipv4 {
        socket.original_dst_v4()
    } else {
        socket.original_dst_v6()
    }
    .map_err(NoOriginalDestination::Unreadable)?;
    address.as_socket().ok_or_else(|| {
        NoOriginalDestination::Unreadable(io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_ORIGINAL_DST returned a non-IP address",
        ))
    })
}

/// Whether `destination` is the listener's own address (any local IP when it is bound to the
/// unspecified address).
fn is_listener(destination: SocketAddr, listener: SocketAddr) -> bool {
    let listener = unmap(listener);
    destination.port() == listener.port()
        && (listener.ip().is_unspecified() || listener.ip() == destination.ip())
}

/// `::ffff:a.b.c.d` as `a.b.c.d`, so IPv4 connections on IPv6 sockets compare as IPv4.
fn unmap(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), address.port()),
            None => address,
        },
        IpAddr::V4(_) => address,
    }
}

/// Sets `IP_TRANSPARENT` (or `IPV6_TRANSPARENT`) on a listening socket before it binds, so
/// TPROXY can hand it connections addressed elsewhere. Needs CAP_NET_ADMIN.
pub fn set_transparent(socket: &Socket, address: SocketAddr) -> io::Result<()> {
    match address {
        SocketAddr::V4(_) => socket.set_ip_transparent_v4(true),
        SocketAddr::V6(_) => socket.set_ip_transparent_v6(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        match text.parse() {
            Ok(address) => address,
            Err(error) => panic!("{text}: {error}"),
        }
    }

    #[test]
    fn the_listener_itself_is_not_an_original_destination() {
        assert!(is_listener(addr("10.0.0.2:15001"), addr("0.0.0.0:15001")));
        assert!(is_listener(addr("10.0.0.2:15001"), addr("10.0.0.2:15001")));
        assert!(is_listener(
            addr("10.0.0.2:15001"),
            addr("[::ffff:0.0.0.0]:15001")
        ));
        assert!(!is_listener(addr("10.0.0.2:8080"), addr("0.0.0.0:15001")));
        assert!(!is_listener(addr("10.0.0.3:15001"), addr("10.0.0.2:15001")));
    }

    #[test]
    fn ipv4_mapped_addresses_compare_as_ipv4() {
        assert_eq!(unmap(addr("[::ffff:10.0.0.2]:80")), addr("10.0.0.2:80"));
        assert_eq!(unmap(addr("[::1]:80")), addr("[::1]:80"));
    }

    /// A loopback connection no NAT rule touched: SO_ORIGINAL_DST either fails (no conntrack
    /// entry) or names the listener itself; either way there is no original destination.
    #[tokio::test]
    async fn a_direct_connection_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let Ok(listener) = listener else {
            panic!("bind")
        };
        let Ok(bound) = listener.local_addr() else {
            panic!("local_addr")
        };
        let client = TcpStream::connect(bound);
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (Ok(_client), Ok((accepted, _))) = (client, accepted) else {
            panic!("connect")
        };
        let result = original_destination(&accepted, bound, false);
        assert!(
            matches!(
                result,
                Err(NoOriginalDestination::AddressedToListener(_))
                    | Err(NoOriginalDestination::Unreadable(_))
            ),
            "{result:?}"
        );
        // Under TPROXY the local address is the destination: still the listener itself.
        let transparent = original_destination(&accepted, bound, true);
        assert!(
            matches!(
                transparent,
                Err(NoOriginalDestination::AddressedToListener(d)) if d == bound
            ),
            "{transparent:?}"
        );
    }
}
