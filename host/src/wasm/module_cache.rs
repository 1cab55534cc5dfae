//! Compiling modules, with the compiled code cached on disk, so a restart or a reload of an
//! unchanged module compiles nothing.
//!
//! Where: `--wasm-cache-dir` (or `$WEIR_WASM_CACHE_DIR`), else `$XDG_CACHE_HOME/weir/wasm`,
//! else `~/.cache/weir/wasm`, else the temp dir. Failing to read or write it is logged and never
//! fatal: the module is compiled instead.
//!
//! Key: an entry is `<sha256 of the module>-<engine tag>.cwasm`. The engine tag hashes
//! wasmtime's `Engine::precompile_compatibility_hash` (target, CPU features, compiler flags,
//! tunables, Wasm features and wasmtime's version) and weir's version, so code compiled by
//! another wasmtime, for another CPU or under other settings is never looked up.
//!
//! Integrity: an entry is `WEIRCW01` (format 1), the SHA-256 of the serialized module, then
//! the module as `Module::serialize` wrote it. The whole file is read (at most the cache's
//! bound) and its checksum verified before wasmtime sees a byte: a truncated or altered entry is counted
//! (`weir_wasm_cache_corrupt_total`), deleted and compiled again, never deserialized. The
//! checksum catches damage (a crash mid-write on a filesystem without atomic rename, a disk
//! error, an operator's `truncate`), not an attacker: whoever can write the directory can
//! write a valid checksum, so the directory must be writable by weir alone.
//!
//! Size: the entries together stay under `--wasm-cache-max-mb` (or `$WEIR_WASM_CACHE_MAX_MB`,
//! default 512 MiB). Every use of an entry sets its modification time (the file system's access
//! time is often not kept: `noatime`, `relatime`), and after each write the least recently used
//! entries are deleted until the rest fit (`weir_wasm_cache_evictions_total`), with any temp
//! file a writer that died mid-write left an hour ago. An entry larger than the whole bound is
//! not written.
//!
//! Stats: `weir_wasm_cache_hit_total` (taken from the cache), `weir_wasm_cache_miss_total`
//! (compiled: no entry, or a corrupt one).

use super::WasmError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use wasmtime::{Engine, Module};

/// Env var (older than `--wasm-cache-dir`): where compiled modules are cached.
pub const CACHE_DIR_ENV: &str = "WEIR_WASM_CACHE_DIR";
/// Env var (older than `--wasm-cache-max-mb`): the most the cache may hold, in MiB.
pub const CACHE_MAX_MB_ENV: &str = "WEIR_WASM_CACHE_MAX_MB";
/// The default bound of the cache, in MiB.
pub const DEFAULT_MAX_MB: u64 = 512;

/// The first bytes of an entry (format version 1).
const MAGIC: &[u8; 8] = b"WEIRCW01";
/// Magic and checksum.
const HEADER_LEN: usize = MAGIC.len() + 32;
/// How old a temp file must be to be taken for one a dead writer left (a write takes
/// milliseconds); such files are deleted with the evictions.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);
/// The file name suffix of entries (temp files and anything else in the directory are not
/// entries: never read, counted or evicted).
const SUFFIX: &str = ".cwasm";

/// The cache directory (see the module docs), found once.
pub fn cache_dir() -> PathBuf {
    ModuleCache::global().dir().to_path_buf()
}

/// The compiled `bytes`: from the process's cache when it holds them, else compiled (and
/// cached).
pub fn compile(engine: &Engine, bytes: &[u8]) -> Result<Module, WasmError> {
    ModuleCache::global().compile(engine, bytes)
}

fn find_cache_dir() -> PathBuf {
    let flag = crate::settings::get().wasm_cache_dir.as_ref();
    if let Some(dir) = crate::settings::directory(flag, CACHE_DIR_ENV, "--wasm-cache-dir") {
        return dir;
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("weir").join("wasm");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("weir").join("wasm");
    }
    std::env::temp_dir().join("weir-wasm-cache")
}

