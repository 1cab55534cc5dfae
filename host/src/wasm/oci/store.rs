//! The local store of pulled modules: `<wasm cache dir>/oci/<key>.wasm`, the key being the
//! SHA-256 of the reference (as written, normalised) and the module's expected digest.
//!
//! What `IfNotPresent` serves without asking the registry. An entry is used only when its
//! bytes hash to the digest the config expects; a corrupt or swapped file is deleted and the
//! module pulled again. Files are written whole (temp file + rename), so a crash mid-write
//! leaves no half entry.

use crate::wasm::module_cache::hex;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// The store in `dir`.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store under `dir` (created on the first write).
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    /// The file of `reference` + `sha256` (hex).
    pub fn path(&self, reference: &str, sha256: &str) -> PathBuf {
        let key = hex(&Sha256::digest(format!("{reference}\n{sha256}").as_bytes()));
        self.dir.join(format!("{key}.wasm"))
    }

    /// The stored module of `reference` whose bytes hash to `sha256`, if any.
    pub fn get(&self, reference: &str, sha256: &str, limit: u64) -> Option<Vec<u8>> {
        let path = self.path(reference, sha256);
        let bytes = match crate::config::file::read_limited(&path, limit) {
            Ok(bytes) => bytes,
            Err(crate::config::file::FileError::Open { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return None;
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "unreadable stored OCI module; pulling it again");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        let actual = hex(&Sha256::digest(&bytes));
        if actual != sha256 {
            tracing::warn!(
                path = %path.display(),
                expected = sha256,
                actual,
                "stored OCI module does not match its digest; deleting it and pulling again"
            );
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// Stores `bytes` for `reference` + `sha256`; failures are logged (the pull still counts).
    pub fn put(&self, reference: &str, sha256: &str, bytes: &[u8]) {
        let path = self.path(reference, sha256);
        if let Err(error) = write_whole(&self.dir, &path, bytes) {
            tracing::warn!(path = %path.display(), %error, "cannot store the pulled OCI module");
        }
    }
}

fn write_whole(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        let store = Store::new(dir.path().join("oci"));
        let module = b"\0asm\x01\0\0\0".to_vec();
        let digest = hex(&Sha256::digest(&module));
        assert_eq!(store.get("r/f:v1", &digest, 1024), None, "empty store");
        store.put("r/f:v1", &digest, &module);
        assert_eq!(store.get("r/f:v1", &digest, 1024), Some(module.clone()));
        assert_eq!(
            store.get("r/f:v2", &digest, 1024),
            None,
            "keyed by reference"
        );
        // A file whose bytes no longer match is dropped, not served.
        let path = store.path("r/f:v1", &digest);
        if let Err(e) = std::fs::write(&path, b"\0asm\x01\0\0") {
            panic!("truncate: {e}");
        }
        assert_eq!(store.get("r/f:v1", &digest, 1024), None);
        assert!(!path.exists(), "the corrupt entry is deleted");
    }
}
