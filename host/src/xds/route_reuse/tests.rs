//! A route configuration read reusing the version in force gives what a whole decode gives.

use super::*;
use crate::xds::resource::{ResourceType, decode_reusing};
use prost::Message as _;
use prost_reflect::DynamicMessage;

const BASE: &str = r#"
name: routes
response_headers_to_add: [{header: {key: x-config, value: "1"}}]
typed_per_filter_config:
  envoy.filters.http.wasm: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true}
virtual_hosts:
- name: a
  domains: [a.example]
  retry_policy: {retry_on: 5xx, num_retries: 2}
  routes:
  - match: {prefix: /r0/}
    route: {cluster: c0, timeout: 1.5s}
  - match: {prefix: /r1/, headers: [{name: x-v, string_match: {exact: "1"}}]}
    route: {weighted_clusters: {clusters: [{name: c1, weight: 1}, {name: c2, weight: 3}]}}
  - match: {path: /direct}
    direct_response: {status: 200, body: {inline_string: hi}}
  - match: {safe_regex: {regex: "/re/[0-9]+"}}
    redirect: {https_redirect: true}
- name: b
  domains: ["*"]
  routes:
  - match: {prefix: /}
    route: {cluster: c3}
    typed_per_filter_config:
      envoy.filters.http.wasm: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, is_optional: true, disabled: true}
"#;

/// The protobuf of the route configuration `yaml` (protobuf JSON).
fn encode(yaml: &str) -> Bytes {
    let json: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("yaml");
    let descriptor = crate::xds::proto::pool()
        .expect("descriptors")
        .get_message_by_name(ROUTE_CONFIGURATION)
        .expect("RouteConfiguration");
    let message = DynamicMessage::deserialize(descriptor, json).expect("a route configuration");
    Bytes::from(message.encode_to_vec())
}

fn whole(bytes: &Bytes) -> Decoded {
    decode_reusing(ResourceType::RouteConfiguration, bytes, &|_| None).expect("decodes")
}

/// `bytes` read with `before` in force.
fn reusing(bytes: &Bytes, before: &Decoded) -> Option<(Decoded, Reused)> {
    super::decode(bytes, &|name| (name == before.name).then(|| before.clone()))
}

fn config(decoded: &Decoded) -> &Arc<RouteConfiguration> {
    match &decoded.resource {
        Resource::RouteConfiguration(config) => config,
        other => panic!("not a route configuration: {other:?}"),
    }
}

fn table(decoded: &Decoded) -> Arc<crate::route::RouteTable> {
    crate::route::shared::unvalidated(config(decoded), "").expect("builds")
}

/// `reused` and `whole` say the same: JSON, schema, every built route.
fn assert_same(reused: &Decoded, whole: &Decoded) {
    assert_eq!(reused.name, whole.name);
    assert_eq!(reused.json.get(), whole.json.get(), "the JSON");
    assert_eq!(
        crate::snapshot::DumpJson::json(&*reused.json),
        whole.json.get(),
        "the JSON /config_dump shows"
    );
    assert_eq!(
        format!("{:?}", config(reused)),
        format!("{:?}", config(whole)),
        "the schema value"
    );
    let (reused_table, whole_table) = (table(reused), table(whole));
    for (v, vhost) in config(whole).virtual_hosts.iter().enumerate() {
        for r in 0..vhost.routes.len() {
            assert_eq!(
                format!("{:?}", reused_table.route_at(v, r)),
                format!("{:?}", whole_table.route_at(v, r)),
                "the built route {v}/{r}"
            );
        }
    }
    assert_eq!(
        reused_table.has_filter_overrides(),
        whole_table.has_filter_overrides()
    );
    assert_eq!(
        reused_table.any_response_rules(),
        whole_table.any_response_rules()
    );
    assert_eq!(
        format!("{:?}", reused.route_parts.as_ref().map(|p| &p.wire)),
        format!("{:?}", whole.route_parts.as_ref().map(|p| &p.wire)),
    );
}

fn forward_cluster(decoded: &Decoded, v: usize, r: usize) -> String {
    match &table(decoded).route_at(v, r).expect("the route").action {
        crate::route::RouteAction::Forward(forward) => forward.cluster.clone(),
        other => panic!("not a forward: {other:?}"),
    }
}

#[test]
fn the_field_numbers_cut_are_the_descriptors() {
    let pool = crate::xds::proto::pool().expect("descriptors");
    let number = |message: &str, field: &str| {
        pool.get_message_by_name(message)
            .and_then(|m| m.get_field_by_name(field))
            .map(|f| u64::from(f.number()))
    };
    assert_eq!(
        number(ROUTE_CONFIGURATION, "virtual_hosts"),
        Some(wire::VIRTUAL_HOSTS)
    );
    assert_eq!(number(VIRTUAL_HOST, "routes"), Some(wire::ROUTES));
}

#[test]
fn an_unchanged_route_is_reused_and_a_changed_one_read_and_built() {
    let before = whole(&encode(BASE));
    let bytes = encode(&BASE.replace("cluster: c0,", "cluster: c9,"));
    let (after, reused) = reusing(&bytes, &before).expect("reuses");
    assert_eq!(
        reused,
        Reused {
            decoded: 1,
            read: 4,
            built: 4
        }
    );
    assert_same(&after, &whole(&bytes));
    assert!(!after.same_as(&before), "a changed version is not the same");
    let (again, _) = reusing(&encode(BASE), &before).expect("reuses");
    assert!(again.same_as(&before), "an unchanged version is the same");
    assert_eq!(forward_cluster(&after, 0, 0), "c9");
    assert_eq!(forward_cluster(&after, 1, 0), "c3");
}

