//! What an OK packet tells a terminating proxy: affected rows, insert id, status, warnings,
//! and with `CLIENT_SESSION_TRACK` the session-state block (the server's own report of what
//! the statement changed in the session).
//!
//! ```text
//! OK:   00|FE  lenenc affected  lenenc insert_id  int<2> status  int<2> warnings
//!       [SESSION_TRACK: lenenc info  [status & SESSION_STATE_CHANGED: lenenc state]]
//! state: { int<1> type  lenenc data }*
//!   0 SYSTEM_VARIABLES   data = lenenc name, lenenc value
//!   1 SCHEMA             data = lenenc name
//!   2 STATE_CHANGE       data = lenenc "1"
//!   3 GTIDS              data = (MySQL only)
//!   4 TRANSACTION_CHARACTERISTICS  data = lenenc SQL text
//!   5 TRANSACTION_STATE  data = lenenc 8 characters, '_' for unset
//! ```

use super::packet::lenenc;

pub const SESSION_STATE_CHANGED: u16 = 0x4000;

const SYSTEM_VARIABLES: u8 = 0;
const SCHEMA: u8 = 1;
const STATE_CHANGE: u8 = 2;
const TRANSACTION_CHARACTERISTICS: u8 = 4;
const TRANSACTION_STATE: u8 = 5;

/// Longest value kept (a schema name, a `last_gtid`).
const MAX_VALUE: usize = 256;

/// The parts of an OK packet that decide whether a session keeps its server connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    /// The new default schema (`USE`, `COM_INIT_DB`).
    pub schema: Option<Vec<u8>>,
    /// `last_gtid` after this statement (MariaDB, tracked as a system variable).
    pub last_gtid: Option<Vec<u8>>,
    /// The server said the session state changed.
    pub state_change: bool,
    /// A system variable other than `last_gtid` changed.
    pub vars_changed: bool,
    /// The transaction state, when reported: does it show `L` (LOCK TABLES in effect)?
    pub locked: Option<bool>,
    /// The characteristics of the next or current transaction (`SET TRANSACTION READ
    /// ONLY`, `START TRANSACTION READ ONLY`...), when reported: are there any?
    pub characteristics: Option<bool>,
    /// A state item shardgate cannot read (damaged or beyond the bytes kept).
    pub unreadable: bool,
}

fn take_lenenc(p: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, n) = lenenc(p)?;
    let end = n.checked_add(usize::try_from(len).ok()?)?;
    Some((p.get(n..end)?, p.get(end..)?))
}

/// Parse an OK payload (`0x00` or a deprecate-EOF `0xFE` terminator). `tracked`: the
/// connection negotiated `CLIENT_SESSION_TRACK`. `None` when not even the fixed fields are
/// there.
pub fn parse_ok(p: &[u8], tracked: bool) -> Option<OkInfo> {
    if !matches!(p.first(), Some(0x00 | 0xFE)) {
        return None;
    }
    let (affected_rows, n) = lenenc(p.get(1..)?)?;
    let rest = p.get(1 + n..)?;
    let (insert_id, n) = lenenc(rest)?;
    let rest = rest.get(n..)?;
    let fixed = rest.get(..4)?;
    let status = u16::from_le_bytes([fixed[0], fixed[1]]);
    let warnings = u16::from_le_bytes([fixed[2], fixed[3]]);
    let mut info = OkInfo {
        affected_rows,
        insert_id,
        status,
        warnings,
        ..OkInfo::default()
    };
    if !tracked || status & SESSION_STATE_CHANGED == 0 {
        return Some(info);
    }
    let rest = &rest[4..];
    let Some(state) = take_lenenc(rest)
        .and_then(|(_, after_info)| take_lenenc(after_info))
        .map(|(state, _)| state)
    else {
        info.unreadable = true;
        return Some(info);
    };
    let mut items = state;
    while !items.is_empty() {
        let kind = items[0];
        let Some((data, next)) = take_lenenc(&items[1..]) else {
            info.unreadable = true;
            break;
        };
        items = next;
        match kind {
            SYSTEM_VARIABLES => match take_lenenc(data) {
                Some((name, after)) => {
                    let value = take_lenenc(after).map_or(&[][..], |(v, _)| v);
                    if name.eq_ignore_ascii_case(b"last_gtid") {
                        if !value.is_empty() && value.len() <= MAX_VALUE {
                            info.last_gtid = Some(value.to_vec());
                        }
                    } else {
                        info.vars_changed = true;
                    }
                }
                None => info.unreadable = true,
            },
            SCHEMA => match take_lenenc(data) {
                Some((name, _)) if name.len() <= MAX_VALUE => info.schema = Some(name.to_vec()),
                _ => info.unreadable = true,
            },
            STATE_CHANGE => info.state_change = true,
            TRANSACTION_STATE => {
                let s = take_lenenc(data).map_or(data, |(s, _)| s);
                info.locked = Some(s.contains(&b'L'));
            }
            TRANSACTION_CHARACTERISTICS => {
                let s = take_lenenc(data).map_or(data, |(s, _)| s);
                info.characteristics = Some(!s.is_empty());
            }
            // GTIDS (MySQL) and types to come: only the state change flag that comes with
            // them matters.
            _ => {}
        }
    }
    Some(info)
}

