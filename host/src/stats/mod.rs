//! Every stat weir exports, in one place.
//!
//! Names and meanings follow Envoy's (`downstream_rq_total`, `upstream_cx_overflow`, ...), with
//! the `weir_` prefix and Envoy's Prometheus shape: the listener's `stat_prefix` and the cluster
//! name are labels, and response classes are one family with a `response_code_class` label
//! (Envoy's `downstream_rq_2xx` is `weir_http_downstream_rq_xx{response_code_class="2"}`).
//!
//! Families are registered once per process; callers resolve the label values once (per
//! listener, per cluster) into [`HttpStats`] and [`ClusterStats`], so the request path only
//! touches atomics.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::sync::OnceLock;

/// Declares a stats handle struct whose fields are metrics of one label set, and the
/// families behind them. Each field becomes the family `weir_<scope>_<field>`.
macro_rules! stat_group {
    (
        $(#[$meta:meta])*
        $handle:ident / $families:ident in $field:ident, scope $scope:literal, label $label:literal {
            counters { $($counter:ident: $chelp:literal,)* }
            gauges { $($gauge:ident: $ghelp:literal,)* }
        }
    ) => {
        struct $families {
            $($counter: IntCounterVec,)*
            $($gauge: IntGaugeVec,)*
            rq_xx: IntCounterVec,
        }

        impl $families {
            fn register(registry: &Registry) -> Self {
                Self {
                    $($counter: register_counter(
                        registry,
                        concat!("weir_", $scope, "_", stringify!($counter)),
                        $chelp,
                        &[$label],
                    ),)*
                    $($gauge: register_gauge(
                        registry,
                        concat!("weir_", $scope, "_", stringify!($gauge)),
                        $ghelp,
                        &[$label],
                    ),)*
                    rq_xx: register_counter(
                        registry,
                        concat!("weir_", $scope, "_rq_xx"),
                        "Responses by class: response_code_class 1..5 for 1xx..5xx.",
                        &[$label, "response_code_class"],
                    ),
                }
            }
        }

        $(#[$meta])*
        #[derive(Clone)]
        pub struct $handle {
            $(#[doc = $chelp] pub $counter: IntCounter,)*
            $(#[doc = $ghelp] pub $gauge: IntGauge,)*
            rq_xx: [IntCounter; 5],
        }

        impl $handle {
            /// Resolves every metric for one label value.
            pub fn new(label_value: &str) -> Self {
                let families = &Stats::global().$field;
                Self {
                    $($counter: families.$counter.with_label_values(&[label_value]),)*
                    $($gauge: families.$gauge.with_label_values(&[label_value]),)*
                    rq_xx: ["1", "2", "3", "4", "5"].map(|class| {
                        families.rq_xx.with_label_values(&[label_value, class])
                    }),
                }
            }

            /// Counts one response with `status` in its class (1xx..5xx).
            pub fn count_response(&self, status: u16) {
                if let Some(counter) = (status / 100)
                    .checked_sub(1)
                    .and_then(|i| self.rq_xx.get(usize::from(i)))
                {
                    counter.inc();
                }
            }
        }
    };
}

stat_group! {
    /// Stats of one HTTP connection manager, labelled by its `stat_prefix`
    /// (Envoy's `http.<stat_prefix>.*`).
    HttpStats / HttpFamilies in http, scope "http_downstream", label "stat_prefix" {
        counters {
            cx_total: "Downstream connections accepted.",
            cx_http1_total: "Downstream HTTP/1.1 connections.",
            cx_http2_total: "Downstream HTTP/2 connections.",
            cx_http3_total: "Downstream HTTP/3 (QUIC) connections.",
            cx_ssl_total: "Downstream TLS connections.",
            cx_protocol_error: "Downstream connections closed on a protocol error (HTTP/1.1: a request or body that could not be parsed, or HTTP/1.0 refused).",
            rq_total: "Downstream requests.",
            rq_timeout: "Requests that hit their route timeout (504).",
            rq_no_route: "Requests that matched no route (404).",
            rq_direct_response: "Requests answered by a direct_response route.",
            rq_failed_path_normalization: "Requests answered 400 because their path could not be normalised or had escaped slashes (REJECT_REQUEST).",
            rq_redirected_with_normalized_path: "Requests redirected (307) to their path with escaped slashes unescaped (UNESCAPE_AND_REDIRECT).",
            rq_overload_close: "Requests answered 503 by the overload action stop_accepting_requests.",
            cx_overload_disable_keepalive: "Connections closed or drained by the overload action disable_http_keepalive.",
            cx_upgrades_total: "Upgrades and tunnels (WebSocket, CONNECT, any upgrade) established.",
            cx_max_requests_reached: "Connections drained because they reached max_requests_per_connection.",
            rq_rx_reset: "Streams reset by the client: HTTP/2 and HTTP/3 resets; HTTP/1.1 streams the connection's close ended before request and response were whole (as Envoy counts them).",
            rq_tx_reset: "Streams weir reset: HTTP/2 and HTTP/3 resets; HTTP/1.1 responses cut by closing the connection.",
            rq_too_many_premature_resets: "Connections closed (GOAWAY) because most of their streams were reset prematurely by the client (Envoy's premature-reset rule).",
            rq_header_timeout: "HTTP/1.1 connections closed because a request head did not arrive within request_headers_timeout.",
            rq_idle_timeout: "Streams ended because no byte moved either way for stream_idle_timeout.",
            rq_rejected_with_underscores_in_headers: "Requests refused (400) for an underscore in a header name (headers_with_underscores_action: REJECT_REQUEST).",
            dropped_headers_with_underscores: "Request headers dropped for an underscore in their name (headers_with_underscores_action: DROP_HEADER).",
            rq_body_error: "Requests whose body the client sent malformed or cut short (400 where no response had started).",
            rq_mirror_total: "Copies of requests sent to a request_mirror_policies cluster.",
            rq_mirror_overflow: "Request copies dropped because too many were in flight.",
            rq_mirror_failed: "Request copies that failed or timed out (their answers are dropped either way).",
        }
        gauges {
            cx_active: "Downstream connections open now.",
            rq_active: "Downstream requests in flight now.",
            cx_upgrades_active: "Upgrades and tunnels open now.",
        }
    }
}

stat_group! {
    /// Stats of one upstream cluster, labelled by its name (Envoy's `cluster.<name>.*`).
    ClusterStats / ClusterFamilies in cluster, scope "cluster_upstream", label "cluster_name" {
        counters {
            cx_total: "Upstream connections opened.",
            cx_http1_total: "Upstream HTTP/1.1 connections opened.",
            cx_http2_total: "Upstream HTTP/2 connections opened.",
            cx_http3_total: "Upstream HTTP/3 (QUIC) connections opened.",
            cx_connect_fail: "Upstream connection attempts that failed.",
            cx_connect_timeout: "Upstream connection attempts that timed out.",
            cx_overflow: "Times the max_connections circuit breaker tripped.",
            cx_destroy_with_active_rq: "Upstream connections closed with requests in flight.",
            cx_max_requests: "Upstream connections closed by max_requests_per_connection.",
            cx_idle_timeout: "Upstream connections closed for idleness.",
            rq_total: "Requests sent upstream.",
            rq_pending_total: "Requests that waited for a connection.",
            rq_pending_overflow: "Requests refused by the max_pending_requests circuit breaker.",
            rq_overflow: "Requests refused by the max_requests circuit breaker.",
            rq_timeout: "Requests that timed out waiting for the upstream.",
            rq_reset: "Requests reset by the upstream or its connection.",
            rq_retry: "Retries sent (a route's retry_policy).",
            rq_retry_success: "Requests whose retry ended with a response not retried again.",
            rq_retry_overflow: "Retries not sent because the max_retries circuit breaker was open.",
            rq_retry_limit_exceeded: "Requests not retried again because num_retries was spent.",
            rq_per_try_timeout: "Tries that ran out of their retry policy's per_try_timeout.",
            health_check_attempt: "Active health checks sent.",
            health_check_success: "Active health checks passed.",
            health_check_failure: "Active health checks failed (passive failures included).",
            health_check_passive_failure: "Hosts failed by a routed response carrying x-envoy-immediate-health-check-fail (Envoy's passive health check failure).",
            lb_healthy_panic: "Host picks made in panic mode (fewer hosts available than healthy_panic_threshold).",
            health_check_network_failure: "Active health checks failed by the network (no connection, a reset, a timeout) rather than by the host's answer.",
            membership_change: "Changes of the host set: each update that added or removed hosts (the first hosts included).",
        }
        gauges {
            cx_active: "Upstream connections open now.",
            rq_active: "Upstream requests in flight now.",
            rq_pending_active: "Requests waiting for a connection now.",
            membership_healthy: "Hosts healthy now (neither failing nor degraded).",
            membership_total: "Hosts in the cluster now.",
            membership_degraded: "Hosts degraded now: their health check answered x-envoy-degraded, or EDS (or the config) says DEGRADED, and nothing fails them.",
            membership_excluded: "Hosts excluded from load balancing and its host counts now: waiting for their first health check with ignore_new_hosts_until_first_hc (PENDING_ACTIVE_HC), failed with x-envoy-immediate-health-check-fail (EXCLUDED_VIA_IMMEDIATE_HC_FAIL), or DRAINING by EDS.",
            health_check_healthy: "Hosts passing active health checks now (set by the health checker).",
            health_check_degraded: "Hosts whose last passing active health check answered x-envoy-degraded (set by the health checker).",
        }
    }
}

stat_group! {
    /// Stats of one tcp_proxy listener, labelled by its `stat_prefix` (Envoy's
    /// `tcp.<stat_prefix>.*`).
    TcpStats / TcpFamilies in tcp, scope "tcp", label "stat_prefix" {
        counters {
            cx_total: "Downstream connections accepted.",
            upstream_connect_fail: "Connections whose upstream (or tunnel) could not be established.",
            idle_timeout: "Connections closed because no byte moved either way for idle_timeout.",
        }
        gauges {
            cx_active: "Downstream connections open now.",
        }
    }
}

/// Stats of [`crate::accel::splice`]: how payload moved (Envoy has no equivalent).
pub struct AccelStats {
    /// `weir_accel_splices_total{mode="userspace"}`: splices copied in user space.
    pub splices_userspace: IntCounter,
    /// `weir_accel_splices_total{mode="kernel"}`: splices done in the kernel (eBPF sockmap).
    pub splices_kernel: IntCounter,
    /// `weir_accel_splices_total{mode="filtered"}`: upgraded streams whose payload went
    /// through the body callbacks of their filter chain (in user space, never spliced).
    pub splices_filtered: IntCounter,
    /// `weir_accel_userspace_bytes_total`: payload bytes copied through user space.
    pub userspace_bytes: IntCounter,
    /// `weir_accel_backpressure_pauses_total`: times a kernel-spliced tunnel's sender was
    /// paused because its kernel queue passed `--accel-backlog-limit`.
    pub backpressure_pauses: IntCounter,
}

impl AccelStats {
    /// The process-wide instance.
    pub fn global() -> &'static AccelStats {
        static ACCEL: OnceLock<AccelStats> = OnceLock::new();
        ACCEL.get_or_init(|| {
            let registry = Stats::global().registry();
            let splices = register_counter(
                registry,
                "weir_accel_splices_total",
                "Tunnel and upgrade payload splices, by mode (kernel, userspace, or filtered: through the HTTP filters' body callbacks).",
                &["mode"],
            );
            let bytes = register_counter(
                registry,
                "weir_accel_userspace_bytes_total",
                "Payload bytes of splices copied through user space.",
                &[],
            );
            let pauses = register_counter(
                registry,
                "weir_accel_backpressure_pauses_total",
                "Times a kernel-spliced tunnel's sender was paused (receive window shut) because the bytes waiting in the kernel for its peer passed --accel-backlog-limit.",
                &[],
            );
            AccelStats {
                backpressure_pauses: pauses.with_label_values::<&str>(&[]),
                splices_userspace: splices.with_label_values(&["userspace"]),
                splices_kernel: splices.with_label_values(&["kernel"]),
                splices_filtered: splices.with_label_values(&["filtered"]),
                userspace_bytes: bytes.with_label_values::<&str>(&[]),
            }
        })
    }
}

/// What local acceleration's eBPF programs counted since they were loaded
/// ([`crate::accel::local`]); read from their maps at each scrape. Defined here, below accel/,
/// so that stats import nothing above them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalCounts {
    /// Sockets `sock_ops` added to the sockhash.
    pub sockets_added: u64,
    /// Sockets in the sockhash now.
    pub sockets_active: u64,
    /// Bytes `sk_msg` redirected to a peer's receive queue.
    pub redirected_bytes: u64,
    /// Messages (sendmsg chunks) `sk_msg` redirected.
    pub redirected_messages: u64,
}

/// Registers the stats of local acceleration (`--local-accel-cgroup`), read through `read` at
/// each scrape: `weir_accel_local_sockets_total` (sockets the `sock_ops` program added to the
/// sockhash), `weir_accel_local_sockets_active` (in it now),
/// `weir_accel_local_redirected_bytes_total` and `weir_accel_local_redirected_messages_total`
/// (what the `sk_msg` program handed straight to a peer socket). Registered once, when local
/// acceleration comes on; absent otherwise.
pub fn register_local_accel(read: fn() -> LocalCounts) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        if let Err(error) = Stats::global()
            .registry()
            .register(Box::new(LocalAccelCollector::new(read)))
        {
            tracing::warn!(%error, "registering the local acceleration stats");
        }
    });
}

