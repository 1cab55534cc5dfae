//! Wasm filters pulled from a real OCI registry (Debian's `docker-registry`, started per test
//! on 127.0.0.1, see `weir_tests::registry`): `vm_config.code.remote.http_uri.uri:
//! oci://...` with the module's `sha256`, each of the three image layouts, a wrong digest, the
//! pull policies against a tag that moves, docker config credentials against htpasswd auth,
//! and a registry that is down or silent.

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use weir_tests::config::{self, Ports};
use weir_tests::registry::{Layout, Registry, docker_config};
use weir_tests::wasm::set_filters;
use weir_tests::{H1Upstream, Weir, client, sha256_hex};

/// A proxy-wasm module (ABI 0.2.1) that adds `header: value` to every response: two versions
/// of a filter differ in the value, so the response tells which module runs.
fn module(header: &str, value: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{header}")
  (data (i32.const 512) "{value}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 16) (i32.const {hlen}) (i32.const 512) (i32.const {vlen})))
    (i32.const 0))
)"#,
        hlen = header.len(),
        vlen = value.len(),
    );
    wat::parse_str(wat).expect("WAT")
}

/// An `envoy.filters.http.wasm` entry whose code is `oci://reference`.
fn oci_filter(
    name: &str,
    reference: &str,
    sha256: &str,
    pull_policy: Option<&str>,
    timeout: &str,
) -> Value {
    let mut remote = json!({
        "http_uri": { "uri": format!("oci://{reference}"), "cluster": "unused", "timeout": timeout },
        "sha256": sha256
    });
    if let Some(policy) = pull_policy {
        remote["weir_image_pull_policy"] = json!(policy);
    }
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": { "vm_id": name, "runtime": "envoy.wasm.runtime.v8", "code": { "remote": remote } }
            }
        }
    })
}

/// What weir runs with: its Wasm cache dir (the OCI store is under it) and a docker config
/// dir (`$DOCKER_CONFIG`, so the machine's own `~/.docker` is never read).
struct Env {
    cache: TempDir,
    docker: TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            cache: tempfile::tempdir().expect("tempdir"),
            docker: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn command(&self, config: &Value, dir: &Path) -> Command {
        let config_path = dir.join("weir.yaml");
        std::fs::write(
            &config_path,
            serde_json::to_string_pretty(config).expect("JSON"),
        )
        .expect("write config");
        let mut cmd = Command::new(weir_tests::weir_bin());
        cmd.arg("-c")
            .arg(&config_path)
            .args(["--log-level", "debug", "--wasm-cache-dir"])
            .arg(self.cache.path())
            .env("DOCKER_CONFIG", self.docker.path());
        cmd
    }

    /// Starts weir on `config` and waits until it is ready.
    async fn start(&self, config: &Value) -> Weir {
        let dir = tempfile::Builder::new()
            .prefix("weir-e2e-oci-")
            .tempdir()
            .expect("tempdir");
        let mut cmd = self.command(config, dir.path());
        cmd.args(["--concurrency", "1"]);
        let config_path = dir.path().join("weir.yaml");
        let admin = weir_tests::weir::admin_addr(config);
        let mut weir = Weir::spawn_command(cmd, dir, config_path, admin);
        weir.wait_ready().await;
        weir
    }

    /// `weir validate` on `config` (pulls and compiles every module): whether it passed, its
    /// output, and how long it took.
    fn validate(&self, config: &Value) -> (bool, String, Duration) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = self.command(config, dir.path());
        cmd.arg("validate");
        let started = Instant::now();
        let mut bounded = Command::new("timeout");
        bounded
            .arg("60")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            if let Some(value) = value {
                bounded.env(key, value);
            }
        }
        let out = bounded.output().expect("run weir validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text, started.elapsed())
    }

    fn write_docker_config(&self, text: &str) {
        std::fs::write(self.docker.path().join("config.json"), text).expect("write docker config");
    }
}

/// A config with one upstream and `filters` before the router.
fn config_with(up: &H1Upstream, ports: Ports, filters: Vec<Value>) -> Value {
    let mut config = config::simple(ports, &[up.addr]);
    set_filters(&mut config, filters);
    config
}

