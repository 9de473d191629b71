//! The decisions of a terminating session, kept pure so they can be tested alone: does the
//! session keep its server connection after a reply (docs/mysql-pooling.md, "Which server
//! connection a command uses"), and may a statement go to a replica.

use crate::proto::mysql::session_track::OkInfo;
use crate::proto::mysql::{com, status};

/// How long a session keeps the server connection it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hold {
    /// Back to the pool now.
    Release,
    /// For the session's next command (LAST_INSERT_ID(), ROW_COUNT(), FOUND_ROWS(), SHOW
    /// WARNINGS read the connection the statement ran on).
    Next,
    /// Until a reply says the transaction ended.
    Transaction,
    /// Until COM_RESET_CONNECTION, COM_CHANGE_USER or the end of the session.
    Session,
}

/// What the statement's text shows where the server reports nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextFacts {
    /// GET_LOCK / RELEASE_LOCK / RELEASE_ALL_LOCKS / IS_USED_LOCK / IS_FREE_LOCK: named
    /// locks belong to a server connection.
    pub lock_function: bool,
    /// SQL_CALC_FOUND_ROWS: FOUND_ROWS() must follow on the same connection.
    pub calc_found_rows: bool,
    /// A user variable (`@name`, not `@@`): MariaDB reports the change of one only as a
    /// generic state change, which a GTID of the same statement also causes.
    pub user_variable: bool,
    /// `TEMPORARY` (a temporary table): in MIXED or STATEMENT binlog format its creation
    /// has a GTID too, which would explain the state change away.
    pub temporary: bool,
    /// `HANDLER ...`: an open handler belongs to its connection and MariaDB reports nothing.
    pub handler: bool,
    /// `CALL ...`: a procedure may leave anything behind.
    pub call: bool,
}

