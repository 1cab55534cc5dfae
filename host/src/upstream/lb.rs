//! Picking a host for a request among the cluster's available hosts, by `lb_policy`, each
//! host weighted by its `load_balancing_weight`.
//!
//! As Envoy's load balancers: hosts not removed and not excluded (see [`Host::is_excluded`])
//! are healthy, degraded or unhealthy ([`Host::health`]), each at its endpoint's priority
//! level. [`Levels`] splits the requests over the levels and within each between the healthy
//! and the degraded hosts by Envoy's overprovisioning factor (`policy.overprovisioning_factor`
//! of the load assignment, default 1.4): with one level the healthy hosts take it all while at
//! least 1/1.4 (~71%) of the hosts are healthy, the degraded ones make up what the healthy
//! fall short of; with several, a lower level takes what the levels above it fall short of.
//! When fewer than `healthy_panic_threshold` percent (default 50) of a level's hosts are
//! healthy or degraded (and all levels together do not reach 100%), panic mode balances over
//! every host of the level not removed or excluded, those failing active health checks and
//! ejected ones included, each such pick counted in `lb_healthy_panic`. A threshold of 0 turns
//! panic mode off: no healthy or degraded host is a 503. RING_HASH and MAGLEV, as Envoy's,
//! draw the level by the hash, then build their tables over the level's healthy hosts only
//! (every host in panic mode).

use super::cluster::{Cluster, Health, Host};
use super::hash_lb::{self, TableKind};
use super::priority::{Availability, Levels};
use super::spec::LbPolicy;
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Picks a host by the cluster's `lb_policy`, for a request with no hash; `None` when no
/// host may be picked.
#[cfg(test)]
pub fn pick_host(cluster: &Cluster) -> Option<Arc<Host>> {
    pick_host_for(cluster, None)
}

/// Picks a host by the cluster's `lb_policy`; RING_HASH and MAGLEV go by `hash` (a random
/// host without one, as Envoy's), the other policies ignore it.
pub fn pick_host_for(cluster: &Cluster, hash: Option<u64>) -> Option<Arc<Host>> {
    let hosts = cluster.hosts();
    let hashing = hash.is_some()
        && matches!(
            cluster.spec.lb_policy,
            LbPolicy::RingHash | LbPolicy::Maglev
        );
    let (candidates, priority) = candidates(cluster, &hosts, hash, hashing);
    if candidates.is_empty() {
        return None;
    }
    let lb = &cluster.spec.lb;
    let ramping = match cluster.spec.lb_policy {
        LbPolicy::RoundRobin | LbPolicy::LeastRequest => slow_start_weights(cluster, &candidates),
        _ => None,
    };
    let index = match (cluster.spec.lb_policy, hash) {
        (LbPolicy::LeastRequest | LbPolicy::RoundRobin, _) if ramping.is_some() => {
            let weights = ramping.as_deref().unwrap_or_default();
            if cluster.spec.lb_policy == LbPolicy::LeastRequest {
                least_request_weighted(&candidates, weights)
            } else {
                random_by(weights)
            }
        }
        (LbPolicy::RoundRobin, _) => round_robin(cluster, &candidates),
        (LbPolicy::LeastRequest, _) => least_request(&candidates, lb.choice_count),
        (policy @ (LbPolicy::RingHash | LbPolicy::Maglev), Some(hash)) => {
            let kind = match policy {
                LbPolicy::RingHash => TableKind::Ring {
                    min: lb.ring_min_size,
                    max: lb.ring_max_size,
                },
                _ => TableKind::Maglev {
                    size: lb.maglev_table_size,
                },
            };
            return hash_lb::pick(
                cluster.hash_table(priority),
                kind,
                &candidates,
                &hosts,
                hash,
            );
        }
        (LbPolicy::Random | LbPolicy::RingHash | LbPolicy::Maglev, _) => {
            weighted_random(&candidates)
        }
    };
    candidates.get(index).map(|host| Arc::clone(host))
}