/// A collector over the eBPF maps: the values live in the kernel, so each scrape reads them.
struct LocalAccelCollector {
    read: fn() -> LocalCounts,
    sockets_total: IntCounter,
    sockets_active: IntGauge,
    redirected_bytes_total: IntCounter,
    redirected_messages_total: IntCounter,
    descs: Vec<prometheus::core::Desc>,
}

impl LocalAccelCollector {
    fn new(read: fn() -> LocalCounts) -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help)
                .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"))
        };
        let sockets_total = counter(
            "weir_accel_local_sockets_total",
            "Loopback sockets of the local acceleration cgroup added to its sockhash.",
        );
        let sockets_active = IntGauge::new(
            "weir_accel_local_sockets_active",
            "Sockets in the local acceleration sockhash now.",
        )
        .unwrap_or_else(|e| unreachable!("static metric is valid: {e}"));
        let redirected_bytes_total = counter(
            "weir_accel_local_redirected_bytes_total",
            "Bytes the sk_msg program handed straight to the peer socket (not through TCP/IP).",
        );
        let redirected_messages_total = counter(
            "weir_accel_local_redirected_messages_total",
            "Messages (sendmsg chunks) the sk_msg program handed straight to the peer socket.",
        );
        use prometheus::core::Collector as _;
        let descs = [
            sockets_total.desc(),
            sockets_active.desc(),
            redirected_bytes_total.desc(),
            redirected_messages_total.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        LocalAccelCollector {
            read,
            sockets_total,
            sockets_active,
            redirected_bytes_total,
            redirected_messages_total,
            descs,
        }
    }
}

