//! The access a twin is granted to a driver's region, range by range.
//!
//! A driver describes its region as a list of [`AccessRange`]s (its state and rings
//! read-write, values the device writes read-only, the driver domain's private
//! metadata not at all). The twin runtime hands that list to the SVM, which checks
//! every access against it. Addresses not covered by any range have no access.
//!
//! The list is a description, not a proof: the host still builds it from a layout
//! it computed from its own configuration, never from values read out of the region.

/// What a twin may do in a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing: any access faults.
    None,
    /// Loads only.
    ReadOnly,
    /// Loads and stores.
    ReadWrite,
}

impl Access {
    /// Whether a load is allowed.
    pub const fn can_read(self) -> bool {
        matches!(self, Access::ReadOnly | Access::ReadWrite)
    }
    /// Whether a store is allowed.
    pub const fn can_write(self) -> bool {
        matches!(self, Access::ReadWrite)
    }
}

/// One range of a driver's region and the twin's access to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRange {
    /// First driver-domain address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The twin's access.
    pub access: Access,
    /// What lives there (for fault reports).
    pub name: &'static str,
}

impl AccessRange {
    /// One past the last address (saturating: a range that would pass the end of
    /// the address space ends there; validation refuses it anyway).
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}
