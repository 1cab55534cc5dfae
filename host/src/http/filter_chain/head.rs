//! Between hyper's heads and the ABI's header maps, and the responses the chain makes itself.

use super::HeadChanges;
use crate::body::{self, Body};
use crate::route::split::ClusterChoice;
use crate::route::{PickedCluster, Route, RouteAction, RouteTable};
use crate::wasm::{HeaderEdit, HeaderPairs, LocalResponse, RouteProps};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};

/// The route `request` matches, as properties show it. A `weighted_clusters` route picks its
/// cluster the first time, and the pick rides on the request ([`PickedCluster`]): the filters
/// see one `cluster_name` all along, and the router sends there, as in Envoy (where the route
/// holds its pick for the stream). A `cluster_header` route reads its header each time.
pub(super) fn route_props_picked<B>(
    routes: &RouteTable,
    request: &mut Request<B>,
) -> Option<RouteProps> {
    let (props, picked) = {
        let route = find_route(routes, request)?;
        let picked = match &route.action {
            RouteAction::Forward(action) => match action.choice.as_deref() {
                // The same pick as `ForwardAction::for_request`, without copying the action.
                Some(choice @ ClusterChoice::Weighted(_)) => {
                    let earlier = request.extensions().get::<PickedCluster>();
                    let cluster = earlier
                        .and_then(|earlier| choice.repick(&earlier.0))
                        .map_or_else(|| choice.cluster(request.headers()), |(name, _)| name);
                    Some(cluster.to_owned())
                }
                _ => None,
            },
            _ => None,
        };
        let mut props = props_of(route, request.headers());
        if let Some(picked) = &picked {
            props.cluster.clone_from(picked);
        }
        (props, picked)
    };
    if let Some(picked) = picked {
        request.extensions_mut().insert(PickedCluster(picked));
    }
    Some(props)
}

pub(super) fn find_route<'a, B>(routes: &'a RouteTable, request: &Request<B>) -> Option<&'a Route> {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers().get(http::header::HOST)?.to_str().ok())?;
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    routes.find(host, path, request.headers())
}

/// A route's properties; a `cluster_header` route's cluster is the header's.
fn props_of(route: &Route, headers: &HeaderMap) -> RouteProps {
    RouteProps {
        name: route.name.clone().unwrap_or_default(),
        cluster: match &route.action {
            RouteAction::Forward(action) => match action.choice.as_deref() {
                Some(choice @ ClusterChoice::Header(_)) => choice.cluster(headers).to_owned(),
                _ => action.cluster.clone(),
            },
            RouteAction::Direct { .. } | RouteAction::Redirect(_) => String::new(),
        },
    }
}

fn pair(name: &str, value: impl Into<Bytes>) -> (String, Bytes) {
    (name.to_string(), value.into())
}

/// The request head as the ABI's map: `:method`, `:scheme`, `:authority`, `:path`, headers;
/// `:protocol` for an extended CONNECT (RFC 8441, 9220), which a filter reads to tell a
/// WebSocket over HTTP/2 or HTTP/3; no `:path` for a plain CONNECT, whose target is the
/// authority.
pub(super) fn request_pairs(parts: &http::request::Parts) -> HeaderPairs {
    let mut pairs = Vec::with_capacity(parts.headers.len() + 4);
    pairs.push(pair(
        ":method",
        Bytes::copy_from_slice(parts.method.as_str().as_bytes()),
    ));
    let scheme = parts.uri.scheme_str().unwrap_or("http");
    pairs.push(pair(":scheme", Bytes::copy_from_slice(scheme.as_bytes())));
    let authority = parts
        .uri
        .authority()
        .map(|a| Bytes::copy_from_slice(a.as_str().as_bytes()))
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .map(|h| Bytes::copy_from_slice(h.as_bytes()))
        })
        .unwrap_or_default();
    pairs.push(pair(":authority", authority));
    let protocol = parts
        .extensions
        .get::<crate::wire::Protocol>()
        .map(crate::wire::Protocol::as_str);
    match parts.uri.path_and_query() {
        None if parts.method == Method::CONNECT && protocol.is_none() => {}
        path => {
            let path = path.map_or("/", |p| p.as_str());
            pairs.push(pair(":path", Bytes::copy_from_slice(path.as_bytes())));
        }
    }
    if let Some(protocol) = protocol {
        pairs.push(pair(
            ":protocol",
            Bytes::copy_from_slice(protocol.as_bytes()),
        ));
    }
    pairs.extend(crate::wasm::context::pairs_of(&parts.headers).filter(|(name, _)| name != "host"));
    pairs
}

