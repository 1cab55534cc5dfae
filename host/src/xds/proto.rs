//! Protobuf to Envoy's JSON shape: the descriptor set compiled from Envoy's `.proto` files
//! (`build.rs`) decodes any resource or extension the control plane sends, and serializes it
//! with the proto field names the YAML config uses.
//!
//! The JSON is the protobuf JSON mapping with the settings Envoy's own YAML follows: field
//! names as in the `.proto` (`stat_prefix`, not `statPrefix`), enums by name, fields left at
//! their default omitted, 64-bit integers as numbers, durations as `"5s"`, wrappers as their
//! value, `Struct` as an object, and an `Any` (`typed_config`) as
//! `{"@type": "type.googleapis.com/...", fields...}`.

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use std::sync::OnceLock;

/// The descriptor set `build.rs` wrote: every message of [`crate::xds`]'s resources and the
/// extensions they carry.
static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// Why a protobuf could not be turned into JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The embedded descriptor set did not decode (a broken build).
    #[error("the built-in Envoy descriptor set is unreadable: {0}")]
    Descriptors(String),
    /// The descriptor set has no message of this name.
    #[error("unknown protobuf type {0:?}: weir does not know this Envoy message")]
    UnknownType(String),
    /// The bytes are not a valid message of the type.
    #[error("invalid {type_name} protobuf: {reason}")]
    Decode {
        /// The message type.
        type_name: String,
        /// Why.
        reason: String,
    },
    /// The message holds something that has no JSON form here, most often an `Any` whose
    /// type weir does not know (the reason names it).
    #[error("cannot read {type_name}: {reason}")]
    Json {
        /// The message type.
        type_name: String,
        /// Why.
        reason: String,
    },
}

/// The pool of Envoy's messages, decoded from [`DESCRIPTORS`] once.
pub fn pool() -> Result<&'static DescriptorPool, ProtoError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ProtoError::Descriptors(e.clone()))
}

/// Decodes `bytes` as the message `type_name` (e.g. `envoy.config.cluster.v3.Cluster`) and
/// writes it as Envoy's YAML would hold it (see the module docs).
pub fn to_json(type_name: &str, bytes: &[u8]) -> Result<serde_json::Value, ProtoError> {
    let descriptor = pool()?
        .get_message_by_name(type_name)
        .ok_or_else(|| ProtoError::UnknownType(type_name.to_string()))?;
    let mut message =
        DynamicMessage::decode(descriptor, bytes).map_err(|e| ProtoError::Decode {
            type_name: type_name.to_string(),
            reason: e.to_string(),
        })?;
    mark_empty_anys(&mut message);
    let options = json_options();
    let mut json = serde::Serialize::serialize(
        &set_fields::SetFields {
            message: &message,
            options: &options,
        },
        serde_json::value::Serializer,
    )
    .map_err(|e| ProtoError::Json {
        type_name: type_name.to_string(),
        reason: unknown_any_reason(&e.to_string()),
    })?;
    whole_numbers_as_integers(&mut json);
    empty_anys_as_empty_objects(&mut json);
    Ok(json)
}

/// How a message is written (see the module docs): proto field names, enums by name, default
/// fields left out, 64-bit integers as numbers.
fn json_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .use_enum_numbers(false)
        .skip_default_fields(true)
        .stringify_64_bit_integers(false)
}

/// A `google.protobuf.Struct` holds every number as a double, so `60` in a `TypedStruct`'s
/// value comes out as `60.0`, which an integer field of the schema refuses (Envoy's own JSON
/// reading takes it). Whole doubles are written as integers; a double field reads an integer
/// all the same. The depth is bounded by prost's decoding recursion limit.
fn whole_numbers_as_integers(value: &mut serde_json::Value) {
    /// 2^53: past it a double no longer holds every integer.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        serde_json::Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            if let Some(float) = number.as_f64()
                && float.fract() == 0.0
                && float.abs() <= EXACT
            {
                // In range (checked above), so the cast is exact.
                *value = serde_json::Value::from(float as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(whole_numbers_as_integers)
        }
        _ => {}
    }
}

/// The type URL an `Any` with no type is given so that it serializes (prost-reflect cannot
/// write an `Any` without one); written back as `{}`, as Envoy's YAML writes an empty `Any`
/// (`FilterConfig.config: {}`, which turns a filter on for a route).
const EMPTY_ANY_MARK: &str = "weir.invalid/google.protobuf.Empty";

/// Gives every `Any` without a type URL in `message`, inside `Any`s too, [`EMPTY_ANY_MARK`];
/// true when it changed something. The depth is bounded by prost's decoding recursion
/// limit (an `Any`'s value is decoded under the same limit).
fn mark_empty_anys(message: &mut DynamicMessage) -> bool {
    fn visit(value: &mut prost_reflect::Value) -> bool {
        match value {
            prost_reflect::Value::Message(inner) => mark_empty_anys(inner),
            prost_reflect::Value::List(items) => items
                .iter_mut()
                .fold(false, |changed, item| visit(item) | changed),
            prost_reflect::Value::Map(entries) => entries
                .values_mut()
                .fold(false, |changed, item| visit(item) | changed),
            _ => false,
        }
    }
    if prost_reflect::ReflectMessage::descriptor(&*message).full_name() == "google.protobuf.Any" {
        let type_url = message
            .get_field_by_name("type_url")
            .and_then(|url| url.as_str().map(str::to_owned))
            .unwrap_or_default();
        if type_url.is_empty() {
            message.set_field_by_name(
                "type_url",
                prost_reflect::Value::String(EMPTY_ANY_MARK.to_string()),
            );
            return true;
        }
        // The message the `Any` holds, when weir knows its type: marked and put back.
        let type_name = type_url.rsplit('/').next().unwrap_or_default();
        let (Ok(pool), Some(bytes)) = (pool(), message.get_field_by_name("value")) else {
            return false;
        };
        let Some(descriptor) = pool.get_message_by_name(type_name) else {
            return false;
        };
        let Some(bytes) = bytes.as_bytes().cloned() else {
            return false;
        };
        let Ok(mut inner) = DynamicMessage::decode(descriptor, bytes) else {
            return false;
        };
        if !mark_empty_anys(&mut inner) {
            return false;
        }
        message.set_field_by_name(
            "value",
            prost_reflect::Value::Bytes(prost::Message::encode_to_vec(&inner).into()),
        );
        return true;
    }
    message
        .fields_mut()
        .fold(false, |changed, (_, value)| visit(value) | changed)
}

/// Writes the `Any`s [`mark_empty_anys`] marked as `{}`.
fn empty_anys_as_empty_objects(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            if fields.get("@type").and_then(serde_json::Value::as_str) == Some(EMPTY_ANY_MARK) {
                fields.clear();
                return;
            }
            fields.values_mut().for_each(empty_anys_as_empty_objects);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(empty_anys_as_empty_objects),
        _ => {}
    }
}

/// prost-reflect says `message 'x.Y' not found` for an `Any` of a type the pool lacks; say
/// what that means here.
fn unknown_any_reason(reason: &str) -> String {
    match reason
        .strip_prefix("message '")
        .and_then(|rest| rest.strip_suffix("' not found"))
    {
        Some(type_name) => format!(
            "an Any (typed_config) holds type.googleapis.com/{type_name}, a type weir does not know"
        ),
        None => reason.to_string(),
    }
}

mod set_fields;

#[cfg(test)]
mod tests;
