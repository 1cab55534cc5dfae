//! The properties a module reads with `proxy_get_property`, encoded as Envoy encodes them:
//! strings raw, integers 8 bytes little-endian, booleans 1 byte, timestamps as i64
//! nanoseconds, maps in the header-map wire format.
//!
//! Values a module set with `proxy_set_property` are found first, so they read back.

use super::context::{HeaderPairs, StreamData};
use super::state::HostState;
use std::time::SystemTime;

/// The value of the property at `path` (segments joined by NUL) in the effective context.
pub fn lookup(state: &HostState, path: &[u8]) -> Option<Vec<u8>> {
    let stream = state.streams.get(&state.effective_context);
    let set = match stream {
        Some(stream) => stream.properties.get(path),
        None => state.root_properties.get(path),
    };
    if let Some(value) = set {
        return Some(value.clone());
    }
    let segments: Vec<&[u8]> = path.split(|b| *b == 0).collect();
    let names: Vec<&str> = segments
        .iter()
        .map(|s| std::str::from_utf8(s).unwrap_or(""))
        .collect();
    let plugin = &state.plugin;
    match names.as_slice() {
        ["plugin_name"] => Some(plugin.name.as_bytes().to_vec()),
        ["plugin_root_id"] => Some(plugin.root_id.as_bytes().to_vec()),
        ["plugin_vm_id"] => Some(plugin.vm_id.as_bytes().to_vec()),
        ["node", "id"] => Some(plugin.node.id.as_bytes().to_vec()),
        ["node", "cluster"] => Some(plugin.node.cluster.as_bytes().to_vec()),
        _ => stream.and_then(|stream| stream_property(stream, &names)),
    }
}

fn header<'a>(headers: &'a HeaderPairs, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_ref())
}

fn int(value: i64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

fn nanos(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn map(headers: &HeaderPairs) -> Option<Vec<u8>> {
    super::abi::encode_map(headers).ok()
}

fn stream_property(stream: &StreamData, names: &[&str]) -> Option<Vec<u8>> {
    let request = &stream.request_headers;
    let info = &stream.info;
    let bytes = |value: Option<&[u8]>| value.map(<[u8]>::to_vec);
    match names {
        ["request", "path"] => bytes(header(request, ":path")),
        ["request", "url_path"] => header(request, ":path")
            .map(|path| path.split(|b| *b == b'?').next().unwrap_or(path).to_vec()),
        ["request", "query"] => header(request, ":path").map(|path| {
            path.iter()
                .position(|b| *b == b'?')
                .map_or(Vec::new(), |at| path[at + 1..].to_vec())
        }),
        ["request", "host"] => bytes(header(request, ":authority")),
        ["request", "method"] => bytes(header(request, ":method")),
        ["request", "scheme"] => bytes(header(request, ":scheme")),
        ["request", "id"] => bytes(header(request, "x-request-id")),
        ["request", "referer"] => bytes(header(request, "referer")),
        ["request", "useragent"] => bytes(header(request, "user-agent")),
        ["request", "protocol"] => Some(info.protocol.as_bytes().to_vec()),
        ["request", "time"] => Some(int(nanos(info.start))),
        ["request", "duration"] => {
            let elapsed = info.start.elapsed().unwrap_or_default();
            Some(int(i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)))
        }
        ["request", "headers"] => map(request),
        ["request", "headers", name] => bytes(header(request, &name.to_ascii_lowercase())),
        ["response", "code"] => header(&stream.response_headers, ":status")
            .and_then(|s| std::str::from_utf8(s).ok()?.parse::<i64>().ok())
            .map(int),
        ["response", "headers"] => map(&stream.response_headers),
        ["response", "headers", name] => {
            bytes(header(&stream.response_headers, &name.to_ascii_lowercase()))
        }
        ["response", "trailers"] => map(&stream.response_trailers),
        ["source", "address"] => Some(info.source.to_string().into_bytes()),
        ["source", "port"] => Some(int(i64::from(info.source.port()))),
        ["destination", "address"] => Some(info.destination.to_string().into_bytes()),
        ["destination", "port"] => Some(int(i64::from(info.destination.port()))),
        ["upstream", "address"] => upstream(info).map(|a| a.to_string().into_bytes()),
        ["upstream", "port"] => upstream(info).map(|a| int(i64::from(a.port()))),
        ["xds", "route_name"] | ["route_name"] => route(info).map(|r| r.name.into_bytes()),
        ["xds", "cluster_name"] => route(info).map(|r| r.cluster.into_bytes()),
        ["connection", "mtls"] => Some(vec![u8::from(info.mtls)]),
        ["connection", "tls_version"] if !info.tls => None,
        _ => None,
    }
}

fn route(info: &super::context::StreamInfo) -> Option<super::context::RouteProps> {
    info.route
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn upstream(info: &super::context::StreamInfo) -> Option<std::net::SocketAddr> {
    *info
        .upstream
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stores `value` at `path` in the effective context, for [`lookup`] to return.
pub fn set(state: &mut HostState, path: Vec<u8>, value: Vec<u8>) {
    let context = state.effective_context;
    match state.streams.get_mut(&context) {
        Some(stream) => {
            stream.properties.insert(path, value);
        }
        None => {
            state.root_properties.insert(path, value);
        }
    }
}
