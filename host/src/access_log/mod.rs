//! Envoy's access logs: `access_log[]` on the HTTP connection manager, on `tcp_proxy`, on the
//! listener ([`listener`]) and on the admin listener.
//!
//! Each entry is a logger: a sink (a file, stdout, stderr; see [`sink`]), a format (see
//! [`format`]: Envoy's text format, a `json_format`, or Envoy's default line) and an optional
//! `filter`. The connection manager builds one [`http::Entry`] per request only when its
//! listener has loggers; it is finished (and each logger that takes it writes a line) when the
//! response body ends or is dropped.

pub mod format;
pub mod http;
pub mod listener;
mod picked;
pub mod sink;
pub mod tcp;

use crate::config::FieldError;
use format::{Format, LogContext};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

const FILE_TYPE: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT_TYPE: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR_TYPE: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// The loggers of one connection manager (never empty: a manager without loggers has none).
#[derive(Debug)]
pub struct AccessLogs {
    loggers: Vec<Logger>,
    needs_response_headers: bool,
    /// Whether some format prints `%UPSTREAM_CLUSTER%`.
    reads_upstream_cluster: bool,
    /// The request headers some format reads: an entry copies these alone.
    request_header_names: picked::PickNames,
    /// The response headers some format reads.
    response_header_names: picked::PickNames,
}

/// One `access_log[]` entry.
#[derive(Debug)]
struct Logger {
    sink: Arc<sink::Sink>,
    line: LineFormat,
    filter: Option<Filter>,
}

/// How a logger writes an entry.
#[derive(Debug)]
enum LineFormat {
    /// A text format (the line as the format says; Envoy adds no newline).
    Text(Format),
    /// `json_format`: one JSON object per line, keys sorted as Envoy's.
    Json {
        fields: Vec<(String, JsonField)>,
        omit_empty: bool,
    },
}

/// A `json_format` value: a format string or a nested object.
#[derive(Debug)]
enum JsonField {
    Format(Format),
    Object(Vec<(String, JsonField)>),
}

/// `filter`: which entries a logger writes.
#[derive(Debug)]
enum Filter {
    Status(Comparison),
    Duration(Comparison),
    NotHealthCheck,
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Eq,
    Ge,
    Le,
    Ne,
}

#[derive(Debug, Clone, Copy)]
struct Comparison {
    op: Op,
    value: u64,
}

impl Comparison {
    fn holds(self, actual: u64) -> bool {
        match self.op {
            Op::Eq => actual == self.value,
            Op::Ge => actual >= self.value,
            Op::Le => actual <= self.value,
            Op::Ne => actual != self.value,
        }
    }
}

impl Filter {
    fn keeps(&self, cx: &LogContext<'_>) -> bool {
        match self {
            Filter::Status(c) => c.holds(u64::from(cx.status.unwrap_or(0))),
            Filter::Duration(c) => c.holds(cx.duration.map_or(0, |d| d.as_millis() as u64)),
            Filter::NotHealthCheck => !cx.health_check,
            Filter::And(all) => all.iter().all(|f| f.keeps(cx)),
            Filter::Or(any) => any.iter().any(|f| f.keeps(cx)),
        }
    }
}

