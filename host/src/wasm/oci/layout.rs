//! Where the module is inside an image: the layouts in use for Wasm filters.
//!
//! - Istio's compat image: one layer of media type
//!   `application/vnd.module.wasm.content.layer.v1+wasm`, the module itself;
//! - the CNCF Wasm artifact (`application/vnd.wasm.content.layer.v1+wasm`, config
//!   `application/vnd.wasm.config.v0+json`), the module itself;
//! - Istio's OCI spec image: an ordinary image whose layer is a tar (gzipped or not) holding
//!   `plugin.wasm` at its root.
//!
//! An image index (a multi-platform image) is followed one level, to its first image
//! manifest. Every size is bounded: a manifest's layer count, a layer's bytes, a tar's
//! decompressed bytes and entry count (a gzip bomb is refused, not inflated).

use super::OciError;
use serde::Deserialize;
use std::io::Read;

/// Istio's compat layer: the module's bytes.
pub const ISTIO_WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The CNCF Wasm artifact's layer: the module's bytes.
pub const CNCF_WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The CNCF Wasm artifact's config.
pub const CNCF_WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The manifest types asked for (`Accept`).
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Most layers a manifest may list (Wasm images have one).
const MAX_LAYERS: usize = 64;
/// Most entries read from a tar layer before giving up on finding `plugin.wasm`.
const MAX_TAR_ENTRIES: usize = 10_000;
/// The name of the module in a tar layer (Istio's OCI image spec).
const PLUGIN_FILE: &str = "plugin.wasm";

/// A content descriptor of a manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    /// What the content is.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:HEX` of the content.
    pub digest: String,
    /// Its size in bytes, as the manifest says.
    #[serde(default)]
    pub size: u64,
}

/// The fields of an image manifest or an image index weir reads.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    /// The manifest's own type (absent in some older ones).
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    /// The config blob.
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// The layers of an image manifest.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifests of an image index.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Manifest {
    /// Parses a manifest's JSON.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, OciError> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| OciError::Manifest(format!("not an image manifest: {e}")))?;
        if manifest.layers.len() > MAX_LAYERS || manifest.manifests.len() > MAX_LAYERS {
            return Err(OciError::Manifest(format!(
                "more than {MAX_LAYERS} layers or manifests"
            )));
        }
        Ok(manifest)
    }

    /// The image manifest an index points to (its first one), when this is an index.
    pub fn index_target(&self) -> Option<&Descriptor> {
        if self.layers.is_empty() {
            self.manifests.iter().find(|m| {
                m.media_type.is_empty()
                    || m.media_type.contains("manifest.v1")
                    || m.media_type.contains("manifest.v2")
            })
        } else {
            None
        }
    }

    /// Which layers may hold the module, in the order to try them.
    pub fn module_layers(&self) -> Result<ModuleLayers, OciError> {
        let wasm: Vec<&Descriptor> = self
            .layers
            .iter()
            .filter(|l| l.media_type == ISTIO_WASM_LAYER || l.media_type == CNCF_WASM_LAYER)
            .collect();
        match wasm.as_slice() {
            [one] => return Ok(ModuleLayers::Module((*one).clone())),
            [] => {}
            _ => {
                return Err(OciError::Manifest(format!(
                    "{} Wasm layers; expected one",
                    wasm.len()
                )));
            }
        }
        // An image's upper layers win: try the last first.
        let archives: Vec<Descriptor> = self
            .layers
            .iter()
            .rev()
            .filter(|l| l.media_type.contains("tar"))
            .cloned()
            .collect();
        if archives.is_empty() {
            let types: Vec<&str> = self.layers.iter().map(|l| l.media_type.as_str()).collect();
            return Err(OciError::NoModule(format!(
                "no Wasm layer ({ISTIO_WASM_LAYER} or {CNCF_WASM_LAYER}) and no tar layer; the layers are {types:?}"
            )));
        }
        Ok(ModuleLayers::Archives(archives))
    }
}

/// Where the module is.
#[derive(Debug)]
pub enum ModuleLayers {
    /// This layer is the module.
    Module(Descriptor),
    /// One of these tar layers holds `plugin.wasm`.
    Archives(Vec<Descriptor>),
}

/// Reads that fail once more than `left` bytes came through: the decompressed size bound.
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a stream that ends exactly at the bound from a larger one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(format!(
                    "the layer unpacks to more than {} bytes",
                    self.limit
                ))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// `plugin.wasm` from a tar layer (gzipped or not, told by its magic bytes), reading at most
