//! Hot reload of a plugin's module file: a [`PluginHandle`] holds the plugin now in force and,
//! once a worker uses it, watches its `filename`. When the file changes (and its new content
//! loads: compiles, links, starts and accepts its configuration), the new plugin is swapped in;
//! each worker's [`super::VmSlot`] then starts new streams on a VM of the new module while
//! streams already running finish on the old one. A module that fails to load is logged and
//! the old one stays.
//!
//! The file is polled every `WEIR_WASM_RELOAD_INTERVAL_MS` (default 1000; 0 turns reload off).

use super::plugin::{Plugin, PluginSpec};
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

/// Env var: how often module files are checked for changes, in milliseconds (0 = never).
pub const RELOAD_INTERVAL_ENV: &str = "WEIR_WASM_RELOAD_INTERVAL_MS";

/// A configured plugin whose module may be replaced while weir runs.
pub struct PluginHandle {
    current: ArcSwap<Plugin>,
    /// The spec it was loaded from (with its code), for reloads.
    spec: PluginSpec,
    /// The module file, when the config named one.
    source: Option<PathBuf>,
    watcher: OnceLock<()>,
}

impl std::fmt::Debug for PluginHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHandle")
            .field("current", &self.current.load())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl PluginHandle {
    /// A handle on `plugin`, loaded from `spec` (whose module came from `source`, if a file).
    pub fn new(plugin: Arc<Plugin>, spec: PluginSpec, source: Option<PathBuf>) -> Arc<Self> {
        Arc::new(PluginHandle {
            current: ArcSwap::new(plugin),
            spec,
            source,
            watcher: OnceLock::new(),
        })
    }

    /// The plugin in force now.
    pub fn current(&self) -> Arc<Plugin> {
        self.current.load_full()
    }

    /// Starts watching the module file (once; a no-op without a file or with reload off).
    pub fn watch(self: &Arc<Self>) {
        self.watcher.get_or_init(|| {
            let interval = reload_interval();
            let (Some(path), Some(interval)) = (self.source.clone(), interval) else {
                return;
            };
            let handle = Arc::downgrade(self);
            let started = std::thread::Builder::new()
                .name("weir-wasm-reload".into())
                .spawn(move || watch_file(handle, path, interval));
            if let Err(error) = started {
                tracing::warn!(%error, "cannot start the Wasm module watcher; reload is off");
            }
        });
    }

    /// Loads `code` as the plugin's new module and swaps it in; the old one stays on failure.
    fn reload(&self, code: Vec<u8>) -> bool {
        let mut spec = self.spec.clone();
        spec.code = code;
        let name = self.current().name().to_string();
        match Plugin::load(spec) {
            Ok(plugin) => {
                self.current.store(plugin);
                tracing::info!(plugin = %name, "Wasm module reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(plugin = %name, %error, "Wasm module changed but does not load; keeping the old one");
                false
            }
        }
    }
}

fn reload_interval() -> Option<Duration> {
    let millis = match std::env::var(RELOAD_INTERVAL_ENV) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or_else(|_| {
            tracing::warn!(var = RELOAD_INTERVAL_ENV, value = %text, "ignoring invalid value");
            1000
        }),
        Err(_) => 1000,
    };
    (millis > 0).then(|| Duration::from_millis(millis))
}

/// What is checked to notice a change cheaply: modification time and length.
fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn watch_file(handle: Weak<PluginHandle>, path: PathBuf, interval: Duration) {
    let mut last_stamp = stamp(&path);
    let mut last_hash = match handle.upgrade() {
        Some(handle) => Sha256::digest(&handle.spec.code).to_vec(),
        None => return,
    };
    loop {
        std::thread::sleep(interval);
        let Some(handle) = handle.upgrade() else {
            return;
        };
        let now = stamp(&path);
        if now.is_none() || now == last_stamp {
            continue;
        }
        last_stamp = now;
        let code = match std::fs::read(&path) {
            Ok(code) => code,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read the changed Wasm module");
                continue;
            }
        };
        let hash = Sha256::digest(&code).to_vec();
        if hash == last_hash {
            continue;
        }
        if handle.reload(code) {
            last_hash = hash;
        }
    }
}