fn contains_ci(text: &[u8], word: &[u8]) -> bool {
    text.windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

impl TextFacts {
    pub fn of(text: &[u8]) -> TextFacts {
        let user_variable = text.iter().enumerate().any(|(i, &b)| {
            b == b'@' && text.get(i + 1) != Some(&b'@') && (i == 0 || text[i - 1] != b'@')
        });
        TextFacts {
            lock_function: [
                &b"GET_LOCK"[..],
                b"RELEASE_LOCK",
                b"RELEASE_ALL_LOCKS",
                b"IS_USED_LOCK",
                b"IS_FREE_LOCK",
            ]
            .iter()
            .any(|w| contains_ci(text, w)),
            calc_found_rows: contains_ci(text, b"SQL_CALC_FOUND_ROWS"),
            temporary: contains_ci(text, b"TEMPORARY"),
            handler: text
                .trim_ascii_start()
                .get(..8)
                .is_some_and(|h| h.eq_ignore_ascii_case(b"HANDLER ")),
            call: text
                .trim_ascii_start()
                .get(..5)
                .is_some_and(|h| h.eq_ignore_ascii_case(b"CALL ")),
            user_variable,
        }
    }
}

/// Everything about one reply that the decision reads.
#[derive(Debug, Clone, Default)]
pub struct ReplyFacts {
    pub cmd: u8,
    /// The reply ended with OK/EOF/rows, not ERR.
    pub ok: bool,
    /// Server status flags after the reply.
    pub status: u16,
    /// The connection negotiated CLIENT_SESSION_TRACK.
    pub tracked: bool,
    /// The OK packets of the reply, in order.
    pub oks: Vec<OkInfo>,
    pub text: TextFacts,
    /// LOCK TABLES is in effect on the connection (its last transaction-state report).
    pub locked: bool,
    /// The reply ended with a classic EOF announcing a state change it cannot describe.
    pub unreported_change: bool,
    /// Warnings of a classic EOF that ended the reply.
    pub eof_warnings: u16,
}

/// Does the session keep the connection, and for how long? `multiplex = false` keeps every
/// connection for the session; the caller applies that.
pub fn decide(f: &ReplyFacts) -> Hold {
    let in_trans = f.status & status::IN_TRANS != 0;
    let forever = !f.tracked
        || f.status & status::AUTOCOMMIT == 0
        || f.locked
        // A classic EOF cannot say what changed; inside a transaction it is the transaction
        // state (reported at the first read of every transaction), and the transaction keeps
        // the connection anyway.
        || (f.unreported_change && !in_trans)
        || f.text.lock_function
        || f.text.user_variable
        || f.text.temporary
        || f.text.handler
        || matches!(
            f.cmd,
            com::STMT_PREPARE | com::SET_OPTION | com::STMT_EXECUTE
        )
        || (!in_trans && f.oks.iter().any(|o| o.characteristics == Some(true)))
        || f.oks.iter().any(|o| {
            o.unreadable
                || o.vars_changed
                || (o.state_change && o.schema.is_none() && o.last_gtid.is_none())
        });
    if forever {
        return Hold::Session;
    }
    if in_trans {
        return Hold::Transaction;
    }
    let last = f.oks.last();
    if !f.ok
        || f.eof_warnings > 0
        || f.text.calc_found_rows
        || last.is_some_and(|o| o.affected_rows > 0 || o.insert_id > 0 || o.warnings > 0)
    {
        return Hold::Next;
    }
    Hold::Release
}

/// Does the statement change the server or the session, or depend on this connection
/// (COM_QUERY text)? Used to send only harmless reads to replicas.
pub fn session_free(text: &[u8]) -> bool {
    let t = text.trim_ascii_start();
    if t.contains(&b';') {
        return false;
    }
    let facts = TextFacts::of(t);
    let session_bound = facts.lock_function || facts.user_variable || facts.calc_found_rows;
    let locking_or_writing = [
        &b"FOR UPDATE"[..],
        b"LOCK IN SHARE MODE",
        b"FOR SHARE",
        b"NEXTVAL",
        b"NEXT VALUE FOR",
        b"PREVIOUS VALUE FOR",
        b"LASTVAL",
        b"SETVAL",
        b"LAST_INSERT_ID",
        b"ROW_COUNT",
        b"FOUND_ROWS",
        b"CONNECTION_ID",
    ]
    .iter()
    .any(|w| contains_ci(t, w));
    !session_bound && !locking_or_writing && !has_word(t, b"INTO")
}

/// May a COM_QUERY with this text run on a replica: a `SELECT` or `SHOW` that is
/// [`session_free`]. Stored functions called in it run there too (shardgate cannot see
/// inside them).
pub fn replica_safe(text: &[u8]) -> bool {
    let t = text.trim_ascii_start();
    let starts = |w: &[u8]| t.get(..w.len()).is_some_and(|h| h.eq_ignore_ascii_case(w));
    (starts(b"SELECT") || starts(b"SHOW") || starts(b"(SELECT")) && session_free(t)
}

/// `word` with whitespace (or the text's ends) on both sides, any case.
fn has_word(text: &[u8], word: &[u8]) -> bool {
    text.windows(word.len()).enumerate().any(|(i, w)| {
        w.eq_ignore_ascii_case(word)
            && (i == 0 || text[i - 1].is_ascii_whitespace())
            && text
                .get(i + word.len())
                .is_none_or(|c| c.is_ascii_whitespace())
    })
}

/// `KILL [CONNECTION | QUERY] ...`: the id a client knows is shardgate's, not a server's.
pub fn is_kill(text: &[u8]) -> bool {
    let t = text.trim_ascii_start();
    t.get(..5)
        .is_some_and(|h| h[..4].eq_ignore_ascii_case(b"KILL") && h[4].is_ascii_whitespace())
}

/// Does a reply that releases its connection leave state on it all the same, so that it
/// must be reset before another session uses it? A state change the statement's GTID
/// "explained" may come from a trigger or routine (`SET @v` in a trigger), and `CALL` runs
/// anything.
pub fn taints(f: &ReplyFacts) -> bool {
    f.text.call || f.oks.iter().any(|o| o.state_change && o.schema.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cmd: u8, status: u16, oks: Vec<OkInfo>) -> ReplyFacts {
        ReplyFacts {
            cmd,
            ok: true,
            status,
            tracked: true,
            oks,
            ..ReplyFacts::default()
        }
    }

    const AC: u16 = status::AUTOCOMMIT;

    #[test]
    fn plain_reads_release() {
        assert_eq!(decide(&facts(com::QUERY, AC, vec![])), Hold::Release);
        assert_eq!(
            decide(&facts(com::QUERY, AC, vec![OkInfo::default()])),
            Hold::Release
        );
    }

    #[test]
    fn what_the_server_reports_keeps_the_connection() {
        let st = |o: OkInfo| decide(&facts(com::QUERY, AC, vec![o]));
        let change = OkInfo {
            state_change: true,
            ..OkInfo::default()
        };
        assert_eq!(
            st(change.clone()),
            Hold::Session,
            "user var, temp table, PREPARE"
        );
        assert_eq!(
            st(OkInfo {
                vars_changed: true,
                ..change.clone()
            }),
            Hold::Session
        );
        assert_eq!(
            st(OkInfo {
                unreadable: true,
                ..OkInfo::default()
            }),
            Hold::Session
        );
        assert_eq!(
            st(OkInfo {
                schema: Some(b"app".to_vec()),
                ..change.clone()
            }),
            Hold::Release,
            "USE alone"
        );
        assert_eq!(
            st(OkInfo {
                last_gtid: Some(b"0-1-5".to_vec()),
                affected_rows: 1,
                ..change.clone()
            }),
            Hold::Next,
            "an autocommit write"
        );
        assert_eq!(
            decide(&facts(com::QUERY, AC | status::IN_TRANS, vec![])),
            Hold::Transaction
        );
        assert_eq!(decide(&facts(com::QUERY, 0, vec![])), Hold::Session);
        let mut f = facts(com::QUERY, AC, vec![]);
        f.locked = true;
        assert_eq!(decide(&f), Hold::Session);
        f.locked = false;
        f.tracked = false;
        assert_eq!(decide(&f), Hold::Session);
        // MariaDB 10.11: `4:'SET TRANSACTION READ ONLY;'` with no state-change item, and at
        // BEGIN `5:'T_______', 4:'START TRANSACTION;'`.
        let chars = OkInfo {
            characteristics: Some(true),
            ..OkInfo::default()
        };
        assert_eq!(
            decide(&facts(com::QUERY, AC, vec![chars.clone()])),
            Hold::Session
        );
        assert_eq!(
            decide(&facts(com::QUERY, AC | status::IN_TRANS, vec![chars])),
            Hold::Transaction,
            "START TRANSACTION READ ONLY"
        );
        // A classic EOF announcing a change it cannot describe.
        let mut f = facts(com::QUERY, AC, vec![]);
        f.unreported_change = true;
        assert_eq!(decide(&f), Hold::Session);
        f.status |= status::IN_TRANS;
        assert_eq!(decide(&f), Hold::Transaction);
        for cmd in [com::STMT_PREPARE, com::SET_OPTION] {
            assert_eq!(decide(&facts(cmd, AC, vec![])), Hold::Session);
        }
    }

    #[test]
    fn per_statement_state_holds_for_the_next_command() {
        for o in [
            OkInfo {
                insert_id: 7,
                ..OkInfo::default()
            },
            OkInfo {
                warnings: 1,
                ..OkInfo::default()
            },
        ] {
            assert_eq!(decide(&facts(com::QUERY, AC, vec![o])), Hold::Next);
        }
        let mut f = facts(com::QUERY, AC, vec![]);
        f.ok = false;
        assert_eq!(decide(&f), Hold::Next, "SHOW ERRORS after an error");
        let mut f = facts(com::QUERY, AC, vec![]);
        f.eof_warnings = 1;
        assert_eq!(
            decide(&f),
            Hold::Next,
            "SHOW WARNINGS after a classic-EOF result"
        );
        let mut f = facts(com::QUERY, AC, vec![]);
        f.text = TextFacts::of(b"SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1");
        assert_eq!(decide(&f), Hold::Next);
    }

    #[test]
    fn text_facts() {
        assert!(TextFacts::of(b"select get_lock('a', 1)").lock_function);
        assert!(TextFacts::of(b"SET @a = 1").user_variable);
        assert!(TextFacts::of(b"SELECT 1 INTO @x").user_variable);
        assert!(!TextFacts::of(b"SELECT @@time_zone").user_variable);
        assert!(!TextFacts::of(b"SELECT 'a'").user_variable);
        assert!(TextFacts::of(b" handler t open as h").handler);
        assert!(!TextFacts::of(b"SELECT handler FROM t").handler);
    }

    #[test]
    fn replica_safety() {
        for ok in [
            &b"SELECT * FROM t WHERE id = 1"[..],
            b"  select now()",
            b"SHOW TABLES",
            b"SELECT @@version",
        ] {
            assert!(replica_safe(ok), "{}", String::from_utf8_lossy(ok));
        }
        assert!(is_kill(b"KILL 5") && is_kill(b" kill\tquery 7") && !is_kill(b"KILLS"));
        assert!(!replica_safe(b"SELECT a\nINTO OUTFILE '/tmp/x' FROM t"));
        assert!(replica_safe(b"SELECT pointo FROM t"));
        assert!(session_free(b"WITH x AS (SELECT 1) SELECT * FROM x"));
        assert!(!session_free(b"SELECT 1; DELETE FROM t"));
        for no in [
            &b"SELECT NEXT VALUE FOR s"[..],
            b"SELECT PREVIOUS VALUE FOR s",
            &b"SELECT * FROM t FOR UPDATE"[..],
            b"SELECT a INTO @x FROM t",
            b"SELECT @a",
            b"SELECT GET_LOCK('x', 1)",
            b"SELECT 1; DELETE FROM t",
            b"INSERT INTO t VALUES (1)",
            b"SELECT LAST_INSERT_ID()",
            b"SELECT NEXTVAL(s)",
            b"UPDATE t SET a = 1",
            b"WITH x AS (SELECT 1) DELETE FROM t",
        ] {
            assert!(!replica_safe(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
