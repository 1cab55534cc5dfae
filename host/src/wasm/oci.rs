//! Wasm modules pulled from OCI registries (`oci://registry/repo:tag@sha256:...`), as Istio's
//! WasmPlugin pulls them.
//!
//! [`pull`] resolves the reference's manifest, finds the module in one of the layouts in use
//! ([`layout`]: Istio's compat layer, the CNCF Wasm artifact, a `plugin.wasm` in a tar layer),
//! and checks the module's SHA-256 against the one the config expects: the config pins the
//! module, the reference only says where to find it. Registries are spoken to over HTTPS, or
//! plain HTTP when on loopback ([`client`]); anonymously or with the docker config file's
//! credentials ([`credentials`]).
//!
//! Pull policy, as Kubernetes and Istio name it:
//! - `IfNotPresent` (default): a module pulled before for the same reference and digest is
//!   served from the local store ([`store`], `<wasm cache dir>/oci/`) without contacting the
//!   registry, so a tag that moved since is not seen;
//! - `Always`: the manifest is resolved again on every pull, so a moved tag is seen: its new
//!   module runs when the config's `sha256` names it, and is refused (naming both digests)
//!   when the config still names the old one.
//!
//! Everything a registry sends is bounded: the manifest (4 MiB), a token (1 MiB), a layer and
//! the module ([`crate::config::file::MAX_WASM_MODULE_BYTES`]), a tar's unpacked size; the
//! whole pull runs under [`OciRequest::timeout`].

mod client;
mod credentials;
mod layout;
mod reference;
mod store;

pub use crate::config::wasm_spec::PullPolicy;
pub use reference::Reference;

use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Most bytes of a manifest (the distribution spec asks registries to accept 4 MiB ones).
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes of the module.
const MAX_MODULE_BYTES: u64 = crate::config::file::MAX_WASM_MODULE_BYTES;
/// Most bytes of a tar layer, packed or unpacked: the module and some room for other files.
const MAX_ARCHIVE_BYTES: u64 = MAX_MODULE_BYTES + 4 * 1024 * 1024;

/// One module to pull.
#[derive(Debug, Clone)]
pub struct OciRequest {
    /// `registry/repository[:tag][@sha256:HEX]`, without the `oci://` prefix (it is accepted).
    pub reference: String,
    /// The SHA-256 (hex, or `sha256:HEX`) of the module's bytes the config expects.
    pub sha256: String,
    /// When to contact the registry.
    pub pull_policy: PullPolicy,
    /// The most the whole pull may take.
    pub timeout: Duration,
    /// The docker config file with credentials; `None`: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
}

/// Why a module could not be pulled.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference cannot be parsed.
    #[error("bad image reference {reference:?}: {why}")]
    Reference {
        /// The reference.
        reference: String,
        /// What is wrong.
        why: String,
    },
    /// The expected digest is not a SHA-256.
    #[error("bad sha256 {0:?}: expected 64 hex digits")]
    Sha256(String),
    /// The docker config file cannot be used.
    #[error("registry credentials: {0}")]
    Credentials(String),
    /// The registry (or a host it redirected to) cannot be reached.
    #[error("cannot connect to {host}: {why}")]
    Connect {
        /// `host:port`.
        host: String,
        /// Why.
        why: String,
    },
    /// The registry refused access.
    #[error("registry {registry} refused access: {why}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// Why, and as whom.
        why: String,
    },
    /// The registry answered something unusable (a status, a bad redirect or token).
    #[error("{0}")]
    Registry(String),
    /// More bytes than allowed.
    #[error("{what} is larger than {limit} bytes, the most weir accepts")]
    TooLarge {
        /// What.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The manifest cannot be used.
    #[error("bad manifest: {0}")]
    Manifest(String),
    /// The image holds no module in a known layout.
    #[error("no Wasm module in the image: {0}")]
    NoModule(String),
    /// A tar layer cannot be read.
    #[error("bad tar layer: {0}")]
    Archive(String),
    /// Content does not match the digest it was fetched by.
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    ContentDigest {
        /// The manifest or a layer.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what came.
        actual: String,
    },
    /// The module is not the one the config expects.
    #[error(
        "the module of {reference} has sha256 {actual}, but the config expects sha256 {expected}; refused"
    )]
    ModuleDigest {
        /// The reference.
        reference: String,
        /// The config's digest.
        expected: String,
        /// The pulled module's digest.
        actual: String,
    },
    /// The pull took longer than the request's timeout.
    #[error("pulling {reference} took longer than {after:?}")]
    Timeout {
        /// The reference.
        reference: String,
        /// The timeout.
        after: Duration,
    },
}

