//! `GET /stats`: every counter and gauge under the name Envoy gives it, in Envoy's text
//! format (`cluster.backend.upstream_rq_total: 5`, one per line, sorted) or, with
//! `?format=json`, Envoy's JSON (`{"stats": [{"name": ..., "value": ...}]}`).
//!
//! weir keeps its stats in Prometheus families with the scope as a label (see
//! [`crate::stats`]); Envoy's own names are the inverse of Envoy's Prometheus conversion:
//! `weir_http_downstream_rq_total{stat_prefix="ingress"}` is `http.ingress.downstream_rq_total`,
//! `weir_cluster_upstream_rq_xx{cluster_name="b",response_code_class="2"}` is
//! `cluster.b.upstream_rq_2xx`, `weir_tcp_*{stat_prefix}` is `tcp.<prefix>.*`,
//! `weir_extension_config_discovery_*{stat_prefix,extension_config_name}` is
//! `extension_config_discovery.<stat_prefix>.<name>.*` (ECDS, per filter config). A cluster's
//! stats that Envoy keeps outside `upstream_` have Envoy's names:
//! `cluster.b.health_check.{attempt,success,failure,network_failure,healthy}` (only for a
//! cluster with health checks, see [`retain_health_checked`]), `cluster.b.membership_{healthy,
//! total,degraded,excluded,change}`, `cluster.b.lb_healthy_panic`. Stats Envoy
//! does not have keep weir's family name under `weir.`, with their label values appended
//! (`weir.accel_splices_total.kernel`). Histograms are left out of the text (only
//! `/stats/prometheus` shows them).

use prometheus::proto::{MetricFamily, MetricType};
use std::fmt::Write as _;

/// One stat under its Envoy name.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoyStat {
    /// The dotted name.
    pub name: String,
    /// Its value (counters and integer gauges are whole numbers).
    pub value: f64,
}

/// Every counter and gauge of `families`, named as Envoy names them, sorted by name.
pub fn collect(families: &[MetricFamily]) -> Vec<EnvoyStat> {
    let mut stats = Vec::new();
    for family in families {
        let kind = family.get_field_type();
        for metric in family.get_metric() {
            let value = match kind {
                MetricType::COUNTER => metric.get_counter().get_value(),
                MetricType::GAUGE => metric.get_gauge().get_value(),
                _ => continue,
            };
            let labels: Vec<(&str, &str)> = metric
                .get_label()
                .iter()
                .map(|pair| (pair.name(), pair.value()))
                .collect();
            stats.push(EnvoyStat {
                name: envoy_name(family.name(), &labels),
                value,
            });
        }
    }
    stats.sort_by(|a, b| a.name.cmp(&b.name));
    stats
}

