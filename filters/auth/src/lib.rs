//! `auth`: lets a request through when it carries a configured API key (in a configured
//! header) or HTTP Basic credentials of a configured user; answers 401 with
//! `www-authenticate` otherwise. See README.md.

pub mod config;

use std::rc::Rc;

use weir_sdk::{Action, HttpContext, MapType, RootContext, hostcalls, log};

use crate::config::Config;

/// Holds the parsed configuration; without a valid one every request is refused.
#[derive(Default)]
pub struct Root {
    config: Option<Rc<Config>>,
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = weir_sdk::parsed_plugin_configuration("auth", Config::parse) else {
            return false;
        };
        self.config = Some(Rc::new(config));
        true
    }

    fn create_http_context(&mut self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            config: self.config.clone(),
        }))
    }
}

/// Checks one request.
struct Stream {
    config: Option<Rc<Config>>,
}

fn request_header(name: &str) -> Option<Vec<u8>> {
    match hostcalls::get_map_value(MapType::HttpRequestHeaders, name) {
        Ok(value) => value,
        Err(e) => {
            log::warn(&format!("auth: reading {name}: {e}"));
            None
        }
    }
}

fn strip(name: &str) {
    if let Err(e) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name) {
        log::warn(&format!("auth: removing {name}: {e}"));
    }
}

impl Stream {
    /// The header that authenticated the request, or `None` when nothing did.
    fn authenticated_by(&self, config: &Config) -> Option<String> {
        if let Some(api_key) = &config.api_key
            && request_header(&api_key.header).is_some_and(|key| config.accepts_api_key(&key))
        {
            return Some(api_key.header.clone());
        }
        if config.basic.is_some()
            && request_header("authorization").is_some_and(|auth| config.accepts_basic(&auth))
        {
            return Some("authorization".to_owned());
        }
        None
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(config) = self.config.clone() else {
            // No valid configuration (Envoy would not have loaded the plugin): fail closed.
            deny(&[]);
            return Action::Pause;
        };
        match self.authenticated_by(&config) {
            Some(header) => {
                if config.strip_credentials {
                    strip(&header);
                }
                Action::Continue
            }
            None => {
                deny(&config.challenges());
                Action::Pause
            }
        }
    }
}

/// Answers 401 with one `www-authenticate` header per challenge.
fn deny(challenges: &[String]) {
    let mut headers: Vec<(&str, &str)> = challenges
        .iter()
        .map(|c| ("www-authenticate", c.as_str()))
        .collect();
    headers.push(("content-type", "text/plain"));
    if let Err(e) =
        hostcalls::send_local_response(401, "auth_denied", &headers, b"unauthorized\n", None)
    {
        log::error(&format!("auth: sending 401: {e}"));
    }
}

weir_sdk::main!(|_root_id| Box::new(Root::default()));
// No body callback: an upgraded stream's payload need not come through this filter.
weir_sdk::headers_only!();
