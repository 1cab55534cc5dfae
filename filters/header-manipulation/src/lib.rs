//! `header-manipulation`: removes, sets and adds request and response headers as its JSON
//! plugin configuration says. See README.md.

pub mod config;

use std::rc::Rc;

use weir_sdk::{Action, HttpContext, MapType, RootContext, hostcalls, log};

use crate::config::{Config, Edits};

/// Holds the parsed configuration and hands it to every stream.
#[derive(Default)]
pub struct Root {
    config: Rc<Config>,
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) =
            weir_sdk::parsed_plugin_configuration("header-manipulation", Config::parse)
        else {
            return false;
        };
        self.config = Rc::new(config);
        true
    }

    fn create_http_context(&mut self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            config: self.config.clone(),
        }))
    }
}

/// Applies the edits to one stream.
struct Stream {
    config: Rc<Config>,
}

/// Applies `edits` to `map`; a failing host call is logged and the rest still applied.
fn apply(map: MapType, edits: &Edits) {
    let report = |what: &str, name: &str, r: weir_sdk::Result<()>| {
        if let Err(e) = r {
            log::warn(&format!("header-manipulation: {what} {name}: {e}"));
        }
    };
    for name in &edits.remove {
        report("remove", name, hostcalls::remove_map_value(map, name));
    }
    for (name, value) in &edits.set {
        report(
            "set",
            name,
            hostcalls::replace_map_value(map, name, value.as_bytes()),
        );
    }
    for header in &edits.add {
        report(
            "add",
            &header.name,
            hostcalls::add_map_value(map, &header.name, header.value.as_bytes()),
        );
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        apply(MapType::HttpRequestHeaders, &self.config.request);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        apply(MapType::HttpResponseHeaders, &self.config.response);
        Action::Continue
    }
}

weir_sdk::main!(|_root_id| Box::new(Root::default()));
// No body callback: an upgraded stream's payload need not come through this filter.
weir_sdk::headers_only!();
