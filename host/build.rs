//! Compiles Envoy's xDS `.proto` files (shipped in the `envoy-types` crate) into a
//! descriptor set in `OUT_DIR`, which `xds::proto` embeds to decode resources into Envoy's
//! JSON shape (see [`envoy_descriptors`]).
//!
//! Compiles the eBPF programs of `ebpf/` with clang into `OUT_DIR`, where `accel::kernel`
//! (`splice.bpf.c`) and `accel::local` (`local.bpf.c`) embed them with `include_bytes!`.
//!
//! Needs Debian's `clang`, `llvm` and `libbpf-dev` (`make deps` installs them). Where clang
//! cannot be run, the build goes on with an empty object and says so in a cargo warning; the
//! binary then reports the program as "not built" at start-up and copies in user space.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=WEIR_CLANG");
    let out_dir = match std::env::var_os("OUT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            println!("cargo:warning=OUT_DIR is not set");
            return;
        }
    };
    envoy_descriptors(&out_dir.join("envoy_descriptors.bin"));
    let clang = std::env::var("WEIR_CLANG").unwrap_or_else(|_| "clang".to_string());
    for name in ["splice", "local"] {
        let source = PathBuf::from(format!("../ebpf/{name}.bpf.c"));
        println!("cargo:rerun-if-changed={}", source.display());
        compile(&clang, &source, &out_dir.join(format!("{name}.bpf.o")));
    }
}

/// Builds one object, or writes an empty one (the loader reports "not built" and falls back).
fn compile(clang: &str, source: &Path, object: &Path) {
    let status = Command::new(clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(source)
        .arg("-o")
        .arg(object)
        .status();
    let built = match status {
        Ok(status) if status.success() => true,
        Ok(status) => {
            println!(
                "cargo:warning=eBPF {} not built: {clang} exited with {status} \
                 (install clang llvm libbpf-dev: `make deps`); weir will copy in user space",
                source.display()
            );
            false
        }
        Err(error) => {
            println!(
                "cargo:warning=eBPF {} not built: cannot run {clang}: {error} \
                 (install clang llvm libbpf-dev: `make deps`); weir will copy in user space",
                source.display()
            );
            false
        }
    };
    if !built && let Err(error) = std::fs::write(object, []) {
        println!("cargo:warning=cannot write {}: {error}", object.display());
    }
}

/// The Envoy API files weir decodes, and everything they import: the resources xDS delivers
/// (listeners, routes, clusters, endpoints) and the extensions they carry in `typed_config`.
const ENVOY_PROTOS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/service/discovery/v3/ads.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/wasm/v3/wasm.proto",
    "envoy/extensions/filters/http/wasm/v3/wasm.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/health_check/v3/health_check.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/quic/v3/quic_transport.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/admin/v3/config_dump.proto",
    // In weir's own proto/: the envoy-types crate does not ship them.
    "udpa/type/v1/typed_struct.proto",
    "xds/type/v3/typed_struct.proto",
];

/// Compiles [`ENVOY_PROTOS`] into one `FileDescriptorSet` at `out`. The `.proto` files are the
/// ones the `envoy-types` crate was generated from (and the two `TypedStruct`s it lacks, in
/// weir's `proto/`), found through `cargo metadata` (or in
/// `WEIR_ENVOY_PROTO_DIR`), so the descriptors and the generated types never disagree.
fn envoy_descriptors(out: &Path) {
    println!("cargo:rerun-if-env-changed=WEIR_ENVOY_PROTO_DIR");
    let root = match std::env::var_os("WEIR_ENVOY_PROTO_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => envoy_types_dir().join("proto"),
    };
    let own = PathBuf::from("proto");
    println!("cargo:rerun-if-changed=proto");
    let includes = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "cel-spec",
        "opentelemetry-proto",
        "client_model",
    ]
    .map(|dir| root.join(dir));
    let includes = std::iter::once(own).chain(includes);
    let descriptors = protox::compile(ENVOY_PROTOS, includes).unwrap_or_else(|e| {
        panic!(
            "compiling Envoy's .proto files under {}: {e}",
            root.display()
        )
    });
    let bytes = prost::Message::encode_to_vec(&descriptors);
    std::fs::write(out, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// The source directory of the `envoy-types` dependency, as `cargo metadata` gives it.
fn envoy_types_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let target = std::env::var("TARGET").unwrap_or_default();
    let mut command = Command::new(cargo);
    command.args(["metadata", "--format-version", "1"]);
    if !target.is_empty() {
        // Only this platform's packages: the others may not be downloaded.
        command.args(["--filter-platform", &target]);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running cargo metadata to find envoy-types: {e}"));
    if !output.status.success() {
        panic!(
            "cargo metadata failed (set WEIR_ENVOY_PROTO_DIR to envoy-types' proto/ instead): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("reading cargo metadata's output: {e}"));
    let manifest = metadata["packages"]
        .as_array()
        .and_then(|packages| {
            packages
                .iter()
                .find(|package| package["name"] == "envoy-types")
        })
        .and_then(|package| package["manifest_path"].as_str())
        .unwrap_or_else(|| panic!("envoy-types is not among the packages cargo metadata lists"));
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed=../{file}");
    }
    Path::new(manifest)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}
