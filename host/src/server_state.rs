//! Process-wide states an operator sets through the admin API and the data path reads:
//! whether the server fails its health checks (`POST /healthcheck/fail`, undone by
//! `POST /healthcheck/ok`), as Envoy's `healthCheckFailed()`.
//!
//! While it is failed, the `envoy.filters.http.health_check` filter answers 503, every
//! connection manager closes its connections after the response in flight (Envoy's drain
//! close: `connection: close` on HTTP/1.1, GOAWAY on HTTP/2 and HTTP/3) and `/ready` says
//! `DRAINING`.

use std::sync::atomic::{AtomicBool, Ordering};

static HEALTH_CHECK_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether the server fails its health checks now.
pub fn health_check_failed() -> bool {
    HEALTH_CHECK_FAILED.load(Ordering::Relaxed)
}

/// Fails (true) or passes (false) the server's health checks; returns the state before.
pub fn set_health_check_failed(failed: bool) -> bool {
    HEALTH_CHECK_FAILED.swap(failed, Ordering::Relaxed)
}
