//! MySQL accounting. Each shard owns one [`MysqlShardStats`]: per-frontend connection gauges
//! (atomics only its shard writes, summed by any shard that needs the frontend-wide count) and
//! a per-user table behind a mutex that only its shard and the occasional `show traffic mysql`
//! reader take. A connection accumulates its counts locally ([`ConnAccount`]) and folds them
//! into the table once per finished command, so the table lock is taken once per command and
//! never by another shard.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::proto::mysql::command::{command_slot, slot_name, COMMAND_SLOTS};

/// Distinct users kept per shard; further names are counted under `(other)` so that clients
/// inventing user names cannot grow memory without bound.
pub const MAX_USERS: usize = 1024;
/// Traffic seen before a user name was known (a client that left or failed before its
/// handshake response) is accounted here.
pub const UNKNOWN_USER: &[u8] = b"(unknown)";
/// Latency histogram range: 1 µs .. 1 h, 2 significant digits (about 26 KB per user per shard).
const HIST_MAX_US: u64 = 3_600_000_000;

/// Single-writer counters, as in the HTTP statistics.
pub use crate::stats::Counter as ShardCounter;

/// Connection-level counters of one frontend on one shard.
#[derive(Default, Debug)]
pub struct FrontCounters {
    /// Client connections open now.
    pub active: ShardCounter,
    pub accepted: ShardCounter,
    /// Refused with ERR 1040 because the frontend's `max_connections` was reached.
    pub refused_limit: ShardCounter,
    /// Refused with ERR 2003 because no server could be connected.
    pub no_server: ShardCounter,
    /// Backend connects that failed (each marks its server down).
    pub connect_failures: ShardCounter,
    /// Connections whose backend closed while commands were outstanding.
    pub backend_lost: ShardCounter,
    /// Connections closed by `client_idle_timeout`.
    pub idle_closed: ShardCounter,
    /// Connections closed because a write to the client made no progress for
    /// `client_write_timeout` (a client that stopped reading).
    pub write_timeout: ShardCounter,
    /// Logins the server refused (handshake or COM_CHANGE_USER), and servers that answered
    /// the connect with an ERR instead of a greeting. Counted here, per frontend, because a
    /// refused name is not a user: it never gets a line of its own in the user table.
    pub login_failed: ShardCounter,
    /// Times a client's reading was paused because it had [`MAX_OUTSTANDING`] commands
    /// unanswered (pipelining); reading resumes as replies drain.
    ///
    /// [`MAX_OUTSTANDING`]: super::MAX_OUTSTANDING
    pub pipeline_paused: ShardCounter,
    /// Terminating frontends (docs/mysql-pooling.md): logged-in clients (gauge).
    pub pool_clients: ShardCounter,
    /// Sessions that keep a server connection for good (gauge).
    pub pool_pinned: ShardCounter,
    /// Server connections open, busy or idle (gauge).
    pub pool_server_conns: ShardCounter,
    /// Of those, idle in the shard's pool (gauge).
    pub pool_idle: ShardCounter,
    pub pool_opened: ShardCounter,
    pub pool_reused: ShardCounter,
    pub pool_reset: ShardCounter,
    pub pool_to_replica: ShardCounter,
    pub pool_to_primary: ShardCounter,
    /// Read-your-writes: MASTER_GTID_WAIT run, timed out, reads sent to the primary.
    pub pool_ryw_waits: ShardCounter,
    pub pool_ryw_timeouts: ShardCounter,
    pub pool_ryw_primary: ShardCounter,
}

/// One user's traffic on one shard.
#[derive(Debug, Clone)]
pub struct UserStats {
    /// Successful logins (handshake or COM_CHANGE_USER) as this user.
    pub connections: u64,
    pub login_failures: u64,
    /// Commands sent, per [`command_slot`].
    pub commands: [u64; COMMAND_SLOTS],
    /// Commands whose reply ended (including failed ones).
    pub replies: u64,
    /// Replies that were ERR, commands failed by a closed connection, unsolicited ERRs.
    pub errors: u64,
    /// Client → server bytes.
    pub bytes_in: u64,
    /// Server → client bytes.
    pub bytes_out: u64,
    pub time_total_us: u64,
    /// Connections the observer gave up on (TLS, compression, binlog, unknown shapes).
    pub unparsed: u64,
    pub latency_us: Histogram<u64>,
}

impl Default for UserStats {
    fn default() -> Self {
        UserStats {
            connections: 0,
            login_failures: 0,
            commands: [0; COMMAND_SLOTS],
            replies: 0,
            errors: 0,
            bytes_in: 0,
            bytes_out: 0,
            time_total_us: 0,
            unparsed: 0,
            latency_us: Histogram::new_with_bounds(1, HIST_MAX_US, 2)
                .expect("static histogram bounds are valid"),
        }
    }
}

