//! A shard's connections to the servers of one pool: its [`ConnCache`] (the config's `pool` is
//! the group of servers; this is the set of connections one shard holds to them). Per server, a
//! [`Gate`] of `max_connections_per_server` slots bounds the connections in use, and a stack
//! keeps up to `max_idle_per_server` idle keep-alive ones. A request takes a slot first, then
//! the newest idle connection, and connects only when none is idle; so the connections open
//! (busy + idle) never exceed the slot count, and requests beyond it queue until one is checked
//! back in, clients taking turns. That is what keeps 10,000 clients from becoming 10,000
//! backend sockets. Nothing here is shared with other shards; the server's health and busyness
//! live in [`PoolShared`].
//!
//! A server with `max_connections` is also bounded across all shards: after the shard's slot,
//! a request takes one of the server's global places, a compare-and-swap on
//! [`ServerShared::conns`](crate::balance::ServerShared) that succeeds only below the bound,
//! and gives it back (one atomic decrement) when its slot is dropped. When every place is taken
//! the request waits, within the same `queue_timeout` as the shard slot, then gets the same 503.
//! A place freed on a shard goes straight to the oldest request of that shard queued for the
//! server (handed over: the count does not change), unless requests of other shards are queued
//! too ([`ServerShared::queued`](crate::balance::ServerShared), counted only while waiting):
//! then it is given back to all, and every queued request, on every shard, sees it by polling,
//! looking again every [`GLOBAL_RETRY`]; so one busy shard cannot keep the places to itself. That needs no lock and no list of wakers shared between
//! threads; the cost (one timer per queued request per millisecond) is paid only while a server
//! is full, and the shard's own slot bound caps how many requests per shard wait at once. The
//! queue is not strictly first-come first-served: a request that arrives (on any shard) as a
//! place frees may take it before an older one. Servers without `max_connections` never touch
//! the counter.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::balance::{PoolShared, ServerShared};
use crate::config::{Pool, ProxyVersion};
use crate::proto::proxy_protocol;
use crate::proxy::ClientAddrs;
use crate::rt::{self, Gate, Socket};

/// Read buffer each upstream connection carries: a response head and a body of up to ~32 KiB
/// arrive in one read and leave in one write. Pages never touched are never resident, so small
/// responses cost only the pages they use.
pub const UPSTREAM_BUF: usize = 32 * 1024;

/// How often a request queued on a full server (`max_connections`) looks again.
const GLOBAL_RETRY: Duration = Duration::from_millis(1);

struct ServerSlots {
    gate: Gate,
    idle: RefCell<Vec<Idle>>,
    /// The server, when it has `max_connections`.
    global: Option<Arc<ServerShared>>,
    /// This shard's requests waiting for one of the server's global places, oldest first.
    waiting: RefCell<VecDeque<Rc<GlobalWaiter>>>,
}

/// A request of this shard waiting for a global place.
#[derive(Default)]
struct GlobalWaiter {
    waker: RefCell<Option<Waker>>,
    /// In `ServerSlots::waiting` (a direct hand-over takes it out).
    queued: Cell<bool>,
    /// A release on this shard handed its place to this waiter.
    granted: Cell<bool>,
}

/// Takes a waiter out of the queue however its wait ends, and passes on a place handed to it
/// that it will not use (the wait was cancelled).
struct LeaveQueue<'a> {
    slots: &'a ServerSlots,
    me: Rc<GlobalWaiter>,
    /// The wait returned holding a place.
    done: bool,
}

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        if let Some(server) = &self.slots.global {
            server.queued.fetch_sub(1, Ordering::AcqRel);
        }
        if self.me.queued.get() {
            self.slots
                .waiting
                .borrow_mut()
                .retain(|w| !Rc::ptr_eq(w, &self.me));
        }
        if self.me.granted.get() && !self.done {
            self.slots.give_global();
        }
    }
}

impl ServerSlots {
    /// Take one of the server's places across shards, if one is free.
    fn take_global(&self) -> bool {
        let Some(server) = &self.global else {
            return true;
        };
        server.try_take_conn()
    }

