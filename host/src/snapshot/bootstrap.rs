//! The whole snapshot: a bootstrap's validated resources ([`crate::config::bootstrap`])
//! assembled into one [`Config`], its listeners and Wasm services loaded.

use super::listener::{ListenerConfig, TcpListenerConfig, listener_config, tcp_listener_config};
use super::wasm::load_plugin;
use crate::config::bootstrap::Bootstrap;
use crate::config::cluster::cluster_spec;
use crate::config::cluster_names::ClusterNames;
use crate::config::cluster_spec::ClusterSpec;
use crate::config::listener::listen_address;
use crate::config::route::RouteConfiguration;
use crate::config::{
    FieldError, dynamic_resources, overload, process_settings, runtime, service, wasm, wasm_spec,
};
use std::net::SocketAddr;

/// Everything weir runs: listeners, clusters, admin.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (a path, or `<built-in>`).
    pub source: String,
    /// The file as JSON, for `/config_dump`.
    pub dump: serde_json::Value,
    /// `node.id`.
    pub node_id: String,
    /// The admin listener's address.
    pub admin: Option<SocketAddr>,
    /// `admin.access_log_path` and `admin.access_log[]`: `None` when there is none.
    pub admin_access_log: Option<std::sync::Arc<crate::access_log::AccessLogs>>,
    /// HTTP listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Upstream clusters.
    pub clusters: Vec<std::sync::Arc<ClusterSpec>>,
    /// TCP proxy listeners (`envoy.filters.network.tcp_proxy`).
    pub tcp_listeners: Vec<TcpListenerConfig>,
    /// `overload_manager`: monitors, actions and the global connection limit.
    pub overload: overload::OverloadConfig,
    /// `bootstrap_extensions`' Wasm services, started once with the process (a reload that
    /// changes them is refused: see [`crate::reload::restart_needed`]).
    pub wasm_services: Vec<WasmServiceConfig>,
    /// `bootstrap_extensions`' `weir.config.v1.ProcessSettings`, if any (read at start-up, a
    /// reload that changes it is refused: see [`process_settings`]).
    pub process_settings: Option<process_settings::ProcessSettingsConfig>,
    /// `dynamic_resources`: the control plane, when resources come over xDS.
    pub xds: Option<crate::config::dynamic_resources::XdsSpec>,
    /// The resources the control plane sent, for `/config_dump` (none without xDS).
    pub dynamic: Option<std::sync::Arc<DynamicDump>>,
}

/// The resources from a control plane a config was built with, as `/config_dump` shows them.
#[derive(Debug, Clone, Default)]
pub struct DynamicDump {
    /// Per type (`lds`, `rds`, `cds`, `eds`), the version of the response applied last.
    pub versions: std::collections::BTreeMap<&'static str, String>,
    /// Listeners (LDS).
    pub listeners: Vec<DynamicEntry>,
    /// Route configurations (RDS).
    pub route_configs: Vec<DynamicEntry>,
    /// Clusters (CDS).
    pub clusters: Vec<DynamicEntry>,
    /// Endpoints (EDS).
    pub endpoints: Vec<DynamicEntry>,
    /// HTTP filter configs (ECDS): `TypedExtensionConfig`s.
    pub filter_configs: Vec<DynamicEntry>,
    /// Whether some filter asks for its config over ECDS (or one came): the dump has an
    /// ECDS part then, empty or not.
    pub ecds: bool,
}

/// A dynamic resource's fields in Envoy's JSON shape, for `/config_dump`: written when the
/// resource was read, or only when first asked for (an xDS route configuration read reusing
/// its version in force: `xds::route_reuse`).
pub trait DumpJson: std::fmt::Debug + Send + Sync {
    /// The JSON.
    fn json(&self) -> std::sync::Arc<serde_json::Value>;
}

impl DumpJson for serde_json::Value {
    fn json(&self) -> std::sync::Arc<serde_json::Value> {
        std::sync::Arc::new(self.clone())
    }
}

/// One resource from the control plane.
#[derive(Debug, Clone)]
pub struct DynamicEntry {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version_info: String,
    /// When it was last added or changed.
    pub last_updated: std::time::SystemTime,
    /// Its fields in Envoy's JSON shape (shared with the resource held, not copied per
    /// snapshot).
    pub resource: std::sync::Arc<dyn DumpJson>,
    /// Held but not in use yet: a listener waiting for its routes, a cluster for its
    /// endpoints.
    pub warming: bool,
}

