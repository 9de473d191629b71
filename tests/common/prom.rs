//! A strict reader of the Prometheus text exposition (0.0.4) and OpenMetrics 1.0 text, for
//! tests: every sample belongs to a family declared by `# TYPE` before it, names and label
//! syntax are checked, histogram buckets are cumulative and end with `+Inf` equal to `_count`.
//! A malformed line fails the test with the line.

use std::collections::{BTreeMap, HashMap};

/// A histogram series: family name and its labels other than `le`.
type SeriesKey = (String, Vec<(String, String)>);

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name → type.
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// Parse and check `text`; `open_metrics` selects the OpenMetrics rules.
    #[track_caller]
    pub fn parse(text: &str, open_metrics: bool) -> Exposition {
        let mut e = Exposition::default();
        let mut family: Option<(String, String)> = None;
        let mut eof = false;
        for (n, line) in text.lines().enumerate() {
            assert!(!eof, "line {} after # EOF: {line}", n + 1);
            if line == "# EOF" {
                assert!(open_metrics, "# EOF in the Prometheus format");
                eof = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("bad TYPE: {line}"));
                assert!(valid_name(name), "bad family name: {line}");
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "unexpected type: {line}"
                );
                if open_metrics && kind == "counter" {
                    assert!(
                        !name.ends_with("_total"),
                        "OpenMetrics counter family with _total: {line}"
                    );
                }
                assert!(
                    e.types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "family declared twice: {line}"
                );
                family = Some((name.to_owned(), kind.to_owned()));
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "unexpected line {}: {line:?}",
                n + 1
            );
            let s = parse_sample(line);
            let (fam, kind) = family
                .as_ref()
                .unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
            let ok = match kind.as_str() {
                "counter" if open_metrics => s.name == format!("{fam}_total"),
                "counter" => &s.name == fam && fam.ends_with("_total"),
                "gauge" => &s.name == fam,
                _ => [
                    format!("{fam}_bucket"),
                    format!("{fam}_sum"),
                    format!("{fam}_count"),
                ]
                .contains(&s.name),
            };
            assert!(
                ok,
                "sample {} does not belong to family {fam} ({kind})",
                s.name
            );
            e.samples.push(s);
        }
        assert_eq!(eof, open_metrics, "# EOF present: {eof}");
        e.check_histograms();
        e
    }

    fn check_histograms(&self) {
        let mut series: BTreeMap<SeriesKey, Vec<(f64, f64)>> = BTreeMap::new();
        for s in &self.samples {
            if let Some(fam) = s.name.strip_suffix("_bucket") {
                let le = s
                    .labels
                    .get("le")
                    .unwrap_or_else(|| panic!("bucket without le: {s:?}"));
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                let mut key: Vec<(String, String)> = s
                    .labels
                    .clone()
                    .into_iter()
                    .filter(|(k, _)| k != "le")
                    .collect();
                key.sort();
                series
                    .entry((fam.to_owned(), key))
                    .or_default()
                    .push((le, s.value));
            }
        }
        for ((fam, labels), buckets) in &series {
            let mut last = (f64::NEG_INFINITY, 0.0);
            for &(le, v) in buckets {
                assert!(
                    le > last.0 && v >= last.1,
                    "{fam}{labels:?}: buckets not cumulative at le={le}"
                );
                last = (le, v);
            }
            assert!(last.0.is_infinite(), "{fam}{labels:?}: no +Inf bucket");
            let want: BTreeMap<String, String> = labels.iter().cloned().collect();
            let count = self
                .get(&format!("{fam}_count"), &want)
                .unwrap_or_else(|| panic!("{fam}{labels:?}: no _count"));
            assert_eq!(count, last.1, "{fam}{labels:?}: +Inf bucket against _count");
        }
    }

    /// The value of the sample `name` with exactly `labels`.
    pub fn get(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && &s.labels == labels)
            .map(|s| s.value)
    }

    /// The value of `name` whose labels include every pair of `labels` (exactly one must match).
    #[track_caller]
    pub fn one(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{name}{labels:?}: {} samples match",
            found.len()
        );
        found[0].value
    }

    /// The sum of `name` over every sample whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

#[track_caller]
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(valid_name(name), "bad metric name: {line}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = r.find('=').unwrap_or_else(|| panic!("bad label: {line}"));
            let key = &r[..eq];
            assert!(valid_name(key), "bad label name {key:?}: {line}");
            r = r[eq + 1..]
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted label: {line}"));
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => panic!("bad escape {other:?}: {line}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value: {line}"),
                }
            };
            assert!(
                labels.insert(key.to_owned(), value).is_none(),
                "label twice: {line}"
            );
            r = &r[end + 1..];
            r = r.strip_prefix(',').unwrap_or(r);
        }
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before value: {line}"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?}: {line}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}
