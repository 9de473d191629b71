//! The DNS wire format (RFC 1035 §4, AAAA from RFC 3596, SRV from RFC 2782): building one
//! recursive query and checking and reading its response. Pure, no I/O, so that the fuzz target
//! `dns_response` can feed it anything.
//!
//! A response is untrusted input: every length is checked before it is used, a compression
//! pointer must point before the name (or the part of it) that holds it, so that following
//! pointers always ends, and a name longer than 255 wire bytes is refused. Names come back as
//! text without the trailing dot, and only when every label is printable ASCII without a `.`
//! (anything else is [`Error::Malformed`]), so a returned name always reads back as the labels
//! it was made of.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The record types a query can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Srv,
}

impl QType {
    pub const ALL: [QType; 3] = [QType::A, QType::Aaaa, QType::Srv];

    pub fn code(self) -> u16 {
        match self {
            QType::A => TYPE_A,
            QType::Aaaa => TYPE_AAAA,
            QType::Srv => TYPE_SRV,
        }
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QType::A => "A",
            QType::Aaaa => "AAAA",
            QType::Srv => "SRV",
        })
    }
}

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

const HEADER_LEN: usize = 12;
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const OPCODE_MASK: u16 = 0x7800;
const RCODE_MASK: u16 = 0x000F;
const RCODE_NXDOMAIN: u8 = 3;

/// The longest name on the wire (length octets and the root's zero included); as text without
/// the trailing dot that is 253 bytes.
const MAX_WIRE_NAME: usize = 255;
pub const MAX_NAME: usize = 253;
pub const MAX_LABEL: usize = 63;
/// Compression pointers followed while reading one name.
const MAX_JUMPS: usize = 64;
/// CNAME records followed from the question's name to the records asked for.
const MAX_CNAME_CHAIN: usize = 8;

/// Why a query could not be built or a response was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The name to query is not a valid domain name (the reason says which rule it breaks).
    BadName(&'static str),
    /// The response is cut short or inconsistent (what was wrong).
    Malformed(&'static str),
    /// The response carries another query's ID: not ours, keep waiting.
    WrongId { got: u16, want: u16 },
    /// QR is clear (a query, not a response) or the opcode is not QUERY: not ours.
    NotResponse,
    /// The response echoes another question: not ours.
    QuestionMismatch,
    /// TC is set: the answer did not fit in the datagram; ask again over TCP.
    Truncated,
    /// RCODE 3: the name does not exist (an existing name without records of the type asked
    /// for is a successful [`Answer`] with nothing in it instead).
    NxDomain,
    /// Any other non-zero RCODE (SERVFAIL, REFUSED, ...).
    Rcode(u8),
    /// The CNAME chain from the question's name is longer than we follow, or loops.
    CnameChain,
}

impl Error {
    /// A response another query's (or nobody's) that the resolver ignores, waiting on for its
    /// own: a spoofed or late datagram must not end the wait.
    pub fn is_foreign(&self) -> bool {
        matches!(
            self,
            Error::WrongId { .. } | Error::NotResponse | Error::QuestionMismatch
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadName(why) => write!(f, "invalid name ({why})"),
            Error::Malformed(why) => write!(f, "malformed response ({why})"),
            Error::WrongId { got, want } => write!(f, "response ID {got} for query ID {want}"),
            Error::NotResponse => f.write_str("not a response to a standard query"),
            Error::QuestionMismatch => f.write_str("response to another question"),
            Error::Truncated => f.write_str("truncated response (TC)"),
            Error::NxDomain => f.write_str("no such name (NXDOMAIN)"),
            Error::Rcode(2) => f.write_str("server failure (SERVFAIL)"),
            Error::Rcode(4) => f.write_str("query type not implemented by the server (NOTIMP)"),
            Error::Rcode(5) => f.write_str("query refused (REFUSED)"),
            Error::Rcode(1) => f.write_str("the server could not read the query (FORMERR)"),
            Error::Rcode(c) => write!(f, "error response (RCODE {c})"),
            Error::CnameChain => f.write_str("CNAME chain too long or looping"),
        }
    }
}

impl std::error::Error for Error {}

/// One SRV record (RFC 2782). `target` is `"."` when the service is decidedly not available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// What a successful response holds for its question.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The end of the CNAME chain that starts at the question's name (the question's name
    /// itself, without trailing dot and in the response's case, when there is no CNAME).
    pub canonical: String,
    /// A or AAAA records of a name on that chain (only the type asked for), in answer order.
    pub addrs: Vec<IpAddr>,
    /// SRV records of a name on that chain (SRV queries), in answer order.
    pub srv: Vec<Srv>,
    /// A and AAAA records of the additional section, by owner name (the addresses of SRV
    /// targets, when the server sent them).
    pub additional: Vec<(String, IpAddr)>,
    /// The smallest TTL of the records in `addrs` and `srv` (and the CNAMEs that led there).
    pub ttl: Option<u32>,
}