/// Puts what the request filters did into the request head: `Err` when they left a
/// pseudo-header HTTP cannot carry.
pub(super) fn apply_request(
    parts: &mut http::request::Parts,
    changes: HeadChanges,
) -> Result<(), &'static str> {
    match changes {
        HeadChanges::None => Ok(()),
        HeadChanges::Edits(edits) => {
            apply_edits(&mut parts.headers, edits);
            Ok(())
        }
        HeadChanges::Rewritten(pairs) => apply_request_pairs(parts, &pairs),
    }
}

/// Puts what the response filters did into the response head.
pub(super) fn apply_response(parts: &mut http::response::Parts, changes: HeadChanges) {
    match changes {
        HeadChanges::None => {}
        HeadChanges::Edits(edits) => apply_edits(&mut parts.headers, edits),
        HeadChanges::Rewritten(pairs) => apply_response_pairs(parts, &pairs),
    }
}

/// Replays value edits on a head's headers, with the outcome a rebuild from the edited map
/// would have (a value HTTP does not allow is dropped, and with `Replace` so are the old ones).
fn apply_edits(headers: &mut HeaderMap, edits: Vec<HeaderEdit>) {
    for edit in edits {
        match edit {
            HeaderEdit::Add(name, value) => append(headers, &name, &value),
            HeaderEdit::Replace(name, value) => {
                let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                    tracing::debug!(
                        header = name,
                        "dropping an invalid header set by a Wasm filter"
                    );
                    continue;
                };
                match HeaderValue::from_maybe_shared(value) {
                    Ok(value) => {
                        headers.insert(header, value);
                    }
                    Err(_) => {
                        headers.remove(&header);
                        tracing::debug!(
                            header = name,
                            "dropping an invalid header set by a Wasm filter"
                        );
                    }
                }
            }
            HeaderEdit::Remove(name) => {
                if let Ok(header) = HeaderName::from_bytes(name.as_bytes()) {
                    headers.remove(&header);
                }
            }
        }
    }
}

/// Puts the filters' request map back into the request head.
fn apply_request_pairs(
    parts: &mut http::request::Parts,
    pairs: &HeaderPairs,
) -> Result<(), &'static str> {
    let mut headers = HeaderMap::with_capacity(pairs.len());
    let mut path = None;
    let mut authority = None;
    for (name, value) in pairs {
        match name.as_str() {
            ":method" => match Method::from_bytes(value) {
                Ok(method) => parts.method = method,
                Err(_) => return Err("invalid :method set by a Wasm filter"),
            },
            ":path" => path = Some(value.clone()),
            ":authority" => authority = Some(value.clone()),
            pseudo if pseudo.starts_with(':') => {}
            _ => append(&mut headers, name, value),
        }
    }
    if let Some(authority) = &authority
        && !authority.is_empty()
    {
        match HeaderValue::from_bytes(authority) {
            Ok(host) => {
                headers.insert(http::header::HOST, host);
            }
            Err(_) => return Err("invalid :authority set by a Wasm filter"),
        }
    }
    if parts.method == Method::CONNECT
        && path.is_none()
        && let Some(target) = authority.as_ref().filter(|a| !a.is_empty())
    {
        // A plain CONNECT: its target is the authority (RFC 9110 authority-form).
        parts.uri = Uri::try_from(target.to_vec())
            .map_err(|_| "invalid :authority set by a Wasm filter")?;
        parts.headers = headers;
        return Ok(());
    }
    let path = path.unwrap_or_else(|| Bytes::from_static(b"/"));
    let uri = match (parts.uri.scheme_str(), &authority) {
        (Some(scheme), Some(authority)) if !authority.is_empty() => {
            Uri::try_from([scheme.as_bytes(), b"://", authority, &path].concat())
        }
        _ => Uri::try_from(path.to_vec()),
    };
    parts.uri = uri.map_err(|_| "invalid :path set by a Wasm filter")?;
    parts.headers = headers;
    Ok(())
}

/// The response head as the ABI's map: `:status`, then the headers.
pub(super) fn response_pairs(parts: &http::response::Parts) -> HeaderPairs {
    let mut pairs = Vec::with_capacity(parts.headers.len() + 1);
    pairs.push(pair(
        ":status",
        Bytes::from(parts.status.as_u16().to_string()),
    ));
    pairs.extend(crate::wasm::context::pairs_of(&parts.headers));
    pairs
}

