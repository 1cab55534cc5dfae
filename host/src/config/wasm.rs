//! `envoy.extensions.filters.http.wasm.v3.Wasm`: the proxy-wasm filter's config as Envoy writes
//! it, and its reading into a [`wasm_spec::PluginSpec`].
//!
//! The plugin and VM `configuration` fields are protobuf `Any`s: usually a `StringValue`, whose
//! string's bytes are what the module reads. Any `runtime` is accepted (weir runs every module
//! on wasmtime).

use super::cluster_names::ClusterNames;
use super::common::DataSource;
use super::duration::ConfigDuration;
use super::{FieldError, wasm_spec};
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
    /// On a VM failure, pass the stream through instead of answering 500. For remote code
    /// that could not be fetched at start-up (see [`crate::wasm::remote`]): skip the filter
    /// instead of answering 503 to every stream, as Envoy does.
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

/// `config.core.v3.AsyncDataSource`: a local file or inline bytes, or a module fetched over
/// HTTP through one of weir's clusters ([`RemoteDataSource`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncDataSource {
    /// A file or inline bytes.
    #[serde(default)]
    pub local: Option<DataSource>,
    /// A module fetched from `http_uri` and checked against `sha256`.
    #[serde(default)]
    pub remote: Option<RemoteDataSource>,
}

/// `config.core.v3.RemoteDataSource`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteDataSource {
    /// Where the module is, and the cluster the GET goes through.
    pub http_uri: HttpUri,
    /// The module's SHA-256 as 64 hex digits. Envoy requires it; so does weir (a module
    /// fetched without one could be anything).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Retries of a failed fetch (default: 1 retry, back-off base 1 s, max 10 s).
    #[serde(default)]
    pub retry_policy: Option<RetryPolicy>,
    /// weir's own, for `oci://` URIs only: `IfNotPresent` (default: a module already pulled
    /// for this reference and digest is not pulled again) or `Always` (the registry is asked
    /// on every load, so a tag that moved is seen), as Istio's `imagePullPolicy`.
    #[serde(default)]
    pub weir_image_pull_policy: Option<String>,
}

/// `config.core.v3.HttpUri`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpUri {
    /// `http://host[:port]/path`: the path (and query) and authority of the GET.
    pub uri: String,
    /// The cluster that serves it (its endpoints, TLS and pools). Not used for `oci://`
    /// (the registry named in the reference is reached directly), though Envoy's schema
    /// requires it.
    pub cluster: String,
    /// The limit of one attempt (required, as in Envoy; zero: weir's ceiling of 5 minutes).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
}

/// `config.core.v3.RetryPolicy` (the fields a remote data source uses).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Jittered exponential back-off between attempts.
    #[serde(default)]
    pub retry_back_off: Option<BackoffStrategy>,
    /// Retries after the first attempt (default 1).
    #[serde(default)]
    pub num_retries: Option<u32>,
}

/// `config.core.v3.BackoffStrategy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffStrategy {
    /// The first retry waits a random time below this; each next one below twice as much.
    pub base_interval: ConfigDuration,
    /// The most any wait may be drawn from (default 10 x `base_interval`).
    #[serde(default)]
    pub max_interval: Option<ConfigDuration>,
}

