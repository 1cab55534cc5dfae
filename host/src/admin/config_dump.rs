//! `GET /config_dump` in Envoy's shape, so tools that read Envoy's dump read weir's.
//!
//! `configs[]` holds, in Envoy's order, a `BootstrapConfigDump` (the file as loaded), a
//! `ClustersConfigDump` (`static_clusters[].cluster`), a `ListenersConfigDump`
//! (`static_listeners[].listener`) and a `RoutesConfigDump` (`static_route_configs[]`: each
//! `route_config` written inline in an HTTP connection manager). Every resource carries its
//! Envoy `@type`. Resources from a control plane (xDS) are in the `dynamic_*` lists, each with
//! its `version_info` and `last_updated`, and each dump's `version_info` is the version of the
//! response applied last; with `?include_eds` an `EndpointsConfigDump` follows, holding the
//! endpoints from EDS. HTTP filter configs from ECDS are in an `EcdsConfigDump` between the
//! clusters and the listeners (`ecds_filters[]`: `{version_info, ecds_filter, last_updated}`,
//! the filter a `TypedExtensionConfig`; no dump-wide `version_info`), as Envoy places it,
//! once a filter asks for one (empty, `ecds_filters` left out, until one comes). Query
//! parameters as Envoy's:
//! - `resource=NAME`: only the entries of that repeated field (`static_clusters`,
//!   `static_listeners`, `static_route_configs`, `dynamic_active_clusters`, ...), each with
//!   the entry's own `@type` (e.g. `...ClustersConfigDump.StaticCluster`);
//! - `mask=a.b,c`: only those field paths of each config (or of each resource entry).

use crate::snapshot::{DynamicDump, DynamicEntry};
use serde_json::{Map, Value, json};

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";
const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// What is dumped: the file as loaded and what the control plane sent.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The config file as JSON.
    pub bootstrap: &'a Value,
    /// The resources from the control plane, if weir runs xDS.
    pub dynamic: Option<&'a DynamicDump>,
    /// `?include_eds`: add the endpoints dump.
    pub include_eds: bool,
}

/// Why a dump cannot be made as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DumpError {
    /// `resource=` names no repeated field of any dump.
    #[error("no resource named {0:?} in any config dump")]
    UnknownResource(String),
}

/// The dump of `bootstrap` (the config file as loaded, as JSON), narrowed by `resource` and
/// `mask` as Envoy's query parameters do.
pub fn dump(
    sources: Sources<'_>,
    resource: Option<&str>,
    mask: Option<&str>,
) -> Result<Value, DumpError> {
    let configs = configs(sources);
    let mask: Option<Vec<Vec<&str>>> = mask.map(|mask| {
        mask.split(',')
            .map(str::trim)
            .filter(|path| !path.is_empty())
            .map(|path| path.split('.').collect())
            .collect()
    });
    let narrowed: Vec<Value> = match resource {
        None => configs,
        Some(resource) => {
            let mut entries = Vec::new();
            let mut known = false;
            for config in &configs {
                if !fields_of(config).contains(&resource) {
                    continue;
                }
                known = true;
                let Some(list) = config.get(resource).and_then(Value::as_array) else {
                    continue;
                };
                let outer = config.get("@type").and_then(Value::as_str).unwrap_or("");
                for entry in list {
                    let mut entry = entry.clone();
                    if let Value::Object(fields) = &mut entry {
                        fields.insert(
                            "@type".into(),
                            json!(format!("{outer}.{}", entry_type(resource))),
                        );
                    }
                    entries.push(entry);
                }
            }
            if !known {
                return Err(DumpError::UnknownResource(resource.to_owned()));
            }
            entries
        }
    };
    let narrowed = match &mask {
        // As Envoy's: a whole config whose type lacks a field of the mask is left out.
        Some(paths) => narrowed
            .iter()
            .filter(|config| {
                resource.is_some()
                    || paths.iter().all(|path| {
                        path.first()
                            .is_some_and(|field| fields_of(config).contains(field))
                    })
            })
            .map(|config| masked(config, paths))
            .collect(),
        None => narrowed,
    };
    Ok(json!({ "configs": narrowed }))
}

