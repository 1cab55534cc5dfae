//! One xDS resource, read into weir's config schema (see the module docs of [`super`]).

use crate::config::cluster::{Cluster, ClusterLoadAssignment, cluster_spec};
use crate::config::cluster_names::ClusterNames;
use crate::config::ecds::{ExtensionConfig, extension_config};
use crate::config::http_manager::RouteSource;
use crate::config::listener::{Listener, NetworkFilterConfig};
use crate::config::route::RouteConfiguration;
use crate::config::{FieldError, parse_value, parse_value_ref};
use crate::route::RouteTable;

/// The resource types weir subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    RouteConfiguration,
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    ClusterLoadAssignment,
    /// ECDS: `envoy.config.core.v3.TypedExtensionConfig`, the config of an HTTP or network
    /// filter written with `config_discovery`.
    ExtensionConfig,
}

impl ResourceType {
    /// Every type, in the order Envoy subscribes: clusters, endpoints, listeners, routes,
    /// then the filter configs listeners ask for.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        ResourceType::ExtensionConfig,
    ];

    /// The type URL of its resources.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::RouteConfiguration => {
                "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
            }
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::ClusterLoadAssignment => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::ExtensionConfig => {
                "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
            }
        }
    }

    /// The type whose resources have `type_url`.
    pub fn from_type_url(type_url: &str) -> Option<ResourceType> {
        ResourceType::ALL
            .into_iter()
            .find(|kind| kind.type_url() == type_url)
    }

    /// Its short name in stats and logs: `lds`, `rds`, `cds`, `eds`, `ecds`.
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Listener => "lds",
            ResourceType::RouteConfiguration => "rds",
            ResourceType::Cluster => "cds",
            ResourceType::ClusterLoadAssignment => "eds",
            ResourceType::ExtensionConfig => "ecds",
        }
    }

    /// Whether it is subscribed as a wildcard (all the control plane has: listeners, clusters)
    /// rather than by name (routes, endpoints and filter configs, named by listeners and
    /// clusters).
    pub fn wildcard(self) -> bool {
        matches!(self, ResourceType::Listener | ResourceType::Cluster)
    }
}

/// One resource read into the config schema.
#[derive(Debug, Clone)]
pub enum Resource {
    /// A listener, read as a `static_resources.listeners[]` entry is.
    Listener(Box<crate::config::listener::Listener>),
    /// A route configuration, read as an HCM's `route_config` is.
    RouteConfiguration(std::sync::Arc<crate::config::route::RouteConfiguration>),
    /// A cluster, read as a `static_resources.clusters[]` entry is.
    Cluster(Box<crate::config::cluster::Cluster>),
    /// A cluster's endpoints, read as a cluster's `load_assignment` is.
    ClusterLoadAssignment(Box<crate::config::cluster::ClusterLoadAssignment>),
    /// An HTTP filter's config, read as the filter's `typed_config` is.
    ExtensionConfig(Box<ExtensionConfig>),
}

/// A resource decoded and read: its name, its schema value and its JSON (for `/config_dump`).
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Its name (`name` of a listener, route configuration or cluster; `cluster_name` of a
    /// load assignment).
    pub name: String,
    /// What it says.
    pub resource: Resource,
    /// Its fields in Envoy's JSON shape, as `/config_dump` shows them (shared: every
    /// snapshot's dump holds it while the resource is held, without a copy).
    pub json: std::sync::Arc<ResourceJson>,
    /// A route configuration's protobuf cut into its parts, for the next version of it to
    /// reuse its unchanged routes (see [`super::route_reuse`]); `None` for other resources.
    pub route_parts: Option<std::sync::Arc<super::route_reuse::RouteParts>>,
    /// A route configuration read reusing a version in force: that version (by its parts)
    /// and whether the two say the same (their JSON is equal), found from the parts that
    /// changed rather than from the whole JSON of both.
    pub same_json_as: Option<(std::sync::Weak<super::route_reuse::RouteParts>, bool)>,
}

impl Decoded {
    /// Whether this resource says what `held`, a version of it, says: their JSON is equal.
    pub fn same_as(&self, held: &Decoded) -> bool {
        if let (Some((parts, same)), Some(held_parts)) = (&self.same_json_as, &held.route_parts)
            && std::sync::Weak::ptr_eq(parts, &std::sync::Arc::downgrade(held_parts))
        {
            return *same;
        }
        self.json.get() == held.json.get()
    }
}

