//! Limits a config text must meet before the YAML parser sees it: its size and how deep its
//! collections nest.
//!
//! The parser (libyaml under serde_yaml_ng) reads a whole document into events before serde
//! looks at it, and takes tens of seconds on a document nested 100,000 deep, although serde
//! refuses it in the end. [`check`] is one linear pass over the text that counts nesting as
//! YAML writes it (block indentation, `- ` and `? ` indicators, `[` and `{` flow collections,
//! skipping quoted scalars, block scalars and comments) and stops at the first line past the
//! limit, naming it.
//!
//! The count is conservative: it may count a level too many (a multi-line plain scalar's
//! continuation lines, the scalar item of a `- ` sequence), never too few, for the documents
//! YAML accepts. Real configs nest 15-20 deep, far from [`MAX_NESTING`].

use super::FieldError;
use super::file::MAX_CONFIG_BYTES;

/// How deep a config's collections may nest. Envoy's deepest shapes (a route's header matcher
/// inside a listener) are about 16 levels; a Wasm plugin's `configuration` adds its own.
pub const MAX_NESTING: usize = 64;

/// Refuses `text` when it is larger than [`MAX_CONFIG_BYTES`] or nests deeper than
/// [`MAX_NESTING`]; the error gives the line and column where the limit was passed.
pub fn check(text: &str) -> Result<(), FieldError> {
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(FieldError::new(
            ".",
            format!(
                "the config is {} bytes; weir reads configs of at most {MAX_CONFIG_BYTES} bytes",
                text.len()
            ),
        ));
    }
    match Scan::default().run(text) {
        Ok(()) => Ok(()),
        Err(at) => {
            let line_text = text.get(at.line_start..at.offset).unwrap_or("");
            let column = line_text.chars().count() + 1;
            Err(FieldError::new(
                ".",
                format!(
                    "line {}, column {column}: collections nest deeper than {MAX_NESTING} levels here; weir reads configs nested at most {MAX_NESTING} deep",
                    at.line
                ),
            ))
        }
    }
}

/// Where the limit was passed: the 1-based line, the byte offset of its start and of the
/// collection that went too deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TooDeep {
    line: usize,
    line_start: usize,
    offset: usize,
}

/// The state of the pass between lines.
#[derive(Debug, Default)]
struct Scan {
    /// Columns of the open block collections, innermost last.
    indents: Vec<usize>,
    /// Open flow collections (`[`, `{`).
    flow: usize,
    /// Inside a quoted scalar that goes on past its line: its quote.
    quote: Option<u8>,
    /// Inside a block scalar (`|`, `>`): lines indented more than this column are its text.
    /// `None` inside it stands for a top-level one (any indentation).
    block_scalar: Option<Option<usize>>,
    /// The next character starts a node (where a quote or a flow collection may open).
    node_start: bool,
    /// The line being read: number, byte offset of its start.
    line: usize,
    line_start: usize,
    /// The deepest nesting seen so far.
    deepest: usize,
}

