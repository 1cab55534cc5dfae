//! Remote Wasm code: `vm_config.code.remote` (Envoy's `config.core.v3.RemoteDataSource`),
//! fetched with an HTTP GET through one of weir's own clusters and run only when its SHA-256
//! is the one the config gives.
//!
//! When: parsing a config does no network I/O; a plugin with remote code is left pending
//! ([`crate::wasm::PluginHandle::remote`]). Once the snapshot's clusters exist, [`resolve`]
//! fetches every pending module on the calling (main) runtime, through a [`WorkerPools`] of
//! those clusters (so the cluster's endpoints, load balancing, TLS and circuit breakers
//! apply), compiles it on the blocking pool and loads the plugin. Worker threads never wait on
//! it: at start-up the workers, and so the listeners, start only after [`resolve`] is done.
//!
//! A fetch: `GET path?query` with `host: authority` of `http_uri.uri`, answered 200 within
//! `http_uri.timeout` (per attempt), a body of at most
//! [`crate::config::file::MAX_WASM_MODULE_BYTES`], whose SHA-256 is `sha256`. A failed attempt
//! is retried `retry_policy.num_retries` times (default 1) after a jittered exponential
//! back-off: retry `n` (from 0) waits a random time below `min(base_interval * 2^n,
//! max_interval)` (defaults 1 s and 10 x base), as Envoy's `RemoteAsyncDataProvider` does.
//!
//! What happens when the module cannot be had, as Envoy 1.40 does (checked by running it with
//! the module's server down):
//! - at start-up the listeners are not bound (connections are refused; the admin listener's
//!   `/ready` says 503 `INITIALIZING`) while the fetch and its retries run; after the last retry fails they start, and
//!   the plugin stays unloaded (nothing is fetched again until the next reload, which fetches
//!   it and swaps it in once its server is back): with `fail_open` the filter is skipped,
//!   otherwise every request
//!   through its chain gets a 503 (Envoy: 503, details `wasm_fail_stream`) and every
//!   connection through a network filter is closed;
//! - on a reload (file watch or `POST /reload`) the reload is refused and the running config,
//!   with its old module, keeps serving (weir's rule for any config error on reload).
//!
//! A module whose digest differs is refused with a `warn` log line naming the URI, the
//! expected and the actual digest, and counts as a failed attempt (Envoy retries it too).
//!
//! Fetched modules are kept by digest: in memory (the digests the last resolved config uses)
//! and on disk as `<wasm cache dir>/modules/<sha256>.wasm`, checked against the digest on every
//! read (a file that does not match is deleted and fetched again). So a reload, or the file
//! watcher reloading the config, fetches only when a `sha256` in the config changes.
//!
//! Stats (Envoy's names under `wasm.`, on `/stats/prometheus` as `weir_wasm_<name>`):
//! `remote_load_cache_hits`, `remote_load_cache_misses`, `remote_load_fetch_successes`,
//! `remote_load_fetch_failures` (one per fetch that failed after its retries), and the gauge
//! `remote_load_cache_entries` (modules kept in memory).

use super::module_cache::hex;
use super::plugin::{Plugin, PluginHandle};
use crate::config::ConfigError;
use crate::config::file::MAX_WASM_MODULE_BYTES;
use crate::stats::counter;
use crate::upstream::{ClusterManager, WorkerPools};
use http_body_util::BodyExt as _;
use prometheus::{IntCounter, IntGauge};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

pub use crate::config::wasm_spec::{MAX_RETRIES, ModuleSource, RemoteCode, Retry, parse_sha256};

/// The limit of one attempt whose `http_uri.timeout` is zero (Envoy: no limit).
const ZERO_TIMEOUT_CEILING: Duration = Duration::from_secs(300);

