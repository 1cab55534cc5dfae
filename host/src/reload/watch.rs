//! Watching the config file and every module file it names: a change starts a reload.
//!
//! The files are polled (every `--reload-interval-ms`, default 500; 0 turns the watch off; the
//! environment variables `WEIR_RELOAD_INTERVAL_MS` and `WEIR_WASM_RELOAD_INTERVAL_MS` are read
//! where the flag is not given) by path, so an editor that
//! writes a new file and renames it over the old one is seen like one that writes in place.
//! A file counts as changed when its modification time, size or inode changed *and* its
//! content hash differs from the last one a reload was tried with; a file that is still
//! changing (between two looks a few milliseconds apart) is looked at again on the next poll,
//! so a half-written file is not loaded. A content that failed to load is not tried again until
//! it changes.
//!
//! The watcher is a [`ConfigSource`] ([`WatchedFile`]): the config file's, which also says when
//! a file changed; the reloader loads it like any other source.

use super::{Reloader, Trigger};
use crate::config::ConfigError;
use crate::snapshot::{Config, ConfigSource, FileSource, Loaded};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// Env var: how often watched files are checked, in milliseconds (0 = never).
pub const RELOAD_INTERVAL_ENV: &str = "WEIR_RELOAD_INTERVAL_MS";
/// The older name of [`RELOAD_INTERVAL_ENV`], from when only module files were watched.
pub const WASM_RELOAD_INTERVAL_ENV: &str = "WEIR_WASM_RELOAD_INTERVAL_MS";
const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
/// The pause between two looks at a changed file, to let a writer finish.
const SETTLE: Duration = Duration::from_millis(25);

/// The source of the config file at `path`: a [`WatchedFile`], or the plain [`FileSource`]
/// when the reload interval is 0 (no watching).
pub fn file_source(path: PathBuf) -> Arc<dyn ConfigSource> {
    match interval() {
        Some(_) => Arc::new(WatchedFile::new(FileSource::new(path))),
        None => Arc::new(FileSource::new(path)),
    }
}

/// Starts the watcher thread for `reloader`'s source; it asks the source every interval
/// whether something changed, reloads through `runtime` when it did, and ends when the
/// reloader is dropped. Nothing is watched for the built-in config or with the interval set
/// to 0.
pub fn spawn(reloader: &Arc<Reloader>, runtime: tokio::runtime::Handle) {
    let Some(interval) = interval() else {
        tracing::info!("config and module files are not watched (reload interval 0)");
        return;
    };
    if reloader.source().is_none() {
        return;
    }
    let weak = Arc::downgrade(reloader);
    let started = std::thread::Builder::new()
        .name("weir-reload-watch".into())
        .spawn(move || run(weak, runtime, interval));
    if let Err(error) = started {
        tracing::warn!(%error, "cannot start the config file watcher; use POST /reload");
    }
}

/// `--reload-interval-ms`, else [`RELOAD_INTERVAL_ENV`] or its older name, else the default;
/// `None` when it is 0 (no watching).
fn interval() -> Option<Duration> {
    let flag = crate::settings::get().reload_interval_ms;
    let any = |_: u64| true;
    let millis = crate::settings::number(flag, RELOAD_INTERVAL_ENV, "--reload-interval-ms", any)
        .or_else(|| {
            crate::settings::number(None, WASM_RELOAD_INTERVAL_ENV, "--reload-interval-ms", any)
        });
    let interval = millis.map_or(DEFAULT_INTERVAL, Duration::from_millis);
    (!interval.is_zero()).then_some(interval)
}

/// The files a config was built from, each with the SHA-256 of the content it was built
/// with: the config file (`version`), then each module file it names (HTTP and network
/// filters).
pub fn watched_files(
    config_path: &Path,
    config: &Config,
    version: Option<[u8; 32]>,
) -> Vec<(PathBuf, Option<[u8; 32]>)> {
    let mut files = vec![(config_path.to_path_buf(), version)];
    for listener in &config.listeners {
        let http = &listener.http;
        let upgrade_filters = http.upgrades.iter().filter_map(|u| u.filters.as_ref());
        for plugin in std::iter::once(&http.http_filters)
            .chain(upgrade_filters)
            .flatten()
        {
            if let Some(source) = plugin.source()
                && !files.iter().any(|(f, _)| f == source)
            {
                files.push((source.to_path_buf(), Some(plugin.code_hash())));
            }
        }
    }
    for plugin in config
        .tcp_listeners
        .iter()
        .flat_map(|l| &l.proxy.network_filters)
    {
        if let Some(source) = plugin.source()
            && !files.iter().any(|(f, _)| f == source)
        {
            files.push((source.to_path_buf(), Some(plugin.code_hash())));
        }
    }
    files
}