/// A directory of compiled modules under a size bound.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
    max_bytes: u64,
}

/// What [`ModuleCache::lookup_or_compile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Took the module from a valid entry.
    Hit,
    /// Compiled it: there was no entry, or a corrupt one (deleted, then written again);
    /// `evicted` entries were deleted to make room.
    Compiled { corrupt: bool, evicted: u64 },
}

/// What reading an entry found.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    /// No entry (or it cannot be read: logged).
    Missing,
    /// An entry whose checksum holds: the whole file (the serialized module follows the
    /// header).
    Valid(Vec<u8>),
    /// An entry that is not what was written: why.
    Corrupt(&'static str),
}

impl ModuleCache {
    /// The process's cache, from the settings (see the module docs), made once.
    pub fn global() -> &'static ModuleCache {
        static CACHE: std::sync::OnceLock<ModuleCache> = std::sync::OnceLock::new();
        CACHE.get_or_init(|| {
            let max_mb = crate::settings::number(
                crate::settings::get().wasm_cache_max_mb,
                CACHE_MAX_MB_ENV,
                "--wasm-cache-max-mb",
                |n| n > 0,
            )
            .unwrap_or(DEFAULT_MAX_MB);
            ModuleCache::new(find_cache_dir(), max_mb.saturating_mul(1 << 20))
        })
    }

    /// A cache in `dir` holding at most `max_bytes`.
    pub fn new(dir: PathBuf, max_bytes: u64) -> ModuleCache {
        ModuleCache { dir, max_bytes }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry's file name for `bytes` compiled by `engine` (see the module docs).
    pub fn entry_name(engine: &Engine, bytes: &[u8]) -> String {
        let module = hex(&Sha256::digest(bytes));
        let mut engine_hash = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut engine_hash);
        engine_hash.0.update(b"weir ");
        engine_hash.0.update(env!("CARGO_PKG_VERSION").as_bytes());
        let engine_tag = hex(&engine_hash.0.finalize()[..8]);
        format!("{module}-{engine_tag}{SUFFIX}")
    }

    /// The compiled `bytes`: from the cache when it holds a valid entry for them, else
    /// compiled (and written to the cache). Counted in the cache's stats.
    pub fn compile(&self, engine: &Engine, bytes: &[u8]) -> Result<Module, WasmError> {
        let stats = super::metrics::cache_stats();
        let (module, outcome) = self.lookup_or_compile(engine, bytes)?;
        match outcome {
            Outcome::Hit => stats.hit.inc(),
            Outcome::Compiled { corrupt, evicted } => {
                stats.miss.inc();
                stats.corrupt.inc_by(u64::from(corrupt));
                stats.evictions.inc_by(evicted);
            }
        }
        Ok(module)
    }

    /// [`ModuleCache::compile`] without the stats: the module and what the cache did.
    fn lookup_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> Result<(Module, Outcome), WasmError> {
        let path = self.dir.join(Self::entry_name(engine, bytes));
        let corrupt = match read_entry(&path, self.max_bytes) {
            Entry::Valid(file) => {
                // SAFETY: wasmtime requires bytes it serialized itself. These are the bytes
                // `write_entry` stored (their SHA-256 matches the one written with them), in
                // weir's own directory, keyed by this engine's compatibility hash; wasmtime
                // still checks the header and the engine settings they were made for.
                match unsafe { Module::deserialize(engine, &file[HEADER_LEN..]) } {
                    Ok(module) => {
                        touch(&path);
                        tracing::debug!(path = %path.display(), "Wasm module from the cache");
                        return Ok((module, Outcome::Hit));
                    }
                    Err(error) => discard(&path, &format!("{error:#}")),
                }
            }
            Entry::Corrupt(why) => discard(&path, why),
            Entry::Missing => false,
        };
        let module =
            Module::new(engine, bytes).map_err(|e| WasmError::Compile(format!("{e:#}")))?;
        let mut evicted = 0;
        match module.serialize() {
            Ok(serialized) => match self.write_entry(&path, &serialized) {
                Ok(true) => evicted = self.evict(&path),
                Ok(false) => tracing::info!(
                    path = %path.display(),
                    bytes = serialized.len(),
                    max_bytes = self.max_bytes,
                    "compiled Wasm module larger than the cache; not cached"
                ),
                Err(error) => tracing::warn!(
                    path = %path.display(),
                    %error,
                    "cannot cache the compiled Wasm module"
                ),
            },
            Err(error) => tracing::warn!(%error, "cannot serialize the compiled Wasm module"),
        }
        Ok((module, Outcome::Compiled { corrupt, evicted }))
    }

    /// Writes `serialized` as the entry `path` (a temp file renamed over it, so a reader sees
    /// a whole entry or none). `Ok(false)`: larger than the bound, not written.
    fn write_entry(&self, path: &Path, serialized: &[u8]) -> Result<bool, String> {
        if (HEADER_LEN + serialized.len()) as u64 > self.max_bytes {
            return Ok(false);
        }
        let mut file = Vec::with_capacity(HEADER_LEN + serialized.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&Sha256::digest(serialized));
        file.extend_from_slice(serialized);
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let temp = self.dir.join(format!(
            ".{}.{}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&temp, file).map_err(|e| e.to_string())?;
        std::fs::rename(&temp, path).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            e.to_string()
        })?;
        Ok(true)
    }

    /// Deletes the least recently used entries (oldest modification time first) until the
    /// entries fit the bound; never `keep` (the entry just written). Returns how many it
    /// deleted. Another process may share the directory: an entry it deleted first is skipped.
    fn evict(&self, keep: &Path) -> u64 {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let mut total: u64 = 0;
        for item in listing.flatten() {
            let path = item.path();
            let Ok(meta) = item.metadata() else { continue };
            let name = item.file_name();
            let name = name.to_str().unwrap_or("");
            if !meta.is_file() || name.starts_with('.') {
                // A temp file of a writer that died before its rename.
                if is_stale_temp(name, &meta) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if !name.ends_with(SUFFIX) {
                continue;
            }
            total = total.saturating_add(meta.len());
            if path != keep {
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                entries.push((used, meta.len(), path));
            }
        }
        entries.sort();
        let mut evicted = 0;
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    evicted += 1;
                    tracing::debug!(path = %path.display(), "evicted from the Wasm cache");
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot evict a cache entry");
                    continue;
                }
            }
            total = total.saturating_sub(len);
        }
        evicted
    }
}

