//! A token bucket: at most `rate` frames per second, in bursts of at most
//! `capacity` frames.
//!
//! For senders that pace themselves (the traffic generator, the NIC's source
//! mode): each round the sender refills the bucket from the monotonic clock
//! ([`TokenBucket::refill`]) and takes what it may send ([`TokenBucket::take`]:
//! up to a number of frames; [`TokenBucket::take_exact`]: a whole batch or
//! nothing). An idle sender asks how long until a batch is due
//! ([`TokenBucket::until`]).
//!
//! Accounting is in integer nano-frames (a frame is 10^9 units, and a nanosecond at
//! `rate` frames per second accrues `rate` units), so accrual is exact: rates below
//! one frame per millisecond, or per second, neither drift nor round to zero
//! however often the bucket is refilled. Tokens that would fill the bucket past its
//! capacity are not kept: [`TokenBucket::refill`] returns how many frames' worth
//! spilled, for a sender that counts frames it was too late for.
//!
//! The bucket starts empty, and accrues from its first refill on
//! ([`TokenBucket::reset`] starts it again). Time that goes backwards (an
//! `Instant` older than the last refill, which a monotonic clock never gives but a
//! caller may pass) accrues nothing and does not move the bucket's clock back, so
//! no interval is counted twice.
//!
//! Limits: capacity at most [`MAX_CAPACITY`] frames; a rate of 0 never grants.
//! One bucket per sender (no locking, `&mut self`).

use std::time::{Duration, Instant};

/// Units per frame.
const NANO: u64 = 1_000_000_000;

/// The largest capacity, in frames (the bucket counts in nano-frames in a `u64`).
pub const MAX_CAPACITY: u64 = u64::MAX / NANO;

/// Errors of [`TokenBucket::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    /// A bucket must hold at least one frame.
    #[error("a token bucket must hold at least one frame")]
    ZeroCapacity,
    /// The capacity is over [`MAX_CAPACITY`].
    #[error("a token bucket holds at most {MAX_CAPACITY} frames, not {0}")]
    CapacityTooLarge(u64),
}

/// A token bucket (see the module documentation).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Frames per second.
    rate: u64,
    /// In nano-frames.
    capacity: u64,
    /// In nano-frames, at most `capacity`.
    tokens: u64,
    /// The last refill; `None` before the first.
    last: Option<Instant>,
}

impl TokenBucket {
    /// `rate_pps` frames per second, at most `capacity` frames at once; empty.
    pub fn new(rate_pps: u64, capacity: u64) -> Result<Self, BucketError> {
        if capacity == 0 {
            return Err(BucketError::ZeroCapacity);
        }
        if capacity > MAX_CAPACITY {
            return Err(BucketError::CapacityTooLarge(capacity));
        }
        Ok(Self {
            rate: rate_pps,
            capacity: capacity * NANO,
            tokens: 0,
            last: None,
        })
    }

    /// The bucket of a sender that sends `batch` frames at a time: two batches, and
    /// with `sleep` (a sender that sleeps up to that long between rounds) at least
    /// twice what accrues during one sleep, rounded up to a whole frame, so that
    /// sleeping never lowers the rate.
    pub fn for_batches(
        rate_pps: u64,
        batch: usize,
        sleep: Option<Duration>,
    ) -> Result<Self, BucketError> {
        let two = (batch as u64).saturating_mul(2);
        let cover = sleep.map_or(0, |s| {
            let units = u128::from(rate_pps) * 2 * s.as_nanos();
            u64::try_from(units.div_ceil(u128::from(NANO))).unwrap_or(u64::MAX)
        });
        Self::new(rate_pps, two.max(cover))
    }

    /// Frames per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Capacity in frames.
    pub fn capacity(&self) -> u64 {
        self.capacity / NANO
    }

    /// Tokens held, in frames (fractions included).
    pub fn tokens(&self) -> f64 {
        self.tokens as f64 / NANO as f64
    }

