//! Process-wide settings given on the command line, for the parts that start lazily and read
//! them once: the Wasm engine (call deadline, memory limit, VM pool), the compiled-module cache
//! (its directory and size) and the file watcher (its interval).
//!
//! Each had only an environment variable before; the variable is still read where the flag is
//! not given, and the log says that the flag replaces it.

use std::path::PathBuf;
use std::sync::OnceLock;

/// What the command line set (`None`: not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessSettings {
    /// `--wasm-deadline-ms`: the longest one call into a Wasm module may run.
    pub wasm_deadline_ms: Option<u64>,
    /// `--wasm-memory-limit-mb`: the most memory one Wasm VM may hold.
    pub wasm_memory_limit_mb: Option<u64>,
    /// `--wasm-cache-dir`: where compiled modules are cached.
    pub wasm_cache_dir: Option<PathBuf>,
    /// `--wasm-cache-max-mb`: the most the compiled-module cache may hold.
    pub wasm_cache_max_mb: Option<u64>,
    /// `--wasm-pool-vms`: how many VMs the pooling allocator holds slots for (0: on demand).
    pub wasm_pool_vms: Option<u64>,
    /// `--reload-interval-ms`: how often the config and module files are checked (0 = never).
    pub reload_interval_ms: Option<u64>,
}

static SETTINGS: OnceLock<ProcessSettings> = OnceLock::new();

/// Sets the process's settings; the binary calls it once, before anything reads them. A later
/// call changes nothing.
pub fn init(settings: ProcessSettings) {
    let _ = SETTINGS.set(settings);
}

/// The process's settings (all unset when [`init`] was not called, as in tests of the library).
pub fn get() -> &'static ProcessSettings {
    SETTINGS.get_or_init(ProcessSettings::default)
}

/// A number from the flag `flag` when given, else from the environment variable `var` (logged
/// as the older way), else `None`. A variable that does not parse, or that `valid` refuses, is
/// logged and ignored.
pub fn number(
    flag: Option<u64>,
    var: &str,
    flag_name: &str,
    valid: fn(u64) -> bool,
) -> Option<u64> {
    if flag.is_some() {
        return flag;
    }
    let text = std::env::var(var).ok()?;
    match text.trim().parse::<u64>() {
        Ok(value) if valid(value) => {
            tracing::info!(
                var,
                value,
                flag = flag_name,
                "setting read from the environment; the flag replaces it"
            );
            Some(value)
        }
        _ => {
            tracing::warn!(var, value = %text, "ignoring an invalid value");
            None
        }
    }
}

/// A directory from the flag when given, else from the environment variable `var`.
pub fn directory(flag: Option<&PathBuf>, var: &str, flag_name: &str) -> Option<PathBuf> {
    if let Some(dir) = flag {
        return Some(dir.clone());
    }
    let dir = std::env::var_os(var)?;
    tracing::info!(
        var,
        flag = flag_name,
        "setting read from the environment; the flag replaces it"
    );
    Some(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_the_environment() {
        assert_eq!(
            number(Some(7), "WEIR_TEST_UNSET_VAR", "--x", |_| true),
            Some(7)
        );
        assert_eq!(number(None, "WEIR_TEST_UNSET_VAR", "--x", |_| true), None);
        let dir = PathBuf::from("/d");
        assert_eq!(
            directory(Some(&dir), "WEIR_TEST_UNSET_VAR", "--d"),
            Some(dir)
        );
    }
}
