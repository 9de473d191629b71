//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2): the header a load
//! balancer puts before a TCP stream so the next hop learns the client's real addresses.
//!
//! [`parse`] is stateless and incremental: it is handed everything read so far and answers
//! [`Parsed::Incomplete`] for every strict prefix of a valid header, a complete
//! [`Parsed::Header`] once the last byte of one is there, and an [`Error`] as soon as the bytes
//! can no longer be the start of a header (so a caller never waits for bytes that cannot help).
//! It never allocates and never reads past the header: whatever follows belongs to the proxied
//! protocol.
//!
//! Choices where the spec leaves room (each documented where it is made):
//! - v1 `UNKNOWN` may be followed by anything up to the first LF, which must be preceded by CR;
//!   its addresses are ignored (`addrs: None`).
//! - v1 addresses are the exact textual forms: IPv4 dotted decimal without leading zeros, IPv6
//!   as `std` parses it (1-4 hex digits per group, one `::`, an embedded dotted IPv4 tail);
//!   ports decimal 0..=65535 without leading zeros. A line longer than 107 bytes is refused.
//! - v2 `LOCAL` ignores the family byte and the address block (the spec says both are
//!   discarded). v2 `PROXY` accepts only `UNSPEC` (0x00), `TCP4` (0x11), `TCP6` (0x21) and
//!   `UNIX STREAM` (0x31); datagram families are refused because this is a stream proxy.
//! - v2 TLVs are skipped without being checked: the declared length covers them and nothing
//!   here uses them. A v2 header longer than [`MAX_HEADER`] in all is refused.
//! - The writers map an IPv4 address to its IPv4-mapped IPv6 form when the other address is
//!   IPv6 (as HAProxy does), so mixed pairs keep their information instead of becoming
//!   `UNKNOWN`/`UNSPEC`.
use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest header [`parse`] accepts. A v1 line is at most [`V1_MAX`] bytes; a v2 header is 16
/// bytes plus its declared length, which could reach 65551 bytes: capping it bounds what a
/// caller buffers before the first byte of the real protocol (TLVs beyond are refused).
pub const MAX_HEADER: usize = 4096;

/// Longest v1 line, CRLF included (the spec's worst case:
/// `PROXY UNKNOWN ffff:...:ffff ffff:...:ffff 65535 65535\r\n`).
pub const V1_MAX: usize = 107;

/// The 12-byte v2 signature; it cannot start any text protocol (it contains a NUL and "QUIT").
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED: usize = 16;
/// Address block sizes per v2 family (spec section 2.2).
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;
/// Longest textual IPv6 address (`0000:0000:0000:0000:0000:ffff:255.255.255.255`).
const IPV6_TEXT_MAX: usize = 45;

/// What [`parse`] found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A complete header of `len` bytes at the start of the buffer. `addrs` is
    /// `(source, destination)`; `None` for v2 `LOCAL`, v1 `UNKNOWN` and v2 `AF_UNSPEC` or
    /// `AF_UNIX`, where the connection's own addresses stand.
    Header {
        len: usize,
        addrs: Option<(SocketAddr, SocketAddr)>,
    },
    /// Every byte so far fits a header but it is not complete: read more (up to [`MAX_HEADER`]).
    Incomplete,
}

/// Why the bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The bytes cannot be the start of a PROXY header at all (neither `PROXY ` nor the v2
    /// signature): the peer does not speak the protocol.
    NotProxy,
    /// A v1 line (`PROXY ` seen) that breaks the grammar; the text says where.
    BadV1(&'static str),
    /// A v2 header (signature seen) with an invalid field; the text says which.
    BadV2(&'static str),
    /// A v1 line without CRLF in its first [`V1_MAX`] bytes, or a v2 header declaring more than
    /// [`MAX_HEADER`] bytes in all.
    TooLong,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotProxy => f.write_str("not a PROXY protocol header"),
            Error::BadV1(why) => write!(f, "bad PROXY v1 header: {why}"),
            Error::BadV2(why) => write!(f, "bad PROXY v2 header: {why}"),
            Error::TooLong => f.write_str("PROXY header too long"),
        }
    }
}

impl std::error::Error for Error {}

/// Parse the PROXY header at the start of `buf` (v1 or v2, told apart by the first byte).
pub fn parse(buf: &[u8]) -> Result<Parsed, Error> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'P') => v1::parse(buf),
        Some(b'\r') => v2::parse(buf),
        Some(_) => Err(Error::NotProxy),
    }
}

/// `Ok(None)`: `buf` is a strict prefix of `lit`; `Ok(Some(()))`: `buf` starts with `lit`.
fn expect_literal(buf: &[u8], lit: &[u8], err: Error) -> Result<Option<()>, Error> {
    let n = buf.len().min(lit.len());
    if buf[..n] != lit[..n] {
        return Err(err);
    }
    Ok((n == lit.len()).then_some(()))
}

