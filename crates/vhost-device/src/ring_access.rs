//! Raw access to a split virtqueue's three areas in client memory.
//!
//! One of the crate's two `unsafe` modules (with [`crate::fault_fence`], which
//! makes a client's truncated file read as zeros instead of faulting, so these
//! accesses never kill the process). A [`RawRing`] is built once per
//! snapshot: the descriptor table, avail ring and used ring are each looked up as
//! one contiguous slice of the client's memory (which fails when they are not fully
//! inside one region), their host alignment is checked, and the memory mapping is
//! kept alive by an `Arc` held in the ring. After that, every accessor only needs
//! an index below the queue size, which each accessor enforces by masking
//! (`& (size - 1)`, size a power of two), so no access can leave the validated
//! areas whatever the client writes into the rings.
//!
//! The client writes the same memory concurrently. Shared index fields are
//! accessed as atomics (acquire on avail idx, release on used idx); everything else
//! with volatile reads and writes, as vm-memory does.
//!
//! Limits: split rings only, little-endian host (x86-64 / aarch64), queue size at
//! most 32768.

use std::sync::atomic::{fence, AtomicU16, Ordering};
use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::fault_fence::ClientMemory;

/// Largest queue size virtio allows for split rings.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Descriptor flag: the chain continues at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable.
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer holds an indirect table.
pub const DESC_F_INDIRECT: u16 = 4;
/// Used-ring flag: the device does not want kicks.
pub const USED_F_NO_NOTIFY: u16 = 1;
/// Avail-ring flag: the driver does not want interrupts.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Errors of [`RawRing::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Size zero, above 32768, or not a power of two.
    #[error("invalid queue size {0}")]
    BadSize(u32),
    /// A ring area is not inside one region of the client's memory.
    #[error("{0} ring at {1:#x} (+{2} bytes) is outside the client's memory")]
    OutOfMemory(&'static str, u64, usize),
    /// A ring area is misaligned.
    #[error("{0} ring at {1:#x} is not aligned to {2}")]
    Misaligned(&'static str, u64, usize),
}

/// One descriptor as read from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Guest-physical buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// `DESC_F_*` flags.
    pub flags: u16,
    /// Next descriptor index when `DESC_F_NEXT`.
    pub next: u16,
}

/// A validated split ring. Holds the memory mapping alive.
#[derive(Debug)]
pub struct RawRing {
    mem: Arc<ClientMemory>,
    desc: *const u8,
    avail: *mut u8,
    used: *mut u8,
    size: u16,
    mask: u16,
}

// The raw pointers point into the mapping owned by `mem` (an `Arc` whose target is
// `Send + Sync`); the ring is used by one thread at a time, and all accesses through
// the pointers are atomic or volatile on memory shared with another process anyway.
// SAFETY: moving the ring to another thread moves nothing thread-bound.
unsafe impl Send for RawRing {}

fn area(
    mem: &ClientMemory,
    what: &'static str,
    gpa: u64,
    len: usize,
    align: usize,
) -> Result<*mut u8, Error> {
    let s = mem
        .get_slice(GuestAddress(gpa), len)
        .map_err(|_| Error::OutOfMemory(what, gpa, len))?;
    if s.len() != len {
        return Err(Error::OutOfMemory(what, gpa, len));
    }
    let p = s.ptr_guard_mut().as_ptr();
    if !(p as usize).is_multiple_of(align) || !gpa.is_multiple_of(align as u64) {
        return Err(Error::Misaligned(what, gpa, align));
    }
    Ok(p)
}

impl RawRing {
    /// Validates and maps a ring of `size` entries.
    pub fn new(
        mem: Arc<ClientMemory>,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    ) -> Result<Self, Error> {
        if size == 0 || size > MAX_QUEUE_SIZE || !size.is_power_of_two() {
            return Err(Error::BadSize(u32::from(size)));
        }
        let n = usize::from(size);
        // Sizes include the event-index fields (used_event / avail_event), which the
        // client lays out whether or not EVENT_IDX is negotiated.
        let d = area(&mem, "descriptor", desc, 16 * n, 16)?;
        let a = area(&mem, "avail", avail, 4 + 2 * n + 2, 2)?;
        let u = area(&mem, "used", used, 4 + 8 * n + 2, 4)?;
        Ok(Self {
            mem,
            desc: d,
            avail: a,
            used: u,
            size,
            mask: size - 1,
        })
    }

