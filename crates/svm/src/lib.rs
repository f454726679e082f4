#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! Software virtual memory: checked access to a driver domain's region by
//! driver-domain address.
//!
//! In twin mode a NIC driver's fast path runs inside the (trusted) switch process,
//! but all of the driver's data stays in its driver domain's region: a sealed memfd
//! the switch maps as a [`Region`]. The driver names its data by **driver-domain
//! address**, the byte offset in that region. An [`Svm`] turns such an address into
//! an access to the switch's mapping, after checking it against
//!
//! * the region's bounds (overflow-safe for any `addr` and `size`), and
//! * a per-range access map ([`AccessRange`]s, from `driver_env::access`): each range
//!   is [`Access::None`], [`Access::ReadOnly`] or [`Access::ReadWrite`]; addresses no
//!   range covers have no access.
//!
//! A refused access is an [`SvmFault`] (address, size, operation, kind, and the name
//! of the range involved): never undefined behaviour, never a panic. The SVM counts
//! faults and keeps the first and the last one, so the host can report exactly what
//! went wrong even if the driver swallowed the error.
//!
//! # Cost
//!
//! [`Svm::check`] is the whole translation. For each operation ([`Op::Read`],
//! [`Op::Write`]) the SVM keeps a table of the spans where that operation is allowed
//! (adjacent ranges merged), and looks an access up in three steps:
//!
//! 1. a one-entry cache: the bounds of the span the last access of that operation
//!    hit (three compares);
//! 2. on a miss, a direct-mapped granule table: the region is cut into power-of-two
//!    granules (as coarse as the map's boundaries allow, at most 16 Ki entries) and
//!    each granule names the span that contains all of it; that span is checked and
//!    becomes the cached one (a shift, two loads, three compares);
//! 3. if that fails too (a granule that straddles a span boundary, a fault), an
//!    out-of-line binary search, and only then a fault.
//!
//! Because each table only holds spans that permit its operation, and every step
//! checks the whole access against a span, neither the cache nor a granule entry can
//! let an access skip its permission check: at worst they fail to cover the access
//! and the next step runs. A driver's per-packet pattern touches four or five ranges,
//! so step 1 alone would miss several times per packet; step 2 keeps a miss cheap.
//! Bulk data goes through [`Svm::slice`]: one check for the whole frame, then a plain
//! volatile copy ("check once per descriptor, not per byte"). `benches/svm_cost.rs`
//! measures all of this against direct vm-memory access.
//!
//! # Access semantics
//!
//! * Typed accesses (`load_*`, `store_*`) are little-endian in memory, must be
//!   naturally aligned ([`SvmFaultKind::Misaligned`] otherwise, checked first) and
//!   are single atomic operations, so they never tear. An ordering the operation
//!   cannot have (a load with `Release`/`AcqRel`, a store with `Acquire`/`AcqRel`) is
//!   strengthened to `SeqCst` instead of panicking as `std` would.
//! * [`Svm::read_obj`], [`Svm::write_obj`], [`Svm::read_bytes`], [`Svm::write_bytes`],
//!   [`Svm::fill`] are volatile byte copies with no alignment rule; they may tear if
//!   the peer writes concurrently.
//! * An access may span several ranges if every byte of it is allowed (a read across
//!   a read-write and a read-only range is fine). If its first byte is allowed but a
//!   later one is not, the fault is [`SvmFaultKind::Straddle`] naming the first
//!   refused byte; if the first byte is refused it is [`SvmFaultKind::Permission`] (in
//!   a range) or [`SvmFaultKind::Unmapped`] (in no range). Anything not entirely
//!   inside the region is `Unmapped`.
//! * A zero-length access is allowed at any address in, or at the end of, a span that
//!   allows the operation, and refused elsewhere like a one-byte access would be.
//!
//! # Limits
//!
//! * The map is fixed when the [`Svm`] is built; there is no remapping.
//! * [`Svm`] is `Send` but not `Sync` (the cache and counters are `Cell`s): one
//!   data-path thread owns it.
//! * [`Svm::slice`] checks the operation it is asked for, but the returned
//!   [`VolatileSlice`] can be both read and written: its caller (trusted switch code)
//!   must use it only for that operation.
//! * The SVM gives memory safety, not value validity: the driver domain and the NIC
//!   write the region concurrently, so every value read must still be validated.
//!
//! [`Svm`] also implements [`DriverMem`], so a driver can run against it directly
//! (faults become [`MemFault`]s through `From<SvmFault>`); doorbells, upcalls and any
//! watchdog are the twin environment's business, not this crate's.

