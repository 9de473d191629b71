//! Bounded upstream connections per server, with a FIFO queue.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use super::sleep;

/// A shard-local counting gate: bounded upstream connections per server. `acquire` takes a
/// free slot or queues (FIFO) for one; `release` hands a slot straight to the first waiter still
/// waiting, so each release costs one wake-up however many requests are queued.
#[derive(Default)]
pub struct Gate {
    waiters: RefCell<std::collections::VecDeque<Rc<Waiter>>>,
    free: Cell<usize>,
}

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
            waiters: Default::default(),
            free: Cell::new(slots),
        }
    }

    /// Take a slot, waiting at most `timeout`; false when it expired.
    pub async fn acquire(&self, timeout: Duration) -> bool {
        if self.free.get() > 0 {
            self.free.set(self.free.get() - 1);
            return true;
        }
        let me = Rc::new(Waiter::default());
        self.waiters.borrow_mut().push_back(me.clone());
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

    /// Requests queued for a slot (an upper bound: waiters that gave up are counted until the
    /// next release skips them).
    pub fn queued(&self) -> usize {
        self.waiters.borrow().len()
    }

    pub fn release(&self) {
        loop {
            let next = self.waiters.borrow_mut().pop_front();
            match next {
                Some(w) if w.abandoned.get() => continue,
                Some(w) => {
                    w.granted.set(true);
                    if let Some(waker) = w.waker.borrow_mut().take() {
                        waker.wake();
                    }
                    return;
                }
                None => {
                    self.free.set(self.free.get() + 1);
                    return;
                }
            }
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
            assert!(gate.acquire(Duration::from_millis(10)).await);
            // No slot: a waiter times out, and its place in the queue is skipped later.
            assert!(!gate.acquire(Duration::from_millis(10)).await);
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for i in 0..3 {
                let (g, o) = (gate.clone(), order.clone());
                tasks.push(monoio::spawn(async move {
                    assert!(g.acquire(Duration::from_secs(5)).await);
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
            assert!(gate.acquire(Duration::from_millis(10)).await);
            assert!(!gate.acquire(Duration::from_millis(10)).await);
        });
    }
}