impl Retry {
    /// The wait before retry `n` (0 for the first): random below `min(base * 2^n, max)`.
    pub fn back_off(&self, n: u32) -> Duration {
        let ceiling = self
            .base_interval
            .saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
            .min(self.max_interval);
        let ceiling_us = u64::try_from(ceiling.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_micros(rand::random::<u64>() % ceiling_us)
    }
}

impl RemoteCode {
    fn attempt_timeout(&self) -> Duration {
        if self.timeout.is_zero() {
            ZERO_TIMEOUT_CEILING
        } else {
            self.timeout
        }
    }
}

/// Why one fetch attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// No answer from the cluster (no healthy host, connect failure, reset, ...).
    #[error("request through cluster {cluster:?} failed: {reason}")]
    Upstream {
        /// `http_uri.cluster`.
        cluster: String,
        /// Why.
        reason: String,
    },
    /// The answer was not 200.
    #[error("answered {0}, expected 200")]
    Status(u16),
    /// The body passed the limit.
    #[error("the module is larger than {0} bytes, the most weir fetches")]
    TooLarge(u64),
    /// The body failed part way.
    #[error("the body failed: {0}")]
    Body(String),
    /// The attempt ran past `http_uri.timeout`.
    #[error("no whole answer within {0:?} (http_uri.timeout)")]
    Timeout(Duration),
    /// The body's SHA-256 is not the config's.
    #[error("sha256 {actual} differs from the configured {expected}")]
    Digest {
        /// The config's digest.
        expected: String,
        /// The body's.
        actual: String,
    },
    /// The OCI pull failed (registry unreachable, refused, no such image, a layout weir does
    /// not know).
    #[error("{0}")]
    Registry(String),
    /// The source cannot be fetched by this build at all (a config error, never retried).
    #[error("{0}")]
    Unsupported(String),
}

/// Start-up or reload: what a module that cannot be had does (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The plugin stays unloaded and its chains follow `fail_open`.
    Start,
    /// The reload is refused.
    Reload,
}

/// Fetches (or takes from the store) the module of every pending plugin in `handles` through
/// `clusters`, and loads it. Call on the main runtime, before the snapshot holding `handles`
/// is handed to the workers. An error is a config error of `file`: a source this build cannot
/// fetch, a fetched module that does not load, or (on [`Phase::Reload`]) a module that could
/// not be fetched.
pub async fn resolve(
    handles: &[Arc<PluginHandle>],
    clusters: &Arc<ClusterManager>,
    phase: Phase,
    file: &str,
) -> Result<(), ConfigError> {
    let stats = RemoteStats::global();
    let config_error = |path: &str, message: String| ConfigError {
        file: file.to_owned(),
        path: path.to_owned(),
        message,
    };
    let pools = WorkerPools::new(clusters.clone());
    // Within one resolve, a digest that failed is not fetched again for a second plugin.
    let mut failed: HashMap<[u8; 32], FetchError> = HashMap::new();
    let mut used = HashSet::new();
    for handle in handles {
        let Some(code) = handle.remote_code() else {
            continue;
        };
        let Some(mut spec) = handle.take_pending() else {
            continue;
        };
        used.insert(code.sha256);
        let fetched = match failed.get(&code.sha256) {
            Some(error) => Err(error.clone()),
            None => obtain(code, &pools, stats).await,
        };
        match fetched {
            Ok(bytes) => {
                spec.code = bytes.as_ref().clone();
                let loaded = tokio::task::spawn_blocking(move || Plugin::load(spec)).await;
                match loaded {
                    Ok(Ok(plugin)) => handle.set_loaded(plugin),
                    Ok(Err(error)) => {
                        return Err(config_error(
                            &code.path,
                            format!(
                                "the module fetched from {} does not load: {error}",
                                code.uri
                            ),
                        ));
                    }
                    Err(error) => {
                        return Err(config_error(
                            &code.path,
                            format!("loading the module failed: {error}"),
                        ));
                    }
                }
            }
            Err(FetchError::Unsupported(reason)) => {
                return Err(config_error(&format!("{}.http_uri.uri", code.path), reason));
            }
            Err(error) => match phase {
                Phase::Start => {
                    let fail_open = handle.fail_open();
                    tracing::error!(
                        plugin = handle.name(),
                        uri = %code.uri,
                        cluster = %code.cluster,
                        fail_open,
                        %error,
                        "Wasm module not fetched after {} attempt(s); the plugin stays unloaded: {}",
                        code.retry.num_retries + 1,
                        if fail_open {
                            "its filter is skipped (fail_open)"
                        } else {
                            "its chain answers 503 (fail closed)"
                        }
                    );
                    handle.set_failed();
                    failed.insert(code.sha256, error);
                }
                Phase::Reload => {
                    return Err(config_error(
                        &code.path,
                        format!(
                            "cannot fetch the Wasm module from {} through cluster {:?}: {error}",
                            code.uri, code.cluster
                        ),
                    ));
                }
            },
        }
    }
    let mut memory = MEMORY.lock().unwrap_or_else(PoisonError::into_inner);
    memory.retain(|digest, _| used.contains(digest));
    stats.cache_entries.set(memory.len() as i64);
    Ok(())
}

