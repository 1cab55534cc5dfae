//! Clusters, endpoints, load balancing, health checking, circuit breakers and pools.
