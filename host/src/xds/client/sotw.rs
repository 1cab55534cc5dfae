//! One state-of-the-world stream (`StreamAggregatedResources`): each response holds every
//! resource of its type; a request carries the full names list, the last accepted version
//! of its type and the last nonce received for it.

use super::stream::{
    self, Outcome, QueueClosed, REQUEST_QUEUE, RESOURCE_WRAPPER, asks_for_something, call,
    check_count, error_detail, outgoing,
};
use super::transport::AdsClient;
use super::{Interest, RawResource, Rejected, Subscriber, Update};
use crate::xds::resource::ResourceType;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse, Resource,
};
use prost::Message;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// What the state-of-the-world client keeps across streams: the version accepted last per
/// type, sent again on reconnect so an unchanged control plane need not resend.
#[derive(Debug, Default)]
pub(super) struct Versions(HashMap<ResourceType, String>);

impl Versions {
    fn of(&self, kind: ResourceType) -> String {
        self.0.get(&kind).cloned().unwrap_or_default()
    }
}

/// One type's subscription on this stream.
struct Subscription {
    /// The interest the last request for the type expressed.
    interest: Interest,
    /// The nonce of the last response of the type.
    nonce: String,
}

/// One stream's state.
struct SotwStream<'a> {
    subscriber: &'a Arc<dyn Subscriber>,
    versions: &'a mut Versions,
    subscriptions: HashMap<ResourceType, Subscription>,
    /// The node, until the first request takes it.
    node: Option<Node>,
    queue: mpsc::Sender<DiscoveryRequest>,
}

/// Runs one stream on `client` until it ends or shutdown is asked for.
pub(super) async fn run(
    mut client: AdsClient,
    subscriber: &Arc<dyn Subscriber>,
    node: &Node,
    metadata: &[(String, String)],
    versions: &mut Versions,
    shutdown: &mut watch::Receiver<bool>,
) -> Outcome {
    let (queue, requests) = mpsc::channel(REQUEST_QUEUE);
    let mut stream = SotwStream {
        subscriber,
        versions,
        subscriptions: HashMap::new(),
        node: Some(node.clone()),
        queue,
    };
    let call = client.stream_aggregated_resources(call(outgoing(requests), metadata));
    stream::drive(&mut stream, call, shutdown).await
}

impl stream::Form for SotwStream<'_> {
    type Response = DiscoveryResponse;

    fn subscriber(&self) -> &Arc<dyn Subscriber> {
        self.subscriber
    }

    fn follow(&mut self) -> impl Future<Output = Result<(), QueueClosed>> + Send {
        self.follow_all()
    }

    fn respond(
        &mut self,
        response: DiscoveryResponse,
    ) -> impl Future<Output = Result<(), QueueClosed>> + Send {
        self.handle(response)
    }
}

