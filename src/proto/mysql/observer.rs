//! The observer: fed every byte the proxy relays, in each direction, as it is relayed, it
//! follows the connection phase and then a FIFO of outstanding commands, and reports
//! [`Event`]s (who logged in, which command started, how and when each reply ended). It keeps
//! one [`Framer`] per direction, i.e. a bounded prefix of the current packet, never a payload.
//!
//! When the stream stops making sense (TLS, compression, a binlog stream, a packet the reply
//! state machine does not expect) it emits [`Event::Unparsed`] once and ignores everything
//! after: the proxy keeps relaying, only accounting stops.

use std::collections::VecDeque;

use super::command::{
    classify, eof_status, is_progress, ok_status, Asked, CommandClass, Negotiated, Reply, Step,
    EOF, ERR, OK,
};
use super::handshake::{parse_change_user, parse_greeting, parse_response};
use super::packet::{Frame, Framer};
use super::{caps, com};

/// Payload bytes kept per client packet: enough for user and schema names in the handshake
/// response and COM_CHANGE_USER (MariaDB names are at most 128 + 64 characters).
pub const CLIENT_PREFIX: usize = 512;
/// Payload bytes kept per server packet: the greeting's capability fields and any OK/EOF
/// status; nothing else the observer reads is further in.
pub const SERVER_PREFIX: usize = 160;

/// What the observer saw. Byte slices borrow the observer's prefix buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The client's HandshakeResponse named this user (and maybe schema).
    Login {
        user: &'a [u8],
        schema: Option<&'a [u8]>,
    },
    /// The connection phase ended: authenticated (`ok`) or refused (ERR, connection closes).
    Authenticated { ok: bool },
    /// Statement text of a COM_QUERY or COM_STMT_PREPARE (or the schema name of a
    /// COM_INIT_DB), as it streams past: any number of pieces, the command byte excluded,
    /// before that command's [`Event::Command`].
    Statement { cmd: u8, text: &'a [u8] },
    /// A command was sent to the server (its packet is complete). `stmt` is the statement id
    /// of the prepared-statement commands that carry one (EXECUTE, FETCH, CLOSE, RESET,
    /// SEND_LONG_DATA, BULK_EXECUTE); `0xFFFF_FFFF` is MariaDB's "the last one prepared".
    Command { cmd: u8, stmt: Option<u32> },
    /// A command's reply ended (immediately for commands without a reply). `elapsed` is in the
    /// caller's clock units, from the command's first byte to its reply's last byte.
    Reply {
        cmd: u8,
        ok: bool,
        elapsed: u64,
        detail: ReplyDetail,
    },
    /// COM_CHANGE_USER succeeded: the connection now belongs to this user.
    UserChanged {
        user: &'a [u8],
        schema: Option<&'a [u8]>,
    },
    /// An OK packet inside or at the end of a reply (a result's end, a terminator with
    /// DEPRECATE_EOF), before the [`Event::Reply`] it ends: `packet` is its payload prefix,
    /// `whole` false when the packet is longer than the prefix kept.
    Ok { packet: &'a [u8], whole: bool },
    /// An ERR that answers no command (e.g. MySQL 8's 4031 before an idle disconnect).
    UnsolicitedError { code: u16 },
    /// The observer gave up; `abandoned` commands had started and will get no Reply event.
    Unparsed {
        reason: &'static str,
        abandoned: usize,
    },
}

/// What else a reply carried, for per-statement statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyDetail {
    /// Rows of the result sets (text or binary rows, FETCH rows).
    pub rows: u64,
    /// Client bytes of the command: its packet(s) with headers, LOCAL INFILE data and
    /// authentication answers sent while it was open.
    pub bytes_in: u64,
    /// Server bytes relayed while this command's reply was the one being read.
    pub bytes_out: u64,
    /// COM_STMT_PREPARE answered with PREPARE_OK: the new statement's id.
    pub prepared: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    Response,
    Auth,
    Command,
    /// After COM_QUIT or a refused login: nothing more is expected.
    Closing,
    Unparsed,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    asked: Asked,
    start: u64,
    detail: ReplyDetail,
}

/// Follows one client↔server connection.
#[derive(Debug)]
pub struct Observer {
    phase: Phase,
    client: Framer<CLIENT_PREFIX>,
    server: Framer<SERVER_PREFIX>,
    server_caps: u64,
    neg: Negotiated,
    client_caps: u64,
    /// Commands sent and not yet answered, oldest first.
    fifo: VecDeque<Pending>,
    /// Reply state of `fifo.front()`.
    reply: Reply,
    /// First byte time of the client packet being received.
    client_start: u64,
    /// Bytes (headers included) of the client packet being received.
    client_bytes: u64,
    /// The client is sending LOCAL INFILE data (ends with an empty packet).
    infile: bool,
    /// Server status flags of the last OK or EOF that ended a reply (or the login).
    status: u16,
    /// The character set (collation id) of the handshake response.
    charset: u8,
    /// The last reply ended with a classic EOF (no DEPRECATE_EOF), which has no room for the
    /// session-state items its status may announce.
    ended_with_eof: bool,
    /// The warning count of that classic EOF.
    eof_warnings: u16,
    /// COM_CHANGE_USER target, kept until its reply says whether it took effect.
    change_user: Vec<u8>,
    change_schema: Option<Vec<u8>>,
}

impl Default for Observer {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer {
    /// An observer for a connection shardgate logged in itself (a pooled server connection):
    /// already in the command phase, with the capabilities the server agreed to and the
    /// status of the last OK shardgate read on it (what a reply ending in ERR leaves).
    pub fn in_commands(caps_in_effect: u64, status: u16) -> Self {
        let mut o = Observer::new();
        o.phase = Phase::Command;
        o.status = status;
        o.server_caps = caps_in_effect;
        o.client_caps = caps_in_effect;
        o.neg = Negotiated {
            deprecate_eof: caps_in_effect & caps::DEPRECATE_EOF != 0,
            cache_metadata: caps_in_effect & caps::MARIADB_CACHE_METADATA != 0,
        };
        o
    }

    pub fn new() -> Self {
        Observer {
            phase: Phase::Greeting,
            client: Framer::new(),
            server: Framer::new(),
            server_caps: 0,
            neg: Negotiated::default(),
            client_caps: 0,
            fifo: VecDeque::new(),
            reply: Reply::First,
            client_start: 0,
            client_bytes: 0,
            status: 0,
            charset: 0,
            ended_with_eof: false,
            eof_warnings: 0,
            infile: false,
            change_user: Vec::new(),
            change_schema: None,
        }
    }

    /// False once the observer has given up on this connection.
    pub fn is_parsed(&self) -> bool {
        self.phase != Phase::Unparsed
    }

    /// Commands started and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.fifo.len()
    }

