//! Wasm modules for the e2e tests, and configs that load them.
//!
//! The real filters (`filters/*`, built with `make wasm-filters`) and the fixtures
//! (`filters/fixtures`, built with the official `proxy-wasm` SDK) are built here when missing,
//! with a bounded `cargo build` (once per test process).

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static BUILD: Mutex<()> = Mutex::new(());

fn cargo_build(args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new("timeout")
        .arg("600")
        .arg(cargo)
        .args(args)
        .current_dir(crate::workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("running cargo {args:?}: {e}"));
    assert!(
        out.status.success(),
        "cargo {args:?} failed (is the target installed? `rustup target add wasm32-wasip1`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real filter's module (`header_manipulation`, `auth`, `local_rate_limit`, ...), built
/// when missing or older than its sources.
pub fn filter(module: &str) -> PathBuf {
    let path = crate::workspace_root()
        .join("target/wasm32-wasip1/wasm-filter")
        .join(format!("{module}.wasm"));
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let package = module.replace('_', "-");
    if !path.is_file() || older_than_sources(&path, &package) {
        cargo_build(&[
            "build",
            "--target",
            "wasm32-wasip1",
            "--profile",
            "wasm-filter",
            "-p",
            &package,
        ]);
    }
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Whether the module at `path` is older than a source of its filter crate, the SDK or the
/// ABI crate (a module built before a change there, e.g. on another branch, is rebuilt).
fn older_than_sources(path: &std::path::Path, package: &str) -> bool {
    fn newest(dir: &std::path::Path) -> Option<std::time::SystemTime> {
        let mut latest = None;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let time = if path.is_dir() {
                newest(&path)
            } else {
                entry.metadata().ok()?.modified().ok()
            };
            latest = latest.max(time);
        }
        latest
    }
    let Ok(built) = std::fs::metadata(path).and_then(|m| m.modified()) else {
        return true;
    };
    let root = crate::workspace_root();
    [
        root.join("filters").join(package).join("src"),
        root.join("sdk/src"),
        root.join("abi/src"),
    ]
    .iter()
    .filter_map(|dir| newest(dir))
    .any(|source| source > built)
}

/// A fixture's module (`headers`, `body_rewrite`, `misbehave`, ...), built when missing.
pub fn fixture(name: &str) -> PathBuf {
    let path = crate::workspace_root()
        .join("filters/fixtures/target/wasm32-wasip1/release")
        .join(format!("fixture_{name}.wasm"));
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !path.is_file() {
        cargo_build(&[
            "build",
            "--manifest-path",
            "filters/fixtures/Cargo.toml",
            "--target",
            "wasm32-wasip1",
            "--release",
        ]);
    }
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// The AssemblyScript fixture (`filters/fixtures/assemblyscript`, the npm proxy-wasm SDK),
/// built with `make wasm-fixture-as` (npm + asc; a no-op when up to date).
pub fn assemblyscript_fixture() -> PathBuf {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    envoy_check::build_assemblyscript_fixture()
}

/// The C filter (`filters/c-header`, clang + wasi-libc, no SDK), built with
/// `make wasm-filter-c` (which installs the Debian packages it needs; a no-op when up to date).
pub fn c_filter() -> PathBuf {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    envoy_check::build_c_filter()
}

/// An `envoy.filters.http.wasm` entry of `http_filters`, as Envoy's docs write it.
pub fn wasm_filter(
    name: &str,
    module: &std::path::Path,
    configuration: &str,
    fail_open: bool,
) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": module.display().to_string() } },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": format!("vm:{name}")
                    }
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration
                },
                "fail_open": fail_open
            }
        }
    })
}

/// Puts `filters` (then the router) in listener 0's `http_filters`.
pub fn set_filters(config: &mut Value, filters: Vec<Value>) {
    let mut all = filters;
    all.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
    }));
    crate::config::hcm_of(config)["http_filters"] = Value::Array(all);
}

/// Starts weir on `config` with extra environment variables (`--concurrency` as given).
pub async fn start_with_env(
    config: &Value,
    concurrency: usize,
    env: &[(&str, &str)],
) -> crate::Weir {
    let dir = tempfile::Builder::new()
        .prefix("weir-e2e-wasm-")
        .tempdir()
        .expect("create temp dir");
    let config_path = dir.path().join("weir.yaml");
    std::fs::write(
        &config_path,
        serde_json::to_string_pretty(config).expect("serialize config"),
    )
    .expect("write config");
    let admin = crate::weir::admin_addr(config);
    let mut cmd = Command::new(crate::weir_bin());
    cmd.arg("-c")
        .arg(&config_path)
        .args([
            "--log-level",
            "debug",
            "--concurrency",
            &concurrency.to_string(),
        ])
        .env("WEIR_WASM_CACHE_DIR", dir.path().join("wasm-cache"));
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut weir = crate::Weir::spawn_command(cmd, dir, config_path, admin);
    weir.wait_ready().await;
    weir
}
