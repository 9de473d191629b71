//! Byte classes (tchar, authority characters) as lookup tables, whole-slice checks without
//! early exit, and the SWAR scanners that find the first control or non-visible byte eight
//! bytes at a time.

const fn class(chars: &[u8], alnum: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < chars.len() {
        t[chars[i] as usize] = true;
        i += 1;
    }
    if alnum {
        let mut c = 0;
        while c < 256 {
            let b = c as u8;
            if b.is_ascii_alphanumeric() {
                t[c] = true;
            }
            c += 1;
        }
    }
    t
}

/// tchar (RFC 9110 §5.6.2).
static TCHAR: [bool; 256] = class(b"!#$%&'*+-.^_`|~", true);
/// What a host[:port] may contain: unreserved, sub-delims, ':', '%' and IPv6 brackets
/// (RFC 3986 §3.2.2); no '/', '@', whitespace or control characters.
pub(super) static AUTHORITY: [bool; 256] = class(b"-._~!$&'()*+,;=:%[]", true);

// Whole-slice checks without early exit: no mispredicted branch per byte, and the compiler
// vectorises the last two.
#[inline]
pub(super) fn all_tchar(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| ok & TCHAR[usize::from(b)])
}

#[inline]
pub(super) fn no_ctl(s: &[u8]) -> bool {
    s.iter()
        .fold(true, |ok, &b| ok & (b >= 0x20 || b == b'\t') & (b != 0x7f))
}

#[inline]
pub(super) fn all_vchar(s: &[u8]) -> bool {
    s.iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x5e))
}

#[inline]
pub(super) fn scan_token(s: &[u8], mut i: usize) -> usize {
    while let Some(&b) = s.get(i) {
        if !TCHAR[usize::from(b)] {
            break;
        }
        i += 1;
    }
    i
}

// Eight bytes at a time (SWAR): "does this word hold a byte below n" without branches per
// byte. Exact as a yes/no answer for n <= 0x80 (Bit Twiddling Hacks, "hasless").
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

#[inline]
fn has_less(x: u64, n: u8) -> bool {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI != 0
}

#[inline]
fn has_byte(x: u64, b: u8) -> bool {
    has_less(x ^ (LO * u64::from(b)), 1)
}

#[inline]
fn word(s: &[u8], i: usize) -> Option<u64> {
    s.get(i..)
        .and_then(|r| r.first_chunk::<8>())
        .map(|w| u64::from_le_bytes(*w))
}

/// Index of the first control character (< 0x20 or DEL) at or after `i`, or `s.len()`.
#[inline]
pub(super) fn find_ctl(s: &[u8], mut i: usize) -> usize {
    while let Some(x) = word(s, i) {
        if has_less(x, 0x20) || has_byte(x, 0x7f) {
            break;
        }
        i += 8;
    }
    while let Some(&b) = s.get(i) {
        if b < 0x20 || b == 0x7f {
            break;
        }
        i += 1;
    }
    i
}

/// Index of the first byte at or after `i` that is not visible ASCII (0x21..=0x7e).
#[inline]
pub(super) fn scan_vchar(s: &[u8], mut i: usize) -> usize {
    while let Some(x) = word(s, i) {
        if has_less(x, 0x21) || has_byte(x, 0x7f) || x & HI != 0 {
            break;
        }
        i += 8;
    }
    while let Some(&b) = s.get(i) {
        if !(0x21..=0x7e).contains(&b) {
            break;
        }
        i += 1;
    }
    i
}
