//! Where a config comes from: the seam between whatever produces configs and the reloader
//! that runs them.
//!
//! A [`ConfigSource`] yields a [`Loaded`] config: checked by the same code whatever its origin
//! ([`super::load_str`]: every resource read, every reference resolved, every Wasm module
//! compiled), so the reloader (`reload::Reloader`) treats the config file ([`FileSource`]),
//! the file watcher (`reload::watch::WatchedFile`, a file source that also notices changes)
//! and, later, an xDS client alike: it asks the source whether something new is there, loads
//! it, and swaps it in.

use super::Config;
use crate::config::ConfigError;
use std::fmt;
use std::path::{Path, PathBuf};

/// A config as its source produced it.
#[derive(Debug)]
pub struct Loaded {
    /// The config, checked.
    pub config: Config,
    /// What it was built from, for the source to tell a new version from this one (the
    /// SHA-256 of the file's text, for a file).
    pub version: [u8; 32],
}

/// Something that produces checked configs (see the module docs).
pub trait ConfigSource: Send + Sync + fmt::Debug {
    /// Names the source in logs and errors (the file's path).
    fn name(&self) -> String;

    /// Reads the source now and returns its config, checked. Blocking: it reads files and
    /// compiles Wasm modules, so call it off the request path.
    fn load(&self) -> Result<Loaded, ConfigError>;

    /// Whether the source may hold something other than `running` (the config in force, built
    /// from `version`), told cheaply and without loading it; a source that cannot tell says
    /// `false`, and is loaded again only when asked (`POST /reload`).
    fn changed(&self, running: &Config, version: Option<[u8; 32]>) -> bool {
        let _ = (running, version);
        false
    }
}

/// The config file at a path, read whole each time it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// The config file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ConfigSource for FileSource {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// Reads and checks the file (as [`super::load_file`] does), and returns its config with
    /// the SHA-256 of the text it was built from.
    fn load(&self) -> Result<Loaded, ConfigError> {
        use sha2::Digest as _;
        let text = crate::config::read_text(&self.path)?;
        let version = sha2::Sha256::digest(text.as_bytes()).into();
        let config = super::load_str(&text, &self.name())?;
        Ok(Loaded { config, version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_source_loads_the_file_and_versions_it_by_its_text() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.yaml");
        let text = "node: {id: from-file}\n";
        std::fs::write(&path, text).unwrap();
        let source = FileSource::new(&path);
        let loaded = source.load().unwrap();
        assert_eq!(loaded.config.node_id, "from-file");
        assert_eq!(loaded.config.source, path.display().to_string());
        let expected: [u8; 32] = sha2::Sha256::digest(text.as_bytes()).into();
        assert_eq!(loaded.version, expected);
        // A plain file cannot tell a change by itself: only a reload reads it again.
        assert!(!source.changed(&loaded.config, Some(loaded.version)));
    }

    #[test]
    fn a_file_source_names_the_file_and_the_field_in_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.yaml");
        std::fs::write(
            &path,
            "admin: {address: {socket_address: {address: nowhere, port_value: 1}}}\n",
        )
        .unwrap();
        let error = FileSource::new(&path).load().unwrap_err();
        assert_eq!(error.file, path.display().to_string());
        assert_eq!(error.path, "admin.address.socket_address.address");
        let missing = FileSource::new(dir.path().join("absent.yaml"))
            .load()
            .unwrap_err();
        assert_eq!(missing.path, ".");
        assert!(
            missing.message.starts_with("cannot read the file"),
            "{missing}"
        );
    }
}