/// Whether `name` is one of `write_entry`'s temp files, untouched for [`STALE_TEMP`].
fn is_stale_temp(name: &str, meta: &std::fs::Metadata) -> bool {
    let age = meta
        .modified()
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok());
    meta.is_file() && name.starts_with('.') && name.ends_with(".tmp") && age > Some(STALE_TEMP)
}

/// Reads and verifies the entry at `path` (see the module docs).
/// An entry longer than `max_bytes` cannot be one `write_entry` wrote: it is not read.
fn read_entry(path: &Path, max_bytes: u64) -> Entry {
    let read = std::fs::File::open(path).and_then(|file| {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, max_bytes + 1), &mut bytes)?;
        Ok(bytes)
    });
    let file = match read {
        Ok(file) if file.len() as u64 > max_bytes => {
            return Entry::Corrupt("larger than the cache's bound");
        }
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Entry::Missing,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the cached Wasm module");
            return Entry::Missing;
        }
    };
    if file.len() < HEADER_LEN {
        return Entry::Corrupt("shorter than its header");
    }
    let (header, serialized) = file.split_at(HEADER_LEN);
    if &header[..MAGIC.len()] != MAGIC {
        return Entry::Corrupt("not a weir cache entry");
    }
    if header[MAGIC.len()..] != Sha256::digest(serialized)[..] {
        return Entry::Corrupt("checksum mismatch (truncated or altered)");
    }
    Entry::Valid(file)
}

