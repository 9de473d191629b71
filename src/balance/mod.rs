//! Server selection. A pool's servers live in [`PoolShared`], built once and shared by every
//! shard through an `Arc`: health (`down_until`), admin state and busyness are atomics that a
//! shard reads on the request path without any lock. Busyness is kept as one counter per shard
//! per server, each on its own cache line, written only by its shard and summed on read; a sum
//! is therefore as fresh as the last store of each shard (nanoseconds on one machine), never
//! older than the request that changed it.
//!
//! Each algorithm lives in its own file behind [`Select`], which yields the usable servers in
//! preference order so the caller can walk past a server whose connect fails.

mod by_requests;
mod by_traffic;
pub mod hash;
mod least_requests;
mod least_time;
mod p2c;
mod round_robin;
pub mod sticky;
pub mod sticky_table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{Balance, Pool, Server};

pub use by_requests::{ByRequests, Metric};
pub use by_traffic::ByTraffic;
pub use hash::{ConsistentHash, Ring};
pub use least_requests::LeastRequests;
pub use least_time::LeastTime;
pub use p2c::P2c;
pub use round_robin::SmoothWeighted;

/// A value alone on its cache line, so that shards writing neighbouring counters do not
/// invalidate each other's lines.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct Padded<T>(pub T);

/// A server's administrative state, set by `set server POOL/SRV state ...` (and by
/// `disable`/`enable server`, which are `maint`/`ready`), or by its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Admin {
    /// Takes new requests.
    Ready = 0,
    /// Takes only requests that are sticky to it (HAProxy `drain`).
    Drain = 1,
    /// Takes nothing.
    Maint = 2,
}

impl Admin {
    fn from_u8(v: u8) -> Admin {
        match v {
            0 => Admin::Ready,
            1 => Admin::Drain,
            _ => Admin::Maint,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        }
    }
}

/// What the active checker last concluded (rise/fall applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Active {
    /// No active check configured, or none concluded yet: counts as up.
    Unchecked = 0,
    Up = 1,
    Down = 2,
}

impl Active {
    fn from_u8(v: u8) -> Active {
        match v {
            0 => Active::Unchecked,
            1 => Active::Up,
            _ => Active::Down,
        }
    }

    /// The word `show servers` prints in its `health` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Active::Unchecked => "unchecked",
            Active::Up => "up",
            Active::Down => "down",
        }
    }
}

/// What one shard counts for one server; only that shard writes it (plain load + store).
#[derive(Debug, Default)]
pub struct ShardCounts {
    /// Requests (HTTP) or commands (MySQL) in flight.
    pub inflight: AtomicU32,
    /// Requests sent to the server since start.
    pub requests: AtomicU64,
    /// Bytes moved for the server (request in + response out) since start.
    pub bytes: AtomicU64,
    /// Requests of this shard waiting for a connection slot to the server.
    pub queued: AtomicU32,
    /// Responses, bytes each way, retries, connect failures, latencies (HTTP).
    pub metrics: crate::metrics::ExchangeMetrics,
}

