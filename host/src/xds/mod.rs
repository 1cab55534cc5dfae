//! xDS: weir driven by a control plane (Istio, Envoy Gateway, go-control-plane) over ADS, the
//! aggregated discovery service, in state-of-the-world or delta form.
//!
//! The bootstrap file names the control plane (`dynamic_resources.ads_config`, a static cluster
//! speaking HTTP/2) and which resources come from it (`lds_config`, `cds_config`, an HCM's
//! `rds`, a cluster's `eds_cluster_config`, an HTTP filter's `config_discovery`). From there:
//!
//! 1. [`client`] holds the ADS stream: it subscribes per type (listeners and clusters as a
//!    wildcard; routes, endpoints and HTTP filter configs (ECDS) by the names the others ask
//!    for), hands each response to a [`client::Subscriber`], ACKs or NACKs it, and
//!    reconnects with a jittered back-off while the last good config keeps serving.
//! 2. [`resource`] reads one resource ([`proto`] decodes its protobuf into Envoy's JSON shape)
//!    into the same schema types the YAML file is read into, with the same checks and field
//!    paths: an invalid resource is NACKed with the error `weir validate` would give.
//! 3. [`state`] keeps the resources in force and assembles them with the bootstrap's static
//!    ones into one config, built by the same code as a file's (`snapshot`), and swapped in by
//!    the reloader: an unchanged cluster keeps its pools, listeners wait for their routes and
//!    their filters' ECDS configs, clusters for their endpoints (Envoy's warming). An ECDS
//!    update rebuilds the listeners whose filters use it, which loads the Wasm plugin anew as
//!    a reload does.
//! 4. `ecds_stats` counts Envoy's per-extension-config ECDS stats
//!    (`extension_config_discovery.<http_filter|network_filter>.<name>.*`) as the state
//!    applies, refuses, times out and loses the stream.
//!
//! It sits above `snapshot`, `upstream` (the control plane's cluster is dialled with the
//! cluster's own settings) and `reload` (whose reloader swaps the configs it makes in), and
//! below the binary, which starts it; `admin` reads what it made through the snapshot.

mod bootstrap_file;
pub mod client;
mod cluster_specs;
mod ecds_stats;
pub mod proto;
pub mod resource;
pub mod route_reuse;
pub mod state;