/// The hosts to balance over for one request and the priority level they are of: a level
/// drawn by the cluster's priority loads ([`Levels`]: Envoy's split by each level's health
/// and the overprovisioning factor), then its healthy or degraded hosts as drawn (the
/// healthy ones only when `hashing`, as Envoy's hash tables), or in panic mode every host of
/// the level not removed or excluded. A request with a hash draws its level by the hash
/// (`hash % 100 + 1`, as Envoy's `choosePriority`), the others at random. A host waiting for
/// its first health check under `ignore_new_hosts_until_first_hc`, or otherwise excluded, is
/// neither picked nor counted, even in panic mode.
///
/// One pass over the hosts counts each level's hosts on the stack; a second collects the
/// drawn level's candidates into the one vector a request allocates. Should a host's health
/// change between the two so that the second finds none of the hosts the first counted, the
/// request counts afresh, once.
fn candidates<'a>(
    cluster: &Cluster,
    hosts: &'a [Arc<Host>],
    hash: Option<u64>,
    hashing: bool,
) -> (Vec<&'a Arc<Host>>, u32) {
    candidates_once(cluster, hosts, hash, hashing, false)
        .or_else(|| candidates_once(cluster, hosts, hash, hashing, true))
        .unwrap_or_default()
}

/// [`candidates`] from one count; `None` where the count found hosts and the collection
/// none (a health change in between), unless `last_try`.
fn candidates_once<'a>(
    cluster: &Cluster,
    hosts: &'a [Arc<Host>],
    hash: Option<u64>,
    hashing: bool,
    last_try: bool,
) -> Option<(Vec<&'a Arc<Host>>, u32)> {
    let mut levels = Levels::default();
    let weighted = cluster.spec.weighted_priority_health;
    let mut live = 0usize;
    let mut spread = false;
    for host in hosts.iter().filter(|host| !host.is_removed()) {
        let level = levels.at(host.priority());
        level.present += 1;
        if host.is_excluded() {
            continue;
        }
        live += 1;
        level.live += 1;
        let weight = if weighted {
            u64::from(host.weight())
        } else {
            0
        };
        level.live_weight += weight;
        match host.health() {
            Health::Healthy => {
                level.healthy += 1;
                level.healthy_weight += weight;
            }
            Health::Degraded => {
                level.degraded += 1;
                level.degraded_weight += weight;
                spread = true;
            }
            Health::Unhealthy => {}
        }
    }
    if live == 0 {
        return Some((Vec::new(), 0));
    }
    levels.balance(
        cluster.spec.overprovisioning_factor,
        cluster.spec.lb.healthy_panic_threshold,
        weighted,
    );
    // One level with no degraded host: nothing to draw.
    let point = match hash {
        _ if levels.slice().len() == 1 && !spread => 1,
        Some(hash) if hashing => (hash % 100) as u32 + 1,
        _ => rand::rng().random_range(1..=100),
    };
    let (index, availability) = levels.choose(point);
    let Some(level) = levels.slice().get(index) else {
        return Some((Vec::new(), 0));
    };
    let priority = index as u32;
    let of_level = |host: &&Arc<Host>| host.priority() == priority && !host.is_removed();
    if level.panic {
        let mut all = Vec::with_capacity(level.live as usize);
        all.extend(hosts.iter().filter(of_level).filter(|h| !h.is_excluded()));
        if all.is_empty() && level.live > 0 && !last_try {
            return None;
        }
        cluster.stats.lb_healthy_panic.inc();
        return Some((all, priority));
    }
    let (wanted, count) = match availability {
        Availability::Degraded if !hashing => (Health::Degraded, level.degraded),
        _ => (Health::Healthy, level.healthy),
    };
    let mut picked = Vec::with_capacity(count as usize);
    picked.extend(
        hosts
            .iter()
            .filter(of_level)
            .filter(|h| !h.is_excluded() && h.health() == wanted),
    );
    if picked.is_empty() && count > 0 && !last_try {
        return None;
    }
    Some((picked, priority))
}

/// Each host in turn, a host of weight w w times per round.
fn round_robin(cluster: &Cluster, candidates: &[&Arc<Host>]) -> usize {
    let turn = cluster.round_robin.fetch_add(1, Ordering::Relaxed);
    if equal_weights(candidates) {
        return turn % candidates.len();
    }
    let total: u64 = candidates.iter().map(|h| u64::from(h.weight())).sum();
    by_weight(candidates, turn as u64 % total.max(1))
}

/// A random host, each with the chance of its weight.
fn weighted_random(candidates: &[&Arc<Host>]) -> usize {
    let mut rng = rand::rng();
    if equal_weights(candidates) {
        return rng.random_range(0..candidates.len());
    }
    let total: u64 = candidates.iter().map(|h| u64::from(h.weight())).sum();
    by_weight(candidates, rng.random_range(0..total.max(1)))
}

