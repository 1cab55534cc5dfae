//! `request_mirror_policies` of a route, as config: which cluster gets a copy of the
//! request, and for what share of requests. The copy itself is sent by the connection
//! manager ([`crate::http::mirror`]).

use crate::config::FieldError;
use crate::config::cluster_names::ClusterNames;
use crate::config::schema::{self, FractionalDenominator};

/// One mirror policy, checked.
#[derive(Debug, Clone)]
pub struct MirrorPolicy {
    /// The cluster the copy goes to.
    pub cluster: String,
    /// Requests copied, per million (`runtime_fraction.default_value`; all without one).
    per_million: u32,
}

impl MirrorPolicy {
    /// Checks `policy` at `path`; its cluster must be one of `clusters`.
    pub fn build(
        policy: &schema::RequestMirrorPolicy,
        path: &str,
        clusters: &ClusterNames,
    ) -> Result<MirrorPolicy, FieldError> {
        if !clusters.contains(&policy.cluster) {
            return Err(FieldError::new(
                format!("{path}.cluster"),
                format!(
                    "unknown mirror cluster {:?}; defined clusters: {clusters:?}",
                    policy.cluster
                ),
            ));
        }
        let per_million = match &policy.runtime_fraction {
            None => 1_000_000,
            Some(fraction) => {
                let percent = fraction.default_value;
                let scale = match percent.denominator {
                    FractionalDenominator::HUNDRED => 10_000,
                    FractionalDenominator::TEN_THOUSAND => 100,
                    FractionalDenominator::MILLION => 1,
                };
                // Envoy caps a numerator above its denominator at the denominator.
                percent.numerator.saturating_mul(scale).min(1_000_000)
            }
        };
        Ok(MirrorPolicy {
            cluster: policy.cluster.clone(),
            per_million,
        })
    }

    /// Whether this request is copied, for a uniform `random` value.
    pub fn samples(&self, random: u32) -> bool {
        random % 1_000_000 < self.per_million
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<MirrorPolicy, FieldError> {
        let config: schema::RequestMirrorPolicy = serde_yaml_ng::from_str(yaml).unwrap();
        MirrorPolicy::build(
            &config,
            "r.route.request_mirror_policies[0]",
            &["a", "shadow"].into(),
        )
    }

    #[test]
    fn fractions_and_clusters() {
        let all = policy("{cluster: shadow}").unwrap();
        assert!((0..1000).all(|r| all.samples(r * 999)));
        let half = policy(
            "{cluster: shadow, runtime_fraction: {default_value: {numerator: 50}, runtime_key: k}, trace_sampled: true}",
        )
        .unwrap();
        assert!(half.samples(499_999) && !half.samples(500_000));
        let none =
            policy("{cluster: shadow, runtime_fraction: {default_value: {numerator: 0}}}").unwrap();
        assert!((0..1000).all(|r| !none.samples(r)));
        let tiny = policy(
            "{cluster: shadow, runtime_fraction: {default_value: {numerator: 5, denominator: MILLION}}}",
        )
        .unwrap();
        assert!(tiny.samples(4) && !tiny.samples(5));
        let e = policy("{cluster: nope}").unwrap_err();
        assert_eq!(e.path, "r.route.request_mirror_policies[0].cluster");
    }
}
