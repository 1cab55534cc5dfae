//! The cluster specs of the clusters a control plane sent, built once per cluster resource
//! and endpoint set.
//!
//! Every xDS update builds the whole config anew (see [`super::state`]); a route update on a
//! thousand-cluster control plane would copy a thousand clusters with their endpoints and read
//! each into its `ClusterSpec` again, unchanged. A held resource that did not change is the
//! same `Arc` from one update to the next, so a spec is kept here with the two resources it
//! came from and given again while both are the ones held.

use super::state::HeldResource;
use crate::config::FieldError;
use crate::config::cluster_spec::ClusterSpec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// One spec and what it was built from.
struct Built {
    cluster: Arc<HeldResource>,
    endpoints: Option<Arc<HeldResource>>,
    spec: Arc<ClusterSpec>,
}

/// The specs built, by cluster name.
#[derive(Default)]
pub(super) struct ClusterSpecs {
    built: Mutex<HashMap<String, Built>>,
}

impl std::fmt::Debug for ClusterSpecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSpecs").finish_non_exhaustive()
    }
}

impl ClusterSpecs {
    /// The spec of the cluster `name` held as `cluster` with `endpoints` (an EDS cluster's,
    /// once they came): the one built before from these very resources, or `build`'s.
    pub fn spec(
        &self,
        name: &str,
        cluster: &Arc<HeldResource>,
        endpoints: Option<&Arc<HeldResource>>,
        build: impl FnOnce() -> Result<ClusterSpec, FieldError>,
    ) -> Result<Arc<ClusterSpec>, FieldError> {
        let same = |built: &Built| {
            Arc::ptr_eq(&built.cluster, cluster)
                && match (&built.endpoints, endpoints) {
                    (Some(before), Some(now)) => Arc::ptr_eq(before, now),
                    (None, None) => true,
                    _ => false,
                }
        };
        if let Some(built) = self.lock().get(name).filter(|built| same(built)) {
            return Ok(built.spec.clone());
        }
        let spec = Arc::new(build()?);
        self.lock().insert(
            name.to_string(),
            Built {
                cluster: cluster.clone(),
                endpoints: endpoints.cloned(),
                spec: spec.clone(),
            },
        );
        Ok(spec)
    }

    /// Forgets the specs of clusters that are not `held` (removed by the control plane), so
    /// that what they were built from is not kept alive here.
    pub fn keep_only(&self, held: &dyn Fn(&str) -> bool) {
        self.lock().retain(|name, _| held(name));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Built>> {
        self.built.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::resource::{Decoded, Resource};
    use std::cell::Cell;

    fn held(yaml: &str) -> Arc<HeldResource> {
        let json: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("yaml");
        let cluster: crate::config::cluster::Cluster =
            crate::config::parse_value(json.clone()).expect("a cluster");
        Arc::new(HeldResource {
            decoded: Decoded {
                name: cluster.name.clone(),
                resource: Resource::Cluster(Box::new(cluster)),
                json: crate::xds::resource::ResourceJson::new(json),
                route_parts: None,
                same_json_as: None,
            },
            version: "1".into(),
            last_updated: std::time::SystemTime::now(),
        })
    }

    #[test]
    fn a_spec_is_built_again_only_when_its_cluster_or_endpoints_change() {
        let specs = ClusterSpecs::default();
        let builds = Cell::new(0);
        let build = |resource: &Arc<HeldResource>| {
            builds.set(builds.get() + 1);
            let Resource::Cluster(cluster) = &resource.decoded.resource else {
                unreachable!("a cluster");
            };
            crate::config::cluster::cluster_spec(cluster, "")
        };
        let a = held("{name: a, type: STATIC, load_assignment: {cluster_name: a}}");
        let endpoints = held("{name: e, type: STATIC, load_assignment: {cluster_name: e}}");
        specs.spec("a", &a, None, || build(&a)).expect("builds");
        specs.spec("a", &a, None, || build(&a)).expect("kept");
        assert_eq!(builds.get(), 1, "the same resource is built once");
        specs
            .spec("a", &a, Some(&endpoints), || build(&a))
            .expect("builds");
        assert_eq!(builds.get(), 2, "new endpoints build it again");
        let a2 = held("{name: a, type: STATIC, load_assignment: {cluster_name: a}}");
        specs
            .spec("a", &a2, Some(&endpoints), || build(&a2))
            .expect("builds");
        assert_eq!(builds.get(), 3, "a resource sent again builds it again");
        specs.keep_only(&|name| name != "a");
        assert!(specs.lock().is_empty(), "a removed cluster is forgotten");
    }
}