    /// The client memory this ring lives in.
    #[inline]
    pub fn mem(&self) -> &Arc<ClientMemory> {
        &self.mem
    }

    /// Queue size.
    #[inline]
    pub fn size(&self) -> u16 {
        self.size
    }

    #[inline]
    fn atomic_u16(&self, p: *mut u8) -> &AtomicU16 {
        // Callers pass a pointer inside one of the validated areas at an even offset
        // from a 2-aligned base; the mapping lives as long as `self.mem`, which
        // outlives the returned borrow of `self`; the client's concurrent access is
        // what atomics are for.
        // SAFETY: so the pointer is aligned, in bounds and alive for a u16.
        unsafe { AtomicU16::from_ptr(p.cast::<u16>()) }
    }

    /// `avail->flags` (relaxed; order it with [`full_fence`] where it matters).
    #[inline]
    pub fn avail_flags(&self) -> u16 {
        u16::from_le(self.atomic_u16(self.avail).load(Ordering::Relaxed))
    }

    /// `avail->idx`, with acquire ordering: entries before it are visible.
    #[inline]
    pub fn avail_idx(&self) -> u16 {
        // SAFETY: offset 2 is inside the validated avail area (length >= 6).
        let p = unsafe { self.avail.add(2) };
        u16::from_le(self.atomic_u16(p).load(Ordering::Acquire))
    }

    /// `avail->ring[idx % size]`: a head index as the client wrote it (unchecked).
    #[inline]
    pub fn avail_entry(&self, idx: u16) -> u16 {
        let slot = usize::from(idx & self.mask);
        // SAFETY: slot < size, so 4 + 2*slot + 2 <= 4 + 2*size, inside the avail area.
        let p = unsafe { self.avail.add(4 + 2 * slot) };
        u16::from_le(self.atomic_u16(p).load(Ordering::Relaxed))
    }

    /// `used_event` (at the end of the avail ring).
    #[inline]
    pub fn used_event(&self) -> u16 {
        // SAFETY: offset 4 + 2*size is the last u16 of the validated avail area.
        let p = unsafe { self.avail.add(4 + 2 * usize::from(self.size)) };
        u16::from_le(self.atomic_u16(p).load(Ordering::Relaxed))
    }

    /// Descriptor `i % size`. Callers check `i < size` first to count bad indices.
    #[inline]
    pub fn desc(&self, i: u16) -> Desc {
        let slot = usize::from(i & self.mask);
        // slot < size, so the 16 bytes at 16*slot are inside the validated descriptor
        // area, which is 16-aligned; fields are read at their natural alignment.
        // SAFETY: in bounds, aligned, volatile reads of shared memory.
        unsafe {
            let p = self.desc.add(16 * slot);
            Desc {
                addr: u64::from_le(std::ptr::read_volatile(p.cast::<u64>())),
                len: u32::from_le(std::ptr::read_volatile(p.add(8).cast::<u32>())),
                flags: u16::from_le(std::ptr::read_volatile(p.add(12).cast::<u16>())),
                next: u16::from_le(std::ptr::read_volatile(p.add(14).cast::<u16>())),
            }
        }
    }

    /// Writes used element `idx % size`.
    #[inline]
    pub fn set_used_elem(&self, idx: u16, id: u32, len: u32) {
        let slot = usize::from(idx & self.mask);
        // SAFETY: slot < size, so the 8 bytes at 4 + 8*slot are inside the validated
        // used area, 4-aligned; volatile stores at natural alignment.
        unsafe {
            let p = self.used.add(4 + 8 * slot);
            std::ptr::write_volatile(p.cast::<u32>(), id.to_le());
            std::ptr::write_volatile(p.add(4).cast::<u32>(), len.to_le());
        }
    }

