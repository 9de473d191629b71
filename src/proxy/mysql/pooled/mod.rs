//! A terminating MySQL frontend (`multiplex = true`, or a pool with replicas): shardgate logs
//! the client in itself, then sends each command to a server connection it chooses, and
//! decides after every reply, from what the server reported, whether the session keeps that
//! connection (docs/mysql-pooling.md).
//!
//! ```text
//! greeting (our scramble) ─ login checked against [[mysql.user]] ─ [schema checked] ─ OK
//!    ▼
//! read one command whole ─┬ QUIT ─► end
//!                         ├ PING, RESET_CONNECTION without a held connection: answered here
//!                         ├ CHANGE_USER: checked here, held connections reset and released
//!                         └ else: the held connection, or
//!                                 replica (a plain read, no connection held, fresh enough
//!                                          for read-your-writes) or primary,
//!                                 idle one from the shard's pool or a new login
//!    ▼
//! command sent, reply relayed as it comes (LOCAL INFILE data forwarded), OK packets read
//!    ▼
//! rules::decide: release to the pool │ keep for the next command │ the transaction │ for good
//! ```
//!
//! A reused connection that fails before the first byte of its reply (closed by the server
//! while idle) is replaced and the command sent again, once, when the session held nothing.

mod choose;
mod conn;
mod login;
pub mod monitor;
pub mod pool;
pub mod rules;
mod show;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::balance::ServerShared;
use crate::config::{MysqlFrontend, MysqlPooled, ReadYourWrites};
use crate::proto::mysql::auth::{self, TERMINATING_CAPS};
use crate::proto::mysql::command::{classify, CommandClass};
use crate::proto::mysql::packet::{err_packet, packet, HEADER_LEN};
use crate::proto::mysql::session_track::{parse_ok, Gtid, OkInfo};
use crate::proto::mysql::{caps, com, status, Event};
use crate::proxy::{MysqlFront, ShardCtx, ShardView};
use crate::rt::{self, Read, TcpStream};

use super::stats::ConnAccount;
use super::track::DigestTrack;
use super::{on_event, FrontCounters, MysqlShardStats, Sinks, RELAY_BUF};
use conn::{GaugeGuard, OpenError, ServerConn, Want};
pub use pool::{ReplState, ShardPool, UserGauge};
use rules::{decide, Hold, ReplyFacts, TextFacts};
pub use show::{render, render_json};

/// Longest command read whole (a multi-packet one included, each 16 MiB packet with its
/// header): a longer one is refused with ERR 1153.
const MAX_COMMAND: usize = 64 << 20;
/// Longest packet before the login is done (a HandshakeResponse41 with attributes is well
/// under 1 KiB): nobody buffers megabytes for a client that has not shown a password.
const MAX_LOGIN_PACKET: usize = 16 << 10;

/// Is this command packet a plain read (a COM_QUERY a replica may take, which can be sent
/// again without running anything twice)?
fn is_read(pkt: &[u8]) -> bool {
    pkt.get(HEADER_LEN) == Some(&com::QUERY) && rules::replica_safe(&pkt[HEADER_LEN + 1..])
}

/// Where the logical packet at the start of `buf` ends.
#[derive(Debug, PartialEq, Eq)]
enum Frames {
    /// This many bytes: every 16 MiB chunk and the shorter last one, headers included.
    Whole(usize),
    Partial,
    /// Longer than [`MAX_COMMAND`]: the sequence id of its last chunk header seen.
    TooLong(u8),
}

