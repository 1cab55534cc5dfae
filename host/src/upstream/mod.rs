//! Clusters, endpoints, load balancing, health checking, circuit breakers and pools.

pub mod spec;

pub use spec::*;
