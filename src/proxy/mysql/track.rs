//! One connection's side of the digest statistics: it turns the observer's events into
//! finished statements for the shard's [`DigestShard`].
//!
//! - The text of each `COM_QUERY` and `COM_STMT_PREPARE` is normalised as it streams past
//!   ([`Normalizer`]: never buffered whole), and its digest is fixed when the command packet
//!   ends.
//! - Commands are answered in order, so the digests of the commands still open sit in a queue
//!   that mirrors the observer's: pushed at every `Command`, popped at every `Reply`, emptied
//!   when the observer gives up (it abandons exactly the open commands).
//! - A prepared statement's digest is its `PREPARE` text; each `COM_STMT_EXECUTE` counts under
//!   it (statement id from the `PREPARE_OK`, or MariaDB's `0xFFFFFFFF`, "the last prepared",
//!   which connectors pipeline before the `PREPARE_OK` arrives). `PREPARE` itself is not a
//!   statement run: it is counted per user (`stmt_prepare`), not per digest. `COM_STMT_FETCH`
//!   rows are not added to the digest (the `EXECUTE` that opened the cursor is counted).
//! - The schema is the handshake's, then the target of each successful `COM_INIT_DB` or
//!   `COM_CHANGE_USER`, or of a successful text `USE name`.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::proto::mysql::com;
use crate::proto::mysql::digest::{Digest, Normalizer};
use crate::proto::mysql::Event;

use super::digest::{DigestShard, Outcome};

/// Prepared statements remembered per connection; more are executed but not counted per
/// digest (a connector that never closes its statements must not grow the proxy).
pub const MAX_PREPARED: usize = 1024;
/// Longest schema name kept (MariaDB names are at most 64 characters, 256 bytes in UTF-8).
const MAX_SCHEMA: usize = 256;
/// MariaDB's statement id for "the statement prepared last".
const LAST_PREPARED: u32 = 0xFFFF_FFFF;

/// What an open command will count when its reply ends.
#[derive(Debug)]
enum Open {
    /// Nothing per digest.
    Nothing,
    /// A text query or an execution: counts under this digest.
    Run(Rc<Digest>),
    /// A PREPARE: its reply's statement id will map to this digest.
    Prepare(Rc<Digest>),
    /// A COM_INIT_DB: on success, the schema becomes this.
    InitDb(Box<[u8]>),
}

/// Per-connection digest state. Allocates nothing until the first statement.
#[derive(Debug, Default)]
pub struct DigestTrack {
    norm: Option<Box<Normalizer>>,
    /// Raw COM_INIT_DB argument being received.
    init_db: Vec<u8>,
    open: VecDeque<Open>,
    prepared: HashMap<u32, Rc<Digest>>,
    /// Digest of the last PREPARE sent (for statement id `0xFFFFFFFF`).
    last_prepared: Option<Rc<Digest>>,
    schema: Option<Box<[u8]>>,
    /// A statement changed the session so that cached results may not fit it
    /// ([`super::qcache::changes_session`]).
    session_changed: bool,
    /// The last successful `SET NAMES` / `SET CHARACTER SET` (normalised text).
    names: Option<Box<str>>,
}