fn apply_response_pairs(parts: &mut http::response::Parts, pairs: &HeaderPairs) {
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if name == ":status" {
            if let Some(status) = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
            {
                parts.status = status;
            }
        } else if !name.starts_with(':') {
            append(&mut headers, name, value);
        }
    }
    parts.headers = headers;
}

pub(super) fn header_map(pairs: &HeaderPairs) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        append(&mut headers, name, value);
    }
    headers
}

/// Appends one header; names or values HTTP does not allow are dropped (and logged).
fn append(headers: &mut HeaderMap, name: &str, value: &Bytes) {
    match (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_bytes(value),
    ) {
        (Ok(name), Ok(value)) => {
            headers.append(name, value);
        }
        _ => tracing::debug!(
            header = name,
            "dropping an invalid header set by a Wasm filter"
        ),
    }
}

/// A module's `proxy_send_local_response` as a response.
pub(super) fn local_response(reply: LocalResponse) -> Response<Body> {
    let mut response = Response::new(body::full(reply.body.clone()));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in &reply.headers {
        append(headers, name, value);
    }
    if !reply.body.is_empty() && !headers.contains_key(http::header::CONTENT_TYPE) {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    headers.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(reply.body.len()),
    );
    response
}

fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    response
}

/// A filter's VM failed and the plugin does not fail open.
pub(super) fn failure_response() -> Response<Body> {
    text_response(StatusCode::INTERNAL_SERVER_ERROR, "wasm filter failed\n")
}

/// A filter of the chain has no config (its ECDS config did not come in time, and it has no
/// default): Envoy's missing-config filter answers 500 with no body, response flag `NFCF`.
pub(super) fn missing_config_response() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
        .extensions_mut()
        .insert(crate::access_log::http::ResponseInfo {
            flags: "NFCF",
            details: String::new(),
            transport_failure: None,
        });
    response
}

/// A plugin of the chain is not loaded (its remote module could not be fetched) and does not
/// fail open: Envoy answers 503 (`wasm_fail_stream`).
pub(super) fn unloaded_response() -> Response<Body> {
    text_response(StatusCode::SERVICE_UNAVAILABLE, "wasm filter not loaded\n")
}

/// A filter paused a request body past `per_connection_buffer_limit_bytes`.
pub(super) fn payload_too_large() -> Response<Body> {
    text_response(StatusCode::PAYLOAD_TOO_LARGE, "payload too large\n")
}

/// A filter closed the stream.
pub(super) fn closed_response() -> Response<Body> {
    text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "stream closed by a wasm filter\n",
    )
}