/// The pair as both IPv4 or both IPv6: an IPv4 address next to an IPv6 one becomes
/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`), which keeps the information where the alternative
/// (`UNKNOWN`/`UNSPEC`) would drop it.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    fn v6(a: SocketAddr) -> SocketAddr {
        match a.ip() {
            IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
            IpAddr::V6(_) => a,
        }
    }
    if src.is_ipv4() == dst.is_ipv4() {
        (src, dst)
    } else {
        (v6(src), v6(dst))
    }
}

/// Append a v1 line for `src` → `dst` (`PROXY TCP4 ...` or `PROXY TCP6 ...`, at most 104 bytes
/// since `std` prints IPv6 compressed). Mixed families are written as `TCP6` with the IPv4
/// address mapped; flow info and scope ids cannot be carried.
pub fn write_v1(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let (src, dst) = same_family(src, dst);
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    );
}

/// Append a v2 `PROXY` header over `STREAM` for `src` → `dst`, without TLVs (28 bytes for
/// IPv4, 52 for IPv6). Mixed families are written as `AF_INET6` with the IPv4 address mapped.
pub fn write_v2(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let (src, dst) = same_family(src, dst);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&(V2_INET_LEN as u16).to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(0x21);
            out.extend_from_slice(&(V2_INET6_LEN as u16).to_be_bytes());
            out.extend_from_slice(&v6_octets(s));
            out.extend_from_slice(&v6_octets(d));
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
}

/// Append a v2 `LOCAL` header (family `UNSPEC`, no addresses): what a health check sends so the
/// receiver uses the connection's own addresses.
pub fn write_v2_local(out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
}

/// `same_family` has already mapped IPv4 where the pair is mixed; mapping here too keeps this
/// total without a panic path.
fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Version 1: one line of text.
mod v1 {
    use super::*;

    /// Where the grammar stands after one step: `None` means the bytes ran out while still
    /// valid (incomplete), `Some(pos)` the position after what was consumed.
    type Step = Result<Option<usize>, Error>;

    pub(super) fn parse(buf: &[u8]) -> Result<Parsed, Error> {
        // Nothing past V1_MAX can belong to the line, so the grammar only ever sees that much;
        // a line still valid but unfinished there is too long.
        let line = &buf[..buf.len().min(V1_MAX)];
        match parse_line(line)? {
            Some(parsed) => Ok(parsed),
            None if buf.len() >= V1_MAX => Err(Error::TooLong),
            None => Ok(Parsed::Incomplete),
        }
    }

    /// The whole grammar; `Ok(None)` when `line` is a valid but unfinished prefix.
    fn parse_line(line: &[u8]) -> Result<Option<Parsed>, Error> {
        if expect_literal(line, b"PROXY ", Error::NotProxy)?.is_none() {
            return Ok(None);
        }
        let rest = &line[6..];
        for (proto, v6) in [(&b"TCP4 "[..], false), (&b"TCP6 "[..], true)] {
            if rest.starts_with(proto) {
                return tcp(line, 6 + proto.len(), v6);
            }
        }
        if rest.starts_with(b"UNKNOWN") {
            return unknown(line, 6 + 7);
        }
        let prefix_of_any = [&b"TCP4 "[..], b"TCP6 ", b"UNKNOWN"]
            .iter()
            .any(|p| p.starts_with(rest));
        if prefix_of_any {
            Ok(None)
        } else {
            Err(Error::BadV1("unknown protocol (not TCP4, TCP6 or UNKNOWN)"))
        }
    }

    /// `UNKNOWN`: then CRLF, or a space and anything the receiver must ignore up to the first
    /// LF, which must follow a CR (a bare LF never ends a line).
    fn unknown(line: &[u8], pos: usize) -> Result<Option<Parsed>, Error> {
        match line.get(pos) {
            None => return Ok(None),
            Some(b' ') | Some(b'\r') => {}
            Some(_) => return Err(Error::BadV1("UNKNOWN not followed by a space or CRLF")),
        }
        if line[pos] == b'\r' {
            match line.get(pos + 1) {
                None => return Ok(None),
                Some(b'\n') => {}
                Some(_) => return Err(Error::BadV1("CR not followed by LF")),
            }
        }
        match line[pos..].iter().position(|&b| b == b'\n') {
            None => Ok(None),
            Some(i) if line[pos + i - 1] == b'\r' => Ok(Some(Parsed::Header {
                len: pos + i + 1,
                addrs: None,
            })),
            Some(_) => Err(Error::BadV1("LF without CR")),
        }
    }

    /// `TCP4`/`TCP6`: `src SP dst SP sport SP dport CRLF`, every field exact.
    fn tcp(line: &[u8], pos: usize, v6: bool) -> Result<Option<Parsed>, Error> {
        let addr = |tok: &[u8]| {
            if v6 {
                ipv6(tok)
            } else {
                ipv4(tok).map(IpAddr::V4)
            }
        };
        let addr_prefix = |tok: &[u8]| {
            if v6 {
                ipv6_prefix(tok)
            } else {
                ipv4_prefix(tok)
            }
        };
        let bad_addr = if v6 {
            Error::BadV1("not an IPv6 address")
        } else {
            Error::BadV1("not an IPv4 address")
        };
        let bad_port = Error::BadV1("not a port (0-65535, no leading zero)");

        let Some((src, pos)) = field(line, pos, b' ', addr, addr_prefix, bad_addr)? else {
            return Ok(None);
        };
        let Some((dst, pos)) = field(line, pos, b' ', addr, addr_prefix, bad_addr)? else {
            return Ok(None);
        };
        let Some((sport, pos)) = field(line, pos, b' ', port, port_prefix, bad_port)? else {
            return Ok(None);
        };
        let Some((dport, pos)) = field(line, pos, b'\r', port, port_prefix, bad_port)? else {
            return Ok(None);
        };
        let Some(end) = crlf_tail(line, pos)? else {
            return Ok(None);
        };
        Ok(Some(Parsed::Header {
            len: end,
            addrs: Some((SocketAddr::new(src, sport), SocketAddr::new(dst, dport))),
        }))
    }

    /// After the CR ending the last field: the LF.
    fn crlf_tail(line: &[u8], pos: usize) -> Step {
        match line.get(pos) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(pos + 1)),
            Some(_) => Err(Error::BadV1("CR not followed by LF")),
        }
    }

    /// One field from `pos` up to `delim` (consumed). A field not yet terminated must still be
    /// a possible prefix of a valid one, so an impossible byte is refused at once.
    fn field<T>(
        line: &[u8],
        pos: usize,
        delim: u8,
        full: impl Fn(&[u8]) -> Option<T>,
        prefix: impl Fn(&[u8]) -> bool,
        err: Error,
    ) -> Result<Option<(T, usize)>, Error> {
        let rest = line.get(pos..).unwrap_or_default();
        match rest.iter().position(|&b| b == delim) {
            Some(i) => match full(&rest[..i]) {
                Some(v) => Ok(Some((v, pos + i + 1))),
                None => Err(err),
            },
            None if prefix(rest) => Ok(None),
            None => Err(err),
        }
    }

    /// Decimal 0..=65535 without a leading zero (the spec forbids them to avoid any octal
    /// reading).
    fn port(tok: &[u8]) -> Option<u16> {
        if tok.is_empty() || !port_prefix(tok) {
            return None;
        }
        u16::try_from(decimal(tok)).ok()
    }

    fn port_prefix(tok: &[u8]) -> bool {
        tok.len() <= 5
            && tok.iter().all(u8::is_ascii_digit)
            && !(tok.len() > 1 && tok[0] == b'0')
            && decimal(tok) <= u32::from(u16::MAX)
    }

    /// Value of at most 5 ASCII digits (callers check the length and the digits).
    fn decimal(tok: &[u8]) -> u32 {
        tok.iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d.wrapping_sub(b'0') % 10))
    }

    /// Exactly four dot-separated decimal octets 0..=255 without leading zeros.
    pub(super) fn ipv4(tok: &[u8]) -> Option<Ipv4Addr> {
        let mut octets = [0u8; 4];
        let mut n = 0;
        for part in tok.split(|&b| b == b'.') {
            if n == 4 || part.is_empty() || !octet_prefix(part) {
                return None;
            }
            octets[n] = u8::try_from(decimal(part)).ok()?;
            n += 1;
        }
        (n == 4).then_some(Ipv4Addr::from(octets))
    }

    /// Could `tok` be the start of a valid IPv4 address?
    pub(super) fn ipv4_prefix(tok: &[u8]) -> bool {
        let parts = tok.split(|&b| b == b'.');
        let count = tok.iter().filter(|&&b| b == b'.').count() + 1;
        count <= 4
            && parts.enumerate().all(|(i, part)| {
                // Only the last part may still be empty (just after a dot, or nothing yet).
                (i + 1 == count || !part.is_empty()) && octet_prefix(part)
            })
    }

    fn octet_prefix(part: &[u8]) -> bool {
        part.len() <= 3
            && part.iter().all(u8::is_ascii_digit)
            && !(part.len() > 1 && part[0] == b'0')
            && decimal(part) <= 255
    }

    /// As `std` parses it (no zone id), within the prefix rules below.
    fn ipv6(tok: &[u8]) -> Option<IpAddr> {
        // The prefix rules hold for every complete address too (and refuse what `std` might
        // allow beyond them, such as leading zeros in a dotted tail), so a header accepted
        // whole is never refused while it arrives.
        if !ipv6_prefix(tok) {
            return None;
        }
        let text = std::str::from_utf8(tok).ok()?;
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }

    pub(super) fn is_ipv6_char(b: u8) -> bool {
        b.is_ascii_hexdigit() || b == b':' || b == b'.'
    }

    /// Could `tok` be the start of a valid IPv6 address? Only necessary conditions, so a valid
    /// prefix is never refused; anything that passes here and is still wrong is refused when
    /// its delimiter arrives.
    pub(super) fn ipv6_prefix(tok: &[u8]) -> bool {
        if tok.len() > IPV6_TEXT_MAX || !tok.iter().all(|&b| is_ipv6_char(b)) {
            return false;
        }
        if tok.windows(3).any(|w| w == b":::") {
            return false;
        }
        if tok.windows(2).filter(|w| *w == b"::").count() > 1 {
            return false;
        }
        // A lone leading colon must be the start of "::".
        if tok.len() >= 2 && tok[0] == b':' && tok[1] != b':' {
            return false;
        }
        let groups = tok.split(|&b| b == b':');
        let count = tok.iter().filter(|&&b| b == b':').count() + 1;
        groups.enumerate().all(|(i, g)| {
            if g.contains(&b'.') {
                // A dotted IPv4 tail ends the address: no colon may follow it.
                i + 1 == count && ipv4_prefix(g)
            } else {
                g.len() <= 4
            }
        })
    }
}

/// Version 2: a binary header.
mod v2 {
    use super::*;

    pub(super) fn parse(buf: &[u8]) -> Result<Parsed, Error> {
        if expect_literal(buf, &V2_SIGNATURE, Error::NotProxy)?.is_none() {
            return Ok(Parsed::Incomplete);
        }
        let Some(&ver_cmd) = buf.get(12) else {
            return Ok(Parsed::Incomplete);
        };
        let local = command(ver_cmd)?;
        let Some(&fam) = buf.get(13) else {
            return Ok(Parsed::Incomplete);
        };
        // LOCAL: "discard the protocol block including the family which is ignored".
        let need = if local { 0 } else { address_len(fam)? };
        let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else {
            return Ok(Parsed::Incomplete);
        };
        let body = usize::from(u16::from_be_bytes([hi, lo]));
        let len = V2_FIXED + body;
        if len > MAX_HEADER {
            return Err(Error::TooLong);
        }
        if body < need {
            return Err(Error::BadV2("address block shorter than the family needs"));
        }
        let Some(block) = buf.get(V2_FIXED..len) else {
            return Ok(Parsed::Incomplete);
        };
        // Whatever follows the addresses (TLVs) is skipped: the length already covers it.
        let addrs = if local { None } else { addresses(fam, block) };
        Ok(Parsed::Header { len, addrs })
    }

    /// Version 2 and command LOCAL (`true`) or PROXY (`false`); anything else is refused.
    fn command(ver_cmd: u8) -> Result<bool, Error> {
        if ver_cmd >> 4 != 2 {
            return Err(Error::BadV2("version is not 2"));
        }
        match ver_cmd & 0x0F {
            0 => Ok(true),
            1 => Ok(false),
            _ => Err(Error::BadV2("command is neither LOCAL nor PROXY")),
        }
    }

    /// Bytes of address block the family needs. Datagram families are valid PROXY protocol but
    /// not for a stream proxy; other values "must be rejected as invalid by receivers".
    fn address_len(fam: u8) -> Result<usize, Error> {
        match fam {
            0x00 => Ok(0),
            0x11 => Ok(V2_INET_LEN),
            0x21 => Ok(V2_INET6_LEN),
            0x31 => Ok(V2_UNIX_LEN),
            0x12 | 0x22 | 0x32 => Err(Error::BadV2("datagram transport")),
            _ if fam >> 4 > 3 => Err(Error::BadV2("unknown address family")),
            _ => Err(Error::BadV2("unknown transport protocol")),
        }
    }

    /// The addresses of an INET or INET6 block (its length already checked); `None` for the
    /// families that carry none usable here (UNSPEC, UNIX).
    fn addresses(fam: u8, block: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
        match fam {
            0x11 => {
                let b: &[u8; V2_INET_LEN] = block.get(..V2_INET_LEN)?.try_into().ok()?;
                let src = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                let dst = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
                Some(pair(src.into(), dst.into(), [b[8], b[9]], [b[10], b[11]]))
            }
            0x21 => {
                let b: &[u8; V2_INET6_LEN] = block.get(..V2_INET6_LEN)?.try_into().ok()?;
                let mut src = [0u8; 16];
                let mut dst = [0u8; 16];
                src.copy_from_slice(&b[..16]);
                dst.copy_from_slice(&b[16..32]);
                let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
                Some(pair(src.into(), dst.into(), [b[32], b[33]], [b[34], b[35]]))
            }
            _ => None,
        }
    }

    fn pair(src: IpAddr, dst: IpAddr, sport: [u8; 2], dport: [u8; 2]) -> (SocketAddr, SocketAddr) {
        (
            SocketAddr::new(src, u16::from_be_bytes(sport)),
            SocketAddr::new(dst, u16::from_be_bytes(dport)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(fam);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    const TCP4_BODY: [u8; 12] = [192, 168, 0, 1, 10, 0, 0, 2, 0xDC, 0x04, 0x01, 0xBB];

    fn tcp6_body() -> Vec<u8> {
        let mut b = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
            .octets()
            .to_vec();
        b.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        b.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        b
    }

    type Addrs = Option<(SocketAddr, SocketAddr)>;

    /// Valid headers of every kind, with what `parse` must return for them.
    fn valid() -> Vec<(Vec<u8>, Addrs)> {
        let v4 = Some((sa("192.168.0.1:56324"), sa("10.0.0.2:443")));
        let v6 = Some((sa("[2001:db8::1]:12345"), sa("[::1]:80")));
        let ones = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let mut tlv = TCP4_BODY.to_vec();
        tlv.extend_from_slice(&[0x04, 0x00, 0x03, b'a', b'b', b'c']);
        vec![
            (
                b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n".to_vec(),
                Some((sa("255.255.255.255:65535"), sa("255.255.255.255:65535"))),
            ),
            (
                format!("PROXY TCP6 {ones} {ones} 65535 65535\r\n").into_bytes(),
                Some((
                    sa(&format!("[{ones}]:65535")),
                    sa(&format!("[{ones}]:65535")),
                )),
            ),
            (
                b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n".to_vec(),
                v4,
            ),
            (b"PROXY TCP4 0.0.0.0 1.2.3.4 0 0\r\n".to_vec(), {
                Some((sa("0.0.0.0:0"), sa("1.2.3.4:0")))
            }),
            (b"PROXY TCP6 2001:DB8::1 ::1 12345 80\r\n".to_vec(), v6),
            (
                b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n".to_vec(),
                Some((sa("[::ffff:1.2.3.4]:1"), sa("[::1]:2"))),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), None),
            (
                format!("PROXY UNKNOWN {ones} {ones} 65535 65535\r\n").into_bytes(),
                None,
            ),
            (b"PROXY UNKNOWN whatever\rgoes\r\n".to_vec(), None),
            (v2(0x21, 0x11, &TCP4_BODY), v4),
            (v2(0x21, 0x11, &tlv), v4),
            (v2(0x21, 0x21, &tcp6_body()), v6),
            (v2(0x20, 0x00, &[]), None),
            (v2(0x20, 0x11, &TCP4_BODY), None),
            (v2(0x20, 0xFF, &[1, 2, 3]), None),
            (v2(0x21, 0x00, &[9; 7]), None),
            (v2(0x21, 0x31, &[0; 216]), None),
        ]
    }

    #[test]
    fn spec_examples_parse() {
        for (bytes, addrs) in valid() {
            let want = Ok(Parsed::Header {
                len: bytes.len(),
                addrs,
            });
            assert_eq!(parse(&bytes), want, "{bytes:?}");
            let mut more = bytes.clone();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(parse(&more), want, "{bytes:?} with data after it");
        }
    }

    #[test]
    fn spec_lengths() {
        let ones = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let worst = format!("PROXY UNKNOWN {ones} {ones} 65535 65535\r\n");
        assert_eq!(worst.len(), V1_MAX);
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Header {
                len: 15,
                addrs: None
            })
        );
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        for (bytes, _) in valid() {
            for k in 0..bytes.len() {
                assert_eq!(
                    parse(&bytes[..k]),
                    Ok(Parsed::Incomplete),
                    "{:?}",
                    &bytes[..k]
                );
            }
        }
    }

    /// A reader that appends one byte per read sees `Incomplete` until exactly the header's
    /// last byte, even with the following protocol's bytes arriving in the same stream.
    #[test]
    fn byte_at_a_time() {
        for (bytes, addrs) in valid() {
            let mut stream = bytes.clone();
            stream.extend_from_slice(b"\r\n\r\nPROXY TCP4 1.1.1.1 2.2.2.2 1 1\r\n");
            let mut buf = Vec::new();
            let mut found = None;
            for &b in &stream {
                buf.push(b);
                match parse(&buf) {
                    Ok(Parsed::Incomplete) => {}
                    other => {
                        found = Some((buf.len(), other));
                        break;
                    }
                }
            }
            let want = Ok(Parsed::Header {
                len: bytes.len(),
                addrs,
            });
            assert_eq!(found, Some((bytes.len(), want)), "{bytes:?}");
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Addresses with many zero groups and small values, so `std` prints `::`, mapped and
        /// short forms, not only eight full groups.
        fn addr(&mut self, v6: bool) -> SocketAddr {
            let port = match self.next() % 4 {
                0 => 0,
                1 => 65535,
                _ => self.next() as u16,
            };
            let ip: IpAddr = if v6 {
                let mut g = [0u16; 8];
                for x in &mut g {
                    *x = match self.next() % 4 {
                        0 | 1 => 0,
                        2 => self.next() as u16 & 0xF,
                        _ => self.next() as u16,
                    };
                }
                if self.next().is_multiple_of(8) {
                    g = [0, 0, 0, 0, 0, 0xffff, g[6], g[7]];
                }
                Ipv6Addr::from(g).into()
            } else {
                let o = self.next().to_be_bytes();
                let small = |b: u8| if o[7] & 1 == 0 { b % 10 } else { b };
                Ipv4Addr::new(small(o[0]), small(o[1]), o[2], small(o[3])).into()
            };
            SocketAddr::new(ip, port)
        }
    }

    fn mapped(a: SocketAddr) -> SocketAddr {
        match a.ip() {
            IpAddr::V4(ip) => SocketAddr::new(ip.to_ipv6_mapped().into(), a.port()),
            IpAddr::V6(_) => a,
        }
    }

    #[test]
    fn generated_round_trip() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for i in 0..4000 {
            let (sv6, dv6) = (rng.next().is_multiple_of(2), rng.next().is_multiple_of(2));
            let (src, dst) = (rng.addr(sv6), rng.addr(dv6));
            let want = if sv6 == dv6 {
                (src, dst)
            } else {
                (mapped(src), mapped(dst))
            };
            let trailing: Vec<u8> = (0..rng.next() % 40).map(|_| rng.next() as u8).collect();
            for v in [1, 2] {
                let mut out = Vec::new();
                if v == 1 {
                    write_v1(src, dst, &mut out);
                    assert!(out.len() <= V1_MAX, "{}", String::from_utf8_lossy(&out));
                } else {
                    write_v2(src, dst, &mut out);
                }
                let len = out.len();
                let parsed = Ok(Parsed::Header {
                    len,
                    addrs: Some(want),
                });
                out.extend_from_slice(&trailing);
                assert_eq!(parse(&out), parsed, "#{i} v{v} {src} {dst}");
                if i % 50 == 0 {
                    for k in 0..len {
                        assert_eq!(parse(&out[..k]), Ok(Parsed::Incomplete));
                    }
                }
            }
        }
    }

    #[test]
    fn writers_exact_bytes() {
        let mut out = Vec::new();
        write_v1(sa("192.168.0.1:56324"), sa("10.0.0.2:443"), &mut out);
        assert_eq!(out, b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n");
        out.clear();
        write_v1(sa("1.2.3.4:5"), sa("[2001:db8::1]:6"), &mut out);
        assert_eq!(out, b"PROXY TCP6 ::ffff:1.2.3.4 2001:db8::1 5 6\r\n");
        out.clear();
        write_v2(sa("192.168.0.1:56324"), sa("10.0.0.2:443"), &mut out);
        assert_eq!(out, v2(0x21, 0x11, &TCP4_BODY));
        out.clear();
        write_v2(sa("[2001:db8::1]:12345"), sa("[::1]:80"), &mut out);
        assert_eq!(out, v2(0x21, 0x21, &tcp6_body()));
        out.clear();
        write_v2_local(&mut out);
        assert_eq!(out, v2(0x20, 0x00, &[]));
        assert_eq!(
            parse(&out),
            Ok(Parsed::Header {
                len: 16,
                addrs: None
            })
        );
        // Writers append.
        let mut two = b"x".to_vec();
        write_v2_local(&mut two);
        assert_eq!(two.len(), 17);
    }

    #[test]
    fn not_proxy_at_once() {
        for bad in [
            &b"G"[..],
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01",
            b"PU",
            b"PROXX",
            b"PROXY\r\n",
            b"proxy TCP4",
            b"\r\n\r\n\0\r\nQUIX",
            b"\r\r",
            b"\r\n\r\n\x01",
            b"\0",
        ] {
            assert_eq!(parse(bad), Err(Error::NotProxy), "{bad:?}");
        }
        assert_eq!(parse(b""), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"P"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"\r"), Ok(Parsed::Incomplete));
    }

    fn is_bad_v1(r: Result<Parsed, Error>) -> bool {
        matches!(r, Err(Error::BadV1(_)))
    }

    #[test]
    fn malformed_v1() {
        for bad in [
            &b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n"[..],
            b"PROXY  TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1  2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 1\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
            b"PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4.5 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1..3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 ::1 ::1:: 1 2\r\n",
            b"PROXY TCP6 1::2::3 ::1 1 2\r\n",
            b"PROXY TCP6 :::1 ::1 1 2\r\n",
            b"PROXY TCP6 12345::1 ::1 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
            b"PROXY TCP6 [::1] ::1 1 2\r\n",
            b"PROXY TCP6 ::1.2.3.04 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4::1 ::1 1 2\r\n",
            b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
            b"PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n",
            b"PROXY TCP4\t1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY UNKNOWN\n",
            b"PROXY UNKNOWN x\n",
            b"PROXY UNKNOWN\rx\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY UNKNOWN1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\xff\r\n",
            b"PROXY TCP4 \xc3\xa9.2.3.4 1.2.3.4 1 2\r\n",
        ] {
            let r = parse(bad);
            assert!(is_bad_v1(r), "{:?}: {r:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Impossible bytes are refused as soon as they arrive, not when the line ends.
    #[test]
    fn v1_errors_early() {
        for bad in [
            &b"PROXY X"[..],
            b"PROXY TCP4 256",
            b"PROXY TCP4 1.2.3.4.",
            b"PROXY TCP4 00",
            b"PROXY TCP4 1:",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 65536",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
            b"PROXY TCP6 :::",
            b"PROXY TCP6 12345",
            b"PROXY TCP6 1::2::",
            b"PROXY TCP6 ::1.2.3.4:",
            b"PROXY TCP6 :1",
            b"PROXY UNKNOWN\rX",
            b"PROXY UNKNOWN \n",
        ] {
            let r = parse(bad);
            assert!(is_bad_v1(r), "{:?}: {r:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn v1_too_long() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX - 1, b'a');
        assert_eq!(parse(&line), Ok(Parsed::Incomplete));
        line.push(b'\r');
        assert_eq!(parse(&line), Err(Error::TooLong));
        line.push(b'\n');
        assert_eq!(parse(&line), Err(Error::TooLong));
        // Exactly 107 bytes with CRLF at the end is fine.
        line.truncate(V1_MAX - 2);
        line.extend_from_slice(b"\r\n");
        assert_eq!(
            parse(&line),
            Ok(Parsed::Header {
                len: V1_MAX,
                addrs: None
            })
        );
    }

    /// Every version/command and family byte: only 0x20/0x21 and, for PROXY, the four stream
    /// families are accepted; LOCAL takes any family.
    #[test]
    fn v2_every_command_and_family_byte() {
        for ver_cmd in 0..=255u8 {
            for fam in 0..=255u8 {
                let r = parse(&v2(ver_cmd, fam, &[0; 216]));
                let ok = match ver_cmd {
                    0x20 => true,
                    0x21 => matches!(fam, 0x00 | 0x11 | 0x21 | 0x31),
                    _ => false,
                };
                assert_eq!(r.is_ok(), ok, "{ver_cmd:#x} {fam:#x}: {r:?}");
                if !ok {
                    assert!(is_bad_v2(r));
                }
            }
        }
    }

    /// One more byte after a valid unfinished line: digits and CR continue it, anything else
    /// is refused at once.
    #[test]
    fn v1_every_next_byte() {
        let base = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2";
        for b in 0..=255u8 {
            let mut buf = base.to_vec();
            buf.push(b);
            let r = parse(&buf);
            if b.is_ascii_digit() || b == b'\r' {
                assert_eq!(r, Ok(Parsed::Incomplete), "{b:#x}");
            } else {
                assert!(is_bad_v1(r), "{b:#x}: {r:?}");
            }
        }
    }

    /// The hand-written IPv4 reader agrees with `std` (which also refuses leading zeros) on
    /// short strings of digits and dots, and every prefix of an accepted address is a viable
    /// prefix.
    #[test]
    fn ipv4_matches_std() {
        let mut rng = XorShift(77);
        for _ in 0..20000 {
            let n = 1 + rng.next() % 16;
            let tok: Vec<u8> = (0..n)
                .map(|_| b"0123456789...25"[(rng.next() % 15) as usize])
                .collect();
            let text = std::str::from_utf8(&tok).unwrap();
            let want = text.parse::<Ipv4Addr>().ok();
            assert_eq!(v1::ipv4(&tok), want, "{text}");
            if want.is_some() {
                for k in 0..=tok.len() {
                    assert!(v1::ipv4_prefix(&tok[..k]), "{text} at {k}");
                }
            }
        }
    }

    /// Every prefix of an IPv6 address `std` accepts passes the early check (so a valid line is
    /// never refused while it arrives), over printed, padded, upper-case and random forms.
    #[test]
    fn ipv6_prefix_is_sound() {
        let mut rng = XorShift(4242);
        let mut accepted = 0;
        for i in 0..20000 {
            let tok: Vec<u8> = match i % 3 {
                0 => rng.addr(true).ip().to_string().into_bytes(),
                1 => {
                    let g: Vec<String> = (0..8)
                        .map(|_| format!("{:04X}", rng.next() as u16 & 0x0F0F))
                        .collect();
                    g.join(":").into_bytes()
                }
                _ => {
                    let n = 1 + rng.next() % 24;
                    (0..n)
                        .map(|_| b"0123:::ab.F1"[(rng.next() % 12) as usize])
                        .collect()
                }
            };
            let text = std::str::from_utf8(&tok).unwrap();
            let Ok(ip) = text.parse::<Ipv6Addr>() else {
                continue;
            };
            accepted += 1;
            for k in 0..=tok.len() {
                assert!(v1::ipv6_prefix(&tok[..k]), "{text} at {k}");
            }
            let line = format!("PROXY TCP6 {text} ::1 1 2\r\n");
            let want = Ok(Parsed::Header {
                len: line.len(),
                addrs: Some((SocketAddr::new(ip.into(), 1), sa("[::1]:2"))),
            });
            assert_eq!(parse(line.as_bytes()), want, "{line}");
        }
        assert!(accepted > 13000, "{accepted}");
    }

    fn is_bad_v2(r: Result<Parsed, Error>) -> bool {
        matches!(r, Err(Error::BadV2(_)))
    }

    #[test]
    fn malformed_v2() {
        let six = tcp6_body();
        for bad in [
            v2(0x11, 0x11, &TCP4_BODY),
            v2(0x31, 0x11, &TCP4_BODY),
            v2(0x01, 0x11, &TCP4_BODY),
            v2(0x22, 0x11, &TCP4_BODY),
            v2(0x2F, 0x11, &TCP4_BODY),
            v2(0x21, 0x12, &TCP4_BODY),
            v2(0x21, 0x22, &six),
            v2(0x21, 0x32, &[0; 216]),
            v2(0x21, 0x41, &TCP4_BODY),
            v2(0x21, 0x10, &TCP4_BODY),
            v2(0x21, 0x13, &TCP4_BODY),
            v2(0x21, 0x01, &TCP4_BODY),
            v2(0x21, 0x11, &TCP4_BODY[..11]),
            v2(0x21, 0x21, &six[..35]),
            v2(0x21, 0x21, &TCP4_BODY),
            v2(0x21, 0x31, &[0; 215]),
        ] {
            assert!(is_bad_v2(parse(&bad)), "{bad:?}");
            // Refused from the first 16 bytes on: no need to wait for the block.
            assert!(is_bad_v2(parse(&bad[..16])), "{bad:?}");
        }
        // Version and command are refused at byte 13, before the family.
        assert!(is_bad_v2(parse(&v2(0x11, 0x11, &[])[..13])));
        assert!(is_bad_v2(parse(&v2(0x21, 0x12, &[])[..14])));
    }

    #[test]
    fn v2_length_cap() {
        let body = vec![0u8; MAX_HEADER - V2_FIXED];
        let ok = v2(0x21, 0x11, &body);
        assert_eq!(
            parse(&ok),
            Ok(Parsed::Header {
                len: MAX_HEADER,
                addrs: Some((sa("0.0.0.0:0"), sa("0.0.0.0:0")))
            })
        );
        let long = v2(0x21, 0x11, &vec![0u8; MAX_HEADER - V2_FIXED + 1]);
        assert_eq!(parse(&long[..16]), Err(Error::TooLong));
        let mut max = V2_SIGNATURE.to_vec();
        max.extend_from_slice(&[0x20, 0x00, 0xFF, 0xFF]);
        assert_eq!(parse(&max), Err(Error::TooLong));
    }

    /// Refusal is final: once a prefix is refused, every longer buffer is refused the same way
    /// (a caller may decide on whatever it has read). Checked on every prefix of mutated headers.
    #[test]
    fn mutated_headers_are_consistent() {
        let mut rng = XorShift(12345);
        let bases = valid();
        for _ in 0..3000 {
            let (base, _) = &bases[(rng.next() % bases.len() as u64) as usize];
            let mut buf = base.clone();
            for _ in 0..1 + rng.next() % 3 {
                let at = (rng.next() % buf.len() as u64) as usize;
                match rng.next() % 4 {
                    0 => buf[at] = rng.next() as u8,
                    1 => buf[at] = b" \r\n:.0123456789aF"[(rng.next() % 17) as usize],
                    2 => {
                        buf.remove(at);
                    }
                    _ => buf.insert(at, b" \r\n:.09f"[(rng.next() % 8) as usize]),
                }
            }
            check_consistent(&buf);
        }
    }

    fn check_consistent(buf: &[u8]) {
        let whole = parse(buf);
        let mut first_err = None;
        for k in 0..=buf.len() {
            let r = parse(&buf[..k]);
            if let Some(e) = first_err {
                assert_eq!(r, Err(e), "{buf:?} at {k}");
                continue;
            }
            match r {
                Ok(Parsed::Incomplete) => {}
                Ok(Parsed::Header { len, .. }) => {
                    assert_eq!(len, k, "{buf:?}");
                    assert_eq!(whole, r, "{buf:?}");
                    return;
                }
                Err(e) => first_err = Some(e),
            }
        }
    }
}
