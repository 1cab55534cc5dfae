//! Regexes of a route config, compiled once at load with a bound on their size, and
//! `regex_rewrite` (`RegexMatchAndSubstitute`) with RE2's substitution syntax.
//!
//! Envoy compiles with RE2; the `regex` crate's syntax is RE2's (no backreferences, no
//! look-around), so a pattern Envoy takes is taken here, and one neither takes is a config error
//! naming its field.

use crate::config::FieldError;
use crate::config::schema::RegexMatchAndSubstitute;
use regex::{Regex, RegexBuilder};
use std::borrow::Cow;

/// The most heap one compiled regex may take (the `regex` crate's `size_limit`): a config
/// cannot make weir build a program of unbounded size.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles `pattern` (the field at `path`) with [`REGEX_SIZE_LIMIT`].
pub fn compile(pattern: &str, path: &str) -> Result<Regex, FieldError> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| FieldError::new(path, format!("invalid regex: {e}")))
}

/// Compiles `pattern` so that it must match a whole string, as RE2's FullMatch does.
pub fn full(pattern: &str, path: &str) -> Result<Regex, FieldError> {
    compile(&format!("^(?:{pattern})$"), path)
}

/// A compiled `regex_rewrite`: every match of the pattern in the path is replaced.
#[derive(Debug, Clone)]
pub struct PathRegexRewrite {
    pattern: Regex,
    /// The substitution in the `regex` crate's syntax (`${1}`, `$$`).
    replacement: String,
}

impl PathRegexRewrite {
    /// Builds the rewrite at `path` (`...regex_rewrite`).
    pub fn build(
        config: &RegexMatchAndSubstitute,
        path: &str,
    ) -> Result<PathRegexRewrite, FieldError> {
        let pattern = compile(&config.pattern.regex, &format!("{path}.pattern.regex"))?;
        let replacement = translate_substitution(&config.substitution, pattern.captures_len())
            .map_err(|why| FieldError::new(format!("{path}.substitution"), why))?;
        Ok(PathRegexRewrite {
            pattern,
            replacement,
        })
    }

    /// `path_and_query` with its path (not its query) rewritten, as Envoy's
    /// `regex_rewrite` does.
    pub fn apply<'a>(&self, path_and_query: &'a str) -> Cow<'a, str> {
        let (path, query) = match path_and_query.find('?') {
            Some(at) => path_and_query.split_at(at),
            None => (path_and_query, ""),
        };
        match self.pattern.replace_all(path, self.replacement.as_str()) {
            Cow::Borrowed(_) => Cow::Borrowed(path_and_query),
            Cow::Owned(mut rewritten) => {
                rewritten.push_str(query);
                Cow::Owned(rewritten)
            }
        }
    }
}

/// RE2's rewrite string (`\0`..`\9` groups, `\\` a backslash) in the `regex` crate's syntax;
/// a group the pattern does not have, or any other escape, is an error (as RE2 says).
fn translate_substitution(substitution: &str, groups: usize) -> Result<String, String> {
    let mut out = String::with_capacity(substitution.len() + 8);
    let mut chars = substitution.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some(digit @ '0'..='9') => {
                    let group = digit as usize - '0' as usize;
                    if group >= groups {
                        return Err(format!("\\{group} names a group the pattern does not have"));
                    }
                    out.push_str(&format!("${{{group}}}"));
                }
                _ => return Err("a backslash is followed by a digit or a backslash".into()),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::RegexMatcher;

    fn rewrite(pattern: &str, substitution: &str) -> Result<PathRegexRewrite, FieldError> {
        PathRegexRewrite::build(
            &RegexMatchAndSubstitute {
                pattern: RegexMatcher {
                    regex: pattern.into(),
                    google_re2: None,
                },
                substitution: substitution.into(),
            },
            "r.regex_rewrite",
        )
    }

    #[test]
    fn rewrites_every_match_of_the_path_and_keeps_the_query() {
        let r = rewrite("o", "0").unwrap();
        assert_eq!(r.apply("/rx/foo/o?oo=1"), "/rx/f00/0?oo=1");
        let r = rewrite(r"^/r6/(\w+)/(\w+)", r"/x/\2/\1").unwrap();
        assert_eq!(r.apply("/r6/ab/cd/e?x=1"), "/x/cd/ab/e?x=1");
        assert!(matches!(r.apply("/other"), Cow::Borrowed("/other")));
        let r = rewrite("^/a", r"/$1\\").unwrap();
        assert_eq!(r.apply("/a/b"), r"/$1\/b");
    }

    #[test]
    fn bad_patterns_and_substitutions_name_their_field() {
        let e = rewrite("(", "x").unwrap_err();
        assert_eq!(e.path, "r.regex_rewrite.pattern.regex");
        let e = rewrite("(a)", r"\2").unwrap_err();
        assert_eq!(e.path, "r.regex_rewrite.substitution");
        let e = rewrite("(a)", r"\q").unwrap_err();
        assert_eq!(e.path, "r.regex_rewrite.substitution");
    }

    #[test]
    fn a_huge_program_is_refused() {
        let e = compile(r"\w{1000}\w{1000}\w{1000}", "m.safe_regex.regex").unwrap_err();
        assert_eq!(e.path, "m.safe_regex.regex");
        assert!(e.message.contains("invalid regex"), "{e:?}");
    }
}