    /// Adds what accrued since the last refill (nothing at the first, which starts
    /// the bucket's clock). Returns the frames' worth that did not fit (spilled).
    #[inline]
    pub fn refill(&mut self, now: Instant) -> f64 {
        let Some(last) = self.last else {
            self.last = Some(now);
            return 0.0;
        };
        if now <= last {
            return 0.0;
        }
        self.last = Some(now);
        let accrued = now.duration_since(last).as_nanos() * u128::from(self.rate);
        let total = u128::from(self.tokens) + accrued;
        let cap = u128::from(self.capacity);
        if total > cap {
            self.tokens = self.capacity;
            // Precise enough for a counter of frames given up.
            (total - cap) as f64 / NANO as f64
        } else {
            // total <= capacity, which is a u64.
            self.tokens = u64::try_from(total).unwrap_or(self.capacity);
            0.0
        }
    }

    /// Takes up to `n` whole frames; returns how many were granted.
    #[inline]
    pub fn take(&mut self, n: usize) -> usize {
        let whole = self.tokens / NANO;
        let granted = whole.min(n as u64);
        self.tokens -= granted * NANO;
        granted as usize
    }

    /// Takes exactly `n` frames if the bucket holds them; returns `n` or 0.
    #[inline]
    pub fn take_exact(&mut self, n: usize) -> usize {
        let want = (n as u64).saturating_mul(NANO);
        if self.tokens >= want {
            self.tokens -= want;
            n
        } else {
            0
        }
    }

