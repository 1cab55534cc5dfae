//! Resolving STRICT_DNS and LOGICAL_DNS clusters, at start and every `dns_refresh_rate`.

use super::cluster::Cluster;
use super::spec::Discovery;
use std::net::SocketAddr;
use std::sync::Arc;

/// Resolves the cluster's names now and then every `dns_refresh_rate`; runs until aborted.
/// The first resolution, found or failed, lets the health checker start (see
/// `Cluster::first_resolution`).
pub async fn run(cluster: Arc<Cluster>) {
    loop {
        refresh(&cluster).await;
        cluster.set_resolved();
        tokio::time::sleep(cluster.spec.dns_refresh_rate).await;
    }
}

/// Resolves every endpoint and replaces the cluster's hosts; hosts no longer resolved are
/// removed and their connections drained. When a name fails to resolve the hosts stay as
/// they are (a DNS hiccup must not empty the cluster).
pub async fn refresh(cluster: &Cluster) {
    match resolve(cluster).await {
        Ok(resolved) => {
            let addrs: Vec<SocketAddr> = resolved.iter().map(|(addr, _)| *addr).collect();
            cluster.set_dns_names(resolved);
            cluster.set_host_addresses(&addrs);
        }
        Err(error) => {
            tracing::warn!(cluster = %cluster.name(), %error, "DNS resolution failed; keeping hosts");
        }
    }
}

/// Every address of every endpoint (STRICT_DNS) or the first of each (LOGICAL_DNS), each
/// with the name it was resolved from (as a Host value, for `auto_host_rewrite`).
async fn resolve(cluster: &Cluster) -> std::io::Result<Vec<(SocketAddr, http::HeaderValue)>> {
    let mut addrs = Vec::new();
    for endpoint in &cluster.spec.endpoints {
        let mut resolved =
            tokio::net::lookup_host((endpoint.address.as_str(), endpoint.port)).await?;
        let name = http::HeaderValue::from_str(&endpoint.address)
            .unwrap_or_else(|_| http::HeaderValue::from_static(""));
        match cluster.spec.discovery {
            Discovery::LogicalDns => addrs.extend(resolved.next().map(|a| (a, name.clone()))),
            Discovery::StrictDns | Discovery::Static | Discovery::OriginalDst => {
                addrs.extend(resolved.map(|a| (a, name.clone())))
            }
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::spec::EndpointSpec;

    #[tokio::test]
    async fn strict_dns_resolves_names_and_drops_gone_hosts() {
        let mut spec = crate::upstream::test_support::spec("dns_strict", &[]);
        spec.discovery = Discovery::StrictDns;
        spec.endpoints = vec![EndpointSpec {
            address: "localhost".into(),
            port: 8080,
            weight: 1,
            health: Default::default(),
            priority: 0,
        }];
        let Ok(cluster) = Cluster::new(spec) else {
            panic!("cluster builds")
        };
        assert!(
            cluster.hosts().is_empty(),
            "DNS hosts come from the first resolution"
        );
        let stale = Arc::new(crate::upstream::cluster::Host::new(SocketAddr::from((
            [10, 9, 9, 9],
            8080,
        ))));
        cluster.set_host_addresses(&[stale.addr]);
        let before = cluster.hosts()[0].clone();
        let resolved =
            tokio::time::timeout(std::time::Duration::from_secs(5), refresh(&cluster)).await;
        assert!(resolved.is_ok());
        let hosts = cluster.hosts();
        assert!(!hosts.is_empty());
        assert!(
            hosts
                .iter()
                .all(|host| host.addr.ip().is_loopback() && host.addr.port() == 8080)
        );
        assert!(
            before.is_removed(),
            "the host that no longer resolves is removed"
        );
    }
}
