//! Reading Prometheus text exposition (`/stats/prometheus`).

/// One sample line: name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric family name, e.g. `weir_http_downstream_rq_total`.
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Every sample.
    pub samples: Vec<Sample>,
    /// The text as received.
    pub text: String,
}

impl Stats {
    /// Parses exposition text; comment lines and lines that do not parse are skipped.
    pub fn parse(text: &str) -> Stats {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_line)
            .collect();
        Stats {
            samples,
            text: text.to_owned(),
        }
    }

    /// The value of the first sample named `name` carrying every one of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
    }

    /// Whether any sample of family `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let sp = line.find(char::is_whitespace)?;
            (&line[..sp], Vec::new(), &line[sp..])
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim().to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_values() {
        let s = Stats::parse(
            "# HELP x y\n# TYPE weir_http_downstream_rq_total counter\n\
             weir_http_downstream_rq_total{stat_prefix=\"ingress_http\"} 3\n\
             weir_http_downstream_rq_xx{response_code_class=\"5\",stat_prefix=\"ingress_http\"} 2\n\
             plain_metric 7.5\n",
        );
        assert_eq!(
            s.get(
                "weir_http_downstream_rq_total",
                &[("stat_prefix", "ingress_http")]
            ),
            Some(3.0)
        );
        assert_eq!(
            s.get(
                "weir_http_downstream_rq_xx",
                &[("response_code_class", "5")]
            ),
            Some(2.0)
        );
        assert_eq!(
            s.get(
                "weir_http_downstream_rq_xx",
                &[("response_code_class", "4")]
            ),
            None
        );
        assert_eq!(s.get("plain_metric", &[]), Some(7.5));
    }
}
