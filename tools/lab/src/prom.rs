//! A reader of the Prometheus text exposition format, enough for the nodes' `/metrics`:
//! `name{label="value",...} value [timestamp]` lines; comments and blank lines are skipped.

use std::collections::{BTreeMap, HashMap};

/// Largest exposition read, bytes (a node's is a few tens of KiB).
pub const MAX_EXPOSITION_BYTES: usize = 4 * 1024 * 1024;
/// Most labels on one sample.
pub const MAX_LABELS: usize = 16;

/// Why an exposition was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Larger than [`MAX_EXPOSITION_BYTES`].
    #[error("the exposition is {len} bytes, more than {MAX_EXPOSITION_BYTES}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// A line that is not a sample.
    #[error("line {line}: {what}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: &'static str,
    },
}

/// One sample's labels, in the order written.
pub type Labels = Vec<(String, String)>;

/// The samples of one exposition, by metric name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    samples: HashMap<String, Vec<(Labels, f64)>>,
}

impl Metrics {
    /// Parses an exposition.
    pub fn parse(text: &str) -> Result<Metrics, ParseError> {
        if text.len() > MAX_EXPOSITION_BYTES {
            return Err(ParseError::TooLarge { len: text.len() });
        }
        let mut samples: HashMap<String, Vec<(Labels, f64)>> = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, value) =
                parse_line(line).map_err(|what| ParseError::Line { line: n + 1, what })?;
            samples.entry(name).or_default().push((labels, value));
        }
        Ok(Metrics { samples })
    }

    /// The sum of the samples of `name` whose labels include every pair of `filter` (0 when
    /// none).
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.matching(name, filter).map(|(_, v)| v).sum()
    }

    /// The samples of `name` matching `filter`, summed by the value of `label` (samples
    /// without it are left out).
    pub fn by_label(
        &self,
        name: &str,
        label: &str,
        filter: &[(&str, &str)],
    ) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (labels, value) in self.matching(name, filter) {
            if let Some((_, v)) = labels.iter().find(|(k, _)| k == label) {
                *out.entry(v.clone()).or_insert(0.0) += value;
            }
        }
        out
    }

    fn matching<'a>(
        &'a self,
        name: &str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a Labels, f64)> + 'a {
        self.samples
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |(labels, _)| {
                filter
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(labels, value)| (labels, *value))
    }
}

/// Parses one sample line.
fn parse_line(line: &str) -> Result<(String, Labels, f64), &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("a name without a value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err("an invalid metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let value = rest
        .split_whitespace()
        .next()
        .ok_or("a sample without a value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| "a value that is not a number")?,
    };
    Ok((name.to_string(), labels, value))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `k="v",...}` (the opening brace already taken); returns the labels and what follows
/// the closing brace.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(tail) = s.strip_prefix('}') {
            return Ok((labels, tail));
        }
        if labels.len() == MAX_LABELS {
            return Err("too many labels");
        }
        let eq = s.find('=').ok_or("a label without a value")?;
        let key = s[..eq].trim();
        if !valid_name(key) {
            return Err("an invalid label name");
        }
        s = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value"),
                },
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value"),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP firewall_packets_total Packets by verdict and reason.
# TYPE firewall_packets_total counter
firewall_packets_total{verdict=\"drop\",reason=\"blocklisted\"} 1500
firewall_packets_total{verdict=\"drop\",reason=\"rate_limited\"} 20
firewall_packets_total{verdict=\"pass\",reason=\"no_match\"} 7
consensus_height 42
odd{k=\"quote\\\" back\\\\ nl\\n\",} 1.5e3 1700000000000
hist_bucket{le=\"+Inf\"} +Inf

";

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let m = Metrics::parse(TEXT).unwrap();
        assert_eq!(m.sum("consensus_height", &[]), 42.0);
        assert_eq!(
            m.sum("firewall_packets_total", &[("verdict", "drop")]),
            1520.0
        );
        assert_eq!(
            m.sum(
                "firewall_packets_total",
                &[("verdict", "drop"), ("reason", "blocklisted")]
            ),
            1500.0
        );
        assert_eq!(m.sum("missing_total", &[]), 0.0);
        let drops = m.by_label("firewall_packets_total", "reason", &[("verdict", "drop")]);
        assert_eq!(drops.len(), 2);
        assert_eq!(drops["rate_limited"], 20.0);
    }

    #[test]
    fn escapes_timestamps_and_infinities_are_read() {
        let m = Metrics::parse(TEXT).unwrap();
        assert_eq!(m.sum("odd", &[("k", "quote\" back\\ nl\n")]), 1500.0);
        assert_eq!(m.sum("hist_bucket", &[("le", "+Inf")]), f64::INFINITY);
    }

    #[test]
    fn broken_lines_are_refused_with_their_number() {
        for (text, line) in [
            ("a 1\nb{x=\"1\" 2\n", 2),
            ("a{x=1} 2", 1),
            ("9a 1", 1),
            ("a", 1),
            ("a{x=\"1\"}", 1),
            ("a{x=\"1\"} one", 1),
            ("a{x=\"unterminated} 1", 1),
        ] {
            match Metrics::parse(text) {
                Err(ParseError::Line { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        let huge = "a 1\n".repeat(MAX_EXPOSITION_BYTES / 4 + 1);
        assert!(matches!(
            Metrics::parse(&huge),
            Err(ParseError::TooLarge { .. })
        ));
    }
}
