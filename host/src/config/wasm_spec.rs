//! What a Wasm plugin is, as the Wasm host needs it: plain data read from the config.
//!
//! [`super::wasm`] turns a filter's `typed_config` (Envoy's `PluginConfig`) into a
//! [`PluginSpec`] and, for `vm_config.code.remote`, a [`RemoteCode`]; `wasm` loads
//! plugins from them and fetches remote modules, so nothing on the Wasm side reads YAML.

use std::time::Duration;

/// `node` of the bootstrap, for the `node.*` properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `node.id`.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
}

/// What the config says about a plugin (see [`crate::config::wasm`]).
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// `config.name`.
    pub name: String,
    /// `config.root_id`.
    pub root_id: String,
    /// `config.vm_config.vm_id`.
    pub vm_id: String,
    /// The module's bytes.
    pub code: Vec<u8>,
    /// `config.vm_config.configuration`, as the module reads it.
    pub vm_configuration: Vec<u8>,
    /// `config.configuration`, as the module reads it.
    pub plugin_configuration: Vec<u8>,
    /// Pass streams through (instead of a 500) when the VM fails.
    pub fail_open: bool,
    /// The bootstrap's node.
    pub node: NodeInfo,
    /// The module's file, when it came from one (watched for hot reload).
    pub source: Option<std::path::PathBuf>,
}

/// The most `retry_policy.num_retries` weir honours: a config cannot stall start-up for
/// longer than this many back-offs (each at most `max_interval`).
pub const MAX_RETRIES: u32 = 20;

/// Where a module comes from, by the scheme of `http_uri.uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// `http://` or `https://`: a GET through the cluster (its transport socket decides TLS).
    Http {
        /// The `host` header.
        authority: String,
        /// The request target.
        path_and_query: String,
    },
    /// `oci://REFERENCE`: an OCI image (the reference, without `oci://`).
    Oci(String),
}

impl ModuleSource {
    /// Reads `uri`; the message says what is wrong with it.
    pub fn parse(uri: &str) -> Result<ModuleSource, String> {
        if let Some(reference) = uri.strip_prefix("oci://") {
            if reference.is_empty() {
                return Err("expected oci://registry/repository[:tag][@sha256:...]".into());
            }
            return Ok(ModuleSource::Oci(reference.to_owned()));
        }
        let parsed: http::Uri = uri
            .parse()
            .map_err(|e| format!("not a valid URI ({e}); expected http://host[:port]/path"))?;
        match parsed.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(format!(
                    "unsupported scheme in {uri:?}; expected http://, https:// or oci://"
                ));
            }
        }
        let authority = parsed
            .authority()
            .map(|a| a.as_str().to_owned())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("no host in {uri:?}; expected http://host[:port]/path"))?;
        let path_and_query = parsed
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(ModuleSource::Http {
            authority,
            path_and_query,
        })
    }
}

/// The retry policy of a fetch (see `wasm::remote`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub num_retries: u32,
    /// Back-off base.
    pub base_interval: Duration,
    /// Back-off ceiling.
    pub max_interval: Duration,
}

/// A plugin's `vm_config.code.remote`, checked ([`crate::config::wasm::remote_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCode {
    /// How to get it.
    pub source: ModuleSource,
    /// `http_uri.uri` as written (for logs).
    pub uri: String,
    /// `http_uri.cluster`.
    pub cluster: String,
    /// `weir_image_pull_policy` (for [`ModuleSource::Oci`]).
    pub pull_policy: PullPolicy,
    /// `http_uri.timeout`: the limit of one attempt (zero: weir's ceiling, see
    /// `wasm::remote`).
    pub timeout: Duration,
    /// `sha256`.
    pub sha256: [u8; 32],
    /// `retry_policy`.
    pub retry: Retry,
    /// The field path of `code.remote`, for errors.
    pub path: String,
}

/// Reads a SHA-256 written as 64 hex digits (either case).
pub fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let expected = || format!("expected 64 hex digits, got {text:?}");
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(expected());
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| expected())?;
    }
    Ok(digest)
}

/// When to contact an OCI registry (see `wasm::oci`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Serve a module already pulled for this reference and digest from the local store.
    #[default]
    IfNotPresent,
    /// Resolve the manifest again on every pull.
    Always,
}

impl PullPolicy {
    /// `IfNotPresent` or `Always` (Kubernetes' spelling).
    pub fn parse(text: &str) -> Option<PullPolicy> {
        match text {
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Always" => Some(PullPolicy::Always),
            _ => None,
        }
    }
}
