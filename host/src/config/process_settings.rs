//! `weir.config.v1.ProcessSettings`: weir's own bootstrap extension for the process-wide
//! settings that are also command-line flags (the Wasm call deadline and memory limit, the
//! compiled-module cache, the file watcher's interval), so a deployment can keep them in the
//! config file instead of the command line or the environment:
//!
//! ```yaml
//! bootstrap_extensions:
//! - name: weir.settings
//!   typed_config:
//!     "@type": type.googleapis.com/weir.config.v1.ProcessSettings
//!     wasm_deadline_ms: 100
//!     wasm_memory_limit_mb: 256
//!     wasm_cache_dir: /var/cache/weir/wasm
//!     reload_interval_ms: 500
//!     accel: splice
//! ```
//!
//! Which wins: the flag, then this extension, then the older environment variable, then the
//! default. These settings are read once, when the process starts (before the config's Wasm
//! modules are compiled), so [`read_file`] takes them from the file before it is loaded; a
//! reload that changes them is refused, as for the other parts that need a restart. Envoy
//! refuses an extension type it does not know, so a config with this one is weir's only.

use serde::Deserialize;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};

/// The `@type` (without `type.googleapis.com/`).
pub const PROCESS_SETTINGS: &str = "weir.config.v1.ProcessSettings";

/// The extension's fields; each is the command-line flag of the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSettingsConfig {
    /// `--wasm-deadline-ms`.
    #[serde(default)]
    pub wasm_deadline_ms: Option<u64>,
    /// `--wasm-memory-limit-mb`.
    #[serde(default)]
    pub wasm_memory_limit_mb: Option<u64>,
    /// `--wasm-cache-dir`.
    #[serde(default)]
    pub wasm_cache_dir: Option<PathBuf>,
    /// `--wasm-cache-max-mb`.
    #[serde(default)]
    pub wasm_cache_max_mb: Option<u64>,
    /// `--wasm-pool-vms`.
    #[serde(default)]
    pub wasm_pool_vms: Option<u64>,
    /// `--reload-interval-ms`.
    #[serde(default)]
    pub reload_interval_ms: Option<u64>,
    /// `--accel` (replaces `WEIR_ACCEL`): how plain TCP tunnels move their payload.
    #[serde(default)]
    pub accel: Option<AccelSetting>,
}

/// `accel`: the names `--accel` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelSetting {
    /// The eBPF splice where the program loads, else `splice`.
    #[serde(alias = "auto")]
    Kernel,
    /// `splice(2)` through a pipe per direction (the default).
    #[serde(alias = "userspace")]
    Splice,
    /// read/write copies.
    Copy,
}

/// The settings extension of the config file at `path`, read before the file is loaded (see
/// the module docs); `None` when the file has none, or cannot be read or parsed (the load
/// that follows reports that, with the field path).
pub fn read_file(path: &Path) -> Option<ProcessSettingsConfig> {
    let text = super::file::read_limited(path, super::file::MAX_CONFIG_BYTES).ok()?;
    let text = String::from_utf8(text).ok()?;
    from_text(&text)
}

/// As [`read_file`], from the file's text.
pub fn from_text(text: &str) -> Option<ProcessSettingsConfig> {
    // The same bounds as the load's, before any parser sees the text: a hostile file must not
    // cost more here than it will there.
    super::yaml_limits::check(text).ok()?;
    let document: Value = serde_yaml_ng::from_str(text).ok()?;
    let extensions = document.get("bootstrap_extensions")?;
    let entries: Vec<&Value> = match extensions {
        Value::Sequence(list) => list.iter().collect(),
        // A repeated field written as one object (see `lenient`).
        single @ Value::Mapping(_) => vec![single],
        _ => return None,
    };
    entries.into_iter().find_map(|entry| {
        let typed = entry.get("typed_config")?;
        let type_url = typed.get("@type")?.as_str()?;
        if type_url.rsplit('/').next() != Some(PROCESS_SETTINGS) {
            return None;
        }
        let mut fields = typed.as_mapping()?.clone();
        fields.remove("@type");
        serde_yaml_ng::from_value(Value::Mapping(fields)).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
bootstrap_extensions:
- name: weir.settings
  typed_config:
    "@type": type.googleapis.com/weir.config.v1.ProcessSettings
    wasm_deadline_ms: 250
    wasm_cache_dir: /var/cache/weir
"#;

    #[test]
    fn read_before_the_load_and_parsed_by_the_load() {
        let settings = from_text(CONFIG).expect("found");
        assert_eq!(settings.wasm_deadline_ms, Some(250));
        assert_eq!(
            settings.wasm_cache_dir,
            Some(PathBuf::from("/var/cache/weir"))
        );
        assert_eq!(settings.wasm_memory_limit_mb, None);
        let bootstrap = crate::config::parse(CONFIG).expect("parses");
        let [extension] = bootstrap.bootstrap_extensions.as_slice() else {
            panic!("one extension");
        };
        assert!(matches!(
            &extension.kind,
            crate::config::service::ExtensionKind::ProcessSettings(parsed) if *parsed == settings
        ));
    }

    #[test]
    fn accel_takes_the_flags_names_and_refuses_others() {
        let with =
            |value: &str| CONFIG.replace("wasm_deadline_ms: 250", &format!("accel: {value}"));
        for (name, expected) in [
            ("kernel", AccelSetting::Kernel),
            ("auto", AccelSetting::Kernel),
            ("splice", AccelSetting::Splice),
            ("userspace", AccelSetting::Splice),
            ("copy", AccelSetting::Copy),
        ] {
            assert_eq!(from_text(&with(name)).expect(name).accel, Some(expected));
        }
        let error = crate::config::parse(&with("fast")).expect_err("refused");
        assert_eq!(error.path, "bootstrap_extensions[0].typed_config.accel");
    }

    #[test]
    fn an_unknown_field_is_a_config_error_naming_it() {
        let error = crate::config::parse(&CONFIG.replace("wasm_deadline_ms", "wasm_deadline"))
            .expect_err("refused");
        assert_eq!(
            error.path,
            "bootstrap_extensions[0].typed_config.wasm_deadline"
        );
        assert_eq!(from_text("listeners: []"), None);
        let deep = format!(
            "bootstrap_extensions: {}{}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            from_text(&deep),
            None,
            "refused by the nesting bound, at once"
        );
    }
}