    /// Give a place back: to the oldest waiter of this shard if only this shard has waiters
    /// (the count does not change), else to every shard.
    fn give_global(&self) {
        if let Some(server) = &self.global {
            let mut waiting = self.waiting.borrow_mut();
            let elsewhere = server.queued.load(Ordering::Acquire) as usize > waiting.len();
            let next = if elsewhere { None } else { waiting.pop_front() };
            drop(waiting);
            match next {
                Some(w) => {
                    w.queued.set(false);
                    w.granted.set(true);
                    if let Some(waker) = w.waker.borrow_mut().take() {
                        waker.wake();
                    }
                }
                None => {
                    server.conns.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Wait for a global place until `deadline`; false when it passed. Woken by a release on
    /// this shard, or every [`GLOBAL_RETRY`] to see releases on other shards.
    async fn wait_global(&self, deadline: Instant) -> bool {
        if let Some(server) = &self.global {
            server.queued.fetch_add(1, Ordering::AcqRel);
        }
        let mut leave = LeaveQueue {
            slots: self,
            me: Rc::new(GlobalWaiter::default()),
            done: false,
        };
        let me = leave.me.clone();
        loop {
            if me.granted.get() || self.take_global() {
                leave.done = true;
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut timer = pin!(rt::sleep(left.min(GLOBAL_RETRY)));
            let mut first = true;
            poll_fn(|cx| {
                if !first {
                    // Woken by a release or by the timer: look again.
                    return Poll::Ready(());
                }
                first = false;
                *me.waker.borrow_mut() = Some(cx.waker().clone());
                if !me.queued.get() {
                    me.queued.set(true);
                    self.waiting.borrow_mut().push_back(me.clone());
                }
                timer.as_mut().poll(cx)
            })
            .await;
        }
    }
}

/// A kept-alive connection waiting for its next request (it holds no slot).
struct Idle {
    stream: Socket,
    /// The client this connection's PROXY header named (servers with `send_proxy`): only
    /// that client's requests may reuse it, as HAProxy keeps such connections private.
    proxied_for: Option<ClientAddrs>,
    buf: Vec<u8>,
    since: Instant,
}

/// One connection to a backend server in use; its slot is held until `slot` is dropped.
pub struct Upstream {
    pub stream: Socket,
    /// See [`Idle::proxied_for`].
    pub proxied_for: Option<ClientAddrs>,
    pub buf: Vec<u8>,
    pub server: usize,
    /// Served an earlier request (so a failure may just mean the server closed it while idle).
    pub reused: bool,
    pub slot: Slot,
}

/// A place in a server's connection bound (and in its bound across shards, if it has one),
/// given back when dropped.
pub struct Slot {
    slots: Rc<ServerSlots>,
    /// Holds one of the server's `max_connections` places.
    global: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.global {
            self.slots.give_global();
        }
        self.slots.gate.release();
    }
}

pub enum CheckoutError {
    /// Connect refused, reset or timed out: the server is to be marked down.
    Connect(io::Error),
    /// Every slot for this server stayed busy for the whole wait.
    NoSlot,
    /// We could not even make a socket (out of descriptors or memory): not the server's fault.
    Local(io::Error),
}

pub struct ConnCache {
    pub conf: Pool,
    pub shared: Arc<PoolShared>,
    /// The pool's TLS config as this shard uses it (its own session cache).
    tls: Option<Arc<rustls::ClientConfig>>,
    servers: Vec<Rc<ServerSlots>>,
    /// The shard this cache belongs to (its counters in [`PoolShared`]).
    shard: usize,
}

impl ConnCache {
    /// The cache for a new generation of the pool: a server whose record is the same (see
    /// [`PoolShared::next`]) keeps its slots, its queue and its idle connections, so a reload
    /// neither drops idle upstream connections to unchanged servers nor lets requests that
    /// are still running on the old generation exceed the slot bound.
    pub fn next(
        conf: &Pool,
        shared: Arc<PoolShared>,
        shard: usize,
        old: Option<&ConnCache>,
    ) -> Self {
        let same_tls = old.is_some_and(|o| o.conf.tls == conf.tls);
        ConnCache {
            shard,
            tls: match (old, &conf.tls) {
                (Some(o), Some(_)) if same_tls => o.tls.clone(),
                (_, Some(t)) => Some(t.for_shard()),
                (_, None) => None,
            },
            servers: shared
                .servers
                .iter()
                .map(|s| {
                    let kept = old.and_then(|o| {
                        // Idle connections of another TLS setting would be the wrong kind.
                        let same_bound = o.conf.max_connections_per_server
                            == conf.max_connections_per_server
                            && same_tls;
                        let j = o.shared.servers.iter().position(|x| Arc::ptr_eq(x, s))?;
                        same_bound.then(|| o.servers[j].clone())
                    });
                    kept.unwrap_or_else(|| {
                        Rc::new(ServerSlots {
                            gate: Gate::new(conf.max_connections_per_server),
                            idle: RefCell::new(Vec::new()),
                            global: s.max_connections.map(|_| s.clone()),
                            waiting: RefCell::new(VecDeque::new()),
                        })
                    })
                })
                .collect(),
            conf: conf.clone(),
            shared,
        }
    }

    /// A slot for `server`, then an idle connection if one is fresh enough, else a new one.
    /// `fresh` skips the idle stack (used for the one retry after a reused connection failed).
    /// `client` is the key the request queues under when every slot is busy
    /// ([`rt::client_key`]: queued clients take turns); `addrs` are the client's addresses, for
    /// the PROXY header of a server with `send_proxy`.
    pub async fn checkout(
        &self,
        server: usize,
        fresh: bool,
        wait: Duration,
        client: u128,
        addrs: &ClientAddrs,
    ) -> Result<Upstream, CheckoutError> {
        let send_proxy = self.shared.servers[server].send_proxy;
        let tag = send_proxy.map(|_| *addrs);
        let slots = &self.servers[server];
        let queued_at = slots.global.as_ref().map(|_| Instant::now());
        let acquired = if slots.gate.has_free() {
            slots.gate.acquire(wait, client).await
        } else {
            // Waiting: counted where `show servers` can see it (this shard's slot only).
            let _waiting = self.shared.servers[server].waiting(self.shard);
            slots.gate.acquire(wait, client).await
        };
        if !acquired {
            return Err(CheckoutError::NoSlot);
        }
        let mut slot = Slot {
            slots: slots.clone(),
            global: false,
        };
        if let Some(t0) = queued_at {
            if !slots.take_global() && !slots.wait_global(t0 + wait).await {
                return Err(CheckoutError::NoSlot);
            }
            slot.global = true;
        }
        if !fresh {
            let max_age = self.conf.idle_timeout;
            loop {
                let popped = {
                    let mut idle = slots.idle.borrow_mut();
                    // The newest connection this client may use (any, without PROXY headers).
                    idle.iter()
                        .rposition(|i| i.proxied_for == tag)
                        .map(|at| idle.remove(at))
                };
                match popped {
                    // Too old, or the server closed it or sent something meanwhile: closed by
                    // dropping it.
                    Some(idle)
                        if idle.since.elapsed() < max_age
                            && rt::idle_is_quiet(idle.stream.tcp()) =>
                    {
                        return Ok(Upstream {
                            stream: idle.stream,
                            proxied_for: idle.proxied_for,
                            buf: idle.buf,
                            server,
                            reused: true,
                            slot,
                        });
                    }
                    Some(_) => continue,
                    None => break,
                }
            }
        }
        let addr = self.shared.servers[server].addr;
        let mut stream = match rt::connect(addr, self.conf.connect_timeout).await {
            Ok(stream) => Socket::Tcp(stream),
            Err(rt::ConnectError::Local(e)) => return Err(CheckoutError::Local(e)),
            Err(rt::ConnectError::Peer(e)) => return Err(CheckoutError::Connect(e)),
        };
        if let Some(v) = send_proxy {
            let mut head = Vec::with_capacity(64);
            match v {
                ProxyVersion::V1 => proxy_protocol::write_v1(addrs.0, addrs.1, &mut head),
                ProxyVersion::V2 => proxy_protocol::write_v2(addrs.0, addrs.1, &mut head),
            }
            // Sent alone, before the request: the server reads it before anything else.
            let (r, _) = rt::write_all(&mut stream, head, self.conf.connect_timeout).await;
            if let Err(e) = r {
                return Err(CheckoutError::Connect(e));
            }
        }
        if let (Some(config), Some(tls)) = (&self.tls, &self.conf.tls) {
            let Socket::Tcp(tcp) = stream else {
                return Err(CheckoutError::Connect(io::ErrorKind::InvalidInput.into()));
            };
            let name = tls.name_for(None, addr);
            let shake = rt::TlsStream::connect(tcp, name, config.clone());
            stream = match rt::timeout(self.conf.connect_timeout, shake).await {
                Some(Ok(s)) => Socket::Tls(Box::new(s)),
                Some(Err(e)) => {
                    let why = format!("TLS handshake: {e}");
                    return Err(CheckoutError::Connect(io::Error::other(why)));
                }
                None => {
                    let why = "TLS handshake timed out";
                    return Err(CheckoutError::Connect(io::Error::new(
                        io::ErrorKind::TimedOut,
                        why,
                    )));
                }
            };
        }
        Ok(Upstream {
            stream,
            proxied_for: tag,
            buf: Vec::with_capacity(UPSTREAM_BUF),
            server,
            reused: false,
            slot,
        })
    }

    /// The pool's TLS config as this shard uses it (MySQL sessions connect on their own).
    pub fn tls_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// Close every idle connection (shedding load near the memory ceiling).
    pub fn drop_idle(&self) {
        for s in &self.servers {
            s.idle.borrow_mut().clear();
        }
    }

    /// Return a connection whose last exchange ended cleanly (the whole request sent, the whole
    /// response read, nothing more from the server): kept idle if there is room, and its slot
    /// goes to the next queued request (which will find it on the stack). A connection in any
    /// other state is dropped instead, which closes it.
    pub fn checkin(&self, up: Upstream, shedding: bool) {
        let Upstream {
            stream,
            proxied_for,
            mut buf,
            server,
            slot,
            ..
        } = up;
        {
            let slots = &self.servers[server];
            let mut idle = slots.idle.borrow_mut();
            // Queued requests will take idle connections as soon as they run: keep one for each
            // of them beyond the idle bound, rather than close it and connect again. Near the
            // memory ceiling only what a queued request will take at once is kept.
            let room = if shedding {
                slots.gate.queued()
            } else {
                self.conf.max_idle_per_server + slots.gate.queued()
            };
            if idle.len() < room {
                buf.clear();
                idle.push(Idle {
                    stream,
                    proxied_for,
                    buf,
                    since: Instant::now(),
                });
            }
        }
        drop(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{test_server, ServerShared};
    use crate::config::{Balance, Server};

    fn block_on<F: Future>(f: F) -> F::Output {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(f)
    }

    /// The slots of one server with `max_connections = max`, as one shard of two sees them.
    fn slots(max: u32) -> Rc<ServerSlots> {
        let server = Server {
            max_connections: Some(max),
            ..test_server(0, 1)
        };
        let pool = Arc::new(PoolShared {
            name: "p".into(),
            balance: Balance::RoundRobin,
            slow_start_ms: 0,
            servers: vec![Arc::new(ServerShared::new(&server, 2))].into(),
            ring: Default::default(),
            sticky: None,
        });
        Rc::new(ServerSlots {
            gate: Gate::new(100),
            idle: RefCell::new(Vec::new()),
            global: Some(pool.servers[0].clone()),
            waiting: RefCell::new(VecDeque::new()),
        })
    }

    fn in_use(s: &ServerSlots) -> u32 {
        s.global.as_ref().unwrap().conns.load(Ordering::SeqCst)
    }

    #[test]
    fn places_never_exceed_the_bound_and_every_waiter_gets_one() {
        block_on(async {
            let s = slots(2);
            let peak = Rc::new(Cell::new(0));
            let tasks: Vec<_> = (0..10)
                .map(|_| {
                    let (s, peak) = (s.clone(), peak.clone());
                    monoio::spawn(async move {
                        let deadline = Instant::now() + Duration::from_secs(5);
                        assert!(s.take_global() || s.wait_global(deadline).await);
                        peak.set(peak.get().max(in_use(&s)));
                        rt::sleep(Duration::from_millis(3)).await;
                        s.give_global();
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            assert_eq!(peak.get(), 2);
            assert_eq!(in_use(&s), 0);
            let server = s.global.as_ref().unwrap();
            assert_eq!(server.queued.load(Ordering::SeqCst), 0);
            assert!(s.waiting.borrow().is_empty(), "no waiter left behind");
        });
    }

    #[test]
    fn a_local_release_hands_the_place_to_the_oldest_waiter() {
        block_on(async {
            let s = slots(1);
            assert!(s.take_global());
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for i in 0..3 {
                let (s2, o) = (s.clone(), order.clone());
                tasks.push(monoio::spawn(async move {
                    assert!(
                        s2.wait_global(Instant::now() + Duration::from_secs(5))
                            .await
                    );
                    o.borrow_mut().push(i);
                    rt::sleep(Duration::from_millis(5)).await;
                    s2.give_global();
                }));
                rt::sleep(Duration::from_millis(2)).await;
            }
            assert_eq!(s.waiting.borrow().len(), 3, "each waiter queued once");
            s.give_global();
            assert_eq!(
                s.waiting.borrow().len(),
                2,
                "the oldest taken out and woken"
            );
            for t in tasks {
                t.await;
            }
            assert_eq!(*order.borrow(), vec![0, 1, 2]);
            assert!(s.waiting.borrow().is_empty());
        });
    }

    #[test]
    fn a_shard_does_not_keep_the_places_while_another_shard_waits() {
        block_on(async {
            let s = slots(1);
            assert!(s.take_global());
            let waiter = {
                let s = s.clone();
                monoio::spawn(async move {
                    assert!(s.wait_global(Instant::now() + Duration::from_secs(5)).await);
                })
            };
            rt::sleep(Duration::from_millis(2)).await;
            // A request of the other shard is queued too: the release goes back to all.
            let server = s.global.clone().unwrap();
            server.queued.fetch_add(1, Ordering::SeqCst);
            s.give_global();
            assert_eq!(in_use(&s), 0, "given back, not handed over");
            // The local waiter still gets it (the other shard's request is only a count here).
            waiter.await;
            assert_eq!(in_use(&s), 1);
            server.queued.fetch_sub(1, Ordering::SeqCst);
            assert_eq!(server.queued.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn a_release_on_another_shard_is_seen_and_the_deadline_holds() {
        block_on(async {
            let s = slots(1);
            assert!(s.take_global());
            // Nobody gives it back: the wait ends at its deadline, and leaves the queue.
            let t0 = Instant::now();
            assert!(!s.wait_global(t0 + Duration::from_millis(20)).await);
            assert!(t0.elapsed() >= Duration::from_millis(20));
            assert!(s.waiting.borrow().is_empty());
            // Another shard gives the place back (the counter only, no wake-up here): the
            // waiter's poll sees it.
            let other = s.clone();
            let release = monoio::spawn(async move {
                rt::sleep(Duration::from_millis(10)).await;
                let server = other.global.as_ref().unwrap();
                server.conns.fetch_sub(1, Ordering::SeqCst);
            });
            let t0 = Instant::now();
            assert!(s.wait_global(t0 + Duration::from_secs(5)).await);
            assert!(t0.elapsed() < Duration::from_millis(500));
            release.await;
            assert_eq!(in_use(&s), 1);
        });
    }
}
