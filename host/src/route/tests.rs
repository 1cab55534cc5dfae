use super::*;
use crate::config::schema::RouteConfiguration;

fn table(yaml: &str) -> RouteTable {
    let config: RouteConfiguration = serde_yaml_ng::from_str(yaml).unwrap();
    RouteTable::build(&config, "route_config", &["a", "b", "c"]).unwrap()
}

fn cluster_of(table: &RouteTable, host: &str, path: &str, headers: &HeaderMap) -> Option<String> {
    match &table.find(host, path, headers)?.action {
        RouteAction::Forward(f) => Some(f.cluster.clone()),
        RouteAction::Direct { status, .. } => Some(status.as_str().to_string()),
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
