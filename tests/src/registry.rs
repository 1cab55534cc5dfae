//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution server,
//! 2.8) on 127.0.0.1 with an ephemeral port and a temp storage dir, anonymous or with htpasswd
//! (bcrypt, made with `htpasswd -B` from apache2-utils) Basic auth.
//!
//! Images are pushed with the registry's own HTTP API (blob upload POST + PUT, manifest PUT),
//! as `oras` or `docker push` would; `oras` is not packaged for Debian 12 nor on the registries
//! this project can install from. [`Layout`] builds the three layouts Wasm filters ship in.
//! Requests are counted from the registry's access log, so a test can tell whether a pull
//! contacted it.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const HTPASSWD_BIN: &str = "/usr/bin/htpasswd";

/// How a Wasm module is packed into an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Istio's compat image: an OCI manifest with one layer of
    /// `application/vnd.module.wasm.content.layer.v1+wasm`, the module itself.
    IstioCompat,
    /// Istio's OCI spec image as `docker build` + `docker push` make it: a Docker schema 2
    /// manifest whose one layer is a gzipped tar holding `plugin.wasm`.
    DockerTarGz,
    /// The CNCF Wasm artifact: config `application/vnd.wasm.config.v0+json`, one layer of
    /// `application/vnd.wasm.content.layer.v1+wasm`.
    CncfArtifact,
}

/// A manifest that was pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `sha256:HEX`.
    pub digest: String,
    /// Its bytes.
    pub size: usize,
    /// Its media type.
    pub media_type: &'static str,
}

/// A running registry; stopped when dropped.
pub struct Registry {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log_path: PathBuf,
    basic: Option<String>,
    _dir: TempDir,
}

impl Registry {
    /// An anonymous registry.
    pub fn start() -> Registry {
        Self::launch(None)
    }

    /// A registry that asks for `user` and `password` (HTTP Basic, htpasswd) on every request.
    pub fn start_with_user(user: &str, password: &str) -> Registry {
        Self::launch(Some((user, password)))
    }

