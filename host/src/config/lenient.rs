//! Envoy's leniency for repeated fields: a list written as a single object (`listeners:`
//! followed by one listener, as the proxy-wasm SDKs' example configs do) is read as a list of
//! that one object, as Envoy's loader reads it.

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Deserializes a list, or one object as a list of it. Errors keep their field paths: the
/// elements are read through the deserializer's own sequence and map accessors.
pub fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_any(OneOrMany(PhantomData))
}

struct OneOrMany<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrMany<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence, or one object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(|one| vec![one])
    }

    /// `listeners:` with nothing after it (YAML null) is no listener.
    fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        name: String,
    }

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "one_or_many")]
        items: Vec<Item>,
    }

    fn parse(text: &str) -> Result<Holder, String> {
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|e| e.to_string())
    }

    #[test]
    fn a_list_a_single_object_and_nothing_are_read() {
        assert_eq!(
            parse("items: [{name: a}, {name: b}]")
                .expect("list")
                .items
                .len(),
            2
        );
        let one = parse("items:\n  name: a\n").expect("one object");
        assert_eq!(one.items, vec![Item { name: "a".into() }]);
        assert!(parse("items:\n").expect("null").items.is_empty());
        assert!(parse("{}").expect("absent").items.is_empty());
    }

    #[test]
    fn errors_keep_their_path() {
        let error = parse("items:\n  name: a\n  nmae: b\n").expect_err("typo");
        assert!(error.starts_with("items"), "{error}");
        assert!(error.contains("nmae"), "{error}");
        let error = parse("items: [{name: a}, {nmae: b}]").expect_err("typo");
        assert!(error.starts_with("items[1]"), "{error}");
        assert!(parse("items: 5").is_err());
    }
}