    /// How long until `n` frames are held, counting at least one frame's time
    /// (rounded up to the nanosecond, so a refill after it grants them, if the
    /// capacity allows); `None` at a rate of 0 (never).
    pub fn until(&self, n: usize) -> Option<Duration> {
        if self.rate == 0 {
            return None;
        }
        let want = u128::from(n as u64) * u128::from(NANO);
        let missing = want
            .saturating_sub(u128::from(self.tokens))
            .max(u128::from(NANO));
        let ns = missing.div_ceil(u128::from(self.rate));
        Some(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
    }

    /// Empties the bucket; it accrues again from the next refill (a sender whose
    /// receiver went away).
    pub fn reset(&mut self) {
        self.tokens = 0;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, us: u64) -> Instant {
        t0 + Duration::from_micros(us)
    }

    #[test]
    fn starts_empty_and_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100).unwrap();
        assert_eq!(b.refill(t0), 0.0);
        assert_eq!(b.take(10), 0, "empty at the start");
        b.refill(at(t0, 7_500));
        assert_eq!(b.take(10), 7, "7.5 frames accrued: 7 whole");
        assert_eq!(b.tokens(), 0.5);
        b.refill(at(t0, 10_000));
        assert_eq!(b.take(2), 2);
        assert_eq!(b.take(10), 1);
        assert_eq!(b.take(10), 0);
        // The first refill starts the clock: nothing accrued before it.
        let mut late = TokenBucket::new(1000, 100).unwrap();
        late.refill(at(t0, 50_000));
        assert_eq!(late.take(100), 0);
    }

    #[test]
    fn capped_at_the_capacity_and_the_rest_spills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 16).unwrap();
        b.refill(t0);
        assert_eq!(b.refill(at(t0, 16_000)), 0.0);
        assert_eq!(b.refill(at(t0, 20_500)), 4.5);
        assert_eq!(b.take(100), 16);
        assert_eq!(b.capacity(), 16);
        // A whole batch or nothing.
        b.refill(at(t0, 27_000));
        assert_eq!(b.take_exact(8), 0);
        assert_eq!(b.take(1), 1, "take_exact left them");
        assert_eq!(b.tokens(), 5.5);
        b.refill(at(t0, 35_000));
        assert_eq!(b.take_exact(8), 8);
        assert_eq!(b.take_exact(8), 0);
    }

    #[test]
    fn time_going_backwards_accrues_nothing_and_counts_nothing_twice() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1000).unwrap();
        b.refill(at(t0, 10_000));
        b.refill(at(t0, 20_000));
        assert_eq!(b.take(1000), 10);
        assert_eq!(b.refill(at(t0, 5_000)), 0.0);
        assert_eq!(b.take(1000), 0);
        // From the latest time seen, not from the one that went back.
        b.refill(at(t0, 21_000));
        assert_eq!(b.take(1000), 1);
        // The same instant twice: nothing.
        b.refill(at(t0, 21_000));
        assert_eq!(b.take(1000), 0);
    }

    #[test]
    fn rates_below_one_per_millisecond_are_exact() {
        let t0 = Instant::now();
        // 3 frames a second, refilled every microsecond for a second: exactly 3.
        let mut b = TokenBucket::new(3, 10).unwrap();
        b.refill(t0);
        let mut granted = 0;
        for us in 1..=1_000_000u64 {
            b.refill(at(t0, us));
            granted += b.take(10);
        }
        assert_eq!(granted, 3);
        // 1 frame a second: not a nanosecond early.
        let mut one = TokenBucket::new(1, 1).unwrap();
        one.refill(t0);
        one.refill(t0 + Duration::from_nanos(999_999_999));
        assert_eq!(one.take(1), 0);
        one.refill(t0 + Duration::from_secs(1));
        assert_eq!(one.take(1), 1);
        // 500 a second, refilled every 100 us: one frame every 2 ms.
        let mut b = TokenBucket::new(500, 10).unwrap();
        b.refill(t0);
        let mut when = Vec::new();
        for step in 1..=100u64 {
            b.refill(at(t0, step * 100));
            if b.take(1) == 1 {
                when.push(step * 100);
            }
        }
        assert_eq!(when, [2_000, 4_000, 6_000, 8_000, 10_000]);
    }

    #[test]
    fn until_says_when_a_batch_is_due() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 16).unwrap();
        b.refill(t0);
        assert_eq!(b.until(8), Some(Duration::from_millis(8)));
        b.refill(at(t0, 3_000));
        assert_eq!(b.until(8), Some(Duration::from_millis(5)));
        // Already held: at least one frame's time.
        b.refill(at(t0, 20_000));
        assert_eq!(b.until(8), Some(Duration::from_millis(1)));
        // Rounded up: a refill at the due time grants.
        let mut b = TokenBucket::new(3, 4).unwrap();
        b.refill(t0);
        let due = b.until(1).unwrap();
        assert_eq!(due, Duration::from_nanos(333_333_334));
        b.refill(t0 + due);
        assert_eq!(b.take(1), 1);
        // Rate 0: never, and nothing accrues.
        let mut zero = TokenBucket::new(0, 4).unwrap();
        zero.refill(t0);
        zero.refill(at(t0, 10_000_000));
        assert_eq!(zero.take(4), 0);
        assert_eq!(zero.until(1), None);
    }

    #[test]
    fn reset_empties_and_restarts_the_clock() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100).unwrap();
        b.refill(t0);
        b.refill(at(t0, 50_000));
        b.reset();
        assert_eq!(b.tokens(), 0.0);
        b.refill(at(t0, 90_000));
        assert_eq!(b.take(100), 0, "nothing accrued while reset");
        b.refill(at(t0, 92_000));
        assert_eq!(b.take(100), 2);
    }

    #[test]
    fn sizes() {
        assert_eq!(
            TokenBucket::new(1, 0).unwrap_err(),
            BucketError::ZeroCapacity
        );
        assert_eq!(
            TokenBucket::new(1, MAX_CAPACITY + 1).unwrap_err(),
            BucketError::CapacityTooLarge(MAX_CAPACITY + 1)
        );
        assert!(TokenBucket::new(u64::MAX, MAX_CAPACITY).is_ok());
        // Two batches; with a sleep, at least twice what accrues in it, rounded up.
        let ms10 = Some(Duration::from_millis(10));
        assert_eq!(
            TokenBucket::for_batches(1000, 32, None).unwrap().capacity(),
            64
        );
        assert_eq!(
            TokenBucket::for_batches(1000, 32, ms10).unwrap().capacity(),
            64
        );
        assert_eq!(
            TokenBucket::for_batches(1_000_000, 32, ms10)
                .unwrap()
                .capacity(),
            20_000
        );
        assert_eq!(
            TokenBucket::for_batches(3_333, 1, ms10).unwrap().capacity(),
            67
        );
        // A huge rate does not overflow anything.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(u64::MAX, 10).unwrap();
        b.refill(t0);
        assert!(b.refill(t0 + Duration::from_secs(3600)) > 0.0);
        assert_eq!(b.take(100), 10);
    }
}
