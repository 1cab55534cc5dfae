//! One delta stream (`DeltaAggregatedResources`): responses hold what changed and what was
//! removed; requests subscribe and unsubscribe names, and ACK or NACK by nonce alone. On a
//! new stream the resources held are announced (`initial_resource_versions`) so the control
//! plane sends only what changed while it was away.

use super::sotw::check_type;
use super::stream::{
    self, Outcome, QueueClosed, REQUEST_QUEUE, asks_for_something, bounded_names, call,
    check_count, error_detail, outgoing,
};
use super::transport::AdsClient;
use super::{Interest, RawResource, Rejected, Subscriber, Update};
use crate::xds::resource::ResourceType;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// The name that stands for "every resource of the type" in a delta subscription.
const WILDCARD: &str = "*";

/// One stream's state.
struct DeltaStream<'a> {
    subscriber: &'a Arc<dyn Subscriber>,
    /// The interest the last request of each type expressed.
    subscriptions: HashMap<ResourceType, Interest>,
    /// The node, until the first request takes it.
    node: Option<Node>,
    queue: mpsc::Sender<DeltaDiscoveryRequest>,
}

/// Runs one stream on `client` until it ends or shutdown is asked for.
pub(super) async fn run(
    mut client: AdsClient,
    subscriber: &Arc<dyn Subscriber>,
    node: &Node,
    metadata: &[(String, String)],
    shutdown: &mut watch::Receiver<bool>,
) -> Outcome {
    let (queue, requests) = mpsc::channel(REQUEST_QUEUE);
    let mut stream = DeltaStream {
        subscriber,
        subscriptions: HashMap::new(),
        node: Some(node.clone()),
        queue,
    };
    let call = client.delta_aggregated_resources(call(outgoing(requests), metadata));
    stream::drive(&mut stream, call, shutdown).await
}

impl stream::Form for DeltaStream<'_> {
    type Response = DeltaDiscoveryResponse;

    fn subscriber(&self) -> &Arc<dyn Subscriber> {
        self.subscriber
    }

    fn follow(&mut self) -> impl Future<Output = Result<(), QueueClosed>> + Send {
        self.follow_all()
    }

    fn respond(
        &mut self,
        response: DeltaDiscoveryResponse,
    ) -> impl Future<Output = Result<(), QueueClosed>> + Send {
        self.handle(response)
    }
}