impl SotwStream<'_> {
    /// Applies one response, ACKs or NACKs it, and follows the interest of every type.
    async fn handle(&mut self, response: DiscoveryResponse) -> Result<(), QueueClosed> {
        let kind = ResourceType::from_type_url(&response.type_url);
        let update = match kind {
            None => Err(format!("unknown type URL {:?}", response.type_url)),
            Some(kind) if !self.subscriptions.contains_key(&kind) => Err(format!(
                "a response of type {:?}, which weir did not subscribe to",
                response.type_url
            )),
            Some(kind) => read(kind, &response),
        };
        let (kind, update) = match (kind, update) {
            (Some(kind), Ok(update)) => (kind, update),
            (kind, update) => {
                let reason = update.err().unwrap_or_default();
                return self.refuse(kind, response, reason).await;
            }
        };
        let version = update.version.clone();
        let applied = self.subscriber.apply(update).await;
        let interest = self.subscriber.interest(kind);
        let names = stream::names(kind, &interest, &[]);
        self.subscriptions.insert(
            kind,
            Subscription {
                interest,
                nonce: response.nonce.clone(),
            },
        );
        let request = match applied {
            Ok(()) => {
                tracing::debug!(type = kind.short_name(), %version, "xDS response accepted");
                self.versions.0.insert(kind, version.clone());
                DiscoveryRequest {
                    version_info: version,
                    resource_names: names,
                    type_url: response.type_url,
                    response_nonce: response.nonce,
                    ..DiscoveryRequest::default()
                }
            }
            Err(Rejected(reason)) => {
                tracing::warn!(type = kind.short_name(), %version, %reason, "xDS response rejected");
                DiscoveryRequest {
                    version_info: self.versions.of(kind),
                    resource_names: names,
                    type_url: response.type_url,
                    response_nonce: response.nonce,
                    error_detail: Some(error_detail(reason)),
                    ..DiscoveryRequest::default()
                }
            }
        };
        // As Envoy: what the response made wanted (a cluster's endpoints) is subscribed
        // before the response is ACKed.
        for other in ResourceType::ALL {
            if other != kind {
                self.follow_interest(other).await?;
            }
        }
        self.send(request).await
    }

    /// NACKs a response that could not be read: the last accepted version of its type, the
    /// reason in `error_detail`.
    async fn refuse(
        &mut self,
        kind: Option<ResourceType>,
        response: DiscoveryResponse,
        reason: String,
    ) -> Result<(), QueueClosed> {
        tracing::warn!(type_url = %response.type_url, version = %response.version_info, %reason, "xDS response rejected");
        let subscribed = kind.and_then(|kind| Some((kind, self.subscriptions.get_mut(&kind)?)));
        let (names, version) = match subscribed {
            Some((kind, subscription)) => {
                subscription.nonce = response.nonce.clone();
                (
                    stream::names(kind, &subscription.interest, &[]),
                    self.versions.of(kind),
                )
            }
            None => (
                Vec::new(),
                kind.map(|kind| self.versions.of(kind)).unwrap_or_default(),
            ),
        };
        self.send(DiscoveryRequest {
            version_info: version,
            resource_names: names,
            type_url: response.type_url,
            response_nonce: response.nonce,
            error_detail: Some(error_detail(reason)),
            ..DiscoveryRequest::default()
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

    /// Sends a new subscription for `kind` when its interest changed since the last request
    /// (or was never sent and asks for something).
    async fn follow_interest(&mut self, kind: ResourceType) -> Result<(), QueueClosed> {
        let interest = self.subscriber.interest(kind);
        let nonce = match self.subscriptions.get(&kind) {
            Some(subscription) if subscription.interest == interest => return Ok(()),
            Some(subscription) => subscription.nonce.clone(),
            None if !asks_for_something(&interest) => return Ok(()),
            None => String::new(),
        };
        let request = DiscoveryRequest {
            version_info: self.versions.of(kind),
            resource_names: stream::names(kind, &interest, &[]),
            type_url: kind.type_url().to_owned(),
            response_nonce: nonce.clone(),
            ..DiscoveryRequest::default()
        };
        self.subscriptions
            .insert(kind, Subscription { interest, nonce });
        self.send(request).await
    }

    /// Queues `request`, with the node when it is the stream's first.
    async fn send(&mut self, mut request: DiscoveryRequest) -> Result<(), QueueClosed> {
        request.node = self.node.take();
        self.queue.send(request).await.map_err(|_| QueueClosed)
    }
}

/// The resources of a response of `kind`, each checked to be of that type (bare, or wrapped
/// in a `Resource` with its name and version).
fn read(kind: ResourceType, response: &DiscoveryResponse) -> Result<Update, String> {
    check_count(response.resources.len())?;
    let mut resources = Vec::with_capacity(response.resources.len());
    for (index, any) in response.resources.iter().enumerate() {
        if any.type_url == RESOURCE_WRAPPER {
            let wrapper = Resource::decode(any.value.as_slice())
                .map_err(|e| format!("resources[{index}]: not a Resource: {e}"))?;
            // A wrapper without a resource only refreshes a TTL: nothing changes.
            let Some(inner) = wrapper.resource else {
                continue;
            };
            check_type(index, &inner.type_url, &response.type_url)?;
            resources.push(RawResource {
                name: Some(wrapper.name),
                version: wrapper.version,
                body: inner.value.into(),
            });
        } else {
            check_type(index, &any.type_url, &response.type_url)?;
            resources.push(RawResource {
                name: None,
                version: String::new(),
                body: any.value.clone().into(),
            });
        }
    }
    Ok(Update {
        kind,
        version: response.version_info.clone(),
        resources,
        removed: Vec::new(),
        state_of_the_world: true,
    })
}

/// A resource's type URL must be its response's.
pub(super) fn check_type(index: usize, type_url: &str, expected: &str) -> Result<(), String> {
    if type_url != expected {
        return Err(format!(
            "resources[{index}]: type {type_url:?} does not match the response's type {expected:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    fn response(type_url: &str, resources: Vec<Any>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: "7".into(),
            type_url: type_url.into(),
            resources,
            nonce: "n".into(),
            ..DiscoveryResponse::default()
        }
    }

    #[test]
    fn reads_bare_and_wrapped_resources_of_the_response_type() {
        let kind = ResourceType::Cluster;
        let bare = Any {
            type_url: kind.type_url().into(),
            value: vec![1, 2],
        };
        let wrapped = Any {
            type_url: RESOURCE_WRAPPER.into(),
            value: Resource {
                name: "c2".into(),
                version: "v2".into(),
                resource: Some(Any {
                    type_url: kind.type_url().into(),
                    value: vec![3],
                }),
                ..Resource::default()
            }
            .encode_to_vec(),
        };
        let heartbeat = Any {
            type_url: RESOURCE_WRAPPER.into(),
            value: Resource {
                name: "c3".into(),
                ..Resource::default()
            }
            .encode_to_vec(),
        };
        let Ok(update) = read(
            kind,
            &response(kind.type_url(), vec![bare, wrapped, heartbeat]),
        ) else {
            panic!("a valid response reads")
        };
        assert_eq!(update.version, "7");
        assert!(update.state_of_the_world);
        assert_eq!(
            update.resources.len(),
            2,
            "the TTL heartbeat carries nothing"
        );
        assert_eq!(update.resources[0].name, None);
        assert_eq!(&update.resources[0].body[..], &[1, 2]);
        assert_eq!(update.resources[1].name.as_deref(), Some("c2"));
        assert_eq!(update.resources[1].version, "v2");
    }

    #[test]
    fn a_resource_of_another_type_is_refused_naming_its_index() {
        let kind = ResourceType::Listener;
        let wrong = Any {
            type_url: ResourceType::Cluster.type_url().into(),
            value: Vec::new(),
        };
        let Err(reason) = read(kind, &response(kind.type_url(), vec![wrong])) else {
            panic!("a cluster in an LDS response is refused")
        };
        assert!(reason.starts_with("resources[0]: type"), "{reason}");
    }

    #[test]
    fn too_many_resources_are_refused() {
        let kind = ResourceType::Listener;
        let any = Any {
            type_url: kind.type_url().into(),
            value: Vec::new(),
        };
        let many = vec![any; super::super::MAX_RESOURCES_PER_RESPONSE + 1];
        let Err(reason) = read(kind, &response(kind.type_url(), many)) else {
            panic!("over the limit is refused")
        };
        assert!(reason.contains("over weir's limit"), "{reason}");
    }
}
