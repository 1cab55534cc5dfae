//! Envoy's per-extension-config ECDS stats: `extension_config_discovery.<stat_prefix>.<name>.*`
//! (see [`crate::stats::EcdsStats`]), counted as Envoy 1.40 counts them.
//!
//! Envoy keeps one subscription per extension config a filter asks for, with a stats scope
//! named by the kind of filter (`http_filter`, `network_filter`) and the config's name. Its
//! counters move so (each checked against Envoy 1.40 in `tests/tests/xds_ecds_stats.rs`):
//!
//! - the subscription's start: `update_attempt`;
//! - a response that carries the config, applied: `update_attempt`, `update_success`,
//!   `version`, `version_text`, `update_time`, `update_duration`, and `config_reload` when
//!   the config changed (a config equal to
//!   the one in force reloads nothing), or was removed (delta);
//! - a response of the type refused (NACK): every ECDS subscription of the stream counts
//!   `update_attempt`, `update_rejected` and `config_fail`, whether or not the response
//!   carried its config; over delta, a subscription the response carried a config for counts
//!   one more `update_attempt` when the response decoded (Envoy counts the attempt before it
//!   applies a delta update, which a response that does not decode never reaches);
//! - the initial fetch timed out: `update_attempt`, `init_fetch_timeout`, `config_fail`;
//! - the ADS stream failed (lost, or a connection attempt failed): `update_attempt`,
//!   `update_failure`;
//! - a filter made (its listener added or changed by LDS) that cannot take the config in
//!   force (its type is not one the filter lists), and so runs without it:
//!   `config_conflict`. An ECDS update that a filter cannot take is refused instead.
//!
//! A response that carries nothing for a subscription leaves its stats alone.

use crate::stats::{EcdsNameStats, EcdsStats};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

/// Envoy's `<stat_prefix>` for an HTTP filter's extension config.
pub const HTTP_FILTER: &str = "http_filter";
/// Envoy's `<stat_prefix>` for a (downstream) network filter's extension config.
pub const NETWORK_FILTER: &str = "network_filter";

/// What is asked for: each extension config name with the kinds of filter asking for it.
pub type Asked = BTreeMap<String, BTreeSet<&'static str>>;

/// The ECDS subscriptions (one per name and kind of filter) and their stats.
#[derive(Default)]
pub struct EcdsSubscriptions {
    by_name: Mutex<BTreeMap<String, Vec<(&'static str, EcdsNameStats)>>>,
}

impl std::fmt::Debug for EcdsSubscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("EcdsSubscriptions")
            .field("names", &names)
            .finish()
    }
}

