//! One proxy of either kind for tests that run the same config through weir and Envoy 1.40
//! and compare what each did.

use crate::envoy::Envoy;
use crate::weir::Weir;
use serde_json::Value;

/// Which proxy a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// weir, one worker.
    Weir,
    /// Envoy 1.40 from PyPI, log level `info`.
    Envoy,
}

/// A running proxy of either kind; dropped, it stops.
pub enum Proxy {
    /// A weir process.
    Weir(Box<Weir>),
    /// An Envoy process.
    Envoy(Box<Envoy>),
}

impl Proxy {
    /// Starts `kind` on `config` (weir with `--concurrency 1`).
    pub fn spawn(kind: Kind, config: &Value) -> Proxy {
        match kind {
            Kind::Weir => Proxy::Weir(Box::new(Weir::spawn(config, &["--concurrency", "1"]))),
            Kind::Envoy => Proxy::Envoy(Box::new(Envoy::spawn(config, "info"))),
        }
    }

    /// `GET path` on its admin listener: the body (empty when it does not answer).
    pub async fn admin(&self, path: &str) -> String {
        match self {
            Proxy::Weir(weir) => weir.admin_get(path).await.1,
            Proxy::Envoy(envoy) => envoy.admin_get(path).await.unwrap_or_default().1,
        }
    }

    /// What it logged, for a failure's message.
    pub fn log_report(&self) -> String {
        match self {
            Proxy::Weir(weir) => weir.log_report(),
            Proxy::Envoy(envoy) => envoy.log_report(),
        }
    }
}