use std::cell::Cell;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use driver_env::access::AccessRange;
use driver_env::{DriverMem, MemFault};
use driver_host::region::Region;
use vm_memory::{AtomicInteger, ByteValued, VolatileMemory, VolatileSlice};

mod fault;
mod map;

pub use driver_env::access::Access;
pub use fault::{Op, SvmError, SvmFault, SvmFaultKind};

use map::{find_range, find_span, permits, spans_for, validate, Granules, Span};

/// The spans where one operation is allowed (adjacent ones merged), and the
/// translation cache for it.
#[derive(Debug)]
struct Table {
    spans: Box<[Span]>,
    /// The one-entry translation cache: a copy of the span of `spans` the last access
    /// hit (initially one that covers nothing). The bounds, not the index, so that a
    /// hit costs no bounds check and no load through `spans`; any value is safe, since
    /// every span of `spans` allows the operation and the access is checked against it.
    hit: Cell<Span>,
    /// On a cache miss: which span each granule of the region lies in.
    granules: Granules,
}

impl Table {
    fn new(spans: Vec<Span>, region_len: u64) -> Self {
        let granules = Granules::new(&spans, region_len);
        Self {
            spans: spans.into_boxed_slice(),
            hit: Cell::new(Span::NOTHING),
            granules,
        }
    }
}

/// Checked access to a driver domain's region by driver-domain address (see the
/// crate docs).
#[derive(Debug)]
pub struct Svm {
    region: Arc<Region>,
    len: u64,
    /// The validated map, sorted by start.
    map: Box<[AccessRange]>,
    read: Table,
    write: Table,
    /// Accesses checked (granted or refused): shows that a fast path goes through
    /// this SVM at all.
    checks: Cell<u64>,
    faults: Cell<u64>,
    first_fault: Cell<Option<SvmFault>>,
    last_fault: Cell<Option<SvmFault>>,
}

/// An ordering valid for a load.
#[inline(always)]
fn load_order(o: Ordering) -> Ordering {
    match o {
        Ordering::Release | Ordering::AcqRel => Ordering::SeqCst,
        o => o,
    }
}

/// An ordering valid for a store.
#[inline(always)]
fn store_order(o: Ordering) -> Ordering {
    match o {
        Ordering::Acquire | Ordering::AcqRel => Ordering::SeqCst,
        o => o,
    }
}

impl Svm {
    /// An SVM over `region` that grants the accesses of `map`.
    ///
    /// Every range must be non-empty and inside the region, and no two may overlap;
    /// the order does not matter (the map is sorted). Addresses no range covers have
    /// no access. An empty map is valid (every access faults).
    pub fn new(region: Arc<Region>, map: &[AccessRange]) -> Result<Self, SvmError> {
        let len = region.len();
        let sorted = validate(map, len)?;
        let read = Table::new(spans_for(&sorted, Op::Read), len);
        let write = Table::new(spans_for(&sorted, Op::Write), len);
        Ok(Self {
            region,
            len,
            map: sorted.into_boxed_slice(),
            read,
            write,
            checks: Cell::new(0),
            faults: Cell::new(0),
            first_fault: Cell::new(None),
            last_fault: Cell::new(None),
        })
    }

    /// Size of the region in bytes.
    #[inline]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the region is empty (never, for a mapped region).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The region.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// The validated map, sorted by start (as given, not merged).
    pub fn map(&self) -> &[AccessRange] {
        &self.map
    }

