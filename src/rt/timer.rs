//! The shard's timers: [`sleep`] and everything built on it ([`super::timeout`], every bounded
//! read and write). Nearly every timer on the data path is a deadline that never fires (a read
//! that completes, a write that is taken), so arming and dropping one must cost little, and the
//! futures that hold one must stay small: an idle keep-alive connection holds its whole
//! future's state, timers included.
//!
//! monoio's own `Sleep` is 640 bytes aligned to 128 (its timer entry is cache-padded), and
//! every future that holds one grows to that alignment: a connection's future measured 7.5 KiB.
//! A [`Sleep`] here is 24 bytes: a deadline in milliseconds and, once it waits, a slot in this
//! thread's table. The table is a slab of slots plus a binary heap of `(deadline, slot,
//! generation)`; a dropped timer only frees its slot, and its heap entry is skipped when it
//! comes up (rebuilt away when stale entries outnumber live ones). One monoio sleep per thread,
//! in a driver task, waits for the earliest deadline.
//!
//! Resolution is a millisecond, from the process clock ([`super::now_ms`]); a timer fires at
//! or after its deadline, never before.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
// (Everything here is thread-local: a shard's runtime owns one table and one driver.)
use std::time::Duration;

use super::now_ms;

struct Slot {
    gen: u32,
    deadline: u64,
    waker: Option<Waker>,
    fired: bool,
}

#[derive(Default)]
struct Table {
    /// Which runtime of this thread the slots belong to (see [`new_runtime`]).
    epoch: u32,
    slots: Vec<Slot>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Slots in use (the heap holds these plus stale entries).
    live: usize,
    /// The driver task: alive (its token), the deadline it sleeps until (0: none), its waker.
    /// A driver dropped with its runtime leaves a dead token, and the next timer starts one.
    driving: std::rc::Weak<()>,
    driver_until: u64,
    driver: Option<Waker>,
    /// Wakers taken out of the table before waking them (kept for its capacity).
    due: Vec<Waker>,
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
}

/// A new runtime starts on this thread: the timers of the one before (and its driver task,
/// which went with it) are forgotten. A timer of the old runtime dropped later frees nothing.
pub fn new_runtime() {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let epoch = t.epoch.wrapping_add(1);
        *t = Table::default();
        t.epoch = epoch;
    });
}

/// Wait until `d` has passed (rounded up to the millisecond, at most one more).
pub fn sleep(d: Duration) -> Sleep {
    let ms = d.as_nanos().div_ceil(1_000_000).min(u64::MAX as u128 / 2) as u64;
    Sleep {
        // One more: the current millisecond is already partly gone, and a timer never fires
        // early.
        deadline: now_ms()
            .saturating_add(ms)
            .saturating_add(u64::from(ms > 0)),
        slot: None,
    }
}

/// See [`sleep`].
#[must_use = "a timer does nothing unless awaited"]
pub struct Sleep {
    deadline: u64,
    /// (slot, generation, table epoch) once registered.
    slot: Option<(u32, u32, u32)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Some((i, gen, epoch)) = this.slot {
            let fired = TABLE.with(|t| {
                let mut t = t.borrow_mut();
                if t.epoch != epoch {
                    // Its runtime is gone (only a test does this): nothing will fire it.
                    return true;
                }
                let s = &mut t.slots[i as usize];
                if s.fired || s.gen != gen {
                    return true;
                }
                match &s.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => s.waker = Some(cx.waker().clone()),
                }
                false
            });
            if fired {
                this.release();
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        if this.deadline == u64::MAX {
            // Done (and released) already.
            return Poll::Ready(());
        }
        if now_ms() >= this.deadline {
            this.deadline = u64::MAX;
            return Poll::Ready(());
        }
        let spawn_driver = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let (i, gen) = match t.free.pop() {
                Some(i) => {
                    let s = &mut t.slots[i as usize];
                    s.deadline = this.deadline;
                    s.waker = Some(cx.waker().clone());
                    s.fired = false;
                    (i, s.gen)
                }
                None => {
                    t.slots.push(Slot {
                        gen: 0,
                        deadline: this.deadline,
                        waker: Some(cx.waker().clone()),
                        fired: false,
                    });
                    ((t.slots.len() - 1) as u32, 0)
                }
            };
            t.live += 1;
            t.heap.push(Reverse((this.deadline, i, gen)));
            this.slot = Some((i, gen, t.epoch));
            if t.heap.len() > 2 * t.live + 1024 {
                t.compact();
            }
            if t.driving.strong_count() == 0 {
                return true;
            }
            // The driver sleeps past this deadline (or not at all): move it.
            if t.driver_until == 0 || this.deadline < t.driver_until {
                if let Some(w) = t.driver.take() {
                    w.wake();
                }
            }
            false
        });
        if spawn_driver {
            let alive = std::rc::Rc::new(());
            TABLE.with(|t| t.borrow_mut().driving = std::rc::Rc::downgrade(&alive));
            monoio::spawn(drive(alive));
        }
        Poll::Pending
    }
}

