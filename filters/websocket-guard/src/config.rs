//! The plugin configuration (JSON).

use serde::Deserialize;

use crate::frames::Limits;

/// Per-direction limits and how to refuse before the upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Most data messages the client may send on one WebSocket.
    #[serde(default)]
    pub max_client_messages: Option<u64>,
    /// Most data messages the server may send on one WebSocket.
    #[serde(default)]
    pub max_server_messages: Option<u64>,
    /// Largest frame payload either side may send, in bytes.
    #[serde(default)]
    pub max_frame_payload: Option<u64>,
    /// Status of the local reply when the client breaks a limit before the upgrade was
    /// answered (default 429).
    #[serde(default = "default_deny_status")]
    pub deny_status: u32,
}

fn default_deny_status() -> u32 {
    429
}

impl Config {
    /// Parses the configuration; empty means "count only, no limits".
    pub fn parse(bytes: &[u8]) -> Result<Config, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config {
                deny_status: default_deny_status(),
                ..Config::default()
            });
        }
        let config: Config = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !(400..=599).contains(&config.deny_status) {
            return Err("deny_status must be a 4xx or 5xx code".into());
        }
        Ok(config)
    }

    /// Limits on client-to-server frames.
    pub fn client_limits(&self) -> Limits {
        Limits {
            max_messages: self.max_client_messages,
            max_frame_payload: self.max_frame_payload,
        }
    }

    /// Limits on server-to-client frames.
    pub fn server_limits(&self) -> Limits {
        Limits {
            max_messages: self.max_server_messages,
            max_frame_payload: self.max_frame_payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let c = Config::parse(br#"{"max_client_messages": 3, "max_frame_payload": 10}"#)
            .expect("valid");
        assert_eq!(c.client_limits().max_messages, Some(3));
        assert_eq!(c.server_limits().max_messages, None);
        assert_eq!(c.deny_status, 429);
        assert_eq!(Config::parse(b"").map(|c| c.deny_status), Ok(429));
        assert!(Config::parse(br#"{"deny_status": 200}"#).is_err());
        assert!(Config::parse(br#"{"max_client_messages": -1}"#).is_err());
    }
}
