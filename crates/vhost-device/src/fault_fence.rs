//! Mapping a client's memory so that a client that shrinks its file cannot crash us.
//!
//! A vhost-user client hands us file descriptors of its memory and we map them
//! shared. If the client later shrinks such a file (`ftruncate`), our next access
//! to a page past the new end raises SIGBUS, whose default action ends the whole
//! switch, every port with it. This module is the policy against that, and, with
//! [`crate::ring_access`], the crate's only `unsafe` code.
//!
//! # Policy
//!
//! * A memfd sealed against shrinking (`F_GET_SEALS` contains `F_SEAL_SHRINK`,
//!   as QEMU's `memory-backend-memfd` does by default) cannot fault: it is mapped
//!   and nothing more.
//! * Every other file (an unsealed memfd, DPDK's hugetlbfs files, a file in
//!   `/dev/shm`) is mapped *fenced*: the mapping is entered in a fixed-size,
//!   lock-free registry ([`MAX_FENCES`] slots of atomics in static memory) with
//!   the port's [`FaultFlag`]. A SIGBUS handler (installed once, `SA_SIGINFO`)
//!   looks the faulting address up; inside a registered mapping it maps anonymous
//!   zero memory over the whole mapping (`mmap(MAP_FIXED | MAP_PRIVATE |
//!   MAP_ANONYMOUS)`, async-signal-safe; the mapping is aligned and sized to its
//!   page size, huge pages included, so the replacement is legal), sets the flag
//!   and returns: the faulting access retries and reads zeros. The data path sees
//!   the flag at its next batch, drops the port's rings and has the control
//!   thread disconnect the client (`memory_faults` in the port's counters). A
//!   client that reconnects gets a working port with fresh mappings.
//! * Any other SIGBUS (an address we did not register, or one sent with
//!   `kill`) goes to the handler that was installed before ours, or, if there
//!   was none, gets the default action back and is re-raised: the process dies as
//!   it would have without this module.
//! * A mapping that cannot be registered (registry full) is refused: the
//!   client's memory-table request fails.
//!
//! # Lifetimes: why an entry outlives every access and dies before the unmap
//!
//! The mapping is made here ([`map_client_file`]) and owned by a [`Fence`], which
//! is the *bitmap* of the vm-memory `MmapRegion` built over it (a bitmap that
//! tracks nothing; vm-memory's `MmapRegion` is generic over it). The `MmapRegion`
//! is built as "not owned", so vm-memory never unmaps it; the `Fence` does, in
//! its `Drop`, which removes the registry entry first and unmaps second. The
//! `Fence` is a field of the `MmapRegion`, which is a field of the
//! [`ClientRegion`], so it is dropped exactly when the last `Arc<ClientRegion>`
//! goes, whoever holds it:
//!
//! * the control thread's memory table (`MemRegion` in [`crate::control`]) and
//!   the [`ClientMemory`] built from it;
//! * the snapshot published to the data path ([`crate::shared::Published`]);
//! * the data path's rings ([`crate::ring_access::RawRing`] keeps an
//!   `Arc<ClientMemory>`; its raw pointers are only used through `&self`, so
//!   never after the ring, and thus its `Arc`, is gone), and the frames of one
//!   batch, which borrow from that ring's memory.
//!
//! Every access to a client mapping goes through one of these, so while any
//! access is possible the `Fence`, and the entry, exist; the entry is removed
//! before `munmap`, so the address range can never be reused by another mapping
//! while a stale entry points at it. Removing an entry waits (spins) until no
//! handler is inside that slot (a per-slot `busy` count, incremented by the
//! handler before it reads the slot's state; both sides use sequentially
//! consistent operations), so a handler never maps over a range that is being
//! unmapped, and the [`FaultFlag`] it sets (kept alive by an `Arc` in the
//! `Fence`, dropped after the removal) is never freed under it.
//!
//! Limits: the handler does not run on an alternate signal stack (a fault in
//! client memory does not happen on a full stack); [`MAX_FENCES`] fenced
//! mappings at a time per process.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use vm_memory::bitmap::{Bitmap, NewBitmap, WithBitmapSlice};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

/// Most fenced mappings at a time (per process).
pub const MAX_FENCES: usize = 4096;

