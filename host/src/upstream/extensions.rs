//! What the request path leaves in a request's or a response's extensions for the upstream
//! side (and what the upstream side leaves for filters): the original destination of a
//! redirected connection, `auto_host_rewrite`, and the host a response came from.

/// Where a downstream connection was headed before iptables/nftables redirected it to weir.
///
/// The listener reads it (`SO_ORIGINAL_DST`, or the local address under TPROXY) and the HTTP
/// connection manager puts it in each upstream request's extensions, where an `ORIGINAL_DST`
/// cluster finds the host to send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginalDestination(pub std::net::SocketAddr);

/// On an upstream request: the route's `auto_host_rewrite`. Where the host picked for it has a
/// DNS name (an endpoint of a STRICT_DNS or LOGICAL_DNS cluster), [`super::WorkerPools::send`]
/// puts that name in its Host header, as Envoy does; a host without one (STATIC,
/// ORIGINAL_DST) leaves the Host as it is, as in Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoHostRewrite;

/// The host of a cluster a response came from, in that response's extensions (set by
/// [`super::WorkerPools::send`]), for the `upstream.address` property of Wasm filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamAddress(pub std::net::SocketAddr);

/// On an upstream request: the hash the route's `hash_policy` computed for it, which a
/// RING_HASH or MAGLEV cluster picks its host by (other policies ignore it). A request without
/// one goes to a random host, as in Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbHashKey(pub u64);

/// On an upstream request: where [`super::WorkerPools::send`] notes the host it picked, so
/// that the router, when the route's timeout ends the request, can tell outlier detection
/// which host timed out ([`super::WorkerPools::record_timeout`]).
#[derive(Debug, Clone, Default)]
pub struct PickedHostNote(pub std::sync::Arc<std::sync::OnceLock<std::net::SocketAddr>>);