/// The Envoy name of the metric `family{labels}` (see the module docs).
pub fn envoy_name(family: &str, labels: &[(&str, &str)]) -> String {
    let label = |name: &str| {
        labels
            .iter()
            .find(|(label, _)| *label == name)
            .map(|(_, value)| *value)
    };
    // The response class counters are one family with a class label in weir, one stat per
    // class in Envoy.
    let with_class = |stem: &str| match label("response_code_class") {
        Some(class) => format!("{}_{class}xx", stem.trim_end_matches("_xx")),
        None => stem.to_owned(),
    };
    // A cluster's stats that Envoy does not name `upstream_*`.
    if let (Some(rest), Some(cluster)) = (
        family.strip_prefix("weir_cluster_upstream_"),
        label("cluster_name"),
    ) {
        if let Some(check) = rest.strip_prefix("health_check_") {
            return format!("cluster.{cluster}.health_check.{check}");
        }
        if rest.starts_with("membership_") || rest == "lb_healthy_panic" {
            return format!("cluster.{cluster}.{rest}");
        }
    }
    let scoped = [
        (
            "weir_cluster_outlier_detection_",
            "cluster_name",
            "cluster",
            "outlier_detection.",
        ),
        (
            "weir_http_downstream_",
            "stat_prefix",
            "http",
            "downstream_",
        ),
        (
            "weir_cluster_upstream_",
            "cluster_name",
            "cluster",
            "upstream_",
        ),
        ("weir_tcp_", "stat_prefix", "tcp", ""),
    ];
    for (family_prefix, scope_label, scope, stem_prefix) in scoped {
        if let (Some(rest), Some(scope_value)) =
            (family.strip_prefix(family_prefix), label(scope_label))
        {
            return format!(
                "{scope}.{scope_value}.{}",
                with_class(&format!("{stem_prefix}{rest}"))
            );
        }
    }
    // ECDS keeps one scope per extension config, named by the kind of filter asking.
    if let (Some(rest), Some(prefix), Some(name)) = (
        family.strip_prefix("weir_extension_config_discovery_"),
        label("stat_prefix"),
        label("extension_config_name"),
    ) {
        return format!("extension_config_discovery.{prefix}.{name}.{rest}");
    }
    if let Some(rest) = family.strip_prefix("weir_xds_") {
        // Envoy keeps CDS under the cluster manager and LDS under the listener manager.
        match label("type") {
            // Envoy 1.40 counts no empty updates: weir's own.
            Some(kind) if rest == "update_empty" => return format!("weir.xds.{kind}.{rest}"),
            Some("cds") => return format!("cluster_manager.cds.{rest}"),
            Some("lds") => return format!("listener_manager.lds.{rest}"),
            Some(other) => return format!("weir.xds.{other}.{rest}"),
            None => {}
        }
    }
    if family == "weir_control_plane_connected_state" {
        return "control_plane.connected_state".to_owned();
    }
    if let Some(rest) = family.strip_prefix("weir_listener_manager_") {
        return format!("listener_manager.{rest}");
    }
    if let Some(rest) = family.strip_prefix("weir_access_logs_file_") {
        return format!("access_logs.file.{rest}");
    }
    let mut name = format!("weir.{}", family.strip_prefix("weir_").unwrap_or(family));
    for (_, value) in labels {
        name.push('.');
        name.push_str(value);
    }
    name
}

/// Leaves out `cluster.<name>.health_check.*` of the clusters `checked` says have no health
/// checks: Envoy has those stats only for a cluster with a health checker.
pub fn retain_health_checked(stats: &mut Vec<EnvoyStat>, checked: impl Fn(&str) -> bool) {
    stats.retain(|stat| {
        match stat
            .name
            .strip_prefix("cluster.")
            .and_then(|rest| rest.rsplit_once(".health_check."))
        {
            Some((cluster, _)) => checked(cluster),
            None => true,
        }
    });
}

/// A text readout (Envoy's string stats, `version_text`): name and value.
pub type Readout = (String, String);

/// Envoy's text format, for the names `filter` matches: the text readouts first
/// (`name: "value"`), then `name: value` lines.
pub fn text(readouts: &[Readout], stats: &[EnvoyStat], filter: Option<&regex::Regex>) -> String {
    let mut out = String::new();
    for (name, value) in matching_readouts(readouts, filter) {
        let _ = writeln!(out, "{name}: \"{value}\"");
    }
    for stat in matching(stats, filter) {
        match exact_version(stat, readouts) {
            Some(version) => {
                let _ = writeln!(out, "{}: {version}", stat.name);
            }
            None => {
                let _ = writeln!(out, "{}: {}", stat.name, number(stat.value));
            }
        }
    }
    out
}

/// Envoy's `version` gauge of a subscription is the xxHash64 of its `version_text`: an
/// unsigned 64-bit value, which the registry's `f64` cannot hold exactly. Where the stat
/// is such a gauge, set (non-zero: a version was applied), and its `_text` readout is
/// there, the exact value is computed from the text.
fn exact_version(stat: &EnvoyStat, readouts: &[Readout]) -> Option<u64> {
    if stat.value == 0.0 || !stat.name.ends_with(".version") {
        return None;
    }
    let text_name = format!("{}_text", stat.name);
    readouts
        .iter()
        .find(|(name, _)| *name == text_name)
        .map(|(_, text)| xxhash_rust::xxh64::xxh64(text.as_bytes(), 0))
}

