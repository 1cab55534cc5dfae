//! Which cluster a forwarding route sends one request to: `weighted_clusters` (a random pick by
//! weight, per request) or `cluster_header` (the cluster a request header names).

use super::response_headers::{self, HeaderToAdd};
use crate::config::FieldError;
use crate::config::cluster_names::ClusterNames;
use crate::config::schema;
use http::{HeaderMap, HeaderName};

/// How a route that does not name one cluster picks it per request.
#[derive(Debug, Clone)]
pub enum ClusterChoice {
    /// `weighted_clusters`.
    Weighted(WeightedClusters),
    /// `cluster_header`: the cluster named by this header's first value; none (or an empty
    /// value) names no cluster, which Envoy answers as an unknown one.
    Header(HeaderName),
}

/// `weighted_clusters`, as cumulative weights.
#[derive(Debug, Clone)]
pub struct WeightedClusters {
    /// (cluster, sum of the weights up to and with it), in config order.
    bounds: Vec<(String, u64)>,
    /// Each cluster's `request_headers_to_add`, in the same order.
    headers: Vec<Vec<HeaderToAdd>>,
    /// The sum of every weight (> 0).
    total: u64,
}

impl WeightedClusters {
    /// Builds `weighted_clusters` at `path`, each cluster checked against `clusters`.
    pub fn build(
        config: &schema::WeightedClusters,
        path: &str,
        clusters: &ClusterNames,
    ) -> Result<WeightedClusters, FieldError> {
        if config.clusters.is_empty() {
            return Err(FieldError::new(
                format!("{path}.clusters"),
                "at least one cluster is needed",
            ));
        }
        let mut total = 0u64;
        let mut bounds = Vec::with_capacity(config.clusters.len());
        let mut headers = Vec::with_capacity(config.clusters.len());
        for (i, cluster) in config.clusters.iter().enumerate() {
            let adds_path = format!("{path}.clusters[{i}].request_headers_to_add");
            if let Some(at) = cluster
                .request_headers_to_add
                .iter()
                .position(|option| option.header.value.contains('%'))
            {
                // Envoy reads `%...%` as a command operator; weir does not have them here.
                return Err(FieldError::new(
                    format!("{adds_path}[{at}].header.value"),
                    "command operators (%...%) are not supported here",
                ));
            }
            headers.push(response_headers::build(
                &cluster.request_headers_to_add,
                &adds_path,
            )?);
            if !clusters.contains(&cluster.name) {
                return Err(FieldError::new(
                    format!("{path}.clusters[{i}].name"),
                    format!(
                        "unknown weighted cluster {:?}; defined clusters: {clusters:?}",
                        cluster.name
                    ),
                ));
            }
            total += u64::from(cluster.weight);
            bounds.push((cluster.name.clone(), total));
        }
        if total == 0 {
            return Err(FieldError::new(
                format!("{path}.clusters"),
                "the sum of the weights must be greater than 0",
            ));
        }
        Ok(WeightedClusters {
            bounds,
            headers,
            total,
        })
    }

    /// The cluster for a uniform `random` value, as Envoy picks it: `random % total` falls in
    /// one cluster's share, the shares laid out in config order.
    pub fn pick(&self, random: u64) -> &str {
        self.bounds
            .get(self.pick_index(random))
            .map_or("", |(name, _)| name.as_str())
    }

    fn pick_index(&self, random: u64) -> usize {
        let point = random % self.total;
        self.bounds
            .iter()
            .position(|(_, bound)| point < *bound)
            .unwrap_or(self.bounds.len().saturating_sub(1))
    }

    /// The first cluster (what a Wasm filter's `cluster_name` property shows before the pick).
    pub fn first(&self) -> &str {
        self.bounds.first().map_or("", |(name, _)| name.as_str())
    }
}

impl ClusterChoice {
    /// The cluster for one request with `headers`.
    pub fn cluster<'a>(&'a self, headers: &'a HeaderMap) -> &'a str {
        self.pick(headers).0
    }