    fn launch(user: Option<(&str, &str)>) -> Registry {
        for bin in [REGISTRY_BIN, HTPASSWD_BIN] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} is not installed: apt-get install -y docker-registry apache2-utils (`make deps` does)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("weir-registry-")
            .tempdir()
            .expect("create temp dir");
        let mut auth = String::new();
        let mut basic = None;
        if let Some((name, password)) = user {
            let htpasswd = dir.path().join("htpasswd");
            let out = Command::new(HTPASSWD_BIN)
                .args(["-Bbn", name, password])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd: {out:?}");
            std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: weir-test\n    path: {}\n",
                htpasswd.display()
            );
            basic = Some(basic_auth(name, password));
        }
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 {auth}http:\n  addr: 127.0.0.1:0\n  secret: weir-test-secret\n",
                storage.display()
            ),
        )
        .expect("write registry config");
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).expect("create registry log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut registry = Registry {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            basic,
            _dir: dir,
        };
        registry.addr = registry.wait_listening(Duration::from_secs(15));
        registry
    }

    /// The port from the log's `listening on 127.0.0.1:PORT` line.
    fn wait_listening(&mut self, limit: Duration) -> SocketAddr {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if let Some(at) = log.find("listening on 127.0.0.1:") {
                let rest = &log[at + "listening on 127.0.0.1:".len()..];
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(port) = port.parse::<u16>() {
                    return SocketAddr::from(([127, 0, 0, 1], port));
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen within {limit:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `127.0.0.1:PORT`, the registry part of a reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's log (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many GETs under `/v2/{repository}/` the access log shows (manifests and blobs,
    /// answered or refused): whether, and how often, a pull contacted the registry.
    pub fn gets(&self, repository: &str) -> usize {
        let needle = format!("\"GET /v2/{repository}/");
        self.log()
            .lines()
            .filter(|line| line.starts_with("127.0.0.1 - ") && line.contains(&needle))
            .count()
    }

    /// Pushes `module` as `repository:tag` in `layout`; returns the manifest's digest
    /// (`sha256:HEX`).
    pub async fn push_module(
        &self,
        repository: &str,
        tag: &str,
        layout: Layout,
        module: &[u8],
    ) -> String {
        self.push_module_descriptor(repository, tag, layout, module)
            .await
            .digest
    }

    /// Pushes an image index (a multi-platform image) as `repository:tag` listing `manifests`;
    /// returns its digest.
    pub async fn push_index(&self, repository: &str, tag: &str, manifests: &[Pushed]) -> String {
        let entries: Vec<_> = manifests
            .iter()
            .map(|m| {
                json!({
                    "mediaType": m.media_type,
                    "digest": m.digest,
                    "size": m.size,
                    "platform": {"architecture": "wasm", "os": "wasip1"}
                })
            })
            .collect();
        let media_type = "application/vnd.oci.image.index.v1+json";
        let index = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": entries});
        let index = serde_json::to_vec(&index).expect("index JSON");
        self.push_manifest(repository, tag, media_type, &index)
            .await
    }

    /// [`Registry::push_module`], returning the manifest's descriptor.
    pub async fn push_module_descriptor(
        &self,
        repository: &str,
        tag: &str,
        layout: Layout,
        module: &[u8],
    ) -> Pushed {
        let (manifest_type, config_type, config, layer_type, layer) = match layout {
            Layout::IstioCompat => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.module.wasm.config.v1+json",
                b"{}".to_vec(),
                "application/vnd.module.wasm.content.layer.v1+wasm",
                module.to_vec(),
            ),
            Layout::DockerTarGz => {
                let tar = tar_with("plugin.wasm", module);
                let config = json!({
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": [digest_of(&tar)]}
                });
                (
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.container.image.v1+json",
                    serde_json::to_vec(&config).expect("config JSON"),
                    "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    gzip(&tar),
                )
            }
            Layout::CncfArtifact => {
                let config = json!({
                    "created": "2026-12-06T00:00:00Z",
                    "architecture": "wasm",
                    "os": "wasip1",
                    "layerDigests": [digest_of(module)],
                    "component": {"exports": [], "imports": [], "target": null}
                });
                (
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.wasm.config.v0+json",
                    serde_json::to_vec(&config).expect("config JSON"),
                    "application/vnd.wasm.content.layer.v1+wasm",
                    module.to_vec(),
                )
            }
        };
        let config_digest = self.push_blob(repository, &config).await;
        let layer_digest = self.push_blob(repository, &layer).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer.len()}]
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest JSON");
        let digest = self
            .push_manifest(repository, tag, manifest_type, &manifest)
            .await;
        Pushed {
            digest,
            size: manifest.len(),
            media_type: manifest_type,
        }
    }

    /// Uploads `blob` (POST an upload, PUT its bytes with the digest); returns its digest.
    pub async fn push_blob(&self, repository: &str, blob: &[u8]) -> String {
        let digest = digest_of(blob);
        let (status, headers, body) = self
            .send(
                Method::POST,
                &format!("/v2/{repository}/blobs/uploads/"),
                None,
                Vec::new(),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "start upload: {body:?}");
        let location = headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("upload Location");
        // The Location is absolute (http://127.0.0.1:PORT/v2/...); keep its path and query.
        let path = match location.find("/v2/") {
            Some(at) => &location[at..],
            None => panic!("unexpected upload location {location}"),
        };
        let separator = if path.contains('?') { '&' } else { '?' };
        let (status, _, body) = self
            .send(
                Method::PUT,
                &format!("{path}{separator}digest={digest}"),
                Some("application/octet-stream"),
                blob.to_vec(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "finish upload: {body:?}");
        digest
    }

    /// PUTs a manifest under `reference` (a tag); returns its digest.
    pub async fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        manifest: &[u8],
    ) -> String {
        let (status, _, body) = self
            .send(
                Method::PUT,
                &format!("/v2/{repository}/manifests/{reference}"),
                Some(media_type),
                manifest.to_vec(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "push manifest: {body:?}");
        digest_of(manifest)
    }

    /// One request to the registry (with its Basic credentials, if any).
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .expect("connect to the registry");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("handshake");
            let driver = tokio::spawn(connection);
            let mut request = http::Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, self.host())
                .header(header::CONTENT_LENGTH, body.len());
            if let Some(content_type) = content_type {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            if let Some(basic) = &self.basic {
                request = request.header(header::AUTHORIZATION, basic);
            }
            let request = request.body(Full::new(Bytes::from(body))).expect("request");
            let response = sender.send_request(request).await.expect("response");
            let status = response.status();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            driver.abort();
            (status, headers, body)
        };
        tokio::time::timeout(crate::IO_TIMEOUT, exchange)
            .await
            .expect("the registry answers within IO_TIMEOUT")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sha256:HEX` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", crate::sha256_hex(data))
}

/// `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

/// A docker config file's text with `auths.<registry>.auth` for `user:password`.
pub fn docker_config(registry: &str, user: &str, password: &str) -> String {
    json!({"auths": {registry: {"auth": base64_encode(format!("{user}:{password}").as_bytes())}}})
        .to_string()
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A tar holding one regular file.
fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder
        .append_data(&mut header, name, data)
        .expect("tar append");
    builder.into_inner().expect("tar finish")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}
