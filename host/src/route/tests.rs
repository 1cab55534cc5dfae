use super::*;
use crate::config::schema::RouteConfiguration;

fn table(yaml: &str) -> RouteTable {
    let config: RouteConfiguration = serde_yaml_ng::from_str(yaml).unwrap();
    RouteTable::build(&config, "route_config", &["a", "b", "c"].into()).unwrap()
}

fn cluster_of(table: &RouteTable, host: &str, path: &str, headers: &HeaderMap) -> Option<String> {
    match &table.find(host, path, headers)?.action {
        RouteAction::Forward(f) => Some(f.cluster.clone()),
        RouteAction::Direct { status, .. } => Some(status.as_str().to_string()),
        RouteAction::Redirect(r) => Some(r.status.as_str().to_string()),
    }
}

#[test]
fn domains_match_in_envoy_order() {
    let t = table(
        r#"
virtual_hosts:
- { name: exact, domains: ["api.example.com"], routes: [ { match: { prefix: "/" }, route: { cluster: a } } ] }
- { name: suffix, domains: ["*.example.com"], routes: [ { match: { prefix: "/" }, route: { cluster: b } } ] }
- { name: prefix, domains: ["www.*"], routes: [ { match: { prefix: "/" }, direct_response: { status: 204 } } ] }
- { name: any, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: c } } ] }
"#,
    );
    let h = HeaderMap::new();
    assert_eq!(
        cluster_of(&t, "API.example.com", "/", &h).as_deref(),
        Some("a")
    );
    assert_eq!(
        cluster_of(&t, "api.example.com:8080", "/", &h).as_deref(),
        Some("c"),
        "the port is part of the host, as in Envoy"
    );
    assert_eq!(
        cluster_of(&t, "x.example.com", "/", &h).as_deref(),
        Some("b")
    );
    assert_eq!(
        cluster_of(&t, "www.example.com", "/", &h).as_deref(),
        Some("b"),
        "suffix beats prefix"
    );
    assert_eq!(
        cluster_of(&t, "www.other.org", "/", &h).as_deref(),
        Some("204")
    );
    assert_eq!(
        cluster_of(&t, "example.com", "/", &h).as_deref(),
        Some("c"),
        "a wildcard needs a character"
    );
}

#[test]
fn routes_match_first_wins() {
    let t = table(
        r#"
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - { match: { path: "/exact" }, route: { cluster: a } }
  - { match: { safe_regex: { regex: "/re/[0-9]+" } }, route: { cluster: b } }
  - match: { prefix: "/h", headers: [ { name: x-tier, string_match: { exact: gold } }, { name: x-debug, present_match: false } ] }
    route: { cluster: c }
  - { match: { prefix: "/H", case_sensitive: false }, direct_response: { status: 418 } }
"#,
    );
    let mut h = HeaderMap::new();
    assert_eq!(cluster_of(&t, "x", "/exact?q=1", &h).as_deref(), Some("a"));
    assert_eq!(cluster_of(&t, "x", "/exact/more", &h), None);
    assert_eq!(cluster_of(&t, "x", "/re/42", &h).as_deref(), Some("b"));
    assert_eq!(
        cluster_of(&t, "x", "/re/42x", &h),
        None,
        "regex must match in full"
    );
    assert_eq!(
        cluster_of(&t, "x", "/home", &h).as_deref(),
        Some("418"),
        "headers missing"
    );
    h.insert("x-tier", "gold".parse().unwrap());
    assert_eq!(cluster_of(&t, "x", "/home", &h).as_deref(), Some("c"));
    h.insert("x-debug", "1".parse().unwrap());
    assert_eq!(cluster_of(&t, "x", "/home", &h).as_deref(), Some("418"));
}

#[test]
fn rewrite_len_covers_the_matched_part() {
    let m = PathMatcher::Prefix {
        prefix: "/api".into(),
        case_sensitive: true,
    };
    assert_eq!(m.rewrite_len("/api/v1?x"), 4);
    let m = PathMatcher::Exact {
        path: "/a".into(),
        case_sensitive: true,
    };
    assert_eq!(m.rewrite_len("/a?x=1"), 2);
}

