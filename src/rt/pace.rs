//! A minimum average transfer rate, metered on one peer (Apache mod_reqtimeout's `MinRate`).
//!
//! Per-operation timeouts alone have no total: a client that sends one byte per
//! `client_body_timeout`, or reads a large response one window per `send_timeout`, keeps an
//! upstream connection for hours. A [`Pace`] adds the total: the time spent *waiting on the
//! metered peer* may not exceed `grace` plus one second for every `rate` bytes moved so far.
//! Only waits on that peer count, so a server that is slow to produce a streamed response
//! (long polling, server-sent events) is never blamed on the client.

use std::cell::Cell;
use std::time::{Duration, Instant};

pub struct Pace {
    grace: Duration,
    /// Bytes per second; 0 turns the pace off.
    rate: u64,
    waited: Cell<Duration>,
}

impl Pace {
    pub fn new(grace: Duration, rate: u64) -> Pace {
        Pace {
            grace,
            rate,
            waited: Cell::new(Duration::ZERO),
        }
    }

    /// How long the next wait on the metered peer may last: `op`, or what is left of the
    /// budget earned by `moved` bytes if that is less.
    pub fn limit(&self, op: Duration, moved: u64) -> Duration {
        if self.rate == 0 {
            return op;
        }
        let earned = Duration::from_micros(moved.saturating_mul(1_000_000) / self.rate);
        let budget = self.grace.saturating_add(earned);
        op.min(budget.saturating_sub(self.waited.get()))
    }

    /// Start a wait on the metered peer: [`Metered::limit`] bounds it, and the time until the
    /// `Metered` is dropped is charged to the budget. Without a pace, the limit is `op`.
    pub fn meter(pace: Option<&Pace>, op: Duration, moved: u64) -> Metered<'_> {
        // The clock is read only for a pace that counts.
        let pace = pace.filter(|p| p.rate > 0);
        Metered {
            limit: pace.map_or(op, |p| p.limit(op, moved)),
            started: pace.map(|_| Instant::now()),
            pace,
        }
    }
}

/// One wait on a paced peer, charged when dropped.
pub struct Metered<'a> {
    pub limit: Duration,
    pace: Option<&'a Pace>,
    started: Option<Instant>,
}

impl Drop for Metered<'_> {
    fn drop(&mut self) {
        if let (Some(p), Some(t)) = (self.pace, self.started) {
            p.waited.set(p.waited.get() + t.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_grows_with_bytes_and_shrinks_with_waits() {
        let p = Pace::new(Duration::from_secs(10), 1000);
        let op = Duration::from_secs(60);
        assert_eq!(p.limit(op, 0), Duration::from_secs(10));
        assert_eq!(p.limit(op, 5000), Duration::from_secs(15));
        p.waited.set(Duration::from_secs(12));
        assert_eq!(p.limit(op, 5000), Duration::from_secs(3));
        assert_eq!(p.limit(op, 1000), Duration::ZERO, "spent: nothing left");
        // The per-operation timeout still bounds each wait.
        assert_eq!(
            p.limit(Duration::from_secs(1), 1 << 40),
            Duration::from_secs(1)
        );
        // Off, or bytes near 2^64: no overflow, no limit beyond the operation's.
        assert_eq!(Pace::new(Duration::ZERO, 0).limit(op, 0), op);
        assert_eq!(p.limit(op, u64::MAX), op);
    }
}
