//! A fixed-size log-linear latency histogram, hand-written (HdrHistogram-like, no
//! dependency).
//!
//! Values are nanoseconds. Below 128 every value has a bucket of its own (exact);
//! above, each power of two `[2^k, 2^(k+1))` is split into 64 equal buckets, so a
//! bucket is at most 1/64 (1.6 %) of its lower bound wide, and a reported value (the
//! bucket's midpoint) is within 1/128 (0.8 %) of every value in it. The top of the
//! range is [`HIGHEST`] (2^36 - 1 ns, about 68.7 s); larger values are counted in the
//! last bucket (the exact maximum is kept separately). All [`BUCKETS`] counters (1984
//! u64, 15.5 KiB) are allocated once in [`LatencyHistogram::new`]; recording
//! allocates nothing and costs a few arithmetic operations and one counter increment.

/// log2 of the buckets per power of two.
const SUB_BITS: u32 = 6;
/// Buckets per power of two.
const SUB: u64 = 1 << SUB_BITS;
/// Values up to `2^MAX_BITS - 1` have a bucket of their own range.
const MAX_BITS: u32 = 36;
/// Largest value with a bucket of its own range (about 68.7 s in nanoseconds).
pub const HIGHEST: u64 = (1 << MAX_BITS) - 1;
/// Number of counters.
pub const BUCKETS: usize = ((MAX_BITS - SUB_BITS + 1) as usize) * SUB as usize;

/// Bucket of `v` (`v <= HIGHEST`).
#[inline]
fn index_of(v: u64) -> usize {
    let msb = 63 - (v | 1).leading_zeros();
    let shift = msb.saturating_sub(SUB_BITS);
    // v >> shift is in [SUB, 2 * SUB) once shift > 0, and v itself below 2 * SUB.
    (u64::from(shift) * SUB + (v >> shift)) as usize
}

/// Lowest value and width of bucket `i`.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < 2 * SUB {
        return (i, 1);
    }
    let shift = i / SUB - 1;
    ((i % SUB + SUB) << shift, 1 << shift)
}

/// A latency histogram in nanoseconds; see the module documentation.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Box<[u64]>,
    count: u64,
    min: u64,
    max: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram (the only allocation it makes).
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Records one value (nanoseconds); values above [`HIGHEST`] go into the last bucket.
    #[inline]
    pub fn record(&mut self, v: u64) {
        let i = index_of(v.min(HIGHEST));
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest value recorded (exact; 0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the midpoint of the bucket holding the
    /// value of rank `ceil(q * count)` (at least 1) in sorted order, clamped to the
    /// exact minimum and maximum; the exact maximum for the last rank. 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == self.count {
            return self.max;
        }
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, w) = bucket_range(i);
                return (lo + w / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_range_contiguously() {
        assert_eq!(index_of(0), 0);
        assert_eq!(index_of(HIGHEST), BUCKETS - 1);
        let mut next = 0u64;
        for i in 0..BUCKETS {
            let (lo, w) = bucket_range(i);
            assert_eq!(lo, next, "bucket {i}");
            assert_eq!(index_of(lo), i);
            assert_eq!(index_of(lo + w - 1), i);
            if lo >= 2 * SUB {
                assert!(w * SUB <= lo, "bucket {i} too wide");
            }
            next = lo + w;
        }
        assert_eq!(next, HIGHEST + 1);
    }

    /// xorshift64*: deterministic test data.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn quantiles_match_a_sorted_reference() {
        for (seed, n) in [(1u64, 1usize), (7, 10), (42, 1000), (0x9e37_79b9, 200_000)] {
            let mut s = seed;
            let mut h = LatencyHistogram::new();
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                // Log-uniform-ish from 0 to ~34 s, with some exact repeats.
                let bits = 1 + rng(&mut s) % 35;
                let x = match rng(&mut s) % 10 {
                    0 => 5_000,
                    _ => rng(&mut s) % (1u64 << bits),
                };
                h.record(x);
                v.push(x);
            }
            v.sort_unstable();
            assert_eq!(h.count(), n as u64);
            assert_eq!(h.max(), v[n - 1]);
            for q in [0.0, 0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
                let want = v[rank - 1];
                let got = h.value_at_quantile(q);
                assert_eq!(
                    index_of(got),
                    index_of(want),
                    "n {n} q {q}: {got} vs {want}"
                );
                assert!(
                    (got as f64 - want as f64).abs() <= want as f64 / 128.0,
                    "n {n} q {q}: {got} vs {want}"
                );
            }
            assert_eq!(h.value_at_quantile(1.0), v[n - 1]);
        }
    }

    #[test]
    fn bounds() {
        let mut h = LatencyHistogram::new();
        assert_eq!((h.count(), h.max(), h.value_at_quantile(0.5)), (0, 0, 0));
        // Small values (below 128 ns) are exact.
        for x in [0, 1, 99, 127] {
            h.record(x);
        }
        assert_eq!(h.value_at_quantile(0.0), 0);
        assert_eq!(h.value_at_quantile(0.5), 1);
        assert_eq!(h.value_at_quantile(0.75), 99);
        assert_eq!(h.value_at_quantile(1.0), 127);
        // Above the top: the last bucket, the maximum exact.
        let mut h = LatencyHistogram::new();
        h.record(100);
        h.record(HIGHEST + 1);
        h.record(u64::MAX);
        assert_eq!(h.count(), 3);
        assert_eq!(h.max(), u64::MAX);
        assert_eq!(h.value_at_quantile(0.1), 100);
        let (lo, w) = bucket_range(BUCKETS - 1);
        assert_eq!(h.value_at_quantile(0.5), lo + w / 2);
        assert_eq!(h.value_at_quantile(1.0), u64::MAX);
        // A single value is reported exactly (clamped to min and max).
        let mut h = LatencyHistogram::new();
        h.record(12_345_678);
        assert_eq!(h.value_at_quantile(0.5), 12_345_678);
    }
}