/// One `envoy.bootstrap.wasm` extension: its plugin, loaded and checked like a filter's.
#[derive(Debug, Clone)]
pub struct WasmServiceConfig {
    /// The plugin.
    pub plugin: std::sync::Arc<crate::wasm::PluginHandle>,
    /// One VM on a thread of its own (`true`) or one per worker.
    pub singleton: bool,
    /// SHA-256 over everything that makes the service what it is (module, names,
    /// configurations, `singleton`): two configs run the same service when it is equal.
    pub identity: [u8; 32],
}

impl Config {
    /// Every Wasm plugin of the config (HTTP filters, upgrade filters, network filters), in
    /// config order.
    pub fn plugin_handles(&self) -> Vec<std::sync::Arc<crate::wasm::PluginHandle>> {
        let http = self.listeners.iter().flat_map(|listener| {
            let upgrades = listener
                .http
                .upgrades
                .iter()
                .filter_map(|upgrade| upgrade.filters.as_ref())
                .flatten();
            listener.http.http_filters.iter().chain(upgrades)
        });
        let network = self
            .tcp_listeners
            .iter()
            .flat_map(|listener| listener.proxy.network_filters.iter());
        http.chain(network).cloned().collect()
    }
}

/// Reads the whole bootstrap: clusters first (listeners and Wasm filters refer to them by
/// name), then listeners and the bootstrap extensions.
pub(super) fn build(
    mut bootstrap: Bootstrap,
    dynamic_clusters: Vec<std::sync::Arc<ClusterSpec>>,
    source: &str,
    dump: serde_json::Value,
) -> Result<Config, FieldError> {
    let admin = match &bootstrap.admin {
        Some(admin) => Some(listen_address(&admin.address, "admin.address")?),
        None => None,
    };
    let admin_access_log = match &bootstrap.admin {
        Some(admin) => {
            // `access_log[]` alone first, so that an error's `[i]` is the entry's own.
            crate::access_log::AccessLogs::from_config(&admin.access_log, "admin.access_log")?;
            crate::access_log::AccessLogs::from_config(&admin.access_logs(), "admin.access_log")?
        }
        None => None,
    };
    let overload = overload::build(bootstrap.overload_manager.as_ref())?;
    let mut clusters: Vec<std::sync::Arc<ClusterSpec>> = Vec::new();
    // A set, not a scan of the list: a control plane's thousands of clusters would make the
    // check quadratic.
    let mut seen_names = std::collections::HashSet::new();
    for (i, cluster) in bootstrap.static_resources.clusters.iter().enumerate() {
        let path = format!("static_resources.clusters[{i}]");
        if !seen_names.insert(cluster.name.as_str()) {
            return Err(FieldError::new(
                format!("{path}.name"),
                format!("duplicate cluster name {:?}", cluster.name),
            ));
        }
        clusters.push(std::sync::Arc::new(cluster_spec(cluster, &path)?));
    }
    // The control plane's are unique among themselves (held by name).
    for spec in dynamic_clusters {
        if seen_names.contains(spec.name.as_str()) {
            return Err(FieldError::new(
                format!("cluster {:?}: name", spec.name),
                "a static cluster has that name",
            ));
        }
        clusters.push(spec);
    }
    let xds = dynamic_resources::xds_spec(
        bootstrap.dynamic_resources.as_ref(),
        bootstrap.node.as_ref(),
        &clusters,
    )?;
    if xds.is_none() {
        // As Envoy: "ADS must be configured to support an ADS config source".
        let eds = bootstrap
            .static_resources
            .clusters
            .iter()
            .position(|cluster| {
                cluster.discovery_type == crate::config::cluster::DiscoveryType::EDS
            });
        if let Some(i) = eds {
            return Err(FieldError::new(
                format!("static_resources.clusters[{i}].eds_cluster_config.eds_config.ads"),
                "endpoints over ADS need a control plane: name it in dynamic_resources.ads_config",
            ));
        }
    }
    if xds.is_some() {
        // Routes RDS has not delivered are none at all, as in Envoy once its initial fetch
        // gave up: every request gets 404 until they come (the xDS assembler puts them in
        // before building; a file read alone has none).
        for listener in &mut bootstrap.static_resources.listeners {
            for hcm in listener.http_managers_mut() {
                if let Some(name) = hcm.rds_name()
                    && hcm.rds_route_config.is_none()
                {
                    let name = name.to_string();
                    hcm.set_rds_route_config(std::sync::Arc::new(RouteConfiguration {
                        name: Some(name),
                        ..RouteConfiguration::default()
                    }));
                }
            }
        }
    }
    let cluster_names: ClusterNames = clusters.iter().map(|c| c.name.as_str()).collect();
    let node = wasm_spec::NodeInfo {
        id: bootstrap
            .node
            .as_ref()
            .map(|n| n.id.clone())
            .unwrap_or_default(),
        cluster: bootstrap
            .node
            .as_ref()
            .map(|n| n.cluster.clone())
            .unwrap_or_default(),
    };
    let abuse = runtime::StreamAbuseLimits::from_runtime(bootstrap.layered_runtime.as_ref())?;
    let mut listeners = Vec::new();
    let mut tcp_listeners = Vec::new();
    for (i, listener) in bootstrap.static_resources.listeners.iter().enumerate() {
        let path = format!("static_resources.listeners[{i}]");
        if let Some(tcp) = tcp_listener_config(listener, &path, &cluster_names, &node)? {
            tcp_listeners.push(tcp);
            continue;
        }
        let mut built = listener_config(listener, &path, &cluster_names, &node)?;
        // Unique here (just built): no copy is made.
        std::sync::Arc::make_mut(&mut built.http).abuse = abuse;
        if listeners
            .iter()
            .any(|l: &ListenerConfig| l.name == built.name)
        {
            return Err(FieldError::new(
                format!("{path}.name"),
                format!("duplicate listener name {:?}", built.name),
            ));
        }
        listeners.push(built);
    }
    Ok(Config {
        source: source.to_string(),
        dump,
        node_id: bootstrap.node.map(|n| n.id).unwrap_or_default(),
        admin,
        admin_access_log,
        listeners,
        clusters,
        tcp_listeners,
        overload,
        wasm_services: wasm_services(&bootstrap.bootstrap_extensions, &node)?,
        process_settings: bootstrap.bootstrap_extensions.iter().find_map(|extension| {
            match &extension.kind {
                service::ExtensionKind::ProcessSettings(settings) => Some(settings.clone()),
                service::ExtensionKind::WasmService(_) => None,
            }
        }),
        xds,
        dynamic: None,
    })
}

