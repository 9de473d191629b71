//! Commands and the reply state machine (the MySQL client/server protocol, diagram in
//! docs/mysql.md). [`Reply`] is fed the server's logical packets of one command's reply, one
//! at a time, as (payload prefix, first-chunk length), and says whether the reply goes on, has
//! ended (OK or ERR), hands the floor to the client for LOCAL INFILE data, or cannot be
//! followed. It decides from the first few payload bytes only.

use super::com;
use super::packet::{lenenc, MAX_CHUNK};
use super::status;

/// How a command's reply is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandClass {
    /// No reply at all: COM_QUIT, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE.
    NoReply,
    /// Exactly one packet (OK, ERR, EOF or a bare string).
    Single,
    /// OK / ERR / result sets, possibly several (COM_QUERY, EXECUTE, PROCESS_INFO, BULK).
    Results,
    /// COM_STMT_PREPARE: ERR or PREPARE_OK + definitions.
    Prepare,
    /// Rows (or definitions) straight away, then a terminator: FIELD_LIST, STMT_FETCH.
    Rows,
    /// A new authentication exchange: COM_CHANGE_USER.
    Auth,
    /// A stream that never ends (binlog dump) or an unknown multi-packet protocol: stop.
    Unfollowable,
}

pub fn classify(cmd: u8) -> CommandClass {
    match cmd {
        com::QUIT | com::STMT_SEND_LONG_DATA | com::STMT_CLOSE => CommandClass::NoReply,
        com::QUERY | com::STMT_EXECUTE | com::PROCESS_INFO | com::STMT_BULK_EXECUTE => {
            CommandClass::Results
        }
        com::STMT_PREPARE => CommandClass::Prepare,
        com::FIELD_LIST | com::STMT_FETCH => CommandClass::Rows,
        com::CHANGE_USER => CommandClass::Auth,
        com::BINLOG_DUMP | com::BINLOG_DUMP_GTID | com::MULTI => CommandClass::Unfollowable,
        // INIT_DB, PING, STATISTICS, SET_OPTION, RESET_CONNECTION, STMT_RESET, KILL, DEBUG,
        // REFRESH, SHUTDOWN, and unknown codes (answered by one ERR "Unknown command").
        _ => CommandClass::Single,
    }
}

/// Stable names for stats output, indexed by [`command_slot`].
pub const COMMAND_NAMES: [&str; 22] = [
    "sleep",
    "quit",
    "init_db",
    "query",
    "field_list",
    "create_db",
    "drop_db",
    "refresh",
    "shutdown",
    "statistics",
    "process_info",
    "connect",
    "process_kill",
    "debug",
    "ping",
    "change_user",
    "stmt_prepare",
    "stmt_execute",
    "stmt_send_long_data",
    "stmt_close",
    "stmt_reset",
    "other",
];
/// More slots after [`COMMAND_NAMES`]'s first 21: set_option, stmt_fetch, reset_connection,
/// stmt_bulk_execute.
pub const EXTRA_NAMES: [&str; 4] = [
    "set_option",
    "stmt_fetch",
    "reset_connection",
    "stmt_bulk_execute",
];
/// Number of per-command counters a stats table needs.
pub const COMMAND_SLOTS: usize = COMMAND_NAMES.len() + EXTRA_NAMES.len();

/// Counter slot of a command byte (unknown and rare ones share "other").
pub fn command_slot(cmd: u8) -> usize {
    match cmd {
        0x00..=0x0e => cmd as usize,
        com::CHANGE_USER => 15,
        com::STMT_PREPARE => 16,
        com::STMT_EXECUTE => 17,
        com::STMT_SEND_LONG_DATA => 18,
        com::STMT_CLOSE => 19,
        com::STMT_RESET => 20,
        com::SET_OPTION => 22,
        com::STMT_FETCH => 23,
        com::RESET_CONNECTION => 24,
        com::STMT_BULK_EXECUTE => 25,
        _ => 21,
    }
}

