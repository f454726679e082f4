//! What the ring drivers' slow paths (AF_XDP, AF_PACKET) keep in the driver
//! domain's private page, at the same offsets in both: errors the kernel made,
//! state another instance corrupted, and whether a restart was requested. A
//! twin never touches the page: it reaches these only through upcalls.

use crate::{DriverMem, MemFault};

/// u64: kernel errors reported by fast paths.
const KERNEL_ERRORS: u64 = 0;
/// u64: the last batch's count of them.
const LAST_KERNEL_ERRORS: u64 = 8;
/// u64: corrupt shared-state entries reported.
const BAD_STATE: u64 = 16;
/// u64: 1 once a restart was requested.
pub const RESET_REQUESTED: u64 = 24;
/// Bytes of the private page the record uses.
pub const LEN: u64 = 32;

/// What the slow paths recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainErrors {
    /// Kernel errors reported by fast paths.
    pub kernel_errors: u64,
    /// The last batch's count.
    pub last_kernel_errors: u64,
    /// Corrupt shared-state entries reported.
    pub bad_state: u64,
    /// A restart was requested.
    pub reset_requested: bool,
}

/// Adds `by` to the u64 at `off` (nothing when `by` is 0).
pub fn add_u64<E: DriverMem>(env: &E, off: u64, by: u64) -> Result<(), MemFault> {
    if by == 0 {
        return Ok(());
    }
    env.write_u64(off, env.read_u64(off)?.wrapping_add(by))
}

/// Records a batch's `count` kernel errors in the record at `private`.
pub fn kernel_errors<E: DriverMem>(env: &E, private: u64, count: u32) -> Result<(), MemFault> {
    add_u64(env, private + KERNEL_ERRORS, u64::from(count))?;
    env.write_u64(private + LAST_KERNEL_ERRORS, u64::from(count))
}

/// Records `count` corrupt shared-state entries and requests a restart.
pub fn state_corrupt<E: DriverMem>(env: &E, private: u64, count: u32) -> Result<(), MemFault> {
    add_u64(env, private + BAD_STATE, u64::from(count))?;
    env.write_u64(private + RESET_REQUESTED, 1)
}

/// Whether a restart was requested.
pub fn reset_requested<E: DriverMem>(env: &E, private: u64) -> Result<bool, MemFault> {
    Ok(env.read_u64(private + RESET_REQUESTED)? != 0)
}

/// The whole record.
pub fn read<E: DriverMem>(env: &E, private: u64) -> Result<DomainErrors, MemFault> {
    Ok(DomainErrors {
        kernel_errors: env.read_u64(private + KERNEL_ERRORS)?,
        last_kernel_errors: env.read_u64(private + LAST_KERNEL_ERRORS)?,
        bad_state: env.read_u64(private + BAD_STATE)?,
        reset_requested: reset_requested(env, private)?,
    })
}