/// Loads the plugin of each `bootstrap_extensions[]` Wasm service (its module compiled and
/// started once, as a filter's is).
fn wasm_services(
    extensions: &[service::BootstrapExtension],
    node: &wasm_spec::NodeInfo,
) -> Result<Vec<WasmServiceConfig>, FieldError> {
    let mut services = Vec::new();
    for (i, extension) in extensions.iter().enumerate() {
        let Some(service) = extension.wasm_service() else {
            continue;
        };
        let typed_path = format!("bootstrap_extensions[{i}].typed_config");
        let filter = wasm::WasmFilterConfig {
            config: service.config.clone(),
        };
        if service.config.vm_config.code.remote.is_some() {
            // A service starts once with the process, before remote modules are fetched for
            // the listeners; fetching it as well is not built yet.
            return Err(FieldError::new(
                format!("{typed_path}.config.vm_config.code.remote"),
                "a bootstrap Wasm service takes code.local (a file or inline bytes); remote code is for filters",
            ));
        }
        let plugin = load_plugin(&filter, &typed_path, &ClusterNames::default(), node)?;
        let identity = service_identity(&plugin, service.singleton);
        services.push(WasmServiceConfig {
            plugin,
            singleton: service.singleton,
            identity,
        });
    }
    Ok(services)
}

/// See [`WasmServiceConfig::identity`].
fn service_identity(plugin: &crate::wasm::PluginHandle, singleton: bool) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    // Local code only (checked by the caller), so the plugin is loaded.
    let Some(loaded) = plugin.current() else {
        hash.update(plugin.name().as_bytes());
        return hash.finalize().into();
    };
    let info = loaded.info().clone();
    for part in [
        &plugin.code_hash()[..],
        info.name.as_bytes(),
        info.root_id.as_bytes(),
        info.vm_id.as_bytes(),
        &info.vm_configuration,
        &info.plugin_configuration,
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.update([u8::from(singleton)]);
    hash.finalize().into()
}
