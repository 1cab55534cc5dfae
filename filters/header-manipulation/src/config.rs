//! The plugin configuration (JSON).

use std::collections::BTreeMap;

use serde::Deserialize;

/// What to do to the request and to the response headers.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Edits applied in `on_http_request_headers`.
    #[serde(default)]
    pub request: Edits,
    /// Edits applied in `on_http_response_headers`.
    #[serde(default)]
    pub response: Edits,
}

/// Edits to one header map, applied in this order: `remove`, then `set`, then `add`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edits {
    /// Header names to remove (every value).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Headers to set, replacing any values they had.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers to append, keeping values already there (a name may repeat).
    #[serde(default)]
    pub add: Vec<Header>,
}

/// One header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Its name; lowercased when the configuration is read (HTTP/2 and Envoy want lowercase).
    pub name: String,
    /// Its value.
    pub value: String,
}

impl Config {
    /// Parses the configuration; empty bytes mean "no edits". Names are lowercased.
    pub fn parse(bytes: &[u8]) -> Result<Config, serde_json::Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let mut config: Config = serde_json::from_slice(bytes)?;
        config.request.lowercase();
        config.response.lowercase();
        Ok(config)
    }
}

impl Edits {
    fn lowercase(&mut self) {
        for name in &mut self.remove {
            name.make_ascii_lowercase();
        }
        self.set = std::mem::take(&mut self.set)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        for header in &mut self.add {
            header.name.make_ascii_lowercase();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lowercases() {
        let config = Config::parse(
            br#"{"request": {"set": {"X-A": "1"}, "add": [{"name": "X-B", "value": "2"}],
                 "remove": ["X-Gone"]},
                 "response": {"remove": ["server"]}}"#,
        )
        .expect("valid");
        assert_eq!(config.request.set.get("x-a").map(String::as_str), Some("1"));
        assert_eq!(config.request.add[0].name, "x-b");
        assert_eq!(config.request.remove, ["x-gone"]);
        assert_eq!(config.response.remove, ["server"]);
    }

    #[test]
    fn empty_is_no_edits_and_typos_are_errors() {
        assert_eq!(Config::parse(b"  ").ok(), Some(Config::default()));
        assert!(Config::parse(br#"{"requets": {}}"#).is_err());
        assert!(Config::parse(br#"{"request": {"set": ["x"]}}"#).is_err());
        assert!(Config::parse(b"{").is_err());
    }
}
