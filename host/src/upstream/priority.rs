//! How a cluster's load splits over its priority levels, and within a level between its
//! healthy and its degraded hosts: Envoy's `LoadBalancerBase` (`recalculatePerPriorityState`,
//! `recalculatePerPriorityPanic`, `recalculateLoadInTotalPanic`, `choosePriority`).
//!
//! Each level's health is its share of healthy hosts (of those not excluded) times the
//! overprovisioning factor (percent, Envoy's default 140), capped at 100; its degradation the
//! same for its degraded hosts. The normalized total availability is the sum of all of them,
//! capped at 100. The load (100%) goes to the levels' healthy hosts in priority order, each
//! taking `health * 100 / normalized` of what is left, then what remains to the degraded hosts
//! the same way; a rounding remainder goes to the first level with healthy hosts (else with
//! degraded ones). While the normalized availability is under 100, a level whose healthy and
//! degraded hosts are fewer than `healthy_panic_threshold` percent of its hosts is in panic
//! mode (its share goes to every host of it); when every level is, the load is spread by the
//! levels' host counts instead (total panic). With a threshold of 0 and nothing available,
//! priority 0 takes it all (and no host is picked).
//!
//! Computed afresh for each request from counts taken in one pass over the hosts, on the
//! stack ([`Levels`] holds up to [`INLINE_LEVELS`] levels without allocating).

/// Levels [`Levels`] holds without allocating.
pub const INLINE_LEVELS: usize = 8;

/// One priority level's host counts and, once [`Levels::balance`] ran, its load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Level {
    /// Healthy hosts in play.
    pub healthy: u32,
    /// Degraded hosts in play.
    pub degraded: u32,
    /// Hosts in play: neither removed nor excluded.
    pub live: u32,
    /// Hosts not removed, excluded ones included (total panic splits by these, as Envoy's
    /// `hosts().size()`).
    pub present: u32,
    /// Under `weighted_priority_health`: the weights of the healthy hosts in play.
    pub healthy_weight: u64,
    /// Under `weighted_priority_health`: the weights of the degraded hosts in play.
    pub degraded_weight: u64,
    /// Under `weighted_priority_health`: the weights of the hosts in play.
    pub live_weight: u64,
    /// Percent of the requests that go to its healthy hosts.
    pub to_healthy: u32,
    /// Percent of the requests that go to its degraded hosts.
    pub to_degraded: u32,
    /// Whether a request given to it goes to any of its hosts in play.
    pub panic: bool,
}

/// Which of a level's hosts a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Its healthy hosts (every host in play when the level is in panic mode).
    Healthy,
    /// Its degraded hosts (every host in play when the level is in panic mode).
    Degraded,
}

/// The levels of one cluster, priority 0 first, with no gap (a level with no host counts as
/// empty, as Envoy keeps a host set for each priority up to the highest).
#[derive(Debug)]
pub struct Levels {
    inline: [Level; INLINE_LEVELS],
    heap: Vec<Level>,
    len: usize,
}

impl Default for Levels {
    fn default() -> Self {
        Levels {
            inline: [Level::default(); INLINE_LEVELS],
            heap: Vec::new(),
            len: 0,
        }
    }
}

impl Levels {
    /// The level of `priority`, adding empty levels up to it; allocates only past
    /// [`INLINE_LEVELS`].
    pub fn at(&mut self, priority: u32) -> &mut Level {
        let index = priority as usize;
        if index >= self.len {
            if index >= INLINE_LEVELS && self.heap.is_empty() {
                self.heap.extend_from_slice(&self.inline[..self.len]);
            }
            if !self.heap.is_empty() || index >= INLINE_LEVELS {
                self.heap.resize(index + 1, Level::default());
            }
            self.len = index + 1;
        }
        &mut self.slice_mut()[index]
    }

    /// The levels, priority 0 first.
    pub fn slice(&self) -> &[Level] {
        if self.heap.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }

    fn slice_mut(&mut self) -> &mut [Level] {
        if self.heap.is_empty() {
            &mut self.inline[..self.len]
        } else {
            &mut self.heap
        }
    }