impl UserStats {
    fn merge(&mut self, o: &UserStats) {
        self.connections += o.connections;
        self.login_failures += o.login_failures;
        for (a, b) in self.commands.iter_mut().zip(o.commands.iter()) {
            *a += b;
        }
        self.replies += o.replies;
        self.errors += o.errors;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.time_total_us += o.time_total_us;
        self.unparsed += o.unparsed;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_us.add(&o.latency_us);
    }

    pub fn requests(&self) -> u64 {
        self.commands.iter().sum()
    }
}

/// Everything MySQL-related one shard counts.
#[derive(Debug, Default)]
pub struct MysqlShardStats {
    /// Per frontend, by name (so counts survive reloads). A shard finds its own when it
    /// builds its view of a generation, not per connection.
    fronts: Mutex<Vec<(Arc<str>, Arc<FrontCounters>)>>,
    users: Mutex<HashMap<Box<[u8]>, UserStats>>,
}

impl MysqlShardStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of frontend `name` on this shard, made on first use. Only the owning
    /// shard writes them, whoever made them.
    pub fn front(&self, name: &str) -> Arc<FrontCounters> {
        let mut fronts = self.fronts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = fronts.iter().find(|(n, _)| &**n == name) {
            return c.clone();
        }
        let c = Arc::new(FrontCounters::default());
        fronts.push((name.into(), c.clone()));
        c
    }

    /// The frontend counters this shard has, by name.
    pub(crate) fn fronts(&self) -> Vec<(Arc<str>, Arc<FrontCounters>)> {
        self.fronts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Apply `f` to `user`'s entry (created on first use, `(other)` beyond [`MAX_USERS`]).
    fn with_user<R>(&self, user: &[u8], f: impl FnOnce(&mut UserStats) -> R) -> R {
        let mut map = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(user) {
            return f(e);
        }
        let key: &[u8] = if map.len() < MAX_USERS {
            user
        } else {
            b"(other)"
        };
        f(map.entry(key.into()).or_default())
    }

    /// A copy of the user table.
    pub(crate) fn users(&self) -> Vec<(Vec<u8>, UserStats)> {
        let map = self.users.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.to_vec(), v.clone())).collect()
    }

    /// Per user: commands, bytes in, bytes out, reply time (µs), connections and errors,
    /// without the histograms (the traffic log and `show traffic site` read this).
    pub(crate) fn user_totals(&self) -> Vec<(Vec<u8>, [u64; 6])> {
        let map = self.users.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(k, v)| {
                (
                    k.to_vec(),
                    [
                        v.requests(),
                        v.bytes_in,
                        v.bytes_out,
                        v.time_total_us,
                        v.connections,
                        v.errors,
                    ],
                )
            })
            .collect()
    }

    /// Add `add` to `user`'s entry (counters carried over from the process this one replaced).
    pub(crate) fn seed_user(&self, user: &[u8], add: &UserStats) {
        self.with_user(user, |u| u.merge(add));
    }
}

/// What a connection has counted since it last folded into its user's entry.
#[derive(Debug, Default)]
struct Delta {
    commands: [u32; COMMAND_SLOTS],
    any_commands: bool,
    bytes_in: u64,
    bytes_out: u64,
    errors: u64,
    connections: u64,
    login_failures: u64,
    unparsed: u64,
}

/// One connection's accounting: who it belongs to and what it has not folded in yet.
///
/// The name in the handshake response is only a claim: it becomes the connection's user when
/// the server accepts the login. Until then everything counts under `(unknown)`, so clients
/// inventing names (1,100 failed logins) cannot push real users into `(other)`.
#[derive(Debug, Default)]
pub struct ConnAccount {
    user: Option<Box<[u8]>>,
    /// The name the handshake response claimed, until the server says yes or no.
    claimed: Option<Box<[u8]>>,
    delta: Delta,
}

impl ConnAccount {
    /// The user the connection's traffic counts under now.
    pub fn user(&self) -> &[u8] {
        self.user.as_deref().unwrap_or(UNKNOWN_USER)
    }

    pub fn bytes_in(&mut self, n: usize) {
        self.delta.bytes_in += n as u64;
    }

    pub fn bytes_out(&mut self, n: usize) {
        self.delta.bytes_out += n as u64;
    }

    /// The handshake response claims a user name; it counts only once the server accepts.
    pub fn login(&mut self, user: &[u8]) {
        self.claimed = Some(user.into());
    }

    /// The server accepted the login: the claimed user owns the connection, and everything
    /// not yet folded (greeting, handshake, authentication rounds) is theirs.
    pub fn authenticated(&mut self) {
        if let Some(user) = self.claimed.take() {
            self.user = Some(user);
            self.delta.connections += 1;
        }
    }