/// Module bytes by SHA-256.
type ModulesByDigest = HashMap<[u8; 32], Arc<Vec<u8>>>;

/// Modules fetched, by digest: those the last resolved config uses.
static MEMORY: LazyLock<Mutex<ModulesByDigest>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The module of `code`: from memory, from the disk store, or fetched (and then stored).
async fn obtain(
    code: &RemoteCode,
    pools: &WorkerPools,
    stats: &RemoteStats,
) -> Result<Arc<Vec<u8>>, FetchError> {
    let digest = code.sha256;
    // `Always` asks the registry on every load: a module kept by digest must not answer for
    // a tag that may have moved.
    let always = matches!(code.source, ModuleSource::Oci(_))
        && code.pull_policy == crate::wasm::oci::PullPolicy::Always;
    let remembered = MEMORY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&digest)
        .cloned();
    if let Some(bytes) = remembered.filter(|_| !always) {
        stats.cache_hits.inc();
        return Ok(bytes);
    }
    let stored = if always {
        None
    } else {
        tokio::task::spawn_blocking(move || read_stored(&digest))
            .await
            .ok()
            .flatten()
    };
    if let Some(bytes) = stored {
        stats.cache_hits.inc();
        tracing::debug!(uri = %code.uri, sha256 = %hex(&digest), "Wasm module from the module store");
        return Ok(remember(digest, bytes));
    }
    stats.cache_misses.inc();
    match fetch(code, pools).await {
        Ok(bytes) => {
            stats.fetch_successes.inc();
            tracing::info!(uri = %code.uri, cluster = %code.cluster, sha256 = %hex(&digest), bytes = bytes.len(), "Wasm module fetched");
            let bytes = remember(digest, bytes);
            let to_store = bytes.clone();
            let _ = tokio::task::spawn_blocking(move || store(&digest, &to_store)).await;
            Ok(bytes)
        }
        Err(error) => {
            if !matches!(error, FetchError::Unsupported(_)) {
                stats.fetch_failures.inc();
            }
            Err(error)
        }
    }
}

fn remember(digest: [u8; 32], bytes: Vec<u8>) -> Arc<Vec<u8>> {
    let bytes = Arc::new(bytes);
    MEMORY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(digest, bytes.clone());
    bytes
}

/// Fetches the module of `code`, retrying per its policy; the last attempt's error when all
/// failed.
async fn fetch(code: &RemoteCode, pools: &WorkerPools) -> Result<Vec<u8>, FetchError> {
    let attempts = code.retry.num_retries.min(MAX_RETRIES) + 1;
    let mut last = None;
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(code.retry.back_off(attempt - 1)).await;
        }
        let limit = code.attempt_timeout();
        let result = match tokio::time::timeout(limit, download(code, pools)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(limit)),
        }
        .and_then(|bytes| verify(code, bytes));
        match result {
            Ok(bytes) => return Ok(bytes),
            Err(error @ FetchError::Unsupported(_)) => return Err(error),
            Err(error) => {
                match &error {
                    FetchError::Digest { expected, actual } => tracing::warn!(
                        uri = %code.uri,
                        expected = %expected,
                        actual = %actual,
                        "Wasm module refused: its sha256 differs from the config's"
                    ),
                    other => tracing::warn!(
                        uri = %code.uri,
                        cluster = %code.cluster,
                        attempt = attempt + 1,
                        attempts,
                        error = %other,
                        "Wasm module fetch failed"
                    ),
                }
                last = Some(error);
            }
        }
    }
    Err(last.unwrap_or(FetchError::Timeout(code.attempt_timeout())))
}