/// Name of a counter slot.
pub fn slot_name(slot: usize) -> &'static str {
    if slot < COMMAND_NAMES.len() {
        COMMAND_NAMES[slot]
    } else {
        EXTRA_NAMES
            .get(slot - COMMAND_NAMES.len())
            .copied()
            .unwrap_or("other")
    }
}

/// Name of a command byte.
pub fn command_name(cmd: u8) -> &'static str {
    slot_name(command_slot(cmd))
}

/// Capabilities negotiated for the connection that change reply shapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// CLIENT_DEPRECATE_EOF: no EOF after definitions; terminators are OK packets (0xFE).
    pub deprecate_eof: bool,
    /// MariaDB CACHE_METADATA: the column count is followed by a metadata_follows byte.
    pub cache_metadata: bool,
}

/// The command a reply answers, with what the client asked for that changes its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    pub cmd: u8,
    /// COM_STMT_EXECUTE with a cursor type in its flags: the server may open a cursor and send
    /// the rows later, one COM_STMT_FETCH at a time.
    pub cursor: bool,
}

impl From<u8> for Asked {
    fn from(cmd: u8) -> Asked {
        Asked { cmd, cursor: false }
    }
}

impl Asked {
    /// What a complete command packet (payload prefix `p`, starting with the command byte)
    /// asks: COM_STMT_EXECUTE is `17 stmt_id(4) flags(1) ...`, cursor types in `flags`.
    pub fn of_packet(p: &[u8]) -> Option<Asked> {
        let cmd = *p.first()?;
        let cursor = cmd == com::STMT_EXECUTE && p.get(5).is_some_and(|&f| f != 0);
        Some(Asked { cmd, cursor })
    }
}

/// Reply state for the command at the head of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Waiting for the first packet of a (next) result.
    First,
    /// This many definition packets (and EOFs) of a PREPARE_OK are still to come.
    PrepareDefs(u32),
    /// This many column definitions are still to come.
    Cols(u64),
    /// The EOF after column definitions (only without DEPRECATE_EOF).
    ColsEof,
    Rows,
    /// The client is sending a LOCAL INFILE file; the server answers after its empty packet.
    Infile,
    /// COM_CHANGE_USER's authentication exchange.
    Auth,
    /// The single packet of a [`CommandClass::Single`] reply.
    Single,
}

impl Reply {
    /// State at the start of a reply to a command of this class (`None`: no reply expected).
    pub fn start(class: CommandClass) -> Option<Reply> {
        match class {
            CommandClass::NoReply | CommandClass::Unfollowable => None,
            CommandClass::Single => Some(Reply::Single),
            CommandClass::Results | CommandClass::Prepare => Some(Reply::First),
            CommandClass::Rows => Some(Reply::Rows),
            CommandClass::Auth => Some(Reply::Auth),
        }
    }
}

/// What one server packet did to the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// The reply ended; `ok` is false when it ended with ERR.
    Done {
        ok: bool,
    },
    /// The server asked for a LOCAL INFILE file: client data packets follow.
    InfileRequested,
    /// Something this state machine does not know how to follow.
    Lost(&'static str),
}

pub const ERR: u8 = 0xFF;
pub const OK: u8 = 0x00;
pub const EOF: u8 = 0xFE;
/// MariaDB progress reports look like ERR with code 0xFFFF and do not end anything.
const PROGRESS_CODE: [u8; 2] = [0xFF, 0xFF];

/// Status flags of an OK packet (header 0x00 or 0xFE): header, lenenc affected rows,
/// lenenc last insert id, `int<2>` status.
pub fn ok_status(p: &[u8]) -> Option<u16> {
    let (_, a) = lenenc(p.get(1..)?)?;
    let (_, b) = lenenc(p.get(1 + a..)?)?;
    let at = 1 + a + b;
    Some(u16::from_le_bytes(p.get(at..at + 2)?.try_into().ok()?))
}

/// Status flags of an EOF packet (`0xFE`, `int<2>` warnings, `int<2>` status); a pre-4.1
/// one-byte EOF has none.
pub fn eof_status(p: &[u8]) -> u16 {
    p.get(3..5)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .unwrap_or(0)
}