impl crate::snapshot::DumpJson for ResourceJson {
    fn json(&self) -> std::sync::Arc<serde_json::Value> {
        self.get()
    }
}

/// A resource's JSON: written when the resource was read, or, for a route configuration read
/// reusing its version in force (see [`super::route_reuse`]), when first asked for, from its
/// protobuf: a route update reads one route of thousands, and its JSON is only for
/// `/config_dump`, which is rare.
#[derive(Debug)]
pub struct ResourceJson {
    value: std::sync::OnceLock<std::sync::Arc<serde_json::Value>>,
    /// What it is written from when first asked for.
    from: Option<(ResourceType, bytes::Bytes)>,
}

impl ResourceJson {
    /// The JSON `value`, written already.
    pub fn new(value: serde_json::Value) -> std::sync::Arc<ResourceJson> {
        std::sync::Arc::new(ResourceJson {
            value: std::sync::OnceLock::from(std::sync::Arc::new(value)),
            from: None,
        })
    }

    /// The JSON of the resource of `kind` whose protobuf, known to decode, is `bytes`; written
    /// when first asked for.
    pub fn later(kind: ResourceType, bytes: bytes::Bytes) -> std::sync::Arc<ResourceJson> {
        std::sync::Arc::new(ResourceJson {
            value: std::sync::OnceLock::new(),
            from: Some((kind, bytes)),
        })
    }

    /// The JSON. Written from bytes that decoded once, so it decodes again; were it not to,
    /// the error is shown in its place.
    pub fn get(&self) -> std::sync::Arc<serde_json::Value> {
        self.value
            .get_or_init(|| {
                let Some((kind, bytes)) = &self.from else {
                    return std::sync::Arc::new(serde_json::Value::Null);
                };
                let type_name = kind
                    .type_url()
                    .strip_prefix("type.googleapis.com/")
                    .unwrap_or(kind.type_url());
                std::sync::Arc::new(
                    super::proto::to_json(type_name, bytes)
                        .unwrap_or_else(|error| serde_json::json!({"error": error.to_string()})),
                )
            })
            .clone()
    }
}

/// Decodes the protobuf `bytes` of a resource of `kind` and reads it into the schema; the
/// error names the field inside the resource, as `weir validate` would for the same fields in
/// a file.
///
/// Beyond the schema, the checks that need nothing but the resource run here: a cluster is
/// read into its `ClusterSpec`, a load assignment's endpoints are checked as a cluster's are,
/// a route configuration is built (all but its cluster names, which [`check_routes`] checks
/// against the clusters known), and each HTTP connection manager of a listener must have
/// exactly one of `route_config` and `rds`.
pub fn decode(kind: ResourceType, bytes: &[u8]) -> Result<Decoded, FieldError> {
    decode_reusing(kind, &bytes::Bytes::copy_from_slice(bytes), &|_| None)
}

