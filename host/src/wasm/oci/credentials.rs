//! Registry credentials from a docker config file (`auths.<registry>.auth`, base64 of
//! `user:password`, as `docker login` writes it; or `username` + `password`).
//!
//! The file is `OciRequest::docker_config` when set, else `$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`. A missing file means anonymous pulls; a file that exists but
//! cannot be read or parsed is an error (a typo there should not silently pull anonymously).
//! Credential helpers (`credsStore`, `credHelpers`) are not run: weir does not start other
//! programs to pull a module.

use super::OciError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Most bytes of a docker config file (they hold a few entries; large ones are a mistake).
const MAX_DOCKER_CONFIG_BYTES: u64 = 1024 * 1024;

/// A user name and password for HTTP Basic auth (or the token service's Basic auth).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The `Authorization` header value for Basic auth.
    pub fn basic(&self) -> String {
        use base64::Engine as _;
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The docker config file to read: `explicit`, else `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`; `None` when there is no home either.
pub fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// The credentials for `registry` (`host[:port]`) in the docker config file at `path`, if
/// the file exists and has an entry for it.
pub fn for_registry(path: &Path, registry: &str) -> Result<Option<Credentials>, OciError> {
    let text = match crate::config::file::read_limited(path, MAX_DOCKER_CONFIG_BYTES) {
        Ok(text) => text,
        Err(crate::config::file::FileError::Open { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(OciError::Credentials(e.to_string()));
        }
    };
    let config: DockerConfig = serde_json::from_slice(&text).map_err(|e| {
        OciError::Credentials(format!("{}: not a docker config: {e}", path.display()))
    })?;
    let Some((key, entry)) = config
        .auths
        .iter()
        .find(|(key, _)| key_matches(key, registry))
    else {
        return Ok(None);
    };
    entry_credentials(entry)
        .map(Some)
        .map_err(|why| OciError::Credentials(format!("{}: auths.{key}: {why}", path.display())))
}

/// Whether an `auths` key (`registry`, `https://registry`, `https://registry/v1/`) names
/// `registry`; Docker Hub's keys (`https://index.docker.io/v1/`) match `docker.io`.
fn key_matches(key: &str, registry: &str) -> bool {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    let is_hub = |name: &str| {
        matches!(
            name,
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        )
    };
    host.eq_ignore_ascii_case(registry) || (is_hub(host) && is_hub(registry))
}

fn entry_credentials(entry: &AuthEntry) -> Result<Credentials, String> {
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auth is not base64: {e}"))?;
        let pair = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_owned())?;
        let Some((username, password)) = pair.split_once(':') else {
            return Err("auth is not base64 of user:password".to_owned());
        };
        return Ok(Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    match (&entry.username, &entry.password) {
        (Some(username), Some(password)) => Ok(Credentials {
            username: username.clone(),
            password: password.clone(),
        }),
        _ => Err("no auth, nor username and password".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("config.json");
        if let Err(e) = std::fs::write(&path, text) {
            panic!("write {}: {e}", path.display());
        }
        path
    }

    fn creds(path: &Path, registry: &str) -> Option<Credentials> {
        match for_registry(path, registry) {
            Ok(found) => found,
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
    }

    #[test]
    fn auth_field_and_key_forms() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        // "alice:s3cr:et" and "bob:pw"
        let path = write(
            &dir,
            r#"{"auths": {
                "127.0.0.1:5000": {"auth": "YWxpY2U6czNjcjpldA=="},
                "https://ghcr.io": {"username": "bob", "password": "pw"},
                "https://index.docker.io/v1/": {"auth": "Ym9iOnB3"}
            }, "credsStore": "desktop"}"#,
        );
        let alice = creds(&path, "127.0.0.1:5000");
        assert_eq!(
            alice,
            Some(Credentials {
                username: "alice".into(),
                password: "s3cr:et".into()
            })
        );
        assert_eq!(
            alice.map(|c| c.basic()),
            Some("Basic YWxpY2U6czNjcjpldA==".to_owned())
        );
        assert_eq!(
            creds(&path, "ghcr.io").map(|c| c.username),
            Some("bob".into())
        );
        assert_eq!(
            creds(&path, "docker.io").map(|c| c.username),
            Some("bob".into())
        );
        assert_eq!(creds(&path, "127.0.0.1:5001"), None);
        assert!(!format!("{:?}", creds(&path, "ghcr.io")).contains("pw"));
    }

    #[test]
    fn missing_file_is_anonymous_broken_file_is_an_error() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        assert_eq!(creds(&dir.path().join("absent.json"), "ghcr.io"), None);
        let path = write(&dir, "{not json");
        let Err(e) = for_registry(&path, "ghcr.io") else {
            panic!("a broken file is refused")
        };
        assert!(e.to_string().contains("not a docker config"), "{e}");
        let path = write(&dir, r#"{"auths": {"ghcr.io": {"auth": "!!!"}}}"#);
        let Err(e) = for_registry(&path, "ghcr.io") else {
            panic!("bad base64 is refused")
        };
        assert!(e.to_string().contains("auths.ghcr.io"), "{e}");
    }
}
