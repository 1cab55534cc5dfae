//! What a reload cannot change while weir runs: the admin address, the Wasm services of
//! `bootstrap_extensions` and the process settings. A change to any of those is refused with
//! the reason; a restart applies it. (Listeners follow the config: see
//! [`crate::listener::set`].)

use crate::snapshot::Config;

/// Why going from `old` to `new` needs a restart, or `None` when a reload can apply it.
pub fn restart_needed(old: &Config, new: &Config) -> Option<String> {
    if old.admin != new.admin {
        return Some(format!(
            "admin.address changed ({} -> {})",
            show(old.admin),
            show(new.admin)
        ));
    }
    let services = |config: &Config| {
        config
            .wasm_services
            .iter()
            .map(|service| service.identity)
            .collect::<Vec<_>>()
    };
    if services(old) != services(new) {
        // Envoy reads bootstrap_extensions once, at start; its services run until exit.
        return Some(
            "bootstrap_extensions changed (a Wasm service's module, configuration or singleton); \
             the running services are kept"
                .to_string(),
        );
    }
    if old.process_settings != new.process_settings {
        // Read once when the process starts (the Wasm engine, the cache, the file watcher).
        return Some(
            "bootstrap_extensions changed (weir.config.v1.ProcessSettings); the settings in force are kept"
                .to_string(),
        );
    }
    None
}

fn show(address: Option<std::net::SocketAddr>) -> String {
    address.map_or_else(|| "none".to_string(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::restart_needed;
    use crate::snapshot::{Config, load_str};

    fn config(port: u16, route_body: &str, cluster_port: u16) -> Config {
        let text = format!(
            r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 9901 }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/direct" }}
                direct_response: {{ status: 200, body: {{ inline_string: "{route_body}" }} }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: backend }}
          http_filters:
          - name: envoy.filters.http.router
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {cluster_port} }} }} }}
"#
        );
        match load_str(&text, "t.yaml") {
            Ok(config) => config,
            Err(error) => panic!("test config: {error}"),
        }
    }

    #[test]
    fn routes_clusters_and_listeners_reload_the_admin_needs_a_restart() {
        let running = config(8080, "a", 9000);
        assert_eq!(restart_needed(&running, &config(8080, "b", 9001)), None);
        assert_eq!(restart_needed(&running, &config(8081, "a", 9000)), None);
        let mut fewer = config(8080, "a", 9000);
        fewer.listeners.clear();
        assert_eq!(restart_needed(&running, &fewer), None);
        let mut no_admin = config(8080, "a", 9000);
        no_admin.admin = None;
        let admin = restart_needed(&running, &no_admin);
        assert_eq!(
            admin.as_deref(),
            Some("admin.address changed (127.0.0.1:9901 -> none)")
        );
    }
}