impl prometheus::core::Collector for LocalAccelCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let values = (self.read)();
        // Counters only go up: move each to the kernel's value (which only grows too).
        let catch_up = |counter: &IntCounter, value: u64| {
            counter.inc_by(value.saturating_sub(counter.get()));
        };
        catch_up(&self.sockets_total, values.sockets_added);
        catch_up(&self.redirected_bytes_total, values.redirected_bytes);
        catch_up(&self.redirected_messages_total, values.redirected_messages);
        self.sockets_active
            .set(i64::try_from(values.sockets_active).unwrap_or(i64::MAX));
        let mut families = self.sockets_total.collect();
        families.extend(self.sockets_active.collect());
        families.extend(self.redirected_bytes_total.collect());
        families.extend(self.redirected_messages_total.collect());
        families
    }
}

/// Stats of one listening address (Envoy's `listener.<address>.*`), labelled
/// `listener_address` as Envoy's Prometheus output labels them (`127.0.0.1_10000`).
#[derive(Clone)]
pub struct ListenerStats {
    /// `weir_listener_downstream_global_cx_overflow`: connections closed right after accept
    /// because the global downstream connection limit was reached.
    pub downstream_global_cx_overflow: IntCounter,
    /// `weir_listener_network_extension_config_missing`: connections closed right after
    /// accept because a network filter's ECDS config is missing (Envoy's
    /// `listener.<address>.network_extension_config_missing`).
    pub network_extension_config_missing: IntCounter,
}

