//! `--plot`: latency by percentile as a hand-written SVG (no plotting crate: the picture is a
//! few polylines). The x axis is the usual HdrHistogram one, log-scaled on 1/(1-p), so the
//! tail (99 %, 99.9 %, 99.99 %) gets as much room as the median; the y axis is linear in ms.

use hdrhistogram::Histogram;
use std::fmt::Write as _;

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// The x axis ends at 99.999 %.
const MAX_NINES: f64 = 5.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn x_of(q: f64) -> f64 {
    // nines = -log10(1 - q): 0 at p0, 2 at p99, 3 at p99.9 ...
    let nines = (-(1.0 - q).max(1e-12).log10()).clamp(0.0, MAX_NINES);
    LEFT + nines / MAX_NINES * (W - LEFT - RIGHT)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis maximum and step for a value range 0..max.
fn nice_scale(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// Renders the series (label, histogram in µs) as one SVG document.
pub(crate) fn render(title: &str, series: &[(String, &Histogram<u64>)]) -> String {
    let max_ms = series
        .iter()
        .map(|(_, h)| h.max() as f64 / 1000.0)
        .fold(0.0, f64::max);
    let (ymax, ystep) = nice_scale(max_ms);
    let y_of = |ms: f64| H - BOTTOM - ms / ymax * (H - TOP - BOTTOM);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    // Grid and axes.
    let mut v = 0.0;
    while v <= ymax + ystep / 2.0 {
        let y = y_of(v);
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            W - RIGHT
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            trim_num(v)
        );
        v += ystep;
    }
    for (nines, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        let x = x_of(1.0 - 10f64.powf(-nines));
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            H - BOTTOM
        );
        let _ = writeln!(
            o,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            H - BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        o,
        r#"<text x="20" y="{}" text-anchor="middle" transform="rotate(-90 20 {})">latency (ms)</text>"#,
        H / 2.0,
        H / 2.0
    );
    let _ = writeln!(
        o,
        r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    for (i, (label, h)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts = String::new();
        if !h.is_empty() {
            for it in h.iter_quantiles(20) {
                let q = it.quantile_iterated_to();
                if -(1.0 - q).max(1e-12).log10() > MAX_NINES {
                    break;
                }
                let _ = write!(
                    pts,
                    "{:.1},{:.1} ",
                    x_of(q),
                    y_of(it.value_iterated_to() as f64 / 1000.0)
                );
            }
        }
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.trim_end()
        );
        let ly = TOP + 18.0 + 18.0 * i as f64;
        let _ = writeln!(
            o,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
            LEFT + 12.0,
            LEFT + 36.0
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}">{}</text>"#,
            LEFT + 42.0,
            ly + 4.0,
            esc(label)
        );
    }
    o.push_str("</svg>\n");
    o
}

fn trim_num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_one_polyline_per_series_and_is_escaped() {
        let mut a = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        let mut b = a.clone();
        for v in 1..=10_000u64 {
            a.record(v).unwrap();
            b.record(v / 2 + 1).unwrap();
        }
        let s = render("t <&>", &[("a".into(), &a), ("b".into(), &b)]);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("t &lt;&amp;&gt;"));
        // Points stay inside the plot area.
        for poly in s.lines().filter(|l| l.starts_with("<polyline")) {
            let pts = poly
                .split("points=\"")
                .nth(1)
                .unwrap()
                .trim_end_matches("\"/>");
            for p in pts.split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!(
                    (LEFT..=W - RIGHT).contains(&x) && (TOP..=H - BOTTOM).contains(&y),
                    "{p}"
                );
            }
        }
    }

    #[test]
    fn nice_scales() {
        assert_eq!(nice_scale(9.3), (10.0, 2.0));
        assert_eq!(nice_scale(0.0), (1.0, 0.2));
        assert_eq!(nice_scale(1234.0), (1250.0, 250.0));
    }
}