#[test]
fn response_headers_come_from_the_requests_virtual_host_then_the_table() {
    let t = table(
        r#"
response_headers_to_add:
- header: { key: x-table, value: "1" }
virtual_hosts:
- name: api
  domains: ["api.example.com"]
  response_headers_to_add:
  - header: { key: x-vhost, value: api }
  routes: [ { match: { prefix: "/" }, route: { cluster: a } } ]
- name: any
  domains: ["*"]
  response_headers_to_add:
  - header: { key: x-vhost, value: any }
  routes: [ { match: { prefix: "/" }, route: { cluster: b } } ]
"#,
    );
    let headers_for = |host: Option<&str>| {
        let mut headers = HeaderMap::new();
        t.add_response_headers(host.and_then(|h| t.virtual_host_id(h)), &mut headers);
        (
            headers
                .get("x-vhost")
                .map(|v| v.to_str().unwrap().to_owned()),
            headers
                .get("x-table")
                .map(|v| v.to_str().unwrap().to_owned()),
        )
    };
    assert_eq!(
        headers_for(Some("API.example.com")),
        (Some("api".into()), Some("1".into()))
    );
    assert_eq!(
        headers_for(Some("other.test")),
        (Some("any".into()), Some("1".into()))
    );
    assert_eq!(headers_for(None), (None, Some("1".into())));
}

#[test]
fn ports_in_hosts_and_domains() {
    let yaml = r#"
virtual_hosts:
- { name: bare, domains: ["example.com"], routes: [ { match: { prefix: "/" }, route: { cluster: a } } ] }
- { name: with_port, domains: ["example.com:8080"], routes: [ { match: { prefix: "/" }, route: { cluster: b } } ] }
- { name: any, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: c } } ] }
"#;
    let h = HeaderMap::new();
    let t = table(yaml);
    assert_eq!(cluster_of(&t, "example.com", "/", &h).as_deref(), Some("a"));
    assert_eq!(
        cluster_of(&t, "example.com:8080", "/", &h).as_deref(),
        Some("b")
    );
    assert_eq!(
        cluster_of(&t, "example.com:10000", "/", &h).as_deref(),
        Some("c")
    );
    let t = table(&format!("{yaml}ignore_port_in_host_matching: true\n"));
    assert_eq!(
        cluster_of(&t, "example.com:10000", "/", &h).as_deref(),
        Some("a"),
        "ignore_port_in_host_matching drops the host's port"
    );
    assert_eq!(
        cluster_of(&t, "example.com:8080", "/", &h).as_deref(),
        Some("a"),
        "and never the domain's"
    );
    assert_eq!(cluster_of(&t, "[::1]:80", "/", &h).as_deref(), Some("c"));
}

fn table_err(yaml: &str) -> FieldError {
    let config: RouteConfiguration = serde_yaml_ng::from_str(yaml).unwrap();
    RouteTable::build(&config, "route_config", &["a", "b", "c"].into()).unwrap_err()
}