    /// Fills each level's load and panic flag from its counts, with `factor` the
    /// overprovisioning factor in percent and `threshold` the `healthy_panic_threshold`
    /// percent; each level's health from its hosts' weights where `weighted` (the load
    /// assignment's `weighted_priority_health`; panic mode still counts hosts, as Envoy's).
    pub fn balance(&mut self, factor: u32, threshold: f64, weighted: bool) {
        let factor = u64::from(factor);
        let threshold = threshold.clamp(0.0, 100.0);
        let levels = self.slice_mut();
        if levels.is_empty() {
            return;
        }
        // The common case on every request: one level, every host of it in play healthy.
        // With a factor of at least 100 its health is 100 by count or by weight: all the
        // load, no panic (what the arithmetic below gives, without its divisions).
        if let [level] = levels
            && level.live > 0
            && level.healthy == level.live
            && factor >= 100
            && (!weighted || level.live_weight > 0)
        {
            level.to_healthy = 100;
            level.to_degraded = 0;
            level.panic = false;
            return;
        }
        let availability = |hosts: u64, live: u64| -> u64 {
            (factor * hosts).checked_div(live).unwrap_or(0).min(100)
        };
        let health = |level: &Level| match weighted {
            true => availability(level.healthy_weight, level.live_weight),
            false => availability(level.healthy.into(), level.live.into()),
        };
        let degradation = |level: &Level| match weighted {
            true => availability(level.degraded_weight, level.live_weight),
            false => availability(level.degraded.into(), level.live.into()),
        };
        let normalized = levels
            .iter()
            .map(|l| health(l) + degradation(l))
            .sum::<u64>()
            .min(100);
        for level in levels.iter_mut() {
            level.to_healthy = 0;
            level.to_degraded = 0;
            level.panic = false;
        }
        // A level's availability scaled by the normalized total (`normalized` is not 0 here).
        let scaled = |availability: u64| (availability * 100).checked_div(normalized).unwrap_or(0);
        if normalized > 0 {
            let mut left = 100u64;
            let mut first_healthy = None;
            let mut first_degraded = None;
            for (index, level) in levels.iter_mut().enumerate() {
                let health = health(level);
                if health > 0 && first_healthy.is_none() {
                    first_healthy = Some(index);
                }
                let load = left.min(scaled(health));
                level.to_healthy = load as u32;
                left -= load;
            }
            for (index, level) in levels.iter_mut().enumerate() {
                let degradation = degradation(level);
                if degradation > 0 && first_degraded.is_none() {
                    first_degraded = Some(index);
                }
                let load = left.min(scaled(degradation));
                level.to_degraded = load as u32;
                left -= load;
            }
            if left > 0 {
                match (first_healthy, first_degraded) {
                    (Some(index), _) => levels[index].to_healthy += left as u32,
                    (None, Some(index)) => levels[index].to_degraded += left as u32,
                    (None, None) => {}
                }
            }
        }
        if threshold == 0.0 && normalized == 0 {
            levels[0].to_healthy = 100;
            return;
        }
        let mut total_panic = true;
        for level in levels.iter_mut() {
            level.panic = normalized != 100 && in_panic(level, threshold);
            total_panic &= level.panic;
        }
        if total_panic {
            let total: u64 = levels.iter().map(|l| u64::from(l.present)).sum();
            let mut left = 100u64;
            let mut first_present = None;
            for (index, level) in levels.iter_mut().enumerate() {
                if level.present > 0 && first_present.is_none() {
                    first_present = Some(index);
                }
                let load = (100 * u64::from(level.present))
                    .checked_div(total)
                    .unwrap_or(0);
                level.to_healthy = load as u32;
                level.to_degraded = 0;
                left -= load;
            }
            levels[first_present.unwrap_or(0)].to_healthy += left as u32;
        }
    }

    /// The level and availability a request drawn `point` (1 to 100, Envoy's
    /// `hash % 100 + 1`) goes to: the healthy loads in priority order, then the degraded
    /// ones. Priority 0's healthy hosts when the loads fall short of `point` (they add up to
    /// 100 but where nothing is available and panic mode is off).
    pub fn choose(&self, point: u32) -> (usize, Availability) {
        let levels = self.slice();
        let mut sum = 0;
        for (index, level) in levels.iter().enumerate() {
            sum += level.to_healthy;
            if point <= sum {
                return (index, Availability::Healthy);
            }
        }
        for (index, level) in levels.iter().enumerate() {
            sum += level.to_degraded;
            if point <= sum {
                return (index, Availability::Degraded);
            }
        }
        (0, Availability::Healthy)
    }
}