/// Reads a plugin's config into what the Wasm host needs; `path` is the filter's
/// `typed_config` path. The module is loaded (and compiled) here, so a missing or broken
/// module is a config error.
pub fn plugin_spec(
    filter: &WasmFilterConfig,
    path: &str,
    node: &wasm_spec::NodeInfo,
) -> Result<wasm_spec::PluginSpec, FieldError> {
    let plugin = &filter.config;
    let vm = &plugin.vm_config;
    let code_path = format!("{path}.config.vm_config.code");
    let code = match (&vm.code.local, &vm.code.remote) {
        (Some(local), None) => module_bytes(local, &format!("{code_path}.local"))?,
        // Fetched later, through the clusters ([`remote_code`], [`crate::wasm::remote`]).
        (None, Some(_)) => Vec::new(),
        _ => {
            return Err(FieldError::new(
                code_path,
                "expected exactly one of code.local (filename or inline_bytes) and code.remote (http_uri and sha256)",
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
    Ok(wasm_spec::PluginSpec {
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

/// Reads `vm_config.code.remote` of the plugin (at `path`, the filter's `typed_config`) into
/// what the fetcher needs; `None` for local code. `clusters` are the configured cluster names
/// (`http_uri.cluster` must be one). The module itself is fetched once the clusters exist
/// ([`crate::wasm::remote::resolve`]), never here: parsing a config does no I/O on the network.
pub fn remote_code(
    filter: &WasmFilterConfig,
    path: &str,
    clusters: &ClusterNames,
) -> Result<Option<wasm_spec::RemoteCode>, FieldError> {
    let Some(remote) = &filter.config.vm_config.code.remote else {
        return Ok(None);
    };
    let path = format!("{path}.config.vm_config.code.remote");
    let uri_path = format!("{path}.http_uri.uri");
    let source = wasm_spec::ModuleSource::parse(&remote.http_uri.uri)
        .map_err(|reason| FieldError::new(&uri_path, reason))?;
    let cluster = &remote.http_uri.cluster;
    let is_oci = matches!(source, wasm_spec::ModuleSource::Oci(_));
    if !is_oci && !clusters.contains(cluster.as_str()) {
        return Err(FieldError::new(
            format!("{path}.http_uri.cluster"),
            format!("unknown cluster {cluster:?}; defined clusters: {clusters:?}"),
        ));
    }
    let timeout = remote.http_uri.timeout.ok_or_else(|| {
        FieldError::new(
            format!("{path}.http_uri.timeout"),
            "required: the limit of one fetch attempt, e.g. \"10s\"",
        )
    })?;
    let sha256 = match remote.sha256.as_deref() {
        None | Some("") => {
            return Err(FieldError::new(
                format!("{path}.sha256"),
                "required: the module's SHA-256 (64 hex digits); a remote module is only run when its digest matches",
            ));
        }
        Some(text) => wasm_spec::parse_sha256(text)
            .map_err(|reason| FieldError::new(format!("{path}.sha256"), reason))?,
    };
    let retry = retry_policy(
        remote.retry_policy.as_ref(),
        &format!("{path}.retry_policy"),
    )?;
    let pull_policy = match remote.weir_image_pull_policy.as_deref() {
        None => wasm_spec::PullPolicy::default(),
        Some(text) => wasm_spec::PullPolicy::parse(text).ok_or_else(|| {
            FieldError::new(
                format!("{path}.weir_image_pull_policy"),
                format!("unknown pull policy {text:?}; accepted: IfNotPresent, Always"),
            )
        })?,
    };
    Ok(Some(wasm_spec::RemoteCode {
        source,
        pull_policy,
        uri: remote.http_uri.uri.clone(),
        cluster: cluster.clone(),
        timeout: timeout.get(),
        sha256,
        retry,
        path,
    }))
}

/// Envoy's defaults for a remote data source: 1 retry, back-off base 1 s, max 10 x base.
fn retry_policy(policy: Option<&RetryPolicy>, path: &str) -> Result<wasm_spec::Retry, FieldError> {
    use std::time::Duration;
    let mut retry = wasm_spec::Retry {
        num_retries: 1,
        base_interval: Duration::from_secs(1),
        max_interval: Duration::from_secs(10),
    };
    let Some(policy) = policy else {
        return Ok(retry);
    };
    if let Some(n) = policy.num_retries {
        retry.num_retries = n.min(wasm_spec::MAX_RETRIES);
    }
    if let Some(back_off) = &policy.retry_back_off {
        let base = back_off.base_interval.get();
        if base.is_zero() {
            return Err(FieldError::new(
                format!("{path}.retry_back_off.base_interval"),
                "must be greater than zero",
            ));
        }
        let max = back_off
            .max_interval
            .map_or(base.saturating_mul(10), ConfigDuration::get);
        if max < base {
            return Err(FieldError::new(
                format!("{path}.retry_back_off.max_interval"),
                "must be greater than or equal to base_interval",
            ));
        }
        retry.base_interval = base;
        retry.max_interval = max;
    }
    Ok(retry)
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