/// The module of `request`: from the local store (`IfNotPresent`, when there) or pulled from
/// the registry, its SHA-256 checked against `request.sha256` either way.
pub async fn pull(request: &OciRequest) -> Result<Vec<u8>, OciError> {
    let reference = Reference::parse(&request.reference)?;
    let expected = expected_sha256(&request.sha256)?;
    let name = reference.to_string();
    let store = store::Store::new(super::module_cache::cache_dir().join("oci"));
    if request.pull_policy == PullPolicy::IfNotPresent
        && let Some(bytes) = store.get(&name, &expected, MAX_MODULE_BYTES)
    {
        tracing::info!(reference = %name, sha256 = %expected, "Wasm module from the local OCI store (IfNotPresent)");
        return Ok(bytes);
    }
    let credentials = match credentials::config_path(request.docker_config.as_deref()) {
        Some(path) => credentials::for_registry(&path, &reference.registry)?,
        None => None,
    };
    let started = Instant::now();
    let bytes = tokio::time::timeout(request.timeout, fetch(reference, credentials))
        .await
        .map_err(|_| OciError::Timeout {
            reference: name.clone(),
            after: request.timeout,
        })??;
    let actual = super::module_cache::hex(&Sha256::digest(&bytes));
    if actual != expected {
        return Err(OciError::ModuleDigest {
            reference: name,
            expected,
            actual,
        });
    }
    tracing::info!(
        reference = %name,
        sha256 = %expected,
        bytes = bytes.len(),
        ms = started.elapsed().as_millis() as u64,
        policy = ?request.pull_policy,
        "Wasm module pulled from the registry"
    );
    store.put(&name, &expected, &bytes);
    Ok(bytes)
}

/// The expected digest as 64 lowercase hex digits (`sha256:` accepted in front).
fn expected_sha256(text: &str) -> Result<String, OciError> {
    let hex = text.trim();
    let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
    if reference::is_sha256_hex(hex) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(OciError::Sha256(text.to_owned()))
    }
}

/// Resolves the manifest (through an index, one level) and reads the module out of its layers.
async fn fetch(
    reference: Reference,
    credentials: Option<credentials::Credentials>,
) -> Result<Vec<u8>, OciError> {
    let pinned = reference.digest.clone();
    let selector = reference.manifest_selector().to_owned();
    let mut registry = client::Registry::new(reference, credentials);
    let mut manifest = manifest(&mut registry, &selector, pinned.as_deref()).await?;
    if let Some(target) = manifest.index_target() {
        let digest = checked_digest(&target.digest)?;
        manifest = self::manifest(&mut registry, &digest, Some(&digest)).await?;
        if manifest.index_target().is_some() || manifest.layers.is_empty() {
            return Err(OciError::Manifest(
                "the image index points to another index, or to an image without layers".into(),
            ));
        }
    }
    if let Some(config) = &manifest.config {
        let cncf = config.media_type == layout::CNCF_WASM_CONFIG;
        tracing::debug!(config = %config.media_type, cncf_wasm_artifact = cncf, manifest = ?manifest.media_type, "OCI manifest");
    }
    match manifest.module_layers()? {
        layout::ModuleLayers::Module(layer) => blob(&mut registry, &layer, MAX_MODULE_BYTES).await,
        layout::ModuleLayers::Archives(layers) => {
            for layer in &layers {
                let packed = blob(&mut registry, layer, MAX_ARCHIVE_BYTES).await?;
                let found = tokio::task::spawn_blocking(move || {
                    layout::module_from_archive(&packed, MAX_ARCHIVE_BYTES, MAX_MODULE_BYTES)
                })
                .await
                .map_err(|e| OciError::Archive(e.to_string()))??;
                if let Some(module) = found {
                    return Ok(module);
                }
            }
            Err(OciError::NoModule(format!(
                "none of the {} tar layers holds plugin.wasm",
                layers.len()
            )))
        }
    }
}

/// The manifest `selector` (a tag or a digest), checked against `pinned` when given.
async fn manifest(
    registry: &mut client::Registry,
    selector: &str,
    pinned: Option<&str>,
) -> Result<layout::Manifest, OciError> {
    let answer = registry
        .get(
            &format!("manifests/{selector}"),
            layout::MANIFEST_TYPES,
            MAX_MANIFEST_BYTES,
        )
        .await?;
    if let Some(pinned) = pinned {
        verify("the manifest", pinned, &answer.body)?;
    }
    layout::Manifest::parse(&answer.body)
}

