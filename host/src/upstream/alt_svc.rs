//! Which hosts of an `auto_config` + `http3_protocol_options` cluster speak HTTP/3: learnt
//! from their `alt-svc` response headers (kept for the advertised `ma`, default 24h, as RFC
//! 7838 says), or known up front from `alternate_protocols_cache_options.prepopulated_entries`
//! (QUIC hints, which do not expire). A host whose QUIC handshake failed is marked broken for
//! a while (5 minutes, doubling on each failure up to an hour, as Envoy does) so requests stop
//! waiting for QUIC.
//!
//! One cache per cluster, shared by the workers (a mutex taken once per request of such a
//! cluster, never held across an await).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// RFC 7838's default freshness when `ma` is absent.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// First time a host's HTTP/3 stays broken after a failed handshake.
const BROKEN_BASE: Duration = Duration::from_secs(300);
/// The longest it stays broken.
const BROKEN_MAX: Duration = Duration::from_secs(3600);

/// What is known about one host.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The UDP port of its HTTP/3 endpoint.
    port: u16,
    /// When the advertisement lapses; `None` for a configured hint.
    expires: Option<Instant>,
    /// HTTP/3 is not tried before this.
    broken_until: Option<Instant>,
    /// Failed handshakes in a row.
    failures: u32,
}

/// The alternate-protocols cache of one cluster.
#[derive(Debug, Default)]
pub struct AltSvcCache {
    entries: Mutex<HashMap<SocketAddr, Entry>>,
}

impl AltSvcCache {
    /// An empty cache.
    pub fn new() -> AltSvcCache {
        AltSvcCache::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a configured QUIC hint for `host` (HTTP/3 on the same port, never expiring).
    pub fn add_hint(&self, host: SocketAddr) {
        self.lock().entry(host).or_insert(Entry {
            port: host.port(),
            expires: None,
            broken_until: None,
            failures: 0,
        });
    }

    /// Where to try HTTP/3 for `host` now: the UDP address, when it is advertised (and fresh)
    /// or hinted, and not marked broken.
    pub fn h3_address(&self, host: SocketAddr) -> Option<SocketAddr> {
        let now = Instant::now();
        let mut entries = self.lock();
        let entry = entries.get(&host)?;
        if entry.expires.is_some_and(|expires| expires <= now) {
            entries.remove(&host);
            return None;
        }
        if entry.broken_until.is_some_and(|until| until > now) {
            return None;
        }
        Some(SocketAddr::new(host.ip(), entry.port))
    }

    /// Reads the `alt-svc` values of a response from `host` (received over TCP) and
    /// remembers an `h3` alternative on the same host; `clear` forgets it.
    pub fn record(&self, host: SocketAddr, values: &http::header::GetAll<'_, http::HeaderValue>) {
        for value in values {
            let Ok(text) = value.to_str() else { continue };
            if text.trim() == "clear" {
                let mut entries = self.lock();
                if entries.get(&host).is_some_and(|e| e.expires.is_some()) {
                    entries.remove(&host);
                }
                return;
            }
            if let Some((port, max_age)) = parse_h3(text) {
                let now = Instant::now();
                let mut entries = self.lock();
                let entry = entries.entry(host).or_insert(Entry {
                    port,
                    expires: Some(now + max_age),
                    broken_until: None,
                    failures: 0,
                });
                entry.port = port;
                if entry.expires.is_some() {
                    entry.expires = Some(now + max_age);
                }
                return;
            }
        }
    }

    /// A QUIC handshake to `host` failed: no HTTP/3 attempt for a while.
    pub fn mark_broken(&self, host: SocketAddr) {
        if let Some(entry) = self.lock().get_mut(&host) {
            entry.failures = entry.failures.saturating_add(1);
            let backoff = BROKEN_BASE
                .saturating_mul(1 << entry.failures.saturating_sub(1).min(4))
                .min(BROKEN_MAX);
            entry.broken_until = Some(Instant::now() + backoff);
        }
    }

    /// A QUIC handshake to `host` worked: it is not broken.
    pub fn mark_working(&self, host: SocketAddr) {
        if let Some(entry) = self.lock().get_mut(&host) {
            entry.failures = 0;
            entry.broken_until = None;
        }
    }
}

/// The first `h3` alternative on the same host in an `alt-svc` value: its port and max age.
/// Alternatives naming another host are ignored (weir connects to the endpoint it picked).
fn parse_h3(value: &str) -> Option<(u16, Duration)> {
    for alternative in value.split(',') {
        let mut parts = alternative.split(';').map(str::trim);
        let Some((protocol, authority)) = parts.next().and_then(|p| p.split_once('=')) else {
            continue;
        };
        if protocol.trim() != "h3" {
            continue;
        }
        let authority = authority.trim().trim_matches('"');
        let Some((host, port)) = authority.rsplit_once(':') else {
            continue;
        };
        if !host.is_empty() {
            continue;
        }
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        let mut max_age = DEFAULT_MAX_AGE;
        for parameter in parts {
            if let Some(seconds) = parameter.strip_prefix("ma=")
                && let Ok(seconds) = seconds.trim().parse::<u64>()
            {
                max_age = Duration::from_secs(seconds);
            }
        }
        return Some((port, max_age));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_same_host_h3_with_max_age() {
        assert_eq!(
            parse_h3("h3=\":8443\"; ma=60"),
            Some((8443, Duration::from_secs(60)))
        );
        assert_eq!(
            parse_h3("h2=\":443\", h3=\":443\""),
            Some((443, DEFAULT_MAX_AGE))
        );
        assert_eq!(parse_h3("h3=\"other.example:443\"; ma=60"), None);
        assert_eq!(parse_h3("h3-29=\":443\""), None);
        assert_eq!(parse_h3("garbage"), None);
    }

    #[test]
    fn advertisements_expire_and_broken_hosts_are_skipped() {
        let cache = AltSvcCache::new();
        let host: SocketAddr = "127.0.0.1:8443".parse().unwrap_or_else(|_| unreachable!());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "alt-svc",
            http::HeaderValue::from_static("h3=\":9443\"; ma=0"),
        );
        cache.record(host, &headers.get_all("alt-svc"));
        assert_eq!(cache.h3_address(host), None, "ma=0 has lapsed already");
        headers.insert(
            "alt-svc",
            http::HeaderValue::from_static("h3=\":9443\"; ma=60"),
        );
        cache.record(host, &headers.get_all("alt-svc"));
        assert_eq!(cache.h3_address(host).map(|a| a.port()), Some(9443));
        cache.mark_broken(host);
        assert_eq!(cache.h3_address(host), None);
        cache.mark_working(host);
        assert!(cache.h3_address(host).is_some());
        headers.insert("alt-svc", http::HeaderValue::from_static("clear"));
        cache.record(host, &headers.get_all("alt-svc"));
        assert_eq!(cache.h3_address(host), None);
    }
}