impl Sleep {
    fn release(&mut self) {
        if let Some((i, gen, epoch)) = self.slot.take() {
            let _ = TABLE.try_with(|t| {
                let mut t = t.borrow_mut();
                if t.epoch != epoch {
                    return;
                }
                let s = &mut t.slots[i as usize];
                if s.gen == gen {
                    s.gen = s.gen.wrapping_add(1);
                    s.waker = None;
                    t.free.push(i);
                    t.live -= 1;
                }
            });
        }
        self.deadline = u64::MAX;
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.release();
    }
}

impl Table {
    /// Drop the heap entries of released slots.
    fn compact(&mut self) {
        let slots = &self.slots;
        self.heap
            .retain(|Reverse((_, i, gen))| slots[*i as usize].gen == *gen);
    }

    /// Fire what is due at `now` (its wakers go to `self.due`); the next deadline, 0 if none.
    fn fire(&mut self, now: u64) -> u64 {
        while let Some(&Reverse((deadline, i, gen))) = self.heap.peek() {
            let s = &mut self.slots[i as usize];
            if s.gen != gen || s.fired {
                self.heap.pop();
                continue;
            }
            if deadline > now {
                return deadline;
            }
            self.heap.pop();
            s.fired = true;
            if let Some(w) = s.waker.take() {
                self.due.push(w);
            }
        }
        0
    }
}

/// The thread's timer driver: sleeps (one monoio timer) until the earliest deadline, fires what
/// is due, and waits without a timer when nothing is armed.
async fn drive(_alive: std::rc::Rc<()>) {
    let mut due = Vec::new();
    // The one monoio timer of the thread, moved to each next deadline.
    let mut timer = Box::pin(monoio::time::sleep(Duration::from_secs(3600)));
    loop {
        let next = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let next = t.fire(now_ms());
            std::mem::swap(&mut t.due, &mut due);
            t.driver_until = next;
            next
        });
        for w in due.drain(..) {
            w.wake();
        }
        if next != 0 {
            let left = Duration::from_millis(next.saturating_sub(now_ms()));
            timer.as_mut().reset(monoio::time::Instant::now() + left);
        }
        // Wait for the timer, or for a nearer deadline (or a first one) to be armed.
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if next != 0 && timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if registered && TABLE.with(|t| t.borrow().driver.is_none()) {
                // Woken by an arm (which took the waker): look again.
                return Poll::Ready(());
            }
            TABLE.with(|t| t.borrow_mut().driver = Some(cx.waker().clone()));
            registered = true;
            Poll::Pending
        })
        .await;
        TABLE.with(|t| t.borrow_mut().driver = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::time::Instant;

    fn rt() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    #[test]
    fn fires_at_or_after_the_deadline_in_order() {
        rt().block_on(async {
            let order = Rc::new(RefCell::new(Vec::new()));
            let start = Instant::now();
            let mut tasks = Vec::new();
            for ms in [30u64, 5, 20, 1, 10] {
                let order = order.clone();
                tasks.push(monoio::spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    assert!(start.elapsed() >= Duration::from_millis(ms));
                    order.borrow_mut().push(ms);
                }));
            }
            for t in tasks {
                t.await;
            }
            assert_eq!(*order.borrow(), vec![1, 5, 10, 20, 30]);
        });
    }

    #[test]
    fn a_nearer_deadline_armed_later_is_not_held_up_by_a_far_one() {
        rt().block_on(async {
            let far = monoio::spawn(async { sleep(Duration::from_secs(30)).await });
            sleep(Duration::from_millis(2)).await;
            let t = Instant::now();
            sleep(Duration::from_millis(10)).await;
            assert!(t.elapsed() < Duration::from_secs(5));
            drop(far);
        });
    }

    #[test]
    fn dropped_timers_free_their_slots_and_the_heap_stays_bounded() {
        rt().block_on(async {
            for _ in 0..50_000 {
                let mut s = std::pin::pin!(sleep(Duration::from_secs(60)));
                std::future::poll_fn(|cx| {
                    assert!(s.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
            }
            TABLE.with(|t| {
                let t = t.borrow();
                assert_eq!(t.live, 0);
                assert!(t.slots.len() <= 2, "slots reused: {}", t.slots.len());
                assert!(t.heap.len() <= 1024 + 2, "heap compacted: {}", t.heap.len());
            });
            // And a timer still fires afterwards.
            sleep(Duration::from_millis(3)).await;
        });
    }

    #[test]
    fn a_timeout_races_a_future_both_ways() {
        rt().block_on(async {
            let r = crate::rt::timeout(Duration::from_millis(5), async {
                sleep(Duration::from_secs(10)).await;
            })
            .await;
            assert!(r.is_none());
            let r = crate::rt::timeout(Duration::from_secs(10), async { 7 }).await;
            assert_eq!(r, Some(7));
        });
    }

    #[test]
    fn small() {
        assert!(std::mem::size_of::<Sleep>() <= 24);
    }
}