/// The four dumps (five with `include_eds`), in Envoy's order.
fn configs(sources: Sources<'_>) -> Vec<Value> {
    let bootstrap = sources.bootstrap;
    let empty = DynamicDump::default();
    let dynamic = sources.dynamic.unwrap_or(&empty);
    let statics = bootstrap.get("static_resources");
    let list = |field: &str| -> Vec<Value> {
        statics
            .and_then(|s| s.get(field))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let clusters: Vec<Value> = list("clusters")
        .into_iter()
        .map(|cluster| json!({ "cluster": typed(cluster, CLUSTER) }))
        .collect();
    let listeners = list("listeners");
    let mut route_configs = Vec::new();
    for listener in &listeners {
        inline_route_configs(listener, &mut route_configs);
    }
    let listeners: Vec<Value> = listeners
        .into_iter()
        .map(|listener| json!({ "listener": typed(listener, LISTENER) }))
        .collect();
    let route_configs: Vec<Value> = route_configs
        .into_iter()
        .map(|route_config| json!({ "route_config": typed(route_config, ROUTE_CONFIG) }))
        .collect();
    let clusters_of = |warming: bool| -> Vec<Value> {
        dynamic
            .clusters
            .iter()
            .filter(|entry| entry.warming == warming)
            .map(|entry| versioned(entry, "cluster", CLUSTER))
            .collect()
    };
    let dynamic_listeners: Vec<Value> = dynamic
        .listeners
        .iter()
        .map(|entry| {
            let state = if entry.warming {
                "warming_state"
            } else {
                "active_state"
            };
            json!({ "name": entry.name, state: versioned(entry, "listener", LISTENER) })
        })
        .collect();
    let dynamic_routes: Vec<Value> = dynamic
        .route_configs
        .iter()
        .map(|entry| versioned(entry, "route_config", ROUTE_CONFIG))
        .collect();
    let mut configs = vec![
        json!({ "@type": format!("{ADMIN}BootstrapConfigDump"), "bootstrap": bootstrap }),
        with_version(
            json!({
                "@type": format!("{ADMIN}ClustersConfigDump"),
                "static_clusters": clusters,
                "dynamic_active_clusters": clusters_of(false),
                "dynamic_warming_clusters": clusters_of(true),
            }),
            dynamic.versions.get("cds"),
        ),
        with_version(
            json!({
                "@type": format!("{ADMIN}ListenersConfigDump"),
                "static_listeners": listeners,
                "dynamic_listeners": dynamic_listeners,
            }),
            dynamic.versions.get("lds"),
        ),
        json!({
            "@type": format!("{ADMIN}RoutesConfigDump"),
            "static_route_configs": route_configs,
            "dynamic_route_configs": dynamic_routes,
        }),
    ];
    if dynamic.ecds || !dynamic.filter_configs.is_empty() {
        let mut ecds = json!({ "@type": format!("{ADMIN}EcdsConfigDump") });
        if !dynamic.filter_configs.is_empty() {
            let filters: Vec<Value> = dynamic
                .filter_configs
                .iter()
                .map(|entry| versioned(entry, "ecds_filter", EXTENSION_CONFIG))
                .collect();
            ecds["ecds_filters"] = json!(filters);
        }
        configs.insert(2, ecds);
    }
    if sources.include_eds {
        let static_endpoints: Vec<Value> = list("clusters")
            .iter()
            .filter_map(|cluster| cluster.get("load_assignment"))
            .map(|assignment| json!({ "endpoint_config": typed(assignment.clone(), ENDPOINTS) }))
            .collect();
        let dynamic_endpoints: Vec<Value> = dynamic
            .endpoints
            .iter()
            .map(|entry| versioned(entry, "endpoint_config", ENDPOINTS))
            .collect();
        configs.push(json!({
            "@type": format!("{ADMIN}EndpointsConfigDump"),
            "static_endpoint_configs": static_endpoints,
            "dynamic_endpoint_configs": dynamic_endpoints,
        }));
    }
    configs
}

/// One resource from the control plane as Envoy dumps it: `{version_info, <field>: resource,
/// last_updated}`.
fn versioned(entry: &DynamicEntry, field: &str, type_url: &str) -> Value {
    json!({
        "version_info": entry.version_info,
        field: typed((*entry.resource.json()).clone(), type_url),
        "last_updated": crate::access_log::format::utc_timestamp(entry.last_updated),
    })
}

/// `dump` with the `version_info` of the response applied last, when there is one.
fn with_version(mut dump: Value, version: Option<&String>) -> Value {
    if let (Value::Object(fields), Some(version)) = (&mut dump, version) {
        fields.insert("version_info".into(), json!(version));
    }
    dump
}

/// The `route_config`s written inline in the HTTP connection managers of `listener`.
fn inline_route_configs(listener: &Value, out: &mut Vec<Value>) {
    let chains = listener
        .get("filter_chains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(listener.get("default_filter_chain"));
    for chain in chains {
        let filters = chain.get("filters").and_then(Value::as_array).into_iter();
        for filter in filters.flatten() {
            if let Some(route_config) = filter
                .get("typed_config")
                .and_then(|typed| typed.get("route_config"))
            {
                out.push(route_config.clone());
            }
        }
    }
}

/// `resource` with its `@type` first (the file's own `@type`, if any, is Envoy's anyway).
fn typed(resource: Value, type_url: &str) -> Value {
    let mut fields = Map::new();
    fields.insert("@type".into(), json!(type_url));
    if let Value::Object(rest) = resource {
        for (key, value) in rest {
            if key != "@type" {
                fields.insert(key, value);
            }
        }
    }
    Value::Object(fields)
}

/// The fields of a whole dump's type, as Envoy's `envoy.admin.v3` messages define them (set
/// or not): what `resource=` may name and a `mask=` may start with.
fn fields_of(config: &Value) -> &'static [&'static str] {
    let type_url = config.get("@type").and_then(Value::as_str).unwrap_or("");
    match type_url.strip_prefix(ADMIN).unwrap_or("") {
        "BootstrapConfigDump" => &["bootstrap", "last_updated"],
        "ClustersConfigDump" => &[
            "version_info",
            "static_clusters",
            "dynamic_active_clusters",
            "dynamic_warming_clusters",
        ],
        "EcdsConfigDump" => &["ecds_filters"],
        "ListenersConfigDump" => &["version_info", "static_listeners", "dynamic_listeners"],
        "RoutesConfigDump" => &["static_route_configs", "dynamic_route_configs"],
        "EndpointsConfigDump" => &["static_endpoint_configs", "dynamic_endpoint_configs"],
        _ => &[],
    }
}

/// The message type of one entry of the repeated field `resource`, as Envoy names it.
fn entry_type(resource: &str) -> String {
    match resource {
        "static_clusters" => "StaticCluster".into(),
        "dynamic_active_clusters" | "dynamic_warming_clusters" => "DynamicCluster".into(),
        "static_listeners" => "StaticListener".into(),
        "dynamic_listeners" => "DynamicListener".into(),
        "static_route_configs" => "StaticRouteConfig".into(),
        "dynamic_route_configs" => "DynamicRouteConfig".into(),
        "static_endpoint_configs" => "StaticEndpointConfig".into(),
        "dynamic_endpoint_configs" => "DynamicEndpointConfig".into(),
        "ecds_filters" => "EcdsFilterConfig".into(),
        other => other.to_owned(),
    }
}

/// `value` with only the field `paths` (and its `@type`).
fn masked(value: &Value, paths: &[Vec<&str>]) -> Value {
    let mut out = Map::new();
    if let Some(type_url) = value.get("@type") {
        out.insert("@type".into(), type_url.clone());
    }
    for path in paths {
        copy_path(value, &mut out, path);
    }
    Value::Object(out)
}

fn copy_path(from: &Value, into: &mut Map<String, Value>, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(field) = from.get(*first) else {
        return;
    };
    if rest.is_empty() {
        into.insert((*first).to_owned(), field.clone());
        return;
    }
    // A nested resource keeps its `@type`, as Envoy's masks leave it.
    let child = into.entry((*first).to_owned()).or_insert_with(|| {
        let mut child = Map::new();
        if let Some(type_url) = field.get("@type") {
            child.insert("@type".into(), type_url.clone());
        }
        Value::Object(child)
    });
    if let Value::Object(child) = child {
        copy_path(field, child, rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(bootstrap: &Value) -> Sources<'_> {
        Sources {
            bootstrap,
            dynamic: None,
            include_eds: false,
        }
    }

    #[test]
    fn dynamic_resources_are_dumped_with_their_versions() {
        let entry = |name: &str, warming: bool| DynamicEntry {
            name: name.into(),
            version_info: "v7".into(),
            last_updated: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_500),
            resource: std::sync::Arc::new(json!({ "name": name })),
            warming,
        };
        let dynamic = DynamicDump {
            versions: [("cds", "v7".to_string()), ("lds", "v3".to_string())]
                .into_iter()
                .collect(),
            listeners: vec![entry("ready", false), entry("waiting", true)],
            route_configs: vec![entry("routes", false)],
            clusters: vec![entry("up", false), entry("warm", true)],
            endpoints: vec![entry("up", false)],
            filter_configs: Vec::new(),
            ecds: false,
        };
        let bootstrap = bootstrap();
        let sources = Sources {
            bootstrap: &bootstrap,
            dynamic: Some(&dynamic),
            include_eds: true,
        };
        let dump = dump(sources, None, None).unwrap();
        let configs = dump["configs"].as_array().unwrap();
        assert_eq!(configs.len(), 5);
        assert_eq!(configs[1]["version_info"], "v7");
        assert_eq!(
            configs[1]["dynamic_active_clusters"][0]["cluster"]["name"],
            "up"
        );
        assert_eq!(
            configs[1]["dynamic_active_clusters"][0]["last_updated"],
            "1970-01-01T00:00:01.500Z"
        );
        assert_eq!(
            configs[1]["dynamic_warming_clusters"][0]["cluster"]["name"],
            "warm"
        );
        assert_eq!(configs[2]["version_info"], "v3");
        assert_eq!(
            configs[2]["dynamic_listeners"][0]["active_state"]["listener"]["@type"],
            LISTENER
        );
        assert_eq!(configs[2]["dynamic_listeners"][1]["name"], "waiting");
        assert!(configs[2]["dynamic_listeners"][1]["warming_state"].is_object());
        assert_eq!(
            configs[3]["dynamic_route_configs"][0]["route_config"]["name"],
            "routes"
        );
        assert_eq!(
            configs[4]["dynamic_endpoint_configs"][0]["endpoint_config"]["@type"],
            ENDPOINTS
        );
        // Without include_eds, no endpoints dump.
        let sources = Sources {
            include_eds: false,
            ..sources
        };
        assert_eq!(dump_len(sources), 4);
    }

    fn dump_len(sources: Sources<'_>) -> usize {
        dump(sources, None, None).unwrap()["configs"]
            .as_array()
            .map_or(0, Vec::len)
    }

    fn bootstrap() -> Value {
        json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
            "static_resources": {
                "listeners": [{
                    "name": "in",
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {"stat_prefix": "in", "route_config": {"name": "local", "virtual_hosts": []}}
                    }]}]
                }],
                "clusters": [{"name": "backend", "connect_timeout": "1s"}]
            }
        })
    }

    #[test]
    fn four_dumps_in_envoys_order_with_types() {
        let dump = dump(plain(&bootstrap()), None, None).unwrap();
        let configs = dump["configs"].as_array().unwrap();
        let types: Vec<&str> = configs
            .iter()
            .map(|c| c["@type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            ]
        );
        assert_eq!(
            configs[1]["static_clusters"][0]["cluster"]["@type"],
            CLUSTER
        );
        assert_eq!(
            configs[1]["static_clusters"][0]["cluster"]["name"],
            "backend"
        );
        assert_eq!(configs[2]["static_listeners"][0]["listener"]["name"], "in");
        assert_eq!(
            configs[3]["static_route_configs"][0]["route_config"]["name"],
            "local"
        );
    }

    #[test]
    fn resource_and_mask_narrow_as_envoys() {
        let dump = dump(
            plain(&bootstrap()),
            Some("static_clusters"),
            Some("cluster.name"),
        )
        .unwrap();
        assert_eq!(
            dump,
            json!({"configs": [{
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster",
                "cluster": {"@type": CLUSTER, "name": "backend"}
            }]})
        );
        assert_eq!(
            super::dump(plain(&bootstrap()), Some("nothing"), None),
            Err(DumpError::UnknownResource("nothing".into()))
        );
    }

    #[test]
    fn ecds_configs_are_dumped_between_clusters_and_listeners_as_envoys() {
        let dynamic = DynamicDump {
            filter_configs: vec![DynamicEntry {
                name: "auth".into(),
                version_info: "3".into(),
                last_updated: std::time::UNIX_EPOCH,
                resource: std::sync::Arc::new(json!({
                    "name": "auth",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"}
                })),
                warming: false,
            }],
            ..DynamicDump::default()
        };
        let bootstrap = bootstrap();
        let sources = Sources {
            bootstrap: &bootstrap,
            dynamic: Some(&dynamic),
            include_eds: false,
        };
        let dump = dump(sources, None, None).unwrap();
        let ecds = &dump["configs"][2];
        assert_eq!(
            ecds["@type"],
            "type.googleapis.com/envoy.admin.v3.EcdsConfigDump"
        );
        assert_eq!(ecds["ecds_filters"][0]["version_info"], "3");
        assert_eq!(
            ecds["ecds_filters"][0]["ecds_filter"]["@type"],
            EXTENSION_CONFIG
        );
        assert_eq!(ecds["ecds_filters"][0]["ecds_filter"]["name"], "auth");
        assert_eq!(
            dump["configs"][3]["@type"],
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
        );
        let narrowed = super::dump(sources, Some("ecds_filters"), Some("version_info")).unwrap();
        assert_eq!(
            narrowed,
            json!({"configs": [{
                "@type": "type.googleapis.com/envoy.admin.v3.EcdsConfigDump.EcdsFilterConfig",
                "version_info": "3"
            }]})
        );
        // A mask without resource keeps the configs whose type has the field.
        let masked = super::dump(sources, None, Some("ecds_filters")).unwrap();
        assert_eq!(masked["configs"].as_array().map(Vec::len), Some(1));
        assert_eq!(masked["configs"][0]["ecds_filters"][0]["version_info"], "3");
        // Asked for, none come yet: an empty ECDS dump; none asked for: none.
        let asked = DynamicDump {
            ecds: true,
            ..DynamicDump::default()
        };
        let sources = Sources {
            dynamic: Some(&asked),
            ..sources
        };
        let dump = super::dump(sources, None, None).unwrap();
        assert_eq!(
            dump["configs"][2],
            json!({"@type": "type.googleapis.com/envoy.admin.v3.EcdsConfigDump"})
        );
        let entries = super::dump(sources, Some("ecds_filters"), None).unwrap();
        assert_eq!(entries, json!({"configs": []}));
        assert_eq!(dump_len(plain(&bootstrap)), 4);
    }
}
