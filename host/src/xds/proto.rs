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
    let message = DynamicMessage::decode(descriptor, bytes).map_err(|e| ProtoError::Decode {
        type_name: type_name.to_string(),
        reason: e.to_string(),
    })?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .use_enum_numbers(false)
        .skip_default_fields(true)
        .stringify_64_bit_integers(false);
    let mut json = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| ProtoError::Json {
            type_name: type_name.to_string(),
            reason: unknown_any_reason(&e.to_string()),
        })?;
    whole_numbers_as_integers(&mut json);
    Ok(json)
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

#[cfg(test)]
mod tests;