/// The host whose share of the cumulative weights holds `point`.
fn by_weight(candidates: &[&Arc<Host>], mut point: u64) -> usize {
    for (index, host) in candidates.iter().enumerate() {
        let weight = u64::from(host.weight());
        if point < weight {
            return index;
        }
        point -= weight;
    }
    candidates.len().saturating_sub(1)
}

fn equal_weights(candidates: &[&Arc<Host>]) -> bool {
    candidates
        .windows(2)
        .all(|pair| pair[0].weight() == pair[1].weight())
}

/// Under `slow_start_config`, while some host is still ramping up: each host's weight times
/// its slow start factor (`None` when no host is ramping, or without slow start). Hosts are
/// then picked at random by these weights rather than in turn, as the weights change with time.
fn slow_start_weights(cluster: &Cluster, candidates: &[&Arc<Host>]) -> Option<Vec<f64>> {
    let slow_start = cluster.spec.lb.slow_start?;
    let factors: Vec<f64> = candidates
        .iter()
        .map(|host| slow_start.factor(host.ready_for()))
        .collect();
    if factors.iter().all(|factor| *factor >= 1.0) {
        return None;
    }
    Some(
        candidates
            .iter()
            .zip(factors)
            .map(|(host, factor)| f64::from(host.weight()) * factor)
            .collect(),
    )
}

/// An index picked at random, each with the chance of its weight.
fn random_by(weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut point = rand::rng().random_range(0.0..total.max(f64::MIN_POSITIVE));
    for (index, weight) in weights.iter().enumerate() {
        if point < *weight {
            return index;
        }
        point -= weight;
    }
    weights.len().saturating_sub(1)
}

/// Weighted least request over `weights`: a random host, each with the chance of its weight
/// / (active requests + 1), as Envoy's.
fn least_request_weighted(candidates: &[&Arc<Host>], weights: &[f64]) -> usize {
    let effective: Vec<f64> = candidates
        .iter()
        .zip(weights)
        .map(|(host, weight)| weight / (host.rq_active.load(Ordering::Relaxed).max(0) as f64 + 1.0))
        .collect();
    random_by(&effective)
}

