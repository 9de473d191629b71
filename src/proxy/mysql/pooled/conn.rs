//! Server connections of a terminating frontend: opened and logged in by shardgate, set up to
//! report session state, kept idle per shard between owners, and used for the few commands
//! shardgate sends on its own (`COM_INIT_DB`, `COM_RESET_CONNECTION`, `MASTER_GTID_WAIT`).
//!
//! ```text
//! connect ─ greeting ─ HandshakeResponse41 (the client's user, SHA1(pw) answers the scramble)
//!    ─ [AuthSwitch to native: answer again] ─ OK
//!    ─ SET session_track_* (only when CLIENT_SESSION_TRACK is in effect)
//!    ─► idle in the shard's pool ◄──────────────────────────────┐
//!         │ taken by a session: COM_INIT_DB if its schema differs │
//!         ▼                                                       │
//!       commands of one session, replies relayed ── released ─────┤
//!         │ carried session state: COM_RESET_CONNECTION + SET ────┘
//!         └ any error, or idle past the pool's idle_timeout: closed
//! ```

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::proto::mysql::auth::{self, Hello};
use crate::proto::mysql::command::ok_status;
use crate::proto::mysql::packet::{complete_packet_len, lenenc, packet, HEADER_LEN};
use crate::proto::mysql::{caps, com, Observer};
use crate::rt::{self, Read, TcpStream};

use super::pool::UserGauge;

/// Most bytes of a reply to one of shardgate's own commands (a status line, one row).
const MAX_OWN_REPLY: usize = 256 * 1024;
/// What server connections ask the server to report in every OK. `CONCAT_WS` drops a NULL,
/// so an empty default list does not leave a leading comma.
pub const TRACKING: &[u8] = b"SET session_track_state_change=1, session_track_schema=1, \
session_track_transaction_info='CHARACTERISTICS', session_track_system_variables=\
CONCAT_WS(',', NULLIF(@@session_track_system_variables, ''), 'last_gtid')";

/// Why a server connection could not be had.
#[derive(Debug)]
pub enum OpenError {
    /// Connect refused or timed out, no greeting, or the connection broke: the server is to
    /// blame (it is marked down).
    Server(String),
    /// Out of descriptors or memory here.
    Local,
    /// The server answered with ERR (login refused, unknown schema...): its payload, for the
    /// client.
    Refused(Vec<u8>),
}

/// One logged-in server connection.
pub struct ServerConn {
    pub stream: TcpStream,
    /// Index of the server in the pool.
    pub server: usize,
    /// Index of the user in the frontend's `[[mysql.user]]`.
    pub user: usize,
    /// Capabilities in effect on this connection.
    pub caps: u64,
    /// What the server offered.
    pub server_caps: u64,
    pub charset: u8,
    /// Current default schema (`None`: unknown, after a reset).
    pub schema: Option<Vec<u8>>,
    pub observer: Observer,
    /// Bytes read from the server and not consumed yet.
    pub buf: Vec<u8>,
    /// The connection carried session state: reset before another session uses it.
    pub tainted: bool,
    /// The server agreed to report session state (our `SET session_track_*` took).
    pub tracking: bool,
    /// Status flags of the last OK of shardgate's own exchanges (login, settings, reset).
    pub status: u16,
    /// The scramble of the greeting (COM_CHANGE_USER answers it).
    nonce: Vec<u8>,
    /// The server reported `LOCK TABLES` in effect.
    pub locked: bool,
    /// When it went idle (ms, process clock).
    pub idle_since_ms: u64,
    _gauge: Option<GaugeGuard>,
}

/// Counts a server connection on its user (all shards) and frontend (this shard) while it
/// lives.
pub struct GaugeGuard {
    pub user: std::sync::Arc<UserGauge>,
    /// The user's connections on this shard (what its share of max_server_connections bounds).
    pub local: std::rc::Rc<std::cell::Cell<u64>>,
    pub open: std::sync::Arc<crate::proxy::mysql::FrontCounters>,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.user.servers.fetch_sub(1, Ordering::Relaxed);
        self.local.set(self.local.get().saturating_sub(1));
        self.open.pool_server_conns.sub(1);
    }
}

/// What a session needs from the server connection it opens.
pub struct Want<'a> {
    pub user_ix: usize,
    pub user: &'a [u8],
    /// `SHA1(password)` (`None`: the account has no password).
    pub sha1: Option<[u8; 20]>,
    /// The client's capabilities with shardgate.
    pub caps: u64,
    pub charset: u8,
    pub schema: &'a [u8],
}

