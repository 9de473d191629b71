//! One shard's idle server connections for one terminating frontend, the per-user gauges
//! every shard shares (client and server connections, for `max_connections` and
//! `max_server_connections`), and what the replication monitor publishes per server.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::MysqlPooled;
use crate::proto::mysql::auth::SESSION_CAPS;
use crate::proto::mysql::session_track::Gtid;

use super::conn::ServerConn;

/// A user's connections, all shards: atomics touched when a connection opens or closes,
/// never per command.
#[derive(Debug, Default)]
pub struct UserGauge {
    pub clients: AtomicU64,
    pub servers: AtomicU64,
}

impl UserGauge {
    /// Count one more against `max` (`None`: no bound); false (and nothing counted) when the
    /// bound is reached.
    pub fn try_add(counter: &AtomicU64, max: Option<u64>) -> bool {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        if max.is_some_and(|m| n >= m) {
            counter.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// What the replication monitor last saw on a server (every shard reads it).
#[derive(Debug)]
pub struct ReplState {
    /// `Seconds_Behind_Master` in ms; `u64::MAX`: not replicating, or not known.
    pub lag_ms: AtomicU64,
    /// When it was last read (ms, process clock; 0: never).
    pub checked_ms: AtomicU64,
    /// `@@gtid_slave_pos` (replicas) or `@@gtid_binlog_pos` (primaries).
    pub pos: ArcSwap<Vec<Gtid>>,
}

impl Default for ReplState {
    fn default() -> Self {
        ReplState {
            lag_ms: AtomicU64::new(u64::MAX),
            checked_ms: AtomicU64::new(0),
            pos: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl ReplState {
    /// May this replica take reads now? Replication runs, the last check is recent
    /// (`stale_ms`), and the lag is within `max_lag_ms` (`None`: any).
    pub fn readable(&self, now_ms: u64, stale_ms: u64, max_lag_ms: Option<u64>) -> bool {
        let lag = self.lag_ms.load(Ordering::Relaxed);
        let checked = self.checked_ms.load(Ordering::Relaxed);
        lag != u64::MAX
            && checked != 0
            && now_ms.saturating_sub(checked) <= stale_ms
            && max_lag_ms.is_none_or(|m| lag <= m)
    }

    /// Has the monitor seen this GTID applied here?
    pub fn has(&self, g: &Gtid) -> bool {
        g.applied_in(&self.pos.load())
    }
}

/// What a session needs of an idle connection.
pub struct Key<'a> {
    pub user: usize,
    /// The client's capabilities with shardgate.
    pub caps: u64,
    pub charset: u8,
    pub schema: &'a [u8],
}

/// This shard's idle server connections of one terminating frontend.
pub struct ShardPool {
    pub conf: Arc<MysqlPooled>,
    /// Per `conf.users` entry.
    pub gauges: Vec<Arc<UserGauge>>,
    /// Per `conf.users` entry: its server connections on this shard.
    pub local: Vec<std::rc::Rc<Cell<u64>>>,
    /// This shard's part of each user's max_server_connections: `max / shards`, the remainder
    /// going to the first shards, at least 1 (connections are per shard, so a bound shared
    /// freely would let one shard's idle connections starve another's sessions).
    shard: usize,
    shards: usize,
    idle: RefCell<Vec<ServerConn>>,
    /// The version string of the last greeting a server sent (shown in ours).
    pub version: RefCell<Vec<u8>>,
    next_id: Cell<u32>,
    /// Rotates reads over the usable replicas.
    pub next_replica: Cell<usize>,
    /// Sessions waiting for a connection to come back (their user is at
    /// max_server_connections), oldest first: (user, ticket, waker). A returned connection
    /// wakes the oldest waiter of its user only, and a session that arrives while others of
    /// its user wait queues behind them, so waits are served in order.
    waiters: RefCell<std::collections::VecDeque<(usize, u64, Option<std::task::Waker>)>>,
    next_ticket: Cell<u64>,
}

/// The version shardgate announces before it has seen a server's.
const DEFAULT_VERSION: &[u8] = b"5.5.5-10.11.0-MariaDB-shardgate";

impl ShardPool {
    pub fn new(
        conf: Arc<MysqlPooled>,
        gauges: Vec<Arc<UserGauge>>,
        shard: usize,
        shards: usize,
    ) -> ShardPool {
        ShardPool {
            local: gauges.iter().map(|_| Default::default()).collect(),
            shard,
            shards: shards.max(1),
            conf,
            gauges,
            idle: RefCell::new(Vec::new()),
            version: RefCell::new(DEFAULT_VERSION.to_vec()),
            // Connection ids shown to clients: distinct per shard, not server ids.
            next_id: Cell::new((shard as u32) << 24 | 1),
            next_replica: Cell::new(0),
            waiters: RefCell::new(std::collections::VecDeque::new()),
            next_ticket: Cell::new(1),
        }
    }

    /// This shard's part of a bound of `max` over all shards.
    pub fn share(&self, max: u64) -> u64 {
        let n = self.shards as u64;
        let extra = u64::from((self.shard as u64) < max % n);
        (max / n + extra).max(1)
    }

    /// Count one more server connection of `user` if its share of `max` allows.
    pub fn try_place(&self, user: usize, max: Option<u64>) -> bool {
        let local = &self.local[user];
        if max.is_some_and(|m| local.get() >= self.share(m)) {
            return false;
        }
        local.set(local.get() + 1);
        self.gauges[user].servers.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub fn connection_id(&self) -> u32 {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        id
    }

    /// An idle connection to one of `servers` for this user, capabilities and character set;
    /// best one with the session's schema already, then one whose schema `COM_INIT_DB` can
    /// change, then any (the caller unsets its schema with COM_CHANGE_USER). Connections idle
    /// past `idle_ms` are closed on the way.
    pub fn take(
        &self,
        servers: &[usize],
        key: &Key<'_>,
        now_ms: u64,
        idle_ms: u64,
    ) -> Option<ServerConn> {
        let Key {
            user,
            caps,
            charset,
            schema,
        } = *key;
        let mut idle = self.idle.borrow_mut();
        idle.retain(|c| now_ms.saturating_sub(c.idle_since_ms) < idle_ms);
        let fits = |c: &ServerConn| {
            c.user == user
                && c.charset == charset
                && (c.caps & SESSION_CAPS) == (caps & SESSION_CAPS & c.server_caps)
                && servers.contains(&c.server)
        };
        // 0: the same schema; 1: INIT_DB makes it so; 2: its schema must be unset.
        let cost = |c: &ServerConn| match &c.schema {
            Some(s) if s == schema => 0,
            _ if !schema.is_empty() => 1,
            _ => 2,
        };
        // Newest first among the cheapest: a recently used connection is the least likely to
        // have been closed by the server's wait_timeout.
        let pos = idle
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, c)| fits(c))
            .min_by_key(|(_, c)| cost(c))
            .map(|(i, _)| i)?;
        Some(idle.swap_remove(pos))
    }

    /// Keep an idle clean connection (at most `max_per_server` per server; beyond, it closes).
    pub fn put(&self, mut conn: ServerConn, now_ms: u64, max_per_server: usize) {
        let mut idle = self.idle.borrow_mut();
        if idle.iter().filter(|c| c.server == conn.server).count() >= max_per_server {
            return;
        }
        let user = conn.user;
        conn.idle_since_ms = now_ms;
        idle.push(conn);
        drop(idle);
        self.wake_first(user);
    }

    fn wake_first(&self, user: usize) {
        let mut w = self.waiters.borrow_mut();
        if let Some(e) = w.iter_mut().find(|e| e.0 == user) {
            if let Some(waker) = e.2.take() {
                waker.wake();
            }
        }
    }

    /// May this session try for a connection now: nobody of its user waits, or it is the
    /// oldest waiter (`ticket` 0: not queued).
    pub fn my_turn(&self, user: usize, ticket: u64) -> bool {
        self.waiters
            .borrow()
            .iter()
            .find(|e| e.0 == user)
            .is_none_or(|e| e.1 == ticket)
    }

    /// Join the queue of `user`; the ticket to pass to [`Self::wait_turn`] and [`Self::leave`].
    pub fn enqueue(&self, user: usize) -> u64 {
        let t = self.next_ticket.get();
        self.next_ticket.set(t + 1);
        self.waiters.borrow_mut().push_back((user, t, None));
        t
    }

    /// Leave the queue (served, or given up); the next waiter of the user may try.
    pub fn leave(&self, user: usize, ticket: u64) {
        let mut w = self.waiters.borrow_mut();
        let head = w.iter().find(|e| e.0 == user).map(|e| e.1) == Some(ticket);
        // Tickets grow, so the queue is sorted by ticket: found in log n, and the one that
        // leaves is nearly always at the front (served), where removing is O(1).
        if let Ok(i) = w.binary_search_by_key(&ticket, |e| e.1) {
            w.remove(i);
        }
        drop(w);
        if head {
            self.wake_first(user);
        }
    }

    /// Wait until woken by a returned connection, or `most` passes (one released on another
    /// shard is only seen then).
    pub async fn wait_turn(&self, ticket: u64, most: std::time::Duration) {
        let mut registered = false;
        let wait = std::future::poll_fn(|cx| {
            if registered {
                return std::task::Poll::Ready(());
            }
            registered = true;
            let mut w = self.waiters.borrow_mut();
            if let Ok(i) = w.binary_search_by_key(&ticket, |e| e.1) {
                w[i].2 = Some(cx.waker().clone());
            }
            std::task::Poll::Pending
        });
        let _ = crate::rt::timeout(most, wait).await;
    }

    /// Close this shard's oldest idle connection of `user` (one that did not fit a session
    /// of the user waiting at its max_server_connections); false when there is none.
    pub fn close_one_of(&self, user: usize) -> bool {
        let mut idle = self.idle.borrow_mut();
        match idle.iter().position(|c| c.user == user) {
            Some(i) => {
                drop(idle.remove(i));
                true
            }
            None => false,
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MysqlPooled, ReadYourWrites};
    use std::time::Duration;

    fn pool() -> ShardPool {
        let conf = Arc::new(MysqlPooled {
            multiplex: true,
            split: false,
            read_your_writes: ReadYourWrites::Wait,
            read_your_writes_timeout: Duration::from_secs(1),
            monitor: None,
            users: Vec::new(),
            routes: Vec::new(),
        });
        ShardPool::new(conf, Vec::new(), 0, 1)
    }

    #[test]
    fn waits_are_served_in_order_per_user() {
        let p = pool();
        // Nobody waits: anyone may try.
        assert!(p.my_turn(0, 0));
        let a = p.enqueue(0);
        let b = p.enqueue(0);
        let other = p.enqueue(1);
        // A newcomer of user 0 does not pass the queue; the oldest waiter may try.
        assert!(!p.my_turn(0, 0));
        assert!(p.my_turn(0, a));
        assert!(!p.my_turn(0, b));
        // Another user's queue is its own.
        assert!(p.my_turn(1, other));
        p.leave(0, a);
        assert!(p.my_turn(0, b));
        // Leaving from the middle (a timeout) keeps the order of the rest.
        let c = p.enqueue(0);
        let d = p.enqueue(0);
        p.leave(0, c);
        assert!(p.my_turn(0, b) && !p.my_turn(0, d));
        p.leave(0, b);
        assert!(p.my_turn(0, d));
        p.leave(0, d);
        p.leave(1, other);
        assert!(p.my_turn(0, 0) && p.my_turn(1, 0));
    }

    #[test]
    fn max_server_connections_is_shared_out_exactly() {
        let mk = |shard, shards| {
            let conf = pool().conf.clone();
            ShardPool::new(conf, Vec::new(), shard, shards)
        };
        for (max, shards) in [(4u64, 2usize), (5, 2), (32, 3), (1, 1), (7, 7)] {
            let total: u64 = (0..shards).map(|s| mk(s, shards).share(max)).sum();
            assert_eq!(total, max, "max {max} over {shards} shards");
        }
        // Fewer places than shards: every shard still gets one.
        assert_eq!(mk(1, 2).share(1), 1);
    }

    #[test]
    fn replica_readable_only_when_checked_recently_and_within_lag() {
        let r = ReplState::default();
        assert!(!r.readable(10_000, 5_000, None), "never checked");
        r.checked_ms.store(9_000, Ordering::Relaxed);
        r.lag_ms.store(2_000, Ordering::Relaxed);
        assert!(r.readable(10_000, 5_000, None));
        assert!(r.readable(10_000, 5_000, Some(2_000)));
        assert!(!r.readable(10_000, 5_000, Some(1_999)));
        assert!(!r.readable(20_000, 5_000, None), "stale check");
        r.lag_ms.store(u64::MAX, Ordering::Relaxed);
        assert!(!r.readable(10_000, 5_000, None), "not replicating");
    }
}