#[test]
fn a_changed_virtual_host_keeps_its_routes_reading_and_builds_them_again() {
    let before = whole(&encode(BASE));
    let bytes = encode(&BASE.replace("num_retries: 2", "num_retries: 4"));
    let (after, reused) = reusing(&bytes, &before).expect("reuses");
    // Host a's four routes take its retry policy: built again. Host b's route is kept.
    assert_eq!(
        reused,
        Reused {
            decoded: 0,
            read: 5,
            built: 1
        }
    );
    assert_same(&after, &whole(&bytes));
    let Some(crate::route::RouteAction::Forward(forward)) =
        table(&after).route_at(0, 0).map(|r| r.action.clone())
    else {
        panic!("not a forward");
    };
    assert!(format!("{:?}", forward.retry).contains("4"));
}

#[test]
fn a_changed_configuration_field_builds_every_route_again() {
    let before = whole(&encode(BASE));
    let bytes = encode(&BASE.replace("value: \"1\"", "value: \"2\""));
    let (after, reused) = reusing(&bytes, &before).expect("reuses");
    assert_eq!(
        reused,
        Reused {
            decoded: 0,
            read: 5,
            built: 0
        }
    );
    assert_same(&after, &whole(&bytes));
}

#[test]
fn routes_moved_added_and_repeated_are_read_in_their_new_places() {
    let before = whole(&encode(BASE));
    let moved = BASE.replace(
        "  routes:\n  - match: {prefix: /r0/}",
        "  routes:\n  - match: {prefix: /new/}\n    route: {cluster: c7}\n  - match: {path: /direct}\n    direct_response: {status: 200, body: {inline_string: hi}}\n  - match: {prefix: /r0/}",
    );
    let bytes = encode(&moved);
    let (after, reused) = reusing(&bytes, &before).expect("reuses");
    assert_eq!(
        reused,
        Reused {
            decoded: 1,
            read: 6,
            built: 6
        }
    );
    assert_same(&after, &whole(&bytes));
    // And a version with a virtual host less, then one more.
    let fewer = encode(&BASE[..BASE.find("- name: b").expect("host b")]);
    let (after_fewer, _) = reusing(&fewer, &after).expect("reuses");
    assert_same(&after_fewer, &whole(&fewer));
    let (again, reused) = reusing(&bytes, &after_fewer).expect("reuses");
    assert_eq!(reused.decoded, 2, "host b's route and /new/ are read anew");
    assert_same(&again, &whole(&bytes));
}

#[test]
fn a_broken_route_is_refused_with_the_whole_decodes_error() {
    let before = whole(&encode(BASE));
    let bytes = encode(&BASE.replace("/re/[0-9]+", "/re/(["));
    assert!(
        reusing(&bytes, &before).is_none(),
        "a route that does not build is left to the whole decode"
    );
    let previous = |name: &str| (name == before.name).then(|| before.clone());
    let error =
        decode_reusing(ResourceType::RouteConfiguration, &bytes, &previous).expect_err("refused");
    let whole_error =
        decode_reusing(ResourceType::RouteConfiguration, &bytes, &|_| None).expect_err("refused");
    assert_eq!(error, whole_error);
    assert!(
        error.path.starts_with("virtual_hosts[0].routes[3]"),
        "{error:?}"
    );
    // The schema refuses a route too (two actions' worth of nothing: no action).
    let bytes = encode(&BASE.replace("    redirect: {https_redirect: true}\n", ""));
    let error =
        decode_reusing(ResourceType::RouteConfiguration, &bytes, &previous).expect_err("refused");
    assert_eq!(
        error,
        decode_reusing(ResourceType::RouteConfiguration, &bytes, &|_| None).expect_err("refused")
    );
}

#[test]
fn nothing_is_reused_without_a_version_in_force_of_that_name() {
    let before = whole(&encode(BASE));
    assert!(reusing(&encode(BASE), &before).is_some());
    let other = encode(&BASE.replace("name: routes", "name: others"));
    assert!(reusing(&other, &before).is_none());
    assert!(super::decode(&encode(BASE), &|_| None).is_none());
    let mut without_parts = before.clone();
    assert!(
        whole(&encode(BASE)).same_as(&before),
        "compared by their JSON"
    );
    without_parts.route_parts = None;
    assert!(reusing(&encode(BASE), &without_parts).is_none());
}

#[test]
fn a_route_whose_body_is_a_file_is_built_again_and_reads_the_file_anew() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("body");
    std::fs::write(&file, "one").expect("write");
    let yaml = BASE.replace(
        "body: {inline_string: hi}",
        &format!("body: {{filename: {:?}}}", file.display().to_string()),
    );
    let before = whole(&encode(&yaml));
    std::fs::write(&file, "two").expect("write");
    let bytes = encode(&yaml.replace("cluster: c0,", "cluster: c9,"));
    let (after, reused) = reusing(&bytes, &before).expect("reuses");
    assert_eq!(
        reused,
        Reused {
            decoded: 1,
            read: 4,
            built: 3
        }
    );
    let after_table = table(&after);
    let crate::route::RouteAction::Direct { body, .. } =
        &after_table.route_at(0, 2).expect("route").action
    else {
        panic!("not a direct response");
    };
    assert_eq!(&body[..], b"two");
}

#[test]
fn a_wire_that_does_not_read_is_not_cut() {
    assert!(wire::split(&Bytes::from_static(&[0x12, 0x05, 0x01])).is_none());
    assert!(
        wire::split(&Bytes::from_static(&[0x0b])).is_none(),
        "a group"
    );
    assert!(wire::split(&Bytes::from_static(&[0xff; 11])).is_none());
    let cut = wire::split(&encode(BASE)).expect("cut");
    assert_eq!(cut.vhosts.len(), 2);
    assert_eq!(cut.vhosts[0].routes.len(), 4);
}
