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
    idle: RefCell<Vec<ServerConn>>,
    /// The version string of the last greeting a server sent (shown in ours).
    pub version: RefCell<Vec<u8>>,
    next_id: Cell<u32>,
    /// Rotates reads over the usable replicas.
    pub next_replica: Cell<usize>,
    /// Sessions waiting for a connection to come back (their user is at
    /// max_server_connections): woken by every `put` on this shard.
    waiters: RefCell<Vec<std::task::Waker>>,
}

/// The version shardgate announces before it has seen a server's.
const DEFAULT_VERSION: &[u8] = b"5.5.5-10.11.0-MariaDB-shardgate";

impl ShardPool {
    pub fn new(conf: Arc<MysqlPooled>, gauges: Vec<Arc<UserGauge>>, shard: usize) -> ShardPool {
        ShardPool {
            conf,
            gauges,
            idle: RefCell::new(Vec::new()),
            version: RefCell::new(DEFAULT_VERSION.to_vec()),
            // Connection ids shown to clients: distinct per shard, not server ids.
            next_id: Cell::new((shard as u32) << 24 | 1),
            next_replica: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
        }
    }

    pub fn connection_id(&self) -> u32 {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        id
    }

    /// An idle connection to one of `servers` for this user, capabilities and character set,
    /// whose schema can be made `schema` (a connection with no schema serves only sessions
    /// with none, since no command unsets a schema). Connections idle past `idle_ms` are
    /// closed on the way.
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
        // Newest first: a recently used connection is the least likely to have been closed
        // by the server's wait_timeout.
        let pos = idle.iter().rposition(|c| {
            c.user == user
                && c.charset == charset
                && (c.caps & SESSION_CAPS) == (caps & SESSION_CAPS & c.server_caps)
                && servers.contains(&c.server)
                && match &c.schema {
                    Some(s) => s.is_empty() == schema.is_empty(),
                    None => !schema.is_empty(),
                }
        })?;
        Some(idle.swap_remove(pos))
    }

    /// Keep an idle clean connection (at most `max_per_server` per server; beyond, it closes).
    pub fn put(&self, mut conn: ServerConn, now_ms: u64, max_per_server: usize) {
        let mut idle = self.idle.borrow_mut();
        if idle.iter().filter(|c| c.server == conn.server).count() >= max_per_server {
            return;
        }
        conn.idle_since_ms = now_ms;
        idle.push(conn);
        drop(idle);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Wait until a connection comes back to this shard's pool, or `most` passes (one
    /// released on another shard is only seen then).
    pub async fn wait_put(&self, most: std::time::Duration) {
        let mut registered = false;
        let wait = std::future::poll_fn(|cx| {
            if registered {
                return std::task::Poll::Ready(());
            }
            registered = true;
            self.waiters.borrow_mut().push(cx.waker().clone());
            std::task::Poll::Pending
        });
        let _ = crate::rt::timeout(most, wait).await;
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }
}