pub fn is_progress(p: &[u8]) -> bool {
    p.first() == Some(&ERR) && p.get(1..3) == Some(&PROGRESS_CODE[..])
}

fn after_terminator(st: u16) -> (Reply, Step) {
    if st & status::MORE_RESULTS_EXISTS != 0 {
        (Reply::First, Step::Continue)
    } else {
        (Reply::First, Step::Done { ok: true })
    }
}

impl Reply {
    /// Advance by one complete server packet of this reply: `p` is its payload prefix (at
    /// least the first 32 bytes when the packet is that long), `first_len` its first-chunk
    /// length (`MAX_CHUNK` means "at least 16 MiB"), `asked` the command it answers.
    pub fn on_packet(&mut self, asked: Asked, p: &[u8], first_len: usize, neg: Negotiated) -> Step {
        let cmd = asked.cmd;
        let head = p.first().copied();
        if is_progress(p) {
            return Step::Continue;
        }
        match *self {
            Reply::Single => match head {
                Some(ERR) => Step::Done { ok: false },
                _ => Step::Done { ok: true },
            },
            Reply::Auth => match head {
                Some(OK) => Step::Done { ok: true },
                Some(ERR) => Step::Done { ok: false },
                // AuthSwitchRequest (0xFE), AuthMoreData (0x01), next factor (0x02)...
                _ => Step::Continue,
            },
            Reply::First | Reply::Infile => self.first(cmd, p, first_len, neg),
            Reply::PrepareDefs(n) => {
                if head == Some(ERR) {
                    return Step::Done { ok: false };
                }
                if n <= 1 {
                    *self = Reply::First;
                    Step::Done { ok: true }
                } else {
                    *self = Reply::PrepareDefs(n - 1);
                    Step::Continue
                }
            }
            Reply::Cols(n) => {
                if head == Some(ERR) {
                    *self = Reply::First;
                    return Step::Done { ok: false };
                }
                *self = if n > 1 {
                    Reply::Cols(n - 1)
                } else if neg.deprecate_eof {
                    Reply::Rows
                } else {
                    Reply::ColsEof
                };
                Step::Continue
            }
            Reply::ColsEof => match head {
                Some(EOF) if first_len < 9 => {
                    let st = eof_status(p);
                    // CURSOR_EXISTS means "rows come with COM_STMT_FETCH" only in the reply to
                    // an EXECUTE that asked for a cursor, and a cursor is over one result: the
                    // flag also shows in results a stored procedure sends while it has a
                    // cursor of its own open (CALL, text or binary), and their rows follow.
                    let cursor_opened = asked.cursor
                        && st & status::CURSOR_EXISTS != 0
                        && st & status::MORE_RESULTS_EXISTS == 0;
                    if cursor_opened {
                        *self = Reply::First;
                        Step::Done { ok: true }
                    } else {
                        *self = Reply::Rows;
                        Step::Continue
                    }
                }
                Some(ERR) => {
                    *self = Reply::First;
                    Step::Done { ok: false }
                }
                _ => Step::Lost("expected EOF after column definitions"),
            },
            Reply::Rows => match head {
                Some(ERR) => {
                    *self = Reply::First;
                    Step::Done { ok: false }
                }
                // Text rows may start with 0xFE only for fields >= 2^24 bytes, i.e. in a
                // logical packet of at least MAX_CHUNK bytes; EOF is shorter than 9 bytes.
                Some(EOF) if first_len < 9 && !neg.deprecate_eof => {
                    let (next, step) = after_terminator(eof_status(p));
                    *self = next;
                    step
                }
                Some(EOF) if first_len < MAX_CHUNK && neg.deprecate_eof => match ok_status(p) {
                    Some(st) => {
                        let (next, step) = after_terminator(st);
                        *self = next;
                        step
                    }
                    None => Step::Lost("malformed OK terminator"),
                },
                _ => Step::Continue,
            },
        }
    }