    /// The server refused the login: the claimed name is forgotten, the failure stays with
    /// `(unknown)` (or with the user already logged in, for COM_CHANGE_USER).
    pub fn login_failed(&mut self) {
        self.claimed = None;
        self.delta.login_failures += 1;
        self.delta.errors += 1;
    }

    pub fn command(&mut self, cmd: u8) {
        let slot = &mut self.delta.commands[command_slot(cmd)];
        *slot = slot.saturating_add(1);
        self.delta.any_commands = true;
    }

    pub fn error(&mut self) {
        self.delta.errors += 1;
    }

    pub fn unparsed(&mut self) {
        self.delta.unparsed += 1;
    }

    /// COM_CHANGE_USER succeeded: fold what belongs to the old user, then switch.
    pub fn change_user(&mut self, stats: &MysqlShardStats, user: &[u8]) {
        self.flush(stats, None);
        self.user = Some(user.into());
        self.delta.connections += 1;
    }

    /// A reply ended: fold the pending counts and the reply into the user's entry.
    pub fn reply(&mut self, stats: &MysqlShardStats, ok: bool, elapsed_us: u64) {
        if !ok {
            self.delta.errors += 1;
        }
        self.flush(stats, Some(elapsed_us));
    }

    /// Fold everything pending (also used at connection close).
    pub fn flush(&mut self, stats: &MysqlShardStats, reply_us: Option<u64>) {
        let d = std::mem::take(&mut self.delta);
        let empty = reply_us.is_none()
            && !d.any_commands
            && d.bytes_in == 0
            && d.bytes_out == 0
            && d.errors == 0
            && d.connections == 0
            && d.login_failures == 0
            && d.unparsed == 0;
        if empty {
            return;
        }
        let user = self.user.as_deref().unwrap_or(UNKNOWN_USER);
        stats.with_user(user, |u| {
            if d.any_commands {
                for (a, b) in u.commands.iter_mut().zip(d.commands.iter()) {
                    *a += *b as u64;
                }
            }
            u.bytes_in += d.bytes_in;
            u.bytes_out += d.bytes_out;
            u.errors += d.errors;
            u.connections += d.connections;
            u.login_failures += d.login_failures;
            u.unparsed += d.unparsed;
            if let Some(us) = reply_us {
                u.replies += 1;
                u.time_total_us += us;
                u.latency_us.saturating_record(us.max(1));
            }
        });
    }
}

/// `show traffic mysql`: per user, summed over shards, sorted by user name. One line per
/// user with its counters and latency percentiles (milliseconds), the non-zero command counts
/// last as `name=count` pairs; then one `frontend` line per MySQL frontend.
pub fn render(shards: &[&MysqlShardStats], frontends: &[String]) -> String {
    let merged = merged_users(shards);
    let mut out = String::from(
        "user connections requests errors bytes_in bytes_out time_total_ms time_mean_ms \
         p50_ms p90_ms p99_ms max_ms login_failures unparsed commands\n",
    );
    let ms = |us: u64| us as f64 / 1000.0;
    for (user, u) in &merged {
        let h = &u.latency_us;
        let mean = if u.replies == 0 {
            0.0
        } else {
            ms(u.time_total_us) / u.replies as f64
        };
        let q = |x: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(x))
            }
        };
        let _ = write!(
            out,
            "{} {} {} {} {} {} {:.3} {:.3} {:.3} {:.3} {:.3} {:.3} {} {} ",
            display_user(user),
            u.connections,
            u.requests(),
            u.errors,
            u.bytes_in,
            u.bytes_out,
            ms(u.time_total_us),
            mean,
            q(0.5),
            q(0.9),
            q(0.99),
            if h.is_empty() { 0.0 } else { ms(h.max()) },
            u.login_failures,
            u.unparsed,
        );
        let mut first = true;
        for (slot, n) in u.commands.iter().enumerate().filter(|(_, n)| **n > 0) {
            let _ = write!(
                out,
                "{}{}={}",
                if first { "" } else { "," },
                slot_name(slot),
                n
            );
            first = false;
        }
        if first {
            out.push('-');
        }
        out.push('\n');
    }
    // The running config's frontends first, then any a reload removed.
    let per_shard: Vec<_> = shards.iter().map(|s| s.fronts()).collect();
    let mut names: Vec<Arc<str>> = frontends.iter().map(|f| Arc::from(f.as_str())).collect();
    for (n, _) in per_shard.iter().flatten() {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    for name in &names {
        let sum = |f: fn(&FrontCounters) -> &ShardCounter| {
            per_shard
                .iter()
                .flatten()
                .filter(|(n, _)| n == name)
                .map(|(_, c)| f(c).get())
                .sum::<u64>()
        };
        let _ = writeln!(
            out,
            "frontend {name} active={} accepted={} refused_limit={} no_server={} connect_failures={} backend_lost={} idle_closed={} write_timeout={} login_failed={} pipeline_paused={}",
            sum(|c| &c.active),
            sum(|c| &c.accepted),
            sum(|c| &c.refused_limit),
            sum(|c| &c.no_server),
            sum(|c| &c.connect_failures),
            sum(|c| &c.backend_lost),
            sum(|c| &c.idle_closed),
            sum(|c| &c.write_timeout),
            sum(|c| &c.login_failed),
            sum(|c| &c.pipeline_paused),
        );
    }
    out
}

