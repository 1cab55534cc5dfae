//! The HTTP connection manager. A downstream connection runs under one driver
//! ([`driver`]: its stats, limits, drain, and each stream's way in and out) with a small
//! adapter per codec underneath (`server`: HTTP/1.1 on hyper, HTTP/2 on the `h2` crate in
//! `h2`; `h3`: HTTP/3 on `h3` + quinn). Every stream passes the phases listed in [`phases`],
//! which the manager implements in [`stream`] (with the filters of [`filter_chain`], the
//! upgrades and CONNECT of `upgrade`, and [`local_reply`]).

mod driver;
pub mod filter_chain;
mod h2;
mod h3;
pub mod headers;
mod health_check;
mod http10;
mod idle_clock;
pub mod local_reply;
pub mod mirror;
pub mod phases;
mod premature_reset;
mod request_body;
mod retry;
pub mod route_headers;
pub mod sanitize;
mod server;
pub mod stream;
mod tracked;
mod upgrade;

use crate::snapshot::HttpManagerConfig;
use crate::stats::HttpStats;
use crate::upstream::WorkerPools;
use arc_swap::ArcSwap;
pub use filter_chain::DEFAULT_BUFFER_LIMIT;
pub use h3::serve_h3_connection;
pub use server::{ConnectionTls, serve_connection, serve_connection_closing};
use std::sync::Arc;

/// The connection manager a listener runs on one worker now. A config reload stores a new one
/// (built from the new snapshot); each stream loads it once when it starts and keeps it to its
/// end, so streams in flight finish with the routes, filters and pools they started with. A
/// connection takes its codec settings, idle limits and stats label from the one in force when
/// it was accepted.
pub type CurrentManager = ArcSwap<HttpManager>;

/// One listener's HTTP connection manager on one worker.
pub struct HttpManager {
    config: Arc<HttpManagerConfig>,
    /// Shared (not cloned) by its connections: some 60 counters, each a pointer.
    stats: Arc<HttpStats>,
    pools: WorkerPools,
    codecs: server::Codecs,
    /// The Wasm `http_filters`, with this worker's VMs.
    filters: filter_chain::FilterChain,
    /// The chains of `upgrade_configs[].filters`, by upgrade type (lowercase); an upgrade of
    /// such a type runs its own chain instead of `filters`.
    upgrade_filters: Vec<(String, filter_chain::FilterChain)>,
    /// The `server` header of every response (`server_name`), checked once.
    server_header: Option<http::HeaderValue>,
    /// The bound on this worker's request copies (`request_mirror_policies`).
    mirrors: mirror::MirrorLimits,
}

impl HttpManager {
    /// A manager for `config` forwarding through this worker's `pools`.
    pub fn new(config: Arc<HttpManagerConfig>, pools: WorkerPools) -> Arc<HttpManager> {
        let stats = Arc::new(HttpStats::new(&config.stat_prefix));
        let codecs = server::Codecs::new(&config);
        let server_header = http::HeaderValue::from_str(&config.server_name).ok();
        let filters =
            filter_chain::FilterChain::new(&config.http_filters, &pools, config.buffer_limit)
                .with_names(config.http_filter_names.clone())
                .with_missing_config(config.missing_config.clone());
        let upgrade_filters = config
            .upgrades
            .iter()
            .filter_map(|u| {
                let chain = filter_chain::FilterChain::new(
                    u.filters.as_deref()?,
                    &pools,
                    config.buffer_limit,
                )
                .with_names(u.filter_names.clone())
                .with_missing_config(u.missing_config.clone());
                Some((u.upgrade_type.clone(), chain))
            })
            .collect();
        Arc::new(HttpManager {
            filters,
            upgrade_filters,

            config,
            stats,
            pools,
            codecs,
            server_header,
            mirrors: mirror::MirrorLimits::default(),
        })
    }

    /// The config it runs.
    pub fn config(&self) -> &HttpManagerConfig {
        &self.config
    }
}
