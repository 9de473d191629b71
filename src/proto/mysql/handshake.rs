//! The connection phase: the server's greeting (protocol v10), the client's
//! HandshakeResponse41 (or SSLRequest), and COM_CHANGE_USER's payload, which is the only other
//! place a user name appears in clear. Parsing works on payload prefixes (the observer keeps
//! the first few hundred bytes of a packet); every read is bounds-checked because all of it is
//! network input.

use super::caps;
use super::packet::nul_str;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The packet ended (or the kept prefix ended) before a required field.
    Truncated,
    /// Not protocol v10 (first byte given).
    NotV10(u8),
    /// A pre-4.1 client (no CLIENT_PROTOCOL_41): its response layout is not followed.
    Pre41,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Truncated => f.write_str("handshake packet truncated"),
            HandshakeError::NotV10(b) => {
                write!(f, "greeting is not protocol v10 (first byte {b:#04x})")
            }
            HandshakeError::Pre41 => f.write_str("pre-4.1 client handshake"),
        }
    }
}

/// What the proxy needs from the server's greeting, with the offsets of the capability
/// fields so they can be rewritten in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub connection_id: u32,
    /// Capabilities incl. MariaDB's extended ones in bits 32–63 (when present).
    pub caps: u64,
    pub status: u16,
    caps_lo_at: usize,
    caps_hi_at: Option<usize>,
    ext_caps_at: Option<usize>,
    /// Byte range of the server version string.
    pub version: (usize, usize),
}

// Offsets here are sums of field widths within one packet prefix (far below usize::MAX), but
// they are derived from peer-controlled lengths: add with a check all the same.
fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        p.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        p.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Parse a greeting payload (`0x0A`, version, id, scramble, caps...). Old servers may end
/// after the low capability bytes; MariaDB puts extended capabilities in reserved bytes 6–9
/// when it clears `CLIENT_MYSQL`.
pub fn parse_greeting(p: &[u8]) -> Result<Greeting, HandshakeError> {
    let first = *p.first().ok_or(HandshakeError::Truncated)?;
    if first != 10 {
        return Err(HandshakeError::NotV10(first));
    }
    let (version, vlen) = nul_str(&p[1..]).ok_or(HandshakeError::Truncated)?;
    let base = 1 + vlen;
    let connection_id = u32_at(p, base).ok_or(HandshakeError::Truncated)?;
    let caps_lo_at = base + 4 + 8 + 1;
    let mut caps = u16_at(p, caps_lo_at).ok_or(HandshakeError::Truncated)? as u64;
    let mut g = Greeting {
        connection_id,
        caps,
        status: 0,
        caps_lo_at,
        caps_hi_at: None,
        ext_caps_at: None,
        version: (1, 1 + version.len()),
    };
    // charset(1) status(2) caps_hi(2) auth_len(1) reserved(10)
    let status_at = caps_lo_at + 3;
    let caps_hi_at = status_at + 2;
    if let (Some(status), Some(hi)) = (u16_at(p, status_at), u16_at(p, caps_hi_at)) {
        g.status = status;
        caps |= (hi as u64) << 16;
        g.caps_hi_at = Some(caps_hi_at);
        let ext_at = caps_hi_at + 2 + 1 + 6;
        if caps & caps::CLIENT_MYSQL == 0 {
            if let Some(ext) = u32_at(p, ext_at) {
                caps |= (ext as u64) << 32;
                g.ext_caps_at = Some(ext_at);
            }
        }
    }
    g.caps = caps;
    Ok(g)
}

/// Clear [`caps::HIDDEN`] in a greeting payload, in place, and return the greeting as the
/// server sent it (before the rewrite) so the observer knows the real capabilities.
pub fn hide_capabilities(p: &mut [u8]) -> Result<Greeting, HandshakeError> {
    let g = parse_greeting(p)?;
    let hidden = caps::HIDDEN;
    let mut clear16 = |at: usize, mask: u64| {
        let v = u16::from_le_bytes([p[at], p[at + 1]]) & !(mask as u16);
        p[at..at + 2].copy_from_slice(&v.to_le_bytes());
    };
    clear16(g.caps_lo_at, hidden & 0xFFFF);
    if let Some(at) = g.caps_hi_at {
        clear16(at, (hidden >> 16) & 0xFFFF);
    }
    if let Some(at) = g.ext_caps_at {
        let v =
            u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]) & !((hidden >> 32) as u32);
        p[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    Ok(g)
}