    /// Is the server waiting for the client before it can answer the oldest command (LOCAL
    /// INFILE data, COM_CHANGE_USER authentication)? A proxy that stops reading the client to
    /// bound the queue must keep reading then, or both sides would wait forever.
    pub fn awaiting_client(&self) -> bool {
        self.infile || self.fifo.front().map(|p| p.asked.cmd) == Some(com::CHANGE_USER)
    }

    /// Between commands, every byte so far understood: logged in, nothing outstanding, no
    /// packet half-way in either direction. Only then may a proxy answer a command itself.
    pub fn idle(&self) -> bool {
        self.phase == Phase::Command
            && self.fifo.is_empty()
            && !self.infile
            && self.client.at_boundary()
            && self.server.at_boundary()
    }

    /// Server status flags (`status::IN_TRANS`, `AUTOCOMMIT`, ...) of the last reply that
    /// ended with OK or EOF; 0 before the login's OK.
    pub fn server_status(&self) -> u16 {
        self.status
    }

    /// Did the last reply end with a classic EOF whose status says the session state changed?
    /// The items are not in it (an EOF has no room for them), so what changed is unknown.
    pub fn state_change_unreported(&self) -> bool {
        self.ended_with_eof && self.status & super::session_track::SESSION_STATE_CHANGED != 0
    }

    /// Warnings announced by the classic EOF that ended the last reply (an OK's are in the
    /// OK, see [`Event::Ok`]).
    pub fn eof_warnings(&self) -> u16 {
        self.eof_warnings
    }

    /// The character set (collation id) the client named in its handshake response.
    pub fn handshake_charset(&self) -> u8 {
        self.charset
    }

    /// Client capability flags of the handshake response.
    pub fn client_caps(&self) -> u64 {
        self.client_caps
    }

    /// Capabilities in effect (client ∧ server) once the handshake response was seen.
    pub fn negotiated(&self) -> Negotiated {
        self.neg
    }

