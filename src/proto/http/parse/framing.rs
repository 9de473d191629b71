//! What the framing- and connection-relevant fields said ([`FieldFacts`]: Host, Expect,
//! Upgrade, Connection, Content-Length, Transfer-Encoding, each value checked as it is seen),
//! and the RFC 9112 §6.3 framing decision for requests and responses.

use super::bytes::AUTHORITY;
use super::window::{bad, Stop};
use crate::proto::http::{Framing, ParseError, Span};

/// What the framing-relevant fields said, gathered while scanning.
pub(super) struct FieldFacts {
    request: bool,
    minor: u8,
    pub(super) host_count: u32,
    pub(super) host: Option<Span>,
    content_length: Option<u64>,
    te: bool,
    te_any: bool,
    te_chunked: bool,
    te_last_chunked: bool,
    te_unknown: bool,
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) conn_upgrade: bool,
    pub(super) upgrade_websocket: bool,
    pub(super) expect_continue: bool,
}

impl FieldFacts {
    pub(super) fn new(request: bool, minor: u8) -> Self {
        FieldFacts {
            request,
            minor,
            host_count: 0,
            host: None,
            content_length: None,
            te: false,
            te_any: false,
            te_chunked: false,
            te_last_chunked: false,
            te_unknown: false,
            close: false,
            keep_alive: false,
            conn_upgrade: false,
            upgrade_websocket: false,
            expect_continue: false,
        }
    }

    #[inline]
    pub(super) fn field(&mut self, name: &[u8], value: &[u8], vspan: Span) -> Result<(), Stop> {
        // Dispatch on length first: most fields are none of these and cost one compare.
        match name.len() {
            4 if self.request && name.eq_ignore_ascii_case(b"host") => {
                self.host_count += 1;
                if self.host_count > 1 {
                    return Err(bad("more than one Host"));
                }
                if !value.iter().all(|&b| AUTHORITY[usize::from(b)]) {
                    return Err(bad("invalid Host"));
                }
                self.host = Some(vspan);
            }
            6 if self.request && name.eq_ignore_ascii_case(b"expect") => {
                self.expect_continue |=
                    members(value).any(|m| m.eq_ignore_ascii_case(b"100-continue"));
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => {
                // protocol = protocol-name ["/" protocol-version]
                self.upgrade_websocket |= members(value).any(|m| {
                    let name = m.split(|&b| b == b'/').next().unwrap_or_default();
                    name.eq_ignore_ascii_case(b"websocket")
                });
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for m in members(value) {
                    if m.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if m.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else if m.eq_ignore_ascii_case(b"upgrade") {
                        self.conn_upgrade = true;
                    }
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                // RFC 9110 §8.6: a list of identical values may be taken as one value.
                for m in value.split(|&b| b == b',') {
                    let n = parse_decimal(trim_ows(m)).ok_or(bad("invalid Content-Length"))?;
                    match self.content_length {
                        Some(c) if c != n => return Err(bad("differing Content-Length values")),
                        _ => self.content_length = Some(n),
                    }
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
                if self.minor == 0 {
                    return Err(bad("Transfer-Encoding in HTTP/1.0"));
                }
                self.te = true;
                for m in members(value) {
                    self.te_any = true;
                    let mut parts = m.splitn(2, |&b| b == b';');
                    let coding = trim_ows(parts.next().unwrap_or_default());
                    let has_params = parts.next().is_some();
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        // RFC 9112 §6.1: chunked MUST NOT be applied more than once.
                        if self.te_chunked {
                            return Err(bad("chunked applied twice"));
                        }
                        if has_params {
                            return Err(bad("chunked with parameters"));
                        }
                        self.te_chunked = true;
                        self.te_last_chunked = true;
                    } else {
                        self.te_last_chunked = false;
                        if !KNOWN_CODINGS.iter().any(|k| coding.eq_ignore_ascii_case(k)) {
                            self.te_unknown = true;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// RFC 9112 §6.3 for requests: never "until close".
    pub(super) fn request_framing(&self) -> Result<Framing, Stop> {
        if self.te {
            if self.content_length.is_some() {
                return Err(bad("Transfer-Encoding with Content-Length"));
            }
            if !self.te_any {
                return Err(bad("empty Transfer-Encoding"));
            }
            // §6.3 rule 4: a request whose final coding is not chunked cannot be framed.
            if !self.te_last_chunked {
                return Err(bad("final transfer coding is not chunked"));
            }
            if self.te_unknown {
                return Err(Stop::Err(ParseError::NotImplemented(
                    "unknown transfer coding",
                )));
            }
            return Ok(Framing::Chunked);
        }
        Ok(match self.content_length {
            Some(n) => Framing::Length(n),
            None => Framing::None,
        })
    }

    /// RFC 9112 §6.3 for responses, before the method/status rules are applied.
    pub(super) fn response_framing(&self) -> Result<Framing, Stop> {
        if self.te {
            // The RFC lets TE override CL but says it "ought to be handled as an error";
            // as a proxy we refuse to guess.
            if self.content_length.is_some() {
                return Err(bad("Transfer-Encoding with Content-Length"));
            }
            return Ok(if self.te_last_chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            });
        }
        Ok(match self.content_length {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        })
    }
}

/// Transfer codings a backend may be asked to decode before chunked; anything else is 501.
const KNOWN_CODINGS: [&[u8]; 6] = [
    b"gzip",
    b"x-gzip",
    b"deflate",
    b"compress",
    b"x-compress",
    b"identity",
];

/// The non-empty members of a comma-separated list (RFC 9110 §5.6.1), trimmed of OWS.
fn members(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|m| !m.is_empty())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// 1*DIGIT as u64; no sign, no whitespace, overflow refused.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(n)
}
