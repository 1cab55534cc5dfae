//! An RDS update read in proportion to what it changed: the routes of a route configuration
//! that are byte for byte those of the version in force are taken from it (their schema value
//! and, where their virtual host and configuration are unchanged around them, their built
//! route) rather than decoded, read and built again. The configuration's JSON, which only
//! `/config_dump` shows, is written when first asked for, and whether it equals the version
//! in force's (an unchanged resource is not swapped in again) is found from the parts that
//! changed.
//!
//! A control plane sends the whole route configuration for a change of one route, and reading
//! a thousand routes (protobuf to JSON to the schema, then the route table) was most of what an
//! update cost. [`wire`] cuts the new version's protobuf into its parts without decoding it;
//! each route whose bytes the version in force had too is looked up in that version's
//! [`RouteParts`] by its bytes (compared whole, so two routes are never confused), and only the
//! others, and each virtual host's and the configuration's own fields, are decoded.
//!
//! The result is the one [`super::resource::decode`] gives for the whole message: protobuf
//! decodes a message's fields independently (see [`wire`]), and each step after (the JSON
//! clean-ups, the schema, the route build) works on one route without looking at the others,
//! but for the route build's virtual host and configuration fields, which must be unchanged
//! for a built route to be reused. Whenever a part does not decode, read or build, the caller
//! decodes the message whole, so an error, and the NACK that names its field, are the whole
//! message's. What a version can lend is only ever the version in force: its parts are kept
//! with it (in [`super::resource::Decoded`]) and go with it when it is replaced or removed, so
//! a version that was refused lends nothing.

use super::resource::{Decoded, Resource, ResourceJson, ResourceType};
use crate::config::parse_value_ref;
use crate::config::route::{Route, RouteConfiguration, VirtualHost};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

pub mod wire;

use wire::RouteConfigWire;

/// The protobuf types of the parts.
const ROUTE_CONFIGURATION: &str = "envoy.config.route.v3.RouteConfiguration";
const VIRTUAL_HOST: &str = "envoy.config.route.v3.VirtualHost";
const ROUTE: &str = "envoy.config.route.v3.Route";

/// A route configuration's protobuf, cut into its parts, kept with the version in force for
/// the next version to reuse its routes.
#[derive(Debug)]
pub struct RouteParts {
    wire: RouteConfigWire,
    /// Each route's bytes: where it is (virtual host, route); the first of equal routes.
    index: HashMap<Bytes, (usize, usize)>,
}

impl RouteParts {
    /// The parts of a route configuration's `bytes`; `None` where its wire does not read.
    pub fn of(bytes: &Bytes) -> Option<Arc<RouteParts>> {
        wire::split(bytes).map(RouteParts::new)
    }

    fn new(wire: RouteConfigWire) -> Arc<RouteParts> {
        let mut index = HashMap::with_capacity(wire.vhosts.iter().map(|v| v.routes.len()).sum());
        for (v, vhost) in wire.vhosts.iter().enumerate() {
            for (r, route) in vhost.routes.iter().enumerate() {
                index.entry(route.clone()).or_insert((v, r));
            }
        }
        Arc::new(RouteParts { wire, index })
    }
}

/// How many of a decode's routes were taken from the version in force, and how many of those
/// as built routes (for the tests and the debug log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reused {
    /// Routes decoded and read anew.
    pub decoded: usize,
    /// Routes whose JSON and schema value were taken.
    pub read: usize,
    /// Of those, routes whose built route was taken too.
    pub built: usize,
}

