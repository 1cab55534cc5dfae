//! The Wasm plugins of a snapshot: a filter's validated config ([`crate::config::wasm`])
//! loaded into a [`crate::wasm::PluginHandle`].

use crate::config::FieldError;
use crate::config::cluster_names::ClusterNames;
use crate::config::wasm::{WasmFilterConfig, plugin_spec, remote_code};
use crate::config::wasm_spec;

/// Loads the plugin of one Wasm filter (HTTP or network; the config has the same shape) whose
/// `typed_config` is at `typed_path`: its module is read, compiled and started once, so a
/// module that fails is a config error naming the field. A module with remote code is only
/// checked here and left pending: [`crate::wasm::remote::resolve`] fetches it once the
/// clusters (`clusters` are their names) exist.
pub fn load_plugin(
    wasm_config: &WasmFilterConfig,
    typed_path: &str,
    clusters: &ClusterNames,
    node: &wasm_spec::NodeInfo,
) -> Result<std::sync::Arc<crate::wasm::PluginHandle>, FieldError> {
    let spec = plugin_spec(wasm_config, typed_path, node)?;
    if let Some(remote) = remote_code(wasm_config, typed_path, clusters)? {
        return Ok(crate::wasm::PluginHandle::remote(spec, remote));
    }
    let source = spec.source.clone();
    let code_hash = <sha2::Sha256 as sha2::Digest>::digest(&spec.code).into();
    let plugin = crate::wasm::Plugin::load(spec)
        .map_err(|e| FieldError::new(format!("{typed_path}.config.vm_config.code.local"), e))?;
    Ok(crate::wasm::PluginHandle::new(plugin, source, code_hash))
}

#[cfg(test)]
mod tests {
    use crate::upstream::ClusterManager;
    use crate::wasm::module_cache::hex;
    use crate::wasm::remote::{Phase, Retry, resolve};
    use crate::wasm::tests::module;
    use std::time::Duration;

    #[test]
    fn envoy_wasm_filter_config_is_read_with_field_paths() {
        use base64::Engine as _;
        let code = module(weir_abi::names::ABI_VERSION_0_2_1, "", "(i32.const 1)", "");
        let inline = base64::engine::general_purpose::STANDARD.encode(&code);
        let config = |filter: &str| listener_with_filters("", filter);
        let typed_struct = format!(
            r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              value:
                config:
                  name: inline
                  vm_config:
                    runtime: envoy.wasm.runtime.wasmtime
                    code: {{ local: {{ inline_bytes: "{inline}" }} }}
                  configuration:
                    "@type": type.googleapis.com/google.protobuf.StringValue
                    value: "hello""#
        );
        let loaded = crate::snapshot::load_str(&config(&typed_struct), "t.yaml").expect("config");
        let plugins = &loaded.listeners[0].http.http_filters;
        assert_eq!(plugins.len(), 1);
        assert_eq!(plugins[0].name(), "inline");

        let missing = r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                vm_config: { code: { local: { filename: /nonexistent/filter.wasm } } }"#;
        let error = crate::snapshot::load_str(&config(missing), "t.yaml").unwrap_err();
        assert!(
            error
                .path
                .ends_with("http_filters[0].typed_config.config.vm_config.code.local.filename"),
            "{error}"
        );
        let unknown_field = r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                vm_config: { code: { local: { filename: x } } }
                bogus: 1"#;
        let error = crate::snapshot::load_str(&config(unknown_field), "t.yaml").unwrap_err();
        assert!(
            error
                .path
                .ends_with("http_filters[0].typed_config.config.bogus"),
            "{error}"
        );
        assert!(error.message.contains("bogus"), "{error}");
    }

    /// A bootstrap with `clusters` (YAML list items under `clusters:`, or nothing) and one
    /// listener whose connection manager answers every request 200 after `http_filters` (YAML
    /// list items, indented as they stand under `http_filters:`) and the router.
    fn listener_with_filters(clusters: &str, http_filters: &str) -> String {
        format!(
            r#"
static_resources:
  clusters:
{clusters}
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8080 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config: {{ virtual_hosts: [ {{ name: all, domains: ["*"], routes: [ {{ match: {{ prefix: "/" }}, direct_response: {{ status: 200 }} }} ] }} ] }}
          http_filters:
{http_filters}
          - name: envoy.filters.http.router
"#
        )
    }