/// Each expectation is what Envoy 1.40 did with the same match and request.
#[test]
fn query_parameters_separated_prefixes_and_grpc_match_as_envoys() {
    let t = table(
        r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - { match: { prefix: /qp, query_parameters: [ { name: k, string_match: { exact: v } } ] }, route: { cluster: b } }
  - { match: { prefix: /qp, query_parameters: [ { name: p, present_match: true } ] }, direct_response: { status: 201 } }
  - { match: { prefix: /qp }, direct_response: { status: 202 } }
  - { match: { path_separated_prefix: /sep }, route: { cluster: b } }
  - { match: { prefix: /g, grpc: {} }, route: { cluster: c } }
  - { match: { prefix: / }, route: { cluster: a } }
"#,
    );
    let h = HeaderMap::new();
    let on = |path: &str, headers: &HeaderMap| cluster_of(&t, "x", path, headers).unwrap();
    assert_eq!(on("/qp?k=v", &h), "b");
    assert_eq!(on("/qp?k=v&k=w", &h), "b");
    assert_eq!(on("/qp?k=w&k=v", &h), "202", "only the first value counts");
    assert_eq!(on("/qp?k=vv", &h), "202");
    assert_eq!(on("/qp?k=%76", &h), "202", "values are not decoded");
    assert_eq!(on("/qp?p", &h), "201");
    assert_eq!(on("/qp?k", &h), "202");
    assert_eq!(on("/qp", &h), "202");
    assert_eq!(on("/sep", &h), "b");
    assert_eq!(on("/sep/x", &h), "b");
    assert_eq!(on("/sep?x", &h), "b");
    assert_eq!(on("/sepx", &h), "a");
    assert_eq!(on("/SEP/x", &h), "a");
    let mut grpc = HeaderMap::new();
    assert_eq!(on("/g", &grpc), "a");
    for (content_type, cluster) in [
        ("application/grpc", "c"),
        ("application/grpc+proto", "c"),
        ("application/grpc-web", "a"),
        ("text/plain", "a"),
    ] {
        grpc.insert("content-type", content_type.parse().unwrap());
        assert_eq!(on("/g", &grpc), cluster, "{content_type}");
    }
}

#[test]
fn require_tls_goes_by_the_forwarded_proto() {
    let t = table(
        r#"
virtual_hosts:
- { name: tls, domains: ["tls.example"], require_tls: ALL, routes: [ { match: { prefix: / }, route: { cluster: a } } ] }
- { name: ext, domains: ["ext.example"], require_tls: EXTERNAL_ONLY, routes: [] }
- { name: any, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] }
"#,
    );
    assert!(t.requires_tls("tls.example", "http"));
    assert!(!t.requires_tls("tls.example", "https"));
    assert!(t.requires_tls("ext.example", "http"));
    assert!(!t.requires_tls("other.example", "http"));
    assert!(!table("virtual_hosts: []").requires_tls("x", "http"));
}

#[test]
fn route_action_errors_name_the_field() {
    let route = |action: &str| {
        table_err(&format!(
            "virtual_hosts: [ {{ name: v, domains: ['*'], routes: [ {{ match: {{ prefix: / }}, {action} }} ] }} ]"
        ))
        .path
    };
    let at = "route_config.virtual_hosts[0].routes[0]";
    assert_eq!(
        route("route: { cluster: a, cluster_header: x-c }"),
        format!("{at}.route")
    );
    assert_eq!(route("route: {}"), format!("{at}.route"));
    assert_eq!(
        route("route: { cluster_header: 'bad header' }"),
        format!("{at}.route.cluster_header")
    );
    assert_eq!(
        route("route: { weighted_clusters: { clusters: [ { name: zz, weight: 1 } ] } }"),
        format!("{at}.route.weighted_clusters.clusters[0].name")
    );
    assert_eq!(
        route("route: { cluster: a, regex_rewrite: { pattern: { regex: '(' }, substitution: x } }"),
        format!("{at}.route.regex_rewrite.pattern.regex")
    );
    assert_eq!(
        route(
            "route: { cluster: a, prefix_rewrite: /x, regex_rewrite: { pattern: { regex: a }, substitution: x } }"
        ),
        format!("{at}.route")
    );
    assert_eq!(
        route("route: { cluster: a, host_rewrite_header: 'x y' }"),
        format!("{at}.route.host_rewrite_header")
    );
    assert_eq!(
        route("route: { cluster: a, auto_host_rewrite: true, host_rewrite_literal: x }"),
        format!("{at}.route")
    );
    assert_eq!(
        route(
            "redirect: { path_redirect: /a, regex_rewrite: { pattern: { regex: a }, substitution: x } }"
        ),
        format!("{at}.redirect")
    );
    assert_eq!(
        route("route: { cluster: a }, redirect: { https_redirect: true }"),
        at.to_string()
    );
    let e = table_err(
        "virtual_hosts: [ { name: v, domains: ['*'], routes: [ { match: { prefix: /, query_parameters: [ { name: k, string_match: { safe_regex: { regex: '[' } } } ] }, route: { cluster: a } } ] } ]",
    );
    assert_eq!(
        e.path,
        format!("{at}.match.query_parameters[0].string_match.safe_regex.regex")
    );
    let e = table_err(
        "virtual_hosts: [ { name: v, domains: ['*'], routes: [ { match: { path_separated_prefix: /a/ }, route: { cluster: a } } ] } ]",
    );
    assert_eq!(e.path, format!("{at}.match.path_separated_prefix"));
}