/// Power of `choice_count` choices where weights are equal: that many distinct random hosts,
/// the one with the fewest active requests. Where weights differ, as Envoy's weighted least
/// request: a random host, each with the chance of its weight / (active requests + 1).
fn least_request(candidates: &[&Arc<Host>], choice_count: u32) -> usize {
    if candidates.len() < 2 {
        return 0;
    }
    let mut rng = rand::rng();
    let active = |host: &Host| host.rq_active.load(Ordering::Relaxed).max(0) as f64;
    if !equal_weights(candidates) {
        let weights: Vec<f64> = candidates.iter().map(|h| f64::from(h.weight())).collect();
        return least_request_weighted(candidates, &weights);
    }
    let count = (choice_count as usize).clamp(2, candidates.len());
    let choices = rand::seq::index::sample(&mut rng, candidates.len(), count);
    let mut best: Option<usize> = None;
    for choice in choices {
        if best.is_none_or(|b| active(candidates[choice]) < active(candidates[b])) {
            best = Some(choice);
        }
    }
    best.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::spec::*;

    fn spec(name: &str, policy: LbPolicy, ports: &[u16]) -> ClusterSpec {
        let mut spec = crate::upstream::test_support::spec(name, ports);
        spec.lb_policy = policy;
        spec
    }

    fn picks(cluster: &Cluster, n: usize) -> Vec<u16> {
        (0..n)
            .filter_map(|_| pick_host(cluster).map(|host| host.addr.port()))
            .collect()
    }

    #[test]
    fn round_robin_takes_each_healthy_host_in_turn() {
        let cluster = Cluster::new(spec("lb_rr", LbPolicy::RoundRobin, &[1, 2, 3]));
        let Ok(cluster) = cluster else {
            panic!("cluster builds")
        };
        assert_eq!(picks(&cluster, 6), vec![1, 2, 3, 1, 2, 3]);
        cluster.hosts()[1].set_healthy(false);
        let mut seen = picks(&cluster, 4);
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 1, 3, 3]);
    }

    #[test]
    fn least_request_prefers_the_idle_host() {
        let Ok(cluster) = Cluster::new(spec("lb_lr", LbPolicy::LeastRequest, &[1, 2])) else {
            panic!("cluster builds")
        };
        cluster.hosts()[0].rq_active.store(5, Ordering::Relaxed);
        assert!(picks(&cluster, 20).iter().all(|port| *port == 2));
    }

    #[test]
    fn random_and_none_healthy() {
        // Panic mode off (threshold 0): with none healthy, none is picked.
        let mut spec = spec("lb_rand", LbPolicy::Random, &[1, 2]);
        spec.lb.healthy_panic_threshold = 0.0;
        let Ok(cluster) = Cluster::new(spec) else {
            panic!("cluster builds")
        };
        let seen = picks(&cluster, 200);
        assert!(seen.contains(&1) && seen.contains(&2));
        for host in cluster.hosts().iter() {
            host.set_healthy(false);
        }
        assert!(pick_host(&cluster).is_none());
    }

    #[test]
    fn weights_shape_round_robin_random_and_least_request() {
        for policy in [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest,
        ] {
            let mut spec = spec("lb_weights", policy, &[1, 2]);
            spec.endpoints[0].weight = 3;
            let Ok(cluster) = Cluster::new(spec) else {
                panic!("cluster builds")
            };
            let seen = picks(&cluster, 4000);
            let share = seen.iter().filter(|p| **p == 1).count() as f64 / seen.len() as f64;
            assert!((share - 0.75).abs() < 0.05, "{policy:?}: {share}");
        }
    }

    #[test]
    fn hash_policies_stick_and_fall_back_to_random() {
        for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
            let Ok(cluster) = Cluster::new(spec("lb_hash", policy, &[1, 2, 3, 4])) else {
                panic!("cluster builds")
            };
            let mut first_hosts = std::collections::HashSet::new();
            for key in 0..50u64 {
                let hash = xxhash_rust::xxh64::xxh64(&key.to_le_bytes(), 0);
                let first = pick_host_for(&cluster, Some(hash)).map(|h| h.addr);
                for _ in 0..20 {
                    assert_eq!(pick_host_for(&cluster, Some(hash)).map(|h| h.addr), first);
                }
                first_hosts.extend(first);
            }
            assert_eq!(
                first_hosts.len(),
                4,
                "{policy:?}: keys spread over every host"
            );
            let unhashed: std::collections::HashSet<u16> =
                picks(&cluster, 200).into_iter().collect();
            assert_eq!(unhashed.len(), 4, "{policy:?}: no hash, a random host");
        }
    }

    #[test]
    fn panic_threshold_brings_hosts_back() {
        // Envoy's default (50%), not set in the config: hosts failing active health checks
        // come back too.
        let spec = spec("lb_panic", LbPolicy::RoundRobin, &[1, 2, 3, 4]);
        assert_eq!(spec.lb.healthy_panic_threshold, 50.0);
        let Ok(cluster) = Cluster::new(spec) else {
            panic!("cluster builds")
        };
        let hosts = cluster.hosts();
        hosts[0].set_healthy(false);
        hosts[1].set_healthy(false);
        assert!(!picks(&cluster, 8).contains(&1), "50% available: no panic");
        assert_eq!(cluster.stats.lb_healthy_panic.get(), 0);
        hosts[2].set_healthy(false);
        let seen: std::collections::HashSet<u16> = picks(&cluster, 8).into_iter().collect();
        assert_eq!(seen.len(), 4, "25% available: every host");
        assert_eq!(
            cluster.stats.lb_healthy_panic.get(),
            8,
            "each panic pick counted"
        );
        hosts[3].set_healthy(false);
        assert_eq!(
            picks(&cluster, 4).len(),
            4,
            "none available: still every host"
        );
    }

    /// Envoy's split for one priority (`LoadBalancerBase`, overprovisioning 1.4): the
    /// figures of Envoy's own load-balancer tests and docs.
    #[test]
    fn priority_load_is_envoys() {
        let one = |h, d, t, threshold| {
            let mut levels = Levels::default();
            let level = levels.at(0);
            (level.healthy, level.degraded, level.live, level.present) = (h, d, t, t);
            levels.balance(140, threshold, false);
            levels
        };
        let load = |h, d, t, threshold| {
            let l = one(h, d, t, threshold).slice()[0];
            (l.to_healthy, l.to_degraded, l.panic)
        };
        // All healthy, or enough healthy (5 of 7 is 100% with the factor).
        assert_eq!(load(4, 0, 4, 50.0), (100, 0, false));
        assert_eq!(load(5, 2, 7, 50.0), (100, 0, false));
        // 1 healthy + 1 degraded: 70% healthy (50% * 1.4), the degraded make up 30%.
        assert_eq!(load(1, 1, 2, 50.0), (70, 30, false));
        // 1 healthy + 2 degraded: 46% (140/3 rounded down) and 54%.
        assert_eq!(load(1, 2, 3, 50.0), (46, 54, false));
        // 2 of 10 healthy, 2 degraded: 28% + 28% = 56% available, scaled to 100: 50/50;
        // but 40% of the hosts healthy or degraded is under the default threshold: panic.
        assert_eq!(load(2, 2, 10, 30.0), (50, 50, false));
        assert!(load(2, 2, 10, 50.0).2);
        // Only degraded hosts: all to them.
        assert_eq!(load(0, 3, 3, 50.0), (0, 100, false));
        // 1 healthy of 4, no degraded: 35% available, under 50% healthy: panic.
        assert!(load(1, 0, 4, 50.0).2);
        // 1 healthy + 1 degraded of 4: 50% healthy or degraded, not under 50: no panic.
        assert_eq!(load(1, 1, 4, 50.0), (50, 50, false));
        // 3 of 4 healthy under a threshold of 80: 105% with the factor, never panic.
        assert_eq!(load(3, 0, 4, 80.0), (100, 0, false));
        // Nothing healthy or degraded: panic, unless the threshold is 0.
        assert!(load(0, 0, 2, 50.0).2);
        assert_eq!(load(0, 0, 2, 0.0), (100, 0, false));
        let split = one(1, 1, 2, 50.0);
        assert_eq!(split.choose(70).1, Availability::Healthy);
        assert_eq!(split.choose(71).1, Availability::Degraded);
    }

    /// Two levels: P0 (ports 1, 2) and P1 (port 3). All healthy: everything to P0; one P0
    /// host failing: 70% to P0's other host, 30% to P1; P0 all failing: everything to P1.
    #[test]
    fn priority_levels_fail_over_as_envoys() {
        let share = |seen: &[u16], port: u16| {
            seen.iter().filter(|p| **p == port).count() as f64 / seen.len().max(1) as f64
        };
        for policy in [
            LbPolicy::RoundRobin,
            LbPolicy::LeastRequest,
            LbPolicy::Random,
        ] {
            let mut spec = spec("lb_priorities", policy, &[1, 2, 3]);
            spec.endpoints[2].priority = 1;
            let Ok(cluster) = Cluster::new(spec) else {
                panic!("cluster builds")
            };
            let seen = picks(&cluster, 400);
            assert_eq!(
                share(&seen, 3),
                0.0,
                "{policy:?}: P1 idle while P0 is healthy"
            );
            cluster.hosts()[0].set_healthy(false);
            let seen = picks(&cluster, 4000);
            assert!(
                (share(&seen, 2) - 0.70).abs() < 0.04,
                "{policy:?}: {seen:?}"
            );
            assert!((share(&seen, 3) - 0.30).abs() < 0.04, "{policy:?}");
            assert_eq!(share(&seen, 1), 0.0);
            cluster.hosts()[1].set_healthy(false);
            assert_eq!(picks(&cluster, 50), vec![3; 50], "{policy:?}");
            assert_eq!(cluster.stats.lb_healthy_panic.get(), 0);
        }
    }

    /// `overprovisioning_factor` of the load assignment: at 200, one healthy host of two
    /// keeps its level whole.
    #[test]
    fn the_overprovisioning_factor_shifts_the_split() {
        let mut spec = spec("lb_factor", LbPolicy::Random, &[1, 2, 3]);
        spec.endpoints[2].priority = 1;
        spec.overprovisioning_factor = 200;
        let Ok(cluster) = Cluster::new(spec) else {
            panic!("cluster builds")
        };
        cluster.hosts()[0].set_healthy(false);
        assert!(picks(&cluster, 400).iter().all(|port| *port == 2));
    }

    /// Both levels under the panic threshold: total panic, the load split by the levels'
    /// host counts, each level's pick over all its hosts.
    #[test]
    fn total_panic_spreads_by_host_counts() {
        // P0: ports 1-4 (1 healthy), P1: ports 5-8 (1 healthy): 50/50 over all eight.
        let mut spec = spec(
            "lb_total_panic",
            LbPolicy::Random,
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        for endpoint in &mut spec.endpoints[4..] {
            endpoint.priority = 1;
        }
        let Ok(cluster) = Cluster::new(spec) else {
            panic!("cluster builds")
        };
        for index in [1, 2, 3, 5, 6, 7] {
            cluster.hosts()[index].set_healthy(false);
        }
        let seen = picks(&cluster, 4000);
        let p0 = seen.iter().filter(|p| **p <= 4).count() as f64 / seen.len() as f64;
        assert!((p0 - 0.5).abs() < 0.04, "{p0}");
        let distinct: std::collections::HashSet<u16> = seen.into_iter().collect();
        assert_eq!(distinct.len(), 8);
        assert_eq!(cluster.stats.lb_healthy_panic.get(), 4000);
    }

    /// RING_HASH and MAGLEV draw the level by the hash, then hash within it: a key sticks to
    /// one host, P1 takes about 30% of the keys with half of P0 failing.
    #[test]
    fn hash_policies_draw_the_level_by_the_hash() {
        for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
            let mut spec = spec("lb_hash_priorities", policy, &[1, 2, 3]);
            spec.endpoints[2].priority = 1;
            let Ok(cluster) = Cluster::new(spec) else {
                panic!("cluster builds")
            };
            let hash = |key: u64| xxhash_rust::xxh64::xxh64(&key.to_le_bytes(), 0);
            for key in 0..200u64 {
                let host = pick_host_for(&cluster, Some(hash(key))).map(|h| h.addr.port());
                assert_ne!(host, Some(3), "{policy:?}: P0 healthy");
            }
            cluster.hosts()[0].set_healthy(false);
            let mut to_p1 = 0;
            for key in 0..2000u64 {
                let first = pick_host_for(&cluster, Some(hash(key))).map(|h| h.addr.port());
                for _ in 0..3 {
                    assert_eq!(
                        pick_host_for(&cluster, Some(hash(key))).map(|h| h.addr.port()),
                        first
                    );
                }
                assert_ne!(first, Some(1));
                to_p1 += usize::from(first == Some(3));
            }
            let share = to_p1 as f64 / 2000.0;
            assert!((share - 0.30).abs() < 0.04, "{policy:?}: {share}");
        }
    }

    /// Degraded hosts take traffic only as far as the healthy ones fall short, and never
    /// from a hash table; in panic mode every host.
    #[test]
    fn degraded_hosts_make_up_what_healthy_ones_lack() {
        use crate::upstream::spec::EndpointHealth::Degraded;
        let share = |cluster: &Cluster, port: u16, n: usize| {
            let seen = picks(cluster, n);
            seen.iter().filter(|p| **p == port).count() as f64 / n as f64
        };
        // One healthy, one degraded (by EDS): 70/30.
        let mut two = spec("lb_degraded_two", LbPolicy::RoundRobin, &[1, 2]);
        two.endpoints[1].health = Degraded;
        let Ok(cluster) = Cluster::new(two) else {
            panic!("cluster builds")
        };
        assert_eq!(cluster.stats.membership_degraded.get(), 1);
        assert_eq!(cluster.stats.membership_healthy.get(), 1);
        let to_healthy = share(&cluster, 1, 4000);
        assert!((to_healthy - 0.70).abs() < 0.04, "{to_healthy}");
        // By active health check: the same.
        let Ok(cluster) = Cluster::new(spec("lb_degraded_hc", LbPolicy::Random, &[1, 2])) else {
            panic!("cluster builds")
        };
        cluster.hosts()[1].set_degraded_active_hc(true);
        let to_healthy = share(&cluster, 1, 4000);
        assert!((to_healthy - 0.70).abs() < 0.04, "{to_healthy}");
        // Four healthy and one degraded: 4/5 * 1.4 >= 100%, the degraded host gets nothing.
        let mut five = spec("lb_degraded_five", LbPolicy::LeastRequest, &[1, 2, 3, 4, 5]);
        five.endpoints[4].health = Degraded;
        let Ok(cluster) = Cluster::new(five) else {
            panic!("cluster builds")
        };
        assert_eq!(share(&cluster, 5, 2000), 0.0);
        // A hash table holds the healthy hosts only.
        let mut ring = spec("lb_degraded_ring", LbPolicy::RingHash, &[1, 2]);
        ring.endpoints[1].health = Degraded;
        let Ok(cluster) = Cluster::new(ring) else {
            panic!("cluster builds")
        };
        for key in 0..200u64 {
            let host = pick_host_for(
                &cluster,
                Some(xxhash_rust::xxh64::xxh64(&key.to_le_bytes(), 0)),
            );
            assert_eq!(host.map(|h| h.addr.port()), Some(1));
        }
        // One degraded, three failing: 25% healthy or degraded, panic: every host.
        let mut four = spec("lb_degraded_panic", LbPolicy::RoundRobin, &[1, 2, 3, 4]);
        four.endpoints[0].health = Degraded;
        let Ok(cluster) = Cluster::new(four) else {
            panic!("cluster builds")
        };
        for host in &cluster.hosts()[1..] {
            host.set_healthy(false);
        }
        let seen: std::collections::HashSet<u16> = picks(&cluster, 8).into_iter().collect();
        assert_eq!(seen.len(), 4);
        assert_eq!(cluster.stats.lb_healthy_panic.get(), 8);
    }

    /// Excluded hosts count for nothing: one healthy host and two excluded by an immediate
    /// health-check failure take no panic mode, the healthy one gets everything.
    #[test]
    fn excluded_hosts_leave_the_panic_count() {
        let Ok(cluster) = Cluster::new(spec("lb_excluded", LbPolicy::RoundRobin, &[1, 2, 3]))
        else {
            panic!("cluster builds")
        };
        for host in &cluster.hosts()[1..] {
            host.set_healthy(false);
            host.set_immediate_hc_fail(true);
        }
        cluster.update_membership();
        assert_eq!(cluster.stats.membership_excluded.get(), 2);
        assert_eq!(picks(&cluster, 6), vec![1; 6]);
        assert_eq!(cluster.stats.lb_healthy_panic.get(), 0);
    }

    #[test]
    fn a_zero_panic_threshold_turns_panic_mode_off() {
        let mut spec = spec("lb_no_panic", LbPolicy::RoundRobin, &[1, 2]);
        spec.lb.healthy_panic_threshold = 0.0;
        let Ok(cluster) = Cluster::new(spec) else {
            panic!("cluster builds")
        };
        let hosts = cluster.hosts();
        hosts[0].set_healthy(false);
        assert_eq!(picks(&cluster, 4), vec![2, 2, 2, 2]);
        hosts[1].set_healthy(false);
        assert!(
            picks(&cluster, 4).is_empty(),
            "no host available: none picked"
        );
        assert_eq!(cluster.stats.lb_healthy_panic.get(), 0);
    }

    #[test]
    fn slow_start_ramps_a_new_host_up() {
        use std::time::Duration;
        let slow = SlowStart {
            window: Duration::from_secs(10),
            aggression: 1.0,
            min_weight_percent: 10.0,
        };
        assert!((slow.factor(Duration::from_secs(5)) - 0.5).abs() < 1e-9);
        assert!(
            (slow.factor(Duration::from_millis(100)) - 0.1).abs() < 1e-9,
            "floor"
        );
        assert_eq!(slow.factor(Duration::from_secs(11)), 1.0);
        let square = SlowStart {
            aggression: 2.0,
            ..slow
        };
        assert!((square.factor(Duration::from_millis(2500)) - 0.5).abs() < 1e-9);
        for policy in [LbPolicy::RoundRobin, LbPolicy::LeastRequest] {
            let mut spec = spec("lb_slow", policy, &[1, 2]);
            spec.lb.slow_start = Some(slow);
            let Ok(cluster) = Cluster::new(spec) else {
                panic!("cluster builds")
            };
            let hosts = cluster.hosts();
            hosts[0].set_ready_for(Duration::from_secs(60));
            // Host 2 is 2.5 s into its 10 s window: a quarter of its weight.
            hosts[1].set_ready_for(Duration::from_millis(2500));
            let seen = picks(&cluster, 4000);
            let share = seen.iter().filter(|p| **p == 2).count() as f64 / seen.len() as f64;
            assert!((share - 0.25 / 1.25).abs() < 0.04, "{policy:?}: {share}");
            hosts[1].set_ready_for(Duration::from_secs(60));
            let seen = picks(&cluster, 2000);
            let share = seen.iter().filter(|p| **p == 2).count() as f64 / seen.len() as f64;
            assert!(
                (share - 0.5).abs() < 0.05,
                "{policy:?} after the window: {share}"
            );
        }
    }
}