    /// The name of the map range `addr` lies in, if any.
    pub fn range_name(&self, addr: u64) -> Option<&'static str> {
        find_range(&self.map, addr).map(|i| self.map[i].name)
    }

    /// How many accesses this SVM has checked, granted or refused.
    pub fn checks(&self) -> u64 {
        self.checks.get()
    }

    /// How many faults this SVM has raised.
    pub fn faults(&self) -> u64 {
        self.faults.get()
    }

    /// The most recent fault, if any.
    pub fn last_fault(&self) -> Option<SvmFault> {
        self.last_fault.get()
    }

    /// The first fault, if any (often the interesting one: later faults may be
    /// consequences of it).
    pub fn first_fault(&self) -> Option<SvmFault> {
        self.first_fault.get()
    }

    #[inline(always)]
    fn table(&self, op: Op) -> &Table {
        match op {
            Op::Read => &self.read,
            Op::Write => &self.write,
        }
    }

    /// Checks that `op` may touch the `size` bytes at driver-domain address `addr` and
    /// returns the offset of `addr` in the mapping. A refused access is counted and
    /// recorded (see [`Svm::last_fault`]).
    ///
    /// Three steps, each a complete check against a span that allows `op`, so none can
    /// admit an access the map forbids: the one-entry cache (the span the last access
    /// of `op` hit), then the span the granule table names for `addr` (which becomes
    /// the cached one), then, out of line, a binary search (granules that straddle a
    /// span boundary, faults, and zero-length accesses at a span's end).
    #[inline(always)]
    pub fn check(&self, addr: u64, size: u64, op: Op) -> Result<usize, SvmFault> {
        self.checks.set(self.checks.get().wrapping_add(1));
        let t = self.table(op);
        let hit = t.hit.get().covers(addr, size)
            || match t.spans.get(t.granules.hint(addr)) {
                Some(&s) if s.covers(addr, size) => {
                    t.hit.set(s);
                    true
                }
                _ => false,
            };
        if hit || self.search(addr, size, op) {
            // addr <= span end <= region length, which fits usize (it is mapped).
            Ok(addr as usize)
        } else {
            Err(self.refuse(addr, size, op))
        }
    }

    /// Neither the cache nor the granule table had it: a binary search of `op`'s
    /// spans; on a hit, the span becomes the cached one. Out of line (and returning a
    /// `bool`, in a register) so that the inlined fast path stays small.
    #[inline(never)]
    fn search(&self, addr: u64, size: u64, op: Op) -> bool {
        let t = self.table(op);
        match find_span(&t.spans, addr, size) {
            Some(i) => {
                t.hit.set(t.spans[i]);
                true
            }
            None => false,
        }
    }

    /// The fault for a refused access, counted and recorded.
    #[cold]
    #[inline(never)]
    fn refuse(&self, addr: u64, size: u64, op: Op) -> SvmFault {
        self.raise(self.classify(addr, size, op))
    }

    /// Why `[addr, addr + size)` may not be accessed with `op`.
    fn classify(&self, addr: u64, size: u64, op: Op) -> SvmFault {
        let mk = |kind, range| SvmFault {
            addr,
            size,
            op,
            kind,
            range,
        };
        let end = match addr.checked_add(size) {
            Some(end) if end <= self.len => end,
            _ => return mk(SvmFaultKind::Unmapped, self.range_name(addr)),
        };
        let Some(mut i) = find_range(&self.map, addr) else {
            return mk(SvmFaultKind::Unmapped, None);
        };
        if !permits(self.map[i].access, op) {
            return mk(SvmFaultKind::Permission { op }, Some(self.map[i].name));
        }
        // The first byte is allowed: find the first byte that is not.
        let mut cur = self.map[i].start + self.map[i].len;
        while cur < end {
            match self.map.get(i + 1) {
                Some(n) if n.start == cur && permits(n.access, op) => {
                    cur = n.start + n.len;
                    i += 1;
                }
                Some(n) if n.start == cur => {
                    return mk(SvmFaultKind::Straddle { op, at: cur }, Some(n.name))
                }
                _ => return mk(SvmFaultKind::Straddle { op, at: cur }, None),
            }
        }
        // Every byte is allowed, yet the span tables said no: cannot happen (the tables
        // are built from the same map). Refuse rather than guess.
        mk(SvmFaultKind::Backend, Some(self.map[i].name))
    }

    /// Counts and records `f`, and returns it.
    #[cold]
    fn raise(&self, f: SvmFault) -> SvmFault {
        self.faults.set(self.faults.get().wrapping_add(1));
        if self.first_fault.get().is_none() {
            self.first_fault.set(Some(f));
        }
        self.last_fault.set(Some(f));
        f
    }

    #[cold]
    #[inline(never)]
    fn fault(&self, addr: u64, size: u64, op: Op, kind: SvmFaultKind) -> SvmFault {
        let range = self.range_name(addr);
        self.raise(SvmFault {
            addr,
            size,
            op,
            kind,
            range,
        })
    }

    /// The atomic of type `T` at `addr`, checked for alignment, bounds and `op`.
    #[inline(always)]
    fn atomic<T: AtomicInteger>(&self, addr: u64, op: Op) -> Result<&T, SvmFault> {
        let size = std::mem::size_of::<T>() as u64;
        if addr & (size - 1) != 0 {
            return Err(self.fault(addr, size, op, SvmFaultKind::Misaligned));
        }
        let off = self.check(addr, size, op)?;
        self.region
            .mapping()
            .get_atomic_ref::<T>(off)
            .map_err(|_| self.fault(addr, size, op, SvmFaultKind::Backend))
    }

    /// Loads the little-endian `u16` at `addr` with `order` (`Acquire` for a ring
    /// index the peer publishes).
    #[inline(always)]
    pub fn load_u16(&self, addr: u64, order: Ordering) -> Result<u16, SvmFault> {
        let a = self.atomic::<AtomicU16>(addr, Op::Read)?;
        Ok(u16::from_le(a.load(load_order(order))))
    }

    /// Loads the little-endian `u32` at `addr` with `order`.
    #[inline(always)]
    pub fn load_u32(&self, addr: u64, order: Ordering) -> Result<u32, SvmFault> {
        let a = self.atomic::<AtomicU32>(addr, Op::Read)?;
        Ok(u32::from_le(a.load(load_order(order))))
    }

    /// Loads the little-endian `u64` at `addr` with `order`.
    #[inline(always)]
    pub fn load_u64(&self, addr: u64, order: Ordering) -> Result<u64, SvmFault> {
        let a = self.atomic::<AtomicU64>(addr, Op::Read)?;
        Ok(u64::from_le(a.load(load_order(order))))
    }

    /// Stores `val` little-endian at `addr` with `order` (`Release` to publish a ring
    /// index).
    #[inline(always)]
    pub fn store_u16(&self, addr: u64, val: u16, order: Ordering) -> Result<(), SvmFault> {
        let a = self.atomic::<AtomicU16>(addr, Op::Write)?;
        a.store(val.to_le(), store_order(order));
        Ok(())
    }

    /// Stores `val` little-endian at `addr` with `order`.
    #[inline(always)]
    pub fn store_u32(&self, addr: u64, val: u32, order: Ordering) -> Result<(), SvmFault> {
        let a = self.atomic::<AtomicU32>(addr, Op::Write)?;
        a.store(val.to_le(), store_order(order));
        Ok(())
    }

    /// Stores `val` little-endian at `addr` with `order`.
    #[inline(always)]
    pub fn store_u64(&self, addr: u64, val: u64, order: Ordering) -> Result<(), SvmFault> {
        let a = self.atomic::<AtomicU64>(addr, Op::Write)?;
        a.store(val.to_le(), store_order(order));
        Ok(())
    }

    /// A sequentially consistent fence (between publishing an index and reading the
    /// peer's event index).
    #[inline]
    pub fn fence(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// `len` bytes at `addr` as a volatile slice, after one check of the whole range
    /// for `op`. The slice itself does not enforce `op`: use it only for that.
    #[inline(always)]
    pub fn slice(&self, addr: u64, len: usize, op: Op) -> Result<VolatileSlice<'_>, SvmFault> {
        let size = len as u64;
        let off = self.check(addr, size, op)?;
        self.region
            .mapping()
            .get_slice(off, len)
            .map_err(|_| self.fault(addr, size, op, SvmFaultKind::Backend))
    }

    /// Copies `buf.len()` bytes at `addr` into `buf`.
    #[inline]
    pub fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Result<(), SvmFault> {
        let s = self.slice(addr, buf.len(), Op::Read)?;
        s.copy_to(buf);
        Ok(())
    }

    /// Copies `buf` to `addr`.
    #[inline]
    pub fn write_bytes(&self, addr: u64, buf: &[u8]) -> Result<(), SvmFault> {
        let s = self.slice(addr, buf.len(), Op::Write)?;
        s.copy_from(buf);
        Ok(())
    }

    /// Sets the `len` bytes at `addr` to `byte`.
    pub fn fill(&self, addr: u64, len: u64, byte: u8) -> Result<(), SvmFault> {
        // Checked first: a successful check bounds len by the region, so it fits usize.
        let off = self.check(addr, len, Op::Write)?;
        let backend = || self.fault(addr, len, Op::Write, SvmFaultKind::Backend);
        let n = usize::try_from(len).map_err(|_| backend())?;
        let s = self
            .region
            .mapping()
            .get_slice(off, n)
            .map_err(|_| backend())?;
        let chunk = [byte; 256];
        let mut done = 0usize;
        while done < n {
            let k = (n - done).min(chunk.len());
            let part = s.subslice(done, k).map_err(|_| backend())?;
            part.copy_from(&chunk[..k]);
            done += k;
        }
        Ok(())
    }

    /// Reads a plain-old-data value at `addr` (a volatile byte copy: no alignment
    /// rule, may tear).
    #[inline]
    pub fn read_obj<T: ByteValued>(&self, addr: u64) -> Result<T, SvmFault> {
        let mut v = T::zeroed();
        self.read_bytes(addr, v.as_mut_slice())?;
        Ok(v)
    }

    /// Writes a plain-old-data value at `addr` (a volatile byte copy: no alignment
    /// rule, may tear).
    #[inline]
    pub fn write_obj<T: ByteValued>(&self, addr: u64, val: &T) -> Result<(), SvmFault> {
        self.write_bytes(addr, val.as_slice())
    }
}

