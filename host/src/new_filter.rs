//! `weir new-filter NAME`: writes a filter crate that builds and runs as it is.
//!
//! The crate is written from the template files in `host/templates/new-filter/` (embedded in
//! the binary): a `Cargo.toml` with the `wasm-filter` profile and its own `[workspace]` (so it
//! builds alone, inside a weir checkout or anywhere else), a `src/lib.rs` with a small filter on
//! weir's SDK, and a `weir.yaml` that runs it. The SDK is a path dependency on the weir checkout
//! this binary was built from (or `--sdk PATH`): weir-sdk is not on crates.io.

use std::path::{Component, Path, PathBuf};

const CARGO_TOML: &str = include_str!("../templates/new-filter/Cargo.toml.in");
const LIB_RS: &str = include_str!("../templates/new-filter/lib.rs.in");
const WEIR_YAML: &str = include_str!("../templates/new-filter/weir.yaml.in");
const GITIGNORE: &str = include_str!("../templates/new-filter/gitignore.in");

/// The longest crate name accepted (crates.io's limit).
const MAX_NAME_LEN: usize = 64;

/// Why a filter crate was not written.
#[derive(Debug, thiserror::Error)]
pub enum NewFilterError {
    /// The name is no usable crate name.
    #[error(
        "{name:?} is not a usable filter name: {reason} (use lowercase letters, digits, '-' and '_', starting with a letter)"
    )]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The target directory exists and holds files.
    #[error("{0} already exists and is not empty; pick another --dir")]
    DirNotEmpty(PathBuf),
    /// No weir-sdk crate at the SDK path.
    #[error(
        "no weir-sdk crate at {0} (this weir was built from another checkout?): pass --sdk PATH, the sdk/ directory of a weir checkout"
    )]
    NoSdk(PathBuf),
    /// A path that cannot be written into Cargo.toml.
    #[error("the path {0} cannot be written into Cargo.toml (it has control characters)")]
    UnwritablePath(PathBuf),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// What `weir new-filter` was asked for.
#[derive(Debug, Clone)]
pub struct NewFilter {
    /// The crate name (also the plugin name, with '-' as '_').
    pub name: String,
    /// Where to write the crate; `./NAME` when not given.
    pub dir: Option<PathBuf>,
    /// weir-sdk's directory; the checkout this binary was built from when not given.
    pub sdk: Option<PathBuf>,
}

/// The crate that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The module `cargo build --target wasm32-wasip1 --profile wasm-filter` makes, relative
    /// to `dir`.
    pub module: PathBuf,
}

/// The SDK beside the sources this binary was built from.
pub fn default_sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// Writes the filter crate. Nothing is written when the name, the directory or the SDK path
/// is refused.
pub fn create(request: &NewFilter) -> Result<Written, NewFilterError> {
    check_name(&request.name)?;
    let sdk = request.sdk.clone().unwrap_or_else(default_sdk_dir);
    let sdk = sdk
        .canonicalize()
        .map_err(|_| NewFilterError::NoSdk(sdk.clone()))?;
    if !is_weir_sdk(&sdk) {
        return Err(NewFilterError::NoSdk(sdk));
    }
    let dir = request
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&request.name));
    ensure_empty_dir(&dir)?;
    let dir = dir.canonicalize().map_err(|source| NewFilterError::Io {
        path: dir.clone(),
        source,
    })?;
    let sdk_path = sdk_path_for(&dir, &sdk);
    let sdk_path = toml_string_body(&sdk_path)?;
    let module = request.name.replace('-', "_");
    let header = format!("x-{}", request.name.replace('_', "-"));
    let fill = |template: &str| {
        template
            .replace("{{name}}", &request.name)
            .replace("{{module}}", &module)
            .replace("{{header}}", &header)
            .replace("{{sdk_path}}", &sdk_path)
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("weir.yaml", fill(WEIR_YAML)),
        (".gitignore", fill(GITIGNORE)),
    ];
    for (relative, text) in &files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| NewFilterError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| NewFilterError::Io { path, source })?;
    }
    Ok(Written {
        dir,
        module: Path::new("target/wasm32-wasip1/wasm-filter").join(format!("{module}.wasm")),
    })
}

/// Accepts what Cargo accepts as a package name and is also a usable header and file name.
fn check_name(name: &str) -> Result<(), NewFilterError> {
    let bad = |reason| NewFilterError::BadName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("it is longer than 64 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(bad("it does not start with a lowercase letter"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(bad("it has characters other than a-z, 0-9, '-' and '_'"));
    }
    if matches!(
        name.replace('-', "_").as_str(),
        "weir_sdk" | "weir_abi" | "weir" | "std" | "core" | "alloc" | "test" | "proc_macro"
    ) {
        return Err(bad("it is the name of a crate the filter depends on"));
    }
    Ok(())
}