/// `bytes` when their SHA-256 is the config's.
fn verify(code: &RemoteCode, bytes: Vec<u8>) -> Result<Vec<u8>, FetchError> {
    let actual: [u8; 32] = Sha256::digest(&bytes).into();
    if actual == code.sha256 {
        Ok(bytes)
    } else {
        Err(FetchError::Digest {
            expected: hex(&code.sha256),
            actual: hex(&actual),
        })
    }
}

/// One attempt, by the URI's scheme: the one place that picks how a module is fetched.
async fn download(code: &RemoteCode, pools: &WorkerPools) -> Result<Vec<u8>, FetchError> {
    match &code.source {
        ModuleSource::Http {
            authority,
            path_and_query,
        } => http_get(pools, &code.cluster, authority, path_and_query).await,
        // The registry is reached directly (the image reference names it); the digest is
        // checked by the client and again by `verify`.
        ModuleSource::Oci(reference) => {
            let request = crate::wasm::oci::OciRequest {
                reference: reference.clone(),
                sha256: hex(&code.sha256),
                pull_policy: code.pull_policy,
                timeout: code.attempt_timeout(),
                docker_config: None,
            };
            crate::wasm::oci::pull(&request)
                .await
                .map_err(|error| FetchError::Registry(error.to_string()))
        }
    }
}

