//! `GET /clusters?format=json`: Envoy's `envoy.admin.v3.Clusters` as Envoy 1.40 writes it
//! (protobuf's JSON: fields in field-number order, a field at its default left out, 64-bit
//! values as decimal strings, pretty-printed with one space a level).
//!
//! Every figure is one weir keeps; what Envoy has and weir does not is left out rather than
//! written as 0: of a host's stats only `rq_total` (counter), `cx_active` and `rq_active`
//! (gauges) are there (no `cx_total`, `cx_connect_fail`, `rq_success`, `rq_error`,
//! `rq_timeout`, `rq_pending_active`), and there is no `locality`, `hostname`,
//! `success_rate`, nor `HIGH`-priority thresholds (weir has no high-priority routing).

use crate::upstream::spec::EndpointHealth;
use crate::upstream::{Cluster, ClusterManager};
use serde::Serialize;
use std::sync::atomic::Ordering;

/// The body of `/clusters?format=json` for `clusters`: those `added_via_api` names came from
/// the control plane (CDS).
pub fn render(clusters: &ClusterManager, added_via_api: &dyn Fn(&str) -> bool) -> String {
    let statuses = clusters
        .by_name()
        .into_iter()
        .map(|(name, cluster)| cluster_status(name, cluster, added_via_api(name)))
        .collect();
    let all = Clusters {
        cluster_statuses: statuses,
    };
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    if let Err(error) = all.serialize(&mut serializer) {
        tracing::warn!(%error, "admin: /clusters?format=json");
    }
    out.push(b'\n');
    String::from_utf8_lossy(&out).into_owned()
}

/// `envoy.admin.v3.Clusters`.
#[derive(Serialize)]
struct Clusters<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cluster_statuses: Vec<ClusterStatus<'a>>,
}

/// `envoy.admin.v3.ClusterStatus`.
#[derive(Serialize)]
struct ClusterStatus<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    added_via_api: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    host_statuses: Vec<HostStatus>,
    circuit_breakers: CircuitBreakers,
    /// weir has no `alt_stat_name`: the name.
    observability_name: &'a str,
}

/// `envoy.config.cluster.v3.CircuitBreakers`: the `DEFAULT` priority's thresholds only.
#[derive(Serialize)]
struct CircuitBreakers {
    thresholds: [Thresholds; 1],
}

/// `CircuitBreakers.Thresholds` of priority `DEFAULT` (0, so not written).
#[derive(Serialize)]
struct Thresholds {
    max_connections: u32,
    max_pending_requests: u32,
    max_requests: u32,
    max_retries: u32,
}

/// `envoy.admin.v3.HostStatus`.
#[derive(Serialize)]
struct HostStatus {
    address: Address,
    stats: Vec<SimpleMetric>,
    health_status: HostHealthStatus,
    #[serde(skip_serializing_if = "is_zero")]
    weight: u32,
    /// The host's priority level (0 not written).
    #[serde(skip_serializing_if = "is_zero")]
    priority: u32,
}

/// `envoy.config.core.v3.Address` with a `socket_address`.
#[derive(Serialize)]
struct Address {
    socket_address: SocketAddress,
}

/// `envoy.config.core.v3.SocketAddress`.
#[derive(Serialize)]
struct SocketAddress {
    address: String,
    port_value: u16,
}

/// `envoy.admin.v3.SimpleMetric`: `type` COUNTER (0) is not written, nor a value of 0.
#[derive(Serialize)]
struct SimpleMetric {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// uint64: a decimal string.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    name: &'static str,
}

impl SimpleMetric {
    fn counter(name: &'static str, value: u64) -> SimpleMetric {
        SimpleMetric {
            kind: None,
            value: (value != 0).then(|| value.to_string()),
            name,
        }
    }

    fn gauge(name: &'static str, value: i64) -> SimpleMetric {
        SimpleMetric {
            kind: Some("GAUGE"),
            ..SimpleMetric::counter(name, u64::try_from(value).unwrap_or(0))
        }
    }
}

/// `envoy.admin.v3.HostHealthStatus`: the flags set, and the EDS status always.
#[derive(Serialize)]
struct HostHealthStatus {
    #[serde(skip_serializing_if = "is_false")]
    failed_active_health_check: bool,
    #[serde(skip_serializing_if = "is_false")]
    failed_outlier_check: bool,
    eds_health_status: &'static str,
    #[serde(skip_serializing_if = "is_false")]
    failed_active_degraded_check: bool,
    #[serde(skip_serializing_if = "is_false")]
    pending_dynamic_removal: bool,
    #[serde(skip_serializing_if = "is_false")]
    pending_active_hc: bool,
    #[serde(skip_serializing_if = "is_false")]
    excluded_via_immediate_hc_fail: bool,
    #[serde(skip_serializing_if = "is_false")]
    active_hc_timeout: bool,
}

