//! Durations as Envoy's YAML writes them: protobuf JSON strings like `"5s"` or `"0.25s"`, or
//! the message form `{seconds: 5, nanos: 0}`.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A `google.protobuf.Duration` from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// The duration; zero means "disabled" wherever Envoy gives zero that meaning.
    pub fn get(self) -> Duration {
        self.0
    }
}

/// Parses `"1.5s"`-style text: decimal seconds with an `s` suffix (Envoy also accepts `ms`,
/// `m` and `h` nowhere, so neither does this).
pub fn parse(text: &str) -> Result<Duration, String> {
    let expected =
        || format!("invalid duration {text:?}: expected seconds like \"5s\" or \"0.25s\"");
    let number = text.trim().strip_suffix('s').ok_or_else(expected)?;
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 9
    {
        return Err(expected());
    }
    let seconds: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| expected())?
    };
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        let padded = format!("{fraction:0<9}");
        padded.parse().map_err(|_| expected())?
    };
    Ok(Duration::new(seconds, nanos))
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl<'de> Visitor<'de> for DurationVisitor {
            type Value = ConfigDuration;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"5s\" or \"0.25s\", or {seconds, nanos}")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigDuration, E> {
                parse(text).map(ConfigDuration).map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ConfigDuration, A::Error> {
                let mut seconds = 0u64;
                let mut nanos = 0u32;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "seconds" => seconds = map.next_value()?,
                        "nanos" => nanos = map.next_value()?,
                        other => {
                            return Err(de::Error::unknown_field(other, &["seconds", "nanos"]));
                        }
                    }
                }
                if nanos >= 1_000_000_000 {
                    return Err(de::Error::custom("nanos must be below 1000000000"));
                }
                Ok(ConfigDuration(Duration::new(seconds, nanos)))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            serializer.serialize_str(&format!("{}s", d.as_secs()))
        } else {
            let text = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
            serializer.serialize_str(&format!("{}s", text.trim_end_matches('0')))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_forms() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.000000001s"), Ok(Duration::new(1, 1)));
        for bad in ["5", "s", "5ms", "-1s", "1.2.3s", "1.0000000001s", "", "abc"] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
        let d: ConfigDuration = serde_yaml_ng::from_str("{seconds: 2, nanos: 5}").unwrap();
        assert_eq!(d.get(), Duration::new(2, 5));
        assert_eq!(
            serde_json::to_string(&ConfigDuration(Duration::from_millis(1500))).unwrap(),
            "\"1.5s\""
        );
    }
}
