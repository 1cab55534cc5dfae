//! Header rules of one level (route configuration, virtual host or route):
//! `request_headers_to_add` / `request_headers_to_remove` or `response_headers_to_add` /
//! `response_headers_to_remove`, built once from the config and applied as Envoy's
//! `HeaderParser` applies them.
//!
//! Within one level, Envoy removes first, then decides every add against the headers as they
//! are after the removals (so `ADD_IF_ABSENT` and `OVERWRITE_IF_EXISTS` look at what the
//! earlier levels left, not at this level's own adds), then writes every overwrite, then
//! every append. Values may hold the access log's command operators
//! ([`crate::access_log::format`]); a value without any is kept as a ready
//! [`HeaderValue`], so applying it costs no allocation. An operator that cannot be known
//! where the rule runs (a response's status on a request) is a config error naming it.

use crate::access_log::format::{Format, LogContext};
use crate::config::FieldError;
use crate::config::schema::{HeaderAppendAction, HeaderValueOption};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Which way the rules' headers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `request_headers_to_*`: the request sent upstream.
    Request,
    /// `response_headers_to_*`: the response sent downstream.
    Response,
}

impl Direction {
    /// Whether a value may use `operator` here: what weir knows when it applies the rules.
    fn offers(self, operator: &str) -> bool {
        let both = matches!(
            operator,
            "START_TIME"
                | "REQ"
                | "DOWNSTREAM_REMOTE_ADDRESS"
                | "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
                | "DOWNSTREAM_LOCAL_ADDRESS"
                | "PROTOCOL"
                | "REQUESTED_SERVER_NAME"
                | "CONNECTION_ID"
        );
        // A request's cluster is picked before its rules run; a response's rules may run on
        // a local reply with none.
        both || match self {
            Direction::Request => operator == "UPSTREAM_CLUSTER",
            Direction::Response => matches!(operator, "RESP" | "RESPONSE_CODE" | "UPSTREAM_HOST"),
        }
    }
}

/// A value: as written, or filled in per request.
#[derive(Debug, Clone)]
enum RuleValue {
    Static(HeaderValue),
    Formatted(Format),
}

/// One header to add.
#[derive(Debug, Clone)]
struct HeaderRule {
    name: HeaderName,
    value: RuleValue,
    action: HeaderAppendAction,
    keep_empty: bool,
}

/// The rules of one level for one direction.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    remove: Vec<HeaderName>,
    add: Vec<HeaderRule>,
    /// Some value has operators (its rendering needs a place per request).
    formatted: bool,
    /// Some value reads what a response knows only if its request's facts were kept: its
    /// headers (`%REQ(x)%`), start or protocol.
    reads_request: bool,
}

/// Envoy's rule for header names a config may add or remove: no pseudo-header, no `host`.
fn modifiable(name: &str) -> bool {
    !name.starts_with(':') && !name.eq_ignore_ascii_case("host")
}

