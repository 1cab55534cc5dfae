//! A route configuration's protobuf cut on the wire into its parts, without decoding them:
//! the configuration's own fields, and per virtual host its own fields and each route's bytes.
//!
//! Protobuf reads a message's fields in any order, appends each occurrence of a repeated
//! message field, and merges a singular field's occurrences in order. So a configuration whose
//! `virtual_hosts` are taken out reads as the same configuration without its virtual hosts,
//! each virtual host whose `routes` are taken out as the same virtual host without its routes,
//! and each route's bytes as that route: the parts decoded one by one and put back together
//! are the message decoded whole.

use bytes::Bytes;

/// `RouteConfiguration.virtual_hosts` (checked against the descriptor in the tests).
pub(super) const VIRTUAL_HOSTS: u64 = 2;
/// `VirtualHost.routes` (checked against the descriptor in the tests).
pub(super) const ROUTES: u64 = 3;
/// The wire type of a length-delimited field (a message).
const LENGTH_DELIMITED: u64 = 2;

/// A route configuration cut into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfigWire {
    /// Its fields but `virtual_hosts`, in their order.
    pub rest: Vec<u8>,
    /// Its virtual hosts, in order.
    pub vhosts: Vec<VirtualHostWire>,
}

/// A virtual host cut into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHostWire {
    /// Its fields but `routes`, in their order.
    pub rest: Vec<u8>,
    /// Each route's message bytes, in order (slices of the configuration's bytes).
    pub routes: Vec<Bytes>,
}

/// Cuts `bytes`, a `RouteConfiguration`; `None` where the wire does not read as fields (the
/// caller decodes the message whole, which says what is wrong).
pub fn split(bytes: &Bytes) -> Option<RouteConfigWire> {
    let mut wire = RouteConfigWire {
        rest: Vec::new(),
        vhosts: Vec::new(),
    };
    for field in Fields::new(bytes) {
        let field = field?;
        if field.number == VIRTUAL_HOSTS && field.wire_type == LENGTH_DELIMITED {
            wire.vhosts.push(split_vhost(&bytes.slice(field.value))?);
        } else {
            wire.rest.extend_from_slice(&bytes[field.whole]);
        }
    }
    Some(wire)
}

fn split_vhost(bytes: &Bytes) -> Option<VirtualHostWire> {
    let mut vhost = VirtualHostWire {
        rest: Vec::new(),
        routes: Vec::new(),
    };
    for field in Fields::new(bytes) {
        let field = field?;
        if field.number == ROUTES && field.wire_type == LENGTH_DELIMITED {
            vhost.routes.push(bytes.slice(field.value));
        } else {
            vhost.rest.extend_from_slice(&bytes[field.whole]);
        }
    }
    Some(vhost)
}

/// One field on the wire.
struct Field {
    number: u64,
    wire_type: u64,
    /// Key and value.
    whole: std::ops::Range<usize>,
    /// The value (a length-delimited field's: without its length).
    value: std::ops::Range<usize>,
}

/// The fields of a message, in order; an item is `None` where the wire breaks off (and the
/// iteration ends there). Groups (wire types 3 and 4, deprecated and absent from Envoy's API)
/// count as broken: the message is then decoded whole.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
    broken: bool,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields {
            bytes,
            at: 0,
            broken: false,
        }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            if shift == 63 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn skip(&mut self, len: u64) -> Option<std::ops::Range<usize>> {
        let start = self.at;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        if end > self.bytes.len() {
            return None;
        }
        self.at = end;
        Some(start..end)
    }

    fn field(&mut self) -> Option<Field> {
        let start = self.at;
        let key = self.varint()?;
        let (number, wire_type) = (key >> 3, key & 7);
        if number == 0 {
            return None;
        }
        let value = match wire_type {
            0 => {
                let from = self.at;
                self.varint()?;
                from..self.at
            }
            1 => self.skip(8)?,
            LENGTH_DELIMITED => {
                let len = self.varint()?;
                self.skip(len)?
            }
            5 => self.skip(4)?,
            _ => return None,
        };
        Some(Field {
            number,
            wire_type,
            whole: start..self.at,
            value,
        })
    }
}

impl Iterator for Fields<'_> {
    type Item = Option<Field>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.broken || self.at >= self.bytes.len() {
            return None;
        }
        let field = self.field();
        self.broken = field.is_none();
        Some(field)
    }
}
