//! Compiles the eBPF splice program (`ebpf/splice.bpf.c`) with clang into `OUT_DIR`, where
//! `accel::kernel` embeds it with `include_bytes!`.
//!
//! Needs Debian's `clang`, `llvm` and `libbpf-dev` (`make deps` installs them). Where clang
//! cannot be run, the build goes on with an empty object and says so in a cargo warning; the
//! binary then reports the kernel splice as "not built" at start-up and copies in user space.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = PathBuf::from("../ebpf/splice.bpf.c");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=WEIR_CLANG");
    let out_dir = match std::env::var_os("OUT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            println!("cargo:warning=OUT_DIR is not set");
            return;
        }
    };
    let object = out_dir.join("splice.bpf.o");
    let clang = std::env::var("WEIR_CLANG").unwrap_or_else(|_| "clang".to_string());
    let status = Command::new(&clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .status();
    let built = match status {
        Ok(status) if status.success() => true,
        Ok(status) => {
            println!(
                "cargo:warning=eBPF splice not built: {clang} exited with {status} \
                 (install clang llvm libbpf-dev: `make deps`); weir will copy in user space"
            );
            false
        }
        Err(error) => {
            println!(
                "cargo:warning=eBPF splice not built: cannot run {clang}: {error} \
                 (install clang llvm libbpf-dev: `make deps`); weir will copy in user space"
            );
            false
        }
    };
    if !built {
        // An empty object: the loader reports "not built" and falls back.
        if let Err(error) = std::fs::write(&object, []) {
            println!("cargo:warning=cannot write {}: {error}", object.display());
        }
    }
}
