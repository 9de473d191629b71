//! A tiny deterministic PRNG (splitmix64): the same seed always yields the same sequence, so a
//! failing sequence replays from its seed alone. Not for cryptography, nothing here needs it.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        lo + self.next_u64() % (span + 1)
    }

    pub fn usize(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as u64, hi as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// Roughly log-uniform in `lo..=hi` (lo >= 1): small values as often as large ones.
    pub fn log_range(&mut self, lo: usize, hi: usize) -> usize {
        let bits_hi = usize::BITS - hi.leading_zeros();
        let bits_lo = usize::BITS - lo.max(1).leading_zeros();
        let bits = self.range(bits_lo as u64, bits_hi as u64) as u32;
        let top = (1usize << bits).saturating_sub(1).min(hi);
        let bottom = (1usize << (bits - 1)).max(lo).min(top);
        self.usize(bottom, top)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.usize(0, items.len() - 1)]
    }
}

/// The splitmix64 finaliser: also a good 64-bit hash of one integer.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
