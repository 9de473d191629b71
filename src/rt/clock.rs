//! The process clock every shard shares: microseconds and milliseconds since start, read from
//! one monotonic epoch, so stamps taken on different shards compare.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Microseconds since the process started (command timing).
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Milliseconds since the process started: the clock shared by every shard for down marks and
/// idle stamps. Never 0, so 0 can mean "not set".
pub fn now_ms() -> u64 {
    ms_of(now_us())
}

/// [`now_ms`] for a reading of [`now_us`] already taken.
pub fn ms_of(us: u64) -> u64 {
    us / 1000 + 1
}

/// Lets one log line through per period (10 s), counting the ones it holds back: for warnings a
/// peer or a shortage can repeat per request or per connection. Lock-free, shareable as a
/// `static` by every shard and thread.
pub struct LogLimit {
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimit {
    const EVERY_MS: u64 = 10_000;

    pub const fn new() -> LogLimit {
        LogLimit {
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` if this one may be logged.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(now_ms())
    }

    fn allow_at(&self, now: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= Self::EVERY_MS;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_the_rest_counted() {
        let l = LogLimit::new();
        assert_eq!(l.allow_at(5), Some(0));
        assert_eq!(l.allow_at(6), None);
        assert_eq!(l.allow_at(5 + LogLimit::EVERY_MS - 1), None);
        assert_eq!(l.allow_at(5 + LogLimit::EVERY_MS), Some(2));
        assert_eq!(l.allow_at(6 + LogLimit::EVERY_MS), None);
    }
}