impl ListenerStats {
    /// The stats of the listener bound at `address`.
    pub fn new(address: Option<std::net::SocketAddr>) -> ListenerStats {
        static FAMILY: OnceLock<IntCounterVec> = OnceLock::new();
        let family = FAMILY.get_or_init(|| {
            register_counter(
                Stats::global().registry(),
                "weir_listener_downstream_global_cx_overflow",
                "Connections closed right after accept because the global downstream connection limit was reached.",
                &["listener_address"],
            )
        });
        let label = match address {
            Some(address) => format!("{}_{}", address.ip(), address.port()),
            None => "unknown".to_string(),
        };
        static MISSING: OnceLock<IntCounterVec> = OnceLock::new();
        let missing = MISSING.get_or_init(|| {
            register_counter(
                Stats::global().registry(),
                "weir_listener_network_extension_config_missing",
                "Connections closed right after accept because a network filter's ECDS config is missing.",
                &["listener_address"],
            )
        });
        ListenerStats {
            downstream_global_cx_overflow: family.with_label_values(&[label.as_str()]),
            network_extension_config_missing: missing.with_label_values(&[label.as_str()]),
        }
    }
}

/// The kinds of outlier ejection, in the order of [`OutlierStats`]' per-kind counters; the
/// names are Envoy's stat suffixes (`ejections_enforced_<kind>`, `ejections_detected_<kind>`).
pub const OUTLIER_KINDS: [&str; 7] = [
    "consecutive_5xx",
    "consecutive_gateway_failure",
    "consecutive_local_origin_failure",
    "success_rate",
    "local_origin_success_rate",
    "failure_percentage",
    "local_origin_failure_percentage",
];

/// Stats of one cluster's outlier detection (Envoy's `cluster.<name>.outlier_detection.*`),
/// families `weir_cluster_outlier_detection_*{cluster_name}`.
#[derive(Clone)]
pub struct OutlierStats {
    /// Hosts ejected now.
    pub ejections_active: IntGauge,
    /// Ejections detected, enforced or not (Envoy's deprecated `ejections_total`).
    pub ejections_total: IntCounter,
    /// Ejections enforced.
    pub ejections_enforced_total: IntCounter,
    /// Ejections not made because `max_ejection_percent` was reached.
    pub ejections_overflow: IntCounter,
    /// `ejections_enforced_<kind>`, by [`OUTLIER_KINDS`].
    pub enforced: [IntCounter; 7],
    /// `ejections_detected_<kind>`, by [`OUTLIER_KINDS`].
    pub detected: [IntCounter; 7],
}

struct OutlierFamilies {
    ejections_active: IntGaugeVec,
    ejections_total: IntCounterVec,
    ejections_enforced_total: IntCounterVec,
    ejections_overflow: IntCounterVec,
    enforced: Vec<IntCounterVec>,
    detected: Vec<IntCounterVec>,
}

impl OutlierStats {
    /// The stats of cluster `name`.
    pub fn new(name: &str) -> OutlierStats {
        static FAMILIES: OnceLock<OutlierFamilies> = OnceLock::new();
        let families = FAMILIES.get_or_init(|| {
            let registry = Stats::global().registry();
            let counter = |stem: &str, help: &str| {
                register_counter(
                    registry,
                    &format!("weir_cluster_outlier_detection_{stem}"),
                    help,
                    &["cluster_name"],
                )
            };
            OutlierFamilies {
                ejections_active: register_gauge(
                    registry,
                    "weir_cluster_outlier_detection_ejections_active",
                    "Hosts ejected by outlier detection now.",
                    &["cluster_name"],
                ),
                ejections_total: counter(
                    "ejections_total",
                    "Outlier ejections detected, enforced or not.",
                ),
                ejections_enforced_total: counter(
                    "ejections_enforced_total",
                    "Outlier ejections enforced.",
                ),
                ejections_overflow: counter(
                    "ejections_overflow",
                    "Outlier ejections not made because max_ejection_percent was reached.",
                ),
                enforced: OUTLIER_KINDS
                    .iter()
                    .map(|kind| {
                        counter(
                            &format!("ejections_enforced_{kind}"),
                            &format!("Outlier ejections enforced for {kind}."),
                        )
                    })
                    .collect(),
                detected: OUTLIER_KINDS
                    .iter()
                    .map(|kind| {
                        counter(
                            &format!("ejections_detected_{kind}"),
                            &format!("Outlier ejections detected for {kind}, enforced or not."),
                        )
                    })
                    .collect(),
            }
        });
        let by_kind = |vecs: &[IntCounterVec]| -> [IntCounter; 7] {
            std::array::from_fn(|i| match vecs.get(i) {
                Some(family) => family.with_label_values(&[name]),
                None => unreachable!("one family per outlier kind"),
            })
        };
        OutlierStats {
            ejections_active: families.ejections_active.with_label_values(&[name]),
            ejections_total: families.ejections_total.with_label_values(&[name]),
            ejections_enforced_total: families.ejections_enforced_total.with_label_values(&[name]),
            ejections_overflow: families.ejections_overflow.with_label_values(&[name]),
            enforced: by_kind(&families.enforced),
            detected: by_kind(&families.detected),
        }
    }
}

/// Stats of the overload manager ([`crate::overload`]): Envoy's `overload.<name>.*` with the
/// monitor's or action's name as the `name` label.
pub struct OverloadStats {
    /// `weir_overload_pressure{name}`: a monitor's pressure, in percent.
    pub pressure: IntGaugeVec,
    /// `weir_overload_failed_updates{name}`: times a monitor could not be read.
    pub failed_updates: IntCounterVec,
    /// `weir_overload_active{name}`: 1 while an action is saturated, else 0.
    pub active: IntGaugeVec,
    /// `weir_overload_scale_percent{name}`: an action's state in percent (100: saturated).
    pub scale_percent: IntGaugeVec,
    /// `weir_overload_global_downstream_max_connections`: the global downstream connection
    /// limit in force (the config's, or weir's default); weir's own.
    pub global_downstream_max_connections: IntGauge,
    /// `weir_overload_global_downstream_cx_active`: downstream connections open now, across
    /// every listener and worker; weir's own.
    pub global_downstream_cx_active: IntGauge,
}