impl EcdsSubscriptions {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Vec<(&'static str, EcdsNameStats)>>> {
        self.by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows what is `asked` for now: a subscription new to it starts (its stats appear,
    /// `update_attempt` counts its start); one no longer asked for ends, its stats with it.
    pub fn follow(&self, asked: &Asked) {
        let stats = EcdsStats::global();
        let mut by_name = self.lock();
        by_name.retain(|name, scopes| {
            let still = asked.get(name);
            scopes.retain(|(prefix, _)| {
                let kept = still.is_some_and(|prefixes| prefixes.contains(prefix));
                if !kept {
                    stats.remove(prefix, name);
                }
                kept
            });
            !scopes.is_empty()
        });
        for (name, prefixes) in asked {
            let scopes = by_name.entry(name.clone()).or_default();
            for prefix in prefixes {
                if scopes.iter().any(|(known, _)| known == prefix) {
                    continue;
                }
                let scope = stats.of(prefix, name);
                scope.update_attempt.inc();
                scopes.push((prefix, scope));
            }
        }
    }

    /// A response applied: each subscription to one of the names it `delivered` (added,
    /// changed or removed) counts it, and reloads when its name is among the `changed`.
    /// `version` is the response's version; applying it `took` that long.
    pub fn applied<'a>(
        &self,
        delivered: impl IntoIterator<Item = &'a String>,
        changed: &BTreeSet<String>,
        version: &str,
        took: std::time::Duration,
    ) {
        let hash = super::state::version_hash(version);
        let now = super::state::unix_millis();
        let by_name = self.lock();
        for name in delivered {
            for (_, scope) in by_name.get(name).into_iter().flatten() {
                scope.update_attempt.inc();
                scope.update_success.inc();
                scope.version.set(hash);
                scope.version_text.set(version);
                scope.update_time.set(now);
                scope.update_duration.observe(took.as_secs_f64() * 1000.0);
                if changed.contains(name) {
                    scope.config_reload.inc();
                }
            }
        }
    }

    /// A response refused: every subscription counts the refusal; those whose names are in
    /// `handed` (a delta response's names: Envoy hands each its part before one refuses)
    /// count one more attempt.
    pub fn rejected(&self, handed: &BTreeSet<String>) {
        for (name, scopes) in self.lock().iter() {
            for (_, scope) in scopes {
                if handed.contains(name) {
                    scope.update_attempt.inc();
                }
                scope.update_attempt.inc();
                scope.update_rejected.inc();
                scope.config_fail.inc();
            }
        }
    }

    /// The initial fetch of `name` timed out.
    pub fn timed_out(&self, name: &str) {
        for (_, scope) in self.lock().get(name).into_iter().flatten() {
            scope.update_attempt.inc();
            scope.init_fetch_timeout.inc();
            scope.config_fail.inc();
        }
    }

    /// The ADS stream failed: every subscription counts it.
    pub fn stream_failed(&self) {
        for (_, scope) in self.lock().values().flatten() {
            scope.update_attempt.inc();
            scope.update_failure.inc();
        }
    }

    /// A filter of kind `prefix` could not take the config of `name` in force. Counted in
    /// that kind's scope, or where no filter of that kind subscribed yet, in the scope of
    /// the kind that did (Envoy's subscription is one per name and source, its stats scope
    /// named by the filter that made it).
    pub fn conflict(&self, name: &str, prefix: &str) {
        let by_name = self.lock();
        let Some(scopes) = by_name.get(name) else {
            return;
        };
        let scope = scopes
            .iter()
            .find(|(known, _)| *known == prefix)
            .or_else(|| scopes.first());
        if let Some((_, scope)) = scope {
            scope.config_conflict.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `/stats` values of `name` under `prefix`, in the order of [`EcdsNameStats`]'s
    /// counters: reload, fail, conflict, attempt, success, rejected, failure, timeout.
    fn counts(prefix: &str, name: &str) -> [u64; 8] {
        let scope = EcdsStats::global().of(prefix, name);
        [
            scope.config_reload.get(),
            scope.config_fail.get(),
            scope.config_conflict.get(),
            scope.update_attempt.get(),
            scope.update_success.get(),
            scope.update_rejected.get(),
            scope.update_failure.get(),
            scope.init_fetch_timeout.get(),
        ]
    }

    fn asked(pairs: &[(&str, &'static str)]) -> Asked {
        let mut asked = Asked::new();
        for (name, prefix) in pairs {
            asked.entry((*name).to_owned()).or_default().insert(*prefix);
        }
        asked
    }

    #[test]
    fn a_subscription_counts_its_start_updates_refusals_and_timeouts_as_envoy() {
        let subs = EcdsSubscriptions::default();
        let (a, b) = ("unit-ecds-a", "unit-ecds-b");
        subs.follow(&asked(&[(a, HTTP_FILTER), (b, HTTP_FILTER)]));
        // Asked again: no new start.
        subs.follow(&asked(&[(a, HTTP_FILTER), (b, HTTP_FILTER)]));
        assert_eq!(counts(HTTP_FILTER, a), [0, 0, 0, 1, 0, 0, 0, 0]);
        subs.timed_out(b);
        assert_eq!(counts(HTTP_FILTER, b), [0, 1, 0, 2, 0, 0, 0, 1]);
        let changed = BTreeSet::from([a.to_owned()]);
        let took = std::time::Duration::from_millis(3);
        subs.applied([&a.to_owned()], &changed, "7", took);
        assert_eq!(counts(HTTP_FILTER, a), [1, 0, 0, 2, 1, 0, 0, 0]);
        let scope = EcdsStats::global().of(HTTP_FILTER, a);
        assert_eq!(scope.version_text.get(), "7");
        assert_eq!(scope.version.get(), super::super::state::version_hash("7"));
        assert_eq!(scope.update_duration.get_sample_count(), 1);
        assert_eq!(
            EcdsStats::global().of(HTTP_FILTER, b).version_text.get(),
            ""
        );
        // The same config again: applied, nothing to reload.
        subs.applied([&a.to_owned()], &BTreeSet::new(), "8", took);
        assert_eq!(counts(HTTP_FILTER, a), [1, 0, 0, 3, 2, 0, 0, 0]);
        // A delta response for `a` refused: every subscription counts it, `a` twice.
        subs.rejected(&BTreeSet::from([a.to_owned()]));
        assert_eq!(counts(HTTP_FILTER, a), [1, 1, 0, 5, 2, 1, 0, 0]);
        assert_eq!(counts(HTTP_FILTER, b), [0, 2, 0, 3, 0, 1, 0, 1]);
        subs.stream_failed();
        assert_eq!(counts(HTTP_FILTER, b), [0, 2, 0, 4, 0, 1, 1, 1]);
        // A network filter's conflict over a name only HTTP filters subscribed to counts in
        // their scope.
        subs.conflict(a, NETWORK_FILTER);
        subs.conflict(a, HTTP_FILTER);
        assert_eq!(counts(HTTP_FILTER, a), [1, 1, 2, 6, 2, 1, 1, 0]);
        subs.conflict("unit-ecds-unknown", HTTP_FILTER);
    }

    #[test]
    fn a_name_no_longer_asked_for_loses_its_stats_and_starts_anew() {
        let subs = EcdsSubscriptions::default();
        let name = "unit-ecds-gone";
        subs.follow(&asked(&[(name, NETWORK_FILTER), (name, HTTP_FILTER)]));
        let took = std::time::Duration::ZERO;
        subs.applied(
            [&name.to_owned()],
            &BTreeSet::from([name.to_owned()]),
            "1",
            took,
        );
        assert_eq!(counts(NETWORK_FILTER, name)[..5], [1, 0, 0, 2, 1]);
        subs.follow(&asked(&[(name, HTTP_FILTER)]));
        let families = crate::stats::Stats::global().registry().gather();
        let listed = |prefix: &str| {
            families.iter().any(|family| {
                family.name() == "weir_extension_config_discovery_update_attempt"
                    && family.get_metric().iter().any(|metric| {
                        let labels: Vec<(&str, &str)> = metric
                            .get_label()
                            .iter()
                            .map(|pair| (pair.name(), pair.value()))
                            .collect();
                        labels.contains(&("extension_config_name", name))
                            && labels.contains(&("stat_prefix", prefix))
                    })
            })
        };
        assert!(!listed(NETWORK_FILTER), "dropped with its subscription");
        assert!(listed(HTTP_FILTER), "still asked for");
        subs.follow(&asked(&[(name, NETWORK_FILTER), (name, HTTP_FILTER)]));
        assert_eq!(counts(NETWORK_FILTER, name), [0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(counts(HTTP_FILTER, name)[..5], [1, 0, 0, 2, 1]);
    }
}