/// Envoy's JSON format: `{"stats": [{"name": ..., "value": ...}, ...]}`, the text readouts
/// (string values) first.
pub fn json(
    readouts: &[Readout],
    stats: &[EnvoyStat],
    filter: Option<&regex::Regex>,
) -> serde_json::Value {
    let texts = matching_readouts(readouts, filter)
        .map(|(name, value)| serde_json::json!({ "name": name, "value": value }));
    let entries: Vec<serde_json::Value> = texts
        .chain(matching(stats, filter).map(|stat| {
            let value = if let Some(version) = exact_version(stat, readouts) {
                serde_json::json!(version)
            } else if stat.value.fract() == 0.0 && stat.value.abs() < 9.0e15 {
                serde_json::json!(stat.value as i64)
            } else {
                serde_json::json!(stat.value)
            };
            serde_json::json!({ "name": stat.name, "value": value })
        }))
        .collect();
    serde_json::json!({ "stats": entries })
}

fn matching_readouts<'a>(
    readouts: &'a [Readout],
    filter: Option<&'a regex::Regex>,
) -> impl Iterator<Item = &'a Readout> {
    readouts
        .iter()
        .filter(move |(name, _)| filter.is_none_or(|re| re.is_match(name)))
}

fn matching<'a>(
    stats: &'a [EnvoyStat],
    filter: Option<&'a regex::Regex>,
) -> impl Iterator<Item = &'a EnvoyStat> {
    stats
        .iter()
        .filter(move |stat| filter.is_none_or(|re| re.is_match(&stat.name)))
}