/// The blob of `layer`, at most `limit` bytes, checked against its digest.
async fn blob(
    registry: &mut client::Registry,
    layer: &layout::Descriptor,
    limit: u64,
) -> Result<Vec<u8>, OciError> {
    let digest = checked_digest(&layer.digest)?;
    let what = format!("layer {digest} ({})", layer.media_type);
    if layer.size > limit {
        return Err(OciError::TooLarge { what, limit });
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let answer = registry
        .get(&format!("blobs/{digest}"), "*/*", limit)
        .await?;
    verify(&what, &digest, &answer.body)?;
    Ok(answer.body.to_vec())
}

/// A descriptor's digest, checked to be `sha256:HEX` before it goes into a URL.
fn checked_digest(digest: &str) -> Result<String, OciError> {
    reference::parse_digest(digest).map_err(OciError::Manifest)
}

fn verify(what: &str, expected: &str, content: &[u8]) -> Result<(), OciError> {
    let actual = format!(
        "sha256:{}",
        super::module_cache::hex(&Sha256::digest(content))
    );
    if actual == expected {
        Ok(())
    } else {
        Err(OciError::ContentDigest {
            what: what.to_owned(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_digest_forms() {
        let hex = "AB".repeat(32);
        assert_eq!(expected_sha256(&hex).ok(), Some("ab".repeat(32)));
        assert_eq!(
            expected_sha256(&format!("sha256:{hex}")).ok(),
            Some("ab".repeat(32))
        );
        assert!(matches!(expected_sha256("abc"), Err(OciError::Sha256(_))));
        assert!(matches!(expected_sha256(""), Err(OciError::Sha256(_))));
    }

    #[test]
    fn pull_policy_names() {
        assert_eq!(PullPolicy::parse("Always"), Some(PullPolicy::Always));
        assert_eq!(
            PullPolicy::parse("IfNotPresent"),
            Some(PullPolicy::IfNotPresent)
        );
        assert_eq!(PullPolicy::parse("Never"), None);
        assert_eq!(PullPolicy::default(), PullPolicy::IfNotPresent);
    }

    /// A registry that streams an endless manifest: the read stops at the manifest limit.
    #[tokio::test]
    async fn an_endless_manifest_is_cut_at_its_limit() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind")
        };
        let Ok(addr) = listener.local_addr() else {
            panic!("addr")
        };
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        let endless = tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut head = [0u8; 4096];
            let _ = socket.read(&mut head).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
                .await;
            let chunk = vec![b' '; 64 * 1024];
            // At most 64 MiB: far past the 4 MiB limit, bounded should the client not stop.
            for _ in 0..1024 {
                if socket.write_all(&chunk).await.is_err() {
                    break;
                }
                counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let request = OciRequest {
            reference: format!("{addr}/f:v1"),
            sha256: "00".repeat(32),
            pull_policy: PullPolicy::Always,
            timeout: Duration::from_secs(20),
            docker_config: Some(PathBuf::from("/nonexistent/config.json")),
        };
        let result = pull(&request).await;
        endless.abort();
        let Err(e) = result else {
            panic!("an endless manifest gives no module")
        };
        assert!(
            matches!(e, OciError::TooLarge { limit, .. } if limit == MAX_MANIFEST_BYTES as u64),
            "{e}"
        );
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            sent < 16 * 1024 * 1024,
            "the client stopped reading early: {sent} bytes sent"
        );
    }

    #[tokio::test]
    async fn registry_that_never_answers_times_out() {
        // Accepts connections and never writes: the pull must end at its timeout.
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind")
        };
        let Ok(addr) = listener.local_addr() else {
            panic!("addr")
        };
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let request = OciRequest {
            reference: format!("{addr}/f:v1"),
            sha256: "00".repeat(32),
            pull_policy: PullPolicy::Always,
            timeout: Duration::from_millis(300),
            docker_config: Some(PathBuf::from("/nonexistent/config.json")),
        };
        let started = Instant::now();
        let result = pull(&request).await;
        silent.abort();
        let Err(e) = result else {
            panic!("a silent registry gives no module")
        };
        assert!(matches!(e, OciError::Timeout { .. }), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
