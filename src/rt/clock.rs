//! The process clock every shard shares: microseconds and milliseconds since start, read from
//! one monotonic epoch, so stamps taken on different shards compare.

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
