//! What prost-reflect writes for the protobuf forms Envoy's YAML has its own way of writing.

use super::*;
use envoy_types::pb::envoy::config::cluster::v3 as cluster_pb;
use envoy_types::pb::envoy::config::core::v3 as core_pb;
use envoy_types::pb::google::protobuf::{
    Duration as PbDuration, Struct, UInt32Value, UInt64Value, Value, value,
};
use prost::Message;

#[test]
fn the_descriptor_set_decodes_and_knows_the_resources() {
    let pool = pool().expect("pool");
    for kind in crate::xds::resource::ResourceType::ALL {
        let name = kind.type_url().trim_start_matches("type.googleapis.com/");
        assert!(pool.get_message_by_name(name).is_some(), "{name}");
    }
    for name in [
        crate::config::typed::type_names::HCM,
        crate::config::typed::type_names::TCP_PROXY,
        crate::config::typed::type_names::ROUTER,
        crate::config::typed::type_names::DOWNSTREAM_TLS,
        crate::config::typed::type_names::UPSTREAM_TLS,
        crate::config::typed::type_names::WASM,
        crate::config::typed::type_names::NETWORK_WASM,
        crate::config::typed::type_names::QUIC_DOWNSTREAM,
        crate::config::typed::type_names::QUIC_UPSTREAM,
        crate::config::typed::type_names::HTTP_PROTOCOL_OPTIONS,
        crate::config::typed::type_names::ORIGINAL_DST,
        "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        "udpa.type.v1.TypedStruct",
        "xds.type.v3.TypedStruct",
    ] {
        assert!(pool.get_message_by_name(name).is_some(), "{name}");
    }
}

