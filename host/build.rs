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
