//! `weir new-filter`: the crate it writes builds for wasm32-wasip1 as it is (offline, from the
//! local registry cache), is rustfmt-clean, its unit tests pass on this machine (against the
//! SDK's in-memory host), and its own `weir.yaml`
//! (ports changed only) runs it in weir with the effect the template promises. weir is started
//! from the crate's directory, as the guide says: the config's module `filename` is relative
//! to the working directory.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use weir_tests::{Weir, free_port, get, weir_bin};

/// How long one cargo run of the new crate may take (a cold build took ~20 s here).
const CARGO_LIMIT_S: &str = "600";

/// Runs cargo in `dir` with a time bound; the crate's own target dir, whatever the caller's
/// environment says.
fn cargo(dir: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    Command::new("timeout")
        .arg(CARGO_LIMIT_S)
        .arg(cargo)
        .args(args)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .output()
        .unwrap_or_else(|e| panic!("running cargo {args:?}: {e}"))
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_filter_builds_tests_and_runs_from_its_own_config() {
    let tmp = tempfile::Builder::new()
        .prefix("weir-new-filter-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().join("hello-filter");
    let out = Command::new(weir_bin())
        .args(["new-filter", "hello-filter", "--dir"])
        .arg(&dir)
        .output()
        .expect("run weir new-filter");
    assert_ok("weir new-filter", &out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("cargo build --target wasm32-wasip1 --profile wasm-filter"),
        "{said}"
    );
    // A second run into the same directory is refused and changes nothing.
    let lib_before = std::fs::read(dir.join("src/lib.rs")).expect("lib.rs");
    let again = Command::new(weir_bin())
        .args(["new-filter", "hello-filter", "--dir"])
        .arg(&dir)
        .output()
        .expect("run weir new-filter again");
    assert!(!again.status.success(), "a non-empty dir is refused");
    assert_eq!(std::fs::read(dir.join("src/lib.rs")).unwrap(), lib_before);

    let started = std::time::Instant::now();
    let build = cargo(
        &dir,
        &[
            "build",
            "--offline",
            "--target",
            "wasm32-wasip1",
            "--profile",
            "wasm-filter",
        ],
    );
    assert_ok("cargo build of the new filter", &build);
    let module = dir.join("target/wasm32-wasip1/wasm-filter/hello_filter.wasm");
    assert!(module.is_file(), "{} was built", module.display());
    eprintln!("new filter built in {:?}", started.elapsed());
    assert_ok(
        "cargo fmt --check of the new filter",
        &cargo(&dir, &["fmt", "--check"]),
    );
    let test = cargo(&dir, &["test", "--offline", "--quiet"]);
    assert_ok("cargo test of the new filter", &test);
    assert!(
        String::from_utf8_lossy(&test.stdout).contains("3 passed"),
        "the template's unit tests ran:\n{}",
        String::from_utf8_lossy(&test.stdout)
    );

    // Its own config, with free ports instead of 10000 and 9901.
    let (port, admin_port) = (free_port(), free_port());
    let yaml = std::fs::read_to_string(dir.join("weir.yaml")).expect("weir.yaml");
    assert_eq!(yaml.matches("port_value: 10000").count(), 1, "{yaml}");
    assert_eq!(yaml.matches("port_value: 9901").count(), 1, "{yaml}");
    let yaml = yaml
        .replace("port_value: 10000", &format!("port_value: {port}"))
        .replace("port_value: 9901", &format!("port_value: {admin_port}"));
    let config_path = dir.join("weir.yaml");
    std::fs::write(&config_path, yaml).expect("write weir.yaml");

    let mut cmd = Command::new(weir_bin());
    cmd.args([
        "-c",
        "weir.yaml",
        "--concurrency",
        "1",
        "--log-level",
        "debug",
    ])
    .current_dir(&dir)
    .env("WEIR_WASM_CACHE_DIR", tmp.path().join("wasm-cache"));
    let log_dir = tempfile::Builder::new()
        .prefix("weir-e2e-")
        .tempdir()
        .expect("log dir");
    let mut weir = Weir::spawn_command(
        cmd,
        log_dir,
        config_path,
        format!("127.0.0.1:{admin_port}").parse().expect("addr"),
    );
    weir.wait_ready().await;
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");

    let ok = tokio::time::timeout(Duration::from_secs(20), get(addr, "/"))
        .await
        .expect("answered within 20 s")
        .expect("GET /");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.text(), "hello from weir\n");
    assert_eq!(ok.header("x-hello-filter"), "hello from hello-filter");

    let refused = tokio::time::timeout(Duration::from_secs(20), get(addr, "/forbidden/x"))
        .await
        .expect("answered within 20 s")
        .expect("GET /forbidden/x");
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.text(), "forbidden\n");
    assert_eq!(refused.header("x-hello-filter"), "hello from hello-filter");
    assert!(
        weir.log()
            .contains("hello-filter: configured, x-hello-filter: hello from hello-filter"),
        "the filter logged its configuration\n{}",
        weir.log_report()
    );
}