async fn get(ports: Ports) -> client::Resp {
    client::get(ports.http_addr(), "/")
        .await
        .unwrap_or_else(|e| panic!("GET through weir: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_layout_is_pulled_by_digest_and_runs() {
    let registry = Registry::start();
    let up = H1Upstream::start("up").await;
    let ports = Ports::new();
    let layouts = [
        ("compat", Layout::IstioCompat),
        ("targz", Layout::DockerTarGz),
        ("cncf", Layout::CncfArtifact),
    ];
    let mut filters = Vec::new();
    for (name, layout) in layouts {
        let module = module(&format!("x-oci-{name}"), &format!("{name}-v1"));
        let repository = format!("filters/{name}");
        let manifest = registry
            .push_module(&repository, "v1", layout, &module)
            .await;
        let reference = format!("{}/{repository}:v1@{manifest}", registry.host());
        filters.push(oci_filter(
            name,
            &reference,
            &sha256_hex(&module),
            None,
            "10s",
        ));
    }
    // A multi-platform image: an index whose one entry is a CNCF artifact.
    let module_in_index = module("x-oci-index", "index-v1");
    let entry = registry
        .push_module_descriptor(
            "filters/index",
            "entry",
            Layout::CncfArtifact,
            &module_in_index,
        )
        .await;
    let index = registry.push_index("filters/index", "v1", &[entry]).await;
    let reference = format!("{}/filters/index:v1@{index}", registry.host());
    filters.push(oci_filter(
        "index",
        &reference,
        &sha256_hex(&module_in_index),
        None,
        "10s",
    ));
    let env = Env::new();
    let weir = env.start(&config_with(&up, ports, filters)).await;
    let resp = get(ports).await;
    assert_eq!(resp.status, 200, "{}", weir.log_report());
    assert_eq!(
        resp.header("x-oci-index"),
        "index-v1",
        "{}",
        weir.log_report()
    );
    // The index, the manifest it lists, the layer.
    assert_eq!(registry.gets("filters/index"), 3, "{}", registry.log());
    for (name, _) in layouts {
        assert_eq!(
            resp.header(&format!("x-oci-{name}")),
            format!("{name}-v1"),
            "the {name} image's module runs\n{}",
            weir.log_report()
        );
        // The manifest, by digest, and the one layer; nothing else.
        assert_eq!(
            registry.gets(&format!("filters/{name}")),
            2,
            "{}",
            registry.log()
        );
    }
    let pulls: Vec<String> = weir
        .log()
        .lines()
        .filter(|l| l.contains("Wasm module pulled from the registry"))
        .map(str::to_owned)
        .collect();
    assert_eq!(pulls.len(), 4, "{}", weir.log_report());
    // The figures (bytes, ms) for `--nocapture` runs.
    for line in pulls {
        eprintln!("{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_digest_is_refused_naming_both() {
    let registry = Registry::start();
    let up = H1Upstream::start("up").await;
    let module = module("x-oci", "v1");
    let manifest = registry
        .push_module("filters/pinned", "v1", Layout::CncfArtifact, &module)
        .await;
    let actual = sha256_hex(&module);
    let expected = sha256_hex(b"some other module");
    let env = Env::new();
    let reference = format!("{}/filters/pinned:v1@{manifest}", registry.host());
    let config = config_with(
        &up,
        Ports::new(),
        vec![oci_filter("pinned", &reference, &expected, None, "10s")],
    );
    let (ok, output, _) = env.validate(&config);
    assert!(!ok, "a module with another digest is refused:\n{output}");
    assert!(
        output.contains(&format!("has sha256 {actual}"))
            && output.contains(&format!("expects sha256 {expected}")),
        "the error names both digests:\n{output}"
    );
    assert!(output.contains("vm_config.code.remote:"), "{output}");
    // Nothing was stored for the wrong digest: the next pull asks the registry again.
    let before = registry.gets("filters/pinned");
    let (ok, _, _) = env.validate(&config);
    assert!(!ok);
    assert!(
        registry.gets("filters/pinned") > before,
        "{}",
        registry.log()
    );

    // A manifest digest the registry does not hold.
    let missing = format!(
        "{}/filters/pinned@sha256:{}",
        registry.host(),
        sha256_hex(b"no such manifest")
    );
    let config = config_with(
        &up,
        Ports::new(),
        vec![oci_filter("pinned", &missing, &actual, None, "10s")],
    );
    let (ok, output, _) = env.validate(&config);
    assert!(!ok && output.contains("404"), "{output}");
}

/// The acceptance line: a tag that moves is not picked up with IfNotPresent (served from the
/// local store, the registry not contacted) and is with Always (the manifest resolved again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_is_kept_with_if_not_present_and_seen_with_always() {
    let registry = Registry::start();
    let up = H1Upstream::start("up").await;
    let repository = "filters/moving";
    let v1 = module("x-oci-version", "v1");
    let v2 = module("x-oci-version", "v2");
    let (sha1, sha2) = (sha256_hex(&v1), sha256_hex(&v2));
    registry
        .push_module(repository, "stable", Layout::IstioCompat, &v1)
        .await;
    let reference = format!("{}/{repository}:stable", registry.host());
    let env = Env::new();
    let config_for = |sha: &str, policy: &str| {
        let ports = Ports::new();
        let filter = oci_filter("moving", &reference, sha, Some(policy), "10s");
        (ports, config_with(&up, ports, vec![filter]))
    };

    // First start: pulled.
    let (ports, config) = config_for(&sha1, "IfNotPresent");
    let weir = env.start(&config).await;
    assert_eq!(get(ports).await.header("x-oci-version"), "v1");
    drop(weir);
    let after_first = registry.gets(repository);
    assert!(after_first >= 2, "{}", registry.log());

    // The tag moves to v2.
    registry
        .push_module(repository, "stable", Layout::IstioCompat, &v2)
        .await;

    // IfNotPresent: v1 from the store, the registry not contacted.
    let (ports, config) = config_for(&sha1, "IfNotPresent");
    let weir = env.start(&config).await;
    assert_eq!(
        get(ports).await.header("x-oci-version"),
        "v1",
        "{}",
        weir.log_report()
    );
    // (A module kept by digest answers before the OCI client is asked at all.)
    assert!(
        weir.log().contains("Wasm module from the module store")
            || weir.log().contains("local OCI store"),
        "{}",
        weir.log_report()
    );
    drop(weir);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(registry.gets(repository), after_first, "{}", registry.log());

    // Always with the config still pinning v1: the tag is resolved again, v2 found and refused.
    let (_, config) = config_for(&sha1, "Always");
    let (ok, output, _) = env.validate(&config);
    assert!(!ok, "{output}");
    assert!(
        output.contains(&format!("has sha256 {sha2}")) && output.contains(&sha1),
        "{output}"
    );
    let after_always = registry.gets(repository);
    assert!(after_always > after_first, "{}", registry.log());

    // Always with the config naming v2: the moved tag's module runs.
    let (ports, config) = config_for(&sha2, "Always");
    let weir = env.start(&config).await;
    assert_eq!(
        get(ports).await.header("x-oci-version"),
        "v2",
        "{}",
        weir.log_report()
    );
    drop(weir);
    assert!(registry.gets(repository) > after_always);

    // And Always never serves the store: a second start asks the registry again.
    let before = registry.gets(repository);
    let (ok, output, _) = env.validate(&config_for(&sha2, "Always").1);
    assert!(ok, "{output}");
    assert!(registry.gets(repository) > before, "{}", registry.log());

    // A policy weir does not know is a config error naming the field.
    let (ok, output, _) = env.validate(&config_for(&sha2, "Never").1);
    assert!(!ok && output.contains("weir_image_pull_policy"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_docker_config() {
    let registry = Registry::start_with_user("alice", "s3cret");
    let up = H1Upstream::start("up").await;
    let module = module("x-oci-private", "yes");
    let manifest = registry
        .push_module("private/filter", "v1", Layout::DockerTarGz, &module)
        .await;
    let reference = format!("{}/private/filter:v1@{manifest}", registry.host());
    let env = Env::new();
    let ports = Ports::new();
    let config = config_with(
        &up,
        ports,
        vec![oci_filter(
            "private",
            &reference,
            &sha256_hex(&module),
            None,
            "10s",
        )],
    );

    // No docker config: anonymous, refused.
    let (ok, output, _) = env.validate(&config);
    assert!(!ok, "{output}");
    assert!(
        output.contains("refused access") && output.contains("anonymously"),
        "{output}"
    );

    // A wrong password.
    env.write_docker_config(&docker_config(&registry.host(), "alice", "wrong"));
    let (ok, output, _) = env.validate(&config);
    assert!(!ok, "{output}");
    assert!(
        output.contains("refused the credentials") && output.contains("\"alice\""),
        "{output}"
    );
    assert!(
        !output.contains("wrong"),
        "the password is never printed:\n{output}"
    );

    // The right one: pulled and run.
    env.write_docker_config(&docker_config(&registry.host(), "alice", "s3cret"));
    let weir = env.start(&config).await;
    assert_eq!(
        get(ports).await.header("x-oci-private"),
        "yes",
        "{}",
        weir.log_report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_or_silent_fails_within_the_timeout() {
    let up = H1Upstream::start("up").await;
    let env = Env::new();
    let sha = sha256_hex(b"any");

    // Nothing listens: refused at once.
    let down = format!("127.0.0.1:{}/filters/f:v1", weir_tests::free_port());
    let config = config_with(
        &up,
        Ports::new(),
        vec![oci_filter("down", &down, &sha, None, "5s")],
    );
    let (ok, output, took) = env.validate(&config);
    assert!(
        !ok && output.contains("cannot connect to 127.0.0.1:"),
        "{output}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Accepts and never answers: ends at the 1 s timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_ref = format!("{}/filters/f:v1", silent.local_addr().expect("addr"));
    let config = config_with(
        &up,
        Ports::new(),
        vec![oci_filter(
            "silent",
            &silent_ref,
            &sha,
            Some("Always"),
            "1s",
        )],
    );
    let (ok, output, took) = env.validate(&config);
    assert!(!ok && output.contains("took longer than 1s"), "{output}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "{took:?}"
    );
    drop(silent);
}