impl Scan {
    fn run(&mut self, text: &str) -> Result<(), TooDeep> {
        let mut line_start = 0;
        for (index, raw) in text.split('\n').enumerate() {
            self.line = index + 1;
            self.line_start = line_start;
            line_start += raw.len() + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw).as_bytes();
            self.line_of(line)?;
        }
        Ok(())
    }

    fn too_deep(&self, column: usize) -> TooDeep {
        TooDeep {
            line: self.line,
            line_start: self.line_start,
            offset: self.line_start + column,
        }
    }

    fn check_depth(&mut self, column: usize) -> Result<(), TooDeep> {
        self.deepest = self.deepest.max(self.indents.len() + self.flow);
        if self.deepest > MAX_NESTING {
            return Err(self.too_deep(column));
        }
        Ok(())
    }

    fn line_of(&mut self, line: &[u8]) -> Result<(), TooDeep> {
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let blank = line[indent..].iter().all(|&b| b == b' ' || b == b'\t');
        if let Some(parent) = self.block_scalar {
            if blank || parent.is_none_or(|parent| indent > parent) {
                return Ok(());
            }
            self.block_scalar = None;
        }
        if self.quote.is_some() || self.flow > 0 {
            return self.rest_of_line(line, 0);
        }
        if blank || line[indent] == b'#' {
            return Ok(());
        }
        let mut at = indent;
        if indent == 0 && line.first() == Some(&b'%') {
            return Ok(()); // a directive
        }
        if indent == 0 && (is_marker(line, b"---") || is_marker(line, b"...")) {
            self.indents.clear();
            at = skip_spaces(line, 3);
        } else {
            self.enter_block(indent)?;
            // `- `, `? ` and `: ` open a nested collection at the column of what follows.
            while matches!(line.get(at), Some(b'-' | b'?' | b':'))
                && line.get(at + 1).is_none_or(|&b| b == b' ' || b == b'\t')
            {
                at = skip_spaces(line, at + 1);
                if at >= line.len() || line[at] == b'#' {
                    return Ok(());
                }
                self.enter_block(at)?;
            }
        }
        self.node_start = true;
        self.rest_of_line(line, at)
    }

    /// A block line or indicator at `column`: closes the collections indented deeper, opens
    /// one at `column` if none is there.
    fn enter_block(&mut self, column: usize) -> Result<(), TooDeep> {
        while self.indents.last().is_some_and(|&top| top > column) {
            self.indents.pop();
        }
        if self.indents.last() != Some(&column) {
            self.indents.push(column);
            self.check_depth(column)?;
        }
        Ok(())
    }

    /// Quoted scalars, flow collections, comments and block scalar headers from `at` on.
    fn rest_of_line(&mut self, line: &[u8], mut at: usize) -> Result<(), TooDeep> {
        while let Some(&byte) = line.get(at) {
            if let Some(quote) = self.quote {
                // `\x` escapes in double quotes, `''` is a quote in single quotes.
                let escaped = match quote {
                    b'"' => byte == b'\\',
                    _ => byte == b'\'' && line.get(at + 1) == Some(&b'\''),
                };
                if escaped {
                    at += 2;
                    continue;
                }
                if byte == quote {
                    self.quote = None;
                }
                at += 1;
                continue;
            }
            let after_space = at == 0 || matches!(line[at - 1], b' ' | b'\t');
            match byte {
                b' ' | b'\t' => {}
                b'#' if after_space => return Ok(()),
                b'"' | b'\'' if self.node_start => {
                    self.quote = Some(byte);
                    self.node_start = false;
                }
                b'[' | b'{' if self.node_start || self.flow > 0 => {
                    self.flow += 1;
                    self.check_depth(at)?;
                    self.node_start = true;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    self.node_start = false;
                }
                b',' if self.flow > 0 => self.node_start = true,
                b':' if self.flow > 0
                    || line.get(at + 1).is_none_or(|&b| b == b' ' || b == b'\t') =>
                {
                    self.node_start = true;
                }
                b'|' | b'>' if self.node_start && self.flow == 0 => {
                    // Its text is indented more than the collection it is a value of: the
                    // innermost one, or the one before when `- ` (or `? `, `: `) opened the
                    // innermost right here.
                    let mut enclosing = self.indents.iter().rev().copied();
                    let parent = match enclosing.next() {
                        Some(column) if column == at => enclosing.next(),
                        innermost => innermost,
                    };
                    self.block_scalar = Some(parent);
                    return Ok(());
                }
                b'&' | b'!' | b'*' if self.node_start => {
                    // An anchor or tag comes before its node; an alias is the node. Their
                    // names end at a space or a flow indicator.
                    while line.get(at + 1).is_some_and(|b| !b" \t,[]{}".contains(b)) {
                        at += 1;
                    }
                    self.node_start = byte != b'*';
                }
                _ => self.node_start = false,
            }
            at += 1;
        }
        Ok(())
    }
}

/// `---` or `...` at the start of `line`, alone or followed by a space.
fn is_marker(line: &[u8], marker: &[u8]) -> bool {
    line.starts_with(marker) && line.get(3).is_none_or(|&b| b == b' ' || b == b'\t')
}

