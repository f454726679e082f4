#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! The environment a driver is written against.
//!
//! A driver of this project never holds a process-local pointer. Everything it owns
//! (its state, its virtqueues, its DMA buffers) lives in one memory *region*, and the
//! driver names a byte of it by its **driver-domain address**: the offset of that
//! byte from the start of the region. The same driver source then runs
//!
//! * with a *direct* environment (crate `driver-host`) that maps the region into the
//!   process and accesses it in place (inline mode, driver domain), and
//! * later with an *SVM* environment in the switch (the twin), which translates and
//!   checks every access against a region table.
//!
//! The traits here are that seam:
//!
//! * [`DriverMem`]: checked loads and stores by driver-domain address, little-endian,
//!   naturally aligned, with acquire/release variants for ring indices and a full
//!   fence for EVENT_IDX checks. A bad access is a [`MemFault`], never a panic.
//! * [`Doorbell`]: notify the device that a queue has new buffers.
//! * [`Upcalls`]: calls from a driver's fast path to its slow-path routines, which
//!   run in the driver domain. An instance in the driver domain runs them in place
//!   ([`UpcallRoute::Local`]); a twin posts them to the domain as an [`UpcallMsg`]
//!   ([`UpcallRoute::Posted`]). The messages, the stubs and the domain's dispatcher are
//!   generated from the driver source by `twin-derive`.
//! * [`FaultInjection`]: a hook through which a host asks a driver built with its
//!   `fault-injection` feature to misbehave on purpose (tests of containment).
//! * [`access`]: the per-range access a twin is granted to a driver's region (the
//!   driver describes it; the SVM enforces it).
//! * [`DriverEnv`]: all of the above, what a driver is generic over.
//!
//! [`test_env::VecEnv`] is a Vec-backed environment for unit tests (single-threaded,
//! with optional read-only ranges to provoke permission faults).
//!
//! Limits: typed accesses must be naturally aligned (rings are, by the virtio spec);
//! byte accesses have no alignment rule. The environment guarantees nothing about
//! *what* the device writes: drivers still validate every value they read back.

use std::fmt;

pub mod access;
pub mod ring_record;
pub mod test_env;

/// What went wrong with a memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The range is not (entirely) inside the region.
    OutOfBounds,
    /// The range is inside the region but this access is not permitted there.
    Permission,
    /// A typed access whose address is not a multiple of its size.
    Misaligned,
    /// The backing memory refused the access for another reason.
    Backend,
    /// The environment's watchdog expired: the caller has been running too long (a
    /// stuck fast path); every further access fails until the host intervenes.
    Watchdog,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::OutOfBounds => "out of bounds",
            FaultKind::Permission => "not permitted",
            FaultKind::Misaligned => "misaligned",
            FaultKind::Backend => "refused by the backing memory",
            FaultKind::Watchdog => "stopped by the watchdog",
        })
    }
}

/// A refused memory access: `len` bytes at driver-domain address `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("memory fault: {kind} access of {len} bytes at driver address {addr:#x}")]
pub struct MemFault {
    /// Driver-domain address (offset in the region) of the access.
    pub addr: u64,
    /// Length of the access in bytes.
    pub len: u64,
    /// Why it was refused.
    pub kind: FaultKind,
}

impl MemFault {
    /// A fault of `kind` for `len` bytes at `addr`.
    pub const fn new(addr: u64, len: u64, kind: FaultKind) -> Self {
        Self { addr, len, kind }
    }
}

/// Checks that `[addr, addr + len)` lies in a region of `region_len` bytes and, for a
/// typed access of `align` bytes, that `addr` is aligned. Returns the start as usize.
/// Environments use this so they all refuse the same accesses the same way.
pub fn check_range(addr: u64, len: u64, align: u64, region_len: u64) -> Result<usize, MemFault> {
    if align > 1 && !addr.is_multiple_of(align) {
        return Err(MemFault::new(addr, len, FaultKind::Misaligned));
    }
    match addr.checked_add(len) {
        Some(end) if end <= region_len => {
            usize::try_from(addr).map_err(|_| MemFault::new(addr, len, FaultKind::OutOfBounds))
        }
        _ => Err(MemFault::new(addr, len, FaultKind::OutOfBounds)),
    }
}

