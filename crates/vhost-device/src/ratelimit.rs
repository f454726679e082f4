//! A tiny rate limiter for log lines a client can trigger.
//!
//! Each key (for example a drop reason) may log at most `per_sec` lines per
//! one-second window; suppressed lines are counted and the count is reported with
//! the next line that is let through. It never allocates after construction. It is
//! not thread-safe; each data-path or control thread owns its own.

use std::time::{Duration, Instant};

/// Errors of this module (none can occur today; kept for the crate's convention).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key outside the limiter's range was used.
    #[error("rate limiter key {0} out of range")]
    BadKey(usize),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    window: Option<Instant>,
    count: u32,
    suppressed: u64,
}

/// Per-key limiter with `N` keys.
#[derive(Debug, Clone)]
pub struct RateLimiter<const N: usize> {
    per_sec: u32,
    slots: [Slot; N],
}

impl<const N: usize> RateLimiter<N> {
    /// At most `per_sec` lines per second per key.
    pub fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            slots: [Slot {
                window: None,
                count: 0,
                suppressed: 0,
            }; N],
        }
    }

    /// Whether a line for `key` may be logged now. On `Some(n)`, log the line and
    /// mention that `n` earlier lines were suppressed. Out-of-range keys are
    /// always suppressed.
    pub fn check(&mut self, key: usize) -> Option<u64> {
        let per_sec = self.per_sec;
        let slot = self.slots.get_mut(key)?;
        let now = Instant::now();
        let fresh = match slot.window {
            Some(start) => now.duration_since(start) >= Duration::from_secs(1),
            None => true,
        };
        if fresh {
            slot.window = Some(now);
            slot.count = 0;
        }
        if slot.count < per_sec {
            slot.count += 1;
            let s = slot.suppressed;
            slot.suppressed = 0;
            Some(s)
        } else {
            slot.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key() {
        let mut rl = RateLimiter::<2>::new(3);
        let allowed = (0..10).filter(|_| rl.check(0).is_some()).count();
        assert_eq!(allowed, 3);
        assert!(rl.check(1).is_some());
        assert!(rl.check(5).is_none());
    }
}