fn skip_spaces(line: &[u8], mut at: usize) -> usize {
    while matches!(line.get(at), Some(b' ' | b'\t')) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The deepest nesting the pass counts in `text`.
    fn depth(text: &str) -> usize {
        let mut scan = Scan::default();
        scan.run(text).unwrap();
        scan.deepest
    }

    fn error_of(text: &str) -> String {
        match check(text) {
            Ok(()) => panic!("should be refused:\n{text}"),
            Err(error) => error.message,
        }
    }

    #[test]
    fn counts_block_mappings_by_indentation() {
        assert_eq!(depth("a:\n  b:\n    c: 1\n  d: 2\ne: 3\n"), 3);
        assert_eq!(depth("a:\n- b: 1\n  c: 2\n"), 2);
    }

    #[test]
    fn counts_sequence_indicators_on_one_line() {
        assert_eq!(depth("- - - x\n"), 4);
        let deep = "- ".repeat(MAX_NESTING + 1) + "x\n";
        assert!(error_of(&deep).contains("line 1, column"), "{deep}");
    }

    #[test]
    fn counts_flow_collections_but_not_brackets_in_scalars() {
        // A line's first collection counts as a block one too: one level more than it is.
        assert_eq!(depth("a: [1, {b: [2]}]\n"), 4);
        assert_eq!(depth("a: x [not, flow]\n"), 1);
        assert_eq!(depth("a: \"[[[[\"\nb: '{{{'\n"), 1);
        assert_eq!(depth("a: |\n  [[[[\n  {{{{\nb: 1\n"), 1);
        assert_eq!(depth("- |\n  [[[[\n- >-\n  {{{{\n- [1]\n"), 3);
        assert_eq!(depth("a:\n  - |\n    [[[[\n  - b\n"), 3);
        assert_eq!(depth("a: 1 # [[[[\n"), 1);
        assert_eq!(depth("a: &x [1]\nb: [*x]\nc: [!!str x, *x]\n"), 2);
        assert_eq!(depth(r#"{"a": "x\"[[[", "b": ['it''s [', 1]}"#), 3);
    }

    #[test]
    fn json_shaped_configs_count_their_braces() {
        let json = r#"{"a":{"b":[{"c":"{["}]}}"#;
        assert_eq!(depth(json), 5);
    }

    #[test]
    fn a_quoted_scalar_may_span_lines() {
        assert_eq!(depth("a: \"one [\n  two {\"\nb: [1]\n"), 2);
    }

    #[test]
    fn refuses_deep_flow_nesting_with_its_position() {
        let text = format!("key:\n  {}", "[".repeat(100_000));
        let started = Instant::now();
        let message = error_of(&text);
        assert!(started.elapsed() < Duration::from_secs(1));
        // Two block levels (the mapping, the indented value), then the 63rd `[` is too deep.
        assert!(message.contains("line 2, column 65"), "{message}");
    }

    #[test]
    fn refuses_deep_block_nesting_with_its_position() {
        let text: String = (0..200)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let message = error_of(&text);
        assert!(message.contains("line 65, column 65"), "{message}");
    }

    #[test]
    fn accepts_every_example_config() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            check(&text).unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message));
            assert!(depth(&text) < 24, "{}: {}", path.display(), depth(&text));
            checked += 1;
        }
        assert!(
            checked >= 10,
            "only {checked} examples in {}",
            dir.display()
        );
        check(crate::config::DEFAULT_CONFIG).unwrap();
    }

    /// Aliases nest what they name where they are used, past what a scan of the text sees:
    /// serde_yaml_ng's own recursion limit (128) refuses those, at once.
    #[test]
    fn aliases_nesting_past_the_limit_are_left_to_the_parser() {
        let nest = |inner: &str| format!("{}{inner}{}", "[".repeat(60), "]".repeat(60));
        let text = format!(
            "a: &a {}\nb: &b {}\nc: {}\n",
            nest("1"),
            nest("*a"),
            nest("*b")
        );
        check(&text).unwrap();
        let started = Instant::now();
        let error = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.starts_with("recursion limit exceeded"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn refuses_a_config_over_the_size_limit() {
        let text = "#".repeat(MAX_CONFIG_BYTES as usize + 1);
        assert!(error_of(&text).contains("at most"));
    }
}
