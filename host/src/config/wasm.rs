//! `envoy.extensions.filters.http.wasm.v3.Wasm`: the proxy-wasm filter's config as Envoy writes
//! it, and its reading into a [`crate::wasm::PluginSpec`].
//!
//! The plugin and VM `configuration` fields are protobuf `Any`s: usually a `StringValue`, whose
//! string's bytes are what the module reads. Any `runtime` is accepted (weir runs every module
//! on wasmtime).

use super::FieldError;
use super::schema::DataSource;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// `typed_config` of `envoy.filters.http.wasm`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmFilterConfig {
    /// The plugin.
    pub config: PluginConfig,
}

/// `envoy.extensions.wasm.v3.PluginConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin's name (logs, metrics, the `plugin_name` property).
    #[serde(default)]
    pub name: String,
    /// The root context the module's SDK dispatches to.
    #[serde(default)]
    pub root_id: String,
    /// The VM that runs the module.
    pub vm_config: VmConfig,
    /// Handed to `proxy_on_configure`.
    #[serde(default)]
    pub configuration: Option<Value>,
    /// On a VM failure, pass the stream through instead of answering 500.
    #[serde(default)]
    pub fail_open: bool,
    /// Envoy's newer spelling: `FAIL_CLOSED` (default), `FAIL_OPEN`, `FAIL_RELOAD`.
    #[serde(default)]
    pub failure_policy: Option<String>,
    /// Accepted and ignored: weir always lets `on_request_headers` pause.
    #[serde(default)]
    pub allow_on_headers_stop_iteration: Option<bool>,
}

/// `envoy.extensions.wasm.v3.VmConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// VMs with the same id share shared data and queues.
    #[serde(default)]
    pub vm_id: String,
    /// Envoy's runtime name; any value runs on wasmtime here.
    #[serde(default)]
    pub runtime: String,
    /// Where the module is.
    pub code: AsyncDataSource,
    /// Handed to `proxy_on_vm_start`.
    #[serde(default)]
    pub configuration: Option<Value>,
    /// Accepted and ignored (weir caches compiled modules itself).
    #[serde(default)]
    pub allow_precompiled: bool,
    /// Accepted and ignored.
    #[serde(default)]
    pub nack_on_code_cache_miss: bool,
    /// Accepted and ignored: the WASI environment of a module is empty here.
    #[serde(default)]
    pub environment_variables: Option<Value>,
}

/// `config.core.v3.AsyncDataSource`: only `local` is supported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncDataSource {
    /// A file or inline bytes.
    #[serde(default)]
    pub local: Option<DataSource>,
    /// A remote fetch (not supported).
    #[serde(default)]
    pub remote: Option<Value>,
}

/// Reads a plugin's config into what the Wasm host needs; `path` is the filter's
/// `typed_config` path. The module is loaded (and compiled) here, so a missing or broken
/// module is a config error.
pub fn plugin_spec(
    filter: &WasmFilterConfig,
    path: &str,
    node: &crate::wasm::NodeInfo,
) -> Result<crate::wasm::PluginSpec, FieldError> {
    let plugin = &filter.config;
    let vm = &plugin.vm_config;
    let code_path = format!("{path}.config.vm_config.code");
    let code = match (&vm.code.local, &vm.code.remote) {
        (Some(local), None) => module_bytes(local, &format!("{code_path}.local"))?,
        (None, Some(remote)) if is_oci(remote) => {
            oci_module(remote, &format!("{code_path}.remote"))?
        }
        _ => {
            return Err(FieldError::new(
                code_path,
                "expected code.local with a filename or inline_bytes; remote code is not supported",
            ));
        }
    };
    let fail_open = match plugin.failure_policy.as_deref() {
        None | Some("UNSPECIFIED") => plugin.fail_open,
        Some("FAIL_CLOSED") => false,
        Some("FAIL_OPEN") => true,
        Some("FAIL_RELOAD") => plugin.fail_open,
        Some(other) => {
            return Err(FieldError::new(
                format!("{path}.config.failure_policy"),
                format!(
                    "unknown failure policy {other:?}; accepted: FAIL_CLOSED, FAIL_OPEN, FAIL_RELOAD"
                ),
            ));
        }
    };
    Ok(crate::wasm::PluginSpec {
        name: plugin.name.clone(),
        root_id: plugin.root_id.clone(),
        vm_id: vm.vm_id.clone(),
        code,
        vm_configuration: configuration_bytes(
            vm.configuration.as_ref(),
            &format!("{path}.config.vm_config.configuration"),
        )?,
        plugin_configuration: configuration_bytes(
            plugin.configuration.as_ref(),
            &format!("{path}.config.configuration"),
        )?,
        fail_open,
        node: node.clone(),
        source: vm
            .code
            .local
            .as_ref()
            .and_then(|local| local.filename.as_ref())
            .map(std::path::PathBuf::from),
    })
}

