//! The YAML config: Envoy's v3 bootstrap shape in, checked plain data out.
//!
//! [`parse`] reads YAML with `serde_yaml_ng`, tracking the field path of every error; each
//! resource's file then checks what serde cannot (references, exclusive fields, regexes,
//! addresses) and reads it into plain data with Envoy's defaults applied, so nothing past this
//! module reads YAML. `snapshot` turns that data into the runtime's objects
//! (`snapshot::load_str` / `snapshot::load_file` are the whole way from text to a running
//! config).
//!
//! One file per resource, each holding Envoy's schema of it and its reading side by side:
//! [`bootstrap`] (the top), [`listener`], [`http_manager`], [`route`], [`cluster`] (read into
//! the plain data of [`cluster_spec`], from which the upstream side builds its clusters),
//! [`dynamic_resources`] (xDS), [`tls`], [`quic`], [`wasm`] (read into the plain data of [`wasm_spec`], from which the Wasm
//! host loads its plugins), [`service`], [`overload`], [`runtime`]; [`schema`] names all of
//! their schema types in one place. Below them sit the shared pieces ([`common`],
//! [`http_options`], [`typed`], [`duration`], [`file`](mod@file), [`pem`]).
//!
//! This module imports nothing above it: the runtime objects a config names (route tables,
//! access logs, Wasm plugins) build themselves from these types, and `snapshot`
//! assembles them.

pub mod balancing;
pub mod bootstrap;
pub mod cluster;
pub mod cluster_names;
pub mod cluster_spec;
pub mod common;
pub mod duration;
pub mod dynamic_resources;
pub mod ecds;
pub mod file;
pub mod hash_policy;
pub mod http_manager;
pub mod http_options;
mod lenient;
pub mod listener;
pub mod outlier;
pub mod overload;
pub mod pem;
pub mod per_filter;
pub mod process_settings;
pub mod quic;
pub mod route;
pub mod runtime;
pub mod schema;
pub mod service;
pub mod tls;
pub mod typed;
pub mod wasm;
pub mod wasm_spec;
pub mod yaml_limits;

pub use listener::{Interception, TunnelConfig};
pub use tls::DownstreamTls;

use bootstrap::Bootstrap;
use std::fmt;
use std::path::Path;
use typed::PATH_MARK;

/// The config weir runs with when it is given none: a page saying how to write one.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// A config that cannot be used: which file, which field, what is wrong and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {path}: {message}")]
pub struct ConfigError {
    /// The file (or `<built-in>`).
    pub file: String,
    /// The field path, e.g. `static_resources.clusters[2].lb_policy`.
    pub path: String,
    /// What is wrong, and what is accepted.
    pub message: String,
}

/// A field path and a message, before the file is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl fmt::Display) -> Self {
        FieldError {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn in_file(self, file: &str) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            path: self.path,
            message: self.message,
        }
    }
}

/// Reads the config file at `path` as text: a regular file of at most
/// [`file::MAX_CONFIG_BYTES`], in UTF-8.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    let error = |message: String| ConfigError {
        file: path.display().to_string(),
        path: ".".into(),
        message,
    };
    let bytes = file::read_limited(path, file::MAX_CONFIG_BYTES)
        .map_err(|e| error(format!("cannot read the file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| error(format!("cannot read the file: not UTF-8: {e}")))
}

/// Parses YAML into the schema, with the field path of any error.
pub fn parse(text: &str) -> Result<Bootstrap, FieldError> {
    read(serde_yaml_ng::Deserializer::from_str(text))
}

/// Reads a JSON value (an xDS resource in Envoy's JSON shape) into the schema type `T`, with
/// the field path of any error relative to the value, as [`parse`] gives it for a file.
pub fn parse_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, FieldError> {
    read(value)
}

/// [`parse_value`] of a value that is kept: read in place rather than from a copy (an xDS
/// resource's JSON is kept for `/config_dump`, and a route configuration's is megabytes).
pub fn parse_value_ref<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, FieldError> {
    read(value)
}

/// Reads `deserializer` into `T`, joining serde's path of an error with the paths the typed
/// fields marked in its message (see [`typed`]).
fn read<'de, D, T>(deserializer: D) -> Result<T, FieldError>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let outer = error.path().to_string();
        let message = error.into_inner().to_string();
        let (inner, message) = split_marked_path(&message);
        let path = match (outer.as_str(), inner.as_str()) {
            // An empty key at the top (`"": 1`) is a path of one empty segment: the top.
            (".", "") | ("", "") => ".".to_string(),
            (".", inner) => inner.to_string(),
            (outer, "") => outer.to_string(),
            (outer, inner) => format!("{outer}.{inner}"),
        };
        FieldError { path, message }
    })
}

/// Takes the nested paths [`typed`] marked in `message` off its front, joined with dots.
/// serde_yaml_ng starts its messages with its own idea of the path; that is dropped, since
/// serde_path_to_error's is the one kept.
fn split_marked_path(message: &str) -> (String, String) {
    let mut message = match message.find(PATH_MARK) {
        Some(start) => &message[start..],
        None => strip_yaml_path(message),
    };
    let mut path = Vec::new();
    while let Some(rest) = message.strip_prefix(PATH_MARK) {
        match rest.split_once(PATH_MARK) {
            Some((inner, tail)) => {
                path.push(inner);
                message = tail;
            }
            None => break,
        }
    }
    (path.join("."), message.to_string())
}

/// Drops the `a.b[0]: ` path prefix serde_yaml_ng puts on its messages.
pub(crate) fn strip_yaml_path(message: &str) -> &str {
    match message.split_once(": ") {
        Some((head, tail)) if !head.is_empty() && !head.contains(char::is_whitespace) => tail,
        _ => message,
    }
}
