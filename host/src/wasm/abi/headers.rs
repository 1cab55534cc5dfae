//! Header maps: `proxy_{get,set}_header_map_pairs`, `proxy_{get,add,replace,remove}_header_map_value`,
//! `proxy_get_header_map_size`.
//!
//! Keys are lowercased as Envoy does; lookups take the first value.

use super::Registrar;
use crate::wasm::context::{HeaderEdit, HeaderPairs, MapChanges};
use crate::wasm::memory::{self, HostResult, done, read, read_string, return_bytes};
use crate::wasm::state::HostState;
use bytes::Bytes;
use wasmtime::Caller;
use weir_abi::names::host as names;
use weir_abi::{MapType, Status, header_map};

/// The map `map_type` names in the effective context: `NotFound` when it has none.
pub(crate) fn map_mut(state: &mut HostState, map_type: i32) -> Result<&mut HeaderPairs, Status> {
    let map_type = MapType::try_from(map_type).map_err(|_| Status::BadArgument)?;
    match map_type {
        MapType::HttpCallResponseHeaders => state
            .call_response
            .as_mut()
            .map(|r| &mut r.headers)
            .ok_or(Status::NotFound),
        MapType::HttpCallResponseTrailers => state
            .call_response
            .as_mut()
            .map(|r| &mut r.trailers)
            .ok_or(Status::NotFound),
        MapType::HttpRequestHeaders => Ok(&mut stream(state)?.request_headers),
        MapType::HttpRequestTrailers => Ok(&mut stream(state)?.request_trailers),
        MapType::HttpResponseHeaders => Ok(&mut stream(state)?.response_headers),
        MapType::HttpResponseTrailers => Ok(&mut stream(state)?.response_trailers),
        MapType::GrpcReceiveInitialMetadata | MapType::GrpcReceiveTrailingMetadata => {
            Err(Status::NotFound)
        }
    }
}

fn stream(state: &mut HostState) -> Result<&mut crate::wasm::context::StreamData, Status> {
    state.effective_stream().ok_or(Status::NotFound)
}

/// The map `map_type` names, as [`map_mut`] finds it, with the record of its changes where
/// the filter chain reads one (a stream's request and response headers; every other map is
/// read back whole).
fn map_with_changes(
    state: &mut HostState,
    map_type: i32,
) -> Result<(&mut HeaderPairs, Option<&mut MapChanges>), Status> {
    match MapType::try_from(map_type) {
        Ok(MapType::HttpRequestHeaders) => {
            let stream = stream(state)?;
            Ok((
                &mut stream.request_headers,
                Some(&mut stream.request_changes),
            ))
        }
        Ok(MapType::HttpResponseHeaders) => {
            let stream = stream(state)?;
            Ok((
                &mut stream.response_headers,
                Some(&mut stream.response_changes),
            ))
        }
        _ => Ok((map_mut(state, map_type)?, None)),
    }
}

/// Decodes a wire-format map from the module, lowercasing keys.
pub(crate) fn decode_pairs(bytes: &[u8]) -> Result<HeaderPairs, Status> {
    if bytes.len() > header_map::CPP_HOST_MAX_BYTES {
        return Err(Status::BadArgument);
    }
    let pairs = header_map::decode(bytes).map_err(|_| Status::BadArgument)?;
    if pairs.len() > header_map::CPP_HOST_MAX_PAIRS {
        return Err(Status::BadArgument);
    }
    Ok(pairs
        .map(|(key, value)| {
            (
                String::from_utf8_lossy(key).to_ascii_lowercase(),
                Bytes::copy_from_slice(value),
            )
        })
        .collect())
}

/// Encodes a map in the wire format.
pub(crate) fn encode_pairs(pairs: &HeaderPairs) -> Result<Vec<u8>, Status> {
    let refs: Vec<(&[u8], &[u8])> = pairs
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_ref()))
        .collect();
    header_map::encode_to_vec(&refs).map_err(|_| Status::SerializationFailure)
}

fn get_pairs(
    mut caller: Caller<'_, HostState>,
    map_type: i32,
    ptr_out: i32,
    len_out: i32,
) -> HostResult {
    let encoded = match map_mut(caller.data_mut(), map_type).and_then(|map| encode_pairs(map)) {
        Ok(encoded) => encoded,
        Err(status) => return memory::status(status),
    };
    done(return_bytes(&mut caller, &encoded, ptr_out, len_out)?)
}

