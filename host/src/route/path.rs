//! The path a route sees: RFC 3986 normalisation, slash merging and escaped slashes, as
//! Envoy's HTTP connection manager applies them (`normalize_path`, `merge_slashes`,
//! `path_with_escaped_slashes_action`) before any HTTP filter or route looks at `:path`.
//!
//! Only the path is touched; the query (everything from the first `?`) is kept byte for byte.
//! Each function here is pure: the connection manager decides what to do with the outcome
//! (see `http::sanitize`).

pub use crate::config::http_manager::PathWithEscapedSlashesAction;
use std::borrow::Cow;

pub use crate::config::http_manager::PathNormalization;
/// What normalising one request's path came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathOutcome {
    /// Nothing to change.
    Unchanged,
    /// Go on with this path (and the original query).
    Rewritten(String),
    /// Answer with a redirect (307) to this path and query: it had escaped slashes and
    /// `UNESCAPE_AND_REDIRECT` is set.
    Redirect(String),
    /// Answer 400: the path cannot be normalised, or it has escaped slashes and
    /// `REJECT_REQUEST` is set.
    Reject(&'static str),
}

impl PathNormalization {
    /// Normalises `path_and_query` (an origin-form target: it starts with `/`), in Envoy's
    /// order: escaped slashes first (so that `%2F..` is a dot segment once unescaped), then
    /// RFC 3986 normalisation, then slash merging; a redirect is decided after all three,
    /// to the fully normalised path.
    pub fn apply(&self, path_and_query: &str) -> PathOutcome {
        let (path, query) = match path_and_query.find('?') {
            Some(at) => path_and_query.split_at(at),
            None => (path_and_query, ""),
        };
        let mut path = Cow::Borrowed(path);
        let mut redirect = false;
        match self.escaped_slashes {
            PathWithEscapedSlashesAction::IMPLEMENTATION_SPECIFIC_DEFAULT
            | PathWithEscapedSlashesAction::KEEP_UNCHANGED => {}
            action => {
                if let Some(unescaped) = unescape_slashes(&path) {
                    match action {
                        PathWithEscapedSlashesAction::REJECT_REQUEST => {
                            return PathOutcome::Reject("escaped slashes in the path");
                        }
                        PathWithEscapedSlashesAction::UNESCAPE_AND_REDIRECT => redirect = true,
                        _ => {}
                    }
                    path = Cow::Owned(unescaped);
                }
            }
        }
        if self.normalize_path {
            match normalize_rfc3986(&path) {
                Some(Cow::Owned(normalized)) => path = Cow::Owned(normalized),
                Some(Cow::Borrowed(_)) => {}
                None => return PathOutcome::Reject("path normalization failed"),
            }
        }
        if self.merge_slashes
            && let Cow::Owned(merged) = merge_slashes(&path)
        {
            path = Cow::Owned(merged);
        }
        match path {
            Cow::Borrowed(_) if !redirect => PathOutcome::Unchanged,
            path => {
                let whole = format!("{path}{query}");
                if redirect {
                    PathOutcome::Redirect(whole)
                } else {
                    PathOutcome::Rewritten(whole)
                }
            }
        }
    }
}