/// Checked access to the driver's own region by driver-domain address.
///
/// All multi-byte values are little-endian in memory (virtio 1.x). Methods take
/// `&self`: the region is shared with a device that writes it concurrently.
pub trait DriverMem {
    /// Size of the region in bytes; valid addresses are `0..region_len()`.
    fn region_len(&self) -> u64;
    /// Reads a `u16` (relaxed ordering).
    fn read_u16(&self, addr: u64) -> Result<u16, MemFault>;
    /// Reads a `u32` (relaxed ordering).
    fn read_u32(&self, addr: u64) -> Result<u32, MemFault>;
    /// Reads a `u64` (relaxed ordering).
    fn read_u64(&self, addr: u64) -> Result<u64, MemFault>;
    /// Writes a `u16` (relaxed ordering).
    fn write_u16(&self, addr: u64, val: u16) -> Result<(), MemFault>;
    /// Writes a `u32` (relaxed ordering).
    fn write_u32(&self, addr: u64, val: u32) -> Result<(), MemFault>;
    /// Writes a `u64` (relaxed ordering).
    fn write_u64(&self, addr: u64, val: u64) -> Result<(), MemFault>;
    /// Reads a `u16` with acquire ordering: later reads see what the writer published
    /// before its matching release store (a device's `used.idx`).
    fn load_acquire_u16(&self, addr: u64) -> Result<u16, MemFault>;
    /// Writes a `u16` with release ordering: earlier writes are visible before it
    /// (the driver's `avail.idx`).
    fn store_release_u16(&self, addr: u64, val: u16) -> Result<(), MemFault>;
    /// Reads a `u32` with acquire ordering (an AF_XDP ring's producer index).
    fn load_acquire_u32(&self, addr: u64) -> Result<u32, MemFault>;
    /// Writes a `u32` with release ordering (an AF_XDP ring's consumer index).
    fn store_release_u32(&self, addr: u64, val: u32) -> Result<(), MemFault>;
    /// A full (sequentially consistent) fence, between publishing an index and
    /// reading the peer's event index.
    fn fence(&self);
    /// Copies `buf.len()` bytes from `addr` into `buf`.
    fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault>;
    /// Copies `buf` to `addr`.
    fn write_bytes(&self, addr: u64, buf: &[u8]) -> Result<(), MemFault>;
    /// Fills `len` bytes at `addr` with zeroes.
    fn zero_bytes(&self, addr: u64, len: u64) -> Result<(), MemFault> {
        const Z: [u8; 64] = [0; 64];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(Z.len() as u64);
            // n <= 64, fits usize.
            self.write_bytes(addr + done, &Z[..n as usize])?;
            done += n;
        }
        Ok(())
    }
}

/// Notifying the device.
pub trait Doorbell {
    /// Tells the device that queue `queue` has new available buffers. Best effort:
    /// a device that is gone simply does not hear it (the host notices the hang-up
    /// elsewhere).
    fn kick(&self, queue: u16);
}

/// Most arguments an upcall carries.
pub const UPCALL_MAX_ARGS: usize = 3;

/// An upcall on the wire: an operation code and its arguments, each widened to
/// `u64` (unused ones are 0). Operation codes and argument meaning are generated per
/// driver by `twin-derive`; the receiving side decodes and validates every field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpcallMsg {
    /// Operation code (1-based; 0 is never valid).
    pub op: u32,
    /// Arguments.
    pub args: [u64; UPCALL_MAX_ARGS],
}

/// Where an upcall went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpcallRoute {
    /// This instance runs in the driver domain: run the slow path here, now.
    Local,
    /// Posted to the driver domain, which runs it asynchronously.
    Posted,
    /// Could not be posted (the channel is full or gone); the environment counted it.
    Dropped,
}