impl OverloadStats {
    /// The process-wide instance.
    pub fn global() -> &'static OverloadStats {
        static OVERLOAD: OnceLock<OverloadStats> = OnceLock::new();
        OVERLOAD.get_or_init(|| {
            let registry = Stats::global().registry();
            let plain_gauge = |name: &str, help: &str| {
                let gauge = IntGauge::new(name, help)
                    .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
                if let Err(e) = registry.register(Box::new(gauge.clone())) {
                    unreachable!("static metric {name} is registered once: {e}");
                }
                gauge
            };
            OverloadStats {
                pressure: register_gauge(
                    registry,
                    "weir_overload_pressure",
                    "Resource pressure of an overload manager monitor, in percent.",
                    &["name"],
                ),
                failed_updates: register_counter(
                    registry,
                    "weir_overload_failed_updates",
                    "Times an overload manager monitor could not be read.",
                    &["name"],
                ),
                active: register_gauge(
                    registry,
                    "weir_overload_active",
                    "Whether an overload action is saturated (1) or not (0).",
                    &["name"],
                ),
                scale_percent: register_gauge(
                    registry,
                    "weir_overload_scale_percent",
                    "State of an overload action in percent (0-99 scaling, 100 saturated).",
                    &["name"],
                ),
                global_downstream_max_connections: plain_gauge(
                    "weir_overload_global_downstream_max_connections",
                    "The global downstream connection limit in force (configured, or weir's default from RLIMIT_NOFILE).",
                ),
                global_downstream_cx_active: plain_gauge(
                    "weir_overload_global_downstream_cx_active",
                    "Downstream connections open now across every listener and worker.",
                ),
            }
        })
    }
}

/// Stats of config reloads ([`crate::reload`]); Envoy has none of its own for a file reload.
pub struct ReloadStats {
    /// `weir_server_config_reloads_total{result="success"}`: reloads that swapped a new
    /// snapshot in.
    pub success: IntCounter,
    /// `weir_server_config_reloads_total{result="failure"}`: reloads that kept the old snapshot
    /// (bad config, a module that does not load, a change that needs a restart).
    pub failure: IntCounter,
    /// `weir_server_config_reload_duration_seconds`: how long the last reload took, from
    /// reading the file to every worker running the new snapshot (or to the failure).
    pub last_duration_seconds: prometheus::Gauge,
    /// `weir_server_config_reload_last_success_timestamp_seconds`: Unix time of the last
    /// successful reload (0 before the first).
    pub last_success_timestamp_seconds: prometheus::Gauge,
    /// `weir_server_config_reload_clusters_total{outcome="kept"}`: clusters a successful
    /// reload carried over as they were (pools, health and circuit breakers kept).
    pub clusters_kept: IntCounter,
    /// `weir_server_config_reload_clusters_total{outcome="rebuilt"}`: clusters a successful
    /// reload built afresh (new or changed).
    pub clusters_rebuilt: IntCounter,
}

impl ReloadStats {
    /// The process-wide instance.
    pub fn global() -> &'static ReloadStats {
        static RELOAD: OnceLock<ReloadStats> = OnceLock::new();
        RELOAD.get_or_init(|| {
            let registry = Stats::global().registry();
            let reloads = register_counter(
                registry,
                "weir_server_config_reloads_total",
                "Config reloads (file watch or POST /reload), by result (success or failure).",
                &["result"],
            );
            let clusters = register_counter(
                registry,
                "weir_server_config_reload_clusters_total",
                "Clusters of successful reloads: kept as they were, or rebuilt (new or changed).",
                &["outcome"],
            );
            ReloadStats {
                clusters_kept: clusters.with_label_values(&["kept"]),
                clusters_rebuilt: clusters.with_label_values(&["rebuilt"]),
                success: reloads.with_label_values(&["success"]),
                failure: reloads.with_label_values(&["failure"]),
                last_duration_seconds: register_float_gauge(
                    registry,
                    "weir_server_config_reload_duration_seconds",
                    "Duration of the last config reload, successful or not.",
                ),
                last_success_timestamp_seconds: register_float_gauge(
                    registry,
                    "weir_server_config_reload_last_success_timestamp_seconds",
                    "Unix time of the last successful config reload.",
                ),
            }
        })
    }
}

/// xDS, per resource type (the `type` label: `lds`, `rds`, `cds`, `eds`), under Envoy's names
/// in `GET /stats` (`cluster_manager.cds.update_success`, `listener_manager.lds.version`, ...;
/// see `admin::envoy_stats`).
pub struct XdsStats {
    /// `weir_control_plane_connected_state`: 1 while the ADS stream is up.
    pub connected_state: IntGauge,
    update_attempt: IntCounterVec,
    update_success: IntCounterVec,
    update_rejected: IntCounterVec,
    update_empty: IntCounterVec,
    update_failure: IntCounterVec,
    init_fetch_timeout: IntCounterVec,
    version: IntGaugeVec,
    update_time: IntGaugeVec,
}

/// The xDS stats of one resource type.
#[derive(Clone)]
pub struct XdsTypeStats {
    /// Responses received.
    pub update_attempt: IntCounter,
    /// Responses applied (ACKed).
    pub update_success: IntCounter,
    /// Responses refused (NACKed).
    pub update_rejected: IntCounter,
    /// Responses that changed nothing (applied without rebuilding the config); weir's own
    /// (`weir.xds.<type>.update_empty`: Envoy 1.40 has no such stat).
    pub update_empty: IntCounter,
    /// Times the ADS stream failed while the type was subscribed.
    pub update_failure: IntCounter,
    /// When a response was last applied, in milliseconds since the Unix epoch.
    pub update_time: IntGauge,
    /// Times the first response did not come within `initial_fetch_timeout`.
    pub init_fetch_timeout: IntCounter,
    /// A hash of the version applied last (Envoy's `version` stat).
    pub version: IntGauge,
}