fn logical_packet(buf: &[u8], max: usize) -> Frames {
    let mut at = 0usize;
    loop {
        let Some(h) = buf.get(at..at + HEADER_LEN) else {
            return Frames::Partial;
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
        let end = at + HEADER_LEN + len;
        if end > max {
            return Frames::TooLong(h[3]);
        }
        if buf.len() < end {
            return Frames::Partial;
        }
        if len < 0xFF_FFFF {
            return Frames::Whole(end);
        }
        at = end;
    }
}
/// The login must be done within this.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A server's reply has no time bound of its own (a long query is legitimate); this only
/// keeps a dead peer from holding a session forever.
const REPLY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// A session waiting for a server connection (user at max_server_connections) is woken when
/// one returns to its shard's pool, and looks at least this often (for other shards').
const FULL_POLL: Duration = Duration::from_millis(5);
/// A replica whose last check is older than this takes no reads.
const MONITOR_STALE_MS: u64 = 5_000;

const ER_ACCESS_DENIED: u16 = 1045;
const ER_TOO_MANY_USER_CONNECTIONS: u16 = 1203;
const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
const ER_UNKNOWN_STMT_HANDLER: u16 = 1243;
const ER_NOT_SUPPORTED_YET: u16 = 1235;
const ER_HANDSHAKE_ERROR: u16 = 1043;
const ER_CON_COUNT_ERROR: u16 = 1040;
const CR_CONN_HOST_ERROR: u16 = 2003;

/// The client's side of a session.
struct Client {
    stream: TcpStream,
    /// Bytes read and not consumed yet.
    buf: Vec<u8>,
    canceller: monoio::io::Canceller,
}

/// Why a session ends.
enum End {
    /// The client left (QUIT, close, idle timeout, write stall, drain).
    Client,
}

/// A server connection the session keeps, and until when.
struct Held {
    conn: ServerConn,
    hold: Hold,
}

/// How a relayed command went.
enum Relay {
    Done(ReplyFacts),
    /// The server connection failed; `silent`: before any byte of the reply (a command sent
    /// on a connection the server had closed may be sent again elsewhere).
    ServerFailed {
        silent: bool,
        /// The command was written (the server may have run it).
        sent: bool,
    },
    ClientFailed,
}

struct Session<'a> {
    shard: &'a ShardCtx,
    view: &'a ShardView,
    conf: &'a MysqlFrontend,
    pc: &'a MysqlPooled,
    sp: &'a ShardPool,
    counters: &'a FrontCounters,
    stats: &'a MysqlShardStats,
    client: Client,
    peer: SocketAddr,
    scramble: [u8; 20],
    user: usize,
    sha1: Option<[u8; 20]>,
    /// The client's capabilities with shardgate.
    caps: u64,
    charset: u8,
    schema: Vec<u8>,
    held: Option<Held>,
    /// `multiplex = false`: the session's own replica connection.
    own_replica: Option<ServerConn>,
    /// The GTID of the session's last write (read-your-writes).
    last_gtid: Option<Gtid>,
    /// A replica connection reported a session change: no replica for this session again.
    no_replica: bool,
    acct: ConnAccount,
    digests: DigestTrack,
    /// The logged-in user's place in its client count (swapped by COM_CHANGE_USER).
    client_gauge: Option<ClientGauge<'a>>,
    /// Longest packet the client may send now: small until it has logged in.
    max_packet: usize,
}

/// Serve one client of a terminating frontend until it leaves.
pub(super) async fn serve(
    shard: &ShardCtx,
    view: &ShardView,
    front: &MysqlFront,
    sp: &ShardPool,
    client: TcpStream,
    peer: SocketAddr,
    early: Vec<u8>,
) {
    let conf = &front.conf;
    let Some(pc) = conf.pooled.as_deref() else {
        return;
    };
    let _ = client.set_nodelay(true);
    let mut s = Session {
        shard,
        view,
        conf,
        pc,
        sp,
        counters: &front.counters,
        stats: &shard.shared.mysql_stats[shard.id()],
        client: Client {
            stream: client,
            buf: early,
            canceller: monoio::io::Canceller::new(),
        },
        peer,
        scramble: auth::new_scramble(),
        user: 0,
        sha1: None,
        caps: 0,
        charset: auth::UTF8MB4_GENERAL_CI,
        schema: Vec::new(),
        held: None,
        own_replica: None,
        last_gtid: None,
        no_replica: false,
        acct: ConnAccount::default(),
        digests: DigestTrack::default(),
        client_gauge: None,
        max_packet: MAX_LOGIN_PACKET,
    };
    let logged_in = rt::timeout(LOGIN_TIMEOUT, s.login()).await == Some(true);
    if !logged_in {
        s.acct.flush(s.stats, None);
        return;
    }
    s.max_packet = MAX_COMMAND;
    s.counters.pool_clients.add(1);
    let _ = s.commands().await;
    s.counters.pool_clients.sub(1);
    s.finish().await;
    s.acct.flush(s.stats, None);
}

