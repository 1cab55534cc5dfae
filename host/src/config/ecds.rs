//! An ECDS resource (`envoy.config.core.v3.TypedExtensionConfig`): the config of an HTTP
//! filter or of a network filter whose `config_discovery` names it. Which of the two it is
//! follows from its `typed_config`'s type; the xDS assembler checks that it fits the filters
//! that ask for it.

use super::FieldError;
use super::http_manager::{HttpFilterConfig, http_filter_config, typed_config_type_url};
use super::listener::{NetworkFilterConfig, network_filter_config};
use super::typed::type_names;

/// A filter config delivered over ECDS (`{name, typed_config}`), read as an HTTP filter's or
/// a network filter's `typed_config` is.
#[derive(Debug, Clone)]
pub struct ExtensionConfig {
    /// The resource's `name`: the `name` of the filters that ask for it.
    pub name: String,
    /// The type URL of its `typed_config` (checked against each filter's `type_urls`).
    pub type_url: String,
    /// What it configures.
    pub config: DiscoveredConfig,
}

/// What an ECDS resource configures.
#[derive(Debug, Clone)]
pub enum DiscoveredConfig {
    /// An HTTP filter (`envoy.filters.http.*`).
    Http(HttpFilterConfig),
    /// A network filter (`envoy.filters.network.wasm`).
    Network(NetworkFilterConfig),
}

impl DiscoveredConfig {
    /// `http` or `network`, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            DiscoveredConfig::Http(_) => "an HTTP",
            DiscoveredConfig::Network(_) => "a network",
        }
    }
}

/// The network filter types a network filter's config may be over ECDS (the terminal ones,
/// the connection manager and the tcp_proxy, are not).
const NETWORK_TYPES: &[&str] = &[type_names::NETWORK_WASM];

/// Reads an ECDS resource (`{name, typed_config}`, in Envoy's JSON shape); the error's path
/// is inside the resource (`typed_config...`).
pub fn extension_config(json: &serde_json::Value) -> Result<ExtensionConfig, FieldError> {
    let name = json
        .get("name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(typed_config) = json.get("typed_config") else {
        return Err(FieldError::new(
            "typed_config",
            "an extension config needs a typed_config",
        ));
    };
    let type_url = typed_config_type_url(typed_config)
        .ok_or_else(|| FieldError::new("typed_config", "missing \"@type\""))?;
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::to_value(typed_config).map_err(|e| FieldError::new("typed_config", e))?;
    let type_name = type_url
        .strip_prefix("type.googleapis.com/")
        .unwrap_or(&type_url);
    let network = type_name.starts_with("envoy.extensions.filters.network.");
    let config = if network {
        if !NETWORK_TYPES.contains(&type_name) {
            return Err(FieldError::new(
                "typed_config.@type",
                format!(
                    "{type_name:?} is not a network filter weir takes over ECDS; it takes {}",
                    NETWORK_TYPES.join(", ")
                ),
            ));
        }
        DiscoveredConfig::Network(
            network_filter_config(&name, Some(value)).map_err(super::typed::inner_error)?,
        )
    } else {
        let config = http_filter_config(&name, Some(value)).map_err(super::typed::inner_error)?;
        if matches!(config, HttpFilterConfig::Router(_)) {
            return Err(FieldError::new(
                "typed_config.@type",
                "the router is not a filter weir takes over ECDS",
            ));
        }
        DiscoveredConfig::Http(config)
    };
    Ok(ExtensionConfig {
        name,
        type_url,
        config,
    })
}