impl Answer {
    /// The additional-section addresses of `name` (case-insensitive).
    pub fn additional_for(&self, name: &str) -> Vec<IpAddr> {
        let name = name.strip_suffix('.').unwrap_or(name);
        self.additional
            .iter()
            .filter(|(owner, _)| owner.eq_ignore_ascii_case(name))
            .map(|(_, ip)| *ip)
            .collect()
    }
}

/// A label byte we accept in names we send and names we read: printable ASCII but `.`.
fn label_byte_ok(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'.'
}

/// Checks a name to query and returns it without its trailing dot.
pub fn check_name(name: &str) -> Result<&str, Error> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(Error::BadName("empty"));
    }
    if name.len() > MAX_NAME {
        return Err(Error::BadName("longer than 253 bytes"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(Error::BadName("empty label"));
        }
        if label.len() > MAX_LABEL {
            return Err(Error::BadName("label longer than 63 bytes"));
        }
        if !label.bytes().all(label_byte_ok) {
            return Err(Error::BadName("not printable ASCII"));
        }
    }
    Ok(name)
}

/// A standard query with RD set and one question (`name` IN `qtype`), no EDNS.
pub fn query(id: u16, name: &str, qtype: QType) -> Result<Vec<u8>, Error> {
    let name = check_name(name)?;
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 2 + 4);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&FLAG_RD.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        // check_name bounds every label to 63 bytes.
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.code().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

fn be16(buf: &[u8], at: usize) -> Result<u16, Error> {
    match buf.get(
        at..at
            .checked_add(2)
            .ok_or(Error::Malformed("offset overflow"))?,
    ) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(Error::Malformed("cut short")),
    }
}

fn be32(buf: &[u8], at: usize) -> Result<u32, Error> {
    match buf.get(
        at..at
            .checked_add(4)
            .ok_or(Error::Malformed("offset overflow"))?,
    ) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(Error::Malformed("cut short")),
    }
}

/// Reads the (possibly compressed) name at `start`; returns it as text and the offset just
/// past its bytes at `start` (after the first pointer, if any).
///
/// Loops are impossible: a pointer must point strictly before the first byte of the run of
/// labels that holds it, so each jump lands lower than the last, and at most `MAX_JUMPS` are
/// followed.
fn read_name(buf: &[u8], start: usize) -> Result<(String, usize), Error> {
    let mut name = String::new();
    let mut pos = start;
    // Where the current run of labels began: a pointer must go below it.
    let mut run_start = start;
    let mut end = None;
    let mut jumps = 0;
    let mut wire_len = 1; // the root's zero octet
    loop {
        let len = *buf.get(pos).ok_or(Error::Malformed("name cut short"))?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                let end = end.unwrap_or(pos + 1);
                if name.is_empty() {
                    name.push('.');
                }
                return Ok((name, end));
            }
            0x00 => {
                let len = len as usize;
                wire_len += 1 + len;
                if wire_len > MAX_WIRE_NAME {
                    return Err(Error::Malformed("name longer than 255 bytes"));
                }
                let label = buf
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(Error::Malformed("label cut short"))?;
                if !label.iter().all(|&b| label_byte_ok(b)) {
                    return Err(Error::Malformed("name not printable ASCII"));
                }
                if !name.is_empty() {
                    name.push('.');
                }
                // Printable ASCII, so valid UTF-8 byte by byte.
                name.extend(label.iter().map(|&b| b as char));
                pos += 1 + len;
            }
            0xC0 => {
                let low = *buf
                    .get(pos + 1)
                    .ok_or(Error::Malformed("pointer cut short"))?;
                let target = (((len & 0x3F) as usize) << 8) | low as usize;
                if target >= run_start {
                    return Err(Error::Malformed("compression pointer does not point back"));
                }
                jumps += 1;
                if jumps > MAX_JUMPS {
                    return Err(Error::Malformed("too many compression pointers"));
                }
                if end.is_none() {
                    end = Some(pos + 2);
                }
                pos = target;
                run_start = target;
            }
            _ => return Err(Error::Malformed("unknown label type")),
        }
    }
}