impl XdsTypeStats {
    /// Envoy's `version_text` of the type whose stats Envoy names (`lds`:
    /// `listener_manager.lds.version_text`, `cds`: `cluster_manager.cds.version_text`);
    /// `None` for the others (weir's `weir.xds.rds.*` and `weir.xds.eds.*` are not Envoy's
    /// names: Envoy keeps those per subscription).
    pub fn version_text(kind: &str) -> Option<TextReadout> {
        match kind {
            "lds" => Some(TextReadout::new("listener_manager.lds.version_text".into())),
            "cds" => Some(TextReadout::new("cluster_manager.cds.version_text".into())),
            _ => None,
        }
    }
}

impl XdsStats {
    /// The process-wide instance.
    pub fn global() -> &'static XdsStats {
        static XDS: OnceLock<XdsStats> = OnceLock::new();
        XDS.get_or_init(|| {
            let registry = Stats::global().registry();
            let counter =
                |name: &str, help: &str| register_counter(registry, name, help, &["type"]);
            XdsStats {
                connected_state: register_gauge(
                    registry,
                    "weir_control_plane_connected_state",
                    "1 while the ADS stream to the control plane is up, else 0.",
                    &[],
                )
                .with_label_values::<&str>(&[]),
                update_attempt: counter(
                    "weir_xds_update_attempt",
                    "xDS responses received, by resource type.",
                ),
                update_success: counter(
                    "weir_xds_update_success",
                    "xDS responses applied (ACKed), by resource type.",
                ),
                update_rejected: counter(
                    "weir_xds_update_rejected",
                    "xDS responses refused (NACKed), by resource type.",
                ),
                update_empty: counter(
                    "weir_xds_update_empty",
                    "xDS responses that changed nothing, by resource type.",
                ),
                update_failure: counter(
                    "weir_xds_update_failure",
                    "ADS stream failures while the type was subscribed, by resource type.",
                ),
                update_time: register_gauge(
                    registry,
                    "weir_xds_update_time",
                    "When a response was last applied (ms since the Unix epoch), by resource type.",
                    &["type"],
                ),
                init_fetch_timeout: counter(
                    "weir_xds_init_fetch_timeout",
                    "Resource types whose first response missed initial_fetch_timeout.",
                ),
                version: register_gauge(
                    registry,
                    "weir_xds_version",
                    "A hash of the version applied last, by resource type.",
                    &["type"],
                ),
            }
        })
    }

    /// The stats of the resource type whose short name is `kind` (`lds`, `rds`, ...).
    pub fn of(&self, kind: &str) -> XdsTypeStats {
        XdsTypeStats {
            update_attempt: self.update_attempt.with_label_values(&[kind]),
            update_success: self.update_success.with_label_values(&[kind]),
            update_rejected: self.update_rejected.with_label_values(&[kind]),
            update_empty: self.update_empty.with_label_values(&[kind]),
            update_failure: self.update_failure.with_label_values(&[kind]),
            update_time: self.update_time.with_label_values(&[kind]),
            init_fetch_timeout: self.init_fetch_timeout.with_label_values(&[kind]),
            version: self.version.with_label_values(&[kind]),
        }
    }
}

/// The label names of the per-extension-config ECDS families: the kind of filter asking
/// (`http_filter`, `network_filter`) and the ECDS resource's name.
const ECDS_LABELS: [&str; 2] = ["stat_prefix", "extension_config_name"];

/// ECDS, per extension config: Envoy's `extension_config_discovery.<stat_prefix>.<name>.*`
/// (`weir_extension_config_discovery_*{stat_prefix, extension_config_name}` here): the
/// filter config's own counters (`config_reload`, `config_fail`, `config_conflict`) and its
/// xDS subscription's (`update_attempt`, `update_success`, ...). See `xds::ecds_stats` for
/// when each counts.
pub struct EcdsStats {
    config_reload: IntCounterVec,
    config_fail: IntCounterVec,
    config_conflict: IntCounterVec,
    update_attempt: IntCounterVec,
    update_success: IntCounterVec,
    update_rejected: IntCounterVec,
    update_failure: IntCounterVec,
    init_fetch_timeout: IntCounterVec,
    update_time: IntGaugeVec,
    version: IntGaugeVec,
    update_duration: prometheus::HistogramVec,
}

/// Envoy's buckets for durations in milliseconds (`update_duration`).
const MILLISECOND_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The ECDS stats of one extension config name, as one kind of filter asks for it.
#[derive(Clone)]
pub struct EcdsNameStats {
    /// Configs applied that changed the filter's config (or removed it).
    pub config_reload: IntCounter,
    /// Updates refused (NACKed) and initial fetches that timed out.
    pub config_fail: IntCounter,
    /// Filters that could not take the config in force (its type is not one they list).
    pub config_conflict: IntCounter,
    /// The subscription's start, each response for it, each failure.
    pub update_attempt: IntCounter,
    /// Responses for it applied (ACKed).
    pub update_success: IntCounter,
    /// Responses of its type refused (NACKed).
    pub update_rejected: IntCounter,
    /// Times the ADS stream failed (lost, or a connection attempt failed).
    pub update_failure: IntCounter,
    /// Times its first config did not come within its source's `initial_fetch_timeout`.
    pub init_fetch_timeout: IntCounter,
    /// When a response for it was last applied, in milliseconds since the Unix epoch.
    pub update_time: IntGauge,
    /// A hash of the version of the response applied last (Envoy's `version` stat).
    pub version: IntGauge,
    /// How long applying each response took, in milliseconds (only on
    /// `/stats/prometheus`, as weir's `/stats` lists no histograms).
    pub update_duration: prometheus::Histogram,
    /// Envoy's text readout `version_text`: the version of the response applied last.
    pub version_text: TextReadout,
}