/// Normalises a path (without its query) as RFC 3986 section 6 has it, the way Envoy's
/// `normalize_path` does:
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every other
///   escape is kept as written (no case normalisation: `%2f` stays `%2f`), as is a `%` that
///   does not start an escape;
/// - `\` separates segments as `/` does, and is written `/`;
/// - dot segments are removed (RFC 3986 5.2.4), never above the root, and a `.` or `..`
///   segment carrying `;parameters` counts as one (Envoy's
///   `strip_dotdot_segments_with_parameters`, against servlet containers that drop them);
/// - a path not starting with `/` gets one.
///
/// `None` when the path holds an encoded NUL (`%00`), which no normalisation makes safe.
/// Borrows the input when it is already normal.
pub fn normalize_rfc3986(path: &str) -> Option<Cow<'_, str>> {
    if path.starts_with('/') && is_plainly_normal(path) {
        return Some(Cow::Borrowed(path));
    }
    let body = path.strip_prefix(['/', '\\']).unwrap_or(path);
    let segments: Vec<Cow<'_, str>> = body
        .split(['/', '\\'])
        .map(decode_unreserved)
        .collect::<Option<_>>()?;
    let last = segments.len().saturating_sub(1);
    let mut output: Vec<Cow<'_, str>> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.into_iter().enumerate() {
        match dot_segment(&segment) {
            Some(DotSegment::Current) => {}
            Some(DotSegment::Parent) => {
                output.pop();
            }
            None => {
                output.push(segment);
                continue;
            }
        }
        // A dot segment at the end leaves a directory: `/a/b/..` is `/a/`.
        if i == last {
            output.push(Cow::Borrowed(""));
        }
    }
    let mut normalized = String::with_capacity(path.len() + 1);
    for segment in &output {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    Some(if normalized == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normalized)
    })
}

/// Whether `path` has nothing [`normalize_rfc3986`] would change: no escape, no backslash
/// and no segment starting with a dot (the common case, checked without allocating).
fn is_plainly_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    !bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'%' || b == b'\\' || (b == b'.' && i > 0 && bytes[i - 1] == b'/'))
}

enum DotSegment {
    Current,
    Parent,
}

/// `.` or `..`, alone or followed by `;parameters`.
fn dot_segment(segment: &str) -> Option<DotSegment> {
    let name = segment.split_once(';').map_or(segment, |(name, _)| name);
    match name {
        "." => Some(DotSegment::Current),
        ".." => Some(DotSegment::Parent),
        _ => None,
    }
}

/// Decodes the percent-encoded unreserved characters of one segment; `None` on `%00`.
fn decode_unreserved(segment: &str) -> Option<Cow<'_, str>> {
    if !segment.contains('%') {
        return Some(Cow::Borrowed(segment));
    }
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex_value(*high).zip(hex_value(*low)),
            _ => None,
        };
        match escaped {
            Some((0, 0)) => return None,
            Some((high, low)) if is_unreserved((high << 4) | low) => {
                out.push(char::from((high << 4) | low));
                i += 3;
            }
            Some(_) => {
                // Kept as written: case and all.
                out.push_str(&segment[i..i + 3]);
                i += 3;
            }
            None => {
                // A lone byte, ASCII or part of a UTF-8 character: copy up to the next `%`.
                let next = bytes[i + 1..]
                    .iter()
                    .position(|&b| b == b'%')
                    .map_or(bytes.len(), |at| i + 1 + at);
                out.push_str(&segment[i..next]);
                i = next;
            }
        }
    }
    Some(Cow::Owned(out))
}

pub(crate) fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// RFC 3986 2.3: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Replaces every run of `/` in a path (without its query) with one `/`, as Envoy's
/// `merge_slashes`. Borrows the input when there is nothing to merge.
pub fn merge_slashes(path: &str) -> Cow<'_, str> {
    if !path.contains("//") {
        return Cow::Borrowed(path);
    }
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && merged.ends_with('/') {
            continue;
        }
        merged.push(c);
    }
    Cow::Owned(merged)
}

