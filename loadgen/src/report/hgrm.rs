//! The HdrHistogram percentile-distribution text format (`--hgrm`), as written by
//! HdrHistogram's `outputPercentileDistribution` and wrk2, in milliseconds, so the files load
//! in the usual HdrHistogram plotters next to other tools' output.

use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// Ticks per half-distance to 100 %, the same density wrk2 prints.
const TICKS_PER_HALF: u32 = 5;

/// Renders `h` (microseconds) as an `.hgrm` document with values in milliseconds.
pub(crate) fn render(h: &Histogram<u64>) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / 1000.0;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    o,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(o, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ = writeln!(
        o,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        o,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        o,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        2048
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_totals() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let s = render(&h);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[0].contains("Value") && lines[0].contains("1/(1-Percentile)"));
        assert_eq!(lines[1], "");
        // First row: the minimum (0.010 ms) at percentile 0; last data row: the max at 1.0.
        assert!(
            lines[2].trim_start().starts_with("0.010 0.000000000000"),
            "{}",
            lines[2]
        );
        let last = lines.iter().rev().find(|l| !l.starts_with('#')).unwrap();
        let cols: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(cols.len(), 3, "{last}");
        assert_eq!(cols[1], "1.000000000000");
        assert_eq!(cols[2], "1000");
        assert!(s.contains("Total count    =         1000]"));
    }
}