impl EcdsStats {
    /// The process-wide instance.
    pub fn global() -> &'static EcdsStats {
        static ECDS: OnceLock<EcdsStats> = OnceLock::new();
        ECDS.get_or_init(|| {
            let registry = Stats::global().registry();
            let counter = |stat: &str, help: &str| {
                register_counter(
                    registry,
                    &format!("weir_extension_config_discovery_{stat}"),
                    help,
                    &ECDS_LABELS,
                )
            };
            let gauge = |stat: &str, help: &str| {
                register_gauge(
                    registry,
                    &format!("weir_extension_config_discovery_{stat}"),
                    help,
                    &ECDS_LABELS,
                )
            };
            EcdsStats {
                config_reload: counter(
                    "config_reload",
                    "ECDS configs applied that changed a filter's config, per extension config.",
                ),
                config_fail: counter(
                    "config_fail",
                    "ECDS updates refused and initial fetches timed out, per extension config.",
                ),
                config_conflict: counter(
                    "config_conflict",
                    "Filters that could not take the ECDS config in force (type not listed).",
                ),
                update_attempt: counter(
                    "update_attempt",
                    "ECDS subscription starts, responses and failures, per extension config.",
                ),
                update_success: counter(
                    "update_success",
                    "ECDS responses applied (ACKed), per extension config.",
                ),
                update_rejected: counter(
                    "update_rejected",
                    "ECDS responses refused (NACKed), per extension config.",
                ),
                update_failure: counter(
                    "update_failure",
                    "ADS stream failures seen by each ECDS subscription.",
                ),
                init_fetch_timeout: counter(
                    "init_fetch_timeout",
                    "ECDS first configs that missed initial_fetch_timeout, per extension config.",
                ),
                update_time: gauge(
                    "update_time",
                    "When an ECDS response was last applied (ms since the Unix epoch).",
                ),
                version: gauge(
                    "version",
                    "A hash of the version of the ECDS response applied last.",
                ),
                update_duration: {
                    let name = "weir_extension_config_discovery_update_duration";
                    let opts = prometheus::HistogramOpts::new(
                        name,
                        "How long applying an ECDS response took (ms), per extension config.",
                    )
                    .buckets(MILLISECOND_BUCKETS.to_vec());
                    let family = prometheus::HistogramVec::new(opts, &ECDS_LABELS)
                        .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
                    if let Err(e) = registry.register(Box::new(family.clone())) {
                        unreachable!("static metric {name} is registered once: {e}");
                    }
                    family
                },
            }
        })
    }

    /// The stats of the extension config `name` asked for by filters of `stat_prefix`
    /// (`http_filter`, `network_filter`); created at zero the first time.
    pub fn of(&self, stat_prefix: &str, name: &str) -> EcdsNameStats {
        let labels = [stat_prefix, name];
        EcdsNameStats {
            config_reload: self.config_reload.with_label_values(&labels),
            config_fail: self.config_fail.with_label_values(&labels),
            config_conflict: self.config_conflict.with_label_values(&labels),
            update_attempt: self.update_attempt.with_label_values(&labels),
            update_success: self.update_success.with_label_values(&labels),
            update_rejected: self.update_rejected.with_label_values(&labels),
            update_failure: self.update_failure.with_label_values(&labels),
            init_fetch_timeout: self.init_fetch_timeout.with_label_values(&labels),
            update_time: self.update_time.with_label_values(&labels),
            version: self.version.with_label_values(&labels),
            update_duration: self.update_duration.with_label_values(&labels),
            version_text: TextReadout::new(format!(
                "extension_config_discovery.{stat_prefix}.{name}.version_text"
            )),
        }
    }

    /// Drops the stats of `name` under `stat_prefix` (no filter asks for it any more, as
    /// Envoy's stats go with the subscription's scope); asked for again, they start at zero.
    pub fn remove(&self, stat_prefix: &str, name: &str) {
        let labels = [stat_prefix, name];
        for family in [
            &self.config_reload,
            &self.config_fail,
            &self.config_conflict,
            &self.update_attempt,
            &self.update_success,
            &self.update_rejected,
            &self.update_failure,
            &self.init_fetch_timeout,
        ] {
            let _ = family.remove_label_values(&labels);
        }
        for family in [&self.update_time, &self.version] {
            let _ = family.remove_label_values(&labels);
        }
        let _ = self.update_duration.remove_label_values(&labels);
        TextReadouts::global().remove(&format!(
            "extension_config_discovery.{stat_prefix}.{name}.version_text"
        ));
    }
}