impl AccessLogs {
    /// The loggers of `access_log` (the raw config at `path`), or `None` when there are none.
    pub fn from_config(
        entries: &[Value],
        path: &str,
    ) -> Result<Option<Arc<AccessLogs>>, FieldError> {
        if entries.is_empty() {
            return Ok(None);
        }
        let mut loggers = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| Logger::from_config(entry, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let uses = |f: fn(&Format) -> bool| {
            loggers.iter().any(|l| match &l.line {
                LineFormat::Text(format) => f(format),
                LineFormat::Json { fields, .. } => json_uses(fields, f),
            })
        };
        let names = |f: for<'f> fn(&'f Format) -> Box<dyn Iterator<Item = &'f str> + 'f>| {
            let mut names: Vec<::http::HeaderName> = Vec::new();
            for logger in &loggers {
                let mut formats = Vec::new();
                logger.line.formats(&mut formats);
                for format in formats {
                    for name in f(format) {
                        if let Ok(name) = ::http::HeaderName::from_bytes(name.as_bytes())
                            && !names.contains(&name)
                        {
                            names.push(name);
                        }
                    }
                }
            }
            names
        };
        let needs_response_headers = uses(Format::uses_response_headers);
        let reads_upstream_cluster = uses(Format::uses_upstream_cluster);
        let request_header_names = names(|f| Box::new(f.request_header_names()));
        let response_header_names = names(|f| Box::new(f.response_header_names()));
        for logger in &mut loggers {
            logger.line.for_each_format(&mut |format| {
                format.assign_slots(&request_header_names, &response_header_names)
            });
        }
        let request_header_names = picked::PickNames::new(request_header_names);
        let response_header_names = picked::PickNames::new(response_header_names);
        Ok(Some(Arc::new(AccessLogs {
            needs_response_headers,
            reads_upstream_cluster,
            request_header_names,
            response_header_names,
            loggers,
        })))
    }

    /// Whether any format reads response headers or trailers.
    pub fn needs_response_headers(&self) -> bool {
        self.needs_response_headers
    }

    /// Whether some format prints the cluster a request was routed to.
    pub fn reads_upstream_cluster(&self) -> bool {
        self.reads_upstream_cluster
    }

    /// Where an entry keeps the request header `name`'s values, when some format reads it.
    pub fn request_slot(&self, name: &::http::HeaderName) -> Option<usize> {
        self.request_header_names.slot(name)
    }

    /// The request headers of `all` that some format reads (a small copy, not the map).
    pub fn copy_request_headers(&self, all: &::http::HeaderMap) -> format::PickedHeaders {
        format::PickedHeaders::copy(&self.request_header_names, all)
    }

    /// The response headers of `all` that some format reads.
    pub fn copy_response_headers(&self, all: &::http::HeaderMap) -> format::PickedHeaders {
        format::PickedHeaders::copy(&self.response_header_names, all)
    }

    /// Writes the entry `cx` to every logger whose filter keeps it.
    pub fn log(&self, cx: &LogContext<'_>) {
        for logger in &self.loggers {
            if logger.filter.as_ref().is_some_and(|f| !f.keeps(cx)) {
                continue;
            }
            logger
                .sink
                .write_with(|out| logger.line.render_into(cx, out));
        }
    }
}

fn json_uses(fields: &[(String, JsonField)], f: fn(&Format) -> bool) -> bool {
    fields.iter().any(|(_, field)| match field {
        JsonField::Format(format) => f(format),
        JsonField::Object(inner) => json_uses(inner, f),
    })
}

impl LineFormat {
    /// Every format in it.
    fn formats<'a>(&'a self, out: &mut Vec<&'a Format>) {
        fn walk<'a>(fields: &'a [(String, JsonField)], out: &mut Vec<&'a Format>) {
            for (_, field) in fields {
                match field {
                    JsonField::Format(format) => out.push(format),
                    JsonField::Object(inner) => walk(inner, out),
                }
            }
        }
        match self {
            LineFormat::Text(format) => out.push(format),
            LineFormat::Json { fields, .. } => walk(fields, out),
        }
    }

    /// Calls `f` with every format in it, to change.
    fn for_each_format(&mut self, f: &mut dyn FnMut(&mut Format)) {
        fn walk(fields: &mut [(String, JsonField)], f: &mut dyn FnMut(&mut Format)) {
            for (_, field) in fields {
                match field {
                    JsonField::Format(format) => f(format),
                    JsonField::Object(inner) => walk(inner, f),
                }
            }
        }
        match self {
            LineFormat::Text(format) => f(format),
            LineFormat::Json { fields, .. } => walk(fields, f),
        }
    }

    /// Appends the line for `cx` to `out`.
    fn render_into(&self, cx: &LogContext<'_>, out: &mut Vec<u8>) {
        match self {
            LineFormat::Text(format) => format.render_into(cx, out),
            LineFormat::Json { fields, omit_empty } => {
                out.extend_from_slice(json_object(fields, cx, *omit_empty).to_string().as_bytes());
                out.push(b'\n');
            }
        }
    }
}