/// Decoding an [`UpcallMsg`] failed (the message is dropped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpcallError {
    /// No routine has this operation code.
    #[error("unknown upcall operation {0}")]
    UnknownOp(u32),
    /// An argument does not fit its parameter's type, or an unused one is not 0.
    #[error("upcall operation {op}: argument {index} has invalid value {value:#x}")]
    BadArg {
        /// Operation code.
        op: u32,
        /// Argument position.
        index: usize,
        /// The value found.
        value: u64,
    },
}

/// Calls from a driver's fast path into its slow path (see the crate docs).
pub trait Upcalls {
    /// Routes `msg`: [`UpcallRoute::Local`] tells the generated stub to run the
    /// routine in place; otherwise the environment has posted (or dropped) it.
    fn upcall(&self, msg: UpcallMsg) -> UpcallRoute;
}

/// A misbehaviour a driver built with its `fault-injection` feature commits on
/// request, in its fast path, so that tests can show a host contains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFault {
    /// Read the driver domain's private metadata (a twin has no access there).
    ForbiddenRead,
    /// Write past the end of the region.
    WildWrite,
    /// `panic!`.
    Panic,
    /// Loop forever re-reading a ring index (only a watchdog ends it).
    Stuck,
}

/// The host side of fault injection. Environments that never inject leave the
/// default.
pub trait FaultInjection {
    /// Takes the pending injected fault, if any (each request is returned once).
    fn take_injected_fault(&self) -> Option<InjectedFault> {
        None
    }
}

/// A received frame in driver memory, as a ring driver (AF_XDP, AF_PACKET)
/// hands it to its host: the host reads `len` bytes at `addr` during the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrame {
    /// Driver address of the first byte.
    pub addr: u64,
    /// Frame length.
    pub len: u32,
}

/// A transmit buffer a ring driver reserved for its host: the host copies at
/// most `capacity` bytes to `addr`, then commits or cancels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxChunk {
    /// The buffer's number (a UMEM chunk, a ring slot).
    pub chunk: u32,
    /// Driver address of its first byte.
    pub addr: u64,
    /// Bytes a frame may have.
    pub capacity: u32,
}

/// Commits an injected fault the same way in every driver (their
/// `fault-injection` feature): `ForbiddenRead` reads the u64 at `forbidden` (an
/// address a twin may not read: the private page), `WildWrite` writes past the
/// region's end, `Panic` panics naming `driver`, and `Stuck` spins reading the
/// u32 at `spin_on` (an address a twin may read) until the environment refuses
/// an access (a twin's watchdog).
pub fn commit_injected_fault<E: DriverMem>(
    env: &E,
    fault: InjectedFault,
    driver: &str,
    forbidden: u64,
    spin_on: u64,
) -> Result<(), MemFault> {
    match fault {
        InjectedFault::ForbiddenRead => env.read_u64(forbidden).map(drop),
        InjectedFault::WildWrite => {
            env.write_u64(env.region_len().next_multiple_of(8), 0x5457_494e_4641_554c)
        }
        InjectedFault::Panic => panic!("injected fault: the {driver} fast path panics on request"),
        InjectedFault::Stuck => loop {
            env.load_acquire_u32(spin_on)?;
            std::hint::spin_loop();
        },
    }
}

/// Everything a driver is written against.
pub trait DriverEnv: DriverMem + Doorbell + Upcalls + FaultInjection {}

impl<T: DriverMem + Doorbell + Upcalls + FaultInjection> DriverEnv for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_range_rules() {
        assert_eq!(check_range(8, 8, 8, 16), Ok(8));
        assert_eq!(
            check_range(9, 8, 8, 32).unwrap_err().kind,
            FaultKind::Misaligned
        );
        assert_eq!(
            check_range(16, 8, 8, 16).unwrap_err().kind,
            FaultKind::OutOfBounds
        );
        assert_eq!(
            check_range(u64::MAX, 2, 1, 16).unwrap_err().kind,
            FaultKind::OutOfBounds
        );
        assert_eq!(check_range(3, 5, 1, 16), Ok(3));
    }
}