/// A whole number without a fraction, as Envoy prints counters and gauges.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_families_get_envoy_names() {
        assert_eq!(
            envoy_name(
                "weir_http_downstream_rq_total",
                &[("stat_prefix", "ingress")]
            ),
            "http.ingress.downstream_rq_total"
        );
        assert_eq!(
            envoy_name(
                "weir_http_downstream_rq_xx",
                &[("response_code_class", "2"), ("stat_prefix", "ingress")]
            ),
            "http.ingress.downstream_rq_2xx"
        );
        assert_eq!(
            envoy_name(
                "weir_cluster_upstream_rq_xx",
                &[("cluster_name", "backend"), ("response_code_class", "5")]
            ),
            "cluster.backend.upstream_rq_5xx"
        );
        assert_eq!(
            envoy_name("weir_listener_manager_listener_removed", &[]),
            "listener_manager.listener_removed"
        );
        assert_eq!(
            envoy_name(
                "weir_cluster_upstream_cx_overflow",
                &[("cluster_name", "b")]
            ),
            "cluster.b.upstream_cx_overflow"
        );
        assert_eq!(
            envoy_name("weir_tcp_downstream_cx_total", &[("stat_prefix", "tcp_in")]),
            "tcp.tcp_in.downstream_cx_total"
        );
        assert_eq!(
            envoy_name(
                "weir_extension_config_discovery_config_reload",
                &[
                    ("extension_config_name", "headers-ecds"),
                    ("stat_prefix", "http_filter")
                ]
            ),
            "extension_config_discovery.http_filter.headers-ecds.config_reload"
        );
        assert_eq!(
            envoy_name(
                "weir_extension_config_discovery_update_attempt",
                &[
                    ("extension_config_name", "guard"),
                    ("stat_prefix", "network_filter")
                ]
            ),
            "extension_config_discovery.network_filter.guard.update_attempt"
        );
        assert_eq!(
            envoy_name("weir_xds_update_failure", &[("type", "lds")]),
            "listener_manager.lds.update_failure"
        );
        assert_eq!(
            envoy_name("weir_xds_update_empty", &[("type", "cds")]),
            "weir.xds.cds.update_empty"
        );
        assert_eq!(
            envoy_name("weir_accel_splices_total", &[("mode", "kernel")]),
            "weir.accel_splices_total.kernel"
        );
        for (family, envoy) in [
            ("health_check_attempt", "health_check.attempt"),
            (
                "health_check_network_failure",
                "health_check.network_failure",
            ),
            ("health_check_healthy", "health_check.healthy"),
            ("membership_healthy", "membership_healthy"),
            ("membership_total", "membership_total"),
            ("membership_excluded", "membership_excluded"),
            ("membership_change", "membership_change"),
            ("lb_healthy_panic", "lb_healthy_panic"),
        ] {
            assert_eq!(
                envoy_name(
                    &format!("weir_cluster_upstream_{family}"),
                    &[("cluster_name", "b.x")]
                ),
                format!("cluster.b.x.{envoy}")
            );
        }
    }

    #[test]
    fn health_check_stats_only_for_checked_clusters() {
        let stat = |name: &str| EnvoyStat {
            name: name.into(),
            value: 0.0,
        };
        let mut stats = vec![
            stat("cluster.a.b.health_check.attempt"),
            stat("cluster.c.health_check.attempt"),
            stat("cluster.c.membership_total"),
        ];
        retain_health_checked(&mut stats, |cluster| cluster == "a.b");
        let names: Vec<&str> = stats.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cluster.a.b.health_check.attempt",
                "cluster.c.membership_total"
            ]
        );
    }

    #[test]
    fn text_and_json_follow_envoy_and_the_filter() {
        let stats = vec![
            EnvoyStat {
                name: "cluster.b.upstream_rq_total".into(),
                value: 5.0,
            },
            EnvoyStat {
                name: "http.in.downstream_rq_total".into(),
                value: 7.0,
            },
        ];
        assert_eq!(
            text(&[], &stats, None),
            "cluster.b.upstream_rq_total: 5\nhttp.in.downstream_rq_total: 7\n"
        );
        let only = regex::Regex::new("^cluster\\.").unwrap();
        assert_eq!(
            text(&[], &stats, Some(&only)),
            "cluster.b.upstream_rq_total: 5\n"
        );
        assert_eq!(
            json(&[], &stats, Some(&only)),
            serde_json::json!({"stats": [{"name": "cluster.b.upstream_rq_total", "value": 5}]})
        );
        // Text readouts come first, their values quoted, as Envoy lists them.
        let readouts = vec![(
            "cluster_manager.cds.version_text".to_owned(),
            "7".to_owned(),
        )];
        let only = regex::Regex::new("^cluster").unwrap();
        assert_eq!(
            text(&readouts, &stats, Some(&only)),
            "cluster_manager.cds.version_text: \"7\"\ncluster.b.upstream_rq_total: 5\n"
        );
        assert_eq!(
            json(&readouts, &stats, Some(&only)),
            serde_json::json!({"stats": [
                {"name": "cluster_manager.cds.version_text", "value": "7"},
                {"name": "cluster.b.upstream_rq_total", "value": 5}
            ]})
        );
    }

    #[test]
    fn a_version_gauge_prints_the_xxhash_of_its_text_as_envoy() {
        let readouts = vec![(
            "cluster_manager.cds.version_text".to_owned(),
            "7".to_owned(),
        )];
        let stat = |name: &str, value: f64| EnvoyStat {
            name: name.to_owned(),
            value,
        };
        let stats = vec![
            stat("cluster_manager.cds.version", 1.0),
            stat("listener_manager.lds.version", 0.0),
        ];
        // xxHash64("7", seed 0), as Envoy's `HashUtil::xxHash64`.
        let want = xxhash_rust::xxh64::xxh64(b"7", 0);
        assert_eq!(
            text(&readouts, &stats, None),
            format!(
                "cluster_manager.cds.version_text: \"7\"\ncluster_manager.cds.version: {want}\nlistener_manager.lds.version: 0\n"
            )
        );
        assert_eq!(
            json(&readouts, &stats, None)["stats"][1]["value"],
            serde_json::json!(want)
        );
    }

    #[test]
    fn collects_the_registry_sorted() {
        let http = crate::stats::HttpStats::new("envoy_stats_test");
        http.rq_total.inc();
        http.count_response(200);
        let stats = collect(&crate::stats::Stats::global().registry().gather());
        let names: Vec<&str> = stats.iter().map(|s| s.name.as_str()).collect();
        assert!(names.windows(2).all(|w| w[0] <= w[1]), "sorted");
        let find = |name: &str| stats.iter().find(|s| s.name == name).map(|s| s.value);
        assert_eq!(find("http.envoy_stats_test.downstream_rq_total"), Some(1.0));
        assert_eq!(find("http.envoy_stats_test.downstream_rq_2xx"), Some(1.0));
    }
}