/// Every user's traffic summed over shards, by user name. Each shard's table is locked only
/// while its entries are added in.
pub fn merged_users(shards: &[&MysqlShardStats]) -> BTreeMap<Vec<u8>, UserStats> {
    let mut merged: BTreeMap<Vec<u8>, UserStats> = BTreeMap::new();
    for s in shards {
        let map = s.users.lock().unwrap_or_else(|e| e.into_inner());
        for (user, st) in map.iter() {
            merged.entry(user.to_vec()).or_default().merge(st);
        }
    }
    merged
}

/// A user name as one whitespace-free column (the anonymous user is `(anonymous)`).
pub fn display_user(user: &[u8]) -> String {
    if user.is_empty() {
        return "(anonymous)".into();
    }
    String::from_utf8_lossy(user).replace(char::is_whitespace, "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mysql::com;

    #[test]
    fn accounts_fold_per_user_and_merge_across_shards() {
        let shards = [MysqlShardStats::new(), MysqlShardStats::new()];
        let mut a = ConnAccount::default();
        a.bytes_out(100); // greeting before the user is known
        a.bytes_in(50);
        a.login(b"sg_a");
        a.authenticated();
        a.command(com::QUERY);
        a.bytes_in(20);
        a.bytes_out(30);
        a.reply(&shards[0], true, 1500);
        a.command(com::QUERY);
        a.reply(&shards[0], false, 500);
        a.change_user(&shards[0], b"sg_b");
        a.command(com::STMT_EXECUTE);
        a.reply(&shards[0], true, 1000);
        let mut b = ConnAccount::default();
        b.login(b"sg_a");
        b.authenticated();
        b.command(com::PING);
        b.reply(&shards[1], true, 10);
        b.bytes_in(1);
        b.flush(&shards[1], None);
        let mut c = ConnAccount::default();
        c.bytes_in(3);
        c.flush(&shards[1], None);
        shards[0].front("db").accepted.add(2);
        shards[1].front("db").accepted.add(1);

        let text = render(&[&shards[0], &shards[1]], &["db".into()]);
        let line = |u: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{u} ")))
                .unwrap_or_else(|| panic!("{u}: {text}"))
                .to_string()
        };
        let a_line = line("sg_a");
        let f: Vec<&str> = a_line.split(' ').collect();
        assert_eq!(&f[..6], &["sg_a", "2", "3", "1", "71", "130"], "{text}");
        assert_eq!(f[6], "2.010");
        assert_eq!(f[14], "query=2,ping=1");
        let b_line = line("sg_b");
        assert!(b_line.starts_with("sg_b 1 1 0 0 0 1.000 1.000 "), "{text}");
        assert!(b_line.ends_with(" stmt_execute=1"), "{text}");
        assert!(
            line("(unknown)").starts_with("(unknown) 0 0 0 3 0 "),
            "{text}"
        );
        assert!(text.contains("frontend db active=0 accepted=3 "), "{text}");
    }

    #[test]
    fn users_are_bounded() {
        let s = MysqlShardStats::new();
        for i in 0..MAX_USERS + 10 {
            let mut a = ConnAccount::default();
            a.login(format!("u{i}").as_bytes());
            a.authenticated();
            a.flush(&s, None);
        }
        let snap = s.users();
        assert_eq!(snap.len(), MAX_USERS + 1);
        let other = snap.iter().find(|(k, _)| k == b"(other)").unwrap();
        assert_eq!(other.1.connections, 10);
    }

    #[test]
    fn refused_names_are_never_users() {
        let s = MysqlShardStats::new();
        for i in 0..MAX_USERS + 10 {
            let mut a = ConnAccount::default();
            a.bytes_out(90);
            a.login(format!("bogus{i}").as_bytes());
            a.bytes_in(60);
            a.login_failed();
            a.flush(&s, None);
        }
        let mut a = ConnAccount::default();
        a.login(b"real");
        a.authenticated();
        a.flush(&s, None);
        let snap = s.users();
        let names: Vec<&[u8]> = snap.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let unknown = &snap.iter().find(|(k, _)| k == UNKNOWN_USER).unwrap().1;
        assert_eq!(unknown.login_failures, MAX_USERS as u64 + 10);
        assert_eq!(unknown.connections, 0);
        let real = &snap.iter().find(|(k, _)| k == b"real").unwrap().1;
        assert_eq!(real.connections, 1);
    }
}
