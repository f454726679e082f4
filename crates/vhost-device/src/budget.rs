//! Caps on the client memory a device maps.
//!
//! Each client's memory table is mapped into the switch's address space. Without a
//! cap, one client could hand us a sparse table of, say, 128 TiB and leave no
//! address space for the next client. Two caps apply to every memory table
//! (`SET_MEM_TABLE`, and the table after `ADD_MEM_REG`):
//!
//! * per client: [`crate::DeviceConfig::max_client_memory`] bytes;
//! * per switch: a [`MemoryBudget`] shared by every device of the process
//!   ([`crate::DeviceConfig::budget`]); each connection holds a [`Reservation`] of
//!   the size of its table in force.
//!
//! A table beyond either cap is refused before anything is mapped (the request
//! fails; the control thread logs why, rate limited). The reservation follows the
//! table: it grows or shrinks with `SET_MEM_TABLE`, `ADD_MEM_REG` and
//! `REMOVE_MEM_REG`, and is released when the client disconnects or resets.
//!
//! Limits: the budget counts tables in force. A replaced table stays mapped until
//! the data path has adopted the new one (one batch), so the mapped total can
//! briefly exceed the budget by one client's previous table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Default per-client cap: 64 GiB.
pub const DEFAULT_MAX_CLIENT_MEMORY: u64 = 64 << 30;
/// Default per-switch budget: 256 GiB.
pub const DEFAULT_MAX_TOTAL_CLIENT_MEMORY: u64 = 256 << 30;

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The shared budget cannot take the request.
    #[error(
        "client memory budget exceeded: {requested} bytes requested, {in_use} of {limit} in use"
    )]
    OverBudget {
        /// Bytes the new table needs (this connection's whole table).
        requested: u64,
        /// Bytes in use by all connections, this one's current table included.
        in_use: u64,
        /// The budget.
        limit: u64,
    },
}

/// Bytes of client memory all devices sharing it may map.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// The budget.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// One connection's share of a [`MemoryBudget`] (none when the device has no
/// budget). Released when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    budget: Option<Arc<MemoryBudget>>,
    bytes: u64,
}

impl Reservation {
    /// An empty reservation against `budget`.
    pub fn new(budget: Option<Arc<MemoryBudget>>) -> Self {
        Self { budget, bytes: 0 }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Changes the reservation to `bytes` if the budget allows it (shrinking always
    /// does); on error nothing changes.
    pub fn try_resize(&mut self, bytes: u64) -> Result<(), Error> {
        let Some(b) = &self.budget else {
            self.bytes = bytes;
            return Ok(());
        };
        let mine = self.bytes;
        b.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let others = used.saturating_sub(mine);
                let new = others.checked_add(bytes)?;
                (bytes <= mine || new <= b.limit).then_some(new)
            })
            .map_err(|in_use| Error::OverBudget {
                requested: bytes,
                in_use,
                limit: b.limit,
            })?;
        self.bytes = bytes;
        Ok(())
    }

    /// Sets the reservation to `bytes` whatever the budget says (to account for
    /// what is mapped after a failed change).
    pub fn force(&mut self, bytes: u64) {
        if let Some(b) = &self.budget {
            let mine = self.bytes;
            let _ = b
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    Some(used.saturating_sub(mine).saturating_add(bytes))
                });
        }
        self.bytes = bytes;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.force(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_release_it() {
        let b = MemoryBudget::new(100);
        assert_eq!(b.limit(), 100);
        assert_eq!(b.used(), 0);
        let mut r1 = Reservation::new(Some(b.clone()));
        let mut r2 = Reservation::new(Some(b.clone()));
        r1.try_resize(60).unwrap();
        assert_eq!(b.used(), 60);
        let e = r2.try_resize(50).unwrap_err();
        assert_eq!(
            e,
            Error::OverBudget {
                requested: 50,
                in_use: 60,
                limit: 100
            }
        );
        assert_eq!(r2.bytes(), 0);
        r2.try_resize(40).unwrap();
        assert_eq!(b.used(), 100);
        // Replacing a table counts the new size instead of the old.
        r1.try_resize(50).unwrap();
        r1.try_resize(60).unwrap();
        assert!(r1.try_resize(61).is_err());
        assert_eq!(r1.bytes(), 60);
        drop(r1);
        assert_eq!(b.used(), 40);
        r2.force(0);
        assert_eq!(b.used(), 0);
        r2.force(500);
        assert_eq!(b.used(), 500);
        // Shrinking is always allowed, even over budget.
        r2.try_resize(200).unwrap();
        assert_eq!(b.used(), 200);
        drop(r2);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn without_a_budget_everything_fits() {
        let mut r = Reservation::new(None);
        r.try_resize(u64::MAX).unwrap();
        assert_eq!(r.bytes(), u64::MAX);
    }

    #[test]
    fn overflow_is_refused() {
        let b = MemoryBudget::new(u64::MAX);
        let mut r1 = Reservation::new(Some(b.clone()));
        let mut r2 = Reservation::new(Some(b));
        r1.try_resize(u64::MAX - 1).unwrap();
        assert!(r2.try_resize(2).is_err());
    }
}