fn json_object(
    fields: &[(String, JsonField)],
    cx: &LogContext<'_>,
    omit_empty: bool,
) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (key, field) in fields {
        let value = match field {
            JsonField::Format(format) => format.render_json(cx),
            JsonField::Object(inner) => json_object(inner, cx, omit_empty),
        };
        let empty = match &value {
            serde_json::Value::Null => true,
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if omit_empty && empty {
            continue;
        }
        object.insert(key.clone(), value);
    }
    serde_json::Value::Object(object)
}

/// `envoy.config.accesslog.v3.AccessLog`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessLogConfig {
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    filter: Option<FilterConfig>,
    #[serde(default)]
    typed_config: Option<Value>,
}

/// `FileAccessLog`, `StdoutAccessLog`, `StderrAccessLog` (less `@type`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoggerConfig {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    log_format: Option<LogFormatConfig>,
    /// The older text format field of `FileAccessLog`.
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    json_format: Option<serde_json::Map<String, Value>>,
}

/// `envoy.config.core.v3.SubstitutionFormatString`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFormatConfig {
    #[serde(default)]
    text_format: Option<String>,
    #[serde(default)]
    text_format_source: Option<DataSource>,
    #[serde(default)]
    json_format: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    omit_empty_values: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataSource {
    inline_string: String,
}

/// `envoy.config.accesslog.v3.AccessLogFilter` (the filters weir has).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConfig {
    #[serde(default)]
    status_code_filter: Option<ComparisonFilterConfig>,
    #[serde(default)]
    duration_filter: Option<ComparisonFilterConfig>,
    #[serde(default)]
    not_health_check_filter: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    and_filter: Option<FilterList>,
    #[serde(default)]
    or_filter: Option<FilterList>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComparisonFilterConfig {
    comparison: ComparisonConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComparisonConfig {
    #[serde(default)]
    op: Option<String>,
    value: RuntimeUInt,
}

/// `RuntimeUInt32`: the runtime key is accepted and not read (weir has no runtime layer for
/// it): `default_value` is the value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeUInt {
    #[serde(default)]
    default_value: u64,
    #[serde(default)]
    #[allow(dead_code)]
    runtime_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterList {
    filters: Vec<FilterConfig>,
}

fn typed<T: serde::de::DeserializeOwned>(value: &Value, path: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let at = if inner == "." {
            path.to_string()
        } else {
            format!("{path}.{inner}")
        };
        FieldError::new(at, e.into_inner())
    })
}

impl Logger {
    fn from_config(entry: &Value, path: &str) -> Result<Logger, FieldError> {
        let config: AccessLogConfig = typed(entry, path)?;
        let typed_path = format!("{path}.typed_config");
        let mut typed_config = config.typed_config.clone().ok_or_else(|| {
            FieldError::new(&typed_path, "an access logger needs its typed_config")
        })?;
        let type_url = typed_config
            .as_object_mut()
            .and_then(|o| o.remove("@type"))
            .and_then(|t| t.as_str().map(str::to_owned))
            .unwrap_or_default();
        let type_name = type_url.rsplit('/').next().unwrap_or_default().to_owned();
        let logger: LoggerConfig = typed(&typed_config, &typed_path)?;
        let target = match type_name.as_str() {
            FILE_TYPE => {
                let file = logger
                    .path
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| {
                        FieldError::new(
                            format!("{typed_path}.path"),
                            "a file access log needs a path",
                        )
                    })?;
                sink::Target::File(file.into())
            }
            STDOUT_TYPE | STDERR_TYPE if logger.path.is_some() || logger.format.is_some() => {
                return Err(FieldError::new(
                    &typed_path,
                    "stdout/stderr access logs take only log_format",
                ));
            }
            STDOUT_TYPE => sink::Target::Stdout,
            STDERR_TYPE => sink::Target::Stderr,
            other => {
                return Err(FieldError::new(
                    format!("{typed_path}.@type"),
                    format!(
                        "unsupported access logger {other:?}; weir has {FILE_TYPE}, {STDOUT_TYPE} and {STDERR_TYPE}"
                    ),
                ));
            }
        };
        let line = line_format(&logger, &typed_path)?;
        let filter = config
            .filter
            .as_ref()
            .map(|f| filter(f, &format!("{path}.filter")))
            .transpose()?;
        let sink = sink::Sink::open(target).map_err(|e| {
            FieldError::new(format!("{typed_path}.path"), format!("cannot open: {e}"))
        })?;
        Ok(Logger { sink, line, filter })
    }
}