    /// The first packet of a result (also after LOCAL INFILE data and after a result that
    /// announced more).
    fn first(&mut self, cmd: u8, p: &[u8], first_len: usize, neg: Negotiated) -> Step {
        *self = Reply::First;
        match p.first().copied() {
            None => Step::Lost("empty reply packet"),
            Some(ERR) => Step::Done { ok: false },
            Some(OK) if cmd == com::STMT_PREPARE => {
                // PREPARE_OK: 00 stmt_id(4) ncols(2) nparams(2) filler warnings(2)
                let (Some(nc), Some(np)) = (p.get(5..7), p.get(7..9)) else {
                    return Step::Lost("short PREPARE_OK");
                };
                let ncols = u16::from_le_bytes([nc[0], nc[1]]) as u32;
                let nparams = u16::from_le_bytes([np[0], np[1]]) as u32;
                let eofs = if neg.deprecate_eof {
                    0
                } else {
                    (ncols > 0) as u32 + (nparams > 0) as u32
                };
                let defs = ncols + nparams + eofs;
                if defs == 0 {
                    Step::Done { ok: true }
                } else {
                    *self = Reply::PrepareDefs(defs);
                    Step::Continue
                }
            }
            Some(OK) if first_len >= 7 => match ok_status(p) {
                Some(st) => after_terminator(st).1,
                None => Step::Lost("malformed OK packet"),
            },
            Some(OK) => Step::Lost("short OK packet"),
            // LOCAL INFILE request: a text query, or a prepared `LOAD DATA LOCAL INFILE`.
            Some(0xFB) if cmd == com::QUERY || cmd == com::STMT_EXECUTE => {
                *self = Reply::Infile;
                Step::InfileRequested
            }
            Some(EOF) => Step::Lost("0xFE where a result was expected"),
            Some(_) => {
                let Some((count, n)) = lenenc(p) else {
                    return Step::Lost("bad column count");
                };
                if count == 0 {
                    return Step::Lost("zero column count");
                }
                let defs = if neg.cache_metadata {
                    match p.get(n) {
                        Some(0) => 0,
                        Some(1) => count,
                        _ => return Step::Lost("bad metadata_follows byte"),
                    }
                } else {
                    count
                };
                *self = if defs > 0 {
                    Reply::Cols(defs)
                } else if neg.deprecate_eof {
                    Reply::Rows
                } else {
                    Reply::ColsEof
                };
                Step::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DE: Negotiated = Negotiated {
        deprecate_eof: true,
        cache_metadata: false,
    };
    const CLASSIC: Negotiated = Negotiated {
        deprecate_eof: false,
        cache_metadata: false,
    };
    const MARIA: Negotiated = Negotiated {
        deprecate_eof: false,
        cache_metadata: true,
    };

    fn ok(status: u16) -> Vec<u8> {
        let mut p = vec![0, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        p
    }
    fn ok_fe(status: u16) -> Vec<u8> {
        let mut p = ok(status);
        p[0] = 0xFE;
        p
    }
    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xFE, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }
    fn coldef() -> Vec<u8> {
        b"\x03def\x06sbtest\x07sbtest1\x07sbtest1\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x03B\x00\x00\x00".to_vec()
    }

    /// Run a reply; returns the steps, one per packet.
    fn drive(cmd: u8, neg: Negotiated, packets: &[Vec<u8>]) -> Vec<Step> {
        drive_asked(cmd.into(), neg, packets)
    }

    fn drive_asked(asked: Asked, neg: Negotiated, packets: &[Vec<u8>]) -> Vec<Step> {
        let mut r = Reply::start(classify(asked.cmd)).unwrap();
        packets
            .iter()
            .map(|p| r.on_packet(asked, p, p.len(), neg))
            .collect()
    }

    fn ends_exactly_at_last(steps: &[Step], ok: bool) {
        let (last, before) = steps.split_last().unwrap();
        assert_eq!(*last, Step::Done { ok }, "{steps:?}");
        assert!(before.iter().all(|s| *s == Step::Continue), "{steps:?}");
    }

    #[test]
    fn text_result_set_classic_and_deprecate_eof() {
        let classic = [
            vec![2],
            coldef(),
            coldef(),
            eof(2),
            b"\x011\x01a".to_vec(),
            b"\xfb\x01b".to_vec(),
            eof(2),
        ];
        ends_exactly_at_last(&drive(com::QUERY, CLASSIC, &classic), true);
        // A row whose first field is a 1-byte string "\xfe"-led? No: rows never start with
        // 0xFE unless >= 16 MiB; an 0xFE row of MAX_CHUNK bytes is a row under DEPRECATE_EOF.
        let de = [vec![1], coldef(), b"\x011".to_vec(), ok_fe(2)];
        ends_exactly_at_last(&drive(com::QUERY, DE, &de), true);
        let mut r = Reply::Rows;
        assert_eq!(
            r.on_packet(com::QUERY.into(), &[0xFE, 0xFF, 0xFF, 0xFF], MAX_CHUNK, DE),
            Step::Continue
        );
        assert_eq!(
            r.on_packet(
                com::QUERY.into(),
                &[0xFE, 0xFF, 0xFF, 0xFF],
                MAX_CHUNK,
                CLASSIC
            ),
            Step::Continue
        );
    }

    #[test]
    fn multi_results_follow_more_results_flag() {
        let more = status::MORE_RESULTS_EXISTS | status::AUTOCOMMIT;
        // SELECT 1; INSERT ...; CALL-like: result set, OK with more, result set, final OK.
        let classic = [
            vec![1],
            coldef(),
            eof(2),
            b"\x011".to_vec(),
            eof(more),
            ok(more),
            vec![1],
            coldef(),
            eof(2),
            eof(more),
            ok(2),
        ];
        ends_exactly_at_last(&drive(com::QUERY, CLASSIC, &classic), true);
        let de = [vec![1], coldef(), ok_fe(more), ok(2)];
        ends_exactly_at_last(&drive(com::QUERY, DE, &de), true);
        // An error in the second statement ends the reply.
        let err = [ok(more), b"\xff\x7a\x04#42S02Table doesn't exist".to_vec()];
        ends_exactly_at_last(&drive(com::QUERY, CLASSIC, &err), false);
    }

    #[test]
    fn errors_anywhere_end_the_reply() {
        let e = b"\xff\x15\x04#28000denied".to_vec();
        ends_exactly_at_last(&drive(com::QUERY, CLASSIC, std::slice::from_ref(&e)), false);
        ends_exactly_at_last(
            &drive(
                com::QUERY,
                CLASSIC,
                &[vec![1], coldef(), eof(0), b"\x011".to_vec(), e.clone()],
            ),
            false,
        );
        ends_exactly_at_last(
            &drive(com::STMT_PREPARE, CLASSIC, std::slice::from_ref(&e)),
            false,
        );
        ends_exactly_at_last(&drive(com::PING, CLASSIC, &[e]), false);
    }

    #[test]
    fn progress_reports_do_not_end_anything() {
        let progress = b"\xff\xff\xff\x01\x01\x01\x00\x00\x00\x05stage".to_vec();
        ends_exactly_at_last(
            &drive(com::QUERY, CLASSIC, &[progress.clone(), progress, ok(2)]),
            true,
        );
    }

    #[test]
    fn prepare_ok_definitions() {
        // 2 params, 3 columns: classic → 2 + EOF + 3 + EOF.
        let pok = b"\x00\x01\x00\x00\x00\x03\x00\x02\x00\x00\x00\x00".to_vec();
        let mut pk = vec![pok.clone()];
        pk.extend(std::iter::repeat_n(coldef(), 2));
        pk.push(eof(2));
        pk.extend(std::iter::repeat_n(coldef(), 3));
        pk.push(eof(2));
        ends_exactly_at_last(&drive(com::STMT_PREPARE, CLASSIC, &pk), true);
        let mut pk = vec![pok];
        pk.extend(std::iter::repeat_n(coldef(), 5));
        ends_exactly_at_last(&drive(com::STMT_PREPARE, DE, &pk), true);
        // No params, no columns: PREPARE_OK alone.
        let none = b"\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        ends_exactly_at_last(&drive(com::STMT_PREPARE, CLASSIC, &[none]), true);
    }

    #[test]
    fn execute_binary_rows_skipped_metadata_and_cursors() {
        // Binary rows start with 0x00 and must not be taken for OK packets.
        let row = b"\x00\x00\x01\x00\x00\x00".to_vec();
        ends_exactly_at_last(
            &drive(
                com::STMT_EXECUTE,
                DE,
                &[vec![1], coldef(), row.clone(), row.clone(), ok_fe(2)],
            ),
            true,
        );
        // MariaDB CACHE_METADATA with metadata skipped (count 1, follows 0): EOF still comes.
        ends_exactly_at_last(
            &drive(
                com::STMT_EXECUTE,
                MARIA,
                &[vec![1, 0], eof(2), row.clone(), eof(2)],
            ),
            true,
        );
        ends_exactly_at_last(
            &drive(
                com::STMT_EXECUTE,
                MARIA,
                &[vec![1, 1], coldef(), eof(2), row.clone(), eof(2)],
            ),
            true,
        );
        // Cursor asked and opened: definitions and EOF with CURSOR_EXISTS, no rows.
        let cursor = Asked {
            cmd: com::STMT_EXECUTE,
            cursor: true,
        };
        ends_exactly_at_last(
            &drive_asked(
                cursor,
                CLASSIC,
                &[vec![1], coldef(), eof(status::CURSOR_EXISTS | 2)],
            ),
            true,
        );
        // The same flag without a cursor asked (a procedure's own open cursor leaks it into
        // its results, text or binary): rows follow.
        for asked in [com::STMT_EXECUTE.into(), com::QUERY.into()] {
            ends_exactly_at_last(
                &drive_asked(
                    asked,
                    CLASSIC,
                    &[
                        vec![1],
                        coldef(),
                        eof(status::CURSOR_EXISTS | 2),
                        row.clone(),
                        eof(status::CURSOR_EXISTS | 2),
                    ],
                ),
                true,
            );
        }
        // Cursor asked but more results announced (a CALL): no cursor over several results.
        ends_exactly_at_last(
            &drive_asked(
                cursor,
                CLASSIC,
                &[
                    vec![1],
                    coldef(),
                    eof(status::CURSOR_EXISTS | status::MORE_RESULTS_EXISTS | 2),
                    row.clone(),
                    eof(status::MORE_RESULTS_EXISTS | 2),
                    ok(2),
                ],
            ),
            true,
        );
        assert_eq!(
            Asked::of_packet(b"\x17\x01\x00\x00\x00\x01\x01\x00\x00\x00"),
            Some(cursor)
        );
        assert_eq!(
            Asked::of_packet(b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00"),
            Some(com::STMT_EXECUTE.into())
        );
        assert_eq!(Asked::of_packet(b"\x03\x01"), Some(com::QUERY.into()));
        // Under DEPRECATE_EOF the cursor's metadata ends with an OK (0xFE) terminator.
        ends_exactly_at_last(
            &drive(
                com::STMT_EXECUTE,
                DE,
                &[vec![1], coldef(), ok_fe(status::CURSOR_EXISTS | 2)],
            ),
            true,
        );
        // FETCH: rows then EOF.
        ends_exactly_at_last(
            &drive(
                com::STMT_FETCH,
                CLASSIC,
                &[row.clone(), row, eof(status::CURSOR_EXISTS)],
            ),
            true,
        );
        ends_exactly_at_last(
            &drive(com::STMT_FETCH, CLASSIC, &[eof(status::LAST_ROW_SENT)]),
            true,
        );
    }

    #[test]
    fn local_infile_and_odd_replies() {
        let mut r = Reply::start(classify(com::QUERY)).unwrap();
        assert_eq!(
            r.on_packet(com::QUERY.into(), b"\xfb/tmp/x.csv", 11, CLASSIC),
            Step::InfileRequested
        );
        assert_eq!(r, Reply::Infile);
        assert_eq!(
            r.on_packet(com::QUERY.into(), &ok(2), 7, CLASSIC),
            Step::Done { ok: true }
        );
        ends_exactly_at_last(
            &drive(
                com::STATISTICS,
                CLASSIC,
                &[b"Uptime: 5  Threads: 1".to_vec()],
            ),
            true,
        );
        ends_exactly_at_last(&drive(com::SET_OPTION, DE, &[eof(2)]), true);
        ends_exactly_at_last(
            &drive(com::FIELD_LIST, CLASSIC, &[coldef(), coldef(), eof(2)]),
            true,
        );
        ends_exactly_at_last(&drive(com::FIELD_LIST, DE, &[coldef(), ok_fe(2)]), true);
        ends_exactly_at_last(
            &drive(
                com::CHANGE_USER,
                CLASSIC,
                &[b"\xfemysql_native_password\0abc".to_vec(), ok(2)],
            ),
            true,
        );
        ends_exactly_at_last(
            &drive(
                com::CHANGE_USER,
                CLASSIC,
                &[b"\x01\x03".to_vec(), b"\xff\x15\x04#28000no".to_vec()],
            ),
            false,
        );
        assert_eq!(Reply::start(classify(com::STMT_CLOSE)), None);
        assert_eq!(classify(com::BINLOG_DUMP), CommandClass::Unfollowable);
    }

    #[test]
    fn garbage_is_lost_not_panicked() {
        let mut r = Reply::First;
        assert!(matches!(
            r.on_packet(com::QUERY.into(), &[], 0, CLASSIC),
            Step::Lost(_)
        ));
        assert!(matches!(
            Reply::First.on_packet(com::QUERY.into(), &[0xFE], 1, CLASSIC),
            Step::Lost(_)
        ));
        assert!(matches!(
            Reply::First.on_packet(com::QUERY.into(), &[0x00, 0xFC], 2, CLASSIC),
            Step::Lost(_)
        ));
        assert!(matches!(
            Reply::First.on_packet(com::QUERY.into(), &[0xFC, 1], 2, CLASSIC),
            Step::Lost(_)
        ));
        assert!(matches!(
            Reply::First.on_packet(com::QUERY.into(), &[1, 7], 2, MARIA),
            Step::Lost(_)
        ));
        assert!(matches!(
            Reply::ColsEof.on_packet(com::QUERY.into(), &[1], 1, CLASSIC),
            Step::Lost(_)
        ));
        // Every prefix of every packet shape, in every state: no panic.
        let shapes = [
            ok(2),
            eof(2),
            coldef(),
            vec![0xFF, 1],
            b"\x00\x01\x00\x00\x00\x03\x00\x02\x00\x00\x00\x00".to_vec(),
        ];
        let states = [
            Reply::First,
            Reply::Rows,
            Reply::ColsEof,
            Reply::Cols(1),
            Reply::PrepareDefs(1),
            Reply::Auth,
            Reply::Single,
            Reply::Infile,
        ];
        for s in states {
            for p in &shapes {
                for cut in 0..=p.len() {
                    for neg in [CLASSIC, DE, MARIA] {
                        let mut r = s;
                        let _ = r.on_packet(com::STMT_PREPARE.into(), &p[..cut], cut, neg);
                        let mut r = s;
                        let _ = r.on_packet(com::QUERY.into(), &p[..cut], cut, neg);
                    }
                }
            }
        }
    }

    #[test]
    fn slots_and_names() {
        assert_eq!(command_name(com::QUERY), "query");
        assert_eq!(command_name(com::STMT_EXECUTE), "stmt_execute");
        assert_eq!(command_name(com::RESET_CONNECTION), "reset_connection");
        assert_eq!(command_name(0x99), "other");
        for c in 0..=255u8 {
            assert!(command_slot(c) < COMMAND_SLOTS);
        }
    }
}
