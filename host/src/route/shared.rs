//! Route tables of the route configurations RDS delivers, built once per configuration.
//!
//! An xDS update builds the whole config anew (`xds::state`), and each build would build the
//! route table of every RDS route configuration held, changed or not, and the update's new one
//! twice (once to check it as it is read, once for the config). A configuration RDS delivered
//! is shared by `Arc` between the xDS state and every config built from it, so its table is
//! kept here by that identity and built again only for a new configuration.
//!
//! Only tables whose cluster names are not checked are kept (RDS's default, Envoy's
//! `validate_clusters: false`): such a table does not depend on the clusters of the config it
//! goes into. Each of its routes looks its cluster up when a request takes it and answers
//! `cluster_not_found_response_code` when it is missing, as a route RDS delivered before its
//! cluster does.

use super::RouteTable;
use crate::config::FieldError;
use crate::config::cluster_names::ClusterNames;
use crate::config::route::RouteConfiguration;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// The tables built, by the address of their configuration. The `Weak` keeps the address from
/// being reused while the entry is here; an entry whose configuration is gone is dropped at
/// the next insertion.
static TABLES: Mutex<Option<HashMap<usize, Entry>>> = Mutex::new(None);

struct Entry {
    config: Weak<RouteConfiguration>,
    table: Arc<RouteTable>,
}

/// The table of `config` with its cluster names unchecked, built on the first call for this
/// configuration and shared after; `path` names the configuration in an error.
pub fn unvalidated(
    config: &Arc<RouteConfiguration>,
    path: &str,
) -> Result<Arc<RouteTable>, FieldError> {
    let key = Arc::as_ptr(config) as usize;
    if let Some(entry) = lock().as_ref().and_then(|tables| tables.get(&key))
        && entry.config.strong_count() > 0
    {
        return Ok(entry.table.clone());
    }
    unvalidated_reusing(config, path, &|_, _| None)
}

/// Builds the table of `config` with its cluster names unchecked, taking the routes `reuse`
/// gives as they are (see [`RouteTable::build_validating_reusing`]; each must have been built
/// unchecked too), and keeps it for `config` as [`unvalidated`] does.
pub fn unvalidated_reusing(
    config: &Arc<RouteConfiguration>,
    path: &str,
    reuse: &dyn Fn(usize, usize) -> Option<super::Route>,
) -> Result<Arc<RouteTable>, FieldError> {
    let key = Arc::as_ptr(config) as usize;
    // Built outside the lock: a large table takes milliseconds, and a second build of the
    // same configuration meanwhile gives an equal table.
    let table = Arc::new(RouteTable::build_validating_reusing(
        config,
        path,
        &ClusterNames::default(),
        false,
        reuse,
    )?);
    let mut tables = lock();
    let tables = tables.get_or_insert_with(HashMap::new);
    tables.retain(|_, entry| entry.config.strong_count() > 0);
    tables.insert(
        key,
        Entry {
            config: Arc::downgrade(config),
            table: table.clone(),
        },
    );
    Ok(table)
}

fn lock() -> std::sync::MutexGuard<'static, Option<HashMap<usize, Entry>>> {
    TABLES.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(cluster: &str) -> Arc<RouteConfiguration> {
        let yaml = format!(
            "virtual_hosts: [{{name: v, domains: ['*'], routes: [{{match: {{prefix: /}}, route: {{cluster: {cluster}}}}}]}}]"
        );
        Arc::new(
            crate::config::parse_value(serde_yaml_ng::from_str(&yaml).expect("yaml"))
                .expect("routes"),
        )
    }

    #[test]
    fn a_configuration_is_built_once_and_its_table_dropped_with_it() {
        let config = routes("a");
        let first = unvalidated(&config, "rds").expect("builds");
        let again = unvalidated(&config, "rds").expect("builds");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same configuration is built once"
        );
        let other = unvalidated(&routes("a"), "rds").expect("builds");
        assert!(
            !Arc::ptr_eq(&first, &other),
            "an equal copy is another configuration"
        );
        drop(config);
        let _ = unvalidated(&routes("b"), "rds").expect("builds");
        let kept = lock().as_ref().is_some_and(|tables| {
            tables
                .values()
                .any(|entry| Arc::ptr_eq(&entry.table, &first))
        });
        assert!(!kept, "a table whose configuration is gone is dropped");
    }

    #[test]
    fn a_route_of_a_kept_table_checks_its_cluster_when_a_request_takes_it() {
        let table = unvalidated(&routes("not-yet"), "rds").expect("builds");
        let forward = table
            .virtual_hosts
            .iter()
            .flat_map(|vhost| vhost.routes.iter())
            .find_map(|route| match &route.action {
                super::super::RouteAction::Forward(action) => Some(action),
                _ => None,
            })
            .expect("a forward route");
        assert!(forward.cluster_unchecked);
    }
}