impl ServerConn {
    /// Connect to `addr` and log in as `want` (the caller has counted it on `gauge`).
    pub async fn open(
        addr: std::net::SocketAddr,
        server: usize,
        want: &Want<'_>,
        timeout: Duration,
    ) -> Result<ServerConn, OpenError> {
        let deadline = Instant::now() + timeout;
        let stream = match rt::connect(addr, timeout).await {
            Ok(s) => s,
            Err(rt::ConnectError::Local(_)) => return Err(OpenError::Local),
            Err(rt::ConnectError::Peer(e)) => return Err(OpenError::Server(e.to_string())),
        };
        let _ = stream.set_nodelay(true);
        let mut conn = ServerConn {
            stream,
            server,
            user: want.user_ix,
            caps: 0,
            server_caps: 0,
            charset: want.charset,
            schema: Some(want.schema.to_vec()),
            observer: Observer::new(),
            buf: Vec::with_capacity(super::super::RELAY_BUF),
            tainted: false,
            locked: false,
            idle_since_ms: 0,
            _gauge: None,
            tracking: false,
            status: crate::proto::mysql::status::AUTOCOMMIT,
            nonce: Vec::new(),
        };
        let (_, greeting) = conn.packet(deadline).await?;
        if greeting.first() == Some(&0xFF) {
            return Err(OpenError::Refused(greeting));
        }
        let (server_caps, nonce, _) = auth::greeting_auth(&greeting).map_err(OpenError::Server)?;
        let answer = |nonce: &[u8]| {
            want.sha1
                .map(|h| auth::answer_from_sha1(&h, nonce).to_vec())
                .unwrap_or_default()
        };
        let first = answer(&nonce);
        conn.nonce = nonce.clone();
        let wanted = (want.caps & auth::SESSION_CAPS)
            | caps::CLIENT_MYSQL
            | caps::PROTOCOL_41
            | caps::SECURE_CONNECTION
            | caps::PLUGIN_AUTH
            | 1 << 13; // TRANSACTIONS
        let hello = Hello {
            caps: wanted,
            charset: want.charset,
            user: want.user,
            answer: &first,
            schema: Some(want.schema).filter(|s| !s.is_empty()),
        };
        let resp = auth::handshake_response(server_caps, &hello);
        let sent = u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]]) as u64;
        conn.send(packet(1, &resp), deadline).await?;
        for _ in 0..3 {
            let (seq, p) = conn.packet(deadline).await?;
            match p.first() {
                Some(0x00) => {
                    conn.status = ok_status(&p).unwrap_or(conn.status);
                    conn.caps = sent & server_caps;
                    conn.server_caps = server_caps;
                    conn.observer = Observer::in_commands(conn.caps, conn.status);
                    if conn.caps & caps::SESSION_TRACK != 0 {
                        // A server that refuses the settings reports too little: such a
                        // connection is kept by its session for good.
                        conn.tracking = conn
                            .own_command(com::QUERY, TRACKING, deadline)
                            .await?
                            .is_ok();
                    }
                    return Ok(conn);
                }
                Some(0xFF) => return Err(OpenError::Refused(p)),
                Some(0xFE) if p.len() > 1 => {
                    let (name, rest) = split_nul(&p[1..]);
                    if name != auth::NATIVE {
                        let mut err = Vec::new();
                        crate::proto::mysql::packet::err_packet(
                            &mut err,
                            0,
                            1251,
                            b"08004",
                            &format!(
                                "shardgate logs in to servers with mysql_native_password only; the account uses {}",
                                String::from_utf8_lossy(name)
                            ),
                        );
                        return Err(OpenError::Refused(err[HEADER_LEN..].to_vec()));
                    }
                    let nonce = rest.strip_suffix(&[0]).unwrap_or(rest);
                    conn.send(packet(seq.wrapping_add(1), &answer(nonce)), deadline)
                        .await?;
                }
                _ => return Err(OpenError::Server("unexpected packet in its login".into())),
            }
        }
        Err(OpenError::Server("login did not end".into()))
    }

    /// Send one of shardgate's own commands and read its reply to the end. `Ok(Err(p))` is
    /// the server's ERR payload; `Ok(Ok(r))` the result (no columns for an OK).
    pub async fn own_command(
        &mut self,
        cmd: u8,
        arg: &[u8],
        deadline: Instant,
    ) -> Result<Result<Rows, Vec<u8>>, OpenError> {
        let mut payload = Vec::with_capacity(1 + arg.len());
        payload.push(cmd);
        payload.extend_from_slice(arg);
        self.send(packet(0, &payload), deadline).await?;
        let deprecate_eof = self.caps & caps::DEPRECATE_EOF != 0;
        let (_, first) = self.packet(deadline).await?;
        match first.first() {
            Some(0xFF) => return Ok(Err(first)),
            Some(0x00) => {
                self.status = ok_status(&first).unwrap_or(self.status);
                return Ok(Ok(Rows::default()));
            }
            _ => {}
        }
        // A result set: column count, definitions, [EOF], rows, terminator.
        let (cols, _) = lenenc(&first).ok_or_else(|| bad("column count"))?;
        let mut total = first.len();
        let mut out = Rows::default();
        for _ in 0..cols {
            let (_, def) = self.packet(deadline).await?;
            total += def.len();
            // catalog, schema, table, org_table, name, ...
            let mut rest = &def[..];
            let mut name = None;
            for _ in 0..5 {
                let (s, r) = lenenc_str(rest).ok_or_else(|| bad("column definition"))?;
                name = Some(s.to_vec());
                rest = r;
            }
            out.names.push(name.unwrap_or_default());
        }
        if !deprecate_eof {
            total += self.packet(deadline).await?.1.len();
        }
        loop {
            let (_, p) = self.packet(deadline).await?;
            total += p.len();
            if total > MAX_OWN_REPLY {
                return Err(bad("reply too long"));
            }
            match p.first() {
                Some(0xFF) => return Ok(Err(p)),
                Some(0xFE) if p.len() < 0xFF_FFFF && (deprecate_eof || p.len() < 9) => {
                    return Ok(Ok(out));
                }
                _ => {
                    let mut row = Vec::with_capacity(out.names.len());
                    let mut rest = &p[..];
                    while !rest.is_empty() {
                        if rest[0] == 0xFB {
                            row.push(None);
                            rest = &rest[1..];
                        } else {
                            let (s, r) = lenenc_str(rest).ok_or_else(|| bad("row"))?;
                            row.push(Some(s.to_vec()));
                            rest = r;
                        }
                    }
                    out.rows.push(row);
                }
            }
        }
    }

    /// Count the connection on its user and frontend for as long as it lives.
    pub fn counted(&mut self, g: GaugeGuard) {
        self._gauge = Some(g);
    }

    /// Is an idle connection still open, with nothing unread? A server that closed it while
    /// it idled (`wait_timeout`, a restart) has sent EOF (or an ERR first): a non-blocking
    /// peek sees it before a command is sent into it.
    pub fn alive(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        // SAFETY: recv(2) into a live one-byte buffer; MSG_PEEK leaves the data in place.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                byte.as_mut_ptr() as *mut libc::c_void,
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
    }

    /// Make the connection clean for another session: `COM_RESET_CONNECTION` (session
    /// variables, user variables, temporary tables, prepared statements, locks go) and the
    /// tracking settings again.
    pub async fn reset(&mut self, timeout: Duration) -> Result<(), OpenError> {
        let deadline = Instant::now() + timeout;
        if let Err(p) = self
            .own_command(com::RESET_CONNECTION, &[], deadline)
            .await?
        {
            return Err(OpenError::Refused(p));
        }
        if self.tracking {
            if let Err(p) = self.own_command(com::QUERY, TRACKING, deadline).await? {
                return Err(OpenError::Refused(p));
            }
        }
        self.tainted = false;
        self.locked = false;
        self.learn_schema(deadline).await?;
        self.observer = Observer::in_commands(self.caps, self.status);
        Ok(())
    }

    /// Ask the server for the default schema (after a reset, which keeps it).
    async fn learn_schema(&mut self, deadline: Instant) -> Result<(), OpenError> {
        self.schema = match self
            .own_command(com::QUERY, b"SELECT DATABASE()", deadline)
            .await?
        {
            Ok(r) => Some(r.first().unwrap_or_default().to_vec()),
            Err(_) => None,
        };
        Ok(())
    }

    /// Log in again as the same user with no default schema (COM_CHANGE_USER is the only
    /// command that unsets one): a connection whose session used `USE` can then serve a
    /// session without a schema. Its session state goes too.
    pub async fn drop_schema(
        &mut self,
        user: &[u8],
        sha1: Option<[u8; 20]>,
        timeout: Duration,
    ) -> Result<(), OpenError> {
        let deadline = Instant::now() + timeout;
        let answer = |nonce: &[u8]| {
            sha1.map(|h| auth::answer_from_sha1(&h, nonce).to_vec())
                .unwrap_or_default()
        };
        let mut p = vec![com::CHANGE_USER];
        p.extend_from_slice(user);
        p.push(0);
        let a = answer(&self.nonce);
        p.push(a.len() as u8);
        p.extend_from_slice(&a);
        p.push(0); // no schema
        p.extend_from_slice(&[self.charset, 0]);
        if self.caps & caps::PLUGIN_AUTH != 0 {
            p.extend_from_slice(auth::NATIVE);
            p.push(0);
        }
        self.send(packet(0, &p), deadline).await?;
        for _ in 0..3 {
            let (seq, r) = self.packet(deadline).await?;
            match r.first() {
                Some(0x00) => {
                    self.status = ok_status(&r).unwrap_or(self.status);
                    self.schema = Some(Vec::new());
                    self.tainted = false;
                    self.locked = false;
                    if self.tracking {
                        if let Err(p) = self.own_command(com::QUERY, TRACKING, deadline).await? {
                            return Err(OpenError::Refused(p));
                        }
                    }
                    self.observer = Observer::in_commands(self.caps, self.status);
                    return Ok(());
                }
                Some(0xFE) if r.len() > 1 => {
                    let (name, rest) = split_nul(&r[1..]);
                    if name != auth::NATIVE {
                        return Err(OpenError::Server(
                            "change user asked for another plugin".into(),
                        ));
                    }
                    let nonce = rest.strip_suffix(&[0]).unwrap_or(rest).to_vec();
                    self.send(packet(seq.wrapping_add(1), &answer(&nonce)), deadline)
                        .await?;
                    self.nonce = nonce;
                }
                Some(0xFF) => return Err(OpenError::Refused(r)),
                _ => {
                    return Err(OpenError::Server(
                        "unexpected packet in COM_CHANGE_USER".into(),
                    ))
                }
            }
        }
        Err(OpenError::Server("COM_CHANGE_USER did not end".into()))
    }

    /// Set the default schema (`COM_INIT_DB`); `Ok(Err(p))`: the server refused it.
    pub async fn use_schema(
        &mut self,
        schema: &[u8],
        timeout: Duration,
    ) -> Result<Result<(), Vec<u8>>, OpenError> {
        if self.schema.as_deref() == Some(schema) {
            return Ok(Ok(()));
        }
        let deadline = Instant::now() + timeout;
        match self.own_command(com::INIT_DB, schema, deadline).await? {
            Ok(_) => {
                self.schema = Some(schema.to_vec());
                Ok(Ok(()))
            }
            Err(p) => Ok(Err(p)),
        }
    }

    /// One whole packet: (sequence id, payload). Packets of shardgate's own exchanges are
    /// small; a longer one is refused.
    async fn packet(&mut self, deadline: Instant) -> Result<(u8, Vec<u8>), OpenError> {
        loop {
            if let Some(n) = complete_packet_len(&self.buf) {
                let seq = self.buf[3];
                let p = self.buf[HEADER_LEN..n].to_vec();
                self.buf.drain(..n);
                return Ok((seq, p));
            }
            if self.buf.len() > MAX_OWN_REPLY {
                return Err(bad("packet too long"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(OpenError::Server("no answer within connect_timeout".into()));
            }
            let buf = std::mem::take(&mut self.buf);
            let (r, b) = rt::read_into(&mut self.stream, buf, 1024, left).await;
            self.buf = b;
            match r {
                Read::Data => {}
                Read::Eof => return Err(OpenError::Server("closed the connection".into())),
                Read::TimedOut | Read::Drained | Read::Woken => {
                    return Err(OpenError::Server("no answer within connect_timeout".into()))
                }
                Read::Err(e) => return Err(OpenError::Server(e.to_string())),
            }
        }
    }

    async fn send(&mut self, bytes: Vec<u8>, deadline: Instant) -> Result<(), OpenError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match rt::write_all(&mut self.stream, bytes, left).await.0 {
            Ok(()) => Ok(()),
            Err(e) => Err(OpenError::Server(e.to_string())),
        }
    }
}

/// A small result of one of shardgate's own queries.
#[derive(Debug, Default)]
pub struct Rows {
    pub names: Vec<Vec<u8>>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

impl Rows {
    /// The first column of the first row (`None`: no row, or NULL).
    pub fn first(&self) -> Option<&[u8]> {
        self.rows.first()?.first()?.as_deref()
    }

    /// Column `name` of the first row.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let i = self
            .names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name.as_bytes()))?;
        self.rows.first()?.get(i)?.as_deref()
    }
}

fn lenenc_str(p: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, n) = lenenc(p)?;
    let end = n.checked_add(usize::try_from(len).ok()?)?;
    Some((p.get(n..end)?, p.get(end..)?))
}

fn bad(what: &str) -> OpenError {
    OpenError::Server(format!(
        "unreadable reply to shardgate's own command: {what}"
    ))
}

fn split_nul(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().position(|&b| b == 0) {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (p, &[]),
    }
}