/// Unescapes `%2F`/`%2f` to `/` and `%5C`/`%5c` to `\` in a path (without its query);
/// `None` when it has none.
pub fn unescape_slashes(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let is_escaped_slash = |i: usize| match bytes.get(i..i + 3) {
        Some([b'%', b'2', b'f' | b'F']) => Some('/'),
        Some([b'%', b'5', b'c' | b'C']) => Some('\\'),
        _ => None,
    };
    if !(0..bytes.len()).any(|i| is_escaped_slash(i).is_some()) {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(slash) = is_escaped_slash(i) {
            out.push(slash);
            i += 3;
        } else {
            let next = (i + 1..bytes.len())
                .find(|&j| bytes[j] == b'%')
                .unwrap_or(bytes.len());
            out.push_str(&path[i..next]);
            i = next;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(path: &str) -> Option<String> {
        normalize_rfc3986(path).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for path in [
            "/",
            "/xyz",
            "/x/y/z",
            "/a/b/",
            "/a.b/c..d/.e/f.",
            "/a;b=c/d",
        ] {
            assert!(
                matches!(normalize_rfc3986(path), Some(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_5_2_4() {
        // RFC 3986 5.2.4's own examples, as absolute paths, and 5.4's normal examples.
        assert_eq!(normalized("/a/b/c/./../../g").as_deref(), Some("/a/g"));
        assert_eq!(normalized("/mid/content=5/../6").as_deref(), Some("/mid/6"));
        assert_eq!(normalized("/b/c/./g").as_deref(), Some("/b/c/g"));
        assert_eq!(normalized("/b/c/.").as_deref(), Some("/b/c/"));
        assert_eq!(normalized("/b/c/./").as_deref(), Some("/b/c/"));
        assert_eq!(normalized("/b/c/..").as_deref(), Some("/b/"));
        assert_eq!(normalized("/b/c/../").as_deref(), Some("/b/"));
        assert_eq!(normalized("/b/c/../g").as_deref(), Some("/b/g"));
        assert_eq!(normalized("/b/c/../..").as_deref(), Some("/"));
        assert_eq!(normalized("/b/c/../../g").as_deref(), Some("/g"));
        assert_eq!(
            normalized("/b/c/g;x=1/./y").as_deref(),
            Some("/b/c/g;x=1/y")
        );
        assert_eq!(normalized("/b/c/g;x=1/../y").as_deref(), Some("/b/c/y"));
        // Names that only look like dot segments stay.
        assert_eq!(normalized("/b/c/g.").as_deref(), Some("/b/c/g."));
        assert_eq!(normalized("/b/c/.g").as_deref(), Some("/b/c/.g"));
        assert_eq!(normalized("/b/c/g..").as_deref(), Some("/b/c/g.."));
        assert_eq!(normalized("/b/c/..g").as_deref(), Some("/b/c/..g"));
        assert_eq!(normalized("/b/c/...").as_deref(), Some("/b/c/..."));
    }

    #[test]
    fn never_above_the_root() {
        assert_eq!(normalized("/..").as_deref(), Some("/"));
        assert_eq!(normalized("/../../admin").as_deref(), Some("/admin"));
        assert_eq!(normalized("/a/b/../../../../c").as_deref(), Some("/c"));
        assert_eq!(normalized("/.").as_deref(), Some("/"));
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        for path in [
            "/a/%2e%2e/admin",
            "/a/%2E%2E/admin",
            "/a/%2e%2E/admin",
            "/a/.%2e/admin",
            "/a/%2e./admin",
            "/a/../admin",
            "/a/./../admin",
            "/a/%2e/%2e%2e/admin",
        ] {
            assert_eq!(normalized(path).as_deref(), Some("/admin"), "{path}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_as_written() {
        assert_eq!(normalized("/%61%62%63").as_deref(), Some("/abc"));
        assert_eq!(
            normalized("/%41%7a%30%2D%5f%7E").as_deref(),
            Some("/Az0-_~")
        );
        // Reserved and other characters stay encoded, in their own case.
        assert_eq!(normalized("/a/%2F%2f/c").as_deref(), Some("/a/%2F%2f/c"));
        assert_eq!(normalized("/%5c%25").as_deref(), Some("/%5c%25"));
        assert_eq!(normalized("/%c0%af").as_deref(), Some("/%c0%af"));
        assert_eq!(normalized("/a%20b%3Fc").as_deref(), Some("/a%20b%3Fc"));
        // Not an escape: kept as it is.
        assert_eq!(normalized("/100%").as_deref(), Some("/100%"));
        assert_eq!(normalized("/%zz/%4").as_deref(), Some("/%zz/%4"));
        assert_eq!(normalized("/%%41").as_deref(), Some("/%A"));
        // No double decoding: %252e is an encoded "%2e", not a dot.
        assert_eq!(
            normalized("/a/%252e%252e/b").as_deref(),
            Some("/a/%252e%252e/b")
        );
        // UTF-8 between escapes survives.
        assert_eq!(normalized("/é%41ü").as_deref(), Some("/éAü"));
    }

    #[test]
    fn encoded_nul_cannot_be_normalized() {
        for path in [
            "/xyz/.%00../abc",
            "/xyz/%00.%00./abc",
            "/xyz/AAAAA%%0000/abc",
        ] {
            assert_eq!(normalized(path), None, "{path}");
        }
    }

    #[test]
    fn backslash_is_a_separator() {
        assert_eq!(normalized("/a/..\\c").as_deref(), Some("/c"));
        assert_eq!(normalized("/a\\b").as_deref(), Some("/a/b"));
        assert_eq!(normalized("\\a").as_deref(), Some("/a"));
    }

    #[test]
    fn dot_segments_with_parameters() {
        assert_eq!(normalized("/xyz/..;foo=bar/abc").as_deref(), Some("/abc"));
        assert_eq!(normalized("/..;foo=bar/abc").as_deref(), Some("/abc"));
        assert_eq!(normalized("/xyz/..;foo=bar").as_deref(), Some("/"));
        assert_eq!(
            normalized("/xyz/.;foo=bar/abc").as_deref(),
            Some("/xyz/abc")
        );
        assert_eq!(normalized("/xyz/.;foo=bar").as_deref(), Some("/xyz/"));
        assert_eq!(
            normalized("/.;aaa/..;foo=bar/abc/.;mmm").as_deref(),
            Some("/abc/")
        );
        assert_eq!(normalized("/xyz/...;foo").as_deref(), Some("/xyz/...;foo"));
    }

    #[test]
    fn relative_and_empty_segments() {
        assert_eq!(normalized("a/b/../c").as_deref(), Some("/a/c"));
        assert_eq!(normalized("").as_deref(), Some("/"));
        // Empty segments are kept: merging them is merge_slashes' job.
        assert_eq!(normalized("/a//b/./c").as_deref(), Some("/a//b/c"));
        assert_eq!(normalized("//..").as_deref(), Some("/"));
    }

    #[test]
    fn merges_slashes() {
        assert_eq!(merge_slashes(""), "");
        assert_eq!(merge_slashes("/a"), "/a");
        assert_eq!(merge_slashes("//a/b/c"), "/a/b/c");
        assert_eq!(merge_slashes("/a////b/c//"), "/a/b/c/");
        assert!(matches!(merge_slashes("/a/b/"), Cow::Borrowed(_)));
    }

    #[test]
    fn unescapes_slashes() {
        assert_eq!(unescape_slashes(""), None);
        assert_eq!(unescape_slashes("/a/b/c"), None);
        assert_eq!(unescape_slashes("%2b%2"), None);
        assert_eq!(unescape_slashes("%2f%2F").as_deref(), Some("//"));
        assert_eq!(unescape_slashes("/a%2Fb%2fc/").as_deref(), Some("/a/b/c/"));
        assert_eq!(unescape_slashes("%5c%5C").as_deref(), Some("\\\\"));
        assert_eq!(unescape_slashes("%%2fa/").as_deref(), Some("%/a/"));
        assert_eq!(unescape_slashes("%2%2fa/").as_deref(), Some("%2/a/"));
        assert_eq!(
            unescape_slashes("/x/%2E%2e/z%2f%2Fabc%5C../def").as_deref(),
            Some("/x/%2E%2e/z//abc\\../def")
        );
    }

    fn policy(
        normalize_path: bool,
        merge_slashes: bool,
        escaped_slashes: PathWithEscapedSlashesAction,
    ) -> PathNormalization {
        PathNormalization {
            normalize_path,
            merge_slashes,
            escaped_slashes,
        }
    }

    #[test]
    fn the_query_is_never_touched() {
        let all = policy(
            true,
            true,
            PathWithEscapedSlashesAction::UNESCAPE_AND_FORWARD,
        );
        assert_eq!(
            all.apply("/a/../b//c%2Fd?x=/../%2F//&y=%2e%2e"),
            PathOutcome::Rewritten("/b/c/d?x=/../%2F//&y=%2e%2e".into())
        );
        assert_eq!(all.apply("/b?/.."), PathOutcome::Unchanged);
        assert_eq!(all.apply("/b/..?"), PathOutcome::Rewritten("/?".into()));
    }

    #[test]
    fn defaults_normalize_only() {
        let default = PathNormalization::default();
        assert_eq!(default.apply("/index.html"), PathOutcome::Unchanged);
        assert_eq!(
            default.apply("/a/%2e%2e/admin?q=1"),
            PathOutcome::Rewritten("/admin?q=1".into())
        );
        assert_eq!(default.apply("/a//b"), PathOutcome::Unchanged);
        assert_eq!(default.apply("/a%2Fb"), PathOutcome::Unchanged);
        assert_eq!(
            default.apply("/a/%00"),
            PathOutcome::Reject("path normalization failed")
        );
        let off = policy(false, false, PathWithEscapedSlashesAction::KEEP_UNCHANGED);
        assert_eq!(off.apply("/a/../admin"), PathOutcome::Unchanged);
        assert_eq!(off.apply("/a/%00"), PathOutcome::Unchanged);
    }

    #[test]
    fn merge_slashes_after_normalization() {
        let merge = policy(true, true, PathWithEscapedSlashesAction::KEEP_UNCHANGED);
        assert_eq!(
            merge.apply("//dir///file"),
            PathOutcome::Rewritten("/dir/file".into())
        );
        let merge_only = policy(false, true, PathWithEscapedSlashesAction::KEEP_UNCHANGED);
        assert_eq!(
            merge_only.apply("//a/../b"),
            PathOutcome::Rewritten("/a/../b".into())
        );
    }

    #[test]
    fn escaped_slash_actions() {
        let path = "/a%2F..%2fadmin";
        let keep = policy(true, false, PathWithEscapedSlashesAction::KEEP_UNCHANGED);
        assert_eq!(keep.apply(path), PathOutcome::Unchanged);
        let reject = policy(true, false, PathWithEscapedSlashesAction::REJECT_REQUEST);
        assert_eq!(
            reject.apply(path),
            PathOutcome::Reject("escaped slashes in the path")
        );
        assert_eq!(reject.apply("/a/b"), PathOutcome::Unchanged);
        let forward = policy(
            true,
            false,
            PathWithEscapedSlashesAction::UNESCAPE_AND_FORWARD,
        );
        assert_eq!(forward.apply(path), PathOutcome::Rewritten("/admin".into()));
        assert_eq!(
            forward.apply("/a%5Cb"),
            PathOutcome::Rewritten("/a/b".into()),
            "an unescaped backslash is a separator to the normaliser"
        );
        let redirect = policy(
            true,
            true,
            PathWithEscapedSlashesAction::UNESCAPE_AND_REDIRECT,
        );
        assert_eq!(
            redirect.apply("/x%2F%2F../y?q=%2F"),
            PathOutcome::Redirect("/x/y?q=%2F".into()),
            "`..` takes away the empty segment between the unescaped slashes"
        );
        assert_eq!(
            redirect.apply("/a/b%2Fc"),
            PathOutcome::Redirect("/a/b/c".into())
        );
        assert_eq!(redirect.apply("/a/b"), PathOutcome::Unchanged);
    }
}
