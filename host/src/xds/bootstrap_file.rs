//! The bootstrap file as the xDS state reads it: once per update, and again for each interest
//! it computes. The file is read each time (a change to it is seen at once), but parsed only
//! when its text changed: a control plane's stream of one-route updates would otherwise parse
//! the same YAML twice per update.

use crate::config::bootstrap::Bootstrap;
use crate::config::{ConfigError, parse, read_text, yaml_limits};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// One read of the file, parsed.
#[derive(Debug)]
pub(super) struct ParsedFile {
    /// What the file said.
    text: String,
    /// The sha256 of `text`: the config's version, as the file source gives it.
    pub version: [u8; 32],
    /// Its static resources and settings, read into the schema.
    pub bootstrap: Bootstrap,
    /// The file as JSON, for `/config_dump`'s bootstrap.
    pub dump: serde_json::Value,
}

/// The bootstrap file at a path, with the parse of its last read.
#[derive(Debug)]
pub(super) struct BootstrapFile {
    path: PathBuf,
    /// What `path` names in errors.
    name: String,
    last: Mutex<Option<Arc<ParsedFile>>>,
}

impl BootstrapFile {
    /// The file at `path`; `name` names it in errors.
    pub fn new(path: PathBuf, name: String) -> BootstrapFile {
        BootstrapFile {
            path,
            name,
            last: Mutex::new(None),
        }
    }

    /// What the file is called in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the file and parses it, unless its text is that of the last read, whose parse is
    /// given again.
    pub fn read(&self) -> Result<Arc<ParsedFile>, ConfigError> {
        use sha2::Digest as _;
        let text = read_text(&self.path)?;
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(parsed) = last.as_ref()
            && parsed.text == text
        {
            return Ok(parsed.clone());
        }
        yaml_limits::check(&text).map_err(|e| e.in_file(&self.name))?;
        let bootstrap = parse(&text).map_err(|e| e.in_file(&self.name))?;
        let dump =
            serde_yaml_ng::from_str::<serde_json::Value>(&text).unwrap_or(serde_json::Value::Null);
        let parsed = Arc::new(ParsedFile {
            version: sha2::Sha256::digest(text.as_bytes()).into(),
            text,
            bootstrap,
            dump,
        });
        *last = Some(parsed.clone());
        Ok(parsed)
    }

    /// The file's static bootstrap as it reads now; one that does not read has none (the
    /// reload that would run it fails and says why).
    pub fn statics(&self) -> Bootstrap {
        self.read()
            .map(|parsed| parsed.bootstrap.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_parses_again_only_when_the_text_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weir.yaml");
        let write = |text: &str| std::fs::write(&path, text).expect("write");
        write("static_resources: {clusters: [{name: a}]}\n");
        let file = BootstrapFile::new(path.clone(), "weir.yaml".into());
        let first = file.read().expect("reads");
        let again = file.read().expect("reads");
        assert!(Arc::ptr_eq(&first, &again), "the same text is parsed once");
        write("static_resources: {clusters: [{name: b}]}\n");
        let changed = file.read().expect("reads");
        assert_eq!(changed.bootstrap.static_resources.clusters[0].name, "b");
        assert_ne!(changed.version, first.version);
        write("static_resources: {clusters: [{nome: b}]}\n");
        let error = file.read().expect_err("an unknown field");
        assert_eq!(error.file, "weir.yaml");
        assert!(file.statics().static_resources.clusters.is_empty());
    }
}
