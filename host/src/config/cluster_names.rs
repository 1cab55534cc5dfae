//! The names of the clusters a config defines, as the routes, filters and listeners that refer
//! to a cluster check them.

use std::collections::HashSet;
use std::fmt;

/// How many names an error message lists before it says how many more there are: a control
/// plane's thousands of clusters would otherwise make one log line of megabytes.
const NAMES_SHOWN: usize = 8;

/// A set of cluster names, looked up in constant time: a route table of a thousand routes
/// checked against a thousand clusters by a scan of a list is a million string comparisons,
/// and an xDS route update builds its table more than once.
#[derive(Clone, Default)]
pub struct ClusterNames<'a> {
    names: HashSet<&'a str>,
}

impl<'a> ClusterNames<'a> {
    /// Whether `name` is one of the clusters.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// How many clusters there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// These names and `more`.
    pub fn with(&self, more: impl IntoIterator<Item = &'a str>) -> ClusterNames<'a> {
        let mut names = self.names.clone();
        names.extend(more);
        ClusterNames { names }
    }
}

impl<'a> FromIterator<&'a str> for ClusterNames<'a> {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        ClusterNames {
            names: iter.into_iter().collect(),
        }
    }
}

impl<'a, const N: usize> From<[&'a str; N]> for ClusterNames<'a> {
    fn from(names: [&'a str; N]) -> Self {
        names.into_iter().collect()
    }
}

/// Sorted, and at most [`NAMES_SHOWN`] of them with a count of the rest, for error messages:
/// `["a", "b"]`, `["a", "b", ... and 998 more]`.
impl fmt::Debug for ClusterNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sorted: Vec<&str> = self.names.iter().copied().collect();
        sorted.sort_unstable();
        f.write_str("[")?;
        for (i, name) in sorted.iter().take(NAMES_SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name:?}")?;
        }
        if sorted.len() > NAMES_SHOWN {
            write!(f, ", ... and {} more", sorted.len() - NAMES_SHOWN)?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_by_name_and_extends() {
        let names = ClusterNames::from(["a", "b"]);
        assert!(names.contains("a") && !names.contains("c"));
        let more = names.with(["c"]);
        assert!(more.contains("c") && !names.contains("c"));
        assert_eq!(more.len(), 3);
    }

    #[test]
    fn an_error_lists_a_few_names_sorted_and_counts_the_rest() {
        assert_eq!(
            format!("{:?}", ClusterNames::from(["b", "a"])),
            r#"["a", "b"]"#
        );
        let many: Vec<String> = (0..20).map(|i| format!("c{i:02}")).collect();
        let names: ClusterNames = many.iter().map(String::as_str).collect();
        assert_eq!(
            format!("{names:?}"),
            r#"["c00", "c01", "c02", "c03", "c04", "c05", "c06", "c07", ... and 12 more]"#
        );
        assert_eq!(format!("{:?}", ClusterNames::default()), "[]");
    }
}
