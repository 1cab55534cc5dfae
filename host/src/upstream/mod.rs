//! Clusters, endpoints, load balancing, health checking, circuit breakers and connection
//! pools: everything between the router and an upstream host.
//!
//! [`ClusterManager`] is built once per config snapshot and shared by all workers; each
//! worker sends through its own [`WorkerPools`].

mod alt_svc;
mod cluster;
pub mod connect;
mod dns;
mod error;
mod extensions;
mod hash_lb;
mod health;
mod lb;
mod manager;
pub mod mark;
mod original_dst;
pub mod outlier;
mod pool;
mod priority;
mod quic;
/// The cluster as plain data: read by [`crate::config::cluster`] and kept under this name for
/// the modules that import it from here.
pub mod spec {
    pub use super::extensions::*;
    pub use crate::config::cluster_spec::*;
}
mod tls;
pub mod tunnel;

#[cfg(test)]
pub(crate) mod test_support;

/// The xDS client (`xds::client`) dials the control plane's cluster with the pools' own
/// connect (timeout, TLS, ALPN) and DNS resolution.
pub use cluster::{Cluster, RetrySlot};
pub(crate) use dns::refresh as resolve_dns;
pub use error::UpstreamError;
pub use manager::ClusterManager;
pub use pool::{RawConnection, RawGuard, WorkerPools};
pub use spec::*;
