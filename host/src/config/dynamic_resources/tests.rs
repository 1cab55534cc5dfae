use super::*;
use crate::config::cluster::cluster_spec;
use crate::config::parse_value;
use serde_json::json;

fn source(value: serde_json::Value) -> ConfigSource {
    parse_value(value).expect("a config source")
}

fn clusters(http2: bool) -> Vec<std::sync::Arc<ClusterSpec>> {
    let mut cluster = json!({
        "name": "xds",
        "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 18000}}}}]}]},
    });
    if http2 {
        cluster["http2_protocol_options"] = json!({});
    }
    let cluster = parse_value(cluster).expect("a cluster");
    vec![std::sync::Arc::new(
        cluster_spec(&cluster, "c").expect("spec"),
    )]
}

fn dynamic(value: serde_json::Value) -> DynamicResources {
    parse_value(value).expect("dynamic_resources")
}

#[test]
fn ads_is_the_one_source_accepted() {
    source(json!({"ads": {}})).check_ads("s").expect("ads");
    source(json!({"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "1s"}))
        .check_ads("s")
        .expect("ads, v3");
    let e = source(json!({})).check_ads("s").expect_err("nothing");
    assert_eq!(e.path, "s");
    let e = source(json!({"self": {}}))
        .check_ads("s")
        .expect_err("self");
    assert_eq!(e.path, "s.self");
    let e = source(json!({"ads": {}, "path": "/x"}))
        .check_ads("s")
        .expect_err("path");
    assert_eq!(e.path, "s.path");
}

#[test]
fn no_dynamic_resources_is_no_xds() {
    assert_eq!(xds_spec(None, None, &[]), Ok(None));
    assert_eq!(xds_spec(Some(&dynamic(json!({}))), None, &[]), Ok(None));
}

#[test]
fn the_spec_has_envoy_defaults() {
    let resources = dynamic(json!({
        "ads_config": {"api_type": "GRPC", "grpc_services": {"envoy_grpc": {"cluster_name": "xds"}}},
        "cds_config": {"ads": {}},
    }));
    let spec = xds_spec(Some(&resources), None, &clusters(true))
        .expect("valid")
        .expect("xds");
    assert_eq!(spec.api, AdsApi::StateOfTheWorld);
    assert!(spec.cds && !spec.lds);
    assert_eq!(spec.lds_fetch_timeout, DEFAULT_INITIAL_FETCH_TIMEOUT);
    assert_eq!(spec.cds_fetch_timeout, DEFAULT_INITIAL_FETCH_TIMEOUT);
    assert_eq!(spec.node_metadata, json!({}));
    assert_eq!(spec.node_user_agent_name, "weir");
    assert_eq!(spec.node_user_agent_version, env!("CARGO_PKG_VERSION"));
    assert!(!spec.set_node_on_first_message_only);
    let e = xds_spec(Some(&resources), None, &clusters(false)).expect_err("HTTP/1");
    assert_eq!(
        e.path,
        "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name"
    );
    let two = dynamic(json!({"ads_config": {"api_type": "GRPC", "grpc_services": [
        {"envoy_grpc": {"cluster_name": "xds"}}, {"envoy_grpc": {"cluster_name": "xds"}}]}}));
    let e = xds_spec(Some(&two), None, &clusters(true)).expect_err("two");
    assert_eq!(e.path, "dynamic_resources.ads_config.grpc_services");
}