/// Offer TLS in a greeting payload (set CLIENT_SSL): shardgate itself answers the SSLRequest.
pub fn offer_ssl(p: &mut [u8]) -> Result<Greeting, HandshakeError> {
    let g = parse_greeting(p)?;
    let at = g.caps_lo_at;
    let v = u16::from_le_bytes([p[at], p[at + 1]]) | caps::SSL as u16;
    p[at..at + 2].copy_from_slice(&v.to_le_bytes());
    Ok(g)
}

/// The parts of a client's HandshakeResponse41 (or SSLRequest) the proxy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    /// Client capabilities incl. MariaDB extended ones (when the client clears CLIENT_MYSQL).
    pub caps: u64,
    /// Only the 32-byte prefix with CLIENT_SSL: TLS starts next and the stream goes opaque.
    pub ssl_request: bool,
    pub user: &'a [u8],
    /// `None` when not sent (no CONNECT_WITH_DB) or beyond the kept prefix.
    pub schema: Option<&'a [u8]>,
}

/// Parse a HandshakeResponse41 from its payload prefix `p`; `total_len` is the full payload
/// length (an SSLRequest is exactly 32 bytes).
pub fn parse_response(p: &[u8], total_len: u64) -> Result<Response<'_>, HandshakeError> {
    let lo = u32_at(p, 0).ok_or(HandshakeError::Truncated)? as u64;
    if lo & caps::PROTOCOL_41 == 0 {
        return Err(HandshakeError::Pre41);
    }
    let mut c = lo;
    if c & caps::CLIENT_MYSQL == 0 {
        c |= (u32_at(p, 28).ok_or(HandshakeError::Truncated)? as u64) << 32;
    }
    if total_len == 32 && c & caps::SSL != 0 {
        return Ok(Response {
            caps: c,
            ssl_request: true,
            user: &[],
            schema: None,
        });
    }
    let rest = p.get(32..).ok_or(HandshakeError::Truncated)?;
    let (user, n) = nul_str(rest).ok_or(HandshakeError::Truncated)?;
    let rest = &rest[n..];
    let schema = if c & caps::CONNECT_WITH_DB != 0 {
        skip_auth_response(rest, c)
            .and_then(|r| nul_str(r))
            .map(|(s, _)| s)
    } else {
        None
    };
    Ok(Response {
        caps: c,
        ssl_request: false,
        user,
        schema,
    })
}

/// Skip the auth-response field of a HandshakeResponse41, whose encoding depends on caps.
fn skip_auth_response(p: &[u8], c: u64) -> Option<&[u8]> {
    if c & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        // The length is the peer's word, up to 2^64 - 1: add with a check.
        let (len, n) = super::packet::lenenc(p)?;
        p.get(n.checked_add(usize::try_from(len).ok()?)?..)
    } else if c & caps::SECURE_CONNECTION != 0 {
        let len = *p.first()? as usize;
        p.get(1 + len..)
    } else {
        let (_, n) = nul_str(p)?;
        p.get(n..)
    }
}