/// Envoy's `isHostSetInPanic`: fewer than `threshold` percent of the level's hosts in play are
/// healthy or degraded (always, for a level with none in play and a threshold above 0).
fn in_panic(level: &Level, threshold: f64) -> bool {
    if level.live == 0 {
        return 0.0 < threshold;
    }
    let percent = |hosts: u32| 100.0 * f64::from(hosts) / f64::from(level.live);
    percent(level.healthy) + percent(level.degraded) < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Levels of (healthy, degraded, in play) hosts, none excluded.
    fn levels(counts: &[(u32, u32, u32)]) -> Levels {
        let mut levels = Levels::default();
        for (priority, (healthy, degraded, live)) in counts.iter().enumerate() {
            let level = levels.at(priority as u32);
            level.healthy = *healthy;
            level.degraded = *degraded;
            level.live = *live;
            level.present = *live;
        }
        levels
    }

    /// (to healthy, to degraded, panic) per level.
    fn loads(counts: &[(u32, u32, u32)], factor: u32, threshold: f64) -> Vec<(u32, u32, bool)> {
        let mut levels = levels(counts);
        levels.balance(factor, threshold, false);
        levels
            .slice()
            .iter()
            .map(|l| (l.to_healthy, l.to_degraded, l.panic))
            .collect()
    }

    /// The figures below follow Envoy's arithmetic step by step (integer percent, factor
    /// 140): health = min(100, 140 * healthy / hosts), then `health * 100 / normalized`
    /// in priority order.
    #[test]
    fn loads_follow_envoys_arithmetic() {
        // All healthy: P0 takes everything.
        assert_eq!(
            loads(&[(2, 0, 2), (1, 0, 1)], 140, 50.0),
            vec![(100, 0, false), (0, 0, false)]
        );
        // P0 1 of 2 healthy: 70% health; P1 healthy (100): normalized 100, P0 70, P1 the
        // remaining 30. 50% healthy is not under the threshold of 50: no panic.
        assert_eq!(
            loads(&[(1, 0, 2), (1, 0, 1)], 140, 50.0),
            vec![(70, 0, false), (30, 0, false)]
        );
        // P0 all down: P1 takes everything (normalized 100, no panic anywhere).
        assert_eq!(
            loads(&[(0, 0, 2), (1, 0, 1)], 140, 50.0),
            vec![(0, 0, false), (100, 0, false)]
        );
        // Envoy's comment in recalculatePerPriorityState: health 10/20/10 and degradation
        // 20/10/0 (here 1 of 14 hosts: 140/14 = 10, 2 of 14: 20) give 16/28/14 healthy and
        // 28/14/0 degraded, the 2 rounding points to the first healthy level.
        assert_eq!(
            loads(&[(1, 2, 14), (2, 1, 14), (1, 0, 14)], 140, 0.0),
            vec![(16, 28, false), (28, 14, false), (14, 0, false)]
        );
        // A gap (P1 empty) takes nothing; P2 makes up for P0's 70%.
        assert_eq!(
            loads(&[(1, 0, 2), (0, 0, 0), (3, 0, 3)], 140, 50.0),
            vec![(70, 0, false), (0, 0, false), (30, 0, false)]
        );
        // Degraded loads come after every level's healthy one: P0 1 healthy + 1 degraded,
        // P1 1 healthy: P0 healthy 70, P1 healthy 30 (normalized 100), P0 degraded 0.
        assert_eq!(
            loads(&[(1, 1, 2), (1, 0, 1)], 140, 50.0),
            vec![(70, 0, false), (30, 0, false)]
        );
        // Another factor: 200 makes 1 of 2 healthy a full level.
        assert_eq!(
            loads(&[(1, 0, 2), (1, 0, 1)], 200, 50.0),
            vec![(100, 0, false), (0, 0, false)]
        );
        // And 100: health is the plain healthy share.
        assert_eq!(
            loads(&[(1, 0, 4), (1, 0, 4)], 100, 0.0),
            vec![(50, 0, false), (50, 0, false)]
        );
    }

    #[test]
    fn panic_per_level_and_total_panic() {
        // P0 1 of 4 healthy (35%), P1 1 of 4 (35%): normalized 70, each scaled to 50; both
        // under the 50% threshold: total panic, split by host counts (4 and 4).
        assert_eq!(
            loads(&[(1, 0, 4), (1, 0, 4)], 140, 50.0),
            vec![(50, 0, true), (50, 0, true)]
        );
        // P0 1 of 4 (35%), P1 1 of 2 (70%): normalized 100, no panic at all: 35/65.
        assert_eq!(
            loads(&[(1, 0, 4), (1, 0, 2)], 140, 50.0),
            vec![(35, 0, false), (65, 0, false)]
        );
        // P0 1 of 4 (35%), P1 1 of 5 (28%): normalized 63: 55/44 + 1 to P0; P0 25% and P1
        // 20% healthy, both under 50: total panic by host counts 4 and 5: 44/55 + 1 to P0.
        assert_eq!(
            loads(&[(1, 0, 4), (1, 0, 5)], 140, 50.0),
            vec![(45, 0, true), (55, 0, true)]
        );
        // Under a threshold of 22: P0 (25%) not in panic, P1 (20%) in panic; loads by
        // health: 35*100/63 = 55, 28*100/63 = 44, remainder 1 to P0.
        assert_eq!(
            loads(&[(1, 0, 4), (1, 0, 5)], 140, 22.0),
            vec![(56, 0, false), (44, 0, true)]
        );
        // Nothing available anywhere: total panic by host counts (2 and 1: 66 + 1 and 33).
        assert_eq!(
            loads(&[(0, 0, 2), (0, 0, 1)], 140, 50.0),
            vec![(67, 0, true), (33, 0, true)]
        );
        // Threshold 0 and nothing available: P0 "takes" everything, no panic.
        assert_eq!(
            loads(&[(0, 0, 2), (0, 0, 1)], 140, 0.0),
            vec![(100, 0, false), (0, 0, false)]
        );
    }

    #[test]
    fn one_level_is_the_single_priority_split() {
        // The figures of the one-level split (see `lb`'s tests).
        assert_eq!(loads(&[(1, 1, 2)], 140, 50.0), vec![(70, 30, false)]);
        assert_eq!(loads(&[(1, 2, 3)], 140, 50.0), vec![(46, 54, false)]);
        assert_eq!(loads(&[(2, 2, 10)], 140, 30.0), vec![(50, 50, false)]);
        assert_eq!(loads(&[(0, 3, 3)], 140, 50.0), vec![(0, 100, false)]);
        assert!(loads(&[(1, 0, 4)], 140, 50.0)[0].2);
    }

    /// One level with every host healthy takes a shortcut; it must give what the general
    /// arithmetic gives the same level beside an empty one, for any factor it is taken at.
    #[test]
    fn the_all_healthy_shortcut_is_the_arithmetics_answer() {
        for factor in [100, 140, 1000] {
            for hosts in [1, 2, 7] {
                let alone = loads(&[(hosts, 0, hosts)], factor, 50.0);
                let beside_empty = loads(&[(hosts, 0, hosts), (0, 0, 0)], factor, 50.0);
                assert_eq!(alone, vec![(100, 0, false)], "{factor} {hosts}");
                assert_eq!(beside_empty[0], alone[0], "{factor} {hosts}");
            }
        }
        // Below 100 the shortcut is not taken (health 50): the arithmetic's own answer.
        assert_eq!(
            loads(&[(2, 0, 2)], 50, 60.0)[0],
            loads(&[(2, 0, 2), (0, 0, 0)], 50, 60.0)[0]
        );
    }

    #[test]
    fn choose_walks_healthy_then_degraded_loads() {
        let mut levels = levels(&[(1, 2, 14), (2, 1, 14), (1, 0, 14)]);
        levels.balance(140, 0.0, false);
        // Healthy: P0 1-16, P1 17-44, P2 45-58; degraded: P0 59-86, P1 87-100.
        assert_eq!(levels.choose(1), (0, Availability::Healthy));
        assert_eq!(levels.choose(16), (0, Availability::Healthy));
        assert_eq!(levels.choose(17), (1, Availability::Healthy));
        assert_eq!(levels.choose(58), (2, Availability::Healthy));
        assert_eq!(levels.choose(59), (0, Availability::Degraded));
        assert_eq!(levels.choose(87), (1, Availability::Degraded));
        assert_eq!(levels.choose(100), (1, Availability::Degraded));
    }

    #[test]
    fn many_levels_spill_to_the_heap() {
        let mut levels = Levels::default();
        levels.at(1).live = 1;
        let far = levels.at(INLINE_LEVELS as u32 + 2);
        far.live = 1;
        far.healthy = 1;
        far.present = 1;
        assert_eq!(levels.slice().len(), INLINE_LEVELS + 3);
        assert_eq!(levels.slice()[1].live, 1);
        levels.balance(140, 50.0, false);
        assert_eq!(levels.slice()[INLINE_LEVELS + 2].to_healthy, 100);
        assert_eq!(
            levels.choose(50),
            (INLINE_LEVELS + 2, Availability::Healthy)
        );
    }

    /// `weighted_priority_health`: P0 a healthy host of weight 3 and a failing one of weight
    /// 1 is 75% * 1.4 = 105%, whole (by count it would be 70%); a healthy host of weight 1
    /// and a failing one of weight 3: 35%, P1 takes 65%. Panic mode still counts hosts (1 of
    /// 2 healthy is not under 50%).
    #[test]
    fn weighted_priority_health_counts_weights() {
        let weighted = |healthy: u64, failing: u64| {
            let mut levels = Levels::default();
            let p0 = levels.at(0);
            (p0.healthy, p0.live, p0.present) = (1, 2, 2);
            (p0.healthy_weight, p0.live_weight) = (healthy, healthy + failing);
            let p1 = levels.at(1);
            (p1.healthy, p1.live, p1.present) = (1, 1, 1);
            (p1.healthy_weight, p1.live_weight) = (1, 1);
            levels.balance(140, 50.0, true);
            levels
                .slice()
                .iter()
                .map(|l| (l.to_healthy, l.panic))
                .collect::<Vec<_>>()
        };
        assert_eq!(weighted(3, 1), vec![(100, false), (0, false)]);
        assert_eq!(weighted(1, 3), vec![(35, false), (65, false)]);
    }
}