/// `code.remote` as an OCI image: `http_uri.uri: oci://registry/repo:tag[@sha256:...]`.
/// (The h19-remote branch owns `remote`; this reads just what an OCI pull needs.)
#[derive(Debug, Deserialize)]
struct OciRemote {
    http_uri: OciUri,
    /// The module's SHA-256 (hex): required, the module is pinned by it.
    sha256: String,
    /// Not used for OCI pulls (the timeout bounds the pull).
    #[serde(default)]
    #[allow(dead_code)]
    retry_policy: Option<Value>,
    /// weir's own: `IfNotPresent` (default) or `Always`, as Istio's `imagePullPolicy`.
    #[serde(default)]
    weir_image_pull_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OciUri {
    uri: String,
    /// Not used for OCI pulls (the registry is reached directly).
    #[serde(default)]
    #[allow(dead_code)]
    cluster: Option<String>,
    #[serde(default)]
    timeout: Option<super::duration::ConfigDuration>,
}

/// The time an OCI pull may take when `http_uri.timeout` is absent or zero.
const DEFAULT_OCI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn is_oci(remote: &Value) -> bool {
    remote
        .get("http_uri")
        .and_then(|u| u.get("uri"))
        .and_then(Value::as_str)
        .is_some_and(|uri| uri.starts_with("oci://"))
}

/// Pulls the module of an `oci://` `code.remote` at `path`.
fn oci_module(remote: &Value, path: &str) -> Result<Vec<u8>, FieldError> {
    let remote: OciRemote = serde_yaml_ng::from_value(remote.clone())
        .map_err(|e| FieldError::new(path, format!("bad OCI remote code: {e}")))?;
    let pull_policy = match remote.weir_image_pull_policy.as_deref() {
        None => crate::wasm::oci::PullPolicy::default(),
        Some(text) => crate::wasm::oci::PullPolicy::parse(text).ok_or_else(|| {
            FieldError::new(
                format!("{path}.weir_image_pull_policy"),
                format!("unknown pull policy {text:?}; accepted: IfNotPresent, Always"),
            )
        })?,
    };
    let timeout = remote
        .http_uri
        .timeout
        .map(|t| t.get())
        .filter(|t| !t.is_zero())
        .unwrap_or(DEFAULT_OCI_TIMEOUT);
    let request = crate::wasm::oci::OciRequest {
        reference: remote.http_uri.uri.clone(),
        sha256: remote.sha256.clone(),
        pull_policy,
        timeout,
        docker_config: None,
    };
    crate::wasm::oci::pull_blocking(&request).map_err(|e| {
        tracing::error!(reference = %remote.http_uri.uri, error = %e, "cannot pull the Wasm module");
        FieldError::new(
            format!("{path}.http_uri.uri"),
            format!("cannot pull {}: {e}", remote.http_uri.uri),
        )
    })
}

fn module_bytes(source: &DataSource, path: &str) -> Result<Vec<u8>, FieldError> {
    match (
        &source.filename,
        &source.inline_bytes,
        &source.inline_string,
    ) {
        (Some(file), None, None) => {
            super::file::read_limited(file.as_ref(), super::file::MAX_WASM_MODULE_BYTES).map_err(
                |e| {
                    FieldError::new(
                        format!("{path}.filename"),
                        format!("cannot read the Wasm module: {e}"),
                    )
                },
            )
        }
        (None, Some(encoded), None) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| {
                    FieldError::new(
                        format!("{path}.inline_bytes"),
                        format!("not valid base64: {e}"),
                    )
                })
        }
        (None, None, Some(text)) => Ok(text.as_bytes().to_vec()),
        _ => Err(FieldError::new(
            path,
            "expected exactly one of filename, inline_bytes, inline_string",
        )),
    }
}

/// The bytes a module reads for a `configuration` Any: a `StringValue`'s string, a
/// `BytesValue`'s decoded bytes, a plain string as is, anything else as JSON.
fn configuration_bytes(value: Option<&Value>, path: &str) -> Result<Vec<u8>, FieldError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(text) => Ok(text.as_bytes().to_vec()),
        Value::Mapping(fields) => {
            let type_url = fields.get("@type").and_then(Value::as_str).unwrap_or("");
            let type_name = type_url.rsplit('/').next().unwrap_or("");
            let inner = fields.get("value");
            match (type_name, inner) {
                ("google.protobuf.StringValue", Some(Value::String(text))) => {
                    Ok(text.as_bytes().to_vec())
                }
                ("google.protobuf.StringValue", None) => Ok(Vec::new()),
                ("google.protobuf.BytesValue", Some(Value::String(encoded))) => {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(encoded.trim())
                        .map_err(|e| {
                            FieldError::new(
                                format!("{path}.value"),
                                format!("not valid base64: {e}"),
                            )
                        })
                }
                ("google.protobuf.StringValue" | "google.protobuf.BytesValue", Some(_)) => Err(
                    FieldError::new(format!("{path}.value"), "expected a string"),
                ),
                ("google.protobuf.Struct", _) | ("", _) => {
                    let mut fields = fields.clone();
                    fields.remove("@type");
                    let json = match fields.get("value") {
                        Some(v) if fields.len() == 1 && type_name == "google.protobuf.Struct" => {
                            serde_json::to_vec(v)
                        }
                        _ => serde_json::to_vec(&fields),
                    };
                    json.map_err(|e| FieldError::new(path, format!("cannot encode as JSON: {e}")))
                }
                (other, _) => Err(FieldError::new(
                    format!("{path}.@type"),
                    format!(
                        "unsupported configuration type {other:?}; accepted: google.protobuf.StringValue, google.protobuf.BytesValue, google.protobuf.Struct"
                    ),
                )),
            }
        }
        other => serde_json::to_vec(other)
            .map_err(|e| FieldError::new(path, format!("cannot encode as JSON: {e}"))),
    }
}