fn text_format(text: &str, path: &str) -> Result<LineFormat, FieldError> {
    Format::parse(text)
        .map(LineFormat::Text)
        .map_err(|e| FieldError::new(path, e))
}

fn line_format(logger: &LoggerConfig, path: &str) -> Result<LineFormat, FieldError> {
    let given = [
        logger.format.is_some(),
        logger.json_format.is_some(),
        logger.log_format.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(FieldError::new(
            path,
            "format, json_format and log_format are exclusive",
        ));
    }
    if let Some(text) = &logger.format {
        return text_format(text, &format!("{path}.format"));
    }
    if let Some(json) = &logger.json_format {
        return Ok(LineFormat::Json {
            fields: json_fields(json, &format!("{path}.json_format"))?,
            omit_empty: false,
        });
    }
    let Some(log_format) = &logger.log_format else {
        return text_format(format::DEFAULT_FORMAT, path);
    };
    let path = format!("{path}.log_format");
    match (
        &log_format.text_format,
        &log_format.text_format_source,
        &log_format.json_format,
    ) {
        (Some(text), None, None) => text_format(text, &format!("{path}.text_format")),
        (None, Some(source), None) => text_format(
            &source.inline_string,
            &format!("{path}.text_format_source.inline_string"),
        ),
        (None, None, Some(json)) => Ok(LineFormat::Json {
            fields: json_fields(json, &format!("{path}.json_format"))?,
            omit_empty: log_format.omit_empty_values,
        }),
        (None, None, None) => Err(FieldError::new(
            path,
            "needs text_format_source, text_format or json_format",
        )),
        _ => Err(FieldError::new(
            path,
            "text_format, text_format_source and json_format are exclusive",
        )),
    }
}