pub(super) fn bad_request(text: &'static str) -> Response<Body> {
    text_response(StatusCode::BAD_REQUEST, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(pairs: &HeaderPairs) -> Vec<&str> {
        pairs.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn request_head_round_trips_through_the_abi_map() {
        let request = Request::post("/a/b?c=1")
            .header("host", "example.com")
            .header("x-one", "1")
            .header("x-one", "2")
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        let pairs = request_pairs(&parts);
        assert_eq!(
            names(&pairs),
            [
                ":method",
                ":scheme",
                ":authority",
                ":path",
                "x-one",
                "x-one"
            ]
        );
        assert_eq!(pairs[2].1, "example.com");
        let mut edited = pairs.clone();
        edited[0].1 = Bytes::from_static(b"PUT");
        edited[2].1 = Bytes::from_static(b"other.example");
        edited[3].1 = Bytes::from_static(b"/new?x=y");
        edited.push(("x-two".into(), Bytes::from_static(b"2")));
        apply_request_pairs(&mut parts, &edited).unwrap();
        assert_eq!(parts.method, Method::PUT);
        assert_eq!(parts.uri, "/new?x=y");
        assert_eq!(parts.headers["host"], "other.example");
        assert_eq!(parts.headers.get_all("x-one").iter().count(), 2);
        assert_eq!(parts.headers["x-two"], "2");
    }

    #[test]
    fn replayed_edits_match_a_rebuild_from_the_edited_map() {
        let request = Request::get("/p")
            .header("host", "example.com")
            .header("x-a", "1")
            .header("x-b", "2")
            .header("x-b", "3")
            .header("x-d", "old")
            .body(())
            .unwrap();
        let (mut replayed, ()) = request.into_parts();
        let mut rebuilt = replayed.clone();
        let edits = vec![
            HeaderEdit::Replace("x-b".into(), Bytes::from_static(b"9")),
            HeaderEdit::Add("x-c".into(), Bytes::from_static(b"1")),
            HeaderEdit::Remove("x-a".into()),
            HeaderEdit::Replace("x-d".into(), Bytes::from_static(b"bad\n")),
            HeaderEdit::Add("bad name".into(), Bytes::from_static(b"x")),
        ];
        // The map as the host functions leave it after the same calls.
        let mut pairs = request_pairs(&rebuilt);
        pairs.retain(|(k, _)| k != "x-b" && k != "x-a" && k != "x-d");
        pairs.push(("x-b".into(), Bytes::from_static(b"9")));
        pairs.push(("x-d".into(), Bytes::from_static(b"bad\n")));
        pairs.push(("x-c".into(), Bytes::from_static(b"1")));
        pairs.push(("bad name".into(), Bytes::from_static(b"x")));
        apply_request(&mut rebuilt, HeadChanges::Rewritten(pairs)).unwrap();
        apply_request(&mut replayed, HeadChanges::Edits(edits)).unwrap();
        assert_eq!(replayed.headers, rebuilt.headers);
        assert_eq!(replayed.headers.get_all("x-b").iter().count(), 1);
        assert!(!replayed.headers.contains_key("x-d"));
        assert_eq!(replayed.uri, "/p");
    }

    #[test]
    fn a_plain_connect_keeps_its_authority_target_and_has_no_path() {
        let (mut parts, ()) = Request::connect("target.example:8080")
            .header("host", "target.example:8080")
            .body(())
            .unwrap()
            .into_parts();
        let pairs = request_pairs(&parts);
        assert_eq!(names(&pairs), [":method", ":scheme", ":authority"]);
        apply_request_pairs(&mut parts, &pairs).unwrap();
        assert_eq!(parts.method, Method::CONNECT);
        assert_eq!(
            parts.uri.authority().unwrap().as_str(),
            "target.example:8080"
        );
        assert_eq!(parts.uri.path_and_query(), None);
        assert_eq!(parts.headers["host"], "target.example:8080");
    }

    #[test]
    fn an_extended_connect_shows_its_protocol() {
        let mut request = Request::connect("https://ws.example/chat")
            .body(())
            .unwrap();
        request
            .extensions_mut()
            .insert(crate::wire::Protocol::new("websocket"));
        let (mut parts, ()) = request.into_parts();
        let pairs = request_pairs(&parts);
        assert_eq!(
            names(&pairs),
            [":method", ":scheme", ":authority", ":path", ":protocol"]
        );
        assert_eq!(pairs[4].1, "websocket");
        apply_request_pairs(&mut parts, &pairs).unwrap();
        assert_eq!(parts.uri, "https://ws.example/chat");
    }

    #[test]
    fn invalid_pseudo_headers_from_a_filter_are_refused() {
        let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
        let bad_method = vec![(":method".to_string(), Bytes::from_static(b"BAD METHOD"))];
        assert!(apply_request_pairs(&mut parts, &bad_method).is_err());
        let bad_path = vec![(":path".to_string(), Bytes::from_static(b"/with space"))];
        assert!(apply_request_pairs(&mut parts, &bad_path).is_err());
    }

    #[test]
    fn response_status_and_headers_round_trip() {
        let (mut parts, ()) = Response::builder()
            .status(201)
            .header("x-a", "1")
            .body(())
            .unwrap()
            .into_parts();
        let mut pairs = response_pairs(&parts);
        assert_eq!(names(&pairs), [":status", "x-a"]);
        pairs[0].1 = Bytes::from_static(b"418");
        pairs.push(("bad header".into(), Bytes::from_static(b"dropped")));
        apply_response_pairs(&mut parts, &pairs);
        assert_eq!(parts.status, StatusCode::IM_A_TEAPOT);
        assert_eq!(parts.headers.len(), 1);
    }

    #[test]
    fn local_response_has_its_headers_and_length() {
        let response = local_response(LocalResponse {
            status: 403,
            details: "denied".into(),
            body: Bytes::from_static(b"no"),
            headers: vec![("x-why".into(), Bytes::from_static(b"policy"))],
        });
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()["x-why"], "policy");
        assert_eq!(response.headers()["content-length"], "2");
    }
}
