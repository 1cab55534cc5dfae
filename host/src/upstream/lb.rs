//! Picking a host for a request among the cluster's healthy hosts.

use super::cluster::{Cluster, Host};
use super::spec::LbPolicy;
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Picks a healthy host by the cluster's `lb_policy`; `None` when no host is healthy.
pub fn pick_host(cluster: &Cluster) -> Option<Arc<Host>> {
    let hosts = cluster.hosts();
    let healthy: Vec<&Arc<Host>> = hosts.iter().filter(|host| host.is_available()).collect();
    if healthy.is_empty() {
        return None;
    }
    let index = match cluster.spec.lb_policy {
        LbPolicy::RoundRobin => cluster.round_robin.fetch_add(1, Ordering::Relaxed) % healthy.len(),
        LbPolicy::Random => rand::rng().random_range(0..healthy.len()),
        LbPolicy::LeastRequest => least_request(&healthy),
    };
    healthy.get(index).map(|host| Arc::clone(host))
}

/// Power of two choices: two distinct random hosts, the one with fewer active requests.
fn least_request(healthy: &[&Arc<Host>]) -> usize {
    if healthy.len() < 2 {
        return 0;
    }
    let mut rng = rand::rng();
    let first = rng.random_range(0..healthy.len());
    let second = (first + rng.random_range(1..healthy.len())) % healthy.len();
    let active = |i: usize| healthy[i].rq_active.load(Ordering::Relaxed);
    if active(second) < active(first) {
        second
    } else {
        first
    }
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
        let Ok(cluster) = Cluster::new(spec("lb_rand", LbPolicy::Random, &[1, 2])) else {
            panic!("cluster builds")
        };
        let seen = picks(&cluster, 200);
        assert!(seen.contains(&1) && seen.contains(&2));
        for host in cluster.hosts().iter() {
            host.set_healthy(false);
        }
        assert!(pick_host(&cluster).is_none());
    }
}
