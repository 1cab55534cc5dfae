//! `bootstrap_extensions[]`: the extensions Envoy starts with the process, outside any listener.
//! weir implements Envoy's `envoy.bootstrap.wasm` (`envoy.extensions.wasm.v3.WasmService`): a
//! Wasm service, a module whose root context runs for the life of the process (ticks, shared
//! data and queues with the filters, HTTP callouts) without serving streams; and its own
//! `weir.config.v1.ProcessSettings` ([`super::process_settings`]), the process-wide settings
//! that are also command-line flags.
//!
//! As in Envoy, the extension is picked by its `typed_config`'s `@type` (the `name` is free);
//! any other type is a config error naming it.

use super::typed::{PATH_MARK, split_typed, typed};
use super::wasm::PluginConfig;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// The `@type` of a Wasm service.
pub const WASM_SERVICE: &str = "envoy.extensions.wasm.v3.WasmService";

/// One `bootstrap_extensions[]` entry.
#[derive(Debug, Clone)]
pub struct BootstrapExtension {
    /// Its `name` (Envoy's is `envoy.bootstrap.wasm`; any name is taken).
    pub name: String,
    /// What it is.
    pub kind: ExtensionKind,
}

/// The bootstrap extensions weir implements.
#[derive(Debug, Clone)]
pub enum ExtensionKind {
    /// A Wasm service.
    WasmService(Box<WasmService>),
    /// weir's process settings.
    ProcessSettings(super::process_settings::ProcessSettingsConfig),
}

impl BootstrapExtension {
    /// The Wasm service, if that is what it is.
    pub fn wasm_service(&self) -> Option<&WasmService> {
        match &self.kind {
            ExtensionKind::WasmService(service) => Some(service),
            ExtensionKind::ProcessSettings(_) => None,
        }
    }
}

/// `envoy.extensions.wasm.v3.WasmService`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmService {
    /// The plugin: the same shape as the HTTP Wasm filter's `config`.
    pub config: PluginConfig,
    /// `true`: one VM for the process, on a thread of its own; `false` (Envoy's default): one
    /// VM on each worker.
    #[serde(default)]
    pub singleton: bool,
}

impl<'de> Deserialize<'de> for BootstrapExtension {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            name: String,
            #[serde(default)]
            typed_config: Option<serde_yaml_ng::Value>,
        }
        let raw = Raw::deserialize(deserializer)?;
        let typed_config = raw.typed_config.ok_or_else(|| {
            D::Error::custom(format!(
                "{PATH_MARK}typed_config{PATH_MARK}bootstrap extension {:?} needs a typed_config \
                 with \"@type\": type.googleapis.com/{WASM_SERVICE}",
                raw.name
            ))
        })?;
        let (type_name, value) =
            split_typed(&raw.name, Some(typed_config)).map_err(D::Error::custom)?;
        let kind = match type_name.as_str() {
            WASM_SERVICE => ExtensionKind::WasmService(typed(value).map_err(D::Error::custom)?),
            super::process_settings::PROCESS_SETTINGS => {
                ExtensionKind::ProcessSettings(typed(value).map_err(D::Error::custom)?)
            }
            other => {
                return Err(D::Error::custom(format!(
                    "{PATH_MARK}typed_config.@type{PATH_MARK}unsupported bootstrap extension type \
                     {other:?} (extension {:?}); weir supports type.googleapis.com/{WASM_SERVICE} \
                     (envoy.bootstrap.wasm) and type.googleapis.com/{}",
                    raw.name,
                    super::process_settings::PROCESS_SETTINGS
                )));
            }
        };
        Ok(BootstrapExtension {
            name: raw.name,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    fn error_of(text: &str) -> (String, String) {
        let error = parse(text).expect_err("refused");
        (error.path, error.message)
    }

    #[test]
    fn wasm_service_parses_with_its_singleton_flag() {
        let bootstrap = parse(
            r#"
bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: true
    config:
      name: hello
      vm_config:
        runtime: envoy.wasm.runtime.v8
        code: { local: { filename: /x.wasm } }
"#,
        )
        .expect("parses");
        let [extension] = bootstrap.bootstrap_extensions.as_slice() else {
            panic!("one extension");
        };
        assert_eq!(extension.name, "envoy.bootstrap.wasm");
        let service = extension.wasm_service().expect("a Wasm service");
        assert!(service.singleton);
        assert_eq!(service.config.name, "hello");
    }

    #[test]
    fn another_extension_type_is_refused_by_its_type() {
        let (path, message) = error_of(
            r#"
bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
"#,
        );
        assert_eq!(path, "bootstrap_extensions[0].typed_config.@type");
        assert!(
            message.contains("envoy.extensions.bootstrap.internal_listener.v3.InternalListener"),
            "{message}"
        );
        assert!(message.contains(super::WASM_SERVICE), "{message}");
    }

    #[test]
    fn unknown_field_of_a_service_names_its_path() {
        let (path, _) = error_of(
            r#"
bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singelton: true
    config: { vm_config: { code: { local: { filename: /x.wasm } } } }
"#,
        );
        assert_eq!(path, "bootstrap_extensions[0].typed_config.singelton");
    }

    #[test]
    fn missing_typed_config_is_refused() {
        let (path, message) = error_of("bootstrap_extensions:\n- name: envoy.bootstrap.wasm\n");
        assert_eq!(path, "bootstrap_extensions[0].typed_config");
        assert!(message.contains("needs a typed_config"), "{message}");
    }
}
