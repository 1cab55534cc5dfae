//! `GET /config_dump` in Envoy's shape, so tools that read Envoy's dump read weir's.
//!
//! `configs[]` holds, in Envoy's order, a `BootstrapConfigDump` (the file as loaded), a
//! `ClustersConfigDump` (`static_clusters[].cluster`), a `ListenersConfigDump`
//! (`static_listeners[].listener`) and a `RoutesConfigDump` (`static_route_configs[]`: each
//! `route_config` written inline in an HTTP connection manager). Every resource carries its
//! Envoy `@type`. weir has no dynamic resources yet, so the `dynamic_*` lists are empty and
//! `version_info` is absent. Query parameters as Envoy's:
//! - `resource=NAME`: only the entries of that repeated field (`static_clusters`,
//!   `static_listeners`, `static_route_configs`, `dynamic_active_clusters`, ...), each with
//!   the entry's own `@type` (e.g. `...ClustersConfigDump.StaticCluster`);
//! - `mask=a.b,c`: only those field paths of each config (or of each resource entry).

use serde_json::{Map, Value, json};

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";
const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

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
    bootstrap: &Value,
    resource: Option<&str>,
    mask: Option<&str>,
) -> Result<Value, DumpError> {
    let configs = configs(bootstrap);
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
                let Some(list) = config.get(resource).and_then(Value::as_array) else {
                    continue;
                };
                known = true;
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
        Some(paths) => narrowed
            .iter()
            .map(|config| masked(config, paths))
            .collect(),
        None => narrowed,
    };
    Ok(json!({ "configs": narrowed }))
}

/// The four dumps, in Envoy's order.
fn configs(bootstrap: &Value) -> Vec<Value> {
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
    vec![
        json!({ "@type": format!("{ADMIN}BootstrapConfigDump"), "bootstrap": bootstrap }),
        json!({
            "@type": format!("{ADMIN}ClustersConfigDump"),
            "static_clusters": clusters,
            "dynamic_active_clusters": [],
            "dynamic_warming_clusters": [],
        }),
        json!({
            "@type": format!("{ADMIN}ListenersConfigDump"),
            "static_listeners": listeners,
            "dynamic_listeners": [],
        }),
        json!({
            "@type": format!("{ADMIN}RoutesConfigDump"),
            "static_route_configs": route_configs,
            "dynamic_route_configs": [],
        }),
    ]
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

/// The message type of one entry of the repeated field `resource`, as Envoy names it.
fn entry_type(resource: &str) -> String {
    match resource {
        "static_clusters" => "StaticCluster".into(),
        "dynamic_active_clusters" | "dynamic_warming_clusters" => "DynamicCluster".into(),
        "static_listeners" => "StaticListener".into(),
        "dynamic_listeners" => "DynamicListener".into(),
        "static_route_configs" => "StaticRouteConfig".into(),
        "dynamic_route_configs" => "DynamicRouteConfig".into(),
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
        let dump = dump(&bootstrap(), None, None).unwrap();
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
        let dump = dump(&bootstrap(), Some("static_clusters"), Some("cluster.name")).unwrap();
        assert_eq!(
            dump,
            json!({"configs": [{
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster",
                "cluster": {"@type": CLUSTER, "name": "backend"}
            }]})
        );
        assert_eq!(
            super::dump(&bootstrap(), Some("nothing"), None),
            Err(DumpError::UnknownResource("nothing".into()))
        );
    }
}
