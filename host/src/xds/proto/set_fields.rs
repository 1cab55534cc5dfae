//! A message written as JSON from the fields it has, for [`super::to_json`].
//!
//! prost-reflect's own serializer, asked to leave default fields out, walks every field its
//! descriptor declares and looks each up in the message: a route of Envoy's `RouteAction`
//! (some fifty fields, two or three set) costs fifty lookups, and a route configuration of a
//! thousand routes was most of an xDS route update's time. [`SetFields`] walks the fields the
//! message holds instead and writes each value as prost-reflect does with [`super::to_json`]'s
//! options (proto field names, enums by name, 64-bit integers as numbers); the well-known types
//! (`Any`, `Duration`, `Struct`, the wrappers, ...), whose JSON has a shape of its own, are
//! handed to prost-reflect whole.

use base64::display::Base64Display;
use base64::prelude::BASE64_STANDARD;
use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage, SerializeOptions, Value};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// The package of the well-known types, which prost-reflect writes in their own shapes.
const WELL_KNOWN: &str = "google.protobuf.";

/// `message` as JSON, from its set fields.
pub(super) struct SetFields<'a> {
    pub message: &'a DynamicMessage,
    pub options: &'a SerializeOptions,
}

impl Serialize for SetFields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let descriptor = self.message.descriptor();
        if descriptor.full_name().starts_with(WELL_KNOWN) {
            return self
                .message
                .serialize_with_options(serializer, self.options);
        }
        let mut map = serializer.serialize_map(None)?;
        // Only the fields that are there (`has_field`: a scalar without presence counts
        // when it is not its default), as prost-reflect leaves defaults out.
        for (field, value) in self.message.fields() {
            let kind = field.kind();
            map.serialize_entry(
                field.name(),
                &FieldValue {
                    value,
                    kind: &kind,
                    options: self.options,
                },
            )?;
        }
        map.end()
    }
}

/// One value of a field of kind `kind`, as prost-reflect writes it.
struct FieldValue<'a> {
    value: &'a Value,
    kind: &'a Kind,
    options: &'a SerializeOptions,
}

impl Serialize for FieldValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Bool(value) => serializer.serialize_bool(*value),
            Value::I32(value) => serializer.serialize_i32(*value),
            Value::I64(value) => serializer.serialize_i64(*value),
            Value::U32(value) => serializer.serialize_u32(*value),
            Value::U64(value) => serializer.serialize_u64(*value),
            Value::F32(value) => float(serializer, f64::from(*value), |s| s.serialize_f32(*value)),
            Value::F64(value) => float(serializer, *value, |s| s.serialize_f64(*value)),
            Value::String(value) => serializer.serialize_str(value),
            Value::Bytes(value) => {
                serializer.collect_str(&Base64Display::new(value, &BASE64_STANDARD))
            }
            Value::EnumNumber(number) => match self.kind {
                Kind::Enum(enum_type) if enum_type.full_name() == "google.protobuf.NullValue" => {
                    serializer.serialize_none()
                }
                Kind::Enum(enum_type) => match enum_type.get_value(*number) {
                    Some(value) => serializer.serialize_str(value.name()),
                    None => serializer.serialize_i32(*number),
                },
                // A decoded message's values have their fields' kinds; a number is all there
                // is to write otherwise.
                _ => serializer.serialize_i32(*number),
            },
            Value::Message(message) => SetFields {
                message,
                options: self.options,
            }
            .serialize(serializer),
            Value::List(values) => {
                let mut list = serializer.serialize_seq(Some(values.len()))?;
                for value in values {
                    list.serialize_element(&FieldValue {
                        value,
                        kind: self.kind,
                        options: self.options,
                    })?;
                }
                list.end()
            }
            Value::Map(entries) => {
                let value_kind = match self.kind {
                    Kind::Message(entry) if entry.is_map_entry() => {
                        entry.map_entry_value_field().kind()
                    }
                    _ => return Err(serde::ser::Error::custom("a map without its entry type")),
                };
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(
                        &Key(key),
                        &FieldValue {
                            value,
                            kind: &value_kind,
                            options: self.options,
                        },
                    )?;
                }
                map.end()
            }
        }
    }
}

/// A finite float as a number, the others by their JSON mapping names.
fn float<S: Serializer>(
    serializer: S,
    value: f64,
    finite: impl FnOnce(S) -> Result<S::Ok, S::Error>,
) -> Result<S::Ok, S::Error> {
    if value.is_finite() {
        finite(serializer)
    } else if value == f64::INFINITY {
        serializer.serialize_str("Infinity")
    } else if value == f64::NEG_INFINITY {
        serializer.serialize_str("-Infinity")
    } else {
        serializer.serialize_str("NaN")
    }
}

/// A map key, always a string in JSON.
struct Key<'a>(&'a MapKey);

impl Serialize for Key<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            MapKey::Bool(value) => serializer.collect_str(value),
            MapKey::I32(value) => serializer.collect_str(value),
            MapKey::I64(value) => serializer.collect_str(value),
            MapKey::U32(value) => serializer.collect_str(value),
            MapKey::U64(value) => serializer.collect_str(value),
            MapKey::String(value) => serializer.serialize_str(value),
        }
    }
}
