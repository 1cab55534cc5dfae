//! Consistent hashing: RING_HASH (a sorted ring of host hashes, Karger et al.) and MAGLEV
//! (Google's Maglev lookup table), both weighted by `load_balancing_weight` and both keyed by
//! xxHash64, as Envoy's.
//!
//! A table is built over the hosts available now and cached in the cluster
//! ([`TableCache`]); a pick compares a fingerprint of the host set with the cached table's
//! (one pass over the hosts, no allocation) and rebuilds only when hosts came or went. The
//! ring's size is scaled from every host of the cluster, available or not, so a host that
//! leaves balancing (unhealthy, ejected) moves only its own keys.

use super::cluster::Host;
use arc_swap::ArcSwapOption;
use std::sync::Arc;
use xxhash_rust::xxh64::xxh64;

/// The cached table of a cluster.
pub type TableCache = ArcSwapOption<HashTable>;

/// A built table over some hosts.
#[derive(Debug)]
pub struct HashTable {
    fingerprint: u64,
    hosts: Vec<Arc<Host>>,
    lookup: Lookup,
}

#[derive(Debug)]
enum Lookup {
    /// (hash, host index), sorted by hash.
    Ring(Vec<(u64, u32)>),
    /// Host index per slot; the length is the (prime) table size.
    Maglev(Vec<u32>),
}

/// What the table is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A ring of at least `min` and at most `max` entries.
    Ring {
        /// `minimum_ring_size`.
        min: u64,
        /// `maximum_ring_size`.
        max: u64,
    },
    /// A Maglev table of `size` slots (a prime).
    Maglev {
        /// `table_size`.
        size: u64,
    },
}

/// A fingerprint of `candidates` (address, weight) and the size of the whole host set.
pub fn fingerprint(candidates: &[&Arc<Host>], all: usize) -> u64 {
    let mut fp = xxh64(&(all as u64).to_le_bytes(), 7);
    for host in candidates {
        let mut bytes = [0u8; 32];
        let addr = host.addr;
        match addr.ip() {
            std::net::IpAddr::V4(ip) => bytes[..4].copy_from_slice(&ip.octets()),
            std::net::IpAddr::V6(ip) => bytes[..16].copy_from_slice(&ip.octets()),
        }
        bytes[16..18].copy_from_slice(&addr.port().to_le_bytes());
        bytes[18..22].copy_from_slice(&host.weight().to_le_bytes());
        fp = xxh64(&bytes, fp);
    }
    fp
}

/// The host for `hash` among `candidates` (non-empty), from `cache` or a table built now.
/// `all` is the weight set the ring is scaled by (every host of the cluster).
pub fn pick(
    cache: &TableCache,
    kind: TableKind,
    candidates: &[&Arc<Host>],
    all: &[Arc<Host>],
    hash: u64,
) -> Option<Arc<Host>> {
    let fingerprint = fingerprint(candidates, all.len());
    let cached = cache.load();
    let table = match cached.as_ref() {
        Some(table) if table.fingerprint == fingerprint => table.clone(),
        _ => {
            let table = Arc::new(HashTable::build(kind, candidates, all, fingerprint));
            cache.store(Some(table.clone()));
            table
        }
    };
    table.get(hash)
}

impl HashTable {
    /// Builds a table of `kind` over `candidates`.
    pub fn build(
        kind: TableKind,
        candidates: &[&Arc<Host>],
        all: &[Arc<Host>],
        fingerprint: u64,
    ) -> HashTable {
        let hosts: Vec<Arc<Host>> = candidates.iter().map(|h| Arc::clone(h)).collect();
        let lookup = match kind {
            TableKind::Ring { min, max } => Lookup::Ring(ring(&hosts, all, min, max)),
            TableKind::Maglev { size } => Lookup::Maglev(maglev(&hosts, size)),
        };
        HashTable {
            fingerprint,
            hosts,
            lookup,
        }
    }