/// The three levels' rules for `x-level` (each overwrites it) and `x-all` (each appends),
/// with `most_specific_header_mutations_wins` as given.
fn three_levels(most_specific_wins: bool) -> RouteTable {
    table(&format!(
        r#"
most_specific_header_mutations_wins: {most_specific_wins}
request_headers_to_add:
- {{ header: {{ key: x-level, value: table }}, append_action: OVERWRITE_IF_EXISTS_OR_ADD }}
- {{ header: {{ key: x-all, value: table }} }}
request_headers_to_remove: [x-gone-table]
response_headers_to_add:
- {{ header: {{ key: x-level, value: table }}, append_action: OVERWRITE_IF_EXISTS_OR_ADD }}
- {{ header: {{ key: x-all, value: table }} }}
virtual_hosts:
- name: any
  domains: ["*"]
  request_headers_to_add:
  - {{ header: {{ key: x-level, value: vhost }}, append_action: OVERWRITE_IF_EXISTS_OR_ADD }}
  - {{ header: {{ key: x-all, value: vhost }} }}
  request_headers_to_remove: [x-gone-vhost]
  response_headers_to_add:
  - {{ header: {{ key: x-level, value: vhost }}, append_action: OVERWRITE_IF_EXISTS_OR_ADD }}
  - {{ header: {{ key: x-all, value: vhost }} }}
  routes:
  - match: {{ prefix: "/" }}
    route: {{ cluster: a }}
    request_headers_to_add:
    - {{ header: {{ key: x-level, value: route }}, append_action: OVERWRITE_IF_EXISTS_OR_ADD }}
    - {{ header: {{ key: x-all, value: route }} }}
    request_headers_to_remove: [x-gone-route]
    response_headers_to_add:
    - {{ header: {{ key: x-level, value: route }}, append_action: OVERWRITE_IF_EXISTS_OR_ADD }}
    - {{ header: {{ key: x-all, value: route }} }}
    response_headers_to_remove: [x-upstream-secret]
"#
    ))
}

fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[test]
fn header_rules_run_route_first_and_the_route_configuration_wins_by_default() {
    let t = three_levels(false);
    let (id, _) = t
        .find_request_id("x", false, "/", &HeaderMap::new())
        .unwrap();
    let mut request = HeaderMap::new();
    for name in ["x-gone-table", "x-gone-vhost", "x-gone-route", "x-kept"] {
        request.insert(name, http::HeaderValue::from_static("1"));
    }
    t.apply_request_rules(id, &mut request, &LogContext::default());
    assert_eq!(values(&request, "x-level"), ["table"]);
    assert_eq!(values(&request, "x-all"), ["route", "vhost", "table"]);
    assert_eq!(request.len(), 1 + 3 + 1, "{request:?}");
    let mut response = HeaderMap::new();
    response.insert("x-upstream-secret", http::HeaderValue::from_static("1"));
    t.apply_response_rules(None, Some(id), &mut response, &LogContext::default());
    assert_eq!(values(&response, "x-level"), ["table"]);
    assert_eq!(values(&response, "x-all"), ["route", "vhost", "table"]);
    assert!(!response.contains_key("x-upstream-secret"));
    // Without a route (a 404), the virtual host's and the table's.
    let mut response = HeaderMap::new();
    t.apply_response_rules(
        t.virtual_host_id("x"),
        None,
        &mut response,
        &LogContext::default(),
    );
    assert_eq!(values(&response, "x-all"), ["vhost", "table"]);
}