/// Steps over the name at `pos` without decoding it (a record we do not read): its labels up to
/// the root or the first pointer. Returns the offset after it.
fn skip_name(buf: &[u8], mut pos: usize) -> Result<usize, Error> {
    loop {
        let len = *buf.get(pos).ok_or(Error::Malformed("name cut short"))?;
        match len & 0xC0 {
            0x00 if len == 0 => return Ok(pos + 1),
            0x00 => pos += 1 + len as usize,
            0xC0 if pos + 1 < buf.len() => return Ok(pos + 2),
            0xC0 => return Err(Error::Malformed("pointer cut short")),
            _ => return Err(Error::Malformed("unknown label type")),
        }
    }
}

/// One resource record's fixed fields, its owner and where its RDATA lies.
struct Rr {
    owner_at: usize,
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: usize,
    rdlen: usize,
}

/// Reads the record at `pos`; returns it and the offset after it. The owner name is only
/// skipped here (decoded when the record is used).
fn read_rr(buf: &[u8], pos: usize) -> Result<(Rr, usize), Error> {
    let after_name = skip_name(buf, pos)?;
    let rtype = be16(buf, after_name)?;
    let class = be16(buf, after_name + 2)?;
    let ttl = be32(buf, after_name + 4)?;
    let rdlen = be16(buf, after_name + 8)? as usize;
    let rdata = after_name + 10;
    if buf.len() < rdata + rdlen {
        return Err(Error::Malformed("record data cut short"));
    }
    let rr = Rr {
        owner_at: pos,
        rtype,
        class,
        ttl,
        rdata,
        rdlen,
    };
    Ok((rr, rdata + rdlen))
}

/// A name that must fill exactly the RDATA it starts (CNAME target, SRV target).
fn rdata_name(buf: &[u8], at: usize, rdata_end: usize) -> Result<String, Error> {
    let (name, end) = read_name(buf, at)?;
    if end != rdata_end {
        return Err(Error::Malformed(
            "record data length disagrees with its name",
        ));
    }
    Ok(name)
}

fn read_addr(buf: &[u8], rr: &Rr) -> Result<IpAddr, Error> {
    let data = buf
        .get(rr.rdata..rr.rdata + rr.rdlen)
        .ok_or(Error::Malformed("record data cut short"))?;
    match (rr.rtype, data.len()) {
        (TYPE_A, 4) => {
            let mut o = [0u8; 4];
            o.copy_from_slice(data);
            Ok(IpAddr::V4(Ipv4Addr::from(o)))
        }
        (TYPE_AAAA, 16) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(data);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => Err(Error::Malformed("address record of the wrong length")),
    }
}

enum Data {
    Addr(IpAddr),
    Cname(String),
    Srv(Srv),
}

