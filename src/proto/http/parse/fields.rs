//! Field lines (RFC 9112 §5): name, colon, value, CRLF, up to the empty line; the strict
//! rules against smuggling (no obs-fold, no whitespace before the colon, no bare LF, no
//! control characters in values), the field-count limit, and each field handed to
//! [`FieldFacts`].

use memchr::memchr;

use super::bytes::{all_tchar, find_ctl, no_ctl, scan_token};
use super::framing::FieldFacts;
use super::window::{bad, span, Stop, Window};
use crate::proto::http::{HeaderSpan, ParseError};

/// Scan field-value / reason-phrase bytes from `i` up to the line's CR and return the CR's
/// index (the LF after it is not checked here). HTAB and obs-text are allowed; other control
/// characters, bare LF and a CR not followed by LF are 400.
#[inline]
pub(super) fn line_rest(win: &Window, i: usize) -> Result<usize, Stop> {
    // Fast path: memchr finds the CR, a branch-free pass checks what lies before it. Any
    // doubt goes to the exact scan below, which also names the error.
    let rest = win.w.get(i..).unwrap_or_default();
    if let Some(off) = memchr(b'\r', rest) {
        if rest.get(..off).is_some_and(no_ctl) {
            return Ok(i + off);
        }
    }
    line_rest_slow(win, i)
}

fn line_rest_slow(win: &Window, mut i: usize) -> Result<usize, Stop> {
    loop {
        i = find_ctl(win.w, i);
        match win.at(i)? {
            b'\t' => i += 1,
            b'\r' => return Ok(i),
            b'\n' => return Err(bad("bare LF")),
            _ => return Err(bad("control character in field value")),
        }
    }
}

/// Parse field lines from `pos` to the empty line; returns the head length.
pub(super) fn fields(
    win: &Window,
    mut pos: usize,
    max_headers: usize,
    headers: &mut Vec<HeaderSpan>,
    f: &mut FieldFacts,
) -> Result<usize, Stop> {
    loop {
        match win.at(pos)? {
            b'\r' => {
                return match win.at(pos + 1)? {
                    b'\n' => Ok(pos + 2),
                    _ => Err(bad("CR not followed by LF")),
                }
            }
            b'\n' => return Err(bad("bare LF")),
            // RFC 9112 §5.2: obs-fold is refused in requests and, as a proxy, in responses.
            b' ' | b'\t' => return Err(bad("obs-fold or whitespace before field name")),
            _ => {}
        }
        let rest = win.w.get(pos..).unwrap_or_default();
        let n_end = match memchr(b':', rest) {
            Some(off) if rest.get(..off).is_some_and(all_tchar) => pos + off,
            _ => scan_token(win.w, pos),
        };
        match win.at(n_end)? {
            b':' if n_end > pos => {}
            // RFC 9112 §5.1: MUST reject whitespace between field name and colon.
            b' ' | b'\t' if n_end > pos => return Err(bad("whitespace before colon")),
            _ => return Err(bad("invalid field name")),
        }
        let mut v_start = n_end + 1;
        while let Some(b' ' | b'\t') = win.w.get(v_start) {
            v_start += 1;
        }
        let cr = line_rest(win, v_start)?;
        if win.at(cr + 1)? != b'\n' {
            return Err(bad("CR not followed by LF"));
        }
        let mut v_end = cr;
        while v_end > v_start && matches!(win.w.get(v_end - 1), Some(b' ' | b'\t')) {
            v_end -= 1;
        }
        if headers.len() >= max_headers {
            return Err(Stop::Err(ParseError::HeadersTooLarge));
        }
        let name = win.w.get(pos..n_end).unwrap_or_default();
        let value = win.w.get(v_start..v_end).unwrap_or_default();
        f.field(name, value, span(v_start, v_end))?;
        headers.push(HeaderSpan {
            name: span(pos, n_end),
            value: span(v_start, v_end),
        });
        pos = cr + 2;
    }
}
