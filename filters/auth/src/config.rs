//! The plugin configuration (JSON) and the credential checks, kept free of host calls so they
//! are unit-tested on the build machine.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Which credentials are accepted. At least one of `api_key` and `basic` must be given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// API keys carried in a request header.
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    /// HTTP Basic users.
    #[serde(default)]
    pub basic: Option<Basic>,
    /// Realm named in the `www-authenticate` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Remove the credential header before the request goes upstream. Default: true.
    #[serde(default = "yes")]
    pub strip_credentials: bool,
}

/// API keys in a header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The header carrying the key, e.g. `x-api-key` (lowercased when read).
    pub header: String,
    /// The accepted keys.
    pub keys: Vec<String>,
}

/// HTTP Basic (RFC 7617) users.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Basic {
    /// user name -> password.
    pub users: BTreeMap<String, String>,
}

fn default_realm() -> String {
    "weir".to_owned()
}

fn yes() -> bool {
    true
}

/// Why a configuration is refused.
#[derive(Debug)]
pub enum ConfigError {
    /// Not the JSON shape above.
    Json(serde_json::Error),
    /// Neither `api_key` nor `basic`, or one with no credentials: nobody could pass.
    NoCredentials,
    /// The realm holds a `"` or `\`, which the challenge cannot carry unescaped.
    BadRealm,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Json(e) => write!(f, "{e}"),
            ConfigError::NoCredentials => {
                f.write_str("configure api_key.keys or basic.users (at least one credential)")
            }
            ConfigError::BadRealm => f.write_str("realm must not contain '\"' or '\\'"),
        }
    }
}

impl Config {
    /// Parses and checks the configuration.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let mut config: Config = serde_json::from_slice(bytes).map_err(ConfigError::Json)?;
        if let Some(api_key) = &mut config.api_key {
            api_key.header.make_ascii_lowercase();
        }
        let keys = config.api_key.as_ref().map_or(0, |a| a.keys.len());
        let users = config.basic.as_ref().map_or(0, |b| b.users.len());
        if keys + users == 0 {
            return Err(ConfigError::NoCredentials);
        }
        if config.realm.contains(['"', '\\']) {
            return Err(ConfigError::BadRealm);
        }
        Ok(config)
    }

    /// True when `key` (the API-key header's value) is one of the configured keys.
    pub fn accepts_api_key(&self, key: &[u8]) -> bool {
        self.api_key.as_ref().is_some_and(|a| {
            a.keys
                .iter()
                .fold(false, |ok, k| ok | constant_time_eq(k.as_bytes(), key))
        })
    }

    /// True when `authorization` is `Basic <base64(user:password)>` for a configured user.
    pub fn accepts_basic(&self, authorization: &[u8]) -> bool {
        let Some(basic) = &self.basic else {
            return false;
        };
        let Some((user, password)) = parse_basic(authorization) else {
            return false;
        };
        basic.users.iter().fold(false, |ok, (u, p)| {
            ok | (constant_time_eq(u.as_bytes(), &user) & constant_time_eq(p.as_bytes(), &password))
        })
    }

    /// The `www-authenticate` challenges of a 401: one per configured scheme.
    pub fn challenges(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.basic.is_some() {
            out.push(format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm));
        }
        if let Some(api_key) = &self.api_key {
            out.push(format!(
                "ApiKey realm=\"{}\", header=\"{}\"",
                self.realm, api_key.header
            ));
        }
        out
    }
}

/// Compares without returning early, so the time taken does not tell how much of a secret
/// matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Splits `Basic <base64>` into (user, password). `None` for another scheme or bad base64.
pub fn parse_basic(authorization: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let text = std::str::from_utf8(authorization).ok()?.trim();
    let (scheme, credentials) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(credentials.trim())?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Standard base64 (RFC 4648 section 4) with optional padding; `None` on any other byte.
pub fn base64_decode(input: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let trimmed = input.trim_end_matches('=');
    if input.len() - trimmed.len() > 2 || trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    for chunk in trimmed.as_bytes().chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | value(c)?;
        }
        let bits = chunk.len() * 6;
        acc <<= 24 - bits;
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..1 + bits / 8]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            br#"{"api_key": {"header": "X-API-Key", "keys": ["k1", "k2"]},
                 "basic": {"users": {"alice": "s3cret"}}, "realm": "test"}"#,
        )
        .expect("valid")
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64_decode("Zg").as_deref(), Some(&b"f"[..]));
        assert!(base64_decode("Z").is_none());
        assert!(base64_decode("Zm9v!").is_none());
        assert!(base64_decode("Zg===").is_none());
    }

    #[test]
    fn api_keys() {
        let c = config();
        assert_eq!(
            c.api_key.as_ref().map(|a| a.header.as_str()),
            Some("x-api-key")
        );
        assert!(c.accepts_api_key(b"k2"));
        assert!(!c.accepts_api_key(b"k3"));
        assert!(!c.accepts_api_key(b""));
    }

    #[test]
    fn basic_credentials() {
        let c = config();
        // alice:s3cret
        assert!(c.accepts_basic(b"Basic YWxpY2U6czNjcmV0"));
        assert!(c.accepts_basic(b"basic  YWxpY2U6czNjcmV0 "));
        // alice:wrong
        assert!(!c.accepts_basic(b"Basic YWxpY2U6d3Jvbmc="));
        assert!(!c.accepts_basic(b"Bearer YWxpY2U6czNjcmV0"));
        assert!(!c.accepts_basic(b"Basic"));
        assert!(!c.accepts_basic(b"Basic !!!"));
        assert!(!c.accepts_basic(&[0xff, 0xfe]));
    }

    #[test]
    fn challenges_name_every_scheme() {
        assert_eq!(
            config().challenges(),
            [
                "Basic realm=\"test\", charset=\"UTF-8\"",
                "ApiKey realm=\"test\", header=\"x-api-key\""
            ]
        );
    }

    #[test]
    fn configurations_nobody_could_pass_are_refused() {
        assert!(matches!(
            Config::parse(b"{}"),
            Err(ConfigError::NoCredentials)
        ));
        assert!(matches!(
            Config::parse(br#"{"basic": {"users": {}}}"#),
            Err(ConfigError::NoCredentials)
        ));
        assert!(matches!(
            Config::parse(br#"{"basic": {"users": {"a": "b"}}, "realm": "x\"y"}"#),
            Err(ConfigError::BadRealm)
        ));
        assert!(matches!(
            Config::parse(br#"{"basic": {"users": {"a": "b"}}, "extra": 1}"#),
            Err(ConfigError::Json(_))
        ));
    }
}