/// `GET path_and_query` with `host: authority` through `cluster`: the body of a 200, read up
/// to [`MAX_WASM_MODULE_BYTES`].
async fn http_get(
    pools: &WorkerPools,
    cluster: &str,
    authority: &str,
    path_and_query: &str,
) -> Result<Vec<u8>, FetchError> {
    let upstream = |reason: String| FetchError::Upstream {
        cluster: cluster.to_owned(),
        reason,
    };
    let request = http::Request::get(path_and_query)
        .header(http::header::HOST, authority)
        .body(crate::body::empty())
        .map_err(|e| upstream(e.to_string()))?;
    let response = pools
        .send(cluster, request)
        .await
        .map_err(|e| upstream(e.to_string()))?;
    if response.status() != http::StatusCode::OK {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_WASM_MODULE_BYTES) {
        return Err(FetchError::TooLarge(MAX_WASM_MODULE_BYTES));
    }
    let mut body = response.into_body();
    let mut bytes = Vec::with_capacity(declared.map_or(0, |length| {
        usize::try_from(length).unwrap_or(0).min(1 << 20)
    }));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| FetchError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if (bytes.len() + data.len()) as u64 > MAX_WASM_MODULE_BYTES {
                return Err(FetchError::TooLarge(MAX_WASM_MODULE_BYTES));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// `<wasm cache dir>/modules/<sha256>.wasm`.
fn stored_path(digest: &[u8; 32]) -> PathBuf {
    super::module_cache::cache_dir()
        .join("modules")
        .join(format!("{}.wasm", hex(digest)))
}

/// The stored module of `digest`, when there is one whose bytes have that digest; a file
/// that does not is deleted (and the module fetched again).
fn read_stored(digest: &[u8; 32]) -> Option<Vec<u8>> {
    let path = stored_path(digest);
    if !path.is_file() {
        return None;
    }
    let bytes = match crate::config::file::read_limited(&path, MAX_WASM_MODULE_BYTES) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%error, "unusable stored Wasm module; fetching it again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
    };
    let actual: [u8; 32] = Sha256::digest(&bytes).into();
    if &actual != digest {
        tracing::warn!(path = %path.display(), actual = %hex(&actual), "stored Wasm module does not match its digest; deleting it and fetching again");
        let _ = std::fs::remove_file(&path);
        return None;
    }
    Some(bytes)
}

/// Stores a fetched module (temp file + rename, so a reader never sees half of one). Failing
/// is logged: the module is then fetched again by the next process.
fn store(digest: &[u8; 32], bytes: &[u8]) {
    let path = stored_path(digest);
    let result = (|| -> std::io::Result<()> {
        let dir = path
            .parent()
            .ok_or_else(|| std::io::Error::other("no directory"))?;
        std::fs::create_dir_all(dir)?;
        let temp = dir.join(format!(
            ".{}.{}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&temp, bytes)?;
        std::fs::rename(&temp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
    })();
    if let Err(error) = result {
        tracing::warn!(path = %path.display(), %error, "cannot store the fetched Wasm module");
    }
}

/// Envoy's `wasm.remote_load_*` stats.
struct RemoteStats {
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    fetch_successes: IntCounter,
    fetch_failures: IntCounter,
    cache_entries: IntGauge,
}

impl RemoteStats {
    fn global() -> &'static RemoteStats {
        static STATS: LazyLock<RemoteStats> = LazyLock::new(|| RemoteStats {
            cache_hits: counter(
                "weir_wasm_remote_load_cache_hits",
                "Remote Wasm modules found in memory or the module store (no fetch).",
            ),
            cache_misses: counter(
                "weir_wasm_remote_load_cache_misses",
                "Remote Wasm modules that had to be fetched.",
            ),
            fetch_successes: counter(
                "weir_wasm_remote_load_fetch_successes",
                "Remote Wasm module fetches that succeeded (digest checked).",
            ),
            fetch_failures: counter(
                "weir_wasm_remote_load_fetch_failures",
                "Remote Wasm module fetches that failed after their retries.",
            ),
            cache_entries: crate::stats::gauge(
                "weir_wasm_remote_load_cache_entries",
                "Remote Wasm modules kept in memory.",
            ),
        });
        &STATS
    }
}

/// Registers the stats, so they read 0 on `/stats/prometheus` before any remote module.
pub fn init_stats() {
    let _ = RemoteStats::global();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_by_scheme() {
        assert_eq!(
            ModuleSource::parse("http://modules.example:8080/f.wasm?v=2"),
            Ok(ModuleSource::Http {
                authority: "modules.example:8080".into(),
                path_and_query: "/f.wasm?v=2".into()
            })
        );
        assert_eq!(
            ModuleSource::parse("oci://registry.local/filters/auth:v1"),
            Ok(ModuleSource::Oci("registry.local/filters/auth:v1".into()))
        );
        for bad in [
            "",
            "/f.wasm",
            "ftp://h/f.wasm",
            "http:///f.wasm",
            "oci://",
            "h t t p",
        ] {
            assert!(ModuleSource::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sha256_is_64_hex_digits() {
        let text = "D5590E100A80AE19EE9619E25CB170EEDCE675D28BF1E46F04F0432FB1CE84ED";
        let digest = parse_sha256(text).expect("valid");
        assert_eq!(hex(&digest), text.to_ascii_lowercase());
        assert!(parse_sha256(&text[1..]).is_err());
        assert!(parse_sha256(&format!("{}zz", &text[2..])).is_err());
    }

    #[test]
    fn back_off_is_jittered_below_the_exponential_ceiling() {
        let retry = Retry {
            num_retries: 5,
            base_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(350),
        };
        for _ in 0..200 {
            assert!(retry.back_off(0) < Duration::from_millis(100));
            assert!(retry.back_off(1) < Duration::from_millis(200));
            assert!(retry.back_off(2) < Duration::from_millis(350));
            assert!(retry.back_off(40) < Duration::from_millis(350));
        }
    }
}