#[test]
fn durations_wrappers_enums_and_64_bit_integers_take_the_yaml_forms() {
    let cluster = cluster_pb::Cluster {
        name: "c".into(),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 500_000_000,
        }),
        lb_policy: cluster_pb::cluster::LbPolicy::Random as i32,
        per_connection_buffer_limit_bytes: Some(UInt32Value { value: 4096 }),
        lb_config: Some(cluster_pb::cluster::LbConfig::RingHashLbConfig(
            cluster_pb::cluster::RingHashLbConfig {
                minimum_ring_size: Some(UInt64Value { value: 1 << 40 }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let json = to_json("envoy.config.cluster.v3.Cluster", &cluster.encode_to_vec()).expect("json");
    assert_eq!(json["name"], "c");
    assert_eq!(json["connect_timeout"], "1.500s");
    assert_eq!(json["lb_policy"], "RANDOM");
    assert_eq!(json["per_connection_buffer_limit_bytes"], 4096);
    assert_eq!(json["ring_hash_lb_config"]["minimum_ring_size"], 1u64 << 40);
    // Defaults are left out, as a YAML file leaves them out.
    assert!(
        json.get("type").is_none() || json["type"] == "STATIC",
        "{json}"
    );
    assert!(json.get("dns_lookup_family").is_none(), "{json}");
    let read = crate::config::duration::parse(json["connect_timeout"].as_str().expect("text"));
    assert_eq!(read, Ok(std::time::Duration::from_millis(1500)));
}

#[test]
fn a_struct_is_an_object() {
    let node = core_pb::Node {
        id: "n".into(),
        metadata: Some(Struct {
            fields: [(
                "ISTIO_VERSION".to_string(),
                Value {
                    kind: Some(value::Kind::StringValue("1.20".into())),
                },
            )]
            .into_iter()
            .collect(),
        }),
        ..Default::default()
    };
    let json = to_json("envoy.config.core.v3.Node", &node.encode_to_vec()).expect("json");
    assert_eq!(
        json["metadata"],
        serde_json::json!({"ISTIO_VERSION": "1.20"})
    );
}

#[test]
fn unknown_types_and_bad_bytes_are_errors() {
    assert_eq!(
        to_json("example.Nothing", b""),
        Err(ProtoError::UnknownType("example.Nothing".into()))
    );
    assert!(matches!(
        to_json("envoy.config.cluster.v3.Cluster", b"\x0a\xff"),
        Err(ProtoError::Decode { .. })
    ));
}

#[test]
fn whole_numbers_in_a_struct_are_integers() {
    let node = core_pb::Node {
        id: "n".into(),
        metadata: Some(Struct {
            fields: [
                (
                    "whole".to_string(),
                    Value {
                        kind: Some(value::Kind::NumberValue(60.0)),
                    },
                ),
                (
                    "half".to_string(),
                    Value {
                        kind: Some(value::Kind::NumberValue(0.5)),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        }),
        ..Default::default()
    };
    let json = to_json("envoy.config.core.v3.Node", &node.encode_to_vec()).expect("json");
    assert!(json["metadata"]["whole"].is_u64(), "{json}");
    assert_eq!(json["metadata"]["whole"], 60);
    assert_eq!(json["metadata"]["half"], 0.5);
}

#[test]
fn an_any_without_a_type_reads_as_an_empty_object() {
    use envoy_types::pb::envoy::config::route::v3::FilterConfig;
    let config = FilterConfig {
        config: Some(envoy_types::pb::google::protobuf::Any::default()),
        ..FilterConfig::default()
    };
    let json = to_json(
        "envoy.config.route.v3.FilterConfig",
        &config.encode_to_vec(),
    )
    .unwrap();
    assert_eq!(json, serde_json::json!({"config": {}}));
}

/// A control plane's bytes nesting values 20,000 deep (a `Value` holding a list holding a
/// value ...): refused as an error at the decoder's recursion limit, never a stack overflow.
#[test]
fn deeply_nested_bytes_are_an_error_not_a_crash() {
    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let mut value = Vec::new();
    for _ in 0..20_000 {
        // ListValue { values: [value] } (field 1), then Value { list_value } (field 6).
        let mut list = vec![0x0a];
        varint(value.len(), &mut list);
        list.extend_from_slice(&value);
        let mut outer = vec![0x32];
        varint(list.len(), &mut outer);
        outer.extend_from_slice(&list);
        value = outer;
    }
    let result = to_json("google.protobuf.Value", &value);
    assert!(result.is_err(), "{result:?}");
}

/// `to_json` as prost-reflect's own serializer writes it (the reference [`set_fields`] must
/// match).
fn reference_json(type_name: &str, bytes: &[u8]) -> serde_json::Value {
    let descriptor = pool()
        .expect("pool")
        .get_message_by_name(type_name)
        .expect("known");
    let mut message = DynamicMessage::decode(descriptor, bytes).expect("decodes");
    mark_empty_anys(&mut message);
    let options = json_options();
    let mut json = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("serializes");
    whole_numbers_as_integers(&mut json);
    empty_anys_as_empty_objects(&mut json);
    json
}

#[test]
fn the_set_fields_writer_matches_prost_reflects_serializer() {
    use envoy_types::pb::envoy::config::route::v3 as route_pb;
    use envoy_types::pb::envoy::r#type::v3 as type_pb;
    use envoy_types::pb::google::protobuf::{Any, BoolValue, DoubleValue};
    let per_filter = std::collections::HashMap::from([
        (
            "envoy.filters.http.wasm".to_string(),
            Any {
                type_url: "type.googleapis.com/envoy.config.route.v3.FilterConfig".into(),
                value: route_pb::FilterConfig {
                    disabled: true,
                    ..Default::default()
                }
                .encode_to_vec(),
            },
        ),
        ("empty".to_string(), Any::default()),
    ]);
    let routes = route_pb::RouteConfiguration {
        name: "r".into(),
        validate_clusters: Some(BoolValue { value: false }),
        virtual_hosts: vec![route_pb::VirtualHost {
            name: "v".into(),
            domains: vec!["*".into(), "a.example".into()],
            require_tls: route_pb::virtual_host::TlsRequirementType::All as i32,
            routes: vec![route_pb::Route {
                name: "first".into(),
                r#match: Some(route_pb::RouteMatch {
                    path_specifier: Some(route_pb::route_match::PathSpecifier::Prefix("/a".into())),
                    case_sensitive: Some(BoolValue { value: false }),
                    ..Default::default()
                }),
                action: Some(route_pb::route::Action::Route(route_pb::RouteAction {
                    cluster_specifier: Some(route_pb::route_action::ClusterSpecifier::Cluster(
                        "c".into(),
                    )),
                    timeout: Some(PbDuration {
                        seconds: 0,
                        nanos: 250_000_000,
                    }),
                    ..Default::default()
                })),
                typed_per_filter_config: per_filter,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let cluster = cluster_pb::Cluster {
        name: "c".into(),
        lb_policy: cluster_pb::cluster::LbPolicy::LeastRequest as i32,
        lb_config: Some(cluster_pb::cluster::LbConfig::LeastRequestLbConfig(
            cluster_pb::cluster::LeastRequestLbConfig {
                choice_count: Some(UInt32Value { value: 3 }),
                active_request_bias: Some(core_pb::RuntimeDouble {
                    default_value: 1.5,
                    runtime_key: "bias".into(),
                }),
                ..Default::default()
            },
        )),
        outlier_detection: Some(cluster_pb::OutlierDetection {
            consecutive_5xx: Some(UInt32Value { value: 7 }),
            ..Default::default()
        }),
        metadata: Some(core_pb::Metadata {
            filter_metadata: std::collections::HashMap::from([(
                "envoy.lb".to_string(),
                Struct {
                    fields: std::collections::HashMap::from([(
                        "n".to_string(),
                        Value {
                            kind: Some(value::Kind::NumberValue(60.0)),
                        },
                    )]),
                },
            )]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let percent = type_pb::Percent { value: 12.5 };
    let inline = core_pb::DataSource {
        specifier: Some(core_pb::data_source::Specifier::InlineBytes(vec![
            0, 1, 2, 250,
        ])),
        ..Default::default()
    };
    let double = DoubleValue { value: f64::NAN };
    for (type_name, bytes) in [
        (
            "envoy.config.route.v3.RouteConfiguration",
            routes.encode_to_vec(),
        ),
        ("envoy.config.cluster.v3.Cluster", cluster.encode_to_vec()),
        ("envoy.type.v3.Percent", percent.encode_to_vec()),
        ("envoy.config.core.v3.DataSource", inline.encode_to_vec()),
        ("google.protobuf.DoubleValue", double.encode_to_vec()),
    ] {
        let ours = to_json(type_name, &bytes).expect("json");
        let reference = reference_json(type_name, &bytes);
        assert_eq!(ours, reference, "{type_name}");
    }
}