    /// The weighted pick already made for this request (`picked`, by name), with its headers
    /// to add; `None` when this is not a weighted choice with a cluster of that name (a
    /// `cluster_header` choice reads its header again).
    pub fn repick<'a>(&'a self, picked: &'a str) -> Option<(&'a str, &'a [HeaderToAdd])> {
        match self {
            ClusterChoice::Weighted(weighted) => {
                let i = weighted
                    .bounds
                    .iter()
                    .position(|(name, _)| name == picked)?;
                let adds = weighted.headers.get(i)?;
                Some((picked, adds.as_slice()))
            }
            ClusterChoice::Header(_) => None,
        }
    }

    /// The cluster for one request with `headers`, and the headers to add to it.
    pub fn pick<'a>(&'a self, headers: &'a HeaderMap) -> (&'a str, &'a [HeaderToAdd]) {
        match self {
            ClusterChoice::Weighted(weighted) => {
                let i = weighted.pick_index(rand::random());
                match (weighted.bounds.get(i), weighted.headers.get(i)) {
                    (Some((name, _)), Some(adds)) => (name.as_str(), adds.as_slice()),
                    _ => ("", &[]),
                }
            }
            ClusterChoice::Header(name) => (
                headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or(""),
                &[],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weighted(yaml: &str) -> Result<WeightedClusters, FieldError> {
        let config: schema::WeightedClusters = serde_yaml_ng::from_str(yaml).unwrap();
        WeightedClusters::build(
            &config,
            "r.route.weighted_clusters",
            &["a", "b", "c"].into(),
        )
    }

    #[test]
    fn shares_follow_the_weights() {
        let w = weighted("{clusters: [{name: a, weight: 80}, {name: b, weight: 20}]}").unwrap();
        let picks: Vec<&str> = (0..100).map(|r| w.pick(r)).collect();
        assert_eq!(picks.iter().filter(|c| **c == "a").count(), 80);
        assert_eq!(picks.iter().filter(|c| **c == "b").count(), 20);
        assert_eq!(w.pick(79), "a");
        assert_eq!(w.pick(80), "b");
        assert_eq!(w.pick(u64::MAX), w.pick(u64::MAX % 100));
        let zero = weighted("{clusters: [{name: a, weight: 0}, {name: b, weight: 3}]}").unwrap();
        assert!((0..30).all(|r| zero.pick(r) == "b"));
    }

    #[test]
    fn random_picks_land_near_the_weights() {
        let w = weighted("{clusters: [{name: a, weight: 80}, {name: b, weight: 20}]}").unwrap();
        let choice = ClusterChoice::Weighted(w);
        let headers = HeaderMap::new();
        let b = (0..10_000)
            .filter(|_| choice.cluster(&headers) == "b")
            .count();
        assert!((1_700..=2_300).contains(&b), "{b} of 10000 went to b");
    }

    #[test]
    fn an_earlier_weighted_pick_is_kept() {
        let w = weighted(
            "{clusters: [{name: a, weight: 1}, {name: b, weight: 1, request_headers_to_add: [{header: {key: x-w, value: b}}]}]}",
        )
        .unwrap();
        let choice = ClusterChoice::Weighted(w);
        let (cluster, adds) = choice.repick("b").unwrap();
        assert_eq!((cluster, adds.len()), ("b", 1));
        assert!(choice.repick("zz").is_none());
        let header = ClusterChoice::Header(HeaderName::from_static("x-cluster"));
        assert!(header.repick("b").is_none());
    }

    #[test]
    fn the_header_names_the_cluster() {
        let choice = ClusterChoice::Header(HeaderName::from_static("x-cluster"));
        let mut headers = HeaderMap::new();
        assert_eq!(choice.cluster(&headers), "");
        headers.insert("x-cluster", "b".parse().unwrap());
        assert_eq!(choice.cluster(&headers), "b");
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = weighted("{clusters: [{name: a, weight: 1}, {name: zz, weight: 1}]}").unwrap_err();
        assert_eq!(e.path, "r.route.weighted_clusters.clusters[1].name");
        let e = weighted("{clusters: [{name: a, weight: 0}]}").unwrap_err();
        assert_eq!(e.path, "r.route.weighted_clusters.clusters");
        let e = weighted("{clusters: []}").unwrap_err();
        assert_eq!(e.path, "r.route.weighted_clusters.clusters");
        // Envoy 1.40 takes a total_weight that is not the sum (deprecated, unused).
        assert!(
            weighted(
                "{total_weight: 90, clusters: [{name: a, weight: 80}, {name: b, weight: 20}]}"
            )
            .is_ok()
        );
        let e = weighted(
            "{clusters: [{name: a, weight: 1, request_headers_to_add: [{header: {key: x, value: '%REQ(y)%'}}]}]}",
        )
        .unwrap_err();
        assert_eq!(
            e.path,
            "r.route.weighted_clusters.clusters[0].request_headers_to_add[0].header.value"
        );
        let missing: Result<schema::WeightedClusters, _> =
            serde_yaml_ng::from_str("{clusters: [{name: a}]}");
        assert!(missing.unwrap_err().to_string().contains("weight"));
    }
}
