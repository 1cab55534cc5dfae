//! Harness for running weir's Wasm filters in real Envoy: build the modules, find (or
//! pip-install) Envoy, start it detached on ephemeral ports, talk HTTP/1.1 and WebSocket to it,
//! and stop it. Every wait is bounded. Used by `tests/envoy.rs`.

pub mod envoy;
pub mod http;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The filter crates and their module file names.
pub const FILTERS: &[(&str, &str)] = &[
    ("header-manipulation", "header_manipulation.wasm"),
    ("auth", "auth.wasm"),
    ("local-rate-limit", "local_rate_limit.wasm"),
    ("websocket-guard", "websocket_guard.wasm"),
    ("tcp-guard", "tcp_guard.wasm"),
];

/// Where `make wasm-filters` (and [`build_filters`]) put the modules.
pub fn wasm_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("wasm32-wasip1").join("wasm-filter")
}

/// Builds every filter for wasm32-wasip1 with the `wasm-filter` profile (a no-op when up to
/// date; at most 10 minutes) and returns the module directory. Panics with the build output
/// when the build fails.
pub fn build_filters() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new("timeout");
    cmd.arg("600").arg(cargo).args([
        "build",
        "--target",
        "wasm32-wasip1",
        "--profile",
        "wasm-filter",
    ]);
    for (package, _) in FILTERS {
        cmd.args(["-p", package]);
    }
    let out = cmd
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("running cargo build for the filters: {e}"));
    assert!(
        out.status.success(),
        "building the wasm filters failed (is the target installed? `rustup target add \
         wasm32-wasip1`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = wasm_dir();
    for (_, file) in FILTERS {
        assert!(
            dir.join(file).is_file(),
            "{} was not built",
            dir.join(file).display()
        );
    }
    dir
}

/// Builds the AssemblyScript fixture (`make wasm-fixture-as`: npm + asc, a no-op when up to
/// date; at most 10 minutes) and returns its module. Panics with the build output on failure.
pub fn build_assemblyscript_fixture() -> PathBuf {
    let out = Command::new("timeout")
        .args(["600", "make", "-s", "wasm-fixture-as"])
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("running make wasm-fixture-as: {e}"));
    assert!(
        out.status.success(),
        "make wasm-fixture-as failed (needs npm):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let module = workspace_root().join("filters/fixtures/assemblyscript/build/path_guard.wasm");
    assert!(module.is_file(), "{} was not built", module.display());
    module
}

/// Builds the C filter (`make wasm-filter-c`: clang + wasi-libc, installed when missing; a
/// no-op when up to date; at most 10 minutes) and returns its module. Panics with the build
/// output on failure.
pub fn build_c_filter() -> PathBuf {
    let out = Command::new("timeout")
        .args(["600", "make", "-s", "wasm-filter-c"])
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("running make wasm-filter-c: {e}"));
    assert!(
        out.status.success(),
        "make wasm-filter-c failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let module = workspace_root().join("target/wasm-c/c_header.wasm");
    assert!(module.is_file(), "{} was not built", module.display());
    module
}
