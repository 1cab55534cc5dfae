//! The subset of Envoy's v3 bootstrap that weir reads, under one name.
//!
//! Each resource keeps its schema beside the code that reads it ([`super::bootstrap`],
//! [`super::listener`], [`super::http_manager`], [`super::route`], [`super::cluster`],
//! [`super::tls`], [`super::quic`], [`super::wasm`], ...); this module lists them all, so code
//! that reads a piece of the schema (route matching, the HTTP driver) names it as
//! `config::schema::X` wherever it lives.
//!
//! Every struct denies unknown fields, so a typo or an unsupported Envoy feature is an error
//! that names its path rather than something silently ignored. Fields whose `typed_config`
//! selects a type (`filters[]`, `http_filters[]`, `transport_socket`,
//! `typed_extension_protocol_options`) are read with the helpers of [`super::typed`].

pub use super::bootstrap::{Admin, Bootstrap, Node, StaticResources};
pub use super::cluster::{
    AutoHttpConfig, CircuitBreakers, Cluster, ClusterLoadAssignment, DiscoveryType,
    DnsLookupFamily, Endpoint, ExplicitHttpConfig, HealthCheck, HealthCheckCodec, HttpHealthCheck,
    LbEndpoint, LbPolicyName, LocalityLbEndpoints, RoutingPriority, Thresholds,
    UpstreamHttpProtocolOptions,
};
pub use super::common::{
    Address, DataSource, EmptyConfig, HeaderAppendAction, HeaderValue, HeaderValueOption,
    SocketAddress, SocketProtocol,
};
pub use super::http_manager::{
    CodecType, HttpConnectionManager, PathWithEscapedSlashesAction, UpgradeConfig,
};
pub use super::http_options::{
    CommonHttpProtocolOptions, HeadersWithUnderscoresAction, Http1ProtocolOptions,
    Http2ProtocolOptions,
};
pub use super::listener::{FilterChain, Listener, TcpProxy, TunnelingConfig};
pub use super::quic::{
    AlternateProtocolsCacheEntry, AlternateProtocolsCacheOptions, Http3ProtocolOptions,
    QuicListenerOptions, QuicProtocolOptions, UdpListenerConfig, UdpSocketConfig,
};
pub use super::route::{
    ClusterNotFoundResponseCode, ClusterWeight, ConnectConfig, DirectResponse, HeaderMatcher,
    QueryParameterMatcher, RedirectAction, RedirectResponseCode, RegexMatchAndSubstitute,
    RegexMatcher, RetryBackOff, RetryHostPredicate, RetryPolicy, Route, RouteAction,
    RouteConfiguration, RouteMatch, RouteUpgradeConfig, StringMatcher, TlsRequirementType,
    VirtualHost, WeightedClusters,
};
pub use super::route::{
    FractionalDenominator, FractionalPercent, RequestMirrorPolicy, RuntimeFractionalPercent,
};
pub use super::runtime::{LayeredRuntime, RuntimeLayer};
pub use super::tls::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, QuicDownstreamTransport,
    QuicUpstreamTransport, TlsCertificate, UpstreamTlsContext,
};
