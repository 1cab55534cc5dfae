//! Every example in `configs/` loads: `weir validate -c configs/NAME.yaml` run from the
//! repository root, as the README and the files' own comments say (`make run CONFIG=...` runs
//! weir there too). The Wasm modules the examples name are built first. A relative module
//! `filename` is relative to the working directory (Envoy's rule), so the same file validated
//! from another directory is refused, naming the field.

use std::path::Path;
use std::process::{Command, Output};
use weir_tests::{weir_bin, workspace_root};

/// The modules `target/wasm32-wasip1/wasm-filter/<module>.wasm` a config names.
fn wasm_filter_modules(text: &str) -> Vec<String> {
    const DIR: &str = "target/wasm32-wasip1/wasm-filter/";
    let mut modules = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(DIR) {
        let after = &rest[at + DIR.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if after[end..].starts_with(".wasm") {
            modules.push(after[..end].to_owned());
        }
        rest = &after[end..];
    }
    modules
}

fn validate(config: &Path, working_dir: &Path) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(weir_bin())
        .args(["validate", "-c"])
        .arg(config)
        .current_dir(working_dir)
        .output()
        .expect("run weir validate")
}

#[test]
fn every_example_config_validates_from_the_repository_root() {
    let root = workspace_root();
    let mut names: Vec<_> = std::fs::read_dir(root.join("configs"))
        .expect("configs/")
        .filter_map(|entry| entry.ok().map(|e| e.file_name()))
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "the examples: {names:?}");
    let mut wasm_examples = 0;
    for name in &names {
        let relative = Path::new("configs").join(name);
        let text = std::fs::read_to_string(root.join(&relative)).expect("read example");
        let modules = wasm_filter_modules(&text);
        for module in &modules {
            weir_tests::wasm::filter(module);
        }
        if !modules.is_empty() {
            wasm_examples += 1;
        }
        let out = validate(&relative, &root);
        assert!(
            out.status.success(),
            "weir validate -c {}: {}\n{}",
            relative.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(": OK ("),
            "{name}"
        );
        if name.starts_with("wasm_") {
            assert!(
                text.contains("make run CONFIG=configs/") && !text.contains("once its Wasm host"),
                "{name}: its comment says how to run it in weir"
            );
        }
    }
    assert!(wasm_examples >= 5, "the Wasm examples were checked");

    // From another directory the repository-relative module path does not resolve.
    let configs = root.join("configs");
    let out = validate(Path::new("wasm_auth.yaml"), &configs);
    assert!(!out.status.success(), "relative to the working directory");
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("vm_config.code.local.filename"),
        "the error names the field: {error}"
    );
}

#[test]
fn module_paths_are_found_in_config_text() {
    let text = "code: { local: { filename: target/wasm32-wasip1/wasm-filter/auth.wasm } }\n\
                x: target/wasm32-wasip1/wasm-filter/tcp_guard.wasm";
    assert_eq!(wasm_filter_modules(text), ["auth", "tcp_guard"]);
    assert!(wasm_filter_modules("no modules").is_empty());
}