/// [`decode`], where a route configuration reuses the unchanged routes of `previous(name)`,
/// the version of that name in force (see [`super::route_reuse`]): the result is the same,
/// and so is any error.
pub fn decode_reusing(
    kind: ResourceType,
    bytes: &bytes::Bytes,
    previous: &dyn Fn(&str) -> Option<Decoded>,
) -> Result<Decoded, FieldError> {
    if kind == ResourceType::RouteConfiguration
        && let Some((decoded, reused)) = super::route_reuse::decode(bytes, previous)
    {
        tracing::debug!(
            name = %decoded.name,
            decoded = reused.decoded,
            reused = reused.read,
            reused_built = reused.built,
            "xds: route configuration read reusing the unchanged routes of the version in force"
        );
        return Ok(decoded);
    }
    let type_name = kind
        .type_url()
        .strip_prefix("type.googleapis.com/")
        .unwrap_or(kind.type_url());
    let json = super::proto::to_json(type_name, bytes).map_err(|e| FieldError::new(".", e))?;
    let name_field = match kind {
        ResourceType::ClusterLoadAssignment => "cluster_name",
        _ => "name",
    };
    let name = match json.get(name_field) {
        Some(serde_json::Value::String(name)) if !name.is_empty() => name.clone(),
        _ => {
            return Err(FieldError::new(
                name_field,
                format!("a {} resource needs a {name_field}", kind.short_name()),
            ));
        }
    };
    let resource = match kind {
        ResourceType::Listener => {
            let listener: Listener = parse_value_ref(&json)?;
            check_listener(&listener)?;
            Resource::Listener(Box::new(listener))
        }
        ResourceType::RouteConfiguration => {
            let routes = std::sync::Arc::new(parse_value_ref::<RouteConfiguration>(&json)?);
            // Everything but the cluster names (see `check_routes`); the table built is kept
            // for the configs built from this resource while it is held.
            crate::route::shared::unvalidated(&routes, "").map_err(relative)?;
            Resource::RouteConfiguration(routes)
        }
        ResourceType::Cluster => {
            let cluster: Cluster = parse_value_ref(&json)?;
            cluster_spec(&cluster, "").map_err(relative)?;
            Resource::Cluster(Box::new(cluster))
        }
        ResourceType::ClusterLoadAssignment => {
            let assignment: ClusterLoadAssignment = parse_value_ref(&json)?;
            check_endpoints(&json)?;
            Resource::ClusterLoadAssignment(Box::new(assignment))
        }
        ResourceType::ExtensionConfig => {
            Resource::ExtensionConfig(Box::new(extension_config(&json)?))
        }
    };
    let route_parts = match kind {
        ResourceType::RouteConfiguration => super::route_reuse::RouteParts::of(bytes),
        _ => None,
    };
    Ok(Decoded {
        name,
        resource,
        json: ResourceJson::new(json),
        route_parts,
        same_json_as: None,
    })
}

/// Checks the cluster names of an RDS route configuration against `clusters` where it asks
/// for it (`validate_clusters: true`; Envoy does not check routes from RDS otherwise, and a
/// request to a missing cluster gets 503 `NC`). The path is relative to the resource.
pub fn check_routes(
    routes: &RouteConfiguration,
    clusters: &ClusterNames,
) -> Result<(), FieldError> {
    let validate = routes
        .validate_clusters
        .unwrap_or(RouteSource::Rds.validates_clusters_by_default());
    RouteTable::build_validating(routes, "", clusters, validate)
        .map(|_| ())
        .map_err(relative)
}

/// Each HTTP connection manager of `listener` has exactly one of `route_config` and `rds`,
/// and an inline route table builds (all but its cluster names, checked with the clusters
/// when the config is assembled).
fn check_listener(listener: &Listener) -> Result<(), FieldError> {
    for (c, chain) in listener.filter_chains.iter().enumerate() {
        for (f, filter) in chain.filters.iter().enumerate() {
            if let NetworkFilterConfig::HttpConnectionManager(hcm) = &filter.config {
                let path = format!("filter_chains[{c}].filters[{f}].typed_config");
                hcm.route_source(&path)?;
                if let Some(routes) = &hcm.route_config {
                    RouteTable::build_validating(
                        routes,
                        &format!("{path}.route_config"),
                        &ClusterNames::default(),
                        false,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// A load assignment's endpoints, checked as a cluster's `load_assignment` is (IP literals,
/// ports, the policy), with paths relative to the assignment.
fn check_endpoints(json: &serde_json::Value) -> Result<(), FieldError> {
    let cluster = serde_json::json!({
        "name": json.get("cluster_name").cloned().unwrap_or_default(),
        "type": "EDS",
        "eds_cluster_config": {"eds_config": {"ads": {}}},
        "load_assignment": json,
    });
    let cluster: Cluster = parse_value(cluster)?;
    cluster_spec(&cluster, "").map(|_| ()).map_err(|error| {
        let path = error
            .path
            .strip_prefix(".load_assignment.")
            .unwrap_or(error.path.trim_start_matches('.'))
            .to_string();
        FieldError::new(path, error.message)
    })
}

/// An error of a check run with an empty path prefix (`.field`): the path without the dot.
fn relative(error: FieldError) -> FieldError {
    match error.path.strip_prefix('.') {
        Some(path) if !path.is_empty() => FieldError::new(path.to_string(), error.message),
        _ => FieldError::new(".", error.message),
    }
}

#[cfg(test)]
mod tests;
