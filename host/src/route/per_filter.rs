//! Which HTTP filters a route turns off or on (`typed_per_filter_config` with
//! `envoy.config.route.v3.FilterConfig`, read by [`crate::config::per_filter`]), merged
//! over the levels once when the table is built: the route configuration's, the virtual
//! host's, the route's, and per weighted cluster its own; the most specific level that names
//! a filter decides (Envoy's rule for `disabled`).

use crate::config::per_filter::PerFilterConfig;

/// The filters a route says something of: (filter name, disabled), sorted by name.
type Decisions = Box<[(Box<str>, bool)]>;

/// What a route says of its filters (see the module docs). Empty for most routes.
#[derive(Debug, Clone, Default)]
pub struct FilterOverrides {
    /// Merged over the route configuration, the virtual host and the route.
    route: Decisions,
    /// Per weighted cluster (by name), its own: they win over `route` for requests that
    /// went to that cluster.
    clusters: Box<[(Box<str>, Decisions)]>,
}

impl FilterOverrides {
    /// Merges `levels`, least specific first, and the weighted clusters' own.
    pub fn build<'a>(
        levels: &[&PerFilterConfig],
        clusters: impl Iterator<Item = (&'a str, &'a PerFilterConfig)>,
    ) -> FilterOverrides {
        let route = merge(levels);
        let clusters = clusters
            .filter(|(_, config)| !config.is_empty())
            .map(|(name, config)| (Box::from(name), merge(&[config])))
            .collect();
        FilterOverrides { route, clusters }
    }

    /// Whether the route says nothing of any filter.
    pub fn is_empty(&self) -> bool {
        self.route.is_empty() && self.clusters.is_empty()
    }

    /// Whether `filter` is turned off (`Some(true)`) or on (`Some(false)`) for a request of
    /// this route that went to `cluster` (a weighted cluster's pick), or `None` when no
    /// level says. Allocates nothing.
    pub fn disabled(&self, filter: &str, cluster: Option<&str>) -> Option<bool> {
        let of_cluster = cluster.and_then(|cluster| {
            self.clusters
                .iter()
                .find(|(name, _)| &**name == cluster)
                .and_then(|(_, decisions)| lookup(decisions, filter))
        });
        of_cluster.or_else(|| lookup(&self.route, filter))
    }
}

fn lookup(decisions: &Decisions, filter: &str) -> Option<bool> {
    decisions
        .binary_search_by(|(name, _)| (**name).cmp(filter))
        .ok()
        .map(|i| decisions[i].1)
}

/// The decisions of `levels`, least specific first: a later level's entry replaces an
/// earlier one's.
fn merge(levels: &[&PerFilterConfig]) -> Decisions {
    let mut merged = std::collections::BTreeMap::new();
    for level in levels {
        for (name, entry) in &level.0 {
            merged.insert(name.as_str(), entry.disabled);
        }
    }
    merged
        .into_iter()
        .map(|(name, disabled)| (Box::from(name), disabled))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::per_filter::FilterOverride;

    fn level(entries: &[(&str, bool)]) -> PerFilterConfig {
        PerFilterConfig(
            entries
                .iter()
                .map(|(name, disabled)| {
                    (
                        name.to_string(),
                        FilterOverride {
                            disabled: *disabled,
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn the_most_specific_level_decides() {
        let config = level(&[("a", true), ("b", true)]);
        let vhost = level(&[("b", false)]);
        let route = level(&[("c", true)]);
        let cluster = level(&[("a", false)]);
        let overrides = FilterOverrides::build(
            &[&config, &vhost, &route],
            [("blue", &cluster), ("green", &PerFilterConfig::default())].into_iter(),
        );
        assert_eq!(overrides.disabled("a", None), Some(true));
        assert_eq!(overrides.disabled("b", None), Some(false));
        assert_eq!(overrides.disabled("c", None), Some(true));
        assert_eq!(overrides.disabled("d", None), None);
        assert_eq!(overrides.disabled("a", Some("blue")), Some(false));
        assert_eq!(overrides.disabled("a", Some("green")), Some(true));
        assert!(!overrides.is_empty());
        assert!(FilterOverrides::build(&[], std::iter::empty()).is_empty());
    }
}