/// A session's place in its user's queue for a server connection (ticket 0: not queued);
/// left however the wait ends.
struct Queued<'a> {
    sp: &'a ShardPool,
    user: usize,
    ticket: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.ticket != 0 {
            self.sp.leave(self.user, self.ticket);
        }
    }
}

/// Counts a logged-in client on its user while the session lives.
struct ClientGauge<'a>(&'a UserGauge);

impl Drop for ClientGauge<'_> {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

fn err_payload(code: u16, state: &[u8; 5], msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + msg.len());
    err_packet(&mut out, 0, code, state, msg);
    out.split_off(HEADER_LEN)
}

impl<'a> Session<'a> {
    fn sinks(&self, server: &'a ServerShared) -> Sinks<'a> {
        Sinks {
            stats: self.stats,
            counters: self.counters,
            server,
            shard: self.shard.id(),
            digests: self
                .conf
                .digests
                .then(|| &*self.shard.shared.mysql_digests[self.shard.id()]),
            track: self.conf.digests,
            from_cache: false,
        }
    }

    fn server(&self, ix: usize) -> &'a ServerShared {
        let pool = &self.view.gen.pools[self.conf.pool];
        &pool.servers[ix]
    }

    fn pool_conf(&self) -> &'a crate::config::Pool {
        &self.view.gen.config.pools[self.conf.pool]
    }

    // ---- the client side ----

    /// One whole packet from the client (header included). `idle`: between commands, where
    /// a drain ends the wait too; each read is bounded by client_idle_timeout (the login as a
    /// whole by LOGIN_TIMEOUT).
    async fn client_packet(&mut self, idle: bool) -> Result<Vec<u8>, End> {
        loop {
            match logical_packet(&self.client.buf, self.max_packet) {
                Frames::Whole(n) => {
                    let rest = self.client.buf.split_off(n);
                    return Ok(std::mem::replace(&mut self.client.buf, rest));
                }
                Frames::TooLong(seq) => {
                    let msg = match self.max_packet {
                        MAX_COMMAND => {
                            "shardgate: a command longer than 64 MiB cannot be multiplexed"
                        }
                        _ => "shardgate: login packet too long",
                    };
                    let p = err_payload(ER_NET_PACKET_TOO_LARGE, b"08S01", msg);
                    let _ = self.send_client(packet(seq.wrapping_add(1), &p)).await;
                    return Err(End::Client);
                }
                Frames::Partial => {}
            }
            let buf = std::mem::take(&mut self.client.buf);
            let (r, b) = if idle {
                let drain = self.shard.drain();
                rt::read_idle(
                    &mut self.client.stream,
                    buf,
                    4096,
                    self.conf.client_idle_timeout,
                    drain,
                    &mut self.client.canceller,
                )
                .await
            } else {
                rt::read_into(
                    &mut self.client.stream,
                    buf,
                    4096,
                    self.conf.client_idle_timeout,
                )
                .await
            };
            self.client.buf = b;
            match r {
                Read::Data => {}
                Read::TimedOut if idle => {
                    self.counters.idle_closed.add(1);
                    return Err(End::Client);
                }
                _ => return Err(End::Client),
            }
        }
    }

    async fn send_client(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, End> {
        self.acct.bytes_out(bytes.len());
        match rt::write_all(
            &mut self.client.stream,
            bytes,
            self.conf.client_write_timeout,
        )
        .await
        {
            (Ok(()), b) => Ok(b),
            (Err(_), _) => {
                self.counters.write_timeout.add(1);
                Err(End::Client)
            }
        }
    }

    async fn send_err(&mut self, seq: u8, payload: &[u8]) -> Result<(), End> {
        self.send_client(packet(seq, payload)).await.map(drop)
    }

    // ---- logging in ----

    // ---- commands ----

    async fn commands(&mut self) -> Result<(), End> {
        loop {
            let pkt = self.client_packet(true).await?;
            self.acct.bytes_in(pkt.len());
            let Some(&cmd) = pkt.get(HEADER_LEN) else {
                let p = err_payload(ER_HANDSHAKE_ERROR, b"08S01", "empty command packet");
                self.send_err(1, &p).await?;
                return Err(End::Client);
            };
            match cmd {
                com::QUIT => {
                    self.acct.command(cmd);
                    return Ok(());
                }
                com::PING if self.held.is_none() => {
                    self.local_ok(cmd).await?;
                }
                com::RESET_CONNECTION => self.reset_connection().await?,
                com::CHANGE_USER => self.change_user(&pkt).await?,
                _ if cmd == com::PROCESS_KILL
                    || (cmd == com::QUERY && rules::is_kill(&pkt[HEADER_LEN + 1..])) =>
                {
                    self.acct.command(cmd);
                    self.acct.reply(self.stats, false, 0);
                    let p = err_payload(
                        ER_NOT_SUPPORTED_YET,
                        b"42000",
                        "shardgate: KILL through a multiplexing frontend is not supported (connection ids are shardgate's); connect to the server",
                    );
                    self.send_err(1, &p).await?;
                }
                _ if classify(cmd) == CommandClass::Unfollowable => {
                    self.acct.command(cmd);
                    self.acct.reply(self.stats, false, 0);
                    let p = err_payload(
                        ER_NOT_SUPPORTED_YET,
                        b"42000",
                        "shardgate: replication and COM_MULTI streams are not multiplexed",
                    );
                    self.send_err(1, &p).await?;
                }
                _ => self.run(cmd, pkt).await?,
            }
        }
    }

    /// Answer a command with OK here (the session holds no server connection).
    async fn local_ok(&mut self, cmd: u8) -> Result<(), End> {
        self.acct.command(cmd);
        self.acct.reply(self.stats, true, 0);
        let ok = auth::ok_payload(status::AUTOCOMMIT);
        self.send_client(packet(1, &ok)).await.map(drop)
    }

    /// Send a command to the right server connection and relay its reply.
    async fn run(&mut self, cmd: u8, pkt: Vec<u8>) -> Result<(), End> {
        let text = match cmd {
            com::QUERY => &pkt[HEADER_LEN + 1..],
            _ => &[][..],
        };
        let text_facts = TextFacts::of(text);
        if let Some(h) = self.held.take() {
            if self.server(h.conn.server).replica && !is_read(&pkt) {
                // Kept after a replica read for the next command (its warnings), but this one
                // is not a read: the primary takes it.
                self.release(h.conn).await;
            } else {
                return self.on_conn(h.conn, Some(h.hold), pkt, text_facts).await;
            }
        }
        if matches!(
            cmd,
            com::STMT_EXECUTE
                | com::STMT_FETCH
                | com::STMT_RESET
                | com::STMT_CLOSE
                | com::STMT_SEND_LONG_DATA
                | com::STMT_BULK_EXECUTE
        ) {
            // Its statement lived on a connection this session no longer holds (it was never
            // prepared, or was released with COM_RESET_CONNECTION).
            self.acct.command(cmd);
            if matches!(cmd, com::STMT_CLOSE | com::STMT_SEND_LONG_DATA) {
                self.acct.reply(self.stats, true, 0);
                return Ok(());
            }
            self.acct.reply(self.stats, false, 0);
            let p = err_payload(
                ER_UNKNOWN_STMT_HANDLER,
                b"HY000",
                "Unknown prepared statement handler given to mysqld_stmt_execute",
            );
            return self.send_err(1, &p).await;
        }
        let replica = cmd == com::QUERY && self.wants_replica(&pkt[HEADER_LEN + 1..]);
        let conn = if replica {
            self.replica_conn().await
        } else {
            None
        };
        let conn = match conn {
            Some(c) => {
                self.counters.pool_to_replica.add(1);
                c
            }
            None => match self.acquire(false).await {
                Ok(c) => {
                    if self.pc.split {
                        self.counters.pool_to_primary.add(1);
                    }
                    c
                }
                Err(p) => {
                    self.acct.command(cmd);
                    self.acct.reply(self.stats, false, 0);
                    return self.send_err(1, &p).await;
                }
            },
        };
        self.on_conn(conn, None, pkt, text_facts).await
    }

    /// Relay `pkt` on `conn`, retrying once on a fresh connection when a reused one fails
    /// silently and the session held nothing; then apply the decision.
    async fn on_conn(
        &mut self,
        mut conn: ServerConn,
        held: Option<Hold>,
        pkt: Vec<u8>,
        text: TextFacts,
    ) -> Result<(), End> {
        // Shared, not copied, by the write (and a retry's).
        let pkt = bytes::Bytes::from(pkt);
        let mut retried = false;
        loop {
            match self.relay(&mut conn, &pkt).await {
                Relay::Done(mut facts) => {
                    facts.text = text;
                    if facts.cmd == com::INIT_DB && facts.ok {
                        // Also for a connection that does not track the schema.
                        let schema = pkt[HEADER_LEN + 1..].to_vec();
                        conn.schema = Some(schema.clone());
                        self.schema = schema;
                    }
                    return self.after_reply(conn, held, facts).await;
                }
                Relay::ClientFailed => {
                    if held == Some(Hold::Session) {
                        self.counters.pool_pinned.sub(1);
                    }
                    return Err(End::Client);
                }
                Relay::ServerFailed { silent, sent } => {
                    let was_replica = self.server(conn.server).replica;
                    drop(conn);
                    if held == Some(Hold::Session) {
                        self.counters.pool_pinned.sub(1);
                    }
                    // Sent again only when it cannot have run: the write failed, or nothing
                    // came back for a plain read. A write (or a KILL'ed statement) that got no
                    // answer may have run: the client is told, never given a second run.
                    let again = silent && (!sent || is_read(&pkt));
                    if !again || held.is_some() || retried {
                        self.counters.backend_lost.add(1);
                        if held.is_some() || !again {
                            // Part of a reply, or state the session relied on, is gone.
                            return Err(End::Client);
                        }
                        let p = err_payload(
                            2013,
                            b"HY000",
                            "shardgate: lost the server connection before the reply",
                        );
                        return self.send_err(1, &p).await;
                    }
                    retried = true;
                    let fresh = if was_replica {
                        self.replica_conn().await
                    } else {
                        None
                    };
                    conn = match fresh {
                        Some(c) => c,
                        None => match self.acquire(false).await {
                            Ok(c) => c,
                            Err(p) => return self.send_err(1, &p).await,
                        },
                    };
                }
            }
        }
    }

    /// Keep or release the connection after a reply, and learn from it (schema, GTID).
    async fn after_reply(
        &mut self,
        mut conn: ServerConn,
        held: Option<Hold>,
        facts: ReplyFacts,
    ) -> Result<(), End> {
        for o in &facts.oks {
            if let Some(s) = &o.schema {
                self.schema.clone_from(s);
                conn.schema = Some(s.clone());
            }
            if let Some(g) = o.last_gtid.as_deref().and_then(Gtid::parse) {
                if !self.server(conn.server).replica {
                    self.last_gtid = Some(g);
                }
            }
        }
        let mut hold = decide(&facts);
        if hold == Hold::Session || rules::taints(&facts) {
            conn.tainted = true;
        }
        if self.server(conn.server).replica {
            if hold == Hold::Session {
                // A read judged safe for a replica changed the session there: the session's
                // state now lives on a replica connection that takes no writes. Keep the
                // session away from replicas and do not let that state leak to others.
                tracing::warn!(event = "mysql_replica_session_change", frontend = %self.conf.name, "a statement sent to a replica changed the session; this session uses the primary from now on");
                self.no_replica = true;
                return Ok(());
            }
            if !self.pc.multiplex {
                self.own_replica = Some(conn);
            } else if hold == Hold::Next {
                // Its warnings or error are read by the next command (if it is a read).
                self.held = Some(Held { conn, hold });
            } else {
                self.release(conn).await;
            }
            return Ok(());
        }
        if !self.pc.multiplex {
            hold = Hold::Session;
        }
        if held == Some(Hold::Session) {
            hold = Hold::Session;
        }
        if hold == Hold::Session && held != Some(Hold::Session) {
            self.counters.pool_pinned.add(1);
        }
        match hold {
            Hold::Release => self.release(conn).await,
            h => self.held = Some(Held { conn, hold: h }),
        }
        Ok(())
    }

    /// Send the command, relay the reply to the client as it comes.
    async fn relay(&mut self, conn: &mut ServerConn, pkt: &bytes::Bytes) -> Relay {
        let ss = self.server(conn.server);
        let to = self.sinks(ss);
        let tracked = conn.tracking;
        let mut facts = ReplyFacts {
            cmd: pkt[HEADER_LEN],
            tracked,
            ok: true,
            // The last report stands until the server sends another.
            locked: conn.locked,
            ..ReplyFacts::default()
        };
        let mut done = false;
        let now = rt::now_us();
        ss.add_bytes(to.shard, pkt.len() as u64);
        {
            let (acct, digests) = (&mut self.acct, &mut self.digests);
            conn.observer.feed_client(pkt, now, &mut |e| {
                if let Event::Reply { ok, .. } = &e {
                    done = true;
                    facts.ok = *ok;
                }
                on_event(e, acct, digests, &to)
            });
        }
        if let (Err(_), _) = rt::write_all(&mut conn.stream, pkt.clone(), REPLY_TIMEOUT).await {
            self.close_open_command(conn, &to);
            return Relay::ServerFailed {
                silent: true,
                sent: false,
            };
        }
        let mut got_any = false;
        let mut buf = std::mem::take(&mut conn.buf);
        while !done {
            if buf.is_empty() {
                let (r, b) = rt::read_into(&mut conn.stream, buf, RELAY_BUF, REPLY_TIMEOUT).await;
                buf = b;
                match r {
                    Read::Data => {}
                    _ => {
                        self.close_open_command(conn, &to);
                        return Relay::ServerFailed {
                            silent: !got_any,
                            sent: true,
                        };
                    }
                }
            }
            got_any = true;
            ss.add_bytes(to.shard, buf.len() as u64);
            let mut lost = false;
            {
                let (acct, digests) = (&mut self.acct, &mut self.digests);
                acct.bytes_out(buf.len());
                let locked = &mut facts.locked;
                let oks = &mut facts.oks;
                let ok_flag = &mut facts.ok;
                conn.observer.feed_server(&buf, rt::now_us(), &mut |e| {
                    match &e {
                        Event::Ok { packet, whole } => {
                            let mut info = parse_ok(packet, tracked).unwrap_or(OkInfo {
                                unreadable: true,
                                ..OkInfo::default()
                            });
                            info.unreadable |= !whole;
                            if let Some(l) = info.locked {
                                *locked = l;
                            }
                            oks.push(info);
                        }
                        Event::Reply { ok, .. } => {
                            done = true;
                            *ok_flag = *ok;
                        }
                        Event::Unparsed { .. } => lost = true,
                        _ => {}
                    }
                    on_event(e, acct, digests, &to)
                });
            }
            if lost {
                // Reply boundaries are unknown now: neither side can go on.
                return Relay::ClientFailed;
            }
            // The bytes go to the client as they are (the acct counted them already).
            match rt::write_all(&mut self.client.stream, buf, self.conf.client_write_timeout).await
            {
                (Ok(()), b) => buf = b,
                (Err(_), _) => {
                    self.counters.write_timeout.add(1);
                    return Relay::ClientFailed;
                }
            }
            buf.clear();
            if !done && conn.observer.awaiting_client() {
                // LOCAL INFILE: the client's file goes to the server until its empty packet.
                while conn.observer.awaiting_client() {
                    let Ok(p) = self.client_packet(false).await else {
                        return Relay::ClientFailed;
                    };
                    self.acct.bytes_in(p.len());
                    {
                        let (acct, digests) = (&mut self.acct, &mut self.digests);
                        conn.observer.feed_client(&p, rt::now_us(), &mut |e| {
                            on_event(e, acct, digests, &to)
                        });
                    }
                    if let (Err(_), _) = rt::write_all(&mut conn.stream, p, REPLY_TIMEOUT).await {
                        return Relay::ServerFailed {
                            silent: false,
                            sent: true,
                        };
                    }
                }
            }
        }
        conn.buf = buf;
        conn.locked = facts.locked;
        facts.status = conn.observer.server_status();
        facts.unreported_change = conn.observer.state_change_unreported();
        facts.eof_warnings = conn.observer.eof_warnings();
        Relay::Done(facts)
    }

    /// The server connection failed with a command open: account it as failed.
    fn close_open_command(&mut self, conn: &mut ServerConn, to: &Sinks<'_>) {
        let (acct, digests) = (&mut self.acct, &mut self.digests);
        conn.observer
            .close(rt::now_us(), &mut |e| on_event(e, acct, digests, to));
    }

    // ---- choosing and keeping server connections ----
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, seq: u8) -> Vec<u8> {
        let mut v = (len as u32).to_le_bytes()[..3].to_vec();
        v.push(seq);
        v.resize(HEADER_LEN + len, 0x41);
        v
    }

    #[test]
    fn logical_packets_span_16_mib_chunks() {
        let one = frame(5, 0);
        assert_eq!(logical_packet(&one, MAX_COMMAND), Frames::Whole(one.len()));
        for cut in 0..one.len() {
            assert_eq!(logical_packet(&one[..cut], MAX_COMMAND), Frames::Partial);
        }
        // 16 MiB - 1, then an empty last chunk: one command of exactly that size.
        let mut two = frame(0xFF_FFFF, 0);
        two.extend(frame(0, 1));
        assert_eq!(logical_packet(&two, MAX_COMMAND), Frames::Whole(two.len()));
        assert_eq!(
            logical_packet(&two[..two.len() - 1], MAX_COMMAND),
            Frames::Partial
        );
        // What follows the command stays for the next one.
        let mut more = two.clone();
        more.extend(frame(3, 0));
        assert_eq!(logical_packet(&more, MAX_COMMAND), Frames::Whole(two.len()));
        // Four full chunks pass 64 MiB: refused as soon as the header says so.
        let mut big = Vec::new();
        for seq in 0..3 {
            big.extend(frame(0xFF_FFFF, seq));
        }
        big.extend_from_slice(&[0xFF, 0xFF, 0xFF, 3]);
        assert_eq!(logical_packet(&big, MAX_COMMAND), Frames::TooLong(3));
        // Before the login, a packet past the small bound is refused from its header.
        assert_eq!(
            logical_packet(&[0x00, 0x00, 0x01, 1], MAX_LOGIN_PACKET),
            Frames::TooLong(1)
        );
    }
}
