//! The memory ceiling (`daemon.memory_limit`): what shardgate holds, and how close it is.
//!
//! **Accounting.** The binary's global allocator is [`CountingAlloc`]: every allocation adds its
//! size to a counter of the allocating thread's own slot (a cache line no other thread writes),
//! every free subtracts it; [`held`] sums the slots. So the figure is every byte of heap the
//! daemon holds: connection buffers, relay buffers, parsed heads, tables, everything, and not
//! an estimate. (Kernel socket buffers and io_uring rings are not heap and are not counted.)
//!
//! **Shedding.** The main thread recomputes the [`Level`] every 10 ms ([`update`]); shards read
//! it with one relaxed load. In order, as the heap nears the limit:
//!
//! | level | from | what shards do |
//! |---|---|---|
//! | `accept_paused` | 85 % | stop accepting; new clients wait in the kernel backlog |
//! | `closing_idle` | 90 % | also close idle keep-alive connections (and keep none after a response), drop idle upstream connections |
//! | `refusing` | 95 % | also answer new HTTP requests `503` with `Retry-After`, and so a request whose head needs a bigger buffer |
//!
//! A level is left only when the heap is 5 points below where it started, so the daemon does
//! not flap at a boundary. Nothing ever fails an allocation on purpose: the limit is reached
//! by refusing work, not by running out.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Per-thread counters; threads beyond this many share slots (still exact: updates are atomic).
/// Few enough that summing them on every accept (see [`admits`]) stays cheap.
const SLOTS: usize = 32;

/// A thread's bytes held, and the allocations it made (what `memory.allocations` counts:
/// benchmarks divide its growth by the requests served).
#[repr(align(128))]
struct Slot(AtomicI64, AtomicU64);

static COUNTS: [Slot; SLOTS] = [const { Slot(AtomicI64::new(0), AtomicU64::new(0)) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn slot() -> &'static Slot {
    let i = MY_SLOT
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS);
            }
            s.get()
        })
        .unwrap_or(0);
    &COUNTS[i]
}

fn count_alloc(size: usize) {
    let s = slot();
    s.0.fetch_add(size as i64, Ordering::Relaxed);
    s.1.fetch_add(1, Ordering::Relaxed);
}

/// The system allocator, counting what it hands out (see the module head).
pub struct CountingAlloc;

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed through.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        slot().0.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let s = slot();
            s.0.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            // A realloc is an allocation for the "none per request" count.
            s.1.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

/// Heap bytes the process holds now (0 when the counting allocator is not installed).
pub fn held() -> u64 {
    let sum: i64 = COUNTS.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    sum.max(0) as u64
}

/// Heap allocations (and reallocations) made since the process started, by every thread.
pub fn allocations() -> u64 {
    COUNTS.iter().map(|s| s.1.load(Ordering::Relaxed)).sum()
}

/// How hard the daemon is shedding load; ordered, each level does what the ones below do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Normal = 0,
    AcceptPaused = 1,
    ClosingIdle = 2,
    Refusing = 3,
}

impl Level {
    /// Percent of the limit where each level starts (index = level).
    const ENTER: [u64; 4] = [0, 85, 90, 95];
    /// Points below its start a level is left at.
    const HYSTERESIS: u64 = 5;

    fn from_u8(v: u8) -> Level {
        match v {
            1 => Level::AcceptPaused,
            2 => Level::ClosingIdle,
            3 => Level::Refusing,
            _ => Level::Normal,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::AcceptPaused => "accept_paused",
            Level::ClosingIdle => "closing_idle",
            Level::Refusing => "refusing",
        }
    }

    /// The level for `held` bytes of `limit`, coming from `current`.
    fn next(current: Level, held: u64, limit: u64) -> Level {
        let pct = (held as u128 * 100 / limit.max(1) as u128) as u64;
        let mut level = Level::Normal;
        for (i, &enter) in Self::ENTER.iter().enumerate().skip(1) {
            let l = Level::from_u8(i as u8);
            let stay = l <= current && pct + Self::HYSTERESIS >= enter;
            if pct >= enter || stay {
                level = l;
            }
        }
        level
    }
}