    /// The host `hash` maps to.
    pub fn get(&self, hash: u64) -> Option<Arc<Host>> {
        let index = match &self.lookup {
            Lookup::Ring(ring) => {
                let at = ring.partition_point(|(point, _)| *point < hash);
                ring.get(at).or_else(|| ring.first())?.1
            }
            Lookup::Maglev(table) => {
                let len = u64::try_from(table.len()).ok().filter(|len| *len > 0)?;
                *table.get(usize::try_from(hash % len).ok()?)?
            }
        };
        self.hosts.get(index as usize).cloned()
    }
}

/// The key a host is hashed by: its address, as Envoy's `ip:port`.
fn host_key(host: &Host) -> String {
    host.addr.to_string()
}

/// The ring: each host gets entries in proportion to its weight, scaled so that the lightest
/// host of `all` gets `min` / |all| x its share at least and the ring stays under `max`.
fn ring(hosts: &[Arc<Host>], all: &[Arc<Host>], min: u64, max: u64) -> Vec<(u64, u32)> {
    let total: f64 = all
        .iter()
        .map(|h| f64::from(h.weight()))
        .sum::<f64>()
        .max(1.0);
    let lightest = all
        .iter()
        .map(|h| f64::from(h.weight()) / total)
        .fold(1.0_f64, f64::min)
        .max(f64::MIN_POSITIVE);
    let scale = ((lightest * min as f64).ceil() / lightest).min(max as f64);
    let mut ring = Vec::new();
    for (index, host) in hosts.iter().enumerate() {
        let entries = (f64::from(host.weight()) / total * scale).round().max(1.0) as u64;
        let key = host_key(host);
        for entry in 0..entries {
            let point = xxh64(format!("{key}_{entry}").as_bytes(), 0);
            ring.push((point, index as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// The Maglev table: each host walks its own permutation of the slots (offset and skip from
/// two hashes of its key) and takes the next free one in turn; a host of weight w takes a
/// turn w / max-weight as often as the heaviest host.
fn maglev(hosts: &[Arc<Host>], size: u64) -> Vec<u32> {
    const EMPTY: u32 = u32::MAX;
    let Ok(len) = usize::try_from(size) else {
        return Vec::new();
    };
    if hosts.is_empty() || size < 2 {
        return Vec::new();
    }
    let mut table = vec![EMPTY; len];
    let max_weight = hosts
        .iter()
        .map(|h| u64::from(h.weight()))
        .max()
        .unwrap_or(1);
    struct Walk {
        offset: u64,
        skip: u64,
        next: u64,
        weight: u64,
        target: u64,
    }
    let mut walks: Vec<Walk> = hosts
        .iter()
        .map(|host| {
            let key = host_key(host);
            Walk {
                offset: xxh64(key.as_bytes(), 0) % size,
                skip: xxh64(key.as_bytes(), 1) % (size - 1) + 1,
                next: 0,
                weight: u64::from(host.weight()),
                target: 0,
            }
        })
        .collect();
    let mut filled = 0usize;
    let mut round: u64 = 1;
    while filled < len {
        for (index, walk) in walks.iter_mut().enumerate() {
            if filled >= len {
                break;
            }
            if round * walk.weight < walk.target {
                continue;
            }
            walk.target += max_weight;
            loop {
                let slot = ((walk.offset + walk.next % size * walk.skip) % size) as usize;
                walk.next += 1;
                if let Some(entry) = table.get_mut(slot)
                    && *entry == EMPTY
                {
                    *entry = index as u32;
                    filled += 1;
                    break;
                }
            }
        }
        round += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn hosts(weights: &[u32]) -> Vec<Arc<Host>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Host::weighted(
                    SocketAddr::from(([10, 0, 0, 1], 8000 + i as u16)),
                    *w,
                ))
            })
            .collect()
    }

    const RING: TableKind = TableKind::Ring {
        min: 1024,
        max: 8 * 1024 * 1024,
    };
    const MAGLEV: TableKind = TableKind::Maglev { size: 65_537 };
    const KEYS: u64 = 10_000;

    fn key_hash(key: u64) -> u64 {
        xxh64(format!("user-{key}").as_bytes(), 0)
    }

    /// The share of KEYS each host gets.
    fn shares(table: &HashTable, all: &[Arc<Host>]) -> Vec<f64> {
        let mut counts = vec![0u64; all.len()];
        for key in 0..KEYS {
            let host = table.get(key_hash(key)).expect("a host");
            if let Some(i) = all.iter().position(|h| Arc::ptr_eq(h, &host)) {
                counts[i] += 1;
            }
        }
        counts.iter().map(|c| *c as f64 / KEYS as f64).collect()
    }

    fn build(kind: TableKind, candidates: &[Arc<Host>], all: &[Arc<Host>]) -> HashTable {
        let refs: Vec<&Arc<Host>> = candidates.iter().collect();
        HashTable::build(kind, &refs, all, 0)
    }

    #[test]
    fn ring_and_maglev_spread_by_weight() {
        for kind in [RING, MAGLEV] {
            let all = hosts(&[1, 1, 1, 1]);
            let even = shares(&build(kind, &all, &all), &all);
            for share in &even {
                assert!((share - 0.25).abs() < 0.06, "{kind:?}: {even:?}");
            }
            let all = hosts(&[3, 1]);
            let weighted = shares(&build(kind, &all, &all), &all);
            assert!((weighted[0] - 0.75).abs() < 0.06, "{kind:?}: {weighted:?}");
        }
    }

    /// One host of four leaving balancing (unhealthy, ejected): every key it had moves, and
    /// at least 95% of the keys of the hosts that stay stay where they were (the ring: all of
    /// them). With four equal hosts about 25% of the keys were on the one that left, so 75% of
    /// all keys is the most that can stay; the hash's spread puts that a point either side,
    /// hence the bound of 70% on all keys.
    #[test]
    fn one_host_of_four_leaving_keeps_the_other_keys() {
        for kind in [RING, MAGLEV] {
            let all = hosts(&[1, 1, 1, 1]);
            let before = build(kind, &all, &all);
            let after = build(kind, &all[1..], &all);
            // Removed from the cluster outright (a DNS answer without it): the ring is scaled
            // over the three left.
            let removed = build(kind, &all[1..], &all[1..]);
            let moved_on_removal = (0..KEYS)
                .filter(|key| {
                    let was = before.get(key_hash(*key));
                    let now = removed.get(key_hash(*key));
                    was.as_ref().is_some_and(|w| !Arc::ptr_eq(w, &all[0]))
                        && !matches!((&was, &now), (Some(w), Some(n)) if Arc::ptr_eq(w, n))
                })
                .count();
            eprintln!("{kind:?}: removal moved {moved_on_removal} of the stayers' keys");
            // Maglev barely moves them; the ring, scaled up to keep minimum_ring_size over
            // fewer hosts, moves about an eighth of them, as Envoy's does.
            let bound = if matches!(kind, TableKind::Maglev { .. }) {
                0.05
            } else {
                0.2
            };
            assert!(
                (moved_on_removal as f64) < bound * KEYS as f64,
                "{kind:?}: removal moved {moved_on_removal}"
            );
            let (mut kept, mut on_stayers, mut kept_on_stayers) = (0u64, 0u64, 0u64);
            for key in 0..KEYS {
                let was = before.get(key_hash(key)).expect("a host");
                let now = after.get(key_hash(key)).expect("a host");
                assert!(!Arc::ptr_eq(&now, &all[0]), "{kind:?}: the host left");
                if Arc::ptr_eq(&was, &now) {
                    kept += 1;
                }
                if !Arc::ptr_eq(&was, &all[0]) {
                    on_stayers += 1;
                    kept_on_stayers += u64::from(Arc::ptr_eq(&was, &now));
                }
            }
            let kept = kept as f64 / KEYS as f64;
            let kept_on_stayers = kept_on_stayers as f64 / on_stayers as f64;
            eprintln!("{kind:?}: kept {kept:.3} of all keys, {kept_on_stayers:.3} of the stayers'");
            assert!(kept_on_stayers >= 0.95, "{kind:?}: {kept_on_stayers}");
            assert!(kept >= 0.70, "{kind:?}: {kept}");
        }
    }
}