/// What is compared to notice a change cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode: metadata.ino(),
    })
}

/// The SHA-256 of a watched file (the config or a Wasm module); `None` when it cannot be read
/// as a config reads it (missing, not a regular file, over the largest limit).
fn hash(path: &Path) -> Option<[u8; 32]> {
    use crate::config::file;
    let limit = file::MAX_CONFIG_BYTES.max(file::MAX_WASM_MODULE_BYTES);
    let content = file::read_limited(path, limit).ok()?;
    Some(Sha256::digest(&content).into())
}

/// One watched file: how it looked and what content a reload last used.
#[derive(Debug, Default)]
struct Seen {
    stamp: Option<Stamp>,
    hash: Option<[u8; 32]>,
}

/// The config file as a source that also tells when it, or a module file it names, changed
/// (see the module docs for how a change is told).
#[derive(Debug)]
pub struct WatchedFile {
    file: FileSource,
    /// Per watched file, how it looked and what content a reload last used.
    seen: Mutex<HashMap<PathBuf, Seen>>,
}

impl WatchedFile {
    /// Watches `file` and the module files of the configs it yields.
    pub fn new(file: FileSource) -> Self {
        WatchedFile {
            file,
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl ConfigSource for WatchedFile {
    fn name(&self) -> String {
        self.file.name()
    }

    fn load(&self) -> Result<Loaded, ConfigError> {
        self.file.load()
    }

    /// Looks at the config file and every module file `running` names; true when one of them
    /// has a content other than the one last tried. Sleeps a few milliseconds per file that
    /// looks changed (to let a writer finish): call it from the watcher's thread.
    fn changed(&self, running: &Config, version: Option<[u8; 32]>) -> bool {
        let files = watched_files(self.file.path(), running, version);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.retain(|path, _| files.iter().any(|(file, _)| file == path));
        let mut changed = Vec::new();
        for (file, loaded) in &files {
            let now = stamp(file);
            // First look (start-up, or a file a reload added): compared with the content the
            // running snapshot was built from, so a change made since then is not missed.
            let old = seen.entry(file.clone()).or_insert_with(|| Seen {
                stamp: None,
                hash: *loaded,
            });
            // Gone (an editor between unlink and rename) or unchanged: nothing to do yet.
            if now.is_none() || old.stamp == now {
                continue;
            }
            std::thread::sleep(SETTLE);
            if stamp(file) != now {
                continue;
            }
            old.stamp = now;
            let content = hash(file);
            if content.is_some() && content != old.hash {
                old.hash = content;
                changed.push(file.clone());
            }
        }
        if !changed.is_empty() {
            tracing::info!(files = ?changed, "watched file changed; reloading the config");
        }
        !changed.is_empty()
    }
}

fn run(reloader: Weak<Reloader>, runtime: tokio::runtime::Handle, interval: Duration) {
    loop {
        let Some(reloader) = reloader.upgrade() else {
            return;
        };
        let Some(source) = reloader.source().cloned() else {
            return;
        };
        let running = reloader.current();
        if source.changed(&running.config, running.config_hash) {
            // The outcome is logged and counted by the reloader.
            let _ = runtime.block_on(reloader.reload(Trigger::FileChange));
        }
        drop((running, reloader));
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_file_says_once_when_its_text_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.yaml");
        std::fs::write(&path, "node: {id: a}\n").unwrap();
        let source = WatchedFile::new(FileSource::new(&path));
        let loaded = source.load().unwrap();
        assert_eq!(source.name(), path.display().to_string());
        // The file holds what runs: no change, at the first look or later.
        assert!(!source.changed(&loaded.config, Some(loaded.version)));
        assert!(!source.changed(&loaded.config, Some(loaded.version)));
        std::fs::write(&path, "node: {id: changed}\n").unwrap();
        assert!(source.changed(&loaded.config, Some(loaded.version)));
        // Told once: the same content is not a change again, even before it is loaded.
        assert!(!source.changed(&loaded.config, Some(loaded.version)));
        assert_eq!(source.load().unwrap().config.node_id, "changed");
    }
}