impl DigestTrack {
    /// Follow one observer event; finished statements are counted in `table` if given.
    pub fn on_event(&mut self, e: &Event<'_>, user: &[u8], table: Option<&DigestShard>) {
        match *e {
            Event::Login { schema, .. } => self.schema = schema.map(bounded),
            Event::Statement { cmd, text } => {
                if cmd == com::INIT_DB {
                    let room = MAX_SCHEMA.saturating_sub(self.init_db.len());
                    self.init_db
                        .extend_from_slice(&text[..text.len().min(room)]);
                } else {
                    self.norm
                        .get_or_insert_with(|| Box::new(Normalizer::new()))
                        .feed(text);
                }
            }
            Event::Command { cmd, stmt } => {
                let open = match cmd {
                    com::QUERY => {
                        let d = self.finish();
                        if super::qcache::changes_session(&d.text) {
                            self.session_changed = true;
                        }
                        Open::Run(d)
                    }
                    com::STMT_PREPARE => {
                        let d = self.finish();
                        self.last_prepared = Some(d.clone());
                        Open::Prepare(d)
                    }
                    com::STMT_EXECUTE => match stmt.and_then(|id| self.statement(id)) {
                        Some(d) => Open::Run(d),
                        None => Open::Nothing,
                    },
                    com::STMT_CLOSE => {
                        if let Some(id) = stmt {
                            self.prepared.remove(&id);
                        }
                        Open::Nothing
                    }
                    com::INIT_DB => Open::InitDb(std::mem::take(&mut self.init_db).into()),
                    _ => Open::Nothing,
                };
                self.open.push_back(open);
            }
            Event::Reply {
                cmd,
                ok,
                elapsed,
                detail,
            } => match self.open.pop_front() {
                Some(Open::Run(d)) => {
                    if ok && cmd == com::QUERY {
                        if let Some(s) = use_target(&d.text) {
                            self.schema = Some(bounded(s.as_bytes()));
                        }
                        if super::qcache::sets_names(&d.text) {
                            self.names = Some(d.text.clone());
                        }
                    }
                    let o = Outcome {
                        ok,
                        rows: detail.rows,
                        bytes_in: detail.bytes_in,
                        bytes_out: detail.bytes_out,
                        elapsed_us: elapsed,
                    };
                    if let Some(t) = table {
                        t.record(user, self.schema.as_deref(), &d, &o);
                    }
                }
                Some(Open::Prepare(d)) => {
                    if let Some(id) = detail.prepared {
                        if self.prepared.len() < MAX_PREPARED || self.prepared.contains_key(&id) {
                            self.prepared.insert(id, d);
                        }
                    }
                }
                Some(Open::InitDb(name)) if ok => self.schema = Some(name),
                Some(_) | None => {}
            },
            Event::UserChanged { schema, .. } => {
                // A new session on the server: its prepared statements are gone.
                self.schema = schema.map(bounded);
                self.prepared.clear();
                self.last_prepared = None;
                self.session_changed = false;
                self.names = None;
            }
            Event::Unparsed { .. } => {
                self.open.clear();
                self.init_db.clear();
                if let Some(n) = self.norm.as_mut() {
                    n.finish();
                }
            }
            Event::Authenticated { .. } | Event::UnsolicitedError { .. } | Event::Ok { .. } => {}
        }
        if let Event::Reply {
            cmd: com::RESET_CONNECTION,
            ok: true,
            ..
        } = *e
        {
            self.prepared.clear();
            self.last_prepared = None;
            self.session_changed = false;
            self.names = None;
        }
    }

    /// Has a statement changed the session (variables, character sets, temporary tables,
    /// locks) since it started or was last reset?
    pub fn session_changed(&self) -> bool {
        self.session_changed
    }

    /// The last successful `SET NAMES` of the session, if any.
    pub fn names(&self) -> Option<&str> {
        self.names.as_deref()
    }

    /// The connection's default database as last seen.
    pub fn schema(&self) -> Option<&[u8]> {
        self.schema.as_deref()
    }

    fn finish(&mut self) -> Rc<Digest> {
        let d = match self.norm.as_mut() {
            Some(n) => n.finish(),
            None => Normalizer::digest(b""),
        };
        Rc::new(d)
    }

    fn statement(&self, id: u32) -> Option<Rc<Digest>> {
        if id == LAST_PREPARED {
            self.last_prepared.clone()
        } else {
            self.prepared.get(&id).cloned()
        }
    }

    /// Commands open (for tests: it mirrors the observer's count).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.len()
    }
}

fn bounded(s: &[u8]) -> Box<[u8]> {
    s[..s.len().min(MAX_SCHEMA)].into()
}

