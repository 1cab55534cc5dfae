//! The client's life: connect, run a stream, and after it ends wait Envoy's jittered
//! back-off and connect again, forever, until shutdown. The resources in force stay in
//! force meanwhile (the subscriber holds them); only the connected state changes.

use super::backoff::{Backoff, Retries};
use super::stream::{End, stopped};
use super::transport::ControlPlane;
use super::{Subscriber, delta, node, sotw};
use crate::config::dynamic_resources::{AdsApi, XdsSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Between two warnings that the control plane is still unreachable: failed attempts in
/// between are logged at debug level only.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Runs the client until shutdown.
pub(super) async fn run(
    spec: XdsSpec,
    mut plane: ControlPlane,
    subscriber: Arc<dyn Subscriber>,
    mut shutdown: watch::Receiver<bool>,
    backoff: Backoff,
) {
    let node = node::node(&spec);
    let mut versions = sotw::Versions::default();
    let mut retries = Retries::new(backoff);
    let mut warnings = Warnings::default();
    tracing::info!(cluster = %plane.name(), api = ?spec.api, "xDS client started");
    loop {
        let client = tokio::select! {
            client = plane.connect() => client,
            () = stopped(&mut shutdown) => break,
        };
        match client {
            Err(error) => {
                subscriber.stream_failed();
                warnings.failed(plane.name(), &error.to_string());
            }
            Ok(client) => {
                let outcome = match spec.api {
                    AdsApi::StateOfTheWorld => {
                        sotw::run(
                            client,
                            &subscriber,
                            &node,
                            &spec.initial_metadata,
                            &mut versions,
                            &mut shutdown,
                        )
                        .await
                    }
                    AdsApi::Delta => {
                        delta::run(
                            client,
                            &subscriber,
                            &node,
                            &spec.initial_metadata,
                            &mut shutdown,
                        )
                        .await
                    }
                };
                if outcome.established {
                    subscriber.connected(false);
                }
                if outcome.responses > 0 {
                    retries.reset();
                }
                if matches!(outcome.end, End::Closed(_)) {
                    subscriber.stream_failed();
                }
                match outcome.end {
                    End::Shutdown => break,
                    // A stream that carried config was lost: a state change. One that
                    // ended before any response counts as a failed attempt, so a control
                    // plane that accepts and drops streams does not flood the log.
                    End::Closed(reason) if outcome.responses > 0 => {
                        warnings.lost(plane.name(), &reason)
                    }
                    End::Closed(reason) => warnings.failed(plane.name(), &reason),
                }
            }
        }
        let delay = retries.next_delay();
        tracing::debug!(cluster = %plane.name(), ?delay, "xDS: reconnecting after back-off");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    tracing::info!(cluster = %plane.name(), "xDS client stopped");
}

/// The warnings of a reconnect loop: one when a connection is lost, one when attempts
/// start failing, then at most one per [`WARNING_INTERVAL`] while they go on failing.
#[derive(Default)]
struct Warnings {
    /// Failed attempts since the last connection (or start).
    failures: u64,
    /// When the last warning of failed attempts was logged.
    last_warning: Option<Instant>,
}

impl Warnings {
    /// An established stream ended: a state change, always logged.
    fn lost(&mut self, cluster: &str, reason: &str) {
        tracing::warn!(%cluster, %reason, "xDS: connection to the control plane lost; the last config keeps serving");
        self.failures = 0;
        self.last_warning = None;
    }

    /// An attempt failed before its stream was answered.
    fn failed(&mut self, cluster: &str, reason: &str) {
        self.failures += 1;
        let due = self
            .last_warning
            .is_none_or(|last| last.elapsed() >= WARNING_INTERVAL);
        if due {
            self.last_warning = Some(Instant::now());
            tracing::warn!(%cluster, %reason, attempts = self.failures, "xDS: control plane unreachable; retrying with back-off");
        } else {
            tracing::debug!(%cluster, %reason, attempts = self.failures, "xDS: control plane unreachable");
        }
    }
}
