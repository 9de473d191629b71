//! Bounded upstream connections per server, with a queue that is fair between clients.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use super::sleep;

/// A shard-local counting gate: bounded upstream connections per server. `acquire` takes a
/// free slot or queues for one; `release` hands a slot straight to a waiter still waiting, so
/// each release costs one wake-up however many requests are queued.
///
/// The queue is fair between clients: waiters queue per client key (the client's address), and
/// released slots go to the keys in turn, first come first served within a key. A client that
/// queued a thousand requests gets every other slot while one more client waits, not the next
/// thousand; a single client (a benchmark, a NAT) sees plain FIFO.
#[derive(Default)]
pub struct Gate {
    queues: RefCell<HashMap<u128, VecDeque<Rc<Waiter>>, KeyHash>>,
    /// Keys with waiters, in the order they get the next slots.
    turn: RefCell<VecDeque<u128>>,
    queued: Cell<usize>,
    free: Cell<usize>,
}

/// Hashing for client keys: one multiply per lookup instead of SipHash (the queue is on the
/// request path whenever a server is saturated). Keys are addresses, a peer picks them only
/// within what it can route from, and the seed differs per process.
#[derive(Clone)]
struct KeyHash(u64);

impl Default for KeyHash {
    fn default() -> Self {
        use std::hash::BuildHasher;
        KeyHash(std::collections::hash_map::RandomState::new().hash_one(0u8) | 1)
    }
}

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Up to this many clients, a client's emptied queue is kept for reuse.
const KEEP_EMPTY_QUEUES: usize = 64;

#[derive(Default)]
struct Waiter {
    waker: RefCell<Option<Waker>>,
    granted: Cell<bool>,
    abandoned: Cell<bool>,
}

/// Leaves the queue cleanly however `acquire` ends: a slot granted to a waiter that is going
/// away is passed on.
struct QueuedGuard<'a> {
    gate: &'a Gate,
    me: Rc<Waiter>,
    done: bool,
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.me.abandoned.set(true);
        if self.me.granted.get() {
            self.gate.release();
        }
    }
}

impl Gate {
    pub fn new(slots: usize) -> Self {
        Gate {
            free: Cell::new(slots),
            ..Default::default()
        }
    }

    /// Take a slot for client `key`, waiting at most `timeout`; false when it expired.
    pub async fn acquire(&self, timeout: Duration, key: u128) -> bool {
        if self.free.get() > 0 {
            self.free.set(self.free.get() - 1);
            return true;
        }
        let me = Rc::new(Waiter::default());
        {
            let mut queues = self.queues.borrow_mut();
            let q = queues.entry(key).or_default();
            if q.is_empty() {
                self.turn.borrow_mut().push_back(key);
            }
            q.push_back(me.clone());
            self.queued.set(self.queued.get() + 1);
        }
        let mut guard = QueuedGuard {
            gate: self,
            me,
            done: false,
        };
        let mut timer = pin!(sleep(timeout));
        let got = poll_fn(|cx| {
            if guard.me.granted.get() {
                return Poll::Ready(true);
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            let mut w = guard.me.waker.borrow_mut();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
        guard.done = got;
        got
    }

    /// A slot is free now (`acquire` will not wait).
    pub fn has_free(&self) -> bool {
        self.free.get() > 0
    }

    /// Requests queued for a slot (an upper bound: waiters that gave up are counted until the
    /// next release skips them).
    pub fn queued(&self) -> usize {
        self.queued.get()
    }

    pub fn release(&self) {
        match self.next_waiter() {
            Some(w) => {
                w.granted.set(true);
                if let Some(waker) = w.waker.borrow_mut().take() {
                    waker.wake();
                }
            }
            None => self.free.set(self.free.get() + 1),
        }
    }

    /// The first live waiter of the key whose turn it is; the key goes to the back of the turn
    /// if it still has waiters. Waiters that gave up are dropped on the way.
    fn next_waiter(&self) -> Option<Rc<Waiter>> {
        let mut queues = self.queues.borrow_mut();
        let mut turn = self.turn.borrow_mut();
        while let Some(key) = turn.pop_front() {
            let Some(q) = queues.get_mut(&key) else {
                continue;
            };
            let mut live = None;
            while let Some(w) = q.pop_front() {
                self.queued.set(self.queued.get() - 1);
                if !w.abandoned.get() {
                    live = Some(w);
                    break;
                }
            }
            if q.is_empty() {
                // An emptied queue is kept for its key's next waiter (no allocation per queued
                // request) while few clients queue; with many, it goes so the map stays small.
                if queues.len() > KEEP_EMPTY_QUEUES {
                    queues.remove(&key);
                }
            } else {
                turn.push_back(key);
            }
            if live.is_some() {
                return live;
            }
        }
        None
    }
}

/// The key a client queues under: its IPv4 address, or its IPv6 /64 (one host's share, since
/// a host usually owns a whole /64).
pub fn client_key(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(a) => u32::from(a) as u128,
        std::net::IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return u32::from(v4) as u128;
            }
            u128::from(a) & !((1u128 << 64) - 1) | (1 << 32)
        }
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(f)
    }

    #[test]
    fn slots_are_handed_over_in_order_and_timeouts_pass_them_on() {
        block_on(async {
            let gate = Rc::new(Gate::new(1));
            assert!(gate.acquire(Duration::from_millis(10), 0).await);
            // No slot: a waiter times out, and its place in the queue is skipped later.
            assert!(!gate.acquire(Duration::from_millis(10), 0).await);
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for i in 0..3 {
                let (g, o) = (gate.clone(), order.clone());
                tasks.push(monoio::spawn(async move {
                    assert!(g.acquire(Duration::from_secs(5), 0).await);
                    o.borrow_mut().push(i);
                    sleep(Duration::from_millis(5)).await;
                    g.release();
                }));
            }
            sleep(Duration::from_millis(20)).await;
            gate.release();
            for t in tasks {
                t.await;
            }
            assert_eq!(*order.borrow(), vec![0, 1, 2]);
            // Everything given back: one slot free again.
            assert!(gate.acquire(Duration::from_millis(10), 0).await);
            assert!(!gate.acquire(Duration::from_millis(10), 0).await);
        });
    }

    #[test]
    fn a_client_with_many_waiters_takes_turns_with_the_others() {
        block_on(async {
            let gate = Rc::new(Gate::new(1));
            assert!(gate.acquire(Duration::from_millis(10), 1).await);
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            // Client 1 queues five requests, then clients 2 and 3 one each.
            for (i, key) in [
                (10, 1),
                (11, 1),
                (12, 1),
                (13, 1),
                (14, 1),
                (20, 2),
                (30, 3),
            ] {
                let (g, o) = (gate.clone(), order.clone());
                tasks.push(monoio::spawn(async move {
                    assert!(g.acquire(Duration::from_secs(5), key).await);
                    o.borrow_mut().push(i);
                    sleep(Duration::from_millis(2)).await;
                    g.release();
                }));
                sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(gate.queued(), 7);
            gate.release();
            for t in tasks {
                t.await;
            }
            assert_eq!(*order.borrow(), vec![10, 20, 30, 11, 12, 13, 14]);
            assert_eq!(gate.queued(), 0);
        });
    }

    #[test]
    fn client_keys_group_an_ipv6_host_by_its_64() {
        let a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let v4: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(v4), client_key(mapped));
        assert_ne!(client_key(v4), client_key("10.0.0.2".parse().unwrap()));
    }
}