#[test]
fn most_specific_header_mutations_wins_reverses_the_order() {
    let t = three_levels(true);
    let (id, _) = t
        .find_request_id("x", false, "/", &HeaderMap::new())
        .unwrap();
    let mut request = HeaderMap::new();
    t.apply_request_rules(id, &mut request, &LogContext::default());
    assert_eq!(values(&request, "x-level"), ["route"]);
    assert_eq!(values(&request, "x-all"), ["table", "vhost", "route"]);
    let mut response = HeaderMap::new();
    t.apply_response_rules(None, Some(id), &mut response, &LogContext::default());
    assert_eq!(values(&response, "x-level"), ["route"]);
}

#[test]
fn header_rule_errors_name_their_level() {
    let error = |yaml: &str| {
        let config: RouteConfiguration = serde_yaml_ng::from_str(yaml).unwrap();
        RouteTable::build(&config, "route_config", &["a"].into()).unwrap_err()
    };
    let e = error(
        r#"
virtual_hosts:
- name: any
  domains: ["*"]
  routes:
  - match: { prefix: "/" }
    route: { cluster: a }
    request_headers_to_remove: [":path"]
"#,
    );
    assert_eq!(
        e.path,
        "route_config.virtual_hosts[0].routes[0].request_headers_to_remove[0]"
    );
    let e = error(
        r#"
virtual_hosts:
- name: any
  domains: ["*"]
  request_headers_to_add: [{ header: { key: x, value: "%UPSTREAM_HOST%" } }]
"#,
    );
    assert_eq!(
        e.path,
        "route_config.virtual_hosts[0].request_headers_to_add[0].header.value"
    );
    assert!(e.message.contains("UPSTREAM_HOST"), "{}", e.message);
    let e = error("{internal_only_headers: ['bad name'], virtual_hosts: []}");
    assert_eq!(e.path, "route_config.internal_only_headers[0]");
    let e = error(
        r#"
virtual_hosts:
- name: any
  domains: ["*"]
  routes:
  - match: { prefix: "/" }
    route: { cluster: a, request_mirror_policies: [{ cluster: nope }] }
"#,
    );
    assert_eq!(
        e.path,
        "route_config.virtual_hosts[0].routes[0].route.request_mirror_policies[0].cluster"
    );
}

#[test]
fn typed_per_filter_config_is_merged_per_route_with_weighted_clusters_their_own() {
    let off =
        r#"{ "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true }"#;
    let on = r#"{ "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, config: {} }"#;
    let t = table(&format!(
        r#"
typed_per_filter_config: {{ auth: {off} }}
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {{ prefix: /split }}
    route:
      weighted_clusters:
        clusters:
        - {{ name: a, weight: 1, typed_per_filter_config: {{ auth: {on} }} }}
        - {{ name: b, weight: 1 }}
  - match: {{ prefix: /on }}
    route: {{ cluster: a }}
    typed_per_filter_config: {{ auth: {on}, log: {off} }}
  - match: {{ prefix: / }}
    route: {{ cluster: c }}
"#
    ));
    assert!(t.has_filter_overrides());
    let h = HeaderMap::new();
    let filters = |path: &str| &t.find("x", path, &h).unwrap().filters;
    assert_eq!(filters("/").disabled("auth", None), Some(true));
    assert_eq!(filters("/on").disabled("auth", None), Some(false));
    assert_eq!(filters("/on").disabled("log", None), Some(true));
    assert_eq!(filters("/split").disabled("auth", Some("a")), Some(false));
    assert_eq!(filters("/split").disabled("auth", Some("b")), Some(true));
    assert_eq!(filters("/").disabled("other", None), None);
    assert!(!table("virtual_hosts: []").has_filter_overrides());
}
