//! Compiling modules, with the compiled code cached on disk by the module's content hash.
//!
//! Compiling a filter takes from milliseconds to seconds; a restart or a reload of an unchanged
//! module should not pay it again. The cache lives in `--wasm-cache-dir` (or
//! `$WEIR_WASM_CACHE_DIR`), else
//! `$XDG_CACHE_HOME/weir/wasm`, else `~/.cache/weir/wasm`, else the temp dir. Failing to read
//! or write it is logged and never fatal: the module is compiled instead.

use super::WasmError;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use wasmtime::{Engine, Module};

/// Env var (older than `--wasm-cache-dir`): where compiled modules are cached.
pub const CACHE_DIR_ENV: &str = "WEIR_WASM_CACHE_DIR";

/// The cache directory (see the module docs), found once.
pub fn cache_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(find_cache_dir).clone()
}

fn find_cache_dir() -> PathBuf {
    let flag = crate::settings::get().wasm_cache_dir.as_ref();
    if let Some(dir) = crate::settings::directory(flag, CACHE_DIR_ENV, "--wasm-cache-dir") {
        return dir;
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("weir").join("wasm");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("weir").join("wasm");
    }
    std::env::temp_dir().join("weir-wasm-cache")
}

/// The cache file name of `bytes`: its SHA-256 and the weir version that compiled it.
fn cache_key(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-weir{}.cwasm", env!("CARGO_PKG_VERSION"))
}

/// The compiled `bytes`: from the cache when it holds them, else compiled (and cached).
pub fn compile(engine: &Engine, bytes: &[u8]) -> Result<Module, WasmError> {
    let path = cache_dir().join(cache_key(bytes));
    if path.is_file() {
        // SAFETY: wasmtime requires the file to hold code it serialized itself. The cache
        // directory is weir's own, each file is written whole by `store` below (temp file +
        // rename), and `deserialize_file` still checks the engine and version it was made for.
        match unsafe { Module::deserialize_file(engine, &path) } {
            Ok(module) => {
                tracing::debug!(path = %path.display(), "Wasm module from cache");
                return Ok(module);
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "unusable cached Wasm module; compiling");
            }
        }
    }
    let module = Module::new(engine, bytes).map_err(|e| WasmError::Compile(format!("{e:#}")))?;
    if let Err(error) = store(&module, &path) {
        tracing::warn!(path = %path.display(), %error, "cannot cache the compiled Wasm module");
    }
    Ok(module)
}

fn store(module: &Module, path: &std::path::Path) -> Result<(), String> {
    let serialized = module.serialize().map_err(|e| e.to_string())?;
    let dir = path.parent().ok_or("no cache directory")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&temp, serialized).map_err(|e| e.to_string())?;
    std::fs::rename(&temp, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        e.to_string()
    })
}