/// Deletes a corrupt entry (logged; it is compiled and written again). Returns `true` (the
/// entry was corrupt) for the caller's outcome.
fn discard(path: &Path, why: &str) -> bool {
    tracing::warn!(path = %path.display(), why, "corrupt cached Wasm module; compiling it again");
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "cannot delete the corrupt cache entry");
    }
    true
}

/// Marks the entry as just used (its modification time: the LRU order).
fn touch(path: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(SystemTime::now()));
    if let Err(error) = touched {
        tracing::debug!(path = %path.display(), %error, "cannot mark the cache entry as used");
    }
}

/// Lowercase hex of `bytes` (digests in file names, logs and errors, for every Wasm module
/// source: the cache, remote fetches and OCI pulls).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Feeds `std::hash::Hash` into SHA-256 (a `Hasher` whose result is stable, unlike
/// `DefaultHasher`'s, which may change with the Rust version).
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A valid module that differs by `n` (and is larger for a larger `functions`).
    fn module(n: u32, functions: usize) -> Vec<u8> {
        let funcs: String = (0..functions)
            .map(|i| format!("(func (export \"f{i}\") (result i32) (i32.const {n}))"))
            .collect();
        wat::parse_str(format!("(module {funcs} (global i32 (i32.const {n})))")).unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(SUFFIX))
            .collect();
        names.sort();
        names
    }

    fn set_used(path: &Path, seconds_ago: u64) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(seconds_ago))
            .unwrap();
    }

    #[test]
    fn the_key_is_the_module_hash_and_the_engine_compatibility() {
        let engine = Engine::default();
        let a = ModuleCache::entry_name(&engine, b"module a");
        assert_eq!(a, ModuleCache::entry_name(&engine, b"module a"));
        assert!(a.starts_with(&hex(&Sha256::digest(b"module a"))), "{a}");
        assert!(a.ends_with(SUFFIX));
        let b = ModuleCache::entry_name(&engine, b"module b");
        assert_ne!(a, b);
        assert_eq!(
            a.split('-').nth(1),
            b.split('-').nth(1),
            "same engine, same tag"
        );
        // Another setting that changes the compiled code: another tag.
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other = Engine::new(&config).unwrap();
        let c = ModuleCache::entry_name(&other, b"module a");
        assert_eq!(a.split('-').next(), c.split('-').next());
        assert_ne!(a, c, "an engine with other settings must not share entries");
    }

    #[test]
    fn a_second_compile_is_a_hit_and_touches_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::new(dir.path().join("cache"), 1 << 30);
        let engine = Engine::default();
        let code = module(1, 3);
        let (_, first) = cache.lookup_or_compile(&engine, &code).unwrap();
        assert_eq!(
            first,
            Outcome::Compiled {
                corrupt: false,
                evicted: 0
            }
        );
        let path = cache.dir().join(ModuleCache::entry_name(&engine, &code));
        assert!(matches!(read_entry(&path, 1 << 30), Entry::Valid(_)));
        set_used(&path, 3600);
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        let (module, second) = cache.lookup_or_compile(&engine, &code).unwrap();
        assert_eq!(second, Outcome::Hit);
        assert_eq!(module.exports().count(), 3);
        let after = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(after > before, "a hit marks the entry as used");
    }

    #[test]
    fn a_truncated_or_altered_entry_is_detected_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::new(dir.path().to_path_buf(), 1 << 30);
        let engine = Engine::default();
        let code = module(2, 2);
        cache.lookup_or_compile(&engine, &code).unwrap();
        let path = cache.dir().join(ModuleCache::entry_name(&engine, &code));
        let whole = std::fs::read(&path).unwrap();

        let damaged: [(&str, Vec<u8>); 4] = [
            ("truncated", whole[..whole.len() / 2].to_vec()),
            ("shorter than the header", whole[..HEADER_LEN - 1].to_vec()),
            ("a payload bit flipped", {
                let mut d = whole.clone();
                let last = d.len() - 1;
                d[last] ^= 1;
                d
            }),
            ("another magic", {
                let mut d = whole.clone();
                d[0] ^= 1;
                d
            }),
        ];
        for (what, bytes) in damaged {
            std::fs::write(&path, &bytes).unwrap();
            assert!(
                matches!(read_entry(&path, 1 << 30), Entry::Corrupt(_)),
                "{what}: not detected"
            );
            let (module, outcome) = cache.lookup_or_compile(&engine, &code).unwrap();
            assert_eq!(
                outcome,
                Outcome::Compiled {
                    corrupt: true,
                    evicted: 0
                },
                "{what}"
            );
            assert_eq!(module.exports().count(), 2);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                whole,
                "{what}: rewritten whole"
            );
            assert_eq!(
                cache.lookup_or_compile(&engine, &code).unwrap().1,
                Outcome::Hit
            );
        }
        // Past the bound (someone else's file under the entry's name): not read.
        let small = ModuleCache::new(dir.path().to_path_buf(), whole.len() as u64 - 1);
        assert_eq!(
            read_entry(&path, small.max_bytes),
            Entry::Corrupt("larger than the cache's bound")
        );
    }

    #[test]
    fn the_least_recently_used_entries_are_evicted_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let codes: Vec<Vec<u8>> = (0..4).map(|n| module(n, 20)).collect();
        let path = |code: &[u8]| dir.path().join(ModuleCache::entry_name(&engine, code));
        // Size one entry, then bound the cache to three.
        let probe = ModuleCache::new(dir.path().to_path_buf(), 1 << 30);
        probe.lookup_or_compile(&engine, &codes[0]).unwrap();
        let size = std::fs::metadata(path(&codes[0])).unwrap().len();
        let cache = ModuleCache::new(dir.path().to_path_buf(), size * 3 + size / 2);
        for (age, code) in codes[1..3].iter().enumerate() {
            cache.lookup_or_compile(&engine, code).unwrap();
            set_used(&path(code), 100 - age as u64 * 10);
        }
        set_used(&path(&codes[0]), 200);
        // A temp file a dead writer left two hours ago goes; one being written stays.
        let stale = dir.path().join(".1.2.tmp");
        let fresh = dir.path().join(".3.4.tmp");
        std::fs::write(&stale, b"partial").unwrap();
        std::fs::write(&fresh, b"partial").unwrap();
        set_used(&stale, 7200);
        // 0 is the oldest, but a hit makes it the most recent: 1 goes instead.
        assert_eq!(
            cache.lookup_or_compile(&engine, &codes[0]).unwrap().1,
            Outcome::Hit
        );
        let (_, outcome) = cache.lookup_or_compile(&engine, &codes[3]).unwrap();
        assert_eq!(
            outcome,
            Outcome::Compiled {
                corrupt: false,
                evicted: 1
            }
        );
        assert!(
            !path(&codes[1]).exists(),
            "the least recently used is evicted"
        );
        for code in [&codes[0], &codes[2], &codes[3]] {
            assert!(path(code).exists());
        }
        assert_eq!(entries(dir.path()).len(), 3);

        // An entry larger than the whole bound is not written (and evicts nothing).
        let small = ModuleCache::new(dir.path().to_path_buf(), 64);
        let (_, outcome) = small.lookup_or_compile(&engine, &module(9, 1)).unwrap();
        assert_eq!(
            outcome,
            Outcome::Compiled {
                corrupt: false,
                evicted: 0
            }
        );
        assert_eq!(entries(dir.path()).len(), 3);
    }
}