fn bump32(a: &AtomicU32, by: u32) {
    a.store(
        a.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

fn bump64(a: &AtomicU64, by: u64) {
    a.store(
        a.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// One backend server as every shard sees it. Every field a shard reads on the request path
/// is an atomic; health comes from three independent sources that are combined, never
/// overwritten by one another:
/// - `admin` (operator or agent): ready / drain / maint;
/// - `active` (the pool's checker, rise/fall applied);
/// - `down_until` (passive: a failed connect takes the server out for `down_time`).
///
/// A passive success clears only `down_until`, so it never overrides an active failure.
#[derive(Debug)]
pub struct ServerShared {
    pub name: String,
    pub addr: SocketAddr,
    pub route: String,
    pub backup: bool,
    /// Connections in use across all shards, at most (`None`: only the per-shard bound).
    pub max_connections: Option<u32>,
    pub agent_port: Option<u16>,
    /// Connections to it start with a PROXY header.
    pub send_proxy: Option<crate::config::ProxyVersion>,
    /// A MySQL replica (reads only).
    pub replica: bool,
    /// What the MySQL replication monitor last saw here.
    pub repl: crate::proxy::mysql::ReplState,
    /// Given as `host:port` and not resolved yet: takes nothing.
    pub unresolved: bool,
    /// The weight the config file gave (the last file applied to this record); a reload
    /// applies the file's weight only when it differs from this, so a `set server ... weight`
    /// survives reloads of an unrelated change.
    conf_weight: AtomicU32,
    /// Totals of the earlier records of this server (before a change that needed a new
    /// record, e.g. a new address), taken when this one replaced them: the counters go on
    /// from there. A snapshot, not a link, so no chain of records builds up.
    base_requests: u64,
    base_bytes: u64,
    /// The weight in force (`set server ... weight N`), 0..=1000; 0 takes no new requests.
    weight: AtomicU32,
    /// Percentage of `weight` the agent reports (100 when there is no agent).
    agent_pct: AtomicU32,
    admin: AtomicU8,
    active: AtomicU8,
    /// The server's agent said `down`, `fail` or `stopped` (HAProxy agent-check); its `up`
    /// or `ready` clears it. A fourth source, combined like the others.
    agent_down: AtomicBool,
    /// The admin state was set to drain or maint by an operator (see `set_admin_by_operator`).
    operator_admin: AtomicBool,
    /// Milliseconds since the process clock's epoch until which the server is skipped; 0 = up.
    down_until: AtomicU64,
    /// When the server last came back up (ms, process clock), for slow start; 0 = not ramping.
    up_since: AtomicU64,
    /// Peak-EWMA of the time to the response head, in microseconds (0 = no sample yet).
    pub ewma_us: AtomicU64,
    /// Connections in use to this server, all shards (counted only with `max_connections`).
    pub conns: AtomicU32,
    /// Requests waiting for one of those connections, all shards (`max_connections` only).
    pub queued: AtomicU32,
    per_shard: Box<[Padded<ShardCounts>]>,
    /// The checker's last results, for `show servers`; written by the checker thread and read
    /// by the control plane, never touched on the request path.
    check: Mutex<Option<crate::health::CheckInfo>>,
}

impl ServerShared {
    pub fn new(s: &Server, shards: usize) -> Self {
        ServerShared {
            name: s.name.clone(),
            addr: s.addr,
            route: s.route.clone(),
            backup: s.backup,
            max_connections: s.max_connections,
            agent_port: s.agent_port,
            send_proxy: s.send_proxy,
            replica: s.replica,
            repl: Default::default(),
            unresolved: s.host.is_some() && s.addr.ip().is_unspecified(),
            conf_weight: AtomicU32::new(s.weight),
            base_requests: 0,
            base_bytes: 0,
            weight: AtomicU32::new(s.weight.max(1)),
            agent_pct: AtomicU32::new(100),
            admin: AtomicU8::new(Admin::Ready as u8),
            active: AtomicU8::new(Active::Unchecked as u8),
            agent_down: AtomicBool::new(false),
            operator_admin: AtomicBool::new(false),
            down_until: AtomicU64::new(0),
            up_since: AtomicU64::new(0),
            ewma_us: AtomicU64::new(0),
            conns: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            per_shard: (0..shards.max(1)).map(|_| Padded::default()).collect(),
            check: Mutex::new(None),
        }
    }

    /// May take a new (not sticky) request now: ready, not actively or passively down, and a
    /// weight above zero.
    pub fn is_usable(&self, now_ms: u64) -> bool {
        self.admin() == Admin::Ready && self.weight_now() > 0 && self.is_alive(now_ms)
    }

    /// May take a request that is sticky to it: as [`Self::is_usable`], but a draining server
    /// or one weighted to zero still serves its sticky clients.
    pub fn is_sticky_usable(&self, now_ms: u64) -> bool {
        self.admin() != Admin::Maint && self.is_alive(now_ms)
    }

    /// Neither the checker, the agent nor a recent failed connect says it is down.
    pub fn is_alive(&self, now_ms: u64) -> bool {
        !self.unresolved
            && self.active() != Active::Down
            && !self.agent_down()
            && !self.is_down(now_ms)
    }

    /// Inside a passive down period.
    pub fn is_down(&self, now_ms: u64) -> bool {
        self.down_until.load(Ordering::Relaxed) > now_ms
    }

    /// Mark the server down until `now_ms + down_ms`. Returns true when it was up before, so
    /// the caller logs the transition once rather than once per failing request.
    pub fn mark_down(&self, now_ms: u64, down_ms: u64) -> bool {
        let until = now_ms + down_ms.max(1);
        let prev = self.down_until.swap(until, Ordering::Relaxed);
        prev <= now_ms
    }

    /// Clear a passive down mark (a successful connect saw it alive). Returns true when it was
    /// marked; slow start begins then.
    pub fn mark_up(&self) -> bool {
        let was = self.down_until.swap(0, Ordering::Relaxed) != 0;
        if was {
            self.start_ramp();
        }
        was
    }

    pub fn admin(&self) -> Admin {
        Admin::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// Set by an operator (`set server`, `disable`/`enable server`): an agent may not undo a
    /// `drain` or `maint` set this way.
    pub fn set_admin_by_operator(&self, a: Admin) {
        self.operator_admin
            .store(a != Admin::Ready, Ordering::Relaxed);
        self.set_admin(a);
    }

    /// The admin state was last set to drain or maint by an operator.
    pub fn operator_admin(&self) -> bool {
        self.operator_admin.load(Ordering::Relaxed)
    }

    pub fn set_admin(&self, a: Admin) {
        let prev = self.admin.swap(a as u8, Ordering::Relaxed);
        if prev != Admin::Ready as u8 && a == Admin::Ready {
            self.start_ramp();
        }
    }

    pub fn active(&self) -> Active {
        Active::from_u8(self.active.load(Ordering::Relaxed))
    }

    /// Set by the pool's checker only. Returns the previous state.
    pub fn set_active(&self, a: Active) -> Active {
        let prev = Active::from_u8(self.active.swap(a as u8, Ordering::Relaxed));
        if prev == Active::Down && a == Active::Up {
            self.start_ramp();
        }
        prev
    }

    /// The agent last said `down`, `fail` or `stopped`.
    pub fn agent_down(&self) -> bool {
        self.agent_down.load(Ordering::Relaxed)
    }

    /// Set by the agent check only. Returns the previous value; up again starts slow start.
    pub fn set_agent_down(&self, down: bool) -> bool {
        let prev = self.agent_down.swap(down, Ordering::Relaxed);
        if prev && !down {
            self.start_ramp();
        }
        prev
    }

    /// What the active checker (and the agent) last found, for `show servers`: `None` when
    /// the pool has no `[pool.NAME.health]` or no check has finished yet. See
    /// [`crate::health::CheckInfo`] for the fields (health word, last check time, reason,
    /// consecutive count, duration, agent state). Takes a mutex only the checker thread and
    /// the control plane use.
    pub fn check_info(&self) -> Option<crate::health::CheckInfo> {
        self.check.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Update the check record (the checker thread only).
    pub(crate) fn update_check_info(&self, f: impl FnOnce(&mut crate::health::CheckInfo)) {
        let mut g = self.check.lock().unwrap_or_else(|e| e.into_inner());
        f(g.get_or_insert_with(Default::default));
    }

    /// The configured (or `set server ... weight`) weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, w: u32) {
        self.weight.store(w, Ordering::Relaxed);
    }

    pub fn agent_pct(&self) -> u32 {
        self.agent_pct.load(Ordering::Relaxed)
    }

    pub fn set_agent_pct(&self, pct: u32) {
        self.agent_pct.store(pct, Ordering::Relaxed);
    }

    /// Weight after the agent's percentage, before slow start.
    pub fn weight_now(&self) -> u32 {
        let w = self.weight() as u64 * self.agent_pct() as u64 / 100;
        if w == 0 && self.weight() > 0 && self.agent_pct() > 0 {
            1
        } else {
            w as u32
        }
    }

    /// The weight balancers use: [`Self::weight_now`], ramped from 1 while the server is in
    /// its slow start (`slow_start_ms` after it came back up).
    pub fn effective_weight(&self, now_ms: u64, slow_start_ms: u64) -> u32 {
        let w = self.weight_now();
        let since = self.up_since.load(Ordering::Relaxed);
        if slow_start_ms == 0 || since == 0 || w == 0 {
            return w;
        }
        let elapsed = now_ms.saturating_sub(since);
        if elapsed >= slow_start_ms {
            // Done ramping; later readers skip the arithmetic.
            self.up_since.store(0, Ordering::Relaxed);
            return w;
        }
        ((w as u64 * elapsed / slow_start_ms) as u32).max(1)
    }

    /// In slow start now.
    #[cfg(test)]
    pub fn ramping(&self, now_ms: u64, slow_start_ms: u64) -> bool {
        let since = self.up_since.load(Ordering::Relaxed);
        since != 0 && now_ms.saturating_sub(since) < slow_start_ms
    }

    /// Begin slow start now (the server just came back).
    fn start_ramp(&self) {
        self.up_since
            .store(crate::rt::now_ms().max(1), Ordering::Relaxed);
    }

    /// In-flight count summed over every shard.
    pub fn inflight(&self) -> u32 {
        self.per_shard
            .iter()
            .map(|c| c.0.inflight.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests sent since start, all shards (and every earlier record of the server).
    pub fn requests(&self) -> u64 {
        self.per_shard
            .iter()
            .map(|c| c.0.requests.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.base_requests
    }

    /// Bytes moved since start, all shards (and every earlier record of the server).
    pub fn bytes(&self) -> u64 {
        self.per_shard
            .iter()
            .map(|c| c.0.bytes.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.base_bytes
    }

    /// What the file says of this server is what this record was built from: the same
    /// address, route and bounds (the weight may differ; it changes in place).
    pub fn same_identity(&self, s: &Server) -> bool {
        self.addr == s.addr
            && self.route == s.route
            && self.backup == s.backup
            && self.max_connections == s.max_connections
            && self.agent_port == s.agent_port
            && self.send_proxy == s.send_proxy
            && self.replica == s.replica
    }

    /// The record for a server whose identity changed (`same_identity` false): new address
    /// and bounds, health unknown again, but the operator's admin state and the totals kept.
    pub fn succeed(old: &Arc<ServerShared>, s: &Server, shards: usize) -> ServerShared {
        let mut new = ServerShared::new(s, shards);
        new.base_requests = old.requests();
        new.base_bytes = old.bytes();
        new.admin
            .store(old.admin.load(Ordering::Relaxed), Ordering::Relaxed);
        new.operator_admin
            .store(old.operator_admin(), Ordering::Relaxed);
        if old.conf_weight.load(Ordering::Relaxed) == s.weight {
            new.weight.store(old.weight(), Ordering::Relaxed);
        }
        new
    }

    /// The weight the config file last gave this record.
    pub fn file_weight(&self) -> u32 {
        self.conf_weight.load(Ordering::Relaxed)
    }

    /// Apply a reloaded file's weight, unless it is the one this record already had from the
    /// file (an operator's `set server ... weight` then stays).
    pub fn reload_weight(&self, file_weight: u32) -> bool {
        // Remember the file's weight as applied: the next reload of the same file must not
        // apply it again over a weight an operator set since.
        if self.conf_weight.swap(file_weight, Ordering::Relaxed) == file_weight {
            return false;
        }
        self.set_weight(file_weight.max(1));
        true
    }

    /// Add totals carried over from the process this one replaced (binary upgrade), on
    /// `shard`'s thread.
    pub fn seed(&self, shard: usize, requests: u64, bytes: u64) {
        let c = &self.per_shard[shard.min(self.per_shard.len() - 1)].0;
        bump64(&c.requests, requests);
        bump64(&c.bytes, bytes);
    }

    /// Count one more in flight on `shard`. Only that shard writes its slot, so a plain
    /// load + store is enough (no read-modify-write across cores).
    pub fn begin(&self, shard: usize) {
        let c = &self.per_shard[shard].0;
        bump32(&c.inflight, 1);
        bump64(&c.requests, 1);
    }

    pub fn end(&self, shard: usize) {
        let slot = &self.per_shard[shard].0.inflight;
        slot.store(
            slot.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }

    /// Requests waiting for a connection to this server: this shard's slots
    /// (`max_connections_per_server`) and the server's own `max_connections`, all shards.
    pub fn queue(&self) -> u32 {
        let local: u32 = self
            .per_shard
            .iter()
            .map(|c| c.0.queued.load(Ordering::Relaxed))
            .sum();
        local + self.queued.load(Ordering::Relaxed)
    }

    /// Count one request of `shard` waiting for a slot until the guard is dropped.
    pub fn waiting(&self, shard: usize) -> Waiting<'_> {
        bump32(&self.per_shard[shard].0.queued, 1);
        Waiting {
            server: self,
            shard,
        }
    }

    /// The server's state as `show servers` and the metrics name it: `maint`, `down`,
    /// `drain` (or weight 0), `up`.
    pub fn state_name(&self, now_ms: u64) -> &'static str {
        match self.admin() {
            Admin::Maint => "maint",
            _ if !self.is_alive(now_ms) => "down",
            Admin::Drain => "drain",
            Admin::Ready if self.weight_now() == 0 => "drain",
            Admin::Ready => "up",
        }
    }

    /// `shard`'s metrics of this server (only that shard writes them).
    pub fn metrics(&self, shard: usize) -> &crate::metrics::ExchangeMetrics {
        &self.per_shard[shard.min(self.per_shard.len() - 1)]
            .0
            .metrics
    }

    /// Every shard's metrics of this server, for readers.
    pub fn all_metrics(&self) -> impl Iterator<Item = &crate::metrics::ExchangeMetrics> {
        self.per_shard.iter().map(|c| &c.0.metrics)
    }

    /// Count bytes moved for this server by `shard` (request and response, for `by_traffic`).
    pub fn add_bytes(&self, shard: usize, n: u64) {
        bump64(&self.per_shard[shard].0.bytes, n);
    }

    /// Fold one time-to-response-head sample into the peak-EWMA (`least_time`). Several
    /// shards may race on the store; a lost sample only delays the average by one step.
    pub fn observe_latency(&self, us: u64) {
        let old = self.ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 || us > old {
            // Peak: a slower sample is taken at once, a faster one decays in.
            us.max(1)
        } else {
            (old * 7 + us) / 8
        };
        self.ewma_us.store(new.max(1), Ordering::Relaxed);
    }

    /// Count one request in flight on `shard` until the returned guard is dropped, however the
    /// request ends.
    pub fn track(&self, shard: usize) -> InFlight<'_> {
        self.begin(shard);
        InFlight {
            server: self,
            shard,
        }
    }
}

/// A place in a server's own `max_connections` (all shards), taken by a MySQL session for its
/// lifetime and given back when dropped. Servers without the bound hand out empty places.
pub struct Place<'a>(Option<&'a ServerShared>);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            s.conns.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl ServerShared {
    /// Count one more connection in `conns` if that stays within `max_connections` (always,
    /// without the bound); the caller gives it back with a `fetch_sub`.
    pub fn try_take_conn(&self) -> bool {
        let max = self.max_connections.unwrap_or(u32::MAX);
        self.conns
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// A place within `max_connections`, or `None` when the server is full.
    pub fn take_place(&self) -> Option<Place<'_>> {
        if self.max_connections.is_none() {
            return Some(Place(None));
        }
        // Lazily: a `Place` built and dropped would give back a place never taken.
        self.try_take_conn().then(|| Place(Some(self)))
    }
}

/// One request counted as waiting for a slot (see [`ServerShared::waiting`]).
pub struct Waiting<'a> {
    server: &'a ServerShared,
    shard: usize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let q = &self.server.per_shard[self.shard].0.queued;
        q.store(
            q.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }
}

/// One request counted in its server's in-flight total (see [`ServerShared::track`]). A borrow,
/// not an `Arc`: taking it writes only the shard's own counter.
pub struct InFlight<'a> {
    server: &'a ServerShared,
    shard: usize,
}

impl InFlight<'_> {
    pub fn server(&self) -> &ServerShared {
        self.server
    }

    pub fn shard(&self) -> usize {
        self.shard
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.server.end(self.shard);
    }
}

/// A pool's servers, shared by all shards.
#[derive(Debug)]
pub struct PoolShared {
    pub name: String,
    pub balance: Balance,
    /// `slow_start` in milliseconds (0: none).
    pub slow_start_ms: u64,
    pub servers: Box<[Arc<ServerShared>]>,
    /// `[pool.NAME.sticky]`: the mode, the client-IP table, the counters.
    pub sticky: Option<Arc<sticky::StickyShared>>,
    /// `balance = "hash"`: the ring of server points (empty for other methods).
    pub ring: Ring,
}

impl PoolShared {
    pub fn new(pool: &Pool, shards: usize) -> Self {
        PoolShared {
            name: pool.name.clone(),
            balance: pool.balance,
            slow_start_ms: pool.slow_start.map_or(0, |d| d.as_millis() as u64),
            servers: pool
                .servers
                .iter()
                .map(|s| Arc::new(ServerShared::new(s, shards)))
                .collect(),
            sticky: pool
                .sticky
                .as_ref()
                .map(|st| Arc::new(sticky::StickyShared::new(st, shards))),
            ring: if pool.balance == Balance::Hash {
                Ring::new(&pool.servers)
            } else {
                Ring::default()
            },
        }
    }

    /// The pool for a new generation of the config, keeping what it can of `old` (the pool of
    /// the same name in the running generation): servers whose identity did not change keep
    /// their record (health, admin state, busyness, counters, idle connections on every
    /// shard); a changed server gets a successor record that carries its totals; the sticky
    /// state is kept when the servers and sticky settings are the same, else its table is
    /// carried over by server name. Returns the pool and the servers the file no longer has.
    pub fn next(
        pool: &Pool,
        shards: usize,
        old: &PoolShared,
    ) -> (PoolShared, Vec<Arc<ServerShared>>) {
        let mut fresh = PoolShared::new(pool, shards);
        for (i, s) in pool.servers.iter().enumerate() {
            let Some(prev) = old.servers.iter().find(|o| o.name == s.name) else {
                continue;
            };
            if prev.same_identity(s) {
                prev.reload_weight(s.weight);
                fresh.servers[i] = prev.clone();
            } else {
                fresh.servers[i] = Arc::new(ServerShared::succeed(prev, s, shards));
            }
        }
        let removed = old
            .servers
            .iter()
            .filter(|o| !pool.servers.iter().any(|s| s.name == o.name))
            .cloned()
            .collect();
        let same_names = old.servers.len() == fresh.servers.len()
            && old
                .servers
                .iter()
                .zip(fresh.servers.iter())
                .all(|(a, b)| a.name == b.name);
        if let (Some(was), Some(now)) = (&old.sticky, &fresh.sticky) {
            if was.conf == now.conf && same_names {
                fresh.sticky = Some(was.clone());
            } else if let (Some(from), Some(to)) = (&was.table, &now.table) {
                let now_s = sticky_table::IpTable::now_s(crate::rt::now_ms());
                from.entries(now_s, usize::MAX, &mut |e| {
                    let name = old.servers.get(e.server).map(|s| s.name.as_str());
                    if let Some(j) =
                        name.and_then(|n| fresh.servers.iter().position(|s| s.name == n))
                    {
                        to.set(e.key, j, now_s);
                    }
                });
            }
        }
        (fresh, removed)
    }

    pub fn server_index(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// The server whose sticky route is `route`.
    pub fn route_index(&self, route: &[u8]) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.route.as_bytes() == route)
    }

    /// Server `i`'s weight for balancing at `now_ms` (slow start applied).
    pub fn weight(&self, i: usize, now_ms: u64) -> u32 {
        self.servers[i].effective_weight(now_ms, self.slow_start_ms)
    }
}

/// What a balancer may look at for one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pick {
    pub now_ms: u64,
    /// `balance = "hash"`: the hash of the request's `hash_key` (0 when it has none).
    pub hash: u64,
    /// The server the request is sticky to, if any (tried first when it may take it).
    pub sticky: Option<usize>,
}

/// One balancing algorithm: given the pool and the indexes of the servers usable now, push
/// them onto `out` best first. `out` is cleared by the caller.
pub trait Select {
    fn order(&mut self, pool: &PoolShared, pick: &Pick, usable: &[usize], out: &mut Vec<usize>);
}

/// A shard's selector for one pool (shard-local state such as round-robin weights).
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(SmoothWeighted),
    LeastRequests(LeastRequests),
    ByRequests(ByRequests),
    ByTraffic(ByTraffic),
    LeastTime(LeastTime),
    P2c(P2c),
    Hash(ConsistentHash),
}