static LIMIT: AtomicU64 = AtomicU64::new(0);
/// The heap held at the last [`update`].
static LAST_HELD: AtomicU64 = AtomicU64::new(0);
static LEVEL: AtomicU8 = AtomicU8::new(0);
/// Times a level above `Normal` was entered.
static SHED_EPISODES: AtomicU64 = AtomicU64::new(0);

/// Set the ceiling (0 = none).
pub fn set_limit(bytes: u64) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

pub fn limit() -> u64 {
    LIMIT.load(Ordering::Relaxed)
}

/// The current level: one relaxed load, for the shards' hot paths.
#[inline]
pub fn level() -> Level {
    Level::from_u8(LEVEL.load(Ordering::Relaxed))
}

pub fn episodes() -> u64 {
    SHED_EPISODES.load(Ordering::Relaxed)
}

/// May a shard accept another connection? No from `AcceptPaused` up, and no as soon as the
/// heap passes that level's threshold, without waiting for the next [`update`]: a burst of
/// accepts between two updates cannot carry the heap past the ceiling.
pub fn admits() -> bool {
    if level() >= Level::AcceptPaused {
        return false;
    }
    below(Level::ENTER[1])
}

/// Is the heap below `pct` % of the limit (always, without a limit)? The slots are summed
/// only when the figure of the last [`update`] is past half the limit: far from the ceiling a
/// shard reads one word instead of every thread's counter.
fn below(pct: u64) -> bool {
    let limit = limit() as u128;
    if limit == 0 || (LAST_HELD.load(Ordering::Relaxed) as u128) * 2 < limit {
        return true;
    }
    (held() as u128 * 100) < limit * pct as u128
}

/// May a connection grow a buffer to read more of a request head? No once the heap passes
/// the `Refusing` threshold: the request is refused (503) instead of carrying the heap past
/// the ceiling. Checked only when a buffer must grow, which a steady request never needs.
pub fn may_grow() -> bool {
    below(Level::ENTER[3])
}

/// Recompute the level from the heap held now; logs each change. Called by the main thread.
pub fn update() {
    let limit = limit();
    if limit == 0 {
        return;
    }
    let held = held();
    LAST_HELD.store(held, Ordering::Relaxed);
    let cur = level();
    let next = Level::next(cur, held, limit);
    if next != cur {
        LEVEL.store(next as u8, Ordering::Relaxed);
        if cur == Level::Normal {
            SHED_EPISODES.fetch_add(1, Ordering::Relaxed);
        }
        let (held_mib, limit_mib) = (held >> 20, limit >> 20);
        if next > cur {
            tracing::warn!(
                event = "memory_shedding",
                level = next.name(),
                held_mib,
                limit_mib,
                "memory ceiling near: shedding load"
            );
        } else {
            tracing::info!(
                event = "memory_eased",
                level = next.name(),
                held_mib,
                limit_mib,
                "memory pressure eased"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_rise_at_their_thresholds_and_fall_five_points_lower() {
        let l = |cur, pct| Level::next(cur, pct, 100);
        assert_eq!(l(Level::Normal, 84), Level::Normal);
        assert_eq!(l(Level::Normal, 85), Level::AcceptPaused);
        assert_eq!(l(Level::Normal, 92), Level::ClosingIdle);
        assert_eq!(l(Level::Normal, 99), Level::Refusing);
        assert_eq!(l(Level::Normal, 250), Level::Refusing);
        // Coming down: held until five points under the start.
        assert_eq!(l(Level::Refusing, 91), Level::Refusing);
        assert_eq!(l(Level::Refusing, 89), Level::ClosingIdle);
        assert_eq!(l(Level::ClosingIdle, 81), Level::AcceptPaused);
        assert_eq!(l(Level::AcceptPaused, 80), Level::AcceptPaused);
        assert_eq!(l(Level::AcceptPaused, 79), Level::Normal);
        // From a lower level, the hysteresis band does not raise it.
        assert_eq!(l(Level::Normal, 82), Level::Normal);
        assert_eq!(l(Level::AcceptPaused, 93), Level::ClosingIdle);
    }
}
