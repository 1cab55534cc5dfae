//! One weir process under test: config file in a temp dir, output captured to a log file,
//! readiness via the admin `/ready`, killed on drop (its log printed when the test failed).

use crate::stats::Stats;
use crate::{client, weir_bin};
use serde_json::Value;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// How long weir gets to answer 200 on `/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running weir.
pub struct Weir {
    child: Option<Child>,
    dir: TempDir,
    log_path: PathBuf,
    config_path: PathBuf,
    /// The admin listener, read from the config (`admin.address.socket_address`).
    pub admin: SocketAddr,
}

impl Weir {
    /// Writes `config`, starts weir with `--concurrency 1` and waits for `/ready`.
    pub async fn start(config: &Value) -> Weir {
        Self::start_with(config, &["--concurrency", "1"]).await
    }

    /// Like [`Weir::start`] with other extra arguments (`--concurrency` is not added).
    pub async fn start_with(config: &Value, args: &[&str]) -> Weir {
        let mut weir = Self::spawn(config, args);
        weir.wait_ready().await;
        weir
    }

    /// Writes `config` to `<tmp>/weir.yaml` and spawns `weir -c <file> --log-level debug ARGS`
    /// without waiting for anything.
    pub fn spawn(config: &Value, args: &[&str]) -> Weir {
        let dir = tempfile::Builder::new()
            .prefix("weir-e2e-")
            .tempdir()
            .expect("create temp dir");
        let config_path = dir.path().join("weir.yaml");
        // JSON is YAML (1.2): the file is a YAML bootstrap with no indentation to get wrong.
        std::fs::write(
            &config_path,
            serde_json::to_string_pretty(config).expect("serialize config"),
        )
        .expect("write config");
        let admin = admin_addr(config);
        let mut cmd = Command::new(weir_bin());
        cmd.arg("-c")
            .arg(&config_path)
            .args(["--log-level", "debug"])
            .args(args);
        Self::spawn_command(cmd, dir, config_path, admin)
    }

    /// Spawns a prepared command with its output going to `<dir>/weir.log`.
    pub fn spawn_command(
        mut cmd: Command,
        dir: TempDir,
        config_path: PathBuf,
        admin: SocketAddr,
    ) -> Weir {
        let log_path = dir.path().join("weir.log");
        let log = File::create(&log_path).expect("create log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        Weir {
            child: Some(child),
            dir,
            log_path,
            config_path,
            admin,
        }
    }

    /// Polls `GET /ready` on the admin listener until 200, for at most [`READY_TIMEOUT`].
    pub async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "weir exited ({status}) before /ready answered 200\n{}",
                    self.log_report()
                );
            }
            let last = match tokio::time::timeout(
                Duration::from_secs(1),
                client::get_host(self.admin, "localhost", "/ready"),
            )
            .await
            {
                Ok(Ok(resp)) if resp.status == 200 => return,
                Ok(Ok(resp)) => format!("status {}", resp.status),
                Ok(Err(e)) => e,
                Err(_) => "timed out".to_owned(),
            };
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "weir's admin {}/ready did not answer 200 within {READY_TIMEOUT:?} (last: {last})\n{}",
                    self.admin,
                    self.log_report()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The temp dir holding the config and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file weir was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything weir wrote so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    /// The last 200 lines of the log, framed, for failure messages.
    pub fn log_report(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(200);
        let mut out = format!(
            "----- weir log ({} lines, last {} shown; config {}) -----\n",
            lines.len(),
            lines.len() - start,
            self.config_path.display()
        );
        for line in &lines[start..] {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("----- end of weir log -----");
        out
    }

    /// `GET` on the admin listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        match client::get_host(self.admin, "localhost", path).await {
            Ok(resp) => (resp.status, resp.text()),
            Err(e) => panic!("admin GET {path}: {e}\n{}", self.log_report()),
        }
    }

    /// `POST` (empty body) on the admin listener: (status, body).
    pub async fn admin_post(&self, path: &str) -> (u16, String) {
        let request = http::Request::post(path)
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("admin request");
        match client::h1_request(self.admin, request).await {
            Ok(resp) => (resp.status, resp.text()),
            Err(e) => panic!("admin POST {path}: {e}\n{}", self.log_report()),
        }
    }

    /// A snapshot of `/stats/prometheus`.
    pub async fn stats(&self) -> Stats {
        let (status, body) = self.admin_get("/stats/prometheus").await;
        assert_eq!(status, 200, "/stats/prometheus answered {status}: {body}");
        Stats::parse(&body)
    }

    /// One stat value; 0 when the series is absent (a counter never incremented).
    pub async fn stat(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.stats().await.get(name, labels).unwrap_or(0.0)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("weir child").id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) with a pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// The exit status if weir has exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits (polling) up to `limit` for weir to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_report());
        }
    }
}

/// `admin.address.socket_address` of a config value.
pub fn admin_addr(config: &Value) -> SocketAddr {
    let sa = &config["admin"]["address"]["socket_address"];
    let ip = sa["address"]
        .as_str()
        .expect("admin.address.socket_address.address");
    let port = sa["port_value"].as_u64().expect("admin...port_value");
    format!("{ip}:{port}").parse().expect("admin address")
}
