//! The host's own address, as Envoy's "local address": the first IPv4 address of an
//! interface that is not the loopback (else the loopback). Envoy writes it in
//! `x-forwarded-for` for a client on the loopback, so an upstream never sees `127.0.0.1`
//! as the client of a proxy that has a real address.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

/// The host's address, looked up once (interfaces that come later are not seen, as Envoy's
/// is read at start-up).
pub fn host_address() -> IpAddr {
    static ADDRESS: OnceLock<IpAddr> = OnceLock::new();
    *ADDRESS.get_or_init(|| {
        interface_addresses()
            .into_iter()
            .find(|ip| ip.is_ipv4() && !ip.is_loopback())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    })
}

/// The IP addresses of the host's interfaces, in the kernel's order (none where
/// `getifaddrs` fails).
fn interface_addresses() -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `list` is a valid out-pointer; on success it points to a list that
    // `freeifaddrs` releases below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "getifaddrs failed");
        return Vec::new();
    }
    let mut addresses = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list `getifaddrs` returned, not yet freed.
        let node = unsafe { &*entry };
        if !node.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*node.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a `sockaddr_in`.
                let v4 = unsafe { &*(node.ifa_addr as *const libc::sockaddr_in) };
                addresses.push(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a `sockaddr_in6`.
                let v6 = unsafe { &*(node.ifa_addr as *const libc::sockaddr_in6) };
                addresses.push(IpAddr::from(v6.sin6_addr.s6_addr));
            }
        }
        entry = node.ifa_next;
    }
    // SAFETY: `list` came from a successful `getifaddrs` and is freed once.
    unsafe { libc::freeifaddrs(list) };
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_address_is_an_interfaces_or_the_loopback() {
        let listed = interface_addresses();
        assert!(listed.iter().any(IpAddr::is_loopback), "{listed:?}");
        let host = host_address();
        match listed.iter().find(|ip| ip.is_ipv4() && !ip.is_loopback()) {
            Some(first) => assert_eq!(host, *first),
            None => assert_eq!(host, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }
}