fn set_pairs(mut caller: Caller<'_, HostState>, map_type: i32, ptr: i32, len: i32) -> HostResult {
    let result = read(&mut caller, ptr, len)
        .and_then(|bytes| decode_pairs(&bytes))
        .and_then(|pairs| {
            let (map, changes) = map_with_changes(caller.data_mut(), map_type)?;
            *map = pairs;
            if let Some(changes) = changes {
                *changes = MapChanges::Rewritten;
            }
            Ok(())
        });
    done(result)
}

fn get_value(
    mut caller: Caller<'_, HostState>,
    map_type: i32,
    key_ptr: i32,
    key_len: i32,
    ptr_out: i32,
    len_out: i32,
) -> HostResult {
    let value = read_string(&mut caller, key_ptr, key_len).and_then(|key| {
        let key = key.to_ascii_lowercase();
        let map = map_mut(caller.data_mut(), map_type)?;
        map.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .ok_or(Status::NotFound)
    });
    match value {
        Ok(value) => done(return_bytes(&mut caller, &value, ptr_out, len_out)?),
        Err(status) => memory::status(status),
    }
}

/// How a value call changes a map.
#[derive(Clone, Copy)]
enum Edit {
    Add,
    Replace,
}

fn edit_value(
    caller: &mut Caller<'_, HostState>,
    edit: Edit,
    map_type: i32,
    key: (i32, i32),
    value: (i32, i32),
) -> Result<(), Status> {
    let name = read_string(caller, key.0, key.1)?.to_ascii_lowercase();
    let value = Bytes::from(read(caller, value.0, value.1)?);
    let (map, changes) = map_with_changes(caller.data_mut(), map_type)?;
    let change = match edit {
        Edit::Add => {
            map.push((name.clone(), value.clone()));
            HeaderEdit::Add(name, value)
        }
        Edit::Replace => {
            match map.iter().position(|(k, _)| *k == name) {
                Some(first) => {
                    map[first].1 = value.clone();
                    let mut index = 0;
                    map.retain(|(k, _)| {
                        let keep = index <= first || *k != name;
                        index += 1;
                        keep
                    });
                }
                None => map.push((name.clone(), value.clone())),
            }
            HeaderEdit::Replace(name, value)
        }
    };
    if let Some(changes) = changes {
        changes.push(change);
    }
    Ok(())
}

fn remove_value(
    caller: &mut Caller<'_, HostState>,
    map_type: i32,
    key: (i32, i32),
) -> Result<(), Status> {
    let name = read_string(caller, key.0, key.1)?.to_ascii_lowercase();
    let (map, changes) = map_with_changes(caller.data_mut(), map_type)?;
    map.retain(|(k, _)| *k != name);
    if let Some(changes) = changes {
        changes.push(HeaderEdit::Remove(name));
    }
    Ok(())
}

fn get_size(mut caller: Caller<'_, HostState>, map_type: i32, size_out: i32) -> HostResult {
    let result = map_mut(caller.data_mut(), map_type)
        .and_then(|map| encode_pairs(map))
        .and_then(|encoded| memory::write_u32(&mut caller, size_out, encoded.len() as u32));
    done(result)
}

/// Defines the header-map functions.
pub fn add(r: &mut Registrar<'_>) {
    r.env(names::PROXY_GET_HEADER_MAP_PAIRS, get_pairs);
    r.env(names::PROXY_SET_HEADER_MAP_PAIRS, set_pairs);
    r.env(names::PROXY_GET_HEADER_MAP_VALUE, get_value);
    r.env(
        names::PROXY_ADD_HEADER_MAP_VALUE,
        |mut c: Caller<'_, HostState>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            done(edit_value(&mut c, Edit::Add, map, (kp, kl), (vp, vl)))
        },
    );
    r.env(
        names::PROXY_REPLACE_HEADER_MAP_VALUE,
        |mut c: Caller<'_, HostState>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            done(edit_value(&mut c, Edit::Replace, map, (kp, kl), (vp, vl)))
        },
    );
    r.env(
        names::PROXY_REMOVE_HEADER_MAP_VALUE,
        |mut c: Caller<'_, HostState>, map: i32, kp: i32, kl: i32| {
            done(remove_value(&mut c, map, (kp, kl)))
        },
    );
    r.env(names::PROXY_GET_HEADER_MAP_SIZE, get_size);
}
