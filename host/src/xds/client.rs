//! The ADS stream to the control plane (state-of-the-world and delta).
//!
//! The client knows nothing of what resources mean: it hands each response to a
//! [`Subscriber`], which reads and applies it (or refuses it, with the reason the NACK
//! carries), and asks it which names to subscribe to per type.
//!
//! [`spawn`] starts it: [`transport`] dials the control plane's cluster, [`sotw`] or
//! [`delta`] runs one stream (subscribe, ACK or NACK each response, follow the interest),
//! and [`supervisor`] reconnects with a jittered back-off ([`backoff`]) while the last
//! config keeps serving, until the shutdown signal.

mod backoff;
mod delta;
mod node;
mod sotw;
mod stream;
mod supervisor;
mod transport;

pub use backoff::Backoff;
pub use stream::{MAX_NACK_MESSAGE_BYTES, NACK_CODE};

use super::resource::ResourceType;
use crate::config::cluster_spec::ClusterSpec;
use crate::config::dynamic_resources::XdsSpec;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The largest gRPC message accepted from the control plane: 64 MiB. gRPC's default of 4 MiB
/// is exceeded by the state-of-the-world CDS and EDS responses of large meshes (Envoy sets
/// no limit by default); a bound is kept so a hostile server cannot make weir allocate
/// without end.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The most resources (and, in delta, removed names) one response may carry; a response
/// with more is NACKed. Large meshes have tens of thousands of clusters in one response.
pub const MAX_RESOURCES_PER_RESPONSE: usize = 100_000;

/// The most names one subscription may carry; a larger interest is cut to this many names
/// (in name order) with an error logged.
pub const MAX_NAMES_PER_SUBSCRIPTION: usize = 100_000;

/// Which resources of a type to ask for.
///
/// A type whose interest is `Names` of nothing is not subscribed at all until it asks for
/// something (no request goes out); once subscribed, an empty list unsubscribes every name.
/// A wildcard goes out as an empty names list (the legacy wildcard every server knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    /// All the control plane has (listeners, clusters).
    Wildcard,
    /// These names (route configurations named by listeners, endpoints named by clusters).
    Names(BTreeSet<String>),
}

/// One resource as the control plane sent it.
#[derive(Debug, Clone)]
pub struct RawResource {
    /// Its name where the response gives it (delta); `None` in state-of-the-world, where the
    /// name is inside the resource.
    pub name: Option<String>,
    /// Its version where the response gives it (delta); empty otherwise.
    pub version: String,
    /// The protobuf bytes of the resource (the `value` of its `Any`).
    pub body: bytes::Bytes,
}

/// One response's resources of one type.
#[derive(Debug, Clone)]
pub struct Update {
    /// Their type.
    pub kind: ResourceType,
    /// The response's version (`version_info`, or delta's `system_version_info`).
    pub version: String,
    /// Resources added or changed.
    pub resources: Vec<RawResource>,
    /// Names removed (delta's `removed_resources`).
    pub removed: Vec<String>,
    /// State-of-the-world: `resources` is every resource of the type the subscription covers,
    /// so one held and not in it is removed (for a wildcard type; for a named type, names not
    /// in the response are kept, as Envoy does for RDS and EDS).
    pub state_of_the_world: bool,
}

/// Why a response was refused: the text of the NACK's `error_detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// What the client feeds (see the module docs); `state::XdsState` in weir.
pub trait Subscriber: Send + Sync + 'static {
    /// Reads and applies one response; `Err` NACKs it and keeps what was in force.
    fn apply(
        &self,
        update: Update,
    ) -> Pin<Box<dyn Future<Output = Result<(), Rejected>> + Send + '_>>;

    /// The names of `kind` to subscribe to now; asked at start, on every reconnect and after
    /// every applied response (a new listener may name a new route configuration).
    fn interest(&self, kind: ResourceType) -> Interest;

    /// The stream is up (`true`) or down (`false`); for `control_plane.connected_state`.
    fn connected(&self, up: bool) {
        let _ = up;
    }

    /// The ADS stream failed: an established stream was lost, or an attempt to open one
    /// failed (not a shutdown). Envoy counts it in each subscription's `update_failure`.
    fn stream_failed(&self) {}

    /// A signal the subscriber sends (`watch::Sender::send_replace(())`) when its interest
    /// changed outside a response (a timer that stops waiting for a cluster's endpoints, say):
    /// the client then asks [`Subscriber::interest`] of every type again. Taken once per
    /// stream. The default (`None`): interest changes only with applied responses.
    fn interest_changes(&self) -> Option<watch::Receiver<()>> {
        None
    }

    /// The resources of `kind` held now, name to version: sent as a delta stream's
    /// `initial_resource_versions` on (re)connect, so the control plane sends only what
    /// changed while it was away. The default holds none (everything is sent again).
    fn held_versions(&self, kind: ResourceType) -> HashMap<String, String> {
        let _ = kind;
        HashMap::new()
    }
}

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control plane's cluster cannot be dialled (its TLS files, its addresses).
    #[error("xDS cluster {cluster:?}: {source}")]
    Cluster {
        /// `ads_config`'s cluster.
        cluster: String,
        /// What is wrong with it.
        source: crate::upstream::UpstreamError,
    },
}

/// Starts the ADS client on the current tokio runtime: it dials `cluster` (the static
/// cluster `spec.ads_cluster` names), runs the stream `spec.api` says, feeds `subscriber`,
/// and reconnects with Envoy's back-off (see [`Backoff`]) until `shutdown` turns `true` (or
/// its sender is dropped). The task ends promptly then.
pub fn spawn(
    spec: XdsSpec,
    cluster: ClusterSpec,
    subscriber: Arc<dyn Subscriber>,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ClientError> {
    spawn_with_backoff(spec, cluster, subscriber, shutdown, Backoff::default())
}

/// [`spawn`] with another back-off (tests shorten it).
pub fn spawn_with_backoff(
    spec: XdsSpec,
    cluster: ClusterSpec,
    subscriber: Arc<dyn Subscriber>,
    shutdown: watch::Receiver<bool>,
    backoff: Backoff,
) -> Result<JoinHandle<()>, ClientError> {
    let name = cluster.name.clone();
    let plane = transport::ControlPlane::new(cluster).map_err(|source| ClientError::Cluster {
        cluster: name,
        source,
    })?;
    Ok(tokio::spawn(supervisor::run(
        spec, plane, subscriber, shutdown, backoff,
    )))
}