/// The SVM as a driver's memory: relaxed typed accesses, acquire/release for ring
/// indices, faults converted with `From<SvmFault> for MemFault`.
impl DriverMem for Svm {
    fn region_len(&self) -> u64 {
        self.len
    }
    #[inline]
    fn read_u16(&self, addr: u64) -> Result<u16, MemFault> {
        Ok(self.load_u16(addr, Ordering::Relaxed)?)
    }
    #[inline]
    fn read_u32(&self, addr: u64) -> Result<u32, MemFault> {
        Ok(self.load_u32(addr, Ordering::Relaxed)?)
    }
    #[inline]
    fn read_u64(&self, addr: u64) -> Result<u64, MemFault> {
        Ok(self.load_u64(addr, Ordering::Relaxed)?)
    }
    #[inline]
    fn write_u16(&self, addr: u64, val: u16) -> Result<(), MemFault> {
        Ok(self.store_u16(addr, val, Ordering::Relaxed)?)
    }
    #[inline]
    fn write_u32(&self, addr: u64, val: u32) -> Result<(), MemFault> {
        Ok(self.store_u32(addr, val, Ordering::Relaxed)?)
    }
    #[inline]
    fn write_u64(&self, addr: u64, val: u64) -> Result<(), MemFault> {
        Ok(self.store_u64(addr, val, Ordering::Relaxed)?)
    }
    #[inline]
    fn load_acquire_u16(&self, addr: u64) -> Result<u16, MemFault> {
        Ok(self.load_u16(addr, Ordering::Acquire)?)
    }
    #[inline]
    fn store_release_u16(&self, addr: u64, val: u16) -> Result<(), MemFault> {
        Ok(self.store_u16(addr, val, Ordering::Release)?)
    }
    #[inline]
    fn load_acquire_u32(&self, addr: u64) -> Result<u32, MemFault> {
        Ok(self.load_u32(addr, Ordering::Acquire)?)
    }
    #[inline]
    fn store_release_u32(&self, addr: u64, val: u32) -> Result<(), MemFault> {
        Ok(self.store_u32(addr, val, Ordering::Release)?)
    }
    fn fence(&self) {
        Svm::fence(self);
    }
    fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        Ok(Svm::read_bytes(self, addr, buf)?)
    }
    fn write_bytes(&self, addr: u64, buf: &[u8]) -> Result<(), MemFault> {
        Ok(Svm::write_bytes(self, addr, buf)?)
    }
    fn zero_bytes(&self, addr: u64, len: u64) -> Result<(), MemFault> {
        Ok(self.fill(addr, len, 0)?)
    }
}

#[cfg(test)]
mod tests;