impl Balancer {
    pub fn new(pool: &PoolShared, shard: usize) -> Self {
        match pool.balance {
            Balance::RoundRobin => Balancer::RoundRobin(SmoothWeighted::new(pool.servers.len())),
            Balance::LeastRequests => Balancer::LeastRequests(LeastRequests::new(shard)),
            Balance::ByRequests => {
                Balancer::ByRequests(ByRequests::new(Metric::Requests, pool.servers.len(), shard))
            }
            Balance::ByTraffic => Balancer::ByTraffic(by_traffic::new(pool.servers.len(), shard)),
            Balance::LeastTime => Balancer::LeastTime(LeastTime::new(shard)),
            Balance::P2c => Balancer::P2c(P2c::new(shard)),
            Balance::Hash => Balancer::Hash(ConsistentHash::default()),
        }
    }

    /// Fill `out` with the servers to try, best first; empty when every server is down or
    /// disabled. The usable servers are the ready non-backup ones, or, when none is, the ready
    /// backups. A sticky target that may take the request comes first. `scratch` is reused to
    /// avoid allocating per request.
    pub fn candidates(
        &mut self,
        pool: &PoolShared,
        pick: &Pick,
        scratch: &mut Vec<usize>,
        out: &mut Vec<usize>,
    ) {
        scratch.clear();
        out.clear();
        let now = pick.now_ms;
        scratch.extend(
            (0..pool.servers.len())
                .filter(|&i| !pool.servers[i].backup && pool.servers[i].is_usable(now)),
        );
        if scratch.is_empty() {
            scratch.extend(
                (0..pool.servers.len())
                    .filter(|&i| pool.servers[i].backup && pool.servers[i].is_usable(now)),
            );
        }
        // A client stuck to a backup goes back to the primaries as soon as one is usable.
        let sticky = pick.sticky.filter(|&i| {
            i < pool.servers.len()
                && pool.servers[i].is_sticky_usable(now)
                && (!pool.servers[i].backup || scratch.iter().all(|&j| pool.servers[j].backup))
        });
        if let Some(t) = sticky {
            out.push(t);
        }
        if scratch.is_empty() {
            return;
        }
        match self {
            Balancer::RoundRobin(s) => s.order(pool, pick, scratch, out),
            Balancer::LeastRequests(s) => s.order(pool, pick, scratch, out),
            Balancer::ByRequests(s) | Balancer::ByTraffic(s) => s.order(pool, pick, scratch, out),
            Balancer::LeastTime(s) => s.order(pool, pick, scratch, out),
            Balancer::P2c(s) => s.order(pool, pick, scratch, out),
            Balancer::Hash(s) => s.order(pool, pick, scratch, out),
        }
        if let Some(t) = sticky {
            // The balancer's own order follows as the fallback, without the target twice.
            let mut seen = false;
            out.retain(|&i| {
                let dup = i == t && seen;
                seen |= i == t;
                !dup
            });
        }
    }
}
#[cfg(test)]
pub(crate) fn test_server(i: usize, weight: u32) -> Server {
    Server {
        name: format!("s{i}"),
        addr: ([127, 0, 0, 1], 1000 + i as u16).into(),
        host: None,
        weight,
        route: format!("r{i}"),
        backup: false,
        max_connections: None,
        agent_port: None,
        send_proxy: None,
        replica: false,
    }
}

