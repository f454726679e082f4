//! What a refused access looks like ([`SvmFault`]) and why a map is refused
//! ([`SvmError`]).

use std::fmt;

use driver_env::{FaultKind, MemFault};

/// The operation an access performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A load: the bytes are copied out of the region.
    Read,
    /// A store: the bytes are copied into the region.
    Write,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Write => "write",
        })
    }
}

/// Why an access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvmFaultKind {
    /// The access does not lie entirely inside the region (including address or
    /// length overflow), or its first byte is inside the region but in no range of
    /// the map.
    Unmapped,
    /// The first byte lies in a range of the map whose access forbids `op`.
    Permission {
        /// The refused operation.
        op: Op,
    },
    /// A typed access (`load_*`/`store_*`) whose address is not a multiple of its
    /// size. Checked before anything else, like the direct environment does.
    Misaligned,
    /// The access is inside the region and its first byte may be accessed, but it
    /// runs on into memory where `op` is not allowed (a range that forbids it, or a
    /// gap no range covers). `at` is the first refused byte; the fault's `range` names
    /// the range `at` lies in, if any.
    Straddle {
        /// The refused operation.
        op: Op,
        /// First driver-domain address the access may not touch.
        at: u64,
    },
    /// The check passed but vm-memory still refused the access (should not happen:
    /// the checks are a superset of vm-memory's). Kept so that such a case is a
    /// fault, not a panic.
    Backend,
}

/// A refused access: `size` bytes at driver-domain address `addr`.
///
/// `Copy`, so the SVM can keep the last one for the host to report even when the
/// driver swallowed the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct SvmFault {
    /// Driver-domain address (offset in the region) of the access.
    pub addr: u64,
    /// Length of the access in bytes.
    pub size: u64,
    /// The operation attempted (also inside `kind` where the kind is about it).
    pub op: Op,
    /// Why it was refused.
    pub kind: SvmFaultKind,
    /// Name of the map range the refused byte lies in (`addr`, or `at` for a
    /// [`SvmFaultKind::Straddle`]); `None` if it lies in no range.
    pub range: Option<&'static str>,
}

impl fmt::Display for SvmFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "svm fault: {} of {} bytes at driver address {:#x}: ",
            self.op, self.size, self.addr
        )?;
        match self.kind {
            SvmFaultKind::Unmapped => f.write_str("unmapped")?,
            SvmFaultKind::Permission { op } => write!(f, "no {op} access")?,
            SvmFaultKind::Misaligned => write!(f, "not aligned to {} bytes", self.size)?,
            SvmFaultKind::Straddle { op, at } => {
                write!(f, "crosses at {at:#x} into memory without {op} access")?
            }
            SvmFaultKind::Backend => f.write_str("refused by the backing memory")?,
        }
        if let Some(name) = self.range {
            write!(f, " (range {name:?})")?;
        }
        Ok(())
    }
}

impl From<SvmFault> for MemFault {
    /// `Unmapped` becomes `OutOfBounds`; `Permission` and `Straddle` become
    /// `Permission` (a straddle past the region's end is reported as `Unmapped`, so a
    /// straddle is always inside the region); `Misaligned` and `Backend` keep their
    /// names.
    fn from(f: SvmFault) -> Self {
        let kind = match f.kind {
            SvmFaultKind::Unmapped => FaultKind::OutOfBounds,
            SvmFaultKind::Permission { .. } | SvmFaultKind::Straddle { .. } => {
                FaultKind::Permission
            }
            SvmFaultKind::Misaligned => FaultKind::Misaligned,
            SvmFaultKind::Backend => FaultKind::Backend,
        };
        MemFault::new(f.addr, f.size, kind)
    }
}

/// A map the SVM refuses to build from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvmError {
    /// A range of length 0.
    #[error("access range {name:?} at {start:#x} is empty")]
    EmptyRange {
        /// The range's name.
        name: &'static str,
        /// Its start.
        start: u64,
    },
    /// A range that is not entirely inside the region (or whose end overflows).
    #[error(
        "access range {name:?} ({len:#x} bytes at {start:#x}) is not inside the \
         {region_len:#x}-byte region"
    )]
    OutsideRegion {
        /// The range's name.
        name: &'static str,
        /// Its start.
        start: u64,
        /// Its length.
        len: u64,
        /// The region's size.
        region_len: u64,
    },
    /// Two ranges share at least one byte.
    #[error("access ranges {first:?} and {second:?} overlap at {at:#x}")]
    Overlap {
        /// The range that starts first.
        first: &'static str,
        /// The range that starts inside it.
        second: &'static str,
        /// Where `second` starts.
        at: u64,
    },
}
