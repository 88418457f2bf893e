//! Prometheus text exposition: a small writer for counters, gauges and histograms.
//!
//! Names follow `<area>_<what>_<unit>` (`_total` for counters); label values are bounded names,
//! never an address or a peer id. What the node exports, and from where, is in `collect.rs`;
//! `docs/metrics.md` lists every family.

use std::fmt::Write;

/// A cumulative histogram with fixed upper bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Observations at or under each bound (not cumulative; summed when written).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// A histogram counted elsewhere (in the kernel): `counts[i]` observations at or under
    /// `bounds[i]` (not cumulative), `over` above the last bound, `sum` of every observation.
    pub fn from_counts(bounds: &[f64], counts: &[u64], over: u64, sum: f64) -> Histogram {
        let counts: Vec<u64> = counts.iter().copied().take(bounds.len()).collect();
        let count = counts
            .iter()
            .fold(over, |total, c| total.saturating_add(*c));
        Histogram {
            bounds: bounds[..counts.len()].to_vec(),
            counts,
            sum,
            count,
        }
    }

    /// An empty histogram with these ascending upper bounds (`+Inf` is implied).
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one value.
    pub fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Writes families in the Prometheus text format (version 0.0.4).
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: its help and type lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Exposition {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Exposition {
        self.text.push_str(name);
        write_labels(&mut self.text, labels);
        let _ = writeln!(self.text, " {}", format_value(value));
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Exposition {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A histogram family with one unlabelled histogram.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) -> &mut Exposition {
        self.family(name, Kind::Histogram, help);
        let mut cumulative = 0;
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            cumulative += count;
            let le = format_value(*bound);
            self.sample(
                &format!("{name}_bucket"),
                &[("le", le.as_str())],
                cumulative as f64,
            );
        }
        self.sample(
            &format!("{name}_bucket"),
            &[("le", "+Inf")],
            histogram.count as f64,
        );
        self.sample(&format!("{name}_sum"), &[], histogram.sum);
        self.sample(&format!("{name}_count"), &[], histogram.count as f64)
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let value = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{name}=\"{value}\"");
    }
    out.push('}');
}

fn format_value(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_written_cumulatively_with_inf_sum_and_count() {
        let mut h = Histogram::new(&[0.5, 1.0]);
        for v in [0.1, 0.7, 0.9, 4.0] {
            h.observe(v);
        }
        let mut out = Exposition::new();
        out.histogram("x_seconds", "Test.", &h);
        let text = out.finish();
        assert!(text.contains("x_seconds_bucket{le=\"0.5\"} 1\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"1\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("x_seconds_count 4\n"), "{text}");
        assert!(text.contains("# TYPE x_seconds histogram\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::new();
        out.family("a_total", Kind::Counter, "Help with \\ and\nnewline.")
            .sample("a_total", &[("k", "quote\" back\\ nl\n")], 2.0);
        let text = out.finish();
        assert!(
            text.contains("a_total{k=\"quote\\\" back\\\\ nl\\n\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("# HELP a_total Help with \\\\ and\\nnewline.\n"));
    }
}
