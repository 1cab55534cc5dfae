//! A configured plugin: its module compiled and linked once per process (an `InstancePre`),
//! its names and configuration bytes, its ABI version and its failure counter. Workers make
//! their own VMs from it ([`super::VmSlot`]).

use super::engine::{self, Limits};
use super::state::HostState;
use super::vm::Vm;
use super::{WasmError, abi, module_cache};
use prometheus::IntCounter;
use std::sync::Arc;
use wasmtime::{InstancePre, Module};
use weir_abi::names;

pub use crate::config::wasm_spec::{NodeInfo, PluginSpec};

/// A plugin's names and configuration, shared by its VMs' stores.
#[derive(Debug)]
pub struct PluginInfo {
    /// The name in logs and metrics (`config.name`, else the root id, else the VM id).
    pub name: String,
    /// `config.root_id`.
    pub root_id: String,
    /// `config.vm_config.vm_id`.
    pub vm_id: String,
    /// VM configuration bytes.
    pub vm_configuration: Vec<u8>,
    /// Plugin configuration bytes.
    pub plugin_configuration: Vec<u8>,
    /// Fail open.
    pub fail_open: bool,
    /// The bootstrap's node.
    pub node: NodeInfo,
}

/// The proxy-wasm ABI version a module declares (by exporting `proxy_abi_version_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiVersion {
    /// 0.1.0: `proxy_on_request_headers(ctx, n)`, `proxy_continue_request`, ...
    V0_1_0,
    /// 0.2.0.
    V0_2_0,
    /// 0.2.1.
    V0_2_1,
}

impl AbiVersion {
    /// The version `module` declares; `None` for a module that is not proxy-wasm.
    pub fn of(module: &Module) -> Option<AbiVersion> {
        module.exports().find_map(|export| match export.name() {
            names::ABI_VERSION_0_2_1 => Some(AbiVersion::V0_2_1),
            names::ABI_VERSION_0_2_0 => Some(AbiVersion::V0_2_0),
            names::ABI_VERSION_0_1_0 => Some(AbiVersion::V0_1_0),
            _ => None,
        })
    }
}

/// Whether `module` may read bodies: it exports a body callback and not the
/// [`names::HEADERS_ONLY`] marker.
fn reads_bodies(module: &Module) -> bool {
    use weir_abi::names::callbacks as cb;
    let mut body_callback = false;
    for export in module.exports() {
        match export.name() {
            names::HEADERS_ONLY => return false,
            cb::PROXY_ON_REQUEST_BODY | cb::PROXY_ON_RESPONSE_BODY => body_callback = true,
            _ => {}
        }
    }
    body_callback
}

/// A loaded plugin.
pub struct Plugin {
    info: Arc<PluginInfo>,
    abi: AbiVersion,
    pre: InstancePre<HostState>,
    failures: IntCounter,
    limits: Limits,
    /// Whether its module may read bodies (see [`Plugin::reads_bodies`]).
    reads_bodies: bool,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.info.name)
            .field("root_id", &self.info.root_id)
            .field("vm_id", &self.info.vm_id)
            .field("abi", &self.abi)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Compiles (or takes from the cache) and links the module, then starts one VM to check
    /// that it starts and accepts its configuration, as Envoy does when it loads a plugin.
    pub fn load(spec: PluginSpec) -> Result<Arc<Plugin>, WasmError> {
        let engine = engine::engine()?;
        let module = module_cache::compile(engine, &spec.code)?;
        let abi = AbiVersion::of(&module).ok_or_else(|| {
            WasmError::NotProxyWasm(format!(
                "it exports none of {}",
                names::ABI_VERSIONS.join(", ")
            ))
        })?;
        let reads_bodies = reads_bodies(&module);
        let linker = abi::link(&module)?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| WasmError::Instantiate(format!("{e:#}")))?;
        let name = display_name(&spec);
        let plugin = Arc::new(Plugin {
            failures: super::metrics::vm_failures(&name),
            info: Arc::new(PluginInfo {
                name,
                root_id: spec.root_id,
                vm_id: spec.vm_id,
                vm_configuration: spec.vm_configuration,
                plugin_configuration: spec.plugin_configuration,
                fail_open: spec.fail_open,
                node: spec.node,
            }),
            abi,
            pre,
            limits: Limits::get(),
            reads_bodies,
        });
        // Checked once here; the VM is dropped (workers make their own).
        plugin.start_detached_vm()?;
        Ok(plugin)
    }

    /// Starts one VM of this plugin, outside any worker, and drops it: what a worker pays to
    /// create its VM (instantiation and the root context's start). [`Plugin::load`] uses it
    /// to check the plugin starts; the VM-creation bench (`examples/wasm_vm_bench.rs`) to
    /// time it.
    pub fn start_detached_vm(&self) -> Result<(), WasmError> {
        Vm::start(self, Default::default()).map(drop)
    }

    /// The name in logs and metrics.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Whether streams pass through when its VM fails.
    pub fn fail_open(&self) -> bool {
        self.info.fail_open
    }

    /// The ABI version of its module.
    pub fn abi(&self) -> AbiVersion {
        self.abi
    }

    /// Whether its module may read bodies: it exports `proxy_on_request_body` or
    /// `proxy_on_response_body` and does not declare itself headers-only
    /// ([`names::HEADERS_ONLY`]). The payload of an upgraded stream goes through the chain's
    /// body callbacks only where one of its plugins does.
    pub fn reads_bodies(&self) -> bool {
        self.reads_bodies
    }

    /// Names and configuration.
    pub(crate) fn info(&self) -> &Arc<PluginInfo> {
        &self.info
    }

    /// The linked module, ready to instantiate.
    pub(crate) fn instance_pre(&self) -> &InstancePre<HostState> {
        &self.pre
    }

    /// Its `weir_wasm_vm_failures_total` counter.
    pub fn failures(&self) -> &IntCounter {
        &self.failures
    }

    /// The limits its VMs run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// A configured plugin as a config snapshot holds it: the loaded plugin and the file its module