/// `unpacked_limit` bytes of tar and a module of at most `module_limit`; `None` when the
/// archive has no such file.
pub fn module_from_archive(
    layer: &[u8],
    unpacked_limit: u64,
    module_limit: u64,
) -> Result<Option<Vec<u8>>, OciError> {
    let gzipped = layer.starts_with(&[0x1f, 0x8b]);
    let source: Box<dyn Read + '_> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(layer))
    } else {
        Box::new(layer)
    };
    let bounded = Bounded {
        inner: source,
        left: unpacked_limit,
        limit: unpacked_limit,
    };
    let tar_error = |e: std::io::Error| OciError::Archive(e.to_string());
    let mut archive = tar::Archive::new(bounded);
    for (i, entry) in archive.entries().map_err(tar_error)?.enumerate() {
        if i >= MAX_TAR_ENTRIES {
            return Err(OciError::Archive(format!(
                "more than {MAX_TAR_ENTRIES} entries without {PLUGIN_FILE}"
            )));
        }
        let mut entry = entry.map_err(tar_error)?;
        let path = entry.path().map_err(tar_error)?;
        let name = path.to_string_lossy();
        let name = name.trim_start_matches("./").trim_start_matches('/');
        if name != PLUGIN_FILE || !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.header().size().map_err(tar_error)?;
        if size > module_limit {
            return Err(OciError::TooLarge {
                what: format!("{PLUGIN_FILE} in the image"),
                limit: module_limit,
            });
        }
        let mut module = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .by_ref()
            .take(size)
            .read_to_end(&mut module)
            .map_err(tar_error)?;
        return Ok(Some(module));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            if let Err(e) = builder.append_data(&mut header, name, *data) {
                panic!("tar append: {e}");
            }
        }
        match builder.into_inner() {
            Ok(bytes) => bytes,
            Err(e) => panic!("tar finish: {e}"),
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        if let Err(e) = encoder.write_all(data) {
            panic!("gzip: {e}");
        }
        match encoder.finish() {
            Ok(bytes) => bytes,
            Err(e) => panic!("gzip: {e}"),
        }
    }

    #[test]
    fn plugin_wasm_from_plain_and_gzipped_tar() {
        let tar = tar_of(&[("README", b"hello"), ("./plugin.wasm", b"\0asm\x01\0\0\0")]);
        let found = module_from_archive(&tar, 1 << 20, 1 << 20);
        assert_eq!(
            found.ok().flatten().as_deref(),
            Some(&b"\0asm\x01\0\0\0"[..])
        );
        let found = module_from_archive(&gzip(&tar), 1 << 20, 1 << 20);
        assert_eq!(
            found.ok().flatten().as_deref(),
            Some(&b"\0asm\x01\0\0\0"[..])
        );
        let none = module_from_archive(&tar_of(&[("other.wasm", b"x")]), 1 << 20, 1 << 20);
        assert!(matches!(none, Ok(None)));
    }

    #[test]
    fn gzip_bomb_is_refused_within_the_bound() {
        // 16 MiB of zeros gzip to ~16 KiB; the unpacked bound is 1 MiB.
        let zeros = vec![0u8; 16 << 20];
        let tar = tar_of(&[("filler", &zeros), ("plugin.wasm", b"\0asm")]);
        let bomb = gzip(&tar);
        assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
        let started = std::time::Instant::now();
        let result = module_from_archive(&bomb, 1 << 20, 1 << 20);
        let Err(e) = result else {
            panic!("a bomb is refused")
        };
        assert!(e.to_string().contains("more than 1048576 bytes"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn oversized_plugin_is_refused_by_its_header() {
        let tar = tar_of(&[("plugin.wasm", &[7u8; 4096])]);
        let Err(e) = module_from_archive(&tar, 1 << 20, 1024) else {
            panic!("a module over the limit is refused")
        };
        assert!(matches!(e, OciError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn layer_choice() {
        let manifest = |layers: &str| {
            Manifest::parse(
                format!(r#"{{"schemaVersion":2,"config":{{"mediaType":"{CNCF_WASM_CONFIG}","digest":"sha256:00","size":2}},"layers":[{layers}]}}"#)
                    .as_bytes(),
            )
        };
        let layer =
            |t: &str, d: &str| format!(r#"{{"mediaType":"{t}","digest":"sha256:{d}","size":1}}"#);
        let Ok(m) = manifest(&layer(CNCF_WASM_LAYER, "aa")) else {
            panic!("parses")
        };
        assert!(
            matches!(m.module_layers(), Ok(ModuleLayers::Module(d)) if d.digest == "sha256:aa")
        );
        let Ok(m) = manifest(&format!(
            "{},{}",
            layer("application/vnd.oci.image.layer.v1.tar+gzip", "01"),
            layer("application/vnd.oci.image.layer.v1.tar", "02")
        )) else {
            panic!("parses")
        };
        let Ok(ModuleLayers::Archives(order)) = m.module_layers() else {
            panic!("archives")
        };
        assert_eq!(order[0].digest, "sha256:02", "the upper layer first");
        let Ok(m) = manifest(&layer("application/json", "03")) else {
            panic!("parses")
        };
        let Err(e) = m.module_layers() else {
            panic!("no module layer")
        };
        assert!(e.to_string().contains("application/json"), "{e}");
        let Ok(m) = manifest(&format!(
            "{},{}",
            layer(ISTIO_WASM_LAYER, "04"),
            layer(CNCF_WASM_LAYER, "05")
        )) else {
            panic!("parses")
        };
        assert!(m.module_layers().is_err(), "two Wasm layers are ambiguous");
    }
}
