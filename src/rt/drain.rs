//! The shard's drain signal.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Waker;

/// A shard-local "stop waiting" signal: idle keep-alive reads wait on it so that a graceful
/// stop (or load shedding, see [`Drain::set_shed`]) closes them at once instead of after their
/// keep-alive timeout.
#[derive(Clone, Default)]
pub struct Drain {
    inner: Rc<DrainInner>,
}

#[derive(Default)]
struct DrainInner {
    fired: Cell<bool>,
    /// Fired for a binary upgrade: idle connections go to the new process instead of closing.
    handover: Cell<bool>,
    /// Bumped by [`Drain::nudge`]: a wait that began before it ends once.
    nudges: Cell<u64>,
    /// Shedding load (the memory ceiling): idle waits end as if drained, until cleared.
    shed: Cell<bool>,
    // Slots of waiting futures; freed on drop so the table stays as large as the idle set.
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Drain {
    pub fn fire(&self) {
        self.inner.fired.set(true);
        for w in self.inner.slots.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
    }

    /// Fire for a binary upgrade (see [`Drain::handing_over`]).
    pub fn fire_handover(&self) {
        self.inner.handover.set(true);
        self.fire();
    }

    /// Fired by [`Drain::fire_handover`]: idle connections are handed to the new process.
    pub fn handing_over(&self) -> bool {
        self.inner.handover.get()
    }

    pub fn fired(&self) -> bool {
        self.inner.fired.get()
    }

    /// Start or stop shedding idle connections: while on, every idle wait ends at once (its
    /// connection closes) and none begins; unlike [`fire`](Self::fire) it can be turned off.
    pub fn set_shed(&self, on: bool) {
        if self.inner.shed.replace(on) || !on {
            return;
        }
        for w in self.inner.slots.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
    }

    pub fn shedding(&self) -> bool {
        self.inner.shed.get()
    }

    /// End every idle wait once without draining (the config changed: an idle connection
    /// looks whether its frontend is still there, and waits on if it is).
    pub fn nudge(&self) {
        self.inner.nudges.set(self.inner.nudges.get() + 1);
        for w in self.inner.slots.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
    }

    pub(super) fn wait(&self) -> DrainWait {
        DrainWait {
            drain: self.clone(),
            slot: None,
            nudges: self.inner.nudges.get(),
        }
    }
}

pub(super) struct DrainWait {
    drain: Drain,
    slot: Option<usize>,
    /// The nudge count when the wait began.
    nudges: u64,
}

impl DrainWait {
    pub(super) fn poll_drained(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let inner = &self.drain.inner;
        if inner.fired.get() || inner.shed.get() || inner.nudges.get() != self.nudges {
            return true;
        }
        let mut slots = inner.slots.borrow_mut();
        let slot = *self
            .slot
            .get_or_insert_with(|| match inner.free.borrow_mut().pop() {
                Some(i) => i,
                None => {
                    slots.push(None);
                    slots.len() - 1
                }
            });
        match &mut slots[slot] {
            Some(w) if w.will_wake(cx.waker()) => {}
            s => *s = Some(cx.waker().clone()),
        }
        false
    }
}

impl Drop for DrainWait {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.drain.inner.slots.borrow_mut()[i] = None;
            self.drain.inner.free.borrow_mut().push(i);
        }
    }
}