/// A `json_format` object, its keys sorted as Envoy writes them.
fn json_fields(
    json: &serde_json::Map<String, Value>,
    path: &str,
) -> Result<Vec<(String, JsonField)>, FieldError> {
    let mut fields = Vec::with_capacity(json.len());
    for (key, value) in json {
        let at = format!("{path}.{key}");
        let field = match value {
            Value::String(text) => {
                JsonField::Format(Format::parse(text).map_err(|e| FieldError::new(&at, e))?)
            }
            Value::Object(inner) => JsonField::Object(json_fields(inner, &at)?),
            _ => {
                return Err(FieldError::new(
                    at,
                    "a json_format value is a format string or an object",
                ));
            }
        };
        fields.push((key.clone(), field));
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(fields)
}

fn comparison(config: &ComparisonFilterConfig, path: &str) -> Result<Comparison, FieldError> {
    let op = match config.comparison.op.as_deref() {
        None | Some("EQ") => Op::Eq,
        Some("GE") => Op::Ge,
        Some("LE") => Op::Le,
        Some("NE") => Op::Ne,
        Some(other) => {
            return Err(FieldError::new(
                format!("{path}.comparison.op"),
                format!("unknown op {other:?}: EQ, GE, LE or NE"),
            ));
        }
    };
    Ok(Comparison {
        op,
        value: config.comparison.value.default_value,
    })
}

fn filter(config: &FilterConfig, path: &str) -> Result<Filter, FieldError> {
    let list = |list: &FilterList, name: &str| {
        list.filters
            .iter()
            .enumerate()
            .map(|(i, f)| filter(f, &format!("{path}.{name}.filters[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut chosen = Vec::new();
    if let Some(c) = &config.status_code_filter {
        chosen.push(Filter::Status(comparison(
            c,
            &format!("{path}.status_code_filter"),
        )?));
    }
    if let Some(c) = &config.duration_filter {
        chosen.push(Filter::Duration(comparison(
            c,
            &format!("{path}.duration_filter"),
        )?));
    }
    if config.not_health_check_filter.is_some() {
        chosen.push(Filter::NotHealthCheck);
    }
    if let Some(l) = &config.and_filter {
        chosen.push(Filter::And(list(l, "and_filter")?));
    }
    if let Some(l) = &config.or_filter {
        chosen.push(Filter::Or(list(l, "or_filter")?));
    }
    match chosen.len() {
        1 => Ok(chosen.remove(0)),
        0 => Err(FieldError::new(
            path,
            "needs one of status_code_filter, duration_filter, not_health_check_filter, and_filter, or_filter (the others are not implemented)",
        )),
        _ => Err(FieldError::new(path, "a filter is exactly one kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cx_with(status: u16, duration_ms: u64) -> LogContext<'static> {
        LogContext {
            status: Some(status),
            duration: Some(std::time::Duration::from_millis(duration_ms)),
            ..LogContext::default()
        }
    }

    #[test]
    fn filters_compare_as_envoys() {
        let config: FilterConfig = serde_json::from_value(json!({"or_filter": {"filters": [
            {"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 400, "runtime_key": "x"}}}},
            {"and_filter": {"filters": [
                {"duration_filter": {"comparison": {"op": "GE", "value": {"default_value": 1000}}}},
                {"not_health_check_filter": {}},
            ]}},
        ]}}))
        .expect("filter config");
        let f = filter(&config, "f").expect("filter");
        assert!(f.keeps(&cx_with(503, 1)));
        assert!(!f.keeps(&cx_with(200, 1)));
        assert!(f.keeps(&cx_with(200, 1500)));
    }

    #[test]
    fn unknown_loggers_filters_and_operators_are_errors_naming_them() {
        let bad_op = json!([{"name": "x", "typed_config": {
            "@type": format!("type.googleapis.com/{STDOUT_TYPE}"),
            "log_format": {"text_format_source": {"inline_string": "%FILTER_STATE(a)%"}}}}]);
        let error = AccessLogs::from_config(bad_op.as_array().expect("array"), "hcm.access_log")
            .expect_err("unknown operator");
        assert!(error.message.contains("FILTER_STATE"), "{error:?}");
        assert!(error.path.ends_with("inline_string"), "{error:?}");
        let bad_filter = json!([{"typed_config": {"@type": format!("type.googleapis.com/{STDOUT_TYPE}")},
            "filter": {"runtime_filter": {"runtime_key": "a"}}}]);
        let error = AccessLogs::from_config(bad_filter.as_array().expect("array"), "a")
            .expect_err("runtime filter");
        assert!(error.path.starts_with("a[0].filter"), "{error:?}");
        let bad_type = json!([{"typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"}}]);
        let error = AccessLogs::from_config(bad_type.as_array().expect("array"), "a")
            .expect_err("grpc logger");
        assert!(
            error.message.contains("HttpGrpcAccessLogConfig"),
            "{error:?}"
        );
    }

    #[test]
    fn json_lines_sort_keys_and_omit_empty_values() {
        let config = json!({"omit_empty_values": true,
            "json_format": {"z": "%RESPONSE_CODE%", "a": {"sni": "%REQUESTED_SERVER_NAME%"}, "f": "%RESPONSE_FLAGS%"}});
        let log_format: LogFormatConfig = serde_json::from_value(config).expect("config");
        let logger = LoggerConfig {
            path: None,
            log_format: Some(log_format),
            format: None,
            json_format: None,
        };
        let line = line_format(&logger, "x").expect("format");
        let mut out = Vec::new();
        line.render_into(&cx_with(200, 3), &mut out);
        assert_eq!(out, b"{\"f\":\"-\",\"z\":200}\n");
    }
}