/// Envoy's text readouts (a string per name, such as an xDS subscription's `version_text`),
/// under their Envoy names. Prometheus has no string metrics, so they show only in
/// `GET /stats` (first, as Envoy lists them), not on `/stats/prometheus` (nor does Envoy's
/// by default).
#[derive(Default)]
pub struct TextReadouts {
    by_name: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl TextReadouts {
    /// The process-wide instance.
    pub fn global() -> &'static TextReadouts {
        static READOUTS: OnceLock<TextReadouts> = OnceLock::new();
        READOUTS.get_or_init(TextReadouts::default)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, String>> {
        self.by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets `name` to `value`.
    pub fn set(&self, name: &str, value: &str) {
        self.lock().insert(name.to_owned(), value.to_owned());
    }

    /// Drops `name`.
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Every readout, sorted by name.
    pub fn all(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }
}

/// One text readout of [`TextReadouts`]: it exists (empty) once made, as Envoy's.
#[derive(Clone, Debug)]
pub struct TextReadout {
    name: String,
}

impl TextReadout {
    /// The readout `name` (an Envoy name), empty unless it has a value already.
    pub fn new(name: String) -> TextReadout {
        TextReadouts::global()
            .lock()
            .entry(name.clone())
            .or_default();
        TextReadout { name }
    }

    /// Sets its value.
    pub fn set(&self, value: &str) {
        TextReadouts::global().set(&self.name, value);
    }

    /// Its value now.
    pub fn get(&self) -> String {
        TextReadouts::global()
            .lock()
            .get(&self.name)
            .cloned()
            .unwrap_or_default()
    }
}

/// Stats of the running set of listeners ([`crate::listener::set`]), as Envoy's
/// `listener_manager.*` (`weir_listener_manager_*` here).
pub struct ListenerManagerStats {
    /// `weir_listener_manager_listener_added`: listeners added (at start and by reloads).
    pub listener_added: IntCounter,
    /// `weir_listener_manager_listener_removed`: listeners a reload removed.
    pub listener_removed: IntCounter,
    /// `weir_listener_manager_listener_modified`: listeners a reload replaced (same name, a
    /// new socket, TLS, QUIC or interception).
    pub listener_modified: IntCounter,
    /// `weir_listener_manager_total_listeners_active`: listeners of the config in force.
    pub total_listeners_active: IntGauge,
    /// `weir_listener_manager_total_listeners_draining`: removed or replaced listeners whose
    /// connections are still draining.
    pub total_listeners_draining: IntGauge,
}

impl ListenerManagerStats {
    /// The process-wide instance.
    pub fn global() -> &'static ListenerManagerStats {
        static LISTENERS: OnceLock<ListenerManagerStats> = OnceLock::new();
        LISTENERS.get_or_init(|| {
            let registry = Stats::global().registry();
            let counter = |name: &str, help: &str| {
                let counter = IntCounter::new(name, help)
                    .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
                if let Err(e) = registry.register(Box::new(counter.clone())) {
                    unreachable!("static metric {name} is registered once: {e}");
                }
                counter
            };
            let gauge = |name: &str, help: &str| {
                let gauge = IntGauge::new(name, help)
                    .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
                if let Err(e) = registry.register(Box::new(gauge.clone())) {
                    unreachable!("static metric {name} is registered once: {e}");
                }
                gauge
            };
            ListenerManagerStats {
                listener_added: counter(
                    "weir_listener_manager_listener_added",
                    "Listeners added, at start and by reloads.",
                ),
                listener_removed: counter(
                    "weir_listener_manager_listener_removed",
                    "Listeners a reload removed.",
                ),
                listener_modified: counter(
                    "weir_listener_manager_listener_modified",
                    "Listeners a reload replaced (same name; socket, TLS, QUIC or interception changed).",
                ),
                total_listeners_active: gauge(
                    "weir_listener_manager_total_listeners_active",
                    "Listeners of the config in force.",
                ),
                total_listeners_draining: gauge(
                    "weir_listener_manager_total_listeners_draining",
                    "Removed or replaced listeners whose connections are still draining.",
                ),
            }
        })
    }
}

/// The process-wide registry and every metric family in it.
pub struct Stats {
    registry: Registry,
    http: HttpFamilies,
    cluster: ClusterFamilies,
    tcp: TcpFamilies,
}

impl Stats {
    /// The process-wide instance, created on first use.
    pub fn global() -> &'static Stats {
        static STATS: OnceLock<Stats> = OnceLock::new();
        STATS.get_or_init(|| {
            let registry = Registry::new();
            Stats {
                http: HttpFamilies::register(&registry),
                cluster: ClusterFamilies::register(&registry),
                tcp: TcpFamilies::register(&registry),
                registry,
            }
        })
    }

    /// The registry, for modules that register families of their own (e.g. Wasm metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn prometheus_text(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a metric family with a bad name cannot
        // exist because every name above is static.
        if let Err(error) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out)
        {
            tracing::warn!(%error, "encoding stats");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A counter without labels, registered once in the process's registry.
pub(crate) fn counter(name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help)
        .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
    if let Err(e) = Stats::global()
        .registry()
        .register(Box::new(counter.clone()))
    {
        unreachable!("static metric {name} is registered once: {e}");
    }
    counter
}

/// A gauge without labels, registered once in the process's registry.
pub(crate) fn gauge(name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help)
        .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
    if let Err(e) = Stats::global().registry().register(Box::new(gauge.clone())) {
        unreachable!("static metric {name} is registered once: {e}");
    }
    gauge
}

pub(crate) fn register_counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
    if let Err(e) = registry.register(Box::new(family.clone())) {
        unreachable!("static metric {name} is registered once: {e}");
    }
    family
}

fn register_float_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    let gauge = prometheus::Gauge::new(name, help)
        .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
    if let Err(e) = registry.register(Box::new(gauge.clone())) {
        unreachable!("static metric {name} is registered once: {e}");
    }
    gauge
}

fn register_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let family = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
    if let Err(e) = registry.register(Box::new(family.clone())) {
        unreachable!("static metric {name} is registered once: {e}");
    }
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_envoy() {
        let http = HttpStats::new("ingress_http");
        http.rq_total.inc();
        http.count_response(204);
        http.count_response(999);
        let cluster = ClusterStats::new("backend");
        cluster.cx_overflow.inc();
        let text = Stats::global().prometheus_text();
        assert!(text.contains("weir_http_downstream_rq_total{stat_prefix=\"ingress_http\"} 1"));
        assert!(text.contains(
            "weir_http_downstream_rq_xx{response_code_class=\"2\",stat_prefix=\"ingress_http\"} 1"
        ));
        assert!(text.contains("weir_cluster_upstream_cx_overflow{cluster_name=\"backend\"} 1"));
    }
}
