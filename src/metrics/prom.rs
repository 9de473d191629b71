//! The Prometheus text exposition (format 0.0.4) and OpenMetrics 1.0 text, written straight
//! into one `String`: no registry, no per-scrape allocation per series beyond the output.
//!
//! A scrape reads the shards' single-writer atomics (no lock), clones each shard's list of
//! site and frontend counter pointers under that shard's own registry mutex, and merges each
//! shard's MySQL user table under its mutex (the one a shard takes once per finished command).

use std::fmt::Write as _;

use super::histogram::Snapshot;

/// The power-of-two boundaries exported, in microseconds: 64 µs .. 67 s (2^6 .. 2^26).
const EXPORT_FROM: u32 = 6;
const EXPORT_TO: u32 = 26;

/// Metric kinds, as both formats name them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A text exposition being written.
pub struct Writer {
    pub out: String,
    open_metrics: bool,
}

impl Writer {
    pub fn new(open_metrics: bool) -> Writer {
        Writer {
            out: String::with_capacity(64 * 1024),
            open_metrics,
        }
    }

    /// The `# HELP` and `# TYPE` lines of a family. `name` is the sample name without the
    /// `_total` suffix of counters (OpenMetrics names the family without it).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind_name = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let family = if kind == Kind::Counter && !self.open_metrics {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        let _ = writeln!(self.out, "# HELP {family} {help}");
        let _ = writeln!(self.out, "# TYPE {family} {kind_name}");
    }

    /// One sample: `name{labels} value` (`name` complete, with `_total` for counters).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels
            .iter()
            .map(|(k, v)| (*k, *v))
            .chain(le.map(|l| ("le", l)))
        {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// A histogram's `_bucket` (power-of-two boundaries, cumulative, exact), `_sum` (seconds)
    /// and `_count` samples.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Snapshot) {
        let bucket = format!("{name}_bucket");
        for k in EXPORT_FROM..=EXPORT_TO {
            let le = seconds_text(1u64 << k);
            self.out.push_str(&bucket);
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {}", h.below(1u64 << k));
        }
        self.out.push_str(&bucket);
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {}", h.count());
        self.sample(&format!("{name}_sum"), labels, h.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, h.count() as f64);
    }

    /// Like [`Writer::histogram`] from any cumulative count function (`below(limit_us)`).
    pub fn histogram_from(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        below: impl Fn(u64) -> u64,
        count: u64,
        sum_seconds: f64,
    ) {
        let bucket = format!("{name}_bucket");
        for k in EXPORT_FROM..=EXPORT_TO {
            let le = seconds_text(1u64 << k);
            self.out.push_str(&bucket);
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {}", below(1u64 << k).min(count));
        }
        self.out.push_str(&bucket);
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {count}");
        self.sample(&format!("{name}_sum"), labels, sum_seconds);
        self.sample(&format!("{name}_count"), labels, count as f64);
    }

    pub fn finish(mut self) -> String {
        if self.open_metrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// `us` microseconds as seconds, exactly (powers of two of µs have short decimal forms).
fn seconds_text(us: u64) -> String {
    let s = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.')
        .map_or_else(|| s.to_owned(), |t| t.to_owned())
}

fn push_value(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A label value as the formats quote it: `\`, `"` and newline escaped.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::Histogram;

    #[test]
    fn label_values_are_escaped_and_boundaries_are_exact_decimals() {
        let mut w = Writer::new(false);
        w.sample("x_total", &[("site", "a\"b\\c\nd")], 3.0);
        assert_eq!(w.out, "x_total{site=\"a\\\"b\\\\c\\nd\"} 3\n");
        assert_eq!(seconds_text(64), "0.000064");
        assert_eq!(seconds_text(1 << 20), "1.048576");
        assert_eq!(seconds_text(1 << 26), "67.108864");
        assert_eq!(seconds_text(2_000_000), "2");
    }

    #[test]
    fn histogram_lines_are_cumulative_and_end_with_count() {
        let h = Histogram::default();
        for us in [10, 100, 100, 5000, 1 << 27] {
            h.record(us);
        }
        let mut w = Writer::new(true);
        w.family("lat_seconds", Kind::Histogram, "t");
        w.histogram("lat_seconds", &[("pool", "p")], &h.snapshot());
        let text = w.finish();
        let mut last = 0;
        let mut buckets = 0;
        for line in text.lines().filter(|l| l.starts_with("lat_seconds_bucket")) {
            let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(n >= last, "{line}");
            last = n;
            buckets += 1;
        }
        assert_eq!(buckets, (EXPORT_TO - EXPORT_FROM + 2) as usize);
        assert_eq!(last, 5);
        assert!(
            text.contains("lat_seconds_bucket{pool=\"p\",le=\"0.000064\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{pool=\"p\",le=\"0.000128\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_count{pool=\"p\"} 5\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
