//! The plugin configuration (JSON).

use serde::Deserialize;

/// What the guard checks and rewrites.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bytes every connection must start with (client to server). Until that many bytes
    /// arrived they are held; a client whose first bytes differ is disconnected.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Remove the prefix before the bytes go upstream (a pre-shared token the server never
    /// sees).
    #[serde(default)]
    pub strip_prefix: bool,
    /// Hold what the server sends (a banner, say) until the client's prefix was checked.
    #[serde(default)]
    pub hold_upstream: bool,
    /// Replace a byte string in what the client sends.
    #[serde(default)]
    pub rewrite_downstream: Option<Rewrite>,
    /// Replace a byte string in what the server sends.
    #[serde(default)]
    pub rewrite_upstream: Option<Rewrite>,
}

/// Every occurrence of `from` becomes `to` (left to right, not overlapping).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// What to look for (not empty).
    pub from: String,
    /// What to put instead (may be empty: the bytes are cut).
    pub to: String,
}

impl Config {
    /// Parses the configuration; empty means "count only".
    pub fn parse(bytes: &[u8]) -> Result<Config, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let config: Config = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if config.prefix.as_deref() == Some("") {
            return Err("prefix must not be empty".into());
        }
        if config.strip_prefix && config.prefix.is_none() {
            return Err("strip_prefix needs a prefix".into());
        }
        if config.hold_upstream && config.prefix.is_none() {
            return Err("hold_upstream needs a prefix".into());
        }
        for (name, rewrite) in [
            ("rewrite_downstream", &config.rewrite_downstream),
            ("rewrite_upstream", &config.rewrite_upstream),
        ] {
            if rewrite.as_ref().is_some_and(|r| r.from.is_empty()) {
                return Err(format!("{name}.from must not be empty"));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_counts_only() {
        assert_eq!(Config::parse(b" \n").unwrap(), Config::default());
    }

    #[test]
    fn full_config_parses() {
        let config = Config::parse(
            br#"{"prefix": "HELLO ", "strip_prefix": true, "hold_upstream": true,
                 "rewrite_downstream": {"from": "ping", "to": "PING"},
                 "rewrite_upstream": {"from": "PING", "to": "pong"}}"#,
        )
        .unwrap();
        assert_eq!(config.prefix.as_deref(), Some("HELLO "));
        assert!(config.strip_prefix && config.hold_upstream);
        assert_eq!(config.rewrite_upstream.unwrap().to, "pong");
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [
            &br#"{"prefix": ""}"#[..],
            br#"{"strip_prefix": true}"#,
            br#"{"hold_upstream": true}"#,
            br#"{"rewrite_upstream": {"from": "", "to": "x"}}"#,
            br#"{"prefx": "typo"}"#,
            b"not json",
        ] {
            assert!(
                Config::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