fn is_weir_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .is_ok_and(|manifest| manifest.lines().any(|l| l.trim() == "name = \"weir-sdk\""))
}

/// Creates `dir` (and its parents) or accepts it when it exists empty.
fn ensure_empty_dir(dir: &Path) -> Result<(), NewFilterError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(NewFilterError::DirNotEmpty(dir.to_owned()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|source| NewFilterError::Io {
                path: dir.to_owned(),
                source,
            })
        }
        Err(source) => Err(NewFilterError::Io {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// The SDK path as the crate's Cargo.toml should name it: relative when the crate is inside
/// the SDK's checkout (the checkout can move), absolute otherwise. Both paths canonical.
fn sdk_path_for(crate_dir: &Path, sdk: &Path) -> PathBuf {
    let Some(checkout) = sdk.parent() else {
        return sdk.to_owned();
    };
    let Ok(inside) = crate_dir.strip_prefix(checkout) else {
        return sdk.to_owned();
    };
    let mut relative = PathBuf::new();
    for component in inside.components() {
        if matches!(component, Component::Normal(_)) {
            relative.push("..");
        }
    }
    relative.join(sdk.strip_prefix(checkout).unwrap_or(Path::new("sdk")))
}

/// The path as the inside of a TOML basic string ("...").
fn toml_string_body(path: &Path) -> Result<String, NewFilterError> {
    let text = path.to_string_lossy();
    if text.chars().any(char::is_control) {
        return Err(NewFilterError::UnwritablePath(path.to_owned()));
    }
    Ok(text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, dir: &Path) -> NewFilter {
        NewFilter {
            name: name.to_owned(),
            dir: Some(dir.to_owned()),
            sdk: None,
        }
    }

    #[test]
    fn writes_a_crate_with_every_placeholder_filled() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("my-filter");
        let written = create(&request("my-filter", &dir)).expect("created");
        assert_eq!(
            written.module,
            Path::new("target/wasm32-wasip1/wasm-filter/my_filter.wasm")
        );
        for file in ["Cargo.toml", "src/lib.rs", "weir.yaml", ".gitignore"] {
            let text = std::fs::read_to_string(dir.join(file)).expect(file);
            assert!(
                !text.contains("{{"),
                "{file} has a placeholder left:\n{text}"
            );
        }
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
        assert!(manifest.contains("name = \"my-filter\""));
        assert!(manifest.contains("[profile.wasm-filter]"));
        assert!(manifest.contains("[workspace]"));
        let sdk = default_sdk_dir().canonicalize().expect("sdk");
        assert!(
            manifest.contains(&format!("weir-sdk = {{ path = \"{}\" }}", sdk.display())),
            "outside the checkout the SDK path is absolute:\n{manifest}"
        );
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).expect("lib");
        assert!(lib.contains("const HEADER: &str = \"x-my-filter\";"));
        let yaml = std::fs::read_to_string(dir.join("weir.yaml")).expect("yaml");
        assert!(yaml.contains("filename: target/wasm32-wasip1/wasm-filter/my_filter.wasm"));
        assert!(yaml.contains("value: hello from my-filter"));
    }

    #[test]
    fn refuses_bad_names_and_non_empty_dirs_writing_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for name in [
            "",
            "My",
            "1x",
            "a b",
            "a/b",
            "weir-sdk",
            "x\u{e9}",
            &"a".repeat(65),
        ] {
            let dir = tmp.path().join("bad");
            let error = create(&request(name, &dir)).expect_err(name);
            assert!(matches!(error, NewFilterError::BadName { .. }), "{error}");
            assert!(!dir.exists(), "{name:?}: nothing written");
        }
        let full = tmp.path().join("full");
        std::fs::create_dir(&full).expect("mkdir");
        std::fs::write(full.join("keep"), "mine").expect("write");
        let error = create(&request("ok", &full)).expect_err("not empty");
        assert!(matches!(error, NewFilterError::DirNotEmpty(_)), "{error}");
        assert_eq!(std::fs::read_to_string(full.join("keep")).unwrap(), "mine");
        let no_sdk = NewFilter {
            sdk: Some(tmp.path().to_owned()),
            ..request("ok", &tmp.path().join("ok"))
        };
        assert!(matches!(create(&no_sdk), Err(NewFilterError::NoSdk(_))));
    }

    #[test]
    fn the_sdk_path_is_relative_inside_its_checkout() {
        let checkout = Path::new("/src/weir");
        let sdk = checkout.join("sdk");
        assert_eq!(
            sdk_path_for(&checkout.join("filters/mine"), &sdk),
            Path::new("../../sdk")
        );
        assert_eq!(sdk_path_for(Path::new("/home/me/mine"), &sdk), sdk);
        assert_eq!(
            toml_string_body(Path::new("/a\"b\\c")).unwrap(),
            "/a\\\"b\\\\c"
        );
        assert!(toml_string_body(Path::new("/a\nb")).is_err());
    }
}
