//! Plain header adds (no command operators, no removals), checked once and applied in
//! config order: a weighted cluster's `request_headers_to_add`. The levels' header rules
//! (route configuration, virtual host, route) are [`super::header_rules`].

use crate::config::FieldError;
use crate::config::schema::{HeaderAppendAction, HeaderValueOption};
use http::{HeaderMap, HeaderName, HeaderValue};

/// One header to add, checked.
#[derive(Debug, Clone)]
pub struct HeaderToAdd {
    name: HeaderName,
    value: HeaderValue,
    action: HeaderAppendAction,
}

/// Checks every entry of `options` (at `path`); empty values are dropped unless
/// `keep_empty_value`, as in Envoy.
pub fn build(options: &[HeaderValueOption], path: &str) -> Result<Vec<HeaderToAdd>, FieldError> {
    let mut headers = Vec::new();
    for (i, option) in options.iter().enumerate() {
        let entry = format!("{path}[{i}]");
        let name = HeaderName::from_bytes(option.header.key.as_bytes()).map_err(|_| {
            FieldError::new(
                format!("{entry}.header.key"),
                format!("{:?} is not a valid header name", option.header.key),
            )
        })?;
        if name.as_str().starts_with(':') || name == http::header::HOST {
            return Err(FieldError::new(
                format!("{entry}.header.key"),
                "pseudo-headers and host cannot be added",
            ));
        }
        let value = HeaderValue::from_str(&option.header.value).map_err(|_| {
            FieldError::new(
                format!("{entry}.header.value"),
                "not a valid header value (visible ASCII and spaces)",
            )
        })?;
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
        if value.is_empty() && !option.keep_empty_value {
            continue;
        }
        headers.push(HeaderToAdd {
            name,
            value,
            action,
        });
    }
    Ok(headers)
}

/// Applies `adds` to `headers`, in order.
pub fn apply(adds: &[HeaderToAdd], headers: &mut HeaderMap) {
    for add in adds {
        let present = headers.contains_key(&add.name);
        match add.action {
            HeaderAppendAction::APPEND_IF_EXISTS_OR_ADD => {
                headers.append(add.name.clone(), add.value.clone());
            }
            HeaderAppendAction::ADD_IF_ABSENT if !present => {
                headers.insert(add.name.clone(), add.value.clone());
            }
            HeaderAppendAction::OVERWRITE_IF_EXISTS_OR_ADD => {
                headers.insert(add.name.clone(), add.value.clone());
            }
            HeaderAppendAction::OVERWRITE_IF_EXISTS if present => {
                headers.insert(add.name.clone(), add.value.clone());
            }
            HeaderAppendAction::ADD_IF_ABSENT | HeaderAppendAction::OVERWRITE_IF_EXISTS => {}
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

    #[test]
    fn actions_combine_as_envoy_does() {
        let adds = build(
            &[
                option("alt-svc", "h3=\":443\"; ma=60", None),
                option("x-a", "new", Some(HeaderAppendAction::ADD_IF_ABSENT)),
                option("x-b", "new", Some(HeaderAppendAction::OVERWRITE_IF_EXISTS)),
                option("x-c", "new", Some(HeaderAppendAction::OVERWRITE_IF_EXISTS)),
                option("x-d", "", None),
            ],
            "p",
        );
        let Ok(adds) = adds else {
            panic!("valid headers: {adds:?}")
        };
        let mut headers = HeaderMap::new();
        headers.insert("alt-svc", HeaderValue::from_static("h2=\":443\""));
        headers.insert("x-a", HeaderValue::from_static("old"));
        headers.insert("x-b", HeaderValue::from_static("old"));
        apply(&adds, &mut headers);
        assert_eq!(headers.get_all("alt-svc").iter().count(), 2);
        assert_eq!(headers.get("x-a").map(|v| v.as_bytes()), Some(&b"old"[..]));
        assert_eq!(headers.get("x-b").map(|v| v.as_bytes()), Some(&b"new"[..]));
        assert!(!headers.contains_key("x-c"));
        assert!(!headers.contains_key("x-d"));
    }

    #[test]
    fn bad_names_are_field_errors() {
        let error = build(
            &[option("bad name", "v", None)],
            "rc.response_headers_to_add",
        );
        assert_eq!(
            error.err().map(|e| e.path),
            Some("rc.response_headers_to_add[0].header.key".into())
        );
    }
}