/// `USE name` (as normalised: one space, the name as written, maybe in backticks).
fn use_target(text: &str) -> Option<&str> {
    let rest = text
        .strip_prefix("USE ")
        .or_else(|| text.strip_prefix("use "))?;
    let name = rest.trim().trim_end_matches(';').trim();
    match name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
        Some(quoted) => (!quoted.is_empty()).then_some(quoted),
        None => (!name.is_empty() && !name.contains([' ', '`'])).then_some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mysql::ReplyDetail;

    fn reply(cmd: u8, ok: bool, rows: u64, prepared: Option<u32>) -> Event<'static> {
        Event::Reply {
            cmd,
            ok,
            elapsed: 10,
            detail: ReplyDetail {
                rows,
                bytes_in: 20,
                bytes_out: 30,
                prepared,
            },
        }
    }

    fn rows(t: &DigestShard) -> Vec<(String, String, String, u64, u64, u64)> {
        let r = super::super::digest::report(&[t]);
        let mut v: Vec<_> = r
            .rows
            .iter()
            .map(|r| {
                (
                    r.text.to_string(),
                    r.user.clone(),
                    r.schema.clone(),
                    r.count,
                    r.errors,
                    r.rows,
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn queries_prepared_statements_and_schema_changes() {
        let t = DigestShard::new();
        let mut d = DigestTrack::default();
        let mut run = |e: Event<'_>| d.on_event(&e, b"app", Some(&t));
        run(Event::Login {
            user: b"app",
            schema: Some(b"shop"),
        });
        // Text query in two pieces, answered with 2 rows.
        run(Event::Statement {
            cmd: com::QUERY,
            text: b"select * from t where id",
        });
        run(Event::Statement {
            cmd: com::QUERY,
            text: b" = 5",
        });
        run(Event::Command {
            cmd: com::QUERY,
            stmt: None,
        });
        run(reply(com::QUERY, true, 2, None));
        // Pipelined PREPARE + EXECUTE(-1), then EXECUTE by id, one failing.
        run(Event::Statement {
            cmd: com::STMT_PREPARE,
            text: b"select * from t where id = ?",
        });
        run(Event::Command {
            cmd: com::STMT_PREPARE,
            stmt: None,
        });
        run(Event::Command {
            cmd: com::STMT_EXECUTE,
            stmt: Some(LAST_PREPARED),
        });
        run(reply(com::STMT_PREPARE, true, 0, Some(7)));
        run(reply(com::STMT_EXECUTE, true, 1, None));
        run(Event::Command {
            cmd: com::STMT_EXECUTE,
            stmt: Some(7),
        });
        run(reply(com::STMT_EXECUTE, false, 0, None));
        // USE other (COM_INIT_DB), then the same query counts under the new schema.
        run(Event::Statement {
            cmd: com::INIT_DB,
            text: b"other",
        });
        run(Event::Command {
            cmd: com::INIT_DB,
            stmt: None,
        });
        run(reply(com::INIT_DB, true, 0, None));
        run(Event::Statement {
            cmd: com::QUERY,
            text: b"select * from t where id = 6",
        });
        run(Event::Command {
            cmd: com::QUERY,
            stmt: None,
        });
        run(reply(com::QUERY, true, 1, None));
        // Closed statement: executions are no longer counted per digest.
        run(Event::Command {
            cmd: com::STMT_CLOSE,
            stmt: Some(7),
        });
        run(reply(com::STMT_CLOSE, true, 0, None));
        run(Event::Command {
            cmd: com::STMT_EXECUTE,
            stmt: Some(7),
        });
        run(reply(com::STMT_EXECUTE, false, 0, None));
        assert_eq!(d.open(), 0);
        let text = Normalizer::digest(b"select * from t where id = 5").text;
        assert_eq!(
            Normalizer::digest(b"select * from t where id = ?").text,
            text,
            "a placeholder and a literal normalise alike"
        );
        let s = |x: &str| x.to_string();
        assert_eq!(
            rows(&t),
            vec![
                (text.to_string(), "app".into(), s("other"), 1, 0, 1),
                (text.to_string(), "app".into(), s("shop"), 3, 1, 3),
            ]
        );
    }

    #[test]
    fn unparsed_abandons_the_open_commands() {
        let t = DigestShard::new();
        let mut d = DigestTrack::default();
        d.on_event(
            &Event::Statement {
                cmd: com::QUERY,
                text: b"select 1",
            },
            b"u",
            Some(&t),
        );
        d.on_event(
            &Event::Command {
                cmd: com::QUERY,
                stmt: None,
            },
            b"u",
            Some(&t),
        );
        d.on_event(
            &Event::Unparsed {
                reason: "x",
                abandoned: 1,
            },
            b"u",
            Some(&t),
        );
        assert_eq!(d.open(), 0);
        assert!(rows(&t).is_empty());
    }

    #[test]
    fn use_statements() {
        assert_eq!(use_target("USE shop"), Some("shop"));
        assert_eq!(use_target("use `my db`"), Some("my db"));
        assert_eq!(use_target("USE a b"), None);
        assert_eq!(use_target("USE `shop`"), Some("shop"));
        assert_eq!(use_target("USER"), None);
        assert_eq!(use_target("SELECT 1"), None);
    }
}