    /// Bytes the client sent, as relayed.
    pub fn feed_client(&mut self, mut buf: &[u8], now: u64, sink: &mut impl FnMut(Event<'_>)) {
        while (!buf.is_empty() || self.client.empty_packet_pending())
            && self.phase != Phase::Unparsed
        {
            if self.client.at_boundary() {
                // This slice holds the first byte of the next packet.
                self.client_start = now;
                self.client_bytes = 0;
            }
            let (n, frame) = self.client.step(buf);
            self.client_bytes += n as u64;
            let payload = &buf[n - self.client.step_payload()..n];
            buf = &buf[n..];
            if !payload.is_empty() && self.phase == Phase::Command {
                self.statement_bytes(payload, sink);
            }
            if frame == Some(Frame::Done) {
                self.client_packet(now, sink);
            }
        }
    }

    /// Bytes the server sent, as relayed (the greeting before its capabilities are hidden).
    pub fn feed_server(&mut self, mut buf: &[u8], now: u64, sink: &mut impl FnMut(Event<'_>)) {
        while (!buf.is_empty() || self.server.empty_packet_pending())
            && self.phase != Phase::Unparsed
        {
            let (n, frame) = self.server.step(buf);
            buf = &buf[n..];
            if let Some(head) = self.fifo.front_mut() {
                head.detail.bytes_out += n as u64;
            }
            if frame == Some(Frame::Done) {
                self.server_packet(now, sink);
            }
        }
    }

    /// The connection closed (either side): every outstanding command failed.
    pub fn close(&mut self, now: u64, sink: &mut impl FnMut(Event<'_>)) {
        while let Some(p) = self.fifo.pop_front() {
            sink(Event::Reply {
                cmd: p.asked.cmd,
                ok: false,
                elapsed: now.saturating_sub(p.start),
                detail: p.detail,
            });
        }
        if self.phase != Phase::Unparsed {
            self.phase = Phase::Closing;
        }
    }

    fn lose(&mut self, reason: &'static str, sink: &mut impl FnMut(Event<'_>)) {
        let abandoned = self.fifo.len();
        self.fifo.clear();
        self.phase = Phase::Unparsed;
        sink(Event::Unparsed { reason, abandoned });
    }

    fn client_packet(&mut self, now: u64, sink: &mut impl FnMut(Event<'_>)) {
        match self.phase {
            Phase::Greeting => self.lose("client spoke before the greeting", sink),
            Phase::Response => {
                let total = self.client.total();
                let r = match parse_response(self.client.prefix(), total) {
                    Ok(r) => r,
                    Err(_) => return self.lose("unreadable handshake response", sink),
                };
                if r.ssl_request {
                    return self.lose("client started TLS", sink);
                }
                let both = r.caps & self.server_caps;
                if both & (caps::COMPRESS | caps::ZSTD_COMPRESSION) != 0 {
                    return self.lose("client negotiated compression", sink);
                }
                if both & (caps::QUERY_ATTRIBUTES | caps::OPTIONAL_RESULTSET_METADATA) != 0 {
                    return self.lose("client negotiated a hidden reply format", sink);
                }
                self.client_caps = r.caps;
                // HandshakeResponse41: caps(4) max_packet(4) charset(1) ...
                self.charset = self.client.prefix().get(8).copied().unwrap_or(0);
                self.neg = Negotiated {
                    deprecate_eof: both & caps::DEPRECATE_EOF != 0,
                    cache_metadata: both & caps::MARIADB_CACHE_METADATA != 0,
                };
                self.phase = Phase::Auth;
                sink(Event::Login {
                    user: r.user,
                    schema: r.schema,
                });
            }
            // Authentication data (AuthSwitch answers, RSA key requests...): not commands.
            Phase::Auth => {}
            Phase::Command => self.command_packet(now, sink),
            // After COM_QUIT (or a refused login) the server only closes: whatever else the
            // client sends is discarded unanswered (libmariadb can close a connection that
            // still has a query in flight this way), so it is neither counted nor a reason to
            // give up on the session.
            Phase::Closing => {}
            Phase::Unparsed => {}
        }
    }

    /// Payload bytes of a client packet in the command phase: the text of COM_QUERY,
    /// COM_STMT_PREPARE and COM_INIT_DB goes out as [`Event::Statement`].
    fn statement_bytes(&mut self, payload: &[u8], sink: &mut impl FnMut(Event<'_>)) {
        if self.infile || self.client.seq() != 0 {
            return;
        }
        let at = self.client.total() - payload.len() as u64;
        let text = if at == 0 { &payload[1..] } else { payload };
        match self.client.prefix().first() {
            Some(&cmd @ (com::QUERY | com::STMT_PREPARE | com::INIT_DB)) if !text.is_empty() => {
                sink(Event::Statement { cmd, text })
            }
            _ => {}
        }
    }

    fn command_packet(&mut self, now: u64, sink: &mut impl FnMut(Event<'_>)) {
        if self.infile {
            // LOCAL INFILE data continues the sequence; an empty packet ends the file.
            if let Some(head) = self.fifo.front_mut() {
                head.detail.bytes_in += self.client_bytes;
            }
            if self.client.total() == 0 {
                self.infile = false;
            }
            return;
        }
        let seq = self.client.seq();
        if seq != 0 {
            if let Some(head) = self.fifo.front_mut() {
                if head.asked.cmd == com::CHANGE_USER {
                    // authentication data inside COM_CHANGE_USER
                    head.detail.bytes_in += self.client_bytes;
                    return;
                }
            }
            return self.lose("client packet out of sequence", sink);
        }
        let Some(&cmd) = self.client.prefix().first() else {
            return self.lose("empty command packet", sink);
        };
        let class = classify(cmd);
        if class == CommandClass::Unfollowable {
            return self.lose("binlog or multi-command stream", sink);
        }
        if cmd == com::CHANGE_USER {
            let Some((user, schema)) =
                parse_change_user(&self.client.prefix()[1..], self.client_caps)
            else {
                return self.lose("unreadable COM_CHANGE_USER", sink);
            };
            self.change_user.clear();
            self.change_user.extend_from_slice(user);
            self.change_schema = schema.map(<[u8]>::to_vec);
        }
        let start = self.client_start;
        let stmt = match cmd {
            com::STMT_EXECUTE
            | com::STMT_FETCH
            | com::STMT_CLOSE
            | com::STMT_RESET
            | com::STMT_SEND_LONG_DATA
            | com::STMT_BULK_EXECUTE => self
                .client
                .prefix()
                .get(1..5)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            _ => None,
        };
        sink(Event::Command { cmd, stmt });
        let detail = ReplyDetail {
            bytes_in: self.client_bytes,
            ..ReplyDetail::default()
        };
        match Reply::start(class) {
            None => {
                sink(Event::Reply {
                    cmd,
                    ok: true,
                    elapsed: now.saturating_sub(start),
                    detail,
                });
                if cmd == com::QUIT {
                    self.phase = Phase::Closing;
                }
            }
            Some(initial) => {
                if self.fifo.is_empty() {
                    self.reply = initial;
                }
                let asked = Asked::of_packet(self.client.prefix()).unwrap_or(cmd.into());
                self.fifo.push_back(Pending {
                    asked,
                    start,
                    detail,
                });
            }
        }
    }

    fn server_packet(&mut self, now: u64, sink: &mut impl FnMut(Event<'_>)) {
        let p = self.server.prefix();
        match self.phase {
            Phase::Greeting => match p.first() {
                Some(&ERR) => {
                    self.phase = Phase::Closing;
                    sink(Event::Authenticated { ok: false });
                }
                _ => match parse_greeting(p) {
                    Ok(g) => {
                        self.server_caps = g.caps;
                        self.phase = Phase::Response;
                    }
                    Err(_) => self.lose("unreadable greeting", sink),
                },
            },
            Phase::Response => self.lose("server spoke before the handshake response", sink),
            Phase::Auth => match p.first() {
                Some(&OK) => {
                    self.status = ok_status(p).unwrap_or(0);
                    self.phase = Phase::Command;
                    sink(Event::Authenticated { ok: true });
                }
                Some(&ERR) => {
                    self.phase = Phase::Closing;
                    sink(Event::Authenticated { ok: false });
                }
                _ => {} // AuthSwitchRequest, AuthMoreData: the exchange goes on
            },
            Phase::Command | Phase::Closing => self.reply_packet(now, sink),
            Phase::Unparsed => {}
        }
    }

    fn reply_packet(&mut self, now: u64, sink: &mut impl FnMut(Event<'_>)) {
        let p = self.server.prefix();
        let Some(head) = self.fifo.front().copied() else {
            if p.first() == Some(&ERR) {
                let code = p
                    .get(1..3)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .unwrap_or(0);
                sink(Event::UnsolicitedError { code });
                return;
            }
            return self.lose("server packet with no command outstanding", sink);
        };
        let before = self.reply;
        if head.asked.cmd == com::STMT_PREPARE && before == Reply::First && p.first() == Some(&OK) {
            // PREPARE_OK: 00 stmt_id(4) ncols(2) nparams(2) ...
            if let Some(h) = self.fifo.front_mut() {
                h.detail.prepared = p
                    .get(1..5)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            }
        }
        let step = self
            .reply
            .on_packet(head.asked, p, self.server.first_len(), self.neg);
        let is_ok = match (before, p.first()) {
            // PREPARE_OK starts with 0x00 too but is not an OK.
            (Reply::First, Some(&OK)) => head.asked.cmd != com::STMT_PREPARE,
            (Reply::Single, Some(&OK)) => true,
            // A deprecate-EOF terminator, told from a huge row by the state it led to.
            (Reply::Rows, Some(&EOF)) => {
                self.neg.deprecate_eof
                    && (matches!(step, Step::Done { .. }) || self.reply == Reply::First)
            }
            _ => false,
        };
        if is_ok && matches!(step, Step::Continue | Step::Done { ok: true }) {
            sink(Event::Ok {
                packet: p,
                whole: self.server.total() <= SERVER_PREFIX as u64,
            });
        }
        match step {
            Step::Continue => {
                if before == Reply::Rows && !is_progress(p) {
                    if let Some(h) = self.fifo.front_mut() {
                        h.detail.rows += 1;
                    }
                }
            }
            Step::InfileRequested => self.infile = true,
            Step::Lost(reason) => self.lose(reason, sink),
            Step::Done { ok } => {
                self.ended_with_eof = p.first() == Some(&EOF) && !self.neg.deprecate_eof;
                self.eof_warnings = match self.ended_with_eof {
                    true => p.get(1..3).map_or(0, |w| u16::from_le_bytes([w[0], w[1]])),
                    false => 0,
                };
                match p.first() {
                    Some(&OK) => self.status = ok_status(p).unwrap_or(self.status),
                    Some(&EOF) if self.neg.deprecate_eof => {
                        self.status = ok_status(p).unwrap_or(self.status)
                    }
                    Some(&EOF) => self.status = eof_status(p),
                    _ => {}
                }
                let detail = self.fifo.pop_front().map(|h| h.detail).unwrap_or_default();
                let elapsed = now.saturating_sub(head.start);
                sink(Event::Reply {
                    cmd: head.asked.cmd,
                    ok,
                    elapsed,
                    detail,
                });
                if head.asked.cmd == com::CHANGE_USER && ok {
                    sink(Event::UserChanged {
                        user: &self.change_user,
                        schema: self.change_schema.as_deref(),
                    });
                }
                if let Some(next) = self.fifo.front() {
                    self.reply = Reply::start(classify(next.asked.cmd)).unwrap_or(Reply::First);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mysql::handshake::tests::{mariadb_greeting, response};
    use crate::proto::mysql::packet::{packet, MAX_CHUNK};
    use crate::proto::mysql::status;

    /// Owned copy of an event, for assertions.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Login(String, Option<String>),
        Auth(bool),
        Cmd(u8),
        Reply(u8, bool),
        User(String),
        Unsolicited(u16),
        Unparsed(usize),
    }

    /// The event, owned; statement pieces (which depend on how the bytes were split) are
    /// checked by their own test.
    fn own(e: Event<'_>) -> Option<Ev> {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Some(match e {
            Event::Login { user, schema } => Ev::Login(s(user), schema.map(s)),
            Event::Authenticated { ok } => Ev::Auth(ok),
            Event::Statement { .. } | Event::Ok { .. } => return None,
            Event::Command { cmd, .. } => Ev::Cmd(cmd),
            Event::Reply { cmd, ok, .. } => Ev::Reply(cmd, ok),
            Event::UserChanged { user, .. } => Ev::User(s(user)),
            Event::UnsolicitedError { code } => Ev::Unsolicited(code),
            Event::Unparsed { abandoned, .. } => Ev::Unparsed(abandoned),
        })
    }

    /// A conversation: (from client?, bytes).
    type Script = Vec<(bool, Vec<u8>)>;

    /// Feed a script with pieces of at most `piece` bytes; time advances by 1 per feed call.
    fn play(script: &Script, piece: usize) -> (Vec<Ev>, Vec<u64>) {
        let mut o = Observer::new();
        let mut evs = Vec::new();
        let mut times = Vec::new();
        let mut now = 0;
        for (from_client, bytes) in script {
            for chunk in bytes.chunks(piece) {
                now += 1;
                let mut sink = |e: Event<'_>| {
                    if let Event::Reply { elapsed, .. } = e {
                        times.push(elapsed);
                    }
                    evs.extend(own(e));
                };
                if *from_client {
                    o.feed_client(chunk, now, &mut sink);
                } else {
                    o.feed_server(chunk, now, &mut sink);
                }
            }
        }
        (evs, times)
    }

    const SERVER_CAPS: u64 = caps::PROTOCOL_41
        | caps::SECURE_CONNECTION
        | caps::CONNECT_WITH_DB
        | caps::PLUGIN_AUTH
        | caps::MULTI_RESULTS
        | caps::LOCAL_FILES
        | caps::DEPRECATE_EOF
        | caps::MARIADB_CACHE_METADATA
        | caps::SSL;

    fn ok(seq: u8, st: u16) -> Vec<u8> {
        let mut p = vec![0, 0, 0];
        p.extend_from_slice(&st.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        packet(seq, &p)
    }
    fn eof(seq: u8, st: u16) -> Vec<u8> {
        let mut p = vec![0xFE, 0, 0];
        p.extend_from_slice(&st.to_le_bytes());
        packet(seq, &p)
    }
    fn ok_fe(seq: u8, st: u16) -> Vec<u8> {
        let mut p = ok(seq, st);
        p[4] = 0xFE;
        p
    }
    fn coldef(seq: u8) -> Vec<u8> {
        packet(
            seq,
            b"\x03def\x00\x00\x00\x011\x00\x0c?\x00\x01\x00\x00\x00\x08\x81\x00\x00\x00\x00",
        )
    }
    fn query(sql: &str) -> Vec<u8> {
        let mut p = vec![com::QUERY];
        p.extend_from_slice(sql.as_bytes());
        packet(0, &p)
    }

    /// Greeting, response (client caps given), OK.
    fn login(client_caps: u64, user: &str) -> Script {
        vec![
            (false, packet(0, &mariadb_greeting(SERVER_CAPS))),
            (true, packet(1, &response(client_caps, user, Some("app")))),
            (
                false,
                packet(2, b"\xfemysql_native_password\0scramblescramble1234\0"),
            ),
            (true, packet(3, &[0x11; 20])),
            (false, ok(4, 2)),
        ]
    }

    const CLIENT_CLASSIC: u64 = caps::PROTOCOL_41
        | caps::SECURE_CONNECTION
        | caps::CONNECT_WITH_DB
        | caps::PLUGIN_AUTH
        | caps::MULTI_RESULTS
        | caps::LOCAL_FILES
        | caps::MARIADB_CACHE_METADATA;
    const CLIENT_DE: u64 = CLIENT_CLASSIC | caps::DEPRECATE_EOF;

    fn check_all_splits(script: &Script, want: &[Ev]) {
        let total: usize = script.iter().map(|(_, b)| b.len()).sum();
        for piece in [1, 2, 3, 7, 64, total.max(1)] {
            let (evs, _) = play(script, piece);
            assert_eq!(evs, want, "piece size {piece}");
        }
    }

    #[test]
    fn login_query_and_quit_any_split() {
        let mut s = login(CLIENT_CLASSIC, "sg_a");
        s.push((true, query("select 1")));
        s.push((
            false,
            [
                packet(1, &[1, 1]),
                coldef(2),
                eof(3, 2),
                packet(4, b"\x011"),
                eof(5, 2),
            ]
            .concat(),
        ));
        s.push((true, query("select nope")));
        s.push((false, packet(1, b"\xff\x7a\x04#42S22Unknown column")));
        s.push((true, packet(0, &[com::QUIT])));
        let want = vec![
            Ev::Login("sg_a".into(), Some("app".into())),
            Ev::Auth(true),
            Ev::Cmd(com::QUERY),
            Ev::Reply(com::QUERY, true),
            Ev::Cmd(com::QUERY),
            Ev::Reply(com::QUERY, false),
            Ev::Cmd(com::QUIT),
            Ev::Reply(com::QUIT, true),
        ];
        check_all_splits(&s, &want);
    }

    /// OK packets of a reply come out as `Event::Ok`, in order, before its Reply: an OK
    /// answer, a MORE_RESULTS OK, a deprecate-EOF terminator; never PREPARE_OK, a classic
    /// EOF, a row starting with 0x00/0xFE, or an ERR. The same for every split.
    #[test]
    fn ok_packets_are_reported_before_their_reply() {
        let run = |caps: u64, exchange: Vec<(bool, Vec<u8>)>| -> Vec<(u8, u16)> {
            let mut s = login(caps, "u");
            s.extend(exchange);
            let total: usize = s.iter().map(|(_, b)| b.len()).sum();
            let mut first: Option<Vec<(u8, u16)>> = None;
            for piece in [1, 3, 64, total] {
                let mut o = Observer::new();
                let mut seen = Vec::new();
                for (client, bytes) in &s {
                    for chunk in bytes.chunks(piece) {
                        let mut sink = |e: Event<'_>| match e {
                            Event::Ok { packet, whole } => {
                                assert!(whole);
                                seen.push((packet[0], ok_status(packet).unwrap_or(0)))
                            }
                            Event::Reply { cmd, .. } => seen.push((cmd, 0xEEEE)),
                            _ => {}
                        };
                        if *client {
                            o.feed_client(chunk, 0, &mut sink);
                        } else {
                            o.feed_server(chunk, 0, &mut sink);
                        }
                    }
                }
                assert!(o.is_parsed());
                match &first {
                    None => first = Some(seen),
                    Some(f) => assert_eq!(f, &seen, "piece {piece}"),
                }
            }
            first.unwrap_or_default()
        };
        const REPLY: u16 = 0xEEEE;
        // An OK answer, then a multi-result: OK with MORE_RESULTS, a result set ended by a
        // deprecate-EOF terminator whose first row starts with 0x00 (an empty string).
        let got = run(
            CLIENT_DE,
            vec![
                (true, query("insert")),
                (false, ok(1, 0x4002)),
                (true, query("call p()")),
                (
                    false,
                    [
                        ok(1, 0x000A),
                        packet(2, &[1, 1]),
                        coldef(3),
                        packet(4, b"\x00"),
                        ok_fe(5, 0x0002),
                    ]
                    .concat(),
                ),
            ],
        );
        assert_eq!(
            got,
            vec![
                (0x00, 0x4002),
                (com::QUERY, REPLY),
                (0x00, 0x000A),
                (0xFE, 0x0002),
                (com::QUERY, REPLY)
            ]
        );
        // Classic EOFs, PREPARE_OK and ERR are not OKs.
        let mut prep = vec![com::STMT_PREPARE];
        prep.extend_from_slice(b"select 1");
        let got = run(
            CLIENT_CLASSIC,
            vec![
                (true, query("select 1")),
                (
                    false,
                    [
                        packet(1, &[1, 1]),
                        coldef(2),
                        eof(3, 2),
                        packet(4, b"\x011"),
                        eof(5, 2),
                    ]
                    .concat(),
                ),
                (true, packet(0, &prep)),
                (
                    false,
                    [
                        packet(1, &[0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
                        coldef(2),
                        eof(3, 2),
                    ]
                    .concat(),
                ),
                (true, query("nope")),
                (false, packet(1, b"\xff\x7a\x04#42S22Unknown column")),
            ],
        );
        assert_eq!(
            got,
            vec![
                (com::QUERY, REPLY),
                (com::STMT_PREPARE, REPLY),
                (com::QUERY, REPLY)
            ]
        );
    }

    #[test]
    fn elapsed_runs_from_first_command_byte_to_last_reply_byte() {
        let mut s = login(CLIENT_DE, "u");
        s.push((true, query("select 1")));
        s.push((
            false,
            [
                packet(1, &[1, 1]),
                coldef(2),
                packet(3, b"\x011"),
                ok_fe(4, 2),
            ]
            .concat(),
        ));
        // Whole-packet feeding: the query is fed at t=6, the reply at t=7.
        let (evs, times) = play(&s, 1 << 20);
        assert_eq!(evs.last(), Some(&Ev::Reply(com::QUERY, true)));
        assert_eq!(times, vec![1]);
        // Byte at a time: query bytes t=..., reply ends at the very last feed.
        let (_, times) = play(&s, 1);
        let query_len = query("select 1").len() as u64;
        let reply_len = s.last().unwrap().1.len() as u64;
        assert_eq!(times, vec![query_len + reply_len - 1]);
    }

    #[test]
    fn pipelined_prepare_execute_fifo() {
        // MariaDB connectors send PREPARE and EXECUTE(stmt -1) back to back.
        let mut s = login(CLIENT_DE, "u");
        let mut exec = vec![com::STMT_EXECUTE, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1, 0, 0, 0];
        exec.extend_from_slice(&[0, 1, 8, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        s.push((
            true,
            [
                packet(0, b"\x16select ?"),
                packet(0, &exec),
                packet(0, b"\x19\x01\x00\x00\x00"),
            ]
            .concat(),
        ));
        let prep_ok = packet(1, b"\x00\x01\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00");
        s.push((false, [prep_ok, coldef(2), coldef(3)].concat()));
        s.push((
            false,
            [
                packet(1, &[1, 1]),
                coldef(2),
                packet(3, b"\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00"),
                ok_fe(4, 2),
            ]
            .concat(),
        ));
        let want = vec![
            Ev::Login("u".into(), Some("app".into())),
            Ev::Auth(true),
            Ev::Cmd(com::STMT_PREPARE),
            Ev::Cmd(com::STMT_EXECUTE),
            Ev::Cmd(com::STMT_CLOSE),
            Ev::Reply(com::STMT_CLOSE, true),
            Ev::Reply(com::STMT_PREPARE, true),
            Ev::Reply(com::STMT_EXECUTE, true),
        ];
        check_all_splits(&s, &want);
    }

    #[test]
    fn local_infile_data_is_not_commands() {
        let mut s = login(CLIENT_CLASSIC, "u");
        s.push((true, query("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t")));
        s.push((false, packet(1, b"\xfb/tmp/x")));
        // File data continues the sequence; one packet even looks like a COM_QUERY.
        s.push((
            true,
            [packet(2, b"\x03a,b\n"), packet(3, b"c,d\n"), packet(4, b"")].concat(),
        ));
        s.push((false, ok(5, 2)));
        s.push((true, query("select 1")));
        s.push((
            false,
            [packet(1, &[1, 1]), coldef(2), eof(3, 2), eof(4, 2)].concat(),
        ));
        let want = vec![
            Ev::Login("u".into(), Some("app".into())),
            Ev::Auth(true),
            Ev::Cmd(com::QUERY),
            Ev::Reply(com::QUERY, true),
            Ev::Cmd(com::QUERY),
            Ev::Reply(com::QUERY, true),
        ];
        check_all_splits(&s, &want);
    }

    #[test]
    fn multi_statement_and_call() {
        let more = status::MORE_RESULTS_EXISTS | 2;
        let mut s = login(CLIENT_CLASSIC, "u");
        s.push((true, query("call p()")));
        s.push((
            false,
            [
                packet(1, &[1, 1]),
                coldef(2),
                eof(3, 2),
                packet(4, b"\x011"),
                eof(5, more),
                packet(6, &[1, 1]),
                coldef(7),
                eof(8, 2),
                eof(9, more),
                ok(10, 2),
            ]
            .concat(),
        ));
        s.push((true, query("select 1; select 2")));
        s.push((
            false,
            [
                packet(1, &[1, 1]),
                coldef(2),
                eof(3, 2),
                eof(4, more),
                packet(5, b"\xff\x7a\x04#42S02no"),
            ]
            .concat(),
        ));
        let want = vec![
            Ev::Login("u".into(), Some("app".into())),
            Ev::Auth(true),
            Ev::Cmd(com::QUERY),
            Ev::Reply(com::QUERY, true),
            Ev::Cmd(com::QUERY),
            Ev::Reply(com::QUERY, false),
        ];
        check_all_splits(&s, &want);
    }

    #[test]
    fn big_packets_both_ways() {
        let mut s = login(CLIENT_DE, "u");
        // A 17 MiB INSERT and a 17 MiB row whose first byte is 0xFE (length prefix of a
        // >= 16 MiB field) under DEPRECATE_EOF: a row, not a terminator.
        let mut insert = vec![com::QUERY];
        insert.resize(17 << 20, b'x');
        s.push((true, packet(0, &insert)));
        s.push((false, ok(2, 2)));
        s.push((true, query("select blob")));
        let mut row = vec![0xFE];
        row.extend_from_slice(&((17u64 << 20) - 9).to_le_bytes());
        row.resize(17 << 20, b'y');
        s.push((
            false,
            [packet(1, &[1, 1]), coldef(2), packet(3, &row), ok_fe(5, 2)].concat(),
        ));
        // Exact multiple from the client: full chunk + empty chunk.
        let mut exact = vec![com::QUERY];
        exact.resize(MAX_CHUNK, b'z');
        s.push((true, packet(0, &exact)));
        s.push((false, ok(2, 2)));
        let (evs, _) = play(&s, 65536);
        let replies: Vec<&Ev> = evs.iter().filter(|e| matches!(e, Ev::Reply(..))).collect();
        assert_eq!(replies, vec![&Ev::Reply(com::QUERY, true); 3]);
        assert!(!evs.iter().any(|e| matches!(e, Ev::Unparsed(_))));
    }

    #[test]
    fn change_user_switches_user_only_on_ok() {
        let mut s = login(CLIENT_CLASSIC, "sg_a");
        let mut cu = vec![com::CHANGE_USER];
        cu.extend_from_slice(b"sg_b\0\x14");
        cu.extend_from_slice(&[7; 20]);
        cu.extend_from_slice(b"sbtest\0\x2d\x00mysql_native_password\0");
        s.push((true, packet(0, &cu)));
        s.push((
            false,
            packet(1, b"\xfemysql_native_password\0abcdefghijabcdefghij\0"),
        ));
        s.push((true, packet(2, &[9; 20])));
        s.push((false, ok(3, 2)));
        s.push((true, packet(0, &cu)));
        s.push((false, packet(1, b"\xff\x15\x04#28000Access denied")));
        let want = vec![
            Ev::Login("sg_a".into(), Some("app".into())),
            Ev::Auth(true),
            Ev::Cmd(com::CHANGE_USER),
            Ev::Reply(com::CHANGE_USER, true),
            Ev::User("sg_b".into()),
            Ev::Cmd(com::CHANGE_USER),
            Ev::Reply(com::CHANGE_USER, false),
        ];
        check_all_splits(&s, &want);
    }

    #[test]
    fn failures_go_passive_or_count() {
        // TLS: SSLRequest.
        let mut s: Script = vec![(false, packet(0, &mariadb_greeting(SERVER_CAPS)))];
        let ssl = &response(CLIENT_CLASSIC | caps::SSL, "x", None)[..32];
        s.push((true, packet(1, ssl)));
        s.push((true, vec![0x16, 0x03, 0x01, 0x02, 0x00, 1, 2, 3]));
        assert_eq!(play(&s, 3).0, vec![Ev::Unparsed(0)]);
        // Login refused.
        let mut s = login(CLIENT_CLASSIC, "u");
        s[4] = (false, packet(4, b"\xff\x15\x04#28000Access denied"));
        assert_eq!(
            play(&s, 5).0,
            vec![Ev::Login("u".into(), Some("app".into())), Ev::Auth(false)]
        );
        // Greeting replaced by ERR (too many connections).
        let s: Script = vec![(false, packet(0, b"\xff\x10\x04Too many connections"))];
        assert_eq!(play(&s, 5).0, vec![Ev::Auth(false)]);
        // Unsolicited ERR while idle is counted, not fatal; garbage after it is.
        let mut s = login(CLIENT_CLASSIC, "u");
        s.push((false, packet(0, b"\xff\xbf\x0f#HY000idle timeout")));
        s.push((true, query("select 1")));
        s.push((false, packet(1, b"\xfe")));
        let (evs, _) = play(&s, 4);
        assert_eq!(
            &evs[2..],
            &[Ev::Unsolicited(4031), Ev::Cmd(com::QUERY), Ev::Unparsed(1)]
        );
        // Binlog dump: passive from there.
        let mut s = login(CLIENT_CLASSIC, "u");
        s.push((true, packet(0, &[com::BINLOG_DUMP, 4, 0, 0, 0])));
        s.push((false, packet(1, b"\x00binlog event")));
        assert_eq!(play(&s, 4).0[2..], [Ev::Unparsed(0)]);
    }

    /// Statement text (joined), command stmt ids and reply details, for any split.
    fn details(script: &Script, piece: usize) -> Vec<(u8, Option<u32>, String, ReplyDetail)> {
        let mut o = Observer::new();
        let mut text = Vec::new();
        let mut cmds = VecDeque::new();
        let mut out = Vec::new();
        for (from_client, bytes) in script {
            for chunk in bytes.chunks(piece) {
                let mut sink = |e: Event<'_>| match e {
                    Event::Statement { text: t, .. } => text.extend_from_slice(t),
                    Event::Command { cmd, stmt } => {
                        let t = String::from_utf8_lossy(&std::mem::take(&mut text)).into_owned();
                        cmds.push_back((cmd, stmt, t));
                    }
                    Event::Reply { detail, .. } => {
                        let (cmd, stmt, t) = cmds.pop_front().expect("reply to a command");
                        out.push((cmd, stmt, t, detail));
                    }
                    _ => {}
                };
                if *from_client {
                    o.feed_client(chunk, 0, &mut sink);
                } else {
                    o.feed_server(chunk, 0, &mut sink);
                }
            }
        }
        out
    }

    #[test]
    fn statements_rows_bytes_and_prepared_ids_any_split() {
        let mut s = login(CLIENT_CLASSIC, "u");
        let long = format!("select '{}'", "x".repeat(1000));
        s.push((true, query(&long)));
        let rows = [
            packet(1, &[1, 1]),
            coldef(2),
            eof(3, 2),
            packet(4, b"\x011"),
            packet(5, b"\x012"),
            eof(6, 2),
        ]
        .concat();
        s.push((false, rows.clone()));
        let mut prep = vec![com::STMT_PREPARE];
        prep.extend_from_slice(b"select ?");
        s.push((true, packet(0, &prep)));
        // PREPARE_OK id 7, 1 column, 1 param: param def + EOF + column def + EOF.
        let pok = packet(1, b"\x00\x07\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00");
        let defs = [coldef(2), eof(3, 2), coldef(4), eof(5, 2)].concat();
        s.push((false, [pok.clone(), defs.clone()].concat()));
        let exec = packet(0, b"\x17\x07\x00\x00\x00\x00\x01\x00\x00\x00");
        s.push((true, exec.clone()));
        s.push((false, ok(1, 2)));
        s.push((true, packet(0, b"\x19\x07\x00\x00\x00")));
        let whole = details(&s, usize::MAX);
        for piece in [1, 2, 5, 64] {
            assert_eq!(details(&s, piece), whole, "piece {piece}");
        }
        let d = |bytes_in: usize, bytes_out: usize, rows: u64, prepared: Option<u32>| ReplyDetail {
            rows,
            bytes_in: bytes_in as u64,
            bytes_out: bytes_out as u64,
            prepared,
        };
        assert_eq!(
            whole,
            [
                (
                    com::QUERY,
                    None,
                    long.clone(),
                    d(long.len() + 5, rows.len(), 2, None)
                ),
                (
                    com::STMT_PREPARE,
                    None,
                    "select ?".to_string(),
                    d(prep.len() + 4, pok.len() + defs.len(), 0, Some(7))
                ),
                (
                    com::STMT_EXECUTE,
                    Some(7),
                    String::new(),
                    d(exec.len(), 11, 0, None)
                ),
                (com::STMT_CLOSE, Some(7), String::new(), d(9, 0, 0, None)),
            ]
        );
    }

    #[test]
    fn statement_text_of_a_multi_chunk_query_is_whole() {
        let mut s = login(CLIENT_DE, "u");
        let big = format!("select '{}'", "y".repeat(MAX_CHUNK + 10));
        s.push((true, query(&big)));
        s.push((false, ok(1, 2)));
        for piece in [7, 70_000] {
            let d = details(&s, piece);
            assert_eq!(d.len(), 1);
            assert!(d[0].2 == big, "piece {piece}: text differs");
            assert_eq!(
                d[0].3.bytes_in,
                big.len() as u64 + 1 + 8,
                "two chunk headers"
            );
        }
    }

    #[test]
    fn client_bytes_after_quit_are_ignored() {
        let mut s = login(CLIENT_CLASSIC, "u");
        s.push((true, packet(0, &[com::QUIT])));
        s.push((true, query("select 1")));
        let (evs, _) = play(&s, 3);
        assert_eq!(
            &evs[2..],
            &[Ev::Cmd(com::QUIT), Ev::Reply(com::QUIT, true)],
            "{evs:?}"
        );
    }

    #[test]
    fn close_fails_outstanding_commands() {
        let mut o = Observer::new();
        let mut evs = Vec::new();
        let s = login(CLIENT_CLASSIC, "u");
        for (c, b) in &s {
            if *c {
                o.feed_client(b, 1, &mut |e| evs.extend(own(e)));
            } else {
                o.feed_server(b, 1, &mut |e| evs.extend(own(e)));
            }
        }
        o.feed_client(&query("select sleep(10)"), 2, &mut |e| evs.extend(own(e)));
        o.feed_server(&packet(1, &[1, 1])[..3], 3, &mut |e| evs.extend(own(e)));
        assert_eq!(o.outstanding(), 1);
        o.close(9, &mut |e| evs.extend(own(e)));
        assert_eq!(
            &evs[2..],
            &[Ev::Cmd(com::QUERY), Ev::Reply(com::QUERY, false)]
        );
        assert_eq!(o.outstanding(), 0);
    }

    #[test]
    fn awaiting_client_during_infile_and_change_user_only() {
        let mut o = Observer::new();
        let mut sink = |_e: Event<'_>| {};
        for (c, b) in login(CLIENT_CLASSIC, "u") {
            if c {
                o.feed_client(&b, 0, &mut sink);
            } else {
                o.feed_server(&b, 0, &mut sink);
            }
        }
        o.feed_client(
            &query("LOAD DATA LOCAL INFILE 'x' INTO TABLE t"),
            1,
            &mut sink,
        );
        o.feed_client(&query("select 1"), 1, &mut sink);
        assert!(
            !o.awaiting_client(),
            "the server has not asked for the file yet"
        );
        o.feed_server(&packet(1, b"\xfbx"), 2, &mut sink);
        assert!(o.awaiting_client());
        o.feed_client(&[packet(2, b"a\n"), packet(3, b"")].concat(), 3, &mut sink);
        assert!(!o.awaiting_client());
        o.feed_server(&ok(4, 2), 4, &mut sink);
        assert_eq!(o.outstanding(), 1);
        assert!(!o.awaiting_client());
        let mut cu = vec![com::CHANGE_USER];
        cu.extend_from_slice(b"v\0\0app\0");
        o.feed_server(
            &[packet(1, &[1, 1]), coldef(2), eof(3, 2), eof(4, 2)].concat(),
            5,
            &mut sink,
        );
        o.feed_client(&packet(0, &cu), 6, &mut sink);
        assert!(
            o.awaiting_client(),
            "COM_CHANGE_USER may need authentication rounds"
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic generator: arbitrary bytes after a valid login.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..200 {
            let mut o = Observer::new();
            let mut sink = |_e: Event<'_>| {};
            for (c, b) in login(CLIENT_DE, "u") {
                if c {
                    o.feed_client(&b, 0, &mut sink);
                } else {
                    o.feed_server(&b, 0, &mut sink);
                }
            }
            for _ in 0..64 {
                let mut buf = [0u8; 16];
                for b in &mut buf {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                // Keep lengths small so packets complete.
                buf[1] = 0;
                buf[2] = 0;
                buf[0] &= 0x0F;
                if (x >> 3) & 1 == 0 || round % 2 == 0 {
                    o.feed_client(&buf, 1, &mut sink);
                } else {
                    o.feed_server(&buf, 1, &mut sink);
                }
            }
        }
    }
}

/// Conversations recorded between real clients and MariaDB 10.11 (one connection each, as
/// `C <hex>` / `S <hex>` lines per read), replayed whole and byte by byte.
#[cfg(test)]
mod recorded {
    use super::*;
    use crate::proto::mysql::command::command_name;

    fn parse(text: &str) -> Vec<(bool, Vec<u8>)> {
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (dir, hex) = l.split_once(' ').expect("direction and hex");
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect();
                (dir == "C", bytes)
            })
            .collect()
    }

    /// Replay; returns a summary line per event ("login sg_a", "query ok", ...).
    fn replay(text: &str, piece: usize) -> Vec<String> {
        let mut o = Observer::new();
        let mut out = Vec::new();
        let mut sink = |e: Event<'_>| {
            out.push(match e {
                Event::Login { user, .. } => format!("login {}", String::from_utf8_lossy(user)),
                Event::Authenticated { ok } => format!("auth {ok}"),
                Event::Statement { .. } | Event::Ok { .. } => return,
                Event::Command { cmd, .. } => format!("> {}", command_name(cmd)),
                Event::Reply { cmd, ok, .. } => {
                    format!("< {} {}", command_name(cmd), if ok { "ok" } else { "err" })
                }
                Event::UserChanged { user, .. } => {
                    format!("user {}", String::from_utf8_lossy(user))
                }
                Event::UnsolicitedError { code } => format!("unsolicited {code}"),
                Event::Unparsed { reason, .. } => format!("UNPARSED {reason}"),
            })
        };
        for (client, bytes) in parse(text) {
            for chunk in bytes.chunks(piece) {
                if client {
                    o.feed_client(chunk, 0, &mut sink);
                } else {
                    o.feed_server(chunk, 0, &mut sink);
                }
            }
        }
        out
    }

    fn summary(text: &str) -> Vec<String> {
        let whole = replay(text, usize::MAX);
        assert_eq!(replay(text, 1), whole, "byte-at-a-time differs");
        assert_eq!(replay(text, 5), whole, "5-byte pieces differ");
        assert!(
            !whole.iter().any(|l| l.starts_with("UNPARSED")),
            "{whole:#?}"
        );
        whole
    }

    fn load(name: &str) -> String {
        let path = format!(
            "{}/src/proto/mysql/testdata/{name}.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn count(lines: &[String], what: &str) -> usize {
        lines.iter().filter(|l| *l == what).count()
    }

    #[test]
    fn mariadb_cli_session() {
        // Queries, an error, INSERT, CALL with two result sets, USE (COM_INIT_DB), LOCAL
        // INFILE of 300 rows, SQL-level PREPARE/EXECUTE, and a 4-statement batch that fails at
        // its third statement.
        let s = summary(&load("cli"));
        assert_eq!(&s[..2], &["login sg_a", "auth true"]);
        assert_eq!(count(&s, "> query"), 13);
        assert_eq!(count(&s, "< query ok"), 11);
        assert_eq!(count(&s, "< query err"), 2);
        assert_eq!(count(&s, "< init_db ok"), 1);
        assert_eq!(s.last().map(String::as_str), Some("< quit ok"));
    }

    #[test]
    fn mariadb_admin_ping_status() {
        let s = summary(&load("admin"));
        assert_eq!(
            s,
            [
                "login sg_root",
                "auth true",
                "> ping",
                "< ping ok",
                "> statistics",
                "< statistics ok",
                "> quit",
                "< quit ok"
            ]
        );
    }

    #[test]
    fn mysql_async_session_with_deprecate_eof() {
        // Text query, a two-statement batch, two executions of one prepared statement, an
        // error, COM_CHANGE_USER (with auth switch), COM_RESET_CONNECTION, quit.
        let s = summary(&load("mysql_async"));
        let text = load("mysql_async");
        let first_client = text.lines().find(|l| l.starts_with("C ")).unwrap();
        let caps = u32::from_str_radix(&first_client[10..18], 16)
            .unwrap()
            .swap_bytes() as u64;
        assert_ne!(
            caps & caps::DEPRECATE_EOF,
            0,
            "the recording negotiates DEPRECATE_EOF"
        );
        assert_eq!(&s[..2], &["login sg_a", "auth true"]);
        assert_eq!(count(&s, "< stmt_execute ok"), 2);
        assert_eq!(count(&s, "< query err"), 1);
        assert_eq!(count(&s, "< change_user ok"), 1);
        assert!(s.contains(&"user sg_b".to_string()), "{s:#?}");
        assert_eq!(count(&s, "< reset_connection ok"), 1);
        assert_eq!(s.last().map(String::as_str), Some("< quit ok"));
        assert_eq!(
            count(&s, "> query") + count(&s, "> stmt_prepare") + count(&s, "> stmt_execute") + 3,
            s.iter().filter(|l| l.starts_with('>')).count()
        );
    }

    #[test]
    fn change_user_to_passwordless_account_with_empty_auth_switch_answer() {
        // mariadb-test: `change_user nopw,,app;` then back to sg_root. The server answers the
        // first COM_CHANGE_USER with an AuthSwitchRequest and the client sends an empty packet.
        let s = summary(&load("change_user_nopw"));
        assert_eq!(count(&s, "< change_user ok"), 2, "{s:#?}");
        assert!(s.contains(&"user nopw".to_string()), "{s:#?}");
        assert_eq!(count(&s, "< query ok"), 3, "{s:#?}");
        assert_eq!(s.last().map(String::as_str), Some("< quit ok"));
    }

    #[test]
    fn prepared_load_data_local_infile() {
        // mariadb-test --ps-protocol: LOAD DATA LOCAL INFILE prepared and executed; the
        // EXECUTE is answered with 0xFB and the client sends the file.
        let s = summary(&load("ps_local_infile"));
        assert_eq!(count(&s, "> stmt_execute"), 5, "{s:#?}");
        assert_eq!(count(&s, "< stmt_execute ok"), 5, "{s:#?}");
        assert_eq!(count(&s, "< stmt_close ok"), 4, "{s:#?}");
        assert_eq!(s.last().map(String::as_str), Some("< quit ok"));
        // --cursor-protocol: the same, and the SELECT opens a cursor read with STMT_FETCH.
        let s = summary(&load("cursor_protocol_infile_fetch"));
        assert_eq!(count(&s, "< stmt_execute ok"), 4, "{s:#?}");
        assert_eq!(count(&s, "< stmt_fetch ok"), 1, "{s:#?}");
        assert_eq!(s.last().map(String::as_str), Some("< quit ok"));
    }

    #[test]
    fn procedure_with_open_cursor_returns_rows_inline() {
        // CALL of a procedure that SELECTs while its own cursor is open: the column EOF
        // carries SERVER_STATUS_CURSOR_EXISTS, the rows follow anyway. As a text query, and
        // executed as a prepared statement (flags 0: no cursor asked) by --ps-protocol and
        // --cursor-protocol.
        for name in [
            "sp_cursor_text",
            "sp_cursor_ps",
            "sp_cursor_cursor_protocol",
        ] {
            let s = summary(&load(name));
            let call = if name == "sp_cursor_text" {
                "< query ok"
            } else {
                "< stmt_execute ok"
            };
            assert!(s.contains(&call.to_string()), "{name}: {s:#?}");
            assert!(!s.iter().any(|l| l.ends_with(" err")), "{name}: {s:#?}");
            assert_eq!(s.last().map(String::as_str), Some("< quit ok"), "{name}");
        }
    }

    #[test]
    fn compound_statements_after_opening_a_cursor() {
        // mariadb CLI: `BEGIN NOT ATOMIC ... OPEN c; CLOSE c; SELECT 7; END` and `... OPEN c;
        // SELECT 5; CLOSE c; END`: the SELECTs' column EOF carries CURSOR_EXISTS, rows follow.
        let s = summary(&load("compound_cursor"));
        assert!(!s.iter().any(|l| l.ends_with(" err")), "{s:#?}");
        assert!(count(&s, "< query ok") >= 3, "{s:#?}");
        assert_eq!(s.last().map(String::as_str), Some("< quit ok"));
    }

    #[test]
    fn sysbench_prepared_and_text() {
        // One oltp_read_only transaction = 16 queries in sysbench's own count.
        let ps = summary(&load("sysbench_ps"));
        assert_eq!(count(&ps, "< stmt_prepare ok"), 7);
        assert_eq!(count(&ps, "> stmt_execute"), 16);
        assert_eq!(count(&ps, "< stmt_execute ok"), 16);
        assert_eq!(count(&ps, "< stmt_close ok"), 7);
        let text = summary(&load("sysbench_text"));
        assert_eq!(count(&text, "> query"), 16);
        assert_eq!(count(&text, "< query ok"), 16);
    }
}