/// A MariaDB GTID `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl Gtid {
    pub fn parse(s: &[u8]) -> Option<Gtid> {
        let s = std::str::from_utf8(s).ok()?.trim();
        let mut it = s.splitn(3, '-');
        Some(Gtid {
            domain: it.next()?.parse().ok()?,
            server: it.next()?.parse().ok()?,
            seq: it.next()?.parse().ok()?,
        })
    }

    /// Is this GTID contained in a position list (`@@gtid_slave_pos`/`gtid_current_pos`,
    /// comma-separated, one entry per domain)? Sequence numbers grow within a domain
    /// (`gtid_strict_mode`), whichever server wrote them.
    pub fn applied_in(&self, pos: &[Gtid]) -> bool {
        pos.iter()
            .any(|p| p.domain == self.domain && p.seq >= self.seq)
    }

    pub fn parse_list(s: &[u8]) -> Vec<Gtid> {
        s.split(|&b| b == b',').filter_map(Gtid::parse).collect()
    }
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
        assert!(s.len() < 251);
        out.push(s.len() as u8);
        out.extend_from_slice(s);
    }

    fn item(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        lenenc_str(&mut v, data);
        v
    }

    fn var(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        lenenc_str(&mut d, name);
        lenenc_str(&mut d, value);
        item(SYSTEM_VARIABLES, &d)
    }

    fn ok(status: u16, items: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![0x00, 3, 0xFC, 0x10, 0x27];
        p.extend_from_slice(&(status | SESSION_STATE_CHANGED).to_le_bytes());
        p.extend_from_slice(&2u16.to_le_bytes());
        lenenc_str(&mut p, b"");
        let state: Vec<u8> = items.concat();
        lenenc_str(&mut p, &state);
        p
    }

    #[test]
    fn fixed_fields() {
        let p = ok(2, &[]);
        let i = parse_ok(&p, true).unwrap();
        assert_eq!((i.affected_rows, i.insert_id, i.warnings), (3, 10000, 2));
        assert_eq!(i.status & 2, 2);
        assert!(!i.state_change && !i.unreadable);
        assert_eq!(parse_ok(&[0x00, 0, 0, 2], true), None);
        assert_eq!(parse_ok(&[0x01, 0, 0, 2, 0, 0, 0], true), None);
    }

    #[test]
    fn items_are_read() {
        let mut schema = Vec::new();
        lenenc_str(&mut schema, b"app");
        let p = ok(
            2,
            &[
                item(SCHEMA, &schema),
                var(b"last_gtid", b"0-1-42"),
                item(STATE_CHANGE, b"1"),
                item(TRANSACTION_STATE, b"\x08________"),
            ],
        );
        let i = parse_ok(&p, true).unwrap();
        assert_eq!(i.schema.as_deref(), Some(&b"app"[..]));
        assert_eq!(i.last_gtid.as_deref(), Some(&b"0-1-42"[..]));
        assert!(i.state_change && !i.vars_changed && !i.unreadable);
        assert_eq!(i.locked, Some(false));

        let p = ok(2, &[var(b"time_zone", b"+01:00"), item(STATE_CHANGE, b"1")]);
        let i = parse_ok(&p, true).unwrap();
        assert!(i.vars_changed && i.state_change);

        let p = ok(2, &[item(TRANSACTION_STATE, b"\x08_______L")]);
        assert_eq!(parse_ok(&p, true).unwrap().locked, Some(true));

        let p = ok(
            2,
            &[item(
                TRANSACTION_CHARACTERISTICS,
                b"\x1aSET TRANSACTION READ ONLY;",
            )],
        );
        assert_eq!(parse_ok(&p, true).unwrap().characteristics, Some(true));
        let p = ok(2, &[item(TRANSACTION_CHARACTERISTICS, b"\x00")]);
        assert_eq!(parse_ok(&p, true).unwrap().characteristics, Some(false));
    }

    #[test]
    fn untracked_connections_ignore_the_block_and_damage_is_flagged() {
        let p = ok(2, &[item(STATE_CHANGE, b"1")]);
        assert!(!parse_ok(&p, false).unwrap().state_change);
        for cut in 9..p.len() {
            let i = parse_ok(&p[..cut], true).unwrap();
            assert!(i.unreadable || !i.state_change, "{cut}");
            if cut < p.len() {
                assert!(i.unreadable, "{cut}");
            }
        }
    }

    #[test]
    fn gtids() {
        let g = Gtid::parse(b"0-1-42").unwrap();
        assert_eq!(g.to_string(), "0-1-42");
        assert!(g.applied_in(&Gtid::parse_list(b"0-2-42")));
        assert!(g.applied_in(&Gtid::parse_list(b"1-1-3,0-1-50")));
        assert!(!g.applied_in(&Gtid::parse_list(b"0-1-41")));
        assert!(!g.applied_in(&Gtid::parse_list(b"1-1-100")));
        assert!(!g.applied_in(&Gtid::parse_list(b"")));
        assert_eq!(Gtid::parse(b"0-1"), None);
        assert_eq!(Gtid::parse(b"a-b-c"), None);
    }
}
