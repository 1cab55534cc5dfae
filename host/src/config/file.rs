//! Files a config names (the config itself, Wasm modules, body files, certificates, keys and
//! CA bundles), read with a size limit and only when they are regular files.
//!
//! A config is input weir must survive: a path may name `/dev/zero`, a FIFO nobody writes, a
//! directory or a file of many gigabytes. [`read_limited`] opens without blocking (a FIFO's
//! open would otherwise wait for a writer), checks the opened descriptor (not the path, which
//! could change in between) is a regular file, and reads at most `limit + 1` bytes, so no file
//! can hang `weir validate` or grow its memory past the limit.

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Most bytes of a config file (YAML). Envoy's own largest example configs are tens of KiB; a
/// generated config with thousands of routes stays well under this.
pub const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;

/// Most bytes of a Wasm module file. Filters built with the proxy-wasm SDKs are tens of KiB to
/// a few MiB; compiled languages with a runtime (Go, .NET) reach 10-20 MiB.
pub const MAX_WASM_MODULE_BYTES: u64 = 64 * 1024 * 1024;

/// Most bytes of a PEM file: a certificate chain, a private key or a CA bundle. The Mozilla CA
/// bundle is about 220 KiB.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Why a file a config names cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It cannot be opened (missing, no permission, ...).
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is a directory, a FIFO, a device or a socket.
    #[error("not a regular file: {} is a {kind}", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// It holds more than the limit.
    #[error("{} is larger than {limit} bytes, the most weir reads for it", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// Reading failed part way.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads the whole of the regular file at `path` if it holds at most `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    // A device is not even opened when the path says what it is (opening some has effects:
    // a watchdog arms, a tape rewinds); the opened descriptor is checked again below, since
    // the path may change in between.
    if let Some(kind) = std::fs::metadata(path)
        .ok()
        .and_then(|metadata| irregular_kind(&metadata.file_type()))
    {
        return Err(FileError::NotRegular {
            path: path.into(),
            kind,
        });
    }
    // O_NONBLOCK: opening a FIFO for reading blocks until a writer comes; with it the open
    // returns at once and the type check below refuses it. O_NOCTTY: a terminal named here
    // must not become weir's controlling terminal. Neither changes how a regular file reads.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| FileError::Open {
            path: path.into(),
            source,
        })?;
    let metadata = file.metadata().map_err(|source| FileError::Read {
        path: path.into(),
        source,
    })?;
    if let Some(kind) = irregular_kind(&metadata.file_type()) {
        return Err(FileError::NotRegular {
            path: path.into(),
            kind,
        });
    }
    let too_large = || FileError::TooLarge {
        path: path.into(),
        limit,
    };
    if metadata.len() > limit {
        return Err(too_large());
    }
    // The size can change after the fstat (a file being written): `take` bounds the read
    // whatever the file does, and one byte past the limit tells "too large" from "exactly".
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Read {
            path: path.into(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// What a file is when it is not a regular file; `None` for a regular file.
fn irregular_kind(file_type: &std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("directory")
    } else if file_type.is_fifo() {
        Some("FIFO")
    } else if file_type.is_char_device() {
        Some("character device")
    } else if file_type.is_block_device() {
        Some("block device")
    } else if file_type.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn read_error(path: &Path, limit: u64) -> String {
        match read_limited(path, limit) {
            Ok(bytes) => panic!("{} read {} bytes", path.display(), bytes.len()),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn reads_a_regular_file_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_limited(&file, 5).unwrap(), b"12345");
        assert!(read_error(&file, 4).contains("larger than 4 bytes"));
    }

    #[test]
    fn refuses_devices_directories_and_fifos_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let fifo_c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        assert!(read_error(Path::new("/dev/zero"), 10).contains("character device"));
        assert!(read_error(dir.path(), 10).contains("directory"));
        assert!(read_error(&fifo, 10).contains("FIFO"));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let error = read_error(Path::new("/nonexistent/weir-file"), 10);
        assert!(
            error.contains("cannot open /nonexistent/weir-file"),
            "{error}"
        );
    }
}
