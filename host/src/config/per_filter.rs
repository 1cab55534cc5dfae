//! `typed_per_filter_config` of a route configuration, virtual host, route or weighted
//! cluster: per HTTP filter (by its `name` in `http_filters`), what that filter does for
//! the requests of that route.
//!
//! weir's HTTP filters have no per-route config message (Envoy 1.40's Wasm filter has none
//! either: `envoy.extensions.filters.http.wasm.v3` defines `Wasm` alone), so the one form
//! taken is Envoy's generic `envoy.config.route.v3.FilterConfig`: `disabled: true` turns the
//! filter off for the route, `disabled: false` back on under a less specific level that
//! turned it off. A `config` inside it, or any other type, is an error naming the field,
//! unless `is_optional` says the filter may ignore it.

use super::typed::PATH_MARK;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// The type URL of `envoy.config.route.v3.FilterConfig`.
pub const FILTER_CONFIG_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// `typed_per_filter_config`: filter name -> what it does on this level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerFilterConfig(pub BTreeMap<String, FilterOverride>);

/// One filter's entry of [`PerFilterConfig`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterOverride {
    /// `disabled`: the filter is skipped (true) or runs (false) for the route's requests.
    pub disabled: bool,
}

impl PerFilterConfig {
    /// Whether nothing is said.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `envoy.config.route.v3.FilterConfig`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilterConfig {
    #[serde(default)]
    config: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    is_optional: bool,
    #[serde(default)]
    disabled: bool,
}

impl<'de> Deserialize<'de> for PerFilterConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, serde_yaml_ng::Value>::deserialize(deserializer)?;
        let mut read = BTreeMap::new();
        for (name, value) in raw {
            let entry = filter_override(&name, value).map_err(D::Error::custom)?;
            if let Some(entry) = entry {
                read.insert(name, entry);
            }
        }
        Ok(PerFilterConfig(read))
    }
}

/// Reads the entry of filter `name`. Errors carry
/// their path from the entry (`NAME.@type`, `NAME.config`).
fn filter_override(
    name: &str,
    value: serde_yaml_ng::Value,
) -> Result<Option<FilterOverride>, String> {
    let serde_yaml_ng::Value::Mapping(mut fields) = value else {
        return Err(format!("{PATH_MARK}{name}{PATH_MARK}expected a mapping"));
    };
    let type_url = match fields.remove("@type") {
        Some(serde_yaml_ng::Value::String(url)) => url,
        _ => {
            return Err(format!(
                "{PATH_MARK}{name}.@type{PATH_MARK}missing \"@type\""
            ));
        }
    };
    if type_url != FILTER_CONFIG_TYPE {
        return Err(format!(
            "{PATH_MARK}{name}.@type{PATH_MARK}weir's HTTP filters take no per-route config of type {type_url:?} (Envoy 1.40's Wasm filter has no per-route message either); write {FILTER_CONFIG_TYPE:?} with `disabled`"
        ));
    }
    let raw: RawFilterConfig = serde_yaml_ng::from_value(serde_yaml_ng::Value::Mapping(fields))
        .map_err(|e| {
            format!(
                "{PATH_MARK}{name}{PATH_MARK}{}",
                super::strip_yaml_path(&e.to_string())
            )
        })?;
    // As Envoy: `disabled` wins over anything else; without it, a `config` must say the
    // filter runs (an empty one: `config: {}`), and a config of a type must be one the
    // filter takes, unless `is_optional` (then it is ignored and the filter runs).
    if raw.disabled {
        return Ok(Some(FilterOverride { disabled: true }));
    }
    let Some(config) = raw.config else {
        return Err(format!(
            "{PATH_MARK}{name}{PATH_MARK}empty per-route filter configuration: set `disabled: true`, or `config: {{}}` to turn the filter on"
        ));
    };
    let typed = match &config {
        serde_yaml_ng::Value::Mapping(fields) => fields
            .get("@type")
            .and_then(serde_yaml_ng::Value::as_str)
            .is_some_and(|url| !url.is_empty()),
        serde_yaml_ng::Value::Null => false,
        _ => true,
    };
    if typed && !raw.is_optional {
        return Err(format!(
            "{PATH_MARK}{name}.config{PATH_MARK}weir's HTTP filters take no per-route config (set is_optional to have it ignored)"
        ));
    }
    Ok(Some(FilterOverride { disabled: false }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::route::RouteConfiguration;

    fn routes(per_filter: &str) -> Result<RouteConfiguration, crate::config::FieldError> {
        let yaml = format!(
            r#"
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {{ prefix: / }}
    direct_response: {{ status: 200 }}
    typed_per_filter_config: {per_filter}
"#
        );
        let json: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        crate::config::parse_value(json)
    }

    #[test]
    fn an_http_filter_may_be_disabled_unless_a_route_turns_it_on_but_not_the_router() {
        let filters = |yaml: &str| {
            let json: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
            crate::config::parse_value::<Vec<crate::config::http_manager::HttpFilter>>(json)
        };
        let read = filters(
            r#"[ { name: w, disabled: true, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm, config: { vm_config: { runtime: envoy.wasm.runtime.v8, code: { local: { filename: /m.wasm } } } } } }, { name: envoy.filters.http.router } ]"#,
        )
        .unwrap();
        assert!(read[0].disabled && !read[1].disabled);
        let error =
            filters(r#"[ { name: envoy.filters.http.router, disabled: true } ]"#).unwrap_err();
        assert_eq!(error.path, "[0].disabled");
    }

    #[test]
    fn a_filter_config_disables_a_filter_by_name() {
        let read = routes(
            r#"{ envoy.filters.http.wasm: { "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true } }"#,
        )
        .unwrap();
        let per_filter = &read.virtual_hosts[0].routes[0].typed_per_filter_config;
        assert_eq!(
            per_filter.0.get("envoy.filters.http.wasm"),
            Some(&FilterOverride { disabled: true })
        );
    }

    #[test]
    fn another_type_or_a_config_inside_is_an_error_naming_the_field() {
        let error = routes(
            r#"{ auth: { "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm } }"#,
        )
        .unwrap_err();
        assert_eq!(
            error.path,
            "virtual_hosts[0].routes[0].typed_per_filter_config.auth.@type"
        );
        assert!(error.message.contains("per-route"), "{}", error.message);
        let error = routes(
            r#"{ auth: { "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, config: { "@type": type.googleapis.com/google.protobuf.Empty } } }"#,
        )
        .unwrap_err();
        assert_eq!(
            error.path,
            "virtual_hosts[0].routes[0].typed_per_filter_config.auth.config"
        );
        // Neither disabled nor a config: Envoy's "empty per filter configuration".
        let error = routes(
            r#"{ auth: { "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig } }"#,
        )
        .unwrap_err();
        assert_eq!(
            error.path,
            "virtual_hosts[0].routes[0].typed_per_filter_config.auth"
        );
        // An empty config turns the filter on.
        let read = routes(
            r#"{ auth: { "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, config: {} } }"#,
        )
        .unwrap();
        assert_eq!(
            read.virtual_hosts[0].routes[0].typed_per_filter_config.0["auth"],
            FilterOverride { disabled: false }
        );
        // Optional: ignored.
        let read = routes(
            r#"{ auth: { "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, is_optional: true, config: { "@type": type.googleapis.com/google.protobuf.Empty } } }"#,
        )
        .unwrap();
        assert_eq!(
            read.virtual_hosts[0].routes[0].typed_per_filter_config.0["auth"],
            FilterOverride { disabled: false }
        );
    }
}