    /// Publishes `used->idx` with release ordering (used elements before it visible).
    #[inline]
    pub fn set_used_idx(&self, idx: u16) {
        // SAFETY: offset 2 is inside the validated used area (length >= 6).
        let p = unsafe { self.used.add(2) };
        self.atomic_u16(p).store(idx.to_le(), Ordering::Release);
    }

    /// Writes `used->flags`.
    #[inline]
    pub fn set_used_flags(&self, flags: u16) {
        self.atomic_u16(self.used)
            .store(flags.to_le(), Ordering::Relaxed);
    }

    /// Writes `avail_event` (at the end of the used ring).
    #[inline]
    pub fn set_avail_event(&self, v: u16) {
        // SAFETY: offset 4 + 8*size is the last u16 of the validated used area.
        let p = unsafe { self.used.add(4 + 8 * usize::from(self.size)) };
        self.atomic_u16(p).store(v.to_le(), Ordering::Relaxed);
    }
}

/// A full memory barrier, as the virtio spec asks before reading `used_event` or
/// the avail flags for a notification decision (and after re-enabling kicks).
#[inline]
pub fn full_fence() {
    fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_layouts() {
        let mem = Arc::new(ClientMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
        assert!(matches!(
            RawRing::new(mem.clone(), 3, 0, 0x1000, 0x2000),
            Err(Error::BadSize(3))
        ));
        assert!(matches!(
            RawRing::new(mem.clone(), 256, 0xff00, 0x1000, 0x2000),
            Err(Error::OutOfMemory("descriptor", _, _))
        ));
        assert!(matches!(
            RawRing::new(mem.clone(), 256, 8, 0x1000, 0x2000),
            Err(Error::Misaligned("descriptor", _, 16))
        ));
        assert!(RawRing::new(mem, 256, 0, 0x1000, 0x2000).is_ok());
    }

    #[test]
    fn ring_areas_must_be_aligned_in_guest_and_host_addresses() {
        // A region that starts 8 bytes past a 16-byte boundary: inside it, guest
        // and host addresses are never both 16-aligned.
        let odd = Arc::new(ClientMemory::from_ranges(&[(GuestAddress(8), 0x10000)]).unwrap());
        // Guest-aligned, but 8 bytes into a page on the host.
        assert_eq!(
            RawRing::new(odd.clone(), 16, 0x10, 0x1008, 0x2008).err(),
            Some(Error::Misaligned("descriptor", 0x10, 16))
        );
        // Host-aligned (the region's first byte), but not in the guest.
        assert_eq!(
            RawRing::new(odd, 16, 0x8, 0x1008, 0x2008).err(),
            Some(Error::Misaligned("descriptor", 0x8, 16))
        );
        let mem = Arc::new(ClientMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
        assert_eq!(
            RawRing::new(mem.clone(), 16, 0x100, 0x1001, 0x2000).err(),
            Some(Error::Misaligned("avail", 0x1001, 2))
        );
        assert_eq!(
            RawRing::new(mem.clone(), 16, 0x100, 0x1002, 0x2002).err(),
            Some(Error::Misaligned("used", 0x2002, 4))
        );
        let r = RawRing::new(mem, 16, 0x100, 0x1002, 0x2004).unwrap();
        assert_eq!(r.size(), 16);
    }

    #[test]
    fn ring_sizes_up_to_32768_powers_of_two_are_accepted() {
        let mem = Arc::new(ClientMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap());
        for bad in [0u16, 6, 32767, 32769] {
            assert_eq!(
                RawRing::new(mem.clone(), bad, 0, 0x8_0000, 0x9_0000).err(),
                Some(Error::BadSize(u32::from(bad)))
            );
        }
        let r = RawRing::new(mem, MAX_QUEUE_SIZE, 0, 0x8_0000, 0x9_0000).unwrap();
        assert_eq!(r.size(), MAX_QUEUE_SIZE);
    }
}