impl DeltaStream<'_> {
    /// Applies one response, ACKs or NACKs it, and follows the interest of every type.
    async fn handle(&mut self, response: DeltaDiscoveryResponse) -> Result<(), QueueClosed> {
        let read = match ResourceType::from_type_url(&response.type_url) {
            None => Err(format!("unknown type URL {:?}", response.type_url)),
            Some(kind) if !self.subscriptions.contains_key(&kind) => Err(format!(
                "a response of type {:?}, which weir did not subscribe to",
                response.type_url
            )),
            Some(kind) => read(kind, &response),
        };
        let applied = match read {
            Ok(update) => {
                let (kind, version) = (update.kind, update.version.clone());
                let applied = self.subscriber.apply(update).await;
                match &applied {
                    Ok(()) => {
                        tracing::debug!(type = kind.short_name(), %version, "xDS response accepted")
                    }
                    Err(Rejected(reason)) => {
                        tracing::warn!(type = kind.short_name(), %version, %reason, "xDS response rejected")
                    }
                }
                applied.map_err(|Rejected(reason)| reason)
            }
            Err(reason) => {
                tracing::warn!(type_url = %response.type_url, version = %response.system_version_info, %reason, "xDS response rejected");
                Err(reason)
            }
        };
        // As Envoy: what the response made wanted (a cluster's endpoints) is subscribed
        // before the response is ACKed.
        self.follow_all().await?;
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url,
            response_nonce: response.nonce,
            error_detail: applied.err().map(error_detail),
            ..DeltaDiscoveryRequest::default()
        })
        .await
    }

    /// Follows the interest of every type, in Envoy's order.
    async fn follow_all(&mut self) -> Result<(), QueueClosed> {
        for kind in ResourceType::ALL {
            self.follow_interest(kind).await?;
        }
        Ok(())
    }

    /// Subscribes and unsubscribes what changed in `kind`'s interest since the last request
    /// (or, the first time, subscribes with the versions held).
    async fn follow_interest(&mut self, kind: ResourceType) -> Result<(), QueueClosed> {
        let interest = self.subscriber.interest(kind);
        let request = match self.subscriptions.get(&kind) {
            Some(sent) if *sent == interest => return Ok(()),
            None if !asks_for_something(&interest) => return Ok(()),
            // The first request of a type: a wildcard is an empty list (understood by every
            // server, older ones included), and what is held goes along.
            None => DeltaDiscoveryRequest {
                resource_names_subscribe: stream::names(kind, &interest, &[]),
                initial_resource_versions: self.subscriber.held_versions(kind),
                ..DeltaDiscoveryRequest::default()
            },
            Some(sent) => {
                let (subscribe, unsubscribe) = changes(kind, sent, &interest);
                DeltaDiscoveryRequest {
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    ..DeltaDiscoveryRequest::default()
                }
            }
        };
        self.subscriptions.insert(kind, interest);
        self.send(DeltaDiscoveryRequest {
            type_url: kind.type_url().to_owned(),
            ..request
        })
        .await
    }

    /// Queues `request`, with the node when it is the stream's first.
    async fn send(&mut self, mut request: DeltaDiscoveryRequest) -> Result<(), QueueClosed> {
        request.node = self.node.take();
        self.queue.send(request).await.map_err(|_| QueueClosed)
    }
}

/// The names to subscribe and unsubscribe to go from `sent` to `now`.
fn changes(kind: ResourceType, sent: &Interest, now: &Interest) -> (Vec<String>, Vec<String>) {
    let set = |interest: &Interest| match interest {
        Interest::Wildcard => BTreeSet::from([WILDCARD.to_owned()]),
        Interest::Names(names) => names.clone(),
    };
    let (before, after) = (set(sent), set(now));
    let subscribe: Vec<&String> = after.difference(&before).collect();
    let unsubscribe: Vec<&String> = before.difference(&after).collect();
    (
        bounded_names(kind, subscribe.into_iter()),
        bounded_names(kind, unsubscribe.into_iter()),
    )
}

/// The resources and removals of a response of `kind`, each resource checked to be of that
/// type.
fn read(kind: ResourceType, response: &DeltaDiscoveryResponse) -> Result<Update, String> {
    check_count(
        response
            .resources
            .len()
            .saturating_add(response.removed_resources.len()),
    )?;
    let mut resources = Vec::with_capacity(response.resources.len());
    for (index, resource) in response.resources.iter().enumerate() {
        // A resource without its body only refreshes a TTL: nothing changes.
        let Some(any) = &resource.resource else {
            continue;
        };
        check_type(index, &any.type_url, &response.type_url)?;
        resources.push(RawResource {
            name: Some(resource.name.clone()),
            version: resource.version.clone(),
            body: any.value.clone().into(),
        });
    }
    Ok(Update {
        kind,
        version: response.system_version_info.clone(),
        resources,
        removed: response.removed_resources.clone(),
        state_of_the_world: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Interest {
        Interest::Names(list.iter().map(|name| (*name).to_owned()).collect())
    }

    #[test]
    fn changes_subscribe_the_new_names_and_unsubscribe_the_gone() {
        let kind = ResourceType::RouteConfiguration;
        let (subscribe, unsubscribe) = changes(kind, &names(&["a", "b"]), &names(&["b", "c"]));
        assert_eq!(subscribe, ["c"]);
        assert_eq!(unsubscribe, ["a"]);
        let (subscribe, unsubscribe) = changes(kind, &Interest::Wildcard, &names(&["a"]));
        assert_eq!(subscribe, ["a"]);
        assert_eq!(unsubscribe, [WILDCARD]);
    }
}