#[cfg(test)]
pub(crate) fn test_pool(weights: &[u32], balance: Balance, shards: usize) -> PoolShared {
    PoolShared {
        name: "p".into(),
        balance,
        slow_start_ms: 0,
        servers: weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Arc::new(ServerShared::new(&test_server(i, w), shards)))
            .collect(),
        sticky: None,
        ring: Ring::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_servers_are_skipped_until_their_time_passes() {
        let pool = test_pool(&[1, 1], Balance::RoundRobin, 1);
        assert!(pool.servers[0].mark_down(1000, 500));
        assert!(
            !pool.servers[0].mark_down(1100, 500),
            "second mark is not a transition"
        );
        let mut b = Balancer::new(&pool, 0);
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        let at = |now_ms| Pick {
            now_ms,
            ..Pick::default()
        };
        b.candidates(&pool, &at(1200), &mut scratch, &mut out);
        assert_eq!(out, vec![1]);
        b.candidates(&pool, &at(1600), &mut scratch, &mut out);
        assert_eq!(out.len(), 2);
        pool.servers[1].set_admin(Admin::Maint);
        pool.servers[0].mark_down(2000, 10);
        b.candidates(&pool, &at(2005), &mut scratch, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn slow_start_ramps_the_weight_from_one_to_full() {
        let mut pool = test_pool(&[10, 10], Balance::RoundRobin, 1);
        pool.slow_start_ms = 10_000;
        let s = &pool.servers[0];
        assert_eq!(
            pool.weight(0, crate::rt::now_ms()),
            10,
            "never down: full weight"
        );
        s.set_admin(Admin::Maint);
        s.set_admin(Admin::Ready);
        let t0 = crate::rt::now_ms();
        assert!(s.ramping(t0, pool.slow_start_ms));
        let ramp: Vec<u32> = [0, 1000, 2500, 5000, 9999]
            .iter()
            .map(|&dt| pool.weight(0, t0 + dt))
            .collect();
        // Up to a millisecond of clock between the mark and t0.
        assert_eq!(ramp[0], 1, "{ramp:?}");
        assert!(ramp.windows(2).all(|w| w[0] <= w[1]), "{ramp:?}");
        assert!((4..=5).contains(&ramp[3]), "{ramp:?}");
        assert_eq!(pool.weight(0, t0 + 10_001), 10);
        assert!(!s.ramping(t0 + 10_001, pool.slow_start_ms));
        assert_eq!(pool.weight(1, t0), 10, "the other server is not ramping");
        // Every weighted method sees the ramp: by_requests gives the ramping server its share.
        s.set_admin(Admin::Maint);
        s.set_admin(Admin::Ready);
        let t0 = crate::rt::now_ms();
        let mut sel = ByRequests::new(Metric::Requests, 2, 0);
        let mut got = [0u32; 2];
        for _ in 0..110 {
            let mut out = Vec::new();
            let pick = Pick {
                now_ms: t0 + 1000,
                ..Pick::default()
            };
            sel.order(&pool, &pick, &[0, 1], &mut out);
            pool.servers[out[0]].begin(0);
            got[out[0]] += 1;
        }
        // Weight 1 against 10 a second into the ramp.
        assert!((9..=11).contains(&got[0]), "{got:?}");
    }

    /// A pool of `servers` balanced by `m`, every other key at its default.
    fn method_pool(m: Balance, servers: Vec<Server>, shards: usize) -> PoolShared {
        let defaults = crate::config::from_str(
            "[[http]]\nname = \"w\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"p\"\n\
             [pool.p]\nservers = [{ name = \"a\", addr = \"127.0.0.1:2\" }]\n",
            "<test>",
        )
        .unwrap()
        .pools[0]
            .clone();
        PoolShared::new(
            &Pool {
                balance: m,
                servers,
                ..defaults
            },
            shards,
        )
    }

    #[test]
    fn every_method_lists_each_usable_server_once_and_backups_only_when_needed() {
        let methods = [
            Balance::RoundRobin,
            Balance::LeastRequests,
            Balance::ByRequests,
            Balance::ByTraffic,
            Balance::LeastTime,
            Balance::P2c,
            Balance::Hash,
        ];
        for m in methods {
            let mut servers: Vec<Server> = (0..4).map(|i| test_server(i, i as u32 + 1)).collect();
            servers[3].backup = true;
            let pool = method_pool(m, servers, 2);
            let mut b = Balancer::new(&pool, 1);
            let (mut scratch, mut out) = (Vec::new(), Vec::new());
            for k in 0..50u64 {
                let pick = Pick {
                    now_ms: 5,
                    hash: hash::hash64(&k.to_le_bytes()),
                    sticky: None,
                };
                b.candidates(&pool, &pick, &mut scratch, &mut out);
                let mut sorted = out.clone();
                sorted.sort();
                assert_eq!(sorted, vec![0, 1, 2], "{m:?}");
            }
            pool.servers[1].set_admin(Admin::Maint);
            b.candidates(&pool, &Pick::default(), &mut scratch, &mut out);
            out.sort();
            assert_eq!(out, vec![0, 2], "{m:?}");
            pool.servers[0].set_admin(Admin::Drain);
            pool.servers[2].mark_down(1, 1000);
            b.candidates(&pool, &Pick::default(), &mut scratch, &mut out);
            assert_eq!(out, vec![3], "{m:?}: only the backup");
        }
    }

    /// Whatever the method, and however loaded the other servers are, a sticky target that may
    /// take the request comes first, once; a draining one too; a backup only while no primary
    /// is usable.
    #[test]
    fn every_method_puts_a_sticky_target_first() {
        for m in [
            Balance::RoundRobin,
            Balance::LeastRequests,
            Balance::ByRequests,
            Balance::ByTraffic,
            Balance::LeastTime,
            Balance::P2c,
            Balance::Hash,
        ] {
            let mut servers: Vec<Server> = (0..4).map(|i| test_server(i, 1)).collect();
            servers[3].backup = true;
            let pool = method_pool(m, servers, 1);
            // The target is the busiest, the slowest, the most used.
            for _ in 0..5 {
                pool.servers[2].begin(0);
            }
            pool.servers[2].add_bytes(0, 1 << 20);
            pool.servers[2].observe_latency(50_000);
            pool.servers[0].observe_latency(100);
            pool.servers[1].observe_latency(100);
            let mut b = Balancer::new(&pool, 0);
            let (mut scratch, mut out) = (Vec::new(), Vec::new());
            for k in 0..30u64 {
                let pick = Pick {
                    now_ms: 5,
                    hash: hash::hash64(&k.to_le_bytes()),
                    sticky: Some(2),
                };
                b.candidates(&pool, &pick, &mut scratch, &mut out);
                assert_eq!(out[0], 2, "{m:?}: {out:?}");
                let mut sorted = out.clone();
                sorted.sort();
                assert_eq!(sorted, vec![0, 1, 2], "{m:?}");
            }
            pool.servers[2].set_admin(Admin::Drain);
            let pick = Pick {
                now_ms: 5,
                hash: 7,
                sticky: Some(2),
            };
            b.candidates(&pool, &pick, &mut scratch, &mut out);
            assert_eq!(out[0], 2, "{m:?}: draining keeps its sticky clients");
            assert_eq!(out.len(), 3, "{m:?}: {out:?}");
            // Stuck to the backup: only while no primary is usable.
            let to_backup = Pick {
                sticky: Some(3),
                ..pick
            };
            b.candidates(&pool, &to_backup, &mut scratch, &mut out);
            assert!(!out.contains(&3), "{m:?}: {out:?}");
            for i in 0..3 {
                pool.servers[i].set_admin(Admin::Maint);
            }
            b.candidates(&pool, &to_backup, &mut scratch, &mut out);
            assert_eq!(out, vec![3], "{m:?}");
        }
    }

    #[test]
    fn inflight_sums_over_shards() {
        let pool = test_pool(&[1], Balance::LeastRequests, 3);
        let s = &pool.servers[0];
        s.begin(0);
        s.begin(2);
        s.begin(2);
        assert_eq!(s.inflight(), 3);
        s.end(2);
        s.end(1); // never below zero
        assert_eq!(s.inflight(), 2);
    }
}
