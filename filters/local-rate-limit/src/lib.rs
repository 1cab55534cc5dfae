//! `local-rate-limit`: a token bucket kept in proxy-wasm shared data (so every worker's VM
//! draws from the same bucket), updated with a compare-and-swap loop; requests over the limit
//! get 429 with `retry-after`. See README.md.

pub mod bucket;

use std::rc::Rc;

use weir_sdk::{Action, HttpContext, RootContext, hostcalls, log};

use crate::bucket::{Bucket, Config, Decision, take};

/// How often to retry when another worker updated the bucket between our read and write.
const MAX_CAS_ATTEMPTS: usize = 16;

/// Holds the parsed configuration.
#[derive(Default)]
pub struct Root {
    config: Option<Rc<Config>>,
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = weir_sdk::parsed_plugin_configuration("local-rate-limit", Config::parse)
        else {
            return false;
        };
        self.config = Some(Rc::new(config));
        true
    }

    fn create_http_context(&mut self, _id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a configuration there is nothing to limit.
        let config = self.config.clone()?;
        Some(Box::new(Stream { config }))
    }
}

/// Takes a token for one request.
struct Stream {
    config: Rc<Config>,
}

/// Takes a token from the shared bucket. Host errors and a lost CAS race repeated
/// `MAX_CAS_ATTEMPTS` times fail open (allow), logged: a broken limiter must not take the
/// service down.
fn decide(config: &Config) -> Decision {
    let key = config.shared_key();
    for _ in 0..MAX_CAS_ATTEMPTS {
        let now = match hostcalls::get_current_time_nanos() {
            Ok(now) => now,
            Err(e) => {
                log::warn(&format!("local-rate-limit: clock: {e}; allowing"));
                return Decision::Allow;
            }
        };
        let (current, cas) = match hostcalls::get_shared_data(&key) {
            Ok(Some(data)) => (Bucket::decode(&data.value), Some(data.cas)),
            Ok(None) => (None, None),
            Err(e) => {
                log::warn(&format!("local-rate-limit: reading {key}: {e}; allowing"));
                return Decision::Allow;
            }
        };
        let (next, decision) = take(config, current, now);
        if current == Some(next) {
            // Denied without a refill: nothing to write.
            return decision;
        }
        match hostcalls::set_shared_data(&key, &next.encode(), cas) {
            Ok(()) => return decision,
            Err(e) if e.is_cas_mismatch() => continue,
            Err(e) => {
                log::warn(&format!("local-rate-limit: writing {key}: {e}; allowing"));
                return Decision::Allow;
            }
        }
    }
    log::warn("local-rate-limit: bucket too contended; allowing");
    Decision::Allow
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        match decide(&self.config) {
            Decision::Allow => Action::Continue,
            Decision::Deny { retry_after_secs } => {
                let retry_after = retry_after_secs.to_string();
                let headers = [
                    ("retry-after", retry_after.as_str()),
                    ("content-type", "text/plain"),
                ];
                if let Err(e) = hostcalls::send_local_response(
                    429,
                    "local_rate_limited",
                    &headers,
                    b"rate limited\n",
                    None,
                ) {
                    log::error(&format!("local-rate-limit: sending 429: {e}"));
                    return Action::Continue;
                }
                Action::Pause
            }
        }
    }
}

weir_sdk::main!(|_root_id| Box::new(Root::default()));
// No body callback: an upgraded stream's payload need not come through this filter.
weir_sdk::headers_only!();