fn cluster_status<'a>(name: &'a str, cluster: &Cluster, added_via_api: bool) -> ClusterStatus<'a> {
    let thresholds = &cluster.spec.thresholds;
    // Envoy lists its hosts by priority level (its host sets in order).
    let mut hosts: Vec<_> = cluster.hosts().iter().cloned().collect();
    hosts.sort_by_key(|host| host.priority());
    let host_statuses = hosts
        .iter()
        .map(|host| HostStatus {
            address: Address {
                socket_address: SocketAddress {
                    address: host.addr.ip().to_string(),
                    port_value: host.addr.port(),
                },
            },
            // Envoy's order: counters, then gauges, each by name.
            stats: vec![
                SimpleMetric::counter("rq_total", host.rq_total.load(Ordering::Relaxed)),
                SimpleMetric::gauge("cx_active", host.cx_active.load(Ordering::Relaxed)),
                SimpleMetric::gauge("rq_active", host.rq_active.load(Ordering::Relaxed)),
            ],
            health_status: HostHealthStatus {
                failed_active_health_check: !host.is_healthy(),
                failed_outlier_check: host.outlier.is_ejected(),
                eds_health_status: match host.eds_health() {
                    EndpointHealth::Healthy => "HEALTHY",
                    EndpointHealth::Unhealthy => "UNHEALTHY",
                    EndpointHealth::Draining => "DRAINING",
                    EndpointHealth::Degraded => "DEGRADED",
                },
                failed_active_degraded_check: host.is_degraded_active_hc(),
                pending_dynamic_removal: host.is_pending_removal(),
                pending_active_hc: host.is_pending_first_check(),
                excluded_via_immediate_hc_fail: host.is_immediate_hc_fail(),
                active_hc_timeout: host.is_active_hc_timeout(),
            },
            weight: host.weight(),
            priority: host.priority(),
        })
        .collect();
    ClusterStatus {
        name,
        added_via_api,
        host_statuses,
        circuit_breakers: CircuitBreakers {
            thresholds: [Thresholds {
                max_connections: thresholds.max_connections,
                max_pending_requests: thresholds.max_pending_requests,
                max_requests: thresholds.max_requests,
                max_retries: thresholds.max_retries,
            }],
        },
        observability_name: name,
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(value: &bool) -> bool {
    !*value
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(value: &u32) -> bool {
    *value == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::test_support;

    #[test]
    fn envoy_shape_with_weir_figures() {
        let mut checked = test_support::spec("checked", &[8001, 8002]);
        checked.endpoints[0].weight = 3;
        checked.endpoints[1].health = EndpointHealth::Degraded;
        checked.thresholds.max_connections = 7;
        let Ok(manager) = ClusterManager::new(vec![checked, test_support::spec("empty", &[])])
        else {
            panic!("clusters");
        };
        let Some(cluster) = manager.cluster("checked") else {
            panic!("cluster");
        };
        let hosts = cluster.hosts();
        hosts[0].rq_total.store(12, Ordering::Relaxed);
        hosts[0].cx_active.store(2, Ordering::Relaxed);
        hosts[1].set_healthy(false);
        hosts[1].set_active_hc_timeout(true);

        let json = render(&manager, &|name| name == "empty");
        let expected = r#"{
 "cluster_statuses": [
  {
   "name": "checked",
   "host_statuses": [
    {
     "address": {
      "socket_address": {
       "address": "127.0.0.1",
       "port_value": 8001
      }
     },
     "stats": [
      {
       "value": "12",
       "name": "rq_total"
      },
      {
       "type": "GAUGE",
       "value": "2",
       "name": "cx_active"
      },
      {
       "type": "GAUGE",
       "name": "rq_active"
      }
     ],
     "health_status": {
      "eds_health_status": "HEALTHY"
     },
     "weight": 3
    },
    {
     "address": {
      "socket_address": {
       "address": "127.0.0.1",
       "port_value": 8002
      }
     },
     "stats": [
      {
       "name": "rq_total"
      },
      {
       "type": "GAUGE",
       "name": "cx_active"
      },
      {
       "type": "GAUGE",
       "name": "rq_active"
      }
     ],
     "health_status": {
      "failed_active_health_check": true,
      "eds_health_status": "DEGRADED",
      "active_hc_timeout": true
     },
     "weight": 1
    }
   ],
   "circuit_breakers": {
    "thresholds": [
     {
      "max_connections": 7,
      "max_pending_requests": 1024,
      "max_requests": 1024,
      "max_retries": 3
     }
    ]
   },
   "observability_name": "checked"
  },
  {
   "name": "empty",
   "added_via_api": true,
   "circuit_breakers": {
    "thresholds": [
     {
      "max_connections": 1024,
      "max_pending_requests": 1024,
      "max_requests": 1024,
      "max_retries": 3
     }
    ]
   },
   "observability_name": "empty"
  }
 ]
}
"#;
        assert_eq!(json, expected);
    }

    #[test]
    fn no_clusters_is_an_empty_object() {
        let Ok(manager) = ClusterManager::new(Vec::<crate::upstream::ClusterSpec>::new()) else {
            panic!("clusters");
        };
        assert_eq!(render(&manager, &|_| false), "{}\n");
    }
}
