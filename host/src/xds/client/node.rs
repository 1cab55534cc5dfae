//! The `node` weir sends on the first request of each stream: who it is (`node.id`,
//! `node.cluster`, `node.metadata` from the bootstrap) and what it is (`user_agent_*`).

use crate::config::dynamic_resources::XdsSpec;
use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::google::protobuf::{ListValue, NullValue, Struct, Value, value::Kind};

/// The control plane's view of this weir.
pub(super) fn node(spec: &XdsSpec) -> Node {
    Node {
        id: spec.node_id.clone(),
        cluster: spec.node_cluster.clone(),
        metadata: match &spec.node_metadata {
            serde_json::Value::Object(fields) => Some(object(fields)),
            _ => None,
        },
        locality: spec.node_locality.as_ref().map(|locality| Locality {
            region: locality.region.clone(),
            zone: locality.zone.clone(),
            sub_zone: locality.sub_zone.clone(),
        }),
        // What weir is, unless the bootstrap says otherwise (a control plane that keys on
        // `envoy` may need it to).
        user_agent_name: if spec.node_user_agent_name.is_empty() {
            "weir".to_owned()
        } else {
            spec.node_user_agent_name.clone()
        },
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
            if spec.node_user_agent_version.is_empty() {
                env!("CARGO_PKG_VERSION").to_owned()
            } else {
                spec.node_user_agent_version.clone()
            },
        )),
        ..Node::default()
    }
}

/// A JSON object as a `google.protobuf.Struct`.
fn object(fields: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(name, value)| (name.clone(), json(value)))
            .collect(),
    }
}

/// A JSON value as a `google.protobuf.Value`.
fn json(value: &serde_json::Value) -> Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(NullValue::NullValue as i32),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json).collect(),
        }),
        serde_json::Value::Object(fields) => Kind::StructValue(object(fields)),
    };
    Value { kind: Some(kind) }
}