/// Reads the route configuration `bytes` reusing what `previous(name)`, the version in force
/// of the configuration of that name, has of it. `None` when there is no version in force
/// with parts, or when anything does not decode, read or build: the caller then decodes
/// `bytes` whole (and, for a broken resource, says why).
pub fn decode(
    bytes: &Bytes,
    previous: &dyn Fn(&str) -> Option<Decoded>,
) -> Option<(Decoded, Reused)> {
    let wire = wire::split(bytes)?;
    let json = super::proto::to_json(ROUTE_CONFIGURATION, &wire.rest).ok()?;
    let name = match json.get("name") {
        Some(serde_json::Value::String(name)) if !name.is_empty() => name.clone(),
        _ => return None,
    };
    let before = previous(&name)?;
    let (Resource::RouteConfiguration(before_config), Some(parts)) =
        (&before.resource, before.route_parts.as_ref())
    else {
        return None;
    };
    let mut config: RouteConfiguration = parse_value_ref(&json).ok()?;
    let same_config_fields = parts.wire.rest == wire.rest;
    // Whether the new version says what the one in force says, part by part.
    let mut same = same_json(
        ROUTE_CONFIGURATION,
        &wire.rest,
        &parts.wire.rest,
        Some(&json),
    ) && wire.vhosts.len() == parts.wire.vhosts.len();
    let mut reused = Reused::default();
    // Per virtual host and route: the route of the version in force whose built route is
    // taken, where one is.
    let mut built_from: Vec<Vec<Option<(usize, usize)>>> = Vec::with_capacity(wire.vhosts.len());
    config.virtual_hosts.reserve(wire.vhosts.len());
    for (v, vhost_wire) in wire.vhosts.iter().enumerate() {
        let vhost_json = super::proto::to_json(VIRTUAL_HOST, &vhost_wire.rest).ok()?;
        let mut vhost: VirtualHost = parse_value_ref(&vhost_json).ok()?;
        let before_vhost = parts.wire.vhosts.get(v);
        same = same
            && before_vhost.is_some_and(|before| {
                before.routes.len() == vhost_wire.routes.len()
                    && same_json(
                        VIRTUAL_HOST,
                        &vhost_wire.rest,
                        &before.rest,
                        Some(&vhost_json),
                    )
            });
        vhost.routes.reserve(vhost_wire.routes.len());
        let mut built = Vec::with_capacity(vhost_wire.routes.len());
        for (r, route_bytes) in vhost_wire.routes.iter().enumerate() {
            let kept = parts.index.get(route_bytes).and_then(|&(kept_v, kept_r)| {
                let route = before_config
                    .virtual_hosts
                    .get(kept_v)?
                    .routes
                    .get(kept_r)?;
                Some((kept_v, kept_r, route))
            });
            let route_json = match kept {
                Some((kept_v, kept_r, route)) => {
                    reused.read += 1;
                    let same_around = same_config_fields
                        && parts.wire.vhosts.get(kept_v).map(|before| &before.rest)
                            == Some(&vhost_wire.rest);
                    built.push((same_around && !reads_files(route)).then_some((kept_v, kept_r)));
                    vhost.routes.push(route.clone());
                    None
                }
                None => {
                    reused.decoded += 1;
                    let route_json = super::proto::to_json(ROUTE, route_bytes).ok()?;
                    vhost
                        .routes
                        .push(parse_value_ref::<Route>(&route_json).ok()?);
                    built.push(None);
                    Some(route_json)
                }
            };
            same = same
                && before_vhost
                    .and_then(|before| before.routes.get(r))
                    .is_some_and(|before| {
                        same_json(ROUTE, route_bytes, before, route_json.as_ref())
                    });
        }
        config.virtual_hosts.push(vhost);
        built_from.push(built);
    }
    let config = Arc::new(config);
    // The table of the version in force: kept while it is held, so this is a look-up.
    let before_table = crate::route::shared::unvalidated(before_config, "").ok()?;
    let reuse = |v: usize, r: usize| {
        let (before_v, before_r) = built_from.get(v)?.get(r).copied()??;
        before_table.route_at(before_v, before_r).cloned()
    };
    crate::route::shared::unvalidated_reusing(&config, "", &reuse).ok()?;
    reused.built = built_from.iter().flatten().filter(|b| b.is_some()).count();
    Some((
        Decoded {
            name,
            resource: Resource::RouteConfiguration(config),
            json: ResourceJson::later(ResourceType::RouteConfiguration, bytes.clone()),
            route_parts: Some(RouteParts::new(wire)),
            same_json_as: Some((Arc::downgrade(parts), same)),
        },
        reused,
    ))
}

/// Whether the messages of type `type_name` in `bytes` (whose JSON is `json`, where it was
/// written) and `before` have the same JSON: equal bytes do; others are written and compared
/// (most often two versions of the one route that changed).
fn same_json(
    type_name: &str,
    bytes: &[u8],
    before: &[u8],
    json: Option<&serde_json::Value>,
) -> bool {
    if bytes == before {
        return true;
    }
    let json = match json {
        Some(json) => Some(json.clone()),
        None => super::proto::to_json(type_name, bytes).ok(),
    };
    json.is_some_and(|json| super::proto::to_json(type_name, before).ok() == Some(json))
}

/// Whether building `route` reads a file (a `direct_response` body from a `filename`): such
/// a route is built again, as a whole decode would, rather than keep the file's old content.
fn reads_files(route: &Route) -> bool {
    route
        .direct_response
        .as_ref()
        .and_then(|direct| direct.body.as_ref())
        .is_some_and(|body| body.filename.is_some())
}

#[cfg(test)]
mod tests;