impl HeaderRules {
    /// Checks and builds the rules: `adds` (at `adds_path`) and `removes` (at
    /// `removes_path`), for `direction`.
    pub fn build(
        adds: &[HeaderValueOption],
        removes: &[String],
        direction: Direction,
        adds_path: &str,
        removes_path: &str,
    ) -> Result<HeaderRules, FieldError> {
        let mut rules = HeaderRules::default();
        for (i, name) in removes.iter().enumerate() {
            let path = format!("{removes_path}[{i}]");
            if !modifiable(name) {
                return Err(FieldError::new(
                    path,
                    ":-prefixed or host headers may not be removed",
                ));
            }
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| FieldError::new(path, format!("{name:?} is not a header name")))?;
            rules.remove.push(name);
        }
        for (i, option) in adds.iter().enumerate() {
            let entry = format!("{adds_path}[{i}]");
            let key = &option.header.key;
            if !modifiable(key) {
                return Err(FieldError::new(
                    format!("{entry}.header.key"),
                    ":-prefixed or host headers may not be modified",
                ));
            }
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                FieldError::new(
                    format!("{entry}.header.key"),
                    format!("{key:?} is not a valid header name"),
                )
            })?;
            let value_path = format!("{entry}.header.value");
            let format = Format::parse(&option.header.value)
                .map_err(|e| FieldError::new(value_path.clone(), e.to_string()))?;
            if let Some(operator) = format.unavailable_operator(|op| direction.offers(op)) {
                let side = match direction {
                    Direction::Request => "request",
                    Direction::Response => "response",
                };
                return Err(FieldError::new(
                    value_path,
                    format!("command operator %{operator}% is not available in {side} headers"),
                ));
            }
            let value = match format.literal() {
                Some(text) => RuleValue::Static(HeaderValue::from_str(text).map_err(|_| {
                    FieldError::new(
                        value_path,
                        "not a valid header value (visible ASCII and spaces)",
                    )
                })?),
                None => {
                    rules.formatted = true;
                    rules.reads_request |= format
                        .unavailable_operator(|op| !matches!(op, "REQ" | "START_TIME" | "PROTOCOL"))
                        .is_some();
                    RuleValue::Formatted(format)
                }
            };
            if option.append.is_some() && option.append_action.is_some() {
                return Err(FieldError::new(
                    format!("{entry}.append"),
                    "set append_action or the deprecated append, not both",
                ));
            }
            let action = match (option.append_action, option.append) {
                (Some(action), _) => action,
                (None, Some(false)) => HeaderAppendAction::OVERWRITE_IF_EXISTS_OR_ADD,
                (None, _) => HeaderAppendAction::APPEND_IF_EXISTS_OR_ADD,
            };
            if matches!(&value, RuleValue::Static(v) if v.is_empty()) && !option.keep_empty_value {
                // Never added (Envoy skips an empty value unless keep_empty_value).
                continue;
            }
            rules.add.push(HeaderRule {
                name,
                value,
                action,
                keep_empty: option.keep_empty_value,
            });
        }
        Ok(rules)
    }

    /// Whether the rules do nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// Whether some value reads the request's headers, start or protocol (`%REQ(x)%`,
    /// `%START_TIME%`, `%PROTOCOL%`): a response keeps those facts of its request then.
    pub fn reads_request(&self) -> bool {
        self.reads_request
    }

    /// The request header names the values read (for a response, which must keep them).
    pub fn request_header_names(&self) -> impl Iterator<Item = &str> {
        self.add
            .iter()
            .flat_map(|rule| match &rule.value {
                RuleValue::Formatted(format) => Some(format.request_header_names()),
                RuleValue::Static(_) => None,
            })
            .flatten()
    }

    /// Applies the rules to `headers`, the headers of `direction`; `base` fills in values
    /// with operators, with `headers` as they are before this level's adds in place of that
    /// direction's (a request's rules read the request's own headers, which are the ones
    /// changing).
    pub fn apply(&self, headers: &mut HeaderMap, base: &LogContext<'_>, direction: Direction) {
        for name in &self.remove {
            headers.remove(name);
        }
        if self.add.is_empty() {
            return;
        }
        // Every value and condition is settled before anything is written (Envoy's order).
        let rendered: Vec<Option<HeaderValue>> = if self.formatted {
            let mut cx = base.clone();
            match direction {
                Direction::Request => cx.request_headers = Some(headers),
                Direction::Response => cx.response_headers = Some(headers),
            }
            let mut text = Vec::new();
            self.add
                .iter()
                .map(|rule| match &rule.value {
                    RuleValue::Static(_) => None,
                    RuleValue::Formatted(format) => {
                        text.clear();
                        format.render_omitting_empty(&cx, &mut text);
                        HeaderValue::from_bytes(&text).ok()
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let value = |i: usize, rule: &HeaderRule| -> Option<HeaderValue> {
            let value = match &rule.value {
                RuleValue::Static(value) => value.clone(),
                RuleValue::Formatted(_) => rendered.get(i).cloned().flatten()?,
            };
            (!value.is_empty() || rule.keep_empty).then_some(value)
        };
        let present = Presence::of(&self.add, headers);
        for (i, rule) in self.add.iter().enumerate() {
            let overwrite = match rule.action {
                HeaderAppendAction::OVERWRITE_IF_EXISTS_OR_ADD => true,
                HeaderAppendAction::OVERWRITE_IF_EXISTS => present.get(i),
                _ => false,
            };
            if overwrite && let Some(value) = value(i, rule) {
                headers.insert(rule.name.clone(), value);
            }
        }
        for (i, rule) in self.add.iter().enumerate() {
            let append = match rule.action {
                HeaderAppendAction::APPEND_IF_EXISTS_OR_ADD => true,
                HeaderAppendAction::ADD_IF_ABSENT => !present.get(i),
                _ => false,
            };
            if append && let Some(value) = value(i, rule) {
                headers.append(rule.name.clone(), value);
            }
        }
    }
}

/// Which rules' headers were present before a level's adds: a bit per rule, without an
/// allocation for up to 128 rules.
enum Presence {
    Bits(u128),
    Many(Vec<bool>),
}

impl Presence {
    fn of(rules: &[HeaderRule], headers: &HeaderMap) -> Presence {
        if rules.len() <= 128 {
            let mut bits = 0u128;
            for (i, rule) in rules.iter().enumerate() {
                if headers.contains_key(&rule.name) {
                    bits |= 1 << i;
                }
            }
            Presence::Bits(bits)
        } else {
            Presence::Many(
                rules
                    .iter()
                    .map(|r| headers.contains_key(&r.name))
                    .collect(),
            )
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            Presence::Bits(bits) => i < 128 && bits & (1 << i) != 0,
            Presence::Many(present) => present.get(i).copied().unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::HeaderValue as ConfigValue;

    fn option(key: &str, value: &str, action: Option<HeaderAppendAction>) -> HeaderValueOption {
        HeaderValueOption {
            header: ConfigValue {
                key: key.into(),
                value: value.into(),
            },
            append_action: action,
            append: None,
            keep_empty_value: false,
        }
    }

    fn rules(adds: &[HeaderValueOption], removes: &[&str], direction: Direction) -> HeaderRules {
        let removes: Vec<String> = removes.iter().map(|s| s.to_string()).collect();
        HeaderRules::build(adds, &removes, direction, "adds", "removes").unwrap()
    }

    fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    fn plain() -> LogContext<'static> {
        LogContext::default()
    }

    #[test]
    fn each_append_action_as_envoy() {
        use HeaderAppendAction::*;
        let r = rules(
            &[
                option("x-append", "new", Some(APPEND_IF_EXISTS_OR_ADD)),
                option("x-absent", "new", Some(ADD_IF_ABSENT)),
                option("x-absent-there", "new", Some(ADD_IF_ABSENT)),
                option("x-over", "new", Some(OVERWRITE_IF_EXISTS_OR_ADD)),
                option("x-over-missing", "new", Some(OVERWRITE_IF_EXISTS_OR_ADD)),
                option("x-if", "new", Some(OVERWRITE_IF_EXISTS)),
                option("x-if-missing", "new", Some(OVERWRITE_IF_EXISTS)),
            ],
            &[],
            Direction::Request,
        );
        let mut h = HeaderMap::new();
        for name in ["x-append", "x-absent-there", "x-over", "x-if"] {
            h.append(name, HeaderValue::from_static("old"));
            h.append(name, HeaderValue::from_static("old2"));
        }
        r.apply(&mut h, &plain(), Direction::Request);
        assert_eq!(values(&h, "x-append"), ["old", "old2", "new"]);
        assert_eq!(values(&h, "x-absent"), ["new"]);
        assert_eq!(values(&h, "x-absent-there"), ["old", "old2"]);
        assert_eq!(values(&h, "x-over"), ["new"]);
        assert_eq!(values(&h, "x-over-missing"), ["new"]);
        assert_eq!(values(&h, "x-if"), ["new"]);
        assert!(values(&h, "x-if-missing").is_empty());
    }

    #[test]
    fn conditions_look_at_the_headers_before_the_level_and_overwrites_come_first() {
        use HeaderAppendAction::*;
        // Both ADD_IF_ABSENT see the header absent; the overwrite is written before the
        // append that precedes it in config order.
        let r = rules(
            &[
                option("x-a", "1", Some(ADD_IF_ABSENT)),
                option("x-a", "2", Some(ADD_IF_ABSENT)),
                option("x-b", "append", Some(APPEND_IF_EXISTS_OR_ADD)),
                option("x-b", "over", Some(OVERWRITE_IF_EXISTS_OR_ADD)),
                option("x-c", "over", Some(OVERWRITE_IF_EXISTS_OR_ADD)),
                option("x-c", "if", Some(OVERWRITE_IF_EXISTS)),
            ],
            &[],
            Direction::Request,
        );
        let mut h = HeaderMap::new();
        r.apply(&mut h, &plain(), Direction::Request);
        assert_eq!(values(&h, "x-a"), ["1", "2"]);
        assert_eq!(values(&h, "x-b"), ["over", "append"]);
        assert_eq!(values(&h, "x-c"), ["over"]);
    }

    #[test]
    fn removes_come_before_adds_and_deprecated_append_maps() {
        let mut overwrite = option("x-a", "new", None);
        overwrite.append = Some(false);
        let mut append = option("x-b", "new", None);
        append.append = Some(true);
        let r = rules(
            &[overwrite, append],
            &["x-a", "x-b", "X-Gone"],
            Direction::Response,
        );
        let mut h = HeaderMap::new();
        for name in ["x-a", "x-b", "x-gone"] {
            h.append(name, HeaderValue::from_static("old"));
        }
        r.apply(&mut h, &plain(), Direction::Request);
        assert_eq!(values(&h, "x-a"), ["new"]);
        assert_eq!(values(&h, "x-b"), ["new"]);
        assert!(values(&h, "x-gone").is_empty());
    }

    #[test]
    fn empty_values_need_keep_empty_value() {
        let mut kept = option("x-kept", "", None);
        kept.keep_empty_value = true;
        let mut kept_formatted = option("x-kept-f", "%REQ(x-none)%", None);
        kept_formatted.keep_empty_value = true;
        let r = rules(
            &[
                option("x-dropped", "", None),
                option("x-dropped-f", "%REQ(x-none)%", None),
                kept,
                kept_formatted,
            ],
            &[],
            Direction::Request,
        );
        let mut h = HeaderMap::new();
        r.apply(&mut h, &plain(), Direction::Request);
        assert!(!h.contains_key("x-dropped"));
        assert!(!h.contains_key("x-dropped-f"));
        assert_eq!(values(&h, "x-kept"), [""]);
        assert_eq!(values(&h, "x-kept-f"), [""]);
    }

    #[test]
    fn command_operators_fill_values_in() {
        let r = rules(
            &[
                option("x-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", None),
                option("x-peer", "ip=%DOWNSTREAM_REMOTE_ADDRESS%", None),
                option("x-copy", "%REQ(x-in)%/%PROTOCOL%", None),
                option("x-pct", "100%%", None),
            ],
            &[],
            Direction::Request,
        );
        assert!(r.reads_request());
        assert_eq!(r.request_header_names().collect::<Vec<_>>(), ["x-in"]);
        let mut h = HeaderMap::new();
        h.insert("x-in", HeaderValue::from_static("v"));
        let remote = "10.1.2.3:4567".parse().unwrap();
        let base = LogContext {
            downstream_remote: Some(remote),
            protocol: Some("HTTP/1.1"),
            ..LogContext::default()
        };
        r.apply(&mut h, &base, Direction::Request);
        assert_eq!(values(&h, "x-client"), ["10.1.2.3"]);
        assert_eq!(values(&h, "x-peer"), ["ip=10.1.2.3:4567"]);
        assert_eq!(values(&h, "x-copy"), ["v/HTTP/1.1"]);
        assert_eq!(values(&h, "x-pct"), ["100%"]);
    }

    #[test]
    fn config_errors_name_the_field_and_the_operator() {
        let build = |adds: &[HeaderValueOption], removes: &[&str], direction| {
            let removes: Vec<String> = removes.iter().map(|s| s.to_string()).collect();
            HeaderRules::build(adds, &removes, direction, "r.adds", "r.removes").unwrap_err()
        };
        let e = build(&[], &[":path"], Direction::Request);
        assert_eq!(e.path, "r.removes[0]");
        let e = build(&[], &["x-ok", "Host"], Direction::Request);
        assert_eq!(e.path, "r.removes[1]");
        let e = build(&[option(":authority", "x", None)], &[], Direction::Request);
        assert_eq!(e.path, "r.adds[0].header.key");
        let e = build(&[option("host", "x", None)], &[], Direction::Response);
        assert_eq!(e.path, "r.adds[0].header.key");
        let e = build(
            &[option("x", "%UPSTREAM_HOST%", None)],
            &[],
            Direction::Request,
        );
        assert_eq!(e.path, "r.adds[0].header.value");
        assert!(e.message.contains("%UPSTREAM_HOST%"), "{}", e.message);
        let e = build(
            &[option("x", "%RESPONSE_CODE%", None)],
            &[],
            Direction::Request,
        );
        assert!(e.message.contains("RESPONSE_CODE"), "{}", e.message);
        let e = build(
            &[option("x", "%DYNAMIC_METADATA(a)%", None)],
            &[],
            Direction::Response,
        );
        assert!(e.message.contains("DYNAMIC_METADATA"), "{}", e.message);
        let e = build(&[option("x", "%DURATION%", None)], &[], Direction::Response);
        assert!(e.message.contains("DURATION"), "{}", e.message);
        let mut both = option("x", "v", Some(HeaderAppendAction::ADD_IF_ABSENT));
        both.append = Some(true);
        assert_eq!(
            build(&[both], &[], Direction::Request).path,
            "r.adds[0].append"
        );
        // On a response, the upstream host and status are known.
        assert!(
            HeaderRules::build(
                &[option(
                    "x",
                    "%UPSTREAM_HOST% %RESPONSE_CODE% %RESP(a)%",
                    None
                )],
                &[],
                Direction::Response,
                "a",
                "r"
            )
            .is_ok()
        );
    }
}