    /// A config with one Wasm filter whose `code` is `code`, and a cluster `modules`.
    fn config_with_code(code: &str) -> String {
        let modules = r#"  - name: modules
    load_assignment:
      cluster_name: modules
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9 } } } } ] } ]"#;
        let filter = format!(
            r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: remote
                vm_config:
                  code: {code}"#
        );
        listener_with_filters(modules, &filter)
    }

    const SHA: &str = "d5590e100a80ae19ee9619e25cb170eedce675d28bf1e46f04f0432fb1ce84ed";
    const REMOTE: &str = "config.vm_config.code.remote";

    fn error_of(code: &str) -> crate::config::ConfigError {
        match crate::snapshot::load_str(&config_with_code(code), "t.yaml") {
            Ok(_) => panic!("{code} loads"),
            Err(error) => error,
        }
    }

    #[test]
    fn remote_code_is_read_and_left_pending() {
        let code = format!(
            "{{ remote: {{ http_uri: {{ uri: \"http://modules.local/f.wasm\", cluster: modules, timeout: 2s }}, sha256: {SHA}, retry_policy: {{ num_retries: 3, retry_back_off: {{ base_interval: 0.2s }} }} }} }}"
        );
        let config = match crate::snapshot::load_str(&config_with_code(&code), "t.yaml") {
            Ok(config) => config,
            Err(error) => panic!("{error}"),
        };
        let handles = config.plugin_handles();
        assert_eq!(handles.len(), 1);
        let handle = &handles[0];
        assert!(handle.current().is_none(), "not fetched while parsing");
        let remote = handle.remote_code().expect("remote code");
        assert_eq!(remote.cluster, "modules");
        assert_eq!(remote.timeout, Duration::from_secs(2));
        assert_eq!(hex(&remote.sha256), SHA);
        assert_eq!(
            remote.retry,
            Retry {
                num_retries: 3,
                base_interval: Duration::from_millis(200),
                max_interval: Duration::from_secs(2),
            }
        );
        assert!(remote.path.ends_with(REMOTE), "{}", remote.path);
    }

    #[test]
    fn remote_code_without_retry_policy_takes_envoys_defaults() {
        let code = format!(
            "{{ remote: {{ http_uri: {{ uri: \"http://m/f.wasm\", cluster: modules, timeout: 1s }}, sha256: {SHA} }} }}"
        );
        let config = crate::snapshot::load_str(&config_with_code(&code), "t.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        let handles = config.plugin_handles();
        let retry = handles[0].remote_code().expect("remote").retry;
        assert_eq!(retry.num_retries, 1);
        assert_eq!(retry.base_interval, Duration::from_secs(1));
        assert_eq!(retry.max_interval, Duration::from_secs(10));
    }

    #[test]
    fn remote_code_errors_name_the_field() {
        let cases = [
            (
                "{ remote: { http_uri: { uri: \"http://m/f.wasm\", cluster: modules, timeout: 1s } } }".to_owned(),
                format!("{REMOTE}.sha256"),
                "required",
            ),
            (
                "{ remote: { http_uri: { uri: \"http://m/f.wasm\", cluster: modules, timeout: 1s }, sha256: abc } }".to_owned(),
                format!("{REMOTE}.sha256"),
                "64 hex digits",
            ),
            (
                format!("{{ remote: {{ http_uri: {{ uri: \"ftp://m/f.wasm\", cluster: modules, timeout: 1s }}, sha256: {SHA} }} }}"),
                format!("{REMOTE}.http_uri.uri"),
                "scheme",
            ),
            (
                format!("{{ remote: {{ http_uri: {{ uri: \"not a uri\", cluster: modules, timeout: 1s }}, sha256: {SHA} }} }}"),
                format!("{REMOTE}.http_uri.uri"),
                "URI",
            ),
            (
                format!("{{ remote: {{ http_uri: {{ uri: \"http://m/f.wasm\", cluster: nowhere, timeout: 1s }}, sha256: {SHA} }} }}"),
                format!("{REMOTE}.http_uri.cluster"),
                "unknown cluster \"nowhere\"",
            ),
            (
                format!("{{ remote: {{ http_uri: {{ uri: \"http://m/f.wasm\", cluster: modules }}, sha256: {SHA} }} }}"),
                format!("{REMOTE}.http_uri.timeout"),
                "required",
            ),
            (
                format!("{{ remote: {{ http_uri: {{ uri: \"http://m/f.wasm\", cluster: modules, timeout: 1s }}, sha256: {SHA}, retry_policy: {{ retry_back_off: {{ base_interval: 2s, max_interval: 1s }} }} }} }}"),
                format!("{REMOTE}.retry_policy.retry_back_off.max_interval"),
                "base_interval",
            ),
            (
                format!("{{ local: {{ inline_string: x }}, remote: {{ http_uri: {{ uri: \"http://m/f.wasm\", cluster: modules, timeout: 1s }}, sha256: {SHA} }} }}"),
                "config.vm_config.code".to_owned(),
                "exactly one",
            ),
        ];
        for (code, path, message) in cases {
            let error = error_of(&code);
            assert!(error.path.ends_with(&path), "{code}: {error}");
            assert!(error.message.contains(message), "{code}: {error}");
        }
    }

    /// `oci://` goes to the OCI client, not through a cluster (its `cluster` need not exist):
    /// a registry that is not there is a fetch failure, which a reload refuses naming the field.
    #[tokio::test]
    async fn oci_uri_is_pulled_from_the_registry_it_names() {
        let code = format!(
            "{{ remote: {{ http_uri: {{ uri: \"oci://127.0.0.1:1/f:v1\", cluster: no_such_cluster, timeout: 1s }}, sha256: {SHA}, retry_policy: {{ num_retries: 0 }} }} }}"
        );
        let config = crate::snapshot::load_str(&config_with_code(&code), "t.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        let clusters =
            ClusterManager::new(config.clusters.clone()).unwrap_or_else(|e| panic!("{e}"));
        let error = resolve(&config.plugin_handles(), &clusters, Phase::Reload, "t.yaml")
            .await
            .expect_err("nothing listens on port 1");
        assert!(error.path.ends_with(REMOTE), "{error}");
        assert!(error.message.contains("oci://127.0.0.1:1/f:v1"), "{error}");
    }
}
