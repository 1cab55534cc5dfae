//! The ADS stream to the control plane (state-of-the-world and delta).
//!
//! The client knows nothing of what resources mean: it hands each response to a
//! [`Subscriber`], which reads and applies it (or refuses it, with the reason the NACK
//! carries), and asks it which names to subscribe to per type.

use super::resource::ResourceType;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

/// Which resources of a type to ask for.
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
}