/// `statfs.f_type` of hugetlbfs.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// A client's memory as the device maps it.
pub type ClientMemory = GuestMemoryMmap<Fence>;
/// One region of a client's memory.
pub type ClientRegion = GuestRegionMmap<Fence>;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SIGBUS handler could not be installed.
    #[error("cannot install the SIGBUS handler: {0}")]
    Handler(#[source] std::io::Error),
    /// Every registry slot is in use.
    #[error("too many fenced client mappings (at most {MAX_FENCES})")]
    Full,
    /// The file could not be inspected.
    #[error("cannot inspect the client's memory file: {0}")]
    Stat(#[source] std::io::Error),
    /// The size is zero or does not fit the address space.
    #[error("invalid mapping size {0}")]
    Size(u64),
    /// `mmap` failed.
    #[error("cannot map client memory: {0}")]
    Map(#[source] std::io::Error),
    /// vm-memory refused the mapping or its guest address.
    #[error("cannot place the client memory region")]
    Place,
}

/// Set by the SIGBUS handler when one of the mappings registered with it faulted.
/// One per client connection; the data path reads it once per batch.
#[derive(Debug, Default)]
pub struct FaultFlag(AtomicBool);

impl FaultFlag {
    /// Whether a mapping of this flag's owner faulted (one relaxed load).
    #[inline]
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const LIVE: u32 = 2;
const DEAD: u32 = 3;

struct Slot {
    state: AtomicU32,
    busy: AtomicU32,
    start: AtomicUsize,
    len: AtomicUsize,
    flag: AtomicPtr<FaultFlag>,
}

impl Slot {
    const fn new() -> Self {
        Self {
            state: AtomicU32::new(FREE),
            busy: AtomicU32::new(0),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            flag: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

static SLOTS: [Slot; MAX_FENCES] = [const { Slot::new() }; MAX_FENCES];
/// Slots at or above this index were never used (the handler scans below it).
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// Faults contained so far (process-wide).
static CONTAINED: AtomicU64 = AtomicU64::new(0);
/// The SIGBUS action before ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// Result of installing the handler (an errno on failure).
static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();

/// Faults contained since the process started.
pub fn contained_faults() -> u64 {
    CONTAINED.load(Ordering::Relaxed)
}

/// Registry slots in use.
pub fn fences_in_use() -> usize {
    let n = HIGH.load(Ordering::Acquire).min(MAX_FENCES);
    SLOTS[..n]
        .iter()
        .filter(|s| s.state.load(Ordering::Acquire) != FREE)
        .count()
}

/// Claims a free slot (FREE -> CLAIMED); the handler ignores it until it is LIVE.
fn claim() -> Result<usize, Error> {
    for (i, s) in SLOTS.iter().enumerate() {
        if s.state
            .compare_exchange(FREE, CLAIMED, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            HIGH.fetch_max(i + 1, Ordering::SeqCst);
            return Ok(i);
        }
    }
    Err(Error::Full)
}

/// Fills a claimed slot and makes it visible to the handler.
fn activate(i: usize, start: usize, len: usize, flag: &Arc<FaultFlag>) {
    let s = &SLOTS[i];
    s.start.store(start, Ordering::Relaxed);
    s.len.store(len, Ordering::Relaxed);
    s.flag
        .store(Arc::as_ptr(flag).cast_mut(), Ordering::Relaxed);
    s.state.store(LIVE, Ordering::SeqCst);
}

/// Removes slot `i`: after this returns, no handler is inside it or will use it.
fn release(i: usize) {
    let s = &SLOTS[i];
    s.state.store(DEAD, Ordering::SeqCst);
    // A handler increments `busy` before it reads `state` (both SeqCst): either it
    // saw DEAD and leaves the slot alone, or we see its increment here and wait
    // for its (bounded: one mmap call) work to end.
    while s.busy.load(Ordering::SeqCst) != 0 {
        std::hint::spin_loop();
    }
    s.flag.store(std::ptr::null_mut(), Ordering::Relaxed);
    s.start.store(0, Ordering::Relaxed);
    s.len.store(0, Ordering::Relaxed);
    s.state.store(FREE, Ordering::SeqCst);
}

/// Signal context: if `addr` is inside a live registered mapping, replaces the
/// mapping with anonymous zero memory, sets its flag and returns true.
fn contain(addr: usize) -> bool {
    let n = HIGH.load(Ordering::SeqCst).min(MAX_FENCES);
    for s in &SLOTS[..n] {
        s.busy.fetch_add(1, Ordering::SeqCst);
        let mut hit = false;
        if s.state.load(Ordering::SeqCst) == LIVE {
            let start = s.start.load(Ordering::Relaxed);
            let len = s.len.load(Ordering::Relaxed);
            if addr.wrapping_sub(start) < len && replace_with_zeros(start, len) {
                let flag = s.flag.load(Ordering::Relaxed);
                // The slot is LIVE and we hold it busy, so `release` has not
                // returned and the `Fence` that registered it still holds the
                // `Arc<FaultFlag>` this pointer came from.
                // SAFETY: the pointer is null or points at a live FaultFlag.
                if let Some(f) = unsafe { flag.as_ref() } {
                    f.set();
                }
                CONTAINED.fetch_add(1, Ordering::Relaxed);
                hit = true;
            }
        }
        s.busy.fetch_sub(1, Ordering::SeqCst);
        if hit {
            return true;
        }
    }
    false
}

/// Signal context: maps anonymous zero pages over `[start, start + len)`.
fn replace_with_zeros(start: usize, len: usize) -> bool {
    // The range is exactly one registered mapping of ours (page- or huge-page-
    // aligned and sized), live (the caller holds its slot busy, so it is not being
    // unmapped); replacing it in place changes what the client's memory reads as,
    // nothing else. mmap is async-signal-safe.
    // SAFETY: MAP_FIXED over a range we own entirely.
    let p = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    p as usize == start
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; its location is always valid.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t (or we got null).
    let fault = unsafe { info.as_ref() }.map(|i| {
        // SAFETY: for SIGBUS, si_addr is the field the kernel filled in.
        (i.si_code, unsafe { i.si_addr() } as usize)
    });
    // Only faults raised by the kernel (si_code > 0) have a meaningful address.
    let contained = matches!(fault, Some((code, addr)) if code > 0 && contain(addr));
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
    if contained {
        return;
    }
    forward(sig, info, ctx, fault.is_some_and(|(code, _)| code > 0));
}

/// Signal context: hands a fault that is not ours to the previous handler (Rust's
/// own, which reports a stack overflow), or restores the default action so that
/// it ends the process. A SIGBUS that was sent (`kill`, not a fault) always takes
/// the default action: the previous handler may expect faults only (Rust's resets
/// the action and returns, which would drop a sent signal and disarm the fence).
fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void, fault: bool) {
    if let Some(prev) = PREVIOUS.get().filter(|_| fault) {
        let h = prev.sa_sigaction;
        if h != libc::SIG_DFL && h != libc::SIG_IGN {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // `h` was installed as an SA_SIGINFO handler with this signature.
                // SAFETY: calling it as the kernel would.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(h) };
                f(sig, info, ctx);
            } else {
                // SAFETY: `h` was installed as a plain handler with this signature.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
                f(sig);
            }
            return;
        }
    }
    // `signal` and `raise` are async-signal-safe. Returning from a fault re-executes
    // the access, which now takes the default action (core dump at the right
    // address); a SIGBUS that was sent is re-raised, pending until we return.
    // SAFETY: installs no code; raise only queues a signal to this thread.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        if !fault {
            libc::raise(sig);
        }
    }
}

/// Installs the SIGBUS handler once per process.
pub fn install() -> Result<(), Error> {
    let r = INSTALLED.get_or_init(|| {
        // SAFETY: sigaction is plain data; zeroed is a valid initial value.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: a valid sigaction, zeroed storage for the old one; the handler only
        // touches atomics, mmap, signal and raise (async-signal-safe).
        unsafe {
            libc::sigemptyset(&mut act.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            // Read the previous action first so the handler can forward to it from
            // the moment it is installed.
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            let _ = PREVIOUS.set(old);
            if libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
        }
        Ok(())
    });
    r.map_err(|e| Error::Handler(std::io::Error::from_raw_os_error(e)))
}

/// Owns one mapping of a client file and, when fenced, its registry entry. It is
/// the bitmap of the vm-memory region over the mapping (it tracks nothing), so it
/// is dropped with the last reference to the region; see the module docs. A
/// region vm-memory mapped itself (tests) has an empty `Fence`.
#[derive(Debug, Default)]
pub struct Fence(Option<Mapping>);

impl Fence {
    /// Whether the mapping is registered with the SIGBUS handler.
    pub fn is_fenced(&self) -> bool {
        self.0.as_ref().is_some_and(|m| m.slot.is_some())
    }
}

#[derive(Debug)]
struct Mapping {
    addr: usize,
    len: usize,
    slot: Option<usize>,
    /// Keeps the flag the registry entry points at alive until the entry is gone.
    _flag: Option<Arc<FaultFlag>>,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // The entry goes first: no handler will map over the range once it is
        // unmapped and possibly reused.
        if let Some(i) = self.slot.take() {
            release(i);
        }
        // `addr`/`len` are exactly what mmap returned (or what the handler
        // replaced in place); nothing can reach the mapping any more (its region
        // is being dropped).
        // SAFETY: unmaps only our own mapping.
        unsafe {
            libc::munmap(self.addr as *mut libc::c_void, self.len);
        }
        // `_flag` is dropped after this body, after the entry is gone.
    }
}

impl WithBitmapSlice<'_> for Fence {
    type S = ();
}

impl Bitmap for Fence {
    fn mark_dirty(&self, _offset: usize, _len: usize) {}

    fn dirty_at(&self, _offset: usize) -> bool {
        false
    }

    fn slice_at(&self, _offset: usize) {}
}

impl NewBitmap for Fence {
    fn with_len(_len: usize) -> Self {
        Fence(None)
    }
}

/// Whether `file` is a memfd sealed against shrinking.
pub fn sealed_against_shrinking(file: &File) -> bool {
    rustix::fs::fcntl_get_seals(file).is_ok_and(|s| s.contains(rustix::fs::SealFlags::SHRINK))
}

/// The page size of `file`'s mappings (the huge page size on hugetlbfs).
fn page_size(file: &File) -> Result<usize, Error> {
    // SAFETY: sysconf reads a constant of the system; no memory is touched.
    let base = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or(4096);
    let st = rustix::fs::fstatfs(file).map_err(|e| Error::Stat(e.into()))?;
    if st.f_type as i64 == HUGETLBFS_MAGIC && st.f_bsize > 0 {
        Ok((st.f_bsize as usize).max(base))
    } else {
        Ok(base)
    }
}

/// Maps `size` bytes of `file` from `offset`, shared, at guest address `gpa`. A
/// memfd sealed against shrinking is mapped as is; any other file is fenced: its
/// faults are contained and reported through `flag` (see the module docs).
pub fn map_client_file(
    file: &File,
    offset: u64,
    size: u64,
    gpa: GuestAddress,
    flag: &Arc<FaultFlag>,
) -> Result<ClientRegion, Error> {
    let region_len = usize::try_from(size)
        .ok()
        .filter(|&l| l > 0)
        .ok_or(Error::Size(size))?;
    let fenced = !sealed_against_shrinking(file);
    let page = page_size(file)?;
    let map_len = region_len
        .checked_next_multiple_of(page)
        .ok_or(Error::Size(size))?;
    let off = libc::off_t::try_from(offset).map_err(|_| Error::Size(offset))?;
    let slot = if fenced {
        install()?;
        Some(claim()?)
    } else {
        None
    };
    // A fresh mapping at an address of the kernel's choosing (no MAP_FIXED).
    // SAFETY: creates a new mapping; touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            file.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        if let Some(i) = slot {
            release(i);
        }
        return Err(Error::Map(e));
    }
    let addr = p as usize;
    if let Some(i) = slot {
        // Registered before anyone can access the mapping.
        activate(i, addr, map_len, flag);
    }
    let fence = Fence(Some(Mapping {
        addr,
        len: map_len,
        slot,
        _flag: fenced.then(|| flag.clone()),
    }));
    // The builder gets a pointer to the mapping just made, which lives as long as
    // the region's bitmap (the `Fence`, dropped after the region's own Drop, which
    // does not unmap a raw mapping); `region_len <= map_len`.
    // SAFETY: `p` and `region_len` lie within a valid mapping of this process.
    let builder = unsafe {
        MmapRegionBuilder::new_with_bitmap(region_len, fence).with_raw_mmap_pointer(p.cast())
    };
    let mmap = builder
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
        .build()
        .map_err(|_| Error::Place)?;
    GuestRegionMmap::new(mmap, gpa).ok_or(Error::Place)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryRegion, MemoryRegionAddress};

    fn memfd(len: u64, seal: bool) -> File {
        let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
        let fd = rustix::fs::memfd_create("fault-fence-test", flags).unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        if seal {
            rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK).unwrap();
        }
        File::from(fd)
    }

    fn read_u64(r: &ClientRegion, at: u64) -> u64 {
        use vm_memory::Bytes;
        r.read_obj::<u64>(MemoryRegionAddress(at)).unwrap()
    }

    fn fence_of(r: &ClientRegion) -> &Fence {
        let m: &vm_memory::MmapRegion<Fence> = r;
        m.bitmap()
    }

    fn slot_of(r: &ClientRegion) -> Option<usize> {
        fence_of(r).0.as_ref().and_then(|m| m.slot)
    }

    #[test]
    fn registry_claims_activates_and_releases_slots() {
        let flag = Arc::new(FaultFlag::default());
        let i = claim().unwrap();
        assert_eq!(SLOTS[i].state.load(Ordering::SeqCst), CLAIMED);
        // A claimed slot is invisible to the handler.
        assert!(!contain(0x1000));
        activate(i, 0x10_0000_0000, 0x1000, &flag);
        assert_eq!(SLOTS[i].state.load(Ordering::SeqCst), LIVE);
        assert!(HIGH.load(Ordering::SeqCst) > i);
        release(i);
        assert_eq!(SLOTS[i].state.load(Ordering::SeqCst), FREE);
        assert!(SLOTS[i].flag.load(Ordering::SeqCst).is_null());
        assert!(!flag.is_set());
    }

    #[test]
    fn sealed_memfds_are_not_fenced_others_are() {
        let flag = Arc::new(FaultFlag::default());
        let sealed = memfd(1 << 16, true);
        assert!(sealed_against_shrinking(&sealed));
        let r = map_client_file(&sealed, 0, 1 << 16, GuestAddress(0), &flag).unwrap();
        assert!(!fence_of(&r).is_fenced());
        let open = memfd(1 << 16, false);
        assert!(!sealed_against_shrinking(&open));
        let r2 = map_client_file(&open, 4096, 8192, GuestAddress(0x10000), &flag).unwrap();
        assert!(fence_of(&r2).is_fenced());
        let i = slot_of(&r2).unwrap();
        assert_eq!(SLOTS[i].state.load(Ordering::SeqCst), LIVE);
        assert_eq!(SLOTS[i].len.load(Ordering::SeqCst), 8192);
        drop(r2);
        // Removed with the region (before its unmap).
        assert_ne!(SLOTS[i].state.load(Ordering::SeqCst), LIVE);
        drop(r);
    }

    #[test]
    fn a_truncated_file_reads_as_zeros_and_raises_the_flag() {
        let flag = Arc::new(FaultFlag::default());
        let f = memfd(3 * 4096, false);
        let r = map_client_file(&f, 0, 3 * 4096, GuestAddress(0), &flag).unwrap();
        {
            use vm_memory::Bytes;
            r.write_obj(0x1122_3344_5566_7788u64, MemoryRegionAddress(4096))
                .unwrap();
        }
        assert_eq!(read_u64(&r, 4096), 0x1122_3344_5566_7788);
        let before = contained_faults();
        rustix::fs::ftruncate(&f, 0).unwrap();
        // Without the fence this read kills the test process with SIGBUS.
        assert_eq!(read_u64(&r, 4096), 0);
        assert!(flag.is_set());
        assert!(contained_faults() > before);
        // The whole mapping was replaced: other pages read zeros without faulting
        // again, and writes land in the private replacement.
        assert_eq!(read_u64(&r, 2 * 4096 + 8), 0);
        {
            use vm_memory::Bytes;
            r.write_obj(7u64, MemoryRegionAddress(0)).unwrap();
        }
        assert_eq!(read_u64(&r, 0), 7);
        let slot = slot_of(&r).unwrap();
        drop(r);
        assert_ne!(SLOTS[slot].state.load(Ordering::SeqCst), LIVE);
    }

    #[test]
    fn fault_in_one_mapping_leaves_the_others_and_their_flags_alone() {
        let (fa, fb) = (
            Arc::new(FaultFlag::default()),
            Arc::new(FaultFlag::default()),
        );
        let (a, b) = (memfd(4096, false), memfd(4096, false));
        let ra = map_client_file(&a, 0, 4096, GuestAddress(0), &fa).unwrap();
        let rb = map_client_file(&b, 0, 4096, GuestAddress(0), &fb).unwrap();
        {
            use vm_memory::Bytes;
            rb.write_obj(42u64, MemoryRegionAddress(0)).unwrap();
        }
        rustix::fs::ftruncate(&a, 0).unwrap();
        assert_eq!(read_u64(&ra, 0), 0);
        assert!(fa.is_set());
        assert!(!fb.is_set());
        assert_eq!(read_u64(&rb, 0), 42);
        assert!(rb.len() == 4096);
    }

    #[test]
    fn bad_sizes_are_refused_and_leave_no_slot() {
        let flag = Arc::new(FaultFlag::default());
        let f = memfd(4096, false);
        let used = fences_in_use();
        assert!(matches!(
            map_client_file(&f, 0, 0, GuestAddress(0), &flag),
            Err(Error::Size(0))
        ));
        // An offset mmap refuses (not page aligned): the claimed slot is released.
        assert!(matches!(
            map_client_file(&f, 3, 4096, GuestAddress(0), &flag),
            Err(Error::Map(_))
        ));
        // Other tests run concurrently (each holds at most two slots at a time).
        assert!(fences_in_use() <= used + 8);
    }
}
