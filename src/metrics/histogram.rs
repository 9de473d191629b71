//! A latency histogram one shard writes and any thread reads: log-linear buckets (four per
//! power of two of microseconds, so a bucket is at most a quarter of its value wide), counted
//! with single-writer atomics like every other counter. Readers merge the shards' histograms
//! bucket by bucket, which is exact: same buckets everywhere.
//!
//! The export boundaries are powers of two of microseconds. Every internal bucket lies wholly
//! inside one power-of-two span, so the cumulative counts at those boundaries are exact, not
//! interpolated. (They are also the boundaries of a Prometheus native histogram of schema 0.)

use std::sync::atomic::{AtomicU64, Ordering};

/// Values below this many microseconds have a bucket each.
const EXACT: u64 = 8;
/// Octaves above [`EXACT`]: the last bucket holds everything from 2^27 µs (134 s) up.
const TOP_OCTAVE: u32 = 27;
/// Buckets: 0..8 exact, four per octave from 2^3 to 2^27, one overflow.
pub const BUCKETS: usize = EXACT as usize + (TOP_OCTAVE as usize - 3) * 4 + 1;

/// The bucket of a value in microseconds.
#[inline]
pub fn bucket(us: u64) -> usize {
    if us < EXACT {
        return us as usize;
    }
    let p = 63 - us.leading_zeros();
    if p >= TOP_OCTAVE {
        return BUCKETS - 1;
    }
    EXACT as usize + (p as usize - 3) * 4 + ((us >> (p - 2)) & 3) as usize
}

/// The smallest value of bucket `i` and the smallest value above it, in microseconds
/// (`u64::MAX` above the overflow bucket).
pub fn bounds(i: usize) -> (u64, u64) {
    if i < EXACT as usize {
        return (i as u64, i as u64 + 1);
    }
    if i >= BUCKETS - 1 {
        return (1 << TOP_OCTAVE, u64::MAX);
    }
    let k = i - EXACT as usize;
    let p = 3 + (k / 4) as u32;
    let s = (k % 4) as u64;
    let step = 1u64 << (p - 2);
    let lo = (1u64 << p) + s * step;
    (lo, lo + step)
}

/// One shard's histogram: only that shard writes it.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.snapshot().count())
            .finish()
    }
}

#[inline]
fn bump(a: &AtomicU64, by: u64) {
    a.store(
        a.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl Histogram {
    /// Count one value (microseconds). Single writer: the owning shard.
    #[inline]
    pub fn record(&self, us: u64) {
        bump(&self.counts[bucket(us)], 1);
        bump(&self.sum_us, us);
    }

    /// Add this histogram's counts to `into`.
    pub fn add_to(&self, into: &mut Snapshot) {
        for (a, c) in into.counts.iter_mut().zip(self.counts.iter()) {
            *a += c.load(Ordering::Relaxed);
        }
        into.sum_us += self.sum_us.load(Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        self.add_to(&mut s);
        s
    }
}

/// Counts read from one or more histograms (merged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub counts: [u64; BUCKETS],
    pub sum_us: u64,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            counts: [0; BUCKETS],
            sum_us: 0,
        }
    }
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn merge(&mut self, o: &Snapshot) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.sum_us += o.sum_us;
    }

    /// How many values were below `limit_us`; exact when `limit_us` is a power of two or at
    /// most [`EXACT`].
    pub fn below(&self, limit_us: u64) -> u64 {
        (0..BUCKETS)
            .take_while(|&i| bounds(i).1 <= limit_us)
            .map(|i| self.counts[i])
            .sum()
    }

    /// The value at quantile `q` (0..=1) in microseconds: the middle of the bucket holding
    /// that rank, so within an eighth of the true value; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bounds(i);
                return if hi == u64::MAX {
                    lo as f64
                } else {
                    (lo + hi - 1) as f64 / 2.0
                };
            }
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_line_and_each_value_lands_inside_its_bucket() {
        let mut next = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bounds(i);
            assert_eq!(
                lo,
                next,
                "bucket {i} starts where {} ended",
                i.wrapping_sub(1)
            );
            assert!(hi > lo);
            next = hi;
        }
        assert_eq!(next, u64::MAX);
        // Every value, small and large, is inside the bounds of its bucket.
        let mut v = 0u64;
        while v < 1 << 30 {
            let (lo, hi) = bounds(bucket(v));
            assert!(lo <= v && v < hi, "{v} in {lo}..{hi}");
            v = v * 9 / 8 + 1;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        // A bucket is at most a quarter of its lower bound wide (above the exact ones).
        for i in EXACT as usize..BUCKETS - 1 {
            let (lo, hi) = bounds(i);
            assert!((hi - lo) * 4 <= lo, "bucket {i}: {lo}..{hi}");
        }
    }

    #[test]
    fn counts_below_powers_of_two_are_exact_against_a_model() {
        // A deterministic spread of values; the model counts them directly.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut values = Vec::new();
        let h = Histogram::default();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = x % (1 << (x % 28));
            values.push(v);
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), values.len() as u64);
        assert_eq!(s.sum_us, values.iter().sum::<u64>());
        for k in 0..40 {
            let limit = 1u64 << k;
            let want = values.iter().filter(|&&v| v < limit).count() as u64;
            assert_eq!(s.below(limit), want, "below 2^{k}");
        }
        // Quantiles land within the bucket width of the model's.
        values.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999] {
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            let want = values[rank - 1] as f64;
            let got = s.quantile_us(q);
            assert!(
                (got - want).abs() <= want / 4.0 + 1.0,
                "q{q}: {got} against {want}"
            );
        }
    }

    #[test]
    fn merging_two_shards_equals_recording_in_one() {
        let (a, b, both) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for v in 0..5000u64 {
            let v = v * v;
            if v % 3 == 0 { &a } else { &b }.record(v);
            both.record(v);
        }
        let mut m = a.snapshot();
        m.merge(&b.snapshot());
        assert_eq!(m, both.snapshot());
        assert_eq!(Snapshot::default().quantile_us(0.5), 0.0);
    }
}
