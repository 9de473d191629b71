//! Values: durations (`"75s"`, `"1h30m"`) and byte sizes (`"10m"`) parsed from their TOML
//! scalars, and the [`Builder`] helpers that apply a key's default and allowed range.

use std::time::Duration;

use super::{Builder, ConfigError};
use crate::config::file::Scalar;

/// Parse a duration: one or more `<integer><unit>` groups, units `ms`, `s`, `m`, `h`, `d`
/// (`"75s"`, `"500ms"`, `"1h30m"`). Bare numbers are refused: `75` could mean seconds or
/// milliseconds, and guessing wrong is a silent thousandfold error.
pub fn parse_duration(v: &Scalar) -> Result<Duration, String> {
    const HINT: &str = "write a number with a unit: ms, s, m, h or d, e.g. \"75s\" or \"500ms\"";
    let s = match v {
        Scalar::Int(n) => return Err(format!("{n} has no unit; {HINT}")),
        Scalar::Float(n) => return Err(format!("{n} has no unit; {HINT}")),
        Scalar::Str(s) => s,
    };
    let bytes = s.trim().as_bytes();
    if bytes.is_empty() {
        return Err(format!("empty duration; {HINT}"));
    }
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s.trim()[start..i];
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s.trim()[ustart..i];
        if digits.is_empty() {
            return Err(format!("{s:?} is not a duration; {HINT}"));
        }
        let mult: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" if i == bytes.len() => return Err(format!("{s:?} has no unit; {HINT}")),
            "" => {
                return Err(format!(
                    "{s:?} is not a duration (whole numbers only); {HINT}"
                ))
            }
            other => return Err(format!("{s:?}: unknown unit {other:?}; {HINT}")),
        };
        let n: u64 = digits.parse().map_err(|_| format!("{s:?} is too large"))?;
        total_ms = n
            .checked_mul(mult)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("{s:?} is too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parse a byte size: an integer, or a string of digits with an optional binary multiple
/// suffix `k`, `m` or `g` (1024, 1024², 1024³).
pub fn parse_size(v: &Scalar) -> Result<u64, String> {
    const HINT: &str =
        "write bytes as an integer, or a string such as \"10k\", \"10m\", \"1g\" or \"256MiB\"";
    match v {
        Scalar::Int(n) if *n >= 0 => Ok(*n as u64),
        Scalar::Int(n) => Err(format!("{n} is negative")),
        Scalar::Float(n) => Err(format!("{n} is not a whole number of bytes; {HINT}")),
        Scalar::Str(s) => {
            let t = s.trim();
            // "KiB", "KB" and "k" all mean 1024 (nginx's sizes are binary too).
            let lower = t.to_ascii_lowercase();
            let t = lower
                .strip_suffix("ib")
                .filter(|r| r.ends_with(['k', 'm', 'g']))
                .or_else(|| {
                    lower
                        .strip_suffix('b')
                        .filter(|r| r.ends_with(['k', 'm', 'g']))
                })
                .unwrap_or(&lower)
                .trim_end();
            let (digits, mult) = match t.as_bytes().last().map(u8::to_ascii_lowercase) {
                Some(b'k') => (&t[..t.len() - 1], 1u64 << 10),
                Some(b'm') => (&t[..t.len() - 1], 1 << 20),
                Some(b'g') => (&t[..t.len() - 1], 1 << 30),
                _ => (t, 1),
            };
            let digits = digits.trim_end();
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{s:?} is not a size; {HINT}"));
            }
            digits
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(mult))
                .ok_or_else(|| format!("{s:?} is too large"))
        }
    }
}

impl Builder<'_> {
    /// An integer key with a default and an inclusive range.
    pub(super) fn int(
        &self,
        key: &str,
        v: Option<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<usize, ConfigError> {
        let n = v.unwrap_or(default);
        if n < min || n > max {
            return Err(self.err(key, format!("{n} is out of range {min}..={max}")));
        }
        usize::try_from(n).map_err(|_| self.err(key, format!("{n} is out of range")))
    }

    /// A duration key with a default in seconds; zero only where it means something.
    pub(super) fn duration(
        &self,
        key: &str,
        v: Option<&Scalar>,
        default_secs: u64,
        zero_ok: bool,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = v else {
            return Ok(Duration::from_secs(default_secs));
        };
        let d = parse_duration(v).map_err(|m| self.err(key, m))?;
        if d.is_zero() && !zero_ok {
            return Err(self.err(key, "must be greater than zero"));
        }
        Ok(d)
    }

    /// A duration key with a default in milliseconds; zero allowed (it turns the thing off).
    pub(super) fn duration_ms(
        &self,
        key: &str,
        v: Option<&Scalar>,
        default_ms: u64,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(Duration::from_millis(default_ms)),
            Some(v) => parse_duration(v).map_err(|m| self.err(key, m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let s = |v: &str| parse_duration(&Scalar::Str(v.into()));
        let ms = Duration::from_millis;
        for (text, want) in [
            ("75s", ms(75_000)),
            ("500ms", ms(500)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("8h", ms(28_800_000)),
            ("1d", ms(86_400_000)),
            ("1m30s", ms(90_000)),
            (" 0s ", ms(0)),
        ] {
            assert_eq!(s(text), Ok(want), "{text}");
        }
        for (text, needle) in [
            ("75", "has no unit"),
            ("", "empty duration"),
            ("s", "is not a duration"),
            ("10x", "unknown unit \"x\""),
            ("1.5s", "is not a duration (whole numbers only)"),
            ("-1s", "is not a duration"),
            ("99999999999999999999d", "too large"),
        ] {
            let e = s(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(parse_duration(&Scalar::Int(75))
            .unwrap_err()
            .contains("75 has no unit"));
        assert!(parse_duration(&Scalar::Float(1.5))
            .unwrap_err()
            .contains("has no unit"));
    }

    #[test]
    fn sizes() {
        let s = |v: &str| parse_size(&Scalar::Str(v.into()));
        for (text, want) in [
            ("0", 0),
            ("10k", 10 << 10),
            ("10M", 10 << 20),
            ("1g", 1 << 30),
            ("123", 123),
            ("256MiB", 256 << 20),
            ("8 MiB", 8 << 20),
            ("10kb", 10 << 10),
            ("2GB", 2 << 30),
        ] {
            assert_eq!(s(text), Ok(want), "{text}");
        }
        assert_eq!(parse_size(&Scalar::Int(4096)), Ok(4096));
        for bad in ["", "k", "1.5m", "-3", "x", "5ib", "5b", "kib"] {
            assert!(s(bad).is_err(), "{bad}");
        }
        assert!(parse_size(&Scalar::Int(-1)).is_err());
        assert!(s("99999999999g").unwrap_err().contains("too large"));
    }
}