/// Checks `buf` as the response to [`query`]`(id, name, qtype)` and collects what it answers.
///
/// In order: the ID ([`Error::WrongId`]), QR and opcode ([`Error::NotResponse`]), TC
/// ([`Error::Truncated`]), the echoed question ([`Error::QuestionMismatch`]; a response with
/// an error RCODE may echo none), the RCODE ([`Error::NxDomain`], [`Error::Rcode`]), then every
/// record of the answer, authority and additional sections is bounds-checked.
pub fn parse_response(buf: &[u8], id: u16, name: &str, qtype: QType) -> Result<Answer, Error> {
    let qname = check_name(name)?;
    if buf.len() < HEADER_LEN {
        return Err(Error::Malformed("shorter than a header"));
    }
    let got = be16(buf, 0)?;
    if got != id {
        return Err(Error::WrongId { got, want: id });
    }
    let flags = be16(buf, 2)?;
    if flags & FLAG_QR == 0 || flags & OPCODE_MASK != 0 {
        return Err(Error::NotResponse);
    }
    if flags & FLAG_TC != 0 {
        return Err(Error::Truncated);
    }
    let rcode = (flags & RCODE_MASK) as u8;
    let qdcount = be16(buf, 4)?;
    let ancount = be16(buf, 6)?;
    let nscount = be16(buf, 8)?;
    let arcount = be16(buf, 10)?;

    let mut pos = HEADER_LEN;
    match qdcount {
        0 if rcode != 0 => {}
        1 => {
            let (echoed, after) = read_name(buf, pos)?;
            let (t, c) = (be16(buf, after)?, be16(buf, after + 2)?);
            if !echoed.eq_ignore_ascii_case(qname) || t != qtype.code() || c != CLASS_IN {
                return Err(Error::QuestionMismatch);
            }
            pos = after + 4;
        }
        _ => return Err(Error::QuestionMismatch),
    }
    match rcode {
        0 => {}
        RCODE_NXDOMAIN => return Err(Error::NxDomain),
        c => return Err(Error::Rcode(c)),
    }

    // The answer section, decoded; the authority section, skipped; the additional section's
    // addresses.
    let mut answers: Vec<(String, u32, Data)> = Vec::new();
    for _ in 0..ancount {
        let (rr, next) = read_rr(buf, pos)?;
        pos = next;
        if rr.class != CLASS_IN {
            continue;
        }
        let data = match rr.rtype {
            TYPE_A | TYPE_AAAA => Data::Addr(read_addr(buf, &rr)?),
            TYPE_CNAME => Data::Cname(rdata_name(buf, rr.rdata, next)?),
            TYPE_SRV => {
                if rr.rdlen < 7 {
                    return Err(Error::Malformed("SRV record too short"));
                }
                Data::Srv(Srv {
                    priority: be16(buf, rr.rdata)?,
                    weight: be16(buf, rr.rdata + 2)?,
                    port: be16(buf, rr.rdata + 4)?,
                    target: rdata_name(buf, rr.rdata + 6, next)?,
                })
            }
            _ => continue,
        };
        let (owner, _) = read_name(buf, rr.owner_at)?;
        // An address of the other family than asked for is nobody's business here.
        if let Data::Addr(ip) = &data {
            let want_v4 = qtype == QType::A;
            if qtype == QType::Srv || ip.is_ipv4() != want_v4 {
                continue;
            }
        }
        answers.push((owner, rr.ttl, data));
    }
    for _ in 0..nscount {
        let (_, next) = read_rr(buf, pos)?;
        pos = next;
    }
    let mut additional = Vec::new();
    for _ in 0..arcount {
        let (rr, next) = read_rr(buf, pos)?;
        pos = next;
        if rr.class == CLASS_IN && (rr.rtype == TYPE_A || rr.rtype == TYPE_AAAA) {
            let ip = read_addr(buf, &rr)?;
            let (owner, _) = read_name(buf, rr.owner_at)?;
            additional.push((owner, ip));
        }
    }

    // Follow the CNAME chain from the question's name.
    let mut chain: Vec<String> = vec![qname.to_string()];
    let mut ttl: Option<u32> = None;
    while let Some(current) = chain.last() {
        let next = answers.iter().find_map(|(owner, t, d)| match d {
            Data::Cname(target) if owner.eq_ignore_ascii_case(current) => Some((target, *t)),
            _ => None,
        });
        let Some((target, t)) = next else {
            break;
        };
        if chain.len() > MAX_CNAME_CHAIN || chain.iter().any(|c| c.eq_ignore_ascii_case(target)) {
            return Err(Error::CnameChain);
        }
        ttl = Some(ttl.map_or(t, |m| m.min(t)));
        chain.push(target.clone());
    }
    let on_chain = |owner: &str| chain.iter().any(|c| c.eq_ignore_ascii_case(owner));

    let mut out = Answer {
        additional,
        ..Answer::default()
    };
    let mut used_any = false;
    for (owner, t, data) in answers.iter() {
        if !on_chain(owner) {
            continue;
        }
        match data {
            Data::Addr(ip) => out.addrs.push(*ip),
            Data::Srv(s) if qtype == QType::Srv => out.srv.push(s.clone()),
            _ => continue,
        }
        used_any = true;
        ttl = Some(ttl.map_or(*t, |m| m.min(*t)));
    }
    out.ttl = if used_any { ttl } else { None };
    // The chain's last name in the response's spelling (the question's, without a CNAME).
    out.canonical = match chain.len() {
        1 => match read_name(buf, HEADER_LEN) {
            Ok((echoed, _)) if qdcount == 1 => echoed,
            _ => qname.to_string(),
        },
        _ => chain.pop().unwrap_or_default(),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response builder for hand-made packets: names are written label by label unless
    /// given as raw bytes.
    struct Pkt(Vec<u8>);

    fn labels(name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for l in name
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
        {
            v.push(l.len() as u8);
            v.extend_from_slice(l.as_bytes());
        }
        v.push(0);
        v
    }

    impl Pkt {
        fn new(id: u16, flags: u16, counts: [u16; 4]) -> Pkt {
            let mut v = id.to_be_bytes().to_vec();
            v.extend_from_slice(&flags.to_be_bytes());
            for c in counts {
                v.extend_from_slice(&c.to_be_bytes());
            }
            Pkt(v)
        }
        fn raw(mut self, b: &[u8]) -> Pkt {
            self.0.extend_from_slice(b);
            self
        }
        fn name(self, n: &str) -> Pkt {
            self.raw(&labels(n))
        }
        fn u16(self, x: u16) -> Pkt {
            self.raw(&x.to_be_bytes())
        }
        fn question(self, n: &str, t: u16) -> Pkt {
            self.name(n).u16(t).u16(1)
        }
        /// A record after its owner name: type, class IN, TTL, RDATA.
        fn rr(self, t: u16, ttl: u32, rdata: &[u8]) -> Pkt {
            self.u16(t)
                .u16(1)
                .raw(&ttl.to_be_bytes())
                .u16(rdata.len() as u16)
                .raw(rdata)
        }
    }

    fn srv_rdata(prio: u16, weight: u16, port: u16, target: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&prio.to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&port.to_be_bytes());
        v.extend_from_slice(target);
        v
    }

    const OK: u16 = 0x8180; // QR, RD, RA, NOERROR

    #[test]
    fn query_layout() {
        let q = query(0xBEEF, "api.internal.", QType::Aaaa).unwrap();
        let mut want = vec![0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x03api\x08internal\x00\x00\x1c\x00\x01");
        assert_eq!(q, want);
        assert_eq!(query(1, "a.b", QType::Srv).unwrap()[17..], [0, 33, 0, 1]);
    }

    #[test]
    fn query_names_are_checked() {
        let l63 = "a".repeat(63);
        assert!(query(1, &l63, QType::A).is_ok());
        assert!(query(1, &"a".repeat(64), QType::A).is_err());
        let n253 = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        assert_eq!(n253.len(), 253);
        assert!(query(1, &n253, QType::A).is_ok());
        assert!(query(1, &format!("{n253}."), QType::A).is_ok());
        assert!(query(1, &format!("{n253}c"), QType::A).is_err());
        for bad in ["", ".", "a..b", ".a", "a b", "a..", "caf\u{e9}"] {
            assert!(
                matches!(query(1, bad, QType::A), Err(Error::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_records_with_compression() {
        // Answers name the question by a pointer to offset 12.
        let p = Pkt::new(7, OK, [1, 2, 0, 0])
            .question("Web.Example.com", 1)
            .raw(&[0xC0, 12])
            .rr(1, 30, &[10, 0, 0, 1])
            .raw(&[0xC0, 12])
            .rr(1, 20, &[10, 0, 0, 2]);
        let a = parse_response(&p.0, 7, "web.example.com", QType::A).unwrap();
        assert_eq!(
            a.addrs,
            vec![IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2])]
        );
        assert_eq!(a.ttl, Some(20));
        assert_eq!(a.canonical, "Web.Example.com");
    }

    #[test]
    fn aaaa_and_other_family_ignored() {
        let v6: Ipv6Addr = "fd00::5".parse().unwrap();
        let p = Pkt::new(9, OK, [1, 2, 0, 0])
            .question("h", 28)
            .raw(&[0xC0, 12])
            .rr(1, 5, &[1, 2, 3, 4])
            .raw(&[0xC0, 12])
            .rr(28, 5, &v6.octets());
        let a = parse_response(&p.0, 9, "h", QType::Aaaa).unwrap();
        assert_eq!(a.addrs, vec![IpAddr::V6(v6)]);
    }

    #[test]
    fn pointer_into_a_suffix() {
        // www.example.com, then a name "api" + pointer to "example.com" inside the question.
        let p = Pkt::new(1, OK, [1, 1, 0, 0])
            .question("www.example.com", 5)
            .raw(&[0xC0, 12])
            .rr(5, 60, &[3, b'a', b'p', b'i', 0xC0, 16]);
        assert!(matches!(
            parse_response(&p.0, 1, "www.example.com", QType::A),
            Err(Error::QuestionMismatch)
        ));
        let p = Pkt::new(1, OK, [1, 2, 0, 0])
            .question("www.example.com", 1)
            .raw(&[0xC0, 12])
            .rr(5, 60, &[3, b'a', b'p', b'i', 0xC0, 16])
            .raw(&[3, b'a', b'p', b'i', 0xC0, 16])
            .rr(1, 60, &[192, 0, 2, 1]);
        let a = parse_response(&p.0, 1, "www.example.com", QType::A).unwrap();
        assert_eq!(a.canonical, "api.example.com");
        assert_eq!(a.addrs, vec![IpAddr::from([192, 0, 2, 1])]);
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_refused() {
        let base = Pkt::new(1, OK, [1, 1, 0, 0]).question("a", 1);
        let at = base.0.len() as u8;
        // A pointer to itself.
        let p = Pkt(base.0.clone()).raw(&[0xC0, at]).rr(1, 1, &[1, 1, 1, 1]);
        assert!(matches!(
            parse_response(&p.0, 1, "a", QType::A),
            Err(Error::Malformed(_))
        ));
        // A label then a pointer back to that label: a loop through the label.
        let p = Pkt(base.0.clone())
            .raw(&[1, b'x', 0xC0, at])
            .rr(1, 1, &[1, 1, 1, 1]);
        assert!(matches!(
            parse_response(&p.0, 1, "a", QType::A),
            Err(Error::Malformed(_))
        ));
        // Two pointers to each other: one in the RDATA of a record we skip (TXT, at + 12),
        // pointing at the owner of the next record (at + 14), which points back to it.
        let p = Pkt::new(1, OK, [1, 2, 0, 0])
            .question("a", 1)
            .raw(&[0xC0, 12])
            .rr(16, 1, &[0xC0, at + 14])
            .raw(&[0xC0, at + 12])
            .rr(1, 1, &[1, 1, 1, 1]);
        assert!(matches!(
            parse_response(&p.0, 1, "a", QType::A),
            Err(Error::Malformed("compression pointer does not point back"))
        ));
        // A forward pointer, past the end.
        let p = Pkt(base.0.clone())
            .raw(&[0xFF, 0xFF])
            .rr(1, 1, &[1, 1, 1, 1]);
        assert!(parse_response(&p.0, 1, "a", QType::A).is_err());
        // Extended label types.
        let p = Pkt(base.0).raw(&[0x41, 0]).rr(1, 1, &[1, 1, 1, 1]);
        assert!(parse_response(&p.0, 1, "a", QType::A).is_err());
    }

    #[test]
    fn overlong_names_are_refused() {
        // 5 labels of 63 bytes: 320 wire bytes, no pointer needed.
        let long = vec!["x".repeat(63); 5].join(".");
        let p = Pkt::new(1, OK, [1, 1, 0, 0])
            .question("a", 1)
            .name(&long)
            .rr(1, 1, &[1, 1, 1, 1]);
        assert!(matches!(
            parse_response(&p.0, 1, "a", QType::A),
            Err(Error::Malformed("name longer than 255 bytes"))
        ));
    }

    #[test]
    fn truncated_packets_never_panic() {
        let p = Pkt::new(3, OK, [1, 1, 0, 1])
            .question("_http._tcp.example.com", 33)
            .raw(&[0xC0, 12])
            .rr(33, 10, &srv_rdata(1, 2, 80, &labels("a.example.com")))
            .name("a.example.com")
            .rr(1, 10, &[10, 0, 0, 1]);
        assert!(parse_response(&p.0, 3, "_http._tcp.example.com", QType::Srv).is_ok());
        for cut in 0..p.0.len() {
            let r = parse_response(&p.0[..cut], 3, "_http._tcp.example.com", QType::Srv);
            assert!(matches!(r, Err(Error::Malformed(_))), "cut {cut}: {r:?}");
        }
    }

    #[test]
    fn header_checks() {
        let ok = Pkt::new(5, OK, [1, 0, 0, 0]).question("a.b", 1).0;
        assert!(parse_response(&ok, 5, "a.b", QType::A).is_ok());
        assert_eq!(
            parse_response(&ok, 6, "a.b", QType::A),
            Err(Error::WrongId { got: 5, want: 6 })
        );
        let query = Pkt::new(5, 0x0100, [1, 0, 0, 0]).question("a.b", 1).0;
        assert_eq!(
            parse_response(&query, 5, "a.b", QType::A),
            Err(Error::NotResponse)
        );
        assert_eq!(
            parse_response(&ok, 5, "a.c", QType::A),
            Err(Error::QuestionMismatch)
        );
        assert_eq!(
            parse_response(&ok, 5, "a.b", QType::Aaaa),
            Err(Error::QuestionMismatch)
        );
        let tc = Pkt::new(5, OK | FLAG_TC, [1, 0, 0, 0]).question("a.b", 1).0;
        assert_eq!(
            parse_response(&tc, 5, "a.b", QType::A),
            Err(Error::Truncated)
        );
        let nx = Pkt::new(5, OK | 3, [1, 0, 0, 0]).question("a.b", 1).0;
        assert_eq!(
            parse_response(&nx, 5, "a.b", QType::A),
            Err(Error::NxDomain)
        );
        let servfail = Pkt::new(5, OK | 2, [0, 0, 0, 0]).0;
        assert_eq!(
            parse_response(&servfail, 5, "a.b", QType::A),
            Err(Error::Rcode(2))
        );
        let noq = Pkt::new(5, OK, [0, 0, 0, 0]).0;
        assert_eq!(
            parse_response(&noq, 5, "a.b", QType::A),
            Err(Error::QuestionMismatch)
        );
        // NODATA: success with nothing in it.
        let a = parse_response(&ok, 5, "a.b.", QType::A).unwrap();
        assert!(a.addrs.is_empty() && a.ttl.is_none());
    }

    #[test]
    fn cname_chain() {
        // q -> c1 -> c2 -> A, records out of order, plus an unrelated A.
        let p = Pkt::new(2, OK, [1, 4, 0, 0])
            .question("q.example", 1)
            .name("c2.example")
            .rr(1, 50, &[10, 1, 1, 1])
            .name("c1.example")
            .rr(5, 40, &labels("c2.example"))
            .raw(&[0xC0, 12])
            .rr(5, 300, &labels("c1.example"))
            .name("other.example")
            .rr(1, 50, &[10, 9, 9, 9]);
        let a = parse_response(&p.0, 2, "q.example", QType::A).unwrap();
        assert_eq!(a.addrs, vec![IpAddr::from([10, 1, 1, 1])]);
        assert_eq!(a.canonical, "c2.example");
        assert_eq!(a.ttl, Some(40));
    }

    #[test]
    fn cname_loop_and_long_chain() {
        let p = Pkt::new(2, OK, [1, 2, 0, 0])
            .question("a", 1)
            .name("a")
            .rr(5, 1, &labels("b"))
            .name("b")
            .rr(5, 1, &labels("a"));
        assert_eq!(
            parse_response(&p.0, 2, "a", QType::A),
            Err(Error::CnameChain)
        );
        let mut p = Pkt::new(2, OK, [1, 20, 0, 0]).question("n0", 1);
        for i in 0..20 {
            p = p
                .name(&format!("n{i}"))
                .rr(5, 1, &labels(&format!("n{}", i + 1)));
        }
        assert_eq!(
            parse_response(&p.0, 2, "n0", QType::A),
            Err(Error::CnameChain)
        );
    }

    #[test]
    fn srv_with_additionals() {
        let p = Pkt::new(4, OK, [1, 3, 1, 3])
            .question("_http._tcp.example.com", 33)
            .raw(&[0xC0, 12])
            .rr(33, 60, &srv_rdata(10, 5, 8080, &labels("a.example.com")))
            .raw(&[0xC0, 12])
            // The target compressed against the question's "example.com".
            .rr(33, 30, &srv_rdata(20, 1, 8081, &[1, b'b', 0xC0, 23]))
            .raw(&[0xC0, 12])
            .rr(33, 30, &srv_rdata(0, 0, 0, &[0]))
            // Authority: an NS record, skipped.
            .raw(&[0xC0, 23])
            .rr(2, 60, &labels("ns.example.com"))
            .name("a.example.com")
            .rr(1, 60, &[10, 0, 0, 1])
            .name("A.example.com")
            .rr(28, 60, &"fd00::1".parse::<Ipv6Addr>().unwrap().octets())
            .name("x.example.com")
            .rr(16, 60, b"\x03txt");
        let a = parse_response(&p.0, 4, "_http._tcp.example.com", QType::Srv).unwrap();
        assert_eq!(
            a.srv,
            vec![
                Srv {
                    priority: 10,
                    weight: 5,
                    port: 8080,
                    target: "a.example.com".into()
                },
                Srv {
                    priority: 20,
                    weight: 1,
                    port: 8081,
                    target: "b.example.com".into()
                },
                Srv {
                    priority: 0,
                    weight: 0,
                    port: 0,
                    target: ".".into()
                },
            ]
        );
        assert_eq!(
            a.additional_for("a.example.com."),
            vec![
                IpAddr::from([10, 0, 0, 1]),
                "fd00::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert!(a.additional_for("b.example.com").is_empty());
        assert_eq!(a.ttl, Some(30));
    }

    #[test]
    fn bad_record_data() {
        // An A record of 5 bytes, an SRV whose name overruns its RDATA, a CNAME with slack.
        let base = || {
            Pkt::new(1, OK, [1, 1, 0, 0])
                .question("s", 33)
                .raw(&[0xC0, 12])
        };
        let p = base().rr(1, 1, &[1, 2, 3, 4, 5]);
        assert!(parse_response(&p.0, 1, "s", QType::Srv).is_err());
        let p = base().rr(33, 1, &srv_rdata(1, 1, 1, &labels("t"))[..8]);
        assert!(parse_response(&p.0, 1, "s", QType::Srv).is_err());
        let mut rd = labels("t");
        rd.push(0);
        let p = base().rr(5, 1, &rd);
        assert!(parse_response(&p.0, 1, "s", QType::Srv).is_err());
        let p = base().rr(33, 1, &[0, 1, 0, 1]);
        assert!(parse_response(&p.0, 1, "s", QType::Srv).is_err());
        // A label with a dot in it, and one with a control byte.
        let p = base().rr(5, 1, &[3, b'a', b'.', b'b', 0]);
        assert!(parse_response(&p.0, 1, "s", QType::Srv).is_err());
        let p = base().rr(5, 1, &[1, 7, 0]);
        assert!(parse_response(&p.0, 1, "s", QType::Srv).is_err());
    }
}