/// COM_CHANGE_USER payload (after the command byte): `user<NUL>`, auth response
/// (`int<1>` length + data with SECURE_CONNECTION, else NUL-terminated), `schema<NUL>`, ...
/// Returns (user, schema); the schema is `None` when beyond the kept prefix.
pub fn parse_change_user(p: &[u8], client_caps: u64) -> Option<(&[u8], Option<&[u8]>)> {
    let (user, n) = nul_str(p)?;
    let rest = &p[n..];
    let after_auth = if client_caps & caps::SECURE_CONNECTION != 0 {
        let len = *rest.first()? as usize;
        rest.get(1 + len..)
    } else {
        nul_str(rest).and_then(|(_, n)| rest.get(n..))
    };
    let schema = after_auth.and_then(nul_str).map(|(s, _)| s);
    Some((user, schema))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_huge_lenenc_auth_length_is_refused_not_overflowed() {
        // Found by the mysql_observer fuzz target: 0xFE + 8 bytes of length near 2^64.
        let huge = [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, b'x'];
        assert_eq!(
            skip_auth_response(&huge, caps::PLUGIN_AUTH_LENENC_CLIENT_DATA),
            None
        );
    }

    /// A MariaDB 10.11-shaped greeting (CLIENT_MYSQL clear, extended caps present).
    pub(crate) fn mariadb_greeting(caps: u64) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.19-MariaDB-0+deb12u1\0");
        p.extend_from_slice(&42u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&((caps >> 32) as u32).to_le_bytes());
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    /// A HandshakeResponse41 as libmariadb builds it.
    pub(crate) fn response(caps: u64, user: &str, schema: Option<&str>) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&(caps as u32).to_le_bytes());
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 19]);
        p.extend_from_slice(&((caps >> 32) as u32).to_le_bytes());
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        // 20 is both a one-byte lenenc and an int<1> length.
        p.push(20);
        p.extend_from_slice(&[0x5A; 20]);
        if let Some(s) = schema {
            p.extend_from_slice(s.as_bytes());
            p.push(0);
        }
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    /// Capabilities as MariaDB 10.11 advertises them (CLIENT_MYSQL clear, extended caps set).
    const SERVER: u64 = 0xF7FE | (0x81FF << 16) | (0x1D << 32);

    #[test]
    fn greeting_caps_are_read_and_hidden_in_place() {
        let server = SERVER | caps::SSL | caps::COMPRESS | caps::MARIADB_COM_MULTI;
        let mut p = mariadb_greeting(server);
        let before = p.clone();
        let g = hide_capabilities(&mut p).unwrap();
        assert_eq!(g.caps, server);
        assert_eq!(g.connection_id, 42);
        assert_eq!(
            &before[g.version.0..g.version.1],
            b"5.5.5-10.11.19-MariaDB-0+deb12u1"
        );
        let after = parse_greeting(&p).unwrap();
        assert_eq!(after.caps, server & !caps::HIDDEN);
        assert_ne!(after.caps & caps::DEPRECATE_EOF, 0);
        assert_ne!(after.caps & caps::MARIADB_CACHE_METADATA, 0);
        // Only capability bytes changed.
        let changed: Vec<usize> = (0..p.len()).filter(|&i| p[i] != before[i]).collect();
        assert!(changed
            .iter()
            .all(|&i| i == g.caps_lo_at + 1 || i == g.caps_lo_at || i >= g.ext_caps_at.unwrap()));
    }

    #[test]
    fn greeting_errors_are_reported_not_panicked() {
        assert_eq!(parse_greeting(&[]), Err(HandshakeError::Truncated));
        assert_eq!(parse_greeting(&[9, 0]), Err(HandshakeError::NotV10(9)));
        assert_eq!(parse_greeting(b"\x0a5.7"), Err(HandshakeError::Truncated));
        let full = mariadb_greeting(SERVER);
        for cut in 0..full.len() {
            let _ = parse_greeting(&full[..cut]);
            let mut m = full[..cut].to_vec();
            let _ = hide_capabilities(&mut m);
        }
        // Cut right after the low caps: an old server; still usable.
        let g = parse_greeting(&full[..1 + 33 + 4 + 9 + 2]).unwrap();
        assert_eq!(g.caps, SERVER & 0xFFFF);
    }

    #[test]
    fn response_user_and_schema() {
        let c = caps::PROTOCOL_41
            | caps::SECURE_CONNECTION
            | caps::CONNECT_WITH_DB
            | caps::PLUGIN_AUTH
            | caps::MARIADB_CACHE_METADATA;
        let p = response(c, "sg_a", Some("sbtest"));
        let r = parse_response(&p, p.len() as u64).unwrap();
        assert_eq!(r.user, b"sg_a");
        assert_eq!(r.schema, Some(&b"sbtest"[..]));
        assert!(!r.ssl_request);
        assert_eq!(r.caps, c);
        let c2 = (c & !caps::CONNECT_WITH_DB)
            | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | caps::CLIENT_MYSQL;
        let p = response(c2, "u", None);
        let r = parse_response(&p, p.len() as u64).unwrap();
        assert_eq!((r.user, r.schema), (&b"u"[..], None));
        assert_eq!(
            r.caps,
            c2 & 0xFFFF_FFFF,
            "CLIENT_MYSQL set: no extended caps"
        );
        for cut in 0..p.len() {
            let _ = parse_response(&p[..cut], p.len() as u64);
        }
    }

    #[test]
    fn ssl_request_is_detected() {
        let c = caps::PROTOCOL_41 | caps::SSL | caps::SECURE_CONNECTION;
        let p = &response(c, "x", None)[..32];
        assert!(parse_response(p, 32).unwrap().ssl_request);
        assert_eq!(parse_response(&[0, 0, 0, 0], 4), Err(HandshakeError::Pre41));
    }

    #[test]
    fn change_user_payload() {
        let mut p = b"sg_b\0".to_vec();
        p.push(20);
        p.extend_from_slice(&[1; 20]);
        p.extend_from_slice(b"app\0\x2d\x00mysql_native_password\0");
        let (u, s) = parse_change_user(&p, caps::SECURE_CONNECTION).unwrap();
        assert_eq!((u, s), (&b"sg_b"[..], Some(&b"app"[..])));
        assert_eq!(parse_change_user(b"sg_b", 0), None);
        assert_eq!(
            parse_change_user(b"sg_b\0\x14ab", caps::SECURE_CONNECTION),
            Some((&b"sg_b"[..], None))
        );
    }
}
