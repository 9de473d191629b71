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

mod conn;
pub mod monitor;
pub mod pool;
pub mod rules;

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

    /// The connection phase; true once the client is logged in (and counted on its user).
    async fn login(&mut self) -> bool {
        self.login_steps().await.is_some()
    }

    async fn login_steps(&mut self) -> Option<()> {
        let id = self.sp.connection_id();
        let version = self.sp.version.borrow().clone();
        let hello = auth::greeting(&version, id, &self.scramble);
        self.send_client(packet(0, &hello)).await.ok()?;
        let pkt = self.client_packet(false).await.ok()?;
        self.acct.bytes_in(pkt.len());
        let Some(login) = auth::parse_login(&pkt[HEADER_LEN..]) else {
            let p = err_payload(ER_HANDSHAKE_ERROR, b"08S01", "Bad handshake");
            let _ = self.send_err(2, &p).await;
            return None;
        };
        let user_name = login.user.to_vec();
        let schema = login.schema.map(<[u8]>::to_vec).unwrap_or_default();
        let (caps, charset) = (login.caps & TERMINATING_CAPS, login.charset);
        let mut answer = login.answer.to_vec();
        let mut seq = pkt[3].wrapping_add(1);
        if login.plugin.is_some_and(|p| p != auth::NATIVE) {
            // A client that speaks another plugin first (caching_sha2_password): ask for
            // mysql_native_password with the same scramble.
            self.send_client(packet(seq, &auth::auth_switch(&self.scramble)))
                .await
                .ok()?;
            let p = self.client_packet(false).await.ok()?;
            self.acct.bytes_in(p.len());
            answer = p[HEADER_LEN..].to_vec();
            seq = p[3].wrapping_add(1);
        }
        self.acct.login(&user_name);
        self.digests.on_event(
            &Event::Login {
                user: &user_name,
                schema: Some(&schema[..]).filter(|s| !s.is_empty()),
            },
            &user_name,
            None,
        );
        let Some((user, sha1)) = self.check_password(&user_name, &answer) else {
            self.acct.login_failed();
            self.counters.login_failed.add(1);
            let p = self.denied(&user_name, !answer.is_empty());
            let _ = self.send_err(seq, &p).await;
            return None;
        };
        let gauge = &*self.sp.gauges[user];
        if !UserGauge::try_add(&gauge.clients, self.pc.users[user].max_connections) {
            self.counters.refused_limit.add(1);
            let msg = format!(
                "User {} already has more than 'max_user_connections' active connections",
                String::from_utf8_lossy(&user_name)
            );
            let p = err_payload(ER_TOO_MANY_USER_CONNECTIONS, b"42000", &msg);
            let _ = self.send_err(seq, &p).await;
            return None;
        }
        self.client_gauge = Some(ClientGauge(gauge));
        (self.user, self.sha1, self.caps, self.charset) = (user, sha1, caps, charset);
        if !schema.is_empty() {
            // The schema is the server's to accept: check it on a connection now, as a
            // server would at login.
            self.schema = schema;
            match self.acquire(false).await {
                Ok(conn) => self.release(conn).await,
                Err(p) => {
                    let _ = self.send_err(seq, &p).await;
                    return None;
                }
            }
        }
        self.acct.authenticated();
        let ok = auth::ok_payload(status::AUTOCOMMIT);
        self.send_client(packet(seq, &ok)).await.ok()?;
        Some(())
    }

    /// The user's index and `SHA1(password)` when `answer` is right for our scramble.
    fn check_password(&self, user: &[u8], answer: &[u8]) -> Option<(usize, Option<[u8; 20]>)> {
        let ix = self
            .pc
            .users
            .iter()
            .position(|u| u.name.as_bytes() == user)?;
        let u = &self.pc.users[ix];
        if u.empty {
            return answer.is_empty().then_some((ix, None));
        }
        let h1 = auth::verify(answer, &self.scramble, &u.stored)?;
        Some((ix, Some(h1)))
    }

    fn denied(&self, user: &[u8], with_password: bool) -> Vec<u8> {
        let msg = format!(
            "Access denied for user '{}'@'{}' (using password: {})",
            String::from_utf8_lossy(user),
            self.peer.ip(),
            if with_password { "YES" } else { "NO" }
        );
        err_payload(ER_ACCESS_DENIED, b"28000", &msg)
    }

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

    async fn reset_connection(&mut self) -> Result<(), End> {
        // The server side of the session: whatever it held is reset on its way to the pool.
        self.drop_session_state().await;
        self.no_replica = false;
        self.digests.on_event(
            &Event::Reply {
                cmd: com::RESET_CONNECTION,
                ok: true,
                elapsed: 0,
                detail: Default::default(),
            },
            self.acct.user(),
            None,
        );
        self.local_ok(com::RESET_CONNECTION).await
    }

    async fn change_user(&mut self, pkt: &[u8]) -> Result<(), End> {
        self.acct.command(com::CHANGE_USER);
        let Some(cu) = auth::parse_change_user(&pkt[HEADER_LEN + 1..], self.caps) else {
            let p = err_payload(ER_HANDSHAKE_ERROR, b"08S01", "Bad COM_CHANGE_USER");
            self.send_err(1, &p).await?;
            return Err(End::Client);
        };
        let (name, schema, charset) = (
            cu.user.to_vec(),
            cu.schema.map(<[u8]>::to_vec).unwrap_or_default(),
            cu.charset,
        );
        let mut answer = cu.answer.to_vec();
        let mut seq = 2;
        if cu.plugin.is_some_and(|p| p != auth::NATIVE) {
            self.send_client(packet(1, &auth::auth_switch(&self.scramble)))
                .await?;
            let p = self.client_packet(false).await?;
            self.acct.bytes_in(p.len());
            answer = p[HEADER_LEN..].to_vec();
            seq = p[3].wrapping_add(1);
        } else {
            seq -= 1;
        }
        // Whatever the outcome, the old session's state is gone.
        self.drop_session_state().await;
        let Some((user, sha1)) = self.check_password(&name, &answer) else {
            self.counters.login_failed.add(1);
            self.acct.reply(self.stats, false, 0);
            let p = self.denied(&name, !answer.is_empty());
            self.send_err(seq, &p).await?;
            // A server closes the connection after a failed COM_CHANGE_USER.
            return Err(End::Client);
        };
        let gauge = &*self.sp.gauges[user];
        if user != self.user {
            if !UserGauge::try_add(&gauge.clients, self.pc.users[user].max_connections) {
                let p = err_payload(
                    ER_TOO_MANY_USER_CONNECTIONS,
                    b"42000",
                    "the user already has max_connections client connections",
                );
                self.send_err(seq, &p).await?;
                return Err(End::Client);
            }
            // The old user's count goes down as its guard is replaced.
            self.client_gauge = Some(ClientGauge(gauge));
        }
        (self.user, self.sha1) = (user, sha1);
        if let Some(c) = charset {
            self.charset = c;
        }
        self.schema = schema;
        self.last_gtid = None;
        self.no_replica = false;
        self.acct.reply(self.stats, true, 0);
        self.acct.change_user(self.stats, &name);
        self.digests.on_event(
            &Event::UserChanged {
                user: &name,
                schema: Some(&self.schema[..]).filter(|s| !s.is_empty()),
            },
            &name,
            None,
        );
        if !self.schema.is_empty() {
            match self.acquire(false).await {
                Ok(conn) => self.release(conn).await,
                Err(p) => {
                    self.send_err(seq, &p).await?;
                    return Err(End::Client);
                }
            }
        }
        let ok = auth::ok_payload(status::AUTOCOMMIT);
        self.send_client(packet(seq, &ok)).await.map(drop)
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
    async fn relay(&mut self, conn: &mut ServerConn, pkt: &[u8]) -> Relay {
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
        if let (Err(_), _) = rt::write_all(&mut conn.stream, pkt.to_vec(), REPLY_TIMEOUT).await {
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

    /// Should this COM_QUERY go to a replica (before read-your-writes)?
    fn wants_replica(&self, text: &[u8]) -> bool {
        if !self.pc.split || self.no_replica || self.caps & caps::SESSION_TRACK == 0 {
            return false;
        }
        if !self.pc.routes.is_empty() {
            let digest = crate::proto::mysql::digest::Normalizer::digest(text);
            if let Some(r) = self
                .pc
                .routes
                .iter()
                .find(|r| r.regex.is_match(&digest.text))
            {
                // A route may send a statement to the primary, or let a read that does not
                // start with SELECT go to a replica; never a locking, writing or
                // session-bound one.
                return r.replica && rules::session_free(text);
            }
        }
        rules::replica_safe(text)
    }

    /// A replica connection fresh enough for this session's last write, or `None` (the read
    /// goes to the primary).
    async fn replica_conn(&mut self) -> Option<ServerConn> {
        let now = rt::now_ms();
        let max_lag = self
            .pool_conf()
            .max_replication_lag
            .map(|d| d.as_millis() as u64);
        let order = self.candidates(true);
        let readable: Vec<usize> = order
            .into_iter()
            .filter(|&ix| {
                self.server(ix)
                    .repl
                    .readable(now, MONITOR_STALE_MS, max_lag)
            })
            .collect();
        if readable.is_empty() {
            return None;
        }
        let gtid = self.last_gtid;
        // Prefer a replica the monitor has already seen apply the session's last write.
        let seen: Vec<usize> = match &gtid {
            Some(g) => readable
                .iter()
                .copied()
                .filter(|&ix| self.server(ix).repl.has(g))
                .collect(),
            None => readable.clone(),
        };
        let mode = self.pc.read_your_writes;
        let servers = if !seen.is_empty() || mode == ReadYourWrites::Off {
            if seen.is_empty() {
                readable
            } else {
                seen
            }
        } else if mode == ReadYourWrites::Primary {
            self.counters.pool_ryw_primary.add(1);
            return None;
        } else {
            readable
        };
        let mut conn = match self.own_replica.take() {
            Some(c) if servers.contains(&c.server) => c,
            other => {
                drop(other);
                self.connection(&servers).await.ok()?
            }
        };
        let Some(g) = gtid else {
            return Some(conn);
        };
        if mode != ReadYourWrites::Wait || self.server(conn.server).repl.has(&g) {
            return Some(conn);
        }
        self.counters.pool_ryw_waits.add(1);
        let secs = self.pc.read_your_writes_timeout.as_secs_f64();
        let sql = format!("SELECT MASTER_GTID_WAIT('{g}', {secs:.3})");
        let deadline = Instant::now() + self.pc.read_your_writes_timeout + Duration::from_secs(5);
        match conn.own_command(com::QUERY, sql.as_bytes(), deadline).await {
            Ok(Ok(rows)) if rows.first() == Some(b"0") => Some(conn),
            Ok(_) => {
                self.counters.pool_ryw_timeouts.add(1);
                self.release(conn).await;
                None
            }
            Err(_) => {
                self.counters.pool_ryw_timeouts.add(1);
                None
            }
        }
    }

    /// The pool's servers of one role, best first by its balancer.
    fn candidates(&self, replica: bool) -> Vec<usize> {
        let pool = &self.view.gen.pools[self.conf.pool];
        let (mut order, mut scratch) = (Vec::new(), Vec::new());
        let pick = crate::balance::Pick {
            now_ms: rt::now_ms(),
            sticky: None,
            hash: 0,
        };
        self.view.balancers.borrow_mut()[self.conf.pool].candidates(
            pool,
            &pick,
            &mut scratch,
            &mut order,
        );
        order.retain(|&ix| pool.servers[ix].replica == replica);
        if replica && order.len() > 1 {
            // Spread reads: rotate where the list starts.
            let n = self.sp.next_replica.get();
            self.sp.next_replica.set(n.wrapping_add(1));
            let len = order.len();
            order.rotate_left(n % len);
        }
        order
    }

    /// A primary connection with the session's schema: `Err` is an ERR payload for the
    /// client.
    async fn acquire(&mut self, replica: bool) -> Result<ServerConn, Vec<u8>> {
        let order = self.candidates(replica);
        if order.is_empty() {
            let pool = &self.pool_conf().name;
            return Err(err_payload(
                CR_CONN_HOST_ERROR,
                b"HY000",
                &format!("shardgate: no server of pool '{pool}' is up"),
            ));
        }
        self.connection(&order).await
    }

    /// An idle connection to one of `servers`, else a new one (waiting for a place while the
    /// user is at max_server_connections, up to the pool's queue_timeout).
    async fn connection(&mut self, servers: &[usize]) -> Result<ServerConn, Vec<u8>> {
        let deadline = Instant::now() + self.pool_conf().queue_timeout;
        let mut place = Queued {
            sp: self.sp,
            user: self.user,
            ticket: 0,
        };
        loop {
            if self.sp.my_turn(place.user, place.ticket) {
                if let Some(r) = self.try_connection(servers).await {
                    return r;
                }
            }
            if Instant::now() >= deadline {
                self.counters.no_server.add(1);
                let u = &self.pc.users[self.user];
                return Err(err_payload(
                    ER_TOO_MANY_USER_CONNECTIONS,
                    b"42000",
                    &format!(
                        "shardgate: user '{}' has max_server_connections server connections in use",
                        u.name
                    ),
                ));
            }
            if place.ticket == 0 {
                place.ticket = self.sp.enqueue(place.user);
            }
            // The oldest waiter also looks every FULL_POLL (a connection closed on another
            // shard frees a place no put() here announces); the others sleep until their turn.
            let most = if self.sp.my_turn(place.user, place.ticket) {
                FULL_POLL
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            self.sp.wait_turn(place.ticket, most).await;
        }
    }

    /// An idle connection or a new one, when the user's bound allows (`None`: wait).
    async fn try_connection(&mut self, servers: &[usize]) -> Option<Result<ServerConn, Vec<u8>>> {
        let pool = self.pool_conf();
        let idle_ms = pool.idle_timeout.as_millis() as u64;
        {
            let key = pool::Key {
                user: self.user,
                caps: self.caps,
                charset: self.charset,
                schema: &self.schema,
            };
            while let Some(mut c) = self.sp.take(servers, &key, rt::now_ms(), idle_ms) {
                self.counters.pool_idle.set(self.sp.idle_count() as u64);
                if !c.alive() {
                    // Closed by the server while idle: dropped, the next one is tried.
                    continue;
                }
                if c.schema.as_deref() == Some(&self.schema[..]) {
                    self.counters.pool_reused.add(1);
                    return Some(Ok(c));
                }
                if self.schema.is_empty() {
                    let name = self.pc.users[self.user].name.as_bytes();
                    if c.drop_schema(name, self.sha1, pool.connect_timeout)
                        .await
                        .is_ok()
                    {
                        self.counters.pool_reused.add(1);
                        self.counters.pool_reset.add(1);
                        return Some(Ok(c));
                    }
                    continue;
                }
                let schema = self.schema.clone();
                match c.use_schema(&schema, pool.connect_timeout).await {
                    Ok(Ok(())) => {
                        self.counters.pool_reused.add(1);
                        return Some(Ok(c));
                    }
                    Ok(Err(p)) => {
                        self.put_idle(c);
                        return Some(Err(p));
                    }
                    // Closed while idle: try the next one.
                    Err(_) => {}
                }
            }
        }
        let max = self.pc.users[self.user].max_server_connections;
        if self.sp.try_place(self.user, max) {
            return Some(self.open(servers).await);
        }
        // At the bound, and nothing idle here fits this session (another character set,
        // capabilities or role): one that does not fit makes room.
        if self.sp.close_one_of(self.user) {
            self.counters.pool_idle.set(self.sp.idle_count() as u64);
            if self.sp.try_place(self.user, max) {
                return Some(self.open(servers).await);
            }
        }
        None
    }

    /// Log a new connection in (its place on the user's gauge is taken).
    async fn open(&mut self, servers: &[usize]) -> Result<ServerConn, Vec<u8>> {
        let pool = self.pool_conf();
        // The place taken by try_place, given back if no server takes the login.
        let guard = GaugeGuard {
            user: self.sp.gauges[self.user].clone(),
            local: self.sp.local[self.user].clone(),
            open: self.counters_arc(),
        };
        let name = self.pc.users[self.user].name.as_bytes();
        self.counters.pool_server_conns.add(1);
        let want = Want {
            user_ix: self.user,
            user: name,
            sha1: self.sha1,
            caps: self.caps,
            charset: self.charset,
            schema: &self.schema,
        };
        for &ix in servers {
            let ss = self.server(ix);
            match ServerConn::open(ss.addr, ix, &want, pool.connect_timeout).await {
                Ok(mut c) => {
                    c.counted(guard);
                    self.counters.pool_opened.add(1);
                    if ss.mark_up() {
                        tracing::info!(event = "server_up", pool = %pool.name, server = %ss.name, "server up: connect succeeded");
                    }
                    return Ok(c);
                }
                Err(OpenError::Refused(p)) => return Err(p),
                Err(OpenError::Local) => {
                    return Err(err_payload(
                        ER_CON_COUNT_ERROR,
                        b"08004",
                        "Too many connections",
                    ))
                }
                Err(OpenError::Server(e)) => {
                    self.counters.connect_failures.add(1);
                    if ss.mark_down(rt::now_ms(), pool.down_time.as_millis() as u64) {
                        tracing::warn!(event = "server_down", pool = %pool.name, server = %ss.name, error = %e, down_for = ?pool.down_time, "mysql server down");
                    }
                }
            }
        }
        drop(guard);
        Err(err_payload(
            CR_CONN_HOST_ERROR,
            b"HY000",
            &format!(
                "shardgate: no server of pool '{}' can be reached",
                pool.name
            ),
        ))
    }

    fn counters_arc(&self) -> std::sync::Arc<FrontCounters> {
        self.shard.shared.mysql_stats[self.shard.id()].front(&self.conf.name)
    }

    /// Back to the shard's pool (a tainted one is reset first).
    async fn release(&mut self, conn: ServerConn) {
        if conn.tainted {
            return self.release_tainted(conn).await;
        }
        self.put_idle(conn);
    }

    fn put_idle(&mut self, conn: ServerConn) {
        let pool = self.pool_conf();
        self.sp.put(conn, rt::now_ms(), pool.max_idle_per_server);
        // This shard's count: only this shard writes it.
        self.counters.pool_idle.set(self.sp.idle_count() as u64);
    }

    /// Reset a connection that carried session state (or may have: an open transaction is
    /// rolled back by the reset), then pool it; one that fails the reset closes.
    async fn release_tainted(&mut self, mut conn: ServerConn) {
        let pool = self.pool_conf();
        if !conn.observer.idle() {
            return;
        }
        if conn.reset(pool.connect_timeout).await.is_ok() {
            self.counters.pool_reset.add(1);
            self.put_idle(conn);
        }
    }

    /// The session's server-side state ends (COM_RESET_CONNECTION, COM_CHANGE_USER, the
    /// client left): what it held is reset and pooled.
    async fn drop_session_state(&mut self) {
        if let Some(h) = self.held.take() {
            if h.hold == Hold::Session {
                self.counters.pool_pinned.sub(1);
            }
            self.release_tainted(h.conn).await;
        }
        if let Some(c) = self.own_replica.take() {
            self.release_tainted(c).await;
        }
    }

    async fn finish(&mut self) {
        self.drop_session_state().await;
    }
}

/// `show pool mysql`: per terminating frontend, its counters summed over shards; per user,
/// client and server connections; per server of its pool, role and what the monitor saw.
pub fn render(shared: &crate::shared::Shared) -> String {
    use std::fmt::Write as _;
    let gen = shared.current();
    let mut out = String::new();
    for f in &gen.config.mysql {
        let Some(pc) = f.pooled.as_deref() else {
            continue;
        };
        let fronts: Vec<_> = shared
            .mysql_stats
            .iter()
            .map(|s| s.front(&f.name))
            .collect();
        let sum = |get: fn(&FrontCounters) -> u64| fronts.iter().map(|c| get(c)).sum::<u64>();
        let _ = writeln!(
            out,
            "frontend {} multiplex={} split={} read_your_writes={:?} clients={} pinned={} server_conns={} idle={} opened={} reused={} reset={} to_primary={} to_replica={} ryw_waits={} ryw_timeouts={} ryw_primary={} login_failed={}",
            f.name,
            pc.multiplex,
            pc.split,
            pc.read_your_writes,
            sum(|c| c.pool_clients.get()),
            sum(|c| c.pool_pinned.get()),
            sum(|c| c.pool_server_conns.get()),
            sum(|c| c.pool_idle.get()),
            sum(|c| c.pool_opened.get()),
            sum(|c| c.pool_reused.get()),
            sum(|c| c.pool_reset.get()),
            sum(|c| c.pool_to_primary.get()),
            sum(|c| c.pool_to_replica.get()),
            sum(|c| c.pool_ryw_waits.get()),
            sum(|c| c.pool_ryw_timeouts.get()),
            sum(|c| c.pool_ryw_primary.get()),
            sum(|c| c.login_failed.get()),
        );
        let gauges = super::user_gauges(shared, &f.name, pc);
        for (u, g) in pc.users.iter().zip(&gauges) {
            let _ = writeln!(
                out,
                "user {} {} clients={} server_conns={} max_connections={} max_server_connections={}",
                f.name,
                u.name,
                g.clients.load(Ordering::Relaxed),
                g.servers.load(Ordering::Relaxed),
                u.max_connections.map_or("-".into(), |n| n.to_string()),
                u.max_server_connections
                    .map_or("-".into(), |n| n.to_string()),
            );
        }
        let now = rt::now_ms();
        for ss in &gen.pools[f.pool].servers {
            let lag = ss.repl.lag_ms.load(Ordering::Relaxed);
            let checked = ss.repl.checked_ms.load(Ordering::Relaxed);
            let pos: Vec<String> = ss.repl.pos.load().iter().map(|g| g.to_string()).collect();
            let _ = writeln!(
                out,
                "server {} {} role={} lag_ms={} checked_ms_ago={} gtid_pos={}",
                f.name,
                ss.name,
                if ss.replica { "replica" } else { "primary" },
                if lag == u64::MAX {
                    "-".into()
                } else {
                    lag.to_string()
                },
                if checked == 0 {
                    "-".into()
                } else {
                    now.saturating_sub(checked).to_string()
                },
                if pos.is_empty() {
                    "-".into()
                } else {
                    pos.join(",")
                },
            );
        }
    }
    if out.is_empty() {
        out.push_str("no MySQL frontend multiplexes or splits reads\n");
    }
    out
}

/// `show pool mysql` as JSON: `{"frontends": [...], "users": [...], "servers": [...]}`, each
/// line an object: its names first (`frontend`, then `user` or `server`), then every `k=v`
/// field, numbers as numbers and `-` as null.
pub fn render_json(shared: &crate::shared::Shared) -> serde_json::Value {
    use serde_json::{Map, Value};
    let mut out: Map<String, Value> = Map::new();
    for kind in ["frontends", "users", "servers"] {
        out.insert(kind.into(), Value::Array(Vec::new()));
    }
    for line in render(shared).lines() {
        let mut words = line.split_whitespace();
        let (kind, names): (&str, &[&str]) = match words.next() {
            Some("frontend") => ("frontends", &["frontend"]),
            Some("user") => ("users", &["frontend", "user"]),
            Some("server") => ("servers", &["frontend", "server"]),
            _ => continue,
        };
        let mut o = Map::new();
        for n in names {
            o.insert((*n).into(), Value::from(words.next().unwrap_or_default()));
        }
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            let v = match v {
                "-" => Value::Null,
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => v
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(v)),
            };
            o.insert(k.into(), v);
        }
        if let Some(Value::Array(a)) = out.get_mut(kind) {
            a.push(Value::Object(o));
        }
    }
    Value::Object(out)
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
