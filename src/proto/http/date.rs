//! HTTP-date (RFC 9110 §5.6.7): the preferred IMF-fixdate written, and the two obsolete forms
//! (RFC 850, asctime) also read, as a recipient must. Times are whole seconds since the Unix
//! epoch; a date that does not parse is `None` (for `Expires` that means "already expired",
//! RFC 9111 §5.3, which the caller decides).

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Days since 1970-01-01 of a civil date (proleptic Gregorian), from Howard Hinnant's
/// `days_from_civil`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn month(b: &[u8]) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| &m[..] == b)
        .map(|i| i as u32 + 1)
}

fn num(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 4 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + (d - b'0') as u32))
}

fn hms(b: &[u8]) -> Option<(u32, u32, u32)> {
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, s) = (num(&b[0..2])?, num(&b[3..5])?, num(&b[6..8])?);
    // 60 is a leap second.
    (h < 24 && m < 60 && s <= 60).then_some((h, m, s))
}

fn secs(y: i64, mo: u32, d: u32, (h, m, s): (u32, u32, u32)) -> Option<u64> {
    if !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    // A day that does not exist in its month (Feb 30) rolls into the next: refuse it.
    if civil_from_days(days) != (y, mo, d) {
        return None;
    }
    u64::try_from(days * 86_400 + (h * 3600 + m * 60 + s) as i64).ok()
}

/// Parse an HTTP-date in any of its three forms.
pub fn parse(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    let parts: Vec<&[u8]> = v.split(|&b| b == b' ').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [wd, d, mo, y, t, b"GMT"] if wd.len() == 4 && wd[3] == b',' && d.len() == 2 => {
            secs(num(y)? as i64, month(mo)?, num(d)?, hms(t)?).filter(|_| y.len() == 4)
        }
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [wd, dmy, t, b"GMT"] if wd.ends_with(b",") => {
            let mut f = dmy.split(|&b| b == b'-');
            let (d, mo, y) = (f.next()?, f.next()?, f.next()?);
            if f.next().is_some() || y.len() != 2 {
                return None;
            }
            // RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is in the past.
            let yy = num(y)? as i64;
            let y = if yy < 70 { 2000 + yy } else { 1900 + yy };
            secs(y, month(mo)?, num(d)?, hms(t)?)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_wd, mo, d, t, y] => secs(num(y)? as i64, month(mo)?, num(d)?, hms(t)?),
        _ => None,
    }
}

/// Append `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, 29 bytes).
pub fn write(t: u64, out: &mut Vec<u8>) {
    let days = (t / 86_400) as i64;
    let rem = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    let two = |out: &mut Vec<u8>, n: u64| {
        out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8])
    };
    out.extend_from_slice(DAYS[(days % 7) as usize]);
    out.extend_from_slice(b", ");
    two(out, d as u64);
    out.push(b' ');
    out.extend_from_slice(MONTHS[(m - 1) as usize]);
    out.push(b' ');
    let y = y.clamp(0, 9999) as u64;
    two(out, y / 100);
    two(out, y % 100);
    out.push(b' ');
    two(out, rem / 3600);
    out.push(b':');
    two(out, rem / 60 % 60);
    out.push(b':');
    two(out, rem % 60);
    out.extend_from_slice(b" GMT");
}

/// Seconds since the epoch now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_forms_read_one_written() {
        let t = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(parse(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse(b"Sun Nov  6 08:49:37 1994"), Some(t));
        let mut out = Vec::new();
        write(t, &mut out);
        assert_eq!(out, b"Sun, 06 Nov 1994 08:49:37 GMT");
        for bad in [
            &b""[..],
            b"0",
            b"-1",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 31 Feb 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 25:49:37 GMT",
            b"Sun, 06 Xyz 1994 08:49:37 GMT",
            b"Thu, 01 Jan 1969 00:00:00 GMT",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn round_trips_over_centuries() {
        let mut out = Vec::new();
        let mut t = 0u64;
        while t < 8_000_000_000 {
            out.clear();
            write(t, &mut out);
            assert_eq!(parse(&out), Some(t), "{}", String::from_utf8_lossy(&out));
            t += 86_400 * 37 + 3_607;
        }
    }
}