/// came from. The file is one of those the config reloader watches ([`crate::reload`]); a
/// change builds a whole new snapshot, with new handles, rather than changing this one.
///
/// A plugin whose code is remote ([`PluginHandle::remote`]) is pending until
/// [`super::remote::resolve`] fetches and loads it (before any worker sees the snapshot), and
/// stays unloaded if its module could not be fetched at start-up: then its chains follow
/// `fail_open` ([`PluginHandle::current`] is `None`).
pub struct PluginHandle {
    /// `Some(plugin)` once loaded, `None` when it failed to load; unset while pending.
    state: std::sync::OnceLock<Option<Arc<Plugin>>>,
    /// The spec of a pending remote plugin, taken when it is resolved.
    pending: std::sync::Mutex<Option<PluginSpec>>,
    /// Where its remote code is.
    remote: Option<super::remote::RemoteCode>,
    /// Its name in logs, known before it loads.
    name: String,
    /// Its `fail_open`, known before it loads.
    fail_open: bool,
    source: Option<std::path::PathBuf>,
    /// SHA-256 of the module's bytes as loaded (for remote code: the config's `sha256`).
    code_hash: [u8; 32],
}

impl std::fmt::Debug for PluginHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHandle")
            .field("name", &self.name)
            .field("plugin", &self.state.get())
            .field("source", &self.source)
            .field("remote", &self.remote.as_ref().map(|r| &r.uri))
            .finish()
    }
}

/// The name in logs and metrics of the plugin of `spec`: `config.name`, else the root id, else
/// the VM id.
fn display_name(spec: &PluginSpec) -> String {
    [&spec.name, &spec.root_id, &spec.vm_id]
        .into_iter()
        .find(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| "wasm".to_string())
}

impl PluginHandle {
    /// A handle on `plugin`, whose module (with SHA-256 `code_hash`) came from `source` when
    /// that is a file.
    pub fn new(
        plugin: Arc<Plugin>,
        source: Option<std::path::PathBuf>,
        code_hash: [u8; 32],
    ) -> Arc<Self> {
        Arc::new(PluginHandle {
            name: plugin.name().to_owned(),
            fail_open: plugin.fail_open(),
            state: std::sync::OnceLock::from(Some(plugin)),
            pending: std::sync::Mutex::new(None),
            remote: None,
            source,
            code_hash,
        })
    }

    /// A pending handle for the plugin of `spec` (its `code` empty), whose module is fetched
    /// from `remote` by [`super::remote::resolve`].
    pub fn remote(spec: PluginSpec, remote: super::remote::RemoteCode) -> Arc<Self> {
        Arc::new(PluginHandle {
            name: display_name(&spec),
            fail_open: spec.fail_open,
            state: std::sync::OnceLock::new(),
            pending: std::sync::Mutex::new(Some(spec)),
            code_hash: remote.sha256,
            remote: Some(remote),
            source: None,
        })
    }

    /// The plugin; `None` while its remote module is pending or after it failed to load.
    pub fn current(&self) -> Option<Arc<Plugin>> {
        self.state.get().cloned().flatten()
    }

    /// The plugin's name in logs and metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether streams pass through when the plugin fails (or is not loaded).
    pub fn fail_open(&self) -> bool {
        self.fail_open
    }

    /// Where its remote code is, when it has some.
    pub fn remote_code(&self) -> Option<&super::remote::RemoteCode> {
        self.remote.as_ref()
    }

    /// The spec of a pending remote plugin (once: the caller loads it).
    pub(crate) fn take_pending(&self) -> Option<PluginSpec> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Its remote module was fetched and loaded.
    pub(crate) fn set_loaded(&self, plugin: Arc<Plugin>) {
        let _ = self.state.set(Some(plugin));
    }

    /// Its remote module could not be had: it stays unloaded.
    pub(crate) fn set_failed(&self) {
        let _ = self.state.set(None);
    }

    /// The module's file, when the config named one.
    pub fn source(&self) -> Option<&std::path::Path> {
        self.source.as_deref()
    }

    /// SHA-256 of the module's bytes as loaded (the watcher compares the file with it).
    pub fn code_hash(&self) -> [u8; 32] {
        self.code_hash
    }
}
